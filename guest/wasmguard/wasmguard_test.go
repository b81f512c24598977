package wasmguard

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// mod builds small modules by hand: sections in order, each given as its
// body bytes.
type mod struct {
	secs []section
}

func (m *mod) add(id byte, body ...byte) *mod {
	m.secs = append(m.secs, section{id, body})
	return m
}

func (m *mod) custom(name string, body ...byte) *mod {
	return m.add(secCustom, append(appendName(nil, name), body...)...)
}

func (m *mod) bytes() []byte {
	out := append([]byte(nil), wasmHeader...)
	for _, s := range m.secs {
		out = append(out, s.id)
		out = appendU32(out, uint32(len(s.body)))
		out = append(out, s.body...)
	}
	return out
}

// vec encodes a vector of already-encoded elements.
func vec(elems ...[]byte) []byte {
	out := appendU32(nil, uint32(len(elems)))
	for _, e := range elems {
		out = append(out, e...)
	}
	return out
}

// code encodes a code section entry: locals, then the expression.
func code(locals []byte, expr ...byte) []byte {
	body := append(append([]byte(nil), locals...), expr...)
	return append(appendU32(nil, uint32(len(body))), body...)
}

func activeSeg(off int32, data ...byte) []byte {
	b := []byte{0x00, 0x41}
	b = appendS32(b, off)
	b = append(b, opEnd)
	b = appendU32(b, uint32(len(data)))
	return append(b, data...)
}

func passiveSeg(data ...byte) []byte {
	return append(append([]byte{0x01}, appendU32(nil, uint32(len(data)))...), data...)
}

var noLocals = []byte{0x00}

// loopModule: one global (so the stop global gets index 1), an exported
// function "spin" that loops until its counter reaches the i32 argument
// (0: forever), returning the count, and "nested" with two loops in one body.
func loopModule() *mod {
	m := &mod{}
	m.add(secType, vec([]byte{0x60, 0x01, 0x7f, 0x01, 0x7f})...)                // (i32) -> i32
	m.add(secFunction, vec([]byte{0x00}, []byte{0x00})...)                      // two functions of type 0
	m.add(secMemory, vec([]byte{0x00, 0x01})...)                                // one page
	m.add(secGlobal, vec([]byte{0x7f, 0x01, 0x41, 0x80, 0x80, 0x04, opEnd})...) // sp = 65536
	m.add(secExport, vec(append(appendName(nil, "spin"), 0x00, 0x00), append(appendName(nil, "nested"), 0x00, 0x01))...)
	spin := code([]byte{0x01, 0x01, 0x7f}, // one i32 local
		0x03, blockEmpty, // loop
		0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x01, // local.get 1 i32.const 1 i32.add local.tee 1
		0x20, 0x00, 0x47, 0x0d, 0x00, // local.get 0 i32.ne br_if 0
		opEnd,
		0x20, 0x01, opEnd)
	nested := code(noLocals,
		0x02, 0x7f, // block (result i32)
		0x03, 0x7f, 0x41, 0x07, opEnd, // loop (result i32) i32.const 7 end
		0x03, blockEmpty, opEnd, // loop end
		opEnd,
		opEnd)
	m.add(secCode, vec(spin, nested)...)
	return m
}

func apply(t *testing.T, wasm []byte, opts Options) ([]byte, Report) {
	t.Helper()
	out, rep, err := Apply(wasm, opts)
	require.NoError(t, err)
	validate(t, out)
	return out, rep
}

// validate checks a module with wazero (compile) and, when installed,
// wabt's wasm-validate.
func validate(t *testing.T, wasm []byte) {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	_, err := r.CompileModule(ctx, wasm)
	require.NoError(t, err, "wazero refuses the output")
	if path, err := exec.LookPath("wasm-validate"); err == nil {
		f := filepath.Join(t.TempDir(), "out.wasm")
		require.NoError(t, os.WriteFile(f, wasm, 0o644))
		out, err := exec.Command(path, f).CombinedOutput()
		require.NoError(t, err, "wasm-validate: %s", out)
	}
}

