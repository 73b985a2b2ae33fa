/* StemTrainPage (see stem-train-page.h). */
#include "stem-train-page.h"
#include "stem-chart.h"
#include "stem-state.h"

#include <math.h>
#include <string.h>

typedef struct {
    GArray *x, *y;               /* training loss per step (double) */
    GArray *vx, *vy;             /* validation loss */
    char *label;                 /* "STEM (tiny)" */
} Curve;

struct _StemTrainPage {
    GtkWidget parent_instance;
    StemSession *session;
    StemTrainer *trainer;
    Curve curve[2];              /* [0] STEM, [1] dense: the latest run of each */
    char *outcome;
    char *running_preset;

    /* template */
    GtkDropDown *preset_dropdown, *kind_dropdown;
    GtkEntry *layers_entry, *out_entry;
    GtkSpinButton *steps_spin;
    GtkCheckButton *open_check;
    GtkProgressBar *progress;
    GtkLabel *step_label, *loss_label, *speed_label, *eta_label, *result_label;
    StemChart *chart;
};

G_DEFINE_FINAL_TYPE(StemTrainPage, stem_train_page, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_SESSION, N_PROPS };
static GParamSpec *properties[N_PROPS];

gboolean stem_train_page_get_running(StemTrainPage *self) { return stem_trainer_get_running(self->trainer); }
const char *stem_train_page_get_outcome(StemTrainPage *self) { return self->outcome; }

int stem_train_page_get_n_points(StemTrainPage *self, gboolean dense)
{
    GArray *x = self->curve[dense ? 1 : 0].x;
    return x ? (int)x->len : 0;
}

static void curve_clear(Curve *c)
{
    g_clear_pointer(&c->x, g_array_unref);
    g_clear_pointer(&c->y, g_array_unref);
    g_clear_pointer(&c->vx, g_array_unref);
    g_clear_pointer(&c->vy, g_array_unref);
    g_clear_pointer(&c->label, g_free);
}

static void curve_reset(Curve *c, const char *label)
{
    curve_clear(c);
    c->x = g_array_new(FALSE, FALSE, sizeof(double));
    c->y = g_array_new(FALSE, FALSE, sizeof(double));
    c->vx = g_array_new(FALSE, FALSE, sizeof(double));
    c->vy = g_array_new(FALSE, FALSE, sizeof(double));
    c->label = g_strdup(label);
}

static double *bag_copy(StemBag *bag, GArray *a)
{
    double *d = stem_bag_new0(bag, double, a->len);
    memcpy(d, a->data, sizeof(double) * a->len);
    return d;
}

static void update_chart(StemTrainPage *self)
{
    int n = 0;
    for (int k = 0; k < 2; k++) n += self->curve[k].x ? 1 + (self->curve[k].vx->len > 0) : 0;
    if (!n) return;
    StemBag *bag = stem_bag_new();
    VizLines *l = stem_bag_new0(bag, VizLines, 1);
    VizLineSeries *s = stem_bag_new0(bag, VizLineSeries, n);
    int i = 0;
    for (int k = 0; k < 2; k++) {
        Curve *c = &self->curve[k];
        if (!c->x) continue;
        s[i] = (VizLineSeries){ .name = stem_bag_printf(bag, "%s training loss", c->label), .n = (int)c->x->len,
                                .x = bag_copy(bag, c->x), .y = bag_copy(bag, c->y), .color = k };
        i++;
        if (c->vx->len) {
            s[i] = (VizLineSeries){ .name = stem_bag_printf(bag, "%s validation", c->label), .n = (int)c->vx->len,
                                    .x = bag_copy(bag, c->vx), .y = bag_copy(bag, c->vy), .color = k,
                                    .dashed = TRUE, .markers = TRUE };
            i++;
        }
    }
    l->title = "Training loss";
    l->subtitle = self->curve[0].x && self->curve[1].x ? "STEM and its dense baseline on the same data and seed"
                                                       : "cross-entropy of the next token";
    l->x_label = "step";
    l->y_label = "loss (nats per token)";
    l->n_series = n;
    l->series = s;
    /* the range of the data: the interesting part is the gap between runs */
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < n; k++)
        for (int j = 0; j < s[k].n; j++)
            if (isfinite(s[k].y[j])) {
                lo = MIN(lo, s[k].y[j]);
                hi = MAX(hi, s[k].y[j]);
            }
    if (isfinite(lo) && hi > lo) {
        l->y_min = MAX(0, lo - 0.08 * (hi - lo));
        l->y_max = hi + 0.08 * (hi - lo);
    }
    stem_chart_set(self->chart, viz_draw_lines, l, bag);
}

