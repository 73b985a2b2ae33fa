/* StemHistoryPage (see stem-history-page.h). */
#include "stem-history-page.h"
#include "stem-util.h"
#include "editdb/editdb.h"
#include "editdb/patchfile.h"
#include "viz/report.h"

#include <string.h>

struct _StemHistoryPage {
    GtkWidget parent_instance;
    StemSession *session;
    GArray *reverted;            /* ids reverted in this session, latest last (Ctrl+Shift+Z) */
    GCancellable *report_cancel;
    guint n_reloads;
    int n_rows;

    /* template */
    GtkLabel *db_label, *audit_label;
    GtkListBox *patch_list;
    GtkRevealer *progress_revealer;
    GtkProgressBar *progress;
};

G_DEFINE_FINAL_TYPE(StemHistoryPage, stem_history_page, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_SESSION, N_PROPS };
static GParamSpec *properties[N_PROPS];

int stem_history_page_get_n_rows(StemHistoryPage *self) { return self->n_rows; }
guint stem_history_page_get_n_reloads(StemHistoryPage *self) { return self->n_reloads; }

static void reload(StemHistoryPage *self);

static StemEditDb *need_db(StemSessionCtx *ctx, GError **error)
{
    StemEditDb *db = stem_session_ctx_db(ctx);
    if (!db) g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED, "This model has no usable edit database");
    return db;
}

/* ------------------------------------------------------------------ list */

typedef struct {
    GPtrArray *sets;             /* StemPatchSet*, newest first */
    GPtrArray *audit;            /* StemAuditEntry* */
} ListOut;

static void list_out_free(gpointer p)
{
    ListOut *o = p;
    if (!o) return;
    if (o->sets) g_ptr_array_unref(o->sets);
    if (o->audit) g_ptr_array_unref(o->audit);
    g_free(o);
}

static gpointer list_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = need_db(ctx, error);
    if (!db) return NULL;
    ListOut *o = g_new0(ListOut, 1);
    o->sets = stem_editdb_list(db, error);
    if (o->sets) o->audit = stem_editdb_audit(db, error);
    if (!o->sets || !o->audit) {
        list_out_free(o);
        return NULL;
    }
    return o;
}

static GtkWidget *row_button(const char *label, const char *action, gint64 id, const char *which, gboolean suggested)
{
    GtkWidget *b = gtk_button_new_with_mnemonic(label);
    gtk_actionable_set_action_name(GTK_ACTIONABLE(b), action);
    gtk_actionable_set_action_target_value(GTK_ACTIONABLE(b), g_variant_new_int64(id));
    gtk_widget_set_valign(b, GTK_ALIGN_CENTER);
    g_object_set_data(G_OBJECT(b), "which", (gpointer)which);
    if (suggested) gtk_widget_add_css_class(b, "flat");
    return b;
}

static char *when(const char *iso)
{
    if (!iso || !*iso) return g_strdup("—");
    GDateTime *dt = g_date_time_new_from_iso8601(iso, NULL);
    if (!dt) return g_strdup(iso);
    GDateTime *local = g_date_time_to_local(dt);
    char *s = g_date_time_format(local, "%Y-%m-%d %H:%M:%S");
    g_date_time_unref(local);
    g_date_time_unref(dt);
    return s;
}

