/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's management endpoints: readiness, config and state dumps, stats, Prometheus metrics, log level and
 * graceful shutdown. Runs on the control thread only. Worker state is read two ways: counters and loop stats with
 * relaxed loads (they may lag by a burst), and tables (ARP) by an RPC that the worker runs between bursts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <rte_ethdev.h>
#include <rte_hash.h>

#include "appliance/forwarder.h"
#include "appliance/log.h"
#include "appliance/mesh_dpdk.h"
#include "appliance/mesh_node.h"
#include "mesh/metrics.h"
#include "mesh/spiffe.h"
#include "mesh/workload.h"
#include "appliance/config_put.h"
#include "appliance/config_xds.h"
#include "appliance/istiod.h"
#include "mesh/proxy.h"
#include "appliance/node_api.h"
#include "dpdk/stack.h"
#include "dpdk/tcp.h"
#include "mgmt/prom.h"

#define API_RPC_TIMEOUT_MS 500

/* ---- helpers ---- */

static uint64_t api_load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static const char *api_mac(const struct rte_ether_addr *mac, char *buf, size_t len)
{
    snprintf(buf, len, "%02x:%02x:%02x:%02x:%02x:%02x", mac->addr_bytes[0], mac->addr_bytes[1], mac->addr_bytes[2],
             mac->addr_bytes[3], mac->addr_bytes[4], mac->addr_bytes[5]);
    return buf;
}

static json_t *api_prefix(uint32_t addr, unsigned len)
{
    char ip[16];
    return json_sprintf("%s/%u", app_ipv4_format(addr, ip), len);
}

static json_t *api_ip(uint32_t addr)
{
    char ip[16];
    return json_string(app_ipv4_format(addr, ip));
}

/* ---- GET /healthz/ready ---- */

static void api_ready(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    (void)req;
    if (__atomic_load_n(&api->ready, __ATOMIC_ACQUIRE) && api->node->istiod != NULL &&
        !app_istiod_ready(api->node->istiod))
        mgmt_response_text(resp, 500, "not ready, pending: %s\n", app_istiod_pending(api->node->istiod));
    else if (__atomic_load_n(&api->ready, __ATOMIC_ACQUIRE))
        mgmt_response_text(resp, 200, "ready\n");
    else
        mgmt_response_text(resp, 500, "not ready, pending: dataplane\n");
}

/* ---- TCP usage (an RPC: only the owning lcore may walk its connection pool) ---- */

static void api_tcp_collect(struct dp_lcore *lc, void *arg)
{
    dp_tcp_usage(lc, arg);
}

static json_t *api_tcp_json(struct app_api *api)
{
    const struct app_node *node = api->node;
    json_t *lcores = json_array(), *sum = json_object();
    uint32_t total[DP_TCP_N_STATES] = {0};

    for (int i = 0; i < node->stack.n_lcores; i++) {
        struct dp_lcore *lc = &node->lcores[i];
        struct dp_tcp_usage *u = &api->tcp_usage[i];
        json_t *states = json_object();
        int rc = dp_lcore_rpc_call(lc, api_tcp_collect, u, API_RPC_TIMEOUT_MS);

        if (rc < 0) {
            APP_LOG_WARN("api", "lcore %u did not answer the TCP usage query (%s)", lc->lcore_id, strerror(-rc));
            json_decref(states);
            continue;
        }
        for (int st = 0; st < DP_TCP_N_STATES; st++) {
            total[st] += u->conns_by_state[st];
            if (u->conns_by_state[st])
                json_object_set_new(states, dp_tcp_state_name((enum dp_tcp_state)st),
                                    json_integer(u->conns_by_state[st]));
        }
        json_array_append_new(lcores, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "lcore",
                                                (json_int_t)lc->lcore_id, "conns_in_use", (json_int_t)u->conns_in_use,
                                                "conns_max", (json_int_t)u->conns_max, "timers_armed",
                                                (json_int_t)u->timers_armed, "buffer_mbufs_in_use",
                                                (json_int_t)u->buffer_mbufs_in_use, "listeners",
                                                (json_int_t)u->listeners, "states", states));
    }
    for (int st = 0; st < DP_TCP_N_STATES; st++)
        json_object_set_new(sum, dp_tcp_state_name((enum dp_tcp_state)st), json_integer(total[st]));
    return json_pack("{s:o, s:o}", "states", sum, "lcores", lcores);
}

