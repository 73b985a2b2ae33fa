/* Unit tests for the offload policy (engine/rowcache.h): dedup and the device row cache.
 *
 * The cache is checked step by step against a slow reference written here from the
 * policy's statement alone (LFU, LRU tie-break, hits pinned before misses, victim =
 * argmin (freq, tick) over unpinned residents by a linear scan), on skewed random
 * streams. The hit-rate goal (>= 80 % at a cache of 5 % of the vocabulary) is measured
 * on the real prose corpus with a tokenizer trained on it. */
#include "engine/rowcache.h"
#include "engine/corpus.h"
#include "engine/tokenizer.h"
#include <math.h>
#include <string.h>

/* ---- skewed ids ------------------------------------------------------------------------ */

typedef struct {
    int vocab;
    double *cdf;
} Zipf;

static Zipf zipf_new(int vocab, double s)
{
    Zipf z = { vocab, g_new(double, vocab) };
    double acc = 0;
    for (int i = 0; i < vocab; i++) z.cdf[i] = (acc += 1.0 / pow(i + 1, s));
    for (int i = 0; i < vocab; i++) z.cdf[i] /= acc;
    return z;
}

/* Rank r maps to a scrambled id so that hot ids are not simply the small ones. */
static int zipf_draw(const Zipf *z, GRand *r)
{
    double u = g_rand_double(r);
    int lo = 0, hi = z->vocab - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (z->cdf[mid] < u) lo = mid + 1; else hi = mid;
    }
    return (int)(((guint64)lo * 7919u + 13u) % (guint64)z->vocab);
}

/* ---- 1. dedup against a naive reference ------------------------------------------------ */

static void test_dedup_random(void)
{
    const int vocab = 700;
    GRand *r = g_rand_new_with_seed(42);
    Zipf z = zipf_new(vocab, 1.0);
    StemDedup *d = stem_dedup_new(vocab);
    int32_t ids[400], uniq[400], inv[400], ref[400];
    for (int t = 0; t < 5000; t++) {
        int n = g_rand_int_range(r, 0, 400);
        gboolean uniform = t % 3 == 0;
        for (int i = 0; i < n; i++) ids[i] = uniform ? g_rand_int_range(r, 0, vocab) : zipf_draw(&z, r);
        int k = stem_dedup_chunk(d, ids, n, uniq, inv);
        /* naive: O(n^2) first-occurrence scan */
        int nr = 0;
        for (int i = 0; i < n; i++) {
            gboolean seen = FALSE;
            for (int j = 0; j < nr && !seen; j++) seen = ref[j] == ids[i];
            if (!seen) ref[nr++] = ids[i];
        }
        g_assert_cmpint(k, ==, nr);
        g_assert_cmpmem(uniq, (gsize)k * sizeof *uniq, ref, (gsize)nr * sizeof *ref);
        for (int i = 0; i < n; i++) {
            g_assert_cmpint(inv[i], >=, 0);
            g_assert_cmpint(inv[i], <, k);
            g_assert_cmpint(uniq[inv[i]], ==, ids[i]);
        }
    }
    /* an id outside the vocabulary is reported, and the next chunk is still right */
    int32_t bad[3] = { 1, vocab, 2 };
    g_assert_cmpint(stem_dedup_chunk(d, bad, 3, uniq, inv), ==, -1);
    int32_t neg[2] = { 5, -1 };
    g_assert_cmpint(stem_dedup_chunk(d, neg, 2, uniq, inv), ==, -1);
    int32_t ok[5] = { 3, 1, 3, 2, 1 };
    g_assert_cmpint(stem_dedup_chunk(d, ok, 5, uniq, inv), ==, 3);
    g_assert_cmpint(uniq[0], ==, 3); g_assert_cmpint(uniq[1], ==, 1); g_assert_cmpint(uniq[2], ==, 2);
    g_assert_cmpint(inv[4], ==, 1);
    stem_dedup_free(d);
    g_free(z.cdf);
    g_rand_free(r);
}

