/* Recipes -> planned rows. Reads top to bottom: names and recipes, layer specs,
 * the planner (country tokenizations), entities and their variants, strategies,
 * assignments, rows, preview, JSON, checksums. See planner.h and README.md. */
#include "planner.h"
#include "rowhash.h"
#include "engine/facteval.h"
#include "engine/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if G_BYTE_ORDER != G_LITTLE_ENDIAN
#error "rows are stored and hashed as little-endian fp32; add byte swapping for big-endian hosts"
#endif

G_DEFINE_QUARK(stem-edit-error-quark, stem_edit_error)

/* Longest entity we plan, in tokens per variant: a byte-level tokenizer spells
 * "Saint Vincent and the Grenadines" in 33 tokens; beyond this it is not an entity. */
#define MAX_ENTITY_TOKENS 64
#define MAX_ENTITY_BYTES 256

/* ------------------------------------------------------------------ names */

static const char *const kind_names[] = { "swap", "blend", "ablate" };
static const char *const strategy_names[STEM_STRAT_COUNT] = {
    "auto", "one-to-one", "left-pad", "right-pad", "copy", "subset-first", "subset-last", "average",
};

static const char *const variant_set_names[] = { "all", "mid", "start" };

const char *stem_variant_set_name(StemVariantSet v)
{
    return (v >= 0 && v < (int)G_N_ELEMENTS(variant_set_names)) ? variant_set_names[v] : "?";
}

gboolean stem_variant_set_from_name(const char *name, StemVariantSet *out)
{
    for (int i = 0; name && i < (int)G_N_ELEMENTS(variant_set_names); i++)
        if (!strcmp(name, variant_set_names[i])) {
            *out = (StemVariantSet)i;
            return TRUE;
        }
    return FALSE;
}

const char *stem_edit_kind_name(StemEditKind k)
{
    return (k >= 0 && k < (int)G_N_ELEMENTS(kind_names)) ? kind_names[k] : "?";
}

gboolean stem_edit_kind_from_name(const char *name, StemEditKind *out)
{
    for (int i = 0; name && i < (int)G_N_ELEMENTS(kind_names); i++)
        if (!strcmp(name, kind_names[i])) {
            *out = (StemEditKind)i;
            return TRUE;
        }
    return FALSE;
}

const char *stem_strategy_name(StemSwapStrategy s)
{
    return (s >= 0 && s < STEM_STRAT_COUNT) ? strategy_names[s] : "?";
}

gboolean stem_strategy_from_name(const char *name, StemSwapStrategy *out)
{
    for (int i = 0; name && i < STEM_STRAT_COUNT; i++)
        if (!strcmp(name, strategy_names[i])) {
            *out = (StemSwapStrategy)i;
            return TRUE;
        }
    return FALSE;
}

/* ------------------------------------------------------------------ recipes */

void stem_recipe_init(StemRecipe *r)
{
    memset(r, 0, sizeof *r);
    r->kind = STEM_EDIT_SWAP;
    r->strategy = STEM_STRAT_AUTO;
    r->alpha = 1.0;
    r->ablate = STEM_ABLATE_ZERO;
}

void stem_recipe_clear(StemRecipe *r)
{
    g_clear_pointer(&r->source, g_free);
    g_clear_pointer(&r->target, g_free);
    g_clear_pointer(&r->layers, g_free);
}

void stem_recipe_copy(StemRecipe *dst, const StemRecipe *src)
{
    *dst = *src;
    dst->source = g_strdup(src->source);
    dst->target = g_strdup(src->target);
    dst->layers = g_strdup(src->layers);
}

char *stem_recipe_to_json(const StemRecipe *r)
{
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "kind");
    json_builder_add_string_value(b, stem_edit_kind_name(r->kind));
    json_builder_set_member_name(b, "source");
    json_builder_add_string_value(b, r->source ? r->source : "");
    json_builder_set_member_name(b, "target");
    if (r->target) json_builder_add_string_value(b, r->target);
    else json_builder_add_null_value(b);
    json_builder_set_member_name(b, "strategy");
    json_builder_add_string_value(b, stem_strategy_name(r->strategy));
    json_builder_set_member_name(b, "layers");
    json_builder_add_string_value(b, r->layers && *r->layers ? r->layers : "all");
    json_builder_set_member_name(b, "alpha");
    json_builder_add_double_value(b, r->alpha);
    json_builder_set_member_name(b, "ablate");
    json_builder_add_string_value(b, r->ablate == STEM_ABLATE_MEAN ? "mean" : "zero");
    json_builder_set_member_name(b, "allow_subword");
    json_builder_add_boolean_value(b, r->allow_subword);
    json_builder_set_member_name(b, "variants");
    json_builder_add_string_value(b, stem_variant_set_name(r->variants));
    json_builder_end_object(b);
    JsonGenerator *g = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(g, root);
    char *s = json_generator_to_data(g, NULL);
    json_node_unref(root);
    g_object_unref(g);
    g_object_unref(b);
    return s;
}

