/* The offloaded table store (engine/offload.h): StemDedup + StemRowCache (the
 * policy, engine/rowcache.h) driving a backend's memory through kernels.h.
 *
 * What a slot holds. The device buffer `cache` is [slots, W] fp32 with
 * W = n_stem * F: slot s holds ONE token's rows of every STEM layer, in layer
 * order. We always move fp32 (the host may hold bf16: it is widened while
 * staging), so the row cache's row_bytes is W * 4 whatever the file's dtype.
 *
 * Chunk records. A chunk is staged (deduplicated, looked up, its misses copied),
 * then begun (current), then released by the next begin. Up to two chunks wait
 * staged ahead of the current one, so at most three records are live.
 *
 * ---- The ordering rules (why nothing is overwritten while it may be read) ----
 * Compute is asynchronous on a device: rows() only QUEUES gathers that read the
 * current chunk's slots, the slot index and (accumulate_grad) the inverse index.
 * Copies run on a second queue. Four rules keep the two queues from racing:
 *
 *  R1 (copy -> compute). A chunk's rows are read only after begin() made the
 *     compute queue wait (compute_wait) for the fence recorded after its copies.
 *     Rows a chunk hits were copied for an EARLIER chunk, whose begin() already
 *     queued the wait ahead of this chunk's compute (one compute queue, in
 *     order), or refreshed in this begin() before its wait.
 *  R2 (compute -> copy). A slot is refilled (a miss copied into it, on the copy
 *     queue) only when no queued compute can still read it. Every chunk in
 *     flight (current and staged) pins its units in the row cache (rowcache
 *     max_chunks = 3), so a miss never takes a slot of the current chunk or of a
 *     staged one. Slots of RELEASED chunks may still be read by compute queued
 *     before: begin() therefore drains the compute queue (k->synchronize(), only
 *     when rows()/accumulate_grad were queued since the last known drain) BEFORE
 *     it releases the previous chunk. kernels.h has no compute->copy fence
 *     (an event recorded on compute that the copy queue waits for); with one,
 *     this host wait would become a device-side wait. In the model's flow the
 *     queue is already drained at that point (the loss or logits were read, or
 *     step() downloaded the gradients), so the synchronize costs nothing.
 *  R3 (staging buffers). Two pinned staging buffers alternate; before one is
 *     refilled the host waits for the fence recorded after its last copies
 *     (host_wait). Fence b belongs to buffer b; re-recording a fence only moves
 *     it later, so any wait on it stays sufficient.
 *  R4 (index buffers). The slot / inverse index buffers are rewritten in begin()
 *     with a synchronous upload, after the drain of R2; step() downloads the
 *     gradients (a drain) before it uploads the updated units (synchronously)
 *     into the current chunk's slots, which no copy in flight targets (those go
 *     to unpinned slots).
 *
 * ---- Edits (the overlay) and invalidate_all ----
 * A chunk reads the overlay as it is at its begin(). The row cache records the
 * overlay generation it is in sync with; when it is stale (or invalidate_all was
 * called):
 *  - at stage(), with NO chunk pinned (the first chunk, or begin() without
 *    prefetch, which releases the previous chunk first), every unit is dropped
 *    (sync_overlay), so the chunk refetches what it needs;
 *  - otherwise at begin(), after releasing the previous chunk: every unpinned
 *    unit is dropped (rowcache invalidate_unpinned) and the units of the staged
 *    chunks (already looked up, possibly with stale rows) are re-uploaded from
 *    the table store before the chunk's compute waits for them.
 * The current chunk is never changed under its compute: an edit made while a
 * chunk is current shows from the next chunk on.
 *
 * ---- Prefetch that does not fit ----
 * Chunk i+1 is looked up beside chunk i only if its misses fit in the free
 * slots plus the unpinned units (rowcache TOO_LARGE otherwise). If not, it is
 * deduplicated and kept DEFERRED: its lookup and copies happen in its begin(),
 * once chunk i is released (then it always fits: slots >= max_positions).
 * Lookups stay in staging order, so a chunk behind a deferred one is deferred
 * too. Nothing fails for lack of room; the copy just does not overlap.
 *
 * ---- Training: a write-back cache of rows and moments ----
 * The host keeps every row and its AdamW moments (the caller's buffers: the
 * authoritative copy). Once training starts (the first step()), a cached unit
 * carries its moments too (d_m, d_v beside cache): a miss uploads the row AND
 * its moments from the host, and step() runs lazy AdamW on the DEVICE over the
 * chunk's units (adamw_rows), marking them dirty. Nothing goes back per step:
 * a dirty unit is written back (row and moments, device -> host) only when it
 * leaves the cache -- evicted by a later lookup (before the miss's copy lands
 * in its slot), dropped by an invalidation (flushed first) -- or on
 * stem_offload_flush (the model calls it before the host buffers are read).
 * So per step only the misses move, which is what makes offloaded training run
 * near on-device speed; the arithmetic is op_adamw's, row by row, as before.
 * Ordering: a write-back reads the device with download, which waits for all
 * queued compute (the step that dirtied the unit included), and it runs before
 * the miss's upload is queued on the copy queue, so the old unit leaves before
 * the new one arrives. With an edit overlay present the device would hold
 * EFFECTIVE rows (an edited row shadows its base), which must not be trained:
 * step() then flushes and takes the step on the host (download the gradients,
 * op_adamw on the base rows, re-upload the effective units and their moments). */
