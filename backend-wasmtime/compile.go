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
	"github.com/kafig-dev/kafig/guest/wasmguard"
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

// compiled is the guest compiled for one set of engine settings (and what
// its instances share), cached per process by the sha256 of the wasm and the
// settings, and reference-counted by the Modules and Instances that use it.
//
// With the instance pool (WithInstancePool, off by default), main's engine
// allocates instances from a fixed number of slots; when they are all in
// use, instances spill over to a second engine that allocates on demand
// (spill, made on first need from main's compiled code).
type compiled struct {
	key   string
	ready chan struct{} // closed when main or err is set
	err   error
	refs  int // guarded by cacheMu

	opts options // with the guard's settings once built
	main *flavor
	// pooled counts the live instances in main's pool (when pooled).
	pooled atomic.Int64

	spillMu  sync.Mutex
	spill    *flavor
	spillErr error
}

// flavor is one Engine with the module compiled or loaded for it, the linker
// and the C plan its instances are made from.
type flavor struct {
	engine *wasmtime.Engine
	module *wasmtime.Module
	linker *wasmtime.Linker
	plan   *C.kafig_plan
	cmem   []unsafe.Pointer // C allocations of the plan
	slots  int              // pool slots; 0: on-demand allocation
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
	c.spillMu.Lock()
	spill := c.spill
	c.spill = nil
	c.spillMu.Unlock()
	spill.free()
	c.main.free()
	c.main = nil
}

func (f *flavor) free() {
	if f == nil {
		return
	}
	if f.plan != nil {
		C.kafig_plan_unlink(f.plan)
		for i := range abi.ImportCount {
			if t := f.plan.host_types[i]; t != nil {
				C.wasm_functype_delete(t)
			}
		}
		f.plan = nil
	}
	for _, p := range f.cmem {
		C.free(p)
	}
	f.cmem = nil
	if f.linker != nil {
		f.linker.Close()
	}
	if f.module != nil {
		f.module.Close()
	}
	if f.engine != nil {
		f.engine.Close()
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
	key := fmt.Sprintf("%x/%s/%d/%d", sum, settings, o.wasmStack(), o.poolSlots())

	cacheMu.Lock()
	c := cache[key]
	owner := c == nil
	if owner {
		c = &compiled{key: key, ready: make(chan struct{}), refs: 1, opts: o}
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
	if o.backstop && !o.epochs {
		if g, addr, ok := guardGuest(wasm); ok {
			wasm, o.guarded, o.stopWord = g, true, addr
		}
	}
	o.epoch = o.backstop && !o.guarded
	c.opts = o
	c.main = &flavor{}
	f := c.main
	f.newEngine(o, o.poolSlots())

	var path string
	if o.cacheDir != "" {
		path = cachePath(o.cacheDir, sum, settings)
		if payload := readCache(path, sum); payload != nil {
			if m, err := wasmtime.NewModuleDeserialize(f.engine, payload); err == nil {
				f.module = m
				diskHits.Add(1)
			}
		}
	}
	if f.module == nil {
		m, err := wasmtime.NewModule(f.engine, wasm)
		if err != nil {
			return badModule("%s", cleanErr(err))
		}
		f.module = m
		if path != "" {
			if ser, err := m.Serialize(); err == nil {
				_ = writeCache(path, sum, ser) // the cache is best effort
			}
		}
	}

	if err := c.check(f.module); err != nil {
		return err
	}
	return f.link(o)
}

// poolMu serializes the making of pooled engines: Wasmtime reserves the
// whole pool's address space when it makes the engine, and aborts the
// process if it cannot, so the reservation is tried first (poolFits).
var poolMu sync.Mutex

// newEngine makes the flavor's engine, with a pool of slots (when slots > 0
// and the address space has room for it) or on-demand allocation.
func (f *flavor) newEngine(o options, slots int) {
	poolMu.Lock()
	defer poolMu.Unlock()
	cfg := wasmtime.NewConfig()
	cfg.SetEpochInterruption(o.epoch)
	cfg.SetMaxWasmStack(o.wasmStack())
	cp, cpErr := configPtr(cfg)
	if cpErr == nil {
		C.kafig_config_fixed_memory((*C.wasm_config_t)(cp))
	}
	if slots > 0 && poolFits(slots) {
		if cpErr == nil {
			C.kafig_config_pool((*C.wasm_config_t)(cp), C.uint32_t(slots))
			f.slots = slots
		}
	}
	f.engine = wasmtime.NewEngineWithConfig(cfg) // takes cfg
}

// poolSlotBytes is the address space one pool slot reserves: a 4 GiB linear
// memory (so that wasm code needs no bounds checks) and its 32 MiB guard,
// the table and the instance's metadata; poolFits asks for twice that per
// slot, to leave room for everything else.
const poolSlotBytes = 4<<30 + 32<<20 + 2<<20

func poolFits(slots int) bool {
	return bool(C.kafig_can_reserve(C.uint64_t(slots) * 2 * poolSlotBytes))
}

// spillFlavor returns the on-demand flavor, made on first use from main's
// compiled code.
func (c *compiled) spillFlavor() (*flavor, error) {
	c.spillMu.Lock()
	defer c.spillMu.Unlock()
	if c.spill != nil || c.spillErr != nil {
		return c.spill, c.spillErr
	}
	f := &flavor{}
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("kafig: wasmtime panicked while loading the module: %v", r)
			}
		}()
		f.newEngine(c.opts, 0)
		ser, err := c.main.module.Serialize()
		if err != nil {
			return fmt.Errorf("kafig: serializing the module: %s", cleanErr(err))
		}
		if f.module, err = wasmtime.NewModuleDeserialize(f.engine, ser); err != nil {
			return fmt.Errorf("kafig: loading the module into an on-demand engine: %s", cleanErr(err))
		}
		return f.link(c.opts)
	}()
	if err != nil {
		f.free()
		c.spillErr = err
		return nil, err
	}
	c.spill = f
	return f, nil
}

