// The C half of the wasmtime backend: the hot path (calls, host functions,
// the epoch deadline callback) written against the wasmtime C API directly,
// because wasmtime-go v39 has no unchecked calls and no epoch deadline
// callback. The definitions live in kafig_wt.c.
//
// The wasmtime declarations below are the subset of the v39 C API this
// backend uses, restated (the headers live inside the wasmtime-go module,
// which a cgo preamble of another module cannot name). The symbols come from
// the libwasmtime.a that wasmtime-go links. TestCLayout compiles
// kafig_wt_check.c against the real headers to prove the types agree.

#ifndef KAFIG_WT_H
#define KAFIG_WT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---- wasmtime C API v39 (subset) ----------------------------------------

typedef struct wasm_engine_t wasm_engine_t;
typedef struct wasmtime_store wasmtime_store_t;
typedef struct wasmtime_context wasmtime_context_t;
typedef struct wasmtime_caller wasmtime_caller_t;
typedef struct wasmtime_module wasmtime_module_t;
typedef struct wasmtime_linker wasmtime_linker_t;
typedef struct wasmtime_error wasmtime_error_t;
typedef struct wasm_trap_t wasm_trap_t;
typedef struct wasm_functype_t wasm_functype_t;
typedef struct wasm_valtype_t wasm_valtype_t;
typedef struct wasm_config_t wasm_config_t;
typedef struct wasi_config_t wasi_config_t;
typedef struct wasmtime_instance_pre wasmtime_instance_pre_t;
typedef struct wasmtime_pooling_allocation_config_t
    wasmtime_pooling_allocation_config_t;

typedef struct kafig_byte_vec {
	size_t size;
	char *data;
} kafig_byte_vec_t; // wasm_byte_vec_t

typedef struct kafig_valtype_vec {
	size_t size;
	wasm_valtype_t **data;
} kafig_valtype_vec_t; // wasm_valtype_vec_t

typedef union kafig_val_raw {
	int32_t i32;
	int64_t i64;
	float f32;
	double f64;
	uint8_t v128[16];
	uint32_t anyref;
	uint32_t externref;
	void *funcref;
} kafig_val_raw_t; // wasmtime_val_raw_t

typedef struct kafig_func {
	uint64_t store_id;
	void *private_;
} kafig_func_t; // wasmtime_func_t

typedef struct kafig_memory {
	struct {
		uint64_t store_id;
		uint32_t private1;
	} a;
	uint32_t private2;
} kafig_memory_t; // wasmtime_memory_t

typedef struct kafig_global {
	uint64_t store_id;
	uint32_t private1, private2, private3;
} kafig_global_t; // wasmtime_global_t (only for the size of the union)

typedef struct kafig_instance {
	uint64_t store_id;
	size_t private_;
} kafig_instance_t; // wasmtime_instance_t

typedef struct kafig_extern {
	uint8_t kind;
	union {
		kafig_func_t func;
		kafig_global_t global;
		kafig_memory_t memory;
		void *sharedmemory;
	} of;
} kafig_extern_t; // wasmtime_extern_t

#define KAFIG_EXTERN_FUNC 0
#define KAFIG_EXTERN_MEMORY 3
#define KAFIG_WASM_I32 0
#define KAFIG_WASM_I64 1
#define KAFIG_TRAP_CODE_STACK_OVERFLOW 0
#define KAFIG_UPDATE_DEADLINE_CONTINUE 0

#ifndef KAFIG_WT_TYPES_ONLY // kafig_wt_check.c includes the real headers too

typedef wasm_trap_t *(*kafig_unchecked_cb)(void *env, wasmtime_caller_t *caller,
                                           kafig_val_raw_t *args_and_results,
                                           size_t num_args_and_results);

extern wasmtime_context_t *wasmtime_store_context(wasmtime_store_t *store);
extern void wasmtime_context_set_epoch_deadline(wasmtime_context_t *context,
                                                uint64_t ticks_beyond_current);
extern void wasmtime_store_epoch_deadline_callback(
    wasmtime_store_t *store,
    wasmtime_error_t *(*func)(wasmtime_context_t *context, void *data,
                              uint64_t *epoch_deadline_delta,
                              uint8_t *update_kind),
    void *data, void (*finalizer)(void *));
extern void wasmtime_func_new_unchecked(wasmtime_context_t *store,
                                        const wasm_functype_t *type,
                                        kafig_unchecked_cb callback, void *env,
                                        void (*finalizer)(void *),
                                        kafig_func_t *ret);
