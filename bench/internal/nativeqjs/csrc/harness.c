/* harness.c: the native QuickJS baseline of kafig's benchmarks.
 *
 * Linked with libquickjs.a built by guest/native.sh (gcc -O2, the same
 * pinned and patched source as the guest). It reads commands on stdin and
 * answers one line each on stdout; every timing is taken here around the
 * measured loop only (wall: CLOCK_MONOTONIC, cpu: CLOCK_PROCESS_CPUTIME_ID),
 * so the pipe to the Go process costs nothing per iteration.
 *
 *   src <len>\n<len bytes>   store a source; answers "ok <index>"
 *   eval <index> <n>         new runtime+context (untimed), then n times:
 *                            JS_Eval (global) + JSON.stringify of the result
 *                            answers "ok <wall ns> <cpu ns> <JSON of last
 *                            result>"
 *   evalc <index> <n>        compile the source to bytecode (untimed), then
 *                            n times: JS_ReadObject + JS_EvalFunction +
 *                            JSON.stringify; answers like eval
 *   new <n>                  n times JS_NewRuntime + JS_NewContext + limits,
 *                            timed in batches, freed untimed;
 *                            "ok <wall ns> <cpu ns>"
 *   mem <n>                  n live runtime+context pairs: RSS delta in
 *                            bytes (from /proc/self/statm); "ok <bytes>"
 *   quit
 *
 * Runtimes get the guest's settings: a 32 MiB memory limit, a 256 KiB
 * stack limit and an interrupt handler that never stops (the guest polls
 * too). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <malloc.h>

#include "quickjs.h"

#define MAX_SRC 64

static char *srcs[MAX_SRC];
static size_t src_lens[MAX_SRC];
static int nsrc;

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
static uint64_t cpu_ns(void) { return clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

static int interrupt_handler(JSRuntime *rt, void *opaque)
{
    (void)rt;
    (*(uint64_t *)opaque)++;
    return 0;
}

static uint64_t polls;

static JSContext *new_context(void)
{
    JSRuntime *rt = JS_NewRuntime();
    JSContext *ctx;
    if (!rt)
        return NULL;
    JS_SetMemoryLimit(rt, 32u << 20);
    JS_SetMaxStackSize(rt, 256u << 10);
    JS_SetInterruptHandler(rt, interrupt_handler, &polls);
    ctx = JS_NewContext(rt);
    if (!ctx)
        JS_FreeRuntime(rt);
    return ctx;
}

static void free_context(JSContext *ctx)
{
    JSRuntime *rt = JS_GetRuntime(ctx);
    JS_FreeContext(ctx);
    JS_FreeRuntime(rt);
}

/* one line: no newline inside */
static void print_clean(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        putchar(s[i] == '\n' || s[i] == '\r' ? ' ' : s[i]);
}

static void answer_error(JSContext *ctx, const char *what)
{
    JSValue e = JS_GetException(ctx);
    size_t n = 0;
    const char *s = JS_ToCStringLen(ctx, &n, e);
    printf("err %s: ", what);
    if (s) {
        print_clean(s, n);
        JS_FreeCString(ctx, s);
    }
    putchar('\n');
    JS_FreeValue(ctx, e);
}

/* stringify v (consumed) into *out; returns 0 or -1 on exception */
static int stringify(JSContext *ctx, JSValue v, JSValue *out)
{
    JSValue s;
    if (JS_IsException(v))
        return -1;
    s = JS_JSONStringify(ctx, v, JS_UNDEFINED, JS_UNDEFINED);
    JS_FreeValue(ctx, v);
    if (JS_IsException(s))
        return -1;
    JS_FreeValue(ctx, *out);
    *out = s;
    return 0;
}

static void answer_ok(JSContext *ctx, uint64_t ns, uint64_t cpu, JSValue last)
{
    printf("ok %llu %llu ", (unsigned long long)ns, (unsigned long long)cpu);
    if (JS_IsString(last)) {
        size_t n = 0;
        const char *s = JS_ToCStringLen(ctx, &n, last);
        if (s) {
            print_clean(s, n);
            JS_FreeCString(ctx, s);
        }
    } else {
        fputs("null", stdout);
    }
    putchar('\n');
}

