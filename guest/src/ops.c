/* ops.c: the exports: the operations the host starts (eval, compile, eval
 * of bytecode, dispatch) and the async loop that runs promise jobs and
 * suspends while RPC replies are outstanding. */

#define EXPORT(name) __attribute__((export_name(name)))

static void update_header(void)
{
    if (heap_state) {
        xch.heap_used = heap_state->malloc_size;
        xch.heap_limit = heap_base_limit == (size_t)-1 ? 0 : heap_base_limit;
    }
    xch.pending = rpc_count;
}

static int op_unwrap; /* op_promise resolves to QuickJS's {value} wrapper */

/* The source name of the operation: the script's file name in stacks and
 * SyntaxErrors. op_begin takes it from the exchange area (and clears it
 * there, so that it names one operation only); name_len 0 is
 * KAFIG_DEFAULT_SOURCE_NAME. The copy keeps it safe from a host that
 * writes the area during the operation. */
static char op_name_buf[KAFIG_MAX_SOURCE_NAME_LEN + 1];
static const char *op_name = KAFIG_DEFAULT_SOURCE_NAME;
static uint32_t op_name_len; /* 0: the default */
static int op_name_bad;      /* the host gave a length beyond the maximum */

/* The room an operation needs to start: compiling is done with headroom
 * (see compiled), but creating the script's function object and its first
 * steps are not, and a heap left within a few hundred bytes of its limit
 * would fail every later operation, even one that frees the data. */
#define START_RESERVE (4 << 10)

/* heap_allowance_update keeps a full heap usable once an operation has
 * ended. Two things can leave it with no room to start another one:
 *  - compiling with headroom can grow tables the runtime never shrinks (the
 *    atom array and hash, the shape hash) past the limit: the heap then
 *    stays above the limit and every later operation fails at its first
 *    allocation (seen: a new global name after a heap bomb grew the atom
 *    array by about 2 KiB);
 *  - a script that keeps what it allocated (a global) can leave less than
 *    an operation needs to start, so that it cannot even run `s = null`.
 * After an operation that hit a limit (grow) the allowance becomes what
 * restores START_RESERVE bytes of room; after any operation it shrinks to
 * that as the script frees memory, down to none. It never exceeds 1/64 of
 * the limit plus 64 KiB, so a script that keeps hitting the limit gains at
 * most that much. */
static void heap_allowance_update(int grow)
{
    size_t used, want, cap;
    if (!heap_state || heap_base_limit == (size_t)-1)
        return;
    used = heap_state->malloc_size;
    want = used + START_RESERVE > heap_base_limit ? used + START_RESERVE - heap_base_limit : 0;
    cap = heap_base_limit / 64 + (64 << 10);
    if (want > cap)
        want = cap;
    if (want > SIZE_MAX - 1 - heap_base_limit)
        want = SIZE_MAX - 1 - heap_base_limit;
    if (grow ? want > heap_allowance : want < heap_allowance)
        heap_allowance = want;
    heap_state->malloc_limit = heap_base_limit + heap_allowance;
}
static void cache_clear(void);

static void seed_random(void)
{
    uint64_t seed = 0;
    if (seeded)
        return;
    seeded = 1;
    if (__wasi_random_get((uint8_t *)&seed, sizeof(seed)) != 0)
        seed = 0x9e3779b97f4a7c15ull;
    JS_SetRandomSeed(ctx, seed);
}

/* op_end tidies up after an operation has finished (whatever the status):
 * forgets RPCs nobody will wait for, drops jobs a stopped script left,
 * resets the flags. */
