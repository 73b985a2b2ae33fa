/* StemEditPage (see stem-edit-page.h). */
#include "stem-edit-page.h"
#include "stem-chart.h"
#include "stem-util.h"
#include "editdb/editdb.h"
#include "editdb/metrics.h"
#include "editdb/planner.h"
#include "viz/edits.h"
#include "viz/report.h"
#include "viz/textstats.h"

#include <math.h>
#include <string.h>

#define PREVIEW_K 8

struct _StemEditPage {
    GtkWidget parent_instance;
    StemSession *session;
    guint n_previews;
    double preview_ms, preview_alpha;
    int plan_rows;
    int n_chips, n_warnings, n_sweep_rows;
    gint64 last_applied;
    gboolean filling;

    /* template */
    GtkEntry *source_entry, *target_entry, *prompt_entry;
    GtkBox *source_chips, *target_chips, *warnings_box, *layers_box;
    GtkDropDown *kind_dropdown, *strategy_dropdown;
    GtkScale *alpha_scale;
    StemChart *preview_chart, *sweep_chart;
    GtkLabel *status_label;
};

G_DEFINE_FINAL_TYPE(StemEditPage, stem_edit_page, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_SESSION, N_PROPS };
static GParamSpec *properties[N_PROPS];

GtkEditable *stem_edit_page_get_source(StemEditPage *self) { return GTK_EDITABLE(self->source_entry); }
GtkEditable *stem_edit_page_get_target(StemEditPage *self) { return GTK_EDITABLE(self->target_entry); }
GtkRange *stem_edit_page_get_alpha(StemEditPage *self) { return GTK_RANGE(self->alpha_scale); }
guint stem_edit_page_get_n_previews(StemEditPage *self) { return self->n_previews; }
double stem_edit_page_get_preview_ms(StemEditPage *self) { return self->preview_ms; }
double stem_edit_page_get_preview_alpha(StemEditPage *self) { return self->preview_alpha; }
int stem_edit_page_get_plan_rows(StemEditPage *self) { return self->plan_rows; }
int stem_edit_page_get_n_chips(StemEditPage *self) { return self->n_chips; }
int stem_edit_page_get_n_warnings(StemEditPage *self) { return self->n_warnings; }
int stem_edit_page_get_n_sweep_rows(StemEditPage *self) { return self->n_sweep_rows; }
gint64 stem_edit_page_get_last_applied(StemEditPage *self) { return self->last_applied; }

void stem_edit_page_set_kind(StemEditPage *self, const char *kind)
{
    StemEditKind k;
    if (stem_edit_kind_from_name(kind, &k)) gtk_drop_down_set_selected(self->kind_dropdown, (guint)k);
}

/* ------------------------------------------------------------------ the recipe */

static StemEditKind current_kind(StemEditPage *self)
{
    guint k = gtk_drop_down_get_selected(self->kind_dropdown);
    return k == 1 ? STEM_EDIT_BLEND : k == 2 ? STEM_EDIT_ABLATE : STEM_EDIT_SWAP;
}

static char *layer_spec(StemEditPage *self, int *n_checked)
{
    GString *s = g_string_new(NULL);
    int n = 0, total = 0;
    for (GtkWidget *c = gtk_widget_get_first_child(GTK_WIDGET(self->layers_box)); c; c = gtk_widget_get_next_sibling(c)) {
        total++;
        if (!gtk_check_button_get_active(GTK_CHECK_BUTTON(c))) continue;
        g_string_append_printf(s, "%s%d", n ? "," : "", GPOINTER_TO_INT(g_object_get_data(G_OBJECT(c), "layer")));
        n++;
    }
    *n_checked = n;
    if (n == total) {
        g_string_free(s, TRUE);
        return g_strdup("all");
    }
    return g_string_free(s, FALSE);
}

