/* Whole-model checks of a compute backend against the CPU reference.
 *
 *   test_device cpu   (suite unit, runs everywhere): the CPU backend with
 *                     OFFLOADED tables (a row cache of a few tokens, so chunks
 *                     evict) against the plain CPU model: logits and loss must
 *                     be BIT-EQUAL (the same ops on the same rows), edits must
 *                     be visible through the cache, and offloaded training
 *                     must follow lazy AdamW.
 *   test_device cuda  (suite cuda): the CUDA backend, tables on the device and
 *                     offloaded, against the CPU: logits, loss and gradients
 *                     within fp32 tolerance (1e-4 relative to the largest
 *                     magnitude), offloaded == on-device on the same GPU up to
 *                     the same tolerance, edits visible through the cache.
 *                     Exits 77 (skipped) when no CUDA device can be opened.
 *
 * Models are tiny (vocab 300, dim 32, 2 layers, seq 16). */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/device.h"
#include "engine/model.h"
#include "engine/offload.h"
#include "engine/tables.h"
#include "engine/train.h"
#include "kernels/cpu/pool.h"
#include "model-test-util.h"

static const StemKernels *K;     /* backend under test */
static gboolean exact;           /* CPU backend: bit-equality expected */
static const double TOL = 1e-4;  /* fp32 device vs CPU, relative to max |ref| */

static StemConfig tiny_config(void)
{
    StemConfig c;
    stem_config_defaults(&c);
    c.vocab = 300;
    c.dim = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;   /* grouped-query attention on the way */
    c.ffn_dim = 64;
    c.seq_len = 16;
    GError *e = NULL;
    g_assert_true(stem_config_parse_layers("all-but-first", c.n_layers, &c.stem_mask, &e));
    return c;
}

static StemModel *tiny_model(guint64 seed)
{
    StemConfig c = tiny_config();
    GError *e = NULL;
    StemModel *m = stem_model_new(&c, &e);
    g_assert_no_error(e);
    stem_model_init_weights(m, seed);
    return m;
}

/* A model on the backend under test with the given cache capacity (0 = tables
 * with the weights). */
static StemModel *model_on(guint64 seed, int capacity)
{
    StemModel *m = tiny_model(seed);
    GError *e = NULL;
    g_assert_true(stem_model_set_device(m, K, capacity, &e));
    g_assert_no_error(e);
    return m;
}

static void expect_close(const char *what, const float *got, const float *ref, size_t n)
{
    double r = rel_err(got, ref, n);
    g_test_message("%s: max relative error %.3g", what, r);
    if (exact) g_assert_cmpint(memcmp(got, ref, n * sizeof(float)), ==, 0);
    else g_assert_cmpfloat(r, <=, TOL);
}

/* Vocabulary rows of every STEM table a capacity of 7 tokens holds: chunks of
 * 2 x 16 positions have ~30 unique ids, so the store must raise its device
 * buffer to the chunk and still evict between chunks. */
#define SMALL_CACHE 7

