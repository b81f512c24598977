package conformance

import (
	"context"
	"crypto/rand"
	"encoding/json"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// compile is Compile on the case's runtime, required to succeed.
func (c *cctx) compile(src string) []byte {
	c.t.Helper()
	bc, err := c.rt.Compile(c.t.Context(), src)
	require.NoError(c.t, err)
	require.NotEmpty(c.t, bc)
	return bc
}

// evalCompiled runs bytecode on the case's instance.
func (c *cctx) evalCompiled(bc []byte, opts ...kafig.EvalOption) (json.RawMessage, error) {
	return c.bounded(0, func(ctx context.Context) (json.RawMessage, error) {
		return c.inst.EvalCompiled(ctx, bc, opts...)
	})
}

var testKey = []byte("conformance-bytecode-key-32bytes")

// TestBytecode: Runtime.Compile and Instance.EvalCompiled, and the seal.
func TestBytecode(t *testing.T) {
	runCases(t, []tcase{
		{name: "round-trip", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`({sum: 1 + 2, s: "é😀"})`)
			res, err := c.evalCompiled(bc)
			isValue(`{"sum": 3, "s": "é😀"}`)(t, c, res, err)
		}},
		{name: "across-instances", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`globalThis.n = (globalThis.n || 0) + 1`)
			for range 3 {
				other := c.newInstance(nil)
				res, err := other.EvalCompiled(t.Context(), bc)
				isValue(`1`)(t, c, res, err)
			}
		}},
		{name: "reused-many-times", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`globalThis.n = (globalThis.n || 0) + 1`)
			for i := 1; i <= 100; i++ {
				res, err := c.evalCompiled(bc)
				if !assert.NoError(t, err) || !assert.JSONEq(t, itoa(i), string(res)) {
					return
				}
			}
		}},
		{name: "async-with-rpc", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`const r = await host.rpc("aecho", {x: 1}); r.x + 1`)
			res, err := c.evalCompiled(bc, kafig.WithAsync())
			isValue(`2`)(t, c, res, err)
		}},
		{name: "top-level-await-in-sync-mode", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`await 1; 2`)
			res, err := c.evalCompiled(bc)
			anyOf(isValue(`2`), isRuntimeError(kafig.CodeRuntimeError))(t, c, res, err)
		}},
		{name: "runtime-error-has-stack", run: func(t *testing.T, c *cctx) {
			bc := c.compile("function f() { null.x }\nf()")
			res, err := c.evalCompiled(bc)
			all(isJsError("TypeError", ""), hasStack("f"))(t, c, res, err)
		}},
		{name: "compile-does-not-run", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`for (;;) {}`)
			assert.NotEmpty(t, bc)
		}},
		{name: "compile-syntax-error", run: func(t *testing.T, c *cctx) {
			_, err := c.rt.Compile(t.Context(), `let = = 1`)
			isJsError("SyntaxError", "")(t, c, nil, err)
		}},
		{name: "compile-stack-overflow-in-parser", run: func(t *testing.T, c *cctx) {
			_, err := c.rt.Compile(t.Context(), strings.Repeat("(", 100000))
			anyOf(isStackOverflow, isJsError("SyntaxError", ""))(t, c, nil, err)
			c.compile(`1`) // the runtime still compiles
		}},
		{name: "compile-bad-input", run: func(t *testing.T, c *cctx) {
			for _, src := range []string{"", "1;\x00", "'\xff'"} {
				_, err := c.rt.Compile(t.Context(), src)
				assert.ErrorIs(t, err, kafig.ErrInvalidSource, "%q", src)
			}
		}},
		{name: "compile-large", run: func(t *testing.T, c *cctx) {
			bc := c.compile(largePrelude() + "f999()")
			res, err := c.evalCompiled(bc)
			isValue(`999`)(t, c, res, err)
		}},
		{name: "compile-concurrent", run: func(t *testing.T, c *cctx) {
			var wg sync.WaitGroup
			out := make([][]byte, 8)
			for i := range out {
				wg.Go(func() {
					bc, err := c.rt.Compile(context.Background(), itoa(i)+"*2")
					assert.NoError(t, err)
					out[i] = bc
				})
			}
			wg.Wait()
			for i, bc := range out {
				res, err := c.evalCompiled(bc)
				isValue(itoa(i*2))(t, c, res, err)
			}
		}},
		{name: "compile-cancelled-ctx", run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			_, err := c.rt.Compile(ctx, `1`)
			assert.ErrorIs(t, err, context.Canceled)
			c.compile(`1`)
		}},
		{name: "flip-every-byte", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`"sealed" + 1`)
			for i := range bc {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					bad := append([]byte(nil), bc...)
					bad[i] ^= mask
					_, err := c.inst.EvalCompiled(t.Context(), bad)
					if !assert.ErrorIs(t, err, kafig.ErrBadBytecode, "byte %d ^ %#x", i, mask) {
						return
					}
				}
			}
			res, err := c.evalCompiled(bc)
			isValue(`"sealed1"`)(t, c, res, err)
		}},
		{name: "truncate-every-length", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`[1, 2, 3]`)
			for n := range len(bc) {
				_, err := c.inst.EvalCompiled(t.Context(), bc[:n])
				if !assert.ErrorIs(t, err, kafig.ErrBadBytecode, "length %d of %d", n, len(bc)) {
					return
				}
			}
			_, err := c.inst.EvalCompiled(t.Context(), append(append([]byte(nil), bc...), 0))
			assert.ErrorIs(t, err, kafig.ErrBadBytecode, "one byte appended")
			_, err = c.inst.EvalCompiled(t.Context(), append(append([]byte(nil), bc...), bc...))
			assert.ErrorIs(t, err, kafig.ErrBadBytecode, "doubled")
		}},
		{name: "random-bytes", run: func(t *testing.T, c *cctx) {
			_, err := c.inst.EvalCompiled(t.Context(), nil)
			assert.ErrorIs(t, err, kafig.ErrBadBytecode, "nil")
			for _, n := range []int{1, 16, 31, 32, 33, 48, 64, 100, 1000, 65536, 1 << 20} {
				b := make([]byte, n)
				_, _ = rand.Read(b)
				_, err := c.inst.EvalCompiled(t.Context(), b)
				assert.ErrorIs(t, err, kafig.ErrBadBytecode, "%d random bytes", n)
			}
		}},
		{name: "spliced-seals", run: func(t *testing.T, c *cctx) {
			a, b := c.compile(`"a"`), c.compile(`"bb"`)
			r := mrand.New(mrand.NewPCG(1, 2))
			for range 200 {
				i, j := r.IntN(len(a)), r.IntN(len(b))
				mixed := append(append([]byte(nil), a[:i]...), b[j:]...)
				if string(mixed) == string(a) || string(mixed) == string(b) {
					continue
				}
				_, err := c.inst.EvalCompiled(t.Context(), mixed)
				if !assert.ErrorIs(t, err, kafig.ErrBadBytecode) {
					return
				}
			}
		}},
		{name: "foreign-runtime-refused", run: func(t *testing.T, c *cctx) {
			other := newRuntime(t, c.b)
			bc, err := other.Compile(t.Context(), `"foreign"`)
			require.NoError(t, err)
			_, err = c.inst.EvalCompiled(t.Context(), bc)
			assert.ErrorIs(t, err, kafig.ErrBadBytecode)
			mine := c.compile(`"mine"`)
			inst, err := other.Instance(t.Context())
			require.NoError(t, err)
			_, err = inst.EvalCompiled(t.Context(), mine)
			assert.ErrorIs(t, err, kafig.ErrBadBytecode)
		}},
		{name: "same-key-across-runtimes", rtOpts: []kafig.Option{kafig.WithBytecodeKey(testKey)}, run: func(t *testing.T, c *cctx) {
			other := newRuntime(t, c.b, kafig.WithBytecodeKey(testKey))
			bc, err := other.Compile(t.Context(), `"shared key"`)
			require.NoError(t, err)
			res, err := c.evalCompiled(bc)
			isValue(`"shared key"`)(t, c, res, err)
			third := newRuntime(t, c.b, kafig.WithBytecodeKey([]byte("another-key-of-enough-length!!")))
			inst, err := third.Instance(t.Context())
			require.NoError(t, err)
			_, err = inst.EvalCompiled(t.Context(), bc)
			assert.ErrorIs(t, err, kafig.ErrBadBytecode, "another key")
		}},
		{name: "same-key-across-backends", rtOpts: []kafig.Option{kafig.WithBytecodeKey(testKey)}, run: func(t *testing.T, c *cctx) {
			bc := c.compile(`"portable"`)
			for _, b := range backends {
				rt := newRuntime(t, b, kafig.WithBytecodeKey(testKey))
				inst, err := rt.Instance(t.Context())
				require.NoError(t, err)
				res, err := inst.EvalCompiled(t.Context(), bc)
				isValue(`"portable"`)(t, c, res, err)
			}
		}},
		{name: "short-key-invalid", noInstance: true, run: func(t *testing.T, c *cctx) {
			_, err := kafig.New(t.Context(), c.b.new(), kafig.WithBytecodeKey([]byte("short")))
			assert.ErrorIs(t, err, kafig.ErrInvalidOption)
		}},
		{name: "after-instance-close", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`1`)
			require.NoError(t, c.inst.Close(t.Context()))
			_, err := c.inst.EvalCompiled(t.Context(), bc)
			assert.ErrorIs(t, err, kafig.ErrClosed)
		}, after: closed},
		{name: "after-runtime-close", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b)
			require.NoError(t, rt.Close(t.Context()))
			_, err := rt.Compile(t.Context(), `1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
		}},
		{name: "compiled-limits-apply", after: usableOrDead, opts: func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithJSMemoryLimit(4 << 20))
		}, run: func(t *testing.T, c *cctx) {
			bc := c.compile(`const a = []; for (;;) a.push({})`)
			res, err := c.evalCompiled(bc)
			isMemoryLimit(t, c, res, err)
			bc = c.compile(`(function f() { f() })()`)
			res, err = c.evalCompiled(bc)
			isStackOverflow(t, c, res, err)
			bc = c.compile(`for (;;) {}`)
			res, err = c.bounded(hangTimeout, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.EvalCompiled(ctx, bc)
			})
			isDeadline(t, c, res, err)
		}},
	})
}
