package wazerobackend

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/backend-wazero/internal/mmapalloc"
	"github.com/kafig-dev/kafig/guest/wasmguard"
	"github.com/kafig-dev/kafig/kafig/backend"
)

var wasmMagic = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// module is a compiled guest and the wazero.Runtime it lives in.
type module struct {
	r        wazero.Runtime
	cm       wazero.CompiledModule
	modCfg   wazero.ModuleConfig
	backstop bool   // WithBackstop
	guard    bool   // the backstop is the guest's stop global (abi.StopGlobal)
	minPages uint32 // the guest's initial memory size
	pool     *mmapalloc.Pool

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	cleanup   runtime.Cleanup
}

// dropped is what a module dropped without Close holds outside the Go heap.
type dropped struct {
	r    wazero.Runtime
	pool *mmapalloc.Pool
}

// closeRuntime closes the runtime and the memory pool of a module dropped
// without Close (and whose instances are all unreachable too, since they
// refer to it).
func closeRuntime(d dropped) {
	_ = d.r.Close(context.Background())
	d.pool.Close()
}

func badModule(format string, args ...any) error {
	return fmt.Errorf("%w: wazero: "+format, append([]any{backend.ErrBadModule}, args...)...)
}

func compile(ctx context.Context, wasm []byte, cache wazero.CompilationCache, backstop bool, poolSize int) (_ *module, err error) {
	switch {
	case len(wasm) == 0:
		return nil, badModule("empty module")
	case len(wasm) < len(wasmMagic) || !bytes.Equal(wasm[:len(wasmMagic)], wasmMagic):
		return nil, badModule("not a WebAssembly 1.0 binary (bad header)")
	}

	// The backstop is a stop global that every loop of the guest tests
	// (abi.StopGlobal), added here (see guardGuest): Stop sets it and the
	// guest traps at its next loop iteration, for a few instructions per
	// iteration. Only a guest that cannot take the guard falls back on
	// wazero's CloseOnContextDone, which calls out to Go at every loop
	// header (JavaScript about 4.7 times slower) and watches each call's
	// context from a goroutine.
	if backstop {
		wasm = guardGuest(wasm)
	}
	guard, err := exportsGlobal(wasm, abi.StopGlobal)
	if err != nil {
		guard = false // malformed: wazero's compile below says how
	}

	// NewRuntimeConfig is the compiler wherever wazero supports it (it also
	// checks at run time that executable memory can be mapped), and the
	// interpreter elsewhere.
	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(backstop && !guard)
	if cache != nil {
		rc = rc.WithCompilationCache(cache)
	}
	r := wazero.NewRuntimeWithConfig(ctx, rc)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("kafig: wazero: compile: panic: %v", p)
		}
		if err != nil {
			_ = r.Close(ctx)
		}
	}()

	// Closed with the runtime.
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		return nil, fmt.Errorf("kafig: wazero: instantiate WASI: %w", err)
	}

	hb := r.NewHostModuleBuilder(abi.ImportModule)
	for i := range abi.ImportCount {
		imp := abi.Import(i)
		sig := imp.Signature()
		hb.NewFunctionBuilder().
			WithGoModuleFunction(hostFunc(imp, backstop), valueTypes(sig.Params), valueTypes(sig.Results)).
			WithName(imp.Name()).
			Export(imp.Name())
	}
	if _, err := hb.Instantiate(ctx); err != nil {
		return nil, fmt.Errorf("kafig: wazero: instantiate %s: %w", abi.ImportModule, err)
	}

	cm, err := r.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: wazero: %w", backend.ErrBadModule, err)
	}
	m := &module{r: r, cm: cm, backstop: backstop, guard: backstop && guard}
	if err := m.checkImports(wasm); err != nil {
		return nil, err
	}
	if err := m.checkExports(); err != nil {
		return nil, err
	}
	m.modCfg = wazero.NewModuleConfig().
		WithName("").         // anonymous: instantiable many times, whatever the name section says
		WithStartFunctions(). // Wizer ran the initializer already
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(rand.Reader).
		WithStdout(io.Discard).
		WithStderr(io.Discard)
	m.pool = mmapalloc.NewPool(uint64(m.minPages)*mmapalloc.PageSize, poolSize)
	// wazero writes every active data segment into memory at each
	// instantiation, before any guest code runs: a reused memory need not
	// be zeroed where they lie.
	if data, ok := activeData(wasm); ok {
		starts, ends := make([]uint64, len(data)), make([]uint64, len(data))
		for k, d := range data {
			starts[k], ends[k] = d.start, d.end
		}
		m.pool.SkipOverwritten(starts, ends)
	}
	m.cleanup = runtime.AddCleanup(m, closeRuntime, dropped{r, m.pool})
	return m, nil
}

