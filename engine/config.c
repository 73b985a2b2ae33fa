/* Model configuration: defaults, STEM layer sets, validation, counts, JSON. */
#include "config.h"

#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_ERROR (g_quark_from_static_string("stem-config-error"))

void stem_config_defaults(StemConfig *c)
{
    memset(c, 0, sizeof *c);
    c->vocab = 4096;
    c->dim = 256;
    c->n_layers = 6;
    c->n_heads = 8;
    c->n_kv_heads = 8;
    c->ffn_dim = 688;
    c->seq_len = 128;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->stem_mask = 0;
    for (int l = 1; l < c->n_layers; l++) c->stem_mask |= 1ull << l;
}

gboolean stem_config_parse_layers(const char *spec, int n_layers, uint64_t *mask, GError **error)
{
    uint64_t m = 0;
    if (n_layers < 1 || n_layers > STEM_MAX_LAYERS) {
        g_set_error(error, CONFIG_ERROR, 1, "layer count %d out of range 1..%d", n_layers, STEM_MAX_LAYERS);
        return FALSE;
    }
    if (!spec || !*spec || !strcmp(spec, "none")) {
        m = 0;
    } else if (!strcmp(spec, "all")) {
        for (int l = 0; l < n_layers; l++) m |= 1ull << l;
    } else if (!strcmp(spec, "all-but-first")) {
        for (int l = 1; l < n_layers; l++) m |= 1ull << l;
    } else if (g_str_has_prefix(spec, "every-")) {
        char *end = NULL;
        long k = strtol(spec + 6, &end, 10);
        if (!end || *end || k < 1 || k > n_layers) {
            g_set_error(error, CONFIG_ERROR, 2, "bad STEM layer set '%s': every-K needs 1 <= K <= %d", spec, n_layers);
            return FALSE;
        }
        for (int l = (int)k - 1; l < n_layers; l += (int)k) m |= 1ull << l;
    } else {
        char **parts = g_strsplit(spec, ",", -1);
        for (char **p = parts; *p; p++) {
            char *s = g_strstrip(*p), *end = NULL;
            long l = strtol(s, &end, 10);
            if (!*s || !end || *end || l < 0 || l >= n_layers) {
                g_set_error(error, CONFIG_ERROR, 3,
                            "bad STEM layer set '%s': expected none|all|all-but-first|every-K|list of layers 0..%d",
                            spec, n_layers - 1);
                g_strfreev(parts);
                return FALSE;
            }
            m |= 1ull << l;
        }
        g_strfreev(parts);
    }
    *mask = m;
    return TRUE;
}

char *stem_config_layers_string(const StemConfig *c)
{
    GString *s = g_string_new(NULL);
    for (int l = 0; l < c->n_layers; l++)
        if (stem_config_is_stem(c, l)) g_string_append_printf(s, "%s%d", s->len ? "," : "", l);
    return g_string_free(s, FALSE);
}

gboolean stem_config_validate(const StemConfig *c, GError **error)
{
#define BAD(...) do { g_set_error(error, CONFIG_ERROR, 4, __VA_ARGS__); return FALSE; } while (0)
    if (c->vocab < 260 || c->vocab > (1 << 24)) BAD("vocab %d out of range 260..16777216", c->vocab);
    if (c->dim < 2 || c->dim > 65536) BAD("dim %d out of range", c->dim);
    if (c->n_layers < 1 || c->n_layers > STEM_MAX_LAYERS) BAD("layers %d out of range 1..%d", c->n_layers, STEM_MAX_LAYERS);
    if (c->n_heads < 1 || c->dim % c->n_heads) BAD("dim %d is not divisible by heads %d", c->dim, c->n_heads);
    if ((c->dim / c->n_heads) % 2) BAD("head dim %d must be even for RoPE", c->dim / c->n_heads);
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads) BAD("heads %d not divisible by kv heads %d", c->n_heads, c->n_kv_heads);
    if (c->ffn_dim < 1 || c->ffn_dim > 1 << 20) BAD("ffn dim %d out of range", c->ffn_dim);
    if (c->seq_len < 2 || c->seq_len > 1 << 16) BAD("seq %d out of range 2..65536", c->seq_len);
    if (!(c->rope_theta > 0)) BAD("rope theta must be positive");
    if (!(c->norm_eps > 0)) BAD("norm eps must be positive");
    if (c->n_layers < 64 && (c->stem_mask >> c->n_layers)) BAD("STEM layer set names a layer >= %d", c->n_layers);
    return TRUE;
#undef BAD
}

int stem_config_n_stem(const StemConfig *c)
{
    return __builtin_popcountll(c->stem_mask);
}

int stem_config_stem_index(const StemConfig *c, int l)
{
    if (!stem_config_is_stem(c, l)) return -1;
    return __builtin_popcountll(c->stem_mask & ((1ull << l) - 1));
}

int stem_config_stem_layer(const StemConfig *c, int j)
{
    for (int l = 0; l < c->n_layers; l++)
        if (stem_config_is_stem(c, l) && j-- == 0) return l;
    return -1;
}

