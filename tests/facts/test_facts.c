/* Country facts and the training corpus: the CSV loader (good and bad files), the
 * phrasings and their held-out split, and the built corpus (facts present, held-out
 * phrasings absent, train/val prose disjoint, determinism). Expectations are
 * independent facts about the data (195 countries, Madrid, Brasília, ...), not
 * values read back from the code under test. */
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <gio/gio.h>

#include "engine/facts.h"
#include "engine/corpus.h"

static StemFacts *load_default(void)
{
    const char *dir = stem_data_dir();
    g_assert_nonnull(dir);
    char *path = g_build_filename(dir, "countries.csv", NULL);
    GError *err = NULL;
    StemFacts *f = stem_facts_load(path, &err);
    g_assert_no_error(err);
    g_assert_nonnull(f);
    g_free(path);
    return f;
}

/* The full corpus (all prose, 8 repeats) is built once and shared. */
static StemCorpus *full_corpus;
static double full_seconds;
static const StemCorpusOptions full_opt = {
    .data_dir = NULL, .prose_bytes = 0, .fact_repeats = 8, .val_fraction = 0.02, .seed = 1234,
};

static StemCorpus *get_full(void)
{
    if (!full_corpus) {
        GError *err = NULL;
        gint64 t0 = g_get_monotonic_time();
        full_corpus = stem_corpus_build(&full_opt, &err);
        full_seconds = (g_get_monotonic_time() - t0) / 1e6;
        g_assert_no_error(err);
        g_assert_nonnull(full_corpus);
        g_test_message("full corpus: train %" G_GSIZE_FORMAT " bytes, val %" G_GSIZE_FORMAT
                       " bytes, built in %.3f s", full_corpus->train->len, full_corpus->val->len,
                       full_seconds);
    }
    return full_corpus;
}

/* Set of the lines of text, line -> count. Keys point into a copy owned by *owner. */
static GHashTable *line_counts(const GString *text, char **owner)
{
    *owner = g_strndup(text->str, text->len);
    GHashTable *h = g_hash_table_new(g_str_hash, g_str_equal);
    char *p = *owner;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        gpointer old = g_hash_table_lookup(h, p);
        g_hash_table_insert(h, p, GINT_TO_POINTER(GPOINTER_TO_INT(old) + 1));
        if (!nl)
            break;
        p = nl + 1;
    }
    return h;
}

/* ------------------------------------------------------------------------- */

static void test_load(void)
{
    StemFacts *f = load_default();
    g_assert_cmpint(f->n, ==, 195);

    int spain = stem_facts_find(f, "Spain");
    g_assert_cmpint(spain, >=, 0);
    g_assert_cmpstr(stem_facts_value(f, spain, REL_CAPITAL), ==, "Madrid");
    g_assert_cmpstr(stem_facts_value(f, spain, REL_CONTINENT), ==, "Europe");
    g_assert_cmpstr(stem_facts_value(f, spain, REL_CURRENCY), ==, "Euro");
    g_assert_cmpint(stem_facts_find(f, "spain"), ==, spain);
    g_assert_cmpint(stem_facts_find(f, "Atlantis"), ==, -1);

    g_assert_cmpstr(stem_facts_value(f, stem_facts_find(f, "France"), REL_CAPITAL), ==, "Paris");
    g_assert_cmpstr(stem_facts_value(f, stem_facts_find(f, "Brazil"), REL_CAPITAL), ==,
                    "Bras\xc3\xad" "lia");
    g_assert_cmpstr(stem_facts_value(f, stem_facts_find(f, "Colombia"), REL_CAPITAL), ==,
                    "Bogot\xc3\xa1");
    int de = stem_facts_find(f, "Germany");
    g_assert_cmpstr(stem_facts_value(f, de, REL_LANGUAGE), ==, "German");
    g_assert_cmpstr(stem_facts_value(f, de, REL_DEMONYM), ==, "German");
    g_assert_cmpstr(stem_facts_value(f, de, REL_LARGEST_CITY), ==, "Berlin");
    g_assert_cmpstr(f->countries[de].iso2, ==, "DE");

    int ch = stem_facts_find(f, "Switzerland");
    g_assert_cmpint(ch, >=, 0);
    g_assert_cmpint(f->countries[ch].n_languages, >, 1);
    g_assert_null(stem_facts_value(f, ch, REL_LANGUAGE));
    g_assert_cmpstr(stem_facts_value(f, ch, REL_CAPITAL), ==, "Bern");
    /* Nauru has no largest-city cell: no answer rather than "". */
    g_assert_null(stem_facts_value(f, stem_facts_find(f, "Nauru"), REL_LARGEST_CITY));
    g_assert_null(stem_facts_value(f, 9999, REL_CAPITAL));
    /* No trailing \r from the CRLF file. */
    for (int c = 0; c < f->n; c++)
        g_assert_null(strchr(f->countries[c].largest_city, '\r'));

    g_assert_cmpstr(stem_relation_name(REL_CAPITAL), ==, "capital");
    g_assert_cmpstr(stem_relation_name(REL_LARGEST_CITY), ==, "largest_city");
    stem_facts_free(f);
}

