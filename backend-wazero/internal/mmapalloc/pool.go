package mmapalloc

import "sync"

// Pool keeps the address ranges of released memories for later instances of
// the same module, so that a new instance need not map fresh memory and
// fault in every page that its data segments and first calls touch (on
// virtual machines with shadow paging a first touch costs 10 to 40 µs a
// page), nor unmap a multi-GiB reservation when it closes (TLB shootdowns).
//
// A pooled range keeps the first keep bytes committed (the module's initial
// memory: what the next instance needs at once) and returns everything the
// previous instance grew beyond that to the system when it is released. The
// pages it keeps are zeroed before the range is handed out again, so a new
// instance starts from zero-filled memory exactly as with a fresh mapping:
// no data crosses from one instance to the next.
//
// Only systems where the pages kept can be found (Linux: mincore) pool;
// elsewhere Put unmaps and Get finds nothing.
type Pool struct {
	keep uint64 // bytes kept committed in a pooled range
	max  int    // ranges kept at most
	// skip[i] is true for the pages (of the system's page size) of the
	// kept region that every instantiation overwrites whole before it runs
	// any code: get need not zero them.
	skip []bool

	mu     sync.Mutex
	free   map[uint64][][]byte // by reservation length (Memory.limit)
	n      int
	closed bool
}

// NewPool returns a pool that keeps at most max ranges, each with its first
// keep bytes committed. max <= 0 keeps none.
func NewPool(keep uint64, max int) *Pool {
	return &Pool{keep: keep, max: max, free: map[uint64][][]byte{}}
}

// SkipOverwritten tells the pool that every instantiation writes the byte
// ranges [starts[k], ends[k]) (the module's active data segments) before
// any code runs: pages lying entirely inside one need not be zeroed when a
// range is reused. Call it before the pool is used.
func (p *Pool) SkipOverwritten(starts, ends []uint64) {
	ps := uint64(pageSize())
	skip := make([]bool, p.keep/ps)
	for k := range starts {
		first := (starts[k] + ps - 1) / ps
		for pg := first; (pg+1)*ps <= ends[k] && pg < uint64(len(skip)); pg++ {
			skip[pg] = true
		}
	}
	p.skip = skip
}

// get returns a pooled range of limit bytes whose first p.keep bytes are
// committed and zero, or nil.
func (p *Pool) get(limit uint64) []byte {
	if p == nil {
		return nil
	}
	for {
		p.mu.Lock()
		l := p.free[limit]
		if len(l) == 0 {
			p.mu.Unlock()
			return nil
		}
		buf := l[len(l)-1]
		l[len(l)-1] = nil
		p.free[limit] = l[:len(l)-1]
		p.n--
		p.mu.Unlock()
		if zeroKept(buf[:p.keep], p.skip) {
			return buf
		}
		unmapRange(buf)
	}
}

// put takes back a released range of which size bytes are committed. It
// reports false when the caller must unmap it.
func (p *Pool) put(buf []byte, size uint64) bool {
	if p == nil || p.max <= 0 || !poolable || size < p.keep || uint64(len(buf)) < p.keep {
		return false
	}
	p.mu.Lock()
	full := p.closed || p.n >= p.max
	p.mu.Unlock()
	if full || !trim(buf, p.keep, size) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.n >= p.max {
		return false
	}
	p.free[uint64(len(buf))] = append(p.free[uint64(len(buf))], buf)
	p.n++
	return true
}

// Close unmaps every pooled range; ranges released later are unmapped too.
// It is safe to call more than once.
func (p *Pool) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	free := p.free
	p.free, p.n, p.closed = map[uint64][][]byte{}, 0, true
	p.mu.Unlock()
	for _, l := range free {
		for _, buf := range l {
			unmapRange(buf)
		}
	}
}

// Len is the number of pooled ranges.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
