/* Model files: the model <-> safetensors mapping (names, shapes, metadata). */
#include "checkpoint.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

#define CKPT_ERROR (g_quark_from_static_string("stem-checkpoint-error"))
#define STEM_FORMAT "stem-workbench/1"

/* The effective rows of table j as one fp32 array: the parameter buffer itself
 * when nothing shadows it, else a materialized copy added to `keep`. */
static const float *effective_table(const StemModel *m, int j, GPtrArray *keep)
{
    if (m->params && stem_tables_n_overrides(m->tables) == 0) return m->w.stem[j];
    const size_t V = (size_t)m->cfg.vocab, F = (size_t)m->cfg.ffn_dim;
    float *buf = g_malloc(sizeof(float) * V * F);
    for (size_t t = 0; t < V; t++) stem_tables_row(m->tables, j, (int)t, buf + t * F);
    g_ptr_array_add(keep, buf);
    return buf;
}

gboolean stem_model_save(const StemModel *m, const char *path, gboolean tables_bf16,
                         GHashTable *extra_meta, GError **error)
{
    StWriter *w = st_writer_new();
    GPtrArray *keep = g_ptr_array_new_with_free_func(g_free);
    GArray *ts = stem_model_tensors(m);
    int j = 0;
    for (guint i = 0; i < ts->len; i++) {
        StemTensorRef *r = &g_array_index(ts, StemTensorRef, i);
        if (r->is_table) {
            const float *data = effective_table(m, j++, keep);
            if (tables_bf16) st_writer_add_f32_as_bf16(w, r->name, r->ndim, r->shape, data);
            else st_writer_add(w, r->name, ST_F32, r->ndim, r->shape, data);
        } else {
            st_writer_add(w, r->name, ST_F32, r->ndim, r->shape, r->data);
        }
    }
    char *cfg = stem_config_to_json(&m->cfg);
    st_writer_set_metadata(w, "format", STEM_FORMAT);
    st_writer_set_metadata(w, "stem_config", cfg);
    g_free(cfg);
    if (m->tok) {
        char *tj = stem_tokenizer_to_json(m->tok);
        st_writer_set_metadata(w, "tokenizer", tj);
        g_free(tj);
    }
    if (extra_meta) {
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, extra_meta);
        while (g_hash_table_iter_next(&it, &k, &v)) st_writer_set_metadata(w, k, v);
    }
    gboolean ok = st_writer_write(w, path, error);
    st_writer_free(w);
    g_array_unref(ts);
    g_ptr_array_unref(keep);
    return ok;
}

static void close_file(gpointer f) { st_close(f); }

/* Open, check the format and config, and check every expected tensor's
 * dtype and shape. Returns the file and fills cfg/tok. */
