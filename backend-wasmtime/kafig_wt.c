//go:build cgo

// The C half of the wasmtime backend; see kafig_wt.h.

#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "_cgo_export.h"
#include "kafig_wt.h"

static const char kafig_stop_msg[] = "kafig: guest call stopped";
static const char kafig_host_msg[] = "kafig: host function failed";

// kafig_set_msg copies v into inst->msg; a message too long for it keeps its
// head and its tail (where wasmtime puts the cause, after the backtrace).
static void kafig_set_msg(kafig_inst *inst, const kafig_byte_vec_t *v) {
	static const char cut[] = "\n...\n";
	size_t n = v ? v->size : 0;
	// Messages may carry their own NUL; stop there.
	if (n > 0 && memchr(v->data, 0, n))
		n = strlen(v->data);
	if (n <= KAFIG_MSGLEN - 1) {
		if (n > 0)
			memcpy(inst->msg, v->data, n);
		inst->msg[n] = 0;
		return;
	}
	size_t head = KAFIG_MSGLEN / 4;
	size_t tail = KAFIG_MSGLEN - 1 - head - (sizeof cut - 1);
	memcpy(inst->msg, v->data, head);
	memcpy(inst->msg + head, cut, sizeof cut - 1);
	memcpy(inst->msg + head + sizeof cut - 1, v->data + n - tail, tail);
	inst->msg[KAFIG_MSGLEN - 1] = 0;
}

static void kafig_take_error(kafig_inst *inst, wasmtime_error_t *err) {
	kafig_byte_vec_t v = {0, NULL};
	wasmtime_error_message(err, &v);
	kafig_set_msg(inst, &v);
	wasm_byte_vec_delete(&v);
	wasmtime_error_delete(err);
}

static void kafig_take_trap(kafig_inst *inst, wasm_trap_t *trap) {
	kafig_byte_vec_t v = {0, NULL};
	uint8_t code = 0;
	inst->has_trap_code = wasmtime_trap_code(trap, &code) ? 1 : 0;
	inst->trap_code = code;
	wasm_trap_message(trap, &v);
	kafig_set_msg(inst, &v);
	wasm_byte_vec_delete(&v);
	wasm_trap_delete(trap);
}

static void kafig_refresh_mem(kafig_inst *inst, wasmtime_context_t *ctx) {
	inst->mem_base = wasmtime_memory_data(ctx, &inst->memory);
	inst->mem_size = (uint64_t)wasmtime_memory_data_size(ctx, &inst->memory);
}

wasm_functype_t *kafig_functype_new(const uint8_t *params, size_t nparams,
                                    const uint8_t *results, size_t nresults) {
	wasm_valtype_t *p[KAFIG_MAXVALS], *r[KAFIG_MAXVALS];
	kafig_valtype_vec_t pv, rv;
	if (nparams > KAFIG_MAXVALS || nresults > KAFIG_MAXVALS)
		return NULL;
	for (size_t i = 0; i < nparams; i++)
		p[i] = wasm_valtype_new(params[i]);
	for (size_t i = 0; i < nresults; i++)
		r[i] = wasm_valtype_new(results[i]);
	if (nparams)
		wasm_valtype_vec_new(&pv, nparams, p);
	else
		wasm_valtype_vec_new_empty(&pv);
	if (nresults)
		wasm_valtype_vec_new(&rv, nresults, r);
	else
		wasm_valtype_vec_new_empty(&rv);
	return wasm_functype_new(&pv, &rv);
}

// The epoch deadline callback: runs in the thread that runs the guest, each
// time the engine's epoch passes this store's deadline. Stop bumps the epoch,
// so every store running on the engine gets here once; only the stopped one
// traps, the others go on with a new deadline one tick ahead.
static wasmtime_error_t *kafig_epoch_cb(wasmtime_context_t *ctx, void *data,
                                        uint64_t *delta, uint8_t *kind) {
	kafig_inst *inst = (kafig_inst *)data;
	(void)ctx;
	if (__atomic_load_n(&inst->stop, __ATOMIC_ACQUIRE))
		return wasmtime_error_new(kafig_stop_msg);
	*delta = 1;
	*kind = KAFIG_UPDATE_DEADLINE_CONTINUE;
	return NULL;
}

