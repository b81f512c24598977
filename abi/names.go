package abi

// ValType is a wasm value type used by the ABI.
type ValType uint8

const (
	I32 ValType = iota + 1
	I64
)

// Name returns the wasm text name of t.
func (t ValType) Name() string {
	switch t {
	case I32:
		return "i32"
	case I64:
		return "i64"
	}
	return "unknown"
}

// Signature is a function type of the ABI.
type Signature struct {
	Params  []ValType
	Results []ValType
}

// Name returns the import's function name in ImportModule.
func (i Import) Name() string {
	switch i {
	case ImportInterrupt:
		return "interrupt"
	case ImportRPCSync:
		return "rpc_sync"
	case ImportRPCSyncTake:
		return "rpc_sync_take"
	case ImportRPCAsync:
		return "rpc_async"
	case ImportRejection:
		return "rejection"
	}
	return ""
}

// Signature returns the import's wasm function type.
func (i Import) Signature() Signature {
	switch i {
	case ImportInterrupt:
		return Signature{[]ValType{I64}, []ValType{I32}}
	case ImportRPCSync:
		return Signature{[]ValType{I32, I32, I32, I32}, []ValType{I64}}
	case ImportRPCSyncTake:
		return Signature{[]ValType{I32, I32}, nil}
	case ImportRPCAsync:
		return Signature{[]ValType{I32, I32, I32, I32, I32}, []ValType{I32}}
	case ImportRejection:
		return Signature{[]ValType{I32, I32}, []ValType{I32}}
	}
	return Signature{}
}

// Name returns the export's name.
func (e Export) Name() string {
	switch e {
	case ExportABIVersion:
		return "kafig_abi_version"
	case ExportExchange:
		return "kafig_exchange"
	case ExportAlloc:
		return "kafig_alloc"
	case ExportFree:
		return "kafig_free"
	case ExportSetLimits:
		return "kafig_set_limits"
	case ExportEval:
		return "kafig_eval"
	case ExportCompile:
		return "kafig_compile"
	case ExportEvalBytecode:
		return "kafig_eval_bytecode"
	case ExportDispatch:
		return "kafig_dispatch"
	case ExportRPCSettle:
		return "kafig_rpc_settle"
	case ExportAbort:
		return "kafig_abort"
	}
	return ""
}

// Signature returns the export's wasm function type.
func (e Export) Signature() Signature {
	switch e {
	case ExportABIVersion, ExportExchange:
		return Signature{nil, []ValType{I32}}
	case ExportAlloc:
		return Signature{[]ValType{I32}, []ValType{I32}}
	case ExportFree:
		return Signature{[]ValType{I32}, nil}
	case ExportSetLimits:
		return Signature{[]ValType{I64, I32}, []ValType{I32}}
	case ExportEval, ExportEvalBytecode:
		return Signature{[]ValType{I32, I32, I32}, []ValType{I32}}
	case ExportCompile:
		return Signature{[]ValType{I32, I32}, []ValType{I32}}
	case ExportDispatch, ExportRPCSettle:
		return Signature{[]ValType{I32, I32, I32, I32}, []ValType{I32}}
	case ExportAbort:
		return Signature{nil, nil}
	}
	return Signature{}
}

// Name returns the status's name as used in the C header, e.g. "ok".
func (s Status) Name() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusJSError:
		return "js_error"
	case StatusCPULimit:
		return "cpu_limit_exceeded"
	case StatusMemoryLimit:
		return "memory_limit_exceeded"
	case StatusStackOverflow:
		return "stack_overflow"
	case StatusRuntimeError:
		return "runtime_error"
	case StatusPending:
		return "pending"
	case StatusNoHandler:
		return "no_handler"
	case StatusBadInput:
		return "bad_input"
	}
	return "unknown"
}

// StatusCount is the number of statuses.
const StatusCount = int(statusCount)

// WASIImports lists the only WASI preview 1 functions the guest may import.
// A test of the guest asserts its import section is exactly these plus the
// ImportModule functions.
const WASIImports = "clock_time_get fd_close fd_seek fd_write random_get"
