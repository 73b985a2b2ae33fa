/* StemSession: the open model, the edit database, the prompt, and the one
 * worker thread that runs every job against them (see stem-session.h). */
#include "stem-session.h"
#include "engine/checkpoint.h"
#include "engine/facteval.h"
#include "editdb/editdb.h"
#include "editdb/planner.h"

/* A loaded model and what is derived from it. Reference-counted because a job
 * queued before a model switch keeps using the model it was queued for; the
 * last holder (often a job's task data, on whatever thread drops it) frees it. */
typedef struct {
    gatomicrefcount rc;
    StemModel *model;
    StemEditDb *db;              /* the model's edit database (owns the planner), or NULL */
    StemPlanner *planner;        /* the db's planner, or our own when the db failed */
    gboolean own_planner;
    char *db_path;
    char *db_error;              /* why there is no database */
} SessionModel;

static SessionModel *session_model_ref(SessionModel *sm)
{
    if (sm) g_atomic_ref_count_inc(&sm->rc);
    return sm;
}

static void session_model_unref(SessionModel *sm)
{
    if (!sm || !g_atomic_ref_count_dec(&sm->rc)) return;
    if (sm->own_planner) g_clear_pointer(&sm->planner, stem_planner_free);
    g_clear_pointer(&sm->db, stem_editdb_close);
    g_clear_pointer(&sm->model, stem_model_free);
    g_free(sm->db_path);
    g_free(sm->db_error);
    g_free(sm);
}

struct _StemSessionCtx {
    SessionModel *sm;
    StemSession *session;
    const char *name;            /* the task's name (its slot) */
    GMainContext *main;
};

StemModel *stem_session_ctx_model(StemSessionCtx *ctx) { return ctx->sm ? ctx->sm->model : NULL; }
gpointer stem_session_ctx_db(StemSessionCtx *ctx) { return ctx->sm ? ctx->sm->db : NULL; }
gpointer stem_session_ctx_planner(StemSessionCtx *ctx) { return ctx->sm ? ctx->sm->planner : NULL; }

struct _StemSession {
    GObject parent_instance;

    SessionModel *sm;            /* current model, or NULL */
    char *model_path;
    StemFacts *facts;
    char *prompt;

    GThreadPool *worker;         /* one thread: jobs run one at a time, in order */
    GHashTable *slots;           /* slot name -> GCancellable of its latest request */
    guint n_pending;
};

G_DEFINE_FINAL_TYPE(StemSession, stem_session, G_TYPE_OBJECT)

enum { PROP_0, PROP_MODEL_PATH, PROP_PROMPT, PROP_BUSY, PROP_DB_PATH, N_PROPS };
static GParamSpec *properties[N_PROPS];

enum { SIG_MODEL_CHANGED, SIG_EDITS_CHANGED, SIG_ERROR, SIG_TOAST, SIG_JOB_PROGRESS, N_SIGNALS };
static guint signals[N_SIGNALS];

typedef struct {
    StemSessionJobFunc func;
    gpointer data;
    GDestroyNotify data_free;
    GDestroyNotify result_free;
    SessionModel *sm;
} Job;

static void job_free(gpointer p)
{
    Job *job = p;
    if (job->data_free) job->data_free(job->data);
    session_model_unref(job->sm);
    g_free(job);
}

gboolean stem_error_is_cancelled(const GError *e)
{
    return e && g_error_matches(e, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

/* ------------------------------------------------------------------ worker */

typedef struct {
    StemSession *session;
    char *name, *text;
    double fraction;
} Progress;

static gboolean progress_emit(gpointer data)
{
    Progress *p = data;
    g_signal_emit(p->session, signals[SIG_JOB_PROGRESS], 0, p->name, p->fraction, p->text);
    return G_SOURCE_REMOVE;
}

static void progress_free(gpointer data)
{
    Progress *p = data;
    g_object_unref(p->session);
    g_free(p->name);
    g_free(p->text);
    g_free(p);
}

void stem_session_ctx_progress(StemSessionCtx *ctx, double fraction, const char *text)
{
    Progress *p = g_new0(Progress, 1);
    p->session = g_object_ref(ctx->session);
    p->name = g_strdup(ctx->name);
    p->text = g_strdup(text);
    p->fraction = fraction;
    g_main_context_invoke_full(ctx->main, G_PRIORITY_DEFAULT, progress_emit, p, progress_free);
}

static void worker_run(gpointer item, gpointer user)
{
    GTask *task = item;
    StemSession *self = user;
    Job *job = g_task_get_task_data(task);
    GCancellable *c = g_task_get_cancellable(task);
    if (g_task_return_error_if_cancelled(task)) {
        g_object_unref(task);
        return;
    }
    StemSessionCtx ctx = { .sm = job->sm, .session = self, .name = g_task_get_name(task),
                           .main = g_task_get_context(task) };
    GError *error = NULL;
    gpointer r = job->func(&ctx, job->data, c, &error);
    if (error) {
        if (r && job->result_free) job->result_free(r);
        g_task_return_error(task, error);
    } else {
        g_task_return_pointer(task, r, job->result_free);
    }
    g_object_unref(task);
}

static void on_task_completed(GTask *task, GParamSpec *pspec, StemSession *self)
{
    g_return_if_fail(self->n_pending > 0);
    if (--self->n_pending == 0) g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_BUSY]);
}