/* FALSE (with *why) when the form does not describe an edit yet */
static gboolean build_recipe(StemEditPage *self, StemRecipe *r, char **why)
{
    stem_recipe_init(r);
    char *src = g_strstrip(g_strdup(gtk_editable_get_text(GTK_EDITABLE(self->source_entry))));
    char *tgt = g_strstrip(g_strdup(gtk_editable_get_text(GTK_EDITABLE(self->target_entry))));
    r->kind = current_kind(self);
    int n_layers = 0;
    r->layers = layer_spec(self, &n_layers);
    guint st = gtk_drop_down_get_selected(self->strategy_dropdown);
    r->strategy = st < STEM_STRAT_COUNT ? (StemSwapStrategy)st : STEM_STRAT_AUTO;
    r->alpha = r->kind == STEM_EDIT_SWAP ? 1.0 : gtk_range_get_value(GTK_RANGE(self->alpha_scale));
    *why = NULL;
    if (!*src) *why = g_strdup("Type the entity to edit (source)");
    else if (r->kind != STEM_EDIT_ABLATE && !*tgt) *why = g_strdup("Type the entity whose rows it gets (target)");
    else if (n_layers == 0) *why = g_strdup("Choose at least one layer");
    r->source = src;
    r->target = r->kind == STEM_EDIT_ABLATE ? (g_free(tgt), NULL) : tgt;
    return *why == NULL;
}

/* The prompt of the preview: the entry, else the session prompt when it names
 * the source, else the source's canonical capital prompt, else the source. */
static char *preview_prompt(StemEditPage *self, const char *source)
{
    const char *typed = gtk_editable_get_text(GTK_EDITABLE(self->prompt_entry));
    if (typed && *typed) return g_strdup(typed);
    const char *sp = self->session ? stem_session_get_prompt(self->session) : NULL;
    if (sp && source && *source && strstr(sp, source)) return g_strdup(sp);
    const StemFacts *f = self->session ? stem_session_get_facts(self->session) : NULL;
    int c = f && source ? stem_facts_find(f, source) : -1;
    if (c >= 0) return stem_facts_canonical_prompt(f, c, REL_CAPITAL);
    return g_strdup(source ? source : "");
}

/* ------------------------------------------------------------------ preview (worker) */

typedef struct {
    StemRecipe recipe;
    char *prompt;
    const StemFacts *facts;
} EditIn;

static void edit_in_free(gpointer p)
{
    EditIn *in = p;
    stem_recipe_clear(&in->recipe);
    g_free(in->prompt);
    g_free(in);
}

typedef struct {
    char *error;                 /* planning failed: shown in the page, not the banner */
    StemEditPlan *plan;
    gboolean has_shift;
    VizShift shift;
    char *prompt, *written;
    double alpha, ms;
} PreviewOut;

static void preview_out_free(gpointer p)
{
    PreviewOut *o = p;
    if (!o) return;
    g_free(o->error);
    if (o->plan) stem_edit_plan_free(o->plan);
    if (o->has_shift) viz_shift_clear(&o->shift);
    g_free(o->prompt);
    g_free(o->written);
    g_free(o);
}

static int32_t *encode(StemModel *m, const char *text, int *n)
{
    size_t nn = 0;
    int32_t *ids = text && *text ? stem_tokenizer_encode(m->tok, text, strlen(text), &nn) : NULL;
    *n = (int)nn;
    return ids;
}

static gpointer preview_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemModel *m = stem_session_ctx_model(ctx);
    StemPlanner *planner = stem_session_ctx_planner(ctx);
    EditIn *in = data;
    gint64 t0 = g_get_monotonic_time();
    PreviewOut *o = g_new0(PreviewOut, 1);
    o->alpha = in->recipe.alpha;
    o->prompt = g_strdup(in->prompt);
    GError *e = NULL;
    o->plan = stem_planner_plan(planner, &in->recipe, &e);
    if (!o->plan) {
        o->error = g_strdup(e->message);
        g_clear_error(&e);
        return o;
    }
    const StemRecipe *r = &in->recipe;
    char *sa = NULL, *ta = NULL;
    int rel = -1, sa_tok = -1, ta_tok = -1;
    if (r->target && viz_fact_answers(in->facts, in->prompt, r->source, r->target, &sa, &ta, &rel)) {
        sa_tok = viz_answer_first_token(m->tok, in->prompt, sa);
        ta_tok = viz_answer_first_token(m->tok, in->prompt, ta);
    }
    o->written = r->target ? viz_written_prompt(in->prompt, r->source, r->target) : NULL;
    int n = 0, nw = 0;
    int32_t *ids = encode(m, in->prompt, &n);
    int32_t *wids = o->written ? encode(m, o->written, &nw) : NULL;
    if (n > 0) {
        VizEditRows rows = viz_edit_rows_from_plan(o->plan);
        o->has_shift = viz_topk_shift(m, &rows, ids, n, nw ? wids : NULL, nw, PREVIEW_K, sa_tok, ta_tok, &o->shift, &e);
        if (!o->has_shift) {
            o->error = g_strdup(e->message);
            g_clear_error(&e);
        }
    }
    g_free(ids);
    g_free(wids);
    g_free(sa);
    g_free(ta);
    o->ms = (g_get_monotonic_time() - t0) / 1000.0;
    return o;
}

