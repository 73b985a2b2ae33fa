/* Gradient and reference tests for the CPU ops (kernels/cpu/ops.h, pool.h).
 *
 * Method, the same for every op:
 *  1. A naive double-precision reference of the forward lives in this file, written
 *     from the header's description only, independently of ops.c.
 *  2. The float forward is compared with the double reference on the same inputs
 *     (the inputs are floats converted exactly, so both sides see the same values).
 *  3. A scalar loss L = sum(out * R), R a fixed random tensor (so dL/dout = R), is
 *     defined on the double reference; dL/d(input) is taken by central differences in
 *     double, h = 1e-5 (truncation ~h^2 |f'''|, rounding ~1e-16 |L| / h: both < 1e-9
 *     at these sizes). Cross-entropy's loss is its own scalar output.
 *  4. The float backward, fed dout = R, is compared with those differences.
 *
 * Error metric everywhere: err = max_i |got_i - ref_i| / max(max_i |ref_i|, 1e-3)
 * (scale-relative, so a near-zero element cannot blow up the ratio); NaN/Inf in the
 * result counts as err = Inf. Tolerances: forward vs double 1e-5, backward vs finite
 * differences 1e-4, unless an op states otherwise next to its check.
 *
 * Backward functions that ACCUMULATE (matmul, rmsnorm, embedding) are called on buffers
 * pre-filled with random values and checked for prefill + gradient; those that
 * OVERWRITE (attention, swiglu, cross-entropy) are called on buffers pre-filled with
 * garbage.
 *
 * The fused ops (op_stem_ffn_*, op_rope_qk_*, op_adamw_rows) promise the bits of the
 * compositions they replace (ops.h), so they are compared with those bitwise; the STEM
 * FFN pair also gets the reference and finite-difference checks of every op.
 *
 * Also: pool_for's contract (every index once, range count and size), a pool restart
 * must not re-run the previous job, and /grad/determinism runs every op at sizes that
 * are split over the pool with 1, 2 and 3 threads and requires bit-identical outputs
 * (ops.h: "results are bit-identical for any thread count"), naming each op that differs.
 *
 * Every check is printed as a TAP comment ("# check ...") and summarised at the end of
 * the run; the binary adds --keep-going so one failing op does not hide the others. */
#include <glib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"
#include "kernels/kernels.h"

#define ERR_FLOOR 1e-3
#define TOL_FWD 1e-5
#define TOL_BWD 1e-4
#define FD_H 1e-5

/* ------------------------------------------------------------------ results */

typedef struct {
  char name[112];
  double err, tol;
  gboolean ok;
} Result;

static Result results[1024];
static int n_results;

/* Records one numeric check; fails the current test (without aborting it, so every
 * check of an op is reported) when err >= tol or err is NaN. */
static void check(double err, double tol, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void
check(double err, double tol, const char *fmt, ...)
{
  char name[112];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  gboolean ok = err < tol; /* false for NaN */
  if (n_results < (int)G_N_ELEMENTS(results)) {
    Result *r = &results[n_results++];
    g_strlcpy(r->name, name, sizeof r->name);
    r->err = err;
    r->tol = tol;
    r->ok = ok;
  }
  g_test_message("check %-64s err=%.3e tol=%.0e %s", name, err, tol, ok ? "ok" : "FAIL");
  if (!ok)
    g_test_fail_printf("%s: err %.3e >= tol %.0e", name, err, tol);
}

/* Boolean check (bit-exactness, masking, ...), recorded like a numeric one. */
static void check_true(gboolean cond, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void
check_true(gboolean cond, const char *fmt, ...)
{
  char name[112];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  check(cond ? 0.0 : INFINITY, 0.5, "%s", name);
}

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state;

static void
rng_seed(uint64_t s)
{
  rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

/* splitmix64 -> uniform [0, 1) */
static double
rng_uniform(void)
{
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static void
fill(float *x, size_t n, double lo, double hi)
{
  for (size_t i = 0; i < n; i++)
    x[i] = (float)(lo + (hi - lo) * rng_uniform());
}

static void
fill_const(float *x, size_t n, float c)
{
  for (size_t i = 0; i < n; i++)
    x[i] = c;
}

/* Per-test allocations, freed by scratch_free() at the end of each test. */
static GPtrArray *scratch;

static float *
fnew(size_t n)
{
  float *p = g_new0(float, n ? n : 1);
  g_ptr_array_add(scratch, p);
  return p;
}

static double *
dnew(size_t n)
{
  double *p = g_new0(double, n ? n : 1);
  g_ptr_array_add(scratch, p);
  return p;
}

static float *
fdup(const float *x, size_t n)
{
  float *p = fnew(n);
  memcpy(p, x, n * sizeof *x);
  return p;
}

static double *
to_d(const float *x, size_t n)
{
  double *p = dnew(n);
  for (size_t i = 0; i < n; i++)
    p[i] = x[i];
  return p;
}

static void
scratch_free(void)
{
  g_ptr_array_set_size(scratch, 0);
}

/* Scale-relative error of got (minus an optional float prefill) against ref. */
static double
rel_err(const float *got, const float *pre, const double *ref, size_t n)
{
  double maxd = 0, maxr = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(got[i]) || !isfinite(ref[i]))
      return INFINITY;
    double g = (double)got[i] - (pre ? (double)pre[i] : 0.0);
    maxd = fmax(maxd, fabs(g - ref[i]));
    maxr = fmax(maxr, fabs(ref[i]));
  }
  return maxd / fmax(maxr, ERR_FLOOR);
}

static double
rel_err_ff(const float *got, const float *ref, size_t n)
{
  double maxd = 0, maxr = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(got[i]))
      return INFINITY;
    maxd = fmax(maxd, fabs((double)got[i] - (double)ref[i]));
    maxr = fmax(maxr, fabs((double)ref[i]));
  }
  return maxd / fmax(maxr, ERR_FLOOR);
}

static double
dot_d(const double *a, const double *b, size_t n)
{
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}

typedef double (*loss_fn)(void *ctx);

/* grad[i] = (L(p + h e_i) - L(p - h e_i)) / 2h, perturbing param in place. */
static void
fd_grad(double *grad, double *param, size_t n, loss_fn f, void *ctx)
{
  for (size_t i = 0; i < n; i++) {
    double save = param[i];
    param[i] = save + FD_H;
    double lp = f(ctx);
    param[i] = save - FD_H;
    double lm = f(ctx);
    param[i] = save;
    grad[i] = (lp - lm) / (2 * FD_H);
  }
}

/* ------------------------------------------------------------------ matmul */

static void
ref_matmul(double *y, const double *x, const double *w, int N, int in, int out)
{
  for (int n = 0; n < N; n++)
    for (int o = 0; o < out; o++) {
      double s = 0;
      for (int i = 0; i < in; i++)
        s += x[n * in + i] * w[o * in + i];
      y[n * out + o] = s;
    }
}

typedef struct {
  double *x, *w, *R, *y;
  int N, in, out;
} MatmulCtx;

static double
matmul_loss(void *p)
{
  MatmulCtx *c = p;
  ref_matmul(c->y, c->x, c->w, c->N, c->in, c->out);
  return dot_d(c->y, c->R, (size_t)c->N * c->out);
}

static void
test_matmul(void)
{
  /* {N, in, out}: tiny; rows split over threads; single row; in = 1; few rows and many
   * outputs (an implementation may split the outputs instead of the rows). */
  static const int cfg[][3] = {{6, 5, 7}, {33, 70, 19}, {1, 3, 2}, {17, 1, 9}, {5, 24, 150}};
  rng_seed(1);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    int N = cfg[ci][0], in = cfg[ci][1], out = cfg[ci][2];
    size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    float *x = fnew(nx), *w = fnew(nw), *R = fnew(ny);
    fill(x, nx, -1, 1);
    fill(w, nw, -1, 1);
    fill(R, ny, -1, 1);
    MatmulCtx c = {to_d(x, nx), to_d(w, nw), to_d(R, ny), dnew(ny), N, in, out};
    double *yref = dnew(ny);
    ref_matmul(yref, c.x, c.w, N, in, out);

    /* forward, accumulate = 0: garbage in y must be overwritten */
    float *y = fnew(ny);
    fill_const(y, ny, 1e3f);
    op_matmul_forward(y, x, w, N, in, out, 0);
    check(rel_err(y, NULL, yref, ny), TOL_FWD, "matmul fwd acc=0 N=%d in=%d out=%d", N, in, out);

    /* forward, accumulate = 1: y = y0 + x W^T */
    float *y0 = fnew(ny);
    fill(y0, ny, -1, 1);
    float *ya = fdup(y0, ny);
    op_matmul_forward(ya, x, w, N, in, out, 1);
    check(rel_err(ya, y0, yref, ny), TOL_FWD, "matmul fwd acc=1 N=%d in=%d out=%d", N, in, out);

    /* finite differences of L = sum(y * R) on the double reference */
    double *gx = dnew(nx), *gw = dnew(nw);
    fd_grad(gx, c.x, nx, matmul_loss, &c);
    fd_grad(gw, c.w, nw, matmul_loss, &c);

    /* backward accumulates into both */
    float *dx0 = fnew(nx), *dw0 = fnew(nw);
    fill(dx0, nx, -1, 1);
    fill(dw0, nw, -1, 1);
    float *dx = fdup(dx0, nx), *dw = fdup(dw0, nw);
    op_matmul_backward(dx, dw, R, x, w, N, in, out);
    check(rel_err(dx, dx0, gx, nx), TOL_BWD, "matmul bwd dx (+=) N=%d in=%d out=%d", N, in, out);
    check(rel_err(dw, dw0, gw, nw), TOL_BWD, "matmul bwd dw (+=) N=%d in=%d out=%d", N, in, out);

    /* dx = NULL: frozen input, only dw */
    float *dw2 = fdup(dw0, nw);
    op_matmul_backward(NULL, dw2, R, x, w, N, in, out);
    check(rel_err(dw2, dw0, gw, nw), TOL_BWD, "matmul bwd dx=NULL dw N=%d in=%d out=%d", N, in, out);

    /* dw = NULL: frozen weight, only dx */
    float *dx2 = fdup(dx0, nx);
    op_matmul_backward(dx2, NULL, R, x, w, N, in, out);
    check(rel_err(dx2, dx0, gx, nx), TOL_BWD, "matmul bwd dw=NULL dx N=%d in=%d out=%d", N, in, out);
  }
  scratch_free();
}

