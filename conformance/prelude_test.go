package conformance

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// newFails is a case flow: kafig.New with the prelude must fail with an
// error that check accepts.
func newFails(prelude string, timeout time.Duration, check checkFn) func(t *testing.T, c *cctx) {
	return func(t *testing.T, c *cctx) {
		if timeout == 0 {
			timeout = defaultTimeout
		}
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		start := time.Now()
		rt, err := kafig.New(ctx, c.b.new(), kafig.WithPrelude(prelude))
		assert.LessOrEqual(t, time.Since(start), stopBound(timeout)+5*time.Second) // plus compiling the guest
		if !assert.Error(t, err) {
			_ = rt.Close(ctx)
			return
		}
		assert.Nil(t, rt)
		check(t, c, nil, err)
	}
}

// TestPrelude: WithPrelude runs in every instance before user code.
func TestPrelude(t *testing.T) {
	prelude := func(src string) []kafig.Option { return []kafig.Option{kafig.WithPrelude(src)} }
	runCases(t, []tcase{
		{name: "defines-globals", rtOpts: prelude(`const VERSION = "1.0"; function helper(x) { return x * 2 }; var v = 1`),
			src: `[VERSION, helper(21), v]`, want: `["1.0", 42, 1]`},
		{name: "defines-helpers-over-rpc", rtOpts: prelude(`globalThis.api = { echo: (x) => host.rpc("aecho", x) }`),
			async: true, src: `await api.echo("via prelude")`, want: `"via prelude"`},
		{name: "registers-event-handlers", rtOpts: prelude(`host.on("ping", () => "pong")`),
			run: dispatch("", "ping", "", false, isValue(`"pong"`))},
		{name: "fresh-per-instance", rtOpts: prelude(`globalThis.n = 0`), run: func(t *testing.T, c *cctx) {
			assert.JSONEq(t, `1`, string(c.mustEval(`++n`)))
			assert.JSONEq(t, `2`, string(c.mustEval(`++n`)))
			other := c.newInstance(nil)
			res, err := other.Eval(t.Context(), `++n`)
			if assert.NoError(t, err) {
				assert.JSONEq(t, `1`, string(res))
			}
		}},
		{name: "completion-value-discarded", rtOpts: prelude(`42`), src: `1`, want: `1`},
		{name: "frozen-by-prelude", rtOpts: prelude(`Object.freeze(globalThis.config = {a: 1})`),
			src: `config.a = 2; config.a`, want: `1`},
		{name: "cannot-replace-host", rtOpts: prelude(`globalThis.host = null; var host = 1`),
			src: `typeof host.rpcSync`, want: `"function"`},
		{name: "not-counted-in-stats", rtOpts: prelude(`for (let i = 0; i < 3e5; i++) {}`), run: func(t *testing.T, c *cctx) {
			st, err := c.inst.GetExecutionStats(t.Context())
			require.NoError(t, err)
			assert.Zero(t, st.Opcodes)
			assert.Less(t, st.CPUTimeUs, uint64(50_000))
		}},
		{name: "rpcSync-guarded", rtOpts: prelude(`globalThis.cfg = (() => { try { return host.rpcSync("cfg") } catch (e) { return "none" } })()`),
			opts: cfgRouter, src: `cfg`, want: `{"from": "router"}`},
		// WithPrelude: "host.rpcSync works, with the instance's router".
		// New checks the prelude in a throwaway instance without a router;
		// once it has called host.rpcSync, its failure is judged per instance.
		{name: "rpcSync-with-instance-router", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt, err := kafig.New(t.Context(), c.b.new(), kafig.WithPrelude(`globalThis.cfg = host.rpcSync("cfg")`))
			if !assert.NoError(t, err, "BUG: New runs the prelude without the instance's router") {
				return
			}
			defer rt.Close(t.Context())
			inst, err := rt.Instance(t.Context(), cfgRouter(c)...)
			require.NoError(t, err)
			res, err := inst.Eval(t.Context(), `cfg`)
			if assert.NoError(t, err) {
				assert.JSONEq(t, `{"from": "router"}`, string(res))
			}
		}},
		{name: "rpcSync-failure-fails-Instance", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt, err := kafig.New(t.Context(), c.b.new(), kafig.WithPrelude(`globalThis.cfg = host.rpcSync("cfg"); if (!cfg.from) throw new Error("no cfg")`))
			require.NoError(t, err)
			defer rt.Close(t.Context())
			inst, err := rt.Instance(t.Context()) // no router: the prelude's RPC fails
			if !assert.Error(t, err) {
				_ = inst.Close(t.Context())
			} else {
				assert.Nil(t, inst)
				var je *kafig.JsError
				require.ErrorAs(t, err, &je)
				assert.Contains(t, je.Message, "cfg")
			}
			inst, err = rt.Instance(t.Context(), cfgRouter(c)...)
			require.NoError(t, err)
			defer inst.Close(t.Context())
			res, err := inst.Eval(t.Context(), `cfg.from`)
			if assert.NoError(t, err) {
				assert.JSONEq(t, `"router"`, string(res))
			}
		}},
		{name: "exception-before-rpcSync-fails-New", noInstance: true, run: newFails(`throw new TypeError("early"); host.rpcSync("cfg")`, 0, isJsError("TypeError", "early"))},
		{name: "syntax-error-fails-New", noInstance: true, run: newFails(`let = = 1`, 0, all(isJsError("SyntaxError", ""), hasStack("")))},
		{name: "exception-fails-New", noInstance: true, run: newFails(`throw new TypeError("in prelude")`, 0, isJsError("TypeError", "in prelude"))},
		{name: "top-level-await-fails-New", noInstance: true, run: newFails(`await 1`, 0, isJsError("SyntaxError", ""))},
		{name: "infinite-loop-bounded-by-ctx", noInstance: true, run: newFails(`for (;;) {}`, hangTimeout, func(t tT, _ *cctx, _ json.RawMessage, err error) {
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		})},
		{name: "memory-bomb-fails-New", noInstance: true, run: newFails(`const a = []; for (;;) a.push({})`, 0, isMemoryLimit)},
		{name: "stack-overflow-fails-New", noInstance: true, run: newFails(`(function f() { f() })()`, 0, isStackOverflow)},
		{name: "empty-is-invalid", noInstance: true, run: newFails(``, 0, isErr(kafig.ErrInvalidOption))},
		{name: "nul-is-invalid", noInstance: true, run: newFails("var a = 1;\x00", 0, isErr(kafig.ErrInvalidOption))},
		{name: "invalid-utf8-is-invalid", noInstance: true, run: newFails("var a = '\xff';", 0, isErr(kafig.ErrInvalidOption))},
		// WithPrelude: the promise jobs it queues run right after it.
		{name: "jobs-run-before-user-code", rtOpts: prelude(`globalThis.ready = false; Promise.resolve().then(() => { ready = true })`),
			src: `ready`, want: `true`},
		{name: "job-exception-leaves-instance-usable", rtOpts: prelude(`Promise.resolve().then(() => { throw new Error("in a job") }).catch(() => {}); Promise.resolve().then(() => { null.x })`),
			async: true, src: `await host.rpc("aecho", "ok")`, want: `"ok"`},
		{name: "job-rpc-dropped-instance-usable", rtOpts: prelude(`globalThis.early = "none"; Promise.resolve().then(() => host.rpc("aecho", 1)).then(v => { early = v }, e => { early = "rejected" })`),
			// The call the prelude's job started is dropped unanswered when the
			// prelude ends (WithPrelude): never settled, least of all with this
			// eval's reply.
			async: true, src: `[await host.rpc("aecho", 2), early]`, want: `[2, "none"]`},
		{name: "job-memory-bomb-fails-New", noInstance: true, run: newFails(`Promise.resolve().then(() => { const a = []; for (;;) a.push({}) })`, 0, isMemoryLimit)},
		{name: "job-stack-overflow-fails-nothing", rtOpts: prelude(`Promise.resolve().then(function f() { f() }).catch(() => {}); globalThis.v = 1`),
			src: `v`, want: `1`},
		{name: "large-prelude", rtOpts: prelude(largePrelude()), src: `f999()`, want: `999`},
		{name: "bytecode-sees-prelude", rtOpts: prelude(`const P = "p"`), run: func(t *testing.T, c *cctx) {
			bc, err := c.rt.Compile(t.Context(), `P + "!"`)
			require.NoError(t, err)
			res, err := c.inst.EvalCompiled(t.Context(), bc)
			if assert.NoError(t, err) {
				assert.JSONEq(t, `"p!"`, string(res))
			}
		}},
	})
}

func cfgRouter(c *cctx) []kafig.InstanceOption {
	r := kafig.NewRPCRouter().WithSync("cfg", func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"from": "router"}`), nil
	})
	return []kafig.InstanceOption{kafig.WithRouter(r)}
}

// largePrelude is about 100 KB of functions f0..f999.
func largePrelude() string {
	var b []byte
	for i := range 1000 {
		b = append(b, "function f"+itoa(i)+"() { /* padding padding padding padding */ return "+itoa(i)+" }\n"...)
	}
	return string(b)
}
