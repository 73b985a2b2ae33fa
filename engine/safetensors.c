/* safetensors reader (memory-mapped, read in place) and atomic writer.
 *
 * Reading goes in three passes over the untrusted bytes, and no tensor pointer
 * leaves this file before all three have passed:
 *   1. the 8-byte length field against the file size and ST_MAX_HEADER_BYTES;
 *   2. a strict JSON syntax check of the header (json_check below), because
 *      json-glib 1.6 is lenient where we must not be: it recurses once per nesting
 *      level (a header of a million '[' overflows the stack), wraps integers that
 *      do not fit in 64 bits (99999999999999999999 reads as -1), reads "00012" as
 *      octal and accepts comments and single quotes; and duplicate or
 *      hash-colliding keys make it quadratic (see json_key), so those are refused;
 *   3. json-glib builds the tree, and every tensor entry is checked: dtype, shape
 *      (element count and byte size computed with overflow checks), data_offsets
 *      in range and consistent with the shape, and no two tensors overlap.
 * Tensors then point straight into the mapping, as in llama2.c's run.c. */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if G_BYTE_ORDER != G_LITTLE_ENDIAN
#error "safetensors data is little-endian and is read in place: big-endian hosts are not supported"
#endif

G_DEFINE_QUARK(stem-safetensors-error, st_error)

/* Deepest JSON nesting accepted. A safetensors header needs 3 (root object,
 * tensor entry, shape array); serde_json, which the Python library uses, stops at 128. */
#define ST_MAX_JSON_DEPTH 64
/* Tensor names and dtypes are cut to this many bytes in error messages. */
#define ST_NAME_IN_ERROR 80

/* ------------------------------------------------------------------------ */
/* dtypes */

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [ST_F32] = {"F32", 4}, [ST_BF16] = {"BF16", 2}, [ST_F16] = {"F16", 2}, [ST_I32] = {"I32", 4},
    [ST_I64] = {"I64", 8}, [ST_U8] = {"U8", 1},     [ST_F64] = {"F64", 8},
};
#define N_DTYPES ((int)G_N_ELEMENTS(dtype_info))

static gboolean dtype_valid(StDtype d) { return (int)d >= 0 && (int)d < N_DTYPES; }

size_t st_dtype_size(StDtype d) { return dtype_valid(d) ? dtype_info[d].size : 0; }

const char *st_dtype_name(StDtype d) { return dtype_valid(d) ? dtype_info[d].name : "?"; }

static gboolean dtype_from_name(const char *s, StDtype *out)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (StDtype)i;
            return TRUE;
        }
    return FALSE;
}

/* ------------------------------------------------------------------------ */
/* bf16: the upper half of an IEEE float32 */

float st_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t st_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    /* NaN: truncating could clear every payload bit left in the upper half and turn
     * it into an infinity, so keep sign and upper payload and set the quiet bit. */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    /* Round to nearest, ties to even: add 0x7fff plus the lowest kept bit. Finite
     * values past the largest bf16 carry into the exponent and become +-inf, as
     * they should; inf itself has zero low bits and stays inf. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* ------------------------------------------------------------------------ */
/* error helpers */

/* A name from the file, safe to put in a one-line message: quoted, control
 * characters escaped, cut at ST_NAME_IN_ERROR bytes (on a UTF-8 boundary; the
 * header was validated as UTF-8 before any name reaches here). */
static char *quote_name(const char *s)
{
    GString *q = g_string_new("\"");
    const char *p = s;
    while (*p) {
        if ((size_t)(p - s) >= ST_NAME_IN_ERROR) {
            g_string_append(q, "...");
            break;
        }
        const char *next = g_utf8_next_char(p);
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) g_string_append_printf(q, "\\x%02x", c);
        else if (c == '"' || c == '\\') g_string_append_printf(q, "\\%c", c);
        else g_string_append_len(q, p, next - p);
        p = next;
    }
    g_string_append_c(q, '"');
    return g_string_free(q, FALSE);
}

