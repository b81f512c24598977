// Command kafig runs JavaScript and TypeScript in the kafig sandbox (QuickJS
// compiled to WebAssembly) from the command line: a script file, a REPL, or a
// line-oriented JSON protocol that lets another program drive the sandbox and
// answer its RPCs.
//
// Install it with
//
//	go install github.com/kafig-dev/kafig/cmd/kafig@latest
//
// # Usage
//
//	kafig [flags] SCRIPT     run a file; SCRIPT - reads the script from stdin
//	kafig [flags] -e CODE    evaluate CODE
//	kafig [flags]            a REPL when stdin is a terminal, else JSON mode
//
// Flags (they go before SCRIPT):
//
//	-e CODE          evaluate CODE instead of a script file
//	-backend NAME    wazero (pure Go, the default) or wasmtime (needs a
//	                 binary built with cgo; without it kafig exits with 3)
//	-max-cpu-ms N    stop an evaluation after N ms of CPU time
//	-max-opcodes N   stop an evaluation after about N opcodes (QuickJS counts
//	                 them in steps of 10000)
//	-max-memory SIZE cap the JavaScript heap (default 32MiB): bytes, or a
//	                 number with a suffix: KB, MB, GB are powers of 1000,
//	                 KiB, MiB, GiB powers of 1024 (64KiB to 4GiB)
//	-prelude FILE    evaluate FILE in every new instance (also after .reset
//	                 and {"reset": true}) before anything else, synchronously;
//	                 it is bundled like a script when it needs to be
//	-async           evaluate asynchronously (default true): top-level await,
//	                 promise results awaited, host.rpc serviced. -async=false
//	                 evaluates synchronously: host.rpc rejects at once,
//	                 host.rpcSync still works
//	-stats           after each evaluation print its opcodes, CPU time and
//	                 memory use to stderr
//	-json            JSON mode even when stdin is a terminal
//	-cache-dir DIR   keep the compiled guest in DIR between runs (default:
//	                 kafig in the user cache directory; "" or off: none).
//	                 Compiled code is trusted when loaded: DIR must not be
//	                 writable by other users
//
// The limits apply to each evaluation (each script, REPL input, JSON
// request or dispatch) on its own.
//
// # Scripts
//
// kafig runs the script in a fresh instance, in async mode, and prints its
// completion value (the value of the last expression statement) as JSON on
// stdout. null and undefined, which JSON cannot tell apart, print nothing: a
// script that ends in a declaration or a console.log call prints only its
// console output. A JavaScript error is printed to stderr with its stack,
// whose positions name the script's files.
//
// TypeScript and ES modules are bundled with esbuild before they enter the
// sandbox, where there is no module system: a .ts, .mts, .cts or .mjs entry,
// or any file with an import or export statement at the start of a line.
// Imports resolve from local files only (relative or absolute paths; a bare
// package name or a URL is an error). Types are stripped, not checked. The
// bundle keeps top-level await, and its completion value is the entry's
// default export (awaited if it is a promise; nothing is printed without
// one). A syntax or resolution error is printed as esbuild reports it, with
// file, line and column and the line itself, and exits with status 1 like
// any JavaScript error. Stack positions of a bundle are mapped back to the
// source files through esbuild's source map.
//
// Stacks name the file a function was defined in: kafig evaluates a script
// under its file name (<stdin> for standard input) and the -prelude file
// under its own. Code given with -e, typed at the REPL or sent in JSON mode
// is <eval>. The frame of a script's top-level code reads "at <eval>
// (file:line:col)": <eval> is QuickJS's name for that code, not a file.
//
// # Host API
//
// Inside the sandbox a script has host.rpc(method, params) (a promise),
// host.rpcSync(method, params) and host.on(name, handler). The CLI answers
// these methods itself, in every mode:
//
//	console   {"level": "log"|"info"|"debug"|"warn"|"error", "text": "..."}:
//	          output. The CLI's prelude defines console.log, info, debug, warn
//	          and error on it, formatting values the way Node.js does (and
//	          printf-style %s %d %i %f %j %o %O). log, info and debug go to
//	          stdout, warn and error to stderr (in JSON mode: console lines).
//	sleep     a number of milliseconds: resolves with null after that long
//	          (async: use host.rpc)
//	echo      returns its params
//
// Any other method fails with an Error naming it, except in JSON mode,
// where the controlling process answers it.
//
// # REPL
//
// With a terminal on stdin and no script, kafig starts a REPL: line editing
// and history (in ~/.kafig_history, or $KAFIG_HISTORY; KAFIG_HISTORY= turns it
// off), colours when the terminal supports them (NO_COLOR turns them off),
// and async mode, so await works at the prompt. When an input ends in the
// middle of a statement (QuickJS reports a SyntaxError at the end of the
// input, or an unterminated template literal or comment) the prompt changes
// to "..." and the next line continues it. Ctrl-C stops a running evaluation
// or discards the input; Ctrl-D quits. Commands:
//
//	.dispatch NAME [JSON]  call the host.on handler NAME with JSON params
//	.reset                 start over in a new instance
//	.stats                 counters of the last input and of the session
//	.break                 discard an incomplete statement
//	.help                  list the commands
//	.exit                  quit
//
// # JSON mode
//
// When stdin is not a terminal (or with -json), kafig reads one JSON object
// per line on stdin and writes one JSON object per line on stdout. One
// instance serves all requests, in order: globals and host.on handlers stay
// until a reset. Requests:
//
//	{"eval": "1 + 2"}                                  -> {"result": 3}
//	{"dispatch": {"name": "greet", "params": {...}}}   -> {"result": ...}
//	{"stats": true}                                    -> {"result": {"opcodes": ..., "cpu_time_us": ...,
//	                                                        "heap_bytes": ..., "heap_limit_bytes": ...,
//	                                                        "memory_bytes": ..., "total_opcodes": ...,
//	                                                        "total_cpu_time_us": ...}}
//	{"reset": true}                                    -> {"result": true}
//
// A request may carry an "id" (any JSON value), which its response repeats.
// Every request line gets exactly one response line, in the order of the
// requests, whether it succeeds or not; a line that is not a request (not
// JSON, not an object, unknown fields, more than one request) gets an error
// response in its place, and kafig goes on. Blank lines are ignored. A
// failure is
//
//	{"id": ..., "error": {"code": "js_error", "name": "TypeError", "message": "...", "stack": "..."}}
//
// where code is js_error (name and stack are set), cpu_limit_exceeded,
// memory_limit_exceeded, stack_overflow, runtime_error, no_handler (a
// dispatch to an event without a handler) or bad_request.
//
// RPCs that the script makes, other than the CLI's own methods, go to the
// controlling process over the same streams. kafig writes
//
//	{"rpc": {"id": 7, "method": "fetch", "params": {"url": "..."}}}
//
// and the controlling process answers with one of
//
//	{"rpc_result": {"id": 7, "result": {...}}}
//	{"rpc_result": {"id": 7, "error": "not found"}}
//
// The rules:
//
//   - RPC ids are positive integers, unique for the life of the process and
//     unrelated to request ids. They appear only while a request is running
//     (its response comes after all of its RPCs are settled or withdrawn).
//   - Several host.rpc calls may wait at once (Promise.all); answer them in
//     any order. At most 16 are out at a time (kafig's default
//     WithMaxConcurrentRPCs); more go out as earlier ones are answered. kafig reads stdin all the time, so rpc_result lines are
//     taken while a request runs, and request lines sent meanwhile wait in a
//     queue.
//   - host.rpcSync calls come out the same way; the script is blocked until
//     the answer arrives.
//   - The result becomes the value of the promise (or of host.rpcSync); a
//     missing result is null. An error rejects the promise (host.rpcSync
//     throws) with an Error whose message is the error's text (a string, or
//     an object's "message").
//   - When the script stops waiting for a call (the request ended, or a
//     limit stopped it), kafig writes {"rpc_cancel": {"id": 7}}; an answer
//     to it is ignored. An rpc_result for an id that is not waiting is
//     ignored with a note on stderr; it gets no response line.
//   - At the end of stdin every waiting call fails with "stdin closed"; the
//     requests already read still run (their RPCs fail at once) and kafig
//     exits with status 0.
//
// Console output comes out as {"console": {"level": "log", "text": "..."}}
// lines, in order with the rpc lines of the same request.
//
// A controlling process must therefore read kafig's stdout continuously and
// tell lines apart by their key: "rpc", "rpc_cancel", "console", or a
// response ("result" or "error").
//
// # Exit status
//
//	0    success (JSON mode: the end of stdin)
//	1    a JavaScript error: an exception, a SyntaxError, a bundling error,
//	     a runtime_error, or a failing prelude
//	2    a limit: cpu_limit_exceeded (-max-cpu-ms, -max-opcodes),
//	     memory_limit_exceeded (-max-memory), stack_overflow
//	3    bad usage: unknown flags, bad flag values, a missing or unreadable
//	     file, an unusable backend
//	130  interrupted (SIGINT or SIGTERM)
//
// # Examples
//
//	kafig examples/hello.js
//	kafig -e '[1, 2, 3].map(x => x * 2)'
//	kafig -max-cpu-ms 100 -e 'for (;;) {}'      # exits with 2
//	kafig -max-memory 16MiB -stats examples/async.js
//	kafig examples/ts/main.ts
//	kafig -prelude examples/events.js           # then .dispatch greet {"name": "Ada"}
//	echo '{"eval": "await host.rpc(\"sleep\", 10); 6 * 7"}' | kafig
package main
