/* Embedding geometry: cosine statistics with GEMM on normalized rows, 2-D PCA
 * with LAPACKE, nearest neighbours, dense up-projection outputs (geometry.h). */
#include "geometry.h"

#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ cosine stats */

#define COS_TILE 256

typedef struct {
    const float *a;        /* [n, d] unit rows (zero rows stay zero) */
    int n, d, nb;
    const int *tiles;      /* pairs (bi, bj), bj >= bi */
    GMutex lock;
    uint64_t *hist;
    double sum_abs, sum, sum_sq, max_abs;
} CosCtx;

static void cos_tiles(void *p, size_t begin, size_t end)
{
    CosCtx *c = p;
    const int bs = COS_TILE, d = c->d;
    float *C = g_new(float, (size_t)bs * bs);
    uint64_t *h = g_new0(uint64_t, VIZ_COS_BINS);
    double sa = 0, s = 0, s2 = 0, mx = 0;
    const float half_bins = 0.5f * VIZ_COS_BINS;
    for (size_t t = begin; t < end; t++) {
        int bi = c->tiles[2 * t], bj = c->tiles[2 * t + 1];
        int i0 = bi * bs, j0 = bj * bs;
        int ni = MIN(bs, c->n - i0), nj = MIN(bs, c->n - j0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, nj, d, 1.0f, c->a + (size_t)i0 * d, d,
                    c->a + (size_t)j0 * d, d, 0.0f, C, nj);
        for (int i = 0; i < ni; i++) {
            const float *row = C + (size_t)i * nj;
            float rs = 0, rs2 = 0, ra = 0, rmx = 0;
            for (int j = bi == bj ? i + 1 : 0; j < nj; j++) {
                float v = row[j];
                v = v > 1.0f ? 1.0f : v < -1.0f ? -1.0f : v;
                float av = fabsf(v);
                ra += av;
                rs += v;
                rs2 += v * v;
                rmx = av > rmx ? av : rmx;
                int b = (int)((v + 1.0f) * half_bins);
                h[b >= VIZ_COS_BINS ? VIZ_COS_BINS - 1 : b]++;
            }
            /* per-row partial sums in float (<= 256 terms), totals in double */
            sa += ra;
            s += rs;
            s2 += rs2;
            if (rmx > mx) mx = rmx;
        }
    }
    g_mutex_lock(&c->lock);
    for (int b = 0; b < VIZ_COS_BINS; b++) c->hist[b] += h[b];
    c->sum_abs += sa;
    c->sum += s;
    c->sum_sq += s2;
    if (mx > c->max_abs) c->max_abs = mx;
    g_mutex_unlock(&c->lock);
    g_free(h);
    g_free(C);
}

typedef struct {
    const float *src;
    float *dst;
    int d;
    int n_zero;
    GMutex lock;
} NormCtx;

static void norm_rows(void *p, size_t begin, size_t end)
{
    NormCtx *c = p;
    int zeros = 0;
    for (size_t i = begin; i < end; i++) {
        const float *x = c->src + i * c->d;
        float *y = c->dst + i * c->d;
        double ss = 0;
        for (int k = 0; k < c->d; k++) ss += (double)x[k] * x[k];
        if (ss > 0) {
            float inv = (float)(1.0 / sqrt(ss));
            for (int k = 0; k < c->d; k++) y[k] = x[k] * inv;
        } else {
            memset(y, 0, sizeof(float) * c->d);
            zeros++;
        }
    }
    if (zeros) {
        g_mutex_lock(&c->lock);
        c->n_zero += zeros;
        g_mutex_unlock(&c->lock);
    }
}

/* |cos| bin k (of VIZ_COS_BINS / 2 over [0, 1]) folds signed bins k' = H + k and H - 1 - k */
static uint64_t abs_bin(const VizCosStats *s, int k)
{
    const int H = VIZ_COS_BINS / 2;
    return s->hist[H + k] + s->hist[H - 1 - k];
}