static void show_list(StemHistoryPage *self, ListOut *o)
{
    stem_box_clear(GTK_WIDGET(self->patch_list));
    self->n_rows = 0;
    for (guint k = o->sets->len; k-- > 0;) {
        StemPatchSet *p = o->sets->pdata[k];
        GtkWidget *row = gtk_list_box_row_new();
        gtk_list_box_row_set_activatable(GTK_LIST_BOX_ROW(row), FALSE);
        GtkWidget *box = gtk_box_new(GTK_ORIENTATION_HORIZONTAL, 12);
        gtk_widget_set_margin_start(box, 14);
        gtk_widget_set_margin_end(box, 10);
        gtk_widget_set_margin_top(box, 8);
        gtk_widget_set_margin_bottom(box, 8);

        char *idtxt = g_strdup_printf("#%" G_GINT64_FORMAT, p->id);
        GtkWidget *idl = gtk_label_new(idtxt);
        gtk_widget_add_css_class(idl, "title-3");
        gtk_label_set_width_chars(GTK_LABEL(idl), 4);
        g_free(idtxt);
        gtk_box_append(GTK_BOX(box), idl);

        GtkWidget *text = gtk_box_new(GTK_ORIENTATION_VERTICAL, 2);
        gtk_widget_set_hexpand(text, TRUE);
        char *desc = stem_recipe_describe(&p->recipe);
        GtkWidget *dl = gtk_label_new(desc);
        gtk_label_set_xalign(GTK_LABEL(dl), 0);
        gtk_label_set_ellipsize(GTK_LABEL(dl), PANGO_ELLIPSIZE_END);
        gtk_widget_add_css_class(dl, "heading");
        g_free(desc);
        char *created = when(p->created_at), *applied = when(p->applied_at), *reverted = when(p->reverted_at);
        char *meta = p->applied
                         ? g_strdup_printf("%d rows · created %s · applied %s · %s", p->n_rows, created, applied,
                                           p->origin ? p->origin : "")
                         : g_strdup_printf("%d rows · created %s · reverted %s · %s", p->n_rows, created, reverted,
                                           p->origin ? p->origin : "");
        GtkWidget *ml = gtk_label_new(meta);
        gtk_label_set_xalign(GTK_LABEL(ml), 0);
        gtk_label_set_ellipsize(GTK_LABEL(ml), PANGO_ELLIPSIZE_END);
        gtk_widget_add_css_class(ml, "dim-label");
        gtk_widget_add_css_class(ml, "caption");
        g_free(meta);
        g_free(created);
        g_free(applied);
        g_free(reverted);
        gtk_box_append(GTK_BOX(text), dl);
        gtk_box_append(GTK_BOX(text), ml);
        gtk_box_append(GTK_BOX(box), text);

        gtk_box_append(GTK_BOX(box), stem_chip_new(p->applied ? "applied" : "reverted", p->applied ? "success" : "state-off",
                                                   p->applied ? "Its rows are in the effective tables" : "Not in effect"));
        if (p->applied)
            gtk_box_append(GTK_BOX(box), row_button("_Revert", "history.revert", p->id, "revert", FALSE));
        else
            gtk_box_append(GTK_BOX(box), row_button("Re-_apply", "history.reapply", p->id, "reapply", FALSE));
        gtk_box_append(GTK_BOX(box), row_button("_Export…", "history.export", p->id, "export", FALSE));
        gtk_list_box_row_set_child(GTK_LIST_BOX_ROW(row), box);
        g_object_set_data(G_OBJECT(row), "id", GINT_TO_POINTER((int)p->id));
        gtk_list_box_append(self->patch_list, row);
        self->n_rows++;
    }
    GString *a = g_string_new(NULL);
    for (guint k = o->audit->len; k-- > 0 && o->audit->len - k <= 200;) {
        StemAuditEntry *e = o->audit->pdata[k];
        char *at = when(e->at);
        g_string_append_printf(a, "%s  %-8s", at, e->action);
        if (e->patch_set) g_string_append_printf(a, "  #%" G_GINT64_FORMAT, e->patch_set);
        if (e->detail && *e->detail && strcmp(e->detail, "{}")) g_string_append_printf(a, "  %s", e->detail);
        g_string_append_c(a, '\n');
        g_free(at);
    }
    gtk_label_set_text(self->audit_label, a->len ? a->str : "(empty)");
    g_string_free(a, TRUE);
}

static void on_listed(GObject *src, GAsyncResult *res, gpointer user)
{
    StemHistoryPage *self = user;
    GError *e = NULL;
    ListOut *o = stem_session_run_finish(STEM_SESSION(src), res, &e);
    if (o && self->session) {
        show_list(self, o);
        self->n_reloads++;
    }
    list_out_free(o);
    if (e && !g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED))
        stem_session_report(STEM_SESSION(src), "Cannot list the patch sets", e);
    g_clear_error(&e);
    g_object_unref(self);
}

