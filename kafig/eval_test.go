package kafig

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
)

func TestEvalStatuses(t *testing.T) {
	ctx := context.Background()
	in, _ := newInst(t)
	for name, tc := range map[string]struct {
		src  string
		want string
		code ErrorCode
		js   *JsError
	}{
		"ok":         {src: `ok {"a":1}`, want: `{"a":1}`},
		"empty ok":   {src: `ok`, want: `null`},
		"js error":   {src: `throw TypeError cannot read property 'foo' of null`, js: &JsError{Name: "TypeError", Message: "cannot read property 'foo' of null"}},
		"cpu":        {src: `status 2 interrupted`, code: CodeCPULimitExceeded},
		"memory":     {src: `status 3 out of memory`, code: CodeMemoryLimitExceeded},
		"stack":      {src: `status 4 stack overflow`, code: CodeStackOverflow},
		"runtime":    {src: `status 5 internal`, code: CodeRuntimeError},
		"bad input":  {src: `status 8 bad`, code: CodeRuntimeError},
		"pending":    {src: `status 6`, code: CodeRuntimeError},
		"unknown":    {src: `status 99 ???`, code: CodeRuntimeError},
		"garbage":    {src: `garbage`, code: CodeRuntimeError},
		"bad json":   {src: `badjson`, code: CodeRuntimeError},
		"no handler": {src: `status 7`},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := in.Eval(ctx, tc.src)
			switch {
			case tc.want != "":
				require.NoError(t, err)
				assert.JSONEq(t, tc.want, string(res))
			case tc.js != nil:
				var je *JsError
				require.ErrorAs(t, err, &je)
				assert.Equal(t, tc.js.Name, je.Name)
				assert.Equal(t, tc.js.Message, je.Message)
				require.NotNil(t, je.Stack)
				assert.Equal(t, "at <eval>", *je.Stack)
			case tc.code != "":
				var re *RuntimeError
				require.ErrorAs(t, err, &re, "%v", err)
				assert.Equal(t, tc.code, re.Code)
				assert.True(t, strings.HasPrefix(err.Error(), "kafig: "+string(tc.code)), err.Error())
			default:
				require.Error(t, err)
			}
			assert.NotErrorIs(t, err, ErrInstanceDead)
		})
	}
	// The instance is still usable after all of that.
	res, err := in.Eval(ctx, `ok 3`)
	require.NoError(t, err)
	assert.Equal(t, "3", string(res))
}

func TestEvalSeedErrorSwitch(t *testing.T) {
	in, _ := newInst(t)
	_, err := in.Eval(context.Background(), `throw TypeError cannot read property 'foo' of null`, WithAsync())
	switch e := err.(type) {
	case *JsError:
		assert.Equal(t, "TypeError", e.Name)
	default:
		t.Fatalf("want a *JsError, got %T", err)
	}
}

func TestEvalBadInput(t *testing.T) {
	ctx := context.Background()
	in, fi := newInst(t, WithWASMMemoryLimitPages(4))
	calls := fi.calls.Load()
	for name, src := range map[string]string{
		"empty":        "",
		"NUL":          "ok 1\x00",
		"invalid utf8": "ok \"\xff\"",
		"too large":    "len " + strings.Repeat("x", 4*abi.PageSize),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := in.Eval(ctx, src)
			require.ErrorIs(t, err, ErrInvalidSource)
			assert.True(t, strings.HasPrefix(err.Error(), "kafig: invalid source"), err.Error())
		})
	}
	assert.Equal(t, calls, fi.calls.Load(), "nothing reached the guest")
}

func TestEvalLargeSource(t *testing.T) {
	ctx := context.Background()
	in, fi := newInst(t)
	for _, n := range []int{abi.ExchangeDataSize - 1, abi.ExchangeDataSize, abi.ExchangeDataSize + 1, 300_000} {
		src := "len " + strings.Repeat("x", n-4)
		res, err := in.Eval(ctx, src)
		require.NoError(t, err, n)
		assert.Equal(t, itoa(uint64(n)), string(res))
	}
	assert.Equal(t, int32(3), fi.allocs.Load())
	assert.Equal(t, int32(3), fi.frees.Load())
}

