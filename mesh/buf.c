/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/buf.c - growable byte buffer (see buf.h for the invariants). */
#include <errno.h>
#include <string.h>

#include "mesh/buf.h"

void mesh_buf_init(struct mesh_buf *b, const struct mesh_env *env, size_t max_bytes)
{
    b->base = NULL;
    b->off = 0;
    b->len = 0;
    b->cap = 0;
    b->max_bytes = max_bytes != 0 ? max_bytes : MESH_BUF_DEFAULT_MAX_BYTES;
    b->env = env;
}

void mesh_buf_fini(struct mesh_buf *b)
{
    mesh_env_free(b->env, b->base);
    b->base = NULL;
    b->off = 0;
    b->len = 0;
    b->cap = 0;
}

int mesh_buf_reserve(struct mesh_buf *b, size_t n, uint8_t **out)
{
    size_t need, ncap;
    uint8_t *nbase;

    if (n > b->max_bytes - b->len)
        return -ENOBUFS;
    if (b->cap - b->off - b->len >= n && b->base != NULL)
        goto done;
    need = b->len + n;
    if (b->cap >= need && b->base != NULL) {
        /* Enough room overall: slide the readable bytes to the front. */
        memmove(b->base, b->base + b->off, b->len);
        b->off = 0;
        goto done;
    }
    ncap = b->cap != 0 ? b->cap : MESH_BUF_INITIAL_BYTES;
    while (ncap < need)
        ncap = ncap > b->max_bytes / 2 ? b->max_bytes : ncap * 2;
    if (ncap > b->max_bytes)
        ncap = b->max_bytes;
    if (ncap < need)
        return -ENOBUFS;
    if (b->off != 0 && b->len != 0) {
        /* Compact first so realloc copies only live bytes. */
        memmove(b->base, b->base + b->off, b->len);
    }
    b->off = 0;
    nbase = mesh_env_realloc(b->env, b->base, ncap);
    if (nbase == NULL)
        return -ENOMEM;
    b->base = nbase;
    b->cap = ncap;
done:
    if (out != NULL)
        *out = b->base + b->off + b->len;
    return 0;
}

void mesh_buf_commit(struct mesh_buf *b, size_t n)
{
    b->len += n;
}

int mesh_buf_append(struct mesh_buf *b, const void *p, size_t n)
{
    uint8_t *dst;
    int rc;

    if (n == 0)
        return 0;
    rc = mesh_buf_reserve(b, n, &dst);
    if (rc != 0)
        return rc;
    memcpy(dst, p, n);
    b->len += n;
    return 0;
}

void mesh_buf_consume(struct mesh_buf *b, size_t n)
{
    if (n >= b->len) {
        b->off = 0;
        b->len = 0;
        return;
    }
    b->off += n;
    b->len -= n;
}

void mesh_buf_reset(struct mesh_buf *b)
{
    b->off = 0;
    b->len = 0;
}
