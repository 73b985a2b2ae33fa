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

#endif
