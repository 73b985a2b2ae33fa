/* The GUI self-test (see stem-selftest.h).
 *
 * A list of steps run from a 10 ms timer on the main loop, so the application
 * runs exactly as it does for a person: every job goes through the session's
 * worker, every result comes back through the main loop. A step returns WAIT
 * (call me again), DONE or FAIL. What the widgets show is checked against the
 * engine run independently on a second copy of the model in this process.
 *
 * Expected values are exact: the second copy runs the same code with the same
 * thread pool, so probabilities must match to the bit. */
#include "stem-selftest.h"
#include "stem-edit-page.h"
#include "stem-geometry-page.h"
#include "stem-history-page.h"
#include "stem-model-page.h"
#include "stem-predict-page.h"
#include "stem-train-page.h"
#include "stem-util.h"
#include "stem-chart.h"
#include "editdb/editdb.h"
#include "engine/checkpoint.h"
#include "engine/sampler.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

#define PROMPT "The capital of Spain is"
#define STEP_TIMEOUT_S 120

typedef enum { WAIT, DONE, FAIL } StepResult;

typedef struct Test Test;
typedef StepResult (*StepFn)(Test *t);

typedef struct {
    const char *name;
    StepFn fn;
} Step;

struct Test {
    StemWindow *win;
    StemSession *session;
    StemPredictPage *predict;
    StemGeometryPage *geometry;
    StemEditPage *edit;
    StemHistoryPage *history;
    StemTrainPage *train;
    StemModelPage *model_page;
    char *dir;
    int *status;

    const Step *steps;
    int n_steps, step, sub;
    gint64 step_start, settle_until, settle_frame;
    char *error;

    /* expectations */
    char *model_path, *db_path;
    int k;
    int orig_ids[STEM_PREDICT_K];
    float orig_probs[STEM_PREDICT_K];
    char *orig_labels[STEM_PREDICT_K];
    int edit_ids[STEM_PREDICT_K];
    float edit_probs[STEM_PREDICT_K];
    guint marker;                /* a counter value a step waits to see change */
    gboolean report_done;
    GError *report_error;
    char *trained;
};

static StepResult fail(Test *t, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static StepResult fail(Test *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_free(t->error);
    t->error = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return FAIL;
}

static void say(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_printerr("self-test: %s\n", s);
    g_free(s);
}

/* ------------------------------------------------------------------ screenshots */

gboolean stem_widget_save_png(GtkWidget *widget, const char *path, GError **error)
{
    int w = gtk_widget_get_width(widget), h = gtk_widget_get_height(widget);
    GtkNative *native = gtk_widget_get_native(widget);
    GskRenderer *renderer = native ? gtk_native_get_renderer(native) : NULL;
    if (w <= 0 || h <= 0 || !renderer) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED, "the widget is not shown");
        return FALSE;
    }
    GdkPaintable *paintable = gtk_widget_paintable_new(widget);
    GtkSnapshot *snapshot = gtk_snapshot_new();
    gdk_paintable_snapshot(paintable, snapshot, w, h);
    GskRenderNode *node = gtk_snapshot_free_to_node(snapshot);
    g_object_unref(paintable);
    if (!node) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_PENDING, "nothing was drawn yet");
        return FALSE;
    }
    GdkTexture *tex = gsk_renderer_render_texture(renderer, node, &GRAPHENE_RECT_INIT(0, 0, w, h));
    gsk_render_node_unref(node);
    gboolean ok = gdk_texture_save_to_png(tex, path);
    g_object_unref(tex);
    if (!ok) g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot write %s", path);
    return ok;
}

static StepResult shoot(Test *t, const char *name)
{
    GdkFrameClock *fc = gtk_widget_get_frame_clock(GTK_WIDGET(t->win));
    say("shoot %s: visible page %s, frame %" G_GINT64_FORMAT, name, stem_window_get_visible_page(t->win),
        fc ? gdk_frame_clock_get_frame_counter(fc) : -1);
    char *path = g_build_filename(t->dir, name, NULL);
    GError *e = NULL;
    gboolean ok = stem_widget_save_png(GTK_WIDGET(t->win), path, &e);
    if (ok) say("saved %s", path);
    g_free(path);
    if (!ok && g_error_matches(e, G_IO_ERROR, G_IO_ERROR_PENDING) && !t->error) {
        /* the window has not been drawn yet: try again on the next tick */
        g_error_free(e);
        return WAIT;
    }
    if (!ok) {
        StepResult r = fail(t, "screenshot %s: %s", name, e->message);
        g_error_free(e);
        return r;
    }
    return DONE;
}

/* ------------------------------------------------------------------ waiting */

/* Nothing queued on the worker, no training: results are on screen. Then
 * a short settle for the page transition and the frame that draws them. */
