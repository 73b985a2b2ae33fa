/* Fact recall: does the model continue "The capital of Spain is" with " Madrid"?
 * Shared by `stem train`'s summary, `stem eval facts` and the edit metrics. */
#ifndef STEM_ENGINE_FACTEVAL_H
#define STEM_ENGINE_FACTEVAL_H

#include <glib.h>
#include "facts.h"
#include "model.h"

typedef enum {
    STEM_PHRASING_CANONICAL,   /* "The capital of {X} is" etc.: one prompt per fact */
    STEM_PHRASING_TRAIN,       /* every training phrasing */
    STEM_PHRASING_HELD_OUT,    /* phrasings never seen in training */
} StemPhrasing;

typedef struct {
    int total;        /* prompts evaluated */
    int top1;         /* next token == first answer token */
    int full;         /* greedy continuation reproduces the whole answer */
    double p_sum;     /* sum of P(first answer token) */
} StemFactScore;

/* data dir's countries.csv */
StemFacts *stem_facts_load_default(GError **error);

/* Split prompt+answer into prompt ids and answer ids (the answer's tokens as
 * they occur after the prompt). FALSE when the prompt's tokens are not a prefix
 * (cannot happen for answers starting with a space). g_free both arrays. */
gboolean stem_fact_tokens(const StemTokenizer *tok, const char *prompt, const char *answer, int32_t **pids,
                          int *np, int32_t **aids, int *na);

/* Score one prompt: sets *top1, *full and returns P(first answer token). */
double stem_eval_prompt(StemModel *m, const char *prompt, const char *answer, gboolean *top1, gboolean *full);

/* Evaluate relation r (or -1 for all) in the given phrasing set. */
void stem_eval_facts(StemModel *m, const StemFacts *f, int relation, StemPhrasing ph, StemFactScore *out);

#endif
