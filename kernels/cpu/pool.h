/* One thread pool for the whole process: the single level of parallelism.
 * OpenBLAS is pinned to one thread at pool init so two pools never fight
 * over the cores. Work is split into contiguous index ranges; each range is
 * processed by exactly one thread, so results do not depend on scheduling. */
#ifndef STEM_KERNELS_CPU_POOL_H
#define STEM_KERNELS_CPU_POOL_H

#include <stddef.h>

/* fn(ctx, begin, end) processes items [begin, end). */
typedef void (*pool_fn)(void *ctx, size_t begin, size_t end);

/* Start the pool with n threads (n <= 0: number of online CPUs). Idempotent:
 * a second call with another n restarts it. */
void pool_init(int n_threads);
int pool_threads(void);
/* Split [0, n) into at most pool_threads() nearly equal contiguous ranges of at
 * least min_chunk items each and run them in parallel; returns when all are done.
 * Safe to call from several threads (jobs run one after another) and from inside
 * a task (runs inline). */
void pool_for(size_t n, size_t min_chunk, pool_fn fn, void *ctx);
void pool_shutdown(void);

#endif