static int op_end(int status)
{
    JS_FreeValue(ctx, op_promise);
    op_promise = JS_UNDEFINED;
    op_active = 0;
    op_async = 0;
    op_unwrap = 0;
    rpc_forget_all();
    if (limit_status || status == KAFIG_STATUS_CPU_LIMIT_EXCEEDED ||
        status == KAFIG_STATUS_MEMORY_LIMIT_EXCEEDED) {
        JS_DiscardPendingJobs(rt);
        rejections_clear();
        cache_clear();
        /* garbage in cycles (e.g. what a bomb built before it failed) is
         * only freed by the cycle collector */
        JS_RunGC(rt);
        heap_allowance_update(1);
    } else {
        heap_allowance_update(0);
    }
    limit_status = 0;
    stack_overflow_hit = 0;
    stack_overflow_seen = 0;
    update_header();
    return status;
}

static void take_source_name(void)
{
    uint32_t n = xch.source_name_len;
    xch.source_name_len = 0;
    op_name = KAFIG_DEFAULT_SOURCE_NAME;
    op_name_len = 0;
    op_name_bad = n > KAFIG_MAX_SOURCE_NAME_LEN;
    if (n == 0 || op_name_bad)
        return;
    memcpy(op_name_buf, xch.source_name, n);
    op_name_buf[n] = '\0';
    /* a NUL inside would cut the name short in QuickJS and make two names
     * one in the compile cache: refuse it as the host does */
    if (memchr(op_name_buf, '\0', n)) {
        op_name_bad = 1;
        return;
    }
    op_name = op_name_buf;
    op_name_len = n;
}

static void op_begin(int flags)
{
    free_result();
    take_source_name();
    if (op_active)
        op_end(KAFIG_STATUS_RUNTIME_ERROR); /* a suspended op the host dropped */
    seed_random();
    op_active = 1;
    op_async = (flags & KAFIG_FLAG_ASYNC) != 0;
    op_promise = JS_UNDEFINED;
    op_unwrap = 0;
    limit_status = 0;
    stack_overflow_hit = 0;
    stack_overflow_seen = 0;
}

/* unwrap_eval_result takes the value out of QuickJS's async-eval wrapper
 * (an own property of a null-prototype object; see patch 02). */
static JSValue unwrap_eval_result(JSValue wrapper)
{
    JSValue v;
    if (!JS_IsObject(wrapper))
        return wrapper;
    v = JS_GetPropertyStr(ctx, wrapper, "value");
    JS_FreeValue(ctx, wrapper);
    return v;
}

/* settle_sync finishes a sync operation whose completion value is v
 * (consumed): a fulfilled promise is unwrapped, a rejected one is an
 * error, a pending one cannot be waited for without WithAsync. */
static int settle_sync(JSValue v, int unwrap)
{
    int depth;
    for (depth = 0; depth < 2; depth++) {
        int state = JS_PromiseState(ctx, v);
        JSValue r;
        if (state < 0)
            break;
        JS_FreeValue(ctx, op_promise);
        op_promise = JS_DupValue(ctx, v); /* not an unhandled rejection */
        if (state == JS_PROMISE_PENDING) {
            JS_FreeValue(ctx, v);
            report_rejections(0);
            if (limit_status)
                return limit_result(limit_status);
            return status_message(KAFIG_STATUS_RUNTIME_ERROR,
                                  "the result is a pending promise: evaluate with WithAsync to await it");
        }
        r = JS_PromiseResult(ctx, v);
        JS_FreeValue(ctx, v);
        if (state == JS_PROMISE_REJECTED) {
            report_rejections(0);
            return finish_rejection(r);
        }
        v = unwrap ? unwrap_eval_result(r) : r;
        unwrap = 0;
        if (JS_IsException(v))
            return finish_exception();
    }
    report_rejections(0);
    return finish_value(v);
}

/* run_async drives a suspended or new async operation: run jobs until the
 * awaited promise settles; suspend while RPCs are outstanding. */
