package kafig

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
	"github.com/kafig-dev/kafig/kafig/internal/seal"
	"github.com/kafig-dev/kafig/kafig/internal/wasmfile"
)

// Runtime is a compiled guest and the defaults for its instances.
//
// # Notes
//   - A Runtime is safe for concurrent use: many goroutines may create
//     instances and compile at once.
//   - Close closes every instance the runtime made.
//   - Each Runtime runs one monitor goroutine (the backstop of
//     WithInterruptCallback and of eval contexts); Close stops it, so a
//     Runtime that is not closed leaks that goroutine.
//   - New compiles the guest, which is slow with some backends: create a
//     Runtime once and share it.
type Runtime struct {
	backend      backend.Backend
	mod          backend.Module
	cfg          runtimeConfig
	log          *slog.Logger
	sealer       *seal.Sealer
	initialPages uint32
	stackLimit   uint32

	mu        sync.Mutex
	closed    bool
	modOpen   bool // closed, but the module waits for instances (see forget)
	instances map[*Instance]struct{}
	creating  int // instances being instantiated: the module must stay open

	compileSem  chan struct{} // guards compileInst
	compileInst *Instance

	monitorStop chan struct{}
	monitorDone chan struct{}
	closeOnce   sync.Once
	closeErr    error
}

// New compiles the guest with backend b and returns a Runtime.
//
// # Notes
//   - A nil b returns an error wrapping ErrNoBackend; invalid options one
//     wrapping ErrInvalidOption; a guest that is not a kafig guest of this
//     ABI version one wrapping ErrBadGuest.
//   - With WithPrelude, New creates a throwaway instance to check the
//     prelude and returns its *JsError if it fails (see WithPrelude for a
//     prelude that calls host.rpcSync).
//   - Close the Runtime when done with it.
func New(ctx context.Context, b backend.Backend, opts ...Option) (*Runtime, error) {
	if b == nil {
		return nil, ErrNoBackend
	}
	ctx = orBackground(ctx)
	cfg := defaultRuntimeConfig()
	for _, o := range opts {
		if o != nil {
			o.applyRuntime(&cfg)
		}
	}
	minPages, _, _, err := wasmfile.Memory([]byte(cfg.wasm))
	if err != nil {
		return nil, wrap(ErrBadGuest, err.Error())
	}
	if err := cfg.validate(minPages); err != nil {
		return nil, err
	}
	sealer, err := seal.New(cfg.key, sha256.Sum256([]byte(cfg.wasm)))
	if err != nil {
		return nil, wrap(ErrInvalidOption, "WithBytecodeKey: "+err.Error())
	}
	mod, err := b.Compile(ctx, []byte(cfg.wasm))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, join(cerr, err)
		}
		return nil, join(wrap(ErrBadGuest, b.Name()+" could not compile the guest"), err)
	}
	rt := &Runtime{
		backend:      b,
		mod:          mod,
		cfg:          cfg,
		log:          cfg.logger,
		sealer:       sealer,
		initialPages: minPages,
		stackLimit:   abi.DefaultJSStack,
		instances:    make(map[*Instance]struct{}),
		compileSem:   make(chan struct{}, 1),
		monitorStop:  make(chan struct{}),
		monitorDone:  make(chan struct{}),
	}
	if sa, ok := b.(backend.StackAdvisor); ok {
		if l := sa.JSStackLimit(); l > 0 {
			rt.stackLimit = min(l, abi.MaxJSStack)
		}
	}
	go rt.monitor()

	// Check the guest (ABI version, exchange area) and the prelude once, so
	// that New fails rather than every Instance.
	probe, err := rt.newInstance(ctx, instanceConfig{probe: true})
	if err != nil {
		_ = rt.Close(ctx)
		return nil, err
	}
	_ = probe.Close(ctx)
	rt.log.Debug("kafig: runtime ready", "backend", b.Name(), "initial_pages", minPages, "js_stack", rt.stackLimit)
	return rt, nil
}

