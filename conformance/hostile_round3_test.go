package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// r3Router is the standard router plus the methods of TestHostileRound3:
//
//	zeros   params n: a JSON array of n zeros
//	keys    params n: a JSON object of n keys
//	proto   a reply with a "__proto__" key
//	nulerr  an error whose message has a NUL byte
//	nulstr  a string reply with an escaped NUL
func (c *cctx) r3Router() *kafig.RPCRouter {
	zeros := func(_ context.Context, p json.RawMessage) (json.RawMessage, error) {
		n, err := strconv.Atoi(string(p))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("zeros: bad params %s", p)
		}
		return json.RawMessage("[" + strings.Repeat("0,", n-1) + "0]"), nil
	}
	keys := func(_ context.Context, p json.RawMessage) (json.RawMessage, error) {
		n, _ := strconv.Atoi(string(p))
		var b strings.Builder
		b.WriteByte('{')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":%d`, i, i)
		}
		b.WriteByte('}')
		return json.RawMessage(b.String()), nil
	}
	proto := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"__proto__": {"polluted": 1}, "a": 1}`), nil
	}
	nulerr := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return nil, errors.New("before\x00after")
	}
	nulstr := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`"a\u0000b"`), nil
	}
	return c.router().
		WithSync("zeros", zeros).WithAsync("azeros", zeros).
		WithSync("keys", keys).WithAsync("akeys", keys).
		WithSync("proto", proto).WithAsync("aproto", proto).
		WithSync("nulerr", nulerr).WithAsync("anulerr", nulerr).
		WithSync("nulstr", nulstr).WithAsync("anulstr", nulstr)
}

// r3 is the round-3 router with more options.
func r3(more ...kafig.InstanceOption) func(c *cctx) []kafig.InstanceOption {
	return func(c *cctx) []kafig.InstanceOption {
		return append([]kafig.InstanceOption{kafig.WithRouter(c.r3Router())}, more...)
	}
}

// recovered checks that an instance that hit a limit is still the same
// world: the global set before is there, the heap is back below the limit,
// and the afterCheck works.
func recovered(t *testing.T, c *cctx, limit uint64) {
	t.Helper()
	assert.JSONEq(t, `"kept"`, string(c.mustEval(`globalThis.mark`)), "a global set before the limit survives")
	c.mustEval(`1`) // lets the guest collect
	st := c.stats()
	assert.Less(t, st.HeapBytes, limit, "the heap is back below its limit")
}

// TestHostileRound3: limits met inside async flows (RPC replies, promise
// jobs, async event handlers), floods, hostile values on both sides of the
// bridge, bytecode and prelude abuse, and recovery after every limit.
func TestHostileRound3(t *testing.T) {
	hang := hangTimeout
	bomb := `(() => { const a = []; for (;;) a.push({i: a.length}) })()`
	runCases(t, []tcase{
		// ---- limits inside RPC replies ----
		{name: "sync-reply-explodes-heap", opts: r3(kafig.WithJSMemoryLimit(4 << 20)), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"`)
			res, err := c.eval(`host.rpcSync("zeros", 1000000).length`)
			isMemoryLimit(t, c, res, err)
			recovered(t, c, 4<<20)
		}},
		{name: "sync-reply-explodes-heap-caught", opts: r3(kafig.WithJSMemoryLimit(4 << 20)), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"`)
			res, err := c.eval(`try { host.rpcSync("zeros", 1000000).length } catch (e) { "swallowed" }`)
			isMemoryLimit(t, c, res, err)
			recovered(t, c, 4<<20)
		}},
		{name: "async-reply-explodes-heap", opts: r3(kafig.WithJSMemoryLimit(4 << 20)), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"`)
			res, err := c.eval(`(await host.rpc("azeros", 1000000)).length`, kafig.WithAsync())
			isMemoryLimit(t, c, res, err)
			recovered(t, c, 4<<20)
		}},
		{name: "async-reply-explodes-heap-caught", opts: r3(kafig.WithJSMemoryLimit(4 << 20)), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"`)
			res, err := c.eval(`try { (await host.rpc("azeros", 1000000)).length } catch (e) { "swallowed" }`, kafig.WithAsync())
			isMemoryLimit(t, c, res, err)
			recovered(t, c, 4<<20)
		}},
		{name: "async-reply-explodes-heap-among-many", opts: r3(kafig.WithJSMemoryLimit(4 << 20)), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"`)
			res, err := c.eval(`const ps = []; for (let i = 0; i < 50; i++) ps.push(host.rpc("aecho", i).catch(() => 0))
				ps.push(host.rpc("azeros", 1000000).catch(() => "swallowed")); (await Promise.all(ps)).length`, kafig.WithAsync())
			isMemoryLimit(t, c, res, err)
			recovered(t, c, 4<<20)
		}},
		{name: "async-reply-many-keys-explodes-heap", opts: r3(kafig.WithJSMemoryLimit(2 << 20)), async: true,
			src: `Object.keys(await host.rpc("akeys", 120000)).length`, check: isMemoryLimit},
		{name: "reply-proto-key-no-pollution", opts: r3(), async: true, src: `
			const s = host.rpcSync("proto"), a = await host.rpc("aproto")
			;[({}).polluted, Object.getPrototypeOf(s) === Object.prototype, Object.getPrototypeOf(a) === Object.prototype, s.a, a.a,
			  Object.prototype.hasOwnProperty.call(s, "__proto__")]`, want: `[null, true, true, 1, 1, true]`},
		{name: "dispatch-params-proto-key-no-pollution", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("p", (p) => [({}).polluted, Object.getPrototypeOf(p) === Object.prototype, Object.keys(p)])`)
			res, err := c.inst.DispatchEvent(t.Context(), "p", json.RawMessage(`{"__proto__": {"polluted": 1}}`))
			isValue(`[null, true, ["__proto__"]]`)(t, c, res, err)
			assert.JSONEq(t, `null`, string(c.mustEval(`({}).polluted`)))
		}},
		{name: "reply-escaped-nul-kept", opts: r3(), async: true, src: `[host.rpcSync("nulstr").length, (await host.rpc("anulstr")).length]`, want: `[3, 3]`},
		{name: "handler-error-nul-kept", opts: r3(), async: true, src: `
			const r = []; try { host.rpcSync("nulerr") } catch (e) { r.push(e.message) }
			try { await host.rpc("anulerr") } catch (e) { r.push(e.message) }; r`, want: `["before\u0000after", "before\u0000after"]`},
		{name: "method-name-with-nul-not-truncated", opts: r3(), src: `
			const r = []; for (const m of ["echo\0", "echo\0x", "ech\0o"]) try { r.push(host.rpcSync(m, 1)) } catch (e) { r.push("refused") }; r`,
			want: `["refused", "refused", "refused"]`},
		{name: "method-name-with-nul-not-truncated-async", opts: r3(), async: true, src: `
			const r = []; for (const m of ["aecho\0", "aecho\0x"]) r.push(await host.rpc(m, 1).catch(() => "refused")); r`,
			want: `["refused", "refused"]`},
		{name: "event-name-with-nul-not-truncated", run: func(t *testing.T, c *cctx) {
			_, err := c.eval(`try { host.on("ev\0x", () => "nul") } catch (e) { e.name }; 1`)
			require.NoError(t, err)
			_, err = c.inst.DispatchEvent(t.Context(), "ev", nil)
			assert.ErrorIs(t, err, kafig.ErrNoHandler, "a handler registered as ev\\0x must not answer ev")
		}},
		{name: "thrown-message-with-nul", src: `throw new Error("before\0after")`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			var je *kafig.JsError
			if assert.ErrorAs(t, err, &je) {
				assert.Equal(t, "before\x00after", je.Message)
			}
		}},
		{name: "result-string-with-nul", src: `"a\0b"`, check: exactJSON(`"a\u0000b"`)},
		{name: "rejection-message-with-nul", run: rejections(`Promise.reject(new Error("x\0y")); 1`, false, 0, isValue(`1`), func(t *testing.T, c *cctx, seen func() []string) {
			assert.Equal(t, []string{"Error: x\x00y"}, seen())
		})},

		// ---- limits inside async event handlers ----
		{name: "async-dispatch-deadline-awaiting-rpc", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("wait", async () => { await host.rpc("block"); return "never" }); host.on("ok", (p) => p + 1)`)
			res, err := c.bounded(hang, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.DispatchEvent(ctx, "wait", nil, kafig.WithAsync())
			})
			isDeadline(t, c, res, err)
			assert.Eventually(t, func() bool { return c.cancelled.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "the handler's context ended")
			res, err = c.inst.DispatchEvent(t.Context(), "ok", json.RawMessage(`1`))
			if !errors.Is(err, kafig.ErrInstanceDead) {
				isValue(`2`)(t, c, res, err)
			}
		}},
		{name: "async-dispatch-heap-after-await", opts: heap(8 << 20), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"; host.on("b", async () => { await host.rpc("aecho", 1); return ` + bomb + ` }); host.on("ok", (p) => p + 1)`)
			res, err := c.inst.DispatchEvent(t.Context(), "b", nil, kafig.WithAsync())
			isMemoryLimit(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "ok", json.RawMessage(`1`), kafig.WithAsync())
			isValue(`2`)(t, c, res, err)
			recovered(t, c, 8<<20)
		}},
		{name: "async-dispatch-cpu-limit-in-job", opts: func(c *cctx) []kafig.InstanceOption {
			var on atomic.Bool
			return c.std(kafig.WithInterruptCallback(func(o, _ uint64) bool { return on.Load() && o > 2e6 }),
				kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool { on.Store(true); return false }))
		}, run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("spin", async () => { await null; Promise.reject(new Error("arm")); for (;;) {} }); host.on("ok", (p) => p + 1)`)
			res, err := c.bounded(0, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.DispatchEvent(ctx, "spin", nil, kafig.WithAsync())
			})
			isCPULimit(t, c, res, err)
			require.NoError(t, c.inst.ResetExecutionStats(t.Context()))
			res, err = c.inst.DispatchEvent(t.Context(), "ok", json.RawMessage(`1`))
			isValue(`2`)(t, c, res, err)
		}},
		{name: "async-dispatch-rejection-handler-stops", opts: func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool { return true }))
		}, run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.after = 0; host.on("r", async () => { await host.rpc("aecho", 1); Promise.reject(new Error("x")); await host.rpc("sleep", 20); after++; return "went on" })`)
			res, err := c.inst.DispatchEvent(t.Context(), "r", nil, kafig.WithAsync())
			isCPULimit(t, c, res, err)
			assert.JSONEq(t, `0`, string(c.mustEval(`after`)), "nothing ran after the stop")
		}},
		{name: "async-dispatch-stack-overflow-handlers-kept", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("deep", async () => { await null; return (function f() { return f() })() }); host.on("ok", (p) => p * 3)`)
			res, err := c.inst.DispatchEvent(t.Context(), "deep", nil, kafig.WithAsync())
			isStackOverflow(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "ok", json.RawMessage(`3`))
			isValue(`9`)(t, c, res, err)
		}},
		{name: "sync-dispatch-cancel-in-rpcSync-handler", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("s", () => { try { host.rpcSync("ssleep", 60000) } catch (e) {} for (;;) {} })`)
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			_, err := c.inst.DispatchEvent(ctx, "s", nil)
			isRuntimeError(kafig.CodeCPULimitExceeded)(t, c, nil, err)
			assert.ErrorIs(t, err, context.Canceled)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
		}},
		{name: "async-dispatch-returns-thenable-loops", timeout: hang, after: usableOrDead, run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("t", async () => ({then(r) { for (;;) {} }}))`)
			res, err := c.bounded(hang, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.DispatchEvent(ctx, "t", nil, kafig.WithAsync())
			})
			isDeadline(t, c, res, err)
		}},
		{name: "handler-replaced-during-its-own-async-dispatch", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("x", async (p) => { host.on("x", () => "second"); await host.rpc("aecho", 1); return "first " + p })`)
			res, err := c.inst.DispatchEvent(t.Context(), "x", json.RawMessage(`1`), kafig.WithAsync())
			isValue(`"first 1"`)(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "x", nil)
			isValue(`"second"`)(t, c, res, err)
		}},

		// ---- callbacks that are slow, re-enter or close ----
		// The README: the interrupt callback may close the runtime. One that
		// is slow (400 ms: the monitor, seeing no poll, asks the callback
		// too and waits for cbMu) and then calls Runtime.Close waits for the
		// monitor, which waits for the callback: a permanent deadlock.
		{name: "interrupt-callback-slow-then-closes-runtime", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt, err := kafig.New(t.Context(), c.b.new())
			require.NoError(t, err)
			var once atomic.Bool
			inst, err := rt.Instance(t.Context(), kafig.WithInterruptCallback(func(uint64, uint64) bool {
				if once.CompareAndSwap(false, true) {
					time.Sleep(700 * time.Millisecond)
					_ = rt.Close(context.Background())
					return true
				}
				return false
			}))
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() {
				_, err := inst.Eval(context.Background(), `for (;;) {}`)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, kafig.ErrClosed) {
					isRuntimeError(kafig.CodeCPULimitExceeded)(t, c, nil, err)
				}
				_, err = inst.Eval(t.Context(), `1`)
				assert.ErrorIs(t, err, kafig.ErrClosed)
			case <-time.After(6 * time.Second):
				t.Errorf("deadlock: Runtime.Close from a slow interrupt callback has not returned after 6 s (the runtime is leaked)")
			}
		}},
		// Instance.Close returns at once while the instance runs its
		// interrupt callback; Runtime.Close must not wait for one either: a
		// callback of one instance that blocks would hold up the whole
		// runtime (and its monitor, the backstop of every other instance).
		{name: "runtime-close-not-held-by-blocked-interrupt-callback", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt, err := kafig.New(t.Context(), c.b.new())
			require.NoError(t, err)
			release := make(chan struct{})
			var once atomic.Bool
			inst, err := rt.Instance(t.Context(), kafig.WithInterruptCallback(func(uint64, uint64) bool {
				if once.CompareAndSwap(false, true) {
					<-release
				}
				return false
			}))
			require.NoError(t, err)
			evalDone := make(chan error, 1)
			go func() {
				_, err := inst.Eval(context.Background(), `for (;;) {}`)
				evalDone <- err
			}()
			time.Sleep(800 * time.Millisecond) // the monitor has seen no poll for 400 ms
			closed := make(chan struct{})
			start := time.Now()
			go func() { _ = rt.Close(context.Background()); close(closed) }()
			select {
			case <-closed:
			case <-time.After(3 * time.Second):
				t.Errorf("Runtime.Close blocked for %v by one instance's interrupt callback", time.Since(start))
			}
			close(release)
			<-closed
			assert.ErrorIs(t, <-evalDone, kafig.ErrClosed)
		}},
		{name: "rejection-handler-stats-own-instance-with-deadline", noInstance: true, run: func(t *testing.T, c *cctx) {
			var self atomic.Pointer[kafig.Instance]
			var got atomic.Value
			inst, err := c.rt.Instance(t.Context(), kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				defer cancel()
				_, err := self.Load().GetExecutionStats(ctx)
				got.Store(fmt.Sprint(err))
				return false
			}))
			require.NoError(t, err)
			defer inst.Close(context.Background())
			self.Store(inst)
			cc := &cctx{t: t, inst: inst}
			res, err := cc.evalTimeout(5*time.Second, `Promise.reject(new Error("r")); 7`)
			isValue(`7`)(t, cc, res, err)
			assert.Contains(t, got.Load(), "deadline exceeded", "the handler's own call waited for its context, then failed")
			res, err = cc.eval(`8`)
			isValue(`8`)(t, cc, res, err)
		}},
		{name: "interrupt-callback-evals-own-instance-with-deadline", noInstance: true, run: func(t *testing.T, c *cctx) {
			var self atomic.Pointer[kafig.Instance]
			var got atomic.Value
			var once atomic.Bool
			inst, err := c.rt.Instance(t.Context(), kafig.WithInterruptCallback(func(o, _ uint64) bool {
				if once.CompareAndSwap(false, true) {
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					_, err := self.Load().Eval(ctx, `globalThis.hijacked = true`)
					got.Store(fmt.Sprint(err))
				}
				return o > 1e6
			}))
			require.NoError(t, err)
			defer inst.Close(context.Background())
			self.Store(inst)
			cc := &cctx{t: t, inst: inst}
			res, err := cc.evalTimeout(5*time.Second, `for (;;) {}`)
			isCPULimit(t, cc, res, err)
			assert.Contains(t, got.Load(), "deadline exceeded")
			require.NoError(t, inst.ResetExecutionStats(t.Context()))
			res, err = cc.eval(`typeof hijacked`)
			isValue(`"undefined"`)(t, cc, res, err)
		}},

		// ---- memory the script makes the host hold ----
		{name: "pending-rpc-params-held-by-go-bounded", slow: true, after: usableOrDead,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithJSMemoryLimit(8 << 20)) }, run: func(t *testing.T, c *cctx) {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				before := ms.HeapAlloc
				var peak atomic.Uint64
				stop := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					for {
						select {
						case <-stop:
							return
						case <-time.After(10 * time.Millisecond):
						}
						var m runtime.MemStats
						runtime.ReadMemStats(&m)
						if m.HeapAlloc > peak.Load() {
							peak.Store(m.HeapAlloc)
						}
					}
				}()
				// 400 calls of 1 MiB params each, all waiting: 400 MiB in Go
				// for a script whose heap is capped at 8 MiB.
				res, err := c.evalTimeout(20*time.Second, `const big = "x".repeat(1 << 20)
					for (let i = 0; i < 400; i++) host.rpc("block", big).catch(() => {})
					const t0 = Date.now(); while (Date.now() - t0 < 300); "done"`, kafig.WithAsync())
				close(stop)
				<-sampled
				isValue(`"done"`)(t, c, res, err)
				grown := int64(peak.Load()) - int64(before)
				t.Logf("Go heap grew by %d MiB during the eval", grown>>20)
				assert.Less(t, grown, int64(150<<20), "the host holds far more than the script's JS heap limit (8 MiB) for its pending host.rpc params")
			}},
		{name: "heap-allowance-not-cumulative", opts: heap(4 << 20), after: anything, run: func(t *testing.T, c *cctx) {
			_, err := c.eval(`globalThis.keep = []; for (;;) keep.push("x".repeat(100) + keep.length)`)
			isMemoryLimit(t, c, nil, err)
			limit := uint64(4 << 20)
			allowance := limit/64 + 64<<10
			for i := range 60 {
				_, _ = c.eval(`try { for (let i = 0;; i++) keep.push({i}) } catch {}`)
				st := c.stats()
				require.LessOrEqual(t, st.HeapBytes, limit+allowance, "round %d: the heap exceeds its limit by more than the documented allowance", i)
				_, _ = c.eval(`keep.push([1, 2, 3, 4, 5, 6, 7, 8]); keep.length`)
				st = c.stats()
				require.LessOrEqual(t, st.HeapBytes, limit+allowance, "round %d: the heap exceeds its limit by more than the documented allowance", i)
			}
			// The code that frees the global runs (later code may fail
			// until it has: the heap is full).
			res, err := c.eval(`keep = null`)
			isValue(`null`)(t, c, res, err)
			res, err = c.eval(`[1, 1].map((x) => ({x})).length`)
			isValue(`2`)(t, c, res, err)
			assert.Less(t, c.stats().HeapBytes, limit/2, "freed once the global is released")
		}},

		// ---- hostile values across the bridge ----
		{name: "result-escaping-blowup-exact", src: `"\x01\"\\".repeat(1 << 19)`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			if !assert.NoError(t, err) {
				return
			}
			var s string
			if assert.NoError(t, json.Unmarshal(res, &s)) {
				assert.Equal(t, strings.Repeat("\x01\"\\", 1<<19), s)
			}
		}},
		{name: "rpc-params-escaping-blowup-exact", src: `host.rpcSync("len", "\x01".repeat(1 << 20))`, want: itoa(6<<20 + 2)},
		{name: "result-string-near-heap-limit", opts: heap(8 << 20), src: `"y".repeat(3 << 20)`, check: anyOf(sizedString(3<<20), isMemoryLimit)},
		{name: "dispatch-params-larger-than-heap", opts: heap(2 << 20), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"; host.on("big", (p) => p.length); host.on("ok", () => "ok")`)
			res, err := c.inst.DispatchEvent(t.Context(), "big", jsonString(3<<20))
			anyOf(isMemoryLimit, isErr(kafig.ErrInvalidSource))(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "ok", nil)
			isValue(`"ok"`)(t, c, res, err)
			recovered(t, c, 2<<20)
		}},
		{name: "dispatch-params-beyond-pages-cap", opts: pages(96), run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.mark = "kept"; host.on("big", (p) => p.length); host.on("ok", () => "ok")`)
			res, err := c.inst.DispatchEvent(t.Context(), "big", jsonString(8<<20))
			anyOf(isMemoryLimit, isErr(kafig.ErrInvalidSource))(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "ok", nil)
			isValue(`"ok"`)(t, c, res, err)
			assert.JSONEq(t, `"kept"`, string(c.mustEval(`mark`)))
		}},
		{name: "dispatch-result-larger-than-heap", opts: heap(4 << 20), run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("big", () => "z".repeat(3 << 20)); host.on("ok", () => "ok")`)
			res, err := c.inst.DispatchEvent(t.Context(), "big", nil)
			anyOf(isMemoryLimit, sizedString(3<<20))(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "ok", nil, kafig.WithAsync())
			isValue(`"ok"`)(t, c, res, err)
		}},
		{name: "rpc-reply-sizes-around-exchange-area", async: true, src: `
			const r = []; for (const n of [65534, 65535, 65536, 65537, 131073])
				r.push([host.rpcSync("size", n).length, (await host.rpc("asize", n)).length, host.rpcSync("len", "x".repeat(n - 2)), await host.rpc("alen", "x".repeat(n - 2))]); r`,
			want: `[[65532, 65532, 65534, 65534], [65533, 65533, 65535, 65535], [65534, 65534, 65536, 65536], [65535, 65535, 65537, 65537], [131071, 131071, 131073, 131073]]`},
		{name: "result-getter-closes-instance-via-rpcSync", noInstance: true, run: closeFromCallback(func(self func() *kafig.Instance) []kafig.InstanceOption {
			return []kafig.InstanceOption{kafig.WithRouter(kafig.NewRPCRouter().WithSync("closeSelf", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
				return nil, self().Close(ctx)
			}))}
		}, `({get a() { host.rpcSync("closeSelf"); return 1 }, b: 2})`)},
		{name: "toJSON-closes-instance-via-rpcSync-in-params", noInstance: true, run: closeFromCallback(func(self func() *kafig.Instance) []kafig.InstanceOption {
			return []kafig.InstanceOption{kafig.WithRouter(kafig.NewRPCRouter().
				WithSync("closeSelf", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) { return nil, self().Close(ctx) }).
				WithSync("echo", func(_ context.Context, p json.RawMessage) (json.RawMessage, error) { return p, nil }))}
		}, `host.rpcSync("echo", {toJSON() { host.rpcSync("closeSelf"); return 1 }})`)},

		// ---- bytecode ----
		{name: "compile-out-of-memory-then-compile-works", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b)
			_, err := rt.Compile(t.Context(), "["+strings.Repeat("{a:1},", 1<<20)+"0].length")
			anyOf(isMemoryLimit, isValue(`null`))(t, c, nil, err)
			bc, err := rt.Compile(t.Context(), `6 * 7`)
			require.NoError(t, err, "the next Compile works")
			inst, err := rt.Instance(t.Context())
			require.NoError(t, err)
			res, err := inst.EvalCompiled(t.Context(), bc)
			isValue(`42`)(t, c, res, err)
		}},
		{name: "evalcompiled-leaves-caller-bytes-alone", noInstance: true, run: func(t *testing.T, c *cctx) {
			bc, err := c.rt.Compile(t.Context(), `globalThis.k = (globalThis.k || 0) + 1; k`)
			require.NoError(t, err)
			orig := append([]byte(nil), bc...)
			var wg sync.WaitGroup
			for range 4 {
				inst, err := c.rt.Instance(t.Context())
				require.NoError(t, err)
				defer inst.Close(context.Background())
				wg.Go(func() {
					for i := range 20 {
						res, err := inst.EvalCompiled(context.Background(), bc)
						if assert.NoError(t, err) {
							assert.JSONEq(t, itoa(i+1), string(res))
						}
					}
				})
			}
			wg.Wait()
			assert.Equal(t, orig, bc, "EvalCompiled does not change the caller's bytecode")
		}},
		{name: "bytecode-larger-than-pages-cap", noInstance: true, run: func(t *testing.T, c *cctx) {
			src := "globalThis.s = [" + strings.Repeat(`"abcdefghijklmnop",`, 1<<17) + "0].length"
			bc, err := c.rt.Compile(t.Context(), src)
			require.NoError(t, err)
			inst, err := c.rt.Instance(t.Context(), kafig.WithWASMMemoryLimitPages(24))
			if err != nil {
				t.Skipf("the guest needs more than 24 pages: %v", err)
			}
			defer inst.Close(context.Background())
			cc := &cctx{t: t, inst: inst}
			res, err := cc.bounded(0, func(ctx context.Context) (json.RawMessage, error) { return inst.EvalCompiled(ctx, bc) })
			anyOf(isMemoryLimit, isErr(kafig.ErrInvalidSource), isValue(itoa(1<<17+1)))(t, cc, res, err)
			res, err = cc.eval(`1 + 1`)
			isValue(`2`)(t, cc, res, err)
		}},
		{name: "bytecode-from-runtime-with-other-prelude", noInstance: true, run: func(t *testing.T, c *cctx) {
			a := newRuntime(t, c.b, kafig.WithBytecodeKey(testKey), kafig.WithPrelude(`const FROM_PRELUDE = 1`))
			b := newRuntime(t, c.b, kafig.WithBytecodeKey(testKey))
			bc, err := a.Compile(t.Context(), `typeof FROM_PRELUDE`)
			require.NoError(t, err)
			inst, err := b.Instance(t.Context())
			require.NoError(t, err)
			res, err := inst.EvalCompiled(t.Context(), bc)
			isValue(`"undefined"`)(t, c, res, err)
		}},

		// ---- prelude ----
		{name: "prelude-job-not-counted-in-first-async-eval",
			rtOpts: []kafig.Option{kafig.WithPrelude(`Promise.resolve().then(() => { for (let i = 0; i < 3e5; i++) {} globalThis.jobRan = true })`)},
			run: func(t *testing.T, c *cctx) {
				res, err := c.eval(`typeof jobRan`)
				isValue(`"boolean"`)(t, c, res, err)
				c.mustEval(`1`, kafig.WithAsync())
				assert.Less(t, c.stats().Opcodes, uint64(1e5), "the prelude's job is not counted in a user eval")
			}},
		// A prelude's jobs run as part of it: one that never ends holds New
		// until New's context ends, like a prelude that never ends, and
		// leaves nothing behind.
		{name: "prelude-job-loop-ends-with-new-context", noInstance: true, run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			rt, err := kafig.New(ctx, c.b.new(), kafig.WithPrelude(`Promise.resolve().then(() => { for (;;) {} })`))
			if err == nil {
				_ = rt.Close(context.Background())
			}
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, time.Since(start), 5*time.Second)
		}},
		{name: "prelude-job-state-seen-by-first-eval", rtOpts: []kafig.Option{kafig.WithPrelude(`
			globalThis.order = []; Promise.resolve().then(() => order.push("job")); order.push("prelude")`)},
			src: `order.push("eval"); order`, want: `["prelude", "job", "eval"]`},
		{name: "prelude-rejection-reported-to-instance-handler", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b, kafig.WithPrelude(`Promise.reject(new Error("from prelude"))`))
			var seen atomic.Int64
			inst, err := rt.Instance(t.Context(), kafig.WithPromiseRejectionHandler(func(e *kafig.JsError) bool {
				seen.Add(1)
				return false
			}))
			require.NoError(t, err)
			res, err := inst.Eval(t.Context(), `1 + 1`)
			isValue(`2`)(t, c, res, err)
			assert.LessOrEqual(t, seen.Load(), int64(1), "reported at most once")
		}},
		{name: "prelude-patches-bridge-globals", rtOpts: []kafig.Option{kafig.WithPrelude(`
			JSON.stringify = JSON.parse = () => { throw new Error("patched") }
			Object.prototype.toJSON = undefined; Promise.prototype.then = () => { throw new Error("patched") }
			Error.prototype.toString = () => { for (;;) {} }`)},
			async: true, src: `[host.rpcSync("echo", {a: 1}), await host.rpc("aecho", [2]), {r: 3}]`, want: `[{"a": 1}, [2], {"r": 3}]`},
		{name: "prelude-heavy-allocation-counts-in-heap", rtOpts: []kafig.Option{kafig.WithPrelude(`globalThis.big = "p".repeat(3 << 20) + "!"`)},
			opts: heap(4 << 20), run: func(t *testing.T, c *cctx) {
				_, err := c.eval(`"u".repeat(2 << 20) + "!"`)
				isMemoryLimit(t, c, nil, err)
				res, err := c.eval(`big = null; "u".repeat(2 << 20).length`)
				isValue(itoa(2<<20))(t, c, res, err)
			}},

		// ---- floods and concurrency ----
		{name: "mixed-operations-from-many-goroutines", run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.n = 0; host.on("inc", (p) => (n += p, n))`)
			bc := c.compile(`n += 1; n`)
			const workers, each = 12, 25
			var wg sync.WaitGroup
			var bad atomic.Value
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						var res json.RawMessage
						var err error
						switch (w + i) % 5 {
						case 0:
							res, err = c.inst.Eval(context.Background(), `n += 1; n`)
						case 1:
							res, err = c.inst.Eval(context.Background(), `await host.rpc("aecho", 1); n += 1; n`, kafig.WithAsync())
						case 2:
							res, err = c.inst.DispatchEvent(context.Background(), "inc", json.RawMessage(`1`))
						case 3:
							res, err = c.inst.EvalCompiled(context.Background(), bc)
						case 4:
							res, err = c.inst.DispatchEvent(context.Background(), "inc", json.RawMessage(`1`), kafig.WithAsync())
						}
						if err != nil || len(res) == 0 {
							bad.Store(fmt.Sprintf("%s %v", res, err))
						}
					}
				})
			}
			wg.Wait()
			assert.Nil(t, bad.Load())
			assert.JSONEq(t, itoa(workers*each), string(c.mustEval(`n`)), "every operation ran exactly once")
		}},
		{name: "dispatch-storm-then-close", after: closed, run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("e", (p) => host.rpcSync("echo", p))`)
			var wg sync.WaitGroup
			var bad atomic.Value
			var ok atomic.Int64
			for w := range 8 {
				wg.Go(func() {
					for i := range 200 {
						p := json.RawMessage(itoa(w*1000 + i))
						res, err := c.inst.DispatchEvent(context.Background(), "e", p)
						switch {
						case errors.Is(err, kafig.ErrClosed):
						case err != nil || string(res) != string(p):
							bad.Store(fmt.Sprintf("%s: %s %v", p, res, err))
						default:
							ok.Add(1)
						}
					}
				})
			}
			time.Sleep(30 * time.Millisecond)
			require.NoError(t, c.inst.Close(context.Background()))
			wg.Wait()
			assert.Nil(t, bad.Load(), "every dispatch got its own params back, or ErrClosed")
			t.Logf("%d dispatches before Close", ok.Load())
		}},
		{name: "runtime-close-ends-busy-instances", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt, err := kafig.New(t.Context(), c.b.new())
			require.NoError(t, err)
			srcs := []string{`for (;;) {}`, `await host.rpc("block")`, `for (;;) await null`, `host.rpcSync("ssleep", 60000)`}
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for i := range 12 {
				inst, err := rt.Instance(t.Context(), kafig.WithRouter(c.router()))
				require.NoError(t, err)
				wg.Go(func() {
					_, err := inst.Eval(context.Background(), srcs[i%len(srcs)], kafig.WithAsync())
					errs <- err
				})
			}
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			require.NoError(t, rt.Close(context.Background()))
			wg.Wait()
			assert.Less(t, time.Since(start), 3*time.Second, "Runtime.Close ends every running call")
			close(errs)
			for err := range errs {
				assert.ErrorIs(t, err, kafig.ErrClosed)
			}
		}},
		{name: "thousand-instances-then-runtime-close", slow: true, noInstance: true, run: func(t *testing.T, c *cctx) {
			base := runtime.NumGoroutine()
			rt, err := kafig.New(t.Context(), c.b.new(), kafig.WithWASMMemoryLimitPages(256))
			require.NoError(t, err)
			insts := make([]*kafig.Instance, 1000)
			for i := range insts {
				insts[i], err = rt.Instance(t.Context())
				require.NoError(t, err)
				_, err = insts[i].Eval(t.Context(), `globalThis.id = `+itoa(i))
				require.NoError(t, err)
			}
			for _, i := range []int{0, 499, 999} {
				res, err := insts[i].Eval(t.Context(), `id`)
				isValue(itoa(i))(t, c, res, err)
			}
			require.NoError(t, rt.Close(context.Background()))
			for _, in := range insts {
				_, err := in.Eval(t.Context(), `1`)
				require.ErrorIs(t, err, kafig.ErrClosed)
			}
			assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+2 }, 5*time.Second, 20*time.Millisecond)
		}},
		{name: "pending-rpc-flood-at-max-limit-deadline", after: usableOrDead, opts: func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithMaxPendingRPCs(kafig.MaxPendingRPCsLimit), kafig.WithMaxConcurrentRPCs(kafig.MaxConcurrentRPCsLimit))
		}, run: func(t *testing.T, c *cctx) {
			base := runtime.NumGoroutine()
			res, err := c.evalTimeout(time.Second, `for (let i = 0; i < 100000; i++) host.rpc("block").catch(() => {}); await host.rpc("block")`, kafig.WithAsync())
			anyOf(isDeadline, isMemoryLimit)(t, c, res, err)
			assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+4 }, 5*time.Second, 20*time.Millisecond, "the handlers' goroutines end")
		}},
		{name: "stale-replies-not-delivered-to-next-eval", async: true, run: func(t *testing.T, c *cctx) {
			for range 5 {
				c.mustEval(`for (let i = 0; i < 100; i++) host.rpc("sleep", 5).then(() => { globalThis.leak = true }); 1`, kafig.WithAsync())
				res, err := c.eval(`await (async () => { const ps = []; for (let i = 0; i < 100; i++) ps.push(host.rpc("aecho", i))
					return (await Promise.all(ps)).reduce((a, b) => a + b, 0) })()`, kafig.WithAsync())
				isValue(`4950`)(t, c, res, err)
			}
			assert.JSONEq(t, `"undefined"`, string(c.mustEval(`typeof leak`)), "no stale reply settled a dropped promise")
		}},
		{name: "cancel-while-settling-many-replies", after: usableOrDead, async: true, run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(150*time.Millisecond, cancel)
			start := time.Now()
			_, err := c.inst.Eval(ctx, `const ps = []; for (let i = 0; i < 1000; i++) ps.push(host.rpc("aecho", i).then(x => { for (let j = 0; j < 2e4; j++); return x }))
				for (;;) { await Promise.all(ps) }`, kafig.WithAsync())
			isRuntimeError(kafig.CodeCPULimitExceeded)(t, c, nil, err)
			assert.ErrorIs(t, err, context.Canceled)
			assert.Less(t, time.Since(start), stopBound(150*time.Millisecond))
		}},
		{name: "resets-and-stats-during-evals", run: func(t *testing.T, c *cctx) {
			var calls atomic.Int64
			c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithInterruptCallback(func(o, cpu uint64) bool { calls.Add(1); return false }))
			})
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var bad atomic.Value
			for range 3 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						if err := c.inst.ResetExecutionStats(context.Background()); err != nil {
							bad.Store(err.Error())
						}
						if st, err := c.inst.GetExecutionStats(context.Background()); err != nil || st.HeapLimitBytes != kafig.DefaultJSMemoryLimit {
							bad.Store(fmt.Sprint(st, err))
						}
					}
				})
			}
			for i := range 30 {
				res, err := c.eval(busyLoop)
				if !assert.NoError(t, err, "eval %d", i) {
					break
				}
				assert.JSONEq(t, `19999900000`, string(res))
			}
			close(stop)
			wg.Wait()
			assert.Nil(t, bad.Load())
			assert.Positive(t, calls.Load())
		}},
	})
}
