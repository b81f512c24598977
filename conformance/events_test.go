package conformance

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig"
)

// dispatch is a case flow: evaluate setup (async), then dispatch name with
// params and check the answer.
func dispatch(setup, name, params string, async bool, check checkFn) func(t *testing.T, c *cctx) {
	return func(t *testing.T, c *cctx) {
		if setup != "" {
			c.mustEval(setup, kafig.WithAsync())
		}
		var opts []kafig.EvalOption
		if async {
			opts = append(opts, kafig.WithAsync())
		}
		var p json.RawMessage
		if params != "" {
			p = json.RawMessage(params)
		}
		res, err := c.bounded(0, func(ctx context.Context) (json.RawMessage, error) {
			return c.inst.DispatchEvent(ctx, name, p, opts...)
		})
		check(t, c, res, err)
	}
}

// TestEvents: host.on handlers and Instance.DispatchEvent.
func TestEvents(t *testing.T) {
	echoHandler := `host.on("echo", (p) => p)`
	runCases(t, []tcase{
		{name: "sync-dispatch", run: dispatch(echoHandler, "echo", `{"a": [1, 2]}`, false, isValue(`{"a": [1, 2]}`))},
		{name: "sync-dispatch-computes", run: dispatch(`host.on("add", ({a, b}) => a + b)`, "add", `{"a": 2, "b": 40}`, false, isValue(`42`))},
		{name: "nil-params-is-null", run: dispatch(`host.on("t", function (p) { return [p, arguments.length] })`, "t", "", false, isValue(`[null, 1]`))},
		{name: "handler-arguments", run: dispatch(`host.on("t", function (...a) { return [a.length, a[0]] })`, "t", `7`, false, isValue(`[1, 7]`))},
		{name: "primitive-params", run: dispatch(echoHandler, "echo", `"str"`, false, isValue(`"str"`))},
		{name: "unicode-params", run: dispatch(echoHandler, "echo", `"é😀\u0000\ud800"`, false, exactJSON(`"é😀\u0000\ud800"`))},
		{name: "undefined-result-is-null", run: dispatch(`host.on("u", () => {})`, "u", `1`, false, isValue(`null`))},
		{name: "async-dispatch-with-rpc", run: dispatch(`
			host.on("process", async (params) => {
				const r = await host.rpc("aecho", {url: params.url})
				return r.url + "!"
			})`, "process", `{"url": "https://example.com"}`, true, isValue(`"https://example.com!"`))},
		{name: "async-dispatch-promise-awaited", run: dispatch(`host.on("p", () => Promise.resolve(5))`, "p", "", true, isValue(`5`))},
		{name: "async-dispatch-rejects", run: dispatch(`host.on("r", async () => { await null; throw new TypeError("in handler") })`, "r", "", true,
			isJsError("TypeError", "in handler"))},
		{name: "sync-dispatch-pending-promise", run: dispatch(`host.on("p", () => new Promise(() => {}))`, "p", "", false,
			isRuntimeError(kafig.CodeRuntimeError))},
		{name: "async-dispatch-never-settles", run: dispatch(`host.on("p", () => new Promise(() => {}))`, "p", "", true,
			isRuntimeError(kafig.CodeRuntimeError))},
		{name: "sync-dispatch-rpc-rejects", run: dispatch(`host.on("p", () => host.rpc("aecho", 1).then(() => "ok", e => e.message))`, "p", "", false,
			anyOf(isValue(`"host.rpc needs an async evaluation (kafig.WithAsync)"`), isRuntimeError(kafig.CodeRuntimeError)))},
		{name: "sync-dispatch-rpcSync", run: dispatch(`host.on("s", (p) => host.rpcSync("echo", p))`, "s", `[3]`, false, isValue(`[3]`))},
		{name: "handler-throws", run: dispatch(`host.on("t", () => { throw new RangeError("bad") })`, "t", "", false,
			all(isJsError("RangeError", "bad"), hasStack("")))},
		{name: "handler-throws-non-error", run: dispatch(`host.on("t", () => { throw "str" })`, "t", "", true, isJsError("Error", "str"))},
		{name: "unregistered-name", run: dispatch(echoHandler, "other", "", false, isErr(kafig.ErrNoHandler))},
		{name: "unregistered-name-async", run: dispatch("", "nothing", `{}`, true, isErr(kafig.ErrNoHandler))},
		{name: "unregistered-name-message", run: func(t *testing.T, c *cctx) {
			_, err := c.inst.DispatchEvent(t.Context(), "missing-event", nil)
			assert.ErrorIs(t, err, kafig.ErrNoHandler)
			assert.Contains(t, err.Error(), "missing-event")
		}},
		{name: "prototype-names-are-not-handlers", run: func(t *testing.T, c *cctx) {
			c.mustEval(`Object.prototype.evil = () => "pwned"; host.on("real", () => 1)`)
			for _, name := range []string{"constructor", "toString", "__proto__", "hasOwnProperty", "valueOf", "evil", "__defineGetter__"} {
				_, err := c.inst.DispatchEvent(t.Context(), name, nil)
				assert.ErrorIs(t, err, kafig.ErrNoHandler, "event %q", name)
			}
		}},
		{name: "re-registration-replaces", run: dispatch(`host.on("v", () => 1); host.on("v", () => 2)`, "v", "", false, isValue(`2`))},
		{name: "re-registration-from-handler", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("v", () => { host.on("v", () => "second"); return "first" })`)
			for _, want := range []string{`"first"`, `"second"`, `"second"`} {
				res, err := c.inst.DispatchEvent(t.Context(), "v", nil)
				if assert.NoError(t, err) {
					assert.JSONEq(t, want, string(res))
				}
			}
		}},
		{name: "handler-state-persists", run: func(t *testing.T, c *cctx) {
			c.mustEval(`let n = 0; host.on("inc", () => ++n)`)
			for i := 1; i <= 5; i++ {
				res, err := c.inst.DispatchEvent(t.Context(), "inc", nil)
				if assert.NoError(t, err) {
					assert.JSONEq(t, itoa(i), string(res))
				}
			}
			assert.JSONEq(t, `5`, string(c.mustEval(`n`)))
		}},
		{name: "many-handlers", run: func(t *testing.T, c *cctx) {
			c.mustEval(`for (let i = 0; i < 1000; i++) host.on("e" + i, () => i)`)
			for _, i := range []int{0, 1, 500, 999} {
				res, err := c.inst.DispatchEvent(t.Context(), "e"+itoa(i), nil)
				if assert.NoError(t, err) {
					assert.JSONEq(t, itoa(i), string(res))
				}
			}
		}},
		{name: "unicode-name", run: dispatch(`host.on("событие😀", () => "ok")`, "событие😀", "", false, isValue(`"ok"`))},
		{name: "longest-name", run: dispatch(`host.on("e".repeat(256), () => "long")`, strings.Repeat("e", 256), "", false, isValue(`"long"`))},
		{name: "on-not-a-function", src: `host.on("x", 42)`, check: isJsError("TypeError", "")},
		{name: "on-name-not-a-string", src: `host.on(42, () => 1)`, check: isJsError("TypeError", "")},
		{name: "on-name-empty", src: `host.on("", () => 1)`, check: anyOf(isJsError("TypeError", ""), isJsError("RangeError", ""))},
		{name: "on-name-too-long", src: `host.on("e".repeat(257), () => 1)`, check: anyOf(isJsError("TypeError", ""), isJsError("RangeError", ""))},
		{name: "bad-params-json", run: dispatch(echoHandler, "echo", `{"a":`, false, isErr(kafig.ErrInvalidSource))},
		{name: "bad-params-two-values", run: dispatch(echoHandler, "echo", `1 2`, false, isErr(kafig.ErrInvalidSource))},
		{name: "empty-name", run: dispatch(echoHandler, "", "", false, isErr(kafig.ErrInvalidSource))},
		{name: "name-too-long", run: dispatch(echoHandler, strings.Repeat("e", 257), "", false, isErr(kafig.ErrInvalidSource))},
		{name: "name-invalid-utf8", run: dispatch(echoHandler, "e\xff", "", false, isErr(kafig.ErrInvalidSource))},
		{name: "name-with-nul", run: dispatch(echoHandler, "e\x00cho", "", false, isErr(kafig.ErrInvalidSource))},
		{name: "params-around-64k", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("len", (p) => p.length); host.on("l", (p) => p.length)`)
			// The name and the params share the exchange data area.
			x := abi.ExchangeDataSize - len("len")
			for _, n := range []int{x - 2, x - 1, x, x + 1, 1 << 20} {
				for _, name := range []string{"len", "l"} {
					res, err := c.inst.DispatchEvent(t.Context(), name, jsonString(n))
					if assert.NoError(t, err, "n=%d name=%s", n, name) {
						assert.JSONEq(t, itoa(n-2), string(res))
					}
				}
			}
		}},
		{name: "dispatch-then-eval-share-state", run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.seen = []; host.on("push", (p) => seen.push(p))`)
			for i := range 3 {
				_, err := c.inst.DispatchEvent(t.Context(), "push", json.RawMessage(itoa(i)), kafig.WithAsync())
				assert.NoError(t, err)
			}
			assert.JSONEq(t, `[0, 1, 2]`, string(c.mustEval(`seen`)))
		}},
		{name: "handler-registered-in-async-eval", run: dispatch(`await null; host.on("late", () => "registered after await")`, "late", "", false,
			isValue(`"registered after await"`))},
		{name: "handler-this-is-not-host-internals", run: dispatch(`host.on("this", function () { return typeof this })`, "this", "", false,
			anyOf(isValue(`"undefined"`), isValue(`"object"`)))},
		{name: "handler-result-bigint", run: dispatch(`host.on("b", () => 1n)`, "b", "", false, isJsError("TypeError", "BigInt"))},
		{name: "dispatch-concurrency-serialized", run: func(t *testing.T, c *cctx) {
			c.mustEval(`let busy = false; host.on("s", async () => { if (busy) throw new Error("overlap"); busy = true; await host.rpc("sleep", 5); busy = false; return 1 })`)
			errs := make(chan error, 8)
			for range 8 {
				go func() {
					_, err := c.inst.DispatchEvent(context.Background(), "s", nil, kafig.WithAsync())
					errs <- err
				}()
			}
			for range 8 {
				assert.NoError(t, <-errs)
			}
		}},
	})
}
