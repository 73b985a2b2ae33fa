/* safetensors reader/writer tests: round trip, bf16 rounding, atomic write,
 * layout compatible with the Python library, and a table of hostile inputs
 * that must each be refused with a one-line GError (never a crash).
 *
 * `test_safetensors --write-sample FILE` writes the fixed sample file that
 * check_layout.py parses independently with Python's json + struct + numpy. */
#include "engine/safetensors.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* helpers */

static char *make_tmpdir(void)
{
    GError *err = NULL;
    char *dir = g_dir_make_tmp("stem-st-XXXXXX", &err);
    g_assert_no_error(err);
    return dir;
}

static void rm_rf(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (d) {
        const char *n;
        while ((n = g_dir_read_name(d))) {
            char *p = g_build_filename(dir, n, NULL);
            g_unlink(p);
            g_free(p);
        }
        g_dir_close(d);
    }
    g_rmdir(dir);
}

static int count_entries(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    int n = 0;
    while (g_dir_read_name(d)) n++;
    g_dir_close(d);
    return n;
}

static uint64_t header_len_of(const void *buf)
{
    uint64_t n;
    memcpy(&n, buf, 8);
    return GUINT64_FROM_LE(n);
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------------------ */
/* bf16 */

static void test_bf16_exact(void)
{
    g_assert_cmphex(st_f32_to_bf16(0.0f), ==, 0x0000);
    g_assert_cmphex(st_f32_to_bf16(-0.0f), ==, 0x8000);
    g_assert_cmphex(st_f32_to_bf16(1.0f), ==, 0x3f80);
    g_assert_cmphex(st_f32_to_bf16(-2.0f), ==, 0xc000);
    g_assert_cmphex(st_f32_to_bf16(0.5f), ==, 0x3f00);
    g_assert_cmphex(st_f32_to_bf16(3.140625f), ==, 0x4049); /* exactly representable */
    g_assert_cmpfloat(st_bf16_to_f32(0x3f80), ==, 1.0f);
    g_assert_cmpfloat(st_bf16_to_f32(0xc000), ==, -2.0f);
    g_assert_cmpfloat(st_bf16_to_f32(0x4049), ==, 3.140625f);
    /* every bf16 value survives bf16 -> f32 -> bf16 (NaN stays a NaN) */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = st_bf16_to_f32((uint16_t)h);
        uint16_t back = st_f32_to_bf16(f);
        if (isnan(f)) g_assert_true(isnan(st_bf16_to_f32(back)));
        else g_assert_cmphex(back, ==, h);
    }
}

static void test_bf16_rounding(void)
{
    /* 1 + 2^-8 is halfway between 0x3f80 and 0x3f81: ties go to even (0x3f80) */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x3f808000)), ==, 0x3f80);
    /* halfway between 0x3f81 (odd) and 0x3f82: up to even */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x3f818000)), ==, 0x3f82);
    /* just above / below the halfway point */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x3f808001)), ==, 0x3f81);
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x3f807fff)), ==, 0x3f80);
    /* negative values round on magnitude */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0xbf818000)), ==, 0xbf82);
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0xbf808001)), ==, 0xbf81);
    /* carry through the mantissa into the exponent: 1.99999 -> 2.0 */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x3fffffff)), ==, 0x4000);
    /* subnormals round the same way */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x00008000)), ==, 0x0000);
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x00018000)), ==, 0x0002);
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x00000001)), ==, 0x0000);
    /* 0.1f = 0x3dcccccd -> 0x3dcd (round up: low half 0xcccd > 0x8000) */
    g_assert_cmphex(st_f32_to_bf16(0.1f), ==, 0x3dcd);
}

static void test_bf16_special(void)
{
    g_assert_cmphex(st_f32_to_bf16(INFINITY), ==, 0x7f80);
    g_assert_cmphex(st_f32_to_bf16(-INFINITY), ==, 0xff80);
    /* the largest float is past the largest bf16 halfway point: overflows to inf */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x7f7fffff)), ==, 0x7f80);
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0xff7fffff)), ==, 0xff80);
    /* largest bf16 itself stays finite */
    g_assert_cmphex(st_f32_to_bf16(bits_f32(0x7f7f0000)), ==, 0x7f7f);
    g_assert_true(isinf(st_bf16_to_f32(0x7f80)));
    /* NaNs stay NaN, keep their sign, including ones whose payload is only in the
     * low 16 bits (truncation would make those infinities) */
    uint32_t nans[] = {0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0x7f80ffff, 0x7fbfffff};
    for (size_t i = 0; i < G_N_ELEMENTS(nans); i++) {
        uint16_t h = st_f32_to_bf16(bits_f32(nans[i]));
        g_assert_true(isnan(st_bf16_to_f32(h)));
        g_assert_cmpuint(h >> 15, ==, nans[i] >> 31);
    }
    g_assert_cmphex(st_f32_to_bf16(NAN) & 0x7fff, ==, 0x7fc0);
}

/* ------------------------------------------------------------------------ */
/* round trip */

typedef struct {
    float f32[3 * 5];
    float bf[7];
    uint16_t f16[6];
    int32_t i32[4];
    int64_t i64[3];
    uint8_t u8[5];
    double f64[4];
    float scalar;
    char *big;
} Sample;

