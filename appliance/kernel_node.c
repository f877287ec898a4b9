/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/kernel_node.c - the kernel-path composition (see kernel_node.h): epoll loop, listeners, capture rules,
 * the mesh proxy or the passthrough relay, and the management endpoints, all on one thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "appliance/conn_kernel.h"
#include "appliance/kernel_node.h"
#include "appliance/log.h"
#include "appliance/redirect.h"
#include "mesh/relay.h"
#include "mgmt/prom.h"
#include "mgmt/routes.h"
#include "mgmt/server.h"
#if ZW_KERNEL_PROXY
#include "appliance/config_mesh.h"
#include "appliance/config_put.h"
#include "appliance/config_xds.h"
#include "appliance/istiod.h"
#include "appliance/mesh_node.h"
#include "mesh/xds_convert.h"
#include "mesh/metrics.h"
#include "mesh/proxy.h"
#endif

#define KNODE_LOOP_MAX_WAIT_MS 1000
#define KNODE_DRAIN_MS 500
#define KNODE_MAX_PFDS 96

enum knode_listener {
    KNODE_L_OUTBOUND,
    KNODE_L_INBOUND_PLAIN,
    KNODE_L_HBONE,
    KNODE_L_COUNT,
};

static const struct {
    const char *name;
    uint16_t port;
    enum app_klisten_kind kind;
} knode_listeners[KNODE_L_COUNT] = {
    [KNODE_L_OUTBOUND] = {"outbound", APP_REDIRECT_OUTBOUND_PORT, APP_KLISTEN_REDIRECT},
    [KNODE_L_INBOUND_PLAIN] = {"inbound_plain", APP_REDIRECT_INBOUND_PLAIN_PORT, APP_KLISTEN_TPROXY},
    [KNODE_L_HBONE] = {"hbone", APP_REDIRECT_HBONE_PORT, APP_KLISTEN_TPROXY},
};

struct knode;

/* The listener context handed to the accept callback. */
struct knode_lctx {
    struct knode *node;
    enum knode_listener which;
    struct app_klistener *l;
    uint64_t accepted;
};

struct knode_pass_stats {
    uint64_t started;
    uint64_t active;
    uint64_t completed;
    uint64_t failed;
    uint64_t dial_failed;
    uint64_t self_calls;
    uint64_t bytes_client_to_server;
    uint64_t bytes_server_to_client;
};

struct knode {
    const struct app_config *cfg;
    enum app_knode_mode mode;
    struct mesh_env env;
    struct app_kloop *loop;
    struct knode_lctx lctx[KNODE_L_COUNT];
    struct app_redirect_config rcfg;
    char ifnames[APP_CONFIG_MAX_PORTS][IF_NAMESIZE];
    bool rules_installed;
    uint32_t ready;
    uint32_t quit;
    uint64_t start_ms;
    struct knode_pass_stats pass;
    struct knode_pass *passes;
#if ZW_KERNEL_PROXY
    struct mesh_proxy *proxy;
    struct mesh_metrics *metrics;
    struct app_mesh_node *mesh; /* workloads, policies and certificates from the config; NULL: an empty mesh */
    struct app_config *mesh_cfg; /* the config mesh came from after a PUT /config (owned); NULL: n->cfg */
    struct app_istiod *istiod;   /* following istiod (config group xds); NULL otherwise */
    uint64_t rotation_checked_ms;
#endif
};

