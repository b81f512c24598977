package wazerobackend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"go.uber.org/goleak"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

func TestMain(m *testing.M) {
	code := m.Run()
	closeGuestModules()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func readWasm(t testing.TB, name string) []byte {
	t.Helper()
	if name == unguardable {
		// The guard refuses a custom section it does not know.
		b := readWasm(t, "fake_noguard")
		return append(b, 0x00, 0x06, 0x04, 't', 'e', 's', 't', 0x00)
	}
	b, err := os.ReadFile(filepath.Join("testdata", name+".wasm"))
	require.NoError(t, err)
	return b
}

// unguardable is fake_noguard with a custom section that the stop guard
// refuses to rewrite around: the backend falls back on CloseOnContextDone.
const unguardable = "fake_unguardable"

// host is a set of host imports for the fake guest. Each field, when set,
// implements that import; unset imports fail the test if called.
type host struct {
	t          testing.TB
	interrupt  func(ctx context.Context, mem backend.Memory, opcodes int64) int32
	rpcSync    func(mem backend.Memory, a, b, c, d uint32) uint64
	take       func(mem backend.Memory, p, l uint32)
	rpcAsync   func(mem backend.Memory, id, a, b, c, d uint32) uint32
	rejection  func(mem backend.Memory, p, l uint32) uint32
	calls      atomic.Int64
	unexpected atomic.Int64
}

func (h *host) config() backend.InstanceConfig {
	var cfg backend.InstanceConfig
	cfg.Imports[abi.ImportInterrupt] = func(ctx context.Context, mem backend.Memory, stack []uint64) {
		if stack[0] == abi.YieldOpcodes {
			stack[0] = 0 // the loop guard's yield (fake.wat), not a poll
			return
		}
		h.calls.Add(1)
		if h.interrupt == nil {
			h.unexpected.Add(1)
			stack[0] = 1
			return
		}
		stack[0] = uint64(uint32(h.interrupt(ctx, mem, int64(stack[0]))))
	}
	cfg.Imports[abi.ImportRPCSync] = func(_ context.Context, mem backend.Memory, stack []uint64) {
		h.calls.Add(1)
		if h.rpcSync == nil {
			h.unexpected.Add(1)
			return
		}
		stack[0] = h.rpcSync(mem, uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3]))
	}
	cfg.Imports[abi.ImportRPCSyncTake] = func(_ context.Context, mem backend.Memory, stack []uint64) {
		h.calls.Add(1)
		if h.take == nil {
			h.unexpected.Add(1)
			return
		}
		h.take(mem, uint32(stack[0]), uint32(stack[1]))
	}
	cfg.Imports[abi.ImportRPCAsync] = func(_ context.Context, mem backend.Memory, stack []uint64) {
		h.calls.Add(1)
		if h.rpcAsync == nil {
			h.unexpected.Add(1)
			return
		}
		stack[0] = uint64(h.rpcAsync(mem, uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3]), uint32(stack[4])))
	}
	cfg.Imports[abi.ImportRejection] = func(_ context.Context, mem backend.Memory, stack []uint64) {
		h.calls.Add(1)
		if h.rejection == nil {
			h.unexpected.Add(1)
			return
		}
		stack[0] = uint64(h.rejection(mem, uint32(stack[0]), uint32(stack[1])))
	}
	return cfg
}

func compileFake(t testing.TB, opts ...Option) backend.Module {
	t.Helper()
	return compileFakeNamed(t, "fake", opts...)
}

// fakes are the fake guest with its stop guard, without (the backend adds
// it) and one that cannot take it (the backend falls back on wazero's
// CloseOnContextDone).
var fakes = []string{"fake", "fake_noguard", unguardable}

func compileFakeNamed(t testing.TB, name string, opts ...Option) backend.Module {
	t.Helper()
	mod, err := New(opts...).Compile(context.Background(), readWasm(t, name))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, mod.Close(context.Background())) })
	return mod
}

func instantiate(t testing.TB, mod backend.Module, h *host, maxPages uint32) backend.Instance {
	t.Helper()
	cfg := h.config()
	cfg.MaxMemoryPages = maxPages
	inst, err := mod.Instantiate(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, inst.Close(context.Background())) })
	return inst
}

