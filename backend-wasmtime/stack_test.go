//go:build cgo

package wasmtimebackend

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

const crashHelperEnv = "KAFIG_WASMTIME_CRASH_HELPER"

// crashHelper runs in a child process: deep recursion with a max wasm stack
// as large as the thread's stack and the thread stack check off.
func crashHelper() {
	checkThreadStack.Store(false)
	ws := defaultThreadStack()
	fmt.Printf("default thread stack %d KiB, max wasm stack %d KiB\n", ws>>10, ws>>10)
	m, err := New(WithMaxWasmStack(ws)).Compile(context.Background(), fakeWasm)
	if err != nil {
		fmt.Println("compile:", err)
		os.Exit(3)
	}
	in, err := m.Instantiate(context.Background(), backend.InstanceConfig{})
	if err != nil {
		fmt.Println("instantiate:", err)
		os.Exit(3)
	}
	err = in.Call(context.Background(), abi.ExportCompile, []uint64{0xFFFFFFFF, 0})
	fmt.Println("survived:", err)
	os.Exit(0)
}

// TestThreadStackCrash shows why the thread stack check exists: a max wasm
// stack as large as the thread stack lets the guest run off the real stack,
// which kills the process with SIGSEGV instead of trapping. With the check
// (the default) Compile refuses such a setting, and a call on a thread with
// too little stack left fails cleanly.
func TestThreadStackCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	lines := strings.Split(string(out), "\n")
	if len(lines) > 12 {
		lines = lines[:12]
	}
	t.Logf("child: %v\n%s", err, strings.Join(lines, "\n"))
	require.Error(t, err, "the child survived")
	assert.Contains(t, string(out), "SIGSEGV")
}

func TestThreadStackFree(t *testing.T) {
	free := threadStackFree()
	def := uint64(defaultThreadStack())
	t.Logf("this thread has %d KiB of stack left; default thread stack %d KiB", free>>10, def>>10)
	assert.Greater(t, free, uint64(DefaultMaxWasmStack+stackReserve))
}

// TestCLayout proves that the wasmtime types restated in kafig_wt.h agree
// with the real v39 headers: kafig_wt_check.c is compiled against both.
func TestCLayout(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/bytecodealliance/wasmtime-go/v39").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	inc := filepath.Join(strings.TrimSpace(string(out)), "build", "include")
	obj := filepath.Join(t.TempDir(), "check.o")
	cmd := exec.Command(cc, "-std=c11", "-Wall", "-Werror", "-I", inc, "-I", ".", "-c", "testdata/kafig_wt_check.c", "-o", obj)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", b)
}