static uint64_t knode_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int app_knode_has_proxy(void)
{
    return ZW_KERNEL_PROXY ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Config
 * ------------------------------------------------------------------------------------------------------------- */

static const char *knode_ifname(const struct app_port_config *p)
{
    size_t n = strlen(APP_KNODE_DEVARGS_PREFIX);
    return strncmp(p->devargs, APP_KNODE_DEVARGS_PREFIX, n) == 0 ? p->devargs + n : NULL;
}

int app_knode_check_config(const struct app_config *cfg, char *err, size_t errlen)
{
    int pods = 0;

    for (int i = 0; i < cfg->n_ports; i++) {
        const struct app_port_config *p = &cfg->ports[i];
        const char *ifn = knode_ifname(p);

        if (ifn == NULL || ifn[0] == '\0' || strlen(ifn) >= IF_NAMESIZE) {
            snprintf(err, errlen, "%s:%d: ports[%d].devargs \"%s\": the kernel backend needs \"%s<ifname>\"", cfg->path,
                     p->line, i, p->devargs, APP_KNODE_DEVARGS_PREFIX);
            return -EINVAL;
        }
        if (if_nametoindex(ifn) == 0) {
            snprintf(err, errlen, "%s:%d: ports[%d]: no interface \"%s\" in this network namespace", cfg->path, p->line,
                     i, ifn);
            return -EINVAL;
        }
        if (p->role == APP_PORT_PODS)
            pods++;
    }
    if (pods == 0) {
        snprintf(err, errlen, "%s: the kernel backend needs at least one port with role \"pods\"", cfg->path);
        return -EINVAL;
    }
    return 0;
}

static void knode_build_redirect(struct knode *n)
{
    struct app_redirect_config *r = &n->rcfg;

    memset(r, 0, sizeof(*r));
    r->node_name = n->cfg->node_name;
    r->same_node_hbone = n->mode == APP_KNODE_MESH;
    r->allow_init_netns =
        getenv("ZWIRE_CAPTURE_IN_INIT_NETNS") != NULL && strcmp(getenv("ZWIRE_CAPTURE_IN_INIT_NETNS"), "1") == 0;
    for (int i = 0; i < n->cfg->n_ports; i++) {
        const struct app_port_config *p = &n->cfg->ports[i];
        snprintf(n->ifnames[i], sizeof(n->ifnames[i]), "%s", knode_ifname(p));
        if (p->role != APP_PORT_PODS)
            continue;
        r->pod_ifs[r->n_pod_ifs++] = n->ifnames[i];
        if (r->n_pod_cidrs < APP_REDIRECT_MAX_CIDRS)
            r->pod_cidrs[r->n_pod_cidrs++] = p->address;
    }
    /* with workloads in the config, only the enrolled pods of this node are captured, as in ambient */
    if (n->mode == APP_KNODE_MESH && n->cfg->mesh->present) {
        r->only_enrolled = true;
        r->n_enrolled = (int)app_mesh_local_addresses(n->cfg->mesh, n->cfg->node_name, r->enrolled,
                                                      APP_REDIRECT_MAX_ENROLLED);
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Passthrough: relay a captured connection to its original destination
 * ------------------------------------------------------------------------------------------------------------- */

struct knode_pass {
    struct knode *node;
    struct knode_pass *prev, *next; /* every live passthrough of the node */
    struct mesh_conn *down;         /* the captured client connection */
    struct mesh_conn *up;           /* our dial to the original destination */
    bool relaying;
    struct mesh_relay relay;
};

static void pass_free(struct knode_pass *ps)
{
    struct knode *n = ps->node;

    if (ps->prev != NULL)
        ps->prev->next = ps->next;
    else
        n->passes = ps->next;
    if (ps->next != NULL)
        ps->next->prev = ps->prev;
    n->pass.active--;
    free(ps);
}

/* Reset every passthrough connection (no upcalls follow) and free its state. */
static void pass_abort_all(struct knode *n)
{
    while (n->passes != NULL) {
        struct knode_pass *ps = n->passes;
        app_kconn_ops.abort(ps->up);
        app_kconn_ops.abort(ps->down);
        n->pass.failed++;
        pass_free(ps);
    }
}

static void pass_on_relay_done(void *u, struct mesh_relay *r, int err)
{
    struct knode_pass *ps = u;
    struct knode *n = ps->node;

    n->pass.bytes_client_to_server += mesh_relay_bytes(r, MESH_RELAY_A);
    n->pass.bytes_server_to_client += mesh_relay_bytes(r, MESH_RELAY_B);
    if (err == 0)
        n->pass.completed++;
    else
        n->pass.failed++;
    pass_free(ps);
}

/* Before the dial completes the client connection is held with reading off; these upcalls only watch for its end. */
static size_t pass_down_on_data(void *u, const uint8_t *p, size_t len)
{
    (void)u, (void)p, (void)len;
    return 0;
}

static void pass_down_on_nothing(void *u)
{
    (void)u;
}

static void pass_down_on_closed(void *u, int err)
{
    struct knode_pass *ps = u;
    (void)err;
    app_kconn_ops.abort(ps->up);
    ps->node->pass.failed++;
    pass_free(ps);
}

static const struct mesh_conn_cb pass_down_cb = {
    .on_data = pass_down_on_data,
    .on_writable = pass_down_on_nothing,
    .on_peer_fin = pass_down_on_nothing,
    .on_closed = pass_down_on_closed,
};

static void pass_up_on_writable(void *u)
{
    struct knode_pass *ps = u;

    ps->relaying = true;
    mesh_relay_init(&ps->relay, &app_kconn_ops, ps->down, &app_kconn_ops, ps->up, pass_on_relay_done, ps);
    app_kconn_set_cb(ps->down, &mesh_relay_conn_cb, &ps->relay.side[MESH_RELAY_A]);
    app_kconn_set_cb(ps->up, &mesh_relay_conn_cb, &ps->relay.side[MESH_RELAY_B]);
}

static void pass_up_on_closed(void *u, int err)
{
    struct knode_pass *ps = u;
    APP_LOG_DEBUG("kernel", "passthrough dial failed: %s", strerror(-err));
    app_kconn_ops.abort(ps->down); /* the client sees a reset, as if the destination refused */
    ps->node->pass.dial_failed++;
    ps->node->pass.failed++;
    pass_free(ps);
}

static const struct mesh_conn_cb pass_up_cb = {
    .on_data = pass_down_on_data,
    .on_writable = pass_up_on_writable,
    .on_peer_fin = pass_down_on_nothing,
    .on_closed = pass_up_on_closed,
};

static bool knode_is_listener_port(const struct mesh_addr *a)
{
    uint16_t port = ntohs(a->port);
    return port == APP_REDIRECT_OUTBOUND_PORT || port == APP_REDIRECT_INBOUND_PLAIN_PORT;
}

static void knode_pass_accept(struct knode *n, enum knode_listener which, struct mesh_conn *c,
                              const struct mesh_addr *src, const struct mesh_addr *dst)
{
    struct knode_pass *ps;
    struct mesh_addr spoof;
    int rc;

    if (knode_is_listener_port(dst)) { /* self-call guard: never dial our own capture ports */
        n->pass.self_calls++;
        app_kconn_ops.abort(c);
        return;
    }
    ps = calloc(1, sizeof(*ps));
    if (ps == NULL) {
        app_kconn_ops.abort(c);
        return;
    }
    ps->node = n;
    ps->down = c;
    ps->next = n->passes;
    if (n->passes != NULL)
        n->passes->prev = ps;
    n->passes = ps;
    n->pass.started++;
    n->pass.active++;
    app_kconn_set_cb(c, &pass_down_cb, ps);
    app_kconn_ops.read_enable(c, false);
    /* inbound keeps the client's address (IP_TRANSPARENT); outbound leaves from the node's own address */
    spoof = *src;
    spoof.port = 0;
    rc = app_kconn_ops.dial(n->loop, which == KNODE_L_OUTBOUND ? NULL : &spoof, dst, &pass_up_cb, ps, &ps->up);
    if (rc < 0) {
        char d[64];
        APP_LOG_DEBUG("kernel", "passthrough dial to %s: %s", app_kaddr_format(dst, d, sizeof(d)), strerror(-rc));
        app_kconn_ops.abort(c);
        n->pass.dial_failed++;
        n->pass.failed++;
        pass_free(ps);
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Accepting
 * ------------------------------------------------------------------------------------------------------------- */

static void knode_on_accept(void *u, struct app_klistener *l, struct mesh_conn *c, const struct mesh_addr *src,
                            const struct mesh_addr *dst)
{
    struct knode_lctx *lc = u;
    struct knode *n = lc->node;
    (void)l;

    lc->accepted++;
    if (app_log_get_level() >= APP_LOG_DEBUG) {
        char s[64], d[64];
        APP_LOG_DEBUG("kernel", "%s: %s -> %s", knode_listeners[lc->which].name, app_kaddr_format(src, s, sizeof(s)),
                      app_kaddr_format(dst, d, sizeof(d)));
    }
#if ZW_KERNEL_PROXY
    if (n->mode == APP_KNODE_MESH) {
        const struct mesh_conn_cb *cb = NULL;
        void *cu = NULL;
        int rc;

        switch (lc->which) {
        case KNODE_L_OUTBOUND:
            rc = mesh_proxy_accept_outbound(n->proxy, c, src, dst, &cb, &cu);
            break;
        case KNODE_L_INBOUND_PLAIN:
            rc = mesh_proxy_accept_inbound_plain(n->proxy, c, src, dst, &cb, &cu);
            break;
        default:
            rc = mesh_proxy_accept_inbound_hbone(n->proxy, c, src, dst, &cb, &cu);
            break;
        }
        if (rc == 0)
            app_kconn_set_cb(c, cb, cu);
        /* on failure the proxy has aborted c already */
        return;
    }
#endif
    knode_pass_accept(n, lc->which, c, src, dst);
}

static int knode_listen(struct knode *n, char *err, size_t errlen)
{
    for (int i = 0; i < KNODE_L_COUNT; i++) {
        struct mesh_addr a;
        int rc;

        memset(&a, 0, sizeof(a));
        a.family = MESH_ADDR_V4;
        a.port = htons(knode_listeners[i].port);
        n->lctx[i].node = n;
        n->lctx[i].which = (enum knode_listener)i;
        rc = app_kloop_listen(n->loop, &a, knode_listeners[i].kind, knode_on_accept, &n->lctx[i], &n->lctx[i].l);
        if (rc < 0) {
            snprintf(err, errlen, "listen on 0.0.0.0:%u (%s): %s", knode_listeners[i].port, knode_listeners[i].name,
                     strerror(-rc));
            return rc;
        }
    }
    return 0;
}

static void knode_close_listeners(struct knode *n)
{
    for (int i = 0; i < KNODE_L_COUNT; i++) {
        app_klistener_close(n->lctx[i].l);
        n->lctx[i].l = NULL;
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * The mesh proxy
 * ------------------------------------------------------------------------------------------------------------- */

#if ZW_KERNEL_PROXY
/* Without a mesh in the config there is no certificate source: TLS sessions fail with reason "tls". */
static const struct mesh_cert_bundle *knode_no_bundle(void *u, const struct mesh_spiffe_id *id)
{
    (void)u, (void)id;
    return NULL;
}

static uint64_t knode_proxy_next(void *u)
{
    return mesh_proxy_next_deadline(u);
}

static void knode_proxy_fire(void *u, uint64_t now)
{
    mesh_proxy_on_deadline(u, now);
}

static void knode_access_log(void *u, const struct mesh_proxy_access_record *rec)
{
    char s[64], d[64];
    (void)u;
    app_log(APP_LOG_INFO, "access",
            "%s src=%s dst=%s src_identity=%s dst_identity=%s sent=%llu recv=%llu "
            "duration_ms=%llu reason=%s",
            rec->direction_str, app_kaddr_format(&rec->src, s, sizeof(s)), app_kaddr_format(&rec->dst, d, sizeof(d)),
            rec->src_identity, rec->dst_identity, (unsigned long long)rec->bytes_sent,
            (unsigned long long)rec->bytes_recv, (unsigned long long)(rec->duration_ns / 1000000u),
            rec->reason_str[0] ? rec->reason_str : "-");
}

/* The proxy's on-demand lookup hook: through the istiod link (same thread), once it exists. */
static enum mesh_proxy_lookup knode_lookup(void *u, const struct mesh_addr *dst)
{
    struct knode *n = u;
    return n->istiod != NULL ? app_istiod_lookup(n->istiod, dst) : MESH_LOOKUP_UNKNOWN;
}

static int knode_proxy_start(struct knode *n, char *err, size_t errlen)
{
    struct mesh_proxy_config pc;
    struct app_kloop_engine e;
    const char *perr = NULL;

    if (n->cfg->mesh->present) {
        n->mesh = app_mesh_node_new(n->cfg, &n->env, err, errlen);
        if (n->mesh == NULL)
            return -EINVAL;
    }
    n->metrics = mesh_metrics_new(&n->env);
    if (n->metrics == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memset(&pc, 0, sizeof(pc));
    pc.node_name = n->cfg->node_name;
    pc.mtls_mode = MESH_MTLS_PERMISSIVE;
    pc.get_bundle = knode_no_bundle;
    pc.access_log = knode_access_log;
    if (n->mesh != NULL)
        app_mesh_node_proxy_config(n->mesh, &pc); /* workloads, policies, certificates, mTLS mode, access log */
    pc.metrics = n->metrics;
    if (app_cfg_xds(n->cfg) != NULL && app_cfg_xds(n->cfg)->on_demand) {
        pc.lookup = knode_lookup;
        pc.lookup_u = n;
    }
    n->proxy = mesh_proxy_new(&n->env, &app_kconn_ops, n->loop, &pc, &perr);
    if (n->proxy == NULL) {
        snprintf(err, errlen, "mesh proxy: %s", perr ? perr : "cannot start");
        return -EINVAL;
    }
    e.next_deadline = knode_proxy_next;
    e.on_deadline = knode_proxy_fire;
    e.u = n->proxy;
    return app_kloop_add_engine(n->loop, &e);
}

static void knode_proxy_stop(struct knode *n)
{
    if (n->proxy != NULL) {
        app_kloop_remove_engine(n->loop, n->proxy);
        mesh_proxy_free(n->proxy);
        n->proxy = NULL;
    }
    mesh_metrics_free(n->metrics);
    n->metrics = NULL;
    app_mesh_node_free(n->mesh);
    n->mesh = NULL;
    app_config_free(n->mesh_cfg);
    n->mesh_cfg = NULL;
}
#endif

/* ---------------------------------------------------------------------------------------------------------------
 * Management endpoints (JSON shapes follow appliance/node_api.c where they apply)
 * ------------------------------------------------------------------------------------------------------------- */

static json_t *knode_prefix(const struct app_ipv4_prefix *p)
{
    char ip[16];
    return json_sprintf("%s/%u", app_ipv4_format(p->addr, ip), p->len);
}

static const char *knode_mode_name(enum app_knode_mode m)
{
    return m == APP_KNODE_MESH ? "mesh" : "passthrough";
}

static void knode_api_ready(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    (void)req;
    if (!__atomic_load_n(&n->ready, __ATOMIC_ACQUIRE))
        mgmt_response_text(resp, 500, "not ready, pending: proxy\n");
#if ZW_KERNEL_PROXY
    else if (n->istiod != NULL && !app_istiod_ready(n->istiod))
        mgmt_response_text(resp, 500, "not ready, pending: %s\n", app_istiod_pending(n->istiod));
#endif
    else
        mgmt_response_text(resp, 200, "ready\n");
}

static json_t *knode_listeners_json(const struct knode *n)
{
    json_t *arr = json_array();
    static const char *const kinds[] = {"plain", "redirect", "tproxy"};

    for (int i = 0; i < KNODE_L_COUNT; i++) {
        struct mesh_addr a;
        char buf[64];
        if (n->lctx[i].l == NULL)
            continue;
        app_klistener_addr(n->lctx[i].l, &a);
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:s, s:I}", "name", knode_listeners[i].name, "address",
                                        app_kaddr_format(&a, buf, sizeof(buf)), "capture",
                                        kinds[knode_listeners[i].kind], "accepted", (json_int_t)n->lctx[i].accepted));
    }
    return arr;
}

static json_t *knode_capture_json(const struct knode *n)
{
    json_t *ifs = json_array(), *cidrs = json_array();
    char table[64], mark[16], cmark[16];

    for (int i = 0; i < n->rcfg.n_pod_ifs; i++)
        json_array_append_new(ifs, json_string(n->rcfg.pod_ifs[i]));
    for (int i = 0; i < n->rcfg.n_pod_cidrs; i++) {
        struct app_ipv4_prefix p = n->rcfg.pod_cidrs[i];
        p.addr &= p.len ? 0xffffffffu << (32 - p.len) : 0;
        json_array_append_new(cidrs, knode_prefix(&p));
    }
    snprintf(mark, sizeof(mark), "0x%x", APP_REDIRECT_MESH_MARK);
    snprintf(cmark, sizeof(cmark), "0x%x", APP_REDIRECT_CONN_MARK);
    return json_pack("{s:s, s:b, s:o, s:o, s:s, s:s, s:I, s:I}", "table",
                     app_redirect_table_name(&n->rcfg, table, sizeof(table)), "installed", n->rules_installed,
                     "pod_interfaces", ifs, "pod_cidrs", cidrs, "mark", mark, "conn_mark", cmark, "route_table",
                     (json_int_t)APP_REDIRECT_ROUTE_TABLE, "rule_priority", (json_int_t)APP_REDIRECT_RULE_PRIORITY);
}

/* The workloads of the mesh, in the camelCase shape of ztunnel's config dump (the fields we have). */
static json_t *knode_workloads_json(const struct knode *n)
{
    json_t *arr = json_array();
#if ZW_KERNEL_PROXY
    const struct mesh_workloads *ws = n->mesh ? app_mesh_node_workloads(n->mesh) : NULL;

    for (size_t i = 0; ws != NULL && i < mesh_workloads_count(ws); i++) {
        const struct mesh_workload *w = mesh_workloads_at(ws, i);
        json_t *addrs = json_array();
        char ip[64], id[MESH_SPIFFE_URI_MAX_BYTES];

        for (size_t k = 0; k < w->n_addresses; k++)
            if (mesh_addr_format(&w->addresses[k], false, ip, sizeof(ip)) >= 0)
                json_array_append_new(addrs, json_string(ip));
        struct mesh_spiffe_id sid;
        if (mesh_workload_identity(w, &sid) != 0 || mesh_spiffe_format(&sid, id, sizeof(id)) < 0)
            id[0] = '\0';
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s}", "uid", w->uid, "name", w->name,
                                             "namespace", w->namespace, "serviceAccount", w->service_account, "node",
                                             w->node, "workloadIps", addrs, "protocol",
                                             mesh_tunnel_protocol_str(w->protocol), "identity", id));
    }
#else
    (void)n;
#endif
    return arr;
}

static void knode_api_config_dump(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    const struct app_config *cfg = n->cfg;
    json_t *ports = json_array(), *root;
    (void)req;

    for (int i = 0; i < cfg->n_ports; i++) {
        const struct app_port_config *p = &cfg->ports[i];
        json_array_append_new(ports,
                              json_pack("{s:s, s:s, s:s, s:s, s:o, s:I}", "name", p->name, "role",
                                        app_port_role_name(p->role), "devargs", p->devargs, "ifname", n->ifnames[i],
                                        "address", knode_prefix(&p->address), "mtu", (json_int_t)p->mtu));
    }
    root = json_pack("{s:{s:s, s:s, s:s, s:s}, s:{s:s, s:o, s:{s:s, s:s?}, s:{s:s}}, s:o, s:o, s:o, s:[]}", "node",
                     "name", cfg->node_name, "version", ZW_VERSION, "backend", "kernel", "mode",
                     knode_mode_name(n->mode), "config", "path", cfg->path, "ports", ports, "mgmt", "socket",
                     cfg->mgmt.socket_path, "metrics_listen", cfg->mgmt.metrics_listen, "log", "level",
                     app_log_level_name(app_log_get_level()), "listeners", knode_listeners_json(n), "capture",
                     knode_capture_json(n), "workloads", knode_workloads_json(n), "services");
#if ZW_KERNEL_PROXY
    if (n->mesh != NULL) /* workloads, services, certificates and policy decisions, as the DPDK node shows them */
        json_object_update_new(root, app_mesh_node_dump_json(n->mesh));
    if (n->istiod != NULL)
        json_object_set_new(root, "xds", app_istiod_dump_json(n->istiod));
#endif
    mgmt_response_json(resp, 200, root);
}

static json_t *knode_loop_json(const struct app_kloop_stats *s)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "accepted", (json_int_t)s->accepted,
                     "accept_errors", (json_int_t)s->accept_errors, "dialed", (json_int_t)s->dialed, "dial_errors",
                     (json_int_t)s->dial_errors, "connect_timeouts", (json_int_t)s->connect_timeouts, "closed",
                     (json_int_t)s->closed, "aborted", (json_int_t)s->aborted, "rx_bytes", (json_int_t)s->rx_bytes,
                     "tx_bytes", (json_int_t)s->tx_bytes, "live_conns", (json_int_t)s->live_conns, "iterations",
                     (json_int_t)s->iterations);
}