static gboolean fail_tensor(GError **error, const char *name, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static gboolean fail_tensor(GError **error, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *q = quote_name(name);
    g_set_error(error, ST_ERROR, ST_ERROR_TENSOR, "tensor %s: %s", q, msg);
    g_free(q);
    g_free(msg);
    return FALSE;
}

/* ------------------------------------------------------------------------ */
/* strict JSON syntax check (RFC 8259), iterative so nesting cannot overflow the stack.
 *
 * It also checks object keys, because json-glib's handling of them is quadratic
 * under attack: a duplicated key costs a scan of the object's member list, and
 * members live in a GHashTable hashed with the unseeded g_str_hash, for which
 * colliding keys are trivial to make ("aB" and "b!" hash alike, so do all their
 * concatenations). A 1 MB header of either kind took 10 s to parse. Here each
 * object's decoded keys go in a set with a per-process random hash (duplicates
 * refused: json-glib would silently keep the last), and more than
 * ST_MAX_HASH_TWINS keys of one object sharing a g_str_hash value are refused:
 * among a million honest keys the chance of even three sharing a 32-bit hash is
 * about one in ten million. */

#define ST_MAX_HASH_TWINS 8

typedef struct {
    GHashTable *names;  /* decoded key -> itself */
    GHashTable *twins;  /* g_str_hash(key) -> count */
} KeySets;

typedef struct {
    const char *p, *end, *start;
    GError **error;
    KeySets keys[ST_MAX_JSON_DEPTH]; /* per open object, created at its first key */
} JsonCheck;

static guint64 hash_seed(void)
{
    static gsize seed = 0;
    if (g_once_init_enter(&seed)) {
        guint64 s = ((guint64)g_random_int() << 32 | g_random_int()) | 1u;
        g_once_init_leave(&seed, (gsize)s);
    }
    return (guint64)seed;
}

/* FNV-1a from a random basis: colliding keys cannot be prepared in advance. */
static guint seeded_str_hash(gconstpointer key)
{
    guint64 h = hash_seed() ^ 0xcbf29ce484222325ull;
    for (const unsigned char *p = key; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return (guint)(h ^ (h >> 32));
}

static guint seeded_uint_hash(gconstpointer key)
{
    guint64 h = ((guint64)GPOINTER_TO_UINT(key) ^ hash_seed()) * 0x9e3779b97f4a7c15ull;
    return (guint)(h >> 32);
}

static gboolean json_fail(JsonCheck *c, const char *what)
{
    g_set_error(c->error, ST_ERROR, ST_ERROR_HEADER, "header is not valid JSON: %s at byte %td", what,
                c->p - c->start);
    return FALSE;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = g_ascii_xdigit_value(p[i]);
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* c->p at the opening quote; leaves it after the closing one. */
static gboolean json_string(JsonCheck *c)
{
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            c->p++;
            return TRUE;
        }
        if (ch < 0x20) return json_fail(c, "control character in string");
        if (ch != '\\') {
            c->p++;
            continue;
        }
        if (c->end - c->p < 2) break;
        char e = c->p[1];
        if (e != '\0' && strchr("\"\\/bfnrt", e)) {
            c->p += 2;
            continue;
        }
        if (e != 'u') return json_fail(c, "bad escape in string");
        if (c->end - c->p < 6 || hex4(c->p + 2) < 0) return json_fail(c, "bad \\u escape");
        int u = hex4(c->p + 2);
        /* \u0000 would cut the C string json-glib hands back (two different names
         * could then read the same); surrogates must come in pairs. */
        if (u == 0) return json_fail(c, "\\u0000 in string");
        if (u >= 0xdc00 && u <= 0xdfff) return json_fail(c, "unpaired surrogate escape");
        if (u >= 0xd800 && u <= 0xdbff) {
            int lo = (c->end - c->p >= 12 && c->p[6] == '\\' && c->p[7] == 'u') ? hex4(c->p + 8) : -1;
            if (lo < 0xdc00 || lo > 0xdfff) return json_fail(c, "unpaired surrogate escape");
            c->p += 12;
        } else {
            c->p += 6;
        }
    }
    return json_fail(c, "unterminated string");
}

/* The text of a string json_string accepted, [s, e) between the quotes, unescaped. */
static char *json_unescape(const char *s, const char *e)
{
    GString *g = g_string_sized_new((gsize)(e - s));
    while (s < e) {
        const char *bs = memchr(s, '\\', (size_t)(e - s));
        if (!bs) bs = e;
        g_string_append_len(g, s, bs - s);
        s = bs;
        if (s == e) break;
        char c = s[1];
        if (c != 'u') {
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            g_string_append_c(g, to[strchr(from, c) - from]);
            s += 2;
            continue;
        }
        gunichar u = (gunichar)hex4(s + 2);
        s += 6;
        if (u >= 0xd800 && u <= 0xdbff) {
            u = 0x10000 + ((u - 0xd800) << 10) + ((gunichar)hex4(s + 2) - 0xdc00);
            s += 6;
        }
        g_string_append_unichar(g, u);
    }
    return g_string_free(g, FALSE);
}

/* [s, e): a key of the object at depth (1-based) */
static gboolean json_key(JsonCheck *c, int depth, const char *s, const char *e)
{
    KeySets *k = &c->keys[depth - 1];
    if (!k->names) {
        k->names = g_hash_table_new_full(seeded_str_hash, g_str_equal, g_free, NULL);
        k->twins = g_hash_table_new(seeded_uint_hash, g_direct_equal);
    }
    char *key = json_unescape(s, e);
    if (g_hash_table_contains(k->names, key)) {
        char *q = quote_name(key);
        g_set_error(c->error, ST_ERROR, ST_ERROR_HEADER, "header has duplicate key %s", q);
        g_free(q);
        g_free(key);
        return FALSE;
    }
    gpointer h = GUINT_TO_POINTER(g_str_hash(key));
    guint twins = GPOINTER_TO_UINT(g_hash_table_lookup(k->twins, h)) + 1;
    g_hash_table_insert(k->twins, h, GUINT_TO_POINTER(twins));
    g_hash_table_add(k->names, key);
    if (twins > ST_MAX_HASH_TWINS) {
        g_set_error(c->error, ST_ERROR, ST_ERROR_HEADER,
                    "header has more than %d keys in one object with the same g_str_hash value (crafted to slow the "
                    "parser down)",
                    ST_MAX_HASH_TWINS);
        return FALSE;
    }
    return TRUE;
}

static void json_drop_keys(JsonCheck *c, int depth)
{
    KeySets *k = &c->keys[depth - 1];
    g_clear_pointer(&k->names, g_hash_table_destroy);
    g_clear_pointer(&k->twins, g_hash_table_destroy);
}

/* c->p at '-' or a digit. Integers must fit in int64 (json-glib would wrap them). */
static gboolean json_number(JsonCheck *c)
{
    const char *s = c->p;
    gboolean neg = FALSE, integer = TRUE;
    if (*c->p == '-') {
        neg = TRUE;
        c->p++;
    }
    if (c->p >= c->end || !g_ascii_isdigit(*c->p)) return json_fail(c, "bad number");
    uint64_t mag = 0;
    gboolean overflow = FALSE;
    if (*c->p == '0') {
        c->p++;
        if (c->p < c->end && g_ascii_isdigit(*c->p)) return json_fail(c, "number with a leading zero");
    } else {
        while (c->p < c->end && g_ascii_isdigit(*c->p)) {
            if (__builtin_mul_overflow(mag, 10u, &mag) || __builtin_add_overflow(mag, (uint64_t)(*c->p - '0'), &mag))
                overflow = TRUE;
            c->p++;
        }
    }
    if (c->p < c->end && *c->p == '.') {
        integer = FALSE;
        c->p++;
        if (c->p >= c->end || !g_ascii_isdigit(*c->p)) return json_fail(c, "bad number");
        while (c->p < c->end && g_ascii_isdigit(*c->p)) c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        integer = FALSE;
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
        if (c->p >= c->end || !g_ascii_isdigit(*c->p)) return json_fail(c, "bad number");
        while (c->p < c->end && g_ascii_isdigit(*c->p)) c->p++;
    }
    if (integer && (overflow || mag > (uint64_t)INT64_MAX + (neg ? 1u : 0u))) {
        c->p = s; /* report where the number starts */
        return json_fail(c, "integer does not fit in 64 bits");
    }
    return TRUE;
}

static gboolean json_literal(JsonCheck *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return json_fail(c, "unexpected character");
    c->p += n;
    return TRUE;
}

static gboolean json_check_run(JsonCheck *c)
{
    char stack[ST_MAX_JSON_DEPTH]; /* 'o' object, 'a' array */
    int depth = 0;
    enum { VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, COLON, COMMA_OR_CLOSE, DONE } state = VALUE;

    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
    if (c->p >= c->end || *c->p != '{') {
        g_set_error(c->error, ST_ERROR, ST_ERROR_HEADER, "header is not a JSON object");
        return FALSE;
    }
    for (;;) {
        while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
        if (c->p >= c->end) return state == DONE ? TRUE : json_fail(c, "unexpected end");
        char ch = *c->p;
        gboolean closed = FALSE, value_done = FALSE;
        switch (state) {
        case DONE:
            return json_fail(c, "trailing characters after the object");
        case VALUE_OR_CLOSE:
            if (ch == ']') {
                closed = TRUE;
                break;
            }
            /* fall through */
        case VALUE:
            if (ch == '{' || ch == '[') {
                if (depth == ST_MAX_JSON_DEPTH) return json_fail(c, "nesting too deep");
                stack[depth++] = ch == '{' ? 'o' : 'a';
                c->p++;
                state = ch == '{' ? KEY_OR_CLOSE : VALUE_OR_CLOSE;
                break;
            }
            if (ch == '"') {
                if (!json_string(c)) return FALSE;
            } else if (ch == '-' || g_ascii_isdigit(ch)) {
                if (!json_number(c)) return FALSE;
            } else if (ch == 't') {
                if (!json_literal(c, "true")) return FALSE;
            } else if (ch == 'f') {
                if (!json_literal(c, "false")) return FALSE;
            } else if (ch == 'n') {
                if (!json_literal(c, "null")) return FALSE;
            } else {
                return json_fail(c, "unexpected character");
            }
            value_done = TRUE;
            break;
        case KEY_OR_CLOSE:
            if (ch == '}') {
                closed = TRUE;
                break;
            }
            /* fall through */
        case KEY: {
            if (ch != '"') return json_fail(c, "expected a quoted key");
            const char *s = c->p + 1;
            if (!json_string(c)) return FALSE;
            if (!json_key(c, depth, s, c->p - 1)) return FALSE;
            state = COLON;
            break;
        }
        case COLON:
            if (ch != ':') return json_fail(c, "expected ':'");
            c->p++;
            state = VALUE;
            break;
        case COMMA_OR_CLOSE:
            if (ch == ',') {
                c->p++;
                state = stack[depth - 1] == 'o' ? KEY : VALUE;
            } else if (ch == (stack[depth - 1] == 'o' ? '}' : ']')) {
                closed = TRUE;
            } else {
                return json_fail(c, "expected ',' or a closing bracket");
            }
            break;
        }
        if (closed) {
            c->p++;
            json_drop_keys(c, depth);
            depth--;
            value_done = TRUE;
        }
        if (value_done) state = depth == 0 ? DONE : COMMA_OR_CLOSE;
    }
}

/* The whole header must be one JSON object (trailing whitespace allowed: the
 * format pads with spaces). The caller has checked UTF-8 already. */
static gboolean json_check(const char *text, size_t len, GError **error)
{
    JsonCheck c = {.p = text, .end = text + len, .start = text, .error = error};
    gboolean ok = json_check_run(&c);
    for (int d = 1; d <= ST_MAX_JSON_DEPTH; d++) json_drop_keys(&c, d);
    return ok;
}

gboolean st_json_check(const char *text, size_t len, GError **error)
{
    if (!g_utf8_validate(text, (gssize)len, NULL)) {
        g_set_error(error, ST_ERROR, ST_ERROR_HEADER, "JSON is not valid UTF-8");
        return FALSE;
    }
    return json_check(text, len, error);
}

/* ------------------------------------------------------------------------ */
/* reader */

struct StFile {
    GMappedFile *mapped;    /* NULL for st_open_buffer */
    const uint8_t *base;    /* whole file */
    size_t len;
    StTensor *tensors;      /* header order */
    int n_tensors;
    GHashTable *by_name;    /* name -> StTensor* (borrowed) */
    char **meta_keys;       /* header order, n_meta each */
    char **meta_values;
    int n_meta;
    GHashTable *meta;       /* key -> value (borrowed from the arrays) */
};

static gboolean node_int(JsonNode *n, int64_t *out)
{
    if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64) return FALSE;
    *out = json_node_get_int(n);
    return TRUE;
}