static void reload(StemHistoryPage *self)
{
    if (!self->session) return;
    const char *dbp = stem_session_get_db_path(self->session), *err = stem_session_get_db_error(self->session);
    gtk_label_set_text(self->db_label, err ? err : dbp ? dbp : "No model open");
    if (!stem_session_has_model(self->session)) {
        stem_box_clear(GTK_WIDGET(self->patch_list));
        self->n_rows = 0;
        return;
    }
    stem_session_run(self->session, "history-list", TRUE, list_job, NULL, NULL, list_out_free, NULL, on_listed,
                     g_object_ref(self));
}

/* ------------------------------------------------------------------ revert / reapply */

typedef struct {
    gint64 id;                   /* 0: the latest applied (revert) / the hinted or latest reverted (reapply) */
    gboolean revert;
    gint64 *hints;               /* reapply: session-reverted ids, latest last */
    int n_hints;
} StateIn;

static void state_in_free(gpointer p)
{
    StateIn *in = p;
    g_free(in->hints);
    g_free(in);
}

static gpointer state_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = need_db(ctx, error);
    StateIn *in = data;
    if (!db) return NULL;
    gint64 id = in->id;
    if (id == 0) {
        GPtrArray *list = stem_editdb_list(db, error);
        if (!list) return NULL;
        gint64 best = -1;
        for (guint i = 0; i < list->len; i++) {
            StemPatchSet *p = list->pdata[i];
            if (in->revert && p->applied && p->apply_seq > best) {
                best = p->apply_seq;
                id = p->id;
            }
        }
        if (!in->revert) {
            /* the latest set this session reverted that is still reverted, else the
             * most recently reverted one in the database */
            for (int h = in->n_hints; h-- > 0 && !id;)
                for (guint i = 0; i < list->len; i++) {
                    StemPatchSet *p = list->pdata[i];
                    if (p->id == in->hints[h] && !p->applied) id = p->id;
                }
            const char *latest = NULL;
            for (guint i = 0; i < list->len && !id; i++) {
                StemPatchSet *p = list->pdata[i];
                if (!p->applied && p->reverted_at && (!latest || strcmp(p->reverted_at, latest) >= 0))
                    latest = p->reverted_at;
            }
            for (guint i = 0; i < list->len && !id && latest; i++) {
                StemPatchSet *p = list->pdata[i];
                if (!p->applied && !g_strcmp0(p->reverted_at, latest)) id = p->id;
            }
        }
        g_ptr_array_unref(list);
        if (!id) {
            g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_STATE,
                        in->revert ? "No applied edit to revert" : "No reverted edit to re-apply");
            return NULL;
        }
    }
    if (!(in->revert ? stem_editdb_revert(db, id, error) : stem_editdb_reapply(db, id, error))) return NULL;
    gint64 *r = g_new(gint64, 1);
    *r = id;
    return r;
}

typedef struct {
    StemHistoryPage *self;
    gboolean revert;
} StateCb;

static void on_state_changed(GObject *src, GAsyncResult *res, gpointer user)
{
    StateCb *cb = user;
    StemHistoryPage *self = cb->self;
    gboolean revert = cb->revert;
    g_free(cb);
    StemSession *session = STEM_SESSION(src);
    GError *e = NULL;
    gint64 *id = stem_session_run_finish(session, res, &e);
    if (id) {
        if (!self->reverted) {
            /* disposed meanwhile */
        } else if (revert) {
            g_array_append_val(self->reverted, *id);
        } else {
            for (guint i = self->reverted->len; i-- > 0;)
                if (g_array_index(self->reverted, gint64, i) == *id) g_array_remove_index(self->reverted, i);
        }
        char *s = g_strdup_printf("%s patch set #%" G_GINT64_FORMAT, revert ? "Reverted" : "Re-applied", *id);
        stem_session_toast(session, s);
        g_free(s);
        g_free(id);
        stem_session_edits_changed(session);
    } else {
        stem_session_report(session, revert ? "Cannot revert" : "Cannot re-apply", e);
        g_clear_error(&e);
    }
    g_object_unref(self);
}

