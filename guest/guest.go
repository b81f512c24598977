// Package guest embeds kafig.wasm: QuickJS and the kafig shim compiled to
// WebAssembly (WASI reactor) and pre-initialized with Wizer.
//
// Users of package kafig never need the C toolchain: the artifact is
// committed. `make guest` rebuilds it from pinned inputs (see README.md in
// this folder) and `make guest-check` verifies the rebuild is byte-identical.
package guest

import _ "embed"

// WASM is the guest module.
//
// Built by: make guest (guest/build.sh)
//
//go:embed kafig.wasm
var WASM string

// Bytes returns a fresh copy of the guest module.
func Bytes() []byte { return []byte(WASM) }
