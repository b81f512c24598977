//go:build cgo

package wasmtimebackend

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

func TestName(t *testing.T) {
	b := New()
	assert.Equal(t, "wasmtime", b.Name())
	sa, ok := b.(backend.StackAdvisor)
	require.True(t, ok)
	assert.Equal(t, uint32(DefaultJSStackLimit), sa.JSStackLimit())
	assert.Equal(t, uint32(256<<10), sa.JSStackLimit())
	assert.Equal(t, uint32(128<<10), New(WithMaxWasmStack(3<<20)).(backend.StackAdvisor).JSStackLimit())
	assert.Equal(t, uint32(100<<10), New(WithJSStackLimit(100<<10)).(backend.StackAdvisor).JSStackLimit())
}

func TestBadModules(t *testing.T) {
	ctx := context.Background()
	b := New()
	cases := map[string][]byte{
		"empty":           nil,
		"garbage":         []byte("this is not wasm at all"),
		"truncated":       fakeWasm[:len(fakeWasm)/2],
		"bad magic":       append([]byte("\x01asm"), fakeWasm[4:]...),
		"unknown env":     wat(t, `"env" "rejection"`, `"env" "reject"`),
		"other module":    wat(t, `"env" "rejection"`, `"evil" "rejection"`),
		"wasi not listed": wat(t, `"wasi_snapshot_preview1" "random_get"`, `"wasi_snapshot_preview1" "proc_exit"`),
		"wasi bad type": wat(t, `(memory (export "memory") 2)`,
			`(import "wasi_snapshot_preview1" "random_get" (func (param i32 i64) (result i32))) (memory (export "memory") 2)`),
		"import type": wat(t, `(memory (export "memory") 2)`,
			`(import "env" "interrupt" (func (param i32) (result i32))) (memory (export "memory") 2)`),
		"import no result": wat(t, `(memory (export "memory") 2)`,
			`(import "env" "rejection" (func (param i32 i32))) (memory (export "memory") 2)`),
		"import float": wat(t, `(memory (export "memory") 2)`,
			`(import "env" "rejection" (func (param f32 i32) (result i32))) (memory (export "memory") 2)`),
		"import memory": wat(t, `(memory (export "memory") 2)`,
			`(import "env" "mem" (memory 2)) (export "memory" (memory 0))`),
		"import global": wat(t, `(memory (export "memory") 2)`,
			`(import "env" "g" (global i32)) (memory (export "memory") 2)`),
		"missing export": wat(t, `(export "kafig_abort")`, `(export "kafig_abort_")`),
		"export type": wat(t, `(func (export "kafig_free") (param i32))`,
			`(func (export "kafig_free_") (param i32)) (func (export "kafig_free") (param i64))`),
		"export result": wat(t, `(func (export "kafig_free") (param i32))`,
			`(func (export "kafig_free_") (param i32)) (func (export "kafig_free") (param i32) (result i32) (i32.const 0))`),
		"export not func": wat(t, `(func (export "kafig_free") (param i32))`,
			`(func (export "kafig_free_") (param i32)) (global (export "kafig_free") i32 (i32.const 0))`),
		"memory64":  wat(t, `(memory (export "memory") 2)`, `(memory (export "memory") i64 2)`),
		"no memory": wat(t, `(memory (export "memory") 2)`, `(memory 2)`),
	}
	for name, wasm := range cases {
		t.Run(name, func(t *testing.T) {
			m, err := b.Compile(ctx, wasm)
			require.Error(t, err)
			assert.Nil(t, m)
			assert.ErrorIs(t, err, backend.ErrBadModule)
			assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
			t.Log(err)
		})
	}

	t.Run("abi version", func(t *testing.T) {
		m, err := b.Compile(ctx, wat(t, `(result i32) (i32.const 2))`, `(result i32) (i32.const 3))`))
		require.NoError(t, err)
		defer m.Close(ctx)
		in, err := m.Instantiate(ctx, backend.InstanceConfig{})
		assert.Nil(t, in)
		assert.ErrorIs(t, err, backend.ErrBadModule)
		t.Log(err)
	})
	assert.Zero(t, cachedModules())
}

