//go:build cgo

package wasmtimebackend

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/guest"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// A minimal host for the real guest (guest.WASM), at the ABI level: enough
// to evaluate scripts and read their results.

type jsGuest struct {
	t   testing.TB
	in  backend.Instance
	mem backend.Memory
	xch uint32
}

var (
	guestModsMu sync.Mutex
	guestMods   = map[string]backend.Module{}
)

// guestModule compiles the real guest once per option set for the test
// binary; the modules are closed by closeGuestModules.
func guestModule(t testing.TB, opts ...Option) backend.Module {
	t.Helper()
	o := options{backstop: true}
	for _, opt := range opts {
		opt(&o)
	}
	key := fmt.Sprintf("%+v", o)
	guestModsMu.Lock()
	defer guestModsMu.Unlock()
	if m := guestMods[key]; m != nil {
		return m
	}
	m, err := New(opts...).Compile(context.Background(), []byte(guest.WASM))
	require.NoError(t, err)
	guestMods[key] = m
	return m
}

func closeGuestModules() {
	guestModsMu.Lock()
	defer guestModsMu.Unlock()
	for k, m := range guestMods {
		_ = m.Close(context.Background())
		delete(guestMods, k)
	}
}

// guestImports answer like a host with no RPC handlers whose interrupt
// stops an operation after about 200M opcodes (a runaway test script).
func guestImports() (imps [abi.ImportCount]backend.HostFunc) {
	imps[abi.ImportInterrupt] = func(ctx context.Context, mem backend.Memory, stack []uint64) {
		opcodes := stack[0]
		stack[0] = 0
		if opcodes > 200_000_000 && opcodes != abi.YieldOpcodes {
			stack[0] = 1
		}
	}
	imps[abi.ImportRPCSync] = func(ctx context.Context, mem backend.Memory, stack []uint64) {
		stack[0] = uint64(abi.RPCError) << 32 // no handler, empty reply
	}
	imps[abi.ImportRPCSyncTake] = func(ctx context.Context, mem backend.Memory, stack []uint64) {}
	imps[abi.ImportRPCAsync] = func(ctx context.Context, mem backend.Memory, stack []uint64) { stack[0] = abi.RPCRefused }
	imps[abi.ImportRejection] = func(ctx context.Context, mem backend.Memory, stack []uint64) { stack[0] = 0 }
	return imps
}

func newJSGuest(t testing.TB, m backend.Module, jsStack uint32) *jsGuest {
	t.Helper()
	in, err := m.Instantiate(context.Background(), backend.InstanceConfig{Imports: guestImports(), MaxMemoryPages: 4096})
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	g := &jsGuest{t: t, in: in, mem: in.Memory()}
	stack := make([]uint64, 2)
	require.NoError(t, in.Call(context.Background(), abi.ExportExchange, stack))
	g.xch = uint32(stack[0])
	stack[0], stack[1] = 0, uint64(jsStack)
	require.NoError(t, in.Call(context.Background(), abi.ExportSetLimits, stack))
	require.Equal(t, uint64(abi.StatusOK), stack[0])
	return g
}

func (g *jsGuest) u32(off uint32) uint32 {
	b, ok := g.mem.Read(g.xch+off, 4)
	require.True(g.t, ok)
	return binary.LittleEndian.Uint32(b)
}

// eval runs src; err is a backend error (a trap), which kills the instance.
func (g *jsGuest) eval(src string) (abi.Status, string, error) {
	ptr := g.xch + abi.ExchHeaderSize
	var free uint32
	if len(src)+1 > abi.ExchangeDataSize {
		stack := []uint64{uint64(len(src) + 1)}
		if err := g.in.Call(context.Background(), abi.ExportAlloc, stack); err != nil {
			return 0, "", err
		}
		ptr = uint32(stack[0])
		require.NotZero(g.t, ptr)
		free = ptr
	}
	require.True(g.t, g.mem.Write(ptr, append([]byte(src), 0)))
	stack := []uint64{uint64(ptr), uint64(len(src)), 0}
	if err := g.in.Call(context.Background(), abi.ExportEval, stack); err != nil {
		return 0, "", err
	}
	st := abi.Status(stack[0])
	var res string
	if st != abi.StatusPending && st != abi.StatusNoHandler {
		b, ok := g.mem.Read(g.u32(abi.ExchResultPtr), g.u32(abi.ExchResultLen))
		require.True(g.t, ok)
		res = string(b)
	}
	if free != 0 {
		if err := g.in.Call(context.Background(), abi.ExportFree, []uint64{uint64(free)}); err != nil {
			return st, res, err
		}
	}
	return st, res, nil
}

func TestGuestABIVersion(t *testing.T) {
	defer closeGuestModules()
	m := guestModule(t)
	in, err := m.Instantiate(context.Background(), backend.InstanceConfig{Imports: guestImports()})
	require.NoError(t, err)
	defer in.Close(context.Background())
	stack := []uint64{0}
	require.NoError(t, in.Call(context.Background(), abi.ExportABIVersion, stack))
	require.Equal(t, uint64(abi.Version), stack[0])

	g := newJSGuest(t, m, 0)
	st, res, err := g.eval(`1+1`)
	require.NoError(t, err)
	require.Equal(t, abi.StatusOK, st, res)
	require.Equal(t, "2", res)
}

