package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/kafig"
)

// heap is the standard router with a JS heap limit.
func heap(bytes uint64) func(c *cctx) []kafig.InstanceOption {
	return func(c *cctx) []kafig.InstanceOption { return c.std(kafig.WithJSMemoryLimit(bytes)) }
}

// pages is the standard router with a linear memory limit and a JS heap
// limit above it, so that linear memory runs out first.
func pages(n uint32) func(c *cctx) []kafig.InstanceOption {
	return func(c *cctx) []kafig.InstanceOption {
		return c.std(kafig.WithWASMMemoryLimitPages(n), kafig.WithJSMemoryLimit(1<<30))
	}
}

// bombs are allocation bombs of several shapes. Their garbage is
// unreachable once they fail, so the instance must be usable afterwards.
var bombs = []struct{ name, src, bug string }{
	{"array-of-objects", `(() => { const a = []; for (;;) a.push({i: a.length}) })()`, ""},
	{"cyclic-objects", `(() => { const a = []; for (;;) a.push({a}) })()`, ""},
	{"cyclic-closures", `(() => { let o = {}; for (;;) { const p = {prev: o}; p.f = () => p; o = p } })()`, ""},
	{"array-of-strings", `(() => { const a = []; for (;;) a.push("x".repeat(1000) + a.length) })()`, ""},
	{"doubling-flat-strings", `(() => { let keep; for (let n = 1;; n *= 2) keep = "x".repeat(n) })()`, ""},
	{"huge-array-buffer", `new ArrayBuffer(1 << 30).byteLength`, ""},
	{"typed-arrays", `(() => { const a = []; for (;;) a.push(new Float64Array(1e5)) })()`, ""},
	{"map-entries", `(() => { const m = new Map(); for (let i = 0;; i++) m.set(i, {i}) })()`, ""},
	{"object-properties", `(() => { const o = {}; for (let i = 0;; i++) o["k" + i] = i })()`, ""},
	{"array-fill", `new Array(1e8).fill(0).length`, ""},
	{"array-from", `Array.from({length: 1e8}, (_, i) => i).length`, ""},
	{"closure-chain", `(() => { let f = () => 0; for (;;) { const g = f; f = () => g() + 1 } })()`, ""},
	{"join", `new Array(1e7).join("abcdefgh").length`, ""},
	{"pending-promises", `(() => { const a = []; for (;;) a.push(new Promise(() => {})) })()`, ""},
	{"symbols", `(() => { const a = []; for (;;) a.push(Symbol("s" + a.length)) })()`, ""},
	{"string-repeat", `"x".repeat(2 ** 29).length`, ""},
	{"pad-end", `"x".padEnd(2 ** 29, "yz").length`, ""},
	{"bound-function-chain", `(() => { let f = function () { return 1 }; for (;;) f = f.bind(null, 1) })()`, ""},
	{"json-parse", `JSON.parse("[" + "1,".repeat(1 << 24) + "1]").length`, ""},
	{"regexp-input", `/(x)+/.exec("x".repeat(1 << 24))[0].length`, ""},
	{"split", `"ab".repeat(1 << 22).split("").length`, ""},
	{"caught-and-retried", `(() => { function bomb() { const a = []; for (;;) a.push([1, 2, 3]) } try { bomb() } catch { bomb() } })()`, ""},
	{"caught-and-swallowed", `(() => { try { const a = []; for (;;) a.push({}) } catch (e) { return "swallowed" } })()`, ""},
	{"catch-loop", `(() => { for (;;) { try { const a = []; for (;;) a.push({}) } catch (e) {} } })()`, ""},
	{"finally-retries", `(() => { for (;;) { try { const a = []; for (;;) a.push({}) } finally { continue } } })()`, ""},
}