/* ------------------------------------------------------------------ rmsnorm */

static void
ref_rmsnorm(double *y, double *rstd, const double *x, const double *g, int N, int D, double eps)
{
  for (int n = 0; n < N; n++) {
    double ss = 0;
    for (int d = 0; d < D; d++)
      ss += x[n * D + d] * x[n * D + d];
    double r = 1.0 / sqrt(ss / D + eps);
    if (rstd)
      rstd[n] = r;
    for (int d = 0; d < D; d++)
      y[n * D + d] = x[n * D + d] * r * g[d];
  }
}

typedef struct {
  double *x, *g, *R, *y;
  int N, D;
  double eps;
} RmsCtx;

static double
rms_loss(void *p)
{
  RmsCtx *c = p;
  ref_rmsnorm(c->y, NULL, c->x, c->g, c->N, c->D, c->eps);
  return dot_d(c->y, c->R, (size_t)c->N * c->D);
}

static void
test_rmsnorm(void)
{
  /* {N, D}. Not D = 1: there dx = g dy rstd (1 - x^2 rstd^2) ~ eps/x^2 is pure
   * cancellation, ill-conditioned in float whatever the implementation. */
  static const int cfg[][2] = {{6, 8}, {9, 70}, {4, 3}};
  const float eps = 1e-5f;
  rng_seed(2);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    int N = cfg[ci][0], D = cfg[ci][1];
    size_t n = (size_t)N * D;
    float *x = fnew(n), *g = fnew(D), *R = fnew(n);
    fill(x, n, -1, 1);
    for (int r = 0; r < N; r++) /* vary row scale so rstd differs a lot per row */
      for (int d = 0; d < D; d++)
        x[r * D + d] *= (float)pow(4.0, r % 4 - 2);
    fill(g, D, 0.5, 1.5);
    fill(R, n, -1, 1);
    RmsCtx c = {to_d(x, n), to_d(g, D), to_d(R, n), dnew(n), N, D, eps};
    double *yref = dnew(n), *rref = dnew(N);
    ref_rmsnorm(yref, rref, c.x, c.g, N, D, eps);

    float *y = fnew(n), *rstd = fnew(N);
    fill_const(y, n, 1e3f);
    op_rmsnorm_forward(y, rstd, x, g, N, D, eps);
    check(rel_err(y, NULL, yref, n), TOL_FWD, "rmsnorm fwd y N=%d D=%d", N, D);
    /* rstd per row: each row compared on its own scale */
    double e = 0;
    for (int r = 0; r < N; r++)
      e = fmax(e, isfinite(rstd[r]) ? fabs(rstd[r] - rref[r]) / rref[r] : INFINITY);
    check(e, TOL_FWD, "rmsnorm fwd rstd N=%d D=%d", N, D);

    double *gx = dnew(n), *gg = dnew(D);
    fd_grad(gx, c.x, n, rms_loss, &c);
    fd_grad(gg, c.g, D, rms_loss, &c);
    float *dx0 = fnew(n), *dg0 = fnew(D);
    fill(dx0, n, -1, 1);
    fill(dg0, D, -1, 1);
    float *dx = fdup(dx0, n), *dg = fdup(dg0, D);
    op_rmsnorm_backward(dx, dg, R, x, g, rstd, N, D);
    /* dx rows have very different scales (rstd varies 16x): compare row by row */
    double ex = 0;
    for (int r = 0; r < N; r++)
      ex = fmax(ex, rel_err(dx + (size_t)r * D, dx0 + (size_t)r * D, gx + (size_t)r * D, D));
    check(ex, TOL_BWD, "rmsnorm bwd dx (+=, per row) N=%d D=%d", N, D);
    check(rel_err(dg, dg0, gg, D), TOL_BWD, "rmsnorm bwd dg (+=) N=%d D=%d", N, D);
  }
  scratch_free();
}

/* ------------------------------------------------------------------ rope */

/* The explicit rotation: pair (2i, 2i+1) of each head, row r at position t = r % T,
 * angle t * theta^(-2i/hd). */
static void
ref_rope(double *y, const double *x, int B, int T, int nh, int hd, double theta)
{
  for (int r = 0; r < B * T; r++) {
    int t = r % T;
    for (int h = 0; h < nh; h++)
      for (int i = 0; i < hd / 2; i++) {
        double freq = pow(theta, -2.0 * i / hd);
        double a = t * freq, cs = cos(a), sn = sin(a);
        size_t o = (size_t)r * nh * hd + (size_t)h * hd + 2 * i;
        double x0 = x[o], x1 = x[o + 1];
        y[o] = x0 * cs - x1 * sn;
        y[o + 1] = x0 * sn + x1 * cs;
      }
  }
}

typedef struct {
  double *x, *R, *y;
  int B, T, nh, hd;
  double theta;
} RopeCtx;

static double
rope_loss(void *p)
{
  RopeCtx *c = p;
  ref_rope(c->y, c->x, c->B, c->T, c->nh, c->hd, c->theta);
  return dot_d(c->y, c->R, (size_t)c->B * c->T * c->nh * c->hd);
}

static void
test_rope(void)
{
  static const struct { int B, T, nh, hd; float theta; } cfg[] = {
    {2, 5, 3, 8, 10000.f}, {1, 37, 2, 16, 500000.f}, {3, 4, 1, 2, 10000.f}, {2, 6, 4, 6, 100.f}};
  rng_seed(3);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    int B = cfg[ci].B, T = cfg[ci].T, nh = cfg[ci].nh, hd = cfg[ci].hd;
    float theta = cfg[ci].theta;
    size_t n = (size_t)B * T * nh * hd, C = (size_t)nh * hd;
    float *x = fnew(n), *R = fnew(n);
    fill(x, n, -1, 1);
    fill(R, n, -1, 1);
    RopeCtx c = {to_d(x, n), to_d(R, n), dnew(n), B, T, nh, hd, theta};
    double *yref = dnew(n);
    ref_rope(yref, c.x, B, T, nh, hd, theta);

    float *y = fdup(x, n);
    op_rope_forward(y, B, T, nh, hd, theta);
    /* Tolerance 1e-5 scale-relative: the float angle t*freq carries ~1e-7 relative
     * error, i.e. ~4e-6 absolute at t = 36. */
    check(rel_err(y, NULL, yref, n), TOL_FWD, "rope fwd vs rotation B=%d T=%d nh=%d hd=%d th=%g", B, T,
          nh, hd, theta);
    gboolean t0 = TRUE; /* position 0 is the identity, exactly */
    for (int b = 0; b < B; b++)
      t0 &= memcmp(y + (size_t)b * T * C, x + (size_t)b * T * C, C * sizeof(float)) == 0;
    check_true(t0, "rope fwd position 0 unchanged (bitwise) T=%d hd=%d", T, hd);

    double *gx = dnew(n);
    fd_grad(gx, c.x, n, rope_loss, &c);
    float *dx = fdup(R, n);
    op_rope_backward(dx, B, T, nh, hd, theta);
    check(rel_err(dx, NULL, gx, n), TOL_BWD, "rope bwd vs FD B=%d T=%d nh=%d hd=%d", B, T, nh, hd);

    /* backward(forward(x)) == x: rotation is orthogonal */
    float *rt = fdup(y, n);
    op_rope_backward(rt, B, T, nh, hd, theta);
    check(rel_err_ff(rt, x, n), 1e-6, "rope bwd(fwd(x)) == x B=%d T=%d nh=%d hd=%d", B, T, nh, hd);
  }
  scratch_free();
}

