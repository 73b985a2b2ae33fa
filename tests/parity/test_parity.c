/* Parity of the C engine against an independent PyTorch implementation
 * (tests/parity/reference.py, run with Debian's python3-torch).
 *
 * The fixtures hold a tiny model (V 300, D 32, 3 layers, 4 heads / 2 kv heads,
 * F 48, STEM layers 1 and 2) and, for one batch (B 2, T 16, some targets -1):
 * logits, loss, every parameter gradient, every parameter after one clipped AdamW
 * step (both clips active) and the logits of the stepped model.
 *
 * Tolerances (the fixtures are the float64 evaluation rounded to float32; a float32
 * torch run of the same model, printed by reference.py, is off by ~0 for the loss,
 * ~3e-7 for logits, ~1e-6 for gradients and ~2.4e-6 absolute for the stepped
 * parameters: that is the floor for any float32 implementation):
 *   loss                 |c - r| / |r|                         <= 1e-4
 *   logits, logits_after max |c - r| / max |r|                 <= 1e-4
 *   gradients            max |c - r| / max |r| per tensor      <= 1e-4
 *   stepped parameters   max |c - r| <= 1e-5  or  max |c - r| / max |r| <= 1e-4, per tensor.
 *     The first AdamW step moves each element by about lr * g / (|g| + eps), i.e.
 *     by +-lr whatever the size of g: the update is ill-conditioned for the few
 *     elements with |g| near eps = 1e-8, so the comparison is on absolute error
 *     (lr = 1e-2, so 1e-5 is a 0.1 % error on a full step).
 *   save -> load (mapped, fp32): logits bit-identical (memcmp).
 *   save -> load with bf16 tables: max |c - fp32| / max |fp32| <= 4e-3: bf16 keeps
 *     8 significant bits, so each table element moves by up to 2^-9 = 1.95e-3
 *     relative; the reference measures 1.0e-3 on the logits for this model.
 *
 * The fixture directory comes from $STEM_PARITY_DIR (set by meson), else the
 * source directory compiled in. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "engine/checkpoint.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "engine/train.h"

#define B 2
#define T 16

static char *fixture_path(const char *name)
{
    const char *dir = g_getenv("STEM_PARITY_DIR");
    if (!dir || !*dir) dir = STEM_PARITY_SOURCE_DIR;
    return g_build_filename(dir, name, NULL);
}

/* ---------------------------------------------------------------- expected */

typedef struct {
    StFile *f;
    int32_t ids[B * T];
    int32_t targets[B * T];
} Expected;

static const float *exp_f32(const Expected *e, const char *name, int64_t numel)
{
    const StTensor *t = st_find(e->f, name);
    if (!t) g_error("expected tensor '%s' missing from the fixture", name);
    g_assert_cmpint(t->dtype, ==, ST_F32);
    g_assert_cmpint(st_tensor_numel(t), ==, numel);
    g_assert_true(st_tensor_aligned(t, 4));
    return t->data;
}

static void exp_i32(const Expected *e, const char *name, int32_t *out)
{
    const StTensor *t = st_find(e->f, name);
    g_assert_nonnull(t);
    g_assert_cmpint(t->dtype, ==, ST_I32);
    g_assert_cmpint(st_tensor_numel(t), ==, B * T);
    memcpy(out, t->data, sizeof(int32_t) * B * T);
}

static double exp_meta(const Expected *e, const char *key)
{
    const char *v = st_metadata(e->f, key);
    if (!v) g_error("expected metadata '%s' missing", key);
    return g_ascii_strtod(v, NULL);
}

static void expected_open(Expected *e)
{
    g_autofree char *path = fixture_path("tiny_expected.safetensors");
    g_autoptr(GError) error = NULL;
    e->f = st_open(path, &error);
    g_assert_no_error(error);
    exp_i32(e, "ids", e->ids);
    exp_i32(e, "targets", e->targets);
}

static void expected_close(Expected *e) { st_close(e->f); }

/* ---------------------------------------------------------------- compare */

typedef struct { double abs, rel; } Err;