gboolean stem_recipe_from_json(const char *json, StemRecipe *r, GError **error)
{
    stem_recipe_init(r);
    JsonParser *p = json_parser_new();
    gboolean ok = FALSE;
    if (!json || !json_parser_load_from_data(p, json, -1, NULL)) goto out;
    JsonNode *root = json_parser_get_root(p);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) goto out;
    JsonObject *o = json_node_get_object(root);
    const char *kind = json_object_get_string_member_with_default(o, "kind", NULL);
    const char *strat = json_object_get_string_member_with_default(o, "strategy", "auto");
    if (!kind || !stem_edit_kind_from_name(kind, &r->kind)) goto out;
    if (!stem_strategy_from_name(strat, &r->strategy)) goto out;
    const char *src = json_object_get_string_member_with_default(o, "source", NULL);
    if (!src) goto out;
    r->source = g_strdup(src);
    if (json_object_has_member(o, "target") && !json_object_get_null_member(o, "target")) {
        const char *t = json_object_get_string_member_with_default(o, "target", NULL);
        if (!t) goto out;
        r->target = g_strdup(t);
    }
    r->layers = g_strdup(json_object_get_string_member_with_default(o, "layers", "all"));
    r->alpha = json_object_get_double_member_with_default(o, "alpha", 1.0);
    const char *abl = json_object_get_string_member_with_default(o, "ablate", "zero");
    r->ablate = !strcmp(abl, "mean") ? STEM_ABLATE_MEAN : STEM_ABLATE_ZERO;
    r->allow_subword = json_object_get_boolean_member_with_default(o, "allow_subword", FALSE);
    if (!stem_variant_set_from_name(json_object_get_string_member_with_default(o, "variants", "all"), &r->variants))
        goto out;
    ok = TRUE;
out:
    g_object_unref(p);
    if (!ok) {
        stem_recipe_clear(r);
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_RECIPE, "a stored recipe does not parse");
    }
    return ok;
}

static char *describe(const StemRecipe *r)
{
    const char *layers = r->layers && *r->layers ? r->layers : "all";
    switch (r->kind) {
    case STEM_EDIT_ABLATE:
        return g_strdup_printf("ablate %s (%s row, alpha %g, layers %s)", r->source,
                               r->ablate == STEM_ABLATE_MEAN ? "mean" : "zero", r->alpha, layers);
    case STEM_EDIT_BLEND:
        return g_strdup_printf("%s -> %s (blend alpha %g, %s, layers %s)", r->source, r->target, r->alpha,
                               stem_strategy_name(r->strategy), layers);
    default:
        return g_strdup_printf("%s -> %s (swap, %s, layers %s)", r->source, r->target,
                               stem_strategy_name(r->strategy), layers);
    }
}

char *stem_recipe_describe(const StemRecipe *r)
{
    char *d = describe(r);
    if (r->variants == STEM_VARIANTS_ALL) return d;
    /* "... layers all)" -> "... layers all, mid-sentence only)" */
    size_t n = strlen(d);
    char *out = g_strdup_printf("%.*s, %s only)", (int)(n ? n - 1 : 0), d,
                                r->variants == STEM_VARIANTS_MID ? "mid-sentence" : "line-start");
    g_free(d);
    return out;
}

/* ------------------------------------------------------------------ layers */

gboolean stem_edit_parse_layers(const StemConfig *cfg, const char *spec, uint64_t *mask, GError **error)
{
    const uint64_t stem = cfg->stem_mask & (cfg->n_layers >= 64 ? ~0ull : ((1ull << cfg->n_layers) - 1));
    char *stem_list = stem_config_layers_string(cfg);
    gboolean ok = TRUE;
    *mask = 0;
    if (!spec || !*spec || !strcmp(spec, "all")) {
        *mask = stem;
        goto out;
    }
    /* comma list of layers or ranges a-b */
    char **parts = g_strsplit(spec, ",", -1);
    for (int i = 0; ok && parts[i]; i++) {
        char *p = g_strstrip(parts[i]);
        char *end = NULL;
        gint64 a = g_ascii_strtoll(p, &end, 10), b = a;
        if (end == p) ok = FALSE;
        else if (*end == '-') {
            char *p2 = end + 1;
            b = g_ascii_strtoll(p2, &end, 10);
            if (end == p2) ok = FALSE;
        }
        if (!ok || *end) {
            g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_LAYERS,
                        "bad layer list '%s' (expected 'all' or layer numbers like 1,3 or 1-3)", spec);
            ok = FALSE;
            break;
        }
        if (b < a) {
            g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_LAYERS, "bad layer range '%s'", p);
            ok = FALSE;
            break;
        }
        for (gint64 l = a; ok && l <= b; l++) {
            if (l < 0 || l >= cfg->n_layers) {
                g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_LAYERS,
                            "layer %" G_GINT64_FORMAT " is out of range (the model has %d layers, 0..%d; STEM layers: %s)",
                            l, cfg->n_layers, cfg->n_layers - 1, *stem_list ? stem_list : "none");
                ok = FALSE;
            } else if (!stem_config_is_stem(cfg, (int)l)) {
                g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_LAYERS,
                            "layer %" G_GINT64_FORMAT " is a dense layer, it has no table (STEM layers: %s)", l,
                            *stem_list ? stem_list : "none");
                ok = FALSE;
            } else {
                *mask |= 1ull << l;
            }
        }
    }
    g_strfreev(parts);
    if (ok && !*mask) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_LAYERS, "the layer list '%s' is empty", spec);
        ok = FALSE;
    }
out:
    g_free(stem_list);
    return ok;
}

/* ------------------------------------------------------------------ planner */

struct StemPlanner {
    StemModel *m;
    StemFacts *own_facts;
    const StemFacts *facts;
    /* token -> GArray of country indices whose " name" or "name" contains it */
    GHashTable *token_countries;
    float **mean_rows;      /* [n_stem] lazily: mean of the base rows of table j */
};

static void garray_unref(gpointer a) { g_array_unref(a); }

static int32_t *encode(const StemTokenizer *tok, const char *s, int *n)
{
    size_t nn = 0;
    int32_t *ids = stem_tokenizer_encode(tok, s, strlen(s), &nn);
    *n = (int)nn;
    return ids;
}

