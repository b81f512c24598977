package kafig_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	wazerobackend "github.com/kafig-dev/kafig/backend-wazero"
	"github.com/kafig-dev/kafig/kafig"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ExampleNew() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New(),
		kafig.WithPrelude(`const VERSION = "1.0";`),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	inst, err := rt.Instance(ctx,
		kafig.WithJSMemoryLimit(16*1024*1024), // 16 MB QuickJS heap
		kafig.WithWASMMemoryLimitPages(512),   // 32 MB linear memory
	)
	if err != nil {
		log.Fatal(err)
	}
	defer inst.Close(ctx)

	result, err := inst.Eval(ctx, `"version " + VERSION`)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(result))
	// Output: "version 1.0"
}

func ExampleInstance_Eval() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)
	inst, err := rt.Instance(ctx)
	if err != nil {
		log.Fatal(err)
	}

	// Synchronous: no promises, no RPC. The result is the value of the
	// last expression, as JSON.
	for _, src := range []string{
		`1 + 2`,
		`const user = {name: "Ada", langs: ["en", "fr"]}; user`,
		`undefined`,
	} {
		result, err := inst.Eval(ctx, src)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(result))
	}
	// Output:
	// 3
	// {"name":"Ada","langs":["en","fr"]}
	// null
}

func ExampleInstance_Eval_async() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	router := kafig.NewRPCRouter().
		WithAsync("double", func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
			var n int
			if err := json.Unmarshal(params, &n); err != nil {
				return nil, err
			}
			return json.Marshal(2 * n)
		})
	inst, err := rt.Instance(ctx, kafig.WithRouter(router))
	if err != nil {
		log.Fatal(err)
	}

	// WithAsync: top-level await, host.rpc, and a promise result awaited.
	result, err := inst.Eval(ctx, `
		const one = await host.rpc("double", 21);
		const many = await Promise.all([1, 2, 3].map((n) => host.rpc("double", n)));
		({one, many})
	`, kafig.WithAsync())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(result))
	// Output: {"one":42,"many":[2,4,6]}
}

func ExampleInstance_DispatchEvent() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	router := kafig.NewRPCRouter().
		WithAsync("fetch", func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
			var req struct{ URL string }
			if err := json.Unmarshal(params, &req); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]any{"status": 200, "url": req.URL})
		})
	inst, err := rt.Instance(ctx, kafig.WithRouter(router))
	if err != nil {
		log.Fatal(err)
	}

	// The script registers a handler...
	_, err = inst.Eval(ctx, `
		host.on("process", async (params) => {
			const res = await host.rpc("fetch", {url: params.url});
			return res.status + " " + res.url;
		});
	`)
	if err != nil {
		log.Fatal(err)
	}

	// ...and Go calls it later.
	result, err := inst.DispatchEvent(ctx, "process",
		json.RawMessage(`{"url": "https://example.com"}`),
		kafig.WithAsync(),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(result))

	_, err = inst.DispatchEvent(ctx, "unknown", nil)
	fmt.Println(errors.Is(err, kafig.ErrNoHandler))
	// Output:
	// "200 https://example.com"
	// true
}

func ExampleRuntime_Compile() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	// Compile once...
	bytecode, err := rt.Compile(ctx, `globalThis.runs = (globalThis.runs || 0) + 1`)
	if err != nil {
		log.Fatal(err)
	}

	// ...and run in any instance of the runtime, without parsing.
	for range 2 {
		inst, err := rt.Instance(ctx)
		if err != nil {
			log.Fatal(err)
		}
		result, err := inst.EvalCompiled(ctx, bytecode)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(result))
		_ = inst.Close(ctx)
	}

	// Bytecode is sealed: changed bytes are refused before they reach the
	// guest.
	bytecode[len(bytecode)/2] ^= 1
	inst, err := rt.Instance(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = inst.EvalCompiled(ctx, bytecode)
	fmt.Println(errors.Is(err, kafig.ErrBadBytecode))
	// Output:
	// 1
	// 1
	// true
}

func ExampleInstance_GetExecutionStats() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)
	inst, err := rt.Instance(ctx, kafig.WithJSMemoryLimit(8<<20))
	if err != nil {
		log.Fatal(err)
	}

	if _, err := inst.Eval(ctx, `let x = 0; for (let i = 0; i < 100000; i++) x += i;`); err != nil {
		log.Fatal(err)
	}
	stats, err := inst.GetExecutionStats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ran opcodes:", stats.Opcodes > 0)
	fmt.Println("heap limit:", stats.HeapLimitBytes)
	fmt.Println("heap in use below it:", stats.HeapBytes > 0 && stats.HeapBytes < stats.HeapLimitBytes)

	if err := inst.ResetExecutionStats(ctx); err != nil {
		log.Fatal(err)
	}
	stats, _ = inst.GetExecutionStats(ctx)
	fmt.Println("after reset:", stats.Opcodes, stats.CPUTimeUs)
	// Output:
	// ran opcodes: true
	// heap limit: 8388608
	// heap in use below it: true
	// after reset: 0 0
}

