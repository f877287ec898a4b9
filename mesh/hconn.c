/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/hconn.c - one HBONE connection: mesh_conn <-> TLS <-> HTTP/2, streams as virtual mesh_conns (see hconn.h). */
#include <errno.h>
#include <string.h>

#include "mesh/hconn.h"

struct hconn_stream {
    struct hconn_stream *next;
    struct mesh_hconn *h;
    int32_t sid;
    const struct mesh_conn_cb *cb;
    void *u;
    bool live;      /* upcalls enabled */
    bool connected; /* client: 200 received; server: accepted */
    bool read_on;
    bool resume_pending;
    int status;
    int err;
};

struct mesh_hconn {
    const struct mesh_env *env;
    struct mesh_sched *sched;
    const struct mesh_conn_ops *ops;
    enum mesh_hbone_role role;
    struct mesh_conn *c;
    struct mesh_tls *tls;
    struct mesh_hbone *h2;
    struct mesh_buf wire_out;
    struct mesh_buf plain_in;
    struct mesh_buf plain_out;
    struct mesh_sched_item flush_item;
    const struct mesh_hconn_owner_cb *ocb;
    void *ou;
    struct hconn_stream *streams;
    uint64_t connect_deadline;
    int err;
    int pending_err; /* set by a downcall that could not do its job (a reset that found no memory): die at flush */
    bool connected;
    bool ready;
    bool dead;
    bool closing;
    bool conn_blocked;
    bool goaway;
};

static struct mesh_conn *stream_handle(struct hconn_stream *s)
{
    return (struct mesh_conn *)(void *)s;
}

static struct hconn_stream *stream_of(struct mesh_conn *c)
{
    return (struct hconn_stream *)(void *)c;
}

static const struct hconn_stream *stream_of_const(const struct mesh_conn *c)
{
    return (const struct hconn_stream *)(const void *)c;
}

static void hconn_unlink_stream(struct mesh_hconn *h, struct hconn_stream *s)
{
    for (struct hconn_stream **pp = &h->streams; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            return;
        }
    }
}

/* ---- death ---- */

static void hconn_die(struct mesh_hconn *h, int err)
{
    if (h->dead)
        return;
    h->dead = true;
    h->err = err;
    mesh_sched_cancel(h->sched, &h->flush_item);
    if (h->c != NULL) {
        /* best effort: a pending alert or GOAWAY */
        if (mesh_buf_len(&h->wire_out) > 0 && h->connected && !h->conn_blocked) {
            struct iovec v = {.iov_base = (void *)(uintptr_t)mesh_buf_data(&h->wire_out),
                              .iov_len = mesh_buf_len(&h->wire_out)};
            (void)h->ops->write(h->c, &v, 1);
        }
        struct mesh_conn *c = h->c;
        h->c = NULL;
        h->ops->abort(c);
    }
    if (h->h2 != NULL) {
        struct mesh_hbone *h2 = h->h2;
        mesh_hbone_free(h2); /* delivers on_stream_close for every live stream */
        h->h2 = NULL;
    }
    if (h->ocb->on_dead != NULL)
        h->ocb->on_dead(h->ou, h, err);
}

/* ---- pumping bytes ---- */

static void hconn_write_wire(struct mesh_hconn *h)
{
    while (h->c != NULL && h->connected && !h->conn_blocked && mesh_buf_len(&h->wire_out) > 0) {
        struct iovec v = {.iov_base = (void *)(uintptr_t)mesh_buf_data(&h->wire_out),
                          .iov_len = mesh_buf_len(&h->wire_out)};
        ssize_t w = h->ops->write(h->c, &v, 1);
        if (w < 0) {
            hconn_die(h, (int)w);
            return;
        }
        mesh_buf_consume(&h->wire_out, (size_t)w);
        if ((size_t)w < v.iov_len)
            h->conn_blocked = true;
    }
}

