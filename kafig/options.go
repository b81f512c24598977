package kafig

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/guest"
	"github.com/kafig-dev/kafig/kafig/internal/seal"
)

// Option configures a Runtime (see New).
//
// # Notes
//   - Options never fail on their own: New validates them all and returns
//     one error wrapping ErrInvalidOption that lists every problem.
//   - Options are values: one option can be reused for many runtimes.
type Option interface {
	applyRuntime(*runtimeConfig)
}

// InstanceOption configures an Instance (see Runtime.Instance).
//
// # Notes
//   - Options never fail on their own: Runtime.Instance validates them all
//     and returns one error wrapping ErrInvalidOption.
type InstanceOption interface {
	applyInstance(*instanceConfig)
}

// SharedOption is an option that configures a Runtime (the default for its
// instances) as well as a single Instance.
type SharedOption interface {
	Option
	InstanceOption
}

// EvalOption configures one Instance.Eval, Instance.EvalCompiled or
// Instance.DispatchEvent call.
type EvalOption interface {
	applyEval(evalConfig) evalConfig // by value: no allocation per call
}

// CompileOption configures one Runtime.Compile call.
type CompileOption interface {
	applyCompile(compileConfig) compileConfig
}

// SourceOption is an option about the source of a script: it is both an
// EvalOption and a CompileOption, so the same value can be given to
// Instance.Eval and to Runtime.Compile. WithSourceName is one.
type SourceOption interface {
	EvalOption
	CompileOption
}

// Defaults and bounds of the options.
const (
	// DefaultJSMemoryLimit is the QuickJS heap limit of an instance without
	// WithJSMemoryLimit: 32 MiB.
	DefaultJSMemoryLimit = 32 << 20
	// MinJSMemoryLimit and MaxJSMemoryLimit bound WithJSMemoryLimit. Below
	// 64 KiB QuickJS cannot even hold its own state; 4 GiB is all a 32-bit
	// guest can address.
	MinJSMemoryLimit = 64 << 10
	MaxJSMemoryLimit = 4 << 30
	// MaxWASMMemoryPages is the most a 32-bit guest can address: 4 GiB.
	MaxWASMMemoryPages = 65536
	// DefaultMaxConcurrentRPCs is the number of host.rpc handlers that run at
	// once per instance without WithMaxConcurrentRPCs.
	DefaultMaxConcurrentRPCs = 16
	// MaxConcurrentRPCsLimit bounds WithMaxConcurrentRPCs.
	MaxConcurrentRPCsLimit = 4096
	// DefaultMaxPendingRPCs is the number of host.rpc calls an async
	// operation may have outstanding without WithMaxPendingRPCs.
	DefaultMaxPendingRPCs = 1024
	// MaxPendingRPCsLimit bounds WithMaxPendingRPCs.
	MaxPendingRPCsLimit = 1 << 20
	// DefaultSourceName is the name of a script evaluated or compiled
	// without WithSourceName, as stacks show it: "at f (<eval>:3:5)".
	DefaultSourceName = abi.DefaultSourceName
	// MaxSourceNameLen is the longest name WithSourceName takes, in bytes.
	MaxSourceNameLen = abi.MaxSourceNameLen
)

// ---- runtime options ----

type runtimeConfig struct {
	prelude    string
	hasPrelude bool
	logger     *slog.Logger
	pages      uint32
	hasPages   bool
	key        []byte
	hasKey     bool
	wasm       string // the guest module; tests replace it
}

func defaultRuntimeConfig() runtimeConfig {
	return runtimeConfig{wasm: guest.WASM}
}

type runtimeOptionFunc func(*runtimeConfig)

func (f runtimeOptionFunc) applyRuntime(c *runtimeConfig) { f(c) }

