package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kafig-dev/kafig/bench/internal/nativeqjs"
)

func TestMain(m *testing.M) {
	code := m.Run()
	closeEngines()
	os.Exit(code)
}

// forEngines runs fn as a sub-benchmark per engine, then native (if given)
// as the "native" sub-benchmark.
func forEngines(b *testing.B, backstopVariants bool, fn func(*testing.B, engine), nativeFn func(*testing.B)) {
	for _, e := range enginesFor(backstopVariants) {
		b.Run(e.Name(), func(b *testing.B) { fn(b, e) })
	}
	if nativeFn != nil {
		b.Run(nativeName, nativeFn)
	}
}

// warm returns a live instance that has run one eval.
func warm(tb testing.TB, e engine) instance {
	tb.Helper()
	ctx := context.Background()
	in, err := e.NewInstance(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = in.Close(ctx) })
	if _, err := in.Eval(ctx, "1+1"); err != nil {
		tb.Fatal(err)
	}
	return in
}

// reportNative sets ns/op and cpu-ns/op to the native harness's own
// measurement of n iterations, which excludes the pipe round trip.
func reportNative(b *testing.B, t nativeqjs.Timing, n int) {
	b.ReportMetric(float64(t.Wall.Nanoseconds())/float64(n), "ns/op")
	b.ReportMetric(float64(t.CPU.Nanoseconds())/float64(n), "cpu-ns/op")
}

// cpuMeter measures the CPU time of the whole process (every thread: the
// engine, its goroutines, the GC) over a benchmark loop. On a busy machine
// it is steadier than wall time, which also counts the time this process
// waits for a CPU.
type cpuMeter struct {
	start time.Duration
	ok    bool
}

func startCPU() cpuMeter {
	d, ok := processCPU()
	return cpuMeter{d, ok}
}

// report adds cpu-ns/<unit>: the CPU time divided by n (b.N, or b.N times
// the calls per op).
func (m cpuMeter) report(b *testing.B, unit string, n int) {
	end, ok := processCPU()
	if !m.ok || !ok || n <= 0 {
		return
	}
	b.ReportMetric(float64((end-m.start).Nanoseconds())/float64(n), "cpu-ns/"+unit)
}

func nativeEval(src string, compiled bool) func(*testing.B) {
	return func(b *testing.B) {
		h := native(b)
		eval := h.Eval
		if compiled {
			eval = h.EvalCompiled
		}
		b.ResetTimer() // the harness may have been built just now
		t, _, err := eval(src, b.N)
		if err != nil {
			b.Fatal(err)
		}
		reportNative(b, t, b.N)
	}
}

// BenchmarkNewInstance creates instances from a warm Runtime (kafig) or
// from scratch (goja: a runtime with the host bridge; native: a QuickJS
// runtime and context with the guest's limits). Instances are closed in
// batches of 100 with the timer stopped. faults/op counts the process's
// minor page faults per instance (creation and closing): on VMs where a
// fault is expensive they dominate. close-cpu-ns/op is the CPU time of
// closing them (not in ns/op or cpu-ns/op): rt.Instance + Close costs
// cpu-ns/op + close-cpu-ns/op.
func BenchmarkNewInstance(b *testing.B) {
	forEngines(b, false, benchNewInstance, func(b *testing.B) {
		h := native(b)
		b.ResetTimer()
		t, err := h.NewContexts(b.N)
		if err != nil {
			b.Fatal(err)
		}
		reportNative(b, t, b.N)
	})
	if e := kafigEngine1(wasmtimePoolName); e != nil {
		b.Run(e.Name(), func(b *testing.B) { benchNewInstance(b, e) })
	}
}

