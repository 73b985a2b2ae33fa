/* Model files: safetensors with Meta Lingua tensor names, config and tokenizer
 * in __metadata__ ("stem_config", "tokenizer" as JSON strings; "format" =
 * "stem-workbench/1"; any extra provenance keys are kept). */
#ifndef STEM_ENGINE_CHECKPOINT_H
#define STEM_ENGINE_CHECKPOINT_H

#include <glib.h>
#include "model.h"

/* Write atomically (temp file + rename). tables_bf16 stores the STEM tables as
 * bf16 (everything else fp32). extra_meta: string -> string, may be NULL. The
 * effective tables are written (edit overlay included). */
gboolean stem_model_save(const StemModel *m, const char *path, gboolean tables_bf16,
                         GHashTable *extra_meta, GError **error);

/* Map a model file for inference: weights read in place where they are aligned
 * fp32, STEM tables served from the mapping (fp32 or bf16). Every tensor's name,
 * dtype and shape is checked against the config; a missing tokenizer is allowed
 * (m->tok == NULL) only for test fixtures. */
StemModel *stem_model_load(const char *path, GError **error);
/* Load into an owned fp32 parameter buffer (writable, trainable). */
StemModel *stem_model_load_trainable(const char *path, GError **error);
/* __metadata__ value of a loaded model, or NULL. */
const char *stem_model_metadata(const StemModel *m, const char *key);
/* sha256 (hex) of the model file, computed once on first use; NULL for a model
 * that was never saved or loaded. */
const char *stem_model_sha256(StemModel *m, GError **error);

#endif