#include "offload.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"

#include <string.h>

#define OFFLOAD_ERROR (g_quark_from_static_string("stem-offload-error"))
enum { OFFLOAD_ERROR_MEMORY = 1, OFFLOAD_ERROR_INVALID = 2 };

#define MAX_STAGED 2
#define N_RECORDS (MAX_STAGED + 1)
#define N_BUFFERS 2

typedef struct {
    int n, n_unique;
    int32_t *ids;       /* [max_positions] the chunk as given (begin() checks it) */
    int32_t *unique;    /* [max_positions] unique ids, first-occurrence order */
    int32_t *inverse;   /* [max_positions] ids[i] == unique[inverse[i]] */
    int32_t *uslot;     /* [max_positions] slot of unique[u] (once looked up) */
    int32_t *pslot;     /* [max_positions] slot of position i = uslot[inverse[i]] */
    gboolean looked_up; /* FALSE: deferred (see the top comment) */
    int fence;          /* fence recorded after its copies, -1 when it copied nothing */
} Chunk;

struct StemOffload {
    StemTables *t;
    const StemKernels *k;
    int n_stem, F, W, vocab, capacity, max_positions, max_unique, slots;
    StemDedup *dedup;
    StemRowCache *rc;

    float *cache;         /* backend [slots, W] */
    int32_t *d_pslot;     /* backend [max_positions] slot per position of the current chunk */
    int32_t *d_inverse;   /* backend [max_positions] unique index per position */
    float *d_grad;        /* backend [max_unique, W] row gradients; NULL until training */
    float *h_grad;        /* host [max_unique, W]: gradients of the host-side step (overlay); NULL until then */

    /* Offloaded training, set up by the first step() (train_init): the cache is
     * a WRITE-BACK cache of rows and their AdamW moments (see "Training" above). */
    gboolean training;
    float **hp, **hm, **hv;          /* [n_stem] the caller's host rows and moments ([vocab, F] each) */
    float *d_m, *d_v;                /* backend [slots, W] moments of the cached units */
    int32_t *d_uslot;                /* backend [max_unique] slot of each unique id of the stepped chunk */
    float *staging_mv[N_BUFFERS];    /* host_alloc [max_unique, 2W]: the misses' moments, beside staging[b] */
    guint8 *dirty;                   /* [slots] updated on the device since the host copy */
    int n_dirty;
    int wb_cap;                      /* units per write-back wave */
    int32_t *d_wbidx;                /* backend [wb_cap] slots of a wave */
    float *d_pack;                   /* backend [wb_cap, 3W] rows | m | v of a wave */
    float *h_wb;                     /* host_alloc [wb_cap, 3W] */
    int32_t *wb_slot, *wb_tok;       /* [slots] the units to write back */
    guint64 wb_units;                /* units written back (statistics) */
    int32_t *slot_token;             /* [slots] token whose unit a slot last received (-1: none) */

    float *staging[N_BUFFERS];   /* host_alloc [max_unique, W] */
    gboolean staging_used[N_BUFFERS];
    int next_buf;

    Chunk rec[N_RECORDS];
    int cur;                     /* record of the current chunk, -1 none */
    int staged[MAX_STAGED];      /* records staged ahead, oldest first */
    int n_staged;

    gboolean reads_pending;      /* compute reading our buffers queued since the last known drain */
    gboolean invalid_pending;    /* invalidate_all called while chunks were pinned */

    int32_t *tmp_miss, *tmp_tok, *tmp_slot;   /* [max_unique] */
    guint32 *slot_mark;                       /* [slots] stamps for the refresh's union */
    guint32 mark_gen;

    guint64 positions, unique;
    double copy0, stall0;
};

/* ------------------------------------------------------------------ creation */

static void *backend_alloc(StemOffload *o, size_t bytes, const char *what, GError **error)
{
    void *p = o->k->alloc(bytes);
    if (!p)
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_MEMORY,
                    "offloaded tables: cannot allocate %.1f MiB of %s memory for the %s", bytes / 1048576.0,
                    o->k->name, what);
    return p;
}

