/* bench_train: training-step throughput of the engine on random tokens.
 *
 * Builds the model (stem_model_new + stem_model_init_weights), moves it to the
 * backend of --device (with --offload F: STEM tables served from host memory
 * through a device row cache of ceil(F * vocab) tokens), runs --warmup untimed
 * steps, then times --steps full training steps, each
 *     zero_grad; forward (with targets, mean cross-entropy); backward; AdamW step
 * exactly as stem_train does it (no clipping skipped, no schedule: lr scale 1).
 * The backend is synchronized before every clock read (GPU work is queued), so
 * a phase's time is the time until its work is done. Token batches are drawn up
 * front (uniform ids, or Zipf-distributed with --zipf A: id r has weight
 * 1/(r+1)^A, which is closer to text and what a row cache is for) so the timed
 * region holds only the step. With --prefetch (offloaded tables only) the next
 * batch's rows are staged (stem_offload_stage) right after the backward pass is
 * queued, so their copy can overlap the backward compute; stem_train does not
 * do this (yet), so the default is off.
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
 * Built twice by bench/meson.build: bench_train, and bench_train_prof, which
 * times every kernel call by op family to show where a step goes (see the
 * BENCH_PROFILE section): on the CPU by intercepting the op_* functions with the
 * linker's --wrap, on a device through a copy of the backend's kernel table
 * whose entries are timing shims. */
#include "bench_common.h"
#include "bench_device.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/train.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"

#include <math.h>
#include <stdio.h>

#ifdef BENCH_PROFILE
/* ------------------------------------------------------------------ profile
 * The engine calls the kernels from the main thread (the CPU pool works inside
 * each op), so plain globals are enough. Each op family accumulates wall time
 * and FLOPs while `prof_on` is set (timed steps only). Matmuls are also keyed
 * by shape and direction; matmul_backward is timed as its dx and dW halves by
 * calling the real function twice (dx only, then dW only: the same work in the
 * same order as one call).
 *
 * Two ways in, one per kind of backend:
 *  - CPU: the CPU kernel table (kernels/cpu/backend.c) holds &op_matmul_forward
 *    etc., references from another object file, so the linker's --wrap turns
 *    them into &__wrap_op_matmul_forward just like the engine's direct op_*
 *    calls (the lazy AdamW of offloaded rows in engine/offload.c, the host
 *    table path): everything lands in the __wrap_ functions below.
 *  - a device (CUDA): the engine calls the backend's table, which --wrap cannot
 *    see. prof_install() gives the model a copy of that table whose kernel
 *    entries are shims that synchronize, call the real entry, synchronize again
 *    and time it (the step is slower for it: no launch overlap; the shares are
 *    what matters). The op_* calls the engine still makes on the host (offloaded
 *    rows' AdamW) are caught by --wrap and shown as "(host)" families. */
enum {
    P_MM_FWD, P_MM_DX, P_MM_DW, P_ATT_FWD, P_ATT_BWD, P_NORM_FWD, P_NORM_BWD, P_ROPE, P_GLU_FWD, P_GLU_BWD,
    P_STEM_FWD, P_STEM_BWD, P_EMB_FWD, P_EMB_BWD, P_CE_FWD, P_CE_BWD, P_ADAMW, P_SUMSQ, P_ADD_SCALE, P_COPY_ZERO,
    P_ROWS, P_N
};
/* rope counts rope_qk too, adamw counts adamw_rows: the same work, fused or not */
static const char *prof_names[P_N] = {
    "matmul_fwd", "matmul_bwd_dx", "matmul_bwd_dw", "attention_fwd", "attention_bwd", "rmsnorm_fwd",
    "rmsnorm_bwd", "rope", "swiglu_fwd", "swiglu_bwd", "stem_ffn_fwd", "stem_ffn_bwd", "embedding_gather",
    "embedding_scatter_add", "crossentropy_fwd", "crossentropy_bwd", "adamw", "grad_sumsq", "add_scale",
    "copy_zero", "offload_rows"
};
/* [0]: the backend's kernels; [1]: op_* called directly on the host while a
 * device computes (only with a device) */
