/* bench_edit: apply + revert of one swap recipe (all STEM layers) through the
 * edit database, at two vocabulary sizes with the same layers, to show the cost
 * is milliseconds and flat in the vocabulary (editdb/README.md "Performance").
 *
 *   bench_edit [--vocabs 4096,131072] [--runs 50] [--model FILE]... [--keep DIR]
 *
 * For each vocabulary a random model with the `default` preset's architecture
 * (dim 256, 4 layers, STEM layers 1-3, ffn 512, fp32 tables) and a byte-level
 * tokenizer (as `stem init` writes) is created in a temporary directory, so the
 * recipe plans the same rows at every size: "Spain" -> "France", strategy auto.
 * --model adds existing model files (e.g. the trained default model, whose
 * tokenizer has " Spain" as one token: fewer rows).
 *
 * Per model and per durability mode (synchronous NORMAL, the default, and
 * STEM_EDITDB_SYNC=full): `runs` times stem_editdb_apply (plan inside the write
 * transaction, insert recipe/patch set/rows/audit, commit, overlay update) then
 * stem_editdb_revert (commit, fall-back rows read, overlay update). Also timed
 * once: hashing the model file, attach (full overlay load), and a plan alone
 * (what a GUI preview costs). JSON on stdout, progress on stderr. */
#include "bench_common.h"
#include "editdb/editdb.h"
#include "engine/checkpoint.h"
#include "engine/tokenizer.h"

#include <glib/gstdio.h>

static char *make_model(const char *dir, int vocab)
{
    StemConfig c = { .vocab = vocab, .dim = 256, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4, .ffn_dim = 512,
                     .seq_len = 128, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .stem_mask = 0xE };
    GError *e = NULL;
    StemModel *m = stem_model_new(&c, &e);
    if (!m) {
        fprintf(stderr, "bench_edit: %s\n", e->message);
        exit(1);
    }
    stem_model_init_weights(m, 1);
    m->tok = stem_tokenizer_train("", 0, STEM_TOK_N_BASE, NULL, NULL);
    char *name = g_strdup_printf("init-v%d.safetensors", vocab);
    char *path = g_build_filename(dir, name, NULL);
    g_free(name);
    if (!stem_model_save(m, path, FALSE, NULL, &e)) {
        fprintf(stderr, "bench_edit: %s\n", e->message);
        exit(1);
    }
    stem_model_free(m);
    return path;
}

static void rm_db(const char *p)
{
    char *w = g_strconcat(p, "-wal", NULL), *s = g_strconcat(p, "-shm", NULL);
    g_unlink(p);
    g_unlink(w);
    g_unlink(s);
    g_free(w);
    g_free(s);
}

static void stats(const char *name, const double *v, int n, gboolean last)
{
    printf("        \"%s\": {\"median_ms\": %.4f, \"p90_ms\": %.4f, \"min_ms\": %.4f, \"mean_ms\": %.4f}%s\n", name,
           bench_quantile(v, n, 0.5), bench_quantile(v, n, 0.9), bench_min(v, n), bench_mean(v, n), last ? "" : ",");
}