StemOffload *stem_offload_new(StemTables *t, const StemKernels *k, int capacity, int max_positions,
                              GError **error)
{
    g_return_val_if_fail(t && k, NULL);
    if (k->abi != STEM_KERNELS_ABI) {
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                    "offloaded tables: backend '%s' has ABI %d, expected %d", k->name, k->abi, STEM_KERNELS_ABI);
        return NULL;
    }
    const int n_stem = stem_tables_n(t), F = stem_tables_ffn(t), V = stem_tables_vocab(t);
    if (n_stem < 1 || F < 1 || V < 1) {
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                    "offloaded tables: the table store has no rows (%d STEM layers, vocab %d, ffn %d)", n_stem, V, F);
        return NULL;
    }
    if (capacity < 1 || capacity > V) {
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                    "offloaded tables: cache capacity %d outside 1..%d (the vocabulary)", capacity, V);
        return NULL;
    }
    if (max_positions < 1) {
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                    "offloaded tables: max_positions %d must be at least 1", max_positions);
        return NULL;
    }
    StemOffload *o = g_new0(StemOffload, 1);
    o->t = t;
    o->k = k;
    o->n_stem = n_stem;
    o->F = F;
    o->W = n_stem * F;
    o->vocab = V;
    o->capacity = capacity;
    o->max_positions = max_positions;
    /* a chunk never has more unique ids than the vocabulary: no unit beyond V is ever used */
    o->max_unique = MIN(max_positions, V);
    o->slots = MAX(capacity, o->max_unique);
    o->cur = -1;

    const size_t unit = (size_t)o->W * sizeof(float);
    o->cache = backend_alloc(o, (size_t)o->slots * unit, "row cache", error);
    if (o->cache) o->d_pslot = backend_alloc(o, (size_t)max_positions * sizeof(int32_t), "slot index", error);
    if (o->d_pslot) o->d_inverse = backend_alloc(o, (size_t)max_positions * sizeof(int32_t), "inverse index", error);
    for (int b = 0; b < N_BUFFERS && o->d_inverse; b++) {
        o->staging[b] = k->host_alloc((size_t)o->max_unique * unit);
        if (!o->staging[b]) {
            g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_MEMORY,
                        "offloaded tables: cannot allocate %.1f MiB of pinned host memory for staging",
                        (double)o->max_unique * unit / 1048576.0);
            break;
        }
    }
    if (!o->staging[N_BUFFERS - 1]) {
        stem_offload_free(o);
        return NULL;
    }

    StemRowCacheOptions ro = {
        .vocab = V,
        .capacity = o->slots,
        .row_bytes = (guint64)unit,   /* fp32 units move, whatever the table dtype */
        .keep_history = TRUE,         /* perfect LFU: the better policy (rowcache.h) */
        .max_chunks = N_RECORDS,      /* current + two staged */
    };
    o->rc = stem_rowcache_new(&ro);
    o->dedup = stem_dedup_new(V);
    for (int r = 0; r < N_RECORDS; r++) {
        Chunk *c = &o->rec[r];
        c->ids = g_new(int32_t, max_positions);
        c->unique = g_new(int32_t, max_positions);
        c->inverse = g_new(int32_t, max_positions);
        c->uslot = g_new(int32_t, max_positions);
        c->pslot = g_new(int32_t, max_positions);
    }
    o->tmp_miss = g_new(int32_t, o->max_unique);
    o->tmp_tok = g_new(int32_t, o->max_unique);
    o->tmp_slot = g_new(int32_t, o->max_unique);
    o->slot_mark = g_new0(guint32, o->slots);
    o->slot_token = g_new(int32_t, o->slots);
    for (int i = 0; i < o->slots; i++) o->slot_token[i] = -1;
    k->copy_stats(&o->copy0, &o->stall0);
    return o;
}

void stem_offload_free(StemOffload *o)
{
    if (!o) return;
    const StemKernels *k = o->k;
    /* nothing of ours may be in use when it is freed: wait for both queues */
    k->synchronize();
    for (int b = 0; b < N_BUFFERS; b++) {
        if (!o->staging[b]) continue;
        if (o->staging_used[b]) k->host_wait(b);
        k->host_free(o->staging[b]);
        if (o->staging_mv[b]) k->host_free(o->staging_mv[b]);
    }
    k->free(o->cache);
    k->free(o->d_pslot);
    k->free(o->d_inverse);
    k->free(o->d_grad);
    g_free(o->h_grad);
    k->free(o->d_m);
    k->free(o->d_v);
    k->free(o->d_uslot);
    k->free(o->d_wbidx);
    k->free(o->d_pack);
    if (o->h_wb) k->host_free(o->h_wb);
    g_free(o->hp);
    g_free(o->hm);
    g_free(o->hv);
    g_free(o->dirty);
    g_free(o->wb_slot);
    g_free(o->wb_tok);
    g_free(o->slot_token);
    stem_rowcache_free(o->rc);
    stem_dedup_free(o->dedup);
    for (int r = 0; r < N_RECORDS; r++) {
        Chunk *c = &o->rec[r];
        g_free(c->ids);
        g_free(c->unique);
        g_free(c->inverse);
        g_free(c->uslot);
        g_free(c->pslot);
    }
    g_free(o->tmp_miss);
    g_free(o->tmp_tok);
    g_free(o->tmp_slot);
    g_free(o->slot_mark);
    g_free(o);
}

int stem_offload_max_positions(const StemOffload *o) { return o->max_positions; }

/* ------------------------------------------------------------------ copies */

/* Host-side copies of whole units, split over the thread pool (memory-bound
 * and large: a miss or a write-back moves n_stem * F floats, three times when
 * training). The tables' readers and the caller's buffers are only read, or
 * written at disjoint rows, so ranges are independent. */
typedef struct {
    StemOffload *o;
    const int32_t *tokens;
    float *rows, *mv;     /* gather: staging (rows, NULL: moments only; moments m units then v units) */
    const float *packed;  /* scatter: [n, W] rows | [n, W] m | [n, W] v */
    int n;
} UnitCopy;