static double prof_t[2][P_N], prof_f[2][P_N];
static long prof_n[2][P_N];
static int prof_on;
static int prof_wrap_where;               /* where __wrap_ calls count: 0 (CPU) or 1 (host, beside a device) */
static const StemKernels *prof_real;      /* the device table behind the shims */
static StemKernels prof_table;

#define MM_SHAPES 64
typedef struct { int kind, N, in, out; double t, f; long n; } MmShape;
static MmShape mm_shapes[MM_SHAPES];
static int n_mm_shapes;

static void prof_add_at(int where, int fam, double t, double f)
{
    if (!prof_on) return;
    prof_t[where][fam] += t;
    prof_f[where][fam] += f;
    prof_n[where][fam]++;
}
#define prof_add(fam, t, f) prof_add_at(prof_wrap_where, fam, t, f)

static void mm_add(int where, int kind, int N, int in, int out, double t)
{
    double f = 2.0 * N * in * out;
    prof_add_at(where, kind, t, f);
    if (!prof_on) return;
    for (int i = 0; i < n_mm_shapes; i++) {
        MmShape *s = &mm_shapes[i];
        if (s->kind == kind && s->N == N && s->in == in && s->out == out) { s->t += t; s->f += f; s->n++; return; }
    }
    if (n_mm_shapes < MM_SHAPES)
        mm_shapes[n_mm_shapes++] = (MmShape){ kind, N, in, out, t, f, 1 };
}

static double att_fwd_flops(int B, int T, int nh, int hd) { return 4.0 * B * nh * (double)T * T * hd; }
static double att_bwd_flops(int B, int T, int nh, int hd) { return 8.0 * B * nh * (double)T * T * hd; }

/* ---- CPU: ld --wrap ---- */
#define REAL(fn) __real_##fn
#define TIMED(fam, flops, call) do { double t0_ = bench_now(); call; prof_add(fam, bench_now() - t0_, flops); } while (0)

