package wazerobackend

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/backend-wazero/internal/mmapalloc"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// Instance states. Every state but stateAlive is final, except that Close
// moves any state to stateClosed.
const (
	stateAlive   uint32 = iota
	stateStopped        // Stop was called
	stateCtxDone        // the context of a call ended
	stateTrapped        // a call failed: trap, host panic, engine error
	stateClosed         // Close was called
)

var (
	errStopCalled     = fmt.Errorf("%w: Stop was called", backend.ErrStopped)
	errClosed         = fmt.Errorf("%w: the instance is closed", backend.ErrDead)
	errStoppedEarlier = fmt.Errorf("%w: Stop was called", backend.ErrDead)
	// errStopSignal is the panic a host import raises to unwind a guest that
	// must stop (wazero recovers it and fails the call).
	errStopSignal = errors.New("kafig: wazero: instance stopped")
	// errOutsideCall is the panic of an import called while no export runs
	// (only a start function could do that).
	errOutsideCall = errors.New("kafig: wazero: host import called outside an export call")
)

// setupExport marks the exports called once per instance (at setup) or
// rarely: their api.Function is not kept, since each holds a native stack
// (10 KiB at first) that an idle instance would carry for nothing.
var setupExport = [abi.ExportCount]bool{
	abi.ExportABIVersion: true,
	abi.ExportExchange:   true,
	abi.ExportSetLimits:  true,
	abi.ExportAbort:      true,
}

// longCall: after a call that ran this long, the export's api.Function is
// dropped and made again on the next call. wazero grows a function's native
// stack as deep recursion needs it (about 10 KiB per level of JavaScript
// recursion: 8 MiB at the deepest recursion of the default JSStackLimit,
// 33 MiB at abi.MaxJSStack) and never shrinks it; kept, it would stay with
// an idle instance for good. Growing it far takes longer than this (see
// TestGuestStackRetention for what a faster call can leave), and making an
// api.Function again costs about a microsecond. Timing a call costs two clock
// reads (about 50 ns with a TSC clock, 190 ns with kvm-clock).
const longCall = 500 * time.Microsecond

// i32Results has bit k set when result k of an export is an i32.
var i32Results = func() (out [abi.ExportCount]uint8) {
	for e := range abi.ExportCount {
		for k, t := range abi.Export(e).Signature().Results {
			if t == abi.I32 {
				out[e] |= 1 << k
			}
		}
	}
	return out
}()

type instance struct {
	m       *module
	mod     api.Module
	lin     *mmapalloc.Memory
	imports [abi.ImportCount]backend.HostFunc
	// fns are the exports, resolved on first use (except setupExport): each
	// api.Function owns a native stack (10 KiB at first), which an idle
	// instance need not hold for exports it never calls.
	fns [abi.ExportCount]api.Function

	// stop is the guest's stop global (abi.StopGlobal), nil when the
	// backstop is off or the guest has none (see kill).
	stop api.MutableGlobal

	mem      memory
	memIface backend.Memory // &mem, boxed once
	cctx     callCtx
	onCtxEnd func() // kill(stateCtxDone), allocated once for context.AfterFunc

	state   atomic.Uint32
	deadCh  chan struct{} // closed when the instance leaves stateAlive by kill
	trap    error         // why the instance died, for stateTrapped
	cleanup runtime.Cleanup
}

// leaked frees what an instance dropped without Close holds: its linear
// memory lives outside the Go heap and would never be returned otherwise.
type leaked struct {
	mod api.Module
	lin *mmapalloc.Memory
}

func (l leaked) free() {
	_ = l.mod.Close(context.Background())
	l.lin.Release()
}

func newInstance(m *module, mod api.Module, lin *mmapalloc.Memory, imports *[abi.ImportCount]backend.HostFunc, stop api.MutableGlobal) *instance {
	i := &instance{m: m, mod: mod, lin: lin, imports: *imports, stop: stop, deadCh: make(chan struct{})}
	i.mem = memory{inst: i, mem: mod.Memory()}
	i.memIface = &i.mem
	i.cctx.inst = i
	i.onCtxEnd = func() { i.kill(stateCtxDone) }
	i.cleanup = runtime.AddCleanup(i, leaked.free, leaked{mod, lin})
	return i
}