// TestMemory: the JS heap limit and the linear memory limit.
func TestMemory(t *testing.T) {
	var cases []tcase
	// Every shape against both limits; with -short, some shapes against the
	// heap limit and fewer against the linear memory limit.
	shortHeap := map[string]bool{"array-of-objects": true, "cyclic-objects": true, "array-of-strings": true,
		"doubling-flat-strings": true, "huge-array-buffer": true, "typed-arrays": true, "map-entries": true,
		"string-repeat": true, "json-parse": true, "caught-and-retried": true, "caught-and-swallowed": true,
		"catch-loop": true, "finally-retries": true}
	shortPages := map[string]bool{"array-of-objects": true, "array-of-strings": true, "huge-array-buffer": true, "cyclic-objects": true}
	for _, b := range bombs {
		cases = append(cases,
			tcase{name: "heap-" + b.name, opts: heap(4 << 20), src: b.src, check: isMemoryLimit, bug: b.bug, slow: !shortHeap[b.name]},
			tcase{name: "pages-" + b.name, opts: pages(96), src: b.src, check: isMemoryLimit, bug: b.bug, slow: !shortPages[b.name]},
		)
	}
	cases = append(cases, []tcase{
		{name: "heap-default-limit", src: bombs[0].src, check: isMemoryLimit},
		{name: "heap-cyclic-garbage-after-oom", opts: heap(8 << 20), src: bombs[1].src, check: isMemoryLimit},
		{name: "heap-cyclic-garbage-default-limit", src: bombs[1].src, check: isMemoryLimit},
		{name: "heap-async", opts: heap(8 << 20), async: true, src: `await host.rpc("aecho", 1); ` + bombs[0].src, check: isMemoryLimit},
		{name: "heap-in-promise-job", opts: heap(8 << 20), async: true, src: `await Promise.resolve().then(() => ` + bombs[0].src + `)`, check: isMemoryLimit},
		{name: "heap-in-job-caught", opts: heap(8 << 20), async: true, src: `await Promise.resolve().then(() => ` + bombs[0].src + `).catch(() => "swallowed")`, check: isMemoryLimit},
		{name: "heap-in-dispatch", opts: heap(8 << 20), run: dispatch(`host.on("bomb", () => `+bombs[0].src+`)`, "bomb", "", false, isMemoryLimit)},
		{name: "heap-in-result-serialization", opts: heap(8 << 20), src: `const s = "x".repeat(5 << 20); s`, check: isMemoryLimit},
		{name: "heap-in-rpc-params", opts: heap(8 << 20), src: `host.rpcSync("len", "x".repeat(5 << 20))`, check: isMemoryLimit},
		{name: "heap-in-compiled", opts: heap(8 << 20), run: func(t *testing.T, c *cctx) {
			res, err := c.evalCompiled(c.compile(bombs[0].src))
			isMemoryLimit(t, c, res, err)
		}},
		{name: "heap-repeatedly", opts: heap(8 << 20), run: func(t *testing.T, c *cctx) {
			for range 5 {
				_, err := c.eval(bombs[0].src)
				isMemoryLimit(t, c, nil, err)
				assert.JSONEq(t, `2`, string(c.mustEval(`1 + 1`)))
			}
		}},
		{name: "heap-just-below-limit-works", opts: heap(16 << 20), src: `"x".repeat(4 << 20).length`, want: `4194304`},
		{name: "heap-freed-between-evals", opts: heap(16 << 20), run: func(t *testing.T, c *cctx) {
			for range 5 {
				c.mustEval(`globalThis.big = "x".repeat(6 << 20) + "!"; big.length`)
				c.mustEval(`globalThis.big = null`)
			}
		}},
		// The bomb keeps what it allocated reachable from a global: the heap
		// stays full. Later evals may fail with memory_limit_exceeded (the
		// script can free nothing) but the guest must never trap.
		{name: "heap-full-global-let", opts: heap(8 << 20), after: anything, run: globalBomb(`let s = []; for (;;) s.push("x".repeat(1000))`, "s = null")},
		// Creating a global with the heap full: the error object cannot be
		// allocated either; this used to recurse until the guest trapped.
		{name: "heap-full-global-let-assign", opts: heap(8 << 20), run: func(t *testing.T, c *cctx) {
			globalBomb(`let s = []; for (;;) s.push("x".repeat(1000))`, "x = 1", "y = {}", "s = null")(t, c)
			assert.JSONEq(t, `[1, 2]`, string(c.mustEval(`x = 1; z = 2; [x, z]`)), "usable once the global is released")
		}},
		{name: "heap-full-global-assign-in-function", opts: heap(8 << 20), run: func(t *testing.T, c *cctx) {
			globalBomb(`var keep = []; for (;;) keep.push("x".repeat(1000))`, `(function () { "use strict"; try { undeclared = 1 } catch (e) { return e.name } })()`, "keep = null")(t, c)
		}},
		{name: "heap-full-global-var", opts: heap(8 << 20), after: anything, run: globalBomb(`var s = []; for (;;) s.push({})`, "s = null")},
		{name: "pages-memory-bytes-capped", opts: pages(96), run: func(t *testing.T, c *cctx) {
			_, err := c.eval(bombs[0].src)
			isMemoryLimit(t, c, nil, err)
			assert.LessOrEqual(t, c.stats().MemoryBytes, uint64(96*65536))
		}},
		{name: "pages-runtime-default", rtOpts: []kafig.Option{kafig.WithWASMMemoryLimitPages(160)},
			opts: heap(1 << 30), run: func(t *testing.T, c *cctx) {
				_, err := c.eval(`new ArrayBuffer(32 << 20).byteLength`)
				isMemoryLimit(t, c, nil, err)
				assert.LessOrEqual(t, c.stats().MemoryBytes, uint64(160*65536))
			}},
		{name: "pages-instance-overrides-runtime", rtOpts: []kafig.Option{kafig.WithWASMMemoryLimitPages(160)},
			opts: func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithWASMMemoryLimitPages(2048), kafig.WithJSMemoryLimit(1<<30))
			}, src: `new ArrayBuffer(32 << 20).byteLength`, want: `33554432`},
		{name: "pages-big-rpc-reply", opts: pages(160), async: true,
			src:   `await host.rpc("asize", 32 << 20).then(r => r.length, e => e.message)`,
			check: anyOf(isMemoryLimit, isValue(`"kafig: RPC reply larger than the instance's memory limit"`), isValue(`"kafig: no guest memory for the RPC reply"`))},
		{name: "pages-big-sync-reply", opts: pages(160),
			src:   `let r; try { r = host.rpcSync("size", 32 << 20).length } catch (e) { r = e.message }; r`,
			check: anyOf(isMemoryLimit, func(t tT, _ *cctx, res json.RawMessage, err error) { assert.NoError(t, err) })},
	}...)
	runCases(t, cases)
}

