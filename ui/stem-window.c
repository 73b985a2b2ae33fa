/* StemWindow (see stem-window.h). */
#include "stem-window.h"
#include "stem-edit-page.h"
#include "stem-geometry-page.h"
#include "stem-history-page.h"
#include "stem-model-page.h"
#include "stem-predict-page.h"
#include "stem-state.h"
#include "stem-train-page.h"

struct _StemWindow {
    GtkApplicationWindow parent_instance;

    StemSession *session;
    guint toast_timeout;

    /* template */
    GtkLabel *subtitle_label;
    GtkSpinner *spinner;
    GtkWidget *stop_button;
    guint stop_timeout;
    GtkRevealer *banner_revealer;
    GtkLabel *banner_label;
    GtkRevealer *toast_revealer;
    GtkLabel *toast_label;
    GtkStack *stack;
    GtkWidget *model_page, *train_page, *predict_page, *geometry_page, *edit_page, *history_page;
};

G_DEFINE_FINAL_TYPE(StemWindow, stem_window, GTK_TYPE_APPLICATION_WINDOW)

enum { PROP_0, PROP_SESSION, N_PROPS };
static GParamSpec *properties[N_PROPS];

StemSession *stem_window_get_session(StemWindow *self) { return self->session; }

/* ------------------------------------------------------------------ messages */

void stem_window_show_error(StemWindow *self, const char *message)
{
    gtk_label_set_text(self->banner_label, message);
    gtk_revealer_set_reveal_child(self->banner_revealer, TRUE);
    g_message("error shown: %s", message);
}

const char *stem_window_get_error(StemWindow *self)
{
    return gtk_revealer_get_reveal_child(self->banner_revealer) ? gtk_label_get_text(self->banner_label) : NULL;
}

static gboolean toast_hide(gpointer data)
{
    StemWindow *self = data;
    self->toast_timeout = 0;
    gtk_revealer_set_reveal_child(self->toast_revealer, FALSE);
    return G_SOURCE_REMOVE;
}

void stem_window_hide_toast(StemWindow *self)
{
    g_clear_handle_id(&self->toast_timeout, g_source_remove);
    gtk_revealer_set_reveal_child(self->toast_revealer, FALSE);
}

void stem_window_toast(StemWindow *self, const char *message)
{
    gtk_label_set_text(self->toast_label, message);
    gtk_revealer_set_reveal_child(self->toast_revealer, TRUE);
    g_clear_handle_id(&self->toast_timeout, g_source_remove);
    self->toast_timeout = g_timeout_add_seconds(4, toast_hide, self);
}

static void on_session_error(StemSession *s, const char *message, StemWindow *self)
{
    stem_window_show_error(self, message);
}

static void on_session_toast(StemSession *s, const char *message, StemWindow *self)
{
    stem_window_toast(self, message);
}

/* ------------------------------------------------------------------ model */

static void update_subtitle(StemWindow *self)
{
    const char *path = stem_session_get_model_path(self->session);
    if (path) {
        char *base = g_path_get_basename(path);
        gtk_label_set_text(self->subtitle_label, base);
        gtk_widget_set_tooltip_text(GTK_WIDGET(self->subtitle_label), path);
        g_free(base);
    } else {
        gtk_label_set_text(self->subtitle_label, "No model");
        gtk_widget_set_tooltip_text(GTK_WIDGET(self->subtitle_label), NULL);
    }
}

static void on_model_changed(StemSession *s, StemWindow *self)
{
    update_subtitle(self);
    const char *path = stem_session_get_model_path(s);
    if (!path) return;
    /* a model that opened is the one to reopen next time, and a recent file */
    stem_state_set_string("model", "last", path);
    char *uri = g_filename_to_uri(path, NULL, NULL);
    if (uri) {
        GtkRecentData rd = { .display_name = NULL, .mime_type = (char *)"application/octet-stream",
                             .app_name = (char *)"STEM Workbench", .app_exec = (char *)"stem-workbench %f" };
        gtk_recent_manager_add_full(gtk_recent_manager_get_default(), uri, &rd);
        g_free(uri);
    }
}

