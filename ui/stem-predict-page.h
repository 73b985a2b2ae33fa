/* StemPredictPage: the session prompt, the next-token top-k as bars that
 * update while you type, the logit lens (what each layer would predict) as a
 * heatmap, and greedy generation.
 *
 * Action: predict.generate. */
#ifndef STEM_UI_PREDICT_PAGE_H
#define STEM_UI_PREDICT_PAGE_H

#include <gtk/gtk.h>
#include "stem-session.h"

G_BEGIN_DECLS

#define STEM_TYPE_PREDICT_PAGE (stem_predict_page_get_type())
G_DECLARE_FINAL_TYPE(StemPredictPage, stem_predict_page, STEM, PREDICT_PAGE, GtkWidget)

#define STEM_PREDICT_K 10

GtkEditable *stem_predict_page_get_entry(StemPredictPage *self);
/* The top-k shown now: the prompt they belong to (NULL when none), the labels
 * (stem_token_display) and probabilities, most likely first. */
const char *stem_predict_page_get_topk_prompt(StemPredictPage *self);
int stem_predict_page_get_topk(StemPredictPage *self, const char *const **labels, const int **ids, const float **probs);
/* The last generated continuation, or NULL. */
const char *stem_predict_page_get_generation(StemPredictPage *self);
/* Number of top-k results shown since creation (tests wait on it). */
guint stem_predict_page_get_n_updates(StemPredictPage *self);

G_END_DECLS

#endif