/* ---- 2. the cache against a slow reference -------------------------------------------- */

typedef struct {
    int vocab, cap, n;
    gboolean history;
    int32_t *tok;     /* [cap] resident tokens (unordered) */
    guint32 *freq;    /* [cap] */
    guint64 *tick;    /* [cap] */
    guint32 *hist;    /* [vocab] */
    guint64 clock;
} Ref;

static Ref ref_new(int vocab, int cap, gboolean history)
{
    Ref f = { vocab, cap, 0, history, g_new(int32_t, cap), g_new(guint32, cap), g_new(guint64, cap),
              g_new0(guint32, vocab), 0 };
    return f;
}

static void ref_free(Ref *f) { g_free(f->tok); g_free(f->freq); g_free(f->tick); g_free(f->hist); }

static int ref_find(const Ref *f, int t)
{
    for (int i = 0; i < f->n; i++) if (f->tok[i] == t) return i;
    return -1;
}

static void ref_remove(Ref *f, int i)
{
    f->n--;
    f->tok[i] = f->tok[f->n]; f->freq[i] = f->freq[f->n]; f->tick[i] = f->tick[f->n];
}

/* hit[i] = 1/0; evicted[] in order; returns number evicted */
static int ref_chunk(Ref *f, const int32_t *ids, int n, int *hit, int32_t *evicted)
{
    gboolean *pinned = g_new0(gboolean, f->cap);
    guint64 base = f->clock;
    f->clock += (guint64)n;
    for (int i = 0; i < n; i++) {
        int j = ref_find(f, ids[i]);
        hit[i] = j >= 0;
        if (j < 0) continue;
        f->freq[j]++;
        f->tick[j] = base + (guint64)i;
        f->hist[ids[i]] = f->freq[j];
        pinned[j] = TRUE;
    }
    int ne = 0;
    for (int i = 0; i < n; i++) {
        if (hit[i]) continue;
        if (f->n == f->cap) {
            int v = -1;
            for (int j = 0; j < f->n; j++) {
                if (pinned[j]) continue;
                if (v < 0 || f->freq[j] < f->freq[v] || (f->freq[j] == f->freq[v] && f->tick[j] < f->tick[v])) v = j;
            }
            g_assert_cmpint(v, >=, 0);
            evicted[ne++] = f->tok[v];
            ref_remove(f, v);
            pinned[v] = pinned[f->n];
            pinned[f->n] = FALSE;
        }
        int j = f->n++;
        f->tok[j] = ids[i];
        f->freq[j] = (f->history ? f->hist[ids[i]] : 0) + 1;
        f->hist[ids[i]] = f->freq[j];
        f->tick[j] = base + (guint64)i;
        pinned[j] = TRUE;
    }
    g_free(pinned);
    return ne;
}

