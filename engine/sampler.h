/* Next-token distribution, top-k and generation on top of the forward pass. */
#ifndef STEM_ENGINE_SAMPLER_H
#define STEM_ENGINE_SAMPLER_H

#include <glib.h>
#include "model.h"

typedef struct {
    int id;
    float prob;
} StemTopk;

/* Softmax of the next-token logits after ids[n] (the last seq_len tokens are
 * used when n is longer) into probs[V]. n >= 1. */
void stem_next_probs(StemModel *m, const int32_t *ids, int n, float *probs);
/* The k most likely ids of probs[V], in decreasing probability (ties: lower id). */
int stem_topk_of(const float *probs, int V, int k, StemTopk *out);
/* Encode-free convenience: top-k after ids[n]; returns the number written. */
int stem_topk(StemModel *m, const int32_t *ids, int n, int k, StemTopk *out);
/* Generate n_new tokens after ids[n]; temperature <= 0 is greedy. Stops early at
 * <eos>. Returns the new ids (g_free) and their count in *n_out. */
int32_t *stem_generate(StemModel *m, const int32_t *ids, int n, int n_new, float temperature, guint64 seed,
                       int *n_out);

#endif