func TestCallsAndHostFunctions(t *testing.T) {
	m := compileFake(t)
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "the call's ctx")
	var rec recorder
	var sawCtx, sawMem []string
	rec.answer = func(ctx context.Context, mem backend.Memory, imp abi.Import, stack []uint64) {
		v, _ := ctx.Value(ctxKey{}).(string)
		sawCtx = append(sawCtx, v)
		b, ok := mem.Read(4096, 25)
		if ok {
			sawMem = append(sawMem, string(b))
		}
		switch imp {
		case abi.ImportInterrupt:
			stack[0] = 7
		case abi.ImportRPCSync:
			stack[0] = 0xDEADBEEF_CAFEBABE
		case abi.ImportRPCAsync:
			stack[0] = 0xFFFFFFFF // -1 as i32
		case abi.ImportRejection:
			stack[0] = 100
		}
	}
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})

	// i32 params and results are zero-extended uint64s; i32 arithmetic wraps.
	assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 1, 2, 0)[0])
	assert.Equal(t, uint64(0), call(t, in, abi.ExportEval, 0xFFFFFFFF, 1, 0)[0])
	assert.Equal(t, uint64(0xFFFFFFFE), call(t, in, abi.ExportEval, 0xFFFFFFFF, 0xFFFFFFFF, 0)[0])
	// High bits of an i32 param are ignored.
	assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 0xABCD_00000001, 2, 0)[0])
	// i64 param.
	assert.Equal(t, uint64(0x10+5), call(t, in, abi.ExportSetLimits, 0x7_00000010, 5)[0])
	assert.Equal(t, uint64(1024), call(t, in, abi.ExportExchange)[0])
	assert.Equal(t, uint64(abi.Version), call(t, in, abi.ExportABIVersion)[0])
	call(t, in, abi.ExportFree, 0)

	a, b, c, d := uint64(0xFFFFFFFF), uint64(2), uint64(0x80000000), uint64(4)
	stack := []uint64{a, b, c, d}
	require.NoError(t, in.Call(ctx, abi.ExportDispatch, stack))
	assert.Equal(t, [][]uint64{{a | b<<32}}, rec.got(abi.ImportInterrupt))
	assert.Equal(t, [][]uint64{{a, b, c, d}}, rec.got(abi.ImportRPCSync))
	assert.Equal(t, [][]uint64{{c, d}}, rec.got(abi.ImportRPCSyncTake))
	assert.Equal(t, [][]uint64{{a, b, c, d, 0xFFFFFFFF}}, rec.got(abi.ImportRPCAsync))
	assert.Equal(t, [][]uint64{{c, d}}, rec.got(abi.ImportRejection))
	// 7 + (-1) + 100
	assert.Equal(t, uint64(106), stack[0])
	mem := in.Memory()
	got, ok := mem.Read(2048, 24)
	require.True(t, ok)
	assert.Equal(t, uint32(7), binary.LittleEndian.Uint32(got[0:]))
	assert.Equal(t, uint64(0xDEADBEEF_CAFEBABE), binary.LittleEndian.Uint64(got[8:]))
	assert.Equal(t, uint32(0xFFFFFFFF), binary.LittleEndian.Uint32(got[16:]))
	assert.Equal(t, uint32(100), binary.LittleEndian.Uint32(got[20:]))
	assert.Equal(t, []string{"the call's ctx", "the call's ctx", "the call's ctx", "the call's ctx", "the call's ctx"}, sawCtx)
	assert.Len(t, sawMem, 5)
	assert.Equal(t, "hello from the fake guest", sawMem[0])

	// Bad arguments are refused without killing the instance.
	assert.Error(t, in.Call(ctx, abi.ExportDispatch, make([]uint64, 3)))
	assert.Error(t, in.Call(ctx, abi.Export(200), make([]uint64, 8)))
	assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 1, 2, 0)[0])
}

func TestWASI(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	before, _ := in.Memory().Read(3200, 16)
	before = append([]byte(nil), before...)
	r := call(t, in, abi.ExportRPCSettle, 1, 0, 0, 0)[0]
	assert.Equal(t, uint64(0), r&0xFF, "random_get errno")
	assert.Equal(t, uint64(0), (r>>8)&0xFF, "clock_time_get errno")
	t.Logf("fd_write(1) to the non-inherited stdout: errno %d", (r>>16)&0xFF)
	after, _ := in.Memory().Read(3200, 16)
	assert.NotEqual(t, before, after, "random_get filled the buffer")
	clock, _ := in.Memory().Read(3232, 8)
	ns := int64(binary.LittleEndian.Uint64(clock))
	assert.InDelta(t, time.Now().UnixNano(), ns, float64(time.Minute), "clock_time_get(realtime)")
}

