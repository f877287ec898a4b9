/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/hbone.c - HBONE CONNECT tunnels on nghttp2 mem_recv/mem_send (invariants in hbone.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "mesh/h2.h"
#include "mesh/hbone.h"

#define HBONE_LOG_MODULE "mesh.hbone"
#define HBONE_FLUSH_HEADROOM_BYTES (32u * 1024)
#define HBONE_RX_SLACK_BYTES (64u * 1024)
#define HBONE_METHOD_MAX_BYTES 16

struct hbone_stream {
    struct hbone_stream *next, *prev;
    struct mesh_hbone *h;
    int32_t id;
    void *su;
    struct mesh_buf rx; /* received, not yet accepted by on_data */
    struct mesh_buf tx; /* accepted from mesh_hbone_write, not yet framed */
    size_t to_consume;  /* accepted bytes whose window is still to be returned */
    struct mesh_hbone_request req;
    char method[HBONE_METHOD_MAX_BYTES];
    int status;       /* client: final status received; server: status sent; 0 = none */
    bool bad_request; /* server: a header did not fit or repeated */
    bool established; /* 200 sent/received: DATA may flow */
    bool tx_fin;      /* shutdown_wr requested */
    bool rx_fin;      /* peer END_STREAM seen */
    bool rx_fin_delivered;
    bool deferred;      /* data provider returned DEFERRED */
    bool want_writable; /* a write was cut short */
    bool closed;        /* on_stream_close delivered */
    bool h2_closed;     /* nghttp2 closed the stream while received bytes still wait for the upper layer */
};

struct mesh_hbone {
    const struct mesh_env *env;
    enum mesh_hbone_role role;
    nghttp2_session *s;
    struct mesh_hbone_cb cb;
    void *u;
    struct hbone_stream *streams; /* every allocated stream, closed or not */
    uint32_t n_live;
    int err;
    bool goaway_recv;
    bool draining;
    bool freeing;
    uint32_t delivering; /* hbone_deliver frames on the stack: lingering streams are not reaped meanwhile */
    uint64_t drain_deadline_ns;
    uint64_t next_ping_ns;
    uint64_t ping_timeout_ns;
    bool ping_outstanding;
    size_t conn_to_consume;
    size_t send_buf_cap;
};

/* ====================================================================================================== */
/* memory and errors                                                                                      */
/* ====================================================================================================== */

static void hbone_stream_notify_close(struct hbone_stream *st, int err)
{
    struct mesh_hbone *h = st->h;

    if (st->closed)
        return;
    st->closed = true;
    h->n_live--;
    if (h->cb.on_stream_close != NULL)
        h->cb.on_stream_close(h->u, st->id, st->su, err);
}

static void hbone_stream_free(struct hbone_stream *st)
{
    struct mesh_hbone *h = st->h;

    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    mesh_buf_fini(&st->rx);
    mesh_buf_fini(&st->tx);
    mesh_env_free(h->env, st);
}

/* Fatal: remember the error, ask nghttp2 for a GOAWAY, close every stream towards the upper layer. */
static int hbone_fail(struct mesh_hbone *h, int err)
{
    uint32_t code;

    if (h->err != MESH_OK)
        return h->err;
    h->err = err;
    MESH_LOG(h->env, MESH_LOG_DEBUG, HBONE_LOG_MODULE, "session failed: %s", mesh_err_name(err));
    if (err == MESH_ERR_H2_PING_TIMEOUT || err == MESH_ERR_DRAINED)
        code = NGHTTP2_NO_ERROR; /* abrupt but not an error of the peer's making */
    else if (mesh_err_class(err) == MESH_ERR_CLASS_PEER)
        code = NGHTTP2_PROTOCOL_ERROR;
    else
        code = NGHTTP2_INTERNAL_ERROR;
    nghttp2_session_terminate_session(h->s, code);
    for (struct hbone_stream *st = h->streams, *next; st != NULL; st = next) {
        next = st->next;
        hbone_stream_notify_close(st, err);
    }
    return err;
}

static struct hbone_stream *hbone_stream_new(struct mesh_hbone *h)
{
    struct hbone_stream *st = mesh_env_calloc(h->env, sizeof(*st));

    if (st == NULL)
        return NULL;
    st->h = h;
    mesh_buf_init(&st->rx, h->env, MESH_HBONE_STREAM_WINDOW_BYTES + HBONE_RX_SLACK_BYTES);
    mesh_buf_init(&st->tx, h->env, h->send_buf_cap);
    st->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = st;
    h->streams = st;
    h->n_live++;
    return st;
}

/* Our own list, not nghttp2's: a client stream exists for nghttp2 only once its HEADERS went out. */
static struct hbone_stream *hbone_find(struct mesh_hbone *h, int32_t sid)
{
    if (sid <= 0 || h->freeing)
        return NULL;
    for (struct hbone_stream *st = h->streams; st != NULL; st = st->next)
        if (st->id == sid)
            return st->closed ? NULL : st;
    return NULL;
}

static void hbone_reap(struct mesh_hbone *h);

/* Return window for accepted bytes; done outside nghttp2 callbacks. */
static int hbone_apply_consume(struct mesh_hbone *h)
{
    int rv;

    hbone_reap(h);
    for (struct hbone_stream *st = h->streams; st != NULL; st = st->next) {
        if (st->to_consume == 0 || st->closed || st->h2_closed)
            continue;
        rv = nghttp2_session_consume(h->s, st->id, st->to_consume);
        st->to_consume = 0;
        if (rv == NGHTTP2_ERR_NOMEM)
            return hbone_fail(h, MESH_ERR_NOMEM);
    }
    if (h->conn_to_consume != 0) {
        rv = nghttp2_session_consume_connection(h->s, h->conn_to_consume);
        h->conn_to_consume = 0;
        if (rv == NGHTTP2_ERR_NOMEM)
            return hbone_fail(h, MESH_ERR_NOMEM);
    }
    return MESH_OK;
}

/* Offer parked bytes, then the peer FIN once everything before it was accepted. */
static void hbone_deliver(struct hbone_stream *st)
{
    struct mesh_hbone *h = st->h;

    h->delivering++;
    while (!st->closed && mesh_buf_len(&st->rx) != 0 && st->established) {
        size_t n = mesh_buf_len(&st->rx);
        size_t acc = h->cb.on_data != NULL ? h->cb.on_data(h->u, st->id, st->su, mesh_buf_data(&st->rx), n) : n;
        if (acc > n)
            acc = n;
        mesh_buf_consume(&st->rx, acc);
        if (!st->h2_closed) /* a closed stream's window went back with it */
            st->to_consume += acc;
        if (acc < n)
            goto out;
    }
    if (!st->closed && st->rx_fin && !st->rx_fin_delivered && mesh_buf_len(&st->rx) == 0) {
        st->rx_fin_delivered = true;
        if (h->cb.on_peer_fin != NULL)
            h->cb.on_peer_fin(h->u, st->id, st->su);
    }
    if (!st->closed && st->h2_closed && st->rx_fin_delivered)
        hbone_stream_notify_close(st, MESH_OK); /* the lingering stream is done; reaped later */
out:
    h->delivering--;
}

/* Free lingering streams that are closed towards the upper layer too (nghttp2 no longer knows them). */
static void hbone_reap(struct mesh_hbone *h)
{
    if (h->delivering != 0)
        return;
    for (struct hbone_stream *st = h->streams, *next; st != NULL; st = next) {
        next = st->next;
        if (st->h2_closed && st->closed)
            hbone_stream_free(st);
    }
}

/* ====================================================================================================== */
/* nghttp2 callbacks                                                                                      */
/* ====================================================================================================== */

static ssize_t hbone_on_read_data(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length, uint32_t *flags,
                                  nghttp2_data_source *src, void *ud)
{
    struct hbone_stream *st = src->ptr;
    size_t n;

    (void)s;
    (void)sid;
    (void)ud;
    if (st->closed)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (!st->established) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    n = mesh_buf_len(&st->tx) < length ? mesh_buf_len(&st->tx) : length;
    if (n != 0) {
        memcpy(buf, mesh_buf_data(&st->tx), n);
        mesh_buf_consume(&st->tx, n);
    }
    if (mesh_buf_len(&st->tx) == 0 && st->tx_fin) {
        *flags |= NGHTTP2_DATA_FLAG_EOF; /* TCP FIN -> END_STREAM */
    } else if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int hbone_on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct mesh_hbone *h = ud;
    struct hbone_stream *st;

    if (h->role != MESH_HBONE_SERVER || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    st = hbone_stream_new(h);
    if (st == NULL) {
        h->err = MESH_ERR_NOMEM;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    st->id = frame->hd.stream_id;
    if (nghttp2_session_set_stream_user_data(s, st->id, st) != 0) {
        hbone_stream_free(st);
        h->n_live--;
        return 0;
    }
    return 0;
}

static void hbone_copy_header(struct hbone_stream *st, char *dst, size_t cap, const uint8_t *v, size_t vlen)
{
    if (dst[0] != '\0' || vlen >= cap) {
        st->bad_request = true; /* repeated or oversized */
        return;
    }
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

static bool hbone_name_is(const uint8_t *name, size_t namelen, const char *lit)
{
    return namelen == strlen(lit) && memcmp(name, lit, namelen) == 0;
}

static int hbone_on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                           const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct hbone_stream *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    struct mesh_hbone *h = ud;

    (void)flags;
    if (st == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (h->role == MESH_HBONE_SERVER) {
        struct mesh_hbone_request *r = &st->req;
        if (hbone_name_is(name, namelen, ":method"))
            hbone_copy_header(st, st->method, sizeof(st->method), value, valuelen);
        else if (hbone_name_is(name, namelen, ":authority"))
            hbone_copy_header(st, r->authority, sizeof(r->authority), value, valuelen);
        else if (hbone_name_is(name, namelen, "baggage"))
            hbone_copy_header(st, r->baggage, sizeof(r->baggage), value, valuelen);
        else if (hbone_name_is(name, namelen, "forwarded"))
            hbone_copy_header(st, r->forwarded, sizeof(r->forwarded), value, valuelen);
        else if (hbone_name_is(name, namelen, "x-forwarded-network"))
            hbone_copy_header(st, r->x_forwarded_network, sizeof(r->x_forwarded_network), value, valuelen);
        else if (hbone_name_is(name, namelen, "traceparent") && valuelen == MESH_HBONE_TRACEPARENT_BYTES &&
                 r->traceparent[0] == '\0') {
            memcpy(r->traceparent, value, valuelen); /* reused only when exactly 55 chars */
            r->traceparent[valuelen] = '\0';
        }
    } else if (hbone_name_is(name, namelen, ":status")) {
        int status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            status = status * 10 + (value[i] - '0');
        st->status = valuelen == 3 ? status : 0;
    }
    return 0;
}

/* Server: a complete request arrived. Answer 400 ourselves when it is not a well-formed CONNECT. */
static void hbone_on_request_complete(struct mesh_hbone *h, struct hbone_stream *st)
{
    struct mesh_hbone_authority auth;

    if (st->bad_request || strcmp(st->method, "CONNECT") != 0 ||
        mesh_hbone_parse_authority(st->req.authority, strlen(st->req.authority), &auth) != 0) {
        MESH_LOG(h->env, MESH_LOG_DEBUG, HBONE_LOG_MODULE, "stream %d: bad request (method %s authority %s)", st->id,
                 st->method, st->req.authority);
        mesh_hbone_respond(h, st->id, 400, NULL);
        return;
    }
    if (h->cb.on_request != NULL)
        h->cb.on_request(h->u, st->id, &st->req);
    else
        mesh_hbone_respond(h, st->id, 503, NULL);
}

/* Client: the final response. */
static void hbone_on_response(struct mesh_hbone *h, struct hbone_stream *st)
{
    if (st->status >= 100 && st->status < 200) {
        st->status = 0; /* informational: wait for the final one */
        return;
    }
    if (st->status == 200) {
        st->established = true;
        if (st->deferred) {
            st->deferred = false;
            nghttp2_session_resume_data(h->s, st->id);
        }
    } else {
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    }
    if (h->cb.on_response != NULL)
        h->cb.on_response(h->u, st->id, st->su, st->status);
}

static int hbone_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct mesh_hbone *h = ud;
    struct hbone_stream *st =
        frame->hd.stream_id != 0 ? nghttp2_session_get_stream_user_data(s, frame->hd.stream_id) : NULL;

    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (st == NULL || st->closed)
            break;
        if (h->role == MESH_HBONE_SERVER && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
            hbone_on_request_complete(h, st);
        else if (h->role == MESH_HBONE_CLIENT && !st->established && st->status != 0)
            hbone_on_response(h, st);
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->closed) {
            st->rx_fin = true;
            hbone_deliver(st);
        }
        break;
    case NGHTTP2_DATA:
        if (st != NULL && !st->closed && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            st->rx_fin = true;
            hbone_deliver(st);
        }
        break;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            h->ping_outstanding = false;
        break;
    case NGHTTP2_GOAWAY:
        h->goaway_recv = true;
        if (h->cb.on_goaway != NULL)
            h->cb.on_goaway(h->u);
        break;
    default:
        break;
    }
    return 0;
}

static int hbone_on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                               void *ud)
{
    struct hbone_stream *st = nghttp2_session_get_stream_user_data(s, sid);
    struct mesh_hbone *h = ud;
    size_t acc = 0;

    (void)flags;
    if (st == NULL || st->closed) {
        h->conn_to_consume += len;
        return 0;
    }
    if (mesh_buf_len(&st->rx) == 0 && st->established && h->cb.on_data != NULL) {
        acc = h->cb.on_data(h->u, sid, st->su, data, len);
        if (acc > len)
            acc = len;
        st->to_consume += acc;
    }
    if (acc < len && !st->closed && mesh_buf_append(&st->rx, data + acc, len - acc) != 0) {
        h->err = MESH_ERR_NOMEM;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int hbone_on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud)
{
    struct hbone_stream *st = nghttp2_session_get_stream_user_data(s, sid);
    struct mesh_hbone *h = ud;
    int err;

    if (st == NULL)
        return 0;
    /* Bytes never returned to the window still count against the connection. */
    h->conn_to_consume += st->to_consume + mesh_buf_len(&st->rx);
    st->to_consume = 0;
    if (h->role == MESH_HBONE_CLIENT && st->status != 200)
        err = st->status != 0 ? MESH_ERR_HBONE_STATUS : MESH_ERR_H2_STREAM_RESET;
    else if (h->role == MESH_HBONE_SERVER && st->status != 200)
        err = st->status != 0 ? MESH_ERR_HBONE_STATUS : MESH_ERR_H2_STREAM_RESET;
    else if (error_code != NGHTTP2_NO_ERROR || !st->rx_fin)
        err = MESH_ERR_H2_STREAM_RESET;
    else
        err = MESH_OK;
    if (err == MESH_OK && !st->closed && !st->rx_fin_delivered) {
        /* END_STREAM then RST_STREAM(NO_ERROR) (RFC 9113 section 8.1) or a plain close while the upper layer
         * is still behind: it gets every byte and the FIN first; hbone_deliver closes the stream after that. */
        st->h2_closed = true;
        return 0;
    }
    hbone_stream_notify_close(st, err);
    hbone_stream_free(st);
    return 0;
}

/* ====================================================================================================== */
/* session                                                                                                */
/* ====================================================================================================== */

static int hbone_send_settings(struct mesh_hbone *h)
{
    nghttp2_settings_entry iv[5];
    size_t n = 0;
    int rv;

    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, MESH_HBONE_STREAM_WINDOW_BYTES};
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_FRAME_SIZE, MESH_HBONE_MAX_FRAME_BYTES};
    if (h->role == MESH_HBONE_CLIENT) {
        iv[n++] =
            (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MESH_HBONE_CLIENT_MAX_HEADER_LIST_BYTES};
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    } else {
        iv[n++] =
            (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MESH_HBONE_SERVER_MAX_HEADER_LIST_BYTES};
        iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MESH_HBONE_SERVER_MAX_STREAMS};
    }
    rv = nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, n);
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, MESH_HBONE_CONN_WINDOW_BYTES);
    return mesh_h2_err(rv);
}

