package guest_test

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/guest"
	"github.com/kafig-dev/kafig/guest/wasmguard"
)

const mib = 1 << 20

func TestImportsAreExactlyTheABI(t *testing.T) {
	r := wazero.NewRuntime(t.Context())
	defer r.Close(t.Context())
	cm, err := r.CompileModule(t.Context(), []byte(guest.WASM))
	require.NoError(t, err)
	var got []string
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		got = append(got, mod+"."+name)
	}
	var want []string
	for i := abi.Import(0); int(i) < abi.ImportCount; i++ {
		want = append(want, abi.ImportModule+"."+i.Name())
	}
	for _, n := range strings.Fields(abi.WASIImports) {
		want = append(want, abi.WASIModule+"."+n)
	}
	sort.Strings(got)
	sort.Strings(want)
	assert.Equal(t, want, got)
	assert.Empty(t, cm.ImportedMemories())

	exports := cm.ExportedFunctions()
	for e := abi.Export(0); int(e) < abi.ExportCount; e++ {
		f, ok := exports[e.Name()]
		require.True(t, ok, "missing export %s", e.Name())
		assert.Len(t, f.ParamTypes(), len(e.Signature().Params), e.Name())
		assert.Len(t, f.ResultTypes(), len(e.Signature().Results), e.Name())
	}
	assert.NotContains(t, exports, "_start")
	assert.NotContains(t, exports, "_initialize")
	assert.NotContains(t, exports, "wizer.initialize")
}

func TestSizeAndHash(t *testing.T) {
	assert.Less(t, len(guest.WASM), 1<<20, "the guest should stay under 1 MiB")
	sum, err := os.ReadFile("kafig.wasm.sha256")
	require.NoError(t, err)
	assert.Contains(t, string(sum), " kafig.wasm")
}

func TestABIVersion(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	assert.EqualValues(t, abi.Version, g.call(abi.ExportABIVersion))
	assert.EqualValues(t, abi.ExchangeDataSize, g.u32(abi.ExchDataCap))
	assert.EqualValues(t, 32*mib, g.u64(abi.ExchHeapLimit))
	assert.NotZero(t, g.u64(abi.ExchHeapUsed))
}

func TestEvalValues(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	for _, c := range []struct{ src, want string }{
		{`1 + 2`, `3`},
		{`"a" + "b"`, `"ab"`},
		{`({a: [1, null, "x"]})`, `{"a":[1,null,"x"]}`},
		{`undefined`, `null`},
		{`(function(){})`, `null`},
		{`var x = 40; x`, `40`},
		{`x + 2`, `42`},             // globals persist across evals
		{`Promise.resolve(7)`, `7`}, // a fulfilled promise is unwrapped in sync mode
		{`typeof host`, `"object"`},
		{`Object.isFrozen(host)`, `true`},
		{`typeof require`, `"undefined"`},
		{`typeof Atomics`, `"undefined"`},
		{`"x".repeat(70000).length`, `70000`},
	} {
		assert.JSONEq(t, c.want, g.mustEval(c.src, 0), c.src)
	}
	// lone surrogates come back escaped: the result is always valid UTF-8
	assert.Equal(t, `"\ud800"`, g.mustEval(`"\ud800"`, 0))
	// a result larger than the exchange data area
	res := g.mustEval(`"y".repeat(100000)`, 0)
	assert.Len(t, res, 100002)
	// a source larger than the data area
	big := "1+" + strings.Repeat(" ", 80000) + "1"
	assert.Equal(t, "2", g.mustEval(big, 0))
}