func TestGuardsEveryLoop(t *testing.T) {
	in := loopModule().bytes()
	out, rep := apply(t, in, Options{StopGlobal: "stop"})
	assert.Equal(t, 2, rep.Functions)
	assert.Equal(t, 3, rep.Loops)
	assert.EqualValues(t, 1, rep.GlobalIndex)
	guard := []byte{opGlobalGet, 0x01, opIf, blockEmpty, opUnreachable, opEnd}
	assert.Equal(t, 3, bytes.Count(out, append([]byte{opLoop, blockEmpty}, guard...))+
		bytes.Count(out, append([]byte{opLoop, 0x7f}, guard...)))
	assert.Equal(t, len(in)+3*len(guard)+len("stop")+3+5, len(out), "3 guards, an export, a global")

	// The same input gives the same bytes.
	again, _ := apply(t, in, Options{StopGlobal: "stop"})
	assert.Equal(t, out, again)

	// Running it twice is refused.
	_, _, err := Apply(out, Options{StopGlobal: "stop"})
	require.ErrorContains(t, err, "already exports")
}

// TestGuardStopsARunningLoop runs the guarded module with wazero: the loop
// runs normally, and setting the global from another goroutine ends an
// endless one with a trap.
func TestGuardStopsARunningLoop(t *testing.T) {
	out, _ := apply(t, loopModule().bytes(), Options{StopGlobal: "stop"})
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	inst, err := r.Instantiate(ctx, out)
	require.NoError(t, err)
	res, err := inst.ExportedFunction("spin").Call(ctx, 1000)
	require.NoError(t, err)
	assert.EqualValues(t, 1000, res[0])
	res, err = inst.ExportedFunction("nested").Call(ctx, 0)
	require.NoError(t, err)
	assert.EqualValues(t, 7, res[0])

	g, ok := inst.ExportedGlobal("stop").(api.MutableGlobal)
	require.True(t, ok, "the stop global is exported and mutable")
	assert.EqualValues(t, 0, g.Get())
	stopsSpin(t, inst, func() { g.Set(1) })
}

// stopsSpin runs inst's spin(0), which loops forever, raises the stop with
// stop once the loop runs, and checks that the guard ends it with a trap.
func stopsSpin(t *testing.T, inst api.Module, stop func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := inst.ExportedFunction("spin").Call(context.Background(), 0) // forever
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the loop ended before the stop: %v", err)
	default:
	}
	stop()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "unreachable")
	case <-time.After(10 * time.Second):
		t.Fatal("the guard did not stop the loop")
	}
}

func TestAddsGlobalAndExportSections(t *testing.T) {
	// A module with neither a global nor an export section, and an
	// imported global that shifts the new global's index.
	m := &mod{}
	m.add(secType, vec([]byte{0x60, 0x00, 0x00})...)
	m.add(secImport, vec(append(append(appendName(nil, "env"), appendName(nil, "g")...), 0x03, 0x7f, 0x00))...)
	m.add(secFunction, vec([]byte{0x00})...)
	m.add(secCode, vec(code(noLocals, 0x03, blockEmpty, opEnd, opEnd))...)
	m.custom("producers", 0x00)
	out, rep, err := Apply(m.bytes(), Options{StopGlobal: "stop"})
	require.NoError(t, err)
	assert.EqualValues(t, 1, rep.GlobalIndex)
	assert.Equal(t, 1, rep.Loops)
	secs, err := splitSections(out)
	require.NoError(t, err)
	var ids []byte
	for _, s := range secs {
		ids = append(ids, s.id)
	}
	assert.Equal(t, []byte{secType, secImport, secFunction, secGlobal, secExport, secCode, secCustom}, ids)
	assert.Contains(t, string(out), "stop")

	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	_, err = r.CompileModule(ctx, out)
	require.NoError(t, err)
}

func TestUnknownOpcodesFail(t *testing.T) {
	for name, expr := range map[string][]byte{
		"simd":         {0xfd, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1a, opEnd},
		"atomics":      {0xfe, 0x03, 0x00, opEnd},
		"tail call":    {0x12, 0x00, opEnd},
		"exceptions":   {0x06, blockEmpty, opEnd, opEnd},
		"fc unknown":   {0xfc, 0x12, 0x00, opEnd},
		"gap opcode":   {0xc5, opEnd},
		"multi-memory": {0x41, 0x00, 0x28, 0x42, 0x01, 0x00, 0x1a, opEnd},
		"truncated":    {0x41},
		"no end":       {0x01},
		"after end":    {opEnd, 0x01},
	} {
		t.Run(name, func(t *testing.T) {
			m := &mod{}
			m.add(secType, vec([]byte{0x60, 0x00, 0x00})...)
			m.add(secFunction, vec([]byte{0x00})...)
			m.add(secCode, vec(code(noLocals, expr...))...)
			_, _, err := Apply(m.bytes(), Options{StopGlobal: "stop", MergeData: true})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "function 0")
		})
	}
}