/* Value of the j-th smallest |cos| (0-based): located exactly in its bin, placed
 * inside the bin as if the bin's values were spread evenly (error < one bin). */
static double abs_order_stat(const VizCosStats *s, uint64_t j)
{
    const int H = VIZ_COS_BINS / 2;
    uint64_t cum = 0;
    for (int k = 0; k < H; k++) {
        uint64_t c = abs_bin(s, k);
        if (c && cum + c > j) return (k + ((double)(j - cum) + 0.5) / (double)c) / H;
        cum += c;
    }
    return 1.0;
}

double viz_cos_stats_abs_quantile(const VizCosStats *s, double q)
{
    if (!s->hist || s->n_pairs <= 0) return NAN;
    /* numpy's default (linear) percentile: interpolate between the order
     * statistics around q (n - 1); each is exact to one bin (1.5e-5) */
    double pos = q * (double)(s->n_pairs - 1);
    uint64_t lo = (uint64_t)floor(pos);
    double frac = pos - (double)lo;
    double a = abs_order_stat(s, lo);
    if (frac <= 0 || lo + 1 >= (uint64_t)s->n_pairs) return a;
    return a + frac * (abs_order_stat(s, lo + 1) - a);
}

void viz_cos_stats_abs_hist(const VizCosStats *s, double lo, double hi, int n_bins, double *out)
{
    const int H = VIZ_COS_BINS / 2;
    memset(out, 0, sizeof(double) * (size_t)n_bins);
    if (!s->hist || s->n_pairs <= 0 || !(hi > lo)) return;
    for (int k = 0; k < H; k++) {
        uint64_t c = abs_bin(s, k);
        if (!c) continue;
        double v = (k + 0.5) / H;
        if (v < lo || v >= hi) continue;
        int b = (int)((v - lo) / (hi - lo) * n_bins);
        if (b >= n_bins) b = n_bins - 1;
        out[b] += (double)c;
    }
    for (int b = 0; b < n_bins; b++) out[b] *= 100.0 / (double)s->n_pairs;
}

gboolean viz_cos_stats(const float *rows, int n, int d, VizCosStats *out, GError **error)
{
    memset(out, 0, sizeof *out);
    if (n < 2 || d < 1) {
        g_set_error(error, VIZ_ERROR, 1, "cosine statistics need at least 2 rows (got %d of dimension %d)", n, d);
        return FALSE;
    }
    float *a = NULL;
    if (posix_memalign((void **)&a, 64, sizeof(float) * (size_t)n * d)) {
        g_set_error(error, VIZ_ERROR, 2, "out of memory for %d x %d rows", n, d);
        return FALSE;
    }
    NormCtx nc = { .src = rows, .dst = a, .d = d };
    g_mutex_init(&nc.lock);
    pool_for((size_t)n, 64, norm_rows, &nc);
    g_mutex_clear(&nc.lock);

    int nb = (n + COS_TILE - 1) / COS_TILE;
    int n_tiles = nb * (nb + 1) / 2;
    int *tiles = g_new(int, 2 * (size_t)n_tiles), t = 0;
    for (int bi = 0; bi < nb; bi++)
        for (int bj = bi; bj < nb; bj++) {
            tiles[2 * t] = bi;
            tiles[2 * t + 1] = bj;
            t++;
        }
    CosCtx c = { .a = a, .n = n, .d = d, .nb = nb, .tiles = tiles };
    g_mutex_init(&c.lock);
    c.hist = g_new0(uint64_t, VIZ_COS_BINS);
    pool_for((size_t)n_tiles, 1, cos_tiles, &c);
    g_mutex_clear(&c.lock);
    g_free(tiles);
    free(a);

    out->n_rows = n;
    out->dim = d;
    out->n_zero = nc.n_zero;
    out->n_pairs = (int64_t)n * (n - 1) / 2;
    out->hist = c.hist;
    double np = (double)out->n_pairs;
    out->mean_abs = c.sum_abs / np;
    out->mean = c.sum / np;
    double var = c.sum_sq / np - out->mean * out->mean;
    out->std = var > 0 ? sqrt(var) : 0;
    out->max_abs = c.max_abs;
    out->median_abs = viz_cos_stats_abs_quantile(out, 0.5);
    out->p95_abs = viz_cos_stats_abs_quantile(out, 0.95);
    out->p99_abs = viz_cos_stats_abs_quantile(out, 0.99);
    return TRUE;
}

