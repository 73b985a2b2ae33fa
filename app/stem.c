/* `stem`: the command-line face of STEM Workbench. One subcommand per action,
 * each with --help, JSON output where it reports numbers, one-line errors. */
#include "commands.h"
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} Command;

static const Command commands[] = {
    { "train", cmd_train, "train a STEM (or dense) model on the bundled corpus" },
    { "init", cmd_init, "write a randomly initialized model (tests, benchmarks)" },
    { "info", cmd_info, "show a model's config, parameter counts, FLOPs and sha256" },
    { "topk", cmd_topk, "the k most likely next tokens after a prompt" },
    { "generate", cmd_generate, "continue a prompt" },
    { "eval", cmd_eval, "evaluate: eval facts (fact recall), eval edit ID, eval edits (metrics)" },
    { "geometry", cmd_geometry, "per-layer cosine geometry of STEM table rows (or dense up-projections)" },
    { "pca", cmd_pca, "2-D PCA of a layer's table rows" },
    { "neighbours", cmd_neighbours, "nearest tokens by cosine of their table rows, per layer" },
    { "shift", cmd_shift, "top-k shift of an edit: original / target written in / intervened" },
    { "lens", cmd_lens, "logit lens: the top-k next tokens read off every layer" },
    { "localize", cmd_localize, "which layers carry a fact: the edit applied layer by layer" },
    { "active-params", cmd_active_params, "STEM parameters activated vs context length" },
    { "report", cmd_report, "an edit report (PDF, Markdown or JSON)" },
    { "bench", cmd_bench, "benchmarks built into the program: bench offload (table cache and dedup statistics)" },
    { "edit", cmd_edit, "knowledge edits: plan, apply, revert, reapply, list, show, export, import, bake" },
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: stem COMMAND [OPTIONS]\n\nCommands:\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'stem COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("stem %s\n", STEM_VERSION);
        return 0;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "stem: error: unknown command '%s'\nTry 'stem --help'.\n", argv[1]);
    return 2;
}
