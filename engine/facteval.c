/* Fact recall metrics. */
#include "facteval.h"
#include "corpus.h"
#include "sampler.h"
#include "tokenizer.h"

#include <string.h>

StemFacts *stem_facts_load_default(GError **error)
{
    const char *dir = stem_data_dir();
    if (!dir) {
        g_set_error(error, g_quark_from_static_string("stem-facts-error"), 1,
                    "data files not found (set STEM_DATA_DIR to the folder with countries.csv)");
        return NULL;
    }
    char *p = g_build_filename(dir, "countries.csv", NULL);
    StemFacts *f = stem_facts_load(p, error);
    g_free(p);
    return f;
}

gboolean stem_fact_tokens(const StemTokenizer *tok, const char *prompt, const char *answer, int32_t **pids,
                          int *np, int32_t **aids, int *na)
{
    size_t n1 = 0, n2 = 0;
    int32_t *p = stem_tokenizer_encode(tok, prompt, strlen(prompt), &n1);
    char *both = g_strconcat(prompt, answer, NULL);
    int32_t *b = stem_tokenizer_encode(tok, both, strlen(both), &n2);
    g_free(both);
    if (n2 <= n1 || memcmp(p, b, n1 * sizeof(int32_t)) != 0) {
        g_free(p);
        g_free(b);
        return FALSE;
    }
    *pids = p;
    *np = (int)n1;
    *na = (int)(n2 - n1);
    *aids = g_memdup2(b + n1, sizeof(int32_t) * (n2 - n1));
    g_free(b);
    return TRUE;
}

double stem_eval_prompt(StemModel *m, const char *prompt, const char *answer, gboolean *top1, gboolean *full)
{
    int32_t *pids, *aids;
    int np, na;
    *top1 = *full = FALSE;
    if (!stem_fact_tokens(m->tok, prompt, answer, &pids, &np, &aids, &na)) return 0.0;
    float *probs = g_new(float, m->cfg.vocab);
    stem_next_probs(m, pids, np, probs);
    double p = probs[aids[0]];
    int best = 0;
    for (int i = 1; i < m->cfg.vocab; i++) if (probs[i] > probs[best]) best = i;
    *top1 = best == aids[0];
    if (*top1) {
        int n_out = 0;
        int32_t *gen = stem_generate(m, pids, np, na, 0.0f, 0, &n_out);
        *full = n_out == na && memcmp(gen, aids, sizeof(int32_t) * (size_t)na) == 0;
        g_free(gen);
    }
    g_free(probs);
    g_free(pids);
    g_free(aids);
    return p;
}

void stem_eval_facts(StemModel *m, const StemFacts *f, int relation, StemPhrasing ph, StemFactScore *out)
{
    memset(out, 0, sizeof *out);
    GPtrArray *prompts;
    if (ph == STEM_PHRASING_CANONICAL) {
        prompts = g_ptr_array_new();
        for (int r = 0; r < REL_COUNT; r++) {
            if (relation >= 0 && r != relation) continue;
            for (int c = 0; c < f->n; c++) {
                const char *v = stem_facts_value(f, c, (StemRelation)r);
                if (!v) continue;
                char *prompt = stem_facts_canonical_prompt(f, c, (StemRelation)r);
                char *ans = g_strconcat(" ", v, NULL);
                gboolean t1, full;
                double p = stem_eval_prompt(m, prompt, ans, &t1, &full);
                out->total++;
                out->top1 += t1;
                out->full += full;
                out->p_sum += p;
                g_free(prompt);
                g_free(ans);
            }
        }
        g_ptr_array_unref(prompts);
        return;
    }
    prompts = stem_facts_prompts(f, relation, ph == STEM_PHRASING_TRAIN, ph == STEM_PHRASING_HELD_OUT);
    for (guint i = 0; i < prompts->len; i++) {
        StemFactPrompt *fp = g_ptr_array_index(prompts, i);
        gboolean t1, full;
        double p = stem_eval_prompt(m, fp->prompt, fp->answer, &t1, &full);
        out->total++;
        out->top1 += t1;
        out->full += full;
        out->p_sum += p;
    }
    g_ptr_array_unref(prompts);
}
