/* stem geometry / pca / neighbours / shift / lens / localize / active-params /
 * report: the analyses of viz/ on the command line. Each prints a table (or
 * --json) and with --plot FILE.png|.svg|.pdf draws its chart with the same
 * renderers the workbench uses. */
#include "commands.h"
#include "viz/json-members.h"
#include "cli.h"
#include "editdb/editdb.h"
#include "editdb/planner.h"
#include "engine/checkpoint.h"
#include "engine/facteval.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "viz/charts.h"
#include "viz/edits.h"
#include "viz/geometry.h"
#include "viz/lens.h"
#include "viz/output.h"
#include "viz/report.h"
#include "viz/textstats.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ shared plumbing */

typedef struct {
    gboolean json;
    char *plot, *theme;
    int width, height, threads;
} VizArgs;

static void viz_args_init(VizArgs *a)
{
    memset(a, 0, sizeof *a);
    a->threads = 0;
}

#define VIZ_ENTRIES(a)                                                                                              \
    { "json", 0, 0, G_OPTION_ARG_NONE, &(a).json, "print JSON", NULL },                                              \
    { "plot", 'p', 0, G_OPTION_ARG_FILENAME, &(a).plot, "draw the chart to FILE (.png, .svg or .pdf)", "FILE" },     \
    { "theme", 0, 0, G_OPTION_ARG_STRING, &(a).theme, "chart theme: light (default) or dark", "NAME" },              \
    { "width", 0, 0, G_OPTION_ARG_INT, &(a).width, "chart width in pixels/points (default per chart)", "W" },        \
    { "height", 0, 0, G_OPTION_ARG_INT, &(a).height, "chart height (default per chart)", "H" },                      \
    { "threads", 0, 0, G_OPTION_ARG_INT, &(a).threads, "worker threads (0 = all cores)", "N" }

/* Check --plot/--theme before any work: a typo should not cost a computation. */
static const VizTheme *viz_args_check(const char *cmd, const VizArgs *a)
{
    const VizTheme *t = viz_theme_by_name(a->theme);
    if (!t) cli_usage(cmd, "unknown theme '%s' (light or dark)", a->theme);
    if (a->plot) {
        VizFormat f;
        GError *e = NULL;
        if (!viz_format_from_path(a->plot, &f, &e)) cli_usage(cmd, "%s", e->message);
    }
    if (a->width < 0 || a->height < 0 || (a->width && a->width < 200) || (a->height && a->height < 150))
        cli_usage(cmd, "--width must be >= 200 and --height >= 150");
    cli_init_threads(a->threads);
    return t;
}

static void save_plot(const VizArgs *a, VizDrawFn fn, const void *data, double w, double h)
{
    if (!a->plot) return;
    GError *e = NULL;
    const VizTheme *t = viz_theme_by_name(a->theme);
    if (!viz_render_file(a->plot, a->width ? a->width : w, a->height ? a->height : h, 2.0, fn, data, t, &e))
        cli_fail("%s", e->message);
    if (!a->json) fprintf(stderr, "wrote %s\n", a->plot);
}

static void jb(JsonBuilder *b, const char *k, gboolean v)
{
    json_builder_set_member_name(b, k);
    json_builder_add_boolean_value(b, v);
}

static char *label(StemModel *m, int id)
{
    return viz_token_label(m->tok, id);
}

/* print s left-aligned in width columns (UTF-8 aware: '␣' is one column) */
static void print_padded(const char *s, int width)
{
    fputs(s, stdout);
    for (long n = g_utf8_strlen(s, -1); n < width; n++) fputc(' ', stdout);
}

static const char *basename_of(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Encode the corpus with the model's tokenizer (the token sample and the text
 * for dense outputs); exits with a clear message. */
static int32_t *corpus_ids(StemModel *m, double mb, size_t *n)
{
    if (!m->tok) cli_fail("the model has no tokenizer: the corpus cannot be encoded");
    GError *e = NULL;
    int32_t *ids = viz_corpus_ids(m->tok, mb, FALSE, n, &e);
    if (!ids) cli_fail("%s", e->message);
    if (*n < 2) cli_fail("the corpus encodes to fewer than 2 tokens");
    return ids;
}

/* ------------------------------------------------------------------ geometry */

typedef struct {
    char *path;
    StemModel *m;
    GArray *layers;          /* VizLayerGeometry */
    int n_sample;
    size_t n_text;
} GeomRun;

static void geom_run(GeomRun *r, const char *path, const char *layer_spec, int sample, int positions, double mb)
{
    memset(r, 0, sizeof *r);
    r->path = g_strdup(path);
    r->m = cli_load_model(path);
    const StemConfig *c = &r->m->cfg;
    uint64_t mask = 0;
    GError *e = NULL;
    if (!stem_config_parse_layers(layer_spec ? layer_spec : "all", c->n_layers, &mask, &e))
        cli_usage("geometry", "%s: %s", basename_of(path), e->message);
    size_t n = 0;
    int32_t *ids = corpus_ids(r->m, mb, &n);
    int64_t *counts = viz_token_counts(ids, n, c->vocab);
    int ns = 0;
    int32_t *top = viz_top_tokens(counts, c->vocab, sample, &ns);
    if (ns < 2) cli_fail("%s: fewer than 2 tokens occur in the corpus", path);
    VizGeometryInput in = { .tokens = top, .n_tokens = ns, .text = ids, .n_text = n,
                            .n_positions = positions > 0 ? positions : ns };
    r->layers = viz_geometry(r->m, mask, &in, &e);
    if (!r->layers) cli_fail("%s", e->message);
    r->n_sample = ns;
    r->n_text = n;
    g_free(top);
    g_free(counts);
    g_free(ids);
}

static void geom_free(GeomRun *r)
{
    viz_geometry_free(r->layers);
    stem_model_free(r->m);
    g_free(r->path);
}

static void geom_json(JsonBuilder *b, const GeomRun *r, double hmax, int bins)
{
    json_builder_begin_object(b);
    viz_json_string(b, "model", r->path);
    viz_json_string(b, "kind", r->m->cfg.stem_mask ? "stem" : "dense");
    viz_json_int(b, "token_sample", r->n_sample);
    viz_json_int(b, "corpus_tokens", (gint64)r->n_text);
    json_builder_set_member_name(b, "layers");
    json_builder_begin_array(b);
    double *h = g_new(double, bins);
    for (guint i = 0; i < r->layers->len; i++) {
        const VizLayerGeometry *g = &g_array_index(r->layers, VizLayerGeometry, i);
        const VizCosStats *s = &g->stats;
        json_builder_begin_object(b);
        viz_json_int(b, "layer", g->layer);
        viz_json_string(b, "source", g->stem ? "stem_rows" : "dense_up_outputs");
        viz_json_int(b, "n_vectors", g->n_vectors);
        viz_json_int(b, "dim", s->dim);
        viz_json_int(b, "n_pairs", s->n_pairs);
        viz_json_int(b, "zero_vectors", s->n_zero);
        viz_json_double(b, "mean_abs_cos", s->mean_abs);
        viz_json_double(b, "median_abs_cos", s->median_abs);
        viz_json_double(b, "p95_abs_cos", s->p95_abs);
        viz_json_double(b, "p99_abs_cos", s->p99_abs);
        viz_json_double(b, "max_abs_cos", s->max_abs);
        viz_json_double(b, "mean_cos", s->mean);
        viz_json_double(b, "std_cos", s->std);
        /* independent random directions in dim dimensions: |cos| ~ |N(0, 1/dim)|, P95 = 1.96/sqrt(dim) */
        viz_json_double(b, "random_p95_abs_cos", 1.959964 / sqrt((double)s->dim));
        viz_cos_stats_abs_hist(s, 0, hmax, bins, h);
        json_builder_set_member_name(b, "histogram");
        json_builder_begin_object(b);
        viz_json_string(b, "of", "abs_cos");
        viz_json_double(b, "lo", 0);
        viz_json_double(b, "hi", hmax);
        viz_json_int(b, "bins", bins);
        viz_json_string(b, "unit", "percent of pairs");
        json_builder_set_member_name(b, "percent");
        json_builder_begin_array(b);
        for (int k = 0; k < bins; k++) json_builder_add_double_value(b, h[k]);
        json_builder_end_array(b);
        json_builder_end_object(b);
        json_builder_end_object(b);
    }
    g_free(h);
    json_builder_end_array(b);
    json_builder_end_object(b);
}

