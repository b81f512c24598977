/* host.c: the `host` object scripts see (rpc, rpcSync, on), the tables
 * behind it, and the callbacks QuickJS makes (interrupt, stack overflow,
 * promise rejection). The tables live in C: no script can reach, replace
 * or enumerate them. */

/* ---- operation state shared with ops.c ---- */

static int op_active;     /* an operation is running or suspended */
static int op_async;      /* it was started with KAFIG_FLAG_ASYNC */
static JSValue op_promise; /* the promise the operation awaits, or undefined */

/* ---- pending async RPCs ---- */

struct rpc_slot {
    uint32_t id;
    JSValue resolve, reject;
};
static struct rpc_slot *rpc_slots;
static uint32_t rpc_count, rpc_cap, rpc_next_id;

static void rpc_forget_all(void)
{
    uint32_t i;
    for (i = 0; i < rpc_count; i++) {
        JS_FreeValue(ctx, rpc_slots[i].resolve);
        JS_FreeValue(ctx, rpc_slots[i].reject);
    }
    rpc_count = 0;
}

/* rpc_take removes the slot of id; returns 0 when there is none. */
static int rpc_take(uint32_t id, struct rpc_slot *out)
{
    uint32_t i;
    for (i = 0; i < rpc_count; i++) {
        if (rpc_slots[i].id == id) {
            *out = rpc_slots[i];
            rpc_slots[i] = rpc_slots[--rpc_count];
            return 1;
        }
    }
    return 0;
}

/* ---- unhandled rejections ----
 *
 * QuickJS's tracker says "rejected without a handler" when a promise is
 * rejected and "now handled" when a handler is attached, often a moment
 * later (`Promise.reject(e).catch(f)`, an async function's promise that the
 * caller awaits). Reporting the first call at once would report those. So
 * rejections are kept here and reported:
 *
 *  - at checkpoints: after the synchronous part of a sync operation, and
 *    whenever the async loop has run every queued job (as a browser reports
 *    them after its microtask checkpoint);
 *  - from the interrupt poll, for a script that keeps running: a rejection
 *    still unhandled at two successive polls of QuickJS's interrupt counter
 *    (KAFIG_INTERRUPT_INTERVAL poll points apart) is reported at that
 *    second poll, provided it is a poll at a jump of the interpreter (a
 *    loop or a branch of the script's code), the only place where the
 *    shim may run JavaScript (reading the error may run getters; patch 07
 *    marks those polls), otherwise at the next such poll.
 *
 * A rejection is thus never reported from a poll before its script ran at
 * least one full poll interval with it unhandled: one handled within that
 * interval (the same expression, the same tick of ordinary code) is never
 * reported at all. Polls are counted, not timed, so when a report happens
 * is the same on every run of the same script. */

#define MAX_TRACKED_REJECTIONS 1024
struct rejection {
    JSValue promise, reason;
    uint64_t seen; /* the poll that first saw it unhandled; 0: none yet */
};
static struct rejection rejections[MAX_TRACKED_REJECTIONS];
static uint32_t rejection_count;
/* the batch being reported (the tracker may add to rejections meanwhile) */
static struct rejection reporting_batch[MAX_TRACKED_REJECTIONS];
static int reporting;
static uint64_t counter_polls; /* polls of QuickJS's interrupt counter */

/* The stop word (abi.StopWord): never read or written by C. The host's
 * stop guard (added when a backend compiles the guest) may test it at every
 * loop header; the linker exports its address (build.sh: --export). */
volatile uint32_t kafig_stop_word;

/* Where QuickJS calls the interrupt handler from (patch 07). */
int kafig_poll_site;
#define KAFIG_POLL_COUNTER 1
#define KAFIG_POLL_JUMP 2

static void tracker(JSContext *c, JSValueConst promise, JSValueConst reason,
                    JS_BOOL is_handled, void *opaque)
{
    uint32_t i;
    (void)c;
    (void)opaque;
    if (is_handled) {
        for (i = 0; i < rejection_count; i++) {
            if (JS_VALUE_GET_PTR(rejections[i].promise) == JS_VALUE_GET_PTR(promise)) {
                JS_FreeValue(ctx, rejections[i].promise);
                JS_FreeValue(ctx, rejections[i].reason);
                rejections[i] = rejections[--rejection_count];
                return;
            }
        }
        return;
    }
    /* Past the cap, rejections go unreported rather than growing memory. */
    if (rejection_count >= MAX_TRACKED_REJECTIONS)
        return;
    rejections[rejection_count].promise = JS_DupValue(ctx, promise);
    rejections[rejection_count].reason = JS_DupValue(ctx, reason);
    rejections[rejection_count].seen = 0;
    rejection_count++;
}

