/* stem info / topk / generate / eval: commands that read a model. */
#include "commands.h"
#include "cli.h"
#include "editdb/editdb.h"
#include "engine/checkpoint.h"
#include "engine/facteval.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ info */

int cmd_info(int argc, char **argv)
{
    gboolean json = FALSE;
    GOptionEntry entries[] = {
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print JSON", NULL },
        { NULL }
    };
    cli_parse("info", "MODEL", "Config, parameter counts (total / active per token), FLOPs per token of\n"
              "STEM vs the dense equivalent, and the file's sha256.", entries, &argc, &argv);
    if (argc != 2) cli_usage("info", "expected exactly one MODEL argument");
    StemModel *m = cli_load_model(argv[1]);
    GError *e = NULL;
    const char *sha = stem_model_sha256(m, &e);
    if (!sha) cli_fail("%s", e->message);
    const StemConfig *c = &m->cfg;
    StemCounts k;
    stem_config_counts(c, &k);
    char *layers = stem_config_layers_string(c);
    const char *prov = stem_model_metadata(m, "provenance");
    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "path"); json_builder_add_string_value(b, argv[1]);
        json_builder_set_member_name(b, "sha256"); json_builder_add_string_value(b, sha);
        json_builder_set_member_name(b, "config");
        char *cj = stem_config_to_json(c);
        JsonNode *cn = json_from_string(cj, NULL);
        json_builder_add_value(b, cn);
        g_free(cj);
        json_builder_set_member_name(b, "kind"); json_builder_add_string_value(b, c->stem_mask ? "stem" : "dense");
        json_builder_set_member_name(b, "tables_dtype");
        json_builder_add_string_value(b, stem_tables_dtype(m->tables) == STEM_TABLE_BF16 ? "bf16" : "f32");
        json_builder_set_member_name(b, "params_total"); json_builder_add_int_value(b, k.total);
        json_builder_set_member_name(b, "params_tables"); json_builder_add_int_value(b, k.tables);
        json_builder_set_member_name(b, "params_active"); json_builder_add_int_value(b, k.active_per_token);
        json_builder_set_member_name(b, "flops_per_token"); json_builder_add_double_value(b, k.flops_per_token);
        json_builder_set_member_name(b, "dense_flops_per_token"); json_builder_add_double_value(b, k.dense_flops_per_token);
        json_builder_set_member_name(b, "tokenizer_vocab"); json_builder_add_int_value(b, m->tok ? stem_tokenizer_vocab_size(m->tok) : 0);
        if (prov) {
            JsonNode *pn = json_from_string(prov, NULL);
            json_builder_set_member_name(b, "provenance");
            if (pn) json_builder_add_value(b, pn);
            else json_builder_add_string_value(b, prov);
        }
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        printf("model        %s\n", argv[1]);
        printf("sha256       %s\n", sha);
        printf("kind         %s (STEM layers: %s)\n", c->stem_mask ? "STEM" : "dense", *layers ? layers : "none");
        printf("config       vocab %d, dim %d, layers %d, heads %d (kv %d), ffn %d, seq %d\n", c->vocab, c->dim,
               c->n_layers, c->n_heads, c->n_kv_heads, c->ffn_dim, c->seq_len);
        printf("tables       %s\n", stem_tables_dtype(m->tables) == STEM_TABLE_BF16 ? "bf16" : "f32");
        printf("parameters   %.2f M total, %.2f M in STEM tables, %.2f M active per token\n", k.total / 1e6,
               k.tables / 1e6, k.active_per_token / 1e6);
        printf("FLOPs/token  %.2f M (dense equivalent %.2f M, %.1f%% saved)\n", k.flops_per_token / 1e6,
               k.dense_flops_per_token / 1e6, 100.0 * (1.0 - k.flops_per_token / k.dense_flops_per_token));
        if (prov) printf("provenance   %s\n", prov);
    }
    g_free(layers);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ topk */

/* --db EDITS.db: the model's tables become base + the applied patch sets. */
static void load_edits(StemModel *m, const char *db)
{
    GError *e = NULL;
    if (db && !stem_editdb_load_overlay(db, m, &e)) cli_fail("%s", e->message);
}

