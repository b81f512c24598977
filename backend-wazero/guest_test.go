package wazerobackend

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/backend-wazero/internal/mmapalloc"
	"github.com/kafig-dev/kafig/guest"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// These tests run the real guest (QuickJS) through this backend, at the ABI
// level, for what is engine-specific: instantiation, stop, memory cap, and
// the stack limit this backend advises. JavaScript behaviour is tested in
// conformance/ and guest/.

const mib = 1 << 20

// guestWASM is guest.WASM, or the file $KAFIG_GUEST_WASM names (to measure
// another build).
func guestWASM(t testing.TB) []byte {
	t.Helper()
	if path := os.Getenv("KAFIG_GUEST_WASM"); path != "" {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		return b
	}
	if len(guest.WASM) == 0 {
		t.Skip("guest/kafig.wasm is not built")
	}
	return []byte(guest.WASM)
}

// The compiled guest is shared by the tests of one backend configuration:
// compiling QuickJS takes seconds.
var (
	guestModsMu sync.Mutex
	guestMods   = map[string]backend.Module{}
)

func guestModule(t testing.TB, key string, opts ...Option) backend.Module {
	t.Helper()
	wasm := guestWASM(t)
	guestModsMu.Lock()
	defer guestModsMu.Unlock()
	if m, ok := guestMods[key]; ok {
		return m
	}
	m, err := New(opts...).Compile(context.Background(), wasm)
	require.NoError(t, err)
	guestMods[key] = m
	return m
}

func closeGuestModules() {
	guestModsMu.Lock()
	defer guestModsMu.Unlock()
	for k, m := range guestMods {
		_ = m.Close(context.Background())
		delete(guestMods, k)
	}
}

// jsGuest is one instance of the real guest with a minimal host.
type jsGuest struct {
	t        testing.TB
	inst     backend.Instance
	xch      uint32
	polls    atomic.Int64
	stop     atomic.Bool // interrupt answers stop
	maxPolls int64       // and after this many polls, when not 0
}

func newJSGuest(t testing.TB, mod backend.Module, maxPages uint32, heap uint64, stack uint32) *jsGuest {
	t.Helper()
	g := &jsGuest{t: t}
	var cfg backend.InstanceConfig
	cfg.MaxMemoryPages = maxPages
	cfg.Imports[abi.ImportInterrupt] = func(_ context.Context, _ backend.Memory, s []uint64) {
		if s[0] == abi.YieldOpcodes {
			s[0] = 0 // the loop guard's yield, not a poll
			return
		}
		n := g.polls.Add(1)
		s[0] = 0
		if g.stop.Load() || (g.maxPolls != 0 && n > g.maxPolls) {
			s[0] = 1
		}
	}
	cfg.Imports[abi.ImportRPCSync] = func(_ context.Context, _ backend.Memory, s []uint64) {
		s[0] = uint64(abi.RPCError) << 32 // an empty error reply
	}
	cfg.Imports[abi.ImportRPCSyncTake] = func(context.Context, backend.Memory, []uint64) {}
	cfg.Imports[abi.ImportRPCAsync] = func(_ context.Context, _ backend.Memory, s []uint64) { s[0] = abi.RPCRefused }
	cfg.Imports[abi.ImportRejection] = func(_ context.Context, _ backend.Memory, s []uint64) { s[0] = 0 }
	inst, err := mod.Instantiate(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = inst.Close(context.Background()) })
	g.inst = inst

	st := make([]uint64, 2)
	require.NoError(t, inst.Call(context.Background(), abi.ExportExchange, st))
	g.xch = uint32(st[0])
	st[0], st[1] = heap, uint64(stack)
	require.NoError(t, inst.Call(context.Background(), abi.ExportSetLimits, st))
	require.Equal(t, uint64(abi.StatusOK), st[0])
	return g
}