static const char *node_string(JsonNode *n)
{
    if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) return NULL;
    return json_node_get_string(n);
}

typedef struct {
    uint64_t begin, end;
    int index;
} Span;

static int span_cmp(const void *a, const void *b)
{
    const Span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* One tensor entry of the header: fills t (data left NULL) and its span. */
static gboolean parse_tensor(const char *name, JsonNode *node, uint64_t data_len, StTensor *t, Span *span,
                             GError **error)
{
    if (!JSON_NODE_HOLDS_OBJECT(node)) return fail_tensor(error, name, "entry is not a JSON object");
    JsonObject *o = json_node_get_object(node);
    /* Other members are ignored, as the Python library does. */

    const char *dtype = node_string(json_object_get_member(o, "dtype"));
    if (!dtype) return fail_tensor(error, name, "\"dtype\" missing or not a string");
    if (!dtype_from_name(dtype, &t->dtype)) {
        char *q = quote_name(dtype);
        fail_tensor(error, name, "unsupported dtype %s (F32, BF16, F16, I32, I64, U8, F64 are read)", q);
        g_free(q);
        return FALSE;
    }

    JsonNode *shape_node = json_object_get_member(o, "shape");
    if (!shape_node || !JSON_NODE_HOLDS_ARRAY(shape_node))
        return fail_tensor(error, name, "\"shape\" missing or not an array");
    JsonArray *shape = json_node_get_array(shape_node);
    guint ndim = json_array_get_length(shape);
    if (ndim > ST_MAX_DIMS)
        return fail_tensor(error, name, "shape has %u dimensions, at most %d are supported", ndim, ST_MAX_DIMS);
    t->ndim = (int)ndim;
    int64_t numel = 1;
    for (guint i = 0; i < ndim; i++) {
        int64_t d;
        if (!node_int(json_array_get_element(shape, i), &d) || d < 0)
            return fail_tensor(error, name, "shape[%u] is not a non-negative integer", i);
        t->shape[i] = d;
        if (__builtin_mul_overflow(numel, d, &numel))
            return fail_tensor(error, name, "shape element count overflows 64 bits");
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow((uint64_t)numel, (uint64_t)dtype_info[t->dtype].size, &nbytes) ||
        nbytes > (uint64_t)SIZE_MAX)
        return fail_tensor(error, name, "shape byte size overflows");
    t->nbytes = (size_t)nbytes;

    JsonNode *off_node = json_object_get_member(o, "data_offsets");
    int64_t b, e;
    if (!off_node || !JSON_NODE_HOLDS_ARRAY(off_node) || json_array_get_length(json_node_get_array(off_node)) != 2 ||
        !node_int(json_array_get_element(json_node_get_array(off_node), 0), &b) ||
        !node_int(json_array_get_element(json_node_get_array(off_node), 1), &e) || b < 0 || e < 0)
        return fail_tensor(error, name, "\"data_offsets\" must be an array of two non-negative integers");
    if (e < b) return fail_tensor(error, name, "data_offsets end %" G_GINT64_FORMAT " is before begin %" G_GINT64_FORMAT, e, b);
    if ((uint64_t)e > data_len)
        return fail_tensor(error, name,
                           "data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] run past the %" G_GUINT64_FORMAT
                           "-byte data section",
                           b, e, data_len);
    if ((uint64_t)(e - b) != nbytes)
        return fail_tensor(error, name,
                           "data_offsets span %" G_GINT64_FORMAT " bytes but %s shape needs %" G_GUINT64_FORMAT, e - b,
                           dtype_info[t->dtype].name, nbytes);
    span->begin = (uint64_t)b;
    span->end = (uint64_t)e;
    return TRUE;
}

static gboolean parse_metadata(StFile *f, JsonNode *node, GError **error)
{
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_set_error(error, ST_ERROR, ST_ERROR_METADATA, "__metadata__ is not a JSON object");
        return FALSE;
    }
    JsonObject *o = json_node_get_object(node);
    GList *keys = json_object_get_members(o);
    guint n = g_list_length(keys);
    f->meta_keys = g_new0(char *, n + 1);
    f->meta_values = g_new0(char *, n + 1);
    for (GList *l = keys; l; l = l->next) {
        const char *v = node_string(json_object_get_member(o, l->data));
        if (!v) {
            char *q = quote_name(l->data);
            g_set_error(error, ST_ERROR, ST_ERROR_METADATA, "__metadata__ %s: value is not a string", q);
            g_free(q);
            g_list_free(keys);
            return FALSE;
        }
        f->meta_keys[f->n_meta] = g_strdup(l->data);
        f->meta_values[f->n_meta] = g_strdup(v);
        g_hash_table_insert(f->meta, f->meta_keys[f->n_meta], f->meta_values[f->n_meta]);
        f->n_meta++;
    }
    g_list_free(keys);
    return TRUE;
}