/* ------------------------------------------------------------------ attention */

static void
ref_attention(double *out, double *att, const double *q, const double *k, const double *v, int B,
              int T, int nh, int nkv, int hd)
{
  double scale = 1.0 / sqrt((double)hd);
  int rep = nh / nkv;
  double *s = g_new(double, T);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < nh; h++) {
      int kh = h / rep;
      for (int t = 0; t < T; t++) {
        const double *qt = q + ((size_t)(b * T + t) * nh + h) * hd;
        double mx = -INFINITY;
        for (int j = 0; j <= t; j++) {
          const double *kj = k + ((size_t)(b * T + j) * nkv + kh) * hd;
          s[j] = dot_d(qt, kj, hd) * scale;
          mx = fmax(mx, s[j]);
        }
        double z = 0;
        for (int j = 0; j <= t; j++)
          z += (s[j] = exp(s[j] - mx));
        double *ot = out + ((size_t)(b * T + t) * nh + h) * hd;
        for (int d = 0; d < hd; d++)
          ot[d] = 0;
        for (int j = 0; j < T; j++) {
          double p = j <= t ? s[j] / z : 0.0;
          if (att)
            att[(((size_t)b * nh + h) * T + t) * T + j] = p;
          if (j <= t) {
            const double *vj = v + ((size_t)(b * T + j) * nkv + kh) * hd;
            for (int d = 0; d < hd; d++)
              ot[d] += p * vj[d];
          }
        }
      }
    }
  g_free(s);
}

typedef struct {
  double *q, *k, *v, *R, *out;
  int B, T, nh, nkv, hd;
} AttCtx;

static double
att_loss(void *p)
{
  AttCtx *c = p;
  ref_attention(c->out, NULL, c->q, c->k, c->v, c->B, c->T, c->nh, c->nkv, c->hd);
  return dot_d(c->out, c->R, (size_t)c->B * c->T * c->nh * c->hd);
}

static void
test_attention(void)
{
  static const struct { int B, T, nh, nkv, hd; } cfg[] = {
    {2, 5, 4, 2, 4},  /* GQA */
    {2, 5, 4, 4, 4},  /* MHA: nh == nkv */
    {1, 7, 3, 1, 8},  /* MQA, odd nh */
    {3, 1, 2, 1, 4},  /* T = 1: softmax over one key */
    {1, 9, 6, 2, 6},  /* GQA, 3 heads per kv head */
  };
  rng_seed(4);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    int B = cfg[ci].B, T = cfg[ci].T, nh = cfg[ci].nh, nkv = cfg[ci].nkv, hd = cfg[ci].hd;
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    size_t na = (size_t)B * nh * T * T;
    float *q = fnew(nq), *k = fnew(nk), *v = fnew(nk), *R = fnew(nq);
    /* scores q.k/sqrt(hd) of order 1-3: softmax far from uniform and far from one-hot */
    fill(q, nq, -1.5, 1.5);
    fill(k, nk, -1.5, 1.5);
    fill(v, nk, -1, 1);
    fill(R, nq, -1, 1);
    AttCtx c = {to_d(q, nq), to_d(k, nk), to_d(v, nk), to_d(R, nq), dnew(nq), B, T, nh, nkv, hd};
    double *oref = dnew(nq), *aref = dnew(na);
    ref_attention(oref, aref, c.q, c.k, c.v, B, T, nh, nkv, hd);

    float *out = fnew(nq), *att = fnew(na);
    fill_const(out, nq, 1e3f);
    fill_const(att, na, 1e3f); /* the upper triangle must be written as 0 */
    op_attention_forward(out, att, q, k, v, B, T, nh, nkv, hd);
    check(rel_err(out, NULL, oref, nq), TOL_FWD, "attention fwd out B=%d T=%d nh=%d nkv=%d hd=%d", B, T,
          nh, nkv, hd);
    check(rel_err(att, NULL, aref, na), TOL_FWD, "attention fwd att B=%d T=%d nh=%d nkv=%d hd=%d", B, T,
          nh, nkv, hd);
    gboolean upper0 = TRUE;
    for (size_t bh = 0; bh < (size_t)B * nh; bh++)
      for (int t = 0; t < T; t++)
        for (int j = t + 1; j < T; j++)
          upper0 &= att[(bh * T + t) * T + j] == 0.0f;
    check_true(upper0, "attention att upper triangle == 0 nh=%d nkv=%d T=%d", nh, nkv, T);

    /* causality and batch independence: perturb k and v at position s of batch bp;
     * outputs at positions < s of bp and all outputs of other batches stay bit-identical,
     * the output at s changes. */
    if (T > 1) {
      int s = T / 2 + 1 > T - 1 ? T - 1 : T / 2 + 1;
      int bp = B - 1;
      float *k2 = fdup(k, nk), *v2 = fdup(v, nk);
      for (size_t i = 0; i < (size_t)nkv * hd; i++) {
        k2[((size_t)bp * T + s) * nkv * hd + i] += 0.5f;
        v2[((size_t)bp * T + s) * nkv * hd + i] -= 0.5f;
      }
      float *out2 = fnew(nq), *att2 = fnew(na);
      op_attention_forward(out2, att2, q, k2, v2, B, T, nh, nkv, hd);
      size_t C = (size_t)nh * hd;
      gboolean same_past = memcmp(out2 + (size_t)bp * T * C, out + (size_t)bp * T * C,
                                  (size_t)s * C * sizeof(float)) == 0;
      gboolean same_other = memcmp(out2, out, (size_t)bp * T * C * sizeof(float)) == 0;
      gboolean changed = memcmp(out2 + ((size_t)bp * T + s) * C, out + ((size_t)bp * T + s) * C,
                                C * sizeof(float)) != 0;
      check_true(same_past, "attention causal: future k/v leave past out bitwise nh=%d nkv=%d", nh, nkv);
      check_true(same_other, "attention: batch %d k/v leave other batches bitwise nh=%d", bp, nh);
      check_true(changed, "attention: perturbed k/v change out at that position nh=%d", nh);
    }

    double *gq = dnew(nq), *gk = dnew(nk), *gv = dnew(nk);
    fd_grad(gq, c.q, nq, att_loss, &c);
    fd_grad(gk, c.k, nk, att_loss, &c);
    fd_grad(gv, c.v, nk, att_loss, &c);
    float *dq = fnew(nq), *dk = fnew(nk), *dv = fnew(nk), *scr = fnew(na);
    fill_const(dq, nq, 77.f); /* OVERWRITTEN: garbage must not survive */
    fill_const(dk, nk, 77.f);
    fill_const(dv, nk, 77.f);
    fill_const(scr, na, 77.f);
    float *att_saved = fdup(att, na);
    op_attention_backward(dq, dk, dv, scr, R, att, q, k, v, B, T, nh, nkv, hd);
    check(rel_err(dq, NULL, gq, nq), TOL_BWD, "attention bwd dq B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh,
          nkv, hd);
    check(rel_err(dk, NULL, gk, nk), TOL_BWD, "attention bwd dk B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh,
          nkv, hd);
    check(rel_err(dv, NULL, gv, nk), TOL_BWD, "attention bwd dv B=%d T=%d nh=%d nkv=%d hd=%d", B, T, nh,
          nkv, hd);
    check_true(memcmp(att, att_saved, na * sizeof(float)) == 0, "attention bwd leaves att untouched nh=%d",
               nh);
  }
  scratch_free();
}

/* ------------------------------------------------------------------ swiglu */

static void
ref_swiglu(double *m, const double *g, const double *u, size_t n)
{
  for (size_t i = 0; i < n; i++)
    m[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
}

/* L = sum_i m_i R_i is separable: perturbing g_i or u_i changes term i only, so the
 * central difference of L is the central difference of that one term. */
static void
swi_fd(double *gg, double *gu, const double *g, const double *u, const double *R, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    double gp = g[i] + FD_H, gm = g[i] - FD_H, up = u[i] + FD_H, um = u[i] - FD_H, a, b;
    ref_swiglu(&a, &gp, &u[i], 1);
    ref_swiglu(&b, &gm, &u[i], 1);
    gg[i] = (a - b) * R[i] / (2 * FD_H);
    ref_swiglu(&a, &g[i], &up, 1);
    ref_swiglu(&b, &g[i], &um, 1);
    gu[i] = (a - b) * R[i] / (2 * FD_H);
  }
}