struct mesh_hbone *mesh_hbone_new(enum mesh_hbone_role role, const struct mesh_env *env, const struct mesh_hbone_cb *cb,
                                  void *u, int *err)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_mem mem = mesh_h2_mem(env);
    struct mesh_hbone *h = mesh_env_calloc(env, sizeof(*h));
    int rv, rc = MESH_ERR_NOMEM;

    if (h == NULL) {
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    h->env = env;
    h->role = role;
    h->cb = *cb;
    h->u = u;
    h->send_buf_cap = role == MESH_HBONE_CLIENT ? MESH_HBONE_CLIENT_SEND_BUF_BYTES : MESH_HBONE_SERVER_SEND_BUF_BYTES;
    h->next_ping_ns = mesh_env_now(env) + MESH_HBONE_PING_INTERVAL_NS;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, hbone_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, hbone_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, hbone_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, hbone_on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, hbone_on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100); /* client's initial max-send */
    rv = role == MESH_HBONE_CLIENT ? nghttp2_session_client_new3(&h->s, cbs, h, opt, &mem)
                                   : nghttp2_session_server_new3(&h->s, cbs, h, opt, &mem);
    if (rv != 0) {
        rc = mesh_h2_err(rv);
        goto fail;
    }
    rc = hbone_send_settings(h);
    if (rc != MESH_OK)
        goto fail;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    return h;
