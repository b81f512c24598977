package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig"
)

// sourceOf is a script of exactly n bytes whose value is 7.
func sourceOf(n int) string {
	const head, tail = "/*", "*/7"
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

// TestMisuse: bad input and misuse get typed errors, never a panic or a
// hang.
func TestMisuse(t *testing.T) {
	invalidSource := isErr(kafig.ErrInvalidSource)
	cases := []tcase{
		{name: "empty-source", src: ``, check: invalidSource},
		{name: "invalid-utf8", src: "'\xff\xfe'", check: invalidSource},
		{name: "invalid-utf8-surrogate-encoding", src: "'\xed\xa0\x80'", check: invalidSource},
		{name: "truncated-utf8", src: "'\xe2\x82'", check: invalidSource},
		{name: "nul-byte", src: "1;\x002", check: invalidSource},
		{name: "nul-byte-at-end", src: "1\x00", check: invalidSource},
		{name: "whitespace-only", src: " \n\t", want: `null`},
		{name: "comment-only", src: `// nothing`, want: `null`},
		{name: "bom", src: "\ufeff1 + 1", want: `2`},
		{name: "unicode-identifiers", src: `const café = 1, 𝑥 = 2; café + 𝑥`, want: `3`},
		{name: "source-larger-than-memory-limit", opts: func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithWASMMemoryLimitPages(64))
		}, src: sourceOf(5 << 20), check: invalidSource},
		{name: "huge-source", src: sourceOf(8 << 20), want: `7`},
		{name: "many-statements", src: strings.Repeat("x = 1;\n", 200000) + "x", want: `1`},
		{name: "long-line", src: "[" + strings.Repeat("1,", 500000) + "1].length", want: `500001`},
		{name: "dispatch-invalid-json", run: dispatch(`host.on("e", () => 1)`, "e", "{", false, invalidSource)},
		{name: "eval-after-close", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`1`)
			require.NoError(t, c.inst.Close(t.Context()))
			ctx := t.Context()
			_, err := c.inst.Eval(ctx, `1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = c.inst.Eval(ctx, `1`, kafig.WithAsync())
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = c.inst.EvalCompiled(ctx, bc)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = c.inst.DispatchEvent(ctx, "e", nil)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = c.inst.GetExecutionStats(ctx)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.ErrorIs(t, c.inst.ResetExecutionStats(ctx), kafig.ErrClosed)
		}, after: closed},
		{name: "close-twice", run: func(t *testing.T, c *cctx) {
			assert.NoError(t, c.inst.Close(t.Context()))
			assert.NoError(t, c.inst.Close(t.Context()))
		}, after: closed},
		{name: "close-with-done-context", run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			assert.NoError(t, c.inst.Close(ctx))
		}, after: closed},
		{name: "close-nil", noInstance: true, run: func(t *testing.T, c *cctx) {
			var inst *kafig.Instance
			var rt *kafig.Runtime
			assert.NoError(t, inst.Close(t.Context()))
			assert.NoError(t, rt.Close(t.Context()))
			_, err := inst.Eval(t.Context(), `1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = rt.Instance(t.Context())
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = rt.Compile(t.Context(), `1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
		}},
		{name: "close-during-eval", after: closed, run: func(t *testing.T, c *cctx) {
			time.AfterFunc(200*time.Millisecond, func() { _ = c.inst.Close(context.Background()) })
			start := time.Now()
			_, err := c.inst.Eval(t.Context(), `for (;;) {}`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
		}},
		{name: "close-during-rpc-wait", async: true, after: closed, run: func(t *testing.T, c *cctx) {
			go func() {
				<-c.started
				_ = c.inst.Close(context.Background())
			}()
			_, err := c.evalTimeout(10*time.Second, `await host.rpc("block")`, kafig.WithAsync())
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.Equal(t, int64(1), c.cancelled.Load(), "Close cancelled the handler")
		}},
		{name: "runtime-close-closes-instances", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b)
			a, err := rt.Instance(t.Context())
			require.NoError(t, err)
			b, err := rt.Instance(t.Context())
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() {
				_, err := b.Eval(context.Background(), `for (;;) {}`)
				done <- err
			}()
			time.Sleep(100 * time.Millisecond)
			require.NoError(t, rt.Close(t.Context()))
			assert.ErrorIs(t, <-done, kafig.ErrClosed)
			_, err = a.Eval(t.Context(), `1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = rt.Instance(t.Context())
			assert.ErrorIs(t, err, kafig.ErrClosed)
			_, err = rt.Compile(t.Context(), `1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.NoError(t, rt.Close(t.Context()), "Close twice")
			assert.NoError(t, a.Close(t.Context()))
		}},
		{name: "concurrent-evals-serialized", run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.busy = false; globalThis.n = 0`)
			const workers, each = 8, 20
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for range each {
						src := `if (busy) throw new Error("overlap"); busy = true; host.rpcSync("ssleep", 1); n++; busy = false; n`
						var opts []kafig.EvalOption
						if w%2 == 0 {
							opts = append(opts, kafig.WithAsync())
						}
						_, err := c.inst.Eval(context.Background(), src, opts...)
						assert.NoError(t, err)
					}
				})
			}
			wg.Wait()
			assert.JSONEq(t, itoa(workers*each), string(c.mustEval(`n`)))
		}},
		{name: "concurrent-instances-hammer", noInstance: true, run: func(t *testing.T, c *cctx) {
			var wg sync.WaitGroup
			var okCount atomic.Int64
			for w := range 8 {
				wg.Go(func() {
					for i := range 10 {
						inst, err := c.rt.Instance(context.Background(), kafig.WithRouter(c.router()))
						if !assert.NoError(t, err) {
							return
						}
						res, err := inst.Eval(context.Background(), `await host.rpc("aecho", `+itoa(w*100+i)+`)`, kafig.WithAsync())
						if assert.NoError(t, err) && assert.JSONEq(t, itoa(w*100+i), string(res)) {
							okCount.Add(1)
						}
						assert.NoError(t, inst.Close(context.Background()))
					}
				})
			}
			wg.Wait()
			assert.Equal(t, int64(80), okCount.Load())
		}},
		{name: "nil-backend", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt, err := kafig.New(t.Context(), nil)
			assert.ErrorIs(t, err, kafig.ErrNoBackend)
			assert.Nil(t, rt)
		}},
		{name: "new-with-cancelled-context", noInstance: true, run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			rt, err := kafig.New(ctx, c.b.new())
			if err == nil {
				_ = rt.Close(t.Context())
				return // a backend may finish before it looks at ctx
			}
			assert.ErrorIs(t, err, context.Canceled)
		}},
		{name: "instance-with-cancelled-context", noInstance: true, run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			inst, err := c.rt.Instance(ctx)
			if err == nil {
				_ = inst.Close(t.Context())
				return
			}
			assert.ErrorIs(t, err, context.Canceled)
		}},
		{name: "nil-options-ignored", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b, nil)
			inst, err := rt.Instance(t.Context(), nil, kafig.WithRouter(c.router()), nil)
			require.NoError(t, err)
			res, err := inst.Eval(t.Context(), `1`, nil)
			isValue(`1`)(t, c, res, err)
		}},
		{name: "logger", noInstance: true, run: func(t *testing.T, c *cctx) {
			var buf syncBuffer
			rt := newRuntime(t, c.b, kafig.WithLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			inst, err := rt.Instance(t.Context(), kafig.WithRouter(c.router()))
			require.NoError(t, err)
			_, _ = inst.Eval(t.Context(), `host.rpcSync("panic")`)
			require.NoError(t, inst.Close(t.Context()))
			assert.NotEmpty(t, buf.String(), "debug events are logged")
		}},
		{name: "nil-logger", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b, kafig.WithLogger(nil))
			inst, err := rt.Instance(t.Context())
			require.NoError(t, err)
			res, err := inst.Eval(t.Context(), `1`)
			isValue(`1`)(t, c, res, err)
		}},
		{name: "errors-are-kafig-errors", noInstance: true, run: func(t *testing.T, c *cctx) {
			for _, e := range []error{kafig.ErrNoBackend, kafig.ErrInvalidOption, kafig.ErrClosed, kafig.ErrInstanceDead,
				kafig.ErrNoHandler, kafig.ErrBadBytecode, kafig.ErrInvalidSource, kafig.ErrBadGuest} {
				assert.True(t, strings.HasPrefix(e.Error(), "kafig: "), e.Error())
			}
		}},
	}
	// Sources around the 64 KiB exchange data area (an input needs one byte
	// more than its length).
	for _, n := range []int{abi.ExchangeDataSize - 2, abi.ExchangeDataSize - 1, abi.ExchangeDataSize, abi.ExchangeDataSize + 1, 2 * abi.ExchangeDataSize} {
		cases = append(cases, tcase{name: "source-" + itoa(n), src: sourceOf(n), want: `7`})
	}
	// Invalid options: every one is ErrInvalidOption from Instance, and
	// the runtime options from New.
	bad := map[string][]kafig.InstanceOption{
		"js-memory-zero":           {kafig.WithJSMemoryLimit(0)},
		"js-memory-too-small":      {kafig.WithJSMemoryLimit(kafig.MinJSMemoryLimit - 1)},
		"js-memory-too-large":      {kafig.WithJSMemoryLimit(kafig.MaxJSMemoryLimit + 1)},
		"js-memory-absurd":         {kafig.WithJSMemoryLimit(1 << 62)},
		"pages-zero":               {kafig.WithWASMMemoryLimitPages(0)},
		"pages-one":                {kafig.WithWASMMemoryLimitPages(1)},
		"pages-too-many":           {kafig.WithWASMMemoryLimitPages(kafig.MaxWASMMemoryPages + 1)},
		"pages-absurd":             {kafig.WithWASMMemoryLimitPages(^uint32(0))},
		"concurrency-negative":     {kafig.WithMaxConcurrentRPCs(-1)},
		"concurrency-too-large":    {kafig.WithMaxConcurrentRPCs(kafig.MaxConcurrentRPCsLimit + 1)},
		"pending-negative":         {kafig.WithMaxPendingRPCs(-5)},
		"pending-too-large":        {kafig.WithMaxPendingRPCs(kafig.MaxPendingRPCsLimit + 1)},
		"nil-router":               {kafig.WithRouter(nil)},
		"router-empty-name":        {kafig.WithRouter(kafig.NewRPCRouter().WithSync("", okHandler))},
		"router-long-name":         {kafig.WithRouter(kafig.NewRPCRouter().WithSync(strings.Repeat("m", 257), okHandler))},
		"router-nul-name":          {kafig.WithRouter(kafig.NewRPCRouter().WithAsync("a\x00b", okHandler))},
		"router-invalid-utf8-name": {kafig.WithRouter(kafig.NewRPCRouter().WithAsync("a\xff", okHandler))},
		"router-nil-handler":       {kafig.WithRouter(kafig.NewRPCRouter().WithSync("m", nil))},
		"router-duplicate":         {kafig.WithRouter(kafig.NewRPCRouter().WithSync("m", okHandler).WithAsync("m", okHandler))},
		"router-nil-fallback":      {kafig.WithRouter(kafig.NewRPCRouter().WithFallback(nil))},
		"router-two-fallbacks":     {kafig.WithRouter(kafig.NewRPCRouter().WithFallback(okHandler).WithFallback(okHandler))},
	}
	for name, opts := range bad {
		cases = append(cases, tcase{name: "invalid-" + name, noInstance: true, run: func(t *testing.T, c *cctx) {
			inst, err := c.rt.Instance(t.Context(), opts...)
			assert.ErrorIs(t, err, kafig.ErrInvalidOption)
			assert.Nil(t, inst)
		}})
	}
	cases = append(cases,
		tcase{name: "invalid-all-problems-in-one-error", noInstance: true, run: func(t *testing.T, c *cctx) {
			_, err := c.rt.Instance(t.Context(), kafig.WithJSMemoryLimit(0), kafig.WithMaxConcurrentRPCs(-1))
			assert.ErrorIs(t, err, kafig.ErrInvalidOption)
			assert.Contains(t, err.Error(), "WithJSMemoryLimit")
			assert.Contains(t, err.Error(), "WithMaxConcurrentRPCs")
		}},
		tcase{name: "invalid-runtime-pages", noInstance: true, run: func(t *testing.T, c *cctx) {
			for _, p := range []uint32{0, 1, kafig.MaxWASMMemoryPages + 1} {
				_, err := kafig.New(t.Context(), c.b.new(), kafig.WithWASMMemoryLimitPages(p))
				assert.ErrorIs(t, err, kafig.ErrInvalidOption, "pages %d", p)
			}
		}},
		tcase{name: "valid-limit-bounds", noInstance: true, run: func(t *testing.T, c *cctx) {
			for _, opts := range [][]kafig.InstanceOption{
				{kafig.WithJSMemoryLimit(kafig.MaxJSMemoryLimit)},
				{kafig.WithWASMMemoryLimitPages(kafig.MaxWASMMemoryPages)},
				{kafig.WithMaxConcurrentRPCs(kafig.MaxConcurrentRPCsLimit), kafig.WithMaxPendingRPCs(kafig.MaxPendingRPCsLimit)},
				{kafig.WithMaxConcurrentRPCs(1), kafig.WithMaxPendingRPCs(1)},
			} {
				inst, err := c.rt.Instance(t.Context(), opts...)
				if assert.NoError(t, err) {
					res, err := inst.Eval(t.Context(), `1 + 1`)
					isValue(`2`)(t, c, res, err)
					assert.NoError(t, inst.Close(t.Context()))
				}
			}
		}},
		tcase{name: "smallest-js-heap", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst, err := c.rt.Instance(t.Context(), kafig.WithJSMemoryLimit(kafig.MinJSMemoryLimit))
			if err != nil {
				assert.ErrorIs(t, err, kafig.ErrInvalidOption)
				return
			}
			defer inst.Close(t.Context())
			res, err := inst.Eval(t.Context(), `[1, 2, 3].map(x => x * 2)`)
			anyOf(isValue(`[2, 4, 6]`), isMemoryLimit)(t, c, res, err)
		}},
	)
	runCases(t, cases)
}

