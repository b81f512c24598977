package wasmtimebackend

import (
	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// Option configures the backend. Options never fail on their own: Compile
// validates them.
type Option func(*options)

type options struct {
	cacheDir string
	backstop bool
	epochs   bool // WithEpochBackstop
	// Set by Compile from backstop and the guest (see guardGuest): the
	// guest got the stop-word guard at stopWord, or epochs are the
	// backstop.
	guarded      bool
	stopWord     uint32
	epoch        bool
	maxWasmStack int    // bytes; 0: DefaultMaxWasmStack
	jsStack      uint32 // bytes; 0: derived from the max wasm stack
	pool         int    // instance pool slots; 0: none
}

// Stack defaults, measured with the real guest (TestGuestStackSweep; see
// the package documentation).
//
// The deepest native stack per byte of QuickJS stack comes from the parser
// on deeply nested prefix operators (eval("-".repeat(200000) + "1")): 11.0
// bytes of native stack per byte of QuickJS stack, measured at 2, 4 and 6
// MiB of max wasm stack (clean up to 183, 372 and 558 KiB of QuickJS
// stack). Other paths: a call through 100000 nested function Proxies 10.1,
// Array.prototype.flat and nested assignments 8.0, the parser on nested
// brackets and JSON.stringify 6.7, JSON.parse 6.1, plain JS recursion 2.4.
const (
	// DefaultMaxWasmStack is the native stack the guest may use per call
	// (when the threads' stack leaves room for it; see WithMaxWasmStack).
	DefaultMaxWasmStack = 6 << 20
	// DefaultJSStackLimit is the QuickJS stack limit advised for
	// DefaultMaxWasmStack: the parser's worst case needs 2.75 MiB for it,
	// a 2.2x margin.
	DefaultJSStackLimit = DefaultMaxWasmStack / nativePerJS
	// nativePerJS is how many bytes of max wasm stack the advised QuickJS
	// limit gets per byte: the worst measured ratio (11.0) with a 2.2x
	// margin.
	nativePerJS = 24
	// stackReserve is native stack kept free beyond the max wasm stack, for
	// host functions called from the guest (wasmtime's limit does not cover
	// them) and the trampolines around the call.
	stackReserve = 1 << 20
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

// WithBackstop turns the backstop on or off (default on). With it, Stop and
// the end of a call's context interrupt guest code that never calls an
// import: Compile adds a stop guard to the guest (a load and a branch at
// every loop header but the interpreter's; see the package doc), or uses
// epoch interruption for a module that cannot take it. Without it, a stop
// takes effect only at the guest's next host import.
func WithBackstop(on bool) Option { return func(o *options) { o.backstop = on } }

// WithEpochBackstop makes the backstop epoch interruption instead of the
// stop guard (default off). The guard's flag is a word of the guest's own
// memory: a guest that could write anywhere in its memory (a memory-safety
// bug in QuickJS, exploited) could clear it and loop on without calling the
// host, where a stopped instance also traps. Epochs live outside the guest
// and cannot be cleared by it; they cost a check at every function entry
// and loop header, interpreter included (about 1.2x on CPU-bound scripts,
// bench/RESULTS.md). Without WithBackstop it does nothing.
func WithEpochBackstop(on bool) Option { return func(o *options) { o.epochs = on } }

// WithMaxWasmStack sets how many bytes of native stack the guest may use in
// one call. The calling thread must have that much plus a 1 MiB reserve
// left: Go runs cgo calls on threads with the default pthread stack size
// (8 MiB with glibc and ulimit -s 8192), so 8 MiB and more can never fit,
// and Compile refuses such a value (with 8 MiB the guest would run off the
// thread's stack and crash the process). The default is
// DefaultMaxWasmStack, or less when the default thread stack is too small
// for it.
func WithMaxWasmStack(bytes int) Option { return func(o *options) { o.maxWasmStack = bytes } }

// WithJSStackLimit sets the QuickJS stack limit the backend advises (see
// backend.StackAdvisor). The default is the max wasm stack / 24, so that deep
// recursion ends in QuickJS's own stack overflow error before the native
// stack runs out. Compile refuses a limit above max wasm stack / 12, which
// the parser is known to overflow natively (a wasm trap, which kills the
// instance).
func WithJSStackLimit(bytes uint32) Option { return func(o *options) { o.jsStack = bytes } }

// WithInstancePool makes the engine allocate instances from a pool of
// slots (Wasmtime's pooling allocator); 0, the default, allocates each
// instance's memory and metadata on demand.
//
// A pooled slot is reused with the guest's copy-on-write memory image still
// mapped: creating an instance skips the mmap, mprotect and munmap calls of
// on-demand allocation, and closing one resets its memory with madvise
// instead of unmapping it. Which is cheaper depends on the machine's page
// faults and TLB shootdowns, so measure on the target machine
// (BenchmarkNewInstance in the bench module runs both). On a 2-vCPU VM,
// creating an instance through package kafig took 22 µs pooled against
// 30 µs on demand, and closing it 9 µs against 22 µs; on another VM of the
// same kind, with far dearer faults, closing took 510 to 550 µs pooled
// against 160 µs on demand.
//
// Each slot reserves about 4 GiB of address space up front (the 32-bit
// linear memory and its guard region, as every instance does on demand), so
// a pool of n slots reserves about 4n GiB of virtual memory, none of it
// resident until used. Instances beyond the pool's size are made by a second
// engine that allocates on demand (made on first need from the same
// compiled code): the number of live instances is not capped. When the
// process cannot reserve the pool's address space, the engine allocates on
// demand.
func WithInstancePool(slots int) Option {
	return func(o *options) { o.pool = max(slots, 0) }
}

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

// wasmStack is the max wasm stack: the explicit one, or the default made
// to fit the default thread stack with the reserve.
func (o options) wasmStack() int {
	if o.maxWasmStack != 0 {
		return o.maxWasmStack
	}
	ws := DefaultMaxWasmStack
	if ts := threadStackSize(); ts > 0 && ws+stackReserve > ts {
		ws = max((ts-stackReserve)&^(64<<10-1), 0)
	}
	return ws
}

// poolSlots is the number of pool slots, 0 for none.
func (o options) poolSlots() int { return o.pool }

// jsStackLimit is the explicit limit, or the max wasm stack / nativePerJS.
func (o options) jsStackLimit() uint32 {
	if o.jsStack != 0 {
		return o.jsStack
	}
	l := uint64(max(o.wasmStack(), 0)) / nativePerJS
	return uint32(min(max(l, minJSStack), abi.MaxJSStack))
}
