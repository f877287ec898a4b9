/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zwire's composition root: arguments -> config -> EAL and the data plane -> management socket -> the control
 * loop on the main lcore -> teardown in reverse. The only place that may exit, and only before the loop starts.
 *
 *   zwire --config FILE [-- EAL args]    run a node
 *   zwire --config FILE --backend kernel|kernel-passthrough   run a node on Linux sockets (no EAL)
 *   zwire --check-config FILE            validate FILE: exit 0, or 2 printing "FILE:LINE: ..." per error
 *   zwire --version
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "appliance/config.h"
#include "appliance/config_xds.h"
#include "appliance/kernel_node.h"
#include "appliance/log.h"
#include "appliance/mesh_node.h"
#ifdef ZW_HAVE_DPDK
#include "appliance/node.h"
#include "appliance/node_api.h"
#include "appliance/istiod.h"
#include "mesh/xds_convert.h"
#endif
#include "mgmt/routes.h"
#include "mgmt/server.h"

#define MAIN_POLL_MS 100
#define MAIN_XDS_POLL_MS 5
#define MAIN_DRAIN_MS 500

static volatile sig_atomic_t main_signalled;

static void main_on_signal(int sig)
{
    main_signalled = sig;
}

static void main_usage(FILE *out)
{
    fprintf(out, "usage: zwire --config FILE [-- EAL-ARGS...]\n"
                 "       zwire --config FILE --backend kernel|kernel-passthrough|dpdk\n"
                 "       zwire --check-config FILE\n"
                 "       zwire --version\n"
                 "Runs a zwire mesh node. See examples/zwire.cfg for the configuration file.\n");
}

static struct app_config *main_load_config(const char *path, bool node_runs_xds)
{
    struct app_config_errors errs = {0};
    struct app_config *cfg = app_config_load(path, &errs);

    if (cfg == NULL)
        app_config_errors_print(&errs, stderr);
    app_config_errors_fini(&errs);
    const char *why = cfg != NULL ? app_cfg_xds_node_unsupported(cfg, node_runs_xds) : NULL;
    if (why != NULL) {
        fprintf(stderr, "%s: %s\n", path, why);
        app_config_free(cfg);
        return NULL;
    }
    return cfg;
}

static int main_check_config(const char *path)
{
    struct app_config *cfg = main_load_config(path, true);
    if (cfg == NULL)
        return 2;
    printf("%s: ok (node %s, %d ports, %d routes, %u workers)\n", path, cfg->node_name, cfg->n_ports,
           cfg->n_routes, cfg->dataplane.workers);
    app_config_free(cfg);
    return 0;
}

static volatile sig_atomic_t main_reload_requested;

static void main_on_sighup(int sig)
{
    (void)sig;
    main_reload_requested = 1;
}

static void main_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = main_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = main_on_sighup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The kernel path: no EAL; the node runs on this thread until a signal or /quitquitquit. */
static int main_run_kernel(const char *path, enum app_knode_mode mode)
{
    struct app_config *cfg = main_load_config(path, mode == APP_KNODE_MESH && app_knode_has_proxy());
    int rc;

    if (cfg == NULL)
        return 2;
    app_log_set_level(cfg->log_level);
    main_install_signals();
    rc = app_knode_run(cfg, mode, &main_signalled);
    app_config_free(cfg);
    return rc;
}

#ifdef ZW_HAVE_DPDK
/* SIGHUP: read the config file again and apply what may change live. */
static void main_reload_file(struct app_node *node)
{
    struct app_config *next = main_load_config(node->cfg->path, true);
    char err[512];
    int rc;

    if (next == NULL) {
        APP_LOG_ERR("reload", "%s refused (errors above); nothing changed", node->cfg->path);
        return;
    }
    rc = app_node_reload(node, next, err, sizeof(err));
    if (rc < 0 && rc != -ETIMEDOUT) {
        app_config_free(next);
        APP_LOG_ERR("reload", "%s refused: %s", node->cfg->path, err);
    }
}

/* Let the istiod link read and write, then apply the snapshot it received last. */
static void main_istiod_step(struct app_node *node)
{
    struct pollfd fds[APP_ISTIOD_MAX_FDS];
    int n = app_istiod_fds(node->istiod, fds, APP_ISTIOD_MAX_FDS);
    const struct mesh_xds_state *st;
    char err[512];

    if (n > 0 && poll(fds, (nfds_t)n, 0) < 0)
        n = 0;
    app_istiod_process(node->istiod, fds, (unsigned)(n > 0 ? n : 0));
    st = app_istiod_take_snapshot(node->istiod);
    if (st != NULL) {
        if (app_node_apply_xds(node, st, err, sizeof(err)) < 0)
            APP_LOG_ERR("xds", "snapshot %llu not applied: %s", (unsigned long long)st->generation, err);
        mesh_xds_state_unref(st);
    }
}

/* The control loop: serve the management socket (and istiod) until a signal or /quitquitquit, then let replies
 * drain. With istiod, the loop wakes at least every MAIN_XDS_POLL_MS to serve the agent's socket. */