void stem_config_counts(const StemConfig *c, StemCounts *o)
{
    const int64_t V = c->vocab, D = c->dim, F = c->ffn_dim, hd = D / c->n_heads;
    const int64_t attn = D * (c->n_heads * hd) + 2 * D * (c->n_kv_heads * hd) + (c->n_heads * hd) * D;
    const int ns = stem_config_n_stem(c), nd = c->n_layers - ns;
    memset(o, 0, sizeof *o);
    o->embedding = V * D;
    o->head = V * D + D;                                  /* output + final norm */
    o->backbone = c->n_layers * (attn + 2 * D) + nd * 3 * D * F + ns * 2 * D * F;
    o->tables = ns * V * F;
    o->total = o->embedding + o->backbone + o->head + o->tables;
    o->active_per_token = D + o->backbone + o->head + ns * F;
    /* forward multiply-adds per token: attention projections, FFN, head */
    double mac = (double)c->n_layers * attn + nd * 3.0 * D * F + ns * 2.0 * D * F + (double)V * D;
    double mac_dense = (double)c->n_layers * attn + c->n_layers * 3.0 * D * F + (double)V * D;
    o->flops_per_token = 2.0 * mac;
    o->dense_flops_per_token = 2.0 * mac_dense;
}

char *stem_config_to_json(const StemConfig *c)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "vocab"); json_builder_add_int_value(b, c->vocab);
    json_builder_set_member_name(b, "dim"); json_builder_add_int_value(b, c->dim);
    json_builder_set_member_name(b, "n_layers"); json_builder_add_int_value(b, c->n_layers);
    json_builder_set_member_name(b, "n_heads"); json_builder_add_int_value(b, c->n_heads);
    json_builder_set_member_name(b, "n_kv_heads"); json_builder_add_int_value(b, c->n_kv_heads);
    json_builder_set_member_name(b, "ffn_dim"); json_builder_add_int_value(b, c->ffn_dim);
    json_builder_set_member_name(b, "seq_len"); json_builder_add_int_value(b, c->seq_len);
    json_builder_set_member_name(b, "rope_theta"); json_builder_add_double_value(b, c->rope_theta);
    json_builder_set_member_name(b, "norm_eps"); json_builder_add_double_value(b, c->norm_eps);
    json_builder_set_member_name(b, "stem_layers");
    json_builder_begin_array(b);
    for (int l = 0; l < c->n_layers; l++)
        if (stem_config_is_stem(c, l)) json_builder_add_int_value(b, l);
    json_builder_end_array(b);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    return json_to_string(root, FALSE);
}

static gboolean get_int(JsonObject *o, const char *k, int *out, GError **error)
{
    JsonNode *n = json_object_get_member(o, k);
    if (!n || json_node_get_value_type(n) != G_TYPE_INT64) {
        g_set_error(error, CONFIG_ERROR, 5, "model config: '%s' missing or not an integer", k);
        return FALSE;
    }
    gint64 v = json_node_get_int(n);
    if (v < 0 || v > G_MAXINT) {
        g_set_error(error, CONFIG_ERROR, 5, "model config: '%s' out of range", k);
        return FALSE;
    }
    *out = (int)v;
    return TRUE;
}

static gboolean get_num(JsonObject *o, const char *k, float *out, GError **error)
{
    JsonNode *n = json_object_get_member(o, k);
    GType t = n ? json_node_get_value_type(n) : G_TYPE_INVALID;
    if (t != G_TYPE_DOUBLE && t != G_TYPE_INT64) {
        g_set_error(error, CONFIG_ERROR, 5, "model config: '%s' missing or not a number", k);
        return FALSE;
    }
    *out = (float)json_node_get_double(n);
    return TRUE;
}

gboolean stem_config_from_json(const char *json, StemConfig *c, GError **error)
{
    g_autoptr(JsonParser) p = json_parser_new();
    if (!json_parser_load_from_data(p, json, -1, error)) return FALSE;
    JsonNode *root = json_parser_get_root(p);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(error, CONFIG_ERROR, 5, "model config is not a JSON object");
        return FALSE;
    }
    JsonObject *o = json_node_get_object(root);
    memset(c, 0, sizeof *c);
    if (!get_int(o, "vocab", &c->vocab, error) || !get_int(o, "dim", &c->dim, error) ||
        !get_int(o, "n_layers", &c->n_layers, error) || !get_int(o, "n_heads", &c->n_heads, error) ||
        !get_int(o, "n_kv_heads", &c->n_kv_heads, error) || !get_int(o, "ffn_dim", &c->ffn_dim, error) ||
        !get_int(o, "seq_len", &c->seq_len, error) || !get_num(o, "rope_theta", &c->rope_theta, error) ||
        !get_num(o, "norm_eps", &c->norm_eps, error))
        return FALSE;
    JsonNode *sl = json_object_get_member(o, "stem_layers");
    if (!sl || !JSON_NODE_HOLDS_ARRAY(sl)) {
        g_set_error(error, CONFIG_ERROR, 5, "model config: 'stem_layers' missing or not an array");
        return FALSE;
    }
    JsonArray *a = json_node_get_array(sl);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonNode *e = json_array_get_element(a, i);
        if (json_node_get_value_type(e) != G_TYPE_INT64 || json_node_get_int(e) < 0 ||
            json_node_get_int(e) >= STEM_MAX_LAYERS || json_node_get_int(e) >= c->n_layers) {
            g_set_error(error, CONFIG_ERROR, 5, "model config: bad entry in 'stem_layers'");
            return FALSE;
        }
        c->stem_mask |= 1ull << json_node_get_int(e);
    }
    return stem_config_validate(c, error);
}
