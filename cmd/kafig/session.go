package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	wasmtimebackend "github.com/kafig-dev/kafig/backend-wasmtime"
	wazerobackend "github.com/kafig-dev/kafig/backend-wazero"
	"github.com/kafig-dev/kafig/kafig"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// session is one runtime and its current instance, with the CLI's limits,
// router and prelude. Its methods are called from one goroutine.
type session struct {
	opts    *options
	rt      *kafig.Runtime
	inst    *kafig.Instance
	router  *kafig.RPCRouter
	prelude *source // the -prelude file, nil without one

	tripped   atomic.Value // string: which limit stopped the last evaluation
	armed     atomic.Bool  // the limits apply: a user evaluation is running
	keepAlive bool         // replace an instance that died (REPL, JSON mode)

	last  kafig.ExecutionStats // counters of the last evaluation
	total kafig.ExecutionStats // sums over the session (Opcodes, CPUTimeUs)
}

// newBackend maps -backend to a backend.
func newBackend(o *options) (backend.Backend, error) {
	switch o.backend {
	case "wasmtime":
		if !cgoEnabled {
			return nil, usagef("kafig: -backend wasmtime: this kafig binary was built without cgo; rebuild it with CGO_ENABLED=1 (and a C compiler), or use -backend wazero")
		}
		var opts []wasmtimebackend.Option
		if dir := cacheSubdir(o.cacheDir, "wasmtime"); dir != "" {
			opts = append(opts, wasmtimebackend.WithCacheDir(dir))
		}
		return wasmtimebackend.New(opts...), nil
	default:
		var opts []wazerobackend.Option
		if dir := cacheSubdir(o.cacheDir, "wazero"); dir != "" {
			opts = append(opts, wazerobackend.WithCacheDir(dir))
		}
		return wazerobackend.New(opts...), nil
	}
}

// cacheSubdir returns dir/name, created with mode 0700, or "" when there is
// no cache directory or it cannot be created (then nothing is cached).
func cacheSubdir(dir, name string) string {
	if dir == "" {
		return ""
	}
	sub := filepath.Join(dir, name)
	if err := os.MkdirAll(sub, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "kafig: not caching the compiled guest: %v\n", err)
		return ""
	}
	return sub
}