static void gather_units_part(void *p, size_t b, size_t e)
{
    const UnitCopy *c = p;
    const StemOffload *o = c->o;
    const size_t W = (size_t)o->W, F = (size_t)o->F;
    for (size_t u = b; u < e; u++) {
        const size_t off = (size_t)c->tokens[u] * F;
        for (int j = 0; j < o->n_stem; j++) {
            if (c->rows) stem_tables_row(o->t, j, c->tokens[u], c->rows + u * W + (size_t)j * F);
            if (!o->training) continue;   /* the moments travel with the row */
            memcpy(c->mv + u * W + (size_t)j * F, o->hm[j] + off, F * sizeof(float));
            memcpy(c->mv + ((size_t)o->max_unique + u) * W + (size_t)j * F, o->hv[j] + off, F * sizeof(float));
        }
    }
}

static void scatter_units_part(void *p, size_t b, size_t e)
{
    const UnitCopy *c = p;
    const StemOffload *o = c->o;
    const size_t W = (size_t)o->W, F = (size_t)o->F, nW = (size_t)c->n * W;
    for (size_t u = b; u < e; u++) {
        const size_t off = (size_t)c->tokens[u] * F;
        for (int j = 0; j < o->n_stem; j++) {
            const float *src = c->packed + u * W + (size_t)j * F;
            memcpy(o->hp[j] + off, src, F * sizeof(float));
            memcpy(o->hm[j] + off, src + nW, F * sizeof(float));
            memcpy(o->hv[j] + off, src + 2 * nW, F * sizeof(float));
        }
    }
}

/* Gather the effective rows of tokens[m] (all STEM layers) into a staging
 * buffer and enqueue their copies into slots[m], one copy per run of
 * consecutive slots. m <= max_unique. Returns the fence recorded after them. */
static int upload_units(StemOffload *o, const int32_t *tokens, const int32_t *slots, int m)
{
    const StemKernels *k = o->k;
    const int b = o->next_buf;
    o->next_buf = (b + 1) % N_BUFFERS;
    if (o->staging_used[b]) k->host_wait(b);   /* R3: its previous copies have left it */
    float *buf = o->staging[b], *mv = o->staging_mv[b];
    const size_t W = (size_t)o->W;
    UnitCopy uc = { .o = o, .tokens = tokens, .rows = buf, .mv = mv };
    pool_for((size_t)m, 8, gather_units_part, &uc);
    for (int u = 0; u < m; u++) o->slot_token[slots[u]] = tokens[u];
    for (int u = 0; u < m;) {
        int e = u + 1;
        while (e < m && slots[e] == slots[e - 1] + 1) e++;
        const size_t bytes = (size_t)(e - u) * W * sizeof(float);
        k->upload_async(o->cache + (size_t)slots[u] * W, buf + (size_t)u * W, bytes);
        if (o->training) {
            k->upload_async(o->d_m + (size_t)slots[u] * W, mv + (size_t)u * W, bytes);
            k->upload_async(o->d_v + (size_t)slots[u] * W, mv + ((size_t)o->max_unique + u) * W, bytes);
        }
        u = e;
    }
    k->fence_record(b);
    o->staging_used[b] = TRUE;
    return b;
}

/* Write the units in slots[n] (tokens[n]: whose they are) back to the host:
 * rows and moments, device -> host, in waves of wb_cap (packed on the device by
 * three gathers, one download). The download waits for every queued compute,
 * so the step that dirtied a unit has finished when it is read. */
static void writeback_units(StemOffload *o, const int32_t *slots, const int32_t *tokens, int n)
{
    const StemKernels *k = o->k;
    const size_t W = (size_t)o->W;
    for (int w0 = 0; w0 < n; w0 += o->wb_cap) {
        const int nw = MIN(o->wb_cap, n - w0);
        k->upload(o->d_wbidx, slots + w0, (size_t)nw * sizeof(int32_t));
        k->gather_rows(o->d_pack, o->cache, o->d_wbidx, nw, o->W, W);
        k->gather_rows(o->d_pack + (size_t)nw * W, o->d_m, o->d_wbidx, nw, o->W, W);
        k->gather_rows(o->d_pack + 2 * (size_t)nw * W, o->d_v, o->d_wbidx, nw, o->W, W);
        k->download(o->h_wb, o->d_pack, 3 * (size_t)nw * W * sizeof(float));
        o->reads_pending = FALSE;   /* download waits for everything queued before it */
        UnitCopy uc = { .o = o, .tokens = tokens + w0, .packed = o->h_wb, .n = nw };
        pool_for((size_t)nw, 8, scatter_units_part, &uc);
        for (int u = 0; u < nw; u++) o->dirty[slots[w0 + u]] = 0;
        o->n_dirty -= nw;
        o->wb_units += (guint64)nw;
    }
}

void stem_offload_flush(StemOffload *o)
{
    g_return_if_fail(o);
    if (o->n_dirty == 0) return;
    int n = 0;
    for (int s = 0; s < o->slots; s++)
        if (o->dirty[s]) {
            o->wb_slot[n] = s;
            o->wb_tok[n] = o->slot_token[s];
            n++;
        }
    g_assert(n == o->n_dirty);
    writeback_units(o, o->wb_slot, o->wb_tok, n);
}

static gboolean stale(const StemOffload *o)
{
    return o->invalid_pending || stem_rowcache_overlay_stale(o->rc, o->t);
}

/* Look a staged chunk up in the row cache and enqueue its misses. FALSE (and
 * nothing changed) when its misses do not fit beside the chunks in flight. */