static gboolean show_stop(gpointer data)
{
    StemWindow *self = data;
    self->stop_timeout = 0;
    gtk_widget_set_visible(self->stop_button, TRUE);
    return G_SOURCE_REMOVE;
}

static void on_busy(StemSession *s, GParamSpec *pspec, StemWindow *self)
{
    gboolean busy = stem_session_get_busy(s);
    gtk_spinner_set_spinning(self->spinner, busy);
    /* the stop button only for work that lasts: previews come and go in milliseconds */
    g_clear_handle_id(&self->stop_timeout, g_source_remove);
    if (busy) self->stop_timeout = g_timeout_add(700, show_stop, self);
    else gtk_widget_set_visible(self->stop_button, FALSE);
}

static void on_opened(GObject *src, GAsyncResult *res, gpointer user)
{
    StemWindow *self = user;
    /* errors are in the banner already (session error signal) */
    stem_session_open_finish(STEM_SESSION(src), res, NULL);
    if (self->subtitle_label) update_subtitle(self);
    g_object_unref(self);
}

void stem_window_open_model(StemWindow *self, const char *path, const char *db_path)
{
    gtk_label_set_text(self->subtitle_label, "Opening…");
    gtk_revealer_set_reveal_child(self->banner_revealer, FALSE);
    stem_session_open_async(self->session, path, db_path, NULL, on_opened, g_object_ref(self));
}

/* ------------------------------------------------------------------ pages */

void stem_window_show_page(StemWindow *self, const char *name)
{
    if (gtk_stack_get_child_by_name(self->stack, name)) gtk_stack_set_visible_child_name(self->stack, name);
}

GtkWidget *stem_window_get_page(StemWindow *self, const char *name)
{
    return gtk_stack_get_child_by_name(self->stack, name);
}

const char *stem_window_get_visible_page(StemWindow *self)
{
    return gtk_stack_get_visible_child_name(self->stack);
}

/* ------------------------------------------------------------------ actions */

static void on_open_response(GtkNativeDialog *dialog, int response, StemWindow *self)
{
    if (response == GTK_RESPONSE_ACCEPT) {
        GFile *f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(dialog));
        char *path = f ? g_file_get_path(f) : NULL;
        if (path) stem_window_open_model(self, path, NULL);
        g_free(path);
        g_clear_object(&f);
    }
    g_object_unref(dialog);
}

static void open_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemWindow *self = STEM_WINDOW(widget);
    GtkFileChooserNative *d = gtk_file_chooser_native_new("Open a Model", GTK_WINDOW(self),
                                                          GTK_FILE_CHOOSER_ACTION_OPEN, "_Open", "_Cancel");
    GtkFileFilter *ff = gtk_file_filter_new();
    gtk_file_filter_set_name(ff, "Models (*.safetensors)");
    gtk_file_filter_add_pattern(ff, "*.safetensors");
    gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(d), ff);
    g_object_unref(ff);
    GtkFileFilter *all = gtk_file_filter_new();
    gtk_file_filter_set_name(all, "All files");
    gtk_file_filter_add_pattern(all, "*");
    gtk_file_chooser_add_filter(GTK_FILE_CHOOSER(d), all);
    g_object_unref(all);
    const char *cur = stem_session_get_model_path(self->session);
    char *dir = g_path_get_dirname(cur ? cur : stem_default_model_path());
    GFile *df = g_file_new_for_path(dir);
    if (g_file_query_exists(df, NULL)) gtk_file_chooser_set_current_folder(GTK_FILE_CHOOSER(d), df, NULL);
    g_object_unref(df);
    g_free(dir);
    g_signal_connect(d, "response", G_CALLBACK(on_open_response), self);
    gtk_native_dialog_show(GTK_NATIVE_DIALOG(d));
}