static int run_async(void)
{
    JSContext *jctx;
    for (;;) {
        int state;
        while (!limit_status && JS_IsJobPending(rt)) {
            if (JS_ExecutePendingJob(rt, &jctx) < 0)
                JS_FreeValue(ctx, JS_GetException(ctx));
        }
        state = limit_status ? -1 : JS_PromiseState(ctx, op_promise);
        if (state == JS_PROMISE_FULFILLED) {
            JSValue v = JS_PromiseResult(ctx, op_promise);
            if (op_unwrap) {
                v = unwrap_eval_result(v);
                op_unwrap = 0;
                if (JS_IsException(v))
                    return finish_exception();
            }
            JS_FreeValue(ctx, op_promise);
            op_promise = v;
            if (JS_PromiseState(ctx, v) >= 0)
                continue; /* the completion value is a promise: await it too */
            /* op_promise now holds the settled value */
        }
        report_rejections(0);
        if (limit_status)
            return limit_result(limit_status);
        if (state == JS_PROMISE_PENDING) {
            if (rpc_count > 0)
                return KAFIG_STATUS_PENDING;
            return status_message(KAFIG_STATUS_RUNTIME_ERROR,
                                  "the result promise can never settle: nothing it waits for is pending");
        }
        if (state == JS_PROMISE_REJECTED)
            return finish_rejection(JS_PromiseResult(ctx, op_promise));
        /* a settled value: the fulfilled result, or a dispatch handler's
         * plain return value, after the jobs above have run */
        return finish_value(JS_DupValue(ctx, op_promise));
    }
}

/* start runs the operation whose first result is v (consumed). */
static int start(JSValue v, int unwrap)
{
    int status;
    if (JS_IsException(v))
        return op_end(finish_exception());
    if (!op_async)
        return op_end(settle_sync(v, unwrap));
    op_promise = v;
    op_unwrap = unwrap;
    status = run_async();
    if (status == KAFIG_STATUS_PENDING) {
        update_header();
        return status;
    }
    return op_end(status);
}

/* in_range checks that [ptr, ptr+len] (one byte past for the NUL) lies in
 * linear memory. */
static int in_range(uint32_t ptr, uint32_t len)
{
    uint64_t end = (uint64_t)ptr + len + 1;
    return ptr != 0 && end <= (uint64_t)__builtin_wasm_memory_size(0) * 65536;
}

/* ---- compile cache ----
 * Rule engines and handlers evaluate the same short source again and
 * again; parsing and compiling it dominates a small eval (about 90% of
 * `1+1`). A direct-mapped cache keeps the compiled function of recent
 * sources and bytecode inputs up to CACHE_MAX_INPUT bytes, keyed by the
 * exact bytes (compared in full, not just hashed) and the kind. Entries live
 * on the QuickJS heap, count against its limit, and are dropped when an
 * operation hits a limit. */
#define CACHE_SLOTS 32
#define CACHE_MAX_INPUT 8192
#define COMPILE_HEADROOM (1 << 20)
static JSValue compile_input(const char *p, uint32_t len, uint32_t kind);
enum { KIND_SCRIPT, KIND_ASYNC_SCRIPT, KIND_BYTECODE };
struct cache_entry {
    uint32_t hash, len, kind, name_len;
    char *input; /* the input's len bytes, then the source name's name_len */
    JSValue fn;
};
static struct cache_entry cache[CACHE_SLOTS];

static uint32_t fnv1a(uint32_t h, const char *p, uint32_t len)
{
    while (len--)
        h = (h ^ (uint8_t)*p++) * 16777619u;
    return h;
}

/* cache_name_len is the length of the source name that is part of the key
 * of an input of this kind: scripts are compiled with the operation's
 * name; bytecode carries its own. */
static uint32_t cache_name_len(uint32_t kind)
{
    return kind == KIND_BYTECODE ? 0 : op_name_len;
}

static void cache_drop(struct cache_entry *e)
{
    if (e->input) {
        js_free(ctx, e->input);
        JS_FreeValue(ctx, e->fn);
        e->input = NULL;
    }
}

static void cache_clear(void)
{
    int i;
    for (i = 0; i < CACHE_SLOTS; i++)
        cache_drop(&cache[i]);
}