// eval runs src, with abi.FlagAsync when it starts with "async: "; err is a
// Call error (trap, stop).
func (g *jsGuest) eval(ctx context.Context, src string) (abi.Status, string, error) {
	var flags uint64
	if s, ok := strings.CutPrefix(src, "async: "); ok {
		src, flags = s, abi.FlagAsync
	}
	mem := g.inst.Memory()
	ptr := g.xch + abi.ExchHeaderSize
	var alloc uint64
	if len(src)+1 > abi.ExchangeDataSize {
		s := []uint64{uint64(len(src) + 1)}
		if err := g.inst.Call(ctx, abi.ExportAlloc, s); err != nil {
			return 0, "", err
		}
		require.NotZero(g.t, s[0])
		alloc, ptr = s[0], uint32(s[0])
	}
	require.True(g.t, mem.Write(ptr, []byte(src)))
	s := []uint64{uint64(ptr), uint64(len(src)), flags}
	if err := g.inst.Call(ctx, abi.ExportEval, s); err != nil {
		return 0, "", err
	}
	st := abi.Status(s[0])
	hdr, ok := mem.Read(g.xch, 8)
	require.True(g.t, ok)
	res, ok := mem.Read(binary.LittleEndian.Uint32(hdr), binary.LittleEndian.Uint32(hdr[4:]))
	require.True(g.t, ok)
	out := string(res)
	if alloc != 0 {
		require.NoError(g.t, g.inst.Call(ctx, abi.ExportFree, []uint64{alloc}))
	}
	return st, out, nil
}

func (g *jsGuest) mustEval(src string) string {
	g.t.Helper()
	st, res, err := g.eval(context.Background(), src)
	require.NoError(g.t, err)
	require.Equal(g.t, abi.StatusOK, st, "%s: %s", src, res)
	return res
}

func TestGuestBasics(t *testing.T) {
	mod := guestModule(t, "default")
	g := newJSGuest(t, mod, 0, 32*mib, 0)
	require.Equal(t, "2", g.mustEval("1+1"))
	require.Equal(t, `"ok"`, g.mustEval(`"o" + "k"`))
	st, res, err := g.eval(context.Background(), `throw new TypeError("boom")`)
	require.NoError(t, err)
	require.Equal(t, abi.StatusJSError, st)
	require.Contains(t, res, "boom")

	// Real clock and randomness reach the guest.
	a, b := newJSGuest(t, mod, 0, 32*mib, 0), newJSGuest(t, mod, 0, 32*mib, 0)
	require.NotEqual(t, a.mustEval("Math.random()"), b.mustEval("Math.random()"))
	require.NotEqual(t, "0", a.mustEval("Date.now()"))

	// A long input through kafig_alloc.
	require.Equal(t, "100000", g.mustEval(`"`+strings.Repeat("x", 100000)+`".length`))
}

func TestGuestStop(t *testing.T) {
	mod := guestModule(t, "default")
	require.True(t, mod.(*module).guard, "the guest has its stop guard: no CloseOnContextDone")
	for _, src := range []string{
		`for (;;) {}`,
		// A builtin looping over an array-like of length 2^53-1; with
		// every poll answered "go on", only the guard stops it.
		`Array.prototype.includes.call({length: 2**53 - 1}, 1)`,
	} {
		for _, tc := range stopCases {
			t.Run(tc.name+"/"+src, func(t *testing.T) {
				g := newJSGuest(t, mod, 0, 32*mib, 0)
				ctx, stop := tc.start(g.inst)
				done := make(chan error, 1)
				go func() {
					_, _, err := g.eval(ctx, src)
					done <- err
				}()
				err := waitStopped(t, done, stop)
				require.ErrorIs(t, err, backend.ErrStopped)
				_, _, err = g.eval(context.Background(), "1")
				require.ErrorIs(t, err, backend.ErrDead)
			})
		}
	}
}

func TestGuestInterrupt(t *testing.T) {
	g := newJSGuest(t, guestModule(t, "default"), 0, 32*mib, 0)
	g.stop.Store(true)
	st, _, err := g.eval(context.Background(), `for (;;) {}`)
	require.NoError(t, err)
	require.Equal(t, abi.StatusCPULimit, st)
	g.stop.Store(false)
	require.Equal(t, "2", g.mustEval("1+1"))
}

func TestGuestMemoryCap(t *testing.T) {
	mod := guestModule(t, "default")
	// No QuickJS heap limit: the linear memory cap is what stops the script,
	// through memory.grow failing and the guest's malloc returning NULL.
	g := newJSGuest(t, mod, 256, 0, 0) // 16 MiB
	st, res, err := g.eval(context.Background(), `let a = []; for (;;) a.push(new Array(1000).fill(1))`)
	require.NoError(t, err)
	require.Equal(t, abi.StatusMemoryLimit, st, res)
	require.LessOrEqual(t, g.inst.Memory().Size(), uint32(256*abi.PageSize))
	require.Equal(t, "2", g.mustEval("1+1"), "usable after the limit")
}