func TestName(t *testing.T) {
	require.Equal(t, "wazero", New().Name())
}

func TestCompileRejectsBadModules(t *testing.T) {
	cases := map[string][]byte{
		"empty":    nil,
		"garbage":  []byte("this is not a wasm module at all"),
		"header":   []byte("\x00asm"),
		"trailing": append([]byte("\x00asm\x01\x00\x00\x00"), 0xff, 0xff, 0xff),
	}
	for _, name := range []string{
		"extra_import", "extra_env_import", "bad_import_sig", "import_global", "import_memory",
		"missing_export", "bad_export_sig", "no_memory_export",
	} {
		cases[name] = readWasm(t, name)
	}
	b := New()
	for name, wasm := range cases {
		t.Run(name, func(t *testing.T) {
			mod, err := b.Compile(context.Background(), wasm)
			require.Error(t, err)
			require.Nil(t, mod)
			require.ErrorIs(t, err, backend.ErrBadModule)
			require.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
			t.Log(err)
		})
	}
}

func TestCompileErrorsName(t *testing.T) {
	for name, want := range map[string]string{
		"extra_import":     "wasi_snapshot_preview1.path_open",
		"extra_env_import": "env.system",
		"bad_import_sig":   "env.interrupt",
		"import_global":    "global env.g",
		"missing_export":   "kafig_rpc_settle",
		"bad_export_sig":   "kafig_set_limits",
	} {
		_, err := New().Compile(context.Background(), readWasm(t, name))
		require.ErrorContains(t, err, want, name)
	}
}

func TestBadVersionRejectedAtInstantiate(t *testing.T) {
	mod, err := New().Compile(context.Background(), readWasm(t, "bad_version"))
	require.NoError(t, err)
	defer mod.Close(context.Background())
	inst, err := mod.Instantiate(context.Background(), (&host{t: t}).config())
	require.ErrorIs(t, err, backend.ErrBadModule)
	require.ErrorContains(t, err, "999")
	require.Nil(t, inst)
}

func TestMinimalGuest(t *testing.T) {
	mod, err := New().Compile(context.Background(), readWasm(t, "minimal"))
	require.NoError(t, err)
	defer mod.Close(context.Background())
	inst, err := mod.Instantiate(context.Background(), (&host{t: t}).config())
	require.NoError(t, err)
	defer inst.Close(context.Background())
	var stack [1]uint64
	require.NoError(t, inst.Call(context.Background(), abi.ExportExchange, stack[:]))
	require.Equal(t, uint64(1024), stack[0])
}

func TestOptionsValidatedInCompile(t *testing.T) {
	wasm := readWasm(t, "minimal")

	_, err := New(WithJSStackLimit(abi.MaxJSStack+1)).Compile(context.Background(), wasm)
	require.ErrorContains(t, err, "WithJSStackLimit")

	cache := wazero.NewCompilationCache()
	defer cache.Close(context.Background())
	_, err = New(WithCompilationCache(cache), WithCacheDir(t.TempDir())).Compile(context.Background(), wasm)
	require.ErrorContains(t, err, "cannot be combined")

	_, err = New(WithCacheDir("/dev/null/nope")).Compile(context.Background(), wasm)
	require.Error(t, err)
	require.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
}

func TestJSStackLimit(t *testing.T) {
	adv, ok := New().(backend.StackAdvisor)
	require.True(t, ok)
	require.Equal(t, uint32(jsStackLimit), adv.JSStackLimit())
	require.LessOrEqual(t, adv.JSStackLimit(), uint32(abi.MaxJSStack))
	require.Equal(t, uint32(300000), New(WithJSStackLimit(300000)).(backend.StackAdvisor).JSStackLimit())
	require.Equal(t, uint32(jsStackLimit), New(WithJSStackLimit(0)).(backend.StackAdvisor).JSStackLimit())
}

