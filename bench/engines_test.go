package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dop251/goja"

	wazerobackend "github.com/kafig-dev/kafig/backend-wazero"
	"github.com/kafig-dev/kafig/bench/internal/nativeqjs"
	"github.com/kafig-dev/kafig/kafig"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// instance is one live JavaScript world of an engine, with the host bridge
// of kafig (host.rpcSync, host.rpc, host.on) or its equivalent.
type instance interface {
	Eval(ctx context.Context, src string) ([]byte, error)
	// EvalAsync evaluates src, awaits a promise result and serves host.rpc
	// until it settles.
	EvalAsync(ctx context.Context, src string) ([]byte, error)
	EvalCompiled(ctx context.Context, code any) ([]byte, error)
	Dispatch(ctx context.Context, name string, params []byte) ([]byte, error)
	Close(ctx context.Context) error
}

// engine makes instances. Compile returns code for EvalCompiled.
type engine interface {
	Name() string
	NewInstance(ctx context.Context) (instance, error)
	Compile(ctx context.Context, src string) (any, error)
}

// Engine names, in the order of the table's columns.
const (
	wazeroName           = "wazero"
	wazeroNoBackstopName = "wazero-nobackstop"
	wasmtimeName         = "wasmtime"
	wasmtimeNoBackstop   = "wasmtime-nobackstop"
	wasmtimePoolName     = "wasmtime-pool"
	gojaName             = "goja"
	nativeName           = "native"
)

// echo is the RPC handler of every benchmark: it returns its params.
func echo(_ context.Context, params json.RawMessage) (json.RawMessage, error) {
	return params, nil
}

// The RPC methods: "echo" runs inline (host.rpcSync), "aecho" in a
// goroutine (host.rpc).
var router = kafig.NewRPCRouter().WithSync("echo", echo).WithAsync("aecho", echo)

// ---- kafig engines ----

type kafigEngine struct {
	name       string
	newBackend func() backend.Backend

	once sync.Once
	rt   *kafig.Runtime
	err  error
}

// kafigEngines are the kafig engines of this build; the cgo build adds the
// wasmtime ones (engines_wasmtime_test.go).
var kafigEngines = []*kafigEngine{
	{name: wazeroName, newBackend: func() backend.Backend { return wazerobackend.New() }},
	{name: wazeroNoBackstopName, newBackend: func() backend.Backend {
		return wazerobackend.New(wazerobackend.WithBackstop(false))
	}},
}

func (e *kafigEngine) Name() string { return e.name }

func (e *kafigEngine) runtime() (*kafig.Runtime, error) {
	e.once.Do(func() {
		e.rt, e.err = kafig.New(context.Background(), e.newBackend())
		if e.err != nil {
			e.err = fmt.Errorf("%s: kafig.New: %w", e.name, e.err)
		}
	})
	return e.rt, e.err
}

func (e *kafigEngine) NewInstance(ctx context.Context) (instance, error) {
	rt, err := e.runtime()
	if err != nil {
		return nil, err
	}
	in, err := rt.Instance(ctx, kafig.WithRouter(router))
	if err != nil {
		return nil, err
	}
	return kafigInstance{in}, nil
}

func (e *kafigEngine) Compile(ctx context.Context, src string) (any, error) {
	rt, err := e.runtime()
	if err != nil {
		return nil, err
	}
	return rt.Compile(ctx, src)
}

func (e *kafigEngine) close() {
	if e.rt != nil {
		_ = e.rt.Close(context.Background())
	}
}

type kafigInstance struct{ in *kafig.Instance }

func (k kafigInstance) Eval(ctx context.Context, src string) ([]byte, error) {
	return k.in.Eval(ctx, src)
}

func (k kafigInstance) EvalAsync(ctx context.Context, src string) ([]byte, error) {
	return k.in.Eval(ctx, src, kafig.WithAsync())
}

func (k kafigInstance) EvalCompiled(ctx context.Context, code any) ([]byte, error) {
	return k.in.EvalCompiled(ctx, code.([]byte))
}