static void knode_api_stats(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    json_t *listeners = json_object(), *root;
    const struct knode_pass_stats *ps = &n->pass;
    (void)req;

    for (int i = 0; i < KNODE_L_COUNT; i++)
        json_object_set_new(listeners, knode_listeners[i].name, json_integer((json_int_t)n->lctx[i].accepted));
    root = json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}", "node",
                     n->cfg->node_name, "backend", "kernel", "mode", knode_mode_name(n->mode), "uptime_s",
                     (json_int_t)((knode_now_ms() - n->start_ms) / 1000), "loop",
                     knode_loop_json(app_kloop_stats(n->loop)), "accepted", listeners, "passthrough", "started",
                     (json_int_t)ps->started, "active", (json_int_t)ps->active, "completed", (json_int_t)ps->completed,
                     "failed", (json_int_t)ps->failed, "dial_failed", (json_int_t)ps->dial_failed, "self_calls",
                     (json_int_t)ps->self_calls, "bytes_client_to_server", (json_int_t)ps->bytes_client_to_server,
                     "bytes_server_to_client", (json_int_t)ps->bytes_server_to_client);
#if ZW_KERNEL_PROXY
    if (n->proxy != NULL) {
        const struct mesh_proxy_stats *s = mesh_proxy_stats(n->proxy);
        json_object_set_new(root, "proxy",
                            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "active", (json_int_t)s->active, "opened",
                                      (json_int_t)s->opened, "closed", (json_int_t)s->closed, "failed",
                                      (json_int_t)s->failed, "pool_conns", (json_int_t)s->pool_conns, "inbound_conns",
                                      (json_int_t)s->inbound_conns, "pool_handshakes", (json_int_t)s->pool_handshakes));
        json_object_set_new(root, "certificates_issued",
                            json_integer(n->mesh ? (json_int_t)app_mesh_node_cert_count(n->mesh) : 0));
    }
