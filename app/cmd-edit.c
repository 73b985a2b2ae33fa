/* stem edit plan|apply|revert|reapply|list|show|log|check|export|import|bake
 * and stem eval edit|edits: the command-line face of editdb/.
 *
 * Every subcommand takes --json. Errors are one line on stderr with a non-zero
 * exit, and a failed command changes nothing: an apply that cannot be planned
 * does not even create the database. */
#include "commands.h"
#include "cli.h"
#include "editdb/editdb.h"
#include "editdb/metrics.h"
#include "editdb/patchfile.h"
#include "engine/checkpoint.h"
#include "engine/facteval.h"
#include "engine/safetensors.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ options */

typedef struct {
    char *db, *model, *source, *target, *kind, *strategy, *layers, *ablate, *prompt, *out, *variants;
    char *alpha;         /* parsed in recipe_from_args: "nan" must be an error, not "not given" */
    gboolean allow_subword, json, rows;
    int k, threads;
} EditArgs;

static void args_init(EditArgs *a)
{
    memset(a, 0, sizeof *a);
    a->k = 5;
    a->threads = 1;
}

#define OPT_DB(a) { "db", 0, 0, G_OPTION_ARG_FILENAME, &(a).db, "edit database (SQLite)", "EDITS.db" }
#define OPT_MODEL(a) { "model", 'm', 0, G_OPTION_ARG_FILENAME, &(a).model, "model file", "MODEL.safetensors" }
#define OPT_JSON(a) { "json", 0, 0, G_OPTION_ARG_NONE, &(a).json, "print JSON", NULL }
#define OPT_RECIPE(a)                                                                                                  \
    { "source", 's', 0, G_OPTION_ARG_STRING, &(a).source, "entity whose rows change, e.g. Spain", "TEXT" },          \
    { "target", 't', 0, G_OPTION_ARG_STRING, &(a).target, "entity whose rows are written in, e.g. France", "TEXT" }, \
    { "kind", 0, 0, G_OPTION_ARG_STRING, &(a).kind,                                                                    \
      "swap | blend | ablate (default: swap; blend with --alpha; ablate with --ablate)", "KIND" },                    \
    { "strategy", 0, 0, G_OPTION_ARG_STRING, &(a).strategy,                                                            \
      "auto | one-to-one | left-pad | right-pad | copy | subset-first | subset-last | average", "S" },               \
    { "layers", 0, 0, G_OPTION_ARG_STRING, &(a).layers, "all (default: every STEM layer) or a list like 1,3", "L" },  \
    { "alpha", 0, 0, G_OPTION_ARG_STRING, &(a).alpha, "blend weight of the target in [0, 1]", "A" },                \
    { "ablate", 0, 0, G_OPTION_ARG_STRING, &(a).ablate, "ablate the source: zero | mean row", "MODE" },             \
    { "allow-subword", 0, 0, G_OPTION_ARG_NONE, &(a).allow_subword,                                                    \
      "edit an entity that is neither a country nor whole-word tokens", NULL },                                        \
    { "variants", 0, 0, G_OPTION_ARG_STRING, &(a).variants,                                                            \
      "spellings to edit: all (default) | mid (\" X\" only) | start (\"X\" at line start only)", "SET" }

static void need(const char *cmd, const char *what, const char *value)
{
    if (!value || !*value) cli_usage(cmd, "%s is required", what);
}

static gint64 parse_id(const char *cmd, const char *s)
{
    char *end = NULL;
    gint64 id = s ? g_ascii_strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || id <= 0) cli_usage(cmd, "expected a patch set id (a positive number), got '%s'", s ? s : "");
    return id;
}

static void recipe_from_args(const char *cmd, const EditArgs *a, StemRecipe *r)
{
    stem_recipe_init(r);
    double alpha = 1.0;
    if (a->alpha) {
        char *end = NULL;
        alpha = g_ascii_strtod(a->alpha, &end);
        if (end == a->alpha || *end) cli_fail("--alpha takes a number in [0, 1], not '%s'", a->alpha);
    }
    if (a->kind) {
        if (!stem_edit_kind_from_name(a->kind, &r->kind)) cli_fail("unknown kind '%s' (swap, blend, ablate)", a->kind);
    } else if (a->ablate) {
        r->kind = STEM_EDIT_ABLATE;
    } else if (a->alpha) {
        r->kind = STEM_EDIT_BLEND;
    }
    if (a->strategy && !stem_strategy_from_name(a->strategy, &r->strategy))
        cli_fail("unknown strategy '%s' (auto, one-to-one, left-pad, right-pad, copy, subset-first, subset-last, average)",
                 a->strategy);
    if (a->ablate) {
        if (!strcmp(a->ablate, "mean")) r->ablate = STEM_ABLATE_MEAN;
        else if (strcmp(a->ablate, "zero")) cli_fail("--ablate takes zero or mean, not '%s'", a->ablate);
    }
    if (r->kind == STEM_EDIT_BLEND && !a->alpha) cli_usage(cmd, "a blend needs --alpha");
    r->alpha = alpha;
    if (!a->source) cli_usage(cmd, "--source is required");
    if (r->kind != STEM_EDIT_ABLATE && !a->target) cli_usage(cmd, "--target is required (or --ablate)");
    r->source = g_strdup(a->source);
    r->target = g_strdup(a->target);   /* an ablation with a target is refused by the planner */
    r->layers = g_strdup(a->layers ? a->layers : "all");
    r->allow_subword = a->allow_subword;
    if (a->variants && !stem_variant_set_from_name(a->variants, &r->variants))
        cli_fail("unknown variant set '%s' (all, mid, start)", a->variants);
}

static StemEditDb *open_db(const char *path, gboolean create)
{
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(path, create, &e);
    if (!db) cli_fail("%s", e->message);
    return db;
}

static void attach(StemEditDb *db, StemModel *m)
{
    GError *e = NULL;
    if (!stem_editdb_attach(db, m, NULL, &e)) cli_fail("%s", e->message);
}

static void print_warnings(const StemEditPlan *p)
{
    for (guint i = 0; i < p->warnings->len; i++)
        fprintf(stderr, "stem: warning: %s\n", (const char *)g_ptr_array_index(p->warnings, i));
}

static char *ids_str(StemModel *m, const int32_t *ids, int n)
{
    GString *s = g_string_new("[");
    for (int i = 0; i < n; i++) {
        char *t = stem_edit_token_text(m->tok, ids[i]);
        g_string_append_printf(s, "%s%s", i ? "|" : "", t);
        g_free(t);
    }
    g_string_append_c(s, ']');
    return g_string_free(s, FALSE);
}

