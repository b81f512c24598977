// Package wasmguard is a post-pass over a WebAssembly module (the kafig
// guest after wasm-opt) that does two things:
//
//   - It adds a stop guard. One mutable i32 global (initially 0) is appended
//     to the global section and exported, and every loop in every function
//     starts with `global.get $stop; if unreachable end`. A host that sets
//     the global to a non-zero value makes the guest trap at its next loop
//     iteration, wherever it runs, including inside QuickJS builtins that
//     never call the host. That is a load and a branch per iteration, where
//     the engines' own backstops are far dearer (wazero's
//     WithCloseOnContextDone calls out to Go at every loop header).
//     With Options.Yield the guard also counts iterations and calls a host
//     import every so many of them (see yield.go): an engine that cannot
//     preempt guest code (wazero, under Go's garbage collector) needs the
//     guest to call the host now and then, even in loops that never poll.
//   - It merges the active data segments. Wizer writes the snapshot as one
//     segment per non-zero run of memory (about 2,200 for kafig.wasm) and
//     engines pay per segment at every instantiation. Segments that are
//     close to each other are merged, the gap filled with the zeros memory
//     holds there anyway.
//
// The output is a function of the input bytes and the options only. Every
// byte the pass does not need to change is copied as it is. Anything it does
// not understand (an opcode of a feature it does not know, a custom section
// that refers to code offsets or data segment indices, a segment offset that
// is not a constant) is an error, never a guess.
package wasmguard

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// DefaultStopGlobal is the export name of the stop global in the kafig
// guest. It must equal abi.StopGlobal (a test checks; this package cannot
// import abi because guest/build.sh runs it from a copy of guest/ alone).
const DefaultStopGlobal = "kafig_stop"

// DefaultMaxGap is the largest gap (in bytes) between two active data
// segments that MergeData fills with zeros to merge them.
const DefaultMaxGap = 1024

// Options configures Apply.
type Options struct {
	// StopGlobal is the export name of the stop global; empty means no guard
	// is added.
	StopGlobal string
	// Yield, with StopGlobal, makes the guard also call an import every so
	// many loop iterations (see Yield).
	Yield *Yield
	// StopWord, instead of StopGlobal, makes the guard test a word of
	// linear memory: it is the export name of an immutable i32 global
	// (initialized by i32.const) that holds the word's address. A host that
	// can write guest memory from another thread, but not a global, uses it
	// (Wasmtime: a store is used by one thread at a time, its memory is
	// plain memory). It cannot be combined with StopGlobal or Yield.
	StopWord string
	// Skip names functions (as the module's name section calls them) whose
	// loops get no guard: functions that poll the host on their own often
	// enough (the QuickJS interpreter polls at every call and jump), where
	// the guard would only cost time. A name the module does not have (or
	// a module without a name section) skips nothing: Report.SkippedLoops
	// says what was skipped.
	Skip []string
	// FuncNamesOnly drops every subsection of the name section but the
	// function names (which Skip reads and nothing in the pass changes).
	FuncNamesOnly bool
	// MergeData merges active data segments whose gap is at most MaxGap bytes.
	MergeData bool
	MaxGap    uint32
}

// Report describes what Apply did.
type Report struct {
	Functions    int    // function bodies
	Loops        int    // loops guarded
	SkippedLoops int    // loops left unguarded in the Skip functions
	StopWordAddr uint32 // the stop word's address (with StopWord)
	GlobalIndex  uint32 // index of the stop global (when added)
	SlowFunc     uint32 // index of the guard's slow path (with Yield)
	SegmentsIn   int    // data segments before
	SegmentsOut  int    // data segments after
	MergeSkipped string // why segments were not merged, if they were not
}

var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Section ids.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// sectionRank is the order the binary format requires of known sections.
var sectionRank = map[byte]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5, secTag: 6,
	secGlobal: 7, secExport: 8, secStart: 9, secElement: 10, secDataCount: 11,
	secCode: 12, secData: 13,
}

type section struct {
	id   byte
	body []byte
}