/* ------------------------------------------------------------------ progress */

static char *format_duration(double s)
{
    if (!isfinite(s) || s < 0) return g_strdup("—");
    int t = (int)(s + 0.5);
    if (t >= 3600) return g_strdup_printf("%d h %02d min", t / 3600, t / 60 % 60);
    if (t >= 60) return g_strdup_printf("%d min %02d s", t / 60, t % 60);
    return g_strdup_printf("%d s", t);
}

static void on_progress(StemTrainer *trainer, const StemTrainerProgress *p, StemTrainPage *self)
{
    const char *who = p->dense ? "dense" : "STEM";
    Curve *c = &self->curve[p->dense ? 1 : 0];
    char *text = NULL;
    if (!g_strcmp0(p->phase, "corpus")) {
        text = g_strdup("Building the corpus…");
        gtk_progress_bar_pulse(self->progress);
    } else if (!g_strcmp0(p->phase, "tokenizer")) {
        text = g_strdup_printf("Training the tokenizer… %.0f %%", 100 * p->fraction);
        gtk_progress_bar_set_fraction(self->progress, p->fraction);
    } else if (!g_strcmp0(p->phase, "training")) {
        if (p->step == 0) {
            char *label = g_strdup_printf("%s (%s)", who, self->running_preset);
            curve_reset(c, label);
            g_free(label);
        } else {
            if (c->x && (c->x->len == 0 || g_array_index(c->x, double, c->x->len - 1) < p->step)) {
                double x = p->step, y = p->loss;
                g_array_append_val(c->x, x);
                g_array_append_val(c->y, y);
            }
            /* the engine repeats the latest validation loss until the next one */
            if (c->vx && isfinite(p->val_loss) &&
                (c->vy->len == 0 || g_array_index(c->vy, double, c->vy->len - 1) != p->val_loss)) {
                double x = p->step, y = p->val_loss;
                g_array_append_val(c->vx, x);
                g_array_append_val(c->vy, y);
            }
            char *s = g_strdup_printf("step %d / %d", p->step, p->steps);
            gtk_label_set_text(self->step_label, s);
            g_free(s);
            s = isfinite(p->val_loss) ? g_strdup_printf("loss %.3f · validation %.3f", p->loss, p->val_loss)
                                      : g_strdup_printf("loss %.3f", p->loss);
            gtk_label_set_text(self->loss_label, s);
            g_free(s);
            s = g_strdup_printf("%.0f tokens/s", p->tokens_per_s);
            gtk_label_set_text(self->speed_label, s);
            g_free(s);
            char *eta = format_duration(p->eta_s);
            s = g_strdup_printf("ETA %s", eta);
            gtk_label_set_text(self->eta_label, s);
            g_free(s);
            g_free(eta);
            update_chart(self);
        }
        text = g_strdup_printf("Training %s model… %.0f %%", who, 100 * p->fraction);
        gtk_progress_bar_set_fraction(self->progress, p->fraction);
    } else if (!g_strcmp0(p->phase, "saving")) {
        text = g_strdup_printf("Saving the %s model…", who);
    } else if (!g_strcmp0(p->phase, "done")) {
        text = g_strdup("Done");
        gtk_progress_bar_set_fraction(self->progress, 1);
    }
    if (text) gtk_progress_bar_set_text(self->progress, text);
    g_free(text);
}

static void set_outcome(StemTrainPage *self, const char *outcome)
{
    g_free(self->outcome);
    self->outcome = g_strdup(outcome);
}

