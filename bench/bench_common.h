/* Small helpers shared by the bench programs: a monotonic clock, order
 * statistics over repeated timings, and a buffer filler. Header-only so every
 * bench stays one file plus this. Benchmarks print JSON on stdout and progress
 * on stderr; they never assert anything (that is what tests are for). */
#ifndef STEM_BENCH_COMMON_H
#define STEM_BENCH_COMMON_H

#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* q-quantile (0..1) of v[n] by linear interpolation between order statistics;
 * sorts a copy, v is left alone. q = 0.5 is the median. */
static inline double bench_quantile(const double *v, int n, double q)
{
    if (n <= 0) return 0.0;
    double *s = g_new(double, n);
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), bench_cmp_double);
    double pos = q * (n - 1);
    int lo = (int)pos;
    int hi = lo + 1 < n ? lo + 1 : lo;
    double r = s[lo] + (s[hi] - s[lo]) * (pos - lo);
    g_free(s);
    return r;
}

static inline double bench_min(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++) if (v[i] < m) m = v[i];
    return m;
}

static inline double bench_mean(const double *v, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    return n ? s / n : 0.0;
}

/* Uniform floats in [-1, 1) from a splitmix64 stream (deterministic). */
static inline void bench_fill(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[i] = (float)((double)(z >> 40) / (double)(1ull << 23) - 1.0);
    }
}

/* Print a JSON array of doubles (no trailing newline). */
static inline void bench_print_array(FILE *f, const double *v, int n, const char *fmt)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        fprintf(f, fmt, v[i]);
    }
    fputc(']', f);
}

#endif
