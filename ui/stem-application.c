/* StemApplication (see stem-application.h). */
#include "stem-application.h"
#include "stem-window.h"
#include "stem-state.h"
#include "stem-selftest.h"

struct _StemApplication {
    GtkApplication parent_instance;
    char *db_path;               /* --db, for the model given on the command line */
    char *selftest_dir;          /* --self-test */
    int selftest_status;
    char *scheme;                /* system | light | dark */
    gboolean system_dark;        /* what the desktop says (settings portal) */
    GDBusProxy *portal;
};

G_DEFINE_FINAL_TYPE(StemApplication, stem_application, GTK_TYPE_APPLICATION)

enum { PROP_0, PROP_COLOR_SCHEME, PROP_DARK, N_PROPS };
static GParamSpec *properties[N_PROPS];

/* ------------------------------------------------------------------ colour scheme */

gboolean stem_application_get_dark(StemApplication *self)
{
    if (!g_strcmp0(self->scheme, "dark")) return TRUE;
    if (!g_strcmp0(self->scheme, "light")) return FALSE;
    return self->system_dark;
}

static void scheme_apply(StemApplication *self)
{
    GtkSettings *s = gtk_settings_get_default();
    if (!s) return;
    gboolean dark = stem_application_get_dark(self), cur = FALSE;
    g_object_get(s, "gtk-application-prefer-dark-theme", &cur, NULL);
    if (cur != dark) g_object_set(s, "gtk-application-prefer-dark-theme", dark, NULL);
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_DARK]);
}

const char *stem_application_get_color_scheme(StemApplication *self) { return self->scheme; }

void stem_application_set_color_scheme(StemApplication *self, const char *scheme)
{
    if (g_strcmp0(scheme, "light") && g_strcmp0(scheme, "dark")) scheme = "system";
    if (!g_strcmp0(scheme, self->scheme)) return;
    g_free(self->scheme);
    self->scheme = g_strdup(scheme);
    stem_state_set_string("window", "color-scheme", scheme);
    scheme_apply(self);
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_COLOR_SCHEME]);
}

/* org.freedesktop.appearance color-scheme: 0 no preference, 1 prefer dark, 2 prefer light */
static void portal_take_value(StemApplication *self, GVariant *v)
{
    while (v && g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(v);
        g_variant_unref(v);
        v = inner;
    }
    if (v && g_variant_is_of_type(v, G_VARIANT_TYPE_UINT32)) {
        self->system_dark = g_variant_get_uint32(v) == 1;
        scheme_apply(self);
    }
    if (v) g_variant_unref(v);
}

static void on_portal_read(GObject *src, GAsyncResult *res, gpointer user)
{
    GVariant *ret = g_dbus_proxy_call_finish(G_DBUS_PROXY(src), res, NULL);
    if (!ret) {   /* no portal, or an old one without the key: stay light */
        g_object_unref(user);
        return;
    }
    GVariant *v = NULL;
    g_variant_get(ret, "(v)", &v);
    g_variant_unref(ret);
    portal_take_value(STEM_APPLICATION(user), v);
    g_object_unref(user);
}

static void on_portal_signal(GDBusProxy *proxy, const char *sender, const char *signal, GVariant *params,
                             StemApplication *self)
{
    if (g_strcmp0(signal, "SettingChanged") || !g_variant_is_of_type(params, G_VARIANT_TYPE("(ssv)"))) return;
    const char *ns = NULL, *key = NULL;
    GVariant *v = NULL;
    g_variant_get(params, "(&s&sv)", &ns, &key, &v);
    if (!g_strcmp0(ns, "org.freedesktop.appearance") && !g_strcmp0(key, "color-scheme")) portal_take_value(self, v);
    else if (v) g_variant_unref(v);
}

static void on_portal_proxy(GObject *src, GAsyncResult *res, gpointer user)
{
    StemApplication *self = user;
    GDBusProxy *proxy = g_dbus_proxy_new_for_bus_finish(res, NULL);
    if (proxy) {
        self->portal = proxy;
        g_signal_connect_object(proxy, "g-signal", G_CALLBACK(on_portal_signal), self, 0);
        g_dbus_proxy_call(proxy, "Read", g_variant_new("(ss)", "org.freedesktop.appearance", "color-scheme"),
                          G_DBUS_CALL_FLAGS_NONE, 2000, NULL, on_portal_read, g_object_ref(self));
    }
    g_object_unref(self);
}

static void follow_system_scheme(StemApplication *self)
{
    /* GTK 4.8 without libadwaita does not follow the desktop's dark style by
     * itself: ask the settings portal, as libadwaita does */
    if (g_getenv("DBUS_SESSION_BUS_ADDRESS") == NULL) return;   /* never autolaunch a bus for this */
    g_dbus_proxy_new_for_bus(G_BUS_TYPE_SESSION, G_DBUS_PROXY_FLAGS_DO_NOT_LOAD_PROPERTIES, NULL,
                             "org.freedesktop.portal.Desktop", "/org/freedesktop/portal/desktop",
                             "org.freedesktop.portal.Settings", NULL, on_portal_proxy, g_object_ref(self));
}

