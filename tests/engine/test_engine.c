/* Engine unit tests: config, training determinism and progress, gradient
 * accumulation semantics, checkpoints (round trip, bf16 tables, hostile files),
 * the table store and the sampler.
 *
 * Every model here is tiny (vocab 300, dim 32, 2 layers, seq 16) so the whole
 * program runs in a few seconds on 2 cores. Exact comparisons (memcmp) are used
 * wherever the engine promises bit-reproducibility (same inputs, same thread
 * count); tolerances are stated next to every approximate check. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "engine/sampler.h"
#include "engine/tables.h"
#include "engine/tokenizer.h"
#include "engine/train.h"
#include "kernels/cpu/pool.h"
#include "model-test-util.h"

static char *tmp_dir;

static char *tmp_path(const char *name) { return g_build_filename(tmp_dir, name, NULL); }

/* vocab 300, dim 32, 2 layers, 4 heads, ffn 64, seq 16; STEM on all but layer 0 */
static StemConfig tiny_config(void)
{
    StemConfig c;
    stem_config_defaults(&c);
    c.vocab = 300;
    c.dim = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 4;
    c.ffn_dim = 64;
    c.seq_len = 16;
    GError *e = NULL;
    g_assert_true(stem_config_parse_layers("all-but-first", c.n_layers, &c.stem_mask, &e));
    g_assert_no_error(e);
    return c;
}

static StemModel *tiny_model(const StemConfig *c, guint64 seed)
{
    GError *e = NULL;
    StemModel *m = stem_model_new(c, &e);
    g_assert_no_error(e);
    g_assert_nonnull(m);
    stem_model_init_weights(m, seed);
    return m;
}

/* A small byte-level tokenizer with a few merges (vocab < 300). */
static StemTokenizer *small_tokenizer(void)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < 40; i++) g_string_append(s, "the cat sat on the mat. the dog ate the hat. ");
    StemTokenizer *t = stem_tokenizer_train(s->str, s->len, 280, NULL, NULL);
    g_string_free(s, TRUE);
    g_assert_nonnull(t);
    g_assert_cmpint(stem_tokenizer_vocab_size(t), <=, 280);
    g_assert_cmpint(stem_tokenizer_vocab_size(t), >, STEM_TOK_N_BASE);
    return t;
}

/* ================================================================== config */

static void test_config_parse_layers(void)
{
    struct { const char *spec; int L; uint64_t mask; } good[] = {
        { "none", 4, 0x0 },          { "all", 4, 0xF },        { "all-but-first", 4, 0xE },
        { "every-2", 4, 0xA },       { "every-1", 4, 0xF },    { "every-3", 6, 0x24 },
        { "every-4", 4, 0x8 },       { "1,3", 4, 0xA },        { "0", 4, 0x1 },
        { "3,1", 4, 0xA },           { "1, 3", 4, 0xA },       { "all", 1, 0x1 },
        { "all-but-first", 1, 0x0 }, { "all", 64, ~0ull },     { "63", 64, 1ull << 63 },
    };
    for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
        uint64_t m = 0xdeadbeef;
        GError *e = NULL;
        gboolean ok = stem_config_parse_layers(good[i].spec, good[i].L, &m, &e);
        if (!ok || m != good[i].mask)
            g_test_fail_printf("parse_layers('%s', %d): ok=%d mask=0x%" G_GINT64_MODIFIER "x, expected 0x%"
                               G_GINT64_MODIFIER "x (%s)", good[i].spec, good[i].L, ok, (guint64)m,
                               (guint64)good[i].mask, e ? e->message : "");
        g_clear_error(&e);
    }
    struct { const char *spec; int L; } bad[] = {
        { "4", 4 },      { "-1", 4 },       { "1,,3", 4 },     { "1,a", 4 },    { "foo", 4 },
        { "1;3", 4 },    { "every-0", 4 },  { "every-5", 4 },  { "every-x", 4 }, { "every-", 4 },
        { "every-2x", 4 }, { "ALL", 4 },    { "1,3,", 4 },     { "99", 2 },     { "0x1", 4 },
        { "all", 0 },    { "all", 65 },
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        uint64_t m = 0;
        GError *e = NULL;
        gboolean ok = stem_config_parse_layers(bad[i].spec, bad[i].L, &m, &e);
        if (ok) g_test_fail_printf("parse_layers('%s', %d) accepted (mask 0x%" G_GINT64_MODIFIER "x)",
                                   bad[i].spec, bad[i].L, (guint64)m);
        else if (!e || !e->message || !*e->message)
            g_test_fail_printf("parse_layers('%s', %d) refused without a message", bad[i].spec, bad[i].L);
        g_clear_error(&e);
    }
    /* the string form lists the layers */
    StemConfig c = tiny_config();
    c.n_layers = 4;
    c.stem_mask = 0xA;
    char *s = stem_config_layers_string(&c);
    g_assert_cmpstr(s, ==, "1,3");
    g_free(s);
    c.stem_mask = 0;
    s = stem_config_layers_string(&c);
    g_assert_cmpstr(s, ==, "");
    g_free(s);
}

static void test_config_validate(void)
{
    StemConfig c = tiny_config();
    GError *e = NULL;
    g_assert_true(stem_config_validate(&c, &e));
    g_assert_no_error(e);
    StemConfig d;
    stem_config_defaults(&d);
    g_assert_true(stem_config_validate(&d, NULL));

    typedef struct { const char *what; StemConfig c; } Case;
    GArray *cases = g_array_new(FALSE, FALSE, sizeof(Case));
#define ADD(desc, stmt) do { Case k = { desc, tiny_config() }; StemConfig *x = &k.c; stmt; g_array_append_val(cases, k); } while (0)
    ADD("dim 30 % heads 4", x->dim = 30);
    ADD("dim 36 / heads 4 = odd head dim 9", x->dim = 36);
    ADD("dim 12 / heads 4 = odd head dim 3", x->dim = 12);
    ADD("heads 4 % kv 3", x->n_kv_heads = 3);
    ADD("kv heads 8 > heads 4", x->n_kv_heads = 8);
    ADD("kv heads 0", x->n_kv_heads = 0);
    ADD("heads 0", x->n_heads = 0);
    ADD("heads -4", x->n_heads = -4);
    ADD("vocab below 260", x->vocab = 100);
    ADD("vocab 0", x->vocab = 0);
    ADD("dim 0", x->dim = 0);
    ADD("layers 0", (x->n_layers = 0, x->stem_mask = 0));
    ADD("layers 65", x->n_layers = 65);
    ADD("ffn 0", x->ffn_dim = 0);
    ADD("seq 1", x->seq_len = 1);
    ADD("rope theta 0", x->rope_theta = 0);
    ADD("rope theta NaN", x->rope_theta = NAN);
    ADD("norm eps 0", x->norm_eps = 0);
    ADD("STEM mask names layer 2 of 2", x->stem_mask = 0x4);
    ADD("STEM mask names layer 63 of 2", x->stem_mask = 1ull << 63);
#undef ADD
    for (guint i = 0; i < cases->len; i++) {
        Case *k = &g_array_index(cases, Case, i);
        GError *err = NULL;
        if (stem_config_validate(&k->c, &err)) g_test_fail_printf("validate accepted: %s", k->what);
        else if (!err || !*err->message) g_test_fail_printf("validate refused without a message: %s", k->what);
        g_clear_error(&err);
        /* a model is never built from a bad config */
        StemModel *m = stem_model_new(&k->c, &err);
        if (m) {
            g_test_fail_printf("stem_model_new accepted: %s", k->what);
            stem_model_free(m);
        }
        g_clear_error(&err);
    }
    g_array_unref(cases);

    /* good grouped-query config */
    c = tiny_config();
    c.n_kv_heads = 2;
    g_assert_true(stem_config_validate(&c, NULL));
    c.n_kv_heads = 1;
    g_assert_true(stem_config_validate(&c, NULL));
}