// newSession creates the runtime and the first instance. prelude is the
// loaded -prelude file (nil without one).
func newSession(ctx context.Context, o *options, router *kafig.RPCRouter, prelude *source) (*session, error) {
	b, err := newBackend(o)
	if err != nil {
		return nil, err
	}
	rt, err := kafig.New(ctx, b, kafig.WithPrelude(cliPrelude))
	if err != nil {
		return nil, fmt.Errorf("kafig: cannot start the %s runtime: %w", o.backend, err)
	}
	s := &session{opts: o, rt: rt, router: router, prelude: prelude}
	if err := s.reset(ctx); err != nil {
		_ = rt.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

// reset replaces the instance with a new one and runs the prelude file in
// it. The session's totals start again.
func (s *session) reset(ctx context.Context) error {
	if s.inst != nil {
		_ = s.inst.Close(context.WithoutCancel(ctx))
		s.inst = nil
	}
	o := s.opts
	opts := []kafig.InstanceOption{kafig.WithRouter(s.router)}
	if o.maxCPUMs > 0 || o.maxOpcodes > 0 {
		maxCPUUs, maxOps := o.maxCPUMs*1000, o.maxOpcodes
		opts = append(opts, kafig.WithInterruptCallback(func(opcodes, cpuTimeUs uint64) bool {
			switch {
			case !s.armed.Load(): // the CLI's own prelude, at instance creation
			case maxCPUUs > 0 && cpuTimeUs > maxCPUUs:
				s.tripped.Store(fmt.Sprintf("the CPU time limit (-max-cpu-ms %d) was exceeded", o.maxCPUMs))
				return true
			case maxOps > 0 && opcodes > maxOps:
				s.tripped.Store(fmt.Sprintf("the opcode limit (-max-opcodes %d) was exceeded", o.maxOpcodes))
				return true
			}
			return false
		}))
	}
	if o.maxMemory > 0 {
		// 4 GiB exactly is what kafig.MaxJSMemoryLimit allows, but the
		// 32-bit guest truncates it to 0 (kafig_set_limits casts the limit
		// to size_t) and no instance can start; one byte less is the same
		// limit in practice.
		opts = append(opts, kafig.WithJSMemoryLimit(min(o.maxMemory, kafig.MaxJSMemoryLimit-1)))
	}
	inst, err := s.rt.Instance(ctx, opts...)
	if err != nil {
		return fmt.Errorf("kafig: cannot create an instance: %w", err)
	}
	s.inst = inst
	s.last, s.total = kafig.ExecutionStats{}, kafig.ExecutionStats{}
	if s.prelude != nil {
		// The -prelude file is the user's code: the limits apply to it.
		s.armed.Store(true)
		_, err := s.inst.Eval(ctx, s.prelude.code, s.prelude.evalOpts()...)
		s.armed.Store(false)
		if err != nil {
			return &preludeError{name: s.prelude.name, err: s.prelude.explain(err)}
		}
		_ = s.inst.ResetExecutionStats(ctx)
	}
	return nil
}

// preludeError is a failure of the -prelude file.
type preludeError struct {
	name string
	err  error
}

func (e *preludeError) Error() string {
	return "kafig: prelude " + e.name + ": " + strings.TrimPrefix(e.err.Error(), "kafig: ")
}
func (e *preludeError) Unwrap() error { return e.err }

// close frees everything.
func (s *session) close() {
	_ = s.rt.Close(context.Background())
}

// eval evaluates src in the instance, with the limits counted from zero.
// more adds to the session's options (a source name).
func (s *session) eval(ctx context.Context, src string, more ...kafig.EvalOption) (json.RawMessage, error) {
	return s.run(ctx, func(ctx context.Context) (json.RawMessage, error) {
		return s.inst.Eval(ctx, src, append(s.evalOpts(), more...)...)
	})
}

// dispatch calls the handler of event name.
func (s *session) dispatch(ctx context.Context, name string, params json.RawMessage) (json.RawMessage, error) {
	return s.run(ctx, func(ctx context.Context) (json.RawMessage, error) {
		return s.inst.DispatchEvent(ctx, name, params, s.evalOpts()...)
	})
}

func (s *session) evalOpts() []kafig.EvalOption {
	if s.opts.async {
		return []kafig.EvalOption{kafig.WithAsync()}
	}
	return nil
}

// run runs one evaluation: the counters start at zero so that the limits
// apply to each evaluation, and are added to the session's totals after.
// With keepAlive a dead instance is replaced (the error says so).
func (s *session) run(ctx context.Context, f func(context.Context) (json.RawMessage, error)) (json.RawMessage, error) {
	if err := s.ensure(ctx); err != nil {
		return nil, err
	}
	s.tripped.Store("")
	if err := s.inst.ResetExecutionStats(ctx); err != nil && !errors.Is(err, kafig.ErrInstanceDead) {
		return nil, err
	}
	s.armed.Store(true)
	res, err := f(ctx)
	s.armed.Store(false)
	if st, serr := s.inst.GetExecutionStats(context.WithoutCancel(ctx)); serr == nil {
		s.last = st
		s.total.Opcodes += st.Opcodes
		s.total.CPUTimeUs += st.CPUTimeUs
	}
	if err != nil {
		var re *kafig.RuntimeError
		if errors.As(err, &re) {
			switch re.Code {
			case kafig.CodeCPULimitExceeded:
				if why, _ := s.tripped.Load().(string); why != "" && !errors.Is(err, context.Canceled) {
					err = &limitError{code: re.Code, why: why, err: err}
				}
			case kafig.CodeMemoryLimitExceeded:
				why := "the JavaScript heap reached its limit of 32 MiB (the default; -max-memory raises it)"
				if s.opts.maxMemory > 0 {
					why = fmt.Sprintf("the JavaScript heap reached its limit (-max-memory %s)", formatBytes(s.opts.maxMemory))
				}
				err = &limitError{code: re.Code, why: why, err: err}
			}
		}
		if s.keepAlive && errors.Is(err, kafig.ErrInstanceDead) {
			err = &resetError{err: err, resetErr: s.reset(context.WithoutCancel(ctx))}
		}
	}
	return res, err
}

// limitError says which of the CLI's limits stopped an evaluation.
type limitError struct {
	code kafig.ErrorCode
	why  string
	err  error
}

func (e *limitError) Error() string { return "kafig: " + string(e.code) + ": " + e.why }
func (e *limitError) Unwrap() error { return e.err }

// resetError is an error that the instance did not survive; it was
// replaced, unless resetErr says why not.
type resetError struct {
	err      error
	resetErr error
}

func (e *resetError) Error() string {
	return e.err.Error() + " " + e.note()
}

func (e *resetError) note() string {
	if e.resetErr != nil {
		return "(the instance did not survive, and a new one could not start: " + strings.TrimPrefix(e.resetErr.Error(), "kafig: ") + ")"
	}
	return "(the instance did not survive; a new one replaces it)"
}

// ensure makes sure there is an instance: after a failed reset the next
// evaluation tries again.
func (s *session) ensure(ctx context.Context) error {
	if s.inst != nil {
		return nil
	}
	return s.reset(ctx)
}

// stats returns the counters of the instance.
func (s *session) stats(ctx context.Context) (kafig.ExecutionStats, error) {
	if err := s.ensure(ctx); err != nil {
		return kafig.ExecutionStats{}, err
	}
	return s.inst.GetExecutionStats(ctx)
}
func (e *resetError) Unwrap() error { return e.err }

// errorCode classifies an evaluation error for JSON mode and exit statuses.
func errorCode(err error) string {
	var je *kafig.JsError
	var re *kafig.RuntimeError
	var be *bundleError
	switch {
	case errors.As(err, &je), errors.As(err, &be):
		return "js_error"
	case errors.As(err, &re):
		return string(re.Code)
	case errors.Is(err, kafig.ErrNoHandler):
		return "no_handler"
	case errors.Is(err, kafig.ErrInvalidSource):
		return "bad_request"
	}
	return "runtime_error"
}

// exitStatus is the exit status for an evaluation error.
func exitStatus(err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	if errors.Is(err, context.Canceled) {
		return exitInterrupt
	}
	if errors.Is(err, kafig.ErrInvalidSource) { // a script kafig refuses to take
		return exitUsage
	}
	switch errorCode(err) {
	case string(kafig.CodeCPULimitExceeded), string(kafig.CodeMemoryLimitExceeded), string(kafig.CodeStackOverflow):
		return exitLimit
	}
	return exitJSError
}