#endif
    mgmt_response_json(resp, 200, root);
}

static void knode_api_metrics(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    enum mgmt_prom_format fmt = mgmt_prom_format_from_accept(req->accept);
    const struct app_kloop_stats *s = app_kloop_stats(n->loop);
    const char *perr = NULL, *data;
    struct mgmt_prom *prom;
    size_t len;

    prom = mgmt_prom_new(fmt, &perr);
    if (prom == NULL) {
        mgmt_response_text(resp, 500, "metrics: %s\n", perr ? perr : "out of memory");
        return;
    }
    {
        struct mgmt_prom_label l[] = {{"version", ZW_VERSION}, {"node", n->cfg->node_name}, {"backend", "kernel"}};
        mgmt_prom_family(prom, "zwire_build_info", MGMT_PROM_GAUGE, "zwire build and node identity");
        mgmt_prom_sample_u64(prom, l, 3, 1);
    }
    mgmt_prom_family(prom, "zwire_uptime_seconds", MGMT_PROM_GAUGE, "seconds since the node started");
    mgmt_prom_sample_u64(prom, NULL, 0, (knode_now_ms() - n->start_ms) / 1000);
    mgmt_prom_family(prom, "zwire_kernel_accepted_total", MGMT_PROM_COUNTER, "connections captured, per listener");
    for (int i = 0; i < KNODE_L_COUNT; i++) {
        struct mgmt_prom_label l[] = {{"listener", knode_listeners[i].name}};
        mgmt_prom_sample_u64(prom, l, 1, n->lctx[i].accepted);
    }
    {
        static const struct {
            const char *event;
            size_t offset;
        } ev[] = {
            {"accept_errors", offsetof(struct app_kloop_stats, accept_errors)},
            {"dialed", offsetof(struct app_kloop_stats, dialed)},
            {"dial_errors", offsetof(struct app_kloop_stats, dial_errors)},
            {"connect_timeouts", offsetof(struct app_kloop_stats, connect_timeouts)},
            {"closed", offsetof(struct app_kloop_stats, closed)},
            {"aborted", offsetof(struct app_kloop_stats, aborted)},
            {"rx_dropped_at_fin", offsetof(struct app_kloop_stats, rx_dropped_at_fin)},
        };
        mgmt_prom_family(prom, "zwire_kernel_events_total", MGMT_PROM_COUNTER, "socket events of the kernel backend");
        for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++) {
            struct mgmt_prom_label l[] = {{"event", ev[i].event}};
            mgmt_prom_sample_u64(prom, l, 1, *(const uint64_t *)(const void *)((const char *)s + ev[i].offset));
        }
    }
    mgmt_prom_family(prom, "zwire_kernel_bytes_total", MGMT_PROM_COUNTER, "bytes moved by the kernel backend");
    {
        struct mgmt_prom_label rx[] = {{"direction", "rx"}}, tx[] = {{"direction", "tx"}};
        mgmt_prom_sample_u64(prom, rx, 1, s->rx_bytes);
        mgmt_prom_sample_u64(prom, tx, 1, s->tx_bytes);
    }
    mgmt_prom_family(prom, "zwire_kernel_connections", MGMT_PROM_GAUGE, "open connections of the kernel backend");
    mgmt_prom_sample_u64(prom, NULL, 0, s->live_conns);