static void rejections_clear(void)
{
    uint32_t i;
    for (i = 0; i < rejection_count; i++) {
        JS_FreeValue(ctx, rejections[i].promise);
        JS_FreeValue(ctx, rejections[i].reason);
    }
    rejection_count = 0;
}

/* report_rejections tells the host about the tracked rejections (all of
 * them, or with overdue_only those a poll before the current one saw),
 * except the operation's own result promise, until the host says stop.
 * Not reentrant: reading an error runs JavaScript, whose polls must not
 * start another report. */
static void report_rejections(int overdue_only)
{
    uint32_t i, n = 0, kept = 0;
    if (reporting || rejection_count == 0)
        return;
    reporting = 1;
    for (i = 0; i < rejection_count; i++) {
        struct rejection *r = &rejections[i];
        if (!overdue_only || (r->seen != 0 && r->seen < counter_polls))
            reporting_batch[n++] = *r;
        else
            rejections[kept++] = *r;
    }
    rejection_count = kept;
    for (i = 0; i < n; i++) {
        struct rejection *r = &reporting_batch[i];
        int own = JS_VALUE_GET_TAG(op_promise) == JS_TAG_OBJECT &&
                  JS_VALUE_GET_PTR(r->promise) == JS_VALUE_GET_PTR(op_promise);
        if (!own && !limit_status) {
            if (error_document(r->reason) == 0 &&
                host_rejection(xch.result_ptr, xch.result_len) && !limit_status)
                limit_status = KAFIG_STATUS_CPU_LIMIT_EXCEEDED;
            free_result();
        }
        JS_FreeValue(ctx, r->promise);
        JS_FreeValue(ctx, r->reason);
    }
    reporting = 0;
}

/* rejections_poll runs at every poll of QuickJS's interrupt counter: it
 * marks the rejections this poll sees for the first time and, at a jump of
 * the interpreter, reports those an earlier poll saw. What the script was
 * doing is left as it was: a pending exception (none is expected at a
 * jump) and the stack-overflow flag (reading an error near the stack limit
 * may set it without the script overflowing). */
static void rejections_poll(int at_jump)
{
    uint32_t i;
    int overdue = 0, overflow;
    JSValue pending;
    counter_polls++;
    for (i = 0; i < rejection_count; i++) {
        if (rejections[i].seen == 0)
            rejections[i].seen = counter_polls;
        else
            overdue = 1;
    }
    if (!overdue || !at_jump || reporting)
        return;
    pending = JS_GetException(ctx);
    overflow = stack_overflow_hit;
    report_rejections(1);
    stack_overflow_hit = overflow;
    if (!JS_IsUninitialized(pending))
        JS_Throw(ctx, pending);
}

/* ---- QuickJS callbacks ---- */

static int interrupt_handler(JSRuntime *r, void *opaque)
{
    int site = kafig_poll_site;
    (void)r;
    (void)opaque;
    kafig_poll_site = 0;
    xch.opcodes += KAFIG_INTERRUPT_INTERVAL;
    if (!initialized)
        return 0;
    if (limit_status)
        return 1;
    if (host_interrupt(xch.opcodes)) {
        limit_status = KAFIG_STATUS_CPU_LIMIT_EXCEEDED;
        return 1;
    }
    if (site != 0)
        rejections_poll(site == KAFIG_POLL_JUMP);
    return limit_status != 0;
}

/* Work counted by loops and allocations that have no poll point of their
 * own (see patch 04 and the allocator): every KAFIG_WORK_QUANTUM units the
 * host is asked, as at a poll point. */
#define KAFIG_WORK_QUANTUM (1 << 20)
static int64_t work_left = KAFIG_WORK_QUANTUM;

int kafig_poll_work(int64_t work)
{
    work_left -= work;
    if (work_left > 0)
        return limit_status != 0;
    work_left = KAFIG_WORK_QUANTUM;
    return interrupt_handler(rt, NULL);
}

int kafig_stopping(void)
{
    return limit_status != 0;
}

void kafig_note_stack_overflow(JSRuntime *r)
{
    (void)r;
    stack_overflow_hit = 1;
    stack_overflow_seen = 1;
}