// TestEveryKnownInstruction decodes a body holding one of each instruction
// shape the decoder knows and checks wazero accepts the result.
func TestEveryKnownInstruction(t *testing.T) {
	m := &mod{}
	m.add(secType, vec([]byte{0x60, 0x00, 0x00}, []byte{0x60, 0x01, 0x7f, 0x01, 0x7f})...)
	m.add(secFunction, vec([]byte{0x00})...)
	m.add(secTable, vec([]byte{0x70, 0x00, 0x01})...)
	m.add(secMemory, vec([]byte{0x00, 0x01})...)
	m.add(secGlobal, vec([]byte{0x7e, 0x01, 0x42, 0x00, opEnd})...)
	m.add(secElement, vec([]byte{0x01, 0x00, 0x01, 0x00})...) // passive, funcref, [func 0]
	m.add(secDataCount, 0x01)
	expr := []byte{
		0x01,                          // nop
		0x02, 0x40, 0x0c, 0x00, opEnd, // block br 0 end
		0x41, 0x05, 0x03, 0x01, 0x41, 0x00, 0x0d, 0x00, opEnd, 0x1a, // i32.const 5 loop (type 1: i32 -> i32) i32.const 0 br_if 0 end drop
		0x41, 0x00, 0x04, 0x40, 0x05, opEnd, // i32.const 0 if else end
		0x02, 0x40, 0x41, 0x00, 0x0e, 0x01, 0x00, 0x00, opEnd, // block i32.const 0 br_table 0 0 end
		0x41, 0x00, 0x11, 0x00, 0x00, // i32.const 0 call_indirect type 0 table 0
		0x10, 0x00, // call 0
		0x41, 0x01, 0x41, 0x02, 0x41, 0x03, 0x1b, 0x1a, // select drop
		0x41, 0x01, 0x41, 0x02, 0x41, 0x03, 0x1c, 0x01, 0x7f, 0x1a, // select (i32) drop
		0x23, 0x00, 0x24, 0x00, // global.get 0 global.set 0
		0x41, 0x00, 0x28, 0x02, 0x10, 0x1a, // i32.load align=2 offset=16 drop
		0x41, 0x00, 0x42, 0x7f, 0x37, 0x03, 0x00, // i64.store
		0x3f, 0x00, 0x40, 0x00, 0x1a, // memory.size memory.grow drop
		0x43, 0x00, 0x00, 0x80, 0x3f, 0xfc, 0x00, 0x1a, // f32.const 1 i32.trunc_sat_f32_s drop
		0x44, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0xfc, 0x07, 0x1a, // f64.const 1 i64.trunc_sat_f64_u drop
		0x41, 0x7f, 0xc0, 0xac, 0x1a, // i32.extend8_s i64.extend_i32_s drop
		0x42, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f, 0x1a, // i64.const min drop
		0x41, 0x00, 0x41, 0x00, 0x41, 0x00, 0xfc, 0x08, 0x00, 0x00, // memory.init 0 0
		0xfc, 0x09, 0x00, // data.drop 0
		0x41, 0x00, 0x41, 0x00, 0x41, 0x00, 0xfc, 0x0a, 0x00, 0x00, // memory.copy
		0x41, 0x00, 0x41, 0x00, 0x41, 0x00, 0xfc, 0x0b, 0x00, // memory.fill
		0x41, 0x00, 0x41, 0x00, 0x41, 0x01, 0xfc, 0x0c, 0x00, 0x00, // table.init 0 0
		0xfc, 0x0d, 0x00, // elem.drop 0
		0x41, 0x00, 0x41, 0x00, 0x41, 0x00, 0xfc, 0x0e, 0x00, 0x00, // table.copy 0 0
		0xd0, 0x70, 0x41, 0x00, 0xfc, 0x0f, 0x00, 0x1a, // ref.null func i32.const 0 table.grow 0 drop
		0xfc, 0x10, 0x00, 0x1a, // table.size 0 drop
		0x41, 0x00, 0xd2, 0x00, 0x41, 0x00, 0xfc, 0x11, 0x00, // i32.const 0 ref.func 0 i32.const 0 table.fill 0
		0x41, 0x00, 0x25, 0x00, 0xd1, 0x1a, // table.get 0 ref.is_null drop
		0x41, 0x00, 0xd2, 0x00, 0x26, 0x00, // table.set 0
		0x0f, // return
		0x00, // unreachable
		opEnd,
	}
	m.add(secCode, vec(code([]byte{0x01, 0x02, 0x7e}, expr...))...)
	m.add(secData, vec(passiveSeg(1, 2, 3))...)
	out, rep := apply(t, m.bytes(), Options{StopGlobal: "stop", MergeData: true})
	assert.Equal(t, 1, rep.Loops)
	assert.Contains(t, rep.MergeSkipped, "memory.init")
	assert.Equal(t, 1, rep.SegmentsOut)
	assert.NotEmpty(t, out)
}

