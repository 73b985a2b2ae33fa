/* The `stem` subcommands: each takes (argc, argv) with argv[0] = its name and
 * returns the process exit status. */
#ifndef STEM_APP_COMMANDS_H
#define STEM_APP_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_topk(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
/* app/cmd-edit.c */
int cmd_edit(int argc, char **argv);          /* stem edit plan|apply|revert|... */
int cmd_eval_edits(int argc, char **argv);    /* stem eval edit|edits (argv[0] = "edit"/"edits") */

/* app/cmd-viz.c: analyses and charts (each with --json and --plot FILE.png|.svg|.pdf) */
int cmd_geometry(int argc, char **argv);
int cmd_pca(int argc, char **argv);
int cmd_neighbours(int argc, char **argv);
int cmd_shift(int argc, char **argv);
int cmd_lens(int argc, char **argv);
int cmd_localize(int argc, char **argv);
int cmd_active_params(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