func TestMemory(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports(), MaxMemoryPages: 4})
	mem := in.Memory()
	assert.Equal(t, uint32(2*abi.PageSize), mem.Size())

	b, ok := mem.Read(0, 2*abi.PageSize)
	assert.True(t, ok)
	assert.Len(t, b, 2*abi.PageSize)
	_, ok = mem.Read(2*abi.PageSize-1, 2)
	assert.False(t, ok)
	_, ok = mem.Read(0xFFFFFFFF, 2)
	assert.False(t, ok)
	assert.True(t, mem.Write(2*abi.PageSize-3, []byte("abc")))
	assert.False(t, mem.Write(2*abi.PageSize-2, []byte("abc")))
	b, ok = mem.Read(2*abi.PageSize-3, 3)
	require.True(t, ok)
	assert.Equal(t, "abc", string(b))

	// Growth within the cap, then refused: memory.grow returns -1.
	assert.Equal(t, uint64(2), call(t, in, abi.ExportAlloc, 1)[0])
	assert.Equal(t, uint32(3*abi.PageSize), mem.Size())
	assert.Equal(t, uint64(3), call(t, in, abi.ExportAlloc, 1)[0])
	assert.Equal(t, uint64(0xFFFFFFFF), call(t, in, abi.ExportAlloc, 1)[0])
	assert.Equal(t, uint64(0xFFFFFFFF), call(t, in, abi.ExportAlloc, 1000)[0])
	assert.Equal(t, uint32(4*abi.PageSize), mem.Size())
	_, ok = mem.Read(4*abi.PageSize-1, 1)
	assert.True(t, ok)

	// Without a cap the guest's own maximum (none here: 4 GiB) applies.
	in2 := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	assert.Equal(t, uint64(2), call(t, in2, abi.ExportAlloc, 100)[0])
	assert.Equal(t, uint32(102*abi.PageSize), in2.Memory().Size())

	// A cap below the initial memory fails instantiation.
	_, err := m.Instantiate(context.Background(), backend.InstanceConfig{Imports: rec.imports(), MaxMemoryPages: 1})
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
	t.Log(err)
}

// stopCase starts an import-free infinite loop in one instance and a long
// compute loop in another on the same engine, stops the first with stop,
// and checks that it ends within a second while the other finishes with the
// right answer.
func stopCase(t *testing.T, stop func(in backend.Instance, cancel context.CancelFunc), wantCtxErr error) {
	t.Run("guard", func(t *testing.T) {
		m := compileFake(t)
		require.True(t, m.(*module).c.opts.guarded, "the fake exports the stop word: the backstop is the guard")
		require.False(t, m.(*module).c.opts.epoch)
		stopCaseOn(t, m, stop, wantCtxErr)
	})
	t.Run("epoch", func(t *testing.T) {
		m := compileWasm(t, unguardableFake())
		require.False(t, m.(*module).c.opts.guarded)
		require.True(t, m.(*module).c.opts.epoch, "a module that cannot take the guard gets epochs")
		stopCaseOn(t, m, stop, wantCtxErr)
	})
}