/* Parse and check the JSON header; fills f->tensors (data pointers last). */
static gboolean parse_header(StFile *f, const char *hdr, size_t hdr_len, const uint8_t *data, uint64_t data_len,
                             GError **error)
{
    if (!g_utf8_validate_len(hdr, hdr_len, NULL)) {
        /* also catches NUL bytes, which would cut the text for json-glib */
        g_set_error(error, ST_ERROR, ST_ERROR_HEADER, "header is not valid UTF-8");
        return FALSE;
    }
    if (!json_check(hdr, hdr_len, error)) return FALSE;

    gboolean ok = FALSE;
    JsonParser *parser = json_parser_new_immutable();
    GError *jerr = NULL;
    GList *members = NULL;
    Span *spans = NULL;

    if (!json_parser_load_from_data(parser, hdr, (gssize)hdr_len, &jerr)) {
        g_set_error(error, ST_ERROR, ST_ERROR_HEADER, "header is not valid JSON: %s", jerr->message);
        g_error_free(jerr);
        goto out;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(error, ST_ERROR, ST_ERROR_HEADER, "header is not a JSON object");
        goto out;
    }
    JsonObject *obj = json_node_get_object(root);
    members = json_object_get_members(obj); /* insertion (file) order */
    guint n = g_list_length(members);
    f->tensors = g_new0(StTensor, n ? n : 1);
    spans = g_new(Span, n ? n : 1);
    for (GList *l = members; l; l = l->next) {
        const char *name = l->data;
        JsonNode *node = json_object_get_member(obj, name);
        if (strcmp(name, "__metadata__") == 0) {
            if (!parse_metadata(f, node, error)) goto out;
            continue;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        if (!parse_tensor(name, node, data_len, t, &spans[f->n_tensors], error)) goto out;
        t->name = g_strdup(name);
        spans[f->n_tensors].index = f->n_tensors;
        f->n_tensors++;
    }

    /* Sorted by begin, no overlap means each begins at or after the previous end
     * (ends are then non-decreasing, so neighbours suffice). Gaps and trailing
     * bytes are allowed: they are harmless to read in place. */
    qsort(spans, (size_t)f->n_tensors, sizeof *spans, span_cmp);
    for (int i = 1; i < f->n_tensors; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            char *qa = quote_name(f->tensors[spans[i - 1].index].name);
            char *qb = quote_name(f->tensors[spans[i].index].name);
            g_set_error(error, ST_ERROR, ST_ERROR_TENSOR,
                        "tensors %s [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ") and %s [%" G_GUINT64_FORMAT
                        ", %" G_GUINT64_FORMAT ") overlap",
                        qa, spans[i - 1].begin, spans[i - 1].end, qb, spans[i].begin, spans[i].end);
            g_free(qa);
            g_free(qb);
            goto out;
        }
    }
    for (int i = 0; i < f->n_tensors; i++) {
        f->tensors[spans[i].index].data = data + spans[i].begin;
        g_hash_table_insert(f->by_name, f->tensors[spans[i].index].name, &f->tensors[spans[i].index]);
    }
    ok = TRUE;
out:
    g_free(spans);
    g_list_free(members);
    g_object_unref(parser);
    return ok;
}