static void print_plan_text(const StemEditPlan *p, StemModel *m)
{
    char *d = stem_recipe_describe(&p->recipe);
    printf("recipe    %s\n", d);
    g_free(d);
    printf("layers   ");
    for (int l = 0; l < m->cfg.n_layers; l++)
        if ((p->layer_mask >> l) & 1) printf(" %d", l);
    printf("\n");
    for (guint i = 0; i < p->variants->len; i++) {
        StemPlanVariant *v = g_ptr_array_index(p->variants, i);
        char *si = ids_str(m, v->source_ids, v->n_source);
        char *ti = v->target_text ? ids_str(m, v->target_ids, v->n_target) : g_strdup("");
        printf("variant   %-26s '%s' %s", v->form, v->source_text, si);
        if (v->target_text) printf(" -> '%s' %s", v->target_text, ti);
        if (v->edited) printf("  %s\n", stem_strategy_name(v->strategy));
        else printf("  skipped: %s\n", v->note ? v->note : "");
        g_free(si);
        g_free(ti);
    }
    for (guint i = 0; i < p->assign->len; i++) {
        StemPlanAssign *a = &g_array_index(p->assign, StemPlanAssign, i);
        char *t = stem_edit_token_text(m->tok, a->token);
        GString *mix = g_string_new(NULL);
        for (int k = 0; k < a->n_mix; k++) {
            char *mt = a->mix_tok[k] == STEM_PLAN_ZERO   ? g_strdup("<zero row>")
                       : a->mix_tok[k] == STEM_PLAN_MEAN ? g_strdup("<mean row>")
                                                         : stem_edit_token_text(m->tok, a->mix_tok[k]);
            if (a->n_mix > 1) g_string_append_printf(mix, "%s%.3g*'%s'", k ? " + " : "", a->mix_w[k], mt);
            else g_string_append_printf(mix, "'%s'", mt);
            g_free(mt);
        }
        printf("row       '%s' (%d) <- %s\n", t, a->token, mix->str);
        g_string_free(mix, TRUE);
        g_free(t);
    }
    printf("rows      %d (tokens x layers that change)\n", p->n_rows);
}

static void print_topk_line(StemModel *m, const char *label, const StemTopk *top, int k)
{
    printf("%-8s", label);
    for (int i = 0; i < k; i++) {
        char *t = cli_token_text(m, top[i].id);
        printf("  '%s' %.1f%%", t, 100.0 * top[i].prob);
        g_free(t);
    }
    printf("\n");
}

static void add_topk_json(JsonBuilder *b, StemModel *m, const char *name, const StemTopk *top, int k)
{
    json_builder_set_member_name(b, name);
    json_builder_begin_array(b);
    for (int i = 0; i < k; i++) {
        char *t = cli_token_text(m, top[i].id);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, top[i].id);
        json_builder_set_member_name(b, "token");
        json_builder_add_string_value(b, t);
        json_builder_set_member_name(b, "prob");
        json_builder_add_double_value(b, top[i].prob);
        json_builder_end_object(b);
        g_free(t);
    }
    json_builder_end_array(b);
}

/* ------------------------------------------------------------------ plan */

static int edit_plan(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = {
        OPT_DB(a), OPT_MODEL(a), OPT_RECIPE(a),
        { "prompt", 'p', 0, G_OPTION_ARG_STRING, &a.prompt, "preview: top-k after PROMPT before and with the edit", "PROMPT" },
        { "k", 'k', 0, G_OPTION_ARG_INT, &a.k, "top-k size for the preview (default 5)", "K" },
        OPT_JSON(a), { NULL }
    };
    cli_parse("edit plan", "", "Plan a recipe: tokens, variants, strategy, rows and warnings. Writes nothing.\n"
              "With --db the plan starts from that database's edits (if the file exists).\n"
              "With --prompt, preview the edit's effect on the next-token distribution.", entries, &argc, &argv);
    if (argc > 1) cli_usage("edit plan", "unexpected argument '%s'", argv[1]);
    need("edit plan", "--model", a.model);
    StemRecipe r;
    recipe_from_args("edit plan", &a, &r);
    if (a.k < 1) cli_usage("edit plan", "--k must be at least 1");
    StemModel *m = cli_load_model(a.model);
    StemEditDb *db = NULL;
    StemPlanner *pl = NULL;
    if (a.db && g_file_test(a.db, G_FILE_TEST_EXISTS)) {
        db = open_db(a.db, FALSE);
        attach(db, m);
        pl = stem_editdb_planner(db);
    } else {
        pl = stem_planner_new(m, NULL);
    }
    GError *e = NULL;
    gint64 t0 = g_get_monotonic_time();
    StemEditPlan *p = stem_planner_plan(pl, &r, &e);
    double plan_ms = (g_get_monotonic_time() - t0) / 1000.0;
    if (!p) cli_fail("%s", e->message);
    int k = MIN(a.k, m->cfg.vocab), n = 0, k1 = 0, k2 = 0;
    StemTopk *before = NULL, *after = NULL;
    if (a.prompt) {
        int32_t *ids = cli_encode(m, a.prompt, &n);
        before = g_new(StemTopk, k);
        after = g_new(StemTopk, k);
        k1 = stem_topk(m, ids, n, k, before);
        StemOverlaySnapshot *s = stem_edit_plan_push(m, p);
        k2 = stem_topk(m, ids, n, k, after);
        stem_edit_plan_pop(m, s);
        g_free(ids);
    }
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "plan");
        stem_edit_plan_to_json(p, m, b);
        json_builder_set_member_name(b, "plan_ms");
        json_builder_add_double_value(b, plan_ms);
        if (a.prompt) {
            json_builder_set_member_name(b, "preview");
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "prompt");
            json_builder_add_string_value(b, a.prompt);
            add_topk_json(b, m, "before", before, k1);
            add_topk_json(b, m, "after", after, k2);
            json_builder_end_object(b);
        }
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        print_plan_text(p, m);
        if (a.prompt) {
            printf("preview   %s\n", a.prompt);
            print_topk_line(m, "before", before, k1);
            print_topk_line(m, "after", after, k2);
        }
    }
    print_warnings(p);
    g_free(before);
    g_free(after);
    stem_edit_plan_free(p);
    if (db) stem_editdb_close(db);
    else stem_planner_free(pl);
    stem_recipe_clear(&r);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ apply */

static int edit_apply(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = { OPT_DB(a), OPT_MODEL(a), OPT_RECIPE(a), OPT_JSON(a), { NULL } };
    cli_parse("edit apply", "", "Plan a recipe and apply it as one patch set (one transaction).\n"
              "A database that does not exist yet is created.", entries, &argc, &argv);
    if (argc > 1) cli_usage("edit apply", "unexpected argument '%s'", argv[1]);
    need("edit apply", "--db", a.db);
    need("edit apply", "--model", a.model);
    StemRecipe r;
    recipe_from_args("edit apply", &a, &r);
    StemModel *m = cli_load_model(a.model);
    GError *e = NULL;
    if (!g_file_test(a.db, G_FILE_TEST_EXISTS)) {
        /* validate before creating anything: a bad recipe leaves no file behind */
        StemPlanner *pl = stem_planner_new(m, NULL);
        StemEditPlan *p = stem_planner_plan(pl, &r, &e);
        if (!p) cli_fail("%s", e->message);
        stem_edit_plan_free(p);
        stem_planner_free(pl);
    }
    StemEditDb *db = open_db(a.db, TRUE);
    attach(db, m);
    StemEditPlan *p = NULL;
    gint64 id = stem_editdb_apply(db, &r, &p, &e);
    if (!id) cli_fail("%s", e->message);
    StemPatchSet *ps = stem_editdb_get(db, id, FALSE, NULL);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, id);
        json_builder_set_member_name(b, "rows");
        json_builder_add_int_value(b, p->n_rows);
        json_builder_set_member_name(b, "apply_seq");
        json_builder_add_int_value(b, ps ? ps->apply_seq : 0);
        json_builder_set_member_name(b, "checksum");
        json_builder_add_string_value(b, ps ? ps->checksum : "");
        json_builder_set_member_name(b, "plan");
        stem_edit_plan_to_json(p, m, b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        char *d = stem_recipe_describe(&p->recipe);
        printf("applied patch set %" G_GINT64_FORMAT ": %d rows, %s\n", id, p->n_rows, d);
        g_free(d);
    }
    print_warnings(p);
    stem_patch_set_free(ps);
    stem_edit_plan_free(p);
    stem_editdb_close(db);
    stem_recipe_clear(&r);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ revert / reapply */

