// Command report runs kafig's benchmarks (or reads their output) and writes
// one markdown table of all engines side by side, with ratios, the targets
// of the issues and the cost of the backends' backstops, to RESULTS.md.
//
// From the bench directory:
//
//	go run ./cmd/report                      # -count=5 -benchtime=1s, writes RESULTS.md and results.txt
//	go run ./cmd/report -in results.txt      # table from saved go test -bench output
//	go run ./cmd/report -count=1 -benchtime=1x -o -   # quick look, table on stdout
//
// With several counts each figure is the median. The raw output (-raw) is
// go test's, so benchstat can compare two runs. Everything in RESULTS.md
// after the line "<!-- notes -->" is kept when the file is rewritten.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const notesMarker = "<!-- notes -->"

func main() {
	var (
		in        = flag.String("in", "", "read go test -bench output from this file (- for stdin) instead of running the benchmarks")
		out       = flag.String("o", "RESULTS.md", "write the report here (- for stdout)")
		raw       = flag.String("raw", "results.txt", "save the raw go test output here when running (empty: don't)")
		count     = flag.Int("count", 5, "go test -count")
		benchtime = flag.String("benchtime", "1s", "go test -benchtime")
		bench     = flag.String("bench", ".", "go test -bench")
		extra     = flag.String("args", "", "extra go test flags, space-separated (e.g. -cpuprofile=cpu.out)")
	)
	flag.Parse()
	if err := run(*in, *out, *raw, *count, *benchtime, *bench, *extra); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, out, raw string, count int, benchtime, bench, extra string) error {
	var data []byte
	var err error
	var command string
	load0 := loadavg()
	if in != "" {
		if in == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(in)
		}
		if err != nil {
			return err
		}
		command = "go run ./cmd/report -in " + in
		if c := meta(data, "command"); c != "" {
			command = c
		}
	} else {
		args := []string{"test", "-run=NONE", "-bench=" + bench, "-benchtime=" + benchtime,
			"-count=" + strconv.Itoa(count), "-timeout=0"}
		args = append(args, strings.Fields(extra)...)
		args = append(args, ".")
		command = "cd bench && go " + strings.Join(args, " ")
		fmt.Fprintln(os.Stderr, "report: running", command)
		cmd := exec.Command("go", args...)
		var buf bytes.Buffer
		cmd.Stdout = io.MultiWriter(&buf, os.Stderr)
		cmd.Stderr = os.Stderr
		treeAtRun := tree()
		err := cmd.Run()
		meta := "# command: " + command + "\n# date: " + time.Now().UTC().Format("2006-01-02 15:04 MST") + "\n# tree: " + treeAtRun + "\n# load: before " + load0 + ", after " + loadavg() + "\n"
		data = append([]byte(meta), buf.Bytes()...)
		if raw != "" {
			if werr := os.WriteFile(raw, data, 0o644); werr != nil {
				return werr
			}
		}
		if err != nil {
			return fmt.Errorf("go test: %w", err)
		}
	}
	res := parse(data)
	if len(res) == 0 {
		return fmt.Errorf("no benchmark results in the input")
	}
	var b strings.Builder
	header(&b, data, command)
	table(&b, res, wallClock)
	table(&b, res, cpuTime)
	backstops(&b, res, wallClock)
	backstops(&b, res, cpuTime)
	if out == "-" {
		_, err := os.Stdout.WriteString(b.String())
		return err
	}
	notes := "\n" + notesMarker + "\n\n## Notes\n\n(none yet)\n"
	if old, err := os.ReadFile(out); err == nil {
		if i := bytes.Index(old, []byte(notesMarker)); i >= 0 {
			notes = "\n" + string(old[i:])
		}
	}
	b.WriteString(notes)
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

// ---- parsing ----

// results maps benchmark (e.g. "Eval", "CPU/fib") -> engine -> unit -> values.
type results map[string]map[string]map[string][]float64

