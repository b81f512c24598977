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
			res, err := c.eval(`try { host.on("ev\0x", () => "nul") } catch (e) { e.name }; 1`)
			_ = res
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
			c.t.Cleanup(func() {})
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
	})
	_ = bomb
	_ = runtime.NumGoroutine
	_ = sync.Mutex{}
}
