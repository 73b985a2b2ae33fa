/* Shared plumbing for the `stem` subcommands. */
#include "cli.h"
#include "engine/checkpoint.h"
#include "engine/device.h"
#include "engine/tokenizer.h"
#include "kernels/cpu/pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

/* An error ends the process where it stands: flush stdio and _exit, so exit
 * handlers (LeakSanitizer's among them) do not run. Every command would
 * otherwise have to free all it holds before each error message; the OS
 * reclaims it anyway, and successful runs are still leak-checked in CI. */
G_NORETURN static void fail_exit(int code)
{
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

void cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    /* one line: keep only the first line of multi-line library messages */
    char *nl = strchr(msg, '\n');
    if (nl) *nl = '\0';
    fprintf(stderr, "stem: error: %s\n", msg);
    g_free(msg);
    fail_exit(1);
}

void cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    /* cli_parse set the program name to "stem CMD" */
    const char *prg = g_get_prgname();
    if (cmd) fprintf(stderr, "stem: error: %s\nTry 'stem %s --help'.\n", msg, cmd);
    else fprintf(stderr, "stem: error: %s\nTry '%s --help'.\n", msg, prg ? prg : "stem");
    g_free(msg);
    fail_exit(2);
}

/* The command's entries, then `extra` (NULL or more entries) in the same
 * group, so `--help` lists them together. */
static void parse_entries(const char *cmd, const char *params, const char *summary, GOptionEntry *entries,
                          GOptionEntry *extra, int *argc, char ***argv)
{
    GOptionContext *ctx = g_option_context_new(params);
    g_option_context_set_summary(ctx, summary);
    if (entries) g_option_context_add_main_entries(ctx, entries, NULL);
    if (extra) g_option_context_add_main_entries(ctx, extra, NULL);
    char *prg = g_strdup_printf("stem %s", cmd);
    g_set_prgname(prg);
    GError *e = NULL;
    if (!g_option_context_parse(ctx, argc, argv, &e)) cli_usage(cmd, "%s", e->message);
    g_option_context_free(ctx);
    g_free(prg);
}

void cli_parse(const char *cmd, const char *params, const char *summary, GOptionEntry *entries,
               int *argc, char ***argv)
{
    parse_entries(cmd, params, summary, entries, NULL, argc, argv);
}

/* Compute options (cli_parse_compute); device_opt stays NULL for commands
 * that do not compute, which then stay on the CPU without probing for CUDA. */
static char *device_opt, *math_opt;
static StemMath math_choice;   /* math_opt, parsed */
static double offload_opt;
static gboolean compute_parsed;

void cli_parse_compute(const char *cmd, const char *params, const char *summary, GOptionEntry *entries,
                       int *argc, char ***argv)
{
    GOptionEntry compute[] = {
        { "device", 0, 0, G_OPTION_ARG_STRING, &device_opt, "where to compute: cpu, cuda or auto (default auto)", "D" },
        { "offload", 0, 0, G_OPTION_ARG_DOUBLE, &offload_opt,
          "serve STEM tables from host memory via a device row cache of F x vocab tokens (0 < F <= 1)", "F" },
        { "math", 0, 0, G_OPTION_ARG_STRING, &math_opt, "GEMM precision on CUDA: fp32 (default), tf32 or bf16", "M" },
        { NULL }
    };
    parse_entries(cmd, params, summary, entries, compute, argc, argv);
    if (!device_opt) device_opt = g_strdup("auto");
    if (!stem_device_name_valid(device_opt)) cli_usage(cmd, "unknown --device '%s' (use cpu, cuda or auto)", device_opt);
    if (!(offload_opt >= 0 && offload_opt <= 1)) cli_usage(cmd, "--offload must be a fraction in (0, 1]");
    if (!stem_device_math_from_name(math_opt, &math_choice))
        cli_usage(cmd, "unknown --math '%s' (use fp32, tf32 or bf16)", math_opt);
    compute_parsed = TRUE;
}

void cli_use_device(StemModel *m)
{
    if (!compute_parsed) return;
    GError *e = NULL;
    const StemKernels *k = stem_device_open(device_opt, &e);
    if (!k) cli_fail("%s", e->message);
    if (offload_opt > 0 && stem_config_n_stem(&m->cfg) == 0) cli_fail("--offload: this model has no STEM tables");
    int cap = stem_device_offload_capacity(offload_opt, m->cfg.vocab);
    if (math_opt) k->set_math(math_choice);
    if (k == m->k && cap == m->offload_capacity) return;
    if (!stem_model_set_device(m, k, cap, &e)) cli_fail("%s", e->message);
}

