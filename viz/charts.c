/* Chart renderers on cairo (see charts.h). One layout recipe for every XY chart:
 * header (title, subtitle, legend row) on top, y tick labels and the rotated y
 * label on the left, x tick labels and the x label below, content clipped to the
 * plot rectangle. Sizes derive from theme->font_size so a chart stays readable
 * at any size. */
#include "charts.h"

#include <math.h>
#include <pango/pangocairo.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ themes */

#define RGB(hex) { ((hex) >> 16 & 0xff) / 255.0, ((hex) >> 8 & 0xff) / 255.0, ((hex) & 0xff) / 255.0, 1.0 }

static const VizTheme theme_light = {
    .name = "light",
    .bg = RGB(0xFFFFFF), .panel = RGB(0xF3F5F7), .fg = RGB(0x1F2328), .muted = RGB(0x5F6B76),
    .grid = RGB(0xE3E6EA), .axis = RGB(0x8C959F),
    /* Okabe-Ito-like, colour-blind safe, darkened for white backgrounds */
    .series = { RGB(0x2F6FBF), RGB(0xE07B00), RGB(0x159A6E), RGB(0xC43C5C), RGB(0x7B5CC4), RGB(0x3FA7D6),
                RGB(0x9C6B2E), RGB(0x6B7280) },
    .emphasis = { RGB(0x8EA9C8), RGB(0xE07B00), RGB(0x159A6E) },
    .font = "Sans", .mono = "Monospace", .font_size = 13.0,
};

static const VizTheme theme_dark = {
    .name = "dark",
    .bg = RGB(0x1C1E22), .panel = RGB(0x272A30), .fg = RGB(0xE8EAED), .muted = RGB(0xA3ABB5),
    .grid = RGB(0x33373E), .axis = RGB(0x6E7681),
    .series = { RGB(0x6EA8FF), RGB(0xFFA84D), RGB(0x4ED3A0), RGB(0xFF7A95), RGB(0xB59CFF), RGB(0x7FD3F5),
                RGB(0xD9A66B), RGB(0xA0A7B1) },
    .emphasis = { RGB(0x50627A), RGB(0xFFA84D), RGB(0x4ED3A0) },
    .font = "Sans", .mono = "Monospace", .font_size = 13.0,
};

const VizTheme *viz_theme_light(void) { return &theme_light; }
const VizTheme *viz_theme_dark(void) { return &theme_dark; }

const VizTheme *viz_theme_by_name(const char *name)
{
    if (!name || !strcmp(name, "light")) return &theme_light;
    if (!strcmp(name, "dark")) return &theme_dark;
    return NULL;
}

/* viridis at 9 stops, linearly interpolated */
VizColor viz_colormap(double t)
{
    static const double stops[9][3] = {
        { 0.267, 0.005, 0.329 }, { 0.283, 0.141, 0.458 }, { 0.254, 0.265, 0.530 },
        { 0.207, 0.372, 0.553 }, { 0.164, 0.471, 0.558 }, { 0.128, 0.567, 0.551 },
        { 0.135, 0.659, 0.518 }, { 0.478, 0.821, 0.318 }, { 0.993, 0.906, 0.144 },
    };
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double p = t * 8;
    int i = (int)p;
    if (i >= 8) i = 7;
    double f = p - i;
    VizColor c = { stops[i][0] + f * (stops[i + 1][0] - stops[i][0]), stops[i][1] + f * (stops[i + 1][1] - stops[i][1]),
                   stops[i][2] + f * (stops[i + 1][2] - stops[i][2]), 1.0 };
    return c;
}

static void set_color(cairo_t *cr, VizColor c) { cairo_set_source_rgba(cr, c.r, c.g, c.b, c.a); }
static void set_color_a(cairo_t *cr, VizColor c, double a) { cairo_set_source_rgba(cr, c.r, c.g, c.b, c.a * a); }
static double luminance(VizColor c) { return 0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b; }
static VizColor series_color(const VizTheme *t, int i) { return t->series[((i % VIZ_N_SERIES_COLORS) + VIZ_N_SERIES_COLORS) % VIZ_N_SERIES_COLORS]; }

static void paint_bg(cairo_t *cr, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    cairo_rectangle(cr, 0, 0, w, h);
    set_color(cr, t->bg);
    cairo_fill(cr);
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ text */

static PangoLayout *make_layout(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean bold,
                                gboolean mono, gboolean markup)
{
    PangoLayout *l = pango_cairo_create_layout(cr);
    /* unhinted metrics: the same layout on screen, PNG, SVG and PDF */
    cairo_font_options_t *fo = cairo_font_options_create();
    cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
    cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_NONE);
    pango_cairo_context_set_font_options(pango_layout_get_context(l), fo);
    cairo_font_options_destroy(fo);
    pango_layout_context_changed(l);
    PangoFontDescription *fd = pango_font_description_new();
    pango_font_description_set_family(fd, mono ? t->mono : t->font);
    pango_font_description_set_absolute_size(fd, size * PANGO_SCALE);
    if (bold) pango_font_description_set_weight(fd, PANGO_WEIGHT_BOLD);
    pango_layout_set_font_description(l, fd);
    pango_font_description_free(fd);
    if (!s) s = "";
    if (g_utf8_validate(s, -1, NULL)) {
        if (markup) pango_layout_set_markup(l, s, -1);
        else pango_layout_set_text(l, s, -1);
    } else {
        char *v = g_utf8_make_valid(s, -1);
        pango_layout_set_text(l, v, -1);
        g_free(v);
    }
    return l;
}

double viz_text_width(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean bold, gboolean mono,
                      double *h_out)
{
    PangoLayout *l = make_layout(cr, t, s, size, bold, mono, FALSE);
    int pw, ph;
    pango_layout_get_size(l, &pw, &ph);
    g_object_unref(l);
    if (h_out) *h_out = (double)ph / PANGO_SCALE;
    return (double)pw / PANGO_SCALE;
}

double viz_text(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean bold, gboolean mono,
                double x, double y, double ax, double ay, double max_w, VizColor c, double *h_out)
{
    PangoLayout *l = make_layout(cr, t, s, size, bold, mono, FALSE);
    if (max_w > 0) {
        pango_layout_set_width(l, (int)(max_w * PANGO_SCALE));
        pango_layout_set_ellipsize(l, PANGO_ELLIPSIZE_END);
    }
    PangoRectangle ink, log;
    pango_layout_get_pixel_extents(l, &ink, &log);
    int pw, ph;
    pango_layout_get_size(l, &pw, &ph);
    double tw = (double)pw / PANGO_SCALE, th = (double)ph / PANGO_SCALE;
    if (max_w > 0 && tw > max_w) tw = max_w;
    /* an ellipsized layout is max_w wide: measure the text it actually shows */
    if (max_w > 0) tw = log.width < max_w ? log.width : max_w;
    cairo_save(cr);
    set_color(cr, c);
    cairo_move_to(cr, x - ax * tw - (max_w > 0 ? log.x : 0), y - ay * th);
    pango_cairo_show_layout(cr, l);
    cairo_restore(cr);
    g_object_unref(l);
    if (h_out) *h_out = th;
    return tw;
}

