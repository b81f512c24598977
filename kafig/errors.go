package kafig

import (
	"encoding/json"
	"strings"
)

// ErrorString is the type of kafig's sentinel errors. They are constants:
// compare them with errors.Is.
type ErrorString string

// Error returns the message, which starts with "kafig: ".
func (e ErrorString) Error() string { return string(e) }

// Sentinel errors, usable with errors.Is. Errors that kafig returns wrap them
// with details.
const (
	// ErrNoBackend: New was given a nil backend.
	ErrNoBackend = ErrorString("kafig: no backend (pass one to kafig.New)")
	// ErrInvalidOption: an option, or a combination of options, is invalid.
	// New and Runtime.Instance report every problem in one error.
	ErrInvalidOption = ErrorString("kafig: invalid option")
	// ErrClosed: the Runtime or Instance is closed (also returned by a call
	// that was running when Close ended it).
	ErrClosed = ErrorString("kafig: closed")
	// ErrInstanceDead: an earlier call trapped or was stopped from outside
	// (the backstop, see WithInterruptCallback); the guest's state is gone.
	// Every later call returns it. Close still works.
	ErrInstanceDead = ErrorString("kafig: instance is dead")
	// ErrNoHandler: DispatchEvent named an event with no host.on handler.
	ErrNoHandler = ErrorString("kafig: no handler for event")
	// ErrBadBytecode: EvalCompiled was given bytes that Compile of this
	// runtime (or one with the same WithBytecodeKey and guest build) did not
	// produce, or that were changed since.
	ErrBadBytecode = ErrorString("kafig: bad bytecode")
	// ErrInvalidSource: a source, event name or params that kafig refuses
	// before the guest sees them: empty, not UTF-8, containing NUL bytes,
	// too large, or params that are not JSON.
	ErrInvalidSource = ErrorString("kafig: invalid source or input")
	// ErrBadGuest: the guest module is not a kafig guest of this ABI version,
	// or it answered something the ABI does not allow.
	ErrBadGuest = ErrorString("kafig: bad guest module")
	// ErrReentrantCall: an RPC handler called back into its own instance
	// (Eval, EvalCompiled, DispatchEvent or the stats methods) with the
	// context kafig gave it, while the call that runs the handler holds the
	// instance: the call would wait for itself.
	ErrReentrantCall = ErrorString("kafig: call into an instance from its own RPC handler")
)

// JsError is a JavaScript exception that ended an eval or event dispatch, or
// an unhandled promise rejection given to WithPromiseRejectionHandler.
//
// # Notes
//   - A thrown value that is not an Error has Name "Error" and its string
//     form as Message.
//   - Stack is nil when the guest reported no stack.
type JsError struct {
	Name    string  `json:"name"`
	Message string  `json:"message"`
	Stack   *string `json:"stack,omitempty"`
}

// Error returns "kafig: Name: Message".
func (e *JsError) Error() string {
	name := e.Name
	if name == "" {
		name = "Error"
	}
	if e.Message == "" {
		return "kafig: " + name
	}
	return "kafig: " + name + ": " + e.Message
}

// parseJsError decodes a JS error document; anything unreadable becomes an
// Error whose message is the raw text.
func parseJsError(doc []byte) *JsError {
	var e JsError
	if err := json.Unmarshal(doc, &e); err != nil {
		return &JsError{Name: "Error", Message: strings.ToValidUTF8(string(doc), "\uFFFD")}
	}
	if e.Name == "" {
		e.Name = "Error"
	}
	return &e
}

// ErrorCode classifies a RuntimeError.
type ErrorCode string

// The codes of RuntimeError.
const (
	// CodeCPULimitExceeded: the interrupt callback or the promise rejection
	// handler said stop, or the eval's context ended (then errors.Is(err,
	// ctx.Err()) holds).
	CodeCPULimitExceeded ErrorCode = "cpu_limit_exceeded"
	// CodeMemoryLimitExceeded: an allocation failed (the JS heap limit or the
	// linear memory limit).
	CodeMemoryLimitExceeded ErrorCode = "memory_limit_exceeded"
	// CodeStackOverflow: the script recursed too deep and did not recover.
	CodeStackOverflow ErrorCode = "stack_overflow"
	// CodeRuntimeError: anything else (a result that can never settle, a
	// pending promise in sync mode, a trap, a misbehaving guest).
	CodeRuntimeError ErrorCode = "runtime_error"
)

// RuntimeError is a resource limit or an internal failure that ended an eval
// or event dispatch.
//
// # Notes
//   - errors.Is(err, &RuntimeError{Code: c}) matches any RuntimeError with
//     code c.
//   - Err holds the cause, if any: ctx.Err() for an eval whose context ended
//     (so errors.Is(err, context.DeadlineExceeded) holds), ErrInstanceDead
//     when the instance did not survive, the backend's error for a trap.
type RuntimeError struct {
	Code    ErrorCode
	Message string
	Err     error
}

// Error returns "kafig: code: message" followed by the cause, if any.
func (e *RuntimeError) Error() string {
	var b strings.Builder
	b.WriteString("kafig: ")
	b.WriteString(string(e.Code))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(" (")
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "kafig: "))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *RuntimeError) Unwrap() error { return e.Err }

// Is reports whether target is a *RuntimeError with the same Code.
func (e *RuntimeError) Is(target error) bool {
	t, ok := target.(*RuntimeError)
	return ok && t != nil && t.Code == e.Code
}

// causes joins errors into one that errors.Is and errors.As see through,
// with a one-line message (errors.Join's has newlines).
type causes []error

func (c causes) Error() string {
	parts := make([]string, 0, len(c))
	for _, e := range c {
		parts = append(parts, strings.TrimPrefix(e.Error(), "kafig: "))
	}
	return "kafig: " + strings.Join(parts, "; ")
}

func (c causes) Unwrap() []error { return c }

// join returns the non-nil errors as one error (nil, the error itself, or
// causes).
func join(errs ...error) error {
	var out causes
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}

// wrap wraps a sentinel with a detail: "kafig: sentinel message: detail".
func wrap(sentinel ErrorString, detail string) error {
	return &detailed{sentinel, detail}
}

type detailed struct {
	sentinel ErrorString
	detail   string
}

func (d *detailed) Error() string { return string(d.sentinel) + ": " + d.detail }
func (d *detailed) Unwrap() error { return d.sentinel }
