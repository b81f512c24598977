package bench

import (
	"embed"
	"strings"
)

//go:embed js/*.js
var jsFiles embed.FS

// Workload is a CPU-bound JavaScript program that every engine runs from the
// same source. Each is one expression (an IIFE) that returns a small
// checksum, so it can be evaluated again and again in one global scope and
// engines can be checked to agree.
type Workload struct {
	Name   string // benchmark name: BenchmarkCPU/<Name>/<engine>
	Source string
	What   string
}

// Workloads are the CPU-bound workloads, each sized to take about 30 to
// 60 ms per run on native QuickJS (gcc -O2) on a 2-core VM.
var Workloads = []Workload{
	{"fib", source("fib"), "recursion: naive fib(27), ~630k calls"},
	{"json", source("json"), "JSON.stringify + JSON.parse of a 150-record document (~50 KB), 15 times"},
	{"strings", source("strings"), "building, splitting, joining, replacing, case mapping, indexOf"},
	{"regex", source("regex"), "seven regexps (exec loop, match, replace, split, test) over a 600-line corpus, twice"},
	{"sort", source("sort"), "sort 20k numbers and 8k objects with comparators, 8k strings by default order"},
	{"mixed", source("mixed"), "classes, Map/Set, closures, for-of, spread, reduce: a small ledger"},
}

// Script is a mid-size script (a small library of functions and one call
// of them) for the Eval versus EvalCompiled comparison: parsing dominates.
var Script = source("script")

// WorkloadNames returns the workload names, in table order.
func WorkloadNames() []string {
	names := make([]string, len(Workloads))
	for i, w := range Workloads {
		names[i] = w.Name
	}
	return names
}

func source(name string) string {
	b, err := jsFiles.ReadFile("js/" + name + ".js")
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(b))
}