func TestEvalErrors(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	st, res := g.eval(`null.foo`, 0)
	require.Equal(t, abi.StatusJSError, st)
	e := decodeErr(t, res)
	assert.Equal(t, "TypeError", e.Name)
	assert.Contains(t, e.Message, "foo")
	require.NotNil(t, e.Stack)
	assert.Contains(t, *e.Stack, "<eval>")

	st, res = g.eval(`function (`, 0)
	require.Equal(t, abi.StatusJSError, st)
	assert.Equal(t, "SyntaxError", decodeErr(t, res).Name)

	st, res = g.eval(`throw 42`, 0)
	require.Equal(t, abi.StatusJSError, st)
	assert.Equal(t, jsErr{Name: "Error", Message: "42"}, decodeErr(t, res))

	st, res = g.eval(`throw {toString(){ throw 1 }}`, 0)
	require.Equal(t, abi.StatusJSError, st)
	assert.Equal(t, "Error", decodeErr(t, res).Name)

	st, res = g.eval(`class E extends Error { get name(){ throw new Error("no") } }; throw new E("m")`, 0)
	require.Equal(t, abi.StatusJSError, st)
	assert.Equal(t, "m", decodeErr(t, res).Message)

	st, res = g.eval(`1n`, 0) // BigInt has no JSON form
	require.Equal(t, abi.StatusJSError, st)
	assert.Equal(t, "TypeError", decodeErr(t, res).Name)

	st, res = g.eval(`new Promise(() => {})`, 0)
	assert.Equal(t, abi.StatusRuntimeError, st)
	assert.Contains(t, res, "WithAsync")

	assert.Equal(t, "2", g.mustEval(`1+1`, 0))
}

// deepest finds the deepest plain recursion that succeeds.
func TestStackOverflow(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	for _, src := range []string{
		`function f(){ return f() } f()`,
		`function f(n){ return n ? 1 + f(n-1) : 0 } f(1e9)`,
		`try { (function f(){ f() })() } catch (e) { throw e }`,
		`JSON.parse("[".repeat(200000))`,
		`eval("(".repeat(200000))`,
		`new RegExp("(?:".repeat(200000))`,
		`let a = []; for (let i = 0; i < 20000; i++) a = [a]; JSON.stringify(a)`,
		`const o = {}; o.toString = () => "" + o; "" + o`,
	} {
		start := time.Now()
		st, res := g.eval(src, 0)
		t.Logf("%-70s %v", src, time.Since(start))
		assert.Equal(t, abi.StatusStackOverflow, st, "%s: %s", src, res)
		assert.Equal(t, "2", g.mustEval(`1+1`, 0), "usable after %s", src)
	}
	// a caught overflow the script recovers from is not an error
	assert.Equal(t, `"caught"`, g.mustEval(`try { (function f(){ f() })() } catch (e) { "caught" }`, 0))

	depth := g.mustEval(`let d = 0; function r(){ d++; r() } try { r() } catch (e) {} d`, 0)
	t.Logf("deepest plain JS recursion (default %d KiB QuickJS stack): %s frames", abi.DefaultJSStack/1024, depth)
}

func TestMemoryLimit(t *testing.T) {
	g := newGuest(t, 8*mib, 0)
	for _, src := range []string{
		`let a = []; for (;;) a.push(new Array(1000).fill(1))`,
		`{ let a = []; for (;;) a.push("x".repeat(100000) + a.length) }`,
		`try { let a = []; for (;;) a.push({x: 1}) } catch (e) { "swallowed" }`,
		`try { let a = []; for (;;) a.push([1,2,3]) } catch (e) { let b = []; for (;;) b.push([1]) }`,
		`new ArrayBuffer(64 * 1024 * 1024)`,
		`"x".repeat(2**28)`,
		`{ let s = "ab".repeat(1000); let r = []; for (;;) r.push(new RegExp(s + Math.random())) }`,
	} {
		st, res := g.eval(src, 0)
		assert.Equal(t, abi.StatusMemoryLimit, st, "%s: %s", src, res)
		assert.Equal(t, "2", g.mustEval(`1+1`, 0), "usable after %s", src)
	}
	assert.Less(t, g.u64(abi.ExchHeapUsed), uint64(8*mib))
}