// globalBomb fills the heap with garbage a global keeps, then runs the
// follow-ups: each must succeed or fail with memory_limit_exceeded.
func globalBomb(bomb string, followUps ...string) func(t *testing.T, c *cctx) {
	return func(t *testing.T, c *cctx) {
		_, err := c.eval(bomb)
		isMemoryLimit(t, c, nil, err)
		for _, src := range append([]string{"1 + 1"}, append(followUps, "1 + 1")...) {
			res, err := c.eval(src)
			if err != nil {
				if !assert.NotErrorIs(t, err, kafig.ErrInstanceDead, "after a full heap, %q killed the instance: %v", src, err) {
					return
				}
				assert.ErrorIs(t, err, &kafig.RuntimeError{Code: kafig.CodeMemoryLimitExceeded},
					"after a full heap, %q must succeed or report memory_limit_exceeded", src)
			} else {
				assert.True(t, json.Valid(res))
			}
		}
	}
}

// TestStack: deep recursion in JS and in builtins ends in stack_overflow
// (or a catchable error), and the instance stays usable.
func TestStack(t *testing.T) {
	deep := func(open, close string) string { return strings.Repeat(open, 100000) + strings.Repeat(close, 100000) }
	runCases(t, []tcase{
		{name: "recursion", src: `function f() { return f() + 1 } f()`, check: isStackOverflow},
		{name: "mutual-recursion", src: `function a() { return b() } function b() { return a() } a()`, check: isStackOverflow},
		{name: "recursion-with-big-frames", src: `
			function f(a, b, c, d, e, g, h, i) { let x1 = a, x2 = b, x3 = c, x4 = d, x5 = e, x6 = g, x7 = h, x8 = i; return f(x1, x2, x3, x4, x5, x6, x7, x8) + x1 }
			f(1, 2, 3, 4, 5, 6, 7, 8)`, check: isStackOverflow},
		{name: "recursion-caught", src: `try { (function f() { f() })() } catch (e) { [e.name, e.message] }`, want: `["InternalError", "stack overflow"]`},
		{name: "recursion-caught-then-more-work", src: `
			let n = 0; for (let i = 0; i < 5; i++) { try { (function f() { f() })() } catch (e) { n++ } }
			function g(k) { return k ? g(k - 1) + 1 : 0 }
			[n, g(300)]`, want: `[5, 300]`},
		{name: "moderate-recursion-works", src: `function g(k) { return k ? g(k - 1) + 1 : 0 } g(500)`, want: `500`},
		{name: "recursion-async", async: true, src: `await null; (function f() { f() })()`, check: isStackOverflow},
		{name: "recursion-in-async-function", async: true, src: `async function f(n) { return f(n + 1) } await f(0)`,
			check: anyOf(isStackOverflow, isJsError("InternalError", "stack overflow"))},
		{name: "recursion-in-promise-job", async: true, src: `Promise.resolve().then(function f() { f() }); await null; 1`,
			check: anyOf(isValue(`1`), isStackOverflow)},
		{name: "recursion-in-dispatch", run: dispatch(`host.on("r", function f() { return f() })`, "r", "", false, isStackOverflow)},
		{name: "getter-recursion", src: `const o = { get x() { return this.x } }; o.x`, check: isStackOverflow},
		{name: "proxy-trap-recursion", src: `const p = new Proxy({}, { get(t, k, r) { return r[k] } }); p.x`, check: isStackOverflow},
		{name: "proxy-chain", src: `let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); p.x`, check: isStackOverflow},
		{name: "toString-recursion", src: `var o = {}; o.toString = function () { return "" + this }; "" + o`, check: isStackOverflow},
		{name: "valueOf-recursion", src: `const o = { valueOf() { return +this } }; +o`, check: isStackOverflow},
		{name: "toPrimitive-recursion", src: `const o = { [Symbol.toPrimitive]() { return o * 2 } }; o * 1`, check: isStackOverflow},
		{name: "constructor-recursion", src: `class A { constructor() { new A() } } new A()`, check: isStackOverflow},
		{name: "generator-recursion", src: `function* g() { yield* g() } [...g()]`, check: isStackOverflow},
		{name: "eval-recursion", src: `function f() { eval("f()") } f()`, check: isStackOverflow},
		// Names grow ("bound bound ... "): quadratic memory.
		{name: "bound-function-chain", src: `let f = function () { return 1 }; for (let i = 0; i < 2e4; i++) f = f.bind(null); f()`,
			check: anyOf(isValue(`1`), isStackOverflow, isMemoryLimit)},
		{name: "JSON.parse-deep", src: `JSON.parse("[".repeat(1e5) + "]".repeat(1e5))`, check: isStackOverflow},
		{name: "JSON.parse-deep-objects", src: `JSON.parse('{"a":'.repeat(1e5) + "1" + "}".repeat(1e5))`, check: isStackOverflow},
		{name: "JSON.stringify-deep-objects", src: `let o = {}; for (let i = 0; i < 1e5; i++) o = {o}; JSON.stringify(o).length`, check: isStackOverflow},
		{name: "JSON.stringify-deep-arrays", src: `let a = []; for (let i = 0; i < 1e5; i++) a = [a]; JSON.stringify(a).length`, check: isStackOverflow},
		{name: "result-deep", src: `let a = []; for (let i = 0; i < 1e5; i++) a = [a]; a`, check: isStackOverflow},
		{name: "result-infinite-getters", src: `function mk() { return { get a() { return mk() } } } mk()`, check: isStackOverflow},
		{name: "rpc-params-deep", src: `let a = []; for (let i = 0; i < 1e5; i++) a = [a]; host.rpcSync("echo", a)`, check: isStackOverflow},
		{name: "parser-parens-as-source", src: deep("(", ")"), check: isStackOverflow},
		{name: "parser-brackets-as-source", src: deep("[", "]"), check: isStackOverflow},
		{name: "parser-braces-as-source", src: deep("{", "}"), check: isStackOverflow},
		{name: "parser-unclosed-parens", src: strings.Repeat("(", 100000), check: isStackOverflow},
		{name: "parser-via-eval", src: `eval("(".repeat(1e5))`, check: isStackOverflow},
		{name: "parser-via-Function", src: `new Function("{".repeat(1e5) + "}".repeat(1e5))`, check: isStackOverflow},
		{name: "parser-nested-functions", src: `eval("(function(){".repeat(1e4) + "})".repeat(1e4))`, check: isStackOverflow},
		{name: "parser-unary-chain", src: `eval("-".repeat(1e5) + "1")`, check: isStackOverflow},
		{name: "parser-template-nesting", src: "eval(\"`${\".repeat(1e5) + \"}`\".repeat(1e5))", check: isStackOverflow},
		{name: "regexp-compile-deep-groups", src: `new RegExp("(?:".repeat(1e5) + ")".repeat(1e5))`, check: isStackOverflow},
		{name: "regexp-compile-deep-captures", src: `new RegExp("(".repeat(1e5) + ")".repeat(1e5))`, check: anyOf(isStackOverflow, isJsError("SyntaxError", ""))},
		{name: "regexp-exec-deep-alternation", src: `new RegExp("(?:a|".repeat(1e4) + ")".repeat(1e4)).test("b")`, check: isStackOverflow},
		{name: "array-join-deep", src: `let a = []; for (let i = 0; i < 1e5; i++) a = [a]; String(a).length`, check: isStackOverflow},
		{name: "array-flat-deep", src: `let a = []; for (let i = 0; i < 1e5; i++) a = [a]; a.flat(Infinity).length`, check: isStackOverflow},
		{name: "usable-after-many-overflows", run: func(t *testing.T, c *cctx) {
			for _, src := range []string{`(function f() { f() })()`, `JSON.parse("[".repeat(1e5))`, `eval("(".repeat(1e5))`} {
				for range 3 {
					_, err := c.eval(src)
					isStackOverflow(t, c, nil, err)
				}
			}
			assert.JSONEq(t, `300`, string(c.mustEval(`function g(k) { return k ? g(k - 1) + 1 : 0 } g(300)`)))
		}},
	})
}

