/* The training corpus: public-domain prose with country-facts sentences mixed in.
 * See corpus.h and data/README.md ("How the corpus is built").
 *
 *   1. prose_mix.txt.gz is decompressed with GIO (GZlibDecompressor in a
 *      GConverterInputStream over the GFileInputStream), stopping early when
 *      prose_bytes is set; '\r' is removed.
 *   2. The prose is cut into paragraphs at blank lines (empty or whitespace-only
 *      lines); a paragraph keeps its internal newlines. When prose_bytes cut the
 *      text, the last (possibly partial) paragraph is dropped.
 *   3. Paragraphs containing a held-out prompt (any held-out phrasing with any
 *      country) are dropped, so held-out phrasings never occur in training text.
 *   4. Validation takes every `stride`-th paragraph, stride = round(1/val_fraction),
 *      rather than the tail: the prose is a concatenation of different books (the
 *      tail would be all Bible), and a strided sample has the same mix as training.
 *      A validation paragraph that is byte-identical to a training paragraph
 *      ("CHAPTER XII", "* * * * *") is dropped, so the two sets are disjoint.
 *   5. Training facts (stem_facts_training_sentences) are spread evenly between
 *      the training paragraphs: after paragraph i come the sentences
 *      [i*S/P, (i+1)*S/P), so every window of text sees both kinds.
 *   6. Validation gets its paragraphs interleaved the same way with one sentence
 *      per (country, relation) in a training phrasing. These facts ALSO appear in
 *      the training text, deliberately: the model's job is to memorize the facts,
 *      so validation loss measures both prose modeling (unseen paragraphs) and
 *      fact recall (seen facts). Generalization to new wordings is measured by
 *      the held-out phrasings instead (stem_facts_prompts).
 * Everything is deterministic for (data, options); the seed only orders the facts. */
#include "corpus.h"

#include <string.h>
#include <math.h>
#include <gio/gio.h>

#define PROSE_FILE "prose_mix.txt.gz"
#define FACTS_FILE "countries.csv"

typedef struct {
    const char *p;
    gsize len;
} Span;

const char *stem_data_dir(void)
{
    const char *env = g_getenv("STEM_DATA_DIR");
    if (env && env[0]) {
        char *csv = g_build_filename(env, FACTS_FILE, NULL);
        gboolean ok = g_file_test(csv, G_FILE_TEST_IS_REGULAR);
        g_free(csv);
        if (ok)
            return env;
    }
#ifdef STEM_SOURCE_DATA_DIR
    if (g_file_test(STEM_SOURCE_DATA_DIR G_DIR_SEPARATOR_S FACTS_FILE, G_FILE_TEST_IS_REGULAR))
        return STEM_SOURCE_DATA_DIR;
#endif
#ifdef STEM_INSTALL_DATA_DIR
    if (g_file_test(STEM_INSTALL_DATA_DIR G_DIR_SEPARATOR_S FACTS_FILE, G_FILE_TEST_IS_REGULAR))
        return STEM_INSTALL_DATA_DIR;
#endif
    return NULL;
}

/* Decompresses path (gzip) into a new buffer, at most `limit` bytes (0 = all).
 * *cut is set when the text went on past the limit. */
static GByteArray *read_gz(const char *path, gsize limit, gboolean *cut, GError **error)
{
    *cut = FALSE;
    GFile *file = g_file_new_for_path(path);
    GError *err = NULL;
    GFileInputStream *fin = g_file_read(file, NULL, &err);
    g_object_unref(file);
    if (!fin) {
        g_propagate_prefixed_error(error, err, "prose: ");
        return NULL;
    }
    GZlibDecompressor *dec = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
    GInputStream *in = g_converter_input_stream_new(G_INPUT_STREAM(fin), G_CONVERTER(dec));
    g_object_unref(dec);
    g_object_unref(fin);

    GByteArray *buf = g_byte_array_sized_new(limit ? limit + 1 : 16u << 20);
    const gsize chunk = 1u << 20;
    for (;;) {
        gsize old = buf->len;
        g_byte_array_set_size(buf, old + chunk);
        gssize n = g_input_stream_read(in, buf->data + old, chunk, NULL, &err);
        if (n < 0) {
            g_propagate_prefixed_error(error, err, "%s: ", path);
            g_byte_array_unref(buf);
            buf = NULL;
            break;
        }
        g_byte_array_set_size(buf, old + (gsize)n);
        if (n == 0)
            break;
        if (limit && buf->len > limit) {
            g_byte_array_set_size(buf, limit);
            *cut = TRUE;
            break;
        }
    }
    g_object_unref(in);
    return buf;
}

