/* StemTrainer: trains models off the main loop, like `stem train`.
 *
 * A run builds the corpus, trains the tokenizer and the model (or, for
 * "STEM and dense", both one after the other with the same data and seed) in a
 * GTask thread and writes each result atomically. Progress comes back to the
 * main loop as the "progress" signal; cancel stops at the next step and writes
 * nothing. One run at a time. */
#ifndef STEM_UI_TRAINER_H
#define STEM_UI_TRAINER_H

#include <gio/gio.h>

G_BEGIN_DECLS

typedef enum {
    STEM_TRAIN_STEM,        /* the preset's STEM layer set (or the given spec) */
    STEM_TRAIN_DENSE,       /* no STEM layer */
    STEM_TRAIN_BOTH,        /* STEM, then the dense baseline */
} StemTrainKind;

typedef struct {
    const char *name;        /* "tiny" | "default" */
    const char *description;
    int steps;               /* preset steps */
} StemTrainPresetInfo;
/* The presets of `stem train --preset` (copied from app/cmd-train.c, see ui/REQUESTS.md). */
int stem_trainer_n_presets(void);
const StemTrainPresetInfo *stem_trainer_preset(int i);

typedef struct {
    int run;                 /* 0: first model, 1: the dense baseline of a "both" run */
    gboolean dense;
    const char *phase;       /* "corpus", "tokenizer", "training", "saving", "done" */
    double fraction;         /* of this run's phase */
    int step, steps;
    double loss, val_loss;   /* NaN when unknown */
    double tokens_per_s, elapsed_s, eta_s;
} StemTrainerProgress;

typedef struct {
    int n;                   /* models written */
    char *paths[2];          /* the STEM (or only) model first */
    gboolean dense[2];
    double final_loss[2], val_loss[2], tokens_per_s[2], seconds[2];
} StemTrainerResult;
void stem_trainer_result_free(StemTrainerResult *r);

#define STEM_TYPE_TRAINER (stem_trainer_get_type())
G_DECLARE_FINAL_TYPE(StemTrainer, stem_trainer, STEM, TRAINER, GObject)

StemTrainer *stem_trainer_new(void);
gboolean stem_trainer_get_running(StemTrainer *self);

/* Start a run. preset: a preset name; stem_layers: NULL for the preset's set;
 * steps <= 0: the preset's; out: the model file (for "both", the dense one is
 * written beside it with "-dense" before the extension). Fails at once (FALSE)
 * when a run is going or the arguments are invalid. */
gboolean stem_trainer_start(StemTrainer *self, const char *preset, StemTrainKind kind, const char *stem_layers,
                            int steps, const char *out, GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data, GError **error);
StemTrainerResult *stem_trainer_finish(StemTrainer *self, GAsyncResult *result, GError **error);
void stem_trainer_cancel(StemTrainer *self);

G_END_DECLS

#endif
