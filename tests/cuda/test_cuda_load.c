/* The CUDA module's loader path, checked on every machine (no GPU needed):
 * dlopen the module (libcudart/libcublas must resolve), find the entry point,
 * refuse a wrong ABI with a one-line reason, and then either
 *   - no device (CI, laptops): -1 with one line starting "no CUDA device", or
 *   - a device: 0 and a filled table whose every entry is set.
 * Exit 77 (skipped) only when the module was not built or cannot be loaded
 * because the CUDA libraries are missing here. */
#include "kernels/kernels.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...) do { if (cond) printf("ok - " __VA_ARGS__); \
    else { printf("not ok - " __VA_ARGS__); failures++; } printf("\n"); } while (0)

/* one line: non-empty, no newline, NUL-terminated inside the buffer */
static int one_line(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    return n > 0 && n < cap && !strchr(s, '\n') && !strchr(s, '\r');
}

int main(void)
{
    const char *path = getenv("STEM_CUDA_MODULE");
    if (!path || !*path) {
        printf("SKIP: STEM_CUDA_MODULE not set (this build has no CUDA module)\n");
        return 77;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("SKIP: cannot load %s: %s\n", path, dlerror());
        return 77;
    }
    printf("# loaded %s\n", path);
    StemKernelsOpenFn open_fn = (StemKernelsOpenFn)dlsym(h, STEM_KERNELS_CUDA_ENTRY);
    CHECK(open_fn != NULL, "entry point %s is exported", STEM_KERNELS_CUDA_ENTRY);
    if (!open_fn) return 1;
    /* -fvisibility=hidden: internal symbols stay private to the module */
    CHECK(dlsym(h, "stem_cuda_fail") == NULL && dlsym(h, "g_cu") == NULL, "internal symbols are hidden");

    StemKernels k;
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = open_fn(STEM_KERNELS_ABI + 1, &k, err, sizeof err);
    CHECK(rc == -1, "a wrong ABI is refused (rc %d)", rc);
    CHECK(one_line(err, sizeof err) && strstr(err, "ABI"), "ABI reason is one line naming the ABI: \"%.200s\"", err);

    /* a tiny error buffer must be truncated, not overrun */
    char small[8];
    memset(small, 'x', sizeof small);
    rc = open_fn(STEM_KERNELS_ABI + 1, &k, small, sizeof small);
    CHECK(rc == -1 && memchr(small, '\0', sizeof small) != NULL, "reason truncated into an 8-byte buffer");

    memset(err, 'x', sizeof err);
    memset(&k, 0, sizeof k);
    rc = open_fn(STEM_KERNELS_ABI, &k, err, sizeof err);
    if (rc != 0) {
        CHECK(rc == -1, "open without a device returns -1 (rc %d)", rc);
        CHECK(one_line(err, sizeof err), "reason is one line: \"%.200s\"", err);
        CHECK(strncmp(err, "no CUDA device", 14) == 0, "reason starts with \"no CUDA device\": \"%.200s\"", err);
    } else {
        printf("# device: %s\n", k.device_name);
        CHECK(k.abi == STEM_KERNELS_ABI && k.name && !strcmp(k.name, "cuda") && !k.is_host,
              "table: abi %d, name %s, is_host %d", k.abi, k.name ? k.name : "(null)", k.is_host);
        CHECK(one_line(k.device_name, sizeof k.device_name) && strstr(k.device_name, "(sm_"),
              "device name \"%s\"", k.device_name);
        /* every function pointer set: the table is abi, name, device_name,
         * is_host, then nothing but function pointers */
        size_t first = offsetof(StemKernels, alloc), n = (sizeof k - first) / sizeof(void (*)(void));
        int unset = 0;
        for (size_t i = 0; i < n; i++) {
            void (*fp)(void);
            memcpy(&fp, (char *)&k + first + i * sizeof fp, sizeof fp);
            if (!fp) unset++;
        }
        CHECK(unset == 0, "all %zu function pointers set (%d unset)", n, unset);
        StemKernels k2;
        CHECK(open_fn(STEM_KERNELS_ABI, &k2, err, sizeof err) == 0 && k2.alloc == k.alloc,
              "opening twice gives the same table");
    }
    printf("%s\n", failures ? "FAIL" : "PASS");
    return failures ? 1 : 0;
}