static gboolean line_is_blank(const char *p, const char *e)
{
    for (; p < e; p++)
        if (*p != ' ' && *p != '\t')
            return FALSE;
    return TRUE;
}

/* Paragraphs of text[0..len): runs of non-blank lines, without the final newline. */
static GArray *split_paragraphs(const char *text, gsize len)
{
    GArray *paras = g_array_new(FALSE, FALSE, sizeof(Span));
    const char *p = text, *end = text + len;
    const char *start = NULL, *last = NULL;   /* current paragraph: start, end of last line */
    while (p < end) {
        const char *nl = memchr(p, '\n', (gsize)(end - p));
        const char *le = nl ? nl : end;
        if (line_is_blank(p, le)) {
            if (start) {
                Span s = { start, (gsize)(last - start) };
                g_array_append_val(paras, s);
                start = NULL;
            }
        } else {
            if (!start)
                start = p;
            last = le;
        }
        p = nl ? nl + 1 : end;
    }
    if (start) {
        Span s = { start, (gsize)(last - start) };
        g_array_append_val(paras, s);
    }
    return paras;
}

/* Held-out prompts, grouped by template, with an anchor (the longer fixed part of
 * the template) to find candidates quickly with memmem. */
typedef struct {
    char *anchor;
    gsize anchor_len;
    GPtrArray *prompts;        /* char*, one per country */
    GArray *anchor_offset;     /* gsize: where the anchor sits inside each prompt */
} HeldOut;

static GPtrArray *held_out_new(const StemFacts *facts)
{
    GPtrArray *hs = g_ptr_array_new();
    for (int r = 0; r < REL_COUNT; r++)
        for (int t = 0; t < stem_facts_n_templates(r); t++) {
            gboolean ho = FALSE;
            const char *tmpl = stem_facts_template(r, t, &ho);
            if (!ho)
                continue;
            const char *x = strstr(tmpl, "{X}");
            gsize pre = (gsize)(x - tmpl), post = strlen(x + 3);
            HeldOut *h = g_new0(HeldOut, 1);
            gboolean use_pre = pre >= post;
            h->anchor = use_pre ? g_strndup(tmpl, pre) : g_strdup(x + 3);
            h->anchor_len = strlen(h->anchor);
            h->prompts = g_ptr_array_new_with_free_func(g_free);
            h->anchor_offset = g_array_new(FALSE, FALSE, sizeof(gsize));
            for (int c = 0; c < facts->n; c++) {
                const char *name = facts->countries[c].name;
                GString *s = g_string_new_len(tmpl, (gssize)pre);
                g_string_append(s, name);
                g_string_append(s, x + 3);
                g_ptr_array_add(h->prompts, g_string_free(s, FALSE));
                gsize off = use_pre ? 0 : pre + strlen(name);
                g_array_append_val(h->anchor_offset, off);
            }
            g_ptr_array_add(hs, h);
        }
    return hs;
}

static void held_out_free(GPtrArray *hs)
{
    for (guint i = 0; i < hs->len; i++) {
        HeldOut *h = hs->pdata[i];
        g_free(h->anchor);
        g_ptr_array_unref(h->prompts);
        g_array_unref(h->anchor_offset);
        g_free(h);
    }
    g_ptr_array_free(hs, TRUE);
}

