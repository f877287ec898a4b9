/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/grpc.h - gRPC over HTTP/2 wire pieces: length-prefixed message framing, an incremental deframer, and the
 * call status taken from trailers (ztunnel-wire-facts.md section 3.1, "gRPC framing reminder").
 *
 * Invariants:
 *  - A message on the wire is a 1-byte compressed flag, a 4-byte big-endian length, then the payload. We never
 *    compress, so we always send flag 0, and a received flag other than 0 is a protocol error (no grpc-encoding is
 *    ever negotiated).
 *  - The deframer accepts input split at any byte boundary; it holds at most one message (bounded by its max) and
 *    hands it out whole. Its memory comes from the env given at init.
 *  - A status is final once grpc-status was seen (trailers, or a trailers-only response); until then have_status is
 *    false and the caller decides what a missing status means (mesh_grpc_status_from_http).
 */
#ifndef MESH_GRPC_H
#define MESH_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/buf.h"
#include "mesh/env.h"

#define MESH_GRPC_HEADER_BYTES 5
#define MESH_GRPC_MESSAGE_MAX_BYTES 256
#define MESH_GRPC_DEFAULT_MAX_MESSAGE_BYTES (4u * 1024 * 1024)

/* gRPC status codes (grpc/doc/statuscodes.md numbering). */
enum mesh_grpc_code {
    MESH_GRPC_OK = 0,
    MESH_GRPC_CANCELLED = 1,
    MESH_GRPC_UNKNOWN = 2,
    MESH_GRPC_INVALID_ARGUMENT = 3,
    MESH_GRPC_DEADLINE_EXCEEDED = 4,
    MESH_GRPC_NOT_FOUND = 5,
    MESH_GRPC_ALREADY_EXISTS = 6,
    MESH_GRPC_PERMISSION_DENIED = 7,
    MESH_GRPC_RESOURCE_EXHAUSTED = 8,
    MESH_GRPC_FAILED_PRECONDITION = 9,
    MESH_GRPC_ABORTED = 10,
    MESH_GRPC_OUT_OF_RANGE = 11,
    MESH_GRPC_UNIMPLEMENTED = 12,
    MESH_GRPC_INTERNAL = 13,
    MESH_GRPC_UNAVAILABLE = 14,
    MESH_GRPC_DATA_LOSS = 15,
    MESH_GRPC_UNAUTHENTICATED = 16,
};

/* The outcome of a call. message is NUL-terminated, percent-decoded, truncated to fit. */
struct mesh_grpc_status {
    bool have_status; /* grpc-status was received (or set locally) */
    int code;         /* enum mesh_grpc_code; values above 16 are kept as received */
    char message[MESH_GRPC_MESSAGE_MAX_BYTES];
};

/* "OK", "CANCELLED", ... "UNAUTHENTICATED"; "UNKNOWN_CODE" for anything else. Static, never NULL. */
const char *mesh_grpc_code_name(int code);

/* Write the 5-byte message prefix for an uncompressed message of len bytes into hdr. */
void mesh_grpc_frame_header(uint8_t hdr[MESH_GRPC_HEADER_BYTES], uint32_t len);

/*
 * Append one framed message (prefix + msg) to out; all or nothing.
 * Returns 0, -EMSGSIZE (len does not fit in 32 bits), -ENOBUFS (out's cap) or -ENOMEM.
 */
int mesh_grpc_frame_append(struct mesh_buf *out, const uint8_t *msg, size_t len);

/* ---- deframer ---- */

struct mesh_grpc_deframer {
    uint8_t hdr[MESH_GRPC_HEADER_BYTES];
    size_t hdr_got; /* prefix bytes collected */
    uint32_t need;  /* payload length announced by the prefix */
    bool ready;     /* a whole message sits in msg */
    struct mesh_buf msg;
    size_t max_bytes; /* largest accepted payload */
    int err;          /* sticky: 0 or -errno */
};

/*
 * Initialize. @env borrowed (allocator for the message buffer; must outlive the deframer);
 * @max_message_bytes 0 means MESH_GRPC_DEFAULT_MAX_MESSAGE_BYTES.
 */
void mesh_grpc_deframer_init(struct mesh_grpc_deframer *d, const struct mesh_env *env, size_t max_message_bytes);

/* Release the buffer. The deframer may be re-initialized afterwards. */
void mesh_grpc_deframer_fini(struct mesh_grpc_deframer *d);

/*
 * Consume bytes until one whole message is assembled or the input runs out.
 * @in, len    borrowed for the call
 * @consumed   receives how many bytes of in were used (the rest belongs to later messages: feed it again after
 *             mesh_grpc_deframer_next)
 * Returns 1 when a message is ready (read it with mesh_grpc_deframer_msg, then call mesh_grpc_deframer_next), 0 when
 * more input is needed, or a sticky -errno: -EPROTO (compressed flag set), -EMSGSIZE (announced length above the
 * max), -ENOMEM. While a message is ready, feed consumes nothing and returns 1.
 */
int mesh_grpc_deframer_feed(struct mesh_grpc_deframer *d, const uint8_t *in, size_t len, size_t *consumed);

/* The ready message; the pointer stays valid until mesh_grpc_deframer_next/fini. *len 0 with a NULL pointer is a
 * valid empty message. Only meaningful after feed returned 1. */
void mesh_grpc_deframer_msg(const struct mesh_grpc_deframer *d, const uint8_t **p, size_t *len);

/* Drop the ready message and start the next one. */
void mesh_grpc_deframer_next(struct mesh_grpc_deframer *d);

/* True when a message prefix or payload is partially received (an end of stream now truncates a message). */
bool mesh_grpc_deframer_is_partial(const struct mesh_grpc_deframer *d);

/* ---- status ---- */

/* Reset to "no status yet". */
void mesh_grpc_status_init(struct mesh_grpc_status *st);

/* Set a status locally (for transport failures and deadlines); message may be NULL. */
void mesh_grpc_status_set(struct mesh_grpc_status *st, int code, const char *message);

/*
 * Look at one response header or trailer. grpc-status (decimal) sets code and have_status; grpc-message is
 * percent-decoded into message. Other names are ignored. Names are compared case-sensitively (HTTP/2 names are
 * lowercase). Returns 0, or -EPROTO for a grpc-status that is not a decimal number.
 */
int mesh_grpc_status_on_header(struct mesh_grpc_status *st, const uint8_t *name, size_t name_len, const uint8_t *value,
                               size_t value_len);

/*
 * Map an HTTP :status to the gRPC code a client reports when the response carries no grpc-status (gRPC HTTP/2
 * protocol mapping): 200 -> UNKNOWN (missing status), 400 -> INTERNAL, 401 -> UNAUTHENTICATED, 403 ->
 * PERMISSION_DENIED, 404 -> UNIMPLEMENTED, 429/502/503/504 -> UNAVAILABLE, anything else -> UNKNOWN.
 */
int mesh_grpc_code_from_http(int http_status);

#endif /* MESH_GRPC_H */
