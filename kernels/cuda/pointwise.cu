/* Elementwise ops (the fused STEM FFN gate and the row-indexed AdamW too:
 * elementwise over [N, F] / [N, W]) and the one reduction that returns to the
 * host (sumsq). Every kernel is a grid-stride loop over size_t indices, so n
 * may exceed the grid (ew_blocks caps it) and 2^31. Expressions follow
 * kernels/cpu/ops.c. */
#include "cuda_internal.h"

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------------ swiglu */

__global__ void swiglu_fwd_k(float *m, const float *g, const float *u, size_t n)
{
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        m[i] = gi / (1.0f + expf(-gi)) * u[i];
    }
}

void cu_swiglu_forward(float *m, const float *g, const float *u, size_t n)
{
    if (!n) return;
    swiglu_fwd_k<<<ew_blocks(n), EW_THREADS, 0, g_cu.compute>>>(m, g, u, n);
    LAUNCH_CHECK();
}

/* dg = dm u silu'(g), du = dm silu(g); both overwritten */
__global__ void swiglu_bwd_k(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n)
{
    GRID_STRIDE(i, n) {
        const float gi = g[i], dmi = dm[i], ui = u[i];
        const float s = 1.0f / (1.0f + expf(-gi));
        const float silu = gi * s;
        dg[i] = dmi * ui * (s + silu * (1.0f - s));
        du[i] = dmi * silu;
    }
}

void cu_swiglu_backward(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n)
{
    if (!n) return;
    swiglu_bwd_k<<<ew_blocks(n), EW_THREADS, 0, g_cu.compute>>>(dg, du, dm, g, u, n);
    LAUNCH_CHECK();
}

/* ------------------------------------------------------------------ STEM FFN gate */

/* The STEM row gather fused with the gate: swiglu_fwd_k / swiglu_bwd_k with u
 * read straight from the rows (a table, or a block of columns of the row cache),
 * so the [N, F] gathered-rows buffer is neither written nor read. One thread per
 * (position i, column f) element of the [N, F] activations: consecutive threads
 * read consecutive floats of one row. */
__global__ void stem_ffn_fwd_k(float *m, const float *g, const float *rows, const int32_t *idx, size_t total, int F,
                               size_t stride)
{
    GRID_STRIDE(e, total) {
        const size_t i = e / (size_t)F, f = e % (size_t)F;
        const float gi = g[e];
        m[e] = gi / (1.0f + expf(-gi)) * rows[(size_t)idx[i] * stride + f];
    }
}

void cu_stem_ffn_forward(float *m, const float *g, const float *rows, const int32_t *idx, int N, int F, size_t stride)
{
    const size_t total = (size_t)(N > 0 ? N : 0) * (size_t)(F > 0 ? F : 0);
    if (!total) return;
    stem_ffn_fwd_k<<<ew_blocks(total), EW_THREADS, 0, g_cu.compute>>>(m, g, rows, idx, total, F, stride);
    LAUNCH_CHECK();
}

/* dg = dm u silu'(g) (overwritten) with u read at ridx; dm silu(g) is added to
 * the row at gidx with atomics: positions sharing a gidx (a repeated token) add
 * in no fixed order, which kernels.h allows (as scatter_rows). */
__global__ void stem_ffn_bwd_k(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                               const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, size_t total,
                               int F)
{
    GRID_STRIDE(e, total) {
        const size_t i = e / (size_t)F, f = e % (size_t)F;
        const float gi = g[e], dmi = dm[e], ui = rows[(size_t)ridx[i] * rstride + f];
        const float s = 1.0f / (1.0f + expf(-gi));
        const float silu = gi * s;
        dg[e] = dmi * ui * (s + silu * (1.0f - s));
        atomicAdd(&drows[(size_t)gidx[i] * gstride + f], dmi * silu);
    }
}

void cu_stem_ffn_backward(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                          const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, int N, int F)
{
    const size_t total = (size_t)(N > 0 ? N : 0) * (size_t)(F > 0 ? F : 0);
    if (!total) return;
    stem_ffn_bwd_k<<<ew_blocks(total), EW_THREADS, 0, g_cu.compute>>>(dg, drows, dm, g, rows, ridx, rstride, gidx,
                                                                     gstride, total, F);
    LAUNCH_CHECK();
}

/* ------------------------------------------------------------------ add, scale */

__global__ void add_k(float *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] += x[i];
}

void cu_add_inplace(float *y, const float *x, size_t n)
{
    if (!n) return;
    add_k<<<ew_blocks(n), EW_THREADS, 0, g_cu.compute>>>(y, x, n);
    LAUNCH_CHECK();
}

