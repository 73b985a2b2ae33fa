/* Offloaded STEM tables: the per-chunk dedup and the device row-cache POLICY.
 *
 * Plain C with no device code: the CUDA backend drives the same objects (it only
 * adds the copies), and `stem bench offload` / the unit tests run them over a
 * token stream on the CPU to measure hit rates and bytes moved.
 *
 * Layout (DESIGN §1): the host holds all tables as [V, n_stem·d_ff], so one
 * token's rows for every STEM layer are contiguous. The cache unit is therefore
 * the TOKEN: a slot holds that token's rows for all STEM layers, a miss moves
 * row_bytes = n_stem · d_ff · sizeof(dtype), and an edit of any layer of a token
 * invalidates the whole unit.
 *
 * StemDedup: for a chunk of n ids, the unique ids in FIRST-OCCURRENCE order and
 * the inverse index (ids[i] == unique[inverse[i]]). O(n): a generation-stamped
 * id -> unique-slot array sized to the vocabulary, allocated once; nothing is
 * allocated per chunk and nothing is cleared per chunk (the stamp is bumped; the
 * arrays are cleared only when the 32-bit stamp wraps).
 *
 * StemRowCache policy choices:
 *  - Capacity is in tokens (slots). Slots are numbered 0..capacity-1; a device
 *    buffer of capacity × row_bytes is indexed by them.
 *  - LFU with LRU tie-break. Every resident token has a key (freq, tick); the
 *    victim is the unpinned resident token with the smallest freq, and among
 *    equal freq the smallest tick (least recently used). Ticks are unique, so
 *    the victim is always unique and decisions are deterministic.
 *  - One access = one chunk in which the token occurs (the cache sees the
 *    deduplicated ids, so a token repeated inside a chunk counts once). A hit
 *    does freq += 1; a miss inserts with freq = 1, or with history + 1 when
 *    keep_history is set ("perfect LFU": counts survive eviction and
 *    invalidation in a vocabulary-sized array, so a popular token evicted by a
 *    burst of rare ones comes back with its count). Without keep_history the
 *    count is forgotten on eviction ("in-cache LFU"). No aging.
 *  - Recency: the ids of a chunk are touched in the order given (first
 *    occurrence order from StemDedup); ids[i] gets tick = chunk_base + i,
 *    whether it hits or misses.
 *  - Pinning: lookup_chunk first resolves every hit and pins it, then serves
 *    the misses in order, each into a free slot if any (free slots are handed
 *    out lowest first at start and LIFO after invalidations) or else into the
 *    slot of the evicted victim. Pinned tokens (this chunk's ids) are taken out
 *    of the eviction order, so a miss can never evict a row the chunk still
 *    needs. release_chunk unpins them. A chunk with more unique ids than the
 *    capacity cannot be served and is an error (nothing is changed); callers
 *    split it into waves (the bench does).
 *  - Several chunks in flight (max_chunks > 1, for prefetch: chunk i+1 is
 *    looked up while chunk i is still being computed): a token stays pinned
 *    while ANY pinned chunk holds it (a pin count), release_chunk releases the
 *    OLDEST pinned chunk (FIFO), and a lookup whose misses do not fit in the
 *    free slots plus the unpinned residents is refused with TOO_LARGE and
 *    changes nothing (the caller waits for a release and tries again). A hit
 *    on a token pinned by an earlier chunk is an ordinary hit (freq += 1, new
 *    tick). max_chunks = 0 or 1 is the single-chunk behaviour above.
 *  - Eviction order is a binary min-heap on (freq, tick) over the unpinned
 *    residents: lookup/insert/evict are O(log capacity); the token -> slot map
 *    is a vocabulary-sized array (O(1)).
 *  - Invalidation (edits): invalidate(token) drops a resident token's row; its
 *    slot goes back to the free list and the next access misses and refetches
 *    the effective (overlay) row from the table store. Must not be called on a
 *    token pinned by the chunk in flight (error). sync_overlay invalidates a
 *    list of changed tokens (or everything when the list is unknown) and records
 *    stem_tables_generation(), so overlay_stale() tells whether the overlay
 *    changed since. invalidate_unpinned is the same flush while chunks are in
 *    flight: it drops every unpinned resident and records the generation; the
 *    pinned units stay resident and the CALLER must refresh their contents
 *    (engine/offload.c re-uploads them before their chunk computes).
 *  - Statistics: lookups (= unique ids looked up), hits, misses, evictions,
 *    invalidations, rows moved (= misses: one unit per token) and bytes moved
 *    (= misses × row_bytes). */
#ifndef STEM_ENGINE_ROWCACHE_H
#define STEM_ENGINE_ROWCACHE_H

#include <glib.h>
#include <stdint.h>
#include "tables.h"

/* ---- dedup ------------------------------------------------------------------------------- */

typedef struct StemDedup StemDedup;

StemDedup *stem_dedup_new(int vocab);
void stem_dedup_free(StemDedup *d);
/* ids[n] -> unique[n_unique] (first-occurrence order) and inverse[n]; both
 * buffers are the caller's, of at least n entries. Returns n_unique, or -1 when
 * an id is outside [0, vocab) (outputs then unspecified). */
int stem_dedup_chunk(StemDedup *d, const int32_t *ids, int n, int32_t *unique, int32_t *inverse);

/* ---- row cache --------------------------------------------------------------------------- */

typedef struct StemRowCache StemRowCache;