StemPlanner *stem_planner_new(StemModel *m, const StemFacts *facts)
{
    StemPlanner *p = g_new0(StemPlanner, 1);
    p->m = m;
    if (facts) {
        p->facts = facts;
    } else {
        p->own_facts = stem_facts_load_default(NULL);
        p->facts = p->own_facts;
    }
    p->token_countries = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, garray_unref);
    if (m->tok && p->facts) {
        /* every country's two main spellings: ~400 short encodes, done once */
        for (int c = 0; c < p->facts->n; c++) {
            for (int sp = 0; sp < 2; sp++) {
                char *s = g_strconcat(sp ? " " : "", p->facts->countries[c].name, NULL);
                int n = 0;
                int32_t *ids = encode(m->tok, s, &n);
                for (int i = 0; i < n; i++) {
                    GArray *a = g_hash_table_lookup(p->token_countries, GINT_TO_POINTER(ids[i]));
                    if (!a) {
                        a = g_array_new(FALSE, FALSE, sizeof(int));
                        g_hash_table_insert(p->token_countries, GINT_TO_POINTER(ids[i]), a);
                    }
                    if (a->len == 0 || g_array_index(a, int, a->len - 1) != c) g_array_append_val(a, c);
                }
                g_free(ids);
                g_free(s);
            }
        }
    }
    p->mean_rows = g_new0(float *, MAX(stem_config_n_stem(&m->cfg), 1));
    return p;
}

void stem_planner_free(StemPlanner *p)
{
    if (!p) return;
    int ns = stem_config_n_stem(&p->m->cfg);
    for (int j = 0; j < ns; j++) g_free(p->mean_rows[j]);
    g_free(p->mean_rows);
    g_hash_table_destroy(p->token_countries);
    if (p->own_facts) stem_facts_free(p->own_facts);
    g_free(p);
}

StemModel *stem_planner_model(StemPlanner *p) { return p->m; }
const StemFacts *stem_planner_facts(StemPlanner *p) { return p->facts; }

/* Mean of the BASE rows of table j (mean ablation). O(V * F) once per layer;
 * base rather than effective so an ablation does not depend on other edits. */
static const float *mean_row(StemPlanner *p, int j)
{
    if (!p->mean_rows[j]) {
        const int V = p->m->cfg.vocab, F = p->m->cfg.ffn_dim;
        double *acc = g_new0(double, F);
        float *row = g_new(float, F);
        for (int t = 0; t < V; t++) {
            stem_tables_base_row(p->m->tables, j, t, row);
            for (int i = 0; i < F; i++) acc[i] += row[i];
        }
        p->mean_rows[j] = g_new(float, F);
        for (int i = 0; i < F; i++) p->mean_rows[j][i] = (float)(acc[i] / V);
        g_free(acc);
        g_free(row);
    }
    return p->mean_rows[j];
}

/* ------------------------------------------------------------------ entities and variants */

char *stem_edit_token_text(const StemTokenizer *tok, int id)
{
    return stem_tokenizer_token_text(tok, id);
}

static char *ids_text(const StemTokenizer *tok, const int32_t *ids, int n)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < n; i++) {
        char *t = stem_edit_token_text(tok, ids[i]);
        if (i) g_string_append_c(s, '|');
        g_string_append(s, t);
        g_free(t);
    }
    return g_string_free(s, FALSE);
}

/* Pre-tokenizer chunks of s, counted the way engine/tokenizer.c splits text
 * (a word with its leading space, digit runs, punctuation runs). A variant is a
 * "whole-word" spelling when it encodes to exactly one token per chunk: the
 * tokenizer learned each word as a unit, so its rows belong to that word rather
 * than to sub-word pieces shared with unrelated words. (A heuristic copy of the
 * tokenizer's chunking; it only decides which casing variants are offered.) */
static int byte_class(unsigned char c)
{
    if (c >= 0x80 || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return 0;
    if (c >= '0' && c <= '9') return 1;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f') return 3;
    return 2;
}

static int count_chunks(const char *s)
{
    int n = 0;
    size_t len = strlen(s), i = 0;
    while (i < len) {
        int c = byte_class((unsigned char)s[i]);
        if (s[i] == ' ' && i + 1 < len && byte_class((unsigned char)s[i + 1]) != 3) {
            i++;
            c = byte_class((unsigned char)s[i]);
        }
        size_t start = i;
        while (i < len && byte_class((unsigned char)s[i]) == c && (c != 1 || i - start < 3)) i++;
        n++;
    }
    return n;
}

static gboolean whole_words(const StemTokenizer *tok, const char *s)
{
    int n = 0;
    int32_t *ids = encode(tok, s, &n);
    g_free(ids);
    return n > 0 && n == count_chunks(s);
}

/* Resolve an entity: trimmed, one line, known (a country or whole-word tokens).
 * Country names are canonicalized to the table's spelling ("spain" -> "Spain"). */
static char *resolve_entity(StemPlanner *p, const char *role, const char *text, gboolean allow_subword,
                            int *country, GError **error)
{
    *country = -1;
    char *e = g_strstrip(g_strdup(text ? text : ""));
    if (!*e) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_ENTITY, "the %s entity is empty", role);
        g_free(e);
        return NULL;
    }
    if (strlen(e) > MAX_ENTITY_BYTES || strpbrk(e, "\n\r\t") || !g_utf8_validate(e, -1, NULL)) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_ENTITY,
                    "the %s entity must be one line of UTF-8 text of at most %d bytes", role, MAX_ENTITY_BYTES);
        g_free(e);
        return NULL;
    }
    int c = p->facts ? stem_facts_find(p->facts, e) : -1;
    if (c >= 0) {
        *country = c;
        g_free(e);
        return g_strdup(p->facts->countries[c].name);
    }
    char *mid = g_strconcat(" ", e, NULL);
    gboolean known = whole_words(p->m->tok, mid);
    if (!known && !allow_subword) {
        int n = 0;
        int32_t *ids = encode(p->m->tok, mid, &n);
        char *pieces = ids_text(p->m->tok, ids, n);
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_ENTITY,
                    "unknown %s entity '%s': not a country of the facts table%s, and '%s' is not whole-word tokens "
                    "(it splits into %s); pass --allow-subword to edit those pieces anyway",
                    role, e, p->facts ? "" : " (not found: set STEM_DATA_DIR)", mid, pieces);
        g_free(pieces);
        g_free(ids);
        g_free(mid);
        g_free(e);
        return NULL;
    }
    g_free(mid);
    return e;
}

