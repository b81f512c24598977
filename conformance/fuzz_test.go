package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// The fuzz targets feed arbitrary input through the public API, on every
// backend, and check what every caller relies on whatever the input: the
// call ends within its bound, the error is one of the documented kinds, and
// the instance is either usable or says it is dead. `go test` runs the
// seeds; `go test -run XXX -fuzz FuzzEval` explores further.

const fuzzDeadline = 300 * time.Millisecond

// fuzzSeeds are hostile scripts of every family the suite knows.
var fuzzSeeds = []string{
	`1 + 1`,
	`for (;;) {}`,
	`(function f() { f() })()`,
	`let a = []; for (;;) a.push("x".repeat(1000))`,
	`let s = "x"; for (;;) s += s`,
	`Promise.reject(new Error("r")); for (;;) {}`,
	`await new Promise(() => {})`,
	`for (;;) host.rpc("nope")`,
	`host.rpcSync("echo", {toJSON() { for (;;) {} }})`,
	`({toJSON() { return this }})`,
	`const o = {}; o.o = o; o`,
	`Object.prototype.then = (r) => r(1); await {}`,
	`JSON.parse("[".repeat(1e5))`,
	`eval("(".repeat(1e5))`,
	`/(a+)+$/.test("a".repeat(40) + "b")`,
	`let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); p.x`,
	`new Array(2**32 - 1).join("x")`,
	`let b = 7n; for (;;) b *= b`,
	"\x00", "\xff\xfe", `"\ud800"`, `throw {get message() { throw 1 }}`,
	`host.on("e", () => { for (;;) {} }); 1`,
	`delete globalThis.host; Object.freeze(Object.prototype); 1`,
}

// fuzzInstance makes an instance with every limit set, closed when t ends.
func fuzzInstance(t *testing.T, rt *kafig.Runtime, c *cctx) *kafig.Instance {
	inst, err := rt.Instance(t.Context(),
		kafig.WithRouter(c.router()),
		kafig.WithJSMemoryLimit(8<<20),
		kafig.WithInterruptCallback(func(_, us uint64) bool { return us > 200_000 }),
		kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool { return false }),
	)
	require.NoError(t, err)
	t.Cleanup(func() { _ = inst.Close(context.Background()) })
	return inst
}

// checkOutcome asserts that err is of a documented kind and that the
// instance is dead or still evaluates.
func checkOutcome(t *testing.T, inst *kafig.Instance, err error) {
	var je *kafig.JsError
	var re *kafig.RuntimeError
	switch {
	case err == nil, errors.As(err, &je), errors.Is(err, kafig.ErrInvalidSource), errors.Is(err, kafig.ErrBadBytecode):
	case errors.As(err, &re):
		assert.Contains(t, []kafig.ErrorCode{kafig.CodeCPULimitExceeded, kafig.CodeMemoryLimitExceeded,
			kafig.CodeStackOverflow, kafig.CodeRuntimeError}, re.Code)
	default:
		t.Errorf("undocumented error %T: %v", err, err)
	}
	// A fresh CPU budget: the interrupt callback sees cumulative time.
	if err := inst.ResetExecutionStats(t.Context()); err != nil {
		assert.ErrorIs(t, err, kafig.ErrInstanceDead, "an instance must be usable or dead")
		return
	}
	res, err := inst.Eval(t.Context(), `[1, 2].length`)
	if err != nil {
		assert.ErrorIs(t, err, kafig.ErrInstanceDead, "an instance must be usable or dead")
		return
	}
	assert.JSONEq(t, `2`, string(res))
}

// FuzzEval: arbitrary source, sync or async.
func FuzzEval(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, src string, async bool) {
		for _, b := range backends {
			rt := sharedRuntime(t, b)
			inst := fuzzInstance(t, rt, &cctx{t: t, b: b, rt: rt})
			ctx, cancel := context.WithTimeout(t.Context(), fuzzDeadline)
			var opts []kafig.EvalOption
			if async {
				opts = append(opts, kafig.WithAsync())
			}
			start := time.Now()
			res, err := inst.Eval(ctx, src, opts...)
			cancel()
			assert.LessOrEqual(t, time.Since(start), stopBound(fuzzDeadline), "%s: eval %.60q", b.name, src)
			if err == nil {
				assert.True(t, json.Valid(res), "%s: result %.60q is not JSON", b.name, res)
			}
			checkOutcome(t, inst, err)
		}
	})
}

// FuzzEvalCompiled: random bytes, or real bytecode with a byte flipped, are
// refused before they reach the guest.
func FuzzEvalCompiled(f *testing.F) {
	f.Add([]byte{}, 0, byte(0))
	f.Add([]byte("not bytecode at all"), 3, byte(1))
	f.Add([]byte{}, 10, byte(0x80))
	f.Add([]byte{}, -1, byte(0xff))
	f.Fuzz(func(t *testing.T, junk []byte, at int, flip byte) {
		for _, b := range backends {
			rt := sharedRuntime(t, b)
			inst := fuzzInstance(t, rt, &cctx{t: t, b: b, rt: rt})
			bc := junk
			if len(junk) == 0 {
				compiled, err := rt.Compile(t.Context(), `40 + 2`)
				require.NoError(t, err)
				bc = compiled
			}
			if flip != 0 {
				bc = append([]byte(nil), bc...)
				bc[uint(at)%uint(len(bc))] ^= flip
			}
			res, err := inst.EvalCompiled(t.Context(), bc)
			if len(junk) == 0 && flip == 0 {
				if assert.NoError(t, err, "%s", b.name) {
					assert.JSONEq(t, `42`, string(res))
				}
			} else {
				assert.ErrorIs(t, err, kafig.ErrBadBytecode, "%s", b.name)
			}
			checkOutcome(t, inst, err)
		}
	})
}

// FuzzRPCReply: whatever bytes a handler returns, the script sees a value
// or a catchable Error, and the instance stays usable.
func FuzzRPCReply(f *testing.F) {
	for _, s := range []string{`null`, `{"a": [1, 2]}`, `{"a":`, "\"\xff\"", `"\ud800"`, "\x00", `1e999`, `[[[[[[]]]]]]`, ``, ` `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		for _, b := range backends {
			rt := sharedRuntime(t, b)
			h := func(context.Context, json.RawMessage) (json.RawMessage, error) { return reply, nil }
			inst, err := rt.Instance(t.Context(), kafig.WithRouter(kafig.NewRPCRouter().WithSync("r", h).WithAsync("a", h)))
			require.NoError(t, err)
			res, err := inst.Eval(t.Context(), `
				const out = [];
				try { out.push(typeof host.rpcSync("r")) } catch (e) { out.push(e instanceof Error) }
				try { out.push(typeof await host.rpc("a")) } catch (e) { out.push(e instanceof Error) }
				out.length`, kafig.WithAsync())
			if assert.NoError(t, err, "%s: reply %.60q", b.name, reply) {
				assert.JSONEq(t, `2`, string(res))
			}
			checkOutcome(t, inst, err)
			_ = inst.Close(t.Context())
		}
	})
}
