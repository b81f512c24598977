//go:build cgo

package wasmtimebackend

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// deepScripts recurse as deep as they can through JavaScript, builtins, the
// parser and the regexp engine. Each must end in QuickJS's stack overflow
// error, never in a trap.
var deepScripts = []string{
	`function f(){ return f() } f()`,
	`function f(n){ return n ? 1 + f(n-1) : 0 } f(1e9)`,
	`function f(a,b,c,d,e,g,h,i,j,k){ let l1=a,l2=b,l3=c,l4=d,l5=e,l6=g,l7=h,l8=i; return f(l1,l2,l3,l4,l5,l6,l7,l8,j,k) + l1 } f(1,2,3,4,5,6,7,8,9,10)`,
	`try { (function f(){ f() })() } catch (e) { throw e }`,
	`JSON.parse("[".repeat(200000))`,
	`JSON.parse('{"a":'.repeat(200000))`,
	`eval("(".repeat(200000))`,
	`eval("[".repeat(200000))`,
	`eval("{".repeat(200000))`,
	`eval("f(".repeat(200000))`,
	`eval("-".repeat(200000) + "1")`,
	`eval("a=".repeat(200000) + "1")`,
	`eval("x?".repeat(100000) + "1" + ":1".repeat(100000))`,
	`eval("function f(){".repeat(100000))`,
	`eval("(()=>".repeat(100000) + "1" + ")".repeat(100000))`,
	"eval('`${'.repeat(100000))",
	`eval("!".repeat(200000) + "1")`,
	`eval("~".repeat(200000) + "1")`,
	`eval("typeof ".repeat(200000) + "1")`,
	`eval("void ".repeat(200000) + "1")`,
	`eval("new ".repeat(200000) + "f")`,
	`eval("delete ".repeat(200000) + "1")`,
	`eval("x=>".repeat(100000) + "1")`,
	`eval("async x=>".repeat(100000) + "1")`,
	`eval("[...".repeat(100000))`,
	`eval("({a:".repeat(100000))`,
	`eval("let [".repeat(100000))`,
	`eval("[".repeat(100000) + "] = 1")`,
	`eval("class A extends (".repeat(100000))`,
	`eval("a?.(".repeat(100000))`,
	`eval("if (1) ".repeat(100000) + ";")`,
	`eval("while (0) ".repeat(100000) + ";")`,
	`eval("with (0) ".repeat(100000) + ";")`,
	`eval("a: ".repeat(1000) + "for(;;) break a;")`,
	`eval("1+(".repeat(100000))`,
	`eval("1**".repeat(100000) + "1")`,
	`new RegExp("(".repeat(200000))`,
	`new RegExp("(?:".repeat(200000) + "a" + ")".repeat(200000))`,
	`new RegExp("(a|".repeat(100000) + ")".repeat(100000))`,
	`new RegExp("[".repeat(200000))`,
	`new RegExp("(?:a{1,2}".repeat(5000) + ")".repeat(5000)).exec("a".repeat(10000))`,
	`new RegExp("(?=".repeat(100000) + "a" + ")".repeat(100000)).exec("a")`,
	`new RegExp("(?:a|".repeat(100000) + ")".repeat(100000)).exec("b")`,
	`/(a)\1*$/.exec("a".repeat(200000))`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; JSON.stringify(a)`,
	`let o = {}; for (let i = 0; i < 100000; i++) o = {o}; JSON.stringify(o)`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; JSON.stringify(a, null, 2)`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; JSON.stringify(a, (k, v) => v)`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; JSON.stringify(a, ["x"])`,
	`JSON.parse("[".repeat(20000) + "]".repeat(20000), (k, v) => v)`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; String(a)`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; a.flat(Infinity)`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; a.join()`,
	`let a = []; for (let i = 0; i < 100000; i++) a = [a]; a.toLocaleString()`,
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); p.x`,
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); Object.keys(p)`,
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); p.x = 1`,
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); "x" in p`,
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); delete p.x`,
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); Object.getOwnPropertyDescriptor(p, "x")`,
	`let p = function(){}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); p()`,
	`let p = function(){}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); new p()`,
	`let p = []; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); Array.isArray(p)`,
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); JSON.stringify(p)`,
	`let f = function(){}; for (let i = 0; i < 3000; i++) f = f.bind(null); f()`,
	`const o = {}; o.toString = () => "" + o; "" + o`,
	`const o = { get x() { return this.x } }; o.x`,
	`const p = new Proxy({}, { get(t, k, r) { return r[k] } }); p.x`,
	`function f(n){ return eval("f(n+1)") } f(0)`,
	`function f(){ return new Function("f", "return f(f)")(f) } f()`,
	`function c(a, b){ return [2, 1].sort(c) } [2, 1].sort(c)`,
	`function r(){ return "a".replace(/a/, r) } r()`,
	`function r(){ return [1].map(r) } r()`,
	`function r(){ return Reflect.apply(r, null, []) } r()`,
	`function r(){ return Array.from({length: 1}, r) } r()`,
	`function r(){ return JSON.parse("[1]", r) } r()`,
	`function r(){ return JSON.stringify({toJSON: r}) } r()`,
	`function r(){ return String.raw({raw: {length: 1, get 0(){ return r() }}}) } r()`,
	`function* g(){ yield* g() } [...g()]`,
	`async function f(){ return f() } f(); 1`,
	`class A { constructor(){ new A() } } new A()`,
	`let o = {}; for (let i = 0; i < 100000; i++) o = Object.create(o); o.x`,
	`let o = {}; for (let i = 0; i < 100000; i++) o = Object.create(o); o instanceof Object`,
	`let e = new Error(); for (let i = 0; i < 20000; i++) e = new Error("x", {cause: e}); String(e)`,
	`function f(){ return [...f()] } f()`,
	`function f(){ return {...f()} } f()`,
	`function f(){ return new Promise(f) } f()`,
	`JSON.stringify(eval("[".repeat(20000) + "]".repeat(20000)))`,
}

