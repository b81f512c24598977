package kafig

// A fake Backend that simulates the guest at the ABI level, with fault
// injection, in the spirit of database/sql's fakedb_test.go. Its "scripts"
// are commands, one per eval (see fakeInstance.run).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kafig-dev/kafig/abi"
	"github.com/kafig-dev/kafig/kafig/backend"
)

// fakeWASM is the smallest module with a memory of 2 pages.
const fakeWASM = "\x00asm\x01\x00\x00\x00" + "\x05\x03\x01\x00\x02"

const (
	fakeX       = 1024
	fakeScratch = fakeX + abi.ExchangeSize + 64
	fakeHeap    = fakeScratch + 16384
	fakePages   = 2
)

func withWASM(w string) Option {
	return runtimeOptionFunc(func(c *runtimeConfig) { c.wasm = w })
}

type fakeBackend struct {
	abiVersion     uint32
	dataCap        uint32
	compileErr     error
	instantiateErr error
	rejectLimits   bool
	// instantiating, when set, receives each Instantiate's release channel
	// and Instantiate waits for it to close.
	instantiating chan chan struct{}

	mu        sync.Mutex
	instances []*fakeInstance
	modules   atomic.Int32 // open modules
	stops     atomic.Int32
}

func newFake() *fakeBackend {
	return &fakeBackend{abiVersion: abi.Version, dataCap: abi.ExchangeDataSize}
}

func (b *fakeBackend) Name() string { return "fake" }

func (b *fakeBackend) Compile(_ context.Context, wasm []byte) (backend.Module, error) {
	if b.compileErr != nil {
		return nil, b.compileErr
	}
	if len(wasm) < 4 || string(wasm[:4]) != "\x00asm" {
		return nil, backend.ErrBadModule
	}
	b.modules.Add(1)
	return &fakeModule{b: b}, nil
}

func (b *fakeBackend) live() []*fakeInstance {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*fakeInstance
	for _, fi := range b.instances {
		if !fi.closed.Load() {
			out = append(out, fi)
		}
	}
	return out
}

func (b *fakeBackend) last() *fakeInstance {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.instances[len(b.instances)-1]
}

type fakeModule struct {
	b      *fakeBackend
	closed atomic.Bool
}

func (m *fakeModule) Instantiate(_ context.Context, cfg backend.InstanceConfig) (backend.Instance, error) {
	if m.b.instantiateErr != nil {
		return nil, m.b.instantiateErr
	}
	if m.b.instantiating != nil {
		release := make(chan struct{})
		m.b.instantiating <- release
		<-release
	}
	if m.closed.Load() {
		return nil, errors.New("fake: instantiate on a closed module")
	}
	maxPages := cfg.MaxMemoryPages
	if maxPages == 0 {
		maxPages = 65536
	}
	fi := &fakeInstance{
		b:        m.b,
		cfg:      cfg,
		mem:      &fakeMemory{b: make([]byte, fakePages*abi.PageSize), max: maxPages},
		brk:      fakeHeap,
		stopCh:   make(chan struct{}),
		handlers: map[string]string{},
	}
	binary.LittleEndian.PutUint32(fi.mem.b[fakeX+abi.ExchDataCap:], m.b.dataCap)
	m.b.mu.Lock()
	m.b.instances = append(m.b.instances, fi)
	m.b.mu.Unlock()
	return fi, nil
}

func (m *fakeModule) Close(context.Context) error {
	if !m.closed.Swap(true) {
		m.b.modules.Add(-1)
	}
	return nil
}

type fakeMemory struct {
	b   []byte
	max uint32
}

func (m *fakeMemory) Read(ptr, n uint32) ([]byte, bool) {
	if uint64(ptr)+uint64(n) > uint64(len(m.b)) {
		return nil, false
	}
	return m.b[ptr : ptr+n : ptr+n], true
}

func (m *fakeMemory) Write(ptr uint32, b []byte) bool {
	if uint64(ptr)+uint64(len(b)) > uint64(len(m.b)) {
		return false
	}
	copy(m.b[ptr:], b)
	return true
}

