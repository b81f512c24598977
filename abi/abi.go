// Package abi is the contract between the kafig host (Go) and the kafig guest
// (QuickJS compiled to WebAssembly): the names of every import and export,
// their signatures, the status codes, the flags and the layout of the shared
// exchange area.
//
// It holds constants only. The C header the guest is compiled with
// (guest/src/kafig_abi.h) is generated from this package by
// `go run ./cmd/abigen`, and a test fails when the two disagree.
//
// Most code should use package kafig instead. ABI.md beside this file
// documents the flows, who allocates and frees, and when pointers go stale.
package abi

// Version is the ABI version. The guest reports it from ExportABIVersion and
// the host refuses a guest that reports anything else.
//
// Version 2 added the source name (ExchSourceNameLen, ExchSourceName): a
// version 1 guest would ignore it silently.
const Version = 2

// ImportModule is the module name of every host function the guest imports.
// The guest also imports a few WASI preview 1 functions (see WASIImports).
const ImportModule = "env"

// WASIModule is the module name of the WASI preview 1 imports.
const WASIModule = "wasi_snapshot_preview1"

// Import identifies a host function the guest imports from ImportModule.
type Import uint8

// The host functions. Pointers and lengths are guest linear-memory offsets
// and byte counts (i32); see Signature for the exact wasm types.
const (
	// ImportInterrupt(opcodes i64) -> i32 is polled by the guest about every
	// InterruptInterval opcodes. A non-zero answer stops the running
	// operation: it ends with StatusCPULimit.
	ImportInterrupt Import = iota
	// ImportRPCSync(methodPtr, methodLen, paramsPtr, paramsLen i32) -> i64 runs
	// a sync RPC handler inline. The answer packs the RPC status in the high
	// 32 bits and the reply length in the low 32 bits. A reply of at most
	// ExchangeDataSize bytes is already in the exchange data area; a longer
	// one is fetched with ImportRPCSyncTake into a guest-allocated buffer.
	ImportRPCSync
	// ImportRPCSyncTake(dstPtr, len i32) copies the reply of the last
	// ImportRPCSync into guest memory. len is the length ImportRPCSync gave.
	ImportRPCSyncTake
	// ImportRPCAsync(id, methodPtr, methodLen, paramsPtr, paramsLen i32) -> i32
	// starts an async RPC. 0: accepted, the host settles it later with
	// ExportRPCSettle(id, ...). Non-zero (RPCRefused): the guest rejects the
	// promise at once.
	ImportRPCAsync
	// ImportRejection(ptr, len i32) -> i32 reports an unhandled promise
	// rejection as a JS error document (see ABI.md). A non-zero answer stops
	// the running operation as ImportInterrupt does.
	ImportRejection

	importCount
)

// Imports lists every host import in declaration order.
const ImportCount = int(importCount)

// Export identifies a function the guest exports.
type Export uint8

// The guest exports. Every export that runs JavaScript returns a Status and
// leaves its result in the exchange area header (ExchResultPtr/Len).
const (
	// ExportABIVersion() -> i32 returns Version.
	ExportABIVersion Export = iota
	// ExportExchange() -> i32 returns the address of the exchange area. It
	// never changes for the life of an instance: read it once.
	ExportExchange
	// ExportAlloc(size i32) -> i32 allocates guest memory for an input that
	// does not fit the exchange data area. 0 means out of memory.
	ExportAlloc
	// ExportFree(ptr i32) frees memory from ExportAlloc. Free(0) is a no-op.
	ExportFree
	// ExportSetLimits(heapBytes i64, stackBytes i32) -> i32 sets the QuickJS
	// heap limit (0: none) and the QuickJS stack limit (0: the guest's
	// default). Returns StatusOK or StatusBadInput.
	ExportSetLimits
	// ExportEval(srcPtr, srcLen, flags i32) -> i32 evaluates a script, named
	// by the source name in the exchange area (ExchSourceNameLen).
	ExportEval
	// ExportCompile(srcPtr, srcLen i32) -> i32 compiles a script to bytecode,
	// named as for ExportEval; on StatusOK the result is the bytecode.
	ExportCompile
	// ExportEvalBytecode(ptr, len, flags i32) -> i32 evaluates bytecode made
	// by ExportCompile. The guest trusts it: the host must authenticate it.
	// The bytecode keeps the source name it was compiled with.
	ExportEvalBytecode
	// ExportDispatch(ptr, nameLen, paramsLen, flags i32) -> i32 calls the
	// handler registered with host.on(name). The event name is at ptr and
	// the JSON params follow it at ptr+nameLen.
	ExportDispatch
	// ExportRPCSettle(id, ptr, len, isError i32) -> i32 settles a pending
	// async RPC (the JSON reply, or an error message when isError is 1),
	// then goes on with the suspended async operation.
	ExportRPCSettle
	// ExportAbort() ends the suspended async operation, if any: pending RPCs
	// are forgotten and queued promise jobs dropped.
	ExportAbort

	exportCount
)

