/* libFuzzer harness for the patch-file reader (editdb/patchfile.c), like
 * fuzz_safetensors.c for the model-file reader: every input goes through
 *   1. the real reader (both hashes checked): almost every mutant is refused,
 *      and must be refused with a one-line error in the patch-file domain;
 *   2. the same reader with the hash checks skipped, so mutants also reach the
 *      checks behind them (shapes, key order, finiteness, the recipe JSON).
 * Whatever is accepted must satisfy the invariants an importer relies on, and
 * every row byte is touched so ASan sees any out-of-bounds pointer.
 *
 * Built with fuzz_driver.c for a short deterministic run in `meson test`
 * (tests/fuzz/meson.build), and as a libFuzzer binary with -Dfuzz=true + clang. */
#include "editdb/patchfile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_patchfile: invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);              \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

unsigned long fuzz_stat_accepted;

const char *const fuzz_dictionary[] = {
    "\"keys\"", "\"before\"", "\"after\"", "\"I32\"", "\"F32\"", "\"BF16\"", "\"__metadata__\"", "\"format\"",
    "\"stem-workbench-patch/1\"", "\"model_sha256\"", "\"tokenizer_sha256\"", "\"recipe\"", "\"summary\"",
    "\"patch_set\"", "\"checksum\"", "\"content_sha256\"", "\"model_config\"", "\\\"kind\\\"", "\\\"swap\\\"",
    "\\\"blend\\\"", "\\\"ablate\\\"", "\\\"alpha\\\"", "\\\"source\\\"", "\\\"target\\\"", "\\\"strategy\\\"",
    "\"shape\"", "\"data_offsets\"", "[0,0]", "[1,2]", "[2,16]", "null", "-1", "0", "1e308", "nan",
    "2147483647", "4294967296", "9223372036854775807", "{}", "[]", "\"\\u0000\"", NULL,
};

static volatile uint64_t sink;

static void check_accepted(const StemPatchFile *pf)
{
    CHECK(pf->n_rows >= 1 && pf->n_rows <= STEM_PATCHFILE_MAX_ROWS);
    CHECK(pf->ffn >= 1 && pf->ffn <= STEM_PATCHFILE_MAX_FFN);
    CHECK(pf->layers && pf->tokens && pf->before && pf->after);
    CHECK(pf->model_sha256 && strlen(pf->model_sha256) == 64);
    CHECK(pf->checksum && pf->recipe_json && pf->recipe.source);
    uint64_t sum = 0;
    for (int i = 0; i < pf->n_rows; i++) {
        CHECK(pf->layers[i] >= 0 && pf->layers[i] < 64 && pf->tokens[i] >= 0);
        if (i) CHECK(pf->layers[i] > pf->layers[i - 1] || (pf->layers[i] == pf->layers[i - 1] && pf->tokens[i] > pf->tokens[i - 1]));
        for (int q = 0; q < pf->ffn; q++) {
            float b = pf->before[(size_t)i * pf->ffn + q], a = pf->after[(size_t)i * pf->ffn + q];
            CHECK(isfinite(a) && isfinite(b));
            sum += (uint64_t)(a != 0) + (uint64_t)(b != 0);
        }
    }
    sink = sum;
}

static void check_refused(GError *e)
{
    CHECK(e != NULL);
    CHECK(e->domain == STEM_PATCHFILE_ERROR);
    CHECK(e->message && e->message[0] && !strchr(e->message, '\n'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    GError *e = NULL;
    StemPatchFile *pf = stem_patchfile_read_buffer(data, size, &e);
    if (pf) {
        fuzz_stat_accepted++;
        check_accepted(pf);
        stem_patchfile_free(pf);
    } else {
        check_refused(e);
        g_clear_error(&e);
    }
    pf = stem_patchfile_parse_for_fuzzing(data, size, &e);
    if (pf) {
        check_accepted(pf);
        stem_patchfile_free(pf);
    } else {
        check_refused(e);
        g_clear_error(&e);
    }
    return 0;
}
