// Package backend is the contract between package kafig and a WebAssembly
// engine. Most code should use package kafig; this package is for the
// authors of a backend (see backend-wazero and backend-wasmtime).
//
// A Backend compiles the guest module once per kafig.Runtime and instantiates
// it once per kafig.Instance. The backend knows nothing of JavaScript or of
// the ABI's meaning: it binds the host functions it is given to the imports
// the abi package names, calls exports by abi.Export, and gives access to the
// instance's linear memory. Everything else lives in package kafig.
//
// # Notes
//   - Backends are passed by value to kafig.New; nothing registers globally.
//   - Engine knobs (caches, stack sizes, backstops) belong to the backend's
//     own constructor.
//   - Optional capabilities are separate interfaces found by type assertion
//     (see StackAdvisor).
package backend

import (
	"context"
	"errors"

	"github.com/kafig-dev/kafig/abi"
)

// Backend compiles guest modules for one WebAssembly engine.
//
// A Backend is safe for concurrent use.
type Backend interface {
	// Name is a short name for logs and errors, e.g. "wazero".
	Name() string
	// Compile validates and compiles the guest module. The module must import
	// only abi.ImportModule functions and the WASI functions listed in
	// abi.WASIImports; anything else is an error.
	Compile(ctx context.Context, wasm []byte) (Module, error)
}

// Module is a compiled guest, ready to be instantiated many times.
//
// A Module is safe for concurrent use. Closing it does not close the
// instances made from it; the caller closes those first.
type Module interface {
	Instantiate(ctx context.Context, cfg InstanceConfig) (Instance, error)
	Close(ctx context.Context) error
}

// HostFunc implements one host import. stack holds the import's parameters
// on entry (each widened to uint64, as wazero's api.ValueType encoding) and
// receives its results on return (stack is at least as long as the larger
// of the two counts). ctx is the context of the export call that is running.
//
// A HostFunc must not call back into the instance (no nested export calls),
// and must not keep mem's byte slices after it returns.
type HostFunc func(ctx context.Context, mem Memory, stack []uint64)

// InstanceConfig is what a backend needs to instantiate a module.
type InstanceConfig struct {
	// Imports has one function per abi.Import, indexed by it.
	Imports [abi.ImportCount]HostFunc
	// MaxMemoryPages caps linear memory, in 64 KiB pages. 0 means the
	// guest's own maximum (4 GiB at most).
	MaxMemoryPages uint32
}

// Instance is one instantiated guest.
//
// An Instance is not safe for concurrent use: package kafig serializes calls.
type Instance interface {
	// Call runs an export. stack holds the parameters on entry and the
	// results on return; its length is at least the larger of the export's
	// parameter and result counts.
	//
	// When ctx is done during the call, the backend stops the guest as soon
	// as it can, even inside code that never polls, and returns an error
	// satisfying errors.Is(err, ErrStopped). Any error from Call (a trap, a
	// stop) leaves the instance unusable: later calls return ErrDead.
	Call(ctx context.Context, fn abi.Export, stack []uint64) error
	// Stop ends the running call, if any, from any goroutine, as if its
	// context had ended: Call returns an error satisfying
	// errors.Is(err, ErrStopped) and the instance is dead. It is how package
	// kafig enforces a limit inside guest code that never polls. Stop is
	// safe for concurrent use; on an idle instance it only marks it dead.
	Stop()
	// Memory gives access to linear memory. The Memory value stays valid for
	// the life of the instance; the slices it returns do not (see Memory).
	Memory() Memory
	// Close frees the instance. It is safe to call more than once.
	Close(ctx context.Context) error
}

// Memory is an instance's linear memory.
//
// Any call into the guest may grow memory and invalidate every slice that
// Read returned before it.
type Memory interface {
	// Read returns a view of n bytes at ptr, or false when the range is
	// outside memory. The view aliases guest memory: copy what you keep.
	Read(ptr, n uint32) ([]byte, bool)
	// Write copies b to ptr, or returns false when the range is outside memory.
	Write(ptr uint32, b []byte) bool
	// Size is the current size of memory in bytes.
	Size() uint32
}

// StackAdvisor is implemented by backends whose engine stack can hold only
// a certain depth of guest code: JSStackLimit is the QuickJS stack limit
// (bytes of shadow stack) that ends deep recursion in a clean stack overflow
// error before the engine's own stack runs out. Without it package kafig
// uses abi.DefaultJSStack.
type StackAdvisor interface {
	JSStackLimit() uint32
}

// Errors a backend returns.
var (
	// ErrStopped: the call was stopped because its context ended.
	ErrStopped = errors.New("kafig: guest call stopped")
	// ErrDead: an earlier call trapped or was stopped; the instance is gone.
	ErrDead = errors.New("kafig: instance is dead")
	// ErrBadModule: the module is not a kafig guest (bad bytes, or imports
	// outside the ABI).
	ErrBadModule = errors.New("kafig: not a kafig guest module")
)