func dataModule(segs ...[]byte) *mod {
	m := &mod{}
	m.add(secMemory, vec([]byte{0x00, 0x02})...)
	m.add(secDataCount, appendU32(nil, uint32(len(segs)))...)
	m.add(secData, vec(segs...)...)
	return m
}

func TestMergeData(t *testing.T) {
	in := dataModule(
		activeSeg(5000, 9, 9),
		passiveSeg(7, 7),
		activeSeg(10, 1, 2, 3),
		activeSeg(16, 4),        // 3 bytes after the first: merged
		activeSeg(16+1+4, 5, 6), // 4 bytes after: merged with max gap 4
		activeSeg(30, 8),        // 7 bytes after: not merged
		activeSeg(31),           // empty, adjacent
		activeSeg(-1, 0xaa),     // the last byte of a 4 GiB memory: unsigned offset
	)
	out, rep := apply(t, dataModule().bytes(), Options{MergeData: true, MaxGap: 4})
	assert.Equal(t, 0, rep.SegmentsOut)
	assert.NotEmpty(t, out)

	got, rep, err := Apply(in.bytes(), Options{MergeData: true, MaxGap: 4})
	require.NoError(t, err)
	assert.Equal(t, 8, rep.SegmentsIn)
	assert.Equal(t, 5, rep.SegmentsOut)
	assert.Empty(t, rep.MergeSkipped)
	want := dataModule(
		activeSeg(10, 1, 2, 3, 0, 0, 0, 4, 0, 0, 0, 0, 5, 6),
		activeSeg(30, 8),
		activeSeg(5000, 9, 9),
		activeSeg(-1, 0xaa),
		passiveSeg(7, 7),
	)
	assert.Equal(t, want.bytes(), got)

	// Without the memory size check, the module still compiles; with a
	// memory big enough for the last segment it instantiates.
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	_, err = r.CompileModule(ctx, got)
	require.NoError(t, err)

	// The default gap merges everything but the segment at 4 GiB - 1.
	got, rep, err = Apply(in.bytes(), Options{MergeData: true, MaxGap: DefaultMaxGap})
	require.NoError(t, err)
	assert.Equal(t, 4, rep.SegmentsOut, "3 active, 1 passive")
	assert.NotEmpty(t, got)
}

func TestMergeDataInstantiatesTheSameMemory(t *testing.T) {
	var segs [][]byte
	for i := range 200 {
		off := int32(i * 37 % 200 * 97) // a permutation of 0, 97, 194...: out of order, never overlapping
		segs = append(segs, activeSeg(off, byte(i), byte(i+1), 0, byte(i+2)))
	}
	m := &mod{}
	m.add(secMemory, vec([]byte{0x00, 0x01})...)
	m.add(secExport, vec(append(appendName(nil, "mem"), 0x02, 0x00))...)
	m.add(secDataCount, appendU32(nil, 200)...)
	m.add(secData, vec(segs...)...)
	in := m.bytes()
	out, rep := apply(t, in, Options{MergeData: true, MaxGap: 64})
	assert.Equal(t, 200, rep.SegmentsOut, "97 bytes apart: nothing to merge at 64")
	assert.Contains(t, rep.MergeSkipped, "nothing to merge")
	assert.Equal(t, in, out, "the segments are left in their order")
	out, rep = apply(t, in, Options{MergeData: true, MaxGap: 93})
	assert.Equal(t, 1, rep.SegmentsOut)
	mem := func(wasm []byte) []byte {
		ctx := context.Background()
		r := wazero.NewRuntime(ctx)
		defer r.Close(ctx)
		inst, err := r.Instantiate(ctx, wasm)
		require.NoError(t, err)
		b, ok := inst.Memory().Read(0, inst.Memory().Size())
		require.True(t, ok)
		return bytes.Clone(b)
	}
	assert.Equal(t, mem(in), mem(out))
}