static void test_templates(void)
{
    StemFacts *f = load_default();
    int spain = stem_facts_find(f, "Spain");
    static const char *const canonical[REL_COUNT] = {
        "The capital of Spain is", "The official language of Spain is", "Spain is a country in",
        "The currency of Spain is the", "The demonym for people from Spain is",
        "The largest city of Spain is",
    };
    for (int r = 0; r < REL_COUNT; r++) {
        char *p = stem_facts_canonical_prompt(f, spain, r);
        g_assert_cmpstr(p, ==, canonical[r]);
        g_free(p);

        int n = stem_facts_n_templates(r), n_held = 0, n_train = 0;
        g_assert_cmpint(n, >=, 5);
        gboolean ho = TRUE;
        stem_facts_template(r, 0, &ho);
        g_assert_false(ho);          /* the canonical prompt is a training phrasing */
        for (int i = 0; i < n; i++) {
            const char *t = stem_facts_template(r, i, &ho);
            const char *x = strstr(t, "{X}");
            g_assert_nonnull(x);
            g_assert_null(strstr(x + 1, "{X}"));
            g_assert_false(g_str_has_suffix(t, " "));
            if (ho) n_held++; else n_train++;
            for (int j = 0; j < i; j++)
                g_assert_cmpstr(stem_facts_template(r, j, NULL), !=, t);
        }
        g_assert_cmpint(n_held, ==, 2);
        g_assert_cmpint(n_train, >=, 3);
    }

    /* Prompt lists: flags, answers " " + value, disjoint train and held-out prompts. */
    GPtrArray *tr = stem_facts_prompts(f, -1, TRUE, FALSE);
    GPtrArray *ho = stem_facts_prompts(f, -1, FALSE, TRUE);
    GPtrArray *all = stem_facts_prompts(f, -1, TRUE, TRUE);
    g_assert_cmpuint(tr->len + ho->len, ==, all->len);
    GHashTable *train_prompts = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < tr->len; i++) {
        StemFactPrompt *p = tr->pdata[i];
        g_assert_false(p->held_out);
        g_assert_true(p->answer[0] == ' ');
        g_assert_cmpstr(p->answer + 1, ==, stem_facts_value(f, p->country, p->relation));
        g_assert_nonnull(strstr(p->prompt, f->countries[p->country].name));
        g_hash_table_add(train_prompts, p->prompt);
    }
    for (guint i = 0; i < ho->len; i++) {
        StemFactPrompt *p = ho->pdata[i];
        g_assert_true(p->held_out);
        g_assert_false(g_hash_table_contains(train_prompts, p->prompt));
    }
    g_hash_table_unref(train_prompts);

    /* Switzerland has no language prompt at all; Spain's capital prompts all say Madrid. */
    GPtrArray *lang = stem_facts_prompts(f, REL_LANGUAGE, TRUE, TRUE);
    int ch = stem_facts_find(f, "Switzerland");
    int n_cap_spain = 0;
    for (guint i = 0; i < lang->len; i++)
        g_assert_cmpint(((StemFactPrompt *)lang->pdata[i])->country, !=, ch);
    GPtrArray *cap = stem_facts_prompts(f, REL_CAPITAL, TRUE, TRUE);
    for (guint i = 0; i < cap->len; i++) {
        StemFactPrompt *p = cap->pdata[i];
        g_assert_cmpint(p->relation, ==, REL_CAPITAL);
        if (p->country == spain) {
            n_cap_spain++;
            g_assert_cmpstr(p->answer, ==, " Madrid");
        }
    }
    g_assert_cmpint(n_cap_spain, ==, stem_facts_n_templates(REL_CAPITAL));
    g_assert_cmpuint(cap->len, ==, (guint)(f->n * stem_facts_n_templates(REL_CAPITAL)));

    g_ptr_array_unref(lang);
    g_ptr_array_unref(cap);
    g_ptr_array_unref(tr);
    g_ptr_array_unref(ho);
    g_ptr_array_unref(all);
    stem_facts_free(f);
}

