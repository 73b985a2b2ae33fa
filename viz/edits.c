/* Top-k shift and layer localization of edits (edits.h). */
#include "edits.h"
#include "geometry.h"
#include "lens.h"

#include "engine/facteval.h"

#include <math.h>
#include <string.h>

VizEditRows viz_edit_rows_from_plan(const StemEditPlan *p)
{
    VizEditRows r = { p->n_rows, p->layers, p->tokens, p->after };
    return r;
}

/* Push a subset of rows (mask over model layers) onto the overlay. */
StemOverlaySnapshot *viz_edit_push(StemModel *m, const VizEditRows *e, uint64_t layer_mask)
{
    const int F = m->cfg.ffn_dim;
    int n = 0;
    for (int i = 0; i < e->n; i++) n += (int)((layer_mask >> e->layers[i]) & 1);
    int32_t *ly = g_new(int32_t, MAX(n, 1)), *tk = g_new(int32_t, MAX(n, 1));
    float *af = g_new(float, (size_t)MAX(n, 1) * F);
    int k = 0;
    for (int i = 0; i < e->n; i++) {
        if (!((layer_mask >> e->layers[i]) & 1)) continue;
        ly[k] = e->layers[i];
        tk[k] = e->tokens[i];
        memcpy(af + (size_t)k * F, e->after + (size_t)i * F, sizeof(float) * F);
        k++;
    }
    /* stem_edit_plan_push reads only the rows of a plan */
    StemEditPlan shell;
    memset(&shell, 0, sizeof shell);
    shell.ffn = F;
    shell.n_rows = n;
    shell.layers = ly;
    shell.tokens = tk;
    shell.after = af;
    StemOverlaySnapshot *s = stem_edit_plan_push(m, &shell);
    g_free(ly);
    g_free(tk);
    g_free(af);
    return s;
}

static gboolean check_rows(StemModel *m, const VizEditRows *e, GError **error)
{
    for (int i = 0; i < e->n; i++) {
        int l = e->layers[i];
        if (l < 0 || l >= m->cfg.n_layers || !stem_config_is_stem(&m->cfg, l) || e->tokens[i] < 0 ||
            e->tokens[i] >= m->cfg.vocab) {
            g_set_error(error, VIZ_ERROR, 30, "edit row %d (layer %d, token %d) does not fit the model", i, l,
                        e->tokens[i]);
            return FALSE;
        }
    }
    return TRUE;
}

double viz_kl(const float *p, const float *q, int V)
{
    double kl = 0;
    for (int i = 0; i < V; i++) {
        if (p[i] <= 0) continue;
        double qq = q[i] > 1e-30f ? q[i] : 1e-30;
        kl += p[i] * (log((double)p[i]) - log(qq));
    }
    return kl > 0 ? kl : 0;
}

double viz_total_variation(const float *p, const float *q, int V)
{
    double s = 0;
    for (int i = 0; i < V; i++) s += fabs((double)p[i] - q[i]);
    return 0.5 * s;
}

gboolean viz_topk_shift(StemModel *m, const VizEditRows *edit, const int32_t *orig_ids, int n_orig,
                        const int32_t *written_ids, int n_written, int k, int src_answer, int tgt_answer,
                        VizShift *out, GError **error)
{
    memset(out, 0, sizeof *out);
    const int V = m->cfg.vocab;
    if (n_orig < 1) {
        g_set_error(error, VIZ_ERROR, 31, "the prompt is empty");
        return FALSE;
    }
    if (!check_rows(m, edit, error)) return FALSE;
    if (k < 1) k = 1;
    if (k > V) k = V;
    out->k = k;
    out->vocab = V;
    out->src_answer = src_answer >= 0 && src_answer < V ? src_answer : -1;
    out->tgt_answer = tgt_answer >= 0 && tgt_answer < V ? tgt_answer : -1;
    for (int p = 0; p < VIZ_SHIFT_N; p++) {
        out->top[p] = g_new0(StemTopk, k);
        out->p_src[p] = out->p_tgt[p] = NAN;
    }
    out->probs[0] = g_new(float, V);
    stem_next_probs(m, orig_ids, n_orig, out->probs[0]);
    if (written_ids && n_written > 0) {
        out->probs[1] = g_new(float, V);
        stem_next_probs(m, written_ids, n_written, out->probs[1]);
    }
    out->probs[2] = g_new(float, V);
    StemOverlaySnapshot *s = viz_edit_push(m, edit, ~0ull);
    stem_next_probs(m, orig_ids, n_orig, out->probs[2]);
    stem_edit_plan_pop(m, s);
    for (int p = 0; p < VIZ_SHIFT_N; p++) {
        if (!out->probs[p]) continue;
        stem_topk_of(out->probs[p], V, k, out->top[p]);
        if (out->src_answer >= 0) out->p_src[p] = out->probs[p][out->src_answer];
        if (out->tgt_answer >= 0) out->p_tgt[p] = out->probs[p][out->tgt_answer];
    }
    out->prob_moved = viz_total_variation(out->probs[0], out->probs[2], V);
    out->kl_orig_edited = viz_kl(out->probs[0], out->probs[2], V);
    if (out->probs[1]) {
        out->kl_written_edited = viz_kl(out->probs[1], out->probs[2], V);
        out->tv_written_edited = viz_total_variation(out->probs[1], out->probs[2], V);
    } else {
        out->kl_written_edited = out->tv_written_edited = NAN;
    }
    return TRUE;
}

void viz_shift_clear(VizShift *s)
{
    for (int p = 0; p < VIZ_SHIFT_N; p++) {
        g_free(s->top[p]);
        g_free(s->probs[p]);
    }
    memset(s, 0, sizeof *s);
}

