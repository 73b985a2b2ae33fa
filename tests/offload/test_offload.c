/* Unit tests for the offloaded table store (engine/offload.h) and the row cache's
 * multi-chunk pinning it relies on (engine/rowcache.h).
 *
 * Every check runs on the CPU backend and, where ordering matters, on "lazy"
 * backends written here that model an asynchronous device on the host: compute
 * (gather, scatter, zero, copy) is only QUEUED and runs at a drain (download,
 * sumsq, synchronize); copies run either at once (a copy queue racing ahead of
 * queued compute) or only when a fence is waited for (a slow copy queue). Host
 * memory stays host memory, so results are compared bit for bit; an offload
 * store that refilled a slot still read by queued compute, read a slot before
 * its copy, reused a staging buffer too early or rewrote an index buffer under
 * queued gathers returns wrong rows here. */
#include "engine/offload.h"
#include "kernels/cpu/ops.h"
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ lazy backends */

typedef enum { OP_GATHER, OP_SCATTER, OP_ZERO, OP_COPY, OP_WAIT, OP_ADAMW_ROWS } OpKind;
typedef struct {
    OpKind kind;
    float *out;
    const float *src;
    const int32_t *idx;
    int N, F;
    size_t stride, bytes;
    guint upto;        /* OP_WAIT: copies up to this count must have run */
    float *m, *v;      /* OP_ADAMW_ROWS: out = params, src = gradients, F = W */
    float hyper[6];    /* lr, beta1, beta2, eps, wd, grad_scale */
    int t;
} Op;
typedef struct { void *dst; const void *src; size_t bytes; } Copy;

static GArray *lz_ops, *lz_copies;
static guint lz_copies_done;
static guint lz_fence[STEM_KERNELS_FENCES];
static gboolean lz_eager;   /* copies run at once (TRUE) or at fence waits only (FALSE) */
static StemKernels lazy_k;

static void lz_run_copies(guint upto)
{
    for (; lz_copies_done < upto; lz_copies_done++) {
        Copy *c = &g_array_index(lz_copies, Copy, lz_copies_done);
        memcpy(c->dst, c->src, c->bytes);
    }
}

static void lz_drain(void)
{
    for (guint i = 0; i < lz_ops->len; i++) {
        Op *op = &g_array_index(lz_ops, Op, i);
        switch (op->kind) {
        case OP_GATHER:
            for (int r = 0; r < op->N; r++)
                memcpy(op->out + (size_t)r * op->F, op->src + (size_t)op->idx[r] * op->stride,
                       sizeof(float) * (size_t)op->F);
            break;
        case OP_SCATTER:
            for (int r = 0; r < op->N; r++)
                for (int f = 0; f < op->F; f++) op->out[(size_t)op->idx[r] * op->stride + f] += op->src[(size_t)r * op->F + f];
            break;
        case OP_ZERO: memset(op->out, 0, op->bytes); break;
        case OP_COPY: memmove(op->out, op->src, op->bytes); break;
        case OP_WAIT: lz_run_copies(op->upto); break;
        case OP_ADAMW_ROWS:
            for (int r = 0; r < op->N; r++) {
                const size_t off = (size_t)op->idx[r] * op->stride;
                op_adamw(op->out + off, op->src + (size_t)r * op->F, op->m + off, op->v + off, (size_t)op->F,
                         op->hyper[0], op->hyper[1], op->hyper[2], op->hyper[3], op->hyper[4], op->t, op->hyper[5]);
            }
            break;
        }
    }
    g_array_set_size(lz_ops, 0);
}