/* Casing transforms; 0 is the entity as given. */
enum { CASE_AS_IS, CASE_LOWER, CASE_UPPER, N_CASES };
static const char *const case_names[N_CASES] = { "", " lower", " upper" };

static char *apply_case(const char *s, int k)
{
    switch (k) {
    case CASE_LOWER: return g_utf8_strdown(s, -1);
    case CASE_UPPER: return g_utf8_strup(s, -1);
    default: return g_strdup(s);
    }
}

static void variant_free(gpointer v)
{
    StemPlanVariant *x = v;
    g_free(x->form);
    g_free(x->source_text);
    g_free(x->target_text);
    g_free(x->source_ids);
    g_free(x->target_ids);
    g_free(x->note);
    g_free(x);
}

static gboolean same_ids(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
}

/* The variants: for each casing (as given, lower, upper) and each position
 * (mid-sentence " X", line start "X"). The as-given spellings are always listed;
 * casing variants only when the source spelling is whole-word tokens (else they
 * would edit generic sub-word pieces). The target side uses the same casing
 * when it is whole-word tokens too, else its as-given spelling. Duplicate source
 * tokenizations are listed once. */
static GPtrArray *make_variants(StemPlanner *p, const char *src, const char *tgt, StemVariantSet which)
{
    const StemTokenizer *tok = p->m->tok;
    GPtrArray *vs = g_ptr_array_new_with_free_func(variant_free);
    for (int k = 0; k < N_CASES; k++) {
        char *cs = apply_case(src, k);
        char *ct = tgt ? apply_case(tgt, k) : NULL;
        if (k != CASE_AS_IS && !strcmp(cs, src)) {
            g_free(cs);
            g_free(ct);
            continue;
        }
        for (int start = 0; start < 2; start++) {
            if ((which == STEM_VARIANTS_MID && start) || (which == STEM_VARIANTS_START && !start)) continue;
            char *s_text = g_strconcat(start ? "" : " ", cs, NULL);
            if (k != CASE_AS_IS && !whole_words(tok, s_text)) {
                g_free(s_text);
                continue;
            }
            StemPlanVariant *v = g_new0(StemPlanVariant, 1);
            v->form = g_strconcat(start ? "line-start" : "mid-sentence", case_names[k], NULL);
            v->source_text = s_text;
            v->source_ids = encode(tok, s_text, &v->n_source);
            gboolean dup = FALSE;
            for (guint i = 0; i < vs->len && !dup; i++) {
                StemPlanVariant *o = g_ptr_array_index(vs, i);
                dup = same_ids(o->source_ids, o->n_source, v->source_ids, v->n_source);
            }
            if (dup) {
                variant_free(v);
                continue;
            }
            if (tgt) {
                char *t_text = g_strconcat(start ? "" : " ", ct, NULL);
                if (k != CASE_AS_IS && !whole_words(tok, t_text)) {
                    g_free(t_text);
                    t_text = g_strconcat(start ? "" : " ", tgt, NULL);
                    v->note = g_strdup_printf("the target's%s spelling is not whole-word tokens: using '%s'",
                                              case_names[k], t_text);
                }
                v->target_text = t_text;
                v->target_ids = encode(tok, t_text, &v->n_target);
            }
            v->edited = TRUE;
            g_ptr_array_add(vs, v);
        }
        g_free(cs);
        g_free(ct);
    }
    return vs;
}

/* ------------------------------------------------------------------ strategies */

static int pad_token(const StemModel *m)
{
    /* pad -> eos -> bos: the first special token the vocabulary has */
    const int cand[3] = { STEM_TOK_PAD, STEM_TOK_EOS, STEM_TOK_BOS };
    for (int i = 0; i < 3; i++)
        if (cand[i] < m->cfg.vocab && (!m->tok || stem_tokenizer_token_bytes(m->tok, cand[i], NULL)))
            return cand[i];
    return -1;
}

StemSwapStrategy stem_strategy_resolve(StemSwapStrategy s, int ns, int nt)
{
    if (s != STEM_STRAT_AUTO) return s;
    return ns == nt ? STEM_STRAT_ONE_TO_ONE : STEM_STRAT_AVERAGE;
}

const char *stem_strategy_domain(StemSwapStrategy s, int ns, int nt)
{
    if (ns <= 0 || nt <= 0) return "an empty token sequence";
    s = stem_strategy_resolve(s, ns, nt);
    if (ns == nt || s == STEM_STRAT_AVERAGE) return NULL;
    switch (s) {
    case STEM_STRAT_ONE_TO_ONE: return "one-to-one needs equal token counts";
    case STEM_STRAT_LEFT_PAD:
    case STEM_STRAT_RIGHT_PAD:
    case STEM_STRAT_COPY: return ns < nt ? "pad and copy need the source at least as long as the target" : NULL;
    case STEM_STRAT_SUBSET_FIRST:
    case STEM_STRAT_SUBSET_LAST: return ns > nt ? "subset needs the target at least as long as the source" : NULL;
    default: return "unknown strategy";
    }
}

int stem_strategy_position(StemSwapStrategy s, int ns, int nt, int i)
{
    if (i < 0 || i >= ns || stem_strategy_domain(s, ns, nt)) return STEM_MAP_INVALID;
    s = stem_strategy_resolve(s, ns, nt);
    switch (s) {
    case STEM_STRAT_AVERAGE: return STEM_MAP_ALL;
    case STEM_STRAT_LEFT_PAD: return i < ns - nt ? STEM_MAP_PAD : i - (ns - nt);
    case STEM_STRAT_RIGHT_PAD: return i < nt ? i : STEM_MAP_PAD;
    case STEM_STRAT_COPY: return i % nt;
    case STEM_STRAT_SUBSET_LAST: return nt - ns + i;
    default: return i;   /* one-to-one, subset-first */
    }
}

