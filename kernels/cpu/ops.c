/* CPU ops: forward/backward pairs (see ops.h for the conventions).
 *
 * GEMMs go to OpenBLAS (single-threaded; we split the work over our pool).
 * Everything else is plain C loops the compiler vectorizes. Every split is over
 * independent outputs, so no floating-point sum depends on the thread count. */
#include "ops.h"
#include "pool.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows per task for row-parallel elementwise work. */
#define ROWS_MIN 4

/* ------------------------------------------------------------------ matmul */

typedef struct {
    float *y, *dx, *dw;
    const float *x, *w, *dy;
    int N, in, out;
    float beta;
} MatmulCtx;

static void mm_fwd_rows(void *p, size_t b, size_t e)
{
    MatmulCtx *c = p;
    /* y[b:e, :] = x[b:e, :] W^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(e - b), c->out, c->in, 1.0f,
                c->x + b * (size_t)c->in, c->in, c->w, c->in, c->beta, c->y + b * (size_t)c->out, c->out);
}

static void mm_fwd_cols(void *p, size_t b, size_t e)
{
    MatmulCtx *c = p;
    /* y[:, b:e] = x W[b:e, :]^T   (decode path: few rows, split the outputs) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->N, (int)(e - b), c->in, 1.0f,
                c->x, c->in, c->w + b * (size_t)c->in, c->in, c->beta, c->y + b, c->out);
}

/* GEMMs are cut into blocks whose size depends on the SHAPE only, never on the
 * thread count, and the blocks are spread over the pool: OpenBLAS's result for
 * an element depends on the shape of the call it is computed in, so a split
 * that followed the thread count would change the bits. About 8 blocks per GEMM
 * keep 2-8 threads busy while OpenBLAS packs the shared operand only 8 times. */
#define MM_MIN_BLOCK 64
#define MM_BLOCKS 8

static size_t block_for(size_t n)
{
    size_t b = (n + MM_BLOCKS - 1) / MM_BLOCKS;
    b = (b + 15) & ~(size_t)15;            /* whole micro-kernel tiles */
    return b < MM_MIN_BLOCK ? MM_MIN_BLOCK : b;
}

typedef struct { MatmulCtx *c; pool_fn fn; size_t n_items, block; } BlockCtx;

static void run_blocks(void *p, size_t b, size_t e)
{
    BlockCtx *bc = p;
    for (size_t k = b; k < e; k++) {
        size_t lo = k * bc->block, hi = lo + bc->block < bc->n_items ? lo + bc->block : bc->n_items;
        bc->fn(bc->c, lo, hi);
    }
}

static void for_blocks(MatmulCtx *c, size_t n_items, size_t block, pool_fn fn)
{
    BlockCtx bc = { c, fn, n_items, block };
    pool_for((n_items + block - 1) / block, 1, run_blocks, &bc);
}

void op_matmul_forward(float *y, const float *x, const float *w, int N, int in, int out, int accumulate)
{
    MatmulCtx c = { .y = y, .x = x, .w = w, .N = N, .in = in, .out = out, .beta = accumulate ? 1.0f : 0.0f };
    /* many rows: split rows; few rows (decoding a prompt): split output columns */
    if (N >= 2 * MM_MIN_BLOCK) for_blocks(&c, (size_t)N, block_for((size_t)N), mm_fwd_rows);
    else for_blocks(&c, (size_t)out, block_for((size_t)out), mm_fwd_cols);
}

static void mm_bwd_dx(void *p, size_t b, size_t e)
{
    MatmulCtx *c = p;
    /* dx[b:e, :] += dy[b:e, :] W */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(e - b), c->in, c->out, 1.0f,
                c->dy + b * (size_t)c->out, c->out, c->w, c->in, 1.0f, c->dx + b * (size_t)c->in, c->in);
}

static void mm_bwd_dw(void *p, size_t b, size_t e)
{
    MatmulCtx *c = p;
    /* dw[b:e, :] += dy[:, b:e]^T x */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(e - b), c->in, c->N, 1.0f,
                c->dy + b, c->out, c->x, c->in, 1.0f, c->dw + b * (size_t)c->in, c->in);
}