static void
test_swiglu(void)
{
  static const size_t cfg[] = {37, 1000, 1, 20011};
  rng_seed(5);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    size_t n = cfg[ci];
    float *g = fnew(n), *u = fnew(n), *R = fnew(n);
    fill(g, n, -4, 4);
    fill(u, n, -2, 2);
    fill(R, n, -1, 1);
    if (n >= 4) { /* saturated gates: exp must not overflow into NaN */
      g[0] = 100.f;
      g[1] = -100.f;
      g[2] = 0.f;
      g[3] = -30.f;
    }
    double *gd = to_d(g, n), *ud = to_d(u, n), *Rd = to_d(R, n);
    double *mref = dnew(n);
    ref_swiglu(mref, gd, ud, n);
    float *m = fnew(n);
    fill_const(m, n, 1e3f);
    op_swiglu_forward(m, g, u, n);
    check(rel_err(m, NULL, mref, n), TOL_FWD, "swiglu fwd n=%zu", n);

    double *gg = dnew(n), *gu = dnew(n);
    swi_fd(gg, gu, gd, ud, Rd, n);
    float *dg = fnew(n), *du = fnew(n);
    fill_const(dg, n, 77.f);
    fill_const(du, n, 77.f);
    op_swiglu_backward(dg, du, R, g, u, n);
    check(rel_err(dg, NULL, gg, n), TOL_BWD, "swiglu bwd dg n=%zu", n);
    check(rel_err(du, NULL, gu, n), TOL_BWD, "swiglu bwd du n=%zu", n);
  }
  scratch_free();
}

/* ------------------------------------------------------------------ embedding */

typedef struct {
  double *table, *R;
  const int32_t *ids;
  int N, D;
} EmbCtx;

static double
emb_loss(void *p)
{
  EmbCtx *c = p;
  double s = 0;
  for (int i = 0; i < c->N; i++)
    s += dot_d(c->table + (size_t)c->ids[i] * c->D, c->R + (size_t)i * c->D, c->D);
  return s;
}

static void
test_embedding(void)
{
  rng_seed(6);
  for (int ci = 0; ci < 2; ci++) {
    static const int32_t ids0[] = {3, 1, 3, 0, 8, 3, 1, 5, 5, 2, 3, 7}; /* 4 and 6 unused */
    int V = ci == 0 ? 9 : 13, D = ci == 0 ? 6 : 70, N = ci == 0 ? 12 : 50;
    int32_t *ids = g_new(int32_t, N);
    g_ptr_array_add(scratch, ids);
    gboolean *used = g_new0(gboolean, V);
    g_ptr_array_add(scratch, used);
    for (int i = 0; i < N; i++) {
      ids[i] = ci == 0 ? ids0[i] : (int32_t)(rng_uniform() * (V - 2)); /* V-2, V-1 unused */
      used[ids[i]] = TRUE;
    }
    size_t nt = (size_t)V * D, no = (size_t)N * D;
    float *table = fnew(nt), *R = fnew(no);
    fill(table, nt, -1, 1);
    fill(R, no, -1, 1);

    float *out = fnew(no);
    fill_const(out, no, 1e3f);
    op_embedding_forward(out, table, ids, N, D);
    gboolean exact = TRUE;
    for (int i = 0; i < N; i++)
      exact &= memcmp(out + (size_t)i * D, table + (size_t)ids[i] * D, D * sizeof(float)) == 0;
    check_true(exact, "embedding fwd rows copied bitwise V=%d D=%d N=%d", V, D, N);

    EmbCtx c = {to_d(table, nt), to_d(R, no), ids, N, D};
    double *gt = dnew(nt);
    fd_grad(gt, c.table, nt, emb_loss, &c);
    float *dt0 = fnew(nt);
    fill(dt0, nt, -1, 1);
    float *dt = fdup(dt0, nt);
    op_embedding_backward(dt, R, ids, N, D);
    check(rel_err(dt, dt0, gt, nt), TOL_BWD, "embedding bwd (+=, repeated ids) V=%d D=%d N=%d", V, D, N);
    gboolean untouched = TRUE;
    for (int r = 0; r < V; r++)
      if (!used[r])
        untouched &= memcmp(dt + (size_t)r * D, dt0 + (size_t)r * D, D * sizeof(float)) == 0;
    check_true(untouched, "embedding bwd leaves unused rows bitwise V=%d", V);
  }
  scratch_free();
}

/* ------------------------------------------------------------------ cross-entropy */

typedef struct {
  double *logits;
  const int32_t *targets;
  int N, V;
} CeCtx;

/* Mean over valid positions of logsumexp(row) - row[target]; probs optional. */
static double
ref_ce(double *probs, const double *logits, const int32_t *targets, int N, int V)
{
  double sum = 0;
  int nv = 0;
  for (int n = 0; n < N; n++) {
    const double *l = logits + (size_t)n * V;
    double mx = -INFINITY, z = 0;
    for (int j = 0; j < V; j++)
      mx = fmax(mx, l[j]);
    for (int j = 0; j < V; j++)
      z += exp(l[j] - mx);
    if (probs)
      for (int j = 0; j < V; j++)
        probs[(size_t)n * V + j] = exp(l[j] - mx) / z;
    if (targets[n] >= 0) {
      sum += mx + log(z) - l[targets[n]];
      nv++;
    }
  }
  return sum / nv;
}

static double
ce_loss(void *p)
{
  CeCtx *c = p;
  return ref_ce(NULL, c->logits, c->targets, c->N, c->V);
}

static void
test_crossentropy(void)
{
  rng_seed(7);
  for (int ci = 0; ci < 2; ci++) {
    static const int32_t t0[] = {3, -1, 0, 10, -1, 7};
    int N = ci == 0 ? 6 : 40, V = ci == 0 ? 11 : 50;
    int32_t *tg = g_new(int32_t, N);
    g_ptr_array_add(scratch, tg);
    for (int i = 0; i < N; i++)
      tg[i] = ci == 0 ? t0[i] : (rng_uniform() < 0.15 ? -1 : (int32_t)(rng_uniform() * V));
    size_t n = (size_t)N * V;
    float *logits = fnew(n);
    fill(logits, n, -3, 3);
    /* rows far from 0: a softmax without max-subtraction overflows / underflows */
    for (int j = 0; j < V; j++) {
      logits[3 * V + j] += 200.f;
      logits[5 * V + j] -= 200.f;
    }
    CeCtx c = {to_d(logits, n), tg, N, V};
    double *pref = dnew(n);
    double lref = ref_ce(pref, c.logits, tg, N, V);

    /* separate buffers */
    float *probs = fnew(n), *lcopy = fdup(logits, n);
    fill_const(probs, n, 1e3f);
    float loss = op_crossentropy_forward(probs, logits, tg, N, V);
    check(isfinite(loss) ? fabs(loss - lref) / fabs(lref) : INFINITY, TOL_FWD,
          "crossentropy fwd loss vs log-sum-exp N=%d V=%d", N, V);
    double ep = 0; /* probs of the valid rows (ignored rows are unspecified) */
    for (int r = 0; r < N; r++)
      if (tg[r] >= 0)
        ep = fmax(ep, rel_err(probs + (size_t)r * V, NULL, pref + (size_t)r * V, V));
    check(ep, TOL_FWD, "crossentropy fwd probs N=%d V=%d", N, V);
    check_true(memcmp(logits, lcopy, n * sizeof(float)) == 0, "crossentropy fwd leaves logits N=%d", N);

    double *gl = dnew(n);
    fd_grad(gl, c.logits, n, ce_loss, &c);
    float *dl = fnew(n);
    fill_const(dl, n, 77.f);
    op_crossentropy_backward(dl, probs, tg, N, V);
    check(rel_err(dl, NULL, gl, n), TOL_BWD, "crossentropy bwd N=%d V=%d", N, V);
    gboolean zero = TRUE;
    for (int r = 0; r < N; r++)
      if (tg[r] < 0)
        for (int j = 0; j < V; j++)
          zero &= dl[(size_t)r * V + j] == 0.0f;
    check_true(zero, "crossentropy bwd ignored rows exactly 0 N=%d", N);

    /* aliased: probs == logits, then dlogits == probs */
    float *buf = fdup(logits, n);
    float loss2 = op_crossentropy_forward(buf, buf, tg, N, V);
    check(isfinite(loss2) ? fabs(loss2 - lref) / fabs(lref) : INFINITY, TOL_FWD,
          "crossentropy fwd aliased loss N=%d V=%d", N, V);
    ep = 0;
    for (int r = 0; r < N; r++)
      if (tg[r] >= 0)
        ep = fmax(ep, rel_err(buf + (size_t)r * V, NULL, pref + (size_t)r * V, V));
    check(ep, TOL_FWD, "crossentropy fwd aliased probs N=%d V=%d", N, V);
    op_crossentropy_backward(buf, buf, tg, N, V);
    check(rel_err(buf, NULL, gl, n), TOL_BWD, "crossentropy bwd aliased N=%d V=%d", N, V);
  }

  /* A target 120 nats below the row max: its probability (~1e-52) underflows float, so
   * a loss taken as -log(prob) is wrong there; log-sum-exp minus the target logit is not.
   * Tolerance 1e-5 relative as for every loss above. */
  {
    int32_t tg[2] = {0, 2};
    float lg[2 * 4] = {-120.f, 0.f, 0.5f, -1.f, /* row 2: an ordinary row */ 0.3f, -0.2f, 1.f, 0.f};
    float pr[2 * 4];
    double *ld = to_d(lg, 8);
    double lref = ref_ce(NULL, ld, tg, 2, 4);
    float l = op_crossentropy_forward(pr, lg, tg, 2, 4);
    check(isfinite(l) ? fabs(l - lref) / fabs(lref) : INFINITY, TOL_FWD,
          "crossentropy fwd loss, target 120 below max (ref %.4f, got %.4f)", lref, l);
  }

  /* All targets ignored: the mean over zero positions is not specified by the header;
   * report what happens (a NaN here would poison a fully padded batch). */
  {
    int32_t tg[3] = {-1, -1, -1};
    float lg[3 * 4] = {0};
    float pr[3 * 4];
    float l = op_crossentropy_forward(pr, lg, tg, 3, 4);
    g_test_message("info crossentropy with every target ignored returns %g", l);
    op_crossentropy_backward(pr, pr, tg, 3, 4);
    gboolean fin = TRUE;
    for (int i = 0; i < 12; i++)
      fin &= isfinite(pr[i]);
    g_test_message("info crossentropy backward with every target ignored: %s",
                   fin ? "finite" : "non-finite");
  }
  scratch_free();
}