/* ------------------------------------------------------------------ chips */

static const StemPlanShared *find_shared(const StemEditPlan *p, int32_t token)
{
    for (guint i = 0; p && i < p->shared->len; i++) {
        const StemPlanShared *s = p->shared->pdata[i];
        if (s->token == token) return s;
    }
    return NULL;
}

static int add_chip_row(StemEditPage *self, GtkBox *box, const char *form, const int32_t *ids, int n,
                        const StemEditPlan *plan, gboolean edited, const char *note, gboolean source)
{
    StemModel *m = stem_session_get_model(self->session);
    GtkWidget *row = gtk_box_new(GTK_ORIENTATION_HORIZONTAL, 4);
    GtkWidget *fl = gtk_label_new(form);
    gtk_widget_add_css_class(fl, "dim-label");
    gtk_widget_add_css_class(fl, "caption");
    gtk_label_set_width_chars(GTK_LABEL(fl), 12);
    gtk_label_set_xalign(GTK_LABEL(fl), 0);
    gtk_box_append(GTK_BOX(row), fl);
    for (int i = 0; i < n; i++) {
        char *t = stem_token_display(m->tok, ids[i]);
        const StemPlanShared *sh = source ? find_shared(plan, ids[i]) : NULL;
        char *tip = NULL;
        const char *cls = NULL;
        if (sh) {
            GString *g = g_string_new("Shared token: editing it also edits");
            for (guint k = 0; k < sh->entities->len; k++)
                g_string_append_printf(g, "%s %s", k ? "," : "", (const char *)sh->entities->pdata[k]);
            tip = g_string_free(g, FALSE);
            cls = "warning";
        } else if (!edited) {
            tip = g_strdup(note ? note : "not edited");
            cls = "skipped";
        } else {
            tip = g_strdup_printf("token %d", ids[i]);
        }
        gtk_box_append(GTK_BOX(row), stem_chip_new(t, cls, tip));
        g_free(t);
        g_free(tip);
    }
    if (!edited && note) {
        GtkWidget *nl = gtk_label_new(note);
        gtk_widget_add_css_class(nl, "dim-label");
        gtk_widget_add_css_class(nl, "caption");
        gtk_label_set_ellipsize(GTK_LABEL(nl), PANGO_ELLIPSIZE_END);
        gtk_box_append(GTK_BOX(row), nl);
    }
    gtk_box_append(box, row);
    return n;
}

/* Without a plan: the mid-sentence tokens of what was typed. */
static void raw_chips(StemEditPage *self, GtkBox *box, const char *text, gboolean source)
{
    if (!text || !*text || !stem_session_has_model(self->session)) return;
    char *sp = g_strconcat(" ", text, NULL);
    int n = 0;
    int32_t *ids = encode(stem_session_get_model(self->session), sp, &n);
    int k = add_chip_row(self, box, "mid-sentence", ids, n, NULL, TRUE, NULL, FALSE);
    if (source) self->n_chips += k;
    g_free(ids);
    g_free(sp);
}

