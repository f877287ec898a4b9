/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP forwarders (see forwarder.h). A session lives from the client's accept to the relay's completion:
 *   accept: read paused on the client, dial the target  ->  target connected: hand both to a relay
 *   -> relay done (both directions closed, or a reset): the session block returns to the free list.
 * If the target fails first, the client is reset. Counters are written by the owning lcore only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_malloc.h>

#include "appliance/forwarder.h"
#include "dpdk/conn_dpdk.h"
#include "dpdk/dp.h"
#include "dpdk/tcp.h"
#include "mesh/relay.h"

struct fwd_session {
    struct app_forwarder *f;
    const struct app_forwarder_config *cfg;
    struct mesh_conn *client;
    struct mesh_conn *upstream;
    struct mesh_relay relay;
    struct fwd_session *next_free;
};

struct fwd_listener {
    struct app_forwarder *f;
    const struct app_forwarder_config *cfg;
    struct dp_tcp_listener *l;
};

struct app_forwarder {
    struct dp_lcore *lc;
    int n_listeners;
    struct fwd_listener listeners[APP_CONFIG_MAX_FORWARDERS];
    struct fwd_session *sessions;
    struct fwd_session *free_list;
    struct app_forwarder_stats stats;
};

static void fwd_stat_add(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static void fwd_session_put(struct fwd_session *s)
{
    struct app_forwarder *f = s->f;
    s->client = s->upstream = NULL;
    s->next_free = f->free_list;
    f->free_list = s;
    fwd_stat_add(&f->stats.active, (uint64_t)-1);
}

static void fwd_on_relay_done(void *u, struct mesh_relay *r, int err)
{
    struct fwd_session *s = u;
    struct app_forwarder *f = s->f;

    fwd_stat_add(&f->stats.bytes_to_target, mesh_relay_bytes(r, MESH_RELAY_A));
    fwd_stat_add(&f->stats.bytes_to_client, mesh_relay_bytes(r, MESH_RELAY_B));
    fwd_stat_add(err == 0 ? &f->stats.completed : &f->stats.reset, 1);
    fwd_session_put(s);
}

/* ---- before the relay: the client waits (reading paused) while the target is dialled ---- */

static size_t fwd_client_on_data(void *u, const uint8_t *p, size_t n)
{
    (void)u;
    (void)p;
    (void)n;
    return 0; /* not reached while reading is paused; keep the bytes if it were */
}

static void fwd_noop(void *u)
{
    (void)u;
}

static void fwd_client_on_closed(void *u, int err)
{
    struct fwd_session *s = u;
    (void)err;
    /* the client reset before the target answered */
    s->client = NULL;
    if (s->upstream != NULL)
        dp_tcp_abort(s->upstream);
    fwd_stat_add(&s->f->stats.reset, 1);
    fwd_session_put(s);
}

static const struct mesh_conn_cb fwd_client_wait_cb = {
    .on_data = fwd_client_on_data,
    .on_writable = fwd_noop,
    .on_peer_fin = fwd_noop,
    .on_closed = fwd_client_on_closed,
};

static void fwd_upstream_on_writable(void *u)
{
    struct fwd_session *s = u;
    const struct app_forwarder_config *cfg = s->cfg;

    /* connected: from now on both connections belong to the relay */
    dp_tcp_set_callbacks(s->client, &mesh_relay_conn_cb, &s->relay.side[MESH_RELAY_A]);
    dp_tcp_set_callbacks(s->upstream, &mesh_relay_conn_cb, &s->relay.side[MESH_RELAY_B]);
    if (cfg->keepalive_s) {
        dp_tcp_set_keepalive(s->upstream, cfg->keepalive_s * 1000, cfg->keepalive_intvl_s * 1000,
                             cfg->keepalive_probes);
    }
    mesh_relay_init(&s->relay, &dp_conn_ops, s->client, &dp_conn_ops, s->upstream, fwd_on_relay_done, s);
}

static void fwd_upstream_on_closed(void *u, int err)
{
    struct fwd_session *s = u;
    (void)err;
    /* the target refused or timed out before the relay started */
    s->upstream = NULL;
    fwd_stat_add(&s->f->stats.upstream_failed, 1);
    if (s->client != NULL)
        dp_tcp_abort(s->client);
    fwd_session_put(s);
}

static const struct mesh_conn_cb fwd_upstream_dial_cb = {
    .on_data = fwd_client_on_data,
    .on_writable = fwd_upstream_on_writable,
    .on_peer_fin = fwd_noop,
    .on_closed = fwd_upstream_on_closed,
};

static bool fwd_on_accept(void *ctx, struct mesh_conn *c)
{
    struct fwd_listener *fl = ctx;
    struct app_forwarder *f = fl->f;
    struct fwd_session *s = f->free_list;
    int rc;

    if (s == NULL) {
        fwd_stat_add(&f->stats.refused, 1);
        return false;
    }
    f->free_list = s->next_free;
    memset(s, 0, sizeof(*s));
    s->f = f;
    s->cfg = fl->cfg;
    s->client = c;
    fwd_stat_add(&f->stats.active, 1);
    dp_tcp_set_callbacks(c, &fwd_client_wait_cb, s);
    dp_tcp_read_enable(c, false);
    rc = dp_tcp_connect(f->lc, 0, fl->cfg->target_ip, fl->cfg->target_port, &fwd_upstream_dial_cb, s, &s->upstream);
    if (rc < 0) {
        s->client = NULL;
        fwd_session_put(s);
        fwd_stat_add(&f->stats.refused, 1);
        return false; /* the stack resets the client */
    }
    fwd_stat_add(&f->stats.accepted, 1);
    return true;
}

struct app_forwarder *app_forwarder_new(struct dp_lcore *lc, const struct app_config *cfg, uint32_t max_sessions,
                                        int *err)
{
    struct app_forwarder *f = rte_zmalloc("zw_fwd", sizeof(*f), 0);

    if (f == NULL || max_sessions == 0) {
        rte_free(f);
        *err = -ENOMEM;
        return NULL;
    }
    f->lc = lc;
    f->sessions = rte_zmalloc("zw_fwd_sessions", sizeof(*f->sessions) * max_sessions, 0);
    if (f->sessions == NULL) {
        rte_free(f);
        *err = -ENOMEM;
        return NULL;
    }
    for (uint32_t i = max_sessions; i-- > 0;) {
        f->sessions[i].f = f;
        f->sessions[i].next_free = f->free_list;
        f->free_list = &f->sessions[i];
    }
    for (int i = 0; i < cfg->n_forwarders; i++) {
        const struct app_forwarder_config *fc = &cfg->forwarders[i];
        struct dp_tcp_listen_opts opts = {
            .keepalive_idle_ms = fc->keepalive_s * 1000,
            .keepalive_intvl_ms = fc->keepalive_intvl_s * 1000,
            .keepalive_probes = fc->keepalive_probes,
        };
        struct fwd_listener *fl = &f->listeners[f->n_listeners];
        fl->f = f;
        fl->cfg = fc;
        fl->l = dp_tcp_listen(lc, fc->listen_ip, fc->listen_port, &opts, fwd_on_accept, fl, err);
        if (fl->l == NULL) {
            app_forwarder_free(f);
            return NULL;
        }
        f->n_listeners++;
    }
    return f;
}

void app_forwarder_free(struct app_forwarder *f)
{
    if (f == NULL)
        return;
    for (int i = 0; i < f->n_listeners; i++)
        dp_tcp_unlisten(f->lc, f->listeners[i].l);
    rte_free(f->sessions);
    rte_free(f);
}

void app_forwarder_stats(const struct app_forwarder *f, struct app_forwarder_stats *out)
{
    const uint64_t *in = (const uint64_t *)&f->stats;
    uint64_t *o = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        o[i] = __atomic_load_n(&in[i], __ATOMIC_RELAXED);
}
