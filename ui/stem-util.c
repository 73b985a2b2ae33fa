/* Small helpers shared by the pages (see stem-util.h). */
#include "stem-util.h"
#include "viz/textstats.h"

#include <string.h>

char *stem_token_display(const StemTokenizer *tok, int id)
{
    /* the same labels as the CLI's tables and the reports */
    return tok ? viz_token_label(tok, id) : g_strdup_printf("<%d>", id);
}

char *stem_tokens_display(const StemTokenizer *tok, const char *text, int *n_tokens)
{
    size_t n = 0;
    int32_t *ids = text && *text && tok ? stem_tokenizer_encode(tok, text, strlen(text), &n) : NULL;
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {
        char *t = stem_token_display(tok, ids[i]);
        if (i) g_string_append(s, "\xe2\x94\x82");   /* │ */
        g_string_append(s, t);
        g_free(t);
    }
    g_free(ids);
    if (n_tokens) *n_tokens = (int)n;
    return g_string_free(s, FALSE);
}

void stem_box_clear(GtkWidget *container)
{
    GtkWidget *c;
    while ((c = gtk_widget_get_first_child(container))) {
        if (GTK_IS_BOX(container)) gtk_box_remove(GTK_BOX(container), c);
        else if (GTK_IS_FLOW_BOX(container)) gtk_flow_box_remove(GTK_FLOW_BOX(container), c);
        else if (GTK_IS_LIST_BOX(container)) gtk_list_box_remove(GTK_LIST_BOX(container), c);
        else gtk_widget_unparent(c);
    }
}

GtkWidget *stem_chip_new(const char *text, const char *extra_class, const char *tooltip)
{
    GtkWidget *l = gtk_label_new(text);
    gtk_widget_add_css_class(l, "chip");
    if (extra_class) gtk_widget_add_css_class(l, extra_class);
    if (tooltip) gtk_widget_set_tooltip_text(l, tooltip);
    gtk_widget_set_valign(l, GTK_ALIGN_CENTER);
    return l;
}
