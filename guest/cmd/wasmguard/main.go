// Command wasmguard runs package guest/wasmguard over a module: the last
// step of guest/build.sh (-stop-global= -func-names-only: merge the data
// segments, keep the function names, add no guard; the backends add theirs
// at compile time), and a way to look at a guarded guest.
//
//	go run ./cmd/wasmguard [-stop-global kafig_stop | -stop-word kafig_stop_word] [-yield env.interrupt] [-yield-every 65536] [-skip f,g] [-func-names-only] [-max-gap 1024] in.wasm out.wasm
//
// A guard must be added after wasm-opt, which must never see it: wasm-opt
// could move or drop a load it believes nothing else writes.
//
// It uses the standard library only and lives in the guest module, because
// `make guest-check` builds from a copy of guest/ alone.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/kafig-dev/kafig/guest/wasmguard"
)

func main() {
	stop := flag.String("stop-global", wasmguard.DefaultStopGlobal, "export name of the stop global (empty: no guard)")
	yield := flag.String("yield", "env.interrupt", "MODULE.NAME of the (i64) -> i32 import the guard calls every -yield-every loop iterations (empty: no yield)")
	every := flag.Uint("yield-every", wasmguard.DefaultYieldEvery, "loop iterations between two yields")
	word := flag.String("stop-word", "", "export name of the global holding the address of the stop word (instead of -stop-global; no -yield)")
	skip := flag.String("skip", "", "comma-separated names of functions whose loops get no guard")
	names := flag.Bool("func-names-only", false, "keep only the function names of the name section")
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
	opts := wasmguard.Options{StopGlobal: *stop, StopWord: *word, FuncNamesOnly: *names, MergeData: *gap >= 0}
	if *word != "" {
		opts.StopGlobal = ""
	}
	if *skip != "" {
		opts.Skip = strings.Split(*skip, ",")
	}
	if *gap > 0 {
		opts.MaxGap = uint32(*gap)
	}
	if *yield != "" && opts.StopGlobal != "" {
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
	fmt.Fprintf(os.Stderr, "wasmguard: %d functions", rep.Functions)
	switch {
	case opts.StopWord != "":
		fmt.Fprintf(os.Stderr, ", %d loops guarded by the word at %#x (%q)", rep.Loops, rep.StopWordAddr, opts.StopWord)
	case opts.StopGlobal != "":
		fmt.Fprintf(os.Stderr, ", %d loops guarded by global %d (%q)", rep.Loops, rep.GlobalIndex, opts.StopGlobal)
	default:
		fmt.Fprint(os.Stderr, ", no guard")
	}
	if rep.SkippedLoops > 0 {
		fmt.Fprintf(os.Stderr, ", %d loops skipped", rep.SkippedLoops)
	}
	if y := opts.Yield; y != nil {
		fmt.Fprintf(os.Stderr, ", yield %s.%s every %d iterations from function %d", y.Module, y.Name, y.Every, rep.SlowFunc)
	}
	fmt.Fprintf(os.Stderr, "; data segments %d -> %d", rep.SegmentsIn, rep.SegmentsOut)
	if rep.MergeSkipped != "" {
		fmt.Fprintf(os.Stderr, " (not merged: %s)", rep.MergeSkipped)
	}
	fmt.Fprintf(os.Stderr, "; %d -> %d bytes\n", len(wasm), len(res))
	return nil
}
