package kafig

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
	"github.com/kafig-dev/kafig/kafig/internal/exchange"
	"github.com/kafig-dev/kafig/kafig/internal/rpc"
)

// The host imports (ABI.md, "Imports"). They run on the goroutine of the
// operation that holds the instance, inside a guest call, and never call
// back into the guest.

// hostInterrupt: interrupt(opcodes i64) -> i32.
func (in *Instance) hostInterrupt(_ context.Context, _ backend.Memory, stack []uint64) {
	ops := stack[0]
	if ops == abi.YieldOpcodes {
		// The loop guard's yield (abi.YieldOpcodes): a safe point for the
		// Go runtime, not a poll; the monitor must still see a guest that
		// does not poll.
		stack[0] = 0
		return
	}
	now := nanotime()
	in.lastPoll.Store(now)
	in.opcodes.Store(ops)
	stack[0] = 0
	if in.ctx != nil {
		if err := in.ctx.Err(); err != nil {
			in.stopCause = err
			stack[0] = 1
			return
		}
	}
	if cb := in.cfg.interrupt; cb != nil {
		cpu := in.cpuNanos.Load() + now - in.callStart - in.hostNanos.Load()
		in.inUser.Store(true)
		stop := in.askInterrupt(cb, ops, cpu)
		in.inUser.Store(false)
		if stop {
			stack[0] = 1
		}
	}
}

// askInterrupt calls the interrupt callback under cbMu.
func (in *Instance) askInterrupt(cb func(uint64, uint64) bool, ops uint64, cpuNanos int64) bool {
	in.cbMu.Lock()
	defer in.cbMu.Unlock()
	return in.callInterrupt(cb, ops, cpuNanos)
}

// callInterrupt calls the interrupt callback; a panic counts as "stop". The
// caller holds cbMu.
func (in *Instance) callInterrupt(cb func(uint64, uint64) bool, ops uint64, cpuNanos int64) (stop bool) {
	defer func() {
		if r := recover(); r != nil {
			in.rt.log.Debug("kafig: interrupt callback panicked; stopping", "panic", r)
			stop = true
		}
	}()
	return cb(ops, uint64(max(cpuNanos, 0))/1000)
}

// hostRPCSync: rpc_sync(methodPtr, methodLen, paramsPtr, paramsLen) -> i64.
func (in *Instance) hostRPCSync(_ context.Context, mem backend.Memory, stack []uint64) {
	var reply []byte
	var isErr bool
	method, ok1 := mem.Read(uint32(stack[0]), uint32(stack[1]))
	params, ok2 := exchange.Copy(mem, exchange.Ptr(uint32(stack[2])), uint32(stack[3]))
	if !ok1 || !ok2 {
		reply, isErr = []byte("kafig: RPC arguments outside guest memory"), true
	} else {
		in.probeCalledRPC = in.probeCalledRPC || in.cfg.probe
		name, h, mode, fallback, found := in.cfg.router.lookupBytes(method)
		switch {
		case !found:
			reply, isErr = unknownMethod(name), true
		case mode == modeAsync:
			reply, isErr = fmt.Appendf(nil, "kafig: method %s is async; use host.rpc", name), true
		default:
			reply, isErr = in.runInline(h, name, fallback, params)
		}
	}
	// A reply shorter than the data area is there already (the guest adds
	// a NUL after it, so it must leave one byte); a longer one the guest
	// fetches with rpc_sync_take.
	in.syncReply = nil
	if len(reply) < abi.ExchangeDataSize {
		exchange.Write(mem, in.x.Data(), reply)
	} else {
		in.syncReply = reply
	}
	var st uint64 = abi.RPCOK
	if isErr {
		st = abi.RPCError
	}
	stack[0] = st<<32 | uint64(uint32(len(reply)))
}

// hostRPCSyncTake: rpc_sync_take(dstPtr, len).
func (in *Instance) hostRPCSyncTake(_ context.Context, mem backend.Memory, stack []uint64) {
	r := in.syncReply
	in.syncReply = nil
	if r != nil && uint64(len(r)) == uint64(uint32(stack[1])) {
		exchange.Write(mem, exchange.Ptr(uint32(stack[0])), r)
	}
}

// hostRPCAsync: rpc_async(id, methodPtr, methodLen, paramsPtr, paramsLen) -> i32.
func (in *Instance) hostRPCAsync(_ context.Context, mem backend.Memory, stack []uint64) {
	id := uint32(stack[0])
	stack[0] = abi.RPCRefused
	if !in.async || in.ctx == nil {
		return
	}
	method, ok1 := exchange.String(mem, exchange.Ptr(uint32(stack[1])), uint32(stack[2]))
	params, ok2 := exchange.Copy(mem, exchange.Ptr(uint32(stack[3])), uint32(stack[4]))
	if !ok1 || !ok2 {
		return
	}
	if in.pool == nil {
		in.pool = rpc.New(in.ownHandlerCtx(), in.cfg.maxConcurrent)
	}
	if in.pool.Outstanding() >= in.cfg.maxPending {
		in.rt.log.Debug("kafig: host.rpc refused: too many pending", "method", method, "limit", in.cfg.maxPending)
		return
	}
	// The params of waiting calls live in Go, outside every guest limit:
	// together they may hold what the JS heap may, no more.
	if held := in.pool.Held(); uint64(held)+uint64(len(params)) > in.cfg.jsMemory {
		in.rt.log.Debug("kafig: host.rpc refused: the params of pending calls exceed the JS memory limit", "method", method, "held", held, "limit", in.cfg.jsMemory)
		return
	}
	stack[0] = 0
	h, mode, fallback, found := in.cfg.router.lookup(method)
	switch {
	case !found:
		in.pool.Done(rpc.Reply{ID: id, Data: unknownMethod(method), IsError: true})
	case mode == modeSync:
		data, isErr := in.runInline(h, method, false, params)
		in.pool.Done(rpc.Reply{ID: id, Data: data, IsError: isErr})
	default:
		in.pool.Go(id, len(params), func(ctx context.Context) ([]byte, bool) {
			return in.runHandler(ctx, h, method, fallback, params)
		})
	}
}

