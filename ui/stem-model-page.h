/* StemModelPage: open a model (file dialog, drag and drop, recent files) and
 * its card: config, parameters total / active, FLOPs per token against the
 * dense equivalent, sha256, edits applied. With no model it offers to train
 * the default one. */
#ifndef STEM_UI_MODEL_PAGE_H
#define STEM_UI_MODEL_PAGE_H

#include <gtk/gtk.h>
#include "stem-session.h"

G_BEGIN_DECLS

#define STEM_TYPE_MODEL_PAGE (stem_model_page_get_type())
G_DECLARE_FINAL_TYPE(StemModelPage, stem_model_page, STEM, MODEL_PAGE, GtkWidget)

/* The card's value for a key ("sha256", "parameters", "edits", ...), for tests. */
const char *stem_model_page_get_value(StemModelPage *self, const char *key);

G_END_DECLS

#endif