/* ------------------------------------------------------------------ adamw */

static void
test_adamw(void)
{
  static const struct { size_t n; float lr, b1, b2, eps, wd, gs; } cfg[] = {
    {37, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f},
    {1000, 3e-3f, 0.8f, 0.999f, 1e-6f, 0.0f, 1.0f},
    {5, 1e-1f, 0.9f, 0.99f, 1e-8f, 0.5f, 2.0f},
    {40009, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.25f},
  };
  rng_seed(8);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    size_t n = cfg[ci].n;
    float lr = cfg[ci].lr, b1 = cfg[ci].b1, b2 = cfg[ci].b2, eps = cfg[ci].eps, wd = cfg[ci].wd,
          gs = cfg[ci].gs;
    float *p = fnew(n), *m = fnew(n), *v = fnew(n), *g = fnew(n);
    fill(p, n, -1, 1);
    double *pd = to_d(p, n), *md = dnew(n), *vd = dnew(n);
    double e_p = 0, e_m = 0, e_v = 0;
    for (int t = 1; t <= 3; t++) {
      fill(g, n, -1, 1);
      g[0] = 0.f; /* a zero gradient: m = v = 0 on step 1, update must be 0/eps = 0 */
      /* Hand-written PyTorch AdamW in double, from the float hyper-parameters. */
      double bc1 = 1.0 - pow((double)b1, t), bc2 = 1.0 - pow((double)b2, t);
      for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * gs;
        md[i] = b1 * md[i] + (1.0 - b1) * gi;
        vd[i] = b2 * vd[i] + (1.0 - b2) * gi * gi;
        pd[i] *= 1.0 - (double)lr * wd;
        pd[i] -= lr * (md[i] / bc1) / (sqrt(vd[i] / bc2) + eps);
      }
      op_adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t, gs);
      e_p = fmax(e_p, rel_err(p, NULL, pd, n));
      e_m = fmax(e_m, rel_err(m, NULL, md, n));
      e_v = fmax(e_v, rel_err(v, NULL, vd, n));
    }
    /* p ~ 1 and |lr * update| <= ~lr: float p rounding ~6e-8 per step */
    check(e_p, TOL_FWD, "adamw p over 3 steps n=%zu lr=%g wd=%g gs=%g", n, lr, wd, gs);
    check(e_m, TOL_FWD, "adamw m over 3 steps n=%zu b1=%g", n, b1);
    check(e_v, TOL_FWD, "adamw v over 3 steps n=%zu b2=%g", n, b2);
  }
  scratch_free();
}

/* ------------------------------------------------------------------ sumsq, scale, add */

static void
test_sumsq(void)
{
  rng_seed(9);
  static const size_t cfg[] = {1, 37, 100003};
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    size_t n = cfg[ci];
    float *x = fnew(n);
    fill(x, n, -1, 1);
    double ref = 0;
    for (size_t i = 0; i < n; i++)
      ref += (double)x[i] * x[i];
    double got = op_sumsq(x, n);
    /* double accumulation: only summation-order differences (~n * 1e-16) remain; a float
     * accumulator would be ~1e-4 off at n = 1e5 */
    check(isfinite(got) ? fabs(got - ref) / ref : INFINITY, 1e-9, "sumsq n=%zu", n);
  }
  check_true(op_sumsq(NULL, 0) == 0.0, "sumsq n=0 is 0");
  /* squares above FLT_MAX: products must be formed in double, as the accumulation */
  float big[3] = {1e20f, -3e19f, 1.0f};
  double ref = (double)big[0] * big[0] + (double)big[1] * big[1] + 1.0;
  double got = op_sumsq(big, 3);
  check(isfinite(got) ? fabs(got - ref) / ref : INFINITY, 1e-12, "sumsq of 1e20 (square > FLT_MAX)");
  scratch_free();
}

static void
test_scale(void)
{
  rng_seed(10);
  size_t n = 40009;
  float *x = fnew(n);
  fill(x, n, -10, 10);
  static const float ss[] = {-0.37f, 0.f, 1.f, 3.5f};
  for (size_t si = 0; si < G_N_ELEMENTS(ss); si++) {
    float *y = fdup(x, n), *ref = fnew(n);
    for (size_t i = 0; i < n; i++)
      ref[i] = x[i] * ss[si];
    op_scale(y, n, ss[si]);
    /* one float multiply per element: exact */
    check_true(memcmp(y, ref, n * sizeof(float)) == 0, "scale n=%zu s=%g bitwise", n, ss[si]);
  }
  op_scale(NULL, 0, 2.f);
  scratch_free();
}

static void
test_add(void)
{
  rng_seed(11);
  size_t n = 40009;
  float *x = fnew(n), *y = fnew(n), *ref = fnew(n);
  fill(x, n, -1, 1);
  fill(y, n, -1, 1);
  for (size_t i = 0; i < n; i++)
    ref[i] = y[i] + x[i];
  op_add_inplace(y, x, n);
  check_true(memcmp(y, ref, n * sizeof(float)) == 0, "add_inplace n=%zu bitwise", n);
  scratch_free();
}

/* ------------------------------------------------------------------ fused ops */

static int32_t *
inew(size_t n)
{
  int32_t *p = g_new0(int32_t, n ? n : 1);
  g_ptr_array_add(scratch, p);
  return p;
}

static gboolean
same_bits(const float *a, const float *b, size_t n)
{
  return memcmp(a, b, n * sizeof(float)) == 0;
}

/* The CPU backend's entries are the op functions themselves (kernels/cpu/backend.c),
 * so checking the op_* functions checks the backend. */
static void
test_fused_wiring(void)
{
  const StemKernels *K = stem_kernels_cpu();
  check_true(K->abi == STEM_KERNELS_ABI && K->stem_ffn_forward == op_stem_ffn_forward &&
                 K->stem_ffn_backward == op_stem_ffn_backward && K->rope_qk_forward == op_rope_qk_forward &&
                 K->rope_qk_backward == op_rope_qk_backward && K->adamw_rows == op_adamw_rows,
             "CPU backend's fused entries are the op_* functions");
}

/* Rows live in a [Vr, rstride] buffer and the op sees the column block at rcol (a STEM
 * layer's columns of a row cache when rstride > F); gradient rows likewise in a
 * [Vg, gstride] buffer at gcol. The composition is the engine's: a gather
 * (op_embedding_forward for a plain table, else gather_rows) then op_swiglu_forward;
 * op_swiglu_backward then the scatter (op_embedding_backward or scatter_rows). */
