package kafig

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

func TestNewNilBackend(t *testing.T) {
	rt, err := New(context.Background(), nil)
	assert.Nil(t, rt)
	assert.ErrorIs(t, err, ErrNoBackend)
	assert.True(t, strings.HasPrefix(err.Error(), "kafig: "))
}

func TestNewBadGuest(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		wasm string
		fb   func(*fakeBackend)
	}{
		"empty":          {wasm: ""},
		"garbage":        {wasm: "hello world, not wasm"},
		"no memory":      {wasm: "\x00asm\x01\x00\x00\x00"},
		"compile fails":  {wasm: fakeWASM, fb: func(b *fakeBackend) { b.compileErr = backend.ErrBadModule }},
		"abi version":    {wasm: fakeWASM, fb: func(b *fakeBackend) { b.abiVersion = abi.Version + 1 }},
		"exchange size":  {wasm: fakeWASM, fb: func(b *fakeBackend) { b.dataCap = 4096 }},
		"limits refused": {wasm: fakeWASM, fb: func(b *fakeBackend) { b.rejectLimits = true }},
	} {
		t.Run(name, func(t *testing.T) {
			fb := newFake()
			if tc.fb != nil {
				tc.fb(fb)
			}
			rt, err := New(ctx, fb, withWASM(tc.wasm))
			require.Error(t, err)
			assert.Nil(t, rt)
			if name == "limits refused" {
				assert.ErrorIs(t, err, ErrInvalidOption)
			} else {
				assert.ErrorIs(t, err, ErrBadGuest)
			}
			assert.True(t, strings.HasPrefix(err.Error(), "kafig: "), err.Error())
			assert.Zero(t, fb.modules.Load(), "module closed")
			assert.Empty(t, fb.live(), "instances closed")
		})
	}
}

func TestRuntimeOptionValidation(t *testing.T) {
	ctx := context.Background()
	for name, opts := range map[string][]Option{
		"zero pages":        {WithWASMMemoryLimitPages(0)},
		"below initial":     {WithWASMMemoryLimitPages(1)},
		"beyond 4 GiB":      {WithWASMMemoryLimitPages(65537)},
		"short key":         {WithBytecodeKey([]byte("short"))},
		"empty prelude":     {WithPrelude("")},
		"NUL in prelude":    {WithPrelude("a\x00b")},
		"several problems":  {WithBytecodeKey(nil), WithWASMMemoryLimitPages(0)},
		"bad UTF-8 prelude": {WithPrelude("\xff")},
	} {
		t.Run(name, func(t *testing.T) {
			fb := newFake()
			rt, err := New(ctx, fb, append([]Option{withWASM(fakeWASM)}, opts...)...)
			assert.Nil(t, rt)
			assert.ErrorIs(t, err, ErrInvalidOption)
			assert.True(t, strings.HasPrefix(err.Error(), "kafig: invalid option: "), err.Error())
			if name == "several problems" {
				assert.Contains(t, err.Error(), "WithBytecodeKey")
				assert.Contains(t, err.Error(), "WithWASMMemoryLimitPages")
			}
		})
	}
	// Valid ones, including nil options and a nil logger.
	rt, err := New(ctx, newFake(), withWASM(fakeWASM), nil, WithLogger(nil),
		WithWASMMemoryLimitPages(fakePages), WithBytecodeKey(make([]byte, 16)))
	require.NoError(t, err)
	require.NoError(t, rt.Close(ctx))
}

