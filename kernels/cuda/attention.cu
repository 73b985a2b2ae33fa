/* Causal self-attention with grouped-query heads, materialized as on the CPU
 * (kernels/cpu/ops.c): the forward saves the softmax probabilities
 * att[B, nh, T, T] (upper triangle written as 0) and the backward reads them.
 *
 * Layouts: q, out, dq [B*T, nh*hd]; k, v, dk, dv [B*T, nkv*hd]; query head h
 * reads kv head h / (nh / nkv); scale = 1 / sqrt(hd). dq, dk, dv are
 * OVERWRITTEN; the backward's scratch [B, nh, T, T] ends up holding dS.
 *
 * The O(T^2 hd) work runs as cuBLAS batched GEMMs (tensor cores in the tf32 /
 * bf16 math modes, like the linear layers); two small row kernels do the
 * causal softmax and its backward. One batch entry per matrix product of one
 * (batch, head): a batch index b*nh + h cannot be one stride into q
 * ([B, T, nh, hd]: b steps T*nh*hd, h steps hd) and GQA maps h to h / grp, so
 * the calls take device arrays of pointers, built by a tiny kernel into
 * scratch (SCRATCH_ATTN_PTRS): no host allocation, no upload, no sync.
 *
 * Causal skipping: the T query rows are cut into nblk row blocks of Tb rows
 * (row_blocks: 2 from T = 256 on).
 * Query block [t0, t1) only needs keys [0, t1), and key block [u0, u1) only
 * gets gradient from queries [u0, T): each block is its own batched GEMM over
 * the smaller extent, which does (nblk + 1) / (2 nblk) of the full T x T work.
 * The entries a block computes above the diagonal (u in (t, t1)) are never read
 * by the softmax kernels, which then write 0 to every u > t, so the later
 * GEMMs that read P or dS over a whole block see exact zeros there.
 *
 * Row-major <-> column-major (cuBLAS): a row-major [r, c] matrix with leading
 * dimension ld IS the column-major [c, r] matrix (its transpose) with the same
 * ld, no copy. Per (b, h), with qs = nh*hd, ks = nkv*hd:
 *   Q, dO, O, dQ   row-major [T, hd] ld qs   = col-major Q^T  [hd, T] ld qs
 *   K, V, dK, dV   row-major [T, hd] ld ks   = col-major K^T  [hd, T] ld ks
 *   S, P, dP, dS   row-major [T, T]  ld T    = col-major S^T  [T, T]  ld T
 * and the sub-matrix starting at row r0 (col c0) starts at ptr + r0*ld (+ c0).
 *
 * Forward, query block [t0, t1), nt = t1 - t0:
 *   S[t0:t1, 0:t1] = scale Q[t0:t1] K[0:t1]^T
 *     col-major: S^T[0:t1, t0:t1] (t1 x nt) = K[0:t1] (t1 x hd) . Q[t0:t1]^T (hd x nt)
 *     K's storage is K^T (hd x t1, ld ks), so op(A) = T; Q's storage is Q^T: op(B) = N
 *     -> gemm(T, N, m=t1, n=nt, k=hd, alpha=scale, A=K lda=ks, B=Q+t0*qs ldb=qs, C=S+t0*T ldc=T)
 *   O[t0:t1] = P[t0:t1, 0:t1] V[0:t1]
 *     col-major: O^T (hd x nt) = V^T (hd x t1) . P^T[0:t1, t0:t1] (t1 x nt); both stored so
 *     -> gemm(N, N, m=hd, n=nt, k=t1, A=V lda=ks, B=P+t0*T ldb=T, C=O+t0*qs ldc=qs)
 * Backward, query block [t0, t1):
 *   dP[t0:t1, 0:t1] = dO[t0:t1] V[0:t1]^T        (as S: Q -> dO, K -> V, alpha 1)
 *     -> gemm(T, N, m=t1, n=nt, k=hd, A=V lda=ks, B=dO+t0*qs ldb=qs, C=dS+t0*T ldc=T)
 *   dQ[t0:t1] = dS[t0:t1, 0:t1] K[0:t1]          (as O: V -> K, P -> dS)
 *     -> gemm(N, N, m=hd, n=nt, k=t1, A=K lda=ks, B=dS+t0*T ldb=T, C=dQ+t0*qs ldc=qs)
 * Backward, key block [u0, u1), nu = u1 - u0, kk = T - u0, per query head h
 * (dV_h, dK_h: row t at t*qs + h*hd, in scratch for GQA, dv/dk themselves for MHA):
 *   dV_h[u0:u1] = P[u0:T, u0:u1]^T dO[u0:T]
 *     col-major: dV^T (hd x nu) = dO^T[:, u0:T] (hd x kk) . P[u0:T, u0:u1] (kk x nu)
 *     dO's storage from row u0 is dO^T (hd x kk, ld qs): op(A) = N. P's storage from
 *     (u0, u0) read column-major is P[u0:T, u0:u1]^T (nu x kk, ld T): op(B) = T
 *     -> gemm(N, T, m=hd, n=nu, k=kk, A=dO+u0*qs lda=qs, B=P+u0*T+u0 ldb=T, C=dV_h+u0*qs ldc=qs)
 *   dK_h[u0:u1] = dS[u0:T, u0:u1]^T Q[u0:T]      (as dV: dO -> Q, P -> dS)
 * Rows t < u0 are skipped because P and dS are 0 for t < u.
 *
 * GQA: the query heads of a group write the same dK/dV rows, so batched entries
 * must not share an output (and a loop over the group with beta 1 would leave
 * batches of only B*nkv small products). With nkv < nh each query head writes
 * its own partial dK/dV [B*T, nh*hd] into scratch, and a small kernel sums the
 * grp partials of each kv head into dk/dv in head order, as the CPU does (no
 * atomics, overwrite). MHA writes dk/dv directly.
 *
 * Precision: inputs and outputs stay fp32; the GEMMs use g_cu.gemm_compute,
 * except that cuBLAS wants every pointer of a pointer-array call 16-byte
 * aligned in the fast (tf32/bf16) modes and cannot check device-side arrays,
 * so shapes whose pointers are not (hd or T*T not a multiple of 4, say) fall
 * back to exact fp32. The softmax is always fp32 (expf, as the CPU).
 *
 * Scratch (SCRATCH_ATTN_PTRS, grows, never shrinks): the pointer arrays, 8 bytes
 * x 5 per (b, h) per row block forward and x 11 backward; with GQA also the two
 * partial gradients, 2 x B*T*nh*hd floats. */