static void check_against_reference(gboolean history)
{
    const int vocab = 2000, cap = 96;
    GRand *r = g_rand_new_with_seed(history ? 7 : 8);
    Zipf z = zipf_new(vocab, 1.05);
    StemRowCacheOptions o = { .vocab = vocab, .capacity = cap, .row_bytes = 3 * 64 * 4, .keep_history = history };
    StemRowCache *c = stem_rowcache_new(&o);
    Ref f = ref_new(vocab, cap, history);
    int32_t *slot_of = g_new(int32_t, vocab);       /* what the cache told us, per token */
    for (int v = 0; v < vocab; v++) slot_of[v] = -1;
    gboolean *in_chunk = g_new0(gboolean, vocab);
    int32_t ids[128], slots[128], misses[128], ev[128], ref_ev[128];
    int hit[128];
    guint64 accesses = 0, hits = 0, misses_n = 0, evictions = 0, invalidations = 0;
    for (int step = 0; accesses < 60000; step++) {
        /* a chunk of distinct skewed ids, 1..cap of them */
        int want = g_rand_int_range(r, 1, step % 10 == 0 ? cap + 1 : 48);
        int n = 0;
        for (int tries = 0; n < want && tries < 20 * want; tries++) {
            int t = zipf_draw(&z, r);
            if (!in_chunk[t]) { in_chunk[t] = TRUE; ids[n++] = t; }
        }
        int ne = -1;
        int k = stem_rowcache_lookup_chunk(c, ids, n, slots, misses, ev, &ne, NULL);
        int rne = ref_chunk(&f, ids, n, hit, ref_ev);
        g_assert_cmpint(k, >=, 0);
        /* identical decisions: hit/miss per id, the misses list, the victims in order */
        int km = 0;
        for (int i = 0; i < n; i++) {
            if (!hit[i]) { g_assert_cmpint(km, <, k); g_assert_cmpint(misses[km], ==, i); km++; }
            g_assert_cmpint(stem_rowcache_slot_of(c, ids[i]), ==, slots[i]);
            g_assert_true(stem_rowcache_is_pinned(c, ids[i]));
        }
        g_assert_cmpint(km, ==, k);
        g_assert_cmpint(ne, ==, rne);
        g_assert_cmpmem(ev, (gsize)ne * sizeof *ev, ref_ev, (gsize)rne * sizeof *ref_ev);
        /* pinned never evicted; slots consistent and distinct */
        for (int j = 0; j < ne; j++) {
            g_assert_false(in_chunk[ev[j]]);
            g_assert_cmpint(stem_rowcache_slot_of(c, ev[j]), ==, -1);
            slot_of[ev[j]] = -1;
        }
        for (int i = 0; i < n; i++) {
            g_assert_cmpint(slots[i], >=, 0);
            g_assert_cmpint(slots[i], <, cap);
            if (hit[i]) g_assert_cmpint(slots[i], ==, slot_of[ids[i]]);
            for (int j = 0; j < i; j++) g_assert_cmpint(slots[j], !=, slots[i]);
            slot_of[ids[i]] = slots[i];
        }
        g_assert_cmpint(stem_rowcache_size(c), ==, f.n);
        g_assert_cmpint(stem_rowcache_size(c), <=, cap);
        for (int i = 0; i < n; i++) {
            int j = ref_find(&f, ids[i]);
            g_assert_cmpuint(stem_rowcache_freq(c, ids[i]), ==, f.freq[j]);
        }
        /* an invalidation of a pinned token fails cleanly */
        GError *err = NULL;
        g_assert_false(stem_rowcache_invalidate(c, ids[0], &err));
        g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
        g_clear_error(&err);
        stem_rowcache_release_chunk(c);
        for (int i = 0; i < n; i++) in_chunk[ids[i]] = FALSE;
        accesses += (guint64)n;
        hits += (guint64)(n - k);
        misses_n += (guint64)k;
        evictions += (guint64)ne;
        /* now and then an edit invalidates a few tokens (resident or not) */
        if (step % 17 == 5) {
            for (int q = 0; q < 3; q++) {
                int t = zipf_draw(&z, r);
                int j = ref_find(&f, t);
                gboolean was = stem_rowcache_invalidate(c, t, &err);
                g_assert_no_error(err);
                g_assert_cmpint(was, ==, j >= 0);
                if (j >= 0) {
                    ref_remove(&f, j);
                    if (!history) f.hist[t] = 0;
                    invalidations++;
                }
                slot_of[t] = -1;
                g_assert_cmpint(stem_rowcache_slot_of(c, t), ==, -1);
                /* invalidated tokens miss next time */
                int32_t one[1] = { t }, s1[1], m1[1];
                g_assert_cmpint(stem_rowcache_lookup_chunk(c, one, 1, s1, m1, ev, &ne, NULL), ==, 1);
                int h1[1];
                g_assert_cmpint(ref_chunk(&f, one, 1, h1, ref_ev), ==, ne);
                g_assert_cmpint(h1[0], ==, 0);
                g_assert_cmpmem(ev, (gsize)ne * sizeof *ev, ref_ev, (gsize)ne * sizeof *ref_ev);
                for (int e2 = 0; e2 < ne; e2++) slot_of[ev[e2]] = -1;
                slot_of[t] = s1[0];
                stem_rowcache_release_chunk(c);
                accesses++; misses_n++; evictions += (guint64)ne;
            }
        }
    }
    const StemRowCacheStats *st = stem_rowcache_stats(c);
    g_assert_cmpuint(st->lookups, ==, accesses);
    g_assert_cmpuint(st->hits, ==, hits);
    g_assert_cmpuint(st->misses, ==, misses_n);
    g_assert_cmpuint(st->evictions, ==, evictions);
    g_assert_cmpuint(st->invalidations, ==, invalidations);
    g_assert_cmpuint(st->rows_moved, ==, misses_n);
    g_assert_cmpuint(st->bytes_moved, ==, misses_n * o.row_bytes);
    g_test_message("%s LFU: %" G_GUINT64_FORMAT " accesses, hit rate %.3f, %" G_GUINT64_FORMAT " evictions",
                   history ? "perfect" : "in-cache", accesses, (double)hits / (double)accesses, evictions);
    g_assert_cmpuint(evictions, >, 1000);   /* the stream really exercised eviction */
    stem_rowcache_free(c);
    ref_free(&f);
    g_free(slot_of);
    g_free(in_chunk);
    g_free(z.cdf);
    g_rand_free(r);
}