static void show_chips(StemEditPage *self, const StemEditPlan *plan)
{
    stem_box_clear(GTK_WIDGET(self->source_chips));
    stem_box_clear(GTK_WIDGET(self->target_chips));
    stem_box_clear(GTK_WIDGET(self->warnings_box));
    self->n_chips = 0;
    self->n_warnings = 0;
    if (!plan) {
        raw_chips(self, self->source_chips, gtk_editable_get_text(GTK_EDITABLE(self->source_entry)), TRUE);
        if (current_kind(self) != STEM_EDIT_ABLATE)
            raw_chips(self, self->target_chips, gtk_editable_get_text(GTK_EDITABLE(self->target_entry)), FALSE);
        return;
    }
    for (guint i = 0; i < plan->variants->len; i++) {
        const StemPlanVariant *v = plan->variants->pdata[i];
        self->n_chips += add_chip_row(self, self->source_chips, v->form, v->source_ids, v->n_source, plan, v->edited,
                                      v->note, TRUE);
        if (v->target_ids)
            add_chip_row(self, self->target_chips, v->form, v->target_ids, v->n_target, plan, v->edited, NULL, FALSE);
    }
    /* the first two warnings in full, the rest behind a tooltip: they are often
     * many (every shared sub-word) and the preview needs the room */
    GString *all = g_string_new(NULL);
    for (guint i = 0; i < plan->warnings->len; i++) {
        const char *w = plan->warnings->pdata[i];
        g_string_append_printf(all, "%s⚠ %s", i ? "\n" : "", w);
        self->n_warnings++;
        if (i >= 2) continue;
        char *s = i == 1 && plan->warnings->len > 2
                      ? g_strdup_printf("⚠ %s   (and %u more: hover)", w, plan->warnings->len - 2)
                      : g_strdup_printf("⚠ %s", w);
        GtkWidget *l = gtk_label_new(s);
        gtk_label_set_xalign(GTK_LABEL(l), 0);
        gtk_label_set_ellipsize(GTK_LABEL(l), PANGO_ELLIPSIZE_END);
        gtk_widget_add_css_class(l, "warning");
        gtk_box_append(self->warnings_box, l);
        g_free(s);
    }
    gtk_widget_set_tooltip_text(GTK_WIDGET(self->warnings_box), all->len ? all->str : NULL);
    g_string_free(all, TRUE);
}

static void set_status(StemEditPage *self, const char *text, gboolean error)
{
    gtk_label_set_text(self->status_label, text);
    if (error) gtk_widget_add_css_class(GTK_WIDGET(self->status_label), "error");
    else gtk_widget_remove_css_class(GTK_WIDGET(self->status_label), "error");
}

static void on_previewed(GObject *src, GAsyncResult *res, gpointer user)
{
    StemEditPage *self = user;
    GError *e = NULL;
    PreviewOut *o = stem_session_run_finish(STEM_SESSION(src), res, &e);
    if (!o || !self->session) {
        if (e && !g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED)) stem_session_report(STEM_SESSION(src), "Preview", e);
        g_clear_error(&e);
        preview_out_free(o);
        g_object_unref(self);
        return;
    }
    self->n_previews++;
    self->preview_ms = o->ms;
    self->preview_alpha = o->alpha;
    self->plan_rows = o->plan ? o->plan->n_rows : 0;
    show_chips(self, o->plan);
    if (o->error) {
        set_status(self, o->error, TRUE);
        stem_chart_set_placeholder(self->preview_chart, o->error);
    } else if (o->has_shift) {
        StemBag *bag = stem_bag_new();
        VizShift *shift = stem_bag_take(bag, g_memdup2(&o->shift, sizeof o->shift));
        o->has_shift = FALSE;   /* moved into the bag */
        stem_bag_add_destroy(bag, (GDestroyNotify)viz_shift_clear, shift);
        VizShiftChart *chart = stem_bag_new0(bag, VizShiftChart, 1);
        char *desc = stem_recipe_describe(&o->plan->recipe);
        const char *title = stem_bag_printf(bag, "%s · α %.2f", desc, o->alpha);
        g_free(desc);
        const char *prompt = stem_bag_strdup(bag, o->prompt), *written = stem_bag_strdup(bag, o->written);
        const StemTokenizer *tok = stem_session_get_model(self->session)->tok;
        char **labels[VIZ_SHIFT_N];
        viz_shift_labels(shift, tok, labels);
        for (int p = 0; p < VIZ_SHIFT_N; p++) stem_bag_add_destroy(bag, (GDestroyNotify)g_strfreev, labels[p]);
        const char *tl = shift->tgt_answer >= 0 ? stem_bag_take(bag, viz_token_label(tok, shift->tgt_answer)) : NULL;
        const char *sl = shift->src_answer >= 0 ? stem_bag_take(bag, viz_token_label(tok, shift->src_answer)) : NULL;
        viz_shift_chart_init(chart, shift, labels, tl, sl, title, prompt, written);
        stem_bag_add_destroy(bag, (GDestroyNotify)viz_shift_chart_clear, chart);
        stem_chart_set(self->preview_chart, viz_draw_bars, &chart->chart, bag);
        int n_layers = 0;
        uint64_t seen = 0;
        for (int i = 0; i < o->plan->n_rows; i++) {
            uint64_t bit = (uint64_t)1 << o->plan->layers[i];
            if (!(seen & bit)) n_layers++;
            seen |= bit;
        }
        char *s = g_strdup_printf("%d rows in %d layer%s · %.0f %% of the next-token probability moved · preview %.1f ms",
                                  o->plan->n_rows, n_layers, n_layers == 1 ? "" : "s", 100 * shift->prob_moved, o->ms);
        set_status(self, s, FALSE);
        g_free(s);
    }
    preview_out_free(o);
    g_object_unref(self);
}

