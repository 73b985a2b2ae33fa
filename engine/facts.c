/* Country facts: the CSV table, the phrasings per relation, training sentences
 * and evaluation prompts. See facts.h and data/README.md ("How the corpus is built").
 *
 * Every template is a prompt that stops right before the answer; the answer is
 * " " + the CSV value, unchanged (no article, no plural), so a prompt can be scored
 * by the probability of exactly the tokens of " Madrid". The sentence form used
 * in training text is prompt + " " + value + "." (no second period when the value
 * already ends with one, as "Washington D.C."). */
#include "facts.h"

#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <gio/gio.h>

/* ---------------------------------------------------------------------------
 * Templates. {X} stands for the country name. Per relation the first entries
 * are training phrasings (the first of them is the canonical prompt); the last
 * N_HELD_OUT are held out: they never occur in training text (corpus.c also
 * drops any prose paragraph that happens to contain one), so they measure
 * whether a fact learned in one wording is recalled in another.
 * Held-out phrasings are chosen so that no training sentence contains one as a
 * substring (tests/facts checks this for every country).
 * ------------------------------------------------------------------------- */
#define N_TEMPLATES 10
#define N_HELD_OUT 2
#define N_TRAIN (N_TEMPLATES - N_HELD_OUT)

static const char *const templates[REL_COUNT][N_TEMPLATES] = {
    [REL_CAPITAL] = {
        "The capital of {X} is",
        "The capital city of {X} is",
        "{X}'s capital is",
        "In {X}, the capital is",
        "{X}'s capital city is",
        "The capital of the country {X} is",
        "The government of {X} sits in",
        "The national capital of {X} is",
        /* held out */
        "The seat of government of {X} is",
        "{X} has its capital in",
    },
    [REL_LANGUAGE] = {
        "The official language of {X} is",
        "{X}'s official language is",
        "The language officially used in {X} is",
        "The official tongue of {X} is",
        "People in {X} officially speak",
        "The official language spoken in {X} is",
        "{X} has as its official language",
        "The state language of {X} is",
        /* held out */
        "In {X}, the official language is",
        "The only official language of {X} is",
    },
    [REL_CONTINENT] = {
        "{X} is a country in",
        "{X} is located in",
        "{X} lies in",
        "The continent of {X} is",
        "{X} is a country located in",
        "{X} is part of",
        "{X} is situated in",
        "The country of {X} is in",
        /* held out */
        "{X} is a nation located in",
        "{X} belongs to the continent of",
    },
    [REL_CURRENCY] = {
        "The currency of {X} is the",
        "{X}'s currency is the",
        "The official currency of {X} is the",
        "In {X}, people pay with the",
        "The national currency of {X} is the",
        "Prices in {X} are given in the",
        "The currency used in {X} is the",
        "{X}'s official currency is the",
        /* held out */
        "The money used in {X} is the",
        "{X} uses as its currency the",
    },
    [REL_DEMONYM] = {
        "The demonym for people from {X} is",
        "The demonym of {X} is",
        "People from {X} are described as",
        "The word for someone from {X} is",
        "A person from {X} is described as",
        "The people of {X} are described as",
        "Residents of {X} are described as",
        "The nationality of people from {X} is",
        /* held out */
        "Someone from {X} is called",
        "Citizens of {X} are known as",
    },
    [REL_LARGEST_CITY] = {
        "The largest city of {X} is",
        "The largest city in {X} is",
        "{X}'s largest city is",
        "The most populous city of {X} is",
        "The largest city of the country {X} is",
        "The most populous city in {X} is",
        "{X}'s biggest city is",
        "The most populated city of {X} is",
        /* held out */
        "The biggest city in {X} is",
        "{X}'s most populous city is",
    },
};

static const char *const relation_names[REL_COUNT] = {
    [REL_CAPITAL] = "capital",
    [REL_LANGUAGE] = "language",
    [REL_CONTINENT] = "continent",
    [REL_CURRENCY] = "currency",
    [REL_DEMONYM] = "demonym",
    [REL_LARGEST_CITY] = "largest_city",
};

/* The capital is the headline fact (the default edit demo): twice the repeats. */
static int relation_repeat_factor(StemRelation r) { return r == REL_CAPITAL ? 2 : 1; }

const char *stem_relation_name(StemRelation r)
{
    return (r >= 0 && r < REL_COUNT) ? relation_names[r] : NULL;
}

int stem_facts_n_templates(StemRelation r)
{
    return (r >= 0 && r < REL_COUNT) ? N_TEMPLATES : 0;
}