#include "cuda_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#define BATCH_MAX 65535   /* matrices per batched GEMM call (slices beyond: old cuBLAS grid.z limits) */
#define ROW_WARPS 8       /* softmax kernels: one warp per row, 8 rows per block */

static void check_shape(int B, int T, int nh, int nkv, int hd)
{
    if (nkv <= 0 || nh % nkv != 0) {
        fprintf(stderr, "stem: cuda error: attention: nh=%d is not a multiple of nkv=%d\n", nh, nkv);
        abort();
    }
    /* cuBLAS sizes, leading dimensions and batch counts are ints */
    if ((long long)nh * hd > INT_MAX || (long long)B * nh > INT_MAX) {
        fprintf(stderr, "stem: cuda error: attention: B=%d T=%d nh=%d hd=%d exceed cuBLAS int sizes\n", B, T, nh, hd);
        abort();
    }
}

/* Row blocks for the causal skip. Measured on an H100 (fp32, nh=16, hd=64,
 * B=8 T=512 and B=2 T=2048): 2 blocks beat 1 by 15-19% forward and backward,
 * while 4, 8, 16 and 32 lose again (smaller GEMMs run less efficiently, and
 * each block is one more launch per product). So T >= 256 takes 2 blocks (3/4
 * of the full work) and shorter T one. Tb is a multiple of 32 so that the
 * block offsets t0*T, t0*qs, u0*(T+1) keep 16-byte alignment. */