static void lz_push(Op op) { g_array_append_val(lz_ops, op); }
static void lz_gather(float *out, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    lz_push((Op){ .kind = OP_GATHER, .out = out, .src = src, .idx = idx, .N = N, .F = F, .stride = stride });
}
static void lz_scatter(float *dst, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    lz_push((Op){ .kind = OP_SCATTER, .out = dst, .src = src, .idx = idx, .N = N, .F = F, .stride = stride });
}
static void lz_zero(void *p, size_t bytes) { lz_push((Op){ .kind = OP_ZERO, .out = p, .bytes = bytes }); }
static void lz_copy(void *dst, const void *src, size_t bytes)
{
    lz_push((Op){ .kind = OP_COPY, .out = dst, .src = src, .bytes = bytes });
}
/* synchronous upload that does NOT wait for queued compute (the contract does not promise it) */
static void lz_upload(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void lz_download(void *dst, const void *src, size_t bytes) { lz_drain(); memcpy(dst, src, bytes); }
static void lz_synchronize(void) { lz_drain(); }   /* the compute queue only */
static double lz_sumsq(const float *x, size_t n) { lz_drain(); return op_sumsq(x, n); }
static void lz_adamw_rows(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W,
                          size_t stride, float lr, float beta1, float beta2, float eps, float wd, int t,
                          float grad_scale)
{
    lz_push((Op){ .kind = OP_ADAMW_ROWS, .out = p, .src = g, .idx = idx, .N = N, .F = W, .stride = stride, .m = m,
                  .v = v, .hyper = { lr, beta1, beta2, eps, wd, grad_scale }, .t = t });
}
static void lz_upload_async(void *dst, const void *src, size_t bytes)
{
    Copy c = { dst, src, bytes };
    g_array_append_val(lz_copies, c);
    if (lz_eager) lz_run_copies(lz_copies->len);
}
static void lz_fence_record(int f) { lz_fence[f] = lz_copies->len; }
static void lz_compute_wait(int f) { lz_push((Op){ .kind = OP_WAIT, .upto = lz_fence[f] }); }
static void lz_host_wait(int f) { lz_run_copies(lz_fence[f]); }
static void lz_copy_stats(double *c, double *s) { *c = 0; *s = 0; }

typedef enum { BK_CPU, BK_LAZY_EAGER_COPIES, BK_LAZY_SLOW_COPIES } Backend;
static const char *backend_name[] = { "cpu", "lazy compute, copies at once", "lazy compute, copies at fence waits" };

static const StemKernels *backend(Backend b)
{
    if (b == BK_CPU) return stem_kernels_cpu();
    if (!lz_ops) {
        lz_ops = g_array_new(FALSE, FALSE, sizeof(Op));
        lz_copies = g_array_new(FALSE, FALSE, sizeof(Copy));
    }
    g_assert_cmpuint(lz_ops->len, ==, 0);
    g_array_set_size(lz_copies, 0);
    lz_copies_done = 0;
    memset(lz_fence, 0, sizeof lz_fence);
    lz_eager = b == BK_LAZY_EAGER_COPIES;
    lazy_k = *stem_kernels_cpu();
    lazy_k.name = "lazy";
    lazy_k.upload = lz_upload;
    lazy_k.download = lz_download;
    lazy_k.copy = lz_copy;
    lazy_k.zero = lz_zero;
    lazy_k.synchronize = lz_synchronize;
    lazy_k.upload_async = lz_upload_async;
    lazy_k.fence_record = lz_fence_record;
    lazy_k.compute_wait = lz_compute_wait;
    lazy_k.host_wait = lz_host_wait;
    lazy_k.copy_stats = lz_copy_stats;
    lazy_k.sumsq = lz_sumsq;
    lazy_k.gather_rows = lz_gather;
    lazy_k.scatter_rows = lz_scatter;
    lazy_k.adamw_rows = lz_adamw_rows;
    return &lazy_k;
}

/* ------------------------------------------------------------------ fixtures */

enum { NS = 3, V = 300, FF = 24, W = NS * FF };

typedef struct {
    StemTableDtype dtype;
    void *base[NS];
    StemTables *t;
} Fix;

static float bf16_round(float x)
{
    guint32 u;
    memcpy(&u, &x, 4);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static Fix fix_new(StemTableDtype dtype, guint32 seed)
{
    Fix fx = { .dtype = dtype };
    GRand *r = g_rand_new_with_seed(seed);
    for (int j = 0; j < NS; j++) {
        if (dtype == STEM_TABLE_F32) {
            float *b = g_new(float, V * FF);
            for (int i = 0; i < V * FF; i++) b[i] = (float)g_rand_double_range(r, -0.2, 0.2);
            fx.base[j] = b;
        } else {
            guint16 *b = g_new(guint16, V * FF);
            for (int i = 0; i < V * FF; i++) {
                float x = (float)g_rand_double_range(r, -0.2, 0.2);
                guint32 u;
                memcpy(&u, &x, 4);
                b[i] = (guint16)(u >> 16);
            }
            fx.base[j] = b;
        }
    }
    fx.t = stem_tables_new(NS, V, FF, dtype, (const void *const *)fx.base);
    g_rand_free(r);
    return fx;
}

static void fix_free(Fix *fx)
{
    stem_tables_free(fx->t);
    for (int j = 0; j < NS; j++) g_free(fx->base[j]);
}

/* Skewed ids (hot tokens scattered over the vocabulary). */
static int draw_id(GRand *r)
{
    double u = g_rand_double(r);
    int rank = (int)(V * u * u * u);
    return (int)(((guint64)rank * 7919u + 13u) % V);
}

static int *draw_chunk(GRand *r, int max_n, int *n_out)
{
    int n = g_rand_int_range(r, 1, max_n + 1);
    int *ids = g_new(int, n);
    for (int i = 0; i < n; i++) ids[i] = draw_id(r);
    *n_out = n;
    return ids;
}

/* Chunks whose rows are queued now and checked later (after the next begin and
 * its prefetches): a store that broke an ordering rule shows wrong rows then. */
#define RING 4
typedef struct {
    const StemKernels *k;
    int maxpos;
    float *d_u[RING];          /* backend [NS, maxpos, FF] */
    float *expect[RING];       /* host [NS, maxpos, FF]: the effective rows at begin() */
    int n[RING];
    gboolean pending[RING];
    float *h;
    guint64 checked;
} Checker;

static Checker checker_new(const StemKernels *k, int maxpos)
{
    Checker c = { .k = k, .maxpos = maxpos };
    for (int s = 0; s < RING; s++) {
        c.d_u[s] = k->alloc(sizeof(float) * NS * maxpos * FF);
        c.expect[s] = g_new(float, NS * maxpos * FF);
    }
    c.h = g_new(float, NS * maxpos * FF);
    return c;
}

static void checker_free(Checker *c)
{
    for (int s = 0; s < RING; s++) {
        c->k->free(c->d_u[s]);
        g_free(c->expect[s]);
    }
    g_free(c->h);
}

/* Right after begin(): remember what the chunk must read (the overlay as it is now). */
static void checker_expect(Checker *c, const StemTables *t, int seq, const int32_t *ids, int n)
{
    int s = seq % RING;
    g_assert_false(c->pending[s]);
    for (int j = 0; j < NS; j++) stem_tables_gather(t, j, ids, n, c->expect[s] + (size_t)j * c->maxpos * FF);
    c->n[s] = n;
}

/* Queue the current chunk's rows (on a lazy backend they are read at the next drain). */
static void checker_rows(Checker *c, StemOffload *o, int seq)
{
    int s = seq % RING;
    for (int j = 0; j < NS; j++) stem_offload_rows(o, j, c->d_u[s] + (size_t)j * c->maxpos * FF);
    c->pending[s] = TRUE;
}

static void checker_queue(Checker *c, StemOffload *o, const StemTables *t, int seq, const int32_t *ids, int n)
{
    checker_expect(c, t, seq, ids, n);
    checker_rows(c, o, seq);
}

static void checker_check(Checker *c, int seq)
{
    int s = seq % RING;
    if (!c->pending[s]) return;
    for (int j = 0; j < NS; j++) {
        size_t off = (size_t)j * c->maxpos * FF, bytes = sizeof(float) * (size_t)c->n[s] * FF;
        c->k->download(c->h + off, c->d_u[s] + off, bytes);
        if (memcmp(c->h + off, c->expect[s] + off, bytes) != 0)
            g_error("chunk %d, STEM layer %d: rows differ from the table store", seq, j);
    }
    c->pending[s] = FALSE;
    c->checked++;
}

/* ------------------------------------------------------------------ 1. rows == gather */

/* n_chunks random chunks, `depth` chunks staged ahead of the one computing.
 * Chunk i's rows are read after the next chunks were staged (prefetch), queued on a
 * lazy backend, and checked after begin(i+1) and the stages that follow it. */
static void run_rows(StemTableDtype dtype, Backend bk, int capacity, int maxpos, int depth, int n_chunks)
{
    Fix fx = fix_new(dtype, 11 + (guint32)bk);
    const StemKernels *k = backend(bk);
    GError *err = NULL;
    StemOffload *o = stem_offload_new(fx.t, k, capacity, maxpos, &err);
    g_assert_no_error(err);
    GRand *r = g_rand_new_with_seed(1000 + depth);
    int **chunks = g_new(int *, n_chunks), *ns = g_new(int, n_chunks);
    for (int i = 0; i < n_chunks; i++) chunks[i] = draw_chunk(r, maxpos, &ns[i]);
    Checker ck = checker_new(k, maxpos);
    int next_stage = 0;
    for (int i = 0; i < n_chunks; i++) {
        g_assert_true(stem_offload_begin(o, chunks[i], ns[i], &err));
        g_assert_no_error(err);
        if (next_stage <= i) next_stage = i + 1;
        checker_expect(&ck, fx.t, i, chunks[i], ns[i]);
        for (; next_stage < n_chunks && next_stage <= i + depth; next_stage++) {
            g_assert_true(stem_offload_stage(o, chunks[next_stage], ns[next_stage], &err));
            g_assert_no_error(err);
        }
        checker_rows(&ck, o, i);
        if (i > 0) checker_check(&ck, i - 1);
    }
    checker_check(&ck, n_chunks - 1);
    g_assert_cmpuint(ck.checked, ==, (guint64)n_chunks);
    StemOffloadStats st;
    stem_offload_stats(o, &st);
    g_test_message("%s, %s, capacity %d, prefetch %d: %" G_GUINT64_FORMAT " misses / %" G_GUINT64_FORMAT
                   " lookups, %" G_GUINT64_FORMAT " evictions", dtype == STEM_TABLE_F32 ? "fp32" : "bf16",
                   backend_name[bk], capacity, depth, st.cache.misses, st.cache.lookups, st.cache.evictions);
    g_assert_cmpuint(st.cache.evictions, >, 100);   /* the stream really evicted */
    stem_offload_free(o);
    checker_free(&ck);
    for (int i = 0; i < n_chunks; i++) g_free(chunks[i]);
    g_free(chunks);
    g_free(ns);
    g_rand_free(r);
    fix_free(&fx);
}

static void test_rows(gconstpointer data)
{
    Backend bk = (Backend)GPOINTER_TO_INT(data);
    for (int dt = 0; dt < 2; dt++)
        for (int depth = 0; depth <= 2; depth++) {
            run_rows(dt ? STEM_TABLE_BF16 : STEM_TABLE_F32, bk, 40, 64, depth, 300);    /* slots = 64 */
            run_rows(dt ? STEM_TABLE_BF16 : STEM_TABLE_F32, bk, 110, 48, depth, 300);   /* room to prefetch */
        }
}

/* ------------------------------------------------------------------ 2. edits, on-device tables */

static void run_edits(Backend bk, int depth)
{
    Fix fx = fix_new(STEM_TABLE_F32, 5);
    const StemKernels *k = backend(bk);
    const int maxpos = 32, n_chunks = 400;
    GError *err = NULL;
    StemOffload *o = stem_offload_new(fx.t, k, 60, maxpos, &err);
    g_assert_no_error(err);
    GRand *r = g_rand_new_with_seed(77 + depth);
    int **chunks = g_new(int *, n_chunks), *ns = g_new(int, n_chunks);
    for (int i = 0; i < n_chunks; i++) chunks[i] = draw_chunk(r, maxpos, &ns[i]);
    Checker ck = checker_new(k, maxpos);
    float row[FF];
    int next_stage = 0, n_edits = 0;
    for (int i = 0; i < n_chunks; i++) {
        /* edits between chunks, on tokens of this chunk (possibly already staged) */
        int ne = g_rand_int_range(r, 0, 3);
        for (int e = 0; e < ne; e++) {
            int tok = chunks[i][g_rand_int_range(r, 0, ns[i])], j = g_rand_int_range(r, 0, NS);
            if (g_rand_boolean(r)) {
                for (int f = 0; f < FF; f++) row[f] = (float)g_rand_double_range(r, -1, 1);
                stem_tables_set_override(fx.t, j, tok, row);
            } else {
                stem_tables_clear_override(fx.t, j, tok);
            }
            n_edits++;
        }
        if (i % 97 == 50) stem_tables_clear_all_overrides(fx.t);
        if (i % 61 == 30) {
            /* the host base itself changed (a checkpoint loaded): invalidate_all */
            int tok = chunks[i][0];
            for (int j = 0; j < NS; j++) ((float *)fx.base[j])[(size_t)tok * FF] += 1.0f;
            stem_offload_invalidate_all(o);
        }
        g_assert_true(stem_offload_begin(o, chunks[i], ns[i], &err));
        g_assert_no_error(err);
        if (next_stage <= i) next_stage = i + 1;
        checker_expect(&ck, fx.t, i, chunks[i], ns[i]);
        /* an edit while the chunk is current, before or after the next chunks are
         * staged, does not change it (its rows are read after the edit) */
        if (i % 5 == 2) {
            for (int f = 0; f < FF; f++) row[f] = (float)g_rand_double_range(r, -1, 1);
            stem_tables_set_override(fx.t, 1, chunks[i][0], row);
        }
        for (; next_stage < n_chunks && next_stage <= i + depth; next_stage++)
            g_assert_true(stem_offload_stage(o, chunks[next_stage], ns[next_stage], &err));
        if (i % 5 == 4) {
            for (int f = 0; f < FF; f++) row[f] = (float)g_rand_double_range(r, -1, 1);
            stem_tables_set_override(fx.t, 0, chunks[i][ns[i] - 1], row);
        }
        checker_rows(&ck, o, i);
        if (i > 0) checker_check(&ck, i - 1);
    }
    checker_check(&ck, n_chunks - 1);
    g_assert_cmpint(n_edits, >, 200);
    StemOffloadStats st;
    stem_offload_stats(o, &st);
    g_assert_cmpuint(st.cache.invalidations, >, 0);
    stem_offload_free(o);
    checker_free(&ck);
    for (int i = 0; i < n_chunks; i++) g_free(chunks[i]);
    g_free(chunks);
    g_free(ns);
    g_rand_free(r);
    fix_free(&fx);
}

static void test_edits(gconstpointer data)
{
    Backend bk = (Backend)GPOINTER_TO_INT(data);
    for (int depth = 0; depth <= 2; depth++) run_edits(bk, depth);
}

/* The exact statement: an override shows in the next chunk, clearing it restores the
 * base bit for bit. */
static void test_edit_roundtrip(void)
{
    for (int dt = 0; dt < 2; dt++) {
        Fix fx = fix_new(dt ? STEM_TABLE_BF16 : STEM_TABLE_F32, 9);
        const StemKernels *k = stem_kernels_cpu();
        StemOffload *o = stem_offload_new(fx.t, k, 8, 4, NULL);
        int32_t ids[4] = { 7, 8, 7, 9 };
        float *u = g_new(float, 4 * FF), base[FF], row[FF];
        for (int f = 0; f < FF; f++) row[f] = 100.0f + f;
        stem_tables_base_row(fx.t, 2, 7, base);
        g_assert_true(stem_offload_begin(o, ids, 4, NULL));
        stem_offload_rows(o, 2, u);
        g_assert_cmpmem(u, sizeof base, base, sizeof base);
        stem_tables_set_override(fx.t, 2, 7, row);
        g_assert_true(stem_offload_begin(o, ids, 4, NULL));
        stem_offload_rows(o, 2, u);
        g_assert_cmpmem(u, sizeof row, row, sizeof row);
        g_assert_cmpmem(u + 2 * FF, sizeof row, row, sizeof row);
        stem_tables_clear_override(fx.t, 2, 7);
        g_assert_true(stem_offload_begin(o, ids, 4, NULL));
        stem_offload_rows(o, 2, u);
        g_assert_cmpmem(u, sizeof base, base, sizeof base);
        if (dt) for (int f = 0; f < FF; f++) g_assert_cmpfloat(base[f], ==, bf16_round(base[f]));
        stem_offload_free(o);
        g_free(u);
        fix_free(&fx);
    }
}

/* capacity == vocab: every token becomes resident, and after the warm-up nothing misses. */
static void test_on_device(void)
{
    Fix fx = fix_new(STEM_TABLE_BF16, 21);
    const StemKernels *k = stem_kernels_cpu();
    GError *err = NULL;
    StemOffload *o = stem_offload_new(fx.t, k, V, 50, &err);
    g_assert_no_error(err);
    Checker ck = checker_new(k, 50);
    int32_t ids[50];
    int seq = 0;
    for (int start = 0; start < V; start += 50, seq++) {   /* warm-up: every token once */
        for (int i = 0; i < 50; i++) ids[i] = (start + i) % V;
        g_assert_true(stem_offload_begin(o, ids, 50, &err));
        checker_queue(&ck, o, fx.t, seq, ids, 50);
        checker_check(&ck, seq);
    }
    StemOffloadStats st;
    stem_offload_stats(o, &st);
    g_assert_cmpuint(st.cache.misses, ==, V);
    g_assert_cmpint(st.slots, ==, V);
    stem_offload_reset_stats(o);
    GRand *r = g_rand_new_with_seed(3);
    for (int c = 0; c < 200; c++, seq++) {
        int n;
        int *ch = draw_chunk(r, 50, &n);
        g_assert_true(stem_offload_begin(o, ch, n, &err));
        checker_queue(&ck, o, fx.t, seq, ch, n);
        checker_check(&ck, seq);
        g_free(ch);
    }
    stem_offload_stats(o, &st);
    g_assert_cmpuint(st.cache.misses, ==, 0);
    g_assert_cmpuint(st.cache.bytes_moved, ==, 0);
    g_assert_cmpuint(st.cache.hits, ==, st.cache.lookups);
    g_assert_cmpuint(st.cache.lookups, ==, st.unique);
    stem_offload_free(o);
    checker_free(&ck);
    g_rand_free(r);
    fix_free(&fx);
}

/* ------------------------------------------------------------------ 3. statistics */

static void check_same_cache_stats(const StemRowCacheStats *a, const StemRowCacheStats *b)
{
    g_assert_cmpuint(a->chunks, ==, b->chunks);
    g_assert_cmpuint(a->lookups, ==, b->lookups);
    g_assert_cmpuint(a->hits, ==, b->hits);
    g_assert_cmpuint(a->misses, ==, b->misses);
    g_assert_cmpuint(a->evictions, ==, b->evictions);
    g_assert_cmpuint(a->rows_moved, ==, b->rows_moved);
    g_assert_cmpuint(a->bytes_moved, ==, b->bytes_moved);
}

/* Without prefetch, the store's decisions are those of a plain row cache (one chunk
 * pinned at a time) over the same unique-id sequence; with prefetch, those of a row
 * cache that pins two chunks when the second fits and otherwise waits for the
 * release (the deferred path), both paths taken. */
static void test_stats(void)
{
    for (int dt = 0; dt < 2; dt++)
        for (int depth = 0; depth <= 1; depth++) {
            Fix fx = fix_new(dt ? STEM_TABLE_BF16 : STEM_TABLE_F32, 31);
            const StemKernels *k = stem_kernels_cpu();
            const int cap = 56, maxpos = 48, n_chunks = 500;
            GError *err = NULL;
            StemOffload *o = stem_offload_new(fx.t, k, cap, maxpos, &err);
            g_assert_no_error(err);
            StemRowCacheOptions ro = { .vocab = V, .capacity = cap, .row_bytes = W * sizeof(float),
                                       .keep_history = TRUE, .max_chunks = depth ? 3 : 1 };
            StemRowCache *ref = stem_rowcache_new(&ro);
            StemDedup *dd = stem_dedup_new(V);
            GRand *r = g_rand_new_with_seed(4);
            int **chunks = g_new(int *, n_chunks), *ns = g_new(int, n_chunks);
            for (int i = 0; i < n_chunks; i++) chunks[i] = draw_chunk(r, maxpos, &ns[i]);
            int32_t *uq = g_new(int32_t, maxpos), *inv = g_new(int32_t, maxpos), *sl = g_new(int32_t, maxpos);
            int32_t *ms = g_new(int32_t, maxpos);
            guint64 positions = 0, unique = 0;
            int deferred = 0;
            gboolean next_deferred = FALSE;
            for (int i = 0; i < n_chunks; i++) {
                /* the store */
                g_assert_true(stem_offload_begin(o, chunks[i], ns[i], &err));
                if (depth && i + 1 < n_chunks) g_assert_true(stem_offload_stage(o, chunks[i + 1], ns[i + 1], &err));
                /* the reference */
                if (i > 0) stem_rowcache_release_chunk(ref);
                if (!depth || i == 0 || next_deferred) {
                    int nu = stem_dedup_chunk(dd, chunks[i], ns[i], uq, inv);
                    g_assert_cmpint(stem_rowcache_lookup_chunk(ref, uq, nu, sl, ms, NULL, NULL, &err), >=, 0);
                }
                if (depth && i + 1 < n_chunks) {
                    int nu = stem_dedup_chunk(dd, chunks[i + 1], ns[i + 1], uq, inv);
                    next_deferred = stem_rowcache_lookup_chunk(ref, uq, nu, sl, ms, NULL, NULL, NULL) < 0;
                    deferred += next_deferred;
                }
                int nu = stem_dedup_chunk(dd, chunks[i], ns[i], uq, inv);
                positions += (guint64)ns[i];
                unique += (guint64)nu;
            }
            StemOffloadStats st;
            stem_offload_stats(o, &st);
            check_same_cache_stats(&st.cache, stem_rowcache_stats(ref));
            g_assert_cmpuint(st.positions, ==, positions);
            g_assert_cmpuint(st.unique, ==, unique);
            g_assert_cmpfloat(st.dedup_saving, ==, 1.0 - (double)unique / (double)positions);
            g_assert_cmpuint(st.cache.bytes_moved, ==, st.cache.misses * W * sizeof(float));
            g_assert_cmpint(st.slots, ==, cap);
            g_assert_cmpint(st.capacity, ==, cap);
            g_assert_cmpfloat(st.copy_ms, >=, 0.0);
            g_assert_cmpfloat(st.stall_ms, ==, st.copy_ms);   /* CPU: nothing overlaps */
            g_assert_cmpfloat(st.overlap, ==, 0.0);
            if (depth) {
                g_test_message("prefetch: %d of %d chunks deferred", deferred, n_chunks - 1);
                g_assert_cmpint(deferred, >, 0);
                g_assert_cmpint(deferred, <, n_chunks - 1);
            }
            stem_offload_reset_stats(o);
            stem_offload_stats(o, &st);
            g_assert_cmpuint(st.positions, ==, 0);
            g_assert_cmpuint(st.cache.lookups, ==, 0);
            g_assert_cmpfloat(st.copy_ms, ==, 0.0);
            g_assert_cmpfloat(st.dedup_saving, ==, 0.0);
            stem_offload_free(o);
            stem_rowcache_free(ref);
            stem_dedup_free(dd);
            for (int i = 0; i < n_chunks; i++) g_free(chunks[i]);
            g_free(chunks); g_free(ns); g_free(uq); g_free(inv); g_free(sl); g_free(ms);
            g_rand_free(r);
            fix_free(&fx);
        }
}

/* ------------------------------------------------------------------ 4. offloaded training */

/* AdamW as PyTorch writes it (torch.optim.AdamW, single tensor, no amsgrad), in double:
 *   p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) */
static void torch_adamw(double *p, double *m, double *v, double g, double lr, double b1, double b2, double eps,
                        double wd, int t)
{
    *p *= 1.0 - lr * wd;
    *m = b1 * *m + (1.0 - b1) * g;
    *v = b2 * *v + (1.0 - b2) * g * g;
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    *p -= (lr / bc1) * *m / (sqrt(*v) / sqrt(bc2) + eps);
}


/* Eight steps over different chunks (with evictions between them, and prefetch when
 * depth is 1): rows touched by a chunk follow PyTorch's AdamW, every other row and its
 * moments stay bit-unchanged (lazy AdamW), the cache serves the updated rows right
 * after the step and in later chunks, and the gradient's sum of squares is the dense
 * one. Moments start non-zero and wd > 0, so the lazy and dense updates differ.
 * The cache is write-back: with flush_each the host buffers are flushed and checked
 * after every step; without, trained units reach the host only when evicted (checked:
 * some are) or at the final flush, and the rows served in between are checked against
 * the reference instead. The last step has an edit overlay (the host-side step). */
/* Rows h[n, FF] served for layer j: the host table's effective rows (exactly),
 * or, when the host is behind a write-back cache (want != NULL), the reference
 * rows want[V, FF] -- except rows the overlay shadows, served as they are. */
static void check_served(const float *h, const StemTables *t, int j, const int *ids, int n, const double *want,
                         float *ref)
{
    stem_tables_gather(t, j, ids, n, ref);
    if (!want) {
        g_assert_cmpmem(h, sizeof(float) * n * FF, ref, sizeof(float) * n * FF);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (stem_tables_has_override(t, j, ids[i])) {
            g_assert_cmpmem(h + i * FF, sizeof(float) * FF, ref + i * FF, sizeof(float) * FF);
            continue;
        }
        for (int f = 0; f < FF; f++) {
            double w = want[(size_t)ids[i] * FF + f];
            g_assert_cmpfloat(fabs(h[i * FF + f] - w), <=, 1e-6 + 1e-5 * fabs(w));
        }
    }
}

static void run_train(Backend bk, int depth, gboolean flush_each)
{
    Fix fx = fix_new(STEM_TABLE_F32, 41);
    const StemKernels *k = backend(bk);
    enum { MAXPOS = 40, STEPS = 8 };
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    GError *err = NULL;
    StemOffload *o = stem_offload_new(fx.t, k, 30, MAXPOS, &err);   /* slots 40: evictions between steps */
    g_assert_no_error(err);
    float *P[NS], *M[NS], *Vv[NS], *du[NS], *prevP[NS], *prevM[NS], *prevV[NS];
    double *rp[NS], *rm[NS], *rv[NS];
    GRand *r = g_rand_new_with_seed(8 + depth);
    for (int j = 0; j < NS; j++) {
        P[j] = fx.base[j];
        M[j] = g_new(float, V * FF);
        Vv[j] = g_new(float, V * FF);
        for (int i = 0; i < V * FF; i++) {   /* moments of an earlier run */
            M[j][i] = (float)g_rand_double_range(r, -0.01, 0.01);
            Vv[j][i] = (float)g_rand_double_range(r, 0, 1e-4);
        }
        rp[j] = g_new(double, V * FF);
        rm[j] = g_new(double, V * FF);
        rv[j] = g_new(double, V * FF);
        for (int i = 0; i < V * FF; i++) { rp[j][i] = P[j][i]; rm[j][i] = M[j][i]; rv[j][i] = Vv[j][i]; }
        du[j] = k->alloc(sizeof(float) * MAXPOS * FF);
        prevP[j] = g_new(float, V * FF);
        prevM[j] = g_new(float, V * FF);
        prevV[j] = g_new(float, V * FF);
    }
    float *G = g_new(float, (size_t)NS * V * FF), *h = g_new(float, MAXPOS * FF), *ref = g_new(float, MAXPOS * FF);
    float *d_u = k->alloc(sizeof(float) * MAXPOS * FF), over[FF];
    int *chunks[STEPS], ns[STEPS];
    for (int s = 0; s < STEPS; s++) chunks[s] = draw_chunk(r, MAXPOS, &ns[s]);
    gboolean touched[V], ever[V] = { FALSE };
    for (int s = 0; s < STEPS; s++) {
        const int *ids = chunks[s], n = ns[s];
        if (s == STEPS - 1) {   /* an edited row: the cache keeps serving the overlay after the step */
            for (int f = 0; f < FF; f++) over[f] = 5.0f + f;
            stem_tables_set_override(fx.t, 1, ids[0], over);
        }
        g_assert_true(stem_offload_begin(o, ids, n, &err));
        g_assert_no_error(err);
        if (depth && s + 1 < STEPS) g_assert_true(stem_offload_stage(o, chunks[s + 1], ns[s + 1], &err));
        for (int j = 0; j < NS; j++) {
            memcpy(prevP[j], P[j], sizeof(float) * V * FF);
            memcpy(prevM[j], M[j], sizeof(float) * V * FF);
            memcpy(prevV[j], Vv[j], sizeof(float) * V * FF);
            stem_offload_rows(o, j, d_u);
            k->download(h, d_u, sizeof(float) * n * FF);
            check_served(h, fx.t, j, ids, n, flush_each ? NULL : rp[j], ref);
            for (int i = 0; i < n * FF; i++) du[j][i] = (float)g_rand_double_range(r, -1, 1);
            stem_offload_accumulate_grad(o, j, du[j]);
        }
        /* the reference gradient: dense [V, F] per layer, scattered in position order */
        memset(G, 0, sizeof(float) * (size_t)NS * V * FF);
        memset(touched, 0, sizeof touched);
        for (int j = 0; j < NS; j++)
            for (int i = 0; i < n; i++)
                for (int f = 0; f < FF; f++) G[((size_t)j * V + ids[i]) * FF + f] += du[j][i * FF + f];
        double dense_sq = 0;
        for (size_t i = 0; i < (size_t)NS * V * FF; i++) dense_sq += (double)G[i] * G[i];
        for (int i = 0; i < n; i++) touched[ids[i]] = TRUE;
        double sq = stem_offload_grad_sumsq(o);
        g_assert_cmpfloat(fabs(sq - dense_sq), <=, 1e-12 * dense_sq);

        stem_offload_step(o, P, M, Vv, lr, b1, b2, eps, wd, s + 1, gs);
        for (int j = 0; j < NS; j++)
            for (int tok = 0; tok < V; tok++)
                for (int f = 0; f < FF && touched[tok]; f++) {
                    size_t i = (size_t)tok * FF + f;
                    torch_adamw(&rp[j][i], &rm[j][i], &rv[j][i], (double)G[(size_t)j * V * FF + i] * gs, lr, b1,
                                b2, eps, wd, s + 1);
                }
        for (int tok = 0; tok < V; tok++) ever[tok] |= touched[tok];

        if (flush_each) {
            stem_offload_flush(o);
            int n_touched = 0;
            for (int j = 0; j < NS; j++)
                for (int tok = 0; tok < V; tok++) {
                    size_t off = (size_t)tok * FF;
                    if (!touched[tok]) {
                        g_assert_cmpmem(P[j] + off, FF * 4, prevP[j] + off, FF * 4);
                        g_assert_cmpmem(M[j] + off, FF * 4, prevM[j] + off, FF * 4);
                        g_assert_cmpmem(Vv[j] + off, FF * 4, prevV[j] + off, FF * 4);
                        continue;
                    }
                    n_touched++;
                    for (int f = 0; f < FF; f++) {
                        size_t i = off + f;
                        g_assert_cmpfloat(fabs(P[j][i] - rp[j][i]), <=, 1e-6 + 1e-5 * fabs(rp[j][i]));
                        g_assert_cmpfloat(fabs(M[j][i] - rm[j][i]), <=, 1e-8 + 1e-5 * fabs(rm[j][i]));
                        g_assert_cmpfloat(fabs(Vv[j][i] - rv[j][i]), <=, 1e-10 + 1e-5 * fabs(rv[j][i]));
                    }
                    g_assert_true(memcmp(P[j] + off, prevP[j] + off, FF * 4) != 0);   /* it did move */
                }
            g_assert_cmpint(n_touched, >, 0);
        }
        /* the cache serves the updated rows right after the step (the overlay row
         * as it is: an edit shadows the trained base) */
        for (int j = 0; j < NS; j++) {
            stem_offload_rows(o, j, d_u);
            k->download(h, d_u, sizeof(float) * n * FF);
            check_served(h, fx.t, j, ids, n, flush_each ? NULL : rp[j], ref);
            if (j == 1 && s == STEPS - 1) g_assert_cmpmem(h, sizeof over, over, sizeof over);
        }
        if (!flush_each && s == STEPS - 2) {   /* before the overlay step's flush: */
            StemOffloadStats st;
            stem_offload_stats(o, &st);
            g_assert_cmpuint(st.written_back, >, 0);   /* evictions sent trained units home */
        }
    }
    /* after the last flush the host holds every step: touched rows follow the
     * reference, the rest (rows and moments) are bit-unchanged */
    stem_offload_flush(o);
    for (int j = 0; j < NS; j++)
        for (size_t i = 0; i < (size_t)V * FF; i++) {
            if (!ever[i / FF]) {
                g_assert_cmpfloat(P[j][i], ==, (float)rp[j][i]);
                g_assert_cmpfloat(M[j][i], ==, (float)rm[j][i]);
                g_assert_cmpfloat(Vv[j][i], ==, (float)rv[j][i]);
                continue;
            }
            g_assert_cmpfloat(fabs(P[j][i] - rp[j][i]), <=, 1e-6 + 1e-5 * fabs(rp[j][i]));
            g_assert_cmpfloat(fabs(M[j][i] - rm[j][i]), <=, 1e-8 + 1e-5 * fabs(rm[j][i]));
            g_assert_cmpfloat(fabs(Vv[j][i] - rv[j][i]), <=, 1e-10 + 1e-5 * fabs(rv[j][i]));
        }
    /* a later chunk over everything touched reads the updated rows */
    int32_t all[MAXPOS];
    for (int i = 0; i < MAXPOS; i++) all[i] = chunks[i % STEPS][i % ns[i % STEPS]];
    g_assert_true(stem_offload_begin(o, all, MAXPOS, &err));
    for (int j = 0; j < NS; j++) {
        stem_offload_rows(o, j, d_u);
        k->download(h, d_u, sizeof(float) * MAXPOS * FF);
        stem_tables_gather(fx.t, j, all, MAXPOS, ref);
        g_assert_cmpmem(h, sizeof(float) * MAXPOS * FF, ref, sizeof(float) * MAXPOS * FF);
    }
    stem_offload_free(o);
    k->free(d_u);
    for (int j = 0; j < NS; j++) {
        g_free(M[j]); g_free(Vv[j]); k->free(du[j]);
        g_free(rp[j]); g_free(rm[j]); g_free(rv[j]);
        g_free(prevP[j]); g_free(prevM[j]); g_free(prevV[j]);
    }
    for (int s = 0; s < STEPS; s++) g_free(chunks[s]);
    g_free(G); g_free(h); g_free(ref);
    g_rand_free(r);
    fix_free(&fx);
}

static void test_train(gconstpointer data)
{
    Backend bk = (Backend)GPOINTER_TO_INT(data);
    for (int flush_each = 0; flush_each < 2; flush_each++) {
        run_train(bk, 0, flush_each);
        run_train(bk, 1, flush_each);
    }
}

/* One step from zero moments with wd = 0 moves exactly the rows a dense AdamW over the
 * whole table moves (an untouched row has g = m = v = 0: no step), bit for bit. */
static void test_train_dense(void)
{
    Fix fx = fix_new(STEM_TABLE_F32, 43);
    const StemKernels *k = stem_kernels_cpu();
    enum { MAXPOS = 64 };
    StemOffload *o = stem_offload_new(fx.t, k, 20, MAXPOS, NULL);
    float *P[NS], *M[NS], *Vv[NS], *dP[NS], *dM[NS], *dV[NS], *G[NS], *du[NS];
    GRand *r = g_rand_new_with_seed(12);
    int n;
    int *ids = draw_chunk(r, MAXPOS, &n);
    g_assert_true(stem_offload_begin(o, ids, n, NULL));
    for (int j = 0; j < NS; j++) {
        P[j] = fx.base[j];
        M[j] = g_new0(float, V * FF);
        Vv[j] = g_new0(float, V * FF);
        dP[j] = g_memdup2(P[j], sizeof(float) * V * FF);
        dM[j] = g_new0(float, V * FF);
        dV[j] = g_new0(float, V * FF);
        G[j] = g_new0(float, V * FF);
        du[j] = g_new(float, n * FF);
        for (int i = 0; i < n * FF; i++) du[j][i] = (float)g_rand_double_range(r, -1, 1);
        op_embedding_backward(G[j], du[j], ids, n, FF);   /* the dense gradient */
        stem_offload_accumulate_grad(o, j, du[j]);
    }
    stem_offload_step(o, P, M, Vv, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1, 0.7f);
    stem_offload_flush(o);   /* write-back cache: the host buffers are current after a flush */
    for (int j = 0; j < NS; j++) {
        op_adamw(dP[j], G[j], dM[j], dV[j], (size_t)V * FF, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1, 0.7f);
        g_assert_cmpmem(P[j], sizeof(float) * V * FF, dP[j], sizeof(float) * V * FF);
        g_assert_cmpmem(M[j], sizeof(float) * V * FF, dM[j], sizeof(float) * V * FF);
        g_assert_cmpmem(Vv[j], sizeof(float) * V * FF, dV[j], sizeof(float) * V * FF);
        g_free(M[j]); g_free(Vv[j]); g_free(dP[j]); g_free(dM[j]); g_free(dV[j]); g_free(G[j]); g_free(du[j]);
    }
    stem_offload_free(o);
    g_free(ids);
    g_rand_free(r);
    fix_free(&fx);
}

/* ------------------------------------------------------------------ 5. bad input */

static void assert_same_stats(StemOffload *o, const StemOffloadStats *before)
{
    StemOffloadStats now;
    stem_offload_stats(o, &now);
    g_assert_cmpmem(&now, sizeof now, before, sizeof *before);
}

static void check_current_rows(StemOffload *o, const StemTables *t, const int32_t *ids, int n)
{
    float *u = g_new(float, n * FF), *ref = g_new(float, n * FF);
    for (int j = 0; j < NS; j++) {
        stem_offload_rows(o, j, u);
        stem_tables_gather(t, j, ids, n, ref);
        g_assert_cmpmem(u, sizeof(float) * n * FF, ref, sizeof(float) * n * FF);
    }
    g_free(u);
    g_free(ref);
}

static void test_errors(void)
{
    Fix fx = fix_new(STEM_TABLE_BF16, 51);
    const StemKernels *k = stem_kernels_cpu();
    GError *err = NULL;
    /* creation */
    g_assert_null(stem_offload_new(fx.t, k, 0, 8, &err));
    g_assert_nonnull(strstr(err->message, "capacity"));
    g_clear_error(&err);
    g_assert_null(stem_offload_new(fx.t, k, V + 1, 8, &err));
    g_assert_nonnull(strstr(err->message, "capacity"));
    g_clear_error(&err);
    g_assert_null(stem_offload_new(fx.t, k, 8, 0, &err));
    g_assert_nonnull(strstr(err->message, "max_positions"));
    g_clear_error(&err);

    StemOffload *o = stem_offload_new(fx.t, k, 6, 4, &err);
    g_assert_no_error(err);
    g_assert_cmpint(stem_offload_max_positions(o), ==, 4);
    int32_t a[3] = { 1, 2, 1 }, b[4] = { 3, 4, 5, 3 }, c[2] = { 6, 7 }, d[2] = { 8, 9 };
    int32_t bad[3] = { 1, V, 2 }, neg[2] = { -1, 0 }, big[5] = { 1, 2, 3, 4, 5 };
    StemOffloadStats st;
    stem_offload_stats(o, &st);
    /* nothing current yet: every bad call leaves the store empty */
    g_assert_false(stem_offload_stage(o, bad, 3, &err));
    g_assert_nonnull(strstr(err->message, "outside the vocabulary"));
    g_test_message("%s", err->message);
    g_clear_error(&err);
    g_assert_false(stem_offload_begin(o, neg, 2, &err));
    g_assert_nonnull(strstr(err->message, "outside the vocabulary"));
    g_clear_error(&err);
    g_assert_false(stem_offload_stage(o, big, 5, &err));
    g_assert_nonnull(strstr(err->message, "max_positions"));
    g_test_message("%s", err->message);
    g_clear_error(&err);
    g_assert_false(stem_offload_begin(o, big, 5, &err));
    g_clear_error(&err);
    assert_same_stats(o, &st);

    g_assert_true(stem_offload_begin(o, a, 3, &err));
    check_current_rows(o, fx.t, a, 3);
    g_assert_true(stem_offload_stage(o, b, 4, &err));
    stem_offload_stats(o, &st);
    /* begin() must name the staged chunk: other ids or another length are refused */
    g_assert_false(stem_offload_begin(o, c, 2, &err));
    g_assert_nonnull(strstr(err->message, "staged"));
    g_test_message("%s", err->message);
    g_clear_error(&err);
    int32_t b2[4] = { 3, 4, 5, 4 };
    g_assert_false(stem_offload_begin(o, b2, 4, &err));
    g_assert_nonnull(strstr(err->message, "position 3"));
    g_test_message("%s", err->message);
    g_clear_error(&err);
    /* bad stages while chunks are in flight change nothing either */
    g_assert_false(stem_offload_stage(o, bad, 3, &err));
    g_clear_error(&err);
    g_assert_false(stem_offload_stage(o, big, 5, &err));
    g_clear_error(&err);
    assert_same_stats(o, &st);
    check_current_rows(o, fx.t, a, 3);   /* still the current chunk */
    /* at most two staged ahead */
    g_assert_true(stem_offload_stage(o, c, 2, &err));
    stem_offload_stats(o, &st);
    g_assert_false(stem_offload_stage(o, d, 2, &err));
    g_assert_nonnull(strstr(err->message, "already staged"));
    g_test_message("%s", err->message);
    g_clear_error(&err);
    assert_same_stats(o, &st);
    /* and the queue still runs in order */
    g_assert_true(stem_offload_begin(o, b, 4, &err));
    check_current_rows(o, fx.t, b, 4);
    g_assert_true(stem_offload_begin(o, c, 2, &err));
    check_current_rows(o, fx.t, c, 2);
    g_assert_true(stem_offload_begin(o, d, 2, &err));
    check_current_rows(o, fx.t, d, 2);
    g_assert_no_error(err);
    /* an empty chunk is a chunk */
    g_assert_true(stem_offload_begin(o, NULL, 0, &err));
    g_assert_true(stem_offload_begin(o, a, 3, &err));
    check_current_rows(o, fx.t, a, 3);
    stem_offload_free(o);
    fix_free(&fx);
}

/* ------------------------------------------------------------------ the row cache, several chunks pinned */

/* A slow reference written from rowcache.h's statement: LFU (perfect, counts kept),
 * LRU tie-break, a pin count per token, FIFO release, a chunk refused when its misses
 * do not fit in the free plus the unpinned. */
typedef struct {
    int cap, n;
    int32_t tok[64];
    guint32 freq[64];
    guint64 tick[64];
    int pins[64];
    guint32 hist[V];
    guint64 clock;
    GQueue chunks;   /* GArray of int32 tokens each */
} MRef;

static int mref_find(const MRef *f, int t)
{
    for (int i = 0; i < f->n; i++) if (f->tok[i] == t) return i;
    return -1;
}

static void mref_remove(MRef *f, int i)
{
    f->n--;
    f->tok[i] = f->tok[f->n]; f->freq[i] = f->freq[f->n]; f->tick[i] = f->tick[f->n]; f->pins[i] = f->pins[f->n];
}

/* -1 when refused (nothing changed), else the misses; hit[], evicted[] as the cache */
static int mref_lookup(MRef *f, const int32_t *ids, int n, int *hit, int32_t *evicted, int *n_ev)
{
    int misses = 0, unpinned_hits = 0, unpinned = 0;
    for (int i = 0; i < f->n; i++) unpinned += f->pins[i] == 0;
    for (int i = 0; i < n; i++) {
        int j = mref_find(f, ids[i]);
        if (j < 0) misses++;
        else if (f->pins[j] == 0) unpinned_hits++;
    }
    if (misses > f->cap - f->n + unpinned - unpinned_hits) return -1;
    guint64 base = f->clock;
    f->clock += (guint64)n;
    for (int i = 0; i < n; i++) {
        int j = mref_find(f, ids[i]);
        hit[i] = j >= 0;
        if (j < 0) continue;
        f->freq[j]++;
        f->tick[j] = base + (guint64)i;
        f->hist[ids[i]] = f->freq[j];
        f->pins[j]++;
    }
    *n_ev = 0;
    for (int i = 0; i < n; i++) {
        if (hit[i]) continue;
        if (f->n == f->cap) {
            int v = -1;
            for (int j = 0; j < f->n; j++) {
                if (f->pins[j]) continue;
                if (v < 0 || f->freq[j] < f->freq[v] || (f->freq[j] == f->freq[v] && f->tick[j] < f->tick[v])) v = j;
            }
            g_assert_cmpint(v, >=, 0);
            evicted[(*n_ev)++] = f->tok[v];
            mref_remove(f, v);
        }
        int j = f->n++;
        f->tok[j] = ids[i];
        f->freq[j] = f->hist[ids[i]] + 1;
        f->hist[ids[i]] = f->freq[j];
        f->tick[j] = base + (guint64)i;
        f->pins[j] = 1;
    }
    GArray *a = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), (guint)n);
    g_array_append_vals(a, ids, (guint)n);
    g_queue_push_tail(&f->chunks, a);
    return misses;
}