extern wasmtime_error_t *wasmtime_func_call_unchecked(
    wasmtime_context_t *store, const kafig_func_t *func,
    kafig_val_raw_t *args_and_results, size_t args_and_results_len,
    wasm_trap_t **trap);
extern wasmtime_context_t *wasmtime_caller_context(wasmtime_caller_t *caller);
extern bool wasmtime_linker_get(const wasmtime_linker_t *linker,
                                wasmtime_context_t *store, const char *module,
                                size_t module_len, const char *name,
                                size_t name_len, kafig_extern_t *item);
extern wasmtime_error_t *wasmtime_instance_new(wasmtime_context_t *store,
                                               const wasmtime_module_t *module,
                                               const kafig_extern_t *imports,
                                               size_t nimports,
                                               kafig_instance_t *instance,
                                               wasm_trap_t **trap);
extern bool wasmtime_instance_export_get(wasmtime_context_t *store,
                                         const kafig_instance_t *instance,
                                         const char *name, size_t name_len,
                                         kafig_extern_t *item);
extern uint8_t *wasmtime_memory_data(const wasmtime_context_t *store,
                                     const kafig_memory_t *memory);
extern size_t wasmtime_memory_data_size(const wasmtime_context_t *store,
                                        const kafig_memory_t *memory);
extern wasm_trap_t *wasmtime_trap_new(const char *msg, size_t msg_len);
extern bool wasmtime_trap_code(const wasm_trap_t *trap, uint8_t *code);
extern void wasm_trap_message(const wasm_trap_t *trap, kafig_byte_vec_t *out);
extern void wasm_trap_delete(wasm_trap_t *trap);
extern wasmtime_error_t *wasmtime_error_new(const char *msg);
extern void wasmtime_error_message(const wasmtime_error_t *error,
                                   kafig_byte_vec_t *message);
extern void wasmtime_error_delete(wasmtime_error_t *error);
extern void wasm_byte_vec_delete(kafig_byte_vec_t *vec);
extern wasm_valtype_t *wasm_valtype_new(uint8_t kind);
extern void wasm_valtype_vec_new(kafig_valtype_vec_t *out, size_t size,
                                 wasm_valtype_t *const data[]);
extern void wasm_valtype_vec_new_empty(kafig_valtype_vec_t *out);
extern wasm_functype_t *wasm_functype_new(kafig_valtype_vec_t *params,
                                          kafig_valtype_vec_t *results);
extern void wasm_functype_delete(wasm_functype_t *type);

extern wasmtime_store_t *wasmtime_store_new(wasm_engine_t *engine, void *data,
                                            void (*finalizer)(void *));
extern void wasmtime_store_delete(wasmtime_store_t *store);
extern void *wasmtime_context_get_data(const wasmtime_context_t *context);
extern void wasmtime_store_limiter(wasmtime_store_t *store, int64_t memory_size,
                                   int64_t table_elements, int64_t instances,
                                   int64_t tables, int64_t memories);
extern wasi_config_t *wasi_config_new(void);
extern wasmtime_error_t *wasmtime_context_set_wasi(wasmtime_context_t *context,
                                                   wasi_config_t *wasi);
extern wasmtime_error_t *wasmtime_linker_define_func_unchecked(
    wasmtime_linker_t *linker, const char *module, size_t module_len,
    const char *name, size_t name_len, const wasm_functype_t *ty,
    kafig_unchecked_cb cb, void *data, void (*finalizer)(void *));
extern wasmtime_error_t *
wasmtime_linker_instantiate_pre(const wasmtime_linker_t *linker,
                                const wasmtime_module_t *module,
                                wasmtime_instance_pre_t **instance_pre);
extern void wasmtime_instance_pre_delete(wasmtime_instance_pre_t *instance_pre);
extern wasmtime_error_t *wasmtime_instance_pre_instantiate(
    const wasmtime_instance_pre_t *instance_pre, wasmtime_context_t *store,
    kafig_instance_t *instance, wasm_trap_t **trap_ptr);
extern bool wasmtime_instance_export_get(wasmtime_context_t *store,
                                         const kafig_instance_t *instance,
                                         const char *name, size_t name_len,
                                         kafig_extern_t *item);

extern wasmtime_pooling_allocation_config_t *
wasmtime_pooling_allocation_config_new(void);
extern void wasmtime_pooling_allocation_config_delete(
    wasmtime_pooling_allocation_config_t *);
extern void wasmtime_pooling_allocation_config_total_core_instances_set(
    wasmtime_pooling_allocation_config_t *, uint32_t);
