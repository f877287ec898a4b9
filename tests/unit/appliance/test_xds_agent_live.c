/* SPDX-License-Identifier: Apache-2.0 */
/*
 * app_xds_agent + app_cert_manager against tests/controlplane/controlplane.py over TLS on 127.0.0.1 (suite 'xds'):
 * ready after the first ACK of each type; a malformed Address NACKed by name with its reason while the others
 * apply; the server ends the stream and the agent resyncs with initial_resource_versions; a certificate issued
 * through the agent's channel with ImpersonatedIdentity for the local workload's identity.
 * Environment (set by meson): ZW_PYTHON, ZW_CONTROLPLANE, ZW_PROTO_ROOT.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mgmt/prom.h"
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "appliance/cert_manager.h"
#include "appliance/xds_agent.h"
#include "tests/fakes/fake_clock.h"

#define TOKEN "agent-live-token"
#define WL "Kubernetes//Pod/default/a"

static const char scenario_json[] =
    "{\"ca\": \"ok\", \"streams\": ["
    " [ {\"wait_initial\": true},"
    "   {\"push\": \"address\", \"expect\": \"ack\", \"resources\": [{\"name\": \"" WL "\", \"version\": \"1\","
    "     \"aliases\": [\"/10.1.0.5\"], \"workload\": {\"uid\": \"" WL "\", \"name\": \"a\", \"node\": \"node-1\","
    "     \"namespace\": \"default\", \"ips\": [\"10.1.0.5\"], \"tunnelProtocol\": \"HBONE\","
    "     \"serviceAccount\": \"sleep\"}}]},"
    "   {\"push\": \"authorization\", \"expect\": \"ack\", \"resources\": [{\"name\": \"default/allow\","
    "     \"version\": \"1\", \"authorization\": {\"name\": \"allow\", \"namespace\": \"default\","
    "     \"scope\": \"NAMESPACE\", \"action\": \"ALLOW\"}}]},"
    "   {\"sleep\": 1.5},"
    "   {\"push\": \"address\", \"expect\": \"nack\", \"nack_contains\": \"bad/one: cannot decode\","
    "     \"resources\": [{\"name\": \"bad/one\", \"version\": \"1\", \"raw_hex\": \"ffffff\"},"
    "       {\"name\": \"Kubernetes//Pod/default/b\", \"version\": \"1\", \"workload\": {\"uid\":"
    "       \"Kubernetes//Pod/default/b\", \"namespace\": \"default\", \"ips\": [\"10.1.0.6\"]}}]},"
    "   {\"end\": \"UNAVAILABLE\", \"message\": \"istiod restarting\"} ],"
    " [ {\"wait_initial\": true, \"expect_versions\": {\"address\": {\"" WL "\": \"1\","
    "     \"Kubernetes//Pod/default/b\": \"1\"}, \"authorization\": {\"default/allow\": \"1\"}}} ] ]}";

static struct fake_env fe;
static pid_t cp_pid;
static char workdir[64], events[128], root[512];
static int cp_port;
static const struct mesh_xds_state *last;

static uint64_t real_now(void *u)
{
    struct timespec ts;
    (void)u;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int count_events(const char *needle)
{
    FILE *f = fopen(events, "r");
    char line[8192];
    int n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        for (char *p = line; (p = strstr(p, needle)) != NULL; p++)
            n++;
    fclose(f);
    return n;
}

static void cp_start(void)
{
    const char *py = getenv("ZW_PYTHON"), *script = getenv("ZW_CONTROLPLANE"), *protos = getenv("ZW_PROTO_ROOT");
    char scen[128], line[1024];
    int pfd[2];
    FILE *out;

    assert_non_null(py);
    snprintf(workdir, sizeof(workdir), "/tmp/zw-agent-live-XXXXXX");
    assert_non_null(mkdtemp(workdir));
    snprintf(scen, sizeof(scen), "%s/scenario.json", workdir);
    out = fopen(scen, "w");
    fputs(scenario_json, out);
    fclose(out);
    assert_int_equal(pipe(pfd), 0);
    cp_pid = fork();
    if (cp_pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execl(py, py, script, "--port", "0", "--token", TOKEN, "--cluster-id", "c-live", "--scenario", scen,
              "--workdir", workdir, "--proto-root", protos, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    out = fdopen(pfd[0], "r");
    assert_non_null(fgets(line, sizeof(line), out));
    fclose(out);
    assert_int_equal(sscanf(line, "CONTROLPLANE port=%d root=%511s", &cp_port, root), 2);
    snprintf(events, sizeof(events), "%s/events.jsonl", workdir);
}

static void cp_stop(void)
{
    char cmd[128];
    int st;

    if (cp_pid > 0) {
        kill(cp_pid, SIGTERM);
        waitpid(cp_pid, &st, 0);
        cp_pid = 0;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", workdir);
        if (getenv("ZW_KEEP_WORKDIR") == NULL && system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", workdir);
    }
}

static void on_publish(void *u, const struct mesh_xds_state *s)
{
    (void)u;
    mesh_xds_state_unref(last);
    last = s;
}

struct world {
    struct app_xds_agent *a;
    struct app_cert_manager *cm;
};

static void drive(struct world *w, int ms)
{
    struct pollfd fds[APP_XDS_AGENT_MAX_FDS];
    int n = app_xds_agent_fds(w->a, fds, APP_XDS_AGENT_MAX_FDS), t = app_xds_agent_timeout_ms(w->a);
    uint64_t cd = app_cert_manager_next_deadline(w->cm), now = mesh_env_now(&fe.env);

    if (t < 0 || t > ms)
        t = ms;
    if (cd != APP_CERT_NO_DEADLINE && cd <= now)
        t = 0;
    (void)poll(fds, (nfds_t)n, t);
    app_xds_agent_process(w->a, fds, (unsigned)n);
    app_cert_manager_tick(w->cm);
}

typedef bool (*pred_fn)(struct world *w);

static void drive_until(struct world *w, pred_fn p, const char *what)
{
    uint64_t end = mesh_env_now(&fe.env) + 30ull * 1000000000ull;

    while (!p(w)) {
        if (mesh_env_now(&fe.env) > end) {
            fprintf(stderr, "timed out waiting for %s (last error: %s)\n", what,
                    app_xds_agent_status(w->a)->last_error);
            fail();
        }
        drive(w, 50);
    }
}

static bool p_ready(struct world *w)
{
    return app_xds_agent_ready(w->a);
}

static struct mesh_spiffe_id g_id;

static bool p_cert(struct world *w)
{
    return app_cert_manager_state(w->cm, &g_id, NULL, 0) == APP_CERT_AVAILABLE;
}

static bool p_nacked(struct world *w)
{
    return app_xds_agent_xds_stats(w->a)->nacks == 1;
}

static bool p_resynced(struct world *w)
{
    return app_xds_agent_xds_stats(w->a)->streams_started == 2 && count_events("\"initial_seen\"") == 2;
}

static void test_xds_agent_live(void **state)
{
    struct world w = {0};
    struct app_xds_config cfg = {0};
    struct app_cert_ca ca;
    char tok[128], authority[64];
    FILE *f;
    int err = 0;

    (void)state;
    cp_start();
    snprintf(tok, sizeof(tok), "%s/token", workdir);
    f = fopen(tok, "w");
    fputs(TOKEN "\n", f);
    fclose(f);
    snprintf(authority, sizeof(authority), "localhost:%d", cp_port);
    cfg.address = authority;
    cfg.host = "localhost";
    cfg.port = (uint16_t)cp_port;
    cfg.server_name = "localhost";
    cfg.root_cert = root;
    cfg.token_file = tok;
    cfg.cluster_id = "c-live";
    cfg.instance_ip = "10.1.0.1";
    cfg.pod_name = "zwire-x";
    cfg.pod_namespace = "istio-system";
    cfg.node_name = "node-1";
    w.a = app_xds_agent_new(&fe.env, &cfg, on_publish, NULL, &err);
    assert_non_null(w.a);
    app_xds_agent_ca_transport(w.a, &ca);
    w.cm = app_cert_manager_new(&fe.env, &ca, NULL, 3600, &err);
    assert_non_null(w.cm);
    assert_string_equal(app_xds_agent_pending(w.a), "state manager");

    drive_until(&w, p_ready, "readiness");
    assert_null(app_xds_agent_pending(w.a));
    assert_true(app_xds_agent_status(w.a)->connected);
    assert_non_null(last);
    assert_int_equal(mesh_workloads_count(last->workloads), 1);
    assert_int_equal(mesh_authz_set_count(last->authz), 1);

    /* certificates for the local workload's identity, through the agent's channel */
    assert_int_equal(app_cert_manager_sync(w.cm, last->workloads, "node-1"), 0);
    assert_int_equal(mesh_spiffe_from_parts("cluster.local", "default", "sleep", &g_id), 0);
    drive_until(&w, p_cert, "the workload certificate");

    drive_until(&w, p_nacked, "the NACK");
    assert_string_equal(app_xds_agent_status(w.a)->last_nack[MESH_XDS_TYPE_ADDRESS],
                        "bad/one: cannot decode istio.workload.Address");
    assert_int_equal(mesh_workloads_count(last->workloads), 2); /* b applied next to the rejected one */

    drive_until(&w, p_resynced, "the resync");
    assert_int_equal(count_events("\"check_failed\""), 0);
    assert_int_equal(count_events("\"what\": \"initial versions\""), 2);
    assert_true(count_events("\"event\": \"csr\"") >= 1);
    assert_true(count_events("ImpersonatedIdentity") == 0); /* logged as identity=..., not the key */
    assert_true(count_events("\"identity\": \"spiffe://cluster.local/ns/default/sa/sleep\"") >= 1);
    {
        struct mgmt_prom *prom = mgmt_prom_new(MGMT_PROM_TEXT, NULL);
        size_t len;
        assert_non_null(prom);
        app_xds_agent_metrics_render(prom, w.a);
        assert_int_equal(mgmt_prom_finish(prom), 0);
        assert_non_null(strstr(mgmt_prom_data(prom, &len),
                               "istio_xds_connection_terminations_total{reason=\"Error\"} 1\n"));
        mgmt_prom_free(prom);
    }
    {
        json_t *dump = app_cert_manager_dump(w.cm);
        assert_true(json_array_size(dump) >= 1);
        json_decref(dump);
    }

    app_xds_agent_free(w.a);
    app_cert_manager_free(w.cm);
    mesh_xds_state_unref(last);
    last = NULL;
    cp_stop();
}

static int teardown(void **state)
{
    (void)state;
    cp_stop();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test_teardown(test_xds_agent_live, teardown)};

    signal(SIGPIPE, SIG_IGN);
    fake_env_init(&fe, 0, 9);
    fe.env.now_ns = real_now;
    return cmocka_run_group_tests_name("xds_agent_live", tests, NULL, NULL);
}