static void revert_last_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemWindow *self = STEM_WINDOW(widget);
    stem_history_page_revert_last(STEM_HISTORY_PAGE(self->history_page));
}

static void reapply_last_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemWindow *self = STEM_WINDOW(widget);
    stem_history_page_reapply_last(STEM_HISTORY_PAGE(self->history_page));
}

static void export_report_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemWindow *self = STEM_WINDOW(widget);
    stem_history_page_export_report_dialog(STEM_HISTORY_PAGE(self->history_page));
}

static void show_page_action(GtkWidget *widget, const char *name, GVariant *param)
{
    stem_window_show_page(STEM_WINDOW(widget), g_variant_get_string(param, NULL));
}

static void train_default_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemWindow *self = STEM_WINDOW(widget);
    stem_window_show_page(self, "train");
    stem_train_page_train_default(STEM_TRAIN_PAGE(self->train_page));
}

static void stop_action(GtkWidget *widget, const char *name, GVariant *param)
{
    StemWindow *self = STEM_WINDOW(widget);
    stem_session_cancel_all(self->session);
    stem_window_toast(self, "Stopped");
}

static void dismiss_banner_action(GtkWidget *widget, const char *name, GVariant *param)
{
    gtk_revealer_set_reveal_child(STEM_WINDOW(widget)->banner_revealer, FALSE);
}

/* ------------------------------------------------------------------ drag and drop */

static gboolean on_drop(GtkDropTarget *target, const GValue *value, double x, double y, StemWindow *self)
{
    if (!G_VALUE_HOLDS(value, GDK_TYPE_FILE_LIST)) return FALSE;
    GSList *files = g_value_get_boxed(value);
    if (!files) return FALSE;
    char *path = g_file_get_path(files->data);
    if (!path) {
        stem_window_show_error(self, "Only local model files can be opened");
        return FALSE;
    }
    stem_window_open_model(self, path, NULL);
    g_free(path);
    return TRUE;
}

/* ------------------------------------------------------------------ GObject */

StemWindow *stem_window_new(StemApplication *app)
{
    return g_object_new(STEM_TYPE_WINDOW, "application", app, NULL);
}

static gboolean stem_window_close_request(GtkWindow *window)
{
    /* remember the size (not when maximized: the unmaximized size is what to restore) */
    gboolean max = gtk_window_is_maximized(window);
    stem_state_set_bool("window", "maximized", max);
    if (!max) {
        int w = 0, h = 0;
        gtk_window_get_default_size(window, &w, &h);
        if (w > 0 && h > 0) {
            stem_state_set_int("window", "width", w);
            stem_state_set_int("window", "height", h);
        }
    }
    return GTK_WINDOW_CLASS(stem_window_parent_class)->close_request(window);
}

static void stem_window_dispose(GObject *object)
{
    StemWindow *self = STEM_WINDOW(object);
    g_clear_handle_id(&self->toast_timeout, g_source_remove);
    g_clear_handle_id(&self->stop_timeout, g_source_remove);
    gtk_widget_dispose_template(GTK_WIDGET(self), STEM_TYPE_WINDOW);
    g_clear_object(&self->session);
    G_OBJECT_CLASS(stem_window_parent_class)->dispose(object);
}

