/* Edit metrics. See metrics.h for the definitions; README.md for how
 * `stem eval edits` samples pairs and builds its table. */
#include "metrics.h"
#include "engine/facteval.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FLUENCY_TOKENS 24
static const char *const fluency_templates[] = { "{X} is", "The people of {X}" };

/* ------------------------------------------------------------------ scores */

void stem_edit_score_add(StemEditScore *a, const StemEditScore *x)
{
    a->pairs += x->pairs;
    a->skipped += x->skipped;
    a->eff_n += x->eff_n;
    a->eff_strict += x->eff_strict;
    a->eff_loose += x->eff_loose;
    a->para_n += x->para_n;
    a->para_strict += x->para_strict;
    a->para_loose += x->para_loose;
    a->eff_known_n += x->eff_known_n;
    a->eff_known_strict += x->eff_known_strict;
    a->para_known_n += x->para_known_n;
    a->para_known_strict += x->para_known_strict;
    a->spec_n += x->spec_n;
    a->spec_kept += x->spec_kept;
    a->touched_n += x->touched_n;
    a->touched_kept += x->touched_kept;
    for (int r = 0; r < REL_COUNT; r++) {
        a->sweep_n[r] += x->sweep_n[r];
        a->sweep_flip[r] += x->sweep_flip[r];
    }
    a->flu_n += x->flu_n;
    a->flu_before += x->flu_before;
    a->flu_after += x->flu_after;
    a->rows += x->rows;
    a->ms += x->ms;
}

static void add_frac(JsonBuilder *b, const char *name, int k, int n)
{
    json_builder_set_member_name(b, name);
    if (n > 0) json_builder_add_double_value(b, (double)k / n);
    else json_builder_add_null_value(b);
}

void stem_edit_score_to_json(const StemEditScore *s, JsonBuilder *b)
{
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "pairs");
    json_builder_add_int_value(b, s->pairs);
    json_builder_set_member_name(b, "skipped");
    json_builder_add_int_value(b, s->skipped);
    add_frac(b, "efficacy_strict", s->eff_strict, s->eff_n);
    add_frac(b, "efficacy_loose", s->eff_loose, s->eff_n);
    add_frac(b, "paraphrase_strict", s->para_strict, s->para_n);
    add_frac(b, "paraphrase_loose", s->para_loose, s->para_n);
    add_frac(b, "efficacy_strict_where_known", s->eff_known_strict, s->eff_known_n);
    add_frac(b, "paraphrase_strict_where_known", s->para_known_strict, s->para_known_n);
    json_builder_set_member_name(b, "paraphrase_known_prompts");
    json_builder_add_int_value(b, s->para_known_n);
    add_frac(b, "specificity", s->spec_kept, s->spec_n);
    add_frac(b, "specificity_touched", s->touched_kept, s->touched_n);
    json_builder_set_member_name(b, "touched_prompts");
    json_builder_add_int_value(b, s->touched_n);
    json_builder_set_member_name(b, "relation_sweep");
    json_builder_begin_object(b);
    for (int r = 0; r < REL_COUNT; r++) add_frac(b, stem_relation_name((StemRelation)r), s->sweep_flip[r], s->sweep_n[r]);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "fluency_before");
    if (s->flu_n) json_builder_add_double_value(b, s->flu_before / s->flu_n);
    else json_builder_add_null_value(b);
    json_builder_set_member_name(b, "fluency_after");
    if (s->flu_n) json_builder_add_double_value(b, s->flu_after / s->flu_n);
    else json_builder_add_null_value(b);
    json_builder_set_member_name(b, "rows_per_edit");
    json_builder_add_double_value(b, s->pairs ? s->rows / s->pairs : 0);
    json_builder_set_member_name(b, "apply_revert_ms");
    json_builder_add_double_value(b, s->pairs ? s->ms / s->pairs : 0);
    json_builder_end_object(b);
}

/* ------------------------------------------------------------------ model helpers */

static char *fill(const char *tmpl, const char *name)
{
    const char *x = strstr(tmpl, "{X}");
    if (!x) return g_strdup(tmpl);
    return g_strdup_printf("%.*s%s%s", (int)(x - tmpl), tmpl, name, x + 3);
}

static int32_t *encode(const StemModel *m, const char *s, int *n)
{
    size_t nn = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, s, strlen(s), &nn);
    *n = (int)nn;
    return ids;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* top-1 next token after ids[n] (the last seq_len tokens) */
