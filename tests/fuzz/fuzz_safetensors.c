/* libFuzzer harness for the safetensors reader: parse the input from memory, then
 * touch every byte the reader hands out (each tensor's data, each metadata key
 * and value) and check the invariants a caller relies on. Any out-of-bounds
 * pointer shows up under ASan; a broken invariant aborts. Refused input must come
 * back as a one-line GError in the safetensors domain.
 *
 * Built two ways (tests/fuzz/meson.build): with -fsanitize=fuzzer under clang,
 * and linked with fuzz_driver.c for a short deterministic run in `meson test`. */
#include "engine/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_safetensors: invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);             \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* Read by fuzz_driver (weak there) to report how many inputs parsed. */
unsigned long fuzz_stat_accepted;

/* Tokens fuzz_driver splices into inputs (NULL-terminated; weak in the driver). */
const char *const fuzz_dictionary[] = {
    "\"F32\"", "\"BF16\"", "\"F16\"", "\"I32\"", "\"I64\"", "\"U8\"", "\"F64\"", "\"BOOL\"", "\"__metadata__\"",
    "\"dtype\"", "\"shape\"", "\"data_offsets\"", "[]", "{}", "[0,0]", "null", "true", "-1", "0", "1.5", "1e3",
    "4611686018427387904", "9223372036854775807", "9223372036854775808", "18446744073709551615", "\"\\u0000\"",
    "\"\\ud800\"", "\"\\ud83c\\udf89\"", "\":\"", ",", "\"", "\\", NULL,
};

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    GError *err = NULL;
    StFile *f = st_open_buffer(data, size, &err);
    if (!f) {
        CHECK(err != NULL);
        CHECK(err->domain == ST_ERROR);
        CHECK(err->message && err->message[0] && !strchr(err->message, '\n'));
        g_error_free(err);
        return 0;
    }
    CHECK(err == NULL);
    fuzz_stat_accepted++;

    size_t len = 0;
    const uint8_t *base = st_file_data(f, &len);
    CHECK(base == data && len == size);
    uint64_t sum = 0;
    for (int i = 0; i < st_n_tensors(f); i++) {
        const StTensor *t = st_tensor(f, i);
        CHECK(t && t->name);
        CHECK(st_find(f, t->name) == t); /* names are unique */
        CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
        CHECK(st_dtype_size(t->dtype) > 0);
        CHECK(st_tensor_numel(t) >= 0);
        CHECK(t->nbytes == (size_t)st_tensor_numel(t) * st_dtype_size(t->dtype));
        const uint8_t *p = t->data;
        CHECK(p >= base + 8 && p <= base + len && t->nbytes <= (size_t)(base + len - p));
        for (size_t k = 0; k < t->nbytes; k++) sum += p[k];
        for (size_t k = 0; k < strlen(t->name); k++) sum += (uint8_t)t->name[k];
    }
    CHECK(st_tensor(f, st_n_tensors(f)) == NULL);
    for (int i = 0; i < st_n_metadata(f); i++) {
        const char *k = NULL, *v = NULL;
        CHECK(st_metadata_nth(f, i, &k, &v));
        CHECK(k && v && st_metadata(f, k) == v);
        CHECK(g_utf8_validate(k, -1, NULL) && g_utf8_validate(v, -1, NULL));
        sum += strlen(k) + strlen(v) + (uint8_t)v[0];
    }
    sink = sum;
    st_close(f);
    return 0;
}