static void stem_window_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemWindow *self = STEM_WINDOW(object);
    switch (id) {
    case PROP_SESSION: g_value_set_object(value, self->session); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_window_class_init(StemWindowClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    GtkWindowClass *winc = GTK_WINDOW_CLASS(klass);
    oc->dispose = stem_window_dispose;
    oc->get_property = stem_window_get_property;
    winc->close_request = stem_window_close_request;

    properties[PROP_SESSION] = g_param_spec_object("session", NULL, NULL, STEM_TYPE_SESSION,
                                                   G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    g_type_ensure(STEM_TYPE_MODEL_PAGE);
    g_type_ensure(STEM_TYPE_TRAIN_PAGE);
    g_type_ensure(STEM_TYPE_PREDICT_PAGE);
    g_type_ensure(STEM_TYPE_GEOMETRY_PAGE);
    g_type_ensure(STEM_TYPE_EDIT_PAGE);
    g_type_ensure(STEM_TYPE_HISTORY_PAGE);

    gtk_widget_class_set_template_from_resource(wc, "/org/stemworkbench/Workbench/stem-window.ui");
    gtk_widget_class_bind_template_child(wc, StemWindow, subtitle_label);
    gtk_widget_class_bind_template_child(wc, StemWindow, spinner);
    gtk_widget_class_bind_template_child(wc, StemWindow, stop_button);
    gtk_widget_class_bind_template_child(wc, StemWindow, banner_revealer);
    gtk_widget_class_bind_template_child(wc, StemWindow, banner_label);
    gtk_widget_class_bind_template_child(wc, StemWindow, toast_revealer);
    gtk_widget_class_bind_template_child(wc, StemWindow, toast_label);
    gtk_widget_class_bind_template_child(wc, StemWindow, stack);
    gtk_widget_class_bind_template_child(wc, StemWindow, model_page);
    gtk_widget_class_bind_template_child(wc, StemWindow, train_page);
    gtk_widget_class_bind_template_child(wc, StemWindow, predict_page);
    gtk_widget_class_bind_template_child(wc, StemWindow, geometry_page);
    gtk_widget_class_bind_template_child(wc, StemWindow, edit_page);
    gtk_widget_class_bind_template_child(wc, StemWindow, history_page);

    gtk_widget_class_install_action(wc, "win.open", NULL, open_action);
    gtk_widget_class_install_action(wc, "win.revert-last", NULL, revert_last_action);
    gtk_widget_class_install_action(wc, "win.reapply-last", NULL, reapply_last_action);
    gtk_widget_class_install_action(wc, "win.export-report", NULL, export_report_action);
    gtk_widget_class_install_action(wc, "win.show-page", "s", show_page_action);
    gtk_widget_class_install_action(wc, "win.train-default", NULL, train_default_action);
    gtk_widget_class_install_action(wc, "win.dismiss-banner", NULL, dismiss_banner_action);
    gtk_widget_class_install_action(wc, "win.stop", NULL, stop_action);
}

static void stem_window_init(StemWindow *self)
{
    gtk_widget_init_template(GTK_WIDGET(self));
    self->session = stem_session_new();

    int w = stem_state_get_int("window", "width", 1280), h = stem_state_get_int("window", "height", 820);
    gtk_window_set_default_size(GTK_WINDOW(self), CLAMP(w, 640, 8192), CLAMP(h, 480, 8192));
    if (stem_state_get_bool("window", "maximized", FALSE)) gtk_window_maximize(GTK_WINDOW(self));

    GtkWidget *pages[] = { self->model_page, self->train_page, self->predict_page, self->geometry_page,
                           self->edit_page, self->history_page };
    for (size_t i = 0; i < G_N_ELEMENTS(pages); i++) g_object_set(pages[i], "session", self->session, NULL);

    g_signal_connect_object(self->session, "error", G_CALLBACK(on_session_error), self, 0);
    g_signal_connect_object(self->session, "toast", G_CALLBACK(on_session_toast), self, 0);
    g_signal_connect_object(self->session, "model-changed", G_CALLBACK(on_model_changed), self, 0);
    g_signal_connect_object(self->session, "notify::busy", G_CALLBACK(on_busy), self, 0);

    GtkDropTarget *drop = gtk_drop_target_new(GDK_TYPE_FILE_LIST, GDK_ACTION_COPY);
    g_signal_connect(drop, "drop", G_CALLBACK(on_drop), self);
    gtk_widget_add_controller(GTK_WIDGET(self), GTK_EVENT_CONTROLLER(drop));

    stem_window_show_page(self, "model");
}
