package conformance

import (
	"encoding/json"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/kafig"
)

// standardGlobals are the global names of QuickJS 2025-04-26 without
// quickjs-libc (no console, print, scriptArgs, std, os, __loadScript) and
// without Atomics (the guest has no threads).
var standardGlobals = strings.Fields(`Object Function Error EvalError RangeError ReferenceError SyntaxError
	TypeError URIError InternalError AggregateError Array parseInt parseFloat isNaN isFinite decodeURI
	decodeURIComponent encodeURI encodeURIComponent escape unescape Infinity NaN undefined Number Boolean
	String Math Reflect Symbol eval globalThis BigInt Date RegExp JSON Proxy Map Set WeakMap WeakSet
	ArrayBuffer SharedArrayBuffer Uint8ClampedArray Int8Array Uint8Array Int16Array Uint16Array Int32Array
	Uint32Array BigInt64Array BigUint64Array Float32Array Float64Array DataView Promise WeakRef
	FinalizationRegistry`)

// TestHostile: scripts that try to hang, crash or escape the host, or to
// swallow a limit. Every case ends in a typed error or a correct value,
// and the host process goes on (the suite would not finish otherwise).
func TestHostile(t *testing.T) {
	bomb := `function bomb() { const a = []; for (;;) a.push({i: a.length}) }`
	hang := hangTimeout
	ops := func(n uint64) func(c *cctx) []kafig.InstanceOption {
		return func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithInterruptCallback(func(o, _ uint64) bool { return o > n }), kafig.WithJSMemoryLimit(16<<20))
		}
	}
	runCases(t, []tcase{
		// ---- swallowing limits ----
		{name: "catch-all-loop", timeout: hang, after: usableOrDead, src: `try { while (1) {} } catch {}`, check: isDeadline},
		{name: "finally-continue-loop", timeout: hang, after: usableOrDead, src: `while (1) { try { while (1) {} } finally { continue } }`, check: isDeadline},
		// Calls without a loop or a branch: the interpreter, which has no
		// stop guard (abi.GuardSkip), polls at every call.
		{name: "finally-recursion-tree", timeout: hang, after: usableOrDead, src: `function f() { try { f() } finally { f() } } f()`, check: isDeadline},
		{name: "finally-loops-again", timeout: hang, after: usableOrDead, src: `try { for (;;) {} } finally { for (;;) {} }`, check: isDeadline},
		{name: "catch-loops-again", timeout: hang, after: usableOrDead, src: `for (;;) { try { for (;;) {} } catch (e) { for (;;) {} } }`, check: isDeadline},
		{name: "opcode-limit-catch-finally", opts: ops(2e6), src: `for (;;) { try { try { for (;;) {} } finally { for (;;) {} } } catch {} }`, check: isCPULimit},
		{name: "bomb-catch-bomb", opts: heap(8 << 20), src: bomb + `; try { bomb() } catch { bomb() }`, check: isMemoryLimit},
		{name: "bomb-catch-return", opts: heap(8 << 20), src: bomb + `; (() => { try { bomb() } catch { return "swallowed" } })()`, check: isMemoryLimit},
		{name: "bomb-finally-return", opts: heap(8 << 20), src: bomb + `; (() => { try { bomb() } finally { return "swallowed" } })()`, check: isMemoryLimit},
		{name: "bomb-catch-then-loop", opts: ops(2e6), src: bomb + `; try { bomb() } catch { for (;;) {} }`, check: isMemoryLimit},
		{name: "stack-overflow-caught-then-bomb", opts: heap(8 << 20), src: bomb + `; try { (function f() { f() })() } catch { bomb() }`, check: isMemoryLimit},
		{name: "interrupt-in-job-catch-retry", opts: ops(2e6), async: true, src: `
			async function spin() { for (;;) {} }
			for (;;) { try { await spin() } catch (e) {} }`, check: isCPULimit},
		{name: "interrupt-in-then-catch-retry", opts: ops(2e6), async: true, src: `
			function retry() { return Promise.resolve().then(() => { for (;;) {} }).catch(retry) }
			await retry()`, check: isCPULimit},
		{name: "interrupt-in-job-result-settles-anyway", opts: ops(2e6), async: true, src: `
			Promise.resolve().then(() => { for (;;) {} }).catch(() => "swallowed")`, check: isCPULimit},
		{name: "deadline-in-job-catch-retry", timeout: hang, after: usableOrDead, async: true, src: `
			async function spin() { for (;;) {} }
			for (;;) { try { await spin() } catch (e) {} }`, check: isDeadline},
		{name: "memory-in-job-catch-retry", opts: heap(8 << 20), async: true, src: bomb + `
			for (let i = 0; i < 100; i++) { try { await Promise.resolve().then(bomb) } catch (e) {} }
			"survived"`, check: isMemoryLimit},
		{name: "stack-in-job-catch-retry", async: true, src: `
			let n = 0; for (let i = 0; i < 5; i++) { try { await Promise.resolve().then(function f() { f() }) } catch (e) { n++ } }
			n`, want: `5`},
		// ---- hijacking the bridge ----
		{name: "patched-then-before-async-eval", async: true, src: `Object.prototype.then = function (r) { r(666) }; 42`, want: `42`},
		{name: "then-getter-throws", async: true, src: `Object.defineProperty(Object.prototype, "then", {get() { throw new Error("then getter") }}); 7`, want: `7`},
		{name: "value-getter-on-object-prototype", async: true, src: `Object.defineProperty(Object.prototype, "value", {get() { return 666 }}); 42`, want: `42`},
		{name: "done-getter-on-object-prototype", async: true, src: `Object.defineProperty(Object.prototype, "done", {get() { return false }}); await host.rpc("aecho", 3)`, want: `3`},
		{name: "patched-promise-globals", async: true, src: `
			Promise = null; JSON = null; Array.prototype.push = null; Array.prototype[Symbol.iterator] = null
			await host.rpc("aecho", {a: [1]})`, want: `{"a": [1]}`},
		{name: "patched-promise-prototype", async: true, src: `
			Promise.prototype.then = function () { throw new Error("patched") }
			Promise.resolve = () => { throw new Error("patched") }
			await host.rpc("aecho", 7)`, want: `7`},
		{name: "patched-promise-species", async: true, src: `
			Object.defineProperty(Promise, Symbol.species, {get() { throw new Error("species") }})
			Promise.prototype.constructor = function () { throw new Error("ctor") }
			const r = await host.rpc("aecho", 8); r`, want: `8`},
		{name: "patched-json", async: true, src: `
			JSON.stringify = () => "hijacked"; JSON.parse = () => "hijacked";
			[await host.rpc("aecho", {a: 1}), host.rpcSync("echo", [2]), {r: 3}]`, want: `[{"a": 1}, [2], {"r": 3}]`},
		{name: "patched-function-prototype", async: true, src: `
			Function.prototype.call = Function.prototype.apply = Function.prototype.bind = () => { throw new Error("patched") }
			Reflect.apply = null
			host.on("e", (p) => p + 1)
			await host.rpc("aecho", 9)`, want: `9`},
		// An async function that returns an object adopts its "then" (the
		// script's own world); the bridge itself must not: a plain handler's
		// object result and the awaited RPC reply come through.
		{name: "patched-before-dispatch", run: func(t *testing.T, c *cctx) {
			c.mustEval(`
				host.on("a", async (p) => "got " + p + " " + (await host.rpc("aecho", p)))
				host.on("o", (p) => ({got: p}))
				Object.prototype.then = function (r) { r("hijacked") }
				Object.defineProperty(Object.prototype, "done", {get() { return true }})
				Object.defineProperty(Object.prototype, "value", {get() { return "hijacked" }})
				Function.prototype.call = Function.prototype.apply = () => "hijacked"
				Promise.prototype.then = function () { throw new Error("patched") }
				JSON.parse = JSON.stringify = () => "hijacked"`)
			res, err := c.inst.DispatchEvent(t.Context(), "a", json.RawMessage(`5`), kafig.WithAsync())
			isValue(`"got 5 5"`)(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "o", json.RawMessage(`6`), kafig.WithAsync())
			isValue(`{"got": 6}`)(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "o", json.RawMessage(`7`))
			isValue(`{"got": 7}`)(t, c, res, err)
			res, err = c.inst.Eval(t.Context(), `({plain: "object"})`, kafig.WithAsync())
			isValue(`{"plain": "object"}`)(t, c, res, err)
		}},
		{name: "error-getters-on-prototypes", src: `
			for (const k of ["name", "message", "stack"]) Object.defineProperty(Object.prototype, k, {get() { throw 1 }, configurable: true})
			throw {}`, check: isJsError("Error", "")},
		{name: "error-toString-patched", src: `Error.prototype.toString = () => { for (;;) {} }; Object.prototype.toString = () => { throw 1 }; throw new Error("real")`,
			check: isJsError("Error", "real")},
		// ---- host itself ----
		{name: "host-frozen", src: `[Object.isFrozen(host), Object.getOwnPropertyNames(host).sort().join()]`, want: `[true, "on,rpc,rpcSync"]`},
		{name: "host-assign-sloppy", src: `host.rpc = () => "fake"; host.extra = 1; [typeof host.rpc, host.extra, host.rpcSync("echo", 1)]`, want: `["function", null, 1]`},
		{name: "host-assign-strict", src: `"use strict"; host.rpcSync = () => "fake"`, check: isJsError("TypeError", "")},
		{name: "host-delete", src: `"use strict"; delete host.rpc`, check: isJsError("TypeError", "")},
		{name: "host-defineProperty", src: `Object.defineProperty(host, "rpcSync", {value: () => "fake"})`, check: isJsError("TypeError", "")},
		{name: "host-setPrototypeOf", src: `Object.setPrototypeOf(host, {rpc() { return "fake" }})`, check: isJsError("TypeError", "")},
		{name: "host-global-replaced", src: `globalThis.host = {rpcSync: () => "fake"}; host.rpcSync("echo", 2)`, want: `2`},
		{name: "host-global-redeclared", src: `var host = {rpcSync: () => "fake"}; host.rpcSync("echo", 3)`, want: `3`},
		{name: "host-global-deleted", src: `delete globalThis.host; typeof host`, want: `"object"`},
		{name: "host-global-defineProperty", src: `Object.defineProperty(globalThis, "host", {value: 5})`, check: isJsError("TypeError", "")},
		{name: "host-let-shadow-is-local", src: `{ let host = 1 } host.rpcSync("echo", 4)`, want: `4`},
		{name: "host-functions-as-constructors", src: `new host.rpcSync("echo")`, check: isJsError("TypeError", "")},
		{name: "host-functions-odd-this", src: `[host.rpcSync.call(null, "echo", 1), Reflect.apply(host.rpcSync, {}, ["echo", 2])]`, want: `[1, 2]`},
		{name: "host-prototype-pollution", src: `Object.prototype.rpcSync = () => "fake"; host.rpcSync("echo", 5)`, want: `5`},
		{name: "host-function-source", src: `Function.prototype.toString.call(host.rpc)`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			if assert.NoError(t, err) {
				assert.Contains(t, string(res), "[native code]")
			}
		}},
		{name: "toString-patched-then-host", src: `Function.prototype.toString = () => "x"; host.rpcSync("echo", 6)`, want: `6`},
		{name: "host-on-proxy-handler", run: dispatch(`host.on("p", new Proxy(() => 1, {apply() { return "trapped" }}))`, "p", "", false, isValue(`"trapped"`))},
		{name: "host-on-name-toPrimitive", src: `host.on({[Symbol.toPrimitive]() { for (;;) {} }}, () => 1)`, timeout: hang, after: usableOrDead,
			check: anyOf(isJsError("TypeError", ""), isDeadline)},
		{name: "method-toPrimitive-not-coerced", src: `host.rpcSync({[Symbol.toPrimitive]() { return "echo" }}, 1)`, check: isJsError("TypeError", "method must be a string")},
		{name: "lone-surrogate-method", src: `try { host.rpcSync("\ud800") } catch (e) { typeof e.message }`, want: `"string"`},
		{name: "lone-surrogate-method-fallback", opts: withFallback, src: `typeof host.rpcSync("x\udc00y").method`, want: `"string"`},
		{name: "lone-surrogate-event-name", src: `host.on("\ud800", () => 1); 1`, check: anyOf(isValue(`1`), isJsError("TypeError", ""), isJsError("RangeError", ""))},
		// ---- RPC params and results ----
		{name: "params-toPrimitive-ignored", src: `host.rpcSync("echo", {[Symbol.toPrimitive]() { throw 1 }, toJSON() { return "tj" }})`, want: `"tj"`},
		{name: "params-getter-reenters", src: `host.rpcSync("echo", {get a() { return host.rpcSync("echo", 1) }})`, want: `{"a": 1}`},
		{name: "params-getter-reenters-async", async: true, src: `await host.rpc("aecho", {get a() { return host.rpcSync("echo", 2) }, get b() { host.on("b", () => 1); return 3 }})`, want: `{"a": 2, "b": 3}`},
		{name: "params-getter-registers-handler", src: `host.rpcSync("echo", {get a() { host.on("x", () => 1); return 1 }})`, want: `{"a": 1}`},
		{name: "params-getter-throws", src: `host.rpcSync("echo", {get a() { throw new RangeError("getter") }})`, check: isJsError("RangeError", "getter")},
		{name: "params-getter-loops", timeout: hang, after: usableOrDead, src: `host.rpcSync("echo", {get a() { for (;;) {} }})`, check: isDeadline},
		{name: "params-toJSON-bomb", opts: heap(8 << 20), src: bomb + `; host.rpcSync("echo", {toJSON: bomb})`, check: isMemoryLimit},
		{name: "params-proxy", src: `host.rpcSync("echo", new Proxy({a: 1}, {get(t, k) { return k === "a" ? 2 : t[k] }}))`, want: `{"a": 2}`},
		{name: "params-proxy-ownKeys-throws", src: `host.rpcSync("echo", new Proxy({}, {ownKeys() { throw new Error("ownKeys") }}))`, check: isJsError("Error", "ownKeys")},
		{name: "params-proxy-loops", timeout: hang, after: usableOrDead, src: `host.rpcSync("echo", new Proxy({}, {ownKeys() { for (;;) {} }}))`, check: isDeadline},
		{name: "params-revoked-proxy", src: `const r = Proxy.revocable({}, {}); r.revoke(); host.rpcSync("echo", r.proxy)`, check: isJsError("TypeError", "revoked")},
		{name: "result-proxy", src: `new Proxy({a: 1, b: 2}, {get(t, k) { return k === "a" ? "trapped" : t[k] }})`, want: `{"a": "trapped", "b": 2}`},
		{name: "result-revoked-proxy", src: `const r = Proxy.revocable({}, {}); r.revoke(); r.proxy`, check: isJsError("TypeError", "revoked")},
		{name: "result-proxy-ownKeys-loops", timeout: hang, after: usableOrDead, src: `new Proxy({}, {ownKeys() { for (;;) {} }})`, check: isDeadline},
		{name: "result-cyclic", src: `const a = [1]; a.push({a}); a`, check: isJsError("TypeError", "circular")},
		{name: "result-cyclic-async", async: true, src: `const o = {}; o.self = [o]; o`, check: isJsError("TypeError", "circular")},
		{name: "result-toJSON-throws", src: `({toJSON() { throw new RangeError("toJSON") }})`, check: isJsError("RangeError", "toJSON")},
		{name: "result-toJSON-loops", timeout: hang, after: usableOrDead, src: `({toJSON() { for (;;) {} }})`, check: isDeadline},
		{name: "result-toJSON-returns-self", src: `const o = {toJSON() { return o }, x: 1}; o`, want: `{"x": 1}`},
		{name: "result-getter-reenters-host", src: `({get a() { return host.rpcSync("echo", 5) }})`, want: `{"a": 5}`},
		{name: "result-getter-throws", src: `({get a() { throw new SyntaxError("getter") }})`, check: isJsError("SyntaxError", "getter")},
		{name: "result-getter-bomb", opts: heap(8 << 20), src: bomb + `; ({get a() { return bomb() }})`, check: isMemoryLimit},
		{name: "result-getter-loops-async", timeout: hang, after: usableOrDead, async: true, src: `await null; ({get a() { for (;;) {} }})`, check: isDeadline},
		{name: "result-huge-string", slow: true, src: `"x".repeat(20 << 20)`, check: anyOf(sizedString(20<<20), isMemoryLimit)},
		{name: "result-huge-string-bigger-heap", slow: true, opts: heap(256 << 20), src: `"é".repeat(10 << 20)`, check: func(t tT, _ *cctx, res json.RawMessage, err error) {
			if assert.NoError(t, err) {
				assert.Equal(t, 2+20<<20, len(res))
			}
		}},
		{name: "result-many-keys", slow: true, src: `const o = {}; for (let i = 0; i < 2e5; i++) o["k" + i] = i; o`, check: func(t tT, _ *cctx, res json.RawMessage, err error) {
			var m map[string]int
			if assert.NoError(t, err) && assert.NoError(t, json.Unmarshal(res, &m)) {
				assert.Len(t, m, 200000)
			}
		}},
		// ---- floods ----
		{name: "rpc-flood-pending", async: true, src: `
			const ps = []; for (let i = 0; i < 10000; i++) ps.push(host.rpc("sleep", 1).then(() => 1, () => 0))
			;(await Promise.all(ps)).reduce((a, b) => a + b)`, want: itoa(kafig.DefaultMaxPendingRPCs)},
		{name: "rpc-flood-unknown", async: true, src: `
			const ps = []; for (let i = 0; i < 20000; i++) ps.push(host.rpc("nope" + i).catch(() => 1))
			;(await Promise.all(ps)).length`, check: anyOf(isValue(`20000`), isMemoryLimit)},
		{name: "rpcSync-flood", src: `let s = 0; for (let i = 0; i < 100000; i++) s += host.rpcSync("echo", 1); s`, want: `100000`},
		{name: "rpcSync-flood-unknown", slow: true, src: `let n = 0; for (let i = 0; i < 50000; i++) { try { host.rpcSync("nope") } catch { n++ } } n`, want: `50000`},
		{name: "rpcSync-flood-errors", src: `let n = 0; for (let i = 0; i < 20000; i++) { try { host.rpcSync("panic") } catch { n++ } } n`, want: `20000`},
		{name: "rejection-flood", slow: true, async: true, run: func(t *testing.T, c *cctx) {
			var n atomic.Int64
			c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool { n.Add(1); return false }))
			})
			res, err := c.eval(`for (let i = 0; i < 100000; i++) Promise.reject(new Error("r")); await null; 1`, kafig.WithAsync())
			anyOf(isValue(`1`), isMemoryLimit)(t, c, res, err)
			t.Logf("%d rejections reported", n.Load())
		}},
		{name: "event-registration-flood", slow: true, src: `for (let i = 0; i < 100000; i++) host.on("e" + i, () => i); 1`, check: anyOf(isValue(`1`), isMemoryLimit)},
		{name: "goroutines-after-floods", async: true, run: func(t *testing.T, c *cctx) {
			base := runtime.NumGoroutine()
			for range 3 {
				_, _ = c.eval(`for (let i = 0; i < 5000; i++) host.rpc("block").catch(() => {}); await host.rpc("aecho", 1)`, kafig.WithAsync())
			}
			assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= base+4 }, 5*time.Second, 20*time.Millisecond)
		}},
		// ---- eval and new Function ----
		{name: "eval-allowed", src: `eval("1 + 1") + new Function("return 2")() + (0, eval)("3")`, want: `7`},
		{name: "eval-limited-by-deadline", timeout: hang, after: usableOrDead, src: `eval("for (;;) {}")`, check: isDeadline},
		{name: "function-limited-by-opcodes", opts: ops(2e6), src: `new Function("for (;;) {}")()`, check: isCPULimit},
		{name: "eval-bomb", opts: heap(8 << 20), src: `eval("const a = []; for (;;) a.push({})")`, check: isMemoryLimit},
		{name: "function-constructor-escape", src: `(function () {}).constructor("return typeof process + typeof require")()`, want: `"undefinedundefined"`},
		{name: "async-function-constructor", async: true, src: `await (async function () {}).constructor("return await host.rpc('aecho', 'afc')")()`, want: `"afc"`},
		{name: "generator-function-constructor", src: `[...(function* () {}).constructor("yield 1; yield 2")()]`, want: `[1, 2]`},
		// ---- nothing to escape to ----
		{name: "only-standard-globals-and-host", src: `Object.getOwnPropertyNames(globalThis)`, check: func(t tT, _ *cctx, res json.RawMessage, err error) {
			var names []string
			if !assert.NoError(t, err) || !assert.NoError(t, json.Unmarshal(res, &names)) {
				return
			}
			std := map[string]bool{}
			for _, n := range standardGlobals {
				std[n] = true
			}
			var extra []string
			for _, n := range names {
				if !std[n] {
					extra = append(extra, n)
				}
			}
			sort.Strings(extra)
			assert.Equal(t, []string{"host"}, extra, "globals beyond QuickJS's standard ones")
		}},
		{name: "no-node-or-browser-apis", src: `[typeof require, typeof process, typeof module, typeof exports, typeof Buffer,
			typeof setTimeout, typeof setInterval, typeof queueMicrotask, typeof fetch, typeof XMLHttpRequest, typeof WebSocket,
			typeof Worker, typeof WebAssembly, typeof importScripts, typeof Deno, typeof Bun].every(t => t === "undefined")`, want: `true`},
		{name: "no-quickjs-libc", src: `[typeof std, typeof os, typeof print, typeof console, typeof scriptArgs, typeof __loadScript, typeof bjson, typeof gc].every(t => t === "undefined")`, want: `true`},
		{name: "no-shared-memory-concurrency", src: `[typeof Atomics, typeof Worker]`, want: `["undefined", "undefined"]`},
		{name: "shared-array-buffer-is-plain", src: `typeof SharedArrayBuffer === "undefined" || new SharedArrayBuffer(8).byteLength === 8`, want: `true`},
		{name: "dynamic-import-rejects", async: true, src: `await import("fs")`, check: isJsError("ReferenceError", "could not load module")},
		{name: "dynamic-import-data-url", async: true, src: `await import("data:text/javascript,export default 1")`, check: isJsError("ReferenceError", "")},
		{name: "dynamic-import-sync-mode", src: `let e; import("os").catch(x => e = x); e`, check: anyOf(isValue(`null`), isValue(`{}`))},
		{name: "static-import-is-SyntaxError", src: `import fs from "fs"`, check: isJsError("SyntaxError", "")},
		{name: "static-import-is-SyntaxError-async", async: true, src: `import * as std from "std"; std`, check: isJsError("SyntaxError", "")},
		{name: "export-is-SyntaxError", src: `export const x = 1`, check: isJsError("SyntaxError", "")},
		{name: "stack-has-no-host-paths", src: `new Error("x").stack`, check: func(t tT, _ *cctx, res json.RawMessage, err error) {
			if assert.NoError(t, err) {
				assert.NotContains(t, string(res), "/work/")
				assert.NotContains(t, string(res), ".c:")
			}
		}},
		// ---- deep structures ----
		{name: "deep-proxy-chain", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); p.x`, check: isStackOverflow},
		{name: "deep-proxy-chain-set", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); p.x = 1`, check: isStackOverflow},
		{name: "deep-proxy-chain-getPrototypeOf", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.getPrototypeOf(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-Reflect.getPrototypeOf", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Reflect.getPrototypeOf(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-__proto__", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); p.__proto__`, check: isStackOverflow},
		{name: "deep-proxy-chain-instanceof", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); p instanceof Object`, check: isStackOverflow},
		{name: "deep-proxy-chain-isPrototypeOf", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.prototype.isPrototypeOf.call(Array.prototype, p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-in", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); "x" in p`, check: isStackOverflow},
		{name: "deep-proxy-chain-hasOwnProperty", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.prototype.hasOwnProperty.call(p, "x")`, check: isStackOverflow},
		{name: "deep-proxy-chain-getOwnPropertyDescriptor", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.getOwnPropertyDescriptor(p, "x")`, check: isStackOverflow},
		{name: "deep-proxy-chain-keys", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.keys(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-ownKeys", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Reflect.ownKeys(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-delete", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); delete p.x`, check: isStackOverflow},
		{name: "deep-proxy-chain-defineProperty", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.defineProperty(p, "x", {value: 1})`, check: isStackOverflow},
		{name: "deep-proxy-chain-isExtensible", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.isExtensible(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-preventExtensions", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.preventExtensions(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-setPrototypeOf", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.setPrototypeOf(p, null)`, check: isStackOverflow},
		{name: "deep-proxy-chain-isArray", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Array.isArray(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-toString", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Object.prototype.toString.call(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-spread", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); ({...p})`, check: isStackOverflow},
		{name: "deep-proxy-chain-for-in", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); for (const k in p) {}`, check: isStackOverflow},
		{name: "deep-proxy-chain-call", src: `let f = function () { return 1 }; for (let i = 0; i < 1e5; i++) f = new Proxy(f, {}); f()`, check: isStackOverflow},
		{name: "deep-proxy-chain-construct", src: `let f = function () {}; for (let i = 0; i < 1e5; i++) f = new Proxy(f, {}); new f()`, check: isStackOverflow},
		{name: "deep-proxy-chain-caught", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); let r; try { Object.getPrototypeOf(p) } catch (e) { r = e.message } r`, want: `"stack overflow"`},
		{name: "proxy-chain-moderate-works", src: `let p = {x: 7}; for (let i = 0; i < 100; i++) p = new Proxy(p, {}); [p.x, Object.getPrototypeOf(p) === Object.prototype, p instanceof Object, "x" in p]`, want: `[7, true, true, true]`},
		{name: "deep-proxy-chain-in-job", async: true, src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); await null; Object.getPrototypeOf(p)`, check: isStackOverflow},
		{name: "deep-proxy-chain-in-dispatch", run: dispatch(`let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); host.on("w", () => p instanceof Object)`, "w", "", false, isStackOverflow)},
		{name: "deep-getter-chain", src: `function mk(n) { return { get a() { return n ? mk(n - 1).a : 0 } } } mk(1e6).a`, check: isStackOverflow},
		{name: "deep-prototype-chain", src: `let o = {}; for (let i = 0; i < 1e5; i++) o = Object.create(o); o.missing`, want: `null`},
		{name: "deep-prototype-chain-proxy", src: `let o = {}; for (let i = 0; i < 1e4; i++) o = Object.create(new Proxy(o, {})); o.missing`,
			check: anyOf(isValue(`null`), isStackOverflow)},
		{name: "regexp-catastrophic-backtracking", timeout: hang, after: usableOrDead, src: `/^(\w+\s?)*$/.test("a".repeat(50) + "!")`, check: isDeadline},
		{name: "regexp-catastrophic-opcodes", opts: ops(2e6), src: `/(a|aa)+$/.test("a".repeat(60) + "b")`, check: isCPULimit},
		{name: "finalization-registry-loop", run: func(t *testing.T, c *cctx) {
			_, _ = c.eval(`new FinalizationRegistry(() => { for (;;) {} }).register({}, 1); 1`)
			res, err := c.evalTimeout(hang, `1`, kafig.WithAsync())
			anyOf(isValue(`1`), isDeadline)(t, c, res, err)
		}, after: usableOrDead},
		{name: "weakref-deref-after-collect", src: `let o = {}; const w = new WeakRef(o); o = null; w.deref()`, check: anyOf(isValue(`null`), isValue(`{}`))},
		{name: "date-and-random-not-frozen", src: `[typeof Date.now(), Math.random() < 1]`, want: `["number", true]`},
	})
}