#define STEM_ROWCACHE_ERROR (stem_rowcache_error_quark())
typedef enum {
    STEM_ROWCACHE_ERROR_TOO_LARGE, /* more unique ids in a chunk than the capacity */
    STEM_ROWCACHE_ERROR_INVALID,   /* id out of range, duplicate id, or chunk in flight */
} StemRowCacheError;
GQuark stem_rowcache_error_quark(void);

typedef struct {
    int vocab;             /* V */
    int capacity;          /* rows (tokens) the device buffer holds, >= 1 */
    guint64 row_bytes;     /* bytes of one token's unit: n_stem · d_ff · dtype size */
    gboolean keep_history; /* perfect LFU (counts survive eviction) vs in-cache LFU */
    int max_chunks;        /* chunks that may be pinned at once; 0 or 1 = one */
} StemRowCacheOptions;

typedef struct {
    guint64 chunks;        /* lookup_chunk calls that succeeded */
    guint64 lookups;       /* unique ids looked up */
    guint64 hits, misses;
    guint64 evictions;
    guint64 invalidations; /* resident rows dropped by invalidate / sync_overlay */
    guint64 rows_moved;    /* token units copied host -> device (= misses) */
    guint64 bytes_moved;   /* rows_moved × row_bytes */
} StemRowCacheStats;

StemRowCache *stem_rowcache_new(const StemRowCacheOptions *opt);
/* Options from a table store: vocab, row_bytes = n_stem · ffn · dtype size, max_chunks 1. */
StemRowCacheOptions stem_rowcache_options_for(const StemTables *t, int capacity, gboolean keep_history);
void stem_rowcache_free(StemRowCache *c);

int stem_rowcache_capacity(const StemRowCache *c);
int stem_rowcache_size(const StemRowCache *c);           /* resident tokens */
/* Slot of a resident token, or -1. */
int stem_rowcache_slot_of(const StemRowCache *c, int token);
/* Frequency count of a token (resident, or remembered with keep_history), else 0. */
guint32 stem_rowcache_freq(const StemRowCache *c, int token);
gboolean stem_rowcache_is_pinned(const StemRowCache *c, int token);

/* Look up the n DISTINCT ids of one chunk (e.g. StemDedup's unique ids) and pin
 * them. slots[i] = the slot holding ids[i]'s rows after the call. misses[0..k)
 * = the indices i whose rows must be copied into slots[i] (k is returned), in
 * the order given. evicted (may be NULL, n entries) receives the evicted tokens
 * in eviction order; *n_evicted (may be NULL) their count. Returns -1 with an
 * error (and changes nothing) when n > capacity or the misses do not fit beside
 * the chunks in flight (TOO_LARGE), an id is out of range or repeated, or
 * max_chunks chunks are still pinned (release_chunk not called) (INVALID). */
int stem_rowcache_lookup_chunk(StemRowCache *c, const int32_t *ids, int n, int32_t *slots, int32_t *misses,
                               int32_t *evicted, int *n_evicted, GError **error);
/* End of chunk: unpin the OLDEST pinned chunk's ids (a token becomes evictable
 * again when no other pinned chunk holds it). No-op when nothing is pinned. */
void stem_rowcache_release_chunk(StemRowCache *c);
/* Chunks pinned now (0 .. max_chunks). */
int stem_rowcache_chunks_in_flight(const StemRowCache *c);

/* Drop a token's cached rows (an edit changed them). Returns TRUE when it was
 * resident. Fails (FALSE + error) when the token is pinned or out of range. */
gboolean stem_rowcache_invalidate(StemRowCache *c, int token, GError **error);
/* Invalidate tokens[n] changed in t's overlay, or everything when tokens ==
 * NULL, and remember stem_tables_generation(t). No chunk may be in flight. */
gboolean stem_rowcache_sync_overlay(StemRowCache *c, const StemTables *t, const int32_t *tokens, int n,
                                    GError **error);
/* Drop every resident that no chunk in flight pins, and remember
 * stem_tables_generation(t) (t may be NULL: generation kept). Allowed while
 * chunks are pinned: their units stay resident and must be refreshed by the
 * caller. Returns the number of units dropped (counted as invalidations). */
int stem_rowcache_invalidate_unpinned(StemRowCache *c, const StemTables *t);
/* TRUE when t's overlay changed since the last sync_overlay (or creation: 0). */
gboolean stem_rowcache_overlay_stale(const StemRowCache *c, const StemTables *t);

const StemRowCacheStats *stem_rowcache_stats(const StemRowCache *c);
void stem_rowcache_reset_stats(StemRowCache *c);

/* ---- one chunk through both (shared by the CUDA backend, the bench and the tests) -------- */

/* Dedups ids[n], then looks the unique ids up in c, in waves of at most
 * capacity ids when the chunk has more unique ids than the cache holds (each
 * wave is pinned, served and released in turn, so a row of an earlier wave may
 * be evicted by a later one: the device consumes wave by wave). work: caller
 * scratch of 4·n int32. Outputs (may be NULL): *n_unique, *n_waves, and
 * miss_flag[u] = 1 when unique id u missed (work holds the unique ids in
 * work[0..n_unique), inverse in work[n..2n)). Returns the number of misses, or
 * -1 with an error for an id outside the vocabulary. */
int stem_offload_chunk(StemRowCache *c, StemDedup *d, const int32_t *ids, int n, int32_t *work,
                       int *n_unique, int *n_waves, guint8 *miss_flag, GError **error);

#endif