static void change_state(StemHistoryPage *self, gint64 id, gboolean revert)
{
    if (!self->session) return;
    StateIn *in = g_new0(StateIn, 1);
    in->id = id;
    in->revert = revert;
    if (!revert && self->reverted->len) {
        in->n_hints = (int)self->reverted->len;
        in->hints = g_memdup2(self->reverted->data, sizeof(gint64) * self->reverted->len);
    }
    StateCb *cb = g_new0(StateCb, 1);
    cb->self = g_object_ref(self);
    cb->revert = revert;
    stem_session_run(self->session, NULL, TRUE, state_job, in, state_in_free, g_free, NULL, on_state_changed, cb);
}

void stem_history_page_revert_last(StemHistoryPage *self) { change_state(self, 0, TRUE); }
void stem_history_page_reapply_last(StemHistoryPage *self) { change_state(self, 0, FALSE); }

static void revert_action(GtkWidget *w, const char *name, GVariant *p) { change_state(STEM_HISTORY_PAGE(w), g_variant_get_int64(p), TRUE); }
static void reapply_action(GtkWidget *w, const char *name, GVariant *p) { change_state(STEM_HISTORY_PAGE(w), g_variant_get_int64(p), FALSE); }

GtkWidget *stem_history_page_get_row_button(StemHistoryPage *self, gint64 id, const char *which)
{
    for (GtkWidget *row = gtk_widget_get_first_child(GTK_WIDGET(self->patch_list)); row;
         row = gtk_widget_get_next_sibling(row)) {
        if (GPOINTER_TO_INT(g_object_get_data(G_OBJECT(row), "id")) != (int)id) continue;
        GtkWidget *box = gtk_list_box_row_get_child(GTK_LIST_BOX_ROW(row));
        for (GtkWidget *c = gtk_widget_get_first_child(box); c; c = gtk_widget_get_next_sibling(c))
            if (!g_strcmp0(g_object_get_data(G_OBJECT(c), "which"), which)) return c;
    }
    return NULL;
}

/* ------------------------------------------------------------------ files: common */

typedef struct {
    gint64 id;
    char *path;
    char *model_path, *db_path;
} FileIn;

static void file_in_free(gpointer p)
{
    FileIn *in = p;
    g_free(in->path);
    g_free(in->model_path);
    g_free(in->db_path);
    g_free(in);
}

static FileIn *file_in(StemHistoryPage *self, gint64 id, const char *path)
{
    FileIn *in = g_new0(FileIn, 1);
    in->id = id;
    in->path = g_strdup(path);
    in->model_path = g_strdup(stem_session_get_model_path(self->session));
    in->db_path = g_strdup(stem_session_get_db_path(self->session));
    return in;
}

typedef void (*PathFn)(StemHistoryPage *self, gint64 id, const char *path);

typedef struct {
    StemHistoryPage *self;
    gint64 id;
    PathFn fn;
    const char *default_ext;
} DialogData;

static void on_dialog_response(GtkNativeDialog *d, int response, DialogData *dd)
{
    if (response == GTK_RESPONSE_ACCEPT) {
        GFile *f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(d));
        char *path = f ? g_file_get_path(f) : NULL;
        if (path && dd->default_ext && !strrchr(strrchr(path, '/') ? strrchr(path, '/') : path, '.')) {
            char *p2 = g_strconcat(path, dd->default_ext, NULL);
            g_free(path);
            path = p2;
        }
        if (path) dd->fn(dd->self, dd->id, path);
        g_free(path);
        g_clear_object(&f);
    }
    g_object_unref(dd->self);
    g_free(dd);
    g_object_unref(d);
}