func TestCompilationCaches(t *testing.T) {
	wasm := readWasm(t, "fake")
	cache := wazero.NewCompilationCache()
	defer cache.Close(context.Background())
	dir := t.TempDir()
	for _, b := range []backend.Backend{New(WithCompilationCache(cache)), New(WithCacheDir(dir))} {
		for range 2 { // the second compile hits the cache
			mod, err := b.Compile(context.Background(), wasm)
			require.NoError(t, err)
			inst, err := mod.Instantiate(context.Background(), (&host{t: t}).config())
			require.NoError(t, err)
			require.NoError(t, inst.Close(context.Background()))
			require.NoError(t, mod.Close(context.Background()))
		}
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.NotEmpty(t, entries)
}

type ctxKey struct{}

func TestHostFuncsGetArgsAndReturnResults(t *testing.T) {
	mod := compileFake(t)
	var seen []int64
	h := &host{t: t}
	h.interrupt = func(ctx context.Context, mem backend.Memory, opcodes int64) int32 {
		assert.Equal(t, "caller", ctx.Value(ctxKey{}), "the HostFunc gets the caller's context")
		assert.NotNil(t, mem)
		seen = append(seen, opcodes)
		if opcodes == 4 {
			return 1
		}
		return 0
	}
	h.rpcSync = func(mem backend.Memory, a, b, c, d uint32) uint64 {
		assert.Equal(t, []uint32{100, 7, 101, 8}, []uint32{a, b, c, d})
		return 5<<32 | 7
	}
	var order []string
	h.take = func(mem backend.Memory, p, l uint32) {
		order = append(order, "take")
		assert.Equal(t, []uint32{200, 3}, []uint32{p, l})
		require.True(t, mem.Write(p, []byte("abc")))
	}
	h.rpcAsync = func(mem backend.Memory, id, a, b, c, d uint32) uint32 {
		order = append(order, "async")
		assert.Equal(t, []uint32{9, 200, 3, 203, 4}, []uint32{id, a, b, c, d})
		v, ok := mem.Read(a, b)
		assert.True(t, ok)
		assert.Equal(t, "abc", string(v))
		return 2
	}
	h.rejection = func(mem backend.Memory, p, l uint32) uint32 {
		order = append(order, "rejection")
		return 42
	}
	inst := instantiate(t, mod, h, 0)
	ctx := context.WithValue(context.Background(), ctxKey{}, "caller")

	stack := make([]uint64, 4)
	require.NoError(t, inst.Call(ctx, abi.ExportEval, stack))
	require.Equal(t, uint64(5), stack[0])
	require.Equal(t, []int64{0, 1, 2, 3, 4}, seen)

	stack[0], stack[1] = 100, 7
	require.NoError(t, inst.Call(ctx, abi.ExportCompile, stack))
	require.Equal(t, uint64(12), stack[0])
	v, ok := inst.Memory().Read(2064, 8)
	require.True(t, ok)
	require.Equal(t, uint64(5<<32|7), binary.LittleEndian.Uint64(v))

	stack[0], stack[1], stack[2] = 200, 3, 9
	require.NoError(t, inst.Call(ctx, abi.ExportEvalBytecode, stack))
	require.Equal(t, uint64(2042), stack[0])
	require.Equal(t, []string{"take", "async", "rejection"}, order)

	stack[0], stack[1] = 1<<40|3, 0xfffffffe
	require.NoError(t, inst.Call(ctx, abi.ExportSetLimits, stack))
	require.Equal(t, uint64(0), stack[0])
	v, _ = inst.Memory().Read(2048, 12)
	require.Equal(t, uint64(1<<40|3), binary.LittleEndian.Uint64(v))
	require.Equal(t, uint32(0xfffffffe), binary.LittleEndian.Uint32(v[8:]))

	require.Zero(t, h.unexpected.Load())
}

func TestWASI(t *testing.T) {
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	before := time.Now()
	stack := make([]uint64, 4)
	require.NoError(t, inst.Call(context.Background(), abi.ExportRPCSettle, stack))
	require.Equal(t, uint64(0), stack[0], "errnos")

	v, ok := inst.Memory().Read(3072, 8)
	require.True(t, ok)
	wall := time.Unix(0, int64(binary.LittleEndian.Uint64(v)))
	require.WithinDuration(t, before, wall, 5*time.Second, "the real clock")

	rnd, _ := inst.Memory().Read(3088, 16)
	require.NotEqual(t, make([]byte, 16), rnd, "real randomness")
	n, _ := inst.Memory().Read(3104, 4)
	require.Equal(t, uint32(6), binary.LittleEndian.Uint32(n), "fd_write consumed (and discarded) hello")
}

func TestHostFuncPanicKillsInstance(t *testing.T) {
	h := &host{t: t}
	h.interrupt = func(context.Context, backend.Memory, int64) int32 { panic("host bug") }
	inst := instantiate(t, compileFake(t), h, 0)
	stack := make([]uint64, 3)
	err := inst.Call(context.Background(), abi.ExportEval, stack)
	require.Error(t, err)
	require.NotErrorIs(t, err, backend.ErrStopped)
	require.ErrorContains(t, err, "host bug")
	require.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
	require.ErrorIs(t, inst.Call(context.Background(), abi.ExportExchange, stack), backend.ErrDead)
}

func TestTrapKillsInstance(t *testing.T) {
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	stack := make([]uint64, 4)
	err := inst.Call(context.Background(), abi.ExportDispatch, stack)
	require.Error(t, err)
	require.NotErrorIs(t, err, backend.ErrStopped)
	require.NotErrorIs(t, err, backend.ErrDead)
	require.ErrorContains(t, err, "unreachable")
	require.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())

	err = inst.Call(context.Background(), abi.ExportExchange, stack)
	require.ErrorIs(t, err, backend.ErrDead)
	require.ErrorContains(t, err, "unreachable", "the cause is kept")
	_, ok := inst.Memory().Read(0, 16)
	require.True(t, ok, "memory of a dead instance stays readable until Close")
}