// hostRejection: rejection(ptr, len) -> i32.
func (in *Instance) hostRejection(_ context.Context, mem backend.Memory, stack []uint64) {
	doc, ok := exchange.Copy(mem, exchange.Ptr(uint32(stack[0])), uint32(stack[1]))
	stack[0] = 0
	fn := in.cfg.rejection
	if fn == nil || !ok {
		return
	}
	start := nanotime()
	in.enterHost()
	stop := func() (stop bool) {
		defer func() {
			if r := recover(); r != nil {
				in.rt.log.Debug("kafig: promise rejection handler panicked", "panic", r)
			}
		}()
		return fn(parseJsError(doc))
	}()
	in.leaveHost(start)
	if stop {
		stack[0] = 1
	}
}

// runInline runs a handler on the operation's goroutine, outside the
// guest's CPU time.
func (in *Instance) runInline(h RPCHandler, method string, fallback bool, params []byte) ([]byte, bool) {
	start := nanotime()
	in.enterHost()
	data, isErr := in.runHandler(in.ownHandlerCtx(), h, method, fallback, params)
	in.leaveHost(start)
	return data, isErr
}

func (in *Instance) enterHost() {
	in.inHost.Store(true)
	in.inUser.Store(true)
}

func (in *Instance) leaveHost(start int64) {
	now := nanotime()
	in.hostNanos.Add(now - start)
	in.lastPoll.Store(now) // returning from the host counts as a poll
	in.inUser.Store(false)
	in.inHost.Store(false)
}

// runHandler calls an RPC handler and turns what it does into a reply: the
// JSON result, or an error message (isErr) for an error, a panic or a
// result that is not JSON.
func (in *Instance) runHandler(ctx context.Context, h RPCHandler, method string, fallback bool, params []byte) (data []byte, isErr bool) {
	defer func() {
		if r := recover(); r != nil {
			in.rt.log.Debug("kafig: RPC handler panicked", "method", method, "panic", r)
			data, isErr = fmt.Appendf(nil, "kafig: RPC handler panicked: %v", r), true
		}
	}()
	if len(params) == 0 {
		params = []byte("null")
	} else if !json.Valid(params) {
		return []byte("kafig: RPC params are not valid JSON"), true
	}
	if fallback {
		ctx = context.WithValue(ctx, methodKey{}, method)
	}
	res, err := h(ctx, params)
	switch {
	case err != nil:
		msg := err.Error()
		if msg == "" {
			msg = "kafig: RPC handler failed"
		}
		in.rt.log.Debug("kafig: RPC handler failed", "method", method, "err", err)
		if !utf8.ValidString(msg) {
			msg = strings.ToValidUTF8(msg, "\uFFFD")
		}
		return truncateMessage(msg), true
	case len(res) == 0:
		return []byte("null"), false
	case uint64(len(res)) > in.cfg.jsMemory:
		// It could only end in an out-of-memory error inside the guest,
		// after copying it there and parsing most of it.
		in.rt.log.Debug("kafig: RPC reply larger than the JS heap limit", "method", method, "bytes", len(res))
		return fmt.Appendf(nil, "kafig: RPC reply of %d bytes is larger than the JS memory limit (%d bytes)", len(res), in.cfg.jsMemory), true
	case !json.Valid(res):
		in.rt.log.Debug("kafig: RPC handler returned invalid JSON", "method", method)
		return []byte("kafig: RPC handler returned invalid JSON"), true
	case !utf8.Valid(res):
		in.rt.log.Debug("kafig: RPC handler returned JSON that is not UTF-8", "method", method)
		return []byte("kafig: RPC handler returned JSON that is not UTF-8"), true
	}
	return res, false
}

// maxErrorMessage bounds the message of a handler's error as JS sees it: a
// handler that wraps a huge payload into its error must not make the guest
// build a huge Error.
const maxErrorMessage = 16 << 10

// truncateMessage cuts msg to maxErrorMessage bytes on a rune boundary and
// says so.
func truncateMessage(msg string) []byte {
	if len(msg) <= maxErrorMessage {
		return []byte(msg)
	}
	cut := maxErrorMessage
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return fmt.Appendf(nil, "%s… (%d bytes truncated)", msg[:cut], len(msg)-cut)
}

func unknownMethod(method string) []byte {
	return fmt.Appendf(nil, "kafig: unknown RPC method %s", method)
}
