;; A fake kafig guest for the backend's own tests: every abi export with the
;; right signature, trivial bodies that exercise the host imports, traps,
;; endless loops and memory growth. Not a JavaScript engine.
;;
;; Like the real guest, it has the stop guard (abi.StopGlobal, tested at the
;; top of every loop, with the yield: see guest/internal/wasmguard). gen.sh
;; also writes fake_noguard.wasm from this file
;; without the lines that end in ";; guard", for the backend's fallback.
(module
  (import "env" "interrupt" (func $interrupt (param i64) (result i32)))
  (import "env" "rpc_sync" (func $rpc_sync (param i32 i32 i32 i32) (result i64)))
  (import "env" "rpc_sync_take" (func $rpc_sync_take (param i32 i32)))
  (import "env" "rpc_async" (func $rpc_async (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "rejection" (func $rejection (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))

  ;; 2 pages at start, no declared maximum (4 GiB).
  (memory (export "memory") 2)

  ;; "hello\n" and an iovec for fd_write.
  (data (i32.const 4096) "hello\n")
  (data (i32.const 4104) "\00\10\00\00\06\00\00\00")

  (global $stop (export "kafig_stop") (mut i32) (i32.const 0)) ;; guard
  (global $budget (mut i32) (i32.const 65536)) ;; guard
  (func $slow (if (global.get $stop) (then (unreachable))) (global.set $budget (i32.const 65536)) (if (call $interrupt (i64.const -1)) (then (unreachable)))) ;; guard

  (func (export "kafig_abi_version") (result i32) (i32.const 2))

  ;; The exchange area lives at 1024.
  (func (export "kafig_exchange") (result i32) (i32.const 1024))

  ;; Grows memory by ceil(size/64Ki) pages; returns the new block or 0.
  (func (export "kafig_alloc") (param $size i32) (result i32)
    (local $old i32)
    (local.set $old
      (memory.grow (i32.shr_u (i32.add (local.get $size) (i32.const 65535)) (i32.const 16))))
    (if (result i32) (i32.eq (local.get $old) (i32.const -1))
      (then (i32.const 0))
      (else (i32.shl (local.get $old) (i32.const 16)))))

  (func (export "kafig_free") (param i32))

  ;; Writes its arguments at 2048 (i64) and 2056 (i32), returns 0.
  (func (export "kafig_set_limits") (param $heap i64) (param $stack i32) (result i32)
    (i64.store (i32.const 2048) (local.get $heap))
    (i32.store (i32.const 2056) (local.get $stack))
    (i32.const 0))

  ;; Calls interrupt(n) for n = 0, 1, ... until it answers non-zero; returns
  ;; the number of calls.
  (func (export "kafig_eval") (param i32 i32 i32) (result i32)
    (local $n i64)
    (block $done
      (loop $again
        (global.set $budget (i32.sub (global.get $budget) (i32.const 1))) (if (i32.or (i32.eqz (global.get $budget)) (global.get $stop)) (then (call $slow))) ;; guard
        (br_if $done (call $interrupt (local.get $n)))
        (local.set $n (i64.add (local.get $n) (i64.const 1)))
        (br $again)))
    (i32.wrap_i64 (i64.add (local.get $n) (i64.const 1))))

  ;; r = rpc_sync(a, b, a+1, b+1); stores r at 2064; returns lo(r) + hi(r).
  (func (export "kafig_compile") (param $a i32) (param $b i32) (result i32)
    (local $r i64)
    (local.set $r
      (call $rpc_sync (local.get $a) (local.get $b)
        (i32.add (local.get $a) (i32.const 1)) (i32.add (local.get $b) (i32.const 1))))
    (i64.store (i32.const 2064) (local.get $r))
    (i32.add (i32.wrap_i64 (local.get $r))
      (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32)))))

  ;; rpc_sync_take(p, l); returns rpc_async(f, p, l, p+l, l+1)*1000 + rejection(p, l).
  (func (export "kafig_eval_bytecode") (param $p i32) (param $l i32) (param $f i32) (result i32)
    (call $rpc_sync_take (local.get $p) (local.get $l))
    (i32.add
      (i32.mul
        (call $rpc_async (local.get $f) (local.get $p) (local.get $l)
          (i32.add (local.get $p) (local.get $l)) (i32.add (local.get $l) (i32.const 1)))
        (i32.const 1000))
      (call $rejection (local.get $p) (local.get $l))))

  ;; Traps.
  (func (export "kafig_dispatch") (param i32 i32 i32 i32) (result i32)
    (unreachable))

  ;; WASI: realtime clock at 3072 (u64), 16 random bytes at 3088, "hello\n" to
  ;; stdout (count at 3104); returns the sum of the errnos.
  (func (export "kafig_rpc_settle") (param i32 i32 i32 i32) (result i32)
    (i32.add
      (i32.add
        (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 3072))
        (call $random_get (i32.const 3088) (i32.const 16)))
      (call $fd_write (i32.const 1) (i32.const 4104) (i32.const 1) (i32.const 3104))))

  ;; Loops forever without calling the host.
  (func (export "kafig_abort")
    (loop $forever
      (global.set $budget (i32.sub (global.get $budget) (i32.const 1))) (if (i32.or (i32.eqz (global.get $budget)) (global.get $stop)) (then (call $slow))) ;; guard
      (br $forever)))
)
