/* The CPU backend: the kernels/kernels.h table over host memory. The ops are
 * the functions of ops.c themselves, so the CPU path through the table is
 * bit-identical to calling them directly. Staging has no second queue here:
 * upload_async is a plain memcpy, fences are no-ops, and the copy time is
 * all stall (nothing overlaps on the CPU). */
#include "kernels/kernels.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double copy_ms_total;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *cpu_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 4095) & ~(size_t)4095;
    if (posix_memalign(&p, 4096, bytes)) return NULL;
#ifdef MADV_HUGEPAGE
    /* big arenas: fewer page faults, which are slow on these machines */
    if (bytes >= (4u << 20)) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

static void cpu_free(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { if (bytes && dst != src) memmove(dst, src, bytes); }
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_synchronize(void) {}
static void cpu_set_math(StemMath math) { (void)math; }

static void cpu_upload_async(void *dst, const void *src, size_t bytes)
{
    double t0 = now_ms();
    memcpy(dst, src, bytes);
    copy_ms_total += now_ms() - t0;
}

static void cpu_fence(int fence) { (void)fence; }

static void cpu_copy_stats(double *copy_ms, double *stall_ms)
{
    if (copy_ms) *copy_ms = copy_ms_total;
    if (stall_ms) *stall_ms = copy_ms_total;
}

static void cpu_gather_rows(float *out, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    for (int i = 0; i < N; i++) memcpy(out + (size_t)i * F, src + (size_t)idx[i] * stride, sizeof(float) * (size_t)F);
}

static void cpu_scatter_rows(float *dst, const float *src, const int32_t *idx, int N, int F, size_t stride)
{
    /* position order: the same sums as op_embedding_backward */
    for (int i = 0; i < N; i++) {
        float *d = dst + (size_t)idx[i] * stride;
        const float *s = src + (size_t)i * F;
        for (int f = 0; f < F; f++) d[f] += s[f];
    }
}

static const StemKernels cpu_kernels = {
    .abi = STEM_KERNELS_ABI,
    .name = "cpu",
    .device_name = "CPU",
    .is_host = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .set_math = cpu_set_math,
    .host_alloc = cpu_alloc,
    .host_free = cpu_free,
    .upload_async = cpu_upload_async,
    .fence_record = cpu_fence,
    .compute_wait = cpu_fence,
    .host_wait = cpu_fence,
    .copy_stats = cpu_copy_stats,
    .matmul_forward = op_matmul_forward,
    .matmul_backward = op_matmul_backward,
    .rmsnorm_forward = op_rmsnorm_forward,
    .rmsnorm_backward = op_rmsnorm_backward,
    .rope_forward = op_rope_forward,
    .rope_backward = op_rope_backward,
    .attention_forward = op_attention_forward,
    .attention_backward = op_attention_backward,
    .swiglu_forward = op_swiglu_forward,
    .swiglu_backward = op_swiglu_backward,
    .embedding_forward = op_embedding_forward,
    .embedding_backward = op_embedding_backward,
    .add_inplace = op_add_inplace,
    .crossentropy_forward = op_crossentropy_forward,
    .crossentropy_backward = op_crossentropy_backward,
    .adamw = op_adamw,
    .sumsq = op_sumsq,
    .scale = op_scale,
    .gather_rows = cpu_gather_rows,
    .scatter_rows = cpu_scatter_rows,
    .stem_ffn_forward = op_stem_ffn_forward,
    .stem_ffn_backward = op_stem_ffn_backward,
    .rope_qk_forward = op_rope_qk_forward,
    .rope_qk_backward = op_rope_qk_backward,
    .adamw_rows = op_adamw_rows,
};

const StemKernels *stem_kernels_cpu(void)
{
    return &cpu_kernels;
}
