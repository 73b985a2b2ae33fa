/* stem bench offload: the offloaded-tables policy (engine/rowcache.h) simulated on the
 * CPU over the corpus prose, tokenized with the model's tokenizer.
 *
 * The prose stream is cut into chunks of --chunk tokens; each chunk is deduplicated and
 * its unique ids are looked up in an LFU row cache of --cache-fraction × vocab tokens
 * (a chunk with more unique ids than the cache holds goes in waves). Reported: hit rate
 * (per unique lookup, and per position), dedup saving per chunk (1 − unique/len: mean and
 * distribution), rows and bytes moved vs. no cache (dedup only) and vs. moving every
 * position's rows, evictions. No timings: nothing here touches a device. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "commands.h"
#include "cli.h"
#include "engine/corpus.h"
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

static int bench_offload(int argc, char **argv)
{
    char *model = NULL;
    double fraction = 0.05, prose_mb = 2;
    int chunk = 128;
    gboolean json = FALSE, in_cache = FALSE;
    GOptionEntry entries[] = {
        { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model, "model file (tokenizer, vocabulary, table shapes)", "M" },
        { "cache-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &fraction, "cache capacity as a fraction of the vocabulary (default 0.05)", "F" },
        { "chunk", 0, 0, G_OPTION_ARG_INT, &chunk, "tokens per chunk (default 128)", "N" },
        { "prose-mb", 0, 0, G_OPTION_ARG_DOUBLE, &prose_mb, "megabytes of corpus prose to stream (default 2; 0 = all)", "MB" },
        { "in-cache-lfu", 0, 0, G_OPTION_ARG_NONE, &in_cache, "forget a token's count when it is evicted (default: keep it)", NULL },
        { "json", 0, 0, G_OPTION_ARG_NONE, &json, "print JSON", NULL },
        { NULL }
    };
    cli_parse("bench offload", "", "Simulate the offloaded-tables policy on the CPU: per chunk, dedup the token ids\n"
              "and look the unique ones up in an LFU (LRU tie-break) cache of table rows. Prints the\n"
              "hit rate, the dedup saving per chunk and the rows and bytes a device would receive.",
              entries, &argc, &argv);
    if (argc > 1) cli_usage("bench offload", "unexpected argument '%s'", argv[1]);
    if (!model) cli_usage("bench offload", "--model is required");
    if (!(fraction > 0 && fraction <= 1)) cli_usage("bench offload", "--cache-fraction must be in (0, 1]");
    if (chunk < 1 || chunk > 1 << 20) cli_usage("bench offload", "--chunk must be between 1 and 1048576");
    if (!(prose_mb >= 0 && prose_mb <= 1e6)) cli_usage("bench offload", "--prose-mb must be 0 or more");

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

    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "model"); json_builder_add_string_value(b, model);
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