#if ZW_KERNEL_PROXY
    app_mesh_metrics_render(prom, n->metrics);
    if (n->istiod != NULL)
        app_istiod_metrics_render(prom, n->istiod);
#endif
    if (mgmt_prom_finish(prom) < 0) {
        mgmt_response_text(resp, 500, "metrics: out of memory\n");
    } else {
        data = mgmt_prom_data(prom, &len);
        mgmt_response_set_body(resp, 200, mgmt_prom_content_type(fmt), data, len);
    }
    mgmt_prom_free(prom);
}

static void knode_api_logging(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    const char *level = mgmt_request_query_get(req, "level");
    enum app_log_level l;

    if (level != NULL) {
        const char *colon = strrchr(level, ':');
        if (app_log_level_parse(colon ? colon + 1 : level, &l) < 0) {
            mgmt_response_text(resp, 400, "invalid level \"%s\": use one of off, error, warn, info, debug, trace\n",
                               level);
            return;
        }
        app_log_set_level(l);
        APP_LOG_INFO("kernel", "log level set to %s", app_log_level_name(l));
    } else if (mgmt_request_query_get(req, "reset") != NULL) {
        app_log_set_level(APP_LOG_INFO);
    }
    l = app_log_get_level();
    n->env.log_level = l == APP_LOG_DEBUG  ? MESH_LOG_DEBUG
                       : l == APP_LOG_INFO ? MESH_LOG_INFO
                       : l == APP_LOG_WARN ? MESH_LOG_WARNING
                                           : MESH_LOG_ERR;
    mgmt_response_text(resp, 200, "current log level is %s\n", app_log_level_name(l));
}