// benchNewInstance creates instances of e in batches of 100, closing each
// batch with the clock stopped (close-cpu-ns/op is that closing's CPU).
func benchNewInstance(b *testing.B, e engine) {
	ctx := context.Background()
	warm(b, e) // the Runtime is ready
	const batch = 100
	live := make([]instance, 0, batch)
	var cpuUsed, closeUsed time.Duration
	cpu := startCPU()
	pause := func() { // stop the clocks and close the batch
		b.StopTimer()
		end, ok := processCPU()
		if ok {
			cpuUsed += end - cpu.start
		}
		for _, in := range live {
			_ = in.Close(ctx)
		}
		if end2, ok2 := processCPU(); ok && ok2 {
			closeUsed += end2 - end
		}
		live = live[:0]
	}
	b.ReportAllocs()
	b.ResetTimer()
	faults0 := minorFaults()
	cpu = startCPU()
	for range b.N {
		in, err := e.NewInstance(ctx)
		if err != nil {
			b.Fatal(err)
		}
		live = append(live, in)
		if len(live) == batch {
			pause()
			cpu = startCPU()
			b.StartTimer()
		}
	}
	pause()
	if cpu.ok {
		b.ReportMetric(float64(cpuUsed.Nanoseconds())/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(closeUsed.Nanoseconds())/float64(b.N), "close-cpu-ns/op")
	}
	if f := minorFaults(); f >= 0 && faults0 >= 0 {
		// includes closing (munmap faults nothing; reuse may)
		b.ReportMetric(float64(f-faults0)/float64(b.N), "faults/op")
	}
}

// Evals come in two flavours, because a guest may cache what it compiled
// (kafig's guest keeps a small cache keyed by the exact source or bytecode):
//
//   - same: the same input every time, the best case (a cache hit);
//   - fresh: a different input every time, the cost of parsing or loading
//     (sources get a counter in a trailing comment; bytecode rotates through
//     rotating variants, more than a small cache holds).
//
// goja and native QuickJS have no such cache: they parse or load every
// time, so their two flavours measure the same thing (native runs the same
// input for both).

// freshSource returns src with a unique trailing comment.
func freshSource(buf []byte, src string, i int) string {
	buf = append(buf[:0], src...)
	buf = append(buf, "\n//"...)
	buf = strconv.AppendInt(buf, int64(i), 10)
	return string(buf)
}