static int edit_state(int argc, char **argv, gboolean revert)
{
    const char *cmd = revert ? "edit revert" : "edit reapply";
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = { OPT_DB(a), OPT_MODEL(a), OPT_JSON(a), { NULL } };
    cli_parse(cmd, "ID", revert ? "Revert patch set ID (one transaction): its rows fall back to the next applied\n"
                                  "patch set that sets them, or to the model file."
                                : "Apply reverted patch set ID again, on top of every other edit.",
              entries, &argc, &argv);
    need(cmd, "--db", a.db);
    if (argc != 2) cli_usage(cmd, "expected one patch set ID");
    gint64 id = parse_id(cmd, argv[1]);
    StemEditDb *db = open_db(a.db, FALSE);
    StemModel *m = NULL;
    if (a.model) {
        m = cli_load_model(a.model);
        attach(db, m);
    }
    GError *e = NULL;
    gboolean ok = revert ? stem_editdb_revert(db, id, &e) : stem_editdb_reapply(db, id, &e);
    if (!ok) cli_fail("%s", e->message);
    StemPatchSet *ps = stem_editdb_get(db, id, FALSE, NULL);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, id);
        json_builder_set_member_name(b, "state");
        json_builder_add_string_value(b, revert ? "reverted" : "applied");
        json_builder_set_member_name(b, "rows");
        json_builder_add_int_value(b, ps ? ps->n_rows : 0);
        json_builder_set_member_name(b, "apply_seq");
        json_builder_add_int_value(b, ps ? ps->apply_seq : 0);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("%s patch set %" G_GINT64_FORMAT " (%d rows)\n", revert ? "reverted" : "reapplied", id, ps ? ps->n_rows : 0);
    }
    stem_patch_set_free(ps);
    stem_editdb_close(db);
    if (m) stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ list / show / log / check */

static void patch_set_json(JsonBuilder *b, const StemPatchSet *p, StemModel *m, gboolean rows)
{
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, p->id);
    json_builder_set_member_name(b, "state");
    json_builder_add_string_value(b, p->applied ? "applied" : "reverted");
    json_builder_set_member_name(b, "apply_seq");
    json_builder_add_int_value(b, p->apply_seq);
    json_builder_set_member_name(b, "recipe");
    JsonNode *rn = json_from_string(p->recipe_json, NULL);
    if (rn) json_builder_add_value(b, rn);
    else json_builder_add_string_value(b, p->recipe_json ? p->recipe_json : "");
    char *d = stem_recipe_describe(&p->recipe);
    json_builder_set_member_name(b, "description");
    json_builder_add_string_value(b, d);
    g_free(d);
    json_builder_set_member_name(b, "rows");
    json_builder_add_int_value(b, p->n_rows);
    json_builder_set_member_name(b, "ffn");
    json_builder_add_int_value(b, p->ffn);
    json_builder_set_member_name(b, "checksum");
    json_builder_add_string_value(b, p->checksum ? p->checksum : "");
    json_builder_set_member_name(b, "model_sha256");
    json_builder_add_string_value(b, p->model_sha256 ? p->model_sha256 : "");
    json_builder_set_member_name(b, "origin");
    json_builder_add_string_value(b, p->origin ? p->origin : "");
    json_builder_set_member_name(b, "created_at");
    json_builder_add_string_value(b, p->created_at ? p->created_at : "");
    json_builder_set_member_name(b, "applied_at");
    if (p->applied_at) json_builder_add_string_value(b, p->applied_at);
    else json_builder_add_null_value(b);
    json_builder_set_member_name(b, "reverted_at");
    if (p->reverted_at) json_builder_add_string_value(b, p->reverted_at);
    else json_builder_add_null_value(b);
    if (rows) {
        JsonNode *sn = p->summary_json ? json_from_string(p->summary_json, NULL) : NULL;
        json_builder_set_member_name(b, "summary");
        if (sn) json_builder_add_value(b, sn);
        else json_builder_add_null_value(b);
        json_builder_set_member_name(b, "checksum_ok");
        json_builder_add_boolean_value(b, TRUE);   /* stem_editdb_get verified it */
        json_builder_set_member_name(b, "keys");
        json_builder_begin_array(b);
        for (int i = 0; i < p->n_rows; i++) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "layer");
            json_builder_add_int_value(b, p->layers[i]);
            json_builder_set_member_name(b, "token");
            json_builder_add_int_value(b, p->tokens[i]);
            if (m) {
                char *t = stem_edit_token_text(m->tok, p->tokens[i]);
                json_builder_set_member_name(b, "text");
                json_builder_add_string_value(b, t);
                g_free(t);
            }
            double nb = 0, na = 0, dd = 0;
            for (int q = 0; q < p->ffn; q++) {
                double x = p->before[(size_t)i * p->ffn + q], y = p->after[(size_t)i * p->ffn + q];
                nb += x * x;
                na += y * y;
                dd += (x - y) * (x - y);
            }
            json_builder_set_member_name(b, "before_norm");
            json_builder_add_double_value(b, sqrt(nb));
            json_builder_set_member_name(b, "after_norm");
            json_builder_add_double_value(b, sqrt(na));
            json_builder_set_member_name(b, "change_norm");
            json_builder_add_double_value(b, sqrt(dd));
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
    }
    json_builder_end_object(b);
}