static void check_counts(const char *what, StemConfig c)
{
    GError *e = NULL;
    StemModel *m = stem_model_new(&c, &e);
    g_assert_no_error(e);
    StemCounts k;
    stem_config_counts(&c, &k);
    GArray *ts = stem_model_tensors(m);
    int64_t sum = 0, tables = 0, n_tables = 0;
    for (guint i = 0; i < ts->len; i++) {
        StemTensorRef *r = &g_array_index(ts, StemTensorRef, i);
        int64_t n = r->shape[0] * (r->ndim == 2 ? r->shape[1] : 1);
        sum += n;
        if (r->is_table) {
            tables += n;
            n_tables++;
            g_assert_cmpint(r->shape[0], ==, c.vocab);
            g_assert_cmpint(r->shape[1], ==, c.ffn_dim);
        }
    }
    g_test_message("counts %s: total %" G_GINT64_FORMAT " tensors %" G_GINT64_FORMAT, what, k.total, sum);
    g_assert_cmpint(k.total, ==, sum);
    g_assert_cmpint((int64_t)m->n_params, ==, sum);
    g_assert_cmpint(k.tables, ==, tables);
    g_assert_cmpint(n_tables, ==, stem_config_n_stem(&c));
    g_assert_cmpint((int64_t)(m->n_params - m->n_backbone), ==, tables);
    g_assert_cmpint(k.embedding + k.backbone + k.head, ==, (int64_t)m->n_backbone);
    g_assert_cmpint(k.embedding, ==, (int64_t)c.vocab * c.dim);
    /* active per token: everything but the tables and the embedding, plus one row of each */
    g_assert_cmpint(k.active_per_token, ==,
                    k.total - k.tables - k.embedding + c.dim + (int64_t)stem_config_n_stem(&c) * c.ffn_dim);
    /* FLOPs: a STEM FFN saves exactly one D x F multiply-add (2 FLOPs) per token */
    double saved = (double)stem_config_n_stem(&c) * 2.0 * c.dim * c.ffn_dim;
    g_assert_cmpfloat(k.dense_flops_per_token - k.flops_per_token, ==, saved);
    if (stem_config_n_stem(&c) > 0) g_assert_cmpfloat(k.flops_per_token, <, k.dense_flops_per_token);
    else g_assert_cmpfloat(k.flops_per_token, ==, k.dense_flops_per_token);
    g_assert_cmpfloat(k.flops_per_token, >, 0);
    g_array_unref(ts);
    stem_model_free(m);
}

static void test_config_counts(void)
{
    StemConfig c = tiny_config();
    check_counts("tiny all-but-first", c);
    c.stem_mask = 0;
    check_counts("tiny dense", c);
    c.stem_mask = 0x3;
    check_counts("tiny all", c);
    c = tiny_config();
    c.n_kv_heads = 2;
    c.n_layers = 4;
    c.stem_mask = 0xA;
    check_counts("gqa every-2", c);
    c = tiny_config();
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.ffn_dim = 48;
    c.vocab = 1000;
    c.n_layers = 3;
    c.stem_mask = 0x5;
    check_counts("mqa 0,2", c);
    stem_config_defaults(&c);
    check_counts("defaults", c);
}

static void test_config_json(void)
{
    StemConfig c = tiny_config();
    c.n_kv_heads = 2;
    c.stem_mask = 0x2;
    char *j = stem_config_to_json(&c);
    StemConfig d;
    GError *e = NULL;
    g_assert_true(stem_config_from_json(j, &d, &e));
    g_assert_no_error(e);
    g_assert_cmpint(d.vocab, ==, c.vocab);
    g_assert_cmpint(d.dim, ==, c.dim);
    g_assert_cmpint(d.n_layers, ==, c.n_layers);
    g_assert_cmpint(d.n_heads, ==, c.n_heads);
    g_assert_cmpint(d.n_kv_heads, ==, c.n_kv_heads);
    g_assert_cmpint(d.ffn_dim, ==, c.ffn_dim);
    g_assert_cmpint(d.seq_len, ==, c.seq_len);
    g_assert_cmpfloat(d.rope_theta, ==, c.rope_theta);
    g_assert_cmpfloat(d.norm_eps, ==, c.norm_eps);
    g_assert_cmpuint(d.stem_mask, ==, c.stem_mask);
    g_free(j);
    const char *bad[] = {
        "", "garbage", "[]", "{}", "null",
        "{\"vocab\":300,\"dim\":32,\"n_layers\":2,\"n_heads\":5,\"n_kv_heads\":5,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[1]}",
        "{\"vocab\":300,\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[99]}",
        "{\"vocab\":300,\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[-1]}",
        "{\"vocab\":300,\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[\"1\"]}",
        "{\"vocab\":300,\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5}",
        "{\"vocab\":\"300\",\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[1]}",
        "{\"vocab\":300.5,\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[1]}",
        "{\"vocab\":4294967596,\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,"
        "\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[1]}",
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;
        if (stem_config_from_json(bad[i], &d, &err)) g_test_fail_printf("config JSON accepted: %s", bad[i]);
        else if (!err) g_test_fail_printf("config JSON refused without an error: %s", bad[i]);
        g_clear_error(&err);
    }
}

/* ================================================================== training */

typedef struct {
    GArray *losses;   /* float per step */
    int n_calls;
} Recorder;

static gboolean record_loss(const StemTrainProgress *p, void *user)
{
    Recorder *r = user;
    r->n_calls++;
    /* the final call after evaluation repeats the last step: record steps once */
    if ((guint)p->step == r->losses->len + 1) g_array_append_val(r->losses, p->loss);
    return TRUE;
}

static void train_opts(StemTrainOptions *o, int steps, guint64 seed)
{
    stem_train_options_defaults(o);
    o->steps = steps;
    o->batch = 4;
    o->seq = 16;
    o->accum = 1;
    o->threads = 2;
    o->seed = seed;
    o->eval_batches = 2;
}

/* Trains a fresh tiny model (init seed 3); returns the model, fills the losses. */
static StemModel *train_once(const int32_t *ids, size_t n, const StemTrainOptions *o, GArray *losses,
                             StemTrainResult *res)
{
    StemConfig c = tiny_config();
    StemModel *m = tiny_model(&c, 3);
    GError *e = NULL;
    g_assert_true(stem_model_alloc_training(m, &e));
    g_assert_no_error(e);
    Recorder r = { losses, 0 };
    gboolean ok = stem_train(m, ids, n, ids, n, o, record_loss, &r, res, &e);
    g_assert_no_error(e);
    g_assert_true(ok);
    g_assert_cmpint(res->steps_done, ==, o->steps);
    g_assert_false(res->cancelled);
    g_assert_cmpuint(losses->len, ==, (guint)o->steps);
    return m;
}

static void test_train_determinism(void)
{
    const size_t n = 4000;
    int32_t *ids = random_ids(n, 300, 1234);
    StemTrainOptions o;
    train_opts(&o, 15, 42);
    GArray *l1 = g_array_new(FALSE, FALSE, sizeof(float));
    GArray *l2 = g_array_new(FALSE, FALSE, sizeof(float));
    GArray *l3 = g_array_new(FALSE, FALSE, sizeof(float));
    StemTrainResult r1, r2, r3;
    StemModel *a = train_once(ids, n, &o, l1, &r1);
    StemModel *b = train_once(ids, n, &o, l2, &r2);
    for (guint i = 0; i < l1->len; i++) {
        float x = g_array_index(l1, float, i), y = g_array_index(l2, float, i);
        g_test_message("step %u loss %.9g %.9g", i + 1, x, y);
        g_assert_true(isfinite(x));
        if (memcmp(&x, &y, sizeof x)) g_test_fail_printf("step %u: losses differ %.9g vs %.9g", i + 1, x, y);
    }
    g_assert_cmpuint(a->n_params, ==, b->n_params);
    g_assert_true(memcmp(a->params, b->params, a->n_params * sizeof(float)) == 0);
    g_assert_true(memcmp(&r1.final_loss, &r2.final_loss, sizeof(float)) == 0);
    g_assert_true(memcmp(&r1.val_loss, &r2.val_loss, sizeof(float)) == 0);
    g_assert_true(isfinite(r1.val_loss));
    g_assert_true(memcmp(&r1.final_loss, &g_array_index(l1, float, l1->len - 1), sizeof(float)) == 0);
    g_assert_cmpfloat(r1.tokens_per_s, >, 0);

    /* another seed draws other windows: other losses, other weights */
    train_opts(&o, 15, 43);
    StemModel *c = train_once(ids, n, &o, l3, &r3);
    int same = 0;
    for (guint i = 0; i < l1->len; i++)
        same += !memcmp(&g_array_index(l1, float, i), &g_array_index(l3, float, i), sizeof(float));
    g_assert_cmpint(same, <, (int)l1->len);
    g_assert_false(memcmp(a->params, c->params, a->n_params * sizeof(float)) == 0);

    /* the same seed with one thread gives the same bits (sums never depend on the split) */
    GArray *l4 = g_array_new(FALSE, FALSE, sizeof(float));
    StemTrainResult r4;
    train_opts(&o, 15, 42);
    o.threads = 1;
    StemModel *d = train_once(ids, n, &o, l4, &r4);
    g_assert_true(memcmp(l1->data, l4->data, sizeof(float) * l1->len) == 0);
    g_assert_true(memcmp(a->params, d->params, a->n_params * sizeof(float)) == 0);

    stem_model_free(a);
    stem_model_free(b);
    stem_model_free(c);
    stem_model_free(d);
    g_array_unref(l1);
    g_array_unref(l2);
    g_array_unref(l3);
    g_array_unref(l4);
    g_free(ids);
    pool_init(2);
}