static void test_cache_reference_history(void) { check_against_reference(TRUE); }
static void test_cache_reference_in_cache(void) { check_against_reference(FALSE); }

/* ---- 3. invariants and errors ---------------------------------------------------------- */

static void test_cache_errors(void)
{
    StemRowCacheOptions o = { .vocab = 50, .capacity = 4, .row_bytes = 8, .keep_history = TRUE };
    StemRowCache *c = stem_rowcache_new(&o);
    int32_t slots[8], misses[8];
    GError *err = NULL;
    int32_t a[3] = { 1, 2, 3 };
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, a, 3, slots, misses, NULL, NULL, &err), ==, 3);
    g_assert_no_error(err);
    /* in flight: a second lookup is refused */
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, a, 3, slots, misses, NULL, NULL, &err), ==, -1);
    g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
    g_clear_error(&err);
    stem_rowcache_release_chunk(c);
    StemRowCacheStats before = *stem_rowcache_stats(c);
    /* larger than the capacity */
    int32_t big[5] = { 10, 11, 12, 13, 14 };
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, big, 5, slots, misses, NULL, NULL, &err), ==, -1);
    g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_TOO_LARGE);
    g_assert_nonnull(strstr(err->message, "does not fit"));
    g_clear_error(&err);
    /* duplicate and out-of-range ids */
    int32_t dup[3] = { 1, 7, 1 };
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, dup, 3, slots, misses, NULL, NULL, &err), ==, -1);
    g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
    g_clear_error(&err);
    int32_t oob[2] = { 4, 50 };
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, oob, 2, slots, misses, NULL, NULL, &err), ==, -1);
    g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
    g_clear_error(&err);
    /* nothing changed by the refused calls */
    g_assert_cmpmem(&before, sizeof before, stem_rowcache_stats(c), sizeof before);
    g_assert_cmpint(stem_rowcache_size(c), ==, 3);
    g_assert_cmpint(stem_rowcache_slot_of(c, 7), ==, -1);
    g_assert_cmpint(stem_rowcache_slot_of(c, 4), ==, -1);
    g_assert_false(stem_rowcache_is_pinned(c, 1));
    /* a chunk of exactly the capacity, all but one resident: the one miss evicts nobody
     * it needs (every resident is pinned, the free slot is used) */
    int32_t four[4] = { 3, 2, 1, 9 };
    int32_t ev[4]; int ne = -1;
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, four, 4, slots, misses, ev, &ne, &err), ==, 1);
    g_assert_cmpint(ne, ==, 0);
    g_assert_cmpint(misses[0], ==, 3);
    stem_rowcache_release_chunk(c);
    /* full, all pinned but one miss: victim must be the one unpinned resident (1 of the four
     * not in this chunk), even though a pinned one has the lowest count */
    int32_t next[4] = { 9, 2, 3, 20 };
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, next, 4, slots, misses, ev, &ne, &err), ==, 1);
    g_assert_cmpint(ne, ==, 1);
    g_assert_cmpint(ev[0], ==, 1);
    stem_rowcache_release_chunk(c);
    /* invalidate: out of range fails, non-resident is FALSE without error, resident drops */
    g_assert_false(stem_rowcache_invalidate(c, -3, &err));
    g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
    g_clear_error(&err);
    g_assert_false(stem_rowcache_invalidate(c, 1, &err));
    g_assert_no_error(err);
    g_assert_true(stem_rowcache_invalidate(c, 9, &err));
    g_assert_cmpint(stem_rowcache_size(c), ==, 3);
    int32_t again[1] = { 9 };
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, again, 1, slots, misses, ev, &ne, &err), ==, 1);
    g_assert_cmpint(ne, ==, 0);           /* back into the freed slot */
    stem_rowcache_release_chunk(c);
    stem_rowcache_free(c);
}

