package kafig

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
	"github.com/kafig-dev/kafig/kafig/internal/exchange"
	"github.com/kafig-dev/kafig/kafig/internal/rpc"
)

// errNoHandlerStatus is the internal result of StatusNoHandler;
// DispatchEvent turns it into an error naming the event.
var errNoHandlerStatus = errors.New("kafig: no handler")

// errStopped is what call returns when the instance was stopped while idle.
var errStopped = backend.ErrStopped

// call runs one export with in.stack as its parameters and results.
//
// The backend gets a context without cancellation: the eval's context is
// enforced by the interrupt import (gracefully) and by the monitor (from
// outside, as a last resort), so that a backend never pays for watching a
// context on the hot path and an instance is not killed when a poll would
// have stopped it.
func (in *Instance) call(fn abi.Export) error {
	in.runMu.Lock()
	if in.stopped {
		in.runMu.Unlock()
		in.dead.Store(true)
		return errStopped
	}
	start := nanotime()
	in.runCtx = in.ctx
	in.callStart = start
	in.hostNanos.Store(0)
	in.lastPoll.Store(start)
	in.running.Store(true)
	in.runMu.Unlock()

	err := in.bi.Call(context.Background(), fn, in.stack[:])

	end := nanotime()
	in.runMu.Lock()
	in.running.Store(false)
	in.runCtx = nil
	stopped := in.stopped
	in.runMu.Unlock()
	in.cpuNanos.Add(end - start - in.hostNanos.Load())
	if err != nil || stopped {
		// A stop that raced with the end of the call: the result stands,
		// but the guest is gone.
		in.dead.Store(true)
	}
	return err
}

// callError describes a failed guest call. The instance is dead.
func (in *Instance) callError(err error) error {
	in.runMu.Lock()
	reason := in.stopReason
	in.runMu.Unlock()
	switch {
	case in.closed.Load() || reason == ErrClosed:
		return ErrClosed
	case reason != nil || errors.Is(err, backend.ErrStopped):
		if reason == errBackstop {
			reason = nil
		}
		in.rt.log.Debug("kafig: guest call stopped from outside; instance dead", "cause", reason)
		return &RuntimeError{
			Code:    CodeCPULimitExceeded,
			Message: "stopped from outside the guest, which did not poll; the instance is dead",
			Err:     join(ErrInstanceDead, reason, err),
		}
	}
	in.rt.log.Debug("kafig: guest call failed; instance dead", "err", err)
	return &RuntimeError{
		Code:    CodeRuntimeError,
		Message: "the guest trapped; the instance is dead",
		Err:     join(ErrInstanceDead, err),
	}
}

func (in *Instance) setArgs(args ...uint64) {
	copy(in.stack[:], args)
}

// place returns where an input of n bytes goes: the exchange data area, or
// a guest allocation (allocated) that free releases.
//
// The guest writes a NUL after every input it is given (ptr+n must be
// inside memory too), so an input must leave one byte: the data area takes
// at most ExchangeDataSize-1 bytes and allocations are one byte larger.
func (in *Instance) place(n int) (p exchange.Ptr, allocated bool, err error) {
	if n < abi.ExchangeDataSize {
		return in.x.Data(), false, nil
	}
	if uint64(n) >= 0x7fffffff {
		return 0, false, wrap(ErrInvalidSource, "input larger than 2 GiB")
	}
	in.stack[0] = uint64(n + 1)
	if err := in.call(abi.ExportAlloc); err != nil {
		return 0, false, in.callError(err)
	}
	p = exchange.Ptr(uint32(in.stack[0]))
	if p == 0 {
		return 0, false, &RuntimeError{Code: CodeMemoryLimitExceeded, Message: "no guest memory for an input of " + itoa(uint64(n)) + " bytes"}
	}
	if _, ok := in.mem.Read(uint32(p), uint32(n+1)); !ok {
		return 0, false, &RuntimeError{Code: CodeRuntimeError, Message: "kafig_alloc returned a range outside memory", Err: ErrBadGuest}
	}
	return p, true, nil
}

// free releases what place allocated; it keeps err, the operation's result.
func (in *Instance) free(p exchange.Ptr, allocated bool, err error) error {
	if !allocated || in.dead.Load() || in.closed.Load() {
		return err
	}
	in.stack[0] = uint64(p)
	if ferr := in.call(abi.ExportFree); ferr != nil && err == nil {
		return in.callError(ferr)
	}
	return err
}