static StFile *open_checked(const char *path, StemConfig *cfg, StemTokenizer **tok, GError **error)
{
    GError *e = NULL;
    StFile *f = st_open(path, &e);
    if (!f) {
        g_propagate_error(error, e);     /* st_open's message names the file */
        return NULL;
    }
    const char *cj = st_metadata(f, "stem_config");
    if (!cj) {
        g_set_error(error, CKPT_ERROR, 2, "%s: not a STEM Workbench model (no stem_config in metadata)", path);
        st_close(f);
        return NULL;
    }
    if (!st_json_check(cj, strlen(cj), &e) || !stem_config_from_json(cj, cfg, &e)) {
        g_set_error(error, CKPT_ERROR, 3, "%s: bad stem_config: %s", path, e->message);
        g_error_free(e);
        st_close(f);
        return NULL;
    }
    *tok = NULL;
    const char *tj = st_metadata(f, "tokenizer");
    if (tj) {
        if (st_json_check(tj, strlen(tj), &e)) *tok = stem_tokenizer_from_json(tj, &e);
        if (!*tok) {
            g_set_error(error, CKPT_ERROR, 4, "%s: bad tokenizer: %s", path, e->message);
            g_error_free(e);
            st_close(f);
            return NULL;
        }
        if (stem_tokenizer_vocab_size(*tok) > cfg->vocab) {
            g_set_error(error, CKPT_ERROR, 4, "%s: tokenizer has %d tokens but the model only %d", path,
                        stem_tokenizer_vocab_size(*tok), cfg->vocab);
            stem_tokenizer_free(*tok);
            st_close(f);
            return NULL;
        }
    }
    /* every tensor the config implies must be there with the right dtype and shape */
    StemModel *probe = stem_model_new_unbound(cfg);
    GArray *ts = stem_model_tensors(probe);
    gboolean ok = TRUE;
    for (guint i = 0; ok && i < ts->len; i++) {
        StemTensorRef *r = &g_array_index(ts, StemTensorRef, i);
        const StTensor *t = st_find(f, r->name);
        if (!t) {
            g_set_error(error, CKPT_ERROR, 5, "%s: tensor %s is missing", path, r->name);
            ok = FALSE;
        } else if (!(t->dtype == ST_F32 || (r->is_table && t->dtype == ST_BF16))) {
            g_set_error(error, CKPT_ERROR, 6, "%s: tensor %s has dtype %s (expected F32%s)", path, r->name,
                        st_dtype_name(t->dtype), r->is_table ? " or BF16" : "");
            ok = FALSE;
        } else if (t->ndim != r->ndim || t->shape[0] != r->shape[0] || (r->ndim == 2 && t->shape[1] != r->shape[1])) {
            g_set_error(error, CKPT_ERROR, 7, "%s: tensor %s has the wrong shape for the config", path, r->name);
            ok = FALSE;
        }
    }
    g_array_unref(ts);
    stem_model_free(probe);
    if (!ok) {
        if (*tok) stem_tokenizer_free(*tok);
        *tok = NULL;
        st_close(f);
        return NULL;
    }
    return f;
}

static float *to_f32_copy(const StTensor *t)
{
    size_t n = t->nbytes / st_dtype_size(t->dtype);
    float *out = g_malloc(sizeof(float) * (n ? n : 1));
    if (t->dtype == ST_F32) {
        memcpy(out, t->data, t->nbytes);
    } else {
        const uint8_t *p = t->data;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = st_bf16_to_f32(h);
        }
    }
    return out;
}

