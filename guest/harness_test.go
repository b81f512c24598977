package guest_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/guest"
	"github.com/kafig-dev/kafig/guest/wasmguard"
)

// These tests drive the guest at the ABI level through wazero, with a
// minimal host written here: they check what the guest itself must get
// right. The public API is tested in conformance/.

// host is the test's side of the imports.
type host struct {
	// stopAfter makes interrupt answer "stop" once it has been polled this
	// many times (0: never).
	stopAfter  int64
	polls      atomic.Int64
	syncReply  func(method, params string) (status uint32, reply string)
	pendingBig []byte
	async      []asyncCall
	rejections []string
	refuse     bool
}

type asyncCall struct {
	id             uint32
	method, params string
}

type guestInst struct {
	t    *testing.T
	ctx  context.Context
	mod  api.Module
	mem  api.Memory
	xch  uint32
	host *host
}

func readString(m api.Memory, ptr, n uint32) string {
	b, ok := m.Read(ptr, n)
	if !ok {
		panic("out of range")
	}
	return string(b)
}

// compileCache spares each test compiling the guest again.
var compileCache = wazero.NewCompilationCache()

// newGuest instantiates the guest in a fresh wazero runtime with limits.
func newGuest(t *testing.T, heapLimit uint64, stack uint32) *guestInst {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCompilationCache(compileCache))
	t.Cleanup(func() { r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	h := &host{}
	g := &guestInst{t: t, ctx: ctx, host: h}
	b := r.NewHostModuleBuilder(abi.ImportModule)
	b.NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, opcodes uint64) uint32 {
		if opcodes == abi.YieldOpcodes {
			return 0 // the loop guard's yield, not a poll
		}
		n := h.polls.Add(1)
		if h.stopAfter > 0 && n >= h.stopAfter {
			return 1
		}
		return 0
	}).Export(abi.ImportInterrupt.Name())
	b.NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, mp, ml, pp, pl uint32) uint64 {
		method, params := readString(m.Memory(), mp, ml), readString(m.Memory(), pp, pl)
		status, reply := uint32(abi.RPCError), "no handler"
		if h.syncReply != nil {
			status, reply = h.syncReply(method, params)
		}
		if len(reply) < abi.ExchangeDataSize {
			m.Memory().Write(g.xch+abi.ExchHeaderSize, []byte(reply))
		} else {
			h.pendingBig = []byte(reply)
		}
		return uint64(status)<<32 | uint64(len(reply))
	}).Export(abi.ImportRPCSync.Name())
	b.NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, dst, n uint32) {
		m.Memory().Write(dst, h.pendingBig[:n])
		h.pendingBig = nil
	}).Export(abi.ImportRPCSyncTake.Name())
	b.NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, id, mp, ml, pp, pl uint32) uint32 {
		if h.refuse {
			return abi.RPCRefused
		}
		h.async = append(h.async, asyncCall{id, readString(m.Memory(), mp, ml), readString(m.Memory(), pp, pl)})
		return 0
	}).Export(abi.ImportRPCAsync.Name())
	b.NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, p, n uint32) uint32 {
		h.rejections = append(h.rejections, readString(m.Memory(), p, n))
		return 0
	}).Export(abi.ImportRejection.Name())
	_, err := b.Instantiate(ctx)
	require.NoError(t, err)
	cm, err := r.CompileModule(ctx, guardedGuest(t))
	require.NoError(t, err)
	cfg := wazero.NewModuleConfig().WithStartFunctions().WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader).WithName("")
	mod, err := r.InstantiateModule(ctx, cm, cfg)
	require.NoError(t, err)
	g.mod = mod
	g.mem = mod.Memory()
	g.xch = uint32(g.call(abi.ExportExchange))
	require.EqualValues(t, abi.StatusOK, uint32(g.call(abi.ExportSetLimits, heapLimit, uint64(stack))))
	return g
}

func (g *guestInst) call(e abi.Export, args ...uint64) uint64 {
	g.t.Helper()
	res, err := g.mod.ExportedFunction(e.Name()).Call(g.ctx, args...)
	require.NoError(g.t, err, "call %s", e.Name())
	if len(res) == 0 {
		return 0
	}
	return res[0]
}

