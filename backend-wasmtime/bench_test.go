//go:build cgo

package wasmtimebackend

import (
	"context"
	"testing"

	"github.com/bytecodealliance/wasmtime-go/v39"
	"github.com/stretchr/testify/require"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

func benchInstance(b *testing.B, opts ...Option) backend.Instance {
	m := compileFake(b, opts...)
	imps := [abi.ImportCount]backend.HostFunc{}
	for k := range imps {
		imps[k] = func(ctx context.Context, mem backend.Memory, stack []uint64) { stack[0] = 1 }
	}
	return instantiate(b, m, backend.InstanceConfig{Imports: imps})
}

// One export call: kafig_exchange() -> i32.
func BenchmarkCall(b *testing.B) {
	in := benchInstance(b)
	ctx := context.Background()
	stack := make([]uint64, 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := in.Call(ctx, abi.ExportExchange, stack); err != nil {
			b.Fatal(err)
		}
	}
}

// One export call with three i32 params: kafig_eval(a, b, 0) -> i32.
func BenchmarkCallParams(b *testing.B) {
	in := benchInstance(b)
	ctx := context.Background()
	stack := make([]uint64, 3)
	b.ReportAllocs()
	for b.Loop() {
		stack[0], stack[1], stack[2] = 1, 2, 0
		if err := in.Call(ctx, abi.ExportEval, stack); err != nil {
			b.Fatal(err)
		}
	}
}

// One export call whose context can end: the cost of watching it.
func BenchmarkCallCancelableCtx(b *testing.B) {
	in := benchInstance(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stack := make([]uint64, 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := in.Call(ctx, abi.ExportExchange, stack); err != nil {
			b.Fatal(err)
		}
	}
}

// One host import round trip (guest -> Go -> guest): kafig_rpc_settle(0, n)
// calls interrupt n times; ns/op is per import.
func BenchmarkHostImport(b *testing.B) {
	in := benchInstance(b)
	ctx := context.Background()
	b.ReportAllocs()
	const n = 1000
	stack := make([]uint64, 4)
	calls := 0
	for b.Loop() {
		stack[0], stack[1] = 0, n
		if err := in.Call(ctx, abi.ExportRPCSettle, stack); err != nil {
			b.Fatal(err)
		}
		calls++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(calls*n), "ns/import")
}

// A compute loop with and without the epoch backstop.
func BenchmarkComputeLoop(b *testing.B) {
	for _, bs := range []bool{true, false} {
		name := "backstop"
		if !bs {
			name = "no-backstop"
		}
		b.Run(name, func(b *testing.B) {
			in := benchInstance(b, WithBackstop(bs))
			ctx := context.Background()
			stack := make([]uint64, 3)
			for b.Loop() {
				stack[0] = 10_000_000
				if err := in.Call(ctx, abi.ExportEvalBytecode, stack); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkInstantiate(b *testing.B) {
	m := compileFake(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		in, err := m.Instantiate(ctx, backend.InstanceConfig{})
		if err != nil {
			b.Fatal(err)
		}
		_ = in.Close(ctx)
	}
}

// The same round trips through wasmtime-go's own API (Func.Call and a
// Linker.FuncNew host function), for comparison.
func BenchmarkWasmtimeGo(b *testing.B) {
	engine := wasmtime.NewEngine()
	defer engine.Close()
	mod, err := wasmtime.NewModule(engine, fakeWasm)
	require.NoError(b, err)
	defer mod.Close()
	linker := wasmtime.NewLinker(engine)
	defer linker.Close()
	require.NoError(b, linker.DefineWasi())
	for k := range abi.ImportCount {
		imp := abi.Import(k)
		s := imp.Signature()
		var params, results []*wasmtime.ValType
		for _, t := range s.Params {
			params = append(params, valType(t))
		}
		for _, t := range s.Results {
			results = append(results, valType(t))
		}
		ft := wasmtime.NewFuncType(params, results)
		require.NoError(b, linker.FuncNew(abi.ImportModule, imp.Name(), ft, func(c *wasmtime.Caller, args []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
			out := make([]wasmtime.Val, len(results))
			for i, r := range results {
				if r.Kind() == wasmtime.KindI64 {
					out[i] = wasmtime.ValI64(1)
				} else {
					out[i] = wasmtime.ValI32(1)
				}
			}
			return out, nil
		}))
	}
	store := wasmtime.NewStore(engine)
	defer store.Close()
	store.SetWasi(wasmtime.NewWasiConfig())
	inst, err := linker.Instantiate(store, mod)
	require.NoError(b, err)
	exchange := inst.GetFunc(store, abi.ExportExchange.Name())
	settle := inst.GetFunc(store, abi.ExportRPCSettle.Name())

	b.Run("Call", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := exchange.Call(store); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("HostImport", func(b *testing.B) {
		b.ReportAllocs()
		const n = 1000
		calls := 0
		for b.Loop() {
			if _, err := settle.Call(store, int32(0), int32(n), int32(0), int32(0)); err != nil {
				b.Fatal(err)
			}
			calls++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(calls*n), "ns/import")
	})
}

func valType(t abi.ValType) *wasmtime.ValType {
	if t == abi.I64 {
		return wasmtime.NewValType(wasmtime.KindI64)
	}
	return wasmtime.NewValType(wasmtime.KindI32)
}

// One export call under a fresh cancelable context each time (includes
// context.WithCancel itself): the worst case of context watching.
func BenchmarkCallFreshCtx(b *testing.B) {
	in := benchInstance(b)
	stack := make([]uint64, 1)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		if err := in.Call(ctx, abi.ExportExchange, stack); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}