static int edit_list(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = { OPT_DB(a), OPT_JSON(a), { NULL } };
    cli_parse("edit list", "", "List the patch sets of an edit database.", entries, &argc, &argv);
    if (argc > 1) cli_usage("edit list", "unexpected argument '%s'", argv[1]);
    need("edit list", "--db", a.db);
    StemEditDb *db = open_db(a.db, FALSE);
    GError *e = NULL;
    GPtrArray *all = stem_editdb_list(db, &e);
    if (!all) cli_fail("%s", e->message);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "model_sha256");
        if (stem_editdb_model_sha256(db)) json_builder_add_string_value(b, stem_editdb_model_sha256(db));
        else json_builder_add_null_value(b);
        json_builder_set_member_name(b, "patch_sets");
        json_builder_begin_array(b);
        for (guint i = 0; i < all->len; i++) patch_set_json(b, g_ptr_array_index(all, i), NULL, FALSE);
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("%4s  %-8s  %5s  %5s  %-24s  %s\n", "id", "state", "seq", "rows", "created", "recipe");
        for (guint i = 0; i < all->len; i++) {
            StemPatchSet *p = g_ptr_array_index(all, i);
            char *d = stem_recipe_describe(&p->recipe);
            printf("%4" G_GINT64_FORMAT "  %-8s  %5" G_GINT64_FORMAT "  %5d  %-24s  %s%s\n", p->id,
                   p->applied ? "applied" : "reverted", p->apply_seq, p->n_rows, p->created_at ? p->created_at : "", d,
                   p->origin && g_str_has_prefix(p->origin, "import") ? "  [imported]" : "");
            g_free(d);
        }
        if (all->len == 0) printf("(no patch sets)\n");
    }
    g_ptr_array_unref(all);
    stem_editdb_close(db);
    return 0;
}

static int edit_show(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = { OPT_DB(a), OPT_MODEL(a), OPT_JSON(a), { NULL } };
    cli_parse("edit show", "ID", "Show one patch set: recipe, variants, warnings, rows (verified against its\n"
              "checksum). With --model, token texts are shown.", entries, &argc, &argv);
    need("edit show", "--db", a.db);
    if (argc != 2) cli_usage("edit show", "expected one patch set ID");
    gint64 id = parse_id("edit show", argv[1]);
    StemEditDb *db = open_db(a.db, FALSE);
    StemModel *m = NULL;
    if (a.model) {
        m = cli_load_model(a.model);
        attach(db, m);
    }
    GError *e = NULL;
    StemPatchSet *p = stem_editdb_get(db, id, TRUE, &e);
    if (!p) cli_fail("%s", e->message);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        patch_set_json(b, p, m, TRUE);
        cli_print_json(b);
    } else {
        char *d = stem_recipe_describe(&p->recipe);
        printf("patch set %" G_GINT64_FORMAT "  %s (seq %" G_GINT64_FORMAT ")\n", p->id, p->applied ? "applied" : "reverted",
               p->apply_seq);
        printf("recipe    %s\n", d);
        printf("origin    %s\n", p->origin);
        printf("model     %s\n", p->model_sha256);
        printf("checksum  %s (verified)\n", p->checksum);
        printf("created   %s\n", p->created_at);
        if (p->applied_at) printf("applied   %s\n", p->applied_at);
        if (p->reverted_at) printf("reverted  %s\n", p->reverted_at);
        JsonNode *sn = p->summary_json ? json_from_string(p->summary_json, NULL) : NULL;
        if (sn && JSON_NODE_HOLDS_OBJECT(sn)) {
            JsonObject *o = json_node_get_object(sn);
            JsonArray *w = json_object_has_member(o, "warnings") ? json_object_get_array_member(o, "warnings") : NULL;
            for (guint i = 0; w && i < json_array_get_length(w); i++)
                printf("warning   %s\n", json_array_get_string_element(w, i));
        }
        if (sn) json_node_unref(sn);
        printf("rows      %d\n", p->n_rows);
        for (int i = 0; i < p->n_rows; i++) {
            char *t = m ? stem_edit_token_text(m->tok, p->tokens[i]) : g_strdup_printf("%d", p->tokens[i]);
            printf("  layer %d  token '%s' (%d)\n", p->layers[i], t, p->tokens[i]);
            g_free(t);
        }
        g_free(d);
    }
    stem_patch_set_free(p);
    stem_editdb_close(db);
    if (m) stem_model_free(m);
    return 0;
}

static int edit_log(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = { OPT_DB(a), OPT_JSON(a), { NULL } };
    cli_parse("edit log", "", "The audit log: every action on the database, oldest first.", entries, &argc, &argv);
    need("edit log", "--db", a.db);
    StemEditDb *db = open_db(a.db, FALSE);
    GError *e = NULL;
    GPtrArray *log = stem_editdb_audit(db, &e);
    if (!log) cli_fail("%s", e->message);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_array(b);
    for (guint i = 0; i < log->len; i++) {
        StemAuditEntry *x = g_ptr_array_index(log, i);
        if (a.json) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "id");
            json_builder_add_int_value(b, x->id);
            json_builder_set_member_name(b, "at");
            json_builder_add_string_value(b, x->at);
            json_builder_set_member_name(b, "action");
            json_builder_add_string_value(b, x->action);
            json_builder_set_member_name(b, "patch_set");
            if (x->patch_set) json_builder_add_int_value(b, x->patch_set);
            else json_builder_add_null_value(b);
            json_builder_set_member_name(b, "apply_seq");
            if (x->apply_seq) json_builder_add_int_value(b, x->apply_seq);
            else json_builder_add_null_value(b);
            json_builder_set_member_name(b, "detail");
            JsonNode *dn = x->detail ? json_from_string(x->detail, NULL) : NULL;
            if (dn) json_builder_add_value(b, dn);
            else json_builder_add_null_value(b);
            json_builder_end_object(b);
        } else {
            printf("%5" G_GINT64_FORMAT "  %s  %-8s", x->id, x->at, x->action);
            if (x->patch_set) printf("  patch set %" G_GINT64_FORMAT, x->patch_set);
            if (x->apply_seq) printf("  seq %" G_GINT64_FORMAT, x->apply_seq);
            printf("\n");
        }
    }
    json_builder_end_array(b);
    if (a.json) cli_print_json(b);
    else g_object_unref(b);
    g_ptr_array_unref(log);
    stem_editdb_close(db);
    return 0;
}

static int edit_check(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = { OPT_DB(a), OPT_MODEL(a), OPT_JSON(a), { NULL } };
    cli_parse("edit check", "", "Check a database: SQLite integrity, every patch set's rows and checksum;\n"
              "with --model also that it belongs to the model and its overlay loads.", entries, &argc, &argv);
    need("edit check", "--db", a.db);
    StemEditDb *db = open_db(a.db, FALSE);
    GError *e = NULL;
    StemModel *m = NULL;
    if (a.model) {
        m = cli_load_model(a.model);
        attach(db, m);
    }
    if (!stem_editdb_check(db, &e)) cli_fail("%s", e->message);
    GPtrArray *all = stem_editdb_list(db, NULL);
    int applied = 0;
    for (guint i = 0; all && i < all->len; i++) applied += ((StemPatchSet *)g_ptr_array_index(all, i))->applied;
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "ok");
        json_builder_add_boolean_value(b, TRUE);
        json_builder_set_member_name(b, "patch_sets");
        json_builder_add_int_value(b, all ? all->len : 0);
        json_builder_set_member_name(b, "applied");
        json_builder_add_int_value(b, applied);
        json_builder_set_member_name(b, "overlay_rows");
        json_builder_add_int_value(b, m ? stem_tables_n_overrides(m->tables) : 0);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("ok: %u patch sets (%d applied)%s\n", all ? all->len : 0, applied, m ? ", overlay loads" : "");
    }
    if (all) g_ptr_array_unref(all);
    stem_editdb_close(db);
    if (m) stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ export / import / bake */

