// Package wasmtimebackend runs the kafig guest on Wasmtime (through
// wasmtime-go v39, which links a prebuilt static library: cgo, no Rust).
//
//	rt, err := kafig.New(wasmtimebackend.New(wasmtimebackend.WithCacheDir(dir)))
//
// Without cgo the package still builds, and Compile returns an error.
//
// # Design
//
// Compile makes one Engine (with a fresh Config) and one Module per distinct
// wasm (by sha256) and engine settings, shared by every Module value and
// instance in the process and freed when the last one closes; WithCacheDir
// adds an on-disk cache of the compiled code. Each instance has its own
// Store (linear memory capped through the store limiter), its own host
// functions, and WASI without arguments, environment, files or stdio.
//
// The hot path bypasses wasmtime-go's reflective Func.Call and Func/FuncNew
// trampolines and uses the C API's unchecked calls and host functions
// directly (kafig_wt.c). Measured on the fake guest (2-vCPU VM):
// one export call round trip ~190-280 ns and 0 allocations (wasmtime-go
// Func.Call: ~3.2 µs, 6 allocations); one host import round trip ~125 ns
// and 0 allocations (wasmtime-go Linker.FuncNew: ~560 ns and ~4 allocations).
//
// # Stopping
//
// With the backstop (the default), the engine uses epoch interruption and
// every store has an epoch deadline callback (C, no Go) that traps only when
// that store's stop flag is up, and otherwise pushes its deadline one tick
// on. Stop and the end of a call's context raise the flag and bump the
// engine's epoch: the stopped call traps at its next function entry or loop
// header, and the other stores running on the engine pass through their
// callback once and go on. No goroutine ticks; a context.AfterFunc watches
// the context of a call, and is kept across calls whose contexts share a
// Done channel. A stop also takes effect at the guest's next host import,
// even without the backstop.
//
// # Stacks
//
// Wasmtime runs the guest on the calling thread's native stack, and limits it
// to the max wasm stack below the entry point. Go runs cgo calls on threads
// with the default pthread stack size (8 MiB with glibc and ulimit -s 8192),
// so the max wasm stack must leave room on that stack: at 8 MiB the guest
// runs off the real stack before Wasmtime's check fires, the fault is no wasm
// trap, and the process dies with SIGSEGV (TestThreadStackCrash shows it).
// Compile refuses a max wasm stack that does not fit the default thread
// stack with a 1 MiB reserve, and every call checks that the current thread
// has that much left, failing cleanly if not.
//
// QuickJS checks its own stack (a shadow stack in linear memory) against the
// limit that the JSStackLimit of this backend advises (backend.StackAdvisor).
// The two are chosen together so that deep recursion in JavaScript or in the
// builtins ends in QuickJS's stack overflow error before the native stack
// runs out; see stack_test.go for the measurements. A native stack trap is
// fatal to that instance only.
package wasmtimebackend
