/* The offloaded table store: STEM rows served to a backend (kernels/kernels.h)
 * from host memory through a device-side row cache (DESIGN §1, issue #6).
 *
 * Host side: the rows stay where the table store has them (the mapped model
 * file, or the training parameter buffer) and are read through StemTables, so
 * the edit overlay is always seen. Device side: one buffer of `slots` units of
 * [n_stem * F] fp32 (a token's rows for ALL STEM layers together), managed by
 * the LFU policy of engine/rowcache.h (LRU tie-break, the current chunk
 * pinned), plus the per-position slot index of the current chunk.
 *
 * Per chunk (stage): dedup the ids (unique + inverse), look the unique ids up
 * in the cache, gather the misses' effective rows into a pinned staging buffer
 * (two of them: double-buffered), enqueue the host->device copies into their
 * slots on the copy queue and record the buffer's fence. begin() makes compute
 * wait for that fence (the host does not block), so staging chunk i+1 while
 * chunk i computes overlaps the copy with compute (prefetch).
 *
 * Capacity: a forward needs all of a chunk's rows on the device at once, so
 * the device buffer holds max(capacity, min(max_positions, vocab)) units, all
 * run by one LFU policy; the store's own hit rate is that of this buffer
 * (`stem bench offload` also reports the policy at exactly the requested
 * capacity). A prefetched chunk is looked up beside the current one only when
 * its misses fit; otherwise its lookup and copies wait for its begin() (no
 * overlap for that chunk, never an error). capacity == vocab is "on-device
 * tables": everything becomes resident and later chunks never miss.
 *
 * An edit is seen from the next begin() on (a chunk computes with the overlay
 * as it was at its begin). step() needs fp32 base tables (training buffers).
 *
 * Edits: before staging, a change of the overlay (stem_tables_generation)
 * invalidates the cached units (all of them: the store does not know which
 * tokens changed), so the next chunk refetches the edited rows.
 *
 * Offloaded training (the reference's future work): gradients are accumulated
 * only for the chunk's unique rows on the device ([n_unique, n_stem * F]).
 * The host keeps every row and its AdamW moments (the caller's buffers, given
 * to step()); once training starts, the cache is a WRITE-BACK cache of rows AND
 * moments: a miss brings a unit's row and moments, step() runs AdamW on the
 * device over the chunk's units and marks them dirty, and a dirty unit goes
 * back to the host (row and moments) when it is evicted, invalidated, or on
 * stem_offload_flush. Per step only the misses move. With an edit overlay
 * present, step() flushes and updates the base rows on the host instead (the
 * device holds effective rows). This is LAZY AdamW (as torch.optim.SparseAdam):
 * a row absent from the chunk is not
 * touched at all, where dense AdamW would still move it by its momentum. */
#ifndef STEM_ENGINE_OFFLOAD_H
#define STEM_ENGINE_OFFLOAD_H

#include <glib.h>
#include <stdint.h>
#include "kernels/kernels.h"
#include "rowcache.h"
#include "tables.h"

typedef struct StemOffload StemOffload;

typedef struct {
    /* rowcache statistics (hits, misses, bytes_moved, ...) */
    StemRowCacheStats cache;
    guint64 positions;          /* ids staged (before dedup) */
    guint64 unique;             /* unique ids staged (after dedup) */
    double dedup_saving;        /* 1 - unique / positions over all chunks */
    double copy_ms, stall_ms;   /* from the backend's copy_stats since creation / reset */
    double overlap;             /* 1 - stall / copy (0 when nothing was copied) */
    guint64 written_back;       /* trained units written back to the host (row + moments each) */
    guint64 bytes_written_back; /* written_back * 3 * n_stem * F * 4 */
    int slots;                  /* device units allocated */
    int capacity;               /* requested capacity */
} StemOffloadStats;

/* t: the table store (not owned; must outlive the offload store). k: the
 * backend. capacity: cache units requested (1..vocab). max_positions: the
 * largest chunk (B*T) that will be staged. */
StemOffload *stem_offload_new(StemTables *t, const StemKernels *k, int capacity, int max_positions,
                              GError **error);
void stem_offload_free(StemOffload *o);

/* Stage a chunk of n ids (host memory). Up to two chunks may be staged ahead
 * of begin(). Fails (nothing staged) for an id outside the vocabulary or
 * n > max_positions. */
gboolean stem_offload_stage(StemOffload *o, const int32_t *ids, int n, GError **error);
/* Make the OLDEST staged chunk current; its ids must equal ids[n] (a check
 * that prefetch and compute agree). When nothing is staged, stages ids first.
 * The previous current chunk is released (its rows become evictable). */
gboolean stem_offload_begin(StemOffload *o, const int32_t *ids, int n, GError **error);
/* u[n, F] (backend memory) = STEM layer j's rows for the current chunk's
 * positions. Queued on the compute queue. */
void stem_offload_rows(StemOffload *o, int j, float *u);

/* Training: zero the current chunk's unique-row gradients (done by begin),
 * then accumulate du[n, F] (backend memory) of STEM layer j. */
void stem_offload_accumulate_grad(StemOffload *o, int j, const float *du);
/* Sum of squares of the current chunk's row gradients (for the tables' norm
 * clip). */
double stem_offload_grad_sumsq(StemOffload *o);
/* Lazy AdamW on the current chunk's rows (see the top comment). params[j],
 * adam_m[j], adam_v[j]: host [vocab, F] buffers of STEM layer j (params[j]
 * must be the base the table store reads). Same arguments as op_adamw. */
void stem_offload_step(StemOffload *o, float *const *params, float *const *adam_m, float *const *adam_v,
                       float lr, float beta1, float beta2, float eps, float wd, int t, float grad_scale);
/* Write every trained unit still on the device back into the host buffers
 * given to step() (rows and moments): after it, the host buffers are current.
 * Call it before reading them (saving, analysing); no-op before training. */
void stem_offload_flush(StemOffload *o);

/* The STEM FFN gate fused with the row read (kernels.h stem_ffn_*):
 * m[n, F] = silu(g) * rows of layer j for the current chunk's positions, and
 * its backward: dg[n, F] (overwritten) and the chunk's row gradients
 * (accumulated, as accumulate_grad). All backend memory, queued. */
void stem_offload_ffn_forward(StemOffload *o, int j, float *m, const float *g);
void stem_offload_ffn_backward(StemOffload *o, int j, float *dg, const float *dm, const float *g);

/* The max_positions it was created with. */
int stem_offload_max_positions(const StemOffload *o);

/* Drop every cached unit (the next chunks refetch everything). */
void stem_offload_invalidate_all(StemOffload *o);
void stem_offload_stats(StemOffload *o, StemOffloadStats *out);
void stem_offload_reset_stats(StemOffload *o);

#endif
