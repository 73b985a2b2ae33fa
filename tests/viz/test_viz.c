/* Unit tests of viz/: analyses against independent computations done here
 * (brute-force pair cosines, hand-computed cases, the engine's own top-k), edit
 * analyses leaving the model exactly as they found it, every chart type in every
 * format and theme (valid files, not blank), and a full edit report (PDF pages
 * with pdfinfo, JSON parsed back, Markdown with its charts).
 *
 * `test-viz --render-samples DIR` writes every sample chart to DIR to look at. */
#include "viz/charts.h"
#include "viz/edits.h"
#include "viz/geometry.h"
#include "viz/lens.h"
#include "viz/output.h"
#include "viz/report.h"
#include "viz/textstats.h"
#include "editdb/editdb.h"
#include "editdb/planner.h"
#include "engine/checkpoint.h"
#include "engine/facteval.h"
#include "engine/sampler.h"
#include "kernels/cpu/pool.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "samples.h"
#include "testmodel.h"

/* ------------------------------------------------------------------ helpers */

static char *tmp_dir(void)
{
    GError *e = NULL;
    char *d = g_dir_make_tmp("viz-test-XXXXXX", &e);
    g_assert_no_error(e);
    return d;
}

static void rm_rf(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (!d) return;
    const char *n;
    while ((n = g_dir_read_name(d))) {
        char *p = g_build_filename(dir, n, NULL);
        g_unlink(p);
        g_free(p);
    }
    g_dir_close(d);
    g_rmdir(dir);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy's default percentile on a sorted array */
static double percentile(const double *s, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    if (lo + 1 >= n) return s[n - 1];
    return s[lo] + (pos - lo) * (s[lo + 1] - s[lo]);
}

/* ------------------------------------------------------------------ cosine stats */

static void test_cos_hand(void)
{
    /* rows (1,0), (0,1), (1,1): cosines 0, 1/sqrt2, 1/sqrt2 */
    const float rows[6] = { 1, 0, 0, 1, 1, 1 };
    VizCosStats s;
    GError *e = NULL;
    g_assert_true(viz_cos_stats(rows, 3, 2, &s, &e));
    const double r = 1 / sqrt(2.0);
    g_assert_cmpint(s.n_pairs, ==, 3);
    g_assert_cmpfloat_with_epsilon(s.mean_abs, 2 * r / 3, 1e-6);
    g_assert_cmpfloat_with_epsilon(s.mean, 2 * r / 3, 1e-6);
    g_assert_cmpfloat_with_epsilon(s.median_abs, r, 2e-5);
    g_assert_cmpfloat_with_epsilon(s.p95_abs, r, 2e-5);
    g_assert_cmpfloat_with_epsilon(s.max_abs, r, 1e-6);
    /* |cos| histogram: one pair in [0, 0.1), two in [0.7, 0.8) */
    double h[10];
    viz_cos_stats_abs_hist(&s, 0, 1, 10, h);
    g_assert_cmpfloat_with_epsilon(h[0], 100.0 / 3, 1e-9);
    g_assert_cmpfloat_with_epsilon(h[7], 200.0 / 3, 1e-9);
    viz_cos_stats_clear(&s);
    /* one row is an error, not a crash */
    g_assert_false(viz_cos_stats(rows, 1, 2, &s, &e));
    g_assert_nonnull(e);
    g_clear_error(&e);
}

static void test_cos_brute_force(void)
{
    /* random rows with a shared component, several tiles, a zero row, a duplicate */
    const int n = 530, d = 17;
    float *x = g_new(float, (size_t)n * d);
    guint64 sd = 5;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) x[(size_t)i * d + k] = (float)(vt_normal(&sd) + (i % 3 == 0 ? 0.5 : 0));
    memset(x + 7 * d, 0, sizeof(float) * d);
    memcpy(x + 300 * d, x + 301 * d, sizeof(float) * d);
    size_t np = (size_t)n * (n - 1) / 2, q = 0;
    double *c = g_new(double, np), sum = 0, sum_abs = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double dot = 0, ni = 0, nj = 0;
            for (int k = 0; k < d; k++) {
                dot += (double)x[(size_t)i * d + k] * x[(size_t)j * d + k];
                ni += (double)x[(size_t)i * d + k] * x[(size_t)i * d + k];
                nj += (double)x[(size_t)j * d + k] * x[(size_t)j * d + k];
            }
            double v = ni > 0 && nj > 0 ? dot / sqrt(ni * nj) : 0;
            sum += v;
            sum_abs += fabs(v);
            c[q++] = fabs(v);
        }
    qsort(c, np, sizeof(double), cmp_double);
    VizCosStats s;
    g_assert_true(viz_cos_stats(x, n, d, &s, NULL));
    g_assert_cmpint(s.n_zero, ==, 1);
    g_assert_cmpfloat_with_epsilon(s.mean_abs, sum_abs / np, 1e-6);
    g_assert_cmpfloat_with_epsilon(s.mean, sum / np, 1e-6);
    g_assert_cmpfloat_with_epsilon(s.max_abs, 1.0, 1e-6);
    g_assert_cmpfloat_with_epsilon(s.median_abs, percentile(c, np, 0.5), 3e-5);
    g_assert_cmpfloat_with_epsilon(s.p95_abs, percentile(c, np, 0.95), 3e-5);
    g_assert_cmpfloat_with_epsilon(s.p99_abs, percentile(c, np, 0.99), 3e-5);
    /* the same numbers with one thread and with two (histogram bit-identical) */
    pool_init(1);
    VizCosStats s1;
    g_assert_true(viz_cos_stats(x, n, d, &s1, NULL));
    pool_init(2);
    g_assert_cmpmem(s.hist, sizeof(uint64_t) * VIZ_COS_BINS, s1.hist, sizeof(uint64_t) * VIZ_COS_BINS);
    g_assert_cmpfloat_with_epsilon(s.mean_abs, s1.mean_abs, 1e-9);
    viz_cos_stats_clear(&s);
    viz_cos_stats_clear(&s1);
    g_free(c);
    g_free(x);
}

