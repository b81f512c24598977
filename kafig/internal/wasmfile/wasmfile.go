// Package wasmfile reads the few facts package kafig needs from a
// WebAssembly binary without an engine: the limits of its memory.
package wasmfile

import (
	"encoding/binary"
	"errors"
)

const (
	secImport = 2
	secMemory = 5
)

var (
	errNotWasm   = errors.New("not a WebAssembly binary")
	errMalformed = errors.New("malformed WebAssembly binary")
	errNoMemory  = errors.New("module defines no memory")
)

// Memory returns the minimum and maximum page counts of the module's first
// memory (defined or imported). hasMax is false when no maximum is declared.
func Memory(wasm []byte) (minPages, maxPages uint32, hasMax bool, err error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" || binary.LittleEndian.Uint32(wasm[4:8]) != 1 {
		return 0, 0, false, errNotWasm
	}
	r := reader{b: wasm[8:]}
	for len(r.b) > 0 {
		id, ok1 := r.byte()
		size, ok2 := r.u32()
		if !ok1 || !ok2 || uint64(size) > uint64(len(r.b)) {
			return 0, 0, false, errMalformed
		}
		sec := reader{b: r.b[:size]}
		r.b = r.b[size:]
		switch id {
		case secMemory:
			n, ok := sec.u32()
			if !ok || n == 0 {
				return 0, 0, false, errNoMemory
			}
			return sec.limits()
		case secImport:
			if mn, mx, hm, found, err := sec.memoryImport(); err != nil || found {
				return mn, mx, hm, err
			}
		}
	}
	return 0, 0, false, errNoMemory
}

type reader struct{ b []byte }

func (r *reader) byte() (byte, bool) {
	if len(r.b) == 0 {
		return 0, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, true
}

func (r *reader) u32() (uint32, bool) {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c, ok := r.byte()
		if !ok {
			return 0, false
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 0xffffffff {
				return 0, false
			}
			return uint32(v), true
		}
	}
	return 0, false
}

func (r *reader) skip(n uint32) bool {
	if uint64(n) > uint64(len(r.b)) {
		return false
	}
	r.b = r.b[n:]
	return true
}

func (r *reader) name() bool {
	n, ok := r.u32()
	return ok && r.skip(n)
}

func (r *reader) names(n int) bool {
	for range n {
		if !r.name() {
			return false
		}
	}
	return true
}

func (r *reader) limits() (minPages, maxPages uint32, hasMax bool, err error) {
	flags, ok := r.byte()
	if !ok || flags&^0x03 != 0 { // no memory64, no custom page sizes
		return 0, 0, false, errMalformed
	}
	if minPages, ok = r.u32(); !ok {
		return 0, 0, false, errMalformed
	}
	if flags&1 != 0 {
		if maxPages, ok = r.u32(); !ok {
			return 0, 0, false, errMalformed
		}
		hasMax = true
	}
	return minPages, maxPages, hasMax, nil
}

// memoryImport walks the import section and returns the first memory import.
func (r *reader) memoryImport() (minPages, maxPages uint32, hasMax, found bool, err error) {
	n, ok := r.u32()
	if !ok {
		return 0, 0, false, false, errMalformed
	}
	for i := uint32(0); i < n; i++ {
		if !r.names(2) { // module and field
			return 0, 0, false, false, errMalformed
		}
		kind, ok := r.byte()
		if !ok {
			return 0, 0, false, false, errMalformed
		}
		switch kind {
		case 0: // func: type index
			_, ok = r.u32()
		case 1: // table: reftype + limits
			_, ok = r.byte()
			if ok {
				_, _, _, err = r.limits()
				ok = err == nil
			}
		case 2: // memory
			minPages, maxPages, hasMax, err = r.limits()
			return minPages, maxPages, hasMax, err == nil, err
		case 3: // global: valtype + mut
			_, ok = r.byte()
			if ok {
				_, ok = r.byte()
			}
		case 4: // tag: attribute + type index
			_, ok = r.byte()
			if ok {
				_, ok = r.u32()
			}
		default:
			ok = false
		}
		if !ok {
			return 0, 0, false, false, errMalformed
		}
	}
	return 0, 0, false, false, nil
}
