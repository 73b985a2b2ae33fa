/* Patch files: export, the hardened reader, model checks, import. See patchfile.h. */
#include "patchfile.h"
#include "rowhash.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

G_DEFINE_QUARK(stem-patchfile-error-quark, stem_patchfile_error)

static const char *const required_meta[] = {
    "format", "model_sha256", "tokenizer_sha256", "model_config", "recipe", "summary", "patch_set", "checksum",
    "content_sha256",
};

/* ------------------------------------------------------------------ content hash */

static int cmp_str(gconstpointer a, gconstpointer b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void hash_tensor(GChecksum *c, const char *name, StDtype dt, int ndim, const int64_t *shape, const void *data,
                        size_t nbytes)
{
    g_checksum_update(c, (const guchar *)name, strlen(name) + 1);
    const char *dn = st_dtype_name(dt);
    g_checksum_update(c, (const guchar *)dn, strlen(dn) + 1);
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        g_checksum_update(c, (const guchar *)&d, 8);
    }
    g_checksum_update(c, (const guchar *)data, nbytes);
}

/* sha256 over the metadata entries other than content_sha256 (sorted by key,
 * "key\0value\0") then the tensors keys, before, after. */
static char *content_hash(GPtrArray *keys, GHashTable *meta, int n, int ffn, const void *k, const void *b,
                          const void *a)
{
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    static const char tag[] = "stem-patchfile/1";
    g_checksum_update(c, (const guchar *)tag, sizeof tag);
    g_ptr_array_sort(keys, cmp_str);
    for (guint i = 0; i < keys->len; i++) {
        const char *key = g_ptr_array_index(keys, i);
        if (!strcmp(key, "content_sha256")) continue;
        const char *v = g_hash_table_lookup(meta, key);
        g_checksum_update(c, (const guchar *)key, strlen(key) + 1);
        g_checksum_update(c, (const guchar *)v, strlen(v) + 1);
    }
    const int64_t ks[2] = { n, 2 }, rs[2] = { n, ffn };
    hash_tensor(c, "keys", ST_I32, 2, ks, k, (size_t)n * 2 * 4);
    hash_tensor(c, "before", ST_F32, 2, rs, b, (size_t)n * ffn * 4);
    hash_tensor(c, "after", ST_F32, 2, rs, a, (size_t)n * ffn * 4);
    char *s = g_strdup(g_checksum_get_string(c));
    g_checksum_free(c);
    return s;
}

/* ------------------------------------------------------------------ export */

