/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/h2.c - nghttp2 glue (see h2.h). */
#include <stdint.h>

#include "mesh/err.h"
#include "mesh/h2.h"

static void *h2_malloc(size_t size, void *ud)
{
    return mesh_env_alloc(ud, size);
}

static void h2_free(void *p, void *ud)
{
    mesh_env_free(ud, p);
}

static void *h2_calloc(size_t n, size_t size, void *ud)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return mesh_env_calloc(ud, n * size);
}

static void *h2_realloc(void *p, size_t size, void *ud)
{
    return mesh_env_realloc(ud, p, size);
}

nghttp2_mem mesh_h2_mem(const struct mesh_env *env)
{
    return (nghttp2_mem){
        .mem_user_data = (void *)(uintptr_t)env,
        .malloc = h2_malloc,
        .free = h2_free,
        .calloc = h2_calloc,
        .realloc = h2_realloc,
    };
}

int mesh_h2_err(int rv)
{
    switch (rv) {
    case 0:
        return MESH_OK;
    case NGHTTP2_ERR_NOMEM:
        return MESH_ERR_NOMEM;
    case NGHTTP2_ERR_CALLBACK_FAILURE:
        return MESH_ERR_INTERNAL;
    case NGHTTP2_ERR_INVALID_ARGUMENT:
    case NGHTTP2_ERR_INVALID_STATE:
    case NGHTTP2_ERR_STREAM_CLOSED:
    case NGHTTP2_ERR_STREAM_SHUT_WR:
    case NGHTTP2_ERR_DATA_EXIST:
        return MESH_ERR_STATE;
    default:
        return MESH_ERR_H2_PROTOCOL; /* BAD_CLIENT_MAGIC, FLOODED, FLOW_CONTROL, PROTO, ... */
    }
}
