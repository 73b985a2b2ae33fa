/* viz-dump DIR: writes a small structured model (DIR/model.safetensors), a
 * synthetic matrix (DIR/synthetic.f32) and DIR/results.json with what the viz
 * analyses compute on them, for crosscheck.py to recompute independently with
 * numpy. */
#include "viz/geometry.h"
#include "viz/lens.h"
#include "viz/textstats.h"
#include "engine/checkpoint.h"
#include "kernels/cpu/pool.h"
#include "testmodel.h"

#include <json-glib/json-glib.h>
#include <stdio.h>

static void add_stats(JsonBuilder *b, const VizCosStats *s)
{
#define D(k, v) do { json_builder_set_member_name(b, k); json_builder_add_double_value(b, v); } while (0)
    D("mean_abs", s->mean_abs); D("median_abs", s->median_abs); D("p95_abs", s->p95_abs);
    D("p99_abs", s->p99_abs); D("max_abs", s->max_abs); D("mean", s->mean); D("std", s->std);
#undef D
    json_builder_set_member_name(b, "n_pairs"); json_builder_add_int_value(b, s->n_pairs);
    double hist[50];
    viz_cos_stats_abs_hist(s, 0, 0.5, 50, hist);
    json_builder_set_member_name(b, "hist_0_05_50");
    json_builder_begin_array(b);
    for (int i = 0; i < 50; i++) json_builder_add_double_value(b, hist[i]);
    json_builder_end_array(b);
}

