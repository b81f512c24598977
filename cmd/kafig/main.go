package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/term"

	"github.com/kafig-dev/kafig/kafig"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run is the whole command; it returns the exit status.
func run(args []string) int {
	o, err := parseArgs(args, os.Stdout)
	if err != nil {
		if errors.Is(err, errHelp) {
			return exitOK
		}
		fmt.Fprintln(os.Stderr, err)
		return exitUsage
	}
	var prelude *source
	if o.prelude != "" {
		if o.prelude == "-" {
			return fail(usagef("kafig: -prelude cannot read stdin"), nil)
		}
		if prelude, err = loadFile(o.prelude, nil); err != nil {
			return fail(err, nil)
		}
	}
	switch {
	case o.hasCode || o.script != "":
		return runScript(o, prelude)
	case o.json || !term.IsTerminal(int(os.Stdin.Fd())):
		return runJSON(o, prelude, os.Stdin, os.Stdout)
	default:
		return runREPL(o, prelude)
	}
}

// fail reports err on stderr and returns its exit status. src names the
// script for stack positions.
func fail(err error, src *source) int {
	printError(os.Stderr, err, src, newPalette(colorFor(os.Stderr)))
	return exitStatus(err)
}

// printError writes an error the way a person reads it: a JavaScript error
// with its stack, esbuild's messages with the lines they point to, or one
// line.
func printError(w io.Writer, err error, src *source, p palette) {
	var je *kafig.JsError
	var be *bundleError
	var pe *preludeError
	if errors.As(err, &pe) {
		src, err = nil, pe.err // positions are already rewritten
		fmt.Fprintf(w, "%skafig: in the prelude %s:%s\n", p.dim, pe.name, p.reset)
	}
	switch {
	case errors.As(err, &be):
		fmt.Fprint(w, be.pretty(p.reset != ""))
	case errors.As(err, &je):
		je, _ = src.explain(je).(*kafig.JsError)
		name := je.Name
		if name == "" {
			name = "Error"
		}
		fmt.Fprintf(w, "%sUncaught %s%s", p.red+p.bold, name, p.reset)
		if je.Message != "" {
			fmt.Fprintf(w, "%s: %s%s", p.red, je.Message, p.reset)
		}
		fmt.Fprintln(w)
		if je.Stack != nil && strings.TrimSpace(*je.Stack) != "" {
			fmt.Fprintf(w, "%s%s%s\n", p.dim, strings.TrimRight(*je.Stack, "\n"), p.reset)
		}
		var re *resetError
		if errors.As(err, &re) {
			fmt.Fprintf(w, "%s%s%s\n", p.dim, re.note(), p.reset)
		}
	default:
		fmt.Fprintf(w, "%s%s%s\n", p.red, err, p.reset)
	}
}

// stdConsole prints console output: log, info and debug to stdout, warn
// and error to stderr.
type stdConsole struct {
	mu          sync.Mutex
	out, errOut io.Writer
}

func (c *stdConsole) console(level, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.out
	if level == "warn" || level == "error" {
		w = c.errOut
	}
	fmt.Fprintln(w, text)
}

// runScript runs -e CODE or a script file.
func runScript(o *options, prelude *source) int {
	var src *source
	if o.hasCode {
		src = &source{code: o.code}
	} else {
		var err error
		if src, err = loadFile(o.script, os.Stdin); err != nil {
			return fail(err, nil)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sink := &stdConsole{out: os.Stdout, errOut: os.Stderr}
	s, err := newSession(ctx, o, newRouter(sink, nil), prelude)
	if err != nil {
		return fail(err, nil)
	}
	defer s.close()
	res, err := s.eval(ctx, src.code, src.evalOpts()...)
	if o.stats {
		printStats(os.Stderr, s)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "kafig: interrupted")
			return exitInterrupt
		}
		return fail(err, src)
	}
	printResult(os.Stdout, res, newPalette(colorFor(os.Stdout)))
	return exitOK
}

// printResult prints a completion value; null (and undefined) print
// nothing.
func printResult(w io.Writer, res json.RawMessage, p palette) {
	if len(res) == 0 || string(res) == "null" {
		return
	}
	fmt.Fprintln(w, p.highlightJSON(res))
}

// printStats writes the counters of the last evaluation.
func printStats(w io.Writer, s *session) {
	st := s.last
	fmt.Fprintf(w, "kafig: opcodes %d, cpu %s, heap %s of %s, memory %s\n",
		st.Opcodes, formatMicros(st.CPUTimeUs), formatBytes(st.HeapBytes), formatBytes(st.HeapLimitBytes), formatBytes(st.MemoryBytes))
}

func formatMicros(us uint64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%d µs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.1f ms", float64(us)/1e3)
	}
	return fmt.Sprintf("%.2f s", float64(us)/1e6)
}

func formatBytes(n uint64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}
