package wasmguard

import "fmt"

// The instruction decoder. It knows exactly the instruction set of the
// features the guest is built with (the MVP, sign extension, non-trapping
// float-to-int, bulk memory, reference types, multi-value block types) and
// fails on any other opcode: inserting code into a body it cannot walk
// byte for byte would corrupt it silently.

// Opcodes the decoder treats specially.
const (
	opUnreachable = 0x00
	opBlock       = 0x02
	opLoop        = 0x03
	opIf          = 0x04
	opElse        = 0x05
	opEnd         = 0x0b
	opGlobalGet   = 0x23
	opPrefixFC    = 0xfc
	blockEmpty    = 0x40
)

// immKind is the shape of an opcode's immediates.
type immKind uint8

const (
	immUnknown   immKind = iota // not an opcode the decoder knows
	immNone                     // no immediate
	immBlockType                // block, loop, if
	immU32                      // one index (label, function, local, global, table)
	immU32x2                    // two indices (call_indirect: type, table)
	immBrTable                  // vec(label) label
	immSelectT                  // vec(valtype)
	immMemArg                   // align offset
	immMemIdx                   // memory index, which must be 0
	immI32                      // signed LEB128, 32 bits
	immI64                      // signed LEB128, 64 bits
	immF32                      // 4 bytes
	immF64                      // 8 bytes
	immRefType                  // one reference type
)

// opcodes maps each single-byte opcode to its immediates.
var opcodes = func() (t [256]immKind) {
	set := func(lo, hi byte, k immKind) {
		for op := int(lo); op <= int(hi); op++ {
			t[op] = k
		}
	}
	set(0x00, 0x01, immNone)      // unreachable nop
	set(0x02, 0x04, immBlockType) // block loop if
	set(0x05, 0x05, immNone)      // else
	set(0x0b, 0x0b, immNone)      // end
	set(0x0c, 0x0d, immU32)       // br br_if
	set(0x0e, 0x0e, immBrTable)   // br_table
	set(0x0f, 0x0f, immNone)      // return
	set(0x10, 0x10, immU32)       // call
	set(0x11, 0x11, immU32x2)     // call_indirect
	set(0x1a, 0x1b, immNone)      // drop select
	set(0x1c, 0x1c, immSelectT)   // select t*
	set(0x20, 0x24, immU32)       // local.get/set/tee global.get/set
	set(0x25, 0x26, immU32)       // table.get table.set
	set(0x28, 0x3e, immMemArg)    // loads and stores
	set(0x3f, 0x40, immMemIdx)    // memory.size memory.grow
	set(0x41, 0x41, immI32)       // i32.const
	set(0x42, 0x42, immI64)       // i64.const
	set(0x43, 0x43, immF32)       // f32.const
	set(0x44, 0x44, immF64)       // f64.const
	set(0x45, 0xbf, immNone)      // numeric (MVP)
	set(0xc0, 0xc4, immNone)      // sign extension
	set(0xd0, 0xd0, immRefType)   // ref.null
	set(0xd1, 0xd1, immNone)      // ref.is_null
	set(0xd2, 0xd2, immU32)       // ref.func
	return t
}()

// fcImmediates lists the immediates of the 0xFC-prefixed instructions the
// decoder knows, by sub-opcode.
var fcImmediates = map[uint32][]immKind{
	0:  nil,                 // i32.trunc_sat_f32_s
	1:  nil,                 // i32.trunc_sat_f32_u
	2:  nil,                 // i32.trunc_sat_f64_s
	3:  nil,                 // i32.trunc_sat_f64_u
	4:  nil,                 // i64.trunc_sat_f32_s
	5:  nil,                 // i64.trunc_sat_f32_u
	6:  nil,                 // i64.trunc_sat_f64_s
	7:  nil,                 // i64.trunc_sat_f64_u
	8:  {immU32, immMemIdx}, // memory.init data mem
	9:  {immU32},            // data.drop data
	10: {immMemIdx, immMemIdx},
	11: {immMemIdx},      // memory.fill mem
	12: {immU32, immU32}, // table.init elem table
	13: {immU32},         // elem.drop elem
	14: {immU32, immU32}, // table.copy dst src
	15: {immU32},         // table.grow
	16: {immU32},         // table.size
	17: {immU32},         // table.fill
}

// The 0xFC sub-opcodes that name a data segment.
const (
	fcMemoryInit = 8
	fcDataDrop   = 9
)

func isValType(b byte) bool {
	switch b {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x70, 0x6f: // i32 i64 f32 f64 funcref externref
		return true
	}
	return false
}

// bodyInfo is what instrumenting a function body found.
type bodyInfo struct {
	loops    int  // loop instructions, each now guarded
	dataRefs bool // memory.init or data.drop: data segment indices are in use
}