static void sample_fill(Sample *s)
{
    for (int i = 0; i < 15; i++) s->f32[i] = (float)i * 0.25f - 1.5f;
    float bf[7] = {1.0f, -0.1f, 3.0e38f, bits_f32(0x3f808000), bits_f32(0x3f818000), INFINITY, NAN};
    memcpy(s->bf, bf, sizeof bf);
    for (int i = 0; i < 6; i++) s->f16[i] = (uint16_t)(0x3c00 + i); /* raw half bits */
    int32_t i32[4] = {-1, 0, INT32_MAX, INT32_MIN};
    memcpy(s->i32, i32, sizeof i32);
    int64_t i64[3] = {-1, (int64_t)1 << 40, INT64_MIN};
    memcpy(s->i64, i64, sizeof i64);
    for (int i = 0; i < 5; i++) s->u8[i] = (uint8_t)(250 + i);
    double f64[4] = {M_PI, -1e300, 0.0, 5e-324};
    memcpy(s->f64, f64, sizeof f64);
    s->scalar = 42.5f;
    /* a 1.5 MB metadata value: bigger than the hash's 1 MiB read chunk */
    GString *g = g_string_sized_new(1536 * 1024);
    for (int i = 0; g->len < 1536 * 1024; i++) g_string_append_printf(g, "line %d \"quoted\" \\ tab\t|", i);
    s->big = g_string_free(g, FALSE);
}

static const char *UTF8_VALUE = "Ελληνικά — 日本語 🎉 \u00e9\u0301";
static const char *CONFIG_VALUE = "{\"vocab\": 512, \"dim\": 64, \"stem_layers\": \"1,2,3\"}";

static StWriter *sample_writer(const Sample *s)
{
    StWriter *w = st_writer_new();
    int64_t sh_f32[2] = {3, 5}, sh_bf[1] = {7}, sh_f16[2] = {2, 3}, sh_i32[1] = {4}, sh_i64[1] = {3},
            sh_u8[1] = {5}, sh_f64[2] = {2, 2}, sh_zero[2] = {0, 4};
    /* U8 first with an odd size: the writer's layout must still align everything */
    st_writer_add(w, "u8", ST_U8, 1, sh_u8, s->u8);
    st_writer_add(w, "layers.0.attention.wq.weight", ST_F32, 2, sh_f32, s->f32);
    st_writer_add_f32_as_bf16(w, "stem_embeddings.0.weight", 1, sh_bf, s->bf);
    st_writer_add(w, "f16", ST_F16, 2, sh_f16, s->f16);
    st_writer_add(w, "i32", ST_I32, 1, sh_i32, s->i32);
    st_writer_add(w, "i64", ST_I64, 1, sh_i64, s->i64);
    st_writer_add(w, "f64", ST_F64, 2, sh_f64, s->f64);
    st_writer_add(w, "scalar", ST_F32, 0, NULL, &s->scalar);
    st_writer_add(w, "empty", ST_F32, 2, sh_zero, NULL);
    st_writer_add(w, "名前/ünïcode \"name\"", ST_F32, 0, NULL, &s->scalar);
    st_writer_set_metadata(w, "config", CONFIG_VALUE);
    st_writer_set_metadata(w, "utf8", UTF8_VALUE);
    st_writer_set_metadata(w, "big", s->big);
    st_writer_set_metadata(w, "empty", "");
    st_writer_set_metadata(w, "we\"ird\nkey", "x");
    st_writer_set_metadata(w, "config", CONFIG_VALUE); /* set twice: last value, first position */
    return w;
}