static void
test_stem_ffn(void)
{
  static const struct { int N, F, Vr, rstride, rcol, Vg, gstride, gcol; } cfg[] = {
    {1, 5, 3, 5, 0, 3, 5, 0},             /* N = 1 */
    {37, 70, 9, 70, 0, 9, 70, 0},         /* the model's case: a [V, F] table */
    {50, 33, 7, 99, 33, 5, 33, 0},        /* cache slots (stride 3F, layer 1) -> unique rows */
    {300, 256, 40, 256, 0, 40, 256, 0},   /* split over the pool, both directions */
    {129, 257, 11, 600, 300, 13, 514, 257}};
  const StemKernels *K = stem_kernels_cpu();
  rng_seed(14);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    const int N = cfg[ci].N, F = cfg[ci].F, Vr = cfg[ci].Vr, Vg = cfg[ci].Vg, rcol = cfg[ci].rcol,
              gcol = cfg[ci].gcol;
    const size_t rs = cfg[ci].rstride, gs = cfg[ci].gstride, n = (size_t)N * F;
    const size_t nr = (size_t)Vr * rs, ng = (size_t)Vg * gs;
    const gboolean plain_r = rs == (size_t)F && rcol == 0, plain_g = gs == (size_t)F && gcol == 0;
    float *rows = fnew(nr), *g = fnew(n), *dm = fnew(n), *dr0 = fnew(ng);
    fill(rows, nr, -2, 2);
    fill(g, n, -4, 4);
    fill(dm, n, -1, 1);
    fill(dr0, ng, -1, 1);
    if (n >= 4) { /* saturated gates, as in /grad/swiglu */
      g[0] = 100.f;
      g[1] = -100.f;
      g[2] = 0.f;
      g[3] = -30.f;
    }
    /* repeated rows on both sides; gidx its own array unless the layouts match */
    int32_t *ridx = inew(N), *gidx = inew(N);
    for (int i = 0; i < N; i++) {
      ridx[i] = (int32_t)(rng_uniform() * Vr);
      gidx[i] = (int32_t)(rng_uniform() * Vg);
    }
    if (plain_r && plain_g && Vr == Vg)
      memcpy(gidx, ridx, N * sizeof *ridx);

    /* composition */
    float *u = fnew(n), *mc = fnew(n), *dgc = fnew(n), *du = fnew(n), *drc = fdup(dr0, ng);
    if (plain_r)
      op_embedding_forward(u, rows, ridx, N, F);
    else
      K->gather_rows(u, rows + rcol, ridx, N, F, rs);
    op_swiglu_forward(mc, g, u, n);
    op_swiglu_backward(dgc, du, dm, g, u, n);
    if (plain_g)
      op_embedding_backward(drc, du, gidx, N, F);
    else
      K->scatter_rows(drc + gcol, du, gidx, N, F, gs);

    /* fused, on garbage-filled outputs */
    float *m = fnew(n), *dg = fnew(n), *dr = fdup(dr0, ng);
    fill_const(m, n, 1e3f);
    fill_const(dg, n, 77.f);
    op_stem_ffn_forward(m, g, rows + rcol, ridx, N, F, rs);
    op_stem_ffn_backward(dg, dr + gcol, dm, g, rows + rcol, ridx, rs, gidx, gs, N, F);
    check_true(same_bits(m, mc, n), "stem_ffn fwd == gather + swiglu (bitwise) N=%d F=%d rstride=%zu", N, F, rs);
    check_true(same_bits(dg, dgc, n), "stem_ffn bwd dg == swiglu bwd (bitwise) N=%d F=%d", N, F);
    check_true(same_bits(dr, drc, ng), "stem_ffn bwd drows == swiglu bwd + scatter (bitwise) N=%d gstride=%zu",
               N, gs);

    /* reference and finite differences: dL/du_i of L = sum m R is the per-position
     * difference of swi_fd, added into the gradient row of position i */
    double *gd = to_d(g, n), *ud = to_d(u, n), *Rd = to_d(dm, n), *md = dnew(n);
    ref_swiglu(md, gd, ud, n);
    check(rel_err(m, NULL, md, n), TOL_FWD, "stem_ffn fwd vs reference N=%d F=%d", N, F);
    double *gg = dnew(n), *gu = dnew(n), *gr = dnew(ng);
    swi_fd(gg, gu, gd, ud, Rd, n);
    for (int i = 0; i < N; i++)
      for (int f = 0; f < F; f++)
        gr[(size_t)gidx[i] * gs + gcol + f] += gu[(size_t)i * F + f];
    check(rel_err(dg, NULL, gg, n), TOL_BWD, "stem_ffn bwd dg vs FD N=%d F=%d", N, F);
    check(rel_err(dr, dr0, gr, ng), TOL_BWD, "stem_ffn bwd drows (+=, repeated rows) vs FD N=%d F=%d", N, F);
  }
  op_stem_ffn_forward(NULL, NULL, NULL, NULL, 0, 8, 8);
  op_stem_ffn_backward(NULL, NULL, NULL, NULL, NULL, NULL, 8, NULL, 8, 0, 8);
  scratch_free();
}

static void
test_rope_qk(void)
{
  static const struct { int B, T, nh, nkv, hd; float theta; } cfg[] = {
    {1, 1, 2, 1, 8, 10000.f}, {2, 13, 4, 2, 16, 10000.f}, {3, 7, 3, 3, 7, 500000.f}, {2, 33, 6, 1, 64, 10000.f}};
  rng_seed(15);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    const int B = cfg[ci].B, T = cfg[ci].T, nh = cfg[ci].nh, nkv = cfg[ci].nkv, hd = cfg[ci].hd;
    const float theta = cfg[ci].theta;
    const size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    float *q = fnew(nq), *k = fnew(nk);
    fill(q, nq, -1, 1);
    fill(k, nk, -1, 1);
    for (int bwd = 0; bwd <= 1; bwd++) {
      float *q1 = fdup(q, nq), *k1 = fdup(k, nk), *q2 = fdup(q, nq), *k2 = fdup(k, nk);
      if (bwd) {
        op_rope_qk_backward(q1, k1, B, T, nh, nkv, hd, theta);
        op_rope_backward(q2, B, T, nh, hd, theta);
        op_rope_backward(k2, B, T, nkv, hd, theta);
      } else {
        op_rope_qk_forward(q1, k1, B, T, nh, nkv, hd, theta);
        op_rope_forward(q2, B, T, nh, hd, theta);
        op_rope_forward(k2, B, T, nkv, hd, theta);
      }
      check_true(same_bits(q1, q2, nq) && same_bits(k1, k2, nk),
                 "rope_qk %s == rope on q, then k (bitwise) B=%d T=%d nh=%d nkv=%d hd=%d", bwd ? "bwd" : "fwd", B,
                 T, nh, nkv, hd);
    }
  }
  scratch_free();
}

static void
test_adamw_rows(void)
{
  /* V rows of `stride` floats; the op sees the W columns at col */
  static const struct { int N, W, V, stride, col; } cfg[] = {
    {1, 7, 3, 7, 0}, {5, 33, 12, 100, 40}, {40, 1000, 50, 1000, 0}, {23, 1024, 64, 3072, 1024}};
  rng_seed(16);
  for (size_t ci = 0; ci < G_N_ELEMENTS(cfg); ci++) {
    const int N = cfg[ci].N, W = cfg[ci].W, V = cfg[ci].V, col = cfg[ci].col;
    const size_t stride = cfg[ci].stride, np = (size_t)V * stride, ngr = (size_t)N * W;
    float *p = fnew(np), *m = fnew(np), *v = fnew(np), *g = fnew(ngr);
    fill(p, np, -1, 1);
    fill(m, np, -0.01, 0.01);
    fill(v, np, 0, 1e-3);
    /* N distinct rows in shuffled order (Fisher-Yates over all V) */
    int32_t *perm = inew(V);
    for (int r = 0; r < V; r++)
      perm[r] = r;
    for (int r = V - 1; r > 0; r--) {
      int o = (int)(rng_uniform() * (r + 1));
      int32_t t = perm[r];
      perm[r] = perm[o];
      perm[o] = t;
    }
    float *p1 = fdup(p, np), *m1 = fdup(m, np), *v1 = fdup(v, np);
    float *p2 = fdup(p, np), *m2 = fdup(m, np), *v2 = fdup(v, np);
    for (int t = 1; t <= 3; t++) {
      fill(g, ngr, -1, 1);
      op_adamw_rows(p1 + col, m1 + col, v1 + col, g, perm, N, W, stride, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.5f);
      for (int i = 0; i < N; i++) {
        size_t off = (size_t)col + (size_t)perm[i] * stride;
        op_adamw(p2 + off, g + (size_t)i * W, m2 + off, v2 + off, W, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.5f);
      }
    }
    /* whole buffers: rows and columns the op must not touch are compared too */
    check_true(same_bits(p1, p2, np) && same_bits(m1, m2, np) && same_bits(v1, v2, np),
               "adamw_rows == op_adamw per row, 3 steps (bitwise) N=%d W=%d stride=%zu", N, W, stride);
    check_true(!same_bits(p1, p, np), "adamw_rows moved the parameters N=%d W=%d", N, W);
  }
  op_adamw_rows(NULL, NULL, NULL, NULL, NULL, 0, 8, 8, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 1.f);
  scratch_free();
}

/* ------------------------------------------------------------------ determinism */

/* Outputs of one run of every op: concatenated bytes plus a label per block, so a
 * mismatch between thread counts can name the op. */
typedef struct {
  GByteArray *bytes;
  GArray *off;     /* guint: start of each block */
  GPtrArray *name; /* char *: label of each block */
} Outputs;