func TestBadExportIndex(t *testing.T) {
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	err := inst.Call(context.Background(), abi.Export(200), make([]uint64, 4))
	require.Error(t, err)
	require.ErrorIs(t, inst.Call(context.Background(), abi.ExportExchange, make([]uint64, 1)), backend.ErrDead)
}

func TestShortStack(t *testing.T) {
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	err := inst.Call(context.Background(), abi.ExportEval, make([]uint64, 1))
	require.Error(t, err)
	require.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
}

// stopCases end a running call in each way the interface allows.
var stopCases = []struct {
	name  string
	start func(inst backend.Instance) (context.Context, func())
	isCtx error
}{
	{"Stop", func(inst backend.Instance) (context.Context, func()) {
		return context.Background(), inst.Stop
	}, nil},
	{"cancel", func(backend.Instance) (context.Context, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		return ctx, cancel
	}, context.Canceled},
	{"deadline", func(backend.Instance) (context.Context, func()) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		return ctx, func() { <-ctx.Done(); cancel() }
	}, context.DeadlineExceeded},
}

func runAndStop(t *testing.T, inst backend.Instance, fn abi.Export, ctx context.Context, stop func()) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- inst.Call(ctx, fn, make([]uint64, 4)) }()
	return waitStopped(t, done, stop)
}

// waitStopped checks that a call runs until stop, then ends within a second.
func waitStopped(t *testing.T, done chan error, stop func()) error {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("the call ended by itself: %v", err)
	case <-time.After(50 * time.Millisecond): // still running
	}
	stop() // returns once the stop happened (for a deadline: once it passed)
	stopped := time.Now()
	select {
	case err := <-done:
		require.Less(t, time.Since(stopped), time.Second)
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the call did not stop")
		return nil
	}
}

func TestStopLoopWithoutImports(t *testing.T) {
	for _, fake := range fakes {
		mod := compileFakeNamed(t, fake)
		for _, tc := range stopCases {
			t.Run(fake+"/"+tc.name, func(t *testing.T) {
				inst := instantiate(t, mod, &host{t: t}, 0)
				ctx, stop := tc.start(inst)
				err := runAndStop(t, inst, abi.ExportAbort, ctx, stop)
				require.ErrorIs(t, err, backend.ErrStopped)
				if tc.isCtx != nil {
					require.ErrorIs(t, err, tc.isCtx)
				}
				require.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
				require.NotContains(t, err.Error(), "unreachable", "the guard's trap is reported as the stop")
				require.ErrorIs(t, inst.Call(context.Background(), abi.ExportExchange, make([]uint64, 1)), backend.ErrDead)
			})
		}
	}
}