static void test_train_loss_falls(void)
{
    /* a repeating pattern of 20 distinct tokens: perfectly predictable after one period */
    const size_t n = 3000;
    int32_t pattern[20];
    GRand *rg = g_rand_new_with_seed(99);
    for (int i = 0; i < 20; i++) {
        gboolean dup;
        do {
            pattern[i] = g_rand_int_range(rg, 0, 300);
            dup = FALSE;
            for (int k = 0; k < i; k++) dup |= pattern[k] == pattern[i];
        } while (dup);
    }
    g_rand_free(rg);
    int32_t *ids = g_new(int32_t, n);
    for (size_t i = 0; i < n; i++) ids[i] = pattern[i % 20];
    StemTrainOptions o;
    train_opts(&o, 60, 5);
    GArray *l = g_array_new(FALSE, FALSE, sizeof(float));
    StemTrainResult r;
    StemModel *m = train_once(ids, n, &o, l, &r);
    float first = g_array_index(l, float, 0), last = g_array_index(l, float, l->len - 1);
    g_test_message("loss %.4f -> %.4f (val %.4f)", first, last, r.val_loss);
    /* the first loss is that of an untrained model: about ln(300) = 5.70 */
    g_assert_cmpfloat(fabsf(first - logf(300.0f)), <, 0.5f);
    g_assert_cmpfloat(last, <, 0.5f * first);
    g_assert_cmpfloat(r.final_loss, <, 0.5f * first);
    g_assert_cmpfloat(r.val_loss, <, 0.5f * first);
    stem_model_free(m);
    g_array_unref(l);
    g_free(ids);
}

/* Cancelling from the callback stops after that step. */
static gboolean cancel_at_3(const StemTrainProgress *p, void *user)
{
    (void)user;
    return p->step < 3;
}

static void test_train_cancel_and_errors(void)
{
    const size_t n = 500;
    int32_t *ids = random_ids(n, 300, 7);
    StemConfig c = tiny_config();
    StemModel *m = tiny_model(&c, 1);
    GError *e = NULL;
    g_assert_true(stem_model_alloc_training(m, &e));
    StemTrainOptions o;
    train_opts(&o, 10, 1);
    StemTrainResult r;
    g_assert_true(stem_train(m, ids, n, NULL, 0, &o, cancel_at_3, NULL, &r, &e));
    g_assert_no_error(e);
    g_assert_true(r.cancelled);
    g_assert_cmpint(r.steps_done, ==, 3);

    /* a window longer than the model's context is refused */
    o.seq = 32;
    g_assert_false(stem_train(m, ids, n, NULL, 0, &o, NULL, NULL, &r, &e));
    g_assert_nonnull(e);
    g_clear_error(&e);
    /* a stream shorter than one window is refused */
    o.seq = 16;
    g_assert_false(stem_train(m, ids, 10, NULL, 0, &o, NULL, NULL, &r, &e));
    g_assert_nonnull(e);
    g_clear_error(&e);
    /* a diverging run (absurd lr) ends with an error, not NaN weights reported as success */
    o.optim.lr = o.optim.table_lr = 1e9f;
    o.optim.clip = o.optim.table_clip = 0;
    o.steps = 30;
    gboolean ok = stem_train(m, ids, n, NULL, 0, &o, NULL, NULL, &r, &e);
    if (ok) {
        g_assert_no_error(e);
        g_assert_true(isfinite(r.final_loss));
        g_test_message("lr 1e9 did not diverge in 30 steps (final loss %g)", r.final_loss);
    } else {
        g_assert_nonnull(e);
        g_test_message("lr 1e9: %s", e->message);
        g_clear_error(&e);
    }
    stem_model_free(m);
    g_free(ids);
    pool_init(2);
}

/* ================================================================== gradients */

static void test_grad_accumulation(void)
{
    StemConfig c = tiny_config();
    c.n_kv_heads = 2;
    StemModel *m = tiny_model(&c, 11);
    GError *e = NULL;
    g_assert_true(stem_model_alloc_training(m, &e));
    const int T = 16;
    int32_t *xy = random_ids(2 * (T + 1), 300, 21);
    int32_t x[2 * 16], y[2 * 16];
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < T; t++) {
            x[b * T + t] = xy[b * (T + 1) + t];
            y[b * T + t] = xy[b * (T + 1) + t + 1];
        }
    /* one batch of two sequences */
    stem_model_zero_grad(m);
    float l2 = stem_model_forward(m, x, y, 2, T, FALSE);
    stem_model_backward(m);
    float *g2 = g_memdup2(m->grads, m->n_params * sizeof(float));
    /* two batches of one, accumulated, then halved */
    stem_model_zero_grad(m);
    float la = stem_model_forward(m, x, y, 1, T, FALSE);
    stem_model_backward(m);
    float lb = stem_model_forward(m, x + T, y + T, 1, T, FALSE);
    stem_model_backward(m);
    for (size_t i = 0; i < m->n_params; i++) m->grads[i] *= 0.5f;
    g_test_message("loss B=2 %.7f, mean of B=1 %.7f", l2, 0.5f * (la + lb));
    g_assert_cmpfloat(fabsf(l2 - 0.5f * (la + lb)), <=, 1e-5f * fabsf(l2));

    /* per tensor: max |diff| / max |g| (scale-relative, so near-zero entries cannot blow it up) */
    GArray *ts = stem_model_tensors(m);
    double worst = 0;
    for (guint i = 0; i < ts->len; i++) {
        StemTensorRef *r = &g_array_index(ts, StemTensorRef, i);
        size_t off = (size_t)(r->grad - m->grads);
        size_t numel = (size_t)r->shape[0] * (r->ndim == 2 ? (size_t)r->shape[1] : 1);
        double err = rel_err(m->grads + off, g2 + off, numel);
        if (err > worst) worst = err;
        if (!(err <= 1e-5)) g_test_fail_printf("grad %s: rel err %.3e > 1e-5", r->name, err);
    }
    g_test_message("worst rel grad err %.3e", worst);
    /* the gradient is not trivially zero */
    double ss = 0;
    for (size_t i = 0; i < m->n_params; i++) ss += (double)g2[i] * g2[i];
    g_assert_cmpfloat(ss, >, 0);
    g_array_unref(ts);
    g_free(g2);
    g_free(xy);
    stem_model_free(m);
}

/* ================================================================== checkpoints */

