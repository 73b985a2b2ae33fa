/* StemTrainer: `stem train` in a GTask thread with progress (see stem-trainer.h). */
#include "stem-trainer.h"
#include "engine/checkpoint.h"
#include "engine/corpus.h"
#include "engine/facteval.h"
#include "engine/tokenizer.h"
#include "engine/train.h"

#include <math.h>
#include <string.h>

/* The presets of app/cmd-train.c: kept identical so that a model trained here
 * is the model `stem train --preset NAME` writes (same seed, same bytes). */
typedef struct {
    StemTrainPresetInfo info;
    StemConfig cfg;
    const char *stem_layers;
    int batch;
    float lr;
    double prose_mb;
    int fact_repeats;
} Preset;

static const Preset presets[] = {
    { { "tiny", "tiny: 2 layers, width 64, vocab 512 (seconds)", 80 },
      { .vocab = 512, .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .ffn_dim = 128, .seq_len = 64,
        .rope_theta = 10000.0f, .norm_eps = 1e-5f },
      "all-but-first", 8, 3e-3f, 0.4, 2 },
    { { "default", "default: 4 layers, width 256, vocab 4096 (about 10 minutes on 2 cores)", 1200 },
      { .vocab = 4096, .dim = 256, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4, .ffn_dim = 512, .seq_len = 128,
        .rope_theta = 10000.0f, .norm_eps = 1e-5f },
      "all-but-first", 16, 2e-3f, 0, 8 },
};

int stem_trainer_n_presets(void) { return (int)G_N_ELEMENTS(presets); }

const StemTrainPresetInfo *stem_trainer_preset(int i)
{
    return i >= 0 && i < (int)G_N_ELEMENTS(presets) ? &presets[i].info : NULL;
}

static const Preset *find_preset(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
        if (!g_strcmp0(presets[i].info.name, name)) return &presets[i];
    return NULL;
}

void stem_trainer_result_free(StemTrainerResult *r)
{
    if (!r) return;
    for (int i = 0; i < 2; i++) g_free(r->paths[i]);
    g_free(r);
}

struct _StemTrainer {
    GObject parent_instance;
    GTask *task;                 /* the running run, or NULL */
    GCancellable *cancellable;
};

G_DEFINE_FINAL_TYPE(StemTrainer, stem_trainer, G_TYPE_OBJECT)

enum { PROP_0, PROP_RUNNING, N_PROPS };
static GParamSpec *properties[N_PROPS];
enum { SIG_PROGRESS, N_SIGNALS };
static guint signals[N_SIGNALS];

/* ------------------------------------------------------------------ the run (worker thread) */

typedef struct {
    const Preset *preset;
    StemConfig cfg[2];
    int n_runs;
    int steps;
    char *out[2];
    GMainContext *ctx;           /* where progress goes */
    StemTrainer *trainer;        /* ref held by the task's source object */
    GCancellable *cancellable;
    /* while training */
    int run;
    gint64 last_post;
} Run;

static void run_free(gpointer p)
{
    Run *r = p;
    for (int i = 0; i < 2; i++) g_free(r->out[i]);
    if (r->ctx) g_main_context_unref(r->ctx);
    g_free(r);
}

typedef struct {
    StemTrainer *trainer;
    StemTrainerProgress p;
} Post;

static gboolean post_progress(gpointer data)
{
    Post *post = data;
    g_signal_emit(post->trainer, signals[SIG_PROGRESS], 0, &post->p);
    return G_SOURCE_REMOVE;
}

static void post_free(gpointer data)
{
    Post *post = data;
    g_object_unref(post->trainer);
    g_free(post);
}

static void post(Run *r, const StemTrainerProgress *p)
{
    Post *x = g_new0(Post, 1);
    x->trainer = g_object_ref(r->trainer);
    x->p = *p;   /* phase strings are static */
    g_main_context_invoke_full(r->ctx, G_PRIORITY_DEFAULT, post_progress, x, post_free);
}

static void post_phase(Run *r, const char *phase, double fraction)
{
    StemTrainerProgress p = { .run = r->run, .dense = r->cfg[r->run].stem_mask == 0, .phase = phase,
                              .fraction = fraction, .loss = NAN, .val_loss = NAN, .eta_s = NAN };
    post(r, &p);
}

static void on_tok_progress(double frac, void *user)
{
    Run *r = user;
    gint64 now = g_get_monotonic_time();
    if (now - r->last_post < 100000 && frac < 1) return;
    r->last_post = now;
    post_phase(r, "tokenizer", frac);
}

static gboolean on_step(const StemTrainProgress *tp, void *user)
{
    Run *r = user;
    StemTrainerProgress p = { .run = r->run, .dense = r->cfg[r->run].stem_mask == 0, .phase = "training",
                              .fraction = (double)tp->step / MAX(tp->steps, 1), .step = tp->step, .steps = tp->steps,
                              .loss = tp->loss, .val_loss = tp->val_loss, .tokens_per_s = tp->tokens_per_s,
                              .elapsed_s = tp->elapsed_s, .eta_s = tp->eta_s };
    post(r, &p);
    return !g_cancellable_is_cancelled(r->cancellable);
}

