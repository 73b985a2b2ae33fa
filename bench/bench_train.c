/* bench_train: training-step throughput of the engine on random tokens.
 *
 * Builds the model (stem_model_new + stem_model_init_weights), runs --warmup
 * untimed steps, then times --steps full training steps, each
 *     zero_grad; forward (with targets, mean cross-entropy); backward; AdamW step
 * exactly as stem_train does it (no clipping skipped, no schedule: lr scale 1).
 * Token batches are drawn up front so the timed region holds only the step.
 * Prints one JSON object on stdout; progress goes to stderr.
 *
 * FLOPs per step (2 FLOPs per multiply-add; elementwise work is not counted):
 *   per token, forward multiply-adds of the weight matmuls
 *     M = L * (D*(H*hd) + 2*D*(KV*hd) + (H*hd)*D)      q, k, v, o projections
 *       + n_dense * 3*D*F + n_stem * 2*D*F               FFN: w1,w2,w3 | w1,w2 (the
 *                                                        STEM row gather is no FLOPs)
 *       + V*D                                            LM head (embeddings: none)
 *   training matmul FLOPs = 6 * M * tokens   (forward 2*M; backward 4*M: dx and dW;
 *                                             every dx is computed, layer 0's too)
 *   attention FLOPs (per sequence and layer; the kernels compute the full T x T
 *   scores, so the full square is counted, as in the PaLM MFU formula):
 *     forward  Q K^T and P V:               2 * 2*T*T*(H*hd)
 *     backward dV, dP, dQ, dK (4 matmuls):  2 * 4*T*T*(H*hd)
 *     total = 12 * T*T*(H*hd) per sequence per layer = 12 * L * T * (H*hd) per token
 *   flops_per_step = 6 * M * B*T + 12 * L * B * T*T * (H*hd)
 * (M equals StemCounts.flops_per_token / 2 from engine/config.c; both are printed
 * as a cross-check.)
 *
 * Built twice by bench/meson.build: bench_train, and bench_train_prof where every
 * op_* call from the engine is intercepted with the linker's --wrap and timed by
 * op family (see the BENCH_PROFILE section) to show where a step goes. */
#include "bench_common.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/train.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"

#include <math.h>
#include <stdio.h>

#ifdef BENCH_PROFILE
/* ------------------------------------------------------------------ profile
 * The engine calls the ops from the main thread (the pool works inside each
 * op), so plain globals are enough. Each op family accumulates wall time and
 * FLOPs while `prof_on` is set (timed steps only). Matmuls are also keyed by
 * shape and direction; op_matmul_backward is timed as its dx and dW halves by
 * calling the real function twice (dx only, then dW only: the same work in the
 * same order as one call). */
enum {
    P_MM_FWD, P_MM_DX, P_MM_DW, P_ATT_FWD, P_ATT_BWD, P_NORM_FWD, P_NORM_BWD, P_ROPE, P_GLU_FWD, P_GLU_BWD,
    P_EMB_FWD, P_EMB_BWD, P_CE_FWD, P_CE_BWD, P_ADAMW, P_SUMSQ, P_ADD_SCALE, P_N
};
static const char *prof_names[P_N] = {
    "matmul_fwd", "matmul_bwd_dx", "matmul_bwd_dw", "attention_fwd", "attention_bwd", "rmsnorm_fwd",
    "rmsnorm_bwd", "rope", "swiglu_fwd", "swiglu_bwd", "embedding_gather", "embedding_scatter_add",
    "crossentropy_fwd", "crossentropy_bwd", "adamw", "grad_sumsq", "add_scale"
};
static double prof_t[P_N], prof_f[P_N];
static long prof_n[P_N];
static int prof_on;

#define MM_SHAPES 64
typedef struct { int kind, N, in, out; double t, f; long n; } MmShape;
static MmShape mm_shapes[MM_SHAPES];
static int n_mm_shapes;

static void prof_add(int fam, double t, double f)
{
    if (!prof_on) return;
    prof_t[fam] += t;
    prof_f[fam] += f;
    prof_n[fam]++;
}