func TestEvalLargeResult(t *testing.T) {
	in, _ := newInst(t)
	res, err := in.Eval(context.Background(), "big 200000")
	require.NoError(t, err)
	assert.Len(t, res, 200002)
}

func TestEvalSourceBeyondGuestMemory(t *testing.T) {
	// Allowed by the limit, refused by the guest's allocator.
	in, _ := newInst(t, WithWASMMemoryLimitPages(5))
	_, err := in.Eval(context.Background(), "len "+strings.Repeat("x", 4*abi.PageSize))
	var re *RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, CodeMemoryLimitExceeded, re.Code)
	_, err = in.Eval(context.Background(), "ok 1")
	require.NoError(t, err)
}

func TestTrapKillsInstance(t *testing.T) {
	ctx := context.Background()
	in, _ := newInst(t)
	_, err := in.Eval(ctx, "trap")
	var re *RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, CodeRuntimeError, re.Code)
	assert.ErrorIs(t, err, ErrInstanceDead)
	assert.ErrorIs(t, err, errTrap)

	_, err = in.Eval(ctx, "ok 1")
	assert.ErrorIs(t, err, ErrInstanceDead)
	_, err = in.DispatchEvent(ctx, "x", nil)
	assert.ErrorIs(t, err, ErrInstanceDead)
	_, err = in.GetExecutionStats(ctx)
	assert.ErrorIs(t, err, ErrInstanceDead)
	assert.ErrorIs(t, in.ResetExecutionStats(ctx), ErrInstanceDead)
	require.NoError(t, in.Close(ctx))
	_, err = in.Eval(ctx, "ok 1")
	assert.ErrorIs(t, err, ErrClosed)
}

func TestDispatchEvent(t *testing.T) {
	ctx := context.Background()
	in, _ := newInst(t)
	_, err := in.Eval(ctx, "on process params")
	require.NoError(t, err)
	res, err := in.DispatchEvent(ctx, "process", json.RawMessage(`{"url": "https://example.com"}`), WithAsync())
	require.NoError(t, err)
	assert.JSONEq(t, `{"url": "https://example.com"}`, string(res))

	res, err = in.DispatchEvent(ctx, "process", nil)
	require.NoError(t, err)
	assert.Equal(t, "null", string(res))

	big := json.RawMessage(`"` + strings.Repeat("y", 100_000) + `"`)
	res, err = in.DispatchEvent(ctx, "process", big)
	require.NoError(t, err)
	assert.Equal(t, string(big), string(res))

	_, err = in.DispatchEvent(ctx, "missing", nil)
	require.ErrorIs(t, err, ErrNoHandler)
	assert.Contains(t, err.Error(), "missing")

	for name, tc := range map[string]struct {
		name   string
		params json.RawMessage
	}{
		"empty name": {"", nil},
		"long name":  {strings.Repeat("n", abi.MaxMethodLen+1), nil},
		"NUL name":   {"a\x00", nil},
		"utf8 name":  {"\xff", nil},
		"bad params": {"process", json.RawMessage(`{`)},
		"two values": {"process", json.RawMessage(`1 2`)},
		"not json":   {"process", json.RawMessage(`undefined`)},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := in.DispatchEvent(ctx, tc.name, tc.params)
			assert.ErrorIs(t, err, ErrInvalidSource)
		})
	}
}

