/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/outbound.c - captured connection -> resolve -> pool -> CONNECT -> relay, or plain passthrough.
 *
 * Decision order (facts §2.8 without waypoints, §1 self-call guard):
 *  1. original port is a proxy port -> rejected (self call);
 *  2. service VIP:port -> an endpoint picked among healthy ones weighted by capacity, port mapped to its target port;
 *     a service with no eligible endpoint is refused unless its load balancing mode is PASSTHROUGH;
 *  3. workload IP -> that workload, original port;
 *  4. destination workload speaks HBONE -> tunnel via the pool: TLS as the source pod's identity, expecting the
 *     destination identity plus the service SANs, CONNECT <pod IP>:<target port> at <pod IP>:15008;
 *  5. anything else -> plain TCP to the (translated) destination, never spoofing the source.
 *
 * After mesh_proxy_update, proxy_outbound_recheck resolves a live connection's original destination again (steps 2
 * and 3 only, no endpoint pick) and closes it as "unroutable" when it no longer names the same service or workload.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mesh/proxy_impl.h"

static struct proxy_conn *outbound_of_waiter(struct mesh_pool_waiter *w)
{
    return (struct proxy_conn *)(void *)((char *)w - offsetof(struct proxy_conn, waiter));
}

/* Append ",k=v" (or "k=v" first) when v is not empty. */
static void outbound_baggage_add(char *b, size_t cap, const char *k, const char *v)
{
    if (v == NULL || v[0] == '\0')
        return;
    size_t len = strlen(b);
    snprintf(b + len, cap - len, "%s%s=%s", len > 0 ? "," : "", k, v);
}

static void outbound_make_request(const struct proxy_conn *pc, struct mesh_hbone_request *req)
{
    const struct mesh_workload *s = pc->src_w;
    char a[MESH_HBONE_AUTHORITY_MAX_BYTES];

    memset(req, 0, sizeof(*req));
    mesh_addr_format(&pc->target, true, req->authority, sizeof(req->authority));
    if (s != NULL) {
        outbound_baggage_add(req->baggage, sizeof(req->baggage), "k8s.cluster.name", s->cluster_id);
        outbound_baggage_add(req->baggage, sizeof(req->baggage), "k8s.namespace.name", s->namespace);
        outbound_baggage_add(req->baggage, sizeof(req->baggage), "k8s.deployment.name", s->workload_name);
        outbound_baggage_add(req->baggage, sizeof(req->baggage), "service.name", s->canonical_name);
        outbound_baggage_add(req->baggage, sizeof(req->baggage), "service.version", s->canonical_revision);
    }
    mesh_addr_format(&pc->src, true, a, sizeof(a));
    if (pc->svc != NULL)
        snprintf(req->forwarded, sizeof(req->forwarded), "for=\"%s\";host=%s", a, pc->svc->hostname);
    else
        snprintf(req->forwarded, sizeof(req->forwarded), "for=\"%s\"", a);
    if (mesh_hbone_make_traceparent(pc->p->env, req->traceparent) != 0)
        req->traceparent[0] = '\0';
}

static void outbound_got_conn(struct proxy_conn *pc, struct mesh_pool_conn *poolc)
{
    struct mesh_hbone_request req;

    pc->poolc = poolc;
    const struct mesh_spiffe_id *peer = mesh_pool_conn_peer(poolc);
    if (peer != NULL) {
        pc->dst_id = *peer;
        pc->has_dst_id = true;
    }
    outbound_make_request(pc, &req);
    pc->up_ops = &mesh_hconn_stream_ops;
    int rc = mesh_hconn_open_stream(mesh_pool_conn_hconn(poolc), &req, &proxy_side_cb, &pc->side[1], &pc->up);
    if (rc != 0) {
        pc->up = NULL;
        proxy_conn_teardown(pc, rc == -ENOMEM ? MESH_ERR_NOMEM : MESH_ERR_H2_PROTOCOL);
    }
}

static void outbound_on_pool_ready(struct mesh_pool_waiter *w, struct mesh_pool_conn *poolc, int err)
{
    struct proxy_conn *pc = outbound_of_waiter(w);

    pc->waiting = false;
    if (pc->state == PROXY_CONN_DONE) {
        if (poolc != NULL)
            mesh_pool_release(pc->p->pool, poolc);
        return;
    }
    if (poolc == NULL) {
        if (err == -ECONNREFUSED)
            err = MESH_ERR_UPSTREAM_REFUSED;
        else if (err == -ETIMEDOUT)
            err = MESH_ERR_UPSTREAM_TIMEOUT;
        proxy_conn_teardown(pc, err != 0 ? err : MESH_ERR_INTERNAL);
        return;
    }
    outbound_got_conn(pc, poolc);
}