static gboolean lookup(StemOffload *o, Chunk *c)
{
    if (stem_rowcache_chunks_in_flight(o->rc) == 0 && stale(o)) {
        /* nothing pinned: drop everything, the overlay is read afresh from here
         * (trained units go home first) */
        stem_offload_flush(o);
        stem_rowcache_sync_overlay(o->rc, o->t, NULL, 0, NULL);
        o->invalid_pending = FALSE;
    }
    GError *e = NULL;
    int k = stem_rowcache_lookup_chunk(o->rc, c->unique, c->n_unique, c->uslot, o->tmp_miss, NULL, NULL, &e);
    if (k < 0) {
        /* ids are validated and distinct, n_unique <= slots, a record is free:
         * the only possible refusal is "does not fit beside the chunks in flight" */
        g_assert(g_error_matches(e, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_TOO_LARGE));
        g_assert(stem_rowcache_chunks_in_flight(o->rc) > 0);
        g_error_free(e);
        return FALSE;
    }
    for (int i = 0; i < c->n; i++) c->pslot[i] = c->uslot[c->inverse[i]];
    c->fence = -1;
    if (k > 0 && o->n_dirty > 0) {
        /* a miss's slot may hold a trained unit (evicted just now): it goes home
         * before the miss's copy is queued into its slot */
        int nw = 0;
        for (int q = 0; q < k; q++) {
            const int32_t slot = c->uslot[o->tmp_miss[q]];
            if (!o->dirty[slot]) continue;
            o->wb_slot[nw] = slot;
            o->wb_tok[nw] = o->slot_token[slot];
            nw++;
        }
        if (nw > 0) writeback_units(o, o->wb_slot, o->wb_tok, nw);
    }
    if (k > 0) {
        for (int q = 0; q < k; q++) {
            o->tmp_tok[q] = c->unique[o->tmp_miss[q]];
            o->tmp_slot[q] = c->uslot[o->tmp_miss[q]];
        }
        c->fence = upload_units(o, o->tmp_tok, o->tmp_slot, k);
    }
    c->looked_up = TRUE;
    return TRUE;
}

/* ------------------------------------------------------------------ staging */

static gboolean check_ids(const StemOffload *o, const int32_t *ids, int n, GError **error)
{
    if (n < 0 || n > o->max_positions) {
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                    "offloaded tables: a chunk of %d positions (at most %d: max_positions)", n, o->max_positions);
        return FALSE;
    }
    if (n > 0 && !ids) {
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID, "offloaded tables: no ids given");
        return FALSE;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= o->vocab) {
            g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                        "offloaded tables: token id %d at position %d outside the vocabulary of %d", ids[i], i,
                        o->vocab);
            return FALSE;
        }
    return TRUE;
}

static int free_record(const StemOffload *o)
{
    for (int r = 0; r < N_RECORDS; r++) {
        gboolean used = r == o->cur;
        for (int s = 0; s < o->n_staged; s++) used |= o->staged[s] == r;
        if (!used) return r;
    }
    g_assert_not_reached();
    return -1;
}

/* ids are valid and a record is free: cannot fail. */
static void stage_checked(StemOffload *o, const int32_t *ids, int n)
{
    Chunk *c = &o->rec[free_record(o)];
    if (n > 0) memcpy(c->ids, ids, (size_t)n * sizeof *ids);
    c->n = n;
    c->n_unique = stem_dedup_chunk(o->dedup, c->ids, n, c->unique, c->inverse);
    g_assert(c->n_unique >= 0);
    c->looked_up = FALSE;
    c->fence = -1;
    o->positions += (guint64)n;
    o->unique += (guint64)c->n_unique;
    /* lookups stay in staging order: behind a deferred chunk, defer too */
    gboolean ahead_deferred = o->n_staged > 0 && !o->rec[o->staged[o->n_staged - 1]].looked_up;
    o->staged[o->n_staged++] = (int)(c - o->rec);
    if (!ahead_deferred) lookup(o, c);
}

gboolean stem_offload_stage(StemOffload *o, const int32_t *ids, int n, GError **error)
{
    g_return_val_if_fail(o, FALSE);
    if (o->n_staged == MAX_STAGED) {
        g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                    "offloaded tables: %d chunks are already staged ahead of begin()", MAX_STAGED);
        return FALSE;
    }
    if (!check_ids(o, ids, n, error)) return FALSE;
    stage_checked(o, ids, n);
    return TRUE;
}

/* Re-upload every unit pinned by the staged, looked-up chunks (each once), from
 * the table store as it is now. Returns the last fence recorded, or -1. */
static int refresh_staged(StemOffload *o)
{
    if (++o->mark_gen == 0) {
        memset(o->slot_mark, 0, (size_t)o->slots * sizeof *o->slot_mark);
        o->mark_gen = 1;
    }
    int fence = -1, m = 0;
    for (int s = 0; s < o->n_staged; s++) {
        const Chunk *c = &o->rec[o->staged[s]];
        if (!c->looked_up) continue;
        for (int u = 0; u < c->n_unique; u++) {
            int32_t slot = c->uslot[u];
            if (o->slot_mark[slot] == o->mark_gen) continue;
            o->slot_mark[slot] = o->mark_gen;
            o->tmp_tok[m] = c->unique[u];
            o->tmp_slot[m] = slot;
            if (++m == o->max_unique) {
                fence = upload_units(o, o->tmp_tok, o->tmp_slot, m);
                m = 0;
            }
        }
    }
    if (m > 0) fence = upload_units(o, o->tmp_tok, o->tmp_slot, m);
    return fence;
}

