/* Shared plumbing for the `stem` subcommands: errors, option parsing, JSON
 * output, progress display, model loading. */
#ifndef STEM_APP_CLI_H
#define STEM_APP_CLI_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include "engine/model.h"

/* "stem: error: ..." on stderr, exit 1 */
G_NORETURN void cli_fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* usage error: message + hint, exit 2 (cmd NULL: the command being parsed) */
G_NORETURN void cli_usage(const char *cmd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* Parse argv with entries for subcommand `cmd` ("stem CMD ARGS"): exits 2 on a
 * bad option; positional args remain in argv. summary is shown in --help. */
void cli_parse(const char *cmd, const char *params, const char *summary, GOptionEntry *entries,
               int *argc, char ***argv);

/* cli_parse plus the compute options of every command that computes:
 *   --device cpu|cuda|auto   where to compute (default auto: CUDA when a GPU and
 *                            the CUDA module are there, else the CPU)
 *   --offload F              serve the STEM tables from host memory through a
 *                            device row cache of F x vocabulary tokens (0 < F <= 1)
 *   --math fp32|tf32|bf16    GEMM precision on CUDA (default fp32)
 * Models loaded afterwards with cli_load_model are moved to that device. */
void cli_parse_compute(const char *cmd, const char *params, const char *summary, GOptionEntry *entries,
                       int *argc, char ***argv);
/* Move m to the device chosen by cli_parse_compute (exits with a clear error);
 * cli_load_model does it already. No-op when no compute options were parsed. */
void cli_use_device(StemModel *m);
/* Add "device": name (and "offload_capacity" when offloaded) to a JSON object. */
void cli_json_device(JsonBuilder *b, const StemModel *m);

/* Print a JSON node (pretty) on stdout and free the builder. */
void cli_print_json(JsonBuilder *b);

/* Progress on stderr: a redrawn bar on a terminal, a line every ~5 % otherwise. */
typedef struct {
    gboolean tty, quiet;
    double last_frac;
    gint64 last_us;
} CliProgress;
void cli_progress_init(CliProgress *p, gboolean quiet);
void cli_progress_update(CliProgress *p, double frac, const char *what);
void cli_progress_done(CliProgress *p);
char *cli_format_duration(double s);

/* Load a model for inference; exits with a clear error. */
StemModel *cli_load_model(const char *path);
/* Encode a prompt with the model's tokenizer; exits when it has none or it is empty. */
int32_t *cli_encode(StemModel *m, const char *text, int *n);
/* Token as printable text (JSON-safe UTF-8; invalid bytes escaped as \xNN). g_free. */
char *cli_token_text(StemModel *m, int id);
/* Token for a terminal: one line, control bytes and backslashes escaped. g_free. */
char *cli_token_display(StemModel *m, int id);
/* Parse --threads: pool_init(n); a negative value is a usage error. */
void cli_init_threads(int threads);

#endif
