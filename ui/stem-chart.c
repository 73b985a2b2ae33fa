/* StemChart: a viz/ renderer as a widget (see stem-chart.h). */
#include "stem-chart.h"
#include "viz/output.h"

#include <stdarg.h>
#include <string.h>

/* ------------------------------------------------------------------ bag */

typedef struct {
    GDestroyNotify destroy;
    gpointer data;
} BagDestroy;

struct _StemBag {
    GPtrArray *blocks;
    GArray *destroys;            /* BagDestroy */
};

StemBag *stem_bag_new(void)
{
    StemBag *bag = g_new0(StemBag, 1);
    bag->blocks = g_ptr_array_new_with_free_func(g_free);
    bag->destroys = g_array_new(FALSE, FALSE, sizeof(BagDestroy));
    return bag;
}

void stem_bag_add_destroy(StemBag *bag, GDestroyNotify destroy, gpointer data)
{
    BagDestroy d = { destroy, data };
    g_array_append_val(bag->destroys, d);
}

void stem_bag_free(StemBag *bag)
{
    if (!bag) return;
    for (guint i = bag->destroys->len; i-- > 0;) {
        BagDestroy *d = &g_array_index(bag->destroys, BagDestroy, i);
        d->destroy(d->data);
    }
    g_array_unref(bag->destroys);
    g_ptr_array_unref(bag->blocks);
    g_free(bag);
}

gpointer stem_bag_take(StemBag *bag, gpointer mem)
{
    if (mem) g_ptr_array_add(bag->blocks, mem);
    return mem;
}

gpointer stem_bag_alloc0(StemBag *bag, gsize size)
{
    return stem_bag_take(bag, g_malloc0(MAX(size, 1)));
}

char *stem_bag_strdup(StemBag *bag, const char *s)
{
    return s ? stem_bag_take(bag, g_strdup(s)) : NULL;
}

char *stem_bag_printf(StemBag *bag, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return stem_bag_take(bag, s);
}

/* ------------------------------------------------------------------ widget */

struct _StemChart {
    GtkWidget parent_instance;
    VizDrawFn fn;
    const void *data;
    StemBag *bag;
    char *placeholder;
    GtkSettings *settings;       /* watched for the colour scheme */
};

G_DEFINE_FINAL_TYPE(StemChart, stem_chart, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_PLACEHOLDER, PROP_HAS_DATA, N_PROPS };
static GParamSpec *properties[N_PROPS];

enum { SIG_PRESSED, N_SIGNALS };
static guint signals[N_SIGNALS];

gboolean stem_widget_is_dark(GtkWidget *widget)
{
    GtkSettings *s = gtk_widget_get_settings(widget);
    gboolean prefer_dark = FALSE;
    char *theme = NULL;
    g_object_get(s, "gtk-application-prefer-dark-theme", &prefer_dark, "gtk-theme-name", &theme, NULL);
    gboolean dark = prefer_dark || (theme && g_str_has_suffix(theme, "-dark"));
    g_free(theme);
    return dark;
}

const VizTheme *stem_chart_get_theme(StemChart *self)
{
    return stem_widget_is_dark(GTK_WIDGET(self)) ? viz_theme_dark() : viz_theme_light();
}

GtkWidget *stem_chart_new(void)
{
    return g_object_new(STEM_TYPE_CHART, NULL);
}

void stem_chart_set(StemChart *self, VizDrawFn fn, const void *data, StemBag *bag)
{
    g_return_if_fail(STEM_IS_CHART(self));
    gboolean had = self->fn != NULL;
    g_clear_pointer(&self->bag, stem_bag_free);
    self->fn = fn;
    self->data = data;
    self->bag = bag;
    gtk_widget_queue_draw(GTK_WIDGET(self));
    if (had != (fn != NULL)) g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_HAS_DATA]);
}

void stem_chart_set_placeholder(StemChart *self, const char *text)
{
    g_return_if_fail(STEM_IS_CHART(self));
    stem_chart_set(self, NULL, NULL, NULL);
    if (g_strcmp0(text, self->placeholder) == 0) return;
    g_free(self->placeholder);
    self->placeholder = g_strdup(text);
    gtk_widget_queue_draw(GTK_WIDGET(self));
    g_object_notify_by_pspec(G_OBJECT(self), properties[PROP_PLACEHOLDER]);
}

const char *stem_chart_get_placeholder(StemChart *self) { return self->placeholder; }
gboolean stem_chart_has_data(StemChart *self) { return self->fn != NULL; }
const void *stem_chart_get_data(StemChart *self) { return self->data; }

gboolean stem_chart_save(StemChart *self, const char *path, double w, double h, GError **error)
{
    if (!self->fn) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_INITIALIZED, "The chart is empty");
        return FALSE;
    }
    return viz_render_file(path, w, h, 2.0, self->fn, self->data, stem_chart_get_theme(self), error);
}