static void cancel_other(GCancellable *c, gpointer other)
{
    g_cancellable_cancel(other);
}

void stem_session_run(StemSession *self, const char *slot, gboolean needs_model, StemSessionJobFunc func,
                      gpointer data, GDestroyNotify data_free, GDestroyNotify result_free,
                      GCancellable *cancellable, GAsyncReadyCallback callback, gpointer user_data)
{
    g_return_if_fail(STEM_IS_SESSION(self));
    GCancellable *own = NULL;
    if (slot) {
        /* the newest request in a slot is the only one that matters */
        own = g_cancellable_new();
        GCancellable *old = g_hash_table_lookup(self->slots, slot);
        if (old) g_cancellable_cancel(old);
        g_hash_table_replace(self->slots, g_strdup(slot), g_object_ref(own));
        if (cancellable)
            g_cancellable_connect(cancellable, G_CALLBACK(cancel_other), g_object_ref(own), g_object_unref);
    }
    GTask *task = g_task_new(self, own ? own : cancellable, callback, user_data);
    g_task_set_source_tag(task, stem_session_run);
    g_task_set_name(task, slot ? slot : "stem-session-job");
    g_clear_object(&own);

    Job *job = g_new0(Job, 1);
    job->func = func;
    job->data = data;
    job->data_free = data_free;
    job->result_free = result_free;
    job->sm = session_model_ref(self->sm);
    g_task_set_task_data(task, job, job_free);

    if (needs_model && !job->sm) {
        g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED, "No model is open");
        g_object_unref(task);
        return;
    }
    if (self->n_pending++ == 0) g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_BUSY]);
    g_signal_connect_object(task, "notify::completed", G_CALLBACK(on_task_completed), self, 0);
    g_thread_pool_push(self->worker, task, NULL);
}

gpointer stem_session_run_finish(StemSession *self, GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, self), NULL);
    return g_task_propagate_pointer(G_TASK(result), error);
}

gboolean stem_session_get_busy(StemSession *self) { return self->n_pending > 0; }

void stem_session_cancel_all(StemSession *self)
{
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init(&it, self->slots);
    while (g_hash_table_iter_next(&it, &key, &value)) g_cancellable_cancel(value);
}

/* ------------------------------------------------------------------ database */

const char *stem_session_get_db_path(StemSession *self) { return self->sm ? self->sm->db_path : NULL; }

const char *stem_session_get_db_error(StemSession *self) { return self->sm ? self->sm->db_error : NULL; }

/* Where a model's edits live unless --db says otherwise: one database per model
 * file content (the database refuses any other model), in the user's data dir
 * because the model's own folder may be read-only. */
char *stem_session_default_db_path(const char *sha256)
{
    char name[64];
    g_snprintf(name, sizeof name, "%.16s.sqlite", sha256);
    return g_build_filename(g_get_user_data_dir(), "stem-workbench", "edits", name, NULL);
}

void stem_session_edits_changed(StemSession *self)
{
    g_signal_emit(self, signals[SIG_EDITS_CHANGED], 0);
}

/* ------------------------------------------------------------------ model */

gboolean stem_session_has_model(StemSession *self) { return self->sm != NULL; }
StemModel *stem_session_get_model(StemSession *self) { return self->sm ? self->sm->model : NULL; }
const char *stem_session_get_model_path(StemSession *self) { return self->model_path; }
const StemFacts *stem_session_get_facts(StemSession *self) { return self->facts; }

const char *stem_session_get_model_sha256(StemSession *self)
{
    return self->sm ? self->sm->model->sha256 : NULL;
}