double viz_text_paragraph(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean mono,
                          gboolean markup, double x, double y, double width, VizColor c)
{
    PangoLayout *l = make_layout(cr, t, s, size, FALSE, mono, markup);
    pango_layout_set_width(l, (int)(width * PANGO_SCALE));
    pango_layout_set_wrap(l, mono ? PANGO_WRAP_CHAR : PANGO_WRAP_WORD_CHAR);
    int pw, ph;
    pango_layout_get_size(l, &pw, &ph);
    cairo_save(cr);
    set_color(cr, c);
    cairo_move_to(cr, x, y);
    pango_cairo_show_layout(cr, l);
    cairo_restore(cr);
    g_object_unref(l);
    return (double)ph / PANGO_SCALE;
}

double viz_text_paragraph_height(cairo_t *cr, const VizTheme *t, const char *s, double size, gboolean mono,
                                 gboolean markup, double width)
{
    PangoLayout *l = make_layout(cr, t, s, size, FALSE, mono, markup);
    pango_layout_set_width(l, (int)(width * PANGO_SCALE));
    pango_layout_set_wrap(l, mono ? PANGO_WRAP_CHAR : PANGO_WRAP_WORD_CHAR);
    int pw, ph;
    pango_layout_get_size(l, &pw, &ph);
    g_object_unref(l);
    return (double)ph / PANGO_SCALE;
}

/* rotated 90 degrees counter-clockwise, centred on (x, y), at most max_len long
 * (smaller type first, then ellipsized) */
static void text_vertical(cairo_t *cr, const VizTheme *t, const char *s, double size, double x, double y, double max_len,
                          VizColor c)
{
    double w = viz_text_width(cr, t, s, size, FALSE, FALSE, NULL);
    if (max_len > 0 && w > max_len) size = MAX(size * 0.8, size * max_len / w);
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, -G_PI / 2);
    viz_text(cr, t, s, size, FALSE, FALSE, 0, 0, 0.5, 0.5, max_len > 0 ? max_len : 0, c, NULL);
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ ticks */

int viz_nice_ticks(double lo, double hi, int max_n, double *ticks, int cap, double *step_out)
{
    if (max_n < 1) max_n = 1;
    if (!(hi > lo)) {
        double d = fabs(lo) > 0 ? fabs(lo) * 0.5 : 1.0;
        lo -= d;
        hi += d;
    }
    double raw = (hi - lo) / max_n;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
    int n = 0;
    double first = ceil(lo / step - 1e-9) * step;
    for (int i = 0; n < cap; i++) {
        double v = first + i * step;
        if (v > hi + step * 1e-9) break;
        ticks[n++] = fabs(v) < step * 1e-9 ? 0.0 : v;
    }
    if (step_out) *step_out = step;
    return n;
}

void viz_format_tick(double v, double step, gboolean percent, char *buf, size_t n)
{
    if (percent) {
        v *= 100;
        step *= 100;
    }
    int dec = 0;
    while (dec < 6 && fabs(step * pow(10, dec) - rint(step * pow(10, dec))) > 1e-6 * pow(10, dec)) dec++;
    if (fabs(v) >= 1e6 && step >= 1e5 && !percent) {
        double s = step / 1e6;
        int d = 0;
        while (d < 3 && fabs(s * pow(10, d) - rint(s * pow(10, d))) > 1e-6) d++;
        g_snprintf(buf, n, "%.*fM", d, v / 1e6);
        return;
    }
    if (fabs(v) >= 1e4 && step >= 1e3 && !percent) {
        double s = step / 1e3;
        int d = 0;
        while (d < 3 && fabs(s * pow(10, d) - rint(s * pow(10, d))) > 1e-6) d++;
        g_snprintf(buf, n, "%.*fk", d, v / 1e3);
        return;
    }
    g_snprintf(buf, n, "%.*f%s", dec, v, percent ? "%" : "");
}

typedef struct {
    int n;
    double v[48];          /* axis values (log10 for log axes) */
    char lab[48][24];
    double lo, hi;         /* axis range (log10 for log axes) */
} Axis;

/* Linear axis over [lo, hi]; with include_zero the range starts at 0. The range
 * is widened to the outer ticks. */
static void axis_linear(Axis *a, double lo, double hi, int max_ticks, gboolean percent, gboolean snap)
{
    double step;
    double t[48];
    if (!(hi > lo)) {
        double d = fabs(hi) > 0 ? fabs(hi) * 0.5 : 1.0;
        lo -= d;
        hi += d;
    }
    int n = viz_nice_ticks(lo, hi, max_ticks, t, 48, &step);
    if (snap) {
        double lo2 = floor(lo / step + 1e-9) * step, hi2 = ceil(hi / step - 1e-9) * step;
        n = viz_nice_ticks(lo2, hi2, max_ticks, t, 48, &step);
        a->lo = lo2;
        a->hi = hi2;
        /* the widened range may choose a different step: keep the outer ticks as the range */
        if (n > 0) {
            a->lo = MIN(lo2, t[0]);
            a->hi = MAX(hi2, t[n - 1]);
        }
    } else {
        a->lo = lo;
        a->hi = hi;
    }
    a->n = n;
    for (int i = 0; i < n; i++) {
        a->v[i] = t[i];
        viz_format_tick(t[i], step, percent, a->lab[i], sizeof a->lab[i]);
    }
}

static void format_pow10(double v, char *buf, size_t n)
{
    if (v >= 1e9) g_snprintf(buf, n, "%gG", v / 1e9);
    else if (v >= 1e6) g_snprintf(buf, n, "%gM", v / 1e6);
    else if (v >= 1e3) g_snprintf(buf, n, "%gk", v / 1e3);
    else g_snprintf(buf, n, "%g", v);
}

/* Log axis: decades, plus 2 and 5 when the range spans few decades. */
static void axis_log(Axis *a, double lo, double hi)
{
    if (!(lo > 0)) lo = 1e-12;
    if (!(hi > lo)) hi = lo * 10;
    /* the data range with a small margin; ticks at the decades (and 2, 5) inside it */
    double span = log10(hi) - log10(lo);
    a->lo = log10(lo) - 0.03 * span;
    a->hi = log10(hi) + 0.03 * span;
    double l0 = floor(a->lo), l1 = ceil(a->hi);
    a->n = 0;
    gboolean minor = (a->hi - a->lo) <= 3.2;
    for (double d = l0; d <= l1 + 1e-9 && a->n < 46; d++) {
        const double mult[3] = { 1, 2, 5 };
        for (int k = 0; k < (minor ? 3 : 1); k++) {
            double v = mult[k] * pow(10, d);
            if (log10(v) < a->lo - 1e-9) continue;
            if (log10(v) > a->hi + 1e-9) break;
            a->v[a->n] = log10(v);
            format_pow10(v, a->lab[a->n], sizeof a->lab[0]);
            a->n++;
        }
    }
}

static void axis_categorical(Axis *a, int n, const char *const *labels)
{
    a->n = MIN(n, 48);
    a->lo = -0.5;
    a->hi = n - 0.5;
    for (int i = 0; i < a->n; i++) {
        a->v[i] = i;
        g_strlcpy(a->lab[i], labels[i] ? labels[i] : "", sizeof a->lab[i]);
    }
}

/* Thin out tick labels that would overlap: returns the stride to label. */
static int label_stride(cairo_t *cr, const VizTheme *t, const Axis *a, double px_per_unit, double fs)
{
    double maxw = 0;
    for (int i = 0; i < a->n; i++) maxw = MAX(maxw, viz_text_width(cr, t, a->lab[i], fs, FALSE, FALSE, NULL));
    if (a->n < 2) return 1;
    double gap = fabs(a->v[1] - a->v[0]) * px_per_unit;
    int s = 1;
    while (s < a->n && gap * s < maxw + fs) s++;
    return s;
}

