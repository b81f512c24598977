package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/chzyer/readline"

	"github.com/kafig-dev/kafig/kafig"
)

// repl is the interactive mode.
type repl struct {
	s   *session
	rl  *readline.Instance
	pal palette
	out io.Writer // console and results
	err io.Writer // errors and notes

	mu     sync.Mutex
	cancel context.CancelFunc // of the running evaluation, if any
}

const replHelp = `Type JavaScript; the value of each input is printed as JSON (null and
undefined print nothing). await works at the prompt. An incomplete statement
continues on the next line (Ctrl-C discards it).

Commands:
  .dispatch NAME [JSON]  call the host.on handler NAME with JSON params
  .reset                 start over in a new instance (the prelude runs again)
  .stats                 opcodes and CPU time of the last input, and heap use
  .break                 discard the incomplete statement
  .help                  this help
  .exit                  quit (or Ctrl-D)

Host API: console.log(...), await host.rpc("sleep", ms), host.rpcSync("echo", v),
host.on(name, fn). Ctrl-C stops a running evaluation.
`

// historyFile is $KAFIG_HISTORY, or ~/.kafig_history; KAFIG_HISTORY set to
// "" turns history off.
func historyFile() string {
	if f, ok := os.LookupEnv("KAFIG_HISTORY"); ok {
		return f
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".kafig_history")
}

func runREPL(o *options, prelude *source) int {
	pal := newPalette(colorFor(os.Stdout))
	rl, err := readline.NewEx(&readline.Config{
		Prompt:          pal.bold + pal.green + "> " + pal.reset,
		HistoryFile:     historyFile(),
		InterruptPrompt: "^C",
		EOFPrompt:       "",
	})
	if err != nil {
		return fail(usagef("kafig: cannot start the REPL: %v", err), nil)
	}
	defer rl.Close()

	// Output goes straight to the terminal: it is written while readline is
	// not reading (its own writers would redraw the prompt at every write).
	r := &repl{rl: rl, pal: pal, out: os.Stdout, err: os.Stderr}
	// SIGINT reaches us only while an evaluation runs (readline reads
	// Ctrl-C itself at the prompt); it stops that evaluation.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	go func() {
		for range sig {
			r.mu.Lock()
			if r.cancel != nil {
				r.cancel()
			}
			r.mu.Unlock()
		}
	}()

	fmt.Fprintf(r.err, "%skafig REPL (%s backend). .help for help, Ctrl-D to quit.%s\n", pal.dim, o.backend, pal.reset)
	var s *session
	err = r.interruptible(func(ctx context.Context) error {
		var err error
		s, err = newSession(ctx, o, newRouter(&stdConsole{out: r.out, errOut: r.err}, nil), prelude)
		return err
	})
	if err != nil {
		return fail(err, nil)
	}
	defer s.close()
	s.keepAlive = true
	r.s = s
	r.loop()
	return exitOK
}

// interruptible runs f with a context that Ctrl-C cancels.
func (r *repl) interruptible(f func(context.Context) error) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cancel = nil
		r.mu.Unlock()
	}()
	return f(ctx)
}

func (r *repl) loop() {
	prompt := r.pal.bold + r.pal.green + "> " + r.pal.reset
	more := r.pal.dim + "... " + r.pal.reset
	var buf []string
	for {
		if len(buf) == 0 {
			r.rl.SetPrompt(prompt)
		} else {
			r.rl.SetPrompt(more)
		}
		line, err := r.rl.Readline()
		if errors.Is(err, readline.ErrInterrupt) {
			if len(buf) == 0 && line == "" {
				fmt.Fprintf(r.err, "%s(Ctrl-D or .exit quits)%s\n", r.pal.dim, r.pal.reset)
			}
			buf = nil
			continue
		}
		if err != nil { // io.EOF: Ctrl-D
			return
		}
		if cmd, arg, ok := command(line); ok {
			switch {
			case cmd == ".break":
				buf = nil
				continue
			case len(buf) > 0:
				// inside a statement, a command is JavaScript
			default:
				if quit := r.command(cmd, arg); quit {
					return
				}
				continue
			}
		}
		buf = append(buf, line)
		src := strings.Join(buf, "\n")
		if strings.TrimSpace(src) == "" {
			buf = nil
			continue
		}
		var res json.RawMessage
		err = r.interruptible(func(ctx context.Context) error {
			var err error
			res, err = r.s.eval(ctx, src)
			return err
		})
		if incomplete(err, src) {
			continue
		}
		buf = nil
		r.report(res, err)
	}
}

