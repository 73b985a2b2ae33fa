/* The CUDA backend: the kernels/kernels.h table over device memory.
 * This file: the entry point, memory, the two streams, fences and copy timing.
 * The ops live in gemm.cu, norm_rope.cu, attention.cu, pointwise.cu and
 * embed_loss.cu (see cuda_internal.h for the execution and error model).
 *
 * Streams (both non-blocking, so the legacy default stream never serializes
 * them):
 *   compute  every op, copy, zero; upload and download go here too, followed by
 *            a stream sync: the contract makes them synchronous, and putting
 *            them on the compute stream orders them after the ops queued before.
 *   copy     upload_async only (host_alloc'd pinned memory -> device). Fences are
 *            events recorded on it; compute_wait makes the compute stream wait
 *            for one (cudaStreamWaitEvent: the host is not blocked). Nothing
 *            orders the copy stream after compute: kernels.h has no such fence,
 *            so a copy starts as soon as it is queued and overlaps the compute
 *            queued before it. The caller keeps copies away from memory that
 *            queued ops still read (engine/offload.c, rule R2).
 * Timing (copy_stats): a pair of timing events brackets every upload_async batch
 * on the copy stream (start at the first upload after a fence, end at the next
 * fence_record) and every compute_wait on the compute stream (the stall). The
 * pairs are read lazily: when copy_stats is called or when the ring of pairs is
 * full (then the oldest, long finished, is read). */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

CudaState g_cu;

void stem_cuda_fail(const char *what, const char *detail, const char *file, int line)
{
    fprintf(stderr, "stem: cuda error: %s: %s at %s:%d\n", what, detail, file, line);
    abort();
}

/* ------------------------------------------------------------------ scratch */

static void *scratch_ptr[SCRATCH_COUNT];
static size_t scratch_cap[SCRATCH_COUNT];

void *stem_cuda_scratch(int slot, size_t bytes)
{
    if (bytes <= scratch_cap[slot]) return scratch_ptr[slot];
    size_t cap = bytes < 4096 ? 4096 : bytes + bytes / 2;
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
    CUDA_CHECK(cudaFree(scratch_ptr[slot]));
    scratch_ptr[slot] = NULL;
    scratch_cap[slot] = 0;
    CUDA_CHECK(cudaMalloc(&scratch_ptr[slot], cap));
    scratch_cap[slot] = cap;
    return scratch_ptr[slot];
}

/* ------------------------------------------------------------------ memory */

static void *cu_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 256;   /* a valid, distinct pointer, as the CPU backend gives */
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();  /* out of memory is not sticky: clear it, report NULL */
        return NULL;
    }
    return p;
}

static void cu_free(void *p)
{
    if (!p) return;
    /* the memory may still be read by queued work; cudaFree waits for the
     * device, but be explicit about both streams */
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
    CUDA_CHECK(cudaStreamSynchronize(g_cu.copy));
    CUDA_CHECK(cudaFree(p));
}

static void cu_upload(void *dst, const void *src_host, size_t bytes)
{
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, g_cu.compute));
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));   /* the host buffer may be reused on return */
}

static void cu_download(void *dst_host, const void *src, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, g_cu.compute));
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
}

/* Overlapping ranges are allowed, as in the CPU backend (memmove): cudaMemcpy
 * does not define overlap (a device-to-device copy runs in parallel pieces, so
 * e.g. shifting a buffer by one float reads elements already overwritten). An
 * overlapping copy goes through scratch in pieces of at most COPY_PIECE bytes,
 * walking away from the side it writes: forward when dst < src, backward when
 * dst > src, so no piece reads bytes an earlier piece wrote. */
#define COPY_PIECE ((size_t)64 << 20)

