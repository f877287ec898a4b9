/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/h2.h - nghttp2 glue shared by the HBONE engine (hbone.c) and the gRPC channel (xds_conn.c).
 *
 * Invariants:
 *  - nghttp2 allocates only through the env (so allocation-failure tests cover nghttp2's own allocations); the env
 *    must outlive every session made with the returned nghttp2_mem.
 *  - Error mapping is total: every nghttp2 return value maps to one enum mesh_err.
 */
#ifndef MESH_H2_H
#define MESH_H2_H

#include <nghttp2/nghttp2.h>

#include "mesh/env.h"

/* An nghttp2_mem that allocates through env. */
nghttp2_mem mesh_h2_mem(const struct mesh_env *env);

/* 0 -> MESH_OK; NOMEM -> MESH_ERR_NOMEM; CALLBACK_FAILURE -> MESH_ERR_INTERNAL; misuse of a stream ->
 * MESH_ERR_STATE; everything else (the peer's protocol errors, flooding, flow control) -> MESH_ERR_H2_PROTOCOL. */
int mesh_h2_err(int rv);

#endif
