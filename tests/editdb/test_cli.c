/* The `stem edit` / `stem eval edit(s)` / `stem topk --db` command line, run as
 * a separate process (the binary under test is argv[1]):
 *   - the happy paths print what the issue promises ({"id", "rows"}, ...);
 *   - every bad input is a clear ONE-line error on stderr, a non-zero exit, and
 *     nothing changed: the database's logical content is identical afterwards
 *     (and a database that did not exist is not created).
 *
 *   test-cli STEM_BINARY */
#include "fixture.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

static char *stem;
static char *tmp, *model_a, *model_b, *model_dense;

typedef struct {
    int status;        /* exit code */
    char *out, *err;
} Run;

static void run_free(Run *r)
{
    g_free(r->out);
    g_free(r->err);
}

static Run run(const char *first, ...)
{
    GPtrArray *av = g_ptr_array_new();
    g_ptr_array_add(av, (gpointer)stem);
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) g_ptr_array_add(av, (gpointer)a);
    va_end(ap);
    g_ptr_array_add(av, NULL);
    Run r = { 0 };
    int wait = 0;
    GError *e = NULL;
    if (!g_spawn_sync(tmp, (char **)av->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, &r.out, &r.err, &wait, &e))
        g_error("spawn %s: %s", stem, e->message);
    r.status = WIFEXITED(wait) ? WEXITSTATUS(wait) : 128 + WTERMSIG(wait);
    g_ptr_array_unref(av);
    return r;
}

/* The logical content of a database: pragmas and every row of every table. */
static char *dump(const char *path)
{
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) return g_strdup("<none>");
    sqlite3 *h = NULL;
    g_assert_cmpint(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), ==, SQLITE_OK);
    GString *s = g_string_new(NULL);
    sqlite3_stmt *st;
    const char *q[] = { "PRAGMA user_version", "PRAGMA application_id",
                        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name" };
    GPtrArray *tables = g_ptr_array_new_with_free_func(g_free);
    for (int i = 0; i < 3; i++) {
        g_assert_cmpint(sqlite3_prepare_v2(h, q[i], -1, &st, NULL), ==, SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            g_string_append_printf(s, "%s\n", (const char *)sqlite3_column_text(st, 0));
            if (i == 2) g_ptr_array_add(tables, g_strdup((const char *)sqlite3_column_text(st, 0)));
        }
        sqlite3_finalize(st);
    }
    for (guint t = 0; t < tables->len; t++) {
        char *sel = g_strdup_printf("SELECT * FROM \"%s\" ORDER BY rowid", (char *)g_ptr_array_index(tables, t));
        if (sqlite3_prepare_v2(h, sel, -1, &st, NULL) == SQLITE_OK) {
            while (sqlite3_step(st) == SQLITE_ROW) {
                for (int c = 0; c < sqlite3_column_count(st); c++) {
                    if (sqlite3_column_type(st, c) == SQLITE_BLOB) {
                        const unsigned char *b = sqlite3_column_blob(st, c);
                        for (int k = 0; k < sqlite3_column_bytes(st, c); k++) g_string_append_printf(s, "%02x", b[k]);
                    } else {
                        const unsigned char *x = sqlite3_column_text(st, c);
                        g_string_append(s, x ? (const char *)x : "NULL");
                    }
                    g_string_append_c(s, '|');
                }
                g_string_append_c(s, '\n');
            }
            sqlite3_finalize(st);
        }
        g_free(sel);
    }
    g_ptr_array_unref(tables);
    sqlite3_close(h);
    return g_string_free(s, FALSE);
}

static JsonObject *json_obj(const char *text, JsonNode **keep)
{
    *keep = json_from_string(text, NULL);
    g_assert_nonnull(*keep);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(*keep));
    return json_node_get_object(*keep);
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* A bad input: exit 1 (or 2 for usage), exactly one line "stem: error: ..."
 * containing `expect`, and the database unchanged. */
static void expect_refused(const char *db, const char *expect, Run r)
{
    (void)db;
    if (r.status == 0 || lines(r.err) != 1 || !g_str_has_prefix(r.err, "stem: error: ") ||
        (expect && !strstr(r.err, expect)))
        g_error("expected a one-line error with '%s', got status %d, stderr:\n%s", expect ? expect : "", r.status, r.err);
    run_free(&r);
}

