/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/proxy.c - the proxy object, connection lifecycle, telemetry and the TLS ctx cache (see proxy.h and
 * proxy_impl.h for the invariants). The outbound and inbound decisions live in outbound.c and inbound.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mesh/proxy_impl.h"

/* ====================================================================================================== */
/* small helpers                                                                                          */
/* ====================================================================================================== */

const char *mesh_proxy_direction_str(enum mesh_proxy_direction d)
{
    return d == MESH_PROXY_OUTBOUND ? "outbound" : "inbound";
}

const char *mesh_mtls_mode_str(enum mesh_mtls_mode m)
{
    return m == MESH_MTLS_STRICT ? "STRICT" : "PERMISSIVE";
}

bool proxy_is_illegal_port(const struct mesh_proxy *p, uint16_t port)
{
    return port == MESH_PROXY_OUTBOUND_PORT || port == MESH_PROXY_INBOUND_PLAIN_PORT ||
           port == MESH_PROXY_HBONE_PORT || port == p->cfg.hbone_port;
}

bool proxy_workload_is_local(const struct mesh_proxy *p, const struct mesh_workload *w)
{
    return w != NULL && (p->node_name[0] == '\0' || strcmp(w->node, p->node_name) == 0);
}

/* The vocabulary word for err. -errno values are classified here; mid-relay resets count as "internal" only when
 * nothing else explains them. */
static enum mesh_reason proxy_reason(int err)
{
    if (err == 0)
        return MESH_REASON_NONE;
    if (err > 0)
        return mesh_err_reason(err);
    switch (err) {
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -EPIPE:
        return MESH_REASON_REFUSED;
    case -ETIMEDOUT:
        return MESH_REASON_TIMEOUT;
    case -ENETUNREACH:
    case -EHOSTUNREACH:
    case -EADDRNOTAVAIL:
        return MESH_REASON_UNROUTABLE;
    default:
        return MESH_REASON_INTERNAL;
    }
}

static const char *proxy_response_flags(enum mesh_reason r)
{
    switch (r) {
    case MESH_REASON_DENIED:
        return "DENY";
    case MESH_REASON_TLS:
        return "TLS_FAILURE";
    case MESH_REASON_H2:
        return "H2_HANDSHAKE_FAILURE";
    case MESH_REASON_REFUSED:
    case MESH_REASON_TIMEOUT:
    case MESH_REASON_UNROUTABLE:
        return "CONNECT";
    default:
        return "-";
    }
}

/* ====================================================================================================== */
/* TLS ctx cache                                                                                          */
/* ====================================================================================================== */