static void file_dialog(StemHistoryPage *self, const char *title, GtkFileChooserAction action, const char *accept,
                        const char *suggested, const char *const *filters, gint64 id, PathFn fn, const char *default_ext)
{
    GtkRoot *root = gtk_widget_get_root(GTK_WIDGET(self));
    GtkFileChooserNative *d = gtk_file_chooser_native_new(title, GTK_IS_WINDOW(root) ? GTK_WINDOW(root) : NULL, action,
                                                          accept, "_Cancel");
    for (int i = 0; filters && filters[i]; i += 2) {
        GtkFileFilter *ff = gtk_file_filter_new();
        gtk_file_filter_set_name(ff, filters[i]);
        char **pats = g_strsplit(filters[i + 1], ";", -1);
        for (char **p = pats; *p; p++) gtk_file_filter_add_pattern(ff, *p);
        g_strfreev(pats);
        gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(d), ff);
        g_object_unref(ff);
    }
    if (suggested) gtk_file_chooser_set_current_name(GTK_FILE_CHOOSER(d), suggested);
    DialogData *dd = g_new0(DialogData, 1);
    dd->self = g_object_ref(self);
    dd->id = id;
    dd->fn = fn;
    dd->default_ext = default_ext;
    g_signal_connect(d, "response", G_CALLBACK(on_dialog_response), dd);
    gtk_native_dialog_show(GTK_NATIVE_DIALOG(d));
}

static void on_file_done(GObject *src, GAsyncResult *res, gpointer user)
{
    StemHistoryPage *self = user;
    StemSession *session = STEM_SESSION(src);
    GError *e = NULL;
    char *msg = stem_session_run_finish(session, res, &e);
    if (msg) {
        stem_session_toast(session, msg);
        g_free(msg);
        /* imports add a patch set; exports and bakes add audit entries */
        stem_session_edits_changed(session);
    } else {
        stem_session_report(session, NULL, e);
        g_clear_error(&e);
    }
    g_object_unref(self);
}

/* ------------------------------------------------------------------ export / import / bake */

static gpointer export_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = need_db(ctx, error);
    FileIn *in = data;
    if (!db) return NULL;
    if (!stem_patchfile_export(db, in->id, in->path, error)) {
        g_prefix_error(error, "Cannot export patch set #%" G_GINT64_FORMAT ": ", in->id);
        return NULL;
    }
    return g_strdup_printf("Exported patch set #%" G_GINT64_FORMAT " to %s", in->id, in->path);
}

void stem_history_page_export_patch(StemHistoryPage *self, gint64 id, const char *path)
{
    if (!self->session) return;
    stem_session_run(self->session, NULL, TRUE, export_job, file_in(self, id, path), file_in_free, g_free, NULL,
                     on_file_done, g_object_ref(self));
}

static void export_patch_cb(StemHistoryPage *self, gint64 id, const char *path) { stem_history_page_export_patch(self, id, path); }

static void export_action(GtkWidget *w, const char *name, GVariant *p)
{
    StemHistoryPage *self = STEM_HISTORY_PAGE(w);
    gint64 id = g_variant_get_int64(p);
    char *suggested = g_strdup_printf("patch-%" G_GINT64_FORMAT ".stempatch", id);
    static const char *const filters[] = { "Patch files", "*.stempatch;*.safetensors", "All files", "*", NULL };
    file_dialog(self, "Export Patch Set", GTK_FILE_CHOOSER_ACTION_SAVE, "_Export", suggested, filters, id,
                export_patch_cb, NULL);
    g_free(suggested);
}

static gpointer import_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = need_db(ctx, error);
    FileIn *in = data;
    if (!db) return NULL;
    char *bytes = NULL;
    gsize len = 0;
    if (!g_file_get_contents(in->path, &bytes, &len, error)) return NULL;
    char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)bytes, len);
    StemPatchFile *pf = stem_patchfile_read_buffer(bytes, len, error);
    g_free(bytes);
    gint64 id = 0;
    if (pf && stem_patchfile_check_model(pf, stem_session_ctx_model(ctx), error))
        id = stem_patchfile_import(db, pf, sha, error);
    g_free(sha);
    if (pf) stem_patchfile_free(pf);
    if (!id) {
        g_prefix_error(error, "Cannot import %s: ", in->path);
        return NULL;
    }
    return g_strdup_printf("Imported %s as patch set #%" G_GINT64_FORMAT, in->path, id);
}

