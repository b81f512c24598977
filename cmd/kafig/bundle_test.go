package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestTypeScript(t *testing.T) {
	t.Parallel()
	r := runKafig(t, filepath.Join(repoRoot, "examples", "ts", "main.ts"))
	r.expect(t, exitOK, nil, nil)
	if want := "2 orders\n{\"orders\":2,\"total\":11}\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
}

func TestBundleStackPointsAtSources(t *testing.T) {
	t.Parallel()
	r := runKafig(t, "testdata/tserr/main.ts")
	r.expect(t, exitJSError, nil, []string{
		"Uncaught TypeError: boom 1",
		"at check (testdata/tserr/lib.ts:4:",
		"(testdata/tserr/main.ts:4:",
	})
	if strings.Contains(r.stderr, "<eval>:") {
		t.Fatalf("unmapped positions:\n%s", r.stderr)
	}
}

func TestBundleErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		files  map[string]string
		entry  string
		stderr []string
	}{
		{
			name:   "syntax error",
			entry:  "testdata/syntax.ts",
			stderr: []string{"[ERROR] Unexpected \"*\"", "testdata/syntax.ts:2:11:", "let b = a +* 2;"},
		},
		{
			name:   "bare import",
			entry:  "testdata/bare.ts",
			stderr: []string{`cannot import "lodash": kafig bundles local files only`, "testdata/bare.ts:1:14:"},
		},
		{
			name:   "url import",
			files:  map[string]string{"main.mjs": "import x from 'https://example.com/x.js';\nx;\n"},
			entry:  "main.mjs",
			stderr: []string{`cannot import "https://example.com/x.js"`, "main.mjs:1:14:"},
		},
		{
			name:   "node builtin",
			files:  map[string]string{"main.ts": "import fs from 'node:fs';\nfs;\n"},
			entry:  "main.ts",
			stderr: []string{`cannot import "node:fs"`},
		},
		{
			name:   "missing local file",
			files:  map[string]string{"main.ts": "import { x } from './nope.ts';\nx;\n"},
			entry:  "main.ts",
			stderr: []string{`Could not resolve "./nope.ts"`, "main.ts:1:18:"},
		},
		{
			name:   "syntax error in an import",
			files:  map[string]string{"main.ts": "import { y } from './lib.ts';\ny;\n", "lib.ts": "export const y = ;\n"},
			entry:  "main.ts",
			stderr: []string{"lib.ts:1:17:"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r result
			if tc.files != nil {
				dir := writeFiles(t, tc.files)
				r = invocation{args: []string{tc.entry}, dir: dir}.do(t)
			} else {
				r = runKafig(t, tc.entry)
			}
			r.expect(t, exitJSError, nil, tc.stderr)
			if r.stdout != "" {
				t.Fatalf("stdout: %q", r.stdout)
			}
		})
	}
}

func TestModules(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		// .js with import statements is bundled; the default export is the value.
		"app.js":      "import { double } from './lib/math.js';\nimport data from './data.json';\nexport default double(data.n);\n",
		"lib/math.js": "export const double = (n) => 2 * n;\n",
		"data.json":   `{"n": 21}`,
		// .mjs with top-level await and no default export prints nothing.
		"side.mjs": "import { double } from './lib/math.js';\nawait host.rpc('sleep', 1);\nconsole.log(double(4));\n",
		// a .ts default export that is a promise is awaited.
		"async.ts": "const wait = (ms: number) => host.rpc('sleep', ms);\nexport default (async () => { await wait(1); return 'awaited'; })();\n",
		// a plain script that mentions import in a string is not bundled.
		"plain.js": "const s = 'import x from y';\ns.length\n",
		// CommonJS modules are bundled too.
		"cjs.ts":  "import lib from './lib.cjs';\nexport default lib.name;\n",
		"lib.cjs": "module.exports = { name: 'cjs' };\n",
		// declarations of a bundle are globals of the instance, visible to handlers.
		"handlers.ts": "let n: number = 0;\nhost.on('tick', () => ++n);\nexport default host.rpcSync('echo', 'ok');\n",
	})
	for _, tc := range []struct{ entry, stdout string }{
		{"app.js", "42\n"},
		{"side.mjs", "8\n"},
		{"async.ts", "\"awaited\"\n"},
		{"plain.js", "15\n"},
		{"cjs.ts", "\"cjs\"\n"},
		{"handlers.ts", "\"ok\"\n"},
	} {
		r := invocation{args: []string{tc.entry}, dir: dir}.do(t)
		r.expect(t, exitOK, nil, nil)
		if r.stdout != tc.stdout {
			t.Fatalf("%s: stdout %q, want %q\n%s", tc.entry, r.stdout, tc.stdout, r)
		}
	}
}

func TestExamples(t *testing.T) {
	t.Parallel()
	ex := func(name string) string { return filepath.Join("examples", name) }

	r := invocation{args: []string{ex("hello.js")}, dir: repoRoot}.do(t)
	r.expect(t, exitOK, []string{
		"Hello from the sandbox!\n",
		"fib(30) = 832040\n",
		`{"fib30":832040,"primes":[2,3,5,7,11,13,17,19,23,29],"engine":"QuickJS"}`,
	}, nil)

	r = invocation{args: []string{"-stats", ex("async.js")}, dir: repoRoot}.do(t)
	r.expect(t, exitOK, []string{
		"3 calls in ",
		`"results":[{"task":0,"slept":100},{"task":1,"slept":50},{"task":2,"slept":75}]`,
		`"refused":"kafig: unknown RPC method fetch`,
	}, []string{"kafig: opcodes"})

	r = invocation{args: []string{ex("events.js")}, dir: repoRoot}.do(t)
	r.expect(t, exitOK, []string{`"handlers registered: greet, count, slow"`}, nil)

	r = invocation{
		args:  []string{"-prelude", ex("events.js")},
		stdin: `{"dispatch": {"name": "greet", "params": {"name": "Ada"}}}` + "\n" + `{"dispatch": {"name": "slow", "params": {"ms": 5}}}` + "\n" + `{"dispatch": {"name": "count"}}` + "\n",
		dir:   repoRoot,
	}.do(t)
	r.expect(t, exitOK, nil, nil)
	if want := `{"result":"Hello, Ada!"}` + "\n" + `{"result":{"waited":5}}` + "\n" + `{"result":3}` + "\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}

	r = invocation{args: []string{ex("ts/main.ts")}, dir: repoRoot}.do(t)
	r.expect(t, exitOK, []string{"2 orders\n", `{"orders":2,"total":11}`}, nil)
}
