/* The CUDA backend against the CPU backend, op by op (kernels/kernels.h).
 *
 * Every op runs on the same random inputs (fixed seeds) on both backends; the
 * CPU backend (kernels/cpu, the reference for every semantic) works on host
 * copies, the CUDA module on device copies. Output buffers start as random
 * garbage, so an op that should overwrite but skips elements, or should
 * accumulate but overwrites, shows up as a large error. Every device buffer has
 * a guard tail that is checked after every op (writes past the end).
 *
 * Error measure, per output array: max_i |cuda_i - cpu_i| / max_i |cpu_i|
 * (plain max |diff| when the reference is all zeros). Tolerances:
 *   fp32 ops and fp32 GEMMs      1e-4
 *   TF32 GEMMs                   2e-3   (10-bit mantissa inside, fp32 sums)
 *   BF16 GEMMs                   1e-2   (7-bit mantissa inside, fp32 sums)
 *   attention in tf32 / bf16     5e-3 / 4e-2 (rounded scores pass the softmax)
 *   data movement, add, scale    0      (bit-exact)
 *   loss (scalar)                1e-5 relative;  sumsq (double) 1e-10 relative
 *
 * Needs the module (STEM_CUDA_MODULE, set by meson) and a device: exits 77
 * (skipped) without either. Prints one line per comparison; exits 1 on any
 * failure. Useful on a GPU machine:
 *   compute-sanitizer --tool memcheck build/tests/cuda/test_cuda_ops
 *   STEM_CUDA_SYNC=1 ...   (synchronize after every launch: errors name the op) */
#include "kernels/kernels.h"

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOL_FP32 1e-4
#define TOL_TF32 2e-3
#define TOL_BF16 1e-2
/* attention in the fast modes: the rounded GEMM inputs go through the softmax
 * (P moves by about P * dS) and, backward, through two GEMMs in a row. Seen on
 * an H100 (cuBLAS 13): about 6e-4 in both modes; bf16 gets room for a cuBLAS
 * that really rounds to its 8-bit mantissa. */
#define TOL_ATT_TF32 5e-3
#define TOL_ATT_BF16 4e-2
#define TOL_EXACT 0.0
#define TOL_LOSS 1e-5
#define TOL_SUMSQ 1e-10

static const StemKernels *C;   /* CPU reference */
static StemKernels G;          /* CUDA under test */
static int n_checks, n_failed;

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of host memory\n"); exit(2); }
    return p;
}

/* ------------------------------------------------------------------ random (splitmix64) */

static uint64_t rng;
static void seed(uint64_t s) { rng = s; }
static uint64_t rnext(void)
{
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* uniform in [-1, 1) */
static float urand(void) { return (float)((double)(rnext() >> 40) / 16777216.0) * 2.0f - 1.0f; }

static float *hrand(size_t n, float scale)
{
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = urand() * scale;
    return p;
}

static float *hdup(const float *a, size_t n)
{
    float *p = xmalloc(sizeof(float) * n);
    memcpy(p, a, sizeof(float) * n);
    return p;
}

/* ids in [0, V); every `ignore_every`-th one (if > 0) is negative (-1 or -100:
 * any negative target is ignored) */
static int32_t *hids(int n, int V, int ignore_every)
{
    int32_t *p = xmalloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        p[i] = (int32_t)(rnext() % (uint64_t)V);
        if (ignore_every > 0 && i % ignore_every == ignore_every - 1) p[i] = (i / ignore_every) % 2 ? -100 : -1;
    }
    return p;
}

/* ------------------------------------------------------------------ device buffers with guards */

#define GUARD_BYTES 256
#define MAX_BUFS 64
static struct { unsigned char *d; size_t bytes; } bufs[MAX_BUFS];
static int nbufs;
static unsigned char guard_pat[GUARD_BYTES];

static void *dalloc(size_t bytes)
{
    if (nbufs == MAX_BUFS) { fprintf(stderr, "test: too many device buffers\n"); exit(2); }
    unsigned char *d = G.alloc(bytes + GUARD_BYTES);
    if (!d) { fprintf(stderr, "test: device alloc of %zu bytes failed\n", bytes); exit(2); }
    G.upload(d + bytes, guard_pat, GUARD_BYTES);
    bufs[nbufs].d = d;
    bufs[nbufs].bytes = bytes;
    nbufs++;
    return d;
}

static void *dput(const void *h, size_t bytes)
{
    void *d = dalloc(bytes);
    if (bytes) G.upload(d, h, bytes);
    return d;
}

static float *dputf(const float *h, size_t n) { return dput(h, sizeof(float) * n); }
static int32_t *dputi(const int32_t *h, size_t n) { return dput(h, sizeof(int32_t) * n); }

static float *dgetf(const float *d, size_t n)
{
    float *h = xmalloc(sizeof(float) * n);
    G.download(h, d, sizeof(float) * n);
    return h;
}

static void fail_line(const char *label, const char *why)
{
    printf("FAIL %s: %s\n", label, why);
    n_checks++;
    n_failed++;
}

/* every live buffer's tail still holds the guard pattern */
static void guards(const char *label)
{
    unsigned char tail[GUARD_BYTES];
    for (int i = 0; i < nbufs; i++) {
        G.download(tail, bufs[i].d + bufs[i].bytes, GUARD_BYTES);
        if (memcmp(tail, guard_pat, GUARD_BYTES)) {
            char why[96];
            snprintf(why, sizeof why, "wrote past the end of a %zu-byte buffer", bufs[i].bytes);
            fail_line(label, why);
        }
    }
}

static void dfree_all(void)
{
    for (int i = 0; i < nbufs; i++) G.free(bufs[i].d);
    nbufs = 0;
}

/* ------------------------------------------------------------------ comparisons */

static void cmp(const char *label, const char *what, const float *ref, const float *got, size_t n, double tol)
{
    double maxref = 0.0, maxdiff = 0.0;
    size_t worst = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        double r = ref[i], g = got[i];
        if (isfinite(r) && fabs(r) > maxref) maxref = fabs(r);
        double d = fabs(r - g);
        if (isnan(d)) {
            /* equal infinities give NaN differences: same value, no error */
            if (!(isinf(r) && r == g)) { bad++; worst = i; }
            continue;
        }
        if (d > maxdiff) { maxdiff = d; worst = i; }
    }
    double rel = maxref > 0.0 ? maxdiff / maxref : maxdiff;
    int ok = bad == 0 && rel <= tol;
    n_checks++;
    if (!ok) n_failed++;
    printf("%-4s %-44s %-7s n=%-9zu max|ref|=%.3e maxerr=%.3e rel=%.2e tol=%.0e", ok ? "ok" : "FAIL", label, what, n,
           maxref, maxdiff, rel, tol);
    if (!ok) printf("  [worst i=%zu ref=%.9g got=%.9g, %zu non-finite]", worst, (double)ref[worst], (double)got[worst], bad);
    printf("\n");
}

static void cmp_scalar(const char *label, const char *what, double ref, double got, double tol)
{
    double d = fabs(ref - got), rel = fabs(ref) > 0.0 ? d / fabs(ref) : d;
    int ok = isfinite(got) && rel <= tol;
    n_checks++;
    if (!ok) n_failed++;
    printf("%-4s %-44s %-7s ref=%.12g got=%.12g rel=%.2e tol=%.0e\n", ok ? "ok" : "FAIL", label, what, ref, got, rel,
           tol);
}

