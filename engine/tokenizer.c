/* Byte-level BPE tokenizer (contract in tokenizer.h).
 *
 * Why training uses incremental pair counts.
 *   The textbook BPE trainer re-counts every adjacent pair of the whole corpus before each
 *   merge: O(merges x corpus), about 4096 x 11 MB = 45 G symbol visits, hours on one core.
 *   Two facts make it cheap:
 *   1. Merges never cross chunk boundaries, so the corpus is only a multiset of chunks. 11 MB
 *      of prose is ~2.5 M chunks but only ~55 k distinct ones: we train on (chunk, count).
 *   2. Merging (a,b) -> X changes pair counts only next to its occurrences: (p,a) becomes
 *      (p,X) and (b,n) becomes (X,n). So we keep global pair counts plus, per pair, the list
 *      of chunks ("words") that contain it, and each merge touches only those words.
 *   The best pair comes from a max-heap with lazy deletion. A pair's count never grows
 *   after the merge step that created it (only pairs containing the newest symbol grow), so
 *   every heap entry is >= the pair's true count; when the popped entry is stale we push it
 *   back with its true count, and the first entry whose count is current is the true best.
 *   Ties go to the smallest (left, right) ids, so the result depends only on the input.
 *   Training 11 MB is dominated by pre-tokenization (one pass); the merges take little.
 *
 * Encoding is standard rank-order BPE per chunk (repeatedly merge the adjacent pair with the
 *   lowest merge rank, all its occurrences left to right), which reproduces exactly what
 *   training did to the same chunk. Large inputs repeat the same chunks over and over, so
 *   each call memoizes chunk -> ids in a table local to the call: the tokenizer itself is
 *   immutable after construction and encode may run in many threads without locks.
 *
 * Chunks are capped at CHUNK_MAX bytes so that hostile input (a megabyte of letters) costs
 *   linear time, not quadratic; as a consequence no token is longer than CHUNK_MAX bytes,
 *   which from_json also enforces (a crafted merge list could otherwise double a token's
 *   length with each merge). */
#include "tokenizer.h"

#include <json-glib/json-glib.h>
#include <string.h>

#define CHUNK_MAX 256        /* longest pre-tokenizer chunk, so also the longest token */
#define DIGITS_MAX 3         /* digit runs are cut into groups of at most 3 */
#define VOCAB_MAX (1 << 22)  /* sanity bound on vocab_size read from JSON */
#define CACHE_MIN_LEN 1024   /* below this an encode call does not bother with a cache */

G_DEFINE_QUARK(stem-tokenizer-error, stem_tokenizer_error)

static const char *const special_names[] = {"<bos>", "<eos>", "<pad>"};

/* ---------------------------------------------------------------------------------------
 * Pre-tokenization (GPT-2 style, without a regex engine). */

enum { C_LETTER, C_DIGIT, C_PUNCT, C_SPACE, C_NEWLINE };