static void hconn_flush(struct mesh_hconn *h)
{
    if (h->dead)
        return;
    if (h->pending_err != MESH_OK) {
        hconn_die(h, h->pending_err);
        return;
    }
    /* parked stream bytes first: resuming may free window and queue frames */
    for (struct hconn_stream *s = h->streams; s != NULL && !h->dead;) {
        struct hconn_stream *next = s->next;
        if (s->resume_pending && s->read_on && s->live) {
            s->resume_pending = false;
            (void)mesh_hbone_stream_resume_read(h->h2, s->sid);
        }
        s = next;
    }
    while (!h->dead && h->ready) {
        if (mesh_buf_len(&h->wire_out) >= MESH_HCONN_WIRE_LOW_BYTES)
            break;
        int rc = mesh_hbone_flush(h->h2, &h->plain_out);
        if (h->dead)
            return;
        if (mesh_buf_len(&h->plain_out) > 0) {
            int trc = mesh_tls_write(h->tls, mesh_buf_data(&h->plain_out), mesh_buf_len(&h->plain_out), &h->wire_out);
            if (trc != MESH_OK) {
                hconn_die(h, trc);
                return;
            }
            mesh_buf_reset(&h->plain_out);
        } else if (rc == MESH_OK) {
            break;
        }
        if (rc != MESH_OK) {
            hconn_write_wire(h);
            hconn_die(h, rc);
            return;
        }
        hconn_write_wire(h);
        if (h->conn_blocked)
            break;
    }
    hconn_write_wire(h);
    if (!h->dead && h->closing && h->h2 != NULL && mesh_hbone_is_done(h->h2) && h->c != NULL && !h->conn_blocked &&
        mesh_buf_len(&h->wire_out) == 0) {
        /* graceful end: close_notify then FIN; on_closed(0) follows */
        if (h->ready)
            (void)mesh_tls_close_notify(h->tls, &h->wire_out);
        hconn_write_wire(h);
        if (h->c != NULL)
            (void)h->ops->shutdown_wr(h->c);
    }
}

static void hconn_on_flush_item(struct mesh_sched_item *it)
{
    struct mesh_hconn *h = (struct mesh_hconn *)(void *)((char *)it - offsetof(struct mesh_hconn, flush_item));
    hconn_flush(h);
}

static void hconn_post_flush(struct mesh_hconn *h)
{
    if (!h->dead)
        mesh_sched_post(h->sched, &h->flush_item);
}

/* ---- connection upcalls ---- */

static void hconn_run_tls(struct mesh_hconn *h, const uint8_t *p, size_t n)
{
    int rc = mesh_tls_feed(h->tls, p, n, &h->plain_in, &h->wire_out);
    bool progress = true;
    for (;;) {
        if (rc != MESH_OK) {
            hconn_write_wire(h); /* the alert */
            hconn_die(h, rc);
            return;
        }
        enum mesh_tls_state st = mesh_tls_state(h->tls);
        if (!h->ready && (st == MESH_TLS_ESTABLISHED || st == MESH_TLS_PEER_CLOSED)) {
            h->ready = true;
            if (h->role == MESH_HBONE_CLIENT && h->ocb->on_ready != NULL)
                h->ocb->on_ready(h->ou, h);
            if (h->dead)
                return;
        }
        while (mesh_buf_len(&h->plain_in) > 0) {
            size_t len = mesh_buf_len(&h->plain_in);
            int hrc = mesh_hbone_feed(h->h2, mesh_buf_data(&h->plain_in), len, &h->plain_out);
            if (h->dead)
                return;
            mesh_buf_consume(&h->plain_in, len);
            if (hrc != MESH_OK) {
                hconn_flush(h);
                hconn_die(h, hrc);
                return;
            }
        }
        if (!mesh_tls_has_pending(h->tls) || !progress)
            break;
        /* ciphertext was held while plain_in was full: run it now (stop once a pass decrypts nothing: what is left
         * is an incomplete record waiting for more input) */
        rc = mesh_tls_feed(h->tls, NULL, 0, &h->plain_in, &h->wire_out);
        progress = mesh_buf_len(&h->plain_in) > 0;
    }
    if (mesh_tls_state(h->tls) == MESH_TLS_PEER_CLOSED && !h->closing) {
        h->closing = true;
        (void)mesh_hbone_drain(h->h2);
    }
}

