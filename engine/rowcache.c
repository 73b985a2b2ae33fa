/* Dedup and device row-cache policy; see rowcache.h for every policy choice. */
#include "rowcache.h"
#include <string.h>

G_DEFINE_QUARK(stem-rowcache-error-quark, stem_rowcache_error)

/* ------------------------------------------------------------------------------- dedup */

struct StemDedup {
    int vocab;
    guint32 gen;     /* current chunk's stamp, never 0 */
    guint32 *stamp;  /* [vocab] gen of the chunk that last saw the id */
    int32_t *where;  /* [vocab] its index in unique[] (valid when stamp == gen) */
};

StemDedup *stem_dedup_new(int vocab)
{
    g_return_val_if_fail(vocab > 0, NULL);
    StemDedup *d = g_new0(StemDedup, 1);
    d->vocab = vocab;
    d->stamp = g_new0(guint32, (gsize)vocab);
    d->where = g_new0(int32_t, (gsize)vocab);
    return d;
}

void stem_dedup_free(StemDedup *d)
{
    if (!d) return;
    g_free(d->stamp);
    g_free(d->where);
    g_free(d);
}

int stem_dedup_chunk(StemDedup *d, const int32_t *ids, int n, int32_t *unique, int32_t *inverse)
{
    if (++d->gen == 0) {            /* wrapped: stamps from 2^32 chunks ago would alias */
        memset(d->stamp, 0, (gsize)d->vocab * sizeof *d->stamp);
        d->gen = 1;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (t < 0 || t >= d->vocab) return -1;
        if (d->stamp[t] != d->gen) {
            d->stamp[t] = d->gen;
            d->where[t] = k;
            unique[k++] = t;
        }
        inverse[i] = d->where[t];
    }
    return k;
}

/* --------------------------------------------------------------------------- row cache */

typedef struct {
    int32_t token;    /* -1 when the slot is free */
    guint32 freq;
    guint64 tick;
    int32_t heap_pos; /* index in heap[], -1 when not in the heap (pinned or free) */
    int32_t pins;     /* pinned chunks holding it; in the heap iff resident and pins == 0 */
} Entry;

struct StemRowCache {
    StemRowCacheOptions opt;
    Entry *e;            /* [capacity], indexed by slot */
    int32_t *slot_of;    /* [vocab] slot or -1 */
    guint32 *hist;       /* [vocab] remembered counts (keep_history), else NULL */
    guint32 *seen;       /* [vocab] chunk stamp for duplicate detection */
    guint32 seen_gen;
    int32_t *heap;       /* [capacity] slots of unpinned residents, min (freq, tick) on top */
    int heap_n;
    int32_t *free_slots; /* [capacity] stack, top = next slot handed out */
    int n_free;
    int max_chunks;      /* >= 1 */
    int32_t *pinned;     /* [max_chunks][capacity]: slots pinned by each chunk in flight (a ring) */
    int *n_pinned;       /* [max_chunks] */
    int chunk_head;      /* ring index of the oldest chunk in flight */
    int n_chunks;        /* chunks in flight */
    int size;
    guint64 tick;
    guint64 synced_gen;
    StemRowCacheStats st;
};

static inline gboolean key_less(const Entry *a, const Entry *b)
{
    return a->freq < b->freq || (a->freq == b->freq && a->tick < b->tick);
}

static void heap_swap(StemRowCache *c, int i, int j)
{
    int32_t a = c->heap[i], b = c->heap[j];
    c->heap[i] = b; c->heap[j] = a;
    c->e[b].heap_pos = i;
    c->e[a].heap_pos = j;
}

static void heap_up(StemRowCache *c, int i)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!key_less(&c->e[c->heap[i]], &c->e[c->heap[p]])) break;
        heap_swap(c, i, p);
        i = p;
    }
}

static void heap_down(StemRowCache *c, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->heap_n && key_less(&c->e[c->heap[l]], &c->e[c->heap[m]])) m = l;
        if (r < c->heap_n && key_less(&c->e[c->heap[r]], &c->e[c->heap[m]])) m = r;
        if (m == i) break;
        heap_swap(c, i, m);
        i = m;
    }
}