// deepScripts recurse as deep as they can through plain JavaScript,
// builtins, the parser and the regexp engine. Each must end in QuickJS's
// stack overflow error (or a caught one), never in a trap.
var deepScripts = []string{
	`function f(){ return f() } f()`,
	`function f(n){ return n ? 1 + f(n-1) : 0 } f(1e9)`,
	`function f(a,b,c,d,e,g,h,i){ let x1=a,x2=b,x3=c,x4=d,x5=e,x6=g; return f(x1,x2,x3,x4,x5,x6,h,i) + x1 } f(1,2,3,4,5,6,7,8)`,
	`try { (function f(){ f() })() } catch (e) { throw e }`,
	`JSON.parse("[".repeat(300000))`,
	`JSON.parse('{"a":'.repeat(300000))`,
	`eval("(".repeat(300000))`,
	`eval("[".repeat(300000))`,
	`eval("{".repeat(300000))`,
	`eval("f(".repeat(300000))`,
	`eval("!".repeat(300000) + "1")`,
	`eval("a=".repeat(300000) + "1")`,
	`eval("x?".repeat(100000) + "1" + ":1".repeat(100000))`,
	`eval("function f(){".repeat(100000))`,
	`eval("(()=>".repeat(100000) + "1" + ")".repeat(100000))`,
	"eval('`${'.repeat(100000))",
	`new RegExp("(".repeat(300000))`,
	`new RegExp("(?:".repeat(300000) + "a" + ")".repeat(300000))`,
	`new RegExp("(a|".repeat(100000) + ")".repeat(100000))`,
	`/(a*)*b/.exec("a".repeat(100000))`,
	`/(?:a|b)*c/.exec("ab".repeat(300000))`,
	`/(a)\1*$/.exec("a".repeat(300000))`,
	`let a = []; for (let i = 0; i < 300000; i++) a = [a]; JSON.stringify(a)`,
	`let o = {}; for (let i = 0; i < 300000; i++) o = {o}; JSON.stringify(o)`,
	`let a = []; for (let i = 0; i < 300000; i++) a = [a]; String(a)`,
	`let a = []; for (let i = 0; i < 300000; i++) a = [a]; a.flat(Infinity)`,
	`let a = []; for (let i = 0; i < 300000; i++) a = [a]; a.toLocaleString()`,
	`let p = {}; for (let i = 0; i < 300000; i++) p = new Proxy(p, {}); p.x`,
	`let p = {}; for (let i = 0; i < 300000; i++) p = new Proxy(p, {}); Object.keys(p)`,
	`let f = function(){}; for (let i = 0; i < 300000; i++) f = f.bind(null); f()`,
	`const o = {}; o.toString = () => "" + o; "" + o`,
	`const o = { get x() { return this.x } }; o.x`,
	`const p = new Proxy({}, { get(t, k, r) { return r[k] } }); p.x`,
	`function f(n){ return eval("f(n+1)") } f(0)`,
	`function f(){ return new Function("f", "return f(f)")(f) } f()`,
	`function c(a, b){ return [2, 1].sort(c) } [2, 1].sort(c)`,
	`function r(){ return "a".replace(/a/, r) } r()`,
	`function r(){ return [1].map(r) } r()`,
	`function r(){ return Reflect.apply(r, null, []) } r()`,
	`function r(){ return JSON.parse("[1]", r) } r()`,
	`function r(){ return JSON.stringify({toJSON: r}) } r()`,
	`function* g(){ yield* g() } [...g()]`,
	`class A { constructor(){ new A() } } new A()`,
	`function f(){ return [...f()] } f()`,
	`function f(){ return {...f()} } f()`,
	`function f(){ return new Promise(f) } f()`,
	`eval("(".repeat(100000) + "1" + ")".repeat(100000))`,
	`async: function f(){ return f() } await null; f()`,
	`async: async function f(){ return await f() } await f()`,
	`async: JSON.parse(await Promise.resolve("[".repeat(300000)))`,
}

const deepTimeout = 30 * time.Second