static json_t *api_forwarders_json(const struct app_node *node)
{
    struct app_forwarder_stats sum = {0}, one;
    uint64_t *acc = (uint64_t *)&sum;

    for (int i = 0; i < node->stack.n_lcores; i++) {
        const uint64_t *v = (const uint64_t *)&one;
        if (node->forwarders[i] == NULL)
            continue;
        app_forwarder_stats(node->forwarders[i], &one);
        for (size_t k = 0; k < sizeof(one) / sizeof(uint64_t); k++)
            acc[k] += v[k];
    }
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "accepted", (json_int_t)sum.accepted, "refused",
                     (json_int_t)sum.refused, "upstream_failed", (json_int_t)sum.upstream_failed, "completed",
                     (json_int_t)sum.completed, "reset", (json_int_t)sum.reset, "active", (json_int_t)sum.active,
                     "bytes_to_target", (json_int_t)sum.bytes_to_target, "bytes_to_client",
                     (json_int_t)sum.bytes_to_client);
}

/* ---- GET /stats ---- */

static json_t *api_port_stats(const struct dp_port *p)
{
    struct rte_eth_stats s;
    struct rte_eth_link link;
    char mac[18];

    memset(&s, 0, sizeof(s));
    rte_eth_stats_get(p->port_id, &s);
    memset(&link, 0, sizeof(link));
    rte_eth_link_get_nowait(p->port_id, &link);
    return json_pack("{s:s, s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "name", p->name, "port_id",
                     (json_int_t)p->port_id, "role", p->role == DP_PORT_FABRIC ? "fabric" : "pods", "mac",
                     api_mac(&p->mac, mac, sizeof(mac)), "link", link.link_status ? "up" : "down", "rx_packets",
                     (json_int_t)s.ipackets, "tx_packets", (json_int_t)s.opackets, "rx_bytes", (json_int_t)s.ibytes,
                     "tx_bytes", (json_int_t)s.obytes, "rx_missed", (json_int_t)s.imissed, "rx_errors",
                     (json_int_t)s.ierrors, "tx_errors", (json_int_t)s.oerrors);
}

static json_t *api_counters(const struct dp_lcore *lcores, int n)
{
    json_t *o = json_object();
    for (int c = 0; c < DP_CNT_MAX; c++) {
        uint64_t sum = 0;
        for (int i = 0; i < n; i++)
            sum += dp_counter_read(&lcores[i], (enum dp_counter)c);
        json_object_set_new(o, dp_counter_name((enum dp_counter)c), json_integer((json_int_t)sum));
    }
    return o;
}

static void api_stats(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    const struct app_node *node = api->node;
    json_t *root, *ports, *lcores, *by_lcore;
    (void)req;

    ports = json_array();
    for (int i = 0; i < node->stack.n_ports; i++)
        json_array_append_new(ports, api_port_stats(&node->stack.ports[i]));
    lcores = json_array();
    by_lcore = json_array();
    for (int i = 0; i < node->stack.n_lcores; i++) {
        const struct dp_lcore *lc = &node->lcores[i];
        json_array_append_new(lcores, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "lcore", (json_int_t)lc->lcore_id,
                                                "worker", (json_int_t)lc->worker, "rx_packets",
                                                (json_int_t)api_load(&lc->stats.rx_packets), "tx_packets",
                                                (json_int_t)api_load(&lc->stats.tx_packets), "polls",
                                                (json_int_t)api_load(&lc->stats.polls), "idle_sleeps",
                                                (json_int_t)api_load(&lc->stats.idle_sleeps)));
        json_array_append_new(by_lcore, json_pack("{s:I, s:o}", "lcore", (json_int_t)lc->lcore_id, "counters",
                                                  api_counters(lc, 1)));
    }
    root = json_pack("{s:s, s:I, s:o, s:o, s:o, s:o, s:o}", "node", node->cfg->node_name, "uptime_s",
                     (json_int_t)((app_node_now_ms() - node->start_ms) / 1000), "ports", ports, "lcores", lcores,
                     "counters", api_counters(node->lcores, node->stack.n_lcores), "counters_by_lcore", by_lcore,
                     "tcp", api_tcp_json(api));
    if (node->cfg->n_forwarders > 0)
        json_object_set_new(root, "forwarders", api_forwarders_json(node));
    mgmt_response_json(resp, 200, root);
}

/* ---- the mesh: Istio metrics merged from every lcore, workloads and certificates ---- */

