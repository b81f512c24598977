//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package mmapalloc

import (
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// Mmap reports whether memories live outside the Go heap (reserved with mmap).
const Mmap = true

// init reserves the whole range the memory may grow to, inaccessible.
func (m *Memory) init() {
	if m.limit == 0 {
		m.buf = []byte{}
		return
	}
	if m.limit > math.MaxInt {
		m.err = fmt.Errorf("%w: %d bytes do not fit the address space; cap the instance's memory", ErrReserve, m.limit)
		return
	}
	b, err := unix.Mmap(-1, 0, int(m.limit), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON|mapNoReserve)
	if err != nil {
		m.err = fmt.Errorf("%w: mmap %d bytes: %v", ErrReserve, m.limit, err)
		return
	}
	m.buf = b
}

// grow commits the pages between the current size and size.
func (m *Memory) grow(size uint64) ([]byte, error) {
	if size > m.size {
		if err := unix.Mprotect(m.buf[m.size:size], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil, err
		}
		m.size = size
	}
	return m.buf[:size:size], nil
}

func (m *Memory) unmap() {
	if len(m.buf) != 0 {
		// The range came from unix.Mmap: Munmap fails only on a slice it
		// did not map, which cannot happen here.
		_ = unix.Munmap(m.buf)
	}
}