static void main_control_loop(struct mgmt_server *srv, struct app_api *api)
{
    struct timespec start, now;
    time_t last_rotation_check = 0;

    while (!main_signalled && !__atomic_load_n(&api->quit, __ATOMIC_ACQUIRE)) {
        int wait = MAIN_POLL_MS;
        if (api->node->istiod != NULL) {
            int t = app_istiod_timeout_ms(api->node->istiod);
            wait = t >= 0 && t < MAIN_XDS_POLL_MS ? t : MAIN_XDS_POLL_MS;
        }
        mgmt_server_poll(srv, wait);
        if (api->node->istiod != NULL)
            main_istiod_step(api->node);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec != last_rotation_check) {
            char err[512];
            last_rotation_check = now.tv_sec;
            if (app_node_rotate_certs(api->node, err, sizeof(err)) < 0)
                APP_LOG_ERR("mesh", "certificate rotation failed (retried in 1 s): %s", err);
        }
        if (main_reload_requested) {
            main_reload_requested = 0;
            main_reload_file(api->node);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        mgmt_server_poll(srv, 10);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (mgmt_server_clients(srv) > 0 &&
             (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < MAIN_DRAIN_MS);
}

static int main_run(const char *path, int n_cli, char **cli)
{
    static struct app_node node;
    struct app_api api = {.node = &node};
    struct mgmt_server_config scfg = {0};
    struct mgmt_routes *routes = NULL;
    struct mgmt_server *srv = NULL;
    struct app_config *cfg;
    const char *merr = NULL;
    char **eal_argv = NULL;
    char err[512];
    int eal_argc = 0, rc = 1;

    cfg = main_load_config(path, true);
    if (cfg == NULL)
        return 2;
    app_log_set_level(cfg->log_level);
    main_install_signals();

    routes = mgmt_routes_new(&merr);
    if (routes == NULL || app_api_register(&api, routes) < 0) {
        APP_LOG_ERR("main", "cannot set up the management routes: %s", merr ? merr : "out of memory");
        goto out;
    }
    scfg.unix_path = cfg->mgmt.socket_path;
    scfg.tcp_listen = cfg->mgmt.metrics_listen;
    scfg.routes = routes;
    srv = mgmt_server_new(&scfg, &merr);
    if (srv == NULL) {
        APP_LOG_ERR("main", "management socket %s: %s", cfg->mgmt.socket_path, merr ? merr : "cannot listen");
        goto out;
    }

    eal_argc = app_node_eal_args(cfg, n_cli, cli, &eal_argv);
    if (eal_argc < 0) {
        APP_LOG_ERR("main", "out of memory building EAL arguments");
        goto out;
    }
    if (app_node_start(&node, cfg, eal_argc, eal_argv, err, sizeof(err)) < 0) {
        APP_LOG_ERR("main", "%s", err);
        goto out;
    }
    if (node.mesh != NULL && app_mesh_node_register_routes(&node.mesh, routes) < 0) {
        APP_LOG_ERR("main", "cannot set up the mesh management routes");
        goto out;
    }
    if (app_cfg_xds(cfg) != NULL) {
        /* published to the workers' lookup hook (node.c) with release order */
        __atomic_store_n(&node.istiod, app_istiod_new(&node.mesh_env, cfg, err, sizeof(err)), __ATOMIC_RELEASE);
        if (node.istiod == NULL) {
            APP_LOG_ERR("main", "%s", err);
            goto out;
        }
        APP_LOG_INFO("main", "following istiod at %s (certificates from %s)", app_cfg_xds(cfg)->address,
                     app_istiod_certs(node.istiod) != NULL ? "the Istio CA" : "the local CA");
    }
    __atomic_store_n(&api.ready, 1, __ATOMIC_RELEASE);
    APP_LOG_INFO("main", "node %s ready: %d ports, %u workers, management socket %s", cfg->node_name, cfg->n_ports,
                 node.n_workers, cfg->mgmt.socket_path);

    main_control_loop(srv, &api);
    APP_LOG_INFO("main", "stopping (%s)", main_signalled ? strsignal(main_signalled) : "quitquitquit");
    rc = 0;
out:
    __atomic_store_n(&api.ready, 0, __ATOMIC_RELEASE);
    app_node_stop(&node);
    app_istiod_free(node.istiod);
    node.istiod = NULL;
    mgmt_server_free(srv); /* closes and removes the socket file */
    app_api_fini(&api);
    mgmt_routes_free(routes);
    app_node_fini(&node);
    if (eal_argv != NULL)
        app_node_eal_args_free(eal_argc, eal_argv);
    app_config_free(cfg);
    return rc;
}
#endif /* ZW_HAVE_DPDK */

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'k'},
        {"backend", required_argument, NULL, 'b'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
#ifdef ZW_HAVE_DPDK
    const char *backend = "dpdk";
#else
    const char *backend = "kernel";
#endif
    int opt;

    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            return main_check_config(optarg);
        case 'b':
            backend = optarg;
            break;
        case 'V':
            printf("zwire %s\n", ZW_VERSION);
            return 0;
        case 'h':
            main_usage(stdout);
            return 0;
        default:
            main_usage(stderr);
            return 2;
        }
    }
    if (config == NULL) {
        main_usage(stderr);
        return 2;
    }
    if (strcmp(backend, "kernel") == 0)
        return main_run_kernel(config, APP_KNODE_MESH);
    if (strcmp(backend, "kernel-passthrough") == 0)
        return main_run_kernel(config, APP_KNODE_PASSTHROUGH);
    if (strcmp(backend, "dpdk") != 0) {
        fprintf(stderr, "zwire: unknown backend \"%s\" (kernel, kernel-passthrough or dpdk)\n", backend);
        return 2;
    }
#ifdef ZW_HAVE_DPDK
    /* getopt stops at "--": what follows goes to EAL as given */
    return main_run(config, argc - optind, argv + optind);
#else
    fprintf(stderr, "zwire: built without DPDK; use --backend kernel\n");
    return 2;
#endif
}