static void train_thread(GTask *task, gpointer source, gpointer data, GCancellable *c)
{
    Run *r = data;
    const Preset *p = r->preset;
    GError *e = NULL;
    StemTrainOptions to;
    stem_train_options_defaults(&to);
    to.batch = p->batch;
    to.steps = r->steps;
    to.seq = r->cfg[0].seq_len;
    to.seed = 1;
    to.optim.lr = p->lr;
    to.optim.table_lr = p->lr;
    /* validation points for the curves: evaluation reads the model, it does not
     * change what is trained */
    to.eval_every = MAX(r->steps / 10, 1);

    r->run = 0;
    post_phase(r, "corpus", 0);
    const char *data_dir = stem_data_dir();
    if (!data_dir) {
        g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                                "Training data not found (set STEM_DATA_DIR to the folder with countries.csv)");
        return;
    }
    StemCorpusOptions co = { .data_dir = data_dir, .seed = to.seed, .val_fraction = 0.02,
                             .prose_bytes = (size_t)(p->prose_mb * 1e6), .fact_repeats = p->fact_repeats };
    StemCorpus *corpus = stem_corpus_build(&co, &e);
    if (!corpus) {
        g_task_return_error(task, e);
        return;
    }
    if (g_task_return_error_if_cancelled(task)) {
        stem_corpus_free(corpus);
        return;
    }
    post_phase(r, "tokenizer", 0);
    StemTokenizer *tok = stem_tokenizer_train(corpus->train->str, corpus->train->len, r->cfg[0].vocab,
                                              on_tok_progress, r);
    size_t n_train = 0, n_val = 0;
    int32_t *train_ids = stem_tokenizer_encode(tok, corpus->train->str, corpus->train->len, &n_train);
    int32_t *val_ids = stem_tokenizer_encode(tok, corpus->val->str, corpus->val->len, &n_val);
    stem_corpus_free(corpus);
    char *tok_json = stem_tokenizer_to_json(tok);

    StemTrainerResult *res = g_new0(StemTrainerResult, 1);
    for (int run = 0; run < r->n_runs && !e; run++) {
        r->run = run;
        if (g_cancellable_is_cancelled(c)) break;
        StemModel *m = stem_model_new(&r->cfg[run], &e);
        if (!m) break;
        /* each model owns its tokenizer: the second gets a copy */
        m->tok = run == 0 ? tok : stem_tokenizer_from_json(tok_json, &e);
        if (run == 0) tok = NULL;
        if (!m->tok) {
            stem_model_free(m);
            break;
        }
        stem_model_init_weights(m, to.seed);
        StemTrainResult tr;
        post_phase(r, "training", 0);
        if (!stem_train(m, train_ids, n_train, val_ids, n_val, &to, on_step, r, &tr, &e)) {
            stem_model_free(m);
            break;
        }
        if (tr.cancelled || g_cancellable_is_cancelled(c)) {
            stem_model_free(m);
            break;
        }
        post_phase(r, "saving", 1);
        GHashTable *meta = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
        g_hash_table_insert(meta, "provenance", g_strdup_printf(
            "{\"program\":\"stem-workbench %s\",\"preset\":\"%s\",\"steps\":%d,\"batch\":%d,\"seq\":%d,\"lr\":%g,"
            "\"seed\":%" G_GUINT64_FORMAT ",\"train_tokens\":%zu,\"val_loss\":%.4f,\"final_loss\":%.4f}",
            STEM_VERSION, p->info.name, to.steps, to.batch, to.seq, to.optim.lr, to.seed, n_train, tr.val_loss,
            tr.final_loss));
        char *dir = g_path_get_dirname(r->out[run]);
        g_mkdir_with_parents(dir, 0755);
        g_free(dir);
        gboolean ok = stem_model_save(m, r->out[run], FALSE, meta, &e);
        g_hash_table_unref(meta);
        stem_model_free(m);
        if (!ok) break;
        res->paths[res->n] = g_strdup(r->out[run]);
        res->dense[res->n] = r->cfg[run].stem_mask == 0;
        res->final_loss[res->n] = tr.final_loss;
        res->val_loss[res->n] = tr.val_loss;
        res->tokens_per_s[res->n] = tr.tokens_per_s;
        res->seconds[res->n] = tr.elapsed_s;
        res->n++;
    }
    if (tok) stem_tokenizer_free(tok);
    g_free(tok_json);
    g_free(train_ids);
    g_free(val_ids);
    if (e) {
        stem_trainer_result_free(res);
        g_task_return_error(task, e);
    } else if (g_cancellable_is_cancelled(c)) {
        stem_trainer_result_free(res);
        g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "Training cancelled");
    } else {
        post_phase(r, "done", 1);
        g_task_return_pointer(task, res, (GDestroyNotify)stem_trainer_result_free);
    }
}

