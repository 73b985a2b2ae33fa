/* Edit reports: everything about one patch set in one place, for people (a
 * multi-page PDF drawn with cairo, or Markdown with PNG charts beside it) and for
 * scripts (JSON with the same numbers).
 *
 * A report is built from a database attached to its model. Every measurement
 * compares the model WITHOUT the patch set (the rows the database would have if
 * the set were not applied, stem_editdb_rows_without) against the model WITH it
 * (its 'after' rows on top), whether the set is currently applied or reverted.
 * The model's overlay is restored exactly before the build returns.
 *
 * Also here: the chart data of a top-k shift and of a localization, shared by
 * the `stem shift` / `stem localize` commands, the reports and the workbench. */
#ifndef STEM_VIZ_REPORT_H
#define STEM_VIZ_REPORT_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include "charts.h"
#include "edits.h"
#include "editdb/editdb.h"
#include "editdb/metrics.h"

/* ------------------------------------------------------------------ chart data */

/* The three-panel top-k shift as bars: target's answer in emphasis 1, source's in 2. */
typedef struct {
    VizBarGroups chart;
    VizBarPanel panels[VIZ_SHIFT_N];
    VizBar *bars;
    GPtrArray *keep;             /* owned strings */
} VizShiftChart;

/* labels[p][i]: the label of s->top[p][i] (viz_shift_labels); tgt/src_label: of the answers (may be NULL). */
void viz_shift_chart_init(VizShiftChart *c, const VizShift *s, char **const labels[VIZ_SHIFT_N], const char *tgt_label,
                          const char *src_label, const char *title, const char *prompt, const char *written_prompt);
/* labels[p] = NULL-terminated token labels of the top-k of panel p (g_strfreev each). */
void viz_shift_labels(const VizShift *s, const StemTokenizer *tok, char **labels[VIZ_SHIFT_N]);
void viz_shift_chart_clear(VizShiftChart *c);

/* Localization: P(target's answer) and P(source's answer) per layer, edit at one
 * layer and cumulative (curves), plus the same as a heatmap. */
typedef struct {
    VizGrid chart;
    VizPanel panels[2];
    VizLines lines;
    VizLineSeries series[6];
    VizHeatmap heat;
    double *x, *y[6], *hv;
    const char **x_ticks, **row_labels, **col_labels;
    GPtrArray *keep;
} VizLocalizeChart;

void viz_localize_chart_init(VizLocalizeChart *c, const VizLocalize *l, const char *title, const char *subtitle,
                             const char *tgt_label, const char *src_label);
void viz_localize_chart_clear(VizLocalizeChart *c);

/* ------------------------------------------------------------------ reports */

typedef struct {
    const char *prompt;          /* NULL: the canonical capital prompt of the source (else the source itself) */
    int k;                       /* top-k (default 5) */
    int gen_tokens;              /* tokens per sample generation (default 16) */
    gboolean metrics;            /* run the edit metrics (needs country source and target) */
    const char *model_path;      /* for provenance and the commands */
    const char *db_path;
} VizReportOptions;

void viz_report_options_init(VizReportOptions *o);

typedef struct {
    gint64 id;
    gboolean applied;
    gint64 apply_seq;
    char *created_at, *applied_at, *reverted_at, *origin, *checksum;
    char *recipe_desc, *recipe_json;
    StemRecipe recipe;
    JsonNode *summary;           /* the plan stored with the set (variants, warnings) or NULL */
    /* provenance */
    char *model_path, *model_sha256, *tokenizer_sha256, *db_path, *db_model_sha256, *program, *date;
    /* rows */
    int n_rows, ffn;
    int n_layers;                /* layers touched */
    int *layers, *rows_per_layer;
    double *mean_delta;          /* [n_layers] mean L2 norm of (after - before) per row */
    GPtrArray *layer_tokens;     /* [n_layers] char*: the tokens touched in that layer */
    GPtrArray *warnings;         /* char* */
    /* top-k shift and localization on `prompt` */
    char *prompt, *written_prompt, *src_answer, *tgt_answer;
    char *src_answer_label, *tgt_answer_label;
    int relation;                /* -1: not a fact prompt */
    gboolean has_shift;
    VizShift shift;
    char **shift_labels[VIZ_SHIFT_N];   /* token labels of the top-k */
    gboolean has_localize;
    VizLocalize loc;
    /* metrics */
    gboolean has_metrics;
    StemEditScore score;
    char *metrics_note;          /* why there are none */
    /* sample generations */
    int n_gen;
    char **gen_prompt, **gen_before, **gen_after;
    /* commands */
    GPtrArray *commands;         /* char*: "what it does\tcommand" */
} VizReport;

/* Build the report of patch set id of db (attached to m). */
VizReport *viz_report_build(StemEditDb *db, StemModel *m, gint64 id, const VizReportOptions *o, GError **error);
void viz_report_free(VizReport *r);

/* JSON of one report (an object) into b. */
void viz_report_to_json(const VizReport *r, JsonBuilder *b);
/* Write reports (one or more, for --all) by format: .json, .md (charts as
 * PNG files beside it, named after it), .pdf. */
gboolean viz_reports_write(VizReport *const *reports, int n, const char *path, const VizTheme *t, GError **error);

#endif