/* P(answers) and the argmax after ids with the rows of layer_mask pushed */
static void measure(StemModel *m, const VizEditRows *e, uint64_t mask, const int32_t *ids, int n, int src, int tgt,
                    float *probs, double *ps, double *pt, int *top1)
{
    StemOverlaySnapshot *s = mask ? viz_edit_push(m, e, mask) : NULL;
    stem_next_probs(m, ids, n, probs);
    if (s) stem_edit_plan_pop(m, s);
    *ps = src >= 0 ? probs[src] : NAN;
    *pt = tgt >= 0 ? probs[tgt] : NAN;
    int best = 0;
    for (int i = 1; i < m->cfg.vocab; i++)
        if (probs[i] > probs[best]) best = i;
    *top1 = best;
}

gboolean viz_localize(StemModel *m, const VizEditRows *edit, const int32_t *ids, int n, int src_answer,
                      int tgt_answer, VizLocalize *out, GError **error)
{
    memset(out, 0, sizeof *out);
    const int V = m->cfg.vocab;
    if (n < 1) {
        g_set_error(error, VIZ_ERROR, 31, "the prompt is empty");
        return FALSE;
    }
    if (!check_rows(m, edit, error)) return FALSE;
    if (src_answer >= V) src_answer = -1;
    if (tgt_answer >= V) tgt_answer = -1;
    uint64_t mask = 0;
    for (int i = 0; i < edit->n; i++) mask |= 1ull << edit->layers[i];
    out->layers = g_new(int, MAX(m->cfg.n_layers, 1));
    out->rows_per_layer = g_new0(int, MAX(m->cfg.n_layers, 1));
    for (int l = 0; l < m->cfg.n_layers; l++)
        if ((mask >> l) & 1) {
            for (int i = 0; i < edit->n; i++) out->rows_per_layer[out->n] += edit->layers[i] == l;
            out->layers[out->n++] = l;
        }
    int L = MAX(out->n, 1);
    out->p_tgt_single = g_new(double, L);
    out->p_src_single = g_new(double, L);
    out->p_tgt_cumul = g_new(double, L);
    out->p_src_cumul = g_new(double, L);
    out->top1_single = g_new(int, L);
    out->top1_cumul = g_new(int, L);
    float *probs = g_new(float, V);
    measure(m, edit, 0, ids, n, src_answer, tgt_answer, probs, &out->p_src_base, &out->p_tgt_base, &out->top1_base);
    measure(m, edit, mask, ids, n, src_answer, tgt_answer, probs, &out->p_src_all, &out->p_tgt_all, &out->top1_all);
    uint64_t cum = 0;
    for (int i = 0; i < out->n; i++) {
        uint64_t one = 1ull << out->layers[i];
        cum |= one;
        measure(m, edit, one, ids, n, src_answer, tgt_answer, probs, &out->p_src_single[i], &out->p_tgt_single[i],
                &out->top1_single[i]);
        measure(m, edit, cum, ids, n, src_answer, tgt_answer, probs, &out->p_src_cumul[i], &out->p_tgt_cumul[i],
                &out->top1_cumul[i]);
    }
    g_free(probs);
    return TRUE;
}

void viz_localize_clear(VizLocalize *l)
{
    g_free(l->layers);
    g_free(l->rows_per_layer);
    g_free(l->p_tgt_single);
    g_free(l->p_src_single);
    g_free(l->p_tgt_cumul);
    g_free(l->p_src_cumul);
    g_free(l->top1_single);
    g_free(l->top1_cumul);
    memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------------------ prompts and answers */

char *viz_written_prompt(const char *prompt, const char *source, const char *target)
{
    if (!prompt || !source || !*source || !target || !strstr(prompt, source)) return NULL;
    GString *s = g_string_new(NULL);
    const char *p = prompt, *hit;
    size_t ls = strlen(source);
    while ((hit = strstr(p, source))) {
        g_string_append_len(s, p, hit - p);
        g_string_append(s, target);
        p = hit + ls;
    }
    g_string_append(s, p);
    return g_string_free(s, FALSE);
}

gboolean viz_fact_answers(const StemFacts *f, const char *prompt, const char *source, const char *target,
                          char **src_answer, char **tgt_answer, int *relation)
{
    *src_answer = *tgt_answer = NULL;
    if (!f || !prompt || !source || !target) return FALSE;
    int cs = stem_facts_find(f, source), ct = stem_facts_find(f, target);
    if (cs < 0 || ct < 0) return FALSE;
    char *want = g_strstrip(g_strdup(prompt));
    gboolean found = FALSE;
    for (int r = 0; r < REL_COUNT && !found; r++)
        for (int i = 0; i < stem_facts_n_templates((StemRelation)r) && !found; i++) {
            const char *tpl = stem_facts_template((StemRelation)r, i, NULL);
            char *p = viz_written_prompt(tpl, "{X}", source);
            if (p && !strcmp(g_strstrip(p), want)) {
                const char *vs = stem_facts_value(f, cs, (StemRelation)r), *vt = stem_facts_value(f, ct, (StemRelation)r);
                if (vs && vt) {
                    *src_answer = g_strconcat(" ", vs, NULL);
                    *tgt_answer = g_strconcat(" ", vt, NULL);
                    if (relation) *relation = r;
                    found = TRUE;
                }
            }
            g_free(p);
        }
    g_free(want);
    return found;
}

int viz_answer_first_token(const StemTokenizer *tok, const char *prompt, const char *answer)
{
    if (!tok || !prompt || !answer || !*answer) return -1;
    int32_t *p = NULL, *a = NULL;
    int np = 0, na = 0;
    int id = -1;
    if (stem_fact_tokens(tok, prompt, answer, &p, &np, &a, &na) && na > 0) id = a[0];
    g_free(p);
    g_free(a);
    return id;
}