static void test_training_sentences(void)
{
    StemFacts *f = load_default();
    const int repeats = 3;
    GPtrArray *s = stem_facts_training_sentences(f, repeats, 42);

    /* Expected count: repeats per (country, relation with an answer), capital twice. */
    guint expect = 0;
    for (int c = 0; c < f->n; c++)
        for (int r = 0; r < REL_COUNT; r++)
            if (stem_facts_value(f, c, r))
                expect += (guint)(r == REL_CAPITAL ? 2 * repeats : repeats);
    g_assert_cmpuint(s->len, ==, expect);

    int n_madrid = 0, n_german_lang = 0;
    for (guint i = 0; i < s->len; i++) {
        const char *t = s->pdata[i];
        g_assert_true(g_str_has_suffix(t, ".\n"));
        g_assert_true(strchr(t, '\n') == t + strlen(t) - 1);   /* one line each */
        if (strstr(t, "Spain") && g_str_has_suffix(t, " Madrid.\n"))
            n_madrid++;
        if (strstr(t, "Germany") && g_str_has_suffix(t, " German.\n"))
            n_german_lang++;
        /* Switzerland has no language fact: no sentence of it ends in one of its languages. */
        g_assert_false(strstr(t, "Switzerland") && (g_str_has_suffix(t, " German.\n") ||
                                                    g_str_has_suffix(t, " French.\n")));
    }
    /* Spain's capital and largest city are both Madrid: 2*repeats + repeats sentences. */
    g_assert_cmpint(n_madrid, ==, 3 * repeats);
    /* Germany: language German and demonym German. */
    g_assert_cmpint(n_german_lang, ==, 2 * repeats);
    /* "Washington D.C." does not get a second period. */
    gboolean dc = FALSE;
    for (guint i = 0; i < s->len; i++)
        if (g_str_has_suffix(s->pdata[i], " Washington D.C.\n"))
            dc = TRUE;
    g_assert_true(dc);

    /* Every training phrasing is used (with 8 repeats, for every country). */
    GPtrArray *s8 = stem_facts_training_sentences(f, 8, 42);
    GHashTable *set = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < s8->len; i++)
        g_hash_table_add(set, s8->pdata[i]);
    GPtrArray *tp = stem_facts_prompts(f, -1, TRUE, FALSE);
    for (guint i = 0; i < tp->len; i++) {
        StemFactPrompt *p = tp->pdata[i];
        gboolean dot = g_str_has_suffix(p->answer, ".");
        char *line = g_strconcat(p->prompt, p->answer, dot ? "" : ".", "\n", NULL);
        if (!g_hash_table_contains(set, line))
            g_error("training phrasing never used: %s", line);
        g_free(line);
    }

    /* Determinism of the shuffle. */
    GPtrArray *a = stem_facts_training_sentences(f, repeats, 42);
    GPtrArray *b = stem_facts_training_sentences(f, repeats, 43);
    gboolean differ = FALSE;
    for (guint i = 0; i < s->len; i++) {
        g_assert_cmpstr(s->pdata[i], ==, a->pdata[i]);
        if (strcmp(s->pdata[i], b->pdata[i]) != 0)
            differ = TRUE;
    }
    g_assert_true(differ);

    g_hash_table_unref(set);
    g_ptr_array_unref(tp);
    g_ptr_array_unref(s8);
    g_ptr_array_unref(a);
    g_ptr_array_unref(b);
    g_ptr_array_unref(s);
    stem_facts_free(f);
}