void REAL(op_matmul_forward)(float *, const float *, const float *, int, int, int, int);
void __wrap_op_matmul_forward(float *y, const float *x, const float *w, int N, int in, int out, int accumulate)
{
    double t0 = bench_now();
    REAL(op_matmul_forward)(y, x, w, N, in, out, accumulate);
    mm_add(prof_wrap_where, P_MM_FWD, N, in, out, bench_now() - t0);
}
void REAL(op_matmul_backward)(float *, float *, const float *, const float *, const float *, int, int, int);
void __wrap_op_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int in,
                               int out)
{
    if (dx) {
        double t0 = bench_now();
        REAL(op_matmul_backward)(dx, NULL, dy, x, w, N, in, out);
        mm_add(prof_wrap_where, P_MM_DX, N, in, out, bench_now() - t0);
    }
    if (dw) {
        double t0 = bench_now();
        REAL(op_matmul_backward)(NULL, dw, dy, x, w, N, in, out);
        mm_add(prof_wrap_where, P_MM_DW, N, in, out, bench_now() - t0);
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
void REAL(op_rope_qk_forward)(float *, float *, int, int, int, int, int, float);
void __wrap_op_rope_qk_forward(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta)
{
    TIMED(P_ROPE, 0, REAL(op_rope_qk_forward)(q, k, B, T, nh, nkv, hd, theta));
}
void REAL(op_rope_qk_backward)(float *, float *, int, int, int, int, int, float);
void __wrap_op_rope_qk_backward(float *dq, float *dk, int B, int T, int nh, int nkv, int hd, float theta)
{
    TIMED(P_ROPE, 0, REAL(op_rope_qk_backward)(dq, dk, B, T, nh, nkv, hd, theta));
}
void REAL(op_attention_forward)(float *, float *, const float *, const float *, const float *, int, int, int, int, int);
void __wrap_op_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                                 int nh, int nkv, int hd)
{
    TIMED(P_ATT_FWD, att_fwd_flops(B, T, nh, hd), REAL(op_attention_forward)(out, att, q, k, v, B, T, nh, nkv, hd));
}
void REAL(op_attention_backward)(float *, float *, float *, float *, const float *, const float *, const float *,
                                 const float *, const float *, int, int, int, int, int);
void __wrap_op_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                  const float *att, const float *q, const float *k, const float *v, int B, int T,
                                  int nh, int nkv, int hd)
{
    TIMED(P_ATT_BWD, att_bwd_flops(B, T, nh, hd),
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
void REAL(op_stem_ffn_forward)(float *, const float *, const float *, const int32_t *, int, int, size_t);
void __wrap_op_stem_ffn_forward(float *m, const float *g, const float *rows, const int32_t *idx, int N, int F,
                                size_t stride)
{
    TIMED(P_STEM_FWD, 0, REAL(op_stem_ffn_forward)(m, g, rows, idx, N, F, stride));
}
void REAL(op_stem_ffn_backward)(float *, float *, const float *, const float *, const float *, const int32_t *, size_t,
                                const int32_t *, size_t, int, int);
void __wrap_op_stem_ffn_backward(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                                 const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, int N, int F)
{
    TIMED(P_STEM_BWD, 0, REAL(op_stem_ffn_backward)(dg, drows, dm, g, rows, ridx, rstride, gidx, gstride, N, F));
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
void REAL(op_adamw_rows)(float *, float *, float *, const float *, const int32_t *, int, int, size_t, float, float,
                         float, float, float, int, float);
void __wrap_op_adamw_rows(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W,
                          size_t stride, float lr, float b1, float b2, float eps, float wd, int t, float gs)
{
    TIMED(P_ADAMW, 0, REAL(op_adamw_rows)(p, m, v, g, idx, N, W, stride, lr, b1, b2, eps, wd, t, gs));
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

/* ---- a device: timing shims in a copy of its kernel table ---- */
static double shim_t0(void)
{
    prof_real->synchronize();   /* earlier queued work (copies, waits) is not this op's */
    return bench_now();
}
static double shim_dt(double t0)
{
    prof_real->synchronize();
    return bench_now() - t0;
}
#define SHIM(fam, flops, call) do { double t0_ = shim_t0(); call; prof_add_at(0, fam, shim_dt(t0_), flops); } while (0)

static void shim_matmul_forward(float *y, const float *x, const float *w, int N, int in, int out, int accumulate)
{
    double t0 = shim_t0();
    prof_real->matmul_forward(y, x, w, N, in, out, accumulate);
    mm_add(0, P_MM_FWD, N, in, out, shim_dt(t0));
}
static void shim_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int in,
                                 int out)
{
    if (dx) {
        double t0 = shim_t0();
        prof_real->matmul_backward(dx, NULL, dy, x, w, N, in, out);
        mm_add(0, P_MM_DX, N, in, out, shim_dt(t0));
    }
    if (dw) {
        double t0 = shim_t0();
        prof_real->matmul_backward(NULL, dw, dy, x, w, N, in, out);
        mm_add(0, P_MM_DW, N, in, out, shim_dt(t0));
    }
}
static void shim_rmsnorm_forward(float *y, float *rstd, const float *x, const float *g, int N, int D, float eps)
{
    SHIM(P_NORM_FWD, 0, prof_real->rmsnorm_forward(y, rstd, x, g, N, D, eps));
}
static void shim_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                                  const float *rstd, int N, int D)
{
    SHIM(P_NORM_BWD, 0, prof_real->rmsnorm_backward(dx, dg, dy, x, g, rstd, N, D));
}
static void shim_rope_forward(float *x, int B, int T, int nh, int hd, float theta)
{
    SHIM(P_ROPE, 0, prof_real->rope_forward(x, B, T, nh, hd, theta));
}
static void shim_rope_backward(float *x, int B, int T, int nh, int hd, float theta)
{
    SHIM(P_ROPE, 0, prof_real->rope_backward(x, B, T, nh, hd, theta));
}
static void shim_rope_qk_forward(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta)
{
    SHIM(P_ROPE, 0, prof_real->rope_qk_forward(q, k, B, T, nh, nkv, hd, theta));
}
static void shim_rope_qk_backward(float *dq, float *dk, int B, int T, int nh, int nkv, int hd, float theta)
{
    SHIM(P_ROPE, 0, prof_real->rope_qk_backward(dq, dk, B, T, nh, nkv, hd, theta));
}
static void shim_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B,
                                   int T, int nh, int nkv, int hd)
{
    SHIM(P_ATT_FWD, att_fwd_flops(B, T, nh, hd), prof_real->attention_forward(out, att, q, k, v, B, T, nh, nkv, hd));
}
static void shim_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                    const float *att, const float *q, const float *k, const float *v, int B, int T,
                                    int nh, int nkv, int hd)
{
    SHIM(P_ATT_BWD, att_bwd_flops(B, T, nh, hd),
         prof_real->attention_backward(dq, dk, dv, scratch, dout, att, q, k, v, B, T, nh, nkv, hd));
}
static void shim_swiglu_forward(float *m, const float *g, const float *u, size_t n)
{
    SHIM(P_GLU_FWD, 0, prof_real->swiglu_forward(m, g, u, n));
}
static void shim_swiglu_backward(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n)
{
    SHIM(P_GLU_BWD, 0, prof_real->swiglu_backward(dg, du, dm, g, u, n));
}
static void shim_stem_ffn_forward(float *m, const float *g, const float *rows, const int32_t *idx, int N, int F,
                                  size_t stride)
{
    SHIM(P_STEM_FWD, 0, prof_real->stem_ffn_forward(m, g, rows, idx, N, F, stride));
}
static void shim_stem_ffn_backward(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                                   const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, int N,
                                   int F)
{
    SHIM(P_STEM_BWD, 0, prof_real->stem_ffn_backward(dg, drows, dm, g, rows, ridx, rstride, gidx, gstride, N, F));
}
static void shim_embedding_forward(float *out, const float *table, const int32_t *ids, int N, int D)
{
    SHIM(P_EMB_FWD, 0, prof_real->embedding_forward(out, table, ids, N, D));
}
static void shim_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D)
{
    SHIM(P_EMB_BWD, 0, prof_real->embedding_backward(dtable, dout, ids, N, D));
}
static void shim_add_inplace(float *y, const float *x, size_t n)
{
    SHIM(P_ADD_SCALE, 0, prof_real->add_inplace(y, x, n));
}
static float shim_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int N, int V)
{
    float r;
    SHIM(P_CE_FWD, 0, r = prof_real->crossentropy_forward(probs, logits, targets, N, V));
    return r;
}
static void shim_crossentropy_backward(float *dl, const float *probs, const int32_t *targets, int N, int V)
{
    SHIM(P_CE_BWD, 0, prof_real->crossentropy_backward(dl, probs, targets, N, V));
}
static void shim_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps,
                       float wd, int t, float gs)
{
    SHIM(P_ADAMW, 0, prof_real->adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t, gs));
}
static void shim_adamw_rows(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W,
                            size_t stride, float lr, float b1, float b2, float eps, float wd, int t, float gs)
{
    SHIM(P_ADAMW, 0, prof_real->adamw_rows(p, m, v, g, idx, N, W, stride, lr, b1, b2, eps, wd, t, gs));
}
static double shim_sumsq(const float *x, size_t n)
{
    double r;
    SHIM(P_SUMSQ, 0, r = prof_real->sumsq(x, n));
    return r;
}
static void shim_scale(float *x, size_t n, float s)
{
    SHIM(P_ADD_SCALE, 0, prof_real->scale(x, n, s));
}
static void shim_copy(void *dst, const void *src, size_t bytes)
{
    SHIM(P_COPY_ZERO, 0, prof_real->copy(dst, src, bytes));
}
static void shim_zero(void *p, size_t bytes)
{
    SHIM(P_COPY_ZERO, 0, prof_real->zero(p, bytes));
}
static void shim_gather_rows(float *out, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    SHIM(P_ROWS, 0, prof_real->gather_rows(out, src, idx, N, F, stride));
}
static void shim_scatter_rows(float *dst, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    SHIM(P_ROWS, 0, prof_real->scatter_rows(dst, src, idx, N, F, stride));
}

