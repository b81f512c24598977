package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// TestHostileExtra: more hostile scripts and misuse, beyond TestHostile:
// builtins with huge or mutating arguments, limits met inside the shim's
// own work (error documents, rejection reports, result serialization),
// tampering that reaches the shim, hostile input from Go, and Close from
// every place a program may call it.
func TestHostileExtra(t *testing.T) {
	hang := hangTimeout
	ops := func(n uint64) func(c *cctx) []kafig.InstanceOption {
		return func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithInterruptCallback(func(o, _ uint64) bool { return o > n }), kafig.WithJSMemoryLimit(16<<20))
		}
	}
	limitOrRange := anyOf(isDeadlineOrDead, isMemoryLimit, isStackOverflow, isJsError("RangeError", ""), isJsError("InternalError", ""))
	overflow := `try { (function f() { f() })() } catch (e) {}`
	arraySetter := `Object.defineProperty(Array.prototype, 0, {set() { throw new Error("hijack") }, configurable: true});`
	hijackAll := `for (const k of ["name", "message", "stack", "value", "done", "then", "method", "params", "id", "result", "error",
			"length", "get", "set", "writable", "enumerable", "configurable", "toJSON"])
			Object.defineProperty(Object.prototype, k, {__proto__: null, set() { throw new Error("hijack " + k) }, get() { return k === "toJSON" ? undefined : "hijack" }, configurable: true});`
	runCases(t, []tcase{
		// ---- limits and their classification ----
		{name: "caught-overflow-then-throw", src: overflow + ` throw new TypeError("later")`, check: isJsError("TypeError", "later")},
		{name: "caught-overflow-then-builtin-TypeError", src: overflow + ` null.x`, check: isJsError("TypeError", "")},
		{name: "caught-parser-overflow-then-throw", src: `try { eval("(".repeat(1e5)) } catch (e) {} throw new RangeError("mine")`, check: isJsError("RangeError", "mine")},
		{name: "caught-overflow-then-reject-async", async: true, src: overflow + ` await null; throw new TypeError("later")`, check: isJsError("TypeError", "later")},
		{name: "caught-overflow-then-throw-in-dispatch",
			run: dispatch(`host.on("o", () => { `+overflow+` throw new SyntaxError("handler") })`, "o", "", false, isJsError("SyntaxError", "handler"))},
		{name: "overflow-through-finally", src: `try { (function f() { f() })() } finally { globalThis.cleaned = true }`, check: isStackOverflow},
		{name: "caught-overflow-then-overflow", src: overflow + ` (function g() { g() })()`, check: isStackOverflow},
		{name: "caught-overflow-then-parser-overflow", src: overflow + ` eval("(".repeat(1e5))`, check: isStackOverflow},
		{name: "caught-overflow-then-value", src: overflow + ` "recovered"`, want: `"recovered"`},
		{name: "overflow-rethrown", src: `try { (function f() { f() })() } catch (e) { throw e }`,
			check: anyOf(isStackOverflow, isJsError("InternalError", "stack overflow"))},
		{name: "template-substitutions-exceed-operand-stack", src: "`" + strings.Repeat("${1}", 100000) + "`.length",
			check: anyOf(isValue(`100000`), isStackOverflow, isJsError("InternalError", ""), isJsError("RangeError", ""))},
		{name: "labels-deep", src: `eval(Array.from({length: 1e5}, (_, i) => "l" + i + ":").join("") + "break l0;")`,
			check: anyOf(isValue(`null`), isStackOverflow)},
		{name: "labelled-blocks-deep", src: `eval(Array.from({length: 1e5}, (_, i) => "l" + i + ":{").join("") + "break l0;" + "}".repeat(1e5))`,
			check: anyOf(isValue(`null`), isStackOverflow)},
		{name: "string-doubling-concat", src: `let s = "x"; for (;;) s += s`, check: anyOf(isMemoryLimit, isJsError("InternalError", "string too long"), isJsError("RangeError", ""))},
		{name: "padStart-2^30", src: `"a".padStart(2 ** 30).length`, check: anyOf(isMemoryLimit, isJsError("RangeError", ""))},
		{name: "typed-array-2^32", src: `new Uint8Array(2 ** 32).length`, check: anyOf(isMemoryLimit, isJsError("RangeError", ""))},
		{name: "typed-array-over-heap", opts: heap(8 << 20), src: `new Float64Array(2 ** 27).length`, check: isMemoryLimit},
		{name: "bigint-too-large", src: `2n ** (2n ** 30n)`, check: anyOf(isJsError("RangeError", ""), isMemoryLimit)},
		{name: "bigint-asUintN-negative", src: `[BigInt.asUintN(64, -1n).toString(), BigInt.asUintN(65, -1n).toString(), BigInt.asUintN(8, -1n).toString()]`,
			want: `["18446744073709551615", "36893488147419103231", "255"]`},
		// Guest patch 11: QuickJS 2025-04-26 returned these unchanged or
		// negative (asUintN(64, 2n ** 64n - 1n) was -1n).
		{name: "bigint-asUintN-mod", src: `(function () {
  var bad = [];
  [[64, 2n ** 64n - 1n], [64, 2n ** 63n], [64, 2n ** 70n + 2n ** 64n - 1n], [96, -(2n ** 70n)],
   [128, -(2n ** 100n)], [200, 12345n], [3, -9n], [1, 2n ** 200n + 1n], [32, -1n], [0, -5n]].forEach(function (c) {
    var m = 2n ** BigInt(c[0]), want = ((c[1] % m) + m) % m, got = BigInt.asUintN(c[0], c[1]);
    if (got !== want) bad.push(c[0] + ":" + got);
  });
  return bad;
})()`, want: `[]`},
		{name: "bigint-asIntN-unchanged", src: `[BigInt.asIntN(64, 2n ** 63n), BigInt.asIntN(8, 255n), BigInt.asIntN(65, -1n), BigInt.asIntN(200, -(2n ** 150n))].map(String)`,
			want: `["-9223372036854775808", "-1", "-1", "-1427247692705959881058285969449495136382746624"]`},
		{name: "bigint-asUintN-huge-bits", timeout: time.Second, src: `[BigInt.asUintN(2 ** 40, 5n), (function () { try { BigInt.asUintN(2 ** 40, -1n); return "no error"; } catch (e) { return e.name; } })()].map(String)`,
			want: `["5", "RangeError"]`},
		{name: "apply-huge-array-like", src: `Math.max.apply(null, {length: 2 ** 31})`, check: anyOf(isJsError("RangeError", ""), isMemoryLimit)},
		{name: "spread-huge-array", src: `Math.max(...new Array(1e6).fill(0))`, check: anyOf(isValue(`0`), isJsError("RangeError", ""), isStackOverflow, isMemoryLimit)},
		// ---- builtins with hostile callbacks or sizes ----
		{name: "sort-comparator-throws", src: `[3, 2, 1].sort(() => { throw new RangeError("cmp") })`, check: isJsError("RangeError", "cmp")},
		{name: "sort-comparator-loops", timeout: hang, after: usableOrDead, src: `[3, 2, 1].sort(() => { for (;;) {} })`, check: isDeadline},
		{name: "sort-comparator-bomb", opts: heap(8 << 20), src: `const keep = []; [3, 2, 1].sort(() => { for (;;) keep.push({}) })`, check: isMemoryLimit},
		{name: "sort-comparator-mutates", src: `
			const a = Array.from({length: 1000}, (_, i) => i)
			a.sort((x, y) => { a.length = 0; a.push(1, 2, 3); return y - x }); a.length`, check: func(t tT, _ *cctx, res json.RawMessage, err error) {
			var n int
			if assert.NoError(t, err) && assert.NoError(t, json.Unmarshal(res, &n)) {
				assert.GreaterOrEqual(t, n, 0)
			}
		}},
		{name: "sort-comparator-inconsistent", src: `Array.from({length: 5000}, (_, i) => i).sort(() => Math.random() - 0.5).length`, want: `5000`},
		{name: "replace-dollar-amp-bomb", opts: heap(8 << 20), src: `"x".repeat(1 << 10).replace(/x/g, "$&".repeat(1 << 14)).length`, check: isMemoryLimit},
		{name: "replaceAll-empty-pattern-bomb", slow: true, opts: heap(8 << 20), src: `"x".repeat(1 << 22).replaceAll("", "yy").length`,
			check: anyOf(isMemoryLimit, isJsError("RangeError", ""), isJsError("InternalError", ""))},
		{name: "join-sparse-2^32-empty-separator", timeout: time.Second, after: usableOrDead, src: `new Array(2 ** 32 - 1).join("").length`, check: limitOrRange},
		{name: "copyWithin-array-like-2^53", timeout: time.Second, after: usableOrDead, src: `Array.prototype.copyWithin.call({length: 2 ** 53 - 1}, 0, 1)`, check: limitOrRange},
		{name: "fill-sparse-2^32", timeout: time.Second, after: usableOrDead, src: `new Array(2 ** 32 - 1).fill(0).length`, check: limitOrRange},
		{name: "String.raw-huge-raw-length", timeout: time.Second, after: usableOrDead, src: `String.raw({raw: {length: 2 ** 31}}, 1).length`, check: limitOrRange},
		{name: "regexp-nested-counted-quantifiers", timeout: time.Second, after: usableOrDead, src: `new RegExp("(?:(?:a{1000}){1000}){1000}").test("b")`,
			check: anyOf(isValue(`false`), isJsError("SyntaxError", ""), limitOrRange)},
		{name: "normalize-big-string", src: `"\u1E9B\u0323".repeat(1 << 20).normalize("NFKD").length`, check: anyOf(isValue(`3145728`), isMemoryLimit)},
		{name: "JSON.parse-reviver-loops", timeout: hang, after: usableOrDead, src: `JSON.parse('{"a": 1}', () => { for (;;) {} })`, check: isDeadline},
		{name: "JSON.parse-reviver-bomb", opts: heap(8 << 20), src: `JSON.parse("[" + "1,".repeat(1e6) + "1]", (k, v) => [v, v, v, v]).length`, check: isMemoryLimit},
		{name: "JSON.parse-reviver-adds-keys", src: `JSON.parse('{"a": {"b": 1}}', function (k, v) { if (k === "b") this.c = 2; return v })`, want: `{"a": {"b": 1, "c": 2}}`},
		{name: "promise-all-infinite-iterable", timeout: time.Second, after: usableOrDead, src: `Promise.all((function* () { for (;;) yield 1 })())`,
			check: anyOf(isMemoryLimit, isDeadlineOrDead)},
		{name: "date-extremes", src: `[new Date(8.64e15).toISOString(), new Date(8.64e15 + 1).getTime(), JSON.stringify(new Date(NaN)), new Date(-8.64e15).getUTCFullYear(), new Date(NaN)]`,
			want: `["+275760-09-13T00:00:00.000Z", null, "null", -271821, null]`},
		{name: "date-invalid-toISOString", src: `new Date(NaN).toISOString()`, check: isJsError("RangeError", "")},
		{name: "number-formatting-out-of-range", src: `
			const r = []; for (const f of [() => (1).toPrecision(101), () => (1).toFixed(101), () => (255).toString(37), () => (1).toExponential(-1)])
				try { f(); r.push("no error") } catch (e) { r.push(e.name) }
			r`, want: `["RangeError", "RangeError", "RangeError", "RangeError"]`},
		{name: "intl-absent-locale-fallbacks", src: `[typeof Intl, "a".localeCompare("b"), (1234.5).toLocaleString()]`, want: `["undefined", -1, "1234.5"]`},
		// ---- promises and jobs ----
		{name: "thenable-self-resolution-loop", opts: ops(2e6), async: true, src: `const t = {then(r) { r(t) }}; await t`, check: isCPULimit},
		{name: "thenable-self-resolution-deadline", timeout: hang, after: usableOrDead, async: true, src: `const t = {then(r) { r(t) }}; await t`, check: isDeadline},
		{name: "promise-cycle-async", async: true, src: `
			let ra, rb; const a = new Promise(r => ra = r), b = new Promise(r => rb = r); ra(b); rb(a); await a`,
			check: isRuntimeError(kafig.CodeRuntimeError)},
		{name: "promise-cycle-sync", src: `let ra, rb; const a = new Promise(r => ra = r), b = new Promise(r => rb = r); ra(b); rb(a); a`,
			check: isRuntimeError(kafig.CodeRuntimeError)},
		{name: "async-generator-flood", opts: ops(2e6), async: true, src: `async function* g() { for (;;) yield 1 } for await (const x of g()) {}`, check: isCPULimit},
		{name: "microtask-flood-cpu-time-limit", async: true, run: func(t *testing.T, c *cctx) {
			c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithInterruptCallback(func(_, cpuUs uint64) bool { return cpuUs > 200_000 }))
			})
			start := time.Now()
			res, err := c.eval(`for (let i = 0; i < 1e9; i++) await null`, kafig.WithAsync())
			isCPULimit(t, c, res, err)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond), "a 200 ms CPU limit")
		}},
		{name: "finalization-registry-self-perpetuating", timeout: hang, after: usableOrDead, async: true,
			src:   `const fr = new FinalizationRegistry(h => { fr.register({}, h) }); fr.register({}, 1); 1`,
			check: anyOf(isValue(`1`), isDeadline)},
		{name: "rpc-loop-outlives-result", async: true, src: `(async () => { for (;;) await host.rpc("aecho", 1) })(); 1`, want: `1`},
		{name: "stale-rpc-promise-awaited-later", async: true, run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.p = host.rpc("sleep", 50); 1`, kafig.WithAsync())
			res, err := c.eval(`await p`, kafig.WithAsync())
			anyOf(isRuntimeError(kafig.CodeRuntimeError), isJsError("Error", ""))(t, c, res, err)
		}},
		{name: "sync-method-via-rpc-flood", async: true, src: `
			const ps = []; for (let i = 0; i < 5000; i++) ps.push(host.rpc("echo", i))
			;(await Promise.allSettled(ps)).filter(r => r.status === "fulfilled").length`, want: itoa(kafig.DefaultMaxPendingRPCs)},
		// ---- the shim's own work running the script's code ----
		{name: "result-getter-starts-rpc", async: true, run: func(t *testing.T, c *cctx) {
			res, err := c.eval(`({get a() { host.rpc("block"); return 1 }})`, kafig.WithAsync())
			isValue(`{"a": 1}`)(t, c, res, err)
			assert.Eventually(t, func() bool { return c.cancelled.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "the handler's context ended")
		}},
		{name: "result-getter-returns-rpc-promise", async: true, src: `({get a() { return host.rpc("aecho", 1) }})`, want: `{"a": {}}`},
		{name: "error-getter-starts-rpc", async: true, run: func(t *testing.T, c *cctx) {
			res, err := c.eval(`const e = new Error("x"); Object.defineProperty(e, "message", {get() { host.rpc("block"); return "m" }}); throw e`, kafig.WithAsync())
			isJsError("Error", "m")(t, c, res, err)
			assert.Eventually(t, func() bool { return c.cancelled.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "the handler's context ended")
		}},
		{name: "error-stack-getter-bomb", opts: heap(8 << 20), src: `
			const e = new Error("m"); Object.defineProperty(e, "stack", {get() { return "s".repeat(7 << 20) + "!" }}); throw e`,
			check: anyOf(isMemoryLimit, isJsError("Error", "m"))},
		{name: "error-huge-name", src: `const e = new Error("m"); e.name = "N".repeat(1 << 24); throw e`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			var je *kafig.JsError
			if errors.As(err, &je) {
				assert.Equal(t, "m", je.Message)
				return
			}
			isMemoryLimit(t, c, res, err)
		}},
		{name: "error-message-lone-surrogate", src: `throw new Error("a\ud800b")`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			var je *kafig.JsError
			if assert.ErrorAs(t, err, &je) {
				assert.True(t, utf8.ValidString(je.Message), "%q", je.Message)
				assert.True(t, strings.HasPrefix(je.Message, "a") && strings.HasSuffix(je.Message, "b"), "%q", je.Message)
			}
		}},
		{name: "result-lone-surrogate-keys", src: `({"\ud800": "\udfff", "k\udc00": 1})`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			exactJSON(`{"\ud800":"\udfff","k\udc00":1}`)(t, c, res, err)
			assert.True(t, utf8.Valid(res))
		}},
		{name: "thrown-revoked-proxy", src: `const r = Proxy.revocable({}, {}); r.revoke(); throw r.proxy`, check: isJsError("Error", "")},
		{name: "thrown-error-cause-cycle", src: `const e = new Error("x"); e.cause = e; throw e`, check: isJsError("Error", "x")},
		{name: "thrown-aggregate-error-cycle", src: `const e = new AggregateError([], "agg"); e.errors.push(e); throw e`, check: isJsError("AggregateError", "agg")},
		{name: "thrown-deep-proxy-of-error", src: `let p = new Error("x"); for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); throw p`,
			check: anyOf(isJsError("Error", ""), isStackOverflow)},
		{name: "result-dag-exponential", timeout: time.Second, after: usableOrDead, src: `let o = [1]; for (let i = 0; i < 30; i++) o = [o, o]; o`, check: limitOrRange},
		{name: "rpc-params-dag-exponential", timeout: time.Second, after: usableOrDead, src: `let o = [1]; for (let i = 0; i < 30; i++) o = [o, o]; host.rpcSync("echo", o)`, check: limitOrRange},
		{name: "result-proxy-huge-length", timeout: time.Second, after: usableOrDead, src: `new Proxy([], {get(t, k) { return k === "length" ? 2 ** 32 - 1 : undefined }})`, check: limitOrRange},
		{name: "result-sparse-array-2^32", slow: true, src: `const a = []; a.length = 2 ** 32 - 1; a`, check: anyOf(isMemoryLimit, isJsError("RangeError", ""), isJsError("InternalError", ""))},
		{name: "rpc-params-huge-typed-array", src: `host.rpcSync("len", new Uint8Array(1 << 22))`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			if err == nil {
				assert.True(t, json.Valid(res))
				return
			}
			isMemoryLimit(t, c, res, err)
		}},
		{name: "pages-limit-in-rpc-params", opts: pages(96), src: `host.rpcSync("len", "x".repeat(3 << 20))`, check: anyOf(isMemoryLimit, isValue(itoa(2+3<<20)))},
		// ---- the rejection handler reading hostile reasons ----
		{name: "rejection-reason-getter-starts-rpc", async: true, run: rejections(`
			const e = new Error("r"); Object.defineProperty(e, "message", {get() { host.rpc("block"); return "m" }}); Promise.reject(e); await null; 1`,
			true, 0, isValue(`1`), func(t *testing.T, c *cctx, seen func() []string) {
				assert.Equal(t, []string{"Error: m"}, seen())
				assert.Eventually(t, func() bool { return c.cancelled.Load() == 1 }, 5*time.Second, 10*time.Millisecond, "the handler's context ended")
			})},
		{name: "rejection-reason-toString-loops", after: usableOrDead, run: rejections(`Promise.reject({toString() { for (;;) {} }}); 1`,
			false, hang, anyOf(isDeadline, isValue(`1`)), nil)},
		{name: "rejection-reason-toString-bomb", run: rejections(`Promise.reject({toString() { const a = []; for (;;) a.push({}) }}); 1`,
			false, 0, anyOf(isMemoryLimit, isValue(`1`)), nil)},
		{name: "rejection-reason-toString-overflows", run: rejections(`Promise.reject({toString() { return (function f() { return f() })() }}); 1`,
			false, 0, anyOf(isValue(`1`), isStackOverflow), nil)},
		{name: "rejection-reason-deep-proxy", run: rejections(`let p = new Error("x"); for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); Promise.reject(p); 1`,
			false, 0, anyOf(isValue(`1`), isStackOverflow), nil)},
		{name: "rejection-inside-rejection-report", run: rejections(`Promise.reject({toString() { Promise.reject(new Error("nested")); return "outer" }}); 1`,
			false, 0, isValue(`1`), func(t *testing.T, c *cctx, seen func() []string) {
				// The nested rejection happens during the report: it is
				// reported at the next checkpoint at the latest.
				assert.Contains(t, seen(), "Error: outer")
				c.mustEval(`1`)
				assert.ElementsMatch(t, []string{"Error: outer", "Error: nested"}, seen())
			})},
		{name: "rejection-in-result-getter", run: rejections(`({get a() { Promise.reject(new Error("in getter")); return 1 }})`,
			false, 0, isValue(`{"a": 1}`), func(t *testing.T, c *cctx, seen func() []string) {
				assert.LessOrEqual(t, len(seen()), 1)
			})},
		// ---- tampering that reaches the shim ----
		{name: "array-index-setter-then-throw", src: arraySetter + ` throw new TypeError("real")`, check: isJsError("TypeError", "real")},
		{name: "array-index-setter-then-object-result", src: arraySetter + ` ({a: [1]})`, want: `{"a": [1]}`},
		{name: "array-index-setter-then-rpc-params", after: anything, src: arraySetter + ` host.rpcSync("echo", {a: 1}).a`, want: `1`},
		{name: "array-index-setter-loops-then-throw", timeout: hang, after: usableOrDead,
			src:   `Object.defineProperty(Array.prototype, 0, {set() { for (;;) {} }, configurable: true}); undefinedName`,
			check: anyOf(isDeadline, isJsError("ReferenceError", "undefinedName"))},
		{name: "object-prototype-accessors-on-bridge-names", src: hijackAll + `
			[host.rpcSync("echo", {x: 1}), (() => { try { host.rpcSync("nope") } catch (e) { return Object.getOwnPropertyDescriptor(e, "message").value } })()]`,
			want: `[{"x": 1}, "kafig: unknown RPC method nope"]`},
		{name: "object-prototype-accessors-on-bridge-names-async", async: true, src: hijackAll + `
			[await host.rpc("aecho", {x: 1}), await host.rpc("nope").catch(e => Object.getOwnPropertyDescriptor(e, "message").value)]`,
			want: `[{"x": 1}, "kafig: unknown RPC method nope"]`},
		{name: "object-prototype-accessors-then-throw", src: hijackAll + ` throw new TypeError("real")`, check: isJsError("TypeError", "real")},
		{name: "object-prototype-toJSON-not-on-envelope", async: true, src: `
			Object.prototype.toJSON = function () { return {method: "fail"} };
			host.rpcSync("echo", 1) + await host.rpc("aecho", 2)`, want: `3`},
		{name: "object-prototype-toJSON-throws-then-error", src: `Object.prototype.toJSON = () => { throw 1 }; throw new Error("real")`, check: isJsError("Error", "real")},
		{name: "bigint-toJSON-patched", src: `BigInt.prototype.toJSON = function () { return this.toString() }; [10n, host.rpcSync("echo", 11n)]`, want: `["10", "11"]`},
		{name: "array-species-patched", after: anything, src: `
			Array.prototype.constructor = {[Symbol.species]: function () { return {} }};
			[host.rpcSync("echo", [1, 2].map(x => x)), host.rpcSync("echo", [3, 4])]`, want: `[{"0": 1, "1": 2}, [3, 4]]`},
		{name: "regexp-and-string-methods-patched", src: `
			RegExp.prototype.exec = () => { throw new Error("exec") }; String.prototype.replace = String.prototype.slice = null;
			[host.rpcSync("echo", "a.b"), (() => { try { host.rpcSync("nope") } catch (e) { return e.message } })()]`,
			want: `["a.b", "kafig: unknown RPC method nope"]`},
		// ---- host.on handlers ----
		{name: "dispatch-class-constructor-handler", run: dispatch(`host.on("c", class {})`, "c", "", false, isJsError("TypeError", ""))},
		{name: "dispatch-__proto__-name", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("__proto__", (p) => ["proto", p]); host.on("constructor", () => "ctor")`)
			res, err := c.inst.DispatchEvent(t.Context(), "__proto__", json.RawMessage(`1`))
			isValue(`["proto", 1]`)(t, c, res, err)
			res, err = c.inst.DispatchEvent(t.Context(), "constructor", nil)
			isValue(`"ctor"`)(t, c, res, err)
			_, err = c.inst.DispatchEvent(t.Context(), "toString", nil)
			assert.ErrorIs(t, err, kafig.ErrNoHandler)
		}},
		{name: "dispatch-params-edge-values", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("v", (p) => [Object.is(p, -0), p === Infinity, typeof p === "string" ? p.length : null])`)
			for params, want := range map[string]string{`-0`: `[true, false, null]`, `1e400`: `[false, true, null]`, `"\u0000"`: `[false, false, 1]`} {
				res, err := c.inst.DispatchEvent(t.Context(), "v", json.RawMessage(params))
				isValue(want)(t, c, res, err)
			}
			res, err := c.inst.DispatchEvent(t.Context(), "v", json.RawMessage{})
			isValue(`[false, false, null]`)(t, c, res, err)
		}},
		{name: "dispatch-params-deep", run: dispatch(`host.on("d", (p) => 1)`, "d", strings.Repeat("[", 9000)+strings.Repeat("]", 9000), false,
			anyOf(isValue(`1`), isStackOverflow))},
		{name: "dispatch-params-invalid-utf8", run: dispatch(`host.on("e", (p) => p)`, "e", "\"\xff\xfe\"", false, isErr(kafig.ErrInvalidSource))},
		{name: "dispatch-params-utf8-encoded-surrogate", run: dispatch(`host.on("e", (p) => p)`, "e", "\"\xed\xa0\x80\"", false, isErr(kafig.ErrInvalidSource))},
		// ---- misuse from Go ----
		{name: "close-during-dispatch", after: closed, run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("spin", () => { for (;;) {} })`)
			time.AfterFunc(200*time.Millisecond, func() { _ = c.inst.Close(context.Background()) })
			start := time.Now()
			_, err := c.inst.DispatchEvent(t.Context(), "spin", nil)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
		}},
		{name: "close-during-compiled", after: closed, run: func(t *testing.T, c *cctx) {
			bc := c.compile(`for (;;) {}`)
			time.AfterFunc(200*time.Millisecond, func() { _ = c.inst.Close(context.Background()) })
			start := time.Now()
			_, err := c.inst.EvalCompiled(t.Context(), bc)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
		}},
		{name: "close-during-non-polling-builtin", after: closed, run: func(t *testing.T, c *cctx) {
			time.AfterFunc(200*time.Millisecond, func() { _ = c.inst.Close(context.Background()) })
			start := time.Now()
			_, err := c.inst.Eval(t.Context(), `let x = 3n ** 200000n; for (;;) x * x`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
		}},
		// The handler honours its context, as RPCHandler asks: Close must end
		// it (as it does for host.rpc handlers) rather than wait 3 s for it.
		{name: "close-during-rpcSync-handler", after: closed, run: func(t *testing.T, c *cctx) {
			time.AfterFunc(200*time.Millisecond, func() { _ = c.inst.Close(context.Background()) })
			start := time.Now()
			_, err := c.inst.Eval(context.Background(), `host.rpcSync("ssleep", 3000)`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
			assert.Equal(t, int64(1), c.cancelled.Load(), "Close cancelled the handler")
		}},
		{name: "rpc-reply-not-utf8", run: func(t *testing.T, c *cctx) {
			c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
				return []kafig.InstanceOption{kafig.WithRouter(c.router().
					WithSync("bad", func(context.Context, json.RawMessage) (json.RawMessage, error) {
						return json.RawMessage("\"\xed\xa0\x80\xff\""), nil
					}).
					WithSync("badErr", func(context.Context, json.RawMessage) (json.RawMessage, error) {
						return nil, errors.New("bad \xff bytes")
					}))}
			})
			res, err := c.eval(`[(() => { try { host.rpcSync("bad") } catch (e) { return e.message } })(), (() => { try { host.rpcSync("badErr") } catch (e) { return e.message } })()]`)
			isValue(`["kafig: RPC handler returned JSON that is not UTF-8", "bad \ufffd bytes"]`)(t, c, res, err)
		}},
		{name: "close-from-async-handler", async: true, after: closed, run: func(t *testing.T, c *cctx) {
			c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
				return []kafig.InstanceOption{kafig.WithRouter(c.router().WithAsync("closeSelf", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
					return nil, c.inst.Close(ctx)
				}))}
			})
			_, err := c.evalTimeout(time.Second, `await host.rpc("closeSelf")`, kafig.WithAsync())
			assert.ErrorIs(t, err, kafig.ErrClosed)
		}},
		{name: "close-from-rpcSync-handler", noInstance: true, run: closeFromCallback(func(self func() *kafig.Instance) []kafig.InstanceOption {
			return []kafig.InstanceOption{kafig.WithRouter(kafig.NewRPCRouter().WithSync("closeSelf", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
				return nil, self().Close(ctx)
			}))}
		}, `host.rpcSync("closeSelf")`)},
		{name: "close-from-interrupt-callback", noInstance: true, run: closeFromCallback(func(self func() *kafig.Instance) []kafig.InstanceOption {
			return []kafig.InstanceOption{kafig.WithInterruptCallback(func(o, _ uint64) bool {
				if o > 1e6 {
					_ = self().Close(context.Background())
					return true
				}
				return false
			})}
		}, `for (;;) {}`)},
		{name: "close-from-rejection-handler", noInstance: true, run: closeFromCallback(func(self func() *kafig.Instance) []kafig.InstanceOption {
			return []kafig.InstanceOption{kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool {
				_ = self().Close(context.Background())
				return true
			})}
		}, `Promise.reject(new Error("r")); 1`)},
		// A handler that calls into its own instance with its context must
		// not wait for itself forever: the operation's deadline bounds it.
		{name: "reentrant-eval-from-rpcSync-handler", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
				return []kafig.InstanceOption{kafig.WithRouter(c.router().WithSync("evalSelf", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
					return c.inst.Eval(ctx, `1`)
				}))}
			})
			// Waiting until the deadline, or refusing the call at once: either
			// way host.rpcSync throws (or the deadline stops the eval).
			res, err := c.evalTimeout(500*time.Millisecond, `host.rpcSync("evalSelf")`)
			anyOf(isDeadline, isJsError("Error", ""))(t, c, res, err)
		}},
		{name: "hammer-then-close", noInstance: true, run: func(t *testing.T, c *cctx) {
			inst, err := c.rt.Instance(t.Context(), kafig.WithRouter(c.router()))
			require.NoError(t, err)
			var wg sync.WaitGroup
			var unexpected atomic.Value
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 40 {
						var err error
						switch (w + i) % 4 {
						case 0:
							_, err = inst.Eval(context.Background(), `for (let i = 0; i < 1e4; i++);`)
						case 1:
							_, err = inst.Eval(context.Background(), `await host.rpc("aecho", 1)`, kafig.WithAsync())
						case 2:
							_, err = inst.GetExecutionStats(context.Background())
						case 3:
							_, err = inst.DispatchEvent(context.Background(), "none", nil)
						}
						if err != nil && !errors.Is(err, kafig.ErrClosed) && !errors.Is(err, kafig.ErrNoHandler) {
							unexpected.Store(err.Error())
						}
					}
				}()
			}
			time.Sleep(30 * time.Millisecond)
			assert.NoError(t, inst.Close(context.Background()))
			wg.Wait()
			assert.Nil(t, unexpected.Load(), "every call succeeded or reported ErrClosed")
		}},
		{name: "runtime-close-during-instance-and-compile", noInstance: true, run: func(t *testing.T, c *cctx) {
			rt, err := kafig.New(t.Context(), c.b.new())
			require.NoError(t, err)
			var wg sync.WaitGroup
			var unexpected atomic.Value
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 15 {
						inst, err := rt.Instance(context.Background())
						if err == nil {
							_, err = inst.Eval(context.Background(), `1`)
						}
						if err == nil {
							_, err = rt.Compile(context.Background(), itoa(i))
						}
						if err != nil && !errors.Is(err, kafig.ErrClosed) {
							unexpected.Store(err.Error())
						}
					}
				}()
			}
			time.Sleep(20 * time.Millisecond)
			assert.NoError(t, rt.Close(context.Background()))
			wg.Wait()
			assert.Nil(t, unexpected.Load(), "every call succeeded or reported ErrClosed")
		}},
		{name: "compile-huge-source-deadline", slow: true, run: func(t *testing.T, c *cctx) {
			rt := newRuntime(t, c.b)
			src := strings.Repeat("a = [1, 2, 3, {b: 4}];\n", 1<<20)
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := rt.Compile(ctx, src)
			if err != nil {
				isDeadlineOrDead(t, c, nil, err)
			}
			assert.Less(t, time.Since(start), stopBound(100*time.Millisecond))
			bc, err := rt.Compile(t.Context(), `3`)
			require.NoError(t, err, "the next Compile works")
			inst, err := rt.Instance(t.Context())
			require.NoError(t, err)
			res, err := inst.EvalCompiled(t.Context(), bc)
			isValue(`3`)(t, c, res, err)
		}},
		{name: "compiled-top-level-await", run: func(t *testing.T, c *cctx) {
			bc := c.compile(`await null; 5`)
			res, err := c.evalCompiled(bc, kafig.WithAsync())
			isValue(`5`)(t, c, res, err)
			res, err = c.evalCompiled(bc)
			isRuntimeError(kafig.CodeRuntimeError)(t, c, res, err)
		}},
		{name: "compile-nil-context", noInstance: true, run: func(t *testing.T, c *cctx) {
			noPanic(t, func() {
				var nilCtx context.Context
				bc, err := c.rt.Compile(nilCtx, `1 + 1`)
				if assert.NoError(t, err) {
					assert.NotEmpty(t, bc)
				}
			})
		}},
		{name: "instance-nil-context", noInstance: true, run: func(t *testing.T, c *cctx) {
			noPanic(t, func() {
				var nilCtx context.Context
				inst, err := c.rt.Instance(nilCtx)
				if assert.NoError(t, err) {
					assert.NoError(t, inst.Close(nilCtx))
				}
			})
		}},
		{name: "other-calls-nil-context", run: func(t *testing.T, c *cctx) {
			noPanic(t, func() {
				var nilCtx context.Context
				c.mustEval(`host.on("n", () => 4)`)
				res, err := c.inst.DispatchEvent(nilCtx, "n", nil)
				isValue(`4`)(t, c, res, err)
				res, err = c.inst.EvalCompiled(nilCtx, c.compile(`5`))
				isValue(`5`)(t, c, res, err)
				_, err = c.inst.GetExecutionStats(nilCtx)
				assert.NoError(t, err)
				assert.NoError(t, c.inst.ResetExecutionStats(nilCtx))
			})
		}},
	})
}

