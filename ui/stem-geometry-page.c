/* StemGeometryPage (see stem-geometry-page.h). */
#include "stem-geometry-page.h"
#include "stem-chart.h"
#include "stem-util.h"
#include "engine/checkpoint.h"
#include "viz/geometry.h"
#include "viz/textstats.h"

#include <math.h>
#include <string.h>

#define N_COS_SAMPLE 1024      /* rows whose pairwise cosines make the histogram */
#define N_SCATTER 300          /* most frequent tokens in the PCA scatter */
#define N_NEIGHBOURS 12
#define N_BINS 60
#define CORPUS_MB 0.5          /* prose read for token frequencies and dense outputs */

/* What the worker keeps between jobs of this page (touched on the worker only;
 * reference-counted because jobs may outlive the page). */
typedef struct {
    gatomicrefcount rc;
    char *sha;                   /* model the text and sample belong to */
    int32_t *text;
    size_t n_text;
    int32_t *sample;             /* tokens by frequency */
    int n_sample;
    char *cmp_path;              /* the comparison model */
    StemModel *cmp;
    int32_t *cmp_text;
    size_t n_cmp_text;
    int32_t *cmp_sample;
    int n_cmp_sample;
    /* histogram of the last (sha, layer, generation, comparison) */
    char *h_key;
    int h_series;
    char *h_names[2];
    double *h_bins[2];
    double h_hi, h_p95[2];
    char *h_stats;
} GeoCache;

static GeoCache *geo_cache_ref(GeoCache *c)
{
    g_atomic_ref_count_inc(&c->rc);
    return c;
}

static void geo_hist_clear(GeoCache *c)
{
    g_clear_pointer(&c->h_key, g_free);
    for (int i = 0; i < 2; i++) {
        g_clear_pointer(&c->h_names[i], g_free);
        g_clear_pointer(&c->h_bins[i], g_free);
    }
    g_clear_pointer(&c->h_stats, g_free);
    c->h_series = 0;
}

static void geo_cmp_clear(GeoCache *c)
{
    g_clear_pointer(&c->cmp_path, g_free);
    g_clear_pointer(&c->cmp, stem_model_free);
    g_clear_pointer(&c->cmp_text, g_free);
    g_clear_pointer(&c->cmp_sample, g_free);
    c->n_cmp_text = 0;
    c->n_cmp_sample = 0;
}

static void geo_cache_unref(GeoCache *c)
{
    if (!c || !g_atomic_ref_count_dec(&c->rc)) return;
    g_free(c->sha);
    g_free(c->text);
    g_free(c->sample);
    geo_cmp_clear(c);
    geo_hist_clear(c);
    g_free(c);
}

/* corpus ids of tok and its tokens by frequency */
static gboolean corpus_sample(const StemTokenizer *tok, int V, int32_t **text, size_t *n_text, int32_t **sample,
                              int *n_sample, GError **error)
{
    *text = viz_corpus_ids(tok, CORPUS_MB, FALSE, n_text, error);
    if (!*text) return FALSE;
    int64_t *counts = viz_token_counts(*text, *n_text, V);
    *sample = viz_top_tokens(counts, V, MAX(N_COS_SAMPLE, N_SCATTER), n_sample);
    g_free(counts);
    return TRUE;
}

typedef struct {
    GeoCache *cache;
    int layer;
    char *cmp_path;
    char *query;
    int selected;                /* explicit selection, or -1: from the query */
} GeoIn;

static void geo_in_free(gpointer p)
{
    GeoIn *in = p;
    geo_cache_unref(in->cache);
    g_free(in->cmp_path);
    g_free(in->query);
    g_free(in);
}

typedef struct {
    int layer;
    gboolean stem;
    int n_series;
    char *names[2];
    double *bins[2];
    double hi, p95[2];
    char *stats;
    /* scatter */
    int n_points;
    double *x, *y;
    int32_t *ids;
    char **labels;
    int *group;                  /* 0 ordinary, 1 selected / match, 2 neighbour */
    char *scatter_note;
    /* selection */
    int selected;
    char *selected_label;
    int n_nb;
    int32_t nb_ids[N_NEIGHBOURS];
    float nb_cos[N_NEIGHBOURS];
    char *nb_labels[N_NEIGHBOURS];
} GeoResult;

