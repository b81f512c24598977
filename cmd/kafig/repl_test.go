package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// screen runs the binary under a pseudo-terminal and reads what it shows.
type screen struct {
	t    *testing.T
	cmd  *exec.Cmd
	pty  *os.File
	done chan struct{} // the reader is done

	mu  sync.Mutex
	raw bytes.Buffer // everything the program wrote
	pos int          // how much of the plain text expect has consumed
}

func startREPL(t *testing.T, env []string, args ...string) *screen {
	t.Helper()
	cmd := exec.Command(kafigBin, args...)
	cmd.Env = testEnv(append([]string{"TERM=xterm"}, env...))
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	s := &screen{t: t, cmd: cmd, pty: f, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			s.mu.Lock()
			s.raw.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return // EIO once the program exits
			}
		}
	}()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
		_ = f.Close()
		<-s.done
	})
	return s
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r`)

// text is what the program wrote, without escape sequences.
func (s *screen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ansi.ReplaceAllString(s.raw.String(), "")
}

func (s *screen) rawText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

// expect waits until want appears after what earlier calls matched.
func (s *screen) expect(want string) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		txt := s.text()
		if i := strings.Index(txt[s.pos:], want); i >= 0 {
			s.pos += i + len(want)
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the screen does not show %q after:\n%s", want, txt[s.pos:])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// prompt waits for the prompt.
func (s *screen) prompt() { s.t.Helper(); s.expect("> ") }

// typeLine types a line and Enter.
func (s *screen) typeLine(line string) {
	s.t.Helper()
	s.keys(line + "\r")
}

func (s *screen) keys(k string) {
	s.t.Helper()
	if _, err := s.pty.Write([]byte(k)); err != nil {
		s.t.Fatal(err)
	}
}

// exit waits for the program to end and returns its exit status.
func (s *screen) exit() int {
	s.t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			s.t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
		s.t.Fatalf("the REPL did not exit; screen:\n%s", s.text())
	}
	return -1
}

func TestREPL(t *testing.T) {
	t.Parallel()
	hist := filepath.Join(t.TempDir(), "history")
	s := startREPL(t, []string{"KAFIG_HISTORY=" + hist})
	s.expect("kafig REPL (wazero backend)")
	s.prompt()

	s.typeLine("6 * 7")
	s.expect("42\n")
	s.prompt()

	// Declarations live on; null and undefined print nothing.
	s.typeLine("let x = 20")
	s.prompt()
	s.typeLine("x + 1")
	s.expect("21\n")
	s.prompt()

	// await at the prompt.
	s.typeLine(`await host.rpc("sleep", 5); "wo" + "ke"`)
	s.expect(`"woke"`)
	s.prompt()

	// Multi-line input: a function over three lines.
	s.typeLine("function add(a, b) {")
	s.expect("... ")
	s.typeLine("  return a + b")
	s.expect("... ")
	s.typeLine("}")
	s.prompt()
	s.typeLine("add(40, 3)")
	s.expect("43\n")
	s.prompt()

	// A template literal spans lines; an object literal too.
	s.typeLine("`one")
	s.expect("... ")
	s.typeLine("two`.toUpperCase()")
	s.expect(`"ONE\nTWO"`)
	s.prompt()
	s.typeLine("({a: 1,")
	s.expect("... ")
	s.typeLine("b: 2})")
	s.expect(`{"a":1,"b":2}`)
	s.prompt()

	// A complete line with a syntax error is an error at once.
	s.typeLine("foo bar")
	s.expect("Uncaught SyntaxError: expecting ';'")
	s.prompt()

	// Ctrl-C and .break discard an incomplete statement.
	s.typeLine("[1, 2,")
	s.expect("... ")
	s.keys("\x03")
	s.prompt()
	s.typeLine("'fre' + 'sh'")
	s.expect(`"fresh"`)
	s.prompt()
	s.typeLine("if (true) {")
	s.expect("... ")
	s.typeLine(".break")
	s.prompt()
	s.typeLine("'bro' + 'ken'")
	s.expect(`"broken"`)
	s.prompt()

	// Errors, with console output before them.
	s.typeLine(`console.log("before"); null.foo`)
	s.expect("before\n")
	s.expect("Uncaught TypeError: cannot read property 'foo' of null")
	s.prompt()

	// .help
	s.typeLine(".help")
	s.expect("Commands:")
	s.expect(".dispatch NAME [JSON]")
	s.expect(".exit")
	s.prompt()

	// .dispatch
	s.typeLine(`host.on("greet", (p) => "Hello, " + p.name)`)
	s.prompt()
	s.typeLine(`.dispatch greet {"name": "Ada"}`)
	s.expect(`"Hello, Ada"`)
	s.prompt()
	s.typeLine(`.dispatch nope`)
	s.expect("no handler for event: nope")
	s.prompt()
	s.typeLine(`.dispatch greet {bad`)
	s.expect("the params are not valid JSON")
	s.prompt()
	s.typeLine(`.dispatch`)
	s.expect("usage: .dispatch NAME [JSON]")
	s.prompt()

	// .stats
	s.typeLine(".stats")
	s.expect("last input:")
	s.expect("this session:")
	s.expect("heap ")
	s.prompt()

	// Unknown commands; a line starting with a dot can be JavaScript.
	s.typeLine(".frobnicate")
	s.expect("unknown command .frobnicate")
	s.prompt()
	s.typeLine(".5 + 1")
	s.expect("1.5\n")
	s.prompt()

	// Ctrl-C stops a running evaluation, and the REPL goes on.
	s.typeLine(`console.log("spin" + "ning"); for (;;) {}`)
	s.expect("spinning") // the evaluation runs: the terminal is out of raw mode
	s.keys("\x03")
	s.expect("interrupted")
	s.prompt()
	s.typeLine("x * 3")
	s.expect("60\n")
	s.prompt()

	// .reset starts over.
	s.typeLine(".reset")
	s.expect("a new instance")
	s.prompt()
	s.typeLine("typeof add")
	s.expect(`"undefined"`)
	s.prompt()

	// Ctrl-C at an empty prompt says how to quit.
	s.keys("\x03")
	s.expect("(Ctrl-D or .exit quits)")
	s.prompt()

	s.typeLine(".exit")
	if code := s.exit(); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.text())
	}
	// No colours with NO_COLOR.
	if strings.Contains(s.rawText(), "\x1b[32m") {
		t.Fatalf("colours with NO_COLOR set")
	}
	h, err := os.ReadFile(hist)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"6 * 7", "function add(a, b) {", ".dispatch greet {\"name\": \"Ada\"}", ".exit"} {
		if !strings.Contains(string(h), line+"\n") {
			t.Fatalf("history lacks %q:\n%s", line, h)
		}
	}
}