struct api_merge {
    const struct app_mesh_lcore *ml;
    struct mesh_metrics *dst;
    int rc;
};

static void api_merge_on_lcore(struct dp_lcore *lc, void *arg)
{
    struct api_merge *m = arg;
    (void)lc;
    m->rc = app_mesh_lcore_merge_metrics(m->ml, m->dst);
}

static void api_metrics_istio(struct app_api *api, struct mgmt_prom *prom)
{
    const struct app_node *node = api->node;
    struct mesh_metrics *sum = mesh_metrics_new(&api->node->mesh_env);

    if (sum == NULL)
        return;
    for (int i = 0; i < node->stack.n_lcores; i++) {
        /* static: a timed-out call may still run later, after this function returned */
        static struct api_merge merges[DP_MAX_LCORES];
        if (node->mesh_lcores[i] == NULL)
            continue;
        merges[i] = (struct api_merge){.ml = node->mesh_lcores[i], .dst = sum};
        if (dp_lcore_rpc_call(&node->lcores[i], api_merge_on_lcore, &merges[i], API_RPC_TIMEOUT_MS) < 0) {
            APP_LOG_WARN("api", "lcore %u did not answer the metrics query; Istio metrics left out",
                         node->lcores[i].lcore_id);
            return; /* sum may still be written by the late call: leak it rather than free it under its feet */
        }
    }
    app_mesh_metrics_render(prom, sum);
    mesh_metrics_free(sum);
}


/* ---- GET /tcp/connections: every connection block of every lcore ---- */

#define API_TCP_LIST_MAX 4096

struct api_tcp_list {
    size_t n;
    struct dp_tcp_conn_info conns[API_TCP_LIST_MAX];
};

static void api_tcp_list_on_lcore(struct dp_lcore *lc, void *arg)
{
    struct api_tcp_list *l = arg;
    l->n = dp_tcp_list(lc, l->conns, API_TCP_LIST_MAX);
}

static void api_tcp_connections(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    const struct app_node *node = api->node;
    json_t *arr = json_array();
    (void)req;

    for (int i = 0; i < node->stack.n_lcores; i++) {
        struct dp_lcore *lc = &node->lcores[i];
        struct api_tcp_list *l = &api->tcp_lists[i];
        char a[16], b[16];
        if (dp_lcore_rpc_call(lc, api_tcp_list_on_lcore, l, API_RPC_TIMEOUT_MS) < 0)
            continue;
        for (size_t k = 0; k < l->n; k++) {
            const struct dp_tcp_conn_info *c = &l->conns[k];
            json_array_append_new(
                arr, json_pack("{s:I, s:s, s:I, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                               "s:I, s:I, s:b}",
                               "lcore", (json_int_t)lc->lcore_id, "local", app_ipv4_format(c->local_ip, a),
                               "local_port", (json_int_t)c->local_port, "remote", app_ipv4_format(c->remote_ip, b),
                               "remote_port", (json_int_t)c->remote_port, "state",
                               dp_tcp_state_name((enum dp_tcp_state)c->state), "snd_una", (json_int_t)c->snd_una,
                               "snd_nxt", (json_int_t)c->snd_nxt, "snd_max", (json_int_t)c->snd_max, "snd_queued",
                               (json_int_t)c->snd_queued, "snd_wnd", (json_int_t)c->snd_wnd, "cwnd",
                               (json_int_t)c->cwnd, "ssthresh", (json_int_t)c->ssthresh, "rcv_queued",
                               (json_int_t)c->rcv_queued, "rcv_ooo", (json_int_t)c->rcv_ooo, "rcv_space",
                               (json_int_t)c->rcv_space, "srtt_us", (json_int_t)c->srtt_us, "rto_ms",
                               (json_int_t)c->rto_ms, "flags", (json_int_t)c->flags, "owned", c->owned));
        }
    }
    mgmt_response_json(resp, 200, arr);
}

/* ---- GET /connections: the live proxied connections of every lcore ---- */

#define API_CONN_LIST_MAX 1024

struct api_conn_list {
    const struct app_mesh_lcore *ml;
    size_t n;
    struct mesh_proxy_conn_view v[API_CONN_LIST_MAX];
};

static void api_conn_list_on_lcore(struct dp_lcore *lc, void *arg)
{
    struct api_conn_list *l = arg;
    (void)lc;
    l->n = l->ml != NULL ? app_mesh_lcore_list(l->ml, l->v, API_CONN_LIST_MAX) : 0;
}

