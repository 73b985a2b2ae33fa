/* Row gathers and scatters (embedding, offloaded STEM rows) and the softmax
 * cross-entropy loss (semantics: kernels/cpu/ops.c and kernels/kernels.h). */
#include "cuda_internal.h"

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------------ row gather / scatter */

/* out[i, f] = src[idx[i] * stride + f] for i < N, f < F. With stride = F this is
 * the embedding lookup. One thread per output element: consecutive threads read
 * consecutive floats of one source row. */
__global__ void gather_k(float *out, const float *src, const int32_t *idx, size_t total, int F, size_t stride)
{
    GRID_STRIDE(e, total) {
        const size_t i = e / (size_t)F, f = e % (size_t)F;
        out[e] = src[(size_t)idx[i] * stride + f];
    }
}

/* dst[idx[i] * stride + f] += src[i, f]. Repeated ids add with atomics, so the
 * order of the additions (and the last bits) may vary; kernels.h allows it. */
__global__ void scatter_k(float *dst, const float *src, const int32_t *idx, size_t total, int F, size_t stride)
{
    GRID_STRIDE(e, total) {
        const size_t i = e / (size_t)F, f = e % (size_t)F;
        atomicAdd(&dst[(size_t)idx[i] * stride + f], src[e]);
    }
}

void cu_gather_rows(float *out, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    const size_t total = (size_t)(N > 0 ? N : 0) * (size_t)(F > 0 ? F : 0);
    if (!total) return;
    gather_k<<<ew_blocks(total), EW_THREADS, 0, g_cu.compute>>>(out, src, idx, total, F, stride);
    LAUNCH_CHECK();
}

void cu_scatter_rows(float *dst, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    const size_t total = (size_t)(N > 0 ? N : 0) * (size_t)(F > 0 ? F : 0);
    if (!total) return;
    scatter_k<<<ew_blocks(total), EW_THREADS, 0, g_cu.compute>>>(dst, src, idx, total, F, stride);
    LAUNCH_CHECK();
}

/* out[N,D] = table[ids[i], :] */
void cu_embedding_forward(float *out, const float *table, const int32_t *ids, int N, int D)
{
    cu_gather_rows(out, table, ids, N, D, (size_t)(D > 0 ? D : 0));
}

/* dtable[ids[i], :] += dout[i, :] */
void cu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D)
{
    cu_scatter_rows(dtable, dout, ids, N, D, (size_t)(D > 0 ? D : 0));
}

/* ------------------------------------------------------------------ cross-entropy */

#define CE_THREADS 256   /* one block per row of V logits */

/* Row softmax in place-safe order, and the row's loss from log-sum-exp:
 *   loss = max + log(sum exp(l - max)) - l[target]   (0 for an ignored row)
 * probs may alias logits: the target logit is read, and every logit is read
 * for the max, before the first barrier; after it each thread overwrites only
 * the elements it alone reads. */
__global__ void ce_fwd_k(float *probs, const float *logits, const int32_t *targets, float *row_loss, int V)
{
    __shared__ float red[32];
    const size_t row = blockIdx.x;
    const float *l = logits + row * (size_t)V;
    float *pr = probs + row * (size_t)V;
    const int t = targets[row];
    float lt = 0.0f;
    if (threadIdx.x == 0 && t >= 0) lt = l[t];   /* used by thread 0 only */

    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, l[j]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float e = expf(l[j] - mx);
        pr[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    if (threadIdx.x == 0) row_loss[row] = t >= 0 ? mx + logf(sum) - lt : 0.0f;
    const float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) pr[j] *= inv;
}

/* Mean of the valid rows' losses, summed in double like the CPU; one block.
 * result[0] = the mean (0 when no row is valid). */
__global__ void ce_mean_k(double *result, const float *row_loss, const int32_t *targets, int N)
{
    __shared__ double redd[32];
    __shared__ int redi[32];
    double s = 0.0;
    int cnt = 0;
    for (int i = threadIdx.x; i < N; i += blockDim.x)
        if (targets[i] >= 0) { s += (double)row_loss[i]; cnt++; }
    s = block_sum(s, redd);
    cnt = block_sum(cnt, redi);
    if (threadIdx.x == 0) *result = cnt ? s / (double)cnt : 0.0;
}

float cu_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int N, int V)
{
    double mean = 0.0;
    if (N > 0 && V > 0) {
        float *row_loss = (float *)stem_cuda_scratch(SCRATCH_CE_ROWLOSS, sizeof(float) * (size_t)N);
        double *result = (double *)stem_cuda_scratch(SCRATCH_CE_RESULT, 2 * sizeof(double));
        ce_fwd_k<<<N, CE_THREADS, 0, g_cu.compute>>>(probs, logits, targets, row_loss, V);
        LAUNCH_CHECK();
        ce_mean_k<<<1, CE_THREADS, 0, g_cu.compute>>>(result, row_loss, targets, N);
        LAUNCH_CHECK();
        CUDA_CHECK(cudaMemcpyAsync(&mean, result, sizeof mean, cudaMemcpyDeviceToHost, g_cu.compute));
    }
    /* a scalar-returning op waits for everything queued before it */
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
    return (float)mean;
}

/* valid[0] = number of rows with target >= 0; one block. Stays on the device:
 * the backward kernel reads it, so the host never waits. */
__global__ void ce_count_k(int *valid, const int32_t *targets, int N)
{
    __shared__ int red[32];
    int cnt = 0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) cnt += targets[i] >= 0;
    cnt = block_sum(cnt, red);
    if (threadIdx.x == 0) *valid = cnt;
}

/* dlogits = (probs - onehot(target)) / n_valid, 0 rows for ignored targets;
 * overwritten; may alias probs (each element is read, then written, by one
 * thread). __fmul_rn keeps the product unfused so the target element rounds
 * as the CPU's (p * inv) - inv. */
__global__ void ce_bwd_k(float *dlogits, const float *probs, const int32_t *targets, const int *valid, int V)
{
    const size_t row = blockIdx.x;
    const float *pr = probs + row * (size_t)V;
    float *d = dlogits + row * (size_t)V;
    const int t = targets[row];
    const int nv = *valid;
    const float inv = nv ? 1.0f / (float)nv : 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        if (t < 0) { d[j] = 0.0f; continue; }
        const float g = __fmul_rn(pr[j], inv);
        d[j] = j == t ? g - inv : g;
    }
}

void cu_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int N, int V)
{
    if (N <= 0 || V <= 0) return;
    /* the count shares the result slot (after the forward's double) */
    int *valid = (int *)((double *)stem_cuda_scratch(SCRATCH_CE_RESULT, 2 * sizeof(double)) + 1);
    ce_count_k<<<1, CE_THREADS, 0, g_cu.compute>>>(valid, targets, N);
    LAUNCH_CHECK();
    ce_bwd_k<<<N, CE_THREADS, 0, g_cu.compute>>>(dlogits, probs, targets, valid, V);
    LAUNCH_CHECK();
}
