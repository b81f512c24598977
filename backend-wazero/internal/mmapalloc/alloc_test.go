package mmapalloc

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGrowWithinCap(t *testing.T) {
	a := New(4)
	m := a.Allocate(0, 100*PageSize).(*Memory)
	require.Same(t, m, a.Memory())
	require.NoError(t, m.Err())
	require.Equal(t, uint64(4*PageSize), m.Limit())

	b := m.Reallocate(PageSize)
	require.Len(t, b, PageSize)
	b[0], b[PageSize-1] = 1, 2

	b = m.Reallocate(3 * PageSize)
	require.Len(t, b, 3*PageSize)
	require.Equal(t, byte(1), b[0], "contents survive growth")
	require.Equal(t, byte(2), b[PageSize-1])
	b[3*PageSize-1] = 3
	require.Equal(t, uint64(3*PageSize), m.Size())

	b = m.Reallocate(4 * PageSize)
	require.Len(t, b, 4*PageSize)
	require.Nil(t, m.Reallocate(5*PageSize), "above the cap")
	require.Equal(t, uint64(4*PageSize), m.Size(), "a refused growth changes nothing")

	m.Free()
	m.Release()
	require.Nil(t, m.Reallocate(PageSize), "after release")
}

func TestModuleMaxBelowCap(t *testing.T) {
	m := New(1000).Allocate(0, 2*PageSize).(*Memory)
	defer func() { m.Free(); m.Release() }()
	require.Equal(t, uint64(2*PageSize), m.Limit())
	require.Nil(t, m.Reallocate(3*PageSize))
}

func TestNoCap(t *testing.T) {
	m := New(0).Allocate(0, 65536*PageSize).(*Memory)
	defer func() { m.Free(); m.Release() }()
	require.NoError(t, m.Err())
	require.Equal(t, uint64(65536*PageSize), m.Limit())
	b := m.Reallocate(16 * PageSize)
	require.Len(t, b, 16*PageSize)
	b[len(b)-1] = 9
}

func TestZeroSize(t *testing.T) {
	m := New(0).Allocate(0, 0).(*Memory)
	defer func() { m.Free(); m.Release() }()
	b := m.Reallocate(0)
	require.NotNil(t, b)
	require.Empty(t, b)
	require.Nil(t, m.Reallocate(PageSize))
}

func TestReleaseOrder(t *testing.T) {
	for _, ownerFirst := range []bool{false, true} {
		m := New(2).Allocate(0, 2*PageSize).(*Memory)
		b := m.Reallocate(PageSize)
		if ownerFirst {
			m.Release()
		} else {
			m.Free()
		}
		b[10] = 1 // still mapped: only one side let go
		require.Equal(t, byte(1), b[10])
		if ownerFirst {
			m.Free()
		} else {
			m.Release()
		}
		m.Free() // idempotent
		m.Release()
		require.Zero(t, m.Size())
	}
}
