package kafig

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newRuntime returns a Runtime on a fake backend, closed with the test.
func newRuntime(t *testing.T, opts ...Option) (*Runtime, *fakeBackend) {
	t.Helper()
	fb := newFake()
	rt, err := New(context.Background(), fb, append([]Option{withWASM(fakeWASM)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rt.Close(context.Background())) })
	return rt, fb
}

func newInst(t *testing.T, opts ...InstanceOption) (*Instance, *fakeInstance) {
	t.Helper()
	rt, fb := newRuntime(t)
	in, err := rt.Instance(context.Background(), opts...)
	require.NoError(t, err)
	return in, fb.last()
}

// TestNoEngineDependency asserts the core imports no WebAssembly engine.
func TestNoEngineDependency(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		require.NotContains(t, dep, "wazero")
		require.NotContains(t, dep, "wasmtime")
	}
	require.Contains(t, string(out), "github.com/kafig-dev/kafig/abi")
}