static void refresh(StemEditPage *self)
{
    if (!self->session || self->filling) return;
    if (!stem_session_has_model(self->session)) {
        show_chips(self, NULL);
        stem_chart_set_placeholder(self->preview_chart, "Open a model to edit it");
        set_status(self, "", FALSE);
        return;
    }
    StemRecipe r;
    char *why = NULL;
    if (!build_recipe(self, &r, &why)) {
        show_chips(self, NULL);
        stem_chart_set_placeholder(self->preview_chart, why);
        set_status(self, "", FALSE);
        stem_recipe_clear(&r);
        g_free(why);
        return;
    }
    EditIn *in = g_new0(EditIn, 1);
    in->recipe = r;   /* moved */
    in->prompt = preview_prompt(self, r.source);
    in->facts = stem_session_get_facts(self->session);
    gtk_entry_set_placeholder_text(self->prompt_entry, in->prompt);
    stem_session_run(self->session, "edit-preview", TRUE, preview_job, in, edit_in_free, preview_out_free, NULL,
                     on_previewed, g_object_ref(self));
}

static void on_recipe_changed(StemEditPage *self)
{
    refresh(self);
}

static void on_alpha_changed(StemEditPage *self)
{
    /* moving α means blending: a swap is α = 1 by definition */
    if (current_kind(self) == STEM_EDIT_SWAP && gtk_range_get_value(GTK_RANGE(self->alpha_scale)) < 1.0) {
        gtk_drop_down_set_selected(self->kind_dropdown, 1);   /* notifies: refresh */
        return;
    }
    if (current_kind(self) != STEM_EDIT_SWAP) refresh(self);
}

/* ------------------------------------------------------------------ apply */

static gpointer apply_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = stem_session_ctx_db(ctx);
    EditIn *in = data;
    if (!db) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED, "This model has no usable edit database");
        return NULL;
    }
    gint64 id = stem_editdb_apply(db, &in->recipe, NULL, error);
    if (!id) return NULL;
    gint64 *r = g_new(gint64, 1);
    *r = id;
    return r;
}

static void on_applied(GObject *src, GAsyncResult *res, gpointer user)
{
    StemEditPage *self = user;
    StemSession *session = STEM_SESSION(src);
    GError *e = NULL;
    gint64 *id = stem_session_run_finish(session, res, &e);
    if (id) {
        self->last_applied = *id;
        char *s = g_strdup_printf("Applied patch set #%" G_GINT64_FORMAT, *id);
        stem_session_toast(session, s);
        g_free(s);
        stem_session_edits_changed(session);
        g_free(id);
    } else {
        const char *why = stem_session_get_db_error(session);
        if (why && g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED)) {
            char *msg = g_strdup_printf("Cannot apply the edit: %s", why);
            GError *e2 = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_FAILED, msg);
            stem_session_report(session, NULL, e2);
            g_error_free(e2);
            g_free(msg);
        } else {
            stem_session_report(session, "Cannot apply the edit", e);
        }
        g_clear_error(&e);
    }
    g_object_unref(self);
}

static void apply_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemEditPage *self = STEM_EDIT_PAGE(widget);
    if (!self->session) return;
    StemRecipe r;
    char *why = NULL;
    if (!build_recipe(self, &r, &why)) {
        GError *e = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, why);
        stem_session_report(self->session, "Cannot apply the edit", e);
        g_error_free(e);
        g_free(why);
        stem_recipe_clear(&r);
        return;
    }
    EditIn *in = g_new0(EditIn, 1);
    in->recipe = r;
    stem_session_run(self->session, NULL, TRUE, apply_job, in, edit_in_free, g_free, NULL, on_applied,
                     g_object_ref(self));
}