static void on_trained(GObject *src, GAsyncResult *res, gpointer user)
{
    StemTrainPage *self = user;
    GError *e = NULL;
    StemTrainerResult *r = stem_trainer_finish(STEM_TRAINER(src), res, &e);
    if (!self->session) {   /* disposed meanwhile */
        stem_trainer_result_free(r);
        g_clear_error(&e);
        g_object_unref(self);
        return;
    }
    if (!r) {
        gboolean cancelled = stem_error_is_cancelled(e);
        gtk_progress_bar_set_text(self->progress, cancelled ? "Cancelled — nothing was written" : "Failed");
        set_outcome(self, cancelled ? "cancelled" : e->message);
        stem_session_report(self->session, "Training failed", e);
        g_clear_error(&e);
    } else {
        GString *s = g_string_new(NULL);
        for (int i = 0; i < r->n; i++)
            g_string_append_printf(s, "%s%s: loss %.3f, validation %.3f, %.0f tokens/s, %.0f s — %s", i ? "\n" : "",
                                   r->dense[i] ? "Dense" : "STEM", r->final_loss[i], r->val_loss[i],
                                   r->tokens_per_s[i], r->seconds[i], r->paths[i]);
        gtk_label_set_text(self->result_label, s->str);
        g_string_free(s, TRUE);
        set_outcome(self, "done");
        if (r->n > 0 && gtk_check_button_get_active(self->open_check))
            stem_session_open_async(self->session, r->paths[0], NULL, NULL, NULL, NULL);
        stem_session_toast(self->session, "Training finished");
        stem_trainer_result_free(r);
    }
    gtk_editable_set_text(GTK_EDITABLE(self->out_entry), "");
    g_object_unref(self);
}

static void on_running(StemTrainer *t, GParamSpec *pspec, StemTrainPage *self)
{
    gboolean running = stem_trainer_get_running(t);
    gtk_widget_action_set_enabled(GTK_WIDGET(self), "train.start", !running);
    gtk_widget_action_set_enabled(GTK_WIDGET(self), "train.cancel", running);
}

/* ------------------------------------------------------------------ actions */

static const char *selected_preset(StemTrainPage *self)
{
    const StemTrainPresetInfo *p = stem_trainer_preset((int)gtk_drop_down_get_selected(self->preset_dropdown));
    return p ? p->name : "tiny";
}

static void start(StemTrainPage *self)
{
    const char *preset = selected_preset(self);
    StemTrainKind kind = (StemTrainKind)gtk_drop_down_get_selected(self->kind_dropdown);
    const char *layers = gtk_editable_get_text(GTK_EDITABLE(self->layers_entry));
    int steps = gtk_spin_button_get_value_as_int(self->steps_spin);
    const char *out_text = gtk_editable_get_text(GTK_EDITABLE(self->out_entry));
    char *out = NULL;
    if (out_text && *out_text) {
        out = g_strdup(out_text);
    } else {
        GDateTime *now = g_date_time_new_now_local();
        char *stamp = g_date_time_format(now, "%Y%m%d-%H%M%S");
        char *name = g_strdup_printf("%s-%s-%s.safetensors", preset, kind == STEM_TRAIN_DENSE ? "dense" : "stem", stamp);
        out = g_build_filename(stem_models_dir(), name, NULL);
        gtk_editable_set_text(GTK_EDITABLE(self->out_entry), out);
        g_free(name);
        g_free(stamp);
        g_date_time_unref(now);
    }
    GError *e = NULL;
    g_free(self->running_preset);
    self->running_preset = g_strdup(preset);
    set_outcome(self, NULL);
    gtk_label_set_text(self->result_label, "");
    if (!stem_trainer_start(self->trainer, preset, kind, layers, steps, out, NULL, on_trained, g_object_ref(self), &e)) {
        g_object_unref(self);
        set_outcome(self, e->message);
        stem_session_report(self->session, "Cannot start training", e);
        g_clear_error(&e);
    } else {
        gtk_progress_bar_set_fraction(self->progress, 0);
        gtk_progress_bar_set_text(self->progress, "Starting…");
    }
    g_free(out);
}

static void start_action(GtkWidget *widget, const char *name, GVariant *param)
{
    start(STEM_TRAIN_PAGE(widget));
}

static void cancel_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemTrainPage *self = STEM_TRAIN_PAGE(widget);
    stem_trainer_cancel(self->trainer);
    gtk_progress_bar_set_text(self->progress, "Cancelling…");
}