void op_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                        int N, int in, int out)
{
    MatmulCtx c = { .dx = dx, .dw = dw, .dy = dy, .x = x, .w = w, .N = N, .in = in, .out = out };
    if (dx) for_blocks(&c, (size_t)N, block_for((size_t)N), mm_bwd_dx);
    if (dw) for_blocks(&c, (size_t)out, block_for((size_t)out), mm_bwd_dw);
}

/* ------------------------------------------------------------------ rmsnorm */

typedef struct {
    float *y, *rstd, *dx, *dg;
    const float *x, *g, *dy, *rstd_in;
    int N, D;
    float eps;
} NormCtx;

static void rms_fwd(void *p, size_t b, size_t e)
{
    NormCtx *c = p;
    for (size_t i = b; i < e; i++) {
        const float *xi = c->x + i * (size_t)c->D;
        float *yi = c->y + i * (size_t)c->D;
        float ss = 0.0f;
        for (int j = 0; j < c->D; j++) ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / (float)c->D + c->eps);
        c->rstd[i] = r;
        for (int j = 0; j < c->D; j++) yi[j] = xi[j] * r * c->g[j];
    }
}

void op_rmsnorm_forward(float *y, float *rstd, const float *x, const float *g, int N, int D, float eps)
{
    NormCtx c = { .y = y, .rstd = rstd, .x = x, .g = g, .N = N, .D = D, .eps = eps };
    pool_for((size_t)N, ROWS_MIN, rms_fwd, &c);
}

static void rms_bwd_dx(void *p, size_t b, size_t e)
{
    NormCtx *c = p;
    const int D = c->D;
    for (size_t i = b; i < e; i++) {
        const float *xi = c->x + i * (size_t)D, *dyi = c->dy + i * (size_t)D;
        float *dxi = c->dx + i * (size_t)D;
        float r = c->rstd_in[i];
        float dot = 0.0f;   /* sum_j dy_j g_j x_j */
        for (int j = 0; j < D; j++) dot += dyi[j] * c->g[j] * xi[j];
        float k = dot * r * r * r / (float)D;
        for (int j = 0; j < D; j++) dxi[j] += dyi[j] * c->g[j] * r - xi[j] * k;
    }
}

static void rms_bwd_dg(void *p, size_t b, size_t e)
{
    NormCtx *c = p;
    /* columns [b, e): sum over rows in row order (deterministic) */
    for (int i = 0; i < c->N; i++) {
        const float *xi = c->x + (size_t)i * c->D, *dyi = c->dy + (size_t)i * c->D;
        float r = c->rstd_in[i];
        for (size_t j = b; j < e; j++) c->dg[j] += dyi[j] * xi[j] * r;
    }
}

void op_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                         const float *rstd, int N, int D)
{
    NormCtx c = { .dx = dx, .dg = dg, .dy = dy, .x = x, .g = g, .rstd_in = rstd, .N = N, .D = D };
    pool_for((size_t)N, ROWS_MIN, rms_bwd_dx, &c);
    if (dg) pool_for((size_t)D, 32, rms_bwd_dg, &c);
}

/* ------------------------------------------------------------------ rope */

typedef struct {
    float *x, *k;      /* k: a second tensor rotated with the same table (rope_qk), or NULL */
    const float *cs;   /* [T, hd/2, 2] cos, sin */
    int T, nh, nkv, hd;
    float sign;        /* +1 forward, -1 inverse rotation */
} RopeCtx;

/* the nh heads of one row, all at the same position (table row cs) */
static void rope_heads(float *row, const float *cs, int nh, int hd, float sign)
{
    const int half = hd / 2;
    for (int h = 0; h < nh; h++) {
        float *v = row + h * hd;
        for (int i = 0; i < half; i++) {
            float co = cs[2 * i], si = sign * cs[2 * i + 1];
            float a = v[2 * i], bb = v[2 * i + 1];
            v[2 * i] = a * co - bb * si;
            v[2 * i + 1] = a * si + bb * co;
        }
    }
}

