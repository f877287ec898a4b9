/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh on the DPDK path (see mesh_dpdk.h): captured connections go to the lcore's proxy with their original
 * addresses; the proxy dials through the same stack (HBONE from the pod's IP to <dst pod>:15008, or the pod itself
 * from the client's IP on the inbound side) and relays.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appliance/mesh_dpdk.h"
#include "appliance/mesh_node.h"
#include "dpdk/classify.h"
#include "dpdk/conn_dpdk.h"
#include "dpdk/dp.h"
#include "dpdk/tcp.h"
#include "mesh/metrics.h"
#include "mesh/proxy.h"

struct app_mesh_lcore {
    struct dp_lcore *lc;
    struct mesh_env env;
    struct mesh_metrics *metrics;
    struct mesh_proxy *proxy;
    uint64_t next_deadline_ns;
    uint64_t last_check_ns;
};

#define MESH_DPDK_DEADLINE_CHECK_NS 1000000ull

static struct mesh_addr mesh_dpdk_addr(uint32_t ip, uint16_t port)
{
    struct mesh_addr a = {.family = MESH_ADDR_V4, .port = htons(port)};
    uint32_t n = htonl(ip);
    memcpy(a.ip.v4, &n, 4);
    return a;
}

/* One accept callback for the three capture classes; ctx carries the class in its low bits. */
struct mesh_dpdk_capture {
    struct app_mesh_lcore *ml;
    enum dp_flow_class cls;
};

static bool mesh_dpdk_on_capture(void *ctx, struct mesh_conn *c)
{
    struct mesh_dpdk_capture *cap = ctx;
    struct app_mesh_lcore *ml = cap->ml;
    const struct mesh_conn_cb *cb = NULL;
    void *u = NULL;
    uint32_t lip, rip;
    uint16_t lport, rport;
    struct mesh_addr src, dst;
    int rc;

    dp_tcp_addrs(c, &lip, &lport, &rip, &rport);
    src = mesh_dpdk_addr(rip, rport);
    dst = mesh_dpdk_addr(lip, lport); /* transparent: our local address is the original destination */
    switch (cap->cls) {
    case DP_FLOW_OUTBOUND:
        rc = mesh_proxy_accept_outbound(ml->proxy, c, &src, &dst, &cb, &u);
        break;
    case DP_FLOW_INBOUND_HBONE:
        rc = mesh_proxy_accept_inbound_hbone(ml->proxy, c, &src, &dst, &cb, &u);
        break;
    default:
        rc = mesh_proxy_accept_inbound_plain(ml->proxy, c, &src, &dst, &cb, &u);
        break;
    }
    if (rc == 0)
        dp_tcp_set_callbacks(c, cb, u);
    /* on failure the proxy has already aborted c: it is handled either way */
    return true;
}

static struct mesh_dpdk_capture mesh_dpdk_captures[DP_MAX_LCORES][DP_FLOW_N_CLASSES];

struct app_mesh_lcore *app_mesh_lcore_new(struct dp_lcore *lc, struct app_mesh_node *mn,
                                          const struct app_mesh_lookup *lookup, char *err, size_t errlen)
{
    struct app_mesh_lcore *ml = calloc(1, sizeof(*ml));
    struct mesh_proxy_config pc = {0};
    const char *perr = NULL;

    if (ml == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ml->lc = lc;
    app_mesh_env_init(&ml->env);
    ml->metrics = mesh_metrics_new(&ml->env);
    if (ml->metrics == NULL) {
        snprintf(err, errlen, "out of memory");
        free(ml);
        return NULL;
    }
    app_mesh_node_proxy_config(mn, &pc);
    pc.metrics = ml->metrics;
    pc.lookup = lookup->fn;
    pc.lookup_u = lookup->u;
    ml->proxy = mesh_proxy_new(&ml->env, &dp_conn_ops, lc, &pc, &perr);
    if (ml->proxy == NULL) {
        snprintf(err, errlen, "mesh proxy: %s", perr ? perr : "cannot start");
        mesh_metrics_free(ml->metrics);
        free(ml);
        return NULL;
    }
    for (int cls = DP_FLOW_OUTBOUND; cls < DP_FLOW_N_CLASSES; cls++) {
        struct mesh_dpdk_capture *cap = &mesh_dpdk_captures[lc->worker][cls];
        *cap = (struct mesh_dpdk_capture){.ml = ml, .cls = (enum dp_flow_class)cls};
        dp_tcp_capture(lc, cls, NULL, mesh_dpdk_on_capture, cap);
    }
    return ml;
}

void app_mesh_lcore_free(struct app_mesh_lcore *ml)
{
    if (ml == NULL)
        return;
    for (int cls = DP_FLOW_OUTBOUND; cls < DP_FLOW_N_CLASSES; cls++)
        dp_tcp_capture(ml->lc, cls, NULL, NULL, NULL);
    mesh_proxy_free(ml->proxy);
    mesh_metrics_free(ml->metrics);
    free(ml);
}

void app_mesh_lcore_poll(struct app_mesh_lcore *ml)
{
    uint64_t now = mesh_env_now(&ml->env);

    /* The proxy's deadlines move with its traffic; asking it costs a scan, so ask at most once a millisecond. */
    if (now - ml->last_check_ns >= MESH_DPDK_DEADLINE_CHECK_NS) {
        ml->last_check_ns = now;
        ml->next_deadline_ns = mesh_proxy_next_deadline(ml->proxy);
    }
    if (now < ml->next_deadline_ns)
        return;
    mesh_proxy_on_deadline(ml->proxy, now);
    ml->next_deadline_ns = mesh_proxy_next_deadline(ml->proxy);
}

int app_mesh_lcore_merge_metrics(const struct app_mesh_lcore *ml, struct mesh_metrics *dst)
{
    return mesh_metrics_merge(dst, ml->metrics);
}

const struct mesh_proxy_stats *app_mesh_lcore_stats(const struct app_mesh_lcore *ml)
{
    return mesh_proxy_stats(ml->proxy);
}

size_t app_mesh_lcore_list(const struct app_mesh_lcore *ml, struct mesh_proxy_conn_view *out, size_t max)
{
    return mesh_proxy_list(ml->proxy, out, max);
}

int app_mesh_lcore_update(struct app_mesh_lcore *ml, struct app_mesh_node *mn)
{
    struct mesh_proxy_config pc = {0};
    struct mesh_proxy_update u;

    app_mesh_node_proxy_config(mn, &pc);
    u = (struct mesh_proxy_update){
        .workloads = pc.workloads,
        .mtls_mode = pc.mtls_mode,
        .replace_authz = true,
        .authz = pc.authz,
        .authz_u = pc.authz_u,
        .get_bundle_u = pc.get_bundle_u,
    };
    ml->next_deadline_ns = 0; /* the re-check pass continues from the proxy's deadlines */
    return mesh_proxy_update(ml->proxy, &u);
}