// The backstop ends JavaScript that never yields to the host (here the host's
// interrupt never says stop), and another instance goes on: with the stop
// guard (the default) and with epochs (WithEpochBackstop).
func TestGuestStop(t *testing.T) {
	defer closeGuestModules()
	for _, epochs := range []bool{false, true} {
		t.Run(fmt.Sprint("epochs=", epochs), func(t *testing.T) {
			m := guestModule(t, WithEpochBackstop(epochs))
			o := m.(*module).c.opts
			require.Equal(t, !epochs, o.guarded, "the real guest takes the stop guard")
			require.Equal(t, epochs, o.epoch)
			guestStop(t, m, `for (;;) {}`)
			guestStop(t, guestModule(t, WithEpochBackstop(epochs)), `Array.prototype.includes.call({length: 2**53 - 1}, 1)`)
		})
	}
}

func guestStop(t *testing.T, m backend.Module, src string) {
	g := newJSGuest(t, m, 0)
	other := newJSGuest(t, m, 0)
	done := make(chan error, 1)
	go func() {
		_, _, err := g.eval(src)
		done <- err
	}()
	otherDone := make(chan string, 1)
	go func() {
		st, res, err := other.eval(`let s = 0; for (let i = 0; i < 3e7; i++) s += i % 7; s`)
		otherDone <- fmt.Sprintf("%d %s %v", st, res, err)
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	g.in.Stop()
	select {
	case err := <-done:
		require.ErrorIs(t, err, backend.ErrStopped)
		t.Logf("stopped in %v", time.Since(start))
	case <-time.After(time.Second):
		t.Fatal("not stopped within a second")
	}
	_, _, err := g.eval(`1`)
	require.ErrorIs(t, err, backend.ErrDead)
	want := 0
	for i := range 30_000_000 {
		want += i % 7
	}
	require.Equal(t, fmt.Sprintf("0 %d <nil>", want), <-otherDone)
}

// BenchmarkGuestLoop: a JavaScript compute loop, with and without the
// backstop.
func BenchmarkGuestLoop(b *testing.B) {
	defer closeGuestModules()
	for _, bs := range []bool{true, false} {
		name := "backstop"
		if !bs {
			name = "no-backstop"
		}
		b.Run(name, func(b *testing.B) {
			g := newJSGuest(b, guestModule(b, WithBackstop(bs)), 0)
			for b.Loop() {
				st, res, err := g.eval(`(() => { let s = 0; for (let i = 0; i < 1e6; i++) s = (s + i * 7) % 1000003; return s })()`)
				if err != nil || st != abi.StatusOK {
					b.Fatal(st, res, err)
				}
			}
		})
	}
}

// BenchmarkGuestEval: the smallest eval round trip with the real guest.
func BenchmarkGuestEval(b *testing.B) {
	defer closeGuestModules()
	g := newJSGuest(b, guestModule(b), 0)
	b.ReportAllocs()
	for b.Loop() {
		if st, res, err := g.eval(`1+1`); err != nil || st != abi.StatusOK {
			b.Fatal(st, res, err)
		}
	}
}

// BenchmarkGuestInstantiate: a fresh instance of the real guest (Store,
// copy-on-write memory image, ABI version check) and its Close, with and
// without the instance pool; "setup" adds the calls package kafig makes on a
// new instance (kafig_exchange, kafig_set_limits), where the guest first
// writes to its memory. thread-cpu-ns/op and faults/op are the benchmark
// thread's own CPU time and minor page faults (the goroutine is locked to
// it), steadier than wall time on a busy machine.
func BenchmarkGuestInstantiate(b *testing.B) {
	defer closeGuestModules()
	for _, pool := range []int{1000, 0} {
		for _, setup := range []bool{false, true} {
			name := "pool"
			if pool == 0 {
				name = "no-pool"
			}
			if setup {
				name += "/setup"
			}
			b.Run(name, func(b *testing.B) {
				m := guestModule(b, WithInstancePool(pool))
				ctx := context.Background()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				stack := make([]uint64, 2)
				b.ReportAllocs()
				cpu0, f0, ok := threadUsage()
				for b.Loop() {
					in, err := m.Instantiate(ctx, backend.InstanceConfig{Imports: guestImports()})
					if err != nil {
						b.Fatal(err)
					}
					if setup {
						if err := in.Call(ctx, abi.ExportExchange, stack); err != nil {
							b.Fatal(err)
						}
						stack[0], stack[1] = 32<<20, DefaultJSStackLimit
						if err := in.Call(ctx, abi.ExportSetLimits, stack); err != nil {
							b.Fatal(err)
						}
					}
					_ = in.Close(ctx)
				}
				if cpu1, f1, ok2 := threadUsage(); ok && ok2 {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "thread-cpu-ns/op")
					b.ReportMetric(float64(f1-f0)/float64(b.N), "faults/op")
				}
			})
		}
	}
}
