// Package wazerobackend runs the kafig guest with wazero
// (github.com/tetratelabs/wazero), a WebAssembly runtime written in Go with no
// cgo.
//
//	rt, err := kafig.New(ctx, wazerobackend.New())
//
// Each Compile makes one wazero.Runtime, owned by the returned Module: the
// guest is compiled once (ahead of time, to machine code where wazero's
// compiler supports the platform, else interpreted) and instantiated once per
// kafig instance. Linear memory of each instance lives outside the Go heap on
// unix systems (reserved with mmap, committed as it grows) and never grows past
// the instance's cap. On Linux a Module keeps the memories of closed instances
// for its next ones, zeroed (see WithMemoryPool).
//
// The backstop (on by default) lets Instance.Stop and a done context end a
// call even inside guest code that never calls the host (a QuickJS builtin
// that loops without polling). Compile adds a stop guard to the guest
// (guest/wasmguard): a stop global (abi.StopGlobal) that every loop but the
// bytecode interpreter's tests; the backstop sets it, and the guest traps at
// its next loop iteration. The guard also calls the host every
// abi.YieldEvery iterations: wazero cannot preempt guest code, and Go's
// garbage collector would otherwise wait (the whole process with it) for a
// loop that never calls the host. The interpreter (abi.GuardSkip) polls the
// host at every call and jump of the script, where a stopped instance
// stops. That costs a few instructions per loop iteration, and no goroutine
// per call. (Until the guard, the backstop was wazero's
// WithCloseOnContextDone, which calls out to Go at every loop header:
// JavaScript ran about 4.7 times slower.) A module that cannot take the
// guard (not the kafig guest) still gets WithCloseOnContextDone, with its
// cost. WithBackstop(false) turns the backstop off; calls then stop at the
// guest's next poll of the host (about every abi.InterruptInterval opcodes,
// and inside long builtin loops), and a builtin that never polls runs to
// its end.
package wazerobackend

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tetratelabs/wazero"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// jsStackLimit is the QuickJS stack limit (bytes of the guest's shadow stack)
// that this backend advises: abi.DefaultJSStack, 256 KiB.
//
// Any limit up to abi.MaxJSStack is safe with wazero: its compiler grows each
// call's native stack on demand up to a ceiling of 400 MB, so the native stack
// is never what runs out first, and the guest's C code keeps the margin below
// QuickJS's check that abi.MaxJSStack leaves in the 1 MiB shadow stack.
// Measured with the guests of commits 3c2efa4 and f8e2be2 (guest_test.go:
// TestGuestStackLimitSearch, TestGuestDeepRecursion), at 256 KiB and at
// 896 KiB (abi.MaxJSStack) alike:
//
//   - all 50 deep scripts of deepScripts (plain and mutual JS recursion,
//     JSON.parse/stringify of 300000 levels, the parser on 300000 nested
//     brackets, regexps, proxies, bound functions, getters, toString, sort,
//     replace, generators, async functions...) end in QuickJS's error (or
//     another clean status), none traps, and the instance stays usable.
//
// What the limit trades:
//
//   - depth: plain JS recursion reaches 908 frames at 256 KiB, 1819 at
//     512 KiB, 3184 at 896 KiB;
//   - memory: wazero's native stack takes about 10 KiB per JavaScript frame,
//     on the Go heap, outside the instance's memory limits: the deepest
//     recursion grows it to 8 MiB at 256 KiB (17 MiB allocated through the
//     doublings) and to 33 MiB at 896 KiB (68 MiB allocated). It is released
//     after the call (see longCall).
//
// 256 KiB keeps that amplification small, matches the wasmtime backend, and
// is what the conformance suite expects (some of its inputs overflow at
// 256 KiB but not at 896 KiB). WithJSStackLimit(abi.MaxJSStack) buys depth.
const jsStackLimit = abi.DefaultJSStack

// Option configures the backend. Options never fail on their own: invalid
// values are reported by Compile.
type Option func(*config)

type config struct {
	cache      wazero.CompilationCache
	cacheDir   string
	backstop   bool
	stackLimit uint32
	memoryPool int
}

// WithCompilationCache shares compiled machine code between the Modules of
// this backend (and of any other runtime given the same cache), in memory or
// on disk. The caller owns the cache and closes it after every Module made
// with it.
func WithCompilationCache(c wazero.CompilationCache) Option {
	return func(cfg *config) { cfg.cache = c }
}

// WithCacheDir keeps compiled machine code in dir, so that later processes
// skip compilation. The cache is created on the first Compile and lives as
// long as the backend. It cannot be combined with WithCompilationCache.
func WithCacheDir(dir string) Option {
	return func(cfg *config) { cfg.cacheDir = dir }
}

