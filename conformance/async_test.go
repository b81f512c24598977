package conformance

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/kafig"
)

// TestAsync: WithAsync enables top-level await, awaits a promise result,
// drains microtasks and services host.rpc until the result settles.
func TestAsync(t *testing.T) {
	notSettle := isRuntimeError(kafig.CodeRuntimeError)
	runCases(t, []tcase{
		{name: "top-level-await", async: true, src: `await 1`, want: `1`},
		{name: "top-level-await-expression", async: true, src: `const x = await Promise.resolve(20); x + 1`, want: `21`},
		{name: "await-chain", async: true, src: `
			let v = 0
			for (let i = 0; i < 100; i++) v = await Promise.resolve(v + 1)
			v`, want: `100`},
		{name: "result-promise-awaited", async: true, src: `Promise.resolve(5)`, want: `5`},
		{name: "result-async-function-awaited", async: true, src: `(async () => { await null; return {ok: true} })()`, want: `{"ok": true}`},
		{name: "result-thenable-is-plain-value", async: true, src: `({then(r) { r(1) }, x: 2})`, want: `{"x": 2}`},
		{name: "result-promise-of-promise", async: true, src: `Promise.resolve(Promise.resolve("deep"))`, want: `"deep"`},
		{name: "result-rejected-promise", async: true, src: `Promise.reject(new TypeError("rej"))`, check: isJsError("TypeError", "rej")},
		{name: "result-rejected-non-error", async: true, src: `Promise.reject("why")`, check: isJsError("Error", "why")},
		{name: "async-throw-after-await", async: true, src: `await null; throw new RangeError("later")`, check: isJsError("RangeError", "later")},
		{name: "microtasks-ran-before-next-eval", async: true, run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.log = []; Promise.resolve().then(() => log.push(1)).then(() => log.push(3)); Promise.resolve().then(() => log.push(2))`, kafig.WithAsync())
			assert.JSONEq(t, `[1, 2, 3]`, string(c.mustEval(`log`)))
		}},
		{name: "await-rpc", async: true, src: `await host.rpc("aecho", {x: 1})`, want: `{"x": 1}`},
		{name: "promise-all-over-rpcs", async: true, src: `
			await Promise.all([1, 2, 3, 4, 5].map(i => host.rpc("aecho", {i})))`,
			want: `[{"i": 1}, {"i": 2}, {"i": 3}, {"i": 4}, {"i": 5}]`},
		{name: "promise-all-runs-in-parallel", async: true, run: func(t *testing.T, c *cctx) {
			start := time.Now()
			res := c.mustEval(`(await Promise.all(Array.from({length: 8}, () => host.rpc("conc", 300)))).length`, kafig.WithAsync())
			assert.JSONEq(t, `8`, string(res))
			assert.Equal(t, int64(8), c.maxActive.Load(), "8 handlers ran at once")
			assert.Less(t, time.Since(start), 8*300*time.Millisecond, "handlers overlapped")
		}},
		{name: "promise-race-over-rpcs", async: true, src: `await Promise.race([host.rpc("sleep", 5000), host.rpc("aecho", "fast")])`, want: `"fast"`},
		{name: "promise-allSettled", async: true, src: `
			(await Promise.allSettled([host.rpc("aecho", 1), host.rpc("afail"), host.rpc("nope")])).map(r => r.status)`,
			want: `["fulfilled", "rejected", "rejected"]`},
		{name: "rpc-in-async-function", async: true, src: `
			async function get(i) { const r = await host.rpc("aecho", i); return r * 2 }
			(await Promise.all([get(1), get(2)])).reduce((a, b) => a + b)`, want: `6`},
		{name: "sequential-rpcs", async: true, src: `
			let s = 0
			for (let i = 0; i < 200; i++) s += await host.rpc("aecho", i)
			s`, want: `19900`},
		{name: "async-generator", async: true, src: `
			async function* gen() { for (let i = 0; i < 3; i++) yield await host.rpc("aecho", i) }
			const out = []; for await (const v of gen()) out.push(v); out`, want: `[0, 1, 2]`},
		{name: "never-settling-result", async: true, src: `new Promise(() => {})`, check: notSettle},
		{name: "never-settling-await", async: true, src: `await new Promise(() => {}); 1`, check: notSettle},
		{name: "never-settling-after-rpc", async: true, src: `await host.rpc("aecho", 1); await new Promise(() => {})`, check: notSettle},
		{name: "never-settling-reported-fast", async: true, timeout: 10 * time.Second, run: func(t *testing.T, c *cctx) {
			start := time.Now()
			_, err := c.evalTimeout(10*time.Second, `await new Promise(() => {})`, kafig.WithAsync())
			notSettle(t, c, nil, err)
			assert.NotErrorIs(t, err, kafig.ErrInstanceDead)
			assert.Less(t, time.Since(start), 5*time.Second, "reported, not waited on until the deadline")
		}},
		{name: "sync-mode-pending-promise", src: `new Promise(() => {})`, check: notSettle},
		{name: "sync-mode-fulfilled-promise-unwrapped", src: `Promise.resolve(3)`, want: `3`},
		{name: "sync-mode-rejected-promise", src: `Promise.reject(new Error("sync rej"))`, check: isJsError("Error", "sync rej")},
		{name: "sync-mode-rpc-rejects", src: `
			let msg; host.rpc("aecho", 1).catch(e => msg = e.message); msg`, want: `null`},
		{name: "sync-mode-rpc-result-is-error", src: `host.rpc("aecho", 1)`, check: isJsError("Error", "WithAsync")},
		{name: "sync-mode-await-is-SyntaxError", src: `await host.rpc("aecho", 1)`, check: isJsError("SyntaxError", "")},
		{name: "sync-mode-rpcSync-works", src: `host.rpcSync("echo", [1, 2])`, want: `[1, 2]`},
		{name: "async-mode-rpcSync-works", async: true, src: `host.rpcSync("echo", "s")`, want: `"s"`},
		{name: "async-then-sync-evals", async: true, run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.v = await host.rpc("aecho", 41)`, kafig.WithAsync())
			assert.JSONEq(t, `42`, string(c.mustEval(`v + 1`)))
			assert.JSONEq(t, `43`, string(c.mustEval(`v + 2`, kafig.WithAsync())))
		}},
		{name: "many-async-evals", async: true, run: func(t *testing.T, c *cctx) {
			for i := range 200 {
				res := c.mustEval(`await host.rpc("aecho", `+itoa(i)+`)`, kafig.WithAsync())
				if !assert.JSONEq(t, itoa(i), string(res)) {
					return
				}
			}
		}},
		{name: "no-queueMicrotask-or-timers", src: `[typeof queueMicrotask, typeof setTimeout, typeof setInterval]`, want: `["undefined", "undefined", "undefined"]`},
		// An async eval may end while host.rpc calls it did not await are
		// still running: their handlers are cancelled, and the result
		// stands.
		{name: "result-after-unawaited-rpc", async: true, src: `host.rpc("sleep", 10000); "done"`, want: `"done"`},
		{name: "error-after-unawaited-rpc", async: true, src: `host.rpc("sleep", 10000); throw new TypeError("boom")`, check: isJsError("TypeError", "boom")},
		{name: "object-result-after-unawaited-rpc", async: true, src: `host.rpc("block"); ({a: [1, 2]})`, want: `{"a": [1, 2]}`},
	})
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
