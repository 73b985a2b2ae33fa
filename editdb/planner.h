/* Recipes and the planner: what the user asks for ("give Spain France's rows")
 * turned into concrete (layer, token) -> row assignments before anything is
 * written.
 *
 * A recipe names entities as TEXT ("Spain", "United Kingdom"). The planner finds
 * the entity's token variants (" Spain" mid-sentence, "Spain" at line start,
 * casing variants that the tokenizer learned as whole words), pairs each source
 * variant with the matching target variant, maps source positions onto target
 * rows with a strategy, and computes the new rows from the model's EFFECTIVE
 * table (base + current overlay) for every selected STEM layer.
 *
 * A plan is pure data: planning never touches the model's overlay. Preview =
 * stem_edit_plan_push() (overrides set in memory, previous state saved) and
 * stem_edit_plan_pop() (restored exactly). The edit database applies the same
 * plan durably (editdb.h). See editdb/README.md for the strategy table. */
#ifndef STEM_EDITDB_PLANNER_H
#define STEM_EDITDB_PLANNER_H

#include <glib.h>
#include <stdint.h>
#include <json-glib/json-glib.h>
#include "engine/facts.h"
#include "engine/model.h"

#define STEM_EDIT_ERROR (stem_edit_error_quark())
GQuark stem_edit_error_quark(void);
typedef enum {
    STEM_EDIT_ERROR_ENTITY,     /* unknown or empty entity, source == target */
    STEM_EDIT_ERROR_LAYERS,     /* bad layer list, layer out of range or not a STEM layer */
    STEM_EDIT_ERROR_ALPHA,      /* alpha outside [0, 1] or given where it has no meaning */
    STEM_EDIT_ERROR_STRATEGY,   /* unknown strategy, or no variant the strategy can map */
    STEM_EDIT_ERROR_NOTHING,    /* the plan changes no row */
    STEM_EDIT_ERROR_MODEL,      /* the model cannot be edited (no tokenizer, no STEM layer) */
    STEM_EDIT_ERROR_RECIPE,     /* a stored recipe that does not parse */
} StemEditError;

typedef enum { STEM_EDIT_SWAP, STEM_EDIT_BLEND, STEM_EDIT_ABLATE } StemEditKind;

/* Length-mismatch strategies (DESIGN.md §1, paper Fig. 3). ns / nt = source /
 * target token counts of one variant. Equal lengths: every strategy but
 * `average` maps position i to target token i. */
typedef enum {
    STEM_STRAT_AUTO,          /* one-to-one when ns == nt, else average */
    STEM_STRAT_ONE_TO_ONE,    /* ns == nt only */
    STEM_STRAT_LEFT_PAD,      /* ns >= nt: pad rows first, target rows right-aligned */
    STEM_STRAT_RIGHT_PAD,     /* ns >= nt: target rows first, then pad rows */
    STEM_STRAT_COPY,          /* ns >= nt: target rows repeated cyclically */
    STEM_STRAT_SUBSET_FIRST,  /* ns <= nt: the first ns target rows */
    STEM_STRAT_SUBSET_LAST,   /* ns <= nt: the last ns target rows */
    STEM_STRAT_AVERAGE,       /* any: the mean of all target rows at every position */
    STEM_STRAT_COUNT
} StemSwapStrategy;

typedef enum { STEM_ABLATE_ZERO, STEM_ABLATE_MEAN } StemAblateMode;

/* Which spellings to edit: all (default), only mid-sentence " X" forms, only
 * line-start "X" forms. A line-start spelling often splits into sub-words
 * ("S|pain") whose rows every line-start "S..." word shares: `mid` avoids that
 * blast radius at the price of prompts that start with the entity. */
typedef enum { STEM_VARIANTS_ALL, STEM_VARIANTS_MID, STEM_VARIANTS_START } StemVariantSet;

/* Where strategy s (resolved: not auto) takes the row of source position i
 * (0 <= i < ns) from: a target position 0..nt-1, or one of these. */
enum { STEM_MAP_PAD = -1, STEM_MAP_ALL = -2, STEM_MAP_INVALID = -3 };
int stem_strategy_position(StemSwapStrategy s, int ns, int nt, int i);
/* NULL when s can map ns tokens onto nt, else the reason. auto resolves first. */
const char *stem_strategy_domain(StemSwapStrategy s, int ns, int nt);
StemSwapStrategy stem_strategy_resolve(StemSwapStrategy s, int ns, int nt);

typedef struct {
    StemEditKind kind;
    char *source;              /* entity text, e.g. "Spain" */
    char *target;              /* entity text; NULL for ablate */
    StemSwapStrategy strategy;
    char *layers;              /* "all" (every STEM layer) or model layer indices "1,3" / "1-3"; NULL = all */
    double alpha;              /* blend/ablate: weight of the new row, in [0, 1]; swap: 1 */
    StemAblateMode ablate;
    gboolean allow_subword;    /* accept entities that are neither countries nor whole-word tokens */
    StemVariantSet variants;
} StemRecipe;

void stem_recipe_init(StemRecipe *r);       /* swap, auto, all layers, alpha 1 */
void stem_recipe_clear(StemRecipe *r);      /* frees the strings */
void stem_recipe_copy(StemRecipe *dst, const StemRecipe *src);
char *stem_recipe_to_json(const StemRecipe *r);
gboolean stem_recipe_from_json(const char *json, StemRecipe *r, GError **error);
/* "Spain -> France (swap, auto, layers all)" for lists and logs; g_free. */
char *stem_recipe_describe(const StemRecipe *r);

