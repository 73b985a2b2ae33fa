/* stem train / stem init: presets, architecture flags, corpus -> tokenizer ->
 * model -> training -> model file. */
#include "commands.h"
#include "cli.h"
#include "engine/checkpoint.h"
#include "engine/corpus.h"
#include "engine/facteval.h"
#include "engine/tokenizer.h"
#include "engine/train.h"
#include "kernels/cpu/pool.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Flags shared by train and init; UNSET / NAN / NULL = take the preset's value.
 * (A sentinel no user can type, so "-1" is rejected rather than ignored.) */
#define UNSET G_MININT
typedef struct {
    char *preset, *stem_layers, *out;
    gboolean dense, json, quiet, tables_bf16;
    int vocab, dim, layers, heads, kv_heads, ffn, seq;
    int batch, steps, accum, threads, fact_repeats, eval_every;
    gint64 seed;
    double lr, table_lr, wd, prose_mb;
} TrainArgs;

typedef struct {
    const char *name;
    StemConfig cfg;
    const char *stem_layers;
    int batch, steps;
    float lr;
    double prose_mb;     /* prose used (0 = all) */
    int fact_repeats;
} Preset;

/* The presets. `default` is sized to train in under 10 minutes on 2 cores and
 * to learn the 195 capitals (see README "Default model"): 2 MB of prose keeps
 * the facts at ~20 % of the tokens, and 1000 steps of 16 x 128 tokens are ~3
 * epochs. STEM on all layers but the first won the layer-set comparison
 * (bench/layer_sets.sh). */
static const Preset presets[] = {
    { "tiny", { .vocab = 512, .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .ffn_dim = 128,
                .seq_len = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f },
      "all-but-first", 8, 80, 3e-3f, 0.4, 2 },
    { "default", { .vocab = 4096, .dim = 256, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4, .ffn_dim = 512,
                   .seq_len = 128, .rope_theta = 10000.0f, .norm_eps = 1e-5f },
      "all-but-first", 16, 1000, 3e-3f, 2.0, 12 },
};

static const Preset *find_preset(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

#define ARCH_ENTRIES(a)                                                                                   \
    { "preset", 0, 0, G_OPTION_ARG_STRING, &(a).preset, "tiny | default (default: default)", "NAME" },    \
    { "dense", 0, 0, G_OPTION_ARG_NONE, &(a).dense, "dense baseline: no STEM layer", NULL },               \
    { "stem-layers", 0, 0, G_OPTION_ARG_STRING, &(a).stem_layers,                                          \
      "none | all | all-but-first | every-K | list like 1,3", "SPEC" },                                    \
    { "vocab", 0, 0, G_OPTION_ARG_INT, &(a).vocab, "vocabulary size", "N" },                               \
    { "dim", 0, 0, G_OPTION_ARG_INT, &(a).dim, "model width", "N" },                                       \
    { "layers", 0, 0, G_OPTION_ARG_INT, &(a).layers, "number of layers", "N" },                            \
    { "heads", 0, 0, G_OPTION_ARG_INT, &(a).heads, "attention heads", "N" },                               \
    { "kv-heads", 0, 0, G_OPTION_ARG_INT, &(a).kv_heads, "key/value heads (grouped-query)", "N" },         \
    { "ffn", 0, 0, G_OPTION_ARG_INT, &(a).ffn, "FFN hidden size", "N" },                                   \
    { "seq", 0, 0, G_OPTION_ARG_INT, &(a).seq, "context length", "N" },                                    \
    { "seed", 0, 0, G_OPTION_ARG_INT64, &(a).seed, "random seed (default 1)", "S" },                       \
    { "threads", 0, 0, G_OPTION_ARG_INT, &(a).threads, "worker threads (0 = all cores)", "N" },            \
    { "tables-bf16", 0, 0, G_OPTION_ARG_NONE, &(a).tables_bf16, "store STEM tables as bf16", NULL },       \
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &(a).out, "model file to write", "MODEL.safetensors" },        \
    { "json", 0, 0, G_OPTION_ARG_NONE, &(a).json, "print a JSON summary on stdout", NULL },                \
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &(a).quiet, "no progress on stderr", NULL }

static void args_init(TrainArgs *a)
{
    memset(a, 0, sizeof *a);
    a->vocab = a->dim = a->layers = a->heads = a->kv_heads = a->ffn = a->seq = UNSET;
    a->batch = a->steps = a->accum = a->fact_repeats = a->eval_every = UNSET;
    a->threads = 0;
    a->seed = 1;
    a->lr = a->table_lr = a->wd = a->prose_mb = NAN;
}