static void geo_result_free(gpointer p)
{
    GeoResult *r = p;
    if (!r) return;
    for (int i = 0; i < 2; i++) {
        g_free(r->names[i]);
        g_free(r->bins[i]);
    }
    g_free(r->stats);
    g_free(r->x);
    g_free(r->y);
    g_free(r->ids);
    for (int i = 0; i < r->n_points; i++) g_free(r->labels[i]);
    g_free(r->labels);
    g_free(r->group);
    g_free(r->scatter_note);
    g_free(r->selected_label);
    for (int i = 0; i < r->n_nb; i++) g_free(r->nb_labels[i]);
    g_free(r);
}

/* cosine statistics of one layer of m */
static gboolean layer_stats(StemModel *m, int layer, const int32_t *sample, int n_sample, const int32_t *text,
                            size_t n_text, VizCosStats *out, GError **error)
{
    VizGeometryInput in = { .tokens = sample, .n_tokens = MIN(n_sample, N_COS_SAMPLE), .text = text,
                            .n_text = n_text, .n_positions = N_COS_SAMPLE };
    GArray *g = viz_geometry(m, (uint64_t)1 << layer, &in, error);
    if (!g) return FALSE;
    if (g->len == 0) {
        viz_geometry_free(g);
        g_set_error(error, VIZ_ERROR, 1, "no vectors for layer %d", layer);
        return FALSE;
    }
    VizLayerGeometry *lg = &g_array_index(g, VizLayerGeometry, 0);
    *out = lg->stats;
    lg->stats.hist = NULL;      /* taken */
    viz_geometry_free(g);
    return TRUE;
}

static char *short_name(const char *path)
{
    char *base = g_path_get_basename(path);
    if (g_str_has_suffix(base, ".safetensors")) base[strlen(base) - strlen(".safetensors")] = 0;
    return base;
}

static gboolean compute_hist(StemModel *m, GeoCache *c, int layer, GeoResult *r, GError **error)
{
    char *key = g_strdup_printf("%s/%d/%" G_GUINT64_FORMAT "/%s", c->sha, layer, stem_tables_generation(m->tables),
                                c->cmp_path ? c->cmp_path : "");
    if (!c->h_key || strcmp(key, c->h_key)) {
        geo_hist_clear(c);
        VizCosStats st[2];
        memset(st, 0, sizeof st);
        if (!layer_stats(m, layer, c->sample, c->n_sample, c->text, c->n_text, &st[0], error)) {
            g_free(key);
            return FALSE;
        }
        int n = 1;
        char *note = NULL;
        if (c->cmp) {
            if (layer < c->cmp->cfg.n_layers) {
                GError *e = NULL;
                if (layer_stats(c->cmp, layer, c->cmp_sample, c->n_cmp_sample, c->cmp_text, c->n_cmp_text, &st[1], &e))
                    n = 2;
                else
                    note = g_strdup_printf("comparison: %s", e->message);
                g_clear_error(&e);
            } else {
                note = g_strdup_printf("the comparison model has only %d layers", c->cmp->cfg.n_layers);
            }
        }
        double p99 = 0;
        for (int i = 0; i < n; i++) p99 = MAX(p99, st[i].p99_abs);
        c->h_hi = CLAMP(ceil(p99 * 1.3 * 100) / 100, 0.02, 1.0);
        c->h_series = n;
        char *mine = short_name(m->path ? m->path : "this model");
        for (int i = 0; i < n; i++) {
            c->h_bins[i] = g_new(double, N_BINS);
            viz_cos_stats_abs_hist(&st[i], 0, c->h_hi, N_BINS, c->h_bins[i]);
            c->h_p95[i] = st[i].p95_abs;
            StemModel *mm = i ? c->cmp : m;
            char *nm = i ? short_name(c->cmp_path) : g_strdup(mine);
            c->h_names[i] = g_strdup_printf("%s — %s layer %d", nm, stem_config_is_stem(&mm->cfg, layer) ? "STEM rows"
                                                                                                          : "dense W3·x",
                                            layer);
            g_free(nm);
        }
        GString *s = g_string_new(NULL);
        g_string_append_printf(s, "%d vectors · mean |cos| %.3f · P95 %.3f · P99 %.3f", st[0].n_rows, st[0].mean_abs,
                               st[0].p95_abs, st[0].p99_abs);
        if (n == 2) g_string_append_printf(s, "   |   comparison P95 %.3f", st[1].p95_abs);
        if (note) g_string_append_printf(s, "   (%s)", note);
        c->h_stats = g_string_free(s, FALSE);
        g_free(note);
        g_free(mine);
        for (int i = 0; i < n; i++) viz_cos_stats_clear(&st[i]);
        c->h_key = key;
        key = NULL;
    }
    g_free(key);
    r->n_series = c->h_series;
    r->hi = c->h_hi;
    for (int i = 0; i < c->h_series; i++) {
        r->names[i] = g_strdup(c->h_names[i]);
        r->bins[i] = g_memdup2(c->h_bins[i], sizeof(double) * N_BINS);
        r->p95[i] = c->h_p95[i];
    }
    r->stats = g_strdup(c->h_stats);
    return TRUE;
}

