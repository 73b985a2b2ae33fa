/* The edit database. Reads top to bottom: SQLite helpers, the schema and its
 * migrations, open, attach and the in-memory overlay, apply / revert / reapply,
 * queries, the consistency check. See editdb.h and README.md. */
#include "editdb.h"
#include "rowhash.h"
#include "engine/checkpoint.h"
#include "engine/tokenizer.h"

#include <glib/gstdio.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK(stem-editdb-error-quark, stem_editdb_error)

struct StemEditDb {
    sqlite3 *h;
    char *path;
    StemModel *m;               /* attached model (not owned) */
    StemPlanner *planner;       /* owned, for the attached model; created on first use */
    const StemFacts *facts;     /* given to attach (may be NULL: the planner loads the bundled table) */
    char *model_sha, *tok_sha;  /* recorded in the database (NULL before the first write) */
    char *model_cfg;            /* its stem_config JSON */
    gint64 model_stat[3];       /* size, mtime_ns, inode of the file when it was hashed */
    gboolean model_stat_ok;
    gint64 data_version;        /* PRAGMA data_version when the overlay was last synced */
};

/* ------------------------------------------------------------------ SQLite helpers */

static gboolean fail(StemEditDb *db, GError **error, const char *what)
{
    int code = sqlite3_extended_errcode(db->h);
    g_set_error(error, STEM_EDITDB_ERROR,
                (code & 0xff) == SQLITE_NOTADB ? STEM_EDITDB_ERROR_NOT_EDITDB : STEM_EDITDB_ERROR_IO,
                "%s: %s: %s", db->path, what, sqlite3_errmsg(db->h));
    return FALSE;
}

static gboolean exec(StemEditDb *db, const char *sql, GError **error)
{
    if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK) return fail(db, error, "SQL failed");
    return TRUE;
}

static sqlite3_stmt *prep(StemEditDb *db, const char *sql, GError **error)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, &s, NULL) != SQLITE_OK) {
        fail(db, error, "SQL failed");
        return NULL;
    }
    return s;
}

/* First column of a one-row integer query (pragmas, counts). */
static gboolean query_int(StemEditDb *db, const char *sql, gint64 *out, GError **error)
{
    sqlite3_stmt *s = prep(db, sql, error);
    if (!s) return FALSE;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(s, 0);
    else if (rc == SQLITE_DONE) *out = 0;
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return fail(db, error, "SQL failed");
    return TRUE;
}

static char *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? g_strdup((const char *)t) : NULL;
}

/* BEGIN IMMEDIATE takes the write lock at once, so two writers queue on the
 * busy timeout instead of failing later with SQLITE_BUSY_SNAPSHOT. */
static gboolean begin_write(StemEditDb *db, GError **error) { return exec(db, "BEGIN IMMEDIATE", error); }
static gboolean commit(StemEditDb *db, GError **error) { return exec(db, "COMMIT", error); }
static void rollback(StemEditDb *db)
{
    if (!sqlite3_get_autocommit(db->h)) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

static char *json_of(JsonBuilder *b)
{
    JsonGenerator *g = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(g, root);
    char *s = json_generator_to_data(g, NULL);
    json_node_unref(root);
    g_object_unref(g);
    g_object_unref(b);
    return s;
}

/* ------------------------------------------------------------------ schema */

/* Schema versions, oldest first: migrations[v - 1] takes a database from
 * version v - 1 to v. A new version appends one entry and bumps
 * STEM_EDITDB_SCHEMA_VERSION; a database with a higher user_version than we
 * know is refused (we cannot know what its new columns mean).
 *
 * Version 1:
 *  - model: the one model this database edits (sha256 of the file, the
 *    tokenizer's sha256, its config). Written by the first apply or import.
 *    file_size / file_mtime_ns / file_inode: the file as it was when hashed;
 *    the same path with the same stat is trusted without re-hashing (hashing a
 *    1 GB model takes seconds; git's index makes the same bet).
 *  - recipes: what the user asked for; the planner turns it into rows.
 *  - patch_sets: one applied/reverted unit. apply_seq is the sequence number of
 *    its latest apply: strictly increasing over the database's life (kept on
 *    revert, renewed on reapply), so "the latest applied set that sets a row"
 *    is the max apply_seq among applied sets. checksum: rowhash.h.
 *  - patch_rows: per (layer, token) the row before and after as fp32
 *    little-endian BLOBs of ffn * 4 bytes. Rows are big (2 KB at ffn 512), so a
 *    rowid table with a unique key rather than WITHOUT ROWID.
 *  - audit: every action, append-only, in the same transaction as the action. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE model ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  sha256 TEXT NOT NULL,"
    "  tokenizer_sha256 TEXT,"
    "  config TEXT NOT NULL,"
    "  path TEXT,"
    "  file_size INTEGER,"
    "  file_mtime_ns INTEGER,"
    "  file_inode INTEGER,"
    "  created_at TEXT NOT NULL);"
    "CREATE TABLE recipes ("
    "  id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  target TEXT,"
    "  strategy TEXT NOT NULL,"
    "  layers TEXT NOT NULL,"
    "  alpha REAL NOT NULL,"
    "  json TEXT NOT NULL,"
    "  created_at TEXT NOT NULL);"
    "CREATE TABLE patch_sets ("
    "  id INTEGER PRIMARY KEY,"
    "  recipe_id INTEGER NOT NULL REFERENCES recipes(id),"
    "  model_sha256 TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('applied', 'reverted')),"
    "  apply_seq INTEGER NOT NULL UNIQUE,"
    "  n_rows INTEGER NOT NULL CHECK (n_rows > 0),"
    "  ffn INTEGER NOT NULL CHECK (ffn > 0),"
    "  checksum TEXT NOT NULL,"
    "  summary TEXT,"
    "  origin TEXT NOT NULL,"
    "  created_at TEXT NOT NULL,"
    "  applied_at TEXT,"
    "  reverted_at TEXT);"
    "CREATE INDEX patch_sets_by_state ON patch_sets(state, apply_seq);"
    "CREATE TABLE patch_rows ("
    "  patch_set INTEGER NOT NULL REFERENCES patch_sets(id),"
    "  layer INTEGER NOT NULL,"
    "  token INTEGER NOT NULL,"
    "  before BLOB NOT NULL,"
    "  after BLOB NOT NULL,"
    "  UNIQUE (patch_set, layer, token));"
    /* revert looks up 'who else sets this row' by key */
    "CREATE INDEX patch_rows_by_key ON patch_rows(layer, token);"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  patch_set INTEGER,"
    "  apply_seq INTEGER,"
    "  detail TEXT,"
    "  program TEXT NOT NULL);",
};
G_STATIC_ASSERT(G_N_ELEMENTS(migrations) == STEM_EDITDB_SCHEMA_VERSION);