gboolean stem_offload_begin(StemOffload *o, const int32_t *ids, int n, GError **error)
{
    g_return_val_if_fail(o, FALSE);
    const StemKernels *k = o->k;
    /* every check before any change */
    if (o->n_staged > 0) {
        const Chunk *c = &o->rec[o->staged[0]];
        if (c->n != n) {
            g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                        "offloaded tables: begin() with %d positions, but the staged chunk has %d", n, c->n);
            return FALSE;
        }
        for (int i = 0; i < n; i++)
            if (!ids || ids[i] != c->ids[i]) {
                g_set_error(error, OFFLOAD_ERROR, OFFLOAD_ERROR_INVALID,
                            "offloaded tables: begin() ids differ from the staged chunk at position %d", i);
                return FALSE;
            }
    } else if (!check_ids(o, ids, n, error)) {
        return FALSE;
    }

    /* R2: release the previous chunk only once no queued compute can read its slots */
    if (o->cur >= 0) {
        if (o->reads_pending) k->synchronize();
        o->reads_pending = FALSE;
        stem_rowcache_release_chunk(o->rc);   /* the current chunk is the oldest pinned */
        o->cur = -1;
    }
    if (o->n_staged == 0) stage_checked(o, ids, n);

    int refresh_fence = -1;
    if (stale(o) && stem_rowcache_chunks_in_flight(o->rc) > 0) {
        /* the overlay changed (or invalidate_all) after staged chunks were looked up;
         * the refresh reads the host, so trained units go home first */
        stem_offload_flush(o);
        stem_rowcache_invalidate_unpinned(o->rc, o->t);
        refresh_fence = refresh_staged(o);
        o->invalid_pending = FALSE;
    }
    /* deferred chunks, in order, as far as they fit (the oldest always does now) */
    for (int s = 0; s < o->n_staged; s++) {
        Chunk *c = &o->rec[o->staged[s]];
        if (c->looked_up) continue;
        if (!lookup(o, c)) break;
    }

    Chunk *c = &o->rec[o->staged[0]];
    g_assert(c->looked_up);
    o->cur = o->staged[0];
    o->n_staged--;
    memmove(o->staged, o->staged + 1, (size_t)o->n_staged * sizeof *o->staged);

    /* R1: this chunk's compute waits for its copies (and a refresh) */
    if (c->fence >= 0) k->compute_wait(c->fence);
    if (refresh_fence >= 0) k->compute_wait(refresh_fence);
    /* R4: the index buffers; nothing queued reads them now */
    if (n > 0) {
        k->upload(o->d_pslot, c->pslot, (size_t)n * sizeof(int32_t));
        k->upload(o->d_inverse, c->inverse, (size_t)n * sizeof(int32_t));
    }
    if (o->d_grad && c->n_unique > 0) k->zero(o->d_grad, (size_t)c->n_unique * o->W * sizeof(float));
    return TRUE;
}

/* ------------------------------------------------------------------ compute */

void stem_offload_rows(StemOffload *o, int j, float *u)
{
    g_return_if_fail(o && o->cur >= 0 && j >= 0 && j < o->n_stem);
    const Chunk *c = &o->rec[o->cur];
    if (c->n == 0) return;
    o->k->gather_rows(u, o->cache + (size_t)j * o->F, o->d_pslot, c->n, o->F, (size_t)o->W);
    o->reads_pending = TRUE;
}

/* Training state is allocated when first needed; out of memory there is fatal
 * (the caller is mid-step and has no way to back out). */
static void *train_alloc(StemOffload *o, size_t bytes, const char *what)
{
    void *p = o->k->alloc(bytes);
    if (!p)
        g_error("offloaded tables: cannot allocate %.1f MiB of %s memory for %s", bytes / 1048576.0, o->k->name,
                what);
    return p;
}

/* Training starts on the first gradient: the buffers are made then, zeroed for
 * the current chunk (begin() zeroes them for every later one). */
static void ensure_grad(StemOffload *o)
{
    if (o->d_grad) return;
    o->d_grad = train_alloc(o, (size_t)o->max_unique * o->W * sizeof(float), "the row gradients");
    const Chunk *c = &o->rec[o->cur];
    if (c->n_unique > 0) o->k->zero(o->d_grad, (size_t)c->n_unique * o->W * sizeof(float));
}

void stem_offload_accumulate_grad(StemOffload *o, int j, const float *du)
{
    g_return_if_fail(o && o->cur >= 0 && j >= 0 && j < o->n_stem);
    ensure_grad(o);
    const Chunk *c = &o->rec[o->cur];
    if (c->n == 0) return;
    o->k->scatter_rows(o->d_grad + (size_t)j * o->F, du, o->d_inverse, c->n, o->F, (size_t)o->W);
    o->reads_pending = TRUE;
}

void stem_offload_ffn_forward(StemOffload *o, int j, float *m, const float *g)
{
    g_return_if_fail(o && o->cur >= 0 && j >= 0 && j < o->n_stem);
    const Chunk *c = &o->rec[o->cur];
    if (c->n == 0) return;
    o->k->stem_ffn_forward(m, g, o->cache + (size_t)j * o->F, o->d_pslot, c->n, o->F, (size_t)o->W);
    o->reads_pending = TRUE;
}

