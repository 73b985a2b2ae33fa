/* Unit tests for the byte-level BPE tokenizer (engine/tokenizer.h).
 * Data: $STEM_DATA_DIR/prose_mix.txt.gz (gzip, decompressed here) and countries.csv. */
#include "engine/tokenizer.h"

#include <gio/gio.h>
#include <string.h>

/* ---- fixtures --------------------------------------------------------------------------- */

static char *data_path(const char *name) {
  const char *dir = g_getenv("STEM_DATA_DIR");
  return g_build_filename(dir ? dir : STEM_SOURCE_DATA_DIR, name, NULL);
}

/* The whole prose corpus, decompressed once per test program. */
static GBytes *corpus(void) {
  static GBytes *bytes;
  if (bytes) return bytes;
  char *path = data_path("prose_mix.txt.gz");
  GFile *file = g_file_new_for_path(path);
  GError *error = NULL;
  GInputStream *raw = G_INPUT_STREAM(g_file_read(file, NULL, &error));
  g_assert_no_error(error);
  GConverter *gunzip = G_CONVERTER(g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP));
  GInputStream *in = g_converter_input_stream_new(raw, gunzip);
  GByteArray *arr = g_byte_array_new();
  guint8 buf[1 << 16];
  gssize n;
  while ((n = g_input_stream_read(in, buf, sizeof buf, NULL, &error)) > 0)
    g_byte_array_append(arr, buf, (guint)n);
  g_assert_no_error(error);
  g_assert_cmpint(n, ==, 0);
  g_assert_cmpuint(arr->len, >, 10 * 1000 * 1000); /* the README says about 11 MB */
  bytes = g_byte_array_free_to_bytes(arr);
  g_object_unref(in);
  g_object_unref(gunzip);
  g_object_unref(raw);
  g_object_unref(file);
  g_free(path);
  return bytes;
}

static const char *corpus_data(size_t *len) {
  gsize n;
  const char *p = g_bytes_get_data(corpus(), &n);
  *len = n;
  return p;
}

/* Encodes and decodes, asserting that the bytes come back exactly and that the ids are
 * in range and never special. Returns the number of tokens. */
static size_t assert_round_trip(const StemTokenizer *tok, const char *text, size_t len) {
  size_t n = 0, back_len = 0;
  int32_t *ids = stem_tokenizer_encode(tok, text, len, &n);
  g_assert_nonnull(ids);
  g_assert_cmpuint(n, <=, len);
  int vocab = stem_tokenizer_vocab_size(tok);
  for (size_t i = 0; i < n; i++) {
    g_assert_cmpint(ids[i], >=, 0);
    g_assert_cmpint(ids[i], <, vocab);
    g_assert_false(ids[i] >= 256 && ids[i] < STEM_TOK_N_BASE);
  }
  char *back = stem_tokenizer_decode(tok, ids, n, &back_len);
  g_assert_cmpmem(back, back_len, text, len);
  g_assert_cmpint(back[back_len], ==, '\0');
  g_free(back);
  g_free(ids);
  return n;
}

/* Single-token check: the bytes are one token and encode to exactly that token. */
static int assert_single_token(const StemTokenizer *tok, const char *s) {
  int id = stem_tokenizer_lookup(tok, s, strlen(s));
  g_assert_cmpint(id, >=, STEM_TOK_N_BASE);
  size_t n, len;
  int32_t *ids = stem_tokenizer_encode(tok, s, strlen(s), &n);
  g_assert_cmpuint(n, ==, 1);
  g_assert_cmpint(ids[0], ==, id);
  const char *bytes = stem_tokenizer_token_bytes(tok, id, &len);
  g_assert_cmpmem(bytes, len, s, strlen(s));
  g_free(ids);
  return id;
}

/* ---- 1. random bytes ---------------------------------------------------------------------- */