#define NOW_SQL "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

static gboolean audit(StemEditDb *db, const char *action, gint64 ps, gint64 seq, const char *detail, GError **error)
{
    sqlite3_stmt *s = prep(db,
                           "INSERT INTO audit (at, action, patch_set, apply_seq, detail, program) "
                           "VALUES (" NOW_SQL ", ?1, ?2, ?3, ?4, ?5)",
                           error);
    if (!s) return FALSE;
    sqlite3_bind_text(s, 1, action, -1, SQLITE_STATIC);
    if (ps > 0) sqlite3_bind_int64(s, 2, ps);
    if (seq > 0) sqlite3_bind_int64(s, 3, seq);
    if (detail) sqlite3_bind_text(s, 4, detail, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, "stem " STEM_VERSION, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return fail(db, error, "cannot write the audit log");
    return TRUE;
}

/* Bring the schema to the current version in one transaction. Two processes
 * creating the same new file serialize on BEGIN IMMEDIATE; the second sees the
 * version the first wrote and does nothing. */
static gboolean migrate(StemEditDb *db, GError **error)
{
    if (!begin_write(db, error)) return FALSE;
    gint64 v = 0, app = 0, n_tables = 0;
    if (!query_int(db, "PRAGMA user_version", &v, error) || !query_int(db, "PRAGMA application_id", &app, error) ||
        !query_int(db, "SELECT count(*) FROM sqlite_master", &n_tables, error))
        goto fail;
    if (app != 0 && app != STEM_EDITDB_APPLICATION_ID) goto not_ours;
    if (app == 0 && n_tables > 0) goto not_ours;
    if (v > STEM_EDITDB_SCHEMA_VERSION) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NEWER,
                    "%s: schema version %" G_GINT64_FORMAT " is newer than this program supports (%d): "
                    "use a newer stem",
                    db->path, v, STEM_EDITDB_SCHEMA_VERSION);
        goto fail;
    }
    if (v == STEM_EDITDB_SCHEMA_VERSION) {
        rollback(db);
        return TRUE;
    }
    for (gint64 k = v; k < STEM_EDITDB_SCHEMA_VERSION; k++)
        if (!exec(db, migrations[k], error)) goto fail;
    char *pragmas = g_strdup_printf("PRAGMA application_id = %d; PRAGMA user_version = %d;",
                                    STEM_EDITDB_APPLICATION_ID, STEM_EDITDB_SCHEMA_VERSION);
    gboolean ok = exec(db, pragmas, error);
    g_free(pragmas);
    if (!ok) goto fail;
    char *detail = g_strdup_printf("{\"from_version\": %" G_GINT64_FORMAT ", \"to_version\": %d}", v,
                                   STEM_EDITDB_SCHEMA_VERSION);
    ok = audit(db, v == 0 ? "create" : "migrate", 0, 0, detail, error);
    g_free(detail);
    if (!ok || !commit(db, error)) goto fail;
    return TRUE;
not_ours:
    g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_EDITDB,
                "%s: not a STEM edit database (another SQLite database)", db->path);
fail:
    rollback(db);
    return FALSE;
}

/* ------------------------------------------------------------------ open */

/* Durability: WAL with synchronous=NORMAL survives any crash of the process
 * (the WAL is in the OS page cache) and never corrupts; only a power loss can
 * lose the last transactions. STEM_EDITDB_SYNC=full fsyncs every commit (power
 * loss safe, ~ms per commit on slow disks). See README.md "Durability". */
static const char *sync_pragma(void)
{
    const char *e = g_getenv("STEM_EDITDB_SYNC");
    if (e && !g_ascii_strcasecmp(e, "full")) return "PRAGMA synchronous = FULL";
    return "PRAGMA synchronous = NORMAL";
}

