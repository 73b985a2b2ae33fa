/* StemPredictPage (see stem-predict-page.h). */
#include "stem-predict-page.h"
#include "stem-chart.h"
#include "stem-util.h"
#include "engine/sampler.h"
#include "viz/lens.h"

#include <math.h>
#include <string.h>

#define LENS_K 5

typedef struct {
    char *prompt;
    int k;
    int ids[STEM_PREDICT_K];
    float probs[STEM_PREDICT_K];
    char *labels[STEM_PREDICT_K + 1];   /* NULL-terminated */
    int n_rows;                          /* logit lens rows (0: none) */
    char **lens_text;                    /* [n_rows * LENS_K] */
    double *lens_probs;                  /* [n_rows * LENS_K] */
    char **row_labels;                   /* [n_rows] */
    double ms;
} Prediction;

static void prediction_free(gpointer p)
{
    Prediction *r = p;
    if (!r) return;
    g_free(r->prompt);
    for (int i = 0; i < r->k; i++) g_free(r->labels[i]);
    for (int i = 0; i < r->n_rows * LENS_K; i++) g_free(r->lens_text[i]);
    for (int i = 0; i < r->n_rows; i++) g_free(r->row_labels[i]);
    g_free(r->lens_text);
    g_free(r->lens_probs);
    g_free(r->row_labels);
    g_free(r);
}

struct _StemPredictPage {
    GtkWidget parent_instance;
    StemSession *session;
    Prediction *shown;           /* the top-k on screen */
    char *generation;
    guint n_updates;
    gboolean syncing;            /* entry <-> session prompt */

    /* template */
    GtkEntry *prompt_entry;
    GtkLabel *tokens_label, *generation_label;
    StemChart *topk_chart, *lens_chart;
    GtkSpinButton *n_spin;
};

G_DEFINE_FINAL_TYPE(StemPredictPage, stem_predict_page, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_SESSION, N_PROPS };
static GParamSpec *properties[N_PROPS];

GtkEditable *stem_predict_page_get_entry(StemPredictPage *self) { return GTK_EDITABLE(self->prompt_entry); }
const char *stem_predict_page_get_topk_prompt(StemPredictPage *self) { return self->shown ? self->shown->prompt : NULL; }
const char *stem_predict_page_get_generation(StemPredictPage *self) { return self->generation; }
guint stem_predict_page_get_n_updates(StemPredictPage *self) { return self->n_updates; }

int stem_predict_page_get_topk(StemPredictPage *self, const char *const **labels, const int **ids, const float **probs)
{
    if (!self->shown) return 0;
    if (labels) *labels = (const char *const *)self->shown->labels;
    if (ids) *ids = self->shown->ids;
    if (probs) *probs = self->shown->probs;
    return self->shown->k;
}

/* ------------------------------------------------------------------ the job (worker) */

static gpointer predict_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemModel *m = stem_session_ctx_model(ctx);
    const char *prompt = data;
    gint64 t0 = g_get_monotonic_time();
    Prediction *r = g_new0(Prediction, 1);
    r->prompt = g_strdup(prompt);
    size_t n = 0;
    int32_t *ids = *prompt ? stem_tokenizer_encode(m->tok, prompt, strlen(prompt), &n) : NULL;
    if (n == 0) {
        g_free(ids);
        return r;
    }
    StemTopk top[STEM_PREDICT_K];
    r->k = stem_topk(m, ids, (int)n, MIN(STEM_PREDICT_K, m->cfg.vocab), top);
    for (int i = 0; i < r->k; i++) {
        r->ids[i] = top[i].id;
        r->probs[i] = top[i].prob;
        r->labels[i] = stem_token_display(m->tok, top[i].id);
    }
    VizLens lens;
    if (viz_logit_lens(m, ids, (int)n, LENS_K, top[0].id, &lens, NULL)) {
        int k = MIN(lens.k, LENS_K);
        r->n_rows = lens.n_rows;
        r->lens_text = g_new0(char *, (size_t)lens.n_rows * LENS_K);
        r->lens_probs = g_new(double, (size_t)lens.n_rows * LENS_K);
        r->row_labels = g_new0(char *, lens.n_rows);
        for (int row = 0; row < lens.n_rows; row++) {
            int l = row - 1;
            r->row_labels[row] = row == 0 ? g_strdup("embeddings")
                                 : g_strdup_printf("layer %d %s", l, stem_config_is_stem(&m->cfg, l) ? "STEM" : "dense");
            for (int j = 0; j < LENS_K; j++) {
                int idx = row * LENS_K + j;
                if (j < k) {
                    r->lens_text[idx] = stem_token_display(m->tok, lens.ids[row * lens.k + j]);
                    r->lens_probs[idx] = lens.probs[row * lens.k + j];
                } else {
                    r->lens_text[idx] = g_strdup("");
                    r->lens_probs[idx] = NAN;
                }
            }
        }
        viz_lens_clear(&lens);
    }
    g_free(ids);
    r->ms = (g_get_monotonic_time() - t0) / 1000.0;
    return r;
}