static int edit_export(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = {
        OPT_DB(a), { "out", 'o', 0, G_OPTION_ARG_FILENAME, &a.out, "patch file to write", "PATCH.safetensors" },
        OPT_JSON(a), { NULL }
    };
    cli_parse("edit export", "ID", "Write patch set ID to a small hashed patch file (base model hash, tokenizer\n"
              "hash, rows, recipe).", entries, &argc, &argv);
    need("edit export", "--db", a.db);
    need("edit export", "--out", a.out);
    if (argc != 2) cli_usage("edit export", "expected one patch set ID");
    gint64 id = parse_id("edit export", argv[1]);
    StemEditDb *db = open_db(a.db, FALSE);
    GError *e = NULL;
    if (!stem_patchfile_export(db, id, a.out, &e)) cli_fail("%s", e->message);
    char *sha = st_sha256_file(a.out, NULL);
    JsonBuilder *d = json_builder_new();
    json_builder_begin_object(d);
    json_builder_set_member_name(d, "file");
    json_builder_add_string_value(d, a.out);
    json_builder_set_member_name(d, "sha256");
    json_builder_add_string_value(d, sha ? sha : "");
    json_builder_end_object(d);
    JsonGenerator *g = json_generator_new();
    JsonNode *root = json_builder_get_root(d);
    json_generator_set_root(g, root);
    char *detail = json_generator_to_data(g, NULL);
    json_node_unref(root);
    g_object_unref(g);
    g_object_unref(d);
    if (!stem_editdb_log(db, "export", id, detail, &e)) cli_fail("%s", e->message);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, id);
        json_builder_set_member_name(b, "file");
        json_builder_add_string_value(b, a.out);
        json_builder_set_member_name(b, "sha256");
        json_builder_add_string_value(b, sha ? sha : "");
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("exported patch set %" G_GINT64_FORMAT " to %s (sha256 %s)\n", id, a.out, sha ? sha : "?");
    }
    g_free(detail);
    g_free(sha);
    stem_editdb_close(db);
    return 0;
}

static int edit_import(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = { OPT_DB(a), OPT_MODEL(a), OPT_JSON(a), { NULL } };
    cli_parse("edit import", "PATCH", "Apply a patch file onto this copy of the model as a new patch set. Refuses\n"
              "a file made for another model and a damaged file.", entries, &argc, &argv);
    need("edit import", "--db", a.db);
    need("edit import", "--model", a.model);
    if (argc != 2) cli_usage("edit import", "expected one PATCH file");
    GError *e = NULL;
    StemPatchFile *pf = stem_patchfile_read(argv[1], &e);
    if (!pf) cli_fail("%s", e->message);
    StemModel *m = cli_load_model(a.model);
    /* check before creating the database */
    if (!stem_patchfile_check_model(pf, m, &e)) cli_fail("%s: %s", argv[1], e->message);
    StemEditDb *db = open_db(a.db, TRUE);
    attach(db, m);
    char *fsha = st_sha256_file(argv[1], NULL);
    gint64 id = stem_patchfile_import(db, pf, fsha, &e);
    if (!id) cli_fail("%s", e->message);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, id);
        json_builder_set_member_name(b, "rows");
        json_builder_add_int_value(b, pf->n_rows);
        json_builder_set_member_name(b, "file_sha256");
        json_builder_add_string_value(b, fsha ? fsha : "");
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        char *d = stem_recipe_describe(&pf->recipe);
        printf("imported %s as patch set %" G_GINT64_FORMAT ": %d rows, %s\n", argv[1], id, pf->n_rows, d);
        g_free(d);
    }
    g_free(fsha);
    stem_patchfile_free(pf);
    stem_editdb_close(db);
    stem_model_free(m);
    return 0;
}

static int edit_bake(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    GOptionEntry entries[] = {
        OPT_DB(a), OPT_MODEL(a),
        { "out", 'o', 0, G_OPTION_ARG_FILENAME, &a.out, "new model file", "NEW.safetensors" }, OPT_JSON(a), { NULL }
    };
    cli_parse("edit bake", "", "Write a NEW model file whose tables are the effective tables (base + applied\n"
              "patch sets), with the patch sets recorded in its metadata (\"stem_edits\").", entries, &argc, &argv);
    need("edit bake", "--db", a.db);
    need("edit bake", "--model", a.model);
    need("edit bake", "--out", a.out);
    StemModel *m = cli_load_model(a.model);
    StemEditDb *db = open_db(a.db, FALSE);
    attach(db, m);
    GError *e = NULL;
    int n_applied = 0;
    char *sha = NULL;
    if (!stem_editdb_bake(db, a.out, &n_applied, &sha, &e)) cli_fail("%s", e->message);
    if (a.json) {
        JsonBuilder *o = json_builder_new();
        json_builder_begin_object(o);
        json_builder_set_member_name(o, "file");
        json_builder_add_string_value(o, a.out);
        json_builder_set_member_name(o, "sha256");
        json_builder_add_string_value(o, sha);
        json_builder_set_member_name(o, "patch_sets");
        json_builder_add_int_value(o, n_applied);
        json_builder_set_member_name(o, "overlay_rows");
        json_builder_add_int_value(o, stem_tables_n_overrides(m->tables));
        json_builder_end_object(o);
        cli_print_json(o);
    } else {
        printf("baked %d applied patch set%s (%u rows) into %s (sha256 %s)\n", n_applied, n_applied == 1 ? "" : "s",
               stem_tables_n_overrides(m->tables), a.out, sha);
    }
    g_free(sha);
    stem_editdb_close(db);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ dispatch */

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} Sub;

static int edit_revert(int argc, char **argv) { return edit_state(argc, argv, TRUE); }
static int edit_reapply(int argc, char **argv) { return edit_state(argc, argv, FALSE); }

static const Sub subs[] = {
    { "plan", edit_plan, "plan a recipe (tokens, variants, rows, warnings; preview with --prompt); writes nothing" },
    { "apply", edit_apply, "plan and apply a recipe as a new patch set" },
    { "revert", edit_revert, "revert patch set ID" },
    { "reapply", edit_reapply, "apply reverted patch set ID again" },
    { "list", edit_list, "list patch sets" },
    { "show", edit_show, "show one patch set" },
    { "log", edit_log, "the audit log" },
    { "check", edit_check, "verify the database" },
    { "export", edit_export, "write patch set ID to a patch file" },
    { "import", edit_import, "apply a patch file" },
    { "bake", edit_bake, "write a new model file with the edits in its tables" },
};

int cmd_edit(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *out = argc < 2 ? stderr : stdout;
        fprintf(out, "Usage: stem edit SUBCOMMAND [OPTIONS]\n\nKnowledge edits: give an entity's tokens another entity's "
                     "STEM table rows,\nkept as reversible patch sets in an SQLite database.\n\nSubcommands:\n");
        for (size_t i = 0; i < G_N_ELEMENTS(subs); i++) fprintf(out, "  %-8s %s\n", subs[i].name, subs[i].summary);
        fprintf(out, "\nRun 'stem edit SUBCOMMAND --help' for its options.\n");
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(subs); i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(argc - 1, argv + 1);
    cli_usage("edit", "unknown subcommand '%s'", argv[1]);
}