/* Bytes >= 0x80 count as letters so UTF-8 words (" Bogotá") stay one chunk. */
static inline int byte_class(uint8_t c) {
  if (c >= 0x80 || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return C_LETTER;
  if (c >= '0' && c <= '9') return C_DIGIT;
  if (c == '\n') return C_NEWLINE;
  if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') return C_SPACE;
  return C_PUNCT; /* everything else, NUL and other control bytes included */
}

/* End (exclusive) of the chunk that starts at s[i], i < len. Chunks:
 *   [ ]letters+  [ ]digits{1,3}  [ ]punct+  \n+  spaces+
 * A run of spaces before a word leaves its last space to the word (" Spain" stays whole even
 * after two spaces), as GPT-2's \s+(?!\S) does. */
static size_t chunk_end(const uint8_t *s, size_t len, size_t i) {
  const size_t start = i;
  const size_t max = MIN(len, start + CHUNK_MAX);
  int c = byte_class(s[i]);
  if (s[i] == ' ' && i + 1 < len) {
    int next = byte_class(s[i + 1]);
    if (next == C_LETTER || next == C_DIGIT || next == C_PUNCT) {
      c = next;
      i++;
    }
  }
  switch (c) {
  case C_DIGIT: {
    size_t dmax = MIN(len, i + DIGITS_MAX);
    while (i < dmax && byte_class(s[i]) == C_DIGIT) i++;
    return i;
  }
  case C_SPACE:
    while (i < max && byte_class(s[i]) == C_SPACE) i++;
    if (i < len && i - start >= 2 && s[i - 1] == ' ' && byte_class(s[i]) != C_SPACE &&
        byte_class(s[i]) != C_NEWLINE)
      i--;
    return i;
  default: /* letters, punctuation, newlines: a run of the same class */
    while (i < max && byte_class(s[i]) == c) i++;
    return i;
  }
}

/* ---------------------------------------------------------------------------------------
 * Small hash tables. GHashTable would box every key; these store keys inline, which
 * matters when counting 2.4 M chunks or looking up pairs in the inner encode loop. */

/* (left, right) -> int32, open addressing, linear probing. Ids are < 2^31, so the
 * all-ones key can mark empty slots. */
#define PAIR_KEY(a, b) (((uint64_t)(uint32_t)(a) << 32) | (uint32_t)(b))
#define PAIR_EMPTY UINT64_MAX

typedef struct {
  uint64_t *keys;
  int32_t *vals;
  size_t cap, n; /* cap is a power of two */
} PairMap;

static inline size_t pair_hash(uint64_t key, size_t cap) {
  return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static void pairmap_init(PairMap *m, size_t want) {
  m->cap = 16;
  while (m->cap < want * 2) m->cap *= 2;
  m->n = 0;
  m->keys = g_new(uint64_t, m->cap);
  m->vals = g_new(int32_t, m->cap);
  memset(m->keys, 0xff, m->cap * sizeof *m->keys);
}

static void pairmap_clear(PairMap *m) {
  g_free(m->keys);
  g_free(m->vals);
  memset(m, 0, sizeof *m);
}

static int32_t pairmap_get(const PairMap *m, uint64_t key) {
  for (size_t h = pair_hash(key, m->cap);; h = (h + 1) & (m->cap - 1)) {
    if (m->keys[h] == key) return m->vals[h];
    if (m->keys[h] == PAIR_EMPTY) return -1;
  }
}

/* Returns the value slot for key; *inserted says whether it was just created (value -1). */
static int32_t *pairmap_slot(PairMap *m, uint64_t key, gboolean *inserted) {
  if ((m->n + 1) * 2 > m->cap) {
    PairMap bigger;
    pairmap_init(&bigger, m->cap);
    for (size_t i = 0; i < m->cap; i++) {
      if (m->keys[i] == PAIR_EMPTY) continue;
      size_t h = pair_hash(m->keys[i], bigger.cap);
      while (bigger.keys[h] != PAIR_EMPTY) h = (h + 1) & (bigger.cap - 1);
      bigger.keys[h] = m->keys[i];
      bigger.vals[h] = m->vals[i];
    }
    bigger.n = m->n;
    pairmap_clear(m);
    *m = bigger;
  }
  size_t h = pair_hash(key, m->cap);
  while (m->keys[h] != key && m->keys[h] != PAIR_EMPTY) h = (h + 1) & (m->cap - 1);
  *inserted = m->keys[h] == PAIR_EMPTY;
  if (*inserted) {
    m->keys[h] = key;
    m->vals[h] = -1;
    m->n++;
  }
  return &m->vals[h];
}

/* Byte slice -> two int64 values. Keys point into memory owned by the caller (the text
 * being trained on or encoded, or the tokenizer's token bytes). */
typedef struct {
  const uint8_t *p; /* NULL = empty slot */
  uint32_t len, hash;
  int64_t a, b;
} SliceEntry;

typedef struct {
  SliceEntry *e;
  size_t cap, n;
} SliceMap;

static inline uint32_t slice_hash(const uint8_t *p, size_t len) {
  uint32_t h = 2166136261u; /* FNV-1a: chunks are short, so a byte loop is fine */
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static void slicemap_init(SliceMap *m, size_t want) {
  m->cap = 16;
  while (m->cap < want * 2) m->cap *= 2;
  m->n = 0;
  m->e = g_new0(SliceEntry, m->cap);
}

static void slicemap_clear(SliceMap *m) {
  g_free(m->e);
  memset(m, 0, sizeof *m);
}

static SliceEntry *slicemap_find(const SliceMap *m, const uint8_t *p, size_t len, uint32_t hash) {
  for (size_t h = hash & (m->cap - 1);; h = (h + 1) & (m->cap - 1)) {
    SliceEntry *e = &m->e[h];
    if (!e->p) return NULL;
    if (e->hash == hash && e->len == len && memcmp(e->p, p, len) == 0) return e;
  }
}

/* Find or insert; a new entry has a = b = 0 and *inserted = TRUE. */
static SliceEntry *slicemap_slot(SliceMap *m, const uint8_t *p, size_t len, uint32_t hash,
                                 gboolean *inserted) {
  if ((m->n + 1) * 2 > m->cap) {
    SliceMap bigger;
    slicemap_init(&bigger, m->cap);
    for (size_t i = 0; i < m->cap; i++) {
      if (!m->e[i].p) continue;
      size_t h = m->e[i].hash & (bigger.cap - 1);
      while (bigger.e[h].p) h = (h + 1) & (bigger.cap - 1);
      bigger.e[h] = m->e[i];
    }
    bigger.n = m->n;
    slicemap_clear(m);
    *m = bigger;
  }
  size_t h = hash & (m->cap - 1);
  for (;; h = (h + 1) & (m->cap - 1)) {
    SliceEntry *e = &m->e[h];
    if (!e->p) break;
    if (e->hash == hash && e->len == len && memcmp(e->p, p, len) == 0) {
      *inserted = FALSE;
      return e;
    }
  }
  m->e[h] = (SliceEntry){.p = p, .len = (uint32_t)len, .hash = hash};
  m->n++;
  *inserted = TRUE;
  return &m->e[h];
}

/* A growable int32 array. */
typedef struct {
  int32_t *v;
  size_t n, cap;
} IntVec;

static inline void intvec_push(IntVec *iv, int32_t x) {
  if (iv->n == iv->cap) {
    iv->cap = iv->cap ? iv->cap * 2 : 4;
    iv->v = g_renew(int32_t, iv->v, iv->cap);
  }
  iv->v[iv->n++] = x;
}

static inline void intvec_append(IntVec *iv, const int32_t *x, size_t n) {
  if (iv->n + n > iv->cap) {
    while (iv->n + n > iv->cap) iv->cap = iv->cap ? iv->cap * 2 : 16;
    iv->v = g_renew(int32_t, iv->v, iv->cap);
  }
  memcpy(iv->v + iv->n, x, n * sizeof *x);
  iv->n += n;
}

/* ---------------------------------------------------------------------------------------
 * The tokenizer object: immutable once built. */

typedef int32_t MergePair[2]; /* (left, right) */

struct StemTokenizer {
  int vocab_size; /* STEM_TOK_N_BASE + n_merges */
  int n_merges;
  MergePair *merges;    /* [n_merges]: token STEM_TOK_N_BASE + k = merges[k][0] ++ merges[k][1] */
  uint32_t *tok_off;    /* [vocab_size] offsets into tok_data */
  uint32_t *tok_len;    /* [vocab_size] */
  uint8_t *tok_data;    /* token bytes; specials hold their names */
  PairMap ranks;        /* (left, right) -> merge index k */
  SliceMap by_bytes;    /* token bytes -> a: lowest id with those bytes, b: 1 if others share them */
};

/* Builds a tokenizer from a merge list, validating it (the list may come from a file):
 * components must be earlier, non-special ids, no pair twice, no token over CHUNK_MAX bytes. */
static StemTokenizer *tok_build(MergePair *merges, int n_merges, GError **error) {
  StemTokenizer *tok = g_new0(StemTokenizer, 1);
  tok->n_merges = n_merges;
  tok->vocab_size = STEM_TOK_N_BASE + n_merges;
  tok->merges = merges; /* owned from here on, also on failure */
  tok->tok_len = g_new(uint32_t, tok->vocab_size);
  tok->tok_off = g_new(uint32_t, tok->vocab_size);
  pairmap_init(&tok->ranks, (size_t)n_merges);

  size_t total = 0;
  for (int id = 0; id < STEM_TOK_N_BASE; id++) {
    tok->tok_len[id] = id < 256 ? 1 : (uint32_t)strlen(special_names[id - 256]);
    total += tok->tok_len[id];
  }
  for (int k = 0; k < n_merges; k++) {
    int id = STEM_TOK_N_BASE + k;
    int32_t a = merges[k][0], b = merges[k][1];
    for (int j = 0; j < 2; j++) {
      int32_t x = merges[k][j];
      if (x < 0 || x >= id) {
        g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_INVALID,
                    "merge %d (token %d) refers to token %d, which is not earlier", k, id, x);
        goto fail;
      }
      if (x >= 256 && x < STEM_TOK_N_BASE) {
        g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_INVALID,
                    "merge %d (token %d) refers to special token %d", k, id, x);
        goto fail;
      }
    }
    tok->tok_len[id] = tok->tok_len[a] + tok->tok_len[b];
    if (tok->tok_len[id] > CHUNK_MAX) {
      g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_INVALID,
                  "merge %d makes a token of %u bytes (at most %d possible)", k,
                  tok->tok_len[id], CHUNK_MAX);
      goto fail;
    }
    total += tok->tok_len[id];
    gboolean inserted;
    int32_t *rank = pairmap_slot(&tok->ranks, PAIR_KEY(a, b), &inserted);
    if (!inserted) {
      g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_INVALID,
                  "merge %d repeats merge %d (%d, %d)", k, *rank, a, b);
      goto fail;
    }
    *rank = k;
  }

  tok->tok_data = g_malloc(total ? total : 1);
  size_t off = 0;
  for (int id = 0; id < tok->vocab_size; id++) {
    tok->tok_off[id] = (uint32_t)off;
    if (id < 256) {
      tok->tok_data[off] = (uint8_t)id;
    } else if (id < STEM_TOK_N_BASE) {
      memcpy(tok->tok_data + off, special_names[id - 256], tok->tok_len[id]);
    } else {
      int32_t a = merges[id - STEM_TOK_N_BASE][0], b = merges[id - STEM_TOK_N_BASE][1];
      memcpy(tok->tok_data + off, tok->tok_data + tok->tok_off[a], tok->tok_len[a]);
      memcpy(tok->tok_data + off + tok->tok_len[a], tok->tok_data + tok->tok_off[b], tok->tok_len[b]);
    }
    off += tok->tok_len[id];
  }

  /* Different merge orders can spell the same bytes ((a,bc) and (ab,c)); the table keeps the
   * lowest id and a flag so lookup can ask the encoder which one text actually produces. */
  slicemap_init(&tok->by_bytes, (size_t)tok->vocab_size);
  for (int id = 0; id < tok->vocab_size; id++) {
    if (id >= 256 && id < STEM_TOK_N_BASE) continue; /* specials are not text */
    const uint8_t *p = tok->tok_data + tok->tok_off[id];
    gboolean inserted;
    SliceEntry *e = slicemap_slot(&tok->by_bytes, p, tok->tok_len[id],
                                  slice_hash(p, tok->tok_len[id]), &inserted);
    if (inserted)
      e->a = id;
    else
      e->b = 1;
  }
  return tok;