typedef struct {
    char *prompt;
    int n;
} GenIn;

static void gen_in_free(gpointer p)
{
    GenIn *g = p;
    g_free(g->prompt);
    g_free(g);
}

static gpointer generate_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemModel *m = stem_session_ctx_model(ctx);
    GenIn *in = data;
    size_t n = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, in->prompt, strlen(in->prompt), &n);
    if (n == 0) {
        g_free(ids);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "The prompt is empty");
        return NULL;
    }
    int n_out = 0;
    int32_t *gen = stem_generate(m, ids, (int)n, in->n, 0.0f, 1, &n_out);
    size_t len = 0;
    char *text = stem_tokenizer_decode(m->tok, gen, (size_t)n_out, &len);
    char *valid = g_utf8_make_valid(text, (gssize)len);
    g_free(text);
    g_free(gen);
    g_free(ids);
    return valid;
}

/* ------------------------------------------------------------------ showing results */

static void show_prediction(StemPredictPage *self, Prediction *r)
{
    g_clear_pointer(&self->shown, prediction_free);
    self->shown = r;
    self->n_updates++;
    if (r->k == 0) {
        stem_chart_set_placeholder(self->topk_chart, "Type a prompt");
        stem_chart_set_placeholder(self->lens_chart, "");
        return;
    }
    StemBag *bag = stem_bag_new();
    VizBarGroups *g = stem_bag_new0(bag, VizBarGroups, 1);
    VizBarPanel *panel = stem_bag_new0(bag, VizBarPanel, 1);
    VizBar *bars = stem_bag_new0(bag, VizBar, r->k);
    for (int i = 0; i < r->k; i++)
        bars[i] = (VizBar){ .label = stem_bag_strdup(bag, r->labels[i]), .value = r->probs[i], .emphasis = i == 0 };
    panel->title = "Next token";
    panel->subtitle = stem_bag_strdup(bag, r->prompt);
    panel->n = r->k;
    panel->bars = bars;
    g->title = "Top-10 next tokens";
    g->subtitle = stem_bag_printf(bag, "computed in %.1f ms", r->ms);
    g->value_label = "probability (%)";
    g->n_panels = 1;
    g->panels = panel;
    g->percent = TRUE;
    stem_chart_set(self->topk_chart, viz_draw_bars, g, bag);

    if (r->n_rows > 0) {
        bag = stem_bag_new();
        VizHeatmap *hm = stem_bag_new0(bag, VizHeatmap, 1);
        double *vals = stem_bag_new0(bag, double, r->n_rows * LENS_K);
        const char **cells = stem_bag_new0(bag, const char *, r->n_rows * LENS_K);
        const char **rows = stem_bag_new0(bag, const char *, r->n_rows);
        const char **cols = stem_bag_new0(bag, const char *, LENS_K);
        /* the last layer on top, the embeddings at the bottom, as the stream flows up */
        for (int row = 0; row < r->n_rows; row++) {
            int src = r->n_rows - 1 - row;
            rows[row] = stem_bag_strdup(bag, r->row_labels[src]);
            for (int j = 0; j < LENS_K; j++) {
                vals[row * LENS_K + j] = r->lens_probs[src * LENS_K + j];
                cells[row * LENS_K + j] = stem_bag_strdup(bag, r->lens_text[src * LENS_K + j]);
            }
        }
        for (int j = 0; j < LENS_K; j++) cols[j] = stem_bag_printf(bag, "#%d", j + 1);
        hm->title = "Logit lens";
        hm->subtitle = "top-5 next tokens read off the residual stream after each layer";
        hm->x_label = "rank";
        hm->y_label = "layer";
        hm->value_label = "probability (%)";
        hm->rows = r->n_rows;
        hm->cols = LENS_K;
        hm->values = vals;
        hm->cell_text = cells;
        hm->row_labels = rows;
        hm->col_labels = cols;
        hm->vmin = 0;
        hm->vmax = 0;   /* the data's range: small models spread their bets thin */
        hm->percent = TRUE;
        hm->mono_cells = TRUE;
        stem_chart_set(self->lens_chart, viz_draw_heatmap, hm, bag);
    }
}

