/* Model architecture: a decoder-only transformer where the FFN of each layer
 * in `stem_layers` is a STEM FFN (up-projection replaced by a per-layer table
 * row indexed by the current token id) and every other layer is a dense SwiGLU. */
#ifndef STEM_ENGINE_CONFIG_H
#define STEM_ENGINE_CONFIG_H

#include <glib.h>
#include <stdint.h>

#define STEM_MAX_LAYERS 64

typedef struct {
    int vocab;        /* V */
    int dim;          /* D */
    int n_layers;     /* L */
    int n_heads;      /* H, head dim = D / H */
    int n_kv_heads;   /* grouped-query: H % KV == 0 */
    int ffn_dim;      /* F */
    int seq_len;      /* maximum context (RoPE is computed on the fly: any T <= seq_len) */
    float rope_theta;
    float norm_eps;
    uint64_t stem_mask; /* bit l set: layer l is a STEM layer */
} StemConfig;

/* Fill sensible defaults for the given sizes (theta 10000, eps 1e-5, KV = H,
 * STEM on all but layer 0). */
void stem_config_defaults(StemConfig *c);
/* Parse a STEM layer set: none | all | all-but-first | every-K | comma list "1,3,5".
 * every-K: layers K-1, 2K-1, ... (every K-th layer). */
gboolean stem_config_parse_layers(const char *spec, int n_layers, uint64_t *mask, GError **error);
/* Human/JSON form of the mask as a comma list ("" for none). g_free. */
char *stem_config_layers_string(const StemConfig *c);
gboolean stem_config_validate(const StemConfig *c, GError **error);

static inline int stem_config_is_stem(const StemConfig *c, int l) { return (int)((c->stem_mask >> l) & 1u); }
int stem_config_n_stem(const StemConfig *c);
/* index j of layer l among STEM layers (-1 if dense) */
int stem_config_stem_index(const StemConfig *c, int l);
/* layer of the j-th STEM layer */
int stem_config_stem_layer(const StemConfig *c, int j);
static inline int stem_config_head_dim(const StemConfig *c) { return c->dim / c->n_heads; }

/* Parameter counts. "active" = parameters touched to produce one token with a
 * context of one unique token: backbone + one row per STEM layer + one embedding row. */
typedef struct {
    int64_t total, embedding, backbone, tables, head, active_per_token;
    /* forward FLOPs per token (2 per multiply-add), excluding attention scores */
    double flops_per_token, dense_flops_per_token;
} StemCounts;
void stem_config_counts(const StemConfig *c, StemCounts *out);

char *stem_config_to_json(const StemConfig *c);
gboolean stem_config_from_json(const char *json, StemConfig *c, GError **error);

#endif