// deepOutcome runs src on a fresh instance with QuickJS stack limit js. It
// reports whether the script ended without a trap, leaving the instance
// usable, and how it ended (QuickJS reports overflow in the parser, JSON and
// regexps as a SyntaxError; a few scripts hit other limits first).
func deepOutcome(t *testing.T, mod backend.Module, js uint32, src string) (bool, string) {
	g := newJSGuest(t, mod, 0, 256*mib, js)
	defer g.inst.Close(context.Background())
	g.maxPolls = 1000 // about 10^7 poll points: ends catastrophic backtracking
	// and the backstop ends what does not poll.
	ctx, cancel := context.WithTimeout(context.Background(), deepTimeout)
	defer cancel()
	st, res, err := g.eval(ctx, src)
	if errors.Is(err, backend.ErrStopped) {
		return true, "stopped after " + deepTimeout.String()
	}
	if err != nil {
		return false, "trap: " + err.Error()
	}
	how := st.Name()
	if st != abi.StatusStackOverflow && st != abi.StatusOK {
		if len(res) > 100 {
			res = res[:100]
		}
		how += ": " + res
	}
	g.maxPolls = 0
	st, res, err = g.eval(context.Background(), "1+1")
	if err != nil || st != abi.StatusOK || res != "2" {
		return false, how + "; then unusable"
	}
	return true, how
}

// TestGuestDeepRecursion: with the stack limit the backend advises, and with
// the largest WithJSStackLimit takes, every deep script ends in QuickJS's
// stack overflow error (or another clean status), never in a trap.
func TestGuestDeepRecursion(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	mod := guestModule(t, "default")
	for _, js := range []uint32{New().(backend.StackAdvisor).JSStackLimit(), abi.MaxJSStack} {
		for _, src := range deepScripts {
			start := time.Now()
			ok, how := deepOutcome(t, mod, js, src)
			require.True(t, ok, "js=%d: %s: %s", js, src, how)
			t.Logf("js=%d KiB %-60.60s %6.2fs %.80s", js>>10, src, time.Since(start).Seconds(), how)
		}
	}
}

// TestGuestDeepRecursionMemory: the native stack a deep recursion grows is
// not kept by the idle instance.
func TestGuestDeepRecursionMemory(t *testing.T) {
	for _, js := range []uint32{New().(backend.StackAdvisor).JSStackLimit(), abi.MaxJSStack} {
		g := newJSGuest(t, guestModule(t, "default"), 0, 256*mib, js)
		g.mustEval("1")
		before, _ := footprint()
		depth := g.mustEval(`let d = 0; function r(){ d++; r() } try { r() } catch (e) {} d`)
		after, _ := footprint()
		t.Logf("js=%d KiB: plain JS recursion depth %s; Go heap kept after it: %d KiB", js>>10, depth, (after-before)>>10)
		require.Less(t, after-before, int64(2*mib))
		n, err := strconv.Atoi(depth)
		require.NoError(t, err)
		require.Greater(t, n, int(js/300), "about 280 bytes of shadow stack per frame")
	}
}

// TestGuestStackLimitSearch measures which QuickJS stack limits keep every
// deep script clean. It is slow; run it with KAFIG_STACK_SEARCH=1 (and
// KAFIG_GUEST_WASM to measure another build).
func TestGuestStackLimitSearch(t *testing.T) {
	if os.Getenv("KAFIG_STACK_SEARCH") == "" {
		t.Skip("set KAFIG_STACK_SEARCH=1")
	}
	mod := guestModule(t, "default")
	// From the largest limit down; the first clean one is the answer.
	for _, js := range []uint32{abi.MaxJSStack, 832 << 10, 768 << 10, 640 << 10, 512 << 10, 384 << 10, 256 << 10} {
		bad := 0
		for _, src := range deepScripts {
			start := time.Now()
			ok, how := deepOutcome(t, mod, js, src)
			if !ok {
				bad++
			}
			if len(how) > 200 {
				how = how[:200]
			}
			t.Logf("js=%d KiB %-60.60s %6.2fs %s", js>>10, src, time.Since(start).Seconds(), how)
		}
		t.Logf("js=%d KiB: %d of %d scripts trap", js>>10, bad, len(deepScripts))
		if bad == 0 {
			break
		}
	}
}

