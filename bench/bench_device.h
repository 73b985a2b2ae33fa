/* Device options shared by bench_train, bench_topk and bench_decode:
 *
 *   --device cpu|cuda|auto   the compute backend (engine/device.h); "cuda" fails
 *                            with the reason when there is none, "auto" falls
 *                            back to the CPU and the JSON says why
 *   --offload F              STEM tables served from host memory through a
 *                            device row cache of ceil(F * vocab) tokens
 *                            (engine/offload.h); 0 = tables with the weights
 *   --math fp32|tf32|bf16    GEMM precision (StemKernels.set_math; CPU: fp32)
 *
 * and the JSON members every program prints for them ("device", "offload").
 * Header-only like bench_common.h. */
#ifndef STEM_BENCH_DEVICE_H
#define STEM_BENCH_DEVICE_H

#include "bench_common.h"
#include "engine/device.h"
#include "engine/model.h"
#include "engine/offload.h"

typedef struct {
    char *device;     /* cpu | cuda | auto (default cpu: what the CPU benchmarks always measured) */
    double offload;   /* fraction of the vocabulary cached on the device; 0 = tables on the device */
    char *math;       /* fp32 | tf32 | bf16 */
} BenchDeviceOpts;

#define BENCH_DEVICE_ENTRIES(o)                                                                                   \
    { "device", 0, 0, G_OPTION_ARG_STRING, &(o).device, "compute backend: cpu | cuda | auto (cpu)", "DEV" },      \
    { "offload", 0, 0, G_OPTION_ARG_DOUBLE, &(o).offload,                                                         \
      "offloaded STEM tables: device cache of F x vocab tokens (0 = tables on the device)", "F" },                \
    { "math", 0, 0, G_OPTION_ARG_STRING, &(o).math, "GEMM precision: fp32 | tf32 | bf16 (fp32)", "M" }

/* Open the backend and set its math; NULL with a message on stderr. */
static inline const StemKernels *bench_open_device(const char *prog, const BenchDeviceOpts *o)
{
    StemMath math;
    if (!stem_device_math_from_name(o->math, &math)) {
        fprintf(stderr, "%s: unknown --math '%s' (fp32, tf32 or bf16)\n", prog, o->math);
        return NULL;
    }
    if (o->offload < 0 || o->offload > 1) {
        fprintf(stderr, "%s: --offload must be in [0, 1]\n", prog);
        return NULL;
    }
    GError *err = NULL;
    const StemKernels *k = stem_device_open(o->device ? o->device : "cpu", &err);
    if (!k) {
        fprintf(stderr, "%s: %s\n", prog, err->message);
        g_error_free(err);
        return NULL;
    }
    k->set_math(math);
    return k;
}

/* A JSON string literal (quotes included). */
static inline void bench_json_str(FILE *f, const char *s)
{
    if (!s) { fputs("null", f); return; }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* "device": {...}, (with the trailing comma and newline) */
static inline void bench_print_device(FILE *f, const BenchDeviceOpts *o, const StemKernels *k)
{
    fprintf(f, "  \"device\": {\"requested\": ");
    bench_json_str(f, o->device ? o->device : "cpu");
    fprintf(f, ", \"backend\": ");
    bench_json_str(f, k->name);
    fprintf(f, ", \"name\": ");
    bench_json_str(f, k->device_name);
    fprintf(f, ", \"math\": ");
    bench_json_str(f, o->math ? o->math : "fp32");
    fprintf(f, ", \"cuda_unavailable\": ");
    bench_json_str(f, stem_device_cuda_unavailable());
    fprintf(f, "},\n");
}

/* "offload": {...}, (trailing comma and newline). Per-chunk figures: a chunk
 * is one forward's ids (a training step, a top-k call, a decode token). */
static inline void bench_print_offload(FILE *f, StemModel *m, double frac)
{
    fprintf(f, "  \"offload\": ");
    if (!m->offload) {
        /* tables with the weights (or nothing staged yet) */
        fprintf(f, "{\"fraction\": %.4f, \"capacity\": %d, \"active\": false},\n", frac, m->offload_capacity);
        return;
    }
    StemOffloadStats s;
    stem_offload_stats(m->offload, &s);
    const StemRowCacheStats *c = &s.cache;
    const double chunks = c->chunks ? (double)c->chunks : 1.0;
    fprintf(f,
            "{\"fraction\": %.4f, \"capacity\": %d, \"slots\": %d, \"active\": true, \"chunks\": %" G_GUINT64_FORMAT
            ", \"positions\": %" G_GUINT64_FORMAT ", \"unique\": %" G_GUINT64_FORMAT ", \"dedup_saving\": %.4f, "
            "\"lookups\": %" G_GUINT64_FORMAT ", \"hits\": %" G_GUINT64_FORMAT ", \"misses\": %" G_GUINT64_FORMAT
            ", \"hit_rate\": %.4f, \"evictions\": %" G_GUINT64_FORMAT ", \"rows_moved\": %" G_GUINT64_FORMAT
            ", \"bytes_moved\": %" G_GUINT64_FORMAT ", \"bytes_moved_per_chunk\": %.0f, "
            "\"copy_ms\": %.3f, \"stall_ms\": %.3f, \"copy_ms_per_chunk\": %.3f, \"stall_ms_per_chunk\": %.3f, "
            "\"overlap\": %.4f, \"written_back\": %" G_GUINT64_FORMAT ", \"bytes_written_back_per_chunk\": %.0f},\n",
            frac, s.capacity, s.slots, c->chunks, s.positions, s.unique, s.dedup_saving, c->lookups, c->hits,
            c->misses, c->lookups ? (double)c->hits / (double)c->lookups : 0.0, c->evictions, c->rows_moved,
            c->bytes_moved, (double)c->bytes_moved / chunks, s.copy_ms, s.stall_ms, s.copy_ms / chunks,
            s.stall_ms / chunks, s.overlap, s.written_back, (double)s.bytes_written_back / chunks);
}

#endif
