/* Causal self-attention with grouped-query heads, materialized as on the CPU
 * (kernels/cpu/ops.c): the forward saves the softmax probabilities
 * att[B, nh, T, T] (upper triangle written as 0) and the backward reads them.
 *
 * Layouts: q, out, dq [B*T, nh*hd]; k, v, dk, dv [B*T, nkv*hd]; query head h
 * reads kv head h / (nh / nkv); scale = 1 / sqrt(hd).
 *
 * Plain kernels, no tensor cores: one block per query row (b, h, t) for the
 * forward and for dQ, one block per key row (b, kv head, u) for dK and dV. The
 * key-row kernel sums over the query heads of its group and over t itself, so
 * dK/dV need no atomics and are OVERWRITTEN, as the contract says. Scores of one
 * row live in shared memory: T floats (T up to ~11,000 fits the default 48 KiB;
 * more asks for the opt-in limit). Work is O(T^2 hd) like the CPU's. */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>

#define ATT_THREADS 128   /* 4 warps per query row */

/* Dynamic shared memory for a row kernel: hd + T floats. Up to 46 KiB fits
 * the default 48 KiB per block beside the kernels' static 128-byte `red`;
 * more needs the per-kernel opt-in (up to ~227 KiB on sm_90). */
static size_t row_smem(int T, int hd, const void *kernel)
{
    const size_t static_reserve = 1024;
    size_t bytes = sizeof(float) * ((size_t)hd + (size_t)T);
    if (bytes > 46 * 1024) {
        if (bytes + static_reserve > (size_t)g_cu.max_smem_optin) {
            fprintf(stderr, "stem: cuda error: attention: T=%d, hd=%d need %zu bytes of shared memory, "
                    "the device allows %d\n", T, hd, bytes, g_cu.max_smem_optin);
            abort();
        }
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    }
    return bytes;
}

#define GRID_YZ_MAX 65535   /* gridDim.y and gridDim.z limit */

static void check_heads(int nh, int nkv)
{
    if (nh > GRID_YZ_MAX) {   /* heads are grid.y */
        fprintf(stderr, "stem: cuda error: attention: nh=%d heads exceed the grid limit %d\n", nh, GRID_YZ_MAX);
        abort();
    }
    if (nkv > 0 && nh % nkv == 0) return;
    fprintf(stderr, "stem: cuda error: attention: nh=%d is not a multiple of nkv=%d\n", nh, nkv);
    abort();
}

/* grid (T, nh, B): query row t of head h in batch b.
 *   s[u] = scale q_t . k_u (u <= t), p = softmax(s), att row = p (0 for u > t),
 *   out_t = sum_u p[u] v_u. */
__global__ void attn_fwd_k(float *out, float *att, const float *q, const float *k, const float *v,
                           int T, int nh, int nkv, int hd, float scale)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    float *qrow = sm;        /* [hd] */
    float *s = sm + hd;      /* [T], entries 0..t used */
    const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kh = h / (nh / nkv);
    const size_t qst = (size_t)nh * hd, kst = (size_t)nkv * hd;
    const float *qr = q + ((size_t)b * T + t) * qst + (size_t)h * hd;
    const float *kb = k + (size_t)b * T * kst + (size_t)kh * hd;
    const float *vb = v + (size_t)b * T * kst + (size_t)kh * hd;
    float *arow = att + (((size_t)b * nh + h) * T + t) * (size_t)T;
    float *orow = out + ((size_t)b * T + t) * qst + (size_t)h * hd;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;

    for (int d = tid; d < hd; d += blockDim.x) qrow[d] = qr[d];
    __syncthreads();

    /* scores: one warp per key, lanes across hd (coalesced key reads) */
    for (int u = warp; u <= t; u += nwarps) {
        const float *kr = kb + (size_t)u * kst;
        float acc = 0.0f;
        for (int d = lane; d < hd; d += 32) acc += qrow[d] * kr[d];
        acc = warp_sum(acc);
        if (lane == 0) s[u] = acc * scale;
    }
    __syncthreads();

    float mx = -INFINITY;
    for (int u = tid; u <= t; u += blockDim.x) mx = fmaxf(mx, s[u]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int u = tid; u <= t; u += blockDim.x) {
        const float e = expf(s[u] - mx);
        s[u] = e;
        sum += e;
    }
    sum = block_sum(sum, red);   /* its barriers also publish the s[u] writes */
    const float inv = 1.0f / sum;
    for (int u = tid; u < T; u += blockDim.x) {
        const float p = u <= t ? s[u] * inv : 0.0f;
        if (u <= t) s[u] = p;
        arow[u] = p;
    }
    __syncthreads();

    /* out_t[d] = sum_u p[u] v_u[d]: threads across d (coalesced value reads) */
    for (int d = tid; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int u = 0; u <= t; u++) acc += s[u] * vb[(size_t)u * kst + d];
        orow[d] = acc;
    }
}

void cu_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int nh, int nkv, int hd)
{
    if (B <= 0 || T <= 0 || nh <= 0 || hd <= 0) return;
    check_heads(nh, nkv);
    const size_t smem = row_smem(T, hd, (const void *)attn_fwd_k);
    /* grid.z = batch is limited to 65535: larger B runs in slices of batches */
    for (int b0 = 0; b0 < B; b0 += GRID_YZ_MAX) {
        const int nb = B - b0 < GRID_YZ_MAX ? B - b0 : GRID_YZ_MAX;
        const size_t qo = (size_t)b0 * T * nh * hd, ko = (size_t)b0 * T * nkv * hd, ao = (size_t)b0 * nh * T * T;
        dim3 grid(T, nh, nb);
        attn_fwd_k<<<grid, ATT_THREADS, smem, g_cu.compute>>>(out + qo, att + ao, q + qo, k + ko, v + ko, T, nh,
                                                               nkv, hd, 1.0f / sqrtf((float)hd));
        LAUNCH_CHECK();
    }
}