fail:
  stem_tokenizer_free(tok);
  return NULL;
}

void stem_tokenizer_free(StemTokenizer *tok) {
  if (!tok) return;
  g_free(tok->merges);
  g_free(tok->tok_off);
  g_free(tok->tok_len);
  g_free(tok->tok_data);
  pairmap_clear(&tok->ranks);
  slicemap_clear(&tok->by_bytes);
  g_free(tok);
}

int stem_tokenizer_vocab_size(const StemTokenizer *tok) {
  g_return_val_if_fail(tok != NULL, 0);
  return tok->vocab_size;
}

/* ---------------------------------------------------------------------------------------
 * Training. */

typedef struct {
  int32_t a, b;
  int64_t count;     /* weighted occurrences over all words */
  IntVec where;      /* words that contain (or once contained) the pair; may hold stale ids */
  int32_t touched;   /* last merge step whose count increase is pending a heap push */
} Pair;

typedef struct {
  int64_t count; /* the pair's count when pushed: >= its current count */
  int32_t pair;
} HeapItem;

typedef struct {
  /* Words: the distinct chunks, as symbol sequences that shrink in place as merges apply. */
  int32_t *sym;       /* all words' symbols, back to back */
  size_t *word_off;   /* [n_words] */
  int32_t *word_len;  /* [n_words] */
  int64_t *word_cnt;  /* [n_words] occurrences of the chunk in the text */
  int32_t *word_seen; /* [n_words] last merge step that processed the word */
  size_t n_words;

  Pair *pairs;
  size_t n_pairs, cap_pairs;
  PairMap pair_ids;
  IntVec touched; /* pairs whose count grew in the current step */

  HeapItem *heap;
  size_t heap_n, heap_cap;
} Trainer;

