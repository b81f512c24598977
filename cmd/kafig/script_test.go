package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestEvalPrintsCompletionValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code, want string
	}{
		{`1 + 2`, "3\n"},
		{`[1, 2, 3].map(x => x * 2)`, "[2,4,6]\n"},
		{`({a: "<b>", n: null})`, `{"a":"<b>","n":null}` + "\n"},
		{`"str"`, `"str"` + "\n"},
		{`null`, ""},
		{`undefined`, ""},
		{`let x = 1`, ""},
		{`await host.rpc("sleep", 1); "after await"`, `"after await"` + "\n"},
		{`Promise.resolve(42)`, "42\n"},
		{`host.rpcSync("echo", {a: [1]})`, `{"a":[1]}` + "\n"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			r := runKafig(t, "-e", tc.code)
			r.expect(t, exitOK, nil, nil)
			if r.stdout != tc.want {
				t.Fatalf("stdout %q, want %q", r.stdout, tc.want)
			}
		})
	}
}

func TestConsole(t *testing.T) {
	t.Parallel()
	r := runKafig(t, "-e", `
console.log("hello", 1, {a: [1, "x"], "b-c": true}, [1, , 3], null, undefined, 2n);
console.info("%s is %d years", "Ada", 36.5, "extra");
console.debug(new Map([[1, {x: 1}]]), new Set(["a"]), function named() {}, Symbol("s"));
const o = {}; o.self = o; console.log(o, {deep: {er: {still: {more: 1}}}});
console.warn("careful");
console.error(new TypeError("bad"));
"done"`)
	r.expect(t, exitOK, nil, nil)
	wantOut := `hello 1 { a: [ 1, "x" ], "b-c": true } [ 1, <empty>, 3 ] null undefined 2n
Ada is 36.5 years extra
Map(1) { 1 => { x: 1 } } Set(1) { "a" } [Function: named] Symbol(s)
{ self: [Circular] } { deep: { er: { still: [Object] } } }
"done"
`
	if r.stdout != wantOut {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, wantOut)
	}
	if !strings.HasPrefix(r.stderr, "careful\nTypeError: bad\n    at <eval>") {
		t.Fatalf("stderr:\n%s", r.stderr)
	}
}

func TestJSErrorWithStack(t *testing.T) {
	t.Parallel()
	r := runKafig(t, "testdata/throw.js")
	r.expect(t, exitJSError, nil, []string{
		"Uncaught Error: from inner",
		"at inner (testdata/throw.js:2:",
		"at outer (testdata/throw.js:5:",
	})
	if r.stdout != "" {
		t.Fatalf("stdout: %q", r.stdout)
	}

	r = runKafig(t, "-e", "null.foo")
	r.expect(t, exitJSError, nil, []string{"Uncaught TypeError: cannot read property 'foo' of null", "at <eval> (<eval>:1:"})

	r = runKafig(t, "-e", "throw 5")
	r.expect(t, exitJSError, nil, []string{"Uncaught Error: 5"})

	r = runKafig(t, "-e", "let = ;")
	r.expect(t, exitJSError, nil, []string{"Uncaught SyntaxError"})

	// A promise that rejects is an error of the script too.
	r = runKafig(t, "-e", `await Promise.reject(new RangeError("nope"))`)
	r.expect(t, exitJSError, nil, []string{"Uncaught RangeError: nope"})
}

