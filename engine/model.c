/* The transformer forward and backward pass (llm.c style: one parameter buffer,
 * one activation arena, ops as forward/backward pairs from kernels/cpu). */
#include "model.h"
#include "offload.h"

#include "kernels/cpu/ops.h"
#include "kernels/cpu/pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_ERROR (g_quark_from_static_string("stem-model-error"))

/* ------------------------------------------------------------------ layout */

/* Every tensor in file order with its offset in the parameter buffer. The same
 * walk assigns pointers for params and grads and lists tensors for I/O. */
typedef struct {
    char name[96];
    size_t offset, numel;
    int ndim;
    int64_t shape[2];
    gboolean is_table;
    float **slot;      /* where the pointer goes in a StemWeights (relative) */
} LayoutEntry;

static GArray *layout(const StemConfig *c, StemWeights *w, size_t *n_backbone, size_t *n_total)
{
    GArray *a = g_array_new(FALSE, TRUE, sizeof(LayoutEntry));
    const int64_t V = c->vocab, D = c->dim, F = c->ffn_dim, hd = D / c->n_heads;
    const int64_t Hd = c->n_heads * hd, KVd = c->n_kv_heads * hd;
    size_t off = 0;
#define ADD(nm, slot_, r, cols, table) do {                                             \
        LayoutEntry e = {0};                                                            \
        g_strlcpy(e.name, nm, sizeof e.name);                                           \
        e.offset = off; e.numel = (size_t)(r) * (size_t)((cols) > 0 ? (cols) : 1);      \
        e.ndim = (cols) > 0 ? 2 : 1; e.shape[0] = r; e.shape[1] = (cols) > 0 ? (cols) : 0; \
        e.is_table = table; e.slot = slot_;                                             \
        g_array_append_val(a, e); off += e.numel;                                       \
    } while (0)
    char nm[96];
    ADD("tok_embeddings.weight", &w->tok_emb, V, D, FALSE);
    for (int l = 0; l < c->n_layers; l++) {
        StemLayerWeights *L = &w->layer[l];
        g_snprintf(nm, sizeof nm, "layers.%d.attention_norm.weight", l); ADD(nm, &L->attn_norm, D, 0, FALSE);
        g_snprintf(nm, sizeof nm, "layers.%d.attention.wq.weight", l); ADD(nm, &L->wq, Hd, D, FALSE);
        g_snprintf(nm, sizeof nm, "layers.%d.attention.wk.weight", l); ADD(nm, &L->wk, KVd, D, FALSE);
        g_snprintf(nm, sizeof nm, "layers.%d.attention.wv.weight", l); ADD(nm, &L->wv, KVd, D, FALSE);
        g_snprintf(nm, sizeof nm, "layers.%d.attention.wo.weight", l); ADD(nm, &L->wo, D, Hd, FALSE);
        g_snprintf(nm, sizeof nm, "layers.%d.ffn_norm.weight", l); ADD(nm, &L->ffn_norm, D, 0, FALSE);
        g_snprintf(nm, sizeof nm, "layers.%d.feed_forward.w1.weight", l); ADD(nm, &L->w1, F, D, FALSE);
        g_snprintf(nm, sizeof nm, "layers.%d.feed_forward.w2.weight", l); ADD(nm, &L->w2, D, F, FALSE);
        if (!stem_config_is_stem(c, l)) {
            g_snprintf(nm, sizeof nm, "layers.%d.feed_forward.w3.weight", l); ADD(nm, &L->w3, F, D, FALSE);
        }
    }
    ADD("norm.weight", &w->norm, D, 0, FALSE);
    ADD("output.weight", &w->output, V, D, FALSE);
    *n_backbone = off;
    for (int j = 0; j < stem_config_n_stem(c); j++) {
        g_snprintf(nm, sizeof nm, "stem_embeddings.%d.weight", j); ADD(nm, &w->stem[j], V, F, TRUE);
    }
#undef ADD
    *n_total = off;
    return a;
}

/* Point every slot of a StemWeights `w` (whose address layout() saw as `tmpl`)
 * into base. */
static void assign(GArray *a, const StemWeights *tmpl, StemWeights *w, float *base)
{
    memset(w, 0, sizeof *w);
    for (guint i = 0; i < a->len; i++) {
        LayoutEntry *e = &g_array_index(a, LayoutEntry, i);
        size_t rel = (size_t)((char *)e->slot - (char *)tmpl);
        *(float **)((char *)w + rel) = base + e->offset;
    }
}