/* Does any held-out prompt (any country) occur in text? Finds the text after {X}
 * (or before it) and checks every country's full prompt around each hit. */
static const char *find_held_out(const StemFacts *f, const char *text, gsize len)
{
    static char found[512];
    for (int r = 0; r < REL_COUNT; r++)
        for (int t = 0; t < stem_facts_n_templates(r); t++) {
            gboolean ho;
            const char *tmpl = stem_facts_template(r, t, &ho);
            if (!ho)
                continue;
            const char *x = strstr(tmpl, "{X}");
            gsize pre = (gsize)(x - tmpl);
            const char *post = x + 3;
            gboolean use_post = strlen(post) >= pre;
            char *anchor = use_post ? g_strdup(post) : g_strndup(tmpl, pre);
            gsize al = strlen(anchor);
            const char *p = text, *end = text + len;
            while ((p = memmem(p, (gsize)(end - p), anchor, al)) != NULL) {
                for (int c = 0; c < f->n; c++) {
                    const char *name = f->countries[c].name;
                    gsize nl = strlen(name);
                    const char *start = use_post ? p - nl - pre : p;
                    gsize total = pre + nl + strlen(post);
                    if (start < text || start + total > end)
                        continue;
                    if (memcmp(start, tmpl, pre) == 0 && memcmp(start + pre, name, nl) == 0 &&
                        memcmp(start + pre + nl, post, strlen(post)) == 0) {
                        g_snprintf(found, sizeof found, "%.*s", (int)total, start);
                        g_free(anchor);
                        return found;
                    }
                }
                p++;
            }
            g_free(anchor);
        }
    return NULL;
}

static void test_corpus_facts_and_held_out(void)
{
    StemCorpus *c = get_full();
    StemFacts *f = load_default();

    /* Every training sentence, with its multiplicity, is a line of the train text. */
    char *owner = NULL;
    GHashTable *lines = line_counts(c->train, &owner);
    GPtrArray *s = stem_facts_training_sentences(f, full_opt.fact_repeats, full_opt.seed);
    GHashTable *need = g_hash_table_new(g_str_hash, g_str_equal);   /* sentence -> count */
    for (guint i = 0; i < s->len; i++) {
        char *t = s->pdata[i];
        t[strlen(t) - 1] = '\0';                       /* drop the "\n" */
        g_hash_table_insert(need, t, GINT_TO_POINTER(GPOINTER_TO_INT(
                                g_hash_table_lookup(need, t)) + 1));
    }
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, need);
    while (g_hash_table_iter_next(&it, &k, &v))
        if (GPOINTER_TO_INT(g_hash_table_lookup(lines, k)) < GPOINTER_TO_INT(v))
            g_error("training sentence missing from the corpus (or too few times): %s",
                    (char *)k);
    g_hash_table_unref(need);
    /* Spot check the headline fact. */
    g_assert_nonnull(strstr(c->train->str, "The capital of Spain is Madrid.\n"));
    g_assert_nonnull(strstr(c->train->str, "The capital of Brazil is Bras\xc3\xad" "lia.\n"));
    g_assert_nonnull(strstr(c->val->str, "Madrid.\n"));

    /* No held-out prompt, for any country, anywhere in the training text. */
    const char *hit = find_held_out(f, c->train->str, c->train->len);
    if (hit)
        g_error("held-out prompt in training text: \"%s\"", hit);
    /* Sanity of the finder itself: it does find one in a text that has one. */
    GPtrArray *ho = stem_facts_prompts(f, REL_CAPITAL, FALSE, TRUE);
    char *probe = g_strdup_printf("Once upon a time. %s Nowhere.",
                                  ((StemFactPrompt *)ho->pdata[ho->len - 1])->prompt);
    g_assert_nonnull(find_held_out(f, probe, strlen(probe)));
    g_free(probe);
    g_ptr_array_unref(ho);

    g_ptr_array_unref(s);
    g_hash_table_unref(lines);
    g_free(owner);
    stem_facts_free(f);
}

