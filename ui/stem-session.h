/* StemSession: what every page of the workbench observes.
 *
 * It owns the open model, the edit database and the current prompt, and it is
 * the only way to run code against the model. The engine's forward pass is not
 * thread-safe per model (one activation arena per StemModel; previews push
 * overrides into the model's table overlay), so every job that touches a model
 * runs on ONE worker thread, in submission order: one GTask at a time per
 * session. The main loop never waits for it.
 *
 * Jobs may name a slot ("predict", "edit-preview", ...): a new request in a
 * slot cancels the previous one, so a job that has not started yet is dropped
 * and a finished one's result is discarded (its callback sees
 * G_IO_ERROR_CANCELLED). Typing and dragging the α slider therefore only ever
 * compute the latest request.
 *
 * Signals:
 *   model-changed   a model was opened or closed (also emitted on failure to
 *                   keep pages in sync: check stem_session_has_model)
 *   edits-changed   the set of applied patch sets changed (apply, revert,
 *                   import, bake): predictions must be recomputed
 *   error(message)  something failed; the window shows it in its banner
 *   toast(message)  a short confirmation the window shows and hides
 *   job-progress(name, fraction, text)  from stem_session_ctx_progress
 * Properties: model-path, prompt, busy (a job is queued or running), db-path. */
#ifndef STEM_UI_SESSION_H
#define STEM_UI_SESSION_H

#include <gio/gio.h>
#include "engine/model.h"
#include "engine/facts.h"

G_BEGIN_DECLS

#define STEM_TYPE_SESSION (stem_session_get_type())
G_DECLARE_FINAL_TYPE(StemSession, stem_session, STEM, SESSION, GObject)

StemSession *stem_session_new(void);

/* ---- the model (main thread). The returned model may only be used for what
 * never changes after loading: cfg, tok, path, sha256 (computed at load). Run
 * anything else through stem_session_run(). */
gboolean stem_session_has_model(StemSession *self);
StemModel *stem_session_get_model(StemSession *self);
const char *stem_session_get_model_path(StemSession *self);
const char *stem_session_get_model_sha256(StemSession *self);
/* The facts table (countries), loaded once; may be NULL when data is missing. */
const StemFacts *stem_session_get_facts(StemSession *self);

/* Load a model file on the worker, open its edit database (db_path, or NULL
 * for stem_session_default_db_path) and attach the model, then switch to it
 * (model-changed). Errors go to the callback and to the error signal.
 * callback may be NULL. */
void stem_session_open_async(StemSession *self, const char *path, const char *db_path, GCancellable *cancellable,
                             GAsyncReadyCallback callback, gpointer user_data);
gboolean stem_session_open_finish(StemSession *self, GAsyncResult *result, GError **error);

/* ---- the prompt shared by Predict, Edit and Geometry */
const char *stem_session_get_prompt(StemSession *self);
void stem_session_set_prompt(StemSession *self, const char *prompt);

/* ---- jobs */
typedef struct _StemSessionCtx StemSessionCtx;   /* what a job may touch on the worker */
StemModel *stem_session_ctx_model(StemSessionCtx *ctx);
/* The model's edit database (StemEditDb*), NULL when it could not be opened. */
gpointer stem_session_ctx_db(StemSessionCtx *ctx);
/* The planner for the model (StemPlanner*), NULL without model. */
gpointer stem_session_ctx_planner(StemSessionCtx *ctx);

/* From a job: report progress (fraction in [0, 1], text may be NULL). The
 * session emits job-progress(slot-or-name, fraction, text) on the main thread. */
void stem_session_ctx_progress(StemSessionCtx *ctx, double fraction, const char *text);

/* Runs on the worker with exclusive use of the model. Return a result (freed
 * with result_free if nobody takes it) or NULL with *error set. */
typedef gpointer (*StemSessionJobFunc)(StemSessionCtx *ctx, gpointer data, GCancellable *cancellable,
                                       GError **error);

/* Queue job. slot: NULL, or a name whose previous request is cancelled.
 * needs_model: fail with an error when no model is open (instead of running).
 * The callback runs on the main thread; take the result with
 * stem_session_run_finish (transfer full: free it with result_free). */
void stem_session_run(StemSession *self, const char *slot, gboolean needs_model, StemSessionJobFunc func,
                      gpointer data, GDestroyNotify data_free, GDestroyNotify result_free,
                      GCancellable *cancellable, GAsyncReadyCallback callback, gpointer user_data);
gpointer stem_session_run_finish(StemSession *self, GAsyncResult *result, GError **error);
/* TRUE while a job is queued or running. */
gboolean stem_session_get_busy(StemSession *self);
/* Cancel every job that named a slot (previews, analyses, sweeps, reports):
 * queued ones are dropped, running ones stop at their next check. Apply,
 * revert and open are not slot jobs: they are short and atomic. */
void stem_session_cancel_all(StemSession *self);

/* Reports an error: emits error(message) unless it is a cancellation. */
void stem_session_report(StemSession *self, const char *context, const GError *error);
void stem_session_toast(StemSession *self, const char *message);

/* ---- the edit database: one per model (editdb/editdb.h) */
const char *stem_session_get_db_path(StemSession *self);
/* Why the current model has no edit database, or NULL when it has one. */
const char *stem_session_get_db_error(StemSession *self);
char *stem_session_default_db_path(const char *sha256);
/* Tells the pages that the applied edits changed (emits edits-changed). */
void stem_session_edits_changed(StemSession *self);

/* TRUE when e is a cancellation (stale preview, user cancel). */
gboolean stem_error_is_cancelled(const GError *e);

G_END_DECLS

#endif