static void proxy_ctx_destroy(struct mesh_proxy *p, struct proxy_ctx_entry *e)
{
    for (struct proxy_ctx_entry **pp = &p->ctxs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    mesh_tls_ctx_free(e->client);
    mesh_tls_ctx_free(e->server);
    mesh_identity_bundle_unref(e->bundle);
    mesh_env_free(p->env, e);
}

struct proxy_ctx_entry *proxy_ctx_get(struct mesh_proxy *p, const struct mesh_spiffe_id *id)
{
    const struct mesh_cert_bundle *b = p->cfg.get_bundle(p->cfg.get_bundle_u, id);
    if (b == NULL)
        return NULL;
    for (struct proxy_ctx_entry *e = p->ctxs; e != NULL; e = e->next) {
        if (e->stale || !mesh_spiffe_eq(&e->id, id))
            continue;
        if (e->bundle == b) {
            mesh_identity_bundle_unref(b);
            e->users++;
            return e;
        }
        /* rotated: new sessions use the new bundle, the old ctx lives until its sessions end */
        e->stale = true;
        if (e->users == 0)
            proxy_ctx_destroy(p, e);
        break;
    }
    int err = 0;
    struct proxy_ctx_entry *e = mesh_env_calloc(p->env, sizeof(*e));
    if (e == NULL) {
        mesh_identity_bundle_unref(b);
        return NULL;
    }
    e->id = *id;
    e->bundle = b;
    const struct mesh_tls_ctx_opts *o = p->has_tls_opts ? &p->tls_opts : NULL;
    e->client = mesh_tls_ctx_new(MESH_TLS_CLIENT, b, p->env, o, &err);
    e->server = mesh_tls_ctx_new(MESH_TLS_SERVER, b, p->env, o, &err);
    e->next = p->ctxs;
    p->ctxs = e;
    if (e->client == NULL || e->server == NULL) {
        MESH_LOG(p->env, MESH_LOG_WARNING, PROXY_MODULE, "TLS context for %s/%s failed: %s", id->ns, id->sa,
                 mesh_err_str(err));
        proxy_ctx_destroy(p, e);
        return NULL;
    }
    e->users = 1;
    return e;
}

void proxy_ctx_put(struct mesh_proxy *p, struct proxy_ctx_entry *e)
{
    if (e == NULL)
        return;
    if (e->users > 0)
        e->users--;
    if (e->stale && e->users == 0)
        proxy_ctx_destroy(p, e);
}

struct mesh_tls_ctx *proxy_pool_get_ctx(void *u, const struct mesh_spiffe_id *id)
{
    struct proxy_ctx_entry *e = proxy_ctx_get(u, id);
    return e != NULL ? e->client : NULL;
}

void proxy_pool_put_ctx(void *u, struct mesh_tls_ctx *ctx)
{
    struct mesh_proxy *p = u;
    for (struct proxy_ctx_entry *e = p->ctxs; e != NULL; e = e->next) {
        if (e->client == ctx) {
            proxy_ctx_put(p, e);
            return;
        }
    }
}

/* ====================================================================================================== */
/* telemetry                                                                                              */
/* ====================================================================================================== */

struct proxy_labels {
    const char *v[MESH_METRICS_LABEL_COUNT];
    char src_principal[MESH_SPIFFE_URI_MAX_BYTES];
    char dst_principal[MESH_SPIFFE_URI_MAX_BYTES];
};

static const char *proxy_wl_name(const struct mesh_workload *w)
{
    if (w == NULL)
        return "";
    return w->workload_name[0] != '\0' ? w->workload_name : w->name;
}

static void proxy_make_labels(const struct proxy_conn *pc, const char *flags, struct proxy_labels *l)
{
    const struct mesh_workload *s = pc->src_w, *d = pc->dst_w;

    memset(l, 0, sizeof(*l));
    if (pc->has_src_id)
        (void)mesh_spiffe_format(&pc->src_id, l->src_principal, sizeof(l->src_principal));
    if (pc->has_dst_id)
        (void)mesh_spiffe_format(&pc->dst_id, l->dst_principal, sizeof(l->dst_principal));
    l->v[MESH_METRICS_L_REPORTER] = pc->dir == MESH_PROXY_OUTBOUND ? "source" : "destination";
    l->v[MESH_METRICS_L_SOURCE_WORKLOAD] = proxy_wl_name(s);
    l->v[MESH_METRICS_L_SOURCE_CANONICAL_SERVICE] = s != NULL ? s->canonical_name : NULL;
    l->v[MESH_METRICS_L_SOURCE_CANONICAL_REVISION] = s != NULL ? s->canonical_revision : NULL;
    l->v[MESH_METRICS_L_SOURCE_WORKLOAD_NAMESPACE] = s != NULL ? s->namespace : NULL;
    l->v[MESH_METRICS_L_SOURCE_PRINCIPAL] = l->src_principal;
    l->v[MESH_METRICS_L_SOURCE_APP] = s != NULL ? s->canonical_name : NULL;
    l->v[MESH_METRICS_L_SOURCE_VERSION] = s != NULL ? s->canonical_revision : NULL;
    l->v[MESH_METRICS_L_SOURCE_CLUSTER] = s != NULL ? s->cluster_id : NULL;
    l->v[MESH_METRICS_L_DESTINATION_SERVICE] = pc->svc != NULL ? pc->svc->hostname : NULL;
    l->v[MESH_METRICS_L_DESTINATION_SERVICE_NAMESPACE] = pc->svc != NULL ? pc->svc->namespace : NULL;
    l->v[MESH_METRICS_L_DESTINATION_SERVICE_NAME] = pc->svc != NULL ? pc->svc->name : NULL;
    l->v[MESH_METRICS_L_DESTINATION_WORKLOAD] = proxy_wl_name(d);
    l->v[MESH_METRICS_L_DESTINATION_CANONICAL_SERVICE] = d != NULL ? d->canonical_name : NULL;
    l->v[MESH_METRICS_L_DESTINATION_CANONICAL_REVISION] = d != NULL ? d->canonical_revision : NULL;
    l->v[MESH_METRICS_L_DESTINATION_WORKLOAD_NAMESPACE] = d != NULL ? d->namespace : NULL;
    l->v[MESH_METRICS_L_DESTINATION_PRINCIPAL] = l->dst_principal;
    l->v[MESH_METRICS_L_DESTINATION_APP] = d != NULL ? d->canonical_name : NULL;
    l->v[MESH_METRICS_L_DESTINATION_VERSION] = d != NULL ? d->canonical_revision : NULL;
    l->v[MESH_METRICS_L_DESTINATION_CLUSTER] = d != NULL ? d->cluster_id : NULL;
    l->v[MESH_METRICS_L_REQUEST_PROTOCOL] = "tcp";
    l->v[MESH_METRICS_L_RESPONSE_FLAGS] = flags;
    l->v[MESH_METRICS_L_CONNECTION_SECURITY_POLICY] = pc->has_hbone ? "mutual_tls" : "unknown";
}

void proxy_conn_record_open(struct proxy_conn *pc)
{
    if (pc->opened_recorded)
        return;
    pc->opened_recorded = true;
    if (pc->p->cfg.metrics == NULL)
        return;
    struct proxy_labels l;
    proxy_make_labels(pc, "-", &l);
    struct mesh_metrics_series *s = mesh_metrics_series_get(pc->p->cfg.metrics, l.v);
    if (s != NULL)
        s->opened++;
}

static void proxy_record_close(struct proxy_conn *pc, uint64_t recv, uint64_t sent)
{
    struct mesh_proxy *p = pc->p;
    enum mesh_reason reason = proxy_reason(pc->err);
    const char *flags = proxy_response_flags(reason);
    struct proxy_labels l;

    proxy_conn_record_open(pc);
    proxy_make_labels(pc, flags, &l);
    if (p->cfg.metrics != NULL) {
        struct mesh_metrics_series *s = mesh_metrics_series_get(p->cfg.metrics, l.v);
        if (s != NULL) {
            s->closed++;
            if (reason != MESH_REASON_NONE)
                s->failed++;
            s->received_bytes += recv;
            s->sent_bytes += sent;
        }
    }
    if (p->cfg.access_log != NULL) {
        struct mesh_proxy_access_record r;
        memset(&r, 0, sizeof(r));
        r.direction = pc->dir;
        r.direction_str = mesh_proxy_direction_str(pc->dir);
        r.src = pc->src;
        r.dst = pc->dir == MESH_PROXY_OUTBOUND ? pc->dst : pc->target;
        r.has_hbone_addr = pc->has_hbone;
        r.hbone_addr = pc->hbone_addr;
        r.src_workload = pc->src_w != NULL ? pc->src_w->name : "";
        r.src_namespace = pc->src_w != NULL ? pc->src_w->namespace : "";
        r.src_identity = l.src_principal;
        r.dst_service = pc->svc != NULL ? pc->svc->hostname : "";
        r.dst_workload = pc->dst_w != NULL ? pc->dst_w->name : "";
        r.dst_namespace = pc->dst_w != NULL ? pc->dst_w->namespace : "";
        r.dst_identity = l.dst_principal;
        r.bytes_recv = recv;
        r.bytes_sent = sent;
        r.start_ns = pc->start_ns;
        uint64_t now = mesh_env_now(p->env);
        r.duration_ns = now > pc->start_ns ? now - pc->start_ns : 0;
        r.err = pc->err;
        r.reason = reason;
        r.reason_str = mesh_reason_str(reason);
        r.response_flags = flags;
        r.hbone_status = pc->status;
        p->cfg.access_log(p->cfg.access_log_u, &r);
    }
    if (MESH_LOG_INFO <= p->env->log_level && p->env->log != NULL) {
        char s[64], d[64];
        mesh_addr_format(&pc->src, true, s, sizeof(s));
        mesh_addr_format(&pc->dst, true, d, sizeof(d));
        MESH_LOG(p->env, reason == MESH_REASON_NONE ? MESH_LOG_INFO : MESH_LOG_WARNING, PROXY_MODULE,
                 "connection %s src.addr=%s dst.addr=%s direction=%s bytes_sent=%llu bytes_recv=%llu error=%s",
                 reason == MESH_REASON_NONE ? "complete" : "failed", s, d, mesh_proxy_direction_str(pc->dir),
                 (unsigned long long)sent, (unsigned long long)recv, mesh_reason_str(reason));
    }
}

/* ====================================================================================================== */
/* connection lifecycle                                                                                   */
/* ====================================================================================================== */

static void proxy_conn_on_free_item(struct mesh_sched_item *it)
{
    struct proxy_conn *pc = (struct proxy_conn *)(void *)((char *)it - offsetof(struct proxy_conn, free_item));
    struct mesh_proxy *p = pc->p;
    mesh_workloads_unref(pc->ws);
    mesh_env_free(p->env, pc);
}

struct proxy_conn *proxy_conn_new(struct mesh_proxy *p, enum mesh_proxy_direction dir, struct mesh_conn *down,
                                  const struct mesh_conn_ops *down_ops, const struct mesh_addr *src,
                                  const struct mesh_addr *dst)
{
    struct proxy_conn *pc = mesh_env_calloc(p->env, sizeof(*pc));
    if (pc == NULL)
        return NULL;
    pc->p = p;
    pc->dir = dir;
    pc->state = PROXY_CONN_RESOLVING;
    pc->ws = p->ws != NULL ? mesh_workloads_ref(p->ws) : NULL;
    pc->side[0] = (struct proxy_side){pc, 0};
    pc->side[1] = (struct proxy_side){pc, 1};
    pc->down = down;
    pc->down_ops = down_ops;
    pc->src = *src;
    pc->dst = *dst;
    pc->target = *dst;
    pc->start_ns = mesh_env_now(p->env);
    pc->deadline_ns = MESH_PROXY_NO_DEADLINE;
    pc->recheck_gen = p->gen; /* resolved with the current state */
    mesh_sched_item_init(&pc->free_item, proxy_conn_on_free_item);
    pc->next = p->conns;
    p->conns = pc;
    p->stats.opened++;
    p->stats.active++;
    return pc;
}

size_t mesh_proxy_list(const struct mesh_proxy *p, struct mesh_proxy_conn_view *out, size_t max)
{
    static const char *const states[] = {"resolving", "connecting", "relaying", "done"};
    size_t n = 0;

    for (const struct proxy_conn *pc = p->conns; pc != NULL && n < max; pc = pc->next) {
        struct mesh_proxy_conn_view *v = &out[n];
        if (pc->state == PROXY_CONN_DONE)
            continue;
        memset(v, 0, sizeof(*v));
        v->dir = pc->dir;
        v->state = states[pc->state];
        v->src = pc->src;
        v->dst = pc->dir == MESH_PROXY_OUTBOUND ? pc->dst : pc->target;
        if (pc->has_src_id)
            mesh_spiffe_format(&pc->src_id, v->src_identity, sizeof(v->src_identity));
        if (pc->has_dst_id)
            mesh_spiffe_format(&pc->dst_id, v->dst_identity, sizeof(v->dst_identity));
        if (pc->state == PROXY_CONN_RELAYING) {
            v->bytes_recv = mesh_relay_bytes(&pc->relay, MESH_RELAY_A);
            v->bytes_sent = mesh_relay_bytes(&pc->relay, MESH_RELAY_B);
        }
        v->start_ns = pc->start_ns;
        n++;
    }
    return n;
}

static void proxy_conn_unlink(struct proxy_conn *pc)
{
    if (pc->p->recheck_next == pc)
        pc->p->recheck_next = pc->next;
    for (struct proxy_conn **pp = &pc->p->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == pc) {
            *pp = pc->next;
            return;
        }
    }
}