static void geom_text(const GeomRun *r)
{
    char *sl = stem_config_layers_string(&r->m->cfg);
    printf("%s  (%s; STEM layers: %s; %d tokens sampled, %zu corpus tokens)\n", r->path,
           r->m->cfg.stem_mask ? "STEM" : "dense", *sl ? sl : "none", r->n_sample, r->n_text);
    g_free(sl);
    printf("  %-5s %-12s %7s %10s %10s %10s %10s %10s %12s\n", "layer", "vectors", "n", "mean|cos|", "median", "P95",
           "P99", "max", "random P95");
    for (guint i = 0; i < r->layers->len; i++) {
        const VizLayerGeometry *g = &g_array_index(r->layers, VizLayerGeometry, i);
        printf("  %-5d %-12s %7d %10.4f %10.4f %10.4f %10.4f %10.4f %12.4f\n", g->layer, g->stem ? "STEM rows" : "dense W3x",
               g->n_vectors, g->stats.mean_abs, g->stats.median_abs, g->stats.p95_abs, g->stats.p99_abs,
               g->stats.max_abs, 1.959964 / sqrt((double)g->stats.dim));
    }
}

int cmd_geometry(int argc, char **argv)
{
    VizArgs a;
    viz_args_init(&a);
    char *layer = NULL, *compare = NULL;
    int sample = 4096, positions = 0, bins = 60;
    double mb = 2.0, hist_max = 0;
    GOptionEntry entries[] = {
        { "layer", 'l', 0, G_OPTION_ARG_STRING, &layer, "all (default), a layer index or a list like 1,3", "L" },
        { "sample", 'n', 0, G_OPTION_ARG_INT, &sample, "most frequent tokens whose rows are compared (default 4096)", "N" },
        { "positions", 0, 0, G_OPTION_ARG_INT, &positions, "corpus positions for dense outputs (default: --sample)", "N" },
        { "compare", 'c', 0, G_OPTION_ARG_FILENAME, &compare, "a second model to overlay (e.g. the dense baseline)", "MODEL" },
        { "corpus-mb", 0, 0, G_OPTION_ARG_DOUBLE, &mb, "megabytes of corpus prose for frequencies and dense outputs (default 2)", "MB" },
        { "bins", 0, 0, G_OPTION_ARG_INT, &bins, "histogram bins (default 60)", "N" },
        { "hist-max", 0, 0, G_OPTION_ARG_DOUBLE, &hist_max, "histogram range [0, X] of |cos| (default: from the data)", "X" },
        VIZ_ENTRIES(a),
        { NULL }
    };
    cli_parse_compute("geometry", "MODEL", "Pairwise cosine similarity of the up-projection vectors, per layer: STEM table\n"
              "rows of the most frequent tokens, or for dense layers the outputs W3 x on corpus\n"
              "text (mean, median, P95, P99 of |cos| and a histogram; the paper's Fig. 6).\n"
              "--compare overlays a second model (STEM vs dense).", entries, &argc, &argv);
    if (argc != 2) cli_usage("geometry", "expected one MODEL");
    /* all pairs: 65,536 vectors are ~2.1e9 pairs, seconds of sgemm; more is minutes */
    if (sample < 2 || sample > 65536) cli_usage("geometry", "--sample must be in 2..65536");
    if (positions != 0 && (positions < 2 || positions > 65536)) cli_usage("geometry", "--positions must be in 2..65536");
    if (bins < 1 || bins > 10000) cli_usage("geometry", "--bins must be in 1..10000");
    if (hist_max < 0 || hist_max > 1) cli_usage("geometry", "--hist-max must be in (0, 1]");
    if (!(mb >= 0)) cli_usage("geometry", "--corpus-mb must be >= 0");
    viz_args_check("geometry", &a);
    GeomRun runs[2];
    int nr = compare ? 2 : 1;
    geom_run(&runs[0], argv[1], layer, sample, positions, mb);
    if (compare) geom_run(&runs[1], compare, layer, sample, positions, mb);
    /* a shared histogram range: |cos| up to the largest P99 with room, in steps of 0.05 */
    if (hist_max <= 0) {
        double mx = 0;
        for (int k = 0; k < nr; k++)
            for (guint i = 0; i < runs[k].layers->len; i++)
                mx = MAX(mx, g_array_index(runs[k].layers, VizLayerGeometry, i).stats.p99_abs);
        hist_max = MIN(1.0, MAX(0.05, ceil(mx * 1.3 / 0.05) * 0.05));
    }
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "models");
        json_builder_begin_array(b);
        for (int k = 0; k < nr; k++) geom_json(b, &runs[k], hist_max, bins);
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        for (int k = 0; k < nr; k++) geom_text(&runs[k]);
    }
    if (a.plot) {
        /* one panel per layer, each overlaying the models' layer */
        int L = 0;
        for (int k = 0; k < nr; k++)
            for (guint i = 0; i < runs[k].layers->len; i++)
                L = MAX(L, g_array_index(runs[k].layers, VizLayerGeometry, i).layer + 1);
        VizHistogram *hs = g_new0(VizHistogram, L);
        VizHistSeries *ss = g_new0(VizHistSeries, (size_t)L * 2);
        VizPanel *panels = g_new0(VizPanel, L);
        GPtrArray *keep = g_ptr_array_new_with_free_func(g_free);
        int np = 0;
        for (int l = 0; l < L; l++) {
            int n = 0;
            GString *sub = g_string_new(NULL);
            for (int k = 0; k < nr; k++)
                for (guint i = 0; i < runs[k].layers->len; i++) {
                    const VizLayerGeometry *g = &g_array_index(runs[k].layers, VizLayerGeometry, i);
                    if (g->layer != l) continue;
                    VizHistSeries *s = &ss[(size_t)l * 2 + n];
                    double *v = g_new(double, bins);
                    viz_cos_stats_abs_hist(&g->stats, 0, hist_max, bins, v);
                    g_ptr_array_add(keep, v);
                    char *name = g_strdup_printf("%s, %s", g->stem ? "STEM rows" : "dense W3·x", basename_of(runs[k].path));
                    g_ptr_array_add(keep, name);
                    *s = (VizHistSeries){ name, bins, 0, hist_max, v, g->stats.p95_abs, "P95" };
                    g_string_append_printf(sub, "%s%s, %s: mean %.3f · median %.3f · P95 %.3f (%d vectors)",
                                           n ? "\n" : "", basename_of(runs[k].path), g->stem ? "STEM rows" : "dense W3·x",
                                           g->stats.mean_abs, g->stats.median_abs, g->stats.p95_abs, g->n_vectors);
                    n++;
                }
            if (!n) {
                g_string_free(sub, TRUE);
                continue;
            }
            char *title = g_strdup_printf("Layer %d", l);
            char *st = g_string_free(sub, FALSE);
            g_ptr_array_add(keep, title);
            g_ptr_array_add(keep, st);
            hs[np] = (VizHistogram){ title, st, "|cos| between two vectors", "pairs per bin (%)", n, &ss[(size_t)l * 2] };
            panels[np] = (VizPanel){ viz_draw_histogram, &hs[np] };
            np++;
        }
        char *sub = g_strdup_printf("%s%s%s · %d most frequent tokens (STEM rows) · as many corpus positions (dense W3·x)"
                                    " · random directions in %d dimensions would give P95 %.3f",
                                    basename_of(runs[0].path), compare ? " vs " : "",
                                    compare ? basename_of(runs[1].path) : "", runs[0].n_sample, runs[0].m->cfg.ffn_dim,
                                    1.959964 / sqrt((double)runs[0].m->cfg.ffn_dim));
        VizGrid grid = { "Pairwise |cos| of the up-projection vectors", sub, np, panels, np <= 1 ? 1 : 2 };
        int rows = (np + (np <= 1 ? 1 : 2) - 1) / (np <= 1 ? 1 : 2);
        save_plot(&a, viz_draw_grid, &grid, np <= 1 ? 900 : 1300, 80 + rows * 420);
        g_free(sub);
        g_ptr_array_unref(keep);
        g_free(panels);
        g_free(ss);
        g_free(hs);
    }
    for (int k = 0; k < nr; k++) geom_free(&runs[k]);
    return 0;
}

/* ------------------------------------------------------------------ pca */

/* Token ids of comma-separated words: each word's exact token and its
 * mid-sentence variant " word" where they exist. */