/* The overlay of a real table store: generation changes mark the cache stale; sync
 * invalidates the changed tokens only (or all). */
static void test_cache_overlay_sync(void)
{
    const int n_stem = 2, vocab = 30, ffn = 4;
    float *base0 = g_new0(float, vocab * ffn), *base1 = g_new0(float, vocab * ffn);
    const void *bases[2] = { base0, base1 };
    StemTables *t = stem_tables_new(n_stem, vocab, ffn, STEM_TABLE_F32, bases);
    StemRowCacheOptions o = stem_rowcache_options_for(t, 8, TRUE);
    g_assert_cmpint(o.vocab, ==, vocab);
    g_assert_cmpuint(o.row_bytes, ==, (guint64)n_stem * ffn * 4);
    StemRowCache *c = stem_rowcache_new(&o);
    GError *err = NULL;
    g_assert_true(stem_rowcache_sync_overlay(c, t, NULL, 0, &err));
    g_assert_false(stem_rowcache_overlay_stale(c, t));
    int32_t ids[5] = { 4, 8, 15, 16, 23 }, slots[5], misses[5];
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, ids, 5, slots, misses, NULL, NULL, &err), ==, 5);
    stem_rowcache_release_chunk(c);
    float row[4] = { 1, 2, 3, 4 };
    stem_tables_set_override(t, 1, 15, row);   /* an edit of layer j = 1 of token 15 */
    g_assert_true(stem_rowcache_overlay_stale(c, t));
    int32_t changed[1] = { 15 };
    g_assert_true(stem_rowcache_sync_overlay(c, t, changed, 1, &err));
    g_assert_false(stem_rowcache_overlay_stale(c, t));
    g_assert_cmpint(stem_rowcache_slot_of(c, 15), ==, -1);   /* the whole unit, all layers */
    g_assert_cmpint(stem_rowcache_slot_of(c, 16), >=, 0);
    g_assert_cmpint(stem_rowcache_lookup_chunk(c, ids, 5, slots, misses, NULL, NULL, &err), ==, 1);
    g_assert_cmpint(misses[0], ==, 2);
    /* no sync while a chunk is pinned */
    g_assert_false(stem_rowcache_sync_overlay(c, t, NULL, 0, &err));
    g_assert_error(err, STEM_ROWCACHE_ERROR, STEM_ROWCACHE_ERROR_INVALID);
    g_clear_error(&err);
    stem_rowcache_release_chunk(c);
    stem_tables_clear_all_overrides(t);
    g_assert_true(stem_rowcache_overlay_stale(c, t));
    g_assert_true(stem_rowcache_sync_overlay(c, t, NULL, 0, &err));  /* unknown changes: flush */
    g_assert_cmpint(stem_rowcache_size(c), ==, 0);
    g_assert_cmpuint(stem_rowcache_stats(c)->invalidations, ==, 6);
    stem_rowcache_free(c);
    stem_tables_free(t);
    g_free(base0);
    g_free(base1);
}

