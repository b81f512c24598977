package exchange

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kafig-dev/kafig/abi"
)

type mem []byte

func (m mem) Read(p, n uint32) ([]byte, bool) {
	if uint64(p)+uint64(n) > uint64(len(m)) {
		return nil, false
	}
	return m[p : p+n], true
}

func (m mem) Write(p uint32, b []byte) bool {
	if uint64(p)+uint64(len(b)) > uint64(len(m)) {
		return false
	}
	copy(m[p:], b)
	return true
}

func (m mem) Size() uint32 { return uint32(len(m)) }

func TestArea(t *testing.T) {
	m := make(mem, 2*abi.PageSize)
	a := Area{Mem: m, X: 100}
	assert.False(t, a.Check(), "data cap not set")
	binary.LittleEndian.PutUint32(m[100+abi.ExchDataCap:], abi.ExchangeDataSize)
	assert.True(t, a.Check())
	assert.False(t, Area{Mem: m, X: abi.PageSize + 1}.Check(), "area past the end")
	assert.False(t, Area{Mem: m, X: 0xffffffff}.Check(), "overflow")

	// Results: in range, out of range, overflowing.
	binary.LittleEndian.PutUint32(m[100:], 200)
	binary.LittleEndian.PutUint32(m[104:], 3)
	copy(m[200:], "abc")
	b, ok := a.ResultBytes()
	assert.True(t, ok)
	assert.Equal(t, "abc", string(b))
	m[200] = 'z'
	assert.Equal(t, "abc", string(b), "a copy")
	binary.LittleEndian.PutUint32(m[100:], 0xfffffff0)
	binary.LittleEndian.PutUint32(m[104:], 0x20)
	_, ok = a.ResultBytes()
	assert.False(t, ok)
	binary.LittleEndian.PutUint32(m[100:], uint32(len(m)-1))
	binary.LittleEndian.PutUint32(m[104:], 2)
	_, _, ok = a.Result()
	assert.False(t, ok)

	assert.True(t, a.PutU64(abi.ExchOpcodes, 42))
	v, ok := a.U64(abi.ExchOpcodes)
	assert.True(t, ok)
	assert.Equal(t, uint64(42), v)
	assert.Equal(t, Ptr(164), a.Data())

	assert.True(t, WriteString(m, Ptr(10), "hi"))
	assert.False(t, WriteString(m, Ptr(len(m)-1), "hi"))
	s, ok := String(m, Ptr(10), 2)
	assert.True(t, ok)
	assert.Equal(t, "hi", s)
	_, ok = Copy(m, Ptr(len(m)), 1)
	assert.False(t, ok)
	_, ok = Ptr(0xffffffff).Add(1)
	assert.False(t, ok)
}
