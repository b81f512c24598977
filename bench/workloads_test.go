package bench

import (
	"context"
	"testing"
)

// TestWorkloadsAgree runs every workload, Script and the RPC scripts once
// on every engine and requires the same result everywhere: the engines do
// the same work.
func TestWorkloadsAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every workload on every engine")
	}
	ctx := context.Background()
	cases := append([]Workload{{Name: "script", Source: Script}}, Workloads...)
	for _, w := range cases {
		t.Run(w.Name, func(t *testing.T) {
			results := map[string]string{}
			for _, e := range enginesFor(true) {
				in := warm(t, e)
				res, err := in.Eval(ctx, w.Source)
				if err != nil {
					t.Fatalf("%s: %v", e.Name(), err)
				}
				results[e.Name()] = string(res)
			}
			t.Run(nativeName, func(t *testing.T) {
				_, res, err := native(t).Eval(w.Source, 1)
				if err != nil {
					t.Fatal(err)
				}
				results[nativeName] = res
			})
			want := results[wazeroName]
			for name, got := range results {
				if got != want {
					t.Errorf("%s: %s, wazero: %s", name, got, want)
				}
			}
			t.Logf("%s", want)
		})
	}
}

// TestBridges checks each engine's host bridge: rpcSync, async rpc,
// compiled code and events.
func TestBridges(t *testing.T) {
	ctx := context.Background()
	for _, e := range enginesFor(false) {
		t.Run(e.Name(), func(t *testing.T) {
			in := warm(t, e)
			if res, err := in.Eval(ctx, rpcSyncSrc); err != nil || string(res) != "1000" {
				t.Fatalf("rpcSync: %s, %v", res, err)
			}
			if res, err := in.EvalAsync(ctx, rpcAsyncSrc); err != nil || string(res) != "200" {
				t.Fatalf("rpc: %s, %v", res, err)
			}
			code, err := e.Compile(ctx, "6*7")
			if err != nil {
				t.Fatal(err)
			}
			if res, err := in.EvalCompiled(ctx, code); err != nil || string(res) != "42" {
				t.Fatalf("compiled: %s, %v", res, err)
			}
			if _, err := in.Eval(ctx, `host.on("tick", function (p) { return p.a + 1; }); undefined`); err != nil {
				t.Fatal(err)
			}
			if res, err := in.Dispatch(ctx, "tick", []byte(`{"a":1}`)); err != nil || string(res) != "2" {
				t.Fatalf("dispatch: %s, %v", res, err)
			}
		})
	}
}
