/* Logit lens: read the next-token distribution off the residual stream after
 * every layer (final RMSNorm and LM head applied early), at the last position. */
#ifndef STEM_VIZ_LENS_H
#define STEM_VIZ_LENS_H

#include <glib.h>
#include <stdint.h>
#include "engine/model.h"

typedef struct {
    int n_rows;           /* n_layers + 1: row 0 = embeddings, row l + 1 = after layer l */
    int k;
    int32_t *ids;         /* [n_rows, k] top-k token ids, most likely first */
    float *probs;         /* [n_rows, k] */
    float *entropy;       /* [n_rows] nats */
    float *track;         /* [n_rows] probability of the tracked token (NULL when none) */
    int track_id;
} VizLens;

/* ids[n] (the last seq_len are used); track_id < 0: none. The last row equals the
 * model's own next-token distribution. */
gboolean viz_logit_lens(StemModel *m, const int32_t *ids, int n, int k, int track_id, VizLens *out, GError **error);
void viz_lens_clear(VizLens *l);

/* Softmax of logits[V] into probs[V] (double accumulation); returns the entropy in nats. */
double viz_softmax(const float *logits, int V, float *probs);

#endif