func stopCaseOn(t *testing.T, m backend.Module, stop func(in backend.Instance, cancel context.CancelFunc), wantCtxErr error) {
	var rec recorder
	looper := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	other := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})

	// Calibrate the other instance's loop to last well beyond the stop.
	n := uint64(1 << 20)
	for {
		start := time.Now()
		call(t, other, abi.ExportEvalBytecode, n, 0, 0)
		if time.Since(start) > 100*time.Millisecond || n >= 1<<31 {
			break
		}
		n *= 2
	}
	n = min(n*8, 0xFFFFFFFF)
	want := uint32(0)
	for i := uint32(0); uint64(i) < n; i++ {
		want = want*31 + i
	}

	var wg sync.WaitGroup
	wg.Add(1)
	var otherErr error
	var otherStack = []uint64{n, 0, 0}
	var otherTime time.Duration
	go func() {
		defer wg.Done()
		start := time.Now()
		otherErr = other.Call(context.Background(), abi.ExportEvalBytecode, otherStack)
		otherTime = time.Since(start)
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- looper.Call(ctx, abi.ExportEval, []uint64{0, 0, 1}) }()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	stop(looper, cancel)
	select {
	case err := <-done:
		t.Logf("stopped in %v: %v", time.Since(start), err)
		assert.ErrorIs(t, err, backend.ErrStopped)
		if wantCtxErr != nil {
			assert.ErrorIs(t, err, wantCtxErr)
		}
		assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
	case <-time.After(time.Second):
		t.Fatal("the loop did not stop within a second")
	}
	err := looper.Call(context.Background(), abi.ExportEval, []uint64{1, 2, 0})
	assert.ErrorIs(t, err, backend.ErrDead)
	t.Log(err)

	wg.Wait()
	t.Logf("the other instance ran %v", otherTime)
	require.NoError(t, otherErr)
	assert.Equal(t, uint64(want), otherStack[0])
	assert.Equal(t, uint64(3), call(t, other, abi.ExportEval, 1, 2, 0)[0])
}

func TestStop(t *testing.T) {
	stopCase(t, func(in backend.Instance, _ context.CancelFunc) { in.Stop() }, nil)
}

func TestContextCancel(t *testing.T) {
	stopCase(t, func(_ backend.Instance, cancel context.CancelFunc) { cancel() }, context.Canceled)
}

func TestContextDeadline(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := in.Call(ctx, abi.ExportEval, []uint64{0, 0, 1})
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorIs(t, err, backend.ErrStopped)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, in.Call(ctx, abi.ExportEval, []uint64{0, 0, 0}), backend.ErrDead)

	// A context that is already done stops the call before it starts.
	in2 := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	err = in2.Call(ctx, abi.ExportEval, []uint64{0, 0, 0})
	assert.ErrorIs(t, err, backend.ErrStopped)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestStopIdle(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	in.Stop()
	in.Stop()
	assert.ErrorIs(t, in.Call(context.Background(), abi.ExportEval, []uint64{1, 2, 0}), backend.ErrDead)
}

// Without the backstop a stop still ends a guest that calls imports.
func TestStopWithoutBackstop(t *testing.T) {
	m := compileFake(t, WithBackstop(false))
	var rec recorder
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	done := make(chan error, 1)
	go func() { done <- in.Call(context.Background(), abi.ExportRPCSettle, []uint64{2, 0, 0, 0}) }()
	time.Sleep(20 * time.Millisecond)
	in.Stop()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, backend.ErrStopped)
	case <-time.After(time.Second):
		t.Fatal("not stopped")
	}
	assert.NotEmpty(t, rec.got(abi.ImportInterrupt))
}

func TestTrapKillsOnlyThatInstance(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	a := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	b := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	err := a.Call(context.Background(), abi.ExportAbort, nil)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
	t.Log(err)
	err = a.Call(context.Background(), abi.ExportEval, []uint64{1, 2, 0})
	assert.ErrorIs(t, err, backend.ErrDead)
	t.Log(err)
	assert.Equal(t, uint64(3), call(t, b, abi.ExportEval, 1, 2, 0)[0])
}

func TestDeepRecursion(t *testing.T) {
	for _, ws := range []int{minMaxWasmStack, 2 << 20, DefaultMaxWasmStack} {
		m := compileFake(t, WithMaxWasmStack(ws))
		var rec recorder
		a := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
		assert.Equal(t, uint64(1001), call(t, a, abi.ExportCompile, 1000, 0)[0])
		err := a.Call(context.Background(), abi.ExportCompile, []uint64{0xFFFFFFFF, 0})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "native stack")
		b, _ := a.Memory().Read(0, 4)
		depth := binary.LittleEndian.Uint32(b)
		t.Logf("max wasm stack %d KiB: trapped at depth %d (%.1f bytes/frame)", ws>>10, depth, float64(ws)/float64(depth))
		assert.ErrorIs(t, a.Call(context.Background(), abi.ExportEval, []uint64{1, 2, 0}), backend.ErrDead)
		b2 := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
		assert.Equal(t, uint64(3), call(t, b2, abi.ExportEval, 1, 2, 0)[0])
	}
}