static void test_checkpoint_roundtrip(void)
{
    StemConfig c = tiny_config();
    c.n_kv_heads = 2;
    StemModel *m = tiny_model(&c, 5);
    m->tok = small_tokenizer();
    const int B = 2, T = 16;
    int32_t *ids = random_ids((size_t)B * T, 300, 77);
    float *ref = logits_copy(m, ids, B, T);
    const size_t nl = (size_t)B * T * c.vocab;

    char *path = tmp_path("rt.safetensors");
    GHashTable *meta = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(meta, "provenance", "test");
    GError *e = NULL;
    g_assert_true(stem_model_save(m, path, FALSE, meta, &e));
    g_assert_no_error(e);
    g_hash_table_unref(meta);

    /* mapped */
    StemModel *a = stem_model_load(path, &e);
    g_assert_no_error(e);
    g_assert_nonnull(a);
    g_assert_true(memcmp(&a->cfg, &m->cfg, sizeof c) == 0);
    g_assert_cmpint(stem_tables_dtype(a->tables), ==, STEM_TABLE_F32);
    float *la = logits_copy(a, ids, B, T);
    g_assert_true(memcmp(la, ref, nl * sizeof(float)) == 0);
    g_assert_cmpstr(stem_model_metadata(a, "format"), ==, "stem-workbench/1");
    g_assert_cmpstr(stem_model_metadata(a, "provenance"), ==, "test");
    g_assert_nonnull(stem_model_metadata(a, "stem_config"));
    g_assert_nonnull(a->tok);
    char *tj1 = stem_tokenizer_to_json(m->tok), *tj2 = stem_tokenizer_to_json(a->tok);
    g_assert_cmpstr(tj1, ==, tj2);
    g_free(tj1);
    g_free(tj2);
    char *sha = st_sha256_file(path, &e);
    g_assert_no_error(e);
    g_assert_cmpstr(stem_model_sha256(a, &e), ==, sha);
    g_free(sha);
    /* a mapped model cannot be trained in place */
    g_assert_false(stem_model_alloc_training(a, &e));
    g_assert_nonnull(e);
    g_clear_error(&e);

    /* trainable */
    StemModel *b = stem_model_load_trainable(path, &e);
    g_assert_no_error(e);
    g_assert_nonnull(b);
    g_assert_nonnull(b->params);
    g_assert_true(memcmp(b->params, m->params, m->n_params * sizeof(float)) == 0);
    float *lb = logits_copy(b, ids, B, T);
    g_assert_true(memcmp(lb, ref, nl * sizeof(float)) == 0);
    g_assert_true(stem_model_alloc_training(b, &e));
    g_assert_no_error(e);

    /* re-saving the loaded model gives the same file */
    char *path2 = tmp_path("rt2.safetensors");
    meta = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(meta, "provenance", "test");
    g_assert_true(stem_model_save(a, path2, FALSE, meta, &e));
    g_assert_no_error(e);
    g_hash_table_unref(meta);
    char *s1 = st_sha256_file(path, NULL), *s2 = st_sha256_file(path2, NULL);
    g_assert_cmpstr(s1, ==, s2);
    g_free(s1);
    g_free(s2);

    /* no temp files left beside the model */
    GDir *d = g_dir_open(tmp_dir, 0, NULL);
    const char *nm;
    while ((nm = g_dir_read_name(d)))
        if (!g_str_has_suffix(nm, ".safetensors")) g_test_fail_printf("stray file after save: %s", nm);
    g_dir_close(d);

    g_free(la);
    g_free(lb);
    stem_model_free(a);
    stem_model_free(b);
    g_unlink(path2);
    g_free(path2);

    /* bf16 tables: values round to bf16, logits stay close */
    char *pb = tmp_path("bf16.safetensors");
    g_assert_true(stem_model_save(m, pb, TRUE, NULL, &e));
    g_assert_no_error(e);
    StemModel *h = stem_model_load(pb, &e);
    g_assert_no_error(e);
    g_assert_nonnull(h);
    g_assert_cmpint(stem_tables_dtype(h->tables), ==, STEM_TABLE_BF16);
    /* rows are exactly the bf16 rounding of the fp32 rows */
    float *row = g_new(float, c.ffn_dim);
    for (int j = 0; j < stem_config_n_stem(&c); j++)
        for (int t = 0; t < c.vocab; t += 37) {
            stem_tables_row(h->tables, j, t, row);
            for (int i = 0; i < c.ffn_dim; i++) {
                float want = st_bf16_to_f32(st_f32_to_bf16(m->w.stem[j][(size_t)t * c.ffn_dim + i]));
                if (memcmp(&row[i], &want, 4)) {
                    g_test_fail_printf("bf16 row j=%d t=%d i=%d: %g vs %g", j, t, i, row[i], want);
                    break;
                }
            }
        }
    float *lh = logits_copy(h, ids, B, T);
    double err = rel_err(lh, ref, nl);
    g_test_message("bf16 tables: logits rel err %.3e (tolerance 2e-2)", err);
    /* bf16 keeps 8 bits of mantissa (rel 2^-9 per entry); through 1 STEM layer the logits move ~1e-3 */
    g_assert_cmpfloat(err, <, 2e-2);
    g_assert_cmpfloat(err, >, 0);  /* the rounding did happen */
    /* the trainable load widens bf16 to the same fp32 values: same logits to the bit */
    StemModel *ht = stem_model_load_trainable(pb, &e);
    g_assert_no_error(e);
    float *lht = logits_copy(ht, ids, B, T);
    g_assert_true(memcmp(lht, lh, nl * sizeof(float)) == 0);
    g_free(lht);
    stem_model_free(ht);
    g_free(lh);
    g_free(row);
    stem_model_free(h);
    g_unlink(pb);
    g_free(pb);

    /* the effective tables (edit overlay included) are what gets saved */
    float *ov = g_new(float, c.ffn_dim);
    for (int i = 0; i < c.ffn_dim; i++) ov[i] = 0.25f * (i % 7) - 0.5f;
    stem_tables_set_override(m->tables, 0, ids[3], ov);
    char *po = tmp_path("overlay.safetensors");
    g_assert_true(stem_model_save(m, po, FALSE, NULL, &e));
    g_assert_no_error(e);
    StemModel *o = stem_model_load(po, &e);
    g_assert_no_error(e);
    float *got = g_new(float, c.ffn_dim);
    stem_tables_base_row(o->tables, 0, ids[3], got);
    g_assert_true(memcmp(got, ov, sizeof(float) * c.ffn_dim) == 0);
    stem_tables_base_row(o->tables, 0, (ids[3] + 1) % c.vocab, got);
    g_assert_true(memcmp(got, m->w.stem[0] + (size_t)((ids[3] + 1) % c.vocab) * c.ffn_dim,
                         sizeof(float) * c.ffn_dim) == 0);
    g_assert_cmpuint(stem_tables_n_overrides(o->tables), ==, 0);
    stem_tables_clear_all_overrides(m->tables);
    g_free(got);
    g_free(ov);
    stem_model_free(o);
    g_unlink(po);
    g_free(po);

    g_unlink(path);
    g_free(path);
    g_free(ref);
    g_free(ids);
    stem_model_free(m);
}

/* Copy of a valid model file with one thing broken. */
typedef struct {
    const char *drop;        /* leave this tensor out */
    const char *shrink;      /* this tensor loses its last row */
    const char *transpose;   /* this tensor's two dims are swapped */
    const char *as_i32;      /* this tensor is stored as I32 (same bytes) */
    const char *as_f64;      /* this tensor is stored as F64 (half the elements) */
    const char *to_bf16;     /* this F32 tensor is converted to BF16 */
    const char *meta_key;    /* metadata key replaced by meta_value, or dropped when meta_value is NULL */
    const char *meta_value;
} Variant;

static void write_variant(const char *src, const char *dst, const Variant *v)
{
    GError *e = NULL;
    StFile *f = st_open(src, &e);
    g_assert_no_error(e);
    StWriter *w = st_writer_new();
    for (int i = 0; i < st_n_tensors(f); i++) {
        const StTensor *t = st_tensor(f, i);
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        StDtype dt = t->dtype;
        if (v->drop && !strcmp(t->name, v->drop)) continue;
        if (v->shrink && !strcmp(t->name, v->shrink)) shape[0]--;
        if (v->transpose && !strcmp(t->name, v->transpose)) {
            g_assert_cmpint(t->ndim, ==, 2);
            shape[0] = t->shape[1];
            shape[1] = t->shape[0];
        }
        if (v->as_i32 && !strcmp(t->name, v->as_i32)) dt = ST_I32;
        if (v->as_f64 && !strcmp(t->name, v->as_f64)) {
            dt = ST_F64;
            shape[t->ndim - 1] /= 2;
        }
        if (v->to_bf16 && !strcmp(t->name, v->to_bf16)) {
            g_assert_cmpint(t->dtype, ==, ST_F32);
            st_writer_add_f32_as_bf16(w, t->name, t->ndim, shape, t->data);
            continue;
        }
        st_writer_add(w, t->name, dt, t->ndim, shape, t->data);
    }
    gboolean seen = FALSE;
    for (int i = 0; i < st_n_metadata(f); i++) {
        const char *k, *val;
        g_assert_true(st_metadata_nth(f, i, &k, &val));
        if (v->meta_key && !strcmp(k, v->meta_key)) {
            seen = TRUE;
            if (v->meta_value) st_writer_set_metadata(w, k, v->meta_value);
        } else {
            st_writer_set_metadata(w, k, val);
        }
    }
    if (v->meta_key && v->meta_value && !seen) st_writer_set_metadata(w, v->meta_key, v->meta_value);
    g_assert_true(st_writer_write(w, dst, &e));
    g_assert_no_error(e);
    st_writer_free(w);
    st_close(f);
}

/* Both loaders must refuse the file with a GError (and not crash). */
static void expect_refused(const char *path, const char *what)
{
    GError *e = NULL;
    StemModel *m = stem_model_load(path, &e);
    if (m) {
        g_test_fail_printf("stem_model_load accepted %s", what);
        stem_model_free(m);
    } else if (!e || !e->message || !*e->message) {
        g_test_fail_printf("stem_model_load refused %s without a message", what);
    } else {
        g_test_message("%-44s -> %s", what, e->message);
    }
    g_clear_error(&e);
    m = stem_model_load_trainable(path, &e);
    if (m) {
        g_test_fail_printf("stem_model_load_trainable accepted %s", what);
        stem_model_free(m);
    } else if (!e || !e->message || !*e->message) {
        g_test_fail_printf("stem_model_load_trainable refused %s without a message", what);
    }
    g_clear_error(&e);
}

static char *config_json_with(const char *fmt_tail)
{
    return g_strdup_printf("{\"vocab\":300,\"dim\":32,\"n_layers\":2,\"n_heads\":%s", fmt_tail);
}