static gboolean load_model_row(StemEditDb *db, GError **error)
{
    sqlite3_stmt *s = prep(db,
                           "SELECT sha256, tokenizer_sha256, config, file_size, file_mtime_ns, file_inode "
                           "FROM model WHERE id = 1",
                           error);
    if (!s) return FALSE;
    int rc = sqlite3_step(s);
    g_clear_pointer(&db->model_sha, g_free);
    g_clear_pointer(&db->tok_sha, g_free);
    g_clear_pointer(&db->model_cfg, g_free);
    if (rc == SQLITE_ROW) {
        db->model_sha = col_text(s, 0);
        db->tok_sha = col_text(s, 1);
        db->model_cfg = col_text(s, 2);
        db->model_stat_ok = sqlite3_column_type(s, 3) == SQLITE_INTEGER;
        for (int i = 0; i < 3; i++) db->model_stat[i] = sqlite3_column_int64(s, 3 + i);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return fail(db, error, "cannot read the model record");
    return TRUE;
}

StemEditDb *stem_editdb_open(const char *path, gboolean create, GError **error)
{
    gboolean exists = g_file_test(path, G_FILE_TEST_EXISTS);
    if (!exists && !create) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_FOUND, "%s: no such edit database", path);
        return NULL;
    }
    if (exists && !g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_EDITDB, "%s: not a file", path);
        return NULL;
    }
    StemEditDb *db = g_new0(StemEditDb, 1);
    db->path = g_strdup(path);
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &db->h, flags, NULL) != SQLITE_OK) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_IO, "%s: cannot open: %s", path,
                    db->h ? sqlite3_errmsg(db->h) : "out of memory");
        stem_editdb_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db->h, 1);
    /* a second writer waits for the first (apply/revert take milliseconds) */
    sqlite3_busy_timeout(db->h, 15000);
    /* Identify the file before changing anything in it: a newer schema or
     * someone else's database is refused untouched. */
    gint64 app = 0, v = 0, n_tables = 0;
    if (!query_int(db, "PRAGMA application_id", &app, error) || !query_int(db, "PRAGMA user_version", &v, error) ||
        !query_int(db, "SELECT count(*) FROM sqlite_master", &n_tables, error)) {
        if (g_error_matches(*error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_EDITDB)) {
            g_clear_error(error);
            g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_EDITDB,
                        "%s: not a STEM edit database (not an SQLite file)", path);
        }
        stem_editdb_close(db);
        return NULL;
    }
    if ((app != 0 && app != STEM_EDITDB_APPLICATION_ID) || (app == 0 && n_tables > 0)) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_EDITDB,
                    "%s: not a STEM edit database (another SQLite database)", path);
        stem_editdb_close(db);
        return NULL;
    }
    if (v > STEM_EDITDB_SCHEMA_VERSION) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NEWER,
                    "%s: schema version %" G_GINT64_FORMAT " is newer than this program supports (%d): use a newer stem",
                    path, v, STEM_EDITDB_SCHEMA_VERSION);
        stem_editdb_close(db);
        return NULL;
    }
    /* WAL: readers never block the writer, and a commit is one append */
    sqlite3_stmt *s = prep(db, "PRAGMA journal_mode = WAL", error);
    if (!s) {
        stem_editdb_close(db);
        return NULL;
    }
    int rc = sqlite3_step(s);
    gboolean wal = rc == SQLITE_ROW && !g_ascii_strcasecmp((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    if (!wal) {
        fail(db, error, "cannot switch to WAL mode");
        stem_editdb_close(db);
        return NULL;
    }
    /* Checkpoints (WAL -> database, with an fsync even at synchronous=NORMAL)
     * happen when the WAL passes this many pages and when the last connection
     * closes. SQLite's default, 1,000 pages (4 MB), puts one inside every ~20th
     * apply of a 512-wide model (+5 ms); 4,000 pages (16 MB) keeps them out of
     * an interactive session's applies. */
    if (!exec(db, sync_pragma(), error) || !exec(db, "PRAGMA foreign_keys = ON", error) ||
        !exec(db, "PRAGMA wal_autocheckpoint = 4000", error) ||
        (v < STEM_EDITDB_SCHEMA_VERSION && !migrate(db, error)) || !load_model_row(db, error)) {
        stem_editdb_close(db);
        return NULL;
    }
    return db;
}

void stem_editdb_close(StemEditDb *db)
{
    if (!db) return;
    if (db->h) sqlite3_close_v2(db->h);
    stem_planner_free(db->planner);
    g_free(db->model_sha);
    g_free(db->tok_sha);
    g_free(db->model_cfg);
    g_free(db->path);
    g_free(db);
}

const char *stem_editdb_path(const StemEditDb *db) { return db->path; }
StemModel *stem_editdb_model(StemEditDb *db) { return db->m; }
StemPlanner *stem_editdb_planner(StemEditDb *db)
{
    /* lazily: readers (stem topk --db) attach without ever planning */
    if (!db->planner && db->m) db->planner = stem_planner_new(db->m, db->facts);
    return db->planner;
}
const char *stem_editdb_model_sha256(StemEditDb *db) { return db->model_sha; }
const char *stem_editdb_tokenizer_sha256(StemEditDb *db) { return db->tok_sha; }
const char *stem_editdb_model_config(StemEditDb *db) { return db->model_cfg; }

/* ------------------------------------------------------------------ attach and the overlay */

/* size, mtime (ns) and inode of the model file, or FALSE */
static gboolean model_stat(const StemModel *m, gint64 *size, gint64 *mtime_ns, gint64 *ino)
{
    GStatBuf st;
    if (!m->path || g_stat(m->path, &st) != 0) return FALSE;
    *size = st.st_size;
    *mtime_ns = (gint64)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    *ino = (gint64)st.st_ino;
    return TRUE;
}

static gboolean check_model(StemEditDb *db, GError **error)
{
    GError *e = NULL;
    if (!db->m->sha256 && db->model_sha && db->model_stat_ok) {
        /* the file the database recorded, unchanged since: its recorded hash */
        gint64 size, mt, ino;
        if (model_stat(db->m, &size, &mt, &ino) && size == db->model_stat[0] && mt == db->model_stat[1] &&
            ino == db->model_stat[2])
            db->m->sha256 = g_strdup(db->model_sha);
    }
    const char *sha = stem_model_sha256(db->m, &e);
    if (!sha) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_IO, "cannot hash the model: %s",
                    e ? e->message : "it was never saved");
        g_clear_error(&e);
        return FALSE;
    }
    if (db->model_sha && strcmp(db->model_sha, sha) != 0) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_WRONG_MODEL,
                    "%s was made for another model (sha256 %.12s..., this one is %.12s...)", db->path,
                    db->model_sha, sha);
        return FALSE;
    }
    return TRUE;
}

static gboolean damaged(StemEditDb *db, GError **error, gint64 id, const char *what)
{
    g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_DAMAGED, "%s: patch set %" G_GINT64_FORMAT " is damaged (%s)",
                db->path, id, what);
    return FALSE;
}

/* One row read from the database, checked against the model. */
static gboolean check_row(StemEditDb *db, gint64 id, int ffn, int layer, int token, const void *before,
                          int nb, const void *after, int na, GError **error)
{
    const StemConfig *c = &db->m->cfg;
    if (ffn != c->ffn_dim) return damaged(db, error, id, "its rows are not as wide as the model's tables");
    if (layer < 0 || layer >= c->n_layers || !stem_config_is_stem(c, layer))
        return damaged(db, error, id, "a row names a layer that is not a STEM layer");
    if (token < 0 || token >= c->vocab) return damaged(db, error, id, "a row names a token outside the vocabulary");
    if (!before || !after || nb != ffn * 4 || na != ffn * 4)
        return damaged(db, error, id, "a row has the wrong size");
    return TRUE;
}

/* Rebuild the whole overlay from the applied patch sets in apply order,
 * verifying each set's checksum and row count on the way. Must run inside a
 * transaction (or be the only statement) so it reads one snapshot. */