static void heap_push(StemRowCache *c, int32_t slot)
{
    int i = c->heap_n++;
    c->heap[i] = slot;
    c->e[slot].heap_pos = i;
    heap_up(c, i);
}

static void heap_remove(StemRowCache *c, int32_t slot)
{
    int i = c->e[slot].heap_pos;
    g_assert(i >= 0 && i < c->heap_n);
    int last = --c->heap_n;
    if (i != last) {
        heap_swap(c, i, last);
        heap_down(c, i);
        heap_up(c, i);
    }
    c->e[slot].heap_pos = -1;
}

StemRowCacheOptions stem_rowcache_options_for(const StemTables *t, int capacity, gboolean keep_history)
{
    guint64 dsize = stem_tables_dtype(t) == STEM_TABLE_BF16 ? 2 : 4;
    StemRowCacheOptions o = {
        .vocab = stem_tables_vocab(t),
        .capacity = capacity,
        .row_bytes = (guint64)stem_tables_n(t) * (guint64)stem_tables_ffn(t) * dsize,
        .keep_history = keep_history,
        .max_chunks = 1,
    };
    return o;
}

StemRowCache *stem_rowcache_new(const StemRowCacheOptions *opt)
{
    g_return_val_if_fail(opt && opt->vocab > 0 && opt->capacity > 0, NULL);
    StemRowCache *c = g_new0(StemRowCache, 1);
    c->opt = *opt;
    int cap = opt->capacity;
    c->max_chunks = opt->max_chunks > 1 ? opt->max_chunks : 1;
    c->opt.max_chunks = c->max_chunks;
    c->e = g_new(Entry, (gsize)cap);
    c->heap = g_new(int32_t, (gsize)cap);
    c->free_slots = g_new(int32_t, (gsize)cap);
    c->pinned = g_new(int32_t, (gsize)cap * (gsize)c->max_chunks);
    c->n_pinned = g_new0(int, c->max_chunks);
    c->slot_of = g_new(int32_t, (gsize)opt->vocab);
    c->seen = g_new0(guint32, (gsize)opt->vocab);
    if (opt->keep_history) c->hist = g_new0(guint32, (gsize)opt->vocab);
    for (int v = 0; v < opt->vocab; v++) c->slot_of[v] = -1;
    for (int s = 0; s < cap; s++) {
        c->e[s] = (Entry){ .token = -1, .heap_pos = -1, .pins = 0 };
        c->free_slots[s] = cap - 1 - s;        /* slot 0 on top */
    }
    c->n_free = cap;
    return c;
}

void stem_rowcache_free(StemRowCache *c)
{
    if (!c) return;
    g_free(c->e);
    g_free(c->heap);
    g_free(c->free_slots);
    g_free(c->pinned);
    g_free(c->n_pinned);
    g_free(c->slot_of);
    g_free(c->seen);
    g_free(c->hist);
    g_free(c);
}

int stem_rowcache_capacity(const StemRowCache *c) { return c->opt.capacity; }
int stem_rowcache_size(const StemRowCache *c) { return c->size; }
int stem_rowcache_chunks_in_flight(const StemRowCache *c) { return c->n_chunks; }
const StemRowCacheStats *stem_rowcache_stats(const StemRowCache *c) { return &c->st; }
void stem_rowcache_reset_stats(StemRowCache *c) { memset(&c->st, 0, sizeof c->st); }

int stem_rowcache_slot_of(const StemRowCache *c, int token)
{
    return token >= 0 && token < c->opt.vocab ? c->slot_of[token] : -1;
}

guint32 stem_rowcache_freq(const StemRowCache *c, int token)
{
    if (token < 0 || token >= c->opt.vocab) return 0;
    if (c->hist) return c->hist[token];
    int s = c->slot_of[token];
    return s >= 0 ? c->e[s].freq : 0;
}

gboolean stem_rowcache_is_pinned(const StemRowCache *c, int token)
{
    int s = stem_rowcache_slot_of(c, token);
    return s >= 0 && c->e[s].pins > 0;
}

/* Remove a resident, unpinned token from the cache; its slot becomes free or is reused. */
static void drop_entry(StemRowCache *c, int32_t slot)
{
    Entry *e = &c->e[slot];
    heap_remove(c, slot);
    c->slot_of[e->token] = -1;
    e->token = -1;
    e->freq = 0;
    c->size--;
}