func ExampleRPCRouter() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	router := kafig.NewRPCRouter().
		// Runs inline: for quick, pure-compute calls (host.rpcSync or host.rpc).
		WithSync("upper", func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
			var s string
			if err := json.Unmarshal(params, &s); err != nil {
				return nil, err
			}
			return json.Marshal(strings.ToUpper(s))
		}).
		// Runs in a goroutine: for I/O (host.rpc only).
		WithAsync("sleep", func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
			select {
			case <-time.After(10 * time.Millisecond):
				return json.RawMessage(`"slept"`), nil
			case <-ctx.Done(): // the eval ended
				return nil, ctx.Err()
			}
		}).
		// Everything else.
		WithFallback(func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
			name, _ := kafig.MethodName(ctx)
			return nil, fmt.Errorf("no method %q here", name)
		})
	inst, err := rt.Instance(ctx, kafig.WithRouter(router))
	if err != nil {
		log.Fatal(err)
	}

	result, err := inst.Eval(ctx, `
		const a = host.rpcSync("upper", "quiet");
		const b = await host.rpc("sleep");
		const c = await host.rpc("missing").catch((e) => e.message);
		let d; try { host.rpcSync("sleep") } catch (e) { d = e.message }
		[a, b, c, d]
	`, kafig.WithAsync())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(result))
	// Output: ["QUIET","slept","no method \"missing\" here","kafig: method sleep is async; use host.rpc"]
}

func ExampleWithInterruptCallback() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	inst, err := rt.Instance(ctx,
		kafig.WithInterruptCallback(func(opcodes, cpuTimeUs uint64) bool {
			return opcodes > 1_000_000 || cpuTimeUs > 5_000_000 // 5 s of CPU
		}),
	)
	if err != nil {
		log.Fatal(err)
	}

	_, err = inst.Eval(ctx, `while (true) {}`)
	var re *kafig.RuntimeError
	if errors.As(err, &re) {
		fmt.Println(re.Code)
	}

	// The figures are cumulative until reset; the instance stays usable.
	_ = inst.ResetExecutionStats(ctx)
	result, _ := inst.Eval(ctx, `"still here"`)
	fmt.Println(string(result))
	// Output:
	// cpu_limit_exceeded
	// "still here"
}

func ExampleWithPromiseRejectionHandler() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	inst, err := rt.Instance(ctx,
		kafig.WithPromiseRejectionHandler(func(err *kafig.JsError) bool {
			fmt.Printf("unhandled rejection: %s: %s\n", err.Name, err.Message)
			return false // true would stop the eval with cpu_limit_exceeded
		}),
	)
	if err != nil {
		log.Fatal(err)
	}

	result, err := inst.Eval(ctx, `
		Promise.reject(new TypeError("nobody listens"));
		await null;
		"went on"
	`, kafig.WithAsync())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(result))
	// Output:
	// unhandled rejection: TypeError: nobody listens
	// "went on"
}

func ExampleJsError() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)
	inst, err := rt.Instance(ctx)
	if err != nil {
		log.Fatal(err)
	}

	for _, src := range []string{`null.foo`, `throw "plain string"`, `while (true) {}`} {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err := inst.Eval(ctx, src, kafig.WithAsync())
		cancel()
		var jsErr *kafig.JsError
		var rtErr *kafig.RuntimeError
		switch {
		case errors.As(err, &jsErr):
			fmt.Printf("JS %s: %s (stack: %v)\n", jsErr.Name, jsErr.Message, jsErr.Stack != nil)
		case errors.As(err, &rtErr):
			fmt.Printf("%s (deadline: %v)\n", rtErr.Code, errors.Is(err, context.DeadlineExceeded))
		}
	}
	// Output:
	// JS TypeError: cannot read property 'foo' of null (stack: true)
	// JS Error: plain string (stack: false)
	// cpu_limit_exceeded (deadline: true)
}

func ExampleWithSourceName() {
	ctx := context.Background()
	rt, err := kafig.New(ctx, wazerobackend.New())
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)
	inst, err := rt.Instance(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer inst.Close(ctx)

	src := "function check(order) {\n  return order.items.length\n}\ncheck({})"
	stack := func(err error) string {
		var jsErr *kafig.JsError
		if errors.As(err, &jsErr) && jsErr.Stack != nil {
			return *jsErr.Stack
		}
		return fmt.Sprint(err)
	}

	// Stacks and SyntaxErrors name the script...
	_, err = inst.Eval(ctx, src, kafig.WithSourceName("rules/discount.js"))
	fmt.Print(stack(err))
	// ...for this call only: without the option it is <eval> again.
	_, err = inst.Eval(ctx, src)
	fmt.Print(stack(err))
	// Bytecode keeps the name it was compiled with.
	bytecode, err := rt.Compile(ctx, src, kafig.WithSourceName("rules/compiled.js"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = inst.EvalCompiled(ctx, bytecode)
	fmt.Print(stack(err))
	_, err = inst.Eval(ctx, "1 +", kafig.WithSourceName("broken.js"))
	fmt.Print(stack(err))
	// Output:
	//     at check (rules/discount.js:2:21)
	//     at <eval> (rules/discount.js:4:6)
	//     at check (<eval>:2:21)
	//     at <eval> (<eval>:4:6)
	//     at check (rules/compiled.js:2:21)
	//     at <eval> (rules/compiled.js:4:6)
	//     at broken.js:1:4
}