func (g *guestInst) u32(off uint32) uint32 {
	v, ok := g.mem.ReadUint32Le(g.xch + off)
	require.True(g.t, ok)
	return v
}

func (g *guestInst) u64(off uint32) uint64 {
	v, ok := g.mem.ReadUint64Le(g.xch + off)
	require.True(g.t, ok)
	return v
}

func (g *guestInst) result() string {
	return readString(g.mem, g.u32(abi.ExchResultPtr), g.u32(abi.ExchResultLen))
}

// input writes b (with room for the guest's NUL) and returns its pointer
// and a release function.
func (g *guestInst) input(b []byte) (uint32, func()) {
	if len(b)+1 <= abi.ExchangeDataSize {
		ptr := g.xch + abi.ExchHeaderSize
		require.True(g.t, g.mem.Write(ptr, b))
		return ptr, func() {}
	}
	ptr := uint32(g.call(abi.ExportAlloc, uint64(len(b)+1)))
	require.NotZero(g.t, ptr)
	require.True(g.t, g.mem.Write(ptr, b))
	return ptr, func() { g.call(abi.ExportFree, uint64(ptr)) }
}

func (g *guestInst) eval(src string, flags uint32) (abi.Status, string) {
	ptr, release := g.input([]byte(src))
	st := abi.Status(g.call(abi.ExportEval, uint64(ptr), uint64(len(src)), uint64(flags)))
	release()
	if st == abi.StatusPending || st == abi.StatusNoHandler {
		return st, ""
	}
	return st, g.result()
}

func (g *guestInst) settle(id uint32, reply string, isErr bool) (abi.Status, string) {
	ptr, release := g.input([]byte(reply))
	e := uint64(0)
	if isErr {
		e = 1
	}
	st := abi.Status(g.call(abi.ExportRPCSettle, uint64(id), uint64(ptr), uint64(len(reply)), e))
	release()
	if st == abi.StatusPending {
		return st, ""
	}
	return st, g.result()
}

func (g *guestInst) dispatch(name, params string, flags uint32) (abi.Status, string) {
	ptr, release := g.input([]byte(name + params))
	st := abi.Status(g.call(abi.ExportDispatch, uint64(ptr), uint64(len(name)), uint64(len(params)), uint64(flags)))
	release()
	if st == abi.StatusPending || st == abi.StatusNoHandler {
		return st, ""
	}
	return st, g.result()
}

// mustEval evaluates src and requires StatusOK, returning the JSON result.
func (g *guestInst) mustEval(src string, flags uint32) string {
	g.t.Helper()
	st, res := g.eval(src, flags)
	require.Equal(g.t, abi.StatusOK, st, "eval %q: %s", src, res)
	return res
}

type jsErr struct {
	Name, Message string
	Stack         *string
}

func decodeErr(t *testing.T, doc string) jsErr {
	t.Helper()
	var e jsErr
	require.NoError(t, json.Unmarshal([]byte(doc), &e), doc)
	return e
}

// guardedGuest is the guest with the stop guard the wazero backend adds:
// the stop global, the yield, and no guard in the interpreter.
func guardedGuest(t *testing.T) []byte {
	guardOnce.Do(func() {
		guarded, guardRep, guardErr = wasmguard.Apply([]byte(guest.WASM), wasmguard.Options{
			StopGlobal: abi.StopGlobal,
			Yield:      &wasmguard.Yield{Module: abi.ImportModule, Name: abi.ImportInterrupt.Name(), Every: abi.YieldEvery},
			Skip:       []string{abi.GuardSkip},
		})
	})
	require.NoError(t, guardErr)
	return guarded
}

var (
	guardOnce sync.Once
	guarded   []byte
	guardRep  wasmguard.Report
	guardErr  error
)

// validateWASM checks that wazero compiles a module.
func validateWASM(t *testing.T, wasm []byte) {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	_, err := r.CompileModule(ctx, wasm)
	require.NoError(t, err)
}