func TestMergeSkipped(t *testing.T) {
	// An offset from a global: the merge is skipped, not guessed.
	m := &mod{}
	m.add(secImport, vec(append(append(appendName(nil, "env"), appendName(nil, "g")...), 0x03, 0x7f, 0x00))...)
	m.add(secMemory, vec([]byte{0x00, 0x01})...)
	m.add(secData, vec(activeSeg(0, 1), []byte{0x00, 0x23, 0x00, opEnd, 0x01, 0x02}, activeSeg(4, 3))...)
	out, rep := apply(t, m.bytes(), Options{MergeData: true, MaxGap: 1024})
	assert.Contains(t, rep.MergeSkipped, "not an i32.const")
	assert.Equal(t, 3, rep.SegmentsOut)
	assert.Equal(t, m.bytes(), out, "nothing to do: the module is copied as is")

	// Overlapping segments: the later one wins, so their order matters.
	m = dataModule(activeSeg(0, 1, 2, 3), activeSeg(2, 4))
	out, rep = apply(t, m.bytes(), Options{MergeData: true, MaxGap: 1024})
	assert.Contains(t, rep.MergeSkipped, "overlap")
	assert.Equal(t, m.bytes(), out)
}

func TestCustomSections(t *testing.T) {
	base := func() *mod {
		m := &mod{}
		m.add(secMemory, vec([]byte{0x00, 0x01})...)
		m.add(secData, vec(activeSeg(0, 1))...)
		return m
	}
	// Function names are fine.
	_, _, err := Apply(base().custom("name", 0x01, 0x01, 0x00).bytes(), Options{StopGlobal: "s", MergeData: true})
	require.NoError(t, err)
	// Data segment names only without a merge.
	_, _, err = Apply(base().custom("name", 0x09, 0x01, 0x00).bytes(), Options{StopGlobal: "s", MergeData: true})
	require.ErrorContains(t, err, "data segment names")
	_, _, err = Apply(base().custom("name", 0x09, 0x01, 0x00).bytes(), Options{StopGlobal: "s"})
	require.NoError(t, err)
	// Label names, debug information: refused.
	_, _, err = Apply(base().custom("name", 0x03, 0x01, 0x00).bytes(), Options{StopGlobal: "s"})
	require.ErrorContains(t, err, "label")
	_, _, err = Apply(base().custom(".debug_info", 0x00).bytes(), Options{StopGlobal: "s"})
	require.ErrorContains(t, err, ".debug_info")
}

func TestMalformedInput(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":        nil,
		"not wasm":     []byte("\x00asm\x02\x00\x00\x00"),
		"truncated":    append(append([]byte(nil), wasmHeader...), secType, 0x05, 0x00),
		"out of order": (&mod{}).add(secExport, 0x00).add(secType, 0x00).bytes(),
		"unknown id":   (&mod{}).add(42, 0x00).bytes(),
		"data count":   dataModule(activeSeg(0, 1)).add(secData, 0x00).bytes(),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Apply(in, Options{StopGlobal: "stop", MergeData: true})
			require.Error(t, err)
		})
	}
	// A data count that disagrees with the data section.
	m := &mod{}
	m.add(secMemory, vec([]byte{0x00, 0x01})...)
	m.add(secDataCount, 0x02)
	m.add(secData, vec(activeSeg(0, 1))...)
	_, _, err := Apply(m.bytes(), Options{})
	require.ErrorContains(t, err, "data count")
}

