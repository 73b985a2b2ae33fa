/* StemModelPage (see stem-model-page.h). */
#include "stem-model-page.h"
#include "editdb/editdb.h"
#include "engine/checkpoint.h"
#include "engine/tokenizer.h"

#include <json-glib/json-glib.h>
#include <string.h>

struct _StemModelPage {
    GtkWidget parent_instance;
    StemSession *session;
    GHashTable *values;          /* key -> value shown in the card */
    int grid_rows;
    GtkRecentManager *recent;

    /* template */
    GtkWidget *empty_box, *card_box;
    GtkLabel *name_label, *kind_label;
    GtkGrid *card_grid;
    GtkListBox *recent_list;
    GtkLabel *recent_title;
};

G_DEFINE_FINAL_TYPE(StemModelPage, stem_model_page, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_SESSION, N_PROPS };
static GParamSpec *properties[N_PROPS];

const char *stem_model_page_get_value(StemModelPage *self, const char *key)
{
    return g_hash_table_lookup(self->values, key);
}

static void add_row(StemModelPage *self, const char *key, const char *title, const char *value, gboolean mono)
{
    GtkWidget *k = gtk_label_new(title);
    gtk_label_set_xalign(GTK_LABEL(k), 1);
    gtk_label_set_yalign(GTK_LABEL(k), 0);
    gtk_widget_add_css_class(k, "dim-label");
    GtkWidget *v = gtk_label_new(value);
    gtk_label_set_xalign(GTK_LABEL(v), 0);
    if (!strcmp(key, "path") || !strcmp(key, "database")) {
        /* long paths have no spaces to wrap at: they would widen the window */
        gtk_label_set_ellipsize(GTK_LABEL(v), PANGO_ELLIPSIZE_MIDDLE);
        gtk_widget_set_tooltip_text(v, value);
    } else {
        gtk_label_set_wrap(GTK_LABEL(v), TRUE);
        gtk_label_set_wrap_mode(GTK_LABEL(v), PANGO_WRAP_WORD_CHAR);
    }
    gtk_label_set_selectable(GTK_LABEL(v), TRUE);
    gtk_widget_set_hexpand(v, TRUE);
    if (mono) gtk_widget_add_css_class(v, "monospace");
    gtk_grid_attach(self->card_grid, k, 0, self->grid_rows, 1, 1);
    gtk_grid_attach(self->card_grid, v, 1, self->grid_rows, 1, 1);
    g_object_set_data(G_OBJECT(v), "key", (gpointer)key);
    self->grid_rows++;
    g_hash_table_replace(self->values, g_strdup(key), g_strdup(value));
}

static void set_row(StemModelPage *self, const char *key, const char *value)
{
    for (GtkWidget *c = gtk_widget_get_first_child(GTK_WIDGET(self->card_grid)); c; c = gtk_widget_get_next_sibling(c))
        if (!g_strcmp0(g_object_get_data(G_OBJECT(c), "key"), key)) gtk_label_set_text(GTK_LABEL(c), value);
    g_hash_table_replace(self->values, g_strdup(key), g_strdup(value));
}

static char *human(double v)
{
    if (v >= 1e9) return g_strdup_printf("%.2f G", v / 1e9);
    if (v >= 1e6) return g_strdup_printf("%.2f M", v / 1e6);
    if (v >= 1e3) return g_strdup_printf("%.1f k", v / 1e3);
    return g_strdup_printf("%.0f", v);
}

/* ------------------------------------------------------------------ edits applied */

typedef struct {
    int total, applied;
    char *last;
} EditCount;

static void edit_count_free(gpointer p)
{
    EditCount *c = p;
    g_free(c->last);
    g_free(c);
}

static gpointer count_job(StemSessionCtx *ctx, gpointer data, GCancellable *c, GError **error)
{
    StemEditDb *db = stem_session_ctx_db(ctx);
    EditCount *n = g_new0(EditCount, 1);
    if (!db) return n;
    GPtrArray *list = stem_editdb_list(db, error);
    if (!list) {
        g_free(n);
        return NULL;
    }
    gint64 best = -1;
    for (guint i = 0; i < list->len; i++) {
        StemPatchSet *p = list->pdata[i];
        n->total++;
        if (p->applied) {
            n->applied++;
            if (p->apply_seq > best) {
                best = p->apply_seq;
                g_free(n->last);
                n->last = stem_recipe_describe(&p->recipe);
            }
        }
    }
    g_ptr_array_unref(list);
    return n;
}

