/* Linear layers on cuBLAS.
 *
 * Our matrices are row-major; cuBLAS is column-major. A row-major [r, c] matrix
 * with leading dimension c IS its transpose [c, r] in column-major, with no
 * copy. So every product below is written for the transposes:
 *
 *   forward   y[N,out]  = x[N,in] W[out,in]^T
 *             col-major: y^T[out,N] = W[out,in] x^T[in,N]; W's storage read column-major
 *             is W^T[in,out] (ld in), so op(A) = T; x's storage is x^T[in,N] (ld in)
 *             -> gemm(T, N, m=out, n=N, k=in, A=W lda=in, B=x ldb=in, C=y ldc=out)
 *   dx        dx[N,in] += dy[N,out] W[out,in]
 *             col-major: dx^T[in,N] += W^T[in,out] dy^T[out,N]
 *             -> gemm(N, N, m=in, n=N, k=out, A=W lda=in, B=dy ldb=out, C=dx ldc=in, beta 1)
 *   dw        dw[out,in] += dy^T[out,N] x[N,in]
 *             col-major: dw^T[in,out] += x^T[in,N] dy[N,out]
 *             -> gemm(N, T, m=in, n=out, k=N, A=x lda=in, B=dy ldb=out, C=dw ldc=in, beta 1)
 *
 * Precision (set_math) picks the cuBLAS compute type; inputs and outputs stay
 * fp32 in every mode, so the engine's buffers never change type. */
#include "cuda_internal.h"

void cu_set_math(StemMath math)
{
    switch (math) {
    case STEM_MATH_TF32: g_cu.gemm_compute = CUBLAS_COMPUTE_32F_FAST_TF32; break;
    case STEM_MATH_BF16: g_cu.gemm_compute = CUBLAS_COMPUTE_32F_FAST_16BF; break;
    default: g_cu.gemm_compute = CUBLAS_COMPUTE_32F; break;   /* exact fp32, the parity reference */
    }
}

/* C[m,n] (col-major) = alpha op(A) op(B) + beta C, all fp32 in memory. */
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc)
{
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(g_cu.blas, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
                              &beta, C, CUDA_R_32F, ldc, g_cu.gemm_compute, CUBLAS_GEMM_DEFAULT));
    if (g_cu.debug_sync) CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
}

void cu_matmul_forward(float *y, const float *x, const float *w, int N, int in, int out, int accumulate)
{
    if (N <= 0 || out <= 0) return;
    /* in == 0 is an empty sum: cuBLAS then only scales C by beta, as the CPU does */
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, w, in > 0 ? in : 1, x, in > 0 ? in : 1,
         accumulate ? 1.0f : 0.0f, y, out);
}

void cu_matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                        int N, int in, int out)
{
    if (in <= 0) return;
    if (dx && N > 0) gemm(CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, w, in, dy, out > 0 ? out : 1, 1.0f, dx, in);
    if (dw && out > 0) gemm(CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, x, in, dy, out, 1.0f, dw, in);
}
