package kafig

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
	"github.com/kafig-dev/kafig/kafig/internal/exchange"
	"github.com/kafig-dev/kafig/kafig/internal/rpc"
)

// Instance is one sandboxed JavaScript world: its own linear memory, QuickJS
// heap, globals and host.on handlers.
//
// # Notes
//   - An Instance serializes its calls: Eval, EvalCompiled, DispatchEvent and
//     the stats methods may be called from many goroutines, but one runs at
//     a time and the others wait for it (each respecting its own context
//     while it waits).
//   - Close ends a running call (it returns ErrClosed) and frees the guest.
//   - When a call traps or is stopped from outside (see
//     WithInterruptCallback), the instance is dead: that call's error and
//     every later call's satisfy errors.Is(err, ErrInstanceDead).
type Instance struct {
	rt       *Runtime
	cfg      instanceConfig
	bi       backend.Instance
	mem      backend.Memory
	x        exchange.Area
	memLimit uint64 // bytes of linear memory allowed

	sem       chan struct{} // 1 slot: held by the running operation
	closeCh   chan struct{} // closed by Close
	closed    atomic.Bool
	dead      atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// State of the running operation, owned by the goroutine that holds sem
	// (host imports run on it too).
	stack          [5]uint64
	ctx            context.Context // the operation's context
	async          bool
	pool           *rpc.Pool          // host.rpc calls of the running async operation
	stopCause      error              // why the interrupt import said stop: ctx.Err() or nil
	syncReply      []byte             // a long host.rpcSync reply, for rpc_sync_take
	handlerCtx     context.Context    // ctx marked as this operation's (see ownHandlerCtx)
	cancelHandlers context.CancelFunc // cancels handlerCtx; guarded by runMu
	probeCalledRPC bool               // New's prelude check saw host.rpcSync (see WithPrelude)
	callStart      int64              // nanotime at the start of the running guest call

	// Shared with the monitor goroutine.
	running atomic.Bool // a guest call is running
	inHost  atomic.Bool // ... and is inside an RPC handler
	// inUser: the running operation is in user code that it runs on its own
	// goroutine (a host.rpcSync handler, the interrupt callback, the
	// rejection handler), which may be the caller of Close.
	inUser     atomic.Bool
	opMark     atomic.Pointer[opMark] // the running operation's, once it has one
	lastPoll   atomic.Int64           // nanotime of the last interrupt poll
	opcodes    atomic.Uint64
	cpuNanos   atomic.Int64 // CPU time of finished guest calls
	hostNanos  atomic.Int64 // time in RPC handlers during the running call
	runMu      sync.Mutex   // guards the fields below and Stop decisions
	runCtx     context.Context
	stopped    bool
	stopReason error
	freeByOp   bool       // Close left freeing the guest to the running operation
	cbMu       sync.Mutex // the interrupt callback never runs concurrently
}

var epoch = time.Now()

// nanotime is a monotonic clock reading.
func nanotime() int64 { return int64(time.Since(epoch)) }