static size_t hconn_on_data(void *u, const uint8_t *p, size_t n)
{
    struct mesh_hconn *h = u;

    mesh_sched_enter(h->sched);
    if (!h->dead) {
        hconn_run_tls(h, p, n);
        hconn_flush(h);
    }
    mesh_sched_leave(h->sched);
    return n;
}

static void hconn_on_writable(void *u)
{
    struct mesh_hconn *h = u;

    mesh_sched_enter(h->sched);
    if (!h->dead) {
        h->conn_blocked = false;
        if (!h->connected) {
            h->connected = true;
            if (h->role == MESH_HBONE_CLIENT)
                hconn_run_tls(h, NULL, 0); /* ClientHello */
        }
        hconn_flush(h);
    }
    mesh_sched_leave(h->sched);
}

static void hconn_on_peer_fin(void *u)
{
    struct mesh_hconn *h = u;

    mesh_sched_enter(h->sched);
    if (!h->dead) {
        if (h->closing && (h->h2 == NULL || mesh_hbone_stream_count(h->h2) == 0)) {
            /* both sides are closing: finish ours */
            if (h->c != NULL)
                (void)h->ops->shutdown_wr(h->c);
        } else {
            /* the peer is gone for reading: nothing more can arrive on any stream */
            hconn_die(h, mesh_hbone_stream_count(h->h2) > 0 ? MESH_ERR_TLS_CLOSED : 0);
        }
    }
    mesh_sched_leave(h->sched);
}

static void hconn_on_closed(void *u, int err)
{
    struct mesh_hconn *h = u;

    mesh_sched_enter(h->sched);
    h->c = NULL;
    if (!h->dead) {
        if (!h->connected && err == 0)
            err = -ECONNRESET;
        hconn_die(h, err);
    }
    mesh_sched_leave(h->sched);
}

const struct mesh_conn_cb mesh_hconn_conn_cb = {
    .on_data = hconn_on_data,
    .on_writable = hconn_on_writable,
    .on_peer_fin = hconn_on_peer_fin,
    .on_closed = hconn_on_closed,
};

/* ---- HTTP/2 upcalls ---- */

static void hconn_h2_on_request(void *u, int32_t sid, const struct mesh_hbone_request *req)
{
    struct mesh_hconn *h = u;
    if (h->ocb->on_request != NULL)
        h->ocb->on_request(h->ou, h, sid, req);
}

static void hconn_h2_on_response(void *u, int32_t sid, void *su, int status)
{
    struct hconn_stream *s = su;
    (void)u;
    (void)sid;
    if (s == NULL)
        return;
    s->status = status;
    if (status == 200) {
        s->connected = true;
        if (s->live && s->cb->on_writable != NULL)
            s->cb->on_writable(s->u);
    }
}

static size_t hconn_h2_on_data(void *u, int32_t sid, void *su, const uint8_t *p, size_t n)
{
    struct hconn_stream *s = su;
    (void)u;
    (void)sid;
    if (s == NULL || !s->live)
        return n;
    if (!s->read_on)
        return 0;
    return s->cb->on_data(s->u, p, n);
}

static void hconn_h2_on_peer_fin(void *u, int32_t sid, void *su)
{
    struct hconn_stream *s = su;
    (void)u;
    (void)sid;
    if (s != NULL && s->live && s->cb->on_peer_fin != NULL)
        s->cb->on_peer_fin(s->u);
}

static void hconn_h2_on_writable(void *u, int32_t sid, void *su)
{
    struct hconn_stream *s = su;
    (void)u;
    (void)sid;
    if (s != NULL && s->live && s->cb->on_writable != NULL)
        s->cb->on_writable(s->u);
}