// TestGuestInstanceFootprint reports the Go heap and the resident memory an
// idle instance costs (after set_limits and one small eval).
func TestGuestInstanceFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	mod := guestModule(t, "default")
	newJSGuest(t, mod, 0, 32*mib, 0).mustEval("1+1") // warm up the runtime's shared state

	const n = 100
	heap0, rss0 := footprint()
	gs := make([]*jsGuest, n)
	for i := range gs {
		gs[i] = newJSGuest(t, mod, 0, 32*mib, 0)
		gs[i].mustEval("1+1")
	}
	heap1, rss1 := footprint()
	t.Logf("per idle instance: Go heap %d KiB, RSS %d KiB (%s)", (heap1-heap0)/n>>10, (rss1-rss0)/n>>10,
		map[bool]string{true: "memory mmapped", false: "memory on the Go heap"}[mmapalloc.Mmap])
	runtime.KeepAlive(gs)
}

// footprint returns the live Go heap and the resident set size, in bytes.
func footprint() (heap, rss int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, err := os.ReadFile("/proc/self/statm")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rss = pages * int64(os.Getpagesize())
		}
	}
	return int64(ms.HeapAlloc), rss
}

// TestGuestStackRetention reports the most Go heap (grown native stack) an
// idle instance keeps after a recursion that ends just under longCall.
func TestGuestStackRetention(t *testing.T) {
	mod := guestModule(t, "nobackstop", WithBackstop(false)) // the faster case
	var worst int64
	for n := 10; n <= 400; n += 10 {
		g := newJSGuest(t, mod, 0, 256*mib, abi.MaxJSStack)
		g.mustEval(`function f(n){ return n ? f(n-1) : 0 }`)
		before, _ := footprint()
		start := time.Now()
		g.mustEval(`f(` + strconv.Itoa(n) + `)`)
		took := time.Since(start)
		after, _ := footprint()
		if after-before > worst {
			worst = after - before
			t.Logf("f(%d): %v, Go heap kept %d KiB", n, took, (after-before)>>10)
		}
		_ = g.inst.Close(context.Background())
	}
	require.Less(t, worst, int64(8*mib))
}

// TestGuestMemoryPool: an instance made from a pooled memory (the memory of
// an instance that ran, grew and closed) starts with memory byte for byte
// equal to that of an instance made from fresh memory.
func TestGuestMemoryPool(t *testing.T) {
	if !mmapalloc.Mmap {
		t.Skip("memory on the Go heap")
	}
	// Modules of its own: a shared one would carry pooled memories over
	// from an earlier run (-count).
	compile := func(opts ...Option) backend.Module {
		m, err := New(opts...).Compile(context.Background(), guestWASM(t))
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.Close(context.Background()) })
		return m
	}
	pooled := compile(WithMemoryPool(4))
	fresh := compile(WithMemoryPool(0))
	pool := pooled.(*module).pool
	data, ok := activeData(guestWASM(t))
	require.True(t, ok)
	require.NotEmpty(t, data, "the guest's data segments are found (pages inside them are not zeroed)")

	// Dirty memory well beyond the initial size, then close.
	a := newJSGuest(t, pooled, 512, 32*mib, 0)
	a.mustEval(`globalThis.junk = []; for (let i = 0; i < 2000; i++) junk.push("x".repeat(1000) + i); junk.length`)
	require.Greater(t, a.inst.Memory().Size(), uint32(pooled.(*module).minPages)*abi.PageSize)
	n := pool.Len()
	require.NoError(t, a.inst.Close(context.Background()))
	if n+1 != pool.Len() {
		t.Skip("this system does not pool memory")
	}

	b := newJSGuest(t, pooled, 512, 32*mib, 0)
	require.Equal(t, n, pool.Len(), "b took the pooled memory")
	c := newJSGuest(t, fresh, 512, 32*mib, 0)
	mb, ok := b.inst.Memory().Read(0, b.inst.Memory().Size())
	require.True(t, ok)
	mc, ok := c.inst.Memory().Read(0, c.inst.Memory().Size())
	require.True(t, ok)
	require.Equal(t, len(mc), len(mb))
	require.True(t, bytes.Equal(mb, mc), "pooled memory differs from fresh memory")
	require.Equal(t, `"undefined"`, b.mustEval(`typeof junk`))
	require.Equal(t, "2", b.mustEval("1+1"))

	// A different memory cap is another reservation: not from the pool.
	require.NoError(t, b.inst.Close(context.Background()))
	n = pool.Len()
	newJSGuest(t, pooled, 1024, 32*mib, 0)
	require.Equal(t, n, pool.Len())
}
