package conformance

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

// QuickJS's own tests, from the pinned source package, run inside the
// sandbox on every backend and natively with qjs built from the same
// source (guest/native.sh); the verdict per file must be the same.
//
// The files that need quickjs-libc modules or ES modules are left out:
// test_std.js and test_worker.js (import std/os), test_bjson.js (a native
// module), test_cyclic_import.js (ES modules). Of the rest, test_builtin.js
// uses the std and os globals of `qjs --std` for std.gc() and
// os.setTimeout(); the sandbox gets a small shim for them (below), and its
// timers run, in order, after the script and its promise jobs.

// qjsFiles are the test files and the qjs flags upstream's Makefile runs
// them with.
var qjsFiles = []struct {
	name  string
	flags []string
}{
	{"test_closure.js", nil},
	{"test_language.js", nil},
	{"test_builtin.js", []string{"--std"}},
	{"test_loop.js", nil},
	{"test_bigint.js", nil},
}

// qjsShim is the sandbox's stand-in for what the tests take from qjs: print
// and console.log (output discarded), std.gc and os.setTimeout (callbacks
// run after the script, see qjsEpilogue).
//
// The sandbox cannot call QuickJS's cycle collector (JS_RunGC) directly,
// and FinalizationRegistry callbacks only get queued when it runs. std.gc()
// provokes it instead: QuickJS runs it when the heap grows past its GC
// threshold, which it then sets to 1.5 times what the collection left.
// std.gc() makes cyclic garbage (only the collector frees it) until the
// heap passes any threshold these tests reach: at least one collection
// runs, and the threshold it leaves stays low for the next call.
const qjsShim = `
globalThis.print = function () {};
globalThis.console = { log: print };
globalThis.__timers = [];
globalThis.std = { gc() { for (let i = 0; i < 4e5; i++) { const o = {}; o.o = o } } };
globalThis.os = { platform: "wasi", setTimeout(fn, ms) { __timers.push(fn); return __timers.length } };
`

// qjsEpilogue runs the timers, as qjs's event loop would after the script.
const qjsEpilogue = `
;for (const fn of __timers.splice(0)) { await null; await null; fn() }
`

const (
	qjsNativeTimeout  = 60 * time.Second
	qjsSandboxTimeout = 90 * time.Second
)

var (
	nativeOnce sync.Once
	nativeQJS  string // path to qjs, or "" with nativeErr
	nativeErr  error
)

// nativeQuickJS builds (once) and returns the native qjs and its tests
// folder.
func nativeQuickJS(t *testing.T) (qjs, tests string) {
	t.Helper()
	nativeOnce.Do(func() {
		guestDir, err := filepath.Abs("../guest")
		if err != nil {
			nativeErr = err
			return
		}
		out := filepath.Join(guestDir, "build", "native")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(guestDir, "native.sh"), out)
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Run(); err != nil {
			nativeErr = fmt.Errorf("guest/native.sh: %v\n%s", err, lastLines(buf.String(), 20))
			return
		}
		nativeQJS = filepath.Join(out, "qjs")
	})
	if nativeErr != nil {
		t.Skipf("no native QuickJS: %v", nativeErr)
	}
	return nativeQJS, filepath.Join(filepath.Dir(nativeQJS), "tests")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// verdict is the outcome of one test file in one place.
type verdict struct {
	pass   bool
	detail string
	took   time.Duration
}

func (v verdict) String() string {
	if v.pass {
		return fmt.Sprintf("pass (%v)", v.took.Round(time.Millisecond))
	}
	return fmt.Sprintf("FAIL (%v): %s", v.took.Round(time.Millisecond), v.detail)
}

// runNative runs a test file with qjs in the tests folder.
func runNative(qjs, tests, file string, flags []string) verdict {
	ctx, cancel := context.WithTimeout(context.Background(), qjsNativeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qjs, append(append([]string(nil), flags...), file)...)
	cmd.Dir = tests
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	err := cmd.Run()
	v := verdict{pass: err == nil, took: time.Since(start)}
	if err != nil {
		v.detail = fmt.Sprintf("%v: %s", err, lastLines(buf.String(), 5))
	}
	return v
}

