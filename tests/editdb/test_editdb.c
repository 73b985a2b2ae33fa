/* tests/editdb: planner, edit database, patch files, bake, metrics plumbing.
 *
 *   test-editdb [GTest options] [--property N]
 *
 * The property test runs N random apply / revert / reapply operations (default
 * 1000; the slow suite runs 10000) and after every one compares the effective
 * rows, byte for byte, with an independent model of the expected state: a list
 * of patch sets with their state, apply order and rows. */
#include "fixture.h"
#include "editdb/editdb.h"
#include "editdb/metrics.h"
#include "editdb/patchfile.h"
#include "engine/checkpoint.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <glib/gstdio.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *tmp;            /* per-run directory */
static char *model_a;        /* the model edited */
static char *model_b;        /* same tokenizer, other weights: "another model" */
static char *model_dense;    /* no STEM layer */
static int property_ops = 1000;
static int db_counter;

static char *new_db_path(void)
{
    return g_strdup_printf("%s/t%d.db", tmp, ++db_counter);
}

static StemModel *load(const char *path)
{
    GError *e = NULL;
    StemModel *m = stem_model_load(path, &e);
    g_assert_no_error(e);
    return m;
}

static int n_tokens(StemModel *m, const char *s)
{
    size_t n = 0;
    g_free(stem_tokenizer_encode(m->tok, s, strlen(s), &n));
    return (int)n;
}

static int token_of(StemModel *m, const char *s)
{
    int id = stem_tokenizer_lookup(m->tok, s, strlen(s));
    g_assert_cmpint(id, >=, 0);
    return id;
}

/* The k-th country whose mid-sentence name is one token. */
static const char *single_country(StemModel *m, int k)
{
    const StemFacts *f = fixture_facts();
    for (int c = 0; c < f->n; c++) {
        char *s = g_strconcat(" ", f->countries[c].name, NULL);
        int n = n_tokens(m, s);
        g_free(s);
        if (n == 1 && k-- == 0) return f->countries[c].name;
    }
    g_assert_not_reached();
    return NULL;
}

static void recipe(StemRecipe *r, const char *src, const char *tgt)
{
    stem_recipe_init(r);
    r->source = g_strdup(src);
    r->target = g_strdup(tgt);
}

static gboolean rows_equal(StemModel *m, int j, int token, const float *expect)
{
    float *row = g_new(float, m->cfg.ffn_dim);
    stem_tables_row(m->tables, j, token, row);
    gboolean eq = memcmp(row, expect, sizeof(float) * m->cfg.ffn_dim) == 0;
    g_free(row);
    return eq;
}

/* ------------------------------------------------------------------ planner */

static void test_strategy_map(void)
{
    struct { StemSwapStrategy s; int ns, nt; int expect[6]; } cases[] = {
        { STEM_STRAT_ONE_TO_ONE, 3, 3, { 0, 1, 2 } },
        { STEM_STRAT_ONE_TO_ONE, 3, 2, { STEM_MAP_INVALID } },
        { STEM_STRAT_LEFT_PAD, 4, 2, { STEM_MAP_PAD, STEM_MAP_PAD, 0, 1 } },
        { STEM_STRAT_LEFT_PAD, 2, 3, { STEM_MAP_INVALID } },
        { STEM_STRAT_RIGHT_PAD, 4, 2, { 0, 1, STEM_MAP_PAD, STEM_MAP_PAD } },
        { STEM_STRAT_COPY, 5, 2, { 0, 1, 0, 1, 0 } },
        { STEM_STRAT_COPY, 1, 2, { STEM_MAP_INVALID } },
        { STEM_STRAT_SUBSET_FIRST, 2, 4, { 0, 1 } },
        { STEM_STRAT_SUBSET_LAST, 2, 4, { 2, 3 } },
        { STEM_STRAT_SUBSET_LAST, 3, 2, { STEM_MAP_INVALID } },
        { STEM_STRAT_AVERAGE, 3, 2, { STEM_MAP_ALL, STEM_MAP_ALL, STEM_MAP_ALL } },
        { STEM_STRAT_AVERAGE, 2, 2, { STEM_MAP_ALL, STEM_MAP_ALL } },
        { STEM_STRAT_AUTO, 2, 2, { 0, 1 } },
        { STEM_STRAT_AUTO, 2, 3, { STEM_MAP_ALL, STEM_MAP_ALL } },
        { STEM_STRAT_LEFT_PAD, 2, 2, { 0, 1 } },
        { STEM_STRAT_SUBSET_FIRST, 2, 2, { 0, 1 } },
    };
    for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
        for (int i = 0; i < cases[c].ns; i++) {
            int want = cases[c].expect[0] == STEM_MAP_INVALID ? STEM_MAP_INVALID : cases[c].expect[i];
            g_assert_cmpint(stem_strategy_position(cases[c].s, cases[c].ns, cases[c].nt, i), ==, want);
        }
        g_assert_true((stem_strategy_domain(cases[c].s, cases[c].ns, cases[c].nt) == NULL) ==
                      (cases[c].expect[0] != STEM_MAP_INVALID));
    }
    for (int s = 0; s < STEM_STRAT_COUNT; s++) {
        StemSwapStrategy back;
        g_assert_true(stem_strategy_from_name(stem_strategy_name((StemSwapStrategy)s), &back));
        g_assert_cmpint(back, ==, s);
    }
}

static void test_recipe_json(void)
{
    StemRecipe r, q;
    recipe(&r, "United Kingdom", "Spain");
    r.kind = STEM_EDIT_BLEND;
    r.alpha = 0.375;
    r.strategy = STEM_STRAT_LEFT_PAD;
    r.variants = STEM_VARIANTS_START;
    g_free(r.layers);
    r.layers = g_strdup("1,2");
    char *j = stem_recipe_to_json(&r);
    g_assert_true(stem_recipe_from_json(j, &q, NULL));
    g_assert_cmpint(q.kind, ==, STEM_EDIT_BLEND);
    g_assert_cmpstr(q.source, ==, "United Kingdom");
    g_assert_cmpstr(q.target, ==, "Spain");
    g_assert_cmpfloat(q.alpha, ==, 0.375);
    g_assert_cmpint(q.strategy, ==, STEM_STRAT_LEFT_PAD);
    g_assert_cmpstr(q.layers, ==, "1,2");
    g_assert_cmpint(q.variants, ==, STEM_VARIANTS_START);
    GError *e = NULL;
    StemRecipe bad;
    g_assert_false(stem_recipe_from_json("{\"kind\": \"teleport\", \"source\": \"x\"}", &bad, &e));
    g_assert_error(e, STEM_EDIT_ERROR, STEM_EDIT_ERROR_RECIPE);
    g_clear_error(&e);
    g_free(j);
    stem_recipe_clear(&r);
    stem_recipe_clear(&q);
}

