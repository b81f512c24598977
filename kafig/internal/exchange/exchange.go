// Package exchange reads and writes the guest's exchange area (ABI.md, "The
// exchange area") and guest memory in general, defensively: every pointer
// and length comes from a guest that runs hostile JavaScript, so a range
// outside memory is an error (false), never a panic.
//
// Any call into the guest may grow memory: nothing here keeps a slice of
// guest memory across calls.
package exchange

import (
	"encoding/binary"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// Ptr is an address in the guest's linear memory.
type Ptr uint32

// Add returns p+n, or false when it overflows the 32-bit address space.
func (p Ptr) Add(n uint32) (Ptr, bool) {
	q := uint64(p) + uint64(n)
	return Ptr(q), q <= 0xffffffff
}

// Area is the exchange area of one instance at address X.
type Area struct {
	Mem backend.Memory
	X   Ptr
}

// Data is the address of the data area.
func (a Area) Data() Ptr { return a.X + abi.ExchHeaderSize }

// Check verifies that the whole area (up to the end of the source name
// area) lies inside memory and that the guest reports the data area size
// this host was built for.
func (a Area) Check() bool {
	if _, ok := a.X.Add(abi.ExchangeSize); !ok {
		return false
	}
	if _, ok := a.Mem.Read(uint32(a.X), abi.ExchangeSize); !ok {
		return false
	}
	v, ok := a.U32(abi.ExchDataCap)
	return ok && v == abi.ExchangeDataSize
}

// U32 reads the header field at off.
func (a Area) U32(off uint32) (uint32, bool) {
	b, ok := a.Mem.Read(uint32(a.X)+off, 4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}

// U64 reads the header field at off.
func (a Area) U64(off uint32) (uint64, bool) {
	b, ok := a.Mem.Read(uint32(a.X)+off, 8)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b), true
}

// PutU64 writes the header field at off.
func (a Area) PutU64(off uint32, v uint64) bool {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return a.Mem.Write(uint32(a.X)+off, b[:])
}

// PutU32 writes the header field at off.
func (a Area) PutU32(off uint32, v uint32) bool {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return a.Mem.Write(uint32(a.X)+off, b[:])
}

// PutSourceName writes the source name the next eval or compile uses
// (ExchSourceName and ExchSourceNameLen); "" writes length 0, the guest's
// default name. A name longer than abi.MaxSourceNameLen is not written
// (false).
func (a Area) PutSourceName(name string) bool {
	if len(name) > abi.MaxSourceNameLen {
		return false
	}
	if name != "" && !WriteString(a.Mem, a.X+abi.ExchSourceName, name) {
		return false
	}
	return a.PutU32(abi.ExchSourceNameLen, uint32(len(name)))
}

// Result returns the range of the last export's result (header fields
// ExchResultPtr and ExchResultLen), checked against memory.
func (a Area) Result() (Ptr, uint32, bool) {
	b, ok := a.Mem.Read(uint32(a.X)+abi.ExchResultPtr, 8)
	if !ok {
		return 0, 0, false
	}
	p := Ptr(binary.LittleEndian.Uint32(b))
	n := binary.LittleEndian.Uint32(b[4:])
	if _, ok := a.Mem.Read(uint32(p), n); !ok {
		return 0, 0, false
	}
	return p, n, true
}

// ResultBytes copies the last export's result out of guest memory.
func (a Area) ResultBytes() ([]byte, bool) {
	p, n, ok := a.Result()
	if !ok {
		return nil, false
	}
	return Copy(a.Mem, p, n)
}

// Copy returns a copy of n bytes at p.
func Copy(mem backend.Memory, p Ptr, n uint32) ([]byte, bool) {
	b, ok := mem.Read(uint32(p), n)
	if !ok {
		return nil, false
	}
	return append([]byte(nil), b...), true
}

// String returns a copy of n bytes at p as a string.
func String(mem backend.Memory, p Ptr, n uint32) (string, bool) {
	b, ok := mem.Read(uint32(p), n)
	if !ok {
		return "", false
	}
	return string(b), true
}

// Write copies b to p.
func Write(mem backend.Memory, p Ptr, b []byte) bool {
	return mem.Write(uint32(p), b)
}

// WriteString copies s to p without converting it to a []byte first: it
// writes through the view Read returns, which backend.Memory documents as
// aliasing guest memory.
func WriteString(mem backend.Memory, p Ptr, s string) bool {
	if uint64(len(s)) > 0xffffffff {
		return false
	}
	dst, ok := mem.Read(uint32(p), uint32(len(s)))
	if !ok {
		return false
	}
	copy(dst, s)
	return true
}