static void test_forward_parity(void)
{
    StemModel *ref = tiny_model(11);
    int caps[] = { exact ? -1 : 0, SMALL_CACHE, 300 };
    for (guint c = 0; c < G_N_ELEMENTS(caps); c++) {
        if (caps[c] < 0) continue;   /* the CPU with capacity 0 IS the reference */
        StemModel *m = model_on(11, caps[c]);
        for (int round = 0; round < 4; round++) {
            const int B = 2, T = 16, N = B * T, V = ref->cfg.vocab;
            int32_t *ids = random_ids(N, V, 100 + round), *tg = random_ids(N, V, 200 + round);
            float *a = logits_copy(ref, ids, B, T), *b = logits_copy(m, ids, B, T);
            char *what = g_strdup_printf("logits, capacity %d, round %d", caps[c], round);
            expect_close(what, b, a, (size_t)N * V);
            g_free(what);
            /* last-position forward (inference path) */
            stem_model_forward(ref, ids, NULL, B, T, TRUE);
            stem_model_forward(m, ids, NULL, B, T, TRUE);
            for (int bb = 0; bb < B; bb++)
                expect_close("last-position logits", stem_model_logits(m, bb, T - 1), stem_model_logits(ref, bb, T - 1), V);
            float la = stem_model_forward(ref, ids, tg, B, T, FALSE), lb = stem_model_forward(m, ids, tg, B, T, FALSE);
            g_test_message("loss %.7f vs %.7f", lb, la);
            if (exact) g_assert_true(la == lb);
            else g_assert_cmpfloat(fabs(la - lb), <=, TOL * fabs(la));
            g_free(a); g_free(b); g_free(ids); g_free(tg);
        }
        if (caps[c] > 0) {
            StemOffloadStats st;
            g_assert_nonnull(m->offload);
            stem_offload_stats(m->offload, &st);
            g_test_message("capacity %d: %" G_GUINT64_FORMAT " hits, %" G_GUINT64_FORMAT " misses, %d slots",
                           caps[c], st.cache.hits, st.cache.misses, st.slots);
            g_assert_cmpuint(st.cache.misses, >, 0);
            if (caps[c] == SMALL_CACHE) g_assert_cmpuint(st.cache.evictions, >, 0);
        }
        stem_model_free(m);
    }
    stem_model_free(ref);
}

/* Give token `src` the rows of token `dst` in every STEM layer (an edit). */
static void swap_rows(StemModel *m, int src, int dst)
{
    float row[64];
    for (int j = 0; j < stem_tables_n(m->tables); j++) {
        stem_tables_row(m->tables, j, dst, row);
        stem_tables_set_override(m->tables, j, src, row);
    }
}

static void test_edits_through_cache(void)
{
    const int B = 1, T = 16, V = 300;
    int32_t *ids = random_ids(T, V, 7);
    StemModel *ref = tiny_model(5);
    StemModel *m = model_on(5, SMALL_CACHE);
    /* warm the cache with the prompt, so the edited token is resident */
    float *before = logits_copy(m, ids, B, T);
    float *ref_before = logits_copy(ref, ids, B, T);
    expect_close("before the edit", before, ref_before, (size_t)T * V);

    swap_rows(ref, ids[3], 42);
    swap_rows(m, ids[3], 42);
    float *after = logits_copy(m, ids, B, T), *ref_after = logits_copy(ref, ids, B, T);
    expect_close("after the edit", after, ref_after, (size_t)T * V);
    /* and the edit changed something from position 3 on */
    g_assert_cmpfloat(rel_err(after, before, (size_t)T * V), >, 1e-3);

    stem_tables_clear_all_overrides(ref->tables);
    stem_tables_clear_all_overrides(m->tables);
    float *reverted = logits_copy(m, ids, B, T);
    expect_close("after the revert", reverted, ref_before, (size_t)T * V);
    if (exact) g_assert_cmpint(memcmp(reverted, before, sizeof(float) * T * V), ==, 0);
    g_free(before); g_free(ref_before); g_free(after); g_free(ref_after); g_free(reverted); g_free(ids);
    stem_model_free(m);
    stem_model_free(ref);
}

static void grads_of(StemModel *m, float *out, size_t n)
{
    if (m->k->is_host) memcpy(out, m->dev_grads, n * sizeof(float));
    else m->k->download(out, m->dev_grads, n * sizeof(float));
}

/* One training step. Backbone gradients agree (bit-equal on the CPU); the
 * tables' gradient norm agrees; and for ONE step from zero moments with table
 * weight decay 0, lazy AdamW equals dense AdamW, so the parameters agree. */
