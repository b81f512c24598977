package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kafig-dev/kafig/kafig"
)

// Exit statuses (documented in doc.go and the -help text).
const (
	exitOK        = 0
	exitJSError   = 1 // a JavaScript exception, a runtime error, a bundling error
	exitLimit     = 2 // cpu_limit_exceeded, memory_limit_exceeded, stack_overflow
	exitUsage     = 3 // bad flags, missing or unreadable files, an unusable backend
	exitInterrupt = 130
)

// options are the parsed command line.
type options struct {
	code       string // -e
	hasCode    bool
	script     string // the script argument ("-" is stdin)
	backend    string
	maxCPUMs   uint64
	maxOpcodes uint64
	maxMemory  uint64 // 0: kafig's default
	prelude    string
	async      bool
	stats      bool
	json       bool
	cacheDir   string
}

// usageError is bad usage: exit status 3, a message, no stack.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errHelp is returned for -help: the usage text goes to stdout, exit 0.
var errHelp = errors.New("help requested")

// countValue is a whole number flag with a readable error.
type countValue struct {
	v    *uint64
	unit string
}

func (c countValue) String() string {
	if c.v == nil || *c.v == 0 {
		return ""
	}
	return strconv.FormatUint(*c.v, 10)
}

func (c countValue) Set(text string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(text), 10, 64)
	if err != nil {
		return fmt.Errorf("want a whole number of %s (0 for no limit)", c.unit)
	}
	*c.v = n
	return nil
}

// sizeValue is a byte count flag that takes suffixes (16MB, 64MiB).
type sizeValue struct{ v *uint64 }

func (s sizeValue) String() string {
	if s.v == nil || *s.v == 0 {
		return ""
	}
	return strconv.FormatUint(*s.v, 10)
}

func (s sizeValue) Set(text string) error {
	n, err := parseSize(text)
	if err != nil {
		return err
	}
	*s.v = n
	return nil
}

// parseSize reads a byte count: digits with an optional suffix. Suffixes
// with an "i" are powers of 1024 (KiB, MiB, GiB, also Ki, Mi, Gi); those
// without are powers of 1000 (KB, MB, GB, also K, M, G); B means bytes.
// Suffixes are case-insensitive and may follow a space.
func parseSize(text string) (uint64, error) {
	s := strings.TrimSpace(text)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size (want bytes, or a number with a suffix like 16MB or 64MiB)", text)
	}
	n, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", text)
	}
	var mult uint64
	switch strings.ToLower(strings.TrimSpace(s[i:])) {
	case "", "b":
		mult = 1
	case "k", "kb":
		mult = 1e3
	case "m", "mb":
		mult = 1e6
	case "g", "gb":
		mult = 1e9
	case "ki", "kib":
		mult = 1 << 10
	case "mi", "mib":
		mult = 1 << 20
	case "gi", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("%q has an unknown suffix %q (want B, KB, MB, GB, KiB, MiB or GiB)", text, strings.TrimSpace(s[i:]))
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("%q is too large", text)
	}
	return n * mult, nil
}

// defaultCacheDir is where compiled guest code is kept between runs.
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "kafig")
}

// parseArgs parses the command line (without the program name). Problems
// are *usageError; -help is errHelp (the text is written to out).
func parseArgs(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("kafig", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by the caller, help by us
	fs.Func("e", "evaluate `CODE` instead of a script file", func(s string) error {
		o.code, o.hasCode = s, true
		return nil
	})
	fs.StringVar(&o.backend, "backend", "wazero", "WebAssembly engine `NAME`: wazero (pure Go) or wasmtime (needs cgo)")
	fs.Var(countValue{&o.maxCPUMs, "milliseconds"}, "max-cpu-ms", "stop an evaluation after `N` ms of CPU time (0: no limit)")
	fs.Var(countValue{&o.maxOpcodes, "opcodes"}, "max-opcodes", "stop an evaluation after about `N` opcodes, counted in steps of 10000 (0: no limit)")
	fs.Var(sizeValue{&o.maxMemory}, "max-memory", "cap the JavaScript heap at `SIZE` (default 32MiB)")
	fs.StringVar(&o.prelude, "prelude", "", "evaluate `FILE` in every new instance before anything else")
	fs.BoolVar(&o.async, "async", true, "async mode: top-level await and host.rpc (-async=false: synchronous)")
	fs.BoolVar(&o.stats, "stats", false, "print opcodes and CPU time to stderr after each evaluation")
	fs.BoolVar(&o.json, "json", false, "JSON mode even when stdin is a terminal")
	fs.StringVar(&o.cacheDir, "cache-dir", defaultCacheDir(), "keep the compiled guest in `DIR` (default: kafig in the user cache directory; \"\" or off: no cache)")
	help := fs.Bool("help", false, "show this help")
	fs.BoolVar(help, "h", false, "show this help")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(out, fs)
			return nil, errHelp
		}
		return nil, usagef("kafig: %v (see kafig -help)", err)
	}
	if *help {
		printUsage(out, fs)
		return nil, errHelp
	}
	rest := fs.Args()
	switch {
	case len(rest) > 1:
		hint := ""
		if strings.HasPrefix(rest[1], "-") {
			hint = "; flags go before the script"
		}
		return nil, usagef("kafig: unexpected arguments after %s: %s%s", rest[0], strings.Join(rest[1:], " "), hint)
	case len(rest) == 1:
		o.script = rest[0]
	}
	if o.hasCode && o.script != "" {
		return nil, usagef("kafig: give -e CODE or a script, not both")
	}
	if o.json && (o.hasCode || o.script != "") {
		return nil, usagef("kafig: -json reads requests from stdin; it takes no -e CODE or script")
	}
	if o.hasCode && o.code == "" {
		return nil, usagef("kafig: -e needs some code")
	}
	switch o.backend {
	case "wazero", "wasmtime":
	default:
		return nil, usagef("kafig: -backend %q: want wazero or wasmtime", o.backend)
	}
	if o.maxCPUMs > math.MaxUint64/1000 {
		return nil, usagef("kafig: -max-cpu-ms %d is too large", o.maxCPUMs)
	}
	if o.maxMemory != 0 && (o.maxMemory < kafig.MinJSMemoryLimit || o.maxMemory > kafig.MaxJSMemoryLimit) {
		return nil, usagef("kafig: -max-memory %d: must be 64KiB to 4GiB", o.maxMemory)
	}
	if o.cacheDir == "off" {
		o.cacheDir = ""
	}
	return o, nil
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, usageHead)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "h" {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		line := "  -" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%-22s %s", line, usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.Name != "cache-dir" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	fmt.Fprint(w, usageTail)
}

