/* Small helpers shared by the pages. */
#ifndef STEM_UI_UTIL_H
#define STEM_UI_UTIL_H

#include <gtk/gtk.h>
#include "engine/tokenizer.h"

G_BEGIN_DECLS

/* A token as the UI shows it (viz_token_label: spaces as "␣", line breaks as
 * "↵", invalid bytes as \xNN, specials by name). g_free. */
char *stem_token_display(const StemTokenizer *tok, int id);
/* The tokens of text joined with thin separators ("The␣capital│␣of"), g_free. */
char *stem_tokens_display(const StemTokenizer *tok, const char *text, int *n_tokens);

/* Remove every child of a GtkBox / GtkFlowBox / GtkListBox. */
void stem_box_clear(GtkWidget *container);
/* A chip: a small rounded label (css class "chip", plus extra_class when not NULL). */
GtkWidget *stem_chip_new(const char *text, const char *extra_class, const char *tooltip);

G_END_DECLS

#endif