// The host function trampoline, defined once in the module's linker: env is
// the abi.Import index, the store's data the kafig_inst.
static wasm_trap_t *kafig_host_cb(void *env, wasmtime_caller_t *caller,
                                  kafig_val_raw_t *vals, size_t nvals) {
	wasmtime_context_t *ctx = wasmtime_caller_context(caller);
	kafig_inst *inst = (kafig_inst *)wasmtime_context_get_data(ctx);
	if (__atomic_load_n(&inst->stop, __ATOMIC_ACQUIRE))
		return wasmtime_trap_new(kafig_stop_msg, sizeof kafig_stop_msg - 1);
	kafig_refresh_mem(inst, ctx);
	if (kafigHostCall(inst->go, (uint32_t)(uintptr_t)env, vals, nvals) != 0)
		return wasmtime_trap_new(kafig_host_msg, sizeof kafig_host_msg - 1);
	// A stop that came while the host function ran (e.g. a blocking RPC)
	// takes effect now, not at the guest's next epoch check.
	if (__atomic_load_n(&inst->stop, __ATOMIC_ACQUIRE))
		return wasmtime_trap_new(kafig_stop_msg, sizeof kafig_stop_msg - 1);
	return NULL;
}

static void kafig_err_msg(wasmtime_error_t *err, char *msg, size_t msglen) {
	kafig_byte_vec_t v = {0, NULL};
	wasmtime_error_message(err, &v);
	snprintf(msg, msglen, "%.*s", (int)v.size, v.data ? v.data : "");
	wasm_byte_vec_delete(&v);
	wasmtime_error_delete(err);
}

// kafig_plan_link defines the host functions in linker (which has WASI
// already) and pre-links the module: every instance is then made from
// plan->pre without resolving imports or creating host functions.
int kafig_plan_link(kafig_plan *plan, wasmtime_linker_t *linker,
                    const wasmtime_module_t *module, char *msg, size_t msglen) {
	wasmtime_error_t *err;
	for (uint32_t i = 0; i < KAFIG_NIMPORTS; i++) {
		const char *name = plan->import_names[i];
		err = wasmtime_linker_define_func_unchecked(
		    linker, "env", sizeof "env" - 1, name, strlen(name),
		    plan->host_types[i], kafig_host_cb, (void *)(uintptr_t)i, NULL);
		if (err) {
			kafig_err_msg(err, msg, msglen);
			return KAFIG_ERROR;
		}
	}
	err = wasmtime_linker_instantiate_pre(linker, module, &plan->pre);
	if (err) {
		plan->pre = NULL;
		kafig_err_msg(err, msg, msglen);
		return KAFIG_ERROR;
	}
	return KAFIG_OK;
}

void kafig_plan_unlink(kafig_plan *plan) {
	if (plan->pre) {
		wasmtime_instance_pre_delete(plan->pre);
		plan->pre = NULL;
	}
}

// kafig_config_fixed_memory keeps every linear memory where it was mapped
// (its 4 GiB reservation holds any wasm32 memory): the stop word's address
// (kafig_inst.stop_word) must not go stale while another thread stops.
void kafig_config_fixed_memory(wasm_config_t *cfg) {
	wasmtime_config_memory_may_move_set(cfg, false);
}