/* The table to give the model: k itself on the CPU (--wrap sees everything),
 * a shimmed copy of k on a device. BENCH_PROF_SHIMS=1 shims the CPU table too,
 * to check the shims where no GPU is: every kernel call is then timed twice,
 * by its shim and (as "(host)") by --wrap inside it, so the two sets of rows
 * must agree and "other" goes negative. */
static const StemKernels *prof_install(const StemKernels *k)
{
    if (k->is_host && g_strcmp0(g_getenv("BENCH_PROF_SHIMS"), "1") != 0) {
        prof_wrap_where = 0;
        return k;
    }
    prof_real = k;
    prof_wrap_where = 1;
    prof_table = *k;
    prof_table.matmul_forward = shim_matmul_forward;
    prof_table.matmul_backward = shim_matmul_backward;
    prof_table.rmsnorm_forward = shim_rmsnorm_forward;
    prof_table.rmsnorm_backward = shim_rmsnorm_backward;
    prof_table.rope_forward = shim_rope_forward;
    prof_table.rope_backward = shim_rope_backward;
    prof_table.attention_forward = shim_attention_forward;
    prof_table.attention_backward = shim_attention_backward;
    prof_table.swiglu_forward = shim_swiglu_forward;
    prof_table.swiglu_backward = shim_swiglu_backward;
    prof_table.embedding_forward = shim_embedding_forward;
    prof_table.embedding_backward = shim_embedding_backward;
    prof_table.add_inplace = shim_add_inplace;
    prof_table.crossentropy_forward = shim_crossentropy_forward;
    prof_table.crossentropy_backward = shim_crossentropy_backward;
    prof_table.adamw = shim_adamw;
    prof_table.sumsq = shim_sumsq;
    prof_table.scale = shim_scale;
    prof_table.copy = shim_copy;
    prof_table.zero = shim_zero;
    prof_table.gather_rows = shim_gather_rows;
    prof_table.scatter_rows = shim_scatter_rows;
    prof_table.stem_ffn_forward = shim_stem_ffn_forward;
    prof_table.stem_ffn_backward = shim_stem_ffn_backward;
    prof_table.rope_qk_forward = shim_rope_qk_forward;
    prof_table.rope_qk_backward = shim_rope_qk_backward;
    prof_table.adamw_rows = shim_adamw_rows;
    return &prof_table;
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
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < P_N; i++) sum += prof_t[w][i];
    fprintf(stderr, "\nprofile over %d steps (wall time of each op family, main thread%s):\n", steps,
            prof_real ? "; device ops synchronized one by one" : "");
    fprintf(stderr, "  %-24s %10s %7s %10s\n", "family", "ms/step", "%step", "GFLOP/s");
    printf("  \"profile\": {\n    \"method\": \"%s\",\n    \"families\": [\n",
           prof_real ? "device kernel-table shims, synchronized per op" : "ld --wrap on op_*");
    int first = 1;
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < P_N; i++) {
            if (!prof_n[w][i]) continue;
            char name[64];
            g_snprintf(name, sizeof name, "%s%s", prof_names[i], w ? " (host)" : "");
            double ms = prof_t[w][i] / steps * 1e3, pct = 100.0 * prof_t[w][i] / step_s_total;
            double gf = prof_f[w][i] > 0 ? prof_f[w][i] / prof_t[w][i] * 1e-9 : 0;
            char gfs[32] = "";
            if (gf > 0) g_snprintf(gfs, sizeof gfs, "%.1f", gf);
            fprintf(stderr, "  %-24s %10.2f %6.1f%% %10s\n", name, ms, pct, gfs);
            printf("%s      {\"family\": \"%s\", \"ms_per_step\": %.3f, \"pct_of_step\": %.2f, \"calls_per_step\": %.1f, "
                   "\"gflops\": %.2f}",
                   first ? "" : ",\n", name, ms, pct, (double)prof_n[w][i] / steps, gf);
            first = 0;
        }
    double other = (step_s_total - sum) / steps * 1e3;
    fprintf(stderr, "  %-24s %10.2f %6.1f%%\n", "other (memcpy/memset, zero_grad, staging, glue)", other,
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

/* ------------------------------------------------------------------ tokens */

/* Ids for the batches: uniform over [0, V) when a <= 0, else Zipf: id r drawn
 * with probability proportional to 1/(r+1)^a (inverse CDF, binary search). */
typedef struct { int V; double *cdf; GRand *r; } TokenSource;

static void tokens_init(TokenSource *ts, int V, double a, guint32 seed)
{
    ts->V = V;
    ts->r = g_rand_new_with_seed(seed);
    ts->cdf = NULL;
    if (a <= 0) return;
    ts->cdf = g_new(double, V);
    double sum = 0;
    for (int i = 0; i < V; i++) ts->cdf[i] = (sum += pow(i + 1.0, -a));
    for (int i = 0; i < V; i++) ts->cdf[i] /= sum;
}

static int32_t tokens_next(TokenSource *ts)
{
    if (!ts->cdf) return (int32_t)g_rand_int_range(ts->r, 0, ts->V);
    double u = g_rand_double(ts->r);
    int lo = 0, hi = ts->V - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ts->cdf[mid] < u) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static void tokens_free(TokenSource *ts)
{
    g_rand_free(ts->r);
    g_free(ts->cdf);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    int vocab = 4096, dim = 256, layers = 6, heads = 8, kv_heads = 0, ffn = 688, seq = 128, batch = 16;
    int steps = 10, warmup = 2, threads = 2;
    gint64 seed = 1;
    double zipf = 0;
    gboolean prefetch = FALSE;
    char *stem_layers = NULL;
    BenchDeviceOpts dev = { 0 };
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
        { "zipf", 0, 0, G_OPTION_ARG_DOUBLE, &zipf, "token ids Zipf-distributed with exponent A (0 = uniform)", "A" },
        { "prefetch", 0, 0, G_OPTION_ARG_NONE, &prefetch,
          "offloaded tables: stage the next batch's rows during the backward pass", NULL },
        BENCH_DEVICE_ENTRIES(dev),
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
    if (steps < 1 || warmup < 0 || batch < 1 || zipf < 0) {
        fprintf(stderr, "bench_train: --steps and --batch must be >= 1, --warmup and --zipf >= 0\n");
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

    const StemKernels *K = bench_open_device("bench_train", &dev);
    if (!K) return 2;
    const int capacity = stem_device_offload_capacity(dev.offload, vocab);
    pool_init(threads);
    StemModel *m = stem_model_new(&c, &err);
    if (!m || !stem_model_alloc_training(m, &err)) {
        fprintf(stderr, "bench_train: %s\n", err->message);
        return 1;
    }
    stem_model_init_weights(m, (guint64)seed);
    const StemKernels *Km = K;
#ifdef BENCH_PROFILE
    Km = prof_install(K);
#endif
    double t_dev0 = bench_now();
    if (!stem_model_set_device(m, Km, capacity, &err)) {
        fprintf(stderr, "bench_train: %s\n", err->message);
        return 1;
    }
    K->synchronize();
    const double t_dev = bench_now() - t_dev0;
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

    /* token batches drawn up front: NB batches of B windows of T+1 ids */
    enum { NB = 4 };
    TokenSource ts;
    tokens_init(&ts, V, zipf, (guint32)seed);
    int32_t *x[NB], *y[NB];
    for (int k = 0; k < NB; k++) {
        x[k] = g_new(int32_t, (size_t)B * T);
        y[k] = g_new(int32_t, (size_t)B * T);
        for (int b = 0; b < B; b++) {
            int32_t prev = tokens_next(&ts);
            for (int t = 0; t < T; t++) {
                int32_t next = tokens_next(&ts);
                x[k][(size_t)b * T + t] = prev;
                y[k][(size_t)b * T + t] = next;
                prev = next;
            }
        }
    }
    tokens_free(&ts);

    const int offloaded = m->offload_capacity > 0 && n_stem > 0;
    if (prefetch && !offloaded) prefetch = FALSE;   /* nothing to stage */
    double *t_step = g_new(double, steps), *t_fwd = g_new(double, steps), *t_bwd = g_new(double, steps),
           *t_opt = g_new(double, steps), *t_zero = g_new(double, steps), *t_stage = g_new0(double, steps);
    float loss_first = NAN, loss_last = NAN;
    fprintf(stderr, "bench_train: %s (%s), %d warm-up + %d timed steps, B=%d T=%d, %d threads, %.1f GFLOP/step%s\n",
            K->device_name, K->name, warmup, steps, B, T, pool_threads(), flops * 1e-9,
            offloaded ? ", offloaded tables" : "");
    for (int s = 0; s < warmup + steps; s++) {
        const int k = s % NB;
#ifdef BENCH_PROFILE
        prof_on = s >= warmup;
#endif
        /* offload statistics cover the timed steps' chunks: reset before the
         * first of them is staged (here, or during the last warm-up step) */
        if (s == warmup && !prefetch && m->offload) stem_offload_reset_stats(m->offload);
        K->synchronize();
        double t0 = bench_now();
        stem_model_zero_grad(m);
        K->synchronize();
        double t1 = bench_now();
        float loss = stem_model_forward(m, x[k], y[k], B, T, FALSE);
        K->synchronize();
        double t2 = bench_now();
        stem_model_backward(m);
        double ts0 = 0, ts1 = 0;
        if (prefetch && m->offload && s + 1 < warmup + steps) {
            /* the backward pass is queued; stage the next batch's rows meanwhile */
            const int kn = (s + 1) % NB;
            if (s + 1 == warmup) stem_offload_reset_stats(m->offload);
            ts0 = bench_now();
            if (!stem_offload_stage(m->offload, x[kn], B * T, &err)) {
                fprintf(stderr, "bench_train: %s\n", err->message);
                return 1;
            }
            ts1 = bench_now();
        }
        K->synchronize();
        double t3 = bench_now();
        stem_model_step(m, &opt, 1.0f, NULL, NULL);
        K->synchronize();
        double t4 = bench_now();
        if (s == 0) loss_first = loss;
        loss_last = loss;
        if (s >= warmup) {
            int i = s - warmup;
            t_zero[i] = t1 - t0;
            t_fwd[i] = t2 - t1;
            t_bwd[i] = t3 - t2;
            t_opt[i] = t4 - t3;
            t_stage[i] = ts1 - ts0;
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
    bench_print_device(stdout, &dev, K);
    bench_print_offload(stdout, m, dev.offload);
    printf("  \"tokens\": {\"distribution\": \"%s\", \"zipf\": %.3f},\n  \"prefetch\": %s,\n",
           zipf > 0 ? "zipf" : "uniform", zipf, prefetch ? "true" : "false");
    printf("  \"set_device_ms\": %.2f,\n", t_dev * 1e3);
    printf("  \"threads\": %d,\n  \"steps\": %d,\n  \"warmup\": %d,\n", pool_threads(), steps, warmup);
    printf("  \"tokens_per_step\": %.0f,\n", tokens);
    printf("  \"step_ms\": %.3f,\n  \"step_ms_mean\": %.3f,\n  \"step_ms_min\": %.3f,\n  \"step_ms_p90\": %.3f,\n",
           med * 1e3, total / steps * 1e3, bench_min(t_step, steps) * 1e3, bench_quantile(t_step, steps, 0.9) * 1e3);
    printf("  \"step_ms_all\": ");
    for (int i = 0; i < steps; i++) t_step[i] *= 1e3;
    bench_print_array(stdout, t_step, steps, "%.2f");
    printf(",\n  \"phase_ms\": {\"zero_grad\": %.3f, \"forward\": %.3f, \"backward\": %.3f, \"optimizer\": %.3f, "
           "\"stage_next\": %.3f},\n",
           bench_quantile(t_zero, steps, 0.5) * 1e3, bench_quantile(t_fwd, steps, 0.5) * 1e3,
           bench_quantile(t_bwd, steps, 0.5) * 1e3, bench_quantile(t_opt, steps, 0.5) * 1e3,
           bench_quantile(t_stage, steps, 0.5) * 1e3);
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
    g_free(t_step); g_free(t_fwd); g_free(t_bwd); g_free(t_opt); g_free(t_zero); g_free(t_stage);
    g_free(stem_layers);
    g_free(dev.device); g_free(dev.math);
    stem_model_free(m);
    pool_shutdown();
    return 0;
}