static void on_counted(GObject *src, GAsyncResult *res, gpointer user)
{
    GError *e = NULL;
    StemModelPage *self = user;
    EditCount *n = stem_session_run_finish(STEM_SESSION(src), res, &e);
    if (!n) {
        if (!stem_error_is_cancelled(e) && !g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED))
            stem_session_report(STEM_SESSION(src), "Cannot read the edit database", e);
        g_clear_error(&e);
        g_object_unref(self);
        return;
    }
    char *s = n->applied ? g_strdup_printf("%d applied of %d patch sets (latest: %s)", n->applied, n->total, n->last)
                         : g_strdup_printf("none applied (%d patch sets in the database)", n->total);
    if (self->session) set_row(self, "edits", s);   /* NULL once disposed */
    g_free(s);
    edit_count_free(n);
    g_object_unref(self);
}

static void refresh_edits(StemModelPage *self)
{
    if (!stem_session_has_model(self->session)) return;
    stem_session_run(self->session, "model-page-edits", TRUE, count_job, NULL, NULL, edit_count_free, NULL,
                     on_counted, g_object_ref(self));
}

/* ------------------------------------------------------------------ card */

/* {"program":"stem 0.1.0","preset":"tiny",...} as "program stem 0.1.0 · preset tiny · …"
 * (JSON without spaces would not wrap); other text as it is */
static char *provenance_text(const char *prov)
{
    JsonNode *n = json_from_string(prov, NULL);
    if (!n || !JSON_NODE_HOLDS_OBJECT(n)) {
        if (n) json_node_unref(n);
        return g_strdup(prov);
    }
    GString *s = g_string_new(NULL);
    JsonObject *o = json_node_get_object(n);
    GList *members = json_object_get_members(o);
    for (GList *l = members; l; l = l->next) {
        JsonNode *v = json_object_get_member(o, l->data);
        char *val = NULL;
        if (JSON_NODE_HOLDS_VALUE(v)) {
            GType t = json_node_get_value_type(v);
            if (t == G_TYPE_STRING) val = g_strdup(json_node_get_string(v));
            else if (t == G_TYPE_DOUBLE) val = g_strdup_printf("%g", json_node_get_double(v));
            else if (t == G_TYPE_INT64) val = g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(v));
            else if (t == G_TYPE_BOOLEAN) val = g_strdup(json_node_get_boolean(v) ? "yes" : "no");
        }
        if (!val) val = json_to_string(v, FALSE);
        g_string_append_printf(s, "%s%s %s", s->len ? " · " : "", (const char *)l->data, val);
        g_free(val);
    }
    g_list_free(members);
    json_node_unref(n);
    return g_string_free(s, FALSE);
}