static void test_round_trip_random(void) {
  size_t len;
  const char *text = corpus_data(&len);
  StemTokenizer *tok = stem_tokenizer_train(text, 1 << 20, 2048, NULL, NULL);
  g_assert_cmpint(stem_tokenizer_vocab_size(tok), ==, 2048);

  GRand *rand = g_rand_new_with_seed(1234);
  for (int t = 0; t < 2000; t++) {
    int n = g_rand_int_range(rand, 0, 301);
    char *s = g_malloc(n + 1);
    if (t % 2 == 0) {
      /* Uniform bytes: NUL, invalid UTF-8, control bytes. */
      for (int i = 0; i < n; i++) s[i] = (char)g_rand_int_range(rand, 0, 256);
    } else {
      /* Prose with random bytes sprinkled in, so that learned merges fire next to them. */
      size_t start = (size_t)g_rand_int_range(rand, 0, (gint32)(len - 400));
      memcpy(s, text + start, (size_t)n);
      for (int i = 0; i < n; i++)
        if (g_rand_int_range(rand, 0, 10) == 0) s[i] = (char)g_rand_int_range(rand, 0, 256);
    }
    assert_round_trip(tok, s, (size_t)n);
    g_free(s);
  }
  g_rand_free(rand);

  /* Long single-class runs are cut into capped chunks and still round-trip. */
  char *letters = g_malloc(100000);
  memset(letters, 'a', 100000);
  assert_round_trip(tok, letters, 100000);
  for (int i = 0; i < 100000; i++) letters[i] = (char)(0x80 + i % 128);
  assert_round_trip(tok, letters, 100000);
  g_free(letters);
  stem_tokenizer_free(tok);
}

/* ---- 2. corpus round trip and compression ------------------------------------------------- */

static void test_corpus_compression(void) {
  size_t len;
  const char *text = corpus_data(&len);
  const size_t n_bytes = 2u << 20;
  StemTokenizer *tok = stem_tokenizer_train(text, n_bytes, 4096, NULL, NULL);
  g_assert_cmpint(stem_tokenizer_vocab_size(tok), ==, 4096);
  size_t n = assert_round_trip(tok, text, n_bytes);
  double ratio = (double)n / (double)n_bytes;
  g_test_message("2 MB: %zu tokens, %.4f tokens/byte", n, ratio);
  g_assert_cmpfloat(ratio, <, 0.35);
  /* Text the tokenizer was not trained on still compresses (and round-trips). */
  size_t n_held = assert_round_trip(tok, text + len - n_bytes, n_bytes);
  g_test_message("held-out 2 MB: %.4f tokens/byte", (double)n_held / (double)n_bytes);
  g_assert_cmpfloat((double)n_held / (double)n_bytes, <, 0.40);
  stem_tokenizer_free(tok);
}

/* ---- 3. UTF-8 ----------------------------------------------------------------------------- */

static void test_utf8(void) {
  size_t len;
  const char *text = corpus_data(&len);
  GString *train = g_string_new_len(text, 1 << 20);
  for (int i = 0; i < 300; i++) g_string_append(train, "The capital of Colombia is Bogotá.\n");
  StemTokenizer *tok = stem_tokenizer_train(train->str, train->len, 2048, NULL, NULL);

  const char *brasilia = "The capital of Brazil is Brasília.";
  assert_round_trip(tok, brasilia, strlen(brasilia));
  assert_round_trip(tok, "Bogotá", strlen("Bogotá"));
  assert_single_token(tok, " Bogotá");
  /* The accented letter is inside the word's chunk: "Bogotá" without the space is
   * not split at the UTF-8 bytes into a separate punctuation-like chunk. */
  size_t n;
  int32_t *ids = stem_tokenizer_encode(tok, " Bogotá.", strlen(" Bogotá."), &n);
  g_assert_cmpuint(n, ==, 2);
  g_assert_cmpint(ids[1], ==, '.');
  g_free(ids);
  g_string_free(train, TRUE);
  stem_tokenizer_free(tok);
}

/* ---- 4. leading-space variants ------------------------------------------------------------ */