/* Point every slot of w into base, laid out as the config's parameter buffer. */
static void bind_views(const StemConfig *c, StemWeights *w, float *base)
{
    StemWeights tmpl;
    size_t nb, nt;
    GArray *a = layout(c, &tmpl, &nb, &nt);
    assign(a, &tmpl, w, base);
    g_array_unref(a);
}

/* Host buffers come from the CPU backend's allocator (page-aligned, huge pages
 * for big arenas: page faults are slow on these machines), freed with free(). */
static float *alloc_floats(size_t n)
{
    return stem_kernels_cpu()->alloc(n * sizeof(float));
}

/* ------------------------------------------------------------------ lifecycle */

static void make_tables(StemModel *m)
{
    const void *base[STEM_MAX_LAYERS];
    int ns = stem_config_n_stem(&m->cfg);
    for (int j = 0; j < ns; j++) base[j] = m->w.stem[j];
    m->tables = stem_tables_new(ns, m->cfg.vocab, m->cfg.ffn_dim, STEM_TABLE_F32, base);
}

StemModel *stem_model_new(const StemConfig *cfg, GError **error)
{
    if (!stem_config_validate(cfg, error)) return NULL;
    StemModel *m = g_new0(StemModel, 1);
    m->cfg = *cfg;
    StemWeights tmpl;
    g_array_unref(layout(cfg, &tmpl, &m->n_backbone, &m->n_params));
    m->params = alloc_floats(m->n_params);
    if (!m->params) {
        g_free(m);
        g_set_error(error, MODEL_ERROR, 1, "out of memory for %zu parameters", m->n_params);
        return NULL;
    }
    memset(m->params, 0, m->n_params * sizeof(float));
    bind_views(cfg, &m->w, m->params);
    make_tables(m);
    m->k = stem_kernels_cpu();
    return m;
}

StemModel *stem_model_new_unbound(const StemConfig *cfg)
{
    StemModel *m = g_new0(StemModel, 1);
    m->cfg = *cfg;
    StemWeights tmpl;
    GArray *a = layout(cfg, &tmpl, &m->n_backbone, &m->n_params);
    g_array_unref(a);
    /* the loader binds m->w; the compute views follow it at the first forward
     * (bind_host_views) */
    m->k = stem_kernels_cpu();
    return m;
}

static void acts_free(StemModel *m, StemActs *a);

static void device_free(StemModel *m);
static gboolean device_alloc_training(StemModel *m, GError **error);

void stem_model_free(StemModel *m)
{
    if (!m) return;
    acts_free(m, m->acts);
    m->acts = NULL;
    device_free(m);
    stem_tables_free(m->tables);
    free(m->params);
    free(m->grads);
    free(m->adam_m);
    free(m->adam_v);
    if (m->tok) stem_tokenizer_free(m->tok);
    if (m->owned) g_ptr_array_unref(m->owned);
    if (m->file && m->file_close) m->file_close(m->file);
    g_free(m->path);
    g_free(m->sha256);
    g_free(m);
}

GArray *stem_model_tensors(const StemModel *m)
{
    StemWeights tmpl;
    size_t nb, nt;
    GArray *a = layout(&m->cfg, &tmpl, &nb, &nt);
    GArray *out = g_array_new(FALSE, TRUE, sizeof(StemTensorRef));
    for (guint i = 0; i < a->len; i++) {
        LayoutEntry *e = &g_array_index(a, LayoutEntry, i);
        size_t rel = (size_t)((char *)e->slot - (char *)&tmpl);
        StemTensorRef r = {0};
        g_strlcpy(r.name, e->name, sizeof r.name);
        r.data = *(float **)((const char *)&m->w + rel);
        r.grad = m->grads ? *(float **)((const char *)&m->g + rel) : NULL;
        r.ndim = e->ndim;
        r.shape[0] = e->shape[0];
        r.shape[1] = e->shape[1];
        r.is_table = e->is_table;
        g_array_append_val(out, r);
    }
    g_array_unref(a);
    return out;
}

/* ------------------------------------------------------------------ init */

