/* Choosing the compute backend (`--device cpu|cuda|auto`).
 *
 * The CPU backend is linked in and always works. The CUDA backend is a shared
 * module (libstem-cuda.so) opened with GModule at run time, so the program
 * starts and runs on machines with no GPU, no driver or no CUDA libraries:
 * "auto" falls back to the CPU and remembers why; "cuda" fails with that
 * reason. The module is looked for in $STEM_CUDA_MODULE (a file), then the
 * build tree, then the install directory. Opened once per process. */
#ifndef STEM_ENGINE_DEVICE_H
#define STEM_ENGINE_DEVICE_H

#include <glib.h>
#include "kernels/kernels.h"

#define STEM_DEVICE_ERROR (g_quark_from_static_string("stem-device-error"))

/* name: "cpu", "cuda", "auto" or NULL (= auto). Unknown names are an error. */
const StemKernels *stem_device_open(const char *name, GError **error);
/* Why the CUDA backend is not available (after an open that tried it), or NULL
 * when it is (or was never tried). */
const char *stem_device_cuda_unavailable(void);
/* TRUE when name is one of cpu, cuda, auto. */
gboolean stem_device_name_valid(const char *name);
/* "fp32" (or NULL), "tf32", "bf16" -> *out; FALSE for anything else. */
gboolean stem_device_math_from_name(const char *name, StemMath *out);
/* Row-cache tokens for an offload fraction F of the vocabulary (`--offload F`):
 * ceil(F * vocab) clamped to [1, vocab]; 0 (tables with the weights) for F <= 0. */
int stem_device_offload_capacity(double fraction, int vocab);

#endif