/* ------------------------------------------------------------------ frame */

typedef struct {
    double x0, y0, x1, y1;  /* plot rectangle (y0 top) */
    Axis xa, ya;
    gboolean log_x, log_y;
} Frame;

static double fx(const Frame *f, double v)
{
    if (f->log_x) v = v > 0 ? log10(v) : f->xa.lo - 1;
    return f->x0 + (v - f->xa.lo) / (f->xa.hi - f->xa.lo) * (f->x1 - f->x0);
}

static double fy(const Frame *f, double v)
{
    if (f->log_y) v = v > 0 ? log10(v) : f->ya.lo - 1;
    return f->y1 - (v - f->ya.lo) / (f->ya.hi - f->ya.lo) * (f->y1 - f->y0);
}

/* Title and subtitle at the top; returns the y below them. */
static double draw_header(cairo_t *cr, const VizTheme *t, const char *title, const char *subtitle, double w)
{
    double pad = t->font_size * 1.1, y = pad * 0.8, th = 0;
    if (title && *title) {
        viz_text(cr, t, title, t->font_size * 1.3, TRUE, FALSE, pad, y, 0, 0, w - 2 * pad, t->fg, &th);
        y += th + 2;
    }
    if (subtitle && *subtitle) {
        y += viz_text_paragraph(cr, t, subtitle, t->font_size * 0.92, FALSE, FALSE, pad, y, w - 2 * pad, t->muted);
        y += 2;
    }
    return y + t->font_size * 0.4;
}

typedef enum { SWATCH_BOX, SWATCH_LINE, SWATCH_DASH } SwatchKind;

/* A row of legend entries starting at (x, y), wrapping within width; returns its height. */
static double draw_legend_row(cairo_t *cr, const VizTheme *t, int n, const char *const *names, const VizColor *colors,
                              const SwatchKind *kinds, double x, double y, double width)
{
    double fs = t->font_size * 0.92, sw = fs * 1.1, cx = x, cy = y, lh = fs * 1.5;
    int drawn = 0;
    for (int i = 0; i < n; i++) {
        if (!names[i]) continue;
        double tw = viz_text_width(cr, t, names[i], fs, FALSE, FALSE, NULL);
        double need = sw + 6 + tw + fs * 1.4;
        if (cx > x && cx + need > x + width) {
            cx = x;
            cy += lh;
        }
        double my = cy + lh * 0.5;
        cairo_save(cr);
        set_color(cr, colors[i]);
        if (kinds && kinds[i] != SWATCH_BOX) {
            cairo_set_line_width(cr, 2.5);
            if (kinds[i] == SWATCH_DASH) {
                double d[2] = { 5, 3 };
                cairo_set_dash(cr, d, 2, 0);
            }
            cairo_move_to(cr, cx, my);
            cairo_line_to(cr, cx + sw * 1.4, my);
            cairo_stroke(cr);
            cx += sw * 0.4;
        } else {
            cairo_rectangle(cr, cx, my - sw * 0.45, sw, sw * 0.9);
            cairo_fill(cr);
        }
        cairo_restore(cr);
        viz_text(cr, t, names[i], fs, FALSE, FALSE, cx + sw + 6, my, 0, 0.5, 0, t->fg, NULL);
        cx += need;
        drawn++;
    }
    return drawn ? cy - y + lh + t->font_size * 0.3 : 0;
}

/* Lay out the plot rectangle inside [0, top] .. [w, h] leaving room for tick
 * labels and axis labels; axes must be filled first. */
static void frame_layout(cairo_t *cr, const VizTheme *t, Frame *f, double top, double w, double h, const char *x_label,
                         const char *y_label)
{
    double fs = t->font_size, tick = fs * 0.88, pad = fs * 1.1;
    double maxw = 0, th = 0;
    for (int i = 0; i < f->ya.n; i++) maxw = MAX(maxw, viz_text_width(cr, t, f->ya.lab[i], tick, FALSE, FALSE, &th));
    viz_text_width(cr, t, "0", tick, FALSE, FALSE, &th);
    double ylab_w = y_label && *y_label ? fs * 1.6 : 0;
    f->x0 = pad + ylab_w + maxw + fs * 0.6;
    double lastw = f->xa.n ? viz_text_width(cr, t, f->xa.lab[f->xa.n - 1], tick, FALSE, FALSE, NULL) : 0;
    f->x1 = w - MAX(pad * 1.2, lastw / 2 + fs * 0.5);
    f->y0 = top + fs * 0.5;
    double xlab_h = x_label && *x_label ? fs * 1.7 : 0;
    f->y1 = h - pad * 0.8 - xlab_h - th - fs * 0.5;
    if (f->y1 < f->y0 + 20) f->y1 = f->y0 + 20;
    if (f->x1 < f->x0 + 20) f->x1 = f->x0 + 20;
}

static void draw_frame(cairo_t *cr, const VizTheme *t, const Frame *f, const char *x_label, const char *y_label,
                       gboolean x_grid)
{
    double fs = t->font_size, tick = fs * 0.88, pad = fs * 1.1;
    cairo_save(cr);
    cairo_set_line_width(cr, 1.0);
    /* grid */
    set_color(cr, t->grid);
    for (int i = 0; i < f->ya.n; i++) {
        double y = round(fy(f, f->log_y ? pow(10, f->ya.v[i]) : f->ya.v[i])) + 0.5;
        if (y < f->y0 - 0.5 || y > f->y1 + 0.5) continue;
        cairo_move_to(cr, f->x0, y);
        cairo_line_to(cr, f->x1, y);
    }
    if (x_grid)
        for (int i = 0; i < f->xa.n; i++) {
            double x = round(fx(f, f->log_x ? pow(10, f->xa.v[i]) : f->xa.v[i])) + 0.5;
            if (x < f->x0 - 0.5 || x > f->x1 + 0.5) continue;
            cairo_move_to(cr, x, f->y0);
            cairo_line_to(cr, x, f->y1);
        }
    cairo_stroke(cr);
    /* axes */
    set_color(cr, t->axis);
    cairo_move_to(cr, round(f->x0) + 0.5, f->y0);
    cairo_line_to(cr, round(f->x0) + 0.5, round(f->y1) + 0.5);
    cairo_line_to(cr, f->x1, round(f->y1) + 0.5);
    cairo_stroke(cr);
    cairo_restore(cr);
    /* tick labels */
    for (int i = 0; i < f->ya.n; i++) {
        double y = fy(f, f->log_y ? pow(10, f->ya.v[i]) : f->ya.v[i]);
        if (y < f->y0 - 1 || y > f->y1 + 1) continue;
        viz_text(cr, t, f->ya.lab[i], tick, FALSE, FALSE, f->x0 - fs * 0.5, y, 1, 0.5, 0, t->muted, NULL);
    }
    double ppu = (f->x1 - f->x0) / (f->xa.hi - f->xa.lo);
    int stride = label_stride(cr, t, &f->xa, ppu, tick);
    double th = 0;
    for (int i = 0; i < f->xa.n; i += stride) {
        double x = fx(f, f->log_x ? pow(10, f->xa.v[i]) : f->xa.v[i]);
        if (x < f->x0 - 1 || x > f->x1 + 1) continue;
        cairo_save(cr);
        set_color(cr, t->axis);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, round(x) + 0.5, f->y1);
        cairo_line_to(cr, round(x) + 0.5, f->y1 + 4);
        cairo_stroke(cr);
        cairo_restore(cr);
        viz_text(cr, t, f->xa.lab[i], tick, FALSE, FALSE, x, f->y1 + 6, 0.5, 0, 0, t->muted, &th);
    }
    if (th == 0) viz_text_width(cr, t, "0", tick, FALSE, FALSE, &th);
    if (x_label && *x_label)
        viz_text(cr, t, x_label, fs, FALSE, FALSE, (f->x0 + f->x1) / 2, f->y1 + 6 + th + fs * 0.35, 0.5, 0, 0, t->fg,
                 NULL);
    if (y_label && *y_label) text_vertical(cr, t, y_label, fs, pad + fs * 0.5, (f->y0 + f->y1) / 2, f->y1 - f->y0, t->fg);
}