const usageHead = `kafig runs JavaScript (and TypeScript) in the kafig sandbox: QuickJS compiled
to WebAssembly, with CPU and memory limits and an RPC bridge to the host.

Usage:
  kafig [flags] SCRIPT     run a file (.js, .mjs, .ts, .mts, .cts); - reads stdin
  kafig [flags] -e CODE    evaluate CODE
  kafig [flags]            a REPL when stdin is a terminal, else JSON mode

Flags:
`

const usageTail = `
Scripts:
  A script's completion value (its last expression) is printed as JSON on
  stdout; null and undefined print nothing. Scripts run in async mode: top-
  level await works and a promise result is awaited. A .ts, .mts, .cts or .mjs
  file, or a .js file with import or export statements, is bundled with
  esbuild first (local files only; types are not checked); its printed value
  is the entry's default export. Stacks name the script's files and lines.

Host API for scripts (answered by the CLI in every mode):
  console.log/info/debug(...)   print to stdout; console.warn/error to stderr
  await host.rpc("sleep", MS)   resolve with null after MS milliseconds
  host.rpcSync("echo", VALUE)   return VALUE (host.rpc works too)
  Any other method fails, except in JSON mode, where the controlling
  process answers it.

REPL:
  Line editing and history (~/.kafig_history), multi-line input while a
  statement is incomplete, await at the prompt, Ctrl-C stops an evaluation
  or clears the input, Ctrl-D quits. Commands: .dispatch NAME [JSON], .reset,
  .stats, .help, .exit.

JSON mode (one JSON object per line in each direction):
  in:  {"eval": "1 + 2"}                          out: {"result": 3}
  in:  {"dispatch": {"name": "n", "params": {}}}  out: {"result": ...}
  in:  {"stats": true}  {"reset": true}           out: {"result": {...}} / {"result": true}
  A request may carry "id", echoed in its response. Every request line,
  malformed ones included, gets exactly one response, in order; a failure is
  {"error": {"code": "js_error", "name", "message", "stack"}} (other codes:
  cpu_limit_exceeded, memory_limit_exceeded, stack_overflow, runtime_error,
  no_handler, bad_request). While a request runs, the script's RPCs other
  than the CLI's own come out as
    {"rpc": {"id": 1, "method": "fetch", "params": {...}}}
  and are answered, in any order, with
    {"rpc_result": {"id": 1, "result": ...}} or {"rpc_result": {"id": 1, "error": "text"}}
  A call the script stops waiting for is withdrawn with {"rpc_cancel": {"id": 1}}.
  console output comes out as {"console": {"level": "log", "text": "..."}}.
  At end of input, waiting calls fail and kafig exits once queued requests
  are done.

Exit status:
  0 success, 1 JavaScript error (or bundling error), 2 a limit was hit
  (cpu_limit_exceeded, memory_limit_exceeded, stack_overflow), 3 bad usage,
  130 interrupted.

Examples:
  kafig examples/hello.js
  kafig -e '[1, 2, 3].map(x => x * 2)'
  kafig -max-cpu-ms 100 -e 'for (;;) {}'          # exits 2
  kafig -max-memory 16MiB -stats examples/hello.js
  kafig examples/ts/main.ts
  echo '{"eval": "await host.rpc(\"sleep\", 10); 42"}' | kafig
`