int stem_rowcache_lookup_chunk(StemRowCache *c, const int32_t *ids, int n, int32_t *slots, int32_t *misses,
                               int32_t *evicted, int *n_evicted, GError **error)
{
    if (n_evicted) *n_evicted = 0;
    if (c->n_chunks == c->max_chunks) {
        if (c->max_chunks == 1)
            g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                        "row cache: a chunk is still pinned (release_chunk not called)");
        else
            g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                        "row cache: %d chunks are still pinned (release_chunk not called)", c->n_chunks);
        return -1;
    }
    if (n < 0 || n > c->opt.capacity) {
        g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_TOO_LARGE,
                    "row cache: a chunk of %d unique tokens does not fit in a cache of %d rows", n,
                    c->opt.capacity);
        return -1;
    }
    /* Validate everything before changing anything, counting what the misses may use:
     * free slots plus unpinned residents, less the unpinned hits this chunk pins. */
    int n_miss = 0, unpinned_hits = 0;
    if (++c->seen_gen == 0) {
        memset(c->seen, 0, (gsize)c->opt.vocab * sizeof *c->seen);
        c->seen_gen = 1;
    }
    for (int i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (t < 0 || t >= c->opt.vocab) {
            g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                        "row cache: token id %d outside the vocabulary of %d", t, c->opt.vocab);
            return -1;
        }
        if (c->seen[t] == c->seen_gen) {
            g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                        "row cache: token id %d given twice in one chunk (dedup first)", t);
            return -1;
        }
        c->seen[t] = c->seen_gen;
        int32_t s = c->slot_of[t];
        if (s < 0) n_miss++;
        else if (c->e[s].pins == 0) unpinned_hits++;
    }
    int room = c->n_free + c->heap_n - unpinned_hits;   /* always >= n_miss with no chunk in flight */
    if (n_miss > room) {
        g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_TOO_LARGE,
                    "row cache: %d new rows do not fit beside the %d chunk(s) in flight (%d rows free or "
                    "evictable)", n_miss, c->n_chunks, room);
        return -1;
    }

    guint64 base = c->tick;
    c->tick += (guint64)n;
    int ring = (c->chunk_head + c->n_chunks) % c->max_chunks;
    int32_t *pinned = c->pinned + (gsize)ring * (gsize)c->opt.capacity;
    int n_pinned = 0;

    /* Pass 1: hits are touched and pinned before any miss can evict. */
    for (int i = 0; i < n; i++) {
        int32_t s = c->slot_of[ids[i]];
        slots[i] = s;
        if (s < 0) continue;
        Entry *e = &c->e[s];
        if (e->pins == 0) heap_remove(c, s);   /* else already out of the heap: pinned by an earlier chunk */
        e->pins++;
        e->freq++;
        e->tick = base + (guint64)i;
        if (c->hist) c->hist[ids[i]] = e->freq;
        pinned[n_pinned++] = s;
    }
    /* Pass 2: misses in order, into a free slot or the victim's. */
    int k = 0, n_ev = 0;
    for (int i = 0; i < n; i++) {
        if (slots[i] >= 0) continue;
        int32_t t = ids[i], s;
        if (c->n_free > 0) {
            s = c->free_slots[--c->n_free];
        } else {
            g_assert(c->heap_n > 0);             /* n <= capacity guarantees a victim */
            s = c->heap[0];
            int32_t victim = c->e[s].token;
            drop_entry(c, s);
            if (evicted) evicted[n_ev] = victim;
            n_ev++;
            c->st.evictions++;
        }
        Entry *e = &c->e[s];
        e->token = t;
        e->freq = (c->hist ? c->hist[t] : 0) + 1;
        if (c->hist) c->hist[t] = e->freq;
        e->tick = base + (guint64)i;
        e->heap_pos = -1;
        e->pins = 1;
        c->slot_of[t] = s;
        c->size++;
        slots[i] = s;
        pinned[n_pinned++] = s;
        if (misses) misses[k] = i;
        k++;
    }
    if (n_evicted) *n_evicted = n_ev;
    c->n_pinned[ring] = n_pinned;
    c->n_chunks++;
    c->st.chunks++;
    c->st.lookups += (guint64)n;
    c->st.hits += (guint64)(n - k);
    c->st.misses += (guint64)k;
    c->st.rows_moved += (guint64)k;
    c->st.bytes_moved += (guint64)k * c->opt.row_bytes;
    return k;
}

