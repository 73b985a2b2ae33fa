/* StemGeometryPage: the geometry of a layer's up-projection vectors. A layer
 * selector; the |cosine| histogram of the layer's vectors (STEM table rows, or
 * W3·x outputs for a dense layer), optionally overlaid with the same layer of a
 * second model (e.g. the dense baseline); a PCA scatter of the most frequent
 * tokens' rows with search and highlight; the nearest neighbours of the
 * selected token, which follow the selection.
 *
 * Actions: geometry.compare (choose the overlay model), geometry.clear-compare. */
#ifndef STEM_UI_GEOMETRY_PAGE_H
#define STEM_UI_GEOMETRY_PAGE_H

#include <gtk/gtk.h>
#include "stem-session.h"

G_BEGIN_DECLS

#define STEM_TYPE_GEOMETRY_PAGE (stem_geometry_page_get_type())
G_DECLARE_FINAL_TYPE(StemGeometryPage, stem_geometry_page, STEM, GEOMETRY_PAGE, GtkWidget)

/* Select a model layer (as the layer dropdown does). */
void stem_geometry_page_set_layer(StemGeometryPage *self, int layer);
int stem_geometry_page_get_layer(StemGeometryPage *self);
GtkEditable *stem_geometry_page_get_search(StemGeometryPage *self);
/* Overlay the same layer of another model file (NULL: none). */
void stem_geometry_page_set_compare(StemGeometryPage *self, const char *path);
/* The selected token id (-1 when none) and the neighbour list shown (labels). */
int stem_geometry_page_get_selected(StemGeometryPage *self);
int stem_geometry_page_get_n_neighbours(StemGeometryPage *self);
/* Select a neighbour by its row index (as clicking it does). */
void stem_geometry_page_activate_neighbour(StemGeometryPage *self, int index);
/* Series in the histogram (1, or 2 with an overlay); points in the scatter. */
int stem_geometry_page_get_n_series(StemGeometryPage *self);
int stem_geometry_page_get_n_points(StemGeometryPage *self);

G_END_DECLS

#endif
