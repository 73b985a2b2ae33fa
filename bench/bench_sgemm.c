/* bench_sgemm: what the cores can do with OpenBLAS sgemm, the yardstick for MFU.
 *
 * Modes (all C = A B^T, square n x n, 2 n^3 FLOPs per call):
 *   single      one thread, one sgemm (OpenBLAS at 1 thread).
 *   pool_each   our pool (pool.h) with T threads; every thread runs its OWN
 *               single-threaded sgemm on its own matrices at the same time.
 *               Aggregate GFLOP/s = T * 2n^3 / wall. This is the PEAK used for
 *               MFU: it is how the engine uses the cores (OpenBLAS pinned to one
 *               thread, our pool splitting work), minus any split overhead.
 *   pool_split  ONE sgemm split by rows over the pool with the engine's own
 *               op_matmul_forward (what a large engine matmul actually gets).
 *   openblas_mt OpenBLAS's own threading (openblas_set_num_threads(T)), for
 *               reference only; run as a block at the end because OpenBLAS's
 *               idle threads spin for a while after each call and would steal
 *               cycles from the other modes.
 * single / pool_each / pool_split are interleaved trial by trial so machine
 * noise hits them alike; each mode reports the median and the best trial.
 *
 * --shapes adds the GEMMs of a training step of the bench architecture
 * (N = B*T = 2048 rows; D 256, F 688, V 4096) through the engine's own
 * op_matmul_forward / op_matmul_backward (dx only, dW only), each alone and hot
 * in cache, plus what fusing would give: q|k|v as one [3D, D] weight, and w1|w3
 * of a dense layer as one [2F, D] weight. Evidence for where the matmul time
 * goes, not part of the peak.
 *
 * Usage: bench_sgemm [--size N] [--threads T] [--trials K] [--shapes] */
#include "bench_common.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"

#include <cblas.h>
#include <stdio.h>

typedef struct {
    int n;
    float **a, **b, **c;   /* one set per thread */
} EachCtx;

static void each_part(void *p, size_t begin, size_t end)
{
    EachCtx *e = p;
    for (size_t i = begin; i < end; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, e->n, e->n, e->n, 1.0f, e->a[i], e->n, e->b[i], e->n,
                    0.0f, e->c[i], e->n);
}

typedef struct { const char *name; int N, in, out; } Shape;

/* GFLOP/s of op_matmul_forward, backward dx and backward dW for one shape:
 * median of `trials` timings, each of enough calls to take ~20 ms. */
static void shape_bench(const Shape *sh, int trials, gboolean last)
{
    const size_t nx = (size_t)sh->N * sh->in, ny = (size_t)sh->N * sh->out, nw = (size_t)sh->out * sh->in;
    float *x = g_new(float, nx), *y = g_new(float, ny), *w = g_new(float, nw), *dx = g_new0(float, nx),
          *dw = g_new0(float, nw);
    bench_fill(x, nx, 1);
    bench_fill(y, ny, 2);
    bench_fill(w, nw, 3);
    const double flops = 2.0 * sh->N * sh->in * sh->out;
    double gf[3];
    double *t = g_new(double, trials);
    for (int kind = 0; kind < 3; kind++) {
        int reps = 1;
        for (;;) {   /* calibrate reps to ~20 ms */
            double t0 = bench_now();
            for (int r = 0; r < reps; r++) {
                if (kind == 0) op_matmul_forward(y, x, w, sh->N, sh->in, sh->out, 0);
                else if (kind == 1) op_matmul_backward(dx, NULL, y, x, w, sh->N, sh->in, sh->out);
                else op_matmul_backward(NULL, dw, y, x, w, sh->N, sh->in, sh->out);
            }
            double el = bench_now() - t0;
            if (el > 0.02 || reps > 1000) break;
            reps *= 2;
        }
        for (int k = 0; k < trials; k++) {
            double t0 = bench_now();
            for (int r = 0; r < reps; r++) {
                if (kind == 0) op_matmul_forward(y, x, w, sh->N, sh->in, sh->out, 0);
                else if (kind == 1) op_matmul_backward(dx, NULL, y, x, w, sh->N, sh->in, sh->out);
                else op_matmul_backward(NULL, dw, y, x, w, sh->N, sh->in, sh->out);
            }
            t[k] = flops * reps / (bench_now() - t0) * 1e-9;
        }
        gf[kind] = bench_quantile(t, trials, 0.5);
    }
    fprintf(stderr, "bench_sgemm: %-22s %5d x %4d -> %4d   fwd %6.1f  dx %6.1f  dW %6.1f GFLOP/s\n", sh->name, sh->N,
            sh->in, sh->out, gf[0], gf[1], gf[2]);
    printf("    {\"name\": \"%s\", \"N\": %d, \"in\": %d, \"out\": %d, \"fwd_gflops\": %.2f, \"dx_gflops\": %.2f, "
           "\"dw_gflops\": %.2f}%s\n", sh->name, sh->N, sh->in, sh->out, gf[0], gf[1], gf[2], last ? "" : ",");
    g_free(t); g_free(x); g_free(y); g_free(w); g_free(dx); g_free(dw);
}