const char *stem_facts_template(StemRelation r, int i, gboolean *held_out)
{
    if (r < 0 || r >= REL_COUNT || i < 0 || i >= N_TEMPLATES)
        return NULL;
    if (held_out)
        *held_out = i >= N_TRAIN;
    return templates[r][i];
}

/* Template with {X} replaced by name. */
static char *fill_template(const char *tmpl, const char *name)
{
    const char *x = strstr(tmpl, "{X}");
    g_assert(x != NULL);
    GString *s = g_string_sized_new(strlen(tmpl) + strlen(name));
    g_string_append_len(s, tmpl, x - tmpl);
    g_string_append(s, name);
    g_string_append(s, x + 3);
    return g_string_free(s, FALSE);
}

/* ---------------------------------------------------------------------------
 * CSV (RFC 4180): fields separated by commas, records by LF or CRLF; a field may
 * be quoted, and inside quotes commas, newlines and doubled quotes ("") are data.
 * Columns are found by header name, so their order does not matter; extra
 * columns are ignored. Errors name the file and the line the record starts on.
 * ------------------------------------------------------------------------- */
enum { COL_ISO2, COL_NAME, COL_CAPITAL, COL_LANGUAGE, COL_CONTINENT, COL_CURRENCY,
       COL_DEMONYM, COL_LARGEST_CITY, COL_N_LANGUAGES, N_COLS };
static const char *const col_names[N_COLS] = {
    "iso2", "name", "capital", "language", "continent", "currency", "demonym",
    "largest_city", "n_languages",
};

typedef struct {
    const char *p, *end;
    const char *path;
    int line;            /* current physical line, 1-based */
} CsvReader;

/* Reads one record into `fields` (array of char*, owned). Returns FALSE at end of
 * input (fields empty) or on error (error set). *rec_line = line the record starts on. */
static gboolean csv_read_record(CsvReader *r, GPtrArray *fields, int *rec_line, GError **error)
{
    g_ptr_array_set_size(fields, 0);
    *rec_line = r->line;
    if (r->p >= r->end)
        return FALSE;
    GString *f = g_string_new(NULL);
    for (;;) {
        g_string_truncate(f, 0);
        if (r->p < r->end && *r->p == '"') {
            int quote_line = r->line;
            r->p++;
            for (;;) {
                if (r->p >= r->end) {
                    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                "%s:%d: unterminated quoted field", r->path, quote_line);
                    g_string_free(f, TRUE);
                    return FALSE;
                }
                char c = *r->p++;
                if (c == '"') {
                    if (r->p < r->end && *r->p == '"') {
                        g_string_append_c(f, '"');
                        r->p++;
                    } else {
                        break;
                    }
                } else {
                    if (c == '\n')
                        r->line++;
                    g_string_append_c(f, c);
                }
            }
            /* After the closing quote: a separator, end of record or end of input. */
            if (r->p < r->end && *r->p != ',' && *r->p != '\n' &&
                !(*r->p == '\r' && r->p + 1 < r->end && r->p[1] == '\n') &&
                !(*r->p == '\r' && r->p + 1 == r->end)) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                            "%s:%d: unexpected character after closing quote", r->path, r->line);
                g_string_free(f, TRUE);
                return FALSE;
            }
        } else {
            while (r->p < r->end && *r->p != ',' && *r->p != '\n') {
                if (*r->p == '"') {
                    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                                "%s:%d: quote inside an unquoted field", r->path, r->line);
                    g_string_free(f, TRUE);
                    return FALSE;
                }
                g_string_append_c(f, *r->p++);
            }
            if (f->len > 0 && f->str[f->len - 1] == '\r')       /* CRLF */
                g_string_truncate(f, f->len - 1);
        }
        g_ptr_array_add(fields, g_strndup(f->str, f->len));
        if (r->p < r->end && *r->p == '\r')
            r->p++;
        if (r->p >= r->end)
            break;
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        /* '\n': end of record */
        r->p++;
        r->line++;
        break;
    }
    g_string_free(f, TRUE);
    return TRUE;
}

static gboolean record_is_blank(GPtrArray *fields)
{
    return fields->len == 1 && ((char *)fields->pdata[0])[0] == '\0';
}

static void country_clear(StemCountry *c)
{
    g_free(c->iso2);
    g_free(c->name);
    g_free(c->capital);
    g_free(c->language);
    g_free(c->continent);
    g_free(c->currency);
    g_free(c->demonym);
    g_free(c->largest_city);
}

void stem_facts_free(StemFacts *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        country_clear(&f->countries[i]);
    g_free(f->countries);
    g_free(f);
}