/* Heap order: higher count first, then smaller (left, right). */
static inline gboolean heap_before(const Trainer *t, HeapItem x, HeapItem y) {
  if (x.count != y.count) return x.count > y.count;
  const Pair *px = &t->pairs[x.pair], *py = &t->pairs[y.pair];
  if (px->a != py->a) return px->a < py->a;
  return px->b < py->b;
}

static void heap_push(Trainer *t, HeapItem it) {
  if (t->heap_n == t->heap_cap) {
    t->heap_cap = t->heap_cap ? t->heap_cap * 2 : 1024;
    t->heap = g_renew(HeapItem, t->heap, t->heap_cap);
  }
  size_t i = t->heap_n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!heap_before(t, it, t->heap[parent])) break;
    t->heap[i] = t->heap[parent];
    i = parent;
  }
  t->heap[i] = it;
}

static HeapItem heap_pop(Trainer *t) {
  HeapItem top = t->heap[0], last = t->heap[--t->heap_n];
  size_t i = 0, n = t->heap_n;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && heap_before(t, t->heap[c + 1], t->heap[c])) c++;
    if (!heap_before(t, t->heap[c], last)) break;
    t->heap[i] = t->heap[c];
    i = c;
  }
  if (n > 0) t->heap[i] = last;
  return top;
}