// Apply runs the pass over wasm and returns the new module.
func Apply(wasm []byte, opts Options) ([]byte, Report, error) {
	var rep Report
	secs, err := splitSections(wasm)
	if err != nil {
		return nil, rep, err
	}
	idx := func(id byte) int {
		return slices.IndexFunc(secs, func(s section) bool { return s.id == id })
	}
	if opts.FuncNamesOnly {
		if secs, err = keepFuncNames(secs); err != nil {
			return nil, rep, err
		}
	}
	if err := checkCustomSections(secs, opts.MergeData); err != nil {
		return nil, rep, err
	}
	skip, err := skipSet(secs, opts.Skip)
	if err != nil {
		return nil, rep, err
	}

	// Code first: it tells whether data segment indices are in use.
	dataRefs := false
	if opts.StopWord != "" {
		if opts.StopGlobal != "" || opts.Yield != nil {
			return nil, rep, errors.New("StopWord cannot be combined with StopGlobal or Yield")
		}
		addr, err := wordAddress(secs, opts.StopWord)
		if err != nil {
			return nil, rep, err
		}
		rep.StopWordAddr = addr
		if i := idx(secCode); i >= 0 {
			body, n, loops, skipped, refs, err := rewriteCode(secs[i].body, wordGuardFor(addr), skip)
			if err != nil {
				return nil, rep, fmt.Errorf("code section: %w", err)
			}
			secs[i].body, rep.Functions, rep.Loops, rep.SkippedLoops, dataRefs = body, n, loops, skipped, refs
		}
	} else if opts.StopGlobal != "" {
		nGlobals, err := countGlobals(secs)
		if err != nil {
			return nil, rep, err
		}
		rep.GlobalIndex = nGlobals
		guard := guardFor(nGlobals)
		var fs funcSpace
		if opts.Yield != nil {
			if opts.Yield.Every == 0 || opts.Yield.Every > 1<<31-1 {
				return nil, rep, fmt.Errorf("yield every %d loop iterations: out of range", opts.Yield.Every)
			}
			if fs, err = findYield(secs, *opts.Yield); err != nil {
				return nil, rep, err
			}
			rep.SlowFunc = fs.imported + fs.defined
			guard = yieldGuardFor(nGlobals, nGlobals+1, rep.SlowFunc)
		}
		if i := idx(secCode); i >= 0 {
			body, n, loops, skipped, refs, err := rewriteCode(secs[i].body, guard, skip)
			if err != nil {
				return nil, rep, fmt.Errorf("code section: %w", err)
			}
			secs[i].body, rep.Functions, rep.Loops, rep.SkippedLoops, dataRefs = body, n, loops, skipped, refs
		}
		if secs, err = addGlobal(secs, opts.StopGlobal, nGlobals); err != nil {
			return nil, rep, err
		}
		if y := opts.Yield; y != nil {
			if secs, err = addBudget(secs, y.Every); err != nil {
				return nil, rep, err
			}
			var typ uint32
			if secs, typ, err = typeIndex(secs, typeVoid); err != nil {
				return nil, rep, err
			}
			if secs, err = addSlowFunc(secs, typ, slowBody(nGlobals, nGlobals+1, fs.yield, y.Every)); err != nil {
				return nil, rep, err
			}
		}
	} else if i := idx(secCode); i >= 0 {
		// Walk the code anyway: merging needs to know about data references.
		_, n, _, _, refs, err := rewriteCode(secs[i].body, nil, nil)
		if err != nil {
			return nil, rep, fmt.Errorf("code section: %w", err)
		}
		rep.Functions, dataRefs = n, refs
	}

	if i := idx(secData); i >= 0 {
		segs, err := parseData(secs[i].body)
		if err != nil {
			return nil, rep, fmt.Errorf("data section: %w", err)
		}
		rep.SegmentsIn, rep.SegmentsOut = len(segs), len(segs)
		switch {
		case !opts.MergeData:
			rep.MergeSkipped = "not asked"
		case dataRefs:
			rep.MergeSkipped = "the code uses memory.init or data.drop, which name segments by index"
		default:
			merged, why := mergeSegments(segs, opts.MaxGap)
			if why == "" && len(merged) == len(segs) {
				why = "nothing to merge"
			}
			if why != "" {
				rep.MergeSkipped = why
				break
			}
			if err := checkMerge(segs, merged); err != nil {
				return nil, rep, err // a bug in the merge, never expected
			}
			secs[i].body = encodeData(merged)
			rep.SegmentsOut = len(merged)
			if j := idx(secDataCount); j >= 0 {
				secs[j].body = appendU32(nil, uint32(len(merged)))
			}
		}
	} else {
		rep.MergeSkipped = "no data section"
	}
	if j := idx(secDataCount); j >= 0 {
		r := &reader{b: secs[j].body}
		n, err := r.u32()
		if err != nil || !r.done() {
			return nil, rep, errors.New("malformed data count section")
		}
		if int(n) != rep.SegmentsOut {
			return nil, rep, fmt.Errorf("data count section says %d segments, the data section has %d", n, rep.SegmentsOut)
		}
	}

	out := append([]byte(nil), wasmHeader...)
	for _, s := range secs {
		out = append(out, s.id)
		out = appendU32(out, uint32(len(s.body)))
		out = append(out, s.body...)
	}
	return out, rep, nil
}

