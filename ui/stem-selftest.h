/* The GUI self-test: drives a StemWindow through a scripted session the way a
 * person would (typing, moving the α slider, clicking row buttons, shortcuts),
 * checks what the widgets show against the engine, saves a PNG of every page
 * into a folder, and quits with the result (0 = pass). Started by
 * `stem-workbench --self-test DIR MODEL` (tests/gui/meson.build). */
#ifndef STEM_UI_SELFTEST_H
#define STEM_UI_SELFTEST_H

#include "stem-window.h"

G_BEGIN_DECLS

/* Runs from the main loop once the window is shown; *status receives the
 * exit status before the application quits. with_model: a model was given on
 * the command line (the full script); else only the first-start page. */
void stem_selftest_start(StemWindow *window, const char *dir, gboolean with_model, int *status);

/* Save a PNG of widget (as rendered now) to path. */
gboolean stem_widget_save_png(GtkWidget *widget, const char *path, GError **error);

G_END_DECLS

#endif