static void test_held_out_naive(void)
{
    /* The direct check: every held-out prompt of every 10th country, searched with
     * strstr in a smaller corpus (same facts, 1 MB of prose). */
    StemCorpusOptions o = { .prose_bytes = 1u << 20, .fact_repeats = 4, .val_fraction = 0.02,
                            .seed = 5 };
    GError *err = NULL;
    StemCorpus *c = stem_corpus_build(&o, &err);
    g_assert_no_error(err);
    StemFacts *f = load_default();
    GPtrArray *ho = stem_facts_prompts(f, -1, FALSE, TRUE);
    int checked = 0;
    for (guint i = 0; i < ho->len; i++) {
        StemFactPrompt *p = ho->pdata[i];
        if (p->country % 10 != 0)
            continue;
        checked++;
        if (strstr(c->train->str, p->prompt))
            g_error("held-out prompt in training text: %s", p->prompt);
    }
    g_assert_cmpint(checked, >, 200);
    g_ptr_array_unref(ho);
    stem_facts_free(f);
    stem_corpus_free(c);
}

/* Chunks of text separated by blank lines, that are prose (not a block of facts:
 * its first line is not a fact sentence). */
static GPtrArray *prose_chunks(const GString *text, GHashTable *fact_lines)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    /* A plain loop rather than g_strsplit: under ASan, strstr checks the whole rest of
     * the string on every call, which is quadratic on 11 MB. */
    const char *p = text->str, *end = text->str + text->len;
    while (p < end) {
        const char *q = p;
        while (q < end && !(q[0] == '\n' && q + 1 < end && q[1] == '\n'))
            q++;
        if (q > p) {
            const char *nl = memchr(p, '\n', (gsize)(q - p));
            char *first = g_strndup(p, (gsize)((nl ? nl : q) - p));
            if (!g_hash_table_contains(fact_lines, first))
                g_ptr_array_add(out, g_strndup(p, (gsize)(q - p)));
            g_free(first);
        }
        p = q + 2;
    }
    return out;
}

static void test_corpus_split(void)
{
    StemCorpus *c = get_full();
    StemFacts *f = load_default();
    GHashTable *fact_lines = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GPtrArray *tp = stem_facts_prompts(f, -1, TRUE, FALSE);
    for (guint i = 0; i < tp->len; i++) {
        StemFactPrompt *p = tp->pdata[i];
        gboolean dot = g_str_has_suffix(p->answer, ".");
        g_hash_table_add(fact_lines, g_strconcat(p->prompt, p->answer, dot ? "" : ".", NULL));
    }

    GPtrArray *tr = prose_chunks(c->train, fact_lines);
    GPtrArray *va = prose_chunks(c->val, fact_lines);
    g_test_message("prose paragraphs: %u train, %u val", tr->len, va->len);
    g_assert_cmpuint(tr->len, >, 10000);
    /* About val_fraction of the paragraphs, less the duplicates dropped. */
    g_assert_cmpuint(va->len, >, (guint)(0.015 * (tr->len + va->len)));
    g_assert_cmpuint(va->len, <, (guint)(0.025 * (tr->len + va->len)));

    GHashTable *train_set = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < tr->len; i++)
        g_hash_table_add(train_set, tr->pdata[i]);
    for (guint i = 0; i < va->len; i++)
        if (g_hash_table_contains(train_set, va->pdata[i]))
            g_error("validation paragraph also in training: %.60s", (char *)va->pdata[i]);
    /* Validation comes from all over the prose: Austen at the start, the Bible at the end. */
    g_assert_nonnull(strstr(c->val->str, "Elinor"));

    /* Validation facts: one sentence per (country, relation) with an answer. */
    guint n_facts = 0, expect = 0;
    char *owner = NULL;
    GHashTable *vl = line_counts(c->val, &owner);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, vl);
    while (g_hash_table_iter_next(&it, &k, &v))
        if (g_hash_table_contains(fact_lines, k))
            n_facts += (guint)GPOINTER_TO_INT(v);
    for (int ci = 0; ci < f->n; ci++)
        for (int r = 0; r < REL_COUNT; r++)
            if (stem_facts_value(f, ci, r))
                expect++;
    g_assert_cmpuint(n_facts, ==, expect);

    g_hash_table_unref(vl);
    g_free(owner);
    g_hash_table_unref(train_set);
    g_ptr_array_unref(tr);
    g_ptr_array_unref(va);
    g_ptr_array_unref(tp);
    g_hash_table_unref(fact_lines);
    stem_facts_free(f);
}

