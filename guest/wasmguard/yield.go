package wasmguard

import (
	"bytes"
	"errors"
	"fmt"
)

// The yield. An engine that runs compiled guest code on a goroutine (wazero)
// cannot preempt it: Go's garbage collector stops the world by waiting for
// every goroutine to reach a safe point, and machine code that never calls
// Go has none. A guest loop that never calls the host (inside a builtin
// that does not poll) would then freeze the whole process at the next
// collection, including the goroutine that is meant to stop it. So, with
// Options.Yield, the guard also counts loop iterations in a second global
// (the budget) and, each time Every of them have run, calls the yield
// import: a call into the host, hence a safe point. The host answers 0 to go
// on (non-zero traps, like the stop global).
//
// The guard at every loop header becomes
//
//	global.get $budget; i32.const 1; i32.sub; global.set $budget
//	global.get $budget; i32.eqz; global.get $stop; i32.or
//	if call $slow end
//
// and $slow, a function appended to the module, is
//
//	global.get $stop; if unreachable end
//	i32.const Every; global.set $budget
//	i64.const -1; call $yield; if unreachable end
//
// The import must have type (i64) -> i32; it is called with -1 (all bits
// set), which kafig's interrupt import takes as "a yield, not a poll".

// Yield names the import the guard calls every Every loop iterations.
type Yield struct {
	Module, Name string
	Every        uint32
}

// DefaultYieldEvery is the loop iterations between two yields: about a
// millisecond of a tight loop, so that a stop-the-world pause waits at most
// that long, for a call that costs a fraction of a microsecond.
const DefaultYieldEvery = 1 << 16

// YieldArg is the argument the guard passes to the yield import.
const YieldArg = ^uint64(0)

// Opcodes the guard and its slow path use.
const (
	opCall      = 0x10
	opGlobalSet = 0x24
	opI32Const  = 0x41
	opI64Const  = 0x42
	opI32Eqz    = 0x45
	opI32Sub    = 0x6b
	opI32Or     = 0x72
)

// Function type encodings.
var (
	typeVoid     = []byte{0x60, 0x00, 0x00}             // () -> ()
	typeI64ToI32 = []byte{0x60, 0x01, 0x7e, 0x01, 0x7f} // (i64) -> i32
)

// yieldGuardFor is the loop guard with a yield: stop and budget are global
// indices, slow the function index of the slow path.
func yieldGuardFor(stop, budget, slow uint32) []byte {
	g := appendU32([]byte{opGlobalGet}, budget)
	g = append(g, opI32Const, 0x01, opI32Sub, opGlobalSet)
	g = appendU32(g, budget)
	g = append(g, opGlobalGet)
	g = appendU32(g, budget)
	g = append(g, opI32Eqz, opGlobalGet)
	g = appendU32(g, stop)
	g = append(g, opI32Or, opIf, blockEmpty, opCall)
	g = appendU32(g, slow)
	return append(g, opEnd)
}

// slowBody is the body (no locals) of the guard's slow path.
func slowBody(stop, budget, yield, every uint32) []byte {
	b := []byte{0x00, opGlobalGet} // no locals
	b = appendU32(b, stop)
	b = append(b, opIf, blockEmpty, opUnreachable, opEnd, opI32Const)
	b = appendS32(b, int32(every))
	b = append(b, opGlobalSet)
	b = appendU32(b, budget)
	b = append(b, opI64Const, 0x7f, opCall) // i64.const -1
	b = appendU32(b, yield)
	return append(b, opIf, blockEmpty, opUnreachable, opEnd, opEnd)
}

// funcSpace describes the function index space of a module.
type funcSpace struct {
	imported uint32 // imported functions (they come first)
	defined  uint32 // entries of the function section
	yield    uint32 // index of the yield import
}