// kill moves a live instance to the dead state st and arms the backstop: it
// sets the guest's stop global to 1 (the guest traps at its next loop
// iteration, and Call reports the stop, not the trap), or, for a guest
// without one, wakes wazero's termination watcher (deadCh). It reports
// whether it did.
//
// It runs on any goroutine (Stop, context.AfterFunc) while a call may run
// on another. Only the goroutine whose CompareAndSwap wins writes the
// global, once, and no Go code of this package or of wazero reads it
// during the call; Call waits for deadCh before it reports a stop, so
// whatever follows the Call is ordered after the store. The Go side thus
// has a single writer and no concurrent reader: the race detector has
// nothing to report. The reader that matters is the
// guest's machine code: wazero's compiler (wazevo) keeps a module's globals
// in the instance's context buffer, MutableGlobal.Set stores 8 bytes there
// (binary.LittleEndian.PutUint64, one aligned store on amd64 and arm64),
// and the compiled global.get is a load from that buffer. The load is
// not hoisted out of the loop: wazevo reuses a global's value only within a
// straight-line path of blocks, and a loop header has two predecessors
// (the entry and the back edge), so the guard's load runs every iteration.
// Cache coherence makes the store visible to the other core within
// nanoseconds; no fence is needed since nothing else is published with it.
// (On platforms where wazero interprets instead of compiling, the
// interpreter reads the global from Go: a benign word-sized race that the
// race detector could see there; wazero compiles on every platform the race
// detector supports that allows executable memory.)
func (i *instance) kill(st uint32) bool {
	if !i.state.CompareAndSwap(stateAlive, st) {
		return false
	}
	if i.stop != nil && (st == stateStopped || st == stateCtxDone) {
		i.stop.Set(1)
	}
	close(i.deadCh)
	return true
}

// Call implements backend.Instance.
func (i *instance) Call(ctx context.Context, fn abi.Export, stack []uint64) error {
	if st := i.state.Load(); st != stateAlive {
		return i.deadErr(st)
	}
	if int(fn) >= abi.ExportCount {
		i.fail(fmt.Errorf("kafig: wazero: no export %d", fn))
		return i.trap
	}
	if ctx.Err() != nil {
		i.kill(stateCtxDone)
		return stoppedErr(ctx)
	}
	f := i.fns[fn]
	if f == nil {
		if f = i.mod.ExportedFunction(fn.Name()); f == nil {
			i.fail(fmt.Errorf("kafig: wazero: export %s not found", fn.Name()))
			return i.trap
		}
		if !setupExport[fn] {
			i.fns[fn] = f
		}
	}

	i.cctx.parent = ctx
	var stopWatch func() bool
	if i.m.backstop && ctx.Done() != nil {
		stopWatch = context.AfterFunc(ctx, i.onCtxEnd)
	}
	start := time.Now()
	err := i.callWithStack(f, stack)
	if time.Since(start) > longCall {
		i.fns[fn] = nil // let its native stack go (see longCall)
	}
	if stopWatch != nil && !stopWatch() {
		// The context ended during the call and onCtxEnd has started, or is
		// about to, on its own goroutine. Kill here rather than let it do it
		// later, when it could stop the next call instead of this one.
		i.kill(stateCtxDone)
	}
	i.cctx.parent = nil

	if err != nil {
		i.fail(fmt.Errorf("kafig: wazero: %s: %w", fn.Name(), err))
	} else if r := i32Results[fn]; r != 0 {
		// wazero stores an i32 result in the low half of its slot and
		// leaves the high half as it was: zero-extend, as for parameters.
		for k := 0; r != 0; k, r = k+1, r>>1 {
			if r&1 != 0 {
				stack[k] = uint64(uint32(stack[k]))
			}
		}
	}
	// A kill during the call wins over its outcome. Waiting for deadCh
	// (closed by kill right after it set the stop global, so at once) makes
	// the end of this Call happen after that store: whoever looks at the
	// instance next, from any goroutine, is ordered after it.
	switch i.state.Load() {
	case stateAlive:
		return nil
	case stateStopped:
		<-i.deadCh
		return errStopCalled
	case stateCtxDone:
		<-i.deadCh
		return stoppedErr(ctx)
	case stateTrapped:
		return i.trap
	default:
		return errClosed
	}
}

func (i *instance) callWithStack(f api.Function, stack []uint64) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f.CallWithStack(&i.cctx, stack)
}