void stem_history_page_import_patch(StemHistoryPage *self, const char *path)
{
    if (!self->session) return;
    stem_session_run(self->session, NULL, TRUE, import_job, file_in(self, 0, path), file_in_free, g_free, NULL,
                     on_file_done, g_object_ref(self));
}

static void import_cb(StemHistoryPage *self, gint64 id, const char *path) { stem_history_page_import_patch(self, path); }

static void import_action(GtkWidget *w, const char *name, GVariant *p)
{
    static const char *const filters[] = { "Patch files", "*.stempatch;*.safetensors", "All files", "*", NULL };
    file_dialog(STEM_HISTORY_PAGE(w), "Import a Patch File", GTK_FILE_CHOOSER_ACTION_OPEN, "_Import", NULL, filters,
                0, import_cb, NULL);
}

static gpointer bake_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = need_db(ctx, error);
    FileIn *in = data;
    if (!db) return NULL;
    int n = 0;
    char *sha = NULL;
    if (!stem_editdb_bake(db, in->path, &n, &sha, error)) {
        g_prefix_error(error, "Cannot bake: ");
        return NULL;
    }
    char *msg = g_strdup_printf("Baked %d applied patch set%s into %s", n, n == 1 ? "" : "s", in->path);
    g_free(sha);
    return msg;
}

void stem_history_page_bake(StemHistoryPage *self, const char *path)
{
    if (!self->session) return;
    stem_session_run(self->session, NULL, TRUE, bake_job, file_in(self, 0, path), file_in_free, g_free, NULL,
                     on_file_done, g_object_ref(self));
}

static void bake_cb(StemHistoryPage *self, gint64 id, const char *path) { stem_history_page_bake(self, path); }

static void bake_action(GtkWidget *w, const char *name, GVariant *p)
{
    StemHistoryPage *self = STEM_HISTORY_PAGE(w);
    char *suggested = NULL;
    const char *mp = self->session ? stem_session_get_model_path(self->session) : NULL;
    if (mp) {
        char *base = g_path_get_basename(mp);
        if (g_str_has_suffix(base, ".safetensors")) base[strlen(base) - strlen(".safetensors")] = 0;
        suggested = g_strdup_printf("%s-edited.safetensors", base);
        g_free(base);
    }
    static const char *const filters[] = { "Models", "*.safetensors", NULL };
    file_dialog(self, "Bake the Edits Into a New Model", GTK_FILE_CHOOSER_ACTION_SAVE, "_Bake", suggested, filters, 0,
                bake_cb, ".safetensors");
    g_free(suggested);
}

/* ------------------------------------------------------------------ report */

static gpointer report_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = need_db(ctx, error);
    FileIn *in = data;
    if (!db) return NULL;
    StemModel *m = stem_session_ctx_model(ctx);
    GPtrArray *list = stem_editdb_list(db, error);
    if (!list) return NULL;
    if (list->len == 0) {
        g_ptr_array_unref(list);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "There is nothing to report yet: the report describes the model's patch sets, and there are none");
        return NULL;
    }
    VizReportOptions o;
    viz_report_options_init(&o);
    o.metrics = TRUE;
    o.model_path = in->model_path;
    o.db_path = in->db_path;
    GPtrArray *reports = g_ptr_array_new_with_free_func((GDestroyNotify)viz_report_free);
    gboolean ok = TRUE;
    for (guint i = 0; i < list->len && ok; i++) {
        StemPatchSet *p = list->pdata[i];
        char *t = g_strdup_printf("Measuring patch set #%" G_GINT64_FORMAT " (%u of %u)…", p->id, i + 1, list->len);
        stem_session_ctx_progress(ctx, (double)i / (list->len + 1), t);
        g_free(t);
        if (g_cancellable_set_error_if_cancelled(c, error)) {
            ok = FALSE;
            break;
        }
        VizReport *r = viz_report_build(db, m, p->id, &o, error);
        if (!r) ok = FALSE;
        else g_ptr_array_add(reports, r);
    }
    if (ok) {
        stem_session_ctx_progress(ctx, (double)list->len / (list->len + 1), "Writing the report…");
        ok = viz_reports_write((VizReport *const *)reports->pdata, (int)reports->len, in->path, viz_theme_light(), error);
    }
    stem_session_ctx_progress(ctx, 1, NULL);
    int n = (int)reports->len;
    g_ptr_array_unref(reports);
    g_ptr_array_unref(list);
    if (!ok) {
        if (!g_error_matches(*error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) g_prefix_error(error, "Cannot export the report: ");
        return NULL;
    }
    stem_editdb_log(db, "export", 0, NULL, NULL);
    return g_strdup_printf("Wrote the report on %d patch set%s to %s", n, n == 1 ? "" : "s", in->path);
}