// TestStopGuard: with a guest that exports the stop global (its own, or
// the one Compile adds), the backstop is
// that global (set by Stop and by the end of a call's context), not wazero's
// CloseOnContextDone; without the backstop it stays 0.
func TestStopGuard(t *testing.T) {
	stopGlobal := func(inst backend.Instance) uint64 {
		return inst.(*instance).mod.ExportedGlobal(abi.StopGlobal).Get()
	}
	for _, backstop := range []bool{true, false} {
		mod := compileFake(t, WithBackstop(backstop))
		require.Equal(t, backstop, mod.(*module).guard)
		for _, tc := range stopCases {
			inst := instantiate(t, mod, &host{t: t}, 0)
			require.Zero(t, stopGlobal(inst))
			ctx, stop := tc.start(inst)
			if backstop {
				require.ErrorIs(t, runAndStop(t, inst, abi.ExportAbort, ctx, stop), backend.ErrStopped)
				require.EqualValues(t, 1, stopGlobal(inst), tc.name)
			} else {
				stop()
				require.Zero(t, stopGlobal(inst), tc.name)
			}
		}
	}
	require.True(t, compileFakeNamed(t, "fake_noguard").(*module).guard, "the backend adds the guard")
	require.False(t, compileFakeNamed(t, unguardable).(*module).guard)

	// A trap with no stop requested stays a trap.
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	err := inst.Call(context.Background(), abi.ExportDispatch, make([]uint64, 4))
	require.NotErrorIs(t, err, backend.ErrStopped)
	require.ErrorContains(t, err, "unreachable")
	require.Zero(t, stopGlobal(inst))
}

func TestBadStopGlobal(t *testing.T) {
	mod, err := New().Compile(context.Background(), readWasm(t, "bad_stop_global"))
	require.NoError(t, err)
	defer mod.Close(context.Background())
	inst, err := mod.Instantiate(context.Background(), (&host{t: t}).config())
	require.ErrorIs(t, err, backend.ErrBadModule)
	require.ErrorContains(t, err, abi.StopGlobal)
	require.Nil(t, inst)
}

func TestStopLoopWithImports(t *testing.T) {
	for _, backstop := range []bool{true, false} {
		mod := compileFake(t, WithBackstop(backstop))
		for _, tc := range stopCases {
			t.Run(fmt.Sprint(tc.name, "/backstop=", backstop), func(t *testing.T) {
				h := &host{t: t}
				h.interrupt = func(context.Context, backend.Memory, int64) int32 { return 0 }
				inst := instantiate(t, mod, h, 0)
				ctx, stop := tc.start(inst)
				err := runAndStop(t, inst, abi.ExportEval, ctx, stop)
				require.ErrorIs(t, err, backend.ErrStopped)
				if tc.isCtx != nil {
					require.ErrorIs(t, err, tc.isCtx)
				}
				calls := h.calls.Load()
				require.ErrorIs(t, inst.Call(context.Background(), abi.ExportEval, make([]uint64, 3)), backend.ErrDead)
				require.Equal(t, calls, h.calls.Load(), "no import runs after the stop")
			})
		}
	}
}

func TestNoBackstopCannotStopPureLoop(t *testing.T) {
	// Documented limitation: without the backstop a loop that never calls
	// the host runs on. Here the loop is not infinite: a host call ends it.
	mod := compileFakeNamed(t, "fake_noguard", WithBackstop(false))
	var n atomic.Int64
	h := &host{t: t}
	h.interrupt = func(context.Context, backend.Memory, int64) int32 {
		if n.Add(1) == 3 {
			return 1
		}
		return 0
	}
	inst := instantiate(t, mod, h, 0)
	stack := make([]uint64, 3)
	require.NoError(t, inst.Call(context.Background(), abi.ExportEval, stack))
	require.Equal(t, uint64(3), stack[0])
}

func TestStopIdleAndPreCancelled(t *testing.T) {
	mod := compileFake(t)
	inst := instantiate(t, mod, &host{t: t}, 0)
	inst.Stop()
	inst.Stop()
	err := inst.Call(context.Background(), abi.ExportExchange, make([]uint64, 1))
	require.ErrorIs(t, err, backend.ErrDead)

	inst = instantiate(t, mod, &host{t: t}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = inst.Call(ctx, abi.ExportExchange, make([]uint64, 1))
	require.ErrorIs(t, err, backend.ErrStopped)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, inst.Call(context.Background(), abi.ExportExchange, make([]uint64, 1)), backend.ErrDead)
}