static void check_sample(const StFile *f, const Sample *s)
{
    static const char *names[] = {"u8", "layers.0.attention.wq.weight", "stem_embeddings.0.weight", "f16", "i32",
                                  "i64", "f64", "scalar", "empty", "名前/ünïcode \"name\""};
    g_assert_cmpint(st_n_tensors(f), ==, G_N_ELEMENTS(names));
    for (int i = 0; i < st_n_tensors(f); i++) {
        const StTensor *t = st_tensor(f, i);
        g_assert_cmpstr(t->name, ==, names[i]); /* insertion order kept */
        g_assert_true(st_find(f, names[i]) == t);
        /* our writer aligns every tensor to its element size */
        g_assert_true(st_tensor_aligned(t, st_dtype_size(t->dtype)));
        g_assert_cmpuint(t->nbytes, ==, (size_t)st_tensor_numel(t) * st_dtype_size(t->dtype));
    }
    g_assert_null(st_tensor(f, -1));
    g_assert_null(st_tensor(f, st_n_tensors(f)));
    g_assert_null(st_find(f, "nope"));

    const StTensor *t = st_find(f, "layers.0.attention.wq.weight");
    g_assert_cmpint(t->dtype, ==, ST_F32);
    g_assert_cmpint(t->ndim, ==, 2);
    g_assert_cmpint(t->shape[0], ==, 3);
    g_assert_cmpint(t->shape[1], ==, 5);
    g_assert_cmpmem(t->data, t->nbytes, s->f32, sizeof s->f32);

    t = st_find(f, "stem_embeddings.0.weight");
    g_assert_cmpint(t->dtype, ==, ST_BF16);
    g_assert_cmpuint(t->nbytes, ==, 14);
    const uint16_t *h = t->data;
    for (int i = 0; i < 7; i++) g_assert_cmphex(h[i], ==, st_f32_to_bf16(s->bf[i]));
    g_assert_cmphex(h[0], ==, 0x3f80);
    g_assert_cmphex(h[3], ==, 0x3f80);
    g_assert_cmphex(h[4], ==, 0x3f82);
    g_assert_true(isinf(st_bf16_to_f32(h[5])));
    g_assert_true(isnan(st_bf16_to_f32(h[6])));

    t = st_find(f, "f16");
    g_assert_cmpint(t->dtype, ==, ST_F16);
    g_assert_cmpmem(t->data, t->nbytes, s->f16, sizeof s->f16);
    t = st_find(f, "i32");
    g_assert_cmpint(t->dtype, ==, ST_I32);
    g_assert_cmpmem(t->data, t->nbytes, s->i32, sizeof s->i32);
    t = st_find(f, "i64");
    g_assert_cmpint(t->dtype, ==, ST_I64);
    g_assert_cmpmem(t->data, t->nbytes, s->i64, sizeof s->i64);
    g_assert_true(st_tensor_aligned(t, 8));
    t = st_find(f, "u8");
    g_assert_cmpint(t->dtype, ==, ST_U8);
    g_assert_cmpmem(t->data, t->nbytes, s->u8, sizeof s->u8);
    t = st_find(f, "f64");
    g_assert_cmpint(t->dtype, ==, ST_F64);
    g_assert_cmpmem(t->data, t->nbytes, s->f64, sizeof s->f64);
    t = st_find(f, "scalar");
    g_assert_cmpint(t->ndim, ==, 0);
    g_assert_cmpint(st_tensor_numel(t), ==, 1);
    g_assert_cmpfloat(*(const float *)t->data, ==, 42.5f);
    t = st_find(f, "empty");
    g_assert_cmpint(t->ndim, ==, 2);
    g_assert_cmpint(t->shape[0], ==, 0);
    g_assert_cmpint(t->shape[1], ==, 4);
    g_assert_cmpuint(t->nbytes, ==, 0);
    g_assert_cmpint(st_tensor_numel(t), ==, 0);

    g_assert_cmpstr(st_metadata(f, "config"), ==, CONFIG_VALUE);
    g_assert_cmpstr(st_metadata(f, "utf8"), ==, UTF8_VALUE);
    g_assert_cmpstr(st_metadata(f, "big"), ==, s->big);
    g_assert_cmpstr(st_metadata(f, "empty"), ==, "");
    g_assert_cmpstr(st_metadata(f, "we\"ird\nkey"), ==, "x");
    g_assert_null(st_metadata(f, "missing"));
    g_assert_cmpint(st_n_metadata(f), ==, 5);
    const char *k, *v;
    g_assert_true(st_metadata_nth(f, 0, &k, &v));
    g_assert_cmpstr(k, ==, "config");
    g_assert_cmpstr(v, ==, CONFIG_VALUE);
    g_assert_true(st_metadata_nth(f, 4, &k, &v));
    g_assert_cmpstr(k, ==, "we\"ird\nkey");
    g_assert_false(st_metadata_nth(f, 5, &k, &v));
}

static void test_round_trip(void)
{
    Sample s;
    sample_fill(&s);
    char *dir = make_tmpdir();
    char *path = g_build_filename(dir, "model.safetensors", NULL);
    StWriter *w = sample_writer(&s);
    GError *err = NULL;
    g_assert_true(st_writer_write(w, path, &err));
    g_assert_no_error(err);
    st_writer_free(w);

    StFile *f = st_open(path, &err);
    g_assert_no_error(err);
    check_sample(f, &s);
    size_t len;
    const uint8_t *base = st_file_data(f, &len);
    g_assert_cmpuint((uintptr_t)base % 64, ==, 0); /* mapping is page aligned */
    g_assert_cmpuint((8 + header_len_of(base)) % 64, ==, 0);

    /* the same bytes parsed from memory */
    char *contents;
    gsize clen;
    g_assert_true(g_file_get_contents(path, &contents, &clen, NULL));
    g_assert_cmpuint(clen, ==, len);
    g_assert_cmpmem(contents, clen, base, len);
    StFile *g = st_open_buffer(contents, clen, &err);
    g_assert_no_error(err);
    check_sample(g, &s);
    st_close(g);

    /* hash: streamed file == one-shot over the bytes (file is > 1 MiB: several chunks) */
    g_assert_cmpuint(clen, >, 1u << 20);
    char *want = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)contents, clen);
    char *got = st_sha256_file(path, &err);
    g_assert_no_error(err);
    g_assert_cmpstr(got, ==, want);
    g_assert_cmpuint(strlen(got), ==, 64);
    g_free(want);
    g_free(got);

    st_close(f);
    g_free(contents);
    g_free(s.big);
    rm_rf(dir);
    g_free(path);
    g_free(dir);
}