fail:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    nghttp2_session_del(h->s);
    mesh_env_free(env, h);
    *err = rc;
    return NULL;
}

void mesh_hbone_free(struct mesh_hbone *h)
{
    if (h == NULL)
        return;
    h->freeing = true;
    for (struct hbone_stream *st = h->streams, *next; st != NULL; st = next) {
        next = st->next;
        hbone_stream_notify_close(st, h->err != MESH_OK ? h->err : MESH_ERR_DRAINED);
    }
    nghttp2_session_del(h->s);
    while (h->streams != NULL)
        hbone_stream_free(h->streams);
    mesh_env_free(h->env, h);
}

static void hbone_call_writable(struct mesh_hbone *h)
{
    for (struct hbone_stream *st = h->streams, *next; st != NULL; st = next) {
        next = st->next;
        if (st->closed || !st->want_writable || mesh_buf_room(&st->tx) < h->send_buf_cap / 2)
            continue;
        st->want_writable = false;
        if (h->cb.on_writable != NULL)
            h->cb.on_writable(h->u, st->id, st->su);
    }
}

int mesh_hbone_flush(struct mesh_hbone *h, struct mesh_buf *out)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n;
        int rc;

        if (mesh_buf_room(out) < HBONE_FLUSH_HEADROOM_BYTES)
            break; /* backpressure: the caller flushes again once out drained */
        n = nghttp2_session_mem_send(h->s, &data);
        if (n < 0)
            return hbone_fail(h, mesh_h2_err((int)n));
        if (n == 0)
            break;
        rc = mesh_buf_append(out, data, (size_t)n);
        if (rc != 0)
            return hbone_fail(h, rc == -ENOMEM ? MESH_ERR_NOMEM : MESH_ERR_BUF_FULL);
    }
    if (h->err == MESH_OK)
        hbone_call_writable(h);
    hbone_reap(h);
    return h->err;
}