func TestLEB(t *testing.T) {
	for _, v := range []int32{0, 1, -1, 63, 64, -64, -65, 1 << 30, -1 << 31, 1<<31 - 1} {
		r := &reader{b: appendS32(nil, v)}
		got, err := r.sleb(32)
		require.NoError(t, err)
		assert.EqualValues(t, v, got)
		assert.True(t, r.done())
	}
	for _, v := range []uint32{0, 1, 127, 128, 1<<32 - 1} {
		r := &reader{b: appendU32(nil, v)}
		got, err := r.u32()
		require.NoError(t, err)
		assert.Equal(t, v, got)
	}
	for _, bad := range [][]byte{
		{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, // too long
		{0xff, 0xff, 0xff, 0xff, 0x1f},       // 35 bits
	} {
		_, err := (&reader{b: bad}).u32()
		require.Error(t, err)
	}
	_, err := (&reader{b: []byte{0xff, 0xff, 0xff, 0xff, 0x4f}}).sleb(32)
	require.Error(t, err)
	_, err = (&reader{b: []byte{0x80}}).u32()
	require.True(t, errors.Is(err, errTruncated))
}

// TestRealGuest runs the pass over the committed guest (already guarded
// by build.sh) with another global name: the result must validate, run the
// same, and be deterministic. It also checks that the committed guest has
// a guard after every loop.
func TestRealGuest(t *testing.T) {
	wasm, err := os.ReadFile("../kafig.wasm")
	require.NoError(t, err)
	_, err = CountUnguardedLoops(wasm, DefaultStopGlobal)
	require.Error(t, err, "the committed kafig.wasm has no guard: the backends add theirs")

	out, rep := apply(t, wasm, Options{StopGlobal: "test_stop", MergeData: true, MaxGap: DefaultMaxGap})
	assert.Greater(t, rep.Loops, 1000)
	assert.Zero(t, rep.SkippedLoops)
	assert.Greater(t, rep.Functions, 500)
	assert.Equal(t, rep.SegmentsIn, rep.SegmentsOut, "the committed guest's segments are merged already")
	again, _, err := Apply(wasm, Options{StopGlobal: "test_stop", MergeData: true, MaxGap: DefaultMaxGap})
	require.NoError(t, err)
	assert.Equal(t, out, again)
	loops, err := CountUnguardedLoops(out, "test_stop")
	require.NoError(t, err)
	assert.Zero(t, loops)
	_, err = CountUnguardedLoops(out, "nonexistent")
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "nonexistent"))
}

// yieldModule: an import env.y of type (i64) -> i32 and "spin" as in
// loopModule, so the pass can make the guard yield.
func yieldModule() *mod {
	m := &mod{}
	m.add(secType, vec([]byte{0x60, 0x01, 0x7f, 0x01, 0x7f}, typeI64ToI32)...)
	m.add(secImport, vec(append(append(appendName(nil, "env"), appendName(nil, "y")...), 0x00, 0x01))...)
	m.add(secFunction, vec([]byte{0x00})...)
	m.add(secExport, vec(append(appendName(nil, "spin"), 0x00, 0x01))...)
	spin := code([]byte{0x01, 0x01, 0x7f},
		0x03, blockEmpty,
		0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x01,
		0x20, 0x00, 0x47, 0x0d, 0x00,
		opEnd,
		0x20, 0x01, opEnd)
	m.add(secCode, vec(spin)...)
	return m
}