static StFile *parse_file(const uint8_t *buf, size_t len, GError **error)
{
    if (len < 8) {
        g_set_error(error, ST_ERROR, ST_ERROR_HEADER, "file is %zu bytes, too short for the 8-byte header length", len);
        return NULL;
    }
    uint64_t n;
    memcpy(&n, buf, 8);
    n = GUINT64_FROM_LE(n);
    if (n > ST_MAX_HEADER_BYTES) {
        g_set_error(error, ST_ERROR, ST_ERROR_HEADER, "header length %" G_GUINT64_FORMAT " exceeds the %u-byte limit", n,
                    ST_MAX_HEADER_BYTES);
        return NULL;
    }
    if (n > len - 8) {
        g_set_error(error, ST_ERROR, ST_ERROR_HEADER,
                    "header length %" G_GUINT64_FORMAT " is larger than the %zu bytes after the length field", n,
                    len - 8);
        return NULL;
    }
    StFile *f = g_new0(StFile, 1);
    f->base = buf;
    f->len = len;
    f->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    f->meta = g_hash_table_new(g_str_hash, g_str_equal);
    if (!parse_header(f, (const char *)buf + 8, (size_t)n, buf + 8 + n, len - 8 - n, error)) {
        st_close(f);
        return NULL;
    }
    return f;
}