StemModel *stem_model_load(const char *path, GError **error)
{
    StemConfig cfg;
    StemTokenizer *tok = NULL;
    StFile *f = open_checked(path, &cfg, &tok, error);
    if (!f) return NULL;
    StemModel *m = stem_model_new_unbound(&cfg);
    m->tok = tok;
    m->file = f;
    m->file_close = close_file;
    m->path = g_strdup(path);
    m->owned = g_ptr_array_new_with_free_func(g_free);

    GArray *ts = stem_model_tensors(m);
    StemWeights tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    const void *tbase[STEM_MAX_LAYERS];
    StemTableDtype tdtype = STEM_TABLE_F32;
    int j = 0, ns = stem_config_n_stem(&cfg);
    /* all tables share one dtype so the store can serve them uniformly */
    gboolean any_bf16 = FALSE;
    for (int k = 0; k < ns; k++) {
        char nm[64];
        g_snprintf(nm, sizeof nm, "stem_embeddings.%d.weight", k);
        any_bf16 |= st_find(f, nm)->dtype == ST_BF16;
    }
    tdtype = any_bf16 ? STEM_TABLE_BF16 : STEM_TABLE_F32;

    for (guint i = 0; i < ts->len; i++) {
        StemTensorRef *r = &g_array_index(ts, StemTensorRef, i);
        const StTensor *t = st_find(f, r->name);
        const void *ptr;
        if (r->is_table) {
            if (tdtype == STEM_TABLE_BF16 && t->dtype == ST_F32) {
                /* mixed dtypes: convert this one to bf16 in memory */
                size_t n = t->nbytes / 4;
                uint16_t *b = g_malloc(2 * (n ? n : 1));
                for (size_t k = 0; k < n; k++) {
                    float v;
                    memcpy(&v, (const char *)t->data + 4 * k, 4);
                    b[k] = st_f32_to_bf16(v);
                }
                g_ptr_array_add(m->owned, b);
                ptr = b;
            } else if (st_tensor_aligned(t, t->dtype == ST_F32 ? 4 : 2)) {
                ptr = t->data;                       /* read in place */
            } else {
                void *b = g_memdup2(t->data, t->nbytes);
                g_ptr_array_add(m->owned, b);
                ptr = b;
            }
            m->w.stem[j] = (float *)ptr;             /* typed by tdtype; never written */
            tbase[j++] = ptr;
        } else {
            if (st_tensor_aligned(t, 4)) {
                ptr = t->data;
            } else {
                float *b = to_f32_copy(t);
                g_ptr_array_add(m->owned, b);
                ptr = b;
            }
            /* find the slot with the same name in the weights struct */
            r->data = (float *)ptr;
        }
    }
    /* bind backbone pointers by walking names in layout order */
    {
        guint i = 0;
        m->w.tok_emb = g_array_index(ts, StemTensorRef, i++).data;
        for (int l = 0; l < cfg.n_layers; l++) {
            StemLayerWeights *L = &m->w.layer[l];
            L->attn_norm = g_array_index(ts, StemTensorRef, i++).data;
            L->wq = g_array_index(ts, StemTensorRef, i++).data;
            L->wk = g_array_index(ts, StemTensorRef, i++).data;
            L->wv = g_array_index(ts, StemTensorRef, i++).data;
            L->wo = g_array_index(ts, StemTensorRef, i++).data;
            L->ffn_norm = g_array_index(ts, StemTensorRef, i++).data;
            L->w1 = g_array_index(ts, StemTensorRef, i++).data;
            L->w2 = g_array_index(ts, StemTensorRef, i++).data;
            L->w3 = stem_config_is_stem(&cfg, l) ? NULL : g_array_index(ts, StemTensorRef, i++).data;
        }
        m->w.norm = g_array_index(ts, StemTensorRef, i++).data;
        m->w.output = g_array_index(ts, StemTensorRef, i++).data;
    }
    g_array_unref(ts);
    m->tables = stem_tables_new(ns, cfg.vocab, cfg.ffn_dim, tdtype, tbase);
    return m;
}

StemModel *stem_model_load_trainable(const char *path, GError **error)
{
    StemConfig cfg;
    StemTokenizer *tok = NULL;
    StFile *f = open_checked(path, &cfg, &tok, error);
    if (!f) return NULL;
    StemModel *m = stem_model_new(&cfg, error);
    if (!m) {
        if (tok) stem_tokenizer_free(tok);
        st_close(f);
        return NULL;
    }
    m->tok = tok;
    m->path = g_strdup(path);
    GArray *ts = stem_model_tensors(m);
    for (guint i = 0; i < ts->len; i++) {
        StemTensorRef *r = &g_array_index(ts, StemTensorRef, i);
        const StTensor *t = st_find(f, r->name);
        if (t->dtype == ST_F32) {
            memcpy(r->data, t->data, t->nbytes);
        } else {
            float *b = to_f32_copy(t);
            memcpy(r->data, b, sizeof(float) * (t->nbytes / 2));
            g_free(b);
        }
    }
    g_array_unref(ts);
    /* keep the metadata readable */
    m->file = f;
    m->file_close = close_file;
    return m;
}

const char *stem_model_metadata(const StemModel *m, const char *key)
{
    return m->file ? st_metadata(m->file, key) : NULL;
}

const char *stem_model_sha256(StemModel *m, GError **error)
{
    if (!m->sha256 && m->path) m->sha256 = st_sha256_file(m->path, error);
    return m->sha256;
}