func benchEval(b *testing.B, src string, fresh, backstopVariants bool) {
	ctx := context.Background()
	forEngines(b, backstopVariants, func(b *testing.B, e engine) {
		in := warm(b, e)
		var buf []byte
		i := 0
		b.ReportAllocs()
		cpu := startCPU()
		for b.Loop() {
			s := src
			if fresh {
				i++
				s = freshSource(buf, src, i)
			}
			if _, err := in.Eval(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b, "op", b.N)
	}, nativeEval(src, false))
}

// BenchmarkEval evaluates 1+1 on a warm instance, the same source every
// time: the fixed cost of an eval (for kafig: the call into the guest,
// parsing or a compile cache hit, the JSON result).
func BenchmarkEval(b *testing.B) { benchEval(b, "1+1", false, true) }

// BenchmarkEvalFresh evaluates 1+1 with a different comment each time: no
// compile cache can help.
func BenchmarkEvalFresh(b *testing.B) { benchEval(b, "1+1", true, false) }

// BenchmarkEvalScript evaluates a mid-size script (Script), the same source
// every time.
func BenchmarkEvalScript(b *testing.B) { benchEval(b, Script, false, false) }

// BenchmarkEvalScriptFresh evaluates Script with a different comment each
// time: parsing and compiling every time.
func BenchmarkEvalScriptFresh(b *testing.B) { benchEval(b, Script, true, false) }

// rotating is the number of bytecode variants BenchmarkEvalCompiledFresh
// cycles through.
const rotating = 256

func benchEvalCompiled(b *testing.B, fresh bool) {
	ctx := context.Background()
	forEngines(b, false, func(b *testing.B, e engine) {
		in := warm(b, e)
		n := 1
		if fresh {
			n = min(b.N, rotating) // b.N distinct ones at most (quick -benchtime=1x)
		}
		codes := make([]any, n)
		var buf []byte
		for i := range codes {
			src := Script
			if fresh {
				src = freshSource(buf, Script, i)
			}
			code, err := e.Compile(ctx, src)
			if err != nil {
				b.Fatal(err)
			}
			codes[i] = code
		}
		i := 0
		b.ReportAllocs()
		cpu := startCPU()
		for b.Loop() {
			if _, err := in.EvalCompiled(ctx, codes[i%n]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		cpu.report(b, "op", b.N)
	}, nativeEval(Script, true))
}

// BenchmarkEvalCompiled evaluates Script from bytecode compiled once
// (kafig: Runtime.Compile, sealed; goja: goja.Compile; native:
// JS_WriteObject once, JS_ReadObject + JS_EvalFunction per run), the same
// bytecode every time.
func BenchmarkEvalCompiled(b *testing.B) { benchEvalCompiled(b, false) }

// BenchmarkEvalCompiledFresh is BenchmarkEvalCompiled rotating through
// rotating bytecodes of variants of Script.
func BenchmarkEvalCompiledFresh(b *testing.B) { benchEvalCompiled(b, true) }

// rpcLoop is the number of RPCs per eval in the RPC benchmarks.
const (
	rpcSyncLoop  = 1000
	rpcAsyncLoop = 200
)

var (
	rpcSyncSrc = fmt.Sprintf(`(function () {
  var r = 0;
  for (var i = 0; i < %d; i++) r += host.rpcSync("echo", {a: 1}).a;
  return r;
})()`, rpcSyncLoop)
	rpcAsyncSrc = fmt.Sprintf(`(async function () {
  var r = 0;
  for (var i = 0; i < %d; i++) r += (await host.rpc("aecho", {a: 1})).a;
  return r;
})()`, rpcAsyncLoop)
)

// rpcSyncEmulation is the native baseline of BenchmarkRPCSync: host.rpcSync
// as a JS function doing the JSON round trip any bridge needs (stringify
// the params, parse the reply), with no host call. It is the floor of what
// the guest's side of a call costs.
const rpcSyncEmulation = `var host = { rpcSync: function (m, p) { return JSON.parse(JSON.stringify(p)); } };
`

// BenchmarkRPCSync: one eval runs a JS loop of rpcSyncLoop host.rpcSync
// calls with params {a:1} (the handler returns them); ns/call is the eval's
// time divided by the count. native runs the same loop over
// rpcSyncEmulation.
func BenchmarkRPCSync(b *testing.B) {
	ctx := context.Background()
	want := []byte(strconv.Itoa(rpcSyncLoop))
	forEngines(b, true, func(b *testing.B, e engine) {
		in := warm(b, e)
		b.ReportAllocs()
		cpu := startCPU()
		for b.Loop() {
			res, err := in.Eval(ctx, rpcSyncSrc)
			if err != nil {
				b.Fatal(err)
			}
			if !bytes.Equal(res, want) {
				b.Fatalf("result %s, want %s", res, want)
			}
		}
		cpu.report(b, "call", b.N*rpcSyncLoop)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rpcSyncLoop), "ns/call")
	}, func(b *testing.B) {
		h := native(b)
		b.ResetTimer()
		t, res, err := h.Eval(rpcSyncEmulation+rpcSyncSrc, b.N)
		if err != nil {
			b.Fatal(err)
		}
		if res != string(want) {
			b.Fatalf("result %s, want %s", res, want)
		}
		reportNative(b, t, b.N)
		b.ReportMetric(float64(t.Wall.Nanoseconds())/float64(b.N*rpcSyncLoop), "ns/call")
		b.ReportMetric(float64(t.CPU.Nanoseconds())/float64(b.N*rpcSyncLoop), "cpu-ns/call")
	})
}

// BenchmarkRPCAsync: one async eval awaits rpcAsyncLoop host.rpc calls in
// a row (each handler runs in a goroutine); ns/call as for RPCSync.
func BenchmarkRPCAsync(b *testing.B) {
	ctx := context.Background()
	want := []byte(strconv.Itoa(rpcAsyncLoop))
	forEngines(b, false, func(b *testing.B, e engine) {
		in := warm(b, e)
		b.ReportAllocs()
		cpu := startCPU()
		for b.Loop() {
			res, err := in.EvalAsync(ctx, rpcAsyncSrc)
			if err != nil {
				b.Fatal(err)
			}
			if !bytes.Equal(res, want) {
				b.Fatalf("result %s, want %s", res, want)
			}
		}
		cpu.report(b, "call", b.N*rpcAsyncLoop)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rpcAsyncLoop), "ns/call")
	}, nil)
}