int mesh_hbone_feed(struct mesh_hbone *h, const uint8_t *in, size_t len, struct mesh_buf *out)
{
    ssize_t n;
    int rc;

    if (h->err != MESH_OK) {
        mesh_hbone_flush(h, out);
        return h->err;
    }
    if (len != 0) {
        n = nghttp2_session_mem_recv(h->s, in, len);
        if (n < 0) {
            int err = n == NGHTTP2_ERR_CALLBACK_FAILURE && h->err != MESH_OK ? h->err : mesh_h2_err((int)n);
            h->err = MESH_OK; /* a callback may have parked the reason; fail properly now */
            hbone_fail(h, err);
            mesh_hbone_flush(h, out);
            return h->err;
        }
    }
    rc = hbone_apply_consume(h);
    if (rc != MESH_OK)
        return rc;
    return mesh_hbone_flush(h, out);
}

/* ====================================================================================================== */
/* streams                                                                                                */
/* ====================================================================================================== */

int mesh_hbone_connect(struct mesh_hbone *h, const struct mesh_hbone_request *req, void *su, int32_t *sid)
{
    nghttp2_nv nva[6];
    size_t n = 0;
    nghttp2_data_provider prd;
    struct hbone_stream *st;
    int32_t id;

#define HBONE_NV(nm, val)                                                                                              \
    nva[n++] = (nghttp2_nv)                                                                                            \
    {                                                                                                                  \
        (uint8_t *)(uintptr_t)(nm), (uint8_t *)(uintptr_t)(val), sizeof(nm) - 1, strlen(val), NGHTTP2_NV_FLAG_NONE     \
    }
    if (h->role != MESH_HBONE_CLIENT || h->err != MESH_OK || h->goaway_recv || h->draining || h->freeing ||
        req->authority[0] == '\0')
        return h->err != MESH_OK ? h->err : MESH_ERR_STATE;
    HBONE_NV(":method", "CONNECT");
    HBONE_NV(":authority", req->authority);
    HBONE_NV("baggage", req->baggage);
    if (req->forwarded[0] != '\0')
        HBONE_NV("forwarded", req->forwarded);
    if (req->traceparent[0] != '\0')
        HBONE_NV("traceparent", req->traceparent);
    if (req->x_forwarded_network[0] != '\0')
        HBONE_NV("x-forwarded-network", req->x_forwarded_network);
#undef HBONE_NV
    st = hbone_stream_new(h);
    if (st == NULL)
        return MESH_ERR_NOMEM;
    st->su = su;
    prd.source.ptr = st;
    prd.read_callback = hbone_on_read_data;
    id = nghttp2_submit_request(h->s, NULL, nva, n, &prd, st);
    if (id < 0) {
        h->n_live--;
        hbone_stream_free(st);
        return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? MESH_ERR_H2_PROTOCOL : mesh_h2_err(id);
    }
    st->id = id;
    *sid = id;
    return MESH_OK;
}