static void on_predicted(GObject *src, GAsyncResult *res, gpointer user)
{
    StemPredictPage *self = user;
    GError *e = NULL;
    Prediction *r = stem_session_run_finish(STEM_SESSION(src), res, &e);
    if (r && self->session) show_prediction(self, r);
    else prediction_free(r);
    if (e && !g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED)) stem_session_report(STEM_SESSION(src), "Prediction", e);
    g_clear_error(&e);
    g_object_unref(self);
}

static void update_tokens(StemPredictPage *self)
{
    StemModel *m = stem_session_get_model(self->session);
    const char *prompt = stem_session_get_prompt(self->session);
    if (!m) {
        gtk_label_set_text(self->tokens_label, "");
        return;
    }
    int n = 0;
    char *t = stem_tokens_display(m->tok, prompt, &n);
    char *s = n ? g_strdup_printf("%d tokens: %s", n, t) : g_strdup("");
    gtk_label_set_text(self->tokens_label, s);
    g_free(s);
    g_free(t);
}

static void recompute(StemPredictPage *self)
{
    if (!self->session) return;
    update_tokens(self);
    if (!stem_session_has_model(self->session)) {
        g_clear_pointer(&self->shown, prediction_free);
        stem_chart_set_placeholder(self->topk_chart, "Open a model and type a prompt");
        stem_chart_set_placeholder(self->lens_chart, "The logit lens appears here");
        return;
    }
    stem_session_run(self->session, "predict", TRUE, predict_job, g_strdup(stem_session_get_prompt(self->session)),
                     g_free, prediction_free, NULL, on_predicted, g_object_ref(self));
}

/* ------------------------------------------------------------------ generate */

static void on_generated(GObject *src, GAsyncResult *res, gpointer user)
{
    StemPredictPage *self = user;
    GError *e = NULL;
    char *text = stem_session_run_finish(STEM_SESSION(src), res, &e);
    if (text && self->session) {
        g_free(self->generation);
        self->generation = text;
        char *markup = g_markup_printf_escaped("<span alpha=\"60%%\">%s</span><b>%s</b>",
                                               stem_session_get_prompt(self->session), text);
        gtk_label_set_markup(self->generation_label, markup);
        g_free(markup);
    } else {
        g_free(text);
    }
    stem_session_report(STEM_SESSION(src), "Generation", e);
    g_clear_error(&e);
    g_object_unref(self);
}

static void generate_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemPredictPage *self = STEM_PREDICT_PAGE(widget);
    if (!self->session) return;
    GenIn *in = g_new0(GenIn, 1);
    in->prompt = g_strdup(stem_session_get_prompt(self->session));
    in->n = gtk_spin_button_get_value_as_int(self->n_spin);
    gtk_label_set_text(self->generation_label, "Generating…");
    stem_session_run(self->session, "generate", TRUE, generate_job, in, gen_in_free, g_free, NULL, on_generated,
                     g_object_ref(self));
}

/* ------------------------------------------------------------------ prompt */

static void on_entry_changed(GtkEditable *entry, StemPredictPage *self)
{
    if (self->syncing || !self->session) return;
    self->syncing = TRUE;
    stem_session_set_prompt(self->session, gtk_editable_get_text(entry));
    self->syncing = FALSE;
}

