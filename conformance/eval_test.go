package conformance

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/kafig"
)

// TestEval: the result of an eval is the completion value as JSON.
func TestEval(t *testing.T) {
	runCases(t, []tcase{
		{name: "int", src: `1 + 2`, want: `3`},
		{name: "float", src: `0.1 + 0.2`, want: `0.30000000000000004`},
		{name: "negative-zero", src: `-0`, want: `0`},
		{name: "large-int", src: `2**53`, want: `9007199254740992`},
		{name: "exponent", src: `1e300 * 10`, want: `1e301`},
		{name: "tiny", src: `5e-324`, want: `5e-324`},
		{name: "NaN-is-null", src: `NaN`, want: `null`},
		{name: "Infinity-is-null", src: `-Infinity`, want: `null`},
		{name: "true", src: `1 < 2`, want: `true`},
		{name: "null", src: `null`, want: `null`},
		{name: "undefined-is-null", src: `undefined`, want: `null`},
		{name: "no-completion-value", src: `var x = 1;`, want: `null`},
		{name: "declarations-only", src: `function f() {} class C {}`, want: `null`},
		{name: "last-expression", src: `var a = 2; let b = 3; a * b`, want: `6`},
		{name: "if-completion", src: `if (true) { "yes" } else { "no" }`, want: `"yes"`},
		{name: "loop-completion", src: `let s = 0; for (let i = 0; i < 10; i++) s += i; s`, want: `45`},
		{name: "function-is-null", src: `(function () {})`, want: `null`},
		{name: "symbol-is-null", src: `Symbol("x")`, want: `null`},
		{name: "string", src: `"hello"`, want: `"hello"`},
		{name: "empty-string", src: `""`, want: `""`},
		{name: "string-escapes", src: `"q\"b\\n\n\t\u0001"`, want: `"q\"b\\n\n\t\u0001"`},
		{name: "string-nul", src: `"a\u0000b"`, want: `"a\u0000b"`},
		{name: "unicode-bmp", src: `"héllo wörld 中文 ñ"`, want: `"héllo wörld 中文 ñ"`},
		{name: "unicode-astral", src: `"😀🎉𝄞"`, want: `"😀🎉𝄞"`},
		{name: "unicode-escapes-in-source", src: `"\u00e9\u{1F600}"`, want: `"é😀"`},
		{name: "unicode-combining", src: `"e\u0301".length`, want: `2`},
		{name: "unicode-length", src: `"😀".length + "é".length`, want: `3`},
		{name: "lone-high-surrogate", src: `"\ud800"`, check: loneSurrogate(`"\ud800"`)},
		{name: "lone-low-surrogate", src: `"a\udc00b"`, check: loneSurrogate(`"a\udc00b"`)},
		{name: "surrogate-from-charcode", src: `String.fromCharCode(0xD83D) + "x"`, check: loneSurrogate(`"\ud83dx"`)},
		{name: "paired-surrogates", src: `"\ud83d\ude00"`, want: `"😀"`},
		{name: "array", src: `[1, "a", null, true, [2]]`, want: `[1, "a", null, true, [2]]`},
		{name: "sparse-array", src: `[1, , 3]`, want: `[1, null, 3]`},
		{name: "array-undefined-and-functions", src: `[undefined, function () {}, Symbol()]`, want: `[null, null, null]`},
		{name: "object", src: `({a: 1, b: "two"})`, want: `{"a": 1, "b": "two"}`},
		{name: "object-drops-undefined", src: `({a: undefined, b: function () {}, c: 1})`, want: `{"c": 1}`},
		{name: "nested", src: `({a: {b: [1, 2, {c: null, d: [[[]]]}]}})`, want: `{"a": {"b": [1, 2, {"c": null, "d": [[[]]]}]}}`},
		{name: "key-order", src: `({z: 1, a: 2, 1: 3})`, check: exactJSON(`{"1":3,"z":1,"a":2}`)},
		{name: "unicode-keys", src: `({"ключ": "значение", "🔑": 1})`, want: `{"ключ": "значение", "🔑": 1}`},
		{name: "date", src: `new Date(0)`, want: `"1970-01-01T00:00:00.000Z"`},
		{name: "map-and-set-are-empty-objects", src: `[new Map([[1, 2]]), new Set([1])]`, want: `[{}, {}]`},
		{name: "typed-array", src: `new Uint8Array([1, 2])`, want: `{"0": 1, "1": 2}`},
		{name: "toJSON", src: `({toJSON() { return {x: 42} }})`, want: `{"x": 42}`},
		{name: "boxed-primitives", src: `[new Number(1), new String("s"), new Boolean(false)]`, want: `[1, "s", false]`},
		{name: "regexp-is-empty-object", src: `/a/g`, want: `{}`},
		{name: "error-object-value", src: `new Error("not thrown")`, want: `{}`},
		{name: "class-instance", src: `class P { constructor() { this.x = 1 } get y() { return 2 } }; new P()`, want: `{"x": 1}`},
		{name: "bigint-is-TypeError", src: `10n`, check: isJsError("TypeError", "BigInt")},
		{name: "bigint-nested-is-TypeError", src: `({a: [1n]})`, check: isJsError("TypeError", "BigInt")},
		{name: "bigint-to-string", src: `(2n ** 100n).toString()`, want: `"1267650600228229401496703205376"`},
		{name: "cyclic-is-TypeError", src: `var o = {}; o.o = o; o`, check: isJsError("TypeError", "circular")},
		{name: "large-array", src: `Array.from({length: 100000}, (_, i) => i).length`, want: `100000`},
		{name: "large-result", src: `"x".repeat(1 << 20)`, check: sizedString(1 << 20)},
		{name: "result-just-below-64k", src: `"x".repeat(65536 - 3)`, check: sizedString(65536 - 3)},
		{name: "result-exactly-64k", src: `"x".repeat(65536 - 2)`, check: sizedString(65536 - 2)},
		{name: "result-just-above-64k", src: `"x".repeat(65536 - 1)`, check: sizedString(65536 - 1)},
		{name: "math-random-differs", src: `Math.random() !== Math.random()`, want: `true`},
		{name: "date-now-is-real-clock", src: `Date.now() > Date.UTC(2024, 0, 1)`, want: `true`},
		{name: "globalThis", src: `typeof globalThis + typeof host`, want: `"objectobject"`},
		{name: "strict-mode-directive", src: `"use strict"; (function () { return this })()`, want: `null`},
		{name: "sloppy-by-default", src: `(function () { return typeof this })()`, want: `"object"`},
		// JSON.parse reads short integers on a fast path (guest patch 08):
		// the values, -0 and the syntax it accepts must be the general path's.
		{name: "JSON.parse-numbers", src: `["0", "-0", "7", "-7", "999999999", "-999999999", "1234567890",
			"-2147483648", "2147483648", "12345678901234567890", "1.5", "-1.5e3", "1E2", "0.0", "-0.0", "5e-324",
			" 42 ", "[1,-2,30]", '{"a":1,"b":-0,"c":[0,-1]}'].map(function (s) {
				var v = JSON.parse(s);
				return JSON.stringify(v) + (Object.is(v, -0) ? " -0" : "") +
					(v && typeof v === "object" && Object.is(v.b, -0) ? " b=-0" : "");
			})`,
			check: exactJSON(`["0","0 -0","7","-7","999999999","-999999999","1234567890","-2147483648",` +
				`"2147483648","12345678901234567000","1.5","-1500","100","0","0 -0","5e-324","42","[1,-2,30]",` +
				`"{\"a\":1,\"b\":0,\"c\":[0,-1]} b=-0"]`)},
		{name: "JSON.parse-number-syntax", src: `["01", "00", "-", "+1", "1_0", "1n", "--1", "1.", ".5", "1e", "0x10",
			"Infinity", "-Infinity", "1 2", "[1,]", "١"].map(function (s) {
				try { return "parsed " + JSON.parse(s) } catch (e) { return e.name }
			})`,
			// "1." is QuickJS's own leniency (its general path), kept as is.
			check: exactJSON(`["SyntaxError","SyntaxError","SyntaxError","SyntaxError","SyntaxError",` +
				`"SyntaxError","SyntaxError","parsed 1","SyntaxError","SyntaxError","SyntaxError",` +
				`"SyntaxError","SyntaxError","SyntaxError","SyntaxError","SyntaxError"]`)},
		{name: "JSON.parse-sums", src: `var t = 0; for (var i = -1000; i <= 1000; i += 7) t += JSON.parse("[" + i + "," + (i * 99991) + "]")[1] - i; t`,
			want: `-71492850`},
		{name: "state-persists-across-evals", run: func(t *testing.T, c *cctx) {
			c.mustEval(`var counter = 1; let lex = 10; globalThis.g = 100`)
			assert.JSONEq(t, `111`, string(c.mustEval(`counter + lex + g`)))
			assert.JSONEq(t, `2`, string(c.mustEval(`++counter`)))
		}},
		{name: "instances-are-isolated", run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.secret = 42; Object.prototype.polluted = 1; Array.prototype.push = null`)
			other := c.newInstance(nil)
			res, err := other.Eval(t.Context(), `[typeof secret, typeof ({}).polluted, typeof [].push]`)
			assert.NoError(t, err)
			assert.JSONEq(t, `["undefined", "undefined", "function"]`, string(res))
		}},
	})
}

// loneSurrogate: the result is JSON with the lone surrogate escaped (as
// JSON.stringify writes it), so that the document stays valid UTF-8.
func loneSurrogate(want string) checkFn {
	return func(t tT, c *cctx, res json.RawMessage, err error) {
		t.Helper()
		exactJSON(want)(t, c, res, err)
		var s string
		assert.NoError(t, json.Unmarshal(res, &s))
	}
}

// exactJSON: the result bytes are exactly want.
func exactJSON(want string) checkFn {
	return func(t tT, _ *cctx, res json.RawMessage, err error) {
		t.Helper()
		if assert.NoError(t, err) {
			assert.Equal(t, want, string(res))
		}
	}
}

// sizedString: the result is a JSON string of n x's.
func sizedString(n int) checkFn {
	return func(t tT, _ *cctx, res json.RawMessage, err error) {
		t.Helper()
		if !assert.NoError(t, err) {
			return
		}
		var s string
		if assert.NoError(t, json.Unmarshal(res, &s)) {
			assert.Equal(t, n, len(s))
			assert.Equal(t, "", strings.Trim(s, "x"))
		}
	}
}

// TestErrors: a JS exception is a *JsError with name, message and stack.
func TestErrors(t *testing.T) {
	runCases(t, []tcase{
		{name: "TypeError-null-property", src: `null.foo`, check: all(
			isJsError("TypeError", "cannot read property 'foo' of null"), hasStack("<eval>"))},
		{name: "TypeError-async", src: `await 0; null.foo`, async: true, check: all(
			isJsError("TypeError", "cannot read property 'foo' of null"), hasStack("<eval>"))},
		{name: "SyntaxError", src: `1 +`, check: all(isJsError("SyntaxError", ""), hasStack(""))},
		{name: "SyntaxError-async", src: `let = = 1`, async: true, check: isJsError("SyntaxError", "")},
		{name: "SyntaxError-await-in-sync", src: `await 1`, check: isJsError("SyntaxError", "")},
		{name: "ReferenceError", src: `notDefined + 1`, check: all(isJsError("ReferenceError", "notDefined"), hasStack("<eval>"))},
		{name: "RangeError", src: `new Array(-1)`, check: isJsError("RangeError", "")},
		{name: "URIError", src: `decodeURIComponent("%")`, check: isJsError("URIError", "")},
		{name: "EvalError", src: `throw new EvalError("ev")`, check: isJsError("EvalError", "ev")},
		{name: "Error-with-message", src: `throw new Error("plain")`, check: all(isJsError("Error", "plain"), hasStack("<eval>"))},
		{name: "Error-empty-message", src: `throw new Error()`, check: isJsError("Error", "")},
		{name: "Error-unicode-message", src: `throw new Error("ошибка 😀 \ud800")`, check: isJsError("Error", "ошибка 😀")},
		{name: "Error-cause", src: `throw new Error("outer", {cause: new Error("inner")})`, check: isJsError("Error", "outer")},
		{name: "AggregateError", src: `throw new AggregateError([new Error("a")], "agg")`, check: isJsError("AggregateError", "agg")},
		{name: "stack-has-function-names", src: "function outer() { inner() }\nfunction inner() { null.x }\nouter()", check: all(
			isJsError("TypeError", ""), hasStack("inner"), hasStack("outer"))},
		{name: "thrown-string", src: `throw "boom"`, check: all(isJsError("Error", "boom"), noStack)},
		{name: "thrown-number", src: `throw 42`, check: all(isJsError("Error", "42"), noStack)},
		{name: "thrown-object", src: `throw {a: 1}`, check: all(isJsError("Error", "[object Object]"), noStack)},
		{name: "thrown-object-toString", src: `throw {toString() { return "custom" }}`, check: isJsError("Error", "custom")},
		{name: "thrown-null", src: `throw null`, check: isJsError("Error", "null")},
		{name: "thrown-undefined", src: `throw undefined`, check: isJsError("Error", "undefined")},
		{name: "thrown-symbol", src: `throw Symbol("s")`, check: isJsError("Error", "")},
		{name: "thrown-bigint", src: `throw 12n`, check: isJsError("Error", "12")},
		{name: "thrown-in-async-mode", src: `throw "async boom"`, async: true, check: isJsError("Error", "async boom")},
		{name: "custom-error-class", src: `
			class MyError extends Error {
				constructor(m) { super(m); this.name = "MyError" }
			}
			throw new MyError("mine")`, check: all(isJsError("MyError", "mine"), hasStack("MyError"))},
		{name: "custom-error-prototype-name", src: `
			class ValidationError extends TypeError {}
			ValidationError.prototype.name = "ValidationError"
			throw new ValidationError("bad input")`, check: isJsError("ValidationError", "bad input")},
		{name: "error-name-not-string", src: `var e = new Error("m"); e.name = 42; throw e`, check: isJsError("42", "m")},
		{name: "error-name-empty", src: `var e = new Error("m"); e.name = ""; throw e`, check: isJsError("Error", "m")},
		{name: "error-message-object", src: `var e = new Error(); e.message = {toString() { return "obj" }}; throw e`, check: isJsError("Error", "obj")},
		{name: "hostile-name-getter", src: `
			var e = new Error("x")
			Object.defineProperty(e, "name", {get() { throw new Error("getter") }})
			throw e`, check: isJsError("Error", "x")},
		{name: "hostile-message-getter", src: `
			var e = new TypeError("x")
			Object.defineProperty(e, "message", {get() { throw new Error("getter") }})
			throw e`, check: isJsError("TypeError", "")},
		{name: "hostile-stack-getter", src: `
			var e = new RangeError("x")
			Object.defineProperty(e, "stack", {get() { throw 1 }})
			throw e`, check: all(isJsError("RangeError", "x"), noStack)},
		{name: "hostile-toString", src: `throw {toString() { throw new Error("no") }}`, check: isJsError("Error", "")},
		{name: "hostile-proxy-thrown", src: `throw new Proxy({}, {get() { throw 1 }})`, check: isJsError("Error", "")},
		{name: "hostile-getters-on-plain-object", src: `throw {get name() { throw 1 }, get message() { throw 2 }}`, check: isJsError("Error", "")},
		{name: "hostile-looping-stack-getter", timeout: hangTimeout, after: usableOrDead, src: `
			var e = new Error("x")
			Object.defineProperty(e, "stack", {get() { for (;;) {} }})
			throw e`, check: isDeadline},
		{name: "hostile-name-getter-on-prototype", src: `
			Object.defineProperty(Error.prototype, "name", {get() { throw 1 }})
			throw new Error("proto")`, check: isJsError("Error", "proto")},
		{name: "huge-message", src: `throw new Error("m".repeat(1 << 20))`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			isJsError("Error", "mmmm")(t, c, res, err)
		}},
		{name: "errors-As-and-not-RuntimeError", src: `null.x`, check: func(t tT, _ *cctx, res json.RawMessage, err error) {
			var re *kafig.RuntimeError
			assert.False(t, errors.As(err, &re), "a JS error is not a RuntimeError")
			assert.NotErrorIs(t, err, kafig.ErrInstanceDead)
		}},
		{name: "caught-errors-are-values", src: `try { null.x } catch (e) { [e.name, e instanceof TypeError] }`, want: `["TypeError", true]`},
		{name: "error-after-error-instance-usable", run: func(t *testing.T, c *cctx) {
			for range 20 {
				_, err := c.eval(`throw new Error("again")`)
				isJsError("Error", "again")(t, c, nil, err)
			}
		}},
	})
}

// all passes when every check passes.
func all(checks ...checkFn) checkFn {
	return func(t tT, c *cctx, res json.RawMessage, err error) {
		t.Helper()
		for _, ch := range checks {
			ch(t, c, res, err)
		}
	}
}

// hasStack: the JsError has a stack containing sub.
func hasStack(sub string) checkFn {
	return func(t tT, _ *cctx, _ json.RawMessage, err error) {
		t.Helper()
		je, ok := err.(*kafig.JsError)
		if !ok {
			return // reported by isJsError
		}
		if assert.NotNil(t, je.Stack, "the JsError has a stack") {
			assert.Contains(t, *je.Stack, sub)
		}
	}
}

// noStack: the JsError has no stack (a thrown value that is not an Error).
func noStack(t tT, _ *cctx, _ json.RawMessage, err error) {
	t.Helper()
	if je, ok := err.(*kafig.JsError); ok {
		assert.Nil(t, je.Stack, "no stack for a thrown non-Error")
	}
}