static void knode_api_quit(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    (void)req;
    APP_LOG_INFO("kernel", "shutdown requested through the management socket");
    __atomic_store_n(&n->quit, 1, __ATOMIC_RELEASE);
    mgmt_response_text(resp, 200, "shutdown now\n");
}

#if ZW_KERNEL_PROXY
/* Hand the proxy a new mesh side (one thread: in place; new connections see it, live ones are re-checked). */
static void knode_install_mesh(struct knode *n, struct app_mesh_node *mesh)
{
    struct mesh_proxy_config pc = {0};
    struct mesh_proxy_update u;
    struct app_mesh_node *old = n->mesh;

    app_mesh_node_proxy_config(mesh, &pc);
    u = (struct mesh_proxy_update){.workloads = pc.workloads, .mtls_mode = pc.mtls_mode, .replace_authz = true,
                                   .authz = pc.authz, .authz_u = pc.authz_u, .get_bundle_u = pc.get_bundle_u};
    mesh_proxy_update(n->proxy, &u);
    n->mesh = mesh;
    app_mesh_node_free(old);
    if (n->rules_installed && n->rcfg.only_enrolled) { /* capture exactly the pods the new mesh side enrolls */
        uint32_t addrs[APP_REDIRECT_MAX_ENROLLED];
        char err[512];
        size_t k = app_mesh_node_local_addresses(mesh, addrs, APP_REDIRECT_MAX_ENROLLED);
        if (app_redirect_set_enrolled(&n->rcfg, addrs, (int)k, err, sizeof(err)) < 0)
            APP_LOG_ERR("redirect", "enrolled pods not updated (capture keeps the previous set): %s", err);
    }
}
#endif


#if ZW_KERNEL_PROXY
/* PUT /config: the mesh sections apply live (one thread: the proxy is updated in place); the rest must not change. */
static void knode_api_put_config(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    struct app_config *next;
    struct app_mesh_node *mesh;
    char err[512];

    if (n->proxy == NULL || n->mesh == NULL) {
        mgmt_response_text(resp, 409, "this node runs without a mesh: nothing can change live\n");
        return;
    }
    if (n->istiod != NULL) {
        mgmt_response_text(resp, 409, "this node follows istiod: workloads, services and policies come from there\n");
        return;
    }
    next = app_config_from_put(req, resp, true);
    if (next == NULL)
        return;
    if (!next->mesh->present || strcmp(next->node_name, n->cfg->node_name) != 0) {
        app_config_free(next);
        mgmt_response_text(resp, 409, "configuration refused, nothing changed: node.name or the mesh presence changed "
                                      "(only a restart applies it)\n");
        return;
    }
    mesh = app_mesh_node_new(next, &n->env, err, sizeof(err));
    if (mesh == NULL) {
        app_config_free(next);
        mgmt_response_text(resp, 400, "configuration refused, nothing changed: %s\n", err);
        return;
    }
    knode_install_mesh(n, mesh);
    app_config_free(n->mesh_cfg);
    n->mesh_cfg = next;
    APP_LOG_INFO("reload", "applied: %zu workloads, %zu policies", mesh_workloads_count(app_mesh_node_workloads(mesh)),
                 mesh_authz_set_count(app_mesh_node_authz(mesh)));
    mgmt_response_json(resp, 200,
                       json_pack("{s:s, s:I, s:I, s:I}", "status", "applied", "workloads",
                                 (json_int_t)mesh_workloads_count(app_mesh_node_workloads(mesh)), "services",
                                 (json_int_t)mesh_workloads_service_count(app_mesh_node_workloads(mesh)), "policies",
                                 (json_int_t)mesh_authz_set_count(app_mesh_node_authz(mesh))));
}
#endif