static gboolean load_overlay(StemEditDb *db, GError **error)
{
    StemTables *t = db->m->tables;
    stem_tables_clear_all_overrides(t);
    sqlite3_stmt *s = prep(db,
                           "SELECT p.id, p.checksum, p.n_rows, p.ffn, r.layer, r.token, r.before, r.after "
                           "FROM patch_sets p JOIN patch_rows r ON r.patch_set = p.id "
                           "WHERE p.state = 'applied' ORDER BY p.apply_seq, r.layer, r.token",
                           error);
    if (!s) return FALSE;
    gint64 cur = 0, cur_n = 0, seen = 0;
    char *cur_sum = NULL;
    GChecksum *h = NULL;
    gboolean ok = TRUE;
    int rc;
    /* a set ends when the id changes or the rows end */
#define FINISH_SET()                                                                                                   \
    do {                                                                                                               \
        if (h) {                                                                                                       \
            char *got = rowhash_end(h);                                                                                \
            h = NULL;                                                                                                  \
            if (seen != cur_n) ok = damaged(db, error, cur, "rows are missing");                                       \
            else if (strcmp(got, cur_sum ? cur_sum : "")) ok = damaged(db, error, cur, "checksum mismatch");           \
            g_free(got);                                                                                               \
        }                                                                                                              \
    } while (0)
    while (ok && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        gint64 id = sqlite3_column_int64(s, 0);
        int ffn = sqlite3_column_int(s, 3);
        if (id != cur) {
            FINISH_SET();
            if (!ok) break;
            cur = id;
            cur_n = sqlite3_column_int64(s, 2);
            g_free(cur_sum);
            cur_sum = col_text(s, 1);
            seen = 0;
            h = rowhash_begin(ffn, (int)cur_n);
        }
        int layer = sqlite3_column_int(s, 4), token = sqlite3_column_int(s, 5);
        const void *b = sqlite3_column_blob(s, 6);
        int nb = sqlite3_column_bytes(s, 6);
        const void *a = sqlite3_column_blob(s, 7);
        int na = sqlite3_column_bytes(s, 7);
        if (!check_row(db, id, ffn, layer, token, b, nb, a, na, error)) {
            ok = FALSE;
            break;
        }
        rowhash_row(h, ffn, layer, token, b, a);
        seen++;
        /* later sets come later in the scan and overwrite: the max apply_seq wins */
        stem_tables_set_override(t, stem_config_stem_index(&db->m->cfg, layer), token, a);
    }
    if (ok && rc != SQLITE_DONE) ok = fail(db, error, "cannot read the patch sets");
    if (ok) FINISH_SET();
#undef FINISH_SET
    if (h) g_checksum_free(h);
    g_free(cur_sum);
    sqlite3_finalize(s);
    if (!ok) {
        stem_tables_clear_all_overrides(t);
        return FALSE;
    }
    /* a patch set marked applied with no rows at all would be invisible above */
    gint64 bad = 0;
    if (!query_int(db,
                   "SELECT p.id FROM patch_sets p WHERE p.state = 'applied' AND NOT EXISTS "
                   "(SELECT 1 FROM patch_rows r WHERE r.patch_set = p.id) LIMIT 1",
                   &bad, error))
        return FALSE;
    if (bad) {
        stem_tables_clear_all_overrides(t);
        return damaged(db, error, bad, "rows are missing");
    }
    return query_int(db, "PRAGMA data_version", &db->data_version, error);
}

/* Inside a write transaction: if another connection committed since our last
 * look, reload everything (the snapshot we hold is the latest). */
static gboolean sync_locked(StemEditDb *db, GError **error)
{
    gint64 dv = 0;
    if (!query_int(db, "PRAGMA data_version", &dv, error)) return FALSE;
    if (dv != db->data_version) {
        if (!load_model_row(db, error) || (db->m && !check_model(db, error))) return FALSE;
        if (db->m && !load_overlay(db, error)) return FALSE;
        db->data_version = dv;
    }
    return TRUE;
}

gboolean stem_editdb_attach(StemEditDb *db, StemModel *m, const StemFacts *facts, GError **error)
{
    db->m = m;
    if (!exec(db, "BEGIN", error)) goto fail;
    if (!load_model_row(db, error) || !check_model(db, error) || !load_overlay(db, error)) {
        rollback(db);
        goto fail;
    }
    rollback(db);   /* read-only transaction */
    g_clear_pointer(&db->planner, stem_planner_free);
    db->facts = facts;
    return TRUE;
fail:
    db->m = NULL;
    return FALSE;
}

gboolean stem_editdb_refresh(StemEditDb *db, GError **error)
{
    if (!db->m) return TRUE;
    if (!exec(db, "BEGIN", error)) return FALSE;
    gboolean ok = sync_locked(db, error);
    rollback(db);
    return ok;
}

gboolean stem_editdb_load_overlay(const char *path, StemModel *m, GError **error)
{
    StemEditDb *db = stem_editdb_open(path, FALSE, error);
    if (!db) return FALSE;
    /* no planner needed: attach without facts is cheap, the planner is dropped */
    gboolean ok = stem_editdb_attach(db, m, NULL, error);
    stem_editdb_close(db);
    return ok;
}

/* ------------------------------------------------------------------ apply */

static gboolean ensure_model_row(StemEditDb *db, GError **error)
{
    if (db->model_sha) return check_model(db, error);
    const char *sha = stem_model_sha256(db->m, NULL);
    char *tok = db->m->tok ? stem_tokenizer_sha256(db->m->tok) : NULL;
    char *cfg = stem_config_to_json(&db->m->cfg);
    sqlite3_stmt *s = prep(db,
                           "INSERT INTO model (id, sha256, tokenizer_sha256, config, path, file_size, file_mtime_ns, "
                           "file_inode, created_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, " NOW_SQL ")",
                           error);
    int rc = SQLITE_ERROR;
    gint64 st[3];
    if (s) {
        sqlite3_bind_text(s, 1, sha, -1, SQLITE_STATIC);
        if (tok) sqlite3_bind_text(s, 2, tok, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, cfg, -1, SQLITE_STATIC);
        if (db->m->path) sqlite3_bind_text(s, 4, db->m->path, -1, SQLITE_STATIC);
        /* the stat is recorded only if the file is the one that was hashed: unchanged since load */
        if (model_stat(db->m, &st[0], &st[1], &st[2]))
            for (int i = 0; i < 3; i++) sqlite3_bind_int64(s, 5 + i, st[i]);
        rc = sqlite3_step(s);
        sqlite3_finalize(s);
    }
    g_free(cfg);
    if (rc != SQLITE_DONE) {
        g_free(tok);
        return s ? fail(db, error, "cannot record the model") : FALSE;
    }
    db->model_sha = g_strdup(sha);
    db->tok_sha = tok;
    db->model_cfg = stem_config_to_json(&db->m->cfg);
    return TRUE;
}