// instrumentBody appends to out the function body (locals and expression,
// without its size prefix) with guard inserted after the block type of
// every loop instruction. Everything else is copied byte for byte.
func instrumentBody(out, body, guard []byte) ([]byte, bodyInfo, error) {
	copied := 0 // body[:copied] is in out already
	info, err := walkBody(body, func(at int) {
		out = append(out, body[copied:at]...)
		out = append(out, guard...)
		copied = at
	})
	if err != nil {
		return nil, info, err
	}
	return append(out, body[copied:]...), info, nil
}

// walkBody decodes a function body (locals and expression) and calls
// onLoop with the offset just after the block type of each loop.
func walkBody(body []byte, onLoop func(at int)) (bodyInfo, error) {
	var info bodyInfo
	r := &reader{b: body}
	groups, err := r.u32()
	if err != nil {
		return info, fmt.Errorf("locals: %w", err)
	}
	for range groups {
		if _, err := r.u32(); err != nil {
			return info, fmt.Errorf("locals: %w", err)
		}
		t, err := r.byte()
		if err != nil {
			return info, fmt.Errorf("locals: %w", err)
		}
		if !isValType(t) {
			return info, fmt.Errorf("locals: unknown value type 0x%02x", t)
		}
	}

	depth := 1 // the body is a block that its last end closes
	for depth > 0 {
		at := r.off
		op, err := r.byte()
		if err != nil {
			return info, fmt.Errorf("expression: %w", err)
		}
		switch op {
		case opBlock, opLoop, opIf:
			depth++
		case opEnd:
			depth--
		case opPrefixFC:
			sub, err := r.u32()
			if err != nil {
				return info, fmt.Errorf("at %d: 0xfc: %w", at, err)
			}
			imms, ok := fcImmediates[sub]
			if !ok {
				return info, fmt.Errorf("at %d: unknown instruction 0xfc %d", at, sub)
			}
			if sub == fcMemoryInit || sub == fcDataDrop {
				info.dataRefs = true
			}
			for _, k := range imms {
				if err := skipImmediate(r, k); err != nil {
					return info, fmt.Errorf("at %d: 0xfc %d: %w", at, sub, err)
				}
			}
			continue
		}
		k := opcodes[op]
		if k == immUnknown {
			return info, fmt.Errorf("at %d: unknown opcode 0x%02x", at, op)
		}
		if err := skipImmediate(r, k); err != nil {
			return info, fmt.Errorf("at %d: opcode 0x%02x: %w", at, op, err)
		}
		if op == opLoop {
			onLoop(r.off)
			info.loops++
		}
	}
	if !r.done() {
		return info, fmt.Errorf("%d bytes after the final end", len(body)-r.off)
	}
	return info, nil
}

// skipImmediate reads (and checks) one immediate of kind k.
func skipImmediate(r *reader, k immKind) error {
	var err error
	switch k {
	case immNone:
	case immBlockType:
		var c byte
		if c, err = r.byte(); err != nil {
			return err
		}
		if c == blockEmpty || isValType(c) {
			return nil
		}
		r.off-- // a type index, as a positive signed LEB128 of 33 bits
		var idx int64
		if idx, err = r.sleb(33); err == nil && idx < 0 {
			err = fmt.Errorf("bad block type 0x%02x", c)
		}
	case immU32:
		_, err = r.u32()
	case immU32x2:
		if _, err = r.u32(); err == nil {
			_, err = r.u32()
		}
	case immBrTable:
		var n uint32
		if n, err = r.u32(); err != nil {
			return err
		}
		for i := uint64(0); i <= uint64(n) && err == nil; i++ { // n labels and the default
			_, err = r.u32()
		}
	case immSelectT:
		var n uint32
		if n, err = r.u32(); err != nil {
			return err
		}
		for range n {
			var t byte
			if t, err = r.byte(); err != nil {
				return err
			}
			if !isValType(t) {
				return fmt.Errorf("unknown value type 0x%02x", t)
			}
		}
	case immMemArg:
		var align uint32
		if align, err = r.u32(); err != nil {
			return err
		}
		if align&0x40 != 0 { // multi-memory: a memory index follows
			return fmt.Errorf("memarg with a memory index (multi-memory is not supported)")
		}
		_, err = r.u32()
	case immMemIdx:
		var c byte
		if c, err = r.byte(); err == nil && c != 0 {
			err = fmt.Errorf("memory index byte 0x%02x (only memory 0 is supported)", c)
		}
	case immI32:
		_, err = r.sleb(32)
	case immI64:
		_, err = r.sleb(64)
	case immF32:
		_, err = r.bytes(4)
	case immF64:
		_, err = r.bytes(8)
	case immRefType:
		var c byte
		if c, err = r.byte(); err == nil && c != 0x70 && c != 0x6f {
			err = fmt.Errorf("unknown reference type 0x%02x", c)
		}
	default:
		err = fmt.Errorf("immediate kind %d", k)
	}
	return err
}