static void row_blocks(int T, int *tb, int *nblk)
{
    const int n = T >= 256 ? 2 : 1;
    int b = (T + n - 1) / n;
    b = (b + 31) / 32 * 32;
    *tb = b;
    *nblk = (T + b - 1) / b;
}

/* One pointer array per operand: entry i of batch (i = b*J + j; query head
 * h = j*hmul + hadd, kv head kh = h / grp) in row block blk points at
 *   base + b*sb + h*sh + kh*skh + blk*Tb*srow. */
struct PtrSpec {
    const float *base;
    long long sb, sh, skh, srow;
};
#define MAX_SPECS 6
struct PtrSpecs {
    PtrSpec s[MAX_SPECS];
};

/* out[(blk*nspec + s)*batch + i] for blk < nblk, s < nspec, i < batch */
__global__ void attn_ptrs_k(void **out, PtrSpecs specs, int nspec, int batch, int J, int hmul, int hadd, int grp,
                            int nblk, int Tb)
{
    const size_t n = (size_t)nblk * nspec * batch;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % (size_t)batch);
        const size_t rest = idx / (size_t)batch;
        const int s = (int)(rest % (size_t)nspec), blk = (int)(rest / (size_t)nspec);
        const long long b = i / J, j = i % J;
        const long long h = j * hmul + hadd, kh = h / grp;
        const PtrSpec p = specs.s[s];
        out[idx] = (void *)(p.base + b * p.sb + h * p.sh + kh * p.skh + (long long)blk * Tb * p.srow);
    }
}

/* Fills nblk*nspec*batch pointers at out; returns whether all of them are
 * 16-byte aligned (every base aligned, every step a multiple of 4 floats). */
static int build_ptrs(void **out, const PtrSpec *specs, int nspec, int batch, int J, int hmul, int hadd, int grp,
                      int nblk, int Tb)
{
    PtrSpecs ps = {};
    int aligned = 1;
    for (int s = 0; s < nspec; s++) {
        ps.s[s] = specs[s];
        const PtrSpec &p = specs[s];
        if (((uintptr_t)p.base & 15) || (p.sb & 3) || (p.sh & 3) || (p.skh & 3) || (((long long)Tb * p.srow) & 3))
            aligned = 0;
    }
    const size_t n = (size_t)nblk * nspec * batch;
    attn_ptrs_k<<<ew_blocks(n), EW_THREADS, 0, g_cu.compute>>>(out, ps, nspec, batch, J, hmul, hadd, grp, nblk, Tb);
    LAUNCH_CHECK();
    return aligned;
}

/* C_i = alpha op(A_i) op(B_i) + beta C_i (column-major) for the `batch`
 * pointer triples, in slices of at most BATCH_MAX. */
static void gemm_batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, void **A,
                         int lda, void **Bm, int ldb, float beta, void **Cm, int ldc, int batch,
                         cublasComputeType_t compute)
{
    for (int c0 = 0; c0 < batch; c0 += BATCH_MAX) {
        const int cnt = batch - c0 < BATCH_MAX ? batch - c0 : BATCH_MAX;
        CUBLAS_CHECK(cublasGemmBatchedEx(g_cu.blas, ta, tb, m, n, k, &alpha, (const void *const *)(A + c0),
                                         CUDA_R_32F, lda, (const void *const *)(Bm + c0), CUDA_R_32F, ldb, &beta,
                                         Cm + c0, CUDA_R_32F, ldc, cnt, compute, CUBLAS_GEMM_DEFAULT));
    }
    if (g_cu.debug_sync) CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
}

static unsigned row_grid(size_t rows)
{
    size_t b = (rows + ROW_WARPS - 1) / ROW_WARPS;
    return (unsigned)(b < 1048576 ? b : 1048576);   /* grid-stride over the rest */
}

/* dk, dv [B*T, nkv*hd] = sum over the grp query heads of kv head kh of the
 * partials pdk, pdv [B*T, nh*hd] (heads kh*grp .. kh*grp + grp - 1), in head
 * order; n = B*T*nkv*hd. Consecutive threads read consecutive d (coalesced). */
