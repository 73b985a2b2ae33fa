/* The edit database (SQLite): recipes, patch sets and an audit log for ONE model.
 *
 * A patch set stores, per (layer, token), the row before and the row after, a
 * sha256 over all of them, the model's sha256 and its recipe. Applying gives it
 * the next apply sequence number; the effective table is the base file plus the
 * applied patch sets in sequence order, each (layer, token) taking the 'after'
 * row of the applied patch set with the highest sequence (DESIGN.md §3). So a
 * revert, in any order, restores exactly what the remaining sets say, down to the
 * bit, and a reapply moves a set back on top. Apply, revert and reapply are each
 * ONE transaction (BEGIN IMMEDIATE ... COMMIT): a crash leaves a patch set wholly
 * applied or not. The model file is never written.
 *
 * The in-memory side: stem_editdb_attach() binds a loaded model, checks the
 * database was made for it and loads the overlay into m->tables; every change
 * through this connection updates the overlay incrementally (O(rows of the set),
 * independent of the vocabulary); changes committed by another process are
 * picked up by stem_editdb_refresh() (and automatically before each write).
 *
 * Schema version, migrations and pragmas: editdb.c, "Schema". README.md has the
 * tables. All functions return FALSE / NULL / 0 with a GError (one line) on
 * failure, and a failed call changes nothing. A StemEditDb is one SQLite
 * connection: use it from one thread at a time (other processes and other
 * connections are fine: writes serialize on the busy timeout). */
#ifndef STEM_EDITDB_EDITDB_H
#define STEM_EDITDB_EDITDB_H

#include <glib.h>
#include <stdint.h>
#include "engine/model.h"
#include "planner.h"

#define STEM_EDITDB_ERROR (stem_editdb_error_quark())
GQuark stem_editdb_error_quark(void);
typedef enum {
    STEM_EDITDB_ERROR_IO,           /* SQLite failed (locked past the busy timeout, disk full, ...) */
    STEM_EDITDB_ERROR_NOT_FOUND,    /* no such database file, no such patch set */
    STEM_EDITDB_ERROR_NOT_EDITDB,   /* not a database, or a database of something else */
    STEM_EDITDB_ERROR_NEWER,        /* written by a newer program (schema version) */
    STEM_EDITDB_ERROR_WRONG_MODEL,  /* made for another model */
    STEM_EDITDB_ERROR_STATE,        /* revert of a reverted set, reapply of an applied one */
    STEM_EDITDB_ERROR_DAMAGED,      /* checksum mismatch, malformed rows */
    STEM_EDITDB_ERROR_NO_MODEL,     /* the call needs an attached model */
    STEM_EDITDB_ERROR_INVALID,      /* bad rows passed by the caller */
} StemEditDbError;

#define STEM_EDITDB_SCHEMA_VERSION 1
#define STEM_EDITDB_APPLICATION_ID 0x5354454d   /* "STEM" */

typedef struct StemEditDb StemEditDb;

/* Open (create = TRUE: create the file and schema when missing). Refuses a file
 * that is not a STEM edit database or has a newer schema before writing anything. */
StemEditDb *stem_editdb_open(const char *path, gboolean create, GError **error);
void stem_editdb_close(StemEditDb *db);
const char *stem_editdb_path(const StemEditDb *db);

/* Bind a model (it must outlive the db or the db is closed first): refuses a
 * database recorded for another model (sha256), then loads the effective overlay
 * into m->tables, verifying every applied patch set's checksum. facts may be NULL. */
gboolean stem_editdb_attach(StemEditDb *db, StemModel *m, const StemFacts *facts, GError **error);
StemModel *stem_editdb_model(StemEditDb *db);
/* The planner for the attached model (created on first call), owned by db:
 * valid until the next attach or close. NULL when no model is attached. */
StemPlanner *stem_editdb_planner(StemEditDb *db);
/* Reload the overlay if another connection committed since we last looked. */
gboolean stem_editdb_refresh(StemEditDb *db, GError **error);

/* sha256 of the model the database was made for (NULL while nothing was applied). */
const char *stem_editdb_model_sha256(StemEditDb *db);
const char *stem_editdb_tokenizer_sha256(StemEditDb *db);
const char *stem_editdb_model_config(StemEditDb *db);     /* stem_config JSON */

/* Plan the recipe inside the write transaction (so it sees every committed
 * edit) and apply it. Returns the new patch set id (> 0), 0 on error. plan_out
 * (may be NULL) receives the plan (stem_edit_plan_free). */
gint64 stem_editdb_apply(StemEditDb *db, const StemRecipe *r, StemEditPlan **plan_out, GError **error);
/* Apply given rows (imports, tests): n rows sorted by (layer, token), unique,
 * every layer a STEM layer, tokens < vocab, after[n, ffn] finite. The 'before'
 * rows are read from the current effective tables. recipe_json / summary_json /
 * origin are stored as given (recipe_json must parse as a recipe). */
gint64 stem_editdb_apply_rows(StemEditDb *db, const char *recipe_json, const char *summary_json, const char *origin,
                              int n, const int32_t *layers, const int32_t *tokens, const float *after, GError **error);
/* Need no model attached; with one, its overlay follows. */
gboolean stem_editdb_revert(StemEditDb *db, gint64 id, GError **error);
gboolean stem_editdb_reapply(StemEditDb *db, gint64 id, GError **error);

typedef struct {
    gint64 id;
    gboolean applied;
    gint64 apply_seq;            /* sequence of its latest apply */
    StemRecipe recipe;
    char *recipe_json, *summary_json, *origin;
    char *model_sha256, *checksum;
    int n_rows, ffn;
    char *created_at, *applied_at, *reverted_at;
    /* only from stem_editdb_get(..., TRUE): sorted by (layer, token) */
    int32_t *layers, *tokens;
    float *before, *after;       /* [n_rows, ffn] */
} StemPatchSet;
void stem_patch_set_free(StemPatchSet *p);

/* All patch sets by id (no rows). */
GPtrArray *stem_editdb_list(StemEditDb *db, GError **error);
/* One patch set; with_rows reads and verifies its rows. */
StemPatchSet *stem_editdb_get(StemEditDb *db, gint64 id, gboolean with_rows, GError **error);

typedef struct {
    gint64 id;
    char *at, *action, *detail;  /* action: create, apply, revert, reapply, import, export, bake */
    gint64 patch_set, apply_seq; /* 0 when none */
} StemAuditEntry;
void stem_audit_entry_free(StemAuditEntry *e);
GPtrArray *stem_editdb_audit(StemEditDb *db, GError **error);
/* Record an action that does not change patch sets (export, bake). */
gboolean stem_editdb_log(StemEditDb *db, const char *action, gint64 patch_set, const char *detail_json,
                         GError **error);

/* Full consistency check: PRAGMA integrity_check, every patch set's rows
 * complete and matching its checksum, apply sequences unique. */
gboolean stem_editdb_check(StemEditDb *db, GError **error);

/* The effective rows at (layers[i], tokens[i]) as if patch set `exclude` were
 * not applied (0: exclude none), read from the database: out[n, ffn]. Needs an
 * attached model (base rows). For metrics of one patch set. */
gboolean stem_editdb_rows_without(StemEditDb *db, gint64 exclude, int n, const int32_t *layers,
                                  const int32_t *tokens, float *out, GError **error);

/* For readers (stem topk/generate --db): open an existing database, attach the
 * model (overlay loaded into m->tables) and close it again. */
gboolean stem_editdb_load_overlay(const char *path, StemModel *m, GError **error);

#endif
