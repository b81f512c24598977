;; Bad: kafig_rpc_settle is missing.
(module
  (memory (export "memory") 1)
  (func (export "kafig_abi_version") (result i32) (i32.const 2))
  (func (export "kafig_exchange") (result i32) (i32.const 1024))
  (func (export "kafig_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "kafig_free") (param i32))
  (func (export "kafig_set_limits") (param i64 i32) (result i32) (i32.const 0))
  (func (export "kafig_eval") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "kafig_compile") (param i32 i32) (result i32) (i32.const 0))
  (func (export "kafig_eval_bytecode") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "kafig_dispatch") (param i32 i32 i32 i32) (result i32) (i32.const 0))
  (func (export "kafig_abort"))
)
