//go:build cgo

package wasmtimebackend

/*
#include <stdlib.h>
#include "kafig_wt.h"
*/
import "C"

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/bytecodealliance/wasmtime-go/v39"
	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// minMaxWasmStack is the least max wasm stack Compile accepts.
const minMaxWasmStack = 1 << 20

type wasmtimeBackend struct {
	opts options
}

// validate checks the options; it is where a bad Option surfaces.
func (o options) validate() error {
	ws := o.wasmStack()
	if ws < minMaxWasmStack {
		return fmt.Errorf("kafig: WithMaxWasmStack(%d): at least %d bytes", o.maxWasmStack, minMaxWasmStack)
	}
	if def := defaultThreadStack(); checkThreadStack.Load() && def > 0 && ws+stackReserve > def {
		return fmt.Errorf("kafig: WithMaxWasmStack(%d): threads get %d KiB of native stack, which must hold the max wasm stack plus a %d KiB reserve; at most %d KiB",
			ws, def>>10, stackReserve>>10, (def-stackReserve)>>10)
	}
	if js := o.jsStackLimit(); js < minJSStack || js > abi.MaxJSStack {
		return fmt.Errorf("kafig: WithJSStackLimit(%d): between %d and %d bytes", js, minJSStack, abi.MaxJSStack)
	} else if int(js)*nativePerJS/2 > ws {
		return fmt.Errorf("kafig: WithJSStackLimit(%d) needs a max wasm stack of at least %d KiB (it is %d KiB): deep recursion in the parser would exhaust the native stack before QuickJS's check",
			js, int(js)*nativePerJS/2>>10, ws>>10)
	}
	if o.cacheDir != "" {
		if err := prepareCacheDir(o.cacheDir); err != nil {
			return err
		}
	}
	return nil
}

// compiled is one Engine+Module (and what its instances share), cached per
// process by the sha256 of the wasm and the engine settings, and
// reference-counted by the Modules and Instances that use it.
type compiled struct {
	key   string
	ready chan struct{} // closed when engine..plan or err are set
	err   error
	refs  int // guarded by cacheMu

	backstop bool
	engine   *wasmtime.Engine
	module   *wasmtime.Module
	linker   *wasmtime.Linker
	plan     *C.kafig_plan
	cmem     []unsafe.Pointer // C allocations of the plan
}

var (
	cacheMu sync.Mutex
	cache   = map[string]*compiled{}
)

// cachedModules reports how many compiled modules the process holds (for
// tests).
func cachedModules() int {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	return len(cache)
}

// tryAcquire takes a reference unless the compiled code is already freed.
func (c *compiled) tryAcquire() bool {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if c.refs <= 0 {
		return false
	}
	c.refs++
	return true
}

func (c *compiled) release() {
	cacheMu.Lock()
	c.refs--
	last := c.refs == 0
	if last && cache[c.key] == c {
		delete(cache, c.key)
	}
	cacheMu.Unlock()
	if last {
		c.free()
	}
}

func (c *compiled) free() {
	if c.plan != nil {
		for i := range abi.ImportCount {
			if t := c.plan.host_types[i]; t != nil {
				C.wasm_functype_delete(t)
			}
		}
		c.plan = nil
	}
	for _, p := range c.cmem {
		C.free(p)
	}
	c.cmem = nil
	if c.linker != nil {
		c.linker.Close()
	}
	if c.module != nil {
		c.module.Close()
	}
	if c.engine != nil {
		c.engine.Close()
	}
}

func badModule(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{backend.ErrBadModule}, args...)...)
}

// Compile implements backend.Backend.
func (b *wasmtimeBackend) Compile(ctx context.Context, wasm []byte) (backend.Module, error) {
	o := b.opts
	if err := o.validate(); err != nil {
		return nil, err
	}
	if len(wasm) == 0 {
		return nil, badModule("empty module")
	}
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, badModule("not a WebAssembly binary")
	}
	sum := sha256.Sum256(wasm)
	settings := settingsKey(o)
	// The engine's max wasm stack is not in the file's key, but is in the
	// process's: it is a setting of the Engine.
	key := fmt.Sprintf("%x/%s/%d", sum, settings, o.wasmStack())

	cacheMu.Lock()
	c := cache[key]
	owner := c == nil
	if owner {
		c = &compiled{key: key, ready: make(chan struct{}), refs: 1}
		cache[key] = c
	} else {
		c.refs++
	}
	cacheMu.Unlock()

	if owner {
		// Compiling cannot be interrupted; a canceled ctx only stops waiters.
		c.err = c.build(o, wasm, sum, settings)
		if c.err != nil {
			cacheMu.Lock()
			if cache[key] == c {
				delete(cache, key)
			}
			cacheMu.Unlock()
		}
		close(c.ready)
	} else {
		select {
		case <-c.ready:
		case <-ctx.Done():
			c.release()
			return nil, fmt.Errorf("kafig: compile: %w", ctx.Err())
		}
	}
	if c.err != nil {
		err := c.err
		c.release()
		return nil, err
	}
	return &module{c: c}, nil
}