/* ------------------------------------------------------------------ API (main thread) */

StemTrainer *stem_trainer_new(void) { return g_object_new(STEM_TYPE_TRAINER, NULL); }
gboolean stem_trainer_get_running(StemTrainer *self) { return self->task != NULL; }

void stem_trainer_cancel(StemTrainer *self)
{
    if (self->cancellable) g_cancellable_cancel(self->cancellable);
}

static void cancel_other(GCancellable *c, gpointer other)
{
    g_cancellable_cancel(other);
}

static void on_completed(GTask *task, GParamSpec *pspec, StemTrainer *self)
{
    if (self->task != task) return;
    g_clear_object(&self->task);
    g_clear_object(&self->cancellable);
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_RUNNING]);
}

gboolean stem_trainer_start(StemTrainer *self, const char *preset, StemTrainKind kind, const char *stem_layers,
                            int steps, const char *out, GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data, GError **error)
{
    g_return_val_if_fail(STEM_IS_TRAINER(self), FALSE);
    if (self->task) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_BUSY, "A training run is already going");
        return FALSE;
    }
    const Preset *p = find_preset(preset);
    if (!p) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Unknown preset '%s'", preset ? preset : "");
        return FALSE;
    }
    if (!out || !*out) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "No output file");
        return FALSE;
    }
    Run *r = g_new0(Run, 1);
    r->preset = p;
    r->steps = steps > 0 ? steps : p->info.steps;
    StemConfig c = p->cfg;
    const char *spec = kind == STEM_TRAIN_DENSE ? "none" : stem_layers && *stem_layers ? stem_layers : p->stem_layers;
    if (!stem_config_parse_layers(spec, c.n_layers, &c.stem_mask, error) || !stem_config_validate(&c, error)) {
        run_free(r);
        return FALSE;
    }
    if (kind != STEM_TRAIN_DENSE && c.stem_mask == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "The STEM layer set '%s' selects no layer: choose Dense instead", spec);
        run_free(r);
        return FALSE;
    }
    r->cfg[0] = c;
    r->out[0] = g_strdup(out);
    r->n_runs = 1;
    if (kind == STEM_TRAIN_BOTH) {
        r->cfg[1] = c;
        r->cfg[1].stem_mask = 0;
        const char *dot = g_str_has_suffix(out, ".safetensors") ? out + strlen(out) - strlen(".safetensors") : NULL;
        r->out[1] = dot ? g_strdup_printf("%.*s-dense.safetensors", (int)(dot - out), out)
                        : g_strdup_printf("%s-dense", out);
        r->n_runs = 2;
    }
    r->ctx = g_main_context_ref_thread_default();
    r->trainer = self;
    self->cancellable = g_cancellable_new();
    if (cancellable)
        g_cancellable_connect(cancellable, G_CALLBACK(cancel_other), g_object_ref(self->cancellable), g_object_unref);
    r->cancellable = self->cancellable;
    GTask *task = g_task_new(self, self->cancellable, callback, user_data);
    g_task_set_source_tag(task, stem_trainer_start);
    g_task_set_name(task, "stem-train");
    g_task_set_task_data(task, r, run_free);
    /* cancellation is reported by the thread itself, after it stopped */
    g_task_set_return_on_cancel(task, FALSE);
    g_task_set_check_cancellable(task, FALSE);
    self->task = g_object_ref(task);
    g_signal_connect_object(task, "notify::completed", G_CALLBACK(on_completed), self, 0);
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_RUNNING]);
    g_task_run_in_thread(task, train_thread);
    g_object_unref(task);
    return TRUE;
}

StemTrainerResult *stem_trainer_finish(StemTrainer *self, GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, self), NULL);
    return g_task_propagate_pointer(G_TASK(result), error);
}

static void stem_trainer_dispose(GObject *object)
{
    StemTrainer *self = STEM_TRAINER(object);
    stem_trainer_cancel(self);
    g_clear_object(&self->task);
    g_clear_object(&self->cancellable);
    G_OBJECT_CLASS(stem_trainer_parent_class)->dispose(object);
}

static void stem_trainer_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemTrainer *self = STEM_TRAINER(object);
    switch (id) {
    case PROP_RUNNING: g_value_set_boolean(value, self->task != NULL); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_trainer_class_init(StemTrainerClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    oc->dispose = stem_trainer_dispose;
    oc->get_property = stem_trainer_get_property;
    properties[PROP_RUNNING] = g_param_spec_boolean("running", NULL, NULL, FALSE,
                                                    G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);
    /* progress(const StemTrainerProgress *) */
    signals[SIG_PROGRESS] = g_signal_new("progress", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                                         NULL, G_TYPE_NONE, 1, G_TYPE_POINTER);
}

static void stem_trainer_init(StemTrainer *self) {}