gboolean stem_patchfile_export(StemEditDb *db, gint64 id, const char *path, GError **error)
{
    if (!stem_editdb_model_sha256(db)) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_IO, "%s records no model yet",
                    stem_editdb_path(db));
        return FALSE;
    }
    StemPatchSet *p = stem_editdb_get(db, id, TRUE, error);
    if (!p) return FALSE;
    int32_t *keys = g_new(int32_t, (size_t)p->n_rows * 2);
    for (int i = 0; i < p->n_rows; i++) {
        keys[2 * i] = p->layers[i];
        keys[2 * i + 1] = p->tokens[i];
    }
    GHashTable *meta = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    g_hash_table_insert(meta, "format", g_strdup(STEM_PATCHFILE_FORMAT));
    g_hash_table_insert(meta, "model_sha256", g_strdup(stem_editdb_model_sha256(db)));
    g_hash_table_insert(meta, "tokenizer_sha256", g_strdup(stem_editdb_tokenizer_sha256(db) ? stem_editdb_tokenizer_sha256(db) : ""));
    g_hash_table_insert(meta, "model_config", g_strdup(stem_editdb_model_config(db) ? stem_editdb_model_config(db) : "{}"));
    g_hash_table_insert(meta, "recipe", g_strdup(p->recipe_json));
    g_hash_table_insert(meta, "summary", g_strdup(p->summary_json ? p->summary_json : "{}"));
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, p->id);
    json_builder_set_member_name(b, "apply_seq");
    json_builder_add_int_value(b, p->apply_seq);
    json_builder_set_member_name(b, "origin");
    json_builder_add_string_value(b, p->origin ? p->origin : "");
    json_builder_set_member_name(b, "created_at");
    json_builder_add_string_value(b, p->created_at ? p->created_at : "");
    json_builder_end_object(b);
    JsonGenerator *g = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(g, root);
    g_hash_table_insert(meta, "patch_set", json_generator_to_data(g, NULL));
    json_node_unref(root);
    g_object_unref(g);
    g_object_unref(b);
    g_hash_table_insert(meta, "checksum", g_strdup(p->checksum));
    GPtrArray *mk = g_ptr_array_new();
    for (guint i = 0; i < G_N_ELEMENTS(required_meta); i++)
        if (g_hash_table_contains(meta, required_meta[i])) g_ptr_array_add(mk, (gpointer)required_meta[i]);
    char *content = content_hash(mk, meta, p->n_rows, p->ffn, keys, p->before, p->after);
    g_hash_table_insert(meta, "content_sha256", content);

    StWriter *w = st_writer_new();
    const int64_t ks[2] = { p->n_rows, 2 }, rs[2] = { p->n_rows, p->ffn };
    st_writer_add(w, "keys", ST_I32, 2, ks, keys);
    st_writer_add(w, "before", ST_F32, 2, rs, p->before);
    st_writer_add(w, "after", ST_F32, 2, rs, p->after);
    for (guint i = 0; i < G_N_ELEMENTS(required_meta); i++)
        st_writer_set_metadata(w, required_meta[i], g_hash_table_lookup(meta, required_meta[i]));
    GError *e = NULL;
    gboolean ok = st_writer_write(w, path, &e);
    if (!ok) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_IO, "%s", e->message);
        g_error_free(e);
    }
    st_writer_free(w);
    g_ptr_array_unref(mk);
    g_hash_table_unref(meta);
    g_free(keys);
    stem_patch_set_free(p);
    return ok;
}

/* ------------------------------------------------------------------ read */

void stem_patchfile_free(StemPatchFile *pf)
{
    if (!pf) return;
    g_free(pf->model_sha256);
    g_free(pf->tokenizer_sha256);
    g_free(pf->model_config);
    g_free(pf->recipe_json);
    g_free(pf->summary_json);
    g_free(pf->patch_set_json);
    g_free(pf->checksum);
    g_free(pf->content_sha256);
    stem_recipe_clear(&pf->recipe);
    g_free(pf->layers);
    g_free(pf->tokens);
    g_free(pf->before);
    g_free(pf->after);
    g_free(pf);
}

static gboolean is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return FALSE;
    for (int i = 0; i < 64; i++)
        if (!g_ascii_isxdigit(s[i]) || g_ascii_isupper(s[i])) return FALSE;
    return TRUE;
}

#define BAD(code, ...)                                                                                                 \
    do {                                                                                                               \
        g_set_error(error, STEM_PATCHFILE_ERROR, code, __VA_ARGS__);                                                   \
        goto out;                                                                                                      \
    } while (0)