static void mm_add(int kind, int N, int in, int out, double t)
{
    double f = 2.0 * N * in * out;
    prof_add(kind, t, f);
    if (!prof_on) return;
    for (int i = 0; i < n_mm_shapes; i++) {
        MmShape *s = &mm_shapes[i];
        if (s->kind == kind && s->N == N && s->in == in && s->out == out) { s->t += t; s->f += f; s->n++; return; }
    }
    if (n_mm_shapes < MM_SHAPES)
        mm_shapes[n_mm_shapes++] = (MmShape){ kind, N, in, out, t, f, 1 };
}

#define REAL(fn) __real_##fn
#define TIMED(fam, flops, call) do { double t0_ = bench_now(); call; prof_add(fam, bench_now() - t0_, flops); } while (0)

void REAL(op_matmul_forward)(float *, const float *, const float *, int, int, int, int);
void __wrap_op_matmul_forward(float *y, const float *x, const float *w, int N, int in, int out, int accumulate)
{
    double t0 = bench_now();
    REAL(op_matmul_forward)(y, x, w, N, in, out, accumulate);
    mm_add(P_MM_FWD, N, in, out, bench_now() - t0);
}
void REAL(op_matmul_backward)(float *, float *, const float *, const float *, const float *, int, int, int);
void __wrap_op_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int in,
                               int out)
{
    if (dx) {
        double t0 = bench_now();
        REAL(op_matmul_backward)(dx, NULL, dy, x, w, N, in, out);
        mm_add(P_MM_DX, N, in, out, bench_now() - t0);
    }
    if (dw) {
        double t0 = bench_now();
        REAL(op_matmul_backward)(NULL, dw, dy, x, w, N, in, out);
        mm_add(P_MM_DW, N, in, out, bench_now() - t0);
    }
}
void REAL(op_rmsnorm_forward)(float *, float *, const float *, const float *, int, int, float);
void __wrap_op_rmsnorm_forward(float *y, float *rstd, const float *x, const float *g, int N, int D, float eps)
{
    TIMED(P_NORM_FWD, 0, REAL(op_rmsnorm_forward)(y, rstd, x, g, N, D, eps));
}
void REAL(op_rmsnorm_backward)(float *, float *, const float *, const float *, const float *, const float *, int, int);
void __wrap_op_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                                const float *rstd, int N, int D)
{
    TIMED(P_NORM_BWD, 0, REAL(op_rmsnorm_backward)(dx, dg, dy, x, g, rstd, N, D));
}
void REAL(op_rope_forward)(float *, int, int, int, int, float);
void __wrap_op_rope_forward(float *x, int B, int T, int nh, int hd, float theta)
{
    TIMED(P_ROPE, 0, REAL(op_rope_forward)(x, B, T, nh, hd, theta));
}
void REAL(op_rope_backward)(float *, int, int, int, int, float);
void __wrap_op_rope_backward(float *x, int B, int T, int nh, int hd, float theta)
{
    TIMED(P_ROPE, 0, REAL(op_rope_backward)(x, B, T, nh, hd, theta));
}
void REAL(op_attention_forward)(float *, float *, const float *, const float *, const float *, int, int, int, int, int);
void __wrap_op_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                                 int nh, int nkv, int hd)
{
    TIMED(P_ATT_FWD, 4.0 * B * nh * (double)T * T * hd, REAL(op_attention_forward)(out, att, q, k, v, B, T, nh, nkv, hd));
}
void REAL(op_attention_backward)(float *, float *, float *, float *, const float *, const float *, const float *,
                                 const float *, const float *, int, int, int, int, int);