/* ---- 4. the hit-rate goal on the prose corpus ----------------------------------------- */

static int32_t *prose_ids;
static size_t n_prose_ids;
static int prose_vocab;

static void load_prose(void)
{
    if (prose_ids) return;
    StemCorpusOptions co = { .data_dir = NULL, .prose_bytes = 2u << 20, .fact_repeats = 0,
                             .val_fraction = 0.02, .seed = 1234 };
    GError *err = NULL;
    StemCorpus *corpus = stem_corpus_build(&co, &err);
    g_assert_no_error(err);
    StemTokenizer *tok = stem_tokenizer_train(corpus->train->str, corpus->train->len, 4096, NULL, NULL);
    prose_vocab = stem_tokenizer_vocab_size(tok);
    g_assert_cmpint(prose_vocab, ==, 4096);
    prose_ids = stem_tokenizer_encode(tok, corpus->train->str, corpus->train->len, &n_prose_ids);
    g_assert_cmpuint(n_prose_ids, >, 100000);
    stem_tokenizer_free(tok);
    stem_corpus_free(corpus);
}

typedef struct { double hit_rate, position_hit_rate, dedup_saving; guint64 waves, chunks; } ProseRun;

static ProseRun run_prose(int capacity, int chunk, gboolean history)
{
    StemRowCacheOptions o = { .vocab = prose_vocab, .capacity = capacity, .row_bytes = 1, .keep_history = history };
    StemRowCache *c = stem_rowcache_new(&o);
    StemDedup *d = stem_dedup_new(prose_vocab);
    int32_t *work = g_new(int32_t, 4 * chunk);
    guint8 *miss = g_new(guint8, chunk);
    double saving = 0;
    guint64 pos_miss = 0;
    ProseRun pr = { 0 };
    for (size_t off = 0; off < n_prose_ids; off += (size_t)chunk) {
        int n = (int)MIN((size_t)chunk, n_prose_ids - off);
        int nu = 0, nw = 0;
        int k = stem_offload_chunk(c, d, prose_ids + off, n, work, &nu, &nw, miss, NULL);
        g_assert_cmpint(k, >=, 0);
        int km = 0;
        for (int u = 0; u < nu; u++) km += miss[u];
        g_assert_cmpint(km, ==, k);
        pos_miss += (guint64)k;          /* later positions of a missed token are served by its copy */
        saving += 1.0 - (double)nu / n;
        pr.chunks++;
        pr.waves += (guint64)nw;
    }
    const StemRowCacheStats *st = stem_rowcache_stats(c);
    pr.hit_rate = (double)st->hits / (double)st->lookups;
    pr.position_hit_rate = 1.0 - (double)pos_miss / (double)n_prose_ids;
    pr.dedup_saving = saving / (double)pr.chunks;
    stem_rowcache_free(c);
    stem_dedup_free(d);
    g_free(work);
    g_free(miss);
    return pr;
}

/* Static oracle: the capacity tokens present in the most chunks, known in advance (an
 * upper-bound-like reference for any LFU on a stationary stream). */
