/* Internal header of the CUDA backend (the .cu files of kernels/cuda): the module's global
 * state, error checks, launch helpers and the ops each file provides.
 *
 * Model of execution (kernels/kernels.h "Ordering"): every op is queued on ONE
 * compute stream, so ops never race with each other; upload/download and the
 * scalar-returning ops synchronize that stream. The copy stream only carries
 * upload_async copies, ordered against compute by the fence events.
 *
 * Errors: ops return void, so an error inside one cannot be reported to the
 * caller; a half-done training step would silently corrupt the model. Every
 * CUDA/cuBLAS call is checked and a failure prints "stem: cuda error: <what>
 * at file:line" and aborts. Kernel faults are asynchronous and surface at the
 * next synchronizing call; set STEM_CUDA_SYNC=1 to synchronize after every
 * launch and get the faulting op's own file:line. */
#ifndef STEM_KERNELS_CUDA_INTERNAL_H
#define STEM_KERNELS_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

struct CudaState {
    int ready;
    int debug_sync;                 /* STEM_CUDA_SYNC=1: sync after every launch */
    cudaStream_t compute;           /* all ops, copy, zero, download */
    cudaStream_t copy;              /* upload_async only */
    cublasHandle_t blas;            /* bound to `compute` */
    cublasComputeType_t gemm_compute;
    int max_smem_optin;             /* cudaDevAttrMaxSharedMemoryPerBlockOptin */
};
extern CudaState g_cu;

void stem_cuda_fail(const char *what, const char *detail, const char *file, int line);
#define CUDA_CHECK(call) do { cudaError_t e_ = (call); \
    if (e_ != cudaSuccess) stem_cuda_fail(#call, cudaGetErrorString(e_), __FILE__, __LINE__); } while (0)
#define CUBLAS_CHECK(call) do { cublasStatus_t s_ = (call); \
    if (s_ != CUBLAS_STATUS_SUCCESS) stem_cuda_fail(#call, cublasGetStatusString(s_), __FILE__, __LINE__); } while (0)
/* After every <<<>>> launch: a bad configuration fails here, at the launch. */
#define LAUNCH_CHECK() do { CUDA_CHECK(cudaGetLastError()); \
    if (g_cu.debug_sync) CUDA_CHECK(cudaStreamSynchronize(g_cu.compute)); } while (0)

/* Threads per block for the 1-D elementwise kernels, and a cap on the grid
 * (the kernels loop grid-stride over the rest, so any n works). */
#define EW_THREADS 256
static inline unsigned ew_blocks(size_t n)
{
    size_t b = (n + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(b < 65536 ? b : 65536);
}

/* Device scratch that grows on demand and is never shrunk (one per purpose;
 * see backend.cu). Growing synchronizes the compute stream first, because a
 * queued kernel may still read the old buffer. */
enum { SCRATCH_CE_ROWLOSS, SCRATCH_CE_RESULT, SCRATCH_SUMSQ, SCRATCH_COPY, SCRATCH_ROPE, SCRATCH_ATTN_PTRS,
       SCRATCH_COUNT };
void *stem_cuda_scratch(int slot, size_t bytes);

/* ---- ops (one family per file) ---- */
/* gemm.cu */
void cu_set_math(StemMath math);
void cu_matmul_forward(float *y, const float *x, const float *w, int N, int in, int out, int accumulate);
void cu_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                        int N, int in, int out);
/* norm_rope.cu */
void cu_rmsnorm_forward(float *y, float *rstd, const float *x, const float *g, int N, int D, float eps);
void cu_rmsnorm_backward(float *dx, float *dg, const float *dy, const float *x, const float *g,
                         const float *rstd, int N, int D);
void cu_rope_forward(float *x, int B, int T, int nh, int hd, float theta);
void cu_rope_backward(float *dx, int B, int T, int nh, int hd, float theta);
void cu_rope_qk_forward(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta);
void cu_rope_qk_backward(float *dq, float *dk, int B, int T, int nh, int nkv, int hd, float theta);
/* attention.cu */
void cu_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int nh, int nkv, int hd);
void cu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                           const float *att, const float *q, const float *k, const float *v,
                           int B, int T, int nh, int nkv, int hd);
/* pointwise.cu */
void cu_swiglu_forward(float *m, const float *g, const float *u, size_t n);
void cu_swiglu_backward(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n);
void cu_stem_ffn_forward(float *m, const float *g, const float *rows, const int32_t *idx, int N, int F, size_t stride);
void cu_stem_ffn_backward(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                          const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, int N, int F);
void cu_add_inplace(float *y, const float *x, size_t n);
void cu_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
              float beta2, float eps, float wd, int t, float grad_scale);
void cu_adamw_rows(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W, size_t stride,
                   float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale);
double cu_sumsq(const float *x, size_t n);
void cu_scale(float *x, size_t n, float s);
/* embed_loss.cu */
void cu_embedding_forward(float *out, const float *table, const int32_t *ids, int N, int D);
void cu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int D);
void cu_gather_rows(float *out, const float *src, const int32_t *idx, int N, int F, size_t stride);
void cu_scatter_rows(float *dst, const float *src, const int32_t *idx, int N, int F, size_t stride);
float cu_crossentropy_forward(float *probs, const float *logits, const int32_t *targets, int N, int V);
void cu_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int N, int V);

/* ---- block reductions (all threads of the block must call; blockDim.x a
 * multiple of 32, at most 1024). `red` is __shared__ scratch of 32 elements.
 * Every thread gets the result. The trailing __syncthreads lets the caller
 * reuse `red` right away. ---- */
template <typename T> __device__ __forceinline__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

template <typename T> __device__ __forceinline__ T block_sum(T v, T *red)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) red[wid] = v;
    __syncthreads();
    T r = lane < nw ? red[lane] : (T)0;
    r = warp_sum(r);
    __syncthreads();
    return r;
}

__device__ __forceinline__ float block_max(float v, float *red)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) red[wid] = v;
    __syncthreads();
    float r = lane < nw ? red[lane] : -INFINITY;
    r = warp_max(r);
    __syncthreads();
    return r;
}

#endif