static int find_token(const StemTokenizer *tok, const char *q)
{
    if (!q || !*q) return -1;
    char *sp = g_strconcat(" ", q, NULL);
    int id = stem_tokenizer_lookup(tok, sp, strlen(sp));
    g_free(sp);
    if (id < 0) id = stem_tokenizer_lookup(tok, q, strlen(q));
    return id;
}

static gpointer geometry_job(StemSessionCtx *ctx, gpointer data, GCancellable *cancel, GError **error)
{
    StemModel *m = stem_session_ctx_model(ctx);
    GeoIn *in = data;
    GeoCache *c = in->cache;
    const int V = m->cfg.vocab, F = m->cfg.ffn_dim;
    if (in->layer < 0 || in->layer >= m->cfg.n_layers) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "No layer %d", in->layer);
        return NULL;
    }
    /* per-model data: corpus ids and the frequency sample */
    if (g_strcmp0(c->sha, m->sha256)) {
        g_clear_pointer(&c->text, g_free);
        g_clear_pointer(&c->sample, g_free);
        g_clear_pointer(&c->sha, g_free);
        geo_hist_clear(c);
        if (!corpus_sample(m->tok, V, &c->text, &c->n_text, &c->sample, &c->n_sample, error)) return NULL;
        c->sha = g_strdup(m->sha256);
    }
    if (g_strcmp0(c->cmp_path, in->cmp_path)) {
        geo_cmp_clear(c);
        geo_hist_clear(c);
        if (in->cmp_path) {
            GError *e = NULL;
            StemModel *cm = stem_model_load(in->cmp_path, &e);
            if (cm && !cm->tok) {
                g_set_error(&e, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s has no tokenizer", in->cmp_path);
                g_clear_pointer(&cm, stem_model_free);
            }
            if (cm && !corpus_sample(cm->tok, cm->cfg.vocab, &c->cmp_text, &c->n_cmp_text, &c->cmp_sample,
                                     &c->n_cmp_sample, &e))
                g_clear_pointer(&cm, stem_model_free);
            if (!cm) {
                g_propagate_prefixed_error(error, e, "Cannot compare with %s: ", in->cmp_path);
                return NULL;
            }
            c->cmp = cm;
            c->cmp_path = g_strdup(in->cmp_path);
        }
    }
    if (g_cancellable_is_cancelled(cancel)) return NULL;

    GeoResult *r = g_new0(GeoResult, 1);
    r->layer = in->layer;
    r->stem = stem_config_is_stem(&m->cfg, in->layer);
    r->selected = -1;
    if (!compute_hist(m, c, in->layer, r, error)) {
        geo_result_free(r);
        return NULL;
    }
    if (!r->stem) {
        r->scatter_note = g_strdup_printf("Layer %d is dense: its up-projection has no rows per token. "
                                          "Pick a STEM layer for the scatter and the neighbours.", in->layer);
        return r;
    }

    /* the selection and its neighbours over the whole vocabulary */
    int j = stem_config_stem_index(&m->cfg, in->layer);
    r->selected = in->selected >= 0 && in->selected < V ? in->selected : find_token(m->tok, in->query);
    float *all = NULL;
    if (r->selected >= 0) {
        r->selected_label = stem_token_display(m->tok, r->selected);
        all = g_new(float, (size_t)V * F);
        int32_t *ids = g_new(int32_t, V);
        for (int t = 0; t < V; t++) ids[t] = t;
        stem_tables_gather(m->tables, j, ids, V, all);
        g_free(ids);
        VizNeighbour nb[N_NEIGHBOURS];
        r->n_nb = viz_neighbours(all, V, F, all + (size_t)r->selected * F, NULL, r->selected, N_NEIGHBOURS, nb);
        for (int i = 0; i < r->n_nb; i++) {
            r->nb_ids[i] = nb[i].id;
            r->nb_cos[i] = nb[i].cos;
            r->nb_labels[i] = stem_token_display(m->tok, nb[i].id);
        }
    }

    /* the scatter: frequent tokens + the selection + its neighbours */
    int cap = N_SCATTER + 1 + N_NEIGHBOURS;
    r->ids = g_new(int32_t, cap);
    r->group = g_new0(int, cap);
    guint8 *in_set = g_new0(guint8, V);
    int n = 0;
    if (r->selected >= 0) {
        r->ids[n] = r->selected;
        r->group[n++] = 1;
        in_set[r->selected] = 1;
        for (int i = 0; i < r->n_nb; i++) {
            r->ids[n] = r->nb_ids[i];
            r->group[n++] = 2;
            in_set[r->nb_ids[i]] = 1;
        }
    }
    for (int i = 0; i < c->n_sample && n < cap; i++) {
        int t = c->sample[i];
        if (in_set[t]) continue;
        if (n >= N_SCATTER + (r->selected >= 0 ? 1 + r->n_nb : 0)) break;
        in_set[t] = 1;
        r->ids[n++] = t;
    }
    g_free(in_set);
    float *rows = g_new(float, (size_t)n * F);
    if (all) {
        for (int i = 0; i < n; i++) memcpy(rows + (size_t)i * F, all + (size_t)r->ids[i] * F, sizeof(float) * F);
    } else {
        stem_tables_gather(m->tables, j, r->ids, n, rows);
    }
    g_free(all);
    VizPca pca;
    if (n >= 2 && viz_pca2(rows, n, F, &pca, NULL)) {
        r->n_points = n;
        r->x = g_new(double, n);
        r->y = g_new(double, n);
        r->labels = g_new0(char *, n);
        char *q = in->query && *in->query ? g_utf8_casefold(in->query, -1) : NULL;
        for (int i = 0; i < n; i++) {
            r->x[i] = pca.coords[2 * i];
            r->y[i] = pca.coords[2 * i + 1];
            r->labels[i] = stem_token_display(m->tok, r->ids[i]);
            if (q && r->group[i] == 0) {
                char *lf = g_utf8_casefold(r->labels[i], -1);
                if (strstr(lf, q)) r->group[i] = 1;
                g_free(lf);
            }
        }
        g_free(q);
        viz_pca_clear(&pca);
    } else {
        r->scatter_note = g_strdup("Not enough rows for a PCA");
    }
    g_free(rows);
    return r;
}

