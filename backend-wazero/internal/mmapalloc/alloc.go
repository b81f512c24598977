// Package mmapalloc implements wazero's experimental.MemoryAllocator for one
// guest instance: linear memory that refuses to grow past a per-instance cap.
//
// On unix systems the memory lives outside the Go heap: the whole range the
// instance may ever use is reserved with mmap(PROT_NONE) and committed with
// mprotect as the guest grows it, so an idle instance costs only the pages it
// touched and nothing for the garbage collector to scan. Elsewhere it is a
// Go slice that grows by copying, with the same cap.
//
// Lifetime: wazero calls Free when its module instance closes, which can
// happen on another goroutine (a closed runtime) or while the owner still
// reads memory (a stopped instance). The range is therefore released only
// once both wazero (Free) and the owner (Release) are done with it.
package mmapalloc

import (
	"errors"
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// PageSize is the wasm page size.
const PageSize = 65536

// ErrReserve is recorded when the address space for a memory could not be
// reserved.
var ErrReserve = errors.New("kafig: cannot reserve linear memory")

// Allocator creates the linear memory of one module instance. Pass it to
// wazero with experimental.WithMemoryAllocator on the instantiate context.
// It is not safe for concurrent use: use one per instantiation.
type Allocator struct {
	limit uint64 // bytes; 0: the module's own maximum
	pool  *Pool
	mem   *Memory
}

// New returns an allocator whose memory never grows past limitPages pages.
// 0 means no cap beyond the module's declared maximum.
func New(limitPages uint32) *Allocator {
	return &Allocator{limit: uint64(limitPages) * PageSize}
}

// NewPooled is New with memory taken from pool when it has a range of the
// right size, and given back to it when released. pool may be nil.
func NewPooled(limitPages uint32, pool *Pool) *Allocator {
	return &Allocator{limit: uint64(limitPages) * PageSize, pool: pool}
}

// Allocate implements experimental.MemoryAllocator. The first argument is
// wazero's capacity hint (unused: memory is committed as it grows) and
// maxBytes the largest size the module may ever request.
func (a *Allocator) Allocate(_, maxBytes uint64) experimental.LinearMemory {
	limit := maxBytes
	if a.limit != 0 && a.limit < limit {
		limit = a.limit
	}
	m := &Memory{limit: limit, pool: a.pool}
	if buf := a.pool.get(limit); buf != nil {
		m.buf, m.size = buf, a.pool.keep
	} else {
		m.init()
	}
	a.mem = m
	return m
}

// Memory returns the last memory Allocate created, or nil.
func (a *Allocator) Memory() *Memory { return a.mem }

// Memory is one linear memory. It implements experimental.LinearMemory.
type Memory struct {
	mu       sync.Mutex
	limit    uint64 // largest size Reallocate grants
	pool     *Pool  // where the range goes when released, or nil
	buf      []byte // mmap: the reserved range; heap: the backing slice
	size     uint64 // bytes in use (committed, for mmap)
	err      error  // why the memory is unusable, if it is
	freed    bool   // wazero called Free
	released bool   // the owner called Release
	gone     bool   // the range is unmapped
}

// Reallocate implements experimental.LinearMemory: it returns the memory
// grown to size bytes, or nil when size is above the cap (memory.grow then
// returns -1 in the guest).
func (m *Memory) Reallocate(size uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gone || m.err != nil || size > m.limit {
		return nil
	}
	b, err := m.grow(size)
	if err != nil {
		return nil
	}
	return b
}

// Free implements experimental.LinearMemory. wazero calls it when the module
// instance closes.
func (m *Memory) Free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.freed = true
	m.maybeRelease()
}

// Release is the owner's side of Free: the owner will not touch the memory
// again. The range is returned to the system once wazero has freed it too.
func (m *Memory) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.released = true
	m.maybeRelease()
}

// Err reports why the memory could not be set up (reservation failure), or nil.
func (m *Memory) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Limit is the largest size in bytes the memory may grow to.
func (m *Memory) Limit() uint64 { return m.limit }

// Size is the current size in bytes.
func (m *Memory) Size() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}

func (m *Memory) maybeRelease() {
	if m.freed && m.released && !m.gone {
		m.gone = true
		if !m.pool.put(m.buf, m.size) {
			m.unmap()
		}
		m.buf = nil
		m.size = 0
	}
}