static void test_leading_space_variants(void) {
  size_t len;
  const char *text = corpus_data(&len);
  char *path = data_path("countries.csv"), *csv = NULL;
  GError *error = NULL;
  g_file_get_contents(path, &csv, NULL, &error);
  g_assert_no_error(error);

  /* Each country both at line start and mid-sentence. */
  GString *train = g_string_new_len(text, 1 << 20);
  char **lines = g_strsplit(csv, "\n", -1);
  for (int rep = 0; rep < 20; rep++)
    for (int i = 1; lines[i]; i++) {
      char **f = g_strsplit(lines[i], ",", -1);
      if (g_strv_length(f) >= 5)
        g_string_append_printf(train, "%s is in %s.\nThe capital of %s is %s.\n", f[1], f[4],
                               f[1], f[2]);
      g_strfreev(f);
    }
  g_strfreev(lines);

  StemTokenizer *tok = stem_tokenizer_train(train->str, train->len, 4096, NULL, NULL);
  int mid = assert_single_token(tok, " Spain");
  int start = assert_single_token(tok, "Spain");
  g_assert_cmpint(mid, !=, start);

  /* In context, each variant is what the encoder produces. */
  const char *line = "Spain is in Europe.\nThe capital of Spain is Madrid.";
  size_t n;
  int32_t *ids = stem_tokenizer_encode(tok, line, strlen(line), &n);
  g_assert_cmpint(ids[0], ==, start);
  gboolean found_mid = FALSE;
  for (size_t i = 1; i < n; i++) found_mid |= ids[i] == mid;
  g_assert_true(found_mid);
  g_free(ids);

  g_string_free(train, TRUE);
  g_free(csv);
  g_free(path);
  stem_tokenizer_free(tok);
}

/* ---- 5. determinism ----------------------------------------------------------------------- */

static void progress_cb(double frac, void *user) {
  double *last = user;
  g_assert_cmpfloat(frac, >=, *last); /* monotone, within [0, 1] */
  g_assert_cmpfloat(frac, <=, 1.0);
  *last = frac;
}

static void test_determinism(void) {
  size_t len;
  const char *text = corpus_data(&len);
  double last = 0.0;
  StemTokenizer *a = stem_tokenizer_train(text, 1 << 20, 2048, progress_cb, &last);
  g_assert_cmpfloat(last, ==, 1.0);
  StemTokenizer *b = stem_tokenizer_train(text, 1 << 20, 2048, NULL, NULL);
  char *ja = stem_tokenizer_to_json(a), *jb = stem_tokenizer_to_json(b);
  g_assert_cmpstr(ja, ==, jb);
  char *ha = stem_tokenizer_sha256(a), *hb = stem_tokenizer_sha256(b);
  g_assert_cmpstr(ha, ==, hb);
  g_assert_cmpuint(strlen(ha), ==, 64);
  char *expect = g_compute_checksum_for_string(G_CHECKSUM_SHA256, ja, -1);
  g_assert_cmpstr(ha, ==, expect);
  g_free(expect);
  g_free(ha);
  g_free(hb);
  g_free(ja);
  g_free(jb);
  stem_tokenizer_free(a);
  stem_tokenizer_free(b);
}

/* ---- 6. JSON ------------------------------------------------------------------------------ */