static StemPatchFile *read_st(StFile *f, const char *name, gboolean verify, GError **error)
{
    StemPatchFile *pf = g_new0(StemPatchFile, 1);
    gboolean ok = FALSE;
    GHashTable *meta = NULL;
    GPtrArray *mk = NULL;
    char *content = NULL;
    const char *fmt = st_metadata(f, "format");
    if (!fmt || strcmp(fmt, STEM_PATCHFILE_FORMAT))
        BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: not a STEM patch file (format is %s)", name, fmt ? fmt : "missing");
    for (guint i = 0; i < G_N_ELEMENTS(required_meta); i++)
        if (!st_metadata(f, required_meta[i]))
            BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (no %s)", name, required_meta[i]);
    if (st_n_tensors(f) != 3) BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (expected 3 tensors)", name);
    const StTensor *tk = st_find(f, "keys"), *tb = st_find(f, "before"), *ta = st_find(f, "after");
    if (!tk || !tb || !ta) BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (tensors missing)", name);
    if (tk->dtype != ST_I32 || tb->dtype != ST_F32 || ta->dtype != ST_F32 || tk->ndim != 2 || tb->ndim != 2 ||
        ta->ndim != 2)
        BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (tensor types)", name);
    const int64_t n = tk->shape[0], F = tb->shape[1];
    if (tk->shape[1] != 2 || tb->shape[0] != n || ta->shape[0] != n || ta->shape[1] != F)
        BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (tensor shapes disagree)", name);
    if (n < 1 || n > STEM_PATCHFILE_MAX_ROWS || F < 1 || F > STEM_PATCHFILE_MAX_FFN || n * F > STEM_PATCHFILE_MAX_FLOATS)
        BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (%" G_GINT64_FORMAT " rows of %" G_GINT64_FORMAT ")",
            name, n, F);
    {
        /* exactly what the writer produces: the three tensors tile the data
         * section, nothing before, between or after them (the model reader allows
         * gaps; a patch file has no reason to carry unhashed bytes) */
        size_t flen = 0;
        const uint8_t *base = st_file_data(f, &flen);
        uint64_t hlen = 0;
        memcpy(&hlen, base, 8);
        const uint8_t *p0 = base + 8 + hlen;
        const StTensor *ord[3] = { tk, tb, ta };
        for (int i = 0; i < 3; i++)       /* sort by position */
            for (int j = i + 1; j < 3; j++)
                if ((const uint8_t *)ord[j]->data < (const uint8_t *)ord[i]->data) {
                    const StTensor *x = ord[i];
                    ord[i] = ord[j];
                    ord[j] = x;
                }
        const uint8_t *at = p0;
        for (int i = 0; i < 3; i++) {
            if ((const uint8_t *)ord[i]->data != at)
                BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (bytes outside the tensors)", name);
            at += ord[i]->nbytes;
        }
        if (at != base + flen) BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (trailing bytes)", name);
    }
    pf->n_rows = (int)n;
    pf->ffn = (int)F;
    /* copy out: tensors in a foreign file need not be aligned */
    int32_t *keys = g_new(int32_t, (size_t)n * 2);
    memcpy(keys, tk->data, (size_t)n * 8);
    pf->before = g_new(float, (size_t)(n * F));
    pf->after = g_new(float, (size_t)(n * F));
    memcpy(pf->before, tb->data, (size_t)(n * F) * 4);
    memcpy(pf->after, ta->data, (size_t)(n * F) * 4);
    pf->layers = g_new(int32_t, n);
    pf->tokens = g_new(int32_t, n);
    for (int64_t i = 0; i < n; i++) {
        pf->layers[i] = keys[2 * i];
        pf->tokens[i] = keys[2 * i + 1];
    }
    /* whole-file hash first: a damaged file says so rather than failing on a detail */
    meta = g_hash_table_new(g_str_hash, g_str_equal);
    mk = g_ptr_array_new();
    for (int i = 0; i < st_n_metadata(f); i++) {
        const char *k, *v;
        st_metadata_nth(f, i, &k, &v);
        g_hash_table_insert(meta, (gpointer)k, (gpointer)v);
        g_ptr_array_add(mk, (gpointer)k);
    }
    content = content_hash(mk, meta, pf->n_rows, pf->ffn, keys, pf->before, pf->after);
    g_free(keys);
    pf->content_sha256 = g_strdup(st_metadata(f, "content_sha256"));
    if (verify && strcmp(content, pf->content_sha256))
        BAD(STEM_PATCHFILE_ERROR_DAMAGED, "%s: damaged patch file (content hash mismatch)", name);
    pf->model_sha256 = g_strdup(st_metadata(f, "model_sha256"));
    pf->tokenizer_sha256 = g_strdup(st_metadata(f, "tokenizer_sha256"));
    pf->model_config = g_strdup(st_metadata(f, "model_config"));
    pf->recipe_json = g_strdup(st_metadata(f, "recipe"));
    pf->summary_json = g_strdup(st_metadata(f, "summary"));
    pf->patch_set_json = g_strdup(st_metadata(f, "patch_set"));
    pf->checksum = g_strdup(st_metadata(f, "checksum"));
    if (!is_hex64(pf->model_sha256) || !is_hex64(pf->checksum) || (*pf->tokenizer_sha256 && !is_hex64(pf->tokenizer_sha256)))
        BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (bad hash fields)", name);
    if (!stem_recipe_from_json(pf->recipe_json, &pf->recipe, NULL))
        BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (recipe does not parse)", name);
    for (int i = 0; i < pf->n_rows; i++) {
        if (pf->layers[i] < 0 || pf->layers[i] >= 64 || pf->tokens[i] < 0)
            BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (bad row key)", name);
        if (i && (pf->layers[i] < pf->layers[i - 1] ||
                  (pf->layers[i] == pf->layers[i - 1] && pf->tokens[i] <= pf->tokens[i - 1])))
            BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (row keys not sorted or repeated)", name);
    }
    for (size_t q = 0; q < (size_t)n * (size_t)F; q++)
        if (!isfinite(pf->before[q]) || !isfinite(pf->after[q]))
            BAD(STEM_PATCHFILE_ERROR_FORMAT, "%s: damaged patch file (non-finite values)", name);
    char *sum = stem_edit_rows_checksum(pf->ffn, pf->n_rows, pf->layers, pf->tokens, pf->before, pf->after);
    gboolean sum_ok = !strcmp(sum, pf->checksum);
    g_free(sum);
    if (verify && !sum_ok) BAD(STEM_PATCHFILE_ERROR_DAMAGED, "%s: damaged patch file (row checksum mismatch)", name);
    ok = TRUE;