// ExportCount is the number of guest exports.
const ExportCount = int(exportCount)

// The stop guard. The committed guest has none: each backend adds the one
// its engine needs when it compiles the guest, with guest/wasmguard (after
// wasm-opt, which must never see a guard: it could hoist the guard's load
// out of a loop that never writes it). Every loop of the guest, but those
// of GuardSkip, then begins with a test of a stop flag, so a host that sets
// the flag (from any thread, while an export runs) makes the guest trap at
// its next loop iteration, even inside a builtin that never polls
// ImportInterrupt. The instance is then dead, as after any trap.

// StopGlobal is the export name of the stop global the guard adds when the
// flag is a global: a mutable i32, 0 at instantiation, tested as
// `if (global.get $kafig_stop) unreachable` (wazero, whose globals the host
// may set while the guest runs).
const StopGlobal = "kafig_stop"

// StopWord is the export name of an immutable i32 global that holds the
// address of a 4-byte word of guest memory, 0 at instantiation, that the
// guard can test instead (`if (i32.load addr) unreachable`): for an engine
// whose globals only the running thread may touch (wasmtime), while any
// thread may write memory.
const StopWord = "kafig_stop_word"

// GuardSkip names the guest function whose loops get no guard: the QuickJS
// bytecode interpreter (JS_CallInternal), which polls ImportInterrupt's
// counter at every call and every jump of the script, so its dispatch loop
// would pay the guard once per opcode for nothing. Its other loops are
// bounded by the limits of one function (arguments, locals, stack).
const GuardSkip = "JS_CallInternal"

// YieldOpcodes is the argument of ImportInterrupt when the loop guard calls
// it as a yield rather than a poll: every YieldEvery iterations of any
// loop, so that the host's code runs now and then even while the guest is
// inside a builtin that never polls. That matters to a host whose engine
// runs guest code on a goroutine it cannot preempt (wazero): Go's garbage
// collector stops the world by waiting for every goroutine to reach a safe
// point, and without the yield a non-polling loop would freeze the whole
// process. The host answers 0 (non-zero traps) and must not count it as a
// poll: the guest's opcode counter never reaches this value.
const YieldOpcodes = ^uint64(0)

// YieldEvery is the number of loop iterations between two yields.
const YieldEvery = 1 << 16

// Status is what an export that runs JavaScript returns.
type Status uint32

const (
	// StatusOK: the result is the completion value as JSON.
	StatusOK Status = iota
	// StatusJSError: a JavaScript exception; the result is a JS error
	// document {"name","message","stack"} (JSON).
	StatusJSError
	// StatusCPULimit: the host's interrupt answer stopped the operation; the
	// result is a message.
	StatusCPULimit
	// StatusMemoryLimit: an allocation failed (heap limit or linear memory);
	// the result is a message.
	StatusMemoryLimit
	// StatusStackOverflow: the QuickJS stack check fired and the error was
	// not handled; the result is a message.
	StatusStackOverflow
	// StatusRuntimeError: any other failure (unreadable bytecode, a result
	// that can never settle); the result is a message.
	StatusRuntimeError
	// StatusPending: an async operation waits for RPC replies. The host
	// calls ExportRPCSettle (or ExportAbort); no result.
	StatusPending
	// StatusNoHandler: ExportDispatch found no handler for the name.
	StatusNoHandler
	// StatusBadInput: the arguments of the call were malformed (for example
	// a pointer range outside memory); the result is a message.
	StatusBadInput

	statusCount
)