static void test_plan_swap_single(void)
{
    StemModel *m = load(model_a);
    StemPlanner *pl = stem_planner_new(m, fixture_facts());
    const char *S = single_country(m, 0), *T = single_country(m, 1);
    char *ms = g_strconcat(" ", S, NULL), *mt = g_strconcat(" ", T, NULL);
    const int s_id = token_of(m, ms), t_id = token_of(m, mt), F = m->cfg.ffn_dim;
    StemRecipe r;
    recipe(&r, S, T);
    GError *e = NULL;
    StemEditPlan *p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    g_assert_cmpuint(p->variants->len, >=, 2);
    StemPlanVariant *v0 = g_ptr_array_index(p->variants, 0);
    g_assert_cmpstr(v0->form, ==, "mid-sentence");
    g_assert_cmpstr(v0->source_text, ==, ms);
    g_assert_cmpstr(v0->target_text, ==, mt);
    g_assert_cmpint(v0->strategy, ==, STEM_STRAT_ONE_TO_ONE);
    StemPlanVariant *v1 = g_ptr_array_index(p->variants, 1);
    g_assert_cmpstr(v1->form, ==, "line-start");
    g_assert_cmpstr(v1->source_text, ==, S);
    /* every row of " S" is " T"'s base row, bit for bit, in both STEM layers */
    float *want = g_new(float, F);
    int found = 0;
    for (int i = 0; i < p->n_rows; i++) {
        if (i) g_assert_true(p->layers[i] > p->layers[i - 1] || (p->layers[i] == p->layers[i - 1] && p->tokens[i] > p->tokens[i - 1]));
        g_assert_true(p->layers[i] == 1 || p->layers[i] == 2);
        if (p->tokens[i] != s_id) continue;
        found++;
        stem_tables_base_row(m->tables, stem_config_stem_index(&m->cfg, p->layers[i]), t_id, want);
        g_assert_cmpmem(p->after + (size_t)i * F, F * 4, want, F * 4);
        stem_tables_base_row(m->tables, stem_config_stem_index(&m->cfg, p->layers[i]), s_id, want);
        g_assert_cmpmem(p->before + (size_t)i * F, F * 4, want, F * 4);
    }
    g_assert_cmpint(found, ==, 2);
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, 0);   /* planning writes nothing */
    stem_edit_plan_free(p);

    /* mid-sentence spellings only: the line-start variant is not planned */
    r.variants = STEM_VARIANTS_MID;
    p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    for (guint i = 0; i < p->variants->len; i++)
        g_assert_true(g_str_has_prefix(((StemPlanVariant *)g_ptr_array_index(p->variants, i))->form, "mid-sentence"));
    for (int i = 0; i < p->n_rows; i++) g_assert_cmpint(p->tokens[i], ==, s_id);
    stem_edit_plan_free(p);
    r.variants = STEM_VARIANTS_ALL;

    /* one layer only */
    g_free(r.layers);
    r.layers = g_strdup("2");
    p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    for (int i = 0; i < p->n_rows; i++) g_assert_cmpint(p->layers[i], ==, 2);
    stem_edit_plan_free(p);

    /* blend: (1 - a) * own + a * target, computed in double, rounded once */
    r.kind = STEM_EDIT_BLEND;
    r.alpha = 0.25;
    p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    float *own = g_new(float, F);
    for (int i = 0; i < p->n_rows; i++) {
        if (p->tokens[i] != s_id) continue;
        int j = stem_config_stem_index(&m->cfg, p->layers[i]);
        stem_tables_base_row(m->tables, j, s_id, own);
        stem_tables_base_row(m->tables, j, t_id, want);
        for (int q = 0; q < F; q++)
            g_assert_cmpfloat(p->after[(size_t)i * F + q], ==, (float)(0.75 * own[q] + 0.25 * (double)want[q]));
    }
    stem_edit_plan_free(p);

    /* ablate: zero rows, mean rows */
    StemRecipe ab;
    stem_recipe_init(&ab);
    ab.kind = STEM_EDIT_ABLATE;
    ab.source = g_strdup(S);
    p = stem_planner_plan(pl, &ab, &e);
    g_assert_no_error(e);
    for (size_t q = 0; q < (size_t)p->n_rows * F; q++) g_assert_cmpfloat(p->after[q], ==, 0.0f);
    stem_edit_plan_free(p);
    ab.ablate = STEM_ABLATE_MEAN;
    p = stem_planner_plan(pl, &ab, &e);
    g_assert_no_error(e);
    for (int i = 0; i < p->n_rows; i++) {
        int j = stem_config_stem_index(&m->cfg, p->layers[i]);
        double *acc = g_new0(double, F);
        for (int t = 0; t < m->cfg.vocab; t++) {
            stem_tables_base_row(m->tables, j, t, own);
            for (int q = 0; q < F; q++) acc[q] += own[q];
        }
        for (int q = 0; q < F; q++) g_assert_cmpfloat_with_epsilon(p->after[(size_t)i * F + q], acc[q] / m->cfg.vocab, 1e-6);
        g_free(acc);
    }
    stem_edit_plan_free(p);
    stem_recipe_clear(&ab);

    g_free(own);
    g_free(want);
    g_free(ms);
    g_free(mt);
    stem_recipe_clear(&r);
    stem_planner_free(pl);
    stem_model_free(m);
}

static void test_plan_average_and_shared(void)
{
    StemModel *m = load(model_a);
    StemPlanner *pl = stem_planner_new(m, fixture_facts());
    const int F = m->cfg.ffn_dim;
    const char *S = single_country(m, 2);
    g_assert_cmpint(n_tokens(m, " United States"), ==, 2);
    /* single -> two tokens: auto = average of " United" and " States" */
    StemRecipe r;
    recipe(&r, S, "United States");
    GError *e = NULL;
    StemEditPlan *p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    char *ms = g_strconcat(" ", S, NULL);
    int s_id = token_of(m, ms), u = token_of(m, " United"), st = token_of(m, " States");
    float *a = g_new(float, F), *b = g_new(float, F);
    int found = 0;
    for (int i = 0; i < p->n_rows; i++) {
        if (p->tokens[i] != s_id) continue;
        found++;
        int j = stem_config_stem_index(&m->cfg, p->layers[i]);
        stem_tables_base_row(m->tables, j, u, a);
        stem_tables_base_row(m->tables, j, st, b);
        for (int q = 0; q < F; q++) g_assert_cmpfloat(p->after[(size_t)i * F + q], ==, (float)(0.5 * a[q] + 0.5 * (double)b[q]));
    }
    g_assert_cmpint(found, ==, 2);
    StemPlanVariant *v0 = g_ptr_array_index(p->variants, 0);
    g_assert_cmpint(v0->strategy, ==, STEM_STRAT_AVERAGE);
    stem_edit_plan_free(p);
    stem_recipe_clear(&r);

    /* the other way round: " United" is shared with the United Kingdom and the UAE */
    recipe(&r, "United States", S);
    r.strategy = STEM_STRAT_RIGHT_PAD;
    p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    gboolean warned = FALSE;
    for (guint i = 0; i < p->shared->len; i++) {
        StemPlanShared *sh = g_ptr_array_index(p->shared, i);
        if (sh->token != u) continue;
        gboolean uk = FALSE, uae = FALSE, us = FALSE;
        for (guint k = 0; k < sh->entities->len; k++) {
            const char *n = g_ptr_array_index(sh->entities, k);
            uk |= !strcmp(n, "United Kingdom");
            uae |= !strcmp(n, "United Arab Emirates");
            us |= !strcmp(n, "United States");
        }
        g_assert_true(uk && uae && !us);
        warned = TRUE;
    }
    g_assert_true(warned);
    gboolean in_text = FALSE;
    for (guint i = 0; i < p->warnings->len; i++) in_text |= strstr(g_ptr_array_index(p->warnings, i), "United Kingdom") != NULL;
    g_assert_true(in_text);
    /* right-pad: " States" gets the pad token's row */
    int pad = STEM_TOK_PAD;
    for (int i = 0; i < p->n_rows; i++) {
        if (p->tokens[i] != st) continue;
        stem_tables_base_row(m->tables, stem_config_stem_index(&m->cfg, p->layers[i]), pad, a);
        g_assert_cmpmem(p->after + (size_t)i * F, F * 4, a, F * 4);
    }
    stem_edit_plan_free(p);
    stem_recipe_clear(&r);

    /* one-to-one cannot map 2 tokens onto 1 in any variant */
    recipe(&r, "United States", S);
    r.strategy = STEM_STRAT_ONE_TO_ONE;
    p = stem_planner_plan(pl, &r, &e);
    if (p) {
        for (guint i = 0; i < p->variants->len; i++) {
            StemPlanVariant *v = g_ptr_array_index(p->variants, i);
            if (v->edited) g_assert_cmpint(v->n_source, ==, v->n_target);
        }
        stem_edit_plan_free(p);
    } else {
        g_assert_error(e, STEM_EDIT_ERROR, STEM_EDIT_ERROR_STRATEGY);
        g_clear_error(&e);
    }
    stem_recipe_clear(&r);
    g_free(a);
    g_free(b);
    g_free(ms);
    stem_planner_free(pl);
    stem_model_free(m);
}

