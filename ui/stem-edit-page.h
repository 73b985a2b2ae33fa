/* StemEditPage: plan a knowledge edit and watch it before applying it.
 *
 * Source and target entities (their token variants as chips, shared tokens and
 * planner warnings flagged), kind (swap / blend / ablate), length-mismatch
 * strategy, the STEM layers to edit, α; a live three-panel preview (original
 * prompt / target written in / edited model on the original prompt) that
 * follows every keystroke and slider move (requests coalesce: only the latest
 * is computed); the relation sweep (does the edit move the source's other facts
 * too?); Apply writes a patch set into the edit database.
 *
 * Actions: edit.apply, edit.sweep. */
#ifndef STEM_UI_EDIT_PAGE_H
#define STEM_UI_EDIT_PAGE_H

#include <gtk/gtk.h>
#include "stem-session.h"

G_BEGIN_DECLS

#define STEM_TYPE_EDIT_PAGE (stem_edit_page_get_type())
G_DECLARE_FINAL_TYPE(StemEditPage, stem_edit_page, STEM, EDIT_PAGE, GtkWidget)

GtkEditable *stem_edit_page_get_source(StemEditPage *self);
GtkEditable *stem_edit_page_get_target(StemEditPage *self);
GtkRange *stem_edit_page_get_alpha(StemEditPage *self);
/* "swap" | "blend" | "ablate" */
void stem_edit_page_set_kind(StemEditPage *self, const char *kind);
/* Previews computed and shown so far, and the last one's time (ms, worker side). */
guint stem_edit_page_get_n_previews(StemEditPage *self);
double stem_edit_page_get_preview_ms(StemEditPage *self);
/* α the shown preview was computed with (NAN when none), its plan's row count. */
double stem_edit_page_get_preview_alpha(StemEditPage *self);
int stem_edit_page_get_plan_rows(StemEditPage *self);
/* Chips shown for the source entity, warnings shown. */
int stem_edit_page_get_n_chips(StemEditPage *self);
int stem_edit_page_get_n_warnings(StemEditPage *self);
/* Relation sweep rows shown (0 before a sweep). */
int stem_edit_page_get_n_sweep_rows(StemEditPage *self);
/* Id of the patch set the last Apply created (0 when none). */
gint64 stem_edit_page_get_last_applied(StemEditPage *self);

G_END_DECLS

#endif