/* ------------------------------------------------------------------ PCA, neighbours */

static void test_pca_line(void)
{
    /* points on the line t (1, 2) plus a tiny orthogonal wobble: PC1 = (1, 2)/sqrt5 */
    const int n = 9;
    float x[2 * 9];
    for (int i = 0; i < n; i++) {
        double t = i - 4, w = (i % 2 ? 1 : -1) * 1e-3;
        x[2 * i] = (float)(t + 2 * w);
        x[2 * i + 1] = (float)(2 * t - w);
    }
    VizPca p;
    g_assert_true(viz_pca2(x, n, 2, &p, NULL));
    g_assert_cmpfloat_with_epsilon(p.axes[0], 1 / sqrt(5.0), 1e-5);
    g_assert_cmpfloat_with_epsilon(p.axes[1], 2 / sqrt(5.0), 1e-5);
    /* variance along the line: 5 * var(t) = 5 * 60 / 8 */
    g_assert_cmpfloat_with_epsilon(p.var[0], 5 * 60.0 / 8, 1e-3);
    g_assert_cmpfloat(p.var[1], <, 1e-4);
    g_assert_cmpfloat_with_epsilon(p.var[0] + p.var[1], p.total_var, 1e-9);
    g_assert_cmpfloat_with_epsilon(p.coords[2 * 8], 4 * sqrt(5.0), 1e-3);
    viz_pca_clear(&p);
}

static void test_neighbours_hand(void)
{
    const float rows[5 * 2] = { 1, 0, 0.9f, 0.1f, 0, 1, -1, 0, 0.5f, 0.5f };
    VizNeighbour nb[4];
    int k = viz_neighbours(rows, 5, 2, rows, NULL, 0, 4, nb);
    g_assert_cmpint(k, ==, 4);
    g_assert_cmpint(nb[0].id, ==, 1);
    g_assert_cmpint(nb[1].id, ==, 4);
    g_assert_cmpint(nb[2].id, ==, 2);
    g_assert_cmpint(nb[3].id, ==, 3);
    g_assert_cmpfloat_with_epsilon(nb[1].cos, 1 / sqrt(2.0), 1e-6);
    g_assert_cmpfloat_with_epsilon(nb[3].cos, -1.0, 1e-6);
    const guint8 cand[5] = { 1, 0, 1, 1, 1 };
    k = viz_neighbours(rows, 5, 2, rows, cand, 0, 2, nb);
    g_assert_cmpint(k, ==, 2);
    g_assert_cmpint(nb[0].id, ==, 4);
}

/* ------------------------------------------------------------------ text statistics */

