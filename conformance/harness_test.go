package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kafig-dev/kafig/kafig"
)

// The harness: one shared Runtime per backend (created on first use and
// closed after every test), a case type, and a runner that runs a table of
// cases on every backend as TestX/backend/case.

// TestMain checks that no goroutine outlives the suite. The shared
// runtimes are closed after m.Run and before the check.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(closingM{m})
}

type closingM struct{ m *testing.M }

func (c closingM) Run() int {
	code := c.m.Run()
	closeShared()
	return code
}

const (
	// defaultTimeout bounds every eval of a case that sets no timeout: a
	// hang becomes a failure, not a stuck suite.
	defaultTimeout = 30 * time.Second
	// hangTimeout is the deadline of the cases that would run forever.
	hangTimeout = 400 * time.Millisecond
)

// stopBound is how long an operation with deadline d may take: 2x + 1 s.
func stopBound(d time.Duration) time.Duration { return 2*d + time.Second }

// ---- shared runtimes ----

var (
	sharedMu sync.Mutex
	shared   = map[string]*kafig.Runtime{}
)

// sharedRuntime returns the backend's runtime with default options.
func sharedRuntime(t testing.TB, b backendEntry) *kafig.Runtime {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if rt, ok := shared[b.name]; ok {
		return rt
	}
	rt, err := kafig.New(context.Background(), b.new())
	require.NoError(t, err, "kafig.New with %s", b.name)
	shared[b.name] = rt
	return rt
}

func closeShared() {
	ctx := context.Background()
	sharedMu.Lock()
	for k, rt := range shared {
		_ = rt.Close(ctx)
		delete(shared, k)
	}
	sharedMu.Unlock()
	closeBackends(ctx)
}

// newRuntime makes a runtime of its own, closed when t ends.
func newRuntime(t testing.TB, b backendEntry, opts ...kafig.Option) *kafig.Runtime {
	t.Helper()
	rt, err := kafig.New(context.Background(), b.new(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, rt.Close(context.Background())) })
	return rt
}

// ---- cases ----

// after is what a case requires of its instance once it ran.
type after int

const (
	// usable: the instance still evaluates afterCheck (the default).
	usable after = iota
	// usableOrDead: it evaluates afterCheck or reports ErrInstanceDead on
	// every call (a call stopped from outside: see WithInterruptCallback).
	usableOrDead
	// closed: every call reports ErrClosed.
	closed
	// anything: the case checks the instance itself.
	anything
)

// tcase is one named case of an area.
type tcase struct {
	name string
	// rtOpts, when non-nil, gives the case a runtime of its own.
	rtOpts []kafig.Option
	// opts returns the instance's options; nil means the standard router.
	opts func(c *cctx) []kafig.InstanceOption
	// src is evaluated with Eval (WithAsync when async: for run, async
	// only documents the flow); its result and error go to check, or are
	// compared with want.
	src   string
	async bool
	want  string // the expected result as JSON, when check is nil
	check checkFn
	// run replaces src for flows that are more than one eval.
	run func(t *testing.T, c *cctx)
	// timeout is the eval's deadline (default defaultTimeout); the eval
	// must end within stopBound(timeout).
	timeout time.Duration
	after   after
	// slow cases are skipped with -short.
	slow bool
	// noInstance: the case makes its own instances (run only).
	noInstance bool
	// bug names the bug in another module that makes this case fail; a
	// failure then says so.
	bug string
}

// cctx is what a running case sees.
type cctx struct {
	t    *testing.T
	b    backendEntry
	rt   *kafig.Runtime
	inst *kafig.Instance

	// Counters of the standard router.
	calls     atomic.Int64 // handler calls
	active    atomic.Int64 // "conc" handlers running now
	maxActive atomic.Int64 // the most that ran at once
	cancelled atomic.Int64 // handlers that saw their context end
	started   chan string  // "block" and "started" handlers announce themselves
}

// runCases runs every case on every backend: TestX/backend/case. Backends
// run in parallel with each other, cases one after the other.
func runCases(t *testing.T, cases []tcase) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cases {
		require.False(t, seen[c.name], "duplicate case name %q", c.name)
		seen[c.name] = true
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			// The shared runtime keeps the compiled guest alive, so that
			// the runtimes of the cases reuse it (wasmtime compiles once per
			// process while one runtime holds it).
			sharedRuntime(t, b)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if tc.slow && testing.Short() {
						t.Skip("slow; skipped with -short")
					}
					runCase(t, b, tc)
				})
			}
		})
	}
}