func TestCompile(t *testing.T) {
	ctx := context.Background()
	rt, fb := newRuntime(t)
	bc, err := rt.Compile(ctx, `ok 42`)
	require.NoError(t, err)
	in, err := rt.Instance(ctx)
	require.NoError(t, err)
	res, err := in.EvalCompiled(ctx, bc, WithAsync())
	require.NoError(t, err)
	assert.Equal(t, "42", string(res))

	// Syntax errors are JsErrors.
	_, err = rt.Compile(ctx, "syntax error")
	var je *JsError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, "SyntaxError", je.Name)

	// One compile instance, reused.
	_, err = rt.Compile(ctx, `ok 1`)
	require.NoError(t, err)
	assert.Len(t, fb.live(), 2)

	_, err = rt.Compile(ctx, "")
	assert.ErrorIs(t, err, ErrInvalidSource)

	// Another instance of the same runtime accepts it; a large one too.
	in2, err := rt.Instance(ctx)
	require.NoError(t, err)
	big, err := rt.Compile(ctx, "len "+strings.Repeat("z", 100_000))
	require.NoError(t, err)
	res, err = in2.EvalCompiled(ctx, big)
	require.NoError(t, err)
	assert.Equal(t, "100004", string(res))
}

func TestEvalCompiledRefusesForeignBytecode(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	other, _ := newRuntime(t)
	keyed1, _ := newRuntime(t, WithBytecodeKey([]byte("0123456789abcdef")))
	keyed2, _ := newRuntime(t, WithBytecodeKey([]byte("0123456789abcdef")))

	bc, err := rt.Compile(ctx, `ok 1`)
	require.NoError(t, err)
	in, err := other.Instance(ctx)
	require.NoError(t, err)
	_, err = in.EvalCompiled(ctx, bc)
	assert.ErrorIs(t, err, ErrBadBytecode)

	for name, b := range map[string][]byte{
		"nil":       nil,
		"empty":     {},
		"random":    []byte("BC1:ok 1 and then some more bytes to pass the length check ......"),
		"truncated": bc[:len(bc)-1],
	} {
		_, err = in.EvalCompiled(ctx, b)
		assert.ErrorIs(t, err, ErrBadBytecode, name)
	}

	// The same key shares bytecode.
	kb, err := keyed1.Compile(ctx, `ok 7`)
	require.NoError(t, err)
	kin, err := keyed2.Instance(ctx)
	require.NoError(t, err)
	res, err := kin.EvalCompiled(ctx, kb)
	require.NoError(t, err)
	assert.Equal(t, "7", string(res))
}

func TestStats(t *testing.T) {
	ctx := context.Background()
	in, _ := newInst(t, WithJSMemoryLimit(1<<20), WithInterruptCallback(func(ops, cpu uint64) bool { return ops >= 5*abi.InterruptInterval }))
	_, err := in.Eval(ctx, "loop")
	var re *RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, CodeCPULimitExceeded, re.Code)
	assert.NoError(t, re.Err, "the callback stopped it, not a context")
	_, err = in.Eval(ctx, "heap 4242")
	require.NoError(t, err)

	st, err := in.GetExecutionStats(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(5*abi.InterruptInterval), st.Opcodes)
	assert.NotZero(t, st.CPUTimeUs)
	assert.Equal(t, uint64(4242), st.HeapBytes)
	assert.Equal(t, uint64(1<<20), st.HeapLimitBytes)
	assert.Equal(t, uint64(fakePages*abi.PageSize), st.MemoryBytes)

	// Cumulative: the next loop stops at once (the callback sees 6 steps).
	_, err = in.Eval(ctx, "loop")
	require.ErrorAs(t, err, &re)
	st, _ = in.GetExecutionStats(ctx)
	assert.Equal(t, uint64(6*abi.InterruptInterval), st.Opcodes)

	require.NoError(t, in.ResetExecutionStats(ctx))
	st, _ = in.GetExecutionStats(ctx)
	assert.Zero(t, st.Opcodes)
	assert.Zero(t, st.CPUTimeUs)
}

func TestCPUTimeExcludesRPCHandlers(t *testing.T) {
	ctx := context.Background()
	router := NewRPCRouter().WithSync("slow", func(context.Context, json.RawMessage) (json.RawMessage, error) {
		time.Sleep(100 * time.Millisecond)
		return nil, nil
	})
	in, _ := newInst(t, WithRouter(router))
	_, err := in.Eval(ctx, "rpcsync slow 1")
	require.NoError(t, err)
	st, err := in.GetExecutionStats(ctx)
	require.NoError(t, err)
	assert.Less(t, st.CPUTimeUs, uint64(50_000))
}

