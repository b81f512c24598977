;; A fake kafig guest for the backend tests: every ABI export with the right
;; signature and trivial bodies that exercise the backend, not JavaScript.
;; Regenerate fake.wasm with `go generate` (see gen.go).
(module
  (import "env" "interrupt" (func $interrupt (param i64) (result i32)))
  (import "env" "rpc_sync" (func $rpc_sync (param i32 i32 i32 i32) (result i64)))
  (import "env" "rpc_sync_take" (func $rpc_sync_take (param i32 i32)))
  (import "env" "rpc_async" (func $rpc_async (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "rejection" (func $rejection (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))

  ;; 2 pages, no maximum: the host's cap is the only limit.
  (memory (export "memory") 2)
  (data (i32.const 4096) "hello from the fake guest\n")

  ;; The stop word (abi.StopWord): Compile guards every loop with it.
  (global (export "kafig_stop_word") i32 (i32.const 131064))
  (global $depth (mut i32) (i32.const 0))
  (global $limit_heap (mut i64) (i64.const 0))

  (func (export "kafig_abi_version") (result i32) (i32.const 2))
  (func (export "kafig_exchange") (result i32) (i32.const 1024))

  ;; alloc(pages): grows memory by pages; returns the old size in pages, or
  ;; -1 when the growth is refused.
  (func (export "kafig_alloc") (param $pages i32) (result i32)
    (memory.grow (local.get $pages)))

  (func (export "kafig_free") (param i32))

  ;; set_limits(heap, stack): remembers heap; returns low32(heap) + stack.
  (func (export "kafig_set_limits") (param $heap i64) (param $stack i32) (result i32)
    (global.set $limit_heap (local.get $heap))
    (i32.add (i32.wrap_i64 (local.get $heap)) (local.get $stack)))

  ;; eval(a, b, flags): flags 1 loops forever without calling anything;
  ;; otherwise returns a + b.
  (func (export "kafig_eval") (param $a i32) (param $b i32) (param $flags i32) (result i32)
    (if (i32.eq (local.get $flags) (i32.const 1))
      (then (loop $forever (br $forever))))
    (i32.add (local.get $a) (local.get $b)))

  ;; compile(n, _): recurses n levels (unbounded for n < 0); stores the depth
  ;; reached at address 0 on the way down; returns the depth.
  (func $rec (param $n i32) (result i32)
    (global.set $depth (i32.add (global.get $depth) (i32.const 1)))
    (i32.store (i32.const 0) (global.get $depth))
    (if (result i32) (i32.eqz (local.get $n))
      (then (global.get $depth))
      (else (i32.add (call $rec (i32.sub (local.get $n) (i32.const 1))) (i32.const 0)))))
  (func (export "kafig_compile") (param $n i32) (param i32) (result i32)
    (global.set $depth (i32.const 0))
    (call $rec (local.get $n)))

  ;; eval_bytecode(n, _, _): a compute loop of n iterations (no imports).
  (func (export "kafig_eval_bytecode") (param $n i32) (param i32) (param i32) (result i32)
    (local $i i32) (local $acc i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 31)) (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $acc))

  ;; dispatch(a, b, c, d): calls every env import once and stores what they
  ;; return: interrupt at 2048 (i32), rpc_sync at 2056 (i64), rpc_async at
  ;; 2064 (i32), rejection at 2068 (i32). Returns the sum of the i32 answers.
  (func (export "kafig_dispatch") (param $a i32) (param $b i32) (param $c i32) (param $d i32) (result i32)
    (local $r0 i32) (local $r3 i32) (local $r4 i32)
    (local.set $r0 (call $interrupt
      (i64.or (i64.extend_i32_u (local.get $a)) (i64.shl (i64.extend_i32_u (local.get $b)) (i64.const 32)))))
    (i32.store (i32.const 2048) (local.get $r0))
    (i64.store (i32.const 2056) (call $rpc_sync (local.get $a) (local.get $b) (local.get $c) (local.get $d)))
    (call $rpc_sync_take (local.get $c) (local.get $d))
    (local.set $r3 (call $rpc_async (local.get $a) (local.get $b) (local.get $c) (local.get $d) (i32.const -1)))
    (i32.store (i32.const 2064) (local.get $r3))
    (local.set $r4 (call $rejection (local.get $c) (local.get $d)))
    (i32.store (i32.const 2068) (local.get $r4))
    (i32.add (local.get $r0) (i32.add (local.get $r3) (local.get $r4))))

  ;; rpc_settle(mode, n, _, _):
  ;;   mode 0: calls interrupt(i) n times; returns the sum of its answers.
  ;;   mode 1: calls random_get, clock_time_get and fd_write(1, ...);
  ;;           returns their errnos as bytes: random | clock<<8 | write<<16.
  ;;   mode 2: calls interrupt(0) forever until it answers non-zero;
  ;;           returns its answer.
  (func (export "kafig_rpc_settle") (param $mode i32) (param $n i32) (param i32) (param i32) (result i32)
    (local $i i32) (local $acc i32) (local $r i32)
    (if (i32.eqz (local.get $mode))
      (then
        (block $done
          (loop $l
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $acc (i32.add (local.get $acc) (call $interrupt (i64.extend_i32_u (local.get $i)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l)))
        (return (local.get $acc))))
    (if (i32.eq (local.get $mode) (i32.const 1))
      (then
        ;; iovec at 3072: {ptr 4096, len 26}
        (i32.store (i32.const 3072) (i32.const 4096))
        (i32.store (i32.const 3076) (i32.const 26))
        (return
          (i32.or
            (call $random_get (i32.const 3200) (i32.const 16))
            (i32.or
              (i32.shl (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 3232)) (i32.const 8))
              (i32.shl (call $fd_write (i32.const 1) (i32.const 3072) (i32.const 1) (i32.const 3240)) (i32.const 16)))))))
    (loop $again
      (local.set $r (call $interrupt (i64.const 0)))
      (br_if $again (i32.eqz (local.get $r))))
    (local.get $r))

  ;; abort(): traps.
  (func (export "kafig_abort") (unreachable))
)