static void check(const char *label, int cond, const char *what)
{
    n_checks++;
    if (!cond) n_failed++;
    printf("%-4s %-44s %s\n", cond ? "ok" : "FAIL", label, what);
}

/* ------------------------------------------------------------------ matmul */

static const char *math_name(StemMath m) { return m == STEM_MATH_TF32 ? "tf32" : m == STEM_MATH_BF16 ? "bf16" : "fp32"; }

static void t_matmul(int N, int in, int out, StemMath math, double tol, uint64_t s)
{
    char label[96];
    seed(s);
    float *x = hrand((size_t)N * in, 1.0f), *w = hrand((size_t)out * in, 1.0f), *y0 = hrand((size_t)N * out, 1.0f);
    for (int acc = 0; acc <= 1; acc++) {
        snprintf(label, sizeof label, "matmul_forward N=%d in=%d out=%d acc=%d %s", N, in, out, acc, math_name(math));
        float *yref = hdup(y0, (size_t)N * out);
        C->matmul_forward(yref, x, w, N, in, out, acc);
        float *dx = dputf(x, (size_t)N * in), *dw = dputf(w, (size_t)out * in), *dy = dputf(y0, (size_t)N * out);
        G.set_math(math);
        G.matmul_forward(dy, dx, dw, N, in, out, acc);
        G.set_math(STEM_MATH_FP32);
        float *got = dgetf(dy, (size_t)N * out);
        cmp(label, "y", yref, got, (size_t)N * out, tol);
        guards(label);
        dfree_all();
        free(yref);
        free(got);
    }

    /* backward: dx += dy W, dw += dy^T x, each alone (the other NULL) and both */
    float *dyv = hrand((size_t)N * out, 1.0f), *dx0 = hrand((size_t)N * in, 1.0f), *dw0 = hrand((size_t)out * in, 1.0f);
    for (int which = 0; which < 3; which++) {   /* 0: both, 1: dx only, 2: dw only */
        snprintf(label, sizeof label, "matmul_backward N=%d in=%d out=%d %s %s", N, in, out,
                 which == 0 ? "dx+dw" : which == 1 ? "dx" : "dw", math_name(math));
        float *rdx = hdup(dx0, (size_t)N * in), *rdw = hdup(dw0, (size_t)out * in);
        C->matmul_backward(which != 2 ? rdx : NULL, which != 1 ? rdw : NULL, dyv, x, w, N, in, out);
        float *ddx = dputf(dx0, (size_t)N * in), *ddw = dputf(dw0, (size_t)out * in);
        float *ddy = dputf(dyv, (size_t)N * out), *dxx = dputf(x, (size_t)N * in), *dww = dputf(w, (size_t)out * in);
        G.set_math(math);
        G.matmul_backward(which != 2 ? ddx : NULL, which != 1 ? ddw : NULL, ddy, dxx, dww, N, in, out);
        G.set_math(STEM_MATH_FP32);
        float *gdx = dgetf(ddx, (size_t)N * in), *gdw = dgetf(ddw, (size_t)out * in);
        /* the NULL one's buffer was not passed: it must still hold its start values */
        cmp(label, "dx", rdx, gdx, (size_t)N * in, which == 2 ? TOL_EXACT : tol);
        cmp(label, "dw", rdw, gdw, (size_t)out * in, which == 1 ? TOL_EXACT : tol);
        guards(label);
        dfree_all();
        free(rdx); free(rdw); free(gdx); free(gdw);
    }
    free(dyv); free(dx0); free(dw0);
    free(x); free(w); free(y0);
}

/* set_math(FP32) after the fast modes really is fp32 again: a GEMM whose
 * TF32 error would be ~5e-4 must match to 1e-5. */
static void t_math_restore(void)
{
    const int N = 64, in = 512, out = 96;
    seed(77);
    float *x = hrand((size_t)N * in, 1.0f), *w = hrand((size_t)out * in, 1.0f), *y = hrand((size_t)N * out, 1.0f);
    float *dx = dputf(x, (size_t)N * in), *dw = dputf(w, (size_t)out * in), *dy = dputf(y, (size_t)N * out);
    G.set_math(STEM_MATH_BF16);
    G.set_math(STEM_MATH_TF32);
    G.set_math(STEM_MATH_FP32);
    G.matmul_forward(dy, dx, dw, N, in, out, 0);
    C->matmul_forward(y, x, w, N, in, out, 0);
    float *got = dgetf(dy, (size_t)N * out);
    cmp("set_math back to fp32", "y", y, got, (size_t)N * out, 1e-5);
    dfree_all();
    free(x); free(w); free(y); free(got);
}

/* ------------------------------------------------------------------ rmsnorm */

static void t_rmsnorm(int N, int D, uint64_t s)
{
    char label[96];
    const float eps = 1e-5f;
    seed(s);
    float *x = hrand((size_t)N * D, 2.0f), *g = hrand((size_t)D, 1.0f);
    float *y0 = hrand((size_t)N * D, 1.0f), *r0 = hrand((size_t)N, 1.0f);
    snprintf(label, sizeof label, "rmsnorm_forward N=%d D=%d", N, D);
    float *ry = hdup(y0, (size_t)N * D), *rr = hdup(r0, (size_t)N);
    C->rmsnorm_forward(ry, rr, x, g, N, D, eps);
    float *dx = dputf(x, (size_t)N * D), *dg = dputf(g, (size_t)D);
    float *dy = dputf(y0, (size_t)N * D), *dr = dputf(r0, (size_t)N);
    G.rmsnorm_forward(dy, dr, dx, dg, N, D, eps);
    float *gy = dgetf(dy, (size_t)N * D), *gr = dgetf(dr, (size_t)N);
    cmp(label, "y", ry, gy, (size_t)N * D, TOL_FP32);
    cmp(label, "rstd", rr, gr, (size_t)N, TOL_FP32);
    guards(label);
    dfree_all();

    /* backward from the CPU's rstd; dx and dg accumulate onto their start values */
    float *dyv = hrand((size_t)N * D, 1.0f), *dx0 = hrand((size_t)N * D, 1.0f), *dg0 = hrand((size_t)D, 1.0f);
    for (int with_dg = 1; with_dg >= 0; with_dg--) {
        snprintf(label, sizeof label, "rmsnorm_backward N=%d D=%d%s", N, D, with_dg ? "" : " dg=NULL");
        float *rdx = hdup(dx0, (size_t)N * D), *rdg = hdup(dg0, (size_t)D);
        C->rmsnorm_backward(rdx, with_dg ? rdg : NULL, dyv, x, g, rr, N, D);
        float *ddx = dputf(dx0, (size_t)N * D), *ddg = dputf(dg0, (size_t)D), *ddy = dputf(dyv, (size_t)N * D);
        float *dxx = dputf(x, (size_t)N * D), *dgg = dputf(g, (size_t)D), *drr = dputf(rr, (size_t)N);
        G.rmsnorm_backward(ddx, with_dg ? ddg : NULL, ddy, dxx, dgg, drr, N, D);
        float *gdx = dgetf(ddx, (size_t)N * D), *gdg = dgetf(ddg, (size_t)D);
        cmp(label, "dx", rdx, gdx, (size_t)N * D, TOL_FP32);
        cmp(label, "dg", rdg, gdg, (size_t)D, with_dg ? TOL_FP32 : TOL_EXACT);
        guards(label);
        dfree_all();
        free(rdx); free(rdg); free(gdx); free(gdg);
    }
    free(dyv); free(dx0); free(dg0);
    free(x); free(g); free(y0); free(r0); free(ry); free(rr); free(gy); free(gr);
}