/* ------------------------------------------------------------------ actions */

static void quit_activated(GSimpleAction *a, GVariant *p, gpointer user)
{
    GtkApplication *app = user;
    /* close windows so that each saves its size */
    GList *windows = g_list_copy(gtk_application_get_windows(app));
    for (GList *l = windows; l; l = l->next) gtk_window_close(l->data);
    g_list_free(windows);
    g_application_quit(G_APPLICATION(app));
}

static void about_activated(GSimpleAction *a, GVariant *p, gpointer user)
{
    GtkWindow *parent = gtk_application_get_active_window(GTK_APPLICATION(user));
    const char *authors[] = { "STEM Workbench contributors", NULL };
    gtk_show_about_dialog(parent, "program-name", "STEM Workbench", "logo-icon-name", STEM_APPLICATION_ID,
                          "version", STEM_VERSION, "license-type", GTK_LICENSE_MIT_X11, "authors", authors,
                          "comments", "Train, run, explain and edit STEM transformers", NULL);
}

static void scheme_changed(GSimpleAction *a, GVariant *v, gpointer user)
{
    stem_application_set_color_scheme(STEM_APPLICATION(user), g_variant_get_string(v, NULL));
    g_simple_action_set_state(a, v);
}

/* ------------------------------------------------------------------ GApplication */

static StemWindow *new_window(StemApplication *self, gboolean with_model)
{
    StemWindow *win = stem_window_new(self);
    if (self->selftest_dir) stem_selftest_start(win, self->selftest_dir, with_model, &self->selftest_status);
    gtk_window_present(GTK_WINDOW(win));
    return win;
}

static void stem_application_activate(GApplication *app)
{
    StemApplication *self = STEM_APPLICATION(app);
    GtkWindow *win = gtk_application_get_active_window(GTK_APPLICATION(app));
    if (win) {
        gtk_window_present(win);
        return;
    }
    StemWindow *w = new_window(self, FALSE);
    if (self->selftest_dir) return;   /* the script opens what it needs */
    /* the last model, else the default model when it was trained already */
    char *last = stem_state_get_string("model", "last");
    const char *path = last && g_file_test(last, G_FILE_TEST_IS_REGULAR) ? last
                     : g_file_test(stem_default_model_path(), G_FILE_TEST_IS_REGULAR) ? stem_default_model_path()
                     : NULL;
    if (path) stem_window_open_model(w, path, NULL);
    g_free(last);
}

static void stem_application_open(GApplication *app, GFile **files, int n_files, const char *hint)
{
    StemApplication *self = STEM_APPLICATION(app);
    for (int i = 0; i < n_files; i++) {
        StemWindow *w = new_window(self, TRUE);
        char *path = g_file_get_path(files[i]);
        if (path) stem_window_open_model(w, path, i == 0 ? self->db_path : NULL);
        g_free(path);
    }
}

static void stem_application_startup(GApplication *app)
{
    StemApplication *self = STEM_APPLICATION(app);
    G_APPLICATION_CLASS(stem_application_parent_class)->startup(app);

    GtkCssProvider *css = gtk_css_provider_new();
    gtk_css_provider_load_from_resource(css, "/org/stemworkbench/Workbench/style.css");
    gtk_style_context_add_provider_for_display(gdk_display_get_default(), GTK_STYLE_PROVIDER(css),
                                               GTK_STYLE_PROVIDER_PRIORITY_APPLICATION);
    g_object_unref(css);
    gtk_icon_theme_add_resource_path(gtk_icon_theme_get_for_display(gdk_display_get_default()),
                                     "/org/stemworkbench/Workbench/icons");
    gtk_window_set_default_icon_name(STEM_APPLICATION_ID);

    char *saved = stem_state_get_string("window", "color-scheme");
    const char *env = g_getenv("STEM_WORKBENCH_COLOR_SCHEME");
    if (!self->scheme) self->scheme = g_strdup(env && *env ? env : saved ? saved : "system");
    g_free(saved);
    const GActionEntry entries[] = {
        { .name = "quit", .activate = quit_activated },
        { .name = "about", .activate = about_activated },
        { .name = "color-scheme", .parameter_type = "s", .state = "'system'", .change_state = scheme_changed },
    };
    g_action_map_add_action_entries(G_ACTION_MAP(app), entries, G_N_ELEMENTS(entries), app);
    GAction *sa = g_action_map_lookup_action(G_ACTION_MAP(app), "color-scheme");
    g_simple_action_set_state(G_SIMPLE_ACTION(sa), g_variant_new_string(self->scheme));

    struct { const char *action; const char *accels[3]; } accels[] = {
        { "app.quit", { "<Control>q", NULL } },
        { "win.open", { "<Control>o", NULL } },
        { "win.revert-last", { "<Control>z", NULL } },
        { "win.reapply-last", { "<Control><Shift>z", NULL } },
        { "win.export-report", { "<Control>e", NULL } },
        { "win.show-page('model')", { "<Alt>1", NULL } },
        { "win.show-page('train')", { "<Alt>2", NULL } },
        { "win.show-page('predict')", { "<Alt>3", NULL } },
        { "win.show-page('geometry')", { "<Alt>4", NULL } },
        { "win.show-page('edit')", { "<Alt>5", NULL } },
        { "win.show-page('history')", { "<Alt>6", NULL } },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(accels); i++)
        gtk_application_set_accels_for_action(GTK_APPLICATION(app), accels[i].action, accels[i].accels);

    scheme_apply(self);
    if (!self->selftest_dir) follow_system_scheme(self);   /* screenshots do not depend on the desktop */
}

