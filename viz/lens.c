/* Logit lens (lens.h). */
#include "lens.h"
#include "geometry.h"

#include "engine/sampler.h"
#include "kernels/cpu/ops.h"

#include <math.h>
#include <string.h>

double viz_softmax(const float *logits, int V, float *probs)
{
    float mx = logits[0];
    for (int i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    double lse = log(sum), ent = 0;
    for (int i = 0; i < V; i++) {
        double lp = (double)logits[i] - mx - lse;
        double p = exp(lp);
        probs[i] = (float)p;
        if (p > 0) ent -= p * lp;
    }
    return ent;
}

gboolean viz_logit_lens(StemModel *m, const int32_t *ids, int n, int k, int track_id, VizLens *out, GError **error)
{
    memset(out, 0, sizeof *out);
    const StemConfig *c = &m->cfg;
    const int V = c->vocab, D = c->dim;
    if (n < 1) {
        g_set_error(error, VIZ_ERROR, 20, "the prompt is empty");
        return FALSE;
    }
    if (k < 1) k = 1;
    if (k > V) k = V;
    if (n > c->seq_len) {
        ids += n - c->seq_len;
        n = c->seq_len;
    }
    stem_model_forward(m, ids, NULL, 1, n, TRUE);
    out->n_rows = c->n_layers + 1;
    out->k = k;
    out->track_id = track_id;
    out->ids = g_new(int32_t, (size_t)out->n_rows * k);
    out->probs = g_new(float, (size_t)out->n_rows * k);
    out->entropy = g_new(float, out->n_rows);
    if (track_id >= 0 && track_id < V) out->track = g_new(float, out->n_rows);
    float *y = g_new(float, D), *logits = g_new(float, V), *probs = g_new(float, V), rstd;
    StemTopk *top = g_new(StemTopk, k);
    for (int r = 0; r < out->n_rows; r++) {
        const float *res = stem_model_residual(m, r - 1, 0, n - 1);
        op_rmsnorm_forward(y, &rstd, res, m->w.norm, 1, D, c->norm_eps);
        op_matmul_forward(logits, y, m->w.output, 1, D, V, 0);
        out->entropy[r] = (float)viz_softmax(logits, V, probs);
        int got = stem_topk_of(probs, V, k, top);
        for (int i = 0; i < k; i++) {
            out->ids[(size_t)r * k + i] = i < got ? top[i].id : -1;
            out->probs[(size_t)r * k + i] = i < got ? top[i].prob : 0.0f;
        }
        if (out->track) out->track[r] = probs[track_id];
    }
    g_free(top);
    g_free(y);
    g_free(logits);
    g_free(probs);
    return TRUE;
}

void viz_lens_clear(VizLens *l)
{
    g_free(l->ids);
    g_free(l->probs);
    g_free(l->entropy);
    g_free(l->track);
    memset(l, 0, sizeof *l);
}