void proxy_conn_teardown(struct proxy_conn *pc, int err)
{
    struct mesh_proxy *p = pc->p;

    if (pc->state == PROXY_CONN_DONE)
        return;
    bool relaying = pc->state == PROXY_CONN_RELAYING;
    pc->state = PROXY_CONN_DONE;
    if (pc->lookup_waiting) {
        pc->lookup_waiting = false;
        p->n_parked--;
    }
    if (pc->err == 0)
        pc->err = err;
    if (pc->waiting) {
        mesh_pool_cancel(p->pool, &pc->waiter);
        pc->waiting = false;
    }
    uint64_t recv = 0, sent = 0;
    if (relaying) {
        if (!pc->relay.finished) {
            pc->relay.done = NULL;
            mesh_relay_abort(&pc->relay, err != 0 ? err : -ECONNABORTED);
        }
        recv = mesh_relay_bytes(&pc->relay, MESH_RELAY_A);
        sent = mesh_relay_bytes(&pc->relay, MESH_RELAY_B);
    } else {
        if (pc->down != NULL)
            pc->down_ops->abort(pc->down);
        if (pc->up != NULL)
            pc->up_ops->abort(pc->up);
    }
    pc->down = NULL;
    pc->up = NULL;
    if (pc->poolc != NULL) {
        mesh_pool_release(p->pool, pc->poolc);
        pc->poolc = NULL;
    }
    proxy_record_close(pc, recv, sent);
    p->stats.active--;
    p->stats.closed++;
    if (proxy_reason(pc->err) != MESH_REASON_NONE)
        p->stats.failed++;
    proxy_conn_unlink(pc);
    mesh_sched_post(&p->sched, &pc->free_item);
}

