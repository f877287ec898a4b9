/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/relay.c - two-way byte relay (see relay.h for the invariants). */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "mesh/relay.h"

static struct mesh_relay_side *relay_other(struct mesh_relay_side *s)
{
    struct mesh_relay *r = s->r;
    return s == &r->side[0] ? &r->side[1] : &r->side[0];
}

static void relay_set_read(struct mesh_relay_side *s, bool on)
{
    if (s->c == NULL || s->read_on == on)
        return;
    s->read_on = on;
    s->ops->read_enable(s->c, on);
}

static void relay_check_done(struct mesh_relay *r)
{
    if (r->finished || r->side[0].c != NULL || r->side[1].c != NULL)
        return;
    r->finished = true;
    r->in_done = true;
    if (r->done != NULL)
        r->done(r->u, r, r->err);
}

static void relay_fail(struct mesh_relay *r, int err)
{
    if (r->err == 0)
        r->err = err != 0 ? err : -ECONNRESET;
    for (int i = 0; i < 2; i++) {
        struct mesh_relay_side *s = &r->side[i];
        if (s->c != NULL) {
            struct mesh_conn *c = s->c;
            s->c = NULL;
            s->ops->abort(c);
        }
    }
    relay_check_done(r);
}

/* Forward s's FIN to the other side once every byte before it has been written there. */
static void relay_forward_fin(struct mesh_relay_side *s)
{
    struct mesh_relay_side *o = relay_other(s);

    if (!s->fin_rcvd || s->fin_fwd || s->held)
        return;
    s->fin_fwd = true;
    if (o->c == NULL)
        return;
    int rc = o->ops->shutdown_wr(o->c);
    if (rc < 0)
        relay_fail(s->r, rc);
}

void mesh_relay_init(struct mesh_relay *r, const struct mesh_conn_ops *ops_a, struct mesh_conn *a,
                     const struct mesh_conn_ops *ops_b, struct mesh_conn *b, mesh_relay_done_fn done, void *u)
{
    memset(r, 0, sizeof(*r));
    r->side[0].r = r;
    r->side[0].ops = ops_a;
    r->side[0].c = a;
    r->side[1].r = r;
    r->side[1].ops = ops_b;
    r->side[1].c = b;
    r->done = done;
    r->u = u;
    for (int i = 0; i < 2; i++) {
        r->side[i].read_on = true;
        r->side[i].ops->read_enable(r->side[i].c, true);
    }
}

size_t mesh_relay_on_data(struct mesh_relay *r, enum mesh_relay_side_id sid, const uint8_t *p, size_t n)
{
    struct mesh_relay_side *s = &r->side[sid];
    struct mesh_relay_side *o = relay_other(s);

    if (r->finished || s->c == NULL)
        return n;
    if (o->c == NULL || s->fin_fwd) {
        /* nowhere to go: the other side is gone */
        relay_fail(r, -EPIPE);
        return n;
    }
    if (o->blocked) {
        s->held = true;
        relay_set_read(s, false);
        return 0;
    }
    struct iovec v = {.iov_base = (void *)(uintptr_t)p, .iov_len = n};
    ssize_t w = o->ops->write(o->c, &v, 1);
    if (w < 0) {
        relay_fail(r, (int)w);
        return n;
    }
    s->bytes += (uint64_t)w;
    if ((size_t)w < n) {
        s->held = true;
        o->blocked = true;
        relay_set_read(s, false);
    } else {
        s->held = false;
        if (s->fin_rcvd)
            relay_forward_fin(s);
    }
    return (size_t)w;
}

void mesh_relay_on_writable(struct mesh_relay *r, enum mesh_relay_side_id sid)
{
    struct mesh_relay_side *s = &r->side[sid];
    struct mesh_relay_side *o = relay_other(s);

    if (r->finished || s->c == NULL)
        return;
    s->blocked = false;
    if (o->c != NULL && !o->fin_fwd) {
        o->read_on = false; /* force the downcall: read_enable(true) also asks for a re-offer of held bytes */
        relay_set_read(o, true);
    }
}

void mesh_relay_on_peer_fin(struct mesh_relay *r, enum mesh_relay_side_id sid)
{
    struct mesh_relay_side *s = &r->side[sid];

    if (r->finished || s->c == NULL)
        return;
    s->fin_rcvd = true;
    relay_forward_fin(s);
}

void mesh_relay_on_closed(struct mesh_relay *r, enum mesh_relay_side_id sid, int err)
{
    struct mesh_relay_side *s = &r->side[sid];

    if (r->finished || s->c == NULL)
        return;
    s->c = NULL; /* dead on return */
    if (err != 0) {
        relay_fail(r, err);
        return;
    }
    /* orderly: s will neither send nor take more bytes */
    struct mesh_relay_side *o = relay_other(s);
    if (!s->fin_rcvd) {
        s->fin_rcvd = true;
        relay_forward_fin(s);
    }
    if (o->c != NULL && o->held) {
        /* the other side has bytes for s waiting that can no longer be delivered */
        relay_fail(r, -EPIPE);
        return;
    }
    /* otherwise o stays open until it ends too; bytes it sends from now on abort it (mesh_relay_on_data) */
    relay_check_done(r);
}

void mesh_relay_abort(struct mesh_relay *r, int err)
{
    if (r->finished)
        return;
    relay_fail(r, err != 0 ? err : -ECONNABORTED);
}

/* ---- mesh_conn_cb adapters (u = &r->side[i]) ---- */

static enum mesh_relay_side_id relay_side_id(const struct mesh_relay_side *s)
{
    return s == &s->r->side[0] ? MESH_RELAY_A : MESH_RELAY_B;
}

static size_t relay_cb_on_data(void *u, const uint8_t *p, size_t n)
{
    struct mesh_relay_side *s = u;
    return mesh_relay_on_data(s->r, relay_side_id(s), p, n);
}

static void relay_cb_on_writable(void *u)
{
    struct mesh_relay_side *s = u;
    mesh_relay_on_writable(s->r, relay_side_id(s));
}

static void relay_cb_on_peer_fin(void *u)
{
    struct mesh_relay_side *s = u;
    mesh_relay_on_peer_fin(s->r, relay_side_id(s));
}

static void relay_cb_on_closed(void *u, int err)
{
    struct mesh_relay_side *s = u;
    mesh_relay_on_closed(s->r, relay_side_id(s), err);
}

const struct mesh_conn_cb mesh_relay_conn_cb = {
    .on_data = relay_cb_on_data,
    .on_writable = relay_cb_on_writable,
    .on_peer_fin = relay_cb_on_peer_fin,
    .on_closed = relay_cb_on_closed,
};