int cmd_topk(int argc, char **argv)
{
    char *db = NULL;
    gboolean json = FALSE;
    int k = 5, threads = 1;
    GOptionEntry entries[] = {
        { "k", 'k', 0, G_OPTION_ARG_INT, &k, "how many tokens (default 5)", "K" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "worker threads (default 1: lowest latency for one prompt)", "N" },
        { "db", 0, 0, G_OPTION_ARG_FILENAME, &db, "run on the effective tables of this edit database", "EDITS.db" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print JSON", NULL },
        { NULL }
    };
    cli_parse_compute("topk", "MODEL PROMPT", "The k most likely next tokens after PROMPT.", entries, &argc, &argv);
    if (argc != 3) cli_usage("topk", "expected MODEL and PROMPT");
    if (k < 1) cli_usage("topk", "--k must be at least 1");
    cli_init_threads(threads);
    StemModel *m = cli_load_model(argv[1]);
    load_edits(m, db);
    int n = 0;
    int32_t *ids = cli_encode(m, argv[2], &n);
    if (k > m->cfg.vocab) k = m->cfg.vocab;
    StemTopk *top = g_new(StemTopk, k);
    k = stem_topk(m, ids, n, k, top);
    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "prompt"); json_builder_add_string_value(b, argv[2]);
        cli_json_device(b, m);
        json_builder_set_member_name(b, "ids");
        json_builder_begin_array(b);
        for (int i = 0; i < n; i++) json_builder_add_int_value(b, ids[i]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "tokens");
        json_builder_begin_array(b);
        for (int i = 0; i < n; i++) {
            char *t = cli_token_text(m, ids[i]);
            json_builder_add_string_value(b, t);
            g_free(t);
        }
        json_builder_end_array(b);
        json_builder_set_member_name(b, "topk");
        json_builder_begin_array(b);
        for (int i = 0; i < k; i++) {
            char *t = cli_token_text(m, top[i].id);
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "id"); json_builder_add_int_value(b, top[i].id);
            json_builder_set_member_name(b, "token"); json_builder_add_string_value(b, t);
            json_builder_set_member_name(b, "prob"); json_builder_add_double_value(b, top[i].prob);
            json_builder_end_object(b);
            g_free(t);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        for (int i = 0; i < k; i++) {
            char *t = cli_token_display(m, top[i].id);
            printf("%2d  %6.2f%%  %-20s (id %d)\n", i + 1, 100.0 * top[i].prob, t, top[i].id);
            g_free(t);
        }
    }
    g_free(top);
    g_free(ids);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ generate */

int cmd_generate(int argc, char **argv)
{
    char *db = NULL;
    int n_new = 50, threads = 1;
    double temperature = 0.0;
    gint64 seed = 1;
    gboolean json = FALSE;
    GOptionEntry entries[] = {
        { "n", 'n', 0, G_OPTION_ARG_INT, &n_new, "tokens to generate (default 50)", "N" },
        { "temperature", 't', 0, G_OPTION_ARG_DOUBLE, &temperature, "sampling temperature (0 = greedy, default)", "T" },
        { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "sampling seed", "S" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "worker threads", "N" },
        { "db", 0, 0, G_OPTION_ARG_FILENAME, &db, "run on the effective tables of this edit database", "EDITS.db" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print JSON", NULL },
        { NULL }
    };
    cli_parse_compute("generate", "MODEL PROMPT", "Continue PROMPT (greedy by default).", entries, &argc, &argv);
    if (argc != 3) cli_usage("generate", "expected MODEL and PROMPT");
    if (n_new < 1 || n_new > 100000) cli_usage("generate", "--n must be in 1..100000");
    if (temperature < 0) cli_usage("generate", "--temperature must be >= 0");
    cli_init_threads(threads);
    StemModel *m = cli_load_model(argv[1]);
    load_edits(m, db);
    int n = 0, n_out = 0;
    int32_t *ids = cli_encode(m, argv[2], &n);
    int32_t *gen = stem_generate(m, ids, n, n_new, (float)temperature, (guint64)seed, &n_out);
    size_t len = 0;
    char *text = stem_tokenizer_decode(m->tok, gen, (size_t)n_out, &len);
    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "prompt"); json_builder_add_string_value(b, argv[2]);
        cli_json_device(b, m);
        char *valid = g_utf8_make_valid(text, (gssize)len);
        json_builder_set_member_name(b, "completion"); json_builder_add_string_value(b, valid);
        g_free(valid);
        json_builder_set_member_name(b, "ids");
        json_builder_begin_array(b);
        for (int i = 0; i < n_out; i++) json_builder_add_int_value(b, gen[i]);
        json_builder_end_array(b);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        fwrite(argv[2], 1, strlen(argv[2]), stdout);
        fwrite(text, 1, len, stdout);
        fputc('\n', stdout);
    }
    g_free(text);
    g_free(gen);
    g_free(ids);
    stem_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ eval facts */