static Err compare(const float *c, const float *r, int64_t n)
{
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)c[i] - (double)r[i]);
        if (!(e <= d)) d = e;                 /* NaN propagates as a failure */
        if (fabs((double)r[i]) > s) s = fabs((double)r[i]);
    }
    return (Err){d, d / (s > 0 ? s : 1.0)};
}

/* Family of a tensor name: "layers.2.attention.wq.weight" -> "attention.wq",
 * "stem_embeddings.1.weight" -> "stem_embeddings". */
static char *family_of(const char *name)
{
    const char *p = name;
    if (g_str_has_prefix(p, "layers.")) {
        p = strchr(p + strlen("layers."), '.');
        p = p ? p + 1 : name;
    }
    if (g_str_has_prefix(p, "stem_embeddings.")) return g_strdup("stem_embeddings");
    char *f = g_strdup(p);
    if (g_str_has_suffix(f, ".weight")) f[strlen(f) - strlen(".weight")] = '\0';
    return f;
}

/* Worst relative error per family, reported once at the end of a test. */
static void family_note(GHashTable *fam, const char *name, double rel)
{
    char *k = family_of(name);
    double *v = g_hash_table_lookup(fam, k);
    if (!v) {
        v = g_new0(double, 1);
        g_hash_table_insert(fam, k, v);
    } else {
        g_free(k);
    }
    if (rel > *v) *v = rel;
}

static void family_report(GHashTable *fam, const char *what)
{
    g_autoptr(GList) keys = g_list_sort(g_hash_table_get_keys(fam), (GCompareFunc)strcmp);
    for (GList *l = keys; l; l = l->next)
        g_test_message("%s %-22s max rel err %.3e", what, (const char *)l->data,
                       *(double *)g_hash_table_lookup(fam, l->data));
}

static void logits_copy(const StemModel *m, float *out)
{
    int V = m->cfg.vocab;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(out + ((size_t)b * T + t) * V, stem_model_logits(m, b, t), sizeof(float) * V);
}

static void check_logits(const StemModel *m, const float *ref, const char *what)
{
    int V = m->cfg.vocab;
    g_autofree float *c = g_new(float, (size_t)B * T * V);
    logits_copy(m, c);
    Err e = compare(c, ref, (int64_t)B * T * V);
    g_test_message("%s: max abs err %.3e, rel %.3e (tol 1e-4)", what, e.abs, e.rel);
    if (!(e.rel <= 1e-4)) g_test_fail_printf("%s: rel err %.3e > 1e-4", what, e.rel);
}

/* ---------------------------------------------------------------- setup */

static StemModel *load_tiny(void)
{
    g_autofree char *path = fixture_path("tiny.safetensors");
    g_autoptr(GError) error = NULL;
    StemModel *m = stem_model_load_trainable(path, &error);
    g_assert_no_error(error);
    g_assert_nonnull(m);
    g_assert_cmpint(m->cfg.vocab, ==, 300);
    g_assert_cmpint(m->cfg.n_layers, ==, 3);
    g_assert_cmpuint(m->cfg.stem_mask, ==, 0x6);
    g_assert_true(stem_model_alloc_training(m, &error));
    g_assert_no_error(error);
    stem_model_zero_grad(m);
    return m;
}

static void optim_from(const Expected *e, StemOptim *o)
{
    stem_optim_defaults(o);
    o->lr = (float)exp_meta(e, "lr");
    o->wd = (float)exp_meta(e, "wd");
    o->table_lr = (float)exp_meta(e, "table_lr");
    o->table_wd = (float)exp_meta(e, "table_wd");
    o->clip = (float)exp_meta(e, "clip");
    o->table_clip = (float)exp_meta(e, "table_clip");
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
}

/* ---------------------------------------------------------------- tests */

/* The loader puts every tensor of the file, bit for bit, where stem_model_tensors
 * says it is, in the same order as the reference's layout. */