/* ------------------------------------------------------------------ the page */

struct _StemGeometryPage {
    GtkWidget parent_instance;
    StemSession *session;
    GeoCache *cache;
    char *cmp_path;
    int selected_override;       /* a clicked neighbour, -1 = follow the search */
    gboolean dirty;              /* recompute when shown */
    gboolean filling;            /* filling the layer dropdown */
    GeoResult *shown;

    /* template */
    GtkDropDown *layer_dropdown;
    GtkButton *compare_button;
    GtkLabel *stats_label, *selection_label;
    StemChart *hist_chart, *scatter_chart;
    GtkSearchEntry *search_entry;
    GtkListBox *neighbour_list;
};

G_DEFINE_FINAL_TYPE(StemGeometryPage, stem_geometry_page, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_SESSION, N_PROPS };
static GParamSpec *properties[N_PROPS];

GtkEditable *stem_geometry_page_get_search(StemGeometryPage *self) { return GTK_EDITABLE(self->search_entry); }
int stem_geometry_page_get_selected(StemGeometryPage *self) { return self->shown ? self->shown->selected : -1; }
int stem_geometry_page_get_n_neighbours(StemGeometryPage *self) { return self->shown ? self->shown->n_nb : 0; }
int stem_geometry_page_get_n_series(StemGeometryPage *self) { return self->shown ? self->shown->n_series : 0; }
int stem_geometry_page_get_n_points(StemGeometryPage *self) { return self->shown ? self->shown->n_points : 0; }

