//go:build cgo

package wasmtimebackend

import (
	"strings"

	"github.com/kafig-dev/kafig/abi"
)

// sig is a function type of the ABI with the stack length it needs.
type sig struct {
	params, results []abi.ValType
	n               int // max(len(params), len(results))
}

func mkSig(s abi.Signature) sig {
	return sig{params: s.Params, results: s.Results, n: max(len(s.Params), len(s.Results))}
}

var (
	exportSigs [abi.ExportCount]sig
	importSigs [abi.ImportCount]sig
	// wasiSigs are the types of the WASI preview 1 functions in
	// abi.WASIImports.
	wasiSigs = map[string]abi.Signature{
		"clock_time_get": {Params: []abi.ValType{abi.I32, abi.I64, abi.I32}, Results: []abi.ValType{abi.I32}},
		"fd_close":       {Params: []abi.ValType{abi.I32}, Results: []abi.ValType{abi.I32}},
		"fd_seek":        {Params: []abi.ValType{abi.I32, abi.I64, abi.I32, abi.I32}, Results: []abi.ValType{abi.I32}},
		"fd_write":       {Params: []abi.ValType{abi.I32, abi.I32, abi.I32, abi.I32}, Results: []abi.ValType{abi.I32}},
		"random_get":     {Params: []abi.ValType{abi.I32, abi.I32}, Results: []abi.ValType{abi.I32}},
	}
)

func init() {
	for e := range abi.ExportCount {
		exportSigs[e] = mkSig(abi.Export(e).Signature())
	}
	for i := range abi.ImportCount {
		importSigs[i] = mkSig(abi.Import(i).Signature())
	}
}

func sameTypes(a, b []abi.ValType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sigString(s abi.Signature) string {
	str := "("
	for i, t := range s.Params {
		if i > 0 {
			str += " "
		}
		str += t.Name()
	}
	str += ") -> ("
	for i, t := range s.Results {
		if i > 0 {
			str += " "
		}
		str += t.Name()
	}
	return str + ")"
}

// cleanMsg trims what wasmtime appends to its error messages when
// RUST_BACKTRACE is set (a native backtrace) and surrounding space.
func cleanMsg(s string) string {
	if i := strings.Index(s, "Stack backtrace:"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func cleanErr(err error) string { return cleanMsg(err.Error()) }

// trapSummary shortens a wasmtime trap message ("error while executing at
// wasm backtrace: ... Caused by: wasm trap: ...") to its cause.
func trapSummary(s string) string {
	s = cleanMsg(s)
	i := strings.LastIndex(s, "Caused by:")
	if i < 0 {
		return s
	}
	var parts []string
	for _, line := range strings.Split(s[i+len("Caused by:"):], "\n") {
		line = strings.TrimSpace(line)
		if j := strings.Index(line, ": "); j > 0 && strings.Trim(line[:j], "0123456789") == "" {
			line = line[j+2:]
		}
		if line != "" {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, ": ")
}