// link makes the linker (WASI and the host functions) and the plan.
func (f *flavor) link(o options) error {
	f.linker = wasmtime.NewLinker(f.engine)
	if err := f.linker.DefineWasi(); err != nil {
		return fmt.Errorf("kafig: defining WASI: %s", cleanErr(err))
	}
	return f.mkPlan(o)
}

// check validates the module's imports and exports against the ABI.
func (c *compiled) check(module *wasmtime.Module) error {
	wasi := map[string]bool{}
	for _, n := range strings.Fields(abi.WASIImports) {
		wasi[n] = true
	}
	for _, it := range module.Imports() {
		mod := it.Module()
		name := ""
		if n := it.Name(); n != nil {
			name = *n
		}
		ft := it.Type().FuncType()
		if ft == nil {
			return badModule("import %s.%s is not a function", mod, name)
		}
		got, ok := signatureOf(ft)
		if !ok {
			return badModule("import %s.%s has a non-integer type", mod, name)
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
				return badModule("unknown import %s.%s", mod, name)
			}
			want := abi.Import(idx).Signature()
			if !sameTypes(got.Params, want.Params) || !sameTypes(got.Results, want.Results) {
				return badModule("import %s.%s has type %s, want %s", mod, name, sigString(got), sigString(want))
			}
		case abi.WASIModule:
			if !wasi[name] {
				return badModule("import %s.%s is not one of the allowed WASI functions (%s)", mod, name, abi.WASIImports)
			}
			want := wasiSigs[name]
			if !sameTypes(got.Params, want.Params) || !sameTypes(got.Results, want.Results) {
				return badModule("import %s.%s has type %s, want %s", mod, name, sigString(got), sigString(want))
			}
		default:
			return badModule("import %s.%s is outside the ABI (only %q and %q)", mod, name, abi.ImportModule, abi.WASIModule)
		}
	}

	exports := map[string]*wasmtime.ExternType{}
	for _, et := range module.Exports() {
		exports[et.Name()] = et.Type()
	}
	for e := range abi.ExportCount {
		name := abi.Export(e).Name()
		t, ok := exports[name]
		if !ok {
			return badModule("missing export %s", name)
		}
		ft := t.FuncType()
		if ft == nil {
			return badModule("export %s is not a function", name)
		}
		got, ok := signatureOf(ft)
		want := abi.Export(e).Signature()
		if !ok || !sameTypes(got.Params, want.Params) || !sameTypes(got.Results, want.Results) {
			return badModule("export %s has type %s, want %s", name, sigString(got), sigString(want))
		}
	}
	mt, ok := exports["memory"]
	if !ok || mt.MemoryType() == nil {
		return badModule("missing memory export")
	}
	if m := mt.MemoryType(); m.Is64() || m.IsShared() {
		return badModule("memory must be a 32-bit, unshared memory")
	}
	return nil
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