/* preset + flags -> config; exits 2 on bad flags */
static const Preset *resolve_config(const char *cmd, TrainArgs *a, StemConfig *c)
{
    const Preset *p = find_preset(a->preset ? a->preset : "default");
    if (!p) cli_usage(cmd, "unknown preset '%s' (expected tiny or default)", a->preset);
    *c = p->cfg;
#define OVR(field, v, nm) do { if ((v) != UNSET) { if ((v) <= 0) cli_usage(cmd, "--%s must be positive", nm); c->field = (v); } } while (0)
    OVR(vocab, a->vocab, "vocab");
    OVR(dim, a->dim, "dim");
    OVR(n_layers, a->layers, "layers");
    OVR(n_heads, a->heads, "heads");
    OVR(ffn_dim, a->ffn, "ffn");
    OVR(seq_len, a->seq, "seq");
#undef OVR
    if (a->kv_heads != UNSET) {
        if (a->kv_heads <= 0) cli_usage(cmd, "--kv-heads must be positive");
        c->n_kv_heads = a->kv_heads;
    } else {
        c->n_kv_heads = c->n_heads;
    }
    if (a->dense && a->stem_layers) cli_usage(cmd, "--dense and --stem-layers contradict each other");
    const char *spec = a->dense ? "none" : a->stem_layers ? a->stem_layers : p->stem_layers;
    GError *e = NULL;
    if (c->n_layers > STEM_MAX_LAYERS) cli_usage(cmd, "--layers must be at most %d", STEM_MAX_LAYERS);
    if (!stem_config_parse_layers(spec, c->n_layers, &c->stem_mask, &e)) cli_usage(cmd, "%s", e->message);
    if (!stem_config_validate(c, &e)) cli_usage(cmd, "%s", e->message);
    if (!a->out) cli_usage(cmd, "--out MODEL.safetensors is required");
    return p;
}

static void add_counts_json(JsonBuilder *b, const StemConfig *c)
{
    StemCounts k;
    stem_config_counts(c, &k);
    json_builder_set_member_name(b, "params_total"); json_builder_add_int_value(b, k.total);
    json_builder_set_member_name(b, "params_active"); json_builder_add_int_value(b, k.active_per_token);
    json_builder_set_member_name(b, "params_tables"); json_builder_add_int_value(b, k.tables);
    json_builder_set_member_name(b, "flops_per_token"); json_builder_add_double_value(b, k.flops_per_token);
    json_builder_set_member_name(b, "dense_flops_per_token"); json_builder_add_double_value(b, k.dense_flops_per_token);
}

/* ------------------------------------------------------------------ init */

int cmd_init(int argc, char **argv)
{
    TrainArgs a;
    args_init(&a);
    GOptionEntry entries[] = { ARCH_ENTRIES(a), { NULL } };
    cli_parse("init", "", "Write a randomly initialized model (no training) with a byte-level tokenizer.\n"
              "For tests and benchmarks at large vocabularies (e.g. --vocab 131072).", entries, &argc, &argv);
    if (argc > 1) cli_usage("init", "unexpected argument '%s'", argv[1]);
    StemConfig c;
    resolve_config("init", &a, &c);
    cli_init_threads(a.threads);
    GError *e = NULL;
    StemModel *m = stem_model_new(&c, &e);
    if (!m) cli_fail("%s", e->message);
    stem_model_init_weights(m, (guint64)a.seed);
    /* a tokenizer with no merges: bytes + specials, valid for any vocab >= 259 */
    m->tok = stem_tokenizer_train("", 0, STEM_TOK_N_BASE, NULL, NULL);
    GHashTable *meta = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(meta, "provenance", "stem init (random weights)");
    if (!stem_model_save(m, a.out, a.tables_bf16, meta, &e)) cli_fail("%s", e->message);
    g_hash_table_unref(meta);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "out"); json_builder_add_string_value(b, a.out);
        add_counts_json(b, &c);
        json_builder_end_object(b);
        cli_print_json(b);
    }
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ train */

typedef struct {
    CliProgress prog;
    int steps;
} TrainUi;

static gboolean on_step(const StemTrainProgress *p, void *user)
{
    TrainUi *ui = user;
    char *eta = cli_format_duration(p->eta_s);
    char line[256];
    if (isnan(p->val_loss))
        g_snprintf(line, sizeof line, "step %d/%d  loss %.3f  %.0f tok/s  ETA %s", p->step, p->steps, p->loss,
                   p->tokens_per_s, eta);
    else
        g_snprintf(line, sizeof line, "step %d/%d  loss %.3f  val %.3f  %.0f tok/s  ETA %s", p->step, p->steps,
                   p->loss, p->val_loss, p->tokens_per_s, eta);
    g_free(eta);
    cli_progress_update(&ui->prog, (double)p->step / p->steps, line);
    return TRUE;
}

