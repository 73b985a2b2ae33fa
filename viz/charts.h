/* Chart renderers: each takes a plain data struct, a theme and a size and draws
 * on any cairo_t, at the origin, in user units (pixels on screen and in PNGs,
 * points in PDF/SVG). Nothing here knows about files (viz/output.h writes them)
 * or about the model: the analyses fill the structs, the GTK widgets and the
 * CLI call the same renderers.
 *
 * Strings are UTF-8 and are copied by nobody: they must outlive the draw call.
 * Text is drawn with Pango ("Sans", sizes in user units). */
#ifndef STEM_VIZ_CHARTS_H
#define STEM_VIZ_CHARTS_H

#include <cairo.h>
#include <glib.h>

typedef struct {
    double r, g, b, a;
} VizColor;

#define VIZ_N_SERIES_COLORS 8

typedef struct {
    const char *name;            /* "light" | "dark" */
    VizColor bg;                 /* page / chart background */
    VizColor panel;              /* legend boxes, table stripes */
    VizColor fg;                 /* titles, labels */
    VizColor muted;              /* subtitles, tick labels */
    VizColor grid;               /* grid lines */
    VizColor axis;               /* axis lines */
    VizColor series[VIZ_N_SERIES_COLORS];  /* categorical palette (colour-blind safe order) */
    VizColor emphasis[3];        /* bars: 0 = ordinary, 1 = first emphasis, 2 = second */
    const char *font;            /* family, "Sans" */
    const char *mono;            /* family for token strings in tables, "Monospace" */
    double font_size;            /* base size in user units (13) */
} VizTheme;

const VizTheme *viz_theme_light(void);
const VizTheme *viz_theme_dark(void);
/* "light" / "dark"; NULL for another name. */
const VizTheme *viz_theme_by_name(const char *name);

/* Perceptual sequential colour map (viridis), t in [0, 1]. */
VizColor viz_colormap(double t);

/* Any renderer as a callback (grids of panels, file output, GTK snapshot). */
typedef void (*VizDrawFn)(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);

/* ------------------------------------------------------------------ text */

/* Draw text anchored at (x, y): ax/ay = 0 left/top, 0.5 centre, 1 right/bottom.
 * size in user units; bold; mono picks the theme's monospace family. max_w > 0
 * ellipsizes at that width. Returns the drawn width; *h_out (may be NULL) the height. */
double viz_text(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean bold, gboolean mono,
                double x, double y, double ax, double ay, double max_w, VizColor c, double *h_out);
/* Width (and height) the text would take. */
double viz_text_width(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean bold, gboolean mono,
                      double *h_out);
/* Wrapped paragraph (Pango markup if markup) at (x, y) within width; returns its height. */
double viz_text_paragraph(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean mono,
                          gboolean markup, double x, double y, double width, VizColor c);

/* Height viz_text_paragraph would use, without drawing. */
double viz_text_paragraph_height(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean mono,
                                 gboolean markup, double width);

/* ------------------------------------------------------------------ histogram */

typedef struct {
    const char *name;            /* legend entry */
    int n_bins;
    double lo, hi;               /* bin i covers [lo + i (hi-lo)/n, lo + (i+1) (hi-lo)/n) */
    const double *values;        /* [n_bins], e.g. percent of pairs per bin */
    double marker;               /* vertical marker (e.g. P95); NAN = none */
    const char *marker_label;    /* "P95" */
} VizHistSeries;

typedef struct {
    const char *title, *subtitle;
    const char *x_label, *y_label;   /* with units */
    int n_series;                    /* overlays, drawn translucent in palette order */
    const VizHistSeries *series;
} VizHistogram;

void viz_chart_histogram_draw(cairo_t *cr, const VizHistogram *hist, const VizTheme *t, double w, double h);

/* ------------------------------------------------------------------ bar groups */

typedef struct {
    const char *label;           /* token text */
    double value;
    int emphasis;                /* 0 ordinary, 1 or 2: coloured theme->emphasis[1|2] */
    const char *note;            /* shown after the value, e.g. "rank 37" (may be NULL) */
} VizBar;

typedef struct {
    const char *title;           /* "original prompt" */
    const char *subtitle;        /* the prompt itself (may be NULL) */
    int n;
    const VizBar *bars;          /* top to bottom */
} VizBarPanel;

typedef struct {
    const char *title, *subtitle;
    const char *value_label;     /* axis label under the panels, "probability (%)" */
    int n_panels;                /* side by side */
    const VizBarPanel *panels;
    double max_value;            /* shared scale; <= 0 = the largest value */
    gboolean percent;            /* values are fractions shown as percents */
    const char *emphasis_names[3]; /* legend for emphasis 1 and 2 ([0] unused) */
} VizBarGroups;

void viz_chart_bars_draw(cairo_t *cr, const VizBarGroups *b, const VizTheme *t, double w, double h);

