/* Crash test: a child process applies, reverts and reapplies patch sets in a
 * loop and is killed with SIGKILL at a random moment; then the parent checks
 *   - the database opens and PRAGMA integrity_check is ok,
 *   - every patch set is whole (all its rows, checksum matches) and either
 *     applied or reverted (stem_editdb_check),
 *   - nothing recorded is lost: every operation the child reported as done
 *     (after its commit returned) is in the audit log, in order, and at most
 *     one more (committed, killed before reporting),
 *   - the patch sets' states are exactly what replaying the audit log gives,
 *   - a fresh model attached to it has the effective rows that an independent
 *     computation from the stored rows and apply order gives.
 * One database lives through all trials, so kills land in creation, in WAL
 * recovery after the previous kill, and in every kind of transaction. An eighth
 * of the children run with STEM_EDITDB_SYNC=full.
 *
 *   test-crash [TRIALS [SEED]]    (default 200; exits 77 for TRIALS > 1000
 *                                  unless STEM_SLOW_TESTS=1) */
#include "fixture.h"
#include "editdb/editdb.h"
#include "engine/checkpoint.h"
#include "engine/tokenizer.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { OP_APPLY = 1, OP_REVERT = 2, OP_REAPPLY = 3 };
typedef struct {
    int32_t op;
    int32_t pad;
    gint64 id;
} Record;

static const char *const op_names[] = { "", "apply", "revert", "reapply" };

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "test-crash: trial %d: ", trial);                                                              \
        fprintf(stderr, __VA_ARGS__);                                                                                  \
        fprintf(stderr, "\n");                                                                                         \
        exit(1);                                                                                                       \
    } while (0)

static int trial;

/* The child: random operations until killed. */
static G_NORETURN void child(const char *db_path, StemModel *m, const StemFacts *f, int fd, guint32 seed)
{
    if (seed % 8 == 0) g_setenv("STEM_EDITDB_SYNC", "full", TRUE);
    GError *e = NULL;
    StemEditDb *db = stem_editdb_open(db_path, TRUE, &e);
    if (!db) {
        fprintf(stderr, "child: %s\n", e->message);
        _exit(3);
    }
    if (!stem_editdb_attach(db, m, f, &e)) {
        fprintf(stderr, "child: %s\n", e->message);
        _exit(3);
    }
    GRand *r = g_rand_new_with_seed(seed);
    /* ready: the parent times its kill from here, so it lands in the loop */
    Record ready = { 0 };
    if (write(fd, &ready, sizeof ready) != sizeof ready) _exit(5);
    GPtrArray *all = stem_editdb_list(db, &e);
    GArray *applied = g_array_new(FALSE, FALSE, sizeof(gint64)), *reverted = g_array_new(FALSE, FALSE, sizeof(gint64));
    for (guint i = 0; i < all->len; i++) {
        StemPatchSet *p = g_ptr_array_index(all, i);
        g_array_append_val(p->applied ? applied : reverted, p->id);
    }
    g_ptr_array_unref(all);
    const int F = m->cfg.ffn_dim;
    const int pool[] = { 3, 4, 100, 101, 200, 257, 258, 600, 1000 };
    for (;;) {
        double u = g_rand_double(r);
        Record rec = { 0 };
        if (u < 0.4 || (applied->len == 0 && reverted->len == 0)) {
            gint64 id;
            if (g_rand_double(r) < 0.25 && f) {
                StemRecipe rc;
                stem_recipe_init(&rc);
                rc.source = g_strdup(f->countries[g_rand_int_range(r, 0, f->n)].name);
                rc.target = g_strdup(f->countries[g_rand_int_range(r, 0, f->n)].name);
                id = stem_editdb_apply(db, &rc, NULL, &e);
                stem_recipe_clear(&rc);
                if (!id) {   /* source == target and the like: nothing happened */
                    g_clear_error(&e);
                    continue;
                }
            } else {
                int n = g_rand_int_range(r, 1, 6), k = 0;
                int32_t ls[8], ts[8];
                for (int l = 1; l <= 2; l++)
                    for (guint i = 0; i < G_N_ELEMENTS(pool) && k < n; i++)
                        if (g_rand_double(r) < 0.3) {
                            ls[k] = l;
                            ts[k++] = pool[i];
                        }
                if (k == 0) continue;
                float *after = g_new(float, k * F);
                for (int q = 0; q < k * F; q++) after[q] = (float)g_rand_double_range(r, -2, 2);
                id = stem_editdb_apply_rows(db, "{\"kind\": \"swap\", \"source\": \"crash\", \"target\": \"test\"}", NULL,
                                            "crash-test", k, ls, ts, after, &e);
                g_free(after);
            }
            if (!id) {
                fprintf(stderr, "child: apply: %s\n", e->message);
                _exit(4);
            }
            g_array_append_val(applied, id);
            rec = (Record){ OP_APPLY, 0, id };
        } else if (u < 0.75 && applied->len) {
            guint i = g_rand_int_range(r, 0, applied->len);
            gint64 id = g_array_index(applied, gint64, i);
            if (!stem_editdb_revert(db, id, &e)) {
                fprintf(stderr, "child: revert: %s\n", e->message);
                _exit(4);
            }
            g_array_remove_index_fast(applied, i);
            g_array_append_val(reverted, id);
            rec = (Record){ OP_REVERT, 0, id };
        } else if (reverted->len) {
            guint i = g_rand_int_range(r, 0, reverted->len);
            gint64 id = g_array_index(reverted, gint64, i);
            if (!stem_editdb_reapply(db, id, &e)) {
                fprintf(stderr, "child: reapply: %s\n", e->message);
                _exit(4);
            }
            g_array_remove_index_fast(reverted, i);
            g_array_append_val(applied, id);
            rec = (Record){ OP_REAPPLY, 0, id };
        } else {
            continue;
        }
        /* reported only once the commit returned: "recorded" */
        if (write(fd, &rec, sizeof rec) != sizeof rec) _exit(5);
    }
}