func TestHostPanic(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	rec.answer = func(ctx context.Context, mem backend.Memory, imp abi.Import, stack []uint64) {
		if imp == abi.ImportRPCSync {
			panic("boom")
		}
	}
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	err := in.Call(context.Background(), abi.ExportDispatch, make([]uint64, 4))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "boom")
	assert.Contains(t, err.Error(), "rpc_sync")
	assert.ErrorIs(t, in.Call(context.Background(), abi.ExportEval, []uint64{1, 2, 0}), backend.ErrDead)

	// A missing host function is an error too, not a crash.
	in2 := instantiate(t, m, backend.InstanceConfig{})
	err = in2.Call(context.Background(), abi.ExportDispatch, make([]uint64, 4))
	require.Error(t, err)
	t.Log(err)
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	m, err := New().Compile(ctx, fakeWasm)
	require.NoError(t, err)
	var rec recorder
	in, err := m.Instantiate(ctx, backend.InstanceConfig{Imports: rec.imports()})
	require.NoError(t, err)
	mem := in.Memory()
	// The module closes first; its instance keeps the compiled code alive.
	require.NoError(t, m.Close(ctx))
	require.NoError(t, m.Close(ctx))
	_, err = m.Instantiate(ctx, backend.InstanceConfig{})
	assert.Error(t, err)
	assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 1, 2, 0)[0])
	assert.Equal(t, 1, cachedModules())
	require.NoError(t, in.Close(ctx))
	require.NoError(t, in.Close(ctx))
	in.Stop()
	assert.ErrorIs(t, in.Call(ctx, abi.ExportEval, []uint64{1, 2, 0}), backend.ErrDead)
	_, ok := mem.Read(0, 1)
	assert.False(t, ok)
	assert.False(t, mem.Write(0, []byte{1}))
	assert.Zero(t, mem.Size())
	assert.Zero(t, cachedModules())
}

func TestCompileShared(t *testing.T) {
	ctx := context.Background()
	b := New()
	var mods []backend.Module
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := b.Compile(ctx, fakeWasm)
			assert.NoError(t, err)
			mu.Lock()
			mods = append(mods, m)
			mu.Unlock()
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, cachedModules())
	for _, m := range mods[1:] {
		assert.Same(t, mods[0].(*module).c, m.(*module).c)
	}
	// Other settings are another engine.
	m2 := compileFake(t, WithBackstop(false))
	assert.NotSame(t, mods[0].(*module).c, m2.(*module).c)
	assert.Equal(t, 2, cachedModules())
	for _, m := range mods {
		require.NoError(t, m.Close(ctx))
	}
	require.NoError(t, m2.Close(ctx))
	assert.Zero(t, cachedModules())
}

func TestDiskCache(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "cache")
	b := New(WithCacheDir(dir))
	m, err := b.Compile(ctx, fakeWasm)
	require.NoError(t, err)
	require.NoError(t, m.Close(ctx))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	files, err := filepath.Glob(filepath.Join(dir, "kafig-*.cwasm"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	fi, err = os.Stat(files[0])
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	orig, err := os.ReadFile(files[0])
	require.NoError(t, err)

	// Loaded from the cache, also under another max wasm stack.
	hits := diskHits.Load()
	m, err = b.Compile(ctx, fakeWasm)
	require.NoError(t, err)
	assert.Equal(t, hits+1, diskHits.Load())
	m2, err := New(WithCacheDir(dir), WithMaxWasmStack(2<<20)).Compile(ctx, fakeWasm)
	require.NoError(t, err)
	assert.Equal(t, hits+2, diskHits.Load())
	require.NoError(t, m2.Close(ctx))
	var rec recorder
	in, err := m.Instantiate(ctx, backend.InstanceConfig{Imports: rec.imports()})
	require.NoError(t, err)
	assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 1, 2, 0)[0])
	require.NoError(t, in.Close(ctx))
	require.NoError(t, m.Close(ctx))

	// A corrupt file is ignored and rewritten.
	bad := append([]byte(nil), orig...)
	bad[len(bad)-10] ^= 0xFF
	require.NoError(t, os.WriteFile(files[0], bad, 0o600))
	assert.Nil(t, readCache(files[0], [32]byte(orig[8:40])))
	m, err = b.Compile(ctx, fakeWasm)
	require.NoError(t, err)
	assert.Equal(t, hits+2, diskHits.Load(), "the corrupt file was not loaded")
	in, err = m.Instantiate(ctx, backend.InstanceConfig{Imports: rec.imports()})
	require.NoError(t, err)
	assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 1, 2, 0)[0])
	require.NoError(t, in.Close(ctx))
	require.NoError(t, m.Close(ctx))
	again, err := os.ReadFile(files[0])
	require.NoError(t, err)
	assert.Equal(t, orig[:72], again[:72])
	assert.NotNil(t, readCache(files[0], [32]byte(orig[8:40])))
	files, err = filepath.Glob(filepath.Join(dir, "*"))
	require.NoError(t, err)
	assert.Len(t, files, 1, "one file, no temporary left")

	// A dir others can write to is refused.
	open := filepath.Join(t.TempDir(), "open")
	require.NoError(t, os.Mkdir(open, 0o777))
	require.NoError(t, os.Chmod(open, 0o777))
	_, err = New(WithCacheDir(open)).Compile(ctx, fakeWasm)
	require.Error(t, err)
	t.Log(err)
}

