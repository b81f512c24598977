package wasmguard

import (
	"errors"
	"fmt"
	"slices"
)

// Function names (Options.Skip, Options.FuncNamesOnly) and the stop word
// (Options.StopWord).

const nameSubFunctions = 1 // the name section's function names

// keepFuncNames rewrites the name section to hold its function names only,
// dropping it if it has none.
func keepFuncNames(secs []section) ([]section, error) {
	out := secs[:0:0]
	for _, s := range secs {
		if s.id != secCustom {
			out = append(out, s)
			continue
		}
		r := &reader{b: s.body}
		name, err := r.name()
		if err != nil {
			return nil, fmt.Errorf("custom section: %w", err)
		}
		if name != "name" {
			out = append(out, s)
			continue
		}
		funcs, err := nameSubsection(r, nameSubFunctions)
		if err != nil {
			return nil, fmt.Errorf("custom section name: %w", err)
		}
		if funcs == nil {
			continue
		}
		body := appendName(nil, "name")
		body = append(body, nameSubFunctions)
		body = appendU32(body, uint32(len(funcs)))
		out = append(out, section{secCustom, append(body, funcs...)})
	}
	return out, nil
}

// nameSubsection returns the payload of subsection id of a name section
// (r positioned after the section's name), nil if it has none.
func nameSubsection(r *reader, id byte) ([]byte, error) {
	var found []byte
	for !r.done() {
		sub, err := r.byte()
		if err != nil {
			return nil, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, err
		}
		b, err := r.bytes(uint64(size))
		if err != nil {
			return nil, err
		}
		if sub == id {
			found = b
		}
	}
	return found, nil
}

// skipSet maps the names in skip to indices in the code section (defined
// functions), by the name section's function names. Names it does not find
// (a module without names, say) are not skipped: their loops are guarded.
func skipSet(secs []section, skip []string) (map[uint32]bool, error) {
	if len(skip) == 0 {
		return nil, nil
	}
	var funcs []byte
	for _, s := range secs {
		if s.id != secCustom {
			continue
		}
		r := &reader{b: s.body}
		if name, err := r.name(); err != nil || name != "name" {
			continue
		}
		var err error
		if funcs, err = nameSubsection(r, nameSubFunctions); err != nil {
			return nil, fmt.Errorf("custom section name: %w", err)
		}
	}
	if funcs == nil {
		return nil, nil // no names: nothing is skipped
	}
	imported, err := countImports(secs, 0x00)
	if err != nil {
		return nil, err
	}
	set := make(map[uint32]bool, len(skip))
	r := &reader{b: funcs}
	n, err := r.u32()
	if err != nil {
		return nil, fmt.Errorf("function names: %w", err)
	}
	for range n {
		idx, err := r.u32()
		if err != nil {
			return nil, fmt.Errorf("function names: %w", err)
		}
		name, err := r.name()
		if err != nil {
			return nil, fmt.Errorf("function names: %w", err)
		}
		if idx >= imported && slices.Contains(skip, name) {
			set[idx-imported] = true
		}
	}
	return set, nil
}

// countImports counts the imports of one kind (0 functions, 3 globals).
func countImports(secs []section, kind byte) (uint32, error) {
	var n uint32
	for _, s := range secs {
		if s.id != secImport {
			continue
		}
		if err := eachImport(s.body, func(_, _ string, k byte, _ uint32) error {
			if k == kind {
				n++
			}
			return nil
		}); err != nil {
			return 0, fmt.Errorf("import section: %w", err)
		}
	}
	return n, nil
}

// wordAddress is the value of the exported immutable i32 global name, which
// must be defined by `i32.const` and 4-byte aligned.
func wordAddress(secs []section, name string) (uint32, error) {
	index, err := exportedGlobal(secs, name)
	if err != nil {
		return 0, err
	}
	imported, err := countImports(secs, 0x03)
	if err != nil {
		return 0, err
	}
	if index < imported {
		return 0, fmt.Errorf("global %q is imported: its address is not known", name)
	}
	for _, s := range secs {
		if s.id != secGlobal {
			continue
		}
		r := &reader{b: s.body}
		n, err := r.u32()
		if err != nil {
			return 0, fmt.Errorf("global section: %w", err)
		}
		for i := range n {
			typ, err1 := r.byte()
			mut, err2 := r.byte()
			if err := errors.Join(err1, err2); err != nil {
				return 0, fmt.Errorf("global section: %w", err)
			}
			init, err := constExpr(r)
			if err != nil {
				return 0, fmt.Errorf("global %d: %w", imported+i, err)
			}
			if imported+i != index {
				continue
			}
			if typ != 0x7f || mut != 0 || len(init) < 2 || init[0] != opI32Const {
				return 0, fmt.Errorf("global %q is not an immutable i32 set by i32.const", name)
			}
			v, err := (&reader{b: init[1:]}).sleb(32)
			if err != nil {
				return 0, fmt.Errorf("global %q: %w", name, err)
			}
			if v%4 != 0 {
				return 0, fmt.Errorf("global %q: address %#x is not 4-byte aligned", name, uint32(v))
			}
			return uint32(v), nil
		}
	}
	return 0, fmt.Errorf("global %q: not in the global section", name)
}

// constExpr reads one constant expression (a single constant instruction
// and end) and returns it without the end.
func constExpr(r *reader) ([]byte, error) {
	start := r.off
	op, err := r.byte()
	if err != nil {
		return nil, err
	}
	switch op {
	case opI32Const:
		_, err = r.sleb(32)
	case opI64Const:
		_, err = r.sleb(64)
	case 0x43: // f32.const
		_, err = r.bytes(4)
	case 0x44: // f64.const
		_, err = r.bytes(8)
	case opGlobalGet, 0xd2: // global.get, ref.func
		_, err = r.u32()
	case 0xd0: // ref.null
		_, err = r.byte()
	default:
		return nil, fmt.Errorf("constant expression opcode 0x%02x not supported", op)
	}
	if err != nil {
		return nil, err
	}
	expr := r.b[start:r.off]
	if end, err := r.byte(); err != nil || end != opEnd {
		return nil, errors.New("constant expression of more than one instruction")
	}
	return expr, nil
}

// wordGuardFor is the guard that tests the word at addr:
// `i32.const addr; i32.load; if unreachable end`.
func wordGuardFor(addr uint32) []byte {
	g := appendS32([]byte{opI32Const}, int32(addr))
	g = append(g, 0x28, 0x02, 0x00) // i32.load align=4 offset=0
	return append(g, opIf, blockEmpty, opUnreachable, opEnd)
}