static void api_connections(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    const struct app_node *node = api->node;
    json_t *arr = json_array();
    struct timespec ts;
    (void)req;

    clock_gettime(CLOCK_REALTIME, &ts); /* the mesh env's clock */
    for (int i = 0; i < node->stack.n_lcores; i++) {
        struct api_conn_list *l = &api->conn_lists[i];
        l->ml = node->mesh_lcores[i];
        if (l->ml == NULL || dp_lcore_rpc_call(&node->lcores[i], api_conn_list_on_lcore, l, API_RPC_TIMEOUT_MS) < 0)
            continue;
        for (size_t k = 0; k < l->n; k++)
            json_array_append_new(arr, app_mesh_conn_view_json(&l->v[k], (int)node->lcores[i].lcore_id,
                                                               (uint64_t)ts.tv_sec * 1000000000ull +
                                                                   (uint64_t)ts.tv_nsec));
    }
    mgmt_response_json(resp, 200, arr);
}

/* ---- GET /config_dump ---- */

struct api_arp_snapshot {
    unsigned n;
    struct dp_arp_entry entries[DP_ARP_ENTRIES];
};

/* Runs on the worker: copy its neighbour table. */
static void api_arp_collect(struct dp_lcore *lc, void *arg)
{
    struct api_arp_snapshot *snap = arg;
    const void *key;
    void *data;
    uint32_t iter = 0;
    int32_t pos;

    snap->n = 0;
    while ((pos = rte_hash_iterate(lc->arp.index, &key, &data, &iter)) >= 0 && snap->n < DP_ARP_ENTRIES)
        snap->entries[snap->n++] = lc->arp.entries[pos];
}

static json_t *api_arp_table(struct app_api *api)
{
    const struct app_node *node = api->node;
    uint64_t now = app_node_now_ms();
    json_t *arr = json_array();

    for (int i = 0; i < node->stack.n_lcores; i++) {
        struct dp_lcore *lc = &node->lcores[i];
        struct api_arp_snapshot *snap = &api->arp_snaps[i];
        char mac[18];
        int rc = dp_lcore_rpc_call(lc, api_arp_collect, snap, API_RPC_TIMEOUT_MS);

        if (rc < 0) {
            APP_LOG_WARN("api", "lcore %u did not answer the ARP dump (%s)", lc->lcore_id, strerror(-rc));
            continue;
        }
        for (unsigned e = 0; e < snap->n; e++) {
            const struct dp_arp_entry *ent = &snap->entries[e];
            bool reachable = ent->state == DP_ARP_REACHABLE;
            json_array_append_new(
                arr, json_pack("{s:o, s:s, s:s, s:s, s:I, s:I}", "ip", api_ip(ent->ip), "mac",
                               reachable ? api_mac(&ent->mac, mac, sizeof(mac)) : "", "port",
                               node->stack.ports[ent->port].name, "state", reachable ? "reachable" : "incomplete",
                               "age_s", (json_int_t)(reachable ? (now - ent->updated_ms) / 1000 : 0), "lcore",
                               (json_int_t)lc->lcore_id));
        }
    }
    return arr;
}

static json_t *api_config_json(const struct app_config *cfg)
{
    json_t *ports = json_array(), *routes = json_array(), *extra = json_array();
    char ip[16];

    for (int i = 0; i < cfg->n_ports; i++) {
        const struct app_port_config *p = &cfg->ports[i];
        json_array_append_new(ports, json_pack("{s:s, s:s, s:s, s:o, s:I}", "name", p->name, "role",
                                               app_port_role_name(p->role), "devargs", p->devargs, "address",
                                               api_prefix(p->address.addr, p->address.len), "mtu", (json_int_t)p->mtu));
    }
    for (int i = 0; i < cfg->n_routes; i++)
        json_array_append_new(routes, json_pack("{s:o, s:s}", "prefix",
                                                api_prefix(cfg->routes[i].prefix.addr, cfg->routes[i].prefix.len),
                                                "via", app_ipv4_format(cfg->routes[i].via, ip)));
    for (int i = 0; i < cfg->eal.n_extra; i++)
        json_array_append_new(extra, json_string(cfg->eal.extra[i]));
    return json_pack(
        "{s:s, s:{s:s}, s:o, s:o, s:{s:I, s:I, s:I, s:{s:b, s:I, s:I}, s:{s:I, s:I}}, s:{s:s, s:I, s:b, s:o},"
        " s:{s:s, s:s?}, s:{s:s}}",
        "path", cfg->path, "node", "name", cfg->node_name, "ports", ports, "routes", routes, "dataplane", "workers",
        (json_int_t)cfg->dataplane.workers, "mbufs", (json_int_t)cfg->dataplane.mbufs, "rx_burst",
        (json_int_t)cfg->dataplane.rx_burst, "idle_backoff", "enabled", cfg->dataplane.backoff.enabled, "empty_polls",
        (json_int_t)cfg->dataplane.backoff.empty_polls, "sleep_us", (json_int_t)cfg->dataplane.backoff.sleep_us, "arp",
        "timeout_s", (json_int_t)cfg->dataplane.arp_timeout_s, "pending_max",
        (json_int_t)cfg->dataplane.arp_pending_max, "eal", "file_prefix", cfg->eal.file_prefix, "memory_mb",
        (json_int_t)cfg->eal.memory_mb, "no_huge", cfg->eal.no_huge, "extra_args", extra, "mgmt", "socket",
        cfg->mgmt.socket_path, "metrics_listen", cfg->mgmt.metrics_listen, "log", "level",
        app_log_level_name(app_log_get_level()));
}