__global__ void attn_group_sum_k(float *dk, float *dv, const float *pdk, const float *pdv, size_t n, int nkv,
                                 int hd, int grp)
{
    const size_t ks = (size_t)nkv * hd, qs = ks * grp;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / ks, c = i % ks, kh = c / hd, d = c % hd;
        const size_t src = r * qs + kh * grp * hd + d;
        float a = 0.0f, b = 0.0f;
        for (int g = 0; g < grp; g++) {
            a += pdk[src + (size_t)g * hd];
            b += pdv[src + (size_t)g * hd];
        }
        dk[i] = a;
        dv[i] = b;
    }
}

/* One warp per row r of att [rows, T] (rows = B*nh*T, query position t = r % T):
 * the scaled scores S[r, 0..t] (computed by the GEMM; entries past t are
 * garbage and never read) become softmax probabilities, and every u > t is
 * written as 0. As the CPU: mx = max, e = expf(s - mx), p = e * (1 / sum e).
 * u = 0 <= t always exists, so mx is finite and no -inf - -inf arises; lanes
 * holding no entry contribute -inf to the max and 0 to the sum. */
__global__ void attn_softmax_k(float *att, size_t rows, int T)
{
    const int lane = threadIdx.x & 31;
    const size_t nw = (size_t)gridDim.x * (blockDim.x >> 5);
    for (size_t r = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += nw) {
        const int t = (int)(r % (size_t)T);
        float *row = att + r * (size_t)T;
        float mx = -INFINITY;
        for (int u = lane; u <= t; u += 32) mx = fmaxf(mx, row[u]);
        mx = warp_max(mx);
        float sum = 0.0f;
        for (int u = lane; u <= t; u += 32) sum += expf(row[u] - mx);
        sum = warp_sum(sum);
        const float inv = 1.0f / sum;
        /* each lane reads then writes only its own entries */
        for (int u = lane; u < T; u += 32) row[u] = u <= t ? expf(row[u] - mx) * inv : 0.0f;
    }
}

/* One warp per row r: dP (in ds, from the GEMM) becomes
 *   dS[u] = P[u] (dP[u] - sum_{u' <= t} P[u'] dP[u']) scale   for u <= t, 0 above,
 * in the CPU's order of operations. Reads only u <= t of both rows. */
__global__ void attn_softmax_bwd_k(float *ds, const float *att, size_t rows, int T, float scale)
{
    const int lane = threadIdx.x & 31;
    const size_t nw = (size_t)gridDim.x * (blockDim.x >> 5);
    for (size_t r = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += nw) {
        const int t = (int)(r % (size_t)T);
        const float *p = att + r * (size_t)T;
        float *d = ds + r * (size_t)T;
        float dot = 0.0f;
        for (int u = lane; u <= t; u += 32) dot += p[u] * d[u];
        dot = warp_sum(dot);
        for (int u = lane; u < T; u += 32) d[u] = u <= t ? p[u] * (d[u] - dot) * scale : 0.0f;
    }
}