void cli_json_device(JsonBuilder *b, const StemModel *m)
{
    json_builder_set_member_name(b, "device");
    json_builder_add_string_value(b, m->k->device_name);
    if (m->offload_capacity > 0) {
        json_builder_set_member_name(b, "offload_capacity");
        json_builder_add_int_value(b, m->offload_capacity);
    }
}

void cli_print_json(JsonBuilder *b)
{
    JsonNode *root = json_builder_get_root(b);
    JsonGenerator *g = json_generator_new();
    json_generator_set_pretty(g, TRUE);
    json_generator_set_root(g, root);
    char *s = json_generator_to_data(g, NULL);
    /* json-glib 1.6 writes U+001F raw, which JSON forbids; a raw 0x1F byte can
     * only occur inside a string here, so escaping it in place is safe */
    if (strchr(s, 0x1f)) {
        GString *fixed = g_string_new(NULL);
        for (const char *c = s; *c; c++) {
            if (*c == 0x1f) g_string_append(fixed, "\\u001f");
            else g_string_append_c(fixed, *c);
        }
        g_free(s);
        s = g_string_free(fixed, FALSE);
    }
    printf("%s\n", s);
    fflush(stdout);
    g_free(s);
    g_object_unref(g);
    json_node_unref(root);
    g_object_unref(b);
}

char *cli_format_duration(double s)
{
    if (!(s >= 0) || s > 1e7) return g_strdup("--");
    int t = (int)(s + 0.5);
    if (t >= 3600) return g_strdup_printf("%dh%02dm", t / 3600, t / 60 % 60);
    if (t >= 60) return g_strdup_printf("%dm%02ds", t / 60, t % 60);
    return g_strdup_printf("%ds", t);
}

void cli_progress_init(CliProgress *p, gboolean quiet)
{
    p->tty = isatty(2);
    p->quiet = quiet;
    p->last_frac = -1;
    p->last_us = 0;
}

void cli_progress_update(CliProgress *p, double frac, const char *what)
{
    if (p->quiet) return;
    gint64 now = g_get_monotonic_time();
    if (p->tty) {
        if (now - p->last_us < 100000 && frac < 1.0) return;   /* 10 redraws/s */
        int w = 24, fill = (int)(frac * w + 0.5);
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\r\033[K[%s] %3.0f%% %s", bar, frac * 100, what);
    } else {
        if (frac - p->last_frac < 0.05 && frac < 1.0) return;
        fprintf(stderr, "%3.0f%% %s\n", frac * 100, what);
        p->last_frac = frac;
    }
    p->last_us = now;
    fflush(stderr);
}

void cli_progress_done(CliProgress *p)
{
    if (!p->quiet && p->tty) fprintf(stderr, "\n");
}

StemModel *cli_load_model(const char *path)
{
    GError *e = NULL;
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) cli_fail("%s: no such model file", path);
    StemModel *m = stem_model_load(path, &e);
    if (!m) cli_fail("%s", e->message);
    cli_use_device(m);
    return m;
}

int32_t *cli_encode(StemModel *m, const char *text, int *n)
{
    if (!m->tok) cli_fail("the model has no tokenizer");
    if (!text || !*text) cli_fail("the prompt is empty");
    size_t nn = 0;
    int32_t *ids = stem_tokenizer_encode(m->tok, text, strlen(text), &nn);
    if (nn == 0) cli_fail("the prompt is empty");
    *n = (int)nn;
    return ids;
}

char *cli_token_text(StemModel *m, int id)
{
    return stem_tokenizer_token_text(m->tok, id);
}

char *cli_token_display(StemModel *m, int id)
{
    size_t len = 0;
    const char *b = m->tok ? stem_tokenizer_token_bytes(m->tok, id, &len) : NULL;
    if (!b) return g_strdup_printf("<%d>", id);
    gboolean utf8 = g_utf8_validate(b, (gssize)len, NULL);
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\n') g_string_append(s, "\\n");
        else if (c == '\t') g_string_append(s, "\\t");
        else if (c == '\r') g_string_append(s, "\\r");
        else if (c == '\\') g_string_append(s, "\\\\");
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) g_string_append_printf(s, "\\x%02X", c);
        else g_string_append_c(s, (char)c);
    }
    return g_string_free(s, FALSE);
}

void cli_init_threads(int threads)
{
    if (threads < 0) cli_usage(NULL, "--threads must be >= 0 (0 = all cores)");
    pool_init(threads);
}
