//go:build cgo

package wasmtimebackend

/*
#include <stdlib.h>
#include "kafig_wt.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// ctxWatch is a context.AfterFunc registered on a call's context.
type ctxWatch struct {
	done <-chan struct{}
	gen  uint64
	stop func() bool
}

// rawVal is a wasmtime_val_raw_t: 16 bytes, an i32 or i64 little-endian in
// the first bytes.
type rawVal struct{ lo, hi uint64 }

// instance implements backend.Instance: one Store, one wasm instance.
type instance struct {
	c      *C.kafig_inst // C memory; nil once closed
	comp   *compiled
	fl     *flavor // the engine the instance lives in
	pooled bool    // in comp's pool (counted in comp.pooled)
	handle cgo.Handle

	imports [abi.ImportCount]backend.HostFunc
	mem     memory

	// callMu serializes Call and Close.
	callMu sync.Mutex
	// lifeMu guards closed and the C memory against Stop.
	lifeMu sync.Mutex
	closed bool
	// gone mirrors closed for lock-free readers (Memory).
	gone atomic.Bool

	dead  atomic.Bool
	death atomic.Pointer[string] // why the instance died (first reason wins)
	// stopCause is the context error that stopped the instance, if any;
	// written under lifeMu before the stop flag is raised.
	stopCause error
	// runGen is the watch generation of the running call (0: none, or a
	// context that cannot end); guarded by lifeMu.
	runGen uint64

	// watch is the context watcher of the last call (guarded by callMu). It
	// is kept while later calls use a context with the same Done channel
	// (the common case: several calls of one operation), because
	// registering a context.AfterFunc costs about a microsecond.
	watch   ctxWatch
	lastGen uint64

	// Set during a call, used by host functions (same goroutine).
	callCtx   context.Context
	hostPanic any
	hostIdx   int
	stack     [C.KAFIG_MAXVALS]uint64

	// When the running call last went through the Go scheduler, and host
	// calls since the clock was read (see yieldIfDue).
	lastYield  time.Time
	sinceClock int
}

// Instantiate implements backend.Module.
func (m *module) Instantiate(ctx context.Context, cfg backend.InstanceConfig) (_ backend.Instance, err error) {
	if m.closed.Load() {
		return nil, errors.New("kafig: instantiate: module is closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kafig: instantiate: %w", err)
	}
	c := m.c
	if !c.tryAcquire() {
		return nil, errors.New("kafig: instantiate: module is closed")
	}
	i := &instance{comp: c, imports: cfg.Imports}
	i.mem.i = i
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kafig: wasmtime panicked while instantiating: %v", r)
		}
		if err != nil {
			_ = i.Close(ctx)
		}
	}()

	i.fl = c.main
	if c.main.slots > 0 {
		if c.pooled.Add(1) <= int64(c.main.slots) {
			i.pooled = true
		} else {
			c.pooled.Add(-1)
			if i.fl, err = c.spillFlavor(); err != nil {
				return nil, fmt.Errorf("kafig: instantiate: the instance pool is full: %w", err)
			}
		}
	}
	var maxMem int64
	if p := cfg.MaxMemoryPages; p > 0 {
		maxMem = int64(min(p, 65536)) * abi.PageSize
	}
	i.handle = cgo.NewHandle(i)
	i.c = (*C.kafig_inst)(C.calloc(1, C.size_t(unsafe.Sizeof(C.kafig_inst{}))))
	if i.c == nil {
		return nil, errors.New("kafig: out of C memory")
	}
	switch rc := C.kafig_inst_init(i.c, i.fl.plan, C.uintptr_t(i.handle), C.int64_t(maxMem)); rc {
	case C.KAFIG_OK:
	case C.KAFIG_TRAP:
		return nil, fmt.Errorf("kafig: instantiate: guest trapped: %s", trapSummary(C.GoString(&i.c.msg[0])))
	default:
		msg := cleanMsg(C.GoString(&i.c.msg[0]))
		if p := cfg.MaxMemoryPages; p > 0 {
			msg += fmt.Sprintf(" (memory cap %d pages)", p)
		}
		return nil, fmt.Errorf("kafig: instantiate: %s", msg)
	}

	// The guest is pre-initialized (Wizer): no _start, no _initialize.
	stack := []uint64{0}
	if err := i.Call(ctx, abi.ExportABIVersion, stack); err != nil {
		return nil, fmt.Errorf("kafig: instantiate: %s: %w", abi.ExportABIVersion.Name(), err)
	}
	if v := uint32(stack[0]); v != abi.Version {
		return nil, fmt.Errorf("%w: guest ABI version %d, host ABI version %d", backend.ErrBadModule, v, abi.Version)
	}
	return i, nil
}

func (i *instance) vals() *[C.KAFIG_MAXVALS]rawVal {
	return (*[C.KAFIG_MAXVALS]rawVal)(unsafe.Pointer(&i.c.vals[0]))
}

func (i *instance) stopFlag() *uint32 { return (*uint32)(unsafe.Pointer(&i.c.stop)) }

// kill marks the instance dead; the first reason is kept.
func (i *instance) kill(reason string) {
	i.death.CompareAndSwap(nil, &reason)
	i.dead.Store(true)
}

func (i *instance) deadErr() error {
	if r := i.death.Load(); r != nil {
		return fmt.Errorf("%w (%s)", backend.ErrDead, *r)
	}
	return backend.ErrDead
}

// stoppedErr is the error of a stopped call.
func (i *instance) stoppedErr() error {
	i.lifeMu.Lock()
	cause := i.stopCause
	i.lifeMu.Unlock()
	if cause != nil {
		return fmt.Errorf("%w: %w", backend.ErrStopped, cause)
	}
	return backend.ErrStopped
}

// stop raises the stop flag (and the guest's stop word): the running guest
// call, if any, traps at its next loop iteration (its next epoch check, for
// a guest without the guard) or host import, and the instance is dead. It is the
// only thing other goroutines do to an instance.
func (i *instance) stop(cause error) {
	i.lifeMu.Lock()
	defer i.lifeMu.Unlock()
	i.stopLocked(cause)
}

// ctxEnded runs (in its own goroutine) when the context of watch gen ends:
// it stops the instance if a call under that context is running.
func (i *instance) ctxEnded(gen uint64, ctx context.Context) {
	i.lifeMu.Lock()
	defer i.lifeMu.Unlock()
	if i.runGen == gen {
		i.stopLocked(ctxCause(ctx))
	}
}

func (i *instance) stopLocked(cause error) {
	if i.closed || i.c == nil {
		return
	}
	flag := i.stopFlag()
	if atomic.LoadUint32(flag) != 0 {
		return
	}
	i.stopCause = cause
	if cause != nil {
		i.kill("stopped: " + cause.Error())
	} else {
		i.kill("stopped")
	}
	atomic.StoreUint32(flag, 1)
	if w := i.c.stop_word; w != nil {
		// The guard's load at the guest's next loop header sees it and traps.
		atomic.StoreUint32((*uint32)(unsafe.Pointer(w)), 1)
	}
	if i.comp.opts.epoch {
		// Every store of the engine whose call is running reaches its
		// epoch deadline callback; only this one sees its flag and traps.
		i.fl.engine.IncrementEpoch()
	}
}

func ctxCause(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// Stop implements backend.Instance.
func (i *instance) Stop() { i.stop(nil) }

// Call implements backend.Instance.
func (i *instance) Call(ctx context.Context, fn abi.Export, stack []uint64) (err error) {
	if int(fn) >= abi.ExportCount {
		return fmt.Errorf("kafig: call: unknown export %d", fn)
	}
	s := &exportSigs[fn]
	if len(stack) < s.n {
		return fmt.Errorf("kafig: call %s: stack has %d slots, needs %d", fn.Name(), len(stack), s.n)
	}
	i.callMu.Lock()
	defer i.callMu.Unlock()
	if i.dead.Load() || i.c == nil {
		return i.deadErr()
	}
	defer func() {
		if r := recover(); r != nil {
			i.kill(fmt.Sprintf("panic: %v", r))
			err = fmt.Errorf("kafig: call %s: wasmtime backend panicked: %v", fn.Name(), r)
		}
	}()

	done := ctx.Done()
	if done != nil {
		if ctx.Err() != nil {
			i.stop(ctxCause(ctx))
			return i.stoppedErr()
		}
		if i.watch.done != done {
			if i.watch.stop != nil {
				i.watch.stop()
			}
			i.lastGen++
			gen := i.lastGen
			i.watch = ctxWatch{done: done, gen: gen, stop: context.AfterFunc(ctx, func() { i.ctxEnded(gen, ctx) })}
		}
		i.lifeMu.Lock()
		i.runGen = i.watch.gen
		i.lifeMu.Unlock()
	}

	vals := i.vals()
	for k, t := range s.params {
		v := stack[k]
		if t == abi.I32 {
			v = uint64(uint32(v))
		}
		vals[k].lo = v
	}
	i.callCtx = ctx
	i.lastYield, i.sinceClock = time.Time{}, 0
	rc := C.kafig_call(i.c, C.uint32_t(fn), C.size_t(s.n))
	i.callCtx = nil
	if done != nil {
		// From here on the end of ctx no longer concerns this instance. If
		// it ended during the call, the stop flag is up (checked below) or
		// the call finished first, and succeeded.
		i.lifeMu.Lock()
		i.runGen = 0
		i.lifeMu.Unlock()
	}
	if atomic.LoadUint32(i.stopFlag()) != 0 {
		i.hostPanic = nil
		i.dead.Store(true)
		return i.stoppedErr()
	}
	if p := i.hostPanic; p != nil {
		i.hostPanic = nil
		name := abi.Import(i.hostIdx).Name()
		i.kill(fmt.Sprintf("host function %s panicked", name))
		return fmt.Errorf("kafig: call %s: host function %s panicked: %v", fn.Name(), name, p)
	}
	switch rc {
	case C.KAFIG_OK:
		for k, t := range s.results {
			v := vals[k].lo
			if t == abi.I32 {
				v = uint64(uint32(v))
			}
			stack[k] = v
		}
		return nil
	case C.KAFIG_TRAP:
		msg := trapSummary(C.GoString(&i.c.msg[0]))
		kind := "trapped"
		if i.c.has_trap_code != 0 && i.c.trap_code == C.KAFIG_TRAP_CODE_STACK_OVERFLOW {
			kind = "ran out of native stack"
		}
		i.kill("guest " + kind)
		return fmt.Errorf("kafig: call %s: guest %s: %s", fn.Name(), kind, msg)
	default:
		msg := trapSummary(C.GoString(&i.c.msg[0]))
		i.kill(msg)
		return fmt.Errorf("kafig: call %s: %s", fn.Name(), trimKafig(msg))
	}
}

func trimKafig(s string) string {
	const p = "kafig: "
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

//export kafigHostCall
func kafigHostCall(h C.uintptr_t, idx C.uint32_t, vals *C.kafig_val_raw_t, n C.size_t) (rc C.int) {
	i, ok := cgo.Handle(h).Value().(*instance)
	if !ok || int(idx) >= abi.ImportCount {
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			i.hostPanic = r
			i.hostIdx = int(idx)
			rc = 1
		}
	}()
	f := i.imports[idx]
	if f == nil {
		panic(fmt.Sprintf("kafig: no host function for import %s", abi.Import(idx).Name()))
	}
	s := &importSigs[idx]
	raw := (*[C.KAFIG_MAXVALS]rawVal)(unsafe.Pointer(vals))
	stack := i.stack[:s.n]
	for k, t := range s.params {
		v := raw[k].lo
		if t == abi.I32 {
			v = uint64(uint32(v))
		}
		stack[k] = v
	}
	ctx := i.callCtx
	if ctx == nil {
		ctx = context.Background()
	}
	f(ctx, &i.mem, stack)
	for k := range s.results {
		raw[k].lo = stack[k]
	}
	i.sinceClock++
	if i.sinceClock >= clockEvery || idx == C.uint32_t(abi.ImportInterrupt) {
		i.yieldIfDue()
	}
	return 0
}

// A guest call is one cgo call, however many host functions it calls, so
// the Go scheduler never sees its goroutine run again until it returns.
// Once that has lasted 10 ms, sysmon takes the goroutine's P away at each
// of its ticks (20 µs apart at first), and each host call after that must
// win a P back and wake sysmon: on CPU-bound scripts the process burnt
// about 12% more CPU than wall time doing this. Going through the scheduler
// (runtime.Gosched, from the host call) every yieldEvery resets sysmon's
// clock. The clock is read at every interrupt poll (a long call's steady
// heartbeat) and every clockEvery other host calls: reading it costs about
// 50 ns, 2% of a host.rpcSync.
const (
	yieldEvery = 5 * time.Millisecond
	clockEvery = 32
)

func (i *instance) yieldIfDue() {
	i.sinceClock = 0
	now := time.Now()
	switch {
	case i.lastYield.IsZero():
		i.lastYield = now
	case now.Sub(i.lastYield) >= yieldEvery:
		i.lastYield = now
		runtime.Gosched()
	}
}

// Memory implements backend.Instance.
func (i *instance) Memory() backend.Memory { return &i.mem }

// Close implements backend.Instance.
func (i *instance) Close(ctx context.Context) error {
	if !i.callMu.TryLock() {
		// A call is running (on another goroutine, against the contract):
		// stop it and wait for it to return.
		i.Stop()
		i.callMu.Lock()
	}
	defer i.callMu.Unlock()
	if i.watch.stop != nil {
		i.watch.stop()
		i.watch = ctxWatch{}
	}
	i.lifeMu.Lock()
	if i.closed {
		i.lifeMu.Unlock()
		return nil
	}
	i.closed = true
	i.gone.Store(true)
	i.kill("closed")
	i.lifeMu.Unlock()

	if i.c != nil {
		C.kafig_inst_free(i.c) // the store, with the wasm instance and its memory
		C.free(unsafe.Pointer(i.c))
		i.c = nil
	}
	if i.pooled {
		i.pooled = false
		i.comp.pooled.Add(-1)
	}
	if i.handle != 0 {
		i.handle.Delete()
		i.handle = 0
	}
	i.comp.release()
	return nil
}

// memory implements backend.Memory over the instance's linear memory. The C
// side refreshes base and size after every guest call and on entry of every
// host function, the only points where they can have changed.
type memory struct{ i *instance }

func (m *memory) bounds() (unsafe.Pointer, uint64) {
	i := m.i
	if i.gone.Load() || i.c == nil {
		return nil, 0
	}
	return unsafe.Pointer(i.c.mem_base), uint64(i.c.mem_size)
}

// Read implements backend.Memory.
func (m *memory) Read(ptr, n uint32) ([]byte, bool) {
	base, size := m.bounds()
	if base == nil || uint64(ptr)+uint64(n) > size {
		return nil, false
	}
	return unsafe.Slice((*byte)(unsafe.Add(base, uintptr(ptr))), n), true
}

// Write implements backend.Memory.
func (m *memory) Write(ptr uint32, b []byte) bool {
	base, size := m.bounds()
	if base == nil || uint64(ptr)+uint64(len(b)) > size {
		return false
	}
	copy(unsafe.Slice((*byte)(unsafe.Add(base, uintptr(ptr))), len(b)), b)
	return true
}

// Size implements backend.Memory. A full 4 GiB memory reports 4 GiB - 1,
// the most a uint32 holds.
func (m *memory) Size() uint32 {
	_, size := m.bounds()
	if size > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(size)
}