func TestInterrupt(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	for _, src := range []string{
		`while (true) {}`,
		`try { while (true) {} } catch (e) {}`,
		`try { while (true) {} } finally { while (true) {} }`,
		`for (;;) { try { for (;;) {} } catch (e) {} }`,
		`Array.prototype.includes.call({length: 2**53 - 1}, 1)`,
		`Array.prototype.indexOf.call({length: 2**53 - 1}, 1)`,
		`Array.prototype.lastIndexOf.call({length: 2**53 - 1}, 1)`,
		`Array.prototype.join.call({length: 2**53 - 1}, "")`,
		`Array.prototype.copyWithin.call({length: 2**53 - 1}, 0, 1)`,
		`Array.prototype.reverse.call({length: 2**53 - 1})`,
		`/(a+)+b/.test("a".repeat(40))`,
		`let x = 3n ** 30000n; for (;;) x * x`,
		`"a".repeat(4e6).indexOf("a".repeat(2e5) + "b")`,
		`"a".repeat(4e6).lastIndexOf("b" + "a".repeat(2e5))`,
		`"a".repeat(4e6).includes("a".repeat(2e5) + "b")`,
		`"a".repeat(4e6).split("a".repeat(2e5) + "b")`,
	} {
		g.host.polls.Store(0)
		g.host.stopAfter = 5
		start := time.Now()
		st, res := g.eval(src, 0)
		assert.Equal(t, abi.StatusCPULimit, st, "%s: %s", src, res)
		t.Logf("%-60s stopped after %v", src, time.Since(start))
		g.host.stopAfter = 0
		assert.Equal(t, "2", g.mustEval(`1+1`, 0), "usable after %s", src)
	}
}

func TestInterruptInsidePromiseJob(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	g.host.stopAfter = 3
	st, res := g.eval(`
		let tries = 0;
		async function spin() { for (;;) {} }
		async function retry() { for (;;) { try { await spin() } catch (e) { tries++ } } }
		await retry();`, abi.FlagAsync)
	assert.Equal(t, abi.StatusCPULimit, st, res)
	g.host.stopAfter = 0
	// nothing the stopped script queued runs later
	assert.Equal(t, "0", g.mustEval(`tries`, abi.FlagAsync))
}

func TestAsyncRPCFlow(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	st, _ := g.eval(`
		const [a, b] = await Promise.all([host.rpc("add", {x: 1}), host.rpc("add", {x: 2})]);
		a + b`, abi.FlagAsync)
	require.Equal(t, abi.StatusPending, st)
	require.Len(t, g.host.async, 2)
	assert.Equal(t, asyncCall{1, "add", `{"x":1}`}, g.host.async[0])
	assert.EqualValues(t, 2, g.u32(abi.ExchPending))
	st, _ = g.settle(g.host.async[1].id, `20`, false)
	require.Equal(t, abi.StatusPending, st)
	st, res := g.settle(g.host.async[0].id, `10`, false)
	require.Equal(t, abi.StatusOK, st, res)
	assert.Equal(t, "30", res)
	assert.EqualValues(t, 0, g.u32(abi.ExchPending))

	// an error reply rejects
	g.host.async = nil
	st, _ = g.eval(`try { await host.rpc("x") } catch (e) { "caught: " + e.message }`, abi.FlagAsync)
	require.Equal(t, abi.StatusPending, st)
	st, res = g.settle(g.host.async[0].id, `kafig: unknown method "x"`, true)
	require.Equal(t, abi.StatusOK, st)
	assert.Equal(t, `"caught: kafig: unknown method \"x\""`, res)

	// a promise that can never settle is reported, not waited on
	st, res = g.eval(`await new Promise(() => {})`, abi.FlagAsync)
	assert.Equal(t, abi.StatusRuntimeError, st)
	assert.Contains(t, res, "never settle")

	// host.rpc in sync mode rejects; the refusal is reported as unhandled
	g.host.rejections = nil
	st, _ = g.eval(`host.rpc("x"); 1`, 0)
	assert.Equal(t, abi.StatusOK, st)
	require.Len(t, g.host.rejections, 1)
	assert.Contains(t, g.host.rejections[0], "WithAsync")

	// unknown settle ids are bad input, not crashes
	assert.Equal(t, abi.StatusBadInput, abi.Status(g.call(abi.ExportRPCSettle, 999, uint64(g.xch+abi.ExchHeaderSize), 0, 0)))
}

