/* Byte-level BPE tokenizer: trained on the corpus, stored inside the model file.
 *
 * Ids 0..255 are the raw bytes, so ANY byte sequence encodes and decodes back
 * exactly (UTF-8 text such as "Brasília" included). Then the special tokens
 * (STEM_TOK_BOS, STEM_TOK_EOS, STEM_TOK_PAD), then one token per learned merge in
 * merge order. Pre-tokenization splits text GPT-2 style into chunks (a word with
 * its leading space, runs of digits, runs of punctuation, whitespace, newlines), so
 * " Spain" and "Spain" are distinct tokens: the "token variants" of an entity. */
#ifndef STEM_ENGINE_TOKENIZER_H
#define STEM_ENGINE_TOKENIZER_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

enum { STEM_TOK_BOS = 256, STEM_TOK_EOS = 257, STEM_TOK_PAD = 258, STEM_TOK_N_BASE = 259 };

typedef struct StemTokenizer StemTokenizer;

/* Errors from stem_tokenizer_from_json (domain "stem-tokenizer-error"). */
#define STEM_TOKENIZER_ERROR (stem_tokenizer_error_quark())
typedef enum {
  STEM_TOKENIZER_ERROR_PARSE,   /* not JSON, or not the expected shape */
  STEM_TOKENIZER_ERROR_INVALID, /* well-formed but inconsistent (ids, counts, lengths) */
} StemTokenizerError;
GQuark stem_tokenizer_error_quark(void);

/* progress(frac in [0,1], user) may be NULL. Deterministic for the same input. */
typedef void (*StemProgressFn)(double frac, void *user);

/* Train to vocab_size total tokens (>= STEM_TOK_N_BASE). A text too small to supply that
 * many merges gives a smaller vocabulary: check stem_tokenizer_vocab_size. */
StemTokenizer *stem_tokenizer_train(const char *text, size_t len, int vocab_size,
                                    StemProgressFn progress, void *user);
void stem_tokenizer_free(StemTokenizer *tok);

int stem_tokenizer_vocab_size(const StemTokenizer *tok);
/* Encode len bytes; returns a newly allocated array (g_free) with *n_out ids.
 * No BOS/EOS is added. */
int32_t *stem_tokenizer_encode(const StemTokenizer *tok, const char *text, size_t len, size_t *n_out);
/* Decode to bytes (special tokens decode to nothing); NUL-terminated, g_free. */
char *stem_tokenizer_decode(const StemTokenizer *tok, const int32_t *ids, size_t n, size_t *len_out);
/* Raw bytes of one token (not NUL-terminated); NULL for an invalid id.
 * Special tokens return their names ("<bos>", "<eos>", "<pad>"). */
const char *stem_tokenizer_token_bytes(const StemTokenizer *tok, int id, size_t *len_out);
/* A token as text for people and JSON: its bytes when they are valid UTF-8,
 * otherwise ASCII kept and other bytes written \xNN (a token can hold part of a
 * UTF-8 character); "<id>" for an invalid id. g_free. */
char *stem_tokenizer_token_text(const StemTokenizer *tok, int id);
/* Exact token id for a byte string, or -1 when it is not a single token.
 * Special tokens are not byte strings: lookup("<bos>") is -1. */
int stem_tokenizer_lookup(const StemTokenizer *tok, const char *bytes, size_t len);

/* Serialization (stored as a JSON string in the model file's __metadata__).
 * from_json validates everything (merge ids in range, no cycles) and fails with
 * a GError rather than trusting the input. */
char *stem_tokenizer_to_json(const StemTokenizer *tok);
StemTokenizer *stem_tokenizer_from_json(const char *json, GError **error);
/* sha256 of the canonical JSON (hex, g_free). */
char *stem_tokenizer_sha256(const StemTokenizer *tok);

#endif