static void cmd_eval(int idx, long n, int compiled)
{
    JSContext *ctx = new_context();
    JSValue last = JS_UNDEFINED;
    uint8_t *bc = NULL;
    size_t bc_len = 0;
    uint64_t t0, t1, c0, c1;
    if (!ctx) {
        printf("err no context\n");
        return;
    }
    if (compiled) {
        JSValue fn = JS_Eval(ctx, srcs[idx], src_lens[idx], "<eval>",
                             JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY);
        if (JS_IsException(fn)) {
            answer_error(ctx, "compile");
            free_context(ctx);
            return;
        }
        bc = JS_WriteObject(ctx, &bc_len, fn, JS_WRITE_OBJ_BYTECODE);
        JS_FreeValue(ctx, fn);
        if (!bc) {
            answer_error(ctx, "write");
            free_context(ctx);
            return;
        }
    }
    c0 = cpu_ns();
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
        JSValue v;
        if (compiled) {
            JSValue fn = JS_ReadObject(ctx, bc, bc_len, JS_READ_OBJ_BYTECODE);
            if (JS_IsException(fn)) {
                answer_error(ctx, "read");
                goto done;
            }
            v = JS_EvalFunction(ctx, fn);
        } else {
            v = JS_Eval(ctx, srcs[idx], src_lens[idx], "<eval>", JS_EVAL_TYPE_GLOBAL);
        }
        if (stringify(ctx, v, &last) < 0) {
            answer_error(ctx, "eval");
            goto done;
        }
    }
    t1 = now_ns();
    c1 = cpu_ns();
    answer_ok(ctx, t1 - t0, c1 - c0, last);
done:
    JS_FreeValue(ctx, last);
    if (bc)
        js_free(ctx, bc);
    free_context(ctx);
}

#define BATCH 100

static void cmd_new(long n)
{
    JSContext *batch[BATCH];
    uint64_t total = 0, cpu = 0;
    while (n > 0) {
        int k = n < BATCH ? (int)n : BATCH;
        uint64_t c0 = cpu_ns();
        uint64_t t0 = now_ns();
        for (int i = 0; i < k; i++) {
            batch[i] = new_context();
            if (!batch[i]) {
                printf("err no context\n");
                return;
            }
        }
        total += now_ns() - t0;
        cpu += cpu_ns() - c0;
        for (int i = 0; i < k; i++)
            free_context(batch[i]);
        n -= k;
    }
    printf("ok %llu %llu\n", (unsigned long long)total, (unsigned long long)cpu);
}

static long rss_bytes(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static void cmd_mem(long n)
{
    JSContext **all = calloc((size_t)n, sizeof *all);
    long before, after;
    if (!all) {
        printf("err no memory\n");
        return;
    }
    malloc_trim(0);
    before = rss_bytes();
    for (long i = 0; i < n; i++) {
        all[i] = new_context();
        if (!all[i]) {
            printf("err no context\n");
            n = i;
            goto done;
        }
    }
    after = rss_bytes();
    printf("ok %ld\n", after - before);
done:
    for (long i = 0; i < n; i++)
        free_context(all[i]);
    free(all);
    malloc_trim(0);
}

int main(void)
{
    char line[256];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        long a = 0, b = 0;
        if (sscanf(line, "src %ld", &a) == 1) {
            char *s;
            if (nsrc == MAX_SRC || a < 0 || !(s = malloc((size_t)a + 1))) {
                printf("err too many sources\n");
                return 1;
            }
            if (a > 0 && fread(s, 1, (size_t)a, stdin) != (size_t)a) {
                printf("err short source\n");
                return 1;
            }
            s[a] = '\0';
            srcs[nsrc] = s;
            src_lens[nsrc] = (size_t)a;
            printf("ok %d\n", nsrc++);
        } else if (sscanf(line, "eval %ld %ld", &a, &b) == 2 && a >= 0 && a < nsrc) {
            cmd_eval((int)a, b, 0);
        } else if (sscanf(line, "evalc %ld %ld", &a, &b) == 2 && a >= 0 && a < nsrc) {
            cmd_eval((int)a, b, 1);
        } else if (sscanf(line, "new %ld", &a) == 1) {
            cmd_new(a);
        } else if (sscanf(line, "mem %ld", &a) == 1 && a > 0) {
            cmd_mem(a);
        } else if (strncmp(line, "quit", 4) == 0) {
            return 0;
        } else {
            printf("err bad command\n");
        }
    }
    return 0;
}