static void test_train_step(void)
{
    const int B = 2, T = 16, N = B * T, V = 300;
    int caps[] = { exact ? -1 : 0, SMALL_CACHE };
    for (guint c = 0; c < G_N_ELEMENTS(caps); c++) {
        if (caps[c] < 0) continue;
        StemModel *ref = tiny_model(3), *m = model_on(3, caps[c]);
        GError *e = NULL;
        g_assert_true(stem_model_alloc_training(ref, &e));
        g_assert_true(stem_model_alloc_training(m, &e));
        int32_t *ids = random_ids(N, V, 31), *tg = random_ids(N, V, 32);
        stem_model_zero_grad(ref);
        stem_model_zero_grad(m);
        float la = stem_model_forward(ref, ids, tg, B, T, FALSE), lb = stem_model_forward(m, ids, tg, B, T, FALSE);
        stem_model_backward(ref);
        stem_model_backward(m);
        if (exact) g_assert_true(la == lb);
        else g_assert_cmpfloat(fabs(la - lb), <=, TOL * fabs(la));

        const size_t nb = ref->n_backbone;
        float *gb = g_new(float, nb);
        grads_of(m, gb, nb);
        expect_close("backbone gradients", gb, ref->grads, nb);
        g_free(gb);

        StemOptim o;
        stem_optim_defaults(&o);
        o.table_wd = 0.0f;
        float nb_ref, nt_ref, nb_m, nt_m;
        stem_model_step(ref, &o, 1.0f, &nb_ref, &nt_ref);
        stem_model_step(m, &o, 1.0f, &nb_m, &nt_m);
        g_test_message("capacity %d: table grad norm %.7g vs %.7g", caps[c], nt_m, nt_ref);
        g_assert_cmpfloat(fabs(nt_m - nt_ref), <=, (exact ? 1e-6 : TOL) * nt_ref);
        g_assert_cmpfloat(fabs(nb_m - nb_ref), <=, (exact ? 0 : TOL) * nb_ref);
        stem_model_sync_to_host(m);
        if (exact) {
            /* the same AdamW formula on the same numbers, row by row instead of
             * over the whole table: equal to rounding of the clip scale */
            double r = rel_err(m->params, ref->params, ref->n_params);
            g_test_message("parameters after one step: max relative error %.3g", r);
            g_assert_cmpfloat(r, <=, 1e-6);
        }
        g_free(ids); g_free(tg);
        stem_model_free(m);
        stem_model_free(ref);
    }
}

/* Offloaded training is lazy AdamW: rows of tokens absent from every chunk
 * never move, rows that appear do, and training still lowers the loss. */
static void test_offloaded_training(void)
{
    StemModel *m = model_on(9, SMALL_CACHE);
    const int V = 300, T = 16, B = 2;
    /* a stream that never uses tokens >= 150 */
    const size_t n = 4000;
    int32_t *stream = random_ids(n, 150, 77);
    for (size_t i = 0; i < n; i++) stream[i] = (stream[i] % 15) * 10 % 150;   /* few tokens: learnable */
    float *before = g_new(float, (size_t)V * m->cfg.ffn_dim);
    memcpy(before, m->w.stem[0], sizeof(float) * V * m->cfg.ffn_dim);

    StemTrainOptions o;
    stem_train_options_defaults(&o);
    o.steps = 30;
    o.batch = B;
    o.seq = T;
    o.threads = 2;
    o.eval_batches = 2;
    o.optim.table_wd = 0.0f;
    StemTrainResult res;
    GError *e = NULL;
    float l0 = stem_eval_loss(m, stream, n, B, T, 2);
    g_assert_true(stem_train(m, stream, n, stream, n, &o, NULL, NULL, &res, &e));
    g_assert_no_error(e);
    g_test_message("offloaded training: loss %.3f -> %.3f", l0, res.val_loss);
    g_assert_cmpfloat(res.val_loss, <, l0 - 0.5);
    const int F = m->cfg.ffn_dim;
    int moved = 0;
    for (int t = 0; t < V; t++) {
        gboolean same = !memcmp(before + (size_t)t * F, m->w.stem[0] + (size_t)t * F, sizeof(float) * F);
        if (t >= 150) g_assert_true(same);   /* never in a chunk: untouched */
        else moved += !same;
    }
    g_assert_cmpint(moved, ==, 15);          /* exactly the 15 tokens of the stream */
    /* accumulation is refused with offloaded tables */
    o.accum = 2;
    g_assert_false(stem_train(m, stream, n, NULL, 0, &o, NULL, NULL, &res, &e));
    g_assert_nonnull(e);
    g_clear_error(&e);
    g_free(before);
    g_free(stream);
    stem_model_free(m);
}

