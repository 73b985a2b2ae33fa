/* Edit metrics: does the edit do what it says, and what else does it move?
 *
 * For a swap of source country S onto target country T (rows of S's tokens
 * replaced by T's), measured against the unedited model:
 *  - efficacy: on S's capital prompts in the TRAINING phrasings, T's capital is
 *    the greedy answer (strict: every answer token is the argmax, teacher
 *    forced, so multi-token answers count fully), and log P(T's capital) >
 *    log P(S's capital) (loose).
 *  - paraphrase: the same on the HELD-OUT capital phrasings (never in training).
 *    Both also "where known": only phrasings in which the unedited model gives
 *    the target's capital for the target itself (a model that does not answer
 *    "Paris" to "The seat of government of France is" cannot be edited into
 *    answering it for Spain: the edit moves what the model knows, no more).
 *  - specificity: the top-1 next token of every other country's canonical prompt
 *    (all relations) is unchanged. A table edit only changes rows of the edited
 *    tokens, so a prompt without any edited token is bit-identical and counts as
 *    kept without being re-run; `touched` reports the prompts that do contain an
 *    edited token (shared sub-words) and how many of those kept their top-1.
 *  - relation sweep: for each relation where S and T differ, whether S's
 *    canonical prompt now answers T's value (strict): the blast radius of moving
 *    all of a token's facts at once.
 *  - fluency: n-gram entropy (2/3 H2 + 4/3 H3)/2, in bits over token ids, of greedy
 *    continuations of prompts about S, before and after.
 * Everything is deterministic for a model and a pair. */
#ifndef STEM_EDITDB_METRICS_H
#define STEM_EDITDB_METRICS_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include "engine/facts.h"
#include "engine/model.h"
#include "planner.h"

typedef struct {
    int pairs, skipped;                 /* pairs measured; pairs the strategy could not plan */
    int eff_n, eff_strict, eff_loose;
    int para_n, para_strict, para_loose;
    /* the same, only on phrasings where the unedited model answers the TARGET's
     * own prompt correctly (strict): what the edit can be expected to reach,
     * given how well the model itself generalizes to that phrasing */
    int eff_known_n, eff_known_strict;
    int para_known_n, para_known_strict;
    int spec_n, spec_kept;              /* all other countries' canonical prompts */
    int touched_n, touched_kept;        /* the subset that contains an edited token */
    int sweep_n[REL_COUNT], sweep_flip[REL_COUNT];
    int flu_n;
    double flu_before, flu_after;       /* sums */
    double rows;                        /* sum of rows (or embedding rows) written */
    double ms;                          /* sum of apply + revert wall time, ms */
} StemEditScore;

void stem_edit_score_add(StemEditScore *acc, const StemEditScore *x);
/* {"pairs":…, "efficacy_strict":…, …} fractions (null where n = 0) */
void stem_edit_score_to_json(const StemEditScore *s, JsonBuilder *b);

/* A measuring context for one model in its "before" state: caches the baseline
 * top-1 of every canonical prompt (specificity) and per-country fluency. Create
 * it while the model is unedited (or in the state edits are measured against). */
typedef struct StemEditEval StemEditEval;
StemEditEval *stem_edit_eval_new(StemModel *m, const StemFacts *f);
void stem_edit_eval_free(StemEditEval *ev);

/* Before the edit: per-pair baseline (fluency of S, which capital phrasings the
 * model answers for T). Call in the before state. */
void stem_edit_eval_before(StemEditEval *ev, int source, int target);
/* After the edit (the model now edited): measure pair (source, target) into out
 * (which is cleared). edited[n_edited]: the token ids whose rows changed. */
void stem_edit_eval_after(StemEditEval *ev, int source, int target, const int32_t *edited, int n_edited,
                          StemEditScore *out);

/* Dense control: apply a token-only plan to the input embedding rows of a
 * writable (trainable-loaded) model, remembering what it replaced. */
typedef struct StemEmbedSnapshot StemEmbedSnapshot;
StemEmbedSnapshot *stem_edit_embed_push(StemModel *m, const StemEditPlan *p);
void stem_edit_embed_pop(StemModel *m, StemEmbedSnapshot *s);

/* True when the entity's mid-sentence spelling " X" is one token. */
gboolean stem_edit_single_token(const StemModel *m, const char *entity);

#endif
