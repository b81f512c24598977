package kafig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func echo(_ context.Context, p json.RawMessage) (json.RawMessage, error) { return p, nil }

func testRouter() *RPCRouter {
	return NewRPCRouter().
		WithSync("echo", echo).
		WithAsync("aecho", echo).
		WithSync("fail", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return nil, errors.New("not found")
		}).
		WithSync("emptyerr", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return nil, errors.New("")
		}).
		WithSync("panic", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			panic("handler bug")
		}).
		WithAsync("apanic", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			panic("async handler bug")
		}).
		WithSync("badjson", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`{"a":`), nil
		}).
		WithSync("nil", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return nil, nil
		}).
		WithSync("big", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`"` + strings.Repeat("b", 100_000) + `"`), nil
		}).
		WithSync("edge", func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`"` + strings.Repeat("e", 65536-2) + `"`), nil
		})
}

func TestRPCSync(t *testing.T) {
	ctx := context.Background()
	in, _ := newInst(t, WithRouter(testRouter()))
	for name, tc := range map[string]struct {
		src, want, jsErr string
	}{
		"echo":          {src: `rpcsync echo {"a":1}`, want: `{"ok":{"a":1}}`},
		"nil is null":   {src: `rpcsync nil 1`, want: `{"ok":null}`},
		"large reply":   {src: `rpcsync big 1`, want: `{"ok":"` + strings.Repeat("b", 100_000) + `"}`},
		"64 KiB reply":  {src: `rpcsync edge 1`, want: `{"ok":"` + strings.Repeat("e", 65536-2) + `"}`},
		"error":         {src: `rpcsync fail 1`, jsErr: "not found"},
		"empty error":   {src: `rpcsync emptyerr 1`, jsErr: "kafig: RPC handler failed"},
		"panic":         {src: `rpcsync panic 1`, jsErr: "kafig: RPC handler panicked: handler bug"},
		"invalid JSON":  {src: `rpcsync badjson 1`, jsErr: "kafig: RPC handler returned invalid JSON"},
		"async method":  {src: `rpcsync aecho 1`, jsErr: "kafig: method aecho is async; use host.rpc"},
		"unknown":       {src: `rpcsync nope 1`, jsErr: "kafig: unknown RPC method nope"},
		"params not JS": {src: `rpcsync echo {`, jsErr: "kafig: RPC params are not valid JSON"},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := in.Eval(ctx, tc.src)
			if tc.jsErr != "" {
				var je *JsError
				require.ErrorAs(t, err, &je)
				assert.Equal(t, tc.jsErr, je.Message)
				return
			}
			require.NoError(t, err)
			assert.JSONEq(t, tc.want, string(res))
		})
	}
}

func TestRPCNoRouter(t *testing.T) {
	in, _ := newInst(t)
	_, err := in.Eval(context.Background(), `rpcsync echo 1`)
	var je *JsError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, "kafig: unknown RPC method echo", je.Message)
	res, err := in.Eval(context.Background(), `rpc echo 1`, WithAsync())
	require.NoError(t, err)
	assert.JSONEq(t, `[{"err":"kafig: unknown RPC method echo"}]`, string(res))
}

func TestRPCFallback(t *testing.T) {
	var names []string
	router := NewRPCRouter().WithSync("known", echo).WithFallback(func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		name, ok := MethodName(ctx)
		if !ok {
			return nil, errors.New("no name")
		}
		names = append(names, name)
		return json.Marshal(name)
	})
	in, _ := newInst(t, WithRouter(router))
	res, err := in.Eval(context.Background(), `rpcsync whatever 1`)
	require.NoError(t, err)
	assert.JSONEq(t, `{"ok":"whatever"}`, string(res))
	res, err = in.Eval(context.Background(), `rpc other 1 known 2`, WithAsync())
	require.NoError(t, err)
	assert.JSONEq(t, `[{"ok":"other"},{"ok":2}]`, string(res))
	assert.Equal(t, []string{"whatever", "other"}, names)
	_, ok := MethodName(context.Background())
	assert.False(t, ok)
}

func TestRPCAsync(t *testing.T) {
	ctx := context.Background()
	in, fi := newInst(t, WithRouter(testRouter()))
	res, err := in.Eval(ctx, `rpc aecho {"x":1} echo 2 fail 3 apanic 4 nope 5`, WithAsync())
	require.NoError(t, err)
	assert.JSONEq(t, `[{"ok":{"x":1}},{"ok":2},{"err":"not found"},{"err":"kafig: RPC handler panicked: async handler bug"},{"err":"kafig: unknown RPC method nope"}]`, string(res))
	assert.Zero(t, fi.aborts.Load())

	// Sync mode: host.rpc is refused at once.
	res, err = in.Eval(ctx, `rpc aecho 1`)
	require.NoError(t, err)
	assert.JSONEq(t, `[{"refused":true}]`, string(res))

	// Large async replies go through a guest allocation.
	res, err = in.Eval(ctx, `rpc big 1`, WithAsync())
	require.NoError(t, err)
	assert.Len(t, res, 100_000+2+len(`[{"ok":}]`))
}