static void stem_chart_snapshot(GtkWidget *widget, GtkSnapshot *snapshot)
{
    StemChart *self = STEM_CHART(widget);
    int w = gtk_widget_get_width(widget), h = gtk_widget_get_height(widget);
    if (w <= 0 || h <= 0) return;
    const VizTheme *t = stem_chart_get_theme(self);
    cairo_t *cr = gtk_snapshot_append_cairo(snapshot, &GRAPHENE_RECT_INIT(0, 0, w, h));
    if (self->fn) {
        self->fn(cr, self->data, t, w, h);
    } else {
        cairo_set_source_rgba(cr, t->bg.r, t->bg.g, t->bg.b, t->bg.a);
        cairo_paint(cr);
        if (self->placeholder && *self->placeholder)
            viz_text(cr, t, self->placeholder, t->font_size, FALSE, FALSE, w / 2.0, h / 2.0, 0.5, 0.5, w - 24,
                     t->muted, NULL);
    }
    cairo_destroy(cr);
}

static void on_pressed(GtkGestureClick *g, int n_press, double x, double y, StemChart *self)
{
    g_signal_emit(self, signals[SIG_PRESSED], 0, x, y, (double)gtk_widget_get_width(GTK_WIDGET(self)),
                  (double)gtk_widget_get_height(GTK_WIDGET(self)));
}

static void on_scheme_changed(GtkSettings *s, GParamSpec *pspec, StemChart *self)
{
    gtk_widget_queue_draw(GTK_WIDGET(self));
}

static void stem_chart_root(GtkWidget *widget)
{
    StemChart *self = STEM_CHART(widget);
    GTK_WIDGET_CLASS(stem_chart_parent_class)->root(widget);
    GtkSettings *s = gtk_widget_get_settings(widget);
    if (s != self->settings) {
        if (self->settings) g_signal_handlers_disconnect_by_data(self->settings, self);
        g_set_object(&self->settings, s);
        g_signal_connect_object(s, "notify::gtk-application-prefer-dark-theme", G_CALLBACK(on_scheme_changed), self, 0);
        g_signal_connect_object(s, "notify::gtk-theme-name", G_CALLBACK(on_scheme_changed), self, 0);
    }
}

static void stem_chart_dispose(GObject *object)
{
    StemChart *self = STEM_CHART(object);
    if (self->settings) g_signal_handlers_disconnect_by_data(self->settings, self);
    g_clear_object(&self->settings);
    g_clear_pointer(&self->bag, stem_bag_free);
    self->fn = NULL;
    self->data = NULL;
    G_OBJECT_CLASS(stem_chart_parent_class)->dispose(object);
}

static void stem_chart_finalize(GObject *object)
{
    g_free(STEM_CHART(object)->placeholder);
    G_OBJECT_CLASS(stem_chart_parent_class)->finalize(object);
}

static void stem_chart_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
    StemChart *self = STEM_CHART(object);
    switch (id) {
    case PROP_PLACEHOLDER: g_value_set_string(value, self->placeholder); break;
    case PROP_HAS_DATA: g_value_set_boolean(value, self->fn != NULL); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_chart_set_property(GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
    StemChart *self = STEM_CHART(object);
    switch (id) {
    case PROP_PLACEHOLDER: stem_chart_set_placeholder(self, g_value_get_string(value)); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
    }
}

static void stem_chart_class_init(StemChartClass *klass)
{
    GObjectClass *oc = G_OBJECT_CLASS(klass);
    GtkWidgetClass *wc = GTK_WIDGET_CLASS(klass);
    oc->dispose = stem_chart_dispose;
    oc->finalize = stem_chart_finalize;
    oc->get_property = stem_chart_get_property;
    oc->set_property = stem_chart_set_property;
    wc->snapshot = stem_chart_snapshot;
    wc->root = stem_chart_root;

    properties[PROP_PLACEHOLDER] = g_param_spec_string("placeholder", NULL, NULL, NULL,
                                                       G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
    properties[PROP_HAS_DATA] = g_param_spec_boolean("has-data", NULL, NULL, FALSE,
                                                     G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
    g_object_class_install_properties(oc, N_PROPS, properties);

    /* pressed(x, y, width, height): a click, for pages that hit-test their data */
    signals[SIG_PRESSED] = g_signal_new("pressed", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL,
                                        G_TYPE_NONE, 4, G_TYPE_DOUBLE, G_TYPE_DOUBLE, G_TYPE_DOUBLE, G_TYPE_DOUBLE);
    gtk_widget_class_set_css_name(wc, "stemchart");
}

static void stem_chart_init(StemChart *self)
{
    GtkGesture *click = gtk_gesture_click_new();
    g_signal_connect(click, "pressed", G_CALLBACK(on_pressed), self);
    gtk_widget_add_controller(GTK_WIDGET(self), GTK_EVENT_CONTROLLER(click));
    gtk_widget_set_hexpand(GTK_WIDGET(self), TRUE);
    gtk_widget_set_vexpand(GTK_WIDGET(self), TRUE);
    gtk_widget_set_size_request(GTK_WIDGET(self), 200, 160);
}