static void on_tok_progress(double frac, void *user)
{
    cli_progress_update(user, frac, "training the tokenizer");
}

int cmd_train(int argc, char **argv)
{
    TrainArgs a;
    args_init(&a);
    GOptionEntry entries[] = {
        ARCH_ENTRIES(a),
        { "batch", 0, 0, G_OPTION_ARG_INT, &a.batch, "sequences per micro-batch", "N" },
        { "steps", 0, 0, G_OPTION_ARG_INT, &a.steps, "optimizer steps", "N" },
        { "accum", 0, 0, G_OPTION_ARG_INT, &a.accum, "micro-batches per step (gradient accumulation)", "N" },
        { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &a.lr, "peak learning rate (backbone)", "LR" },
        { "table-lr", 0, 0, G_OPTION_ARG_DOUBLE, &a.table_lr, "peak learning rate for STEM tables (default: --lr)", "LR" },
        { "wd", 0, 0, G_OPTION_ARG_DOUBLE, &a.wd, "weight decay (backbone; tables use 0)", "WD" },
        { "prose-mb", 0, 0, G_OPTION_ARG_DOUBLE, &a.prose_mb, "megabytes of prose to use (0 = all)", "MB" },
        { "fact-repeats", 0, 0, G_OPTION_ARG_INT, &a.fact_repeats, "copies of each fact in the corpus", "N" },
        { "eval-every", 0, 0, G_OPTION_ARG_INT, &a.eval_every, "validation loss every N steps (0 = at the end)", "N" },
        { NULL }
    };
    cli_parse_compute("train", "", "Train a STEM model (or with --dense its dense baseline) on the bundled corpus:\n"
              "country facts + public-domain prose. Progress on stderr; --json prints a summary.",
              entries, &argc, &argv);
    if (argc > 1) cli_usage("train", "unexpected argument '%s'", argv[1]);
    StemConfig c;
    const Preset *p = resolve_config("train", &a, &c);
    StemTrainOptions to;
    stem_train_options_defaults(&to);
#define POSITIVE(v, nm) do { if ((v) != UNSET && (v) <= 0) cli_usage("train", "--%s must be positive", nm); } while (0)
    POSITIVE(a.batch, "batch");
    POSITIVE(a.steps, "steps");
    POSITIVE(a.accum, "accum");
    POSITIVE(a.fact_repeats, "fact-repeats");
#undef POSITIVE
    if (a.eval_every != UNSET && a.eval_every < 0) cli_usage("train", "--eval-every must be >= 0");
    if (!isnan(a.lr) && !(a.lr > 0)) cli_usage("train", "--lr must be positive");
    if (!isnan(a.table_lr) && !(a.table_lr > 0)) cli_usage("train", "--table-lr must be positive");
    if (!isnan(a.wd) && !(a.wd >= 0)) cli_usage("train", "--wd must be >= 0");
    if (!isnan(a.prose_mb) && !(a.prose_mb >= 0)) cli_usage("train", "--prose-mb must be >= 0");
    to.batch = a.batch != UNSET ? a.batch : p->batch;
    to.steps = a.steps != UNSET ? a.steps : p->steps;
    to.accum = a.accum != UNSET ? a.accum : 1;
    to.seq = c.seq_len;
    to.seed = (guint64)a.seed;
    to.threads = a.threads;
    to.eval_every = a.eval_every != UNSET ? a.eval_every : 0;
    to.optim.lr = !isnan(a.lr) ? (float)a.lr : p->lr;
    to.optim.table_lr = !isnan(a.table_lr) ? (float)a.table_lr : to.optim.lr;
    if (!isnan(a.wd)) to.optim.wd = (float)a.wd;
    cli_init_threads(a.threads);

    TrainUi ui = { .steps = to.steps };
    cli_progress_init(&ui.prog, a.quiet);
    GError *e = NULL;
    gint64 t_start = g_get_monotonic_time();

    /* corpus */
    const char *data = stem_data_dir();
    if (!data) cli_fail("data files not found (set STEM_DATA_DIR to the folder with countries.csv)");
    StemCorpusOptions co = { .data_dir = data, .seed = to.seed, .val_fraction = 0.02,
                             .prose_bytes = (size_t)((!isnan(a.prose_mb) ? a.prose_mb : p->prose_mb) * 1e6),
                             .fact_repeats = a.fact_repeats != UNSET ? a.fact_repeats : p->fact_repeats };
    cli_progress_update(&ui.prog, 0, "building the corpus");
    StemCorpus *corpus = stem_corpus_build(&co, &e);
    if (!corpus) cli_fail("%s", e->message);

    /* tokenizer */
    StemTokenizer *tok = stem_tokenizer_train(corpus->train->str, corpus->train->len, c.vocab, on_tok_progress, &ui.prog);
    cli_progress_update(&ui.prog, 1, "encoding");
    size_t n_train = 0, n_val = 0;
    int32_t *train_ids = stem_tokenizer_encode(tok, corpus->train->str, corpus->train->len, &n_train);
    int32_t *val_ids = stem_tokenizer_encode(tok, corpus->val->str, corpus->val->len, &n_val);
    cli_progress_done(&ui.prog);

    /* model */
    StemModel *m = stem_model_new(&c, &e);
    if (!m) cli_fail("%s", e->message);
    m->tok = tok;
    stem_model_init_weights(m, to.seed);
    cli_use_device(m);
    if (!a.quiet && !m->k->is_host) fprintf(stderr, "training on %s\n", m->k->device_name);
    cli_progress_init(&ui.prog, a.quiet);
    StemTrainResult res;
    if (!stem_train(m, train_ids, n_train, val_ids, n_val, &to, on_step, &ui, &res, &e)) cli_fail("%s", e->message);
    cli_progress_done(&ui.prog);

    /* facts: how many capitals does it know? */
    StemFacts *facts = stem_facts_load_default(&e);
    StemFactScore cap = { 0 }, cap_held = { 0 };
    if (facts) {
        stem_eval_facts(m, facts, REL_CAPITAL, STEM_PHRASING_CANONICAL, &cap);
        stem_eval_facts(m, facts, REL_CAPITAL, STEM_PHRASING_HELD_OUT, &cap_held);
    }
    double total_s = (g_get_monotonic_time() - t_start) / 1e6;

    /* save with provenance */
    GHashTable *meta = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    g_hash_table_insert(meta, "provenance", g_strdup_printf(
        "{\"program\":\"stem %s\",\"preset\":\"%s\",\"steps\":%d,\"batch\":%d,\"seq\":%d,\"lr\":%g,\"seed\":%" G_GINT64_FORMAT
        ",\"train_tokens\":%zu,\"val_loss\":%.4f,\"final_loss\":%.4f,\"capital_top1\":%.4f}",
        STEM_VERSION, p->name, to.steps, to.batch, to.seq, to.optim.lr, a.seed, n_train, res.val_loss,
        res.final_loss, cap.total ? (double)cap.top1 / cap.total : 0.0));
    if (!stem_model_save(m, a.out, a.tables_bf16, meta, &e)) cli_fail("%s", e->message);
    g_hash_table_unref(meta);

    if (!a.quiet)
        fprintf(stderr, "trained %d steps in %.0f s (%.0f tok/s); loss %.3f, val %.3f; capitals %d/%d; wrote %s\n",
                res.steps_done, res.elapsed_s, res.tokens_per_s, res.final_loss, res.val_loss, cap.top1, cap.total,
                a.out);
    if (a.json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "out"); json_builder_add_string_value(b, a.out);
        json_builder_set_member_name(b, "preset"); json_builder_add_string_value(b, p->name);
        cli_json_device(b, m);
        char *sl = stem_config_layers_string(&c);
        json_builder_set_member_name(b, "stem_layers"); json_builder_add_string_value(b, sl);
        g_free(sl);
        json_builder_set_member_name(b, "steps"); json_builder_add_int_value(b, res.steps_done);
        json_builder_set_member_name(b, "train_tokens"); json_builder_add_int_value(b, (gint64)n_train);
        json_builder_set_member_name(b, "tokens_per_s"); json_builder_add_double_value(b, res.tokens_per_s);
        json_builder_set_member_name(b, "train_seconds"); json_builder_add_double_value(b, res.elapsed_s);
        json_builder_set_member_name(b, "total_seconds"); json_builder_add_double_value(b, total_s);
        json_builder_set_member_name(b, "final_loss"); json_builder_add_double_value(b, res.final_loss);
        json_builder_set_member_name(b, "val_loss"); json_builder_add_double_value(b, res.val_loss);
        add_counts_json(b, &c);
        json_builder_set_member_name(b, "capital_top1"); json_builder_add_double_value(b, cap.total ? (double)cap.top1 / cap.total : 0);
        json_builder_set_member_name(b, "capital_top1_heldout"); json_builder_add_double_value(b, cap_held.total ? (double)cap_held.top1 / cap_held.total : 0);
        json_builder_end_object(b);
        cli_print_json(b);
    }
    if (facts) stem_facts_free(facts);
    g_free(train_ids);
    g_free(val_ids);
    stem_corpus_free(corpus);
    stem_model_free(m);
    return 0;
}