func okHandler(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil }

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLeaks: no goroutine outlives an operation, a closed instance or a
// closed runtime. Not parallel: it counts goroutines.
func TestLeaks(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			sharedRuntime(t, b) // keep the compiled guest
			t.Run("goroutines-stable-after-many-evals", func(t *testing.T) {
				c := &cctx{t: t, b: b, rt: sharedRuntime(t, b), started: make(chan string, 1024)}
				c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithMaxPendingRPCs(64)) })
				script := `
					host.rpc("block"); host.rpc("sleep", 5)
					await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map(i => host.rpc("aecho", i)))
					host.rpcSync("echo", 1)`
				for range 20 { // warm up
					c.mustEval(script, kafig.WithAsync())
				}
				runtime.GC()
				base := runtime.NumGoroutine()
				n := 300
				if testing.Short() {
					n = 60
				}
				for range n {
					if _, err := c.eval(script, kafig.WithAsync()); err != nil {
						require.NoError(t, err)
					}
				}
				assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+2 }, 5*time.Second, 20*time.Millisecond,
					"goroutines: %d before, %d after %d evals", base, runtime.NumGoroutine(), n)
			})
			t.Run("rpc-flood-bounded", func(t *testing.T) {
				c := &cctx{t: t, b: b, rt: sharedRuntime(t, b), started: make(chan string, 1024)}
				var peak atomic.Int64
				r := c.router().WithAsync("peek", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
					for {
						n := int64(runtime.NumGoroutine())
						p := peak.Load()
						if n <= p || peak.CompareAndSwap(p, n) {
							break
						}
					}
					select {
					case <-time.After(time.Millisecond):
					case <-ctx.Done():
					}
					return nil, nil
				})
				c.inst = c.newInstance(func(*cctx) []kafig.InstanceOption { return []kafig.InstanceOption{kafig.WithRouter(r)} })
				runtime.GC()
				base := runtime.NumGoroutine()
				res := c.mustEval(`
					const ps = []; for (let i = 0; i < 10000; i++) ps.push(host.rpc("peek", i).then(() => 1, () => 0))
					const ok = (await Promise.all(ps)).reduce((a, b) => a + b)
					let unknown = 0
					for (let i = 0; i < 20000; i++) await host.rpc("nope" + (i % 100)).catch(() => unknown++);
					[ok, unknown]`, kafig.WithAsync())
				var got [2]int
				require.NoError(t, json.Unmarshal(res, &got))
				assert.Equal(t, kafig.DefaultMaxPendingRPCs, got[0], "accepted up to the pending limit, the rest refused")
				assert.Equal(t, 20000, got[1])
				assert.LessOrEqual(t, peak.Load(), int64(base+kafig.DefaultMaxConcurrentRPCs+8),
					"handler goroutines are bounded by the concurrency limit")
				assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+2 }, 5*time.Second, 20*time.Millisecond)
			})
			t.Run("rpc-flood-go-heap-bounded", func(t *testing.T) {
				c := &cctx{t: t, b: b, rt: sharedRuntime(t, b), started: make(chan string, 1024)}
				c.inst = c.newInstance(nil)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for range 3 {
					_, _ = c.eval(`for (let i = 0; i < 100000; i++) host.rpc("aecho", "x".repeat(100)).catch(() => {}); 1`, kafig.WithAsync())
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				assert.Less(t, int64(after.HeapAlloc)-int64(before.HeapAlloc), int64(64<<20), "the Go heap stays bounded")
			})
			t.Run("closed-runtime-leaves-nothing", func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				c := &cctx{t: t, b: b, started: make(chan string, 16)}
				rt, err := kafig.New(t.Context(), b.new())
				require.NoError(t, err)
				c.rt = rt
				insts := make([]*kafig.Instance, 4)
				for i := range insts {
					insts[i], err = rt.Instance(t.Context(), kafig.WithRouter(c.router()))
					require.NoError(t, err)
				}
				done := make(chan error, 2)
				go func() {
					_, err := insts[0].Eval(context.Background(), `await host.rpc("block")`, kafig.WithAsync())
					done <- err
				}()
				go func() {
					_, err := insts[1].Eval(context.Background(), `for (;;) {}`)
					done <- err
				}()
				<-c.started
				time.Sleep(50 * time.Millisecond)
				require.NoError(t, rt.Close(t.Context()))
				assert.ErrorIs(t, <-done, kafig.ErrClosed)
				assert.ErrorIs(t, <-done, kafig.ErrClosed)
			})
		})
	}
}