func splitSections(wasm []byte) ([]section, error) {
	if len(wasm) < len(wasmHeader) || !bytes.Equal(wasm[:len(wasmHeader)], wasmHeader) {
		return nil, errors.New("not a WebAssembly 1.0 binary module")
	}
	r := &reader{b: wasm, off: len(wasmHeader)}
	var secs []section
	last := 0
	for !r.done() {
		id, err := r.byte()
		if err != nil {
			return nil, err
		}
		size, err := r.u32()
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", id, err)
		}
		body, err := r.bytes(uint64(size))
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", id, err)
		}
		if id != secCustom {
			rank, ok := sectionRank[id]
			if !ok {
				return nil, fmt.Errorf("unknown section id %d", id)
			}
			if rank <= last {
				return nil, fmt.Errorf("section %d out of order or repeated", id)
			}
			last = rank
		}
		secs = append(secs, section{id, body})
	}
	return secs, nil
}

// checkCustomSections refuses custom sections the pass would make stale:
// anything that refers to code offsets (DWARF, source maps, relocations)
// or, when segments are merged, to data segment indices (the name
// section's data segment names). It allows what it knows to be unaffected.
func checkCustomSections(secs []section, merge bool) error {
	for _, s := range secs {
		if s.id != secCustom {
			continue
		}
		r := &reader{b: s.body}
		name, err := r.name()
		if err != nil {
			return fmt.Errorf("custom section: %w", err)
		}
		switch name {
		case "producers", "target_features":
		case "name":
			if err := checkNameSection(r, merge); err != nil {
				return fmt.Errorf("custom section name: %w", err)
			}
		default:
			return fmt.Errorf("custom section %q: not known to be unaffected by the pass (strip it first)", name)
		}
	}
	return nil
}

// checkNameSection allows the name subsections that index functions,
// locals, types, tables, memories, globals and element segments: none of
// those shifts. Labels (3) would shift with the guard's if block, and data
// segment names (9) would be wrong after a merge.
func checkNameSection(r *reader, merge bool) error {
	for !r.done() {
		id, err := r.byte()
		if err != nil {
			return err
		}
		size, err := r.u32()
		if err != nil {
			return err
		}
		if _, err := r.bytes(uint64(size)); err != nil {
			return err
		}
		switch {
		case id == 3:
			return errors.New("label names would be renumbered by the guard")
		case id == 9 && merge:
			return errors.New("data segment names would be wrong after merging")
		case id > 9:
			return fmt.Errorf("unknown name subsection %d", id)
		}
	}
	return nil
}