static void test_load(void)
{
    StemModel *m = load_tiny();
    g_autofree char *path = fixture_path("tiny.safetensors");
    g_autoptr(GError) error = NULL;
    StFile *f = st_open(path, &error);
    g_assert_no_error(error);
    g_autoptr(GArray) refs = stem_model_tensors(m);
    g_assert_cmpint(refs->len, ==, st_n_tensors(f));
    for (guint i = 0; i < refs->len; i++) {
        const StemTensorRef *r = &g_array_index(refs, StemTensorRef, i);
        const StTensor *t = st_tensor(f, (int)i);
        g_assert_cmpstr(r->name, ==, t->name);
        g_assert_cmpint(r->ndim, ==, t->ndim);
        int64_t n = 1;
        for (int d = 0; d < r->ndim; d++) {
            g_assert_cmpint(r->shape[d], ==, t->shape[d]);
            n *= r->shape[d];
        }
        g_assert_true(r->is_table == g_str_has_prefix(r->name, "stem_embeddings."));
        g_assert_nonnull(r->grad);
        g_assert_cmpmem(r->data, n * sizeof(float), t->data, t->nbytes);
    }
    st_close(f);
    stem_model_free(m);
}

static void test_forward(void)
{
    Expected e;
    expected_open(&e);
    StemModel *m = load_tiny();
    /* logits are readable only after a forward without targets: a loss forward turns
     * them into probabilities in place (engine/model.c, llm.c style) */
    stem_model_forward(m, e.ids, NULL, B, T, FALSE);
    check_logits(m, exp_f32(&e, "logits", (int64_t)B * T * m->cfg.vocab), "logits");
    float loss = stem_model_forward(m, e.ids, e.targets, B, T, FALSE);
    float ref = *exp_f32(&e, "loss", 1);
    double rel = fabs((double)loss - ref) / fabs((double)ref);
    g_test_message("loss: C %.8f ref %.8f rel err %.3e (tol 1e-4)", loss, ref, rel);
    if (!(rel <= 1e-4)) g_test_fail_printf("loss: rel err %.3e > 1e-4", rel);
    stem_model_free(m);
    expected_close(&e);
}

static void test_backward(void)
{
    Expected e;
    expected_open(&e);
    StemModel *m = load_tiny();
    stem_model_forward(m, e.ids, e.targets, B, T, FALSE);
    stem_model_backward(m);
    g_autoptr(GArray) refs = stem_model_tensors(m);
    g_autoptr(GHashTable) fam = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (guint i = 0; i < refs->len; i++) {
        const StemTensorRef *r = &g_array_index(refs, StemTensorRef, i);
        int64_t n = r->ndim == 1 ? r->shape[0] : r->shape[0] * r->shape[1];
        g_autofree char *key = g_strconcat("grad.", r->name, NULL);
        Err err = compare(r->grad, exp_f32(&e, key, n), n);
        family_note(fam, r->name, err.rel);
        if (!(err.rel <= 1e-4))
            g_test_fail_printf("%s: rel err %.3e > 1e-4 (abs %.3e)", key, err.rel, err.abs);
    }
    family_report(fam, "grad");
    stem_model_free(m);
    expected_close(&e);
}