static void proxy_on_relay_done(void *u, struct mesh_relay *r, int err)
{
    struct proxy_conn *pc = u;
    (void)r;
    pc->down = NULL;
    pc->up = NULL;
    proxy_conn_teardown(pc, err);
}

void proxy_conn_start_relay(struct proxy_conn *pc)
{
    pc->state = PROXY_CONN_RELAYING;
    pc->deadline_ns = MESH_PROXY_NO_DEADLINE;
    proxy_conn_record_open(pc);
    mesh_relay_init(&pc->relay, pc->down_ops, pc->down, pc->up_ops, pc->up, proxy_on_relay_done, pc);
    for (int i = 0; i < 2 && pc->state == PROXY_CONN_RELAYING; i++)
        if (pc->fin_early[i])
            mesh_relay_on_peer_fin(&pc->relay, (enum mesh_relay_side_id)i);
}

/* ---- upcalls of down and up, before and during the relay ---- */

static size_t proxy_side_on_data(void *u, const uint8_t *d, size_t n)
{
    struct proxy_side *s = u;
    struct proxy_conn *pc = s->pc;
    struct mesh_proxy *p = pc->p;
    size_t used = 0;

    mesh_sched_enter(&p->sched);
    if (pc->state == PROXY_CONN_RELAYING) {
        used = mesh_relay_on_data(&pc->relay, (enum mesh_relay_side_id)s->which, d, n);
    } else if (pc->state == PROXY_CONN_DONE) {
        used = n;
    } else {
        /* not relaying yet: keep the bytes in the backend */
        struct mesh_conn *c = s->which == 0 ? pc->down : pc->up;
        const struct mesh_conn_ops *ops = s->which == 0 ? pc->down_ops : pc->up_ops;
        if (c != NULL)
            ops->read_enable(c, false);
    }
    mesh_sched_leave(&p->sched);
    return used;
}