out:
    if (meta) g_hash_table_unref(meta);
    if (mk) g_ptr_array_unref(mk);
    g_free(content);
    if (!ok) {
        stem_patchfile_free(pf);
        return NULL;
    }
    return pf;
}

/* One line: the first line of a message from below. */
static void set_from(GError **error, int code, const char *name, const GError *e)
{
    char *msg = g_strdup(e->message);
    char *nl = strchr(msg, '\n');
    if (nl) *nl = 0;
    g_set_error(error, STEM_PATCHFILE_ERROR, code, "%s: not a valid patch file (%s)", name, msg);
    g_free(msg);
}

StemPatchFile *stem_patchfile_read_buffer(const void *buf, size_t len, GError **error)
{
    GError *e = NULL;
    StFile *f = st_open_buffer(buf, len, &e);
    if (!f) {
        set_from(error, STEM_PATCHFILE_ERROR_FORMAT, "patch", e);
        g_error_free(e);
        return NULL;
    }
    StemPatchFile *pf = read_st(f, "patch", TRUE, error);
    st_close(f);
    return pf;
}

StemPatchFile *stem_patchfile_parse_for_fuzzing(const void *buf, size_t len, GError **error)
{
    GError *e = NULL;
    StFile *f = st_open_buffer(buf, len, &e);
    if (!f) {
        set_from(error, STEM_PATCHFILE_ERROR_FORMAT, "patch", e);
        g_error_free(e);
        return NULL;
    }
    StemPatchFile *pf = read_st(f, "patch", FALSE, error);
    st_close(f);
    return pf;
}

StemPatchFile *stem_patchfile_read(const char *path, GError **error)
{
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_IO, "%s: no such patch file", path);
        return NULL;
    }
    GError *e = NULL;
    StFile *f = st_open(path, &e);
    if (!f) {
        set_from(error, e->code == ST_ERROR_IO ? STEM_PATCHFILE_ERROR_IO : STEM_PATCHFILE_ERROR_FORMAT, path, e);
        g_error_free(e);
        return NULL;
    }
    StemPatchFile *pf = read_st(f, path, TRUE, error);
    st_close(f);
    return pf;
}