void cu_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int nh, int nkv, int hd)
{
    if (B <= 0 || T <= 0 || nh <= 0 || hd <= 0) return;
    check_shape(B, T, nh, nkv, hd);
    const int grp = nh / nkv, batch = B * nh;
    const long long qs = (long long)nh * hd, ks = (long long)nkv * hd, TT = (long long)T * T;
    int Tb, nblk;
    row_blocks(T, &Tb, &nblk);

    /* batch entry i = b*nh + h */
    enum { PK, PQ, PS, PV, PO, NSPEC };
    const PtrSpec specs[NSPEC] = {
        /* base          sb          sh       skh  srow */
        { k,             T * ks,     0,       hd,  0 },    /* K[0:t1]: from row 0 in every block */
        { q,             T * qs,     hd,      0,   qs },   /* Q[t0:t1] */
        { att,           nh * TT,    TT,      0,   T },    /* S/P rows t0.. of head (b, h) */
        { v,             T * ks,     0,       hd,  0 },    /* V[0:t1] */
        { out,           T * qs,     hd,      0,   qs },   /* O[t0:t1] */
    };
    void **ptrs = (void **)stem_cuda_scratch(SCRATCH_ATTN_PTRS, sizeof(void *) * (size_t)nblk * NSPEC * batch);
    const int aligned = build_ptrs(ptrs, specs, NSPEC, batch, nh, 1, 0, grp, nblk, Tb);
    const cublasComputeType_t compute = aligned ? g_cu.gemm_compute : CUBLAS_COMPUTE_32F;
#define P_(blk, s) (ptrs + ((size_t)(blk) * NSPEC + (s)) * batch)

    const float scale = 1.0f / sqrtf((float)hd);
    for (int blk = 0; blk < nblk; blk++) {
        const int t0 = blk * Tb, t1 = t0 + Tb < T ? t0 + Tb : T;
        gemm_batched(CUBLAS_OP_T, CUBLAS_OP_N, t1, t1 - t0, hd, scale, P_(blk, PK), (int)ks, P_(blk, PQ), (int)qs,
                     0.0f, P_(blk, PS), T, batch, compute);
    }
    const size_t rows = (size_t)batch * T;
    attn_softmax_k<<<row_grid(rows), ROW_WARPS * 32, 0, g_cu.compute>>>(att, rows, T);
    LAUNCH_CHECK();
    for (int blk = 0; blk < nblk; blk++) {
        const int t0 = blk * Tb, t1 = t0 + Tb < T ? t0 + Tb : T;
        gemm_batched(CUBLAS_OP_N, CUBLAS_OP_N, hd, t1 - t0, t1, 1.0f, P_(blk, PV), (int)ks, P_(blk, PS), T,
                     0.0f, P_(blk, PO), (int)qs, batch, compute);
    }
#undef P_
}

