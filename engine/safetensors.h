/* safetensors model files: memory-mapped and read in place, written atomically.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype": "F32"|"BF16"|..., "shape": [...], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {"key": "string", ...}}, then the data section.
 * The reader never trusts the file: header length, JSON, dtypes, shapes (product
 * overflow), offsets (in range, consistent with shape*dtype size, non-overlapping)
 * are all checked before any tensor pointer is handed out, so a truncated,
 * corrupted or hostile file is refused with a GError and never read out of bounds.
 * The writer pads the header so the data section starts 64-byte aligned and every
 * tensor starts at a multiple of 64 bytes, and writes to a temporary file in the
 * same directory that is renamed over the target only once complete. */
#ifndef STEM_ENGINE_SAFETENSORS_H
#define STEM_ENGINE_SAFETENSORS_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_BF16, ST_F16, ST_I32, ST_I64, ST_U8, ST_F64 } StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;   /* points into the mapping (or buffer) */
    size_t nbytes;
} StTensor;

typedef struct StFile StFile;

StFile *st_open(const char *path, GError **error);
/* Parse from memory (used by the fuzzer and tests); buf must outlive the StFile. */
StFile *st_open_buffer(const void *buf, size_t len, GError **error);
void st_close(StFile *f);

int st_n_tensors(const StFile *f);
const StTensor *st_tensor(const StFile *f, int i);
const StTensor *st_find(const StFile *f, const char *name);
/* __metadata__ value or NULL */
const char *st_metadata(const StFile *f, const char *key);
/* Base of the whole mapped file and its size (for hashing). */
const void *st_file_data(const StFile *f, size_t *len);

size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d);

/* Writer: tensors are written in insertion order; data is copied at write time
 * so the pointers must stay valid until st_writer_write returns. */
typedef struct StWriter StWriter;
StWriter *st_writer_new(void);
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data);
/* Convert fp32 data to bf16 (round to nearest even) while writing. */
void st_writer_add_f32_as_bf16(StWriter *w, const char *name, int ndim, const int64_t *shape,
                               const float *data);
void st_writer_set_metadata(StWriter *w, const char *key, const char *value);
gboolean st_writer_write(StWriter *w, const char *path, GError **error);
void st_writer_free(StWriter *w);

/* bf16 <-> f32 */
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);

#endif