static double static_oracle_hit_rate(int capacity, int chunk)
{
    guint64 *df = g_new0(guint64, prose_vocab), total = 0;
    StemDedup *d = stem_dedup_new(prose_vocab);
    int32_t *u = g_new(int32_t, chunk), *inv = g_new(int32_t, chunk);
    for (size_t off = 0; off < n_prose_ids; off += (size_t)chunk) {
        int n = (int)MIN((size_t)chunk, n_prose_ids - off);
        int nu = stem_dedup_chunk(d, prose_ids + off, n, u, inv);
        for (int i = 0; i < nu; i++) df[u[i]]++;
        total += (guint64)nu;
    }
    guint64 *sorted = g_memdup2(df, (gsize)prose_vocab * sizeof *df);
    for (int i = 0; i < prose_vocab; i++)          /* partial selection sort: capacity is small */
        for (int j = i + 1; j < prose_vocab && i < capacity; j++)
            if (sorted[j] > sorted[i]) { guint64 x = sorted[i]; sorted[i] = sorted[j]; sorted[j] = x; }
    guint64 top = 0;
    for (int i = 0; i < capacity; i++) top += sorted[i];
    g_free(df); g_free(sorted); g_free(u); g_free(inv);
    stem_dedup_free(d);
    return (double)top / (double)total;
}

/* The numbers at 1/2/5/10 % of the vocabulary, both LFU flavours; sanity only. */
static void test_prose_measure(void)
{
    load_prose();
    const double fracs[4] = { 0.01, 0.02, 0.05, 0.10 };
    for (int h = 1; h >= 0; h--) {
        double last = -1;
        for (int i = 0; i < 4; i++) {
            int cap = (int)(fracs[i] * prose_vocab);   /* floor, as the bench does */
            ProseRun pr = run_prose(cap, 128, h);
            g_test_message("%s LFU, cache %2.0f%% = %3d rows: hit rate %.4f (per position %.4f; static oracle "
                           "%.4f), dedup saving %.4f, %" G_GUINT64_FORMAT " waves / %" G_GUINT64_FORMAT " chunks",
                           h ? "perfect " : "in-cache", 100 * fracs[i], cap, pr.hit_rate, pr.position_hit_rate,
                           static_oracle_hit_rate(cap, 128), pr.dedup_saving, pr.waves, pr.chunks);
            g_assert_cmpfloat(pr.hit_rate, >, last);
            g_assert_cmpfloat(pr.position_hit_rate, >=, pr.hit_rate);
            g_assert_cmpfloat(pr.dedup_saving, >, 0.0);
            g_assert_cmpfloat(pr.dedup_saving, <, 1.0);
            last = pr.hit_rate;
        }
    }
}

/* The goal: >= 80 % hits at a cache of 5 % of the vocabulary (204 rows of 4096),
 * chunks of 128, default policy (perfect LFU). NOT MET today (about 0.49 per unique
 * lookup, see test_prose_measure): meson runs this path as its own test marked
 * should_fail, so the threshold stays as stated and reaching it shows up as an
 * unexpected pass to be flipped. */
static void test_prose_hit_rate_goal(void)
{
    load_prose();
    int cap5 = (int)(0.05 * prose_vocab);
    g_assert_cmpint(cap5, ==, 204);
    ProseRun pr = run_prose(cap5, 128, TRUE);
    g_test_message("cache 204 rows: hit rate %.4f (goal 0.80)", pr.hit_rate);
    g_assert_cmpfloat(pr.hit_rate, >=, 0.80);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/offload/dedup/random", test_dedup_random);
    g_test_add_func("/offload/cache/reference-perfect-lfu", test_cache_reference_history);
    g_test_add_func("/offload/cache/reference-in-cache-lfu", test_cache_reference_in_cache);
    g_test_add_func("/offload/cache/errors", test_cache_errors);
    g_test_add_func("/offload/cache/overlay-sync", test_cache_overlay_sync);
    g_test_add_func("/offload/prose/measure", test_prose_measure);
    g_test_add_func("/offload/prose/hit-rate-goal", test_prose_hit_rate_goal);
    int rc = g_test_run();
    g_free(prose_ids);
    return rc;
}
