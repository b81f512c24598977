// Package bench holds kafig's benchmarks: the same measurements on every
// engine, side by side in one run.
//
// Engines (sub-benchmark names):
//
//   - wazero: kafig on the pure-Go wazero backend (backstop on, the default);
//   - wasmtime: kafig on the wasmtime backend (cgo builds only);
//   - goja: github.com/dop251/goja, the pure-Go engine a user would pick
//     instead, with an equivalent host bridge written in Go;
//   - native: QuickJS built with gcc -O2 from the guest's pinned source
//     (guest/native.sh), run by a small C harness that times its own loops
//     (see internal/nativeqjs);
//   - wazero-nobackstop, wasmtime-nobackstop: the same backends with
//     WithBackstop(false), in BenchmarkEval, BenchmarkRPCSync and the CPU
//     workloads, to show what the backstop costs.
//
// Benchmarks: BenchmarkNewInstance (also faults/op: minor page faults per
// instance), BenchmarkEval and BenchmarkEvalFresh (1+1 on a warm instance,
// the same source every time or a fresh one, which no compile cache
// helps), BenchmarkEvalScript and BenchmarkEvalScriptFresh (a mid-size
// script), BenchmarkEvalCompiled and BenchmarkEvalCompiledFresh (the script
// from bytecode: the same bytecode, or rotating variants), BenchmarkRPCSync
// and BenchmarkRPCAsync (a JS loop of calls, reported per call as ns/call;
// native runs the JSON round trip of a call without a bridge),
// BenchmarkDispatchEvent, BenchmarkMemory (1,000 live idle instances: KB of
// RSS and of Go heap per instance) and BenchmarkCPU/<workload> (see
// Workloads). Next to wall time (ns/op), each reports the CPU time of the
// process per op (cpu-ns/op), steadier on a busy machine.
//
// CI smoke run (every benchmark once):
//
//	go test ./... -run=NONE -bench=. -benchtime=1x
//
// The measurement behind RESULTS.md (make bench; on a quiet machine):
//
//	go run ./cmd/report -count=5 -benchtime=1s
//
// which runs go test -bench with those flags (about 15 minutes on 2 cores),
// saves the raw output to results.txt (for benchstat), keeps the median of
// the counts and rewrites RESULTS.md above its notes.
//
// Set KAFIG_BENCH_NATIVE=0 to skip the native baseline; it is skipped with
// a message when guest/native.sh (which needs apt the first time) or the C
// compiler fails.
package bench