static void test_sha256(void)
{
    char *dir = make_tmpdir();
    char *path = g_build_filename(dir, "x", NULL);
    GError *err = NULL;
    g_assert_true(g_file_set_contents(path, "abc", 3, NULL));
    char *h = st_sha256_file(path, &err);
    g_assert_no_error(err);
    g_assert_cmpstr(h, ==, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    g_free(h);
    g_assert_true(g_file_set_contents(path, "", 0, NULL));
    h = st_sha256_file(path, &err);
    g_assert_cmpstr(h, ==, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    g_free(h);
    g_unlink(path);
    h = st_sha256_file(path, &err);
    g_assert_null(h);
    g_assert_error(err, ST_ERROR, ST_ERROR_IO);
    g_clear_error(&err);
    rm_rf(dir);
    g_free(path);
    g_free(dir);
}

/* ------------------------------------------------------------------------ */
/* layout the Python `safetensors` library accepts */

static void test_python_layout(void)
{
    Sample s;
    sample_fill(&s);
    char *dir = make_tmpdir();
    char *path = g_build_filename(dir, "m.safetensors", NULL);
    StWriter *w = sample_writer(&s);
    GError *err = NULL;
    g_assert_true(st_writer_write(w, path, &err));
    st_writer_free(w);

    char *buf;
    gsize len;
    g_assert_true(g_file_get_contents(path, &buf, &len, NULL));
    uint64_t n = header_len_of(buf);
    g_assert_cmpuint((8 + n) % 64, ==, 0);
    g_assert_cmpuint(8 + n, <=, len);
    g_assert_cmpint(buf[8], ==, '{');
    /* JSON, then only spaces */
    size_t json_end = 8 + n;
    while (json_end > 8 && buf[json_end - 1] == ' ') json_end--;
    g_assert_cmpint(buf[json_end - 1], ==, '}');

    /* Parse independently and check the offsets tile [0, data_len) exactly, as
     * safetensors' Rust validation requires. */
    JsonParser *p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, buf + 8, (gssize)n, &err));
    JsonObject *root = json_node_get_object(json_parser_get_root(p));
    GList *members = json_object_get_members(root);
    GArray *offs = g_array_new(FALSE, FALSE, sizeof(int64_t) * 2);
    for (GList *l = members; l; l = l->next) {
        if (strcmp(l->data, "__metadata__") == 0) continue;
        JsonArray *a = json_object_get_array_member(json_object_get_object_member(root, l->data), "data_offsets");
        int64_t be[2] = {json_array_get_int_element(a, 0), json_array_get_int_element(a, 1)};
        g_array_append_vals(offs, be, 1);
    }
    g_list_free(members);
    /* insertion sort by begin (few entries) */
    int64_t(*o)[2] = (int64_t(*)[2])offs->data;
    for (guint i = 1; i < offs->len; i++)
        for (guint j = i; j > 0 && (o[j][0] < o[j - 1][0] || (o[j][0] == o[j - 1][0] && o[j][1] < o[j - 1][1])); j--) {
            int64_t t0 = o[j][0], t1 = o[j][1];
            o[j][0] = o[j - 1][0];
            o[j][1] = o[j - 1][1];
            o[j - 1][0] = t0;
            o[j - 1][1] = t1;
        }
    int64_t end = 0;
    for (guint i = 0; i < offs->len; i++) {
        g_assert_cmpint(o[i][0], ==, end);
        end = o[i][1];
    }
    g_assert_cmpint(end, ==, (int64_t)(len - 8 - n));
    g_array_free(offs, TRUE);
    g_object_unref(p);
    g_free(buf);
    g_free(s.big);
    rm_rf(dir);
    g_free(path);
    g_free(dir);
}

/* ------------------------------------------------------------------------ */
/* atomic write */

static void test_atomic_write(void)
{
    char *dir = make_tmpdir();
    char *path = g_build_filename(dir, "model.safetensors", NULL);
    GError *err = NULL;
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6};
    int64_t s4[1] = {4}, s2[1] = {2};

    StWriter *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, s4, a);
    g_assert_true(st_writer_write(w, path, &err));
    st_writer_free(w);
    g_assert_cmpint(count_entries(dir), ==, 1); /* no temp file left behind */

    /* overwrite: the new content replaces the old */
    w = st_writer_new();
    st_writer_add(w, "b", ST_F32, 1, s2, b);
    g_assert_true(st_writer_write(w, path, &err));
    st_writer_free(w);
    g_assert_cmpint(count_entries(dir), ==, 1);
    StFile *f = st_open(path, &err);
    g_assert_no_error(err);
    g_assert_null(st_find(f, "a"));
    g_assert_cmpmem(st_find(f, "b")->data, 8, b, 8);
    st_close(f);

    /* a refused writer leaves the old file alone and creates nothing */
    w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, s4, a);
    st_writer_add(w, "a", ST_F32, 1, s4, a);
    g_assert_false(st_writer_write(w, path, &err));
    g_assert_error(err, ST_ERROR, ST_ERROR_INVALID);
    g_assert_nonnull(strstr(err->message, "added twice"));
    g_clear_error(&err);
    st_writer_free(w);
    g_assert_cmpint(count_entries(dir), ==, 1);
    f = st_open(path, &err);
    g_assert_no_error(err);
    g_assert_nonnull(st_find(f, "b"));
    st_close(f);

    /* a directory that does not exist: I/O error, nothing created */
    char *bad = g_build_filename(dir, "no-such-dir", "m.safetensors", NULL);
    w = st_writer_new();
    g_assert_false(st_writer_write(w, bad, &err));
    g_assert_error(err, ST_ERROR, ST_ERROR_IO);
    g_clear_error(&err);
    st_writer_free(w);
    g_free(bad);
    g_assert_cmpint(count_entries(dir), ==, 1);

    /* Crash test: a child rewrites a 4 MB model in a loop and is killed at an
     * arbitrary moment. The target must always be a complete, valid file (the old
     * or the new one); only "<name>.tmp-XXXXXX" files may be left over. */
    size_t nbig = 1u << 20;
    float *big = g_new(float, nbig);
    for (size_t i = 0; i < nbig; i++) big[i] = (float)i;
    int64_t sbig[1] = {(int64_t)nbig};
    for (int round = 0; round < 4; round++) {
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            for (;;) {
                StWriter *cw = st_writer_new();
                st_writer_add(cw, "big", ST_F32, 1, sbig, big);
                if (!st_writer_write(cw, path, NULL)) _exit(1);
                st_writer_free(cw);
            }
        }
        g_usleep(20000 + 17000 * round);
        kill(pid, SIGKILL);
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFSIGNALED(status));
        f = st_open(path, &err);
        g_assert_no_error(err);
        g_assert_true(st_find(f, "b") || (st_find(f, "big") && st_find(f, "big")->nbytes == nbig * 4));
        st_close(f);
        /* clean up temp files from the killed writer, checking their names */
        GDir *d = g_dir_open(dir, 0, NULL);
        const char *name;
        while ((name = g_dir_read_name(d))) {
            if (strcmp(name, "model.safetensors") == 0) continue;
            g_assert_true(g_str_has_prefix(name, "model.safetensors.tmp-"));
            char *p = g_build_filename(dir, name, NULL);
            g_unlink(p);
            g_free(p);
        }
        g_dir_close(d);
    }
    g_free(big);
    rm_rf(dir);
    g_free(path);
    g_free(dir);
}

