// Package kafig runs untrusted JavaScript in a sandbox: QuickJS compiled to
// WebAssembly, with CPU and memory limits, async/await, and an RPC bridge
// between JavaScript and Go.
//
// Package kafig imports no WebAssembly engine. The engine is a
// backend.Backend passed to New, for example the pure-Go one:
//
//	import wazerobackend "github.com/kafig-dev/kafig/backend-wazero"
//
//	rt, err := kafig.New(ctx, wazerobackend.New(),
//		kafig.WithPrelude(`const VERSION = "1.0";`),
//	)
//	if err != nil { ... }
//	defer rt.Close(ctx)
//
//	router := kafig.NewRPCRouter().
//		WithSync("now", func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
//			return json.Marshal(time.Now().Unix())
//		})
//
//	inst, err := rt.Instance(ctx,
//		kafig.WithRouter(router),
//		kafig.WithInterruptCallback(func(opcodes, cpuTimeUs uint64) bool {
//			return cpuTimeUs > 1_000_000 // 1 s of CPU
//		}),
//		kafig.WithJSMemoryLimit(16<<20),
//	)
//	if err != nil { ... }
//	defer inst.Close(ctx)
//
//	result, err := inst.Eval(ctx, `host.rpcSync("now") > 0`) // json.RawMessage("true")
//
// # Model
//
//   - A Runtime holds the compiled guest and the defaults of its instances.
//     It is safe for concurrent use.
//   - An Instance is one JavaScript world (globals, host.on handlers) in its
//     own linear memory. It runs one call at a time; concurrent calls wait.
//   - Eval, EvalCompiled and DispatchEvent are synchronous unless given
//     WithAsync, which enables top-level await, awaits a promise result and
//     services host.rpc calls until the result settles.
//   - Inside the sandbox a script sees host.rpc(method, params) (a promise;
//     the Go handler runs in a goroutine), host.rpcSync(method, params) (the
//     handler runs inline) and host.on(name, fn) (an event handler for
//     DispatchEvent). Everything crossing the boundary is JSON.
//
// # Errors
//
// A JavaScript exception is a *JsError; a limit or failure is a
// *RuntimeError with an ErrorCode. Misuse and refused input wrap the
// ErrorString sentinels (ErrClosed, ErrInvalidOption, ErrInvalidSource, ...);
// use errors.As and errors.Is. When the context of a call ends, the call
// returns a *RuntimeError with CodeCPULimitExceeded whose Err is ctx.Err().
//
// # Limits
//
// CPU: WithInterruptCallback decides, from the instance's opcode estimate
// and CPU time, whether to stop; the call's context bounds it too. Both are
// checked at the guest's polls, about every abi.InterruptInterval QuickJS
// poll points; a builtin that does not poll is stopped from outside by the
// runtime's monitor within about 250 ms of the limit, and that instance is
// then dead (ErrInstanceDead). Memory: WithJSMemoryLimit (the QuickJS heap)
// and WithWASMMemoryLimitPages (all linear memory).
//
// Bytecode from Runtime.Compile is sealed with a MAC: EvalCompiled accepts
// only bytecode of this runtime, or of one with the same WithBytecodeKey.
//
// See abi/ABI.md for the guest ABI.
package kafig