/* ------------------------------------------------------------------ eval edit / edits */

/* "  93.5" or "     -" when there is nothing to divide */
static const char *pct(char *buf, int k, int n, int width, int prec)
{
    if (n > 0) g_snprintf(buf, 16, "%*.*f", width, prec, 100.0 * k / n);
    else g_snprintf(buf, 16, "%*s", width, "-");
    return buf;
}

static void score_row_text(const char *cls, const char *strat, const StemEditScore *s)
{
    char a[16], b[16], c[16], d[16], e[16], f[16];
    char g[16], h[16];
    printf("%-6s %-17s %3d %4d  %s %s %s  %s %s %s  %s %s %5d ", cls, strat, s->pairs, s->skipped,
           pct(a, s->eff_strict, s->eff_n, 6, 1), pct(b, s->eff_loose, s->eff_n, 6, 1),
           pct(g, s->eff_known_strict, s->eff_known_n, 6, 1), pct(c, s->para_strict, s->para_n, 6, 1),
           pct(d, s->para_loose, s->para_n, 6, 1), pct(h, s->para_known_strict, s->para_known_n, 6, 1),
           pct(e, s->spec_kept, s->spec_n, 6, 1), pct(f, s->touched_kept, s->touched_n, 6, 1), s->touched_n);
    for (int r = 0; r < REL_COUNT; r++) printf(" %s", pct(a, s->sweep_flip[r], s->sweep_n[r], 4, 0));
    if (s->flu_n) printf("  %4.2f %4.2f", s->flu_before / s->flu_n, s->flu_after / s->flu_n);
    else printf("  %4s %4s", "-", "-");
    printf(" %5.1f\n", s->pairs ? s->rows / s->pairs : 0.0);
}

static void score_header(void)
{
    printf("%35s%-20s  %-20s  %-19s %-30s  %-9s %5s\n", "", "efficacy %", "paraphrase %", "specificity %",
           "relation sweep: flipped %", "fluency", "rows/");
    printf("%-6s %-17s %3s %4s  %6s %6s %6s  %6s %6s %6s  %6s %6s %5s ", "pairs", "strategy", "n", "skip", "strict",
           "loose", "known", "strict", "loose", "known", "all", "touch", "n");
    static const char *const short_rel[REL_COUNT] = { "cap", "lang", "cont", "curr", "dem", "city" };
    for (int r = 0; r < REL_COUNT; r++) printf(" %4s", short_rel[r]);
    printf("  %4s %4s %5s\n", "bef", "aft", "edit");
}

static void add_score_json(JsonBuilder *b, const char *cls, const char *strat, const StemEditScore *s)
{
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "pairs_kind");
    json_builder_add_string_value(b, cls);
    json_builder_set_member_name(b, "strategy");
    json_builder_add_string_value(b, strat);
    json_builder_set_member_name(b, "score");
    stem_edit_score_to_json(s, b);
    json_builder_end_object(b);
}

/* stem eval edit --db DB --model M ID */
static int eval_one(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    a.threads = 0;
    GOptionEntry entries[] = {
        OPT_DB(a), OPT_MODEL(a), { "threads", 0, 0, G_OPTION_ARG_INT, &a.threads, "worker threads (0 = all cores)", "N" },
        OPT_JSON(a), { NULL }
    };
    cli_parse_compute("eval edit", "ID", "Metrics of one patch set (a swap or blend between two countries): efficacy,\n"
              "paraphrase, specificity, relation sweep, fluency, against the database's other\n"
              "applied edits as the baseline.", entries, &argc, &argv);
    need("eval edit", "--db", a.db);
    need("eval edit", "--model", a.model);
    if (argc != 2) cli_usage("eval edit", "expected one patch set ID");
    gint64 id = parse_id("eval edit", argv[1]);
    cli_init_threads(a.threads);
    StemModel *m = cli_load_model(a.model);
    StemEditDb *db = open_db(a.db, FALSE);
    attach(db, m);
    GError *e = NULL;
    StemPatchSet *p = stem_editdb_get(db, id, TRUE, &e);
    if (!p) cli_fail("%s", e->message);
    const StemFacts *f = stem_planner_facts(stem_editdb_planner(db));
    if (!f) cli_fail("the facts table (countries.csv) was not found: set STEM_DATA_DIR");
    int s = p->recipe.source ? stem_facts_find(f, p->recipe.source) : -1;
    int t = p->recipe.target ? stem_facts_find(f, p->recipe.target) : -1;
    if (s < 0 || t < 0 || p->recipe.kind == STEM_EDIT_ABLATE)
        cli_fail("patch set %" G_GINT64_FORMAT " is not a swap or blend between two countries: the metrics need both", id);
    /* before = every other applied edit; after = this patch set on top */
    const size_t F = (size_t)p->ffn;
    float *rows = g_new(float, (size_t)p->n_rows * F);
    if (!stem_editdb_rows_without(db, id, p->n_rows, p->layers, p->tokens, rows, &e)) cli_fail("%s", e->message);
    for (int i = 0; i < p->n_rows; i++)
        stem_tables_set_override(m->tables, stem_config_stem_index(&m->cfg, p->layers[i]), p->tokens[i], rows + i * F);
    StemEditEval *ev = stem_edit_eval_new(m, f);
    stem_edit_eval_before(ev, s, t);
    for (int i = 0; i < p->n_rows; i++)
        stem_tables_set_override(m->tables, stem_config_stem_index(&m->cfg, p->layers[i]), p->tokens[i], p->after + i * F);
    StemEditScore sc;
    stem_edit_eval_after(ev, s, t, p->tokens, p->n_rows, &sc);
    sc.rows = p->n_rows;
    char *d = stem_recipe_describe(&p->recipe);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, id);
        json_builder_set_member_name(b, "recipe");
        json_builder_add_string_value(b, d);
        json_builder_set_member_name(b, "score");
        stem_edit_score_to_json(&sc, b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("patch set %" G_GINT64_FORMAT ": %s\n", id, d);
        score_header();
        score_row_text(stem_edit_single_token(m, f->countries[s].name) && stem_edit_single_token(m, f->countries[t].name)
                           ? "single" : "multi",
                       stem_strategy_name(p->recipe.strategy), &sc);
    }
    g_free(d);
    g_free(rows);
    stem_edit_eval_free(ev);
    stem_patch_set_free(p);
    stem_editdb_close(db);
    stem_model_free(m);
    return 0;
}

typedef struct {
    int s, t;
} Pair;

/* N pairs of distinct countries: single = both mid-sentence names one token;
 * multi = at least one is several tokens. Deterministic for a seed. */
