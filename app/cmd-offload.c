/* stem bench offload: the offloaded-tables policy (engine/rowcache.h) simulated on the
 * CPU over the corpus prose, tokenized with the model's tokenizer.
 *
 * The prose stream is cut into chunks of --chunk tokens; each chunk is deduplicated and
 * its unique ids are looked up in an LFU row cache of --cache-fraction × vocab tokens
 * (a chunk with more unique ids than the cache holds goes in waves). Reported: hit rate
 * (per unique lookup, and per position), dedup saving per chunk (1 − unique/len: mean and
 * distribution), rows and bytes moved vs. no cache (dedup only) and vs. moving every
 * position's rows, evictions.
 *
 * --run N adds the real thing: N batches of --batch chunks go through the model's
 * forward pass on --device, once with the tables resident on the device (a cache
 * holding the whole vocabulary, warmed first) and once offloaded through the
 * real row cache at --cache-fraction, staging batch i+1 while batch i computes
 * (prefetch). Reported: time per batch of both, their ratio, and the store's own
 * statistics (hit rate, bytes moved, copy time, stall time, overlap achieved). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "commands.h"
#include "cli.h"
#include "engine/corpus.h"
#include "engine/offload.h"
#include "engine/rowcache.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *sorted, size_t n, double q)
{
    if (n == 0) return 0;
    size_t i = (size_t)floor(q * (double)(n - 1) + 0.5);
    return sorted[MIN(i, n - 1)];
}

static void add_int(JsonBuilder *b, const char *k, gint64 v)
{
    json_builder_set_member_name(b, k);
    json_builder_add_int_value(b, v);
}

static void add_double(JsonBuilder *b, const char *k, double v)
{
    json_builder_set_member_name(b, k);
    json_builder_add_double_value(b, v);
}

static char *human_bytes(double b)
{
    const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    return g_strdup_printf("%.2f %s", b, u[i]);
}

typedef struct {
    int batches;
    double ms_on_device, ms_offloaded;
    double hit_rate;   /* of the store's own lookups */
    StemOffloadStats st;
} RunResult;

/* Batch i of the stream: batch chunks of len tokens (wrapping around). */
static void fill_run_batch(const int32_t *ids, size_t n_ids, int len, int batch, int i, int32_t *out)
{
    for (int b = 0; b < batch; b++) {
        size_t start = ((size_t)i * batch + b) * (size_t)len % (n_ids - (size_t)len + 1);
        memcpy(out + (size_t)b * len, ids + start, sizeof(int32_t) * len);
    }
}

/* One pass of n batches through the forward; with prefetch, batch i+1 is staged
 * while batch i computes. Returns ms per batch (device synchronized). */
static double forward_pass(StemModel *m, const int32_t *ids, size_t n_ids, int len, int batch, int n,
                           gboolean prefetch, int32_t *cur, int32_t *next)
{
    GError *e = NULL;
    gint64 t0 = g_get_monotonic_time();
    fill_run_batch(ids, n_ids, len, batch, 0, cur);
    for (int i = 0; i < n; i++) {
        if (isnan(stem_model_forward(m, cur, NULL, batch, len, FALSE))) cli_fail("the forward pass failed");
        if (i + 1 < n) {
            fill_run_batch(ids, n_ids, len, batch, i + 1, next);
            if (prefetch && m->offload && !stem_offload_stage(m->offload, next, batch * len, &e))
                cli_fail("%s", e->message);
            int32_t *t = cur; cur = next; next = t;
        }
    }
    m->k->synchronize();
    return (g_get_monotonic_time() - t0) / 1e3 / n;
}

static void timed_runs(StemModel *m, const int32_t *ids, size_t n_ids, int len, int batch, int n, int capacity,
                       gboolean quiet, RunResult *r)
{
    GError *e = NULL;
    const StemKernels *k = m->k;
    int32_t *cur = g_new(int32_t, (size_t)batch * len), *next = g_new(int32_t, (size_t)batch * len);
    if (n_ids < (size_t)len) cli_fail("--run: the stream is shorter than one chunk");
    r->batches = n;
    /* on-device: a cache of the whole vocabulary, warmed by a first pass */
    if (!stem_model_set_device(m, k, m->cfg.vocab, &e)) cli_fail("%s", e->message);
    if (!quiet) fprintf(stderr, "run: warming the on-device tables on %s\n", k->device_name);
    forward_pass(m, ids, n_ids, len, batch, n, TRUE, cur, next);
    if (!quiet) fprintf(stderr, "run: %d batches on-device\n", n);
    r->ms_on_device = forward_pass(m, ids, n_ids, len, batch, n, TRUE, cur, next);
    /* offloaded: the requested cache, statistics from a cold start */
    if (!stem_model_set_device(m, k, capacity, &e)) cli_fail("%s", e->message);
    if (!quiet) fprintf(stderr, "run: %d batches offloaded (cache of %d tokens)\n", n, capacity);
    r->ms_offloaded = forward_pass(m, ids, n_ids, len, batch, n, TRUE, cur, next);
    stem_offload_stats(m->offload, &r->st);
    r->hit_rate = r->st.cache.lookups ? (double)r->st.cache.hits / (double)r->st.cache.lookups : 0;
    g_free(cur);
    g_free(next);
}

