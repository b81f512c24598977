package conformance

import (
	"context"
	"sync"

	"github.com/tetratelabs/wazero"

	wazerobackend "github.com/kafig-dev/kafig/backend-wazero"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// backendEntry is one backend under test: a name for the subtests and a
// constructor that returns a fresh backend value for each kafig.New.
type backendEntry struct {
	name string
	new  func() backend.Backend
}

// backends is the table every area runs on. Adding a backend is one line
// here (or in a build-tagged file, as backends_cgo.go does for wasmtime).
var backends = []backendEntry{
	{"wazero", func() backend.Backend { return wazerobackend.New(wazerobackend.WithCompilationCache(wazeroCache())) }},
}

// The wazero runtimes of the suite share one in-memory compilation cache:
// the guest is compiled once per process instead of once per kafig.New.
var (
	wazeroCacheOnce sync.Once
	wazeroCacheVal  wazero.CompilationCache
)

func wazeroCache() wazero.CompilationCache {
	wazeroCacheOnce.Do(func() { wazeroCacheVal = wazero.NewCompilationCache() })
	return wazeroCacheVal
}

// closeBackends frees what the table's constructors share. The suite calls
// it once, after every runtime is closed.
func closeBackends(ctx context.Context) {
	if wazeroCacheVal != nil {
		_ = wazeroCacheVal.Close(ctx)
	}
}
