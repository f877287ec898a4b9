/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/buf.h - growable byte buffer used for every engine's input and output.
 *
 * Invariants:
 *  - Readable bytes are base[off, off + len); writable tail space is base[off + len, cap).
 *  - Storage is allocated lazily on the first write, starts at MESH_BUF_INITIAL_BYTES (or the cap if smaller) and
 *    doubles up to max_bytes; it never grows beyond max_bytes.
 *  - Consuming everything resets off to 0, so a drained buffer reuses its storage from the start.
 *  - All memory comes from the env allocator given at init; mesh_buf_fini returns it.
 *  - Pointers returned by mesh_buf_data / mesh_buf_reserve stay valid until the next call that may grow or compact the
 *    buffer (append, reserve, fini); consume and commit never move data.
 */
#ifndef MESH_BUF_H
#define MESH_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/env.h"

#define MESH_BUF_INITIAL_BYTES 1024
#define MESH_BUF_DEFAULT_MAX_BYTES (4u * 1024 * 1024)

struct mesh_buf {
    uint8_t *base;
    size_t off;
    size_t len;
    size_t cap;
    size_t max_bytes;
    const struct mesh_env *env;
};

/*
 * Initialize an empty buffer. No allocation happens here.
 * @env        allocator source; borrowed, must outlive the buffer
 * @max_bytes  hard cap on storage; 0 means MESH_BUF_DEFAULT_MAX_BYTES
 */
void mesh_buf_init(struct mesh_buf *b, const struct mesh_env *env, size_t max_bytes);

/* Release the storage; the buffer is left empty and may be reused (it allocates again on the next write). */
void mesh_buf_fini(struct mesh_buf *b);

/*
 * Make at least n bytes of contiguous tail space available, compacting or growing as needed.
 * @out  receives the start of the tail space; may be NULL
 * Returns 0, -ENOBUFS if len + n would exceed max_bytes, or -ENOMEM if the allocator failed (the buffer is unchanged
 * on failure).
 */
int mesh_buf_reserve(struct mesh_buf *b, size_t n, uint8_t **out);

/* Mark n bytes of the tail space (obtained from mesh_buf_reserve) as written. n must not exceed the tail space. */
void mesh_buf_commit(struct mesh_buf *b, size_t n);

/* Append n bytes copied from p. Returns 0, -ENOBUFS or -ENOMEM; on failure nothing is appended. */
int mesh_buf_append(struct mesh_buf *b, const void *p, size_t n);

/* Drop the first n readable bytes (n is clamped to the readable length). */
void mesh_buf_consume(struct mesh_buf *b, size_t n);

/* Drop all readable bytes, keeping the storage. */
void mesh_buf_reset(struct mesh_buf *b);

/* Readable bytes: pointer (NULL when the buffer never allocated) and length. */
static inline const uint8_t *mesh_buf_data(const struct mesh_buf *b)
{
    return b->base != NULL ? b->base + b->off : NULL;
}

static inline size_t mesh_buf_len(const struct mesh_buf *b)
{
    return b->len;
}

/* Bytes that may still be appended before the cap is reached. */
static inline size_t mesh_buf_room(const struct mesh_buf *b)
{
    return b->max_bytes - b->len;
}

#endif /* MESH_BUF_H */