static void add_score(JsonBuilder *b, const char *name, const StemFactScore *s)
{
    json_builder_set_member_name(b, name);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "prompts"); json_builder_add_int_value(b, s->total);
    json_builder_set_member_name(b, "top1"); json_builder_add_double_value(b, s->total ? (double)s->top1 / s->total : 0);
    json_builder_set_member_name(b, "full_answer"); json_builder_add_double_value(b, s->total ? (double)s->full / s->total : 0);
    json_builder_set_member_name(b, "mean_p"); json_builder_add_double_value(b, s->total ? s->p_sum / s->total : 0);
    json_builder_end_object(b);
}

int cmd_eval(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "edit") || !strcmp(argv[1], "edits"))) return cmd_eval_edits(argc - 1, argv + 1);
    gboolean json = FALSE;
    int threads = 0;
    char *relation = NULL;
    GOptionEntry entries[] = {
        { "relation", 'r', 0, G_OPTION_ARG_STRING, &relation, "only this relation (capital, language, ...)", "REL" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "worker threads", "N" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print JSON", NULL },
        { NULL }
    };
    cli_parse_compute("eval", "facts MODEL", "Fact recall per relation: top-1 next token and full greedy answer, on the\n"
              "canonical prompt, on all training phrasings and on held-out phrasings.", entries, &argc, &argv);
    if (argc != 3 || strcmp(argv[1], "facts")) cli_usage("eval", "expected 'facts MODEL', 'edit ID' or 'edits'");
    int rel = -1;
    if (relation) {
        for (int r = 0; r < REL_COUNT; r++)
            if (!strcmp(relation, stem_relation_name((StemRelation)r))) rel = r;
        if (rel < 0) cli_usage("eval", "unknown relation '%s'", relation);
    }
    cli_init_threads(threads);
    StemModel *m = cli_load_model(argv[2]);
    if (!m->tok) cli_fail("the model has no tokenizer");
    GError *e = NULL;
    StemFacts *f = stem_facts_load_default(&e);
    if (!f) cli_fail("%s", e->message);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    cli_json_device(b, m);
    if (!json) printf("%-13s %10s %10s %10s\n", "relation", "canonical", "train", "held-out");
    for (int r = 0; r < REL_COUNT; r++) {
        if (rel >= 0 && r != rel) continue;
        StemFactScore sc, st, sh;
        stem_eval_facts(m, f, r, STEM_PHRASING_CANONICAL, &sc);
        stem_eval_facts(m, f, r, STEM_PHRASING_TRAIN, &st);
        stem_eval_facts(m, f, r, STEM_PHRASING_HELD_OUT, &sh);
        json_builder_set_member_name(b, stem_relation_name((StemRelation)r));
        json_builder_begin_object(b);
        add_score(b, "canonical", &sc);
        add_score(b, "train_phrasings", &st);
        add_score(b, "held_out_phrasings", &sh);
        json_builder_end_object(b);
        if (!json)
            printf("%-13s %9.1f%% %9.1f%% %9.1f%%   (top-1 of the first answer token; n = %d/%d/%d)\n",
                   stem_relation_name((StemRelation)r), 100.0 * sc.top1 / MAX(sc.total, 1),
                   100.0 * st.top1 / MAX(st.total, 1), 100.0 * sh.top1 / MAX(sh.total, 1), sc.total, st.total, sh.total);
    }
    json_builder_end_object(b);
    if (json) cli_print_json(b);
    else g_object_unref(b);
    stem_facts_free(f);
    stem_model_free(m);
    return 0;
}