static GArray *highlight_ids(StemModel *m, const char *list)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(int32_t));
    if (!list) return a;
    char **w = g_strsplit(list, ",", -1);
    for (int i = 0; w[i]; i++) {
        char *word = g_strstrip(w[i]);
        if (!*word) continue;
        GError *e = NULL;
        if (word[0] == '#') {
            int id = viz_resolve_token(m->tok, m->cfg.vocab, word, &e);
            if (id < 0) cli_fail("%s", e->message);
            g_array_append_val(a, id);
            continue;
        }
        char *forms[2] = { g_strdup(word), g_strconcat(" ", word, NULL) };
        int found = 0;
        for (int k = 0; k < 2; k++) {
            int id = stem_tokenizer_lookup(m->tok, forms[k], strlen(forms[k]));
            if (id >= 0 && id < m->cfg.vocab) {
                g_array_append_val(a, id);
                found++;
            }
            g_free(forms[k]);
        }
        if (!found && viz_resolve_token(m->tok, m->cfg.vocab, word, &e) < 0) {
            fprintf(stderr, "stem: warning: --highlight: %s\n", e->message);
            g_clear_error(&e);
        }
    }
    g_strfreev(w);
    return a;
}

/* 1 = a country name, 2 = a capital (as one token, either variant), 0 = other */
static int *token_groups(StemModel *m)
{
    int *g = g_new0(int, m->cfg.vocab);
    GError *e = NULL;
    StemFacts *f = stem_facts_load_default(&e);
    if (!f) {
        g_clear_error(&e);
        return g;
    }
    for (int c = 0; c < f->n; c++) {
        const char *names[2] = { f->countries[c].name, f->countries[c].capital };
        for (int k = 0; k < 2; k++) {
            if (!names[k]) continue;
            char *sp = g_strconcat(" ", names[k], NULL);
            int ids[2] = { stem_tokenizer_lookup(m->tok, names[k], strlen(names[k])),
                           stem_tokenizer_lookup(m->tok, sp, strlen(sp)) };
            for (int q = 0; q < 2; q++)
                if (ids[q] >= 0 && ids[q] < m->cfg.vocab && !g[ids[q]]) g[ids[q]] = k + 1;
            g_free(sp);
        }
    }
    stem_facts_free(f);
    return g;
}

