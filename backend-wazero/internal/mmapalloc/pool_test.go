package mmapalloc

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestPoolReusesZeroed(t *testing.T) {
	if !poolable {
		t.Skip("no pooling on this system")
	}
	const keep = 3 * PageSize
	p := NewPool(keep, 2)
	defer p.Close()

	m := NewPooled(8, p).Allocate(0, 100*PageSize).(*Memory)
	b := m.Reallocate(keep)
	b[0], b[PageSize+7], b[keep-1] = 1, 2, 3
	b = m.Reallocate(6 * PageSize)
	b[5*PageSize] = 4
	base := unsafe.Pointer(&b[0])
	m.Free()
	m.Release()
	require.Equal(t, 1, p.Len(), "released into the pool")

	m2 := NewPooled(8, p).Allocate(0, 100*PageSize).(*Memory)
	defer func() { m2.Free(); m2.Release() }()
	require.Equal(t, 0, p.Len())
	b2 := m2.Reallocate(keep)
	require.Equal(t, base, unsafe.Pointer(&b2[0]), "the same range")
	require.Equal(t, make([]byte, keep), b2, "kept pages are zero")
	b2 = m2.Reallocate(6 * PageSize)
	require.Equal(t, make([]byte, 6*PageSize), b2, "pages beyond keep are zero when committed again")
	require.Nil(t, m2.Reallocate(9*PageSize), "the cap holds")

	// Another limit: another reservation.
	m3 := NewPooled(16, p).Allocate(0, 100*PageSize).(*Memory)
	b3 := m3.Reallocate(keep)
	require.NotEqual(t, base, unsafe.Pointer(&b3[0]))
	m3.Free()
	m3.Release()
}

func TestPoolBounded(t *testing.T) {
	if !poolable {
		t.Skip("no pooling on this system")
	}
	p := NewPool(PageSize, 2)
	var ms []*Memory
	for range 4 {
		m := NewPooled(4, p).Allocate(0, 4*PageSize).(*Memory)
		m.Reallocate(PageSize)[0] = 1
		ms = append(ms, m)
	}
	for _, m := range ms {
		m.Free()
		m.Release()
	}
	require.Equal(t, 2, p.Len())
	p.Close()
	require.Equal(t, 0, p.Len())
	m := NewPooled(4, p).Allocate(0, 4*PageSize).(*Memory)
	require.Equal(t, byte(0), m.Reallocate(PageSize)[0])
	m.Free()
	m.Release()
	require.Equal(t, 0, p.Len(), "a closed pool keeps nothing")
}

func TestPoolOff(t *testing.T) {
	p := NewPool(PageSize, 0)
	m := NewPooled(4, p).Allocate(0, 4*PageSize).(*Memory)
	m.Reallocate(PageSize)
	m.Free()
	m.Release()
	require.Equal(t, 0, p.Len())
	var nilPool *Pool
	nilPool.Close()
	m = NewPooled(4, nil).Allocate(0, 4*PageSize).(*Memory)
	m.Reallocate(PageSize)
	m.Free()
	m.Release()
}