static void ints(JsonBuilder *b, const char *name, const int32_t *v, int n)
{
    json_builder_set_member_name(b, name);
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) json_builder_add_int_value(b, v[i]);
    json_builder_end_array(b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: viz-dump DIR\n");
        return 2;
    }
    pool_init(2);
    GError *e = NULL;
    char *mpath = g_build_filename(argv[1], "model.safetensors", NULL);
    StemModel *tm = viz_test_model(FALSE, 11);
    if (!stem_model_save(tm, mpath, FALSE, NULL, &e)) g_error("%s", e->message);
    stem_model_free(tm);
    StemModel *m = stem_model_load(mpath, &e);
    if (!m) g_error("%s", e->message);
    const int V = m->cfg.vocab, F = m->cfg.ffn_dim;

    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "model"); json_builder_add_string_value(b, mpath);

    /* cosine stats of every STEM layer over a token sample (every 2nd token + a few) */
    int ns = 0;
    int32_t sample[300];
    for (int t = 0; t < V; t += 2) sample[ns++] = t;
    ints(b, "sample", sample, ns);
    VizGeometryInput in = { .tokens = sample, .n_tokens = ns };
    GArray *geo = viz_geometry(m, m->cfg.stem_mask, &in, &e);
    if (!geo) g_error("%s", e->message);
    json_builder_set_member_name(b, "cos");
    json_builder_begin_array(b);
    for (guint i = 0; i < geo->len; i++) {
        VizLayerGeometry *g = &g_array_index(geo, VizLayerGeometry, i);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "layer"); json_builder_add_int_value(b, g->layer);
        json_builder_set_member_name(b, "stem_index");
        json_builder_add_int_value(b, stem_config_stem_index(&m->cfg, g->layer));
        add_stats(b, &g->stats);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    viz_geometry_free(geo);

    /* a synthetic matrix: several tiles, zero rows, a duplicated row */
    {
        const int n = 700, d = 40;
        float *x = g_new(float, (size_t)n * d);
        guint64 s = 99;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < d; k++) x[(size_t)i * d + k] = (float)(vt_normal(&s) + (i % 5 == 0 ? 0.7 : 0.0));
        memset(x + 3 * d, 0, sizeof(float) * d);
        memset(x + 500 * d, 0, sizeof(float) * d);
        memcpy(x + 10 * d, x + 11 * d, sizeof(float) * d);
        char *sp = g_build_filename(argv[1], "synthetic.f32", NULL);
        g_file_set_contents(sp, (const char *)x, (gssize)(sizeof(float) * n * d), NULL);
        VizCosStats st;
        if (!viz_cos_stats(x, n, d, &st, &e)) g_error("%s", e->message);
        json_builder_set_member_name(b, "synthetic");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "path"); json_builder_add_string_value(b, sp);
        json_builder_set_member_name(b, "n"); json_builder_add_int_value(b, n);
        json_builder_set_member_name(b, "d"); json_builder_add_int_value(b, d);
        json_builder_set_member_name(b, "n_zero"); json_builder_add_int_value(b, st.n_zero);
        add_stats(b, &st);
        /* PCA of the same matrix */
        VizPca p;
        if (!viz_pca2(x, n, d, &p, &e)) g_error("%s", e->message);
        json_builder_set_member_name(b, "pca_var");
        json_builder_begin_array(b);
        json_builder_add_double_value(b, p.var[0]);
        json_builder_add_double_value(b, p.var[1]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "pca_total_var"); json_builder_add_double_value(b, p.total_var);
        json_builder_set_member_name(b, "pca_coords");
        json_builder_begin_array(b);
        for (int i = 0; i < n; i++) {
            json_builder_begin_array(b);
            json_builder_add_double_value(b, p.coords[2 * i]);
            json_builder_add_double_value(b, p.coords[2 * i + 1]);
            json_builder_end_array(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        viz_pca_clear(&p);
        viz_cos_stats_clear(&st);
        g_free(sp);
        g_free(x);
    }

    /* PCA of STEM layer 1 rows (sample), neighbours of token 42 in layer 2 */
    {
        float *rows = g_new(float, (size_t)V * F);
        stem_tables_gather(m->tables, 0, sample, ns, rows);
        VizPca p;
        if (!viz_pca2(rows, ns, F, &p, &e)) g_error("%s", e->message);
        json_builder_set_member_name(b, "pca_layer1");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "var");
        json_builder_begin_array(b);
        json_builder_add_double_value(b, p.var[0]);
        json_builder_add_double_value(b, p.var[1]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "coords");
        json_builder_begin_array(b);
        for (int i = 0; i < ns; i++) {
            json_builder_begin_array(b);
            json_builder_add_double_value(b, p.coords[2 * i]);
            json_builder_add_double_value(b, p.coords[2 * i + 1]);
            json_builder_end_array(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        viz_pca_clear(&p);

        int32_t all[300];
        for (int t = 0; t < V; t++) all[t] = t;
        stem_tables_gather(m->tables, 1, all, V, rows);
        VizNeighbour nb[8];
        int k = viz_neighbours(rows, V, F, rows + (size_t)42 * F, NULL, 42, 8, nb);
        json_builder_set_member_name(b, "neighbours");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "stem_index"); json_builder_add_int_value(b, 1);
        json_builder_set_member_name(b, "query"); json_builder_add_int_value(b, 42);
        json_builder_set_member_name(b, "ids");
        json_builder_begin_array(b);
        for (int i = 0; i < k; i++) json_builder_add_int_value(b, nb[i].id);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "cos");
        json_builder_begin_array(b);
        for (int i = 0; i < k; i++) json_builder_add_double_value(b, nb[i].cos);
        json_builder_end_array(b);
        json_builder_end_object(b);
        g_free(rows);
    }

    /* logit lens on a prompt */
    {
        const char *prompt = "The capital of Spain is";
        size_t n = 0;
        int32_t *ids = stem_tokenizer_encode(m->tok, prompt, strlen(prompt), &n);
        VizLens L;
        if (!viz_logit_lens(m, ids, (int)n, 5, ids[0], &L, &e)) g_error("%s", e->message);
        json_builder_set_member_name(b, "lens");
        json_builder_begin_object(b);
        ints(b, "prompt_ids", ids, (int)n);
        json_builder_set_member_name(b, "rows");
        json_builder_begin_array(b);
        for (int r = 0; r < L.n_rows; r++) {
            json_builder_begin_object(b);
            ints(b, "ids", L.ids + (size_t)r * L.k, L.k);
            json_builder_set_member_name(b, "probs");
            json_builder_begin_array(b);
            for (int i = 0; i < L.k; i++) json_builder_add_double_value(b, L.probs[(size_t)r * L.k + i]);
            json_builder_end_array(b);
            json_builder_set_member_name(b, "entropy"); json_builder_add_double_value(b, L.entropy[r]);
            json_builder_set_member_name(b, "track"); json_builder_add_double_value(b, L.track[r]);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        viz_lens_clear(&L);
        g_free(ids);
    }

    /* dense up-projection outputs of layer 0 on a text */
    {
        size_t n = 0;
        int32_t *ids = stem_tokenizer_encode(m->tok, viz_test_text, strlen(viz_test_text), &n);
        float *out[STEM_MAX_LAYERS] = { 0 };
        double err = 0;
        int got = viz_capture_up(m, 1, ids, n, 40, out, &err, &e);
        if (got < 0) g_error("%s", e->message);
        VizCosStats st;
        if (!viz_cos_stats(out[0], got, F, &st, &e)) g_error("%s", e->message);
        json_builder_set_member_name(b, "dense");
        json_builder_begin_object(b);
        ints(b, "text_ids", ids, (int)n);
        json_builder_set_member_name(b, "layer"); json_builder_add_int_value(b, 0);
        json_builder_set_member_name(b, "n_want"); json_builder_add_int_value(b, 40);
        json_builder_set_member_name(b, "n_got"); json_builder_add_int_value(b, got);
        json_builder_set_member_name(b, "max_rel_err"); json_builder_add_double_value(b, err);
        json_builder_set_member_name(b, "first_vector");
        json_builder_begin_array(b);
        for (int k = 0; k < F; k++) json_builder_add_double_value(b, out[0][k]);
        json_builder_end_array(b);
        add_stats(b, &st);
        json_builder_end_object(b);
        viz_cos_stats_clear(&st);
        g_free(out[0]);

        VizHeaps h;
        if (!viz_heaps(ids, n, V, 64, 50, &h, &e)) g_error("%s", e->message);
        json_builder_set_member_name(b, "heaps");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "length");
        json_builder_begin_array(b);
        for (int i = 0; i < h.n; i++) json_builder_add_int_value(b, h.length[i]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "unique");
        json_builder_begin_array(b);
        for (int i = 0; i < h.n; i++) json_builder_add_double_value(b, h.unique[i]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "windows");
        json_builder_begin_array(b);
        for (int i = 0; i < h.n; i++) json_builder_add_int_value(b, h.windows[i]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "K"); json_builder_add_double_value(b, h.K);
        json_builder_set_member_name(b, "beta"); json_builder_add_double_value(b, h.beta);
        json_builder_end_object(b);
        viz_heaps_clear(&h);
        g_free(ids);
    }

    json_builder_end_object(b);
    JsonGenerator *gen = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    char *rp = g_build_filename(argv[1], "results.json", NULL);
    if (!json_generator_to_file(gen, rp, &e)) g_error("%s", e->message);
    json_node_unref(root);
    g_object_unref(gen);
    g_object_unref(b);
    g_free(rp);
    g_free(mpath);
    stem_model_free(m);
    return 0;
}
