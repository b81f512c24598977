package conformance

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig"
)

func (c *cctx) stats() kafig.ExecutionStats {
	c.t.Helper()
	st, err := c.inst.GetExecutionStats(c.t.Context())
	require.NoError(c.t, err)
	return st
}

// busyLoop runs about 20 interrupt polls' worth of JavaScript.
const busyLoop = `(() => { let x = 0; for (let i = 0; i < 2e5; i++) x += i; return x })()`

// TestStats: GetExecutionStats and ResetExecutionStats.
func TestStats(t *testing.T) {
	runCases(t, []tcase{
		{name: "fresh-instance", run: func(t *testing.T, c *cctx) {
			st := c.stats()
			assert.Zero(t, st.Opcodes)
			assert.Less(t, st.CPUTimeUs, uint64(1_000_000))
		}},
		{name: "opcodes-grow", run: func(t *testing.T, c *cctx) {
			c.mustEval(busyLoop)
			a := c.stats()
			assert.Positive(t, a.Opcodes)
			assert.Zero(t, a.Opcodes%abi.InterruptInterval, "steps of abi.InterruptInterval")
			c.mustEval(busyLoop)
			b := c.stats()
			assert.Greater(t, b.Opcodes, a.Opcodes, "cumulative")
			assert.GreaterOrEqual(t, b.CPUTimeUs, a.CPUTimeUs)
		}},
		{name: "opcodes-grow-in-dispatch", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.on("work", () => { ` + busyLoop + ` })`)
			before := c.stats()
			_, err := c.inst.DispatchEvent(t.Context(), "work", nil)
			require.NoError(t, err)
			assert.Greater(t, c.stats().Opcodes, before.Opcodes)
		}},
		{name: "cpu-counts-busy-time", run: func(t *testing.T, c *cctx) {
			c.mustEval(`const t0 = Date.now(); while (Date.now() - t0 < 300) {}`)
			assert.GreaterOrEqual(t, c.stats().CPUTimeUs, uint64(250_000))
		}},
		{name: "cpu-excludes-async-rpc-wait", async: true, run: func(t *testing.T, c *cctx) {
			start := time.Now()
			c.mustEval(`await host.rpc("sleep", 800); await host.rpc("sleep", 400); 1`, kafig.WithAsync())
			require.GreaterOrEqual(t, time.Since(start), 1200*time.Millisecond)
			assert.Less(t, c.stats().CPUTimeUs, uint64(400_000), "1.2 s waiting for host.rpc is not CPU time")
		}},
		{name: "cpu-excludes-sync-rpc-handler", run: func(t *testing.T, c *cctx) {
			c.mustEval(`host.rpcSync("ssleep", 800); 1`)
			assert.Less(t, c.stats().CPUTimeUs, uint64(400_000), "800 ms in a host.rpcSync handler is not CPU time")
		}},
		{name: "cpu-excludes-rpc-but-counts-js", async: true, run: func(t *testing.T, c *cctx) {
			c.mustEval(`await host.rpc("sleep", 600); const t0 = Date.now(); while (Date.now() - t0 < 300) {}`, kafig.WithAsync())
			st := c.stats()
			assert.GreaterOrEqual(t, st.CPUTimeUs, uint64(250_000))
			assert.Less(t, st.CPUTimeUs, uint64(700_000))
		}},
		{name: "reset", run: func(t *testing.T, c *cctx) {
			c.mustEval(busyLoop)
			require.Positive(t, c.stats().Opcodes)
			require.NoError(t, c.inst.ResetExecutionStats(t.Context()))
			st := c.stats()
			assert.Zero(t, st.Opcodes)
			assert.Zero(t, st.CPUTimeUs)
			c.mustEval(busyLoop)
			assert.Positive(t, c.stats().Opcodes, "counting goes on after a reset")
		}},
		{name: "reset-keeps-state", run: func(t *testing.T, c *cctx) {
			c.mustEval(`globalThis.kept = 1`)
			require.NoError(t, c.inst.ResetExecutionStats(t.Context()))
			assert.JSONEq(t, `1`, string(c.mustEval(`kept`)))
		}},
		{name: "memory-fields", opts: func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithJSMemoryLimit(16<<20), kafig.WithWASMMemoryLimitPages(1024))
		}, run: func(t *testing.T, c *cctx) {
			st := c.stats()
			assert.Equal(t, uint64(16<<20), st.HeapLimitBytes)
			assert.Positive(t, st.HeapBytes)
			assert.Less(t, st.HeapBytes, st.HeapLimitBytes)
			assert.Positive(t, st.MemoryBytes)
			assert.Zero(t, st.MemoryBytes%abi.PageSize, "whole pages")
			assert.LessOrEqual(t, st.MemoryBytes, uint64(1024*abi.PageSize))
			c.mustEval(`globalThis.big = "x".repeat(4 << 20) + "y"`)
			st2 := c.stats()
			assert.GreaterOrEqual(t, st2.HeapBytes, st.HeapBytes+4<<20, "the heap holds the string")
			assert.GreaterOrEqual(t, st2.MemoryBytes, st2.HeapBytes, "linear memory holds the heap")
			c.mustEval(`globalThis.big = null`)
			assert.Less(t, c.stats().HeapBytes, st2.HeapBytes, "freed")
		}},
		{name: "memory-default-heap-limit", run: func(t *testing.T, c *cctx) {
			assert.Equal(t, uint64(kafig.DefaultJSMemoryLimit), c.stats().HeapLimitBytes)
		}},
		{name: "stats-concurrent-with-eval", run: func(t *testing.T, c *cctx) {
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = c.eval(busyLoop) })
			for range 20 {
				_, err := c.inst.GetExecutionStats(t.Context())
				assert.NoError(t, err)
			}
			wg.Wait()
		}},
		{name: "stats-after-close", run: func(t *testing.T, c *cctx) {
			require.NoError(t, c.inst.Close(t.Context()))
			_, err := c.inst.GetExecutionStats(t.Context())
			assert.ErrorIs(t, err, kafig.ErrClosed)
			assert.ErrorIs(t, c.inst.ResetExecutionStats(t.Context()), kafig.ErrClosed)
		}, after: closed},
	})
}

// interruptLog records what the interrupt callback was asked.
type interruptLog struct {
	mu    sync.Mutex
	calls [][2]uint64
}

func (l *interruptLog) fn(opcodes, cpuUs uint64) bool {
	l.mu.Lock()
	l.calls = append(l.calls, [2]uint64{opcodes, cpuUs})
	l.mu.Unlock()
	return false
}

func (l *interruptLog) snapshot() [][2]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][2]uint64(nil), l.calls...)
}

// withInterrupt is the standard router plus an interrupt callback that
// logs to log and never stops.
func withInterrupt(log *interruptLog) func(c *cctx) []kafig.InstanceOption {
	return func(c *cctx) []kafig.InstanceOption {
		return c.std(kafig.WithInterruptCallback(log.fn))
	}
}

// TestInterrupt: WithInterruptCallback, the CPU limit policy.
func TestInterrupt(t *testing.T) {
	opcodeLimit := func(n uint64) func(c *cctx) []kafig.InstanceOption {
		return func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithInterruptCallback(func(ops, _ uint64) bool { return ops > n }))
		}
	}
	cpuLimit := func(us uint64) func(c *cctx) []kafig.InstanceOption {
		return func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithInterruptCallback(func(_, cpu uint64) bool { return cpu > us }))
		}
	}
	runCases(t, []tcase{
		{name: "called-during-long-script", run: func(t *testing.T, c *cctx) {
			var log interruptLog
			c.inst = c.newInstance(withInterrupt(&log))
			c.mustEval(busyLoop)
			calls := log.snapshot()
			require.NotEmpty(t, calls)
			for i := 1; i < len(calls); i++ {
				assert.GreaterOrEqual(t, calls[i][0], calls[i-1][0], "opcodes never go back")
				assert.GreaterOrEqual(t, calls[i][1], calls[i-1][1], "CPU time never goes back")
			}
		}},
		{name: "cumulative-across-evals-until-reset", run: func(t *testing.T, c *cctx) {
			var log interruptLog
			c.inst = c.newInstance(withInterrupt(&log))
			c.mustEval(busyLoop)
			first := log.snapshot()
			require.NotEmpty(t, first)
			last := first[len(first)-1]
			c.mustEval(busyLoop)
			second := log.snapshot()[len(first):]
			require.NotEmpty(t, second)
			assert.Greater(t, second[0][0], last[0], "the second eval starts where the first ended")
			assert.GreaterOrEqual(t, second[0][1], last[1])
			require.NoError(t, c.inst.ResetExecutionStats(t.Context()))
			n := len(log.snapshot())
			c.mustEval(busyLoop)
			third := log.snapshot()[n:]
			require.NotEmpty(t, third)
			assert.Less(t, third[0][0], last[0], "counting restarts after a reset")
		}},
		{name: "cumulative-across-dispatches", run: func(t *testing.T, c *cctx) {
			var log interruptLog
			c.inst = c.newInstance(withInterrupt(&log))
			c.mustEval(`host.on("w", () => { ` + busyLoop + ` })`)
			var maxOps uint64
			for range 3 {
				_, err := c.inst.DispatchEvent(t.Context(), "w", nil)
				require.NoError(t, err)
				calls := log.snapshot()
				require.NotEmpty(t, calls)
				assert.Greater(t, calls[len(calls)-1][0], maxOps)
				maxOps = calls[len(calls)-1][0]
			}
		}},
		{name: "stops-infinite-loop-by-opcodes", opts: opcodeLimit(5_000_000), src: `while (true) {}`, check: isCPULimit},
		// README: fmt.Printf("%s: %s\n", e.Code, e.Message) // cpu_limit_exceeded: interrupted
		{name: "readme-message", opts: opcodeLimit(1_000_000), src: `while (true) {}`, check: func(t tT, c *cctx, res json.RawMessage, err error) {
			var re *kafig.RuntimeError
			if assert.ErrorAs(t, err, &re) {
				assert.Equal(t, "cpu_limit_exceeded: interrupted", string(re.Code)+": "+re.Message)
			}
		}},
		{name: "stops-infinite-loop-by-cpu", opts: cpuLimit(200_000), after: usableOrDead, timeout: 10 * time.Second, run: func(t *testing.T, c *cctx) {
			start := time.Now()
			_, err := c.evalTimeout(10*time.Second, `for (;;) {}`)
			isCPULimit(t, c, nil, err)
			assert.Less(t, time.Since(start), stopBound(200*time.Millisecond), "stopped within 2x + 1 s of the limit")
		}},
		{name: "stops-recursion-loop", opts: opcodeLimit(2_000_000), src: `function f(n) { return n ? f(n - 1) : 0 } for (;;) f(100)`, check: isCPULimit},
		{name: "stops-regexp", opts: cpuLimit(200_000), after: usableOrDead, src: `/(a+)+$/.test("a".repeat(40) + "b")`, check: isCPULimit},
		{name: "stops-async-loop", opts: opcodeLimit(3_000_000), async: true, src: `for (;;) await null`, check: isCPULimit},
		{name: "stops-promise-job-loop", opts: opcodeLimit(3_000_000), async: true,
			src:   `Promise.resolve().then(function loop() { for (let i = 0; i < 1000; i++); return Promise.resolve().then(loop) }); await new Promise(() => {})`,
			check: isCPULimit},
		{name: "stops-in-dispatch", opts: opcodeLimit(3_000_000), run: dispatch(`host.on("spin", () => { for (;;) {} })`, "spin", "", false, isCPULimit)},
		{name: "stops-between-rpcs", opts: opcodeLimit(3_000_000), async: true,
			src: `for (;;) { await host.rpc("aecho", 1); for (let i = 0; i < 1e5; i++); }`, check: isCPULimit},
		{name: "catch-cannot-swallow", opts: opcodeLimit(3_000_000), src: `for (;;) { try { for (;;) {} } catch (e) {} }`, check: isCPULimit},
		{name: "finally-cannot-swallow", opts: opcodeLimit(3_000_000), src: `for (;;) { try { for (;;) {} } finally { continue } }`, check: isCPULimit},
		{name: "usable-after-stop-and-reset", opts: opcodeLimit(3_000_000), run: func(t *testing.T, c *cctx) {
			_, err := c.eval(`for (;;) {}`)
			isCPULimit(t, c, nil, err)
			// The figures are cumulative: without a reset the next long
			// script is stopped at once.
			_, err = c.eval(busyLoop)
			isCPULimit(t, c, nil, err)
			require.NoError(t, c.inst.ResetExecutionStats(t.Context()))
			res, err := c.eval(busyLoop)
			isValue(`19999900000`)(t, c, res, err)
		}},
		{name: "panicking-callback-stops", opts: func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithInterruptCallback(func(ops, _ uint64) bool { panic("callback panic") }))
		}, src: `for (;;) {}`, check: isCPULimit},
		{name: "callback-sees-no-rpc-wait", async: true, run: func(t *testing.T, c *cctx) {
			var log interruptLog
			c.inst = c.newInstance(withInterrupt(&log))
			c.mustEval(`await host.rpc("sleep", 1500); for (let i = 0; i < 1e5; i++);`, kafig.WithAsync())
			calls := log.snapshot()
			require.NotEmpty(t, calls)
			assert.Less(t, calls[len(calls)-1][1], uint64(750_000), "1.5 s of waiting for host.rpc is not CPU time")
		}},
		{name: "callback-not-called-concurrently", run: func(t *testing.T, c *cctx) {
			var mu sync.Mutex
			var inside, overlap bool
			c.inst = c.newInstance(func(c *cctx) []kafig.InstanceOption {
				return c.std(kafig.WithInterruptCallback(func(_, _ uint64) bool {
					mu.Lock()
					if inside {
						overlap = true
					}
					inside = true
					mu.Unlock()
					time.Sleep(time.Millisecond)
					mu.Lock()
					inside = false
					mu.Unlock()
					return false
				}))
			})
			c.mustEval(`const t0 = Date.now(); while (Date.now() - t0 < 500) {}`)
			mu.Lock()
			defer mu.Unlock()
			assert.False(t, overlap)
		}},
		{name: "no-callback-no-limit", run: func(t *testing.T, c *cctx) {
			c.mustEval(`let x = 0; for (let i = 0; i < 3e6; i++) x++; x`)
		}, slow: true},
	})
}

// TestRejection: WithPromiseRejectionHandler.
func TestRejection(t *testing.T) {
	type seen struct {
		mu   sync.Mutex
		errs []*kafig.JsError
	}
	handler := func(s *seen, stop bool) func(c *cctx) []kafig.InstanceOption {
		return func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithPromiseRejectionHandler(func(e *kafig.JsError) bool {
				s.mu.Lock()
				s.errs = append(s.errs, e)
				s.mu.Unlock()
				return stop
			}))
		}
	}
	got := func(s *seen) []*kafig.JsError {
		s.mu.Lock()
		defer s.mu.Unlock()
		return append([]*kafig.JsError(nil), s.errs...)
	}
	// with runs src with a handler and checks the result and what the
	// handler saw.
	with := func(stop, async bool, src string, check checkFn, seenCheck func(t *testing.T, errs []*kafig.JsError)) func(t *testing.T, c *cctx) {
		return func(t *testing.T, c *cctx) {
			s := &seen{}
			c.inst = c.newInstance(handler(s, stop))
			var opts []kafig.EvalOption
			if async {
				opts = append(opts, kafig.WithAsync())
			}
			res, err := c.evalTimeout(2*time.Second, src, opts...)
			check(t, c, res, err)
			seenCheck(t, got(s))
		}
	}
	one := func(name, msg string) func(t *testing.T, errs []*kafig.JsError) {
		return func(t *testing.T, errs []*kafig.JsError) {
			if assert.Len(t, errs, 1) {
				assert.Equal(t, name, errs[0].Name)
				assert.Contains(t, errs[0].Message, msg)
			}
		}
	}
	none := func(t *testing.T, errs []*kafig.JsError) { assert.Empty(t, errs) }
	runCases(t, []tcase{
		{name: "called-with-JsError", run: with(false, false, `Promise.reject(new TypeError("unhandled")); 1`, isValue(`1`), func(t *testing.T, errs []*kafig.JsError) {
			one("TypeError", "unhandled")(t, errs)
			if len(errs) == 1 && assert.NotNil(t, errs[0].Stack) {
				assert.Contains(t, *errs[0].Stack, "<eval>")
			}
		})},
		{name: "called-async", run: with(false, true, `Promise.reject(new RangeError("r")); await null; 2`, isValue(`2`), one("RangeError", "r"))},
		{name: "non-error-reason", run: with(false, true, `Promise.reject("just a string"); 3`, isValue(`3`), one("Error", "just a string"))},
		{name: "async-function-throws-unawaited", run: with(false, true, `(async () => { await null; throw new Error("lost") })(); await host.rpc("aecho", 1)`, isValue(`1`), one("Error", "lost"))},
		{name: "rejected-rpc-unawaited", run: with(false, true, `host.rpc("afail"); await host.rpc("sleep", 50); 4`, isValue(`4`), one("Error", "boom from go"))},
		{name: "true-stops-with-cpu-limit", run: with(true, false, `Promise.reject(new Error("stop")); for (;;) {}`, isCPULimit, one("Error", "stop"))},
		{name: "true-stops-async", run: with(true, true, `await null; Promise.reject(new Error("stop")); await host.rpc("sleep", 10000)`, isCPULimit, one("Error", "stop"))},
		{name: "true-cannot-be-swallowed", run: with(true, true, `
			for (;;) { try { Promise.reject(new Error("s")); for (;;) {} } catch (e) {} }`, isCPULimit, func(t *testing.T, errs []*kafig.JsError) {
			assert.NotEmpty(t, errs)
		})},
		{name: "true-stops-in-job", run: with(true, true, `await null; Promise.reject(new Error("in job")); for (;;) {}`, isCPULimit, one("Error", "in job"))},
		{name: "true-stops-caught-interrupt-loop", run: with(true, false, `
			Promise.reject(new Error("stop")); for (;;) { try { for (;;) {} } catch (e) {} finally { continue } }`, isCPULimit, one("Error", "stop"))},
		// A rejection handled in the same tick is never reported, however
		// long the script runs around it: each one below would stop the eval
		// (the handler returns true) if it were.
		{name: "same-tick-catch-in-long-loop", run: with(true, false, `
			for (let i = 0; i < 1e4; i++) Promise.reject(new Error("h" + i)).catch(() => {}); 1`, isValue(`1`), none)},
		{name: "same-tick-async-throw-caught", run: with(true, false, `
			async function g(i) { throw new Error("g" + i) }
			for (let i = 0; i < 1e4; i++) g(i).catch(() => {}); 2`, isValue(`2`), none)},
		{name: "same-tick-then-second-argument", run: with(true, false, `
			for (let i = 0; i < 1e4; i++) Promise.reject(new Error("t" + i)).then(null, () => {}); 3`, isValue(`3`), none)},
		{name: "same-tick-awaited-in-loop", run: with(true, true, `
			let n = 0; for (let i = 0; i < 3e4; i++) { try { await Promise.reject(new Error("a" + i)) } catch { n++ } } n`, isValue(`30000`), none)},
		{name: "same-tick-async-chain", run: with(true, true, `
			async function inner(i) { if (i % 2) throw new Error("odd " + i); return i }
			async function outer(i) { try { return await inner(i) } catch { return -1 } }
			let s = 0; for (let i = 0; i < 2e4; i++) s += await outer(i); s`, isValue(`99980000`), none)},
		{name: "same-tick-promise-all", run: with(true, true, `
			let n = 0; for (let i = 0; i < 1e4; i++) await Promise.all([1, Promise.reject(new Error("all" + i))]).catch(() => n++); n`, isValue(`10000`), none)},
		{name: "same-tick-in-dispatch", run: func(t *testing.T, c *cctx) {
			s := &seen{}
			c.inst = c.newInstance(handler(s, true))
			c.mustEval(`host.on("e", () => { for (let i = 0; i < 1e4; i++) Promise.reject(new Error("d" + i)).catch(() => {}); return 4 })`)
			res, err := c.bounded(0, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.DispatchEvent(ctx, "e", nil)
			})
			isValue(`4`)(t, c, res, err)
			none(t, got(s))
		}},
		// One left unhandled while the script keeps running is reported
		// even if a handler comes later in the same tick: it was unhandled
		// for two interrupt polls.
		{name: "unhandled-while-running-reported", run: with(false, false, `
			const p = Promise.reject(new Error("late")); for (let i = 0; i < 1e6; i++) {} p.catch(() => {}); 5`, isValue(`5`), one("Error", "late"))},
		// Polls are counted, not timed: the same script reports the same
		// rejections on every run and every backend.
		{name: "deterministic", run: func(t *testing.T, c *cctx) {
			const src = `for (let i = 0; i < 100; i++) { const p = Promise.reject(new Error("d" + i)); for (let j = 0; j < i * 300; j++) {} p.catch(() => {}) } 6`
			var runs [][]string
			for range 3 {
				s := &seen{}
				c.inst = c.newInstance(handler(s, false))
				isValue(`6`)(t, c, c.mustEval(src), nil)
				var msgs []string
				for _, e := range got(s) {
					msgs = append(msgs, e.Message)
				}
				runs = append(runs, msgs)
			}
			assert.NotEmpty(t, runs[0], "the rejections left unhandled longest are reported")
			assert.Less(t, len(runs[0]), 100, "those handled at once are not")
			assert.Equal(t, runs[0], runs[1])
			assert.Equal(t, runs[0], runs[2])
		}},
		{name: "handled-in-same-tick-not-reported", run: with(false, true, `await Promise.reject(new Error("handled")).catch(() => 5)`, isValue(`5`), none)},
		{name: "caught-by-await-not-reported", run: with(false, true, `try { await Promise.reject(new Error("x")) } catch { 6 }`, isValue(`6`), none)},
		{name: "result-rejection-not-reported", run: with(false, true, `Promise.reject(new Error("the result"))`, isJsError("Error", "the result"), none)},
		{name: "thrown-error-not-reported", run: with(false, false, `throw new Error("thrown")`, isJsError("Error", "thrown"), none)},
		{name: "panicking-handler-goes-on", opts: func(c *cctx) []kafig.InstanceOption {
			return c.std(kafig.WithPromiseRejectionHandler(func(*kafig.JsError) bool { panic("rejection handler panic") }))
		}, async: true, src: `Promise.reject(new Error("x")); await null; 7`, want: `7`},
		{name: "many-rejections", run: with(false, true, `for (let i = 0; i < 1000; i++) Promise.reject(new Error("r" + i)); 8`, isValue(`8`), func(t *testing.T, errs []*kafig.JsError) {
			assert.Len(t, errs, 1000)
		})},
		{name: "hostile-reason", run: with(false, true, `
			Promise.reject({get name() { throw 1 }, get message() { throw 2 }, toString() { throw 3 }}); 9`, isValue(`9`), func(t *testing.T, errs []*kafig.JsError) {
			assert.Len(t, errs, 1)
		})},
		{name: "in-dispatch", run: func(t *testing.T, c *cctx) {
			s := &seen{}
			c.inst = c.newInstance(handler(s, true))
			c.mustEval(`host.on("e", () => { Promise.reject(new Error("in event")); for (;;) {} })`)
			_, err := c.bounded(2*time.Second, func(ctx context.Context) (json.RawMessage, error) {
				return c.inst.DispatchEvent(ctx, "e", nil)
			})
			isCPULimit(t, c, nil, err)
			one("Error", "in event")(t, got(s))
		}},
		{name: "default-ignores", src: `Promise.reject(new Error("ignored")); 10`, want: `10`},
	})
}