/* The target mix for source position i (strategy in domain). */
static void strategy_mix(StemSwapStrategy s, int i, int ns, const int32_t *t, int nt, int pad, GArray *tok,
                         GArray *w)
{
    int k = stem_strategy_position(s, ns, nt, i);
    if (k == STEM_MAP_ALL) {
        for (int q = 0; q < nt; q++) {
            double wq = 1.0 / nt;
            g_array_append_val(tok, t[q]);
            g_array_append_val(w, wq);
        }
        return;
    }
    int32_t id = k == STEM_MAP_PAD ? pad : t[k];
    double one = 1.0;
    g_array_append_val(tok, id);
    g_array_append_val(w, one);
}

/* ------------------------------------------------------------------ plans */

static void shared_free(gpointer x)
{
    StemPlanShared *s = x;
    g_free(s->text);
    g_ptr_array_unref(s->entities);
    g_free(s);
}

static void assign_clear(gpointer x)
{
    StemPlanAssign *a = x;
    g_free(a->mix_tok);
    g_free(a->mix_w);
}

void stem_edit_plan_free(StemEditPlan *p)
{
    if (!p) return;
    stem_recipe_clear(&p->recipe);
    if (p->variants) g_ptr_array_unref(p->variants);
    if (p->assign) g_array_unref(p->assign);
    if (p->shared) g_ptr_array_unref(p->shared);
    if (p->warnings) g_ptr_array_unref(p->warnings);
    g_free(p->layers);
    g_free(p->tokens);
    g_free(p->before);
    g_free(p->after);
    g_free(p);
}

static gboolean same_mix(const StemPlanAssign *a, const GArray *tok, const GArray *w)
{
    if ((guint)a->n_mix != tok->len) return FALSE;
    for (int k = 0; k < a->n_mix; k++)
        if (a->mix_tok[k] != g_array_index(tok, int32_t, k) || a->mix_w[k] != g_array_index(w, double, k))
            return FALSE;
    return TRUE;
}

