/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/err.h - mesh protocol errors, classified by origin, and the fixed tunnel-failure vocabulary.
 *
 * Invariants:
 *  - Every enum mesh_err value is > 0 and carries its class in bits 12..15 (MESH_ERR_CLASS_MASK); 0 means success.
 *    Negative ints elsewhere in mesh/ are -errno, so the two never collide.
 *  - Values come from mesh/err.def and are stable: an index is never reused.
 *  - Each error maps to exactly one enum mesh_reason, the word the client, the access log and the counters all see.
 */
#ifndef MESH_ERR_H
#define MESH_ERR_H

#include <stdbool.h>

#define MESH_ERR_CLASS_SHIFT 12
#define MESH_ERR_CLASS_MASK (0xf << MESH_ERR_CLASS_SHIFT)

enum mesh_err_class {
    MESH_ERR_CLASS_PEER = 1 << MESH_ERR_CLASS_SHIFT,   /* they broke protocol: RST_STREAM, GOAWAY, TLS alert */
    MESH_ERR_CLASS_LOCAL = 2 << MESH_ERR_CLASS_SHIFT,  /* resources or bugs */
    MESH_ERR_CLASS_POLICY = 3 << MESH_ERR_CLASS_SHIFT, /* denied by us */
};

/* The tunnel-failure vocabulary. */
enum mesh_reason {
    MESH_REASON_NONE = 0,
    MESH_REASON_REFUSED,
    MESH_REASON_TIMEOUT,
    MESH_REASON_UNROUTABLE,
    MESH_REASON_DENIED,
    MESH_REASON_TLS,
    MESH_REASON_H2,
    MESH_REASON_INTERNAL,
    MESH_REASON_COUNT
};

enum mesh_err {
    MESH_OK = 0,
#define MESH_ERR_X(name, cls, idx, fatal, reason, text) MESH_ERR_##name = MESH_ERR_CLASS_##cls | (idx),
#include "mesh/err.def"
#undef MESH_ERR_X
};

/* Class of err (one of enum mesh_err_class), or 0 for MESH_OK and values that are not mesh errors. */
static inline int mesh_err_class(int err)
{
    return err > 0 ? (err & MESH_ERR_CLASS_MASK) : 0;
}

/* True when err is a known enum mesh_err value (not MESH_OK). */
bool mesh_err_is_valid(int err);

/* True when err kills the whole connection rather than one stream. Unknown values and -errno are fatal. */
bool mesh_err_is_fatal(int err);

/* The reason word for err. MESH_OK maps to MESH_REASON_NONE; -errno and unknown values map to MESH_REASON_INTERNAL. */
enum mesh_reason mesh_err_reason(int err);

/* Static strings, never NULL: "MESH_ERR_TLS_ALERT" style names, the human text, and the reason words
 * ("refused", "timeout", "unroutable", "denied", "tls", "h2", "internal"; "" for NONE). Unknown values give
 * "MESH_ERR_UNKNOWN" / "unknown error". */
const char *mesh_err_name(int err);
const char *mesh_err_str(int err);
const char *mesh_reason_str(enum mesh_reason reason);

#endif /* MESH_ERR_H */