/* cache_find returns a new reference to the cached function, or
 * JS_UNDEFINED; *slot receives the slot the input maps to (NULL when the
 * input is too large to cache). */
static JSValue cache_find(const char *p, uint32_t len, uint32_t kind, struct cache_entry **slot,
                          uint32_t *hash)
{
    struct cache_entry *e;
    uint32_t name_len = cache_name_len(kind);
    *slot = NULL;
    if (len > CACHE_MAX_INPUT)
        return JS_UNDEFINED;
    *hash = fnv1a(fnv1a(2166136261u ^ kind, p, len), op_name, name_len);
    e = &cache[*hash % CACHE_SLOTS];
    *slot = e;
    if (e->input && e->hash == *hash && e->len == len && e->kind == kind &&
        e->name_len == name_len && memcmp(e->input, p, len) == 0 &&
        memcmp(e->input + len, op_name, name_len) == 0)
        return JS_DupValue(ctx, e->fn);
    return JS_UNDEFINED;
}

static void cache_store(struct cache_entry *e, uint32_t hash, const char *p, uint32_t len,
                        uint32_t kind, JSValueConst fn)
{
    char *copy;
    uint32_t name_len = cache_name_len(kind);
    if (!e)
        return;
    cache_drop(e);
    copy = js_malloc(ctx, len + name_len ? len + name_len : 1);
    if (!copy)
        return;
    memcpy(copy, p, len);
    memcpy(copy + len, op_name, name_len);
    e->hash = hash;
    e->len = len;
    e->kind = kind;
    e->name_len = name_len;
    e->input = copy;
    e->fn = JS_DupValue(ctx, fn);
}

/* compiled returns the function for a script or bytecode input (a new
 * reference), compiling or reading it unless it is cached. */
static JSValue compiled(const char *p, uint32_t len, uint32_t kind)
{
    struct cache_entry *slot;
    uint32_t hash = 0;
    JSValue fn = cache_find(p, len, kind, &slot, &hash);
    if (!JS_IsUndefined(fn))
        return fn;
    /* QuickJS's compiler does not survive every allocation failure (a full
     * heap made it trap): compile with headroom above the limit; running
     * the result then meets the limit in the interpreter, which handles it. */
    if (heap_state && heap_state->malloc_limit != (size_t)-1) {
        size_t limit = heap_state->malloc_limit;
        size_t extra = COMPILE_HEADROOM + (len < (1u << 26) ? (size_t)len * 8 : (size_t)1 << 29);
        heap_state->malloc_limit = limit > SIZE_MAX - 1 - extra ? SIZE_MAX - 1 : limit + extra;
        fn = compile_input(p, len, kind);
        heap_state->malloc_limit = limit;
    } else {
        fn = compile_input(p, len, kind);
    }
    if (JS_IsException(fn))
        return fn;
    if (!limit_status)
        cache_store(slot, hash, p, len, kind, fn);
    return fn;
}

static JSValue compile_input(const char *p, uint32_t len, uint32_t kind)
{
    JSValue fn;
    if (kind == KIND_BYTECODE) {
        fn = JS_ReadObject(ctx, (const uint8_t *)p, len, JS_READ_OBJ_BYTECODE);
        if (JS_IsException(fn))
            return fn;
        if (JS_VALUE_GET_TAG(fn) != JS_TAG_FUNCTION_BYTECODE) {
            JS_FreeValue(ctx, fn);
            return JS_ThrowTypeError(ctx, "bytecode is not a script");
        }
    } else {
        fn = JS_Eval(ctx, p, len, op_name,
                     JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY |
                         (kind == KIND_ASYNC_SCRIPT ? JS_EVAL_FLAG_ASYNC : 0));
    }
    return fn;
}

EXPORT(KAFIG_EXPORT_ABI_VERSION) uint32_t kafig_abi_version(void)
{
    return KAFIG_ABI_VERSION;
}