// WithPrelude sets JavaScript that every new instance evaluates before any
// user code.
//
// # Notes
//   - New evaluates it once in a throwaway instance without a router, so
//     that a SyntaxError or an exception in it fails New with the *JsError.
//     Once that prelude has called host.rpcSync, which only the instance's
//     router can answer, its failure no longer fails New: the prelude is
//     then judged where it runs for real, and Runtime.Instance returns its
//     error.
//   - It runs synchronously (no top-level await; host.rpcSync works, with
//     the instance's router) and its completion value is discarded. The
//     promise jobs it queues run right after it, before the instance is
//     returned (an exception in one is dropped, as in an async Eval); a
//     host.rpc it starts is dropped unanswered. A prelude, or a job of it,
//     that never ends holds New and Runtime.Instance until their context
//     ends.
//   - Its CPU time and opcodes are not counted in the instance's stats.
//   - Default: none.
func WithPrelude(src string) Option {
	return runtimeOptionFunc(func(c *runtimeConfig) { c.prelude, c.hasPrelude = src, true })
}

// WithLogger sets the logger for debug-level events (instances created,
// closed and stopped, RPC failures).
//
// # Notes
//   - Default (and nil): logs are discarded.
func WithLogger(l *slog.Logger) Option {
	return runtimeOptionFunc(func(c *runtimeConfig) { c.logger = l })
}

// WithBytecodeKey sets the key that seals the bytecode Compile returns.
//
// # Notes
//   - Bytecode is accepted by EvalCompiled of any runtime with the same key
//     and the same guest build. Use it to share bytecode between runtimes or
//     processes; keep the key secret, because sealed bytecode is trusted by
//     the guest's bytecode reader.
//   - The key must be at least 16 bytes; it is copied.
//   - Default: a random key per Runtime.
func WithBytecodeKey(key []byte) Option {
	k := append([]byte(nil), key...)
	return runtimeOptionFunc(func(c *runtimeConfig) { c.key, c.hasKey = k, true })
}

// WithWASMMemoryLimitPages caps an instance's linear memory, in 64 KiB
// pages: the QuickJS heap, the guest's allocator overhead and its stack.
//
// # Notes
//   - As a Runtime option it is the default for the runtime's instances; as
//     an InstanceOption it overrides that default for one instance.
//   - It must be at least the guest's initial memory and at most 65536
//     pages (4 GiB); a source larger than the limit is refused with
//     ErrInvalidSource.
//   - Running out of it ends the operation with CodeMemoryLimitExceeded.
//   - Default: the guest's own maximum (4 GiB).
func WithWASMMemoryLimitPages(pages uint32) SharedOption {
	return memoryPagesOption(pages)
}

type memoryPagesOption uint32

func (o memoryPagesOption) applyRuntime(c *runtimeConfig) {
	c.pages, c.hasPages = uint32(o), true
}

func (o memoryPagesOption) applyInstance(c *instanceConfig) {
	c.pages, c.hasPages = uint32(o), true
}

