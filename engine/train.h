/* Optimizer step, learning-rate schedule and the training loop. */
#ifndef STEM_ENGINE_TRAIN_H
#define STEM_ENGINE_TRAIN_H

#include <glib.h>
#include "model.h"

typedef struct {
    float lr, wd;                 /* backbone group */
    float table_lr, table_wd;     /* STEM tables group */
    float beta1, beta2, eps;      /* AdamW: 0.9, 0.95, 1e-8 */
    float clip, table_clip;       /* max global grad norm per group; 0 = no clipping */
} StemOptim;

void stem_optim_defaults(StemOptim *o);

/* One AdamW step on both groups. Gradients are clipped by global norm, separately
 * for the backbone and the tables (torch.nn.utils.clip_grad_norm_ semantics:
 * scale = clip / (norm + 1e-6) when norm > clip). lr_scale multiplies both lrs
 * (the schedule). Returns the pre-clip norms. */
void stem_model_step(StemModel *m, const StemOptim *o, float lr_scale, float *norm_backbone,
                     float *norm_tables);

/* Cosine schedule with linear warmup over the first warmup steps, decaying to
 * min_ratio * peak at total steps. step counts from 0. */
float stem_lr_schedule(int step, int total, int warmup, float min_ratio);

typedef struct {
    int steps, batch, seq, accum;      /* accum: micro-batches per step */
    int threads;
    guint64 seed;
    float warmup_frac, min_lr_ratio;
    int eval_every;                    /* 0 = only at the end */
    int eval_batches;
    StemOptim optim;
} StemTrainOptions;

void stem_train_options_defaults(StemTrainOptions *o);

typedef struct {
    int step, steps;
    float loss, lr_scale;
    double tokens_per_s, elapsed_s, eta_s;
    float val_loss;                    /* NaN until evaluated */
} StemTrainProgress;

/* Return FALSE to cancel. */
typedef gboolean (*StemTrainCallback)(const StemTrainProgress *p, void *user);

typedef struct {
    float final_loss, val_loss;
    double tokens_per_s, elapsed_s;
    int steps_done;
    gboolean cancelled;
} StemTrainResult;

/* Train m (after stem_model_alloc_training) on token streams: windows of seq+1
 * tokens are drawn deterministically (seed) from train_ids; val_ids are used for
 * validation loss. */
gboolean stem_train(StemModel *m, const int32_t *train_ids, size_t n_train, const int32_t *val_ids,
                    size_t n_val, const StemTrainOptions *opt, StemTrainCallback cb, void *user,
                    StemTrainResult *res, GError **error);

/* Mean loss over up to n_batches deterministic windows of ids. */
float stem_eval_loss(StemModel *m, const int32_t *ids, size_t n, int batch, int seq, int n_batches);

#endif