static void cu_copy(void *dst, const void *src, size_t bytes)
{
    if (!bytes || dst == src) return;
    char *d = (char *)dst;
    const char *s = (const char *)src;
    if (d < s + bytes && s < d + bytes) {
        const size_t piece = bytes < COPY_PIECE ? bytes : COPY_PIECE;
        char *tmp = (char *)stem_cuda_scratch(SCRATCH_COPY, piece);
        for (size_t done = 0; done < bytes; done += piece) {
            const size_t len = bytes - done < piece ? bytes - done : piece;
            const size_t off = d < s ? done : bytes - done - len;
            CUDA_CHECK(cudaMemcpyAsync(tmp, s + off, len, cudaMemcpyDeviceToDevice, g_cu.compute));
            CUDA_CHECK(cudaMemcpyAsync(d + off, tmp, len, cudaMemcpyDeviceToDevice, g_cu.compute));
        }
        LAUNCH_CHECK();
        return;
    }
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_cu.compute));
    LAUNCH_CHECK();
}

static void cu_zero(void *p, size_t bytes)
{
    if (!bytes) return;
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, g_cu.compute));
    LAUNCH_CHECK();
}

static void cu_synchronize(void)
{
    CUDA_CHECK(cudaStreamSynchronize(g_cu.copy));
    CUDA_CHECK(cudaStreamSynchronize(g_cu.compute));
}

/* ------------------------------------------------------------------ staging */

static void *cu_host_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 256;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cu_host_free(void *p)
{
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(g_cu.copy));   /* a copy may still read it */
    CUDA_CHECK(cudaFreeHost(p));
}

static cudaEvent_t fences[STEM_KERNELS_FENCES];

/* Ring of timing-event pairs; kind says which total an elapsed time goes to. */
#define TIMER_PAIRS 64
enum { TIMER_COPY, TIMER_STALL };
typedef struct { cudaEvent_t start, end; int kind; } TimerPair;
static TimerPair timers[TIMER_PAIRS];
static int timer_head, timer_count;   /* pending pairs: [head, head + count) mod TIMER_PAIRS */
static double copy_ms_total, stall_ms_total;
static int batch_open;                 /* a copy batch's start event is recorded, its end not yet */
static int batch_slot;

static void timer_harvest_oldest(void)
{
    TimerPair *t = &timers[timer_head];
    float ms = 0.0f;
    CUDA_CHECK(cudaEventSynchronize(t->end));
    CUDA_CHECK(cudaEventElapsedTime(&ms, t->start, t->end));
    if (t->kind == TIMER_COPY) copy_ms_total += ms;
    else stall_ms_total += ms;
    timer_head = (timer_head + 1) % TIMER_PAIRS;
    timer_count--;
}

/* A free pair, appended to the pending queue (its events are recorded by the
 * caller right away). */
static int timer_acquire(int kind)
{
    /* Ring full: read the oldest pair (64 batches or waits ago, so finished).
     * Callers close any open copy batch before acquiring, so every pending
     * pair has both events recorded and the read cannot wait forever. */
    if (timer_count == TIMER_PAIRS) timer_harvest_oldest();
    int slot = (timer_head + timer_count) % TIMER_PAIRS;
    timer_count++;
    timers[slot].kind = kind;
    return slot;
}

static void cu_upload_async(void *dst, const void *src_host, size_t bytes)
{
    if (!bytes) return;
    if (!batch_open) {
        batch_slot = timer_acquire(TIMER_COPY);
        CUDA_CHECK(cudaEventRecord(timers[batch_slot].start, g_cu.copy));
        batch_open = 1;
    }
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, g_cu.copy));
}

static void close_batch(void)
{
    if (!batch_open) return;
    CUDA_CHECK(cudaEventRecord(timers[batch_slot].end, g_cu.copy));
    batch_open = 0;
}

static int fence_ok(int fence, const char *fn)
{
    if (fence >= 0 && fence < STEM_KERNELS_FENCES) return 1;
    fprintf(stderr, "stem: cuda error: %s: fence %d out of range [0, %d)\n", fn, fence, STEM_KERNELS_FENCES);
    abort();
}