func runCase(t *testing.T, b backendEntry, tc tcase) {
	if tc.bug != "" {
		// A known bug, recorded on the issue: skipped so the suite stays a
		// gate, run with KAFIG_KNOWN_BUGS=1 to see it fail.
		if os.Getenv("KAFIG_KNOWN_BUGS") == "" {
			t.Skipf("BUG (known, in another module; KAFIG_KNOWN_BUGS=1 runs it): %s", tc.bug)
		}
		defer func() {
			if t.Failed() {
				t.Errorf("BUG (known, in another module): %s", tc.bug)
			}
		}()
	}
	c := &cctx{t: t, b: b, started: make(chan string, 64)}
	if tc.rtOpts != nil {
		c.rt = newRuntime(t, b, tc.rtOpts...)
	} else {
		c.rt = sharedRuntime(t, b)
	}
	if tc.noInstance {
		tc.run(t, c)
		return
	}
	c.inst = c.newInstance(tc.opts)
	switch {
	case tc.run != nil:
		tc.run(t, c)
	default:
		var opts []kafig.EvalOption
		if tc.async {
			opts = append(opts, kafig.WithAsync())
		}
		res, err := c.evalTimeout(tc.timeout, tc.src, opts...)
		if tc.check != nil {
			tc.check(t, c, res, err)
		} else {
			isValue(tc.want)(t, c, res, err)
		}
	}
	if t.Failed() {
		return
	}
	c.checkAfter(tc.after)
}

// newInstance makes an instance of the case's runtime, closed when the
// case ends.
func (c *cctx) newInstance(opts func(c *cctx) []kafig.InstanceOption) *kafig.Instance {
	c.t.Helper()
	var o []kafig.InstanceOption
	if opts != nil {
		o = opts(c)
	} else {
		o = c.std()
	}
	inst, err := c.rt.Instance(context.Background(), o...)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = inst.Close(context.Background()) })
	return inst
}

// std is the standard instance options: the standard router.
func (c *cctx) std(more ...kafig.InstanceOption) []kafig.InstanceOption {
	return append([]kafig.InstanceOption{kafig.WithRouter(c.router())}, more...)
}

func (c *cctx) checkAfter(a after) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTimeout)
	defer cancel()
	switch a {
	case usable:
		res, err := c.inst.Eval(ctx, afterCheck)
		if assert.NoError(t, err, "the instance must stay usable") {
			assert.Equal(t, "2", string(res))
		}
	case usableOrDead:
		res, err := c.inst.Eval(ctx, afterCheck)
		if err != nil {
			t.Logf("the instance is dead: %v", err)
			assert.ErrorIs(t, err, kafig.ErrInstanceDead, "the instance must be usable or dead")
			_, err = c.inst.Eval(ctx, "1+1")
			assert.ErrorIs(t, err, kafig.ErrInstanceDead, "a dead instance stays dead")
			_, err = c.inst.GetExecutionStats(ctx)
			assert.ErrorIs(t, err, kafig.ErrInstanceDead)
			assert.NoError(t, c.inst.Close(ctx), "Close works on a dead instance")
		} else {
			assert.Equal(t, "2", string(res))
		}
	case closed:
		_, err := c.inst.Eval(ctx, "1+1")
		assert.ErrorIs(t, err, kafig.ErrClosed)
	}
}

// afterCheck is what a usable instance must still evaluate (to 2): it
// parses, calls and allocates objects.
const afterCheck = `[1, 1].map((x) => ({x})).length`

// eval runs src on the case's instance with the default timeout.
func (c *cctx) eval(src string, opts ...kafig.EvalOption) (json.RawMessage, error) {
	return c.evalTimeout(0, src, opts...)
}

// evalTimeout runs src with deadline d (0: defaultTimeout) and fails the
// case if it does not end within stopBound(d).
func (c *cctx) evalTimeout(d time.Duration, src string, opts ...kafig.EvalOption) (json.RawMessage, error) {
	return c.bounded(d, func(ctx context.Context) (json.RawMessage, error) {
		return c.inst.Eval(ctx, src, opts...)
	})
}

