//go:build !cgo

package main

// cgoEnabled reports whether this binary was built with cgo, which the
// wasmtime backend needs.
const cgoEnabled = false