static void expect_plan_error(StemPlanner *pl, const StemRecipe *r, int code)
{
    GError *e = NULL;
    StemEditPlan *p = stem_planner_plan(pl, r, &e);
    g_assert_null(p);
    g_assert_error(e, STEM_EDIT_ERROR, code);
    g_assert_null(strchr(e->message, '\n'));
    g_clear_error(&e);
}

static void test_plan_errors(void)
{
    StemModel *m = load(model_a);
    StemPlanner *pl = stem_planner_new(m, fixture_facts());
    const char *S = single_country(m, 0), *T = single_country(m, 1);
    StemRecipe r;
    recipe(&r, "", T);
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_ENTITY);
    g_free(r.source);
    r.source = g_strdup("   ");
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_ENTITY);
    g_free(r.source);
    r.source = g_strdup("Xqzzvwkj");
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_ENTITY);
    r.allow_subword = TRUE;   /* ... unless explicitly allowed */
    GError *e = NULL;
    StemEditPlan *p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    stem_edit_plan_free(p);
    r.allow_subword = FALSE;
    g_free(r.source);
    r.source = g_utf8_strdown(T, -1);       /* the same entity, other casing */
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_ENTITY);
    g_free(r.source);
    r.source = g_strdup(S);
    g_free(r.target);
    r.target = g_strdup("");
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_ENTITY);
    g_free(r.target);
    r.target = g_strdup(T);
    const char *bad_layers[] = { "7", "3", "-1", "0", "1,x", "2-1", "1,,2" };
    for (guint i = 0; i < G_N_ELEMENTS(bad_layers); i++) {
        g_free(r.layers);
        r.layers = g_strdup(bad_layers[i]);
        expect_plan_error(pl, &r, STEM_EDIT_ERROR_LAYERS);
    }
    g_free(r.layers);
    r.layers = g_strdup("1-2");
    p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    stem_edit_plan_free(p);
    r.kind = STEM_EDIT_BLEND;
    const double bad_alpha[] = { 1.5, -0.1, NAN, INFINITY };
    for (guint i = 0; i < G_N_ELEMENTS(bad_alpha); i++) {
        r.alpha = bad_alpha[i];
        expect_plan_error(pl, &r, STEM_EDIT_ERROR_ALPHA);
    }
    r.alpha = 0.0;   /* alpha 0 changes nothing */
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_NOTHING);
    r.kind = STEM_EDIT_SWAP;
    r.alpha = 0.5;
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_ALPHA);
    stem_recipe_clear(&r);
    stem_planner_free(pl);
    stem_model_free(m);

    /* a dense model has no table to edit */
    m = load(model_dense);
    pl = stem_planner_new(m, fixture_facts());
    recipe(&r, S, T);
    expect_plan_error(pl, &r, STEM_EDIT_ERROR_MODEL);
    p = stem_planner_plan_tokens(pl, &r, &e);   /* but its tokens can be planned (dense control) */
    g_assert_no_error(e);
    g_assert_cmpuint(p->assign->len, >, 0);
    stem_edit_plan_free(p);
    stem_recipe_clear(&r);
    stem_planner_free(pl);
    stem_model_free(m);
}

/* ------------------------------------------------------------------ preview and the database */

static void next_probs(StemModel *m, const char *prompt, float *probs)
{
    size_t n = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, prompt, strlen(prompt), &n);
    stem_next_probs(m, ids, (int)n, probs);
    g_free(ids);
}

static void test_preview_equals_apply(void)
{
    StemModel *m = load(model_a);
    const char *S = single_country(m, 3), *T = single_country(m, 4);
    char *prompt = g_strdup_printf("The capital of %s is", S);
    const int V = m->cfg.vocab;
    float *base = g_new(float, V), *prev = g_new(float, V), *applied = g_new(float, V);
    next_probs(m, prompt, base);
    StemPlanner *pl = stem_planner_new(m, fixture_facts());
    StemRecipe r;
    recipe(&r, S, T);
    GError *e = NULL;
    StemEditPlan *p = stem_planner_plan(pl, &r, &e);
    g_assert_no_error(e);
    guint64 gen = stem_tables_generation(m->tables);
    StemOverlaySnapshot *snap = stem_edit_plan_push(m, p);
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, (guint)p->n_rows);
    next_probs(m, prompt, prev);
    stem_edit_plan_pop(m, snap);
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, 0);
    g_assert_cmpuint(stem_tables_generation(m->tables), >, gen);
    g_assert_true(memcmp(prev, base, sizeof(float) * V) != 0);   /* the edit does something */
    stem_edit_plan_free(p);
    stem_planner_free(pl);

    char *path = new_db_path();
    StemEditDb *db = stem_editdb_open(path, TRUE, &e);
    g_assert_no_error(e);
    g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
    gint64 id = stem_editdb_apply(db, &r, NULL, &e);
    g_assert_no_error(e);
    g_assert_cmpint(id, ==, 1);
    next_probs(m, prompt, applied);
    g_assert_cmpmem(applied, V * 4, prev, V * 4);           /* preview == applied, bit for bit */
    /* and from a fresh process-like reader (stem topk --db) */
    StemModel *m2 = load(model_a);
    g_assert_true(stem_editdb_load_overlay(path, m2, &e));
    next_probs(m2, prompt, applied);
    g_assert_cmpmem(applied, V * 4, prev, V * 4);
    g_assert_true(stem_editdb_revert(db, id, &e));
    next_probs(m, prompt, applied);
    g_assert_cmpmem(applied, V * 4, base, V * 4);
    stem_editdb_close(db);
    stem_model_free(m2);
    stem_recipe_clear(&r);
    g_free(path);
    g_free(prompt);
    g_free(base);
    g_free(prev);
    g_free(applied);
    stem_model_free(m);
}

static void assert_base(StemModel *m, StemModel *ref)
{
    const int F = m->cfg.ffn_dim;
    float *want = g_new(float, F);
    for (int j = 0; j < stem_tables_n(m->tables); j++)
        for (int t = 0; t < m->cfg.vocab; t++) {
            stem_tables_base_row(ref->tables, j, t, want);
            g_assert_true(rows_equal(m, j, t, want));
        }
    g_free(want);
}