func valueTypes(ts []abi.ValType) []api.ValueType {
	out := make([]api.ValueType, len(ts))
	for i, t := range ts {
		switch t {
		case abi.I32:
			out[i] = api.ValueTypeI32
		case abi.I64:
			out[i] = api.ValueTypeI64
		default:
			panic(fmt.Sprintf("kafig: wazero: abi value type %d", t))
		}
	}
	return out
}

func sigString(params, results []api.ValueType) string {
	name := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return name(params) + " -> " + name(results)
}

func sameSig(a, b api.FunctionDefinition) bool {
	return slices.Equal(a.ParamTypes(), b.ParamTypes()) && slices.Equal(a.ResultTypes(), b.ResultTypes())
}

// checkImports refuses anything but the ABI's env functions and the WASI
// functions abi.WASIImports lists, with the signatures the host provides.
func (m *module) checkImports(wasm []byte) error {
	imports, err := scanImports(wasm)
	if err != nil {
		return badModule("reading imports: %v", err)
	}
	for _, im := range imports {
		if im.kind != kindFunc {
			return badModule("imports %s %s.%s; a kafig guest imports only functions", kindName(im.kind), im.module, im.name)
		}
	}
	if mems := m.cm.ImportedMemories(); len(mems) != 0 {
		mod, name, _ := mems[0].Import()
		return badModule("imports memory %s.%s; a kafig guest defines its own", mod, name)
	}
	wasi := strings.Fields(abi.WASIImports)
	for _, def := range m.cm.ImportedFunctions() {
		modName, name, _ := def.Import()
		switch {
		case modName == abi.ImportModule:
		case modName == abi.WASIModule && slices.Contains(wasi, name):
		default:
			return badModule("imports %s.%s, which is not part of the kafig ABI", modName, name)
		}
		host := m.r.Module(modName)
		var want api.FunctionDefinition
		if host != nil {
			want = host.ExportedFunctionDefinitions()[name]
		}
		if want == nil {
			return badModule("imports %s.%s, which is not part of the kafig ABI", modName, name)
		}
		if !sameSig(def, want) {
			return badModule("imports %s.%s as %s; the host has %s", modName, name,
				sigString(def.ParamTypes(), def.ResultTypes()), sigString(want.ParamTypes(), want.ResultTypes()))
		}
	}
	return nil
}

// checkExports requires every abi export with its exact signature, and an
// exported memory.
func (m *module) checkExports() error {
	defs := m.cm.ExportedFunctions()
	for i := range abi.ExportCount {
		e := abi.Export(i)
		def, ok := defs[e.Name()]
		if !ok {
			return badModule("missing export %s", e.Name())
		}
		sig := e.Signature()
		params, results := valueTypes(sig.Params), valueTypes(sig.Results)
		if !slices.Equal(def.ParamTypes(), params) || !slices.Equal(def.ResultTypes(), results) {
			return badModule("export %s is %s; the ABI says %s", e.Name(),
				sigString(def.ParamTypes(), def.ResultTypes()), sigString(params, results))
		}
	}
	mems := m.cm.ExportedMemories()
	if len(mems) == 0 {
		return badModule("exports no memory")
	}
	for _, def := range mems {
		m.minPages = def.Min()
	}
	return nil
}