static void test_corpus_determinism(void)
{
    StemCorpusOptions o = { .prose_bytes = 512u << 10, .fact_repeats = 2, .val_fraction = 0.05,
                            .seed = 7 };
    GError *err = NULL;
    StemCorpus *a = stem_corpus_build(&o, &err);
    g_assert_no_error(err);
    StemCorpus *b = stem_corpus_build(&o, &err);
    g_assert_no_error(err);
    o.seed = 8;
    StemCorpus *d = stem_corpus_build(&o, &err);
    g_assert_no_error(err);

    g_assert_true(g_string_equal(a->train, b->train));
    g_assert_true(g_string_equal(a->val, b->val));
    g_assert_false(g_string_equal(a->train, d->train));
    g_assert_cmpuint(a->train->len, ==, d->train->len);   /* same content, other order */

    /* prose_bytes bounds the prose: train + val minus the facts is at most 512 KiB
     * (plus the separators). */
    StemFacts *f = load_default();
    GPtrArray *s = stem_facts_training_sentences(f, o.fact_repeats, o.seed);
    GPtrArray *vs = stem_facts_validation_sentences(f, 1);
    gsize facts_bytes = 0;
    for (guint i = 0; i < s->len; i++)
        facts_bytes += strlen(s->pdata[i]);
    for (guint i = 0; i < vs->len; i++)
        facts_bytes += strlen(vs->pdata[i]);
    gsize total = a->train->len + a->val->len;
    g_assert_cmpuint(total, >, facts_bytes + (400u << 10));
    g_assert_cmpuint(total, <, facts_bytes + (540u << 10));
    /* It is a valid UTF-8 text and does not end inside a paragraph. */
    g_assert_true(g_utf8_validate(a->train->str, (gssize)a->train->len, NULL));
    g_assert_true(g_str_has_suffix(a->train->str, "\n"));

    g_ptr_array_unref(s);
    g_ptr_array_unref(vs);
    stem_facts_free(f);
    stem_corpus_free(a);
    stem_corpus_free(b);
    stem_corpus_free(d);
}

/* ------------------------------------------------------------------------- */

static char *write_temp(const char *dir, const char *name, const char *text)
{
    char *path = g_build_filename(dir, name, NULL);
    GError *err = NULL;
    g_file_set_contents(path, text, -1, &err);
    g_assert_no_error(err);
    return path;
}

#define HEADER "iso2,name,capital,language,continent,currency,demonym,largest_city,n_languages\n"
#define ROW_ES "ES,Spain,Madrid,Spanish,Europe,Euro,Spanish,Madrid,5\n"

static void expect_bad(const char *dir, const char *name, const char *text, const char *needle)
{
    char *path = write_temp(dir, name, text);
    GError *err = NULL;
    StemFacts *f = stem_facts_load(path, &err);
    g_assert_null(f);
    g_assert_nonnull(err);
    g_test_message("%s -> %s", name, err->message);
    if (!strstr(err->message, needle))
        g_error("error for %s should mention \"%s\": %s", name, needle, err->message);
    g_error_free(err);
    g_unlink(path);
    g_free(path);
}