static gboolean validate_rows(StemEditDb *db, int n, const int32_t *layers, const int32_t *tokens, const float *after,
                              GError **error)
{
    const StemConfig *c = &db->m->cfg;
    const size_t F = (size_t)c->ffn_dim;
    const char *why = NULL;
    if (n <= 0) why = "no rows";
    for (int i = 0; !why && i < n; i++) {
        if (layers[i] < 0 || layers[i] >= c->n_layers || !stem_config_is_stem(c, layers[i]))
            why = "a row names a layer that is not a STEM layer of the model";
        else if (tokens[i] < 0 || tokens[i] >= c->vocab) why = "a row names a token outside the vocabulary";
        else if (i > 0 && (layers[i] < layers[i - 1] || (layers[i] == layers[i - 1] && tokens[i] <= tokens[i - 1])))
            why = "rows are not sorted by (layer, token) or repeat a key";
        for (size_t q = 0; !why && q < F; q++)
            if (!isfinite(after[i * F + q])) why = "a row holds a non-finite value";
    }
    if (why) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_INVALID, "cannot apply: %s", why);
        return FALSE;
    }
    return TRUE;
}

/* Inside the write transaction: record recipe, patch set, rows and audit. */
static gint64 insert_patch_set(StemEditDb *db, const char *recipe_json, const char *summary_json, const char *origin,
                               int n, const int32_t *layers, const int32_t *tokens, const float *before,
                               const float *after, const char *audit_action, gint64 *seq_out, GError **error)
{
    StemRecipe r;
    if (!stem_recipe_from_json(recipe_json, &r, error)) return 0;
    const int F = db->m->cfg.ffn_dim;
    char *sum = stem_edit_rows_checksum(F, n, layers, tokens, before, after);
    gint64 id = 0, recipe_id = 0, seq = 0;
    sqlite3_stmt *s = NULL;
    if (!ensure_model_row(db, error)) goto out;
    if (!query_int(db, "SELECT COALESCE(MAX(apply_seq), 0) + 1 FROM patch_sets", &seq, error)) goto out;

    s = prep(db,
             "INSERT INTO recipes (kind, source, target, strategy, layers, alpha, json, created_at) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, " NOW_SQL ")",
             error);
    if (!s) goto out;
    sqlite3_bind_text(s, 1, stem_edit_kind_name(r.kind), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r.source ? r.source : "", -1, SQLITE_STATIC);
    if (r.target) sqlite3_bind_text(s, 3, r.target, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, stem_strategy_name(r.strategy), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, r.layers ? r.layers : "all", -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 6, r.alpha);
    sqlite3_bind_text(s, 7, recipe_json, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) {
        fail(db, error, "cannot record the recipe");
        goto out;
    }
    recipe_id = sqlite3_last_insert_rowid(db->h);
    sqlite3_finalize(s);

    s = prep(db,
             "INSERT INTO patch_sets (recipe_id, model_sha256, state, apply_seq, n_rows, ffn, checksum, summary, "
             "origin, created_at, applied_at) VALUES (?1, ?2, 'applied', ?3, ?4, ?5, ?6, ?7, ?8, " NOW_SQL ", " NOW_SQL ")",
             error);
    if (!s) goto out;
    sqlite3_bind_int64(s, 1, recipe_id);
    sqlite3_bind_text(s, 2, db->model_sha, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, seq);
    sqlite3_bind_int(s, 4, n);
    sqlite3_bind_int(s, 5, F);
    sqlite3_bind_text(s, 6, sum, -1, SQLITE_STATIC);
    if (summary_json) sqlite3_bind_text(s, 7, summary_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 8, origin ? origin : "plan", -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) {
        fail(db, error, "cannot record the patch set");
        goto out;
    }
    gint64 new_id = sqlite3_last_insert_rowid(db->h);
    sqlite3_finalize(s);

    s = prep(db, "INSERT INTO patch_rows (patch_set, layer, token, before, after) VALUES (?1, ?2, ?3, ?4, ?5)", error);
    if (!s) goto out;
    for (int i = 0; i < n; i++) {
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, new_id);
        sqlite3_bind_int(s, 2, layers[i]);
        sqlite3_bind_int(s, 3, tokens[i]);
        sqlite3_bind_blob(s, 4, before + (size_t)i * F, F * 4, SQLITE_STATIC);
        sqlite3_bind_blob(s, 5, after + (size_t)i * F, F * 4, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE) {
            fail(db, error, "cannot record the rows");
            goto out;
        }
    }
    sqlite3_finalize(s);
    s = NULL;

    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "recipe");
    json_builder_add_value(b, json_from_string(recipe_json, NULL));
    json_builder_set_member_name(b, "rows");
    json_builder_add_int_value(b, n);
    json_builder_set_member_name(b, "checksum");
    json_builder_add_string_value(b, sum);
    json_builder_set_member_name(b, "origin");
    json_builder_add_string_value(b, origin ? origin : "plan");
    json_builder_end_object(b);
    char *detail = json_of(b);
    gboolean ok = audit(db, audit_action, new_id, seq, detail, error);
    g_free(detail);
    if (ok) {
        id = new_id;
        if (seq_out) *seq_out = seq;
    }
out:
    if (s) sqlite3_finalize(s);
    g_free(sum);
    stem_recipe_clear(&r);
    return id;
}

static void set_rows(StemEditDb *db, int n, const int32_t *layers, const int32_t *tokens, const float *after)
{
    const size_t F = (size_t)db->m->cfg.ffn_dim;
    for (int i = 0; i < n; i++)
        stem_tables_set_override(db->m->tables, stem_config_stem_index(&db->m->cfg, layers[i]), tokens[i],
                                 after + i * F);
}

gint64 stem_editdb_apply(StemEditDb *db, const StemRecipe *r, StemEditPlan **plan_out, GError **error)
{
    if (plan_out) *plan_out = NULL;
    if (!db->m) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NO_MODEL, "applying an edit needs the model");
        return 0;
    }
    if (!begin_write(db, error)) return 0;
    StemEditPlan *p = NULL;
    gint64 id = 0;
    if (!sync_locked(db, error)) goto fail;
    p = stem_planner_plan(stem_editdb_planner(db), r, error);
    if (!p) goto fail;
    char *rj = stem_recipe_to_json(&p->recipe);
    JsonBuilder *b = json_builder_new();
    stem_edit_plan_to_json(p, db->m, b);
    char *summary = json_of(b);
    id = insert_patch_set(db, rj, summary, "plan", p->n_rows, p->layers, p->tokens, p->before, p->after, "apply", NULL,
                          error);
    g_free(rj);
    g_free(summary);
    if (!id || !commit(db, error)) goto fail;
    set_rows(db, p->n_rows, p->layers, p->tokens, p->after);
    if (plan_out) *plan_out = p;
    else stem_edit_plan_free(p);
    return id;