int cmd_pca(int argc, char **argv)
{
    VizArgs a;
    viz_args_init(&a);
    int layer = -1, sample = 400, labels = 40;
    char *highlight = NULL;
    double mb = 2.0;
    GOptionEntry entries[] = {
        { "layer", 'l', 0, G_OPTION_ARG_INT, &layer, "model layer (a STEM layer; default: the first)", "L" },
        { "sample", 'n', 0, G_OPTION_ARG_INT, &sample, "most frequent tokens to project (default 400)", "N" },
        { "highlight", 0, 0, G_OPTION_ARG_STRING, &highlight, "tokens to highlight, comma-separated (Spain,France,#42)", "LIST" },
        { "labels", 0, 0, G_OPTION_ARG_INT, &labels, "label at most N other points, most frequent first (default 40)", "N" },
        { "corpus-mb", 0, 0, G_OPTION_ARG_DOUBLE, &mb, "megabytes of corpus prose for token frequencies (default 2)", "MB" },
        VIZ_ENTRIES(a),
        { NULL }
    };
    cli_parse("pca", "MODEL", "2-D PCA of a STEM layer's table rows (the most frequent tokens plus any\n"
              "highlighted ones): labelled points, country names and capitals coloured.", entries, &argc, &argv);
    if (argc != 2) cli_usage("pca", "expected one MODEL");
    if (sample < 3 || sample > 65536) cli_usage("pca", "--sample must be in 3..65536");
    if (labels < 0) cli_usage("pca", "--labels must be >= 0");
    viz_args_check("pca", &a);
    StemModel *m = cli_load_model(argv[1]);
    const StemConfig *c = &m->cfg;
    if (!c->stem_mask) cli_fail("%s is a dense model: it has no table rows (use 'stem geometry' for dense outputs)", argv[1]);
    if (layer < 0) layer = stem_config_stem_layer(c, 0);
    if (layer >= c->n_layers) cli_usage("pca", "--layer %d: the model has %d layers", layer, c->n_layers);
    if (!stem_config_is_stem(c, layer)) cli_fail("layer %d is a dense layer: it has no table rows", layer);
    size_t n = 0;
    int32_t *ids = corpus_ids(m, mb, &n);
    int64_t *counts = viz_token_counts(ids, n, c->vocab);
    int ns = 0;
    int32_t *top = viz_top_tokens(counts, c->vocab, sample, &ns);
    GArray *hl = highlight_ids(m, highlight);
    /* sample + highlighted tokens not in it */
    GArray *tok = g_array_new(FALSE, FALSE, sizeof(int32_t));
    g_array_append_vals(tok, top, ns);
    guint8 *is_hl = g_new0(guint8, c->vocab);
    for (guint i = 0; i < hl->len; i++) {
        int id = g_array_index(hl, int32_t, i);
        if (is_hl[id]) continue;
        is_hl[id] = 1;
        gboolean present = FALSE;
        for (int k = 0; k < ns; k++) present |= top[k] == id;
        if (!present) g_array_append_val(tok, id);
    }
    if (tok->len < 3) cli_fail("fewer than 3 tokens to project");
    float *rows = g_new(float, (size_t)tok->len * c->ffn_dim);
    stem_tables_gather(m->tables, stem_config_stem_index(c, layer), (int32_t *)tok->data, (int)tok->len, rows);
    VizPca p;
    GError *e = NULL;
    if (!viz_pca2(rows, (int)tok->len, c->ffn_dim, &p, &e)) cli_fail("%s", e->message);
    int *groups = token_groups(m);
    double f1 = p.total_var > 0 ? p.var[0] / p.total_var : 0, f2 = p.total_var > 0 ? p.var[1] / p.total_var : 0;
    char **labs = g_new0(char *, tok->len + 1);
    for (guint i = 0; i < tok->len; i++) labs[i] = label(m, g_array_index(tok, int32_t, i));
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        viz_json_string(b, "model", argv[1]);
        viz_json_int(b, "layer", layer);
        viz_json_int(b, "n", tok->len);
        viz_json_double(b, "explained_pc1", f1);
        viz_json_double(b, "explained_pc2", f2);
        viz_json_double(b, "var_pc1", p.var[0]);
        viz_json_double(b, "var_pc2", p.var[1]);
        viz_json_double(b, "total_var", p.total_var);
        json_builder_set_member_name(b, "points");
        json_builder_begin_array(b);
        for (guint i = 0; i < tok->len; i++) {
            int id = g_array_index(tok, int32_t, i);
            json_builder_begin_object(b);
            viz_json_int(b, "id", id);
            viz_json_string(b, "token", labs[i]);
            viz_json_double(b, "x", p.coords[2 * i]);
            viz_json_double(b, "y", p.coords[2 * i + 1]);
            viz_json_int(b, "count", counts[id]);
            viz_json_string(b, "group", groups[id] == 1 ? "country" : groups[id] == 2 ? "capital" : "other");
            jb(b, "highlight", is_hl[id]);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("layer %d: %u rows, PC1 %.1f%%, PC2 %.1f%% of the variance\n", layer, tok->len, 100 * f1, 100 * f2);
        for (guint i = 0; i < tok->len; i++) {
            int id = g_array_index(tok, int32_t, i);
            if (!is_hl[id] && i >= 10) continue;
            printf("  %-16s %9.4f %9.4f%s\n", labs[i], p.coords[2 * i], p.coords[2 * i + 1], is_hl[id] ? "  *" : "");
        }
        if (tok->len > 10) printf("  ... (--json for all points)\n");
    }
    if (a.plot) {
        VizPoint *pts = g_new0(VizPoint, tok->len);
        for (guint i = 0; i < tok->len; i++) {
            int id = g_array_index(tok, int32_t, i);
            pts[i] = (VizPoint){ p.coords[2 * i], p.coords[2 * i + 1], labs[i], groups[id], is_hl[id] };
        }
        /* legend entries only for the groups present */
        const char *gnames[3] = { NULL, NULL, NULL };
        static const char *all_names[3] = { "other tokens", "country names", "capitals" };
        for (guint i = 0; i < tok->len; i++) gnames[groups[g_array_index(tok, int32_t, i)]] = all_names[groups[g_array_index(tok, int32_t, i)]];
        char *title = g_strdup_printf("PCA of layer %d STEM table rows", layer);
        char *sub = g_strdup_printf("%s · %d most frequent tokens%s · the two principal axes hold %.1f%% of the variance",
                                    basename_of(argv[1]), ns, hl->len ? " + highlighted" : "", 100 * (f1 + f2));
        char *xl = g_strdup_printf("PC 1 (%.1f%% of variance)", 100 * f1);
        char *yl = g_strdup_printf("PC 2 (%.1f%% of variance)", 100 * f2);
        VizScatter s = { title, sub, xl, yl, (int)tok->len, pts, labels, gnames, 3 };
        save_plot(&a, viz_draw_scatter, &s, 1000, 700);
        g_free(title);
        g_free(sub);
        g_free(xl);
        g_free(yl);
        g_free(pts);
    }
    g_strfreev(labs);
    g_free(groups);
    viz_pca_clear(&p);
    g_free(rows);
    g_free(is_hl);
    g_array_unref(tok);
    g_array_unref(hl);
    g_free(top);
    g_free(counts);
    g_free(ids);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ neighbours */

int cmd_neighbours(int argc, char **argv)
{
    VizArgs a;
    viz_args_init(&a);
    char *layer = NULL;
    int k = 10;
    gboolean all_tokens = FALSE;
    double mb = 2.0;
    GOptionEntry entries[] = {
        { "layer", 'l', 0, G_OPTION_ARG_STRING, &layer, "all (default: every STEM layer) or a list like 1,3", "L" },
        { "k", 'k', 0, G_OPTION_ARG_INT, &k, "neighbours per layer (default 10)", "K" },
        { "all-tokens", 0, 0, G_OPTION_ARG_NONE, &all_tokens,
          "consider every token (default: only tokens that occur in the corpus; the rows of the others were never trained)", NULL },
        { "corpus-mb", 0, 0, G_OPTION_ARG_DOUBLE, &mb, "megabytes of corpus prose for the seen-token filter (default 2)", "MB" },
        VIZ_ENTRIES(a),
        { NULL }
    };
    cli_parse("neighbours", "MODEL TOKEN", "The tokens whose STEM table rows are most cosine-similar to TOKEN's, per\n"
              "layer. TOKEN is the exact token text, else its mid-sentence variant ' TOKEN',\n"
              "or #ID.", entries, &argc, &argv);
    if (argc != 3) cli_usage("neighbours", "expected MODEL and TOKEN");
    if (k < 1 || k > 1000) cli_usage("neighbours", "--k must be in 1..1000");
    viz_args_check("neighbours", &a);
    StemModel *m = cli_load_model(argv[1]);
    const StemConfig *c = &m->cfg;
    if (!c->stem_mask) cli_fail("%s is a dense model: it has no table rows", argv[1]);
    GError *e = NULL;
    int q = viz_resolve_token(m->tok, c->vocab, argv[2], &e);
    if (q < 0) cli_fail("%s", e->message);
    uint64_t mask = c->stem_mask;
    if (layer && strcmp(layer, "all")) {
        if (!stem_config_parse_layers(layer, c->n_layers, &mask, &e)) cli_usage("neighbours", "%s", e->message);
        for (int l = 0; l < c->n_layers; l++)
            if (((mask >> l) & 1) && !stem_config_is_stem(c, l)) cli_fail("layer %d is a dense layer: it has no table rows", l);
    }
    guint8 *cand = NULL;
    if (!all_tokens) {
        size_t n = 0;
        int32_t *ids = corpus_ids(m, mb, &n);
        cand = g_new0(guint8, c->vocab);
        for (size_t i = 0; i < n; i++) cand[ids[i]] = 1;
        g_free(ids);
    }
    int32_t *all = g_new(int32_t, c->vocab);
    for (int i = 0; i < c->vocab; i++) all[i] = i;
    float *rows = g_new(float, (size_t)c->vocab * c->ffn_dim);
    int nl = 0, layers[STEM_MAX_LAYERS];
    VizNeighbour *nb = g_new(VizNeighbour, (size_t)STEM_MAX_LAYERS * k);
    int got[STEM_MAX_LAYERS];
    for (int l = 0; l < c->n_layers; l++) {
        if (!((mask >> l) & 1)) continue;
        stem_tables_gather(m->tables, stem_config_stem_index(c, l), all, c->vocab, rows);
        got[nl] = viz_neighbours(rows, c->vocab, c->ffn_dim, rows + (size_t)q * c->ffn_dim, cand, q, k, nb + (size_t)nl * k);
        layers[nl++] = l;
    }
    char *ql = label(m, q);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        viz_json_string(b, "model", argv[1]);
        viz_json_int(b, "id", q);
        viz_json_string(b, "token", ql);
        jb(b, "seen_tokens_only", !all_tokens);
        json_builder_set_member_name(b, "layers");
        json_builder_begin_array(b);
        for (int i = 0; i < nl; i++) {
            json_builder_begin_object(b);
            viz_json_int(b, "layer", layers[i]);
            json_builder_set_member_name(b, "neighbours");
            json_builder_begin_array(b);
            for (int j = 0; j < got[i]; j++) {
                const VizNeighbour *x = &nb[(size_t)i * k + j];
                char *t = label(m, x->id);
                json_builder_begin_object(b);
                viz_json_int(b, "id", x->id);
                viz_json_string(b, "token", t);
                viz_json_double(b, "cos", x->cos);
                json_builder_end_object(b);
                g_free(t);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("neighbours of %s (id %d) by cosine of STEM table rows\n", ql, q);
        for (int i = 0; i < nl; i++) {
            printf("layer %d:", layers[i]);
            for (int j = 0; j < got[i]; j++) {
                char *t = label(m, nb[(size_t)i * k + j].id);
                printf("  %s %.3f", t, nb[(size_t)i * k + j].cos);
                g_free(t);
            }
            printf("\n");
        }
    }
    if (a.plot) {
        VizBarPanel *panels = g_new0(VizBarPanel, nl);
        VizBar *bars = g_new0(VizBar, (size_t)nl * k);
        GPtrArray *keep = g_ptr_array_new_with_free_func(g_free);
        for (int i = 0; i < nl; i++) {
            for (int j = 0; j < got[i]; j++) {
                char *t = label(m, nb[(size_t)i * k + j].id);
                g_ptr_array_add(keep, t);
                bars[(size_t)i * k + j] = (VizBar){ t, nb[(size_t)i * k + j].cos, 0 };
            }
            char *title = g_strdup_printf("Layer %d", layers[i]);
            g_ptr_array_add(keep, title);
            panels[i] = (VizBarPanel){ title, NULL, got[i], bars + (size_t)i * k };
        }
        char *title = g_strdup_printf("Nearest neighbours of %s", ql);
        char *sub = g_strdup_printf("%s · cosine of STEM table rows%s", basename_of(argv[1]),
                                    all_tokens ? "" : " · tokens seen in the corpus");
        VizBarGroups g = { title, sub, "cosine similarity", nl, panels, 0, FALSE, { NULL } };
        save_plot(&a, viz_draw_bars, &g, MAX(700, 380 * nl), 130 + 34 * k);
        g_free(title);
        g_free(sub);
        g_ptr_array_unref(keep);
        g_free(bars);
        g_free(panels);
    }
    g_free(ql);
    g_free(nb);
    g_free(rows);
    g_free(all);
    g_free(cand);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ lens */

static char *layer_name(const StemConfig *c, int row)
{
    if (row == 0) return g_strdup("embeddings");
    return g_strdup_printf("layer %d (%s)", row - 1, stem_config_is_stem(c, row - 1) ? "STEM" : "dense");
}

int cmd_lens(int argc, char **argv)
{
    VizArgs a;
    viz_args_init(&a);
    a.threads = 1;
    int k = 5;
    char *track = NULL;
    GOptionEntry entries[] = {
        { "k", 'k', 0, G_OPTION_ARG_INT, &k, "tokens per layer (default 5)", "K" },
        { "track", 0, 0, G_OPTION_ARG_STRING, &track, "also report this token's probability per layer (text or #ID)", "TOKEN" },
        VIZ_ENTRIES(a),
        { NULL }
    };
    cli_parse_compute("lens", "MODEL PROMPT", "Logit lens: the residual stream at the last position after every layer, put\n"
              "through the final norm and the LM head: the top-k next tokens per layer.", entries, &argc, &argv);
    if (argc != 3) cli_usage("lens", "expected MODEL and PROMPT");
    if (k < 1 || k > 100) cli_usage("lens", "--k must be in 1..100");
    viz_args_check("lens", &a);
    StemModel *m = cli_load_model(argv[1]);
    int n = 0;
    int32_t *ids = cli_encode(m, argv[2], &n);
    GError *e = NULL;
    int tid = -1;
    if (track) {
        tid = viz_resolve_token(m->tok, m->cfg.vocab, track, &e);
        if (tid < 0) {
            /* a multi-token answer: track its first token as it continues the prompt */
            tid = viz_answer_first_token(m->tok, argv[2], track);
            if (tid < 0) cli_fail("--track: %s", e->message);
            char *tl0 = label(m, tid);
            fprintf(stderr, "stem: note: '%s' is several tokens: tracking its first, %s\n", track, tl0);
            g_free(tl0);
            g_clear_error(&e);
        }
    }
    VizLens L;
    if (!viz_logit_lens(m, ids, n, k, tid, &L, &e)) cli_fail("%s", e->message);
    char *tl = tid >= 0 ? label(m, tid) : NULL;
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        viz_json_string(b, "model", argv[1]);
        viz_json_string(b, "prompt", argv[2]);
        viz_json_int(b, "k", L.k);
        if (tid >= 0) {
            viz_json_int(b, "track_id", tid);
            viz_json_string(b, "track_token", tl);
        }
        json_builder_set_member_name(b, "layers");
        json_builder_begin_array(b);
        for (int r = 0; r < L.n_rows; r++) {
            json_builder_begin_object(b);
            viz_json_int(b, "layer", r - 1);
            char *nm = layer_name(&m->cfg, r);
            viz_json_string(b, "name", nm);
            g_free(nm);
            viz_json_double(b, "entropy", L.entropy[r]);
            if (L.track) viz_json_double(b, "track_prob", L.track[r]);
            json_builder_set_member_name(b, "topk");
            json_builder_begin_array(b);
            for (int i = 0; i < L.k; i++) {
                int id = L.ids[(size_t)r * L.k + i];
                char *t = label(m, id);
                json_builder_begin_object(b);
                viz_json_int(b, "id", id);
                viz_json_string(b, "token", t);
                viz_json_double(b, "prob", L.probs[(size_t)r * L.k + i]);
                json_builder_end_object(b);
                g_free(t);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        for (int r = 0; r < L.n_rows; r++) {
            char *nm = layer_name(&m->cfg, r);
            printf("%-18s", nm);
            g_free(nm);
            for (int i = 0; i < L.k; i++) {
                char *t = label(m, L.ids[(size_t)r * L.k + i]);
                printf("  ");
                print_padded(t, 12);
                printf(" %5.1f%%", 100.0 * L.probs[(size_t)r * L.k + i]);
                g_free(t);
            }
            if (L.track) printf("   P(%s) %.2f%%", tl, 100.0 * L.track[r]);
            printf("\n");
        }
    }
    if (a.plot) {
        int cols = L.k + (L.track ? 1 : 0);
        double *vals = g_new(double, (size_t)L.n_rows * cols);
        const char **text = g_new0(const char *, (size_t)L.n_rows * cols);
        const char **rl = g_new0(const char *, L.n_rows);
        const char **cl = g_new0(const char *, cols);
        GPtrArray *keep = g_ptr_array_new_with_free_func(g_free);
        for (int r = 0; r < L.n_rows; r++) {
            char *nm = layer_name(&m->cfg, r);
            g_ptr_array_add(keep, nm);
            rl[L.n_rows - 1 - r] = nm;   /* last layer on top, as the stream flows upward */
            for (int i = 0; i < L.k; i++) {
                char *t = label(m, L.ids[(size_t)r * L.k + i]);
                g_ptr_array_add(keep, t);
                text[(size_t)(L.n_rows - 1 - r) * cols + i] = t;
                vals[(size_t)(L.n_rows - 1 - r) * cols + i] = L.probs[(size_t)r * L.k + i];
            }
            if (L.track) vals[(size_t)(L.n_rows - 1 - r) * cols + L.k] = L.track[r];
        }
        for (int i = 0; i < L.k; i++) {
            char *t = g_strdup_printf("top %d", i + 1);
            g_ptr_array_add(keep, t);
            cl[i] = t;
        }
        if (L.track) {
            char *t = g_strdup_printf("P(%s)", tl);
            g_ptr_array_add(keep, t);
            cl[L.k] = t;
        }
        char *title = g_strdup_printf("Logit lens: \"%s\"", argv[2]);
        char *sub = g_strdup_printf("%s · residual stream at the last position → final RMSNorm → LM head, after each layer",
                                    basename_of(argv[1]));
        VizHeatmap hm = { title, sub, "rank of the next token", NULL, "probability", L.n_rows, cols, vals, text, rl, cl,
                          0, 0, TRUE, TRUE };   /* colour range from the data: low probabilities stay visible */
        save_plot(&a, viz_draw_heatmap, &hm, MAX(900, 150 * cols + 260), 150 + 62 * L.n_rows);
        g_free(title);
        g_free(sub);
        g_ptr_array_unref(keep);
        g_free(cl);
        g_free(rl);
        g_free(text);
        g_free(vals);
    }
    g_free(tl);
    viz_lens_clear(&L);
    g_free(ids);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ active-params */

int cmd_active_params(int argc, char **argv)
{
    VizArgs a;
    viz_args_init(&a);
    int max_len = 8192, windows = 64;
    double mb = 0;
    GOptionEntry entries[] = {
        { "max-len", 0, 0, G_OPTION_ARG_INT, &max_len, "longest context, in tokens (default 8192; powers of 2 from 1)", "N" },
        { "windows", 0, 0, G_OPTION_ARG_INT, &windows, "windows averaged per length (default 64)", "N" },
        { "corpus-mb", 0, 0, G_OPTION_ARG_DOUBLE, &mb, "megabytes of corpus prose (default 0 = all)", "MB" },
        VIZ_ENTRIES(a),
        { NULL }
    };
    cli_parse("active-params", "MODEL", "STEM parameters activated vs context length: unique tokens in windows of the\n"
              "corpus (Heaps' law) times the table rows each brings, against the dense\n"
              "equivalent's constant (non-embedding parameters).", entries, &argc, &argv);
    if (argc != 2) cli_usage("active-params", "expected one MODEL");
    if (max_len < 1 || max_len > 1 << 24) cli_usage("active-params", "--max-len must be in 1..16777216");
    if (windows < 1 || windows > 100000) cli_usage("active-params", "--windows must be in 1..100000");
    viz_args_check("active-params", &a);
    StemModel *m = cli_load_model(argv[1]);
    StemConfig c = m->cfg;
    gboolean hypothetical = FALSE;
    if (!c.stem_mask) {
        /* a dense model: show what its STEM twin (every layer but the first) would activate */
        for (int l = 1; l < c.n_layers; l++) c.stem_mask |= 1ull << l;
        if (!c.stem_mask) c.stem_mask = 1;
        hypothetical = TRUE;
    }
    size_t n = 0;
    int32_t *ids = corpus_ids(m, mb, &n);
    VizHeaps h;
    GError *e = NULL;
    if (!viz_heaps(ids, n, c.vocab, max_len, windows, &h, &e)) cli_fail("%s", e->message);
    VizActiveModel am;
    viz_active_model(&c, &am);
    double cross_u = viz_active_crossover_unique(&am);
    double cross_fit = h.beta > 0 ? pow(cross_u / h.K, 1.0 / h.beta) : INFINITY;
    double cross_len = viz_heaps_length_for(&h, cross_u);
    double *stem = g_new(double, h.n), *dense = g_new(double, h.n), *fixed = g_new(double, h.n), *x = g_new(double, h.n);
    for (int i = 0; i < h.n; i++) {
        x[i] = h.length[i];
        stem[i] = am.stem_fixed + h.unique[i] * am.stem_per_unique;
        dense[i] = am.dense_constant;
        fixed[i] = am.stem_fixed;
    }
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        viz_json_string(b, "model", argv[1]);
        jb(b, "hypothetical_stem", hypothetical);
        viz_json_int(b, "corpus_tokens", (gint64)n);
        viz_json_double(b, "stem_fixed_params", am.stem_fixed);
        viz_json_double(b, "params_per_unique_token", am.stem_per_unique);
        viz_json_double(b, "dense_params", am.dense_constant);
        viz_json_double(b, "heaps_K", h.K);
        viz_json_double(b, "heaps_beta", h.beta);
        viz_json_double(b, "crossover_unique_tokens", cross_u);
        viz_json_double(b, "crossover_context_length", cross_len);
        viz_json_double(b, "crossover_context_length_fit", cross_fit);
        viz_json_int(b, "distinct_tokens", h.distinct);
        json_builder_set_member_name(b, "points");
        json_builder_begin_array(b);
        for (int i = 0; i < h.n; i++) {
            json_builder_begin_object(b);
            viz_json_int(b, "context_length", h.length[i]);
            viz_json_double(b, "unique_tokens", h.unique[i]);
            viz_json_int(b, "windows", h.windows[i]);
            viz_json_double(b, "stem_active_params", stem[i]);
            viz_json_double(b, "dense_active_params", dense[i]);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        if (hypothetical) printf("(a dense model: the STEM curve is for its twin with STEM on every layer but the first)\n");
        printf("Heaps' law on %zu corpus tokens: unique ≈ %.2f · L^%.3f\n", n, h.K, h.beta);
        printf("%10s %12s %16s %16s\n", "context", "unique", "STEM active", "dense active");
        for (int i = 0; i < h.n; i++)
            printf("%10d %12.1f %15.3fM %15.3fM\n", h.length[i], h.unique[i], stem[i] / 1e6, dense[i] / 1e6);
        if (isfinite(cross_len))
            printf("STEM activates as many parameters as dense at %.0f unique tokens: a context of ≈ %.0f tokens "
                   "(Heaps fit: %.0f)\n", cross_u, cross_len, cross_fit);
        else
            printf("STEM activates fewer parameters than dense up to %d tokens of context (break-even at %.0f unique "
                   "tokens; Heaps fit: a context of %.0f)\n", h.length[h.n - 1], cross_u, cross_fit);
    }
    if (a.plot) {
        double *sm = g_new(double, h.n), *dm = g_new(double, h.n), *fm = g_new(double, h.n);
        double *fit = g_new(double, h.n), *dline = g_new(double, h.n);
        for (int i = 0; i < h.n; i++) {
            sm[i] = stem[i] / 1e6;
            dm[i] = dense[i] / 1e6;
            fm[i] = fixed[i] / 1e6;
            fit[i] = h.K * pow(h.length[i], h.beta);
            dline[i] = cross_u;
        }
        VizLineSeries s1[3] = {
            { "STEM: backbone + rows of the unique tokens", h.n, x, sm, FALSE, TRUE, 0 },
            { "dense equivalent (constant)", h.n, x, dm, TRUE, FALSE, 1 },
            { "STEM backbone alone", h.n, x, fm, TRUE, FALSE, 7 },
        };
        char *when = isfinite(cross_len) ? g_strdup_printf("equal at ≈ %.0f tokens of context", cross_len)
                                         : g_strdup_printf("below dense up to %d tokens", h.length[h.n - 1]);
        char *sub1 = g_strdup_printf("%s%s · non-embedding parameters · %s", basename_of(argv[1]),
                                     hypothetical ? " (its STEM twin)" : "", when);
        g_free(when);
        VizLines l1 = { "Active parameters vs context length", sub1, "context length (tokens)", "active parameters (millions)",
                        3, s1, TRUE, FALSE, 0, 0, FALSE, 0, NULL };
        VizLineSeries s2[3] = {
            { "measured (mean over windows)", h.n, x, h.unique, FALSE, TRUE, 0 },
            { "Heaps' law fit", h.n, x, fit, TRUE, FALSE, 3 },
            { "break-even (= model width)", h.n, x, dline, TRUE, FALSE, 7 },
        };
        char *sub2 = g_strdup_printf("fit: unique ≈ %.2f · L^%.2f · %.2fM corpus tokens, %d distinct", h.K, h.beta,
                                     n / 1e6, h.distinct);
        /* the fit drawn where it stays near the measurements (it cannot saturate) */
        double umax = 0;
        for (int i = 0; i < h.n; i++) umax = MAX(umax, h.unique[i]);
        for (int i = 0; i < h.n; i++)
            if (fit[i] > 1.5 * umax) fit[i] = NAN;
        VizLines l2 = { "Unique tokens in the context (Heaps' law)", sub2, "context length (tokens)", "unique tokens",
                        3, s2, TRUE, TRUE, 0, 0, FALSE, 0, NULL };
        VizPanel panels[2] = { { viz_draw_lines, &l1 }, { viz_draw_lines, &l2 } };
        VizGrid g = { NULL, NULL, 2, panels, 2 };
        save_plot(&a, viz_draw_grid, &g, 1500, 560);
        g_free(sub1);
        g_free(sub2);
        g_free(sm);
        g_free(dm);
        g_free(fm);
        g_free(fit);
        g_free(dline);
    }
    g_free(stem);
    g_free(dense);
    g_free(fixed);
    g_free(x);
    viz_heaps_clear(&h);
    g_free(ids);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ edits: shared */

typedef struct {
    char *source, *target, *kind, *strategy, *layers, *ablate, *db, *answer, *source_answer;
    double alpha;
    gboolean allow_subword;
    int k;
} EditViewArgs;

static void edit_view_init(EditViewArgs *e)
{
    memset(e, 0, sizeof *e);
    e->alpha = NAN;
    e->k = 5;
}

#define EDIT_VIEW_ENTRIES(e)                                                                                      \
    { "source", 's', 0, G_OPTION_ARG_STRING, &(e).source, "entity whose rows change, e.g. Spain", "TEXT" },     \
    { "target", 't', 0, G_OPTION_ARG_STRING, &(e).target, "entity whose rows are written in, e.g. France", "TEXT" }, \
    { "kind", 0, 0, G_OPTION_ARG_STRING, &(e).kind, "swap (default) | blend | ablate", "KIND" },                \
    { "strategy", 0, 0, G_OPTION_ARG_STRING, &(e).strategy,                                                      \
      "auto | one-to-one | left-pad | right-pad | copy | subset-first | subset-last | average", "S" },          \
    { "layers", 0, 0, G_OPTION_ARG_STRING, &(e).layers, "all (default: every STEM layer) or a list like 1,3", "L" }, \
    { "alpha", 0, 0, G_OPTION_ARG_DOUBLE, &(e).alpha, "blend weight of the target in [0, 1]", "A" },          \
    { "ablate", 0, 0, G_OPTION_ARG_STRING, &(e).ablate, "ablate the source: zero | mean row", "MODE" },       \
    { "allow-subword", 0, 0, G_OPTION_ARG_NONE, &(e).allow_subword, "edit an entity that is not whole-word tokens", NULL }, \
    { "db", 0, 0, G_OPTION_ARG_FILENAME, &(e).db, "edit database: measure on top of its applied edits", "EDITS.db" }, \
    { "answer", 0, 0, G_OPTION_ARG_STRING, &(e).answer, "the target's answer to track (default: from the facts table)", "TEXT" }, \
    { "source-answer", 0, 0, G_OPTION_ARG_STRING, &(e).source_answer, "the source's answer to track (default: from the facts)", "TEXT" }, \
    { "k", 'k', 0, G_OPTION_ARG_INT, &(e).k, "top-k tokens (default 5)", "K" }

static void edit_view_recipe(const char *cmd, const EditViewArgs *e, StemRecipe *r)
{
    stem_recipe_init(r);
    if (e->kind) {
        if (!stem_edit_kind_from_name(e->kind, &r->kind)) cli_usage(cmd, "unknown kind '%s' (swap, blend, ablate)", e->kind);
    } else if (e->ablate) {
        r->kind = STEM_EDIT_ABLATE;
    } else if (!isnan(e->alpha)) {
        r->kind = STEM_EDIT_BLEND;
    }
    if (e->strategy && !stem_strategy_from_name(e->strategy, &r->strategy))
        cli_usage(cmd, "unknown strategy '%s'", e->strategy);
    if (e->ablate) {
        if (!strcmp(e->ablate, "mean")) r->ablate = STEM_ABLATE_MEAN;
        else if (strcmp(e->ablate, "zero")) cli_usage(cmd, "--ablate takes zero or mean");
    }
    if (r->kind == STEM_EDIT_BLEND && isnan(e->alpha)) cli_usage(cmd, "a blend needs --alpha");
    r->alpha = isnan(e->alpha) ? 1.0 : e->alpha;
    if (!e->source) cli_usage(cmd, "--source is required");
    if (r->kind != STEM_EDIT_ABLATE && !e->target) cli_usage(cmd, "--target is required (or --ablate)");
    r->source = g_strdup(e->source);
    r->target = g_strdup(e->target);
    r->layers = g_strdup(e->layers ? e->layers : "all");
    r->allow_subword = e->allow_subword;
    if (e->k < 1 || e->k > 100) cli_usage(cmd, "--k must be in 1..100");
}

/* Everything an edit view needs: model (with the database's edits when given),
 * plan, prompts, answers. */
typedef struct {
    StemModel *m;
    StemEditDb *db;
    StemPlanner *planner;
    StemEditPlan *plan;
    StemRecipe recipe;
    char *prompt, *written;
    char *src_answer, *tgt_answer;
    int src_id, tgt_id;
    char *src_label, *tgt_label;
    int32_t *ids, *wids;
    int n, nw;
} EditView;

static void edit_view_open(EditView *v, const char *cmd, const char *model, const char *prompt, const EditViewArgs *a)
{
    memset(v, 0, sizeof *v);
    edit_view_recipe(cmd, a, &v->recipe);
    v->m = cli_load_model(model);
    if (!v->m->tok) cli_fail("the model has no tokenizer");
    GError *e = NULL;
    if (a->db) {
        v->db = stem_editdb_open(a->db, FALSE, &e);
        if (!v->db) cli_fail("%s", e->message);
        if (!stem_editdb_attach(v->db, v->m, NULL, &e)) cli_fail("%s", e->message);
        v->plan = stem_planner_plan(stem_editdb_planner(v->db), &v->recipe, &e);
    } else {
        v->planner = stem_planner_new(v->m, NULL);
        v->plan = stem_planner_plan(v->planner, &v->recipe, &e);
    }
    if (!v->plan) cli_fail("%s", e->message);
    for (guint i = 0; i < v->plan->warnings->len; i++)
        fprintf(stderr, "stem: warning: %s\n", (const char *)g_ptr_array_index(v->plan->warnings, i));
    v->prompt = g_strdup(prompt);
    v->ids = cli_encode(v->m, prompt, &v->n);
    if (v->recipe.target) {
        v->written = viz_written_prompt(prompt, v->recipe.source, v->recipe.target);
        if (!v->written)
            fprintf(stderr, "stem: warning: the prompt does not contain '%s': no target-written-in panel\n", v->recipe.source);
        else v->wids = cli_encode(v->m, v->written, &v->nw);
    }
    StemFacts *f = stem_facts_load_default(&e);
    g_clear_error(&e);
    viz_fact_answers(f, prompt, v->recipe.source, v->recipe.target, &v->src_answer, &v->tgt_answer, NULL);
    if (f) stem_facts_free(f);
    if (a->answer) {
        g_free(v->tgt_answer);
        v->tgt_answer = g_strdup(a->answer);
    }
    if (a->source_answer) {
        g_free(v->src_answer);
        v->src_answer = g_strdup(a->source_answer);
    }
    v->src_id = viz_answer_first_token(v->m->tok, prompt, v->src_answer);
    v->tgt_id = viz_answer_first_token(v->m->tok, v->written ? v->written : prompt, v->tgt_answer);
    if (v->src_id >= 0) v->src_label = label(v->m, v->src_id);
    if (v->tgt_id >= 0) v->tgt_label = label(v->m, v->tgt_id);
}

static void edit_view_close(EditView *v)
{
    g_free(v->ids);
    g_free(v->wids);
    g_free(v->prompt);
    g_free(v->written);
    g_free(v->src_answer);
    g_free(v->tgt_answer);
    g_free(v->src_label);
    g_free(v->tgt_label);
    stem_edit_plan_free(v->plan);
    if (v->planner) stem_planner_free(v->planner);
    if (v->db) stem_editdb_close(v->db);
    stem_recipe_clear(&v->recipe);
    stem_model_free(v->m);
}

/* ------------------------------------------------------------------ shift */

int cmd_shift(int argc, char **argv)
{
    VizArgs a;
    viz_args_init(&a);
    a.threads = 1;
    EditViewArgs ev;
    edit_view_init(&ev);
    GOptionEntry entries[] = { EDIT_VIEW_ENTRIES(ev), VIZ_ENTRIES(a), { NULL } };
    cli_parse_compute("shift", "MODEL PROMPT", "Top-k shift of an edit (paper Fig. 7): the next-token top-k on the original\n"
              "prompt, on the prompt with the target written in, and of the edited model on the\n"
              "original prompt; with the probability moved and KL divergences. The edit is\n"
              "planned and previewed in memory: nothing is written.", entries, &argc, &argv);
    if (argc != 3) cli_usage("shift", "expected MODEL and PROMPT");
    viz_args_check("shift", &a);
    EditView v;
    edit_view_open(&v, "shift", argv[1], argv[2], &ev);
    VizEditRows rows = viz_edit_rows_from_plan(v.plan);
    VizShift s;
    GError *e = NULL;
    if (!viz_topk_shift(v.m, &rows, v.ids, v.n, v.wids, v.nw, ev.k, v.src_id, v.tgt_id, &s, &e)) cli_fail("%s", e->message);
    char **labels[VIZ_SHIFT_N];
    viz_shift_labels(&s, v.m->tok, labels);
    static const char *names[VIZ_SHIFT_N] = { "original", "written_in", "edited" };
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        viz_json_string(b, "model", argv[1]);
        viz_json_string(b, "prompt", v.prompt);
        viz_json_string(b, "written_prompt", v.written);
        char *d = stem_recipe_describe(&v.recipe);
        viz_json_string(b, "recipe", d);
        g_free(d);
        viz_json_int(b, "rows", v.plan->n_rows);
        viz_json_string(b, "source_answer", v.src_answer);
        viz_json_string(b, "target_answer", v.tgt_answer);
        viz_json_string(b, "source_answer_token", v.src_label);
        viz_json_string(b, "target_answer_token", v.tgt_label);
        viz_json_double(b, "prob_moved", s.prob_moved);
        viz_json_double(b, "kl_original_edited", s.kl_orig_edited);
        viz_json_double(b, "kl_written_edited", s.kl_written_edited);
        viz_json_double(b, "tv_written_edited", s.tv_written_edited);
        for (int p = 0; p < VIZ_SHIFT_N; p++) {
            json_builder_set_member_name(b, names[p]);
            if (!s.probs[p]) {
                json_builder_add_null_value(b);
                continue;
            }
            json_builder_begin_object(b);
            viz_json_double(b, "p_target_answer", s.p_tgt[p]);
            viz_json_double(b, "p_source_answer", s.p_src[p]);
            json_builder_set_member_name(b, "topk");
            json_builder_begin_array(b);
            for (int i = 0; i < s.k; i++) {
                json_builder_begin_object(b);
                viz_json_int(b, "id", s.top[p][i].id);
                viz_json_string(b, "token", labels[p][i]);
                viz_json_double(b, "prob", s.top[p][i].prob);
                json_builder_end_object(b);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
        }
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        static const char *tl[VIZ_SHIFT_N] = { "original", "written in", "edited" };
        for (int p = 0; p < VIZ_SHIFT_N; p++) {
            if (!s.probs[p]) continue;
            printf("%-11s %-34s", tl[p], p == 1 ? v.written : v.prompt);
            for (int i = 0; i < s.k; i++) printf("  %s %.1f%%", labels[p][i], 100 * s.top[p][i].prob);
            printf("\n");
        }
        if (v.tgt_id >= 0)
            printf("P(%s) target's answer: %.2f%% → %.2f%% edited (%.2f%% written in)\n", v.tgt_label, 100 * s.p_tgt[0],
                   100 * s.p_tgt[2], 100 * s.p_tgt[1]);
        if (v.src_id >= 0)
            printf("P(%s) source's answer: %.2f%% → %.2f%% edited\n", v.src_label, 100 * s.p_src[0], 100 * s.p_src[2]);
        printf("probability moved (total variation) %.3f; KL(original‖edited) %.3f nats", s.prob_moved, s.kl_orig_edited);
        if (isfinite(s.kl_written_edited)) printf("; KL(written‖edited) %.3f nats", s.kl_written_edited);
        printf("\n");
    }
    if (a.plot) {
        VizShiftChart c;
        char *d = stem_recipe_describe(&v.recipe);
        char *title = g_strdup_printf("Top-%d shift: %s", s.k, d);
        viz_shift_chart_init(&c, &s, labels, v.tgt_label, v.src_label, title, v.prompt, v.written);
        save_plot(&a, viz_draw_bars, &c.chart, 1200, 200 + 36 * (s.k + 2));
        viz_shift_chart_clear(&c);
        g_free(title);
        g_free(d);
    }
    for (int p = 0; p < VIZ_SHIFT_N; p++) g_strfreev(labels[p]);
    viz_shift_clear(&s);
    edit_view_close(&v);
    return 0;
}

/* ------------------------------------------------------------------ localize */

int cmd_localize(int argc, char **argv)
{
    VizArgs a;
    viz_args_init(&a);
    a.threads = 1;
    EditViewArgs ev;
    edit_view_init(&ev);
    GOptionEntry entries[] = { EDIT_VIEW_ENTRIES(ev), VIZ_ENTRIES(a), { NULL } };
    cli_parse_compute("localize", "MODEL PROMPT", "Which layers carry the fact: the edit applied to one STEM layer at a time and\n"
              "cumulatively (layers up to L), and P(target's answer) / P(source's answer) on\n"
              "PROMPT for each. Previewed in memory: nothing is written.", entries, &argc, &argv);
    if (argc != 3) cli_usage("localize", "expected MODEL and PROMPT");
    viz_args_check("localize", &a);
    EditView v;
    edit_view_open(&v, "localize", argv[1], argv[2], &ev);
    if (v.src_id < 0 && v.tgt_id < 0)
        cli_fail("no answer to track: PROMPT is not a fact phrasing about the source; give --answer (and --source-answer)");
    VizEditRows rows = viz_edit_rows_from_plan(v.plan);
    VizLocalize L;
    GError *e = NULL;
    if (!viz_localize(v.m, &rows, v.ids, v.n, v.src_id, v.tgt_id, &L, &e)) cli_fail("%s", e->message);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        viz_json_string(b, "model", argv[1]);
        viz_json_string(b, "prompt", v.prompt);
        char *d = stem_recipe_describe(&v.recipe);
        viz_json_string(b, "recipe", d);
        g_free(d);
        viz_json_string(b, "source_answer_token", v.src_label);
        viz_json_string(b, "target_answer_token", v.tgt_label);
        viz_json_double(b, "p_target_unedited", L.p_tgt_base);
        viz_json_double(b, "p_source_unedited", L.p_src_base);
        viz_json_double(b, "p_target_all_layers", L.p_tgt_all);
        viz_json_double(b, "p_source_all_layers", L.p_src_all);
        json_builder_set_member_name(b, "layers");
        json_builder_begin_array(b);
        for (int i = 0; i < L.n; i++) {
            json_builder_begin_object(b);
            viz_json_int(b, "layer", L.layers[i]);
            viz_json_int(b, "rows", L.rows_per_layer[i]);
            viz_json_double(b, "p_target_single", L.p_tgt_single[i]);
            viz_json_double(b, "p_target_cumulative", L.p_tgt_cumul[i]);
            viz_json_double(b, "p_source_single", L.p_src_single[i]);
            viz_json_double(b, "p_source_cumulative", L.p_src_cumul[i]);
            char *t1 = label(v.m, L.top1_single[i]), *t2 = label(v.m, L.top1_cumul[i]);
            viz_json_string(b, "top1_single", t1);
            viz_json_string(b, "top1_cumulative", t2);
            g_free(t1);
            g_free(t2);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        const char *tl = v.tgt_label ? v.tgt_label : "-", *sl = v.src_label ? v.src_label : "-";
        printf("P(%s) target's answer, P(%s) source's answer on \"%s\"\n", tl, sl, v.prompt);
        printf("%-10s %6s %14s %14s %14s %14s   %s\n", "layer", "rows", "tgt one layer", "tgt up to here", "src one layer",
               "src up to here", "top-1 (one layer)");
        printf("%-10s %6s %13.2f%% %14s %13.2f%% %14s\n", "unedited", "", 100 * L.p_tgt_base, "", 100 * L.p_src_base, "");
        for (int i = 0; i < L.n; i++) {
            char *t1 = label(v.m, L.top1_single[i]);
            printf("%-10d %6d %13.2f%% %13.2f%% %13.2f%% %13.2f%%   %s\n", L.layers[i], L.rows_per_layer[i],
                   100 * L.p_tgt_single[i], 100 * L.p_tgt_cumul[i], 100 * L.p_src_single[i], 100 * L.p_src_cumul[i], t1);
            g_free(t1);
        }
    }
    if (a.plot) {
        VizLocalizeChart c;
        char *d = stem_recipe_describe(&v.recipe);
        char *title = g_strdup_printf("Layer localization: %s", d);
        char *sub = g_strdup_printf("%s · prompt \"%s\"", basename_of(argv[1]), v.prompt);
        viz_localize_chart_init(&c, &L, title, sub, v.tgt_label, v.src_label);
        save_plot(&a, viz_draw_grid, &c.chart, 1100, 820);
        viz_localize_chart_clear(&c);
        g_free(title);
        g_free(sub);
        g_free(d);
    }
    viz_localize_clear(&L);
    edit_view_close(&v);
    return 0;
}

/* ------------------------------------------------------------------ report */

int cmd_report(int argc, char **argv)
{
    char *db_path = NULL, *model = NULL, *out = NULL, *prompt = NULL, *theme = NULL;
    gboolean all = FALSE, no_metrics = FALSE, quiet = FALSE;
    int k = 5, gen = 16, threads = 0;
    GOptionEntry entries[] = {
        { "db", 0, 0, G_OPTION_ARG_FILENAME, &db_path, "edit database (required)", "EDITS.db" },
        { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model, "model file (required)", "MODEL.safetensors" },
        { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "report file: .pdf, .md (charts as PNG beside it) or .json", "FILE" },
        { "all", 0, 0, G_OPTION_ARG_NONE, &all, "every patch set of the database, in one file", NULL },
        { "prompt", 0, 0, G_OPTION_ARG_STRING, &prompt, "prompt for the shift and localization (default: the source's capital prompt)", "TEXT" },
        { "k", 'k', 0, G_OPTION_ARG_INT, &k, "top-k tokens (default 5)", "K" },
        { "gen-tokens", 0, 0, G_OPTION_ARG_INT, &gen, "tokens per sample generation (default 16)", "N" },
        { "no-metrics", 0, 0, G_OPTION_ARG_NONE, &no_metrics, "skip the edit metrics (faster)", NULL },
        { "theme", 0, 0, G_OPTION_ARG_STRING, &theme, "light (default) or dark", "NAME" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "worker threads (0 = all cores)", "N" },
        { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress on stderr", NULL },
        { NULL }
    };
    cli_parse_compute("report", "[ID]", "An edit report for patch set ID (or --all): provenance, recipe, tokens and\n"
              "variants, rows per layer, warnings, the top-k shift, layer localization, the\n"
              "metrics with the relation sweep, sample generations before and after, and the\n"
              "commands to revert or re-apply. PDF (multi-page), Markdown or JSON.", entries, &argc, &argv);
    if (!db_path) cli_usage("report", "--db is required");
    if (!model) cli_usage("report", "--model is required");
    if (!out) cli_usage("report", "--out FILE.pdf|.md|.json is required");
    if (all && argc != 1) cli_usage("report", "--all takes no ID");
    if (!all && argc != 2) cli_usage("report", "expected one patch set ID (or --all)");
    if (k < 1 || k > 100) cli_usage("report", "--k must be in 1..100");
    if (gen < 1 || gen > 1000) cli_usage("report", "--gen-tokens must be in 1..1000");
    const char *dot = strrchr(out, '.');
    if (!dot || (g_ascii_strcasecmp(dot, ".pdf") && g_ascii_strcasecmp(dot, ".md") && g_ascii_strcasecmp(dot, ".json")))
        cli_usage("report", "%s: the report format follows the extension: .pdf, .md or .json", out);
    const VizTheme *t = viz_theme_by_name(theme);
    if (!t) cli_usage("report", "unknown theme '%s' (light or dark)", theme);
    gint64 id = 0;
    if (!all) {
        char *end = NULL;
        id = g_ascii_strtoll(argv[1], &end, 10);
        if (!*argv[1] || *end || id <= 0) cli_usage("report", "expected a patch set id (a positive number), got '%s'", argv[1]);
    }
    cli_init_threads(threads);
    if (!g_file_test(db_path, G_FILE_TEST_EXISTS)) cli_fail("%s: no such edit database", db_path);
    StemModel *m = cli_load_model(model);
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(db_path, FALSE, &e);
    if (!db) cli_fail("%s", e->message);
    if (!stem_editdb_attach(db, m, NULL, &e)) cli_fail("%s", e->message);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    if (all) {
        GPtrArray *list = stem_editdb_list(db, &e);
        if (!list) cli_fail("%s", e->message);
        for (guint i = 0; i < list->len; i++) g_array_append_val(ids, ((StemPatchSet *)g_ptr_array_index(list, i))->id);
        g_ptr_array_unref(list);
        if (!ids->len) cli_fail("%s: the database has no patch sets", db_path);
    } else {
        g_array_append_val(ids, id);
    }
    VizReportOptions o;
    viz_report_options_init(&o);
    o.prompt = prompt;
    o.k = k;
    o.gen_tokens = gen;
    o.metrics = !no_metrics;
    o.model_path = model;
    o.db_path = db_path;
    VizReport **reps = g_new0(VizReport *, ids->len);
    CliProgress prog;
    cli_progress_init(&prog, quiet);
    for (guint i = 0; i < ids->len; i++) {
        char what[64];
        g_snprintf(what, sizeof what, "patch set %" G_GINT64_FORMAT, g_array_index(ids, gint64, i));
        cli_progress_update(&prog, (double)i / ids->len, what);
        reps[i] = viz_report_build(db, m, g_array_index(ids, gint64, i), &o, &e);
        if (!reps[i]) cli_fail("%s", e->message);
    }
    cli_progress_update(&prog, 1.0, "writing");
    cli_progress_done(&prog);
    if (!viz_reports_write(reps, (int)ids->len, out, t, &e)) cli_fail("%s", e->message);
    if (!quiet) fprintf(stderr, "wrote %s (%u patch set%s)\n", out, ids->len, ids->len == 1 ? "" : "s");
    for (guint i = 0; i < ids->len; i++) viz_report_free(reps[i]);
    g_free(reps);
    g_array_unref(ids);
    stem_editdb_close(db);
    stem_model_free(m);
    return 0;
}