void stem_offload_ffn_backward(StemOffload *o, int j, float *dg, const float *dm, const float *g)
{
    g_return_if_fail(o && o->cur >= 0 && j >= 0 && j < o->n_stem);
    ensure_grad(o);
    const Chunk *c = &o->rec[o->cur];
    if (c->n == 0) return;
    /* rows by slot, gradients by unique index (begin() zeroed them) */
    o->k->stem_ffn_backward(dg, o->d_grad + (size_t)j * o->F, dm, g, o->cache + (size_t)j * o->F, o->d_pslot,
                            (size_t)o->W, o->d_inverse, (size_t)o->W, c->n, o->F);
    o->reads_pending = TRUE;
}

double stem_offload_grad_sumsq(StemOffload *o)
{
    g_return_val_if_fail(o, 0.0);
    if (o->cur < 0 || !o->d_grad) return 0.0;
    const Chunk *c = &o->rec[o->cur];
    double s = o->k->sumsq(o->d_grad, (size_t)c->n_unique * o->W);
    o->reads_pending = FALSE;   /* a scalar op waits for everything queued before it */
    return s;
}

static void *train_host_alloc(StemOffload *o, size_t bytes, const char *what)
{
    void *p = o->k->host_alloc(bytes);
    if (!p) g_error("offloaded tables: cannot allocate %.1f MiB of pinned host memory for %s", bytes / 1048576.0, what);
    return p;
}

/* The caller's host buffers: kept for write-backs and the misses' moments
 * (they may move between steps, e.g. a model that reallocated them). */
static void set_host_buffers(StemOffload *o, float *const *params, float *const *adam_m, float *const *adam_v)
{
    for (int j = 0; j < o->n_stem; j++) {
        o->hp[j] = params[j];
        o->hm[j] = adam_m[j];
        o->hv[j] = adam_v[j];
    }
}

/* The first step: moments on the device for every cached unit (from here on a
 * miss brings its own), and the write-back machinery. */
static void train_init(StemOffload *o, float *const *params, float *const *adam_m, float *const *adam_v)
{
    const StemKernels *k = o->k;
    const size_t W = (size_t)o->W, unit = W * sizeof(float);
    o->hp = g_new(float *, o->n_stem);
    o->hm = g_new(float *, o->n_stem);
    o->hv = g_new(float *, o->n_stem);
    set_host_buffers(o, params, adam_m, adam_v);
    o->d_m = train_alloc(o, (size_t)o->slots * unit, "the cached rows' moments");
    o->d_v = train_alloc(o, (size_t)o->slots * unit, "the cached rows' moments");
    o->d_uslot = train_alloc(o, (size_t)o->max_unique * sizeof(int32_t), "the step's slot index");
    /* write-back waves of at most 64 MiB (rows + moments) */
    o->wb_cap = (int)MAX(1, MIN((size_t)o->max_unique, ((size_t)64 << 20) / (3 * unit)));
    o->d_wbidx = train_alloc(o, (size_t)o->wb_cap * sizeof(int32_t), "the write-back index");
    o->d_pack = train_alloc(o, (size_t)o->wb_cap * 3 * unit, "the write-back buffer");
    o->h_wb = train_host_alloc(o, (size_t)o->wb_cap * 3 * unit, "the write-back buffer");
    for (int b = 0; b < N_BUFFERS; b++)
        o->staging_mv[b] = train_host_alloc(o, (size_t)o->max_unique * 2 * unit, "staging the moments");
    o->dirty = g_new0(guint8, o->slots);
    o->wb_slot = g_new(int32_t, o->slots);
    o->wb_tok = g_new(int32_t, o->slots);
    o->training = TRUE;   /* from here on, gathers carry the moments */
    /* every resident unit (current, staged, or just cached) gets its moments,
     * through the (idle) first moment buffer, in waves of max_unique */
    int n = 0;
    for (int s = 0; s < o->slots; s++) {
        const int tok = o->slot_token[s];
        if (tok < 0 || stem_rowcache_slot_of(o->rc, tok) != s) continue;
        o->wb_tok[n] = tok;
        o->wb_slot[n++] = s;
    }
    float *mv = o->staging_mv[0];
    for (int u0 = 0; u0 < n; u0 += o->max_unique) {
        const int m = MIN(o->max_unique, n - u0);
        UnitCopy uc = { .o = o, .tokens = o->wb_tok + u0, .mv = mv };
        pool_for((size_t)m, 8, gather_units_part, &uc);
        for (int u = 0; u < m; u++) {
            k->upload(o->d_m + (size_t)o->wb_slot[u0 + u] * W, mv + (size_t)u * W, unit);
            k->upload(o->d_v + (size_t)o->wb_slot[u0 + u] * W, mv + ((size_t)o->max_unique + u) * W, unit);
        }
    }
}

typedef struct {
    StemOffload *o;
    const Chunk *c;
    float *const *params, *const *adam_m, *const *adam_v;
    float lr, beta1, beta2, eps, wd, grad_scale;
    int t;
} RowStepCtx;