static void test_writer_refuses(void)
{
    char *dir = make_tmpdir();
    char *path = g_build_filename(dir, "m.safetensors", NULL);
    GError *err = NULL;
    float x[2] = {0, 0};
    int64_t neg[1] = {-1}, ok1[1] = {2}, ovf[2] = {INT64_C(1) << 62, 16};
    struct {
        const char *name;
        int ndim;
        const int64_t *shape;
        const void *data;
    } bad[] = {
        {"__metadata__", 1, ok1, x}, {"neg", 1, neg, x}, {"ovf", 2, ovf, x},
        {"dims", ST_MAX_DIMS + 1, ok1, x}, {"nodata", 1, ok1, NULL}, {NULL, 1, ok1, x},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        StWriter *w = st_writer_new();
        st_writer_add(w, bad[i].name, ST_F32, bad[i].ndim, bad[i].shape, bad[i].data);
        g_assert_false(st_writer_write(w, path, &err));
        g_assert_error(err, ST_ERROR, ST_ERROR_INVALID);
        g_clear_error(&err);
        st_writer_free(w);
    }
    StWriter *w = st_writer_new();
    st_writer_set_metadata(w, "k", "\xff\xfe");
    g_assert_false(st_writer_write(w, path, &err));
    g_assert_error(err, ST_ERROR, ST_ERROR_INVALID);
    g_clear_error(&err);
    st_writer_free(w);
    g_assert_cmpint(count_entries(dir), ==, 0);

    /* an empty writer makes a valid empty file */
    w = st_writer_new();
    g_assert_true(st_writer_write(w, path, &err));
    st_writer_free(w);
    StFile *f = st_open(path, &err);
    g_assert_no_error(err);
    g_assert_cmpint(st_n_tensors(f), ==, 0);
    g_assert_cmpint(st_n_metadata(f), ==, 0);
    st_close(f);
    rm_rf(dir);
    g_free(path);
    g_free(dir);
}

/* ------------------------------------------------------------------------ */
/* hostile inputs */

/* Builds: 8-byte length (hdr_len, or strlen(json) when hdr_len < 0), the JSON,
 * then data_len bytes of data. */
static uint8_t *make_file(const char *json, int64_t hdr_len, size_t data_len, size_t *out_len)
{
    size_t jl = strlen(json);
    size_t len = 8 + jl + data_len;
    uint8_t *buf = g_malloc0(len ? len : 1);
    uint64_t n = GUINT64_TO_LE(hdr_len < 0 ? (uint64_t)jl : (uint64_t)hdr_len);
    memcpy(buf, &n, 8);
    memcpy(buf + 8, json, jl);
    for (size_t i = 0; i < data_len; i++) buf[8 + jl + i] = (uint8_t)i;
    *out_len = len;
    return buf;
}

