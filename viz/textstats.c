/* Token frequencies and Heaps' law on the bundled corpus (textstats.h). */
#include "textstats.h"
#include "geometry.h"

#include "engine/corpus.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int32_t *viz_corpus_ids(const StemTokenizer *tok, double prose_mb, gboolean validation, size_t *n_out,
                        GError **error)
{
    const char *dir = stem_data_dir();
    if (!dir) {
        g_set_error(error, VIZ_ERROR, 10, "data files not found (set STEM_DATA_DIR to the folder with countries.csv)");
        return NULL;
    }
    StemCorpusOptions o = { .data_dir = dir, .prose_bytes = (size_t)(prose_mb * 1e6), .fact_repeats = 2,
                            .val_fraction = 0.02, .seed = 1 };
    StemCorpus *c = stem_corpus_build(&o, error);
    if (!c) return NULL;
    GString *s = validation ? c->val : c->train;
    int32_t *ids = stem_tokenizer_encode(tok, s->str, s->len, n_out);
    stem_corpus_free(c);
    return ids;
}

int64_t *viz_token_counts(const int32_t *ids, size_t n, int V)
{
    int64_t *c = g_new0(int64_t, V);
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < V) c[ids[i]]++;
    return c;
}

static gint by_count(gconstpointer a, gconstpointer b, gpointer user)
{
    const int64_t *counts = user;
    int x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (counts[x] != counts[y]) return counts[x] > counts[y] ? -1 : 1;
    return (x > y) - (x < y);
}

int32_t *viz_top_tokens(const int64_t *counts, int V, int n, int *n_out)
{
    int32_t *all = g_new(int32_t, MAX(V, 1));
    int m = 0;
    for (int i = 0; i < V; i++)
        if (counts[i] > 0) all[m++] = i;
    g_qsort_with_data(all, m, sizeof(int32_t), by_count, (gpointer)counts);
    *n_out = MIN(m, n);
    return all;
}

gboolean viz_heaps(const int32_t *ids, size_t n, int V, int max_len, int max_windows, VizHeaps *out, GError **error)
{
    memset(out, 0, sizeof *out);
    if (n < 1) {
        g_set_error(error, VIZ_ERROR, 11, "no text");
        return FALSE;
    }
    int lens[40], nl = 0;
    for (long L = 1; L <= max_len && (size_t)L <= n && nl < 40; L *= 2) lens[nl++] = (int)L;
    out->n = nl;
    out->length = g_new(int, nl);
    out->unique = g_new(double, nl);
    out->windows = g_new(int, nl);
    guint32 *stamp = g_new0(guint32, V);
    guint32 mark = 0;
    for (int i = 0; i < nl; i++) {
        int L = lens[i];
        /* non-overlapping windows where the text allows, else evenly spread starts */
        size_t avail = n / (size_t)L;
        int W = (int)MIN((size_t)max_windows, MAX(avail, (size_t)1));
        double sum = 0;
        for (int w = 0; w < W; w++) {
            size_t start = W > 1 ? (n - L) * (size_t)w / (size_t)(W - 1) : 0;
            mark++;
            int u = 0;
            for (int t = 0; t < L; t++) {
                int id = ids[start + t];
                if (id < 0 || id >= V) continue;
                if (stamp[id] != mark) {
                    stamp[id] = mark;
                    u++;
                }
            }
            sum += u;
        }
        out->length[i] = L;
        out->unique[i] = sum / W;
        out->windows[i] = W;
    }
    g_free(stamp);
    /* least squares on log U = log K + beta log L in the power law's regime: L >= 8
     * (short windows are all-unique) and U below a quarter of the distinct tokens
     * of the text (beyond, a small vocabulary saturates); else over every point */
    int distinct = 0;
    {
        guint8 *seen = g_new0(guint8, V);
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= 0 && ids[i] < V && !seen[ids[i]]) seen[ids[i]] = 1, distinct++;
        g_free(seen);
    }
    out->distinct = distinct;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int m = 0;
    for (int pass = 0; pass < 2 && m < 2; pass++) {
        sx = sy = sxx = sxy = 0;
        m = 0;
        for (int i = 0; i < nl; i++) {
            if (pass == 0 && (out->length[i] < 8 || out->unique[i] > 0.25 * distinct)) continue;
            double x = log((double)out->length[i]), y = log(out->unique[i]);
            sx += x, sy += y, sxx += x * x, sxy += x * y;
            m++;
        }
    }
    if (m >= 2 && m * sxx - sx * sx > 0) {
        out->beta = (m * sxy - sx * sy) / (m * sxx - sx * sx);
        out->K = exp((sy - out->beta * sx) / m);
    } else {
        out->beta = 1;
        out->K = 1;
    }
    return TRUE;
}

void viz_heaps_clear(VizHeaps *h)
{
    g_free(h->length);
    g_free(h->unique);
    g_free(h->windows);
    memset(h, 0, sizeof *h);
}

