/* bench_decode: prefill and per-token decode latency of greedy generation, as
 * `stem generate` (stem_generate, temperature 0) does it, batch 1.
 *
 *   prefill      stem_next_probs over a --prompt-len P prompt: one forward with
 *                the head for the last position only (last_only), the logits
 *                back on the host, softmax; then the argmax. What the first
 *                token of a generation costs.
 *   decode       --gen G more tokens, each: append the previous argmax and run
 *                stem_next_probs again over the window (the last seq_len ids).
 *                THE ENGINE HAS NO KV CACHE: every decode step re-runs the whole
 *                forward over the window (P + i tokens, at most seq_len), so a
 *                decode step costs about what a prefill of the window costs. This
 *                measures that, as it is; reference_torch.py decode does the same
 *                (full re-forward per token) so the comparison is like for like.
 *
 * The model: --model FILE (mapped, the inference path of the CLI: on a device
 * its STEM tables are served through the row cache), or a randomly initialized
 * one from the architecture flags; --save-model OUT writes that random model and
 * exits (bench/gpu.sh saves one so both sides decode the same weights and the
 * generated ids can be compared). The prompt: ids (1000003 (i+1) + 12345) mod V,
 * i < P, also what reference_torch.py decode uses unless given --ids.
 *
 * --warmup untimed prefills and one untimed decode run first (a device tunes
 * each new shape once), then --runs timed prefills and --decode-runs timed
 * decode runs of G tokens. The backend is synchronized before every clock read.
 * Prints one JSON object on stdout. */
#include "bench_common.h"
#include "bench_device.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "kernels/cpu/pool.h"

#include <stdio.h>

static int argmax(const float *p, int V)
{
    int best = 0;
    for (int i = 1; i < V; i++) if (p[i] > p[best]) best = i;
    return best;
}

static void print_stats(const char *name, const double *v, int n, const char *tail)
{
    printf("  \"%s\": {\"median_ms\": %.4f, \"p90_ms\": %.4f, \"min_ms\": %.4f, \"mean_ms\": %.4f, \"n\": %d}%s\n", name,
           bench_quantile(v, n, 0.5), bench_quantile(v, n, 0.9), bench_min(v, n), bench_mean(v, n), n, tail);
}