static void test_db_order(void)
{
    StemModel *m = load(model_a), *ref = load(model_a);
    const char *S = single_country(m, 0), *T1 = single_country(m, 1), *T2 = single_country(m, 2);
    char *path = new_db_path();
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(path, TRUE, &e);
    g_assert_no_error(e);
    g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
    StemRecipe ra, rb;
    recipe(&ra, S, T1);
    recipe(&rb, S, T2);
    StemEditPlan *pa = NULL, *pb = NULL;
    gint64 a = stem_editdb_apply(db, &ra, &pa, &e);
    g_assert_no_error(e);
    gint64 b = stem_editdb_apply(db, &rb, &pb, &e);
    g_assert_no_error(e);
    /* B was planned on top of A: its 'before' rows are A's 'after' rows where they meet */
    const int F = m->cfg.ffn_dim;
#define CHECK_SET(p)                                                                                                   \
    for (int i = 0; i < (p)->n_rows; i++)                                                                              \
        g_assert_true(rows_equal(m, stem_config_stem_index(&m->cfg, (p)->layers[i]), (p)->tokens[i], (p)->after + (size_t)i * F))
    CHECK_SET(pb);
    /* out of order: revert A, B stays */
    g_assert_true(stem_editdb_revert(db, a, &e));
    CHECK_SET(pb);
    g_assert_false(stem_editdb_revert(db, a, &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_STATE);
    g_clear_error(&e);
    g_assert_false(stem_editdb_reapply(db, b, &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_STATE);
    g_clear_error(&e);
    g_assert_false(stem_editdb_revert(db, 99, &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_FOUND);
    g_clear_error(&e);
    g_assert_true(stem_editdb_revert(db, b, &e));
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, 0);
    assert_base(m, ref);
    g_assert_true(stem_editdb_reapply(db, a, &e));
    CHECK_SET(pa);
    g_assert_true(stem_editdb_reapply(db, b, &e));
    CHECK_SET(pb);
    g_assert_true(stem_editdb_revert(db, b, &e));
    CHECK_SET(pa);
    /* a second connection and a fresh model see the same */
    StemModel *m2 = load(model_a);
    StemEditDb *db2 = stem_editdb_open(path, FALSE, &e);
    g_assert_no_error(e);
    g_assert_true(stem_editdb_attach(db2, m2, fixture_facts(), &e));
    for (int i = 0; i < pa->n_rows; i++)
        g_assert_true(rows_equal(m2, stem_config_stem_index(&m->cfg, pa->layers[i]), pa->tokens[i], pa->after + (size_t)i * F));
    /* a change through db is picked up by db2's refresh */
    g_assert_true(stem_editdb_revert(db, a, &e));
    g_assert_cmpuint(stem_tables_n_overrides(m2->tables), >, 0);
    g_assert_true(stem_editdb_refresh(db2, &e));
    g_assert_cmpuint(stem_tables_n_overrides(m2->tables), ==, 0);
    /* history */
    GPtrArray *log = stem_editdb_audit(db, &e);
    const char *want[] = { "create", "apply", "apply", "revert", "revert", "reapply", "reapply", "revert", "revert" };
    g_assert_cmpuint(log->len, ==, G_N_ELEMENTS(want));
    for (guint i = 0; i < log->len; i++) g_assert_cmpstr(((StemAuditEntry *)g_ptr_array_index(log, i))->action, ==, want[i]);
    g_ptr_array_unref(log);
    GPtrArray *all = stem_editdb_list(db, &e);
    g_assert_cmpuint(all->len, ==, 2);
    StemPatchSet *ps = g_ptr_array_index(all, 1);
    g_assert_cmpint(ps->apply_seq, ==, 4);   /* 1, 2, reapply a = 3, reapply b = 4 */
    g_assert_false(ps->applied);
    g_ptr_array_unref(all);
    g_assert_true(stem_editdb_check(db, &e));
#undef CHECK_SET
    stem_edit_plan_free(pa);
    stem_edit_plan_free(pb);
    stem_recipe_clear(&ra);
    stem_recipe_clear(&rb);
    stem_editdb_close(db2);
    stem_editdb_close(db);
    stem_model_free(m2);
    stem_model_free(ref);
    stem_model_free(m);
    g_free(path);
}

/* ------------------------------------------------------------------ property test */

typedef struct {
    gint64 id;
    gboolean applied;
    gint64 seq;
    int n;
    int32_t *layers, *tokens;
    float *after;
} ExpSet;

static void exp_set_free(gpointer p)
{
    ExpSet *s = p;
    g_free(s->layers);
    g_free(s->tokens);
    g_free(s->after);
    g_free(s);
}

/* The expected row: the latest applied set that sets it, else the base. */
static void expected_row(GPtrArray *sets, StemModel *ref, int layer, int token, float *out)
{
    const int F = ref->cfg.ffn_dim;
    ExpSet *best = NULL;
    int bi = -1;
    for (guint i = 0; i < sets->len; i++) {
        ExpSet *s = g_ptr_array_index(sets, i);
        if (!s->applied || (best && s->seq < best->seq)) continue;
        for (int k = 0; k < s->n; k++)
            if (s->layers[k] == layer && s->tokens[k] == token) {
                best = s;
                bi = k;
            }
    }
    if (best) memcpy(out, best->after + (size_t)bi * F, sizeof(float) * F);
    else stem_tables_base_row(ref->tables, stem_config_stem_index(&ref->cfg, layer), token, out);
}

static void check_state(StemModel *m, StemModel *ref, GPtrArray *sets, GHashTable *keys)
{
    const int F = m->cfg.ffn_dim;
    float *want = g_new(float, F);
    GHashTableIter it;
    gpointer k;
    guint n_over = 0;
    g_hash_table_iter_init(&it, keys);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        int key = GPOINTER_TO_INT(k) - 1, layer = key >> 16, token = key & 0xffff;
        expected_row(sets, ref, layer, token, want);
        g_assert_true(rows_equal(m, stem_config_stem_index(&m->cfg, layer), token, want));
        gboolean set = FALSE;
        for (guint i = 0; i < sets->len && !set; i++) {
            ExpSet *s = g_ptr_array_index(sets, i);
            for (int q = 0; s->applied && q < s->n && !set; q++) set = s->layers[q] == layer && s->tokens[q] == token;
        }
        n_over += set;
    }
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, n_over);
    g_free(want);
}