static void proxy_side_on_writable(void *u)
{
    struct proxy_side *s = u;
    struct proxy_conn *pc = s->pc;
    struct mesh_proxy *p = pc->p;

    mesh_sched_enter(&p->sched);
    if (pc->state == PROXY_CONN_RELAYING) {
        mesh_relay_on_writable(&pc->relay, (enum mesh_relay_side_id)s->which);
    } else if (pc->state == PROXY_CONN_CONNECTING && s->which == 1) {
        if (pc->dir == MESH_PROXY_OUTBOUND)
            proxy_outbound_on_up_writable(pc);
        else
            proxy_inbound_on_up_writable(pc);
    }
    mesh_sched_leave(&p->sched);
}

static void proxy_side_on_peer_fin(void *u)
{
    struct proxy_side *s = u;
    struct proxy_conn *pc = s->pc;
    struct mesh_proxy *p = pc->p;

    mesh_sched_enter(&p->sched);
    if (pc->state == PROXY_CONN_RELAYING)
        mesh_relay_on_peer_fin(&pc->relay, (enum mesh_relay_side_id)s->which);
    else if (pc->state != PROXY_CONN_DONE)
        pc->fin_early[s->which] = true;
    mesh_sched_leave(&p->sched);
}

static void proxy_side_on_closed(void *u, int err)
{
    struct proxy_side *s = u;
    struct proxy_conn *pc = s->pc;
    struct mesh_proxy *p = pc->p;

    mesh_sched_enter(&p->sched);
    if (pc->state == PROXY_CONN_RELAYING) {
        mesh_relay_on_closed(&pc->relay, (enum mesh_relay_side_id)s->which, err);
    } else if (pc->state != PROXY_CONN_DONE) {
        if (s->which == 0) {
            pc->down = NULL;
            proxy_conn_teardown(pc, err != 0 ? err : -ECONNABORTED);
        } else {
            if (pc->dir == MESH_PROXY_OUTBOUND)
                proxy_outbound_on_up_closed(pc, err);
            else
                proxy_inbound_on_up_closed(pc, err);
        }
    }
    mesh_sched_leave(&p->sched);
}