static void row_step_part(void *p, size_t b, size_t e)
{
    const RowStepCtx *r = p;
    const StemOffload *o = r->o;
    const int F = o->F;
    const size_t W = (size_t)o->W;
    for (size_t u = b; u < e; u++) {
        const size_t off = (size_t)r->c->unique[u] * F;
        for (int j = 0; j < o->n_stem; j++)
            op_adamw(r->params[j] + off, o->h_grad + u * W + (size_t)j * F, r->adam_m[j] + off, r->adam_v[j] + off,
                     (size_t)F, r->lr, r->beta1, r->beta2, r->eps, r->wd, r->t, r->grad_scale);
    }
}

/* The step on the host (an edit overlay is present: the device holds effective
 * rows, which must not be trained). Everything is flushed first, so the host
 * rows and moments are current; afterwards the chunk's units go back into
 * their slots, effective rows and moments, clean. */
static void host_step(StemOffload *o, const Chunk *c, const RowStepCtx *rs)
{
    const StemKernels *k = o->k;
    const int nu = c->n_unique;
    const size_t W = (size_t)o->W;
    stem_offload_flush(o);
    if (!o->h_grad) o->h_grad = g_malloc((size_t)o->max_unique * W * sizeof(float));
    k->download(o->h_grad, o->d_grad, (size_t)nu * W * sizeof(float));
    o->reads_pending = FALSE;   /* download waits for everything queued before it */
    /* rows are independent: split them over the pool (op_adamw runs inline
     * inside a task; elementwise, so the bits do not depend on the split) */
    pool_for((size_t)nu, 16, row_step_part, (void *)rs);
    /* keep the cache coherent: the chunk's units go back into their slots, the
     * EFFECTIVE rows (an overlay row still shadows its base) and their moments;
     * later compute waits for the copies */
    k->compute_wait(upload_units(o, c->unique, c->uslot, nu));
}

void stem_offload_step(StemOffload *o, float *const *params, float *const *adam_m, float *const *adam_v,
                       float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale)
{
    g_return_if_fail(o && o->cur >= 0 && params && adam_m && adam_v);
    g_return_if_fail(stem_tables_dtype(o->t) == STEM_TABLE_F32);   /* params[j] must be the (fp32) base */
    const StemKernels *k = o->k;
    ensure_grad(o);   /* no gradient accumulated: the rows' gradients are zero */
    if (!o->training) train_init(o, params, adam_m, adam_v);
    else set_host_buffers(o, params, adam_m, adam_v);
    const Chunk *c = &o->rec[o->cur];
    const int nu = c->n_unique;
    if (nu == 0) return;
    RowStepCtx rs = { .o = o, .c = c, .params = params, .adam_m = adam_m, .adam_v = adam_v, .lr = lr,
                      .beta1 = beta1, .beta2 = beta2, .eps = eps, .wd = wd, .t = t, .grad_scale = grad_scale };
    if (stem_tables_n_overrides(o->t) > 0) {
        host_step(o, c, &rs);
        return;
    }
    /* lazy AdamW on the device, over the chunk's units in their slots (R4: the
     * last reader of d_uslot, the previous step, was drained by this chunk's begin) */
    k->upload(o->d_uslot, c->uslot, (size_t)nu * sizeof(int32_t));
    k->adamw_rows(o->cache, o->d_m, o->d_v, o->d_grad, o->d_uslot, nu, o->W, (size_t)o->W, lr, beta1, beta2, eps, wd,
                  t, grad_scale);
    o->reads_pending = TRUE;
    for (int u = 0; u < nu; u++)
        if (!o->dirty[c->uslot[u]]) {
            o->dirty[c->uslot[u]] = 1;
            o->n_dirty++;
        }
}

/* ------------------------------------------------------------------ invalidation, statistics */

void stem_offload_invalidate_all(StemOffload *o)
{
    g_return_if_fail(o);
    if (stem_rowcache_chunks_in_flight(o->rc) == 0) {
        stem_offload_flush(o);
        stem_rowcache_sync_overlay(o->rc, o->t, NULL, 0, NULL);
        o->invalid_pending = FALSE;
    } else {
        o->invalid_pending = TRUE;   /* done by the next lookup with nothing pinned, or the next begin() */
    }
}

void stem_offload_stats(StemOffload *o, StemOffloadStats *out)
{
    g_return_if_fail(o && out);
    memset(out, 0, sizeof *out);
    out->cache = *stem_rowcache_stats(o->rc);
    out->positions = o->positions;
    out->unique = o->unique;
    out->dedup_saving = o->positions ? 1.0 - (double)o->unique / (double)o->positions : 0.0;
    double copy = 0, stall = 0;
    o->k->copy_stats(&copy, &stall);
    out->copy_ms = copy - o->copy0;
    out->stall_ms = stall - o->stall0;
    out->overlap = out->copy_ms > 0 ? 1.0 - out->stall_ms / out->copy_ms : 0.0;
    out->written_back = o->wb_units;
    out->bytes_written_back = o->wb_units * 3 * (guint64)o->W * sizeof(float);
    out->slots = o->slots;
    out->capacity = o->capacity;
}

void stem_offload_reset_stats(StemOffload *o)
{
    g_return_if_fail(o);
    stem_rowcache_reset_stats(o->rc);
    o->positions = o->unique = 0;
    o->wb_units = 0;
    o->k->copy_stats(&o->copy0, &o->stall0);
}
