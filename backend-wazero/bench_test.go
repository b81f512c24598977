package wazerobackend

import (
	"context"
	"testing"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// BenchmarkCall measures a Call round trip on the fake guest:
//   - trivial: an export with an empty body (kafig_free; no import);
//   - interrupt: an export that calls one host import.
//
// with and without the backstop, with a context that can end (cancel) or not
// (background).
func BenchmarkCall(b *testing.B) {
	for _, backstop := range []bool{true, false} {
		name := "backstop"
		if !backstop {
			name = "no-backstop"
		}
		b.Run(name, func(b *testing.B) {
			mod := compileFake(b, WithBackstop(backstop))
			h := &host{t: b}
			h.interrupt = func(context.Context, backend.Memory, int64) int32 { return 1 }
			inst := instantiate(b, mod, h, 0)
			cancelable, cancel := context.WithCancel(context.Background())
			defer cancel()
			for _, c := range []struct {
				name string
				ctx  context.Context
			}{{"background", context.Background()}, {"cancel", cancelable}} {
				for _, fn := range []struct {
					name string
					e    abi.Export
				}{{"trivial", abi.ExportFree}, {"interrupt", abi.ExportEval}} {
					b.Run(fn.name+"/"+c.name, func(b *testing.B) {
						stack := make([]uint64, 3)
						b.ReportAllocs()
						for b.Loop() {
							stack[0] = 0
							if err := inst.Call(c.ctx, fn.e, stack); err != nil {
								b.Fatal(err)
							}
						}
					})
				}
			}
		})
	}
}