func (c *compiled) build(o options, wasm []byte, sum [32]byte, settings string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kafig: wasmtime panicked while compiling: %v", r)
		}
		if err != nil {
			c.free()
		}
	}()
	cfg := wasmtime.NewConfig()
	cfg.SetEpochInterruption(o.backstop)
	cfg.SetMaxWasmStack(o.wasmStack())
	c.engine = wasmtime.NewEngineWithConfig(cfg) // takes cfg
	c.backstop = o.backstop

	var path string
	if o.cacheDir != "" {
		path = cachePath(o.cacheDir, sum, settings)
		if payload := readCache(path, sum); payload != nil {
			if m, err := wasmtime.NewModuleDeserialize(c.engine, payload); err == nil {
				c.module = m
				diskHits.Add(1)
			}
		}
	}
	if c.module == nil {
		m, err := wasmtime.NewModule(c.engine, wasm)
		if err != nil {
			return badModule("%s", cleanErr(err))
		}
		c.module = m
		if path != "" {
			if ser, err := m.Serialize(); err == nil {
				_ = writeCache(path, sum, ser) // the cache is best effort
			}
		}
	}

	plan, err := c.check()
	if err != nil {
		return err
	}
	c.linker = wasmtime.NewLinker(c.engine)
	if err := c.linker.DefineWasi(); err != nil {
		return fmt.Errorf("kafig: defining WASI: %s", cleanErr(err))
	}
	return c.mkPlan(plan, o)
}

// importPlan is, per module import, the abi.Import it binds or -1 for WASI.
type importPlan struct {
	abiIdx []int32
	names  []string
}

// check validates the module's imports and exports against the ABI.
func (c *compiled) check() (importPlan, error) {
	var plan importPlan
	wasi := map[string]bool{}
	for _, n := range strings.Fields(abi.WASIImports) {
		wasi[n] = true
	}
	for _, it := range c.module.Imports() {
		mod := it.Module()
		name := ""
		if n := it.Name(); n != nil {
			name = *n
		}
		ft := it.Type().FuncType()
		if ft == nil {
			return plan, badModule("import %s.%s is not a function", mod, name)
		}
		got, ok := signatureOf(ft)
		if !ok {
			return plan, badModule("import %s.%s has a non-integer type", mod, name)
		}
		switch mod {
		case abi.ImportModule:
			idx := -1
			for i := range abi.ImportCount {
				if abi.Import(i).Name() == name {
					idx = i
				}
			}
			if idx < 0 {
				return plan, badModule("unknown import %s.%s", mod, name)
			}
			want := abi.Import(idx).Signature()
			if !sameTypes(got.Params, want.Params) || !sameTypes(got.Results, want.Results) {
				return plan, badModule("import %s.%s has type %s, want %s", mod, name, sigString(got), sigString(want))
			}
			plan.abiIdx = append(plan.abiIdx, int32(idx))
			plan.names = append(plan.names, name)
		case abi.WASIModule:
			if !wasi[name] {
				return plan, badModule("import %s.%s is not one of the allowed WASI functions (%s)", mod, name, abi.WASIImports)
			}
			want := wasiSigs[name]
			if !sameTypes(got.Params, want.Params) || !sameTypes(got.Results, want.Results) {
				return plan, badModule("import %s.%s has type %s, want %s", mod, name, sigString(got), sigString(want))
			}
			plan.abiIdx = append(plan.abiIdx, -1)
			plan.names = append(plan.names, name)
		default:
			return plan, badModule("import %s.%s is outside the ABI (only %q and %q)", mod, name, abi.ImportModule, abi.WASIModule)
		}
	}

	exports := map[string]*wasmtime.ExternType{}
	for _, et := range c.module.Exports() {
		exports[et.Name()] = et.Type()
	}
	for e := range abi.ExportCount {
		name := abi.Export(e).Name()
		t, ok := exports[name]
		if !ok {
			return plan, badModule("missing export %s", name)
		}
		ft := t.FuncType()
		if ft == nil {
			return plan, badModule("export %s is not a function", name)
		}
		got, ok := signatureOf(ft)
		want := abi.Export(e).Signature()
		if !ok || !sameTypes(got.Params, want.Params) || !sameTypes(got.Results, want.Results) {
			return plan, badModule("export %s has type %s, want %s", name, sigString(got), sigString(want))
		}
	}
	mt, ok := exports["memory"]
	if !ok || mt.MemoryType() == nil {
		return plan, badModule("missing memory export")
	}
	if m := mt.MemoryType(); m.Is64() || m.IsShared() {
		return plan, badModule("memory must be a 32-bit, unshared memory")
	}
	return plan, nil
}