func TestSyncRPC(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	g.host.syncReply = func(method, params string) (uint32, string) {
		switch method {
		case "echo":
			return abi.RPCOK, params
		case "big":
			return abi.RPCOK, `"` + strings.Repeat("z", 100000) + `"`
		}
		return abi.RPCError, fmt.Sprintf("kafig: unknown method %q", method)
	}
	assert.JSONEq(t, `{"a":1}`, g.mustEval(`host.rpcSync("echo", {a: 1})`, 0))
	assert.Equal(t, `null`, g.mustEval(`host.rpcSync("echo")`, 0))
	assert.Equal(t, `100000`, g.mustEval(`host.rpcSync("big").length`, 0))
	st, res := g.eval(`host.rpcSync("nope", 1)`, 0)
	require.Equal(t, abi.StatusJSError, st)
	assert.Contains(t, decodeErr(t, res).Message, `unknown method "nope"`)
	st, res = g.eval(`host.rpcSync(42)`, 0)
	require.Equal(t, abi.StatusJSError, st)
	assert.Equal(t, "TypeError", decodeErr(t, res).Name)
	st, _ = g.eval(`host.rpcSync("m".repeat(300))`, 0)
	require.Equal(t, abi.StatusJSError, st)
}

func TestEventsAndBridgeTampering(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	g.mustEval(`host.on("double", (p) => p.n * 2); host.on("later", async (p) => { await null; return p })`, 0)
	st, res := g.dispatch("double", `{"n": 21}`, 0)
	require.Equal(t, abi.StatusOK, st, res)
	assert.Equal(t, "42", res)
	st, res = g.dispatch("later", `"x"`, abi.FlagAsync)
	require.Equal(t, abi.StatusOK, st, res)
	assert.Equal(t, `"x"`, res)
	st, _ = g.dispatch("missing", `null`, 0)
	assert.Equal(t, abi.StatusNoHandler, st)
	st, _ = g.dispatch("double", `{bad json`, 0)
	assert.Equal(t, abi.StatusJSError, st)

	// host cannot be replaced or extended
	for _, src := range []string{
		`host.rpc = 1; host.rpc === 1`,
		`host = 1; host === 1`,
		`globalThis.host = 1; typeof host`,
		`host.extra = 1; "extra" in host`,
	} {
		res := g.mustEval(src, 0)
		assert.NotEqual(t, "true", res, src)
		assert.NotEqual(t, "1", res, src)
	}
	st, _ = g.eval(`"use strict"; host.rpc = 1`, 0)
	assert.Equal(t, abi.StatusJSError, st)
	st, _ = g.eval(`delete globalThis.host || (() => { throw 1 })()`, 0)
	assert.Equal(t, abi.StatusJSError, st)

	// patched Object.prototype.then, value setters and Promise do not take
	// over the async result
	assert.Equal(t, "5", g.mustEval(`
		Object.prototype.then = function (res) { res(666) };
		Object.defineProperty(Object.prototype, "value", { set(v) {}, get() { return 777 }, configurable: true });
		5`, abi.FlagAsync))
	assert.Equal(t, "6", g.mustEval(`globalThis.Promise = function(){ throw 1 }; JSON.stringify = () => "x"; 6`, abi.FlagAsync))
	assert.Equal(t, `{"a":1}`, g.mustEval(`({a: 1})`, abi.FlagAsync))
}

func TestRandomAndClock(t *testing.T) {
	a, b := newGuest(t, 32*mib, 0), newGuest(t, 32*mib, 0)
	ra, rb := a.mustEval(`Math.random()`, 0), b.mustEval(`Math.random()`, 0)
	assert.NotEqual(t, ra, rb, "two instances must not share the snapshot's seed")
	var now float64
	require.NoError(t, json.Unmarshal([]byte(a.mustEval(`Date.now()`, 0)), &now))
	assert.InDelta(t, float64(time.Now().UnixMilli()), now, 5000)
}

func TestOpcodesCounted(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	g.mustEval(`for (let i = 0; i < 1e6; i++) {}`, 0)
	assert.Greater(t, g.u64(abi.ExchOpcodes), uint64(500000))
}

func TestHeaderMatchesABI(t *testing.T) {
	h, err := os.ReadFile("src/kafig_abi.h")
	require.NoError(t, err)
	assert.Equal(t, abi.CHeader(), string(h), "regenerate: go run ./abi/cmd/abigen > guest/src/kafig_abi.h")
}

