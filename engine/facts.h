/* Country facts: the table from data/countries.csv, sentence templates per
 * relation, and the evaluation prompts built from them.
 *
 * Each relation has several phrasings (templates). Some are used to build the
 * training corpus; the rest are HELD OUT: they never appear in training text and
 * measure whether a fact generalizes beyond the phrasing it was learned in
 * (paraphrase metrics). The canonical evaluation prompt for capitals is
 * "The capital of {country} is" and it IS a training phrasing. */
#ifndef STEM_ENGINE_FACTS_H
#define STEM_ENGINE_FACTS_H

#include <glib.h>

typedef enum {
    REL_CAPITAL, REL_LANGUAGE, REL_CONTINENT, REL_CURRENCY, REL_DEMONYM, REL_LARGEST_CITY,
    REL_COUNT
} StemRelation;

typedef struct {
    char *iso2, *name, *capital, *language, *continent, *currency, *demonym, *largest_city;
    int n_languages;
} StemCountry;

typedef struct {
    StemCountry *countries;
    int n;
} StemFacts;

/* A prompt whose next words should be `answer` (answer starts with a space,
 * e.g. prompt "The capital of Spain is", answer " Madrid"). */
typedef struct {
    char *prompt;
    char *answer;
    int country;            /* index into StemFacts.countries */
    StemRelation relation;
    gboolean held_out;      /* phrasing never seen in training */
} StemFactPrompt;

StemFacts *stem_facts_load(const char *csv_path, GError **error);
void stem_facts_free(StemFacts *f);

const char *stem_relation_name(StemRelation r);
/* The value of relation r for country c, or NULL when the relation has no single
 * answer for it (language with n_languages > 1). */
const char *stem_facts_value(const StemFacts *f, int c, StemRelation r);
int stem_facts_find(const StemFacts *f, const char *name);   /* -1 if absent */

/* Training sentences for all countries and relations (training phrasings only),
 * each a complete sentence ending with ".\n". Deterministic for a seed: the order is
 * shuffled and each fact appears `repeats` times in different training phrasings. */
GPtrArray *stem_facts_training_sentences(const StemFacts *f, int repeats, guint64 seed);

/* One sentence per (country, relation) with an answer, in a training phrasing
 * (cycled so that all are used), shuffled by seed: the facts part of validation. */
GPtrArray *stem_facts_validation_sentences(const StemFacts *f, guint64 seed);

/* The phrasings of relation r: templates with "{X}" for the country name, prompts that
 * stop right before the answer. Index 0 is the canonical training prompt; *held_out
 * (may be NULL) tells whether phrasing i is held out of training text. */
int stem_facts_n_templates(StemRelation r);
const char *stem_facts_template(StemRelation r, int i, gboolean *held_out);

/* Evaluation prompts: relation r (or -1 for all), training and/or held-out
 * phrasings. Array of StemFactPrompt* (free with the array). */
GPtrArray *stem_facts_prompts(const StemFacts *f, int relation, gboolean train_phrasings,
                              gboolean held_out_phrasings);
/* The canonical prompt "The capital of {name} is" etc. for relation r, g_free. */
char *stem_facts_canonical_prompt(const StemFacts *f, int c, StemRelation r);

#endif
