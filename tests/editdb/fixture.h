/* Test fixtures for tests/editdb: a small model whose tokenizer learned the
 * country names (many are single tokens, " United" is shared, some are split),
 * written to a file so that it has a sha256 like a real model. */
#ifndef STEM_TESTS_EDITDB_FIXTURE_H
#define STEM_TESTS_EDITDB_FIXTURE_H

#include <glib.h>
#include "engine/facts.h"
#include "engine/model.h"

/* The shared facts table (loaded once). */
const StemFacts *fixture_facts(void);
/* Write a random-weight model to dir/name: vocab 1024 tokenizer trained on the
 * fact sentences, 3 layers (STEM layers 1, 2), ffn 16 (dense: no STEM layer).
 * seed changes the weights only (same tokenizer). Returns the path (g_free). */
char *fixture_model(const char *dir, const char *name, guint64 seed, gboolean dense);
/* A fresh temporary directory (removed with fixture_rmdir). */
char *fixture_tmpdir(void);
void fixture_rmdir(const char *dir);

#endif
