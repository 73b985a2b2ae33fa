/* StemHistoryPage: the patch sets of the model's edit database with their
 * state and times; revert or re-apply any of them; export one as a patch file
 * and import patch files; bake the applied edits into a new model file; export
 * a report (PDF, Markdown or JSON, by extension) of the model and its edits.
 *
 * Actions: history.import, history.bake, history.export-report,
 * history.revert(x), history.reapply(x), history.export(x) (x = patch set id). */
#ifndef STEM_UI_HISTORY_PAGE_H
#define STEM_UI_HISTORY_PAGE_H

#include <gtk/gtk.h>
#include "stem-session.h"

G_BEGIN_DECLS

#define STEM_TYPE_HISTORY_PAGE (stem_history_page_get_type())
G_DECLARE_FINAL_TYPE(StemHistoryPage, stem_history_page, STEM, HISTORY_PAGE, GtkWidget)

/* Ctrl+Z: revert the most recently applied patch set. */
void stem_history_page_revert_last(StemHistoryPage *self);
/* Ctrl+Shift+Z: re-apply the most recently reverted patch set. */
void stem_history_page_reapply_last(StemHistoryPage *self);
/* Ctrl+E: a file dialog, then stem_history_page_export_report. */
void stem_history_page_export_report_dialog(StemHistoryPage *self);
/* Write the report (format from the extension: .pdf, .md, .json) in a worker
 * task; the callback may be NULL. */
void stem_history_page_export_report(StemHistoryPage *self, const char *path, GAsyncReadyCallback callback,
                                     gpointer user_data);
gboolean stem_history_page_export_report_finish(StemHistoryPage *self, GAsyncResult *result, GError **error);
/* Export patch set id to a patch file / import a patch file / bake (no dialogs). */
void stem_history_page_export_patch(StemHistoryPage *self, gint64 id, const char *path);
void stem_history_page_import_patch(StemHistoryPage *self, const char *path);
void stem_history_page_bake(StemHistoryPage *self, const char *path);
/* Rows shown, and the button of a row ("revert" | "reapply" | "export") for tests. */
int stem_history_page_get_n_rows(StemHistoryPage *self);
GtkWidget *stem_history_page_get_row_button(StemHistoryPage *self, gint64 id, const char *which);
/* Times the list was reloaded (tests wait on it). */
guint stem_history_page_get_n_reloads(StemHistoryPage *self);

G_END_DECLS

#endif