// Instantiate implements backend.Module.
func (m *module) Instantiate(ctx context.Context, cfg backend.InstanceConfig) (backend.Instance, error) {
	if m.closed.Load() {
		return nil, errors.New("kafig: wazero: Instantiate on a closed module")
	}
	for i, f := range cfg.Imports {
		if f == nil {
			return nil, fmt.Errorf("kafig: wazero: InstanceConfig.Imports[%s] is nil", abi.Import(i).Name())
		}
	}
	if cfg.MaxMemoryPages != 0 && cfg.MaxMemoryPages < m.minPages {
		return nil, fmt.Errorf("kafig: wazero: the guest starts with %d pages of memory, above MaxMemoryPages (%d)",
			m.minPages, cfg.MaxMemoryPages)
	}

	alloc := mmapalloc.NewPooled(cfg.MaxMemoryPages, m.pool)
	mod, err := m.instantiate(experimental.WithMemoryAllocator(ctx, alloc))
	lin := alloc.Memory()
	if err != nil {
		if lin != nil {
			if e := lin.Err(); e != nil {
				err = e
			}
			lin.Free()
			lin.Release()
		}
		return nil, err
	}
	if lin == nil || mod.Memory() == nil {
		// The allocator was not used: cannot happen with a memory the module
		// defines, but never run a guest whose memory is not capped.
		_ = mod.Close(ctx)
		if lin != nil {
			lin.Free()
			lin.Release()
		}
		return nil, errors.New("kafig: wazero: the memory allocator was not used")
	}

	var stop api.MutableGlobal
	if m.guard {
		g, ok := mod.ExportedGlobal(abi.StopGlobal).(api.MutableGlobal)
		if !ok || g.Type() != api.ValueTypeI32 {
			_ = mod.Close(ctx) // frees lin on wazero's side
			lin.Release()
			return nil, badModule("export %s is not a mutable i32 global", abi.StopGlobal)
		}
		stop = g
	}

	inst := newInstance(m, mod, lin, &cfg.Imports, stop)
	var stack [1]uint64
	err = inst.Call(ctx, abi.ExportABIVersion, stack[:])
	if err == nil && uint32(stack[0]) != abi.Version {
		err = badModule("the guest's ABI version is %d, the host's %d", uint32(stack[0]), abi.Version)
	}
	if err != nil {
		_ = inst.Close(ctx)
		return nil, err
	}
	return inst, nil
}

func (m *module) instantiate(ctx context.Context) (mod api.Module, err error) {
	defer func() {
		if p := recover(); p != nil {
			mod, err = nil, fmt.Errorf("kafig: wazero: instantiate: panic: %v", p)
		}
	}()
	mod, err = m.r.InstantiateModule(ctx, m.cm, m.modCfg)
	if err != nil {
		return nil, fmt.Errorf("kafig: wazero: instantiate: %w", err)
	}
	return mod, nil
}

// Close implements backend.Module. It closes the wazero runtime, and with it
// any instance still open (their calls fail from then on).
func (m *module) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		m.cleanup.Stop()
		m.closed.Store(true)
		if err := m.r.Close(ctx); err != nil {
			m.closeErr = fmt.Errorf("kafig: wazero: close: %w", err)
		}
		m.pool.Close()
	})
	return m.closeErr
}

// guardGuest returns the guest with the stop guard that wazero needs: the
// stop global, and a yield to the host every abi.YieldEvery loop iterations
// (wazero cannot preempt guest code, and Go's garbage collector waits for
// every goroutine to reach a safe point: a loop that never calls the host
// would freeze the process). The interpreter (abi.GuardSkip) polls the host
// on its own and is left as it is. A module that cannot take the guard (not
// the kafig guest, or guarded already) is returned as it is.
func guardGuest(wasm []byte) []byte {
	out, _, err := wasmguard.Apply(wasm, wasmguard.Options{
		StopGlobal: abi.StopGlobal,
		Yield:      &wasmguard.Yield{Module: abi.ImportModule, Name: abi.ImportInterrupt.Name(), Every: abi.YieldEvery},
		Skip:       []string{abi.GuardSkip},
	})
	if err != nil {
		return wasm
	}
	return out
}