// signatureOf converts a function type; ok is false for types beyond i32/i64.
func signatureOf(ft *wasmtime.FuncType) (s abi.Signature, ok bool) {
	conv := func(vs []*wasmtime.ValType) ([]abi.ValType, bool) {
		var out []abi.ValType
		for _, v := range vs {
			switch v.Kind() {
			case wasmtime.KindI32:
				out = append(out, abi.I32)
			case wasmtime.KindI64:
				out = append(out, abi.I64)
			default:
				return out, false
			}
		}
		return out, true
	}
	p, ok1 := conv(ft.Params())
	r, ok2 := conv(ft.Results())
	return abi.Signature{Params: p, Results: r}, ok1 && ok2
}

func (c *compiled) cmalloc(n int) unsafe.Pointer {
	p := C.calloc(1, C.size_t(n))
	if p == nil {
		panic("kafig: out of C memory")
	}
	c.cmem = append(c.cmem, p)
	return p
}

func (c *compiled) cstring(s string) *C.char {
	p := c.cmalloc(len(s) + 1)
	copy(unsafe.Slice((*byte)(p), len(s)), s)
	return (*C.char)(p)
}

// mkPlan builds the C-side description of how to instantiate the module.
func (c *compiled) mkPlan(ip importPlan, o options) error {
	lp, err := linkerPtr(c.linker)
	if err != nil {
		return err
	}
	mp, err := modulePtr(c.module)
	if err != nil {
		return err
	}
	if _, err := enginePtr(c.engine); err != nil {
		return err
	}
	plan := (*C.kafig_plan)(c.cmalloc(int(unsafe.Sizeof(C.kafig_plan{}))))
	n := len(ip.abiIdx)
	plan.nimports = C.size_t(n)
	if n > 0 {
		abiIdx := unsafe.Slice((*C.int32_t)(c.cmalloc(n*4)), n)
		names := unsafe.Slice((**C.char)(c.cmalloc(n*int(unsafe.Sizeof((*C.char)(nil))))), n)
		lens := unsafe.Slice((*C.size_t)(c.cmalloc(n*int(unsafe.Sizeof(C.size_t(0))))), n)
		for i := range n {
			abiIdx[i] = C.int32_t(ip.abiIdx[i])
			names[i] = c.cstring(ip.names[i])
			lens[i] = C.size_t(len(ip.names[i]))
		}
		plan.import_abi = &abiIdx[0]
		plan.import_names = &names[0]
		plan.import_name_lens = &lens[0]
	}
	for i := range abi.ImportCount {
		s := abi.Import(i).Signature()
		var p, r [C.KAFIG_MAXVALS]C.uint8_t
		for k, t := range s.Params {
			p[k] = wasmKind(t)
		}
		for k, t := range s.Results {
			r[k] = wasmKind(t)
		}
		ft := C.kafig_functype_new(&p[0], C.size_t(len(s.Params)), &r[0], C.size_t(len(s.Results)))
		if ft == nil {
			return errors.New("kafig: building a host function type failed")
		}
		plan.host_types[i] = ft
	}
	for e := range abi.ExportCount {
		plan.export_names[e] = c.cstring(abi.Export(e).Name())
	}
	plan.linker = (*C.wasmtime_linker_t)(lp)
	plan.module = (*C.wasmtime_module_t)(mp)
	plan.max_wasm_stack = C.size_t(o.wasmStack())
	plan.stack_reserve = C.size_t(stackReserve)
	if !checkThreadStack.Load() {
		plan.max_wasm_stack = 0
	}
	plan.epoch = C.bool(o.backstop)
	c.plan = plan
	return nil
}

func wasmKind(t abi.ValType) C.uint8_t {
	if t == abi.I64 {
		return C.KAFIG_WASM_I64
	}
	return C.KAFIG_WASM_I32
}

// diskHits counts modules loaded from the on-disk cache (for tests).
var diskHits atomic.Int64

// checkThreadStack turns the thread stack checks (in Compile and before each
// call) off for tests that show what they prevent.
var checkThreadStack atomic.Bool

func init() { checkThreadStack.Store(true) }

// module implements backend.Module.
type module struct {
	c      *compiled
	closed atomic.Bool
}

// Close implements backend.Module. The compiled code stays alive while
// instances made from it are open.
func (m *module) Close(ctx context.Context) error {
	if m.closed.CompareAndSwap(false, true) {
		m.c.release()
	}
	return nil
}

// defaultThreadStack is the stack size of threads Go creates for cgo (the
// default pthread stack size), or 0 when unknown.
func defaultThreadStack() int { return int(C.kafig_default_thread_stack()) }

// threadStackSize is defaultThreadStack while the thread stack checks are on.
func threadStackSize() int {
	if !checkThreadStack.Load() {
		return 0
	}
	return defaultThreadStack()
}

// threadStackFree is how much native stack the current thread has left.
func threadStackFree() uint64 { return uint64(C.kafig_thread_stack_free()) }
