/* A minimal persistent thread pool (pthreads).
 *
 * Why our own pool and not OpenBLAS's threads or OpenMP: on 2-core machines two
 * pools spinning against each other halve throughput. We keep OpenBLAS at one
 * thread and split every GEMM ourselves, so there is exactly one level of
 * parallelism and the split (hence every floating-point sum order) depends only on
 * the thread count, which makes training bit-reproducible. */
#include "pool.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define POOL_MAX 64

/* Jobs are serialized: a second thread calling pool_for waits for the first
 * (the GUI runs analyses beside training). A pool_for issued from inside a task
 * runs inline on the calling thread instead of deadlocking. */
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;
static __thread int in_task;

static struct {
    int n;                      /* threads including the caller */
    pthread_t th[POOL_MAX];
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long generation;   /* bumped for every job */
    int pending;                /* workers still running the current job */
    int stop;
    /* current job */
    pool_fn fn;
    void *ctx;
    size_t n_items, chunk;
} P = { .mu = PTHREAD_MUTEX_INITIALIZER, .go = PTHREAD_COND_INITIALIZER,
        .done = PTHREAD_COND_INITIALIZER };

static void run_part(int idx)
{
    size_t b = (size_t)idx * P.chunk;
    if (b >= P.n_items) return;
    size_t e = b + P.chunk;
    if (e > P.n_items) e = P.n_items;
    in_task = 1;
    P.fn(P.ctx, b, e);
    in_task = 0;
}

static void *worker(void *arg)
{
    int idx = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&P.mu);
    for (;;) {
        while (!P.stop && P.generation == seen) pthread_cond_wait(&P.go, &P.mu);
        if (P.stop) break;
        seen = P.generation;
        pthread_mutex_unlock(&P.mu);
        run_part(idx);
        pthread_mutex_lock(&P.mu);
        if (--P.pending == 0) pthread_cond_signal(&P.done);
    }
    pthread_mutex_unlock(&P.mu);
    return NULL;
}

void pool_shutdown(void)
{
    if (P.n <= 1) { P.n = 0; return; }
    pthread_mutex_lock(&P.mu);
    P.stop = 1;
    pthread_cond_broadcast(&P.go);
    pthread_mutex_unlock(&P.mu);
    for (int i = 1; i < P.n; i++) pthread_join(P.th[i], NULL);
    P.stop = 0;
    P.n = 0;
    /* new workers start with seen = 0: a stale generation would make them run
     * the previous (finished) job again */
    P.generation = 0;
    P.pending = 0;
}

void pool_init(int n_threads)
{
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > POOL_MAX) n_threads = POOL_MAX;
    if (P.n == n_threads) return;
    pool_shutdown();
    openblas_set_num_threads(1);
    P.n = n_threads;
    for (int i = 1; i < P.n; i++) pthread_create(&P.th[i], NULL, worker, (void *)(intptr_t)i);
}

int pool_threads(void)
{
    if (P.n == 0) pool_init(0);
    return P.n;
}

void pool_for(size_t n, size_t min_chunk, pool_fn fn, void *ctx)
{
    if (n == 0) return;
    if (in_task) { fn(ctx, 0, n); return; }
    int nt = pool_threads();
    if (min_chunk == 0) min_chunk = 1;
    /* as many parts as threads, but none shorter than min_chunk */
    size_t parts = n / min_chunk;
    if (parts > (size_t)nt) parts = (size_t)nt;
    if (parts <= 1) { fn(ctx, 0, n); return; }
    size_t chunk = (n + parts - 1) / parts;

    pthread_mutex_lock(&job_mu);
    pthread_mutex_lock(&P.mu);
    P.fn = fn; P.ctx = ctx; P.n_items = n; P.chunk = chunk;
    P.pending = nt - 1;
    P.generation++;
    pthread_cond_broadcast(&P.go);
    pthread_mutex_unlock(&P.mu);

    run_part(0);

    pthread_mutex_lock(&P.mu);
    while (P.pending > 0) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&job_mu);
}