static void bench_model(const char *path, const char *label, int runs, gboolean first)
{
    GError *e = NULL;
    fprintf(stderr, "bench_edit: %s\n", label);
    StemModel *m = stem_model_load(path, &e);
    if (!m) {
        fprintf(stderr, "bench_edit: %s\n", e->message);
        exit(1);
    }
    double t0 = bench_now();
    stem_model_sha256(m, NULL);
    double t_sha = bench_now() - t0;
    printf("%s  {\n    \"model\": \"%s\", \"label\": \"%s\", \"vocab\": %d, \"stem_layers\": %d, \"ffn\": %d, "
           "\"sha256_s\": %.3f,\n    \"modes\": [\n",
           first ? "" : ",\n", path, label, m->cfg.vocab, stem_config_n_stem(&m->cfg), m->cfg.ffn_dim, t_sha);
    const char *modes[2] = { "normal", "full" };
    for (int mode = 0; mode < 2; mode++) {
        g_setenv("STEM_EDITDB_SYNC", modes[mode], TRUE);
        char *dir = g_dir_make_tmp("bench-edit-db-XXXXXX", NULL);
        char *dbp = g_build_filename(dir, "bench.db", NULL);
        StemEditDb *db = stem_editdb_open(dbp, TRUE, &e);
        t0 = bench_now();
        if (!db || !stem_editdb_attach(db, m, NULL, &e)) {
            fprintf(stderr, "bench_edit: %s\n", e->message);
            exit(1);
        }
        double t_attach = bench_now() - t0;
        StemRecipe r;
        stem_recipe_init(&r);
        r.source = g_strdup("Spain");
        r.target = g_strdup("France");
        /* plan alone: the preview cost */
        double *plan = g_new(double, runs), *apply = g_new(double, runs), *revert = g_new(double, runs),
               *both = g_new(double, runs);
        int rows = 0;
        for (int i = 0; i < runs; i++) {
            t0 = bench_now();
            StemEditPlan *p = stem_planner_plan(stem_editdb_planner(db), &r, &e);
            plan[i] = (bench_now() - t0) * 1e3;
            if (!p) {
                fprintf(stderr, "bench_edit: %s\n", e->message);
                exit(1);
            }
            rows = p->n_rows;
            stem_edit_plan_free(p);
        }
        for (int i = 0; i < runs; i++) {
            t0 = bench_now();
            gint64 id = stem_editdb_apply(db, &r, NULL, &e);
            double t1 = bench_now();
            if (!id || !stem_editdb_revert(db, id, &e)) {
                fprintf(stderr, "bench_edit: %s\n", e->message);
                exit(1);
            }
            double t2 = bench_now();
            apply[i] = (t1 - t0) * 1e3;
            revert[i] = (t2 - t1) * 1e3;
            both[i] = (t2 - t0) * 1e3;
        }
        if (stem_tables_n_overrides(m->tables) != 0) {
            fprintf(stderr, "bench_edit: overlay not empty after revert\n");
            exit(1);
        }
        printf("      {\n        \"sync\": \"%s\", \"rows\": %d, \"runs\": %d, \"attach_ms\": %.3f,\n", modes[mode], rows,
               runs, t_attach * 1e3);
        stats("plan", plan, runs, FALSE);
        stats("apply", apply, runs, FALSE);
        stats("revert", revert, runs, FALSE);
        stats("apply_plus_revert", both, runs, TRUE);
        printf("      }%s\n", mode == 0 ? "," : "");
        fprintf(stderr, "  sync %-6s rows %3d  apply %.3f ms  revert %.3f ms  (median of %d)  plan %.3f ms\n",
                modes[mode], rows, bench_quantile(apply, runs, 0.5), bench_quantile(revert, runs, 0.5), runs,
                bench_quantile(plan, runs, 0.5));
        g_free(plan);
        g_free(apply);
        g_free(revert);
        g_free(both);
        stem_recipe_clear(&r);
        stem_editdb_close(db);
        rm_db(dbp);
        g_rmdir(dir);
        g_free(dbp);
        g_free(dir);
    }
    g_unsetenv("STEM_EDITDB_SYNC");
    printf("    ]\n  }");
    stem_model_free(m);
}

int main(int argc, char **argv)
{
    char *vocabs = g_strdup("4096,131072");
    char **models = NULL;
    char *keep = NULL;
    int runs = 50;
    GOptionEntry entries[] = {
        { "vocabs", 0, 0, G_OPTION_ARG_STRING, &vocabs, "vocabulary sizes of the generated models", "LIST" },
        { "runs", 0, 0, G_OPTION_ARG_INT, &runs, "apply+revert pairs per model and mode (50)", "N" },
        { "model", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &models, "also bench this model file", "FILE" },
        { "keep", 0, 0, G_OPTION_ARG_FILENAME, &keep, "write the generated models here and keep them", "DIR" },
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new("- apply + revert timings of the edit database");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *e = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &e)) {
        fprintf(stderr, "bench_edit: %s\n", e->message);
        return 2;
    }
    g_option_context_free(ctx);
    if (runs < 1) runs = 1;
    char *dir = keep ? g_strdup(keep) : g_dir_make_tmp("bench-edit-XXXXXX", NULL);
    g_mkdir_with_parents(dir, 0755);
    printf("{\n\"bench\": \"edit\", \"runs\": %d,\n\"results\": [\n", runs);
    char **vs = g_strsplit(vocabs, ",", -1);
    gboolean first = TRUE;
    for (int i = 0; vs[i]; i++) {
        int v = atoi(vs[i]);
        char *name = g_strdup_printf("init-v%d.safetensors", v);
        char *path = g_build_filename(dir, name, NULL);
        g_free(name);
        if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
            fprintf(stderr, "bench_edit: writing a random model with vocab %d\n", v);
            g_free(path);
            path = make_model(dir, v);
        }
        char *label = g_strdup_printf("stem init, vocab %d", v);
        bench_model(path, label, runs, first);
        first = FALSE;
        if (!keep) g_unlink(path);
        g_free(label);
        g_free(path);
    }
    for (int i = 0; models && models[i]; i++) {
        bench_model(models[i], models[i], runs, first);
        first = FALSE;
    }
    printf("\n]\n}\n");
    if (!keep) g_rmdir(dir);
    g_strfreev(vs);
    g_free(dir);
    return 0;
}