static void on_report_done(GObject *src, GAsyncResult *res, gpointer user)
{
    GTask *outer = user;
    StemHistoryPage *self = g_task_get_source_object(outer);
    StemSession *session = STEM_SESSION(src);
    GError *e = NULL;
    char *msg = stem_session_run_finish(session, res, &e);
    gtk_revealer_set_reveal_child(self->progress_revealer, FALSE);
    g_clear_object(&self->report_cancel);
    if (msg) {
        stem_session_toast(session, msg);
        g_free(msg);
        g_task_return_boolean(outer, TRUE);
    } else {
        if (stem_error_is_cancelled(e)) stem_session_toast(session, "Report cancelled");
        else stem_session_report(session, NULL, e);
        g_task_return_error(outer, e);
    }
    g_object_unref(outer);
}

static void on_job_progress(StemSession *s, const char *name, double fraction, const char *text, StemHistoryPage *self)
{
    if (g_strcmp0(name, "report")) return;
    gtk_progress_bar_set_fraction(self->progress, fraction);
    if (text) gtk_progress_bar_set_text(self->progress, text);
}

void stem_history_page_export_report(StemHistoryPage *self, const char *path, GAsyncReadyCallback callback,
                                     gpointer user_data)
{
    GTask *outer = g_task_new(self, NULL, callback, user_data);
    g_task_set_source_tag(outer, stem_history_page_export_report);
    if (!self->session || !stem_session_has_model(self->session)) {
        g_task_return_new_error(outer, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED, "No model is open");
        g_object_unref(outer);
        return;
    }
    if (self->report_cancel) g_cancellable_cancel(self->report_cancel);
    g_clear_object(&self->report_cancel);
    self->report_cancel = g_cancellable_new();
    gtk_progress_bar_set_fraction(self->progress, 0);
    gtk_progress_bar_set_text(self->progress, "Preparing the report…");
    gtk_revealer_set_reveal_child(self->progress_revealer, TRUE);
    stem_session_run(self->session, "report", TRUE, report_job, file_in(self, 0, path), file_in_free, g_free,
                     self->report_cancel, on_report_done, outer);
}

gboolean stem_history_page_export_report_finish(StemHistoryPage *self, GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, self), FALSE);
    return g_task_propagate_boolean(G_TASK(result), error);
}

static void report_cb(StemHistoryPage *self, gint64 id, const char *path)
{
    stem_history_page_export_report(self, path, NULL, NULL);
}

void stem_history_page_export_report_dialog(StemHistoryPage *self)
{
    if (!self->session || !stem_session_has_model(self->session)) {
        GError *e = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED, "Open a model first");
        if (self->session) stem_session_report(self->session, "Cannot export a report", e);
        g_error_free(e);
        return;
    }
    static const char *const filters[] = { "PDF, Markdown or JSON", "*.pdf;*.md;*.json", "PDF", "*.pdf",
                                           "Markdown (charts as PNG beside it)", "*.md", "JSON", "*.json", NULL };
    file_dialog(self, "Export a Report", GTK_FILE_CHOOSER_ACTION_SAVE, "_Export", "stem-edits-report.pdf", filters, 0,
                report_cb, ".pdf");
}

static void export_report_action(GtkWidget *w, const char *name, GVariant *p)
{
    stem_history_page_export_report_dialog(STEM_HISTORY_PAGE(w));
}