static void hconn_h2_on_stream_close(void *u, int32_t sid, void *su, int err)
{
    struct mesh_hconn *h = u;
    struct hconn_stream *s = su;
    (void)sid;
    if (s == NULL)
        return;
    hconn_unlink_stream(h, s);
    s->err = err;
    if (s->live) {
        s->live = false;
        int e = 0;
        if (err == MESH_ERR_HBONE_STATUS)
            e = -ECONNREFUSED;
        else if (err != MESH_OK)
            e = -ECONNRESET;
        if (s->cb->on_closed != NULL)
            s->cb->on_closed(s->u, e);
    }
    mesh_env_free(h->env, s);
    /* a graceful close may be waiting for the last stream */
    if (h->closing)
        hconn_post_flush(h);
}

static void hconn_h2_on_goaway(void *u)
{
    struct mesh_hconn *h = u;
    h->goaway = true;
    if (h->ocb->on_goaway != NULL)
        h->ocb->on_goaway(h->ou, h);
}

static const struct mesh_hbone_cb hconn_h2_cb = {
    .on_request = hconn_h2_on_request,
    .on_response = hconn_h2_on_response,
    .on_data = hconn_h2_on_data,
    .on_peer_fin = hconn_h2_on_peer_fin,
    .on_writable = hconn_h2_on_writable,
    .on_stream_close = hconn_h2_on_stream_close,
    .on_goaway = hconn_h2_on_goaway,
};

/* ---- lifecycle ---- */