void viz_cos_stats_clear(VizCosStats *s)
{
    g_free(s->hist);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ PCA */

gboolean viz_pca2(const float *rows, int n, int d, VizPca *out, GError **error)
{
    memset(out, 0, sizeof *out);
    if (n < 2 || d < 2) {
        g_set_error(error, VIZ_ERROR, 1, "PCA needs at least 2 rows of dimension >= 2 (got %d x %d)", n, d);
        return FALSE;
    }
    double *x = g_new(double, (size_t)n * d), *mean = g_new0(double, d);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) mean[k] += rows[(size_t)i * d + k];
    for (int k = 0; k < d; k++) mean[k] /= n;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++) x[(size_t)i * d + k] = rows[(size_t)i * d + k] - mean[k];
    double *cov = g_new0(double, (size_t)d * d);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0 / (n - 1), x, d, 0.0, cov, d);
    double trace = 0;
    for (int k = 0; k < d; k++) trace += cov[(size_t)k * d + k];
    double w[2] = { 0, 0 }, *z = g_new0(double, (size_t)d * 2);
    lapack_int found = 0, *isuppz = g_new(lapack_int, 4);
    lapack_int info = LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'I', 'U', d, cov, d, 0.0, 0.0, d - 1, d, 0.0, &found, w, z,
                                     2, isuppz);
    g_free(isuppz);
    g_free(cov);
    if (info != 0 || found != 2) {
        g_set_error(error, VIZ_ERROR, 3, "eigen-decomposition failed (LAPACKE_dsyevr info %d, %d found)", (int)info,
                    (int)found);
        g_free(x);
        g_free(mean);
        g_free(z);
        return FALSE;
    }
    out->n = n;
    out->dim = d;
    out->axes = g_new(double, 2 * (size_t)d);
    /* eigenvalues come in ascending order: axis 0 is column 1 */
    for (int a = 0; a < 2; a++) {
        int col = 1 - a;
        double big = 0;
        int bi = 0;
        for (int k = 0; k < d; k++)
            if (fabs(z[(size_t)k * 2 + col]) > big) big = fabs(z[(size_t)k * 2 + col]), bi = k;
        double sign = z[(size_t)bi * 2 + col] < 0 ? -1.0 : 1.0;
        for (int k = 0; k < d; k++) out->axes[(size_t)a * d + k] = sign * z[(size_t)k * 2 + col];
        out->var[a] = w[col];
    }
    out->total_var = trace;
    out->coords = g_new(double, 2 * (size_t)n);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, 2, d, 1.0, x, d, out->axes, d, 0.0, out->coords, 2);
    g_free(x);
    g_free(mean);
    g_free(z);
    return TRUE;
}

void viz_pca_clear(VizPca *p)
{
    g_free(p->coords);
    g_free(p->axes);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------ neighbours */

int viz_neighbours(const float *rows, int V, int d, const float *query, const guint8 *candidate, int exclude, int k,
                   VizNeighbour *out)
{
    if (k <= 0 || V <= 0) return 0;
    float *dots = g_new(float, V);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, V, d, 1.0f, rows, d, query, 1, 0.0f, dots, 1);
    double qn = 0;
    for (int i = 0; i < d; i++) qn += (double)query[i] * query[i];
    qn = sqrt(qn);
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (i == exclude || (candidate && !candidate[i])) continue;
        double rn = 0;
        const float *r = rows + (size_t)i * d;
        for (int j = 0; j < d; j++) rn += (double)r[j] * r[j];
        rn = sqrt(rn);
        float c = rn > 0 && qn > 0 ? (float)(dots[i] / (rn * qn)) : 0.0f;
        if (n == k && c <= out[n - 1].cos) continue;
        int pos = n < k ? n++ : k - 1;
        while (pos > 0 && out[pos - 1].cos < c) {
            out[pos] = out[pos - 1];
            pos--;
        }
        out[pos].id = i;
        out[pos].cos = c;
    }
    g_free(dots);
    return n;
}

