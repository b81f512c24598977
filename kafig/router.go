package kafig

import (
	"context"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/kafig-dev/kafig/abi"
)

// RPCHandler answers an RPC from JavaScript: params is the JSON the script
// passed (null when it passed nothing) and the result must be JSON.
//
// # Notes
//   - ctx is the context of the eval or dispatch that made the call (for a
//     handler running in a goroutine, a context derived from it that is
//     cancelled when the operation ends). Handlers must return when it is
//     done: the end of the operation waits for them, but only 100 ms; one
//     that is still running then is abandoned (logged; its result dropped).
//   - An error, a panic or a result that is not valid JSON makes the JS call
//     fail (host.rpcSync throws, the host.rpc promise rejects) with an Error
//     whose message is the error's text (cut to 16 KiB); the instance stays
//     usable. So does a result larger than the instance's JS memory limit,
//     which could never be parsed inside it.
//   - A nil or empty result means JSON null.
type RPCHandler func(ctx context.Context, params json.RawMessage) (json.RawMessage, error)

type rpcMode uint8

const (
	modeSync rpcMode = iota + 1
	modeAsync
)

type rpcMethod struct {
	h    RPCHandler
	mode rpcMode
	name string
}

// RPCRouter maps method names to the handlers that host.rpc and
// host.rpcSync reach.
//
// How each kind of handler runs:
//   - WithSync handlers run inline, on the goroutine of the eval, with no
//     goroutine: for quick, pure-compute calls. host.rpcSync and host.rpc
//     both reach them (host.rpc gets a promise settled with the result).
//   - WithAsync handlers run in goroutines, several at once (see
//     WithMaxConcurrentRPCs), only for host.rpc in an async operation
//     (WithAsync). host.rpcSync of such a method throws
//     "kafig: method NAME is async; use host.rpc".
//   - A method that is not registered reaches the fallback if there is one
//     (inline for host.rpcSync, in a goroutine for host.rpc; MethodName tells
//     it the name), and otherwise fails in JS with
//     "kafig: unknown RPC method NAME".
//
// # Notes
//   - The With methods never panic: a problem (an empty, too long or
//     duplicate name, a nil handler) is reported by Runtime.Instance as an
//     error wrapping ErrInvalidOption.
//   - Build a router before giving it to an instance and do not change it
//     afterwards; a finished router is safe for concurrent use by many
//     instances.
type RPCRouter struct {
	methods  map[string]rpcMethod
	fallback RPCHandler
	problems []string
}

// NewRPCRouter returns an empty router.
func NewRPCRouter() *RPCRouter {
	return &RPCRouter{methods: make(map[string]rpcMethod)}
}

// WithSync registers a handler that runs inline and returns r.
func (r *RPCRouter) WithSync(name string, h RPCHandler) *RPCRouter {
	return r.add(name, h, modeSync)
}

// WithAsync registers a handler that runs in a goroutine and returns r.
func (r *RPCRouter) WithAsync(name string, h RPCHandler) *RPCRouter {
	return r.add(name, h, modeAsync)
}

// WithFallback sets the handler of methods that are not registered and
// returns r. MethodName(ctx) gives it the method's name.
func (r *RPCRouter) WithFallback(h RPCHandler) *RPCRouter {
	if r == nil {
		return nil
	}
	switch {
	case h == nil:
		r.problems = append(r.problems, "WithFallback(nil)")
	case r.fallback != nil:
		r.problems = append(r.problems, "WithFallback called twice")
	default:
		r.fallback = h
	}
	return r
}

func (r *RPCRouter) add(name string, h RPCHandler, mode rpcMode) *RPCRouter {
	if r == nil {
		return nil
	}
	if r.methods == nil { // a zero RPCRouter works too
		r.methods = make(map[string]rpcMethod)
	}
	if p := checkName(name); p != "" {
		r.problems = append(r.problems, fmt.Sprintf("method %q: %s", name, p))
		return r
	}
	if h == nil {
		r.problems = append(r.problems, fmt.Sprintf("method %q: nil handler", name))
		return r
	}
	if _, dup := r.methods[name]; dup {
		r.problems = append(r.problems, fmt.Sprintf("method %q registered twice", name))
		return r
	}
	r.methods[name] = rpcMethod{h: h, mode: mode, name: name}
	return r
}

func (r *RPCRouter) problem() string {
	switch len(r.problems) {
	case 0:
		return ""
	case 1:
		return r.problems[0]
	}
	return fmt.Sprintf("%s (and %d more)", r.problems[0], len(r.problems)-1)
}

// lookup returns the handler for name, whether it is the fallback, and its
// mode; ok is false when nothing handles it.
func (r *RPCRouter) lookup(name string) (h RPCHandler, mode rpcMode, fallback, ok bool) {
	if r == nil {
		return nil, 0, false, false
	}
	if m, found := r.methods[name]; found {
		return m.h, m.mode, false, true
	}
	if r.fallback != nil {
		return r.fallback, 0, true, true
	}
	return nil, 0, false, false
}

// lookupBytes is lookup for a name in guest memory. It returns the name as
// a string too: the registered name (no allocation) or a copy.
func (r *RPCRouter) lookupBytes(name []byte) (method string, h RPCHandler, mode rpcMode, fallback, ok bool) {
	if r == nil {
		return string(name), nil, 0, false, false
	}
	if m, found := r.methods[string(name)]; found {
		return m.name, m.h, m.mode, false, true
	}
	if r.fallback != nil {
		return string(name), r.fallback, 0, true, true
	}
	return string(name), nil, 0, false, false
}

// checkName validates a method or event name.
func checkName(name string) string {
	switch {
	case name == "":
		return "empty name"
	case len(name) > abi.MaxMethodLen:
		return fmt.Sprintf("name longer than %d bytes", abi.MaxMethodLen)
	case !utf8.ValidString(name):
		return "name is not valid UTF-8"
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return "name contains a NUL byte"
		}
	}
	return ""
}

type methodKey struct{}

// MethodName returns the RPC method name a fallback handler (see
// RPCRouter.WithFallback) was called for.
func MethodName(ctx context.Context) (string, bool) {
	if ctx == nil {
		return "", false
	}
	s, ok := ctx.Value(methodKey{}).(string)
	return s, ok
}