#if ZW_KERNEL_PROXY
#define KNODE_CONN_LIST_MAX 4096
/* GET /connections: the proxy's live connections (one thread: read directly). */
static void knode_api_connections(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct knode *n = ctx;
    json_t *arr = json_array();
    struct mesh_proxy_conn_view *v;
    size_t k;
    (void)req;

    if (n->proxy != NULL && (v = calloc(KNODE_CONN_LIST_MAX, sizeof(*v))) != NULL) {
        k = mesh_proxy_list(n->proxy, v, KNODE_CONN_LIST_MAX);
        for (size_t i = 0; i < k; i++)
            json_array_append_new(arr, app_mesh_conn_view_json(&v[i], -1, mesh_env_now(&n->env)));
        free(v);
    }
    mgmt_response_json(resp, 200, arr);
}
#endif

static int knode_api_register(struct knode *n, struct mgmt_routes *routes)
{
    int rc = 0;
#if ZW_KERNEL_PROXY
    rc |= mgmt_routes_add(routes, "PUT", "/config", knode_api_put_config, n,
                          "apply a new config file (body): mesh, workloads, services and policies change live", 0);
#endif

    rc |= mgmt_routes_add(routes, "GET", "/healthz/ready", knode_api_ready, n, "200 once the node captures traffic",
                          MGMT_ROUTE_TCP);
    rc |= mgmt_routes_add(routes, "GET", "/config_dump", knode_api_config_dump, n,
                          "effective config, listeners, capture rules, workloads and services (JSON)", 0);
    rc |= mgmt_routes_add(routes, "GET", "/stats", knode_api_stats, n, "listener, socket and proxy counters (JSON)", 0);
    rc |= mgmt_routes_add(routes, "GET", "/metrics", knode_api_metrics, n, "Prometheus metrics", MGMT_ROUTE_TCP);
    rc |= mgmt_routes_add(routes, "GET", "/stats/prometheus", knode_api_metrics, n, "Prometheus metrics (alias)",
                          MGMT_ROUTE_TCP | MGMT_ROUTE_HIDDEN);
    rc |= mgmt_routes_add(routes, "POST", "/logging", knode_api_logging, n,
                          "show or set the log level: ?level=error|warn|info|debug", 0);
    rc |= mgmt_routes_add(routes, "POST", "/quitquitquit", knode_api_quit, n, "drain and exit", 0);
#if ZW_KERNEL_PROXY
    rc |= mgmt_routes_add(routes, "GET", "/connections", knode_api_connections, n,
                          "live proxied connections: direction, addresses, identities, bytes, age (JSON)", 0);
#endif
    return rc < 0 ? -EINVAL : 0;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Run
 * ------------------------------------------------------------------------------------------------------------- */

/* Once a second: when a local certificate reached half of its lifetime, re-issue them all and hand the proxy the new
 * mesh side (new TLS sessions present the new certificates; live ones keep theirs). */
static void knode_rotate_certs(struct knode *n)
{
#if ZW_KERNEL_PROXY
    struct app_mesh_node *mesh;
    uint64_t now = knode_now_ms();
    char err[512];

    if (n->proxy == NULL || n->mesh == NULL || now - n->rotation_checked_ms < 1000)
        return;
    n->rotation_checked_ms = now;
    if (!app_mesh_node_needs_rotation(n->mesh))
        return;
    mesh = app_mesh_node_renew(n->mesh, err, sizeof(err));
    if (mesh == NULL) {
        APP_LOG_ERR("mesh", "certificate rotation failed (retried in 1 s): %s", err);
        return;
    }
    knode_install_mesh(n, mesh);
    APP_LOG_INFO("mesh", "certificates rotated at half-life; live connections keep theirs");
#else
    (void)n;
#endif
}

#if ZW_KERNEL_PROXY
/* Apply the snapshot istiod sent last: a new mesh side with its workloads, services and policies, and the
 * certificates of the Istio CA when they come from there (one thread: the proxy is updated in place). */
static void knode_istiod_apply(struct knode *n)
{
    const struct mesh_xds_state *st = app_istiod_take_snapshot(n->istiod);
    struct app_mesh_node *mesh;
    char err[512];

    if (st == NULL)
        return;
    mesh = app_mesh_node_new_from_xds(n->cfg, &n->env, st, app_istiod_certs(n->istiod), err, sizeof(err));
    if (mesh == NULL) {
        APP_LOG_ERR("xds", "snapshot %llu not applied: %s", (unsigned long long)st->generation, err);
    } else {
        knode_install_mesh(n, mesh);
        app_istiod_applied(n->istiod, st->generation);
    }
    mesh_xds_state_unref(st);
}
#endif

static void knode_serve(struct knode *n, struct mgmt_server *srv, volatile sig_atomic_t *stop, bool draining)
{
    struct pollfd pfds[KNODE_MAX_PFDS];
    uint64_t drain_end = knode_now_ms() + KNODE_DRAIN_MS;

    for (;;) {
        int nf, timeout, nx = 0;

        if (!draining && (*stop || __atomic_load_n(&n->quit, __ATOMIC_ACQUIRE)))
            return;
        if (draining && (mgmt_server_clients(srv) == 0 || knode_now_ms() >= drain_end))
            return;
        nf = mgmt_server_fds(srv, pfds, KNODE_MAX_PFDS);
        if (nf < 0)
            nf = 0;
        timeout = mgmt_server_timeout_ms(srv);
        if (timeout < 0 || timeout > KNODE_LOOP_MAX_WAIT_MS)
            timeout = KNODE_LOOP_MAX_WAIT_MS;
        if (draining)
            timeout = 10;
#if ZW_KERNEL_PROXY
        if (n->istiod != NULL && !draining) {
            int t = app_istiod_timeout_ms(n->istiod);
            nx = app_istiod_fds(n->istiod, pfds + nf, KNODE_MAX_PFDS - (unsigned)nf);
            if (nx < 0)
                nx = 0;
            if (t >= 0 && t < timeout)
                timeout = t;
        }
#endif
        if (app_kloop_poll(n->loop, pfds, (unsigned)(nf + nx), timeout) < 0)
            continue; /* -EINTR from a signal: re-check the stop flag */
        mgmt_server_process(srv, pfds, (unsigned)nf);
#if ZW_KERNEL_PROXY
        if (n->istiod != NULL && !draining) {
            app_istiod_process(n->istiod, pfds + nf, (unsigned)nx);
            knode_istiod_apply(n);
        }
#endif
        knode_rotate_certs(n);
    }
}

/* Bridged pod traffic seen by the ip hooks escapes the outbound REDIRECT (redirect.h, "Bridges"). */
static void knode_check_br_netfilter(void)
{
    FILE *f = fopen("/proc/sys/net/bridge/bridge-nf-call-iptables", "r");
    int v = 0;

    if (f == NULL)
        return;
    if (fscanf(f, "%d", &v) == 1 && v != 0)
        APP_LOG_WARN("kernel", "net.bridge.bridge-nf-call-iptables=1 in this namespace: pod connections crossing a "
                               "bridge here before being routed will not be captured");
    fclose(f);
}

static enum mesh_log_level knode_mesh_level(enum app_log_level l)
{
    switch (l) {
    case APP_LOG_ERROR:
        return MESH_LOG_ERR;
    case APP_LOG_WARN:
        return MESH_LOG_WARNING;
    case APP_LOG_INFO:
        return MESH_LOG_INFO;
    default:
        return MESH_LOG_DEBUG;
    }
}

int app_knode_run(const struct app_config *cfg, enum app_knode_mode mode,
                  volatile sig_atomic_t *stop)
{
    static struct knode node;
    struct knode *n = &node;
    struct mgmt_server_config scfg = {0};
    struct mgmt_routes *routes = NULL;
    struct mgmt_server *srv = NULL;
    const char *merr = NULL;
    char err[768];
    int rc = 1, lerr = 0;

    memset(n, 0, sizeof(*n));
    n->cfg = cfg;
    n->mode = mode;
    n->start_ms = knode_now_ms();
    if (app_knode_check_config(cfg, err, sizeof(err)) < 0) {
        APP_LOG_ERR("kernel", "%s", err);
        return 1;
    }
    knode_build_redirect(n);
    app_kloop_env_init(&n->env, knode_mesh_level(cfg->log_level));
    n->loop = app_kloop_new(&n->env, &lerr);
    if (n->loop == NULL) {
        APP_LOG_ERR("kernel", "epoll: %s", strerror(-lerr));
        return 1;
    }
    app_kloop_set_mark(n->loop, APP_REDIRECT_MESH_MARK);

    if (mode == APP_KNODE_MESH) {
#if ZW_KERNEL_PROXY
        if (knode_proxy_start(n, err, sizeof(err)) < 0) {
            APP_LOG_ERR("kernel", "%s", err);
            goto out;
        }
#else
        APP_LOG_ERR("kernel", "this zwire was built without the mesh proxy; use --backend kernel-passthrough");
        goto out;
#endif
    }
    if (knode_listen(n, err, sizeof(err)) < 0) {
        APP_LOG_ERR("kernel", "%s", err);
        goto out;
    }
    knode_check_br_netfilter();
    if (app_redirect_install(&n->rcfg, err, sizeof(err)) < 0) {
        APP_LOG_ERR("kernel", "capture rules: %s", err);
        goto out;
    }
    n->rules_installed = true;

    routes = mgmt_routes_new(&merr);
    if (routes == NULL || knode_api_register(n, routes) < 0 ||
        (n->mesh != NULL && app_mesh_node_register_routes(&n->mesh, routes) < 0)) {
        APP_LOG_ERR("kernel", "cannot set up the management routes: %s", merr ? merr : "out of memory");
        goto out;
    }
    scfg.unix_path = cfg->mgmt.socket_path;
    scfg.tcp_listen = cfg->mgmt.metrics_listen;
    scfg.routes = routes;
    srv = mgmt_server_new(&scfg, &merr);
    if (srv == NULL) {
        APP_LOG_ERR("kernel", "management socket %s: %s", cfg->mgmt.socket_path, merr ? merr : "cannot listen");
        goto out;
    }
#if ZW_KERNEL_PROXY
    if (app_cfg_xds(cfg) != NULL && n->proxy != NULL) {
        n->istiod = app_istiod_new(&n->env, cfg, err, sizeof(err));
        if (n->istiod == NULL) {
            APP_LOG_ERR("kernel", "%s", err);
            goto out;
        }
        APP_LOG_INFO("kernel", "following istiod at %s (certificates from %s)", app_cfg_xds(cfg)->address,
                     app_istiod_certs(n->istiod) != NULL ? "the Istio CA" : "the local CA");
    }
#endif
    __atomic_store_n(&n->ready, 1, __ATOMIC_RELEASE);
    APP_LOG_INFO("kernel", "node %s ready (kernel backend, %s): listeners 15001/15006/15008, management socket %s",
                 cfg->node_name, knode_mode_name(mode), cfg->mgmt.socket_path);

    knode_serve(n, srv, stop, false);
    APP_LOG_INFO("kernel", "stopping (%s)", *stop ? strsignal(*stop) : "quitquitquit");
    __atomic_store_n(&n->ready, 0, __ATOMIC_RELEASE);
    knode_serve(n, srv, stop, true);
    rc = 0;
out:
    __atomic_store_n(&n->ready, 0, __ATOMIC_RELEASE);
    if (n->rules_installed) {
        if (app_redirect_remove(&n->rcfg, err, sizeof(err)) < 0) {
            APP_LOG_ERR("kernel", "removing the capture rules: %s", err);
            rc = 1;
        } else {
            APP_LOG_INFO("kernel", "capture rules removed");
        }
        n->rules_installed = false;
    }
    knode_close_listeners(n);
#if ZW_KERNEL_PROXY
    knode_proxy_stop(n); /* before the istiod link: the mesh side borrows its certificate manager */
    app_istiod_free(n->istiod);
    n->istiod = NULL;
#endif
    pass_abort_all(n);
    mgmt_server_free(srv);
    mgmt_routes_free(routes);
    app_kloop_free(n->loop);
    n->loop = NULL;
    return rc;
}