static int cmp_key(const void *a, const void *b)
{
    const int32_t *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

/* n random sorted unique keys over layers {1, 2} x a small token pool. */
static int random_keys(GRand *r, int32_t *layers, int32_t *tokens, const int *pool, int n_pool)
{
    int n = g_rand_int_range(r, 1, 5);
    int32_t kv[8][2];
    int m = 0;
    for (int i = 0; i < n; i++) {
        int32_t l = g_rand_int_range(r, 1, 3), t = pool[g_rand_int_range(r, 0, n_pool)];
        gboolean dup = FALSE;
        for (int q = 0; q < m; q++) dup |= kv[q][0] == l && kv[q][1] == t;
        if (!dup) {
            kv[m][0] = l;
            kv[m][1] = t;
            m++;
        }
    }
    qsort(kv, m, sizeof kv[0], cmp_key);
    for (int i = 0; i < m; i++) {
        layers[i] = kv[i][0];
        tokens[i] = kv[i][1];
    }
    return m;
}

static void test_property(void)
{
    StemModel *m = load(model_a), *ref = load(model_a);
    const int F = m->cfg.ffn_dim;
    char *path = new_db_path();
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(path, TRUE, &e);
    g_assert_no_error(e);
    g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
    GRand *r = g_rand_new_with_seed(20240611);
    GPtrArray *sets = g_ptr_array_new_with_free_func(exp_set_free);
    GHashTable *keys = g_hash_table_new(g_direct_hash, g_direct_equal);
    const int pool[] = { 5, 6, 77, 300, 301, 512, 700, 1000, 1023, 258, 257, 256 };
    const char *countries[8];
    for (int i = 0; i < 6; i++) countries[i] = single_country(m, i);
    countries[6] = "United States";
    countries[7] = "United Kingdom";
    const char *recipe_json = "{\"kind\": \"swap\", \"source\": \"random rows\", \"target\": \"random rows\"}";
    int n_apply = 0, n_revert = 0, n_reapply = 0, n_reload = 0;
    gint64 seq = 0;
    for (int op = 0; op < property_ops; op++) {
        double u = g_rand_double(r);
        GPtrArray *applied = g_ptr_array_new(), *reverted = g_ptr_array_new();
        for (guint i = 0; i < sets->len; i++) {
            ExpSet *s = g_ptr_array_index(sets, i);
            g_ptr_array_add(s->applied ? applied : reverted, s);
        }
        if (u < 0.45 || sets->len == 0) {
            ExpSet *s = g_new0(ExpSet, 1);
            if (g_rand_double(r) < 0.2) {
                /* a planned recipe (keys and rows come from the planner) */
                StemRecipe rc;
                int a = g_rand_int_range(r, 0, 8), b = (a + g_rand_int_range(r, 1, 8)) % 8;
                recipe(&rc, countries[a], countries[b]);
                rc.strategy = (StemSwapStrategy)g_rand_int_range(r, 0, STEM_STRAT_COUNT);
                StemEditPlan *p = NULL;
                s->id = stem_editdb_apply(db, &rc, &p, &e);
                stem_recipe_clear(&rc);
                if (!s->id) {   /* a strategy that cannot map this pair, or already applied: nothing happened */
                    g_assert_true(g_error_matches(e, STEM_EDIT_ERROR, STEM_EDIT_ERROR_STRATEGY) ||
                                  g_error_matches(e, STEM_EDIT_ERROR, STEM_EDIT_ERROR_NOTHING));
                    g_clear_error(&e);
                    g_free(s);
                    g_ptr_array_unref(applied);
                    g_ptr_array_unref(reverted);
                    continue;
                }
                s->n = p->n_rows;
                s->layers = g_memdup2(p->layers, sizeof(int32_t) * p->n_rows);
                s->tokens = g_memdup2(p->tokens, sizeof(int32_t) * p->n_rows);
                s->after = g_memdup2(p->after, sizeof(float) * (size_t)p->n_rows * F);
                stem_edit_plan_free(p);
            } else {
                s->layers = g_new(int32_t, 8);
                s->tokens = g_new(int32_t, 8);
                s->n = random_keys(r, s->layers, s->tokens, pool, G_N_ELEMENTS(pool));
                s->after = g_new(float, (size_t)s->n * F);
                for (int q = 0; q < s->n * F; q++) s->after[q] = (float)g_rand_double_range(r, -1, 1);
                s->id = stem_editdb_apply_rows(db, recipe_json, NULL, "test", s->n, s->layers, s->tokens, s->after, &e);
                g_assert_no_error(e);
            }
            s->applied = TRUE;
            s->seq = ++seq;
            for (int k = 0; k < s->n; k++)
                g_hash_table_add(keys, GINT_TO_POINTER(((s->layers[k] << 16) | s->tokens[k]) + 1));
            g_ptr_array_add(sets, s);
            n_apply++;
        } else if (u < 0.75 && applied->len) {
            ExpSet *s = g_ptr_array_index(applied, g_rand_int_range(r, 0, applied->len));
            g_assert_true(stem_editdb_revert(db, s->id, &e));
            g_assert_no_error(e);
            s->applied = FALSE;
            n_revert++;
        } else if (reverted->len) {
            ExpSet *s = g_ptr_array_index(reverted, g_rand_int_range(r, 0, reverted->len));
            g_assert_true(stem_editdb_reapply(db, s->id, &e));
            g_assert_no_error(e);
            s->applied = TRUE;
            s->seq = ++seq;
            n_reapply++;
        }
        g_ptr_array_unref(applied);
        g_ptr_array_unref(reverted);
        check_state(m, ref, sets, keys);
        if (op % 97 == 96) {
            /* the full reload path: a new connection and a new model */
            StemModel *m2 = load(model_a);
            StemEditDb *db2 = stem_editdb_open(path, FALSE, &e);
            g_assert_no_error(e);
            g_assert_true(stem_editdb_attach(db2, m2, fixture_facts(), &e));
            check_state(m2, ref, sets, keys);
            stem_editdb_close(db2);
            stem_model_free(m2);
            n_reload++;
        }
    }
    /* revert everything in random order: the base comes back bit for bit */
    for (guint i = sets->len; i > 1; i--) {
        guint j = g_rand_int_range(r, 0, i);
        gpointer t = sets->pdata[i - 1];
        sets->pdata[i - 1] = sets->pdata[j];
        sets->pdata[j] = t;
    }
    for (guint i = 0; i < sets->len; i++) {
        ExpSet *s = g_ptr_array_index(sets, i);
        if (!s->applied) continue;
        g_assert_true(stem_editdb_revert(db, s->id, &e));
        s->applied = FALSE;
        check_state(m, ref, sets, keys);
    }
    g_assert_cmpuint(stem_tables_n_overrides(m->tables), ==, 0);
    assert_base(m, ref);
    g_assert_true(stem_editdb_check(db, &e));
    g_test_message("property: %d ops (%d apply, %d revert, %d reapply, %d full reloads), %u keys", property_ops, n_apply,
                   n_revert, n_reapply, n_reload, g_hash_table_size(keys));
    g_hash_table_destroy(keys);
    g_ptr_array_unref(sets);
    g_rand_free(r);
    stem_editdb_close(db);
    stem_model_free(ref);
    stem_model_free(m);
    g_free(path);
}

/* ------------------------------------------------------------------ two processes */

static void test_two_processes(void)
{
    char *path = new_db_path();
    GError *e = NULL;
    /* create it first so both children open an existing database */
    {
        StemModel *m = load(model_a);
        StemEditDb *db = stem_editdb_open(path, TRUE, &e);
        g_assert_no_error(e);
        g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
        stem_editdb_close(db);
        stem_model_free(m);
    }
    enum { PER_CHILD = 25 };
    int fds[2][2];
    pid_t pid[2];
    for (int c = 0; c < 2; c++) {
        g_assert_cmpint(pipe(fds[c]), ==, 0);
        pid[c] = fork();
        g_assert_cmpint(pid[c], >=, 0);
        if (pid[c] == 0) {
            close(fds[c][0]);
            StemModel *m = stem_model_load(model_a, NULL);
            StemEditDb *db = stem_editdb_open(path, FALSE, NULL);
            if (!m || !db || !stem_editdb_attach(db, m, fixture_facts(), NULL)) _exit(3);
            GRand *r = g_rand_new_with_seed(1000 + c);
            const int pool[] = { 10, 11, 12, 13 };
            const int F = m->cfg.ffn_dim;
            for (int i = 0; i < PER_CHILD; i++) {
                int32_t ls[8], ts[8];
                int n = random_keys(r, ls, ts, pool, 4);
                float *after = g_new(float, n * F);
                for (int q = 0; q < n * F; q++) after[q] = (float)(c * 1000 + i);
                GError *ce = NULL;
                gint64 id = stem_editdb_apply_rows(db, "{\"kind\": \"swap\", \"source\": \"p\", \"target\": \"q\"}", NULL,
                                                   "test", n, ls, ts, after, &ce);
                if (!id) {
                    fprintf(stderr, "child %d: %s\n", c, ce->message);
                    _exit(4);
                }
                if (write(fds[c][1], &id, sizeof id) != sizeof id) _exit(5);
                g_free(after);
            }
            _exit(0);
        }
        close(fds[c][1]);
    }
    GHashTable *ids = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    for (int c = 0; c < 2; c++) {
        int st = 0;
        g_assert_cmpint(waitpid(pid[c], &st, 0), ==, pid[c]);
        g_assert_true(WIFEXITED(st));
        g_assert_cmpint(WEXITSTATUS(st), ==, 0);
        gint64 id;
        int n = 0;
        while (read(fds[c][0], &id, sizeof id) == sizeof id) {
            gint64 *k = g_new(gint64, 1);
            *k = id;
            g_assert_false(g_hash_table_contains(ids, k));
            g_hash_table_add(ids, k);
            n++;
        }
        close(fds[c][0]);
        g_assert_cmpint(n, ==, PER_CHILD);
    }
    /* both recorded, nothing lost: every reported id is there, applied, unique seq */
    StemModel *m = load(model_a), *ref = load(model_a);
    StemEditDb *db = stem_editdb_open(path, FALSE, &e);
    g_assert_no_error(e);
    g_assert_true(stem_editdb_check(db, &e));
    g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
    GPtrArray *all = stem_editdb_list(db, &e);
    g_assert_cmpuint(all->len, ==, 2 * PER_CHILD);
    GPtrArray *sets = g_ptr_array_new_with_free_func(exp_set_free);
    GHashTable *keys = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (guint i = 0; i < all->len; i++) {
        StemPatchSet *p = g_ptr_array_index(all, i);
        g_assert_true(p->applied);
        g_assert_true(g_hash_table_contains(ids, &p->id));
        StemPatchSet *q = stem_editdb_get(db, p->id, TRUE, &e);
        g_assert_no_error(e);
        ExpSet *s = g_new0(ExpSet, 1);
        s->id = q->id;
        s->applied = TRUE;
        s->seq = q->apply_seq;
        s->n = q->n_rows;
        s->layers = g_memdup2(q->layers, sizeof(int32_t) * q->n_rows);
        s->tokens = g_memdup2(q->tokens, sizeof(int32_t) * q->n_rows);
        s->after = g_memdup2(q->after, sizeof(float) * (size_t)q->n_rows * q->ffn);
        for (int k = 0; k < s->n; k++) g_hash_table_add(keys, GINT_TO_POINTER(((s->layers[k] << 16) | s->tokens[k]) + 1));
        g_ptr_array_add(sets, s);
        stem_patch_set_free(q);
    }
    check_state(m, ref, sets, keys);
    GPtrArray *log = stem_editdb_audit(db, &e);
    int applies = 0;
    for (guint i = 0; i < log->len; i++) applies += !strcmp(((StemAuditEntry *)g_ptr_array_index(log, i))->action, "apply");
    g_assert_cmpint(applies, ==, 2 * PER_CHILD);
    g_ptr_array_unref(log);
    g_hash_table_destroy(keys);
    g_ptr_array_unref(sets);
    g_ptr_array_unref(all);
    g_hash_table_destroy(ids);
    stem_editdb_close(db);
    stem_model_free(ref);
    stem_model_free(m);
    g_free(path);
}

/* ------------------------------------------------------------------ refused databases */

static char *file_bytes(const char *path, gsize *len)
{
    char *b = NULL;
    g_assert_true(g_file_get_contents(path, &b, len, NULL));
    return b;
}

static void sql(const char *path, const char *stmt)
{
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open(path, &h), ==, SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(h, stmt, NULL, NULL, &err);
    if (rc != SQLITE_OK) g_error("%s: %s", stmt, err);
    sqlite3_close(h);
}

/* A database with one applied edit. */
static char *db_with_edit(void)
{
    char *path = new_db_path();
    StemModel *m = load(model_a);
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(path, TRUE, &e);
    g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
    StemRecipe r;
    recipe(&r, single_country(m, 0), single_country(m, 1));
    g_assert_cmpint(stem_editdb_apply(db, &r, NULL, &e), ==, 1);
    stem_recipe_clear(&r);
    stem_editdb_close(db);
    stem_model_free(m);
    return path;
}

static void test_refused_databases(void)
{
    GError *e = NULL;
    /* missing */
    char *missing = g_strdup_printf("%s/none.db", tmp);
    g_assert_null(stem_editdb_open(missing, FALSE, &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_FOUND);
    g_clear_error(&e);
    g_assert_false(g_file_test(missing, G_FILE_TEST_EXISTS));
    /* not a database */
    char *text = g_strdup_printf("%s/text.db", tmp);
    g_file_set_contents(text, "hello, this is not SQLite at all, but it is long enough to look like a header....", -1, NULL);
    g_assert_null(stem_editdb_open(text, TRUE, &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_EDITDB);
    g_assert_null(strchr(e->message, '\n'));
    g_clear_error(&e);
    /* someone else's SQLite database */
    char *other = g_strdup_printf("%s/other.db", tmp);
    sql(other, "CREATE TABLE t (x); INSERT INTO t VALUES (1);");
    gsize n0, n1;
    char *b0 = file_bytes(other, &n0);
    g_assert_null(stem_editdb_open(other, TRUE, &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_EDITDB);
    g_clear_error(&e);
    char *b1 = file_bytes(other, &n1);
    g_assert_cmpmem(b0, n0, b1, n1);
    g_free(b0);
    g_free(b1);
    /* a newer schema: refused untouched */
    char *newer = db_with_edit();
    StemEditDb *db = stem_editdb_open(newer, FALSE, &e);   /* checkpoint the WAL away and close */
    stem_editdb_close(db);
    sql(newer, "PRAGMA journal_mode = DELETE; PRAGMA user_version = 99;");
    b0 = file_bytes(newer, &n0);
    g_assert_null(stem_editdb_open(newer, FALSE, &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NEWER);
    g_assert_nonnull(strstr(e->message, "newer"));
    g_clear_error(&e);
    b1 = file_bytes(newer, &n1);
    g_assert_cmpmem(b0, n0, b1, n1);
    g_free(b0);
    g_free(b1);
    /* made for another model: refused at attach, nothing written */
    char *path = db_with_edit();
    StemModel *mb = load(model_b);
    db = stem_editdb_open(path, FALSE, &e);
    g_assert_no_error(e);
    g_assert_false(stem_editdb_attach(db, mb, fixture_facts(), &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_WRONG_MODEL);
    g_assert_nonnull(strstr(e->message, "another model"));
    g_clear_error(&e);
    g_assert_cmpuint(stem_tables_n_overrides(mb->tables), ==, 0);
    StemRecipe r;
    recipe(&r, single_country(mb, 2), single_country(mb, 3));
    g_assert_cmpint(stem_editdb_apply(db, &r, NULL, &e), ==, 0);   /* not attached */
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NO_MODEL);
    g_clear_error(&e);
    GPtrArray *all = stem_editdb_list(db, &e);
    g_assert_cmpuint(all->len, ==, 1);
    g_ptr_array_unref(all);
    stem_recipe_clear(&r);
    stem_editdb_close(db);
    /* the recorded file replaced by another model at the same path (in place: same inode) */
    {
        gsize la, lb;
        char *ba = file_bytes(model_a, &la), *bb = file_bytes(model_b, &lb);
        char *mp = g_strdup_printf("%s/replaced.safetensors", tmp);
        g_file_set_contents(mp, ba, la, NULL);
        char *dbr = new_db_path();
        StemModel *mx = load(mp);
        db = stem_editdb_open(dbr, TRUE, &e);
        g_assert_true(stem_editdb_attach(db, mx, fixture_facts(), &e));
        StemRecipe rr;
        recipe(&rr, single_country(mx, 0), single_country(mx, 1));
        g_assert_cmpint(stem_editdb_apply(db, &rr, NULL, &e), ==, 1);
        stem_recipe_clear(&rr);
        stem_editdb_close(db);
        stem_model_free(mx);
        g_usleep(20000);   /* a different mtime even on coarse clocks */
        FILE *fp = fopen(mp, "r+b");
        g_assert_nonnull(fp);
        g_assert_cmpuint(fwrite(bb, 1, lb, fp), ==, lb);
        fclose(fp);
        mx = load(mp);
        db = stem_editdb_open(dbr, FALSE, &e);
        g_assert_false(stem_editdb_attach(db, mx, fixture_facts(), &e));
        g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_WRONG_MODEL);
        g_clear_error(&e);
        stem_editdb_close(db);
        stem_model_free(mx);
        g_free(ba);
        g_free(bb);
        g_free(mp);
        g_free(dbr);
    }
    /* damaged rows are caught by the checksum, missing rows by the count */
    char *dmg = db_with_edit();
    sql(dmg, "UPDATE patch_rows SET after = zeroblob(64) WHERE rowid = (SELECT min(rowid) FROM patch_rows);");
    StemModel *ma = load(model_a);
    db = stem_editdb_open(dmg, FALSE, &e);
    g_assert_false(stem_editdb_attach(db, ma, fixture_facts(), &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_DAMAGED);
    g_clear_error(&e);
    g_assert_cmpuint(stem_tables_n_overrides(ma->tables), ==, 0);
    g_assert_false(stem_editdb_check(db, &e));
    g_clear_error(&e);
    stem_editdb_close(db);
    char *dmg2 = db_with_edit();
    sql(dmg2, "DELETE FROM patch_rows WHERE rowid = (SELECT max(rowid) FROM patch_rows);");
    db = stem_editdb_open(dmg2, FALSE, &e);
    g_assert_false(stem_editdb_attach(db, ma, fixture_facts(), &e));
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_DAMAGED);
    g_clear_error(&e);
    stem_editdb_close(db);
    /* bad rows from a caller */
    char *p3 = new_db_path();
    db = stem_editdb_open(p3, TRUE, &e);
    g_assert_true(stem_editdb_attach(db, ma, fixture_facts(), &e));
    float row[16] = { 0 };
    int32_t l0 = 0, t0 = 5, l1 = 1, tbig = 5000;
    const char *rj = "{\"kind\": \"swap\", \"source\": \"a\", \"target\": \"b\"}";
    g_assert_cmpint(stem_editdb_apply_rows(db, rj, NULL, "t", 1, &l0, &t0, row, &e), ==, 0);
    g_assert_error(e, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_INVALID);
    g_clear_error(&e);
    g_assert_cmpint(stem_editdb_apply_rows(db, rj, NULL, "t", 1, &l1, &tbig, row, &e), ==, 0);
    g_clear_error(&e);
    row[3] = NAN;
    g_assert_cmpint(stem_editdb_apply_rows(db, rj, NULL, "t", 1, &l1, &t0, row, &e), ==, 0);
    g_clear_error(&e);
    all = stem_editdb_list(db, &e);
    g_assert_cmpuint(all->len, ==, 0);
    g_ptr_array_unref(all);
    stem_editdb_close(db);
    stem_model_free(ma);
    stem_model_free(mb);
    g_free(p3);
    g_free(dmg);
    g_free(dmg2);
    g_free(path);
    g_free(newer);
    g_free(other);
    g_free(text);
    g_free(missing);
}

/* ------------------------------------------------------------------ patch files */

static void test_patchfile(void)
{
    char *path = db_with_edit();
    StemModel *m = load(model_a);
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(path, FALSE, &e);
    g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
    char *pf_path = g_strdup_printf("%s/p.safetensors", tmp);
    g_assert_true(stem_patchfile_export(db, 1, pf_path, &e));
    g_assert_no_error(e);
    StemPatchSet *ps = stem_editdb_get(db, 1, TRUE, &e);
    StemPatchFile *pf = stem_patchfile_read(pf_path, &e);
    g_assert_no_error(e);
    g_assert_cmpint(pf->n_rows, ==, ps->n_rows);
    g_assert_cmpstr(pf->checksum, ==, ps->checksum);
    g_assert_cmpstr(pf->model_sha256, ==, stem_model_sha256(m, NULL));
    g_assert_cmpmem(pf->after, (gsize)pf->n_rows * pf->ffn * 4, ps->after, (gsize)ps->n_rows * ps->ffn * 4);
    g_assert_cmpstr(pf->recipe.source, ==, ps->recipe.source);

    /* import onto another copy of the same model */
    gsize len;
    char *bytes = file_bytes(model_a, &len);
    char *copy = g_strdup_printf("%s/copy.safetensors", tmp);
    g_file_set_contents(copy, bytes, len, NULL);
    g_free(bytes);
    StemModel *mc = load(copy);
    char *p2 = new_db_path();
    StemEditDb *db2 = stem_editdb_open(p2, TRUE, &e);
    g_assert_true(stem_editdb_attach(db2, mc, fixture_facts(), &e));
    gint64 id = stem_patchfile_import(db2, pf, NULL, &e);
    g_assert_no_error(e);
    g_assert_cmpint(id, ==, 1);
    for (int i = 0; i < pf->n_rows; i++) {
        int j = stem_config_stem_index(&m->cfg, pf->layers[i]);
        float *row = g_new(float, m->cfg.ffn_dim);
        stem_tables_row(m->tables, j, pf->tokens[i], row);
        g_assert_true(rows_equal(mc, j, pf->tokens[i], row));
        g_free(row);
    }
    StemPatchSet *q = stem_editdb_get(db2, 1, FALSE, &e);
    g_assert_true(g_str_has_prefix(q->origin, "import "));
    stem_patch_set_free(q);
    stem_editdb_close(db2);

    /* another model: refused */
    StemModel *mb = load(model_b);
    g_assert_false(stem_patchfile_check_model(pf, mb, &e));
    g_assert_error(e, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_MODEL);
    g_clear_error(&e);
    stem_model_free(mb);

    /* every truncation and every single-bit flip is refused with one line */
    bytes = file_bytes(pf_path, &len);
    for (gsize cut = 0; cut < len; cut += (cut < 64 ? 1 : 37)) {
        StemPatchFile *bad = stem_patchfile_read_buffer(bytes, cut, &e);
        g_assert_null(bad);
        g_assert_nonnull(e);
        g_assert_null(strchr(e->message, '\n'));
        g_clear_error(&e);
    }
    int accepted = 0;
    for (gsize i = 0; i < len; i++) {
        char *mut = g_memdup2(bytes, len);
        mut[i] ^= (char)(1u << (i % 8));
        StemPatchFile *bad = stem_patchfile_read_buffer(mut, len, &e);
        if (bad) {
            accepted++;
            g_test_message("bit flip at %" G_GSIZE_FORMAT " accepted", i);
            stem_patchfile_free(bad);
        }
        g_clear_error(&e);
        g_free(mut);
    }
    g_assert_cmpint(accepted, ==, 0);
    StemPatchFile *ok = stem_patchfile_read_buffer(bytes, len, &e);
    g_assert_no_error(e);
    stem_patchfile_free(ok);
    g_free(bytes);

    stem_patchfile_free(pf);
    stem_patch_set_free(ps);
    stem_editdb_close(db);
    stem_model_free(mc);
    stem_model_free(m);
    g_free(p2);
    g_free(copy);
    g_free(pf_path);
    g_free(path);
}

/* ------------------------------------------------------------------ bake */

static void test_bake(void)
{
    char *path = db_with_edit();
    StemModel *m = load(model_a);
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(path, FALSE, &e);
    g_assert_true(stem_editdb_attach(db, m, fixture_facts(), &e));
    StemRecipe r;
    recipe(&r, "United States", single_country(m, 5));
    g_assert_cmpint(stem_editdb_apply(db, &r, NULL, &e), ==, 2);
    stem_recipe_clear(&r);
    g_assert_true(stem_editdb_revert(db, 1, &e));
    g_assert_true(stem_editdb_reapply(db, 1, &e));   /* apply order: 2, then 1 */
    char *out = g_strdup_printf("%s/baked.safetensors", tmp);
    g_assert_false(stem_editdb_bake(db, model_a, NULL, NULL, &e));   /* never the model itself */
    g_assert_error(e, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_IO);
    g_clear_error(&e);
    int n = 0;
    char *sha = NULL;
    g_assert_true(stem_editdb_bake(db, out, &n, &sha, &e));
    g_assert_no_error(e);
    g_assert_cmpint(n, ==, 2);
    StemModel *baked = load(out);
    g_assert_cmpstr(stem_model_sha256(baked, NULL), ==, sha);
    const int F = m->cfg.ffn_dim;
    float *row = g_new(float, F);
    for (int j = 0; j < stem_tables_n(m->tables); j++)
        for (int t = 0; t < m->cfg.vocab; t++) {
            stem_tables_row(m->tables, j, t, row);
            g_assert_true(rows_equal(baked, j, t, row));
        }
    const char *meta = stem_model_metadata(baked, "stem_edits");
    g_assert_nonnull(meta);
    JsonNode *node = json_from_string(meta, NULL);
    JsonArray *ps = json_object_get_array_member(json_node_get_object(node), "patch_sets");
    g_assert_cmpuint(json_array_get_length(ps), ==, 2);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(ps, 0), "id"), ==, 2);
    g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(ps, 1), "id"), ==, 1);
    g_assert_cmpstr(json_object_get_string_member(json_node_get_object(node), "base_model_sha256"), ==,
                    stem_model_sha256(m, NULL));
    json_node_unref(node);
    g_free(row);
    g_free(sha);
    stem_model_free(baked);
    stem_editdb_close(db);
    stem_model_free(m);
    g_free(out);
    g_free(path);
}

