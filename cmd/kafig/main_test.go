package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The tests drive the real binary, built once by TestMain.
var (
	kafigBin string // the binary under test
	testHome string // HOME and XDG_CACHE_HOME of the runs: the guest cache is shared
	repoRoot string // the repository, for examples/
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "kafig-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	kafigBin = filepath.Join(tmp, "kafig")
	testHome = filepath.Join(tmp, "home")
	if err := os.MkdirAll(testHome, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	build := []string{"build", "-o", kafigBin}
	if raceEnabled {
		build = append(build, "-race")
	}
	if out, err := exec.Command("go", append(build, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	wd, _ := os.Getwd()
	repoRoot = filepath.Join(wd, "..", "..")

	// Compile the guest once so that the tests, which run in parallel, start
	// from a warm cache.
	warm := []string{"wazero"}
	if cgoEnabled {
		warm = append(warm, "wasmtime")
	}
	for _, b := range warm {
		cmd := exec.Command(kafigBin, "-backend", b, "-e", "1")
		cmd.Env = testEnv(nil)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "warming the %s cache: %v\n%s", b, err, out)
			return 1
		}
	}

	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	return code
}

// testEnv is the environment of a run: a home of its own, no colours, no
// history, plus extra.
func testEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "HOME", "XDG_CACHE_HOME", "NO_COLOR", "KAFIG_HISTORY", "TERM":
		default:
			env = append(env, kv)
		}
	}
	env = append(env,
		"HOME="+testHome,
		"XDG_CACHE_HOME="+filepath.Join(testHome, ".cache"),
		"NO_COLOR=1",
		"KAFIG_HISTORY=",
		"TERM=dumb",
	)
	return append(env, extra...)
}

// result is what a run printed and its exit status.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// invocation runs the binary with args and stdin (nil: none) in dir (""
// the package directory).
type invocation struct {
	args  []string
	stdin string
	dir   string
	env   []string
}

func (r invocation) do(t *testing.T) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kafigBin, r.args...)
	cmd.Env = testEnv(r.env)
	cmd.Dir = r.dir
	cmd.Stdin = strings.NewReader(r.stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("kafig %s: %v", strings.Join(r.args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("kafig %s: timed out\n%s", strings.Join(r.args, " "), res)
	}
	// Never a Go stack dump, whatever happened.
	for _, bad := range []string{"goroutine ", "panic:", "runtime error:"} {
		if strings.Contains(res.stderr, bad) {
			t.Fatalf("kafig %s: stderr has %q\n%s", strings.Join(r.args, " "), bad, res)
		}
	}
	return res
}

// runKafig runs the binary with args and no stdin.
func runKafig(t *testing.T, args ...string) result {
	t.Helper()
	return invocation{args: args}.do(t)
}

// expect checks the exit status and that stdout and stderr contain the given
// strings.
func (r result) expect(t *testing.T, code int, stdout, stderr []string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\n%s", r.code, code, r)
	}
	for _, s := range stdout {
		if !strings.Contains(r.stdout, s) {
			t.Fatalf("stdout lacks %q\n%s", s, r)
		}
	}
	for _, s := range stderr {
		if !strings.Contains(r.stderr, s) {
			t.Fatalf("stderr lacks %q\n%s", s, r)
		}
	}
}

// writeFiles creates files (name -> content) in a new directory.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
