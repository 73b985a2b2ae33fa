/* A plain main() for libFuzzer harnesses, so every build (gcc included, with or
 * without sanitizers) gets a short, deterministic fuzz run in `meson test`:
 *
 *   fuzz_driver CORPUS_DIR [ITERATIONS [SEED]]
 *
 * Runs LLVMFuzzerTestOneInput on every file in CORPUS_DIR, then on ITERATIONS
 * mutants (default 20000) of them made with a fixed-seed PRNG: bit flips,
 * interesting bytes, truncations, insertions, deletions, copied ranges, splices of
 * two files, digit edits (numbers in text headers), dictionary tokens, and edits
 * of a little-endian u64 length prefix at offset 0 (safetensors-style; insertions
 * and deletions inside the prefixed region keep the prefix consistent half the
 * time so mutants get past the length check). Each input sits in its own heap
 * block of exactly its size, so ASan sees any over-read.
 *
 * Harness-independent: it links with any file that defines LLVMFuzzerTestOneInput.
 * Optional, weak: `const char *const fuzz_dictionary[]` (NULL-terminated tokens)
 * and `unsigned long fuzz_stat_accepted` (inputs the harness accepted).
 *
 * To reproduce a crash: FUZZ_DRIVER_SAVE=crash.bin writes each input to that file
 * before running it, so after a crash it holds the crashing input; the run is
 * deterministic for a given corpus, ITERATIONS and SEED. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern const char *const fuzz_dictionary[] __attribute__((weak));
extern unsigned long fuzz_stat_accepted __attribute__((weak));

#define FUZZ_MAX_INPUT (1u << 20)

typedef struct {
    uint8_t *data;
    size_t len;
} Input;

static uint64_t rng_state;

static uint64_t rnd(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static Input *load_corpus(const char *dir, size_t *n_out)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        exit(2);
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        names = realloc(names, (n + 1) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str); /* readdir order is not stable */
    Input *in = calloc(n ? n : 1, sizeof *in);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t plen = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(plen);
        snprintf(path, plen, "%s/%s", dir, names[i]);
        struct stat st;
        FILE *f = (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= FUZZ_MAX_INPUT) ? fopen(path, "rb") : NULL;
        if (f) {
            in[k].len = (size_t)st.st_size;
            in[k].data = malloc(in[k].len ? in[k].len : 1);
            if (fread(in[k].data, 1, in[k].len, f) == in[k].len) k++;
            else free(in[k].data);
            fclose(f);
        }
        free(path);
        free(names[i]);
    }
    free(names);
    *n_out = k;
    return in;
}

static void run_one(const uint8_t *buf, size_t len)
{
    /* exact-size copy: ASan flags a read even one byte past the end */
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    const char *save = getenv("FUZZ_DRIVER_SAVE");
    if (save) {
        FILE *f = fopen(save, "wb");
        if (f) {
            fwrite(copy, 1, len, f);
            fclose(f);
        }
    }
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
}

/* ---- mutations on a growable buffer ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static void buf_reserve(Buf *b, size_t extra)
{
    if (b->len + extra <= b->cap) return;
    b->cap = (b->len + extra) * 2;
    b->p = realloc(b->p, b->cap);
}

static uint64_t get_prefix(const Buf *b)
{
    uint64_t v = 0;
    if (b->len >= 8)
        for (int i = 7; i >= 0; i--) v = (v << 8) | b->p[i];
    return v;
}

static void set_prefix(Buf *b, uint64_t v)
{
    if (b->len < 8) return;
    for (int i = 0; i < 8; i++) b->p[i] = (uint8_t)(v >> (8 * i));
}

/* After inserting (delta > 0) or deleting at pos, keep the length prefix right
 * if pos was inside the prefixed region (half the time). */
static void fix_prefix(Buf *b, size_t pos, long delta)
{
    uint64_t n = get_prefix(b);
    if (pos >= 8 && n < FUZZ_MAX_INPUT && pos <= 8 + n && (rnd() & 1)) set_prefix(b, (uint64_t)((long)n + delta));
}

static void insert_bytes(Buf *b, size_t pos, const uint8_t *src, size_t n)
{
    buf_reserve(b, n);
    memmove(b->p + pos + n, b->p + pos, b->len - pos);
    memcpy(b->p + pos, src, n);
    b->len += n;
    fix_prefix(b, pos, (long)n);
}

static const uint8_t interesting[] = {0,   1,   0x7f, 0x80, 0xff, '"', '{', '}', '[', ']', ',', ':',
                                      '-', '0', '9',  '\\', ' ',  'e', '.', 'u', 'n', 0xc3, 0xa9, 0xf0};