static void api_config_dump(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    const struct app_node *node = api->node;
    const struct dp_stack *st = &node->stack;
    json_t *ports = json_array(), *routes = json_array(), *root;
    char mac[18];
    (void)req;

    for (int i = 0; i < st->n_ports; i++) {
        const struct dp_port *p = &st->ports[i];
        json_array_append_new(ports, json_pack("{s:s, s:s, s:s, s:o, s:s, s:I, s:I}", "name", p->name, "role",
                                               p->role == DP_PORT_FABRIC ? "fabric" : "pods", "devargs",
                                               node->cfg->ports[i].devargs, "address",
                                               api_prefix(p->addr, p->prefix_len), "mac",
                                               api_mac(&p->mac, mac, sizeof(mac)), "port_id", (json_int_t)p->port_id,
                                               "mtu", (json_int_t)p->mtu));
    }
    for (int i = 0; i < st->n_routes; i++) {
        const struct dp_route_entry *r = &st->routes[i];
        const struct dp_nexthop *nh = &st->nexthops[r->nexthop];
        json_array_append_new(routes, json_pack("{s:o, s:o, s:s, s:s}", "prefix", api_prefix(r->prefix, r->len),
                                                "via", nh->gateway ? api_ip(nh->gateway) : json_null(), "port",
                                                st->ports[nh->port].name, "type",
                                                r->connected ? "connected" : "static"));
    }
    root = json_pack("{s:{s:s, s:s}, s:o, s:o, s:o, s:o}", "node", "name", node->cfg->node_name, "version", ZW_VERSION,
                     "config", api_config_json(node->cfg), "ports", ports, "routes", routes, "arp",
                     api_arp_table(api));
    if (node->mesh != NULL)
        json_object_update_new(root, app_mesh_node_dump_json(node->mesh));
    if (node->istiod != NULL)
        json_object_set_new(root, "xds", app_istiod_dump_json(node->istiod));
    mgmt_response_json(resp, 200, root);
}

/* ---- GET /metrics ---- */