const struct mesh_conn_cb proxy_side_cb = {
    .on_data = proxy_side_on_data,
    .on_writable = proxy_side_on_writable,
    .on_peer_fin = proxy_side_on_peer_fin,
    .on_closed = proxy_side_on_closed,
};

enum mesh_proxy_verdict proxy_call_authz_as(struct mesh_proxy *p, const struct proxy_conn *pc,
                                            const struct mesh_workload *src_w, const struct mesh_workload *dst_w)
{
    if (pc->dir == MESH_PROXY_INBOUND_PLAIN && p->cfg.mtls_mode == MESH_MTLS_STRICT)
        return MESH_PROXY_DENY;
    if (p->cfg.authz == NULL)
        return MESH_PROXY_ALLOW;
    struct mesh_proxy_conn_info info;
    memset(&info, 0, sizeof(info));
    info.direction = pc->dir;
    info.src_identity = pc->has_src_id ? &pc->src_id : NULL;
    info.src = pc->src;
    info.dst = pc->target;
    info.src_workload = src_w;
    info.dst_workload = dst_w;
    info.mtls_mode = p->cfg.mtls_mode;
    return p->cfg.authz(p->cfg.authz_u, &info) == MESH_PROXY_ALLOW ? MESH_PROXY_ALLOW : MESH_PROXY_DENY;
}

enum mesh_proxy_verdict proxy_call_authz(struct mesh_proxy *p, struct proxy_conn *pc)
{
    return proxy_call_authz_as(p, pc, pc->src_w, pc->dst_w);
}

/* ====================================================================================================== */
/* live updates: lazy re-check of live connections                                                        */
/* ====================================================================================================== */

/* Visit up to p->recheck_slice connections from the cursor. Each visit is O(1) lookups plus at most one authz call;
 * closing one tears it down through the normal path (one access-log record). */
static void proxy_recheck_slice(struct mesh_proxy *p)
{
    uint32_t budget = p->recheck_slice;

    if (p->recheck_next == NULL)
        return;
    while (budget > 0 && p->recheck_next != NULL) {
        struct proxy_conn *pc = p->recheck_next;
        p->recheck_next = pc->next;
        budget--;
        if (pc->recheck_gen == p->gen || pc->state == PROXY_CONN_DONE)
            continue;
        pc->recheck_gen = p->gen;
        p->stats.rechecked++;
        p->pass_checked++;
        bool keep = pc->dir == MESH_PROXY_OUTBOUND ? proxy_outbound_recheck(pc) : proxy_inbound_recheck(pc);
        if (!keep) {
            p->stats.recheck_closed++;
            p->pass_closed++;
        }
    }
    if (p->recheck_next == NULL)
        MESH_LOG(p->env, MESH_LOG_INFO, PROXY_MODULE, "update %llu: %llu live connections re-checked, %llu closed",
                 (unsigned long long)p->gen, (unsigned long long)p->pass_checked,
                 (unsigned long long)p->pass_closed);
}

/* Ask the certificate hook again for every cached identity; a different bundle retires the cached contexts and drains
 * the pooled connections built on them. Bounded by the number of local identities plus pooled connections. */
static void proxy_recheck_certs(struct mesh_proxy *p)
{
    for (struct proxy_ctx_entry *e = p->ctxs, *next; e != NULL; e = next) {
        next = e->next;
        if (e->stale)
            continue;
        const struct mesh_cert_bundle *b = p->cfg.get_bundle(p->cfg.get_bundle_u, &e->id);
        if (b == NULL)
            continue; /* nothing to compare with: live connections keep what they proved */
        bool changed = b != e->bundle;
        mesh_identity_bundle_unref(b);
        if (!changed)
            continue;
        e->stale = true;
        p->stats.pool_drained += mesh_pool_drain_ctx(p->pool, e->client);
        if (e->users == 0)
            proxy_ctx_destroy(p, e);
    }
}

/* ====================================================================================================== */
/* API                                                                                                    */
/* ====================================================================================================== */

