/* StemApplication: the GtkApplication of the workbench.
 *
 * `stem-workbench [MODEL]` opens MODEL (else the last model, else the default
 * model when it exists, else the Model page offers to train it). Options:
 * --db FILE (the edit database for MODEL), --color-scheme system|light|dark,
 * --self-test DIR (drive the window through a scripted session, save a PNG of
 * every page into DIR and exit with the result; see stem-selftest.c). */
#ifndef STEM_UI_APPLICATION_H
#define STEM_UI_APPLICATION_H

#include <gtk/gtk.h>

G_BEGIN_DECLS

#define STEM_APPLICATION_ID "org.stemworkbench.Workbench"

#define STEM_TYPE_APPLICATION (stem_application_get_type())
G_DECLARE_FINAL_TYPE(StemApplication, stem_application, STEM, APPLICATION, GtkApplication)

StemApplication *stem_application_new(void);
/* The entry point of app/stem-workbench.c. */
int stem_application_run(int argc, char **argv);

/* "system" | "light" | "dark" */
const char *stem_application_get_color_scheme(StemApplication *self);
void stem_application_set_color_scheme(StemApplication *self, const char *scheme);
gboolean stem_application_get_dark(StemApplication *self);

G_END_DECLS

#endif