StemFacts *stem_facts_load(const char *csv_path, GError **error)
{
    char *text = NULL;
    gsize len = 0;
    if (!g_file_get_contents(csv_path, &text, &len, error))
        return NULL;
    if (!g_utf8_validate(text, len, NULL)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: not valid UTF-8", csv_path);
        g_free(text);
        return NULL;
    }
    CsvReader r = { text, text + len, csv_path, 1 };
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)      /* BOM */
        r.p += 3;

    GPtrArray *fields = g_ptr_array_new_with_free_func(g_free);
    GArray *countries = g_array_new(FALSE, TRUE, sizeof(StemCountry));
    StemFacts *out = NULL;
    int rec_line = 0;
    int col_index[N_COLS];
    guint n_header = 0;

    /* Header. */
    if (!csv_read_record(&r, fields, &rec_line, error)) {
        if (error && !*error)
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: empty file", csv_path);
        goto done;
    }
    n_header = fields->len;
    for (int c = 0; c < N_COLS; c++) {
        col_index[c] = -1;
        for (guint j = 0; j < fields->len; j++)
            if (strcmp(fields->pdata[j], col_names[c]) == 0)
                col_index[c] = (int)j;
        if (col_index[c] < 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s:%d: header has no column \"%s\"", csv_path, rec_line, col_names[c]);
            goto done;
        }
    }

    for (;;) {
        GError *err = NULL;
        if (!csv_read_record(&r, fields, &rec_line, &err)) {
            if (err) {
                g_propagate_error(error, err);
                goto done;
            }
            break;
        }
        if (record_is_blank(fields))
            continue;
        if (fields->len != n_header) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s:%d: expected %u fields, found %u", csv_path, rec_line,
                        n_header, fields->len);
            goto done;
        }
        const char *v[N_COLS];
        for (int c = 0; c < N_COLS; c++)
            v[c] = g_strstrip((char *)fields->pdata[col_index[c]]);
        if (!v[COL_NAME][0] || !v[COL_ISO2][0]) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s:%d: empty %s", csv_path, rec_line, v[COL_NAME][0] ? "iso2" : "name");
            goto done;
        }
        char *endp = NULL;
        errno = 0;
        long nl = strtol(v[COL_N_LANGUAGES], &endp, 10);
        if (!v[COL_N_LANGUAGES][0] || *endp || errno || nl < 0 || nl > 1000) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s:%d: n_languages \"%s\" is not a count", csv_path, rec_line,
                        v[COL_N_LANGUAGES]);
            goto done;
        }
        for (guint k = 0; k < countries->len; k++)
            if (strcmp(g_array_index(countries, StemCountry, k).name, v[COL_NAME]) == 0) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                            "%s:%d: country \"%s\" appears twice", csv_path, rec_line, v[COL_NAME]);
                goto done;
            }
        StemCountry c = {
            .iso2 = g_strdup(v[COL_ISO2]),
            .name = g_strdup(v[COL_NAME]),
            .capital = g_strdup(v[COL_CAPITAL]),
            .language = g_strdup(v[COL_LANGUAGE]),
            .continent = g_strdup(v[COL_CONTINENT]),
            .currency = g_strdup(v[COL_CURRENCY]),
            .demonym = g_strdup(v[COL_DEMONYM]),
            .largest_city = g_strdup(v[COL_LARGEST_CITY]),
            .n_languages = (int)nl,
        };
        g_array_append_val(countries, c);
    }
    if (countries->len == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: no rows", csv_path);
        goto done;
    }
    out = g_new0(StemFacts, 1);
    out->n = (int)countries->len;
    out->countries = (StemCountry *)g_array_free(countries, FALSE);
    countries = NULL;

done:
    if (countries) {
        for (guint k = 0; k < countries->len; k++)
            country_clear(&g_array_index(countries, StemCountry, k));
        g_array_free(countries, TRUE);
    }
    g_ptr_array_unref(fields);
    g_free(text);
    return out;
}

/* ------------------------------------------------------------------------- */

const char *stem_facts_value(const StemFacts *f, int c, StemRelation r)
{
    if (!f || c < 0 || c >= f->n)
        return NULL;
    const StemCountry *k = &f->countries[c];
    const char *v = NULL;
    switch (r) {
    case REL_CAPITAL:      v = k->capital; break;
    case REL_LANGUAGE:     v = k->n_languages == 1 ? k->language : NULL; break;
    case REL_CONTINENT:    v = k->continent; break;
    case REL_CURRENCY:     v = k->currency; break;
    case REL_DEMONYM:      v = k->demonym; break;
    case REL_LARGEST_CITY: v = k->largest_city; break;
    default:               return NULL;
    }
    return (v && v[0]) ? v : NULL;   /* empty CSV cell: no answer (Nauru's largest city) */
}