static GArray *sample_pairs(StemModel *m, const StemFacts *f, gboolean single, int n, guint64 seed)
{
    GArray *pairs = g_array_new(FALSE, FALSE, sizeof(Pair));
    GArray *one = g_array_new(FALSE, FALSE, sizeof(int));
    gboolean *is1 = g_new(gboolean, f->n);
    for (int c = 0; c < f->n; c++) {
        is1[c] = stem_edit_single_token(m, f->countries[c].name);
        if (is1[c]) g_array_append_val(one, c);
    }
    GRand *r = g_rand_new_with_seed((guint32)(seed * 2654435761u + (single ? 1 : 2)));
    GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (int tries = 0; (int)pairs->len < n && tries < 200 * n + 1000; tries++) {
        Pair p;
        if (single) {
            if (one->len < 2) break;
            p.s = g_array_index(one, int, g_rand_int_range(r, 0, (gint32)one->len));
            p.t = g_array_index(one, int, g_rand_int_range(r, 0, (gint32)one->len));
        } else {
            p.s = g_rand_int_range(r, 0, f->n);
            p.t = g_rand_int_range(r, 0, f->n);
            if (is1[p.s] && is1[p.t]) continue;
        }
        if (p.s == p.t) continue;
        gpointer key = GINT_TO_POINTER(p.s * 1024 + p.t + 1);
        if (g_hash_table_contains(seen, key)) continue;
        g_hash_table_add(seen, key);
        g_array_append_val(pairs, p);
    }
    g_hash_table_destroy(seen);
    g_rand_free(r);
    g_array_unref(one);
    g_free(is1);
    return pairs;
}

static void rm_db(const char *path)
{
    char *w = g_strconcat(path, "-wal", NULL), *s = g_strconcat(path, "-shm", NULL);
    g_unlink(w);
    g_unlink(s);
    g_unlink(path);
    g_free(w);
    g_free(s);
}