static void test_heaps_hand(void)
{
    const int32_t ids[8] = { 0, 1, 0, 2, 1, 1, 3, 0 };
    VizHeaps h;
    g_assert_true(viz_heaps(ids, 8, 4, 8, 100, &h, NULL));
    g_assert_cmpint(h.n, ==, 4);
    /* L=1: 8 windows, 1 each; L=2: 4 windows [0,1][0,2][1,1][3,0] -> 2,2,1,2;
     * L=4: 2 windows [0,1,0,2][1,1,3,0] -> 3,3; L=8: 4 distinct */
    g_assert_cmpfloat(h.unique[0], ==, 1.0);
    g_assert_cmpfloat(h.unique[1], ==, 7.0 / 4);
    g_assert_cmpfloat(h.unique[2], ==, 3.0);
    g_assert_cmpfloat(h.unique[3], ==, 4.0);
    g_assert_cmpint(h.distinct, ==, 4);
    g_assert_cmpfloat(viz_heaps_length_for(&h, 3.0), ==, 4.0);
    g_assert_true(isinf(viz_heaps_length_for(&h, 5.0)));
    viz_heaps_clear(&h);

    const int64_t counts[6] = { 3, 0, 7, 3, 1, 0 };
    int n = 0;
    int32_t *top = viz_top_tokens(counts, 6, 10, &n);
    g_assert_cmpint(n, ==, 4);
    g_assert_cmpint(top[0], ==, 2);
    g_assert_cmpint(top[1], ==, 0);
    g_assert_cmpint(top[2], ==, 3);
    g_assert_cmpint(top[3], ==, 4);
    g_free(top);
}

static void test_active_model(void)
{
    StemConfig c;
    stem_config_defaults(&c);
    VizActiveModel a;
    viz_active_model(&c, &a);
    int ns = stem_config_n_stem(&c);
    g_assert_cmpfloat(a.dense_constant - a.stem_fixed, ==, (double)ns * c.dim * c.ffn_dim);
    g_assert_cmpfloat(a.stem_per_unique, ==, (double)ns * c.ffn_dim);
    /* break-even at D unique tokens: every unique token brings a row of F per STEM layer */
    g_assert_cmpfloat_with_epsilon(viz_active_crossover_unique(&a), c.dim, 1e-9);
    c.stem_mask = 0;
    viz_active_model(&c, &a);
    g_assert_true(isinf(viz_active_crossover_unique(&a)));
}

static void test_labels(void)
{
    char *s = viz_text_label(" a\n\t\xff" "\xc3\xad", 7);
    g_assert_cmpstr(s, ==, "\u2423a\u21b5\u21e5\\xFF\xc3\xad");
    g_free(s);
    StemTokenizer *tok = stem_tokenizer_train(viz_test_text, strlen(viz_test_text), 300, NULL, NULL);
    GError *e = NULL;
    int id = viz_resolve_token(tok, 300, "#42", &e);
    g_assert_cmpint(id, ==, 42);
    g_assert_cmpint(viz_resolve_token(tok, 300, "#300", &e), ==, -1);
    g_clear_error(&e);
    /* " capital" is a word of the text: "capital" resolves to its mid-sentence variant */
    int sp = stem_tokenizer_lookup(tok, " capital", 8);
    if (sp >= 0 && stem_tokenizer_lookup(tok, "capital", 7) < 0) g_assert_cmpint(viz_resolve_token(tok, 300, "capital", NULL), ==, sp);
    g_assert_cmpint(viz_resolve_token(tok, 300, "zqxv", &e), ==, -1);
    g_assert_nonnull(strstr(e->message, "not one token"));
    g_clear_error(&e);
    char *l = viz_token_label(tok, STEM_TOK_EOS);
    g_assert_cmpstr(l, ==, "<eos>");
    g_free(l);
    stem_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ model analyses */

static void test_lens_matches_model(void)
{
    StemModel *m = viz_test_model(FALSE, 3);
    const char *prompt = "The capital of France is";
    size_t n = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, prompt, strlen(prompt), &n);
    VizLens L;
    g_assert_true(viz_logit_lens(m, ids, (int)n, 5, ids[0], &L, NULL));
    g_assert_cmpint(L.n_rows, ==, m->cfg.n_layers + 1);
    StemTopk top[5];
    stem_topk(m, ids, (int)n, 5, top);
    for (int i = 0; i < 5; i++) {
        g_assert_cmpint(L.ids[(size_t)m->cfg.n_layers * 5 + i], ==, top[i].id);
        g_assert_cmpfloat_with_epsilon(L.probs[(size_t)m->cfg.n_layers * 5 + i], top[i].prob, 1e-6);
    }
    for (int r = 0; r < L.n_rows; r++) {
        g_assert_cmpfloat(L.entropy[r], >=, 0);
        g_assert_cmpfloat(L.entropy[r], <=, log(m->cfg.vocab) + 1e-4);
        for (int i = 1; i < 5; i++) g_assert_cmpfloat(L.probs[(size_t)r * 5 + i], <=, L.probs[(size_t)r * 5 + i - 1]);
    }
    viz_lens_clear(&L);
    g_free(ids);
    stem_model_free(m);
}

