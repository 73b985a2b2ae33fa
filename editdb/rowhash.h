/* Private to editdb/: the patch-set checksum, streamed row by row so the
 * database loader can verify a patch set while reading it. Defined once here so
 * the planner, the database and patch files hash exactly the same bytes:
 *
 *   sha256( "stem-patchset/1\0" || u32 ffn || u32 n ||
 *           for each row in (layer, token) order: i32 layer || i32 token ||
 *           f32[ffn] before || f32[ffn] after )      all little-endian */
#ifndef STEM_EDITDB_ROWHASH_H
#define STEM_EDITDB_ROWHASH_H

#include <glib.h>
#include <stdint.h>

static inline GChecksum *rowhash_begin(int ffn, int n)
{
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    static const char tag[] = "stem-patchset/1";
    g_checksum_update(c, (const guchar *)tag, sizeof tag);
    uint32_t hdr[2] = { (uint32_t)ffn, (uint32_t)n };
    g_checksum_update(c, (const guchar *)hdr, sizeof hdr);
    return c;
}

static inline void rowhash_row(GChecksum *c, int ffn, int32_t layer, int32_t token, const void *before,
                               const void *after)
{
    int32_t k[2] = { layer, token };
    g_checksum_update(c, (const guchar *)k, sizeof k);
    g_checksum_update(c, (const guchar *)before, sizeof(float) * (size_t)ffn);
    g_checksum_update(c, (const guchar *)after, sizeof(float) * (size_t)ffn);
}

static inline char *rowhash_end(GChecksum *c)
{
    char *s = g_strdup(g_checksum_get_string(c));
    g_checksum_free(c);
    return s;
}

#endif