static void on_entry_activate(GtkEntry *entry, StemPredictPage *self)
{
    gtk_widget_activate_action(GTK_WIDGET(self), "predict.generate", NULL);
}

static void on_prompt(StemSession *s, GParamSpec *pspec, StemPredictPage *self)
{
    if (!self->syncing && g_strcmp0(gtk_editable_get_text(GTK_EDITABLE(self->prompt_entry)), stem_session_get_prompt(s))) {
        self->syncing = TRUE;
        gtk_editable_set_text(GTK_EDITABLE(self->prompt_entry), stem_session_get_prompt(s));
        self->syncing = FALSE;
    }
    recompute(self);
}

static void on_model_changed(StemSession *s, StemPredictPage *self)
{
    g_clear_pointer(&self->generation, g_free);
    gtk_label_set_text(self->generation_label, "Generate to continue the prompt.");
    recompute(self);
}

static void on_edits_changed(StemSession *s, StemPredictPage *self)
{
    recompute(self);
}

static void set_session(StemPredictPage *self, StemSession *session)
{
    if (self->session == session) return;
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_set_object(&self->session, session);
    if (!session) return;
    g_signal_connect_object(session, "notify::prompt", G_CALLBACK(on_prompt), self, 0);
    g_signal_connect_object(session, "model-changed", G_CALLBACK(on_model_changed), self, 0);
    g_signal_connect_object(session, "edits-changed", G_CALLBACK(on_edits_changed), self, 0);
    self->syncing = TRUE;
    gtk_editable_set_text(GTK_EDITABLE(self->prompt_entry), stem_session_get_prompt(session));
    self->syncing = FALSE;
    recompute(self);
}

/* ------------------------------------------------------------------ GObject */

static void stem_predict_page_dispose(GObject *object)
{
    StemPredictPage *self = STEM_PREDICT_PAGE(object);
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_clear_object(&self->session);
    g_clear_pointer(&self->shown, prediction_free);
    g_clear_pointer(&self->generation, g_free);
    gtk_widget_dispose_template(GTK_WIDGET(object), STEM_TYPE_PREDICT_PAGE);
    /* the template's root has no id: unparent it ourselves */
    GtkWidget *child;
    while ((child = gtk_widget_get_first_child(GTK_WIDGET(object)))) gtk_widget_unparent(child);
    G_OBJECT_CLASS(stem_predict_page_parent_class)->dispose(object);
}

static void stem_predict_page_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemPredictPage *self = STEM_PREDICT_PAGE(object);
    switch (id) {
    case PROP_SESSION: g_value_set_object(value, self->session); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_predict_page_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemPredictPage *self = STEM_PREDICT_PAGE(object);
    switch (id) {
    case PROP_SESSION: set_session(self, g_value_get_object(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_predict_page_class_init(StemPredictPageClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    oc->dispose = stem_predict_page_dispose;
    oc->get_property = stem_predict_page_get_property;
    oc->set_property = stem_predict_page_set_property;
    properties[PROP_SESSION] = g_param_spec_object("session", NULL, NULL, STEM_TYPE_SESSION,
                                                   G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    g_type_ensure(STEM_TYPE_CHART);
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/org/stemworkbench/Workbench/stem-predict-page.ui");
    gtk_widget_class_bind_template_child(wc, StemPredictPage, prompt_entry);
    gtk_widget_class_bind_template_child(wc, StemPredictPage, tokens_label);
    gtk_widget_class_bind_template_child(wc, StemPredictPage, generation_label);
    gtk_widget_class_bind_template_child(wc, StemPredictPage, topk_chart);
    gtk_widget_class_bind_template_child(wc, StemPredictPage, lens_chart);
    gtk_widget_class_bind_template_child(wc, StemPredictPage, n_spin);
    gtk_widget_class_bind_template_callback(wc, on_entry_changed);
    gtk_widget_class_bind_template_callback(wc, on_entry_activate);
    gtk_widget_class_install_action(wc, "predict.generate", NULL, generate_action);
}

static void stem_predict_page_init(StemPredictPage *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
}
