/* Elementwise ops and the one reduction that returns to the host (sumsq).
 * Every kernel is a grid-stride loop over size_t indices, so n may exceed the
 * grid (ew_blocks caps it) and 2^31. Expressions follow kernels/cpu/ops.c. */
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

/* PyTorch AdamW: decay first, then the Adam step; bias corrections bc1, bc2
 * are computed on the host with the same powf as the CPU backend. */
__global__ void adamw_k(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                        float eps, float wd, float bc1, float bc2, float gs)
{
    GRID_STRIDE(i, n) {
        const float gi = g[i] * gs;
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float mhat = mi / bc1, vhat = vi / bc2;
        const float pi = p[i] * (1.0f - lr * wd);
        p[i] = pi - lr * mhat / (sqrtf(vhat) + eps);
    }
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