static void api_metrics(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    const struct app_node *node = api->node;
    enum mgmt_prom_format fmt = mgmt_prom_format_from_accept(req->accept);
    struct mgmt_prom *prom;
    const char *perr = NULL, *data;
    size_t len;

    prom = mgmt_prom_new(fmt, &perr);
    if (prom == NULL) {
        mgmt_response_text(resp, 500, "metrics: %s\n", perr ? perr : "out of memory");
        return;
    }
    {
        struct mgmt_prom_label l[] = {{"version", ZW_VERSION}, {"node", node->cfg->node_name}};
        mgmt_prom_family(prom, "zwire_build_info", MGMT_PROM_GAUGE, "zwire build and node identity");
        mgmt_prom_sample_u64(prom, l, 2, 1);
    }
    mgmt_prom_family(prom, "zwire_uptime_seconds", MGMT_PROM_GAUGE, "seconds since the data plane started");
    mgmt_prom_sample_u64(prom, NULL, 0, (app_node_now_ms() - node->start_ms) / 1000);

    mgmt_prom_family(prom, "zwire_dataplane_events_total", MGMT_PROM_COUNTER,
                     "packets and events of the data plane, by reason (see /stats for descriptions)");
    for (int c = 0; c < DP_CNT_MAX; c++) {
        uint64_t sum = 0;
        struct mgmt_prom_label l[] = {{"event", dp_counter_name((enum dp_counter)c)}};
        for (int i = 0; i < node->stack.n_lcores; i++)
            sum += dp_counter_read(&node->lcores[i], (enum dp_counter)c);
        mgmt_prom_sample_u64(prom, l, 1, sum);
    }

    static const struct {
        const char *name, *help;
        size_t offset;
    } port_stats[] = {
        {"zwire_port_rx_packets_total", "frames received by the port", offsetof(struct rte_eth_stats, ipackets)},
        {"zwire_port_tx_packets_total", "frames sent by the port", offsetof(struct rte_eth_stats, opackets)},
        {"zwire_port_rx_bytes_total", "bytes received by the port", offsetof(struct rte_eth_stats, ibytes)},
        {"zwire_port_tx_bytes_total", "bytes sent by the port", offsetof(struct rte_eth_stats, obytes)},
        {"zwire_port_rx_missed_total", "frames the port dropped for lack of room", offsetof(struct rte_eth_stats, imissed)},
    };
    struct rte_eth_stats ps[DP_MAX_PORTS];
    for (int i = 0; i < node->stack.n_ports; i++) {
        memset(&ps[i], 0, sizeof(ps[i]));
        rte_eth_stats_get(node->stack.ports[i].port_id, &ps[i]);
    }
    for (size_t k = 0; k < RTE_DIM(port_stats); k++) {
        mgmt_prom_family(prom, port_stats[k].name, MGMT_PROM_COUNTER, port_stats[k].help);
        for (int i = 0; i < node->stack.n_ports; i++) {
            struct mgmt_prom_label l[] = {{"port", node->stack.ports[i].name}};
            mgmt_prom_sample_u64(prom, l, 1, *(const uint64_t *)((const char *)&ps[i] + port_stats[k].offset));
        }
    }

    mgmt_prom_family(prom, "zwire_lcore_polls_total", MGMT_PROM_COUNTER, "poll loop iterations per worker lcore");
    for (int i = 0; i < node->stack.n_lcores; i++) {
        char id[16];
        struct mgmt_prom_label l[] = {{"lcore", id}};
        snprintf(id, sizeof(id), "%u", node->lcores[i].lcore_id);
        mgmt_prom_sample_u64(prom, l, 1, api_load(&node->lcores[i].stats.polls));
    }
    mgmt_prom_family(prom, "zwire_lcore_idle_sleeps_total", MGMT_PROM_COUNTER,
                     "idle back-off sleeps per worker lcore");
    for (int i = 0; i < node->stack.n_lcores; i++) {
        char id[16];
        struct mgmt_prom_label l[] = {{"lcore", id}};
        snprintf(id, sizeof(id), "%u", node->lcores[i].lcore_id);
        mgmt_prom_sample_u64(prom, l, 1, api_load(&node->lcores[i].stats.idle_sleeps));
    }

    if (node->mesh != NULL)
        api_metrics_istio(api, prom);
    if (node->istiod != NULL)
        app_istiod_metrics_render(prom, node->istiod);
    if (mgmt_prom_finish(prom) < 0) {
        mgmt_response_text(resp, 500, "metrics: out of memory\n");
    } else {
        data = mgmt_prom_data(prom, &len);
        mgmt_response_set_body(resp, 200, mgmt_prom_content_type(fmt), data, len);
    }
    mgmt_prom_free(prom);
}

/* ---- POST /logging ---- */

static void api_logging(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    const char *level = mgmt_request_query_get(req, "level");
    enum app_log_level l;
    (void)ctx;

    if (level != NULL) {
        const char *colon = strrchr(level, ':'); /* "module:level" sets the one level we have */
        if (app_log_level_parse(colon ? colon + 1 : level, &l) < 0) {
            mgmt_response_text(resp, 400,
                               "invalid level \"%s\": use one of off, error, warn, info, debug, trace\n", level);
            return;
        }
        app_log_set_level(l);
        APP_LOG_INFO("api", "log level set to %s", app_log_level_name(l));
    } else if (mgmt_request_query_get(req, "reset") != NULL) {
        app_log_set_level(APP_LOG_INFO);
    }
    mgmt_response_text(resp, 200, "current log level is %s\n", app_log_level_name(app_log_get_level()));
}