static void warn(StemEditPlan *p, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void warn(StemEditPlan *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_ptr_array_add(p->warnings, g_strdup_vprintf(fmt, ap));
    va_end(ap);
}

/* Check the recipe, resolve entities, list variants and assignments (no rows). */
static StemEditPlan *plan_assignments(StemPlanner *pl, const StemRecipe *r, gboolean need_tables, GError **error)
{
    StemModel *m = pl->m;
    if (!m->tok) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_MODEL, "the model has no tokenizer");
        return NULL;
    }
    if (need_tables && stem_config_n_stem(&m->cfg) == 0) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_MODEL,
                    "the model has no STEM layer: there is no table to edit");
        return NULL;
    }
    if (r->kind < STEM_EDIT_SWAP || r->kind > STEM_EDIT_ABLATE) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_RECIPE, "unknown edit kind");
        return NULL;
    }
    if (r->variants < STEM_VARIANTS_ALL || r->variants > STEM_VARIANTS_START) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_RECIPE, "unknown variant set");
        return NULL;
    }
    if (r->strategy < 0 || r->strategy >= STEM_STRAT_COUNT) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_STRATEGY, "unknown strategy");
        return NULL;
    }
    if (!(r->alpha >= 0.0 && r->alpha <= 1.0)) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_ALPHA, "alpha must be in [0, 1] (got %g)", r->alpha);
        return NULL;
    }
    if (r->kind == STEM_EDIT_SWAP && r->alpha != 1.0) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_ALPHA,
                    "a swap copies the target rows (alpha 1): use a blend for alpha %g", r->alpha);
        return NULL;
    }
    uint64_t mask = 0;
    if (need_tables && !stem_edit_parse_layers(&m->cfg, r->layers, &mask, error)) return NULL;
    if (r->kind == STEM_EDIT_ABLATE && r->target && *r->target) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_ENTITY, "an ablation takes no target");
        return NULL;
    }

    int sc = -1, tc = -1;
    char *src = resolve_entity(pl, "source", r->source, r->allow_subword, &sc, error);
    if (!src) return NULL;
    char *tgt = NULL;
    if (r->kind != STEM_EDIT_ABLATE) {
        tgt = resolve_entity(pl, "target", r->target, r->allow_subword, &tc, error);
        if (!tgt) {
            g_free(src);
            return NULL;
        }
        char *a = g_utf8_casefold(src, -1), *b = g_utf8_casefold(tgt, -1);
        gboolean same = !strcmp(a, b);
        g_free(a);
        g_free(b);
        if (same) {
            g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_ENTITY,
                        "the source and the target are the same entity ('%s')", src);
            g_free(src);
            g_free(tgt);
            return NULL;
        }
    }

    StemEditPlan *p = g_new0(StemEditPlan, 1);
    stem_recipe_copy(&p->recipe, r);
    p->layer_mask = mask;
    p->source_country = sc;
    p->target_country = tc;
    p->ffn = m->cfg.ffn_dim;
    p->warnings = g_ptr_array_new_with_free_func(g_free);
    p->shared = g_ptr_array_new_with_free_func(shared_free);
    p->assign = g_array_new(FALSE, TRUE, sizeof(StemPlanAssign));
    g_array_set_clear_func(p->assign, assign_clear);
    p->variants = make_variants(pl, src, tgt, r->variants);
    const int pad = pad_token(m);

    GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);   /* token -> assign index + 1 */
    GArray *mt = g_array_new(FALSE, FALSE, sizeof(int32_t));
    GArray *mw = g_array_new(FALSE, FALSE, sizeof(double));
    for (guint vi = 0; vi < p->variants->len; vi++) {
        StemPlanVariant *v = g_ptr_array_index(p->variants, vi);
        if (v->n_source == 0 || v->n_source > MAX_ENTITY_TOKENS || (tgt && (v->n_target == 0 || v->n_target > MAX_ENTITY_TOKENS))) {
            v->edited = FALSE;
            g_free(v->note);
            v->note = g_strdup_printf("longer than %d tokens", MAX_ENTITY_TOKENS);
            continue;
        }
        if (tgt && same_ids(v->source_ids, v->n_source, v->target_ids, v->n_target)) {
            v->edited = FALSE;
            g_free(v->note);
            v->note = g_strdup("the same tokens as the target");
            continue;
        }
        if (tgt) {
            v->strategy = stem_strategy_resolve(r->strategy, v->n_source, v->n_target);
            const char *why = stem_strategy_domain(v->strategy, v->n_source, v->n_target);
            if (why) {
                v->edited = FALSE;
                g_free(v->note);
                v->note = g_strdup_printf("%s (%d vs %d tokens)", why, v->n_source, v->n_target);
                continue;
            }
            if ((v->strategy == STEM_STRAT_LEFT_PAD || v->strategy == STEM_STRAT_RIGHT_PAD) && pad < 0 &&
                v->n_source > v->n_target) {
                v->edited = FALSE;
                g_free(v->note);
                v->note = g_strdup("the vocabulary has no pad, eos or bos token to pad with");
                continue;
            }
        } else {
            v->strategy = r->strategy;
        }
        int n_assigned = 0;
        for (int i = 0; i < v->n_source; i++) {
            int32_t s = v->source_ids[i];
            g_array_set_size(mt, 0);
            g_array_set_size(mw, 0);
            if (tgt) {
                strategy_mix(v->strategy, i, v->n_source, v->target_ids, v->n_target, pad, mt, mw);
            } else {
                int32_t id = r->ablate == STEM_ABLATE_MEAN ? STEM_PLAN_MEAN : STEM_PLAN_ZERO;
                double one = 1.0;
                g_array_append_val(mt, id);
                g_array_append_val(mw, one);
            }
            /* a position that keeps its own row changes nothing */
            if (mt->len == 1 && g_array_index(mt, int32_t, 0) == s) continue;
            gpointer prev = g_hash_table_lookup(seen, GINT_TO_POINTER(s));
            if (prev) {
                StemPlanAssign *a = &g_array_index(p->assign, StemPlanAssign, GPOINTER_TO_INT(prev) - 1);
                if (!same_mix(a, mt, mw)) {
                    char *tt = stem_edit_token_text(m->tok, s);
                    StemPlanVariant *v0 = g_ptr_array_index(p->variants, a->variant);
                    warn(p, "token '%s' occurs in '%s' and '%s' with different target rows: kept the first (%s)", tt,
                         v0->source_text, v->source_text, v0->form);
                    g_free(tt);
                }
                continue;
            }
            StemPlanAssign a = { .token = s, .variant = (int)vi, .position = i, .n_mix = (int)mt->len };
            a.mix_tok = g_memdup2(mt->data, sizeof(int32_t) * mt->len);
            a.mix_w = g_memdup2(mw->data, sizeof(double) * mw->len);
            g_array_append_val(p->assign, a);
            g_hash_table_insert(seen, GINT_TO_POINTER(s), GINT_TO_POINTER(p->assign->len));
            n_assigned++;
        }
        if (n_assigned == 0 && !v->note) v->note = g_strdup("no token changes");
    }
    g_array_unref(mt);
    g_array_unref(mw);
    g_hash_table_destroy(seen);

    /* shared tokens: a table edit is global, every entity containing the token changes */
    for (guint i = 0; i < p->assign->len; i++) {
        StemPlanAssign *a = &g_array_index(p->assign, StemPlanAssign, i);
        GArray *cs = g_hash_table_lookup(pl->token_countries, GINT_TO_POINTER(a->token));
        if (!cs) continue;
        StemPlanShared *sh = NULL;
        for (guint k = 0; k < cs->len; k++) {
            int c = g_array_index(cs, int, k);
            if (c == sc) continue;
            if (!sh) {
                sh = g_new0(StemPlanShared, 1);
                sh->token = a->token;
                sh->text = stem_edit_token_text(m->tok, a->token);
                sh->entities = g_ptr_array_new_with_free_func(g_free);
            }
            g_ptr_array_add(sh->entities, g_strdup(pl->facts->countries[c].name));
        }
        if (!sh) continue;
        GString *names = g_string_new(NULL);
        for (guint k = 0; k < sh->entities->len && k < 5; k++)
            g_string_append_printf(names, "%s%s", k ? ", " : "", (char *)g_ptr_array_index(sh->entities, k));
        if (sh->entities->len > 5) g_string_append_printf(names, ", ... (%u more)", sh->entities->len - 5);
        warn(p, "token '%s' is shared with %u other entit%s (%s): a table edit is global, they change too", sh->text,
             sh->entities->len, sh->entities->len == 1 ? "y" : "ies", names->str);
        g_string_free(names, TRUE);
        g_ptr_array_add(p->shared, sh);
    }
    for (guint vi = 0; vi < p->variants->len; vi++) {
        StemPlanVariant *v = g_ptr_array_index(p->variants, vi);
        if (!v->edited && v->note) warn(p, "variant '%s' (%s) skipped: %s", v->source_text, v->form, v->note);
    }
    g_free(src);
    g_free(tgt);
    if (p->assign->len == 0) {
        GString *why = g_string_new(NULL);
        for (guint vi = 0; vi < p->variants->len; vi++) {
            StemPlanVariant *v = g_ptr_array_index(p->variants, vi);
            g_string_append_printf(why, "%s'%s': %s", vi ? "; " : "", v->source_text, v->note ? v->note : "no change");
        }
        g_set_error(error, STEM_EDIT_ERROR,
                    r->strategy != STEM_STRAT_AUTO ? STEM_EDIT_ERROR_STRATEGY : STEM_EDIT_ERROR_NOTHING,
                    "nothing to edit with strategy %s (%s)", stem_strategy_name(r->strategy), why->str);
        g_string_free(why, TRUE);
        stem_edit_plan_free(p);
        return NULL;
    }
    return p;
}