void cu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *att, const float *q, const float *k, const float *v,
                           int B, int T, int nh, int nkv, int hd)
{
    if (B <= 0 || T <= 0 || nh <= 0 || hd <= 0) return;
    check_shape(B, T, nh, nkv, hd);
    const int grp = nh / nkv, batch = B * nh;
    const long long qs = (long long)nh * hd, ks = (long long)nkv * hd, TT = (long long)T * T;
    int Tb, nblk;
    row_blocks(T, &Tb, &nblk);

    /* scratch: the pointer arrays, then (GQA) the per-query-head partials */
    enum { QV, QDO, QDS, QK, QDQ, NQ };
    enum { KDO, KP, KDV, KQ, KDS, KDK, NK };
    const size_t nq = (size_t)nblk * NQ * batch, nk = (size_t)nblk * NK * batch;
    const size_t ptr_bytes = (sizeof(void *) * (nq + nk) + 255) / 256 * 256;
    const size_t part = grp > 1 ? (size_t)B * T * qs : 0;   /* floats per partial gradient */
    char *scr = (char *)stem_cuda_scratch(SCRATCH_ATTN_PTRS, ptr_bytes + 2 * sizeof(float) * part);
    void **ptrs = (void **)scr;
    /* dK/dV targets: row t of query head h at t*qs + h*hd, in the partials or
     * (MHA: h == kh, qs == ks) directly in dk/dv */
    float *tdk = grp > 1 ? (float *)(scr + ptr_bytes) : dk;
    float *tdv = grp > 1 ? tdk + part : dv;

    /* batch entry i = b*nh + h for both sets; query blocks for the first,
     * key blocks for the second: row u0 of the [T, hd] operands and (u0, u0)
     * of the [T, T] ones (srow T + 1) */
    const PtrSpec qspecs[NQ] = {
        /* base          sb          sh       skh  srow */
        { v,             T * ks,     0,       hd,  0 },    /* V[0:t1] */
        { dout,          T * qs,     hd,      0,   qs },   /* dO[t0:t1] */
        { scratch,       nh * TT,    TT,      0,   T },    /* dP/dS rows t0.. */
        { k,             T * ks,     0,       hd,  0 },    /* K[0:t1] */
        { dq,            T * qs,     hd,      0,   qs },   /* dQ[t0:t1] */
    };
    const PtrSpec kspecs[NK] = {
        { dout,          T * qs,     hd,      0,   qs },   /* dO[u0:T] */
        { att,           nh * TT,    TT,      0,   T + 1 },/* P[u0:T, u0:u1] */
        { tdv,           T * qs,     hd,      0,   qs },   /* dV_h[u0:u1] */
        { q,             T * qs,     hd,      0,   qs },   /* Q[u0:T] */
        { scratch,       nh * TT,    TT,      0,   T + 1 },/* dS[u0:T, u0:u1] */
        { tdk,           T * qs,     hd,      0,   qs },   /* dK_h[u0:u1] */
    };
    int aligned = build_ptrs(ptrs, qspecs, NQ, batch, nh, 1, 0, grp, nblk, Tb);
    aligned &= build_ptrs(ptrs + nq, kspecs, NK, batch, nh, 1, 0, grp, nblk, Tb);
    const cublasComputeType_t compute = aligned ? g_cu.gemm_compute : CUBLAS_COMPUTE_32F;
#define PQ_(blk, s) (ptrs + ((size_t)(blk) * NQ + (s)) * batch)
#define PK_(blk, s) (ptrs + nq + ((size_t)(blk) * NK + (s)) * batch)

    /* dP = dO V^T into scratch, then dS in place */
    for (int blk = 0; blk < nblk; blk++) {
        const int t0 = blk * Tb, t1 = t0 + Tb < T ? t0 + Tb : T;
        gemm_batched(CUBLAS_OP_T, CUBLAS_OP_N, t1, t1 - t0, hd, 1.0f, PQ_(blk, QV), (int)ks, PQ_(blk, QDO), (int)qs,
                     0.0f, PQ_(blk, QDS), T, batch, compute);
    }
    const size_t rows = (size_t)batch * T;
    attn_softmax_bwd_k<<<row_grid(rows), ROW_WARPS * 32, 0, g_cu.compute>>>(scratch, att, rows, T,
                                                                             1.0f / sqrtf((float)hd));
    LAUNCH_CHECK();
    /* dQ = dS K (overwrite) */
    for (int blk = 0; blk < nblk; blk++) {
        const int t0 = blk * Tb, t1 = t0 + Tb < T ? t0 + Tb : T;
        gemm_batched(CUBLAS_OP_N, CUBLAS_OP_N, hd, t1 - t0, t1, 1.0f, PQ_(blk, QK), (int)ks, PQ_(blk, QDS), T,
                     0.0f, PQ_(blk, QDQ), (int)qs, batch, compute);
    }
    /* dV_h = P_h^T dO_h, dK_h = dS_h^T Q_h (overwrite) */
    for (int blk = 0; blk < nblk; blk++) {
        const int u0 = blk * Tb, u1 = u0 + Tb < T ? u0 + Tb : T;
        gemm_batched(CUBLAS_OP_N, CUBLAS_OP_T, hd, u1 - u0, T - u0, 1.0f, PK_(blk, KDO), (int)qs, PK_(blk, KP), T,
                     0.0f, PK_(blk, KDV), (int)qs, batch, compute);
        gemm_batched(CUBLAS_OP_N, CUBLAS_OP_T, hd, u1 - u0, T - u0, 1.0f, PK_(blk, KQ), (int)qs, PK_(blk, KDS), T,
                     0.0f, PK_(blk, KDK), (int)qs, batch, compute);
    }
    if (grp > 1) {
        const size_t n = (size_t)B * T * ks;
        attn_group_sum_k<<<ew_blocks(n), EW_THREADS, 0, g_cu.compute>>>(dk, dv, tdk, tdv, n, nkv, hd, grp);
        LAUNCH_CHECK();
    }
#undef PQ_
#undef PK_
}
