package wasmguard

import (
	"errors"
	"fmt"
)

var errTruncated = errors.New("truncated")

// reader reads the binary format. Every method fails on truncated or
// over-long input instead of guessing.
type reader struct {
	b   []byte
	off int
}

func (r *reader) done() bool { return r.off >= len(r.b) }

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errTruncated
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *reader) bytes(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.off) {
		return nil, errTruncated
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

// uleb reads an unsigned LEB128 of at most bits bits.
func (r *reader) uleb(bits uint) (uint64, error) {
	var v uint64
	maxBytes := (bits + 6) / 7
	for i := uint(0); i < maxBytes; i++ {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if i == maxBytes-1 && bits%7 != 0 && c>>(bits%7) != 0 {
				return 0, fmt.Errorf("LEB128 at %d overflows %d bits", r.off-1, bits)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("LEB128 at %d longer than %d bits allows", r.off, bits)
}

func (r *reader) u32() (uint32, error) {
	v, err := r.uleb(32)
	return uint32(v), err
}

// sleb reads a signed LEB128 of at most bits bits.
func (r *reader) sleb(bits uint) (int64, error) {
	var v int64
	var shift uint
	maxBytes := (bits + 6) / 7
	for i := uint(0); i < maxBytes; i++ {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if bits == 64 && i == 9 && c != 0 && c != 0x7f {
				return 0, fmt.Errorf("signed LEB128 at %d overflows 64 bits", r.off-1)
			}
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			if bits < 64 && (v < -(1<<(bits-1)) || v >= 1<<(bits-1)) {
				return 0, fmt.Errorf("signed LEB128 at %d overflows %d bits", r.off-1, bits)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("signed LEB128 at %d longer than %d bits allows", r.off, bits)
}

// name reads a length-prefixed string.
func (r *reader) name() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	b, err := r.bytes(uint64(n))
	return string(b), err
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func appendS32(b []byte, v int32) []byte {
	x := int64(v)
	for {
		c := byte(x & 0x7f)
		x >>= 7
		if (x == 0 && c&0x40 == 0) || (x == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}