func TestOptionsValidated(t *testing.T) {
	ctx := context.Background()
	for name, b := range map[string]backend.Backend{
		"stack too small":   New(WithMaxWasmStack(1024)),
		"stack too large":   New(WithMaxWasmStack(8 << 20)),
		"js stack too big":  New(WithJSStackLimit(abi.MaxJSStack + 1)),
		"js stack too tiny": New(WithJSStackLimit(1)),
		"js stack for wasm": New(WithMaxWasmStack(1<<20), WithJSStackLimit(256<<10)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := b.Compile(ctx, fakeWasm)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
			t.Log(err)
		})
	}
	assert.NotNil(t, New(nil))
}

func TestConcurrentInstances(t *testing.T) {
	m := compileFake(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rec recorder
			rec.answer = func(ctx context.Context, mem backend.Memory, imp abi.Import, stack []uint64) {
				stack[0] = uint64(g)
			}
			in, err := m.Instantiate(context.Background(), backend.InstanceConfig{Imports: rec.imports()})
			if !assert.NoError(t, err) {
				return
			}
			defer in.Close(context.Background())
			for k := range 200 {
				stack := []uint64{uint64(k), uint64(g), 0}
				if !assert.NoError(t, in.Call(context.Background(), abi.ExportEval, stack)) {
					return
				}
				assert.Equal(t, uint64(k+g), stack[0])
				stack = []uint64{0, 10, 0, 0}
				assert.NoError(t, in.Call(context.Background(), abi.ExportRPCSettle, stack))
				assert.Equal(t, uint64(10*g), stack[0])
			}
		}()
	}
	wg.Wait()
}

func TestStopRace(t *testing.T) {
	// Stops racing with calls and with the end of calls never crash and
	// always leave a consistent instance.
	m := compileFake(t)
	var rec recorder
	for range 50 {
		in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(time.Duration(len(rec.got(abi.ImportInterrupt))%3) * time.Microsecond); cancel() }()
		var err error
		for err == nil {
			err = in.Call(ctx, abi.ExportEvalBytecode, []uint64{1000, 0, 0})
		}
		assert.True(t, errors.Is(err, backend.ErrStopped) || errors.Is(err, backend.ErrDead), err.Error())
		assert.ErrorIs(t, in.Call(context.Background(), abi.ExportEval, []uint64{1, 2, 0}), backend.ErrDead)
		cancel()
	}
}

// The end of a context after its calls returned leaves the instance alone.
func TestContextEndsWhileIdle(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	ctx, cancel := context.WithCancel(context.Background())
	for range 3 {
		stack := []uint64{1, 2, 0}
		require.NoError(t, in.Call(ctx, abi.ExportEval, stack))
		assert.Equal(t, uint64(3), stack[0])
	}
	cancel()
	time.Sleep(10 * time.Millisecond) // let the AfterFunc run
	assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 1, 2, 0)[0])
	// A call with the ended context is stopped before it starts.
	assert.ErrorIs(t, in.Call(ctx, abi.ExportEval, []uint64{1, 2, 0}), backend.ErrStopped)
}