static void test_bad_csv(void)
{
    GError *err = NULL;
    char *dir = g_dir_make_tmp("stem-facts-XXXXXX", &err);
    g_assert_no_error(err);

    /* Missing column: no "demonym" in the header (line 1). */
    expect_bad(dir, "missing_col.csv",
               "iso2,name,capital,language,continent,currency,largest_city,n_languages\n"
               "ES,Spain,Madrid,Spanish,Europe,Euro,Madrid,5\n",
               ":1:");
    expect_bad(dir, "missing_col2.csv",
               "iso2,name,capital,language,continent,currency,largest_city,n_languages\n", "demonym");
    /* Unterminated quote opened on line 3. */
    expect_bad(dir, "unterminated.csv",
               HEADER ROW_ES "FR,France,\"Paris,French,Europe,Euro,French,Paris,1\n"
               "DE,Germany,Berlin,German,Europe,Euro,German,Berlin,1\n",
               ":3:");
    /* Too few fields on line 4. */
    expect_bad(dir, "few.csv",
               HEADER ROW_ES "FR,France,Paris,French,Europe,Euro,French,Paris,1\n"
               "DE,Germany,Berlin,German,Europe,Euro,German,1\n",
               ":4:");
    /* Too many fields on line 2. */
    expect_bad(dir, "many.csv", HEADER "ES,Spain,Madrid,Spanish,Europe,Euro,Spanish,Madrid,5,x\n",
               ":2:");
    /* Not a number of languages. */
    expect_bad(dir, "nlang.csv", HEADER "ES,Spain,Madrid,Spanish,Europe,Euro,Spanish,Madrid,five\n",
               ":2:");
    /* Text after a closing quote. */
    expect_bad(dir, "afterquote.csv", HEADER "ES,\"Spain\"x,Madrid,Spanish,Europe,Euro,Spanish,Madrid,5\n",
               ":2:");
    /* Line numbers count the newlines inside quoted fields. */
    expect_bad(dir, "multiline.csv",
               HEADER "XX,\"Two\nLines\",A,B,Europe,C,D,E,1\n" "DE,Germany,Berlin\n", ":4:");

    /* A file that does not exist. */
    char *nope = g_build_filename(dir, "nope.csv", NULL);
    g_assert_null(stem_facts_load(nope, &err));
    g_assert_error(err, G_FILE_ERROR, G_FILE_ERROR_NOENT);
    g_clear_error(&err);
    g_free(nope);

    /* Good RFC 4180 file: quoted commas, doubled quotes, CRLF, other column order,
     * UTF-8, an empty cell, no final newline. */
    char *good = write_temp(dir, "good.csv",
        "name,iso2,capital,language,continent,currency,demonym,largest_city,n_languages,extra\r\n"
        "\"Korea, South\",KR,Seoul,Korean,Asia,\"Won, South Korean\",Korean,Seoul,1,x\r\n"
        "Colombia,CO,Bogot\xc3\xa1,Spanish,South America,Colombian Peso,Colombian,"
        "\"The \"\"Big\"\" One\",1,\r\n"
        "\r\n"
        "Nauru,NR,Yaren,English,Oceania,Australian Dollar,Nauruan,,2,y");
    StemFacts *f = stem_facts_load(good, &err);
    g_assert_no_error(err);
    g_assert_cmpint(f->n, ==, 3);
    g_assert_cmpstr(f->countries[0].name, ==, "Korea, South");
    g_assert_cmpstr(f->countries[0].iso2, ==, "KR");
    g_assert_cmpstr(stem_facts_value(f, 0, REL_CURRENCY), ==, "Won, South Korean");
    g_assert_cmpstr(stem_facts_value(f, 1, REL_CAPITAL), ==, "Bogot\xc3\xa1");
    g_assert_cmpstr(stem_facts_value(f, 1, REL_LARGEST_CITY), ==, "The \"Big\" One");
    g_assert_null(stem_facts_value(f, 2, REL_LARGEST_CITY));
    g_assert_null(stem_facts_value(f, 2, REL_LANGUAGE));
    g_assert_cmpint(f->countries[2].n_languages, ==, 2);
    stem_facts_free(f);
    g_unlink(good);
    g_free(good);
    g_rmdir(dir);
    g_free(dir);
}

static void copy_file(const char *from, const char *to)
{
    char *data = NULL;
    gsize len = 0;
    GError *err = NULL;
    g_file_get_contents(from, &data, &len, &err);
    g_assert_no_error(err);
    g_file_set_contents(to, data, (gssize)len, &err);
    g_assert_no_error(err);
    g_free(data);
}