static void outbound_start_hbone(struct proxy_conn *pc)
{
    struct mesh_proxy *p = pc->p;
    struct mesh_pool_key key;

    if (pc->src_w == NULL) {
        MESH_LOG(p->env, MESH_LOG_WARNING, PROXY_MODULE, "outbound from an unknown source: no identity to present");
        proxy_conn_teardown(pc, MESH_ERR_UNROUTABLE);
        return;
    }
    memset(&key, 0, sizeof(key));
    (void)mesh_workload_identity(pc->src_w, &key.src_id);
    (void)mesh_workload_identity(pc->dst_w, &key.expected[key.n_expected++]);
    if (pc->svc != NULL) {
        for (size_t i = 0; i < pc->svc->n_subject_alt_names && key.n_expected < MESH_POOL_MAX_EXPECTED; i++) {
            const char *san = pc->svc->subject_alt_names[i];
            if (mesh_spiffe_parse(san, strlen(san), &key.expected[key.n_expected]) == 0)
                key.n_expected++;
        }
    }
    key.dst = pc->target;
    key.dst.port = htons(p->cfg.hbone_port);
    key.src_ip = pc->src;
    key.src_ip.port = 0;
    pc->src_id = key.src_id;
    pc->has_src_id = true;
    pc->dst_id = key.expected[0];
    pc->has_dst_id = true;
    pc->has_hbone = true;
    pc->hbone_addr = key.dst;
    pc->state = PROXY_CONN_CONNECTING;
    pc->deadline_ns = mesh_env_now(p->env) + p->cfg.connect_timeout_ns;
    proxy_conn_record_open(pc);
    pc->waiter.fn = outbound_on_pool_ready;
    struct mesh_pool_conn *poolc = NULL;
    int rc = mesh_pool_checkout(p->pool, &key, &pc->waiter, &poolc);
    if (rc == 1)
        outbound_got_conn(pc, poolc);
    else if (rc == 0)
        pc->waiting = true;
    else
        proxy_conn_teardown(pc, rc == -ECONNREFUSED ? MESH_ERR_UPSTREAM_REFUSED : rc);
}

static void outbound_start_passthrough(struct proxy_conn *pc)
{
    struct mesh_proxy *p = pc->p;

    pc->state = PROXY_CONN_CONNECTING;
    pc->deadline_ns = mesh_env_now(p->env) + p->cfg.connect_timeout_ns;
    proxy_conn_record_open(pc);
    pc->up_ops = p->ops;
    /* from the pod's own address, as a connection the pod opened itself would be (ztunnel dials from inside the pod's
     * network namespace); any source port */
    struct mesh_addr src = pc->src;
    src.port = 0;
    int rc = p->ops->dial(p->backend, &src, &pc->target, &proxy_side_cb, &pc->side[1], &pc->up);
    if (rc != 0) {
        pc->up = NULL;
        proxy_conn_teardown(pc, rc == -ECONNREFUSED ? MESH_ERR_UPSTREAM_REFUSED : rc);
    }
}

void proxy_outbound_start(struct proxy_conn *pc)
{
    struct mesh_proxy *p = pc->p;
    const struct mesh_workloads *ws = pc->ws;
    uint16_t port = ntohs(pc->dst.port);


    if (proxy_is_illegal_port(p, port)) {
        MESH_LOG(p->env, MESH_LOG_WARNING, PROXY_MODULE, "self call to proxy port %u rejected", (unsigned)port);
        proxy_conn_teardown(pc, MESH_ERR_UNROUTABLE);
        return;
    }
    pc->src_w = mesh_workloads_find_by_ip(ws, &pc->src);
    const struct mesh_port *sp = NULL;
    const struct mesh_service *svc = mesh_workloads_find_service(ws, &pc->dst, &sp);
    if (svc != NULL) {
        pc->svc = svc;
        uint64_t rnd = 0;
        (void)mesh_env_random(p->env, &rnd, sizeof(rnd));
        uint16_t tp = 0;
        struct mesh_addr addr;
        const struct mesh_endpoint *ep =
            mesh_workloads_pick_endpoint(ws, svc, port, pc->dst.family, rnd, &tp, &addr);
        if (ep == NULL) {
            if (svc->lb_mode != MESH_LB_PASSTHROUGH) {
                proxy_conn_teardown(pc, MESH_ERR_UPSTREAM_REFUSED);
                return;
            }
        } else {
            pc->dst_w = ep->workload;
            pc->target = addr;
        }
    } else {
        pc->dst_w = mesh_workloads_find_by_ip(ws, &pc->dst);
        if (pc->dst_w == NULL && p->cfg.lookup != NULL && !pc->lookup_asked) {
            uint64_t now = mesh_env_now(p->env);
            pc->lookup_asked = true;
            if (p->cfg.lookup(p->cfg.lookup_u, &pc->dst) == MESH_LOOKUP_PENDING) { /* proxy_outbound_poll_lookup */
                pc->lookup_waiting = true;
                p->n_parked++;
                pc->lookup_until_ns = now + p->cfg.lookup_timeout_ns;
                pc->deadline_ns = now + MESH_PROXY_LOOKUP_POLL_NS < pc->lookup_until_ns
                                      ? now + MESH_PROXY_LOOKUP_POLL_NS
                                      : pc->lookup_until_ns;
                p->stats.lookups++;
                return;
            }
        } else if (pc->dst_w != NULL && pc->lookup_asked) {
            p->stats.lookups_resolved++;
        }
    }
    if (proxy_is_illegal_port(p, ntohs(pc->target.port))) {
        MESH_LOG(p->env, MESH_LOG_WARNING, PROXY_MODULE, "self call to proxy port %u rejected",
                 (unsigned)ntohs(pc->target.port));
        proxy_conn_teardown(pc, MESH_ERR_UNROUTABLE);
        return;
    }
    if (pc->dst_w != NULL && pc->dst_w->protocol == MESH_TUNNEL_HBONE)
        outbound_start_hbone(pc);
    else
        outbound_start_passthrough(pc);
}