// TestContext: the context of a call bounds it.
func TestContext(t *testing.T) {
	nonPolling := []struct{ name, src string }{
		{"includes-array-like", `Array.prototype.includes.call({length: 2 ** 53 - 1}, 1)`},
		{"indexOf-array-like", `Array.prototype.indexOf.call({length: 2 ** 53 - 1}, 1)`},
		{"lastIndexOf-array-like", `Array.prototype.lastIndexOf.call({length: 2 ** 53 - 1}, 1)`},
		{"reverse-array-like", `Array.prototype.reverse.call({length: 2 ** 53 - 1})`},
		{"bigint-loop", `let x = 3n ** 200000n; for (;;) x * x`},
		{"bigint-single-op", `let x = 7n ** 1000000n; (x * x * x * x * x * x * x * x).toString().length`},
		{"bigint-toString", `(7n ** 3000000n).toString().length`},
		{"json-stringify-dag", `let o = {}; for (let i = 0; i < 40; i++) o = {a: o, b: o}; JSON.stringify(o).length`},
		{"json-stringify-deep", `let o = {}; for (let i = 0; i < 1e5; i++) o = {o}; JSON.stringify(o).length`},
		{"string-indexOf-loop", `const s = "a".repeat(1 << 22); for (;;) s.indexOf("b")`},
		{"sort-big", `const a = Array.from({length: 2e6}, (_, i) => (i * 7919) % 2e6); for (;;) a.slice().sort()`},
		{"regexp-backtracking", `/(a+)+$/.test("a".repeat(40) + "b")`},
		{"regexp-replace", `"a".repeat(1 << 20).replace(/(a|a)*b/g, "")`},
	}
	cases := []tcase{
		{name: "deadline-infinite-loop", after: usableOrDead, timeout: hangTimeout, src: `while (true) {}`, check: isDeadline},
		{name: "deadline-message", after: usableOrDead, timeout: hangTimeout, src: `for (;;) {}`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			isDeadline(t, c, res, err)
			assert.Contains(t, err.Error(), "deadline exceeded")
		}},
		{name: "cancel-mid-run", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			_, err := c.inst.Eval(ctx, `for (;;) {}`)
			isRuntimeError(kafig.CodeCPULimitExceeded)(t, c, nil, err)
			assert.ErrorIs(t, err, context.Canceled)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
		}},
		{name: "already-cancelled", run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			_, err := c.inst.Eval(ctx, `globalThis.ran = true`)
			assert.ErrorIs(t, err, context.Canceled)
			assert.JSONEq(t, `"undefined"`, string(c.mustEval(`typeof ran`)), "the script did not run")
			_, err = c.inst.DispatchEvent(ctx, "x", nil)
			assert.ErrorIs(t, err, context.Canceled)
			_, err = c.inst.EvalCompiled(ctx, c.compile(`1`))
			assert.ErrorIs(t, err, context.Canceled)
		}},
		{name: "already-expired", run: func(t *testing.T, c *cctx) {
			ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
			defer cancel()
			_, err := c.inst.Eval(ctx, `1`)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		}},
		{name: "nil-context", run: func(t *testing.T, c *cctx) {
			var nilCtx context.Context
			res, err := c.inst.Eval(nilCtx, `1 + 2`)
			isValue(`3`)(t, c, res, err)
		}},
		{name: "deadline-awaiting-rpc", after: usableOrDead, async: true, timeout: hangTimeout, run: func(t *testing.T, c *cctx) {
			_, err := c.evalTimeout(hangTimeout, `await host.rpc("block")`, kafig.WithAsync())
			isDeadline(t, c, nil, err)
			assert.Equal(t, int64(1), c.cancelled.Load(), "the handler's context ended")
		}},
		// The handler returns ctx.Err(): host.rpcSync throws it, the script
		// catches it and spins on, and the next poll stops it.
		{name: "deadline-in-rpcSync-handler", timeout: hangTimeout, after: usableOrDead,
			src: `try { host.rpcSync("ssleep", 60000) } catch (e) { globalThis.msg = e.message } for (;;) {}`, check: isDeadline},
		{name: "deadline-in-rpcSync-handler-uncaught", timeout: hangTimeout, after: usableOrDead,
			src: `host.rpcSync("ssleep", 60000)`, check: anyOf(isDeadline, isJsError("Error", "context deadline exceeded"))},
		{name: "deadline-between-rpcs", after: usableOrDead, async: true, timeout: hangTimeout, src: `for (;;) await host.rpc("aecho", 1)`, check: isDeadline},
		{name: "deadline-microtask-loop", after: usableOrDead, async: true, timeout: hangTimeout, src: `for (;;) await null`, check: isDeadline},
		{name: "deadline-in-dispatch", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("spin", () => { for (;;) {} })`)
			res, err := c.bounded(hangTimeout, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.DispatchEvent(ctx, "spin", nil, kafig.WithAsync())
			})
			isDeadline(t, c, res, err)
		}},
		{name: "deadline-in-compiled", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			bc := c.compile(`for (;;) {}`)
			res, err := c.bounded(hangTimeout, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.EvalCompiled(ctx, bc)
			})
			isDeadline(t, c, res, err)
		}},
		{name: "deadline-while-waiting-for-instance", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			done := make(chan error, 1)
			go func() {
				_, err := c.evalTimeout(2*time.Second, `for (;;) {}`)
				done <- err
			}()
			time.Sleep(100 * time.Millisecond)
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := c.inst.Eval(ctx, `1`)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond))
			isDeadline(t, c, nil, <-done)
		}},
		{name: "stats-wait-respects-context", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = c.evalTimeout(time.Second, `for (;;) {}`)
			}()
			time.Sleep(100 * time.Millisecond)
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			_, err := c.inst.GetExecutionStats(ctx)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			<-done
		}},
		{name: "deadline-then-usable-repeatedly", after: usableOrDead, run: func(t *testing.T, c *cctx) {
			for range 5 {
				_, err := c.evalTimeout(100*time.Millisecond, `for (;;) {}`)
				isDeadline(t, c, nil, err)
				if errors.Is(err, kafig.ErrInstanceDead) {
					t.Logf("the backstop stopped a polling loop (a loaded machine?): %v", err)
					return
				}
				assert.JSONEq(t, `2`, string(c.mustEval(`1 + 1`)))
			}
		}},
	}
	// Builtins that may not poll: the guest polls, or the monitor stops the
	// call from outside (then the instance is dead), or the builtin fails
	// first on a limit of its own; either way within 2x + 1 s.
	for _, np := range nonPolling {
		cases = append(cases, tcase{name: "builtin-" + np.name, timeout: time.Second, src: np.src,
			check: anyOf(isDeadlineOrDead, isMemoryLimit, isStackOverflow, isJsError("RangeError", "")), after: usableOrDead})
	}
	runCases(t, cases)
}