func TestRPCAsyncRunsInParallel(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	router := NewRPCRouter().WithAsync("wait", func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		defer running.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return p, nil
	})
	in, _ := newInst(t, WithRouter(router), WithMaxConcurrentRPCs(3))
	src := "rpc"
	for i := 0; i < 10; i++ {
		src += fmt.Sprintf(" wait %d", i)
	}
	go func() {
		require.Eventually(t, func() bool { return running.Load() == 3 }, 5*time.Second, time.Millisecond)
		time.Sleep(20 * time.Millisecond)
		close(release)
	}()
	res, err := in.Eval(context.Background(), src, WithAsync())
	require.NoError(t, err)
	var out []map[string]int
	require.NoError(t, json.Unmarshal(res, &out))
	require.Len(t, out, 10)
	for i, o := range out {
		assert.Equal(t, i, o["ok"])
	}
	assert.Equal(t, int32(3), peak.Load(), "bounded by WithMaxConcurrentRPCs")
}

func TestRPCMaxPending(t *testing.T) {
	in, _ := newInst(t, WithRouter(testRouter()), WithMaxPendingRPCs(2))
	res, err := in.Eval(context.Background(), `rpc aecho 1 aecho 2 aecho 3 nope 4`, WithAsync())
	require.NoError(t, err)
	assert.JSONEq(t, `[{"ok":1},{"ok":2},{"refused":true},{"refused":true}]`, string(res))
}

func TestRPCFloodBounded(t *testing.T) {
	block := make(chan struct{})
	var started atomic.Int32
	router := NewRPCRouter().WithAsync("block", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		started.Add(1)
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, ctx.Err()
	})
	in, _ := newInst(t, WithRouter(router), WithMaxConcurrentRPCs(4))
	var b strings.Builder
	b.WriteString("rpc")
	for i := 0; i < 3000; i++ {
		b.WriteString(" block 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	before := runtime.NumGoroutine()
	done := make(chan error, 1)
	go func() {
		_, err := in.Eval(ctx, b.String(), WithAsync())
		done <- err
	}()
	require.Eventually(t, func() bool { return started.Load() == 4 }, 5*time.Second, time.Millisecond)
	assert.LessOrEqual(t, runtime.NumGoroutine(), before+1+4+2)
	err := <-done
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, int32(4), started.Load(), "queued calls never started")
	close(block)
}

func TestAsyncContextCancelAbortsAndWaits(t *testing.T) {
	var exited atomic.Int32
	router := NewRPCRouter().WithAsync("hang", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		defer exited.Add(1)
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // a slow cleanup: the eval must wait for it
		return nil, ctx.Err()
	})
	in, fi := newInst(t, WithRouter(router))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := in.Eval(ctx, `rpc hang 1 hang 2`, WithAsync())
	var re *RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, CodeCPULimitExceeded, re.Code)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrInstanceDead)
	assert.Equal(t, int32(2), exited.Load(), "handlers finished before Eval returned")
	assert.Equal(t, int32(1), fi.aborts.Load(), "the guest was told")

	res, err := in.Eval(context.Background(), `ok 1`)
	require.NoError(t, err)
	assert.Equal(t, "1", string(res))
}

func TestAsyncHandlerContextCancelledAfterEval(t *testing.T) {
	var seen atomic.Bool
	ctxs := make(chan context.Context, 1)
	router := NewRPCRouter().WithAsync("keep", func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		ctxs <- ctx
		return nil, nil
	})
	in, fi := newInst(t, WithRouter(router))
	// "unsettled" finishes ok while the call is still outstanding.
	_, err := in.Eval(context.Background(), `unsettled keep 1`, WithAsync())
	require.NoError(t, err)
	hctx := <-ctxs
	select {
	case <-hctx.Done():
		seen.Store(true)
	default:
	}
	assert.True(t, seen.Load(), "the handler's context ends with the eval")
	assert.Equal(t, int32(1), fi.aborts.Load(), "pending RPCs forgotten")
}

func TestAsyncNeverSettles(t *testing.T) {
	in, fi := newInst(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := in.Eval(ctx, `never`, WithAsync())
	var re *RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, CodeRuntimeError, re.Code)
	assert.NoError(t, ctx.Err(), "returned at once")
	assert.Equal(t, int32(1), fi.aborts.Load())
	_, err = in.Eval(ctx, `ok 1`)
	require.NoError(t, err)
}

func TestRouterNeverPanics(t *testing.T) {
	var r *RPCRouter
	assert.NotPanics(t, func() {
		r.WithSync("a", echo).WithAsync("b", echo).WithFallback(echo)
	})
	var zero RPCRouter
	assert.NotPanics(t, func() { zero.WithSync("a", echo) })
	h, _, _, ok := zero.lookup("a")
	assert.True(t, ok)
	assert.NotNil(t, h)
	r2 := NewRPCRouter().WithFallback(echo).WithFallback(echo)
	assert.Contains(t, r2.problem(), "twice")
}