fail:
    rollback(db);
    stem_edit_plan_free(p);
    return 0;
}

gint64 stem_editdb_apply_rows(StemEditDb *db, const char *recipe_json, const char *summary_json, const char *origin,
                              int n, const int32_t *layers, const int32_t *tokens, const float *after, GError **error)
{
    if (!db->m) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NO_MODEL, "applying an edit needs the model");
        return 0;
    }
    if (!validate_rows(db, n, layers, tokens, after, error)) return 0;
    if (!begin_write(db, error)) return 0;
    const size_t F = (size_t)db->m->cfg.ffn_dim;
    float *before = g_new(float, (size_t)n * F);
    gint64 id = 0;
    if (!sync_locked(db, error)) goto fail;
    for (int i = 0; i < n; i++)
        stem_tables_row(db->m->tables, stem_config_stem_index(&db->m->cfg, layers[i]), tokens[i], before + i * F);
    id = insert_patch_set(db, recipe_json, summary_json, origin, n, layers, tokens, before, after,
                          origin && g_str_has_prefix(origin, "import") ? "import" : "apply", NULL, error);
    if (!id || !commit(db, error)) goto fail;
    set_rows(db, n, layers, tokens, after);
    g_free(before);
    return id;
fail:
    rollback(db);
    g_free(before);
    return 0;
}

/* ------------------------------------------------------------------ revert / reapply */

static gboolean get_state(StemEditDb *db, gint64 id, gboolean *applied, GError **error)
{
    sqlite3_stmt *s = prep(db, "SELECT state FROM patch_sets WHERE id = ?1", error);
    if (!s) return FALSE;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *applied = !strcmp((const char *)sqlite3_column_text(s, 0), "applied");
    sqlite3_finalize(s);
    if (rc == SQLITE_DONE) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_FOUND, "%s: no patch set %" G_GINT64_FORMAT,
                    db->path, id);
        return FALSE;
    }
    if (rc != SQLITE_ROW) return fail(db, error, "cannot read the patch set");
    return TRUE;
}

/* The keys of patch set id. */
static gboolean read_keys(StemEditDb *db, gint64 id, GArray *layers, GArray *tokens, GError **error)
{
    sqlite3_stmt *s = prep(db, "SELECT layer, token FROM patch_rows WHERE patch_set = ?1 ORDER BY layer, token", error);
    if (!s) return FALSE;
    sqlite3_bind_int64(s, 1, id);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int32_t l = sqlite3_column_int(s, 0), t = sqlite3_column_int(s, 1);
        g_array_append_val(layers, l);
        g_array_append_val(tokens, t);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return fail(db, error, "cannot read the rows");
    return TRUE;
}

/* The effective row of (layer, token) from the database, ignoring patch set
 * `exclude`: the 'after' of the applied set with the highest apply_seq, or the
 * base row. *from_db tells which. */
static gboolean effective_row_db(StemEditDb *db, sqlite3_stmt *s, gint64 exclude, int layer, int token, float *out,
                                 gboolean *from_db, GError **error)
{
    sqlite3_reset(s);
    sqlite3_bind_int(s, 1, layer);
    sqlite3_bind_int(s, 2, token);
    sqlite3_bind_int64(s, 3, exclude);
    int rc = sqlite3_step(s);
    const int F = db->m->cfg.ffn_dim;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_bytes(s, 0) != F * 4) return damaged(db, error, sqlite3_column_int64(s, 1), "a row has the wrong size");
        memcpy(out, sqlite3_column_blob(s, 0), (size_t)F * 4);
        *from_db = TRUE;
        return TRUE;
    }
    if (rc != SQLITE_DONE) return fail(db, error, "cannot read the rows");
    stem_tables_base_row(db->m->tables, stem_config_stem_index(&db->m->cfg, layer), token, out);
    *from_db = FALSE;
    return TRUE;
}

#define LATEST_ROW_SQL                                                                                                 \
    "SELECT r.after, p.id FROM patch_rows r JOIN patch_sets p ON p.id = r.patch_set "                                  \
    "WHERE r.layer = ?1 AND r.token = ?2 AND p.state = 'applied' AND p.id != ?3 "                                      \
    "ORDER BY p.apply_seq DESC LIMIT 1"

gboolean stem_editdb_revert(StemEditDb *db, gint64 id, GError **error)
{
    if (!begin_write(db, error)) return FALSE;
    gboolean applied = FALSE;
    GArray *ls = g_array_new(FALSE, FALSE, sizeof(int32_t)), *ts = g_array_new(FALSE, FALSE, sizeof(int32_t));
    float *rows = NULL;
    gboolean *has = NULL;
    sqlite3_stmt *s = NULL;
    if (db->m && !sync_locked(db, error)) goto fail;
    if (!get_state(db, id, &applied, error)) goto fail;
    if (!applied) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_STATE,
                    "patch set %" G_GINT64_FORMAT " is not applied (already reverted)", id);
        goto fail;
    }
    s = prep(db, "UPDATE patch_sets SET state = 'reverted', reverted_at = " NOW_SQL " WHERE id = ?1", error);
    if (!s) goto fail;
    sqlite3_bind_int64(s, 1, id);
    if (sqlite3_step(s) != SQLITE_DONE) {
        fail(db, error, "cannot revert");
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (!audit(db, "revert", id, 0, NULL, error)) goto fail;
    if (db->m) {
        /* what each of its rows falls back to: the next applied set down, or the base */
        if (!read_keys(db, id, ls, ts, error)) goto fail;
        const size_t F = (size_t)db->m->cfg.ffn_dim;
        rows = g_new(float, MAX(ls->len, 1) * F);
        has = g_new(gboolean, MAX(ls->len, 1));
        s = prep(db, LATEST_ROW_SQL, error);
        if (!s) goto fail;
        for (guint i = 0; i < ls->len; i++)
            if (!effective_row_db(db, s, id, g_array_index(ls, int32_t, i), g_array_index(ts, int32_t, i), rows + i * F,
                                  &has[i], error))
                goto fail;
        sqlite3_finalize(s);
        s = NULL;
    }
    if (!commit(db, error)) goto fail;
    if (db->m) {
        const size_t F = (size_t)db->m->cfg.ffn_dim;
        for (guint i = 0; i < ls->len; i++) {
            int j = stem_config_stem_index(&db->m->cfg, g_array_index(ls, int32_t, i));
            int t = g_array_index(ts, int32_t, i);
            if (has[i]) stem_tables_set_override(db->m->tables, j, t, rows + i * F);
            else stem_tables_clear_override(db->m->tables, j, t);
        }
    }
    g_array_unref(ls);
    g_array_unref(ts);
    g_free(rows);
    g_free(has);
    return TRUE;
fail:
    if (s) sqlite3_finalize(s);
    rollback(db);
    g_array_unref(ls);
    g_array_unref(ts);
    g_free(rows);
    g_free(has);
    return FALSE;
}