void __wrap_op_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                  const float *att, const float *q, const float *k, const float *v, int B, int T,
                                  int nh, int nkv, int hd)
{
    TIMED(P_ATT_BWD, 8.0 * B * nh * (double)T * T * hd,
          REAL(op_attention_backward)(dq, dk, dv, scratch, dout, att, q, k, v, B, T, nh, nkv, hd));
}
void REAL(op_swiglu_forward)(float *, const float *, const float *, size_t);
void __wrap_op_swiglu_forward(float *m, const float *g, const float *u, size_t n)
{
    TIMED(P_GLU_FWD, 0, REAL(op_swiglu_forward)(m, g, u, n));
}
void REAL(op_swiglu_backward)(float *, float *, const float *, const float *, const float *, size_t);
void __wrap_op_swiglu_backward(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n)
{
    TIMED(P_GLU_BWD, 0, REAL(op_swiglu_backward)(dg, du, dm, g, u, n));
}
void REAL(op_embedding_forward)(float *, const float *, const int32_t *, int, int);
void __wrap_op_embedding_forward(float *out, const float *table, const int32_t *ids, int N, int D)
{
    TIMED(P_EMB_FWD, 0, REAL(op_embedding_forward)(out, table, ids, N, D));
}
void REAL(op_embedding_backward)(float *, const float *, const int32_t *, int, int);
void __wrap_op_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D)
{
    TIMED(P_EMB_BWD, 0, REAL(op_embedding_backward)(dtable, dout, ids, N, D));
}
void REAL(op_add_inplace)(float *, const float *, size_t);
void __wrap_op_add_inplace(float *y, const float *x, size_t n)
{
    TIMED(P_ADD_SCALE, 0, REAL(op_add_inplace)(y, x, n));
}
float REAL(op_crossentropy_forward)(float *, const float *, const int32_t *, int, int);
float __wrap_op_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int N, int V)
{
    float r;
    TIMED(P_CE_FWD, 0, r = REAL(op_crossentropy_forward)(probs, logits, targets, N, V));
    return r;
}
void REAL(op_crossentropy_backward)(float *, const float *, const int32_t *, int, int);
void __wrap_op_crossentropy_backward(float *dl, const float *probs, const int32_t *targets, int N, int V)
{
    TIMED(P_CE_BWD, 0, REAL(op_crossentropy_backward)(dl, probs, targets, N, V));
}
void REAL(op_adamw)(float *, const float *, float *, float *, size_t, float, float, float, float, float, int, float);
void __wrap_op_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps,
                     float wd, int t, float gs)
{
    TIMED(P_ADAMW, 0, REAL(op_adamw)(p, g, m, v, n, lr, b1, b2, eps, wd, t, gs));
}
double REAL(op_sumsq)(const float *, size_t);
double __wrap_op_sumsq(const float *x, size_t n)
{
    double r;
    TIMED(P_SUMSQ, 0, r = REAL(op_sumsq)(x, n));
    return r;
}
void REAL(op_scale)(float *, size_t, float);
void __wrap_op_scale(float *x, size_t n, float s)
{
    TIMED(P_ADD_SCALE, 0, REAL(op_scale)(x, n, s));
}

static const char *mm_hint(const StemConfig *c, int in, int out)
{
    const int D = c->dim, hd = D / c->n_heads, Hd = c->n_heads * hd, KVd = c->n_kv_heads * hd;
    if (in == D && out == c->vocab) return "output";
    if (in == D && out == c->ffn_dim) return "w1/w3";
    if (in == c->ffn_dim && out == D) return "w2";
    if (in == D && out == Hd && Hd == D && KVd == D) return "wq/wk/wv/wo";
    if (in == D && out == Hd) return "wq";
    if (in == D && out == KVd) return "wk/wv";
    if (in == Hd && out == D) return "wo";
    return "?";
}