static int eval_many(int argc, char **argv)
{
    EditArgs a;
    args_init(&a);
    a.threads = 0;
    int n_pairs = 10;
    gint64 seed = 1;
    char *control = NULL;
    gboolean quiet = FALSE;
    GOptionEntry entries[] = {
        OPT_MODEL(a),
        { "pairs", 'n', 0, G_OPTION_ARG_INT, &n_pairs, "random pairs per kind (single-token, multi-token; default 10)", "N" },
        { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "pair sampling seed (default 1)", "S" },
        { "strategy", 0, 0, G_OPTION_ARG_STRING, &a.strategy, "one strategy (default: one row per strategy)", "S" },
        { "layers", 0, 0, G_OPTION_ARG_STRING, &a.layers, "STEM layers to edit (default all)", "L" },
        { "variants", 0, 0, G_OPTION_ARG_STRING, &a.variants, "spellings to edit: all (default) | mid | start", "SET" },
        { "control", 0, 0, G_OPTION_ARG_FILENAME, &control,
          "dense model for the control row (input-embedding rows swapped instead)", "DENSE.safetensors" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &a.threads, "worker threads (0 = all cores)", "N" },
        { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress on stderr", NULL },
        OPT_JSON(a), { NULL }
    };
    cli_parse_compute("eval edits", "", "Apply, measure and revert N random source/target country pairs per kind\n"
              "(single-token names, multi-token names), one row per strategy, and a control\n"
              "row on a dense model whose input-embedding rows are swapped instead.", entries, &argc, &argv);
    if (argc > 1) cli_usage("eval edits", "unexpected argument '%s'", argv[1]);
    need("eval edits", "--model", a.model);
    if (n_pairs < 1 || n_pairs > 10000) cli_usage("eval edits", "--pairs must be in 1..10000");
    StemSwapStrategy only = STEM_STRAT_AUTO;
    if (a.strategy && !stem_strategy_from_name(a.strategy, &only)) cli_fail("unknown strategy '%s'", a.strategy);
    StemVariantSet which = STEM_VARIANTS_ALL;
    if (a.variants && !stem_variant_set_from_name(a.variants, &which))
        cli_fail("unknown variant set '%s' (all, mid, start)", a.variants);
    cli_init_threads(a.threads);
    StemModel *m = cli_load_model(a.model);
    GError *e = NULL;
    StemFacts *f = stem_facts_load_default(&e);
    if (!f) cli_fail("%s", e->message);
    {
        uint64_t mask;
        if (!stem_edit_parse_layers(&m->cfg, a.layers, &mask, &e)) cli_fail("%s", e->message);
    }
    /* a scratch database: the measured edits go through the real apply/revert path */
    char *dir = g_dir_make_tmp("stem-eval-edits-XXXXXX", &e);
    if (!dir) cli_fail("%s", e->message);
    char *dbpath = g_build_filename(dir, "eval.db", NULL);
    StemEditDb *db = open_db(dbpath, TRUE);
    attach(db, m);
    StemPlanner *pl = stem_editdb_planner(db);
    CliProgress prog;
    cli_progress_init(&prog, quiet || a.json);
    cli_progress_update(&prog, 0, "baseline");
    StemEditEval *ev = stem_edit_eval_new(m, f);
    StemModel *dense = NULL;
    StemEditEval *dev = NULL;
    StemPlanner *dpl = NULL;
    if (!control && g_str_has_suffix(a.model, ".safetensors")) {
        /* convention: the dense twin beside the model, e.g. default-dense.safetensors */
        char *twin = g_strdup_printf("%.*s-dense.safetensors", (int)(strlen(a.model) - strlen(".safetensors")), a.model);
        if (g_file_test(twin, G_FILE_TEST_EXISTS)) {
            control = twin;
            if (!a.json && !quiet) fprintf(stderr, "stem: control model %s (found beside the model)\n", control);
        } else {
            g_free(twin);
        }
    }
    if (control) {
        if (!g_file_test(control, G_FILE_TEST_EXISTS)) cli_fail("%s: no such model file", control);
        dense = stem_model_load_trainable(control, &e);
        if (!dense) cli_fail("%s", e->message);
        if (!dense->tok) cli_fail("%s: the control model has no tokenizer", control);
        char *t1 = stem_tokenizer_sha256(m->tok), *t2 = stem_tokenizer_sha256(dense->tok);
        if (strcmp(t1, t2)) fprintf(stderr, "stem: warning: the control model has another tokenizer\n");
        g_free(t1);
        g_free(t2);
        dev = stem_edit_eval_new(dense, f);
        dpl = stem_planner_new(dense, f);
    }
    int strat_lo = a.strategy ? (int)only : 0, strat_hi = a.strategy ? (int)only + 1 : STEM_STRAT_COUNT;
    const char *classes[2] = { "single", "multi" };
    StemEditScore score[2][STEM_STRAT_COUNT + 1];
    memset(score, 0, sizeof score);
    GArray *pairs[2];
    int total = 0, done = 0;
    for (int c = 0; c < 2; c++) {
        pairs[c] = sample_pairs(m, f, c == 0, n_pairs, (guint64)seed);
        total += (int)pairs[c]->len * (strat_hi - strat_lo + (dense ? 1 : 0));
    }
    GHashTable *cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (int c = 0; c < 2; c++) {
        for (guint i = 0; i < pairs[c]->len; i++) {
            Pair pr = g_array_index(pairs[c], Pair, i);
            stem_edit_eval_before(ev, pr.s, pr.t);
            for (int st = strat_lo; st < strat_hi; st++) {
                StemRecipe r;
                stem_recipe_init(&r);
                r.source = g_strdup(f->countries[pr.s].name);
                r.target = g_strdup(f->countries[pr.t].name);
                r.strategy = (StemSwapStrategy)st;
                r.layers = g_strdup(a.layers ? a.layers : "all");
                r.variants = which;
                StemEditPlan *p = stem_planner_plan(pl, &r, NULL);
                char msg[160];
                g_snprintf(msg, sizeof msg, "%s pairs: %s -> %s (%s)", classes[c], r.source, r.target,
                           stem_strategy_name(r.strategy));
                cli_progress_update(&prog, (double)done++ / MAX(total, 1), msg);
                if (!p) {
                    score[c][st].skipped++;
                    stem_recipe_clear(&r);
                    continue;
                }
                /* strategies that plan the same rows are the same edit: measure once */
                char *sum = stem_edit_rows_checksum(p->ffn, p->n_rows, p->layers, p->tokens, p->before, p->after);
                char *key = g_strdup_printf("%d/%d/%s", pr.s, pr.t, sum);
                g_free(sum);
                StemEditScore *cached = g_hash_table_lookup(cache, key);
                StemEditScore x;
                if (cached) {
                    x = *cached;
                    g_free(key);
                } else {
                    gint64 t0 = g_get_monotonic_time();
                    gint64 id = stem_editdb_apply(db, &r, NULL, &e);
                    if (!id) cli_fail("%s", e->message);
                    gint64 t1 = g_get_monotonic_time();
                    int32_t *edited = g_new(int32_t, p->assign->len);
                    for (guint k = 0; k < p->assign->len; k++) edited[k] = g_array_index(p->assign, StemPlanAssign, k).token;
                    stem_edit_eval_after(ev, pr.s, pr.t, edited, (int)p->assign->len, &x);
                    g_free(edited);
                    gint64 t2 = g_get_monotonic_time();
                    if (!stem_editdb_revert(db, id, &e)) cli_fail("%s", e->message);
                    gint64 t3 = g_get_monotonic_time();
                    if (stem_tables_n_overrides(m->tables) != 0) cli_fail("revert did not restore the tables");
                    x.rows = p->n_rows;
                    x.ms = ((t1 - t0) + (t3 - t2)) / 1000.0;
                    g_hash_table_insert(cache, key, g_memdup2(&x, sizeof x));
                }
                stem_edit_score_add(&score[c][st], &x);
                stem_edit_plan_free(p);
                stem_recipe_clear(&r);
            }
            if (dense) {
                StemRecipe r;
                stem_recipe_init(&r);
                r.source = g_strdup(f->countries[pr.s].name);
                r.target = g_strdup(f->countries[pr.t].name);
                r.strategy = a.strategy ? only : STEM_STRAT_AUTO;
                r.variants = which;
                cli_progress_update(&prog, (double)done++ / MAX(total, 1), "dense control");
                StemEditPlan *p = stem_planner_plan_tokens(dpl, &r, NULL);
                if (!p) {
                    score[c][STEM_STRAT_COUNT].skipped++;
                } else {
                    stem_edit_eval_before(dev, pr.s, pr.t);
                    StemEmbedSnapshot *snap = stem_edit_embed_push(dense, p);
                    int32_t *edited = g_new(int32_t, p->assign->len);
                    for (guint k = 0; k < p->assign->len; k++) edited[k] = g_array_index(p->assign, StemPlanAssign, k).token;
                    StemEditScore x;
                    stem_edit_eval_after(dev, pr.s, pr.t, edited, (int)p->assign->len, &x);
                    x.rows = p->assign->len;
                    g_free(edited);
                    stem_edit_embed_pop(dense, snap);
                    stem_edit_score_add(&score[c][STEM_STRAT_COUNT], &x);
                    stem_edit_plan_free(p);
                }
                stem_recipe_clear(&r);
            }
        }
    }
    cli_progress_update(&prog, 1.0, "done");
    cli_progress_done(&prog);
    char *ctl_name = g_strdup_printf("control:%s", a.strategy ? stem_strategy_name(only) : "auto");
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "model");
        json_builder_add_string_value(b, a.model);
        json_builder_set_member_name(b, "control");
        if (control) json_builder_add_string_value(b, control);
        else json_builder_add_null_value(b);
        json_builder_set_member_name(b, "seed");
        json_builder_add_int_value(b, seed);
        json_builder_set_member_name(b, "layers");
        json_builder_add_string_value(b, a.layers ? a.layers : "all");
        json_builder_set_member_name(b, "variants");
        json_builder_add_string_value(b, stem_variant_set_name(which));
        json_builder_set_member_name(b, "pairs_requested");
        json_builder_add_int_value(b, n_pairs);
        json_builder_set_member_name(b, "rows");
        json_builder_begin_array(b);
        for (int c = 0; c < 2; c++) {
            for (int st = strat_lo; st < strat_hi; st++)
                add_score_json(b, classes[c], stem_strategy_name((StemSwapStrategy)st), &score[c][st]);
            if (dense) add_score_json(b, classes[c], ctl_name, &score[c][STEM_STRAT_COUNT]);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("model %s, layers %s, variants %s, seed %" G_GINT64_FORMAT ", %u single-token and %u multi-token pairs\n",
               a.model, a.layers ? a.layers : "all", stem_variant_set_name(which), seed, pairs[0]->len, pairs[1]->len);
        printf("efficacy (training phrasings) / paraphrase (held-out): %% of the source's capital prompts whose\n"
               "greedy answer is the target's capital (strict) / where P(target's) > P(source's) (loose) /\n"
               "strict, counting only phrasings the unedited model answers for the target itself (known);\n"
               "specificity: %% of other countries' canonical prompts keeping their top-1 (all of them / the\n"
               "'touch'ed ones that contain an edited token, n of those); relation sweep: %% of the source's\n"
               "relations now answered with the target's value; fluency: n-gram entropy (bits) before/after.\n\n");
        score_header();
        for (int c = 0; c < 2; c++) {
            for (int st = strat_lo; st < strat_hi; st++)
                score_row_text(classes[c], stem_strategy_name((StemSwapStrategy)st), &score[c][st]);
            if (dense) score_row_text(classes[c], ctl_name, &score[c][STEM_STRAT_COUNT]);
        }
        if (dense) printf("\ncontrol: %s, dense, input-embedding rows swapped (same planner, same pairs)\n", control);
        else printf("\ncontrol: none (pass --control DENSE.safetensors, or put MODEL-dense.safetensors beside MODEL)\n");
    }
    g_free(ctl_name);
    g_hash_table_destroy(cache);
    for (int c = 0; c < 2; c++) g_array_unref(pairs[c]);
    stem_edit_eval_free(ev);
    if (dense) {
        stem_edit_eval_free(dev);
        stem_planner_free(dpl);
        stem_model_free(dense);
    }
    stem_editdb_close(db);
    rm_db(dbpath);
    g_rmdir(dir);
    g_free(dbpath);
    g_free(dir);
    stem_facts_free(f);
    stem_model_free(m);
    return 0;
}

int cmd_eval_edits(int argc, char **argv)
{
    if (!strcmp(argv[0], "edit")) return eval_one(argc, argv);
    return eval_many(argc, argv);
}
