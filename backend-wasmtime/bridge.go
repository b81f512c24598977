//go:build cgo

package wasmtimebackend

import (
	"fmt"
	"reflect"
	"strings"
	"unsafe"

	"github.com/bytecodealliance/wasmtime-go/v39"
)

// rawPtr returns the C pointer that a wasmtime-go object wraps.
//
// wasmtime-go v39 exposes neither unchecked calls nor the epoch deadline
// callback, so the hot path (kafig_wt.c) talks to the C API itself, and
// needs the config, engine, module and linker pointers that wasmtime-go
// keeps in an unexported _ptr field. The field is found by name and its type
// is checked against ctype (e.g. "wasm_engine_t"), so a wasmtime-go release
// that changes this layout fails Compile with an error rather than
// misbehaving. Stores are made by the C side (kafig_inst_init), not by
// wasmtime-go.
func rawPtr(obj any, ctype string) (unsafe.Pointer, error) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil, fmt.Errorf("kafig: wasmtime bridge: %T is not a live object", obj)
	}
	f := v.Elem().FieldByName("_ptr")
	if !f.IsValid() || f.Kind() != reflect.Pointer || !strings.Contains(f.Type().String(), ctype) {
		return nil, fmt.Errorf("kafig: wasmtime bridge: %T has no _ptr field of type *%s (wasmtime-go changed?)", obj, ctype)
	}
	p := f.UnsafePointer()
	if p == nil {
		return nil, fmt.Errorf("kafig: wasmtime bridge: %T is closed", obj)
	}
	return p, nil
}

func enginePtr(e *wasmtime.Engine) (unsafe.Pointer, error) { return rawPtr(e, "wasm_engine_t") }

func modulePtr(m *wasmtime.Module) (unsafe.Pointer, error) { return rawPtr(m, "wasmtime_module") }

func linkerPtr(l *wasmtime.Linker) (unsafe.Pointer, error) { return rawPtr(l, "wasmtime_linker") }

func configPtr(c *wasmtime.Config) (unsafe.Pointer, error) { return rawPtr(c, "wasm_config_t") }