static void refresh_card(StemModelPage *self)
{
    GtkWidget *c;
    while ((c = gtk_widget_get_first_child(GTK_WIDGET(self->card_grid)))) gtk_grid_remove(self->card_grid, c);
    self->grid_rows = 0;
    g_hash_table_remove_all(self->values);
    StemModel *m = self->session ? stem_session_get_model(self->session) : NULL;
    if (!m) {
        gtk_widget_set_visible(self->empty_box, TRUE);
        gtk_widget_set_visible(self->card_box, FALSE);
        return;
    }
    gtk_widget_set_visible(self->empty_box, FALSE);
    gtk_widget_set_visible(self->card_box, TRUE);
    const StemConfig *cfg = &m->cfg;
    const char *path = stem_session_get_model_path(self->session);
    char *base = g_path_get_basename(path);
    gtk_label_set_text(self->name_label, base);
    g_free(base);
    char *layers = stem_config_layers_string(cfg);
    int n_stem = stem_config_n_stem(cfg);
    char *kind = n_stem ? g_strdup_printf("STEM model — %d of %d layers are STEM layers (%s)", n_stem, cfg->n_layers, layers)
                        : g_strdup_printf("Dense model — %d layers, no STEM layer", cfg->n_layers);
    gtk_label_set_text(self->kind_label, kind);

    StemCounts k;
    stem_config_counts(cfg, &k);
    char *s, *a, *b, *t;
    add_row(self, "path", "File", path, FALSE);
    add_row(self, "sha256", "sha256", stem_session_get_model_sha256(self->session), TRUE);
    s = g_strdup_printf("vocab %d · width %d · %d layers · %d heads (%d key/value) · FFN %d · context %d", cfg->vocab,
                        cfg->dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->ffn_dim, cfg->seq_len);
    add_row(self, "config", "Configuration", s, FALSE);
    g_free(s);
    add_row(self, "stem-layers", "STEM layers", n_stem ? layers : "none (dense)", FALSE);
    add_row(self, "tables", "Tables", n_stem ? (stem_tables_dtype(m->tables) == STEM_TABLE_BF16 ? "bf16" : "fp32") : "—",
            FALSE);
    a = human((double)k.total);
    b = human((double)k.tables);
    t = human((double)k.active_per_token);
    s = g_strdup_printf("%s total · %s in STEM tables · %s active per token", a, b, t);
    add_row(self, "parameters", "Parameters", s, FALSE);
    g_free(s); g_free(a); g_free(b); g_free(t);
    a = human(k.flops_per_token);
    b = human(k.dense_flops_per_token);
    s = g_strdup_printf("%sFLOP (dense equivalent %sFLOP: %.1f %% saved)", a, b,
                        100.0 * (1.0 - k.flops_per_token / MAX(k.dense_flops_per_token, 1)));
    add_row(self, "flops", "FLOPs per token", s, FALSE);
    g_free(s); g_free(a); g_free(b);
    s = g_strdup_printf("%d tokens (byte-level BPE)", stem_tokenizer_vocab_size(m->tok));
    add_row(self, "tokenizer", "Tokenizer", s, FALSE);
    g_free(s);
    const char *prov = stem_model_metadata(m, "provenance");
    if (prov) {
        char *p = provenance_text(prov);
        add_row(self, "provenance", "Provenance", p, FALSE);
        g_free(p);
    }
    add_row(self, "edits", "Edits", "…", FALSE);
    const char *dbp = stem_session_get_db_path(self->session);
    const char *dberr = stem_session_get_db_error(self->session);
    add_row(self, "database", "Edit database", dberr ? dberr : dbp ? dbp : "—", FALSE);
    g_free(kind);
    g_free(layers);
    refresh_edits(self);
}

/* ------------------------------------------------------------------ recent files */

static void refresh_recent(StemModelPage *self)
{
    GtkWidget *c;
    while ((c = gtk_widget_get_first_child(GTK_WIDGET(self->recent_list)))) gtk_list_box_remove(self->recent_list, c);
    GList *items = gtk_recent_manager_get_items(self->recent);
    int n = 0;
    for (GList *l = items; l && n < 8; l = l->next) {
        GtkRecentInfo *info = l->data;
        const char *uri = gtk_recent_info_get_uri(info);
        if (!g_str_has_suffix(uri, ".safetensors") || !gtk_recent_info_has_application(info, "STEM Workbench")) continue;
        char *path = g_filename_from_uri(uri, NULL, NULL);
        if (!path || !g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
            g_free(path);
            continue;
        }
        GtkWidget *row = gtk_list_box_row_new();
        GtkWidget *box = gtk_box_new(GTK_ORIENTATION_VERTICAL, 2);
        gtk_widget_set_margin_start(box, 12);
        gtk_widget_set_margin_end(box, 12);
        gtk_widget_set_margin_top(box, 8);
        gtk_widget_set_margin_bottom(box, 8);
        char *base = g_path_get_basename(path);
        GtkWidget *t = gtk_label_new(base);
        gtk_label_set_xalign(GTK_LABEL(t), 0);
        GtkWidget *p = gtk_label_new(path);
        gtk_label_set_xalign(GTK_LABEL(p), 0);
        gtk_label_set_ellipsize(GTK_LABEL(p), PANGO_ELLIPSIZE_MIDDLE);
        gtk_widget_add_css_class(p, "dim-label");
        gtk_widget_add_css_class(p, "caption");
        gtk_box_append(GTK_BOX(box), t);
        gtk_box_append(GTK_BOX(box), p);
        gtk_list_box_row_set_child(GTK_LIST_BOX_ROW(row), box);
        g_object_set_data_full(G_OBJECT(row), "path", path, g_free);
        gtk_list_box_append(self->recent_list, row);
        g_free(base);
        n++;
    }
    g_list_free_full(items, (GDestroyNotify)gtk_recent_info_unref);
    gtk_widget_set_visible(GTK_WIDGET(self->recent_list), n > 0);
    gtk_widget_set_visible(GTK_WIDGET(self->recent_title), n > 0);
}