StFile *st_open_buffer(const void *buf, size_t len, GError **error)
{
    if (!buf) len = 0;
    return parse_file(buf, len, error);
}

StFile *st_open(const char *path, GError **error)
{
    GError *err = NULL;
    /* Read-only private mapping: pages come from the page cache on first touch and
     * are never copied. (If another process truncates the file while it is mapped,
     * touching the lost pages raises SIGBUS; model files are replaced by rename,
     * never truncated in place, so a mapped file keeps its inode.) */
    GMappedFile *mf = g_mapped_file_new(path, FALSE, &err);
    if (!mf) {
        g_set_error(error, ST_ERROR, ST_ERROR_IO, "%s", err->message);
        g_error_free(err);
        return NULL;
    }
    StFile *f = parse_file((const uint8_t *)g_mapped_file_get_contents(mf), g_mapped_file_get_length(mf), error);
    if (!f) {
        g_prefix_error(error, "%s: ", path);
        g_mapped_file_unref(mf);
        return NULL;
    }
    f->mapped = mf;
    return f;
}

void st_close(StFile *f)
{
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) g_free(f->tensors[i].name);
    g_free(f->tensors);
    g_strfreev(f->meta_keys);
    g_strfreev(f->meta_values);
    g_clear_pointer(&f->by_name, g_hash_table_destroy);
    g_clear_pointer(&f->meta, g_hash_table_destroy);
    g_clear_pointer(&f->mapped, g_mapped_file_unref);
    g_free(f);
}

int st_n_tensors(const StFile *f) { return f->n_tensors; }

const StTensor *st_tensor(const StFile *f, int i) { return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL; }

const StTensor *st_find(const StFile *f, const char *name) { return g_hash_table_lookup(f->by_name, name); }

const char *st_metadata(const StFile *f, const char *key) { return g_hash_table_lookup(f->meta, key); }

int st_n_metadata(const StFile *f) { return f->n_meta; }

gboolean st_metadata_nth(const StFile *f, int i, const char **key, const char **value)
{
    if (i < 0 || i >= f->n_meta) return FALSE;
    if (key) *key = f->meta_keys[i];
    if (value) *value = f->meta_values[i];
    return TRUE;
}

const void *st_file_data(const StFile *f, size_t *len)
{
    if (len) *len = f->len;
    return f->base;
}

