/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/inbound.c - 15008: mTLS + HTTP/2 CONNECT -> validate -> authz -> dial the pod from the client's IP -> relay;
 * 15006: plaintext -> authz without identity -> dial from the client's IP -> relay.
 *
 * Response codes (facts §2.4): 400 for an :authority that does not parse (answered inside mesh/hbone.c) or whose IP
 * differs from the TCP destination; 401 when authorization denies; 503 when the hostname/port can't be resolved or the
 * upstream connect fails or times out; 200 only after the upstream connect succeeded. Error responses end the stream.
 *
 * Each stream is resolved with the snapshot current when it arrives (the local workload is looked up again by the
 * connection's local address; a workload gone since the TLS accept answers 503 "unroutable"). Live connections are
 * re-checked after mesh_proxy_update by proxy_inbound_recheck (late rejection, see proxy.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mesh/proxy_impl.h"

/* ---- shared ---- */

static int inbound_dial_pod(struct proxy_conn *pc)
{
    struct mesh_proxy *p = pc->p;
    struct mesh_addr src = pc->src;
    const struct mesh_addr *srcp = &src;

    /* transparent: the pod sees the client's IP (any port), unless that is the pod itself */
    src.port = 0;
    if (mesh_addr_ip_eq(&src, &pc->target))
        srcp = NULL;
    pc->up_ops = p->ops;
    pc->state = PROXY_CONN_CONNECTING;
    pc->deadline_ns = mesh_env_now(p->env) + p->cfg.connect_timeout_ns;
    int rc = p->ops->dial(p->backend, srcp, &pc->target, &proxy_side_cb, &pc->side[1], &pc->up);
    if (rc != 0)
        pc->up = NULL;
    return rc;
}

/* ---- HBONE streams ---- */

static void inbound_fail(struct proxy_conn *pc, int status, int err)
{
    struct proxy_inbound *in = pc->in;

    pc->status = status;
    if (in != NULL && !in->dead)
        (void)mesh_hconn_respond(in->h, pc->sid, status);
    if (pc->down != NULL) {
        mesh_hconn_stream_detach(pc->down);
        pc->down = NULL;
    }
    proxy_conn_teardown(pc, err);
}

/* The target port for a hostname authority: the local workload's PortList for the service, else the service's. */
static uint16_t inbound_service_target(const struct mesh_workload *w, const struct mesh_service *svc, uint16_t port)
{
    char key[MESH_WORKLOAD_SERVICE_KEY_MAX_BYTES];
    snprintf(key, sizeof(key), "%s/%s", svc->namespace, svc->hostname);
    for (size_t i = 0; i < w->n_services; i++) {
        if (strcmp(w->services[i].key, key) != 0)
            continue;
        for (size_t j = 0; j < w->services[i].n_ports; j++)
            if (w->services[i].ports[j].service_port == port && w->services[i].ports[j].target_port != 0)
                return w->services[i].ports[j].target_port;
    }
    for (size_t j = 0; j < svc->n_ports; j++)
        if (svc->ports[j].service_port == port)
            return svc->ports[j].target_port;
    return svc->n_ports == 0 ? port : 0;
}

static const struct mesh_service *inbound_find_hostname(const struct mesh_workloads *ws, const char *host)
{
    for (size_t i = 0; i < mesh_workloads_service_count(ws); i++) {
        const struct mesh_service *s = mesh_workloads_service_at(ws, i);
        if (strcmp(s->hostname, host) == 0)
            return s;
    }
    return NULL;
}

static void inbound_on_request(void *u, struct mesh_hconn *h, int32_t sid, const struct mesh_hbone_request *req)
{
    struct proxy_inbound *in = u;
    struct mesh_proxy *p = in->p;
    struct mesh_hbone_authority a;

    struct proxy_conn *pc = proxy_conn_new(p, MESH_PROXY_INBOUND_HBONE, NULL, &mesh_hconn_stream_ops, &in->src,
                                           &in->dst);
    if (pc == NULL) {
        (void)mesh_hconn_respond(h, sid, 503);
        return;
    }
    pc->in = in;
    pc->sid = sid;
    /* dst_id stays what the TLS session proved; the workload record comes from the current snapshot */
    (void)mesh_workload_identity(in->local, &pc->dst_id);
    pc->has_dst_id = true;
    pc->has_hbone = true;
    pc->hbone_addr = in->dst;
    const struct mesh_spiffe_id *peer = mesh_hconn_peer_identity(h);
    if (peer != NULL) {
        pc->src_id = *peer;
        pc->has_src_id = true;
    }
    pc->src_w = mesh_workloads_find_by_ip(pc->ws, &in->src);
    if (mesh_hconn_accept_stream(h, sid, &proxy_side_cb, &pc->side[0], &pc->down) != 0) {
        pc->down = NULL;
        inbound_fail(pc, 503, MESH_ERR_INTERNAL);
        return;
    }
    const struct mesh_workload *local = mesh_workloads_find_by_ip(pc->ws, &in->dst);
    if (!proxy_workload_is_local(p, local) || strcmp(local->uid, in->local->uid) != 0) {
        inbound_fail(pc, 503, MESH_ERR_UNROUTABLE);
        return;
    }
    pc->dst_w = local;
    if (mesh_hbone_parse_authority(req->authority, strlen(req->authority), &a) != 0) {
        inbound_fail(pc, 400, MESH_ERR_HBONE_BAD_REQUEST);
        return;
    }
    if (a.is_ip) {
        /* the authority IP must be the TCP destination (no waypoint exceptions here) */
        if (!mesh_addr_ip_eq(&a.addr, &in->dst)) {
            pc->target = a.addr;
            inbound_fail(pc, 400, MESH_ERR_HBONE_BAD_REQUEST);
            return;
        }
        pc->target = in->dst;
        pc->target.port = a.addr.port;
    } else {
        const struct mesh_service *svc = inbound_find_hostname(pc->ws, a.host);
        uint16_t tp = svc != NULL ? inbound_service_target(local, svc, a.port) : 0;
        if (svc == NULL || tp == 0) {
            inbound_fail(pc, 503, MESH_ERR_UNROUTABLE);
            return;
        }
        pc->svc = svc;
        pc->target = in->dst;
        pc->target.port = htons(tp);
    }
    proxy_conn_record_open(pc);
    if (proxy_call_authz(p, pc) != MESH_PROXY_ALLOW) {
        inbound_fail(pc, 401, MESH_ERR_DENIED);
        return;
    }
    int rc = inbound_dial_pod(pc);
    if (rc != 0)
        inbound_fail(pc, 503, rc == -ECONNREFUSED ? MESH_ERR_UPSTREAM_REFUSED : rc);
}

static void inbound_on_free_item(struct mesh_sched_item *it)
{
    struct proxy_inbound *in = (struct proxy_inbound *)(void *)((char *)it - offsetof(struct proxy_inbound, free_item));
    struct mesh_proxy *p = in->p;

    for (struct proxy_inbound **pp = &p->inbound; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    }
    mesh_hconn_free(in->h);
    proxy_ctx_put(p, in->ctx);
    mesh_workloads_unref(in->ws);
    mesh_env_free(p->env, in);
}

static void inbound_on_dead(void *u, struct mesh_hconn *h, int err)
{
    struct proxy_inbound *in = u;
    (void)h;
    if (err != 0 && err != MESH_ERR_DRAINED)
        MESH_LOG(in->p->env, MESH_LOG_INFO, PROXY_MODULE, "inbound HBONE connection closed: %s", mesh_err_str(err));
    in->dead = true;
    mesh_sched_post(&in->p->sched, &in->free_item);
}

static const struct mesh_hconn_owner_cb inbound_hconn_cb = {
    .on_ready = NULL,
    .on_request = inbound_on_request,
    .on_dead = inbound_on_dead,
    .on_goaway = NULL,
};

int proxy_inbound_accept(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                         const struct mesh_addr *dst, const struct mesh_conn_cb **cb_out, void **u_out)
{
    const struct mesh_workload *local = mesh_workloads_find_by_ip(p->ws, dst);
    if (!proxy_workload_is_local(p, local)) {
        p->ops->abort(c);
        return -ENOENT;
    }
    struct mesh_spiffe_id local_id;
    (void)mesh_workload_identity(local, &local_id);
    struct proxy_ctx_entry *ctx = proxy_ctx_get(p, &local_id);
    if (ctx == NULL) {
        MESH_LOG(p->env, MESH_LOG_WARNING, PROXY_MODULE, "no certificate for %s/%s: inbound HBONE refused",
                 local_id.ns, local_id.sa);
        p->ops->abort(c);
        return -ENOKEY;
    }
    struct proxy_inbound *in = mesh_env_calloc(p->env, sizeof(*in));
    int err = 0;
    if (in != NULL)
        in->h = mesh_hconn_new(p->env, &p->sched, p->ops, MESH_HBONE_SERVER, ctx->server, NULL, 0,
                               MESH_TLS_NO_DEADLINE, &inbound_hconn_cb, in, &err);
    if (in == NULL || in->h == NULL) {
        mesh_env_free(p->env, in);
        proxy_ctx_put(p, ctx);
        p->ops->abort(c);
        return -ENOMEM;
    }
    in->p = p;
    in->ctx = ctx;
    in->ws = mesh_workloads_ref(p->ws);
    in->local = local;
    in->src = *src;
    in->dst = *dst;
    mesh_sched_item_init(&in->free_item, inbound_on_free_item);
    mesh_hconn_attach(in->h, c, true);
    in->next = p->inbound;
    p->inbound = in;
    *cb_out = &mesh_hconn_conn_cb;
    *u_out = in->h;
    return 0;
}

void proxy_inbound_free_all(struct mesh_proxy *p)
{
    while (p->inbound != NULL) {
        struct proxy_inbound *in = p->inbound;
        mesh_sched_cancel(&p->sched, &in->free_item);
        inbound_on_free_item(&in->free_item);
    }
}

/* ---- plaintext ---- */

void proxy_plain_start(struct proxy_conn *pc)
{
    struct mesh_proxy *p = pc->p;

    pc->dst_w = mesh_workloads_find_by_ip(pc->ws, &pc->dst);
    pc->src_w = mesh_workloads_find_by_ip(pc->ws, &pc->src);
    if (!proxy_workload_is_local(p, pc->dst_w)) {
        pc->dst_w = NULL;
        proxy_conn_teardown(pc, MESH_ERR_UNROUTABLE);
        return;
    }
    (void)mesh_workload_identity(pc->dst_w, &pc->dst_id);
    pc->has_dst_id = true;
    pc->target = pc->dst;
    proxy_conn_record_open(pc);
    if (proxy_call_authz(p, pc) != MESH_PROXY_ALLOW) {
        proxy_conn_teardown(pc, MESH_ERR_DENIED);
        return;
    }
    int rc = inbound_dial_pod(pc);
    if (rc != 0)
        proxy_conn_teardown(pc, rc == -ECONNREFUSED ? MESH_ERR_UPSTREAM_REFUSED : rc);
}

/* ---- live re-check (mesh_proxy_update) ---- */

/* Close a live inbound connection now denied: a CONNECT still unanswered gets 401, anything else both legs aborted
 * (the relay resets the HBONE stream and the pod connection). */
static void inbound_late_reject(struct proxy_conn *pc)
{
    if (pc->dir == MESH_PROXY_INBOUND_HBONE && pc->state != PROXY_CONN_RELAYING) {
        inbound_fail(pc, 401, MESH_ERR_DENIED); /* also aborts the dial in progress */
        return;
    }
    proxy_conn_teardown(pc, MESH_ERR_DENIED);
}

bool proxy_inbound_recheck(struct proxy_conn *pc)
{
    struct mesh_proxy *p = pc->p;

    /* ztunnel's assert_rbac: the destination is looked up again and a missing one fails the check */
    const struct mesh_workload *dst = mesh_workloads_find_by_ip(p->ws, &pc->target);
    if (!proxy_workload_is_local(p, dst) || pc->dst_w == NULL || strcmp(dst->uid, pc->dst_w->uid) != 0) {
        inbound_late_reject(pc);
        return false;
    }
    const struct mesh_workload *src = mesh_workloads_find_by_ip(p->ws, &pc->src);
    /* STRICT denies plaintext before the hook, as at accept */
    if (proxy_call_authz_as(p, pc, src, dst) != MESH_PROXY_ALLOW) {
        inbound_late_reject(pc);
        return false;
    }
    return true;
}

/* ---- upstream events (both kinds) ---- */

void proxy_inbound_on_up_writable(struct proxy_conn *pc)
{
    if (pc->dir == MESH_PROXY_INBOUND_HBONE) {
        struct proxy_inbound *in = pc->in;
        if (in->dead || mesh_hconn_respond(in->h, pc->sid, 200) != 0) {
            proxy_conn_teardown(pc, MESH_ERR_H2_PROTOCOL);
            return;
        }
        pc->status = 200;
    }
    proxy_conn_start_relay(pc);
}

void proxy_inbound_on_up_closed(struct proxy_conn *pc, int err)
{
    pc->up = NULL;
    err = err == -ETIMEDOUT ? MESH_ERR_UPSTREAM_TIMEOUT : MESH_ERR_UPSTREAM_REFUSED;
    if (pc->dir == MESH_PROXY_INBOUND_HBONE)
        inbound_fail(pc, 503, err);
    else
        proxy_conn_teardown(pc, err);
}

void proxy_inbound_on_timeout(struct proxy_conn *pc)
{
    if (pc->up != NULL) {
        pc->up_ops->abort(pc->up);
        pc->up = NULL;
    }
    if (pc->dir == MESH_PROXY_INBOUND_HBONE)
        inbound_fail(pc, 503, MESH_ERR_UPSTREAM_TIMEOUT);
    else
        proxy_conn_teardown(pc, MESH_ERR_UPSTREAM_TIMEOUT);
}