/* ------------------------------------------------------------------ dense outputs */

int viz_capture_up(StemModel *m, uint64_t layer_mask, const int32_t *ids, size_t n_ids, int n_want, float **out,
                   double *max_rel_err, GError **error)
{
    const StemConfig *c = &m->cfg;
    const int D = c->dim, F = c->ffn_dim, H = c->n_heads, KV = c->n_kv_heads, hd = D / H;
    if (max_rel_err) *max_rel_err = 0;
    for (int l = 0; l < c->n_layers; l++) {
        if (!((layer_mask >> l) & 1)) continue;
        if (stem_config_is_stem(c, l)) {
            g_set_error(error, VIZ_ERROR, 4, "layer %d is a STEM layer: it has no up-projection W3", l);
            return -1;
        }
    }
    if (n_want < 1 || n_ids < 2) {
        g_set_error(error, VIZ_ERROR, 5, "not enough text to collect dense outputs");
        return -1;
    }
    int T = (int)MIN((size_t)MIN(c->seq_len, 128), n_ids);
    int W = (n_want + T - 1) / T;
    int Bmax = MIN(W, 8);
    size_t N = (size_t)Bmax * T;
    float *X = g_new(float, N * D), *A = g_new(float, N * D), *rstd = g_new(float, N);
    float *q = g_new(float, N * H * hd), *k = g_new(float, N * KV * hd), *v = g_new(float, N * KV * hd);
    float *att = g_new(float, (size_t)Bmax * H * T * T), *o = g_new(float, N * H * hd);
    float *hm = g_new(float, N * D), *f = g_new(float, N * D), *u = g_new(float, N * F);
    float *g = g_new(float, N * F), *mm = g_new(float, N * F), *nx = g_new(float, N * D);
    int32_t *win = g_new(int32_t, N);
    for (int l = 0; l < c->n_layers; l++)
        if ((layer_mask >> l) & 1) out[l] = g_new(float, (size_t)n_want * F);
    int got = 0;
    double worst = 0;
    for (int w0 = 0; w0 < W && got < n_want; w0 += Bmax) {
        int B = MIN(Bmax, W - w0);
        for (int b = 0; b < B; b++) {
            /* windows spread evenly over the text */
            size_t start = W > 1 ? (n_ids - T) * (size_t)(w0 + b) / (size_t)(W - 1) : 0;
            memcpy(win + (size_t)b * T, ids + start, sizeof(int32_t) * T);
        }
        stem_model_forward(m, win, NULL, B, T, TRUE);
        int n = B * T, take = MIN(n, n_want - got);
        for (int l = 0; l < c->n_layers; l++) {
            if (!((layer_mask >> l) & 1)) continue;
            const StemLayerWeights *L = &m->w.layer[l];
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    memcpy(X + ((size_t)b * T + t) * D, stem_model_residual(m, l - 1, b, t), sizeof(float) * D);
            /* the attention sub-block, as in the forward pass */
            op_rmsnorm_forward(A, rstd, X, L->attn_norm, n, D, c->norm_eps);
            op_matmul_forward(q, A, L->wq, n, D, H * hd, 0);
            op_matmul_forward(k, A, L->wk, n, D, KV * hd, 0);
            op_matmul_forward(v, A, L->wv, n, D, KV * hd, 0);
            op_rope_forward(q, B, T, H, hd, c->rope_theta);
            op_rope_forward(k, B, T, KV, hd, c->rope_theta);
            op_attention_forward(o, att, q, k, v, B, T, H, KV, hd);
            memcpy(hm, X, sizeof(float) * (size_t)n * D);
            op_matmul_forward(hm, o, L->wo, n, H * hd, D, 1);
            op_rmsnorm_forward(f, rstd, hm, L->ffn_norm, n, D, c->norm_eps);
            op_matmul_forward(u, f, L->w3, n, D, F, 0);
            memcpy(out[l] + (size_t)got * F, u, sizeof(float) * (size_t)take * F);
            /* self-check: finish the layer and compare with the engine's output */
            op_matmul_forward(g, f, L->w1, n, D, F, 0);
            op_swiglu_forward(mm, g, u, (size_t)n * F);
            memcpy(nx, hm, sizeof(float) * (size_t)n * D);
            op_matmul_forward(nx, mm, L->w2, n, F, D, 1);
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    const float *ref = stem_model_residual(m, l, b, t), *mine = nx + ((size_t)b * T + t) * D;
                    double diff = 0, norm = 0;
                    for (int i = 0; i < D; i++) {
                        diff = MAX(diff, fabs((double)ref[i] - mine[i]));
                        norm = MAX(norm, fabs((double)ref[i]));
                    }
                    worst = MAX(worst, diff / (norm > 0 ? norm : 1));
                }
        }
        got += take;
    }
    if (max_rel_err) *max_rel_err = worst;
    g_free(X); g_free(A); g_free(rstd); g_free(q); g_free(k); g_free(v); g_free(att); g_free(o);
    g_free(hm); g_free(f); g_free(u); g_free(g); g_free(mm); g_free(nx); g_free(win);
    return got;
}