int mesh_hbone_respond(struct mesh_hbone *h, int32_t sid, int status, const char *baggage)
{
    struct hbone_stream *st = hbone_find(h, sid);
    char code[4];
    nghttp2_nv nva[2];
    size_t n = 0;
    nghttp2_data_provider prd;
    int rv;

    if (h->role != MESH_HBONE_SERVER || st == NULL || st->status != 0 || status < 200 || status > 999)
        return MESH_ERR_STATE;
    snprintf(code, sizeof(code), "%03d", status);
    nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE};
    if (baggage != NULL && baggage[0] != '\0')
        nva[n++] =
            (nghttp2_nv){(uint8_t *)"baggage", (uint8_t *)(uintptr_t)baggage, 7, strlen(baggage), NGHTTP2_NV_FLAG_NONE};
    st->status = status;
    if (status == 200) {
        st->established = true;
        prd.source.ptr = st;
        prd.read_callback = hbone_on_read_data;
        rv = nghttp2_submit_response(h->s, sid, nva, n, &prd);
        if (rv == 0)
            hbone_deliver(st); /* bytes that raced ahead of the 200 */
    } else {
        /* HEADERS + END_STREAM; the client then resets its half of the stream */
        rv = nghttp2_submit_response(h->s, sid, nva, n, NULL);
    }
    return mesh_h2_err(rv);
}