static void test_capture_self_check(void)
{
    StemModel *m = viz_test_model(TRUE, 4);   /* dense: every layer has W3 */
    size_t n = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, viz_test_text, strlen(viz_test_text), &n);
    float *out[STEM_MAX_LAYERS] = { 0 };
    double err = 1;
    int got = viz_capture_up(m, 0x7, ids, n, 50, out, &err, NULL);
    g_assert_cmpint(got, ==, 50);
    g_assert_cmpfloat(err, <, 1e-5);
    for (int l = 0; l < 3; l++) {
        g_assert_nonnull(out[l]);
        g_free(out[l]);
    }
    /* a STEM layer has no W3 */
    StemModel *s = viz_test_model(FALSE, 4);
    GError *e = NULL;
    float *o2[STEM_MAX_LAYERS] = { 0 };
    g_assert_cmpint(viz_capture_up(s, 0x2, ids, n, 10, o2, NULL, &e), ==, -1);
    g_assert_nonnull(e);
    g_clear_error(&e);
    stem_model_free(s);
    g_free(ids);
    stem_model_free(m);
}

static void test_geometry_sees_edits(void)
{
    StemModel *m = viz_test_model(FALSE, 6);
    int32_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = 260 + i;
    size_t n = 0;
    int32_t *text = stem_tokenizer_encode(m->tok, viz_test_text, strlen(viz_test_text), &n);
    VizGeometryInput in = { tok, 40, text, n, 30 };
    GArray *g = viz_geometry(m, 0x7, &in, NULL);
    g_assert_nonnull(g);
    g_assert_cmpuint(g->len, ==, 3);
    VizLayerGeometry *g0 = &g_array_index(g, VizLayerGeometry, 0), *g1 = &g_array_index(g, VizLayerGeometry, 1);
    g_assert_false(g0->stem);
    g_assert_cmpint(g0->n_vectors, ==, 30);
    g_assert_true(g1->stem);
    g_assert_cmpfloat(g1->stats.max_abs, <, 0.999);
    /* the same rows through viz_cos_stats directly */
    float *rows = g_new(float, (size_t)40 * m->cfg.ffn_dim);
    stem_tables_gather(m->tables, 0, tok, 40, rows);
    VizCosStats direct;
    g_assert_true(viz_cos_stats(rows, 40, m->cfg.ffn_dim, &direct, NULL));
    g_assert_cmpfloat(direct.mean_abs, ==, g1->stats.mean_abs);
    viz_cos_stats_clear(&direct);
    viz_geometry_free(g);
    /* an overlay row copying another token's row: the analysis sees it (cos = 1) */
    stem_tables_set_override(m->tables, 0, tok[1], rows);
    g = viz_geometry(m, 0x2, &in, NULL);
    g_assert_cmpfloat_with_epsilon(g_array_index(g, VizLayerGeometry, 0).stats.max_abs, 1.0, 1e-6);
    viz_geometry_free(g);
    g_free(rows);
    g_free(text);
    stem_model_free(m);
}

/* ------------------------------------------------------------------ edit analyses */