/* ------------------------------------------------------------------ rope */

static void t_rope(int B, int T, int nh, int hd, float theta, uint64_t s)
{
    char label[96];
    const size_t n = (size_t)B * T * nh * hd;
    seed(s);
    float *x = hrand(n, 1.0f);
    for (int bwd = 0; bwd <= 1; bwd++) {
        snprintf(label, sizeof label, "rope_%s B=%d T=%d nh=%d hd=%d theta=%g", bwd ? "backward" : "forward", B, T, nh,
                 hd, theta);
        float *ref = hdup(x, n);
        float *d = dputf(x, n);
        if (bwd) { C->rope_backward(ref, B, T, nh, hd, theta); G.rope_backward(d, B, T, nh, hd, theta); }
        else { C->rope_forward(ref, B, T, nh, hd, theta); G.rope_forward(d, B, T, nh, hd, theta); }
        float *got = dgetf(d, n);
        cmp(label, "x", ref, got, n, TOL_FP32);
        guards(label);
        dfree_all();
        free(ref); free(got);
    }
    free(x);
}

/* RoPE on q and k in one launch (rope_qk_*): the CPU reference is rope_* on q, then k */
static void t_rope_qk(int B, int T, int nh, int nkv, int hd, float theta, uint64_t s)
{
    char label[96];
    const size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    seed(s);
    float *q = hrand(nq, 1.0f), *k = hrand(nk, 1.0f);
    for (int bwd = 0; bwd <= 1; bwd++) {
        snprintf(label, sizeof label, "rope_qk_%s B=%d T=%d nh=%d nkv=%d hd=%d", bwd ? "backward" : "forward", B, T,
                 nh, nkv, hd);
        float *rq = hdup(q, nq), *rk = hdup(k, nk);
        float *dq = dputf(q, nq), *dk = dputf(k, nk);
        if (bwd) {
            C->rope_qk_backward(rq, rk, B, T, nh, nkv, hd, theta);
            G.rope_qk_backward(dq, dk, B, T, nh, nkv, hd, theta);
        } else {
            C->rope_qk_forward(rq, rk, B, T, nh, nkv, hd, theta);
            G.rope_qk_forward(dq, dk, B, T, nh, nkv, hd, theta);
        }
        float *gq = dgetf(dq, nq), *gk = dgetf(dk, nk);
        cmp(label, "q", rq, gq, nq, TOL_FP32);
        cmp(label, "k", rk, gk, nk, TOL_FP32);
        guards(label);
        dfree_all();
        free(rq); free(rk); free(gq); free(gk);
    }
    free(q); free(k);
}

/* ------------------------------------------------------------------ attention */

/* Both directions in the math mode `math` (the CUDA side runs its GEMMs in it;
 * the CPU reference is always fp32), compared within `tol`. */
static void t_attention_math(int B, int T, int nh, int nkv, int hd, StemMath math, double tol, uint64_t s)
{
    char label[128];
    const size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd, na = (size_t)B * nh * T * T;
    seed(s);
    float *q = hrand(nq, 2.0f), *k = hrand(nk, 2.0f), *v = hrand(nk, 1.0f);
    float *out0 = hrand(nq, 1.0f), *att0 = hrand(na, 1.0f);

    snprintf(label, sizeof label, "attention_forward B=%d T=%d nh=%d nkv=%d hd=%d %s", B, T, nh, nkv, hd,
             math_name(math));
    float *rout = hdup(out0, nq), *ratt = hdup(att0, na);
    C->attention_forward(rout, ratt, q, k, v, B, T, nh, nkv, hd);
    float *dq = dputf(q, nq), *dk = dputf(k, nk), *dv = dputf(v, nk);
    float *dout = dputf(out0, nq), *datt = dputf(att0, na);
    G.set_math(math);
    G.attention_forward(dout, datt, dq, dk, dv, B, T, nh, nkv, hd);
    G.set_math(STEM_MATH_FP32);
    float *gout = dgetf(dout, nq), *gatt = dgetf(datt, na);
    cmp(label, "out", rout, gout, nq, tol);
    cmp(label, "att", ratt, gatt, na, tol);   /* incl. the zero upper triangle */
    guards(label);
    dfree_all();

    /* backward from the CPU's att; dq, dk, dv start as garbage (overwritten) */
    snprintf(label, sizeof label, "attention_backward B=%d T=%d nh=%d nkv=%d hd=%d %s", B, T, nh, nkv, hd,
             math_name(math));
    float *dO = hrand(nq, 1.0f), *dq0 = hrand(nq, 1.0f), *dk0 = hrand(nk, 1.0f), *dv0 = hrand(nk, 1.0f);
    float *scr0 = hrand(na, 1.0f);
    float *rdq = hdup(dq0, nq), *rdk = hdup(dk0, nk), *rdv = hdup(dv0, nk), *rscr = hdup(scr0, na);
    C->attention_backward(rdq, rdk, rdv, rscr, dO, ratt, q, k, v, B, T, nh, nkv, hd);
    float *ddq = dputf(dq0, nq), *ddk = dputf(dk0, nk), *ddv = dputf(dv0, nk), *dscr = dputf(scr0, na);
    float *ddO = dputf(dO, nq), *datt2 = dputf(ratt, na);
    dq = dputf(q, nq); dk = dputf(k, nk); dv = dputf(v, nk);
    G.set_math(math);
    G.attention_backward(ddq, ddk, ddv, dscr, ddO, datt2, dq, dk, dv, B, T, nh, nkv, hd);
    G.set_math(STEM_MATH_FP32);
    float *gdq = dgetf(ddq, nq), *gdk = dgetf(ddk, nk), *gdv = dgetf(ddv, nk);
    cmp(label, "dq", rdq, gdq, nq, tol);
    cmp(label, "dk", rdk, gdk, nk, tol);
    cmp(label, "dv", rdv, gdv, nk, tol);
    guards(label);
    dfree_all();

    free(q); free(k); free(v); free(out0); free(att0); free(rout); free(ratt); free(gout); free(gatt);
    free(dO); free(dq0); free(dk0); free(dv0); free(scr0); free(rdq); free(rdk); free(rdv); free(rscr);
    free(gdq); free(gdk); free(gdv);
}

static void t_attention(int B, int T, int nh, int nkv, int hd, uint64_t s)
{
    t_attention_math(B, T, nh, nkv, hd, STEM_MATH_FP32, TOL_FP32, s);
}

/* ------------------------------------------------------------------ swiglu */

