/* Table store: base rows (fp32 or bf16, never written) + an edit overlay. */
#include "tables.h"

#include <stdlib.h>
#include <string.h>

struct StemTables {
    int n, vocab, ffn;
    StemTableDtype dtype;
    const void **base;       /* [n] */
    GHashTable *overlay;     /* key (j << 32 | token) -> float[ffn] */
    guint64 generation;
};

static inline gpointer key_of(int j, int token)
{
    return (gpointer)(((guint64)(guint32)j << 32) | (guint32)token);
}

StemTables *stem_tables_new(int n_stem, int vocab, int ffn, StemTableDtype dtype, const void *const *base)
{
    StemTables *t = g_new0(StemTables, 1);
    t->n = n_stem;
    t->vocab = vocab;
    t->ffn = ffn;
    t->dtype = dtype;
    t->base = g_new0(const void *, n_stem > 0 ? n_stem : 1);
    for (int j = 0; j < n_stem; j++) t->base[j] = base[j];
    /* keys are 64-bit: use the int64 hash on boxed values */
    t->overlay = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    return t;
}

void stem_tables_free(StemTables *t)
{
    if (!t) return;
    g_hash_table_destroy(t->overlay);
    g_free(t->base);
    g_free(t);
}

int stem_tables_n(const StemTables *t) { return t->n; }
int stem_tables_vocab(const StemTables *t) { return t->vocab; }
int stem_tables_ffn(const StemTables *t) { return t->ffn; }
StemTableDtype stem_tables_dtype(const StemTables *t) { return t->dtype; }
guint64 stem_tables_generation(const StemTables *t) { return t->generation; }
guint stem_tables_n_overrides(const StemTables *t) { return g_hash_table_size(t->overlay); }

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void stem_tables_base_row(const StemTables *t, int j, int token, float *out)
{
    size_t off = (size_t)token * (size_t)t->ffn;
    if (t->dtype == STEM_TABLE_F32) {
        memcpy(out, (const float *)t->base[j] + off, sizeof(float) * (size_t)t->ffn);
    } else {
        const uint16_t *src = (const uint16_t *)t->base[j] + off;
        for (int i = 0; i < t->ffn; i++) out[i] = bf16_to_f32(src[i]);
    }
}

static const float *lookup(const StemTables *t, int j, int token)
{
    if (g_hash_table_size(t->overlay) == 0) return NULL;
    gint64 k = (gint64)(gsize)key_of(j, token);
    return g_hash_table_lookup(t->overlay, &k);
}

void stem_tables_row(const StemTables *t, int j, int token, float *out)
{
    const float *o = lookup(t, j, token);
    if (o) memcpy(out, o, sizeof(float) * (size_t)t->ffn);
    else stem_tables_base_row(t, j, token, out);
}

void stem_tables_gather(const StemTables *t, int j, const int32_t *ids, int n, float *out)
{
    for (int i = 0; i < n; i++) stem_tables_row(t, j, ids[i], out + (size_t)i * t->ffn);
}

void stem_tables_set_override(StemTables *t, int j, int token, const float *row)
{
    gint64 *k = g_new(gint64, 1);
    *k = (gint64)(gsize)key_of(j, token);
    g_hash_table_replace(t->overlay, k, g_memdup2(row, sizeof(float) * (size_t)t->ffn));
    t->generation++;
}

void stem_tables_clear_override(StemTables *t, int j, int token)
{
    gint64 k = (gint64)(gsize)key_of(j, token);
    if (g_hash_table_remove(t->overlay, &k)) t->generation++;
}

void stem_tables_clear_all_overrides(StemTables *t)
{
    if (g_hash_table_size(t->overlay)) t->generation++;
    g_hash_table_remove_all(t->overlay);
}

gboolean stem_tables_has_override(const StemTables *t, int j, int token)
{
    return lookup(t, j, token) != NULL;
}
