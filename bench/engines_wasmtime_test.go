//go:build cgo

package bench

import (
	wasmtimebackend "github.com/kafig-dev/kafig/backend-wasmtime"
	"github.com/kafig-dev/kafig/kafig/backend"
)

func init() {
	kafigEngines = append(kafigEngines,
		&kafigEngine{name: wasmtimeName, newBackend: func() backend.Backend { return wasmtimebackend.New() }},
		&kafigEngine{name: wasmtimeNoBackstop, newBackend: func() backend.Backend {
			return wasmtimebackend.New(wasmtimebackend.WithBackstop(false))
		}},
		// Only in BenchmarkNewInstance: the opt-in pooling allocator. Its
		// slots outnumber the benchmark's live instances (batches of 100).
		&kafigEngine{name: wasmtimePoolName, newBackend: func() backend.Backend {
			return wasmtimebackend.New(wasmtimebackend.WithInstancePool(256))
		}},
	)
}