EXPORT(KAFIG_EXPORT_EXCHANGE) uint32_t kafig_exchange(void)
{
    return (uint32_t)(uintptr_t)&xch;
}

EXPORT(KAFIG_EXPORT_ALLOC) uint32_t kafig_alloc(uint32_t size)
{
    return (uint32_t)(uintptr_t)malloc(size ? size : 1);
}

EXPORT(KAFIG_EXPORT_FREE) void kafig_free(uint32_t ptr)
{
    free((void *)(uintptr_t)ptr);
}

EXPORT(KAFIG_EXPORT_SET_LIMITS) uint32_t kafig_set_limits(uint64_t heap, uint32_t stack)
{
    if (stack > KAFIG_MAX_JS_STACK)
        return KAFIG_STATUS_BAD_INPUT;
    /* 0, and anything a wasm32 size_t cannot hold (4 GiB), is no limit:
     * linear memory cannot exceed 4 GiB anyway */
    heap_base_limit = heap && heap < SIZE_MAX ? (size_t)heap : (size_t)-1;
    heap_allowance = 0;
    JS_SetMemoryLimit(rt, heap_base_limit);
    JS_SetMaxStackSize(rt, stack ? stack : KAFIG_DEFAULT_JS_STACK);
    update_header();
    return KAFIG_STATUS_OK;
}

EXPORT(KAFIG_EXPORT_EVAL) uint32_t kafig_eval(uint32_t src, uint32_t len, uint32_t flags)
{
    JSValue fn;
    op_begin(flags);
    if (!in_range(src, len))
        return op_end(status_message(KAFIG_STATUS_BAD_INPUT, "source outside memory"));
    if (op_name_bad)
        return op_end(status_message(KAFIG_STATUS_BAD_INPUT, "bad source name"));
    ((char *)(uintptr_t)src)[len] = '\0';
    fn = compiled((const char *)(uintptr_t)src, len, op_async ? KIND_ASYNC_SCRIPT : KIND_SCRIPT);
    if (JS_IsException(fn))
        return op_end(finish_exception());
    return start(JS_EvalFunction(ctx, fn), op_async);
}

EXPORT(KAFIG_EXPORT_COMPILE) uint32_t kafig_compile(uint32_t src, uint32_t len)
{
    JSValue fn;
    uint8_t *buf;
    size_t size;
    int status;
    op_begin(0);
    if (!in_range(src, len))
        return op_end(status_message(KAFIG_STATUS_BAD_INPUT, "source outside memory"));
    if (op_name_bad)
        return op_end(status_message(KAFIG_STATUS_BAD_INPUT, "bad source name"));
    ((char *)(uintptr_t)src)[len] = '\0';
    fn = JS_Eval(ctx, (const char *)(uintptr_t)src, len, op_name,
                 JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY | JS_EVAL_FLAG_ASYNC);
    if (JS_IsException(fn))
        return op_end(finish_exception());
    buf = JS_WriteObject(ctx, &size, fn, JS_WRITE_OBJ_BYTECODE);
    JS_FreeValue(ctx, fn);
    if (!buf)
        return op_end(finish_exception());
    status = set_result(buf, size) < 0 ? limit_result(KAFIG_STATUS_MEMORY_LIMIT_EXCEEDED)
                                        : KAFIG_STATUS_OK;
    js_free(ctx, buf);
    return op_end(status);
}

EXPORT(KAFIG_EXPORT_EVAL_BYTECODE) uint32_t kafig_eval_bytecode(uint32_t ptr, uint32_t len, uint32_t flags)
{
    JSValue fn;
    op_begin(flags);
    if (!in_range(ptr, len))
        return op_end(status_message(KAFIG_STATUS_BAD_INPUT, "bytecode outside memory"));
    fn = compiled((const char *)(uintptr_t)ptr, len, KIND_BYTECODE);
    if (JS_IsException(fn)) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        if (limit_status)
            return op_end(limit_result(limit_status));
        return op_end(status_message(KAFIG_STATUS_RUNTIME_ERROR, "unreadable bytecode"));
    }
    /* compiled with JS_EVAL_FLAG_ASYNC: the result is a promise of the
     * {value} wrapper, in both modes */
    return start(JS_EvalFunction(ctx, fn), 1);
}