int64_t st_tensor_numel(const StTensor *t)
{
    int64_t n = 1; /* cannot overflow: checked when the file was opened */
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

gboolean st_tensor_aligned(const StTensor *t, size_t align)
{
    return align == 0 || (uintptr_t)t->data % align == 0;
}

/* ------------------------------------------------------------------------ */
/* writer */

typedef struct {
    char *name;
    StDtype dtype; /* dtype in the file */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* caller's, read at write time */
    size_t nbytes;    /* bytes in the file */
    gboolean f32_to_bf16;
    uint64_t begin; /* offset in the data section, set by st_writer_write */
} WEntry;

struct StWriter {
    GArray *entries;     /* WEntry, insertion order */
    GHashTable *names;   /* set of tensor names */
    GPtrArray *meta_keys; /* insertion order */
    GHashTable *meta;    /* key -> value (owned) */
    char *error;         /* first bad call, reported by st_writer_write */
};

StWriter *st_writer_new(void)
{
    StWriter *w = g_new0(StWriter, 1);
    w->entries = g_array_new(FALSE, TRUE, sizeof(WEntry));
    w->names = g_hash_table_new(g_str_hash, g_str_equal);
    w->meta_keys = g_ptr_array_new();
    w->meta = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return w;
}

void st_writer_free(StWriter *w)
{
    if (!w) return;
    for (guint i = 0; i < w->entries->len; i++) g_free(g_array_index(w->entries, WEntry, i).name);
    g_array_free(w->entries, TRUE);
    g_hash_table_destroy(w->names);
    g_ptr_array_free(w->meta_keys, TRUE); /* keys are owned by w->meta */
    g_hash_table_destroy(w->meta);
    g_free(w->error);
    g_free(w);
}

static void writer_fail(StWriter *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void writer_fail(StWriter *w, const char *fmt, ...)
{
    if (w->error) return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    w->error = g_strdup_vprintf(fmt, ap);
    va_end(ap);
}

/* The add functions cannot fail (the API returns void): a bad call is recorded
 * and st_writer_write refuses to write anything. */
static void writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data,
                       gboolean f32_to_bf16)
{
    if (!name || !g_utf8_validate(name, -1, NULL)) {
        writer_fail(w, "tensor name is NULL or not UTF-8");
        return;
    }
    char *q = quote_name(name);
    WEntry e = {.dtype = dtype, .ndim = ndim, .data = data, .f32_to_bf16 = f32_to_bf16};
    int64_t numel = 1;
    uint64_t nbytes = 0;
    if (strcmp(name, "__metadata__") == 0) {
        writer_fail(w, "tensor %s: reserved name", q);
        goto out;
    }
    if (g_hash_table_contains(w->names, name)) {
        writer_fail(w, "tensor %s: added twice", q);
        goto out;
    }
    if (!dtype_valid(dtype)) {
        writer_fail(w, "tensor %s: invalid dtype %d", q, (int)dtype);
        goto out;
    }
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape)) {
        writer_fail(w, "tensor %s: %d dimensions (0 to %d supported)", q, ndim, ST_MAX_DIMS);
        goto out;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, shape[i], &numel)) {
            writer_fail(w, "tensor %s: shape[%d] is negative or the element count overflows", q, i);
            goto out;
        }
        e.shape[i] = shape[i];
    }
    if (__builtin_mul_overflow((uint64_t)numel, (uint64_t)dtype_info[dtype].size, &nbytes) || nbytes > SIZE_MAX) {
        writer_fail(w, "tensor %s: byte size overflows", q);
        goto out;
    }
    if (nbytes > 0 && !data) {
        writer_fail(w, "tensor %s: data is NULL", q);
        goto out;
    }
    e.nbytes = (size_t)nbytes;
    e.name = g_strdup(name);
    g_array_append_val(w->entries, e);
    g_hash_table_add(w->names, e.name);
out:
    g_free(q);
}

void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data)
{
    writer_add(w, name, dtype, ndim, shape, data, FALSE);
}

void st_writer_add_f32_as_bf16(StWriter *w, const char *name, int ndim, const int64_t *shape, const float *data)
{
    writer_add(w, name, ST_BF16, ndim, shape, data, TRUE);
}

void st_writer_set_metadata(StWriter *w, const char *key, const char *value)
{
    if (!key || !value || !g_utf8_validate(key, -1, NULL) || !g_utf8_validate(value, -1, NULL)) {
        writer_fail(w, "metadata key or value is NULL or not UTF-8");
        return;
    }
    if (!g_hash_table_contains(w->meta, key)) {
        char *k = g_strdup(key);
        g_ptr_array_add(w->meta_keys, k);
        g_hash_table_insert(w->meta, k, g_strdup(value));
    } else {
        g_hash_table_insert(w->meta, g_strdup(key), g_strdup(value)); /* replaces value, keeps the old key */
    }
}

static int entry_layout_cmp(const void *a, const void *b)
{
    const WEntry *x = *(const WEntry *const *)a, *y = *(const WEntry *const *)b;
    size_t sx = dtype_info[x->dtype].size, sy = dtype_info[y->dtype].size;
    if (sx != sy) return sx > sy ? -1 : 1;
    return x < y ? -1 : x > y; /* stable: insertion order within a size */
}

static char *build_header(StWriter *w, size_t *len)
{
    JsonBuilder *b = json_builder_new_immutable();
    json_builder_begin_object(b);
    for (guint i = 0; i < w->entries->len; i++) {
        const WEntry *e = &g_array_index(w->entries, WEntry, i);
        json_builder_set_member_name(b, e->name);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "dtype");
        json_builder_add_string_value(b, dtype_info[e->dtype].name);
        json_builder_set_member_name(b, "shape");
        json_builder_begin_array(b);
        for (int k = 0; k < e->ndim; k++) json_builder_add_int_value(b, e->shape[k]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "data_offsets");
        json_builder_begin_array(b);
        json_builder_add_int_value(b, (gint64)e->begin);
        json_builder_add_int_value(b, (gint64)(e->begin + e->nbytes));
        json_builder_end_array(b);
        json_builder_end_object(b);
    }
    if (w->meta_keys->len > 0) {
        json_builder_set_member_name(b, "__metadata__");
        json_builder_begin_object(b);
        for (guint i = 0; i < w->meta_keys->len; i++) {
            const char *k = g_ptr_array_index(w->meta_keys, i);
            json_builder_set_member_name(b, k);
            json_builder_add_string_value(b, g_hash_table_lookup(w->meta, k));
        }
        json_builder_end_object(b);
    }
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    JsonGenerator *g = json_generator_new();
    json_generator_set_root(g, root);
    gsize n = 0;
    char *text = json_generator_to_data(g, &n);
    *len = n;
    g_object_unref(g);
    json_node_unref(root);
    g_object_unref(b);
    return text;
}

