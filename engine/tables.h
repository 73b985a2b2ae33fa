/* The table store: one row API over the STEM tables, whatever holds them.
 *
 * Base rows come either from writable fp32 memory (training: the parameter
 * buffer) or from the mapped model file (fp32 or bf16, read in place, never
 * written). Edits live in an overlay (layer j, token) -> row that shadows the
 * base; removing an overlay row restores the base exactly. Every reader
 * (inference, analyses, the device cache) goes through row()/gather(), so every
 * reader sees the edits. */
#ifndef STEM_ENGINE_TABLES_H
#define STEM_ENGINE_TABLES_H

#include <glib.h>
#include <stdint.h>

typedef struct StemTables StemTables;

typedef enum { STEM_TABLE_F32 = 0, STEM_TABLE_BF16 = 1 } StemTableDtype;

/* n_stem tables of [vocab, ffn]; base[j] points at table j's first row. */
StemTables *stem_tables_new(int n_stem, int vocab, int ffn, StemTableDtype dtype, const void *const *base);
void stem_tables_free(StemTables *t);

int stem_tables_n(const StemTables *t);
int stem_tables_vocab(const StemTables *t);
int stem_tables_ffn(const StemTables *t);
StemTableDtype stem_tables_dtype(const StemTables *t);

/* Effective row (overlay if set, else base) as fp32 into out[ffn]. */
void stem_tables_row(const StemTables *t, int j, int token, float *out);
/* Base row only (ignores the overlay). */
void stem_tables_base_row(const StemTables *t, int j, int token, float *out);
/* out[n, ffn] = effective rows of ids (ids must be valid: the caller checks). */
void stem_tables_gather(const StemTables *t, int j, const int32_t *ids, int n, float *out);

/* Overlay: set / remove one row; the row is copied. */
void stem_tables_set_override(StemTables *t, int j, int token, const float *row);
void stem_tables_clear_override(StemTables *t, int j, int token);
void stem_tables_clear_all_overrides(StemTables *t);
gboolean stem_tables_has_override(const StemTables *t, int j, int token);
guint stem_tables_n_overrides(const StemTables *t);
/* Bumped on every overlay change: caches of rows (the device LFU cache) compare it. */
guint64 stem_tables_generation(const StemTables *t);

#endif