// guestTraps are scripts that the guest (QuickJS 2025-04-26 + kafig shim)
// does not stop before the native stack runs out, whatever the limits: the
// recursion has no QuickJS stack check, or never ends. They trap; the test
// checks that only their instance dies.
var guestTraps = []string{
	// js_proxy_getPrototypeOf recurses through the proxy chain without a
	// stack check: the depth is the chain's length.
	`let p = {}; for (let i = 0; i < 100000; i++) p = new Proxy(p, {}); Object.getPrototypeOf(p)`,
}

type stackOutcome struct {
	clean    bool // no trap: the guest returned a status
	overflow bool // the status is stack_overflow
	status   abi.Status
	message  string // the trap, or the result
}

// runDeep runs src in a fresh instance of the guest compiled with the given
// max wasm stack, with QuickJS stack limit js.
func runDeep(t *testing.T, maxWasmStack int, js uint32, src string) stackOutcome {
	m := guestModule(t, WithMaxWasmStack(maxWasmStack))
	g := newJSGuest(t, m, js)
	st, res, err := g.eval(src)
	if err != nil {
		return stackOutcome{message: err.Error()}
	}
	o := stackOutcome{status: st, message: res}
	o.clean = true
	o.overflow = st == abi.StatusStackOverflow
	if len(o.message) > 160 {
		o.message = o.message[:160]
	}
	return o
}

// TestGuestDeepRecursion: with the default settings every deep script ends
// in QuickJS's stack overflow error and the instance stays usable.
func TestGuestDeepRecursion(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	defer closeGuestModules()
	b := New()
	js := b.(interface{ JSStackLimit() uint32 }).JSStackLimit()
	for _, src := range deepScripts {
		start := time.Now()
		o := runDeep(t, DefaultMaxWasmStack, js, src)
		name := src
		if len(name) > 60 {
			name = name[:60]
		}
		if !assert.True(t, o.clean, "%s: status %v: %s", src, o.status, o.message) {
			continue
		}
		t.Logf("%-60s -> %s (%v)", name, o.status.Name(), time.Since(start).Round(time.Millisecond))
	}
}

// TestGuestTraps: a trap kills its instance only; the process and the other
// instances go on.
func TestGuestTraps(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	defer closeGuestModules()
	m := guestModule(t)
	other := newJSGuest(t, m, DefaultJSStackLimit)
	for _, src := range guestTraps {
		g := newJSGuest(t, m, DefaultJSStackLimit)
		_, _, err := g.eval(src)
		if err == nil {
			t.Logf("no longer traps (fixed in the guest?): %s", src)
			continue
		}
		t.Logf("%s: %v", src, err)
		_, _, err = g.eval("1")
		assert.ErrorIs(t, err, backend.ErrDead)
		st, res, err := other.eval("[1, 2].map(x => x * 2)")
		assert.NoError(t, err)
		assert.Equal(t, abi.StatusOK, st)
		assert.Equal(t, "[2,4]", res)
	}
}

// TestGuestStackSweep measures, for each deep script and a given max wasm
// stack, the largest QuickJS stack limit that still ends in a clean status
// rather than a trap. KAFIG_STACK_SWEEP=<max wasm stack in KiB> runs it.
func TestGuestStackSweep(t *testing.T) {
	kib, _ := strconv.Atoi(os.Getenv("KAFIG_STACK_SWEEP"))
	if kib == 0 {
		t.Skip("KAFIG_STACK_SWEEP=<KiB> runs the sweep")
	}
	defer closeGuestModules()
	ws := kib << 10
	worst := uint32(abi.MaxJSStack)
	for _, src := range deepScripts {
		lo, hi := uint32(minJSStack), uint32(abi.MaxJSStack) // lo clean (assumed), hi unknown
		if o := runDeep(t, ws, hi, src); o.clean {
			lo = hi
		} else {
			if o := runDeep(t, ws, lo, src); !o.clean {
				t.Errorf("%s traps even at %d KiB: %s", src, lo>>10, o.message)
				continue
			}
			for hi-lo > 4<<10 {
				mid := (lo + hi) / 2 &^ 1023
				if runDeep(t, ws, mid, src).clean {
					lo = mid
				} else {
					hi = mid
				}
			}
		}
		worst = min(worst, lo)
		name := src
		if len(name) > 70 {
			name = name[:70]
		}
		t.Logf("max wasm stack %d KiB: clean up to a %4d KiB QuickJS stack (ratio %.1f): %s", kib, lo>>10, float64(ws)/float64(lo), name)
	}
	t.Logf("max wasm stack %d KiB: worst script clean up to a %d KiB QuickJS stack (ratio %.1f)", kib, worst>>10, float64(ws)/float64(worst))
}
