/* The one compute interface every backend implements (DESIGN §3 "Backends").
 *
 * A backend is a table of function pointers over its own memory: the CPU
 * backend (kernels/cpu/backend.c, always there) works on host memory; the CUDA
 * backend (kernels/cuda/, a shared module loaded at run time by engine/device.c)
 * works on device memory. The engine writes its forward/backward pass once
 * against this table.
 *
 * Semantics of every op are exactly those of kernels/cpu/ops.h (same argument
 * order, same shapes, same accumulate-vs-overwrite rules); the CPU backend IS
 * those functions, so the CPU path stays bit-identical. Every float / int32
 * pointer passed to an op is in the backend's memory (alloc), never a host
 * pointer, unless is_host is set (then the two are the same).
 *
 * Ordering: ops, copy, zero and the gather/scatter kernels run in order on one
 * "compute" queue (a CUDA stream); they may return before the work is done.
 * download, the scalar-returning ops (crossentropy_forward, sumsq) and
 * synchronize wait for everything queued before them. upload is synchronous
 * with respect to the host buffer (it may be reused when upload returns).
 *
 * Offload staging (engine/offload.c): a second, "copy" queue runs beside the
 * compute queue. upload_async enqueues a host->device copy there from memory
 * obtained with host_alloc (page-locked on CUDA); the host buffer must stay
 * untouched until a fence recorded after the copy has passed (host_wait).
 * compute_wait makes later compute wait for a fence without blocking the host.
 * Fences are numbered 0 .. STEM_KERNELS_FENCES-1 (double buffering uses two);
 * recording a fence again replaces its previous position.
 *
 * Clarifications (from writing both backends):
 *  - download and the scalar-returning ops wait for the compute queue only;
 *    synchronize waits for both queues.
 *  - Nothing makes the copy queue wait for compute: a writer of backend memory
 *    that queued compute may still read must synchronize first (engine/offload.c
 *    does, and only when compute touched the rows since the last drain).
 *  - A backend is used from one thread at a time (the CUDA module keeps host
 *    state: scratch buffers, timing events, the math mode).
 *  - set_math is process-wide and applies to every GEMM queued after it.
 *
 * Kernels know nothing but arrays: no model, no file, no GLib. */
#ifndef STEM_KERNELS_KERNELS_H
#define STEM_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Bumped whenever this struct changes: a module built against another version
 * is refused at load. */
#define STEM_KERNELS_ABI 2
#define STEM_KERNELS_FENCES 4

/* GEMM precision (set_math). fp32 is the default and the parity reference. */
typedef enum {
    STEM_MATH_FP32 = 0,   /* plain fp32 GEMMs */
    STEM_MATH_TF32 = 1,   /* tensor cores, fp32 in/out, TF32 inside (CUDA only; CPU: fp32) */
    STEM_MATH_BF16 = 2,   /* tensor cores, fp32 in/out, bf16 inside (CUDA only; CPU: fp32) */
} StemMath;

typedef struct StemKernels StemKernels;