/* The best pair with a positive count, or -1. Stale entries are re-pushed with the pair's
 * current count (see the comment at the top for why this finds the true best). */
static int32_t heap_pop_best(Trainer *t) {
  while (t->heap_n > 0) {
    HeapItem it = heap_pop(t);
    int64_t c = t->pairs[it.pair].count;
    if (c <= 0) continue;
    if (c != it.count) {
      heap_push(t, (HeapItem){c, it.pair});
      continue;
    }
    return it.pair;
  }
  return -1;
}

/* Adds delta to the count of (a, b) as it occurs in word w; step is the merge step. */
static void pair_add(Trainer *t, int32_t a, int32_t b, int64_t delta, int32_t w, int32_t step) {
  gboolean inserted;
  int32_t *slot = pairmap_slot(&t->pair_ids, PAIR_KEY(a, b), &inserted);
  if (inserted) {
    if (t->n_pairs == t->cap_pairs) {
      t->cap_pairs = t->cap_pairs ? t->cap_pairs * 2 : 4096;
      t->pairs = g_renew(Pair, t->pairs, t->cap_pairs);
    }
    *slot = (int32_t)t->n_pairs;
    t->pairs[t->n_pairs++] = (Pair){.a = a, .b = b, .touched = -1};
  }
  int32_t id = *slot;
  Pair *p = &t->pairs[id];
  p->count += delta;
  if (delta > 0) {
    /* Words are processed one at a time, so checking the last entry removes duplicates. */
    if (p->where.n == 0 || p->where.v[p->where.n - 1] != w) intvec_push(&p->where, w);
    if (p->touched != step) {
      p->touched = step;
      intvec_push(&t->touched, id);
    }
  }
}

/* Replaces every (a, b) in word w by x, left to right, updating the neighbouring pairs. */
static void merge_word(Trainer *t, int32_t w, int32_t a, int32_t b, int32_t x, int32_t step) {
  int32_t *s = t->sym + t->word_off[w];
  const int32_t n = t->word_len[w];
  const int64_t f = t->word_cnt[w];
  int32_t i = 0, j = 0; /* read, write: j <= i, so s[j-1] is output and s[i+2] still input */
  while (i < n) {
    if (i + 1 < n && s[i] == a && s[i + 1] == b) {
      if (j > 0) {
        pair_add(t, s[j - 1], a, -f, w, step);
        pair_add(t, s[j - 1], x, f, w, step);
      }
      if (i + 2 < n) {
        pair_add(t, b, s[i + 2], -f, w, step);
        pair_add(t, x, s[i + 2], f, w, step);
      }
      pair_add(t, a, b, -f, w, step);
      s[j++] = x;
      i += 2;
    } else {
      s[j++] = s[i++];
    }
  }
  t->word_len[w] = j;
}

/* Pushes the pairs whose counts grew in this step (all new: they contain the new symbol). */
static void push_touched(Trainer *t) {
  for (size_t i = 0; i < t->touched.n; i++) {
    int32_t id = t->touched.v[i];
    if (t->pairs[id].count > 0) heap_push(t, (HeapItem){t->pairs[id].count, id});
  }
  t->touched.n = 0;
}