/* ------------------------------------------------------------------ relation sweep */

#define SWEEP_COLS 8

typedef struct {
    int n_rows;
    char **cells;                /* [n_rows * SWEEP_COLS] */
    char *summary;
} SweepOut;

static void sweep_out_free(gpointer p)
{
    SweepOut *o = p;
    if (!o) return;
    for (int i = 0; i < o->n_rows * SWEEP_COLS; i++) g_free(o->cells[i]);
    g_free(o->cells);
    g_free(o->summary);
    g_free(o);
}

static char *pct(double p)
{
    return isfinite(p) ? g_strdup_printf("%.1f %%", 100 * p) : g_strdup("—");
}

static gpointer sweep_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemModel *m = stem_session_ctx_model(ctx);
    StemPlanner *planner = stem_session_ctx_planner(ctx);
    EditIn *in = data;
    const StemFacts *f = in->facts;
    const StemRecipe *r = &in->recipe;
    int s = f && r->source ? stem_facts_find(f, r->source) : -1;
    int t = f && r->target ? stem_facts_find(f, r->target) : -1;
    if (s < 0 || t < 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "The relation sweep needs two countries of the facts table as source and target");
        return NULL;
    }
    StemEditPlan *plan = stem_planner_plan(planner, r, error);
    if (!plan) return NULL;
    VizEditRows rows = viz_edit_rows_from_plan(plan);
    SweepOut *o = g_new0(SweepOut, 1);
    o->cells = g_new0(char *, REL_COUNT * SWEEP_COLS);
    for (int rel = 0; rel < REL_COUNT; rel++) {
        const char *vs = stem_facts_value(f, s, rel), *vt = stem_facts_value(f, t, rel);
        if (!vs || !vt || !strcmp(vs, vt)) continue;
        char *prompt = stem_facts_canonical_prompt(f, s, rel);
        char *sa = g_strconcat(" ", vs, NULL), *ta = g_strconcat(" ", vt, NULL);
        int sa_tok = viz_answer_first_token(m->tok, prompt, sa), ta_tok = viz_answer_first_token(m->tok, prompt, ta);
        int n = 0;
        int32_t *ids = encode(m, prompt, &n);
        VizShift sh;
        if (n > 0 && viz_topk_shift(m, &rows, ids, n, NULL, 0, 1, sa_tok, ta_tok, &sh, NULL)) {
            char **row = o->cells + o->n_rows * SWEEP_COLS;
            int before = sh.top[VIZ_SHIFT_ORIGINAL][0].id, after = sh.top[VIZ_SHIFT_EDITED][0].id;
            row[0] = g_strdup(stem_relation_name(rel));
            row[1] = g_strdup(prompt);
            row[2] = g_strdup(vs);
            row[3] = g_strdup(vt);
            row[4] = stem_token_display(m->tok, before);
            row[5] = stem_token_display(m->tok, after);
            char *p0 = pct(sh.p_tgt[VIZ_SHIFT_ORIGINAL]), *p1 = pct(sh.p_tgt[VIZ_SHIFT_EDITED]);
            row[6] = g_strdup_printf("%s → %s", p0, p1);
            g_free(p0);
            g_free(p1);
            row[7] = g_strdup(after == before ? "kept" : after == ta_tok && ta_tok >= 0 ? "moved to target" : "changed");
            o->n_rows++;
            viz_shift_clear(&sh);
        }
        g_free(ids);
        g_free(sa);
        g_free(ta);
        g_free(prompt);
        if (g_cancellable_is_cancelled(c)) break;
    }
    /* the edit metrics of editdb/metrics.h for the same pair */
    StemEditEval *ev = stem_edit_eval_new(m, f);
    stem_edit_eval_before(ev, s, t);
    StemOverlaySnapshot *snap = stem_edit_plan_push(m, plan);
    int32_t *edited = g_new(int32_t, MAX(plan->assign->len, 1));
    for (guint k = 0; k < plan->assign->len; k++) edited[k] = g_array_index(plan->assign, StemPlanAssign, k).token;
    StemEditScore sc;
    stem_edit_eval_after(ev, s, t, edited, (int)plan->assign->len, &sc);
    stem_edit_plan_pop(m, snap);
    g_free(edited);
    stem_edit_eval_free(ev);
    o->summary = g_strdup_printf("efficacy %d/%d · paraphrase %d/%d · specificity %d/%d kept · fluency %.2f → %.2f bits",
                                 sc.eff_strict, sc.eff_n, sc.para_strict, sc.para_n, sc.spec_kept, sc.spec_n,
                                 sc.flu_n ? sc.flu_before / sc.flu_n : NAN, sc.flu_n ? sc.flu_after / sc.flu_n : NAN);
    stem_edit_plan_free(plan);
    return o;
}