// rejections is a case flow with a rejection handler that records what it
// is told: evaluate src (async or not, with deadline d), check its result,
// then what the handler saw ("Name: Message" each).
func rejections(src string, async bool, d time.Duration, check checkFn, after func(t *testing.T, c *cctx, seen func() []string)) func(t *testing.T, c *cctx) {
	return func(t *testing.T, c *cctx) {
		var mu sync.Mutex
		var seen []string
		c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithPromiseRejectionHandler(func(e *kafig.JsError) bool {
				mu.Lock()
				seen = append(seen, e.Name+": "+e.Message)
				mu.Unlock()
				return false
			}))
		})
		var opts []kafig.EvalOption
		if async {
			opts = append(opts, kafig.WithAsync())
		}
		res, err := c.evalTimeout(d, src, opts...)
		check(t, c, res, err)
		got := func() []string {
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), seen...)
		}
		for _, s := range got() {
			assert.True(t, utf8.ValidString(s))
		}
		if after != nil {
			after(t, c, got)
		}
	}
}

// closeFromCallback is a case flow for Close called from a callback that
// runs on the operation's goroutine: the operation must end (ErrClosed or
// cpu_limit_exceeded) within a second or two, and the instance be closed.
// It uses a runtime of its own that it closes only when nothing hung, so
// that a deadlock fails the case instead of hanging the suite's cleanup.
func closeFromCallback(opts func(self func() *kafig.Instance) []kafig.InstanceOption, src string) func(t *testing.T, c *cctx) {
	return func(t *testing.T, c *cctx) {
		rt, err := kafig.New(t.Context(), c.b.new())
		require.NoError(t, err)
		var self atomic.Pointer[kafig.Instance]
		inst, err := rt.Instance(t.Context(), opts(self.Load)...)
		require.NoError(t, err)
		self.Store(inst)
		done := make(chan error, 1)
		go func() {
			_, err := inst.Eval(context.Background(), src)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, kafig.ErrClosed) {
				isRuntimeError(kafig.CodeCPULimitExceeded)(t, c, nil, err)
			}
			_, err = inst.Eval(t.Context(), `1`)
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.NoError(t, rt.Close(t.Context()))
		case <-time.After(5 * time.Second):
			t.Errorf("Close from a callback deadlocked: the eval has not returned after 5 s (the runtime is leaked)")
		}
	}
}

// noPanic runs f and fails the test if it panics.
func noPanic(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("panicked: %v", r)
		}
	}()
	f()
}