static void mref_release(MRef *f)
{
    GArray *a = g_queue_pop_head(&f->chunks);
    if (!a) return;
    for (guint i = 0; i < a->len; i++) {
        int j = mref_find(f, g_array_index(a, int32_t, i));
        g_assert_cmpint(j, >=, 0);
        f->pins[j]--;
    }
    g_array_free(a, TRUE);
}

static void test_rowcache_multi(void)
{
    const int cap = 40, max_chunks = 3;
    StemRowCacheOptions opt = { .vocab = V, .capacity = cap, .row_bytes = 4, .keep_history = TRUE,
                                .max_chunks = max_chunks };
    StemRowCache *c = stem_rowcache_new(&opt);
    MRef f = { .cap = cap };
    g_queue_init(&f.chunks);
    GRand *r = g_rand_new_with_seed(99);
    int32_t ids[64], slots[64], misses[64], ev[64], ref_ev[64];
    int hit[64];
    gboolean in_chunk[V] = { 0 };
    guint64 lookups = 0, refused = 0, invalidated = 0;
    for (int step = 0; step < 20000; step++) {
        int in_flight = stem_rowcache_chunks_in_flight(c);
        g_assert_cmpint(in_flight, ==, (int)f.chunks.length);
        if (step % 500 == 250) {
            /* flush while chunks are pinned: exactly the unpinned go */
            int unpinned = 0;
            for (int i = 0; i < f.n; i++) unpinned += f.pins[i] == 0;
            g_assert_cmpint(stem_rowcache_invalidate_unpinned(c, NULL), ==, unpinned);
            for (int i = f.n - 1; i >= 0; i--) if (f.pins[i] == 0) mref_remove(&f, i);
            invalidated += (guint64)unpinned;
            g_assert_cmpint(stem_rowcache_size(c), ==, f.n);
        }
        if (in_flight == max_chunks || (in_flight > 0 && g_rand_int_range(r, 0, 3) == 0)) {
            stem_rowcache_release_chunk(c);
            mref_release(&f);
            continue;
        }
        int want = g_rand_int_range(r, 1, cap / 2 + 1), n = 0;
        for (int tries = 0; n < want && tries < 20 * want; tries++) {
            int t = draw_id(r);
            if (!in_chunk[t]) { in_chunk[t] = TRUE; ids[n++] = t; }
        }
        for (int i = 0; i < n; i++) in_chunk[ids[i]] = FALSE;
        GError *err = NULL;
        int ne = -1, rne = 0;
        StemRowCacheStats before = *stem_rowcache_stats(c);
        int k = stem_rowcache_lookup_chunk(c, ids, n, slots, misses, ev, &ne, &err);
        int rk = mref_lookup(&f, ids, n, hit, ref_ev, &rne);
        if (rk < 0) {
            g_assert_cmpint(k, ==, -1);
            g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_TOO_LARGE);
            g_clear_error(&err);
            g_assert_cmpmem(&before, sizeof before, stem_rowcache_stats(c), sizeof before);
            g_assert_cmpint(stem_rowcache_chunks_in_flight(c), ==, in_flight);
            refused++;
            continue;
        }
        g_assert_no_error(err);
        g_assert_cmpint(k, ==, rk);
        int km = 0;
        for (int i = 0; i < n; i++) {
            if (!hit[i]) g_assert_cmpint(misses[km++], ==, i);
            g_assert_cmpint(stem_rowcache_slot_of(c, ids[i]), ==, slots[i]);
            g_assert_cmpuint(stem_rowcache_freq(c, ids[i]), ==, f.hist[ids[i]]);
        }
        g_assert_cmpint(ne, ==, rne);
        g_assert_cmpmem(ev, (gsize)ne * sizeof *ev, ref_ev, (gsize)rne * sizeof *ref_ev);
        lookups += (guint64)n;
        /* pinned = held by any chunk in flight; a pinned token cannot be invalidated */
        for (int i = 0; i < f.n; i++) {
            g_assert_cmpint(stem_rowcache_is_pinned(c, f.tok[i]), ==, f.pins[i] > 0);
            if (f.pins[i] > 0 && i % 7 == 0) {
                g_assert_false(stem_rowcache_invalidate(c, f.tok[i], &err));
                g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
                g_clear_error(&err);
            }
        }
        /* a full ring of chunks refuses the next lookup */
        if (stem_rowcache_chunks_in_flight(c) == max_chunks) {
            int32_t one[1] = { 0 };
            g_assert_cmpint(stem_rowcache_lookup_chunk(c, one, 1, slots, misses, NULL, NULL, &err), ==, -1);
            g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
            g_clear_error(&err);
        }
    }
    const StemRowCacheStats *st = stem_rowcache_stats(c);
    g_assert_cmpuint(st->lookups, ==, lookups);
    g_assert_cmpuint(st->invalidations, ==, invalidated);
    g_test_message("%" G_GUINT64_FORMAT " lookups, %" G_GUINT64_FORMAT " refused, %" G_GUINT64_FORMAT
                   " evictions", lookups, refused, st->evictions);
    g_assert_cmpuint(refused, >, 10);
    g_assert_cmpuint(st->evictions, >, 1000);
    while (f.chunks.length) { stem_rowcache_release_chunk(c); mref_release(&f); }
    stem_rowcache_release_chunk(c);   /* nothing pinned: no-op */
    g_assert_cmpint(stem_rowcache_chunks_in_flight(c), ==, 0);
    stem_rowcache_free(c);
    g_rand_free(r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/offload/rowcache/multi-chunk", test_rowcache_multi);
    static const char *bk_path[] = { "cpu", "lazy-eager-copies", "lazy-slow-copies" };
    for (int b = 0; b < 3; b++) {
        char *p = g_strdup_printf("/offload/store/rows/%s", bk_path[b]);
        g_test_add_data_func(p, GINT_TO_POINTER(b), test_rows);
        g_free(p);
        p = g_strdup_printf("/offload/store/edits/%s", bk_path[b]);
        g_test_add_data_func(p, GINT_TO_POINTER(b), test_edits);
        g_free(p);
        p = g_strdup_printf("/offload/store/train/%s", bk_path[b]);
        g_test_add_data_func(p, GINT_TO_POINTER(b), test_train);
        g_free(p);
    }
    g_test_add_func("/offload/store/edit-roundtrip", test_edit_roundtrip);
    g_test_add_func("/offload/store/on-device", test_on_device);
    g_test_add_func("/offload/store/stats", test_stats);
    g_test_add_func("/offload/store/train-dense", test_train_dense);
    g_test_add_func("/offload/store/errors", test_errors);
    int rc = g_test_run();
    if (lz_ops) {
        g_array_free(lz_ops, TRUE);
        g_array_free(lz_copies, TRUE);
    }
    return rc;
}
