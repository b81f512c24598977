// Command wasmguard is the last step of guest/build.sh: it adds the stop
// guard to the guest and merges its data segments (see package
// guest/internal/wasmguard for what and why).
//
//	go run ./cmd/wasmguard [-stop-global kafig_stop] [-yield env.interrupt] [-yield-every 65536] [-max-gap 1024] in.wasm out.wasm
//
// It runs after wasm-opt, which must never see the guard: wasm-opt could
// move or drop a load of a global it believes nothing else writes.
//
// It uses the standard library only and lives in the guest module, because
// `make guest-check` builds from a copy of guest/ alone.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/kafig-dev/kafig/guest/internal/wasmguard"
)

func main() {
	stop := flag.String("stop-global", wasmguard.DefaultStopGlobal, "export name of the stop global (empty: no guard)")
	yield := flag.String("yield", "env.interrupt", "MODULE.NAME of the (i64) -> i32 import the guard calls every -yield-every loop iterations (empty: no yield)")
	every := flag.Uint("yield-every", wasmguard.DefaultYieldEvery, "loop iterations between two yields")
	gap := flag.Int("max-gap", wasmguard.DefaultMaxGap, "merge active data segments at most this many bytes apart (-1: do not merge)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: wasmguard [flags] in.wasm out.wasm")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	opts := wasmguard.Options{StopGlobal: *stop, MergeData: *gap >= 0}
	if *gap > 0 {
		opts.MaxGap = uint32(*gap)
	}
	if *yield != "" {
		module, name, ok := strings.Cut(*yield, ".")
		if !ok || *every == 0 || *every > 1<<31-1 {
			flag.Usage()
			os.Exit(2)
		}
		opts.Yield = &wasmguard.Yield{Module: module, Name: name, Every: uint32(*every)}
	}
	if err := run(flag.Arg(0), flag.Arg(1), opts); err != nil {
		fmt.Fprintln(os.Stderr, "wasmguard:", err)
		os.Exit(1)
	}
}

func run(in, out string, opts wasmguard.Options) error {
	wasm, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	res, rep, err := wasmguard.Apply(wasm, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if err := os.WriteFile(out, res, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wasmguard: %d functions, %d loops guarded (global %d %q", rep.Functions, rep.Loops, rep.GlobalIndex, opts.StopGlobal)
	if y := opts.Yield; y != nil {
		fmt.Fprintf(os.Stderr, ", yield %s.%s every %d iterations from function %d", y.Module, y.Name, y.Every, rep.SlowFunc)
	}
	fmt.Fprintf(os.Stderr, "); data segments %d -> %d", rep.SegmentsIn, rep.SegmentsOut)
	if rep.MergeSkipped != "" {
		fmt.Fprintf(os.Stderr, " (not merged: %s)", rep.MergeSkipped)
	}
	fmt.Fprintf(os.Stderr, "; %d -> %d bytes\n", len(wasm), len(res))
	return nil
}