// bounded runs op with a context of deadline d (0: defaultTimeout) and
// requires it to return within stopBound(d).
func (c *cctx) bounded(d time.Duration, op func(ctx context.Context) (json.RawMessage, error)) (json.RawMessage, error) {
	c.t.Helper()
	if d == 0 {
		d = defaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	type out struct {
		res json.RawMessage
		err error
	}
	done := make(chan out, 1)
	start := time.Now()
	go func() {
		res, err := op(ctx)
		done <- out{res, err}
	}()
	select {
	case o := <-done:
		if el := time.Since(start); el > stopBound(d) {
			c.t.Errorf("took %v with a deadline of %v: more than 2x + 1 s", el, d)
		}
		return o.res, o.err
	case <-time.After(stopBound(d) + 5*time.Second):
		c.t.Fatalf("hung: no answer %v after a deadline of %v", time.Since(start), d)
		return nil, nil
	}
}

// mustEval runs src and requires success.
func (c *cctx) mustEval(src string, opts ...kafig.EvalOption) json.RawMessage {
	c.t.Helper()
	res, err := c.eval(src, opts...)
	require.NoError(c.t, err, "eval %.80q", src)
	return res
}

// ---- known bugs ----
//
// None at the moment. A case that fails because of a bug in another module
// names it in its bug field (a string constant here): it is then skipped
// unless KAFIG_KNOWN_BUGS=1, and says why.

// ---- the standard router ----

// router returns the standard router of a case. Methods come in a sync
// (WithSync) and an async (WithAsync, "a" prefix) flavour:
//
//	echo/aecho        the params
//	fail/afail        an error "boom from go"
//	panic/apanic      a panic "handler panic"
//	badjson/abadjson  a reply that is not JSON
//	nil/anil          a nil reply (null)
//	size/asize        params n: a JSON string of n bytes (n >= 2)
//	len/alen          the length of the params JSON, in bytes
//	ssleep/sleep      params ms: sleeps (or until the context ends), then null
//	block             async: waits for its context to end
//	conc              async: params ms; counts handlers running at once
//	count             sync: counts calls
//	ctxval/actxval    the value of ctxKey in the handler's context
func (c *cctx) router() *kafig.RPCRouter {
	echo := func(_ context.Context, p json.RawMessage) (json.RawMessage, error) {
		c.calls.Add(1)
		return p, nil
	}
	fail := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return nil, errors.New("boom from go")
	}
	pnc := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		panic("handler panic")
	}
	bad := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"not": json`), nil
	}
	nilh := func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil }
	size := func(_ context.Context, p json.RawMessage) (json.RawMessage, error) {
		n, err := strconv.Atoi(string(p))
		if err != nil || n < 2 {
			return nil, fmt.Errorf("size: bad params %s", p)
		}
		return jsonString(n), nil
	}
	plen := func(_ context.Context, p json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(strconv.Itoa(len(p))), nil
	}
	sleep := func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		ms, _ := strconv.Atoi(string(p))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			c.cancelled.Add(1)
			return nil, ctx.Err()
		}
		return nil, nil
	}
	block := func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		select {
		case c.started <- "block":
		default:
		}
		<-ctx.Done()
		c.cancelled.Add(1)
		return nil, ctx.Err()
	}
	conc := func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		n := c.active.Add(1)
		defer c.active.Add(-1)
		for {
			m := c.maxActive.Load()
			if n <= m || c.maxActive.CompareAndSwap(m, n) {
				break
			}
		}
		ms, _ := strconv.Atoi(string(p))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
		}
		return json.RawMessage(strconv.FormatInt(n, 10)), nil
	}
	count := func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(strconv.FormatInt(c.calls.Add(1), 10)), nil
	}
	ctxval := func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		v, _ := ctx.Value(ctxKey{}).(string)
		return json.Marshal(v)
	}
	return kafig.NewRPCRouter().
		WithSync("echo", echo).WithAsync("aecho", echo).
		WithSync("fail", fail).WithAsync("afail", fail).
		WithSync("panic", pnc).WithAsync("apanic", pnc).
		WithSync("badjson", bad).WithAsync("abadjson", bad).
		WithSync("nil", nilh).WithAsync("anil", nilh).
		WithSync("size", size).WithAsync("asize", size).
		WithSync("len", plen).WithAsync("alen", plen).
		WithSync("ssleep", sleep).WithAsync("sleep", sleep).
		WithAsync("block", block).
		WithAsync("conc", conc).
		WithSync("count", count).
		WithSync("ctxval", ctxval).WithAsync("actxval", ctxval)
}

type ctxKey struct{}

// jsonString is a JSON string document of exactly n bytes (n >= 2).
func jsonString(n int) json.RawMessage {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	b[0], b[n-1] = '"', '"'
	return b
}

// ---- expectations ----

type checkFn = func(t tT, c *cctx, res json.RawMessage, err error)

// isValue: no error and the result equals want (as JSON).
func isValue(want string) checkFn {
	return func(t tT, _ *cctx, res json.RawMessage, err error) {
		t.Helper()
		if !assert.NoError(t, err) {
			return
		}
		if assert.True(t, json.Valid(res), "the result is JSON: %.200q", res) {
			assert.JSONEq(t, want, string(res))
		}
	}
}

// isJsError: a *JsError with this name whose message contains msg.
func isJsError(name, msg string) checkFn {
	return func(t tT, _ *cctx, res json.RawMessage, err error) {
		t.Helper()
		var je *kafig.JsError
		if !assert.ErrorAs(t, err, &je, "want a JsError %s: %s; result %.200s", name, msg, res) {
			return
		}
		assert.Nil(t, res)
		assert.Equal(t, name, je.Name)
		assert.Contains(t, je.Message, msg)
		assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), "message starts with kafig: %q", err.Error())
	}
}

// isRuntimeError: a *RuntimeError with this code.
func isRuntimeError(code kafig.ErrorCode) checkFn {
	return func(t tT, _ *cctx, res json.RawMessage, err error) {
		t.Helper()
		var re *kafig.RuntimeError
		if !assert.ErrorAs(t, err, &re, "want a RuntimeError %s; result %.200s", code, res) {
			return
		}
		assert.Nil(t, res)
		assert.Equal(t, code, re.Code, "error: %v", err)
		assert.ErrorIs(t, err, &kafig.RuntimeError{Code: code})
		assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), "message starts with kafig: %q", err.Error())
	}
}

// isErr: errors.Is(err, target).
func isErr(target error) checkFn {
	return func(t tT, _ *cctx, res json.RawMessage, err error) {
		t.Helper()
		assert.ErrorIs(t, err, target)
		assert.Nil(t, res)
	}
}

// isMemoryLimit: a memory_limit_exceeded RuntimeError (an eval that a
// memory limit ended).
var isMemoryLimit = isRuntimeError(kafig.CodeMemoryLimitExceeded)

// isStackOverflow: a stack_overflow RuntimeError.
var isStackOverflow = isRuntimeError(kafig.CodeStackOverflow)

// isDeadline: stopped by the eval's deadline: cpu_limit_exceeded with
// context.DeadlineExceeded as its cause.
func isDeadline(t tT, c *cctx, res json.RawMessage, err error) {
	t.Helper()
	isRuntimeError(kafig.CodeCPULimitExceeded)(t, c, res, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// isDeadlineOrDead: stopped by the deadline, gracefully or (inside a
// builtin that does not poll) from outside with the instance dead.
func isDeadlineOrDead(t tT, c *cctx, res json.RawMessage, err error) {
	t.Helper()
	isDeadline(t, c, res, err)
	if errors.Is(err, kafig.ErrInstanceDead) {
		t.Logf("stopped from outside; the instance is dead: %v", err)
	}
}

// isCPULimit: cpu_limit_exceeded not caused by a context.
func isCPULimit(t tT, c *cctx, res json.RawMessage, err error) {
	t.Helper()
	isRuntimeError(kafig.CodeCPULimitExceeded)(t, c, res, err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, context.Canceled)
}

// anyOf passes when one of the checks passes; otherwise it reports what
// each one said.
func anyOf(checks ...checkFn) checkFn {
	return func(t tT, c *cctx, res json.RawMessage, err error) {
		t.Helper()
		var all []string
		for _, ch := range checks {
			r := &recorder{}
			ch(r, c, res, err)
			if !r.failed {
				return
			}
			all = append(all, r.msgs...)
		}
		t.Errorf("no expectation met (result %.200s, error %v):\n%s", res, err, strings.Join(all, "\n"))
	}
}

// tT is the part of *testing.T a check uses (testify's assert needs
// Errorf only), so that anyOf can try a check without failing the test.
type tT interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// recorder is a tT that records failures.
type recorder struct {
	failed bool
	msgs   []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}
func (r *recorder) Logf(string, ...any) {}