static void test_shift_and_localize(void)
{
    StemModel *m = viz_test_model(FALSE, 7);
    StemPlanner *pl = stem_planner_new(m, NULL);
    StemRecipe r;
    stem_recipe_init(&r);
    r.source = g_strdup("Spain");
    r.target = g_strdup("France");
    r.allow_subword = TRUE;
    GError *e = NULL;
    StemEditPlan *p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    g_assert_cmpint(p->n_rows, >, 0);
    VizEditRows rows = viz_edit_rows_from_plan(p);
    /* an override elsewhere must survive the analyses untouched */
    float *keep = g_new(float, m->cfg.ffn_dim), *back = g_new(float, m->cfg.ffn_dim);
    for (int i = 0; i < m->cfg.ffn_dim; i++) keep[i] = 0.01f * i;
    stem_tables_set_override(m->tables, 1, 5, keep);
    guint n_over = stem_tables_n_overrides(m->tables);

    const char *prompt = "The capital of Spain is";
    char *written = viz_written_prompt(prompt, "Spain", "France");
    g_assert_cmpstr(written, ==, "The capital of France is");
    g_assert_null(viz_written_prompt(prompt, "Italy", "France"));
    size_t n = 0, nw = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, prompt, strlen(prompt), &n);
    int32_t *wids = stem_tokenizer_encode(m->tok, written, strlen(written), &nw);
    char *sa = NULL, *ta = NULL;
    int rel = -1;
    StemFacts *f = stem_facts_load_default(NULL);
    g_assert_nonnull(f);
    g_assert_true(viz_fact_answers(f, prompt, "Spain", "France", &sa, &ta, &rel));
    g_assert_cmpstr(sa, ==, " Madrid");
    g_assert_cmpstr(ta, ==, " Paris");
    g_assert_cmpint(rel, ==, REL_CAPITAL);
    char *sa2 = NULL, *ta2 = NULL;
    g_assert_false(viz_fact_answers(f, "Hello there", "Spain", "France", &sa2, &ta2, NULL));
    g_assert_null(sa2);
    g_assert_null(ta2);
    stem_facts_free(f);
    int src = viz_answer_first_token(m->tok, prompt, " Madrid"), tgt = viz_answer_first_token(m->tok, written, " Paris");
    g_assert_cmpint(src, >=, 0);
    g_assert_cmpint(tgt, >=, 0);

    VizShift s;
    g_assert_true(viz_topk_shift(m, &rows, ids, (int)n, wids, (int)nw, 5, src, tgt, &s, &e));
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, n_over);
    stem_tables_row(m->tables, 1, 5, back);
    g_assert_cmpmem(keep, sizeof(float) * m->cfg.ffn_dim, back, sizeof(float) * m->cfg.ffn_dim);
    /* the original panel is the plain model; the written-in panel the plain model on the other prompt */
    float *probs = g_new(float, m->cfg.vocab);
    stem_next_probs(m, ids, (int)n, probs);
    g_assert_cmpmem(probs, sizeof(float) * m->cfg.vocab, s.probs[0], sizeof(float) * m->cfg.vocab);
    stem_next_probs(m, wids, (int)nw, probs);
    g_assert_cmpmem(probs, sizeof(float) * m->cfg.vocab, s.probs[1], sizeof(float) * m->cfg.vocab);
    g_assert_cmpfloat(s.prob_moved, >, 1e-4);      /* layer 1 edits reach the last position through layer 2 */
    g_assert_cmpfloat(s.prob_moved, <=, 1.0);
    g_assert_cmpfloat_with_epsilon(s.prob_moved, viz_total_variation(s.probs[0], s.probs[2], m->cfg.vocab), 1e-12);
    g_assert_cmpfloat(s.kl_orig_edited, >, 0);
    g_assert_cmpfloat(viz_kl(s.probs[0], s.probs[0], m->cfg.vocab), <, 1e-9);
    g_assert_cmpfloat(s.p_tgt[0], ==, s.probs[0][tgt]);

    VizLocalize L;
    g_assert_true(viz_localize(m, &rows, ids, (int)n, src, tgt, &L, &e));
    g_assert_cmpint(L.n, ==, 2);
    g_assert_cmpint(L.layers[0], ==, 1);
    g_assert_cmpint(L.layers[1], ==, 2);
    g_assert_cmpfloat(L.p_tgt_base, ==, s.p_tgt[0]);
    g_assert_cmpfloat(L.p_tgt_all, ==, s.p_tgt[2]);
    g_assert_cmpfloat(L.p_tgt_cumul[1], ==, L.p_tgt_all);
    g_assert_cmpfloat(L.p_tgt_cumul[0], ==, L.p_tgt_single[0]);
    /* the last layer's edit cannot reach the last position: only the prompt's own tokens changed */
    g_assert_cmpfloat(L.p_tgt_single[1], ==, L.p_tgt_base);
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, n_over);

    viz_localize_clear(&L);
    viz_shift_clear(&s);
    g_free(probs);
    g_free(sa);
    g_free(ta);
    g_free(ids);
    g_free(wids);
    g_free(written);
    g_free(keep);
    g_free(back);
    stem_edit_plan_free(p);
    stem_recipe_clear(&r);
    stem_planner_free(pl);
    stem_model_free(m);
}

/* ------------------------------------------------------------------ charts */

/* fraction of pixels that differ from the top-left (background) pixel */
static double png_ink(const char *path)
{
    cairo_surface_t *s = cairo_image_surface_create_from_png(path);
    g_assert_cmpint(cairo_surface_status(s), ==, CAIRO_STATUS_SUCCESS);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int stride = cairo_image_surface_get_stride(s);
    const unsigned char *d = cairo_image_surface_get_data(s);
    guint32 bg = *(const guint32 *)d;
    long ink = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) ink += *(const guint32 *)(d + (size_t)y * stride + 4 * x) != bg;
    cairo_surface_destroy(s);
    return (double)ink / ((double)w * h);
}

