package main

import (
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/kafig-dev/kafig/kafig"
)

// In-process tests of the pieces that need no sandbox.

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want uint64
		err  string
	}{
		{"65536", 65536, ""},
		{"16MB", 16_000_000, ""},
		{"16mb", 16_000_000, ""},
		{"16M", 16_000_000, ""},
		{"64MiB", 64 << 20, ""},
		{"64 MiB", 64 << 20, ""},
		{"64mi", 64 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"2GB", 2_000_000_000, ""},
		{"512KiB", 512 << 10, ""},
		{"100kb", 100_000, ""},
		{"7B", 7, ""},
		{"", 0, "is not a size"},
		{"MiB", 0, "is not a size"},
		{"-1MiB", 0, "is not a size"},
		{"1.5MiB", 0, "unknown suffix"},
		{"12XB", 0, `unknown suffix "XB"`},
		{"99999999999999999999", 0, "too large"},
		{"99999999999GiB", 0, "too large"},
	} {
		got, err := parseSize(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseSize(%q) = %d, %v; want an error with %q", tc.in, got, err, tc.err)
		}
	}
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	o, err := parseArgs([]string{"-backend", "wasmtime", "-max-cpu-ms", "250", "-max-opcodes", "1000000", "-max-memory", "16MiB", "-async=false", "-stats", "-cache-dir", "off", "x.ts"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.backend != "wasmtime" || o.maxCPUMs != 250 || o.maxOpcodes != 1_000_000 || o.maxMemory != 16<<20 || o.async || !o.stats || o.cacheDir != "" || o.script != "x.ts" {
		t.Fatalf("%+v", o)
	}
	o, err = parseArgs(nil, io.Discard)
	if err != nil || o.backend != "wazero" || !o.async || o.maxMemory != 0 || o.script != "" || o.hasCode {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	var help strings.Builder
	if _, err := parseArgs([]string{"-h"}, &help); err != errHelp || !strings.Contains(help.String(), "Usage:") {
		t.Fatalf("-h: %v", err)
	}
}

func TestSourceMap(t *testing.T) {
	t.Parallel()
	// Segments: line 1 maps col 0 -> a.ts 1:0 and col 6 -> a.ts 2:4; line 2
	// has none; line 3 maps col 2 -> b.ts 10:0.
	m, err := parseSourceMap([]byte(`{"version":3,"sources":["a.ts","b.ts"],"mappings":"AAAA,MACI;;ECQJ"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		line, col int
		file      string
		l, c      int
		ok        bool
	}{
		{1, 1, "a.ts", 1, 1, true},
		{1, 6, "a.ts", 1, 1, true},
		{1, 7, "a.ts", 2, 5, true},
		{1, 99, "a.ts", 2, 5, true},
		{2, 1, "", 0, 0, false},
		{3, 1, "b.ts", 10, 1, true}, // before the first mapping: take it
		{3, 3, "b.ts", 10, 1, true},
		{4, 1, "", 0, 0, false},
		{0, 1, "", 0, 0, false},
	} {
		file, l, c, ok := m.lookup(tc.line, tc.col)
		if file != tc.file || l != tc.l || c != tc.c || ok != tc.ok {
			t.Errorf("lookup(%d, %d) = %s %d %d %v; want %s %d %d %v", tc.line, tc.col, file, l, c, ok, tc.file, tc.l, tc.c, tc.ok)
		}
	}
	for _, bad := range []string{`{"version":2}`, `{"version":3,"sources":[],"mappings":"AAAA"}`, `{"version":3,"sources":["a"],"mappings":"A!"}`, `nope`} {
		if _, err := parseSourceMap([]byte(bad)); err == nil {
			t.Errorf("parseSourceMap(%s) succeeded", bad)
		}
	}
}

func TestBundleInProcess(t *testing.T) {
	t.Parallel()
	src, err := bundle("testdata/tserr/main.ts", "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(src.code, "import ") || strings.Contains(src.code, "export ") || !strings.HasSuffix(src.code, bundleEpilogue) {
		t.Fatalf("bundle:\n%s", src.code)
	}
	stack := "    at check (<eval>:5:11)\n    at <eval> (<eval>:99:1)\n"
	got := src.rewrite(stack)
	if !strings.Contains(got, "at check (testdata/tserr/lib.ts:") {
		t.Fatalf("rewrite: %s", got)
	}
	_, err = bundle("testdata/syntax.ts", "")
	be, ok := err.(*bundleError)
	if !ok || be.Error() != `kafig: testdata/syntax.ts:2:12: Unexpected "*"` {
		t.Fatalf("err: %v", err)
	}
	if p := be.pretty(false); !strings.Contains(p, "let b = a +* 2;") {
		t.Fatalf("pretty: %s", p)
	}
}

func TestNeedsBundle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, code string
		want       bool
	}{
		{"a.ts", "1", true},
		{"a.MTS", "1", true},
		{"a.mjs", "1", true},
		{"a.cts", "1", true},
		{"a.js", "import x from './x.js'", true},
		{"a.js", "  import {x} from './x.js'", true},
		{"a.js", "import './side.js'", true},
		{"a.js", "import * as m from './m.js'", true},
		{"a.js", "export const x = 1", true},
		{"a.js", "export { x }", true},
		{"a.js", "export default 1", true},
		{"a.js", "const m = await import('./m.js')", false},
		{"a.js", "import.meta", false},
		{"a.js", "const s = 'import x from y'", false},
		{"a.js", "exports.x = 1", false},
		{"a.js", "importantThing()", false},
		{"a.js", "exported = 1", false},
		{"-", "1 + 1", false},
	} {
		if got := needsBundle(tc.name, tc.code); got != tc.want {
			t.Errorf("needsBundle(%q, %q) = %v", tc.name, tc.code, got)
		}
	}
}

func TestIncomplete(t *testing.T) {
	t.Parallel()
	syntax := func(msg string, line, col int) error {
		stack := "    at <eval>:" + strconv.Itoa(line) + ":" + strconv.Itoa(col) + "\n"
		return &kafig.JsError{Name: "SyntaxError", Message: msg, Stack: &stack}
	}
	for _, tc := range []struct {
		src  string
		err  error
		want bool
	}{
		{"function f() {", syntax("unexpected token in expression: ''", 1, 15), true},
		{"1 +\n", syntax("unexpected token in expression: ''", 2, 1), true},
		{"[1,\n2", syntax("expecting ']'", 2, 2), true},
		{"let é = 'é'; é +", syntax("unexpected token in expression: ''", 1, 17), true},
		{"x = `a", syntax("unexpected end of string", 1, 5), true},
		{"/* a", syntax("unexpected end of comment", 1, 1), true},
		{"x = 'a", syntax("unexpected end of string", 1, 5), false},
		{"foo bar", syntax("expecting ';'", 1, 5), false},
		{"}", syntax("unexpected token in expression: '}'", 1, 1), false},
		{"x", &kafig.JsError{Name: "ReferenceError", Message: "x is not defined"}, false},
		{"x", nil, false},
	} {
		if got := incomplete(tc.err, tc.src); got != tc.want {
			t.Errorf("incomplete(%v, %q) = %v", tc.err, tc.src, got)
		}
	}
}

func TestCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line, cmd, arg string
		ok             bool
	}{
		{".help", ".help", "", true},
		{"  .dispatch greet {\"a\": 1}  ", ".dispatch", "greet {\"a\": 1}", true},
		{".5 + 1", "", "", false},
		{"x.y", "", "", false},
		{".exit", ".exit", "", true},
	} {
		cmd, arg, ok := command(tc.line)
		if cmd != tc.cmd || arg != tc.arg || ok != tc.ok {
			t.Errorf("command(%q) = %q %q %v", tc.line, cmd, arg, ok)
		}
	}
}

func TestHighlightJSON(t *testing.T) {
	t.Parallel()
	p := newPalette(true)
	got := p.highlightJSON([]byte(`{"k":"v\"x","n":-1.5e3,"b":[true,null]}`))
	want := "{\x1b[36m\"k\"\x1b[0m:\x1b[32m\"v\\\"x\"\x1b[0m,\x1b[36m\"n\"\x1b[0m:\x1b[33m-1.5e3\x1b[0m,\x1b[36m\"b\"\x1b[0m:[\x1b[35mtrue\x1b[0m,\x1b[35mnull\x1b[0m]}"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if got := newPalette(false).highlightJSON([]byte(`[1]`)); got != "[1]" {
		t.Fatalf("no colour: %q", got)
	}
}

func TestParseLine(t *testing.T) {
	t.Parallel()
	it := parseLine(1, []byte(`{"id": [1], "dispatch": {"name": "n", "params": {"a": 1}}}`))
	if it.problem != "" || it.req.Dispatch == nil || it.req.Dispatch.Name != "n" || string(it.req.Dispatch.Params) != `{"a": 1}` || string(it.req.ID) != "[1]" {
		t.Fatalf("%+v", it)
	}
	it = parseLine(2, []byte(`{"rpc_result": {"id": 3, "error": "e"}}`))
	if it.problem != "" || it.req.RPCResult == nil || *it.req.RPCResult.ID != 3 || string(it.req.RPCResult.Error) != `"e"` {
		t.Fatalf("%+v", it)
	}
	for _, bad := range []string{
		`{"rpc_result": {"id": 3, "result": 1, "error": "e"}}`,
		`{"id": 1, "rpc_result": {"id": 3}}`,
		`{"rpc_result": {"id": -3}}`,
		`{"reset": false}`,
	} {
		if it := parseLine(3, []byte(bad)); it.problem == "" {
			t.Errorf("parseLine(%s) accepted it", bad)
		}
	}
}
