/* StemTrainPage: train a model like `stem train`: preset, STEM or dense (or
 * both, for comparison), STEM layer set, steps; start and cancel; live loss
 * curves (the latest STEM and dense runs overlaid), tokens/s and ETA. The
 * result opens in the workbench.
 *
 * Actions: train.start, train.cancel. */
#ifndef STEM_UI_TRAIN_PAGE_H
#define STEM_UI_TRAIN_PAGE_H

#include <gtk/gtk.h>
#include "stem-session.h"
#include "stem-trainer.h"

G_BEGIN_DECLS

#define STEM_TYPE_TRAIN_PAGE (stem_train_page_get_type())
G_DECLARE_FINAL_TYPE(StemTrainPage, stem_train_page, STEM, TRAIN_PAGE, GtkWidget)

/* Set the form as a person would (preset name, kind, layer spec or NULL,
 * steps (0 = the preset's), output file or NULL for a fresh name). */
void stem_train_page_configure(StemTrainPage *self, const char *preset, StemTrainKind kind, const char *stem_layers,
                               int steps, const char *out);
/* The first-start offer: the default preset, STEM, into the default model path. */
void stem_train_page_train_default(StemTrainPage *self);
gboolean stem_train_page_get_running(StemTrainPage *self);
/* Points on the loss curves of the STEM and dense runs (for tests). */
int stem_train_page_get_n_points(StemTrainPage *self, gboolean dense);
/* The last run's outcome: NULL while none finished, else "done", "cancelled" or the error. */
const char *stem_train_page_get_outcome(StemTrainPage *self);

G_END_DECLS

#endif