static void
keep(Outputs *o, const char *label, const void *p, size_t nbytes)
{
  guint off = o->bytes->len;
  g_array_append_val(o->off, off);
  g_ptr_array_add(o->name, g_strdup(label));
  g_byte_array_append(o->bytes, p, (guint)nbytes);
}

static void
outputs_free(Outputs *o)
{
  g_byte_array_unref(o->bytes);
  g_array_unref(o->off);
  g_ptr_array_unref(o->name);
  g_free(o);
}

/* Runs every op once at sizes large enough to be split over the pool and returns all
 * outputs, for a bitwise comparison between thread counts. */
static Outputs *
run_all_ops(void)
{
  Outputs *o = g_new0(Outputs, 1);
  o->bytes = g_byte_array_new();
  o->off = g_array_new(FALSE, FALSE, sizeof(guint));
  o->name = g_ptr_array_new_with_free_func(g_free);
#define KEEP(label, ptr, count) keep(o, label, (ptr), (count) * sizeof *(ptr))
  rng_seed(12);
  { /* matmul */
    int N = 67, in = 96, out = 80;
    size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    float *x = fnew(nx), *w = fnew(nw), *y = fnew(ny), *dy = fnew(ny);
    fill(x, nx, -1, 1);
    fill(w, nw, -1, 1);
    fill(dy, ny, -1, 1);
    op_matmul_forward(y, x, w, N, in, out, 0);
    KEEP("matmul fwd N=67 in=96 out=80", y, ny);
    op_matmul_forward(y, x, w, N, in, out, 1);
    KEEP("matmul fwd acc=1 N=67 in=96 out=80", y, ny);
    float *dx = fnew(nx), *dw = fnew(nw);
    op_matmul_backward(dx, dw, dy, x, w, N, in, out);
    KEEP("matmul bwd dx N=67 in=96 out=80", dx, nx);
    KEEP("matmul bwd dw N=67 in=96 out=80", dw, nw);
  }
  /* matmul at row counts where the split strategy may change with the thread count
   * (1 row = decode, 20 rows = more than one range per thread of 16 rows with 1 thread
   * but not with 2), many outputs */
  static const int mmshape[][3] = {{1, 64, 300}, {20, 48, 200}, {31, 33, 129}};
  for (size_t si = 0; si < G_N_ELEMENTS(mmshape); si++) {
    int N = mmshape[si][0], in = mmshape[si][1], out = mmshape[si][2];
    size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    float *x = fnew(nx), *w = fnew(nw), *y = fnew(ny), *dy = fnew(ny), *dx = fnew(nx), *dw = fnew(nw);
    fill(x, nx, -1, 1);
    fill(w, nw, -1, 1);
    fill(dy, ny, -1, 1);
    op_matmul_forward(y, x, w, N, in, out, 0);
    char lab[64];
    snprintf(lab, sizeof lab, "matmul fwd N=%d in=%d out=%d", N, in, out);
    KEEP(lab, y, ny);
    op_matmul_backward(dx, dw, dy, x, w, N, in, out);
    snprintf(lab, sizeof lab, "matmul bwd dx N=%d in=%d out=%d", N, in, out);
    KEEP(lab, dx, nx);
    snprintf(lab, sizeof lab, "matmul bwd dw N=%d in=%d out=%d", N, in, out);
    KEEP(lab, dw, nw);
  }
  { /* attention */
    int B = 2, T = 33, nh = 4, nkv = 2, hd = 16;
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd, na = (size_t)B * nh * T * T;
    float *q = fnew(nq), *k = fnew(nk), *v = fnew(nk), *out = fnew(nq), *att = fnew(na);
    float *dout = fnew(nq), *dq = fnew(nq), *dk = fnew(nk), *dv = fnew(nk), *scr = fnew(na);
    fill(q, nq, -1, 1);
    fill(k, nk, -1, 1);
    fill(v, nk, -1, 1);
    fill(dout, nq, -1, 1);
    op_attention_forward(out, att, q, k, v, B, T, nh, nkv, hd);
    KEEP("attention fwd out", out, nq);
    KEEP("attention fwd att", att, na);
    op_attention_backward(dq, dk, dv, scr, dout, att, q, k, v, B, T, nh, nkv, hd);
    KEEP("attention bwd dq", dq, nq);
    KEEP("attention bwd dk", dk, nk);
    KEEP("attention bwd dv", dv, nk);
  }
  { /* rmsnorm */
    int N = 64, D = 96;
    size_t n = (size_t)N * D;
    float *x = fnew(n), *g = fnew(D), *y = fnew(n), *r = fnew(N), *dy = fnew(n), *dx = fnew(n),
          *dg = fnew(D);
    fill(x, n, -1, 1);
    fill(g, D, 0.5, 1.5);
    fill(dy, n, -1, 1);
    op_rmsnorm_forward(y, r, x, g, N, D, 1e-5f);
    op_rmsnorm_backward(dx, dg, dy, x, g, r, N, D);
    KEEP("rmsnorm fwd y", y, n);
    KEEP("rmsnorm fwd rstd", r, N);
    KEEP("rmsnorm bwd dx", dx, n);
    KEEP("rmsnorm bwd dg", dg, D);
  }
  { /* embedding backward with many repeats */
    int V = 7, D = 32, N = 200;
    int32_t *ids = g_new(int32_t, N);
    g_ptr_array_add(scratch, ids);
    for (int i = 0; i < N; i++)
      ids[i] = (int32_t)(rng_uniform() * V);
    float *dout = fnew((size_t)N * D), *dt = fnew((size_t)V * D);
    fill(dout, (size_t)N * D, -1, 1);
    op_embedding_backward(dt, dout, ids, N, D);
    KEEP("embedding bwd", dt, (size_t)V * D);
  }
  { /* cross-entropy */
    int N = 64, V = 100;
    size_t n = (size_t)N * V;
    int32_t *tg = g_new(int32_t, N);
    g_ptr_array_add(scratch, tg);
    for (int i = 0; i < N; i++)
      tg[i] = i % 9 == 0 ? -1 : (int32_t)(rng_uniform() * V);
    float *lg = fnew(n), *pr = fnew(n);
    fill(lg, n, -5, 5);
    float loss = op_crossentropy_forward(pr, lg, tg, N, V);
    KEEP("crossentropy loss", &loss, 1);
    op_crossentropy_backward(pr, pr, tg, N, V);
    KEEP("crossentropy bwd", pr, n);
  }
  { /* swiglu, rope, adamw, sumsq */
    size_t n = 4099;
    float *g = fnew(n), *u = fnew(n), *m = fnew(n), *dg = fnew(n), *du = fnew(n);
    fill(g, n, -4, 4);
    fill(u, n, -1, 1);
    op_swiglu_forward(m, g, u, n);
    op_swiglu_backward(dg, du, u, g, u, n);
    KEEP("swiglu fwd", m, n);
    KEEP("swiglu bwd dg", dg, n);
    KEEP("swiglu bwd du", du, n);
    float *x = fnew(2 * 33 * 4 * 16);
    fill(x, 2 * 33 * 4 * 16, -1, 1);
    op_rope_forward(x, 2, 33, 4, 16, 10000.f);
    KEEP("rope fwd", x, 2 * 33 * 4 * 16);
    float *p = fnew(n), *mm = fnew(n), *vv = fnew(n);
    fill(p, n, -1, 1);
    for (int t = 1; t <= 2; t++)
      op_adamw(p, g, mm, vv, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.7f);
    KEEP("adamw p", p, n);
    size_t nb = 1000003;
    float *big = fnew(nb);
    fill(big, nb, -1, 1);
    double s = op_sumsq(big, nb);
    KEEP("sumsq", &s, 1);
  }
  { /* fused: STEM FFN with repeated rows (split by rows forward, by columns backward),
     * rope_qk, adamw_rows */
    int N = 200, F = 256, V = 7;
    size_t n = (size_t)N * F;
    int32_t *ids = g_new(int32_t, N);
    g_ptr_array_add(scratch, ids);
    for (int i = 0; i < N; i++)
      ids[i] = (int32_t)(rng_uniform() * V);
    float *rows = fnew((size_t)V * F), *g = fnew(n), *dm = fnew(n), *m = fnew(n), *dg = fnew(n),
          *dr = fnew((size_t)V * F);
    fill(rows, (size_t)V * F, -1, 1);
    fill(g, n, -4, 4);
    fill(dm, n, -1, 1);
    op_stem_ffn_forward(m, g, rows, ids, N, F, F);
    op_stem_ffn_backward(dg, dr, dm, g, rows, ids, F, ids, F, N, F);
    KEEP("stem_ffn fwd", m, n);
    KEEP("stem_ffn bwd dg", dg, n);
    KEEP("stem_ffn bwd drows", dr, (size_t)V * F);
    size_t nq = 2 * 33 * 4 * 16, nk = 2 * 33 * 2 * 16;
    float *q = fnew(nq), *k = fnew(nk);
    fill(q, nq, -1, 1);
    fill(k, nk, -1, 1);
    op_rope_qk_forward(q, k, 2, 33, 4, 2, 16, 10000.f);
    KEEP("rope_qk fwd q", q, nq);
    KEEP("rope_qk fwd k", k, nk);
    int R = 40, W = 1000;
    int32_t *ridx = g_new(int32_t, R);
    g_ptr_array_add(scratch, ridx);
    for (int i = 0; i < R; i++)
      ridx[i] = (i * 7) % 41; /* distinct: 7 and 41 are coprime */
    size_t np = (size_t)41 * W;
    float *p = fnew(np), *am = fnew(np), *av = fnew(np), *ag = fnew((size_t)R * W);
    fill(p, np, -1, 1);
    fill(ag, (size_t)R * W, -1, 1);
    for (int t = 1; t <= 2; t++)
      op_adamw_rows(p, am, av, ag, ridx, R, W, W, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.7f);
    KEEP("adamw_rows p", p, np);
  }
#undef KEEP
  return o;
}