// runSandbox evaluates a test file in a fresh instance of rt.
func runSandbox(rt *kafig.Runtime, src string) verdict {
	ctx, cancel := context.WithTimeout(context.Background(), qjsSandboxTimeout)
	defer cancel()
	inst, err := rt.Instance(ctx, kafig.WithJSMemoryLimit(512<<20))
	if err != nil {
		return verdict{detail: err.Error()}
	}
	defer inst.Close(context.Background())
	start := time.Now()
	_, err = inst.Eval(ctx, src+qjsEpilogue, kafig.WithAsync())
	v := verdict{pass: err == nil, took: time.Since(start)}
	if err != nil {
		v.detail = err.Error()
		if je, ok := err.(*kafig.JsError); ok && je.Stack != nil {
			v.detail += "\n" + lastLines(*je.Stack, 5)
		}
	}
	return v
}

// TestQuickJS runs QuickJS's own tests in the sandbox and natively and
// requires the same verdict per file.
func TestQuickJS(t *testing.T) {
	qjs, tests := nativeQuickJS(t)
	native := map[string]verdict{}
	for _, f := range qjsFiles {
		native[f.name] = runNative(qjs, tests, f.name, f.flags)
		t.Logf("native   %-18s %v", f.name, native[f.name])
	}
	var mu sync.Mutex
	table := map[string]map[string]verdict{}
	t.Cleanup(func() {
		var rows []string
		for file, byBackend := range table {
			row := fmt.Sprintf("%-18s native: %-6s", file, passFail(native[file].pass))
			var names []string
			for b := range byBackend {
				names = append(names, b)
			}
			sort.Strings(names)
			for _, b := range names {
				row += fmt.Sprintf("  %s: %-6s", b, passFail(byBackend[b].pass))
			}
			rows = append(rows, row)
		}
		sort.Strings(rows)
		t.Logf("QuickJS tests, verdict per file:\n%s", strings.Join(rows, "\n"))
	})
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rt := newRuntime(t, b, kafig.WithPrelude(qjsShim))
			// The harness sees failures: a file with one more, failing
			// assertion fails natively and in the sandbox.
			t.Run("failing-assertion-detected", func(t *testing.T) {
				src, err := os.ReadFile(filepath.Join(tests, "test_closure.js"))
				require.NoError(t, err)
				bad := string(src) + "\nassert(1, 2, \"conformance sanity check\");\n"
				tmp := filepath.Join(tests, ".conformance_sanity_test_closure.js")
				require.NoError(t, os.WriteFile(tmp, []byte(bad), 0o644))
				defer os.Remove(tmp)
				nv := runNative(qjs, tests, filepath.Base(tmp), nil)
				sv := runSandbox(rt, bad)
				assert.False(t, nv.pass, "native: %v", nv)
				assert.False(t, sv.pass, "sandbox: %v", sv)
				assert.Contains(t, sv.detail, "conformance sanity check")
			})
			for _, f := range qjsFiles {
				t.Run(f.name, func(t *testing.T) {
					src, err := os.ReadFile(filepath.Join(tests, f.name))
					require.NoError(t, err)
					v := runSandbox(rt, string(src))
					mu.Lock()
					if table[f.name] == nil {
						table[f.name] = map[string]verdict{}
					}
					table[f.name][b.name] = v
					mu.Unlock()
					t.Logf("sandbox  %-18s %v", f.name, v)
					if !assert.Equal(t, native[f.name].pass, v.pass,
						"%s: native %v, sandbox %v", f.name, native[f.name], v) {
						diffFunctions(t, rt, qjs, tests, f.name, f.flags, string(src))
					}
				})
			}
		})
	}
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

// topLevelCall matches the calls at the end of a test file that run its
// test functions, one per line.
var topLevelCall = regexp.MustCompile(`(?m)^(test\w*)\(\);[ \t]*$`)

// diffFunctions runs the test functions of a file one at a time, natively
// and in the sandbox, and logs those whose verdicts differ.
func diffFunctions(t *testing.T, rt *kafig.Runtime, qjs, tests, file string, flags []string, src string) {
	calls := topLevelCall.FindAllStringSubmatch(src, -1)
	if len(calls) == 0 {
		return
	}
	body := topLevelCall.ReplaceAllString(src, "")
	for _, c := range calls {
		one := body + "\n" + c[1] + "();\n"
		tmp := filepath.Join(tests, ".conformance_"+c[1]+"_"+file)
		if err := os.WriteFile(tmp, []byte(one), 0o644); err != nil {
			t.Logf("cannot write %s: %v", tmp, err)
			return
		}
		nv := runNative(qjs, tests, filepath.Base(tmp), flags)
		_ = os.Remove(tmp)
		sv := runSandbox(rt, one)
		if nv.pass != sv.pass {
			t.Errorf("%s %s(): native %v, sandbox %v", file, c[1], nv, sv)
		}
	}
}
