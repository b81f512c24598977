//go:build cgo

package conformance

import (
	wasmtimebackend "github.com/kafig-dev/kafig/backend-wasmtime"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// wasmtime needs cgo; without it the suite runs on the other backends.
// wasmtime-epochs is the same backend with its other backstop (epoch
// interruption instead of the stop guard), which must behave the same.
func init() {
	backends = append(backends,
		backendEntry{"wasmtime", func() backend.Backend { return wasmtimebackend.New() }},
		backendEntry{"wasmtime-epochs", func() backend.Backend { return wasmtimebackend.New(wasmtimebackend.WithEpochBackstop(true)) }},
	)
}