func (k kafigInstance) Dispatch(ctx context.Context, name string, params []byte) ([]byte, error) {
	return k.in.DispatchEvent(ctx, name, params)
}

func (k kafigInstance) Close(ctx context.Context) error { return k.in.Close(ctx) }

// ---- goja ----

// gojaEngine is goja with a host bridge equivalent to kafig's: JSON across
// the boundary both ways, host.rpcSync inline, host.rpc handlers in
// goroutines whose replies the eval's loop delivers, host.on handlers.
type gojaEngine struct{}

func (gojaEngine) Name() string { return gojaName }

func (gojaEngine) Compile(_ context.Context, src string) (any, error) {
	return goja.Compile("<eval>", src, false)
}

// gojaHost installs `host` on top of the Go functions of the bridge.
const gojaHost = `var host = (function (rpcSync, rpc, on) {
  function enc(p) { return JSON.stringify(p === undefined ? null : p); }
  return Object.freeze({
    rpcSync: function (m, p) { return JSON.parse(rpcSync(String(m), enc(p))); },
    rpc: function (m, p) { return rpc(String(m), enc(p)); },
    on: function (name, fn) { on(String(name), fn); }
  });
})(__rpcSync, __rpc, __on);
delete globalThis.__rpcSync; delete globalThis.__rpc; delete globalThis.__on;`

var gojaHostProgram = goja.MustCompile("<host>", gojaHost, false)

type gojaReply struct {
	resolve, reject func(any) error
	data            json.RawMessage
	err             error
}

type gojaInstance struct {
	vm          *goja.Runtime
	stringify   goja.Callable
	parse       goja.Callable
	handlers    map[string]goja.Callable
	ctx         context.Context
	replies     chan gojaReply
	outstanding int
}

var gojaHandlers = map[string]kafig.RPCHandler{"echo": echo, "aecho": echo}

func (gojaEngine) NewInstance(context.Context) (instance, error) {
	vm := goja.New()
	in := &gojaInstance{vm: vm, handlers: map[string]goja.Callable{}, replies: make(chan gojaReply, 64)}
	j := vm.Get("JSON").ToObject(vm)
	in.stringify, _ = goja.AssertFunction(j.Get("stringify"))
	in.parse, _ = goja.AssertFunction(j.Get("parse"))
	_ = vm.Set("__rpcSync", in.rpcSync)
	_ = vm.Set("__rpc", in.rpc)
	_ = vm.Set("__on", in.on)
	if _, err := vm.RunProgram(gojaHostProgram); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *gojaInstance) handler(method string) kafig.RPCHandler {
	h := gojaHandlers[method]
	if h == nil {
		panic(in.vm.NewGoError(fmt.Errorf("unknown RPC method %s", method)))
	}
	return h
}

func (in *gojaInstance) rpcSync(call goja.FunctionCall) goja.Value {
	h := in.handler(call.Argument(0).String())
	res, err := h(in.ctx, json.RawMessage(call.Argument(1).String()))
	if err != nil {
		panic(in.vm.NewGoError(err))
	}
	return in.vm.ToValue(string(res))
}

func (in *gojaInstance) rpc(call goja.FunctionCall) goja.Value {
	h := in.handler(call.Argument(0).String())
	params := json.RawMessage(call.Argument(1).String())
	p, resolve, reject := in.vm.NewPromise()
	in.outstanding++
	ctx := in.ctx
	go func() {
		res, err := h(ctx, params)
		in.replies <- gojaReply{resolve: resolve, reject: reject, data: res, err: err}
	}()
	return in.vm.ToValue(p)
}

func (in *gojaInstance) on(call goja.FunctionCall) goja.Value {
	fn, ok := goja.AssertFunction(call.Argument(1))
	if !ok {
		panic(in.vm.NewTypeError("host.on: not a function"))
	}
	in.handlers[call.Argument(0).String()] = fn
	return goja.Undefined()
}

func (in *gojaInstance) json(v goja.Value) ([]byte, error) {
	s, err := in.stringify(goja.Undefined(), v)
	if err != nil {
		return nil, err
	}
	if goja.IsUndefined(s) {
		return []byte("null"), nil
	}
	return []byte(s.String()), nil
}

