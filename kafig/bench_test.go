package kafig

import (
	"context"
	"testing"
)

// BenchmarkEvalOverhead measures kafig's own cost per sync eval (the fake
// guest does almost nothing).
func BenchmarkEvalOverhead(b *testing.B) {
	ctx := context.Background()
	rt, err := New(ctx, newFake(), withWASM(fakeWASM))
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close(ctx)
	in, err := rt.Instance(ctx, WithRouter(NewRPCRouter().WithSync("echo", echo)))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("eval", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := in.Eval(ctx, "ok 2"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rpcsync", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := in.Eval(ctx, `rpcsync echo {"a":1}`); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("async-rpc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := in.Eval(ctx, `rpc echo 1`, WithAsync()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