static gboolean contains_held_out(const Span *s, GPtrArray *hs)
{
    const char *end = s->p + s->len;
    for (guint i = 0; i < hs->len; i++) {
        HeldOut *h = hs->pdata[i];
        const char *q = s->p;
        while (q < end) {
            const char *hit = memmem(q, (gsize)(end - q), h->anchor, h->anchor_len);
            if (!hit)
                break;
            for (guint c = 0; c < h->prompts->len; c++) {
                const char *pr = h->prompts->pdata[c];
                gsize off = g_array_index(h->anchor_offset, gsize, c), pl = strlen(pr);
                if ((gsize)(hit - s->p) < off)
                    continue;
                const char *st = hit - off;
                if (st + pl <= end && memcmp(st, pr, pl) == 0)
                    return TRUE;
            }
            q = hit + 1;
        }
    }
    return FALSE;
}

static guint span_hash(gconstpointer k)
{
    const Span *s = k;
    guint h = 5381;
    for (gsize i = 0; i < s->len; i++)
        h = h * 33u + (guchar)s->p[i];
    return h;
}

static gboolean span_equal(gconstpointer a, gconstpointer b)
{
    const Span *x = a, *y = b;
    return x->len == y->len && memcmp(x->p, y->p, x->len) == 0;
}

/* Paragraphs separated by blank lines; after paragraph i the sentences
 * [i*S/P, (i+1)*S/P) as one block (each sentence ends with "\n"). */
static void interleave(GString *out, const Span *paras, gsize n_paras, GPtrArray *sentences)
{
    guint64 S = sentences->len, P = n_paras;
    if (P == 0) {
        for (guint k = 0; k < S; k++)
            g_string_append(out, sentences->pdata[k]);
        if (S)
            g_string_append_c(out, '\n');
        return;
    }
    for (guint64 i = 0; i < P; i++) {
        g_string_append_len(out, paras[i].p, (gssize)paras[i].len);
        g_string_append(out, "\n\n");
        guint64 lo = i * S / P, hi = (i + 1) * S / P;
        for (guint64 k = lo; k < hi; k++)
            g_string_append(out, sentences->pdata[k]);
        if (hi > lo)
            g_string_append_c(out, '\n');
    }
}

static gsize sentences_bytes(GPtrArray *a)
{
    gsize n = 0;
    for (guint i = 0; i < a->len; i++)
        n += strlen(a->pdata[i]);
    return n;
}

void stem_corpus_free(StemCorpus *c)
{
    if (!c)
        return;
    if (c->train)
        g_string_free(c->train, TRUE);
    if (c->val)
        g_string_free(c->val, TRUE);
    g_free(c);
}