static char *deep_json(int depth)
{
    GString *g = g_string_new("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":");
    for (int i = 0; i < depth; i++) g_string_append_c(g, '[');
    for (int i = 0; i < depth; i++) g_string_append_c(g, ']');
    g_string_append(g, "}}");
    return g_string_free(g, FALSE);
}

typedef struct {
    const char *label;
    const char *json;  /* NULL: raw bytes below */
    int64_t hdr_len;   /* -1: strlen(json) */
    size_t data_len;
    int code;
    const char *expect; /* substring of the message */
} Hostile;

#define T(name) "{\"" name "\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}"

static const Hostile hostile[] = {
    {"header length huge", "{}", INT64_C(0x7fffffffffffffff), 0, ST_ERROR_HEADER, "exceeds"},
    {"header length past 100 MB", "{}", 200 * 1024 * 1024, 0, ST_ERROR_HEADER, "exceeds"},
    {"header length > file", "{}", 100, 0, ST_ERROR_HEADER, "larger than"},
    {"header length 0", "", -1, 0, ST_ERROR_HEADER, "not a JSON object"},
    {"not JSON", "{not json", -1, 0, ST_ERROR_HEADER, "not valid JSON"},
    {"JSON array", "[1,2]", -1, 0, ST_ERROR_HEADER, "not a JSON object"},
    {"JSON string", "\"x\"", -1, 0, ST_ERROR_HEADER, "not a JSON object"},
    {"two objects", "{}{}", -1, 0, ST_ERROR_HEADER, "trailing"},
    {"truncated JSON", "{\"a\":{\"dtype\":\"F32\"", -1, 0, ST_ERROR_HEADER, "unexpected end"},
    {"comment", "{/*c*/}", -1, 0, ST_ERROR_HEADER, "not valid JSON"},
    {"single quotes", "{'a':1}", -1, 0, ST_ERROR_HEADER, "not valid JSON"},
    {"trailing comma", "{\"a\":1,}", -1, 0, ST_ERROR_HEADER, "not valid JSON"},
    {"invalid UTF-8", "{\"\xff\":1}", -1, 0, ST_ERROR_HEADER, "UTF-8"},
    {"\\u0000 in name", "{\"a\\u0000b\":1}", -1, 0, ST_ERROR_HEADER, "\\u0000"},
    {"lone surrogate", "{\"a\\udc00\":1}", -1, 0, ST_ERROR_HEADER, "surrogate"},
    {"control char in string", "{\"a\tb\":1}", -1, 0, ST_ERROR_HEADER, "control character"},
    {"integer > 64 bits", "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", -1,
     4, ST_ERROR_HEADER, "64 bits"},
    {"leading zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", -1, 4, ST_ERROR_HEADER,
     "leading zero"},
    {"duplicate tensor", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                         "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
     -1, 2, ST_ERROR_HEADER, "duplicate key \"a\""},
    {"duplicate member", "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1,
     ST_ERROR_HEADER, "duplicate key \"dtype\""},
    {"duplicate escaped", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                          "\"\\u0061\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
     -1, 2, ST_ERROR_HEADER, "duplicate key \"a\""},
    {"duplicate nested", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":{\"k\":1,\"k\":2}}}", -1,
     1, ST_ERROR_HEADER, "duplicate key \"k\""},
    {"entry not object", "{\"a\":1}", -1, 0, ST_ERROR_TENSOR, "not a JSON object"},
    {"dtype missing", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, ST_ERROR_TENSOR, "\"dtype\""},
    {"dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, ST_ERROR_TENSOR,
     "\"dtype\""},
    {"dtype unknown", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", -1, 1, ST_ERROR_TENSOR,
     "unsupported dtype \"F8_E4M3\""},
    {"dtype lowercase", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, ST_ERROR_TENSOR,
     "unsupported dtype"},
    {"shape missing", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", -1, 4, ST_ERROR_TENSOR, "\"shape\""},
    {"shape negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", -1, 4,
     ST_ERROR_TENSOR, "shape[1]"},
    {"shape float", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", -1, 4, ST_ERROR_TENSOR,
     "shape[0]"},
    {"shape string", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", -1, 4,
     ST_ERROR_TENSOR, "shape[0]"},
    {"shape too many dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", -1,
     1, ST_ERROR_TENSOR, "9 dimensions"},
    {"shape product overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,16],\"data_offsets\":[0,0]}}",
     -1, 0, ST_ERROR_TENSOR, "overflows"},
    {"byte size overflow", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", -1,
     0, ST_ERROR_TENSOR, "overflows"},
    {"offsets missing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", -1, 4, ST_ERROR_TENSOR, "data_offsets"},
    {"offsets three", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", -1, 8, ST_ERROR_TENSOR,
     "data_offsets"},
    {"offsets negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", -1, 8,
     ST_ERROR_TENSOR, "data_offsets"},
    {"offsets out of range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[0,1000]}}", -1, 16,
     ST_ERROR_TENSOR, "run past the 16-byte data section"},
    {"offsets huge", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9223372036854775806,9223372036854775807]}}",
     -1, 16, ST_ERROR_TENSOR, "run past"},
    {"offsets end<begin", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", -1, 16,
     ST_ERROR_TENSOR, "before begin"},
    {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", -1, 16, ST_ERROR_TENSOR,
     "span 12 bytes but F32 shape needs 8"},
    {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     -1, 16, ST_ERROR_TENSOR, "overlap"},
    {"overlap same range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                           "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     -1, 16, ST_ERROR_TENSOR, "overlap"},
    {"empty tensor inside another", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                                    "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
     -1, 16, ST_ERROR_TENSOR, "overlap"},
    {"metadata non-string", "{\"__metadata__\":{\"k\":1}}", -1, 0, ST_ERROR_METADATA, "\"k\": value is not a string"},
    {"metadata null value", "{\"__metadata__\":{\"k\":null}}", -1, 0, ST_ERROR_METADATA, "not a string"},
    {"metadata nested", "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", -1, 0, ST_ERROR_METADATA, "not a string"},
    {"metadata not object", "{\"__metadata__\":\"x\"}", -1, 0, ST_ERROR_METADATA, "not a JSON object"},
    {"metadata duplicate", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", -1, 0, ST_ERROR_HEADER, "duplicate"},
    {"truncated data section", T("w"), -1, 8, ST_ERROR_TENSOR, "run past the 8-byte data section"},
    {"name in message", T("layers.3.feed_forward.w1.weight"), -1, 15, ST_ERROR_TENSOR,
     "tensor \"layers.3.feed_forward.w1.weight\":"},
    {"newline in name", T("a\\nb"), -1, 3, ST_ERROR_TENSOR, "tensor \"a\\x0ab\""},
};