func TestREPLColorsAndCtrlD(t *testing.T) {
	t.Parallel()
	s := startREPL(t, []string{"NO_COLOR=", "TERM=xterm-256color"}, "-stats", "-max-cpu-ms", "100")
	s.prompt()
	s.typeLine(`"col" + "our"`)
	s.expect(`"colour"`)
	s.expect("kafig: opcodes ") // -stats
	s.prompt()
	s.typeLine("for (;;) {}")
	s.expect("cpu_limit_exceeded")
	s.prompt()
	s.keys("\x04") // Ctrl-D
	if code := s.exit(); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.text())
	}
	raw := s.rawText()
	if !strings.Contains(raw, "\x1b[32m\"colour\"\x1b[0m") {
		t.Fatalf("no coloured result in %q", raw)
	}
	if !strings.Contains(raw, "\x1b[1m\x1b[32m> ") {
		t.Fatalf("no coloured prompt in %q", raw)
	}
}

func TestREPLPreludeAndBackend(t *testing.T) {
	t.Parallel()
	args := []string{"-prelude", filepath.Join(repoRoot, "examples", "events.js")}
	want := "kafig REPL (wazero backend)"
	if cgoEnabled {
		args = append(args, "-backend", "wasmtime")
		want = "kafig REPL (wasmtime backend)"
	}
	s := startREPL(t, nil, args...)
	s.expect(want)
	s.prompt()
	s.typeLine(`.dispatch greet {"name": "Grace"}`)
	s.expect(`"Hello, Grace!"`)
	s.prompt()
	s.typeLine(`.dispatch slow {"ms": 5}`)
	s.expect(`{"waited":5}`)
	s.prompt()
	s.typeLine(".reset")
	s.prompt()
	s.typeLine(`.dispatch count`) // the prelude ran again in the new instance
	s.expect("1\n")
	s.prompt()
	s.typeLine(".exit")
	if code := s.exit(); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.text())
	}
}