typedef struct {
    char *path;
    char *db_path;               /* NULL: the default for the model */
    const StemFacts *facts;
} OpenData;

static void open_data_free(gpointer p)
{
    OpenData *d = p;
    g_free(d->path);
    g_free(d->db_path);
    g_free(d);
}

static gpointer open_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    OpenData *d = data;
    if (!g_file_test(d->path, G_FILE_TEST_EXISTS)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s: no such model file", d->path);
        return NULL;
    }
    StemModel *m = stem_model_load(d->path, error);
    if (!m) return NULL;
    if (!m->tok) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s has no tokenizer", d->path);
        stem_model_free(m);
        return NULL;
    }
    if (!stem_model_sha256(m, error)) {
        stem_model_free(m);
        return NULL;
    }
    SessionModel *sm = g_new0(SessionModel, 1);
    g_atomic_ref_count_init(&sm->rc);
    sm->model = m;
    /* the overlay of a freshly mapped model is empty: attaching the model's edit
     * database brings back the patch sets it says are applied. Without a usable
     * database the model still opens (read-only edits: preview works, Apply
     * reports why it cannot). */
    sm->db_path = d->db_path ? g_strdup(d->db_path) : stem_session_default_db_path(m->sha256);
    char *dir = g_path_get_dirname(sm->db_path);
    g_mkdir_with_parents(dir, 0700);
    g_free(dir);
    GError *e = NULL;
    sm->db = stem_editdb_open(sm->db_path, TRUE, &e);
    if (sm->db && !stem_editdb_attach(sm->db, m, d->facts, &e)) g_clear_pointer(&sm->db, stem_editdb_close);
    if (sm->db) {
        sm->planner = stem_editdb_planner(sm->db);
    } else {
        sm->db_error = g_strdup_printf("Edit database %s: %s", sm->db_path, e->message);
        g_clear_error(&e);
        sm->planner = stem_planner_new(m, d->facts);
        sm->own_planner = TRUE;
    }
    return sm;
}

static void on_opened(GObject *src, GAsyncResult *res, gpointer user)
{
    StemSession *self = STEM_SESSION(src);
    GTask *outer = user;
    OpenData *d = g_task_get_task_data(outer);
    GError *e = NULL;
    SessionModel *sm = stem_session_run_finish(self, res, &e);
    if (!sm) {
        if (!stem_error_is_cancelled(e)) stem_session_report(self, "Cannot open the model", e);
        g_task_return_error(outer, e);
        g_object_unref(outer);
        return;
    }
    g_clear_pointer(&self->sm, session_model_unref);
    self->sm = sm;
    g_free(self->model_path);
    self->model_path = g_strdup(sm->model->path ? sm->model->path : d->path);
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_MODEL_PATH]);
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_DB_PATH]);
    g_signal_emit(self, signals[SIG_MODEL_CHANGED], 0);
    if (sm->db_error) g_signal_emit(self, signals[SIG_ERROR], 0, sm->db_error);
    g_signal_emit(self, signals[SIG_EDITS_CHANGED], 0);
    g_task_return_boolean(outer, TRUE);
    g_object_unref(outer);
}

void stem_session_open_async(StemSession *self, const char *path, const char *db_path, GCancellable *cancellable,
                             GAsyncReadyCallback callback, gpointer user_data)
{
    g_return_if_fail(STEM_IS_SESSION(self) && path);
    GTask *outer = g_task_new(self, cancellable, callback, user_data);
    g_task_set_source_tag(outer, stem_session_open_async);
    OpenData *d = g_new0(OpenData, 1);
    d->path = g_strdup(path);
    d->db_path = g_strdup(db_path);
    d->facts = self->facts;
    g_task_set_task_data(outer, d, NULL);
    /* the job owns d; the outer task only peeks at it until the job is done */
    stem_session_run(self, "open", FALSE, open_job, d, open_data_free, (GDestroyNotify)session_model_unref,
                     cancellable, on_opened, outer);
}

gboolean stem_session_open_finish(StemSession *self, GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, self), FALSE);
    return g_task_propagate_boolean(G_TASK(result), error);
}

/* ------------------------------------------------------------------ prompt, messages */

const char *stem_session_get_prompt(StemSession *self) { return self->prompt; }

void stem_session_set_prompt(StemSession *self, const char *prompt)
{
    g_return_if_fail(STEM_IS_SESSION(self));
    if (!prompt) prompt = "";
    if (g_strcmp0(prompt, self->prompt) == 0) return;
    g_free(self->prompt);
    self->prompt = g_strdup(prompt);
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_PROMPT]);
}