func (m *fakeMemory) Size() uint32 { return uint32(len(m.b)) }

func (m *fakeMemory) grow(to uint64) bool {
	pages := (to + abi.PageSize - 1) / abi.PageSize
	if pages > uint64(m.max) {
		return false
	}
	if uint64(len(m.b)) < pages*abi.PageSize {
		nb := make([]byte, pages*abi.PageSize)
		copy(nb, m.b)
		m.b = nb
	}
	return true
}

type fakeOp struct {
	ids     []uint32
	results map[uint32]string
	refused map[uint32]bool
}

type fakeInstance struct {
	b        *fakeBackend
	cfg      backend.InstanceConfig
	mem      *fakeMemory
	brk      uint32
	dead     atomic.Bool
	closed   atomic.Bool
	stopCh   chan struct{}
	stopOnce sync.Once
	handlers map[string]string
	limits   [2]uint64
	op       *fakeOp
	nextID   uint32
	calls    atomic.Int64
	aborts   atomic.Int32
	allocs   atomic.Int32
	frees    atomic.Int32
}

func (fi *fakeInstance) Memory() backend.Memory { return fi.mem }

func (fi *fakeInstance) Stop() {
	fi.b.stops.Add(1)
	fi.stopOnce.Do(func() { close(fi.stopCh) })
	fi.dead.Store(true)
}

func (fi *fakeInstance) Close(context.Context) error {
	fi.closed.Store(true)
	fi.dead.Store(true)
	return nil
}

func (fi *fakeInstance) stoppedNow() bool {
	select {
	case <-fi.stopCh:
		return true
	default:
		return false
	}
}

func (fi *fakeInstance) Call(ctx context.Context, fn abi.Export, stack []uint64) error {
	if fi.dead.Load() || fi.stoppedNow() {
		fi.dead.Store(true)
		return backend.ErrDead
	}
	fi.calls.Add(1)
	err := fi.call(ctx, fn, stack)
	if err == nil && fi.stoppedNow() {
		err = backend.ErrStopped
	}
	if err != nil {
		fi.dead.Store(true)
	}
	return err
}

var errTrap = errors.New("fake: unreachable executed")