static void rope_rows(void *p, size_t b, size_t e)
{
    RopeCtx *c = p;
    const int half = c->hd / 2;
    for (size_t r = b; r < e; r++) {
        const float *cs = c->cs + (size_t)(r % (size_t)c->T) * half * 2;
        rope_heads(c->x + r * (size_t)c->nh * c->hd, cs, c->nh, c->hd, c->sign);
        if (c->k) rope_heads(c->k + r * (size_t)c->nkv * c->hd, cs, c->nkv, c->hd, c->sign);
    }
}

/* freq_i = theta^(-2i/hd), angle = t * freq_i, computed in float like Lingua's
 * precompute_freqs_cis so both sides round the same way. The table depends on
 * (T, hd, theta) only, so rotating q and k with one table gives the same bits
 * as two separate calls. */
static void rope_apply(float *x, float *k, int B, int T, int nh, int nkv, int hd, float theta, float sign)
{
    const int half = hd / 2;
    float *cs = malloc(sizeof(float) * (size_t)T * half * 2);
    for (int i = 0; i < half; i++) {
        float freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        for (int t = 0; t < T; t++) {
            float ang = (float)t * freq;
            cs[((size_t)t * half + i) * 2] = cosf(ang);
            cs[((size_t)t * half + i) * 2 + 1] = sinf(ang);
        }
    }
    RopeCtx c = { .x = x, .k = k, .cs = cs, .T = T, .nh = nh, .nkv = nkv, .hd = hd, .sign = sign };
    pool_for((size_t)B * T, ROWS_MIN, rope_rows, &c);
    free(cs);
}

void op_rope_forward(float *x, int B, int T, int nh, int hd, float theta)
{
    rope_apply(x, NULL, B, T, nh, 0, hd, theta, 1.0f);
}

void op_rope_backward(float *dx, int B, int T, int nh, int hd, float theta)
{
    rope_apply(dx, NULL, B, T, nh, 0, hd, theta, -1.0f);
}

void op_rope_qk_forward(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta)
{
    rope_apply(q, k, B, T, nh, nkv, hd, theta, 1.0f);
}

void op_rope_qk_backward(float *dq, float *dk, int B, int T, int nh, int nkv, int hd, float theta)
{
    rope_apply(dq, dk, B, T, nh, nkv, hd, theta, -1.0f);
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    float *out, *att, *dq, *dk, *dv, *scratch;
    const float *q, *k, *v, *dout, *att_in;
    int B, T, nh, nkv, hd;
} AttnCtx;

/* one task = one (batch, head) */
static void attn_fwd(void *p, size_t b, size_t e)
{
    AttnCtx *c = p;
    const int T = c->T, hd = c->hd, qs = c->nh * hd, ks = c->nkv * hd, grp = c->nh / c->nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    for (size_t task = b; task < e; task++) {
        int bi = (int)(task / (size_t)c->nh), h = (int)(task % (size_t)c->nh), kh = h / grp;
        const float *q = c->q + (size_t)bi * T * qs + h * hd;
        const float *k = c->k + (size_t)bi * T * ks + kh * hd;
        const float *v = c->v + (size_t)bi * T * ks + kh * hd;
        float *att = c->att + task * (size_t)T * T;
        float *out = c->out + (size_t)bi * T * qs + h * hd;
        /* S[T,T] = scale * Q K^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, qs, k, ks, 0.0f, att, T);
        for (int t = 0; t < T; t++) {
            float *row = att + (size_t)t * T;
            float mx = row[0];
            for (int u = 1; u <= t; u++) if (row[u] > mx) mx = row[u];
            float sum = 0.0f;
            for (int u = 0; u <= t; u++) { row[u] = expf(row[u] - mx); sum += row[u]; }
            float inv = 1.0f / sum;
            for (int u = 0; u <= t; u++) row[u] *= inv;
            for (int u = t + 1; u < T; u++) row[u] = 0.0f;
        }
        /* O[T,hd] = P V */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, att, T, v, ks, 0.0f, out, qs);
    }
}

