package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig"
)

// payloadSizes are sizes of RPC params and replies in bytes of JSON: around
// the 64 KiB exchange data area (an input needs one byte more than its
// length) and much larger.
var payloadSizes = []struct {
	n    int
	slow bool
}{
	{2, false}, {100, false},
	{abi.ExchangeDataSize - 2, false}, {abi.ExchangeDataSize - 1, false},
	{abi.ExchangeDataSize, false}, {abi.ExchangeDataSize + 1, false},
	{2 * abi.ExchangeDataSize, false}, {1 << 20, false}, {8 << 20, true},
}

// TestRPC: host.rpcSync and host.rpc, through the RPCRouter.
func TestRPC(t *testing.T) {
	cases := []tcase{
		{name: "sync-echo", src: `host.rpcSync("echo", {a: [1, "two", null, true]})`, want: `{"a": [1, "two", null, true]}`},
		{name: "async-echo", async: true, src: `await host.rpc("aecho", {a: [1, "two"]})`, want: `{"a": [1, "two"]}`},
		{name: "sync-method-via-rpc", async: true, src: `await host.rpc("echo", "inline")`, want: `"inline"`},
		{name: "no-params-is-null", src: `[host.rpcSync("echo"), host.rpcSync("echo", undefined), host.rpcSync("echo", null)]`, want: `[null, null, null]`},
		{name: "no-params-is-null-async", async: true, src: `[await host.rpc("aecho"), await host.rpc("aecho", undefined)]`, want: `[null, null]`},
		{name: "function-params-is-null", src: `host.rpcSync("echo", function () {})`, want: `null`},
		{name: "primitive-params", src: `[host.rpcSync("echo", 1.5), host.rpcSync("echo", "s"), host.rpcSync("echo", false)]`, want: `[1.5, "s", false]`},
		{name: "params-roundtrip-exact", src: `
			const v = {s: "é😀\u0000\n\"", n: [0, -1, 1e21, 0.5], o: {deep: [[[{}]]]}, e: ""}
			JSON.stringify(host.rpcSync("echo", v)) === JSON.stringify(v)`, want: `true`},
		{name: "lone-surrogate-params-roundtrip", src: `
			const r = host.rpcSync("echo", "a\ud800b");
			[r.length, r.charCodeAt(1) === 0xD800]`, want: `[3, true]`},
		{name: "bigint-params-TypeError", src: `host.rpcSync("echo", {n: 1n})`, check: isJsError("TypeError", "BigInt")},
		{name: "bigint-params-TypeError-async", async: true, src: `await host.rpc("aecho", 1n)`, check: isJsError("TypeError", "BigInt")},
		{name: "cyclic-params-TypeError", src: `const o = {}; o.o = o; host.rpcSync("echo", o)`, check: isJsError("TypeError", "circular")},
		{name: "toJSON-params", src: `host.rpcSync("echo", {toJSON() { return "tj" }})`, want: `"tj"`},
		{name: "method-not-string", src: `host.rpcSync(42)`, check: isJsError("TypeError", "method")},
		{name: "method-not-string-async", async: true, src: `await host.rpc({})`, check: isJsError("TypeError", "method")},
		{name: "method-missing", src: `host.rpcSync()`, check: isJsError("TypeError", "method")},
		{name: "method-empty", src: `host.rpcSync("")`, check: isJsError("RangeError", "method must be 1 to 256 bytes long")},
		{name: "method-empty-async", async: true, src: `await host.rpc("")`, check: isJsError("RangeError", "method must be 1 to 256 bytes long")},
		{name: "method-too-long", src: `host.rpcSync("m".repeat(100000))`, check: isJsError("RangeError", "method must be 1 to 256 bytes long")},
		{name: "method-longest", src: `try { host.rpcSync("m".repeat(256)) } catch (e) { e.message.length }`, want: `282`},
		{name: "method-unicode-unknown", src: `try { host.rpcSync("метод😀") } catch (e) { e.message }`, want: `"kafig: unknown RPC method метод😀"`},
		{name: "unknown-sync", src: `host.rpcSync("nope", 1)`, check: all(isJsError("Error", "kafig: unknown RPC method nope"), hasStack("<eval>"))},
		{name: "unknown-sync-catchable", src: `try { host.rpcSync("nope") } catch (e) { [e instanceof Error, e.message] }`, want: `[true, "kafig: unknown RPC method nope"]`},
		{name: "unknown-async", async: true, src: `await host.rpc("nope", 1)`, check: isJsError("Error", "kafig: unknown RPC method nope")},
		{name: "unknown-async-catchable", async: true, src: `await host.rpc("nope").then(() => "resolved", e => e.message)`, want: `"kafig: unknown RPC method nope"`},
		{name: "no-router-every-method-unknown", opts: func(c *cctx) []kafig.InstanceOption { return nil }, async: true, src: `
			const a = await host.rpc("aecho", 1).catch(e => e.message)
			let b; try { host.rpcSync("echo", 1) } catch (e) { b = e.message }
			[a, b]`, want: `["kafig: unknown RPC method aecho", "kafig: unknown RPC method echo"]`},
		{name: "handler-error-sync", src: `host.rpcSync("fail")`, check: isJsError("Error", "boom from go")},
		{name: "handler-error-async", async: true, src: `await host.rpc("afail")`, check: isJsError("Error", "boom from go")},
		{name: "handler-error-catchable", async: true, src: `
			let a; try { host.rpcSync("fail") } catch (e) { a = e.message }
			[a, await host.rpc("afail").catch(e => e.message)]`, want: `["boom from go", "boom from go"]`},
		{name: "handler-panic-sync", src: `host.rpcSync("panic")`, check: isJsError("Error", "kafig: RPC handler panicked: handler panic")},
		{name: "handler-panic-async", async: true, src: `await host.rpc("apanic")`, check: isJsError("Error", "kafig: RPC handler panicked: handler panic")},
		{name: "handler-panics-repeatedly", async: true, src: `
			let n = 0
			for (let i = 0; i < 50; i++) { try { host.rpcSync("panic") } catch { n++ } await host.rpc("apanic").catch(() => n++) }
			n`, want: `100`},
		{name: "handler-invalid-json-sync", src: `host.rpcSync("badjson")`, check: isJsError("Error", "kafig: RPC handler returned invalid JSON")},
		{name: "handler-invalid-json-async", async: true, src: `await host.rpc("abadjson")`, check: isJsError("Error", "kafig: RPC handler returned invalid JSON")},
		{name: "handler-nil-reply-is-null", async: true, src: `[host.rpcSync("nil"), await host.rpc("anil")]`, want: `[null, null]`},
		{name: "async-method-via-rpcSync", src: `host.rpcSync("aecho", 1)`, check: isJsError("Error", "kafig: method aecho is async; use host.rpc")},
		{name: "async-method-via-rpcSync-in-async-eval", async: true, src: `host.rpcSync("sleep", 1)`, check: isJsError("Error", "kafig: method sleep is async; use host.rpc")},
		{name: "sync-handler-in-loop", src: `let s = 0; for (let i = 0; i < 10000; i++) s += host.rpcSync("echo", i); s`, want: `49995000`},
		{name: "sync-handler-slow", src: `host.rpcSync("ssleep", 100); "after"`, want: `"after"`},
		{name: "handler-reply-lone-surrogate", opts: replying(`"\ud800"`), src: `const r = host.rpcSync("reply"); [r.length, r.charCodeAt(0)]`, want: `[1, 55296]`},
		{name: "handler-reply-invalid-utf8", opts: replying("\"\xff\xfe\""), src: `typeof host.rpcSync("reply")`,
			check: anyOf(isValue(`"string"`), isJsError("Error", ""), isJsError("SyntaxError", ""))},
		// Go's encoding/json refuses nesting deeper than 10,000: such a
		// reply is invalid JSON. A reply just below that reaches the
		// guest's JSON parser.
		{name: "handler-reply-too-deep-json", opts: replying(strings.Repeat("[", 100000) + strings.Repeat("]", 100000)),
			src: `host.rpcSync("reply"); 1`, check: isJsError("Error", "kafig: RPC handler returned invalid JSON")},
		{name: "handler-reply-deep-json", opts: replying(strings.Repeat("[", 9999) + strings.Repeat("]", 9999)),
			src:   `let d = 0; for (let a = host.rpcSync("reply"); a.length; a = a[0]) d++; d`,
			check: anyOf(isValue(`9998`), isStackOverflow)},
		{name: "handler-reply-deep-json-async", async: true, opts: replying(strings.Repeat("[", 9999) + strings.Repeat("]", 9999)),
			src:   `let d = 0; for (let a = await host.rpc("reply"); a.length; a = a[0]) d++; d`,
			check: anyOf(isValue(`9998`), isStackOverflow)},
		{name: "handler-reply-huge-number", opts: replying(`1e999`), src: `host.rpcSync("reply")`, want: `null`},
		{name: "handler-reply-whitespace", opts: replying(" \n\t{\"a\" : 1 } \n"), src: `host.rpcSync("reply").a`, want: `1`},
		{name: "fallback-sync", opts: withFallback, src: `host.rpcSync("anything", {x: 1})`, want: `{"method": "anything", "params": {"x": 1}}`},
		{name: "fallback-async", opts: withFallback, async: true, src: `await host.rpc("other", [1])`, want: `{"method": "other", "params": [1]}`},
		{name: "fallback-does-not-shadow-methods", opts: withFallback, async: true, src: `[host.rpcSync("echo", 1), await host.rpc("aecho", 2)]`, want: `[1, 2]`},
		{name: "fallback-still-refuses-async-via-sync", opts: withFallback, src: `host.rpcSync("aecho", 1)`, check: isJsError("Error", "is async")},
		// A handler that ignores its cancelled context cannot hold the eval
		// past its deadline: it is abandoned after a short grace.
		{name: "stubborn-handler-deadline", async: true, opts: stubborn, timeout: 200 * time.Millisecond,
			src: `await host.rpc("stubborn")`, check: isDeadline},
		{name: "stubborn-handler-not-awaited", async: true, opts: stubborn, timeout: 5 * time.Second, run: func(t *testing.T, c *cctx) {
			start := time.Now()
			res, err := c.inst.Eval(t.Context(), `host.rpc("stubborn"); "done"`, kafig.WithAsync())
			if assert.NoError(t, err) {
				assert.JSONEq(t, `"done"`, string(res))
			}
			assert.Less(t, time.Since(start), 900*time.Millisecond)
		}},
		// A reply that cannot fit the JS heap is refused before it enters
		// the guest; a huge error message is cut short.
		{name: "handler-reply-larger-than-heap", opts: func(c *cctx) []kafig.InstanceOption {
			return append(replying(`"`+strings.Repeat("x", 5<<20)+`"`)(c), kafig.WithJSMemoryLimit(4<<20))
		}, src: `host.rpcSync("reply")`, check: isJsError("Error", "larger than the JS memory limit")},
		{name: "handler-reply-larger-than-heap-async", async: true, opts: func(c *cctx) []kafig.InstanceOption {
			h := func(context.Context, json.RawMessage) (json.RawMessage, error) {
				return json.RawMessage(`"` + strings.Repeat("x", 5<<20) + `"`), nil
			}
			return []kafig.InstanceOption{kafig.WithRouter(kafig.NewRPCRouter().WithAsync("big", h)), kafig.WithJSMemoryLimit(4 << 20)}
		}, src: `await host.rpc("big").catch(e => e.message)`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			if assert.NoError(t, err) {
				assert.Contains(t, string(res), "larger than the JS memory limit")
			}
		}},
		{name: "handler-huge-error-message-truncated", opts: func(c *cctx) []kafig.InstanceOption {
			h := func(context.Context, json.RawMessage) (json.RawMessage, error) {
				return nil, errors.New(strings.Repeat("é", 5<<20))
			}
			return []kafig.InstanceOption{kafig.WithRouter(kafig.NewRPCRouter().WithSync("bigerr", h))}
		}, src: `try { host.rpcSync("bigerr") } catch (e) { [e.message.length < 20000, e.message.endsWith("bytes truncated)")] }`, want: `[true, true]`},
		{name: "handler-sees-eval-context-values", async: true, run: func(t *testing.T, c *cctx) {
			ctx := context.WithValue(t.Context(), ctxKey{}, "from-the-eval")
			res, err := c.inst.Eval(ctx, `[host.rpcSync("ctxval"), await host.rpc("actxval")]`, kafig.WithAsync())
			if assert.NoError(t, err) {
				assert.JSONEq(t, `["from-the-eval", "from-the-eval"]`, string(res))
			}
		}},
		{name: "handler-ctx-cancelled-when-eval-ends", async: true, run: func(t *testing.T, c *cctx) {
			_, _ = c.eval(`host.rpc("block"); host.rpc("block"); 1`, kafig.WithAsync())
			assert.Equal(t, int64(2), c.cancelled.Load(), "both handlers saw their context end before Eval returned")
		}},
		{name: "handler-ctx-cancelled-when-eval-fails", async: true, run: func(t *testing.T, c *cctx) {
			_, err := c.eval(`host.rpc("block"); await null; throw new Error("fail")`, kafig.WithAsync())
			assert.Error(t, err)
			assert.Equal(t, int64(1), c.cancelled.Load())
		}},
		{name: "handler-ctx-cancelled-when-rejection-stops", async: true,
			opts: func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool { return true }))
			},
			run: func(t *testing.T, c *cctx) {
				_, err := c.eval(`host.rpc("block"); await null; Promise.reject(new Error("x")); await host.rpc("block")`, kafig.WithAsync())
				isCPULimit(t, c, nil, err)
				assert.Equal(t, int64(2), c.cancelled.Load())
			}},
		{name: "concurrency-limit-honoured", async: true,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithMaxConcurrentRPCs(3)) },
			run: func(t *testing.T, c *cctx) {
				res := c.mustEval(`(await Promise.all(Array.from({length: 12}, () => host.rpc("conc", 40)))).length`, kafig.WithAsync())
				assert.JSONEq(t, `12`, string(res))
				assert.LessOrEqual(t, c.maxActive.Load(), int64(3))
				assert.GreaterOrEqual(t, c.maxActive.Load(), int64(2), "handlers did run in parallel")
			}},
		{name: "concurrency-limit-one-is-sequential", async: true,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithMaxConcurrentRPCs(1)) },
			run: func(t *testing.T, c *cctx) {
				c.mustEval(`await Promise.all(Array.from({length: 6}, () => host.rpc("conc", 10)))`, kafig.WithAsync())
				assert.Equal(t, int64(1), c.maxActive.Load())
			}},
		{name: "concurrency-limit-default", async: true, run: func(t *testing.T, c *cctx) {
			c.mustEval(`await Promise.all(Array.from({length: 40}, () => host.rpc("conc", 100)))`, kafig.WithAsync())
			assert.LessOrEqual(t, c.maxActive.Load(), int64(kafig.DefaultMaxConcurrentRPCs))
			assert.GreaterOrEqual(t, c.maxActive.Load(), int64(2))
		}},
		{name: "concurrency-limit-per-eval", async: true,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithMaxConcurrentRPCs(2)) },
			run: func(t *testing.T, c *cctx) {
				for range 3 {
					c.mustEval(`await Promise.all(Array.from({length: 5}, () => host.rpc("conc", 5)))`, kafig.WithAsync())
				}
				assert.LessOrEqual(t, c.maxActive.Load(), int64(2))
			}},
		{name: "pending-limit", async: true,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithMaxPendingRPCs(4)) },
			src:  `await Promise.all(Array.from({length: 6}, () => host.rpc("sleep", 20).then(() => "ok", e => e.message)))`,
			want: `["ok", "ok", "ok", "ok", "host.rpc refused: too many calls pending", "host.rpc refused: too many calls pending"]`},
		{name: "pending-limit-frees-up", async: true,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithMaxPendingRPCs(2)) },
			src:  `let s = 0; for (let i = 0; i < 20; i++) s += (await Promise.all([host.rpc("aecho", 1), host.rpc("aecho", 1)])).length; s`, want: `40`},
		{name: "rpc-inside-promise-jobs", async: true, src: `
			await Promise.resolve().then(() => host.rpc("aecho", "job")).then(v => v + "!")`, want: `"job!"`},
		{name: "rpc-reply-order-independent", async: true, src: `
			await Promise.all([host.rpc("sleep", 60).then(() => "slow"), host.rpc("aecho", "fast")])`, want: `["slow", "fast"]`},
	}
	for _, p := range payloadSizes {
		n := p.n
		cases = append(cases,
			tcase{name: fmt.Sprintf("params-sync-%d", n), slow: p.slow, src: fmt.Sprintf(`host.rpcSync("len", "x".repeat(%d))`, n-2), want: itoa(n)},
			tcase{name: fmt.Sprintf("params-async-%d", n), slow: p.slow, async: true, src: fmt.Sprintf(`await host.rpc("alen", "x".repeat(%d))`, n-2), want: itoa(n)},
			tcase{name: fmt.Sprintf("reply-sync-%d", n), slow: p.slow, src: fmt.Sprintf(`host.rpcSync("size", %d) === "x".repeat(%d)`, n, n-2), want: `true`},
			tcase{name: fmt.Sprintf("reply-async-%d", n), slow: p.slow, async: true, src: fmt.Sprintf(`(await host.rpc("asize", %d)) === "x".repeat(%d)`, n, n-2), want: `true`},
		)
	}
	cases = append(cases,
		tcase{name: "echo-much-larger-sync", slow: true,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithJSMemoryLimit(512 << 20)) },
			src:  `const s = "é".repeat(3 << 20); host.rpcSync("echo", s) === s`, want: `true`},
		tcase{name: "echo-much-larger-async", slow: true, async: true,
			opts: func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithJSMemoryLimit(512 << 20)) },
			src:  `const s = "x".repeat(16 << 20); (await host.rpc("aecho", s)) === s`, want: `true`},
		tcase{name: "reply-larger-than-memory-limit", async: true,
			opts: func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithJSMemoryLimit(4<<20), kafig.WithWASMMemoryLimitPages(128))
			},
			src:   `let r; try { r = host.rpcSync("size", 16 << 20).length } catch (e) { r = e.message } r`,
			check: anyOf(isMemoryLimit, func(t tT, _ *cctx, res json.RawMessage, err error) { assert.NoError(t, err) })},
		tcase{name: "async-reply-larger-than-memory-limit", async: true,
			opts: func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithJSMemoryLimit(4<<20), kafig.WithWASMMemoryLimitPages(128))
			},
			src:   `await host.rpc("asize", 16 << 20).then(r => r.length, e => e.message)`,
			check: anyOf(isMemoryLimit, func(t tT, _ *cctx, res json.RawMessage, err error) { assert.NoError(t, err) })},
	)
	runCases(t, cases)
}