StemEditPlan *stem_planner_plan_tokens(StemPlanner *pl, const StemRecipe *r, GError **error)
{
    return plan_assignments(pl, r, FALSE, error);
}

typedef struct {
    int32_t layer, token;
    guint src;      /* index into the unsorted arrays */
} RowKey;

static int cmp_rowkey(const void *a, const void *b)
{
    const RowKey *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return x->token < y->token ? -1 : x->token > y->token;
}

StemEditPlan *stem_planner_plan(StemPlanner *pl, const StemRecipe *r, GError **error)
{
    StemEditPlan *p = plan_assignments(pl, r, TRUE, error);
    if (!p) return NULL;
    StemModel *m = pl->m;
    const int F = m->cfg.ffn_dim;
    int n_layers = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) n_layers += (int)((p->layer_mask >> l) & 1);
    const size_t cap = (size_t)n_layers * p->assign->len;
    float *before = g_new(float, cap * F), *after = g_new(float, cap * F);
    int32_t *ls = g_new(int32_t, cap), *ts = g_new(int32_t, cap);
    float *tmp = g_new(float, F);
    double *acc = g_new(double, F);
    size_t n = 0;
    p->tables_generation = stem_tables_generation(m->tables);
    const double alpha = p->recipe.kind == STEM_EDIT_SWAP ? 1.0 : p->recipe.alpha;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (!((p->layer_mask >> l) & 1)) continue;
        const int j = stem_config_stem_index(&m->cfg, l);
        for (guint i = 0; i < p->assign->len; i++) {
            StemPlanAssign *a = &g_array_index(p->assign, StemPlanAssign, i);
            float *bf = before + n * F, *af = after + n * F;
            stem_tables_row(m->tables, j, a->token, bf);
            memset(acc, 0, sizeof(double) * F);
            for (int k = 0; k < a->n_mix; k++) {
                const int32_t id = a->mix_tok[k];
                const float *src = tmp;
                if (id == STEM_PLAN_ZERO) memset(tmp, 0, sizeof(float) * F);
                else if (id == STEM_PLAN_MEAN) src = mean_row(pl, j);
                else stem_tables_row(m->tables, j, id, tmp);
                for (int q = 0; q < F; q++) acc[q] += a->mix_w[k] * src[q];
            }
            /* computed in double, rounded once: a single-token mix at alpha 1 is an exact copy */
            if (alpha == 1.0) {
                for (int q = 0; q < F; q++) af[q] = (float)acc[q];
            } else {
                for (int q = 0; q < F; q++) af[q] = (float)((1.0 - alpha) * bf[q] + alpha * acc[q]);
            }
            if (memcmp(af, bf, sizeof(float) * F) == 0) continue;   /* no change: not a row of the plan */
            ls[n] = l;
            ts[n] = a->token;
            n++;
        }
    }
    g_free(tmp);
    g_free(acc);
    if (n == 0) {
        g_set_error(error, STEM_EDIT_ERROR, STEM_EDIT_ERROR_NOTHING,
                    "the plan changes no row (%s)",
                    alpha == 0.0 ? "alpha 0 keeps the source rows"
                                 : "the rows already hold what the recipe writes: is it applied already?");
        g_free(before);
        g_free(after);
        g_free(ls);
        g_free(ts);
        stem_edit_plan_free(p);
        return NULL;
    }
    /* canonical order (layer, token): the order rows are stored and hashed in */
    RowKey *keys = g_new(RowKey, n);
    for (size_t i = 0; i < n; i++) keys[i] = (RowKey){ ls[i], ts[i], (guint)i };
    qsort(keys, n, sizeof(RowKey), cmp_rowkey);
    p->n_rows = (int)n;
    p->layers = g_new(int32_t, n);
    p->tokens = g_new(int32_t, n);
    p->before = g_new(float, n * F);
    p->after = g_new(float, n * F);
    for (size_t i = 0; i < n; i++) {
        p->layers[i] = keys[i].layer;
        p->tokens[i] = keys[i].token;
        memcpy(p->before + i * F, before + (size_t)keys[i].src * F, sizeof(float) * F);
        memcpy(p->after + i * F, after + (size_t)keys[i].src * F, sizeof(float) * F);
    }
    g_free(keys);
    g_free(before);
    g_free(after);
    g_free(ls);
    g_free(ts);
    return p;
}

/* ------------------------------------------------------------------ preview */

struct StemOverlaySnapshot {
    int n, ffn;
    int32_t *j, *token;
    gboolean *had;
    float *rows;
};

StemOverlaySnapshot *stem_edit_plan_push(StemModel *m, const StemEditPlan *p)
{
    const int F = m->cfg.ffn_dim;
    StemOverlaySnapshot *s = g_new0(StemOverlaySnapshot, 1);
    s->n = p->n_rows;
    s->ffn = F;
    s->j = g_new(int32_t, MAX(s->n, 1));
    s->token = g_new(int32_t, MAX(s->n, 1));
    s->had = g_new(gboolean, MAX(s->n, 1));
    s->rows = g_new(float, (size_t)MAX(s->n, 1) * F);
    for (int i = 0; i < s->n; i++) {
        int j = stem_config_stem_index(&m->cfg, p->layers[i]);
        s->j[i] = j;
        s->token[i] = p->tokens[i];
        s->had[i] = stem_tables_has_override(m->tables, j, p->tokens[i]);
        if (s->had[i]) stem_tables_row(m->tables, j, p->tokens[i], s->rows + (size_t)i * F);
        stem_tables_set_override(m->tables, j, p->tokens[i], p->after + (size_t)i * F);
    }
    return s;
}

