/* Sample data for every chart type: rendered by the unit tests (valid, non-blank
 * files in every format) and by `test-viz --render-samples DIR` to look at. */
#ifndef STEM_TESTS_VIZ_SAMPLES_H
#define STEM_TESTS_VIZ_SAMPLES_H

#include "viz/charts.h"
#include <math.h>

typedef struct {
    const char *name;
    VizDrawFn fn;
    const void *data;
    double w, h;
} Sample;

static double s_hist_a[60], s_hist_b[60];
static VizHistSeries s_hist_series[2];
static VizHistogram s_hist;

static VizBar s_bars[3][5];
static VizBarPanel s_panels[3];
static VizBarGroups s_bargroups;

static double s_heat_v[5 * 5];
static const char *s_heat_text[5 * 5];
static const char *s_heat_rows[5] = { "embeddings", "layer 0", "layer 1", "layer 2", "layer 3" };
static const char *s_heat_cols[5] = { "top 1", "top 2", "top 3", "top 4", "top 5" };
static VizHeatmap s_heat;

static VizPoint s_points[80];
static char s_point_labels[80][16];
static VizScatter s_scatter;

static double s_lx[12], s_ly1[12], s_ly2[12], s_ly3[2], s_lx3[2];
static VizLineSeries s_lseries[3];
static VizLines s_lines;

static const char *s_tab_headers[4] = { "metric", "strict", "loose", "n" };
static const char *s_tab_cells[4 * 4] = {
    "efficacy", "95.0%", "100.0%", "20", "paraphrase", "60.0%", "80.0%", "40",
    "neighbourhood", "98.5%", "99.0%", "200", "token: ␣Spain → ␣France", "", "", "",
};
static VizTable s_table;
static VizPanel s_grid_panels[4];
static VizGrid s_grid;