func (in *Instance) eval(src string, ec evalConfig) (json.RawMessage, error) {
	if uint64(len(src)) > in.memLimit {
		return nil, wrap(ErrInvalidSource, "source larger than the instance's memory limit")
	}
	p, allocated, err := in.place(len(src))
	if err != nil {
		return nil, err
	}
	exchange.WriteString(in.mem, p, src)
	if err := in.putSourceName(ec.name); err != nil {
		return nil, in.free(p, allocated, err)
	}
	in.setArgs(uint64(p), uint64(len(src)), flags(ec))
	res, err := in.operate(ec.async, abi.ExportEval)
	return res, in.free(p, allocated, err)
}

// putSourceName writes the source name of the next kafig_eval or
// kafig_compile into the exchange area, right before the call (the guest
// clears it when the call begins); "" and DefaultSourceName write none.
func (in *Instance) putSourceName(name string) error {
	if name == DefaultSourceName {
		name = ""
	}
	if !in.x.PutSourceName(name) {
		return badResult("source name area")
	}
	return nil
}

// compile runs kafig_compile and returns the raw bytecode; name is the
// source name ("": the default).
func (in *Instance) compile(ctx context.Context, src, name string) ([]byte, error) {
	if p := checkSource(src); p != "" {
		return nil, wrap(ErrInvalidSource, p)
	}
	if err := in.acquire(orBackground(ctx)); err != nil {
		return nil, err
	}
	defer in.release()
	if uint64(len(src)) > in.memLimit {
		return nil, wrap(ErrInvalidSource, "source larger than the compile instance's memory limit")
	}
	p, allocated, err := in.place(len(src))
	if err != nil {
		return nil, err
	}
	exchange.WriteString(in.mem, p, src)
	if err := in.putSourceName(name); err != nil {
		return nil, in.free(p, allocated, err)
	}
	in.setArgs(uint64(p), uint64(len(src)))
	var bc []byte
	if err = in.call(abi.ExportCompile); err != nil {
		err = in.callError(err)
	} else if st := abi.Status(uint32(in.stack[0])); st == abi.StatusOK {
		var ok bool
		if bc, ok = in.x.ResultBytes(); !ok || len(bc) == 0 {
			bc, err = nil, badResult("bytecode")
		}
	} else {
		_, err = in.result(st)
	}
	return bc, in.free(p, allocated, err)
}

// operate runs an export that runs JavaScript (its arguments are in
// in.stack) and, for an async operation, services host.rpc until the result
// settles.
func (in *Instance) operate(async bool, fn abi.Export) (json.RawMessage, error) {
	in.async = async
	defer func() { in.async = false }()
	err := in.call(fn)
	if err != nil {
		in.endAsync()
		return nil, in.callError(err)
	}
	st := abi.Status(uint32(in.stack[0]))
	if async {
		st, err = in.settleLoop(st)
		if err != nil {
			in.endAsync()
			return nil, err
		}
		// Read the result before endAsync: kafig_abort (for RPCs the script
		// left pending) resets the exchange area.
		res, rerr := in.result(st)
		in.endAsync()
		return res, rerr
	}
	return in.result(st)
}

// settleLoop waits for host.rpc replies and settles them until the
// operation is no longer pending (ABI.md, "Async eval with RPCs").
func (in *Instance) settleLoop(st abi.Status) (abi.Status, error) {
	for st == abi.StatusPending {
		if in.pool == nil {
			return 0, &RuntimeError{Code: CodeRuntimeError, Message: "the guest waits for RPC replies but made no RPC", Err: ErrBadGuest}
		}
		r, err := in.pool.Next(in.ctx, in.closeCh)
		switch {
		case err == rpc.ErrIdle:
			return 0, &RuntimeError{Code: CodeRuntimeError, Message: "the guest waits for RPC replies that are all delivered", Err: ErrBadGuest}
		case err == rpc.ErrInterrupted:
			return 0, ErrClosed
		case err != nil:
			return 0, ctxError(err, "context ended while waiting for RPC replies")
		}
		data, isErr := r.Data, r.IsError
		if len(data) >= abi.ExchangeDataSize && uint64(len(data)) >= in.memLimit {
			data, isErr = []byte("kafig: RPC reply larger than the instance's memory limit"), true
		}
		p, allocated, err := in.place(len(data))
		if err != nil {
			var re *RuntimeError
			if !errors.As(err, &re) || re.Code != CodeMemoryLimitExceeded {
				return 0, err
			}
			data, isErr = []byte("kafig: no guest memory for the RPC reply"), true
			p, allocated = in.x.Data(), false
		}
		exchange.Write(in.mem, p, data)
		var e uint64
		if isErr {
			e = abi.RPCError
		}
		in.setArgs(uint64(r.ID), uint64(p), uint64(len(data)), e)
		if err := in.call(abi.ExportRPCSettle); err != nil {
			return 0, in.callError(err)
		}
		st = abi.Status(uint32(in.stack[0]))
		if err := in.free(p, allocated, nil); err != nil {
			return 0, err
		}
	}
	return st, nil
}