// BenchmarkDispatchEvent calls a host.on handler with params {"a":1}.
func BenchmarkDispatchEvent(b *testing.B) {
	ctx := context.Background()
	params := []byte(`{"a":1}`)
	forEngines(b, false, func(b *testing.B, e engine) {
		in := warm(b, e)
		if _, err := in.Eval(ctx, `host.on("tick", function (p) { return p.a + 1; }); undefined`); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		cpu := startCPU()
		for b.Loop() {
			res, err := in.Dispatch(ctx, "tick", params)
			if err != nil {
				b.Fatal(err)
			}
			if string(res) != "2" {
				b.Fatalf("result %s, want 2", res)
			}
		}
		cpu.report(b, "op", b.N)
	}, nil)
}

// memInstances is the number of live idle instances BenchmarkMemory keeps.
const memInstances = 1000

// BenchmarkMemory keeps memInstances live idle instances (just created,
// with the router) and reports the growth of RSS (/proc/self/statm) and of
// the live Go heap (runtime.MemStats.HeapAlloc after a GC) per instance.
// native: the RSS growth of the harness for as many QuickJS runtime+context
// pairs. An op is the creation of all of them.
func BenchmarkMemory(b *testing.B) {
	ctx := context.Background()
	forEngines(b, false, func(b *testing.B, e engine) {
		warm(b, e)
		var rssKB, heapKB float64
		live := make([]instance, 0, memInstances)
		for range b.N {
			runtime.GC()
			debug.FreeOSMemory()
			rss0 := rss(b)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			for range memInstances {
				in, err := e.NewInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				live = append(live, in)
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			rss1 := rss(b)
			rssKB += float64(rss1-rss0) / 1024 / memInstances
			heapKB += (float64(m1.HeapAlloc) - float64(m0.HeapAlloc)) / 1024 / memInstances
			b.StopTimer()
			for _, in := range live {
				_ = in.Close(ctx)
			}
			live = live[:0]
			b.StartTimer()
		}
		b.ReportMetric(rssKB/float64(b.N), "RSS-KB/instance")
		b.ReportMetric(heapKB/float64(b.N), "heap-KB/instance")
	}, func(b *testing.B) {
		h := native(b)
		var rssKB float64
		for range b.N {
			n, err := h.RSSPerContexts(memInstances)
			if err != nil {
				b.Fatal(err)
			}
			rssKB += float64(n) / 1024 / memInstances
		}
		b.ReportMetric(rssKB/float64(b.N), "RSS-KB/instance")
	})
}

// rss returns the resident set size of this process in bytes.
func rss(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		tb.Fatalf("statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// BenchmarkCPU runs each of Workloads on every engine, with and without the
// backends' backstops, on a warm instance.
func BenchmarkCPU(b *testing.B) {
	ctx := context.Background()
	for _, w := range Workloads {
		b.Run(w.Name, func(b *testing.B) {
			forEngines(b, true, func(b *testing.B, e engine) {
				in := warm(b, e)
				cpu := startCPU()
				for b.Loop() {
					if _, err := in.Eval(ctx, w.Source); err != nil {
						b.Fatal(err)
					}
				}
				cpu.report(b, "op", b.N)
			}, nativeEval(w.Source, false))
		})
	}
}