static const char *single_country(int k)
{
    static char *cache[16];
    if (cache[k]) return cache[k];
    /* ask the binary: `edit plan --json` tells the token count of each variant */
    const StemFacts *f = fixture_facts();
    for (int c = 0, seen = 0; c < f->n; c++) {
        Run r = run("edit", "plan", "--model", model_a, "--source", f->countries[c].name, "--target",
                    f->countries[(c + 1) % f->n].name, "--json", NULL);
        gboolean one = FALSE;
        if (r.status == 0) {
            JsonNode *n;
            JsonObject *o = json_obj(r.out, &n);
            JsonArray *vs = json_object_get_array_member(json_object_get_object_member(o, "plan"), "variants");
            JsonObject *v0 = json_array_get_object_element(vs, 0);
            one = json_array_get_length(json_object_get_array_member(v0, "source_tokens")) == 1;
            json_node_unref(n);
        }
        run_free(&r);
        if (one && seen++ == k) return cache[k] = g_strdup(f->countries[c].name);
    }
    g_assert_not_reached();
    return NULL;
}

static char *path_in(const char *name) { return g_build_filename(tmp, name, NULL); }

static void test_happy_paths(void)
{
    char *db = path_in("happy.db");
    const char *S = single_country(0), *T = single_country(1);
    char *prompt = g_strdup_printf("The capital of %s is", S);

    Run r = run("edit", "apply", "--db", db, "--model", model_a, "--source", S, "--target", T, "--json", NULL);
    g_assert_cmpint(r.status, ==, 0);
    JsonNode *n;
    JsonObject *o = json_obj(r.out, &n);
    g_assert_cmpint(json_object_get_int_member(o, "id"), ==, 1);
    g_assert_cmpint(json_object_get_int_member(o, "rows"), >, 0);
    json_node_unref(n);
    run_free(&r);

    /* every reader sees the edit: topk / generate --db */
    Run plain = run("topk", model_a, prompt, "--json", "-k", "3", NULL);
    Run edited = run("topk", model_a, prompt, "--db", db, "--json", "-k", "3", NULL);
    g_assert_cmpint(plain.status, ==, 0);
    g_assert_cmpint(edited.status, ==, 0);
    g_assert_cmpstr(plain.out, !=, edited.out);
    run_free(&plain);
    run_free(&edited);
    r = run("generate", model_a, prompt, "--db", db, "-n", "4", NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);

    /* plan and its preview write nothing, and agree with topk --db */
    char *before = dump(db);
    char *S2 = g_strdup(single_country(2));
    r = run("edit", "plan", "--db", db, "--model", model_a, "--source", S2, "--target", T, "--prompt", prompt, "--json", NULL);
    g_assert_cmpint(r.status, ==, 0);
    o = json_obj(r.out, &n);
    g_assert_true(json_object_has_member(json_object_get_object_member(o, "plan"), "warnings"));
    g_assert_cmpfloat(json_object_get_double_member(o, "plan_ms"), <, 100.0);
    json_node_unref(n);
    run_free(&r);
    char *after = dump(db);
    g_assert_cmpstr(before, ==, after);
    g_free(after);
    g_free(before);

    /* revert / reapply by id, list, show, log, check */
    r = run("edit", "revert", "--db", db, "1", "--json", NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    plain = run("topk", model_a, prompt, "--json", "-k", "3", NULL);
    edited = run("topk", model_a, prompt, "--db", db, "--json", "-k", "3", NULL);
    g_assert_cmpstr(plain.out, ==, edited.out);   /* reverted: the model file's answer again */
    run_free(&plain);
    run_free(&edited);
    r = run("edit", "reapply", "--db", db, "1", NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    r = run("edit", "list", "--db", db, "--json", NULL);
    g_assert_cmpint(r.status, ==, 0);
    o = json_obj(r.out, &n);
    JsonObject *p0 = json_array_get_object_element(json_object_get_array_member(o, "patch_sets"), 0);
    g_assert_cmpstr(json_object_get_string_member(p0, "state"), ==, "applied");
    g_assert_cmpint(json_object_get_int_member(p0, "apply_seq"), ==, 2);
    json_node_unref(n);
    run_free(&r);
    const char *simple[][6] = {
        { "edit", "show", "--db", NULL, "1", "--json" }, { "edit", "log", "--db", NULL, "--json", NULL },
        { "edit", "check", "--db", NULL, "--json", NULL }, { "edit", "list", "--db", NULL, NULL, NULL },
    };
    for (guint i = 0; i < G_N_ELEMENTS(simple); i++) {
        r = run(simple[i][0], simple[i][1], simple[i][2], db, simple[i][4], simple[i][5], NULL);
        g_assert_cmpint(r.status, ==, 0);
        run_free(&r);
    }

    /* export -> import onto a copy -> same answer; bake -> a model with the edit built in */
    char *pf = path_in("p1.safetensors"), *copy = path_in("copy.safetensors"), *db2 = path_in("copy.db");
    r = run("edit", "export", "--db", db, "1", "--out", pf, NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    char *bytes;
    gsize len;
    g_assert_true(g_file_get_contents(model_a, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(copy, bytes, len, NULL));
    g_free(bytes);
    r = run("edit", "import", "--db", db2, "--model", copy, pf, "--json", NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    edited = run("topk", model_a, prompt, "--db", db, "--json", "-k", "3", NULL);
    Run imported = run("topk", copy, prompt, "--db", db2, "--json", "-k", "3", NULL);
    char *baked = path_in("baked.safetensors");
    r = run("edit", "bake", "--db", db, "--model", model_a, "--out", baked, "--json", NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    Run from_baked = run("topk", baked, prompt, "--json", "-k", "3", NULL);
    /* the outputs name the model path only through the prompt: identical */
    g_assert_cmpstr(edited.out, ==, imported.out);
    g_assert_cmpstr(edited.out, ==, from_baked.out);
    run_free(&edited);
    run_free(&imported);
    run_free(&from_baked);
    r = run("info", baked, "--json", NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);

    /* metrics of one patch set, and the aggregate over random pairs with a control */
    r = run("eval", "edit", "--db", db, "--model", model_a, "1", "--json", "--threads", "1", NULL);
    g_assert_cmpint(r.status, ==, 0);
    o = json_obj(r.out, &n);
    g_assert_true(json_object_has_member(json_object_get_object_member(o, "score"), "efficacy_strict"));
    json_node_unref(n);
    run_free(&r);
    r = run("eval", "edits", "--model", model_a, "--pairs", "2", "--seed", "3", "--strategy", "auto", "--control",
            model_dense, "--json", "--threads", "1", NULL);
    g_assert_cmpint(r.status, ==, 0);
    o = json_obj(r.out, &n);
    JsonArray *rows = json_object_get_array_member(o, "rows");
    g_assert_cmpuint(json_array_get_length(rows), ==, 4);   /* (single, multi) x (auto, control) */
    json_node_unref(n);
    run_free(&r);

    g_free(S2);
    g_free(baked);
    g_free(pf);
    g_free(copy);
    g_free(db2);
    g_free(prompt);
    g_free(db);
}

static void test_bad_inputs(void)
{
    char *db = path_in("bad.db");
    const char *S = single_country(0), *T = single_country(1);
    Run r = run("edit", "apply", "--db", db, "--model", model_a, "--source", S, "--target", T, NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    char *state = dump(db);
    char *fresh = path_in("never.db");

    /* "$S" / "$T" stand for the two countries */
    struct { const char *what, *expect; const char *args[7]; } cases[] = {
        { "unknown entity", "unknown source entity", { "--source", "Xqzzvwkj", "--target", "$T" } },
        { "empty entity", "empty", { "--source", "", "--target", "$T" } },
        { "blank entity", "empty", { "--source", "   ", "--target", "$T" } },
        { "empty target", "empty", { "--source", "$S", "--target", "" } },
        { "source = target", "same entity", { "--source", "$S", "--target", "$S" } },
        { "layer out of range", "out of range", { "--layers", "9", "--source", "$S", "--target", "$T" } },
        { "dense layer", "dense layer", { "--layers", "0", "--source", "$S", "--target", "$T" } },
        { "bad layer list", "bad layer list", { "--layers", "1,x", "--source", "$S", "--target", "$T" } },
        { "alpha > 1", "alpha", { "--alpha", "1.5", "--source", "$S", "--target", "$T" } },
        { "alpha < 0", "alpha", { "--alpha=-0.5", "--source", "$S", "--target", "$T" } },
        { "alpha nan", "alpha", { "--alpha", "nan", "--source", "$S", "--target", "$T" } },
        { "unknown strategy", "unknown strategy", { "--strategy", "zigzag", "--source", "$S", "--target", "$T" } },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *v[7] = { NULL };
        for (int q = 0; q < 7 && cases[i].args[q]; q++)
            v[q] = !strcmp(cases[i].args[q], "$S") ? S : !strcmp(cases[i].args[q], "$T") ? T : cases[i].args[q];
        for (int target_db = 0; target_db < 2; target_db++) {
            const char *dbp = target_db ? fresh : db;
            Run x = run("edit", "apply", "--db", dbp, "--model", model_a, v[0], v[1], v[2], v[3], v[4], v[5], v[6], NULL);
            g_test_message("%s: %s", cases[i].what, x.err);
            expect_refused(dbp, cases[i].expect, x);
        }
        char *now = dump(db);
        g_assert_cmpstr(now, ==, state);
        g_free(now);
        g_assert_false(g_file_test(fresh, G_FILE_TEST_EXISTS));
    }

    /* a database made for another model */
    expect_refused(db, "another model",
                   run("edit", "apply", "--db", db, "--model", model_b, "--source", S, "--target", T, NULL));
    expect_refused(db, "another model", run("topk", model_b, "The capital of Spain is", "--db", db, NULL));
    /* revert of what is not there or not applied */
    expect_refused(db, "no patch set", run("edit", "revert", "--db", db, "42", NULL));
    r = run("edit", "revert", "--db", db, "1", NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    g_free(state);
    state = dump(db);
    expect_refused(db, "not applied", run("edit", "revert", "--db", db, "1", NULL));
    expect_refused(db, "already applied", (r = run("edit", "reapply", "--db", db, "1", NULL), run_free(&r),
                                           run("edit", "reapply", "--db", db, "1", NULL)));
    r = run("edit", "revert", "--db", db, "1", NULL);
    run_free(&r);
    /* a missing database is not created by readers */
    expect_refused(fresh, "no such edit database", run("edit", "list", "--db", fresh, NULL));
    expect_refused(fresh, "no such edit database", run("topk", model_a, "x", "--db", fresh, NULL));
    g_assert_false(g_file_test(fresh, G_FILE_TEST_EXISTS));

    /* patch files: another model, truncated, corrupted */
    char *pf = path_in("bad-p.safetensors");
    r = run("edit", "export", "--db", db, "1", "--out", pf, NULL);
    g_assert_cmpint(r.status, ==, 0);
    run_free(&r);
    expect_refused(fresh, "another model", run("edit", "import", "--db", fresh, "--model", model_b, pf, NULL));
    g_assert_false(g_file_test(fresh, G_FILE_TEST_EXISTS));
    char *bytes;
    gsize len;
    g_assert_true(g_file_get_contents(pf, &bytes, &len, NULL));
    char *trunc = path_in("trunc.safetensors"), *corrupt = path_in("corrupt.safetensors");
    g_file_set_contents(trunc, bytes, len / 2, NULL);
    bytes[len - 5] ^= 0x10;
    g_file_set_contents(corrupt, bytes, len, NULL);
    g_free(bytes);
    g_free(state);
    state = dump(db);
    expect_refused(db, "patch file", run("edit", "import", "--db", db, "--model", model_a, trunc, NULL));
    expect_refused(db, "damaged", run("edit", "import", "--db", db, "--model", model_a, corrupt, NULL));
    expect_refused(db, "not a STEM patch file", run("edit", "import", "--db", db, "--model", model_a, model_a, NULL));
    char *now = dump(db);
    g_assert_cmpstr(now, ==, state);
    g_free(now);

    /* a database from a newer schema: refused, file untouched */
    char *newer = path_in("newer.db");
    {
        g_assert_true(g_file_get_contents(db, &bytes, &len, NULL));   /* WAL checkpointed on last close */
        g_file_set_contents(newer, bytes, len, NULL);
        g_free(bytes);
        sqlite3 *h;
        g_assert_cmpint(sqlite3_open(newer, &h), ==, SQLITE_OK);
        g_assert_cmpint(sqlite3_exec(h, "PRAGMA journal_mode = DELETE; PRAGMA user_version = 7;", NULL, NULL, NULL), ==,
                        SQLITE_OK);
        sqlite3_close(h);
    }
    char *b0;
    gsize n0;
    g_assert_true(g_file_get_contents(newer, &b0, &n0, NULL));
    expect_refused(newer, "newer", run("edit", "apply", "--db", newer, "--model", model_a, "--source", S, "--target", T, NULL));
    expect_refused(newer, "newer", run("edit", "list", "--db", newer, NULL));
    g_assert_true(g_file_get_contents(newer, &bytes, &len, NULL));
    g_assert_cmpmem(b0, n0, bytes, len);
    g_free(bytes);
    g_free(b0);

    /* bake never overwrites the model */
    expect_refused(db, "refusing", run("edit", "bake", "--db", db, "--model", model_a, "--out", model_a, NULL));

    /* usage errors: exit 2 */
    r = run("edit", "apply", "--model", model_a, "--source", S, "--target", T, NULL);
    g_assert_cmpint(r.status, ==, 2);
    run_free(&r);
    r = run("edit", "frobnicate", NULL);
    g_assert_cmpint(r.status, ==, 2);
    run_free(&r);

    g_free(newer);
    g_free(trunc);
    g_free(corrupt);
    g_free(pf);
    g_free(fresh);
    g_free(state);
    g_free(db);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (argc < 2) {
        fprintf(stderr, "usage: test-cli STEM_BINARY\n");
        return 2;
    }
    stem = g_canonicalize_filename(argv[1], NULL);   /* the children run in a temporary directory */
    tmp = fixture_tmpdir();
    model_a = fixture_model(tmp, "a.safetensors", 1, FALSE);
    model_b = fixture_model(tmp, "b.safetensors", 2, FALSE);
    model_dense = fixture_model(tmp, "dense.safetensors", 3, TRUE);
    g_test_add_func("/edit/cli/happy-paths", test_happy_paths);
    g_test_add_func("/edit/cli/bad-inputs", test_bad_inputs);
    int rc = g_test_run();
    fixture_rmdir(tmp);
    return rc;
}