static void test_json_round_trip(void) {
  size_t len;
  const char *text = corpus_data(&len);
  StemTokenizer *tok = stem_tokenizer_train(text, 1 << 20, 2048, NULL, NULL);
  char *json = stem_tokenizer_to_json(tok);
  g_assert_true(g_str_has_prefix(json, "{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":2048,"));
  GError *error = NULL;
  StemTokenizer *back = stem_tokenizer_from_json(json, &error);
  g_assert_no_error(error);
  g_assert_nonnull(back);
  g_assert_cmpint(stem_tokenizer_vocab_size(back), ==, 2048);

  char *json2 = stem_tokenizer_to_json(back);
  g_assert_cmpstr(json, ==, json2);
  size_t na, nb;
  const size_t sample = 256 << 10;
  int32_t *ia = stem_tokenizer_encode(tok, text + len - sample, sample, &na);
  int32_t *ib = stem_tokenizer_encode(back, text + len - sample, sample, &nb);
  g_assert_cmpmem(ia, na * sizeof *ia, ib, nb * sizeof *ib);
  for (int id = 0; id < 2048; id++) {
    size_t la, lb;
    const char *ba = stem_tokenizer_token_bytes(tok, id, &la);
    const char *bb = stem_tokenizer_token_bytes(back, id, &lb);
    g_assert_cmpmem(ba, la, bb, lb);
  }
  g_free(ia);
  g_free(ib);
  g_free(json2);
  stem_tokenizer_free(back);

  /* Every truncation of a valid document is refused, never a crash. */
  for (size_t cut = 0; cut < 200; cut++) {
    char *prefix = g_strndup(json, cut);
    StemTokenizer *t = stem_tokenizer_from_json(prefix, &error);
    g_assert_null(t);
    g_assert_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE);
    g_clear_error(&error);
    g_free(prefix);
  }
  g_free(json);
  stem_tokenizer_free(tok);
}

static void test_json_refused(void) {
  static const struct {
    const char *json;
    int code;
  } bad[] = {
      {"", STEM_TOKENIZER_ERROR_PARSE},
      {"{", STEM_TOKENIZER_ERROR_PARSE},
      {"null", STEM_TOKENIZER_ERROR_PARSE},
      {"[]", STEM_TOKENIZER_ERROR_PARSE},
      {"{}", STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"wordpiece\",\"version\":1,\"vocab_size\":259,\"merges\":[]}",
       STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"byte-bpe\",\"version\":2,\"vocab_size\":259,\"merges\":[]}",
       STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":\"259\",\"merges\":[]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":259,\"merges\":{}}",
       STEM_TOKENIZER_ERROR_PARSE},
      /* vocab_size inconsistent with the merge count, both ways */
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":261,\"merges\":[[97,97]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":259,\"merges\":[[97,97]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":100,\"merges\":[]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":9999999999,\"merges\":[]}",
       STEM_TOKENIZER_ERROR_INVALID},
      /* a merge referring to a future id, to itself, to a special, to a negative id */
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":261,\"merges\":[[97,97],[261,97]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[97,259]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[256,97]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[-1,97]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[4294967393,97]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      /* the same merge twice */
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":261,\"merges\":[[97,97],[97,97]]}",
       STEM_TOKENIZER_ERROR_INVALID},
      /* malformed merges */
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[97]]}",
       STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[97,98,99]]}",
       STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[97,1.5]]}",
       STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[[\"a\",98]]}",
       STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[97]}",
       STEM_TOKENIZER_ERROR_PARSE},
      {"{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":260,\"merges\":[null]}",
       STEM_TOKENIZER_ERROR_PARSE},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    GError *error = NULL;
    StemTokenizer *tok = stem_tokenizer_from_json(bad[i].json, &error);
    if (tok || !error) g_error("accepted: %s", bad[i].json);
    g_assert_error(error, STEM_TOKENIZER_ERROR, bad[i].code);
    g_error_free(error);
  }
  GError *error = NULL;
  g_assert_null(stem_tokenizer_from_json(NULL, &error));
  g_assert_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE);
  g_clear_error(&error);

  /* A doubling chain ("aa", "aaaa", ...) would spell a 2^k-byte token; anything longer
   * than a chunk can never be produced, so it is refused instead of allocated. */
  GString *bomb = g_string_new("{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":320,\"merges\":[[97,97]");
  for (int k = 1; k < 320 - STEM_TOK_N_BASE; k++)
    g_string_append_printf(bomb, ",[%d,%d]", STEM_TOK_N_BASE + k - 1, STEM_TOK_N_BASE + k - 1);
  g_string_append(bomb, "]}");
  g_assert_null(stem_tokenizer_from_json(bomb->str, &error));
  g_assert_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_INVALID);
  g_clear_error(&error);
  g_string_free(bomb, TRUE);

  /* The smallest valid tokenizer: bytes and specials only. */
  StemTokenizer *tok = stem_tokenizer_from_json(
      "{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":259,\"merges\":[]}", &error);
  g_assert_no_error(error);
  g_assert_cmpint(stem_tokenizer_vocab_size(tok), ==, 259);
  g_assert_cmpuint(assert_round_trip(tok, "abc", 3), ==, 3);
  stem_tokenizer_free(tok);
}