func newInstance(ctx context.Context, rt *Runtime, cfg instanceConfig) (*Instance, error) {
	in := &Instance{
		rt:       rt,
		cfg:      cfg,
		sem:      make(chan struct{}, 1),
		closeCh:  make(chan struct{}),
		memLimit: uint64(MaxWASMMemoryPages) * abi.PageSize,
		ctx:      ctx,
	}
	if cfg.hasPages {
		in.memLimit = uint64(cfg.pages) * abi.PageSize
	}
	var ic backend.InstanceConfig
	ic.MaxMemoryPages = cfg.pages
	ic.Imports[abi.ImportInterrupt] = in.hostInterrupt
	ic.Imports[abi.ImportRPCSync] = in.hostRPCSync
	ic.Imports[abi.ImportRPCSyncTake] = in.hostRPCSyncTake
	ic.Imports[abi.ImportRPCAsync] = in.hostRPCAsync
	ic.Imports[abi.ImportRejection] = in.hostRejection
	bi, err := rt.mod.Instantiate(ctx, ic)
	if err != nil {
		return nil, join(&RuntimeError{Code: CodeRuntimeError, Message: "cannot instantiate the guest"}, err)
	}
	in.bi, in.mem = bi, bi.Memory()
	if err := in.setup(); err != nil {
		_ = bi.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	in.ctx = nil
	return in, nil
}

// setup checks the guest and sets its limits (ABI.md, "Instantiation").
func (in *Instance) setup() error {
	if err := in.call(abi.ExportABIVersion); err != nil {
		return join(wrap(ErrBadGuest, "kafig_abi_version failed"), err)
	}
	if v := uint32(in.stack[0]); v != abi.Version {
		return wrap(ErrBadGuest, "the guest has ABI version "+itoa(uint64(v))+", this host speaks "+itoa(abi.Version))
	}
	if err := in.call(abi.ExportExchange); err != nil {
		return join(wrap(ErrBadGuest, "kafig_exchange failed"), err)
	}
	in.x = exchange.Area{Mem: in.mem, X: exchange.Ptr(uint32(in.stack[0]))}
	if !in.x.Check() {
		return wrap(ErrBadGuest, "the exchange area is outside memory or has the wrong size")
	}
	in.stack[0], in.stack[1] = in.cfg.jsMemory, uint64(in.rt.stackLimit)
	if err := in.call(abi.ExportSetLimits); err != nil {
		return join(wrap(ErrBadGuest, "kafig_set_limits failed"), err)
	}
	if st := abi.Status(uint32(in.stack[0])); st != abi.StatusOK {
		msg, _ := in.resultString()
		return wrap(ErrInvalidOption, "the guest refused the limits: "+msg)
	}
	return nil
}

// ---- serialization ----

// acquire takes the instance for one operation.
func (in *Instance) acquire(ctx context.Context) error {
	if in == nil || in.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return ctxError(err, "context ended before the call")
	}
	if m, _ := ctx.Value(ownCtxKey{}).(*opMark); m != nil && m == in.opMark.Load() {
		return ErrReentrantCall
	}
	select {
	case in.sem <- struct{}{}:
	default:
		select {
		case in.sem <- struct{}{}:
		case <-ctx.Done():
			return ctxError(ctx.Err(), "context ended while waiting for the instance")
		case <-in.closeCh:
			return ErrClosed
		}
	}
	if in.closed.Load() {
		<-in.sem
		return ErrClosed
	}
	if in.dead.Load() {
		<-in.sem
		return ErrInstanceDead
	}
	in.ctx = ctx
	return nil
}

func (in *Instance) release() {
	in.ctx, in.stopCause, in.syncReply, in.handlerCtx = nil, nil, nil, nil
	in.opMark.Store(nil)
	in.runMu.Lock()
	free := in.freeByOp
	cancel := in.cancelHandlers
	in.cancelHandlers = nil
	in.runMu.Unlock()
	if cancel != nil {
		cancel()
	}
	if free {
		// Closed from its own user code (see Close): the instance is never
		// used again, so sem stays taken.
		if err := in.freeGuest(context.Background()); err != nil {
			in.rt.log.Debug("kafig: closing the guest failed", "err", err)
		}
		return
	}
	<-in.sem
}

// ownCtxKey is the context key of an opMark.
type ownCtxKey struct{}

// An opMark identifies one operation of an instance in the contexts it gives
// its RPC handlers.
type opMark struct{ _ byte }

// ownHandlerCtx is the context of the running operation for its RPC
// handlers (host.rpcSync ones inline, host.rpc ones on their goroutines),
// made once per operation, on the first handler call. Close cancels it. It
// is marked as the operation's own: a handler that calls back into the
// instance with it, while the operation holds the instance, gets
// ErrReentrantCall instead of waiting for itself.
func (in *Instance) ownHandlerCtx() context.Context {
	if in.handlerCtx == nil {
		m := &opMark{}
		ctx, cancel := context.WithCancel(context.WithValue(orBackground(in.ctx), ownCtxKey{}, m))
		in.runMu.Lock()
		in.handlerCtx, in.cancelHandlers = ctx, cancel
		in.runMu.Unlock()
		in.opMark.Store(m)
	}
	return in.handlerCtx
}

func ctxError(err error, msg string) error {
	return &RuntimeError{Code: CodeCPULimitExceeded, Message: msg, Err: err}
}

// ---- the public operations ----