func TestContextEndsEval(t *testing.T) {
	in, _ := newInst(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := in.Eval(ctx, "loop")
	assert.Less(t, time.Since(start), time.Second)
	var re *RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, CodeCPULimitExceeded, re.Code)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrInstanceDead, "stopped by a poll")

	// Usable afterwards; a done context fails at once.
	_, err = in.Eval(context.Background(), "ok 1")
	require.NoError(t, err)
	_, err = in.Eval(ctx, "ok 1")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, &RuntimeError{Code: CodeCPULimitExceeded})
}

func TestRejectionHandler(t *testing.T) {
	ctx := context.Background()
	var got []*JsError
	stop := false
	in, _ := newInst(t, WithPromiseRejectionHandler(func(e *JsError) bool {
		got = append(got, e)
		return stop
	}))
	_, err := in.Eval(ctx, `reject {"name":"TypeError","message":"nope"}`, WithAsync())
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "TypeError", got[0].Name)
	assert.Equal(t, "nope", got[0].Message)
	assert.Nil(t, got[0].Stack)

	stop = true
	_, err = in.Eval(ctx, `reject not json`, WithAsync())
	assert.ErrorIs(t, err, &RuntimeError{Code: CodeCPULimitExceeded})
	require.Len(t, got, 2)
	assert.Equal(t, "Error", got[1].Name)
	assert.Equal(t, "not json", got[1].Message)

	// Without a handler rejections are ignored.
	in2, _ := newInst(t)
	_, err = in2.Eval(ctx, `reject {}`)
	require.NoError(t, err)
}

func TestNilSafety(t *testing.T) {
	ctx := context.Background()
	var rt *Runtime
	assert.NoError(t, rt.Close(ctx))
	_, err := rt.Instance(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = rt.Compile(ctx, "ok 1")
	assert.ErrorIs(t, err, ErrClosed)
	var in *Instance
	assert.NoError(t, in.Close(ctx))
	_, err = in.Eval(ctx, "ok 1")
	assert.ErrorIs(t, err, ErrClosed)
	_, err = in.EvalCompiled(ctx, nil)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = in.DispatchEvent(ctx, "x", nil)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = in.GetExecutionStats(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, in.ResetExecutionStats(ctx), ErrClosed)

	// A nil context is treated as Background.
	in2, _ := newInst(t)
	//lint:ignore SA1012 testing nil context handling
	res, err := in2.Eval(nil, "ok 1") //nolint:staticcheck
	require.NoError(t, err)
	assert.Equal(t, "1", string(res))
}

// TestSourceNameReachesTheExchangeArea: the host writes the name (and its
// length) before kafig_eval, and length 0 for an unnamed eval or the
// default name.
func TestSourceNameReachesTheExchangeArea(t *testing.T) {
	ctx := context.Background()
	in, fi := newInst(t)
	nameLen := func() uint32 { return binary.LittleEndian.Uint32(fi.mem.b[fakeX+abi.ExchSourceNameLen:]) }
	_, err := in.Eval(ctx, `ok 1`, WithSourceName("a/b.js"))
	require.NoError(t, err)
	assert.EqualValues(t, len("a/b.js"), nameLen())
	assert.Equal(t, "a/b.js", string(fi.mem.b[fakeX+abi.ExchSourceName:][:len("a/b.js")]))
	_, err = in.Eval(ctx, `ok 1`)
	require.NoError(t, err)
	assert.Zero(t, nameLen(), "an unnamed eval writes length 0")
	_, err = in.Eval(ctx, `ok 1`, WithSourceName(DefaultSourceName))
	require.NoError(t, err)
	assert.Zero(t, nameLen(), "the default name is length 0")

	for _, bad := range []string{"", "a\x00", "\xfe", strings.Repeat("x", MaxSourceNameLen+1)} {
		_, err = in.Eval(ctx, `ok 1`, WithSourceName(bad))
		assert.ErrorIs(t, err, ErrInvalidOption, "%q", bad)
	}
	assert.Empty(t, checkSourceName(strings.Repeat("é", MaxSourceNameLen/2)))
}
