/* Analyses of knowledge edits on a loaded model: the top-k shift (paper Fig. 7:
 * original prompt / target written in / edited model on the original prompt)
 * and layer localization (the edit applied one layer at a time and
 * cumulatively). Edits are given as rows (any plan or patch set); they are
 * pushed onto the model's overlay for the measurement and popped, so the model
 * is left exactly as it was. */
#ifndef STEM_VIZ_EDITS_H
#define STEM_VIZ_EDITS_H

#include <glib.h>
#include <stdint.h>
#include "editdb/planner.h"
#include "engine/facts.h"
#include "engine/model.h"
#include "engine/sampler.h"

/* Rows an edit writes: (model layer, token) -> after[ffn]. Not owned. */
typedef struct {
    int n;
    const int32_t *layers;       /* [n] model layer indices (STEM layers) */
    const int32_t *tokens;       /* [n] */
    const float *after;          /* [n, ffn] */
} VizEditRows;

VizEditRows viz_edit_rows_from_plan(const StemEditPlan *p);
/* Set the rows of layers in layer_mask (~0 = all) as overrides in m->tables;
 * stem_edit_plan_pop() restores what they replaced exactly. */
StemOverlaySnapshot *viz_edit_push(StemModel *m, const VizEditRows *e, uint64_t layer_mask);

/* ------------------------------------------------------------------ top-k shift */

enum { VIZ_SHIFT_ORIGINAL, VIZ_SHIFT_WRITTEN, VIZ_SHIFT_EDITED, VIZ_SHIFT_N };

typedef struct {
    int k, vocab;
    StemTopk *top[VIZ_SHIFT_N];  /* [k] each, most likely first */
    float *probs[VIZ_SHIFT_N];   /* [vocab] full next-token distributions */
    int src_answer, tgt_answer;  /* first tokens of the source's / target's answers; -1 = unknown */
    double p_src[VIZ_SHIFT_N], p_tgt[VIZ_SHIFT_N];   /* NAN when unknown */
    double prob_moved;           /* total variation distance, original vs edited: 1/2 sum |p - q| */
    double tv_written_edited;    /* total variation, written-in vs edited */
    double kl_written_edited;    /* KL(written || edited), nats: how far the edit is from writing it in */
    double kl_orig_edited;       /* KL(original || edited), nats */
} VizShift;

/* written_ids may be NULL (then that panel is left empty: top[1] has 0 entries,
 * probs[1] NULL and the written-in measures NAN). */
gboolean viz_topk_shift(StemModel *m, const VizEditRows *edit, const int32_t *orig_ids, int n_orig,
                        const int32_t *written_ids, int n_written, int k, int src_answer, int tgt_answer,
                        VizShift *out, GError **error);
void viz_shift_clear(VizShift *s);

/* KL(p || q) in nats over V entries (q floored at 1e-30). */
double viz_kl(const float *p, const float *q, int V);
double viz_total_variation(const float *p, const float *q, int V);

/* ------------------------------------------------------------------ localization */

typedef struct {
    int n;                       /* layers the edit touches */
    int *layers;                 /* [n] model layer indices, ascending */
    int *rows_per_layer;         /* [n] */
    double p_tgt_base, p_src_base;      /* no edit */
    double p_tgt_all, p_src_all;        /* every layer edited */
    double *p_tgt_single, *p_src_single; /* [n] only layers[i] edited */
    double *p_tgt_cumul, *p_src_cumul;   /* [n] layers[0..i] edited */
    int *top1_single, *top1_cumul;       /* [n] most likely next token */
    int top1_base, top1_all;
} VizLocalize;

gboolean viz_localize(StemModel *m, const VizEditRows *edit, const int32_t *ids, int n, int src_answer,
                      int tgt_answer, VizLocalize *out, GError **error);
void viz_localize_clear(VizLocalize *l);

/* ------------------------------------------------------------------ prompts and answers */

/* The prompt with every occurrence of source replaced by target (NULL when the
 * prompt does not contain source). g_free. */
char *viz_written_prompt(const char *prompt, const char *source, const char *target);
/* When prompt is a fact phrasing about source ("The capital of Spain is"), the
 * answers for source and target (" Madrid", " Paris"; g_free) and the relation.
 * FALSE when the prompt is not one of the phrasings or a country is unknown. */
gboolean viz_fact_answers(const StemFacts *f, const char *prompt, const char *source, const char *target,
                          char **src_answer, char **tgt_answer, int *relation);
/* First token of answer as it continues prompt; -1 when it cannot be split. */
int viz_answer_first_token(const StemTokenizer *tok, const char *prompt, const char *answer);

#endif