/* splitmix64 + Box-Muller: tiny, deterministic, good enough for init. */
static guint64 sm64(guint64 *s)
{
    guint64 z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fill_normal(float *x, size_t n, float std, guint64 seed)
{
    guint64 s = seed;
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((sm64(&s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
        double u2 = (sm64(&s) >> 11) * (1.0 / 9007199254740992.0);
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(2 * G_PI * u2) * std);
        if (i + 1 < n) x[i + 1] = (float)(r * sin(2 * G_PI * u2) * std);
    }
}

void stem_model_init_weights(StemModel *m, guint64 seed)
{
    GArray *t = stem_model_tensors(m);
    const float out_scale = 1.0f / sqrtf(2.0f * (float)m->cfg.n_layers);
    for (guint i = 0; i < t->len; i++) {
        StemTensorRef *r = &g_array_index(t, StemTensorRef, i);
        size_t n = (size_t)r->shape[0] * (size_t)(r->ndim == 2 ? r->shape[1] : 1);
        guint64 s = seed * 1000003ull + i * 7919ull + 17;
        if (r->ndim == 1) {
            for (size_t k = 0; k < n; k++) r->data[k] = 1.0f;
        } else if (r->is_table) {
            fill_normal(r->data, n, sqrtf(2.0f / (float)(m->cfg.vocab + m->cfg.ffn_dim)), s);
        } else {
            float std = 0.02f;
            if (g_str_has_suffix(r->name, ".wo.weight") || g_str_has_suffix(r->name, ".w2.weight")) std *= out_scale;
            fill_normal(r->data, n, std, s);
        }
    }
    g_array_unref(t);
}

gboolean stem_model_alloc_training(StemModel *m, GError **error)
{
    if (!m->params) {
        g_set_error(error, MODEL_ERROR, 2, "model weights are read-only (mapped); load it trainable to train");
        return FALSE;
    }
    if (m->grads) return TRUE;
    m->grads = alloc_floats(m->n_params);
    m->adam_m = alloc_floats(m->n_params);
    m->adam_v = alloc_floats(m->n_params);
    if (!m->grads || !m->adam_m || !m->adam_v) {
        g_set_error(error, MODEL_ERROR, 1, "out of memory for training state (%zu parameters)", m->n_params);
        return FALSE;
    }
    memset(m->grads, 0, m->n_params * sizeof(float));
    memset(m->adam_m, 0, m->n_params * sizeof(float));
    memset(m->adam_v, 0, m->n_params * sizeof(float));
    bind_views(&m->cfg, &m->g, m->grads);
    m->adam_t = 0;
    return device_alloc_training(m, error);
}

void stem_model_zero_grad(StemModel *m)
{
    /* dev_grads is grads itself on a host backend (bind_host_views) */
    if (m->dev_grads) m->k->zero(m->dev_grads, m->n_dev_params * sizeof(float));
}

/* ------------------------------------------------------------------ backends */

/* On a host backend the compute views are the host buffers themselves. */
static void bind_host_views(StemModel *m)
{
    if (!m->k->is_host) return;
    m->dev_params = m->params;
    m->dev_grads = m->grads;
    m->dev_adam_m = m->adam_m;
    m->dev_adam_v = m->adam_v;
    m->n_dev_params = m->n_params;
    m->dw = m->w;
    m->dg = m->g;
}

/* Are the STEM tables part of dev_params (and so trained with the backbone)? */
static gboolean tables_on_device(const StemModel *m)
{
    return m->params && m->offload_capacity == 0 && m->n_dev_params == m->n_params;
}

static void device_free(StemModel *m)
{
    stem_offload_free(m->offload);
    m->offload = NULL;
    if (!m->k->is_host) {
        m->k->free(m->dev_params);
        m->k->free(m->dev_grads);
        m->k->free(m->dev_adam_m);
        m->k->free(m->dev_adam_v);
    }
    m->dev_params = m->dev_grads = m->dev_adam_m = m->dev_adam_v = NULL;
    memset(&m->dw, 0, sizeof m->dw);
    memset(&m->dg, 0, sizeof m->dg);
}

/* Device copies of the training state (gradients, AdamW moments), zeroed; the
 * moments start from the host's (zero for a new run). */
static gboolean device_alloc_training(StemModel *m, GError **error)
{
    if (m->k->is_host) {
        bind_host_views(m);
        return TRUE;
    }
    if (m->dev_grads) return TRUE;
    const size_t bytes = m->n_dev_params * sizeof(float);
    m->dev_grads = m->k->alloc(bytes);
    m->dev_adam_m = m->k->alloc(bytes);
    m->dev_adam_v = m->k->alloc(bytes);
    if (!m->dev_grads || !m->dev_adam_m || !m->dev_adam_v) {
        g_set_error(error, MODEL_ERROR, 1, "out of %s memory for training state (%zu MB)", m->k->name,
                    3 * bytes >> 20);
        return FALSE;
    }
    m->k->zero(m->dev_grads, bytes);
    m->k->upload(m->dev_adam_m, m->adam_m, bytes);
    m->k->upload(m->dev_adam_v, m->adam_v, bytes);
    bind_views(&m->cfg, &m->dg, m->dev_grads);
    if (!tables_on_device(m)) memset(m->dg.stem, 0, sizeof m->dg.stem);
    return TRUE;
}

void stem_model_upload_params(StemModel *m)
{
    if (m->k->is_host || !m->dev_params) return;
    /* tensor by tensor: a mapped model's weights are not one buffer */
    GArray *t = stem_model_tensors(m);
    StemWeights tmpl;
    size_t nb, nt;
    GArray *a = layout(&m->cfg, &tmpl, &nb, &nt);
    for (guint i = 0; i < t->len; i++) {
        StemTensorRef *r = &g_array_index(t, StemTensorRef, i);
        LayoutEntry *e = &g_array_index(a, LayoutEntry, i);
        if (e->offset + e->numel > m->n_dev_params) continue;   /* a table kept on the host */
        if (r->data) m->k->upload(m->dev_params + e->offset, r->data, e->numel * sizeof(float));
    }
    g_array_unref(a);
    g_array_unref(t);
    if (m->offload) stem_offload_invalidate_all(m->offload);
}

gboolean stem_model_set_device(StemModel *m, const StemKernels *k, int offload_capacity, GError **error)
{
    g_return_val_if_fail(k && k->abi == STEM_KERNELS_ABI, FALSE);
    if (offload_capacity < 0) {
        g_set_error(error, MODEL_ERROR, 3, "the offload cache capacity must be >= 0");
        return FALSE;
    }
    gboolean training = m->grads != NULL;
    stem_model_sync_to_host(m);   /* the host buffers are what the new backend starts from */
    acts_free(m, m->acts);
    m->acts = NULL;
    device_free(m);
    m->k = k;
    m->offload_capacity = MIN(offload_capacity, m->cfg.vocab);
    if (k->is_host) {
        bind_host_views(m);
        return TRUE;
    }
    /* the tables come to the device only for a trainable model that keeps
     * them with the weights; otherwise they are served by the row cache */
    m->n_dev_params = (m->params && m->offload_capacity == 0) ? m->n_params : m->n_backbone;
    m->dev_params = k->alloc(m->n_dev_params * sizeof(float));
    if (!m->dev_params) {
        g_set_error(error, MODEL_ERROR, 1, "out of %s memory for %zu parameters", k->name, m->n_dev_params);
        m->k = stem_kernels_cpu();
        bind_host_views(m);
        return FALSE;
    }
    bind_views(&m->cfg, &m->dw, m->dev_params);
    if (!tables_on_device(m)) memset(m->dw.stem, 0, sizeof m->dw.stem);
    stem_model_upload_params(m);
    if (training && !device_alloc_training(m, error)) return FALSE;
    return TRUE;
}

void stem_model_sync_to_host(StemModel *m)
{
    /* offloaded tables train in a write-back cache, on every backend */
    if (m->offload) stem_offload_flush(m->offload);
    if (m->k->is_host || !m->dev_params || !m->params) return;
    m->k->download(m->params, m->dev_params, m->n_dev_params * sizeof(float));
    if (m->dev_adam_m) {
        m->k->download(m->adam_m, m->dev_adam_m, m->n_dev_params * sizeof(float));
        m->k->download(m->adam_v, m->dev_adam_v, m->n_dev_params * sizeof(float));
    }
}

/* ------------------------------------------------------------------ activations */

struct StemActs {
    int B, T, last_only, has_targets;
    int rows_mode;                /* how the last forward read STEM rows (ROWS_*) */
    size_t cap;                   /* floats allocated */
    float *arena;                 /* backend memory */
    int32_t *ids, *targets;       /* [N] host copies */
    int32_t *dids, *dtargets;     /* [N] backend copies (alias ids/targets on a host backend) */
    size_t ids_cap;
    /* host mirrors of device results, downloaded on first read after a forward */
    float *h_logits, *h_res;      /* [rows, V], [(L+1), N, D] */
    size_t h_logits_cap, h_res_cap;
    gboolean h_logits_ok, h_res_ok;
    float *x_in[STEM_MAX_LAYERS]; /* [N, D] residual entering layer l */
    float *rstd1[STEM_MAX_LAYERS], *rstd2[STEM_MAX_LAYERS];   /* [N] */
    float *a[STEM_MAX_LAYERS];    /* [N, D] attention-normed input */
    float *q[STEM_MAX_LAYERS];    /* [N, H*hd] after RoPE */
    float *k[STEM_MAX_LAYERS], *v[STEM_MAX_LAYERS];           /* [N, KV*hd] (k after RoPE) */
    float *att[STEM_MAX_LAYERS];  /* [B, H, T, T] softmax probabilities */
    float *o[STEM_MAX_LAYERS];    /* [N, H*hd] attention output before wo */
    float *h_mid[STEM_MAX_LAYERS];/* [N, D] residual after attention */
    float *f[STEM_MAX_LAYERS];    /* [N, D] ffn-normed */
    float *g[STEM_MAX_LAYERS], *u[STEM_MAX_LAYERS], *mm[STEM_MAX_LAYERS]; /* [N, F] gate, up row, product
                                     (u: NULL for STEM layers but in ROWS_HOST mode, see acts_carve) */
    float *h_out;                 /* [N, D] final residual */
    float *rstd_f;                /* [N] */
    float *nf;                    /* [N, D] final normed */
    float *last;                  /* [B, D] last positions of nf (last_only) */
    float *logits;                /* [N or B, V]; probabilities after a loss forward */
    /* backward scratch */
    float *dres, *dtmp;           /* [N, D] */
    float *dq, *dk, *dv, *dO;     /* [N, H*hd], [N, KV*hd] x2, [N, H*hd] */
    float *datt;                  /* [B, H, T, T] */
    float *dg, *du, *dm;          /* [N, F] */
};

/* Where the STEM FFN rows of a forward come from. */
enum {
    ROWS_PARAMS,    /* the tables in (dev_)params: trainable, no edit overlay */
    ROWS_OFFLOAD,   /* the device row cache (engine/offload.h) */
    ROWS_HOST,      /* the table store on the host (mapped tables, or an overlay) */
};

static void acts_free(StemModel *m, StemActs *a)
{
    if (!a) return;
    m->k->free(a->arena);
    if (!m->k->is_host) {
        m->k->free(a->dids);
        m->k->free(a->dtargets);
    }
    g_free(a->ids);
    g_free(a->targets);
    g_free(a->h_logits);
    g_free(a->h_res);
    g_free(a);
}

/* Carve (or just size, when base == NULL) the arena for (B, T) and STEM rows
 * read as rows_mode says. */
static size_t acts_carve(StemActs *a, const StemConfig *c, int B, int T, int last_only, int rows_mode, float *base)
{
    const size_t N = (size_t)B * T, D = c->dim, F = c->ffn_dim, hd = D / c->n_heads;
    const size_t Hd = c->n_heads * hd, KVd = c->n_kv_heads * hd, att = (size_t)B * c->n_heads * T * T;
    size_t off = 0;
#define TAKE(ptr, n) do { if (base) (ptr) = base + off; off += ((n) + 15) & ~(size_t)15; } while (0)
    for (int l = 0; l < c->n_layers; l++) {
        TAKE(a->x_in[l], N * D);
        TAKE(a->rstd1[l], N);
        TAKE(a->rstd2[l], N);
        TAKE(a->a[l], N * D);
        TAKE(a->q[l], N * Hd);
        TAKE(a->k[l], N * KVd);
        TAKE(a->v[l], N * KVd);
        TAKE(a->att[l], att);
        TAKE(a->o[l], N * Hd);
        TAKE(a->h_mid[l], N * D);
        TAKE(a->f[l], N * D);
        TAKE(a->g[l], N * F);
        /* STEM layers read their rows inside stem_ffn_forward/backward straight
         * from the table or the row cache: nothing reads a gathered copy (only
         * the host backend's overlay path gathers) */
        if (stem_config_stem_index(c, l) < 0 || rows_mode == ROWS_HOST) TAKE(a->u[l], N * F);
        else if (base) a->u[l] = NULL;
        TAKE(a->mm[l], N * F);
    }
    TAKE(a->h_out, N * D);
    TAKE(a->rstd_f, N);
    TAKE(a->nf, N * D);
    TAKE(a->last, (size_t)B * D);
    TAKE(a->logits, (last_only ? (size_t)B : N) * (size_t)c->vocab);
    if (!last_only) {
        TAKE(a->dres, N * D);
        TAKE(a->dtmp, N * D);
        TAKE(a->dq, N * Hd);
        TAKE(a->dk, N * KVd);
        TAKE(a->dv, N * KVd);
        TAKE(a->dO, N * Hd);
        TAKE(a->datt, att);
        TAKE(a->dg, N * F);
        TAKE(a->du, N * F);
        TAKE(a->dm, N * F);
    }
#undef TAKE
    return off;
}

static StemActs *acts_prepare(StemModel *m, int B, int T, int last_only, int rows_mode)
{
    const StemKernels *k = m->k;
    StemActs *a = m->acts;
    if (!a) a = m->acts = g_new0(StemActs, 1);
    size_t need = acts_carve(a, &m->cfg, B, T, last_only, rows_mode, NULL);
    if (need > a->cap) {
        k->free(a->arena);
        a->arena = k->alloc(need * sizeof(float));
        if (!a->arena) g_error("out of %s memory for activations (%zu MB)", k->name, need * 4 >> 20);
        a->cap = need;
    }
    acts_carve(a, &m->cfg, B, T, last_only, rows_mode, a->arena);
    size_t N = (size_t)B * T;
    if (N > a->ids_cap) {
        a->ids = g_renew(int32_t, a->ids, N);
        a->targets = g_renew(int32_t, a->targets, N);
        if (k->is_host) {
            a->dids = a->ids;
            a->dtargets = a->targets;
        } else {
            k->free(a->dids);
            k->free(a->dtargets);
            a->dids = k->alloc(N * sizeof(int32_t));
            a->dtargets = k->alloc(N * sizeof(int32_t));
            if (!a->dids || !a->dtargets) g_error("out of %s memory for token ids", k->name);
        }
        a->ids_cap = N;
    }
    a->B = B;
    a->T = T;
    a->last_only = last_only;
    a->rows_mode = rows_mode;
    a->h_logits_ok = a->h_res_ok = FALSE;
    return a;
}

/* ------------------------------------------------------------------ forward */

static int rows_mode(const StemModel *m)
{
    if (m->offload_capacity > 0) return ROWS_OFFLOAD;
    gboolean overlay = stem_tables_n_overrides(m->tables) > 0;
    if (m->k->is_host) return m->params && !overlay ? ROWS_PARAMS : ROWS_HOST;
    return tables_on_device(m) && !overlay ? ROWS_PARAMS : ROWS_OFFLOAD;
}

/* The row cache for chunks of up to N positions (re-created for a larger N). */
static StemOffload *offload_for(StemModel *m, int N)
{
    if (m->offload && stem_offload_max_positions(m->offload) >= N) return m->offload;
    if (m->offload) stem_offload_flush(m->offload);   /* trained rows go home before the store goes */
    stem_offload_free(m->offload);
    int cap = m->offload_capacity > 0 ? m->offload_capacity : m->cfg.vocab;
    GError *e = NULL;
    m->offload = stem_offload_new(m->tables, m->k, cap, MAX(N, m->cfg.seq_len), &e);
    if (!m->offload) g_error("offloaded tables: %s", e->message);
    return m->offload;
}

float stem_model_forward(StemModel *m, const int32_t *ids, const int32_t *targets, int B, int T,
                         gboolean last_only)
{
    const StemConfig *c = &m->cfg;
    const StemKernels *K = m->k;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab, H = c->n_heads, KV = c->n_kv_heads;
    const int hd = D / H, N = B * T;
    g_return_val_if_fail(T >= 1 && T <= c->seq_len && B >= 1, NAN);
    bind_host_views(m);
    StemActs *a = acts_prepare(m, B, T, last_only && !targets,
                               stem_config_n_stem(c) > 0 ? rows_mode(m) : ROWS_PARAMS);
    const StemWeights *W = &m->dw;
    memcpy(a->ids, ids, sizeof(int32_t) * (size_t)N);
    a->has_targets = targets != NULL;
    if (targets) memcpy(a->targets, targets, sizeof(int32_t) * (size_t)N);
    if (!K->is_host) {
        K->upload(a->dids, a->ids, sizeof(int32_t) * (size_t)N);
        if (targets) K->upload(a->dtargets, a->targets, sizeof(int32_t) * (size_t)N);
    }
    if (a->rows_mode == ROWS_OFFLOAD) {
        GError *e = NULL;
        if (!stem_offload_begin(offload_for(m, N), a->ids, N, &e)) {
            g_critical("offloaded tables: %s", e->message);
            g_error_free(e);
            return NAN;
        }
    }

    K->embedding_forward(a->x_in[0], W->tok_emb, a->dids, N, D);
    for (int l = 0; l < c->n_layers; l++) {
        const StemLayerWeights *L = &W->layer[l];
        float *x = a->x_in[l];
        K->rmsnorm_forward(a->a[l], a->rstd1[l], x, L->attn_norm, N, D, c->norm_eps);
        K->matmul_forward(a->q[l], a->a[l], L->wq, N, D, H * hd, 0);
        K->matmul_forward(a->k[l], a->a[l], L->wk, N, D, KV * hd, 0);
        K->matmul_forward(a->v[l], a->a[l], L->wv, N, D, KV * hd, 0);
        K->rope_qk_forward(a->q[l], a->k[l], B, T, H, KV, hd, c->rope_theta);
        K->attention_forward(a->o[l], a->att[l], a->q[l], a->k[l], a->v[l], B, T, H, KV, hd);
        K->copy(a->h_mid[l], x, sizeof(float) * (size_t)N * D);
        K->matmul_forward(a->h_mid[l], a->o[l], L->wo, N, H * hd, D, 1);

        K->rmsnorm_forward(a->f[l], a->rstd2[l], a->h_mid[l], L->ffn_norm, N, D, c->norm_eps);
        K->matmul_forward(a->g[l], a->f[l], L->w1, N, D, F, 0);
        int j = stem_config_stem_index(c, l);
        if (j >= 0 && a->rows_mode == ROWS_PARAMS) {
            K->stem_ffn_forward(a->mm[l], a->g[l], W->stem[j], a->dids, N, F, (size_t)F);
        } else if (j >= 0 && a->rows_mode == ROWS_OFFLOAD) {
            stem_offload_ffn_forward(m->offload, j, a->mm[l], a->g[l]);
        } else {
            if (j < 0) K->matmul_forward(a->u[l], a->f[l], L->w3, N, D, F, 0);
            else stem_tables_gather(m->tables, j, a->ids, N, a->u[l]);   /* host backend only */
            K->swiglu_forward(a->mm[l], a->g[l], a->u[l], (size_t)N * F);
        }
        float *next = l + 1 < c->n_layers ? a->x_in[l + 1] : a->h_out;
        K->copy(next, a->h_mid[l], sizeof(float) * (size_t)N * D);
        K->matmul_forward(next, a->mm[l], L->w2, N, F, D, 1);
    }
    K->rmsnorm_forward(a->nf, a->rstd_f, a->h_out, W->norm, N, D, c->norm_eps);
    if (a->last_only) {
        for (int b = 0; b < B; b++)
            K->copy(a->last + (size_t)b * D, a->nf + ((size_t)b * T + T - 1) * D, sizeof(float) * D);
        K->matmul_forward(a->logits, a->last, W->output, B, D, V, 0);
        return 0.0f;
    }
    K->matmul_forward(a->logits, a->nf, W->output, N, D, V, 0);
    if (!targets) return 0.0f;
    /* softmax in place: backward reads the probabilities */
    return K->crossentropy_forward(a->logits, a->logits, a->dtargets, N, V);
}

const float *stem_model_logits(const StemModel *m, int b, int t)
{
    StemActs *a = m->acts;
    if (!a || b < 0 || b >= a->B || t < 0 || t >= a->T) return NULL;
    if (a->last_only && t != a->T - 1) return NULL;
    const float *base = a->logits;
    if (!m->k->is_host) {
        size_t n = (a->last_only ? (size_t)a->B : (size_t)a->B * a->T) * m->cfg.vocab;
        if (!a->h_logits_ok) {
            if (n > a->h_logits_cap) {
                a->h_logits = g_renew(float, a->h_logits, n);
                a->h_logits_cap = n;
            }
            m->k->download(a->h_logits, a->logits, n * sizeof(float));
            a->h_logits_ok = TRUE;
        }
        base = a->h_logits;
    }
    if (a->last_only) return base + (size_t)b * m->cfg.vocab;
    return base + ((size_t)b * a->T + t) * m->cfg.vocab;
}

const float *stem_model_residual(const StemModel *m, int l, int b, int t)
{
    StemActs *a = m->acts;
    if (!a || b < 0 || b >= a->B || t < 0 || t >= a->T || l < -1 || l >= m->cfg.n_layers) return NULL;
    const float *base = l + 1 < m->cfg.n_layers ? a->x_in[l + 1] : a->h_out;
    const size_t ND = (size_t)a->B * a->T * m->cfg.dim;
    if (!m->k->is_host) {
        /* every layer's residual at once: the logit lens reads them all */
        const int L = m->cfg.n_layers;
        if (!a->h_res_ok) {
            if ((size_t)(L + 1) * ND > a->h_res_cap) {
                a->h_res = g_renew(float, a->h_res, (size_t)(L + 1) * ND);
                a->h_res_cap = (size_t)(L + 1) * ND;
            }
            for (int i = 0; i <= L; i++)
                m->k->download(a->h_res + (size_t)i * ND, i < L ? a->x_in[i] : a->h_out, ND * sizeof(float));
            a->h_res_ok = TRUE;
        }
        base = a->h_res + (size_t)(l + 1) * ND;
    }
    return base + ((size_t)b * a->T + t) * m->cfg.dim;
}

/* ------------------------------------------------------------------ backward */

void stem_model_backward(StemModel *m)
{
    const StemConfig *c = &m->cfg;
    const StemKernels *K = m->k;
    StemActs *a = m->acts;
    g_return_if_fail(a && a->has_targets && !a->last_only && m->grads);
    const int B = a->B, T = a->T, N = B * T;
    const int D = c->dim, F = c->ffn_dim, V = c->vocab, H = c->n_heads, KV = c->n_kv_heads, hd = D / H;
    const size_t ND = (size_t)N * D;
    const StemWeights *W = &m->dw;
    StemWeights *Gw = &m->dg;

    /* logits hold probabilities; turn them into dlogits in place */
    K->crossentropy_backward(a->logits, a->logits, a->dtargets, N, V);
    K->zero(a->dtmp, sizeof(float) * ND);
    K->matmul_backward(a->dtmp, Gw->output, a->logits, a->nf, W->output, N, D, V);
    K->zero(a->dres, sizeof(float) * ND);
    K->rmsnorm_backward(a->dres, Gw->norm, a->dtmp, a->h_out, W->norm, a->rstd_f, N, D);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const StemLayerWeights *L = &W->layer[l];
        StemLayerWeights *G = &Gw->layer[l];
        /* FFN block: out = h_mid + W2 (silu(W1 f) * u); dres is d(out) and flows to h_mid */
        K->zero(a->dm, sizeof(float) * (size_t)N * F);
        K->matmul_backward(a->dm, G->w2, a->dres, a->mm[l], L->w2, N, F, D);
        int j = stem_config_stem_index(c, l);
        if (j >= 0 && a->rows_mode == ROWS_PARAMS)   /* dg, and the table's gradient rows += du */
            K->stem_ffn_backward(a->dg, Gw->stem[j], a->dm, a->g[l], W->stem[j], a->dids, (size_t)F, a->dids,
                                 (size_t)F, N, F);
        else if (j >= 0 && a->rows_mode == ROWS_OFFLOAD)   /* the same, rows in the offload store */
            stem_offload_ffn_backward(m->offload, j, a->dg, a->dm, a->g[l]);
        else
            K->swiglu_backward(a->dg, a->du, a->dm, a->g[l], a->u[l], (size_t)N * F);
        K->zero(a->dtmp, sizeof(float) * ND);
        if (j < 0) K->matmul_backward(a->dtmp, G->w3, a->du, a->f[l], L->w3, N, D, F);
        else if (a->rows_mode == ROWS_HOST) op_embedding_backward(m->g.stem[j], a->du, a->ids, N, F);
        K->matmul_backward(a->dtmp, G->w1, a->dg, a->f[l], L->w1, N, D, F);
        K->rmsnorm_backward(a->dres, G->ffn_norm, a->dtmp, a->h_mid[l], L->ffn_norm, a->rstd2[l], N, D);

        /* attention block: h_mid = x + Wo attn(q, k, v) */
        K->zero(a->dO, sizeof(float) * (size_t)N * H * hd);
        K->matmul_backward(a->dO, G->wo, a->dres, a->o[l], L->wo, N, H * hd, D);
        K->attention_backward(a->dq, a->dk, a->dv, a->datt, a->dO, a->att[l], a->q[l], a->k[l], a->v[l],
                              B, T, H, KV, hd);
        K->rope_qk_backward(a->dq, a->dk, B, T, H, KV, hd, c->rope_theta);
        K->zero(a->dtmp, sizeof(float) * ND);
        K->matmul_backward(a->dtmp, G->wq, a->dq, a->a[l], L->wq, N, D, H * hd);
        K->matmul_backward(a->dtmp, G->wk, a->dk, a->a[l], L->wk, N, D, KV * hd);
        K->matmul_backward(a->dtmp, G->wv, a->dv, a->a[l], L->wv, N, D, KV * hd);
        K->rmsnorm_backward(a->dres, G->attn_norm, a->dtmp, a->x_in[l], L->attn_norm, a->rstd1[l], N, D);
    }
    K->embedding_backward(Gw->tok_emb, a->dres, a->dids, N, D);
    a->has_targets = FALSE;   /* probabilities were consumed */
}
