// Package nativeqjs runs the native QuickJS baseline of kafig's benchmarks.
//
// guest/native.sh builds QuickJS natively (gcc -O2, the same pinned and
// patched source as the guest) into guest/build/native. Start links a small
// C harness (csrc/harness.c) against that libquickjs.a and starts it as a
// subprocess. The harness times its own loops with CLOCK_MONOTONIC, so a
// benchmark sends one command per b.N round and no pipe round trip is
// counted per iteration.
//
// The package needs no cgo: the harness is compiled with the system's C
// compiler at run time.
package nativeqjs

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed csrc/harness.c
var harnessC string

// Harness is a running native harness. Its methods are safe for concurrent
// use (commands are serialized).
type Harness struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	srcs map[string]int
	dir  string
}

// Build runs guest/native.sh (repoRoot is the monorepo's root) unless its
// outputs are there and fresh, and returns the directory with libquickjs.a
// and quickjs.h. The first build fetches the QuickJS source with apt.
func Build(ctx context.Context, repoRoot string) (string, error) {
	script := filepath.Join(repoRoot, "guest", "native.sh")
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("nativeqjs: %s not found: %w", script, err)
	}
	out := filepath.Join(repoRoot, "guest", "build", "native")
	cmd := exec.CommandContext(ctx, script, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("nativeqjs: %s failed: %w\n%s", script, err, tail(b, 2000))
	}
	for _, f := range []string{"libquickjs.a", "quickjs.h"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			return "", fmt.Errorf("nativeqjs: native.sh did not produce %s: %w", f, err)
		}
	}
	return out, nil
}

// Start compiles the harness against nativeDir (see Build) with cc -O2 in a
// temporary directory and starts it.
func Start(ctx context.Context, nativeDir string) (*Harness, error) {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		return nil, fmt.Errorf("nativeqjs: no C compiler (%s): %w", cc, err)
	}
	dir, err := os.MkdirTemp("", "kafig-bench-native-")
	if err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "harness.c")
	bin := filepath.Join(dir, "harness")
	if err := os.WriteFile(src, []byte(harnessC), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	build := exec.CommandContext(ctx, cc, "-O2", "-I", nativeDir, "-o", bin, src,
		filepath.Join(nativeDir, "libquickjs.a"), "-lm", "-lpthread", "-ldl")
	if b, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("nativeqjs: compiling the harness: %w\n%s", err, tail(b, 2000))
	}
	cmd := exec.Command(bin)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Harness{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<16), srcs: map[string]int{}, dir: dir}, nil
}

// Close stops the harness and removes its files.
func (h *Harness) Close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = io.WriteString(h.in, "quit\n")
	_ = h.in.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		err = <-done
	}
	os.RemoveAll(h.dir)
	return err
}

// roundTrip sends a command (and an optional payload) and returns the
// fields of the answer after "ok".
func (h *Harness) roundTrip(cmd string, payload string) (string, error) {
	if _, err := io.WriteString(h.in, cmd+"\n"+payload); err != nil {
		return "", fmt.Errorf("nativeqjs: harness gone: %w", err)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("nativeqjs: harness gone: %w", err)
	}
	line = strings.TrimSuffix(line, "\n")
	if rest, ok := strings.CutPrefix(line, "ok "); ok {
		return rest, nil
	}
	return "", errors.New("nativeqjs: " + line)
}

func (h *Harness) source(src string) (int, error) {
	if i, ok := h.srcs[src]; ok {
		return i, nil
	}
	rest, err := h.roundTrip("src "+strconv.Itoa(len(src)), src)
	if err != nil {
		return 0, err
	}
	i, err := strconv.Atoi(rest)
	if err != nil {
		return 0, fmt.Errorf("nativeqjs: bad answer %q", rest)
	}
	h.srcs[src] = i
	return i, nil
}

// Timing is what the harness measured over a loop.
type Timing struct {
	Wall time.Duration // CLOCK_MONOTONIC
	CPU  time.Duration // CLOCK_PROCESS_CPUTIME_ID
}

// Eval evaluates src n times in one fresh runtime and context (each
// iteration: JS_Eval in global scope and JSON.stringify of the result) and
// returns the timing of the n iterations and the last result as JSON.
func (h *Harness) Eval(src string, n int) (Timing, string, error) {
	return h.eval("eval", src, n)
}

// EvalCompiled is Eval with src compiled to bytecode once (untimed): each
// iteration reads the bytecode and runs it.
func (h *Harness) EvalCompiled(src string, n int) (Timing, string, error) {
	return h.eval("evalc", src, n)
}

func (h *Harness) eval(verb, src string, n int) (Timing, string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, err := h.source(src)
	if err != nil {
		return Timing{}, "", err
	}
	rest, err := h.roundTrip(fmt.Sprintf("%s %d %d", verb, i, n), "")
	if err != nil {
		return Timing{}, "", err
	}
	wall, rest2, _ := strings.Cut(rest, " ")
	cpu, result, _ := strings.Cut(rest2, " ")
	t, err := timing(wall, cpu)
	if err != nil {
		return Timing{}, "", fmt.Errorf("nativeqjs: bad answer %q", rest)
	}
	return t, result, nil
}

// NewContexts creates and frees n runtime+context pairs and returns the
// timing of creating them.
func (h *Harness) NewContexts(n int) (Timing, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rest, err := h.roundTrip("new "+strconv.Itoa(n), "")
	if err != nil {
		return Timing{}, err
	}
	wall, cpu, _ := strings.Cut(rest, " ")
	t, err := timing(wall, cpu)
	if err != nil {
		return Timing{}, fmt.Errorf("nativeqjs: bad answer %q", rest)
	}
	return t, nil
}

func timing(wall, cpu string) (Timing, error) {
	w, err := strconv.ParseInt(wall, 10, 64)
	if err != nil {
		return Timing{}, err
	}
	c, err := strconv.ParseInt(cpu, 10, 64)
	if err != nil {
		return Timing{}, err
	}
	return Timing{time.Duration(w), time.Duration(c)}, nil
}

// RSSPerContexts creates n live runtime+context pairs and returns the growth
// of the harness's RSS in bytes.
func (h *Harness) RSSPerContexts(n int) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rest, err := h.roundTrip("mem "+strconv.Itoa(n), "")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(rest, 10, 64)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