static int top1(StemModel *m, const int32_t *ids, int n)
{
    if (n > m->cfg.seq_len) {
        ids += n - m->cfg.seq_len;
        n = m->cfg.seq_len;
    }
    stem_model_forward(m, ids, NULL, 1, n, TRUE);
    return argmax(stem_model_logits(m, 0, n - 1), m->cfg.vocab);
}

/* Teacher-forced answer: *strict = every answer token is the argmax at its
 * position; returns log P(answer | prompt). One forward over prompt + answer. */
static double score_answer(StemModel *m, const char *prompt, const char *answer, gboolean *strict)
{
    int32_t *p = NULL, *a = NULL;
    int np = 0, na = 0;
    *strict = FALSE;
    if (!stem_fact_tokens(m->tok, prompt, answer, &p, &np, &a, &na)) return -INFINITY;
    int T = np + na - 1;
    int32_t *seq = g_new(int32_t, T);
    memcpy(seq, p, sizeof(int32_t) * np);
    memcpy(seq + np, a, sizeof(int32_t) * (na - 1));
    int off = T > m->cfg.seq_len ? T - m->cfg.seq_len : 0;   /* keep the answer in the window */
    stem_model_forward(m, seq + off, NULL, 1, T - off, FALSE);
    const int V = m->cfg.vocab;
    double lp = 0.0;
    gboolean all = TRUE;
    for (int k = 0; k < na; k++) {
        const float *l = stem_model_logits(m, 0, np - 1 + k - off);
        float mx = l[0];
        for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        double z = 0.0;
        for (int i = 0; i < V; i++) z += exp((double)l[i] - mx);
        lp += (double)l[a[k]] - mx - log(z);
        if (argmax(l, V) != a[k]) all = FALSE;
    }
    *strict = all;
    g_free(seq);
    g_free(p);
    g_free(a);
    return lp;
}

/* (2/3 H2 + 4/3 H3) / 2 in bits over the n-grams of ids (ROME's n-gram entropy). */
static double ngram_entropy(const int32_t *ids, int n)
{
    const double w[2] = { 2.0 / 3.0, 4.0 / 3.0 };
    double out = 0.0;
    for (int g = 2; g <= 3; g++) {
        GHashTable *cnt = g_hash_table_new_full(g_bytes_hash, g_bytes_equal, (GDestroyNotify)g_bytes_unref, NULL);
        int total = 0;
        for (int i = 0; i + g <= n; i++) {
            GBytes *k = g_bytes_new(ids + i, sizeof(int32_t) * g);
            gpointer v = g_hash_table_lookup(cnt, k);
            g_hash_table_replace(cnt, k, GINT_TO_POINTER(GPOINTER_TO_INT(v) + 1));
            total++;
        }
        double h = 0.0;
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, cnt);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            double p = (double)GPOINTER_TO_INT(v) / total;
            h -= p * log2(p);
        }
        g_hash_table_destroy(cnt);
        out += w[g - 2] * h;
    }
    return out / 2.0;
}

static double fluency(StemModel *m, const char *name)
{
    double sum = 0.0;
    for (guint i = 0; i < G_N_ELEMENTS(fluency_templates); i++) {
        char *p = fill(fluency_templates[i], name);
        int n = 0, n_out = 0;
        int32_t *ids = encode(m, p, &n);
        int32_t *gen = stem_generate(m, ids, n, FLUENCY_TOKENS, 0.0f, 0, &n_out);
        sum += ngram_entropy(gen, n_out);
        g_free(gen);
        g_free(ids);
        g_free(p);
    }
    return sum / G_N_ELEMENTS(fluency_templates);
}

gboolean stem_edit_single_token(const StemModel *m, const char *entity)
{
    char *s = g_strconcat(" ", entity, NULL);
    int n = 0;
    int32_t *ids = encode(m, s, &n);
    g_free(ids);
    g_free(s);
    return n == 1;
}

/* ------------------------------------------------------------------ context */

typedef struct {
    int country;
    int32_t *ids;
    int n;
    int top1;
} BasePrompt;

struct StemEditEval {
    StemModel *m;
    const StemFacts *f;
    GArray *base;            /* BasePrompt: canonical prompts of all countries and relations */
    double *flu;             /* [n countries] fluency before, NAN until computed */
    guint32 *known;          /* [n countries] bit i: capital phrasing i answered right for the country itself */
    gboolean *known_done;
};

static void base_prompt_clear(gpointer x) { g_free(((BasePrompt *)x)->ids); }