// Wasmtime installs its own SIGSEGV handler; Go's nil dereferences must
// still become panics, in a host function called from the guest and in plain
// Go code.
func TestNilDereferenceStillPanics(t *testing.T) {
	m := compileFake(t)
	var rec recorder
	var p *struct{ x int }
	rec.answer = func(ctx context.Context, mem backend.Memory, imp abi.Import, stack []uint64) {
		stack[0] = uint64(p.x)
	}
	in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
	err := in.Call(context.Background(), abi.ExportDispatch, make([]uint64, 4))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nil pointer dereference")
	t.Log(err)

	func() {
		defer func() { assert.NotNil(t, recover()) }()
		_ = p.x
	}()
}

// A stop while a host function blocks ends the call when it returns.
func TestStopDuringHostFunction(t *testing.T) {
	for _, bs := range []bool{true, false} {
		m := compileFake(t, WithBackstop(bs))
		var rec recorder
		entered := make(chan struct{})
		release := make(chan struct{})
		rec.answer = func(ctx context.Context, mem backend.Memory, imp abi.Import, stack []uint64) {
			if imp == abi.ImportRPCSync {
				close(entered)
				<-release
			}
		}
		in := instantiate(t, m, backend.InstanceConfig{Imports: rec.imports()})
		done := make(chan error, 1)
		go func() { done <- in.Call(context.Background(), abi.ExportDispatch, make([]uint64, 4)) }()
		<-entered
		in.Stop()
		close(release)
		assert.ErrorIs(t, <-done, backend.ErrStopped)
		assert.Empty(t, rec.got(abi.ImportRPCSyncTake), "no import after the stop")
	}
}

// Instances beyond the pool's slots spill over to an on-demand engine; both
// kinds work side by side, Stop stops the right one, and closing frees their
// slots for new pooled instances.
func TestInstancePoolSpill(t *testing.T) {
	ctx := context.Background()
	m := compileFake(t, WithInstancePool(2))
	defer m.Close(ctx)
	c := m.(*module).c
	require.Equal(t, 2, c.main.slots, "the pool is on")
	var ins []*instance
	for range 4 {
		in, err := m.Instantiate(ctx, backend.InstanceConfig{MaxMemoryPages: 4})
		require.NoError(t, err)
		ins = append(ins, in.(*instance))
	}
	assert.True(t, ins[0].pooled)
	assert.True(t, ins[1].pooled)
	assert.False(t, ins[2].pooled)
	assert.False(t, ins[3].pooled)
	assert.Same(t, c.main, ins[1].fl)
	assert.NotSame(t, c.main, ins[2].fl)
	assert.Same(t, ins[2].fl, ins[3].fl, "one spill engine")
	assert.Equal(t, int64(2), c.pooled.Load())
	for _, in := range ins {
		assert.Equal(t, uint64(3), call(t, in, abi.ExportEval, 1, 2, 0)[0])
		assert.Equal(t, uint32(2*abi.PageSize), in.Memory().Size())
		assert.Equal(t, uint64(2), call(t, in, abi.ExportAlloc, 2)[0], "grows to the cap")
		assert.Equal(t, uint64(1<<32-1), call(t, in, abi.ExportAlloc, 1)[0], "not beyond")
	}
	ins[2].Stop()
	assert.ErrorIs(t, ins[2].Call(ctx, abi.ExportEval, []uint64{1, 2, 0}), backend.ErrDead)
	assert.Equal(t, uint64(3), call(t, ins[3], abi.ExportEval, 1, 2, 0)[0])
	require.NoError(t, ins[0].Close(ctx))
	assert.Equal(t, int64(1), c.pooled.Load())
	in, err := m.Instantiate(ctx, backend.InstanceConfig{})
	require.NoError(t, err)
	assert.True(t, in.(*instance).pooled, "a freed slot is reused")
	require.NoError(t, in.Close(ctx))
	for _, in := range ins[1:] {
		require.NoError(t, in.Close(ctx))
	}
	assert.Zero(t, c.pooled.Load())

	// Without the pool (the default), everything is on demand.
	m0 := compileFake(t)
	defer m0.Close(ctx)
	assert.Zero(t, m0.(*module).c.main.slots)
	in, err = m0.Instantiate(ctx, backend.InstanceConfig{})
	require.NoError(t, err)
	assert.False(t, in.(*instance).pooled)
	require.NoError(t, in.Close(ctx))
}