void op_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int nh, int nkv, int hd)
{
    AttnCtx c = { .out = out, .att = att, .q = q, .k = k, .v = v, .B = B, .T = T, .nh = nh, .nkv = nkv, .hd = hd };
    pool_for((size_t)B * nh, 1, attn_fwd, &c);
}

/* one task = one (batch, kv head): the query heads of a group all write the
 * same dK/dV slice, so a group stays on one thread and sums in head order. */
static void attn_bwd(void *p, size_t b, size_t e)
{
    AttnCtx *c = p;
    const int T = c->T, hd = c->hd, qs = c->nh * hd, ks = c->nkv * hd, grp = c->nh / c->nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    for (size_t task = b; task < e; task++) {
        int bi = (int)(task / (size_t)c->nkv), kh = (int)(task % (size_t)c->nkv);
        const float *k = c->k + (size_t)bi * T * ks + kh * hd;
        const float *v = c->v + (size_t)bi * T * ks + kh * hd;
        float *dk = c->dk + (size_t)bi * T * ks + kh * hd;
        float *dv = c->dv + (size_t)bi * T * ks + kh * hd;
        for (int t = 0; t < T; t++) {
            memset(dk + (size_t)t * ks, 0, sizeof(float) * hd);
            memset(dv + (size_t)t * ks, 0, sizeof(float) * hd);
        }
        for (int g = 0; g < grp; g++) {
            int h = kh * grp + g;
            size_t ah = (size_t)bi * c->nh + h;
            const float *P = c->att_in + ah * (size_t)T * T;
            float *dS = c->scratch + ah * (size_t)T * T;
            const float *q = c->q + (size_t)bi * T * qs + h * hd;
            const float *dO = c->dout + (size_t)bi * T * qs + h * hd;
            float *dq = c->dq + (size_t)bi * T * qs + h * hd;
            /* dV += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dO, qs, 1.0f, dv, ks);
            /* dP = dO V^T  (into dS) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, qs, v, ks, 0.0f, dS, T);
            /* dS = P * (dP - rowsum(dP * P)) * scale; masked entries have P = 0 */
            for (int t = 0; t < T; t++) {
                const float *pr = P + (size_t)t * T;
                float *dr = dS + (size_t)t * T;
                float dot = 0.0f;
                for (int u = 0; u <= t; u++) dot += pr[u] * dr[u];
                for (int u = 0; u <= t; u++) dr[u] = pr[u] * (dr[u] - dot) * scale;
                for (int u = t + 1; u < T; u++) dr[u] = 0.0f;
            }
            /* dQ = dS K ; dK += dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dS, T, k, ks, 0.0f, dq, qs);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dS, T, q, qs, 1.0f, dk, ks);
        }
    }
}

void op_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *att, const float *q, const float *k, const float *v,
                           int B, int T, int nh, int nkv, int hd)
{
    AttnCtx c = { .dq = dq, .dk = dk, .dv = dv, .scratch = scratch, .dout = dout, .att_in = att,
                  .q = q, .k = k, .v = v, .B = B, .T = T, .nh = nh, .nkv = nkv, .hd = hd };
    pool_for((size_t)B * nkv, 1, attn_bwd, &c);
}

/* ------------------------------------------------------------------ swiglu */

typedef struct {
    float *m, *dg, *du;
    const float *g, *u, *dm;
} GluCtx;

static void glu_fwd(void *p, size_t b, size_t e)
{
    GluCtx *c = p;
    for (size_t i = b; i < e; i++) {
        float g = c->g[i];
        c->m[i] = g / (1.0f + expf(-g)) * c->u[i];
    }
}

void op_swiglu_forward(float *m, const float *g, const float *u, size_t n)
{
    GluCtx c = { .m = m, .g = g, .u = u };
    pool_for(n, 4096, glu_fwd, &c);
}

static void glu_bwd(void *p, size_t b, size_t e)
{
    GluCtx *c = p;
    for (size_t i = b; i < e; i++) {
        float g = c->g[i], dm = c->dm[i], u = c->u[i];
        float s = 1.0f / (1.0f + expf(-g));
        float silu = g * s;
        c->dg[i] = dm * u * (s + silu * (1.0f - s));
        c->du[i] = dm * silu;
    }
}

void op_swiglu_backward(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n)
{
    GluCtx c = { .dg = dg, .du = du, .dm = dm, .g = g, .u = u };
    pool_for(n, 4096, glu_bwd, &c);
}

/* ------------------------------------------------------------------ STEM FFN gate */

/* The float expressions are glu_fwd's and glu_bwd's, character for character:
 * the fused ops must give the bits of the gather + swiglu composition. */
typedef struct {
    float *m, *dg, *drows;
    const float *g, *dm, *rows;
    const int32_t *ridx, *gidx;
    size_t rstride, gstride;
    int N, F;
} StemFfnCtx;

static void stem_ffn_fwd(void *p, size_t b, size_t e)
{
    StemFfnCtx *c = p;
    const size_t F = (size_t)c->F;
    for (size_t i = b; i < e; i++) {
        const float *g = c->g + i * F, *u = c->rows + (size_t)c->ridx[i] * c->rstride;
        float *m = c->m + i * F;
        for (size_t f = 0; f < F; f++) {
            float gv = g[f];
            m[f] = gv / (1.0f + expf(-gv)) * u[f];
        }
    }
}

void op_stem_ffn_forward(float *m, const float *g, const float *rows, const int32_t *idx, int N, int F,
                         size_t stride)
{
    if (N <= 0 || F <= 0) return;
    StemFfnCtx c = { .m = m, .g = g, .rows = rows, .ridx = idx, .rstride = stride, .N = N, .F = F };
    /* whole positions per task, at least the 4096 elements op_swiglu_forward takes */
    pool_for((size_t)N, (4096 + (size_t)F - 1) / (size_t)F, stem_ffn_fwd, &c);
}

/* This thread owns columns [b, e) of every position, as emb_bwd does: each dg
 * element is written once, and each drows element adds its positions in
 * position order whatever the thread count. */
static void stem_ffn_bwd(void *p, size_t b, size_t e)
{
    StemFfnCtx *c = p;
    const size_t F = (size_t)c->F;
    for (int i = 0; i < c->N; i++) {
        const float *g = c->g + (size_t)i * F, *dm = c->dm + (size_t)i * F;
        const float *u = c->rows + (size_t)c->ridx[i] * c->rstride;
        float *dg = c->dg + (size_t)i * F, *dr = c->drows + (size_t)c->gidx[i] * c->gstride;
        for (size_t f = b; f < e; f++) {
            float gv = g[f], dmv = dm[f], uv = u[f];
            float s = 1.0f / (1.0f + expf(-gv));
            float silu = gv * s;
            dg[f] = dmv * uv * (s + silu * (1.0f - s));
            dr[f] += dmv * silu;
        }
    }
}

void op_stem_ffn_backward(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                          const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, int N, int F)
{
    if (N <= 0 || F <= 0) return;
    StemFfnCtx c = { .dg = dg, .drows = drows, .dm = dm, .g = g, .rows = rows, .ridx = ridx, .rstride = rstride,
                     .gidx = gidx, .gstride = gstride, .N = N, .F = F };
    pool_for((size_t)F, 64, stem_ffn_bwd, &c);
}

/* ------------------------------------------------------------------ embedding */

typedef struct {
    float *out, *dtable;
    const float *table, *dout;
    const int32_t *ids;
    int N, D;
} EmbCtx;

static void emb_fwd(void *p, size_t b, size_t e)
{
    EmbCtx *c = p;
    for (size_t i = b; i < e; i++)
        memcpy(c->out + i * (size_t)c->D, c->table + (size_t)c->ids[i] * c->D, sizeof(float) * c->D);
}

void op_embedding_forward(float *out, const float *table, const int32_t *ids, int N, int D)
{
    EmbCtx c = { .out = out, .table = table, .ids = ids, .N = N, .D = D };
    pool_for((size_t)N, 16, emb_fwd, &c);
}

static void emb_bwd(void *p, size_t b, size_t e)
{
    EmbCtx *c = p;
    /* this thread owns columns [b, e) of every row: positions summed in order */
    for (int i = 0; i < c->N; i++) {
        float *dst = c->dtable + (size_t)c->ids[i] * c->D;
        const float *src = c->dout + (size_t)i * c->D;
        for (size_t j = b; j < e; j++) dst[j] += src[j];
    }
}

void op_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D)
{
    EmbCtx c = { .dtable = dtable, .dout = dout, .ids = ids, .N = N, .D = D };
    pool_for((size_t)D, 64, emb_bwd, &c);
}

/* ------------------------------------------------------------------ residual */

typedef struct { float *y; const float *x; } AddCtx;

static void add_part(void *p, size_t b, size_t e)
{
    AddCtx *c = p;
    for (size_t i = b; i < e; i++) c->y[i] += c->x[i];
}

void op_add_inplace(float *y, const float *x, size_t n)
{
    AddCtx c = { y, x };
    pool_for(n, 16384, add_part, &c);
}

/* ------------------------------------------------------------------ cross-entropy */

typedef struct {
    float *probs, *dl, *row_loss;
    const float *logits, *probs_in;
    const int32_t *tg;
    int V;
    float inv_valid;
} CeCtx;

static void ce_fwd(void *p, size_t b, size_t e)
{
    CeCtx *c = p;
    for (size_t i = b; i < e; i++) {
        const float *l = c->logits + i * (size_t)c->V;
        float *pr = c->probs + i * (size_t)c->V;
        int t = c->tg[i];
        /* read the target logit first: probs may alias the logits */
        float lt = t >= 0 ? l[t] : 0.0f;
        float mx = l[0];
        for (int j = 1; j < c->V; j++) if (l[j] > mx) mx = l[j];
        float sum = 0.0f;
        for (int j = 0; j < c->V; j++) { pr[j] = expf(l[j] - mx); sum += pr[j]; }
        /* loss from log-sum-exp: exact even when the target's probability underflows */
        c->row_loss[i] = t >= 0 ? mx + logf(sum) - lt : 0.0f;
        float inv = 1.0f / sum;
        for (int j = 0; j < c->V; j++) pr[j] *= inv;
    }
}

float op_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int N, int V)
{
    float *row_loss = malloc(sizeof(float) * (size_t)(N > 0 ? N : 1));
    CeCtx c = { .probs = probs, .logits = logits, .tg = targets, .V = V, .row_loss = row_loss };
    pool_for((size_t)N, ROWS_MIN, ce_fwd, &c);
    double loss = 0.0;
    int valid = 0;
    for (int i = 0; i < N; i++) {
        if (targets[i] < 0) continue;
        loss += row_loss[i];
        valid++;
    }
    free(row_loss);
    return valid ? (float)(loss / valid) : 0.0f;
}

static void ce_bwd(void *p, size_t b, size_t e)
{
    CeCtx *c = p;
    for (size_t i = b; i < e; i++) {
        float *d = c->dl + i * (size_t)c->V;
        const float *pr = c->probs_in + i * (size_t)c->V;
        if (c->tg[i] < 0) { memset(d, 0, sizeof(float) * c->V); continue; }
        for (int j = 0; j < c->V; j++) d[j] = pr[j] * c->inv_valid;
        d[c->tg[i]] -= c->inv_valid;
    }
}

void op_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int N, int V)
{
    int valid = 0;
    for (int i = 0; i < N; i++) valid += targets[i] >= 0;
    CeCtx c = { .dl = dlogits, .probs_in = probs, .tg = targets, .V = V,
                .inv_valid = valid ? 1.0f / (float)valid : 0.0f };
    pool_for((size_t)N, ROWS_MIN, ce_bwd, &c);
}