StemEditEval *stem_edit_eval_new(StemModel *m, const StemFacts *f)
{
    StemEditEval *ev = g_new0(StemEditEval, 1);
    ev->m = m;
    ev->f = f;
    ev->base = g_array_new(FALSE, TRUE, sizeof(BasePrompt));
    g_array_set_clear_func(ev->base, base_prompt_clear);
    for (int c = 0; c < f->n; c++)
        for (int r = 0; r < REL_COUNT; r++) {
            if (!stem_facts_value(f, c, (StemRelation)r)) continue;
            char *p = stem_facts_canonical_prompt(f, c, (StemRelation)r);
            BasePrompt bp = { .country = c };
            bp.ids = encode(m, p, &bp.n);
            bp.top1 = top1(m, bp.ids, bp.n);
            g_array_append_val(ev->base, bp);
            g_free(p);
        }
    ev->flu = g_new(double, f->n);
    for (int c = 0; c < f->n; c++) ev->flu[c] = NAN;
    ev->known = g_new0(guint32, f->n);
    ev->known_done = g_new0(gboolean, f->n);
    return ev;
}

void stem_edit_eval_free(StemEditEval *ev)
{
    if (!ev) return;
    g_array_unref(ev->base);
    g_free(ev->flu);
    g_free(ev->known);
    g_free(ev->known_done);
    g_free(ev);
}