static void cu_fence_record(int fence)
{
    fence_ok(fence, "fence_record");
    close_batch();
    CUDA_CHECK(cudaEventRecord(fences[fence], g_cu.copy));
}

static void cu_compute_wait(int fence)
{
    fence_ok(fence, "compute_wait");
    /* a batch that was never fenced must end before timing pairs are taken
     * behind it (the ring is read in order) */
    close_batch();
    int slot = timer_acquire(TIMER_STALL);
    CUDA_CHECK(cudaEventRecord(timers[slot].start, g_cu.compute));
    CUDA_CHECK(cudaStreamWaitEvent(g_cu.compute, fences[fence], 0));
    CUDA_CHECK(cudaEventRecord(timers[slot].end, g_cu.compute));
}

static void cu_host_wait(int fence)
{
    fence_ok(fence, "host_wait");
    CUDA_CHECK(cudaEventSynchronize(fences[fence]));
}

static void cu_copy_stats(double *copy_ms, double *stall_ms)
{
    close_batch();
    while (timer_count > 0) timer_harvest_oldest();
    if (copy_ms) *copy_ms = copy_ms_total;
    if (stall_ms) *stall_ms = stall_ms_total;
}

/* ------------------------------------------------------------------ entry */

__global__ void probe_kernel(int *flag) { if (flag) *flag = 1; }

static void fill_table(StemKernels *k, const cudaDeviceProp *prop)
{
    memset(k, 0, sizeof *k);
    k->abi = STEM_KERNELS_ABI;
    k->name = "cuda";
    snprintf(k->device_name, sizeof k->device_name, "%.100s (sm_%d%d, %d GiB)", prop->name, prop->major,
             prop->minor, (int)(prop->totalGlobalMem >> 30));
    k->is_host = 0;
    k->alloc = cu_alloc;
    k->free = cu_free;
    k->upload = cu_upload;
    k->download = cu_download;
    k->copy = cu_copy;
    k->zero = cu_zero;
    k->synchronize = cu_synchronize;
    k->set_math = cu_set_math;
    k->host_alloc = cu_host_alloc;
    k->host_free = cu_host_free;
    k->upload_async = cu_upload_async;
    k->fence_record = cu_fence_record;
    k->compute_wait = cu_compute_wait;
    k->host_wait = cu_host_wait;
    k->copy_stats = cu_copy_stats;
    k->matmul_forward = cu_matmul_forward;
    k->matmul_backward = cu_matmul_backward;
    k->rmsnorm_forward = cu_rmsnorm_forward;
    k->rmsnorm_backward = cu_rmsnorm_backward;
    k->rope_forward = cu_rope_forward;
    k->rope_backward = cu_rope_backward;
    k->attention_forward = cu_attention_forward;
    k->attention_backward = cu_attention_backward;
    k->swiglu_forward = cu_swiglu_forward;
    k->swiglu_backward = cu_swiglu_backward;
    k->embedding_forward = cu_embedding_forward;
    k->embedding_backward = cu_embedding_backward;
    k->add_inplace = cu_add_inplace;
    k->crossentropy_forward = cu_crossentropy_forward;
    k->crossentropy_backward = cu_crossentropy_backward;
    k->adamw = cu_adamw;
    k->sumsq = cu_sumsq;
    k->scale = cu_scale;
    k->gather_rows = cu_gather_rows;
    k->scatter_rows = cu_scatter_rows;
    k->stem_ffn_forward = cu_stem_ffn_forward;
    k->stem_ffn_backward = cu_stem_ffn_backward;
    k->rope_qk_forward = cu_rope_qk_forward;
    k->rope_qk_backward = cu_rope_qk_backward;
    k->adamw_rows = cu_adamw_rows;
}

static cudaDeviceProp g_prop;

/* Error paths of open report instead of aborting: the caller falls back to the
 * CPU. One line, no trailing newline. */