static void cancel_action(GtkWidget *w, const char *name, GVariant *p)
{
    StemHistoryPage *self = STEM_HISTORY_PAGE(w);
    if (self->report_cancel) g_cancellable_cancel(self->report_cancel);
}

/* ------------------------------------------------------------------ session */

static void on_changed(StemSession *s, StemHistoryPage *self)
{
    reload(self);
}

static void on_model_changed(StemSession *s, StemHistoryPage *self)
{
    g_array_set_size(self->reverted, 0);
    reload(self);
}

static void set_session(StemHistoryPage *self, StemSession *session)
{
    if (self->session == session) return;
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_set_object(&self->session, session);
    if (!session) return;
    g_signal_connect_object(session, "model-changed", G_CALLBACK(on_model_changed), self, 0);
    g_signal_connect_object(session, "edits-changed", G_CALLBACK(on_changed), self, 0);
    g_signal_connect_object(session, "job-progress", G_CALLBACK(on_job_progress), self, 0);
    reload(self);
}

/* ------------------------------------------------------------------ GObject */

static void stem_history_page_dispose(GObject *object)
{
    StemHistoryPage *self = STEM_HISTORY_PAGE(object);
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    if (self->report_cancel) g_cancellable_cancel(self->report_cancel);
    g_clear_object(&self->report_cancel);
    g_clear_object(&self->session);
    g_clear_pointer(&self->reverted, g_array_unref);
    gtk_widget_dispose_template(GTK_WIDGET(object), STEM_TYPE_HISTORY_PAGE);
    /* the template's root has no id: unparent it ourselves */
    GtkWidget *child;
    while ((child = gtk_widget_get_first_child(GTK_WIDGET(object)))) gtk_widget_unparent(child);
    G_OBJECT_CLASS(stem_history_page_parent_class)->dispose(object);
}

static void stem_history_page_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemHistoryPage *self = STEM_HISTORY_PAGE(object);
    switch (id) {
    case PROP_SESSION: g_value_set_object(value, self->session); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_history_page_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemHistoryPage *self = STEM_HISTORY_PAGE(object);
    switch (id) {
    case PROP_SESSION: set_session(self, g_value_get_object(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_history_page_class_init(StemHistoryPageClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    oc->dispose = stem_history_page_dispose;
    oc->get_property = stem_history_page_get_property;
    oc->set_property = stem_history_page_set_property;
    properties[PROP_SESSION] = g_param_spec_object("session", NULL, NULL, STEM_TYPE_SESSION,
                                                   G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/org/stemworkbench/Workbench/stem-history-page.ui");
    gtk_widget_class_bind_template_child(wc, StemHistoryPage, db_label);
    gtk_widget_class_bind_template_child(wc, StemHistoryPage, audit_label);
    gtk_widget_class_bind_template_child(wc, StemHistoryPage, patch_list);
    gtk_widget_class_bind_template_child(wc, StemHistoryPage, progress_revealer);
    gtk_widget_class_bind_template_child(wc, StemHistoryPage, progress);
    gtk_widget_class_install_action(wc, "history.revert", "x", revert_action);
    gtk_widget_class_install_action(wc, "history.reapply", "x", reapply_action);
    gtk_widget_class_install_action(wc, "history.export", "x", export_action);
    gtk_widget_class_install_action(wc, "history.import", NULL, import_action);
    gtk_widget_class_install_action(wc, "history.bake", NULL, bake_action);
    gtk_widget_class_install_action(wc, "history.export-report", NULL, export_report_action);
    gtk_widget_class_install_action(wc, "history.cancel", NULL, cancel_action);
}

static void stem_history_page_init(StemHistoryPage *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
    self->reverted = g_array_new(FALSE, FALSE, sizeof(gint64));
    GtkWidget *ph = gtk_label_new("No edits yet — plan one on the Edit page and apply it.");
    gtk_widget_add_css_class(ph, "dim-label");
    gtk_widget_set_margin_top(ph, 24);
    gtk_widget_set_margin_bottom(ph, 24);
    gtk_list_box_set_placeholder(self->patch_list, ph);
}
