/* A small model with structure for the viz tests: weights scaled up from the
 * default init so that logits are spread (no near-ties in top-k), and STEM
 * table rows given a shared cluster component so cosines are not all ~0. */
#ifndef STEM_TESTS_VIZ_TESTMODEL_H
#define STEM_TESTS_VIZ_TESTMODEL_H

#include "engine/checkpoint.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include <math.h>
#include <string.h>

static const char viz_test_text[] =
    "The capital of Spain is Madrid. The capital of France is Paris. The capital of Italy is Rome.\n"
    "The capital of Portugal is Lisbon. The capital of Germany is Berlin. Spain is in Europe.\n"
    "France is in Europe. The language of Spain is Spanish. The language of France is French.\n";

static guint64 vt_rng(guint64 *s)
{
    guint64 z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double vt_normal(guint64 *s)
{
    double u1 = ((vt_rng(s) >> 11) + 1.0) / 9007199254740993.0, u2 = (vt_rng(s) >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(2 * G_PI * u2);
}

static StemModel *viz_test_model(gboolean dense, guint64 seed)
{
    StemConfig c = { .vocab = 300, .dim = 32, .n_layers = 3, .n_heads = 4, .n_kv_heads = 2, .ffn_dim = 48,
                     .seq_len = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f,
                     .stem_mask = dense ? 0 : (1u << 1) | (1u << 2) };
    GError *e = NULL;
    StemModel *m = stem_model_new(&c, &e);
    g_assert_no_error(e);
    stem_model_init_weights(m, seed);
    GArray *ts = stem_model_tensors(m);
    guint64 s = seed * 77 + 5;
    for (guint i = 0; i < ts->len; i++) {
        StemTensorRef *r = &g_array_index(ts, StemTensorRef, i);
        size_t n = (size_t)r->shape[0] * (r->ndim == 2 ? (size_t)r->shape[1] : 1);
        if (r->ndim == 1) {
            for (size_t k = 0; k < n; k++) r->data[k] = 1.0f + 0.2f * (float)vt_normal(&s);
        } else if (r->is_table) {
            /* 7 clusters: row += 0.8 * std * basis[t % 7] */
            const int F = c.ffn_dim;
            float basis[7][64];
            for (int q = 0; q < 7; q++)
                for (int k = 0; k < F; k++) basis[q][k] = (float)vt_normal(&s) * 0.06f;
            for (int t = 0; t < c.vocab; t++)
                for (int k = 0; k < F; k++) r->data[(size_t)t * F + k] += basis[t % 7][k];
        } else {
            float scale = !strcmp(r->name, "tok_embeddings.weight") ? 40.0f
                          : !strcmp(r->name, "output.weight")       ? 60.0f
                                                                    : 12.0f;
            for (size_t k = 0; k < n; k++) r->data[k] *= scale;
        }
    }
    g_array_unref(ts);
    m->tok = stem_tokenizer_train(viz_test_text, strlen(viz_test_text), c.vocab, NULL, NULL);
    return m;
}

#endif