struct mesh_hconn *mesh_hconn_new(const struct mesh_env *env, struct mesh_sched *sched, const struct mesh_conn_ops *ops,
                                  enum mesh_hbone_role role, struct mesh_tls_ctx *ctx,
                                  const struct mesh_spiffe_id *expected, size_t n_expected,
                                  uint64_t connect_deadline_ns, const struct mesh_hconn_owner_cb *ocb, void *ou,
                                  int *err)
{
    struct mesh_hconn *h = mesh_env_calloc(env, sizeof(*h));
    if (h == NULL) {
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    h->env = env;
    h->sched = sched;
    h->ops = ops;
    h->role = role;
    h->ocb = ocb;
    h->ou = ou;
    h->connect_deadline = connect_deadline_ns;
    mesh_sched_item_init(&h->flush_item, hconn_on_flush_item);
    mesh_buf_init(&h->wire_out, env, MESH_HCONN_WIRE_MAX_BYTES);
    mesh_buf_init(&h->plain_in, env, MESH_HCONN_PLAIN_MAX_BYTES);
    mesh_buf_init(&h->plain_out, env, MESH_HCONN_PLAIN_MAX_BYTES);
    h->tls = mesh_tls_new(ctx, expected, n_expected, err);
    if (h->tls == NULL)
        goto fail;
    h->h2 = mesh_hbone_new(role, env, &hconn_h2_cb, h, err);
    if (h->h2 == NULL)
        goto fail;
    return h;
fail:
    mesh_tls_free(h->tls);
    mesh_env_free(env, h);
    return NULL;
}

void mesh_hconn_attach(struct mesh_hconn *h, struct mesh_conn *c, bool accepted)
{
    h->c = c;
    h->connected = accepted;
    if (accepted)
        h->connect_deadline = MESH_TLS_NO_DEADLINE;
}

void mesh_hconn_close(struct mesh_hconn *h, int err)
{
    hconn_die(h, err != 0 ? err : MESH_ERR_DRAINED);
}

void mesh_hconn_shutdown(struct mesh_hconn *h)
{
    if (h->dead || h->closing)
        return;
    if (!h->ready) {
        hconn_die(h, 0);
        return;
    }
    h->closing = true;
    (void)mesh_hbone_drain(h->h2);
    hconn_post_flush(h);
}

void mesh_hconn_free(struct mesh_hconn *h)
{
    if (h == NULL)
        return;
    for (struct hconn_stream *s = h->streams; s != NULL; s = s->next)
        s->live = false;
    if (!h->dead) {
        h->dead = true;
        if (h->c != NULL)
            h->ops->abort(h->c);
        h->c = NULL;
    }
    mesh_sched_cancel(h->sched, &h->flush_item);
    if (h->h2 != NULL)
        mesh_hbone_free(h->h2); /* frees the stream objects through on_stream_close */
    h->h2 = NULL;
    mesh_tls_free(h->tls);
    mesh_buf_fini(&h->wire_out);
    mesh_buf_fini(&h->plain_in);
    mesh_buf_fini(&h->plain_out);
    mesh_env_free(h->env, h);
}

bool mesh_hconn_is_ready(const struct mesh_hconn *h)
{
    return h->ready && !h->dead;
}

bool mesh_hconn_is_dead(const struct mesh_hconn *h)
{
    return h->dead;
}

bool mesh_hconn_can_open(const struct mesh_hconn *h)
{
    return !h->dead && h->ready && !h->closing && !h->goaway && h->h2 != NULL && mesh_hbone_can_open(h->h2);
}

uint32_t mesh_hconn_peer_max_streams(const struct mesh_hconn *h)
{
    return h->h2 != NULL ? mesh_hbone_peer_max_streams(h->h2) : 0;
}

uint32_t mesh_hconn_stream_count(const struct mesh_hconn *h)
{
    return h->h2 != NULL ? mesh_hbone_stream_count(h->h2) : 0;
}

const struct mesh_spiffe_id *mesh_hconn_peer_identity(const struct mesh_hconn *h)
{
    return h->tls != NULL ? mesh_tls_peer_identity(h->tls) : NULL;
}

uint64_t mesh_hconn_next_deadline(const struct mesh_hconn *h)
{
    if (h->dead)
        return MESH_TLS_NO_DEADLINE;
    uint64_t d = MESH_TLS_NO_DEADLINE;
    if (!h->connected)
        d = h->connect_deadline;
    uint64_t t = mesh_tls_next_deadline(h->tls);
    if (t < d)
        d = t;
    if (h->ready && h->h2 != NULL) {
        t = mesh_hbone_next_deadline(h->h2);
        if (t < d)
            d = t;
    }
    return d;
}

void mesh_hconn_on_deadline(struct mesh_hconn *h, uint64_t now_ns)
{
    if (h->dead)
        return;
    if (!h->connected && now_ns >= h->connect_deadline) {
        hconn_die(h, MESH_ERR_UPSTREAM_TIMEOUT);
        return;
    }
    int rc = mesh_tls_on_deadline(h->tls, now_ns);
    if (rc != MESH_OK) {
        hconn_die(h, rc);
        return;
    }
    if (h->ready) {
        rc = mesh_hbone_on_deadline(h->h2, now_ns);
        if (rc != MESH_OK) {
            hconn_flush(h);
            hconn_die(h, rc);
            return;
        }
        hconn_flush(h);
    }
}

/* ---- streams ---- */

static struct hconn_stream *hconn_stream_new(struct mesh_hconn *h, const struct mesh_conn_cb *cb, void *u)
{
    struct hconn_stream *s = mesh_env_calloc(h->env, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->h = h;
    s->cb = cb;
    s->u = u;
    s->live = true;
    s->read_on = true;
    s->next = h->streams;
    h->streams = s;
    return s;
}

int mesh_hconn_open_stream(struct mesh_hconn *h, const struct mesh_hbone_request *req, const struct mesh_conn_cb *cb,
                           void *u, struct mesh_conn **out)
{
    if (!mesh_hconn_can_open(h))
        return -EAGAIN;
    struct hconn_stream *s = hconn_stream_new(h, cb, u);
    if (s == NULL)
        return -ENOMEM;
    int rc = mesh_hbone_connect(h->h2, req, s, &s->sid);
    if (rc != MESH_OK) {
        hconn_unlink_stream(h, s);
        mesh_env_free(h->env, s);
        return rc == MESH_ERR_NOMEM ? -ENOMEM : -EAGAIN;
    }
    hconn_post_flush(h);
    *out = stream_handle(s);
    return 0;
}

int mesh_hconn_accept_stream(struct mesh_hconn *h, int32_t sid, const struct mesh_conn_cb *cb, void *u,
                             struct mesh_conn **out)
{
    if (h->dead)
        return -ECONNRESET;
    struct hconn_stream *s = hconn_stream_new(h, cb, u);
    if (s == NULL)
        return -ENOMEM;
    s->sid = sid;
    if (mesh_hbone_stream_set_user(h->h2, sid, s) != MESH_OK) {
        hconn_unlink_stream(h, s);
        mesh_env_free(h->env, s);
        return -ECONNRESET;
    }
    *out = stream_handle(s);
    return 0;
}

int mesh_hconn_respond(struct mesh_hconn *h, int32_t sid, int status)
{
    if (h->dead)
        return -ECONNRESET;
    int rc = mesh_hbone_respond(h->h2, sid, status, NULL);
    if (rc != MESH_OK)
        return rc == MESH_ERR_NOMEM ? -ENOMEM : -ECONNRESET;
    for (struct hconn_stream *s = h->streams; s != NULL; s = s->next)
        if (s->sid == sid && status == 200)
            s->connected = true;
    hconn_post_flush(h);
    return 0;
}

void mesh_hconn_stream_detach(struct mesh_conn *c)
{
    stream_of(c)->live = false;
}

int mesh_hconn_stream_status(const struct mesh_conn *c)
{
    return stream_of_const(c)->status;
}

int mesh_hconn_stream_error(const struct mesh_conn *c)
{
    return stream_of_const(c)->err;
}

static ssize_t stream_write(struct mesh_conn *c, const struct iovec *v, int n)
{
    struct hconn_stream *s = stream_of(c);
    struct mesh_hconn *h = s->h;

    if (!s->live || h->dead)
        return -ECONNRESET;
    if (!s->connected)
        return -ENOTCONN;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t acc = 0;
        int rc = mesh_hbone_write(h->h2, s->sid, v[i].iov_base, v[i].iov_len, &acc);
        if (rc != MESH_OK) {
            if (total > 0)
                break;
            return rc == MESH_ERR_NOMEM ? -ENOMEM : -EPIPE;
        }
        total += acc;
        if (acc < v[i].iov_len)
            break;
    }
    if (total > 0)
        hconn_post_flush(h);
    return (ssize_t)total;
}

static void stream_read_enable(struct mesh_conn *c, bool on)
{
    struct hconn_stream *s = stream_of(c);
    if (!s->live)
        return;
    s->read_on = on;
    if (on) {
        s->resume_pending = true;
        hconn_post_flush(s->h);
    }
}

static int stream_shutdown_wr(struct mesh_conn *c)
{
    struct hconn_stream *s = stream_of(c);
    if (!s->live || s->h->dead)
        return -ECONNRESET;
    if (mesh_hbone_shutdown_wr(s->h->h2, s->sid) != MESH_OK)
        return -EPIPE;
    hconn_post_flush(s->h);
    return 0;
}

static void stream_abort(struct mesh_conn *c)
{
    struct hconn_stream *s = stream_of(c);
    if (!s->live)
        return;
    s->live = false;
    struct mesh_hconn *h = s->h; /* s may be freed inside the reset (a stream already gone on the wire) */
    if (!h->dead && h->h2 != NULL) {
        /* the peer must learn the stream is gone: when RST_STREAM can't be queued, the whole connection goes */
        if (mesh_hbone_stream_reset(h->h2, s->sid) == MESH_ERR_NOMEM)
            h->pending_err = MESH_ERR_NOMEM;
        hconn_post_flush(h);
    }
}

static int stream_dial(void *backend, const struct mesh_addr *src, const struct mesh_addr *dst,
                       const struct mesh_conn_cb *cb, void *u, struct mesh_conn **out)
{
    (void)backend;
    (void)src;
    (void)dst;
    (void)cb;
    (void)u;
    (void)out;
    return -EOPNOTSUPP;
}

const struct mesh_conn_ops mesh_hconn_stream_ops = {
    .write = stream_write,
    .read_enable = stream_read_enable,
    .shutdown_wr = stream_shutdown_wr,
    .abort = stream_abort,
    .dial = stream_dial,
};
