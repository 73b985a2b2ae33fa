/* Optimizer step (AdamW, two groups, separate clipping), LR schedule, and the
 * training loop over token streams. */
#include "train.h"
#include "offload.h"

#include "kernels/cpu/pool.h"

#include <math.h>
#include <string.h>

#define TRAIN_ERROR (g_quark_from_static_string("stem-train-error"))

void stem_optim_defaults(StemOptim *o)
{
    o->lr = 3e-3f;
    o->wd = 0.1f;
    o->table_lr = 3e-3f;
    o->table_wd = 0.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->clip = 1.0f;
    o->table_clip = 1.0f;
}

static float clip_scale(double norm, float clip)
{
    /* torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), clamped to 1 */
    if (clip <= 0) return 1.0f;
    double coef = clip / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}

void stem_model_step(StemModel *m, const StemOptim *o, float lr_scale, float *norm_backbone,
                     float *norm_tables)
{
    /* The step runs where the parameters are (the backend's dev_* buffers:
     * the host buffers themselves on the CPU). Offloaded tables take their
     * step in the offload store: lazy AdamW over the chunk's rows in its
     * write-back cache (the host buffers are current after
     * stem_model_sync_to_host). */
    const StemKernels *k = m->k;
    const size_t nb = m->n_backbone, nt = m->n_params - m->n_backbone;
    /* otherwise the tables are in dev_params (the host buffer itself on the CPU) */
    const gboolean offloaded = m->offload_capacity > 0;
    double gb = sqrt(k->sumsq(m->dev_grads, nb));
    double gt = 0.0;
    /* no offload store yet: no forward has touched a row, nothing to update */
    if (offloaded) gt = m->offload ? sqrt(stem_offload_grad_sumsq(m->offload)) : 0.0;
    else if (nt) gt = sqrt(k->sumsq(m->dev_grads + nb, nt));
    if (norm_backbone) *norm_backbone = (float)gb;
    if (norm_tables) *norm_tables = (float)gt;
    m->adam_t++;
    k->adamw(m->dev_params, m->dev_grads, m->dev_adam_m, m->dev_adam_v, nb, o->lr * lr_scale, o->beta1, o->beta2,
             o->eps, o->wd, m->adam_t, clip_scale(gb, o->clip));
    if (!nt) return;
    const float tlr = o->table_lr * lr_scale, tscale = clip_scale(gt, o->table_clip);
    if (offloaded && m->offload) {
        float *p[STEM_MAX_LAYERS], *am[STEM_MAX_LAYERS], *av[STEM_MAX_LAYERS];
        const size_t VF = (size_t)m->cfg.vocab * m->cfg.ffn_dim;
        for (int j = 0; j < stem_config_n_stem(&m->cfg); j++) {
            p[j] = m->w.stem[j];
            am[j] = m->adam_m + nb + j * VF;
            av[j] = m->adam_v + nb + j * VF;
        }
        stem_offload_step(m->offload, p, am, av, tlr, o->beta1, o->beta2, o->eps, o->table_wd, m->adam_t, tscale);
    } else if (!offloaded) {
        k->adamw(m->dev_params + nb, m->dev_grads + nb, m->dev_adam_m + nb, m->dev_adam_v + nb, nt, tlr,
                 o->beta1, o->beta2, o->eps, o->table_wd, m->adam_t, tscale);
    }
}

float stem_lr_schedule(int step, int total, int warmup, float min_ratio)
{
    if (warmup > 0 && step < warmup) return (float)(step + 1) / (float)warmup;
    if (total <= warmup) return 1.0f;
    double p = (double)(step - warmup) / (double)(total - warmup);
    if (p > 1.0) p = 1.0;
    return (float)(min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + cos(G_PI * p)));
}

void stem_train_options_defaults(StemTrainOptions *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 200;
    o->batch = 16;
    o->seq = 128;
    o->accum = 1;
    o->threads = 0;
    o->seed = 1;
    o->warmup_frac = 0.10f;
    o->min_lr_ratio = 0.10f;
    o->eval_every = 0;
    o->eval_batches = 8;
    stem_optim_defaults(&o->optim);
}

/* Window starts are drawn from a seeded generator: the batch sequence depends
 * only on the seed, never on timing or threads. */
static void fill_batch(GRand *r, const int32_t *ids, size_t n, int B, int T, int32_t *x, int32_t *y)
{
    for (int b = 0; b < B; b++) {
        /* windows need T + 1 tokens: start in [0, n - T - 1] (double: no 2^31 limit) */
        size_t start = (size_t)(g_rand_double(r) * (double)(n - (size_t)T));
        if (start > n - (size_t)T - 1) start = n - (size_t)T - 1;
        memcpy(x + (size_t)b * T, ids + start, sizeof(int32_t) * T);
        memcpy(y + (size_t)b * T, ids + start + 1, sizeof(int32_t) * T);
    }
}

float stem_eval_loss(StemModel *m, const int32_t *ids, size_t n, int batch, int seq, int n_batches)
{
    if (n < (size_t)seq + 2) return NAN;
    int32_t *x = g_new(int32_t, (size_t)batch * seq), *y = g_new(int32_t, (size_t)batch * seq);
    /* evenly spaced, non-random windows so every evaluation sees the same text */
    size_t span = n - (size_t)seq - 1, total = (size_t)batch * n_batches;
    double sum = 0.0;
    for (int k = 0; k < n_batches; k++) {
        for (int b = 0; b < batch; b++) {
            size_t idx = (size_t)k * batch + b;
            size_t start = total > 1 ? span * idx / (total - 1) : 0;
            memcpy(x + (size_t)b * seq, ids + start, sizeof(int32_t) * seq);
            memcpy(y + (size_t)b * seq, ids + start + 1, sizeof(int32_t) * seq);
        }
        sum += stem_model_forward(m, x, y, batch, seq, FALSE);
    }
    g_free(x);
    g_free(y);
    return (float)(sum / n_batches);
}

