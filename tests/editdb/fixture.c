/* Test fixtures for tests/editdb (see fixture.h). */
#include "fixture.h"
#include "engine/checkpoint.h"
#include "engine/facteval.h"
#include "engine/tokenizer.h"

#include <glib/gstdio.h>
#include <string.h>

static StemFacts *facts;
static StemTokenizer *tok;

const StemFacts *fixture_facts(void)
{
    if (!facts) {
        GError *e = NULL;
        facts = stem_facts_load_default(&e);
        if (!facts) g_error("fixture: %s", e->message);
    }
    return facts;
}

static StemTokenizer *fixture_tokenizer(void)
{
    if (!tok) {
        GPtrArray *s = stem_facts_training_sentences(fixture_facts(), 1, 7);
        GString *text = g_string_new(NULL);
        for (guint i = 0; i < s->len; i++) g_string_append(text, g_ptr_array_index(s, i));
        tok = stem_tokenizer_train(text->str, text->len, 1024, NULL, NULL);
        g_string_free(text, TRUE);
        g_ptr_array_unref(s);
    }
    return tok;
}

char *fixture_model(const char *dir, const char *name, guint64 seed, gboolean dense)
{
    StemConfig c = { .vocab = 1024, .dim = 32, .n_layers = 3, .n_heads = 2, .n_kv_heads = 2, .ffn_dim = 16,
                     .seq_len = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .stem_mask = dense ? 0 : 0x6 };
    GError *e = NULL;
    StemModel *m = stem_model_new(&c, &e);
    if (!m) g_error("fixture: %s", e->message);
    stem_model_init_weights(m, seed);
    /* the model owns its tokenizer: give it a private copy */
    char *tj = stem_tokenizer_to_json(fixture_tokenizer());
    m->tok = stem_tokenizer_from_json(tj, &e);
    g_free(tj);
    char *path = g_build_filename(dir, name, NULL);
    if (!stem_model_save(m, path, FALSE, NULL, &e)) g_error("fixture: %s", e->message);
    stem_model_free(m);
    return path;
}

char *fixture_tmpdir(void)
{
    GError *e = NULL;
    char *d = g_dir_make_tmp("stem-editdb-test-XXXXXX", &e);
    if (!d) g_error("fixture: %s", e->message);
    return d;
}

void fixture_rmdir(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (!d) return;
    const char *n;
    while ((n = g_dir_read_name(d))) {
        char *p = g_build_filename(dir, n, NULL);
        g_unlink(p);
        g_free(p);
    }
    g_dir_close(d);
    g_rmdir(dir);
}