static gboolean write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return FALSE;
        }
        p += k;
        n -= (size_t)k;
    }
    return TRUE;
}

static gboolean write_entry(int fd, const WEntry *e)
{
    if (!e->f32_to_bf16) return write_all(fd, e->data, e->nbytes);
    uint16_t chunk[16384];
    const float *src = e->data;
    size_t n = e->nbytes / 2;
    for (size_t i = 0; i < n;) {
        size_t m = MIN(n - i, G_N_ELEMENTS(chunk));
        for (size_t k = 0; k < m; k++) chunk[k] = GUINT16_TO_LE(st_f32_to_bf16(src[i + k]));
        if (!write_all(fd, chunk, m * 2)) return FALSE;
        i += m;
    }
    return TRUE;
}

gboolean st_writer_write(StWriter *w, const char *path, GError **error)
{
    if (w->error) {
        g_set_error(error, ST_ERROR, ST_ERROR_INVALID, "%s: not written: %s", path, w->error);
        return FALSE;
    }
    /* Layout. The header is padded so the data section starts at a multiple of 64;
     * the tensors then follow back to back with no gaps, because the Python
     * `safetensors` library (and so every tool built on it) refuses a file whose
     * data_offsets do not tile the data section exactly. Padding each tensor to 64
     * would break that, so instead the data is ordered by element size, largest
     * first (stable, so insertion order within a size): every tensor's size is then
     * a multiple of the next one's element size, and each tensor starts aligned to
     * its own element size (F32 on 4 bytes, F64/I64 on 8) whatever the shapes. The
     * header still lists the tensors in insertion order. */
    guint n = w->entries->len;
    WEntry **order = g_new(WEntry *, n ? n : 1);
    for (guint i = 0; i < n; i++) order[i] = &g_array_index(w->entries, WEntry, i);
    qsort(order, n, sizeof *order, entry_layout_cmp);
    uint64_t off = 0;
    for (guint i = 0; i < n; i++) {
        order[i]->begin = off;
        off += order[i]->nbytes;
    }

    size_t json_len;
    char *json = build_header(w, &json_len);
    size_t hdr_len = ((8 + json_len + 63) / 64) * 64 - 8;
    char *hdr = g_malloc(8 + hdr_len);
    uint64_t le = GUINT64_TO_LE((uint64_t)hdr_len);
    memcpy(hdr, &le, 8);
    memcpy(hdr + 8, json, json_len);
    memset(hdr + 8 + json_len, ' ', hdr_len - json_len);
    g_free(json);

    /* Temporary file beside the target (same filesystem, so rename is atomic),
     * fsync'ed before the rename: after a crash the target is the old file or the
     * new one, never a prefix of the new one. */
    char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
    gboolean ok = FALSE, created = FALSE;
    const char *step = "create temporary file";
    int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) goto fail;
    created = TRUE;
    step = "write";
    if (!write_all(fd, hdr, 8 + hdr_len)) goto fail;
    for (guint i = 0; i < n; i++)
        if (!write_entry(fd, order[i])) goto fail;
    step = "fsync";
    if (fsync(fd) != 0) goto fail;
    step = "close";
    int rc = close(fd);
    fd = -1;
    if (rc != 0) goto fail;
    step = "rename";
    if (rename(tmp, path) != 0) goto fail;
    /* Make the rename itself durable; best effort (some filesystems refuse). */
    char *dir = g_path_get_dirname(path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    g_free(dir);
    ok = TRUE;
    goto out;
fail:;
    int saved = errno;
    if (fd >= 0) close(fd);
    if (created) g_unlink(tmp);
    g_set_error(error, ST_ERROR, ST_ERROR_IO, "%s: %s failed: %s", path, step, g_strerror(saved));
out:
    g_free(tmp);
    g_free(hdr);
    g_free(order);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* hashing */

char *st_sha256_file(const char *path, GError **error)
{
    int fd = g_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        int saved = errno;
        g_set_error(error, ST_ERROR, ST_ERROR_IO, "%s: open failed: %s", path, g_strerror(saved));
        return NULL;
    }
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = g_malloc(CHUNK);
    GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
    char *hex = NULL;
    for (;;) {
        ssize_t k = read(fd, buf, CHUNK);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int saved = errno;
            g_set_error(error, ST_ERROR, ST_ERROR_IO, "%s: read failed: %s", path, g_strerror(saved));
            goto out;
        }
        if (k == 0) break;
        g_checksum_update(sum, buf, (gssize)k);
    }
    hex = g_strdup(g_checksum_get_string(sum));
out:
    g_checksum_free(sum);
    g_free(buf);
    close(fd);
    return hex;
}
