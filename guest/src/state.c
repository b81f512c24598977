/* state.c: the guest's global state, the exchange area and the allocator.
 *
 * One instance runs one operation at a time (an eval, a dispatch, a
 * compile); an async operation may be suspended while it waits for RPC
 * replies. Everything here is reset or checked at the start of each
 * operation. */

static JSRuntime *rt;
static JSContext *ctx;

/* Set at the end of the Wizer initializer and snapshotted as 1: host
 * imports must not be called while Wizer runs the initializer. */
static int initialized;
/* Math.random is re-seeded from WASI randomness on first use. */
static int seeded;

/* The exchange area (see abi/ABI.md). The layout is checked at compile
 * time against the generated offsets. */
struct exchange {
    uint32_t result_ptr;
    uint32_t result_len;
    uint64_t heap_used;
    uint64_t heap_limit;
    uint64_t opcodes;
    uint32_t pending;
    uint32_t data_cap;
    uint32_t source_name_len;
    uint8_t reserved[KAFIG_EXCH_HEADER_SIZE - 44];
    uint8_t data[KAFIG_EXCHANGE_DATA_SIZE];
    uint8_t source_name[KAFIG_MAX_SOURCE_NAME_LEN];
};
_Static_assert(offsetof(struct exchange, result_ptr) == KAFIG_EXCH_RESULT_PTR, "abi");
_Static_assert(offsetof(struct exchange, result_len) == KAFIG_EXCH_RESULT_LEN, "abi");
_Static_assert(offsetof(struct exchange, heap_used) == KAFIG_EXCH_HEAP_USED, "abi");
_Static_assert(offsetof(struct exchange, heap_limit) == KAFIG_EXCH_HEAP_LIMIT, "abi");
_Static_assert(offsetof(struct exchange, opcodes) == KAFIG_EXCH_OPCODES, "abi");
_Static_assert(offsetof(struct exchange, pending) == KAFIG_EXCH_PENDING, "abi");
_Static_assert(offsetof(struct exchange, data_cap) == KAFIG_EXCH_DATA_CAP, "abi");
_Static_assert(offsetof(struct exchange, source_name_len) == KAFIG_EXCH_SOURCE_NAME_LEN, "abi");
_Static_assert(offsetof(struct exchange, data) == KAFIG_EXCH_HEADER_SIZE, "abi");
_Static_assert(offsetof(struct exchange, source_name) == KAFIG_EXCH_SOURCE_NAME, "abi");
_Static_assert(sizeof(struct exchange) == KAFIG_EXCH_SIZE, "abi");

static struct exchange xch __attribute__((aligned(16)));
/* A result too large for the data area; freed at the next export call. */
static uint8_t *result_heap;

/* Why the current operation must end, whatever the script does. The first
 * limit hit wins; polls stop the script as soon as any is set. */
static int limit_status; /* 0, or KAFIG_STATUS_CPU_LIMIT_EXCEEDED / _MEMORY_ */
/* The stack check fired in this operation (seen), and no catch or finally
 * block has taken an exception since (hit): see finish_exception. */
static int stack_overflow_hit;
static int stack_overflow_seen;

/* ---- allocator: the QuickJS heap, with its limit and an OOM flag ---- */

static JSMallocState *heap_state;

/* The heap limit the host set (kafig_set_limits), and the allowance above
 * it that the shim may grant after an operation hit it (see
 * heap_allowance_update in ops.c). The allocator enforces their sum. */
static size_t heap_base_limit = (size_t)-1;
static size_t heap_allowance;

int kafig_poll_work(int64_t work);

static void note_oom(void)
{
    if (!limit_status)
        limit_status = KAFIG_STATUS_MEMORY_LIMIT_EXCEEDED;
}

/* A cache of freed small blocks in front of malloc, one free list per
 * 16-byte size class, as glibc's tcache does natively: QuickJS allocates
 * and frees small objects (strings, shapes, property arrays) all the time,
 * and dlmalloc's free path (coalescing, bin upkeep) is a measurable share
 * of a JSON round trip. A cached block stays allocated for dlmalloc but is
 * no longer counted in the JS heap (k_free subtracted it); the cache holds
 * at most SMALL_DEPTH blocks of each class, under 70 KiB in all. */
