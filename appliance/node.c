/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bring-up and teardown of the DPDK node (see node.h). Order: EAL -> mbuf pool -> ports -> routes -> lcores ->
 * launch; teardown runs in reverse. Every failure names what failed and leaves the node safe to app_node_fini().
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "appliance/forwarder.h"
#include "appliance/log.h"
#include "appliance/mesh_dpdk.h"
#include "appliance/mesh_node.h"
#include "appliance/config_mesh.h"
#include "appliance/config_xds.h"
#include "appliance/istiod.h"
#include "dpdk/classify.h"
#include "appliance/node.h"
#include "appliance/worker.h"
#include "dpdk/port.h"
#include "dpdk/stack.h"
#include "dpdk/tcp.h"

#define NODE_MBUF_CACHE 256
#define NODE_LINK_WAIT_MS 2000
#define NODE_ICMP_ERRORS_PER_S 1000

static struct app_worker_args worker_args[DP_MAX_LCORES];

static int node_argv_push(char ***argv, int *argc, int *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int node_argv_push(char ***argv, int *argc, int *cap, const char *fmt, ...)
{
    va_list ap;
    char *s;

    if (*argc + 1 >= *cap) {
        int ncap = *cap ? *cap * 2 : 32;
        char **n = realloc(*argv, sizeof(char *) * (size_t)ncap);
        if (n == NULL)
            return -ENOMEM;
        *argv = n;
        *cap = ncap;
    }
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (s == NULL)
        return -ENOMEM;
    (*argv)[(*argc)++] = s;
    (*argv)[*argc] = NULL;
    return 0;
}

static bool node_devargs_is_vdev(const char *devargs)
{
    return strncmp(devargs, "net_", 4) == 0 || strncmp(devargs, "eth_", 4) == 0;
}

static bool node_args_have_lcores(int n, char *const *args)
{
    for (int i = 0; i < n; i++)
        if (strcmp(args[i], "-l") == 0 || strcmp(args[i], "-c") == 0 || strncmp(args[i], "--lcores", 8) == 0)
            return true;
    return false;
}

int app_node_eal_args(const struct app_config *cfg, int n_cli, char **cli, char ***argv_out)
{
    const struct app_eal_config *eal = &cfg->eal;
    char **argv = NULL;
    int argc = 0, cap = 0, rc = 0;
    bool any_pci = false;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    rc |= node_argv_push(&argv, &argc, &cap, "zwire");
    rc |= node_argv_push(&argv, &argc, &cap, "--file-prefix=%s", eal->file_prefix);
    rc |= node_argv_push(&argv, &argc, &cap, "-m");
    rc |= node_argv_push(&argv, &argc, &cap, "%u", eal->memory_mb);
    if (eal->no_huge)
        rc |= node_argv_push(&argv, &argc, &cap, "--no-huge");
    rc |= node_argv_push(&argv, &argc, &cap, "--no-telemetry");
    for (int i = 0; i < cfg->n_ports; i++) {
        if (node_devargs_is_vdev(cfg->ports[i].devargs)) {
            rc |= node_argv_push(&argv, &argc, &cap, "--vdev=%s", cfg->ports[i].devargs);
        } else {
            rc |= node_argv_push(&argv, &argc, &cap, "-a");
            rc |= node_argv_push(&argv, &argc, &cap, "%s", cfg->ports[i].devargs);
            any_pci = true;
        }
    }
    if (!any_pci)
        rc |= node_argv_push(&argv, &argc, &cap, "--no-pci");
    if (!node_args_have_lcores(eal->n_extra, eal->extra) && !node_args_have_lcores(n_cli, cli)) {
        /* main lcore + one per worker, mapped onto the CPUs we have (several lcores may share one) */
        char map[256] = "";
        size_t off = 0;
        if (ncpu < 1)
            ncpu = 1;
        for (unsigned i = 0; i <= cfg->dataplane.workers && off < sizeof(map); i++)
            off += (size_t)snprintf(map + off, sizeof(map) - off, "%s%u@%ld", i ? "," : "", i, (long)i % ncpu);
        rc |= node_argv_push(&argv, &argc, &cap, "--lcores=%s", map);
    }
    for (int i = 0; i < eal->n_extra; i++)
        rc |= node_argv_push(&argv, &argc, &cap, "%s", eal->extra[i]);
    for (int i = 0; i < n_cli; i++)
        rc |= node_argv_push(&argv, &argc, &cap, "%s", cli[i]);
    if (rc != 0) {
        app_node_eal_args_free(argc, argv);
        return -ENOMEM;
    }
    *argv_out = argv;
    return argc;
}

void app_node_eal_args_free(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
}

static void node_port_from_config(struct dp_port *p, uint8_t index, const struct app_port_config *pc)
{
    memset(p, 0, sizeof(*p));
    p->index = index;
    p->role = pc->role == APP_PORT_FABRIC ? DP_PORT_FABRIC : DP_PORT_PODS;
    snprintf(p->name, sizeof(p->name), "%s", pc->name);
    p->addr = pc->address.addr;
    p->prefix_len = pc->address.len;
    p->mask = pc->address.len ? ~0u << (32 - pc->address.len) : 0;
    p->net = p->addr & p->mask;
    p->mtu = pc->mtu;
}

static void node_tcp_config(const struct app_tcp_config *in, struct dp_tcp_config *out)
{
    dp_tcp_config_defaults(out);
    out->max_conns = in->max_conns;
    out->buffer_mbufs = in->buffer_mbufs;
    out->sndbuf_max = in->sndbuf_bytes;
    out->rcvbuf_max = in->rcvbuf_bytes;
    out->syn_backlog = in->syn_backlog;
    out->cc = in->congestion == APP_TCP_CC_NEWRENO ? DP_TCP_CC_NEWRENO : DP_TCP_CC_CUBIC;
    out->sack = in->sack;
    out->timestamps = in->timestamps;
    out->window_scaling = in->window_scaling;
    out->rto_min_ms = in->rto_min_ms;
    out->time_wait_ms = in->time_wait_ms;
    out->delack_ms = in->delayed_ack_ms;
}

/* The mesh: snapshot, policies and certificates, the capture view, and a proxy on every worker. */
/* The proxies' on-demand lookup hook (any worker lcore): through the istiod link once the control thread set it. */
static enum mesh_proxy_lookup node_lookup(void *u, const struct mesh_addr *dst)
{
    struct app_node *node = u;
    struct app_istiod *x = __atomic_load_n(&node->istiod, __ATOMIC_ACQUIRE);
    return x != NULL ? app_istiod_lookup(x, dst) : MESH_LOOKUP_UNKNOWN;
}

static int node_mesh_start(struct app_node *node, const struct app_config *cfg, char *err, size_t errlen)
{
    struct dp_stack *st = &node->stack;
    uint32_t local[1024];
    size_t n_local;

    app_mesh_env_init(&node->mesh_env);
    node->mesh = app_mesh_node_new(cfg, &node->mesh_env, err, errlen);
    if (node->mesh == NULL)
        return -EINVAL;
    n_local = app_mesh_node_local_addresses(node->mesh, local, RTE_DIM(local));
    node->mesh_view = dp_mesh_view_new(local, (int)n_local, cfg->mesh->hbone_port, (int)rte_socket_id());
    if (node->mesh_view == NULL) {
        snprintf(err, errlen, "cannot build the capture table of %zu addresses", n_local);
        return -ENOMEM;
    }
    st->mesh = node->mesh_view;
    const struct app_xds_config *xc = app_cfg_xds(cfg);
    const struct app_mesh_lookup lookup = {xc != NULL && xc->on_demand ? node_lookup : NULL, node};
    for (int i = 0; i < st->n_lcores; i++) {
        node->mesh_lcores[i] = app_mesh_lcore_new(&node->lcores[i], node->mesh, &lookup, err, errlen);
        if (node->mesh_lcores[i] == NULL)
            return -EINVAL;
    }
    APP_LOG_INFO("node", "mesh on: %zu local workload addresses captured, HBONE on port %u", n_local,
                 cfg->mesh->hbone_port);
    return 0;
}

int app_node_start(struct app_node *node, const struct app_config *cfg, int argc, char **argv, char *err,
                   size_t errlen)
{
    const struct app_dataplane_config *dpc = &cfg->dataplane;
    struct dp_stack *st = &node->stack;
    struct dp_route_spec routes[APP_CONFIG_MAX_ROUTES];
    struct dp_tcp_config tcfg;
    unsigned worker, lcore_id;
    int rc;

    memset(node, 0, sizeof(*node));
    node->cfg = cfg;
    node->n_workers = dpc->workers;

    rc = rte_eal_init(argc, argv);
    if (rc < 0) {
        snprintf(err, errlen, "EAL init failed: %s", rte_strerror(rte_errno));
        return -rte_errno;
    }
    node->eal_up = true;
    if (rte_lcore_count() < node->n_workers + 1) {
        snprintf(err, errlen, "%u workers need %u lcores, EAL has %u (check eal.extra_args -l/--lcores)",
                 node->n_workers, node->n_workers + 1, rte_lcore_count());
        return -EINVAL;
    }

    st->pool = rte_pktmbuf_pool_create("zw_mbufs", dpc->mbufs, NODE_MBUF_CACHE, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                       (int)rte_socket_id());
    if (st->pool == NULL) {
        snprintf(err, errlen, "cannot create %u mbufs (eal.memory_mb = %u): %s", dpc->mbufs, cfg->eal.memory_mb,
                 rte_strerror(rte_errno));
        return -ENOMEM;
    }
    st->arp_timeout_ms = dpc->arp_timeout_s * 1000u;
    st->arp_pending_max = dpc->arp_pending_max;
    st->icmp_errors_per_s = NODE_ICMP_ERRORS_PER_S;

    st->n_ports = cfg->n_ports;
    for (int i = 0; i < cfg->n_ports; i++) {
        const struct app_port_config *pc = &cfg->ports[i];
        int port_id = dp_port_find(pc->devargs);
        if (port_id < 0) {
            snprintf(err, errlen, "%s:%d: port %s: no DPDK device for devargs \"%s\" (did the driver probe it?)",
                     cfg->path, pc->line, pc->name, pc->devargs);
            return -ENODEV;
        }
        node_port_from_config(&st->ports[i], (uint8_t)i, pc);
        rc = dp_port_start(&st->ports[i], (uint16_t)port_id, (uint16_t)node->n_workers, st->pool,
                           NODE_LINK_WAIT_MS, err, errlen);
        if (rc < 0)
            return rc;
        node->ports_started[i] = true;
        APP_LOG_INFO("node", "port %s (%s, ethdev %d) %02x:%02x:%02x:%02x:%02x:%02x mtu %u", pc->name,
                     app_port_role_name(pc->role), port_id, st->ports[i].mac.addr_bytes[0],
                     st->ports[i].mac.addr_bytes[1], st->ports[i].mac.addr_bytes[2], st->ports[i].mac.addr_bytes[3],
                     st->ports[i].mac.addr_bytes[4], st->ports[i].mac.addr_bytes[5], st->ports[i].mtu);
    }

    for (int i = 0; i < cfg->n_routes; i++)
        routes[i] = (struct dp_route_spec){
            .prefix = cfg->routes[i].prefix.addr, .len = cfg->routes[i].prefix.len, .via = cfg->routes[i].via};
    rc = dp_route_build(st, routes, cfg->n_routes, (int)rte_socket_id(), err, errlen);
    if (rc < 0)
        return rc;

    node_tcp_config(&cfg->tcp, &tcfg);
    node->lcores = rte_zmalloc("zw_lcores", sizeof(struct dp_lcore) * node->n_workers, RTE_CACHE_LINE_SIZE);
    if (node->lcores == NULL) {
        snprintf(err, errlen, "cannot allocate %u lcore contexts", node->n_workers);
        return -ENOMEM;
    }
    worker = 0;
    RTE_LCORE_FOREACH_WORKER(lcore_id) {
        if (worker == node->n_workers)
            break;
        rc = dp_lcore_init(&node->lcores[worker], st, lcore_id, worker, (int)rte_lcore_to_socket_id(lcore_id));
        if (rc == 0) {
            node->lcores[worker].now_ms = app_node_now_ms();
            rc = dp_tcp_init(&node->lcores[worker], &tcfg, (int)rte_lcore_to_socket_id(lcore_id));
            if (rc < 0)
                dp_lcore_fini(&node->lcores[worker]);
        }
        if (rc < 0) {
            snprintf(err, errlen,
                     "lcore %u: cannot allocate its tables (%s): tcp.max_conns = %u and tcp.buffer_mbufs = %u need "
                     "more than eal.memory_mb = %u",
                     lcore_id, strerror(-rc), cfg->tcp.max_conns, cfg->tcp.buffer_mbufs, cfg->eal.memory_mb);
            return rc;
        }
        st->lcores[worker] = &node->lcores[worker];
        st->n_lcores = (int)worker + 1;
        if (cfg->n_forwarders > 0) {
            node->forwarders[worker] = app_forwarder_new(&node->lcores[worker], cfg, cfg->tcp.max_conns / 2, &rc);
            if (node->forwarders[worker] == NULL) {
                snprintf(err, errlen, "lcore %u: cannot set up the forwarders (%s)", lcore_id, strerror(-rc));
                return rc;
            }
        }
        worker++;
    }
    if (cfg->mesh->present) {
        rc = node_mesh_start(node, cfg, err, errlen);
        if (rc < 0)
            return rc;
    }

    node->start_ms = app_node_now_ms();
    for (worker = 0; worker < node->n_workers; worker++) {
        worker_args[worker] = (struct app_worker_args){.node = node, .lcore = &node->lcores[worker]};
        rc = rte_eal_remote_launch(app_worker_main, &worker_args[worker], node->lcores[worker].lcore_id);
        if (rc != 0) {
            snprintf(err, errlen, "cannot launch worker on lcore %u", node->lcores[worker].lcore_id);
            app_node_stop(node);
            return -EBUSY;
        }
        node->running = true;
    }
    return 0;
}

void app_node_stop(struct app_node *node)
{
    if (!node->running)
        return;
    __atomic_store_n(&node->stop, 1, __ATOMIC_RELAXED);
    rte_eal_mp_wait_lcore();
    node->running = false;
}

/* EAL leaves its runtime directory (/var/run/dpdk/<file-prefix>) behind; a stopped node removes it. */
static void node_remove_runtime_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    rmdir(dir);
}