EXPORT(KAFIG_EXPORT_DISPATCH) uint32_t kafig_dispatch(uint32_t ptr, uint32_t name_len,
                                                     uint32_t params_len, uint32_t flags)
{
    JSAtom atom;
    JSValue fn, params, ret;
    char *base = (char *)(uintptr_t)ptr;
    op_begin(flags);
    if (!in_range(ptr, name_len + params_len) || name_len == 0 ||
        name_len > KAFIG_MAX_METHOD_LEN)
        return op_end(status_message(KAFIG_STATUS_BAD_INPUT, "bad event name or range"));
    atom = JS_NewAtomLen(ctx, base, name_len);
    if (atom == JS_ATOM_NULL)
        return op_end(finish_exception());
    fn = JS_GetProperty(ctx, handlers, atom);
    JS_FreeAtom(ctx, atom);
    if (!JS_IsFunction(ctx, fn)) {
        JS_FreeValue(ctx, fn);
        return op_end(KAFIG_STATUS_NO_HANDLER);
    }
    base[name_len + params_len] = '\0';
    params = JS_ParseJSON(ctx, base + name_len, params_len, "<event params>");
    if (JS_IsException(params)) {
        JS_FreeValue(ctx, fn);
        return op_end(finish_exception());
    }
    ret = JS_Call(ctx, fn, JS_UNDEFINED, 1, (JSValueConst *)&params);
    JS_FreeValue(ctx, fn);
    JS_FreeValue(ctx, params);
    return start(ret, 0);
}

EXPORT(KAFIG_EXPORT_RPC_SETTLE) uint32_t kafig_rpc_settle(uint32_t id, uint32_t ptr,
                                                         uint32_t len, uint32_t is_error)
{
    struct rpc_slot slot;
    JSValue arg, r;
    int status;
    free_result();
    if (!op_active || !op_async)
        return status_message(KAFIG_STATUS_BAD_INPUT, "no suspended operation");
    if (!in_range(ptr, len))
        return status_message(KAFIG_STATUS_BAD_INPUT, "reply outside memory");
    if (!rpc_take(id, &slot))
        return status_message(KAFIG_STATUS_BAD_INPUT, "unknown rpc id");
    if (is_error) {
        arg = JS_NewError(ctx);
        if (!JS_IsException(arg))
            JS_DefinePropertyValueStr(ctx, arg, "message",
                                      JS_NewStringLen(ctx, (const char *)(uintptr_t)ptr, len),
                                      JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
    } else {
        arg = parse_reply((char *)(uintptr_t)ptr, len);
    }
    if (JS_IsException(arg)) {
        /* an unparsable reply (or no memory) rejects the call */
        arg = JS_GetException(ctx);
        r = JS_Call(ctx, slot.reject, JS_UNDEFINED, 1, (JSValueConst *)&arg);
    } else {
        r = JS_Call(ctx, is_error ? slot.reject : slot.resolve, JS_UNDEFINED, 1,
                    (JSValueConst *)&arg);
    }
    JS_FreeValue(ctx, r);
    JS_FreeValue(ctx, arg);
    JS_FreeValue(ctx, slot.resolve);
    JS_FreeValue(ctx, slot.reject);
    status = run_async();
    if (status == KAFIG_STATUS_PENDING) {
        update_header();
        return status;
    }
    return op_end(status);
}

EXPORT(KAFIG_EXPORT_ABORT) void kafig_abort(void)
{
    free_result();
    if (!op_active)
        return;
    limit_status = limit_status ? limit_status : KAFIG_STATUS_CPU_LIMIT_EXCEEDED;
    op_end(KAFIG_STATUS_CPU_LIMIT_EXCEEDED);
}
