//go:build cgo

// The C half of the wasmtime backend; see kafig_wt.h.

#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

// The host function trampoline: env is &inst->env[abi index].
static wasm_trap_t *kafig_host_cb(void *env, wasmtime_caller_t *caller,
                                  kafig_val_raw_t *vals, size_t nvals) {
	kafig_host_env *e = (kafig_host_env *)env;
	kafig_inst *inst = e->inst;
	if (__atomic_load_n(&inst->stop, __ATOMIC_ACQUIRE))
		return wasmtime_trap_new(kafig_stop_msg, sizeof kafig_stop_msg - 1);
	kafig_refresh_mem(inst, wasmtime_caller_context(caller));
	if (kafigHostCall(inst->go, e->idx, vals, nvals) != 0)
		return wasmtime_trap_new(kafig_host_msg, sizeof kafig_host_msg - 1);
	// A stop that came while the host function ran (e.g. a blocking RPC)
	// takes effect now, not at the guest's next epoch check.
	if (__atomic_load_n(&inst->stop, __ATOMIC_ACQUIRE))
		return wasmtime_trap_new(kafig_stop_msg, sizeof kafig_stop_msg - 1);
	return NULL;
}

int kafig_inst_init(kafig_inst *inst, const kafig_plan *plan, void *store,
                    uintptr_t go) {
	kafig_extern_t *imports = NULL;
	kafig_instance_t instance;
	wasm_trap_t *trap = NULL;
	wasmtime_error_t *err;
	kafig_extern_t item;

	memset(inst, 0, sizeof *inst);
	inst->plan = plan;
	inst->store = (wasmtime_store_t *)store;
	inst->ctx = wasmtime_store_context(inst->store);
	inst->go = go;
	for (uint32_t i = 0; i < KAFIG_NIMPORTS; i++) {
		inst->env[i].inst = inst;
		inst->env[i].idx = i;
	}
	if (plan->epoch) {
		wasmtime_store_epoch_deadline_callback(inst->store, kafig_epoch_cb,
		                                       inst, NULL);
		wasmtime_context_set_epoch_deadline(inst->ctx, 1);
	}

	imports = (kafig_extern_t *)calloc(plan->nimports ? plan->nimports : 1,
	                                   sizeof *imports);
	if (!imports) {
		snprintf(inst->msg, KAFIG_MSGLEN, "kafig: out of memory");
		return KAFIG_ERROR;
	}
	for (size_t i = 0; i < plan->nimports; i++) {
		int32_t idx = plan->import_abi[i];
		if (idx >= 0) {
			imports[i].kind = KAFIG_EXTERN_FUNC;
			wasmtime_func_new_unchecked(inst->ctx, plan->host_types[idx],
			                            kafig_host_cb, &inst->env[idx], NULL,
			                            &imports[i].of.func);
		} else if (!wasmtime_linker_get(
		               plan->linker, inst->ctx, "wasi_snapshot_preview1",
		               sizeof "wasi_snapshot_preview1" - 1,
		               plan->import_names[i], plan->import_name_lens[i],
		               &imports[i])) {
			snprintf(inst->msg, KAFIG_MSGLEN,
			         "kafig: WASI function %.*s is not available",
			         (int)plan->import_name_lens[i], plan->import_names[i]);
			free(imports);
			return KAFIG_ERROR;
		}
	}
	err = wasmtime_instance_new(inst->ctx, plan->module, imports,
	                            plan->nimports, &instance, &trap);
	free(imports);
	if (err) {
		kafig_take_error(inst, err);
		return KAFIG_ERROR;
	}
	if (trap) {
		kafig_take_trap(inst, trap);
		return KAFIG_TRAP;
	}
	for (int i = 0; i < KAFIG_NEXPORTS; i++) {
		const char *name = plan->export_names[i];
		if (!wasmtime_instance_export_get(inst->ctx, &instance, name,
		                                  strlen(name), &item) ||
		    item.kind != KAFIG_EXTERN_FUNC) {
			snprintf(inst->msg, KAFIG_MSGLEN,
			         "kafig: export %s is not a function", name);
			return KAFIG_ERROR;
		}
		inst->exports[i] = item.of.func;
	}
	if (!wasmtime_instance_export_get(inst->ctx, &instance, "memory",
	                                  sizeof "memory" - 1, &item) ||
	    item.kind != KAFIG_EXTERN_MEMORY) {
		snprintf(inst->msg, KAFIG_MSGLEN, "kafig: export memory is missing");
		return KAFIG_ERROR;
	}
	inst->memory = item.of.memory;
	kafig_refresh_mem(inst, inst->ctx);
	return KAFIG_OK;
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

void *kafig_store_context(void *store) {
	return wasmtime_store_context((wasmtime_store_t *)store);
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

void kafig_stop(kafig_inst *inst) {
	__atomic_store_n(&inst->stop, 1, __ATOMIC_RELEASE);
}