static int stem_application_handle_local_options(GApplication *app, GVariantDict *options)
{
    StemApplication *self = STEM_APPLICATION(app);
    const char *s = NULL;
    if (g_variant_dict_lookup(options, "db", "^&ay", &s)) self->db_path = g_canonicalize_filename(s, NULL);
    if (g_variant_dict_lookup(options, "self-test", "^&ay", &s)) self->selftest_dir = g_canonicalize_filename(s, NULL);
    if (g_variant_dict_lookup(options, "color-scheme", "&s", &s)) {
        if (g_strcmp0(s, "system") && g_strcmp0(s, "light") && g_strcmp0(s, "dark")) {
            g_printerr("stem-workbench: --color-scheme must be system, light or dark\n");
            return 2;
        }
        self->scheme = g_strdup(s);
    }
    if (g_variant_dict_contains(options, "version")) {
        g_print("stem-workbench %s\n", STEM_VERSION);
        return 0;
    }
    /* these only make sense in this process, not forwarded to a running one */
    if (self->db_path || self->selftest_dir)
        g_application_set_flags(app, g_application_get_flags(app) | G_APPLICATION_NON_UNIQUE);
    return -1;
}

StemApplication *stem_application_new(void)
{
    return g_object_new(STEM_TYPE_APPLICATION, "application-id", STEM_APPLICATION_ID, "flags",
                        G_APPLICATION_HANDLES_OPEN, NULL);
}

int stem_application_run(int argc, char **argv)
{
    g_set_application_name("STEM Workbench");
    StemApplication *app = stem_application_new();
    int status = g_application_run(G_APPLICATION(app), argc, argv);
    if (status == 0 && app->selftest_dir) status = app->selftest_status;
    g_object_unref(app);
    return status;
}

static void stem_application_dispose(GObject *object)
{
    StemApplication *self = STEM_APPLICATION(object);
    g_clear_object(&self->portal);
    G_OBJECT_CLASS(stem_application_parent_class)->dispose(object);
}

static void stem_application_finalize(GObject *object)
{
    StemApplication *self = STEM_APPLICATION(object);
    g_free(self->db_path);
    g_free(self->selftest_dir);
    g_free(self->scheme);
    G_OBJECT_CLASS(stem_application_parent_class)->finalize(object);
}

static void stem_application_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemApplication *self = STEM_APPLICATION(object);
    switch (id) {
    case PROP_COLOR_SCHEME: g_value_set_string(value, self->scheme); break;
    case PROP_DARK: g_value_set_boolean(value, stem_application_get_dark(self)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_application_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemApplication *self = STEM_APPLICATION(object);
    switch (id) {
    case PROP_COLOR_SCHEME: stem_application_set_color_scheme(self, g_value_get_string(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_application_class_init(StemApplicationClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GApplicationClass *ac = G_APPLICATION_CLASS(klass);
    oc->dispose = stem_application_dispose;
    oc->finalize = stem_application_finalize;
    oc->get_property = stem_application_get_property;
    oc->set_property = stem_application_set_property;
    ac->startup = stem_application_startup;
    ac->activate = stem_application_activate;
    ac->open = stem_application_open;
    ac->handle_local_options = stem_application_handle_local_options;

    properties[PROP_COLOR_SCHEME] = g_param_spec_string("color-scheme", NULL, NULL, "system",
                                                        G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
    properties[PROP_DARK] = g_param_spec_boolean("dark", NULL, NULL, FALSE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);
}

static void stem_application_init(StemApplication *self)
{
    const GOptionEntry options[] = {
        { "db", 0, 0, G_OPTION_ARG_FILENAME, NULL, "Edit database for MODEL (default: one per model in the data dir)", "FILE" },
        { "color-scheme", 0, 0, G_OPTION_ARG_STRING, NULL, "system (default), light or dark", "SCHEME" },
        { "self-test", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, NULL,
          "Drive the window through a scripted session, save screenshots into DIR, exit with the result", "DIR" },
        { "version", 0, 0, G_OPTION_ARG_NONE, NULL, "Print the version", NULL },
        { NULL }
    };
    g_application_add_main_option_entries(G_APPLICATION(self), options);
    g_application_set_option_context_parameter_string(G_APPLICATION(self), "[MODEL]");
    g_application_set_option_context_summary(G_APPLICATION(self),
        "Explore, edit and train STEM transformers. Opens MODEL, else the last model, else the default one.");
}
