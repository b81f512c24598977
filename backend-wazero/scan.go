package wazerobackend

import (
	"errors"
	"fmt"
)

// wazero's CompiledModule lists imported functions and memories but not
// imported tables, globals or tags. scanImports reads the import section
// itself so that Compile can refuse those too (instead of failing later, at
// instantiation). The module has already been validated by wazero.

// An import as the binary names it.
type wasmImport struct {
	module, name string
	kind         byte
}

// Import kinds in the binary format.
const (
	kindFunc   = 0x00
	kindTable  = 0x01
	kindMemory = 0x02
	kindGlobal = 0x03
	kindTag    = 0x04
)

func kindName(k byte) string {
	switch k {
	case kindFunc:
		return "function"
	case kindTable:
		return "table"
	case kindMemory:
		return "memory"
	case kindGlobal:
		return "global"
	case kindTag:
		return "tag"
	}
	return fmt.Sprintf("kind 0x%02x", k)
}

var errTruncated = errors.New("truncated module")

type reader struct {
	b   []byte
	off int
}

func (r *reader) byte() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errTruncated
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *reader) u32() (uint32, error) {
	var v uint32
	for shift := 0; shift < 35; shift += 7 {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errors.New("bad LEB128")
}

func (r *reader) bytes(n uint32) ([]byte, error) {
	if uint64(n) > uint64(len(r.b)-r.off) {
		return nil, errTruncated
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s, nil
}

func (r *reader) name() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	s, err := r.bytes(n)
	return string(s), err
}

// skipLimits skips a table or memory type's limits.
func (r *reader) skipLimits() error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if _, err := r.u32(); err != nil { // min (u64 for memory64, but we stop here anyway)
		return err
	}
	if flags&1 != 0 {
		if _, err := r.u32(); err != nil {
			return err
		}
	}
	return nil
}

// scanImports returns the imports of a wasm binary in order. It stops at the
// first import that is not a function (after returning it), since the caller
// refuses the module then.
func scanImports(wasm []byte) ([]wasmImport, error) {
	if len(wasm) < 8 {
		return nil, errTruncated
	}
	r := &reader{b: wasm, off: 8}
	for r.off < len(r.b) {
		id, err := r.byte()
		if err != nil {
			return nil, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		body, err := r.bytes(size)
		if err != nil {
			return nil, err
		}
		if id == 2 {
			return parseImportSection(body)
		}
	}
	return nil, nil
}

func parseImportSection(body []byte) ([]wasmImport, error) {
	r := &reader{b: body}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	var out []wasmImport
	for i := uint32(0); i < n; i++ {
		var im wasmImport
		if im.module, err = r.name(); err != nil {
			return nil, err
		}
		if im.name, err = r.name(); err != nil {
			return nil, err
		}
		if im.kind, err = r.byte(); err != nil {
			return nil, err
		}
		out = append(out, im)
		switch im.kind {
		case kindFunc:
			if _, err := r.u32(); err != nil { // type index
				return nil, err
			}
		case kindMemory:
			if err := r.skipLimits(); err != nil {
				return nil, err
			}
		default:
			return out, nil
		}
	}
	return out, nil
}

// exportsGlobal reports whether a wasm binary exports a global named name.
// Compile asks it of the guest before wazero sees the module: whether the
// guest has the stop guard (abi.StopGlobal) decides the runtime's
// configuration (see WithBackstop). The binary is not validated yet, so a
// malformed one is an error here, and wazero reports the details.
func exportsGlobal(wasm []byte, name string) (bool, error) {
	if len(wasm) < 8 {
		return false, errTruncated
	}
	r := &reader{b: wasm, off: 8}
	for r.off < len(r.b) {
		id, err := r.byte()
		if err != nil {
			return false, err
		}
		size, err := r.u32()
		if err != nil {
			return false, err
		}
		body, err := r.bytes(size)
		if err != nil {
			return false, err
		}
		if id != 7 { // the export section
			continue
		}
		er := &reader{b: body}
		n, err := er.u32()
		if err != nil {
			return false, err
		}
		for range n {
			got, err := er.name()
			if err != nil {
				return false, err
			}
			kind, err := er.byte()
			if err != nil {
				return false, err
			}
			if _, err := er.u32(); err != nil {
				return false, err
			}
			if kind == kindGlobal && got == name {
				return true, nil
			}
		}
		return false, nil
	}
	return false, nil
}

// dataRange is the memory range [start, end) an active data segment of
// memory 0 writes at instantiation.
type dataRange struct{ start, end uint64 }

// activeData returns the ranges that the active data segments of a wasm
// binary write into memory 0 at instantiation, for segments whose offset is
// an i32.const (what toolchains emit). ok is false when the data section
// has anything else (an offset from a global, another memory): the caller
// then assumes nothing about the segments.
func activeData(wasm []byte) (out []dataRange, ok bool) {
	if len(wasm) < 8 {
		return nil, false
	}
	r := &reader{b: wasm, off: 8}
	for r.off < len(r.b) {
		id, err := r.byte()
		if err != nil {
			return nil, false
		}
		size, err := r.u32()
		if err != nil {
			return nil, false
		}
		body, err := r.bytes(size)
		if err != nil {
			return nil, false
		}
		if id != 11 { // the data section
			continue
		}
		dr := &reader{b: body}
		n, err := dr.u32()
		if err != nil {
			return nil, false
		}
		for range n {
			flags, err := dr.u32()
			if err != nil {
				return nil, false
			}
			switch flags {
			case 1: // passive: written only by memory.init
				l, err := dr.u32()
				if err != nil {
					return nil, false
				}
				if _, err := dr.bytes(l); err != nil {
					return nil, false
				}
				continue
			case 0:
			default: // 2: explicit memory index
				return nil, false
			}
			if op, err := dr.byte(); err != nil || op != 0x41 { // i32.const
				return nil, false
			}
			off, err := dr.s32()
			if err != nil {
				return nil, false
			}
			if end, err := dr.byte(); err != nil || end != 0x0b {
				return nil, false
			}
			l, err := dr.u32()
			if err != nil {
				return nil, false
			}
			if _, err := dr.bytes(l); err != nil {
				return nil, false
			}
			start := uint64(uint32(off))
			out = append(out, dataRange{start, start + uint64(l)})
		}
		return out, true
	}
	return nil, true
}

// s32 reads a signed LEB128 of up to 32 bits.
func (r *reader) s32() (int32, error) {
	var v int64
	var shift uint
	for {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return int32(v), nil
		}
		if shift >= 35 {
			return 0, errors.New("bad LEB128")
		}
	}
}