static void on_swept(GObject *src, GAsyncResult *res, gpointer user)
{
    StemEditPage *self = user;
    GError *e = NULL;
    SweepOut *o = stem_session_run_finish(STEM_SESSION(src), res, &e);
    if (o && self->session) {
        self->n_sweep_rows = o->n_rows;
        StemBag *bag = stem_bag_new();
        VizTable *tb = stem_bag_new0(bag, VizTable, 1);
        static const char *const headers[SWEEP_COLS] = { "relation", "source prompt", "source's answer",
                                                         "target's answer", "top-1 before", "top-1 after",
                                                         "P(target's answer)", "" };
        const char **cells = stem_bag_new0(bag, const char *, MAX(o->n_rows, 1) * SWEEP_COLS);
        for (int i = 0; i < o->n_rows * SWEEP_COLS; i++) cells[i] = stem_bag_strdup(bag, o->cells[i]);
        tb->title = stem_bag_printf(bag, "Relation sweep — %s", o->summary);
        tb->n_cols = SWEEP_COLS;
        tb->n_rows = o->n_rows;
        tb->headers = headers;
        tb->cells = cells;
        tb->mono = (1u << 4) | (1u << 5);
        tb->right_align = 1u << 6;
        stem_chart_set(self->sweep_chart, viz_draw_table, tb, bag);
    }
    sweep_out_free(o);
    stem_session_report(STEM_SESSION(src), "Relation sweep", e);
    g_clear_error(&e);
    g_object_unref(self);
}

static void sweep_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemEditPage *self = STEM_EDIT_PAGE(widget);
    if (!self->session) return;
    StemRecipe r;
    char *why = NULL;
    if (!build_recipe(self, &r, &why)) {
        GError *e = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, why);
        stem_session_report(self->session, "Relation sweep", e);
        g_error_free(e);
        g_free(why);
        stem_recipe_clear(&r);
        return;
    }
    EditIn *in = g_new0(EditIn, 1);
    in->recipe = r;
    in->facts = stem_session_get_facts(self->session);
    stem_chart_set_placeholder(self->sweep_chart, "Sweeping the relations…");
    stem_session_run(self->session, "edit-sweep", TRUE, sweep_job, in, edit_in_free, sweep_out_free, NULL, on_swept,
                     g_object_ref(self));
}

/* ------------------------------------------------------------------ session */

static void on_layer_toggled(GtkCheckButton *b, StemEditPage *self)
{
    refresh(self);
}

static void fill_layers(StemEditPage *self)
{
    stem_box_clear(GTK_WIDGET(self->layers_box));
    StemModel *m = stem_session_get_model(self->session);
    if (!m) return;
    int n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (!stem_config_is_stem(&m->cfg, l)) continue;
        char *s = g_strdup_printf("%d", l);
        GtkWidget *b = gtk_check_button_new_with_label(s);
        g_free(s);
        gtk_check_button_set_active(GTK_CHECK_BUTTON(b), TRUE);
        g_object_set_data(G_OBJECT(b), "layer", GINT_TO_POINTER(l));
        g_signal_connect(b, "toggled", G_CALLBACK(on_layer_toggled), self);
        gtk_box_append(self->layers_box, b);
        n++;
    }
    if (!n) gtk_box_append(self->layers_box, gtk_label_new("no STEM layer: this model cannot be edited"));
}

static void on_model_changed(StemSession *s, StemEditPage *self)
{
    self->filling = TRUE;
    fill_layers(self);
    self->filling = FALSE;
    stem_chart_set_placeholder(self->sweep_chart,
                               "Relation sweep: run it to see which of the source's other facts the edit moves too");
    self->n_sweep_rows = 0;
    refresh(self);
}