// WithBackstop turns the backstop on (the default) or off. Without it, Stop
// and a done context end a call only when the guest next calls the host (it
// polls about every abi.InterruptInterval opcodes), so a builtin that never
// polls runs to its end.
//
// With the kafig guest the backstop is its stop global and costs nearly
// nothing, so there is no reason left to turn it off: the option matters
// for a guest without the global, where the backstop is wazero's
// WithCloseOnContextDone and JavaScript runs about 4.7 times slower (see the
// package documentation). It is kept for that case and so that existing
// callers keep compiling.
func WithBackstop(on bool) Option {
	return func(cfg *config) { cfg.backstop = on }
}

// WithJSStackLimit overrides the QuickJS stack limit the backend advises
// (backend.StackAdvisor), in bytes. It must be at most abi.MaxJSStack; 0
// restores the backend's own value.
func WithJSStackLimit(bytes uint32) Option {
	return func(cfg *config) { cfg.stackLimit = bytes }
}

// defaultMemoryPool is WithMemoryPool's default.
const defaultMemoryPool = 128

// WithMemoryPool sets how many linear memories of closed instances a Module
// keeps for its next instances (default 128; 0 keeps none). Each Module has
// its own pool, emptied when it closes.
//
// A new instance normally maps fresh memory, and every page that its data
// segments and first calls touch costs a page fault (about 40 per instance
// for the kafig guest: 1 µs each on bare metal, 10 to 40 µs under a
// hypervisor with shadow paging); closing it unmaps a reservation of up to
// 4 GiB. A pooled memory has its pages mapped already: an instance made
// from it zeroes the pages that the last one touched (in place; the others
// are dropped) and starts from zero-filled memory as a fresh one does, and
// what the last instance grew beyond the guest's initial memory (1.3 MiB
// for the kafig guest) was returned to the system when it closed. The
// price is resident memory: a pooled memory keeps the pages its instances
// touched in that initial region (about 200 KiB for an instance that ran
// little, at most the initial size) until it is reused or the Module
// closes. Pooling needs Linux; elsewhere the option does nothing.
func WithMemoryPool(n int) Option {
	return func(cfg *config) { cfg.memoryPool = max(n, 0) }
}

// New returns the wazero backend.
func New(opts ...Option) backend.Backend {
	b := &wazeroBackend{cfg: config{backstop: true, memoryPool: defaultMemoryPool}}
	for _, o := range opts {
		if o != nil {
			o(&b.cfg)
		}
	}
	return b
}

type wazeroBackend struct {
	cfg config

	cacheOnce sync.Once
	cache     wazero.CompilationCache
	cacheErr  error
}

var _ backend.StackAdvisor = (*wazeroBackend)(nil)

// Name implements backend.Backend.
func (b *wazeroBackend) Name() string { return "wazero" }

// JSStackLimit implements backend.StackAdvisor.
func (b *wazeroBackend) JSStackLimit() uint32 {
	if b.cfg.stackLimit != 0 && b.cfg.stackLimit <= abi.MaxJSStack {
		return b.cfg.stackLimit
	}
	return jsStackLimit
}

// Compile implements backend.Backend.
func (b *wazeroBackend) Compile(ctx context.Context, wasm []byte) (backend.Module, error) {
	if err := b.validate(); err != nil {
		return nil, err
	}
	cache, err := b.compilationCache()
	if err != nil {
		return nil, err
	}
	m, err := compile(ctx, wasm, cache, b.cfg.backstop, b.cfg.memoryPool)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (b *wazeroBackend) validate() error {
	if b.cfg.stackLimit > abi.MaxJSStack {
		return fmt.Errorf("kafig: wazero: WithJSStackLimit(%d) is above abi.MaxJSStack (%d)", b.cfg.stackLimit, abi.MaxJSStack)
	}
	if b.cfg.cache != nil && b.cfg.cacheDir != "" {
		return errors.New("kafig: wazero: WithCompilationCache and WithCacheDir cannot be combined")
	}
	return nil
}

func (b *wazeroBackend) compilationCache() (wazero.CompilationCache, error) {
	if b.cfg.cache != nil || b.cfg.cacheDir == "" {
		return b.cfg.cache, nil
	}
	b.cacheOnce.Do(func() {
		b.cache, b.cacheErr = wazero.NewCompilationCacheWithDir(b.cfg.cacheDir)
		if b.cacheErr != nil {
			b.cacheErr = fmt.Errorf("kafig: wazero: cache dir: %w", b.cacheErr)
		}
	})
	return b.cache, b.cacheErr
}