// countGlobals is the number of globals (imported and defined): the index
// the appended global gets.
func countGlobals(secs []section) (uint32, error) {
	var n uint64
	for _, s := range secs {
		switch s.id {
		case secImport:
			imported, err := countImportedGlobals(s.body)
			if err != nil {
				return 0, fmt.Errorf("import section: %w", err)
			}
			n += uint64(imported)
		case secGlobal:
			r := &reader{b: s.body}
			defined, err := r.u32()
			if err != nil {
				return 0, fmt.Errorf("global section: %w", err)
			}
			n += uint64(defined)
		}
	}
	if n >= 1<<32-1 {
		return 0, errors.New("too many globals")
	}
	return uint32(n), nil
}

func countImportedGlobals(body []byte) (uint32, error) {
	var globals uint32
	err := eachImport(body, func(_, _ string, kind byte, _ uint32) error {
		if kind == 0x03 {
			globals++
		}
		return nil
	})
	return globals, err
}

func skipLimits(r *reader) error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if flags > 1 {
		return fmt.Errorf("limits flags 0x%02x not supported (shared or 64-bit memory)", flags)
	}
	if _, err := r.u32(); err != nil {
		return err
	}
	if flags == 1 {
		_, err = r.u32()
	}
	return err
}

// addGlobal appends `(global (mut i32) (i32.const 0))` and exports it as
// name. Appending does not renumber any existing global.
func addGlobal(secs []section, name string, index uint32) ([]section, error) {
	newGlobal := []byte{0x7f, 0x01, 0x41, 0x00, opEnd} // i32, mutable, i32.const 0, end
	secs, gi := ensureSection(secs, secGlobal)
	body, err := appendToVector(secs[gi].body, newGlobal)
	if err != nil {
		return nil, fmt.Errorf("global section: %w", err)
	}
	secs[gi].body = body

	secs, ei := ensureSection(secs, secExport)
	if err := checkExportFree(secs[ei].body, name); err != nil {
		return nil, err
	}
	exp := appendName(nil, name)
	exp = append(exp, 0x03) // global
	exp = appendU32(exp, index)
	if secs[ei].body, err = appendToVector(secs[ei].body, exp); err != nil {
		return nil, fmt.Errorf("export section: %w", err)
	}
	return secs, nil
}

// ensureSection returns the index of the section id, inserting an empty one
// (a vector of 0 elements) where the format's order puts it if missing.
func ensureSection(secs []section, id byte) ([]section, int) {
	if i := slices.IndexFunc(secs, func(s section) bool { return s.id == id }); i >= 0 {
		return secs, i
	}
	at := len(secs)
	for i, s := range secs {
		if s.id != secCustom && sectionRank[s.id] > sectionRank[id] {
			at = i
			break
		}
	}
	return slices.Insert(secs, at, section{id: id, body: []byte{0}}), at
}

// appendToVector appends one encoded element to a section that is a vector.
func appendToVector(body, elem []byte) ([]byte, error) {
	r := &reader{b: body}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if n == 1<<32-1 {
		return nil, errors.New("vector full")
	}
	out := appendU32(nil, n+1)
	out = append(out, body[r.off:]...)
	return append(out, elem...), nil
}

func checkExportFree(body []byte, name string) error {
	return eachExport(body, func(got string, _ byte, _ uint32) error {
		if got == name {
			return fmt.Errorf("the module already exports %q (was the pass run twice?)", name)
		}
		return nil
	})
}

// eachExport calls fn with each export of an export section body.
func eachExport(body []byte, fn func(name string, kind byte, index uint32) error) error {
	r := &reader{b: body}
	n, err := r.u32()
	if err != nil {
		return fmt.Errorf("export section: %w", err)
	}
	for range n {
		name, err := r.name()
		if err != nil {
			return fmt.Errorf("export section: %w", err)
		}
		kind, err := r.byte()
		if err != nil {
			return fmt.Errorf("export section: %w", err)
		}
		idx, err := r.u32()
		if err != nil {
			return fmt.Errorf("export section: %w", err)
		}
		if err := fn(name, kind, idx); err != nil {
			return err
		}
	}
	return nil
}

// exportedGlobal is the index of the global the module exports as name.
func exportedGlobal(secs []section, name string) (uint32, error) {
	index, found := uint32(0), false
	for _, s := range secs {
		if s.id != secExport {
			continue
		}
		if err := eachExport(s.body, func(got string, kind byte, idx uint32) error {
			if got == name && kind == 0x03 {
				index, found = idx, true
			}
			return nil
		}); err != nil {
			return 0, err
		}
	}
	if !found {
		return 0, fmt.Errorf("the module exports no global %q", name)
	}
	return index, nil
}