/* The training loop stages the next batch's rows during the current step
 * (prefetch) unless an evaluation follows. Evaluating after every step turns
 * prefetch off: the parameters must come out bit-identical either way. */
static void test_training_prefetch(void)
{
    const size_t n = 3000;
    int32_t *stream = random_ids(n, 300, 5);
    StemTrainOptions o;
    stem_train_options_defaults(&o);
    o.steps = 12;
    o.batch = 2;
    o.seq = 16;
    o.threads = 2;
    o.eval_batches = 1;
    float *params[2];
    size_t bytes = 0;
    for (int run = 0; run < 2; run++) {
        StemModel *m = model_on(21, SMALL_CACHE);
        o.eval_every = run == 0 ? 0 : 1;
        StemTrainResult res;
        GError *e = NULL;
        g_assert_true(stem_train(m, stream, n, stream, n, &o, NULL, NULL, &res, &e));
        g_assert_no_error(e);
        StemOffloadStats st;
        stem_offload_stats(m->offload, &st);
        g_test_message("%s: %" G_GUINT64_FORMAT " misses, overlap %.2f", run ? "no prefetch" : "prefetch",
                       st.cache.misses, st.overlap);
        bytes = m->n_params * sizeof(float);
        params[run] = g_memdup2(m->params, bytes);
        stem_model_free(m);
        if (run == 1) g_assert_cmpint(memcmp(params[0], params[1], bytes), ==, 0);
    }
    g_free(params[0]);
    g_free(params[1]);
    g_free(stream);
}

static void test_device_open(void)
{
    GError *e = NULL;
    g_assert_true(stem_device_open("cpu", &e) == stem_kernels_cpu());
    g_assert_null(stem_device_open("tpu", &e));
    g_assert_nonnull(e);
    g_assert_null(strchr(e->message, '\n'));
    g_clear_error(&e);
    const StemKernels *a = stem_device_open("auto", &e);
    g_assert_nonnull(a);
    g_assert_no_error(e);
    const StemKernels *c = stem_device_open("cuda", &e);
    if (!c) {
        /* no GPU here: auto fell back to the CPU, and cuda says why in one line */
        g_assert_true(a == stem_kernels_cpu());
        g_assert_nonnull(e);
        g_assert_true(g_str_has_prefix(e->message, "CUDA is not available: "));
        g_assert_null(strchr(e->message, '\n'));
        g_test_message("%s", e->message);
        g_clear_error(&e);
    } else {
        g_assert_true(a == c);
    }
}

int main(int argc, char **argv)
{
    const char *backend = "cpu";
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "cuda") || !strcmp(argv[i], "cpu")) backend = argv[i];
    g_test_init(&argc, &argv, NULL);
    pool_init(2);
    GError *e = NULL;
    K = stem_device_open(backend, &e);
    if (!K) {
        fprintf(stderr, "skipped: %s\n", e->message);
        return 77;
    }
    exact = K->is_host;
    g_test_add_func("/device/open", test_device_open);
    g_test_add_func("/device/forward-parity", test_forward_parity);
    g_test_add_func("/device/edits-through-cache", test_edits_through_cache);
    g_test_add_func("/device/train-step", test_train_step);
    if (exact) g_test_add_func("/device/offloaded-training", test_offloaded_training);
    if (exact) g_test_add_func("/device/training-prefetch", test_training_prefetch);
    int rc = g_test_run();
    pool_shutdown();
    return rc;
}