void stem_train_page_configure(StemTrainPage *self, const char *preset, StemTrainKind kind, const char *stem_layers,
                               int steps, const char *out)
{
    for (int i = 0; i < stem_trainer_n_presets(); i++)
        if (!g_strcmp0(stem_trainer_preset(i)->name, preset)) gtk_drop_down_set_selected(self->preset_dropdown, i);
    gtk_drop_down_set_selected(self->kind_dropdown, kind);
    gtk_editable_set_text(GTK_EDITABLE(self->layers_entry), stem_layers ? stem_layers : "");
    gtk_spin_button_set_value(self->steps_spin, steps);
    gtk_editable_set_text(GTK_EDITABLE(self->out_entry), out ? out : "");
}

void stem_train_page_train_default(StemTrainPage *self)
{
    if (stem_trainer_get_running(self->trainer)) return;
    stem_train_page_configure(self, "default", STEM_TRAIN_STEM, NULL, 0, stem_default_model_path());
    gtk_check_button_set_active(self->open_check, TRUE);
    gtk_widget_activate_action(GTK_WIDGET(self), "train.start", NULL);
}

/* ------------------------------------------------------------------ GObject */

static void stem_train_page_dispose(GObject *object)
{
    StemTrainPage *self = STEM_TRAIN_PAGE(object);
    if (self->trainer) {
        g_signal_handlers_disconnect_by_data(self->trainer, self);
        stem_trainer_cancel(self->trainer);
    }
    g_clear_object(&self->trainer);
    g_clear_object(&self->session);
    for (int k = 0; k < 2; k++) curve_clear(&self->curve[k]);
    gtk_widget_dispose_template(GTK_WIDGET(object), STEM_TYPE_TRAIN_PAGE);
    /* the template's root has no id: unparent it ourselves */
    GtkWidget *child;
    while ((child = gtk_widget_get_first_child(GTK_WIDGET(object)))) gtk_widget_unparent(child);
    G_OBJECT_CLASS(stem_train_page_parent_class)->dispose(object);
}

static void stem_train_page_finalize(GObject *object)
{
    StemTrainPage *self = STEM_TRAIN_PAGE(object);
    g_free(self->outcome);
    g_free(self->running_preset);
    G_OBJECT_CLASS(stem_train_page_parent_class)->finalize(object);
}

static void stem_train_page_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemTrainPage *self = STEM_TRAIN_PAGE(object);
    switch (id) {
    case PROP_SESSION: g_value_set_object(value, self->session); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_train_page_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemTrainPage *self = STEM_TRAIN_PAGE(object);
    switch (id) {
    case PROP_SESSION: g_set_object(&self->session, g_value_get_object(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_train_page_class_init(StemTrainPageClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    oc->dispose = stem_train_page_dispose;
    oc->finalize = stem_train_page_finalize;
    oc->get_property = stem_train_page_get_property;
    oc->set_property = stem_train_page_set_property;
    properties[PROP_SESSION] = g_param_spec_object("session", NULL, NULL, STEM_TYPE_SESSION,
                                                   G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    g_type_ensure(STEM_TYPE_CHART);
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/org/stemworkbench/Workbench/stem-train-page.ui");
    gtk_widget_class_bind_template_child(wc, StemTrainPage, preset_dropdown);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, kind_dropdown);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, layers_entry);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, out_entry);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, steps_spin);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, open_check);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, progress);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, step_label);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, loss_label);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, speed_label);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, eta_label);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, result_label);
    gtk_widget_class_bind_template_child(wc, StemTrainPage, chart);
    gtk_widget_class_install_action(wc, "train.start", NULL, start_action);
    gtk_widget_class_install_action(wc, "train.cancel", NULL, cancel_action);
}

static void stem_train_page_init(StemTrainPage *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
    GtkStringList *presets = gtk_string_list_new(NULL);
    for (int i = 0; i < stem_trainer_n_presets(); i++)
        gtk_string_list_append(presets, stem_trainer_preset(i)->description);
    gtk_drop_down_set_model(self->preset_dropdown, G_LIST_MODEL(presets));
    g_object_unref(presets);
    self->trainer = stem_trainer_new();
    g_signal_connect_object(self->trainer, "progress", G_CALLBACK(on_progress), self, 0);
    g_signal_connect_object(self->trainer, "notify::running", G_CALLBACK(on_running), self, 0);
    on_running(self->trainer, NULL, self);
}