typedef struct {
    gboolean applied;
    gint64 seq;
} State;

int main(int argc, char **argv)
{
    int trials = argc > 1 ? atoi(argv[1]) : 200;
    guint32 seed = argc > 2 ? (guint32)atoi(argv[2]) : 12345;
    if (trials > 1000 && g_strcmp0(g_getenv("STEM_SLOW_TESTS"), "1")) {
        printf("skipped: %d trials is the slow suite (set STEM_SLOW_TESTS=1)\n", trials);
        return 77;
    }
    char *tmp = fixture_tmpdir();
    char *model_path = fixture_model(tmp, "a.safetensors", 1, FALSE);
    char *db_path = g_build_filename(tmp, "crash.db", NULL);
    GError *e = NULL;
    StemModel *m = stem_model_load(model_path, &e);
    if (!m) FAIL("%s", e->message);
    stem_model_sha256(m, NULL);   /* hashed once, inherited by the children */
    StemModel *ref = stem_model_load(model_path, &e);
    const StemFacts *f = fixture_facts();
    GRand *r = g_rand_new_with_seed(seed);
    GHashTable *states = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    gint64 last_audit = 0, max_seq = 0;
    int total_ops = 0, extra_commits = 0, killed_early = 0;
    const int F = m->cfg.ffn_dim;
    gint64 t_start = g_get_monotonic_time();

    for (trial = 0; trial < trials; trial++) {
        int fds[2];
        if (pipe(fds)) FAIL("pipe");
        pid_t pid = fork();
        if (pid < 0) FAIL("fork");
        if (pid == 0) {
            close(fds[0]);
            child(db_path, m, f, fds[1], seed * 7919u + (guint32)trial);
        }
        close(fds[1]);
        /* A random moment. One trial in eight: any time from the fork on (open,
         * WAL recovery, schema creation). The others: after the child is ready
         * and has reported 0-3 operations, 0-4 ms more: inside its
         * apply/revert/reapply loop whatever the machine's load. */
        GArray *recs = g_array_new(FALSE, FALSE, sizeof(Record));
        Record rec;
        ssize_t n;
        if (g_rand_int_range(r, 0, 8) == 0) {
            g_usleep((gulong)g_rand_int_range(r, 0, 8000));
        } else {
            int wait_ops = g_rand_int_range(r, 0, 4);
            for (int k = -1; k < wait_ops; k++) {   /* the ready record, then wait_ops ops */
                if (read(fds[0], &rec, sizeof rec) != sizeof rec) FAIL("the child died before it was killed");
                if (rec.op) g_array_append_val(recs, rec);
            }
            g_usleep((gulong)g_rand_int_range(r, 0, 4000));
        }
        kill(pid, SIGKILL);
        int st = 0;
        if (waitpid(pid, &st, 0) != pid) FAIL("waitpid");
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
            FAIL("the child ended by itself (status %d): it failed", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        while ((n = read(fds[0], &rec, sizeof rec)) == sizeof rec)
            if (rec.op) g_array_append_val(recs, rec);   /* op 0 = ready */
        close(fds[0]);
        total_ops += recs->len;

        if (!g_file_test(db_path, G_FILE_TEST_EXISTS)) {
            if (recs->len) FAIL("ops were reported but the database does not exist");
            killed_early++;
            g_array_unref(recs);
            continue;
        }
        StemEditDb *db = stem_editdb_open(db_path, FALSE, &e);
        if (!db) FAIL("open: %s", e->message);
        if (!stem_editdb_check(db, &e)) FAIL("check: %s", e->message);

        /* the audit log extends the previous one with the reported ops as a prefix */
        GPtrArray *log = stem_editdb_audit(db, &e);
        if (!log) FAIL("audit: %s", e->message);
        guint k = 0;
        int new_ops = 0;
        for (guint i = 0; i < log->len; i++) {
            StemAuditEntry *x = g_ptr_array_index(log, i);
            if (x->id <= last_audit) continue;
            last_audit = x->id;
            int op = !strcmp(x->action, "apply") ? OP_APPLY : !strcmp(x->action, "revert") ? OP_REVERT
                     : !strcmp(x->action, "reapply") ? OP_REAPPLY : 0;
            if (!op) {
                if (strcmp(x->action, "create")) FAIL("unexpected audit action %s", x->action);
                continue;
            }
            if (k < recs->len) {
                Record *want = &g_array_index(recs, Record, k);
                if (want->op != op || want->id != x->patch_set)
                    FAIL("audit entry %" G_GINT64_FORMAT " is %s %" G_GINT64_FORMAT ", the child reported %s %" G_GINT64_FORMAT,
                         x->id, x->action, x->patch_set, op_names[want->op], want->id);
            }
            k++;
            new_ops++;
            /* replay */
            State *s = g_hash_table_lookup(states, &x->patch_set);
            if (op == OP_APPLY) {
                if (s) FAIL("patch set %" G_GINT64_FORMAT " applied twice", x->patch_set);
                gint64 *key = g_new(gint64, 1);
                *key = x->patch_set;
                s = g_new0(State, 1);
                g_hash_table_insert(states, key, s);
            } else if (!s || s->applied != (op == OP_REVERT)) {
                FAIL("%s of patch set %" G_GINT64_FORMAT " in a wrong state", x->action, x->patch_set);
            }
            s->applied = op != OP_REVERT;
            if (op != OP_REVERT) {
                if (x->apply_seq <= max_seq) FAIL("apply sequence went backwards");
                s->seq = max_seq = x->apply_seq;
            }
        }
        if (k < recs->len) FAIL("%u reported ops but only %u in the audit log: a recorded op was lost", recs->len, k);
        if (k > recs->len + 1) FAIL("%u ops in the log but %u reported: more than one unreported commit", k, recs->len);
        extra_commits += k - recs->len;
        g_ptr_array_unref(log);

        /* states are exactly the replay; rows are whole (checked above) */
        GPtrArray *all = stem_editdb_list(db, &e);
        if (all->len != g_hash_table_size(states)) FAIL("%u patch sets, replay says %u", all->len, g_hash_table_size(states));
        GPtrArray *sets = g_ptr_array_new_with_free_func((GDestroyNotify)stem_patch_set_free);
        for (guint i = 0; i < all->len; i++) {
            StemPatchSet *p = g_ptr_array_index(all, i);
            State *s = g_hash_table_lookup(states, &p->id);
            if (!s || s->applied != p->applied || (p->applied && s->seq != p->apply_seq))
                FAIL("patch set %" G_GINT64_FORMAT " is %s (seq %" G_GINT64_FORMAT "), the log says otherwise", p->id,
                     p->applied ? "applied" : "reverted", p->apply_seq);
            if (p->applied) g_ptr_array_add(sets, stem_editdb_get(db, p->id, TRUE, &e));
        }
        g_ptr_array_unref(all);

        /* effective rows: a fresh model vs the latest applied row per key */
        StemModel *fresh = stem_model_load(model_path, &e);
        if (!stem_editdb_attach(db, fresh, f, &e)) FAIL("attach: %s", e->message);
        GHashTable *top = g_hash_table_new(g_direct_hash, g_direct_equal);   /* key -> row ptr */
        GHashTable *top_seq = g_hash_table_new(g_direct_hash, g_direct_equal);
        for (guint i = 0; i < sets->len; i++) {
            StemPatchSet *p = g_ptr_array_index(sets, i);
            for (int q = 0; q < p->n_rows; q++) {
                gpointer key = GINT_TO_POINTER((p->layers[q] << 20 | p->tokens[q]) + 1);
                gint64 have = GPOINTER_TO_SIZE(g_hash_table_lookup(top_seq, key));
                if (p->apply_seq > have) {
                    g_hash_table_insert(top_seq, key, GSIZE_TO_POINTER(p->apply_seq));
                    g_hash_table_insert(top, key, p->after + (size_t)q * F);
                }
            }
        }
        if (stem_tables_n_overrides(fresh->tables) != g_hash_table_size(top))
            FAIL("%u rows in the overlay, %u expected", stem_tables_n_overrides(fresh->tables), g_hash_table_size(top));
        float *row = g_new(float, F), *want = g_new(float, F);
        for (int j = 0; j < stem_tables_n(fresh->tables); j++) {
            int l = stem_config_stem_layer(&fresh->cfg, j);
            for (int t = 0; t < fresh->cfg.vocab; t++) {
                const float *x = g_hash_table_lookup(top, GINT_TO_POINTER((l << 20 | t) + 1));
                if (x) memcpy(want, x, sizeof(float) * F);
                else stem_tables_base_row(ref->tables, j, t, want);
                stem_tables_row(fresh->tables, j, t, row);
                if (memcmp(row, want, sizeof(float) * F)) FAIL("row (layer %d, token %d) differs", l, t);
            }
        }
        g_free(row);
        g_free(want);
        g_hash_table_destroy(top);
        g_hash_table_destroy(top_seq);
        g_ptr_array_unref(sets);
        stem_editdb_close(db);
        stem_model_free(fresh);
        g_array_unref(recs);
    }
    printf("crash test: %d trials, %d ops reported, %d commits killed before being reported, %d kills before the "
           "database existed, %u patch sets, %.1f s\n",
           trials, total_ops, extra_commits, killed_early, g_hash_table_size(states),
           (g_get_monotonic_time() - t_start) / 1e6);
    g_hash_table_destroy(states);
    g_rand_free(r);
    stem_model_free(ref);
    stem_model_free(m);
    fixture_rmdir(tmp);
    g_free(tmp);
    g_free(model_path);
    g_free(db_path);
    return 0;
}