func (fi *fakeInstance) call(_ context.Context, fn abi.Export, stack []uint64) error {
	switch fn {
	case abi.ExportABIVersion:
		stack[0] = uint64(fi.b.abiVersion)
	case abi.ExportExchange:
		stack[0] = fakeX
	case abi.ExportAlloc:
		fi.allocs.Add(1)
		stack[0] = uint64(fi.alloc(uint32(stack[0])))
	case abi.ExportFree:
		fi.frees.Add(1)
	case abi.ExportSetLimits:
		fi.limits = [2]uint64{stack[0], stack[1]}
		if fi.b.rejectLimits {
			return fi.finish(stack, abi.StatusBadInput, "limits refused")
		}
		fi.putU64(abi.ExchHeapLimit, stack[0])
		fi.putU64(abi.ExchHeapUsed, 1000)
		stack[0] = uint64(abi.StatusOK)
	case abi.ExportEval:
		src, ok := fi.input(uint32(stack[0]), uint32(stack[1]))
		if !ok {
			return fi.finish(stack, abi.StatusBadInput, "source outside memory")
		}
		return fi.run(stack, string(src), stack[2]&abi.FlagAsync != 0, "null")
	case abi.ExportCompile:
		src, ok := fi.input(uint32(stack[0]), uint32(stack[1]))
		if !ok {
			return fi.finish(stack, abi.StatusBadInput, "source outside memory")
		}
		if strings.HasPrefix(string(src), "syntax") {
			return fi.finish(stack, abi.StatusJSError, `{"name":"SyntaxError","message":"unexpected token"}`)
		}
		return fi.finish(stack, abi.StatusOK, "BC1:"+string(src))
	case abi.ExportEvalBytecode:
		bc, ok := fi.input(uint32(stack[0]), uint32(stack[1]))
		if !ok || !strings.HasPrefix(string(bc), "BC1:") {
			return fi.finish(stack, abi.StatusRuntimeError, "unreadable bytecode")
		}
		return fi.run(stack, string(bc[4:]), stack[2]&abi.FlagAsync != 0, "null")
	case abi.ExportDispatch:
		ptr, nameLen, paramsLen := uint32(stack[0]), uint32(stack[1]), uint32(stack[2])
		all, ok1 := fi.input(ptr, nameLen+paramsLen)
		ok2 := ok1
		var name, params []byte
		if ok1 {
			name, params = all[:nameLen], all[nameLen:]
		}
		if !ok1 || !ok2 {
			return fi.finish(stack, abi.StatusBadInput, "range outside memory")
		}
		script, found := fi.handlers[string(name)]
		if !found {
			stack[0] = uint64(abi.StatusNoHandler)
			return nil
		}
		return fi.run(stack, script, stack[3]&abi.FlagAsync != 0, string(params))
	case abi.ExportRPCSettle:
		id, ptr, n, isErr := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), stack[3]
		data, ok := fi.input(ptr, n)
		if !ok || fi.op == nil {
			return fi.finish(stack, abi.StatusRuntimeError, "bad settle")
		}
		if isErr != 0 {
			fi.op.results[id] = `{"err":` + quote(string(data)) + `}`
		} else {
			fi.op.results[id] = `{"ok":` + string(data) + `}`
		}
		return fi.progress(stack)
	case abi.ExportAbort:
		fi.aborts.Add(1)
		fi.op = nil
		fi.putU32(abi.ExchPending, 0)
	default:
		return fmt.Errorf("fake: no export %d", fn)
	}
	return nil
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// input checks an input range as the real guest does (it writes a NUL
// after it) and refuses one that would overflow the data area.
func (fi *fakeInstance) input(ptr, n uint32) ([]byte, bool) {
	if ptr == 0 {
		return nil, false
	}
	data := uint32(fakeX + abi.ExchHeaderSize)
	if ptr >= data && ptr < data+abi.ExchangeDataSize && uint64(ptr)+uint64(n)+1 > uint64(data)+abi.ExchangeDataSize {
		return nil, false
	}
	b, ok := fi.mem.Read(ptr, n+1)
	if !ok {
		return nil, false
	}
	b[n] = 0
	return b[:n], true
}

func (fi *fakeInstance) alloc(n uint32) uint32 {
	p := (fi.brk + 7) &^ 7
	end := uint64(p) + uint64(n)
	if !fi.mem.grow(end) {
		return 0
	}
	fi.brk = uint32(end)
	return p
}

func (fi *fakeInstance) putU32(off uint32, v uint32) {
	binary.LittleEndian.PutUint32(fi.mem.b[fakeX+off:], v)
}

func (fi *fakeInstance) putU64(off uint32, v uint64) {
	binary.LittleEndian.PutUint64(fi.mem.b[fakeX+off:], v)
}

func (fi *fakeInstance) u64(off uint32) uint64 {
	return binary.LittleEndian.Uint64(fi.mem.b[fakeX+off:])
}

// finish sets the status and a result, in the data area or (when long) in
// a guest buffer.
func (fi *fakeInstance) finish(stack []uint64, st abi.Status, result string) error {
	p := uint32(fakeX + abi.ExchHeaderSize)
	if len(result) > abi.ExchangeDataSize {
		if p = fi.alloc(uint32(len(result))); p == 0 {
			return fi.finish(stack, abi.StatusMemoryLimit, "out of memory")
		}
	}
	copy(fi.mem.b[p:], result)
	fi.setResult(p, uint32(len(result)))
	stack[0] = uint64(st)
	return nil
}

func (fi *fakeInstance) setResult(p, n uint32) {
	fi.putU32(abi.ExchResultPtr, p)
	fi.putU32(abi.ExchResultLen, n)
}

// poll calls the interrupt import as the guest does every 10,000 opcodes.
func (fi *fakeInstance) poll() bool {
	ops := fi.u64(abi.ExchOpcodes) + abi.InterruptInterval
	fi.putU64(abi.ExchOpcodes, ops)
	s := []uint64{ops}
	fi.cfg.Imports[abi.ImportInterrupt](context.Background(), fi.mem, s)
	return uint32(s[0]) != 0
}

