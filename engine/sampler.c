/* Top-k and sampling. Generation re-runs the forward over the window (no KV
 * cache yet): prompts here are short and the model small, so this stays in the
 * millisecond range; a KV cache is the next step for long generations. */
#include "sampler.h"
#include "tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void stem_next_probs(StemModel *m, const int32_t *ids, int n, float *probs)
{
    const int V = m->cfg.vocab;
    if (n > m->cfg.seq_len) {
        ids += n - m->cfg.seq_len;
        n = m->cfg.seq_len;
    }
    stem_model_forward(m, ids, NULL, 1, n, TRUE);
    const float *l = stem_model_logits(m, 0, n - 1);
    float mx = l[0];
    for (int i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++) { probs[i] = expf(l[i] - mx); sum += probs[i]; }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < V; i++) probs[i] *= inv;
}

int stem_topk_of(const float *probs, int V, int k, StemTopk *out)
{
    if (k <= 0) return 0;
    if (k > V) k = V;
    int n = 0;
    for (int i = 0; i < V; i++) {
        float p = probs[i];
        if (n == k && p <= out[n - 1].prob) continue;
        int pos = n < k ? n++ : k - 1;
        /* insertion: strictly greater moves up, so equal probs keep the lower id first */
        while (pos > 0 && out[pos - 1].prob < p) { out[pos] = out[pos - 1]; pos--; }
        out[pos].id = i;
        out[pos].prob = p;
    }
    return n;
}

int stem_topk(StemModel *m, const int32_t *ids, int n, int k, StemTopk *out)
{
    float *probs = g_new(float, m->cfg.vocab);
    stem_next_probs(m, ids, n, probs);
    int r = stem_topk_of(probs, m->cfg.vocab, k, out);
    g_free(probs);
    return r;
}

int32_t *stem_generate(StemModel *m, const int32_t *ids, int n, int n_new, float temperature, guint64 seed,
                       int *n_out)
{
    const int V = m->cfg.vocab;
    int32_t *all = g_new(int32_t, (size_t)n + n_new);
    memcpy(all, ids, sizeof(int32_t) * (size_t)n);
    float *probs = g_new(float, V);
    GRand *r = g_rand_new_with_seed((guint32)(seed ^ (seed >> 32)));
    int made = 0;
    for (; made < n_new; made++) {
        stem_next_probs(m, all, n + made, probs);
        int next = 0;
        if (temperature <= 0) {
            for (int i = 1; i < V; i++) if (probs[i] > probs[next]) next = i;
        } else {
            /* softmax(log p / T) in log space: subtracting the max keeps low
             * temperatures from underflowing to all zeros (which tends to greedy) */
            double mx = -INFINITY;
            for (int i = 0; i < V; i++) {
                double lp = probs[i] > 0 ? log(probs[i]) / temperature : -INFINITY;
                if (lp > mx) mx = lp;
            }
            double sum = 0.0;
            for (int i = 0; i < V; i++) {
                double w = probs[i] > 0 ? exp(log(probs[i]) / temperature - mx) : 0.0;
                probs[i] = (float)w;
                sum += w;
            }
            double u = g_rand_double(r) * sum, acc = 0.0;
            next = -1;
            for (int i = 0; i < V; i++) {
                if (probs[i] <= 0) continue;
                acc += probs[i];
                next = i;
                if (acc >= u) break;
            }
        }
        all[n + made] = next;
        if (next == STEM_TOK_EOS) { made++; break; }
    }
    g_rand_free(r);
    g_free(probs);
    int32_t *out = g_new(int32_t, made > 0 ? made : 1);
    memcpy(out, all + n, sizeof(int32_t) * (size_t)made);
    g_free(all);
    *n_out = made;
    return out;
}
