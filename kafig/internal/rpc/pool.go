// Package rpc runs the async RPC handlers (host.rpc) of one async operation
// of a kafig instance.
//
// A Pool is created for an async eval or dispatch when its first host.rpc
// arrives and closed when the operation ends. Handlers run in at most Limit
// goroutines; calls beyond that wait in a FIFO backlog, so that submitting
// never blocks the guest import that submits. Replies are collected in
// arrival order and taken by the operation's goroutine with Next. Close
// cancels the context every handler got and waits for them to return, for
// a bounded time: a handler that ignores its context cannot hold the
// operation (and the caller's deadline) hostage.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Reply is the outcome of one call: a JSON document, or an error message
// when IsError is set.
type Reply struct {
	ID      uint32
	Data    []byte
	IsError bool
}

// Job runs one handler. It returns the reply data and whether it is an error
// message.
type Job func(ctx context.Context) (data []byte, isError bool)

// ErrIdle is returned by Next when no call is outstanding: waiting would
// never end.
var ErrIdle = errors.New("no RPC outstanding")

// ErrInterrupted is returned by Next when its stop channel closed.
var ErrInterrupted = errors.New("wait interrupted")

type queued struct {
	id   uint32
	size int
	job  Job
}

// Pool runs the handlers of one operation. Its methods are safe for
// concurrent use, but Next is meant for one goroutine.
type Pool struct {
	ctx    context.Context
	cancel context.CancelFunc
	limit  int
	g      errgroup.Group

	mu          sync.Mutex
	workers     int
	backlog     []queued
	head        int
	replies     []Reply
	outstanding int
	held        int // the sizes of the calls whose handlers have not returned
	closed      bool
	notify      chan struct{}
	idle        chan struct{} // closed when closed is set and no worker runs
}

// New returns a Pool whose handlers get a context derived from parent; limit
// is the largest number of handlers running at once (at least 1).
func New(parent context.Context, limit int) *Pool {
	limit = max(limit, 1)
	ctx, cancel := context.WithCancel(parent)
	p := &Pool{ctx: ctx, cancel: cancel, limit: limit, notify: make(chan struct{}, 1), idle: make(chan struct{})}
	p.g.SetLimit(limit) // a safety net: workers never exceeds limit
	return p
}

// Outstanding is the number of calls accepted whose reply Next has not
// returned yet.
func (p *Pool) Outstanding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outstanding
}

// Held is the total size (see Go) of the calls accepted whose handlers have
// not returned: what the pool keeps alive for them.
func (p *Pool) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Go accepts a call and runs job in a worker goroutine, now or when one is
// free. It never blocks. size is what the job holds until it returns (its
// params), counted in Held.
func (p *Pool) Go(id uint32, size int, job Job) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.outstanding++
	p.held += size
	q := queued{id, size, job}
	if p.workers >= p.limit {
		p.backlog = append(p.backlog, q)
		p.mu.Unlock()
		return
	}
	p.workers++
	p.mu.Unlock()
	p.g.Go(func() error {
		p.work(q)
		return nil
	})
}

// Done accepts a call that is already answered (no goroutine).
func (p *Pool) Done(r Reply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.outstanding++
	p.replies = append(p.replies, r)
	p.wake()
}

func (p *Pool) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

func (p *Pool) work(q queued) {
	for {
		data, isErr := run(p.ctx, q.job)
		p.mu.Lock()
		p.held -= q.size
		if !p.closed {
			p.replies = append(p.replies, Reply{ID: q.id, Data: data, IsError: isErr})
			p.wake()
		}
		// A done context drops the backlog: its calls would only see ctx.Err.
		if p.closed || p.head == len(p.backlog) || p.ctx.Err() != nil {
			p.workers--
			for _, dropped := range p.backlog[p.head:] {
				p.held -= dropped.size
			}
			clear(p.backlog)
			p.backlog, p.head = p.backlog[:0], 0
			if p.closed && p.workers == 0 {
				close(p.idle)
			}
			p.mu.Unlock()
			return
		}
		q = p.backlog[p.head]
		p.backlog[p.head] = queued{}
		p.head++
		p.mu.Unlock()
	}
}

func run(ctx context.Context, job Job) (data []byte, isErr bool) {
	defer func() {
		if r := recover(); r != nil {
			data, isErr = fmt.Appendf(nil, "kafig: RPC handler panicked: %v", r), true
		}
	}()
	return job(ctx)
}

// Next returns the next reply, waiting for one when none is ready. It
// returns ErrIdle when nothing is outstanding, ctx.Err() when ctx ends and
// ErrInterrupted when stop closes.
func (p *Pool) Next(ctx context.Context, stop <-chan struct{}) (Reply, error) {
	for {
		p.mu.Lock()
		if len(p.replies) > 0 {
			r := p.replies[0]
			p.replies[0] = Reply{}
			p.replies = p.replies[1:]
			p.outstanding--
			p.mu.Unlock()
			return r, nil
		}
		idle := p.outstanding == 0
		p.mu.Unlock()
		if idle {
			return Reply{}, ErrIdle
		}
		select {
		case <-p.notify:
		case <-ctx.Done():
			return Reply{}, ctx.Err()
		case <-stop:
			return Reply{}, ErrInterrupted
		}
	}
}

// Close drops the backlog and the replies not taken, cancels the handlers'
// context and waits up to grace for every running handler to return. It
// reports how many were still running then: those are abandoned (their
// goroutines end when their handlers return; their replies are dropped).
// It is safe to call more than once.
func (p *Pool) Close(grace time.Duration) (abandoned int) {
	p.mu.Lock()
	first := !p.closed
	p.closed = true
	for _, dropped := range p.backlog[p.head:] {
		p.held -= dropped.size
	}
	clear(p.backlog)
	p.backlog, p.head = nil, 0
	p.replies = nil
	p.outstanding = 0
	if first && p.workers == 0 {
		close(p.idle)
	}
	p.mu.Unlock()
	p.cancel()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.idle:
		return 0
	case <-t.C:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.workers
	}
}