// kafig_config_pool makes the engine allocate instances, memories and tables
// from a pool of slots, reused (with their copy-on-write memory image
// mapped) instead of mapped and unmapped per instance.
void kafig_config_pool(wasm_config_t *cfg, uint32_t slots) {
	wasmtime_pooling_allocation_config_t *p =
	    wasmtime_pooling_allocation_config_new();
	wasmtime_pooling_allocation_config_total_core_instances_set(p, slots);
	wasmtime_pooling_allocation_config_total_memories_set(p, slots);
	wasmtime_pooling_allocation_config_total_tables_set(p, slots);
	wasmtime_pooling_allocation_config_total_stacks_set(p, 0);
	wasmtime_pooling_allocation_config_total_gc_heaps_set(p, 0);
	wasmtime_pooling_allocation_config_max_memory_size_set(p, (size_t)1 << 32);
	// A released table is cleared with memset rather than madvise: one
	// madvise (and the TLB shootdown it takes) less per instance.
	wasmtime_pooling_allocation_config_table_keep_resident_set(p, 64 << 10);
	wasmtime_pooling_allocation_strategy_set(cfg, p);
	wasmtime_pooling_allocation_config_delete(p);
}

// kafig_can_reserve reports whether the process can map bytes of address
// space (the reservation is released at once).
bool kafig_can_reserve(uint64_t bytes) {
	void *p = mmap(NULL, (size_t)bytes, PROT_NONE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return false;
	munmap(p, (size_t)bytes);
	return true;
}

// kafig_inst_init makes the instance's store (its data is inst) and the
// instance. On failure the store, if any, is left for kafig_inst_free.
int kafig_inst_init(kafig_inst *inst, const kafig_plan *plan, uintptr_t go,
                    int64_t max_memory) {
	kafig_instance_t instance;
	wasm_trap_t *trap = NULL;
	wasmtime_error_t *err;
	kafig_extern_t item;

	memset(inst, 0, sizeof *inst);
	inst->plan = plan;
	inst->go = go;
	inst->store = wasmtime_store_new(plan->engine, inst, NULL);
	if (!inst->store) {
		snprintf(inst->msg, KAFIG_MSGLEN, "kafig: wasmtime_store_new failed");
		return KAFIG_ERROR;
	}
	inst->ctx = wasmtime_store_context(inst->store);
	// No args, env, preopens or stdio.
	err = wasmtime_context_set_wasi(inst->ctx, wasi_config_new());
	if (err) {
		kafig_take_error(inst, err);
		return KAFIG_ERROR;
	}
	if (max_memory > 0)
		wasmtime_store_limiter(inst->store, max_memory, -1, -1, -1, -1);
	if (plan->epoch) {
		wasmtime_store_epoch_deadline_callback(inst->store, kafig_epoch_cb,
		                                       inst, NULL);
		wasmtime_context_set_epoch_deadline(inst->ctx, 1);
	}
	err = wasmtime_instance_pre_instantiate(plan->pre, inst->ctx, &instance,
	                                        &trap);
	if (err) {
		kafig_take_error(inst, err);
		return KAFIG_ERROR;
	}
	if (trap) {
		kafig_take_trap(inst, trap);
		return KAFIG_TRAP;
	}
	// By name: wasmtime_instance_export_nth walks every export of the
	// instance on each call.
	for (int i = 0; i <= KAFIG_NEXPORTS; i++) {
		const char *want = i < KAFIG_NEXPORTS ? plan->export_names[i] : "memory";
		int kind = i < KAFIG_NEXPORTS ? KAFIG_EXTERN_FUNC : KAFIG_EXTERN_MEMORY;
		if (!wasmtime_instance_export_get(inst->ctx, &instance, want,
		                                  strlen(want), &item) ||
		    item.kind != kind) {
			snprintf(inst->msg, KAFIG_MSGLEN,
			         "kafig: export %s is missing or has the wrong kind", want);
			return KAFIG_ERROR;
		}
		if (i < KAFIG_NEXPORTS)
			inst->exports[i] = item.of.func;
		else
			inst->memory = item.of.memory;
	}
	kafig_refresh_mem(inst, inst->ctx);
	if (plan->guard) {
		// The engine's memories never move (kafig_config_fixed_memory), so
		// the word's address holds for the instance's life.
		if ((uint64_t)plan->stop_word + 4 > inst->mem_size) {
			snprintf(inst->msg, KAFIG_MSGLEN,
			         "kafig: the stop word (%u) is outside memory", plan->stop_word);
			return KAFIG_ERROR;
		}
		inst->stop_word = (uint32_t *)(inst->mem_base + plan->stop_word);
	}
	return KAFIG_OK;
}

// kafig_inst_free deletes the store (the instance and its memory with it).
void kafig_inst_free(kafig_inst *inst) {
	if (inst->store) {
		wasmtime_store_delete(inst->store);
		inst->store = NULL;
		inst->ctx = NULL;
	}
}

// ---- the native stack -------------------------------------------------------
//
// Wasmtime runs the guest on the native stack of the calling thread and only
// guarantees that the guest uses at most max_wasm_stack bytes below the
// point where the call entered. When the thread's stack is smaller than
// that, a deep recursion runs off the end of the real stack before wasmtime's
// own check fires: the fault lands on the guard page, outside any wasm trap
// site, and takes down the whole process (SIGSEGV in a cgo thread). Go's
// cgo threads have the default pthread stack size (8 MiB on glibc when
// RLIMIT_STACK is 8 MiB), so a max_wasm_stack of 8 MiB can never fit.
// kafig_call refuses to enter the guest when the current thread lacks
// max_wasm_stack + stack_reserve bytes, which turns that crash into an error.

static __thread uintptr_t kafig_stack_lo;
static __thread int kafig_stack_known; // 0: not looked up; 1: known; -1: unknown

size_t kafig_thread_stack_free(void) {
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	if (kafig_stack_known == 0) {
		kafig_stack_known = -1;
#if defined(__linux__)
		pthread_attr_t a;
		if (pthread_getattr_np(pthread_self(), &a) == 0) {
			void *addr = NULL;
			size_t size = 0;
			if (pthread_attr_getstack(&a, &addr, &size) == 0 && addr) {
				kafig_stack_lo = (uintptr_t)addr;
				kafig_stack_known = 1;
			}
			pthread_attr_destroy(&a);
		}
#elif defined(__APPLE__)
		uintptr_t top = (uintptr_t)pthread_get_stackaddr_np(pthread_self());
		size_t size = pthread_get_stacksize_np(pthread_self());
		if (top > size) {
			kafig_stack_lo = top - size;
			kafig_stack_known = 1;
		}
#endif
	}
	if (kafig_stack_known < 0)
		return SIZE_MAX;
	return sp > kafig_stack_lo ? (size_t)(sp - kafig_stack_lo) : 0;
}

size_t kafig_default_thread_stack(void) {
	pthread_attr_t a;
	size_t size = 0;
	if (pthread_attr_init(&a) != 0)
		return 0;
	if (pthread_attr_getstacksize(&a, &size) != 0)
		size = 0;
	pthread_attr_destroy(&a);
	return size;
}


int kafig_call(kafig_inst *inst, uint32_t export_idx, size_t nvals) {
	wasm_trap_t *trap = NULL;
	wasmtime_error_t *err;

	inst->has_trap_code = 0;
	inst->msg[0] = 0;
	if (inst->plan->max_wasm_stack) {
		size_t need = inst->plan->max_wasm_stack + inst->plan->stack_reserve;
		size_t have = kafig_thread_stack_free();
		if (have < need) {
			snprintf(inst->msg, KAFIG_MSGLEN,
			         "kafig: this thread has %zu KiB of native stack left, the "
			         "wasmtime backend needs %zu KiB (max wasm stack %zu KiB + "
			         "%zu KiB reserve); lower WithMaxWasmStack",
			         have >> 10, need >> 10, inst->plan->max_wasm_stack >> 10,
			         inst->plan->stack_reserve >> 10);
			return KAFIG_THREAD_STACK;
		}
	}
	err = wasmtime_func_call_unchecked(inst->ctx, &inst->exports[export_idx],
	                                   inst->vals, nvals, &trap);
	kafig_refresh_mem(inst, inst->ctx);
	if (err) {
		kafig_take_error(inst, err);
		return KAFIG_ERROR;
	}
	if (trap) {
		kafig_take_trap(inst, trap);
		return KAFIG_TRAP;
	}
	return KAFIG_OK;
}