// Eval evaluates a script and returns the value of its last expression as
// JSON (undefined, functions and symbols become null).
//
// # Notes
//   - Sync by default; WithAsync enables top-level await and host.rpc.
//   - A JavaScript exception is a *JsError; a limit or failure a
//     *RuntimeError. An empty source, or one that is not UTF-8, contains
//     NUL bytes or is larger than the instance's memory limit, is refused
//     with ErrInvalidSource before it reaches the guest.
//   - Stacks and SyntaxErrors name the script DefaultSourceName ("<eval>")
//     unless WithSourceName names it.
//   - When ctx ends, the eval stops and returns a *RuntimeError with code
//     CodeCPULimitExceeded and Err = ctx.Err(), so errors.Is(err,
//     context.DeadlineExceeded) (or context.Canceled) holds. If the guest
//     could not be stopped gracefully it is also ErrInstanceDead.
func (in *Instance) Eval(ctx context.Context, src string, opts ...EvalOption) (json.RawMessage, error) {
	ec := evalOptions(opts)
	if p := ec.problem(); p != "" {
		return nil, wrap(ErrInvalidOption, p)
	}
	if p := checkSource(src); p != "" {
		return nil, wrap(ErrInvalidSource, p)
	}
	ctx = orBackground(ctx)
	if err := in.acquire(ctx); err != nil {
		return nil, err
	}
	defer in.release()
	return in.eval(src, ec)
}

// EvalCompiled evaluates bytecode from Runtime.Compile, as Eval evaluates
// source.
//
// # Notes
//   - The seal is checked (in constant time) before anything reaches the
//     guest: bytecode from a runtime with another key or guest build, or
//     changed, truncated or random bytes, are refused with ErrBadBytecode.
//   - Stacks name the script as Runtime.Compile did (WithSourceName given
//     here is validated but not used).
func (in *Instance) EvalCompiled(ctx context.Context, bytecode []byte, opts ...EvalOption) (json.RawMessage, error) {
	ec := evalOptions(opts)
	if p := ec.problem(); p != "" {
		return nil, wrap(ErrInvalidOption, p)
	}
	if in == nil {
		return nil, ErrClosed
	}
	bc, err := in.rt.sealer.Open(bytecode)
	if err != nil {
		return nil, wrap(ErrBadBytecode, err.Error())
	}
	ctx = orBackground(ctx)
	if err := in.acquire(ctx); err != nil {
		return nil, err
	}
	defer in.release()
	if uint64(len(bc)) > in.memLimit {
		return nil, wrap(ErrInvalidSource, "bytecode larger than the instance's memory limit")
	}
	p, allocated, err := in.place(len(bc))
	if err != nil {
		return nil, err
	}
	exchange.Write(in.mem, p, bc)
	in.setArgs(uint64(p), uint64(len(bc)), flags(ec))
	res, err := in.operate(ec.async, abi.ExportEvalBytecode)
	return res, in.free(p, allocated, err)
}

// DispatchEvent calls the handler a script registered with host.on(name)
// with params (JSON; nil means null) and returns its result as JSON.
//
// # Notes
//   - With WithAsync a promise result is awaited and host.rpc works.
//   - No handler for name: an error wrapping ErrNoHandler. An empty name,
//     one longer than abi.MaxMethodLen bytes or not UTF-8, or params that
//     are not valid JSON in UTF-8: ErrInvalidSource.
//   - Errors and context handling are as for Eval. Stacks show the source
//     name of the script that defined the handler (WithSourceName given
//     here is validated but not used).
func (in *Instance) DispatchEvent(ctx context.Context, name string, params json.RawMessage, opts ...EvalOption) (json.RawMessage, error) {
	ec := evalOptions(opts)
	if p := ec.problem(); p != "" {
		return nil, wrap(ErrInvalidOption, p)
	}
	if p := checkName(name); p != "" {
		return nil, wrap(ErrInvalidSource, "event "+p)
	}
	if len(params) == 0 {
		params = json.RawMessage("null")
	} else if !json.Valid(params) || !utf8.Valid(params) {
		return nil, wrap(ErrInvalidSource, "event params are not valid JSON in UTF-8")
	}
	ctx = orBackground(ctx)
	if err := in.acquire(ctx); err != nil {
		return nil, err
	}
	defer in.release()
	n := len(name) + len(params)
	if uint64(n) > in.memLimit {
		return nil, wrap(ErrInvalidSource, "event params larger than the instance's memory limit")
	}
	p, allocated, err := in.place(n)
	if err != nil {
		return nil, err
	}
	exchange.WriteString(in.mem, p, name)
	exchange.Write(in.mem, p+exchange.Ptr(len(name)), params)
	in.setArgs(uint64(p), uint64(len(name)), uint64(len(params)), flags(ec))
	res, err := in.operate(ec.async, abi.ExportDispatch)
	if err == errNoHandlerStatus {
		err = wrap(ErrNoHandler, name)
	}
	return res, in.free(p, allocated, err)
}