static void test_bad_prose(void)
{
    GError *err = NULL;
    char *dir = g_dir_make_tmp("stem-corpus-XXXXXX", &err);
    g_assert_no_error(err);
    char *src_csv = g_build_filename(stem_data_dir(), "countries.csv", NULL);
    char *csv = g_build_filename(dir, "countries.csv", NULL);
    char *gz = g_build_filename(dir, "prose_mix.txt.gz", NULL);
    copy_file(src_csv, csv);

    StemCorpusOptions o = { .data_dir = dir, .fact_repeats = 1, .val_fraction = 0.02 };
    /* Missing prose. */
    g_assert_null(stem_corpus_build(&o, &err));
    g_assert_nonnull(err);
    g_test_message("missing: %s", err->message);
    g_clear_error(&err);
    /* Not gzip. */
    g_file_set_contents(gz, "this is not a gzip file at all", -1, &err);
    g_assert_no_error(err);
    g_assert_null(stem_corpus_build(&o, &err));
    g_assert_nonnull(err);
    g_test_message("not gzip: %s", err->message);
    g_clear_error(&err);

    /* A small valid one: two paragraphs, CRLF. */
    GZlibCompressor *comp = g_zlib_compressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP, 6);
    GOutputStream *mem = g_memory_output_stream_new_resizable();
    GOutputStream *zs = g_converter_output_stream_new(mem, G_CONVERTER(comp));
    const char *txt = "First paragraph,\r\nstill first.\r\n\r\n  \r\nSecond one.\r\n";
    g_output_stream_write_all(zs, txt, strlen(txt), NULL, NULL, &err);
    g_assert_no_error(err);
    g_output_stream_close(zs, NULL, &err);
    g_assert_no_error(err);
    GMemoryOutputStream *m = G_MEMORY_OUTPUT_STREAM(mem);
    gsize zlen = g_memory_output_stream_get_data_size(m);
    g_file_set_contents(gz, g_memory_output_stream_get_data(m), (gssize)zlen, &err);
    g_assert_no_error(err);
    o.val_fraction = 0;
    StemCorpus *c = stem_corpus_build(&o, &err);
    g_assert_no_error(err);
    g_assert_true(g_str_has_prefix(c->train->str, "First paragraph,\nstill first.\n\n"));
    g_assert_nonnull(strstr(c->train->str, "\nSecond one.\n\n"));
    g_assert_null(strchr(c->train->str, '\r'));
    g_assert_cmpuint(c->val->len, >, 0);      /* the validation facts */
    stem_corpus_free(c);

    /* Truncated gzip: the tail is cut off. */
    char *full = g_malloc(zlen);
    memcpy(full, g_memory_output_stream_get_data(m), zlen);
    g_file_set_contents(gz, full, (gssize)(zlen / 2), &err);
    g_assert_no_error(err);
    c = stem_corpus_build(&o, &err);
    g_test_message("truncated: %s", err ? err->message : "(no error)");
    g_assert_null(c);
    g_assert_nonnull(err);
    g_clear_error(&err);
    g_free(full);

    g_object_unref(zs);
    g_object_unref(mem);
    g_object_unref(comp);
    g_unlink(gz);
    g_unlink(csv);
    g_rmdir(dir);
    g_free(gz);
    g_free(csv);
    g_free(src_csv);
    g_free(dir);
}

static void test_data_dir(void)
{
    const char *d = stem_data_dir();
    g_assert_nonnull(d);
    char *env = g_strdup(g_getenv("STEM_DATA_DIR"));
    g_setenv("STEM_DATA_DIR", "/nonexistent/stem-data", TRUE);
    const char *d2 = stem_data_dir();   /* falls back to the source data dir */
    g_assert_nonnull(d2);
    g_assert_cmpstr(d2, !=, "/nonexistent/stem-data");
    if (env)
        g_setenv("STEM_DATA_DIR", env, TRUE);
    else
        g_unsetenv("STEM_DATA_DIR");
    g_free(env);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/facts/load", test_load);
    g_test_add_func("/facts/templates", test_templates);
    g_test_add_func("/facts/training-sentences", test_training_sentences);
    g_test_add_func("/facts/bad-csv", test_bad_csv);
    g_test_add_func("/facts/data-dir", test_data_dir);
    g_test_add_func("/corpus/facts-and-held-out", test_corpus_facts_and_held_out);
    g_test_add_func("/corpus/held-out-naive", test_held_out_naive);
    g_test_add_func("/corpus/split", test_corpus_split);
    g_test_add_func("/corpus/determinism", test_corpus_determinism);
    g_test_add_func("/corpus/bad-prose", test_bad_prose);
    int rc = g_test_run();
    stem_corpus_free(full_corpus);
    return rc;
}
