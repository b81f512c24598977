//go:build cgo

package conformance

import (
	wasmtimebackend "github.com/kafig-dev/kafig/backend-wasmtime"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// wasmtime needs cgo; without it the suite runs on the other backends.
func init() {
	backends = append(backends, backendEntry{"wasmtime", func() backend.Backend { return wasmtimebackend.New() }})
}
