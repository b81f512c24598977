package wasmguard

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// segment is one data segment.
type segment struct {
	raw      []byte // its encoding, copied as is when not merged
	active   bool
	constOff bool   // active, memory 0, offset `i32.const n`
	offset   uint32 // when constOff
	data     []byte
}

func (s segment) end() uint64 { return uint64(s.offset) + uint64(len(s.data)) }

func parseData(body []byte) ([]segment, error) {
	r := &reader{b: body}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	segs := make([]segment, 0, n)
	for i := range n {
		start := r.off
		s, err := parseSegment(r)
		if err != nil {
			return nil, fmt.Errorf("segment %d: %w", i, err)
		}
		s.raw = body[start:r.off]
		segs = append(segs, s)
	}
	if !r.done() {
		return nil, errors.New("trailing bytes")
	}
	return segs, nil
}

func parseSegment(r *reader) (segment, error) {
	var s segment
	flags, err := r.u32()
	if err != nil {
		return s, err
	}
	mem := uint32(0)
	switch flags {
	case 0: // active, memory 0: expr bytes
		s.active = true
	case 1: // passive: bytes
	case 2: // active, explicit memory: memidx expr bytes
		s.active = true
		if mem, err = r.u32(); err != nil {
			return s, err
		}
	default:
		return s, fmt.Errorf("flags %d", flags)
	}
	if s.active {
		exprStart := r.off
		if err := skipConstExpr(r); err != nil {
			return s, fmt.Errorf("offset: %w", err)
		}
		expr := r.b[exprStart:r.off]
		if mem == 0 && len(expr) >= 3 && expr[0] == 0x41 {
			er := &reader{b: expr[1:]}
			if v, err := er.sleb(32); err == nil && er.off == len(expr)-2 {
				s.constOff, s.offset = true, uint32(v)
			}
		}
	}
	n, err := r.u32()
	if err != nil {
		return s, err
	}
	if s.data, err = r.bytes(uint64(n)); err != nil {
		return s, err
	}
	return s, nil
}

// skipConstExpr reads a constant expression up to its end. It knows the
// MVP's constant instructions only.
func skipConstExpr(r *reader) error {
	for {
		op, err := r.byte()
		if err != nil {
			return err
		}
		switch op {
		case opEnd:
			return nil
		case 0x41:
			_, err = r.sleb(32)
		case 0x42:
			_, err = r.sleb(64)
		case 0x23: // global.get
			_, err = r.u32()
		default:
			return fmt.Errorf("opcode 0x%02x in a constant expression", op)
		}
		if err != nil {
			return err
		}
	}
}

// mergeSegments merges the active segments (sorted by offset, joined when
// at most maxGap bytes apart, the gap zero-filled) and puts the passive ones
// after them in their order. It gives a reason instead when the merge might
// change what instantiation writes: an offset that is not a constant, a
// second memory, or overlapping segments (where the later one wins, so
// their order matters).
func mergeSegments(segs []segment, maxGap uint32) ([]segment, string) {
	var active, passive []segment
	for _, s := range segs {
		switch {
		case !s.active:
			passive = append(passive, s)
		case !s.constOff:
			return nil, "an active segment's offset is not an i32.const, or it is not for memory 0"
		default:
			active = append(active, s)
		}
	}
	slices.SortStableFunc(active, func(a, b segment) int {
		if a.offset != b.offset {
			return cmpU64(uint64(a.offset), uint64(b.offset))
		}
		return cmpU64(a.end(), b.end())
	})
	for i := 1; i < len(active); i++ {
		if uint64(active[i].offset) < active[i-1].end() {
			return nil, fmt.Sprintf("segments at %d and %d overlap", active[i-1].offset, active[i].offset)
		}
	}

	var out []segment
	for _, s := range active {
		if k := len(out) - 1; k >= 0 && uint64(s.offset)-out[k].end() <= uint64(maxGap) {
			gap := int(uint64(s.offset) - out[k].end())
			out[k].data = append(out[k].data, make([]byte, gap)...)
			out[k].data = append(out[k].data, s.data...)
			continue
		}
		out = append(out, segment{active: true, constOff: true, offset: s.offset, data: slices.Clone(s.data)})
	}
	for i := range out {
		out[i].raw = nil // re-encoded
	}
	return append(out, passive...), ""
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkMerge verifies that merged writes the same bytes as segs: every
// original active segment's bytes at its offset, zeros in between (the
// merged segments hold exactly as many non-zero bytes as the originals), and
// the passive segments unchanged in order.
func checkMerge(segs, merged []segment) error {
	var mergedActive []segment
	var passiveIn, passiveOut [][]byte
	var nonZeroIn, nonZeroOut int
	for _, s := range merged {
		if s.active {
			mergedActive = append(mergedActive, s)
			nonZeroOut += len(s.data) - bytes.Count(s.data, []byte{0})
		} else {
			passiveOut = append(passiveOut, s.raw)
		}
	}
	for _, s := range segs {
		if !s.active {
			passiveIn = append(passiveIn, s.raw)
			continue
		}
		nonZeroIn += len(s.data) - bytes.Count(s.data, []byte{0})
		i, _ := slices.BinarySearchFunc(mergedActive, s.offset, func(m segment, off uint32) int {
			return cmpU64(m.end(), uint64(off)+1) // the first merged segment ending after off
		})
		if len(s.data) == 0 {
			continue
		}
		if i == len(mergedActive) || mergedActive[i].offset > s.offset || mergedActive[i].end() < s.end() {
			return fmt.Errorf("wasmguard: bug: segment at %d lost in the merge", s.offset)
		}
		at := s.offset - mergedActive[i].offset
		if !bytes.Equal(mergedActive[i].data[at:at+uint32(len(s.data))], s.data) {
			return fmt.Errorf("wasmguard: bug: segment at %d changed in the merge", s.offset)
		}
	}
	if nonZeroIn != nonZeroOut {
		return fmt.Errorf("wasmguard: bug: %d non-zero bytes before the merge, %d after", nonZeroIn, nonZeroOut)
	}
	if !slices.EqualFunc(passiveIn, passiveOut, bytes.Equal) {
		return errors.New("wasmguard: bug: passive segments changed in the merge")
	}
	return nil
}

func encodeData(segs []segment) []byte {
	size := 5
	for _, s := range segs {
		size += len(s.raw) + len(s.data) + 16
	}
	out := appendU32(make([]byte, 0, size), uint32(len(segs)))
	for _, s := range segs {
		if s.raw != nil {
			out = append(out, s.raw...)
			continue
		}
		out = append(out, 0x00, 0x41) // active memory 0, i32.const
		out = appendS32(out, int32(s.offset))
		out = append(out, opEnd)
		out = appendU32(out, uint32(len(s.data)))
		out = append(out, s.data...)
	}
	return out
}
