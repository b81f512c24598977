package kafig

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConcurrentEvalsSerialize(t *testing.T) {
	var inside, peak atomic.Int32
	router := NewRPCRouter().WithSync("probe", func(context.Context, json.RawMessage) (json.RawMessage, error) {
		n := inside.Add(1)
		if n > peak.Load() {
			peak.Store(n)
		}
		time.Sleep(time.Millisecond)
		inside.Add(-1)
		return nil, nil
	})
	in, _ := newInst(t, WithRouter(router))
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := in.Eval(context.Background(), `rpcsync probe 1`)
			assert.NoError(t, err)
			_, err = in.GetExecutionStats(context.Background())
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(1), peak.Load())
}

func TestWaitingEvalRespectsItsContext(t *testing.T) {
	in, _ := newInst(t)
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		close(started)
		_, _ = in.Eval(context.Background(), `sleep 300`)
	}()
	<-started
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := in.Eval(ctx, `ok 1`)
	assert.Less(t, time.Since(start), 200*time.Millisecond)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, &RuntimeError{Code: CodeCPULimitExceeded})
	<-done
}

func TestRuntimeConcurrentUse(t *testing.T) {
	rt, _ := newRuntime(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := rt.Instance(ctx)
			if !assert.NoError(t, err) {
				return
			}
			bc, err := rt.Compile(ctx, `ok 5`)
			if !assert.NoError(t, err) {
				return
			}
			res, err := in.EvalCompiled(ctx, bc)
			assert.NoError(t, err)
			assert.Equal(t, "5", string(res))
			assert.NoError(t, in.Close(ctx))
		}()
	}
	wg.Wait()
}

func TestCloseSemantics(t *testing.T) {
	ctx := context.Background()
	rt, fb := newRuntime(t)
	in, err := rt.Instance(ctx)
	require.NoError(t, err)
	fi := fb.last()

	done, cancel := context.WithCancel(ctx)
	cancel()
	require.NoError(t, in.Close(done), "a done context still closes")
	assert.True(t, fi.closed.Load())
	require.NoError(t, in.Close(ctx), "idempotent")
	_, err = in.Eval(ctx, "ok 1")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = in.EvalCompiled(ctx, nil)
	assert.ErrorIs(t, err, ErrBadBytecode, "checked before anything else")
	_, err = in.GetExecutionStats(ctx)
	assert.ErrorIs(t, err, ErrClosed)

	// Runtime.Close closes its instances and is idempotent.
	in2, err := rt.Instance(ctx)
	require.NoError(t, err)
	_, err = rt.Compile(ctx, "ok 1")
	require.NoError(t, err)
	require.NoError(t, rt.Close(done))
	require.NoError(t, rt.Close(ctx))
	assert.Empty(t, fb.live())
	assert.Zero(t, fb.modules.Load())
	_, err = in2.Eval(ctx, "ok 1")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = rt.Instance(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = rt.Compile(ctx, "ok 1")
	assert.ErrorIs(t, err, ErrClosed)
}

// A Close while an instance is being instantiated leaves the module open
// under it; the instantiation then reports ErrClosed, frees its guest, and
// the module is closed after it.
func TestCloseDuringInstantiation(t *testing.T) {
	ctx := context.Background()
	fb := newFake()
	rt, err := New(ctx, fb, withWASM(fakeWASM))
	require.NoError(t, err)
	fb.instantiating = make(chan chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := rt.Instance(ctx)
		errc <- err
	}()
	release := <-fb.instantiating
	require.NoError(t, rt.Close(ctx), "Close does not wait for the instantiation")
	assert.Equal(t, int32(1), fb.modules.Load(), "the module stays open under it")
	close(release)
	assert.ErrorIs(t, <-errc, ErrClosed)
	assert.Empty(t, fb.live(), "the instantiated guest is freed")
	assert.Zero(t, fb.modules.Load(), "and the module after it")
}

func TestCloseEndsRunningEval(t *testing.T) {
	for _, src := range []string{"spin", "loop"} {
		t.Run(src, func(t *testing.T) {
			in, _ := newInst(t)
			errc := make(chan error, 1)
			go func() {
				_, err := in.Eval(context.Background(), src)
				errc <- err
			}()
			time.Sleep(30 * time.Millisecond)
			require.NoError(t, in.Close(context.Background()))
			assert.ErrorIs(t, <-errc, ErrClosed)
		})
	}
}

func TestCloseEndsAsyncWait(t *testing.T) {
	router := NewRPCRouter().WithAsync("hang", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	in, _ := newInst(t, WithRouter(router))
	errc := make(chan error, 1)
	go func() {
		_, err := in.Eval(context.Background(), `rpc hang 1`, WithAsync())
		errc <- err
	}()
	time.Sleep(30 * time.Millisecond)
	require.NoError(t, in.Close(context.Background()))
	assert.ErrorIs(t, <-errc, ErrClosed)
}

func TestCloseWhileWaitingForInstance(t *testing.T) {
	in, _ := newInst(t)
	first := make(chan error, 1)
	second := make(chan error, 1)
	go func() {
		_, err := in.Eval(context.Background(), `sleep 5000`)
		first <- err
	}()
	time.Sleep(20 * time.Millisecond)
	go func() {
		_, err := in.Eval(context.Background(), `ok 1`)
		second <- err
	}()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, in.Close(context.Background()))
	assert.ErrorIs(t, <-first, ErrClosed)
	assert.ErrorIs(t, <-second, ErrClosed)
}

func TestBackstopInterruptCallback(t *testing.T) {
	const limit = 100 * time.Millisecond
	var calls atomic.Int32
	in, fi := newInst(t, WithInterruptCallback(func(_, cpuUs uint64) bool {
		calls.Add(1)
		return cpuUs > uint64(limit/time.Microsecond)
	}))
	start := time.Now()
	_, err := in.Eval(context.Background(), "spin")
	took := time.Since(start)
	var re *RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, CodeCPULimitExceeded, re.Code)
	assert.ErrorIs(t, err, ErrInstanceDead)
	assert.Less(t, took, 2*limit+time.Second)
	assert.GreaterOrEqual(t, took, limit)
	assert.Equal(t, int32(1), fi.b.stops.Load())
	assert.NotZero(t, calls.Load(), "the monitor asked the callback")

	_, err = in.Eval(context.Background(), "ok 1")
	assert.ErrorIs(t, err, ErrInstanceDead)
	require.NoError(t, in.Close(context.Background()))
}

