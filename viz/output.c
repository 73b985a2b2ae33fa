/* Chart files (see output.h): one drawing, three surfaces. Files are written to a
 * temporary name and renamed so a failed render never leaves half a file. */
#include "output.h"

#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

gboolean viz_format_from_path(const char *path, VizFormat *fmt, GError **error)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (dot && !g_ascii_strcasecmp(dot, ".png")) *fmt = VIZ_FMT_PNG;
    else if (dot && !g_ascii_strcasecmp(dot, ".svg")) *fmt = VIZ_FMT_SVG;
    else if (dot && !g_ascii_strcasecmp(dot, ".pdf")) *fmt = VIZ_FMT_PDF;
    else {
        g_set_error(error, VIZ_OUTPUT_ERROR, 1, "%s: unknown chart format (expected .png, .svg or .pdf)",
                    path ? path : "(null)");
        return FALSE;
    }
    return TRUE;
}

static gboolean check_surface(cairo_surface_t *s, const char *path, GError **error)
{
    cairo_status_t st = cairo_surface_status(s);
    if (st == CAIRO_STATUS_SUCCESS) return TRUE;
    g_set_error(error, VIZ_OUTPUT_ERROR, 2, "%s: %s", path, cairo_status_to_string(st));
    return FALSE;
}

static gboolean finish_rename(const char *tmp, const char *path, GError **error)
{
    if (g_rename(tmp, path) != 0) {
        int e = errno;
        g_unlink(tmp);
        g_set_error(error, VIZ_OUTPUT_ERROR, 3, "%s: %s", path, g_strerror(e));
        return FALSE;
    }
    return TRUE;
}

gboolean viz_render_file(const char *path, double w, double h, double png_scale, VizDrawFn fn, const void *data,
                         const VizTheme *t, GError **error)
{
    VizFormat fmt;
    if (!viz_format_from_path(path, &fmt, error)) return FALSE;
    if (!(w >= 16 && h >= 16 && w <= 20000 && h <= 20000)) {
        g_set_error(error, VIZ_OUTPUT_ERROR, 4, "chart size %gx%g out of range 16..20000", w, h);
        return FALSE;
    }
    char *tmp = g_strdup_printf("%s.tmp%d", path, (int)getpid());
    cairo_surface_t *s = NULL;
    if (png_scale <= 0) png_scale = 1;
    if (fmt == VIZ_FMT_PNG) {
        s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)ceil(w * png_scale), (int)ceil(h * png_scale));
        cairo_surface_set_device_scale(s, png_scale, png_scale);
    } else if (fmt == VIZ_FMT_SVG) {
        s = cairo_svg_surface_create(tmp, w, h);
    } else {
        s = cairo_pdf_surface_create(tmp, w, h);
        cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_CREATOR, "stem-workbench " STEM_VERSION);
    }
    if (!check_surface(s, path, error)) {
        cairo_surface_destroy(s);
        g_unlink(tmp);
        g_free(tmp);
        return FALSE;
    }
    cairo_t *cr = cairo_create(s);
    fn(cr, data, t, w, h);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    gboolean ok = st == CAIRO_STATUS_SUCCESS;
    if (!ok) g_set_error(error, VIZ_OUTPUT_ERROR, 2, "%s: drawing failed: %s", path, cairo_status_to_string(st));
    if (ok && fmt == VIZ_FMT_PNG) {
        st = cairo_surface_write_to_png(s, tmp);
        if (st != CAIRO_STATUS_SUCCESS) {
            ok = FALSE;
            g_set_error(error, VIZ_OUTPUT_ERROR, 2, "%s: %s", path, cairo_status_to_string(st));
        }
    }
    cairo_surface_finish(s);
    if (ok) ok = check_surface(s, path, error);
    cairo_surface_destroy(s);
    if (ok) ok = finish_rename(tmp, path, error);
    else g_unlink(tmp);
    g_free(tmp);
    return ok;
}

struct VizDoc {
    cairo_surface_t *s;
    cairo_t *cr;
    char *path, *tmp;
    int pages;
};

VizDoc *viz_doc_new_pdf(const char *path, double w, double h, GError **error)
{
    VizDoc *d = g_new0(VizDoc, 1);
    d->path = g_strdup(path);
    d->tmp = g_strdup_printf("%s.tmp%d", path, (int)getpid());
    d->s = cairo_pdf_surface_create(d->tmp, w, h);
    if (!check_surface(d->s, path, error)) {
        cairo_surface_destroy(d->s);
        g_unlink(d->tmp);
        g_free(d->tmp);
        g_free(d->path);
        g_free(d);
        return NULL;
    }
    cairo_pdf_surface_set_metadata(d->s, CAIRO_PDF_METADATA_CREATOR, "stem-workbench " STEM_VERSION);
    d->cr = cairo_create(d->s);
    d->pages = 1;
    return d;
}

cairo_t *viz_doc_cairo(VizDoc *d) { return d->cr; }
int viz_doc_pages(const VizDoc *d) { return d->pages; }

void viz_doc_next_page(VizDoc *d)
{
    cairo_show_page(d->cr);
    cairo_identity_matrix(d->cr);
    cairo_reset_clip(d->cr);
    d->pages++;
}

gboolean viz_doc_close(VizDoc *d, GError **error)
{
    cairo_show_page(d->cr);
    cairo_status_t st = cairo_status(d->cr);
    cairo_destroy(d->cr);
    cairo_surface_finish(d->s);
    gboolean ok = st == CAIRO_STATUS_SUCCESS && check_surface(d->s, d->path, error);
    if (st != CAIRO_STATUS_SUCCESS)
        g_set_error(error, VIZ_OUTPUT_ERROR, 2, "%s: drawing failed: %s", d->path, cairo_status_to_string(st));
    cairo_surface_destroy(d->s);
    if (ok) ok = finish_rename(d->tmp, d->path, error);
    else g_unlink(d->tmp);
    g_free(d->tmp);
    g_free(d->path);
    g_free(d);
    return ok;
}
