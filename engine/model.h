/* The transformer: weights, activations and the forward/backward pass.
 *
 * Parameters live in ONE buffer (params) with named pointers into it (as in
 * llm.c); gradients and AdamW moments are parallel buffers with the same layout,
 * so the optimizer is one flat loop over two ranges: backbone [0, n_backbone) and
 * STEM tables [n_backbone, n_params). Layout order: tok_embeddings, per layer
 * (attention_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3 if dense), norm, output,
 * then the STEM tables stem_embeddings.{j} ([vocab, ffn] each).
 *
 * A model loaded for inference points its weights into the mapped file instead
 * (params == NULL for the part read in place) and serves the STEM tables through
 * a StemTables store (mapped fp32/bf16 + edit overlay).
 *
 * Activations are one arena sized for (B, T) at the first forward and reused. */
#ifndef STEM_ENGINE_MODEL_H
#define STEM_ENGINE_MODEL_H

#include <glib.h>
#include <stdint.h>
#include "config.h"
#include "kernels/kernels.h"
#include "tables.h"
#include "tokenizer.h"

typedef struct {
    float *attn_norm;   /* [D] */
    float *wq;          /* [H*hd, D] */
    float *wk;          /* [KV*hd, D] */
    float *wv;          /* [KV*hd, D] */
    float *wo;          /* [D, H*hd] */
    float *ffn_norm;    /* [D] */
    float *w1;          /* [F, D] gate */
    float *w2;          /* [D, F] down */
    float *w3;          /* [F, D] up (dense layers only; NULL for STEM layers) */
} StemLayerWeights;

typedef struct {
    float *tok_emb;                           /* [V, D] */
    StemLayerWeights layer[STEM_MAX_LAYERS];
    float *norm;                              /* [D] */
    float *output;                            /* [V, D] */
    float *stem[STEM_MAX_LAYERS];             /* [V, F] table of j-th STEM layer (training buffers) */
} StemWeights;

typedef struct StemActs StemActs;             /* private to model.c */
struct StemOffload;

typedef struct StemModel {
    StemConfig cfg;
    StemTokenizer *tok;          /* owned, may be NULL for bare models in tests */

    size_t n_params, n_backbone; /* tables are [n_backbone, n_params) */
    float *params;               /* owned buffer, or NULL when weights point into a mapping */
    StemWeights w;
    StemTables *tables;          /* row access for STEM FFNs (owned) */

    /* training state (NULL until stem_model_alloc_training) */
    float *grads, *adam_m, *adam_v;
    StemWeights g;
    int adam_t;

    /* Compute backend (kernels/kernels.h): the CPU unless stem_model_set_device
     * chose another. The forward/backward pass and the optimizer work on the
     * dev_* buffers and dw/dg views. On a host backend they alias the host ones
     * (params, grads, adam_*, w, g); on a device they are the device copies, and
     * the host ones are brought up to date by stem_model_sync_to_host. */
    const StemKernels *k;
    float *dev_params, *dev_grads, *dev_adam_m, *dev_adam_v;
    size_t n_dev_params;         /* n_params, or n_backbone when the tables are not on the device */
    StemWeights dw, dg;
    /* STEM rows through the device row cache (engine/offload.h): used when
     * offload_capacity > 0, and on a device for models whose tables are not in
     * dev_params (mapped models, or an edit overlay is set). Created on first use. */
    struct StemOffload *offload;
    int offload_capacity;        /* cache tokens; 0 = tables with the weights */

    StemActs *acts;
    void *file;                  /* StFile* when loaded from disk, closed with file_close */
    GDestroyNotify file_close;
    GPtrArray *owned;            /* buffers converted at load (unaligned or bf16 backbone) */
    char *path;                  /* model file, when loaded */
    char *sha256;                /* of the model file, computed on first use */
} StemModel;

/* A model with an owned parameter buffer (zeroed), tables served from it. */
StemModel *stem_model_new(const StemConfig *cfg, GError **error);
void stem_model_free(StemModel *m);
/* A model with the config's layout but no weights bound: the loader points
 * m->w into a mapping and creates m->tables itself. */
StemModel *stem_model_new_unbound(const StemConfig *cfg);
/* Initialize weights: normal(0, 0.02) for linear/embedding weights, ones for norms,
 * xavier-normal std sqrt(2/(V+F)) for STEM tables, output projections (wo, w2)
 * scaled by 1/sqrt(2L). Deterministic for a seed. */
void stem_model_init_weights(StemModel *m, guint64 seed);
gboolean stem_model_alloc_training(StemModel *m, GError **error);
void stem_model_zero_grad(StemModel *m);

/* Forward over ids[B*T] (row-major, B sequences of T). If targets != NULL returns
 * the mean cross-entropy (targets < 0 ignored) and keeps what backward needs;
 * otherwise returns 0 and leaves logits readable with stem_model_logits().
 * last_only: compute the head only for the last position of each sequence
 * (inference). T <= cfg.seq_len. */
float stem_model_forward(StemModel *m, const int32_t *ids, const int32_t *targets, int B, int T,
                         gboolean last_only);
/* Logits of sequence b, position t ([V]); with last_only only t = T-1 exists.
 * After a forward WITH targets the buffer holds softmax probabilities instead
 * (the loss computes them in place for the backward pass): read logits from a
 * forward with targets == NULL. */
const float *stem_model_logits(const StemModel *m, int b, int t);
/* Accumulates parameter gradients of the last forward's loss into m->grads. */
void stem_model_backward(StemModel *m);

/* Residual stream after layer l (l = -1: the embeddings) at sequence b, position t
 * of the last forward ([D]); for the logit lens. */
const float *stem_model_residual(const StemModel *m, int l, int b, int t);

/* Move the model's computation to backend k (stem_kernels_cpu() or a device
 * from engine/device.h). offload_capacity > 0 serves the STEM tables from host
 * memory through a device cache of that many tokens (offloaded tables; training
 * then uses lazy AdamW on the rows, see engine/offload.h); 0 keeps them with
 * the weights (on a device: uploaded when the model is trainable, else served
 * through a cache holding the whole vocabulary). Uploads the weights; drops any
 * activations. Training state, if any, is re-created on the device. */
gboolean stem_model_set_device(StemModel *m, const StemKernels *k, int offload_capacity, GError **error);
/* Copy the device's parameters back into the host buffers (after training on a
 * device; a no-op on a host backend). */
void stem_model_sync_to_host(StemModel *m);
/* Copy host parameters to the device after host code changed them. */
void stem_model_upload_params(StemModel *m);

/* Name, pointer and shape of every tensor in file order (for I/O and tests). */
typedef struct {
    char name[96];
    float *data;        /* in params (or mapping) */
    float *grad;        /* in grads (NULL before alloc_training) */
    int ndim;
    int64_t shape[2];
    gboolean is_table;  /* a STEM table */
} StemTensorRef;
GArray *stem_model_tensors(const StemModel *m);   /* of StemTensorRef */

#endif