extern void wasmtime_pooling_allocation_config_total_memories_set(
    wasmtime_pooling_allocation_config_t *, uint32_t);
extern void wasmtime_pooling_allocation_config_total_tables_set(
    wasmtime_pooling_allocation_config_t *, uint32_t);
extern void wasmtime_pooling_allocation_config_total_stacks_set(
    wasmtime_pooling_allocation_config_t *, uint32_t);
extern void wasmtime_pooling_allocation_config_total_gc_heaps_set(
    wasmtime_pooling_allocation_config_t *, uint32_t);
extern void wasmtime_pooling_allocation_config_max_memory_size_set(
    wasmtime_pooling_allocation_config_t *, size_t);
extern void wasmtime_pooling_allocation_config_table_elements_set(
    wasmtime_pooling_allocation_config_t *, size_t);
extern void wasmtime_pooling_allocation_config_table_keep_resident_set(
    wasmtime_pooling_allocation_config_t *, size_t);
extern void wasmtime_config_memory_may_move_set(wasm_config_t *, bool);
extern void wasmtime_pooling_allocation_strategy_set(
    wasm_config_t *, const wasmtime_pooling_allocation_config_t *);

#endif // KAFIG_WT_TYPES_ONLY

// ---- kafig ----------------------------------------------------------------

#define KAFIG_NEXPORTS 11 // abi.ExportCount
#define KAFIG_NIMPORTS 5  // abi.ImportCount
#define KAFIG_MAXVALS 8   // the longest ABI signature is 5 values
#define KAFIG_MSGLEN 2048

// Results of kafig_call and kafig_inst_init.
enum {
	KAFIG_OK = 0,
	KAFIG_TRAP = 1,        // a wasm trap; msg and trap_code are set
	KAFIG_ERROR = 2,       // a wasmtime error (e.g. the stop callback); msg is set
	KAFIG_THREAD_STACK = 3 // the thread has too little native stack left; msg is set
};

// What the instances of one compiled module share (read-only once built).
typedef struct kafig_plan {
	wasm_functype_t *host_types[KAFIG_NIMPORTS];
	const char *import_names[KAFIG_NIMPORTS];
	const char *export_names[KAFIG_NEXPORTS];
	wasm_engine_t *engine;
	wasmtime_instance_pre_t *pre; // the module linked with WASI and kafig_host_cb
	size_t max_wasm_stack; // bytes; for the thread stack check
	size_t stack_reserve;  // bytes kept free beyond max_wasm_stack
	bool epoch;            // install the epoch deadline callback
	bool guard;            // the module has the stop-word guard (abi.StopWord)
	uint32_t stop_word;    // with guard: the stop word's address in guest memory
} kafig_plan;

typedef struct kafig_inst kafig_inst;

struct kafig_inst {
	kafig_val_raw_t vals[KAFIG_MAXVALS]; // the arguments and results of a call
	uint8_t *mem_base; // linear memory, refreshed after every guest call
	uint64_t mem_size; // and on entry of every host function
	uint32_t stop;     // atomic: non-zero stops the guest
	uint32_t *stop_word; // with plan->guard: the word the guard tests (atomic)
	uint8_t trap_code;
	uint8_t has_trap_code;
	const kafig_plan *plan;
	wasmtime_store_t *store;
	wasmtime_context_t *ctx;
	uintptr_t go; // the cgo.Handle of the Go *instance
	kafig_func_t exports[KAFIG_NEXPORTS];
	kafig_memory_t memory;
	char msg[KAFIG_MSGLEN]; // the last failure, NUL-terminated
};

wasm_functype_t *kafig_functype_new(const uint8_t *params, size_t nparams,
                                    const uint8_t *results, size_t nresults);
#ifndef KAFIG_WT_TYPES_ONLY
int kafig_plan_link(kafig_plan *plan, wasmtime_linker_t *linker,
                    const wasmtime_module_t *module, char *msg, size_t msglen);
void kafig_plan_unlink(kafig_plan *plan);
int kafig_inst_init(kafig_inst *inst, const kafig_plan *plan, uintptr_t go,
                    int64_t max_memory);
void kafig_inst_free(kafig_inst *inst);
void kafig_config_pool(wasm_config_t *cfg, uint32_t slots);
void kafig_config_fixed_memory(wasm_config_t *cfg);
bool kafig_can_reserve(uint64_t bytes);
int kafig_call(kafig_inst *inst, uint32_t export_idx, size_t nvals);
size_t kafig_thread_stack_free(void);
size_t kafig_default_thread_stack(void);
#endif

#endif