/* ------------------------------------------------------------------ model check and import */

gboolean stem_patchfile_check_model(const StemPatchFile *pf, StemModel *m, GError **error)
{
    GError *e = NULL;
    const char *sha = stem_model_sha256(m, &e);
    if (!sha) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_IO, "cannot hash the model: %s",
                    e ? e->message : "never saved");
        g_clear_error(&e);
        return FALSE;
    }
    if (strcmp(sha, pf->model_sha256)) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_MODEL,
                    "the patch file was made for another model (sha256 %.12s..., this one is %.12s...)",
                    pf->model_sha256, sha);
        return FALSE;
    }
    char *tsha = m->tok ? stem_tokenizer_sha256(m->tok) : g_strdup("");
    gboolean tok_ok = !strcmp(tsha, pf->tokenizer_sha256);
    g_free(tsha);
    if (!tok_ok) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_MODEL,
                    "the patch file was made with another tokenizer");
        return FALSE;
    }
    const StemConfig *c = &m->cfg;
    if (pf->ffn != c->ffn_dim) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_MODEL,
                    "the patch file's rows are %d wide, the model's tables %d", pf->ffn, c->ffn_dim);
        return FALSE;
    }
    for (int i = 0; i < pf->n_rows; i++)
        if (pf->layers[i] >= c->n_layers || !stem_config_is_stem(c, pf->layers[i]) || pf->tokens[i] >= c->vocab) {
            g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_MODEL,
                        "the patch file names rows the model does not have (layer %d, token %d)", pf->layers[i],
                        pf->tokens[i]);
            return FALSE;
        }
    return TRUE;
}

gint64 stem_patchfile_import(StemEditDb *db, const StemPatchFile *pf, const char *file_sha256, GError **error)
{
    StemModel *m = stem_editdb_model(db);
    if (!m) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NO_MODEL, "importing needs the model");
        return 0;
    }
    if (!stem_patchfile_check_model(pf, m, error)) return 0;
    char *origin = g_strdup_printf("import %s", file_sha256 ? file_sha256 : pf->content_sha256);
    gint64 id = stem_editdb_apply_rows(db, pf->recipe_json, pf->summary_json, origin, pf->n_rows, pf->layers,
                                       pf->tokens, pf->after, error);
    g_free(origin);
    return id;
}

/* ------------------------------------------------------------------ bake */