func TestUnknownRPCMethod(t *testing.T) {
	t.Parallel()
	r := runKafig(t, "-e", `await host.rpc("fetch", {})`)
	r.expect(t, exitJSError, nil, []string{"unknown RPC method fetch", "the kafig CLI answers console, sleep and echo"})

	r = runKafig(t, "-e", `try { host.rpcSync("nope") } catch (e) { e.message }`)
	r.expect(t, exitOK, []string{"unknown RPC method nope"}, nil)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"cpu", []string{"-max-cpu-ms", "100", "-e", "for (;;) {}"}, "kafig: cpu_limit_exceeded: the CPU time limit (-max-cpu-ms 100) was exceeded"},
		{"opcodes", []string{"-max-opcodes", "100000", "-e", "for (;;) {}"}, "kafig: cpu_limit_exceeded: the opcode limit (-max-opcodes 100000) was exceeded"},
		{"memory", []string{"-max-memory", "1MiB", "-e", `let a = []; for (;;) a.push("x".repeat(1000) + a.length)`}, "kafig: memory_limit_exceeded: the JavaScript heap reached its limit (-max-memory 1.0 MiB)"},
		{"default memory", []string{"-e", `let a = []; for (;;) a.push("x".repeat(10000) + a.length)`}, "memory_limit_exceeded: the JavaScript heap reached its limit of 32 MiB"},
		{"stack", []string{"-e", "function f() { return f() + 1 } f()"}, "kafig: stack_overflow"},
		{"cpu in sync mode", []string{"-async=false", "-max-cpu-ms", "50", "-e", "while (true) {}"}, "cpu_limit_exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := runKafig(t, tc.args...)
			r.expect(t, exitLimit, nil, []string{tc.stderr})
			if d := time.Since(start); d > 20*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}

	// The largest limit works (and the smallest).
	r := runKafig(t, "-max-memory", "4GiB", "-e", "'big'")
	r.expect(t, exitOK, []string{`"big"`}, nil)
	r = runKafig(t, "-max-memory", "64KiB", "-e", "'small'")
	if r.code != exitOK && r.code != exitLimit {
		t.Fatalf("64KiB: %s", r)
	}

	// A limit that is not reached changes nothing.
	r = runKafig(t, "-max-cpu-ms", "5000", "-max-opcodes", "100000000", "-max-memory", "16MB", "-e", "let s = 0; for (let i = 0; i < 1000; i++) s += i; s")
	r.expect(t, exitOK, []string{"499500"}, nil)

	// A caught stack overflow is the script's business.
	r = runKafig(t, "-e", `function f() { return f() + 1 } try { f() } catch (e) { e.name }`)
	r.expect(t, exitOK, []string{`"InternalError"`}, nil)
}

func TestStats(t *testing.T) {
	t.Parallel()
	r := runKafig(t, "-stats", "-e", "let s = 0; for (let i = 0; i < 300000; i++) s += i; s")
	r.expect(t, exitOK, []string{"44999850000"}, []string{"kafig: opcodes ", ", cpu ", "heap ", "of 32.0 MiB"})
	if strings.Contains(r.stderr, "opcodes 0,") {
		t.Fatalf("no opcodes counted: %s", r.stderr)
	}
	// Printed after a failure too.
	r = runKafig(t, "-stats", "-e", "null.x")
	r.expect(t, exitJSError, nil, []string{"kafig: opcodes ", "Uncaught TypeError"})
}

func TestSyncMode(t *testing.T) {
	t.Parallel()
	r := runKafig(t, "-async=false", "-e", "await 1")
	r.expect(t, exitJSError, nil, []string{"SyntaxError"})

	r = runKafig(t, "-async=false", "-e", `host.rpcSync("echo", 7) * 6`)
	r.expect(t, exitOK, []string{"42"}, nil)

	r = runKafig(t, "-async=false", "-e", `host.rpc("sleep", 1)`)
	r.expect(t, exitJSError, nil, []string{"host.rpc needs an async evaluation"})
}

func TestPrelude(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"prelude.js": "const GREETING = 'hi';\nfunction greet(n) { return GREETING + ' ' + n; }\n",
		"bad.js":     "const x = 1;\n\nfunction boom() { null.y }\nboom();\n",
		"helpers.ts": "export {};\nconst twice = (n: number): number => 2 * n;\n(globalThis as any).twice = twice;\n",
	})
	r := runKafig(t, "-prelude", filepath.Join(dir, "prelude.js"), "-e", "greet('Ada')")
	r.expect(t, exitOK, []string{`"hi Ada"`}, nil)

	r = runKafig(t, "-prelude", filepath.Join(dir, "helpers.ts"), "-e", "twice(21)")
	r.expect(t, exitOK, []string{"42"}, nil)

	r = runKafig(t, "-prelude", filepath.Join(dir, "bad.js"), "-e", "1")
	r.expect(t, exitJSError, nil, []string{"in the prelude", "Uncaught TypeError", "bad.js:3:"})

	r = runKafig(t, "-prelude", filepath.Join(dir, "missing.js"), "-e", "1")
	r.expect(t, exitUsage, nil, []string{"missing.js: no such file"})
}