/* ------------------------------------------------------------------ heatmap */

typedef struct {
    const char *title, *subtitle;
    const char *x_label, *y_label;
    const char *value_label;     /* colour bar title, with units */
    int rows, cols;
    const double *values;        /* [rows * cols] row-major; NAN = empty cell */
    const char *const *cell_text;   /* [rows * cols] or NULL (then the value is printed) */
    const char *const *row_labels;  /* [rows] or NULL */
    const char *const *col_labels;  /* [cols] or NULL */
    double vmin, vmax;           /* colour range; vmin >= vmax = data range (from 0 when percent) */
    gboolean percent;            /* values are fractions shown as percents */
    gboolean mono_cells;         /* cell text in the monospace family */
} VizHeatmap;

void viz_chart_heatmap_draw(cairo_t *cr, const VizHeatmap *hm, const VizTheme *t, double w, double h);

/* ------------------------------------------------------------------ scatter */

typedef struct {
    double x, y;
    const char *label;           /* may be NULL */
    int group;                   /* palette index */
    gboolean highlight;          /* drawn large, always labelled */
} VizPoint;

typedef struct {
    const char *title, *subtitle;
    const char *x_label, *y_label;
    int n;
    const VizPoint *points;
    int max_labels;              /* label at most this many ordinary points, in array order */
    const char *const *group_names; /* legend, [n_groups] or NULL */
    int n_groups;
} VizScatter;

void viz_chart_scatter_draw(cairo_t *cr, const VizScatter *s, const VizTheme *t, double w, double h);

/* ------------------------------------------------------------------ line curves */

typedef struct {
    const char *name;
    int n;
    const double *x, *y;         /* NAN y = gap */
    gboolean dashed;
    gboolean markers;
    int color;                   /* palette index; -1 = series order */
} VizLineSeries;

typedef struct {
    const char *title, *subtitle;
    const char *x_label, *y_label;
    int n_series;
    const VizLineSeries *series;
    gboolean log_x, log_y;
    double y_min, y_max;         /* y_min >= y_max = auto (from 0 for linear axes) */
    gboolean percent_y;          /* y values are fractions shown as percents */
    /* categorical x: tick i at x = i labelled x_ticks[i] (NULL = numeric ticks) */
    int n_x_ticks;
    const char *const *x_ticks;
} VizLines;

void viz_chart_lines_draw(cairo_t *cr, const VizLines *l, const VizTheme *t, double w, double h);

/* ------------------------------------------------------------------ table */

typedef struct {
    const char *title;           /* may be NULL */
    int n_cols, n_rows;
    const char *const *headers;  /* [n_cols] */
    const char *const *cells;    /* [n_rows * n_cols] row-major; NULL cell = empty */
    guint32 right_align;         /* bit c: column c right-aligned (numbers) */
    guint32 mono;                /* bit c: column c in monospace (tokens, hashes, commands) */
    double font_size;            /* 0 = theme size */
} VizTable;

/* Draws the table from the top of the area and returns the height it used
 * (rows that do not fit in h are left out and counted in *n_drawn_rows). */
double viz_chart_table_draw_ex(cairo_t *cr, const VizTable *tb, const VizTheme *t, double w, double h,
                               int *n_drawn_rows);
void viz_chart_table_draw(cairo_t *cr, const VizTable *tb, const VizTheme *t, double w, double h);
/* Height the whole table needs at width w. */
double viz_chart_table_height(cairo_t *cr, const VizTable *tb, const VizTheme *t, double w);

/* ------------------------------------------------------------------ panels */

typedef struct {
    VizDrawFn fn;
    const void *data;
} VizPanel;

typedef struct {
    const char *title, *subtitle;
    int n;
    const VizPanel *panels;
    int cols;                    /* <= 0: chosen from n */
} VizGrid;

/* A title and a grid of panels, each drawn by its own renderer in its cell. */
void viz_chart_grid_draw(cairo_t *cr, const VizGrid *g, const VizTheme *t, double w, double h);

/* The renderers as VizDrawFn (data = the chart struct). */
void viz_draw_histogram(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);
void viz_draw_bars(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);
void viz_draw_heatmap(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);
void viz_draw_scatter(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);
void viz_draw_lines(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);
void viz_draw_table(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);
void viz_draw_grid(cairo_t *cr, const void *data, const VizTheme *t, double w, double h);

/* ------------------------------------------------------------------ helpers */

/* "Nice" tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps), at most max_n + 1
 * of them, into ticks[]; returns the count and the step. */
int viz_nice_ticks(double lo, double hi, int max_n, double *ticks, int cap, double *step_out);
/* Format v for a tick with the given step (enough decimals to tell ticks apart). */
void viz_format_tick(double v, double step, gboolean percent, char *buf, size_t n);

#endif
