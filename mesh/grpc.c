/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/grpc.c - gRPC message framing, deframing and status (invariants in grpc.h). */
#include <errno.h>
#include <string.h>

#include "mesh/grpc.h"

static const char *const grpc_code_names[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *mesh_grpc_code_name(int code)
{
    if (code < 0 || (size_t)code >= sizeof(grpc_code_names) / sizeof(grpc_code_names[0]))
        return "UNKNOWN_CODE";
    return grpc_code_names[code];
}

/* ====================================================================================================== */
/* framing                                                                                                */
/* ====================================================================================================== */

void mesh_grpc_frame_header(uint8_t hdr[MESH_GRPC_HEADER_BYTES], uint32_t len)
{
    hdr[0] = 0; /* not compressed */
    hdr[1] = (uint8_t)(len >> 24);
    hdr[2] = (uint8_t)(len >> 16);
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
}

int mesh_grpc_frame_append(struct mesh_buf *out, const uint8_t *msg, size_t len)
{
    uint8_t *p;
    int rc;

    if (len > UINT32_MAX)
        return -EMSGSIZE;
    rc = mesh_buf_reserve(out, MESH_GRPC_HEADER_BYTES + len, &p);
    if (rc != 0)
        return rc;
    mesh_grpc_frame_header(p, (uint32_t)len);
    if (len != 0)
        memcpy(p + MESH_GRPC_HEADER_BYTES, msg, len);
    mesh_buf_commit(out, MESH_GRPC_HEADER_BYTES + len);
    return 0;
}

/* ====================================================================================================== */
/* deframer                                                                                               */
/* ====================================================================================================== */

void mesh_grpc_deframer_init(struct mesh_grpc_deframer *d, const struct mesh_env *env, size_t max_message_bytes)
{
    memset(d, 0, sizeof(*d));
    d->max_bytes = max_message_bytes != 0 ? max_message_bytes : MESH_GRPC_DEFAULT_MAX_MESSAGE_BYTES;
    mesh_buf_init(&d->msg, env, d->max_bytes);
}

void mesh_grpc_deframer_fini(struct mesh_grpc_deframer *d)
{
    mesh_buf_fini(&d->msg);
    d->hdr_got = 0;
    d->need = 0;
    d->ready = false;
}

int mesh_grpc_deframer_feed(struct mesh_grpc_deframer *d, const uint8_t *in, size_t len, size_t *consumed)
{
    size_t used = 0;

    *consumed = 0;
    if (d->err != 0)
        return d->err;
    if (d->ready)
        return 1;
    while (d->hdr_got < MESH_GRPC_HEADER_BYTES) {
        if (used == len)
            return 0;
        d->hdr[d->hdr_got++] = in[used++];
        *consumed = used;
        if (d->hdr_got == MESH_GRPC_HEADER_BYTES) {
            if (d->hdr[0] != 0)
                return d->err = -EPROTO;
            d->need = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 | (uint32_t)d->hdr[3] << 8 | d->hdr[4];
            if (d->need > d->max_bytes)
                return d->err = -EMSGSIZE;
        }
    }
    if (mesh_buf_len(&d->msg) < d->need) {
        size_t want = d->need - mesh_buf_len(&d->msg);
        size_t n = len - used < want ? len - used : want;
        if (n != 0) {
            int rc = mesh_buf_append(&d->msg, in + used, n);
            if (rc != 0)
                return d->err = rc == -ENOBUFS ? -EMSGSIZE : rc;
            used += n;
            *consumed = used;
        }
        if (mesh_buf_len(&d->msg) < d->need)
            return 0;
    }
    d->ready = true;
    return 1;
}

void mesh_grpc_deframer_msg(const struct mesh_grpc_deframer *d, const uint8_t **p, size_t *len)
{
    *p = mesh_buf_data(&d->msg);
    *len = mesh_buf_len(&d->msg);
}

void mesh_grpc_deframer_next(struct mesh_grpc_deframer *d)
{
    mesh_buf_reset(&d->msg);
    d->hdr_got = 0;
    d->need = 0;
    d->ready = false;
}

bool mesh_grpc_deframer_is_partial(const struct mesh_grpc_deframer *d)
{
    return d->hdr_got != 0 && !d->ready;
}

/* ====================================================================================================== */
/* status                                                                                                 */
/* ====================================================================================================== */

void mesh_grpc_status_init(struct mesh_grpc_status *st)
{
    memset(st, 0, sizeof(*st));
    st->code = MESH_GRPC_UNKNOWN;
}

void mesh_grpc_status_set(struct mesh_grpc_status *st, int code, const char *message)
{
    size_t n = 0;

    st->have_status = true;
    st->code = code;
    if (message != NULL) {
        n = strlen(message);
        if (n >= sizeof(st->message))
            n = sizeof(st->message) - 1;
        memcpy(st->message, message, n);
    }
    st->message[n] = '\0';
}

static int grpc_hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* grpc-message is percent-encoded UTF-8; a malformed escape is kept literally, as gRPC implementations do. */
static void grpc_percent_decode(char *out, size_t cap, const uint8_t *in, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        int hi, lo;
        if (in[i] == '%' && i + 2 < len && (hi = grpc_hexval(in[i + 1])) >= 0 && (lo = grpc_hexval(in[i + 2])) >= 0) {
            uint8_t c = (uint8_t)(hi << 4 | lo);
            out[o++] = c != 0 ? (char)c : '?';
            i += 2;
        } else {
            out[o++] = (char)in[i];
        }
    }
    out[o] = '\0';
}

static bool grpc_name_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

int mesh_grpc_status_on_header(struct mesh_grpc_status *st, const uint8_t *name, size_t name_len, const uint8_t *value,
                               size_t value_len)
{
    if (grpc_name_is(name, name_len, "grpc-status")) {
        long code = 0;
        if (value_len == 0 || value_len > 9)
            return -EPROTO;
        for (size_t i = 0; i < value_len; i++) {
            if (value[i] < '0' || value[i] > '9')
                return -EPROTO;
            code = code * 10 + (value[i] - '0');
        }
        st->code = (int)code;
        st->have_status = true;
    } else if (grpc_name_is(name, name_len, "grpc-message")) {
        grpc_percent_decode(st->message, sizeof(st->message), value, value_len);
    }
    return 0;
}

int mesh_grpc_code_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return MESH_GRPC_INTERNAL;
    case 401:
        return MESH_GRPC_UNAUTHENTICATED;
    case 403:
        return MESH_GRPC_PERMISSION_DENIED;
    case 404:
        return MESH_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return MESH_GRPC_UNAVAILABLE;
    default:
        return MESH_GRPC_UNKNOWN;
    }
}