int stem_geometry_page_get_layer(StemGeometryPage *self)
{
    guint i = gtk_drop_down_get_selected(self->layer_dropdown);
    return i == GTK_INVALID_LIST_POSITION ? -1 : (int)i;
}

static void show_result(StemGeometryPage *self, GeoResult *r)
{
    g_clear_pointer(&self->shown, geo_result_free);
    self->shown = r;
    gtk_label_set_text(self->stats_label, r->stats ? r->stats : "");

    StemBag *bag = stem_bag_new();
    VizHistogram *h = stem_bag_new0(bag, VizHistogram, 1);
    VizHistSeries *s = stem_bag_new0(bag, VizHistSeries, r->n_series);
    for (int i = 0; i < r->n_series; i++) {
        s[i] = (VizHistSeries){ .name = stem_bag_strdup(bag, r->names[i]), .n_bins = N_BINS, .lo = 0, .hi = r->hi,
                                .values = stem_bag_take(bag, g_memdup2(r->bins[i], sizeof(double) * N_BINS)),
                                .marker = r->p95[i], .marker_label = "P95" };
    }
    h->title = stem_bag_printf(bag, "|cosine| between vectors of layer %d", r->layer);
    h->subtitle = r->stem ? "STEM table rows of the most frequent tokens (paper Fig. 6: nearly orthogonal)"
                          : "dense up-projection outputs W3·x on corpus text";
    h->x_label = "|cos|";
    h->y_label = "pairs (%)";
    h->n_series = r->n_series;
    h->series = s;
    stem_chart_set(self->hist_chart, viz_draw_histogram, h, bag);

    if (r->n_points > 0) {
        bag = stem_bag_new();
        VizScatter *sc = stem_bag_new0(bag, VizScatter, 1);
        VizPoint *p = stem_bag_new0(bag, VizPoint, r->n_points);
        /* labelled first: the selection, its neighbours, the matches, then by frequency */
        int k = 0;
        for (int pass = 0; pass < 3; pass++)
            for (int i = 0; i < r->n_points; i++) {
                int want = pass == 0 ? 1 : pass == 1 ? 2 : 0;
                if (r->group[i] != want) continue;
                p[k++] = (VizPoint){ .x = r->x[i], .y = r->y[i], .label = stem_bag_strdup(bag, r->labels[i]),
                                     .group = r->group[i], .highlight = r->group[i] == 1 || r->ids[i] == r->selected };
            }
        static const char *const groups[] = { "frequent tokens", "selected / matching", "nearest neighbours" };
        sc->title = stem_bag_printf(bag, "PCA of layer %d table rows", r->layer);
        sc->subtitle = r->selected >= 0 ? stem_bag_printf(bag, "selected: %s", r->selected_label)
                                        : "the most frequent tokens; search to highlight";
        sc->x_label = "PC 1";
        sc->y_label = "PC 2";
        sc->n = k;
        sc->points = p;
        sc->max_labels = 30;
        sc->group_names = (const char *const *)groups;
        sc->n_groups = 3;
        stem_chart_set(self->scatter_chart, viz_draw_scatter, sc, bag);
    } else {
        stem_chart_set_placeholder(self->scatter_chart, r->scatter_note ? r->scatter_note : "");
    }

    stem_box_clear(GTK_WIDGET(self->neighbour_list));
    for (int i = 0; i < r->n_nb; i++) {
        GtkWidget *row = gtk_list_box_row_new();
        GtkWidget *box = gtk_box_new(GTK_ORIENTATION_HORIZONTAL, 8);
        gtk_widget_set_margin_start(box, 10);
        gtk_widget_set_margin_end(box, 10);
        gtk_widget_set_margin_top(box, 4);
        gtk_widget_set_margin_bottom(box, 4);
        GtkWidget *t = gtk_label_new(r->nb_labels[i]);
        gtk_label_set_xalign(GTK_LABEL(t), 0);
        gtk_widget_set_hexpand(t, TRUE);
        gtk_label_set_ellipsize(GTK_LABEL(t), PANGO_ELLIPSIZE_END);
        gtk_widget_add_css_class(t, "monospace");
        char *cs = g_strdup_printf("%.3f", r->nb_cos[i]);
        GtkWidget *v = gtk_label_new(cs);
        gtk_widget_add_css_class(v, "numeric");
        gtk_widget_add_css_class(v, "dim-label");
        g_free(cs);
        gtk_box_append(GTK_BOX(box), t);
        gtk_box_append(GTK_BOX(box), v);
        gtk_list_box_row_set_child(GTK_LIST_BOX_ROW(row), box);
        g_object_set_data(G_OBJECT(row), "token", GINT_TO_POINTER(r->nb_ids[i]));
        gtk_list_box_append(self->neighbour_list, row);
    }
    char *sel = r->selected >= 0
                    ? g_strdup_printf("Nearest neighbours of %s (id %d) by cosine of their layer-%d rows:",
                                      r->selected_label, r->selected, r->layer)
                : !r->stem ? g_strdup("Neighbours need a STEM layer.")
                : g_strdup("Search to select a token; its nearest neighbours by cosine follow.");
    gtk_label_set_text(self->selection_label, sel);
    g_free(sel);
}