// report prints the result or error of an evaluation.
func (r *repl) report(res json.RawMessage, err error) {
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(r.err, "%sinterrupted%s\n", r.pal.red, r.pal.reset)
	case err != nil:
		printError(r.err, err, nil, r.pal)
	default:
		printResult(r.out, res, r.pal)
	}
	if r.s.opts.stats {
		printStats(r.err, r.s)
	}
}

var commandRE = regexp.MustCompile(`^\s*(\.[a-z]+)(?:\s+(.*?))?\s*$`)

// command splits a REPL command line; ok is false for anything else (a line
// like ".5 + 1" is JavaScript).
func command(line string) (cmd, arg string, ok bool) {
	m := commandRE.FindStringSubmatch(line)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// command runs a REPL command and reports whether to quit.
func (r *repl) command(cmd, arg string) (quit bool) {
	switch cmd {
	case ".exit":
		return true
	case ".help":
		fmt.Fprint(r.out, replHelp)
	case ".reset":
		err := r.interruptible(func(ctx context.Context) error { return r.s.reset(ctx) })
		if err != nil {
			printError(r.err, err, nil, r.pal)
			return false
		}
		fmt.Fprintf(r.err, "%sa new instance%s\n", r.pal.dim, r.pal.reset)
	case ".stats":
		r.printStats()
	case ".dispatch":
		name, params, _ := strings.Cut(strings.TrimSpace(arg), " ")
		params = strings.TrimSpace(params)
		if name == "" {
			fmt.Fprintf(r.err, "%susage: .dispatch NAME [JSON]%s\n", r.pal.red, r.pal.reset)
			return false
		}
		if params == "" {
			params = "null"
		}
		if !json.Valid([]byte(params)) {
			fmt.Fprintf(r.err, "%s.dispatch %s: the params are not valid JSON: %s%s\n", r.pal.red, name, params, r.pal.reset)
			return false
		}
		var res json.RawMessage
		err := r.interruptible(func(ctx context.Context) error {
			var err error
			res, err = r.s.dispatch(ctx, name, json.RawMessage(params))
			return err
		})
		r.report(res, err)
	default:
		fmt.Fprintf(r.err, "%sunknown command %s (.help lists them)%s\n", r.pal.red, cmd, r.pal.reset)
	}
	return false
}

func (r *repl) printStats() {
	st, err := r.s.stats(context.Background())
	if err != nil {
		printError(r.err, err, nil, r.pal)
		return
	}
	fmt.Fprintf(r.out, "last input:   opcodes %d, cpu %s\n", st.Opcodes, formatMicros(st.CPUTimeUs))
	fmt.Fprintf(r.out, "this session: opcodes %d, cpu %s\n", r.s.total.Opcodes, formatMicros(r.s.total.CPUTimeUs))
	fmt.Fprintf(r.out, "heap %s of %s, memory %s\n", formatBytes(st.HeapBytes), formatBytes(st.HeapLimitBytes), formatBytes(st.MemoryBytes))
}

// incomplete reports whether err says that src ended in the middle of a
// statement, so that more input could complete it: a SyntaxError at the end
// of the input, or an unterminated template literal or comment.
func incomplete(err error, src string) bool {
	var je *kafig.JsError
	if !errors.As(err, &je) || je.Name != "SyntaxError" || je.Stack == nil {
		return false
	}
	m := evalPos.FindStringSubmatch(*je.Stack)
	if m == nil {
		return false
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	if strings.HasPrefix(je.Message, "unexpected end of string") || strings.HasPrefix(je.Message, "unexpected end of comment") {
		// The position is where the string or comment starts: only a
		// template literal or a block comment may span lines.
		rest := atPosition(src, line, col)
		return strings.HasPrefix(rest, "`") || strings.HasPrefix(rest, "/*")
	}
	lines := strings.Split(strings.TrimRightFunc(src, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }), "\n")
	endLine, endCol := len(lines), utf8.RuneCountInString(lines[len(lines)-1])+1
	return line > endLine || (line == endLine && col >= endCol)
}

// atPosition returns src from a 1-based line and column (in characters).
func atPosition(src string, line, col int) string {
	lines := strings.SplitAfter(src, "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	l := lines[line-1]
	for i := 1; i < col && l != ""; i++ {
		_, n := utf8.DecodeRuneInString(l)
		l = l[n:]
	}
	return l
}