func (f *flavor) cmalloc(n int) unsafe.Pointer {
	p := C.calloc(1, C.size_t(n))
	if p == nil {
		panic("kafig: out of C memory")
	}
	f.cmem = append(f.cmem, p)
	return p
}

func (f *flavor) cstring(s string) *C.char {
	p := f.cmalloc(len(s) + 1)
	copy(unsafe.Slice((*byte)(p), len(s)), s)
	return (*C.char)(p)
}

// mkPlan builds the C-side description of how to instantiate the module,
// and pre-links the module (kafig_plan_link).
func (f *flavor) mkPlan(o options) error {
	lp, err := linkerPtr(f.linker)
	if err != nil {
		return err
	}
	mp, err := modulePtr(f.module)
	if err != nil {
		return err
	}
	ep, err := enginePtr(f.engine)
	if err != nil {
		return err
	}
	plan := (*C.kafig_plan)(f.cmalloc(int(unsafe.Sizeof(C.kafig_plan{}))))
	f.plan = plan
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
		plan.import_names[i] = f.cstring(abi.Import(i).Name())
	}
	for e := range abi.ExportCount {
		plan.export_names[e] = f.cstring(abi.Export(e).Name())
	}
	plan.engine = (*C.wasm_engine_t)(ep)
	plan.max_wasm_stack = C.size_t(o.wasmStack())
	plan.stack_reserve = C.size_t(stackReserve)
	if !checkThreadStack.Load() {
		plan.max_wasm_stack = 0
	}
	plan.epoch = C.bool(o.epoch)
	plan.guard = C.bool(o.guarded)
	plan.stop_word = C.uint32_t(o.stopWord)
	var msg [512]C.char
	if C.kafig_plan_link(plan, (*C.wasmtime_linker_t)(lp), (*C.wasmtime_module_t)(mp), &msg[0], C.size_t(len(msg))) != C.KAFIG_OK {
		return fmt.Errorf("kafig: linking the module: %s", cleanMsg(C.GoString(&msg[0])))
	}
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

// guardGuest returns the guest with the stop guard that wasmtime needs and
// the address of its stop word (abi.StopWord): every loop but the
// interpreter's (abi.GuardSkip, which polls the host on its own) tests the
// word, which Stop sets from any thread; a store's globals may only be
// touched by the thread running it, memory by any. That costs a load and a
// branch per loop iteration, where epoch interruption also checks at every
// function entry. ok is false for a module that cannot take the guard (not
// the kafig guest): epochs are then the backstop.
func guardGuest(wasm []byte) (out []byte, addr uint32, ok bool) {
	out, rep, err := wasmguard.Apply(wasm, wasmguard.Options{StopWord: abi.StopWord, Skip: []string{abi.GuardSkip}})
	if err != nil {
		return nil, 0, false
	}
	return out, rep.StopWordAddr, true
}
