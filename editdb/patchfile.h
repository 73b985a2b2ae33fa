/* Patch files: one patch set in a small, hashed, self-describing file, to move
 * an edit onto another copy of the same model (stem edit export / import).
 *
 * The container is safetensors (engine/safetensors.h: the hardened reader the
 * model files use), with exactly three tensors
 *     keys    I32 [n, 2]    (model layer, token), sorted, unique
 *     before  F32 [n, ffn]  rows before the edit (in the exporting database)
 *     after   F32 [n, ffn]  rows the edit writes
 * and __metadata__ strings
 *     format            "stem-workbench-patch/1"
 *     model_sha256      sha256 of the model file the rows belong to
 *     tokenizer_sha256  sha256 of its tokenizer (stem_tokenizer_sha256)
 *     model_config      the model's stem_config JSON
 *     recipe            recipe JSON (planner.h)
 *     summary           the plan JSON (variants, warnings) or "{}"
 *     patch_set         JSON: id, apply_seq, origin, created_at in the exporting database
 *     checksum          the patch-set checksum over the rows (editdb/rowhash.h)
 *     content_sha256    sha256 over every other metadata entry (sorted by key)
 *                       and the three tensors (name, dtype, shape, bytes):
 *                       any flipped bit anywhere in the file is detected.
 * The reader trusts nothing: structure, shapes, sizes, both hashes, key order
 * and finiteness are checked before a row is handed out. */
#ifndef STEM_EDITDB_PATCHFILE_H
#define STEM_EDITDB_PATCHFILE_H

#include <glib.h>
#include <stdint.h>
#include "editdb.h"

#define STEM_PATCHFILE_FORMAT "stem-workbench-patch/1"
#define STEM_PATCHFILE_ERROR (stem_patchfile_error_quark())
GQuark stem_patchfile_error_quark(void);
typedef enum {
    STEM_PATCHFILE_ERROR_IO,        /* cannot read or write the file */
    STEM_PATCHFILE_ERROR_FORMAT,    /* not a patch file, truncated, malformed */
    STEM_PATCHFILE_ERROR_DAMAGED,   /* well-formed but a hash does not match */
    STEM_PATCHFILE_ERROR_MODEL,     /* made for another model */
} StemPatchFileError;

/* Limits: a patch set is a few rows; these only bound hostile input. */
#define STEM_PATCHFILE_MAX_ROWS (1 << 20)
#define STEM_PATCHFILE_MAX_FFN (1 << 20)
#define STEM_PATCHFILE_MAX_FLOATS ((int64_t)1 << 28)

typedef struct {
    char *model_sha256, *tokenizer_sha256, *model_config;
    char *recipe_json, *summary_json, *patch_set_json;
    char *checksum, *content_sha256;
    StemRecipe recipe;
    int n_rows, ffn;
    int32_t *layers, *tokens;      /* [n_rows] */
    float *before, *after;         /* [n_rows, ffn] */
} StemPatchFile;

void stem_patchfile_free(StemPatchFile *pf);
StemPatchFile *stem_patchfile_read(const char *path, GError **error);
/* From memory (tests, the fuzzer): buf need not outlive the result. */
StemPatchFile *stem_patchfile_read_buffer(const void *buf, size_t len, GError **error);

/* FOR THE FUZZER ONLY: the same reader with the two hash checks skipped, so
 * mutated inputs reach the checks behind them (key order, finiteness, recipe
 * JSON). Never use it to import. */
StemPatchFile *stem_patchfile_parse_for_fuzzing(const void *buf, size_t len, GError **error);

/* Write patch set `id` of db (its rows are read and verified) to path,
 * atomically. The database must have a recorded model. */
gboolean stem_patchfile_export(StemEditDb *db, gint64 id, const char *path, GError **error);

/* Refuse a file made for another model: sha256 of the model file and of the
 * tokenizer, row width, layers and tokens within the model. */
gboolean stem_patchfile_check_model(const StemPatchFile *pf, StemModel *m, GError **error);

/* Check against the database's attached model and apply as a new patch set
 * (origin "import <file sha256>"). Returns the new id, 0 on error. */
gint64 stem_patchfile_import(StemEditDb *db, const StemPatchFile *pf, const char *file_sha256, GError **error);

/* Bake: write a NEW model file (never the model itself, nor the database)
 * whose tables are the effective tables of the attached model, keeping the base
 * file's metadata and adding "stem_edits" (JSON: base_model_sha256, database,
 * baked_at, the applied patch sets in apply order with id, apply_seq, rows,
 * checksum, origin, recipe) and "baked_from" (base sha256). Tables keep the
 * base file's dtype (bf16 tables round the edited rows to bf16). Logged in the
 * audit log. *sha_out (may be NULL): sha256 of the new file. */
gboolean stem_editdb_bake(StemEditDb *db, const char *out, int *n_applied, char **sha_out, GError **error);

#endif
