/* StemWindow: the main window. A header bar, an error banner, a sidebar of
 * pages (Model, Train, Predict, Geometry, Edit, History) that all observe the
 * window's StemSession, and toasts.
 *
 * Actions (installed on the class): win.open (Ctrl+O), win.revert-last
 * (Ctrl+Z), win.reapply-last (Ctrl+Shift+Z), win.export-report (Ctrl+E),
 * win.show-page(s), win.train-default, win.dismiss-banner. Dropping a model
 * file anywhere on the window opens it. */
#ifndef STEM_UI_WINDOW_H
#define STEM_UI_WINDOW_H

#include <gtk/gtk.h>
#include "stem-application.h"
#include "stem-session.h"

G_BEGIN_DECLS

#define STEM_TYPE_WINDOW (stem_window_get_type())
G_DECLARE_FINAL_TYPE(StemWindow, stem_window, STEM, WINDOW, GtkApplicationWindow)

StemWindow *stem_window_new(StemApplication *app);
StemSession *stem_window_get_session(StemWindow *self);
/* Open a model file (db_path: its edit database, NULL for the default). */
void stem_window_open_model(StemWindow *self, const char *path, const char *db_path);
/* "model" | "train" | "predict" | "geometry" | "edit" | "history" */
void stem_window_show_page(StemWindow *self, const char *name);
GtkWidget *stem_window_get_page(StemWindow *self, const char *name);
const char *stem_window_get_visible_page(StemWindow *self);
/* The banner (errors) and toasts (confirmations). */
void stem_window_show_error(StemWindow *self, const char *message);
void stem_window_toast(StemWindow *self, const char *message);
void stem_window_hide_toast(StemWindow *self);
/* Banner text while it is shown, else NULL (for tests). */
const char *stem_window_get_error(StemWindow *self);

G_END_DECLS

#endif
