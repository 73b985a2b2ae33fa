/* RMSNorm and RoPE (semantics: kernels/cpu/ops.c; the float expressions are
 * written in the same order as there so the two backends round alike). */
#include "cuda_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ rmsnorm */

#define ROW_THREADS 256   /* one block per row; D = 64 .. 8192 in practice */

/* y[N,D] = x * rstd * g, rstd[N] = 1 / sqrt(mean(x^2) + eps). grid = N rows. */
__global__ void rmsnorm_fwd_k(float *y, float *rstd, const float *x, const float *g, int D, float eps)
{
    __shared__ float red[32];
    const size_t row = blockIdx.x;
    const float *xr = x + row * (size_t)D;
    float *yr = y + row * (size_t)D;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) ss += xr[j] * xr[j];
    ss = block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int j = threadIdx.x; j < D; j += blockDim.x) yr[j] = xr[j] * r * g[j];
}

void cu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *g, int N, int D, float eps)
{
    if (N <= 0) return;
    rmsnorm_fwd_k<<<N, ROW_THREADS, 0, g_cu.compute>>>(y, rstd, x, g, D, eps);
    LAUNCH_CHECK();
}

/* dx[N,D] += dy g r - x (sum_j dy_j g_j x_j) r^3 / D. grid = N rows. */
__global__ void rmsnorm_bwd_dx_k(float *dx, const float *dy, const float *x, const float *g, const float *rstd, int D)
{
    __shared__ float red[32];
    const size_t row = blockIdx.x;
    const float *xr = x + row * (size_t)D, *dyr = dy + row * (size_t)D;
    float *dxr = dx + row * (size_t)D;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) dot += dyr[j] * g[j] * xr[j];
    dot = block_sum(dot, red);
    const float k = dot * r * r * r / (float)D;
    for (int j = threadIdx.x; j < D; j += blockDim.x) dxr[j] += dyr[j] * g[j] * r - xr[j] * k;
}

/* dg[D] += sum_i dy[i,j] x[i,j] rstd[i]: a column sum. Block (32, 8): x = 32
 * adjacent columns (coalesced rows), y = 8 row lanes over the block's slice of
 * rows; the 8 partials are added in shared memory and the block's total goes
 * to dg with one atomicAdd per column (slices of rows run in parallel). */
#define DG_COLS 32
#define DG_LANES 8
__global__ void rmsnorm_bwd_dg_k(float *dg, const float *dy, const float *x, const float *rstd, int N, int D,
                                 int rows_per_block)
{
    __shared__ float part[DG_LANES][DG_COLS + 1];
    const int j = blockIdx.x * DG_COLS + threadIdx.x;
    const int i0 = blockIdx.y * rows_per_block;
    const int i1 = min(N, i0 + rows_per_block);
    float s = 0.0f;
    if (j < D)
        for (int i = i0 + threadIdx.y; i < i1; i += DG_LANES)
            s += dy[(size_t)i * D + j] * x[(size_t)i * D + j] * rstd[i];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < D) {
        float t = 0.0f;
        for (int l = 0; l < DG_LANES; l++) t += part[l][threadIdx.x];
        atomicAdd(&dg[j], t);
    }
}

void cu_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                         const float *rstd, int N, int D)
{
    if (N <= 0 || D <= 0) return;
    rmsnorm_bwd_dx_k<<<N, ROW_THREADS, 0, g_cu.compute>>>(dx, dy, x, g, rstd, D);
    LAUNCH_CHECK();
    if (!dg) return;
    /* about 64 rows per block, fewer blocks than grid.y's limit */
    int gy = (N + 63) / 64;
    if (gy > 65535) gy = 65535;
    const int rows_per_block = (N + gy - 1) / gy;
    gy = (N + rows_per_block - 1) / rows_per_block;
    dim3 grid((D + DG_COLS - 1) / DG_COLS, gy), block(DG_COLS, DG_LANES);
    rmsnorm_bwd_dg_k<<<grid, block, 0, g_cu.compute>>>(dg, dy, x, rstd, N, D, rows_per_block);
    LAUNCH_CHECK();
}

/* ------------------------------------------------------------------ rope */

/* x[B*T, nh*hd] in place: one thread per (row, head, pair i). Pair (2i, 2i+1)
 * of row r turns by angle (r % T) * freq[i], sign -1 for the inverse. freq[i] =
 * theta^(-2i/hd) comes from the host (rope_freqs), the angle is computed in
 * float exactly as on the CPU (Lingua's precompute_freqs_cis), then cosf/sinf
 * (full precision: no fast math). */
__global__ void rope_k(float *x, const float *freq, size_t n_pairs, int T, int nh, int hd, float sign)
{
    const int half = hd / 2;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n_pairs;
         e += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(e % (size_t)half);
        const size_t rh = e / (size_t)half;          /* row * nh + head */
        const int h = (int)(rh % (size_t)nh);
        const size_t r = rh / (size_t)nh;
        const int t = (int)(r % (size_t)T);
        const float ang = (float)t * freq[i];
        const float co = cosf(ang), si = sign * sinf(ang);
        float *v = x + r * (size_t)nh * hd + (size_t)h * hd;
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * co - b * si;
        v[2 * i + 1] = a * si + b * co;
    }
}