/* ------------------------------------------------------------------ AdamW */

typedef struct {
    float *p, *m, *v;
    const float *g;
    float lr, b1, b2, eps, wd, bc1, bc2, gs;
} AdamCtx;

static void adam_part(void *pp, size_t b, size_t e)
{
    AdamCtx *c = pp;
    for (size_t i = b; i < e; i++) {
        float g = c->g[i] * c->gs;
        float m = c->b1 * c->m[i] + (1.0f - c->b1) * g;
        float v = c->b2 * c->v[i] + (1.0f - c->b2) * g * g;
        c->m[i] = m;
        c->v[i] = v;
        float mhat = m / c->bc1, vhat = v / c->bc2;
        /* PyTorch order: decay first, then the Adam step */
        float p = c->p[i] * (1.0f - c->lr * c->wd);
        c->p[i] = p - c->lr * mhat / (sqrtf(vhat) + c->eps);
    }
}

static AdamCtx adam_ctx(float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2, float eps,
                        float wd, int t, float grad_scale)
{
    return (AdamCtx){ .p = p, .m = m, .v = v, .g = g, .lr = lr, .b1 = beta1, .b2 = beta2, .eps = eps, .wd = wd,
                      .bc1 = 1.0f - powf(beta1, (float)t), .bc2 = 1.0f - powf(beta2, (float)t), .gs = grad_scale };
}