#define OPEN_FAIL(...) do { if (err && errlen) snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)
#define OPEN_CHECK(call, what) do { cudaError_t e_ = (call); \
    if (e_ != cudaSuccess) OPEN_FAIL("CUDA %s failed: %s", what, cudaGetErrorString(e_)); } while (0)

extern "C" __attribute__((visibility("default")))
int stem_kernels_cuda_open(int abi, StemKernels *out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (abi != STEM_KERNELS_ABI)
        OPEN_FAIL("kernel ABI mismatch: caller %d, CUDA module %d (rebuild the module)", abi, STEM_KERNELS_ABI);
    if (!out) OPEN_FAIL("no output table");
    if (g_cu.ready) {   /* opened before in this process: same streams, same table */
        fill_table(out, &g_prop);
        return 0;
    }

    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        OPEN_FAIL("no CUDA device: %s", cudaGetErrorString(e));
    }
    if (n <= 0) OPEN_FAIL("no CUDA device: cudaGetDeviceCount found none");

    /* device 0 of what CUDA_VISIBLE_DEVICES shows */
    OPEN_CHECK(cudaSetDevice(0), "cudaSetDevice(0)");
    OPEN_CHECK(cudaGetDeviceProperties(&g_prop, 0), "cudaGetDeviceProperties");
    if (g_prop.major < 8)
        OPEN_FAIL("CUDA device %s is sm_%d%d; this module is built for sm_80 and newer",
                  g_prop.name, g_prop.major, g_prop.minor);

    /* One tiny launch proves this module's code runs on this device and driver
     * (no "no kernel image" or PTX-too-new surprise at the first op). */
    int *flag = NULL, host_flag = 0;
    OPEN_CHECK(cudaMalloc(&flag, sizeof *flag), "cudaMalloc");
    probe_kernel<<<1, 1>>>(flag);
    e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpy(&host_flag, flag, sizeof host_flag, cudaMemcpyDeviceToHost);
    cudaFree(flag);
    if (e != cudaSuccess) OPEN_FAIL("CUDA test kernel failed on %s: %s", g_prop.name, cudaGetErrorString(e));
    if (host_flag != 1) OPEN_FAIL("CUDA test kernel did not run on %s", g_prop.name);

    OPEN_CHECK(cudaDeviceGetAttribute(&g_cu.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0),
               "cudaDeviceGetAttribute");
    OPEN_CHECK(cudaStreamCreateWithFlags(&g_cu.compute, cudaStreamNonBlocking), "cudaStreamCreate(compute)");
    OPEN_CHECK(cudaStreamCreateWithFlags(&g_cu.copy, cudaStreamNonBlocking), "cudaStreamCreate(copy)");
    for (int i = 0; i < STEM_KERNELS_FENCES; i++)
        OPEN_CHECK(cudaEventCreateWithFlags(&fences[i], cudaEventDisableTiming), "cudaEventCreate(fence)");
    for (int i = 0; i < TIMER_PAIRS; i++) {
        OPEN_CHECK(cudaEventCreate(&timers[i].start), "cudaEventCreate(timer)");
        OPEN_CHECK(cudaEventCreate(&timers[i].end), "cudaEventCreate(timer)");
    }
    cublasStatus_t s = cublasCreate(&g_cu.blas);
    if (s != CUBLAS_STATUS_SUCCESS) OPEN_FAIL("cuBLAS init failed: %s", cublasGetStatusString(s));
    s = cublasSetStream(g_cu.blas, g_cu.compute);
    if (s != CUBLAS_STATUS_SUCCESS) OPEN_FAIL("cublasSetStream failed: %s", cublasGetStatusString(s));
    g_cu.gemm_compute = CUBLAS_COMPUTE_32F;

    const char *dbg = getenv("STEM_CUDA_SYNC");
    g_cu.debug_sync = dbg && dbg[0] && strcmp(dbg, "0") != 0;
    g_cu.ready = 1;
    fill_table(out, &g_prop);
    return 0;
}