static void check_refused(const char *label, const uint8_t *buf, size_t len, int code, const char *expect)
{
    GError *err = NULL;
    StFile *f = st_open_buffer(buf, len, &err);
    if (f) g_error("%s: accepted", label);
    g_assert_nonnull(err);
    if (err->domain != ST_ERROR || (code >= 0 && err->code != code))
        g_error("%s: wrong error %s/%d: %s", label, g_quark_to_string(err->domain), err->code, err->message);
    g_assert_null(strchr(err->message, '\n')); /* one line */
    g_assert_cmpuint(strlen(err->message), <, 400);
    if (expect && !strstr(err->message, expect))
        g_error("%s: message \"%s\" lacks \"%s\"", label, err->message, expect);
    if (g_test_verbose()) g_printerr("%-28s %s\n", label, err->message);
    g_clear_error(&err);
}

static void test_hostile(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(hostile); i++) {
        const Hostile *h = &hostile[i];
        size_t len;
        uint8_t *buf = make_file(h->json, h->hdr_len, h->data_len, &len);
        check_refused(h->label, buf, len, h->code, h->expect);
        g_free(buf);
    }
    size_t len0;
    /* raw cases */
    check_refused("empty buffer", (const uint8_t *)"", 0, ST_ERROR_HEADER, "0 bytes");
    check_refused("NULL buffer", NULL, 100, ST_ERROR_HEADER, "too short");
    check_refused("7 bytes", (const uint8_t *)"\x02\0\0\0\0\0\0", 7, ST_ERROR_HEADER, "7 bytes");
    {
        size_t len;
        uint8_t *buf = make_file("{\"a\":1}", -1, 0, &len);
        buf[10] = '\0'; /* NUL inside the header */
        check_refused("NUL in header", buf, len, ST_ERROR_HEADER, "UTF-8");
        g_free(buf);
    }
    /* nesting: json-glib would recurse once per level and overflow the stack */
    int depths[] = {65, 1000, 1000000};
    for (size_t i = 0; i < G_N_ELEMENTS(depths); i++) {
        char *json = deep_json(depths[i]);
        size_t len;
        uint8_t *buf = make_file(json, -1, 4, &len);
        check_refused("deep nesting", buf, len, ST_ERROR_HEADER, "nesting too deep");
        g_free(buf);
        g_free(json);
    }
    /* Keys that make json-glib quadratic: duplicates (a scan of the member list
     * each) and keys colliding in g_str_hash ("aB" and "b!" hash alike, and so do
     * all their concatenations). Both must be refused before json-glib sees them,
     * without taking time (each took seconds before they were checked). */
    for (int kind = 0; kind < 2; kind++) {
        GString *g = g_string_new("{");
        int n = kind == 0 ? 40000 : 1 << 15;
        for (int i = 0; i < n; i++) {
            g_string_append_c(g, '"');
            if (kind == 0) g_string_append_printf(g, "k%d", i < n / 2 ? i : n / 2 - 1);
            else
                for (int b = 0; b < 15; b++) g_string_append(g, (i >> b) & 1 ? "aB" : "b!");
            g_string_append(g, "\":0,");
        }
        g->str[g->len - 1] = '}';
        if (kind == 1) g_assert_cmpuint(g_str_hash("aBaB"), ==, g_str_hash("b!b!"));
        uint8_t *buf = make_file(g->str, -1, 0, &len0);
        check_refused(kind == 0 ? "many duplicates" : "hash flood", buf, len0, ST_ERROR_HEADER,
                      kind == 0 ? "duplicate key" : "same g_str_hash");
        g_free(buf);
        g_string_free(g, TRUE);
    }
    /* every truncation of a valid file is refused (or, cut inside trailing data, valid) */
    size_t len;
    uint8_t *buf = make_file(T("w"), -1, 16, &len);
    for (size_t cut = 0; cut < len; cut++) {
        GError *err = NULL;
        StFile *f = st_open_buffer(buf, cut, &err);
        g_assert_null(f);
        g_assert_true(err && err->domain == ST_ERROR);
        if (cut < 8) g_assert_cmpint(err->code, ==, ST_ERROR_HEADER);
        g_clear_error(&err);
    }
    g_free(buf);
}