func TestContextDoneAfterCallKeepsInstance(t *testing.T) {
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, inst.Call(ctx, abi.ExportExchange, make([]uint64, 1)))
		cancel() // after the call: must not kill the instance
	}
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, inst.Call(context.Background(), abi.ExportExchange, make([]uint64, 1)))
}

func TestStopRacesCalls(t *testing.T) {
	// Stop at random points of short calls: a call either completes or
	// reports ErrStopped, and the instance is dead afterwards.
	mod := compileFake(t)
	for range 50 {
		h := &host{t: t}
		h.interrupt = func(_ context.Context, _ backend.Memory, n int64) int32 {
			if n == 50 {
				return 1
			}
			return 0
		}
		inst := instantiate(t, mod, h, 0)
		go inst.Stop()
		for range 20 {
			err := inst.Call(context.Background(), abi.ExportEval, make([]uint64, 3))
			if err != nil {
				require.True(t, errors.Is(err, backend.ErrStopped) || errors.Is(err, backend.ErrDead), err.Error())
			}
		}
	}
}

func TestMemoryCap(t *testing.T) {
	mod := compileFake(t)
	inst := instantiate(t, mod, &host{t: t}, 4)
	mem := inst.Memory()
	require.Equal(t, uint32(2*abi.PageSize), mem.Size())
	alloc := func() uint64 {
		stack := []uint64{abi.PageSize}
		require.NoError(t, inst.Call(context.Background(), abi.ExportAlloc, stack))
		return stack[0]
	}
	require.Equal(t, uint64(2*abi.PageSize), alloc())
	require.Equal(t, uint64(3*abi.PageSize), alloc())
	require.Equal(t, uint64(0), alloc(), "memory.grow past the cap returns -1")
	require.Equal(t, uint64(0), alloc())
	require.Equal(t, uint32(4*abi.PageSize), mem.Size())
	require.True(t, mem.Write(4*abi.PageSize-4, []byte{1, 2, 3, 4}))
	require.False(t, mem.Write(4*abi.PageSize-3, []byte{1, 2, 3, 4}))

	// Without a cap the guest grows to its own maximum.
	big := instantiate(t, mod, &host{t: t}, 0)
	stack := []uint64{1000 * abi.PageSize}
	require.NoError(t, big.Call(context.Background(), abi.ExportAlloc, stack))
	require.Equal(t, uint64(2*abi.PageSize), stack[0])
	require.Equal(t, uint32(1002*abi.PageSize), big.Memory().Size())
	require.True(t, big.Memory().Write(1002*abi.PageSize-1, []byte{7}))

	// A cap below the guest's initial memory.
	_, err := mod.Instantiate(context.Background(), func() backend.InstanceConfig {
		cfg := (&host{t: t}).config()
		cfg.MaxMemoryPages = 1
		return cfg
	}())
	require.ErrorContains(t, err, "MaxMemoryPages")
}

func TestMemoryAccess(t *testing.T) {
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	mem := inst.Memory()
	size := mem.Size()
	require.Equal(t, uint32(2*abi.PageSize), size)

	require.True(t, mem.Write(100, []byte("kafig")))
	v, ok := mem.Read(100, 5)
	require.True(t, ok)
	require.Equal(t, "kafig", string(v))
	v[0] = 'K' // a view, not a copy
	v, _ = mem.Read(100, 5)
	require.Equal(t, "Kafig", string(v))

	_, ok = mem.Read(size-1, 2)
	require.False(t, ok)
	_, ok = mem.Read(0xffffffff, 2)
	require.False(t, ok)
	v, ok = mem.Read(size, 0)
	require.True(t, ok)
	require.Empty(t, v)
	require.False(t, mem.Write(size, []byte{1}))
	require.False(t, mem.Write(0xfffffffe, []byte{1, 2, 3}))

	v, _ = mem.Read(4096, 6)
	require.Equal(t, "hello\n", string(v), "data segments are in place")
}

func TestNilImportRefused(t *testing.T) {
	mod := compileFake(t)
	cfg := (&host{t: t}).config()
	cfg.Imports[abi.ImportRejection] = nil
	_, err := mod.Instantiate(context.Background(), cfg)
	require.ErrorContains(t, err, "rejection")
}