#define SMALL_CLASSES 16 /* classes 1..16: blocks of at least 16..256 bytes */
#define SMALL_DEPTH 32

static void *small_head[SMALL_CLASSES + 1];
static uint8_t small_len[SMALL_CLASSES + 1];

/* small_take returns a block of at least size bytes: a cached one of the
 * size's class, or a fresh one of the class's full size (so that any block
 * of class c holds c * 16 bytes). */
static void *small_take(size_t size)
{
    size_t c = (size + 15) >> 4;
    void *p;
    if (c == 0 || c > SMALL_CLASSES)
        return malloc(size);
    p = small_head[c];
    if (!p)
        return malloc(c << 4);
    small_head[c] = *(void **)p;
    small_len[c]--;
    return p;
}

/* small_give caches p (of usable bytes) in the class its size fills, or
 * frees it when that class is full or it is too large. */
static void small_give(void *p, size_t usable)
{
    size_t c = usable >> 4;
    if (c == 0 || c > SMALL_CLASSES || small_len[c] == SMALL_DEPTH) {
        free(p);
        return;
    }
    *(void **)p = small_head[c];
    small_head[c] = p;
    small_len[c]++;
}

static void *k_malloc(JSMallocState *s, size_t size)
{
    void *p;
    heap_state = s; /* the runtime's own state after JS_NewRuntime2 */
    /* Allocation counts as work, so that builtins that allocate in a loop
     * of their own still consult the host now and then; a stop is recorded
     * and takes effect at the next poll point (failing the allocation
     * instead would drive QuickJS down rarely tested paths). */
    kafig_poll_work(size / 64 + 1);
    if (s->malloc_size + size > s->malloc_limit) {
        note_oom();
        return NULL;
    }
    p = small_take(size);
    if (!p) {
        note_oom();
        return NULL;
    }
    s->malloc_count++;
    s->malloc_size += malloc_usable_size(p) + 8;
    return p;
}

static void k_free(JSMallocState *s, void *p)
{
    if (!p)
        return;
    size_t usable = malloc_usable_size(p);
    s->malloc_count--;
    s->malloc_size -= usable + 8;
    small_give(p, usable);
}

static void *k_realloc(JSMallocState *s, void *p, size_t size)
{
    size_t old;
    void *q;
    if (!p)
        return size ? k_malloc(s, size) : NULL;
    old = malloc_usable_size(p);
    if (size == 0) {
        k_free(s, p);
        return NULL;
    }
    if (size > old && s->malloc_size + (size - old) > s->malloc_limit) {
        note_oom();
        return NULL;
    }
    q = realloc(p, size);
    if (!q) {
        note_oom();
        return NULL;
    }
    s->malloc_size += malloc_usable_size(q) - old;
    return q;
}

static size_t k_usable_size(const void *p)
{
    return malloc_usable_size((void *)p);
}

static const JSMallocFunctions kafig_malloc_funcs = {
    k_malloc, k_free, k_realloc, k_usable_size,
};

/* ---- results ---- */

static void free_result(void)
{
    free(result_heap);
    result_heap = NULL;
    xch.result_ptr = 0;
    xch.result_len = 0;
}

/* set_result copies bytes into the data area, or into a buffer when they
 * do not fit. Returns 0, or -1 when no memory is left for the buffer. */
static int set_result(const void *p, size_t len)
{
    free_result();
    if (len <= KAFIG_EXCHANGE_DATA_SIZE) {
        memmove(xch.data, p, len);
        xch.result_ptr = (uint32_t)(uintptr_t)xch.data;
    } else {
        result_heap = malloc(len);
        if (!result_heap)
            return -1;
        memcpy(result_heap, p, len);
        xch.result_ptr = (uint32_t)(uintptr_t)result_heap;
    }
    xch.result_len = (uint32_t)len;
    return 0;
}

static int status_message(int status, const char *msg)
{
    set_result(msg, strlen(msg));
    return status;
}

static void update_header(void);