int main(int argc, char **argv)
{
    int vocab = 4096, dim = 256, layers = 6, heads = 8, kv_heads = 0, ffn = 688, seq = 128;
    int plen = 0, gen = 32, runs = 20, decode_runs = 2, warmup = 3, threads = 2;
    gint64 seed = 1;
    char *stem_layers = NULL, *model_path = NULL, *save_path = NULL;
    BenchDeviceOpts dev = { 0 };
    GOptionEntry entries[] = {
        { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path, "model file (default: random weights)", "PATH" },
        { "save-model", 0, 0, G_OPTION_ARG_FILENAME, &save_path, "write the random model to OUT and exit", "OUT" },
        { "vocab", 0, 0, G_OPTION_ARG_INT, &vocab, "vocabulary size (4096)", "N" },
        { "dim", 0, 0, G_OPTION_ARG_INT, &dim, "model width (256)", "N" },
        { "layers", 0, 0, G_OPTION_ARG_INT, &layers, "layers (6)", "N" },
        { "heads", 0, 0, G_OPTION_ARG_INT, &heads, "attention heads (8)", "N" },
        { "kv-heads", 0, 0, G_OPTION_ARG_INT, &kv_heads, "key/value heads (default: --heads)", "N" },
        { "ffn", 0, 0, G_OPTION_ARG_INT, &ffn, "FFN hidden size (688)", "N" },
        { "seq", 0, 0, G_OPTION_ARG_INT, &seq, "context length (128)", "N" },
        { "stem-layers", 0, 0, G_OPTION_ARG_STRING, &stem_layers,
          "none | all | all-but-first | every-K | list (all-but-first)", "SPEC" },
        { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "seed for the random weights (1)", "S" },
        { "batch", 0, 0, G_OPTION_ARG_INT, &(int){ 0 }, "ignored (batch 1; accepted so run.sh's ARCH fits)", "N" },
        { "prompt-len", 0, 0, G_OPTION_ARG_INT, &plen, "prompt tokens P (default: context / 2)", "P" },
        { "gen", 0, 0, G_OPTION_ARG_INT, &gen, "decoded tokens G per run (32)", "G" },
        { "runs", 0, 0, G_OPTION_ARG_INT, &runs, "timed prefills (20)", "N" },
        { "decode-runs", 0, 0, G_OPTION_ARG_INT, &decode_runs, "timed decode runs of G tokens (2)", "N" },
        { "warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "untimed prefills first (3)", "N" },
        { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "pool threads (2; 0 = all cores)", "N" },
        BENCH_DEVICE_ENTRIES(dev),
        { NULL }
    };
    GOptionContext *ctx = g_option_context_new("- prefill and decode latency");
    g_option_context_add_main_entries(ctx, entries, NULL);
    GError *err = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "bench_decode: %s\n", err->message);
        return 2;
    }
    g_option_context_free(ctx);
    if (gen < 1 || runs < 1 || decode_runs < 1 || warmup < 0 || plen < 0) {
        fprintf(stderr, "bench_decode: --gen, --runs, --decode-runs must be >= 1\n");
        return 2;
    }

    StemModel *m = NULL;
    double t_load0 = bench_now();
    if (model_path) {
        m = stem_model_load(model_path, &err);
    } else {
        StemConfig c;
        stem_config_defaults(&c);
        c.vocab = vocab;
        c.dim = dim;
        c.n_layers = layers;
        c.n_heads = heads;
        c.n_kv_heads = kv_heads > 0 ? kv_heads : heads;
        c.ffn_dim = ffn;
        c.seq_len = seq;
        if (stem_config_parse_layers(stem_layers ? stem_layers : "all-but-first", layers, &c.stem_mask, &err) &&
            stem_config_validate(&c, &err))
            m = stem_model_new(&c, &err);
        if (m) stem_model_init_weights(m, (guint64)seed);
    }
    if (!m) {
        fprintf(stderr, "bench_decode: %s\n", err->message);
        return model_path ? 1 : 2;
    }
    const double t_load = bench_now() - t_load0;
    if (save_path) {
        GHashTable *meta = g_hash_table_new(g_str_hash, g_str_equal);
        g_hash_table_insert(meta, "provenance", "bench_decode --save-model (random weights)");
        gboolean ok = stem_model_save(m, save_path, FALSE, meta, &err);
        g_hash_table_unref(meta);
        stem_model_free(m);
        if (!ok) {
            fprintf(stderr, "bench_decode: %s\n", err->message);
            return 1;
        }
        fprintf(stderr, "bench_decode: wrote %s\n", save_path);
        return 0;
    }

    const StemKernels *K = bench_open_device("bench_decode", &dev);
    if (!K) return 2;
    pool_init(threads);
    double t_dev0 = bench_now();
    if (!stem_model_set_device(m, K, stem_device_offload_capacity(dev.offload, m->cfg.vocab), &err)) {
        fprintf(stderr, "bench_decode: %s\n", err->message);
        return 1;
    }
    K->synchronize();
    const double t_dev = bench_now() - t_dev0;

    const int V = m->cfg.vocab, S = m->cfg.seq_len;
    if (plen == 0) plen = S / 2 > 0 ? S / 2 : 1;
    if (plen > S) plen = S;
    int32_t *all = g_new(int32_t, (size_t)plen + gen);
    for (int i = 0; i < plen; i++) all[i] = (int32_t)((1000003ull * (uint64_t)(i + 1) + 12345) % (uint64_t)V);
    float *probs = g_new(float, V);
    fprintf(stderr, "bench_decode: %s (%s), prompt %d, %d decoded tokens, context %d\n", K->device_name, K->name, plen,
            gen, S);

    /* prefill */
    for (int w = 0; w < warmup; w++) stem_next_probs(m, all, plen, probs);
    if (m->offload) stem_offload_reset_stats(m->offload);   /* statistics: every call after the warm-up */
    double *t_pre = g_new(double, runs);
    int first = -1;
    for (int r = 0; r < runs; r++) {
        K->synchronize();
        double t0 = bench_now();
        stem_next_probs(m, all, plen, probs);
        int next = argmax(probs, V);
        K->synchronize();
        t_pre[r] = (bench_now() - t0) * 1e3;
        first = next;
    }

    /* decode: one untimed run, then the timed ones; token i of a run re-runs
     * the forward over the last min(P + i, seq_len) ids */
    double *t_dec = g_new(double, (size_t)gen * decode_runs);
    int n_dec = 0;
    for (int r = -1; r < decode_runs; r++) {
        for (int i = 0; i < gen; i++) {
            K->synchronize();
            double t0 = bench_now();
            stem_next_probs(m, all, plen + i, probs);
            all[plen + i] = argmax(probs, V);
            K->synchronize();
            double dt = (bench_now() - t0) * 1e3;
            if (r >= 0) t_dec[n_dec++] = dt;
        }
    }

    char *sl = stem_config_layers_string(&m->cfg);
    const double dec_mean = bench_mean(t_dec, n_dec);
    printf("{\n  \"bench\": \"decode\",\n  \"engine\": \"stem-workbench\",\n  \"model\": ");
    bench_json_str(stdout, model_path ? model_path : "random");
    printf(",\n  \"config\": {\"vocab\": %d, \"dim\": %d, \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, \"ffn\": %d, "
           "\"seq\": %d, \"stem_layers\": [%s]},\n",
           V, m->cfg.dim, m->cfg.n_layers, m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.ffn_dim, S, sl);
    bench_print_device(stdout, &dev, K);
    bench_print_offload(stdout, m, dev.offload);
    printf("  \"kv_cache\": false,\n  \"threads\": %d,\n  \"load_ms\": %.2f,\n  \"set_device_ms\": %.2f,\n",
           pool_threads(), t_load * 1e3, t_dev * 1e3);
    printf("  \"prompt_len\": %d,\n  \"gen\": %d,\n  \"runs\": %d,\n  \"decode_runs\": %d,\n", plen, gen, runs,
           decode_runs);
    printf("  \"decode_window\": [%d, %d],\n", plen < S ? plen : S, plen + gen - 1 < S ? plen + gen - 1 : S);
    print_stats("prefill", t_pre, runs, ",");
    print_stats("decode_per_token", t_dec, n_dec, ",");
    printf("  \"decode_tokens_per_s\": %.2f,\n", dec_mean > 0 ? 1e3 / dec_mean : 0.0);
    printf("  \"prompt_ids\": [");
    for (int i = 0; i < plen; i++) printf("%s%d", i ? ", " : "", all[i]);
    printf("],\n  \"first_id\": %d,\n  \"generated_ids\": [", first);
    for (int i = 0; i < gen; i++) printf("%s%d", i ? ", " : "", all[plen + i]);
    printf("]\n}\n");

    g_free(sl);
    g_free(all); g_free(probs); g_free(t_pre); g_free(t_dec);
    g_free(stem_layers); g_free(model_path); g_free(save_path);
    g_free(dev.device); g_free(dev.math);
    stem_model_free(m);
    pool_shutdown();
    return 0;
}