func (in *gojaInstance) Eval(ctx context.Context, src string) ([]byte, error) {
	in.ctx = ctx
	v, err := in.vm.RunString(src)
	if err != nil {
		return nil, err
	}
	return in.json(v)
}

func (in *gojaInstance) EvalAsync(ctx context.Context, src string) ([]byte, error) {
	in.ctx = ctx
	v, err := in.vm.RunString(src)
	if err != nil {
		return nil, err
	}
	p, ok := v.Export().(*goja.Promise)
	if !ok {
		return in.json(v)
	}
	for p.State() == goja.PromiseStatePending && in.outstanding > 0 {
		var r gojaReply
		select {
		case r = <-in.replies:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		in.outstanding--
		if r.err != nil {
			err = r.reject(in.vm.NewGoError(r.err))
		} else {
			var val goja.Value
			if val, err = in.parse(goja.Undefined(), in.vm.ToValue(string(r.data))); err == nil {
				err = r.resolve(val)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	switch p.State() {
	case goja.PromiseStateFulfilled:
		return in.json(p.Result())
	case goja.PromiseStateRejected:
		return nil, fmt.Errorf("goja: promise rejected: %v", p.Result())
	}
	return nil, errors.New("goja: the result promise can never settle")
}

func (in *gojaInstance) EvalCompiled(ctx context.Context, code any) ([]byte, error) {
	in.ctx = ctx
	v, err := in.vm.RunProgram(code.(*goja.Program))
	if err != nil {
		return nil, err
	}
	return in.json(v)
}

func (in *gojaInstance) Dispatch(ctx context.Context, name string, params []byte) ([]byte, error) {
	in.ctx = ctx
	fn := in.handlers[name]
	if fn == nil {
		return nil, fmt.Errorf("goja: no handler for %q", name)
	}
	p, err := in.parse(goja.Undefined(), in.vm.ToValue(string(params)))
	if err != nil {
		return nil, err
	}
	v, err := fn(goja.Undefined(), p)
	if err != nil {
		return nil, err
	}
	return in.json(v)
}

func (in *gojaInstance) Close(context.Context) error {
	in.vm = nil
	in.handlers = nil
	return nil
}

// ---- engine sets ----

func kafigEngine1(name string) *kafigEngine {
	for _, e := range kafigEngines {
		if e.name == name {
			return e
		}
	}
	return nil
}

// enginesFor returns the engines of a benchmark, in column order: the
// kafig engines with the backstop, the variants without it if backstop
// is set, and goja. The native baseline is run separately.
func enginesFor(backstopVariants bool) []engine {
	names := []string{wazeroName, wasmtimeName}
	if backstopVariants {
		names = []string{wazeroName, wazeroNoBackstopName, wasmtimeName, wasmtimeNoBackstop}
	}
	var out []engine
	for _, n := range names {
		if e := kafigEngine1(n); e != nil {
			out = append(out, e)
		}
	}
	return append(out, gojaEngine{})
}

// ---- native ----

var (
	nativeOnce sync.Once
	nativeH    *nativeqjs.Harness
	nativeErr  error
)

// native returns the native QuickJS harness, building it on first use, or
// skips tb with the reason it is unavailable.
func native(tb testing.TB) *nativeqjs.Harness {
	tb.Helper()
	nativeOnce.Do(func() {
		if os.Getenv("KAFIG_BENCH_NATIVE") == "0" {
			nativeErr = errors.New("KAFIG_BENCH_NATIVE=0")
			return
		}
		root, err := filepath.Abs("..")
		if err != nil {
			nativeErr = err
			return
		}
		dir, err := nativeqjs.Build(context.Background(), root)
		if err != nil {
			nativeErr = err
			return
		}
		nativeH, nativeErr = nativeqjs.Start(context.Background(), dir)
	})
	if nativeErr != nil {
		tb.Skipf("native QuickJS baseline unavailable: %v", nativeErr)
	}
	return nativeH
}

func closeEngines() {
	for _, e := range kafigEngines {
		e.close()
	}
	if nativeH != nil {
		_ = nativeH.Close()
	}
}
