// Package wasmtimebackend runs the kafig guest on Wasmtime (through
// wasmtime-go v39, which links a prebuilt static library: cgo, no Rust).
//
//	rt, err := kafig.New(ctx, wasmtimebackend.New(wasmtimebackend.WithCacheDir(dir)))
//
// Without cgo the package still builds, and Compile returns an error.
//
// # Design
//
// Compile makes one Engine (with a fresh Config) and one Module per distinct
// wasm (by sha256) and engine settings, shared by every Module value and
// instance in the process and freed when the last one closes; WithCacheDir
// adds an on-disk cache of the compiled code. The host functions are
// defined once, in the module's Linker (with WASI), and the module is
// pre-linked (an InstancePre). Each instance has its own Store, made by the
// C side with the instance as its data (the host functions find their
// instance through it): linear memory capped through the store limiter, and
// WASI without arguments, environment, files or stdio. With
// WithInstancePool the engine uses Wasmtime's pooling allocator (off by
// default: see WithInstancePool for the measured trade-off).
//
// The hot path bypasses wasmtime-go's reflective Func.Call and Func/FuncNew
// trampolines and uses the C API's unchecked calls and host functions
// directly (kafig_wt.c); the config, engine, module and linker pointers come
// from wasmtime-go's objects (bridge.go). Measured on the project's 2-vCPU
// VM, 2026-12-07 (bench_test.go, fake guest; guest_test.go, real guest):
//
//	export call round trip (kafig_exchange)      ~120 ns, 0 allocs  (wasmtime-go Func.Call: ~2.2 µs, 6 allocs)
//	host import round trip (guest -> Go -> guest) ~140 ns, 0 allocs  (wasmtime-go FuncNew:  ~460 ns, ~4 allocs)
//	instantiate + close, real guest (thread CPU)  ~9 µs on demand, ~4 µs pooled, 4 allocs
//	  ... with the first guest writes (setup)     ~25 µs on demand, ~14 µs pooled: 4 page faults
//	eval("1+1") on the real guest                 ~2.3 µs
//
// Page faults dominate what is left: the guest's first writes to its
// copy-on-write memory image (4 per new instance, about 4 µs each on this
// VM; 20 to 150 µs on the shadow-paged VM these figures were first taken
// on), and unmapping the memory with its TLB shootdowns on close.
//
// # Stopping
//
// With the backstop (the default), Compile adds a stop guard to the guest
// (guest/wasmguard): every loop but the bytecode interpreter's begins with a
// test of a word of guest memory (abi.StopWord), 0 until Stop or the end of
// a call's context sets it, from whatever goroutine, after the instance's
// own stop flag; the guest then traps at its next loop iteration, inside
// builtins that never call the host too. The interpreter (abi.GuardSkip)
// polls the host at every call and jump of the script, and the host import
// trampoline (C, no Go) traps a stopped instance there. The word is memory,
// not a global, because a store's globals may only be touched by the thread
// running it; the engine keeps memories where they were mapped (their 4 GiB
// reservation never moves), so the word's address holds. No goroutine
// ticks. A context.AfterFunc watches the context of a call, and is kept
// across calls whose contexts share a Done channel (registering one costs
// ~1 µs; keeping it, ~40 ns). A stop also takes effect at the guest's next
// host import, even without the backstop.
//
// The backstop's cost is a load and a branch per loop iteration, outside
// the interpreter: within the noise of no backstop at all on the CPU
// benchmarks (bench/RESULTS.md). Before the guard it was epoch
// interruption, which checks at every function entry and loop header
// (interpreter included), and cost 1.19x; a module that cannot take the
// guard (not the kafig guest) still gets epochs: an epoch deadline callback
// traps the store whose flag is up, and Stop bumps the engine's epoch.
// WithEpochBackstop asks for epochs with the kafig guest too: the stop word
// is the guest's own memory, which a guest exploiting a memory-safety bug of
// QuickJS could clear, where epochs are out of its reach.
//
// # Scheduling
//
// A guest call is one cgo call, so Go's scheduler does not see its goroutine
// run until it returns; after 10 ms sysmon starts taking the goroutine's P at
// each of its ticks, and each host call then has to win a P back (on CPU-bound
// scripts, 6% more process CPU than wall time). A host call made 5 ms or more
// after the call last went through the scheduler calls runtime.Gosched, which
// resets sysmon's clock (see yieldIfDue).
//
// # Stacks
//
// Wasmtime runs the guest on the calling thread's native stack, and limits it
// to the max wasm stack below the entry point. Go runs cgo calls on threads
// with the default pthread stack size (8 MiB with glibc and ulimit -s 8192),
// so the max wasm stack must leave room on that stack: at 8 MiB the guest
// runs off the real stack before Wasmtime's check fires, the fault (on the
// guard page, in wasm code but at no trap site) is no wasm trap, and the
// process dies with SIGSEGV "during cgo execution" (TestThreadStackCrash
// reproduces it in a child process). So the default max wasm stack shrinks
// to fit the default thread stack with a 1 MiB reserve (for host functions,
// which wasmtime's limit does not cover), Compile refuses an explicit one
// that does not fit, and every call checks that the current thread has that
// much left (the main thread may differ), failing cleanly if not.
//
// QuickJS checks its own stack (a shadow stack in linear memory) against the
// limit that JSStackLimit advises (backend.StackAdvisor). The two are chosen
// together so that deep recursion in JavaScript or in the builtins ends in
// QuickJS's stack overflow error before the native stack runs out.
// TestGuestStackSweep measured, for ~90 deeply recursive scripts (JS calls,
// getters, proxies, bound functions, JSON.parse/stringify, Array flat/join,
// the parser on 100000-200000 nested brackets, operators and functions,
// regexps), the largest QuickJS limit that still ends cleanly: the worst is
// the parser on nested prefix operators (eval("-".repeat(200000) + "1")) at
// 11.0 bytes of native stack per byte of QuickJS stack (clean up to 183 KiB
// at 2 MiB, 372 KiB at 4 MiB, 558 KiB at 6 MiB); then Proxy calls 10.1,
// Array.prototype.flat and assignments 8.0, nested brackets 6.7. The
// defaults are a 6 MiB max wasm stack and a 256 KiB QuickJS limit (max wasm
// stack / 24): a 2.2x margin. A native stack trap is fatal to that instance
// only (TestGuestTraps: a 100000-deep Proxy chain through
// Object.getPrototypeOf still recurses without a QuickJS check).
package wasmtimebackend