static void test_checkpoint_hostile(void)
{
    StemConfig c = tiny_config();
    StemModel *m = tiny_model(&c, 9);
    m->tok = small_tokenizer();
    char *good = tmp_path("good.safetensors");
    GError *e = NULL;
    g_assert_true(stem_model_save(m, good, FALSE, NULL, &e));
    g_assert_no_error(e);
    char *bad = tmp_path("bad.safetensors");

    /* sanity: an untouched copy loads */
    Variant none = { 0 };
    write_variant(good, bad, &none);
    StemModel *ok = stem_model_load(bad, &e);
    g_assert_no_error(e);
    g_assert_nonnull(ok);
    stem_model_free(ok);

    /* truncated at several points */
    gchar *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(good, &bytes, &len, NULL));
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(guint8)bytes[i] << (8 * i);
    g_assert_cmpuint(hlen + 8, <, len);
    gsize cuts[] = { 0, 1, 7, 8, 9, 100, (gsize)hlen / 2, (gsize)hlen + 7, (gsize)hlen + 8, (gsize)hlen + 9,
                     (gsize)hlen + 8 + 4096, len / 2, len - 4, len - 1 };
    for (guint i = 0; i < G_N_ELEMENTS(cuts); i++) {
        g_assert_true(g_file_set_contents(bad, bytes, (gssize)cuts[i], NULL));
        char *what = g_strdup_printf("truncated to %zu of %zu bytes", cuts[i], len);
        expect_refused(bad, what);
        g_free(what);
    }
    /* header length larger than the file */
    {
        gchar *cp = g_memdup2(bytes, len);
        cp[7] = 0x7f;
        g_assert_true(g_file_set_contents(bad, cp, (gssize)len, NULL));
        expect_refused(bad, "header length 2^63");
        g_free(cp);
    }

    struct { const char *what; Variant v; } cases[] = {
        { "missing layers.0.attention.wk", { .drop = "layers.0.attention.wk.weight" } },
        { "missing layers.0 w3 (dense layer)", { .drop = "layers.0.feed_forward.w3.weight" } },
        { "missing stem_embeddings.0", { .drop = "stem_embeddings.0.weight" } },
        { "missing output", { .drop = "output.weight" } },
        { "missing norm", { .drop = "norm.weight" } },
        { "missing tok_embeddings", { .drop = "tok_embeddings.weight" } },
        { "wrong shape: w1 one row short", { .shrink = "layers.1.feed_forward.w1.weight" } },
        { "wrong shape: w1 transposed", { .transpose = "layers.1.feed_forward.w1.weight" } },
        { "wrong shape: table one row short", { .shrink = "stem_embeddings.0.weight" } },
        { "wrong shape: table transposed", { .transpose = "stem_embeddings.0.weight" } },
        { "wrong shape: embeddings one row short", { .shrink = "tok_embeddings.weight" } },
        { "wrong shape: norm one short", { .shrink = "layers.0.attention_norm.weight" } },
        { "wrong dtype: I32 output", { .as_i32 = "output.weight" } },
        { "wrong dtype: I32 wq", { .as_i32 = "layers.0.attention.wq.weight" } },
        { "wrong dtype: I32 table", { .as_i32 = "stem_embeddings.0.weight" } },
        { "wrong dtype: F64 norm", { .as_f64 = "norm.weight" } },
        { "no stem_config metadata", { .meta_key = "stem_config" } },
        { "stem_config not JSON", { .meta_key = "stem_config", .meta_value = "garbage" } },
        { "stem_config a JSON array", { .meta_key = "stem_config", .meta_value = "[1,2]" } },
        { "stem_config empty", { .meta_key = "stem_config", .meta_value = "" } },
        { "tokenizer garbage", { .meta_key = "tokenizer", .meta_value = "garbage{" } },
        { "tokenizer empty object", { .meta_key = "tokenizer", .meta_value = "{}" } },
        { "tokenizer a JSON number", { .meta_key = "tokenizer", .meta_value = "42" } },
        { "tokenizer empty", { .meta_key = "tokenizer", .meta_value = "" } },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        write_variant(good, bad, &cases[i].v);
        expect_refused(bad, cases[i].what);
    }

    /* configs that disagree with the tensors or are invalid in themselves */
    struct { const char *what; char *json; } cfgs[] = {
        { "n_heads 5 does not divide dim 32",
          config_json_with("5,\"n_kv_heads\":5,\"ffn_dim\":64,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[1]}") },
        { "stem_layers names layer 99",
          config_json_with("4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[99]}") },
        { "stem_layers names layer 2 of 2",
          config_json_with("4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[2]}") },
        { "stem_layers [0] (tensors say [1])",
          config_json_with("4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[0]}") },
        { "stem_layers [] (dense; tensors say STEM)",
          config_json_with("4,\"n_kv_heads\":4,\"ffn_dim\":64,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[]}") },
        { "ffn 128 (tensors have 64)",
          config_json_with("4,\"n_kv_heads\":4,\"ffn_dim\":128,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[1]}") },
        { "kv heads 2 (tensors have 4)",
          config_json_with("4,\"n_kv_heads\":2,\"ffn_dim\":64,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[1]}") },
        { "negative ffn",
          config_json_with("4,\"n_kv_heads\":4,\"ffn_dim\":-64,\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,"
                           "\"stem_layers\":[1]}") },
        { "huge sizes",
          g_strdup("{\"vocab\":16777216,\"dim\":65536,\"n_layers\":64,\"n_heads\":2,\"n_kv_heads\":2,\"ffn_dim\":1048576,"
                   "\"seq_len\":65536,\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[1]}") },
        { "vocab 260 < tokenizer's vocab",
          g_strdup("{\"vocab\":260,\"dim\":32,\"n_layers\":2,\"n_heads\":4,\"n_kv_heads\":4,\"ffn_dim\":64,"
                   "\"seq_len\":16,\"rope_theta\":10000,\"norm_eps\":1e-5,\"stem_layers\":[1]}") },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cfgs); i++) {
        Variant v = { .meta_key = "stem_config", .meta_value = cfgs[i].json };
        write_variant(good, bad, &v);
        expect_refused(bad, cfgs[i].what);
        g_free(cfgs[i].json);
    }

    /* not a model at all */
    g_assert_true(g_file_set_contents(bad, "hello, I am a text file\n", -1, NULL));
    expect_refused(bad, "a text file");
    g_assert_true(g_file_set_contents(bad, "", 0, NULL));
    expect_refused(bad, "an empty file");
    char *missing = tmp_path("does-not-exist.safetensors");
    expect_refused(missing, "a missing file");
    g_free(missing);
    expect_refused(tmp_dir, "a directory");
    /* a valid safetensors file that is not a STEM model */
    {
        StWriter *w = st_writer_new();
        float x[4] = { 1, 2, 3, 4 };
        int64_t shape[1] = { 4 };
        st_writer_add(w, "x", ST_F32, 1, shape, x);
        g_assert_true(st_writer_write(w, bad, &e));
        st_writer_free(w);
        expect_refused(bad, "a safetensors file without STEM metadata");
    }

    g_unlink(bad);
    g_unlink(good);
    g_free(bytes);
    g_free(bad);
    g_free(good);
    stem_model_free(m);
}

/* A copy of src whose data section starts with one extra byte (held by a U8
 * tensor "pad"), so every F32 tensor is at an odd address: files converted
 * elsewhere need not be aligned, and the loader must copy such tensors. */
static void write_unaligned(const char *src, const char *dst)
{
    gchar *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(src, &bytes, &len, NULL));
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)(guint8)bytes[i] << (8 * i);
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, bytes + 8, (gssize)hlen, NULL));
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    GList *members = json_object_get_members(root);
    for (GList *l = members; l; l = l->next) {
        if (!strcmp(l->data, "__metadata__")) continue;
        JsonArray *off = json_object_get_array_member(json_object_get_object_member(root, l->data), "data_offsets");
        for (guint k = 0; k < 2; k++) {
            gint64 v = json_array_get_int_element(off, k);
            json_node_set_int(json_array_get_element(off, k), v + 1);
        }
    }
    g_list_free(members);
    JsonObject *pad = json_object_new();
    json_object_set_string_member(pad, "dtype", "U8");
    JsonArray *shape = json_array_new();
    json_array_add_int_element(shape, 1);
    json_object_set_array_member(pad, "shape", shape);
    JsonArray *off = json_array_new();
    json_array_add_int_element(off, 0);
    json_array_add_int_element(off, 1);
    json_object_set_array_member(pad, "data_offsets", off);
    json_object_set_object_member(root, "pad", pad);
    JsonGenerator *g = json_generator_new();
    json_generator_set_root(g, json_parser_get_root(p));
    gsize hl = 0;
    gchar *hdr = json_generator_to_data(g, &hl);
    GString *h = g_string_new(hdr);
    while ((8 + h->len) % 64) g_string_append_c(h, ' ');
    GByteArray *out = g_byte_array_new();
    guint8 le[8];
    for (int i = 0; i < 8; i++) le[i] = (guint8)((uint64_t)h->len >> (8 * i));
    g_byte_array_append(out, le, 8);
    g_byte_array_append(out, (guint8 *)h->str, h->len);
    guint8 zero = 0;
    g_byte_array_append(out, &zero, 1);
    g_byte_array_append(out, (guint8 *)bytes + 8 + hlen, len - 8 - hlen);
    g_assert_true(g_file_set_contents(dst, (gchar *)out->data, out->len, NULL));
    g_byte_array_unref(out);
    g_string_free(h, TRUE);
    g_free(hdr);
    g_object_unref(g);
    g_object_unref(p);
    g_free(bytes);
}