int mesh_hbone_stream_set_user(struct mesh_hbone *h, int32_t sid, void *su)
{
    struct hbone_stream *st = hbone_find(h, sid);

    if (st == NULL)
        return MESH_ERR_STATE;
    st->su = su;
    return MESH_OK;
}

static void hbone_resume(struct mesh_hbone *h, struct hbone_stream *st)
{
    if (st->deferred && st->established) {
        st->deferred = false;
        nghttp2_session_resume_data(h->s, st->id);
    }
}

int mesh_hbone_write(struct mesh_hbone *h, int32_t sid, const uint8_t *p, size_t len, size_t *accepted)
{
    struct hbone_stream *st = hbone_find(h, sid);
    size_t n;

    *accepted = 0;
    if (h->err != MESH_OK)
        return h->err;
    if (st == NULL || st->tx_fin || st->h2_closed || (h->role == MESH_HBONE_SERVER && !st->established) ||
        (h->role == MESH_HBONE_CLIENT && st->status != 0 && st->status != 200))
        return MESH_ERR_STATE;
    n = mesh_buf_room(&st->tx) < len ? mesh_buf_room(&st->tx) : len;
    if (n != 0 && mesh_buf_append(&st->tx, p, n) != 0)
        return MESH_ERR_NOMEM;
    *accepted = n;
    if (n < len)
        st->want_writable = true;
    if (n != 0)
        hbone_resume(h, st);
    return MESH_OK;
}

int mesh_hbone_shutdown_wr(struct mesh_hbone *h, int32_t sid)
{
    struct hbone_stream *st = hbone_find(h, sid);

    if (h->err != MESH_OK)
        return h->err;
    if (st == NULL || st->tx_fin)
        return MESH_ERR_STATE;
    if (st->h2_closed) {
        st->tx_fin = true; /* the stream already ended on the wire */
        return MESH_OK;
    }
    st->tx_fin = true;
    hbone_resume(h, st);
    return MESH_OK;
}

int mesh_hbone_stream_reset(struct mesh_hbone *h, int32_t sid)
{
    struct hbone_stream *st = hbone_find(h, sid);

    if (st == NULL)
        return MESH_ERR_STATE;
    if (st->h2_closed) {
        /* nothing to send: the stream is gone on the wire; drop what the upper layer never took */
        hbone_stream_notify_close(st, MESH_ERR_H2_STREAM_RESET);
        return MESH_OK;
    }
    return mesh_h2_err(nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL));
}

int mesh_hbone_stream_resume_read(struct mesh_hbone *h, int32_t sid)
{
    struct hbone_stream *st = hbone_find(h, sid);

    if (st == NULL)
        return MESH_ERR_STATE;
    hbone_deliver(st);
    return hbone_apply_consume(h);
}