/* Compares two runs block by block; names every op whose output bits differ. */
static void
compare_runs(const Outputs *a, const Outputs *b, int ta, int tb)
{
  gboolean same = a->bytes->len == b->bytes->len && a->off->len == b->off->len;
  if (same)
    for (guint i = 0; i < a->off->len; i++) {
      guint lo = g_array_index(a->off, guint, i);
      guint hi = i + 1 < a->off->len ? g_array_index(a->off, guint, i + 1) : a->bytes->len;
      if (memcmp(a->bytes->data + lo, b->bytes->data + lo, hi - lo) != 0) {
        guint nd = 0, first = 0;
        for (guint j = lo; j < hi; j += 4)
          if (memcmp(a->bytes->data + j, b->bytes->data + j, MIN(4, hi - j)) != 0 && nd++ == 0)
            first = (j - lo) / 4;
        check_true(FALSE, "%s: %d vs %d threads, %u/%u words differ, first %u",
                   (const char *)a->name->pdata[i], ta, tb, nd, (hi - lo + 3) / 4, first);
        same = FALSE;
      }
    }
  check_true(same, "all ops bit-identical with %d and %d threads", ta, tb);
}

static void
test_determinism(void)
{
  pool_init(1);
  check_true(pool_threads() == 1, "pool_threads() == 1 after pool_init(1)");
  Outputs *a = run_all_ops();
  scratch_free();
  pool_init(2);
  check_true(pool_threads() == 2, "pool_threads() == 2 after pool_init(2)");
  Outputs *b = run_all_ops();
  scratch_free();
  compare_runs(a, b, 1, 2);
  pool_init(3);
  Outputs *c = run_all_ops();
  scratch_free();
  compare_runs(a, c, 1, 3);
  pool_init(2);
  outputs_free(a);
  outputs_free(b);
  outputs_free(c);
}

/* ------------------------------------------------------------------ pool */

/* Contexts are static on purpose: a pool that wrongly re-runs an old job after a
 * restart then writes into live memory and the checks report it, instead of the test
 * corrupting the heap. */
typedef struct {
  GMutex lock;
  int hits[1001];
  size_t n, min_len, ranges, bad;
} PoolCtx;

static PoolCtx pool_ctx;

static void
pool_mark(void *p, size_t begin, size_t end)
{
  PoolCtx *c = p;
  g_mutex_lock(&c->lock);
  if (begin > end || end > c->n)
    c->bad++;
  else if (end > begin) {
    for (size_t i = begin; i < end; i++)
      c->hits[i]++;
    c->ranges++;
    c->min_len = MIN(c->min_len, end - begin);
  }
  g_mutex_unlock(&c->lock);
}

static void
test_pool(void)
{
  static const int threads[] = {1, 2, 3};
  static const size_t ns[] = {0, 1, 2, 7, 100, 1001};
  static const size_t chunks[] = {1, 16, 1000};
  gboolean all = TRUE;
  PoolCtx *c = &pool_ctx;
  g_mutex_init(&c->lock);
  for (size_t ti = 0; ti < G_N_ELEMENTS(threads); ti++) {
    pool_init(threads[ti]);
    for (size_t ni = 0; ni < G_N_ELEMENTS(ns); ni++)
      for (size_t ki = 0; ki < G_N_ELEMENTS(chunks); ki++) {
        size_t n = ns[ni], mc = chunks[ki];
        g_mutex_lock(&c->lock);
        memset(c->hits, 0, sizeof c->hits);
        c->n = n;
        c->min_len = SIZE_MAX;
        c->ranges = c->bad = 0;
        g_mutex_unlock(&c->lock);
        pool_for(n, mc, pool_mark, c);
        g_mutex_lock(&c->lock);
        gboolean once = c->bad == 0;
        for (size_t i = 0; i < n; i++)
          once &= c->hits[i] == 1;
        /* pool.h: "pool_threads() nearly equal contiguous ranges (at least min_chunk items
         * each)" */
        gboolean split = c->ranges <= (size_t)threads[ti] && (c->ranges <= 1 || c->min_len >= mc);
        size_t ranges = c->ranges, min_len = c->min_len;
        g_mutex_unlock(&c->lock);
        all &= once && split;
        if (!once || !split)
          check_true(FALSE, "pool_for n=%zu min_chunk=%zu threads=%d: once=%d ranges=%zu min_len=%zu", n,
                     mc, threads[ti], once, ranges, min_len);
      }
  }
  check_true(all, "pool_for covers [0,n) once, <= threads ranges of >= min_chunk");
  pool_init(2);
}

static gint restart_calls;

static void
pool_count(void *p, size_t begin, size_t end)
{
  g_atomic_int_inc(&restart_calls);
}

/* After a restart (pool_init with another thread count) the new workers must wait for
 * the next job, not re-run the last one (whose ctx is usually a dead stack frame). */
static void
test_pool_restart(void)
{
  static const int seq[] = {2, 3, 1, 2, 3, 2};
  gboolean ok = TRUE;
  pool_init(2);
  for (size_t i = 1; i < G_N_ELEMENTS(seq); i++) {
    g_atomic_int_set(&restart_calls, 0);
    pool_for(100, 1, pool_count, NULL);
    int ran = g_atomic_int_get(&restart_calls);
    pool_init(seq[i]);
    g_usleep(50000); /* give stray workers time to run */
    int after = g_atomic_int_get(&restart_calls);
    if (after != ran) {
      check_true(FALSE, "pool restart %d -> %d threads re-ran the previous job (%d -> %d calls)", seq[i - 1],
                 seq[i], ran, after);
      ok = FALSE;
    }
  }
  check_true(ok, "pool restart never re-runs the previous job");
  pool_init(2);
}

/* ------------------------------------------------------------------ main */

int
main(int argc, char **argv)
{
  /* Keep going after a failed test so every op's checks are reported in one run. */
  char **args = g_new0(char *, argc + 2);
  for (int i = 0; i < argc; i++)
    args[i] = argv[i];
  args[argc] = (char *)"--keep-going";
  int nargs = argc + 1;
  g_test_init(&nargs, &args, NULL);
  scratch = g_ptr_array_new_with_free_func(g_free);
  pool_init(2);
  g_test_add_func("/grad/pool", test_pool);
  g_test_add_func("/grad/pool_restart", test_pool_restart);
  g_test_add_func("/grad/matmul", test_matmul);
  g_test_add_func("/grad/rmsnorm", test_rmsnorm);
  g_test_add_func("/grad/rope", test_rope);
  g_test_add_func("/grad/attention", test_attention);
  g_test_add_func("/grad/swiglu", test_swiglu);
  g_test_add_func("/grad/embedding", test_embedding);
  g_test_add_func("/grad/crossentropy", test_crossentropy);
  g_test_add_func("/grad/adamw", test_adamw);
  g_test_add_func("/grad/sumsq", test_sumsq);
  g_test_add_func("/grad/scale", test_scale);
  g_test_add_func("/grad/add", test_add);
  g_test_add_func("/grad/fused_wiring", test_fused_wiring);
  g_test_add_func("/grad/stem_ffn", test_stem_ffn);
  g_test_add_func("/grad/rope_qk", test_rope_qk);
  g_test_add_func("/grad/adamw_rows", test_adamw_rows);
  g_test_add_func("/grad/determinism", test_determinism);
  int rc = g_test_run();

  printf("# summary: %d checks\n", n_results);
  int nfail = 0;
  for (int i = 0; i < n_results; i++) {
    printf("# %-4s %-64s err=%.3e tol=%.0e\n", results[i].ok ? "ok" : "FAIL", results[i].name,
           results[i].err, results[i].tol);
    nfail += !results[i].ok;
  }
  printf("# %d of %d checks failed\n", nfail, n_results);
  pool_shutdown();
  g_ptr_array_unref(scratch);
  g_free(args);
  return rc;
}