void app_node_fini(struct app_node *node)
{
    app_node_stop(node);
    for (int i = 0; i < node->stack.n_ports; i++) {
        if (node->ports_started[i]) {
            dp_port_stop(&node->stack.ports[i]);
            node->ports_started[i] = false;
        }
    }
    if (node->lcores != NULL) {
        for (int i = 0; i < node->stack.n_lcores; i++) {
            app_mesh_lcore_free(node->mesh_lcores[i]);
            node->mesh_lcores[i] = NULL;
            app_forwarder_free(node->forwarders[i]);
            node->forwarders[i] = NULL;
            dp_tcp_fini(&node->lcores[i]);
            dp_lcore_fini(&node->lcores[i]);
        }
        rte_free(node->lcores);
        node->lcores = NULL;
        node->stack.n_lcores = 0;
    }
    node->stack.mesh = NULL;
    dp_mesh_view_free(node->mesh_view);
    node->mesh_view = NULL;
    app_mesh_node_free(node->mesh);
    node->mesh = NULL;
    app_config_free(node->mesh_cfg);
    node->mesh_cfg = NULL;
    if (node->stack.lpm != NULL)
        dp_route_free(&node->stack);
    if (node->stack.pool != NULL) {
        rte_mempool_free(node->stack.pool);
        node->stack.pool = NULL;
    }
    if (node->eal_up) {
        char runtime_dir[PATH_MAX];
        snprintf(runtime_dir, sizeof(runtime_dir), "%s", rte_eal_get_runtime_dir());
        rte_eal_cleanup();
        node_remove_runtime_dir(runtime_dir);
        node->eal_up = false;
    }
}
