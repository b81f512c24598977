//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package mmapalloc

// Mmap reports whether memories live outside the Go heap (reserved with mmap).
const Mmap = false

func (m *Memory) init() { m.buf = []byte{} }

// grow extends the Go slice, copying when it must move.
func (m *Memory) grow(size uint64) ([]byte, error) {
	if size > uint64(cap(m.buf)) {
		nb := make([]byte, size)
		copy(nb, m.buf)
		m.buf = nb
	}
	m.buf = m.buf[:size]
	m.size = size
	return m.buf, nil
}

func (m *Memory) unmap() {}
