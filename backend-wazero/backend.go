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
// the instance's cap.
//
// The backstop (on by default) makes wazero check for termination at every
// function entry and loop header, so that Instance.Stop and a done context end
// a call even inside guest code that never calls the host. It costs a few
// percent of guest speed and one goroutine per call; WithBackstop(false) turns
// it off, and calls then stop only at host imports.
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
// that this backend advises.
//
// wazero's compiler grows each call's native stack on demand up to a ceiling
// of 400 MB, so with wazero the native stack is never the first to run out:
// the limit is set by the guest's shadow stack (abi.GuestStackSize, 1 MiB),
// whose overflow traps. Guest C code that recurses below QuickJS's check needs
// the margin abi.MaxJSStack leaves. The value is abi.DefaultJSStack until it is
// tuned against the real guest (see guest_test.go).
const jsStackLimit = abi.DefaultJSStack

// Option configures the backend. Options never fail on their own: invalid
// values are reported by Compile.
type Option func(*config)

type config struct {
	cache      wazero.CompilationCache
	cacheDir   string
	backstop   bool
	stackLimit uint32
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
func WithBackstop(on bool) Option {
	return func(cfg *config) { cfg.backstop = on }
}

// WithJSStackLimit overrides the QuickJS stack limit the backend advises
// (backend.StackAdvisor), in bytes. It must be at most abi.MaxJSStack; 0
// restores the backend's own value.
func WithJSStackLimit(bytes uint32) Option {
	return func(cfg *config) { cfg.stackLimit = bytes }
}

// New returns the wazero backend.
func New(opts ...Option) backend.Backend {
	b := &wazeroBackend{cfg: config{backstop: true}}
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
	m, err := compile(ctx, wasm, cache, b.cfg.backstop)
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