/* ====================================================================================================== */
/* connection management                                                                                  */
/* ====================================================================================================== */

int mesh_hbone_drain(struct mesh_hbone *h)
{
    int32_t last = h->role == MESH_HBONE_SERVER ? nghttp2_session_get_last_proc_stream_id(h->s) : 0;
    int rv;

    if (h->err != MESH_OK)
        return h->err;
    if (h->draining)
        return MESH_OK;
    rv = nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    if (rv != 0)
        return mesh_h2_err(rv);
    h->draining = true;
    h->drain_deadline_ns = mesh_env_now(h->env) + MESH_HBONE_DRAIN_DEADLINE_NS;
    return MESH_OK;
}

uint64_t mesh_hbone_next_deadline(const struct mesh_hbone *h)
{
    uint64_t d;

    if (h->err != MESH_OK)
        return MESH_HBONE_NO_DEADLINE;
    d = h->ping_outstanding ? h->ping_timeout_ns : h->next_ping_ns;
    if (h->draining && h->drain_deadline_ns < d)
        d = h->drain_deadline_ns;
    return d;
}

int mesh_hbone_on_deadline(struct mesh_hbone *h, uint64_t now_ns)
{
    if (h->err != MESH_OK)
        return h->err;
    if (h->draining && now_ns >= h->drain_deadline_ns)
        return hbone_fail(h, MESH_ERR_DRAINED);
    if (h->ping_outstanding && now_ns >= h->ping_timeout_ns)
        return hbone_fail(h, MESH_ERR_H2_PING_TIMEOUT);
    if (!h->ping_outstanding && now_ns >= h->next_ping_ns) {
        int rv = nghttp2_submit_ping(h->s, NGHTTP2_FLAG_NONE, NULL);
        if (rv != 0)
            return hbone_fail(h, mesh_h2_err(rv));
        h->ping_outstanding = true;
        h->ping_timeout_ns = now_ns + MESH_HBONE_PING_TIMEOUT_NS;
        h->next_ping_ns = now_ns + MESH_HBONE_PING_INTERVAL_NS;
    }
    return MESH_OK;
}

bool mesh_hbone_is_done(const struct mesh_hbone *h)
{
    if (h->err != MESH_OK)
        return !nghttp2_session_want_write(h->s);
    if (!nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s))
        return true;
    return h->draining && h->n_live == 0 && !nghttp2_session_want_write(h->s);
}

int mesh_hbone_error(const struct mesh_hbone *h)
{
    return h->err;
}