// putStr writes s in the scratch area at off and returns its pointer.
func (fi *fakeInstance) putStr(off uint32, s string) uint32 {
	copy(fi.mem.b[fakeScratch+off:], s)
	return fakeScratch + off
}

// run executes a fake script:
//
//	ok JSON             result JSON
//	undefined           result null (kafig runs it after a prelude)
//	params              result: the dispatch params
//	throw NAME MSG      a JS exception
//	status N MSG        status N with message MSG
//	loop                poll every 200µs until told to stop
//	spin                never poll; wait for Stop (10 s at most)
//	sleep MS            never poll for MS ms, then finish ok
//	rpcsync M P         call rpc_sync(M, P); result {"ok":..} or throw
//	rpc M P [M P...]    call rpc_async for each; result: array of outcomes
//	unsettled M P       call rpc_async and finish ok at once
//	never               pending with no RPC
//	trap                trap
//	garbage             ok with a result range outside memory
//	badjson             ok with invalid JSON
//	reject DOC          report an unhandled rejection
//	on NAME SCRIPT      register a host.on handler
//	big N               ok with a JSON string of N bytes
//	len ...             ok with the source's length
//	heap N              set the heap in use to N
//	grow PAGES          grow memory
func (fi *fakeInstance) run(stack []uint64, src string, async bool, params string) error {
	src = strings.TrimSuffix(src, "\n;undefined") // what kafig appends to a prelude
	cmd, rest, _ := strings.Cut(src, " ")
	switch cmd {
	case "ok":
		return fi.finish(stack, abi.StatusOK, rest)
	case "undefined":
		return fi.finish(stack, abi.StatusOK, "null")
	case "params":
		return fi.finish(stack, abi.StatusOK, params)
	case "throw":
		name, msg, _ := strings.Cut(rest, " ")
		return fi.finish(stack, abi.StatusJSError, `{"name":`+quote(name)+`,"message":`+quote(msg)+`,"stack":"at <eval>"}`)
	case "status":
		n, msg, _ := strings.Cut(rest, " ")
		v, _ := strconv.Atoi(n)
		return fi.finish(stack, abi.Status(v), msg)
	case "loop":
		for !fi.poll() {
			if fi.stoppedNow() {
				return backend.ErrStopped
			}
			time.Sleep(200 * time.Microsecond)
		}
		return fi.finish(stack, abi.StatusCPULimit, "interrupted")
	case "spin":
		select {
		case <-fi.stopCh:
			return backend.ErrStopped
		case <-time.After(10 * time.Second):
			return fi.finish(stack, abi.StatusOK, `"spun out"`)
		}
	case "sleep":
		ms, _ := strconv.Atoi(rest)
		select {
		case <-fi.stopCh:
			return backend.ErrStopped
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return fi.finish(stack, abi.StatusOK, `"slept"`)
		}
	case "rpcsync":
		m, p, _ := strings.Cut(rest, " ")
		s := []uint64{uint64(fi.putStr(0, m)), uint64(len(m)), uint64(fi.putStr(1024, p)), uint64(len(p))}
		fi.cfg.Imports[abi.ImportRPCSync](context.Background(), fi.mem, s)
		st, n := uint32(s[0]>>32), uint32(s[0])
		var reply []byte
		if n < abi.ExchangeDataSize {
			reply = append(reply, fi.mem.b[fakeX+abi.ExchHeaderSize:][:n]...)
		} else {
			dst := fi.alloc(n)
			if dst == 0 {
				return fi.finish(stack, abi.StatusMemoryLimit, "out of memory")
			}
			fi.cfg.Imports[abi.ImportRPCSyncTake](context.Background(), fi.mem, []uint64{uint64(dst), uint64(n)})
			reply = append(reply, fi.mem.b[dst:][:n]...)
		}
		if fi.stoppedNow() {
			return backend.ErrStopped
		}
		if st != abi.RPCOK {
			return fi.finish(stack, abi.StatusJSError, `{"name":"Error","message":`+quote(string(reply))+`}`)
		}
		return fi.finish(stack, abi.StatusOK, `{"ok":`+string(reply)+`}`)
	case "rpc", "unsettled":
		f := strings.Fields(rest)
		op := &fakeOp{results: map[uint32]string{}, refused: map[uint32]bool{}}
		for i := 0; i+1 < len(f); i += 2 {
			fi.nextID++
			id := fi.nextID
			op.ids = append(op.ids, id)
			s := []uint64{uint64(id), uint64(fi.putStr(0, f[i])), uint64(len(f[i])), uint64(fi.putStr(1024, f[i+1])), uint64(len(f[i+1]))}
			fi.cfg.Imports[abi.ImportRPCAsync](context.Background(), fi.mem, s)
			if uint32(s[0]) != 0 {
				op.results[id] = `{"refused":true}`
			}
		}
		fi.op = op
		if cmd == "unsettled" {
			fi.putU32(abi.ExchPending, uint32(len(op.ids)-len(op.results)))
			return fi.finish(stack, abi.StatusOK, "null")
		}
		if !async && len(op.results) < len(op.ids) {
			return fi.finish(stack, abi.StatusRuntimeError, "pending promise in sync mode")
		}
		return fi.progress(stack)
	case "never":
		if !async {
			return fi.finish(stack, abi.StatusRuntimeError, "pending promise in sync mode")
		}
		fi.putU32(abi.ExchPending, 1)
		stack[0] = uint64(abi.StatusPending)
		return nil
	case "trap":
		return errTrap
	case "garbage":
		fi.setResult(0xfffffff0, 100)
		stack[0] = uint64(abi.StatusOK)
		return nil
	case "badjson":
		return fi.finish(stack, abi.StatusOK, "{")
	case "reject":
		p := fi.putStr(0, rest)
		s := []uint64{uint64(p), uint64(len(rest))}
		fi.cfg.Imports[abi.ImportRejection](context.Background(), fi.mem, s)
		if uint32(s[0]) != 0 {
			return fi.finish(stack, abi.StatusCPULimit, "interrupted by rejection handler")
		}
		return fi.finish(stack, abi.StatusOK, "null")
	case "on":
		name, script, _ := strings.Cut(rest, " ")
		fi.handlers[name] = script
		return fi.finish(stack, abi.StatusOK, "null")
	case "big":
		n, _ := strconv.Atoi(rest)
		return fi.finish(stack, abi.StatusOK, `"`+strings.Repeat("x", n)+`"`)
	case "len":
		return fi.finish(stack, abi.StatusOK, strconv.Itoa(len(src)))
	case "heap":
		n, _ := strconv.ParseUint(rest, 10, 64)
		fi.putU64(abi.ExchHeapUsed, n)
		return fi.finish(stack, abi.StatusOK, "null")
	case "grow":
		n, _ := strconv.Atoi(rest)
		if !fi.mem.grow(uint64(n) * abi.PageSize) {
			return fi.finish(stack, abi.StatusMemoryLimit, "out of memory")
		}
		return fi.finish(stack, abi.StatusOK, "null")
	}
	return fi.finish(stack, abi.StatusJSError, `{"name":"SyntaxError","message":"unknown fake command"}`)
}

// progress finishes an async op when every RPC is settled.
func (fi *fakeInstance) progress(stack []uint64) error {
	op := fi.op
	left := len(op.ids) - len(op.results)
	fi.putU32(abi.ExchPending, uint32(left))
	if left > 0 {
		stack[0] = uint64(abi.StatusPending)
		return nil
	}
	parts := make([]string, len(op.ids))
	for i, id := range op.ids {
		parts[i] = op.results[id]
	}
	fi.op = nil
	return fi.finish(stack, abi.StatusOK, "["+strings.Join(parts, ",")+"]")
}

var (
	_ backend.Backend  = (*fakeBackend)(nil)
	_ backend.Instance = (*fakeInstance)(nil)
)