StemTokenizer *stem_tokenizer_train(const char *text, size_t len, int vocab_size,
                                    StemProgressFn progress, void *user) {
  g_return_val_if_fail(text != NULL || len == 0, NULL);
  g_return_val_if_fail(vocab_size >= STEM_TOK_N_BASE && vocab_size <= VOCAB_MAX, NULL);
  const uint8_t *s = (const uint8_t *)text;
  const int want = vocab_size - STEM_TOK_N_BASE;
  if (progress) progress(0.0, user);

  /* 1. Count distinct chunks. */
  SliceMap chunks;
  slicemap_init(&chunks, 1 << 16);
  for (size_t i = 0; i < len;) {
    size_t e = chunk_end(s, len, i);
    gboolean inserted;
    SliceEntry *ent = slicemap_slot(&chunks, s + i, e - i, slice_hash(s + i, e - i), &inserted);
    ent->a++;
    i = e;
  }
  if (progress) progress(0.1, user);

  /* 2. One word per distinct chunk of two or more bytes (single bytes have no pairs). */
  Trainer t = {0};
  size_t n_sym = 0;
  for (size_t i = 0; i < chunks.cap; i++)
    if (chunks.e[i].p && chunks.e[i].len > 1) {
      t.n_words++;
      n_sym += chunks.e[i].len;
    }
  t.sym = g_new(int32_t, n_sym ? n_sym : 1);
  t.word_off = g_new(size_t, t.n_words ? t.n_words : 1);
  t.word_len = g_new(int32_t, t.n_words ? t.n_words : 1);
  t.word_cnt = g_new(int64_t, t.n_words ? t.n_words : 1);
  t.word_seen = g_new0(int32_t, t.n_words ? t.n_words : 1);
  pairmap_init(&t.pair_ids, 1 << 14);
  size_t w = 0, off = 0;
  for (size_t i = 0; i < chunks.cap; i++) {
    const SliceEntry *e = &chunks.e[i];
    if (!e->p || e->len < 2) continue;
    t.word_off[w] = off;
    t.word_len[w] = (int32_t)e->len;
    t.word_cnt[w] = e->a;
    for (uint32_t k = 0; k < e->len; k++) t.sym[off + k] = e->p[k];
    for (uint32_t k = 0; k + 1 < e->len; k++)
      pair_add(&t, t.sym[off + k], t.sym[off + k + 1], e->a, (int32_t)w, 0);
    off += e->len;
    w++;
  }
  slicemap_clear(&chunks);
  push_touched(&t);

  /* 3. Merge. */
  MergePair *merges = g_new(MergePair, want > 0 ? want : 1);
  int n_merges = 0;
  const int report_every = MAX(1, want / 100);
  while (n_merges < want) {
    int32_t best = heap_pop_best(&t);
    if (best < 0) break; /* every chunk is a single token: the text has no more pairs */
    const int32_t a = t.pairs[best].a, b = t.pairs[best].b;
    const int32_t x = STEM_TOK_N_BASE + n_merges, step = n_merges + 1;
    merges[n_merges][0] = a;
    merges[n_merges][1] = b;
    /* Take the word list: (a, b) only loses occurrences from here on, so nothing appends. */
    IntVec where = t.pairs[best].where;
    t.pairs[best].where = (IntVec){0};
    for (size_t k = 0; k < where.n; k++) {
      int32_t wi = where.v[k];
      if (t.word_seen[wi] == step) continue;
      t.word_seen[wi] = step;
      merge_word(&t, wi, a, b, x, step);
    }
    g_free(where.v);
    g_assert(t.pairs[best].count == 0);
    push_touched(&t);
    n_merges++;
    if (progress && n_merges % report_every == 0)
      progress(0.1 + 0.9 * (double)n_merges / want, user);
  }

  for (size_t i = 0; i < t.n_pairs; i++) g_free(t.pairs[i].where.v);
  g_free(t.pairs);
  pairmap_clear(&t.pair_ids);
  g_free(t.touched.v);
  g_free(t.heap);
  g_free(t.sym);
  g_free(t.word_off);
  g_free(t.word_len);
  g_free(t.word_cnt);
  g_free(t.word_seen);

  StemTokenizer *tok = tok_build(merges, n_merges, NULL); /* our own merges are valid */
  g_assert(tok != NULL);
  if (progress) progress(1.0, user);
  return tok;
}

/* ---------------------------------------------------------------------------------------
 * Encoding and decoding. */

/* BPE on one chunk of n <= CHUNK_MAX bytes: merge the lowest-rank adjacent pair (all its
 * occurrences, left to right) until no adjacent pair is a merge. Returns the token count.
 * Quadratic in the chunk length, which is short (and capped); the cache hides the rest. */
static size_t encode_chunk(const StemTokenizer *tok, const uint8_t *p, size_t n, int32_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = p[i];
  while (n >= 2) {
    int32_t best = G_MAXINT32;
    for (size_t i = 0; i + 1 < n; i++) {
      int32_t r = pairmap_get(&tok->ranks, PAIR_KEY(out[i], out[i + 1]));
      if (r >= 0 && r < best) best = r;
    }
    if (best == G_MAXINT32) break;
    const int32_t a = tok->merges[best][0], b = tok->merges[best][1];
    size_t i = 0, j = 0;
    while (i < n) {
      if (i + 1 < n && out[i] == a && out[i + 1] == b) {
        out[j++] = STEM_TOK_N_BASE + best;
        i += 2;
      } else {
        out[j++] = out[i++];
      }
    }
    n = j;
  }
  return n;
}