static void on_computed(GObject *src, GAsyncResult *res, gpointer user)
{
    StemGeometryPage *self = user;
    GError *e = NULL;
    GeoResult *r = stem_session_run_finish(STEM_SESSION(src), res, &e);
    if (r && self->session) show_result(self, r);
    else geo_result_free(r);
    if (e && !g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED))
        stem_session_report(STEM_SESSION(src), "Geometry", e);
    if (e && self->cmp_path && self->session && !stem_error_is_cancelled(e)) {
        /* a comparison that failed is dropped, so the page recovers */
        g_clear_pointer(&self->cmp_path, g_free);
        gtk_button_set_label(self->compare_button, "Choose a Model…");
    }
    g_clear_error(&e);
    g_object_unref(self);
}

static void recompute(StemGeometryPage *self)
{
    if (!self->session) return;
    if (!stem_session_has_model(self->session)) {
        g_clear_pointer(&self->shown, geo_result_free);
        stem_chart_set_placeholder(self->hist_chart, "Open a model to see its geometry");
        stem_chart_set_placeholder(self->scatter_chart, "");
        stem_box_clear(GTK_WIDGET(self->neighbour_list));
        gtk_label_set_text(self->stats_label, "");
        return;
    }
    if (!gtk_widget_get_mapped(GTK_WIDGET(self))) {
        self->dirty = TRUE;   /* computed when the page is shown */
        return;
    }
    self->dirty = FALSE;
    int layer = stem_geometry_page_get_layer(self);
    if (layer < 0) return;
    GeoIn *in = g_new0(GeoIn, 1);
    in->cache = geo_cache_ref(self->cache);
    in->layer = layer;
    in->cmp_path = g_strdup(self->cmp_path);
    in->query = g_strdup(gtk_editable_get_text(GTK_EDITABLE(self->search_entry)));
    in->selected = self->selected_override;
    if (!self->shown) stem_chart_set_placeholder(self->hist_chart, "Computing…");
    stem_session_run(self->session, "geometry", TRUE, geometry_job, in, geo_in_free, geo_result_free, NULL,
                     on_computed, g_object_ref(self));
}