/* ------------------------------------------------------------------ per-layer geometry */

GArray *viz_geometry(StemModel *m, uint64_t layer_mask, const VizGeometryInput *in, GError **error)
{
    const StemConfig *c = &m->cfg;
    GArray *res = g_array_new(FALSE, TRUE, sizeof(VizLayerGeometry));
    uint64_t dense_mask = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (((layer_mask >> l) & 1) && !stem_config_is_stem(c, l)) dense_mask |= 1ull << l;
    float *dense[STEM_MAX_LAYERS] = { 0 };
    int n_dense = 0;
    if (dense_mask && in->text) {
        int want = in->n_positions > 0 ? in->n_positions : in->n_tokens;
        n_dense = viz_capture_up(m, dense_mask, in->text, in->n_text, want, dense, NULL, error);
        if (n_dense < 0) {
            g_array_unref(res);
            return NULL;
        }
    }
    float *rows = NULL;
    for (int l = 0; l < c->n_layers; l++) {
        if (!((layer_mask >> l) & 1)) continue;
        VizLayerGeometry g = { .layer = l, .stem = stem_config_is_stem(c, l) };
        const float *vecs = NULL;
        if (g.stem) {
            if (!rows) rows = g_new(float, (size_t)MAX(in->n_tokens, 1) * c->ffn_dim);
            stem_tables_gather(m->tables, stem_config_stem_index(c, l), in->tokens, in->n_tokens, rows);
            vecs = rows;
            g.n_vectors = in->n_tokens;
        } else {
            if (!dense[l]) continue;   /* no text: dense layers skipped */
            vecs = dense[l];
            g.n_vectors = n_dense;
        }
        if (!viz_cos_stats(vecs, g.n_vectors, c->ffn_dim, &g.stats, error)) {
            g_free(rows);
            for (int k = 0; k < c->n_layers; k++) g_free(dense[k]);
            viz_geometry_free(res);
            return NULL;
        }
        g_array_append_val(res, g);
    }
    g_free(rows);
    for (int k = 0; k < c->n_layers; k++) g_free(dense[k]);
    return res;
}

void viz_geometry_free(GArray *layers)
{
    if (!layers) return;
    for (guint i = 0; i < layers->len; i++) viz_cos_stats_clear(&g_array_index(layers, VizLayerGeometry, i).stats);
    g_array_unref(layers);
}