func parse(data []byte) results {
	res := results{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the GOMAXPROCS suffix
			}
		}
		j := strings.LastIndexByte(name, '/')
		if j < 0 {
			continue
		}
		bench, engine := name[:j], name[j+1:]
		for k := 2; k+1 < len(f); k += 2 {
			v, err := strconv.ParseFloat(f[k], 64)
			if err != nil {
				break
			}
			if res[bench] == nil {
				res[bench] = map[string]map[string][]float64{}
			}
			if res[bench][engine] == nil {
				res[bench][engine] = map[string][]float64{}
			}
			res[bench][engine][f[k+1]] = append(res[bench][engine][f[k+1]], v)
		}
	}
	return res
}

// get returns the median of a figure, or NaN.
func (r results) get(bench, engine, unit string) float64 {
	vs := r[bench][engine][unit]
	if len(vs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// meta returns the value of a "# key: value" line at the top of saved
// output.
func meta(data []byte, key string) string {
	for _, line := range strings.Split(string(data), "\n") {
		v, ok := strings.CutPrefix(line, "# "+key+": ")
		if ok {
			return strings.TrimSpace(v)
		}
		if !strings.HasPrefix(line, "# ") {
			break
		}
	}
	return ""
}

// ---- the report ----

func header(b *strings.Builder, data []byte, command string) {
	fmt.Fprintf(b, "# kafig benchmarks\n\n")
	fmt.Fprintf(b, "Generated by `bench/cmd/report` (`make bench`); do not edit above the notes marker.\n\n")
	date := meta(data, "date")
	if date == "" {
		date = time.Now().UTC().Format("2006-01-02 15:04 MST")
	}
	fmt.Fprintf(b, "- Date: %s\n", date)
	fmt.Fprintf(b, "- Machine: %d CPUs (nproc), %s, %s/%s\n", runtime.NumCPU(), cpuModel(data), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(b, "- Go: %s\n", goVersion())
	if v := moduleVersions(); v != "" {
		fmt.Fprintf(b, "- Engines: %s\n", v)
	}
	if t := meta(data, "tree"); t != "" {
		fmt.Fprintf(b, "- Tree: %s\n", t)
	}
	if l := meta(data, "load"); l != "" {
		fmt.Fprintf(b, "- Load average (1/5/15 min): %s\n", l)
	}
	fmt.Fprintf(b, "- Command: `%s`\n", command)
	fmt.Fprintf(b, "- Each figure is the median of the runs (`-count`); raw output in `results.txt` (compare runs with benchstat).\n\n")
}

type row struct {
	label, bench, unit string
	kind               string // "time" or "kb"
	targetWazero       float64
	targetWasmtime     float64
}

// Engines, in column order.
const (
	wazero   = "wazero"
	wasmtime = "wasmtime"
	goja     = "goja"
	native   = "native"
)

// metric chooses the figures of a table: wall-clock time (go test's ns/op)
// or the process's CPU time (cpu-ns/op), which a busy machine distorts less.
type metric struct {
	name   string
	prefix string // added to ns/op and ns/call
}

var (
	wallClock = metric{"wall-clock time", ""}
	cpuTime   = metric{"CPU time of the process", "cpu-"}
)

func (m metric) unit(u string) string {
	if strings.HasPrefix(u, "ns/") {
		return m.prefix + u
	}
	return u
}

// instanceRows follows the new-instance row: the same benchmark with
// wasmtime's opt-in pooling allocator, and (CPU table only) the cost of
// closing an instance, which the new-instance row leaves out.
func instanceRows(b *strings.Builder, r results, m metric) {
	pool := r.get("NewInstance", wasmtime+"-pool", m.unit("ns/op"))
	if !math.IsNaN(pool) {
		fmt.Fprintf(b, "| new instance, wasmtime with `WithInstancePool(256)` | | %s | | | | | %s | | | %s |\n",
			format(pool, "time"), ratio(pool, r.get("NewInstance", native, m.unit("ns/op"))), target(pool, 25e3, "time"))
	}
	if m != cpuTime {
		return
	}
	c := func(e string) string { return format(r.get("NewInstance", e, "close-cpu-ns/op"), "time") }
	fmt.Fprintf(b, "| close an instance (not in the rows above) | %s | %s | | | %s | | | | | |\n",
		c(wazero), c(wasmtime), ratio(r.get("NewInstance", wasmtime, "close-cpu-ns/op"), r.get("NewInstance", wazero, "close-cpu-ns/op")))
	if v := r.get("NewInstance", wasmtime+"-pool", "close-cpu-ns/op"); !math.IsNaN(v) {
		fmt.Fprintf(b, "| close an instance, wasmtime with `WithInstancePool(256)` | | %s | | | | | | | | |\n", format(v, "time"))
	}
}

func table(b *strings.Builder, r results, m metric) {
	rows := []row{
		{"new instance", "NewInstance", "ns/op", "time", 150e3, 25e3},
		{"eval `1+1` (warm instance, same source)", "Eval", "ns/op", "time", 3e3, 3e3},
		{"eval `1+1`, fresh source each time", "EvalFresh", "ns/op", "time", 0, 0},
		{"eval mid-size script, same source", "EvalScript", "ns/op", "time", 0, 0},
		{"eval mid-size script, fresh source", "EvalScriptFresh", "ns/op", "time", 0, 0},
		{"`EvalCompiled` script, same bytecode", "EvalCompiled", "ns/op", "time", 0, 0},
		{"`EvalCompiled` script, 256 rotating", "EvalCompiledFresh", "ns/op", "time", 0, 0},
		{"`host.rpcSync` round trip `{a:1}` (native: JSON round trip in JS, no bridge)", "RPCSync", "ns/call", "time", 1.5e3, 2e3},
		{"async `host.rpc` round trip", "RPCAsync", "ns/call", "time", 0, 0},
		{"`DispatchEvent`", "DispatchEvent", "ns/op", "time", 0, 0},
		{"RSS per live idle instance", "Memory", "RSS-KB/instance", "kb", 200, 200},
		{"Go heap per live idle instance", "Memory", "heap-KB/instance", "kb", 100, 0},
	}
	for _, w := range cpuWorkloads(r) {
		rows = append(rows, row{"CPU: " + w, "CPU/" + w, "ns/op", "time", 0, 0})
	}
	if m == cpuTime {
		rows = slices.DeleteFunc(rows, func(rw row) bool { return rw.kind == "kb" })
		fmt.Fprintf(b, "## All engines, %s\n\n", m.name)
		b.WriteString("The same runs, CPU time of the whole process (all threads: engine, goroutines, GC) per op, " +
			"which does not count time spent waiting for a CPU.\n\n")
	} else {
		fmt.Fprintf(b, "## All engines, %s\n\n", m.name)
		b.WriteString("wazero and wasmtime are kafig on each backend, with its backstop on (the default). " +
			"goja: the pure-Go engine with an equivalent bridge. native: QuickJS gcc -O2, same source, timed inside a C harness. " +
			"Targets are from issues 3 (wazero) and 4 (wasmtime); ✅ met, ❌ missed. " +
			"*Same source* repeats one input (a guest compile cache may hit); *fresh* changes it every time (parse or load every time); " +
			"goja and native have no such cache, and native runs the same input in both rows.\n\n")
	}
	b.WriteString("| benchmark | wazero | wasmtime | goja | native | wasmtime/wazero | wazero/native | wasmtime/native | goja/native | target wazero | target wasmtime |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|\n")
	for _, rw := range rows {
		v := func(e string) float64 { return r.get(rw.bench, e, m.unit(rw.unit)) }
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.label,
			format(v(wazero), rw.kind), format(v(wasmtime), rw.kind), format(v(goja), rw.kind), format(v(native), rw.kind),
			ratio(v(wasmtime), v(wazero)), ratio(v(wazero), v(native)), ratio(v(wasmtime), v(native)), ratio(v(goja), v(native)),
			target(v(wazero), rw.targetWazero, rw.kind), target(v(wasmtime), rw.targetWasmtime, rw.kind))
		if rw.bench == "NewInstance" {
			instanceRows(b, r, m)
		}
	}
	ws := cpuWorkloads(r)
	gm := func(e string) float64 { return geomeanRatio(r, m, ws, e, native) }
	fmt.Fprintf(b, "| **CPU geomean vs native** | %s | %s | %s | 1.00x | %s | | | | %s | %s |\n",
		ratioOf(gm(wazero)), ratioOf(gm(wasmtime)), ratioOf(gm(goja)),
		ratioOf(geomeanRatio(r, m, ws, wasmtime, wazero)),
		targetRatio(gm(wazero), 2.5), targetRatio(gm(wasmtime), 1.6))
	b.WriteString("\nThe geomean row gives each engine's geometric mean over the CPU workloads of (engine time / native time); " +
		"its wasmtime/wazero cell is the geomean of wasmtime/wazero.\n\n")
}

func backstops(b *strings.Builder, r results, m metric) {
	var benches []string
	for bench, engines := range r {
		if engines[wazero+"-nobackstop"] != nil || engines[wasmtime+"-nobackstop"] != nil {
			benches = append(benches, bench)
		}
	}
	if len(benches) == 0 {
		return
	}
	sort.Slice(benches, func(i, j int) bool {
		ci, cj := strings.HasPrefix(benches[i], "CPU/"), strings.HasPrefix(benches[j], "CPU/")
		if ci != cj {
			return !ci
		}
		return benches[i] < benches[j]
	})
	fmt.Fprintf(b, "## Backstop cost, %s\n\n", m.name)
	if m == wallClock {
		b.WriteString("Each backend's backstop stops guest code that never calls the host (a builtin that does not poll). " +
			"`-nobackstop` is the same backend with `WithBackstop(false)`; cost = with / without.\n\n")
	}
	b.WriteString("| benchmark | wazero | wazero no backstop | wazero cost | wasmtime | wasmtime no backstop | wasmtime cost |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|\n")
	unitOf := func(bench string) string {
		if bench == "RPCSync" || bench == "RPCAsync" {
			return m.unit("ns/call")
		}
		return m.unit("ns/op")
	}
	var cpu []string
	for _, bench := range benches {
		u := unitOf(bench)
		v := func(e string) float64 { return r.get(bench, e, u) }
		label := bench
		if strings.HasPrefix(bench, "CPU/") {
			cpu = append(cpu, strings.TrimPrefix(bench, "CPU/"))
			label = "CPU: " + strings.TrimPrefix(bench, "CPU/")
		}
		fmt.Fprintf(b, "| %s (%s) | %s | %s | %s | %s | %s | %s |\n", label, u,
			format(v(wazero), "time"), format(v(wazero+"-nobackstop"), "time"), ratio(v(wazero), v(wazero+"-nobackstop")),
			format(v(wasmtime), "time"), format(v(wasmtime+"-nobackstop"), "time"), ratio(v(wasmtime), v(wasmtime+"-nobackstop")))
	}
	if len(cpu) > 0 {
		fmt.Fprintf(b, "| **CPU geomean** | | | %s | | | %s |\n",
			ratioOf(geomeanRatio(r, m, cpu, wazero, wazero+"-nobackstop")),
			ratioOf(geomeanRatio(r, m, cpu, wasmtime, wasmtime+"-nobackstop")))
		fmt.Fprintf(b, "| **CPU geomean vs native, no backstop** | | %s | | | %s | |\n",
			ratioOf(geomeanRatio(r, m, cpu, wazero+"-nobackstop", native)),
			ratioOf(geomeanRatio(r, m, cpu, wasmtime+"-nobackstop", native)))
	}
	b.WriteString("\n")
}

func cpuWorkloads(r results) []string {
	// the order of bench.Workloads, then any others
	order := []string{"fib", "json", "strings", "regex", "sort", "mixed"}
	seen := map[string]bool{}
	var out []string
	for _, w := range order {
		if r["CPU/"+w] != nil {
			out = append(out, w)
			seen[w] = true
		}
	}
	var rest []string
	for bench := range r {
		if w, ok := strings.CutPrefix(bench, "CPU/"); ok && !seen[w] {
			rest = append(rest, w)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// geomeanRatio is the geometric mean over workloads of a/b; NaN if any is
// missing.
func geomeanRatio(r results, m metric, workloads []string, a, b string) float64 {
	if len(workloads) == 0 {
		return math.NaN()
	}
	sum := 0.0
	for _, w := range workloads {
		x, y := r.get("CPU/"+w, a, m.unit("ns/op")), r.get("CPU/"+w, b, m.unit("ns/op"))
		if math.IsNaN(x) || math.IsNaN(y) || x <= 0 || y <= 0 {
			return math.NaN()
		}
		sum += math.Log(x / y)
	}
	return math.Exp(sum / float64(len(workloads)))
}

// ---- formatting ----

func format(v float64, kind string) string {
	if math.IsNaN(v) {
		return "–"
	}
	if kind == "kb" {
		return fmt.Sprintf("%.0f KB", v)
	}
	switch {
	case v < 1e3:
		return fmt.Sprintf("%.0f ns", v)
	case v < 1e6:
		return sig(v/1e3) + " µs"
	case v < 1e9:
		return sig(v/1e6) + " ms"
	}
	return sig(v/1e9) + " s"
}

// sig prints 3 significant digits.
func sig(v float64) string {
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return ""
	}
	return ratioOf(a / b)
}

func ratioOf(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	if x < 0.1 {
		return fmt.Sprintf("%.3fx", x)
	}
	return fmt.Sprintf("%.2fx", x)
}

func target(v, t float64, kind string) string {
	if t == 0 {
		return ""
	}
	s := "≤ " + format(t, kind)
	if math.IsNaN(v) {
		return s + " (not measured)"
	}
	if v <= t {
		return s + " ✅"
	}
	return fmt.Sprintf("%s ❌ (%.1fx)", s, v/t)
}

func targetRatio(v, t float64) string {
	s := fmt.Sprintf("≤ %.1fx", t)
	if math.IsNaN(v) {
		return s + " (not measured)"
	}
	if v <= t {
		return s + " ✅"
	}
	return fmt.Sprintf("%s ❌ (%.2fx)", s, v)
}

// ---- the machine ----

func cpuModel(data []byte) string {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "cpu: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(out))
}

func moduleVersions() string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Version}}",
		"github.com/tetratelabs/wazero", "github.com/bytecodealliance/wasmtime-go/v39", "github.com/dop251/goja").Output()
	if err != nil {
		return ""
	}
	var parts []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts = append(parts, "`"+line+"`")
	}
	return strings.Join(parts, ", ")
}

// tree names the commit measured and the top-level folders with
// uncommitted changes (the benchmarks build the working tree), leaving out
// the report's own outputs, which a previous run may have rewritten.
func tree() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	s := "commit `" + strings.TrimSpace(string(head)) + "`"
	out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", "..").Output()
	if err != nil {
		return s
	}
	var dirs []string
	for _, line := range strings.Split(string(out), "\n") {
		if len(line) < 4 {
			continue
		}
		path := strings.TrimSpace(line[3:])
		if path == "bench/RESULTS.md" || path == "bench/results.txt" {
			continue
		}
		dir, _, _ := strings.Cut(path, "/")
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) > 0 {
		s += " with uncommitted changes in " + strings.Join(dirs, ", ")
	}
	return s
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