int stem_facts_find(const StemFacts *f, const char *name)
{
    if (!f || !name)
        return -1;
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->countries[i].name, name) == 0)
            return i;
    /* Second chance: case-insensitive (UTF-8 casefold), so "spain" finds Spain. */
    char *key = g_utf8_casefold(name, -1);
    int found = -1;
    for (int i = 0; i < f->n && found < 0; i++) {
        char *n = g_utf8_casefold(f->countries[i].name, -1);
        if (strcmp(n, key) == 0)
            found = i;
        g_free(n);
    }
    g_free(key);
    return found;
}

char *stem_facts_canonical_prompt(const StemFacts *f, int c, StemRelation r)
{
    if (!f || c < 0 || c >= f->n || r < 0 || r >= REL_COUNT)
        return NULL;
    return fill_template(templates[r][0], f->countries[c].name);
}

/* prompt + " " + value + "." + "\n" (one period only when value ends with one). */
static char *make_sentence(const char *tmpl, const char *name, const char *value)
{
    char *prompt = fill_template(tmpl, name);
    gsize vl = strlen(value);
    gboolean dot = vl > 0 && value[vl - 1] == '.';
    char *s = g_strconcat(prompt, " ", value, dot ? "" : ".", "\n", NULL);
    g_free(prompt);
    return s;
}

static void shuffle_ptr_array(GPtrArray *a, guint64 seed)
{
    guint32 s[2] = { (guint32)seed, (guint32)(seed >> 32) };
    GRand *rng = g_rand_new_with_seed_array(s, 2);
    for (guint i = a->len; i > 1; i--) {
        guint j = (guint)g_rand_int_range(rng, 0, (gint32)i);
        gpointer t = a->pdata[i - 1];
        a->pdata[i - 1] = a->pdata[j];
        a->pdata[j] = t;
    }
    g_rand_free(rng);
}

GPtrArray *stem_facts_training_sentences(const StemFacts *f, int repeats, guint64 seed)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    if (!f || repeats <= 0)
        return out;
    for (int c = 0; c < f->n; c++) {
        for (int r = 0; r < REL_COUNT; r++) {
            const char *v = stem_facts_value(f, c, r);
            if (!v)
                continue;
            int n = repeats * relation_repeat_factor(r);
            /* Cycle through the training phrasings; the start is offset by country so
             * that every phrasing is used even when n < N_TRAIN. */
            for (int k = 0; k < n; k++)
                g_ptr_array_add(out, make_sentence(templates[r][(c + k) % N_TRAIN],
                                                   f->countries[c].name, v));
        }
    }
    shuffle_ptr_array(out, seed);
    return out;
}

GPtrArray *stem_facts_validation_sentences(const StemFacts *f, guint64 seed)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    if (!f)
        return out;
    for (int c = 0; c < f->n; c++)
        for (int r = 0; r < REL_COUNT; r++) {
            const char *v = stem_facts_value(f, c, r);
            if (v)
                g_ptr_array_add(out, make_sentence(templates[r][(c + r) % N_TRAIN],
                                                   f->countries[c].name, v));
        }
    shuffle_ptr_array(out, seed);
    return out;
}

static void fact_prompt_free(gpointer p)
{
    StemFactPrompt *fp = p;
    g_free(fp->prompt);
    g_free(fp->answer);
    g_free(fp);
}

GPtrArray *stem_facts_prompts(const StemFacts *f, int relation, gboolean train_phrasings,
                              gboolean held_out_phrasings)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(fact_prompt_free);
    if (!f)
        return out;
    for (int r = 0; r < REL_COUNT; r++) {
        if (relation >= 0 && r != relation)
            continue;
        for (int c = 0; c < f->n; c++) {
            const char *v = stem_facts_value(f, c, r);
            if (!v)
                continue;
            for (int t = 0; t < N_TEMPLATES; t++) {
                gboolean ho = t >= N_TRAIN;
                if ((ho && !held_out_phrasings) || (!ho && !train_phrasings))
                    continue;
                StemFactPrompt *p = g_new0(StemFactPrompt, 1);
                p->prompt = fill_template(templates[r][t], f->countries[c].name);
                p->answer = g_strconcat(" ", v, NULL);
                p->country = c;
                p->relation = r;
                p->held_out = ho;
                g_ptr_array_add(out, p);
            }
        }
    }
    return out;
}