static int pdf_pages(const char *path)
{
    const char *pdfinfo = g_getenv("PDFINFO");
    if (!pdfinfo || !*pdfinfo) pdfinfo = "pdfinfo";
    char *prog = g_find_program_in_path(pdfinfo);
    if (!prog) return -1;
    char *out = NULL;
    int status = 0;
    char *argv[] = { prog, (char *)path, NULL };
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, &status, NULL));
    g_assert_cmpint(status, ==, 0);
    int pages = -1;
    const char *p = strstr(out, "Pages:");
    if (p) pages = atoi(p + 6);
    g_free(out);
    g_free(prog);
    return pages;
}

static void check_file_prefix(const char *path, const char *prefix)
{
    char *buf = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(path, &buf, &len, NULL));
    g_assert_cmpuint(len, >, 500);
    g_assert_true(g_str_has_prefix(buf, prefix));
    g_free(buf);
}

static void test_charts_render(void)
{
    char *dir = tmp_dir();
    Sample s[16];
    int n = build_samples(s);
    const VizTheme *themes[2] = { viz_theme_light(), viz_theme_dark() };
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 2; k++) {
            char *png = g_strdup_printf("%s/%s-%s.png", dir, s[i].name, themes[k]->name);
            char *svg = g_strdup_printf("%s/%s-%s.svg", dir, s[i].name, themes[k]->name);
            char *pdf = g_strdup_printf("%s/%s-%s.pdf", dir, s[i].name, themes[k]->name);
            GError *e = NULL;
            g_assert_true(viz_render_file(png, s[i].w, s[i].h, 1.0, s[i].fn, s[i].data, themes[k], &e));
            g_assert_no_error(e);
            g_assert_true(viz_render_file(svg, s[i].w, s[i].h, 1.0, s[i].fn, s[i].data, themes[k], &e));
            g_assert_true(viz_render_file(pdf, s[i].w, s[i].h, 1.0, s[i].fn, s[i].data, themes[k], &e));
            double ink = png_ink(png);
            if (g_test_verbose()) g_printerr("%s: %.1f%% ink\n", png, 100 * ink);
            g_assert_cmpfloat(ink, >, 0.02);   /* text, axes, data: not a blank canvas */
            g_assert_cmpfloat(ink, <, 0.98);
            check_file_prefix(png, "\x89PNG");
            check_file_prefix(svg, "<?xml");
            check_file_prefix(pdf, "%PDF-");
            int pages = pdf_pages(pdf);
            if (pages >= 0) g_assert_cmpint(pages, ==, 1);
            g_free(png);
            g_free(svg);
            g_free(pdf);
        }
    /* an unknown extension is an error and writes nothing */
    GError *e = NULL;
    char *bad = g_strdup_printf("%s/x.bmp", dir);
    g_assert_false(viz_render_file(bad, 100, 100, 1, s[0].fn, s[0].data, themes[0], &e));
    g_assert_error(e, VIZ_OUTPUT_ERROR, 1);
    g_clear_error(&e);
    g_assert_false(g_file_test(bad, G_FILE_TEST_EXISTS));
    g_free(bad);
    /* a multi-page document */
    char *doc_path = g_strdup_printf("%s/doc.pdf", dir);
    VizDoc *doc = viz_doc_new_pdf(doc_path, 842, 595, &e);
    g_assert_nonnull(doc);
    for (int i = 0; i < 3; i++) {
        if (i) viz_doc_next_page(doc);
        s[i].fn(viz_doc_cairo(doc), s[i].data, themes[0], 842, 595);
    }
    g_assert_cmpint(viz_doc_pages(doc), ==, 3);
    g_assert_true(viz_doc_close(doc, &e));
    int pages = pdf_pages(doc_path);
    if (pages >= 0) g_assert_cmpint(pages, ==, 3);
    g_free(doc_path);
    rm_rf(dir);
    g_free(dir);
}

static void test_chart_helpers(void)
{
    g_assert_true(viz_theme_by_name("dark") == viz_theme_dark());
    g_assert_true(viz_theme_by_name(NULL) == viz_theme_light());
    g_assert_null(viz_theme_by_name("neon"));
    double t[48], step;
    int n = viz_nice_ticks(0, 0.87, 5, t, 48, &step);
    g_assert_cmpfloat(step, ==, 0.2);
    g_assert_cmpint(n, ==, 5);
    g_assert_cmpfloat(t[4], ==, 0.8);
    char buf[32];
    viz_format_tick(0.25, 0.05, TRUE, buf, sizeof buf);
    g_assert_cmpstr(buf, ==, "25%");
    viz_format_tick(0.125, 0.025, FALSE, buf, sizeof buf);
    g_assert_cmpstr(buf, ==, "0.125");
    viz_format_tick(20000, 5000, FALSE, buf, sizeof buf);
    g_assert_cmpstr(buf, ==, "20k");
    VizFormat f;
    g_assert_true(viz_format_from_path("a/b.SVG", &f, NULL));
    g_assert_cmpint(f, ==, VIZ_FMT_SVG);
    g_assert_false(viz_format_from_path("noext", &f, NULL));
    VizColor lo = viz_colormap(0), hi = viz_colormap(1);
    g_assert_cmpfloat(lo.r + lo.g + lo.b, <, hi.r + hi.g + hi.b);
}