gboolean stem_train(StemModel *m, const int32_t *train_ids, size_t n_train, const int32_t *val_ids,
                    size_t n_val, const StemTrainOptions *opt, StemTrainCallback cb, void *user,
                    StemTrainResult *res, GError **error)
{
    const int B = opt->batch, T = opt->seq;
    memset(res, 0, sizeof *res);
    res->val_loss = NAN;
    if (T > m->cfg.seq_len) {
        g_set_error(error, TRAIN_ERROR, 1, "sequence length %d exceeds the model's %d", T, m->cfg.seq_len);
        return FALSE;
    }
    if (n_train < (size_t)T + 2) {
        g_set_error(error, TRAIN_ERROR, 2, "training text too short: %zu tokens for windows of %d", n_train, T + 1);
        return FALSE;
    }
    if (m->offload_capacity > 0 && opt->accum > 1) {
        /* the offload store holds the row gradients of one chunk at a time */
        g_set_error(error, TRAIN_ERROR, 4, "offloaded tables train one micro-batch per step: use --accum 1");
        return FALSE;
    }
    if (!stem_model_alloc_training(m, error)) return FALSE;
    pool_init(opt->threads);

    GRand *r = g_rand_new_with_seed((guint32)(opt->seed ^ (opt->seed >> 32)));
    int32_t *x = g_new(int32_t, (size_t)B * T), *y = g_new(int32_t, (size_t)B * T);
    const int warmup = (int)(opt->warmup_frac * opt->steps);
    const int accum = opt->accum > 0 ? opt->accum : 1;
    gint64 t0 = g_get_monotonic_time();
    float loss = NAN;
    StemTrainProgress p = { .steps = opt->steps, .val_loss = NAN };

    /* Offloaded tables: the next step's batch is drawn right after this step's
     * forward and its rows are staged, so their gather and host->device copy
     * overlap this step's backward and update (prefetch). Batches are drawn in
     * the same order either way, so the run is the same with or without it. */
    const gboolean prefetch = m->offload_capacity > 0 && accum == 1;
    int32_t *xn = g_new(int32_t, (size_t)B * T), *yn = g_new(int32_t, (size_t)B * T);
    gboolean have_next = FALSE;

    for (int step = 0; step < opt->steps; step++) {
        stem_model_zero_grad(m);
        double lsum = 0.0;
        const gboolean eval_after = opt->eval_every > 0 && (step + 1) % opt->eval_every == 0 && val_ids;
        for (int k = 0; k < accum; k++) {
            if (have_next) {
                int32_t *t = x; x = xn; xn = t;
                t = y; y = yn; yn = t;
                have_next = FALSE;
            } else {
                fill_batch(r, train_ids, n_train, B, T, x, y);
            }
            lsum += stem_model_forward(m, x, y, B, T, FALSE);
            /* not before an evaluation: its forwards must not find a training chunk staged */
            if (prefetch && m->offload && step + 1 < opt->steps && !eval_after) {
                fill_batch(r, train_ids, n_train, B, T, xn, yn);
                have_next = TRUE;
                /* a chunk that cannot be staged now is staged by its own forward */
                stem_offload_stage(m->offload, xn, B * T, NULL);
            }
            stem_model_backward(m);
        }
        /* micro-batch losses are means: average the gradients too */
        if (accum > 1) m->k->scale(m->dev_grads, m->n_dev_params, 1.0f / (float)accum);
        loss = (float)(lsum / accum);
        float lrs = stem_lr_schedule(step, opt->steps, warmup, opt->min_lr_ratio);
        stem_model_step(m, &opt->optim, lrs, NULL, NULL);

        double el = (g_get_monotonic_time() - t0) / 1e6;
        p.step = step + 1;
        p.loss = loss;
        p.lr_scale = lrs;
        p.elapsed_s = el;
        p.tokens_per_s = (double)(step + 1) * accum * B * T / el;
        p.eta_s = el / (step + 1) * (opt->steps - step - 1);
        if (opt->eval_every > 0 && (step + 1) % opt->eval_every == 0 && step + 1 < opt->steps && val_ids)
            p.val_loss = stem_eval_loss(m, val_ids, n_val, B, T, opt->eval_batches);
        if (!isfinite(loss)) {
            g_set_error(error, TRAIN_ERROR, 3, "loss became %f at step %d (try a lower --lr)", loss, step + 1);
            g_free(x); g_free(y); g_free(xn); g_free(yn); g_rand_free(r);
            return FALSE;
        }
        if (cb && !cb(&p, user)) {
            res->cancelled = TRUE;
            res->steps_done = step + 1;
            /* consume the staged chunk, so later forwards start clean */
            if (have_next) stem_model_forward(m, xn, NULL, B, T, TRUE);
            break;
        }
        res->steps_done = step + 1;
    }
    m->k->synchronize();
    res->elapsed_s = (g_get_monotonic_time() - t0) / 1e6;
    stem_model_sync_to_host(m);   /* the caller saves the host buffers */
    res->tokens_per_s = (double)res->steps_done * accum * B * T / res->elapsed_s;
    res->final_loss = loss;
    if (val_ids && !res->cancelled) {
        res->val_loss = stem_eval_loss(m, val_ids, n_val, B, T, opt->eval_batches);
        p.val_loss = res->val_loss;
        if (cb) cb(&p, user);
    }
    g_free(x);
    g_free(y);
    g_free(xn);
    g_free(yn);
    g_rand_free(r);
    return TRUE;
}