static void on_recent_activated(GtkListBox *box, GtkListBoxRow *row, StemModelPage *self)
{
    const char *path = g_object_get_data(G_OBJECT(row), "path");
    if (path && self->session) stem_session_open_async(self->session, path, NULL, NULL, NULL, NULL);
}

static void on_recent_changed(GtkRecentManager *m, StemModelPage *self)
{
    refresh_recent(self);
}

/* ------------------------------------------------------------------ session */

static void on_model_changed(StemSession *s, StemModelPage *self)
{
    refresh_card(self);
}

static void on_edits_changed(StemSession *s, StemModelPage *self)
{
    refresh_edits(self);
}

static void set_session(StemModelPage *self, StemSession *session)
{
    if (self->session == session) return;
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_set_object(&self->session, session);
    if (session) {
        g_signal_connect_object(session, "model-changed", G_CALLBACK(on_model_changed), self, 0);
        g_signal_connect_object(session, "edits-changed", G_CALLBACK(on_edits_changed), self, 0);
    }
    refresh_card(self);
}

static void stem_model_page_dispose(GObject *object)
{
    StemModelPage *self = STEM_MODEL_PAGE(object);
    if (self->recent) g_signal_handlers_disconnect_by_data(self->recent, self);
    self->recent = NULL;
    if (self->session) g_signal_handlers_disconnect_by_data(self->session, self);
    g_clear_object(&self->session);
    g_clear_pointer(&self->values, g_hash_table_unref);
    gtk_widget_dispose_template(GTK_WIDGET(object), STEM_TYPE_MODEL_PAGE);
    /* the template's root has no id: unparent it ourselves */
    GtkWidget *child;
    while ((child = gtk_widget_get_first_child(GTK_WIDGET(object)))) gtk_widget_unparent(child);
    G_OBJECT_CLASS(stem_model_page_parent_class)->dispose(object);
}

static void stem_model_page_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemModelPage *self = STEM_MODEL_PAGE(object);
    switch (id) {
    case PROP_SESSION: g_value_set_object(value, self->session); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_model_page_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemModelPage *self = STEM_MODEL_PAGE(object);
    switch (id) {
    case PROP_SESSION: set_session(self, g_value_get_object(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_model_page_class_init(StemModelPageClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    oc->dispose = stem_model_page_dispose;
    oc->get_property = stem_model_page_get_property;
    oc->set_property = stem_model_page_set_property;
    properties[PROP_SESSION] = g_param_spec_object("session", NULL, NULL, STEM_TYPE_SESSION,
                                                   G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    gtk_widget_class_set_layout_manager_type(wc, GTK_TYPE_BIN_LAYOUT);
    gtk_widget_class_set_template_from_resource(wc, "/org/stemworkbench/Workbench/stem-model-page.ui");
    gtk_widget_class_bind_template_child(wc, StemModelPage, empty_box);
    gtk_widget_class_bind_template_child(wc, StemModelPage, card_box);
    gtk_widget_class_bind_template_child(wc, StemModelPage, name_label);
    gtk_widget_class_bind_template_child(wc, StemModelPage, kind_label);
    gtk_widget_class_bind_template_child(wc, StemModelPage, card_grid);
    gtk_widget_class_bind_template_child(wc, StemModelPage, recent_list);
    gtk_widget_class_bind_template_child(wc, StemModelPage, recent_title);
    gtk_widget_class_bind_template_callback(wc, on_recent_activated);
}

static void stem_model_page_init(StemModelPage *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
    self->values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    self->recent = gtk_recent_manager_get_default();
    g_signal_connect_object(self->recent, "changed", G_CALLBACK(on_recent_changed), self, 0);
    refresh_recent(self);
}