StemCorpus *stem_corpus_build(const StemCorpusOptions *opt, GError **error)
{
    const char *dir = opt->data_dir ? opt->data_dir : stem_data_dir();
    if (!dir) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "no data folder with " FACTS_FILE " (set STEM_DATA_DIR)");
        return NULL;
    }
    char *csv_path = g_build_filename(dir, FACTS_FILE, NULL);
    char *prose_path = g_build_filename(dir, PROSE_FILE, NULL);
    StemFacts *facts = stem_facts_load(csv_path, error);
    StemCorpus *corpus = NULL;
    GByteArray *prose = NULL;
    GArray *paras = NULL;
    if (!facts)
        goto out;

    gboolean cut = FALSE;
    prose = read_gz(prose_path, opt->prose_bytes, &cut, error);
    if (!prose)
        goto out;
    /* Strip '\r' in place (CRLF or stray CR). */
    gsize w = 0;
    for (gsize i = 0; i < prose->len; i++)
        if (prose->data[i] != '\r')
            prose->data[w++] = prose->data[i];
    g_byte_array_set_size(prose, w);

    const char *text = (const char *)prose->data;
    paras = split_paragraphs(text, prose->len);
    if (cut && paras->len > 1)
        g_array_set_size(paras, paras->len - 1);      /* the cut one */
    if (cut && paras->len == 1) {                      /* keep a valid UTF-8 prefix */
        Span *s = &g_array_index(paras, Span, 0);
        const char *valid_end = NULL;
        if (!g_utf8_validate(s->p, (gssize)s->len, &valid_end))
            s->len = (gsize)(valid_end - s->p);
    }
    for (guint i = 0; i < paras->len; i++) {
        const Span *s = &g_array_index(paras, Span, i);
        const char *bad = NULL;
        if (!g_utf8_validate(s->p, (gssize)s->len, &bad)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s: not valid UTF-8 at byte %" G_GSIZE_FORMAT " of the text",
                        prose_path, (gsize)(bad - text));
            goto out;
        }
    }

    /* Drop paragraphs that contain a held-out prompt. */
    GPtrArray *hs = held_out_new(facts);
    guint kept = 0, dropped_held_out = 0;
    for (guint i = 0; i < paras->len; i++) {
        Span s = g_array_index(paras, Span, i);
        if (contains_held_out(&s, hs))
            dropped_held_out++;
        else
            g_array_index(paras, Span, kept++) = s;
    }
    g_array_set_size(paras, kept);
    held_out_free(hs);

    /* Strided validation split. */
    guint stride = 0;
    if (opt->val_fraction > 0)
        stride = (guint)MAX(2.0, round(1.0 / MIN(opt->val_fraction, 0.5)));
    GArray *tr = g_array_sized_new(FALSE, FALSE, sizeof(Span), paras->len);
    GArray *va = g_array_new(FALSE, FALSE, sizeof(Span));
    for (guint i = 0; i < paras->len; i++) {
        Span s = g_array_index(paras, Span, i);
        if (stride && i % stride == stride - 1)
            g_array_append_val(va, s);
        else
            g_array_append_val(tr, s);
    }
    GHashTable *train_set = g_hash_table_new(span_hash, span_equal);
    gsize prose_train_bytes = 0, prose_val_bytes = 0;
    for (guint i = 0; i < tr->len; i++) {
        g_hash_table_add(train_set, &g_array_index(tr, Span, i));
        prose_train_bytes += g_array_index(tr, Span, i).len + 2;
    }
    guint vk = 0, dropped_dup = 0;
    for (guint i = 0; i < va->len; i++) {
        Span s = g_array_index(va, Span, i);
        if (g_hash_table_contains(train_set, &s)) {
            dropped_dup++;
        } else {
            g_array_index(va, Span, vk++) = s;
            prose_val_bytes += s.len + 2;
        }
    }
    g_array_set_size(va, vk);
    g_hash_table_unref(train_set);

    GPtrArray *train_facts = stem_facts_training_sentences(facts, opt->fact_repeats, opt->seed);
    /* A different stream for the validation order, still determined by the seed. */
    GPtrArray *val_facts = stem_facts_validation_sentences(facts,
                                                           opt->seed ^ G_GUINT64_CONSTANT(0x9E3779B97F4A7C15));

    corpus = g_new0(StemCorpus, 1);
    corpus->train = g_string_sized_new(prose_train_bytes + sentences_bytes(train_facts) + tr->len + 16);
    corpus->val = g_string_sized_new(prose_val_bytes + sentences_bytes(val_facts) + va->len + 16);
    interleave(corpus->train, (const Span *)tr->data, tr->len, train_facts);
    interleave(corpus->val, (const Span *)va->data, va->len, val_facts);

    g_debug("corpus: %u train + %u val paragraphs (%u dropped for held-out prompts, %u val "
            "duplicates of train), %u train + %u val fact sentences, %" G_GSIZE_FORMAT
            " + %" G_GSIZE_FORMAT " bytes",
            tr->len, va->len, dropped_held_out, dropped_dup, train_facts->len, val_facts->len,
            corpus->train->len, corpus->val->len);

    g_ptr_array_unref(train_facts);
    g_ptr_array_unref(val_facts);
    g_array_unref(tr);
    g_array_unref(va);

out:
    if (paras)
        g_array_unref(paras);
    if (prose)
        g_byte_array_unref(prose);
    stem_facts_free(facts);
    g_free(csv_path);
    g_free(prose_path);
    return corpus;
}
