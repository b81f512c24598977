/* main.c: the kafig guest, one compilation unit. QuickJS is compiled
 * separately; the shim is split by concern into the files included below.
 *
 *   state.c   global state, exchange area, allocator, results
 *   errors.c  values and exceptions to the documents the host reads
 *   host.c    the `host` object, RPC tables, QuickJS callbacks
 *   ops.c     the exports: eval, compile, bytecode, dispatch, async loop
 *
 * See abi/ABI.md for the contract. */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <wasi/api.h>

#include "quickjs.h"
#include "kafig_abi.h"

/* Added to QuickJS by guest/patches/03-embedder-hooks.patch. */
void JS_SetRandomSeed(JSContext *ctx, uint64_t seed);
void JS_DiscardPendingJobs(JSRuntime *rt);
void kafig_note_stack_overflow(JSRuntime *rt);

#include "state.c"
#include "errors.c"
#include "host.c"
#include "ops.c"

/* The Wizer initializer: builds the runtime, the context and `host`, and
 * is snapshotted. Wizer removes this export afterwards. */
__attribute__((export_name("wizer.initialize"))) void kafig_wizer_initialize(void)
{
    rt = JS_NewRuntime2(&kafig_malloc_funcs, NULL);
    if (!rt)
        abort();
    heap_state = NULL;
    ctx = JS_NewContext(rt);
    if (!ctx)
        abort();
    JS_SetInterruptHandler(rt, interrupt_handler, NULL);
    JS_SetHostPromiseRejectionTracker(rt, tracker, NULL);
    JS_SetMaxStackSize(rt, KAFIG_DEFAULT_JS_STACK);
    define_host();
    op_promise = JS_UNDEFINED;
    /* a fixed seed keeps the snapshot reproducible; each instance re-seeds */
    JS_SetRandomSeed(ctx, 1);
    xch.data_cap = KAFIG_EXCHANGE_DATA_SIZE;
    JS_RunGC(rt);
    initialized = 1;
}

/* While Wizer runs the initializer, every clock reads zero: wasi-libc's
 * malloc seeds a magic number from time(), and anything clock-derived that
 * lands in the snapshot would make the build irreproducible. Linked with
 * -Wl,--wrap=__wasi_clock_time_get. */
__wasi_errno_t __real___wasi_clock_time_get(__wasi_clockid_t id, __wasi_timestamp_t precision,
                                            __wasi_timestamp_t *out);
__wasi_errno_t __wrap___wasi_clock_time_get(__wasi_clockid_t id, __wasi_timestamp_t precision,
                                            __wasi_timestamp_t *out)
{
    if (!initialized) {
        *out = 0;
        return __WASI_ERRNO_SUCCESS;
    }
    return __real___wasi_clock_time_get(id, precision, out);
}