static int bench_offload(int argc, char **argv)
{
    char *model = NULL;
    double fraction = 0.05, prose_mb = 2;
    int chunk = 128, run_batches = 0, batch = 8;
    gboolean json = FALSE, in_cache = FALSE;
    GOptionEntry entries[] = {
        { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model, "model file (tokenizer, vocabulary, table shapes)", "M" },
        { "cache-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &fraction, "cache capacity as a fraction of the vocabulary (default 0.05)", "F" },
        { "chunk", 0, 0, G_OPTION_ARG_INT, &chunk, "tokens per chunk (default 128)", "N" },
        { "prose-mb", 0, 0, G_OPTION_ARG_DOUBLE, &prose_mb, "megabytes of corpus prose to stream (default 2; 0 = all)", "MB" },
        { "in-cache-lfu", 0, 0, G_OPTION_ARG_NONE, &in_cache, "forget a token's count when it is evicted (default: keep it)", NULL },
        { "run", 0, 0, G_OPTION_ARG_INT, &run_batches, "also time N batches of real forward passes, on-device vs offloaded tables", "N" },
        { "batch", 0, 0, G_OPTION_ARG_INT, &batch, "chunks per batch with --run (default 8)", "B" },
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print JSON", NULL },
        { NULL }
    };
    cli_parse_compute("bench offload", "", "Simulate the offloaded-tables policy on the CPU: per chunk, dedup the token ids\n"
              "and look the unique ones up in an LFU (LRU tie-break) cache of table rows. Prints the\n"
              "hit rate, the dedup saving per chunk and the rows and bytes a device would receive.\n"
              "With --run N, also times N batches of real forward passes on --device with the tables\n"
              "resident vs offloaded through the real cache (prefetching the next batch), with the\n"
              "store's hit rate, bytes moved and the copy/compute overlap achieved.",
              entries, &argc, &argv);
    if (argc > 1) cli_usage("bench offload", "unexpected argument '%s'", argv[1]);
    if (!model) cli_usage("bench offload", "--model is required");
    if (!(fraction > 0 && fraction <= 1)) cli_usage("bench offload", "--cache-fraction must be in (0, 1]");
    if (chunk < 1 || chunk > 1 << 20) cli_usage("bench offload", "--chunk must be between 1 and 1048576");
    if (!(prose_mb >= 0 && prose_mb <= 1e6)) cli_usage("bench offload", "--prose-mb must be 0 or more");
    if (run_batches < 0 || run_batches > 100000) cli_usage("bench offload", "--run must be between 0 and 100000");
    if (batch < 1 || batch > 4096) cli_usage("bench offload", "--batch must be between 1 and 4096");

    StemModel *m = cli_load_model(model);
    if (!m->tok) cli_fail("%s: the model has no tokenizer", model);
    int n_stem = stem_config_n_stem(&m->cfg);
    if (n_stem == 0 || !m->tables) cli_fail("%s: the model has no STEM layers (nothing to offload)", model);
    int vocab = m->cfg.vocab;
    int capacity = (int)(fraction * vocab);
    if (capacity < 1) cli_fail("a cache of %g × %d tokens holds no row; raise --cache-fraction", fraction, vocab);

    const char *data = stem_data_dir();
    if (!data) cli_fail("data files not found (set STEM_DATA_DIR to the folder with countries.csv)");
    StemCorpusOptions co = { .data_dir = data, .prose_bytes = (size_t)(prose_mb * 1e6), .fact_repeats = 0,
                             .val_fraction = 0.02, .seed = 1234 };
    GError *e = NULL;
    StemCorpus *corpus = stem_corpus_build(&co, &e);
    if (!corpus) cli_fail("%s", e->message);
    size_t n_ids = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, corpus->train->str, corpus->train->len, &n_ids);
    stem_corpus_free(corpus);
    if (n_ids == 0) cli_fail("the prose encodes to no tokens");
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            cli_fail("token id %d of the tokenizer is outside the model's vocabulary of %d", ids[i], vocab);

    StemRowCacheOptions ro = stem_rowcache_options_for(m->tables, capacity, !in_cache);
    StemRowCache *cache = stem_rowcache_new(&ro);
    StemDedup *dd = stem_dedup_new(vocab);
    int32_t *work = g_new(int32_t, 4 * (gsize)chunk);
    size_t n_chunks = (n_ids + (size_t)chunk - 1) / (size_t)chunk;
    double *saving = g_new(double, n_chunks);
    guint64 unique_total = 0, waves = 0, split = 0;
    size_t c = 0;
    for (size_t off = 0; off < n_ids; off += (size_t)chunk, c++) {
        int n = (int)MIN((size_t)chunk, n_ids - off);
        int nu = 0, nw = 0;
        if (stem_offload_chunk(cache, dd, ids + off, n, work, &nu, &nw, NULL, &e) < 0) cli_fail("%s", e->message);
        saving[c] = 1.0 - (double)nu / (double)n;
        unique_total += (guint64)nu;
        waves += (guint64)nw;
        split += nw > 1;
    }
    const StemRowCacheStats *st = stem_rowcache_stats(cache);
    double hit_rate = st->lookups ? (double)st->hits / (double)st->lookups : 0;
    double pos_hit_rate = 1.0 - (double)st->misses / (double)n_ids;
    double mean_saving = 0;
    for (size_t i = 0; i < n_chunks; i++) mean_saving += saving[i];
    mean_saving /= (double)n_chunks;
    qsort(saving, n_chunks, sizeof *saving, cmp_double);
    double qs[5] = { 0, 0.1, 0.5, 0.9, 1 };
    const char *qn[5] = { "min", "p10", "p50", "p90", "max" };
    guint64 rb = ro.row_bytes;
    guint64 bytes_no_cache = unique_total * rb, bytes_every = (guint64)n_ids * rb;

    RunResult run = { 0 };
    if (run_batches > 0) {
        if (chunk > m->cfg.seq_len) cli_fail("--run: chunks of %d tokens exceed the model's context of %d", chunk, m->cfg.seq_len);
        timed_runs(m, ids, n_ids, chunk, batch, run_batches, capacity, json, &run);
    }

    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "model"); json_builder_add_string_value(b, model);
        if (run_batches > 0) {
            json_builder_set_member_name(b, "run");
            json_builder_begin_object(b);
            cli_json_device(b, m);
            add_int(b, "batches", run.batches);
            add_int(b, "batch_positions", (gint64)batch * chunk);
            add_double(b, "ms_per_batch_on_device", run.ms_on_device);
            add_double(b, "ms_per_batch_offloaded", run.ms_offloaded);
            add_double(b, "offloaded_over_on_device", run.ms_offloaded / run.ms_on_device);
            add_double(b, "hit_rate", run.hit_rate);
            add_double(b, "dedup_saving", run.st.dedup_saving);
            add_int(b, "bytes_moved", (gint64)run.st.cache.bytes_moved);
            add_int(b, "device_slots", run.st.slots);
            add_double(b, "copy_ms", run.st.copy_ms);
            add_double(b, "stall_ms", run.st.stall_ms);
            add_double(b, "overlap", run.st.overlap);
            json_builder_end_object(b);
        }
        json_builder_set_member_name(b, "policy");
        json_builder_add_string_value(b, in_cache ? "in-cache LFU, LRU tie-break" : "perfect LFU, LRU tie-break");
        add_int(b, "vocab", vocab);
        add_int(b, "n_stem", n_stem);
        add_int(b, "row_bytes", (gint64)rb);
        add_double(b, "cache_fraction", fraction);
        add_int(b, "cache_rows", capacity);
        add_int(b, "chunk", chunk);
        add_int(b, "tokens", (gint64)n_ids);
        add_int(b, "chunks", (gint64)n_chunks);
        add_int(b, "chunks_split", (gint64)split);
        add_int(b, "waves", (gint64)waves);
        add_double(b, "hit_rate", hit_rate);
        add_double(b, "position_hit_rate", pos_hit_rate);
        add_double(b, "dedup_saving", mean_saving);
        json_builder_set_member_name(b, "dedup_saving_distribution");
        json_builder_begin_object(b);
        for (int i = 0; i < 5; i++) add_double(b, qn[i], quantile(saving, n_chunks, qs[i]));
        json_builder_end_object(b);
        add_int(b, "lookups", (gint64)st->lookups);
        add_int(b, "hits", (gint64)st->hits);
        add_int(b, "misses", (gint64)st->misses);
        add_int(b, "evictions", (gint64)st->evictions);
        add_int(b, "rows_moved", (gint64)st->rows_moved);
        add_int(b, "bytes_moved", (gint64)st->bytes_moved);
        add_int(b, "rows_moved_no_cache", (gint64)unique_total);
        add_int(b, "bytes_moved_no_cache", (gint64)bytes_no_cache);
        add_int(b, "rows_moved_every_position", (gint64)n_ids);
        add_int(b, "bytes_moved_every_position", (gint64)bytes_every);
        json_builder_end_object(b);
        cli_print_json(b);
    } else {
        char *h_moved = human_bytes((double)st->bytes_moved), *h_nc = human_bytes((double)bytes_no_cache),
             *h_all = human_bytes((double)bytes_every), *h_row = human_bytes((double)rb);
        printf("model          %s (vocab %d, %d STEM layers, %s per token's rows)\n", model, vocab, n_stem, h_row);
        printf("policy         %s, cache %d rows (%.1f%% of the vocabulary)\n",
               in_cache ? "in-cache LFU, LRU tie-break" : "perfect LFU, LRU tie-break", capacity, 100 * fraction);
        printf("stream         %zu tokens of prose in %zu chunks of %d", n_ids, n_chunks, chunk);
        if (split) printf(" (%" G_GUINT64_FORMAT " chunks larger than the cache, served in %" G_GUINT64_FORMAT " waves)",
                          split, waves);
        printf("\n");
        printf("hit rate       %.2f%% of unique lookups (%" G_GUINT64_FORMAT " / %" G_GUINT64_FORMAT "), %.2f%% of positions\n",
               100 * hit_rate, st->hits, st->lookups, 100 * pos_hit_rate);
        printf("dedup saving   mean %.2f%% per chunk (1 - unique/len);", 100 * mean_saving);
        for (int i = 0; i < 5; i++) printf(" %s %.1f%%", qn[i], 100 * quantile(saving, n_chunks, qs[i]));
        printf("\n");
        printf("rows moved     %" G_GUINT64_FORMAT " (%s) with the cache\n", st->rows_moved, h_moved);
        printf("               %" G_GUINT64_FORMAT " (%s) without a cache (dedup only): cache moves %.1f%% of it\n",
               unique_total, h_nc, unique_total ? 100.0 * (double)st->rows_moved / (double)unique_total : 0);
        printf("               %zu (%s) moving every position's rows: cache moves %.1f%% of it\n", n_ids, h_all,
               100.0 * (double)st->rows_moved / (double)n_ids);
        printf("evictions      %" G_GUINT64_FORMAT "\n", st->evictions);
        if (run_batches > 0) {
            char *h = human_bytes((double)run.st.cache.bytes_moved);
            printf("run on %s: %d batches of %d x %d positions\n", m->k->device_name, run.batches, batch, chunk);
            printf("  on-device    %.2f ms per batch (all rows resident)\n", run.ms_on_device);
            printf("  offloaded    %.2f ms per batch (%.3fx): hit rate %.2f%%, %s moved, %d device slots\n",
                   run.ms_offloaded, run.ms_offloaded / run.ms_on_device,
                   100 * run.hit_rate, h, run.st.slots);
            printf("  copies       %.1f ms copying, %.1f ms of compute stalled on them: overlap %.1f%%%s\n",
                   run.st.copy_ms, run.st.stall_ms, 100 * run.st.overlap,
                   m->k->is_host ? " (the CPU backend copies synchronously: no overlap by design)" : "");
            g_free(h);
        }
        g_free(h_moved); g_free(h_nc); g_free(h_all); g_free(h_row);
    }
    g_free(saving);
    g_free(work);
    g_free(ids);
    stem_dedup_free(dd);
    stem_rowcache_free(cache);
    stem_model_free(m);
    g_free(model);
    return 0;
}

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} BenchCommand;

static const BenchCommand benches[] = {
    { "offload", bench_offload, "offloaded tables: dedup and LFU row-cache statistics, simulated on the CPU" },
};

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *out = argc < 2 ? stderr : stdout;
        fprintf(out, "Usage: stem bench BENCHMARK [OPTIONS]\n\nBenchmarks built into the program.\n\nBenchmarks:\n");
        for (size_t i = 0; i < G_N_ELEMENTS(benches); i++)
            fprintf(out, "  %-8s %s\n", benches[i].name, benches[i].summary);
        fprintf(out, "\nRun 'stem bench BENCHMARK --help' for its options.\n");
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(benches); i++)
        if (!strcmp(argv[1], benches[i].name)) return benches[i].fn(argc - 1, argv + 1);
    cli_usage("bench", "unknown benchmark '%s'", argv[1]);
}