// endAsync ends the async side of an operation: the guest forgets what is
// still pending (kafig_abort), handlers are cancelled and waited for, up to
// handlerGrace each operation.
func (in *Instance) endAsync() {
	if !in.dead.Load() && !in.closed.Load() && in.abortNeeded() {
		if err := in.call(abi.ExportAbort); err != nil {
			in.rt.log.Debug("kafig: kafig_abort failed; instance dead", "err", err)
		}
	}
	if in.pool != nil {
		if n := in.pool.Close(handlerGrace); n > 0 {
			in.rt.log.Warn("kafig: RPC handlers ignored their cancelled context; abandoned", "count", n, "waited", handlerGrace)
		}
		in.pool = nil
	}
}

// handlerGrace is how long the end of an async operation waits for its
// host.rpc handlers to return once their context is cancelled. Handlers that
// honour their context return well within it; one that does not cannot
// delay the operation past its deadline by more than this.
const handlerGrace = 100 * time.Millisecond

func (in *Instance) abortNeeded() bool {
	if in.pool != nil && in.pool.Outstanding() > 0 {
		return true
	}
	pending, ok := in.x.U32(abi.ExchPending)
	return !ok || pending > 0
}

// result turns a status and the exchange result into Eval's answer.
func (in *Instance) result(st abi.Status) (json.RawMessage, error) {
	switch st {
	case abi.StatusOK:
		b, ok := in.x.ResultBytes()
		if !ok {
			return nil, badResult("result")
		}
		if len(b) == 0 {
			return json.RawMessage("null"), nil
		}
		if !json.Valid(b) {
			return nil, &RuntimeError{Code: CodeRuntimeError, Message: "the guest returned invalid JSON", Err: ErrBadGuest}
		}
		return b, nil
	case abi.StatusJSError:
		b, ok := in.x.ResultBytes()
		if !ok {
			return nil, badResult("error document")
		}
		return nil, parseJsError(b)
	case abi.StatusNoHandler:
		return nil, errNoHandlerStatus
	case abi.StatusPending:
		return nil, &RuntimeError{Code: CodeRuntimeError, Message: "the guest is pending in a sync operation", Err: ErrBadGuest}
	}
	msg, ok := in.resultString()
	if !ok {
		return nil, badResult("message")
	}
	switch st {
	case abi.StatusCPULimit:
		return nil, &RuntimeError{Code: CodeCPULimitExceeded, Message: msg, Err: in.stopCause}
	case abi.StatusMemoryLimit:
		return nil, &RuntimeError{Code: CodeMemoryLimitExceeded, Message: msg}
	case abi.StatusStackOverflow:
		return nil, &RuntimeError{Code: CodeStackOverflow, Message: msg}
	case abi.StatusRuntimeError:
		return nil, &RuntimeError{Code: CodeRuntimeError, Message: msg}
	case abi.StatusBadInput:
		return nil, &RuntimeError{Code: CodeRuntimeError, Message: "the guest refused the input: " + msg, Err: ErrInvalidSource}
	}
	return nil, &RuntimeError{Code: CodeRuntimeError, Message: "unknown status " + itoa(uint64(st)), Err: ErrBadGuest}
}

// maxMessage bounds the messages kept from the guest.
const maxMessage = 4096

func (in *Instance) resultString() (string, bool) {
	p, n, ok := in.x.Result()
	if !ok {
		return "", false
	}
	s, _ := exchange.String(in.mem, p, min(n, maxMessage))
	return strings.ToValidUTF8(s, "\uFFFD"), true
}

func badResult(what string) error {
	return &RuntimeError{Code: CodeRuntimeError, Message: "the guest's " + what + " lies outside its memory", Err: ErrBadGuest}
}