// TestStackNamesEachFile: the script and the -prelude file are evaluated
// under their own names, so a stack through both names each file.
func TestStackNamesEachFile(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"lib.js":  "function check(o) {\n  return o.items.length\n}\n",
		"main.js": "const order = {};\n\ncheck(order)\n",
	})
	lib, main := filepath.Join(dir, "lib.js"), filepath.Join(dir, "main.js")
	r := runKafig(t, "-prelude", lib, main)
	r.expect(t, exitJSError, nil, []string{"at check (" + lib + ":2:", "at <eval> (" + main + ":3:"})
	if strings.Contains(r.stderr, "<eval>:") {
		t.Fatalf("a position is still <eval>\n%s", r)
	}

	r = invocation{args: []string{"-prelude", lib, "-"}, stdin: "\ncheck({})\n"}.do(t)
	r.expect(t, exitJSError, nil, []string{"at check (" + lib + ":2:", "at <eval> (<stdin>:2:"})
}

func TestScriptFromStdin(t *testing.T) {
	t.Parallel()
	r := invocation{args: []string{"-"}, stdin: "console.log('from stdin');\n6 * 7\n"}.do(t)
	r.expect(t, exitOK, []string{"from stdin\n42\n"}, nil)

	r = invocation{args: []string{"-"}, stdin: "null.z\n"}.do(t)
	r.expect(t, exitJSError, nil, []string{"at <eval> (<stdin>:1:"})

	// With an import, stdin is bundled; imports resolve from the working
	// directory.
	dir := writeFiles(t, map[string]string{"lib.js": "export const answer = 42;\n"})
	r = invocation{args: []string{"-"}, stdin: "import { answer } from './lib.js';\nexport default answer + 1;\n", dir: dir}.do(t)
	r.expect(t, exitOK, []string{"43\n"}, nil)
}

func TestShebangAndEmptyFile(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"tool.js":  "#!/usr/bin/env kafig\n\nnull.q\n",
		"empty.js": "",
	})
	r := runKafig(t, filepath.Join(dir, "tool.js"))
	r.expect(t, exitJSError, nil, []string{"tool.js:3:"}) // line numbers kept
	r = runKafig(t, filepath.Join(dir, "empty.js"))
	r.expect(t, exitOK, nil, nil)
}

func TestBadUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	binary := filepath.Join(dir, "binary.js")
	if err := os.WriteFile(binary, []byte("1\x00\x01"), 0o644); err != nil {
		t.Fatal(err)
	}
	latin1 := filepath.Join(dir, "latin1.js")
	if err := os.WriteFile(latin1, []byte("'caf\xe9'"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"unknown flag", []string{"-bogus"}, "flag provided but not defined: -bogus"},
		{"missing value", []string{"-e"}, "flag needs an argument: -e"},
		{"empty code", []string{"-e", ""}, "-e needs some code"},
		{"bad backend", []string{"-backend", "v8", "-e", "1"}, `-backend "v8": want wazero or wasmtime`},
		{"negative cpu", []string{"-max-cpu-ms", "-5", "-e", "1"}, "want a whole number of milliseconds"},
		{"cpu not a number", []string{"-max-cpu-ms", "soon", "-e", "1"}, "want a whole number of milliseconds"},
		{"opcodes not a number", []string{"-max-opcodes", "1e9x", "-e", "1"}, "want a whole number of opcodes"},
		{"memory suffix", []string{"-max-memory", "12XB", "-e", "1"}, `unknown suffix "XB"`},
		{"memory garbage", []string{"-max-memory", "lots", "-e", "1"}, `"lots" is not a size`},
		{"memory too small", []string{"-max-memory", "12", "-e", "1"}, "-max-memory 12: must be 64KiB to 4GiB"},
		{"memory too large", []string{"-max-memory", "5GiB", "-e", "1"}, "must be 64KiB to 4GiB"},
		{"memory just too large", []string{"-max-memory", "4294967297", "-e", "1"}, "must be 64KiB to 4GiB"},
		{"memory overflow", []string{"-max-memory", "99999999999999999999", "-e", "1"}, "too large"},
		{"bad bool", []string{"-async=maybe", "-e", "1"}, "invalid boolean value"},
		{"code and script", []string{"-e", "1", "x.js"}, "give -e CODE or a script, not both"},
		{"json and script", []string{"-json", "x.js"}, "-json reads requests from stdin"},
		{"two scripts", []string{"a.js", "b.js"}, "unexpected arguments after a.js: b.js"},
		{"flag after script", []string{"a.js", "-stats"}, "flags go before the script"},
		{"missing file", []string{"nope.js"}, "kafig: nope.js: no such file"},
		{"directory", []string{"testdata"}, "testdata is a directory"},
		{"unreadable", []string{"testdata/throw.js/x.js"}, "cannot read testdata/throw.js/x.js: not a directory"},
		{"binary file", []string{binary}, "binary.js contains a NUL byte: not a script"},
		{"not UTF-8", []string{latin1}, "latin1.js is not UTF-8 text"},
		{"code not UTF-8", []string{"-e", "'caf\xe9'"}, "source is not valid UTF-8"},
		{"missing prelude", []string{"-prelude", "nope.js", "-e", "1"}, "nope.js: no such file"},
		{"stdin prelude", []string{"-prelude", "-", "-e", "1"}, "-prelude cannot read stdin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runKafig(t, tc.args...)
			r.expect(t, exitUsage, nil, []string{tc.stderr})
			if r.stdout != "" {
				t.Fatalf("stdout: %q", r.stdout)
			}
			if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
				t.Fatalf("a usage error is one line, got:\n%s", r.stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-help", "-h", "--help"} {
		r := runKafig(t, arg)
		r.expect(t, exitOK, []string{
			"Usage:", "-max-cpu-ms N", "-max-memory SIZE", "-backend NAME", "-prelude FILE",
			"-async", "-stats", "-json", "-e CODE", "JSON mode", `"rpc_result"`, "Exit status:", "Examples:",
			"kafig examples/hello.js",
		}, nil)
		if r.stderr != "" {
			t.Fatalf("stderr: %q", r.stderr)
		}
	}
}

func TestBackends(t *testing.T) {
	t.Parallel()
	if cgoEnabled {
		r := runKafig(t, "-backend", "wasmtime", "-max-cpu-ms", "100", "-e", "for (;;) {}")
		r.expect(t, exitLimit, nil, []string{"cpu_limit_exceeded"})
		r = runKafig(t, "-backend", "wasmtime", "-e", `await host.rpc("sleep", 1); 6 * 7`)
		r.expect(t, exitOK, []string{"42"}, nil)
	}
	r := runKafig(t, "-backend", "wazero", "-e", "6 * 7")
	r.expect(t, exitOK, []string{"42"}, nil)
}

// TestNoCgo builds the binary without cgo: -backend wasmtime is then a usage
// error that says why.
func TestNoCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds another binary")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "kafig-nocgo")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	cmd = exec.Command(bin, "-backend", "wasmtime", "-e", "1")
	cmd.Env = testEnv(nil)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "built without cgo") {
		t.Fatalf("output: %s", out)
	}
	cmd = exec.Command(bin, "-e", "6 * 7")
	cmd.Env = testEnv(nil)
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "42\n" {
		t.Fatalf("wazero without cgo: %v\n%s", err, out)
	}
}

func TestInterrupt(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(kafigBin, "-e", `console.log("looping"); for (;;) {}`)
	cmd.Env = testEnv(nil)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := stdout.Read(buf) // the script is running
	if !strings.Contains(string(buf[:n]), "looping") {
		t.Fatalf("stdout: %q", buf[:n])
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("SIGINT did not stop the script")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupt {
		t.Fatalf("exit: %v, stderr: %s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "kafig: interrupted") {
		t.Fatalf("stderr: %s", stderr.String())
	}
}

func TestColor(t *testing.T) {
	t.Parallel()
	// Without a terminal there are no colours, NO_COLOR or not.
	r := invocation{args: []string{"-e", `"plain"`}, env: []string{"NO_COLOR="}}.do(t)
	r.expect(t, exitOK, []string{`"plain"`}, nil)
	if strings.Contains(r.stdout, "\x1b[") {
		t.Fatalf("colours without a terminal: %q", r.stdout)
	}
}