/* Read and verify one patch set's rows. */
static gboolean read_rows(StemEditDb *db, StemPatchSet *p, GError **error)
{
    sqlite3_stmt *s = prep(db,
                           "SELECT layer, token, before, after FROM patch_rows WHERE patch_set = ?1 "
                           "ORDER BY layer, token",
                           error);
    if (!s) return FALSE;
    sqlite3_bind_int64(s, 1, p->id);
    const size_t F = (size_t)p->ffn;
    const int cap = p->n_rows;
    if (cap <= 0 || F == 0 || F > (1u << 24) || (size_t)cap > ((size_t)1 << 31) / F) {
        sqlite3_finalize(s);
        return damaged(db, error, p->id, "bad row count or width");
    }
    p->layers = g_new(int32_t, cap);
    p->tokens = g_new(int32_t, cap);
    p->before = g_new(float, (size_t)cap * F);
    p->after = g_new(float, (size_t)cap * F);
    int n = 0, rc;
    gboolean ok = TRUE;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n >= cap) {
            ok = damaged(db, error, p->id, "more rows than recorded");
            break;
        }
        if (sqlite3_column_bytes(s, 2) != (int)F * 4 || sqlite3_column_bytes(s, 3) != (int)F * 4) {
            ok = damaged(db, error, p->id, "a row has the wrong size");
            break;
        }
        p->layers[n] = sqlite3_column_int(s, 0);
        p->tokens[n] = sqlite3_column_int(s, 1);
        memcpy(p->before + n * F, sqlite3_column_blob(s, 2), F * 4);
        memcpy(p->after + n * F, sqlite3_column_blob(s, 3), F * 4);
        n++;
    }
    sqlite3_finalize(s);
    if (ok && rc != SQLITE_DONE && rc != SQLITE_ROW) return fail(db, error, "cannot read the rows");
    if (ok && n != cap) ok = damaged(db, error, p->id, "rows are missing");
    if (ok) {
        char *sum = stem_edit_rows_checksum((int)F, n, p->layers, p->tokens, p->before, p->after);
        if (strcmp(sum, p->checksum ? p->checksum : "")) ok = damaged(db, error, p->id, "checksum mismatch");
        g_free(sum);
    }
    return ok;
}

static StemPatchSet *get_locked(StemEditDb *db, gint64 id, gboolean with_rows, GError **error);

gboolean stem_editdb_reapply(StemEditDb *db, gint64 id, GError **error)
{
    if (!begin_write(db, error)) return FALSE;
    StemPatchSet *p = NULL;
    gint64 seq = 0;
    sqlite3_stmt *s = NULL;
    if (db->m && !sync_locked(db, error)) goto fail;
    p = get_locked(db, id, db->m != NULL, error);
    if (!p) goto fail;
    if (p->applied) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_STATE,
                    "patch set %" G_GINT64_FORMAT " is already applied", id);
        goto fail;
    }
    if (db->m && (p->ffn != db->m->cfg.ffn_dim || (db->model_sha && strcmp(p->model_sha256, db->model_sha)))) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_WRONG_MODEL,
                    "patch set %" G_GINT64_FORMAT " was made for another model", id);
        goto fail;
    }
    if (db->m) {
        for (int i = 0; i < p->n_rows; i++) {
            GError *e = NULL;
            if (!check_row(db, id, p->ffn, p->layers[i], p->tokens[i], p->before, p->ffn * 4, p->after, p->ffn * 4, &e)) {
                g_propagate_error(error, e);
                goto fail;
            }
        }
    }
    if (!query_int(db, "SELECT COALESCE(MAX(apply_seq), 0) + 1 FROM patch_sets", &seq, error)) goto fail;
    s = prep(db, "UPDATE patch_sets SET state = 'applied', apply_seq = ?2, applied_at = " NOW_SQL ", reverted_at = NULL "
             "WHERE id = ?1", error);
    if (!s) goto fail;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, seq);
    if (sqlite3_step(s) != SQLITE_DONE) {
        fail(db, error, "cannot reapply");
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (!audit(db, "reapply", id, seq, NULL, error) || !commit(db, error)) goto fail;
    if (db->m) set_rows(db, p->n_rows, p->layers, p->tokens, p->after);
    stem_patch_set_free(p);
    return TRUE;
fail:
    if (s) sqlite3_finalize(s);
    rollback(db);
    stem_patch_set_free(p);
    return FALSE;
}

/* ------------------------------------------------------------------ queries */

void stem_patch_set_free(StemPatchSet *p)
{
    if (!p) return;
    stem_recipe_clear(&p->recipe);
    g_free(p->recipe_json);
    g_free(p->summary_json);
    g_free(p->origin);
    g_free(p->model_sha256);
    g_free(p->checksum);
    g_free(p->created_at);
    g_free(p->applied_at);
    g_free(p->reverted_at);
    g_free(p->layers);
    g_free(p->tokens);
    g_free(p->before);
    g_free(p->after);
    g_free(p);
}

#define PATCH_SET_COLS                                                                                                 \
    "SELECT p.id, p.state, p.apply_seq, r.json, p.summary, p.origin, p.model_sha256, p.checksum, p.n_rows, p.ffn, "    \
    "p.created_at, p.applied_at, p.reverted_at FROM patch_sets p JOIN recipes r ON r.id = p.recipe_id "