const char *stem_edit_kind_name(StemEditKind k);
gboolean stem_edit_kind_from_name(const char *name, StemEditKind *out);
const char *stem_variant_set_name(StemVariantSet v);      /* "all", "mid", "start" */
gboolean stem_variant_set_from_name(const char *name, StemVariantSet *out);
const char *stem_strategy_name(StemSwapStrategy s);
gboolean stem_strategy_from_name(const char *name, StemSwapStrategy *out);

/* Layer spec -> mask over MODEL layer indices (bit l = layer l), every one a STEM
 * layer of cfg. NULL / "" / "all" = all STEM layers. */
gboolean stem_edit_parse_layers(const StemConfig *cfg, const char *spec, uint64_t *mask, GError **error);

/* One token variant of the entity pair. */
typedef struct {
    char *form;                /* "mid-sentence", "line-start", "mid-sentence lower", ... */
    char *source_text;         /* exact bytes encoded, e.g. " Spain" */
    char *target_text;         /* NULL for ablate */
    int32_t *source_ids, *target_ids;
    int n_source, n_target;
    StemSwapStrategy strategy; /* resolved (auto -> one-to-one / average) */
    gboolean edited;           /* FALSE: skipped, see note */
    char *note;                /* why skipped (or NULL) */
} StemPlanVariant;

/* The new value of one source token: a weighted mix of target tokens' rows
 * (special ids: STEM_PLAN_ZERO / STEM_PLAN_MEAN for ablation), blended with the
 * token's own row: after = (1 - alpha) * own + alpha * mix. Tables and the dense
 * control (embedding rows) both materialize rows from this. */
enum { STEM_PLAN_ZERO = -1, STEM_PLAN_MEAN = -2 };
typedef struct {
    int32_t token;             /* source token whose row changes */
    int variant;               /* index into variants */
    int position;              /* position in that variant's source sequence */
    int n_mix;
    int32_t *mix_tok;          /* [n_mix] target ids (or STEM_PLAN_ZERO / _MEAN) */
    double *mix_w;             /* [n_mix] weights, sum 1 */
} StemPlanAssign;

/* A source token that other entities also contain: editing it edits them too. */
typedef struct {
    int32_t token;
    char *text;                /* token bytes as printable UTF-8 */
    GPtrArray *entities;       /* char*: other countries whose names contain it */
} StemPlanShared;

typedef struct {
    StemRecipe recipe;
    uint64_t layer_mask;       /* model layers edited */
    int source_country, target_country;   /* index in the facts table or -1 */
    GPtrArray *variants;       /* StemPlanVariant* */
    GArray *assign;            /* StemPlanAssign (one per distinct source token), in plan order */
    GPtrArray *shared;         /* StemPlanShared* */
    GPtrArray *warnings;       /* char*: human-readable, one line each */

    /* Materialized rows (tables), sorted by (layer, token); empty for token-only plans. */
    int ffn;
    int n_rows;
    int32_t *layers;           /* [n_rows] model layer index */
    int32_t *tokens;           /* [n_rows] */
    float *before;             /* [n_rows, ffn] effective row at plan time */
    float *after;              /* [n_rows, ffn] */
    guint64 tables_generation; /* stem_tables_generation() the rows were read at */
} StemEditPlan;

void stem_edit_plan_free(StemEditPlan *p);

/* A planner holds what does not change between plans of one model: the facts
 * table and every country's tokenization (shared-token warnings), mean rows
 * for ablation. Cheap to plan with (the GUI plans on every slider move). The
 * model must outlive the planner. facts may be NULL: the bundled table is loaded
 * when it can be found; without it the planner still works (no country checks). */
typedef struct StemPlanner StemPlanner;
StemPlanner *stem_planner_new(StemModel *m, const StemFacts *facts);
void stem_planner_free(StemPlanner *p);
StemModel *stem_planner_model(StemPlanner *p);
const StemFacts *stem_planner_facts(StemPlanner *p);

/* Plan a recipe against the model's effective tables. NULL + error on bad input. */
StemEditPlan *stem_planner_plan(StemPlanner *p, const StemRecipe *r, GError **error);
/* Same variants/assignments, but no table rows (n_rows = 0): for models without
 * STEM layers (the dense control edits embedding rows from the assignments). */
StemEditPlan *stem_planner_plan_tokens(StemPlanner *p, const StemRecipe *r, GError **error);

/* Preview: set the plan's rows as overrides in m->tables and return what they
 * replaced; pop restores the overlay exactly (the snapshot is freed). */
typedef struct StemOverlaySnapshot StemOverlaySnapshot;
StemOverlaySnapshot *stem_edit_plan_push(StemModel *m, const StemEditPlan *p);
void stem_edit_plan_pop(StemModel *m, StemOverlaySnapshot *s);

/* JSON of a plan (variants, assignments, rows count, warnings, shared tokens);
 * with_rows adds nothing heavy: rows are summarized per layer (L2 norms). */
void stem_edit_plan_to_json(const StemEditPlan *p, StemModel *m, JsonBuilder *b);

/* A token as printable UTF-8 (invalid bytes as \xNN, specials by name); g_free. */
char *stem_edit_token_text(const StemTokenizer *tok, int id);

/* sha256 over the rows in canonical order: the patch-set checksum (editdb.h). */
char *stem_edit_rows_checksum(int ffn, int n, const int32_t *layers, const int32_t *tokens, const float *before,
                              const float *after);

#endif