// The monitor asks the interrupt callback of a guest that stopped polling;
// a callback that closes its own instance there must not deadlock it.
func TestBackstopCallbackClosesInstance(t *testing.T) {
	var self atomic.Pointer[Instance]
	closed := make(chan error, 1)
	in, _ := newInst(t, WithInterruptCallback(func(_, cpuUs uint64) bool {
		if in := self.Load(); in != nil && cpuUs > 50_000 && self.CompareAndSwap(in, nil) {
			closed <- in.Close(context.Background())
		}
		return false
	}))
	self.Store(in)
	errc := make(chan error, 1)
	go func() {
		_, err := in.Eval(context.Background(), "spin")
		errc <- err
	}()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Eval did not end after its callback closed the instance")
	}
	require.NoError(t, <-closed)
}

// TestBackstopCallbackClosesRuntime: a callback the monitor asks (the guest
// does not poll) that closes the whole runtime. Runtime.Close waits for the
// monitor, so the monitor must not be the goroutine running the callback.
func TestBackstopCallbackClosesRuntime(t *testing.T) {
	rt, _ := newRuntime(t)
	var once atomic.Bool
	closed := make(chan error, 1)
	in, err := rt.Instance(context.Background(), WithInterruptCallback(func(_, cpuUs uint64) bool {
		if cpuUs > 50_000 && once.CompareAndSwap(false, true) {
			closed <- rt.Close(context.Background())
		}
		return false
	}))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := in.Eval(context.Background(), "spin")
		errc <- err
	}()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Runtime.Close from a callback the monitor asked did not return")
	}
	assert.ErrorIs(t, <-errc, ErrClosed)
}

// TestBackstopNotHeldBySlowCallback: one instance's callback that blocks
// leaves the monitor free to stop another instance.
func TestBackstopNotHeldBySlowCallback(t *testing.T) {
	rt, _ := newRuntime(t)
	release := make(chan struct{})
	defer close(release)
	slow, err := rt.Instance(context.Background(), WithInterruptCallback(func(uint64, uint64) bool {
		<-release
		return false
	}))
	require.NoError(t, err)
	go func() { _, _ = slow.Eval(context.Background(), "spin") }()
	other, err := rt.Instance(context.Background())
	require.NoError(t, err)
	time.Sleep(2 * pollStale) // the monitor has asked the slow callback
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := other.Eval(ctx, "spin")
		errc <- err
	}()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("the monitor did not stop the other instance")
	}
}

func TestBackstopContext(t *testing.T) {
	in, fi := newInst(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := in.Eval(ctx, "spin")
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, ErrInstanceDead)
	assert.ErrorIs(t, err, &RuntimeError{Code: CodeCPULimitExceeded})
	assert.Equal(t, int32(1), fi.b.stops.Load())
}

func TestBackstopLeavesPollingAndSlowGuestsAlone(t *testing.T) {
	// A guest that polls is stopped by its poll, not from outside; one that
	// does not poll but whose callback says go on is left running.
	in, fi := newInst(t, WithInterruptCallback(func(ops, _ uint64) bool { return ops >= 2000*10000 }))
	_, err := in.Eval(context.Background(), "sleep 400")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = in.Eval(ctx, "loop")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrInstanceDead)
	assert.Zero(t, fi.b.stops.Load())
}

func TestBackstopSkipsRPCHandlers(t *testing.T) {
	router := NewRPCRouter().WithSync("slow", func(context.Context, json.RawMessage) (json.RawMessage, error) {
		time.Sleep(400 * time.Millisecond)
		return nil, nil
	})
	in, fi := newInst(t, WithRouter(router), WithInterruptCallback(func(_, cpu uint64) bool { return cpu > 50_000 }))
	_, err := in.Eval(context.Background(), "rpcsync slow 1")
	require.NoError(t, err)
	assert.Zero(t, fi.b.stops.Load())
}

func TestMonitorStopsWithRuntime(t *testing.T) {
	// goleak in TestMain checks the monitor goroutine ends; here New fails
	// after starting it.
	fb := newFake()
	_, err := New(context.Background(), fb, withWASM(fakeWASM), WithPrelude("throw Error x"))
	require.Error(t, err)
}