struct mesh_proxy *mesh_proxy_new(const struct mesh_env *env, const struct mesh_conn_ops *ops, void *backend,
                                  const struct mesh_proxy_config *cfg, const char **err)
{
    if (env == NULL || ops == NULL || cfg == NULL) {
        *err = "missing env, ops or config";
        return NULL;
    }
    if (cfg->get_bundle == NULL) {
        *err = "get_bundle callback is required";
        return NULL;
    }
    if (cfg->mtls_mode != MESH_MTLS_STRICT && cfg->mtls_mode != MESH_MTLS_PERMISSIVE) {
        *err = "invalid mtls_mode";
        return NULL;
    }
    if (cfg->node_name != NULL && strlen(cfg->node_name) >= 256) {
        *err = "node name too long";
        return NULL;
    }
    struct mesh_proxy *p = mesh_env_calloc(env, sizeof(*p));
    if (p == NULL) {
        *err = "out of memory";
        return NULL;
    }
    p->env = env;
    p->ops = ops;
    p->backend = backend;
    p->cfg = *cfg;
    if (cfg->node_name != NULL)
        snprintf(p->node_name, sizeof(p->node_name), "%s", cfg->node_name);
    p->cfg.node_name = p->node_name;
    if (cfg->tls_opts != NULL) {
        p->tls_opts = *cfg->tls_opts;
        p->has_tls_opts = true;
    }
    p->cfg.tls_opts = NULL;
    if (p->cfg.hbone_port == 0)
        p->cfg.hbone_port = MESH_PROXY_HBONE_PORT;
    if (p->cfg.connect_timeout_ns == 0)
        p->cfg.connect_timeout_ns = MESH_PROXY_CONNECT_TIMEOUT_NS;
    if (p->cfg.lookup_timeout_ns == 0)
        p->cfg.lookup_timeout_ns = MESH_PROXY_LOOKUP_TIMEOUT_NS;
    p->recheck_slice = cfg->recheck_slice != 0 ? cfg->recheck_slice : MESH_PROXY_RECHECK_SLICE;
    p->ws = cfg->workloads != NULL ? mesh_workloads_ref(cfg->workloads) : NULL;
    p->cfg.workloads = NULL;
    struct mesh_pool_opts po = {
        .max_streams = cfg->pool_max_streams,
        .idle_ns = cfg->pool_idle_ns,
        .connect_timeout_ns = p->cfg.connect_timeout_ns,
        .get_ctx = proxy_pool_get_ctx,
        .put_ctx = proxy_pool_put_ctx,
        .ctx_u = p,
    };
    p->pool = mesh_pool_new(env, &p->sched, ops, backend, &po);
    if (p->pool == NULL) {
        mesh_workloads_unref(p->ws);
        mesh_env_free(env, p);
        *err = "out of memory";
        return NULL;
    }
    return p;
}

void mesh_proxy_set_workloads(struct mesh_proxy *p, const struct mesh_workloads *w)
{
    const struct mesh_workloads *old = p->ws;
    p->ws = w != NULL ? mesh_workloads_ref(w) : NULL;
    mesh_workloads_unref(old);
}

int mesh_proxy_update(struct mesh_proxy *p, const struct mesh_proxy_update *u)
{
    if (u == NULL || (u->mtls_mode != MESH_MTLS_STRICT && u->mtls_mode != MESH_MTLS_PERMISSIVE))
        return -EINVAL;
    mesh_sched_enter(&p->sched);
    /* one step: nothing below runs between these assignments */
    mesh_proxy_set_workloads(p, u->workloads);
    p->cfg.mtls_mode = u->mtls_mode;
    if (u->replace_authz)
        p->cfg.authz = u->authz;
    p->cfg.authz_u = u->authz_u;
    p->cfg.get_bundle_u = u->get_bundle_u;
    p->gen++;
    p->stats.updates++;
    /* (re)start the pass from the head: a pass in progress is superseded by this newer state */
    p->recheck_next = p->conns;
    p->pass_checked = 0;
    p->pass_closed = 0;
    proxy_recheck_certs(p);
    proxy_recheck_slice(p);
    /* connections waiting for an on-demand lookup go on if the new snapshot knows their destination */
    for (struct proxy_conn *pc = p->conns, *next; pc != NULL && p->n_parked > 0; pc = next) {
        next = pc->next;
        if (pc->lookup_waiting)
            proxy_outbound_poll_lookup(pc, mesh_env_now(p->env));
    }
    mesh_sched_leave(&p->sched);
    return 0;
}