// findYield returns the function index space, with the index of the import
// y names, which must have type (i64) -> i32.
func findYield(secs []section, y Yield) (funcSpace, error) {
	var fs funcSpace
	var types [][]byte
	found := false
	for _, s := range secs {
		var err error
		switch s.id {
		case secType:
			types, err = parseTypes(s.body)
		case secImport:
			err = eachImport(s.body, func(module, name string, kind byte, typeIdx uint32) error {
				if kind != 0x00 {
					return nil
				}
				if module == y.Module && name == y.Name {
					if int(typeIdx) >= len(types) || !bytes.Equal(types[typeIdx], typeI64ToI32) {
						return fmt.Errorf("the yield import %s.%s must have type (i64) -> i32", module, name)
					}
					fs.yield, found = fs.imported, true
				}
				fs.imported++
				return nil
			})
		case secFunction:
			fs.defined, err = (&reader{b: s.body}).u32()
		}
		if err != nil {
			return fs, err
		}
	}
	if !found {
		return fs, fmt.Errorf("the module imports no function %s.%s to yield with", y.Module, y.Name)
	}
	return fs, nil
}

// parseTypes returns each function type of a type section, encoded.
func parseTypes(body []byte) ([][]byte, error) {
	r := &reader{b: body}
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	types := make([][]byte, 0, n)
	for range n {
		start := r.off
		if form, err := r.byte(); err != nil || form != 0x60 {
			return nil, errors.New("type section: only function types are supported")
		}
		for range 2 { // params, results
			k, err := r.u32()
			if err != nil {
				return nil, err
			}
			for range k {
				b, err := r.byte()
				if err != nil {
					return nil, err
				}
				if !isValType(b) {
					return nil, fmt.Errorf("type section: value type 0x%02x not supported", b)
				}
			}
		}
		types = append(types, body[start:r.off])
	}
	if !r.done() {
		return nil, errors.New("type section: trailing bytes")
	}
	return types, nil
}

// eachImport calls fn for every import, with the type index of function
// imports (kind 0).
func eachImport(body []byte, fn func(module, name string, kind byte, typeIdx uint32) error) error {
	r := &reader{b: body}
	n, err := r.u32()
	if err != nil {
		return err
	}
	for range n {
		module, err := r.name()
		if err != nil {
			return err
		}
		name, err := r.name()
		if err != nil {
			return err
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		var typeIdx uint32
		switch kind {
		case 0x00:
			typeIdx, err = r.u32()
		case 0x01:
			if _, err = r.byte(); err == nil {
				err = skipLimits(r)
			}
		case 0x02:
			err = skipLimits(r)
		case 0x03:
			_, err = r.bytes(2)
		default:
			return fmt.Errorf("import kind 0x%02x not supported", kind)
		}
		if err != nil {
			return err
		}
		if err := fn(module, name, kind, typeIdx); err != nil {
			return err
		}
	}
	if !r.done() {
		return errors.New("import section: trailing bytes")
	}
	return nil
}

// typeIndex returns the index of the function type enc, appending it to the
// type section if it is not there (appending renumbers nothing).
func typeIndex(secs []section, enc []byte) ([]section, uint32, error) {
	secs, ti := ensureSection(secs, secType)
	types, err := parseTypes(secs[ti].body)
	if err != nil {
		return nil, 0, err
	}
	for i, t := range types {
		if bytes.Equal(t, enc) {
			return secs, uint32(i), nil
		}
	}
	if secs[ti].body, err = appendToVector(secs[ti].body, enc); err != nil {
		return nil, 0, fmt.Errorf("type section: %w", err)
	}
	return secs, uint32(len(types)), nil
}

// addSlowFunc appends the slow path as the last function of the module.
func addSlowFunc(secs []section, typ uint32, body []byte) ([]section, error) {
	secs, fi := ensureSection(secs, secFunction)
	var err error
	if secs[fi].body, err = appendToVector(secs[fi].body, appendU32(nil, typ)); err != nil {
		return nil, fmt.Errorf("function section: %w", err)
	}
	secs, ci := ensureSection(secs, secCode)
	if secs[ci].body, err = appendToVector(secs[ci].body, append(appendU32(nil, uint32(len(body))), body...)); err != nil {
		return nil, fmt.Errorf("code section: %w", err)
	}
	return secs, nil
}

// addBudget appends `(global (mut i32) (i32.const every))`, not exported.
func addBudget(secs []section, every uint32) ([]section, error) {
	g := []byte{0x7f, 0x01, opI32Const}
	g = appendS32(g, int32(every))
	g = append(g, opEnd)
	secs, gi := ensureSection(secs, secGlobal)
	var err error
	if secs[gi].body, err = appendToVector(secs[gi].body, g); err != nil {
		return nil, fmt.Errorf("global section: %w", err)
	}
	return secs, nil
}