static void t_swiglu(size_t n, uint64_t s)
{
    char label[96];
    seed(s);
    float *g = hrand(n, 6.0f), *u = hrand(n, 1.0f), *m0 = hrand(n, 1.0f);
    if (n > 3) { g[0] = -100.0f; g[1] = 100.0f; g[2] = 0.0f; }   /* exp overflow, saturation, zero */
    snprintf(label, sizeof label, "swiglu_forward n=%zu", n);
    float *rm = hdup(m0, n);
    C->swiglu_forward(rm, g, u, n);
    float *dm = dputf(m0, n), *dg = dputf(g, n), *du = dputf(u, n);
    G.swiglu_forward(dm, dg, du, n);
    float *gm = dgetf(dm, n);
    cmp(label, "m", rm, gm, n, TOL_FP32);
    guards(label);
    dfree_all();

    snprintf(label, sizeof label, "swiglu_backward n=%zu", n);
    float *dmv = hrand(n, 1.0f), *dg0 = hrand(n, 1.0f), *du0 = hrand(n, 1.0f);
    float *rdg = hdup(dg0, n), *rdu = hdup(du0, n);
    C->swiglu_backward(rdg, rdu, dmv, g, u, n);
    float *ddg = dputf(dg0, n), *ddu = dputf(du0, n), *ddm = dputf(dmv, n);
    dg = dputf(g, n); du = dputf(u, n);
    G.swiglu_backward(ddg, ddu, ddm, dg, du, n);
    float *gdg = dgetf(ddg, n), *gdu = dgetf(ddu, n);
    cmp(label, "dg", rdg, gdg, n, TOL_FP32);
    cmp(label, "du", rdu, gdu, n, TOL_FP32);
    guards(label);
    dfree_all();
    free(g); free(u); free(m0); free(rm); free(gm); free(dmv); free(dg0); free(du0); free(rdg); free(rdu);
    free(gdg); free(gdu);
}

/* ------------------------------------------------------------------ embedding, gather, scatter */

static void t_embedding(int V, int D, int N, uint64_t s)
{
    char label[96];
    seed(s);
    float *table = hrand((size_t)V * D, 1.0f), *out0 = hrand((size_t)N * D, 1.0f);
    int32_t *ids = hids(N, V, 0);
    snprintf(label, sizeof label, "embedding_forward V=%d D=%d N=%d", V, D, N);
    float *rout = hdup(out0, (size_t)N * D);
    C->embedding_forward(rout, table, ids, N, D);
    float *dout = dputf(out0, (size_t)N * D), *dtab = dputf(table, (size_t)V * D);
    int32_t *dids = dputi(ids, (size_t)N);
    G.embedding_forward(dout, dtab, dids, N, D);
    float *gout = dgetf(dout, (size_t)N * D);
    cmp(label, "out", rout, gout, (size_t)N * D, TOL_EXACT);
    guards(label);
    dfree_all();

    /* backward accumulates onto the table gradient; repeated ids add up */
    snprintf(label, sizeof label, "embedding_backward V=%d D=%d N=%d", V, D, N);
    float *dtab0 = hrand((size_t)V * D, 1.0f), *dov = hrand((size_t)N * D, 1.0f);
    float *rdt = hdup(dtab0, (size_t)V * D);
    C->embedding_backward(rdt, dov, ids, N, D);
    float *ddt = dputf(dtab0, (size_t)V * D), *ddo = dputf(dov, (size_t)N * D);
    dids = dputi(ids, (size_t)N);
    G.embedding_backward(ddt, ddo, dids, N, D);
    float *gdt = dgetf(ddt, (size_t)V * D);
    cmp(label, "dtable", rdt, gdt, (size_t)V * D, TOL_FP32);
    guards(label);
    dfree_all();
    free(table); free(out0); free(ids); free(rout); free(gout); free(dtab0); free(dov); free(rdt); free(gdt);
}

/* A device row cache [slots, n_stem*F]; STEM layer j's block starts at column
 * j*F: gather/scatter see src/dst = cache + j*F with stride n_stem*F. */
static void t_rows(int slots, int n_stem, int F, int j, int N, uint64_t s)
{
    char label[96];
    const size_t stride = (size_t)n_stem * F, ncache = (size_t)slots * stride;
    seed(s);
    float *cache = hrand(ncache, 1.0f), *out0 = hrand((size_t)N * F, 1.0f);
    int32_t *idx = hids(N, slots, 0);
    snprintf(label, sizeof label, "gather_rows slots=%d n_stem=%d F=%d j=%d N=%d", slots, n_stem, F, j, N);
    float *rout = hdup(out0, (size_t)N * F);
    C->gather_rows(rout, cache + (size_t)j * F, idx, N, F, stride);
    float *dcache = dputf(cache, ncache), *dout = dputf(out0, (size_t)N * F);
    int32_t *didx = dputi(idx, (size_t)N);
    G.gather_rows(dout, dcache + (size_t)j * F, didx, N, F, stride);
    float *gout = dgetf(dout, (size_t)N * F);
    cmp(label, "out", rout, gout, (size_t)N * F, TOL_EXACT);
    guards(label);
    dfree_all();

    snprintf(label, sizeof label, "scatter_rows slots=%d n_stem=%d F=%d j=%d N=%d", slots, n_stem, F, j, N);
    float *src = hrand((size_t)N * F, 1.0f);
    float *rdst = hdup(cache, ncache);
    C->scatter_rows(rdst + (size_t)j * F, src, idx, N, F, stride);
    float *ddst = dputf(cache, ncache), *dsrc = dputf(src, (size_t)N * F);
    didx = dputi(idx, (size_t)N);
    G.scatter_rows(ddst + (size_t)j * F, dsrc, didx, N, F, stride);
    float *gdst = dgetf(ddst, ncache);
    cmp(label, "dst", rdst, gdst, ncache, TOL_FP32);   /* other layers' columns: unchanged on both */
    guards(label);
    dfree_all();
    free(cache); free(out0); free(idx); free(rout); free(gout); free(src); free(rdst); free(gdst);
}

/* The fused STEM FFN gate. Rows come from a [slots, n_stem*F] cache at layer j's
 * columns (n_stem = 1: a plain [V, F] table); gradients go to a [gslots, gn_stem*F]
 * buffer at layer gj's columns through their own index, drawn from gslots rows so
 * that with gslots << N many positions add into one row (CUDA: atomics). same_idx:
 * gidx is ridx (the model's ROWS_PARAMS case; needs matching slot counts). */