bool proxy_outbound_recheck(struct proxy_conn *pc)
{
    const struct mesh_workloads *ws = pc->p->ws;
    const struct mesh_port *sp = NULL;
    const struct mesh_service *svc = mesh_workloads_find_service(ws, &pc->dst, &sp);
    bool same;

    if (pc->svc != NULL) {
        /* the same service still owns VIP:port; which endpoint a new connection would pick does not matter */
        same = svc != NULL && strcmp(svc->namespace, pc->svc->namespace) == 0 &&
               strcmp(svc->hostname, pc->svc->hostname) == 0;
    } else if (pc->dst_w != NULL) {
        const struct mesh_workload *w = mesh_workloads_find_by_ip(ws, &pc->dst);
        same = svc == NULL && w != NULL && strcmp(w->uid, pc->dst_w->uid) == 0;
    } else {
        same = true; /* never resolved (passthrough to an unknown address): nothing was removed */
    }
    if (same)
        return true;
    proxy_conn_teardown(pc, MESH_ERR_UNROUTABLE);
    return false;
}

void proxy_outbound_on_up_writable(struct proxy_conn *pc)
{
    if (pc->has_hbone)
        pc->status = 200;
    proxy_conn_start_relay(pc);
}

void proxy_outbound_on_up_closed(struct proxy_conn *pc, int err)
{
    /* the upstream died before the relay started: the handle is still valid during this upcall */
    if (pc->has_hbone && pc->up != NULL) {
        int status = mesh_hconn_stream_status(pc->up);
        int serr = mesh_hconn_stream_error(pc->up);
        if (status != 0 && status != 200) {
            pc->status = status;
            err = MESH_ERR_HBONE_STATUS;
        } else if (serr != MESH_OK && serr != MESH_ERR_DRAINED) {
            err = serr;
        }
    }
    if (err == -ECONNREFUSED || err == 0)
        err = MESH_ERR_UPSTREAM_REFUSED;
    else if (err == -ETIMEDOUT)
        err = MESH_ERR_UPSTREAM_TIMEOUT;
    pc->up = NULL;
    proxy_conn_teardown(pc, err);
}

/* Go on against the proxy's current snapshot (asked already: resolved now, or passed through). */
static void outbound_resume(struct proxy_conn *pc)
{
    struct mesh_proxy *p = pc->p;
    const struct mesh_workloads *old = pc->ws;

    pc->lookup_waiting = false;
    p->n_parked--;
    pc->src_w = pc->dst_w = NULL; /* they pointed into old */
    pc->svc = NULL;
    pc->ws = p->ws != NULL ? mesh_workloads_ref(p->ws) : NULL;
    mesh_workloads_unref(old);
    pc->deadline_ns = MESH_PROXY_NO_DEADLINE;
    proxy_outbound_start(pc);
}

void proxy_outbound_poll_lookup(struct proxy_conn *pc, uint64_t now_ns)
{
    struct mesh_proxy *p = pc->p;
    const struct mesh_port *sp = NULL;

    if (mesh_workloads_find_by_ip(p->ws, &pc->dst) != NULL || mesh_workloads_find_service(p->ws, &pc->dst, &sp) ||
        now_ns >= pc->lookup_until_ns || p->cfg.lookup(p->cfg.lookup_u, &pc->dst) == MESH_LOOKUP_UNKNOWN) {
        outbound_resume(pc);
        return;
    }
    if (pc->deadline_ns <= now_ns) /* the poll that brought us here: arm the next */
        pc->deadline_ns = now_ns + MESH_PROXY_LOOKUP_POLL_NS < pc->lookup_until_ns ? now_ns + MESH_PROXY_LOOKUP_POLL_NS
                                                                                   : pc->lookup_until_ns;
}

void proxy_outbound_on_timeout(struct proxy_conn *pc)
{
    if (pc->lookup_waiting) {
        proxy_outbound_poll_lookup(pc, mesh_env_now(pc->p->env));
        return;
    }
    proxy_conn_teardown(pc, MESH_ERR_UPSTREAM_TIMEOUT);
}
