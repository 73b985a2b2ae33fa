/* Token statistics of the bundled corpus: frequencies (the token sample of the
 * geometry analyses) and unique tokens vs context length (Heaps' law), which
 * sets how many STEM parameters a context activates. */
#ifndef STEM_VIZ_TEXTSTATS_H
#define STEM_VIZ_TEXTSTATS_H

#include <glib.h>
#include <stdint.h>
#include "engine/config.h"
#include "engine/tokenizer.h"

/* The bundled corpus (facts + the first prose_mb MB of prose; 0 = all) encoded
 * with tok: training text, or the validation text with validation. g_free. */
int32_t *viz_corpus_ids(const StemTokenizer *tok, double prose_mb, gboolean validation, size_t *n_out,
                        GError **error);

/* counts[V] of ids[n] (ids outside [0, V) ignored). g_free. */
int64_t *viz_token_counts(const int32_t *ids, size_t n, int V);
/* Up to n token ids with count > 0, most frequent first (ties: lower id);
 * *n_out = how many. g_free. */
int32_t *viz_top_tokens(const int64_t *counts, int V, int n, int *n_out);

/* ------------------------------------------------------------------ Heaps' law */

typedef struct {
    int n;                /* context lengths */
    int *length;          /* [n] */
    double *unique;       /* [n] mean unique tokens in a window of that length */
    int *windows;         /* [n] windows averaged */
    double K, beta;       /* least-squares fit unique = K * length^beta (log-log) */
    int distinct;         /* distinct tokens in the whole text */
} VizHeaps;

/* Mean unique tokens in windows of each length (powers of two from 1 up to
 * max_len, capped at n), over up to max_windows windows spread evenly over ids. */
gboolean viz_heaps(const int32_t *ids, size_t n, int V, int max_len, int max_windows, VizHeaps *out, GError **error);
void viz_heaps_clear(VizHeaps *h);
/* Context length at which the MEASURED mean unique count reaches u (log-log
 * interpolation), or +inf when it never does within the measured lengths. */
double viz_heaps_length_for(const VizHeaps *h, double u);

/* Active parameters with a context of u unique tokens (non-embedding: the token
 * embedding row is the same lookup for STEM and dense, so it is left out).
 * STEM: backbone + head + u * n_stem * F. Dense equivalent (every layer with
 * W3): backbone + head + n_stem * D * F, a constant. */
typedef struct {
    double stem_fixed;      /* backbone + head of the STEM model */
    double stem_per_unique; /* n_stem * F */
    double dense_constant;  /* the dense equivalent */
    int n_stem;
} VizActiveModel;
void viz_active_model(const StemConfig *c, VizActiveModel *out);
/* Context unique-token count where STEM's active parameters reach the dense
 * constant (= D), or +inf with no STEM layer. */
double viz_active_crossover_unique(const VizActiveModel *a);

/* ------------------------------------------------------------------ token labels */

/* A token for charts and reports: UTF-8, spaces shown as '␣', newlines as '↵',
 * tabs as '⇥', bytes that are not UTF-8 as \xNN, specials by name ("<eos>").
 * g_free. */
char *viz_token_label(const StemTokenizer *tok, int id);
/* The same for any byte string (a prompt or an answer). g_free. */
char *viz_text_label(const char *bytes, size_t len);

/* Generated text for display: valid UTF-8 with control characters shown
 * (newline '↵', tab '⇥', others \xNN) and U+FFFD kept. g_free. */
char *viz_display_text(const char *text);

/* A user-given token: "#123" (an id), the exact token text, or failing that the
 * text with a leading space (" Spain": the mid-sentence variant). -1 + error
 * with the text's tokenization when none is a single token. */
int viz_resolve_token(const StemTokenizer *tok, int vocab, const char *text, GError **error);

#endif