static void test_hostile_files(void)
{
    /* the same checks through st_open, with the path in the message */
    char *dir = make_tmpdir();
    char *path = g_build_filename(dir, "bad.safetensors", NULL);
    GError *err = NULL;
    g_assert_true(g_file_set_contents(path, "", 0, NULL));
    g_assert_null(st_open(path, &err));
    g_assert_error(err, ST_ERROR, ST_ERROR_HEADER);
    g_assert_true(g_str_has_prefix(err->message, path));
    g_clear_error(&err);
    g_assert_true(g_file_set_contents(path, "1234567", 7, NULL));
    g_assert_null(st_open(path, &err));
    g_assert_error(err, ST_ERROR, ST_ERROR_HEADER);
    g_clear_error(&err);
    g_assert_null(st_open(dir, &err)); /* a directory */
    g_assert_error(err, ST_ERROR, ST_ERROR_IO);
    g_clear_error(&err);
    g_unlink(path);
    g_assert_null(st_open(path, &err));
    g_assert_error(err, ST_ERROR, ST_ERROR_IO);
    g_clear_error(&err);
    rm_rf(dir);
    g_free(path);
    g_free(dir);
}

static void test_accepted_edge_cases(void)
{
    struct {
        const char *json;
        size_t data_len;
        int n_tensors;
    } ok[] = {
        {"{}", 0, 0},
        {"  {}  \t\r\n", 0, 0},
        {"{\"__metadata__\":{}}", 0, 0},
        /* gaps, trailing data, unknown members, out-of-order offsets */
        {"{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[10,12],\"extra\":[1,{\"z\":null}]},"
         "\"a\":{\"dtype\":\"I64\",\"shape\":[1,1],\"data_offsets\":[0,8]}}",
         20, 2},
        /* zero-size tensors at the edges and at a shared boundary */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"c\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
         "\"d\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[4,4]}}",
         4, 4},
        /* escapes and surrogate pairs in names */
        {"{\"\\ud83c\\udf89\\u00e9\\n\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", 1, 1},
        /* exactly 64 levels of nesting */
        {NULL, 4, 1},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        char *json = ok[i].json ? g_strdup(ok[i].json) : deep_json(62);
        size_t len;
        uint8_t *buf = make_file(json, -1, ok[i].data_len, &len);
        GError *err = NULL;
        StFile *f = st_open_buffer(buf, len, &err);
        if (!f) g_error("case %zu refused: %s", i, err->message);
        g_assert_cmpint(st_n_tensors(f), ==, ok[i].n_tensors);
        size_t flen;
        g_assert_true(st_file_data(f, &flen) == buf);
        g_assert_cmpuint(flen, ==, len);
        for (int k = 0; k < st_n_tensors(f); k++) {
            const StTensor *t = st_tensor(f, k);
            g_assert_true((const uint8_t *)t->data >= buf + 8 + strlen(json));
            g_assert_true((const uint8_t *)t->data + t->nbytes <= buf + len);
        }
        if (i == 5) g_assert_nonnull(st_find(f, "🎉é\n"));
        st_close(f);
        g_free(buf);
        g_free(json);
    }
}

/* ------------------------------------------------------------------------ */
/* sample for check_layout.py */

static int write_sample(const char *path)
{
    float a[12], b[6];
    for (int i = 0; i < 12; i++) a[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 5; i++) b[i] = (float)(i - 2) * 0.1f;
    b[5] = bits_f32(0x3f818000); /* a tie, rounds up to even */
    uint8_t c[5] = {0, 1, 2, 3, 255};
    int64_t d[3] = {-1, INT64_C(1) << 40, 7};
    double e[2] = {M_PI, -2.5};
    int32_t g[4] = {-7, 0, 7, INT32_MAX};
    int64_t sa[2] = {3, 4}, sb[1] = {6}, sc[1] = {5}, sd[1] = {3}, se[1] = {2}, sg[2] = {2, 2}, sz[1] = {0};
    StWriter *w = st_writer_new();
    st_writer_add(w, "a.f32", ST_F32, 2, sa, a);
    st_writer_add_f32_as_bf16(w, "b.bf16", 1, sb, b);
    st_writer_add(w, "c.u8", ST_U8, 1, sc, c);
    st_writer_add(w, "d.i64", ST_I64, 1, sd, d);
    st_writer_add(w, "e.f64", ST_F64, 1, se, e);
    st_writer_add(w, "f.empty", ST_F32, 1, sz, NULL);
    st_writer_add(w, "g.i32", ST_I32, 2, sg, g);
    st_writer_set_metadata(w, "name", "sample");
    st_writer_set_metadata(w, "utf8", "π≈3.14159");
    GError *err = NULL;
    gboolean ok = st_writer_write(w, path, &err);
    st_writer_free(w);
    if (!ok) {
        g_printerr("%s\n", err->message);
        g_error_free(err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-sample") == 0) return write_sample(argv[2]);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/safetensors/bf16/exact", test_bf16_exact);
    g_test_add_func("/safetensors/bf16/rounding", test_bf16_rounding);
    g_test_add_func("/safetensors/bf16/special", test_bf16_special);
    g_test_add_func("/safetensors/round-trip", test_round_trip);
    g_test_add_func("/safetensors/sha256", test_sha256);
    g_test_add_func("/safetensors/python-layout", test_python_layout);
    g_test_add_func("/safetensors/atomic-write", test_atomic_write);
    g_test_add_func("/safetensors/writer-refuses", test_writer_refuses);
    g_test_add_func("/safetensors/hostile", test_hostile);
    g_test_add_func("/safetensors/hostile-files", test_hostile_files);
    g_test_add_func("/safetensors/accepted-edge-cases", test_accepted_edge_cases);
    return g_test_run();
}
