/* StemChart: a widget that draws one viz/ chart renderer.
 *
 * The snapshot hands a cairo context (gtk_snapshot_append_cairo) to the same
 * renderer the CLI uses for PNG/SVG/PDF, with the light or dark viz theme
 * following the window's colour scheme. The chart owns its data: a StemBag
 * holds the chart struct and every string and array it points to, freed
 * together when the chart gets new data. Without data it shows a placeholder. */
#ifndef STEM_UI_CHART_H
#define STEM_UI_CHART_H

#include <gtk/gtk.h>
#include "viz/charts.h"

G_BEGIN_DECLS

/* An arena of g_malloc'ed blocks freed together. */
typedef struct _StemBag StemBag;
StemBag *stem_bag_new(void);
void stem_bag_free(StemBag *bag);
gpointer stem_bag_alloc0(StemBag *bag, gsize size);
char *stem_bag_strdup(StemBag *bag, const char *s);
char *stem_bag_printf(StemBag *bag, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Takes ownership of a g_malloc'ed block. */
gpointer stem_bag_take(StemBag *bag, gpointer mem);
/* Calls destroy(data) when the bag is freed (before its blocks, latest first). */
void stem_bag_add_destroy(StemBag *bag, GDestroyNotify destroy, gpointer data);
#define stem_bag_new0(bag, Type, n) ((Type *)stem_bag_alloc0((bag), sizeof(Type) * (gsize)(n)))

#define STEM_TYPE_CHART (stem_chart_get_type())
G_DECLARE_FINAL_TYPE(StemChart, stem_chart, STEM, CHART, GtkWidget)

GtkWidget *stem_chart_new(void);
/* Draw fn(data); bag (taken, may be NULL) owns data and what it points to. */
void stem_chart_set(StemChart *self, VizDrawFn fn, const void *data, StemBag *bag);
/* No chart: show this text instead (also clears the data). */
void stem_chart_set_placeholder(StemChart *self, const char *text);
const char *stem_chart_get_placeholder(StemChart *self);
gboolean stem_chart_has_data(StemChart *self);
/* The data last set (for tests and hit-testing by the page that set it). */
const void *stem_chart_get_data(StemChart *self);
/* The theme the chart draws with now. */
const VizTheme *stem_chart_get_theme(StemChart *self);
/* Render the chart into a file (.png, .svg, .pdf) at w x h. */
gboolean stem_chart_save(StemChart *self, const char *path, double w, double h, GError **error);

/* TRUE when the widget's display uses a dark colour scheme. */
gboolean stem_widget_is_dark(GtkWidget *widget);

G_END_DECLS

#endif
