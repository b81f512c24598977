package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// controller plays the process that drives kafig in JSON mode.
type controller struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *lockedBuffer
	done   chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startJSON(t *testing.T, args ...string) *controller {
	t.Helper()
	cmd := exec.Command(kafigBin, args...)
	cmd.Env = testEnv(nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &controller{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 100), stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(func() {
		_ = c.stdin.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
		_ = cmd.Wait()
	})
	return c
}

// send writes one line: a string as it is, anything else as JSON.
func (c *controller) send(v any) {
	c.t.Helper()
	line, ok := v.(string)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			c.t.Fatal(err)
		}
		line = string(b)
	}
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next reads the next line.
func (c *controller) next() string {
	c.t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("kafig closed stdout; stderr:\n%s", c.stderr.String())
		}
		return line
	case <-time.After(30 * time.Second):
		c.t.Fatalf("no line from kafig; stderr:\n%s", c.stderr.String())
	}
	return ""
}

// expectStderr waits for want to appear on stderr. os/exec copies the
// child's stderr into the buffer on a goroutine of its own, so a note the
// child wrote before a stdout line may reach the buffer after that line.
func (c *controller) expectStderr(want string) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.stderr.String(), want) {
		if time.Now().After(deadline) {
			c.t.Fatalf("stderr has no %q:\n%s", want, c.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expect reads the next line and compares it with want (as JSON).
func (c *controller) expect(want string) {
	c.t.Helper()
	got := c.next()
	if !jsonEqual(got, want) {
		c.t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// nextMsg reads the next line as an object.
func (c *controller) nextMsg() map[string]json.RawMessage {
	c.t.Helper()
	line := c.next()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		c.t.Fatalf("not a JSON object: %q", line)
	}
	return m
}

// wait closes stdin and waits for the exit; it returns the exit status.
func (c *controller) wait() int {
	c.t.Helper()
	_ = c.stdin.Close()
	for line := range c.lines {
		c.t.Fatalf("unexpected line after the end: %s", line)
	}
	err := c.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	c.t.Fatal(err)
	return -1
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func TestJSONRequests(t *testing.T) {
	t.Parallel()
	c := startJSON(t) // stdin is a pipe: JSON mode without -json
	c.send(`{"eval": "1 + 2"}`)
	c.expect(`{"result": 3}`)
	c.send(`{"id": "a", "eval": "let x = 20; x + 1"}`)
	c.expect(`{"id": "a", "result": 21}`)
	c.send(`{"id": 7, "eval": "x * 2"}`) // one instance serves all requests
	c.expect(`{"id": 7, "result": 40}`)
	c.send(`{"eval": "undefined"}`)
	c.expect(`{"result": null}`)
	c.send(`{"eval": "const v = await host.rpc('sleep', 5); 'slept'"}`)
	c.expect(`{"result": "slept"}`)
	c.send(`{"eval": "host.on('add', (p) => p.a + p.b); host.on('later', async () => { await host.rpc('sleep', 1); return 'later'; })"}`)
	c.expect(`{"result": null}`)
	c.send(`{"id": 1, "dispatch": {"name": "add", "params": {"a": 2, "b": 3}}}`)
	c.expect(`{"id": 1, "result": 5}`)
	c.send(`{"dispatch": {"name": "later"}}`)
	c.expect(`{"result": "later"}`)
	c.send(`{"id": 2, "dispatch": {"name": "nope"}}`)
	c.expect(`{"id": 2, "error": {"code": "no_handler", "message": "kafig: no handler for event: nope"}}`)
	c.send(`{"eval": "console.log('out', {a: 1}); console.error('bad'); 5"}`)
	c.expect(`{"console": {"level": "log", "text": "out { a: 1 }"}}`)
	c.expect(`{"console": {"level": "error", "text": "bad"}}`)
	c.expect(`{"result": 5}`)

	c.send(`{"stats": true}`)
	m := c.nextMsg()
	var st statsResult
	if err := json.Unmarshal(m["result"], &st); err != nil || st.HeapLimitBytes != 32<<20 || st.HeapBytes == 0 || st.MemoryBytes == 0 || st.TotalCPUTimeUs < st.CPUTimeUs {
		t.Fatalf("stats: %s (%v)", m["result"], err)
	}
	c.send(`{"reset": true, "id": "r"}`)
	c.expect(`{"id": "r", "result": true}`)
	c.send(`{"eval": "typeof x"}`)
	c.expect(`{"result": "undefined"}`)
	if code := c.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestJSONErrors(t *testing.T) {
	t.Parallel()
	s := startJSON(t)
	s.send(`{"eval": "function f() { return f() + 1 } f()"}`)
	s.expect(`{"error": {"code": "stack_overflow", "message": "kafig: stack_overflow: stack overflow"}}`)
	s.send(`{"eval": "'alive'"}`)
	s.expect(`{"result": "alive"}`)

	// Each limit in a process of its own: on a loaded machine a memory hog
	// can reach a CPU limit first.
	cpu := startJSON(t, "-json", "-max-cpu-ms", "100")
	cpu.send(`{"eval": "for (;;) {}"}`)
	cpu.expect(`{"error": {"code": "cpu_limit_exceeded", "message": "kafig: cpu_limit_exceeded: the CPU time limit (-max-cpu-ms 100) was exceeded"}}`)
	cpu.send(`{"eval": "'alive'"}`)
	cpu.expect(`{"result": "alive"}`)
	mem := startJSON(t, "-json", "-max-memory", "1MiB")
	mem.send(`{"eval": "let a = []; for (;;) a.push('x'.repeat(1000) + a.length)"}`)
	mem.expect(`{"error": {"code": "memory_limit_exceeded", "message": "kafig: memory_limit_exceeded: the JavaScript heap reached its limit (-max-memory 1.0 MiB)"}}`)
	mem.send(`{"eval": "a = null; 'alive'"}`)
	mem.expect(`{"result": "alive"}`)

	c := startJSON(t, "-json")
	c.send(`{"id": 1, "eval": "null.foo"}`)
	m := c.nextMsg()
	var e errorBody
	if err := json.Unmarshal(m["error"], &e); err != nil || e.Code != "js_error" || e.Name != "TypeError" ||
		e.Message != "cannot read property 'foo' of null" || !strings.Contains(e.Stack, "<eval>:1:") || string(m["id"]) != "1" {
		t.Fatalf("error: %v %+v", m, e)
	}
	// The instance survives all of that.
	c.send(`{"eval": "'still here'"}`)
	c.expect(`{"result": "still here"}`)

	// Malformed lines: each gets one error response, in order, and kafig
	// goes on.
	for _, tc := range []struct{ line, message string }{
		{`garbage`, "kafig: line 3: invalid JSON: invalid character 'g' looking for beginning of value"},
		{`{"eval": "1"`, "kafig: line 4: invalid JSON: unexpected end of line"},
		{`[1, 2]`, "kafig: line 5: a request must be a JSON object"},
		{`"eval"`, "kafig: line 6: a request must be a JSON object"},
		{`{"evl": "1"}`, `kafig: line 7: unknown field "evl" (want eval, dispatch, stats, reset or rpc_result, and id)`},
		{`{"eval": 5}`, "kafig: line 8: field eval: want string, not number"},
		{`{}`, "kafig: line 9: no request: want one of eval, dispatch, stats, reset or rpc_result"},
		{`{"eval": "1", "stats": true}`, "kafig: line 10: more than one request on a line: want one of eval, dispatch, stats, reset or rpc_result"},
		{`{"dispatch": {"params": 1}}`, `kafig: line 11: dispatch needs a name: {"dispatch": {"name": "...", "params": ...}}`},
		{`{"stats": false}`, "kafig: line 12: stats and reset take true"},
		{`{"eval": "1"} {"eval": "2"}`, "kafig: line 13: invalid JSON: more than one JSON value on the line"},
		{`{"rpc_result": {"result": 1}}`, "kafig: line 14: rpc_result needs the id of the call"},
		{`{"eval": ""}`, "kafig: invalid source or input: empty source"},
	} {
		c.send(tc.line)
		m := c.nextMsg()
		if err := json.Unmarshal(m["error"], &e); err != nil || e.Code != "bad_request" || e.Message != tc.message {
			t.Fatalf("%s: got %s, want message %q", tc.line, m["error"], tc.message)
		}
	}
	// The id of a request that is otherwise wrong is still echoed; blank
	// lines are ignored.
	c.send("")
	c.send("   ")
	c.send(`{"id": "x", "eval": "1", "extra": true}`)
	m = c.nextMsg()
	if string(m["id"]) != `"x"` || m["error"] == nil {
		t.Fatalf("got %v", m)
	}
	c.send(`{"eval": "'ok'"}`)
	c.expect(`{"result": "ok"}`)
	if code := c.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestJSONForwardsRPCs(t *testing.T) {
	t.Parallel()
	c := startJSON(t)
	// Concurrent host.rpc calls, answered in reverse order.
	c.send(`{"id": "p", "eval": "const r = await Promise.all([host.rpc('double', 1), host.rpc('double', 2), host.rpc('double', 3)]); r"}`)
	calls := map[float64]uint64{} // param -> rpc id
	for range 3 {
		var m struct {
			RPC *rpcCall `json:"rpc"`
		}
		line := c.next()
		if err := json.Unmarshal([]byte(line), &m); err != nil || m.RPC == nil || m.RPC.Method != "double" {
			t.Fatalf("want an rpc line, got %s", line)
		}
		var p float64
		if err := json.Unmarshal(m.RPC.Params, &p); err != nil {
			t.Fatal(err)
		}
		calls[p] = m.RPC.ID
	}
	if len(calls) != 3 || calls[1] == calls[2] || calls[2] == calls[3] || calls[1] == calls[3] {
		t.Fatalf("rpc ids: %v", calls)
	}
	for _, p := range []float64{3, 1, 2} {
		c.send(map[string]any{"rpc_result": map[string]any{"id": calls[p], "result": 2 * p}})
	}
	c.expect(`{"id": "p", "result": [2, 4, 6]}`)

	// host.rpcSync blocks the script until the answer arrives; an error
	// answer throws (a string or an object's message).
	c.send(`{"eval": "const a = host.rpcSync('upper', 'abc'); let e1, e2; try { host.rpcSync('fail', 1) } catch (e) { e1 = e.message } try { await host.rpc('fail', 2) } catch (e) { e2 = e.message } [a, e1, e2]"}`)
	var m struct {
		RPC rpcCall `json:"rpc"`
	}
	if err := json.Unmarshal([]byte(c.next()), &m); err != nil || m.RPC.Method != "upper" || string(m.RPC.Params) != `"abc"` {
		t.Fatalf("rpc: %+v %v", m, err)
	}
	c.send(map[string]any{"rpc_result": map[string]any{"id": m.RPC.ID, "result": "ABC"}})
	if err := json.Unmarshal([]byte(c.next()), &m); err != nil || m.RPC.Method != "fail" {
		t.Fatalf("rpc: %+v %v", m, err)
	}
	c.send(map[string]any{"rpc_result": map[string]any{"id": m.RPC.ID, "error": "no such thing"}})
	if err := json.Unmarshal([]byte(c.next()), &m); err != nil || m.RPC.Method != "fail" {
		t.Fatalf("rpc: %+v %v", m, err)
	}
	c.send(map[string]any{"rpc_result": map[string]any{"id": m.RPC.ID, "error": map[string]any{"message": "as object"}}})
	c.expect(`{"result": ["ABC", "no such thing", "as object"]}`)

	// Requests sent while one runs wait their turn; results answer the
	// running one meanwhile. Built-in methods are not forwarded.
	c.send(`{"id": 1, "eval": "await host.rpc('sleep', 1); await host.rpc('ask', 'q')"}`)
	c.send(`{"id": 2, "eval": "'second'"}`)
	if err := json.Unmarshal([]byte(c.next()), &m); err != nil || m.RPC.Method != "ask" {
		t.Fatalf("rpc: %+v %v", m, err)
	}
	c.send(map[string]any{"rpc_result": map[string]any{"id": m.RPC.ID}}) // no result: null
	c.expect(`{"id": 1, "result": null}`)
	c.expect(`{"id": 2, "result": "second"}`)

	// An answer nobody waits for is ignored, with a note on stderr.
	c.send(`{"rpc_result": {"id": 999, "result": 1}}`)
	c.send(`{"eval": "'after'"}`)
	c.expect(`{"result": "after"}`)
	c.expectStderr("ignoring rpc_result 999")

	// Dispatch forwards too.
	c.send(`{"eval": "host.on('ev', async (p) => (await host.rpc('lookup', p)).name)"}`)
	c.expect(`{"result": null}`)
	c.send(`{"dispatch": {"name": "ev", "params": 5}}`)
	if err := json.Unmarshal([]byte(c.next()), &m); err != nil || m.RPC.Method != "lookup" || string(m.RPC.Params) != "5" {
		t.Fatalf("rpc: %+v %v", m, err)
	}
	c.send(map[string]any{"rpc_result": map[string]any{"id": m.RPC.ID, "result": map[string]any{"name": "five"}}})
	c.expect(`{"result": "five"}`)
	if code := c.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestJSONWithdrawnRPC(t *testing.T) {
	t.Parallel()
	c := startJSON(t, "-max-cpu-ms", "100")
	// The script does not wait for its call and then loops: the limit ends
	// the request, and the call is withdrawn before the response.
	c.send(`{"eval": "host.rpc('slow', 1).catch(() => {}); for (;;) {}"}`)
	var m struct {
		RPC rpcCall `json:"rpc"`
	}
	if err := json.Unmarshal([]byte(c.next()), &m); err != nil || m.RPC.Method != "slow" {
		t.Fatalf("rpc: %+v %v", m, err)
	}
	c.expect(`{"rpc_cancel": {"id": ` + jsonNum(m.RPC.ID) + `}}`)
	msg := c.nextMsg()
	var e errorBody
	if err := json.Unmarshal(msg["error"], &e); err != nil || e.Code != "cpu_limit_exceeded" {
		t.Fatalf("got %v", msg)
	}
	// A late answer is ignored.
	c.send(map[string]any{"rpc_result": map[string]any{"id": m.RPC.ID, "result": 1}})
	c.send(`{"eval": "'next'"}`)
	c.expect(`{"result": "next"}`)
	if code := c.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func jsonNum(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestJSONEndOfInput(t *testing.T) {
	t.Parallel()
	c := startJSON(t)
	c.send(`{"id": 1, "eval": "try { await host.rpc('wait', 0) } catch (e) { 'failed: ' + e.message }"}`)
	c.send(`{"id": 2, "eval": "try { host.rpcSync('wait2') } catch (e) { 'failed: ' + e.message }"}`)
	c.send(`{"id": 3, "eval": "'queued'"}`)
	m := c.nextMsg()
	if m["rpc"] == nil {
		t.Fatalf("want an rpc line, got %v", m)
	}
	_ = c.stdin.Close() // the call waits: EOF fails it; queued requests still run
	c.expect(`{"id": 1, "result": "failed: kafig: stdin closed before the result of RPC 1 arrived"}`)
	c.expect(`{"id": 2, "result": "failed: kafig: stdin is closed; no result of RPC wait2 can arrive"}`)
	c.expect(`{"id": 3, "result": "queued"}`)
	if code := c.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestJSONDeadInstanceIsReplaced(t *testing.T) {
	t.Parallel()
	// String.prototype.repeat does not poll: with a CPU limit, a big one is
	// stopped from outside and the instance dies, unless it finishes before
	// the runtime's monitor looks (a fast machine). Either way the next
	// request works, in a new instance only if the old one died.
	c := startJSON(t, "-max-cpu-ms", "20", "-max-memory", "1GiB")
	c.send(`{"eval": "globalThis.marker = 'old'"}`)
	c.expect(`{"result": "old"}`)
	c.send(`{"eval": "'x'.repeat(2 ** 28).length"}`)
	m := c.nextMsg()
	var e errorBody
	if err := json.Unmarshal(m["error"], &e); err != nil || e.Code != "cpu_limit_exceeded" {
		t.Fatalf("got %v", m)
	}
	want := `{"result": "old"}`
	if strings.Contains(e.Message, "(the instance did not survive; a new one replaces it)") {
		want = `{"result": "undefined"}`
	}
	c.send(`{"eval": "typeof marker === 'string' ? marker : typeof marker"}`)
	c.expect(want)
	if code := c.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestJSONModeHint(t *testing.T) {
	t.Parallel()
	// Piping a script into kafig is JSON mode: the first response says so.
	r := invocation{stdin: "console.log(1)\n1 + 2\n"}.do(t)
	r.expect(t, exitOK, []string{
		`"kafig: line 1: invalid JSON: invalid character 'c' looking for beginning of value (stdin is not a terminal, so kafig is in JSON mode and reads one JSON request per line; kafig - runs a script from stdin)"`,
		`"kafig: line 2: a request must be a JSON object"}}`,
	}, nil)
	if n := strings.Count(r.stdout, "\n"); n != 2 {
		t.Fatalf("%d lines:\n%s", n, r.stdout)
	}
}

func TestJSONPrelude(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{"p.js": "var counter = 0;\nfunction bump() { return ++counter; }\n"})
	r := invocation{
		args:  []string{"-prelude", dir + "/p.js", "-stats"},
		stdin: `{"eval": "bump()"}` + "\n" + `{"eval": "bump()"}` + "\n" + `{"reset": true}` + "\n" + `{"eval": "bump()"}` + "\n",
	}.do(t)
	r.expect(t, exitOK, []string{`{"result":1}` + "\n" + `{"result":2}` + "\n" + `{"result":true}` + "\n" + `{"result":1}` + "\n"}, []string{"kafig: opcodes"})

	// A prelude that fails ends JSON mode before it starts.
	dir = writeFiles(t, map[string]string{"bad.js": "throw new Error('no');\n"})
	r = invocation{args: []string{"-prelude", dir + "/bad.js"}, stdin: `{"eval": "1"}` + "\n"}.do(t)
	r.expect(t, exitJSError, nil, []string{"in the prelude", "Uncaught Error: no", "bad.js:1:"})
}