int32_t *stem_tokenizer_encode(const StemTokenizer *tok, const char *text, size_t len,
                               size_t *n_out) {
  g_return_val_if_fail(tok != NULL && n_out != NULL, NULL);
  g_return_val_if_fail(text != NULL || len == 0, NULL);
  const uint8_t *s = (const uint8_t *)text;
  IntVec out = {0};
  out.cap = len / 3 + 16;
  out.v = g_new(int32_t, out.cap);

  /* Per-call memo of chunk -> ids (a: offset into pool, b: count); see the top comment. */
  const gboolean use_cache = len >= CACHE_MIN_LEN;
  SliceMap cache = {0};
  IntVec pool = {0};
  if (use_cache) slicemap_init(&cache, 4096);

  int32_t buf[CHUNK_MAX];
  for (size_t i = 0; i < len;) {
    size_t e = chunk_end(s, len, i), n = e - i;
    if (n == 1) {
      intvec_push(&out, s[i]);
    } else if (use_cache) {
      gboolean inserted;
      SliceEntry *ent = slicemap_slot(&cache, s + i, n, slice_hash(s + i, n), &inserted);
      if (inserted) {
        size_t m = encode_chunk(tok, s + i, n, buf);
        ent->a = (int64_t)pool.n;
        ent->b = (int64_t)m;
        intvec_append(&pool, buf, m);
      }
      intvec_append(&out, pool.v + ent->a, (size_t)ent->b);
    } else {
      size_t m = encode_chunk(tok, s + i, n, buf);
      intvec_append(&out, buf, m);
    }
    i = e;
  }
  if (use_cache) {
    slicemap_clear(&cache);
    g_free(pool.v);
  }
  *n_out = out.n;
  return g_renew(int32_t, out.v, out.n ? out.n : 1);
}

char *stem_tokenizer_decode(const StemTokenizer *tok, const int32_t *ids, size_t n,
                            size_t *len_out) {
  g_return_val_if_fail(tok != NULL && (ids != NULL || n == 0), NULL);
  /* Specials and out-of-range ids contribute no bytes: decoding never fails. */
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id >= 0 && id < tok->vocab_size && (id < 256 || id >= STEM_TOK_N_BASE))
      total += tok->tok_len[id];
  }
  char *res = g_malloc(total + 1);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id >= 0 && id < tok->vocab_size && (id < 256 || id >= STEM_TOK_N_BASE)) {
      memcpy(res + off, tok->tok_data + tok->tok_off[id], tok->tok_len[id]);
      off += tok->tok_len[id];
    }
  }
  res[off] = '\0';
  if (len_out) *len_out = off;
  return res;
}

const char *stem_tokenizer_token_bytes(const StemTokenizer *tok, int id, size_t *len_out) {
  g_return_val_if_fail(tok != NULL, NULL);
  if (id < 0 || id >= tok->vocab_size) return NULL;
  if (len_out) *len_out = tok->tok_len[id];
  return (const char *)tok->tok_data + tok->tok_off[id];
}

int stem_tokenizer_lookup(const StemTokenizer *tok, const char *bytes, size_t len) {
  g_return_val_if_fail(tok != NULL, -1);
  if (!bytes || len == 0 || len > CHUNK_MAX) return -1;
  const uint8_t *p = (const uint8_t *)bytes;
  const SliceEntry *e = slicemap_find(&tok->by_bytes, p, len, slice_hash(p, len));
  if (!e) return -1;
  if (e->b) {
    /* Several tokens spell these bytes: prefer the one the encoder produces for them. */
    int32_t buf[CHUNK_MAX];
    if (encode_chunk(tok, p, len, buf) == 1) return buf[0];
  }
  return (int)e->a;
}

/* ---------------------------------------------------------------------------------------
 * Serialization. The JSON is written by hand so that its bytes (and so the sha256 stored
 * with a model) never depend on the json-glib version; reading goes through json-glib. */

char *stem_tokenizer_to_json(const StemTokenizer *tok) {
  g_return_val_if_fail(tok != NULL, NULL);
  GString *str = g_string_sized_new(64 + (size_t)tok->n_merges * 12);
  g_string_append_printf(str, "{\"type\":\"byte-bpe\",\"version\":1,\"vocab_size\":%d,\"merges\":[",
                         tok->vocab_size);
  for (int k = 0; k < tok->n_merges; k++)
    g_string_append_printf(str, "%s[%d,%d]", k ? "," : "", tok->merges[k][0], tok->merges[k][1]);
  g_string_append(str, "]}");
  return g_string_free(str, FALSE);
}