void op_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
              float beta2, float eps, float wd, int t, float grad_scale)
{
    AdamCtx c = adam_ctx(p, g, m, v, lr, beta1, beta2, eps, wd, t, grad_scale);
    pool_for(n, 16384, adam_part, &c);
}

typedef struct {
    AdamCtx base;          /* p, m, v at offset 0, g at row 0 */
    const int32_t *idx;
    size_t W, stride;
} AdamRowsCtx;

/* Rows are split over the pool and each row runs adam_part inline (not
 * op_adamw, whose own pool_for would run inline anyway from inside a task, but
 * would recompute the bias corrections per row). */
static void adam_rows_part(void *pp, size_t b, size_t e)
{
    AdamRowsCtx *c = pp;
    for (size_t i = b; i < e; i++) {
        AdamCtx r = c->base;
        const size_t off = (size_t)c->idx[i] * c->stride;
        r.p += off;
        r.m += off;
        r.v += off;
        r.g += i * c->W;
        adam_part(&r, 0, c->W);
    }
}

void op_adamw_rows(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W, size_t stride,
                   float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale)
{
    if (N <= 0 || W <= 0) return;
    AdamRowsCtx c = { .base = adam_ctx(p, g, m, v, lr, beta1, beta2, eps, wd, t, grad_scale), .idx = idx,
                      .W = (size_t)W, .stride = stride };
    /* at least the 16384 elements per task op_adamw takes */
    pool_for((size_t)N, (16384 + (size_t)W - 1) / (size_t)W, adam_rows_part, &c);
}