// rewriteCode instruments every function body of a code section (guard nil:
// only walks them). It returns the new section body, the number of bodies
// and loops, and whether any instruction names a data segment.
func rewriteCode(body, guard []byte, skip map[uint32]bool) (out []byte, funcs, loops, skipped int, dataRefs bool, err error) {
	r := &reader{b: body}
	n, err := r.u32()
	if err != nil {
		return nil, 0, 0, 0, false, err
	}
	out = appendU32(make([]byte, 0, len(body)+len(body)/8), n)
	var fn []byte
	for i := range n {
		size, err := r.u32()
		if err != nil {
			return nil, 0, 0, 0, false, fmt.Errorf("function %d: %w", i, err)
		}
		b, err := r.bytes(uint64(size))
		if err != nil {
			return nil, 0, 0, 0, false, fmt.Errorf("function %d: %w", i, err)
		}
		var info bodyInfo
		if guard == nil || skip[i] {
			info, err = walkBody(b, func(int) {})
			fn = append(fn[:0], b...)
		} else {
			fn, info, err = instrumentBody(fn[:0], b, guard)
		}
		if err != nil {
			return nil, 0, 0, 0, false, fmt.Errorf("function %d (of the code section): %w", i, err)
		}
		if guard != nil {
			out = appendU32(out, uint32(len(fn)))
			out = append(out, fn...)
		}
		if guard != nil && skip[i] {
			skipped += info.loops
		} else {
			loops += info.loops
		}
		dataRefs = dataRefs || info.dataRefs
	}
	if !r.done() {
		return nil, 0, 0, 0, false, errors.New("trailing bytes")
	}
	if guard == nil {
		out = body
	}
	return out, int(n), loops, skipped, dataRefs, nil
}

// guardFor is the instruction sequence that guards a loop with the stop
// global at index global.
func guardFor(global uint32) []byte {
	guard := appendU32([]byte{opGlobalGet}, global)
	return append(guard, opIf, blockEmpty, opUnreachable, opEnd)
}

// CountUnguardedLoops returns how many loops of the module do not start
// with the guard of the exported global name (the module must export a
// global of that name), in either form: the stop check alone, or with the
// yield (budget global right after the stop global, slow path the last
// function). The guest's tests use it to check the committed kafig.wasm.
func CountUnguardedLoops(wasm []byte, name string) (int, error) {
	secs, err := splitSections(wasm)
	if err != nil {
		return 0, err
	}
	global, err := exportedGlobal(secs, name)
	if err != nil {
		return 0, err
	}
	guard := guardFor(global)
	var nFuncs uint32
	for _, s := range secs {
		switch s.id {
		case secImport:
			if err := eachImport(s.body, func(_, _ string, kind byte, _ uint32) error {
				if kind == 0x00 {
					nFuncs++
				}
				return nil
			}); err != nil {
				return 0, err
			}
		case secFunction:
			n, err := (&reader{b: s.body}).u32()
			if err != nil {
				return 0, err
			}
			nFuncs += n
		}
	}
	yieldGuard := yieldGuardFor(global, global+1, nFuncs-1)
	unguarded := 0
	for _, s := range secs {
		if s.id != secCode {
			continue
		}
		r := &reader{b: s.body}
		n, err := r.u32()
		if err != nil {
			return 0, err
		}
		for i := range n {
			size, err := r.u32()
			if err != nil {
				return 0, err
			}
			b, err := r.bytes(uint64(size))
			if err != nil {
				return 0, err
			}
			if _, err := walkBody(b, func(at int) {
				if !bytes.HasPrefix(b[at:], guard) && !bytes.HasPrefix(b[at:], yieldGuard) {
					unguarded++
				}
			}); err != nil {
				return 0, fmt.Errorf("function %d: %w", i, err)
			}
		}
	}
	return unguarded, nil
}