// validate checks c against the guest's initial memory and fills defaults.
func (c *runtimeConfig) validate(initialPages uint32) error {
	var problems []string
	if c.hasPages {
		if p := checkPages(c.pages, initialPages); p != "" {
			problems = append(problems, p)
		}
	}
	if c.hasPrelude {
		if p := checkSource(c.prelude); p != "" {
			problems = append(problems, "WithPrelude: "+p)
		}
	}
	if c.hasKey && len(c.key) < seal.MinKeyLen {
		problems = append(problems, fmt.Sprintf("WithBytecodeKey: the key has %d bytes, fewer than %d", len(c.key), seal.MinKeyLen))
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if !c.hasKey {
		c.key = make([]byte, 32)
		_, _ = rand.Read(c.key) // never fails (crypto/rand)
	}
	return optionError(problems)
}

func checkPages(pages, initialPages uint32) string {
	switch {
	case pages == 0:
		return "WithWASMMemoryLimitPages(0): must be at least the guest's initial memory"
	case pages > MaxWASMMemoryPages:
		return fmt.Sprintf("WithWASMMemoryLimitPages(%d): more than %d pages (4 GiB)", pages, MaxWASMMemoryPages)
	case pages < initialPages:
		return fmt.Sprintf("WithWASMMemoryLimitPages(%d): the guest starts with %d pages", pages, initialPages)
	}
	return ""
}

func optionError(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return wrap(ErrInvalidOption, strings.Join(problems, "; "))
}

// ---- instance options ----

type instanceConfig struct {
	router          *RPCRouter
	hasRouter       bool
	interrupt       func(opcodes, cpuTimeUs uint64) bool
	rejection       func(*JsError) bool
	jsMemory        uint64
	hasJSMemory     bool
	pages           uint32
	hasPages        bool
	maxConcurrent   int
	maxPending      int
	internalCompile bool // the runtime's compile instance: no prelude
	probe           bool // New's prelude check: no router, RPC failures forgiven
}

type instanceOptionFunc func(*instanceConfig)

func (f instanceOptionFunc) applyInstance(c *instanceConfig) { f(c) }

// WithRouter sets the RPC handlers that host.rpc and host.rpcSync reach.
//
// # Notes
//   - One router can serve many instances; it must not be changed after it
//     is given to an instance.
//   - A nil router is invalid. Without WithRouter every RPC fails as an
//     unknown method.
func WithRouter(r *RPCRouter) InstanceOption {
	return instanceOptionFunc(func(c *instanceConfig) { c.router, c.hasRouter = r, true })
}

// WithInterruptCallback sets the CPU limit policy: fn is asked about every
// abi.InterruptInterval QuickJS poll points whether to stop, with the
// instance's opcode estimate and CPU time in microseconds.
//
// # Notes
//   - Both figures are cumulative over the instance's evals and dispatches
//     until ResetExecutionStats. CPU time is wall time inside the guest minus
//     time in RPC handlers (waiting for host.rpc replies is not counted).
//   - Returning true ends the operation with CodeCPULimitExceeded; the
//     instance stays usable.
//   - Inside a builtin that does not poll, the runtime's monitor asks fn
//     every ~50 ms once the guest has not polled for 400 ms; if fn says stop
//     the call is ended from outside and the instance is dead
//     (ErrInstanceDead).
//   - fn is never called concurrently with itself for one instance, but may
//     be called from the monitor goroutine. It must be quick. A panic in it
//     counts as "stop".
//   - Default: none (only the context bounds an eval).
func WithInterruptCallback(fn func(opcodes, cpuTimeUs uint64) bool) InstanceOption {
	return instanceOptionFunc(func(c *instanceConfig) { c.interrupt = fn })
}

// WithPromiseRejectionHandler sets the handler of unhandled promise
// rejections: promises rejected with no handler attached, other than the
// operation's own result (which ends the operation as its error).
//
// A promise is often rejected a moment before its handler is attached
// (Promise.reject(e).catch(f), an async function's promise that the caller
// awaits or catches), so the handler is not called the instant the
// rejection happens; reporting those would be false alarms. It is called:
//   - at a checkpoint: after the synchronous part of a sync operation, and
//     in async mode each time every queued promise job has run (when a
//     browser reports them);
//   - while the script keeps running, for a rejection still unhandled at
//     two successive polls of the interrupt counter (abi.InterruptInterval
//     poll points apart: calls, loop iterations, steps of long builtins),
//     at the next loop iteration or branch of the script's own code. So a
//     script that rejects and then loops, in Eval, in a promise job or in
//     DispatchEvent, is reported within about 10,000 to 20,000 poll points.
//
// A rejection handled before the script ran one full poll interval after
// it (the same expression, the same tick of ordinary code) is never
// reported; one left unhandled longer is reported even if a handler is
// attached later in the same tick. Polls are counted, not timed: the same
// script gets the same reports on every run and every backend. Each
// rejection is reported at most once.
//
// # Notes
//   - Returning true stops the operation at once with a RuntimeError of
//     code CodeCPULimitExceeded; like every limit, no catch or finally
//     block of the script runs after it.
//   - It runs on the goroutine of the eval, inside the guest call, and its
//     time does not count as CPU time. A panic in it is recovered and
//     counts as "go on" (false).
//   - Reading the error may run the script's getters (name, message,
//     stack); what they throw is replaced by a fixed text.
//   - At most 1024 rejections are tracked at a time; beyond that, new ones
//     go unreported.
//   - Default: rejections are ignored.
func WithPromiseRejectionHandler(fn func(*JsError) bool) InstanceOption {
	return instanceOptionFunc(func(c *instanceConfig) { c.rejection = fn })
}

// WithJSMemoryLimit caps the QuickJS heap in bytes. An allocation beyond it
// ends the operation with CodeMemoryLimitExceeded (a script cannot catch
// it).
//
// # Notes
//   - Valid: MinJSMemoryLimit (64 KiB) to MaxJSMemoryLimit (4 GiB).
//   - Default: DefaultJSMemoryLimit (32 MiB).
//   - After an operation that hit the limit, the guest may let the heap
//     exceed it by at most 1/64 of the limit plus 64 KiB, so that the next
//     operation has a few KiB to start in (a script whose globals keep the
//     heap full could otherwise never run the code that frees them, and
//     the runtime's own tables may have grown while compiling). The
//     allowance shrinks back to none as the script frees memory.
func WithJSMemoryLimit(bytes uint64) InstanceOption {
	return instanceOptionFunc(func(c *instanceConfig) { c.jsMemory, c.hasJSMemory = bytes, true })
}

// WithMaxConcurrentRPCs caps the number of async RPC handlers (host.rpc of a
// method registered with RPCRouter.WithAsync) that run at once for one
// operation; more calls wait in a queue.
//
// # Notes
//   - Valid: 1 to MaxConcurrentRPCsLimit.
//   - Default: DefaultMaxConcurrentRPCs (16).
func WithMaxConcurrentRPCs(n int) InstanceOption {
	return instanceOptionFunc(func(c *instanceConfig) { c.maxConcurrent = n })
}

// WithMaxPendingRPCs caps the number of host.rpc calls one async operation
// may have outstanding (running, queued or answered but not yet delivered);
// beyond it host.rpc rejects at once.
//
// The params of the calls whose handlers have not returned are held in Go,
// outside the guest's limits: together they may be as large as the JS
// memory limit (see WithJSMemoryLimit). A call that would pass that rejects
// at once too, with the same error ("host.rpc refused: too many calls
// pending").
//
// # Notes
//   - Valid: 1 to MaxPendingRPCsLimit.
//   - Default: DefaultMaxPendingRPCs (1024).
func WithMaxPendingRPCs(n int) InstanceOption {
	return instanceOptionFunc(func(c *instanceConfig) { c.maxPending = n })
}

func (c *instanceConfig) validate(initialPages uint32) error {
	var problems []string
	if c.hasRouter {
		if c.router == nil {
			problems = append(problems, "WithRouter(nil)")
		} else if err := c.router.problem(); err != "" {
			problems = append(problems, "WithRouter: "+err)
		}
	}
	if c.hasJSMemory && (c.jsMemory < MinJSMemoryLimit || c.jsMemory > MaxJSMemoryLimit) {
		problems = append(problems, fmt.Sprintf("WithJSMemoryLimit(%d): must be %d to %d bytes", c.jsMemory, MinJSMemoryLimit, uint64(MaxJSMemoryLimit)))
	}
	if !c.hasJSMemory {
		c.jsMemory = DefaultJSMemoryLimit
	}
	if c.hasPages {
		if p := checkPages(c.pages, initialPages); p != "" {
			problems = append(problems, p)
		}
	}
	switch {
	case c.maxConcurrent == 0:
		c.maxConcurrent = DefaultMaxConcurrentRPCs
	case c.maxConcurrent < 0, c.maxConcurrent > MaxConcurrentRPCsLimit:
		problems = append(problems, fmt.Sprintf("WithMaxConcurrentRPCs(%d): must be 1 to %d", c.maxConcurrent, MaxConcurrentRPCsLimit))
	}
	switch {
	case c.maxPending == 0:
		c.maxPending = DefaultMaxPendingRPCs
	case c.maxPending < 0, c.maxPending > MaxPendingRPCsLimit:
		problems = append(problems, fmt.Sprintf("WithMaxPendingRPCs(%d): must be 1 to %d", c.maxPending, MaxPendingRPCsLimit))
	}
	return optionError(problems)
}

// ---- eval options ----

type evalConfig struct {
	async   bool
	name    string // WithSourceName
	hasName bool
}

// problem returns what is wrong with the options of a call, or "".
func (c evalConfig) problem() string {
	if c.hasName {
		return checkSourceName(c.name)
	}
	return ""
}

type compileConfig struct {
	name    string
	hasName bool
}

type sourceNameOption string

func (o sourceNameOption) applyEval(c evalConfig) evalConfig {
	c.name, c.hasName = string(o), true
	return c
}

func (o sourceNameOption) applyCompile(c compileConfig) compileConfig {
	c.name, c.hasName = string(o), true
	return c
}

// WithSourceName names the script for its stacks and SyntaxErrors: with
// WithSourceName("rules/discount.js") a stack frame reads
// "at check (rules/discount.js:3:5)" instead of "at check (<eval>:3:5)".
//
// # Notes
//   - It is a SourceOption: give it to Instance.Eval, or to Runtime.Compile,
//     whose bytecode keeps the name it was compiled with (EvalCompiled shows
//     that name wherever the bytecode runs).
//   - It names one call only: the next Eval without it is DefaultSourceName
//     ("<eval>") again. Functions keep the name of the script that defined
//     them, so DispatchEvent shows the handler's own source name;
//     EvalCompiled and DispatchEvent accept the option but do not use it
//     (they still validate it).
//   - The name must be non-empty valid UTF-8 of at most MaxSourceNameLen
//     bytes without NUL; otherwise the call fails with an error wrapping
//     ErrInvalidOption before anything runs.
//   - It is a label, not a path: nothing is read from it. It replaces the
//     file name only: the frame of the script's top-level code still reads
//     "at <eval> (rules/discount.js:4:1)", <eval> being QuickJS's name for
//     that code.
//   - Default: DefaultSourceName.
func WithSourceName(name string) SourceOption { return sourceNameOption(name) }

// checkSourceName returns what is wrong with a source name, or "".
func checkSourceName(name string) string {
	switch {
	case name == "":
		return "WithSourceName: empty name"
	case len(name) > MaxSourceNameLen:
		return "WithSourceName: name longer than " + itoa(MaxSourceNameLen) + " bytes"
	case strings.IndexByte(name, 0) >= 0:
		return "WithSourceName: name contains a NUL byte"
	case !utf8.ValidString(name):
		return "WithSourceName: name is not valid UTF-8"
	}
	return ""
}

type asyncOption struct{}

func (asyncOption) applyEval(c evalConfig) evalConfig {
	c.async = true
	return c
}

// WithAsync runs the operation asynchronously: top-level await is enabled,
// a promise result is awaited, the microtask queue is drained and host.rpc
// calls are serviced until the result settles.
//
// # Notes
//   - Without it the operation is synchronous: host.rpc rejects at once and
//     a pending promise result is a CodeRuntimeError (a fulfilled one is
//     unwrapped). host.rpcSync works in both modes.
//   - An async result that can never settle (nothing pending) is a
//     CodeRuntimeError, not a wait forever.
func WithAsync() EvalOption { return asyncOption{} }