static void test_step(void)
{
    Expected e;
    expected_open(&e);
    StemModel *m = load_tiny();
    stem_model_forward(m, e.ids, e.targets, B, T, FALSE);
    stem_model_backward(m);
    StemOptim o;
    optim_from(&e, &o);
    float nb = 0, nt = 0;
    stem_model_step(m, &o, 1.0f, &nb, &nt);

    /* pre-clip norms, and both clips must have been active for the test to mean anything */
    double rnb = exp_meta(&e, "norm_backbone"), rnt = exp_meta(&e, "norm_tables");
    g_test_message("grad norm backbone: C %.7f ref %.7f; tables: C %.7f ref %.7f", nb, rnb, nt, rnt);
    if (!(fabs(nb - rnb) / rnb <= 1e-4)) g_test_fail_printf("backbone grad norm: rel err > 1e-4");
    if (!(fabs(nt - rnt) / rnt <= 1e-4)) g_test_fail_printf("table grad norm: rel err > 1e-4");
    g_assert_cmpfloat(rnb, >, o.clip);
    g_assert_cmpfloat(rnt, >, o.table_clip);

    g_autoptr(GArray) refs = stem_model_tensors(m);
    g_autoptr(GHashTable) fam = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    double worst_abs = 0;
    char worst_msg[256] = "";
    for (guint i = 0; i < refs->len; i++) {
        const StemTensorRef *r = &g_array_index(refs, StemTensorRef, i);
        int64_t n = r->ndim == 1 ? r->shape[0] : r->shape[0] * r->shape[1];
        g_autofree char *key = g_strconcat("after.", r->name, NULL);
        g_autofree char *gkey = g_strconcat("grad.", r->name, NULL);
        const float *ref = exp_f32(&e, key, n), *grad = exp_f32(&e, gkey, n);
        Err err = compare(r->data, ref, n);
        family_note(fam, r->name, err.rel);
        if (err.abs > worst_abs) {
            worst_abs = err.abs;
            for (int64_t k = 0; k < n; k++)
                if (fabs((double)r->data[k] - ref[k]) == err.abs) {
                    /* expected where the clipped gradient is within a few eps of 0 */
                    g_snprintf(worst_msg, sizeof worst_msg, "%s[%" G_GINT64_FORMAT "]: C %.9g ref %.9g, "
                               "unclipped grad %.3e", key, k, r->data[k], ref[k], grad[k]);
                    break;
                }
        }
        if (!(err.abs <= 1e-5 || err.rel <= 1e-4))
            g_test_fail_printf("%s: abs err %.3e > 1e-5 and rel err %.3e > 1e-4", key, err.abs, err.rel);
    }
    family_report(fam, "after");
    g_test_message("after: worst abs err %.3e (tol 1e-5 abs or 1e-4 rel) at %s", worst_abs, worst_msg);

    stem_model_forward(m, e.ids, NULL, B, T, FALSE);
    check_logits(m, exp_f32(&e, "logits_after", (int64_t)B * T * m->cfg.vocab), "logits_after");
    stem_model_free(m);
    expected_close(&e);
}

/* save -> load (mapped) -> forward: bit-identical logits for fp32 tables; within
 * bf16 rounding for bf16 tables. */
static void save_load_check(gboolean bf16)
{
    Expected e;
    expected_open(&e);
    StemModel *m = load_tiny();
    int V = m->cfg.vocab;
    size_t nl = (size_t)B * T * V;
    stem_model_forward(m, e.ids, NULL, B, T, FALSE);
    g_autofree float *ref = g_new(float, nl);
    logits_copy(m, ref);

    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("stem-parity-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *path = g_build_filename(dir, "model.safetensors", NULL);
    g_assert_true(stem_model_save(m, path, bf16, NULL, &error));
    g_assert_no_error(error);
    stem_model_free(m);

    StemModel *l = stem_model_load(path, &error);
    g_assert_no_error(error);
    g_assert_nonnull(l);
    g_assert_cmpint(stem_tables_dtype(l->tables), ==, bf16 ? STEM_TABLE_BF16 : STEM_TABLE_F32);
    stem_model_forward(l, e.ids, NULL, B, T, FALSE);
    g_autofree float *got = g_new(float, nl);
    logits_copy(l, got);
    Err err = compare(got, ref, (int64_t)nl);
    if (!bf16) {
        g_test_message("save/load fp32: max abs diff %.3e (must be bit-identical)", err.abs);
        g_assert_cmpmem(got, nl * sizeof(float), ref, nl * sizeof(float));
    } else {
        g_test_message("save/load bf16 tables: max abs err %.3e, rel %.3e (tol 4e-3)", err.abs, err.rel);
        g_assert_cmpfloat(err.rel, <=, 4e-3);
        g_assert_cmpfloat(err.abs, >, 0.0);   /* the tables really were rounded */
    }
    stem_model_free(l);
    g_unlink(path);
    g_rmdir(dir);
    expected_close(&e);
}

static void test_save_load_fp32(void) { save_load_check(FALSE); }
static void test_save_load_bf16(void) { save_load_check(TRUE); }

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/parity/load", test_load);
    g_test_add_func("/parity/forward", test_forward);
    g_test_add_func("/parity/backward", test_backward);
    g_test_add_func("/parity/step", test_step);
    g_test_add_func("/parity/save-load-fp32", test_save_load_fp32);
    g_test_add_func("/parity/save-load-bf16", test_save_load_bf16);
    return g_test_run();
}
