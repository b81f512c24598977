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
//   - wazero-nobackstop, wasmtime-nobackstop: the CPU workloads without the
//     backend's backstop, to show what it costs.
//
// Benchmarks: BenchmarkNewInstance, BenchmarkEval (1+1 on a warm instance),
// BenchmarkEvalScript and BenchmarkEvalCompiled (a mid-size script from
// source and from bytecode), BenchmarkRPCSync and BenchmarkRPCAsync (a JS
// loop of calls, reported per call as ns/call), BenchmarkDispatchEvent,
// BenchmarkMemory (1,000 live idle instances: KB of RSS and of Go heap per
// instance) and BenchmarkCPU/<workload> (see Workloads).
//
// CI smoke run (every benchmark once):
//
//	go test ./... -run=NONE -bench=. -benchtime=1x
//
// The measurement behind RESULTS.md (see cmd/report, or make bench):
//
//	go run ./cmd/report -count=5 -benchtime=1s
//
// which runs go test -bench with those flags, keeps the median of the
// counts and writes RESULTS.md. Set KAFIG_BENCH_NATIVE=0 to skip the native
// baseline (it is skipped with a message when guest/native.sh or the C
// compiler fails).
package bench