static int build_samples(Sample *out)
{
    /* histogram: two overlaid distributions (narrow STEM-like vs wider dense-like) */
    for (int i = 0; i < 60; i++) {
        double x = (i + 0.5) * 0.25 / 60;
        s_hist_a[i] = 100 * 0.25 / 60 * 2 * exp(-x * x / (2 * 0.012 * 0.012)) / (0.012 * sqrt(2 * G_PI));
        s_hist_b[i] = 100 * 0.25 / 60 * x / (0.07 * 0.07) * exp(-x * x / (2 * 0.07 * 0.07));
    }
    s_hist_series[0] = (VizHistSeries){ "STEM table rows (layer 1)", 60, 0, 0.25, s_hist_a, 0.031, "P95" };
    s_hist_series[1] = (VizHistSeries){ "dense W3·x outputs (layer 1)", 60, 0, 0.25, s_hist_b, 0.17, "P95" };
    s_hist = (VizHistogram){ "Pairwise |cos| of up-projection vectors", "default model, 4,096 most frequent tokens",
                             "|cos| between two vectors", "pairs per bin (%)", 2, s_hist_series };
    out[0] = (Sample){ "histogram", viz_draw_histogram, &s_hist, 900, 540 };

    /* bars: the three panels of a top-k shift */
    const char *toks[3][5] = { { "␣Madrid", "␣the", "␣a", "␣Barcelona", "␣Spain" },
                               { "␣Paris", "␣the", "␣France", "␣a", "␣Lyon" },
                               { "␣Paris", "␣Madrid", "␣the", "␣a", "␣France" } };
    const double pv[3][5] = { { 0.82, 0.05, 0.03, 0.02, 0.01 }, { 0.77, 0.06, 0.04, 0.02, 0.015 },
                              { 0.64, 0.11, 0.05, 0.03, 0.01 } };
    for (int p = 0; p < 3; p++) {
        for (int i = 0; i < 5; i++) {
            int e = !strcmp(toks[p][i], "␣Paris") ? 1 : !strcmp(toks[p][i], "␣Madrid") ? 2 : 0;
            s_bars[p][i] = (VizBar){ toks[p][i], pv[p][i], e };
        }
    }
    s_panels[0] = (VizBarPanel){ "Original prompt", "The capital of Spain is", 5, s_bars[0] };
    s_panels[1] = (VizBarPanel){ "Target written in", "The capital of France is", 5, s_bars[1] };
    s_panels[2] = (VizBarPanel){ "Edited model, original prompt", "The capital of Spain is", 5, s_bars[2] };
    s_bargroups = (VizBarGroups){ "Top-5 next tokens: Spain → France",
                                  "probability moved 0.61 · KL(written ‖ edited) 0.18 nats", "next-token probability (%)",
                                  3, s_panels, 0, TRUE, { NULL, "target's answer", "source's answer" } };
    out[1] = (Sample){ "bars", viz_draw_bars, &s_bargroups, 1100, 460 };

    /* heatmap: logit lens */
    const char *ht[5][5] = { { "Spain", "␣is", "ing", "␣of", "␣and" }, { "␣the", "␣a", "␣Spain", "␣not", "␣in" },
                             { "␣the", "␣Madrid", "␣a", "␣located", "␣Spain" },
                             { "␣Madrid", "␣the", "␣Barcelona", "␣a", "␣Lisbon" },
                             { "␣Madrid", "␣Barcelona", "␣the", "␣Seville", "␣Lisbon" } };
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 5; c++) {
            s_heat_v[r * 5 + c] = pow(0.45, c) * (0.1 + 0.2 * r);
            s_heat_text[r * 5 + c] = ht[r][c];
        }
    s_heat = (VizHeatmap){ "Logit lens: The capital of Spain is", "residual stream at the last position → final norm → head",
                           "rank", NULL, "probability", 5, 5, s_heat_v, s_heat_text, s_heat_rows, s_heat_cols, 0, 0,
                           TRUE, TRUE };
    out[2] = (Sample){ "heatmap", viz_draw_heatmap, &s_heat, 900, 520 };

    /* scatter: PCA of rows */
    for (int i = 0; i < 80; i++) {
        double a = i * 2.39996, r = sqrt(i + 1.0);
        s_points[i].x = r * cos(a) + (i % 3 == 0 ? 4 : 0);
        s_points[i].y = r * sin(a) * 0.6;
        g_snprintf(s_point_labels[i], sizeof s_point_labels[i], "␣tok%d", i);
        s_points[i].label = s_point_labels[i];
        s_points[i].group = i % 3 == 0;
        s_points[i].highlight = i == 7 || i == 30;
    }
    static const char *groups[2] = { "prose tokens", "country names" };
    s_scatter = (VizScatter){ "PCA of layer 1 table rows", "80 most frequent tokens; explained variance 12.1% + 8.3%",
                              "PC 1 (12.1% of variance)", "PC 2 (8.3% of variance)", 80, s_points, 25, groups, 2 };
    out[3] = (Sample){ "scatter", viz_draw_scatter, &s_scatter, 900, 620 };

    /* lines: active parameters vs context (log x) */
    for (int i = 0; i < 12; i++) {
        s_lx[i] = pow(2, i);
        s_ly1[i] = 2.1 + 0.0015 * 1.5 * pow(s_lx[i], 0.75) * 3;
        s_ly2[i] = 2.9;
    }
    s_lseries[0] = (VizLineSeries){ "STEM: backbone + unique-token rows", 12, s_lx, s_ly1, FALSE, TRUE, 0 };
    s_lseries[1] = (VizLineSeries){ "dense equivalent (constant)", 12, s_lx, s_ly2, TRUE, FALSE, 1 };
    s_lx3[0] = 1;
    s_lx3[1] = 2048;
    s_ly3[0] = s_ly3[1] = 2.1;
    s_lseries[2] = (VizLineSeries){ "STEM backbone only", 2, s_lx3, s_ly3, TRUE, FALSE, 7 };
    s_lines = (VizLines){ "Active parameters vs context length", "Heaps' law fit U(L) = 2.1·L^0.71 on the corpus",
                          "context length (tokens)", "active parameters (millions)", 3, s_lseries, TRUE, FALSE, 0, 0,
                          FALSE, 0, NULL };
    out[4] = (Sample){ "lines", viz_draw_lines, &s_lines, 900, 540 };

    s_table = (VizTable){ "Edit metrics", 4, 4, s_tab_headers, s_tab_cells, 0xE, 0, 0 };
    out[5] = (Sample){ "table", viz_draw_table, &s_table, 600, 200 };

    s_grid_panels[0] = (VizPanel){ viz_draw_histogram, &s_hist };
    s_grid_panels[1] = (VizPanel){ viz_draw_histogram, &s_hist };
    s_grid_panels[2] = (VizPanel){ viz_draw_lines, &s_lines };
    s_grid_panels[3] = (VizPanel){ viz_draw_heatmap, &s_heat };
    s_grid = (VizGrid){ "Grid of panels", "four renderers side by side", 4, s_grid_panels, 2 };
    out[6] = (Sample){ "grid", viz_draw_grid, &s_grid, 1400, 900 };
    return 7;
}

#endif