struct StemKernels {
    int abi;                 /* STEM_KERNELS_ABI */
    const char *name;        /* "cpu" or "cuda" */
    char device_name[128];   /* e.g. "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or "CPU" */
    int is_host;             /* 1: backend memory is host memory (pointers interchangeable) */

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);                               /* NULL when out of memory */
    void (*free)(void *p);                                      /* NULL is fine */
    void (*upload)(void *dst, const void *src_host, size_t bytes);
    void (*download)(void *dst_host, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);     /* backend -> backend, queued */
    void (*zero)(void *p, size_t bytes);                        /* queued */
    void (*synchronize)(void);
    void (*set_math)(StemMath math);

    /* ---- offload staging: pinned host memory, copy queue, fences ---- */
    void *(*host_alloc)(size_t bytes);                          /* page-locked on CUDA */
    void (*host_free)(void *p);
    void (*upload_async)(void *dst, const void *src_host, size_t bytes);
    void (*fence_record)(int fence);   /* marks the copies enqueued so far */
    void (*compute_wait)(int fence);   /* later compute waits for the fence (host not blocked) */
    void (*host_wait)(int fence);      /* host blocks until the fence has passed */
    /* Cumulative milliseconds: time the copy queue spent copying, and time the
     * compute queue spent waiting for copies (stalls). Reading may synchronize.
     * Overlap achieved = 1 - stall / copy. CPU: copies are synchronous memcpy,
     * so stall == copy (no overlap). */
    void (*copy_stats)(double *copy_ms, double *stall_ms);

    /* ---- ops: see kernels/cpu/ops.h for the exact semantics ---- */
    void (*matmul_forward)(float *y, const float *x, const float *w, int N, int in, int out, int accumulate);
    void (*matmul_backward)(float *dx, float *dw, const float *dy, const float *x, const float *w,
                            int N, int in, int out);
    void (*rmsnorm_forward)(float *y, float *rstd, const float *x, const float *g, int N, int D, float eps);
    void (*rmsnorm_backward)(float *dx, float *dg, const float *dy, const float *x, const float *g,
                             const float *rstd, int N, int D);
    void (*rope_forward)(float *x, int B, int T, int nh, int hd, float theta);
    void (*rope_backward)(float *dx, int B, int T, int nh, int hd, float theta);
    void (*attention_forward)(float *out, float *att, const float *q, const float *k, const float *v,
                              int B, int T, int nh, int nkv, int hd);
    void (*attention_backward)(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                               const float *att, const float *q, const float *k, const float *v,
                               int B, int T, int nh, int nkv, int hd);
    void (*swiglu_forward)(float *m, const float *g, const float *u, size_t n);
    void (*swiglu_backward)(float *dg, float *du, const float *dm, const float *g, const float *u, size_t n);
    void (*embedding_forward)(float *out, const float *table, const int32_t *ids, int N, int D);
    void (*embedding_backward)(float *dtable, const float *dout, const int32_t *ids, int N, int D);
    void (*add_inplace)(float *y, const float *x, size_t n);
    float (*crossentropy_forward)(float *probs, const float *logits, const int32_t *targets, int N, int V);
    void (*crossentropy_backward)(float *dlogits, const float *probs, const int32_t *targets, int N, int V);
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float wd, int t, float grad_scale);
    double (*sumsq)(const float *x, size_t n);
    void (*scale)(float *x, size_t n, float s);

    /* ---- strided row gather / scatter (offloaded STEM rows) ----
     * gather_rows:  out[i, 0:F) = src[idx[i] * stride + 0:F)          for i < N
     * scatter_rows: dst[idx[i] * stride + 0:F) += src[i, 0:F)         for i < N
     * src / dst point at the first element of the wanted column block (e.g.
     * cache + j*F for STEM layer j in a cache of [slots, n_stem*F]). The CPU
     * scatter adds in position order (deterministic); CUDA may use atomics. */
    void (*gather_rows)(float *out, const float *src, const int32_t *idx, int N, int F, size_t stride);
    void (*scatter_rows)(float *dst, const float *src, const int32_t *idx, int N, int F, size_t stride);

    /* ---- fused ops (ABI 2): one pass where the composition takes two or more,
     * and no intermediate buffer. Exact semantics in kernels/cpu/ops.h; on the
     * CPU each is bit-identical to the composition it replaces. ----
     * stem_ffn_forward:  the STEM row gather fused with the SwiGLU gate
     *   m[i,f] = silu(g[i,f]) * rows[idx[i]*stride + f]            (OVERWRITE)
     * stem_ffn_backward: swiglu_backward fused with the row scatter; rows are
     *   read at ridx (e.g. cache slots), gradients added at gidx (e.g. unique tokens)
     *   dg[i,f] = dm[i,f] * u * silu'(g[i,f]),  u = rows[ridx[i]*rstride + f]   (OVERWRITE)
     *   drows[gidx[i]*gstride + f] += dm[i,f] * silu(g[i,f])      (ACCUMULATE; CPU
     *   in position order, CUDA may use atomics)
     * rope_qk_*: rope_* on q [B*T, nh*hd] and on k [B*T, nkv*hd] in one pass
     * adamw_rows: adamw over the W floats at p/m/v + idx[i]*stride with gradient
     *   g + i*W, for i < N (idx without repeats) */
    void (*stem_ffn_forward)(float *m, const float *g, const float *rows, const int32_t *idx, int N, int F,
                             size_t stride);
    void (*stem_ffn_backward)(float *dg, float *drows, const float *dm, const float *g, const float *rows,
                              const int32_t *ridx, size_t rstride, const int32_t *gidx, size_t gstride, int N, int F);
    void (*rope_qk_forward)(float *q, float *k, int B, int T, int nh, int nkv, int hd, float theta);
    void (*rope_qk_backward)(float *dq, float *dk, int B, int T, int nh, int nkv, int hd, float theta);
    void (*adamw_rows)(float *p, float *m, float *v, const float *g, const int32_t *idx, int N, int W, size_t stride,
                       float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale);
};

/* The CPU backend (kernels/cpu/backend.c). */
const StemKernels *stem_kernels_cpu(void);

/* Entry point of the CUDA module (libstem-cuda.so), looked up by name at run
 * time. Fills *out and returns 0, or returns -1 with a one-line reason in err
 * (no device, driver too old, ABI mismatch, ...). abi must be STEM_KERNELS_ABI. */
typedef int (*StemKernelsOpenFn)(int abi, StemKernels *out, char *err, size_t errlen);
#define STEM_KERNELS_CUDA_ENTRY "stem_kernels_cuda_open"

#endif