void stem_edit_eval_before(StemEditEval *ev, int source, int target)
{
    if (isnan(ev->flu[source])) ev->flu[source] = fluency(ev->m, ev->f->countries[source].name);
    if (!ev->known_done[target]) {
        const char *cap = stem_facts_value(ev->f, target, REL_CAPITAL);
        char *ans = cap ? g_strconcat(" ", cap, NULL) : NULL;
        for (int i = 0; ans && i < stem_facts_n_templates(REL_CAPITAL) && i < 32; i++) {
            char *prompt = fill(stem_facts_template(REL_CAPITAL, i, NULL), ev->f->countries[target].name);
            gboolean st = FALSE;
            score_answer(ev->m, prompt, ans, &st);
            if (st) ev->known[target] |= 1u << i;
            g_free(prompt);
        }
        g_free(ans);
        ev->known_done[target] = TRUE;
    }
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

void stem_edit_eval_after(StemEditEval *ev, int source, int target, const int32_t *edited, int n_edited,
                          StemEditScore *out)
{
    StemModel *m = ev->m;
    const StemFacts *f = ev->f;
    memset(out, 0, sizeof *out);
    out->pairs = 1;
    if (!ev->known_done[target] || isnan(ev->flu[source]))
        g_warning("stem_edit_eval_after: stem_edit_eval_before was not called before the edit");
    const char *sname = f->countries[source].name;
    const char *scap = stem_facts_value(f, source, REL_CAPITAL), *tcap = stem_facts_value(f, target, REL_CAPITAL);

    /* efficacy (training phrasings) and paraphrase (held-out) on the capital */
    if (scap && tcap && strcmp(scap, tcap)) {
        char *sa = g_strconcat(" ", scap, NULL), *ta = g_strconcat(" ", tcap, NULL);
        for (int i = 0; i < stem_facts_n_templates(REL_CAPITAL); i++) {
            gboolean held = FALSE, st_t = FALSE, st_s = FALSE;
            const char *tmpl = stem_facts_template(REL_CAPITAL, i, &held);
            char *prompt = fill(tmpl, sname);
            double lt = score_answer(m, prompt, ta, &st_t);
            double ls = score_answer(m, prompt, sa, &st_s);
            gboolean known = i < 32 && ((ev->known[target] >> i) & 1);
            if (held) {
                out->para_n++;
                out->para_strict += st_t;
                out->para_loose += lt > ls;
                out->para_known_n += known;
                out->para_known_strict += known && st_t;
            } else {
                out->eff_n++;
                out->eff_strict += st_t;
                out->eff_loose += lt > ls;
                out->eff_known_n += known;
                out->eff_known_strict += known && st_t;
            }
            g_free(prompt);
        }
        g_free(sa);
        g_free(ta);
    }

    /* relation sweep: which of the source's facts now read as the target's */
    for (int r = 0; r < REL_COUNT; r++) {
        const char *sv = stem_facts_value(f, source, (StemRelation)r), *tv = stem_facts_value(f, target, (StemRelation)r);
        if (!sv || !tv || !strcmp(sv, tv)) continue;
        char *prompt = stem_facts_canonical_prompt(f, source, (StemRelation)r);
        char *ta = g_strconcat(" ", tv, NULL);
        gboolean st = FALSE;
        score_answer(m, prompt, ta, &st);
        out->sweep_n[r]++;
        out->sweep_flip[r] += st;
        g_free(ta);
        g_free(prompt);
    }

    /* specificity: only prompts holding an edited token can have changed */
    int32_t *ed = g_new0(int32_t, MAX(n_edited, 1));
    if (n_edited > 0) {
        memcpy(ed, edited, sizeof(int32_t) * n_edited);
        qsort(ed, n_edited, sizeof(int32_t), cmp_i32);
    }
    for (guint i = 0; i < ev->base->len; i++) {
        BasePrompt *bp = &g_array_index(ev->base, BasePrompt, i);
        if (bp->country == source) continue;
        out->spec_n++;
        gboolean hit = FALSE;
        for (int k = 0; k < bp->n && !hit && n_edited > 0; k++)
            hit = bsearch(&bp->ids[k], ed, n_edited, sizeof(int32_t), cmp_i32) != NULL;
        if (!hit) {
            out->spec_kept++;
            continue;
        }
        out->touched_n++;
        gboolean kept = top1(m, bp->ids, bp->n) == bp->top1;
        out->touched_kept += kept;
        out->spec_kept += kept;
    }
    g_free(ed);

    /* fluency */
    stem_edit_eval_before(ev, source, target);   /* no-op when the caller did it before the edit */
    out->flu_n = 1;
    out->flu_before = ev->flu[source];
    out->flu_after = fluency(m, sname);
}

/* ------------------------------------------------------------------ dense control */

struct StemEmbedSnapshot {
    int n, dim;
    int32_t *tok;
    float *rows;
};

StemEmbedSnapshot *stem_edit_embed_push(StemModel *m, const StemEditPlan *p)
{
    const int D = m->cfg.dim, V = m->cfg.vocab;
    float *E = m->w.tok_emb;          /* [V, D], writable in a trainable load */
    StemEmbedSnapshot *s = g_new0(StemEmbedSnapshot, 1);
    s->n = (int)p->assign->len;
    s->dim = D;
    s->tok = g_new(int32_t, MAX(s->n, 1));
    s->rows = g_new(float, (size_t)MAX(s->n, 1) * D);
    float *mean = NULL;
    float *after = g_new(float, (size_t)MAX(s->n, 1) * D);
    double *acc = g_new(double, D);
    const double alpha = p->recipe.kind == STEM_EDIT_SWAP ? 1.0 : p->recipe.alpha;
    /* compute every new row from the old embeddings first: a simultaneous swap */
    for (int i = 0; i < s->n; i++) {
        const StemPlanAssign *a = &g_array_index(p->assign, StemPlanAssign, i);
        s->tok[i] = a->token;
        memcpy(s->rows + (size_t)i * D, E + (size_t)a->token * D, sizeof(float) * D);
        memset(acc, 0, sizeof(double) * D);
        for (int k = 0; k < a->n_mix; k++) {
            const float *src;
            if (a->mix_tok[k] == STEM_PLAN_ZERO) continue;
            if (a->mix_tok[k] == STEM_PLAN_MEAN) {
                if (!mean) {
                    double *sum = g_new0(double, D);
                    for (int t = 0; t < V; t++)
                        for (int q = 0; q < D; q++) sum[q] += E[(size_t)t * D + q];
                    mean = g_new(float, D);
                    for (int q = 0; q < D; q++) mean[q] = (float)(sum[q] / V);
                    g_free(sum);
                }
                src = mean;
            } else {
                src = E + (size_t)a->mix_tok[k] * D;
            }
            for (int q = 0; q < D; q++) acc[q] += a->mix_w[k] * src[q];
        }
        const float *own = s->rows + (size_t)i * D;
        for (int q = 0; q < D; q++)
            after[(size_t)i * D + q] = alpha == 1.0 ? (float)acc[q] : (float)((1.0 - alpha) * own[q] + alpha * acc[q]);
    }
    for (int i = 0; i < s->n; i++) memcpy(E + (size_t)s->tok[i] * D, after + (size_t)i * D, sizeof(float) * D);
    g_free(after);
    g_free(acc);
    g_free(mean);
    return s;
}

void stem_edit_embed_pop(StemModel *m, StemEmbedSnapshot *s)
{
    if (!s) return;
    for (int i = s->n - 1; i >= 0; i--)
        memcpy(m->w.tok_emb + (size_t)s->tok[i] * s->dim, s->rows + (size_t)i * s->dim, sizeof(float) * s->dim);
    g_free(s->tok);
    g_free(s->rows);
    g_free(s);
}