static void t_stem_ffn(int slots, int n_stem, int j, int gslots, int gn_stem, int gj, int F, int N, int same_idx,
                       uint64_t s)
{
    char label[112];
    const size_t rstride = (size_t)n_stem * F, gstride = (size_t)gn_stem * F, n = (size_t)N * F;
    const size_t nr = (size_t)slots * rstride, ng = (size_t)gslots * gstride;
    seed(s);
    float *rows = hrand(nr, 1.0f), *g = hrand(n, 6.0f), *m0 = hrand(n, 1.0f);
    if (n > 3) { g[0] = -100.0f; g[1] = 100.0f; g[2] = 0.0f; }   /* exp overflow, saturation, zero */
    int32_t *ridx = hids(N, slots, 0), *gidx = same_idx ? ridx : hids(N, gslots, 0);
    snprintf(label, sizeof label, "stem_ffn_forward slots=%d n_stem=%d j=%d F=%d N=%d", slots, n_stem, j, F, N);
    float *rm = hdup(m0, n);
    C->stem_ffn_forward(rm, g, rows + (size_t)j * F, ridx, N, F, rstride);
    float *dm = dputf(m0, n), *dg = dputf(g, n), *drows = dputf(rows, nr);
    int32_t *dridx = dputi(ridx, (size_t)N);
    G.stem_ffn_forward(dm, dg, drows + (size_t)j * F, dridx, N, F, rstride);
    float *gm = dgetf(dm, n);
    cmp(label, "m", rm, gm, n, TOL_FP32);
    guards(label);
    dfree_all();

    /* dg starts as garbage (overwritten); the gradient rows as random values (+=) */
    snprintf(label, sizeof label, "stem_ffn_backward gslots=%d gn_stem=%d gj=%d F=%d N=%d%s", gslots, gn_stem, gj, F,
             N, same_idx ? " gidx=ridx" : "");
    float *dmv = hrand(n, 1.0f), *dg0 = hrand(n, 1.0f), *dr0 = hrand(ng, 1.0f);
    float *rdg = hdup(dg0, n), *rdr = hdup(dr0, ng);
    C->stem_ffn_backward(rdg, rdr + (size_t)gj * F, dmv, g, rows + (size_t)j * F, ridx, rstride, gidx, gstride, N, F);
    float *ddg = dputf(dg0, n), *ddr = dputf(dr0, ng), *ddm = dputf(dmv, n);
    dg = dputf(g, n);
    drows = dputf(rows, nr);
    dridx = dputi(ridx, (size_t)N);
    int32_t *dgidx = dputi(gidx, (size_t)N);
    G.stem_ffn_backward(ddg, ddr + (size_t)gj * F, ddm, dg, drows + (size_t)j * F, dridx, rstride, dgidx, gstride, N,
                        F);
    float *gdg = dgetf(ddg, n), *gdr = dgetf(ddr, ng);
    cmp(label, "dg", rdg, gdg, n, TOL_FP32);
    cmp(label, "drows", rdr, gdr, ng, TOL_FP32);
    /* the other layers' columns are not this op's: bit-exact start values */
    size_t moved = 0;
    for (size_t r = 0; r < (size_t)gslots; r++)
        for (size_t c = 0; c < gstride; c++)
            if ((c < (size_t)gj * F || c >= (size_t)(gj + 1) * F) &&
                memcmp(&gdr[r * gstride + c], &dr0[r * gstride + c], sizeof(float)))
                moved++;
    char what[96];
    snprintf(what, sizeof what, "other layers' gradient columns untouched (%zu changed)", moved);
    check(label, moved == 0, what);
    guards(label);
    dfree_all();
    free(rows); free(g); free(m0); free(ridx);
    if (!same_idx) free(gidx);
    free(rm); free(gm); free(dmv); free(dg0); free(dr0); free(rdg); free(rdr); free(gdg); free(gdr);
}

/* ------------------------------------------------------------------ add, scale, sumsq */

static void t_add_scale_sumsq(size_t n, uint64_t s)
{
    char label[96];
    seed(s);
    float *y = hrand(n, 1.0f), *x = hrand(n, 1.0f);
    snprintf(label, sizeof label, "add_inplace n=%zu", n);
    float *ry = hdup(y, n);
    C->add_inplace(ry, x, n);
    float *dy = dputf(y, n), *dx = dputf(x, n);
    G.add_inplace(dy, dx, n);
    float *got = dgetf(dy, n);
    cmp(label, "y", ry, got, n, TOL_EXACT);
    guards(label);
    free(got);

    snprintf(label, sizeof label, "scale n=%zu", n);
    C->scale(ry, n, 0.37f);
    G.scale(dy, n, 0.37f);
    got = dgetf(dy, n);
    cmp(label, "x", ry, got, n, TOL_EXACT);
    guards(label);
    free(got);

    snprintf(label, sizeof label, "sumsq n=%zu", n);
    double rs = C->sumsq(ry, n), gs = G.sumsq(dy, n);
    cmp_scalar(label, "sum", rs, gs, TOL_SUMSQ);
    guards(label);
    dfree_all();
    free(y); free(x); free(ry);
}

/* ------------------------------------------------------------------ cross-entropy */

static void t_crossentropy(int N, int V, float lscale, int ignore_every, int all_ignored, uint64_t s)
{
    char label[112];
    const size_t n = (size_t)N * V;
    seed(s);
    float *logits = hrand(n, lscale), *p0 = hrand(n, 1.0f);
    int32_t *tg = hids(N, V, ignore_every);
    if (all_ignored) for (int i = 0; i < N; i++) tg[i] = -1;
    for (int alias = 0; alias <= 1; alias++) {
        snprintf(label, sizeof label, "crossentropy_forward N=%d V=%d x%g ign=%d%s", N, V, lscale,
                 all_ignored ? N : ignore_every ? N / ignore_every : 0, alias ? " in-place" : "");
        float *rl = hdup(logits, n), *rp = alias ? rl : hdup(p0, n);
        float rloss = C->crossentropy_forward(rp, rl, tg, N, V);
        float *dl = dputf(logits, n), *dp = alias ? dl : dputf(p0, n);
        int32_t *dtg = dputi(tg, (size_t)N);
        float gloss = G.crossentropy_forward(dp, dl, dtg, N, V);
        float *gp = dgetf(dp, n);
        cmp(label, "probs", rp, gp, n, TOL_FP32);
        cmp_scalar(label, "loss", rloss, gloss, TOL_LOSS);
        guards(label);
        dfree_all();
        free(gp);

        /* backward from the CPU's probabilities */
        snprintf(label, sizeof label, "crossentropy_backward N=%d V=%d ign=%d%s", N, V,
                 all_ignored ? N : ignore_every ? N / ignore_every : 0, alias ? " in-place" : "");
        float *d0 = hrand(n, 1.0f);
        float *rd = alias ? hdup(rp, n) : hdup(d0, n);
        C->crossentropy_backward(rd, alias ? rd : rp, tg, N, V);
        float *dprobs = dputf(rp, n), *dd = alias ? dprobs : dputf(d0, n);
        dtg = dputi(tg, (size_t)N);
        G.crossentropy_backward(dd, dprobs, dtg, N, V);
        float *gd = dgetf(dd, n);
        cmp(label, "dlogits", rd, gd, n, TOL_FP32);
        guards(label);
        dfree_all();
        free(gd); free(rd); free(d0);
        if (!alias) free(rp);
        free(rl);
    }
    free(logits); free(p0); free(tg);
}

/* ------------------------------------------------------------------ AdamW */

static void t_adamw(size_t n, int t, float lr, float wd, float gs, uint64_t s)
{
    char label[96];
    seed(s);
    float *p = hrand(n, 1.0f), *g = hrand(n, 0.5f), *m = hrand(n, 0.01f), *v = hrand(n, 1e-3f);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    snprintf(label, sizeof label, "adamw n=%zu t=%d lr=%g wd=%g gs=%g", n, t, lr, wd, gs);
    float *rp = hdup(p, n), *rm = hdup(m, n), *rv = hdup(v, n);
    C->adamw(rp, g, rm, rv, n, lr, 0.9f, 0.95f, 1e-8f, wd, t, gs);
    float *dp = dputf(p, n), *dg = dputf(g, n), *dm = dputf(m, n), *dv = dputf(v, n);
    G.adamw(dp, dg, dm, dv, n, lr, 0.9f, 0.95f, 1e-8f, wd, t, gs);
    float *gp = dgetf(dp, n), *gm = dgetf(dm, n), *gv = dgetf(dv, n);
    cmp(label, "p", rp, gp, n, TOL_FP32);
    cmp(label, "m", rm, gm, n, TOL_FP32);
    cmp(label, "v", rv, gv, n, TOL_FP32);
    /* the step itself (p_new - p_old), not hidden under |p| */
    for (size_t i = 0; i < n; i++) { rp[i] -= p[i]; gp[i] -= p[i]; }
    cmp(label, "step", rp, gp, n, TOL_FP32);
    guards(label);
    dfree_all();
    free(p); free(g); free(m); free(v); free(rp); free(rm); free(rv); free(gp); free(gm); free(gv);
}

