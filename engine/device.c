/* Backend selection: the linked-in CPU backend, or the CUDA module via GModule. */
#include "device.h"

#include <gmodule.h>
#include <math.h>

#ifndef STEM_CUDA_MODULE_BUILD
#define STEM_CUDA_MODULE_BUILD ""
#endif
#ifndef STEM_CUDA_MODULE_INSTALL
#define STEM_CUDA_MODULE_INSTALL ""
#endif

static GMutex lock;
static gboolean cuda_tried;
static StemKernels cuda_kernels;
static const StemKernels *cuda_ok;
static char *cuda_reason;
static GModule *cuda_module;   /* kept open for the life of the process */

gboolean stem_device_name_valid(const char *name)
{
    return !name || !g_strcmp0(name, "cpu") || !g_strcmp0(name, "cuda") || !g_strcmp0(name, "auto");
}

gboolean stem_device_math_from_name(const char *name, StemMath *out)
{
    if (!name || !g_strcmp0(name, "fp32")) *out = STEM_MATH_FP32;
    else if (!g_strcmp0(name, "tf32")) *out = STEM_MATH_TF32;
    else if (!g_strcmp0(name, "bf16")) *out = STEM_MATH_BF16;
    else return FALSE;
    return TRUE;
}

int stem_device_offload_capacity(double fraction, int vocab)
{
    if (!(fraction > 0)) return 0;
    double c = ceil(fraction * vocab);
    return c < 1 ? 1 : c > vocab ? vocab : (int)c;
}

/* Try one candidate file; on failure append why to `why`. */
static gboolean try_module(const char *path, GString *why)
{
    if (!path || !*path) return FALSE;
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_string_append_printf(why, "%s%s: not found", why->len ? "; " : "", path);
        return FALSE;
    }
    GModule *mod = g_module_open(path, G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);
    if (!mod) {
        /* typically: libcudart / libcublas missing on this machine */
        g_string_append_printf(why, "%s%s", why->len ? "; " : "", g_module_error());
        return FALSE;
    }
    gpointer sym = NULL;
    if (!g_module_symbol(mod, STEM_KERNELS_CUDA_ENTRY, &sym) || !sym) {
        g_string_append_printf(why, "%s%s: no %s symbol", why->len ? "; " : "", path, STEM_KERNELS_CUDA_ENTRY);
        g_module_close(mod);
        return FALSE;
    }
    char err[256] = "";
    if (((StemKernelsOpenFn)sym)(STEM_KERNELS_ABI, &cuda_kernels, err, sizeof err) != 0) {
        g_string_append_printf(why, "%s%s", why->len ? "; " : "", err[0] ? err : "the CUDA module refused to start");
        /* keep the module open: the CUDA runtime may have registered handlers */
        cuda_module = mod;
        return FALSE;
    }
    cuda_module = mod;
    cuda_ok = &cuda_kernels;
    return TRUE;
}

static void try_cuda(void)
{
    if (cuda_tried) return;
    cuda_tried = TRUE;
    GString *why = g_string_new(NULL);
    const char *env = g_getenv("STEM_CUDA_MODULE");
    gboolean ok = FALSE;
    if (env && *env) ok = try_module(env, why);
    else {
        ok = try_module(STEM_CUDA_MODULE_BUILD, why);
        if (!ok && !cuda_module) ok = try_module(STEM_CUDA_MODULE_INSTALL, why);
    }
    if (!ok) {
        if (!why->len) g_string_append(why, "this build has no CUDA module");
        /* one line */
        for (char *c = why->str; *c; c++) if (*c == '\n') *c = ' ';
        cuda_reason = g_string_free(why, FALSE);
    } else {
        g_string_free(why, TRUE);
    }
}

const StemKernels *stem_device_open(const char *name, GError **error)
{
    if (!stem_device_name_valid(name)) {
        g_set_error(error, STEM_DEVICE_ERROR, 1, "unknown device '%s' (use cpu, cuda or auto)", name);
        return NULL;
    }
    if (!g_strcmp0(name, "cpu")) return stem_kernels_cpu();
    g_mutex_lock(&lock);
    try_cuda();
    const StemKernels *k = cuda_ok;
    g_mutex_unlock(&lock);
    if (k) return k;
    if (!g_strcmp0(name, "cuda")) {
        g_set_error(error, STEM_DEVICE_ERROR, 2, "CUDA is not available: %s", cuda_reason);
        return NULL;
    }
    return stem_kernels_cpu();
}

const char *stem_device_cuda_unavailable(void)
{
    return cuda_ok ? NULL : cuda_reason;
}
