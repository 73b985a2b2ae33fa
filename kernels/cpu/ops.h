/* CPU compute ops: forward/backward pairs on raw float arrays.
 *
 * Conventions (as in llm.c):
 *  - N = number of token positions (B*T), row-major everywhere.
 *  - Linear weights are [out, in] (PyTorch/Lingua layout): y = x W^T.
 *  - Backward functions ACCUMULATE (+=) into parameter gradients (so gradient
 *    accumulation over micro-batches is free) and into input gradients where
 *    noted; callers zero what must start at zero.
 *  - Parallelism: ops split work over the pool in pool.h; OpenBLAS runs with one
 *    thread so there is exactly one level of threading. Splits never change the
 *    order of a floating-point sum, so results are bit-identical for any thread
 *    count.
 * Kernels know nothing but arrays: no model, no file, no table store. */
#ifndef STEM_KERNELS_CPU_OPS_H
#define STEM_KERNELS_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- matmul: y[N,out] = x[N,in] W[out,in]^T (+ y if accumulate) ---- */
void op_matmul_forward(float *y, const float *x, const float *w, int N, int in, int out, int accumulate);
/* dx[N,in] += dy W   (dx may be NULL: not needed)
 * dw[out,in] += dy^T x (dw may be NULL: frozen weight) */
void op_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                        int N, int in, int out);

/* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * g ---- */
/* y[N,D], rstd[N] (saved for backward), x[N,D], g[D] */
void op_rmsnorm_forward(float *y, float *rstd, const float *x, const float *g, int N, int D, float eps);
/* dx[N,D] += ..., dg[D] += ... */
void op_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                         const float *rstd, int N, int D);

/* ---- RoPE on adjacent pairs (2i, 2i+1), as Meta Lingua/Llama ----
 * x[B*T, nh*hd] in place; position of row r is r % T; freq_i = theta^(-2i/hd). */
void op_rope_forward(float *x, int B, int T, int nh, int hd, float theta);
/* dx in place: applies the inverse rotation (rotation is orthogonal) */
void op_rope_backward(float *dx, int B, int T, int nh, int hd, float theta);
/* q[B*T, nh*hd] and k[B*T, nkv*hd] in place, one cos/sin table for both:
 * bit-identical to op_rope_forward(q, .., nh, ..) then op_rope_forward(k, .., nkv, ..)
 * (and the backward likewise). */
void op_rope_qk_forward(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta);
void op_rope_qk_backward(float *dq, float *dk, int B, int T, int nh, int nkv, int hd, float theta);

/* ---- causal self-attention with grouped-query heads ----
 * q[B*T, nh*hd], k,v[B*T, nkv*hd]; head h reads kv head h / (nh/nkv).
 * att[B, nh, T, T] saved softmax probabilities (upper triangle written as 0).
 * out[B*T, nh*hd]. scale = 1/sqrt(hd). */
void op_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int nh, int nkv, int hd);
/* dq, dk, dv are OVERWRITTEN (not accumulated). scratch: B*nh*T*T floats. */
void op_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *att, const float *q, const float *k, const float *v,
                           int B, int T, int nh, int nkv, int hd);

/* ---- SwiGLU gate: m = SiLU(g) * u ----
 * Dense FFN: u = W3 x. STEM FFN: u = U_l[token] (gathered rows). Same op. */
void op_swiglu_forward(float *m, const float *g, const float *u, size_t n);
/* dg, du OVERWRITTEN */
void op_swiglu_backward(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n);

/* ---- STEM FFN gate: the row gather fused with SwiGLU (no gathered-rows buffer) ----
 * m[N,F]: m[i,f] = SiLU(g[i,f]) * rows[idx[i]*stride + f]; OVERWRITTEN.
 * rows points at the first column of the wanted block (a table [V, F] with
 * stride F, or layer j's columns of a row cache with stride n_stem*F).
 * Bit-identical to op_embedding_forward / gather_rows into u, then op_swiglu_forward. */
void op_stem_ffn_forward(float *m, const float *g, const float *rows, const int32_t *idx, int N, int F,
                         size_t stride);
/* With u[i,f] = rows[ridx[i]*rstride + f]:
 *   dg[N,F] = d(SiLU(g) u)/dg * dm                      OVERWRITTEN
 *   drows[gidx[i]*gstride + f] += dm[i,f] * SiLU(g[i,f])  ACCUMULATED, in position
 *   order (rows of a repeated gidx sum deterministically).
 * Rows are read at ridx and gradients added at gidx: the offloaded path reads
 * cache slots but accumulates per unique token. Bit-identical to op_swiglu_backward
 * into (dg, du), then op_embedding_backward / scatter_rows of du. */
void op_stem_ffn_backward(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                          const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, int N, int F);

/* ---- embedding / STEM row gather ----
 * out[N,D] = table[ids[i], :]; backward scatter-adds rows into dtable[V,D].
 * Backward is deterministic: rows of the same id are summed in position order. */
void op_embedding_forward(float *out, const float *table, const int32_t *ids, int N, int D);
void op_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D);

/* ---- residual: y += x ---- */
void op_add_inplace(float *y, const float *x, size_t n);

/* ---- softmax cross-entropy over logits[N,V], targets[N] ----
 * Returns the mean loss over positions whose target >= 0 (target < 0 = ignored).
 * probs may alias logits (softmax written in place). */
float op_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int N, int V);
/* dlogits[N,V] = (probs - onehot) / n_valid ; OVERWRITTEN; may alias probs */
void op_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int N, int V);

/* ---- AdamW (decoupled weight decay, PyTorch semantics) ----
 * step t starts at 1. p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p) */
void op_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
              float beta2, float eps, float wd, int t, float grad_scale);
/* op_adamw on N rows of W floats: row i is p/m/v + idx[i]*stride with gradient
 * g[i*W, (i+1)*W). idx must not repeat (rows are updated in parallel).
 * Bit-identical to op_adamw on each row. Note the argument order (p, m, v, g). */
void op_adamw_rows(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W, size_t stride,
                   float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale);

/* Sum of squares (double accumulation), for gradient clipping. */
double op_sumsq(const float *x, size_t n);
void op_scale(float *x, size_t n, float s);

#endif
