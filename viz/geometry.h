/* Embedding geometry of the up-projection: how similar are the vectors that
 * multiply the gate? For a STEM layer they are the table rows U_l[t] of a token
 * sample; for a dense layer the outputs W3·x collected on corpus text (paper
 * Fig. 6: STEM rows are nearly orthogonal, P95 |cos| ~ 0.03, dense outputs
 * are not). Plus a 2-D PCA of a layer's rows and cosine nearest neighbours.
 *
 * Every function is plain computation on arrays or on a loaded model; the CLI
 * and the GTK pages format the results. */
#ifndef STEM_VIZ_GEOMETRY_H
#define STEM_VIZ_GEOMETRY_H

#include <glib.h>
#include <stdint.h>
#include "engine/model.h"

#define VIZ_ERROR (g_quark_from_static_string("stem-viz-error"))

/* Signed cosine over [-1, 1] in this many bins: quantiles are read off this
 * histogram, exact to one bin (1.5e-5). */
#define VIZ_COS_BINS 131072

typedef struct {
    int n_rows, dim;
    int n_zero;                  /* rows of norm 0 (their cosines count as 0) */
    int64_t n_pairs;             /* n (n - 1) / 2 */
    double mean_abs, median_abs, p95_abs, p99_abs, max_abs;
    double mean, std;            /* of the signed cosine */
    uint64_t *hist;              /* [VIZ_COS_BINS] signed cosine counts (owned) */
} VizCosStats;

/* Statistics of cos(row_i, row_j) over all pairs i < j of rows[n, d]: rows are
 * normalized and multiplied in tiles with sgemm, split over the thread pool.
 * n >= 2. rows is not modified. */
gboolean viz_cos_stats(const float *rows, int n, int d, VizCosStats *out, GError **error);
void viz_cos_stats_clear(VizCosStats *s);
/* q-quantile (0..1) of |cos| (linear interpolation inside a bin). */
double viz_cos_stats_abs_quantile(const VizCosStats *s, double q);
/* Histogram of |cos| over [lo, hi) in n_bins, as percent of all pairs. */
void viz_cos_stats_abs_hist(const VizCosStats *s, double lo, double hi, int n_bins, double *out);

/* ------------------------------------------------------------------ PCA */

typedef struct {
    int n, dim;
    double *coords;              /* [n, 2] projections on the two principal axes */
    double *axes;                /* [2, dim] unit principal axes (sign: largest |entry| positive) */
    double var[2];               /* variance along each axis */
    double total_var;            /* trace of the covariance */
} VizPca;

/* 2-D PCA of rows[n, d] (centred; covariance with n - 1; LAPACKE dsyevr for the
 * two largest eigenpairs). n >= 2. */
gboolean viz_pca2(const float *rows, int n, int d, VizPca *out, GError **error);
void viz_pca_clear(VizPca *p);

/* ------------------------------------------------------------------ neighbours */

typedef struct {
    int id;
    float cos;
} VizNeighbour;

/* The k rows of rows[V, d] most cosine-similar to query[d] among candidates
 * (candidate[i] != 0; NULL = all), row `exclude` left out (-1 = none). Sorted by
 * decreasing cosine (ties: lower id). Returns the count written. */
int viz_neighbours(const float *rows, int V, int d, const float *query, const guint8 *candidate, int exclude, int k,
                   VizNeighbour *out);

/* ------------------------------------------------------------------ dense outputs */

/* The up-projection outputs u = W3 · RMSNorm(h_mid) of dense layers, collected at
 * up to n_want positions of windows spread evenly over ids[n_ids]. For each layer
 * l with bit l of layer_mask set (dense layers only) out[l] receives a new
 * [n_got, ffn] array (g_free); returns n_got. The attention sub-block is
 * recomputed from the engine's residual stream with the kernels' ops;
 * *max_rel_err (may be NULL) is the largest relative difference between the
 * recomputed layer output and the engine's, a self-check (~1e-6). */
int viz_capture_up(StemModel *m, uint64_t layer_mask, const int32_t *ids, size_t n_ids, int n_want, float **out,
                   double *max_rel_err, GError **error);

/* ------------------------------------------------------------------ per-layer geometry */

typedef struct {
    int layer;
    gboolean stem;               /* TRUE: STEM table rows; FALSE: dense W3·x outputs */
    int n_vectors;
    VizCosStats stats;
} VizLayerGeometry;

typedef struct {
    const int32_t *tokens;       /* token sample for STEM rows (e.g. the most frequent) */
    int n_tokens;
    const int32_t *text;         /* corpus ids for dense outputs (may be NULL: dense layers skipped) */
    size_t n_text;
    int n_positions;             /* dense vectors to collect (<= 0: n_tokens) */
} VizGeometryInput;

/* One entry per layer of layer_mask, in layer order (GArray of VizLayerGeometry,
 * free with viz_geometry_free). STEM layers use the effective rows (edits included). */
GArray *viz_geometry(StemModel *m, uint64_t layer_mask, const VizGeometryInput *in, GError **error);
void viz_geometry_free(GArray *layers);

#endif