// RPC statuses: the high half of ImportRPCSync's answer, and isError of
// ExportRPCSettle.
const (
	RPCOK    = 0 // the reply is JSON
	RPCError = 1 // the reply is an error message (UTF-8)
)

// RPCRefused is ImportRPCAsync's answer when the host will not start the
// call (too many pending, or no async operation is running).
const RPCRefused = 1

// Flags for ExportEval, ExportEvalBytecode and ExportDispatch.
const (
	// FlagAsync enables top-level await, drains the promise job queue and
	// services async RPCs until the result settles.
	FlagAsync = 1 << 0
)

// The exchange area: a guest-owned block at the address ExportExchange
// returns. The header fields are little-endian.
const (
	ExchResultPtr     = 0  // u32: where the result of the last call is
	ExchResultLen     = 4  // u32: its length
	ExchHeapUsed      = 8  // u64: bytes the QuickJS heap holds now
	ExchHeapLimit     = 16 // u64: the heap limit in force (0: none)
	ExchOpcodes       = 24 // u64: opcodes run, counted in InterruptInterval steps; the host may write 0 to reset
	ExchPending       = 32 // u32: async RPCs waiting to be settled
	ExchDataCap       = 36 // u32: ExchangeDataSize, for checking
	ExchSourceNameLen = 40 // u32: length of the source name at ExchSourceName (0: DefaultSourceName); see below
	ExchHeaderSize    = 64 // the data area starts here

	// ExchangeDataSize is the size of the data area. Inputs that fit are
	// written there instead of allocating; results that fit come back there.
	ExchangeDataSize = 64 * 1024

	// ExchSourceName is where the source name area (MaxSourceNameLen bytes)
	// starts: right after the data area. The name (UTF-8, no NUL) and its
	// length at ExchSourceNameLen are what the next ExportEval or
	// ExportCompile uses as the script's file name in stacks and
	// SyntaxErrors. The host writes them before the call; the guest reads
	// them and sets ExchSourceNameLen back to 0 at the start of every export
	// that begins an operation (eval, compile, eval of bytecode, dispatch),
	// so a name never outlives the call it was written for.
	ExchSourceName = ExchHeaderSize + ExchangeDataSize
	// ExchangeSize is the size of the whole exchange area.
	ExchangeSize = ExchSourceName + MaxSourceNameLen
)

// MaxSourceNameLen is the longest source name, in bytes (UTF-8, no NUL). A
// longer ExchSourceNameLen makes ExportEval and ExportCompile fail with
// StatusBadInput.
const MaxSourceNameLen = 1024

// DefaultSourceName is the file name of a script evaluated or compiled
// without a source name, as it shows in stacks (`at f (<eval>:3:5)`).
const DefaultSourceName = "<eval>"

// InterruptInterval is how many QuickJS poll points (calls and backward
// jumps, roughly opcodes) pass between two ImportInterrupt calls.
const InterruptInterval = 10000

// Stack and memory facts of the guest build.
const (
	// GuestStackSize is the shadow stack the guest is linked with; it sits
	// at the bottom of linear memory so that an overflow traps instead of
	// overwriting the heap.
	GuestStackSize = 1 << 20
	// MaxJSStack is the largest QuickJS stack limit ExportSetLimits takes:
	// the rest of GuestStackSize is a margin for C code below the check.
	MaxJSStack = GuestStackSize - 128*1024
	// DefaultJSStack is the QuickJS stack limit when the host gives 0.
	DefaultJSStack = 256 * 1024
	// PageSize is the wasm page size.
	PageSize = 65536
)

// MaxMethodLen is the longest RPC method or event name, in bytes.
const MaxMethodLen = 256
