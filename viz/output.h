/* Chart files: the format follows the extension (.png, .svg, .pdf). PNG is
 * rendered at `scale` device pixels per user unit (2 = crisp on HiDPI and in
 * print); SVG and PDF are vector, one user unit = one point. */
#ifndef STEM_VIZ_OUTPUT_H
#define STEM_VIZ_OUTPUT_H

#include <cairo.h>
#include <glib.h>
#include "charts.h"

typedef enum { VIZ_FMT_PNG, VIZ_FMT_SVG, VIZ_FMT_PDF } VizFormat;

#define VIZ_OUTPUT_ERROR (g_quark_from_static_string("stem-viz-output-error"))

/* From the file name's extension (case-insensitive); FALSE + error otherwise. */
gboolean viz_format_from_path(const char *path, VizFormat *fmt, GError **error);

/* Draw fn(data) on a w x h surface of the path's format and write it. */
gboolean viz_render_file(const char *path, double w, double h, double png_scale, VizDrawFn fn, const void *data,
                         const VizTheme *t, GError **error);

/* Multi-page documents (reports): PDF pages of w x h points. */
typedef struct VizDoc VizDoc;
VizDoc *viz_doc_new_pdf(const char *path, double w, double h, GError **error);
/* The cairo context of the current page (valid until viz_doc_close). */
cairo_t *viz_doc_cairo(VizDoc *d);
/* Finish the current page and start the next one. */
void viz_doc_next_page(VizDoc *d);
int viz_doc_pages(const VizDoc *d);
/* Finish the last page and write the file; frees d. */
gboolean viz_doc_close(VizDoc *d, GError **error);

#endif
