/* bench_topk: latency of stem_topk (forward over a prompt, last-position logits,
 * softmax, top-k) for a fixed-length prompt on a model file, as a user of
 * `stem topk` or the workbench would see it once the model is loaded.
 *
 * The prompt: with a tokenizer in the file, --text is encoded (repeated until
 * long enough) and the LAST --prompt-len tokens are kept; without one, fixed
 * pseudo-random ids. The ids are printed so the PyTorch reference can run the
 * very same prompt (bench/reference_torch.py topk --ids ...), and the top-k ids
 * and probabilities are printed so the two can be compared.
 *
 * Each --threads setting is timed over --runs calls, in blocks that alternate
 * between the settings (so machine noise hits them alike); median and p90.
 *
 * --device / --offload / --math (bench/bench_device.h) move the model to a
 * backend after loading; a call returns once the logits are back on the host
 * (stem_topk downloads them), and the backend is synchronized before every
 * clock read all the same. On a device, a model loaded from a file serves its
 * STEM tables through the row cache (the whole vocabulary unless --offload F).
 *
 * --make-default OUT writes a randomly initialized model with the `default`
 * preset architecture of app/cmd-train.c and exits: a fallback for bench/run.sh
 * when the `stem` CLI is not built (run.sh prefers `stem init --preset default`). */
#include "bench_common.h"
#include "bench_device.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "kernels/cpu/pool.h"

#include <stdio.h>

#define DEFAULT_TEXT                                                                                           \
    "The capital of France is Paris. The capital of Spain is Madrid. The capital of Italy is Rome. "          \
    "The capital of Germany is Berlin. The capital of Portugal is Lisbon. The capital of Japan is"

static int make_default(const char *out)
{
    /* mirrors the `default` preset in app/cmd-train.c */
    StemConfig c;
    stem_config_defaults(&c);
    c.vocab = 4096; c.dim = 256; c.n_layers = 4; c.n_heads = 4; c.n_kv_heads = 4; c.ffn_dim = 512; c.seq_len = 128;
    GError *err = NULL;
    if (!stem_config_parse_layers("all-but-first", c.n_layers, &c.stem_mask, &err)) goto fail;
    StemModel *m = stem_model_new(&c, &err);
    if (!m) goto fail;
    stem_model_init_weights(m, 1);
    m->tok = stem_tokenizer_train("", 0, STEM_TOK_N_BASE, NULL, NULL);
    GHashTable *meta = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(meta, "provenance", "bench_topk --make-default (random weights)");
    gboolean ok = stem_model_save(m, out, FALSE, meta, &err);
    g_hash_table_unref(meta);
    stem_model_free(m);
    if (!ok) goto fail;
    return 0;
fail:
    fprintf(stderr, "bench_topk: %s\n", err->message);
    return 1;
}

static int *parse_int_list(const char *s, int *n)
{
    char **parts = g_strsplit(s, ",", -1);
    int cnt = (int)g_strv_length(parts);
    int *v = g_new(int, cnt > 0 ? cnt : 1);
    *n = 0;
    for (int i = 0; i < cnt; i++) {
        char *end = NULL;
        long x = strtol(parts[i], &end, 10);
        if (end && !*end && x >= 1 && x <= 256) v[(*n)++] = (int)x;
    }
    g_strfreev(parts);
    return v;
}