func TestInstanceOptionValidation(t *testing.T) {
	ctx := context.Background()
	rt, _ := newRuntime(t)
	rh := RPCHandler(func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil })
	for name, tc := range map[string]struct {
		opts []InstanceOption
		want string
	}{
		"nil router":         {[]InstanceOption{WithRouter(nil)}, "WithRouter(nil)"},
		"empty method":       {[]InstanceOption{WithRouter(NewRPCRouter().WithSync("", rh))}, "empty name"},
		"long method":        {[]InstanceOption{WithRouter(NewRPCRouter().WithSync(strings.Repeat("m", abi.MaxMethodLen+1), rh))}, "longer than"},
		"duplicate":          {[]InstanceOption{WithRouter(NewRPCRouter().WithSync("a", rh).WithAsync("a", rh))}, "registered twice"},
		"nil handler":        {[]InstanceOption{WithRouter(NewRPCRouter().WithSync("a", nil))}, "nil handler"},
		"nil fallback":       {[]InstanceOption{WithRouter(NewRPCRouter().WithFallback(nil))}, "WithFallback(nil)"},
		"zero JS memory":     {[]InstanceOption{WithJSMemoryLimit(0)}, "WithJSMemoryLimit(0)"},
		"tiny JS memory":     {[]InstanceOption{WithJSMemoryLimit(1000)}, "WithJSMemoryLimit(1000)"},
		"huge JS memory":     {[]InstanceOption{WithJSMemoryLimit(1 << 40)}, "WithJSMemoryLimit"},
		"zero pages":         {[]InstanceOption{WithWASMMemoryLimitPages(0)}, "WithWASMMemoryLimitPages(0)"},
		"below initial":      {[]InstanceOption{WithWASMMemoryLimitPages(1)}, "starts with 2 pages"},
		"negative conc":      {[]InstanceOption{WithMaxConcurrentRPCs(-1)}, "WithMaxConcurrentRPCs(-1)"},
		"huge conc":          {[]InstanceOption{WithMaxConcurrentRPCs(1 << 30)}, "WithMaxConcurrentRPCs"},
		"negative pending":   {[]InstanceOption{WithMaxPendingRPCs(-5)}, "WithMaxPendingRPCs(-5)"},
		"huge pending":       {[]InstanceOption{WithMaxPendingRPCs(1 << 30)}, "WithMaxPendingRPCs"},
		"several in one err": {[]InstanceOption{WithJSMemoryLimit(0), WithMaxPendingRPCs(-1)}, "; "},
	} {
		t.Run(name, func(t *testing.T) {
			in, err := rt.Instance(ctx, tc.opts...)
			assert.Nil(t, in)
			require.ErrorIs(t, err, ErrInvalidOption)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	in, err := rt.Instance(ctx, nil, WithJSMemoryLimit(MinJSMemoryLimit), WithWASMMemoryLimitPages(100),
		WithMaxConcurrentRPCs(1), WithMaxPendingRPCs(1), WithRouter(NewRPCRouter()),
		WithInterruptCallback(nil), WithPromiseRejectionHandler(nil))
	require.NoError(t, err)
	require.NoError(t, in.Close(ctx))
}

func TestLimitsReachGuest(t *testing.T) {
	ctx := context.Background()
	fb := newFake()
	rt, err := New(ctx, fb, withWASM(fakeWASM), WithWASMMemoryLimitPages(300))
	require.NoError(t, err)
	defer rt.Close(ctx)

	_, err = rt.Instance(ctx)
	require.NoError(t, err)
	fi := fb.last()
	assert.Equal(t, uint32(300), fi.cfg.MaxMemoryPages, "runtime default")
	assert.Equal(t, [2]uint64{DefaultJSMemoryLimit, abi.DefaultJSStack}, fi.limits)
	for i, f := range fi.cfg.Imports {
		assert.NotNil(t, f, "import %d", i)
	}

	_, err = rt.Instance(ctx, WithWASMMemoryLimitPages(20), WithJSMemoryLimit(1<<20))
	require.NoError(t, err)
	fi = fb.last()
	assert.Equal(t, uint32(20), fi.cfg.MaxMemoryPages, "instance override")
	assert.Equal(t, uint64(1<<20), fi.limits[0])
}

type advisedBackend struct{ *fakeBackend }

func (advisedBackend) JSStackLimit() uint32 { return 100_000 }

func TestStackAdvisor(t *testing.T) {
	ctx := context.Background()
	fb := newFake()
	rt, err := New(ctx, advisedBackend{fb}, withWASM(fakeWASM))
	require.NoError(t, err)
	defer rt.Close(ctx)
	_, err = rt.Instance(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(100_000), fb.last().limits[1])
}

func TestPrelude(t *testing.T) {
	ctx := context.Background()
	t.Run("ok", func(t *testing.T) {
		rt, fb := newRuntime(t, WithPrelude("on greet ok \"hi\""))
		in, err := rt.Instance(ctx)
		require.NoError(t, err)
		res, err := in.DispatchEvent(ctx, "greet", nil)
		require.NoError(t, err)
		assert.JSONEq(t, `"hi"`, string(res))
		assert.Len(t, fb.live(), 1, "the probe instance is closed")
	})
	t.Run("js error fails New", func(t *testing.T) {
		fb := newFake()
		rt, err := New(ctx, fb, withWASM(fakeWASM), WithPrelude("throw SyntaxError bad prelude"))
		assert.Nil(t, rt)
		var je *JsError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, "SyntaxError", je.Name)
		assert.Empty(t, fb.live())
		assert.Zero(t, fb.modules.Load())
	})
	t.Run("stats reset after prelude", func(t *testing.T) {
		rt, _ := newRuntime(t, WithPrelude("sleep 5"))
		in, err := rt.Instance(ctx)
		require.NoError(t, err)
		st, err := in.GetExecutionStats(ctx)
		require.NoError(t, err)
		assert.Zero(t, st.CPUTimeUs)
	})
}

func TestErrorsAsIs(t *testing.T) {
	re := &RuntimeError{Code: CodeCPULimitExceeded, Message: "x", Err: join(ErrInstanceDead, context.DeadlineExceeded)}
	var err error = re
	assert.ErrorIs(t, err, &RuntimeError{Code: CodeCPULimitExceeded})
	assert.NotErrorIs(t, err, &RuntimeError{Code: CodeMemoryLimitExceeded})
	assert.ErrorIs(t, err, ErrInstanceDead)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var got *RuntimeError
	require.ErrorAs(t, err, &got)
	assert.Equal(t, "kafig: cpu_limit_exceeded: x (instance is dead; context deadline exceeded)", err.Error())

	stack := "at f"
	je := &JsError{Name: "TypeError", Message: "boom", Stack: &stack}
	assert.Equal(t, "kafig: TypeError: boom", je.Error())
	assert.Equal(t, "kafig: Error", (&JsError{}).Error())

	for _, s := range []ErrorString{ErrNoBackend, ErrInvalidOption, ErrClosed, ErrInstanceDead, ErrNoHandler, ErrBadBytecode, ErrInvalidSource, ErrBadGuest} {
		assert.True(t, strings.HasPrefix(s.Error(), "kafig: "))
		assert.ErrorIs(t, wrap(s, "detail"), s)
		assert.True(t, errors.Is(fmtWrap(s), s))
	}
}

func fmtWrap(err error) error { return join(errors.New("other"), err) }