static void prof_print(const StemConfig *c, int steps, double step_s_total)
{
    double sum = 0;
    for (int i = 0; i < P_N; i++) sum += prof_t[i];
    fprintf(stderr, "\nprofile over %d steps (wall time of each op family, main thread):\n", steps);
    fprintf(stderr, "  %-24s %10s %7s %10s\n", "family", "ms/step", "%step", "GFLOP/s");
    printf("  \"profile\": {\n    \"families\": [\n");
    int first = 1;
    for (int i = 0; i < P_N; i++) {
        if (!prof_n[i]) continue;
        double ms = prof_t[i] / steps * 1e3, pct = 100.0 * prof_t[i] / step_s_total;
        double gf = prof_f[i] > 0 ? prof_f[i] / prof_t[i] * 1e-9 : 0;
        char gfs[32] = "";
        if (gf > 0) g_snprintf(gfs, sizeof gfs, "%.1f", gf);
        fprintf(stderr, "  %-24s %10.2f %6.1f%% %10s\n", prof_names[i], ms, pct, gfs);
        printf("%s      {\"family\": \"%s\", \"ms_per_step\": %.3f, \"pct_of_step\": %.2f, \"calls_per_step\": %.1f, "
               "\"gflops\": %.2f}",
               first ? "" : ",\n", prof_names[i], ms, pct, (double)prof_n[i] / steps, gf);
        first = 0;
    }
    double other = (step_s_total - sum) / steps * 1e3;
    fprintf(stderr, "  %-24s %10.2f %6.1f%%\n", "other (memcpy/memset, zero_grad, glue)", other,
            100.0 * (step_s_total - sum) / step_s_total);
    printf(",\n      {\"family\": \"other\", \"ms_per_step\": %.3f, \"pct_of_step\": %.2f}\n    ],\n", other,
           100.0 * (step_s_total - sum) / step_s_total);
    static const char *kinds[] = { [P_MM_FWD] = "fwd  y=xW^T ", [P_MM_DX] = "bwd dx=dyW  ", [P_MM_DW] = "bwd dW=dy^Tx" };
    fprintf(stderr, "\nmatmuls by shape (N x in -> out):\n  %-13s %-12s %-22s %8s %9s %9s\n", "kind", "weight", "shape",
            "calls", "ms/step", "GFLOP/s");
    printf("    \"matmuls\": [\n");
    for (int i = 0; i < n_mm_shapes; i++) {
        MmShape *s = &mm_shapes[i];
        char shape[64];
        g_snprintf(shape, sizeof shape, "%d x %d -> %d", s->N, s->in, s->out);
        fprintf(stderr, "  %-13s %-12s %-22s %8.1f %9.2f %9.1f\n", kinds[s->kind], mm_hint(c, s->in, s->out), shape,
                (double)s->n / steps, s->t / steps * 1e3, s->f / s->t * 1e-9);
        printf("      {\"kind\": \"%s\", \"weight\": \"%s\", \"N\": %d, \"in\": %d, \"out\": %d, \"calls_per_step\": %.1f, "
               "\"ms_per_step\": %.3f, \"gflops\": %.2f}%s\n",
               prof_names[s->kind], mm_hint(c, s->in, s->out), s->N, s->in, s->out, (double)s->n / steps,
               s->t / steps * 1e3, s->f / s->t * 1e-9, i + 1 < n_mm_shapes ? "," : "");
    }
    printf("    ]\n  },\n");
}
#endif /* BENCH_PROFILE */

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    int vocab = 4096, dim = 256, layers = 6, heads = 8, kv_heads = 0, ffn = 688, seq = 128, batch = 16;
    int steps = 10, warmup = 2, threads = 2;
    gint64 seed = 1;
    char *stem_layers = NULL;
    GOptionEntry entries[] = {
        { "vocab", 0, 0, G_OPTION_ARG_INT, &vocab, "vocabulary size (4096)", "N" },
        { "dim", 0, 0, G_OPTION_ARG_INT, &dim, "model width (256)", "N" },
        { "layers", 0, 0, G_OPTION_ARG_INT, &layers, "layers (6)", "N" },
        { "heads", 0, 0, G_OPTION_ARG_INT, &heads, "attention heads (8)", "N" },
        { "kv-heads", 0, 0, G_OPTION_ARG_INT, &kv_heads, "key/value heads (default: --heads)", "N" },
        { "ffn", 0, 0, G_OPTION_ARG_INT, &ffn, "FFN hidden size (688)", "N" },
        { "seq", 0, 0, G_OPTION_ARG_INT, &seq, "sequence length (128)", "N" },
        { "batch", 0, 0, G_OPTION_ARG_INT, &batch, "sequences per step (16)", "N" },
        { "steps", 0, 0, G_OPTION_ARG_INT, &steps, "timed steps (10)", "N" },
        { "warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "untimed warm-up steps (2)", "N" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "pool threads (2; 0 = all cores)", "N" },
        { "stem-layers", 0, 0, G_OPTION_ARG_STRING, &stem_layers,
          "none | all | all-but-first | every-K | list (all-but-first)", "SPEC" },
        { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "seed for weights and tokens (1)", "S" },
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new("- time engine training steps");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "bench_train: %s\n", err->message);
        return 2;
    }
    g_option_context_free(ctx);
    if (steps < 1 || warmup < 0 || batch < 1) {
        fprintf(stderr, "bench_train: --steps and --batch must be >= 1, --warmup >= 0\n");
        return 2;
    }

    StemConfig c;
    stem_config_defaults(&c);
    c.vocab = vocab;
    c.dim = dim;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads > 0 ? kv_heads : heads;
    c.ffn_dim = ffn;
    c.seq_len = seq;
    if (!stem_config_parse_layers(stem_layers ? stem_layers : "all-but-first", layers, &c.stem_mask, &err) ||
        !stem_config_validate(&c, &err)) {
        fprintf(stderr, "bench_train: %s\n", err->message);
        return 2;
    }

    pool_init(threads);
    StemModel *m = stem_model_new(&c, &err);
    if (!m || !stem_model_alloc_training(m, &err)) {
        fprintf(stderr, "bench_train: %s\n", err->message);
        return 1;
    }
    stem_model_init_weights(m, (guint64)seed);
    StemOptim opt;
    stem_optim_defaults(&opt);

    /* FLOPs per step: see the header comment */
    const int B = batch, T = seq, D = dim, F = ffn, V = vocab, L = layers;
    const int hd = D / heads, Hd = heads * hd, KVd = c.n_kv_heads * hd;
    const int n_stem = stem_config_n_stem(&c), n_dense = L - n_stem;
    const double tokens = (double)B * T;
    const double mac_tok = (double)L * ((double)D * Hd + 2.0 * D * KVd + (double)Hd * D) + n_dense * 3.0 * D * F +
                           n_stem * 2.0 * D * F + (double)V * D;
    const double mm_flops = 6.0 * mac_tok * tokens;
    const double att_flops = 12.0 * L * B * (double)T * T * Hd;
    const double flops = mm_flops + att_flops;
    StemCounts counts;
    stem_config_counts(&c, &counts);

    /* token batches drawn up front: NB batches of B windows of T+1 random ids */
    enum { NB = 4 };
    GRand *r = g_rand_new_with_seed((guint32)seed);
    int32_t *x[NB], *y[NB];
    for (int k = 0; k < NB; k++) {
        x[k] = g_new(int32_t, (size_t)B * T);
        y[k] = g_new(int32_t, (size_t)B * T);
        for (int b = 0; b < B; b++) {
            int32_t prev = (int32_t)g_rand_int_range(r, 0, V);
            for (int t = 0; t < T; t++) {
                int32_t next = (int32_t)g_rand_int_range(r, 0, V);
                x[k][(size_t)b * T + t] = prev;
                y[k][(size_t)b * T + t] = next;
                prev = next;
            }
        }
    }
    g_rand_free(r);

    double *t_step = g_new(double, steps), *t_fwd = g_new(double, steps), *t_bwd = g_new(double, steps),
           *t_opt = g_new(double, steps), *t_zero = g_new(double, steps);
    float loss_first = NAN, loss_last = NAN;
    fprintf(stderr, "bench_train: %d warm-up + %d timed steps, B=%d T=%d, %d threads, %.1f GFLOP/step\n", warmup, steps,
            B, T, pool_threads(), flops * 1e-9);
    for (int s = 0; s < warmup + steps; s++) {
        const int k = s % NB;
#ifdef BENCH_PROFILE
        prof_on = s >= warmup;
#endif
        double t0 = bench_now();
        stem_model_zero_grad(m);
        double t1 = bench_now();
        float loss = stem_model_forward(m, x[k], y[k], B, T, FALSE);
        double t2 = bench_now();
        stem_model_backward(m);
        double t3 = bench_now();
        stem_model_step(m, &opt, 1.0f, NULL, NULL);
        double t4 = bench_now();
        if (s == 0) loss_first = loss;
        loss_last = loss;
        if (s >= warmup) {
            int i = s - warmup;
            t_zero[i] = t1 - t0;
            t_fwd[i] = t2 - t1;
            t_bwd[i] = t3 - t2;
            t_opt[i] = t4 - t3;
            t_step[i] = t4 - t0;
            fprintf(stderr, "bench_train: step %d/%d %.1f ms (loss %.3f)\n", i + 1, steps, t_step[i] * 1e3, loss);
        }
    }

    const double med = bench_quantile(t_step, steps, 0.5);
    double total = 0;
    for (int i = 0; i < steps; i++) total += t_step[i];
    char *sl = stem_config_layers_string(&c);
    printf("{\n  \"bench\": \"train\",\n  \"engine\": \"stem-workbench\",\n");
    printf("  \"config\": {\"vocab\": %d, \"dim\": %d, \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, \"ffn\": %d, "
           "\"seq\": %d, \"batch\": %d, \"stem_layers\": [%s]},\n",
           V, D, L, heads, c.n_kv_heads, F, T, B, sl);
    printf("  \"threads\": %d,\n  \"steps\": %d,\n  \"warmup\": %d,\n", pool_threads(), steps, warmup);
    printf("  \"tokens_per_step\": %.0f,\n", tokens);
    printf("  \"step_ms\": %.3f,\n  \"step_ms_mean\": %.3f,\n  \"step_ms_min\": %.3f,\n  \"step_ms_p90\": %.3f,\n",
           med * 1e3, total / steps * 1e3, bench_min(t_step, steps) * 1e3, bench_quantile(t_step, steps, 0.9) * 1e3);
    printf("  \"step_ms_all\": ");
    for (int i = 0; i < steps; i++) t_step[i] *= 1e3;
    bench_print_array(stdout, t_step, steps, "%.2f");
    printf(",\n  \"phase_ms\": {\"zero_grad\": %.3f, \"forward\": %.3f, \"backward\": %.3f, \"optimizer\": %.3f},\n",
           bench_quantile(t_zero, steps, 0.5) * 1e3, bench_quantile(t_fwd, steps, 0.5) * 1e3,
           bench_quantile(t_bwd, steps, 0.5) * 1e3, bench_quantile(t_opt, steps, 0.5) * 1e3);
    printf("  \"tokens_per_s\": %.1f,\n", tokens / med);
    printf("  \"flops_per_step\": %.6e,\n  \"matmul_flops_per_step\": %.6e,\n  \"attention_flops_per_step\": %.6e,\n",
           flops, mm_flops, att_flops);
    printf("  \"forward_macs_per_token\": %.0f,\n  \"engine_counts_flops_per_token\": %.0f,\n", mac_tok,
           counts.flops_per_token);
    printf("  \"params_total\": %" G_GINT64_FORMAT ",\n", (gint64)m->n_params);
#ifdef BENCH_PROFILE
    prof_print(&c, steps, total);
#endif
    printf("  \"achieved_gflops\": %.2f,\n", flops / med * 1e-9);
    printf("  \"loss_first\": %.4f,\n  \"loss_last\": %.4f\n}\n", loss_first, loss_last);
    g_free(sl);

    for (int k = 0; k < NB; k++) { g_free(x[k]); g_free(y[k]); }
    g_free(t_step); g_free(t_fwd); g_free(t_bwd); g_free(t_opt); g_free(t_zero);
    g_free(stem_layers);
    stem_model_free(m);
    pool_shutdown();
    return 0;
}