static void report(const char *name, const double *gf, int k, gboolean last)
{
    printf("    \"%s\": {\"median_gflops\": %.2f, \"best_gflops\": %.2f, \"trials_gflops\": ", name,
           bench_quantile(gf, k, 0.5), bench_quantile(gf, k, 1.0));
    bench_print_array(stdout, gf, k, "%.2f");
    printf("}%s\n", last ? "" : ",");
}

int main(int argc, char **argv)
{
    int n = 2048, threads = 2, trials = 7;
    gboolean shapes = FALSE;
    GOptionEntry entries[] = {
        { "size", 0, 0, G_OPTION_ARG_INT, &n, "square matrix size (default 2048)", "N" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "pool threads (default 2)", "T" },
        { "trials", 0, 0, G_OPTION_ARG_INT, &trials, "timed trials per mode (default 7)", "K" },
        { "shapes", 0, 0, G_OPTION_ARG_NONE, &shapes, "also time the training step's GEMM shapes", NULL },
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new("- sgemm peak for MFU");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "bench_sgemm: %s\n", err->message);
        return 2;
    }
    g_option_context_free(ctx);
    if (n < 64 || threads < 1 || trials < 1) {
        fprintf(stderr, "bench_sgemm: need --size >= 64, --threads >= 1, --trials >= 1\n");
        return 2;
    }

    pool_init(threads);            /* also pins OpenBLAS to one thread */
    const size_t nn = (size_t)n * n;
    const double flops = 2.0 * (double)n * n * n;
    EachCtx e = { .n = n, .a = g_new(float *, threads), .b = g_new(float *, threads), .c = g_new(float *, threads) };
    for (int t = 0; t < threads; t++) {
        e.a[t] = g_new(float, nn);
        e.b[t] = g_new(float, nn);
        e.c[t] = g_new0(float, nn);
        bench_fill(e.a[t], nn, 11 + t);
        bench_fill(e.b[t], nn, 101 + t);
    }

    double *g_single = g_new(double, trials), *g_each = g_new(double, trials), *g_split = g_new(double, trials),
           *g_mt = g_new(double, trials);

    /* warm up every mode once (page faults, OpenBLAS buffers) */
    each_part(&e, 0, 1);
    pool_for((size_t)threads, 1, each_part, &e);
    op_matmul_forward(e.c[0], e.a[0], e.b[0], n, n, n, 0);

    for (int k = 0; k < trials; k++) {
        double t0 = bench_now();
        each_part(&e, 0, 1);
        double t1 = bench_now();
        pool_for((size_t)threads, 1, each_part, &e);
        double t2 = bench_now();
        op_matmul_forward(e.c[0], e.a[0], e.b[0], n, n, n, 0);
        double t3 = bench_now();
        g_single[k] = flops / (t1 - t0) * 1e-9;
        g_each[k] = threads * flops / (t2 - t1) * 1e-9;
        g_split[k] = flops / (t3 - t2) * 1e-9;
        fprintf(stderr, "bench_sgemm: trial %d/%d: single %.1f, pool_each %.1f, pool_split %.1f GFLOP/s\n", k + 1,
                trials, g_single[k], g_each[k], g_split[k]);
    }

    openblas_set_num_threads(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, e.a[0], n, e.b[0], n, 0.0f, e.c[0], n);
    for (int k = 0; k < trials; k++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, e.a[0], n, e.b[0], n, 0.0f, e.c[0], n);
        g_mt[k] = flops / (bench_now() - t0) * 1e-9;
    }
    openblas_set_num_threads(1);

    printf("{\n  \"bench\": \"sgemm\",\n  \"size\": %d,\n  \"threads\": %d,\n  \"trials\": %d,\n", n, threads, trials);
    printf("  \"openblas_config\": \"%s\",\n  \"openblas_corename\": \"%s\",\n", openblas_get_config(),
           openblas_get_corename());
    printf("  \"peak_gflops\": %.2f,\n  \"peak_definition\": \"pool_each median: %d threads, each its own "
           "single-threaded sgemm %dx%dx%d\",\n",
           bench_quantile(g_each, trials, 0.5), threads, n, n, n);
    printf("  \"modes\": {\n");
    report("single", g_single, trials, FALSE);
    report("pool_each", g_each, trials, FALSE);
    report("pool_split", g_split, trials, FALSE);
    report("openblas_mt", g_mt, trials, TRUE);
    printf("  }");
    if (shapes) {
        static const Shape list[] = {
            { "wq|wk|wv|wo", 2048, 256, 256 },  { "qkv fused", 2048, 256, 768 },
            { "w1 (w3)", 2048, 256, 688 },      { "w1|w3 fused", 2048, 256, 1376 },
            { "w2", 2048, 688, 256 },           { "output", 2048, 256, 4096 },
        };
        const int ns = (int)G_N_ELEMENTS(list);
        printf(",\n  \"shapes\": [\n");
        for (int i = 0; i < ns; i++) shape_bench(&list[i], trials, i + 1 == ns);
        printf("  ]");
    }
    printf("\n}\n");

    for (int t = 0; t < threads; t++) {
        g_free(e.a[t]);
        g_free(e.b[t]);
        g_free(e.c[t]);
    }
    g_free(e.a); g_free(e.b); g_free(e.c);
    g_free(g_single); g_free(g_each); g_free(g_split); g_free(g_mt);
    pool_shutdown();
    return 0;
}