// Instance creates an instance: a fresh guest with its own linear memory and
// JS heap, with the prelude evaluated.
//
// # Notes
//   - Safe for concurrent use. Close the instance when done with it, or
//     close the Runtime.
//   - Invalid options return one error wrapping ErrInvalidOption; a closed
//     runtime returns ErrClosed.
func (rt *Runtime) Instance(ctx context.Context, opts ...InstanceOption) (*Instance, error) {
	if rt == nil {
		return nil, ErrClosed
	}
	var cfg instanceConfig
	for _, o := range opts {
		if o != nil {
			o.applyInstance(&cfg)
		}
	}
	return rt.newInstance(orBackground(ctx), cfg)
}

func (rt *Runtime) newInstance(ctx context.Context, cfg instanceConfig) (*Instance, error) {
	if err := cfg.validate(rt.initialPages); err != nil {
		return nil, err
	}
	if !cfg.hasPages && rt.cfg.hasPages {
		cfg.pages, cfg.hasPages = rt.cfg.pages, true
	}
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil, ErrClosed
	}
	// Counted from here, so that a concurrent Close leaves the module open
	// under this instantiation (see moduleDoneLocked).
	rt.creating++
	rt.mu.Unlock()
	in, err := newInstance(ctx, rt, cfg)
	rt.mu.Lock()
	rt.creating--
	if err == nil && !rt.closed {
		rt.instances[in] = struct{}{}
		rt.mu.Unlock()
	} else {
		closed := rt.closed
		rt.mu.Unlock()
		if err == nil {
			_ = in.bi.Close(context.WithoutCancel(ctx))
		}
		rt.closeModuleIfDone()
		if closed {
			return nil, ErrClosed
		}
		return nil, err
	}

	if rt.cfg.hasPrelude && !cfg.internalCompile {
		if err := in.acquire(ctx); err != nil {
			_ = in.Close(ctx)
			return nil, err
		}
		_, err := in.eval(rt.cfg.prelude+"\n;undefined", evalConfig{})
		if err == nil {
			// The promise jobs the prelude queued run now, as part of it: not
			// in the first async operation of the user, under its limits.
			_, err = in.eval("undefined", evalConfig{async: true})
		}
		in.resetStats()
		in.release()
		if err != nil && cfg.probe && in.probeCalledRPC {
			// Judged again, with a router, by every real instance.
			rt.log.Debug("kafig: prelude check inconclusive: it called host.rpcSync", "err", err)
			err = nil
		}
		if err != nil {
			_ = in.Close(ctx)
			return nil, err
		}
	}
	rt.log.Debug("kafig: instance created", "pages_limit", cfg.pages, "js_memory_limit", cfg.jsMemory)
	return in, nil
}

// forget takes a freed instance off the runtime. The last instance freed
// after Close (by its own operation, see Instance.Close) closes the module.
func (rt *Runtime) forget(in *Instance) {
	rt.mu.Lock()
	delete(rt.instances, in)
	rt.mu.Unlock()
	rt.closeModuleIfDone()
}

// closeModuleIfDone closes the module once the runtime is closed and no
// instance uses it or is being created from it: whichever of Close, forget
// and a failed instantiation sees that first closes it, once.
func (rt *Runtime) closeModuleIfDone() {
	if err := rt.takeModule(); err != nil {
		rt.log.Debug("kafig: closing the compiled guest failed", "err", err)
	}
}

// takeModule closes the module if it is done (see closeModuleIfDone) and
// returns the backend's error.
func (rt *Runtime) takeModule() error {
	rt.mu.Lock()
	done := rt.modOpen && rt.closed && len(rt.instances) == 0 && rt.creating == 0
	if done {
		rt.modOpen = false
	}
	rt.mu.Unlock()
	if !done {
		return nil
	}
	return rt.mod.Close(context.Background())
}

