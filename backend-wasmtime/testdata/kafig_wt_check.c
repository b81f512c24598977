// Compiled by TestCLayout against the real wasmtime-go v39 headers: the
// types kafig_wt.h restates must agree with them.

#include <assert.h>
#include <stddef.h>
#include <wasmtime.h>

#define KAFIG_WT_TYPES_ONLY
#include "kafig_wt.h"

#define SAME(a, b)                                                              \
	static_assert(sizeof(a) == sizeof(b), #a " size");                        \
	static_assert(_Alignof(a) == _Alignof(b), #a " alignment")

SAME(kafig_byte_vec_t, wasm_byte_vec_t);
SAME(kafig_valtype_vec_t, wasm_valtype_vec_t);
SAME(kafig_val_raw_t, wasmtime_val_raw_t);
SAME(kafig_func_t, wasmtime_func_t);
SAME(kafig_memory_t, wasmtime_memory_t);
SAME(kafig_global_t, wasmtime_global_t);
SAME(kafig_instance_t, wasmtime_instance_t);
SAME(kafig_extern_t, wasmtime_extern_t);
static_assert(offsetof(kafig_extern_t, of) == offsetof(wasmtime_extern_t, of), "extern.of");
static_assert(offsetof(kafig_byte_vec_t, data) == offsetof(wasm_byte_vec_t, data), "byte_vec.data");
static_assert(offsetof(kafig_valtype_vec_t, data) == offsetof(wasm_valtype_vec_t, data), "valtype_vec.data");
static_assert(sizeof(wasm_valkind_t) == 1 && sizeof(wasmtime_trap_code_t) == 1 &&
                  sizeof(wasmtime_update_deadline_kind_t) == 1 && sizeof(wasmtime_extern_kind_t) == 1,
              "one-byte enums");
static_assert(KAFIG_EXTERN_FUNC == WASMTIME_EXTERN_FUNC, "func kind");
static_assert(KAFIG_EXTERN_MEMORY == WASMTIME_EXTERN_MEMORY, "memory kind");
static_assert(KAFIG_WASM_I32 == WASM_I32 && KAFIG_WASM_I64 == WASM_I64, "val kinds");
static_assert(KAFIG_TRAP_CODE_STACK_OVERFLOW == WASMTIME_TRAP_CODE_STACK_OVERFLOW, "trap code");
static_assert(KAFIG_UPDATE_DEADLINE_CONTINUE == WASMTIME_UPDATE_DEADLINE_CONTINUE, "deadline kind");

// The callback types, with kafig's types swapped for the real ones.
static wasm_trap_t *cb(void *env, wasmtime_caller_t *caller, wasmtime_val_raw_t *v, size_t n) {
	(void)env, (void)caller, (void)v, (void)n;
	return NULL;
}
static wasmtime_func_unchecked_callback_t check_cb = cb;
static wasmtime_error_t *ecb(wasmtime_context_t *c, void *d, uint64_t *delta,
                             wasmtime_update_deadline_kind_t *k) {
	(void)c, (void)d, (void)delta, (void)k;
	return NULL;
}
void kafig_check_use(wasmtime_store_t *s);
void kafig_check_use(wasmtime_store_t *s) {
	(void)check_cb;
	wasmtime_store_epoch_deadline_callback(s, ecb, NULL, NULL);
}
