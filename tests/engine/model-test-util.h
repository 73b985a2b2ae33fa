/* Helpers shared by the engine's model tests (test_engine.c, test_device.c). */
#ifndef STEM_TESTS_MODEL_TEST_UTIL_H
#define STEM_TESTS_MODEL_TEST_UTIL_H

#include <glib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/model.h"

/* n ids uniform in [0, vocab), deterministic for a seed. g_free. */
static inline int32_t *random_ids(size_t n, int vocab, guint32 seed)
{
    GRand *r = g_rand_new_with_seed(seed);
    int32_t *ids = g_new(int32_t, n);
    for (size_t i = 0; i < n; i++) ids[i] = g_rand_int_range(r, 0, vocab);
    g_rand_free(r);
    return ids;
}

/* Logits of every position of a forward over ids[B*T], copied ([B*T, V]). g_free. */
static inline float *logits_copy(StemModel *m, const int32_t *ids, int B, int T)
{
    stem_model_forward(m, ids, NULL, B, T, FALSE);
    const int V = m->cfg.vocab;
    float *out = g_new(float, (size_t)B * T * V);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *l = stem_model_logits(m, b, t);
            g_assert_nonnull(l);
            memcpy(out + ((size_t)b * T + t) * V, l, sizeof(float) * V);
        }
    return out;
}

/* max |a - b| / max(max |b|, 1e-6) */
static inline double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (isnan(x)) return INFINITY;
        if (x > d) d = x;
        if (fabs((double)b[i]) > s) s = fabs((double)b[i]);
    }
    return d / (s > 1e-6 ? s : 1e-6);
}

#endif
