/* safetensors model files: memory-mapped and read in place, written atomically.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype": "F32"|"BF16"|..., "shape": [...], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {"key": "string", ...}}, then the data section.
 * The reader never trusts the file: header length, JSON, dtypes, shapes (product
 * overflow), offsets (in range, consistent with shape*dtype size, non-overlapping)
 * are all checked before any tensor pointer is handed out, so a truncated,
 * corrupted or hostile file is refused with a GError and never read out of bounds.
 * Stricter than the format's Python library on JSON (strict RFC 8259, integers must
 * fit in 64 bits, nesting <= 64, duplicate keys refused rather than last-wins),
 * laxer on layout: gaps between tensors and bytes after the last one are allowed
 * (harmless when reading in place); unknown members of a tensor entry are ignored.
 * The writer pads the header with spaces so the data section starts 64-byte aligned,
 * lays the tensors out back to back (no gaps: the Python `safetensors` library
 * refuses files whose offsets do not cover the data section contiguously), largest
 * element size first so every tensor is aligned to its own element size, and
 * writes to a temporary file in the same directory that is fsync'ed and renamed
 * over the target only once complete. */
#ifndef STEM_ENGINE_SAFETENSORS_H
#define STEM_ENGINE_SAFETENSORS_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_BF16, ST_F16, ST_I32, ST_I64, ST_U8, ST_F64 } StDtype;

#define ST_MAX_DIMS 8
/* Largest JSON header the reader accepts (the Python library uses the same bound). */
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

/* Every error from this module is in this domain ("stem-safetensors-error"). */
#define ST_ERROR (st_error_quark())
GQuark st_error_quark(void);
typedef enum {
    ST_ERROR_IO,          /* open, map, read, write, fsync, rename failed */
    ST_ERROR_HEADER,      /* length field, JSON syntax, not an object, duplicate keys */
    ST_ERROR_TENSOR,      /* a tensor entry: dtype, shape, offsets, overlap */
    ST_ERROR_METADATA,    /* __metadata__ not an object of strings */
    ST_ERROR_INVALID,     /* writer: bad name, shape or metadata passed by the caller */
} StError;

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
/* __metadata__ entries in header order: 0 <= i < st_n_metadata(f). */
int st_n_metadata(const StFile *f);
gboolean st_metadata_nth(const StFile *f, int i, const char **key, const char **value);

/* Element count (product of the shape; 1 for a scalar). */
int64_t st_tensor_numel(const StTensor *t);
/* TRUE when t->data is a multiple of align bytes. Files written by st_writer_write
 * have every tensor aligned to its element size (so F32 data is 4-byte aligned and
 * can be used as float* in place); files from elsewhere may not be: callers must
 * check and copy unaligned tensors before using them as typed arrays. */
gboolean st_tensor_aligned(const StTensor *t, size_t align);

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

/* SHA-256 of a file as 64 lowercase hex digits (g_free), streamed in 1 MiB chunks. */
char *st_sha256_file(const char *path, GError **error);

/* The strict JSON check the reader applies to headers (bounded nesting, 64-bit
 * integers, no duplicate keys), for JSON carried inside metadata values: run it
 * before handing untrusted JSON to json-glib, which crashes on deep nesting. */
gboolean st_json_check(const char *text, size_t len, GError **error);

/* bf16 <-> f32 (f32 -> bf16 rounds to nearest even; NaN stays NaN, sign kept) */
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);

#endif