/* AdamW on N distinct rows (shuffled) of W floats at column col of a
 * [V, stride] buffer; everything else must keep its bits. */
static void t_adamw_rows(int V, size_t stride, int col, int N, int W, int t, float lr, float wd, float gs, uint64_t s)
{
    char label[112];
    const size_t np = (size_t)V * stride, ngr = (size_t)N * W;
    seed(s);
    float *p = hrand(np, 1.0f), *g = hrand(ngr, 0.5f), *m = hrand(np, 0.01f), *v = hrand(np, 1e-3f);
    for (size_t i = 0; i < np; i++) v[i] = fabsf(v[i]);
    int32_t *perm = xmalloc(sizeof(int32_t) * (size_t)V);
    for (int r = 0; r < V; r++) perm[r] = r;
    for (int r = V - 1; r > 0; r--) {
        int o = (int)(rnext() % (uint64_t)(r + 1));
        int32_t tmp = perm[r]; perm[r] = perm[o]; perm[o] = tmp;
    }
    snprintf(label, sizeof label, "adamw_rows V=%d stride=%zu col=%d N=%d W=%d t=%d", V, stride, col, N, W, t);
    float *rp = hdup(p, np), *rm = hdup(m, np), *rv = hdup(v, np);
    C->adamw_rows(rp + col, rm + col, rv + col, g, perm, N, W, stride, lr, 0.9f, 0.95f, 1e-8f, wd, t, gs);
    float *dp = dputf(p, np), *dm = dputf(m, np), *dv = dputf(v, np), *dg = dputf(g, ngr);
    int32_t *didx = dputi(perm, (size_t)N);
    G.adamw_rows(dp + col, dm + col, dv + col, dg, didx, N, W, stride, lr, 0.9f, 0.95f, 1e-8f, wd, t, gs);
    float *gp = dgetf(dp, np), *gm = dgetf(dm, np), *gv = dgetf(dv, np);
    cmp(label, "p", rp, gp, np, TOL_FP32);
    cmp(label, "m", rm, gm, np, TOL_FP32);
    cmp(label, "v", rv, gv, np, TOL_FP32);
    /* elements outside the N rows' W columns: the start values, bit-exact */
    unsigned char *hit = calloc(np, 1);
    for (int i = 0; i < N; i++) memset(hit + (size_t)perm[i] * stride + col, 1, (size_t)W);
    size_t moved = 0;
    for (size_t e = 0; e < np; e++)
        if (!hit[e] && (memcmp(&gp[e], &p[e], 4) || memcmp(&gm[e], &m[e], 4) || memcmp(&gv[e], &v[e], 4))) moved++;
    char what[96];
    snprintf(what, sizeof what, "elements outside the rows untouched (%zu changed)", moved);
    check(label, moved == 0, what);
    /* the step itself (p_new - p_old), not hidden under |p| */
    for (size_t e = 0; e < np; e++) { rp[e] -= p[e]; gp[e] -= p[e]; }
    cmp(label, "step", rp, gp, np, TOL_FP32);
    guards(label);
    dfree_all();
    free(p); free(g); free(m); free(v); free(perm); free(hit);
    free(rp); free(rm); free(rv); free(gp); free(gm); free(gv);
}

/* ------------------------------------------------------------------ memory */

static void t_memory(void)
{
    const char *label = "memory";
    void *z = G.alloc(0);
    check(label, z != NULL, "alloc(0) gives a pointer");
    G.free(z);
    G.free(NULL);

    /* upload / download round trip, odd byte counts */
    seed(5);
    const size_t n = 1000003;
    float *a = hrand(n, 1.0f);
    float *da = dputf(a, n);
    float *back = dgetf(da, n);
    check(label, memcmp(a, back, sizeof(float) * n) == 0, "upload/download round trip is bit-exact (1000003 floats)");
    unsigned char bytes7[7] = { 1, 2, 3, 4, 5, 6, 7 }, got7[7] = { 0 };
    unsigned char *d7 = dput(bytes7, 7);
    G.download(got7, d7, 7);
    check(label, memcmp(bytes7, got7, 7) == 0, "7-byte upload/download");

    /* copy a sub-range to an offset, zero a sub-range: everything else untouched */
    float *b0 = hrand(n, 1.0f);
    float *db = dputf(b0, n);
    G.copy(db + 5, da + 3, sizeof(float) * 500000);
    G.copy(db, db, sizeof(float) * 16);   /* dst == src: nothing */
    G.zero(db + 600001, sizeof(float) * 37);
    G.synchronize();
    float *gb = dgetf(db, n);
    float *eb = hdup(b0, n);
    memcpy(eb + 5, a + 3, sizeof(float) * 500000);
    memset(eb + 600001, 0, sizeof(float) * 37);
    check(label, memcmp(eb, gb, sizeof(float) * n) == 0, "copy (offsets) and zero (sub-range) touch exactly their bytes");
    guards(label);
    dfree_all();
    free(a); free(back); free(b0); free(gb); free(eb);

    /* overlapping copies have memmove semantics (the CPU backend's): shift
     * down and up by a few floats, small and over the backend's 64 MiB piece */
    const size_t sizes[2] = { 1000003, ((size_t)80 << 20) / sizeof(float) + 12345 };
    for (int k = 0; k < 2; k++) {
        const size_t m = sizes[k];
        float *h0 = hrand(m, 1.0f);
        float *dm = dputf(h0, m);
        G.copy(dm, dm + 5, sizeof(float) * (m - 5));        /* dst < src */
        G.copy(dm + 3, dm + 1, sizeof(float) * (m - 9));    /* dst > src */
        float *gm = dgetf(dm, m);
        float *em = hdup(h0, m);
        memmove(em, em + 5, sizeof(float) * (m - 5));
        memmove(em + 3, em + 1, sizeof(float) * (m - 9));
        char what[96];
        snprintf(what, sizeof what, "overlapping copies behave as memmove (%zu floats)", m);
        check(label, memcmp(em, gm, sizeof(float) * m) == 0, what);
        guards(label);
        dfree_all();
        free(h0); free(gm); free(em);
    }
}