static gboolean same_file(const char *a, const char *b)
{
    GStatBuf x, y;
    return a && b && g_stat(a, &x) == 0 && g_stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

gboolean stem_editdb_bake(StemEditDb *db, const char *out, int *n_applied, char **sha_out, GError **error)
{
    StemModel *m = stem_editdb_model(db);
    if (!m) {
        g_set_error(error, STEM_EDITDB_ERROR, STEM_EDITDB_ERROR_NO_MODEL, "baking needs the model");
        return FALSE;
    }
    if (same_file(out, m->path)) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_IO,
                    "%s: refusing to overwrite the model file (bake writes a new file)", out);
        return FALSE;
    }
    if (same_file(out, stem_editdb_path(db))) {
        g_set_error(error, STEM_PATCHFILE_ERROR, STEM_PATCHFILE_ERROR_IO, "%s: refusing to overwrite the edit database",
                    out);
        return FALSE;
    }
    /* the overlay must be what the database says now */
    if (!stem_editdb_refresh(db, error)) return FALSE;
    GPtrArray *all = stem_editdb_list(db, error);
    if (!all) return FALSE;
    const char *base_sha = stem_model_sha256(m, NULL);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "base_model_sha256");
    json_builder_add_string_value(b, base_sha ? base_sha : "");
    json_builder_set_member_name(b, "database");
    json_builder_add_string_value(b, stem_editdb_path(db));
    GDateTime *now = g_date_time_new_now_utc();
    char *when = g_date_time_format_iso8601(now);
    g_date_time_unref(now);
    json_builder_set_member_name(b, "baked_at");
    json_builder_add_string_value(b, when);
    g_free(when);
    json_builder_set_member_name(b, "patch_sets");
    json_builder_begin_array(b);
    int n = 0;
    for (gint64 seq_min = 0;;) {     /* applied sets by ascending apply_seq */
        StemPatchSet *next = NULL;
        for (guint i = 0; i < all->len; i++) {
            StemPatchSet *p = g_ptr_array_index(all, i);
            if (p->applied && p->apply_seq > seq_min && (!next || p->apply_seq < next->apply_seq)) next = p;
        }
        if (!next) break;
        seq_min = next->apply_seq;
        n++;
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_int_value(b, next->id);
        json_builder_set_member_name(b, "apply_seq");
        json_builder_add_int_value(b, next->apply_seq);
        json_builder_set_member_name(b, "rows");
        json_builder_add_int_value(b, next->n_rows);
        json_builder_set_member_name(b, "checksum");
        json_builder_add_string_value(b, next->checksum);
        json_builder_set_member_name(b, "origin");
        json_builder_add_string_value(b, next->origin);
        json_builder_set_member_name(b, "recipe");
        JsonNode *rn = json_from_string(next->recipe_json, NULL);
        if (rn) json_builder_add_value(b, rn);
        else json_builder_add_null_value(b);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
    JsonGenerator *g = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(g, root);
    char *edits = json_generator_to_data(g, NULL);
    json_node_unref(root);
    g_object_unref(g);
    g_object_unref(b);
    g_ptr_array_unref(all);
    /* keep the base file's own metadata (training provenance) */
    GHashTable *meta = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    StFile *f = m->file;
    for (int i = 0; f && i < st_n_metadata(f); i++) {
        const char *k, *v;
        if (!st_metadata_nth(f, i, &k, &v)) continue;
        if (!strcmp(k, "format") || !strcmp(k, "stem_config") || !strcmp(k, "tokenizer") || !strcmp(k, "stem_edits"))
            continue;
        g_hash_table_insert(meta, g_strdup(k), g_strdup(v));
    }
    const char *prev = f ? st_metadata(f, "stem_edits") : NULL;
    if (prev) g_hash_table_insert(meta, g_strdup("stem_edits_previous"), g_strdup(prev));
    g_hash_table_insert(meta, g_strdup("stem_edits"), edits);
    g_hash_table_insert(meta, g_strdup("baked_from"), g_strdup(base_sha ? base_sha : ""));
    gboolean ok = stem_model_save(m, out, stem_tables_dtype(m->tables) == STEM_TABLE_BF16, meta, error);
    g_hash_table_unref(meta);
    if (!ok) return FALSE;
    char *sha = st_sha256_file(out, error);
    if (!sha) return FALSE;
    JsonBuilder *d = json_builder_new();
    json_builder_begin_object(d);
    json_builder_set_member_name(d, "file");
    json_builder_add_string_value(d, out);
    json_builder_set_member_name(d, "sha256");
    json_builder_add_string_value(d, sha);
    json_builder_set_member_name(d, "patch_sets");
    json_builder_add_int_value(d, n);
    json_builder_end_object(d);
    g = json_generator_new();
    root = json_builder_get_root(d);
    json_generator_set_root(g, root);
    char *detail = json_generator_to_data(g, NULL);
    json_node_unref(root);
    g_object_unref(g);
    g_object_unref(d);
    ok = stem_editdb_log(db, "bake", 0, detail, error);
    g_free(detail);
    if (n_applied) *n_applied = n;
    if (ok && sha_out) *sha_out = sha;
    else g_free(sha);
    return ok;
}