/* ------------------------------------------------------------------ reductions */

#define SUMSQ_CHUNK 65536

typedef struct { const float *x; size_t n; double *part; } SumsqCtx;

static void sumsq_part(void *p, size_t b, size_t e)
{
    SumsqCtx *c = p;
    for (size_t k = b; k < e; k++) {
        size_t lo = k * SUMSQ_CHUNK, hi = lo + SUMSQ_CHUNK < c->n ? lo + SUMSQ_CHUNK : c->n;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)c->x[i] * c->x[i];
        c->part[k] = s;
    }
}

/* Fixed-size chunks summed in chunk order: the result is the same for any
 * thread count. */
double op_sumsq(const float *x, size_t n)
{
    size_t nc = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    if (nc == 0) return 0.0;
    double stack_part[64];
    double *part = nc <= 64 ? stack_part : malloc(sizeof(double) * nc);
    SumsqCtx c = { x, n, part };
    pool_for(nc, 1, sumsq_part, &c);
    double s = 0.0;
    for (size_t k = 0; k < nc; k++) s += part[k];
    if (part != stack_part) free(part);
    return s;
}

typedef struct { float *x; float s; } ScaleCtx;

static void scale_part(void *p, size_t b, size_t e)
{
    ScaleCtx *c = p;
    for (size_t i = b; i < e; i++) c->x[i] *= c->s;
}

void op_scale(float *x, size_t n, float s)
{
    ScaleCtx c = { x, s };
    pool_for(n, 16384, scale_part, &c);
}