// Compile compiles src to bytecode for Instance.EvalCompiled, which then
// skips parsing.
//
// # Notes
//   - The bytecode is sealed with a MAC (see WithBytecodeKey): any instance
//     of this runtime, or of a runtime with the same key and guest build,
//     accepts it; anything else is refused with ErrBadBytecode.
//   - A SyntaxError is returned as a *JsError.
//   - Options: WithSourceName names the script; the bytecode keeps the
//     name, and its stacks show it wherever EvalCompiled runs it. An
//     invalid option is an error wrapping ErrInvalidOption.
//   - Safe for concurrent use; compilations are serialized on one internal
//     instance per runtime, created on first use.
func (rt *Runtime) Compile(ctx context.Context, src string, opts ...CompileOption) ([]byte, error) {
	if rt == nil {
		return nil, ErrClosed
	}
	ctx = orBackground(ctx)
	var cc compileConfig
	for _, o := range opts {
		if o != nil {
			cc = o.applyCompile(cc)
		}
	}
	if cc.hasName {
		if p := checkSourceName(cc.name); p != "" {
			return nil, wrap(ErrInvalidOption, p)
		}
	}
	select {
	case rt.compileSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctxError(ctx.Err(), "context ended while waiting to compile")
	}
	defer func() { <-rt.compileSem }()
	if rt.compileInst == nil || rt.compileInst.dead.Load() {
		if rt.compileInst != nil {
			_ = rt.compileInst.Close(ctx)
		}
		in, err := rt.newInstance(ctx, instanceConfig{internalCompile: true})
		if err != nil {
			return nil, err
		}
		rt.compileInst = in
	}
	bc, err := rt.compileInst.compile(ctx, src, cc.name)
	if err != nil {
		return nil, err
	}
	return rt.sealer.Seal(bc), nil
}

// Close closes every instance of the runtime, stops its monitor and frees
// the compiled guest.
//
// # Notes
//   - Safe on a nil or closed Runtime and with a done ctx; later calls
//     return the first call's result.
//   - Calls running in its instances end with ErrClosed.
func (rt *Runtime) Close(ctx context.Context) error {
	if rt == nil {
		return nil
	}
	rt.closeOnce.Do(func() { rt.closeErr = rt.close(context.WithoutCancel(orBackground(ctx))) })
	return rt.closeErr
}

func (rt *Runtime) close(ctx context.Context) error {
	rt.mu.Lock()
	rt.closed = true
	rt.modOpen = true
	all := make([]*Instance, 0, len(rt.instances))
	for in := range rt.instances {
		all = append(all, in)
	}
	rt.mu.Unlock()

	var errs []error
	for _, in := range all {
		if err := in.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	close(rt.monitorStop)
	<-rt.monitorDone
	// Instances closed from their own user code are freed when it returns,
	// and instantiations under way finish: the module, which the backend
	// must not close under a live instance, is closed by the last of them
	// (see closeModuleIfDone).
	if err := rt.takeModule(); err != nil {
		errs = append(errs, err)
	}
	rt.log.Debug("kafig: runtime closed", "instances_closed", len(all))
	return errors.Join(errs...)
}

// The backstop (see Instance.watch): every monitorTick the monitor looks at
// the instances with a guest call running. One whose context ended and that
// has not polled for ctxStale, or that has not polled for pollStale while its
// interrupt callback says stop, is stopped from outside.
//
// Stopping from outside kills the instance, so the thresholds are far above
// the guest's normal poll spacing (well under a millisecond): a guest that is
// merely descheduled on a loaded machine should reach its next poll, and end
// cleanly, before the monitor judges it. They still keep every limit within
// twice its setting plus one second.
const (
	monitorTick = 50 * time.Millisecond
	pollStale   = 400 * time.Millisecond
	ctxStale    = 250 * time.Millisecond
)

func (rt *Runtime) monitor() {
	defer close(rt.monitorDone)
	t := time.NewTicker(monitorTick)
	defer t.Stop()
	var batch []*Instance
	for {
		select {
		case <-rt.monitorStop:
			return
		case <-t.C:
		}
		batch = batch[:0]
		rt.mu.Lock()
		for in := range rt.instances {
			if in.running.Load() {
				batch = append(batch, in)
			}
		}
		rt.mu.Unlock()
		for _, in := range batch {
			in.watch()
		}
		clear(batch)
	}
}