void kafig_note_catch(JSRuntime *r)
{
    (void)r;
    stack_overflow_hit = 0;
}

/* ---- the host object ---- */

static JSValue handlers; /* event name -> function, null prototype */

/* name_arg checks and converts an RPC method or event name. */
static const char *name_arg(JSValueConst v, size_t *len, const char *what)
{
    const char *s;
    if (!JS_IsString(v)) {
        JS_ThrowTypeError(ctx, "%s must be a string", what);
        return NULL;
    }
    s = JS_ToCStringLen(ctx, len, v);
    if (!s)
        return NULL;
    if (*len == 0 || *len > KAFIG_MAX_METHOD_LEN) {
        JS_FreeCString(ctx, s);
        JS_ThrowRangeError(ctx, "%s must be 1 to %d bytes long", what, KAFIG_MAX_METHOD_LEN);
        return NULL;
    }
    return s;
}

/* params_json serializes RPC params; undefined (and anything JSON drops)
 * becomes null. */
static const char *params_json(JSValueConst v, size_t *len, JSValue *holder)
{
    *holder = JS_JSONStringify(ctx, v, JS_UNDEFINED, JS_UNDEFINED);
    if (JS_IsException(*holder))
        return NULL;
    if (JS_IsUndefined(*holder)) {
        *len = 4;
        return "null";
    }
    return JS_ToCStringLen(ctx, len, *holder);
}

/* The arguments of host.rpc and host.rpcSync, converted: the method name
 * and the params as JSON, both valid until rpc_args_free. */
struct rpc_args {
    const char *method, *params;
    size_t mlen, plen;
    JSValue holder; /* the params' JSON string, or undefined for "null" */
};

/* rpc_args_get converts (method, params); returns -1 with an exception
 * pending, having freed what it took. what names the function in errors. */
static int rpc_args_get(struct rpc_args *a, int argc, JSValueConst *argv, const char *what)
{
    a->holder = JS_UNDEFINED;
    a->method = name_arg(argc > 0 ? argv[0] : JS_UNDEFINED, &a->mlen, what);
    if (!a->method)
        return -1;
    a->params = params_json(argc > 1 ? argv[1] : JS_UNDEFINED, &a->plen, &a->holder);
    if (!a->params) {
        JS_FreeCString(ctx, a->method);
        JS_FreeValue(ctx, a->holder);
        return -1;
    }
    return 0;
}

static void rpc_args_free(struct rpc_args *a)
{
    JS_FreeCString(ctx, a->method);
    if (!JS_IsUndefined(a->holder)) {
        JS_FreeCString(ctx, a->params);
        JS_FreeValue(ctx, a->holder);
    }
}