int mesh_proxy_accept_outbound(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                               const struct mesh_addr *orig_dst, const struct mesh_conn_cb **cb_out, void **u_out)
{
    mesh_sched_enter(&p->sched);
    struct proxy_conn *pc = proxy_conn_new(p, MESH_PROXY_OUTBOUND, c, p->ops, src, orig_dst);
    if (pc == NULL) {
        p->ops->abort(c);
        mesh_sched_leave(&p->sched);
        return -ENOMEM;
    }
    *cb_out = &proxy_side_cb;
    *u_out = &pc->side[0];
    p->ops->read_enable(c, false);
    proxy_outbound_start(pc);
    mesh_sched_leave(&p->sched);
    return 0;
}

int mesh_proxy_accept_inbound_plain(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                                    const struct mesh_addr *orig_dst, const struct mesh_conn_cb **cb_out,
                                    void **u_out)
{
    mesh_sched_enter(&p->sched);
    struct proxy_conn *pc = proxy_conn_new(p, MESH_PROXY_INBOUND_PLAIN, c, p->ops, src, orig_dst);
    if (pc == NULL) {
        p->ops->abort(c);
        mesh_sched_leave(&p->sched);
        return -ENOMEM;
    }
    *cb_out = &proxy_side_cb;
    *u_out = &pc->side[0];
    p->ops->read_enable(c, false);
    proxy_plain_start(pc);
    mesh_sched_leave(&p->sched);
    return 0;
}

int mesh_proxy_accept_inbound_hbone(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                                    const struct mesh_addr *dst, const struct mesh_conn_cb **cb_out, void **u_out)
{
    mesh_sched_enter(&p->sched);
    int rc = proxy_inbound_accept(p, c, src, dst, cb_out, u_out);
    mesh_sched_leave(&p->sched);
    return rc;
}

uint64_t mesh_proxy_next_deadline(const struct mesh_proxy *p)
{
    if (p->recheck_next != NULL)
        return mesh_env_now(p->env); /* a re-check pass is pending: call back at once */
    uint64_t d = mesh_pool_next_deadline(p->pool);
    for (const struct proxy_inbound *in = p->inbound; in != NULL; in = in->next) {
        if (in->dead)
            continue;
        uint64_t t = mesh_hconn_next_deadline(in->h);
        if (t < d)
            d = t;
    }
    for (const struct proxy_conn *pc = p->conns; pc != NULL; pc = pc->next)
        if (pc->deadline_ns < d)
            d = pc->deadline_ns;
    return d;
}

void mesh_proxy_on_deadline(struct mesh_proxy *p, uint64_t now_ns)
{
    mesh_sched_enter(&p->sched);
    proxy_recheck_slice(p);
    for (struct proxy_conn *pc = p->conns, *next; pc != NULL; pc = next) {
        next = pc->next;
        if (pc->deadline_ns <= now_ns && pc->state != PROXY_CONN_DONE) {
            if (pc->dir == MESH_PROXY_OUTBOUND)
                proxy_outbound_on_timeout(pc);
            else
                proxy_inbound_on_timeout(pc);
        }
    }
    mesh_pool_on_deadline(p->pool, now_ns);
    for (struct proxy_inbound *in = p->inbound; in != NULL; in = in->next)
        if (!in->dead)
            mesh_hconn_on_deadline(in->h, now_ns);
    mesh_sched_leave(&p->sched);
}

const struct mesh_proxy_stats *mesh_proxy_stats(const struct mesh_proxy *p)
{
    struct mesh_proxy *m = (struct mesh_proxy *)(uintptr_t)p;
    const struct mesh_pool_stats *ps = mesh_pool_stats(p->pool);
    m->stats.pool_conns = ps->conns;
    m->stats.pool_handshakes = ps->handshakes;
    uint64_t n = 0;
    for (const struct proxy_inbound *in = p->inbound; in != NULL; in = in->next)
        n++;
    m->stats.inbound_conns = n;
    m->stats.recheck_pending = p->recheck_next != NULL ? 1 : 0;
    return &p->stats;
}

void mesh_proxy_free(struct mesh_proxy *p)
{
    if (p == NULL)
        return;
    p->freeing = true;
    mesh_sched_enter(&p->sched);
    while (p->conns != NULL)
        proxy_conn_teardown(p->conns, MESH_ERR_DRAINED);
    mesh_sched_leave(&p->sched);
    proxy_inbound_free_all(p);
    mesh_pool_free(p->pool);
    /* anything the frees above posted (nothing but free items) */
    mesh_sched_enter(&p->sched);
    mesh_sched_leave(&p->sched);
    while (p->ctxs != NULL)
        proxy_ctx_destroy(p, p->ctxs);
    mesh_workloads_unref(p->ws);
    mesh_env_free(p->env, p);
}