/* freq[i] = 1 / powf(theta, 2i/hd) for i < hd/2, in device memory. Computed on
 * the host with the C library's powf, the very call the CPU backend makes:
 * the device powf may differ by a few ulp, and the angle t * freq multiplies
 * that error by the position (a 4-ulp freq at t = 1000 moves the angle by
 * ~2e-4 rad, past the 1e-4 parity). Cached per (theta, hd), which a model
 * never changes, so the upload (and its stream sync) happens once. */
static const float *rope_freqs(int hd, float theta)
{
    static const float *cached;
    static int cached_hd = -1;
    static float cached_theta;
    const int half = hd / 2;
    float *dev = (float *)stem_cuda_scratch(SCRATCH_ROPE, sizeof(float) * (size_t)half);
    if (dev == cached && hd == cached_hd && memcmp(&theta, &cached_theta, sizeof theta) == 0) return dev;
    float *host = (float *)malloc(sizeof(float) * (size_t)half);
    if (!host) stem_cuda_fail("malloc", "out of host memory", __FILE__, __LINE__);
    for (int i = 0; i < half; i++) host[i] = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
    /* queued behind the rope kernels that may still read the old table; the
     * sync lets the pageable host buffer go */
    CUDA_CHECK(cudaMemcpyAsync(dev, host, sizeof(float) * (size_t)half, cudaMemcpyHostToDevice, g_cu.compute));
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
    free(host);
    cached = dev;
    cached_hd = hd;
    cached_theta = theta;
    return dev;
}

static void rope_apply(float *x, int B, int T, int nh, int hd, float theta, float sign)
{
    const size_t n_pairs = (size_t)(B > 0 ? B : 0) * (size_t)(T > 0 ? T : 0) * (size_t)(nh > 0 ? nh : 0) *
                           (size_t)(hd > 1 ? hd / 2 : 0);
    if (n_pairs == 0) return;
    const float *freq = rope_freqs(hd, theta);
    rope_k<<<ew_blocks(n_pairs), EW_THREADS, 0, g_cu.compute>>>(x, freq, n_pairs, T, nh, hd, sign);
    LAUNCH_CHECK();
}

/* q[B*T, nh*hd] and k[B*T, nkv*hd] in place in one launch: one thread per
 * (row, pair i) turns pair i of every q head and then of every k head, so the
 * angle's cos/sin are computed once for nh + nkv heads. Angle and rotation are
 * rope_k's expressions. Consecutive threads take consecutive pairs of one row:
 * a warp reads 32 adjacent pairs of each head in turn. */
__global__ void rope_qk_k(float *q, float *k, const float *freq, size_t n_rp, int T, int nh, int nkv, int hd,
                          float sign)
{
    const int half = hd / 2;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n_rp;
         e += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(e % (size_t)half);
        const size_t r = e / (size_t)half;
        const int t = (int)(r % (size_t)T);
        const float ang = (float)t * freq[i];
        const float co = cosf(ang), si = sign * sinf(ang);
        float *v = q + r * (size_t)nh * hd + 2 * (size_t)i;
        for (int h = 0; h < nh; h++, v += hd) {
            const float a = v[0], b = v[1];
            v[0] = a * co - b * si;
            v[1] = a * si + b * co;
        }
        v = k + r * (size_t)nkv * hd + 2 * (size_t)i;
        for (int h = 0; h < nkv; h++, v += hd) {
            const float a = v[0], b = v[1];
            v[0] = a * co - b * si;
            v[1] = a * si + b * co;
        }
    }
}

static void rope_qk_apply(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta, float sign)
{
    const size_t n_rp = (size_t)(B > 0 ? B : 0) * (size_t)(T > 0 ? T : 0) * (size_t)(hd > 1 ? hd / 2 : 0);
    if (n_rp == 0 || (nh <= 0 && nkv <= 0)) return;
    const float *freq = rope_freqs(hd, theta);
    rope_qk_k<<<ew_blocks(n_rp), EW_THREADS, 0, g_cu.compute>>>(q, k, freq, n_rp, T, nh > 0 ? nh : 0,
                                                               nkv > 0 ? nkv : 0, hd, sign);
    LAUNCH_CHECK();
}

void cu_rope_forward(float *x, int B, int T, int nh, int hd, float theta)
{
    rope_apply(x, B, T, nh, hd, theta, 1.0f);
}

void cu_rope_backward(float *dx, int B, int T, int nh, int hd, float theta)
{
    rope_apply(dx, B, T, nh, hd, theta, -1.0f);
}

void cu_rope_qk_forward(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta)
{
    rope_qk_apply(q, k, B, T, nh, nkv, hd, theta, 1.0f);
}

void cu_rope_qk_backward(float *dq, float *dk, int B, int T, int nh, int nkv, int hd, float theta)
{
    rope_qk_apply(dq, dk, B, T, nh, nkv, hd, theta, -1.0f);
}