static gboolean idle(Test *t)
{
    if (stem_session_get_busy(t->session) || stem_train_page_get_running(t->train)) {
        t->settle_until = 0;
        return FALSE;
    }
    gint64 now = g_get_monotonic_time();
    GdkFrameClock *fc = gtk_widget_get_frame_clock(GTK_WIDGET(t->win));
    gint64 frame = fc ? gdk_frame_clock_get_frame_counter(fc) : 0;
    if (!t->settle_until) {
        /* results are shown: ask for a frame and wait until two were painted
         * (toasts would cover the pictures: they are checked by the steps) */
        stem_window_hide_toast(t->win);
        t->settle_until = now + 300 * 1000;
        t->settle_frame = frame;
        gtk_widget_queue_draw(GTK_WIDGET(t->win));
        return FALSE;
    }
    if (frame < t->settle_frame + 2) gtk_widget_queue_draw(GTK_WIDGET(t->win));
    return now >= t->settle_until && frame >= t->settle_frame + 2;
}

static void show(Test *t, const char *page)
{
    stem_window_show_page(t->win, page);
}

static gboolean no_banner(Test *t)
{
    const char *e = stem_window_get_error(t->win);
    if (e) {
        fail(t, "the window shows an error: %s", e);
        return FALSE;
    }
    return TRUE;
}

/* ------------------------------------------------------------------ expectations */

static StemModel *load_copy(Test *t, gboolean with_edits, GError **error)
{
    StemModel *m = stem_model_load(t->model_path, error);
    if (m && with_edits && !stem_editdb_load_overlay(t->db_path, m, error)) g_clear_pointer(&m, stem_model_free);
    return m;
}

static int expected_topk(Test *t, gboolean with_edits, int *ids, float *probs, char **labels)
{
    GError *e = NULL;
    StemModel *m = load_copy(t, with_edits, &e);
    if (!m) {
        fail(t, "cannot load the model copy: %s", e->message);
        g_error_free(e);
        return -1;
    }
    size_t n = 0;
    int32_t *pid = stem_tokenizer_encode(m->tok, PROMPT, strlen(PROMPT), &n);
    StemTopk top[STEM_PREDICT_K];
    int k = stem_topk(m, pid, (int)n, STEM_PREDICT_K, top);
    for (int i = 0; i < k; i++) {
        ids[i] = top[i].id;
        probs[i] = top[i].prob;
        if (labels) labels[i] = stem_token_display(m->tok, top[i].id);
    }
    g_free(pid);
    stem_model_free(m);
    return k;
}

/* The Predict page shows exactly ids/probs for PROMPT. */
static gboolean predict_matches(Test *t, const int *ids, const float *probs, int k, const char *what)
{
    const char *const *labels;
    const int *sid;
    const float *sp;
    int n = stem_predict_page_get_topk(t->predict, &labels, &sid, &sp);
    if (g_strcmp0(stem_predict_page_get_topk_prompt(t->predict), PROMPT)) {
        fail(t, "%s: the top-k is for '%s', not '%s'", what, stem_predict_page_get_topk_prompt(t->predict), PROMPT);
        return FALSE;
    }
    if (n != k) {
        fail(t, "%s: %d top-k entries shown, %d expected", what, n, k);
        return FALSE;
    }
    for (int i = 0; i < k; i++) {
        if (sid[i] != ids[i] || sp[i] != probs[i]) {
            fail(t, "%s: entry %d shows %s (id %d, p %.9g), expected id %d p %.9g", what, i, labels[i], sid[i],
                 (double)sp[i], ids[i], (double)probs[i]);
            return FALSE;
        }
    }
    return TRUE;
}

/* ------------------------------------------------------------------ steps */

static StepResult step_model(Test *t)
{
    if (!stem_session_has_model(t->session) || !idle(t)) {
        if (stem_window_get_error(t->win)) return fail(t, "opening the model failed: %s", stem_window_get_error(t->win));
        return WAIT;
    }
    t->model_path = g_strdup(stem_session_get_model_path(t->session));
    t->db_path = g_strdup(stem_session_get_db_path(t->session));
    if (stem_session_get_db_error(t->session)) return fail(t, "%s", stem_session_get_db_error(t->session));
    const char *sha = stem_model_page_get_value(t->model_page, "sha256");
    if (!sha || strlen(sha) != 64) return fail(t, "the model card shows no sha256");
    const char *edits = stem_model_page_get_value(t->model_page, "edits");
    if (!edits || !strstr(edits, "none applied")) return fail(t, "a fresh database should have no edits: '%s'", edits);
    say("model %s, database %s", t->model_path, t->db_path);
    return shoot(t, "model.png");
}

