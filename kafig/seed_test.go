package kafig_test

// The snippets of the seed README, as written there, with only the backend
// argument added to kafig.New. They run against the fake backend, which
// does not understand JavaScript: this test is about the API's shape.

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/kafig"
)

func TestSeedREADMESnippets(t *testing.T) {
	ctx := context.Background()
	backend := kafig.NewFakeBackend()

	rt, err := kafig.New(ctx, backend,
		kafig.WithPrelude(`ok 1`),
	)
	require.NoError(t, err)
	defer rt.Close(ctx)
	router := kafig.NewRPCRouter().
		WithAsync("fetch", func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
			// runs in a goroutine, suitable for I/O
			var req struct{ URL string }
			json.Unmarshal(params, &req)
			resp, _ := http.Get(req.URL)
			_ = resp
			// ...
			var result any
			return json.Marshal(result)
		}).
		WithSync("now", func(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
			// runs inline, no goroutine. Suitable for fast, pure-compute calls
			return json.Marshal(map[string]int64{"ts": time.Now().Unix()})
		})
	inst, err := rt.Instance(ctx,
		kafig.WithRouter(router),
		kafig.WithInterruptCallback(func(opcodes, cpuTimeUs uint64) bool {
			return cpuTimeUs > 5_000_000 // 5 second CPU limit
		}),
		kafig.WithPromiseRejectionHandler(func(err *kafig.JsError) bool {
			log.Printf("unhandled rejection: %s", err)
			return false // return true to interrupt execution
		}),
		kafig.WithJSMemoryLimit(16*1024*1024), // 16 MB QuickJS heap
		kafig.WithWASMMemoryLimitPages(512),   // 32 MB WASM linear memory
	)
	require.NoError(t, err)
	defer inst.Close(ctx)

	// Synchronous (no promises, no RPC)
	result, err := inst.Eval(ctx, `1 + 2`)
	_, _ = result, err
	// Async (enables top-level await, promise resolution and RPC processing)
	result, err = inst.Eval(ctx, `
const data = await host.rpc("fetch", {url: "https://api.example.com"});
data
`, kafig.WithAsync())
	_, _ = result, err

	inst.Eval(ctx, `
host.on("process", async (params) => {
const result = await host.rpc("fetch", {url: params.url});
return result;
});
`, kafig.WithAsync())
	// Later, Go dispatches events:
	result, err = inst.DispatchEvent(ctx, "process",
		json.RawMessage(`{"url": "https://example.com"}`),
		kafig.WithAsync(),
	)
	_, _ = result, err

	bytecode, err := rt.Compile(ctx, `42`)
	require.NoError(t, err)
	// Reuse across instances, skips parsing
	result, err = inst.EvalCompiled(ctx, bytecode, kafig.WithAsync())
	_, _ = result, err

	stats, _ := inst.GetExecutionStats(ctx)
	fmt.Printf("opcodes: %d, cpu: %d us\n", stats.Opcodes, stats.CPUTimeUs)
	inst.ResetExecutionStats(ctx)

	_, err = inst.Eval(ctx, `null.foo`, kafig.WithAsync())
	if err != nil {
		switch e := err.(type) {
		case *kafig.JsError:
			fmt.Printf("JS %s: %s\n", e.Name, e.Message) // JS TypeError: cannot read property 'foo' of null
			if e.Stack != nil {
				fmt.Println(*e.Stack)
			}
		case *kafig.RuntimeError:
			fmt.Printf("%s: %s\n", e.Code, e.Message) // cpu_limit_exceeded: interrupted
		}
	}

	inst2, err := rt.Instance(ctx,
		kafig.WithRouter(router),
		kafig.WithPromiseRejectionHandler(func(err *kafig.JsError) bool {
			log.Printf("unhandled rejection: %s: %s", err.Name, err.Message)
			return false // continue execution
		}),
	)
	require.NoError(t, err)
	defer inst2.Close(ctx)

	inst3, err := rt.Instance(ctx,
		kafig.WithRouter(router),
		// QuickJS heap memory limit (default: 32 MB).
		// Controls how much memory JS objects, strings, and arrays can use.
		kafig.WithJSMemoryLimit(8*1024*1024), // 8 MB
		// WASM linear memory limit in pages (1 page = 64 KB, default: unlimited).
		// Caps total memory including QuickJS heap, Rust allocator, and stack.
		kafig.WithWASMMemoryLimitPages(256), // 16 MB
		// CPU time limit via interrupt callback.
		kafig.WithInterruptCallback(func(opcodes, cpuTimeUs uint64) bool {
			return cpuTimeUs > 1_000_000 // 1 second
		}),
	)
	require.NoError(t, err)
	defer inst3.Close(ctx)
}