/* ------------------------------------------------------------------ metrics plumbing */

static void test_metrics_and_control(void)
{
    StemModel *m = load(model_a);
    const StemFacts *f = fixture_facts();
    const char *S = single_country(m, 0), *T = single_country(m, 1);
    int s = stem_facts_find(f, S), t = stem_facts_find(f, T);
    StemEditEval *ev = stem_edit_eval_new(m, f);
    stem_edit_eval_before(ev, s, t);
    StemPlanner *pl = stem_planner_new(m, f);
    StemRecipe r;
    recipe(&r, S, T);
    GError *e = NULL;
    StemEditPlan *p = stem_planner_plan(pl, &r, &e);
    StemOverlaySnapshot *snap = stem_edit_plan_push(m, p);
    int32_t *ed = g_new(int32_t, p->assign->len);
    for (guint i = 0; i < p->assign->len; i++) ed[i] = g_array_index(p->assign, StemPlanAssign, i).token;
    StemEditScore sc;
    stem_edit_eval_after(ev, s, t, ed, (int)p->assign->len, &sc);
    stem_edit_plan_pop(m, snap);
    g_assert_cmpint(sc.pairs, ==, 1);
    int n_train = 0, n_held = 0;
    for (int i = 0; i < stem_facts_n_templates(REL_CAPITAL); i++) {
        gboolean held = FALSE;
        stem_facts_template(REL_CAPITAL, i, &held);
        held ? n_held++ : n_train++;
    }
    g_assert_cmpint(sc.eff_n, ==, n_train);
    g_assert_cmpint(sc.para_n, ==, n_held);
    g_assert_cmpint(sc.spec_n, >, 900);
    g_assert_cmpint(sc.spec_kept, <=, sc.spec_n);
    g_assert_cmpint(sc.touched_kept, <=, sc.touched_n);
    g_assert_cmpint(sc.flu_n, ==, 1);
    g_assert_cmpint(sc.sweep_n[REL_CAPITAL], ==, 1);
    /* measuring with nothing edited: specificity 100 %, nothing touched */
    StemEditScore none;
    stem_edit_eval_after(ev, s, t, NULL, 0, &none);
    g_assert_cmpint(none.spec_kept, ==, none.spec_n);
    g_assert_cmpint(none.touched_n, ==, 0);
    g_assert_cmpfloat(none.flu_after, ==, none.flu_before);
    g_free(ed);
    stem_edit_plan_free(p);
    stem_planner_free(pl);
    stem_edit_eval_free(ev);
    stem_model_free(m);

    /* the dense control edits embedding rows and restores them exactly */
    StemModel *d = stem_model_load_trainable(model_dense, &e);
    g_assert_no_error(e);
    const size_t bytes = sizeof(float) * (size_t)d->cfg.vocab * d->cfg.dim;
    float *orig = g_memdup2(d->w.tok_emb, bytes);
    pl = stem_planner_new(d, f);
    p = stem_planner_plan_tokens(pl, &r, &e);
    g_assert_no_error(e);
    StemEmbedSnapshot *es = stem_edit_embed_push(d, p);
    char *ms = g_strconcat(" ", S, NULL), *mt = g_strconcat(" ", T, NULL);
    int sid = token_of(d, ms), tid = token_of(d, mt);
    g_assert_cmpmem(d->w.tok_emb + (size_t)sid * d->cfg.dim, d->cfg.dim * 4, orig + (size_t)tid * d->cfg.dim, d->cfg.dim * 4);
    stem_edit_embed_pop(d, es);
    g_assert_cmpmem(d->w.tok_emb, bytes, orig, bytes);
    g_free(ms);
    g_free(mt);
    g_free(orig);
    stem_edit_plan_free(p);
    stem_planner_free(pl);
    stem_model_free(d);
    stem_recipe_clear(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--property") && i + 1 < argc) property_ops = atoi(argv[++i]);
    const char *ops = g_getenv("STEM_EDIT_PROPERTY_OPS");
    if (ops) property_ops = atoi(ops);
    if (property_ops > 1000 && g_strcmp0(g_getenv("STEM_SLOW_TESTS"), "1")) {
        printf("skipped: %d property operations is the slow suite (set STEM_SLOW_TESTS=1)\n", property_ops);
        return 77;
    }
    tmp = fixture_tmpdir();
    model_a = fixture_model(tmp, "a.safetensors", 1, FALSE);
    model_b = fixture_model(tmp, "b.safetensors", 2, FALSE);
    model_dense = fixture_model(tmp, "dense.safetensors", 3, TRUE);
    g_test_add_func("/edit/planner/strategy-map", test_strategy_map);
    g_test_add_func("/edit/planner/recipe-json", test_recipe_json);
    g_test_add_func("/edit/planner/swap-single", test_plan_swap_single);
    g_test_add_func("/edit/planner/average-and-shared", test_plan_average_and_shared);
    g_test_add_func("/edit/planner/errors", test_plan_errors);
    g_test_add_func("/edit/preview-equals-apply", test_preview_equals_apply);
    g_test_add_func("/edit/db/order", test_db_order);
    g_test_add_func("/edit/db/property", test_property);
    g_test_add_func("/edit/db/two-processes", test_two_processes);
    g_test_add_func("/edit/db/refused", test_refused_databases);
    g_test_add_func("/edit/patchfile", test_patchfile);
    g_test_add_func("/edit/bake", test_bake);
    g_test_add_func("/edit/metrics", test_metrics_and_control);
    int rc = g_test_run();
    fixture_rmdir(tmp);
    return rc;
}