/* ------------------------------------------------------------------ reports */

static void test_report(void)
{
    char *dir = tmp_dir();
    char *mpath = g_build_filename(dir, "model.safetensors", NULL);
    char *dbpath = g_build_filename(dir, "edits.db", NULL);
    StemModel *tm = viz_test_model(FALSE, 8);
    GError *e = NULL;
    g_assert_true(stem_model_save(tm, mpath, FALSE, NULL, &e));
    stem_model_free(tm);
    StemModel *m = stem_model_load(mpath, &e);
    g_assert_no_error(e);
    StemEditDb *db = stem_editdb_open(dbpath, TRUE, &e);
    g_assert_no_error(e);
    g_assert_true(stem_editdb_attach(db, m, NULL, &e));
    StemRecipe r;
    stem_recipe_init(&r);
    r.source = g_strdup("Spain");
    r.target = g_strdup("France");
    r.allow_subword = TRUE;
    gint64 id1 = stem_editdb_apply(db, &r, NULL, &e);
    g_assert_no_error(e);
    g_free(r.source);
    g_free(r.target);
    r.source = g_strdup("Italy");
    r.target = g_strdup("Germany");
    gint64 id2 = stem_editdb_apply(db, &r, NULL, &e);
    g_assert_no_error(e);
    g_assert_true(stem_editdb_revert(db, id2, &e));
    stem_recipe_clear(&r);
    guint n_over = stem_tables_n_overrides(m->tables);

    VizReportOptions o;
    viz_report_options_init(&o);
    o.model_path = mpath;
    o.db_path = dbpath;
    o.gen_tokens = 6;
    VizReport *rep[2];
    rep[0] = viz_report_build(db, m, id1, &o, &e);
    g_assert_no_error(e);
    rep[1] = viz_report_build(db, m, id2, &o, &e);
    g_assert_no_error(e);
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, n_over);   /* the overlay is left as it was */
    g_assert_true(rep[0]->applied);
    g_assert_false(rep[1]->applied);
    g_assert_true(rep[0]->has_shift);
    g_assert_true(rep[0]->has_localize);
    g_assert_true(rep[0]->has_metrics);
    g_assert_cmpint(rep[0]->n_layers, ==, 2);
    g_assert_cmpstr(rep[0]->prompt, ==, "The capital of Spain is");
    g_assert_cmpint(rep[0]->n_gen, >=, 1);
    g_assert_cmpuint(rep[0]->commands->len, >=, 5);

    const VizTheme *t = viz_theme_light();
    char *pdf = g_build_filename(dir, "report.pdf", NULL), *json = g_build_filename(dir, "report.json", NULL);
    char *md = g_build_filename(dir, "report.md", NULL), *all = g_build_filename(dir, "all.pdf", NULL);
    g_assert_true(viz_reports_write(rep, 1, pdf, t, &e));
    g_assert_no_error(e);
    g_assert_true(viz_reports_write(rep, 1, json, t, &e));
    g_assert_true(viz_reports_write(rep, 1, md, t, &e));
    g_assert_true(viz_reports_write(rep, 2, all, viz_theme_dark(), &e));
    g_assert_false(viz_reports_write(rep, 1, "x.docx", t, &e));
    g_clear_error(&e);
    int pages = pdf_pages(pdf), pages_all = pdf_pages(all);
    if (pages >= 0) {
        g_assert_cmpint(pages, >=, 4);
        g_assert_cmpint(pages_all, >=, 2 * 4);
    }
    /* a page rendered back is not blank (pdftoppm, when installed) */
    char *ppm = g_find_program_in_path("pdftoppm");
    if (ppm) {
        char *prefix = g_build_filename(dir, "page", NULL);
        char *argv[] = { ppm, "-png", "-r", "40", "-f", "2", "-l", "2", "-singlefile", pdf, prefix, NULL };
        int status = 0;
        g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, NULL, NULL, &status, NULL));
        g_assert_cmpint(status, ==, 0);
        char *png = g_strdup_printf("%s.png", prefix);
        g_assert_cmpfloat(png_ink(png), >, 0.02);
        g_free(png);
        g_free(prefix);
        g_free(ppm);
    }
    /* the JSON parses back with the same numbers */
    JsonParser *jp = json_parser_new();
    g_assert_true(json_parser_load_from_file(jp, json, &e));
    JsonObject *root = json_node_get_object(json_parser_get_root(jp));
    g_assert_cmpint(json_object_get_int_member(root, "id"), ==, id1);
    g_assert_cmpstr(json_object_get_string_member(root, "state"), ==, "applied");
    JsonObject *prov = json_object_get_object_member(root, "provenance");
    g_assert_cmpstr(json_object_get_string_member(prov, "model_sha256"), ==, rep[0]->model_sha256);
    g_assert_cmpuint(strlen(json_object_get_string_member(prov, "tokenizer_sha256")), ==, 64);
    JsonObject *sh = json_object_get_object_member(root, "shift");
    g_assert_cmpfloat_with_epsilon(json_object_get_double_member(sh, "prob_moved"), rep[0]->shift.prob_moved, 1e-12);
    JsonObject *loc = json_object_get_object_member(root, "localization");
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(loc, "p_target_single")), ==, 2);
    JsonObject *met = json_object_get_object_member(root, "metrics");
    g_assert_true(json_object_has_member(met, "efficacy_strict"));
    g_assert_true(json_object_has_member(met, "relation_sweep"));
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(root, "rows_per_layer")), ==, 2);
    g_assert_cmpuint(json_array_get_length(json_object_get_array_member(root, "commands")), >=, 5);
    g_object_unref(jp);
    /* Markdown names its charts, which exist */
    char *text = NULL;
    g_assert_true(g_file_get_contents(md, &text, NULL, NULL));
    g_assert_nonnull(strstr(text, "# Edit report: patch set"));
    g_assert_nonnull(strstr(text, "stem edit revert"));
    char *shift_png = g_strdup_printf("%s/report-%" G_GINT64_FORMAT "-shift.png", dir, id1);
    g_assert_nonnull(strstr(text, "report-1-shift.png"));
    g_assert_cmpfloat(png_ink(shift_png), >, 0.02);
    g_free(shift_png);
    g_free(text);

    viz_report_free(rep[0]);
    viz_report_free(rep[1]);
    stem_editdb_close(db);
    stem_model_free(m);
    g_free(pdf);
    g_free(json);
    g_free(md);
    g_free(all);
    g_free(mpath);
    g_free(dbpath);
    if (g_getenv("VIZ_TEST_KEEP")) g_printerr("kept %s\n", dir);   /* to look at the report */
    else rm_rf(dir);
    g_free(dir);
}