/* ------------------------------------------------------------------ staging: upload_async + fences */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Four pinned buffers, one fence each, used round-robin over 12 rounds (the
 * offload store's pattern): the host waits for a buffer's last fence before
 * refilling it, the round's copies (two per round) go on the copy queue into
 * that round's own device area, compute waits for the round's fence and adds
 * the area into an accumulator. Chunks are 8 MiB so that a missing wait
 * (compute reading before the copy lands, the host refilling a buffer that is
 * still being copied) corrupts the sums. Values are small integers: the
 * expected sums are exact. (Each round copies into fresh device memory: the
 * contract has no compute->copy fence, so reusing an area that queued compute
 * may still read would be the caller's race, not the backend's.) */
static void t_staging(void)
{
    const char *label = "staging";
    const int NB = STEM_KERNELS_FENCES, ROUNDS = 12;
    const size_t CH = (size_t)2 << 20;   /* floats per chunk */
    float *pin = G.host_alloc(sizeof(float) * CH * NB);
    check(label, pin != NULL, "host_alloc(32 MiB) gives pinned memory");
    if (!pin) return;
    float *stage = dalloc(sizeof(float) * CH * ROUNDS);
    float *zeros = calloc(CH, sizeof(float));
    float *acc = dputf(zeros, CH);
    double copy0 = -1, stall0 = -1;
    G.copy_stats(&copy0, &stall0);
    for (int r = 0; r < ROUNDS; r++) {
        const int f = r % NB;
        float *slot = pin + (size_t)f * CH;
        G.host_wait(f);   /* the last copy out of this buffer has finished */
        for (size_t i = 0; i < CH; i++) slot[i] = (float)((i * 7 + (size_t)r * 13) % 1024);
        float *dst = stage + (size_t)r * CH;
        G.upload_async(dst, slot, sizeof(float) * (CH / 2));
        G.upload_async(dst + CH / 2, slot + CH / 2, sizeof(float) * (CH - CH / 2));
        G.fence_record(f);
        G.compute_wait(f);
        G.add_inplace(acc, dst, CH);
    }
    float *got = dgetf(acc, CH);
    size_t bad = 0;
    for (size_t i = 0; i < CH; i++) {
        float e = 0.0f;
        for (int r = 0; r < ROUNDS; r++) e += (float)((i * 7 + (size_t)r * 13) % 1024);
        if (got[i] != e) bad++;
    }
    char what[128];
    snprintf(what, sizeof what, "12 rounds over 4 pinned buffers, 8 MiB each: %zu of %zu sums wrong", bad, CH);
    check(label, bad == 0, what);
    double copy1 = -1, stall1 = -1;
    G.copy_stats(&copy1, &stall1);
    snprintf(what, sizeof what, "copy_stats: copy %.3f ms, stall %.3f ms (copy > 0, both finite, non-decreasing)",
             copy1 - copy0, stall1 - stall0);
    check(label, isfinite(copy1) && isfinite(stall1) && copy1 > copy0 && stall1 >= stall0 && stall0 >= 0, what);

    /* 150 small batches: more fence/wait timing pairs than the backend keeps
     * pending (64), so the oldest are read back while new ones are taken */
    const int SMALL = 150, SF = 256;
    float *small = dalloc(sizeof(float) * SF * SMALL);
    for (int r = 0; r < SMALL; r++) {
        G.upload_async(small + (size_t)r * SF, pin + (size_t)r * 7, sizeof(float) * SF);
        G.fence_record(r % NB);
        G.compute_wait(r % NB);
    }
    float *gs = dgetf(small, (size_t)SF * SMALL);
    G.host_wait(0); G.host_wait(1); G.host_wait(2); G.host_wait(3);
    bad = 0;
    for (int r = 0; r < SMALL; r++)
        bad += memcmp(gs + (size_t)r * SF, pin + (size_t)r * 7, sizeof(float) * SF) != 0;
    double copy2 = -1, stall2 = -1;
    G.copy_stats(&copy2, &stall2);
    snprintf(what, sizeof what, "150 small fenced copies: %zu wrong; copy_stats still non-decreasing (%.3f, %.3f ms)",
             bad, copy2 - copy1, stall2 - stall1);
    check(label, bad == 0 && isfinite(copy2) && copy2 >= copy1 && stall2 >= stall1, what);
    free(gs);
    guards(label);
    dfree_all();
    G.host_free(pin);
    free(zeros);
    free(got);
}

/* Queue order around long GEMMs (all ones: y = in exactly, or a multiple):
 *  - upload is ordered after the ops queued before it: a GEMM queued before an
 *    upload into its weight sees the old weight, one queued after sees the new;
 *  - upload_async + fence + compute_wait: a GEMM queued after the wait sees the
 *    copied weight (the copy itself may overlap the GEMM queued before it; how
 *    much is printed, not asserted: a test checks correctness only). */
static void t_queue_order(void)
{
    const char *label = "queue order";
    const int N = 8192, in = 4096, out = 4096;   /* ~0.27 TFLOP per GEMM: milliseconds on any GPU */
    const size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    float *h = xmalloc(sizeof(float) * nx);
    for (size_t i = 0; i < nx; i++) h[i] = 1.0f;
    float *dx = dputf(h, nx), *dw = dputf(h, nw), *dw3 = dalloc(sizeof(float) * nw);
    float *dy1 = dalloc(sizeof(float) * ny), *dy2 = dalloc(sizeof(float) * ny), *dy3 = dalloc(sizeof(float) * ny);
    float *pin = G.host_alloc(sizeof(float) * nw);
    if (!pin) { check(label, 0, "host_alloc"); dfree_all(); free(h); return; }
    for (size_t i = 0; i < nw; i++) { h[i] = 2.0f; pin[i] = 3.0f; }
    G.synchronize();

    G.matmul_forward(dy1, dx, dw, N, in, out, 0);   /* queued: reads W = 1 */
    G.upload(dw, h, sizeof(float) * nw);           /* W = 2, after the GEMM above */
    double t0 = now_ms();
    G.matmul_forward(dy2, dx, dw, N, in, out, 0);   /* reads W = 2 */
    G.upload_async(dw3, pin, sizeof(float) * nw);  /* W3 = 3 on the copy queue, beside that GEMM */
    G.fence_record(1);
    G.host_wait(1);
    double t1 = now_ms();
    G.compute_wait(1);
    G.matmul_forward(dy3, dx, dw3, N, in, out, 0);  /* reads W3 = 3 */
    G.synchronize();
    double t2 = now_ms();

    float *y1 = dgetf(dy1, ny), *y2 = dgetf(dy2, ny), *y3 = dgetf(dy3, ny);
    size_t b1 = 0, b2 = 0, b3 = 0;
    for (size_t i = 0; i < ny; i++) {
        b1 += y1[i] != (float)in;
        b2 += y2[i] != 2.0f * (float)in;
        b3 += y3[i] != 3.0f * (float)in;
    }
    char what[160];
    snprintf(what, sizeof what, "a GEMM queued before upload sees the old weight: %zu of %zu wrong", b1, ny);
    check(label, b1 == 0, what);
    snprintf(what, sizeof what, "a GEMM queued after upload sees the new weight: %zu wrong", b2);
    check(label, b2 == 0, what);
    snprintf(what, sizeof what, "a GEMM queued after compute_wait sees the async copy: %zu wrong", b3);
    check(label, b3 == 0, what);
    printf("# overlap: the 64 MiB async copy's fence passed %.2f ms after queuing, the two GEMMs were done at "
           "%.2f ms\n", t1 - t0, t2 - t0);
    G.host_free(pin);
    guards(label);
    dfree_all();
    free(h); free(y1); free(y2); free(y3);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    const char *path = getenv("STEM_CUDA_MODULE");
    if (!path || !*path) {
        printf("SKIP: STEM_CUDA_MODULE not set (this build has no CUDA module)\n");
        return 77;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("SKIP: cannot load %s: %s\n", path, dlerror());
        return 77;
    }
    StemKernelsOpenFn open_fn = (StemKernelsOpenFn)dlsym(h, STEM_KERNELS_CUDA_ENTRY);
    if (!open_fn) {
        printf("FAIL: %s has no %s\n", path, STEM_KERNELS_CUDA_ENTRY);
        return 1;
    }
    char err[256] = "";
    if (open_fn(STEM_KERNELS_ABI, &G, err, sizeof err) != 0) {
        printf("SKIP: %s\n", err);
        return 77;
    }
    C = stem_kernels_cpu();
    for (int i = 0; i < GUARD_BYTES; i++) guard_pat[i] = (unsigned char)(0xA5 ^ (i * 29));
    printf("# CUDA backend on %s vs the CPU backend\n", G.device_name);
    printf("# error = max|cuda - cpu| / max|cpu| per output; tolerances: fp32 %.0e, tf32 %.0e, bf16 %.0e, "
           "movement exact\n", TOL_FP32, TOL_TF32, TOL_BF16);

    t_memory();

    /* GEMMs: odd sizes, a decode-like single row, a square-ish one */
    t_matmul(37, 70, 45, STEM_MATH_FP32, TOL_FP32, 1);
    t_matmul(1, 64, 300, STEM_MATH_FP32, TOL_FP32, 2);
    t_matmul(130, 256, 96, STEM_MATH_FP32, TOL_FP32, 3);
    t_matmul(64, 512, 96, STEM_MATH_TF32, TOL_TF32, 4);
    t_matmul(64, 512, 96, STEM_MATH_BF16, TOL_BF16, 5);
    t_matmul(33, 100, 77, STEM_MATH_TF32, TOL_TF32, 6);
    t_matmul(33, 100, 77, STEM_MATH_BF16, TOL_BF16, 7);
    t_math_restore();

    t_rmsnorm(37, 70, 10);
    t_rmsnorm(64, 768, 11);
    t_rmsnorm(3, 2050, 12);
    t_rmsnorm(300, 33, 13);

    t_rope(2, 13, 3, 10, 10000.0f, 20);
    t_rope(1, 300, 4, 64, 10000.0f, 21);
    t_rope(2, 7, 2, 7, 500000.0f, 22);   /* odd hd: the last element is left alone */
    t_rope(1, 4096, 2, 128, 500000.0f, 23);   /* long context: angle = t * freq amplifies freq rounding */
    t_rope_qk(2, 13, 4, 2, 10, 10000.0f, 24);     /* GQA */
    t_rope_qk(1, 1, 2, 2, 8, 10000.0f, 25);       /* T = 1: position 0 only */
    t_rope_qk(3, 7, 3, 1, 7, 500000.0f, 26);      /* odd hd, MQA */
    t_rope_qk(2, 4096, 4, 2, 128, 500000.0f, 27); /* long context, as t_rope */

    t_attention(2, 19, 4, 2, 16, 30);     /* GQA 2:1 */
    t_attention(1, 130, 6, 2, 64, 31);    /* GQA 3:1, T over the block size */
    t_attention(2, 33, 2, 2, 24, 32);     /* MHA, hd not a multiple of 32 */
    t_attention(1, 512, 2, 1, 128, 33);   /* MQA, the longest context */
    t_attention(3, 1, 2, 1, 8, 34);       /* T = 1 */
    t_attention(65537, 2, 2, 1, 8, 35);   /* B over the 65535 grid.y/z limit */
    /* the GEMM version (kernels/cuda/attention.cu): causal row blocks (two from
     * T = 256 on), one batched GEMM entry per (b, head), batches sliced at 65535 */
    t_attention(2, 64, 8, 2, 32, 36);     /* GQA 4:1 (nh=8, nkv=2): dK/dV summed over the group */
    t_attention(1, 1, 8, 2, 16, 37);      /* T = 1 with GQA */
    t_attention(2, 300, 4, 4, 64, 38);    /* two row blocks (160 + 140), T not a multiple of 32 */
    t_attention(1, 700, 8, 2, 64, 39);    /* row blocks 352 + 348, GQA 4:1 */
    t_attention(4100, 3, 16, 4, 8, 90);   /* B*nh = 65600 over 65535 with B under it */
    t_attention(2, 257, 4, 2, 20, 91);    /* odd T*T, hd 20: misaligned pointers keep fp32 even in tf32 */
    t_attention_math(2, 256, 8, 2, 64, STEM_MATH_TF32, TOL_ATT_TF32, 92);
    t_attention_math(2, 256, 8, 2, 64, STEM_MATH_BF16, TOL_ATT_BF16, 93);
    t_attention_math(2, 257, 4, 2, 20, STEM_MATH_TF32, TOL_ATT_TF32, 94);   /* the fp32 fallback in tf32 mode */

    t_swiglu(1000, 40);
    t_swiglu(3 * 4099, 41);

    t_embedding(50, 70, 97, 50);
    t_embedding(1000, 256, 300, 51);
    t_rows(20, 3, 33, 1, 17, 52);
    t_rows(64, 2, 256, 0, 200, 53);
    t_rows(64, 2, 256, 1, 200, 54);

    /* slots, n_stem, j | gslots, gn_stem, gj | F, N, gidx = ridx */
    t_stem_ffn(50, 1, 0, 50, 1, 0, 70, 97, 1, 55);      /* the model's case: a [V, F] table */
    t_stem_ffn(7, 1, 0, 7, 1, 0, 33, 1, 1, 56);         /* N = 1 */
    t_stem_ffn(20, 3, 1, 5, 2, 1, 33, 300, 0, 57);      /* cache slots -> 5 unique rows: many repeats */
    t_stem_ffn(64, 2, 0, 3, 1, 0, 257, 1000, 0, 58);    /* odd F, 3 gradient rows for 1000 positions */
    t_stem_ffn(64, 1, 0, 64, 1, 0, 4100, 4100, 1, 59);  /* N*F over the grid cap: the grid-stride loop */

    t_add_scale_sumsq(12345, 60);
    t_add_scale_sumsq(1000003, 61);
    t_add_scale_sumsq(1, 62);
    cmp_scalar("sumsq n=0", "sum", 0.0, G.sumsq(NULL, 0), 0.0);

    t_crossentropy(37, 101, 1.0f, 5, 0, 70);
    t_crossentropy(64, 5000, 20.0f, 9, 0, 71);
    t_crossentropy(8, 33, 3.0f, 0, 1, 72);   /* every target ignored: loss 0, gradient 0 */

    t_adamw(10007, 1, 1e-2f, 0.1f, 1.0f, 80);
    t_adamw(10007, 7, 3e-3f, 0.0f, 0.5f, 81);
    t_adamw_rows(3, 7, 0, 1, 7, 1, 1e-2f, 0.1f, 1.0f, 82);               /* N = 1 */
    t_adamw_rows(40, 100, 33, 17, 33, 3, 3e-3f, 0.1f, 0.5f, 83);         /* stride > W, a column block */
    t_adamw_rows(300, 2 * 257, 257, 200, 257, 5, 1e-3f, 0.0f, 1.0f, 84); /* odd W */
    t_adamw_rows(4200, 4100, 0, 4100, 4100, 2, 1e-2f, 0.1f, 1.0f, 85);   /* N*W over the grid cap */

    t_staging();
    t_queue_order();

    printf("# %d checks, %d failed\n", n_checks, n_failed);
    printf("%s\n", n_failed ? "FAIL" : "PASS");
    return n_failed ? 1 : 0;
}