/* ---- 7. a case checked by hand ------------------------------------------------------------ */

static void test_hand_checked(void) {
  /* Chunks: "aaab" x1, " aaab" x2. Pair counts: (a,a) 2 per word = 6, (a,b) 3, (' ',a) 2.
   * Merge 1 = (a,a) -> 259: words become [259 a b], [' ' 259 a b]; now (259,a) = 3,
   * (a,b) = 3, (' ',259) = 2. Tie at 3: the smaller pair (97,98) < (259,97) wins, so
   * merge 2 = (a,b) -> 260 and "aaab" encodes to [259, 260]. */
  const char *text = "aaab aaab aaab";
  StemTokenizer *tok = stem_tokenizer_train(text, strlen(text), STEM_TOK_N_BASE + 2, NULL, NULL);
  g_assert_cmpint(stem_tokenizer_vocab_size(tok), ==, 261);
  char *json = stem_tokenizer_to_json(tok);
  g_assert_cmpstr(json, ==, "{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":261,"
                            "\"merges\":[[97,97],[97,98]]}");
  g_free(json);
  size_t len;
  g_assert_cmpmem(stem_tokenizer_token_bytes(tok, 259, &len), len, "aa", 2);
  g_assert_cmpmem(stem_tokenizer_token_bytes(tok, 260, &len), len, "ab", 2);

  size_t n;
  int32_t *ids = stem_tokenizer_encode(tok, "aaab", 4, &n);
  const int32_t want[] = {259, 260};
  g_assert_cmpmem(ids, n * sizeof *ids, want, sizeof want);
  g_free(ids);
  /* Leading space is its own byte (no merge learned for it); "aaaa" = [259, 259]. */
  ids = stem_tokenizer_encode(tok, " aaab aaaa", 10, &n);
  const int32_t want2[] = {' ', 259, 260, ' ', 259, 259};
  g_assert_cmpmem(ids, n * sizeof *ids, want2, sizeof want2);
  g_free(ids);

  g_assert_cmpint(stem_tokenizer_lookup(tok, "aa", 2), ==, 259);
  g_assert_cmpint(stem_tokenizer_lookup(tok, "a", 1), ==, 'a');
  g_assert_cmpint(stem_tokenizer_lookup(tok, "aab", 3), ==, -1);
  g_assert_cmpint(stem_tokenizer_lookup(tok, "<bos>", 5), ==, -1);

  /* Asking for more merges than the text has pairs stops early. */
  StemTokenizer *small = stem_tokenizer_train("ab ab", 5, 1000, NULL, NULL);
  g_assert_cmpint(stem_tokenizer_vocab_size(small), ==, STEM_TOK_N_BASE + 2); /* ab, " ab" */
  stem_tokenizer_free(small);
  small = stem_tokenizer_train("", 0, 300, NULL, NULL);
  g_assert_cmpint(stem_tokenizer_vocab_size(small), ==, STEM_TOK_N_BASE);
  stem_tokenizer_free(small);
  stem_tokenizer_free(tok);
}

/* ---- specials and pre-tokenization -------------------------------------------------------- */

static void test_specials(void) {
  const char *text = "aaab aaab aaab";
  StemTokenizer *tok = stem_tokenizer_train(text, strlen(text), STEM_TOK_N_BASE + 2, NULL, NULL);
  size_t len;
  g_assert_cmpmem(stem_tokenizer_token_bytes(tok, STEM_TOK_BOS, &len), len, "<bos>", 5);
  g_assert_cmpmem(stem_tokenizer_token_bytes(tok, STEM_TOK_EOS, &len), len, "<eos>", 5);
  g_assert_cmpmem(stem_tokenizer_token_bytes(tok, STEM_TOK_PAD, &len), len, "<pad>", 5);
  g_assert_null(stem_tokenizer_token_bytes(tok, -1, &len));
  g_assert_null(stem_tokenizer_token_bytes(tok, 261, &len));

  const int32_t ids[] = {STEM_TOK_BOS, 'x', 259, STEM_TOK_PAD, 260, STEM_TOK_EOS};
  char *s = stem_tokenizer_decode(tok, ids, G_N_ELEMENTS(ids), &len);
  g_assert_cmpstr(s, ==, "xaaab");
  g_assert_cmpuint(len, ==, 5);
  g_free(s);

  /* Text spelling a special's name is plain bytes. */
  size_t n;
  int32_t *enc = stem_tokenizer_encode(tok, "<bos>", 5, &n);
  g_assert_cmpuint(n, ==, 5);
  g_free(enc);
  enc = stem_tokenizer_encode(tok, "", 0, &n);
  g_assert_nonnull(enc);
  g_assert_cmpuint(n, ==, 0);
  g_free(enc);
  stem_tokenizer_free(tok);
}