__global__ void scale_k(float *x, size_t n, float s)
{
    GRID_STRIDE(i, n) x[i] *= s;
}

void cu_scale(float *x, size_t n, float s)
{
    if (!n) return;
    scale_k<<<ew_blocks(n), EW_THREADS, 0, g_cu.compute>>>(x, n, s);
    LAUNCH_CHECK();
}

/* ------------------------------------------------------------------ AdamW */

/* One element of PyTorch AdamW: decay first, then the Adam step; bias
 * corrections bc1, bc2 are computed on the host with the same powf as the CPU
 * backend. Shared by the flat and the row-indexed kernel so both round alike. */
__device__ __forceinline__ void adamw_one(float *p, float *m, float *v, float g, float lr, float b1, float b2,
                                          float eps, float wd, float bc1, float bc2, float gs)
{
    const float gi = g * gs;
    const float mi = b1 * *m + (1.0f - b1) * gi;
    const float vi = b2 * *v + (1.0f - b2) * gi * gi;
    *m = mi;
    *v = vi;
    const float mhat = mi / bc1, vhat = vi / bc2;
    const float pi = *p * (1.0f - lr * wd);
    *p = pi - lr * mhat / (sqrtf(vhat) + eps);
}

__global__ void adamw_k(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                        float eps, float wd, float bc1, float bc2, float gs)
{
    GRID_STRIDE(i, n) adamw_one(p + i, m + i, v + i, g[i], lr, b1, b2, eps, wd, bc1, bc2, gs);
}

void cu_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
              float beta2, float eps, float wd, int t, float grad_scale)
{
    if (!n) return;
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    adamw_k<<<ew_blocks(n), EW_THREADS, 0, g_cu.compute>>>(p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2,
                                                           grad_scale);
    LAUNCH_CHECK();
}

/* Rows i < N of W floats at p/m/v + idx[i] * stride, gradient g[i, 0:W): one
 * launch over all N * W elements. idx has no repeats (kernels.h), so no two
 * threads touch the same element. */
__global__ void adamw_rows_k(float *p, float *m, float *v, const float *g, const int32_t *idx, size_t total, int W,
                             size_t stride, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2,
                             float gs)
{
    GRID_STRIDE(e, total) {
        const size_t i = e / (size_t)W, w = e % (size_t)W;
        const size_t off = (size_t)idx[i] * stride + w;
        adamw_one(p + off, m + off, v + off, g[e], lr, b1, b2, eps, wd, bc1, bc2, gs);
    }
}

void cu_adamw_rows(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W, size_t stride,
                   float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale)
{
    const size_t total = (size_t)(N > 0 ? N : 0) * (size_t)(W > 0 ? W : 0);
    if (!total) return;
    const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    adamw_rows_k<<<ew_blocks(total), EW_THREADS, 0, g_cu.compute>>>(p, m, v, g, idx, total, W, stride, lr, beta1,
                                                                    beta2, eps, wd, bc1, bc2, grad_scale);
    LAUNCH_CHECK();
}

/* ------------------------------------------------------------------ sumsq */

/* Two passes, no atomics (the same sum for the same input every time): each
 * block writes the double sum of its grid-stride share, then one block adds
 * the partials in a fixed tree. */
#define SUMSQ_BLOCKS_MAX 1024

__global__ void sumsq_part_k(double *part, const float *x, size_t n)
{
    __shared__ double red[32];
    double s = 0.0;
    GRID_STRIDE(i, n) s += (double)x[i] * (double)x[i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sumsq_final_k(double *result, const double *part, int nparts)
{
    __shared__ double red[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
    s = block_sum(s, red);
    if (threadIdx.x == 0) *result = s;
}

double cu_sumsq(const float *x, size_t n)
{
    double r = 0.0;
    if (n) {
        unsigned blocks = ew_blocks(n);
        if (blocks > SUMSQ_BLOCKS_MAX) blocks = SUMSQ_BLOCKS_MAX;
        double *buf = (double *)stem_cuda_scratch(SCRATCH_SUMSQ, sizeof(double) * (blocks + 1));
        double *part = buf + 1;
        sumsq_part_k<<<blocks, EW_THREADS, 0, g_cu.compute>>>(part, x, n);
        LAUNCH_CHECK();
        sumsq_final_k<<<1, EW_THREADS, 0, g_cu.compute>>>(buf, part, (int)blocks);
        LAUNCH_CHECK();
        CUDA_CHECK(cudaMemcpyAsync(&r, buf, sizeof r, cudaMemcpyDeviceToHost, g_cu.compute));
    }
    /* a scalar-returning op waits for everything queued before it */
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
    return r;
}