void stem_rowcache_release_chunk(StemRowCache *c)
{
    if (c->n_chunks == 0) return;
    int ring = c->chunk_head;
    const int32_t *pinned = c->pinned + (gsize)ring * (gsize)c->opt.capacity;
    for (int i = 0; i < c->n_pinned[ring]; i++) {
        Entry *e = &c->e[pinned[i]];
        g_assert(e->pins > 0);
        if (--e->pins == 0) heap_push(c, pinned[i]);
    }
    c->n_pinned[ring] = 0;
    c->chunk_head = (ring + 1) % c->max_chunks;
    c->n_chunks--;
}

gboolean stem_rowcache_invalidate(StemRowCache *c, int token, GError **error)
{
    if (token < 0 || token >= c->opt.vocab) {
        g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                    "row cache: token id %d outside the vocabulary of %d", token, c->opt.vocab);
        return FALSE;
    }
    int32_t s = c->slot_of[token];
    if (s < 0) return FALSE;
    if (c->e[s].pins > 0) {
        g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                    "row cache: token %d is pinned by the chunk in flight", token);
        return FALSE;
    }
    drop_entry(c, s);
    c->free_slots[c->n_free++] = s;
    c->st.invalidations++;
    return TRUE;
}

gboolean stem_rowcache_sync_overlay(StemRowCache *c, const StemTables *t, const int32_t *tokens, int n,
                                    GError **error)
{
    if (c->n_chunks > 0) {
        g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                    "row cache: cannot sync the overlay while a chunk is pinned");
        return FALSE;
    }
    if (tokens) {
        for (int i = 0; i < n; i++) {
            GError *e = NULL;
            stem_rowcache_invalidate(c, tokens[i], &e);
            if (e) { g_propagate_error(error, e); return FALSE; }
        }
    } else {
        for (int32_t s = 0; s < c->opt.capacity; s++)
            if (c->e[s].token >= 0) stem_rowcache_invalidate(c, c->e[s].token, NULL);
    }
    c->synced_gen = t ? stem_tables_generation(t) : c->synced_gen;
    return TRUE;
}

int stem_rowcache_invalidate_unpinned(StemRowCache *c, const StemTables *t)
{
    int dropped = 0;
    for (int32_t s = 0; s < c->opt.capacity; s++)
        if (c->e[s].token >= 0 && c->e[s].pins == 0) {
            stem_rowcache_invalidate(c, c->e[s].token, NULL);
            dropped++;
        }
    if (t) c->synced_gen = stem_tables_generation(t);
    return dropped;
}

gboolean stem_rowcache_overlay_stale(const StemRowCache *c, const StemTables *t)
{
    return stem_tables_generation(t) != c->synced_gen;
}

/* ------------------------------------------------------------------- one chunk, both */

int stem_offload_chunk(StemRowCache *c, StemDedup *d, const int32_t *ids, int n, int32_t *work,
                       int *n_unique, int *n_waves, guint8 *miss_flag, GError **error)
{
    int32_t *unique = work, *inverse = work + n, *slots = work + 2 * (gsize)n, *misses = work + 3 * (gsize)n;
    int nu = stem_dedup_chunk(d, ids, n, unique, inverse);
    if (nu < 0) {
        g_set_error(error, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID,
                    "row cache: a token id of the chunk is outside the vocabulary");
        return -1;
    }
    if (n_unique) *n_unique = nu;
    if (miss_flag) memset(miss_flag, 0, (gsize)nu);
    int cap = c->opt.capacity, total = 0, waves = 0;
    for (int off = 0; off < nu; off += cap) {
        int m = MIN(cap, nu - off);
        int k = stem_rowcache_lookup_chunk(c, unique + off, m, slots + off, misses, NULL, NULL, error);
        if (k < 0) return -1;
        if (miss_flag)
            for (int j = 0; j < k; j++) miss_flag[off + misses[j]] = 1;
        total += k;
        waves++;
        stem_rowcache_release_chunk(c);
    }
    if (n_waves) *n_waves = waves;
    return total;
}