static StemPatchSet *patch_set_of(sqlite3_stmt *s)
{
    StemPatchSet *p = g_new0(StemPatchSet, 1);
    p->id = sqlite3_column_int64(s, 0);
    p->applied = !g_strcmp0((const char *)sqlite3_column_text(s, 1), "applied");
    p->apply_seq = sqlite3_column_int64(s, 2);
    p->recipe_json = col_text(s, 3);
    p->summary_json = col_text(s, 4);
    p->origin = col_text(s, 5);
    p->model_sha256 = col_text(s, 6);
    p->checksum = col_text(s, 7);
    p->n_rows = sqlite3_column_int(s, 8);
    p->ffn = sqlite3_column_int(s, 9);
    p->created_at = col_text(s, 10);
    p->applied_at = col_text(s, 11);
    p->reverted_at = col_text(s, 12);
    if (!stem_recipe_from_json(p->recipe_json, &p->recipe, NULL)) stem_recipe_init(&p->recipe);
    return p;
}

GPtrArray *stem_editdb_list(StemEditDb *db, GError **error)
{
    sqlite3_stmt *s = prep(db, PATCH_SET_COLS "ORDER BY p.id", error);
    if (!s) return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)stem_patch_set_free);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) g_ptr_array_add(out, patch_set_of(s));
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        g_ptr_array_unref(out);
        fail(db, error, "cannot list the patch sets");
        return NULL;
    }
    return out;
}

static StemPatchSet *get_locked(StemEditDb *db, gint64 id, gboolean with_rows, GError **error)
{
    sqlite3_stmt *s = prep(db, PATCH_SET_COLS "WHERE p.id = ?1", error);
    if (!s) return NULL;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    StemPatchSet *p = rc == SQLITE_ROW ? patch_set_of(s) : NULL;
    sqlite3_finalize(s);
    if (rc == SQLITE_DONE) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NOT_FOUND, "%s: no patch set %" G_GINT64_FORMAT,
                    db->path, id);
        return NULL;
    }
    if (!p) {
        fail(db, error, "cannot read the patch set");
        return NULL;
    }
    if (with_rows && !read_rows(db, p, error)) {
        stem_patch_set_free(p);
        return NULL;
    }
    return p;
}

StemPatchSet *stem_editdb_get(StemEditDb *db, gint64 id, gboolean with_rows, GError **error)
{
    /* one snapshot for the header and its rows */
    if (!exec(db, "BEGIN", error)) return NULL;
    StemPatchSet *p = get_locked(db, id, with_rows, error);
    rollback(db);
    return p;
}

void stem_audit_entry_free(StemAuditEntry *e)
{
    if (!e) return;
    g_free(e->at);
    g_free(e->action);
    g_free(e->detail);
    g_free(e);
}

GPtrArray *stem_editdb_audit(StemEditDb *db, GError **error)
{
    sqlite3_stmt *s = prep(db, "SELECT id, at, action, patch_set, apply_seq, detail FROM audit ORDER BY id", error);
    if (!s) return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)stem_audit_entry_free);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        StemAuditEntry *e = g_new0(StemAuditEntry, 1);
        e->id = sqlite3_column_int64(s, 0);
        e->at = col_text(s, 1);
        e->action = col_text(s, 2);
        e->patch_set = sqlite3_column_int64(s, 3);
        e->apply_seq = sqlite3_column_int64(s, 4);
        e->detail = col_text(s, 5);
        g_ptr_array_add(out, e);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) {
        g_ptr_array_unref(out);
        fail(db, error, "cannot read the audit log");
        return NULL;
    }
    return out;
}

gboolean stem_editdb_log(StemEditDb *db, const char *action, gint64 patch_set, const char *detail_json,
                         GError **error)
{
    if (!begin_write(db, error)) return FALSE;
    if (!audit(db, action, patch_set, 0, detail_json, error) || !commit(db, error)) {
        rollback(db);
        return FALSE;
    }
    return TRUE;
}

gboolean stem_editdb_rows_without(StemEditDb *db, gint64 exclude, int n, const int32_t *layers,
                                  const int32_t *tokens, float *out, GError **error)
{
    if (!db->m) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NO_MODEL, "reading rows needs the model");
        return FALSE;
    }
    if (!exec(db, "BEGIN", error)) return FALSE;
    sqlite3_stmt *s = prep(db, LATEST_ROW_SQL, error);
    gboolean ok = s != NULL;
    const size_t F = (size_t)db->m->cfg.ffn_dim;
    for (int i = 0; ok && i < n; i++) {
        gboolean from_db;
        ok = effective_row_db(db, s, exclude, layers[i], tokens[i], out + i * F, &from_db, error);
    }
    if (s) sqlite3_finalize(s);
    rollback(db);
    return ok;
}

/* ------------------------------------------------------------------ check */

gboolean stem_editdb_check(StemEditDb *db, GError **error)
{
    sqlite3_stmt *s = prep(db, "PRAGMA integrity_check", error);
    if (!s) return FALSE;
    int rc = sqlite3_step(s);
    gboolean ok = rc == SQLITE_ROW && !g_strcmp0((const char *)sqlite3_column_text(s, 0), "ok");
    if (!ok)
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_DAMAGED, "%s: integrity check failed: %s", db->path,
                    rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : sqlite3_errmsg(db->h));
    sqlite3_finalize(s);
    if (!ok) return FALSE;
    if (!exec(db, "BEGIN", error)) return FALSE;
    GPtrArray *all = stem_editdb_list(db, error);
    ok = all != NULL;
    for (guint i = 0; ok && i < all->len; i++) {
        StemPatchSet *p = g_ptr_array_index(all, i);
        StemPatchSet *q = get_locked(db, p->id, TRUE, error);
        ok = q != NULL;
        stem_patch_set_free(q);
    }
    gint64 dup = 0, orphans = 0;
    if (ok && !query_int(db, "SELECT count(*) - count(DISTINCT apply_seq) FROM patch_sets", &dup, error)) ok = FALSE;
    if (ok && dup) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_DAMAGED, "%s: apply sequence numbers repeat", db->path);
        ok = FALSE;
    }
    /* rows or patch sets that belong to nothing (foreign keys are enforced, but check) */
    if (ok && !query_int(db,
                         "SELECT (SELECT count(*) FROM patch_rows WHERE patch_set NOT IN (SELECT id FROM patch_sets)) + "
                         "(SELECT count(*) FROM patch_sets WHERE recipe_id NOT IN (SELECT id FROM recipes))",
                         &orphans, error))
        ok = FALSE;
    if (ok && orphans) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_DAMAGED, "%s: %" G_GINT64_FORMAT " orphaned records",
                    db->path, orphans);
        ok = FALSE;
    }
    if (all) g_ptr_array_unref(all);
    rollback(db);
    return ok;
}