// TestYield: with Options.Yield the guard calls the import every Every
// iterations with YieldArg (a safe point for a Go host even in a loop that
// never calls it), a non-zero answer traps, the stop global still works,
// and a garbage collection started while the loop runs completes.
func TestYield(t *testing.T) {
	opts := Options{StopGlobal: "stop", Yield: &Yield{Module: "env", Name: "y", Every: 100}}
	out, rep := apply(t, yieldModule().bytes(), opts)
	assert.EqualValues(t, 2, rep.SlowFunc, "after the import and spin")
	n, err := CountUnguardedLoops(out, "stop")
	require.NoError(t, err)
	assert.Zero(t, n)

	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	var yields, others atomic.Int64
	var answer atomic.Uint32
	_, err = r.NewHostModuleBuilder("env").NewFunctionBuilder().WithFunc(func(_ context.Context, arg uint64) uint32 {
		if arg == YieldArg {
			yields.Add(1)
		} else {
			others.Add(1)
		}
		return answer.Load()
	}).Export("y").Instantiate(ctx)
	require.NoError(t, err)
	inst, err := r.Instantiate(ctx, out)
	require.NoError(t, err)
	res, err := inst.ExportedFunction("spin").Call(ctx, 1000)
	require.NoError(t, err)
	assert.EqualValues(t, 1000, res[0])
	assert.EqualValues(t, 10, yields.Load(), "one yield every 100 iterations")
	assert.Zero(t, others.Load())

	done := make(chan error, 1)
	go func() {
		_, err := inst.ExportedFunction("spin").Call(ctx, 0) // forever
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	gcDone := make(chan struct{})
	go func() { runtime.GC(); close(gcDone) }()
	select {
	case <-gcDone:
	case <-time.After(5 * time.Second):
		t.Fatal("a collection could not stop the world while the loop ran")
	}
	answer.Store(1) // the next yield traps
	select {
	case err := <-done:
		require.ErrorContains(t, err, "unreachable")
	case <-time.After(5 * time.Second):
		t.Fatal("a non-zero yield answer did not stop the loop")
	}

	// A module without the import is refused.
	_, _, err = Apply(loopModule().bytes(), opts)
	require.ErrorContains(t, err, "imports no function env.y")
	opts.Yield.Every = 0
	_, _, err = Apply(yieldModule().bytes(), opts)
	require.ErrorContains(t, err, "out of range")
}

// wordModule is loopModule with an exported immutable global "word" (the
// address 1024) and function names (spin, nested).
func wordModule() *mod {
	m := loopModule()
	m.secs[3].body = vec([]byte{0x7f, 0x01, 0x41, 0x80, 0x80, 0x04, opEnd}, []byte{0x7f, 0x00, 0x41, 0x80, 0x08, opEnd})
	m.secs[4].body = vec(append(appendName(nil, "spin"), 0x00, 0x00), append(appendName(nil, "nested"), 0x00, 0x01), append(appendName(nil, "word"), 0x03, 0x01))
	names := vec(append([]byte{0x00}, appendName(nil, "spin")...), append([]byte{0x01}, appendName(nil, "nested")...))
	sub := append([]byte{nameSubFunctions}, appendU32(nil, uint32(len(names)))...)
	m.custom("name", append(sub, names...)...)
	return m
}

// TestStopWord: with Options.StopWord every loop tests the word at the
// global's address, a non-zero word written from another goroutine ends a
// loop that never returns, and Skip leaves the named function's loops alone.
func TestStopWord(t *testing.T) {
	out, rep := apply(t, wordModule().bytes(), Options{StopWord: "word", Skip: []string{"nested", "not-there"}})
	assert.Equal(t, 1, rep.Loops, "spin's loop")
	assert.Equal(t, 2, rep.SkippedLoops, "nested's two loops")
	assert.EqualValues(t, 1024, rep.StopWordAddr)

	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	inst, err := r.Instantiate(ctx, out)
	require.NoError(t, err)
	res, err := inst.ExportedFunction("spin").Call(ctx, 1000)
	require.NoError(t, err, "the guard is inert while the word is 0")
	assert.EqualValues(t, 1000, res[0])

	stopsSpin(t, inst, func() { require.True(t, inst.Memory().WriteUint32Le(1024, 1)) })
}

func TestStopWordErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		wasm []byte
		opts Options
		want string
	}{
		"no such global":     {wordModule().bytes(), Options{StopWord: "nope"}, "exports no global"},
		"with a stop global": {wordModule().bytes(), Options{StopWord: "word", StopGlobal: "s"}, "cannot be combined"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Apply(tc.wasm, tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// The word must be an immutable i32 set by i32.const: "sp" is mutable.
	m := wordModule()
	m.secs[4].body = vec(append(appendName(nil, "spin"), 0x00, 0x00), append(appendName(nil, "sp"), 0x03, 0x00))
	_, _, err := Apply(m.bytes(), Options{StopWord: "sp"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "immutable i32")
}

// TestFuncNamesOnly: the name section keeps its function names only.
func TestFuncNamesOnly(t *testing.T) {
	m := wordModule()
	locals := vec(append(appendU32(nil, 0), vec(append(appendU32(nil, 1), appendName(nil, "n")...))...))
	m.secs[len(m.secs)-1].body = append(m.secs[len(m.secs)-1].body, append([]byte{2}, append(appendU32(nil, uint32(len(locals))), locals...)...)...)
	out, _ := apply(t, m.bytes(), Options{FuncNamesOnly: true})
	secs, err := splitSections(out)
	require.NoError(t, err)
	last := secs[len(secs)-1]
	r := &reader{b: last.body}
	name, err := r.name()
	require.NoError(t, err)
	require.Equal(t, "name", name)
	sub, err := r.byte()
	require.NoError(t, err)
	assert.EqualValues(t, nameSubFunctions, sub)
	size, err := r.u32()
	require.NoError(t, err)
	_, err = r.bytes(uint64(size))
	require.NoError(t, err)
	assert.True(t, r.done(), "only the function names are left")
}