uint32_t mesh_hbone_peer_max_streams(const struct mesh_hbone *h)
{
    return nghttp2_session_get_remote_settings(h->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

uint32_t mesh_hbone_stream_count(const struct mesh_hbone *h)
{
    return h->n_live;
}

bool mesh_hbone_can_open(const struct mesh_hbone *h)
{
    return h->role == MESH_HBONE_CLIENT && h->err == MESH_OK && !h->goaway_recv && !h->draining &&
           h->n_live < mesh_hbone_peer_max_streams(h);
}

/* ====================================================================================================== */
/* authority and traceparent                                                                              */
/* ====================================================================================================== */

static int hbone_parse_port(const char *p, size_t n, uint16_t *out)
{
    unsigned long v = 0;

    if (n == 0 || n > 5)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

static int hbone_parse_ipv4(const char *p, size_t n, uint8_t out[4])
{
    size_t i = 0;

    for (int octet = 0; octet < 4; octet++) {
        unsigned v = 0;
        size_t digits = 0;
        if (octet > 0) {
            if (i >= n || p[i] != '.')
                return -EINVAL;
            i++;
        }
        while (i < n && p[i] >= '0' && p[i] <= '9' && digits < 4) {
            v = v * 10 + (unsigned)(p[i] - '0');
            i++;
            digits++;
        }
        if (digits == 0 || digits > 3 || v > 255)
            return -EINVAL;
        out[octet] = (uint8_t)v;
    }
    return i == n ? 0 : -EINVAL;
}

static int hbone_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 4291 section 2.2 text forms: x:x:x:x:x:x:x:x, "::" compression, trailing dotted IPv4. */
static int hbone_parse_ipv6(const char *p, size_t n, uint8_t out[16])
{
    uint8_t words[16];
    int nw = 0, gap = -1;
    size_t i = 0;

    if (n >= 2 && p[0] == ':' && p[1] == ':') {
        gap = 0;
        i = 2;
    } else if (n >= 1 && p[0] == ':') {
        return -EINVAL;
    }
    while (i < n) {
        size_t start = i;
        unsigned v = 0;
        int digits = 0, hv;

        if (nw >= 16)
            return -EINVAL;
        while (i < n && (hv = hbone_hexval(p[i])) >= 0 && digits < 5) {
            v = (v << 4) | (unsigned)hv;
            i++;
            digits++;
        }
        if (i < n && p[i] == '.') {
            /* embedded IPv4 in the last 32 bits */
            if (nw > 12 || hbone_parse_ipv4(p + start, n - start, words + nw) != 0)
                return -EINVAL;
            nw += 4;
            i = n;
            break;
        }
        if (digits == 0 || digits > 4)
            return -EINVAL;
        words[nw++] = (uint8_t)(v >> 8);
        words[nw++] = (uint8_t)v;
        if (i == n)
            break;
        if (p[i] != ':')
            return -EINVAL;
        i++;
        if (i < n && p[i] == ':') {
            if (gap >= 0)
                return -EINVAL;
            gap = nw;
            i++;
        } else if (i == n) {
            return -EINVAL; /* trailing single ':' */
        }
    }
    if (gap < 0) {
        if (nw != 16)
            return -EINVAL;
        memcpy(out, words, 16);
        return 0;
    }
    if (nw > 14)
        return -EINVAL;
    memset(out, 0, 16);
    memcpy(out, words, (size_t)gap);
    memcpy(out + 16 - (nw - gap), words + gap, (size_t)(nw - gap));
    return 0;
}

/* RFC 1123 host name: dot-separated labels of letters, digits and '-', 1..63 bytes each, 253 in all. */
static bool hbone_is_hostname(const char *p, size_t n)
{
    size_t label = 0;
    bool all_numeric = true;

    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '.') {
            if (label == 0 || p[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
        if (c == '-' && label == 0)
            return false;
        if (!(c >= '0' && c <= '9'))
            all_numeric = false;
        if (++label > 63)
            return false;
    }
    return !all_numeric && p[n - 1] != '-';
}

int mesh_hbone_parse_authority(const char *s, size_t len, struct mesh_hbone_authority *out)
{
    const char *host, *port;
    size_t hostlen, portlen;

    if (s == NULL || len == 0 || len >= sizeof(out->host) || memchr(s, '\0', len) != NULL)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || (size_t)(close - s) + 1 >= len || close[1] != ':')
            return -EINVAL;
        host = s + 1;
        hostlen = (size_t)(close - host);
        port = close + 2;
        portlen = len - (size_t)(port - s);
        if (hbone_parse_ipv6(host, hostlen, out->addr.ip.v6) != 0)
            return -EINVAL;
        out->is_ip = true;
        out->addr.family = MESH_ADDR_V6;
    } else {
        const char *colon = memrchr(s, ':', len);
        if (colon == NULL)
            return -EINVAL;
        host = s;
        hostlen = (size_t)(colon - s);
        port = colon + 1;
        portlen = len - hostlen - 1;
        if (hostlen == 0 || memchr(host, ':', hostlen) != NULL)
            return -EINVAL; /* IPv6 needs brackets */
        if (hbone_parse_ipv4(host, hostlen, out->addr.ip.v4) == 0) {
            out->is_ip = true;
            out->addr.family = MESH_ADDR_V4;
        } else if (!hbone_is_hostname(host, hostlen)) {
            return -EINVAL;
        }
    }
    if (hbone_parse_port(port, portlen, &out->port) != 0)
        return -EINVAL;
    memcpy(out->host, host, hostlen);
    out->host[hostlen] = '\0';
    out->addr.port = (uint16_t)((out->port >> 8) | (out->port << 8));
    return 0;
}

int mesh_hbone_make_traceparent(const struct mesh_env *env, char out[MESH_HBONE_TRACEPARENT_BYTES + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[24];
    char *p = out;
    int rc = mesh_env_random(env, r, sizeof(r));

    if (rc != 0)
        return rc;
    r[15] |= 1; /* all-zero ids are invalid */
    r[23] |= 1;
    memcpy(p, "00-", 3);
    p += 3;
    for (int i = 0; i < 16; i++) {
        *p++ = hex[r[i] >> 4];
        *p++ = hex[r[i] & 15];
    }
    *p++ = '-';
    for (int i = 16; i < 24; i++) {
        *p++ = hex[r[i] >> 4];
        *p++ = hex[r[i] & 15];
    }
    memcpy(p, "-00", 4);
    return 0;
}