static void test_checkpoint_unaligned_and_mixed(void)
{
    StemConfig c = tiny_config();
    c.stem_mask = 0x3;   /* two tables */
    StemModel *m = tiny_model(&c, 17);
    const int B = 1, T = 16;
    int32_t *ids = random_ids((size_t)B * T, 300, 5);
    float *ref = logits_copy(m, ids, B, T);
    const size_t nl = (size_t)B * T * c.vocab;
    char *good = tmp_path("al.safetensors"), *un = tmp_path("unaligned.safetensors");
    GError *e = NULL;
    g_assert_true(stem_model_save(m, good, FALSE, NULL, &e));
    g_assert_no_error(e);

    /* unaligned fp32 tensors: copied at load, same logits */
    write_unaligned(good, un);
    {
        StFile *f = st_open(un, &e);
        g_assert_no_error(e);
        g_assert_nonnull(f);
        g_assert_false(st_tensor_aligned(st_find(f, "output.weight"), 4));
        st_close(f);
    }
    StemModel *a = stem_model_load(un, &e);
    g_assert_no_error(e);
    g_assert_nonnull(a);
    float *la = logits_copy(a, ids, B, T);
    g_assert_true(memcmp(la, ref, nl * sizeof(float)) == 0);
    StemModel *b = stem_model_load_trainable(un, &e);
    g_assert_no_error(e);
    float *lb = logits_copy(b, ids, B, T);
    g_assert_true(memcmp(lb, ref, nl * sizeof(float)) == 0);
    g_free(la);
    g_free(lb);
    stem_model_free(a);
    stem_model_free(b);

    /* unaligned bf16 tables too */
    char *hb = tmp_path("hb.safetensors");
    g_assert_true(stem_model_save(m, hb, TRUE, NULL, &e));
    write_unaligned(hb, un);
    StemModel *h1 = stem_model_load(hb, &e);
    g_assert_no_error(e);
    StemModel *h2 = stem_model_load(un, &e);
    g_assert_no_error(e);
    g_assert_nonnull(h2);
    g_assert_cmpint(stem_tables_dtype(h2->tables), ==, STEM_TABLE_BF16);
    float *l1 = logits_copy(h1, ids, B, T), *l2 = logits_copy(h2, ids, B, T);
    g_assert_true(memcmp(l1, l2, nl * sizeof(float)) == 0);
    g_free(l1);
    g_free(l2);
    stem_model_free(h1);
    stem_model_free(h2);
    g_unlink(hb);
    g_free(hb);

    /* one table fp32, the other bf16: loads; every row is (at most) the bf16 rounding */
    Variant v = { .to_bf16 = "stem_embeddings.1.weight" };
    write_variant(good, un, &v);
    StemModel *x = stem_model_load(un, &e);
    g_assert_no_error(e);
    g_assert_nonnull(x);
    float *row = g_new(float, c.ffn_dim);
    for (int j = 0; j < 2; j++)
        for (int t = 0; t < c.vocab; t += 13) {
            stem_tables_row(x->tables, j, t, row);
            for (int i = 0; i < c.ffn_dim; i++) {
                float orig = m->w.stem[j][(size_t)t * c.ffn_dim + i];
                float r16 = st_bf16_to_f32(st_f32_to_bf16(orig));
                if (row[i] != r16 && !(j == 0 && row[i] == orig)) {
                    g_test_fail_printf("mixed dtypes: table %d row %d [%d] = %g (orig %g)", j, t, i, row[i], orig);
                    t = c.vocab;
                    break;
                }
            }
        }
    StemModel *xt = stem_model_load_trainable(un, &e);
    g_assert_no_error(e);
    g_assert_nonnull(xt);
    g_free(row);
    stem_model_free(x);
    stem_model_free(xt);

    g_unlink(good);
    g_unlink(un);
    g_free(good);
    g_free(un);
    g_free(ref);
    g_free(ids);
    stem_model_free(m);
}

/* ================================================================== tables */

static void test_tables_store(void)
{
    const int n = 2, V = 300, F = 64;
    float *base[2];
    GRand *r = g_rand_new_with_seed(5);
    for (int j = 0; j < n; j++) {
        base[j] = g_new(float, (size_t)V * F);
        for (size_t i = 0; i < (size_t)V * F; i++) base[j][i] = (float)g_rand_double_range(r, -1, 1);
    }
    const void *bp[2] = { base[0], base[1] };
    StemTables *t = stem_tables_new(n, V, F, STEM_TABLE_F32, bp);
    g_assert_cmpint(stem_tables_n(t), ==, n);
    g_assert_cmpint(stem_tables_vocab(t), ==, V);
    g_assert_cmpint(stem_tables_ffn(t), ==, F);
    g_assert_cmpint(stem_tables_dtype(t), ==, STEM_TABLE_F32);
    g_assert_cmpuint(stem_tables_n_overrides(t), ==, 0);

    int32_t ids[8] = { 0, 5, 299, 5, 17, 0, 123, 5 };
    float *out = g_new(float, 8 * F), *row = g_new(float, F);
    for (int j = 0; j < n; j++) {
        stem_tables_gather(t, j, ids, 8, out);
        for (int i = 0; i < 8; i++)
            g_assert_true(memcmp(out + (size_t)i * F, base[j] + (size_t)ids[i] * F, sizeof(float) * F) == 0);
    }

    /* an override shadows exactly one (layer, token) */
    float *ov = g_new(float, F), *ov2 = g_new(float, F);
    for (int i = 0; i < F; i++) { ov[i] = 100.0f + i; ov2[i] = -3.0f * i + 0.1f; }
    guint64 g0 = stem_tables_generation(t);
    stem_tables_set_override(t, 1, 5, ov);
    ov[0] = 12345.0f;   /* the row was copied: changing the caller's buffer changes nothing */
    stem_tables_row(t, 1, 5, row);
    g_assert_cmpfloat(row[0], ==, 100.0f);
    ov[0] = 100.0f;
    guint64 g1 = stem_tables_generation(t);
    g_assert_cmpuint(g1, >, g0);
    g_assert_true(stem_tables_has_override(t, 1, 5));
    g_assert_false(stem_tables_has_override(t, 0, 5));
    g_assert_false(stem_tables_has_override(t, 1, 6));
    g_assert_cmpuint(stem_tables_n_overrides(t), ==, 1);
    stem_tables_row(t, 1, 5, row);
    g_assert_true(memcmp(row, ov, sizeof(float) * F) == 0);
    stem_tables_base_row(t, 1, 5, row);
    g_assert_true(memcmp(row, base[1] + 5 * F, sizeof(float) * F) == 0);
    stem_tables_row(t, 0, 5, row);
    g_assert_true(memcmp(row, base[0] + 5 * F, sizeof(float) * F) == 0);
    stem_tables_gather(t, 1, ids, 8, out);
    for (int i = 0; i < 8; i++) {
        const float *want = ids[i] == 5 ? ov : base[1] + (size_t)ids[i] * F;
        g_assert_true(memcmp(out + (size_t)i * F, want, sizeof(float) * F) == 0);
    }
    stem_tables_gather(t, 0, ids, 8, out);
    for (int i = 0; i < 8; i++)
        g_assert_true(memcmp(out + (size_t)i * F, base[0] + (size_t)ids[i] * F, sizeof(float) * F) == 0);
    /* the base memory was never written */
    /* (compare with a regenerated copy) */
    {
        GRand *r2 = g_rand_new_with_seed(5);
        gboolean same = TRUE;
        for (int j = 0; j < n; j++)
            for (size_t i = 0; i < (size_t)V * F; i++) same &= base[j][i] == (float)g_rand_double_range(r2, -1, 1);
        g_rand_free(r2);
        g_assert_true(same);
    }

    /* replacing an override */
    stem_tables_set_override(t, 1, 5, ov2);
    guint64 g2 = stem_tables_generation(t);
    g_assert_cmpuint(g2, >, g1);
    g_assert_cmpuint(stem_tables_n_overrides(t), ==, 1);
    stem_tables_row(t, 1, 5, row);
    g_assert_true(memcmp(row, ov2, sizeof(float) * F) == 0);
    /* neighbours in key space: (0, 5), (1, 4), (1, 6) and token 0 of layer 1 */
    stem_tables_set_override(t, 0, 299, ov);
    stem_tables_set_override(t, 1, 0, ov);
    g_assert_cmpuint(stem_tables_n_overrides(t), ==, 3);
    stem_tables_row(t, 1, 299, row);
    g_assert_true(memcmp(row, base[1] + 299 * F, sizeof(float) * F) == 0);
    stem_tables_row(t, 0, 0, row);
    g_assert_true(memcmp(row, base[0], sizeof(float) * F) == 0);

    /* clearing restores the base exactly */
    guint64 g3 = stem_tables_generation(t);
    stem_tables_clear_override(t, 1, 5);
    g_assert_cmpuint(stem_tables_generation(t), >, g3);
    g_assert_false(stem_tables_has_override(t, 1, 5));
    g_assert_cmpuint(stem_tables_n_overrides(t), ==, 2);
    stem_tables_row(t, 1, 5, row);
    g_assert_true(memcmp(row, base[1] + 5 * F, sizeof(float) * F) == 0);
    guint64 g4 = stem_tables_generation(t);
    stem_tables_clear_all_overrides(t);
    g_assert_cmpuint(stem_tables_generation(t), >, g4);
    g_assert_cmpuint(stem_tables_n_overrides(t), ==, 0);
    for (int j = 0; j < n; j++) {
        stem_tables_gather(t, j, ids, 8, out);
        for (int i = 0; i < 8; i++)
            g_assert_true(memcmp(out + (size_t)i * F, base[j] + (size_t)ids[i] * F, sizeof(float) * F) == 0);
        stem_tables_row(t, j, 0, row);
        g_assert_true(memcmp(row, base[j], sizeof(float) * F) == 0);
        stem_tables_row(t, j, 299, row);
        g_assert_true(memcmp(row, base[j] + 299 * F, sizeof(float) * F) == 0);
    }
    stem_tables_free(t);

    /* bf16 base: rows widen exactly */
    uint16_t *hb[2];
    for (int j = 0; j < n; j++) {
        hb[j] = g_new(uint16_t, (size_t)V * F);
        for (size_t i = 0; i < (size_t)V * F; i++) hb[j][i] = st_f32_to_bf16(base[j][i] * 7.5f);
    }
    /* include specials: zero, negative zero, subnormal, large */
    hb[0][0] = 0x0000; hb[0][1] = 0x8000; hb[0][2] = 0x0001; hb[0][3] = 0x7f7f; hb[0][4] = 0xff7f;
    const void *hp[2] = { hb[0], hb[1] };
    t = stem_tables_new(n, V, F, STEM_TABLE_BF16, hp);
    g_assert_cmpint(stem_tables_dtype(t), ==, STEM_TABLE_BF16);
    for (int j = 0; j < n; j++) {
        stem_tables_gather(t, j, ids, 8, out);
        for (int i = 0; i < 8; i++)
            for (int k = 0; k < F; k++) {
                float want = st_bf16_to_f32(hb[j][(size_t)ids[i] * F + k]);
                if (memcmp(&out[(size_t)i * F + k], &want, 4)) {
                    g_test_fail_printf("bf16 gather j=%d id=%d k=%d: %g vs %g", j, ids[i], k, out[i * F + k], want);
                    break;
                }
            }
        for (int tok = 0; tok < V; tok++) {
            stem_tables_base_row(t, j, tok, row);
            for (int k = 0; k < F; k++) {
                float want = st_bf16_to_f32(hb[j][(size_t)tok * F + k]);
                if (memcmp(&row[k], &want, 4)) {
                    g_test_fail_printf("bf16 row j=%d tok=%d k=%d", j, tok, k);
                    tok = V;
                    break;
                }
            }
        }
    }
    /* an fp32 override on a bf16 table is kept at full precision */
    float fine[64];
    for (int i = 0; i < F; i++) fine[i] = 1.0f + (float)i * 1e-6f;
    stem_tables_set_override(t, 0, 17, fine);
    stem_tables_row(t, 0, 17, row);
    g_assert_true(memcmp(row, fine, sizeof(float) * F) == 0);
    stem_tables_clear_override(t, 0, 17);
    stem_tables_row(t, 0, 17, row);
    for (int k = 0; k < F; k++) {
        float want = st_bf16_to_f32(hb[0][17 * F + k]);
        g_assert_true(memcmp(&row[k], &want, 4) == 0);
    }
    stem_tables_free(t);

    for (int j = 0; j < n; j++) {
        g_free(base[j]);
        g_free(hb[j]);
    }
    g_free(out);
    g_free(row);
    g_free(ov);
    g_free(ov2);
    g_rand_free(r);
}