void stem_geometry_page_set_layer(StemGeometryPage *self, int layer)
{
    gtk_drop_down_set_selected(self->layer_dropdown, (guint)layer);
}

void stem_geometry_page_set_compare(StemGeometryPage *self, const char *path)
{
    g_free(self->cmp_path);
    self->cmp_path = g_strdup(path);
    char *label = NULL;
    if (path) {
        char *base = g_path_get_basename(path);
        label = g_strdup_printf("Overlay: %s", base);
        g_free(base);
    }
    gtk_button_set_label(self->compare_button, label ? label : "Choose a Model…");
    g_free(label);
    recompute(self);
}

void stem_geometry_page_activate_neighbour(StemGeometryPage *self, int index)
{
    GtkListBoxRow *row = gtk_list_box_get_row_at_index(self->neighbour_list, index);
    if (row) g_signal_emit_by_name(self->neighbour_list, "row-activated", row);
}

static void on_layer_selected(GtkDropDown *dd, GParamSpec *pspec, StemGeometryPage *self)
{
    if (!self->filling) recompute(self);
}

static void on_search_changed(GtkSearchEntry *entry, StemGeometryPage *self)
{
    self->selected_override = -1;
    recompute(self);
}

static void on_neighbour_activated(GtkListBox *box, GtkListBoxRow *row, StemGeometryPage *self)
{
    self->selected_override = GPOINTER_TO_INT(g_object_get_data(G_OBJECT(row), "token"));
    recompute(self);
}

static void on_map(GtkWidget *w, StemGeometryPage *self)
{
    if (self->dirty) recompute(self);
}

static void fill_layers(StemGeometryPage *self)
{
    StemModel *m = stem_session_get_model(self->session);
    GtkStringList *list = gtk_string_list_new(NULL);
    int first_stem = 0;
    if (m) {
        first_stem = -1;
        for (int l = 0; l < m->cfg.n_layers; l++) {
            char *s = g_strdup_printf("layer %d · %s", l, stem_config_is_stem(&m->cfg, l) ? "STEM" : "dense");
            gtk_string_list_append(list, s);
            g_free(s);
            if (first_stem < 0 && stem_config_is_stem(&m->cfg, l)) first_stem = l;
        }
        if (first_stem < 0) first_stem = 0;
    }
    self->filling = TRUE;
    gtk_drop_down_set_model(self->layer_dropdown, G_LIST_MODEL(list));
    if (m) gtk_drop_down_set_selected(self->layer_dropdown, first_stem);
    self->filling = FALSE;
    g_object_unref(list);
}

static void on_model_changed(StemSession *s, StemGeometryPage *self)
{
    g_clear_pointer(&self->shown, geo_result_free);
    self->selected_override = -1;
    fill_layers(self);
    recompute(self);
}

static void on_edits_changed(StemSession *s, StemGeometryPage *self)
{
    if (self->shown) recompute(self);
}

/* ------------------------------------------------------------------ actions */

static void on_compare_response(GtkNativeDialog *d, int response, StemGeometryPage *self)
{
    if (response == GTK_RESPONSE_ACCEPT) {
        GFile *f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(d));
        char *path = f ? g_file_get_path(f) : NULL;
        if (path) stem_geometry_page_set_compare(self, path);
        g_free(path);
        g_clear_object(&f);
    }
    g_object_unref(d);
}