/* ---- PUT /config: the whole config file in the body; the mesh sections apply live ---- */

static void api_put_config(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    struct app_config *next = app_config_from_put(req, resp, true);
    char err[512];
    int rc;

    if (next == NULL)
        return;
    rc = app_node_reload(api->node, next, err, sizeof(err));
    if (rc < 0 && rc != -ETIMEDOUT) {
        app_config_free(next);
        mgmt_response_text(resp, rc == -EPERM ? 409 : 400, "configuration refused, nothing changed: %s\n", err);
        return;
    }
    if (rc == -ETIMEDOUT) {
        mgmt_response_text(resp, 503, "%s\n", err);
        return;
    }
    mgmt_response_json(resp, 200,
                       json_pack("{s:s, s:I, s:I, s:I}", "status", "applied", "workloads",
                                 (json_int_t)mesh_workloads_count(app_mesh_node_workloads(api->node->mesh)), "services",
                                 (json_int_t)mesh_workloads_service_count(app_mesh_node_workloads(api->node->mesh)),
                                 "policies", (json_int_t)mesh_authz_set_count(app_mesh_node_authz(api->node->mesh))));
}

/* ---- POST /quitquitquit ---- */

static void api_quit(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct app_api *api = ctx;
    (void)req;
    APP_LOG_INFO("api", "shutdown requested through the management socket");
    __atomic_store_n(&api->quit, 1, __ATOMIC_RELEASE);
    mgmt_response_text(resp, 200, "shutdown now\n");
}

int app_api_register(struct app_api *api, struct mgmt_routes *routes)
{
    int rc = 0;

    api->arp_snaps = calloc(DP_MAX_LCORES, sizeof(*api->arp_snaps));
    api->tcp_usage = calloc(DP_MAX_LCORES, sizeof(*api->tcp_usage));
    api->tcp_lists = calloc(DP_MAX_LCORES, sizeof(*api->tcp_lists));
    api->conn_lists = calloc(DP_MAX_LCORES, sizeof(*api->conn_lists));
    if (api->arp_snaps == NULL || api->tcp_usage == NULL || api->tcp_lists == NULL || api->conn_lists == NULL)
        return -ENOMEM;
    rc |= mgmt_routes_add(routes, "GET", "/healthz/ready", api_ready, api, "200 once the data plane runs",
                          MGMT_ROUTE_TCP);
    rc |= mgmt_routes_add(routes, "GET", "/config_dump", api_config_dump, api,
                          "effective config, ports, routes and the ARP table (JSON)", 0);
    rc |= mgmt_routes_add(routes, "GET", "/stats", api_stats, api,
                          "per port, per lcore and per drop reason counters (JSON)", 0);
    rc |= mgmt_routes_add(routes, "GET", "/metrics", api_metrics, api, "Prometheus metrics", MGMT_ROUTE_TCP);
    rc |= mgmt_routes_add(routes, "GET", "/stats/prometheus", api_metrics, api, "Prometheus metrics (alias)",
                          MGMT_ROUTE_TCP | MGMT_ROUTE_HIDDEN);
    rc |= mgmt_routes_add(routes, "POST", "/logging", api_logging, api,
                          "show or set the log level: ?level=error|warn|info|debug", 0);
    rc |= mgmt_routes_add(routes, "POST", "/quitquitquit", api_quit, api, "drain and exit", 0);
    rc |= mgmt_routes_add(routes, "GET", "/connections", api_connections, api,
                          "live proxied connections: lcore, direction, addresses, identities, bytes, age (JSON)", 0);
    rc |= mgmt_routes_add(routes, "GET", "/tcp/connections", api_tcp_connections, api,
                          "every TCP connection block: state, sequence, windows, queues (JSON)", 0);
    rc |= mgmt_routes_add(routes, "PUT", "/config", api_put_config, api,
                          "apply a new config file (body): mesh, workloads, services and policies change live", 0);
    return rc < 0 ? -EINVAL : 0;
}

void app_api_fini(struct app_api *api)
{
    /* Safe only once the workers have stopped: a timed-out ARP dump may still be writing otherwise. */
    free(api->arp_snaps);
    api->arp_snaps = NULL;
    free(api->tcp_usage);
    api->tcp_usage = NULL;
    free(api->tcp_lists);
    api->tcp_lists = NULL;
    free(api->conn_lists);
    api->conn_lists = NULL;
}