/* Edits through a model: an override changes the logits where the token occurs
 * (from that position on), clearing gives the original logits to the bit. */
static void test_tables_in_model(void)
{
    StemConfig c = tiny_config();
    StemModel *m = tiny_model(&c, 13);
    char *path = tmp_path("edit.safetensors");
    GError *e = NULL;
    g_assert_true(stem_model_save(m, path, FALSE, NULL, &e));
    g_assert_no_error(e);
    StemModel *a = stem_model_load(path, &e);
    g_assert_no_error(e);
    const int T = 16;
    int32_t *ids = random_ids(T, 300, 31);
    ids[10] = 42;
    for (int i = 0; i < T; i++) if (i != 10 && ids[i] == 42) ids[i] = 43;
    const size_t V = (size_t)c.vocab;
    float *ref = logits_copy(a, ids, 1, T);
    float *row = g_new(float, c.ffn_dim);
    for (int i = 0; i < c.ffn_dim; i++) row[i] = 0.5f;
    stem_tables_set_override(a->tables, 0, 42, row);
    float *ed = logits_copy(a, ids, 1, T);
    /* causal: positions before 10 unchanged, position 10 changed */
    g_assert_true(memcmp(ed, ref, sizeof(float) * V * 10) == 0);
    g_assert_false(memcmp(ed + V * 10, ref + V * 10, sizeof(float) * V) == 0);
    stem_tables_clear_override(a->tables, 0, 42);
    float *back = logits_copy(a, ids, 1, T);
    g_assert_true(memcmp(back, ref, sizeof(float) * V * T) == 0);
    /* the same edit on the training model gives the same logits as on the mapped one */
    stem_tables_set_override(m->tables, 0, 42, row);
    float *em = logits_copy(m, ids, 1, T);
    g_assert_true(memcmp(em, ed, sizeof(float) * V * T) == 0);
    stem_tables_clear_all_overrides(m->tables);
    float *bm = logits_copy(m, ids, 1, T);
    g_assert_true(memcmp(bm, ref, sizeof(float) * V * T) == 0);
    g_free(ref);
    g_free(ed);
    g_free(back);
    g_free(em);
    g_free(bm);
    g_free(row);
    g_free(ids);
    stem_model_free(a);
    stem_model_free(m);
    g_unlink(path);
    g_free(path);
}

/* ================================================================== sampler */

static int cmp_topk(const void *a, const void *b)
{
    const StemTopk *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return x->id - y->id;
}

static void test_sampler_topk_of(void)
{
    const float p[10] = { 0.1f, 0.3f, 0.05f, 0.3f, 0.0f, 0.15f, 0.1f, 0.0f, 0.0f, 0.0f };
    StemTopk out[10];
    int n = stem_topk_of(p, 10, 4, out);
    g_assert_cmpint(n, ==, 4);
    const int want4[4] = { 1, 3, 5, 0 };
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(out[i].id, ==, want4[i]);
        g_assert_cmpfloat(out[i].prob, ==, p[want4[i]]);
    }
    n = stem_topk_of(p, 10, 5, out);
    g_assert_cmpint(n, ==, 5);
    g_assert_cmpint(out[4].id, ==, 6);
    n = stem_topk_of(p, 10, 1, out);
    g_assert_cmpint(n, ==, 1);
    g_assert_cmpint(out[0].id, ==, 1);
    /* k > V: all V, fully ordered, zeros by id */
    StemTopk big[16];
    n = stem_topk_of(p, 10, 16, big);
    g_assert_cmpint(n, ==, 10);
    const int want_all[10] = { 1, 3, 5, 0, 6, 2, 4, 7, 8, 9 };
    for (int i = 0; i < 10; i++) g_assert_cmpint(big[i].id, ==, want_all[i]);
    /* all equal */
    float u[7];
    for (int i = 0; i < 7; i++) u[i] = 1.0f / 7;
    n = stem_topk_of(u, 7, 3, out);
    g_assert_cmpint(n, ==, 3);
    for (int i = 0; i < 3; i++) g_assert_cmpint(out[i].id, ==, i);

    /* k = 0 asks for nothing: returns 0 and writes nothing (not even out[-1]) */
    {
        StemTopk guard[3];
        guard[0].id = -777;
        guard[0].prob = -1.0f;
        guard[1] = guard[2] = guard[0];
        int got = stem_topk_of(p, 10, 0, guard + 1);
        g_assert_cmpint(got, ==, 0);
        if (guard[0].id != -777 || guard[1].id != -777)
            g_test_fail_printf("stem_topk_of(k=0) wrote outside the empty output (out[-1].id = %d, out[0].id = %d)",
                               guard[0].id, guard[1].id);
    }

    /* randomized against a sort, with many ties (few distinct values) */
    GRand *r = g_rand_new_with_seed(17);
    for (int trial = 0; trial < 300; trial++) {
        int V = g_rand_int_range(r, 1, 400), k = g_rand_int_range(r, 1, 30);
        float *q = g_new(float, V);
        int levels = g_rand_int_range(r, 1, 6);
        for (int i = 0; i < V; i++) q[i] = (float)g_rand_int_range(r, 0, levels) / 8.0f;
        StemTopk *ref = g_new(StemTopk, V), *got = g_new(StemTopk, k);
        for (int i = 0; i < V; i++) { ref[i].id = i; ref[i].prob = q[i]; }
        qsort(ref, V, sizeof *ref, cmp_topk);
        int m = stem_topk_of(q, V, k, got);
        g_assert_cmpint(m, ==, MIN(k, V));
        for (int i = 0; i < m; i++)
            if (got[i].id != ref[i].id || got[i].prob != ref[i].prob) {
                g_test_fail_printf("topk trial %d (V %d k %d) rank %d: id %d p %g, expected id %d p %g", trial, V, k,
                                   i, got[i].id, got[i].prob, ref[i].id, ref[i].prob);
                break;
            }
        g_free(q);
        g_free(ref);
        g_free(got);
    }
    g_rand_free(r);
}

