//go:build cgo

package wasmtimebackend

import (
	"context"
	_ "embed"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/bytecodealliance/wasmtime-go/v39"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

//go:embed testdata/fake.wasm
var fakeWasm []byte

//go:embed testdata/fake.wat
var fakeWat string

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		crashHelper()
		return
	}
	goleak.VerifyTestMain(m)
}

// wat compiles a variant of the fake guest: each pair in repl replaces old
// with new in fake.wat.
func wat(t testing.TB, repl ...string) []byte {
	t.Helper()
	src := fakeWat
	for k := 0; k+1 < len(repl); k += 2 {
		require.Contains(t, src, repl[k], "replacement target")
		src = strings.Replace(src, repl[k], repl[k+1], 1)
	}
	b, err := wasmtime.Wat2Wasm(src)
	require.NoError(t, err)
	return b
}

// recorder is a set of host functions that record their calls.
type recorder struct {
	mu    sync.Mutex
	calls map[abi.Import][][]uint64
	// answer, when set, computes the results of an import from its params.
	answer func(ctx context.Context, mem backend.Memory, imp abi.Import, stack []uint64)
}

func (r *recorder) imports() (imps [abi.ImportCount]backend.HostFunc) {
	r.calls = map[abi.Import][][]uint64{}
	for k := range abi.ImportCount {
		imp := abi.Import(k)
		np := len(imp.Signature().Params)
		imps[k] = func(ctx context.Context, mem backend.Memory, stack []uint64) {
			r.mu.Lock()
			r.calls[imp] = append(r.calls[imp], append([]uint64(nil), stack[:np]...))
			r.mu.Unlock()
			if r.answer != nil {
				r.answer(ctx, mem, imp, stack)
			}
		}
	}
	return imps
}

func (r *recorder) got(imp abi.Import) [][]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[imp]
}

func compileFake(t testing.TB, opts ...Option) backend.Module {
	t.Helper()
	return compileWasm(t, fakeWasm, opts...)
}

// unguardableFake is the fake guest with a custom section the stop guard
// does not know (it refuses to rewrite around one): its backstop is epoch
// interruption.
func unguardableFake() []byte {
	return append(slices.Clip(fakeWasm), 0x00, 0x06, 0x04, 't', 'e', 's', 't', 0x00)
}

func compileWasm(t testing.TB, wasm []byte, opts ...Option) backend.Module {
	t.Helper()
	m, err := New(opts...).Compile(context.Background(), wasm)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func instantiate(t testing.TB, m backend.Module, cfg backend.InstanceConfig) backend.Instance {
	t.Helper()
	in, err := m.Instantiate(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in
}

// call runs an export with the given params and returns the stack.
func call(t testing.TB, in backend.Instance, fn abi.Export, params ...uint64) []uint64 {
	t.Helper()
	stack := make([]uint64, max(len(params), 1, len(fn.Signature().Results)))
	copy(stack, params)
	require.NoError(t, in.Call(context.Background(), fn, stack))
	return stack
}