// fail records a failed call: the instance is dead.
func (i *instance) fail(err error) {
	i.trap = err // written before the state: read only after a Load sees stateTrapped
	i.kill(stateTrapped)
}

func stoppedErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", backend.ErrStopped, err)
	}
	return backend.ErrStopped
}

// deadErr is the error of a call that finds the instance in st.
func (i *instance) deadErr(st uint32) error {
	switch st {
	case stateStopped:
		return errStoppedEarlier
	case stateCtxDone:
		return fmt.Errorf("%w: an earlier call's context ended", backend.ErrDead)
	case stateTrapped:
		return fmt.Errorf("%w: %w", backend.ErrDead, i.trap)
	default:
		return errClosed
	}
}

// Stop implements backend.Instance.
func (i *instance) Stop() { i.kill(stateStopped) }

// Memory implements backend.Instance.
func (i *instance) Memory() backend.Memory { return i.memIface }

// Close implements backend.Instance.
func (i *instance) Close(ctx context.Context) error {
	if i.state.Swap(stateClosed) == stateClosed {
		return nil
	}
	i.cleanup.Stop()
	err := i.mod.Close(ctx)
	i.lin.Release()
	i.fns = [abi.ExportCount]api.Function{}
	if err != nil {
		return fmt.Errorf("kafig: wazero: close: %w", err)
	}
	return nil
}

// memory implements backend.Memory over wazero's api.Memory.
type memory struct {
	inst *instance
	mem  api.Memory
}

func (m *memory) Read(ptr, n uint32) ([]byte, bool) {
	if m.inst.state.Load() == stateClosed {
		return nil, false
	}
	return m.mem.Read(ptr, n)
}

func (m *memory) Write(ptr uint32, b []byte) bool {
	if m.inst.state.Load() == stateClosed {
		return false
	}
	return m.mem.Write(ptr, b)
}

func (m *memory) Size() uint32 {
	if m.inst.state.Load() == stateClosed {
		return 0
	}
	return m.mem.Size()
}

// callCtx is the context every export call runs with. It serves two ends:
//
//   - Host imports find their instance by type-asserting it (no lookup, no
//     allocation) and pass the caller's context (parent) to the HostFunc.
//   - For a guest without the stop global, wazero's termination watcher
//     (the backstop then) waits on Done, which is closed when the instance
//     is killed: by Stop, by the end of the caller's context
//     (context.AfterFunc), or by a failure. With the stop global wazero does
//     not watch the context (no WithCloseOnContextDone): Done costs nothing.
//
// parent is only touched by the goroutine that calls; the watcher goroutine,
// which may outlive a call briefly, only uses Done and Err.
type callCtx struct {
	inst   *instance
	parent context.Context
}

type callCtxKey struct{}

func (c *callCtx) Deadline() (time.Time, bool) {
	if c.parent != nil {
		return c.parent.Deadline()
	}
	return time.Time{}, false
}

func (c *callCtx) Done() <-chan struct{} { return c.inst.deadCh }

func (c *callCtx) Err() error {
	select {
	case <-c.inst.deadCh:
		return context.Canceled
	default:
		return nil
	}
}

func (c *callCtx) Value(key any) any {
	if _, ok := key.(callCtxKey); ok {
		return c
	}
	if c.parent != nil {
		return c.parent.Value(key)
	}
	return nil
}

// hostFunc adapts the instance's HostFunc for imp to wazero. One adapter
// serves every instance of the module: the instance comes with the context.
func hostFunc(imp abi.Import, backstop bool) api.GoModuleFunc {
	return func(ctx context.Context, _ api.Module, stack []uint64) {
		c, ok := ctx.(*callCtx)
		if !ok {
			// wazero may wrap the context (e.g. its snapshotter).
			if c, ok = ctx.Value(callCtxKey{}).(*callCtx); !ok {
				panic(errOutsideCall)
			}
		}
		i := c.inst
		if i.state.Load() != stateAlive {
			panic(errStopSignal)
		}
		if !backstop && c.parent.Done() != nil && c.parent.Err() != nil {
			// Without the backstop, imports are where a done context stops
			// the guest.
			i.kill(stateCtxDone)
			panic(errStopSignal)
		}
		i.imports[imp](c.parent, i.memIface, stack)
	}
}