// replying is a router whose "reply" method (sync and async: "reply" and
// async "areply") answers body as is.
func replying(body string) func(c *cctx) []kafig.InstanceOption {
	return func(c *cctx) []kafig.InstanceOption {
		h := func(context.Context, json.RawMessage) (json.RawMessage, error) { return json.RawMessage(body), nil }
		return []kafig.InstanceOption{kafig.WithRouter(kafig.NewRPCRouter().WithSync("reply", h))}
	}
}

// stubborn is a router whose async "stubborn" handler ignores its context
// and returns after a second.
func stubborn(c *cctx) []kafig.InstanceOption {
	h := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		time.Sleep(time.Second)
		return json.RawMessage(`"late"`), nil
	}
	return []kafig.InstanceOption{kafig.WithRouter(kafig.NewRPCRouter().WithAsync("stubborn", h))}
}

// withFallback is the standard router plus a fallback that answers
// {"method": name, "params": params}.
func withFallback(c *cctx) []kafig.InstanceOption {
	r := c.router().WithFallback(func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		name, ok := kafig.MethodName(ctx)
		if !ok {
			return nil, errors.New("no method name")
		}
		return json.Marshal(map[string]any{"method": name, "params": p})
	})
	return []kafig.InstanceOption{kafig.WithRouter(r)}
}

var _ = time.Second