func TestCompileCacheKeepsSemantics(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	for i := 1; i <= 3; i++ {
		assert.Equal(t, fmt.Sprint(i), g.mustEval(`globalThis.n = (globalThis.n || 0) + 1`, 0))
	}
	assert.Equal(t, "1", g.mustEval(`let z = 1; z`, 0))
	st, res := g.eval(`let z = 1; z`, 0) // the same source again: redeclaration, as without a cache
	require.Equal(t, abi.StatusJSError, st)
	assert.Equal(t, "SyntaxError", decodeErr(t, res).Name)
	// the same text in async mode is a different program
	assert.Equal(t, "4", g.mustEval(`globalThis.n = (globalThis.n || 0) + 1`, abi.FlagAsync))
}

// TestOutOfMemoryEverywhere runs allocation-heavy scripts under a sweep of
// heap limits, so that allocations fail at many different places inside
// QuickJS: every run must end in a status, never a trap, and the instance
// must stay usable.
func TestOutOfMemoryEverywhere(t *testing.T) {
	script := `
		const parts = [];
		for (let i = 0; ; i++) {
			const o = {i, s: "k" + i, a: [i, i + 1, {x: i}], r: new RegExp("a" + i + "b*")};
			parts.push(JSON.parse(JSON.stringify(o)), o.s.repeat(10), o.r.exec("a" + i + "bbb"), new Map([[i, o]]));
			if (i % 100 == 0) parts.push(parts.slice(-50).join(","));
		}`
	for limit := uint64(256 << 10); limit <= 3*mib; limit += 96 << 10 {
		g := newGuest(t, limit, 0)
		st, res := g.eval(script, 0)
		assert.Equal(t, abi.StatusMemoryLimit, st, "limit %d: %s", limit, res)
		st, res = g.eval(`[1, 2, 3].map(x => x * 2).join()`, 0)
		assert.Equal(t, abi.StatusOK, st, "limit %d: %s", limit, res)
	}
}

func TestHeapLimitOf4GiBIsNoLimit(t *testing.T) {
	g := newGuest(t, 4<<30, 0) // a wasm32 size_t cannot hold it: no limit, not a limit of 0
	assert.Equal(t, "2", g.mustEval(`1+1`, 0))
	assert.EqualValues(t, 0, g.u64(abi.ExchHeapLimit))
}

// TestStopGuard: the guest takes the stop guard (every loop but the
// interpreter's tests abi.StopGlobal), and setting the global from another
// goroutine ends JavaScript that never returns and whose interrupt polls
// are all answered "go on" (as a builtin that never polls would be), with a
// trap.
func TestStopGuard(t *testing.T) {
	wasm := guardedGuest(t)
	assert.Greater(t, guardRep.Loops, 1000)
	assert.Positive(t, guardRep.SkippedLoops, "the interpreter (%s) is found by name and skipped", abi.GuardSkip)
	unguarded, err := wasmguard.CountUnguardedLoops(wasm, abi.StopGlobal)
	require.NoError(t, err)
	require.Equal(t, guardRep.SkippedLoops, unguarded, "every loop but the interpreter's is guarded")
	word, _, err := wasmguard.Apply([]byte(guest.WASM), wasmguard.Options{StopWord: abi.StopWord, Skip: []string{abi.GuardSkip}})
	require.NoError(t, err, "the guest exports the stop word")
	validateWASM(t, word)

	// Not `for (;;) {}`: the interpreter has no guard, its polls stop it
	// (TestInterrupt). A builtin's loop is guarded.
	for _, src := range []string{
		`Array.prototype.includes.call({length: 2**53 - 1}, 1)`,
		`[{length: 2**53 - 1}].map(o => Array.prototype.lastIndexOf.call(o, 1))`,
	} {
		t.Run(src, func(t *testing.T) {
			g := newGuest(t, 0, 0)
			stop, ok := g.mod.ExportedGlobal(abi.StopGlobal).(api.MutableGlobal)
			require.True(t, ok, "the guest exports a mutable %s", abi.StopGlobal)
			require.Zero(t, stop.Get())
			require.Equal(t, "2", g.mustEval(`1+1`, 0), "the guard is inert at 0")

			ptr, release := g.input([]byte(src))
			defer release()
			done := make(chan error, 1)
			go func() {
				_, err := g.mod.ExportedFunction(abi.ExportEval.Name()).Call(g.ctx, uint64(ptr), uint64(len(src)), 0)
				done <- err
			}()
			time.Sleep(50 * time.Millisecond)
			start := time.Now()
			stop.Set(1)
			select {
			case err := <-done:
				require.Error(t, err)
				require.Contains(t, err.Error(), "unreachable")
				t.Logf("stopped %v after the store", time.Since(start))
			case <-time.After(10 * time.Second):
				t.Fatal("the guard did not stop the guest")
			}
		})
	}
}