void viz_active_model(const StemConfig *c, VizActiveModel *out)
{
    StemCounts k;
    stem_config_counts(c, &k);
    int ns = stem_config_n_stem(c);
    out->n_stem = ns;
    out->stem_fixed = (double)(k.backbone + k.head);
    out->stem_per_unique = (double)ns * c->ffn_dim;
    out->dense_constant = (double)(k.backbone + k.head) + (double)ns * c->dim * c->ffn_dim;
}

double viz_active_crossover_unique(const VizActiveModel *a)
{
    if (a->stem_per_unique <= 0) return INFINITY;
    return (a->dense_constant - a->stem_fixed) / a->stem_per_unique;
}

/* ------------------------------------------------------------------ token labels */

char *viz_text_label(const char *b, size_t len)
{
    GString *s = g_string_new(NULL);
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)b[i];
        if (c == ' ') g_string_append(s, "\u2423");
        else if (c == '\n') g_string_append(s, "\u21b5");
        else if (c == '\t') g_string_append(s, "\u21e5");
        else if (c == '\r') g_string_append(s, "\\r");
        else if (c < 0x20 || c == 0x7f) g_string_append_printf(s, "\\x%02X", c);
        else if (c < 0x80) g_string_append_c(s, (char)c);
        else {
            /* a whole, valid UTF-8 character, or the bytes escaped */
            const char *end = NULL;
            int n = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
            if (i + (size_t)n <= len && g_utf8_validate(b + i, n, &end) && n > 1) {
                g_string_append_len(s, b + i, n);
                i += (size_t)n;
                continue;
            }
            g_string_append_printf(s, "\\x%02X", c);
        }
        i++;
    }
    return g_string_free(s, FALSE);
}

char *viz_token_label(const StemTokenizer *tok, int id)
{
    size_t len = 0;
    const char *b = tok ? stem_tokenizer_token_bytes(tok, id, &len) : NULL;
    if (!b) return g_strdup_printf("<%d>", id);
    if (id >= 256 && id < STEM_TOK_N_BASE) return g_strndup(b, len);   /* <bos> <eos> <pad> */
    return viz_text_label(b, len);
}

int viz_resolve_token(const StemTokenizer *tok, int vocab, const char *text, GError **error)
{
    if (!text || !*text) {
        g_set_error(error, VIZ_ERROR, 12, "empty token");
        return -1;
    }
    if (text[0] == '#' && text[1]) {
        char *end = NULL;
        long v = strtol(text + 1, &end, 10);
        if (*end == 0 && v >= 0 && v < vocab) return (int)v;
        g_set_error(error, VIZ_ERROR, 12, "%s: not a token id in 0..%d", text, vocab - 1);
        return -1;
    }
    if (!tok) {
        g_set_error(error, VIZ_ERROR, 12, "the model has no tokenizer: give the token as #ID");
        return -1;
    }
    int id = stem_tokenizer_lookup(tok, text, strlen(text));
    if (id < 0 && text[0] != ' ') {
        char *sp = g_strconcat(" ", text, NULL);
        id = stem_tokenizer_lookup(tok, sp, strlen(sp));
        g_free(sp);
    }
    if (id >= 0 && id < vocab) return id;
    /* show how the text (and its mid-sentence variant) encode, to pick a token from */
    GString *s = g_string_new(NULL);
    for (int form = 0; form < (text[0] == ' ' ? 1 : 2); form++) {
        char *t = form ? g_strconcat(" ", text, NULL) : g_strdup(text);
        size_t n = 0;
        int32_t *ids = stem_tokenizer_encode(tok, t, strlen(t), &n);
        char *tl = viz_text_label(t, strlen(t));
        g_string_append_printf(s, "%s'%s' encodes as ", form ? ", " : "", tl);
        for (size_t i = 0; i < n; i++) {
            char *l = viz_token_label(tok, ids[i]);
            g_string_append_printf(s, "%s%s", i ? " | " : "", l);
            g_free(l);
        }
        g_free(tl);
        g_free(ids);
        g_free(t);
    }
    g_set_error(error, VIZ_ERROR, 12, "'%s' is not one token (%s); give one of those tokens or #ID", text, s->str);
    g_string_free(s, TRUE);
    return -1;
}

double viz_heaps_length_for(const VizHeaps *h, double u)
{
    for (int i = 0; i < h->n; i++) {
        if (h->unique[i] < u) continue;
        if (i == 0) return h->length[0];
        /* log-log interpolation between the neighbouring measurements */
        double x0 = log(h->length[i - 1]), x1 = log(h->length[i]);
        double y0 = log(h->unique[i - 1]), y1 = log(h->unique[i]);
        double t = y1 > y0 ? (log(u) - y0) / (y1 - y0) : 0;
        return exp(x0 + t * (x1 - x0));
    }
    return INFINITY;
}

char *viz_display_text(const char *text)
{
    char *v = g_utf8_make_valid(text ? text : "", -1);
    GString *s = g_string_new(NULL);
    for (const char *p = v; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        if (c == '\n') g_string_append(s, "\u21b5");
        else if (c == '\t') g_string_append(s, "\u21e5");
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0)) g_string_append_printf(s, "\\x%02X", (unsigned)c);
        else g_string_append_unichar(s, c);
    }
    g_free(v);
    return g_string_free(s, FALSE);
}
