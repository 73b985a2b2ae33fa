/* The training corpus: facts sentences mixed with public-domain prose.
 *
 * Built deterministically from data/countries.csv and data/prose_mix.txt.gz
 * (decompressed with GIO's GZlibDecompressor). The prose is cut into paragraphs;
 * facts sentences are interleaved between paragraphs so every training window
 * sees some of both. Every round(1/val_fraction)-th prose paragraph (a strided
 * sample, so validation has the same mix of books as training) and one sentence
 * per (country, relation) go to validation; see corpus.c for the details. */
#ifndef STEM_ENGINE_CORPUS_H
#define STEM_ENGINE_CORPUS_H

#include <glib.h>
#include "facts.h"

typedef struct {
    GString *train;      /* training text */
    GString *val;        /* validation text */
} StemCorpus;

typedef struct {
    const char *data_dir;     /* folder holding countries.csv and prose_mix.txt.gz */
    size_t prose_bytes;       /* use the first N bytes of prose (0 = all) */
    int fact_repeats;         /* each fact this many times (different phrasings) */
    double val_fraction;      /* of prose paragraphs, e.g. 0.02 */
    guint64 seed;
} StemCorpusOptions;

StemCorpus *stem_corpus_build(const StemCorpusOptions *opt, GError **error);
void stem_corpus_free(StemCorpus *c);
/* Find the data dir: $STEM_DATA_DIR, then the build-time source data dir, then
 * the installed data dir. Returns a static string or NULL. */
const char *stem_data_dir(void);

#endif