func TestCloseIsIdempotent(t *testing.T) {
	mod, err := New().Compile(context.Background(), readWasm(t, "fake"))
	require.NoError(t, err)
	inst, err := mod.Instantiate(context.Background(), (&host{t: t}).config())
	require.NoError(t, err)
	mem := inst.Memory()

	require.NoError(t, inst.Close(context.Background()))
	require.NoError(t, inst.Close(context.Background()))
	inst.Stop()
	require.ErrorIs(t, inst.Call(context.Background(), abi.ExportExchange, make([]uint64, 1)), backend.ErrDead)
	_, ok := mem.Read(0, 1)
	require.False(t, ok, "no access to the memory of a closed instance")
	require.False(t, mem.Write(0, []byte{1}))
	require.Zero(t, mem.Size())

	require.NoError(t, mod.Close(context.Background()))
	require.NoError(t, mod.Close(context.Background()))
	_, err = mod.Instantiate(context.Background(), (&host{t: t}).config())
	require.Error(t, err)
}

func TestModuleClosedBeforeInstance(t *testing.T) {
	mod, err := New().Compile(context.Background(), readWasm(t, "fake"))
	require.NoError(t, err)
	inst, err := mod.Instantiate(context.Background(), (&host{t: t}).config())
	require.NoError(t, err)
	require.NoError(t, mod.Close(context.Background()))

	// The instance is unusable but safe: calls fail, memory stays mapped
	// until the instance is closed.
	err = inst.Call(context.Background(), abi.ExportExchange, make([]uint64, 1))
	require.Error(t, err)
	v, ok := inst.Memory().Read(4096, 6)
	require.True(t, ok)
	require.Equal(t, "hello\n", string(v))
	require.NoError(t, inst.Close(context.Background()))
}

func TestConcurrentInstances(t *testing.T) {
	mod := compileFake(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := &host{t: t}
			h.interrupt = func(_ context.Context, _ backend.Memory, n int64) int32 {
				if n == int64(g) {
					return 1
				}
				return 0
			}
			inst, err := mod.Instantiate(context.Background(), h.config())
			if !assert.NoError(t, err) {
				return
			}
			defer inst.Close(context.Background())
			for range 100 {
				stack := make([]uint64, 3)
				if !assert.NoError(t, inst.Call(context.Background(), abi.ExportEval, stack)) {
					return
				}
				assert.Equal(t, uint64(g+1), stack[0])
			}
		}()
	}
	wg.Wait()
}

func TestDroppedInstanceIsFreed(t *testing.T) {
	mod := compileFake(t)
	freed := make(chan struct{})
	func() {
		inst, err := mod.Instantiate(context.Background(), (&host{t: t}).config())
		require.NoError(t, err)
		lin := inst.(*instance).lin
		runtime.AddCleanup(lin, func(c chan struct{}) { close(c) }, freed)
		_ = inst // dropped without Close
	}()
	deadline := time.After(5 * time.Second)
	for {
		runtime.GC()
		select {
		case <-freed:
			return
		case <-deadline:
			t.Fatal("the memory of a dropped instance was not freed")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestGCWhileGuestLoops: wazero runs guest code on a goroutine that Go
// cannot preempt, so a stop-the-world pause waits for it to call the host.
// The guard's yield (abi.YieldOpcodes) makes even a loop that never polls
// call the host now and then: a collection started while it runs completes.
func TestGCWhileGuestLoops(t *testing.T) {
	inst := instantiate(t, compileFake(t), &host{t: t}, 0)
	done := make(chan error, 1)
	go func() { done <- inst.Call(context.Background(), abi.ExportAbort, make([]uint64, 4)) }()
	time.Sleep(20 * time.Millisecond) // the guest is in its endless loop
	gcDone := make(chan struct{})
	go func() { runtime.GC(); close(gcDone) }()
	select {
	case <-gcDone:
	case <-time.After(10 * time.Second):
		t.Fatal("a garbage collection could not stop the world while the guest looped")
	}
	inst.Stop()
	require.ErrorIs(t, <-done, backend.ErrStopped)
}