/* Merges never cross chunk boundaries: train on text where the cross-boundary pairs are the
 * most frequent ones and check no learned token spans two chunks. */
static void test_chunk_boundaries(void) {
  GString *train = g_string_new(NULL);
  for (int i = 0; i < 200; i++) g_string_append(train, "ab.cd  ef\n\n12345 x!? ");
  StemTokenizer *tok = stem_tokenizer_train(train->str, train->len, 400, NULL, NULL);
  static const char *const whole[] = {"ab", ".", "cd", " ", " ef", "\n\n", "123", "45", " x", "!?", " "};
  static const char *const never[] = {"b.", ".c", "d ", "f\n", "\n1", "34", "5 ", "x!", "? "};
  for (size_t i = 0; i < G_N_ELEMENTS(whole); i++)
    if (strlen(whole[i]) > 1) assert_single_token(tok, whole[i]);
  for (size_t i = 0; i < G_N_ELEMENTS(never); i++)
    g_assert_cmpint(stem_tokenizer_lookup(tok, never[i], strlen(never[i])), ==, -1);
  g_string_free(train, TRUE);
  stem_tokenizer_free(tok);
}

/* ---- concurrent encoding ------------------------------------------------------------------ */

typedef struct {
  const StemTokenizer *tok;
  const char *text;
  size_t len;
  int32_t *ids;
  size_t n;
} EncodeJob;

static gpointer encode_thread(gpointer data) {
  EncodeJob *job = data;
  job->ids = stem_tokenizer_encode(job->tok, job->text, job->len, &job->n);
  return NULL;
}

/* encode keeps no shared mutable state, so threads on one tokenizer agree with one thread. */
static void test_concurrent_encode(void) {
  size_t len;
  const char *text = corpus_data(&len);
  StemTokenizer *tok = stem_tokenizer_train(text, 1 << 20, 2048, NULL, NULL);
  const size_t piece = 512 << 10;
  size_t n_ref;
  int32_t *ref = stem_tokenizer_encode(tok, text, piece, &n_ref);
  EncodeJob jobs[4];
  GThread *threads[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (EncodeJob){.tok = tok, .text = text, .len = piece};
    threads[i] = g_thread_new("encode", encode_thread, &jobs[i]);
  }
  for (int i = 0; i < 4; i++) {
    g_thread_join(threads[i]);
    g_assert_cmpmem(jobs[i].ids, jobs[i].n * sizeof(int32_t), ref, n_ref * sizeof(int32_t));
    g_free(jobs[i].ids);
  }
  g_free(ref);
  stem_tokenizer_free(tok);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/tokenizer/hand-checked", test_hand_checked);
  g_test_add_func("/tokenizer/specials", test_specials);
  g_test_add_func("/tokenizer/chunk-boundaries", test_chunk_boundaries);
  g_test_add_func("/tokenizer/round-trip-random", test_round_trip_random);
  g_test_add_func("/tokenizer/corpus-compression", test_corpus_compression);
  g_test_add_func("/tokenizer/utf8", test_utf8);
  g_test_add_func("/tokenizer/leading-space-variants", test_leading_space_variants);
  g_test_add_func("/tokenizer/determinism", test_determinism);
  g_test_add_func("/tokenizer/json-round-trip", test_json_round_trip);
  g_test_add_func("/tokenizer/json-refused", test_json_refused);
  g_test_add_func("/tokenizer/concurrent-encode", test_concurrent_encode);
  return g_test_run();
}
