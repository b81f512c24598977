package wasmtimebackend

import (
	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// Option configures the backend. Options never fail on their own: Compile
// validates them.
type Option func(*options)

type options struct {
	cacheDir     string
	backstop     bool
	maxWasmStack int    // bytes; 0: DefaultMaxWasmStack
	jsStack      uint32 // bytes; 0: derived from the max wasm stack
}

// Stack defaults, measured with the real guest (see stack_test.go and the
// package documentation).
const (
	// DefaultMaxWasmStack is the native stack the guest may use per call.
	DefaultMaxWasmStack = 4 << 20
	// DefaultJSStackLimit is the QuickJS stack limit advised for
	// DefaultMaxWasmStack.
	DefaultJSStackLimit = 256 << 10
	// minJSStack is the least QuickJS stack limit Compile accepts.
	minJSStack = 32 << 10
)

// WithCacheDir keeps the compiled guest in dir (created 0700 if missing), so
// the next process deserializes it instead of compiling. The file is keyed
// by the sha256 of the wasm bytes and the wasmtime version and settings, and
// checked against a checksum before it is loaded. dir must not be writable
// by other users: deserializing trusts the file, so whoever can write it can
// run native code in this process.
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithBackstop turns the epoch-interruption backstop on or off (default on).
// With it, Stop and the end of a call's context interrupt guest code that
// never calls an import; it costs a load and a compare at every function
// entry and loop header of the guest. Without it, a stop takes effect only
// at the guest's next host import.
func WithBackstop(on bool) Option { return func(o *options) { o.backstop = on } }

// WithMaxWasmStack sets how many bytes of native stack the guest may use in
// one call (default DefaultMaxWasmStack). The calling thread must have that
// much plus a reserve left: Go runs cgo calls on threads with the default
// pthread stack size (usually 8 MiB), so 8 MiB and more can never fit, and
// Compile refuses such a value.
func WithMaxWasmStack(bytes int) Option { return func(o *options) { o.maxWasmStack = bytes } }

// WithJSStackLimit sets the QuickJS stack limit the backend advises (see
// backend.StackAdvisor). The default is derived from the max wasm stack so
// that deep recursion ends in QuickJS's own stack overflow error before the
// native stack runs out. A larger value risks a wasm stack trap, which kills
// the instance.
func WithJSStackLimit(bytes uint32) Option { return func(o *options) { o.jsStack = bytes } }

// New returns the wasmtime backend. The value also implements
// backend.StackAdvisor.
func New(opts ...Option) backend.Backend {
	o := options{backstop: true}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return &wasmtimeBackend{opts: o}
}

// Name implements backend.Backend.
func (b *wasmtimeBackend) Name() string { return "wasmtime" }

// JSStackLimit implements backend.StackAdvisor.
func (b *wasmtimeBackend) JSStackLimit() uint32 { return b.opts.jsStackLimit() }

func (o options) wasmStack() int {
	if o.maxWasmStack == 0 {
		return DefaultMaxWasmStack
	}
	return o.maxWasmStack
}

// jsStackLimit is the explicit limit, or one that scales with the max wasm
// stack: DefaultJSStackLimit per DefaultMaxWasmStack.
func (o options) jsStackLimit() uint32 {
	if o.jsStack != 0 {
		return o.jsStack
	}
	ws := o.wasmStack()
	if ws <= 0 {
		return DefaultJSStackLimit
	}
	l := uint64(ws) * DefaultJSStackLimit / DefaultMaxWasmStack
	if l > abi.MaxJSStack {
		l = abi.MaxJSStack
	}
	if l < minJSStack {
		l = minJSStack
	}
	return uint32(l)
}