/* ------------------------------------------------------------------ main */

static int render_samples(const char *dir)
{
    Sample s[16];
    int n = build_samples(s);
    const VizTheme *themes[2] = { viz_theme_light(), viz_theme_dark() };
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 2; k++) {
            const char *ext[3] = { "png", "svg", "pdf" };
            for (int e = 0; e < 3; e++) {
                char *p = g_strdup_printf("%s/%s-%s.%s", dir, s[i].name, themes[k]->name, ext[e]);
                GError *err = NULL;
                if (!viz_render_file(p, s[i].w, s[i].h, 1.5, s[i].fn, s[i].data, themes[k], &err)) {
                    g_printerr("%s\n", err->message);
                    return 1;
                }
                g_free(p);
            }
        }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--render-samples")) return render_samples(argv[2]);
    g_test_init(&argc, &argv, NULL);
    pool_init(2);
    g_test_add_func("/viz/cos/hand", test_cos_hand);
    g_test_add_func("/viz/cos/brute-force", test_cos_brute_force);
    g_test_add_func("/viz/pca/line", test_pca_line);
    g_test_add_func("/viz/neighbours/hand", test_neighbours_hand);
    g_test_add_func("/viz/text/heaps", test_heaps_hand);
    g_test_add_func("/viz/text/active-model", test_active_model);
    g_test_add_func("/viz/text/labels", test_labels);
    g_test_add_func("/viz/lens/matches-model", test_lens_matches_model);
    g_test_add_func("/viz/geometry/capture-self-check", test_capture_self_check);
    g_test_add_func("/viz/geometry/sees-edits", test_geometry_sees_edits);
    g_test_add_func("/viz/edits/shift-localize", test_shift_and_localize);
    g_test_add_func("/viz/charts/render", test_charts_render);
    g_test_add_func("/viz/charts/helpers", test_chart_helpers);
    g_test_add_func("/viz/report/build-write", test_report);
    return g_test_run();
}