static void clip_frame(cairo_t *cr, const Frame *f)
{
    cairo_rectangle(cr, f->x0, f->y0 - 1, f->x1 - f->x0 + 1, f->y1 - f->y0 + 2);
    cairo_clip(cr);
}

/* ------------------------------------------------------------------ histogram */

void viz_chart_histogram_draw(cairo_t *cr, const VizHistogram *H, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    paint_bg(cr, t, w, h);
    double y = draw_header(cr, t, H->title, H->subtitle, w);
    double fs = t->font_size;
    /* legend */
    if (H->n_series > 1 || (H->n_series == 1 && H->series[0].name)) {
        const char *names[8];
        VizColor cols[8];
        int n = MIN(H->n_series, 8);
        for (int i = 0; i < n; i++) {
            names[i] = H->series[i].name;
            cols[i] = series_color(t, i);
        }
        y += draw_legend_row(cr, t, n, names, cols, NULL, fs * 1.1, y, w - 2.2 * fs);
    }
    double xmin = INFINITY, xmax = -INFINITY, ymax = 0;
    for (int s = 0; s < H->n_series; s++) {
        const VizHistSeries *S = &H->series[s];
        xmin = MIN(xmin, S->lo);
        xmax = MAX(xmax, S->hi);
        for (int i = 0; i < S->n_bins; i++)
            if (isfinite(S->values[i])) ymax = MAX(ymax, S->values[i]);
    }
    if (!isfinite(xmin)) {
        xmin = 0;
        xmax = 1;
    }
    if (ymax <= 0) ymax = 1;
    Frame f = { 0 };
    axis_linear(&f.ya, 0, ymax * 1.04, 5, FALSE, TRUE);
    axis_linear(&f.xa, xmin, xmax, MAX(3, (int)(w / 110)), FALSE, FALSE);
    frame_layout(cr, t, &f, y, w, h, H->x_label, H->y_label);
    draw_frame(cr, t, &f, H->x_label, H->y_label, TRUE);

    cairo_save(cr);
    clip_frame(cr, &f);
    gboolean dark = luminance(t->bg) < 0.5;
    for (int s = 0; s < H->n_series; s++) {
        const VizHistSeries *S = &H->series[s];
        VizColor c = series_color(t, s);
        double bw = (S->hi - S->lo) / S->n_bins;
        cairo_new_path(cr);
        cairo_move_to(cr, fx(&f, S->lo), fy(&f, 0));
        for (int i = 0; i < S->n_bins; i++) {
            double v = isfinite(S->values[i]) ? S->values[i] : 0;
            cairo_line_to(cr, fx(&f, S->lo + i * bw), fy(&f, v));
            cairo_line_to(cr, fx(&f, S->lo + (i + 1) * bw), fy(&f, v));
        }
        cairo_line_to(cr, fx(&f, S->hi), fy(&f, 0));
        cairo_close_path(cr);
        set_color_a(cr, c, dark ? 0.30 : 0.24);
        cairo_fill_preserve(cr);
        set_color(cr, c);
        cairo_set_line_width(cr, 1.6);
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
        cairo_stroke(cr);
    }
    cairo_restore(cr);
    /* markers, labels stacked so overlays do not collide */
    for (int s = 0; s < H->n_series; s++) {
        const VizHistSeries *S = &H->series[s];
        if (!isfinite(S->marker) || S->marker < f.xa.lo || S->marker > f.xa.hi) continue;
        VizColor c = series_color(t, s);
        double x = round(fx(&f, S->marker)) + 0.5;
        cairo_save(cr);
        set_color(cr, c);
        cairo_set_line_width(cr, 1.5);
        double d[2] = { 6, 4 };
        cairo_set_dash(cr, d, 2, 0);
        cairo_move_to(cr, x, f.y0);
        cairo_line_to(cr, x, f.y1);
        cairo_stroke(cr);
        cairo_restore(cr);
        char lab[64];
        g_snprintf(lab, sizeof lab, "%s %.3g", S->marker_label ? S->marker_label : "", S->marker);
        double tw = viz_text_width(cr, t, lab, fs * 0.88, TRUE, FALSE, NULL);
        double ly = f.y0 + 4 + s * fs * 1.35;
        gboolean left = x + 5 + tw > f.x1;
        double lx = left ? x - 5 - tw : x + 5, lh = fs * 1.15;
        cairo_save(cr);
        set_color_a(cr, t->bg, 0.85);   /* halo: the label stays readable over the other series */
        cairo_rectangle(cr, lx - 2, ly - 1, tw + 4, lh + 2);
        cairo_fill(cr);
        cairo_restore(cr);
        viz_text(cr, t, lab, fs * 0.88, TRUE, FALSE, lx, ly, 0, 0, 0, c, NULL);
    }
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ bar groups */

static void format_value(double v, gboolean percent, char *buf, size_t n)
{
    if (!isfinite(v)) g_strlcpy(buf, "–", n);
    else if (percent) {
        double p = v * 100;
        if (p > 0 && p < 0.01) g_strlcpy(buf, "<0.01%", n);
        else if (p != 0 && fabs(p) < 0.1) g_snprintf(buf, n, "%.2f%%", p);
        else g_snprintf(buf, n, "%.1f%%", p);
    } else if (v != 0 && (fabs(v) < 0.001 || fabs(v) >= 1e6)) g_snprintf(buf, n, "%.2e", v);
    else if (fabs(v) < 1) g_snprintf(buf, n, "%.3f", v);   /* same decimals for every bar: 0.150, not 0.15 */
    else if (fabs(v) < 100) g_snprintf(buf, n, "%.2f", v);
    else g_snprintf(buf, n, "%.0f", v);
}

void viz_chart_bars_draw(cairo_t *cr, const VizBarGroups *B, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    paint_bg(cr, t, w, h);
    double fs = t->font_size, pad = fs * 1.1;
    double top = draw_header(cr, t, B->title, B->subtitle, w);
    double maxv = B->max_value;
    if (maxv <= 0)
        for (int p = 0; p < B->n_panels; p++)
            for (int i = 0; i < B->panels[p].n; i++) maxv = MAX(maxv, B->panels[p].bars[i].value);
    if (maxv <= 0) maxv = 1;
    /* footer: legend of emphasis colours, axis label */
    int n_leg = 0;
    const char *lnames[2];
    VizColor lcols[2];
    for (int e = 1; e <= 2; e++)
        if (B->emphasis_names[e]) {
            lnames[n_leg] = B->emphasis_names[e];
            lcols[n_leg++] = t->emphasis[e];
        }
    double foot = fs * 1.9 + (n_leg ? fs * 1.6 : 0) + (B->value_label ? fs * 1.5 : 0);
    int np = MAX(B->n_panels, 1);
    double y_end = top;
    double gap = fs * 2.0, pw = (w - 2 * pad - (np - 1) * gap) / np;
    double y_panels = top, y_bottom = h - foot;
    Axis xa;
    axis_linear(&xa, 0, maxv, MAX(2, (int)(pw / 95)), B->percent, TRUE);
    for (int p = 0; p < B->n_panels; p++) {
        const VizBarPanel *P = &B->panels[p];
        double x0 = pad + p * (pw + gap), y = y_panels, th = 0;
        viz_text(cr, t, P->title, fs * 1.05, TRUE, FALSE, x0, y, 0, 0, pw, t->fg, &th);
        y += th + 1;
        if (P->subtitle) {
            viz_text(cr, t, P->subtitle, fs * 0.88, FALSE, TRUE, x0, y, 0, 0, pw, t->muted, &th);
            y += th;
        }
        y += fs * 0.6;
        /* label column */
        double lw = 0;
        for (int i = 0; i < P->n; i++)
            lw = MAX(lw, viz_text_width(cr, t, P->bars[i].label, fs * 0.95, FALSE, TRUE, NULL));
        lw = MIN(lw, pw * 0.4);
        char buf[32];
        format_value(maxv, B->percent, buf, sizeof buf);
        double vw = viz_text_width(cr, t, "100.0%", fs * 0.85, FALSE, FALSE, NULL) + fs * 0.4;
        double bx = x0 + lw + fs * 0.6, bmax = x0 + pw - vw - bx;
        if (bmax < 10) bmax = 10;
        double area = y_bottom - y;
        int n = MAX(P->n, 1);
        double rh = MIN(fs * 3.0, area / n), bh = MIN(rh * 0.68, fs * 1.7);
        /* grid at ticks */
        cairo_save(cr);
        cairo_set_line_width(cr, 1);
        set_color(cr, t->grid);
        for (int i = 0; i < xa.n; i++) {
            double x = round(bx + xa.v[i] / xa.hi * bmax) + 0.5;
            cairo_move_to(cr, x, y - 2);
            cairo_line_to(cr, x, y + n * rh);
        }
        cairo_stroke(cr);
        set_color(cr, t->axis);
        cairo_move_to(cr, round(bx) + 0.5, y - 2);
        cairo_line_to(cr, round(bx) + 0.5, y + n * rh);
        cairo_stroke(cr);
        cairo_restore(cr);
        int stride = 1;
        if (xa.n > 1) {
            double lwid = viz_text_width(cr, t, xa.lab[xa.n - 1], fs * 0.82, FALSE, FALSE, NULL);
            while (stride < xa.n && (xa.v[1] - xa.v[0]) / xa.hi * bmax * stride < lwid + fs) stride++;
        }
        for (int i = 0; i < xa.n; i += stride)
            viz_text(cr, t, xa.lab[i], fs * 0.82, FALSE, FALSE, bx + xa.v[i] / xa.hi * bmax, y + n * rh + 4, 0.5, 0, 0,
                     t->muted, NULL);
        for (int i = 0; i < P->n; i++) {
            const VizBar *b = &P->bars[i];
            double cy = y + i * rh + rh / 2;
            int e = b->emphasis >= 0 && b->emphasis <= 2 ? b->emphasis : 0;
            VizColor c = e ? t->emphasis[e] : t->emphasis[0];
            double len = isfinite(b->value) ? MAX(0, b->value) / xa.hi * bmax : 0;
            cairo_save(cr);
            set_color(cr, c);
            cairo_rectangle(cr, bx + 0.5, cy - bh / 2, len, bh);
            cairo_fill(cr);
            cairo_restore(cr);
            viz_text(cr, t, b->label, fs * 0.95, e != 0, TRUE, bx - fs * 0.4, cy, 1, 0.5, lw, e ? c : t->fg, NULL);
            format_value(b->value, B->percent, buf, sizeof buf);
            char *vt = b->note ? g_strdup_printf("%s · %s", buf, b->note) : g_strdup(buf);
            viz_text(cr, t, vt, fs * 0.85, e != 0, FALSE, bx + len + fs * 0.35, cy, 0, 0.5, 0, e ? c : t->muted, NULL);
            g_free(vt);
        }
        y_end = MAX(y_end, y + n * rh);
    }
    /* footer right under the panels (not at the bottom: no gap on tall canvases) */
    double fy0 = y_end + fs * 2.2;
    if (B->value_label) {
        viz_text(cr, t, B->value_label, fs, FALSE, FALSE, w / 2, fy0, 0.5, 0, 0, t->fg, NULL);
        fy0 += fs * 1.5;
    }
    if (n_leg) draw_legend_row(cr, t, n_leg, lnames, lcols, NULL, pad, fy0, w - 2 * pad);
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ heatmap */

void viz_chart_heatmap_draw(cairo_t *cr, const VizHeatmap *M, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    paint_bg(cr, t, w, h);
    double fs = t->font_size, pad = fs * 1.1;
    double top = draw_header(cr, t, M->title, M->subtitle, w);
    int R = MAX(M->rows, 1), C = MAX(M->cols, 1);
    double vmin = M->vmin, vmax = M->vmax;
    if (!(vmax > vmin)) {
        vmin = INFINITY;
        vmax = -INFINITY;
        for (int i = 0; i < M->rows * M->cols; i++)
            if (isfinite(M->values[i])) {
                vmin = MIN(vmin, M->values[i]);
                vmax = MAX(vmax, M->values[i]);
            }
        if (!isfinite(vmin)) vmin = 0, vmax = 1;
        /* probabilities (percent) always start at 0, so colour reads as size */
        if (vmin > 0 && (M->percent || vmin < 0.5 * vmax)) vmin = 0;
        if (!(vmax > vmin)) vmax = vmin + 1;
    }
    /* labels */
    double rlw = 0;
    if (M->row_labels)
        for (int r = 0; r < M->rows; r++) rlw = MAX(rlw, viz_text_width(cr, t, M->row_labels[r], fs * 0.9, FALSE, FALSE, NULL));
    rlw = MIN(rlw, w * 0.3);
    double ylab = M->y_label ? fs * 1.6 : 0;
    Axis va;
    axis_linear(&va, vmin, vmax, 5, M->percent, FALSE);
    double cbw = fs * 1.0, cb_lab = 0;
    for (int i = 0; i < va.n; i++) cb_lab = MAX(cb_lab, viz_text_width(cr, t, va.lab[i], fs * 0.85, FALSE, FALSE, NULL));
    double x0 = pad + ylab + rlw + (rlw > 0 ? fs * 0.6 : 0);
    double x1 = w - pad - cbw - fs * 0.6 - cb_lab - fs * 1.8;
    double clh = 0;
    gboolean rotate = FALSE;
    double cw = (x1 - x0) / C;
    if (M->col_labels) {
        double mw = 0;
        for (int c = 0; c < M->cols; c++) mw = MAX(mw, viz_text_width(cr, t, M->col_labels[c], fs * 0.9, FALSE, FALSE, &clh));
        if (mw > cw - 4) {
            rotate = TRUE;
            clh = MIN(mw, h * 0.25) * 0.72 + fs;
        }
        clh += fs * 0.5;
    }
    double y0 = top + clh, y1 = h - pad - (M->x_label ? fs * 1.8 : 0);
    double ch = (y1 - y0) / R;
    /* cells */
    for (int r = 0; r < M->rows; r++)
        for (int c = 0; c < M->cols; c++) {
            double v = M->values[r * M->cols + c];
            double cx = x0 + c * cw, cy = y0 + r * ch;
            VizColor col = isfinite(v) ? viz_colormap((v - vmin) / (vmax - vmin)) : t->panel;
            cairo_save(cr);
            set_color(cr, col);
            cairo_rectangle(cr, cx + 0.5, cy + 0.5, cw - 1, ch - 1);
            cairo_fill(cr);
            cairo_restore(cr);
            if (!isfinite(v) && !(M->cell_text && M->cell_text[r * M->cols + c])) continue;
            VizColor tc = luminance(col) > 0.45 ? (VizColor){ 0.07, 0.07, 0.09, 1 } : (VizColor){ 1, 1, 1, 1 };
            if (!isfinite(v)) tc = t->muted;
            char buf[32];
            format_value(v, M->percent, buf, sizeof buf);
            const char *txt = M->cell_text ? M->cell_text[r * M->cols + c] : NULL;
            double tfs = MIN(fs * 0.95, ch * 0.42);
            if (tfs < 6.5) continue;
            if (txt && ch >= tfs * 2.6) {
                viz_text(cr, t, txt, tfs, TRUE, M->mono_cells, cx + cw / 2, cy + ch / 2 - tfs * 0.05, 0.5, 1, cw - 6, tc, NULL);
                if (isfinite(v))
                    viz_text(cr, t, buf, tfs * 0.85, FALSE, FALSE, cx + cw / 2, cy + ch / 2 + tfs * 0.1, 0.5, 0, cw - 6, tc, NULL);
            } else {
                viz_text(cr, t, txt ? txt : buf, tfs, txt != NULL, txt && M->mono_cells, cx + cw / 2, cy + ch / 2, 0.5,
                         0.5, cw - 6, tc, NULL);
            }
        }
    /* row and column labels */
    if (M->row_labels)
        for (int r = 0; r < M->rows; r++)
            viz_text(cr, t, M->row_labels[r], fs * 0.9, FALSE, FALSE, x0 - fs * 0.5, y0 + (r + 0.5) * ch, 1, 0.5, rlw,
                     t->fg, NULL);
    if (M->col_labels)
        for (int c = 0; c < M->cols; c++) {
            double cx = x0 + (c + 0.5) * cw;
            if (rotate) {
                cairo_save(cr);
                cairo_translate(cr, cx, y0 - fs * 0.4);
                cairo_rotate(cr, -G_PI / 4);
                viz_text(cr, t, M->col_labels[c], fs * 0.9, FALSE, FALSE, 0, 0, 0, 0.5, h * 0.25, t->fg, NULL);
                cairo_restore(cr);
            } else {
                viz_text(cr, t, M->col_labels[c], fs * 0.9, FALSE, FALSE, cx, y0 - fs * 0.3, 0.5, 1, cw, t->fg, NULL);
            }
        }
    if (M->x_label) viz_text(cr, t, M->x_label, fs, FALSE, FALSE, (x0 + x1) / 2, y1 + fs * 0.5, 0.5, 0, 0, t->fg, NULL);
    if (M->y_label) text_vertical(cr, t, M->y_label, fs, pad + fs * 0.5, (y0 + y1) / 2, y1 - y0, t->fg);
    /* colour bar */
    double bx = x1 + fs * 1.2, by0 = y0, by1 = y1;
    cairo_pattern_t *pat = cairo_pattern_create_linear(0, by1, 0, by0);
    for (int i = 0; i <= 16; i++) {
        VizColor c = viz_colormap(i / 16.0);
        cairo_pattern_add_color_stop_rgb(pat, i / 16.0, c.r, c.g, c.b);
    }
    cairo_rectangle(cr, bx, by0, cbw, by1 - by0);
    cairo_set_source(cr, pat);
    cairo_fill(cr);
    cairo_pattern_destroy(pat);
    for (int i = 0; i < va.n; i++) {
        double yy = by1 - (va.v[i] - vmin) / (vmax - vmin) * (by1 - by0);
        cairo_save(cr);
        set_color(cr, t->axis);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, bx + cbw, round(yy) + 0.5);
        cairo_line_to(cr, bx + cbw + 3, round(yy) + 0.5);
        cairo_stroke(cr);
        cairo_restore(cr);
        viz_text(cr, t, va.lab[i], fs * 0.85, FALSE, FALSE, bx + cbw + 5, yy, 0, 0.5, 0, t->muted, NULL);
    }
    if (M->value_label) {
        double tx = w - pad * 0.6;
        text_vertical(cr, t, M->value_label, fs * 0.9, tx - fs * 0.2, (by0 + by1) / 2, by1 - by0, t->muted);
    }
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ scatter */

typedef struct {
    double x0, y0, x1, y1;
} Box;

static gboolean box_overlaps(const Box *a, const Box *b)
{
    return a->x0 < b->x1 && b->x0 < a->x1 && a->y0 < b->y1 && b->y0 < a->y1;
}

void viz_chart_scatter_draw(cairo_t *cr, const VizScatter *S, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    paint_bg(cr, t, w, h);
    double fs = t->font_size;
    double y = draw_header(cr, t, S->title, S->subtitle, w);
    if (S->group_names && S->n_groups > 0) {
        VizColor cols[8];
        int n = MIN(S->n_groups, 8);
        for (int i = 0; i < n; i++) cols[i] = series_color(t, i);
        y += draw_legend_row(cr, t, n, S->group_names, cols, NULL, fs * 1.1, y, w - 2.2 * fs);
    }
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < S->n; i++) {
        if (!isfinite(S->points[i].x) || !isfinite(S->points[i].y)) continue;
        xmin = MIN(xmin, S->points[i].x);
        xmax = MAX(xmax, S->points[i].x);
        ymin = MIN(ymin, S->points[i].y);
        ymax = MAX(ymax, S->points[i].y);
    }
    if (!isfinite(xmin)) xmin = -1, xmax = 1, ymin = -1, ymax = 1;
    double dx = (xmax - xmin) * 0.06 + 1e-9, dy = (ymax - ymin) * 0.06 + 1e-9;
    Frame f = { 0 };
    axis_linear(&f.xa, xmin - dx, xmax + dx, MAX(3, (int)(w / 110)), FALSE, FALSE);
    axis_linear(&f.ya, ymin - dy, ymax + dy, 6, FALSE, FALSE);
    frame_layout(cr, t, &f, y, w, h, S->x_label, S->y_label);
    draw_frame(cr, t, &f, S->x_label, S->y_label, TRUE);
    cairo_save(cr);
    clip_frame(cr, &f);
    /* ordinary points first, highlighted on top */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < S->n; i++) {
            const VizPoint *p = &S->points[i];
            if (!!p->highlight != pass || !isfinite(p->x) || !isfinite(p->y)) continue;
            VizColor c = series_color(t, p->group);
            double r = pass ? 5.0 : 3.0;
            cairo_arc(cr, fx(&f, p->x), fy(&f, p->y), r, 0, 2 * G_PI);
            set_color_a(cr, c, pass ? 1.0 : 0.55);
            cairo_fill_preserve(cr);
            set_color(cr, c);
            cairo_set_line_width(cr, 0.8);
            cairo_stroke(cr);
            if (pass) {
                /* highlighted: a ring in the text colour around the point */
                cairo_arc(cr, fx(&f, p->x), fy(&f, p->y), r + 3.0, 0, 2 * G_PI);
                set_color(cr, t->fg);
                cairo_set_line_width(cr, 1.8);
                cairo_stroke(cr);
            }
        }
    /* labels: highlighted always, then ordinary ones where they fit */
    GArray *boxes = g_array_new(FALSE, FALSE, sizeof(Box));
    /* labels keep off the highlighted points (and their rings) */
    for (int i = 0; i < S->n; i++) {
        const VizPoint *p = &S->points[i];
        if (!p->highlight || !isfinite(p->x) || !isfinite(p->y)) continue;
        double px = fx(&f, p->x), py = fy(&f, p->y);
        Box b = { px - 8, py - 8, px + 8, py + 8 };
        g_array_append_val(boxes, b);
    }
    int labelled = 0;
    for (int pass = 1; pass >= 0; pass--)
        for (int i = 0; i < S->n; i++) {
            const VizPoint *p = &S->points[i];
            if (!!p->highlight != pass || !p->label || !isfinite(p->x) || !isfinite(p->y)) continue;
            if (!pass && labelled >= S->max_labels) break;
            double lfs = pass ? fs * 0.95 : fs * 0.78, th = 0;
            double tw = viz_text_width(cr, t, p->label, lfs, pass, TRUE, &th);
            double px = fx(&f, p->x), py = fy(&f, p->y);
            /* candidate spots: the four corners, then farther out (with a leader line) */
            const double g = pass ? 9 : 6;
            const double ox[12] = { g, -g - tw, g, -g - tw, -tw / 2, -tw / 2, 2.5 * g, -2.5 * g - tw, 2.5 * g,
                                    -2.5 * g - tw, -tw / 2, -tw / 2 };
            const double oy[12] = { -th - 1, -th - 1, 1, 1, -th - g, g, -th - 2.5 * g, -th - 2.5 * g, 2.5 * g,
                                    2.5 * g, -th - 3.5 * g, 3.5 * g };
            int placed = -1, n_try = pass ? 12 : 4;
            for (int k = 0; k < n_try && placed < 0; k++) {
                Box b = { px + ox[k], py + oy[k], px + ox[k] + tw, py + oy[k] + th };
                if (b.x0 < f.x0 || b.x1 > f.x1 || b.y0 < f.y0 || b.y1 > f.y1) continue;
                gboolean ok = TRUE;
                for (guint q = 0; q < boxes->len && ok; q++) ok = !box_overlaps(&b, &g_array_index(boxes, Box, q));
                if (ok) {
                    placed = k;
                    g_array_append_val(boxes, b);
                }
            }
            if (placed < 0 && pass) placed = 0;
            if (placed < 0) continue;
            if (!pass) labelled++;
            VizColor c = pass ? t->fg : t->muted;
            if (pass && placed >= 6) {
                /* a leader line from the point to a label placed farther out */
                double lx = px + ox[placed] + (ox[placed] < 0 ? tw : 0), ly = py + oy[placed] + th / 2;
                if (placed >= 10) lx = px;
                cairo_save(cr);
                set_color_a(cr, t->fg, 0.6);
                cairo_set_line_width(cr, 0.8);
                cairo_move_to(cr, px, py);
                cairo_line_to(cr, lx, ly);
                cairo_stroke(cr);
                cairo_restore(cr);
            }
            if (pass) {
                /* halo so the label reads over points */
                cairo_save(cr);
                Box b = { px + ox[placed] - 2, py + oy[placed] - 1, px + ox[placed] + tw + 2, py + oy[placed] + th + 1 };
                set_color_a(cr, t->bg, 0.8);
                cairo_rectangle(cr, b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
                cairo_fill(cr);
                cairo_restore(cr);
            }
            viz_text(cr, t, p->label, lfs, pass, TRUE, px + ox[placed], py + oy[placed], 0, 0, 0, c, NULL);
        }
    g_array_unref(boxes);
    cairo_restore(cr);
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ lines */

void viz_chart_lines_draw(cairo_t *cr, const VizLines *L, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    paint_bg(cr, t, w, h);
    double fs = t->font_size;
    double y = draw_header(cr, t, L->title, L->subtitle, w);
    {
        const char *names[8];
        VizColor cols[8];
        SwatchKind kinds[8];
        int n = MIN(L->n_series, 8), named = 0;
        for (int i = 0; i < n; i++) {
            names[i] = L->series[i].name;
            cols[i] = series_color(t, L->series[i].color >= 0 ? L->series[i].color : i);
            kinds[i] = L->series[i].dashed ? SWATCH_DASH : SWATCH_LINE;
            named += names[i] != NULL;
        }
        if (named) y += draw_legend_row(cr, t, n, names, cols, kinds, fs * 1.1, y, w - 2.2 * fs);
    }
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < L->n_series; s++)
        for (int i = 0; i < L->series[s].n; i++) {
            double xv = L->series[s].x[i], yv = L->series[s].y[i];
            if (!isfinite(xv) || !isfinite(yv)) continue;
            if (L->log_x && xv <= 0) continue;
            if (L->log_y && yv <= 0) continue;
            xmin = MIN(xmin, xv);
            xmax = MAX(xmax, xv);
            ymin = MIN(ymin, yv);
            ymax = MAX(ymax, yv);
        }
    if (!isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
    Frame f = { 0 };
    f.log_x = L->log_x;
    f.log_y = L->log_y;
    if (L->x_ticks && L->n_x_ticks > 0) axis_categorical(&f.xa, L->n_x_ticks, L->x_ticks);
    else if (L->log_x) axis_log(&f.xa, xmin, xmax);
    else axis_linear(&f.xa, xmin, xmax, MAX(3, (int)(w / 110)), FALSE, TRUE);
    if (L->y_min < L->y_max) axis_linear(&f.ya, L->y_min, L->y_max, 6, L->percent_y, FALSE);
    else if (L->log_y) axis_log(&f.ya, ymin, ymax);
    else axis_linear(&f.ya, MIN(0, ymin), ymax * 1.02, 6, L->percent_y, TRUE);
    frame_layout(cr, t, &f, y, w, h, L->x_label, L->y_label);
    draw_frame(cr, t, &f, L->x_label, L->y_label, TRUE);
    cairo_save(cr);
    clip_frame(cr, &f);
    for (int s = 0; s < L->n_series; s++) {
        const VizLineSeries *S = &L->series[s];
        VizColor c = series_color(t, S->color >= 0 ? S->color : s);
        set_color(cr, c);
        cairo_set_line_width(cr, 2.2);
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
        if (S->dashed) {
            double d[2] = { 7, 4 };
            cairo_set_dash(cr, d, 2, 0);
        } else {
            cairo_set_dash(cr, NULL, 0, 0);
        }
        gboolean pen = FALSE;
        for (int i = 0; i < S->n; i++) {
            double xv = S->x[i], yv = S->y[i];
            if (!isfinite(xv) || !isfinite(yv) || (L->log_x && xv <= 0) || (L->log_y && yv <= 0)) {
                pen = FALSE;
                continue;
            }
            if (pen) cairo_line_to(cr, fx(&f, xv), fy(&f, yv));
            else cairo_move_to(cr, fx(&f, xv), fy(&f, yv));
            pen = TRUE;
        }
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        if (S->markers)
            for (int i = 0; i < S->n; i++) {
                double xv = S->x[i], yv = S->y[i];
                if (!isfinite(xv) || !isfinite(yv) || (L->log_x && xv <= 0) || (L->log_y && yv <= 0)) continue;
                cairo_arc(cr, fx(&f, xv), fy(&f, yv), 4.0, 0, 2 * G_PI);
                set_color(cr, c);
                cairo_fill_preserve(cr);
                set_color(cr, t->bg);
                cairo_set_line_width(cr, 1.2);
                cairo_stroke(cr);
            }
    }
    cairo_restore(cr);
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ table */

static void table_columns(cairo_t *cr, const VizTable *T, const VizTheme *t, double w, double fs, double *cw)
{
    double pad = fs * 0.7, total = 0;
    for (int c = 0; c < T->n_cols; c++) {
        double m = viz_text_width(cr, t, T->headers ? T->headers[c] : "", fs, TRUE, FALSE, NULL);
        for (int r = 0; r < T->n_rows; r++) {
            const char *s = T->cells[r * T->n_cols + c];
            if (s) m = MAX(m, viz_text_width(cr, t, s, fs, FALSE, (T->mono >> c) & 1, NULL));
        }
        cw[c] = m + 2 * pad;
        total += cw[c];
    }
    if (total > w) {
        /* shrink the wide columns first: cap every column at a common width */
        double lo = 0, hi = w;
        for (int it = 0; it < 40; it++) {
            double cap = (lo + hi) / 2, s = 0;
            for (int c = 0; c < T->n_cols; c++) s += MIN(cw[c], cap);
            if (s > w) hi = cap;
            else lo = cap;
        }
        for (int c = 0; c < T->n_cols; c++) cw[c] = MIN(cw[c], lo);
    }
}

double viz_chart_table_draw_ex(cairo_t *cr, const VizTable *T, const VizTheme *t, double w, double h,
                               int *n_drawn_rows)
{
    double fs = T->font_size > 0 ? T->font_size : t->font_size * 0.92, pad = fs * 0.7, y = 0, th = 0;
    if (T->title) {
        viz_text(cr, t, T->title, fs * 1.15, TRUE, FALSE, 0, 0, 0, 0, w, t->fg, &th);
        y += th + fs * 0.4;
    }
    double *cw = g_new(double, MAX(T->n_cols, 1));
    table_columns(cr, T, t, w, fs, cw);
    double rh = fs * 1.75;
    /* header */
    double x = 0;
    if (T->headers) {
        for (int c = 0; c < T->n_cols; c++) {
            gboolean right = (T->right_align >> c) & 1;
            viz_text(cr, t, T->headers[c], fs, TRUE, FALSE, right ? x + cw[c] - pad : x + pad, y + rh / 2, right ? 1 : 0,
                     0.5, cw[c] - 2 * pad, t->fg, NULL);
            x += cw[c];
        }
        cairo_save(cr);
        set_color(cr, t->axis);
        cairo_set_line_width(cr, 1.2);
        cairo_move_to(cr, 0, round(y + rh) + 0.5);
        cairo_line_to(cr, x, round(y + rh) + 0.5);
        cairo_stroke(cr);
        cairo_restore(cr);
        y += rh;
    }
    int r;
    for (r = 0; r < T->n_rows; r++) {
        if (y + rh > h + 0.5) break;
        double tw = 0;
        for (int c = 0; c < T->n_cols; c++) tw += cw[c];
        if (r % 2 == 1) {
            cairo_save(cr);
            set_color(cr, t->panel);
            cairo_rectangle(cr, 0, y, tw, rh);
            cairo_fill(cr);
            cairo_restore(cr);
        }
        x = 0;
        for (int c = 0; c < T->n_cols; c++) {
            const char *s = T->cells[r * T->n_cols + c];
            gboolean right = (T->right_align >> c) & 1;
            if (s)
                viz_text(cr, t, s, fs, FALSE, (T->mono >> c) & 1, right ? x + cw[c] - pad : x + pad, y + rh / 2,
                         right ? 1 : 0, 0.5, cw[c] - 2 * pad, t->fg, NULL);
            x += cw[c];
        }
        y += rh;
    }
    g_free(cw);
    if (n_drawn_rows) *n_drawn_rows = r;
    return y;
}

double viz_chart_table_height(cairo_t *cr, const VizTable *T, const VizTheme *t, double w)
{
    double fs = T->font_size > 0 ? T->font_size : t->font_size * 0.92, th = 0, y = 0;
    if (T->title) {
        viz_text_width(cr, t, T->title, fs * 1.15, TRUE, FALSE, &th);
        y += th + fs * 0.4;
    }
    return y + fs * 1.75 * (T->n_rows + (T->headers ? 1 : 0));
}

void viz_chart_table_draw(cairo_t *cr, const VizTable *T, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    paint_bg(cr, t, w, h);
    double m = t->font_size;
    cairo_translate(cr, m, m);
    viz_chart_table_draw_ex(cr, T, t, w - 2 * m, h - 2 * m, NULL);
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ grid */

void viz_chart_grid_draw(cairo_t *cr, const VizGrid *G, const VizTheme *t, double w, double h)
{
    cairo_save(cr);
    paint_bg(cr, t, w, h);
    double top = draw_header(cr, t, G->title, G->subtitle, w);
    int n = MAX(G->n, 1);
    int cols = G->cols > 0 ? G->cols : n <= 1 ? 1 : n <= 4 ? 2 : 3;
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    double cw = w / cols, ch = (h - top) / rows;
    for (int i = 0; i < G->n; i++) {
        double x = (i % cols) * cw, y = top + (i / cols) * ch;
        cairo_save(cr);
        cairo_rectangle(cr, x, y, cw, ch);
        cairo_clip(cr);
        cairo_translate(cr, x, y);
        G->panels[i].fn(cr, G->panels[i].data, t, cw, ch);
        cairo_restore(cr);
    }
    cairo_restore(cr);
}

/* ------------------------------------------------------------------ callbacks */

void viz_draw_histogram(cairo_t *cr, const void *d, const VizTheme *t, double w, double h) { viz_chart_histogram_draw(cr, d, t, w, h); }
void viz_draw_bars(cairo_t *cr, const void *d, const VizTheme *t, double w, double h) { viz_chart_bars_draw(cr, d, t, w, h); }
void viz_draw_heatmap(cairo_t *cr, const void *d, const VizTheme *t, double w, double h) { viz_chart_heatmap_draw(cr, d, t, w, h); }
void viz_draw_scatter(cairo_t *cr, const void *d, const VizTheme *t, double w, double h) { viz_chart_scatter_draw(cr, d, t, w, h); }
void viz_draw_lines(cairo_t *cr, const void *d, const VizTheme *t, double w, double h) { viz_chart_lines_draw(cr, d, t, w, h); }
void viz_draw_table(cairo_t *cr, const void *d, const VizTheme *t, double w, double h) { viz_chart_table_draw(cr, d, t, w, h); }
void viz_draw_grid(cairo_t *cr, const void *d, const VizTheme *t, double w, double h) { viz_chart_grid_draw(cr, d, t, w, h); }