static JSValue reject_with(const char *msg)
{
    JSValue funcs[2], p, err;
    p = JS_NewPromiseCapability(ctx, funcs);
    if (JS_IsException(p))
        return p;
    err = JS_NewError(ctx);
    JS_DefinePropertyValueStr(ctx, err, "message", JS_NewString(ctx, msg),
                              JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
    JS_FreeValue(ctx, JS_Call(ctx, funcs[1], JS_UNDEFINED, 1, (JSValueConst *)&err));
    JS_FreeValue(ctx, err);
    JS_FreeValue(ctx, funcs[0]);
    JS_FreeValue(ctx, funcs[1]);
    return p;
}

static JSValue js_host_rpc(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    struct rpc_args a;
    JSValue p, funcs[2];
    uint32_t id;
    struct rpc_slot *slots;
    (void)c;
    (void)this_val;

    if (rpc_args_get(&a, argc, argv, "host.rpc: method") < 0)
        return JS_EXCEPTION;
    if (!op_active || !op_async) {
        p = reject_with("host.rpc needs an async evaluation (kafig.WithAsync)");
        goto done;
    }
    if (rpc_count == rpc_cap) {
        uint32_t cap = rpc_cap ? rpc_cap * 2 : 16;
        slots = js_realloc(ctx, rpc_slots, cap * sizeof(*slots));
        if (!slots) {
            p = JS_EXCEPTION;
            goto done;
        }
        rpc_slots = slots;
        rpc_cap = cap;
    }
    p = JS_NewPromiseCapability(ctx, funcs);
    if (JS_IsException(p))
        goto done;
    id = ++rpc_next_id;
    if (host_rpc_async(id, (uint32_t)(uintptr_t)a.method, (uint32_t)a.mlen,
                       (uint32_t)(uintptr_t)a.params, (uint32_t)a.plen) != 0) {
        JS_FreeValue(ctx, p);
        JS_FreeValue(ctx, funcs[0]);
        JS_FreeValue(ctx, funcs[1]);
        p = reject_with("host.rpc refused: too many calls pending");
        goto done;
    }
    rpc_slots[rpc_count].id = id;
    rpc_slots[rpc_count].resolve = funcs[0];
    rpc_slots[rpc_count].reject = funcs[1];
    rpc_count++;
done:
    rpc_args_free(&a);
    return p;
}

/* parse_reply turns a JSON reply of len bytes at buf (with room for a NUL
 * at buf[len]) into a value. */
static JSValue parse_reply(char *buf, size_t len)
{
    buf[len] = '\0';
    return JS_ParseJSON(ctx, buf, len, "<rpc reply>");
}

static JSValue throw_message(char *buf, size_t len)
{
    JSValue err = JS_NewError(ctx), msg;
    if (JS_IsException(err))
        return err;
    msg = JS_NewStringLen(ctx, buf, len);
    JS_DefinePropertyValueStr(ctx, err, "message", msg,
                              JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
    return JS_Throw(ctx, err);
}

static JSValue js_host_rpc_sync(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    struct rpc_args a;
    JSValue ret;
    uint64_t answer;
    uint32_t status, len;
    char *buf;
    (void)c;
    (void)this_val;

    if (rpc_args_get(&a, argc, argv, "host.rpcSync: method") < 0)
        return JS_EXCEPTION;
    answer = host_rpc_sync((uint32_t)(uintptr_t)a.method, (uint32_t)a.mlen,
                           (uint32_t)(uintptr_t)a.params, (uint32_t)a.plen);
    rpc_args_free(&a);
    status = (uint32_t)(answer >> 32);
    len = (uint32_t)answer;
    if (len < KAFIG_EXCHANGE_DATA_SIZE) {
        buf = (char *)xch.data;
        if (status == KAFIG_RPC_OK)
            return parse_reply(buf, len);
        return throw_message(buf, len);
    }
    buf = js_malloc(ctx, (size_t)len + 1);
    if (!buf)
        return JS_EXCEPTION;
    host_rpc_sync_take((uint32_t)(uintptr_t)buf, len);
    if (status == KAFIG_RPC_OK)
        ret = parse_reply(buf, len);
    else
        ret = throw_message(buf, len);
    js_free(ctx, buf);
    return ret;
}

static JSValue js_host_on(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv)
{
    size_t len;
    const char *name;
    JSAtom atom;
    int r;
    (void)c;
    (void)this_val;

    name = name_arg(argc > 0 ? argv[0] : JS_UNDEFINED, &len, "host.on: name");
    if (!name)
        return JS_EXCEPTION;
    if (argc < 2 || !JS_IsFunction(ctx, argv[1])) {
        JS_FreeCString(ctx, name);
        return JS_ThrowTypeError(ctx, "host.on: handler must be a function");
    }
    atom = JS_NewAtomLen(ctx, name, len);
    JS_FreeCString(ctx, name);
    if (atom == JS_ATOM_NULL)
        return JS_EXCEPTION;
    r = JS_DefinePropertyValue(ctx, handlers, atom, JS_DupValue(ctx, argv[1]), JS_PROP_C_W_E);
    JS_FreeAtom(ctx, atom);
    if (r < 0)
        return JS_EXCEPTION;
    return JS_UNDEFINED;
}

/* define_host creates the frozen global `host`. */
static void define_host(void)
{
    JSValue host = JS_NewObject(ctx);
    JSValue global = JS_GetGlobalObject(ctx);
    const int ro = JS_PROP_ENUMERABLE; /* not writable, not configurable */

    JS_DefinePropertyValueStr(ctx, host, "rpc",
                              JS_NewCFunction(ctx, js_host_rpc, "rpc", 2), ro);
    JS_DefinePropertyValueStr(ctx, host, "rpcSync",
                              JS_NewCFunction(ctx, js_host_rpc_sync, "rpcSync", 2), ro);
    JS_DefinePropertyValueStr(ctx, host, "on",
                              JS_NewCFunction(ctx, js_host_on, "on", 2), ro);
    JS_PreventExtensions(ctx, host);
    JS_DefinePropertyValueStr(ctx, global, "host", host, 0);
    JS_FreeValue(ctx, global);

    handlers = JS_NewObjectProto(ctx, JS_NULL);
}