/* grid (T, nh, B): query row t of head h.
 *   dP[u] = dO_t . v_u, dS[u] = P[u] (dP[u] - sum_u' P[u'] dP[u']) scale (0 for u > t)
 *   dS row -> scratch (read by the key-row kernel), dQ_t = sum_u dS[u] k_u (overwritten). */
__global__ void attn_bwd_q_k(float *dq, float *scratch, const float *dout, const float *att, const float *k,
                             const float *v, int T, int nh, int nkv, int hd, float scale)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    float *dorow = sm;       /* [hd] */
    float *ds = sm + hd;     /* [T] */
    const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kh = h / (nh / nkv);
    const size_t qst = (size_t)nh * hd, kst = (size_t)nkv * hd;
    const size_t arow_off = (((size_t)b * nh + h) * T + t) * (size_t)T;
    const float *prow = att + arow_off;
    float *srow = scratch + arow_off;
    const float *dor = dout + ((size_t)b * T + t) * qst + (size_t)h * hd;
    const float *kb = k + (size_t)b * T * kst + (size_t)kh * hd;
    const float *vb = v + (size_t)b * T * kst + (size_t)kh * hd;
    float *dqr = dq + ((size_t)b * T + t) * qst + (size_t)h * hd;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;

    for (int d = tid; d < hd; d += blockDim.x) dorow[d] = dor[d];
    __syncthreads();

    for (int u = warp; u <= t; u += nwarps) {
        const float *vr = vb + (size_t)u * kst;
        float acc = 0.0f;
        for (int d = lane; d < hd; d += 32) acc += dorow[d] * vr[d];
        acc = warp_sum(acc);
        if (lane == 0) ds[u] = acc;
    }
    __syncthreads();

    float dot = 0.0f;
    for (int u = tid; u <= t; u += blockDim.x) dot += prow[u] * ds[u];
    dot = block_sum(dot, red);
    for (int u = tid; u < T; u += blockDim.x) {
        const float g = u <= t ? prow[u] * (ds[u] - dot) * scale : 0.0f;
        if (u <= t) ds[u] = g;
        srow[u] = g;
    }
    __syncthreads();

    for (int d = tid; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int u = 0; u <= t; u++) acc += ds[u] * kb[(size_t)u * kst + d];
        dqr[d] = acc;
    }
}

/* grid (T, nkv, B): key row u of kv head kh. Threads across d.
 *   dV_u = sum_{h in group} sum_{t >= u} P_h[t,u] dO_h,t
 *   dK_u = sum_{h in group} sum_{t >= u} dS_h[t,u] q_h,t      (both overwritten) */
__global__ void attn_bwd_kv_k(float *dk, float *dv, const float *scratch, const float *dout, const float *att,
                              const float *q, int T, int nh, int nkv, int hd)
{
    const int u = blockIdx.x, kh = blockIdx.y, b = blockIdx.z;
    const int grp = nh / nkv;
    const size_t qst = (size_t)nh * hd, kst = (size_t)nkv * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float dk_acc = 0.0f, dv_acc = 0.0f;
        for (int g = 0; g < grp; g++) {
            const int h = kh * grp + g;
            const size_t head_off = ((size_t)b * nh + h) * T * (size_t)T;   /* att/scratch of (b, h) */
            for (int t = u; t < T; t++) {
                const size_t a = head_off + (size_t)t * T + u;             /* same for every thread: broadcast */
                const size_t qi = ((size_t)b * T + t) * qst + (size_t)h * hd + d;
                dv_acc += att[a] * dout[qi];
                dk_acc += scratch[a] * q[qi];
            }
        }
        const size_t ki = ((size_t)b * T + u) * kst + (size_t)kh * hd + d;
        dk[ki] = dk_acc;
        dv[ki] = dv_acc;
    }
}

void cu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *att, const float *q, const float *k, const float *v,
                           int B, int T, int nh, int nkv, int hd)
{
    if (B <= 0 || T <= 0 || nh <= 0 || hd <= 0) return;
    check_heads(nh, nkv);
    const size_t smem = row_smem(T, hd, (const void *)attn_bwd_q_k);
    /* threads: hd rounded up to whole warps, at most 256 (the kernel loops over the rest) */
    int kv_threads = (hd + 31) / 32 * 32;
    if (kv_threads > 256) kv_threads = 256;
    /* grid.z = batch is limited to 65535: larger B runs in slices of batches */
    for (int b0 = 0; b0 < B; b0 += GRID_YZ_MAX) {
        const int nb = B - b0 < GRID_YZ_MAX ? B - b0 : GRID_YZ_MAX;
        const size_t qo = (size_t)b0 * T * nh * hd, ko = (size_t)b0 * T * nkv * hd, ao = (size_t)b0 * nh * T * T;
        dim3 qgrid(T, nh, nb);
        attn_bwd_q_k<<<qgrid, ATT_THREADS, smem, g_cu.compute>>>(dq + qo, scratch + ao, dout + qo, att + ao, k + ko,
                                                                  v + ko, T, nh, nkv, hd, 1.0f / sqrtf((float)hd));
        LAUNCH_CHECK();
        dim3 kvgrid(T, nkv, nb);
        attn_bwd_kv_k<<<kvgrid, kv_threads, 0, g_cu.compute>>>(dk + ko, dv + ko, scratch + ao, dout + qo, att + ao,
                                                                q + qo, T, nh, nkv, hd);
        LAUNCH_CHECK();
    }
}