char *stem_tokenizer_sha256(const StemTokenizer *tok) {
  g_return_val_if_fail(tok != NULL, NULL);
  char *json = stem_tokenizer_to_json(tok);
  char *hex = g_compute_checksum_for_string(G_CHECKSUM_SHA256, json, -1);
  g_free(json);
  return hex;
}

/* TRUE when node is a JSON integer (not a float, string or bool). */
static gboolean node_int(JsonNode *node, gint64 *out) {
  if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int(node);
  return TRUE;
}

StemTokenizer *stem_tokenizer_from_json(const char *json, GError **error) {
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);
  if (!json) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE, "no tokenizer JSON");
    return NULL;
  }
  StemTokenizer *tok = NULL;
  JsonParser *parser = json_parser_new_immutable();
  GError *local = NULL;
  if (!json_parser_load_from_data(parser, json, -1, &local)) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE,
                "tokenizer JSON does not parse: %s", local->message);
    g_error_free(local);
    goto out;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE,
                "tokenizer JSON is not an object");
    goto out;
  }
  JsonObject *obj = json_node_get_object(root);
  JsonNode *type = json_object_get_member(obj, "type");
  if (!type || !JSON_NODE_HOLDS_VALUE(type) || json_node_get_value_type(type) != G_TYPE_STRING ||
      g_strcmp0(json_node_get_string(type), "byte-bpe") != 0) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE,
                "tokenizer \"type\" is not \"byte-bpe\"");
    goto out;
  }
  gint64 version, vocab_size;
  if (!node_int(json_object_get_member(obj, "version"), &version) || version != 1) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE,
                "tokenizer \"version\" is not 1");
    goto out;
  }
  if (!node_int(json_object_get_member(obj, "vocab_size"), &vocab_size) ||
      vocab_size < STEM_TOK_N_BASE || vocab_size > VOCAB_MAX) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_INVALID,
                "tokenizer \"vocab_size\" is missing or out of range [%d, %d]", STEM_TOK_N_BASE,
                VOCAB_MAX);
    goto out;
  }
  JsonNode *mnode = json_object_get_member(obj, "merges");
  if (!mnode || !JSON_NODE_HOLDS_ARRAY(mnode)) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE,
                "tokenizer \"merges\" is not an array");
    goto out;
  }
  JsonArray *marr = json_node_get_array(mnode);
  const guint n_merges = json_array_get_length(marr);
  if ((gint64)n_merges != vocab_size - STEM_TOK_N_BASE) {
    g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_INVALID,
                "tokenizer has %u merges but vocab_size %" G_GINT64_FORMAT " needs %" G_GINT64_FORMAT,
                n_merges, vocab_size, vocab_size - STEM_TOK_N_BASE);
    goto out;
  }
  MergePair *merges = g_new(MergePair, n_merges ? n_merges : 1);
  for (guint k = 0; k < n_merges; k++) {
    JsonNode *m = json_array_get_element(marr, k);
    JsonArray *pair = m && JSON_NODE_HOLDS_ARRAY(m) ? json_node_get_array(m) : NULL;
    gint64 a, b;
    if (!pair || json_array_get_length(pair) != 2 || !node_int(json_array_get_element(pair, 0), &a) ||
        !node_int(json_array_get_element(pair, 1), &b)) {
      g_set_error(error, STEM_TOKENIZER_ERROR, STEM_TOKENIZER_ERROR_PARSE,
                  "tokenizer merge %u is not a pair of integers", k);
      g_free(merges);
      goto out;
    }
    /* Clamp before narrowing so that huge values still fail tok_build's range check. */
    merges[k][0] = (int32_t)CLAMP(a, -1, G_MAXINT32);
    merges[k][1] = (int32_t)CLAMP(b, -1, G_MAXINT32);
  }
  tok = tok_build(merges, (int)n_merges, error);

out:
  g_object_unref(parser);
  return tok;
}

char *stem_tokenizer_token_text(const StemTokenizer *tok, int id)
{
    size_t len = 0;
    const char *b = tok ? stem_tokenizer_token_bytes(tok, id, &len) : NULL;
    if (!b) return g_strdup_printf("<%d>", id);
    if (g_utf8_validate(b, (gssize)len, NULL)) return g_strndup(b, len);
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c < 0x80) g_string_append_c(s, (char)c);
        else g_string_append_printf(s, "\\x%02X", c);
    }
    return g_string_free(s, FALSE);
}