static void compare_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemGeometryPage *self = STEM_GEOMETRY_PAGE(widget);
    GtkRoot *root = gtk_widget_get_root(widget);
    GtkFileChooserNative *d = gtk_file_chooser_native_new("Compare With a Model", GTK_IS_WINDOW(root) ? GTK_WINDOW(root) : NULL,
                                                          GTK_FILE_CHOOSER_ACTION_OPEN, "_Compare", "_Cancel");
    GtkFileFilter *ff = gtk_file_filter_new();
    gtk_file_filter_set_name(ff, "Models (*.safetensors)");
    gtk_file_filter_add_pattern(ff, "*.safetensors");
    gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(d), ff);
    g_object_unref(ff);
    const char *cur = self->session ? stem_session_get_model_path(self->session) : NULL;
    if (cur) {
        char *dir = g_path_get_dirname(cur);
        GFile *df = g_file_new_for_path(dir);
        gtk_file_chooser_set_current_folder(GTK_FILE_CHOOSER(d), df, NULL);
        g_object_unref(df);
        g_free(dir);
    }
    g_signal_connect(d, "response", G_CALLBACK(on_compare_response), self);
    gtk_native_dialog_show(GTK_NATIVE_DIALOG(d));
}

static void clear_compare_action(GtkWidget *widget, const char *name, GVariant *param)
{
    stem_geometry_page_set_compare(STEM_GEOMETRY_PAGE(widget), NULL);
}

/* ------------------------------------------------------------------ GObject */

static void set_session(StemGeometryPage *self, StemSession *session)
{
    if (self->session == session) return;
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_set_object(&self->session, session);
    if (!session) return;
    g_signal_connect_object(session, "model-changed", G_CALLBACK(on_model_changed), self, 0);
    g_signal_connect_object(session, "edits-changed", G_CALLBACK(on_edits_changed), self, 0);
    on_model_changed(session, self);
}

static void stem_geometry_page_dispose(GObject *object)
{
    StemGeometryPage *self = STEM_GEOMETRY_PAGE(object);
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_clear_object(&self->session);
    g_clear_pointer(&self->cache, geo_cache_unref);
    g_clear_pointer(&self->shown, geo_result_free);
    g_clear_pointer(&self->cmp_path, g_free);
    gtk_widget_dispose_template(GTK_WIDGET(object), STEM_TYPE_GEOMETRY_PAGE);
    /* the template's root has no id: unparent it ourselves */
    GtkWidget *child;
    while ((child = gtk_widget_get_first_child(GTK_WIDGET(object)))) gtk_widget_unparent(child);
    G_OBJECT_CLASS(stem_geometry_page_parent_class)->dispose(object);
}

static void stem_geometry_page_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemGeometryPage *self = STEM_GEOMETRY_PAGE(object);
    switch (id) {
    case PROP_SESSION: g_value_set_object(value, self->session); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_geometry_page_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemGeometryPage *self = STEM_GEOMETRY_PAGE(object);
    switch (id) {
    case PROP_SESSION: set_session(self, g_value_get_object(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_geometry_page_class_init(StemGeometryPageClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    oc->dispose = stem_geometry_page_dispose;
    oc->get_property = stem_geometry_page_get_property;
    oc->set_property = stem_geometry_page_set_property;
    properties[PROP_SESSION] = g_param_spec_object("session", NULL, NULL, STEM_TYPE_SESSION,
                                                   G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    g_type_ensure(STEM_TYPE_CHART);
    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/org/stemworkbench/Workbench/stem-geometry-page.ui");
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, layer_dropdown);
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, compare_button);
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, stats_label);
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, selection_label);
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, hist_chart);
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, scatter_chart);
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, search_entry);
    gtk_widget_class_bind_template_child(wc, StemGeometryPage, neighbour_list);
    gtk_widget_class_bind_template_callback(wc, on_search_changed);
    gtk_widget_class_bind_template_callback(wc, on_neighbour_activated);
    gtk_widget_class_install_action(wc, "geometry.compare", NULL, compare_action);
    gtk_widget_class_install_action(wc, "geometry.clear-compare", NULL, clear_compare_action);
}

static void stem_geometry_page_init(StemGeometryPage *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
    self->cache = g_new0(GeoCache, 1);
    g_atomic_ref_count_init(&self->cache->rc);
    self->selected_override = -1;
    g_signal_connect(self->layer_dropdown, "notify::selected", G_CALLBACK(on_layer_selected), self);
    g_signal_connect(self, "map", G_CALLBACK(on_map), self);
}