void stem_session_report(StemSession *self, const char *context, const GError *error)
{
    if (!error || stem_error_is_cancelled(error)) return;
    char *msg = context ? g_strdup_printf("%s: %s", context, error->message) : g_strdup(error->message);
    g_signal_emit(self, signals[SIG_ERROR], 0, msg);
    g_free(msg);
}

void stem_session_toast(StemSession *self, const char *message)
{
    g_signal_emit(self, signals[SIG_TOAST], 0, message);
}

/* ------------------------------------------------------------------ GObject */

/* The countries table, loaded once per process and never freed: planners of
 * models that outlive a session borrow it. */
static const StemFacts *session_facts(void)
{
    static gsize once;
    static StemFacts *facts;
    if (g_once_init_enter(&once)) {
        GError *e = NULL;
        facts = stem_facts_load_default(&e);
        if (!facts) {
            g_message("facts table unavailable: %s", e->message);
            g_clear_error(&e);
        }
        g_once_init_leave(&once, 1);
    }
    return facts;
}

StemSession *stem_session_new(void)
{
    return g_object_new(STEM_TYPE_SESSION, NULL);
}

static void stem_session_dispose(GObject *object)
{
    StemSession *self = STEM_SESSION(object);
    /* every queued task holds a reference to us: nothing is pending here, and
     * freeing the pool joins its idle thread */
    if (self->worker) {
        g_thread_pool_free(self->worker, FALSE, TRUE);
        self->worker = NULL;
    }
    g_clear_pointer(&self->sm, session_model_unref);
    g_clear_pointer(&self->slots, g_hash_table_unref);
    G_OBJECT_CLASS(stem_session_parent_class)->dispose(object);
}

static void stem_session_finalize(GObject *object)
{
    StemSession *self = STEM_SESSION(object);
    g_free(self->model_path);
    g_free(self->prompt);
    G_OBJECT_CLASS(stem_session_parent_class)->finalize(object);
}

static void stem_session_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemSession *self = STEM_SESSION(object);
    switch (id) {
    case PROP_MODEL_PATH: g_value_set_string(value, self->model_path); break;
    case PROP_PROMPT: g_value_set_string(value, self->prompt); break;
    case PROP_BUSY: g_value_set_boolean(value, self->n_pending > 0); break;
    case PROP_DB_PATH: g_value_set_string(value, stem_session_get_db_path(self)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_session_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemSession *self = STEM_SESSION(object);
    switch (id) {
    case PROP_PROMPT: stem_session_set_prompt(self, g_value_get_string(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_session_class_init(StemSessionClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    oc->dispose = stem_session_dispose;
    oc->finalize = stem_session_finalize;
    oc->get_property = stem_session_get_property;
    oc->set_property = stem_session_set_property;

    properties[PROP_MODEL_PATH] = g_param_spec_string("model-path", NULL, NULL, NULL,
                                                      G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    properties[PROP_PROMPT] = g_param_spec_string("prompt", NULL, NULL, NULL,
                                                  G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
    properties[PROP_BUSY] = g_param_spec_boolean("busy", NULL, NULL, FALSE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    properties[PROP_DB_PATH] = g_param_spec_string("db-path", NULL, NULL, NULL, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    signals[SIG_MODEL_CHANGED] = g_signal_new("model-changed", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                              NULL, NULL, G_TYPE_NONE, 0);
    signals[SIG_EDITS_CHANGED] = g_signal_new("edits-changed", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                              NULL, NULL, G_TYPE_NONE, 0);
    signals[SIG_ERROR] = g_signal_new("error", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                      G_TYPE_NONE, 1, G_TYPE_STRING);
    signals[SIG_JOB_PROGRESS] = g_signal_new("job-progress", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL,
                                             NULL, NULL, G_TYPE_NONE, 3, G_TYPE_STRING, G_TYPE_DOUBLE, G_TYPE_STRING);
    signals[SIG_TOAST] = g_signal_new("toast", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                      G_TYPE_NONE, 1, G_TYPE_STRING);
}

static void stem_session_init(StemSession *self)
{
    self->prompt = g_strdup("The capital of Spain is");
    self->slots = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);
    self->worker = g_thread_pool_new(worker_run, self, 1, FALSE, NULL);
    self->facts = (StemFacts *)session_facts();
}
