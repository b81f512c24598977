package rpc

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRepliesInArrivalOrder(t *testing.T) {
	p := New(context.Background(), 4)
	defer p.Close(time.Second)
	p.Done(Reply{ID: 1, Data: []byte("a")})
	release := make(chan struct{})
	p.Go(2, 0, func(context.Context) ([]byte, bool) { <-release; return []byte("b"), false })
	p.Go(3, 0, func(context.Context) ([]byte, bool) { return []byte("c"), true })
	assert.Equal(t, 3, p.Outstanding())

	r, err := p.Next(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, uint32(1), r.ID)
	r, err = p.Next(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, Reply{ID: 3, Data: []byte("c"), IsError: true}, r)
	close(release)
	r, err = p.Next(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, uint32(2), r.ID)
	_, err = p.Next(context.Background(), nil)
	assert.ErrorIs(t, err, ErrIdle)
}

func TestLimitAndBacklog(t *testing.T) {
	p := New(context.Background(), 2)
	defer p.Close(time.Second)
	var running, peak atomic.Int32
	for i := 0; i < 50; i++ {
		p.Go(uint32(i), 0, func(context.Context) ([]byte, bool) {
			n := running.Add(1)
			for {
				o := peak.Load()
				if n <= o || peak.CompareAndSwap(o, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			running.Add(-1)
			return nil, false
		})
	}
	seen := map[uint32]bool{}
	for i := 0; i < 50; i++ {
		r, err := p.Next(context.Background(), nil)
		require.NoError(t, err)
		seen[r.ID] = true
	}
	assert.Len(t, seen, 50)
	assert.LessOrEqual(t, peak.Load(), int32(2))
}

func TestPanicBecomesError(t *testing.T) {
	p := New(context.Background(), 1)
	defer p.Close(time.Second)
	p.Go(7, 0, func(context.Context) ([]byte, bool) { panic("boom") })
	r, err := p.Next(context.Background(), nil)
	require.NoError(t, err)
	assert.True(t, r.IsError)
	assert.Contains(t, string(r.Data), "boom")
}

func TestNextStops(t *testing.T) {
	p := New(context.Background(), 1)
	p.Go(1, 0, func(ctx context.Context) ([]byte, bool) { <-ctx.Done(); return nil, true })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := p.Next(ctx, nil)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	stop := make(chan struct{})
	close(stop)
	_, err = p.Next(context.Background(), stop)
	assert.ErrorIs(t, err, ErrInterrupted)
	assert.Zero(t, p.Close(time.Second)) // cancels and waits for the handler
	assert.Zero(t, p.Close(time.Second))
	p.Go(2, 0, func(context.Context) ([]byte, bool) { t.Error("ran after Close"); return nil, false })
	p.Done(Reply{ID: 3})
	assert.Zero(t, p.Outstanding())
}

func TestCloseCancelsHandlersAndDropsBacklog(t *testing.T) {
	p := New(context.Background(), 1)
	var ran atomic.Int32
	for i := 0; i < 10; i++ {
		p.Go(uint32(i), 0, func(ctx context.Context) ([]byte, bool) {
			ran.Add(1)
			<-ctx.Done()
			return nil, true
		})
	}
	time.Sleep(5 * time.Millisecond)
	assert.Zero(t, p.Close(time.Second))
	assert.Equal(t, int32(1), ran.Load())
}

// A handler that ignores its context is abandoned after the grace period:
// Close returns, reports it, and its late reply goes nowhere.
func TestCloseAbandonsHandlerThatIgnoresContext(t *testing.T) {
	p := New(context.Background(), 2)
	release := make(chan struct{})
	returned := make(chan struct{})
	p.Go(1, 0, func(context.Context) ([]byte, bool) {
		defer close(returned)
		<-release
		return []byte("late"), false
	})
	p.Go(2, 0, func(ctx context.Context) ([]byte, bool) { <-ctx.Done(); return nil, true })
	time.Sleep(5 * time.Millisecond)
	start := time.Now()
	assert.Equal(t, 1, p.Close(20*time.Millisecond))
	assert.Less(t, time.Since(start), time.Second)
	close(release)
	<-returned
	assert.Zero(t, p.Outstanding())
	_, err := p.Next(context.Background(), nil)
	assert.ErrorIs(t, err, ErrIdle)
	assert.Zero(t, p.Close(time.Second), "the abandoned worker has ended since")
}

func TestHeldCountsCallsUntilTheirHandlersReturn(t *testing.T) {
	p := New(context.Background(), 1)
	release := make(chan struct{})
	p.Go(1, 100, func(context.Context) ([]byte, bool) { <-release; return nil, false })
	p.Go(2, 20, func(context.Context) ([]byte, bool) { return nil, false }) // queued
	p.Go(3, 3, func(context.Context) ([]byte, bool) { return nil, false })  // queued
	assert.Equal(t, 123, p.Held())
	close(release)
	for range 3 {
		_, err := p.Next(context.Background(), nil)
		require.NoError(t, err)
	}
	assert.Equal(t, 0, p.Held(), "a returned handler holds nothing")

	// Close drops the backlog at once; a running handler holds its part
	// until it returns.
	release = make(chan struct{})
	p.Go(4, 7, func(context.Context) ([]byte, bool) { <-release; return nil, false })
	p.Go(5, 50, func(context.Context) ([]byte, bool) { return nil, false })
	go func() { time.Sleep(20 * time.Millisecond); close(release) }()
	assert.Equal(t, 0, p.Close(time.Second))
	assert.Equal(t, 0, p.Held())
}
