//go:build !cgo

package wasmtimebackend

import (
	"context"
	"errors"

	"github.com/kafig-dev/kafig/kafig/backend"
)

// errNoCgo is what Compile returns when the package is built without cgo.
var errNoCgo = errors.New("kafig: the wasmtime backend needs cgo (CGO_ENABLED=1)")

type wasmtimeBackend struct {
	opts options
}

// Compile implements backend.Backend. Without cgo there is no wasmtime.
func (b *wasmtimeBackend) Compile(ctx context.Context, wasm []byte) (backend.Module, error) {
	return nil, errNoCgo
}

func threadStackSize() int { return 0 }
