package main

import (
	"bufio"
	"bytes"
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

	"github.com/kafig-dev/kafig/kafig"
)

// JSON mode: see doc.go ("JSON mode") for the protocol.

// maxLine bounds one input line.
const maxLine = 64 << 20

// request is one input line. Exactly one of the fields other than ID is
// set.
type request struct {
	ID        json.RawMessage  `json:"id,omitempty"`
	Eval      *string          `json:"eval,omitempty"`
	Dispatch  *dispatchRequest `json:"dispatch,omitempty"`
	Stats     *bool            `json:"stats,omitempty"`
	Reset     *bool            `json:"reset,omitempty"`
	RPCResult *rpcResult       `json:"rpc_result,omitempty"`
}

type dispatchRequest struct {
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params,omitempty"`
}

type rpcResult struct {
	ID     *uint64         `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  json.RawMessage `json:"error,omitempty"`
}

// response answers one request line.
type response struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *errorBody      `json:"error,omitempty"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Name    string `json:"name,omitempty"`
	Stack   string `json:"stack,omitempty"`
}

// Lines that kafig writes besides responses.
type (
	rpcLine struct {
		RPC rpcCall `json:"rpc"`
	}
	rpcCall struct {
		ID     uint64          `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	rpcCancelLine struct {
		RPCCancel struct {
			ID uint64 `json:"id"`
		} `json:"rpc_cancel"`
	}
	consoleLine struct {
		Console consoleParams `json:"console"`
	}
)

// statsResult is the result of {"stats": true}.
type statsResult struct {
	Opcodes        uint64 `json:"opcodes"`
	CPUTimeUs      uint64 `json:"cpu_time_us"`
	HeapBytes      uint64 `json:"heap_bytes"`
	HeapLimitBytes uint64 `json:"heap_limit_bytes"`
	MemoryBytes    uint64 `json:"memory_bytes"`
	TotalOpcodes   uint64 `json:"total_opcodes"`
	TotalCPUTimeUs uint64 `json:"total_cpu_time_us"`
}

// lineWriter writes one JSON value per line; it is safe for concurrent use.
type lineWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
}

func newLineWriter(w io.Writer) *lineWriter {
	lw := &lineWriter{w: w}
	lw.enc = json.NewEncoder(&lw.buf)
	lw.enc.SetEscapeHTML(false)
	return lw
}

func (lw *lineWriter) send(v any) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.buf.Reset()
	if err := lw.enc.Encode(v); err != nil { // cannot happen for our types
		lw.buf.Reset()
		fmt.Fprintf(&lw.buf, `{"error":{"code":"runtime_error","message":%q}}`+"\n", err.Error())
	}
	_, _ = lw.w.Write(lw.buf.Bytes())
}

func (lw *lineWriter) console(level, text string) {
	lw.send(consoleLine{Console: consoleParams{Level: level, Text: text}})
}

// item is a queued input line: a request, or a line that could not be read
// as one (problem is set).
type item struct {
	line    int
	req     request
	problem string
}

// jsonServer runs JSON mode.
type jsonServer struct {
	out *lineWriter

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []item
	eof     bool
	pending map[uint64]chan rpcAnswer
	nextID  uint64
}

type rpcAnswer struct {
	result json.RawMessage
	err    string
}

func runJSON(o *options, prelude *source, in io.Reader, out io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	j := &jsonServer{out: newLineWriter(out), pending: make(map[uint64]chan rpcAnswer)}
	j.cond = sync.NewCond(&j.mu)
	s, err := newSession(ctx, o, newRouter(j.out, j.forward), prelude)
	if err != nil {
		return fail(err, nil)
	}
	defer s.close()
	s.keepAlive = true
	go j.read(in)
	for {
		it, ok := j.next(ctx)
		if !ok {
			break
		}
		j.out.send(j.handle(ctx, s, it))
		if ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "kafig: interrupted")
		return exitInterrupt
	}
	return exitOK
}

// read reads input lines until EOF: RPC results go to the waiting calls at
// once, everything else to the queue.
func (j *jsonServer) read(in io.Reader) {
	br := bufio.NewReaderSize(in, 64<<10)
	for n := 1; ; n++ {
		line, tooLong, err := readLine(br)
		switch {
		case tooLong:
			j.push(item{line: n, problem: fmt.Sprintf("line %d is longer than %d bytes", n, maxLine)})
		case len(bytes.TrimSpace(line)) > 0:
			it := parseLine(n, line)
			if it.problem == "" && it.req.RPCResult != nil {
				j.deliver(it.req.RPCResult)
			} else {
				j.push(it)
			}
		}
		if err != nil {
			if err != io.EOF {
				fmt.Fprintf(os.Stderr, "kafig: reading stdin: %v\n", err)
			}
			j.closeInput()
			return
		}
	}
}

// readLine reads one line without its end; a line longer than maxLine is
// skipped and reported as tooLong.
func readLine(r *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		frag, err := r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > maxLine {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return bytes.TrimRight(line, "\r\n"), tooLong, err
	}
}

// parseLine decodes one line strictly: a JSON object with known fields and
// exactly one kind of request.
func parseLine(n int, line []byte) item {
	it := item{line: n}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	err := dec.Decode(&it.req)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value on the line")
	}
	if err != nil {
		var loose struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(line, &loose)
		it.req = request{ID: loose.ID}
		it.problem = fmt.Sprintf("line %d: %s", n, describeJSONError(err))
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if n == 1 && (errors.As(err, &se) || errors.As(err, &te) && te.Field == "") {
			it.problem += " (stdin is not a terminal, so kafig is in JSON mode and reads one JSON request per line; kafig - runs a script from stdin)"
		}
		return it
	}
	r := &it.req
	kinds := 0
	for _, set := range []bool{r.Eval != nil, r.Dispatch != nil, r.Stats != nil, r.Reset != nil, r.RPCResult != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		it.problem = fmt.Sprintf("line %d: no request: want one of eval, dispatch, stats, reset or rpc_result", n)
	case kinds > 1:
		it.problem = fmt.Sprintf("line %d: more than one request on a line: want one of eval, dispatch, stats, reset or rpc_result", n)
	case r.RPCResult != nil && r.RPCResult.ID == nil:
		it.problem = fmt.Sprintf("line %d: rpc_result needs the id of the call", n)
	case r.RPCResult != nil && len(r.ID) > 0:
		it.problem = fmt.Sprintf("line %d: rpc_result takes its id inside: {\"rpc_result\": {\"id\": N, ...}}", n)
	case r.RPCResult != nil && r.RPCResult.Result != nil && r.RPCResult.Error != nil && string(r.RPCResult.Error) != "null":
		it.problem = fmt.Sprintf("line %d: rpc_result has both result and error", n)
	case r.Dispatch != nil && r.Dispatch.Name == "":
		it.problem = fmt.Sprintf("line %d: dispatch needs a name: {\"dispatch\": {\"name\": \"...\", \"params\": ...}}", n)
	case r.Stats != nil && !*r.Stats, r.Reset != nil && !*r.Reset:
		it.problem = fmt.Sprintf("line %d: stats and reset take true", n)
	}
	return it
}

func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "invalid JSON: " + se.Error()
	case errors.As(err, &te):
		if te.Field == "" {
			return "a request must be a JSON object"
		}
		return fmt.Sprintf("field %s: want %s, not %s", te.Field, te.Type, te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "invalid JSON: unexpected end of line"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ") + " (want eval, dispatch, stats, reset or rpc_result, and id)"
	}
	return "invalid JSON: " + strings.TrimPrefix(err.Error(), "json: ")
}

func (j *jsonServer) push(it item) {
	j.mu.Lock()
	j.queue = append(j.queue, it)
	j.mu.Unlock()
	j.cond.Signal()
}

// next waits for the next queued line; false at the end of input (or when
// ctx ends).
func (j *jsonServer) next(ctx context.Context) (item, bool) {
	stop := context.AfterFunc(ctx, func() {
		j.mu.Lock()
		j.cond.Broadcast()
		j.mu.Unlock()
	})
	defer stop()
	j.mu.Lock()
	defer j.mu.Unlock()
	for len(j.queue) == 0 && !j.eof && ctx.Err() == nil {
		j.cond.Wait()
	}
	if len(j.queue) == 0 || ctx.Err() != nil {
		return item{}, false
	}
	it := j.queue[0]
	j.queue[0] = item{}
	j.queue = j.queue[1:]
	return it, true
}

// closeInput marks the end of input: waiting calls fail, and so will new
// ones.
func (j *jsonServer) closeInput() {
	j.mu.Lock()
	j.eof = true
	for id, ch := range j.pending {
		ch <- rpcAnswer{err: fmt.Sprintf("kafig: stdin closed before the result of RPC %d arrived", id)}
		delete(j.pending, id)
	}
	j.mu.Unlock()
	j.cond.Broadcast()
}

// deliver hands an RPC result to the call waiting for it.
func (j *jsonServer) deliver(r *rpcResult) {
	id := *r.ID
	j.mu.Lock()
	ch, ok := j.pending[id]
	delete(j.pending, id)
	j.mu.Unlock()
	if !ok {
		fmt.Fprintf(os.Stderr, "kafig: ignoring rpc_result %d: no call with that id is waiting (withdrawn, already answered or never made)\n", id)
		return
	}
	a := rpcAnswer{result: r.Result}
	if len(a.result) == 0 {
		a.result = json.RawMessage("null")
	}
	if len(r.Error) > 0 && string(r.Error) != "null" {
		var text string
		if json.Unmarshal(r.Error, &text) != nil {
			var obj struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(r.Error, &obj) == nil && obj.Message != "" {
				text = obj.Message
			} else {
				text = string(r.Error)
			}
		}
		a = rpcAnswer{err: text}
	}
	ch <- a
}

// forward is the router's fallback in JSON mode: the call goes out as an rpc
// line and waits for its rpc_result line.
func (j *jsonServer) forward(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
	method, _ := kafig.MethodName(ctx)
	ch := make(chan rpcAnswer, 1)
	j.mu.Lock()
	if j.eof {
		j.mu.Unlock()
		return nil, fmt.Errorf("kafig: stdin is closed; no result of RPC %s can arrive", method)
	}
	j.nextID++
	id := j.nextID
	j.pending[id] = ch
	j.mu.Unlock()
	if len(params) == 0 {
		params = json.RawMessage("null")
	}
	j.out.send(rpcLine{RPC: rpcCall{ID: id, Method: method, Params: params}})
	select {
	case a := <-ch:
		if a.err != "" {
			return nil, errors.New(a.err)
		}
		return a.result, nil
	case <-ctx.Done():
		j.mu.Lock()
		_, waiting := j.pending[id]
		delete(j.pending, id)
		j.mu.Unlock()
		if waiting {
			var c rpcCancelLine
			c.RPCCancel.ID = id
			j.out.send(c)
		}
		return nil, ctx.Err()
	}
}

// handle runs one queued line and returns its response.
func (j *jsonServer) handle(ctx context.Context, s *session, it item) response {
	r := response{ID: it.req.ID}
	if it.problem != "" {
		r.Error = &errorBody{Code: "bad_request", Message: "kafig: " + it.problem}
		return r
	}
	var res json.RawMessage
	var err error
	switch req := it.req; {
	case req.Eval != nil:
		res, err = s.eval(ctx, *req.Eval)
	case req.Dispatch != nil:
		res, err = s.dispatch(ctx, req.Dispatch.Name, req.Dispatch.Params)
	case req.Stats != nil:
		var st kafig.ExecutionStats
		if st, err = s.stats(ctx); err == nil {
			b, _ := json.Marshal(statsResult{
				Opcodes: st.Opcodes, CPUTimeUs: st.CPUTimeUs,
				HeapBytes: st.HeapBytes, HeapLimitBytes: st.HeapLimitBytes, MemoryBytes: st.MemoryBytes,
				TotalOpcodes: s.total.Opcodes, TotalCPUTimeUs: s.total.CPUTimeUs,
			})
			res = b
		}
	case req.Reset != nil:
		if err = s.reset(ctx); err == nil {
			res = json.RawMessage("true")
		}
	}
	if s.opts.stats && (it.req.Eval != nil || it.req.Dispatch != nil) {
		printStats(os.Stderr, s)
	}
	if err != nil {
		r.Error = describeError(err)
		return r
	}
	if len(res) == 0 {
		res = json.RawMessage("null")
	}
	r.Result = res
	return r
}

// describeError turns an evaluation error into the error of a response.
func describeError(err error) *errorBody {
	var je *kafig.JsError
	var pe *preludeError
	if errors.As(err, &je) && !errors.As(err, &pe) {
		b := &errorBody{Code: "js_error", Name: je.Name, Message: je.Message}
		if je.Stack != nil {
			b.Stack = *je.Stack
		}
		return b
	}
	return &errorBody{Code: errorCode(err), Message: err.Error()}
}
