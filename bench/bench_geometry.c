/* bench_geometry: the embedding-geometry analysis (viz_cos_stats: normalize,
 * tiled sgemm over all row pairs, |cos| histogram and quantiles) on 4,096 rows per
 * layer. With a model file it runs on that model's STEM tables (the 4,096 first
 * ids, or all rows when the vocabulary is smaller); without one on random rows
 * of the default model's shape (4,096 x 512). Target: <= 200 ms per layer on the
 * default model.
 *
 * Besides wall time it reports the process CPU time per call (all threads): on
 * a shared machine the wall time includes waiting for a core, the CPU time does
 * not (cpu_ms / threads is what the call costs on idle cores).
 *
 * Usage: bench_geometry [--model FILE] [--rows N] [--threads T] [--trials K] */
#include "bench_common.h"
#include "engine/checkpoint.h"
#include "kernels/cpu/pool.h"
#include "viz/geometry.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int rows = 4096, threads = 2, trials = 7, ffn = 512;
    char *model = NULL;
    GOptionEntry entries[] = {
        { "model", 0, 0, G_OPTION_ARG_FILENAME, &model, "model file (default: random rows)", "FILE" },
        { "rows", 0, 0, G_OPTION_ARG_INT, &rows, "rows per layer (default 4096)", "N" },
        { "ffn", 0, 0, G_OPTION_ARG_INT, &ffn, "row width without a model (default 512)", "F" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "pool threads (default 2)", "T" },
        { "trials", 0, 0, G_OPTION_ARG_INT, &trials, "timed trials per layer (default 7)", "K" },
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new("- geometry (pairwise cosine) timing");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "bench_geometry: %s\n", err->message);
        return 2;
    }
    g_option_context_free(ctx);
    if (rows < 2 || trials < 1 || ffn < 1) {
        fprintf(stderr, "bench_geometry: --rows >= 2, --trials >= 1, --ffn >= 1\n");
        return 2;
    }
    pool_init(threads);
    StemModel *m = NULL;
    int n_layers = 1;
    if (model) {
        m = stem_model_load(model, &err);
        if (!m) {
            fprintf(stderr, "bench_geometry: %s\n", err->message);
            return 1;
        }
        n_layers = stem_config_n_stem(&m->cfg);
        ffn = m->cfg.ffn_dim;
        if (rows > m->cfg.vocab) rows = m->cfg.vocab;
        if (n_layers == 0) {
            fprintf(stderr, "bench_geometry: %s has no STEM layer\n", model);
            return 1;
        }
    }
    float *x = g_new(float, (size_t)rows * ffn);
    int32_t *ids = g_new(int32_t, rows);
    for (int i = 0; i < rows; i++) ids[i] = i;
    double *t = g_new(double, trials), *cpu = g_new(double, trials);
    printf("{\n  \"bench\": \"geometry\",\n  \"source\": \"%s\",\n  \"rows\": %d,\n  \"ffn\": %d,\n  \"threads\": %d,\n"
           "  \"layers\": [\n", model ? model : "random", rows, ffn, pool_threads());
    double worst = 0;
    for (int j = 0; j < n_layers; j++) {
        if (m) stem_tables_gather(m->tables, j, ids, rows, x);
        else bench_fill(x, (size_t)rows * ffn, 7);
        VizCosStats s = { 0 };
        /* one warm-up (page faults, OpenBLAS buffers) */
        if (!viz_cos_stats(x, rows, ffn, &s, &err)) {
            fprintf(stderr, "bench_geometry: %s\n", err->message);
            return 1;
        }
        viz_cos_stats_clear(&s);
        for (int k = 0; k < trials; k++) {
            double t0 = bench_now(), c0 = cpu_now();
            viz_cos_stats(x, rows, ffn, &s, NULL);
            t[k] = (bench_now() - t0) * 1e3;
            cpu[k] = (cpu_now() - c0) * 1e3;
            if (k + 1 < trials) viz_cos_stats_clear(&s);
        }
        double med = bench_quantile(t, trials, 0.5);
        worst = MAX(worst, med);
        printf("    {\"stem_index\": %d, \"layer\": %d, \"median_ms\": %.1f, \"best_ms\": %.1f, \"median_cpu_ms\": %.1f, "
               "\"p95_abs_cos\": %.4f, \"trials_ms\": ",
               j, m ? stem_config_stem_layer(&m->cfg, j) : -1, med, bench_min(t, trials), bench_quantile(cpu, trials, 0.5),
               s.p95_abs);
        bench_print_array(stdout, t, trials, "%.1f");
        printf("}%s\n", j + 1 < n_layers ? "," : "");
        viz_cos_stats_clear(&s);
    }
    printf("  ],\n  \"worst_median_ms\": %.1f,\n  \"target_ms\": 200\n}\n", worst);
    g_free(t);
    g_free(cpu);
    g_free(ids);
    g_free(x);
    stem_model_free(m);
    return 0;
}