void stem_edit_plan_pop(StemModel *m, StemOverlaySnapshot *s)
{
    if (!s) return;
    for (int i = s->n - 1; i >= 0; i--) {
        if (s->had[i]) stem_tables_set_override(m->tables, s->j[i], s->token[i], s->rows + (size_t)i * s->ffn);
        else stem_tables_clear_override(m->tables, s->j[i], s->token[i]);
    }
    g_free(s->j);
    g_free(s->token);
    g_free(s->had);
    g_free(s->rows);
    g_free(s);
}

/* ------------------------------------------------------------------ JSON */

static void add_ids(JsonBuilder *b, const char *name, const StemTokenizer *tok, const int32_t *ids, int n)
{
    json_builder_set_member_name(b, name);
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++) {
        char *t = stem_edit_token_text(tok, ids[i]);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, ids[i]);
        json_builder_set_member_name(b, "text");
        json_builder_add_string_value(b, t);
        json_builder_end_object(b);
        g_free(t);
    }
    json_builder_end_array(b);
}

void stem_edit_plan_to_json(const StemEditPlan *p, StemModel *m, JsonBuilder *b)
{
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "recipe");
    char *rj = stem_recipe_to_json(&p->recipe);
    json_builder_add_value(b, json_from_string(rj, NULL));
    g_free(rj);
    json_builder_set_member_name(b, "layers");
    json_builder_begin_array(b);
    for (int l = 0; l < m->cfg.n_layers; l++)
        if ((p->layer_mask >> l) & 1) json_builder_add_int_value(b, l);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "source_is_country");
    json_builder_add_boolean_value(b, p->source_country >= 0);
    json_builder_set_member_name(b, "target_is_country");
    json_builder_add_boolean_value(b, p->target_country >= 0);
    json_builder_set_member_name(b, "variants");
    json_builder_begin_array(b);
    for (guint i = 0; i < p->variants->len; i++) {
        StemPlanVariant *v = g_ptr_array_index(p->variants, i);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "form");
        json_builder_add_string_value(b, v->form);
        json_builder_set_member_name(b, "source");
        json_builder_add_string_value(b, v->source_text);
        add_ids(b, "source_tokens", m->tok, v->source_ids, v->n_source);
        if (v->target_text) {
            json_builder_set_member_name(b, "target");
            json_builder_add_string_value(b, v->target_text);
            add_ids(b, "target_tokens", m->tok, v->target_ids, v->n_target);
        }
        json_builder_set_member_name(b, "strategy");
        json_builder_add_string_value(b, stem_strategy_name(v->strategy));
        json_builder_set_member_name(b, "edited");
        json_builder_add_boolean_value(b, v->edited);
        if (v->note) {
            json_builder_set_member_name(b, "note");
            json_builder_add_string_value(b, v->note);
        }
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "assignments");
    json_builder_begin_array(b);
    for (guint i = 0; i < p->assign->len; i++) {
        StemPlanAssign *a = &g_array_index(p->assign, StemPlanAssign, i);
        char *t = stem_edit_token_text(m->tok, a->token);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "token");
        json_builder_add_int_value(b, a->token);
        json_builder_set_member_name(b, "text");
        json_builder_add_string_value(b, t);
        json_builder_set_member_name(b, "variant");
        json_builder_add_int_value(b, a->variant);
        json_builder_set_member_name(b, "mix");
        json_builder_begin_array(b);
        for (int k = 0; k < a->n_mix; k++) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "token");
            json_builder_add_int_value(b, a->mix_tok[k]);
            char *mtx = a->mix_tok[k] == STEM_PLAN_ZERO   ? g_strdup("<zero row>")
                        : a->mix_tok[k] == STEM_PLAN_MEAN ? g_strdup("<mean row>")
                                                          : stem_edit_token_text(m->tok, a->mix_tok[k]);
            json_builder_set_member_name(b, "text");
            json_builder_add_string_value(b, mtx);
            g_free(mtx);
            json_builder_set_member_name(b, "weight");
            json_builder_add_double_value(b, a->mix_w[k]);
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        g_free(t);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "rows");
    json_builder_add_int_value(b, p->n_rows);
    json_builder_set_member_name(b, "warnings");
    json_builder_begin_array(b);
    for (guint i = 0; i < p->warnings->len; i++) json_builder_add_string_value(b, g_ptr_array_index(p->warnings, i));
    json_builder_end_array(b);
    json_builder_set_member_name(b, "shared_tokens");
    json_builder_begin_array(b);
    for (guint i = 0; i < p->shared->len; i++) {
        StemPlanShared *s = g_ptr_array_index(p->shared, i);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "token");
        json_builder_add_int_value(b, s->token);
        json_builder_set_member_name(b, "text");
        json_builder_add_string_value(b, s->text);
        json_builder_set_member_name(b, "entities");
        json_builder_begin_array(b);
        for (guint k = 0; k < s->entities->len; k++) json_builder_add_string_value(b, g_ptr_array_index(s->entities, k));
        json_builder_end_array(b);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
}

/* ------------------------------------------------------------------ checksums */

char *stem_edit_rows_checksum(int ffn, int n, const int32_t *layers, const int32_t *tokens, const float *before,
                              const float *after)
{
    GChecksum *c = rowhash_begin(ffn, n);
    for (int i = 0; i < n; i++)
        rowhash_row(c, ffn, layers[i], tokens[i], before + (size_t)i * ffn, after + (size_t)i * ffn);
    return rowhash_end(c);
}