static StepResult step_type_prompt(Test *t)
{
    GtkEditable *entry = stem_predict_page_get_entry(t->predict);
    if (t->sub == 0) {
        show(t, "predict");
        gtk_editable_set_text(entry, "");
        t->sub = 1;
        return WAIT;
    }
    /* one character per tick: predictions are requested while earlier ones run */
    int typed = t->sub - 1;
    if (typed < (int)strlen(PROMPT)) {
        int pos = -1;
        gtk_editable_set_position(entry, -1);
        pos = gtk_editable_get_position(entry);
        gtk_editable_insert_text(entry, PROMPT + typed, 1, &pos);
        t->sub++;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    if (strcmp(stem_session_get_prompt(t->session), PROMPT)) return fail(t, "the session prompt is '%s'", stem_session_get_prompt(t->session));
    t->k = expected_topk(t, FALSE, t->orig_ids, t->orig_probs, t->orig_labels);
    if (t->k <= 0) return FAIL;
    if (!predict_matches(t, t->orig_ids, t->orig_probs, t->k, "typed prompt")) return FAIL;
    say("top-k after typing matches the engine: %s %.3f, %s %.3f, ...", t->orig_labels[0], t->orig_probs[0],
        t->orig_labels[1], t->orig_probs[1]);
    say("%u predictions shown for %zu keystrokes (stale ones were dropped)", stem_predict_page_get_n_updates(t->predict),
        strlen(PROMPT));
    return DONE;
}

static StepResult step_generate(Test *t)
{
    if (t->sub == 0) {
        gtk_widget_activate_action(GTK_WIDGET(t->predict), "predict.generate", NULL);
        t->sub = 1;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    const char *g = stem_predict_page_get_generation(t->predict);
    if (!g || !*g) return fail(t, "no generation shown");
    say("generated: %s", g);
    if (!no_banner(t)) return FAIL;
    return shoot(t, "predict.png");
}

static StepResult step_geometry(Test *t)
{
    if (t->sub == 0) {
        show(t, "geometry");
        t->sub = 1;
        return WAIT;
    }
    if (t->sub == 1) {
        if (!idle(t)) return WAIT;
        if (stem_geometry_page_get_n_series(t->geometry) < 1) return fail(t, "no cosine histogram");
        if (stem_geometry_page_get_n_points(t->geometry) < 10) return fail(t, "no PCA scatter");
        gtk_editable_set_text(stem_geometry_page_get_search(t->geometry), "Spain");
        t->sub = 2;
        return WAIT;
    }
    if (t->sub == 2) {
        /* " Spain" is one token in a trained default model, not in the tiny one */
        if (!idle(t)) return WAIT;
        if (stem_geometry_page_get_selected(t->geometry) < 0)
            gtk_editable_set_text(stem_geometry_page_get_search(t->geometry), "the");
        t->sub = 3;
        return WAIT;
    }
    if (t->sub == 3) {
        if (!idle(t)) return WAIT;
        int sel = stem_geometry_page_get_selected(t->geometry);
        if (sel < 0) return fail(t, "searching selected nothing");
        if (stem_geometry_page_get_n_neighbours(t->geometry) < 1) return fail(t, "no neighbours listed");
        StepResult r = shoot(t, "geometry-search.png");
        if (r != DONE) return r;
        t->marker = (guint)sel;
        stem_geometry_page_activate_neighbour(t->geometry, 0);
        t->sub = 4;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    int sel = stem_geometry_page_get_selected(t->geometry);
    if (sel < 0 || sel == (int)t->marker) return fail(t, "the selection did not follow the clicked neighbour");
    say("geometry: %d points, selection followed the neighbour list to token %d", stem_geometry_page_get_n_points(t->geometry), sel);
    if (!no_banner(t)) return FAIL;
    return DONE;
}

static const double alphas[] = { 0.9, 0.75, 0.6, 0.45, 0.3, 0.45, 0.6, 0.7, 0.8 };

static StepResult step_edit(Test *t)
{
    GtkEditable *src = stem_edit_page_get_source(t->edit), *tgt = stem_edit_page_get_target(t->edit);
    const char *S = "Spain", *T = "France";
    if (t->sub == 0) {
        show(t, "edit");
        gtk_editable_set_text(src, "");
        gtk_editable_set_text(tgt, "");
        t->sub = 1;
        return WAIT;
    }
    int i = t->sub - 1;
    if (i < (int)(strlen(S) + strlen(T))) {
        GtkEditable *e = i < (int)strlen(S) ? src : tgt;
        const char *txt = i < (int)strlen(S) ? S + i : T + (i - strlen(S));
        int pos = (int)strlen(gtk_editable_get_text(e));
        gtk_editable_insert_text(e, txt, 1, &pos);
        t->sub++;
        return WAIT;
    }
    if (t->sub == 1 + (int)(strlen(S) + strlen(T))) {
        if (!idle(t)) return WAIT;
        if (stem_edit_page_get_plan_rows(t->edit) <= 0) return fail(t, "the Spain -> France plan has no rows");
        if (stem_edit_page_get_n_chips(t->edit) <= 0) return fail(t, "no token chips for the source");
        say("plan: %d rows, %d source chips, %d warnings, preview %.1f ms", stem_edit_page_get_plan_rows(t->edit),
            stem_edit_page_get_n_chips(t->edit), stem_edit_page_get_n_warnings(t->edit),
            stem_edit_page_get_preview_ms(t->edit));
        t->marker = stem_edit_page_get_n_previews(t->edit);
        t->sub++;
        return WAIT;
    }
    /* drag α: one value per tick, faster than previews may finish */
    int a = t->sub - 2 - (int)(strlen(S) + strlen(T));
    if (a < (int)G_N_ELEMENTS(alphas)) {
        gtk_range_set_value(stem_edit_page_get_alpha(t->edit), alphas[a]);
        t->sub++;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    double shown = stem_edit_page_get_preview_alpha(t->edit);
    if (fabs(shown - 0.8) > 1e-9) return fail(t, "the preview shows α %.3f after the slider stopped at 0.8", shown);
    double ms = stem_edit_page_get_preview_ms(t->edit);
    say("α slider: %u previews computed for %zu moves; the last (α 0.80) took %.1f ms",
        stem_edit_page_get_n_previews(t->edit) - t->marker, G_N_ELEMENTS(alphas), ms);
    if (ms > 250) return fail(t, "a preview took %.1f ms", ms);
    if (!no_banner(t)) return FAIL;
    return DONE;
}

static StepResult step_sweep(Test *t)
{
    if (t->sub == 0) {
        gtk_widget_activate_action(GTK_WIDGET(t->edit), "edit.sweep", NULL);
        t->sub = 1;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    if (stem_edit_page_get_n_sweep_rows(t->edit) < 1) return fail(t, "the relation sweep shows no relation");
    if (!no_banner(t)) return FAIL;
    say("relation sweep: %d relations", stem_edit_page_get_n_sweep_rows(t->edit));
    return shoot(t, "edit.png");
}

static gboolean db_state(Test *t, int n_expected, gint64 id, gboolean applied)
{
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(t->db_path, FALSE, &e);
    if (!db) {
        fail(t, "cannot open the database: %s", e->message);
        g_error_free(e);
        return FALSE;
    }
    GPtrArray *list = stem_editdb_list(db, &e);
    gboolean ok = FALSE;
    if (!list) {
        fail(t, "cannot list: %s", e->message);
        g_error_free(e);
    } else if ((int)list->len != n_expected) {
        fail(t, "%u patch sets in the database, %d expected", list->len, n_expected);
    } else {
        for (guint i = 0; i < list->len; i++) {
            StemPatchSet *p = list->pdata[i];
            if (p->id != id) continue;
            if (p->applied != applied) {
                fail(t, "patch set #%" G_GINT64_FORMAT " is %s, expected %s", id, p->applied ? "applied" : "reverted",
                     applied ? "applied" : "reverted");
                break;
            }
            ok = TRUE;
        }
        if (!ok && !t->error) fail(t, "patch set #%" G_GINT64_FORMAT " is not in the database", id);
    }
    if (list) g_ptr_array_unref(list);
    if (ok && !stem_editdb_check(db, &e)) {
        ok = FALSE;
        fail(t, "database check: %s", e->message);
        g_error_free(e);
    }
    stem_editdb_close(db);
    return ok;
}

static StepResult step_apply(Test *t)
{
    if (t->sub == 0) {
        gtk_widget_activate_action(GTK_WIDGET(t->edit), "edit.apply", NULL);
        t->sub = 1;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    gint64 id = stem_edit_page_get_last_applied(t->edit);
    if (id != 1) return fail(t, "Apply created patch set %" G_GINT64_FORMAT ", expected #1", id);
    if (!db_state(t, 1, 1, TRUE)) return FAIL;
    /* the recipe stored is what the form said */
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(t->db_path, FALSE, &e);
    StemPatchSet *p = db ? stem_editdb_get(db, 1, FALSE, &e) : NULL;
    gboolean ok = p && !g_strcmp0(p->recipe.source, "Spain") && !g_strcmp0(p->recipe.target, "France") &&
                  p->recipe.kind == STEM_EDIT_BLEND && fabs(p->recipe.alpha - 0.8) < 1e-9;
    if (p) stem_patch_set_free(p);
    if (db) stem_editdb_close(db);
    if (!ok) {
        StepResult r = fail(t, "the stored recipe is not Spain -> France, blend, α 0.8%s%s", e ? ": " : "",
                            e ? e->message : "");
        g_clear_error(&e);
        return r;
    }
    /* Predict follows the edit: what the engine says with the database's overlay */
    int k = expected_topk(t, TRUE, t->edit_ids, t->edit_probs, NULL);
    if (k != t->k) return FAIL;
    if (!predict_matches(t, t->edit_ids, t->edit_probs, k, "after Apply")) return FAIL;
    gboolean same = TRUE;
    for (int i = 0; i < k; i++) same &= t->edit_ids[i] == t->orig_ids[i] && t->edit_probs[i] == t->orig_probs[i];
    if (same) return fail(t, "the edit did not change the top-k of '%s'", PROMPT);
    say("applied patch set #1; the top-k follows the database (top-1 p %.4f -> %.4f)", t->orig_probs[0], t->edit_probs[0]);
    return DONE;
}

static StepResult step_history_revert(Test *t)
{
    if (t->sub == 0) {
        show(t, "history");
        t->sub = 1;
        return WAIT;
    }
    if (t->sub == 1) {
        if (!idle(t)) return WAIT;
        if (stem_history_page_get_n_rows(t->history) != 1) return fail(t, "History lists %d patch sets", stem_history_page_get_n_rows(t->history));
        GtkWidget *b = stem_history_page_get_row_button(t->history, 1, "revert");
        if (!b) return fail(t, "no Revert button on patch set #1");
        gtk_widget_activate(b);   /* a click */
        t->sub = 2;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    if (!db_state(t, 1, 1, FALSE)) return FAIL;
    if (!predict_matches(t, t->orig_ids, t->orig_probs, t->k, "after Revert")) return FAIL;
    say("reverted from History: the top-k is back to the exact original values");
    return DONE;
}

static gboolean has_accel(Test *t, const char *action, const char *accel)
{
    char **accels = gtk_application_get_accels_for_action(gtk_window_get_application(GTK_WINDOW(t->win)), action);
    guint key = 0, k2 = 0;
    GdkModifierType mods = 0, m2 = 0;
    gtk_accelerator_parse(accel, &key, &mods);
    gboolean found = FALSE;
    for (int i = 0; accels && accels[i]; i++)
        if (gtk_accelerator_parse(accels[i], &k2, &m2) && k2 == key && m2 == mods) found = TRUE;
    g_strfreev(accels);
    if (!found) fail(t, "%s is not bound to %s", action, accel);
    return found;
}

static StepResult step_shortcuts(Test *t)
{
    if (t->sub == 0) {
        if (!has_accel(t, "win.reapply-last", "<Control><Shift>z") || !has_accel(t, "win.revert-last", "<Control>z") ||
            !has_accel(t, "win.export-report", "<Control>e") || !has_accel(t, "win.open", "<Control>o") ||
            !has_accel(t, "app.quit", "<Control>q"))
            return FAIL;
        gtk_widget_activate_action(GTK_WIDGET(t->win), "win.reapply-last", NULL);   /* Ctrl+Shift+Z */
        t->sub = 1;
        return WAIT;
    }
    if (t->sub == 1) {
        if (!idle(t)) return WAIT;
        if (!db_state(t, 1, 1, TRUE)) return FAIL;
        if (!predict_matches(t, t->edit_ids, t->edit_probs, t->k, "after Ctrl+Shift+Z")) return FAIL;
        gtk_widget_activate_action(GTK_WIDGET(t->win), "win.revert-last", NULL);    /* Ctrl+Z */
        t->sub = 2;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    if (!db_state(t, 1, 1, FALSE)) return FAIL;
    if (!predict_matches(t, t->orig_ids, t->orig_probs, t->k, "after Ctrl+Z")) return FAIL;
    say("Ctrl+Shift+Z re-applied and Ctrl+Z reverted patch set #1; top-k exact both ways");
    return DONE;
}

static void on_report(GObject *src, GAsyncResult *res, gpointer user)
{
    Test *t = user;
    g_clear_error(&t->report_error);
    stem_history_page_export_report_finish(STEM_HISTORY_PAGE(src), res, &t->report_error);
    t->report_done = TRUE;
}

static char *slurp(const char *path, gsize *len)
{
    char *s = NULL;
    if (!g_file_get_contents(path, &s, len, NULL)) return NULL;
    return s;
}

static const char *const report_names[] = { "report.json", "report.md", "report.pdf" };

static StepResult step_report(Test *t)
{
    int i = t->sub / 2;
    if (i < (int)G_N_ELEMENTS(report_names)) {
        char *path = g_build_filename(t->dir, report_names[i], NULL);
        if (t->sub % 2 == 0) {
            g_remove(path);
            t->report_done = FALSE;
            stem_history_page_export_report(t->history, path, on_report, t);
            t->sub++;
            g_free(path);
            return WAIT;
        }
        if (!t->report_done) {
            g_free(path);
            return WAIT;
        }
        if (t->report_error) {
            StepResult r = fail(t, "exporting %s: %s", report_names[i], t->report_error->message);
            g_free(path);
            return r;
        }
        gsize len = 0;
        char *s = slurp(path, &len);
        gboolean ok = s != NULL;
        if (ok && i == 0) {
            JsonParser *p = json_parser_new();
            ok = json_parser_load_from_data(p, s, (gssize)len, NULL) && strstr(s, "Spain") && strstr(s, "France");
            g_object_unref(p);
        } else if (ok && i == 1) {
            ok = strstr(s, "Spain") != NULL && strstr(s, "France") != NULL;
        } else if (ok) {
            ok = len > 1000 && !memcmp(s, "%PDF", 4);
        }
        g_free(s);
        say("report %s: %s (%zu bytes)", path, ok ? "ok" : "WRONG", len);
        g_free(path);
        if (!ok) return fail(t, "the report %s is missing or wrong", report_names[i]);
        t->sub++;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    return no_banner(t) ? DONE : FAIL;
}

static StepResult step_patch_files(Test *t)
{
    char *patch = g_build_filename(t->dir, "patch-1.stempatch", NULL);
    char *baked = g_build_filename(t->dir, "baked.safetensors", NULL);
    StepResult r = WAIT;
    if (t->sub == 0) {
        g_remove(patch);
        g_remove(baked);
        stem_history_page_export_patch(t->history, 1, patch);
        t->sub = 1;
    } else if (t->sub == 1) {
        if (idle(t)) {
            if (!g_file_test(patch, G_FILE_TEST_IS_REGULAR)) r = fail(t, "the patch file was not written");
            else {
                stem_history_page_import_patch(t->history, patch);
                t->sub = 2;
            }
        }
    } else if (t->sub == 2) {
        if (idle(t)) {
            if (!db_state(t, 2, 2, TRUE)) r = FAIL;
            else if (!predict_matches(t, t->edit_ids, t->edit_probs, t->k, "after importing the patch file")) r = FAIL;
            else {
                stem_history_page_bake(t->history, baked);
                t->sub = 3;
            }
        }
    } else if (t->sub == 3) {
        if (idle(t)) {
            if (!g_file_test(baked, G_FILE_TEST_IS_REGULAR)) r = fail(t, "the baked model was not written");
            else {
                GtkWidget *b = stem_history_page_get_row_button(t->history, 2, "revert");
                if (!b) r = fail(t, "no Revert button on patch set #2");
                else {
                    gtk_widget_activate(b);
                    t->sub = 4;
                }
            }
        }
    } else if (t->sub == 4) {
        if (idle(t)) {
            if (!db_state(t, 2, 2, FALSE)) r = FAIL;
            else if (!predict_matches(t, t->orig_ids, t->orig_probs, t->k, "after reverting the import")) r = FAIL;
            else {
                say("patch file exported, imported as #2, baked, reverted: top-k exact");
                /* and #1 back on, for the picture of a history with both states */
                GtkWidget *b = stem_history_page_get_row_button(t->history, 1, "reapply");
                if (!b) r = fail(t, "no Re-apply button on patch set #1");
                else {
                    gtk_widget_activate(b);
                    t->sub = 5;
                }
            }
        }
    } else if (t->sub == 5) {
        if (idle(t)) {
            if (!db_state(t, 2, 1, TRUE)) r = FAIL;
            else if (!predict_matches(t, t->edit_ids, t->edit_probs, t->k, "after re-applying #1 from History")) r = FAIL;
            else if (!no_banner(t)) r = FAIL;
            else if ((r = shoot(t, "history.png")) == DONE) {
                r = WAIT;
                gtk_widget_activate_action(GTK_WIDGET(t->win), "win.revert-last", NULL);   /* Ctrl+Z */
                t->sub = 6;
            }
        }
    } else if (idle(t)) {
        if (!db_state(t, 2, 1, FALSE)) r = FAIL;
        else if (!predict_matches(t, t->orig_ids, t->orig_probs, t->k, "after the last Ctrl+Z")) r = FAIL;
        else r = DONE;
    }
    g_free(patch);
    g_free(baked);
    return r;
}

static StepResult step_train_cancel(Test *t)
{
    char *out = g_build_filename(t->dir, "cancelled.safetensors", NULL);
    StepResult r = WAIT;
    if (t->sub == 0) {
        show(t, "train");
        g_remove(out);
        stem_train_page_configure(t->train, "tiny", STEM_TRAIN_STEM, NULL, 100000, out);
        gtk_widget_activate_action(GTK_WIDGET(t->train), "train.start", NULL);
        t->sub = 1;
    } else if (t->sub == 1) {
        if (stem_train_page_get_n_points(t->train, FALSE) >= 3) {
            gtk_widget_activate_action(GTK_WIDGET(t->train), "train.cancel", NULL);
            t->sub = 2;
        }
    } else if (stem_train_page_get_outcome(t->train) && idle(t)) {
        if (strcmp(stem_train_page_get_outcome(t->train), "cancelled"))
            r = fail(t, "cancelling training gave '%s'", stem_train_page_get_outcome(t->train));
        else if (g_file_test(out, G_FILE_TEST_EXISTS))
            r = fail(t, "a cancelled run wrote %s", out);
        else {
            say("training cancelled after %d steps; nothing written", stem_train_page_get_n_points(t->train, FALSE));
            r = no_banner(t) ? DONE : FAIL;
        }
    }
    g_free(out);
    return r;
}

static StepResult step_train(Test *t)
{
    if (t->sub == 0) {
        show(t, "train");
        g_free(t->trained);
        t->trained = g_build_filename(t->dir, "trained-tiny.safetensors", NULL);
        stem_train_page_configure(t->train, "tiny", STEM_TRAIN_BOTH, NULL, 40, t->trained);
        gtk_widget_activate_action(GTK_WIDGET(t->train), "train.start", NULL);
        t->sub = 1;
        return WAIT;
    }
    if (!stem_train_page_get_outcome(t->train) || !idle(t)) return WAIT;
    if (strcmp(stem_train_page_get_outcome(t->train), "done"))
        return fail(t, "training: %s", stem_train_page_get_outcome(t->train));
    if (stem_train_page_get_n_points(t->train, FALSE) < 10 || stem_train_page_get_n_points(t->train, TRUE) < 10)
        return fail(t, "the loss curves have %d (STEM) and %d (dense) points", stem_train_page_get_n_points(t->train, FALSE),
                    stem_train_page_get_n_points(t->train, TRUE));
    if (g_strcmp0(stem_session_get_model_path(t->session), t->trained))
        return fail(t, "the trained model did not open (open: %s)", stem_session_get_model_path(t->session));
    if (!no_banner(t)) return FAIL;
    say("trained STEM and dense tiny models; %s is open", t->trained);
    return shoot(t, "train.png");
}

static StepResult step_geometry_overlay(Test *t)
{
    if (t->sub == 0) {
        show(t, "geometry");
        char *dense = g_strdup(t->trained);
        dense[strlen(dense) - strlen(".safetensors")] = 0;
        char *p = g_strconcat(dense, "-dense.safetensors", NULL);
        stem_geometry_page_set_compare(t->geometry, p);
        gtk_editable_set_text(stem_geometry_page_get_search(t->geometry), "the");
        g_free(p);
        g_free(dense);
        t->sub = 1;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    if (stem_geometry_page_get_n_series(t->geometry) != 2)
        return fail(t, "the histogram has %d series with the dense overlay", stem_geometry_page_get_n_series(t->geometry));
    if (!no_banner(t)) return FAIL;
    return shoot(t, "geometry.png");
}

static StepResult step_errors(Test *t)
{
    if (t->sub == 0) {
        char *bad = g_build_filename(t->dir, "not-a-model.safetensors", NULL);
        g_file_set_contents(bad, "this is not a model", -1, NULL);
        stem_window_open_model(t->win, bad, NULL);
        g_free(bad);
        t->sub = 1;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    const char *e = stem_window_get_error(t->win);
    if (!e) return fail(t, "opening a corrupt file showed no error");
    if (g_strcmp0(stem_session_get_model_path(t->session), t->model_path))
        return fail(t, "a failed open must keep the current model");
    say("a corrupt model file shows: %s", e);
    StepResult r = shoot(t, "error-banner.png");
    gtk_widget_activate_action(GTK_WIDGET(t->win), "win.dismiss-banner", NULL);
    return r;
}

static StepResult step_dark(Test *t)
{
    GtkApplication *app = gtk_window_get_application(GTK_WINDOW(t->win));
    if (t->sub == 0) {
        show(t, "edit");
        g_action_group_activate_action(G_ACTION_GROUP(app), "color-scheme", g_variant_new_string("dark"));
        t->sub = 1;
        return WAIT;
    }
    if (!idle(t)) return WAIT;
    if (!stem_widget_is_dark(GTK_WIDGET(t->win))) return fail(t, "the dark style did not apply");
    StepResult r = shoot(t, "edit-dark.png");
    g_action_group_activate_action(G_ACTION_GROUP(app), "color-scheme", g_variant_new_string("system"));
    return r;
}

/* Started without a model: the first-start page. */
static StepResult step_empty(Test *t)
{
    if (!idle(t)) return WAIT;
    if (stem_session_has_model(t->session)) return fail(t, "a model opened although none was given");
    if (stem_model_page_get_value(t->model_page, "sha256")) return fail(t, "the model card is shown without a model");
    if (strcmp(stem_window_get_visible_page(t->win), "model")) return fail(t, "the first page is %s", stem_window_get_visible_page(t->win));
    if (!no_banner(t)) return FAIL;
    return shoot(t, "model-empty.png");
}

static const Step empty_steps[] = {
    { "first start: no model", step_empty },
};

static const Step steps[] = {
    { "open the model from the command line", step_model },
    { "type a prompt", step_type_prompt },
    { "generate", step_generate },
    { "geometry: search, neighbours", step_geometry },
    { "edit: type entities, move α", step_edit },
    { "edit: relation sweep", step_sweep },
    { "edit: apply", step_apply },
    { "history: revert", step_history_revert },
    { "shortcuts: re-apply, revert", step_shortcuts },
    { "history: export reports", step_report },
    { "history: patch files, bake", step_patch_files },
    { "errors: a corrupt model", step_errors },
    { "dark style", step_dark },
    { "train: cancel", step_train_cancel },
    { "train STEM and dense", step_train },
    { "geometry: dense overlay", step_geometry_overlay },
};

static void finish(Test *t, int status)
{
    *t->status = status;
    if (status) g_printerr("self-test: FAILED at step %d (%s): %s\n", t->step + 1, t->steps[t->step].name,
                           t->error ? t->error : "?");
    else g_printerr("self-test: all %d steps passed\n", t->n_steps);
    GApplication *app = G_APPLICATION(gtk_window_get_application(GTK_WINDOW(t->win)));
    gtk_window_close(GTK_WINDOW(t->win));   /* saves the window state like a person closing it */
    g_application_quit(app);
}

static gboolean tick(gpointer data)
{
    Test *t = data;
    if (t->step >= t->n_steps) {
        finish(t, 0);
        return G_SOURCE_REMOVE;
    }
    gint64 now = g_get_monotonic_time();
    if (!t->step_start) {
        t->step_start = now;
        say("step %d: %s", t->step + 1, t->steps[t->step].name);
    }
    int sub = t->sub;
    StepResult r = t->steps[t->step].fn(t);
    if (t->sub != sub) t->settle_until = 0;   /* something was done: wait for its effects */
    if (r == WAIT && now - t->step_start > (gint64)STEP_TIMEOUT_S * G_USEC_PER_SEC)
        r = fail(t, "timed out after %d s", STEP_TIMEOUT_S);
    if (r == FAIL) {
        /* a screenshot of the failure helps more than any message */
        char *why = g_strdup(t->error);
        shoot(t, "failure.png");
        g_free(t->error);
        t->error = why;
        finish(t, 1);
        return G_SOURCE_REMOVE;
    }
    if (r == DONE) {
        t->step++;
        t->sub = 0;
        t->step_start = 0;
        t->settle_until = 0;
    }
    return G_SOURCE_CONTINUE;
}

static void test_free(gpointer data)
{
    Test *t = data;
    g_free(t->dir);
    g_free(t->error);
    g_free(t->model_path);
    g_free(t->db_path);
    g_free(t->trained);
    for (int i = 0; i < STEM_PREDICT_K; i++) g_free(t->orig_labels[i]);
    g_clear_error(&t->report_error);
    g_free(t);
}

void stem_selftest_start(StemWindow *window, const char *dir, gboolean with_model, int *status)
{
    Test *t = g_new0(Test, 1);
    t->win = window;
    t->session = stem_window_get_session(window);
    t->predict = STEM_PREDICT_PAGE(stem_window_get_page(window, "predict"));
    t->geometry = STEM_GEOMETRY_PAGE(stem_window_get_page(window, "geometry"));
    t->edit = STEM_EDIT_PAGE(stem_window_get_page(window, "edit"));
    t->history = STEM_HISTORY_PAGE(stem_window_get_page(window, "history"));
    t->train = STEM_TRAIN_PAGE(stem_window_get_page(window, "train"));
    t->model_page = STEM_MODEL_PAGE(stem_window_get_page(window, "model"));
    t->dir = g_strdup(dir);
    t->status = status;
    t->steps = with_model ? steps : empty_steps;
    t->n_steps = with_model ? (int)G_N_ELEMENTS(steps) : (int)G_N_ELEMENTS(empty_steps);
    *status = 1;   /* until every step passed */
    /* no page transitions: a screenshot shows one page, not a crossfade */
    g_object_set(gtk_settings_get_default(), "gtk-enable-animations", FALSE, NULL);
    g_mkdir_with_parents(dir, 0755);
    g_timeout_add_full(G_PRIORITY_DEFAULT, 10, tick, t, test_free);
}