// setName writes the source name the next operation uses (ABI.md, "The
// exchange area").
func (g *guestInst) setName(name string) {
	g.t.Helper()
	require.True(g.t, g.mem.Write(g.xch+abi.ExchSourceName, []byte(name)))
	require.True(g.t, g.mem.WriteUint32Le(g.xch+abi.ExchSourceNameLen, uint32(len(name))))
}

func TestSourceName(t *testing.T) {
	g := newGuest(t, 32*mib, 0)
	stack := func(src string, flags uint32) string {
		t.Helper()
		st, res := g.eval(src, flags)
		require.Equal(t, abi.StatusJSError, st, res)
		e := decodeErr(t, res)
		require.NotNil(t, e.Stack, res)
		return *e.Stack
	}
	const src = "function f() {\n  null.x\n}\nf()"
	assert.Contains(t, stack(src, 0), "at f (<eval>:2:")
	g.setName("rules/a.js")
	assert.Contains(t, stack(src, 0), "at f (rules/a.js:2:", "named")
	assert.Zero(t, g.u32(abi.ExchSourceNameLen), "the guest clears the name")
	assert.Contains(t, stack(src, 0), "at f (<eval>:2:", "the next eval is <eval> again (and the cache keeps them apart)")
	g.setName("rules/b.js")
	assert.Contains(t, stack(src, 0), "at f (rules/b.js:2:", "the same source, another name")
	g.setName("rules/a.js")
	assert.Contains(t, stack(src, abi.FlagAsync), "rules/a.js:2:", "async")

	g.setName("bad.js")
	st, res := g.eval("1 +", 0)
	require.Equal(t, abi.StatusJSError, st)
	e := decodeErr(t, res)
	assert.Equal(t, "SyntaxError", e.Name)
	require.NotNil(t, e.Stack)
	assert.Contains(t, *e.Stack, "bad.js:1:")

	// compile: the bytecode keeps its name; eval of bytecode ignores a name
	g.setName("compiled.js")
	ptr, release := g.input([]byte(src))
	require.Equal(t, abi.StatusOK, abi.Status(g.call(abi.ExportCompile, uint64(ptr), uint64(len(src)))))
	release()
	bc := []byte(g.result())
	g.setName("other.js")
	ptr, release = g.input(bc)
	st = abi.Status(g.call(abi.ExportEvalBytecode, uint64(ptr), uint64(len(bc)), 0))
	release()
	require.Equal(t, abi.StatusJSError, st)
	e = decodeErr(t, g.result())
	require.NotNil(t, e.Stack)
	assert.Contains(t, *e.Stack, "at f (compiled.js:2:")
	assert.NotContains(t, *e.Stack, "other.js")
	assert.Zero(t, g.u32(abi.ExchSourceNameLen))

	// a name that is too long or holds a NUL is refused, and forgotten
	require.True(t, g.mem.WriteUint32Le(g.xch+abi.ExchSourceNameLen, abi.MaxSourceNameLen+1))
	st, res = g.eval("1", 0)
	assert.Equal(t, abi.StatusBadInput, st, res)
	g.setName("a\x00b")
	st, res = g.eval("1", 0)
	assert.Equal(t, abi.StatusBadInput, st, res)
	assert.Equal(t, "1", g.mustEval("1", 0))
	g.setName(strings.Repeat("n", abi.MaxSourceNameLen))
	assert.Contains(t, stack(src, 0), strings.Repeat("n", abi.MaxSourceNameLen)+":2:")
}