// ExecutionStats are an instance's counters.
type ExecutionStats struct {
	// Opcodes is the guest's estimate of QuickJS poll points run (steps of
	// abi.InterruptInterval), cumulative until ResetExecutionStats.
	Opcodes uint64
	// CPUTimeUs is the time spent running JavaScript, in microseconds,
	// cumulative until ResetExecutionStats: wall time inside the guest
	// minus time in RPC handlers (waiting for host.rpc is not counted).
	CPUTimeUs uint64
	// HeapBytes is what the QuickJS heap holds now.
	HeapBytes uint64
	// HeapLimitBytes is the QuickJS heap limit (WithJSMemoryLimit).
	HeapLimitBytes uint64
	// MemoryBytes is the size of linear memory now.
	MemoryBytes uint64
}

// GetExecutionStats returns the instance's counters. It reads them without
// calling the guest.
//
// # Notes
//   - It waits for a running operation to finish (calls are serialized).
//   - On a dead instance it returns ErrInstanceDead.
func (in *Instance) GetExecutionStats(ctx context.Context) (ExecutionStats, error) {
	if err := in.acquire(orBackground(ctx)); err != nil {
		return ExecutionStats{}, err
	}
	defer in.release()
	heap, _ := in.x.U64(abi.ExchHeapUsed)
	limit, _ := in.x.U64(abi.ExchHeapLimit)
	ops, _ := in.x.U64(abi.ExchOpcodes)
	return ExecutionStats{
		Opcodes:        ops,
		CPUTimeUs:      uint64(max(in.cpuNanos.Load(), 0)) / 1000,
		HeapBytes:      heap,
		HeapLimitBytes: limit,
		MemoryBytes:    uint64(in.mem.Size()),
	}, nil
}

// ResetExecutionStats sets the opcode and CPU time counters to zero: the
// interrupt callback sees figures from this point on.
func (in *Instance) ResetExecutionStats(ctx context.Context) error {
	if err := in.acquire(orBackground(ctx)); err != nil {
		return err
	}
	defer in.release()
	in.resetStats()
	return nil
}

func (in *Instance) resetStats() {
	in.x.PutU64(abi.ExchOpcodes, 0)
	in.opcodes.Store(0)
	in.cpuNanos.Store(0)
}

// Close frees the instance.
//
// # Notes
//   - Safe on a nil or closed Instance and with a done ctx; later calls
//     return the first call's result.
//   - A call running in the instance is ended (it returns ErrClosed); Close
//     waits for it, including for RPC handlers to return. The exception is
//     a call that is running user code on its own goroutine (a
//     host.rpcSync handler, the interrupt callback or the promise rejection
//     handler), which may be the caller of Close: Close returns at once, and
//     the call frees the guest when that code returns.
//   - Later calls return ErrClosed.
func (in *Instance) Close(ctx context.Context) error {
	if in == nil {
		return nil
	}
	in.closeOnce.Do(func() {
		ctx = context.WithoutCancel(orBackground(ctx))
		in.closed.Store(true)
		close(in.closeCh)
		in.runMu.Lock()
		if in.running.Load() && !in.stopped {
			in.stopLocked(ErrClosed)
		}
		// Waiting for an operation that runs user code inline could be
		// waiting for our own caller. inUser is cleared before the operation
		// reads freeByOp in release, under runMu: one of the two frees.
		in.freeByOp = in.inUser.Load()
		byOp := in.freeByOp
		cancel := in.cancelHandlers
		in.runMu.Unlock()
		if cancel != nil {
			cancel() // the running handlers' context: they are answering no one
		}
		if byOp {
			return
		}
		in.sem <- struct{}{} // the running operation ends; never released
		in.closeErr = in.freeGuest(ctx)
	})
	return in.closeErr
}

// freeGuest closes the backend instance and takes the instance off the runtime.
func (in *Instance) freeGuest(ctx context.Context) error {
	err := in.bi.Close(context.WithoutCancel(ctx))
	in.rt.forget(in)
	in.rt.log.Debug("kafig: instance closed")
	return err
}

// ---- helpers ----

func evalOptions(opts []EvalOption) evalConfig {
	var ec evalConfig
	for _, o := range opts {
		if o != nil {
			ec = o.applyEval(ec)
		}
	}
	return ec
}

func flags(ec evalConfig) uint64 {
	if ec.async {
		return abi.FlagAsync
	}
	return 0
}

func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// checkSource returns what is wrong with a source, or "".
func checkSource(src string) string {
	switch {
	case src == "":
		return "empty source"
	case uint64(len(src)) > 0xffffffff:
		return "source larger than 4 GiB"
	case strings.IndexByte(src, 0) >= 0:
		return "source contains a NUL byte"
	case !utf8.ValidString(src):
		return "source is not valid UTF-8"
	}
	return ""
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