static void on_edits_changed(StemSession *s, StemEditPage *self)
{
    refresh(self);   /* plans read the effective tables */
}

static void on_prompt(StemSession *s, GParamSpec *pspec, StemEditPage *self)
{
    if (!*gtk_editable_get_text(GTK_EDITABLE(self->prompt_entry))) refresh(self);
}

static void set_session(StemEditPage *self, StemSession *session)
{
    if (self->session == session) return;
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_set_object(&self->session, session);
    if (!session) return;
    g_signal_connect_object(session, "model-changed", G_CALLBACK(on_model_changed), self, 0);
    g_signal_connect_object(session, "edits-changed", G_CALLBACK(on_edits_changed), self, 0);
    g_signal_connect_object(session, "notify::prompt", G_CALLBACK(on_prompt), self, 0);
    on_model_changed(session, self);
}

/* ------------------------------------------------------------------ GObject */

static void stem_edit_page_dispose(GObject *object)
{
    StemEditPage *self = STEM_EDIT_PAGE(object);
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_clear_object(&self->session);
    gtk_widget_dispose_template(GTK_WIDGET(object), STEM_TYPE_EDIT_PAGE);
    /* the template's root has no id: unparent it ourselves */
    GtkWidget *child;
    while ((child = gtk_widget_get_first_child(GTK_WIDGET(object)))) gtk_widget_unparent(child);
    G_OBJECT_CLASS(stem_edit_page_parent_class)->dispose(object);
}

static void stem_edit_page_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemEditPage *self = STEM_EDIT_PAGE(object);
    switch (id) {
    case PROP_SESSION: g_value_set_object(value, self->session); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_edit_page_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemEditPage *self = STEM_EDIT_PAGE(object);
    switch (id) {
    case PROP_SESSION: set_session(self, g_value_get_object(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_edit_page_class_init(StemEditPageClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    oc->dispose = stem_edit_page_dispose;
    oc->get_property = stem_edit_page_get_property;
    oc->set_property = stem_edit_page_set_property;
    properties[PROP_SESSION] = g_param_spec_object("session", NULL, NULL, STEM_TYPE_SESSION,
                                                   G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    g_type_ensure(STEM_TYPE_CHART);
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/org/stemworkbench/Workbench/stem-edit-page.ui");
    gtk_widget_class_bind_template_child(wc, StemEditPage, source_entry);
    gtk_widget_class_bind_template_child(wc, StemEditPage, target_entry);
    gtk_widget_class_bind_template_child(wc, StemEditPage, prompt_entry);
    gtk_widget_class_bind_template_child(wc, StemEditPage, source_chips);
    gtk_widget_class_bind_template_child(wc, StemEditPage, target_chips);
    gtk_widget_class_bind_template_child(wc, StemEditPage, warnings_box);
    gtk_widget_class_bind_template_child(wc, StemEditPage, layers_box);
    gtk_widget_class_bind_template_child(wc, StemEditPage, kind_dropdown);
    gtk_widget_class_bind_template_child(wc, StemEditPage, strategy_dropdown);
    gtk_widget_class_bind_template_child(wc, StemEditPage, alpha_scale);
    gtk_widget_class_bind_template_child(wc, StemEditPage, preview_chart);
    gtk_widget_class_bind_template_child(wc, StemEditPage, sweep_chart);
    gtk_widget_class_bind_template_child(wc, StemEditPage, status_label);
    gtk_widget_class_bind_template_callback(wc, on_recipe_changed);
    gtk_widget_class_bind_template_callback(wc, on_alpha_changed);
    gtk_widget_class_install_action(wc, "edit.apply", NULL, apply_action);
    gtk_widget_class_install_action(wc, "edit.sweep", NULL, sweep_action);
}

static void stem_edit_page_init(StemEditPage *self)
{
    self->filling = TRUE;   /* template signals fire while it is built */
    gtk_widget_init_template(GTK_WIDGET(self));
    GtkStringList *st = gtk_string_list_new(NULL);
    for (int i = 0; i < STEM_STRAT_COUNT; i++) gtk_string_list_append(st, stem_strategy_name((StemSwapStrategy)i));
    gtk_drop_down_set_model(self->strategy_dropdown, G_LIST_MODEL(st));
    g_object_unref(st);
    self->preview_alpha = NAN;
    self->filling = FALSE;
}