static void test_sampler_generate(void)
{
    StemConfig c = tiny_config();
    StemModel *m = tiny_model(&c, 21);
    /* sharpen the random model a little so greedy is not decided by noise */
    for (size_t i = 0; i < (size_t)c.vocab * c.dim; i++) m->w.output[i] *= 20.0f;
    const int n = 5;
    int32_t prompt[5] = { 10, 20, 30, 40, 50 };

    /* probabilities: a distribution */
    float *probs = g_new(float, c.vocab);
    stem_next_probs(m, prompt, n, probs);
    double sum = 0;
    for (int i = 0; i < c.vocab; i++) {
        g_assert_true(probs[i] >= 0 && probs[i] <= 1);
        sum += probs[i];
    }
    g_assert_cmpfloat(fabs(sum - 1.0), <, 1e-5);
    /* topk matches topk_of(next_probs) */
    StemTopk a[5], b[5];
    g_assert_cmpint(stem_topk(m, prompt, n, 5, a), ==, 5);
    g_assert_cmpint(stem_topk_of(probs, c.vocab, 5, b), ==, 5);
    g_assert_true(memcmp(a, b, sizeof a) == 0);
    for (int i = 1; i < 5; i++) g_assert_cmpfloat(a[i - 1].prob, >=, a[i].prob);

    /* longer than the context: only the last seq_len tokens count */
    int32_t *longp = random_ids(40, 300, 8);
    float *p1 = g_new(float, c.vocab), *p2 = g_new(float, c.vocab);
    stem_next_probs(m, longp, 40, p1);
    stem_next_probs(m, longp + 40 - c.seq_len, c.seq_len, p2);
    g_assert_true(memcmp(p1, p2, sizeof(float) * c.vocab) == 0);

    /* greedy: deterministic, and each token is the argmax after its prefix */
    int n1 = 0, n2 = 0;
    int32_t *g1 = stem_generate(m, prompt, n, 12, 0.0f, 1, &n1);
    int32_t *g2 = stem_generate(m, prompt, n, 12, 0.0f, 999, &n2);
    g_assert_cmpint(n1, ==, n2);
    g_assert_cmpint(n1, >=, 1);
    g_assert_cmpint(n1, <=, 12);
    g_assert_true(memcmp(g1, g2, sizeof(int32_t) * n1) == 0);
    int32_t all[64];
    memcpy(all, prompt, sizeof prompt);
    memcpy(all + n, g1, sizeof(int32_t) * n1);
    double gap_min = INFINITY;   /* smallest log-prob margin of the greedy token over the runner-up */
    for (int i = 0; i < n1; i++) {
        stem_next_probs(m, all, n + i, probs);
        StemTopk t2[2];
        stem_topk_of(probs, c.vocab, 2, t2);
        g_assert_cmpint(g1[i], ==, t2[0].id);
        g_assert_true(g1[i] >= 0 && g1[i] < c.vocab);
        double gap = log((double)t2[0].prob) - log((double)t2[1].prob);
        if (gap < gap_min) gap_min = gap;
    }
    if (n1 < 12) g_assert_cmpint(g1[n1 - 1], ==, STEM_TOK_EOS);

    /* a very low temperature is greedy in the limit: p^(1/T) must not underflow
     * into an all-zero distribution (which would pick token 0 every time) */
    for (int k = 0; k < 4; k++) {
        const float temps[4] = { 0.05f, 0.01f, 0.001f, 1e-4f };
        /* P(not greedy at a step) <= (V - 1) exp(-gap / T): require greedy only where that
         * is negligible over the whole continuation */
        double bound = n1 * (c.vocab - 1) * exp(-gap_min / temps[k]);
        if (!(bound < 1e-6)) {
            g_test_message("temperature %g: not required to be greedy (min gap %.4f, bound %.2e)", temps[k],
                           gap_min, bound);
            continue;
        }
        int nl = 0;
        int32_t *lo = stem_generate(m, prompt, n, 12, temps[k], 4, &nl);
        if (nl != n1 || memcmp(lo, g1, sizeof(int32_t) * n1))
            g_test_fail_printf("temperature %g: first tokens %d %d %d, greedy %d %d %d", temps[k], lo[0],
                               nl > 1 ? lo[1] : -1, nl > 2 ? lo[2] : -1, g1[0], n1 > 1 ? g1[1] : -1,
                               n1 > 2 ? g1[2] : -1);
        g_free(lo);
    }

    /* sampling: same seed, same tokens; other seeds, other tokens */
    int s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < (size_t)c.vocab * c.dim; i++) m->w.output[i] /= 20.0f;  /* back to near-uniform */
    int32_t *t1 = stem_generate(m, prompt, n, 20, 1.0f, 7, &s1);
    int32_t *t2 = stem_generate(m, prompt, n, 20, 1.0f, 7, &s2);
    int32_t *t3 = stem_generate(m, prompt, n, 20, 1.0f, 8, &s3);
    g_assert_cmpint(s1, ==, s2);
    g_assert_true(memcmp(t1, t2, sizeof(int32_t) * s1) == 0);
    for (int i = 0; i < s1; i++) g_assert_true(t1[i] >= 0 && t1[i] < c.vocab);
    g_assert_false(s1 == s3 && memcmp(t1, t3, sizeof(int32_t) * s1) == 0);
    /* the same at another temperature */
    int s4 = 0, s5 = 0;
    int32_t *t4 = stem_generate(m, prompt, n, 20, 0.7f, 123, &s4);
    int32_t *t5 = stem_generate(m, prompt, n, 20, 0.7f, 123, &s5);
    g_assert_cmpint(s4, ==, s5);
    g_assert_true(memcmp(t4, t5, sizeof(int32_t) * s4) == 0);

    g_free(t1); g_free(t2); g_free(t3); g_free(t4); g_free(t5);
    g_free(g1); g_free(g2);
    g_free(p1); g_free(p2); g_free(longp);
    g_free(probs);
    stem_model_free(m);
}

/* ================================================================== main */

static void rm_tmp(void)
{
    GDir *d = g_dir_open(tmp_dir, 0, NULL);
    const char *nm;
    while (d && (nm = g_dir_read_name(d))) {
        char *p = g_build_filename(tmp_dir, nm, NULL);
        g_unlink(p);
        g_free(p);
    }
    if (d) g_dir_close(d);
    g_rmdir(tmp_dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    pool_init(2);
    GError *e = NULL;
    tmp_dir = g_dir_make_tmp("stem-engine-test-XXXXXX", &e);
    g_assert_no_error(e);

    g_test_add_func("/config/parse-layers", test_config_parse_layers);
    g_test_add_func("/config/validate", test_config_validate);
    g_test_add_func("/config/counts", test_config_counts);
    g_test_add_func("/config/json", test_config_json);
    g_test_add_func("/train/determinism", test_train_determinism);
    g_test_add_func("/train/loss-falls", test_train_loss_falls);
    g_test_add_func("/train/cancel-and-errors", test_train_cancel_and_errors);
    g_test_add_func("/model/grad-accumulation", test_grad_accumulation);
    g_test_add_func("/checkpoint/round-trip", test_checkpoint_roundtrip);
    g_test_add_func("/checkpoint/hostile", test_checkpoint_hostile);
    g_test_add_func("/checkpoint/unaligned-and-mixed", test_checkpoint_unaligned_and_mixed);
    g_test_add_func("/tables/store", test_tables_store);
    g_test_add_func("/tables/in-model", test_tables_in_model);
    g_test_add_func("/sampler/topk-of", test_sampler_topk_of);
    g_test_add_func("/sampler/generate", test_sampler_generate);
    int rc = g_test_run();
    rm_tmp();
    g_free(tmp_dir);
    pool_shutdown();
    return rc;
}