int main(int argc, char **argv)
{
    char *model_path = NULL, *threads_s = NULL, *text = NULL, *make_out = NULL;
    int runs = 200, warmup = 20, k = 5, plen = 32, block = 25;
    BenchDeviceOpts dev = { 0 };
    GOptionEntry entries[] = {
        { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path, "model file (safetensors)", "PATH" },
        { "threads", 0, 0, G_OPTION_ARG_STRING, &threads_s, "comma list of pool sizes (1,2)", "LIST" },
        { "runs", 0, 0, G_OPTION_ARG_INT, &runs, "timed calls per thread setting (200)", "N" },
        { "warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "untimed calls per setting (20)", "N" },
        { "block", 0, 0, G_OPTION_ARG_INT, &block, "calls per block when alternating settings (25)", "N" },
        { "k", 'k', 0, G_OPTION_ARG_INT, &k, "top-k (5)", "K" },
        { "prompt-len", 0, 0, G_OPTION_ARG_INT, &plen, "prompt tokens (32)", "N" },
        { "text", 0, 0, G_OPTION_ARG_STRING, &text, "prompt text (a capitals sentence)", "TEXT" },
        { "make-default", 0, 0, G_OPTION_ARG_FILENAME, &make_out, "write a random default-preset model and exit",
          "OUT" },
        BENCH_DEVICE_ENTRIES(dev),
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new("- stem_topk latency");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "bench_topk: %s\n", err->message);
        return 2;
    }
    g_option_context_free(ctx);
    if (make_out) return make_default(make_out);
    if (!model_path) {
        fprintf(stderr, "bench_topk: --model PATH is required\n");
        return 2;
    }
    int n_thr = 0;
    int *thr = parse_int_list(threads_s ? threads_s : "1,2", &n_thr);
    if (n_thr == 0 || runs < 1 || k < 1 || plen < 1 || block < 1) {
        fprintf(stderr, "bench_topk: bad --threads, --runs, --k, --block or --prompt-len\n");
        return 2;
    }

    double t_load0 = bench_now();
    StemModel *m = stem_model_load(model_path, &err);
    if (!m) {
        fprintf(stderr, "bench_topk: %s\n", err->message);
        return 1;
    }
    double t_load = bench_now() - t_load0;
    const StemKernels *K = bench_open_device("bench_topk", &dev);
    if (!K) return 2;
    double t_dev0 = bench_now();
    if (!stem_model_set_device(m, K, stem_device_offload_capacity(dev.offload, m->cfg.vocab), &err)) {
        fprintf(stderr, "bench_topk: %s\n", err->message);
        return 1;
    }
    K->synchronize();
    double t_dev = bench_now() - t_dev0;
    const int V = m->cfg.vocab;
    if (plen > m->cfg.seq_len) plen = m->cfg.seq_len;

    /* the prompt */
    int32_t *ids = g_new(int32_t, plen);
    const char *source = "ids";
    if (m->tok) {
        const char *t = text ? text : DEFAULT_TEXT;
        GString *s = g_string_new(t);
        size_t n = 0;
        int32_t *enc = stem_tokenizer_encode(m->tok, s->str, s->len, &n);
        for (int rep = 0; n < (size_t)plen && rep < 64 && *t; rep++) {
            g_free(enc);
            g_string_prepend(s, " ");
            g_string_prepend(s, t);
            enc = stem_tokenizer_encode(m->tok, s->str, s->len, &n);
        }
        if (n >= (size_t)plen) {
            memcpy(ids, enc + (n - (size_t)plen), sizeof(int32_t) * (size_t)plen);
            source = "text";
        }
        g_free(enc);
        g_string_free(s, TRUE);
    }
    if (!strcmp(source, "ids"))
        for (int i = 0; i < plen; i++) ids[i] = (int32_t)((1000003ull * (uint64_t)(i + 1) + 12345) % (uint64_t)V);

    StemTopk *top = g_new(StemTopk, k);
    double **lat = g_new(double *, n_thr);
    int *done = g_new0(int, n_thr);
    for (int i = 0; i < n_thr; i++) {
        lat[i] = g_new(double, runs);
        pool_init(thr[i]);
        for (int w = 0; w < warmup; w++) stem_topk(m, ids, plen, k, top);
    }
    if (m->offload) stem_offload_reset_stats(m->offload);   /* statistics of the timed calls */
    /* alternate blocks of calls between the thread settings */
    for (int left = 1; left;) {
        left = 0;
        for (int i = 0; i < n_thr; i++) {
            if (done[i] >= runs) continue;
            pool_init(thr[i]);
            stem_topk(m, ids, plen, k, top);     /* first call after a pool restart: untimed */
            for (int b = 0; b < block && done[i] < runs; b++) {
                K->synchronize();
                double t0 = bench_now();
                stem_topk(m, ids, plen, k, top);
                K->synchronize();
                lat[i][done[i]++] = (bench_now() - t0) * 1e3;
            }
            left |= done[i] < runs;
        }
    }
    int nk = stem_topk(m, ids, plen, k, top);

    char *sl = stem_config_layers_string(&m->cfg);
    char *path_esc = g_strescape(model_path, NULL);
    printf("{\n  \"bench\": \"topk\",\n  \"model\": \"%s\",\n", path_esc);
    g_free(path_esc);
    printf("  \"config\": {\"vocab\": %d, \"dim\": %d, \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, \"ffn\": %d, "
           "\"seq\": %d, \"stem_layers\": [%s]},\n",
           V, m->cfg.dim, m->cfg.n_layers, m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.ffn_dim, m->cfg.seq_len, sl);
    bench_print_device(stdout, &dev, K);
    bench_print_offload(stdout, m, dev.offload);
    printf("  \"set_device_ms\": %.2f,\n", t_dev * 1e3);
    printf("  \"load_ms\": %.2f,\n  \"prompt_len\": %d,\n  \"prompt_source\": \"%s\",\n  \"prompt_ids\": [", t_load * 1e3,
           plen, source);
    for (int i = 0; i < plen; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("],\n  \"k\": %d,\n  \"runs\": %d,\n  \"latency\": [\n", k, runs);
    for (int i = 0; i < n_thr; i++)
        printf("    {\"threads\": %d, \"median_ms\": %.4f, \"p90_ms\": %.4f, \"min_ms\": %.4f, \"mean_ms\": %.4f}%s\n",
               thr[i], bench_quantile(lat[i], runs, 0.5), bench_quantile(lat[i], runs, 0.9), bench_min(lat[i], runs),
               bench_mean(lat[i], runs), i + 1 < n_thr ? "," : "");
    printf("  ],\n  \"topk\": [");
    for (int i = 0; i < nk; i++) printf("%s{\"id\": %d, \"prob\": %.6f}", i ? ", " : "", top[i].id, top[i].prob);
    printf("]\n}\n");

    g_free(sl);
    for (int i = 0; i < n_thr; i++) g_free(lat[i]);
    g_free(lat); g_free(done); g_free(top); g_free(ids); g_free(thr);
    g_free(model_path); g_free(threads_s); g_free(text); g_free(make_out);
    g_free(dev.device); g_free(dev.math);
    stem_model_free(m);
    pool_shutdown();
    return 0;
}