static void mutate(Buf *b, const Input *corpus, size_t n_corpus)
{
    size_t n_dict = 0;
    if (fuzz_dictionary)
        while (fuzz_dictionary[n_dict]) n_dict++;
    switch (rnd() % 12) {
    case 0: /* bit flip */
        if (b->len) b->p[below(b->len)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* interesting byte */
        if (b->len) b->p[below(b->len)] = interesting[below(sizeof interesting)];
        break;
    case 2: /* truncate */
        b->len = below(b->len + 1);
        break;
    case 3: { /* insert 1-8 random or interesting bytes */
        uint8_t tmp[8];
        size_t n = 1 + below(8);
        for (size_t i = 0; i < n; i++) tmp[i] = (rnd() & 1) ? (uint8_t)rnd() : interesting[below(sizeof interesting)];
        insert_bytes(b, below(b->len + 1), tmp, n);
        break;
    }
    case 4: { /* delete a range */
        if (!b->len) break;
        size_t pos = below(b->len), n = 1 + below(b->len - pos < 16 ? b->len - pos : 16);
        memmove(b->p + pos, b->p + pos + n, b->len - pos - n);
        b->len -= n;
        fix_prefix(b, pos, -(long)n);
        break;
    }
    case 5: { /* length prefix edit */
        uint64_t n = get_prefix(b), rest = b->len >= 8 ? b->len - 8 : 0;
        uint64_t choices[] = {rest, rest + 1, rest ? rest - 1 : 0, n + 1, n ? n - 1 : 0, below(rest + 1), 0,
                              UINT64_MAX, (uint64_t)1 << 63, 100u << 20, (100u << 20) + 1, n ^ ((uint64_t)1 << below(64))};
        set_prefix(b, choices[below(sizeof choices / sizeof choices[0])]);
        break;
    }
    case 6: { /* digit edit: change, grow or negate a number in the text */
        if (!b->len) break;
        size_t start = below(b->len);
        for (size_t i = 0; i < b->len; i++) {
            size_t pos = (start + i) % b->len;
            if (b->p[pos] < '0' || b->p[pos] > '9') continue;
            size_t r = below(4);
            if (r == 0) b->p[pos] = (uint8_t)('0' + below(10));
            else if (r == 1) {
                uint8_t d[20];
                size_t k = 1 + below(20);
                for (size_t j = 0; j < k; j++) d[j] = (uint8_t)('0' + below(10));
                insert_bytes(b, pos, d, k);
            } else if (r == 2) insert_bytes(b, pos, (const uint8_t *)"-", 1);
            else b->p[pos] = (uint8_t)(b->p[pos] == '0' ? '1' : b->p[pos] - 1);
            break;
        }
        break;
    }
    case 7: { /* copy a range elsewhere (duplicates keys, entries) */
        if (!b->len) break;
        size_t from = below(b->len), n = 1 + below(b->len - from < 64 ? b->len - from : 64);
        uint8_t tmp[64];
        memcpy(tmp, b->p + from, n);
        insert_bytes(b, below(b->len + 1), tmp, n);
        break;
    }
    case 8: { /* splice: our prefix, another file's suffix */
        const Input *o = &corpus[below(n_corpus)];
        size_t cut = below(b->len + 1), ocut = below(o->len + 1);
        b->len = cut;
        buf_reserve(b, o->len - ocut);
        memcpy(b->p + b->len, o->data + ocut, o->len - ocut);
        b->len += o->len - ocut;
        break;
    }
    case 9: /* dictionary token, inserted or overwriting */
    case 10: {
        if (!n_dict) break;
        const char *tok = fuzz_dictionary[below(n_dict)];
        size_t n = strlen(tok), pos = below(b->len + 1);
        if ((rnd() & 1) && pos + n <= b->len) memcpy(b->p + pos, tok, n);
        else insert_bytes(b, pos, (const uint8_t *)tok, n);
        break;
    }
    case 11: /* overwrite a byte with a random one */
        if (b->len) b->p[below(b->len)] = (uint8_t)rnd();
        break;
    }
    if (b->len > FUZZ_MAX_INPUT) b->len = FUZZ_MAX_INPUT;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS [SEED]]\n", argv[0]);
        return 2;
    }
    long iterations = argc > 2 ? atol(argv[2]) : 20000;
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x5eed5afe7e45ULL;
    if (!rng_state) rng_state = 1;
    size_t n_corpus;
    Input *corpus = load_corpus(argv[1], &n_corpus);
    if (n_corpus == 0) { /* still fuzz something: start from an empty input */
        corpus[0].data = malloc(1);
        corpus[0].len = 0;
        n_corpus = 1;
    }
    for (size_t i = 0; i < n_corpus; i++) run_one(corpus[i].data, corpus[i].len);
    unsigned long accepted_seeds = &fuzz_stat_accepted ? fuzz_stat_accepted : 0;

    Buf b = {NULL, 0, 0};
    for (long it = 0; it < iterations; it++) {
        const Input *src = &corpus[below(n_corpus)];
        b.len = 0;
        buf_reserve(&b, src->len + 1);
        memcpy(b.p, src->data, src->len);
        b.len = src->len;
        size_t n_mut = 1 + below(4);
        for (size_t m = 0; m < n_mut; m++) mutate(&b, corpus, n_corpus);
        run_one(b.p, b.len);
    }
    printf("fuzz_driver: %zu corpus files, %ld mutants", n_corpus, iterations);
    if (&fuzz_stat_accepted)
        printf(", accepted: %lu of %zu seeds, %lu of %ld mutants", accepted_seeds, n_corpus,
               fuzz_stat_accepted - accepted_seeds, iterations);
    printf(", no crash\n");
    free(b.p);
    for (size_t i = 0; i < n_corpus; i++) free(corpus[i].data);
    free(corpus);
    return 0;
}
