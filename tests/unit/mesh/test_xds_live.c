/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The xDS and CA client engines (mesh/xds_conn.c over mesh/xds_client.c, mesh/ca_client.c) driven by a small
 * blocking-socket + poll loop against the Python control plane (tests/controlplane/controlplane.py) over TLS on
 * 127.0.0.1: receive a Workload push and ACK it, NACK a malformed one, reconnect with initial_resource_versions after
 * the server ends the stream, and get a workload certificate from the CA with impersonation. No root needed.
 *
 * Environment (set by meson): ZW_PYTHON (Debian's python3), ZW_CONTROLPLANE (the script), ZW_PROTO_ROOT.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mesh/ca_client.h"
#include "mesh/xds_client.h"
#include "mesh/xds_conn.h"
#include "proto/workload.pb-c.h"
#include "tests/fakes/fake_clock.h"

#define TOKEN "live-test-token"
#define WL_NAME "Kubernetes//Pod/default/a"
#define STEP_TIMEOUT_S 30

static const char scenario_json[] =
    "{\"ca\": \"ok\", \"streams\": ["
    " [ {\"wait_initial\": true},"
    "   {\"push\": \"address\", \"expect\": \"ack\", \"resources\": [{\"name\": \"" WL_NAME "\", \"version\": \"1\","
    "     \"aliases\": [\"/10.1.0.5\"], \"workload\": {\"uid\": \"" WL_NAME "\", \"name\": \"a\","
    "     \"namespace\": \"default\", \"ips\": [\"10.1.0.5\"], \"tunnelProtocol\": \"HBONE\","
    "     \"serviceAccount\": \"sleep\"}}]},"
    "   {\"push\": \"authorization\", \"expect\": \"ack\", \"resources\": [{\"name\": \"default/allow\","
    "     \"version\": \"1\", \"authorization\": {\"name\": \"allow\", \"namespace\": \"default\","
    "     \"scope\": \"NAMESPACE\", \"action\": \"ALLOW\"}}]},"
    "   {\"push\": \"address\", \"expect\": \"nack\", \"nack_contains\": \"bad/one: cannot decode\","
    "     \"resources\": [{\"name\": \"bad/one\", \"version\": \"1\", \"raw_hex\": \"ffffff\"}]},"
    "   {\"end\": \"UNAVAILABLE\", \"message\": \"istiod restarting\"} ],"
    " [ {\"wait_initial\": true, \"expect_versions\": {\"address\": {\"" WL_NAME "\": \"1\"},"
    "     \"authorization\": {\"default/allow\": \"1\"}}} ] ]}";

static struct fake_env fe;
static struct cp *g_cp; /* the running control plane, stopped by the teardown even when a check failed */

struct cp {
    pid_t pid;
    int port;
    char workdir[256];
    char events[512];
    char *roots;
    size_t roots_len;
};

struct world {
    struct cp cp;
    int fd;
    struct mesh_xds_conn *conn;
    struct mesh_xds_client *xc;
    struct mesh_buf wire;
    int applied, rejected, removed;
    bool saw_workload;
    /* unary call result */
    bool call_done;
    struct mesh_grpc_status call_status;
    bool call_conn_err;
    struct mesh_buf call_msg;
};

static uint64_t real_now(void *u)
{
    struct timespec ts;

    (void)u;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the control plane process ---- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)n;
    return p;
}

static void cp_start(struct cp *cp)
{
    const char *py = getenv("ZW_PYTHON"), *script = getenv("ZW_CONTROLPLANE"), *protos = getenv("ZW_PROTO_ROOT");
    char tmpl[] = "/tmp/zw-xds-live-XXXXXX", scen[300], line[1024], root[512];
    int pfd[2];
    FILE *out;

    if (py == NULL || script == NULL || protos == NULL) {
        fprintf(stderr, "ZW_PYTHON / ZW_CONTROLPLANE / ZW_PROTO_ROOT not set\n");
        fail();
    }
    assert_non_null(mkdtemp(tmpl));
    snprintf(cp->workdir, sizeof(cp->workdir), "%s", tmpl);
    snprintf(scen, sizeof(scen), "%s/scenario.json", cp->workdir);
    out = fopen(scen, "w");
    assert_non_null(out);
    fputs(scenario_json, out);
    fclose(out);
    assert_int_equal(pipe(pfd), 0);
    cp->pid = fork();
    assert_true(cp->pid >= 0);
    if (cp->pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execl(py, py, script, "--port", "0", "--token", TOKEN, "--cluster-id", "test-cluster", "--scenario", scen,
              "--workdir", cp->workdir, "--proto-root", protos, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    g_cp = cp;
    out = fdopen(pfd[0], "r");
    assert_non_null(out);
    assert_non_null(fgets(line, sizeof(line), out)); /* blocks until the server is up */
    fclose(out);
    assert_int_equal(sscanf(line, "CONTROLPLANE port=%d root=%511s", &cp->port, root), 2);
    snprintf(cp->events, sizeof(cp->events), "%s/events.jsonl", cp->workdir);
    cp->roots = slurp(root, &cp->roots_len);
    assert_non_null(cp->roots);
}

static void cp_stop(struct cp *cp)
{
    char cmd[300];
    int st;

    if (cp->pid > 0) {
        kill(cp->pid, SIGTERM);
        waitpid(cp->pid, &st, 0);
        cp->pid = 0;
    }
    g_cp = NULL;
    free(cp->roots);
    cp->roots = NULL;
    if (getenv("ZW_KEEP_WORKDIR") == NULL && cp->workdir[0] == '/') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cp->workdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", cp->workdir);
    }
}

static int count_events(const struct cp *cp, const char *needle)
{
    char *text = slurp(cp->events, NULL), *p;
    int n = 0;

    if (text == NULL)
        return 0;
    for (p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(text);
    return n;
}

/* ---- the xDS handler: decode at the boundary, reject what does not decode ---- */

static const char *on_resource(void *u, const struct mesh_xds_resource *r)
{
    struct world *w = u;

    if (r->type == MESH_XDS_TYPE_ADDRESS) {
        Istio__Workload__Address *a = istio__workload__address__unpack(NULL, r->value_len, r->value);
        if (a == NULL) {
            w->rejected++;
            return "cannot decode istio.workload.Address";
        }
        if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD && strcmp(a->workload->uid, WL_NAME) == 0 &&
            a->workload->n_addresses == 1 && a->workload->addresses[0].len == 4 &&
            a->workload->tunnel_protocol == ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE && r->n_aliases == 1 &&
            strcmp(r->aliases[0], "/10.1.0.5") == 0)
            w->saw_workload = true;
        istio__workload__address__free_unpacked(a, NULL);
    }
    w->applied++;
    return NULL;
}

static void on_removed(void *u, enum mesh_xds_type t, const char *name)
{
    struct world *w = u;

    (void)t;
    (void)name;
    w->removed++;
}

static const struct mesh_xds_handler handler = {on_resource, on_removed, NULL};

/* ---- the socket driver ---- */

static void drive_once(struct world *w, int timeout_ms)
{
    struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
    uint64_t now = mesh_env_now(&fe.env), dl = mesh_xds_conn_next_deadline(w->conn);
    uint8_t buf[16384];

    (void)mesh_xds_conn_flush(w->conn, &w->wire);
    while (mesh_buf_len(&w->wire) != 0) {
        ssize_t n = write(w->fd, mesh_buf_data(&w->wire), mesh_buf_len(&w->wire));
        assert_true(n > 0);
        mesh_buf_consume(&w->wire, (size_t)n);
    }
    if (dl != MESH_XDS_CONN_NO_DEADLINE && dl > now && (dl - now) / 1000000 < (uint64_t)timeout_ms)
        timeout_ms = (int)((dl - now) / 1000000) + 1;
    if (poll(&pfd, 1, timeout_ms) > 0) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n > 0)
            (void)mesh_xds_conn_feed(w->conn, buf, (size_t)n, &w->wire);
        else
            mesh_xds_conn_on_closed(w->conn, n == 0 ? 0 : -errno);
    }
    (void)mesh_xds_conn_on_deadline(w->conn, mesh_env_now(&fe.env), &w->wire);
    /* The backend's job: reopen the ADS stream when the xDS client says so. */
    if (!mesh_xds_client_is_streaming(w->xc) && mesh_xds_client_should_connect(w->xc, mesh_env_now(&fe.env)))
        assert_int_equal(mesh_xds_conn_ads_open(w->conn, w->xc, TOKEN), MESH_OK);
}

typedef bool (*pred_fn)(struct world *w);

static void drive_until(struct world *w, pred_fn pred, const char *what)
{
    uint64_t end = mesh_env_now(&fe.env) + STEP_TIMEOUT_S * 1000000000ull;

    while (!pred(w)) {
        if (mesh_env_now(&fe.env) > end || mesh_xds_conn_error(w->conn) != MESH_OK) {
            fprintf(stderr, "timed out or failed waiting for %s (conn error %s)\n", what,
                    mesh_err_str(mesh_xds_conn_error(w->conn)));
            fail();
        }
        drive_once(w, 50);
    }
}

static int dial(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static bool p_ready(struct world *w)
{
    return mesh_xds_client_is_ready(w->xc);
}

static bool p_nacked_and_ended(struct world *w)
{
    return mesh_xds_client_stats(w->xc)->nacks == 1 &&
           mesh_xds_client_stats(w->xc)->terminations[MESH_XDS_TERM_ERROR] == 1;
}

static bool p_reconnected(struct world *w)
{
    return mesh_xds_client_stats(w->xc)->streams_started == 2 && count_events(&w->cp, "\"initial_seen\"") == 2;
}

static bool p_call_done(struct world *w)
{
    return w->call_done;
}

static int call_on_message(void *u, int32_t call, const uint8_t *msg, size_t len)
{
    struct world *w = u;

    (void)call;
    return mesh_buf_append(&w->call_msg, msg, len) == 0 ? 0 : -1;
}

static void call_on_close(void *u, int32_t call, const struct mesh_grpc_status *st, bool connection_error)
{
    struct world *w = u;

    (void)call;
    w->call_done = true;
    w->call_status = *st;
    w->call_conn_err = connection_error;
}

static const struct mesh_xds_call_cb call_cb = {call_on_message, call_on_close};

static void unary_ca(struct world *w, const char *token, const uint8_t *req, size_t len)
{
    int32_t id;

    w->call_done = false;
    mesh_buf_reset(&w->call_msg);
    assert_int_equal(
        mesh_xds_conn_unary(w->conn, MESH_CA_PATH, token, req, len, 10ull * 1000000000ull, &call_cb, w, &id), MESH_OK);
    drive_until(w, p_call_done, "the CA call");
}

/* A server certificate that does not match the configured name fails the channel before any request is sent;
 * the ADS stream ends as a ConnectionError and backs off. */
static void check_wrong_server_name(const struct cp *cp)
{
    struct mesh_xds_client_cfg xcfg = {.pod_name = "p", .pod_namespace = "ns"};
    struct mesh_xds_conn_cfg ccfg = {.authority = "istiod.wrong:15012",
                                     .server_name = "istiod.wrong",
                                     .roots_pem = cp->roots,
                                     .roots_len = cp->roots_len};
    struct mesh_xds_client *xc;
    struct mesh_xds_conn *conn;
    struct mesh_buf wire;
    uint64_t end = mesh_env_now(&fe.env) + STEP_TIMEOUT_S * 1000000000ull;
    int fd = dial(cp->port), err;
    uint8_t buf[16384];

    xc = mesh_xds_client_new(&fe.env, &xcfg, &handler, NULL, &err);
    conn = mesh_xds_conn_new(&fe.env, &ccfg, &err);
    assert_non_null(xc);
    assert_non_null(conn);
    mesh_buf_init(&wire, &fe.env, 0);
    assert_int_equal(mesh_xds_conn_ads_open(conn, xc, TOKEN), MESH_OK);
    while (mesh_xds_conn_error(conn) == MESH_OK && mesh_env_now(&fe.env) < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        (void)mesh_xds_conn_flush(conn, &wire);
        if (mesh_buf_len(&wire) != 0) {
            assert_true(write(fd, mesh_buf_data(&wire), mesh_buf_len(&wire)) == (ssize_t)mesh_buf_len(&wire));
            mesh_buf_reset(&wire);
        }
        if (poll(&pfd, 1, 50) > 0) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0)
                mesh_xds_conn_on_closed(conn, n == 0 ? 0 : -errno);
            else
                (void)mesh_xds_conn_feed(conn, buf, (size_t)n, &wire);
        }
    }
    assert_int_equal(mesh_xds_conn_error(conn), MESH_ERR_TLS_IDENTITY);
    assert_false(mesh_xds_conn_is_established(conn));
    assert_false(mesh_xds_client_is_streaming(xc));
    assert_int_equal(mesh_xds_client_stats(xc)->terminations[MESH_XDS_TERM_CONNECTION_ERROR], 1);
    assert_int_equal(mesh_xds_client_backoff_ns(xc), 2 * MESH_XDS_BACKOFF_INITIAL_NS);
    mesh_buf_fini(&wire);
    mesh_xds_conn_free(conn);
    mesh_xds_client_free(xc);
    close(fd);
}

static void test_xds_live_ads_and_ca(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    struct mesh_xds_client_cfg xcfg = {
        .instance_ip = "10.1.0.1", .pod_name = "ztunnel-x", .pod_namespace = "istio-system", .node_name = "node-1"};
    struct mesh_xds_conn_cfg ccfg = {0};
    struct mesh_spiffe_id id;
    struct mesh_cert_bundle *bundle = NULL;
    struct mesh_buf req;
    EVP_PKEY *key = NULL;
    char *csr = NULL, reason[128] = "";
    size_t csr_len = 0;
    int err;

    (void)state;
    assert_non_null(w);
    cp_start(&w->cp);
    mesh_buf_init(&w->wire, &fe.env, 8u * 1024 * 1024);
    mesh_buf_init(&w->call_msg, &fe.env, 0);
    w->xc = mesh_xds_client_new(&fe.env, &xcfg, &handler, w, &err);
    assert_non_null(w->xc);

    {
        char authority[64];
        snprintf(authority, sizeof(authority), "localhost:%d", w->cp.port);
        ccfg.authority = authority;
        ccfg.server_name = "localhost";
        ccfg.roots_pem = w->cp.roots;
        ccfg.roots_len = w->cp.roots_len;
        ccfg.cluster_id = "test-cluster";
        ccfg.ping_interval_ns = 100ull * 1000000ull; /* exercise keepalive PINGs during the test */
        w->conn = mesh_xds_conn_new(&fe.env, &ccfg, &err);
    }
    assert_non_null(w->conn);
    w->fd = dial(w->cp.port);
    assert_int_equal(mesh_xds_conn_ads_open(w->conn, w->xc, TOKEN), MESH_OK);

    /* 1. Workload + Authorization pushed and ACKed: ready. */
    drive_until(w, p_ready, "readiness");
    assert_true(mesh_xds_conn_is_established(w->conn));
    assert_true(w->saw_workload);
    assert_string_equal(mesh_xds_client_record_version(w->xc, MESH_XDS_TYPE_ADDRESS, WL_NAME), "1");

    /* 2. A malformed Address is NACKed with its reason; then the server ends the stream. */
    drive_until(w, p_nacked_and_ended, "NACK and stream end");
    assert_int_equal(w->rejected, 1);
    assert_null(mesh_xds_client_record_version(w->xc, MESH_XDS_TYPE_ADDRESS, "bad/one"));

    /* 3. Reconnect on the same channel; the server checks initial_resource_versions. */
    drive_until(w, p_reconnected, "the second stream's initial requests");
    assert_int_equal(mesh_xds_client_stats(w->xc)->acks, 2);

    /* 4. CA with impersonation: the returned leaf must carry the requested identity. */
    assert_int_equal(mesh_spiffe_from_parts("cluster.local", "default", "sleep", &id), 0);
    assert_int_equal(mesh_ca_csr_new(&fe.env, &id, &csr, &csr_len, &key), 0);
    mesh_buf_init(&req, &fe.env, 0);
    assert_int_equal(mesh_ca_request_encode(&fe.env, csr, 3600, &id, &req), 0);
    unary_ca(w, TOKEN, mesh_buf_data(&req), mesh_buf_len(&req));
    assert_true(w->call_status.have_status);
    assert_int_equal(w->call_status.code, MESH_GRPC_OK);
    assert_int_equal(mesh_ca_response_decode(&fe.env, mesh_buf_data(&w->call_msg), mesh_buf_len(&w->call_msg), &id, key,
                                             w->cp.roots, w->cp.roots_len, &bundle, reason, sizeof(reason)),
                     0);
    assert_non_null(bundle);
    assert_true(mesh_spiffe_eq(mesh_identity_bundle_id(bundle), &id));
    assert_int_equal(sk_X509_num(mesh_identity_bundle_chain(bundle)), 1); /* the intermediate; root left out */
    mesh_identity_bundle_unref(bundle);

    /* A different identity than asked for is refused by the client check. */
    {
        struct mesh_spiffe_id other;
        assert_int_equal(mesh_spiffe_from_parts("cluster.local", "default", "other", &other), 0);
        assert_int_equal(mesh_ca_response_decode(&fe.env, mesh_buf_data(&w->call_msg), mesh_buf_len(&w->call_msg),
                                                 &other, key, w->cp.roots, w->cp.roots_len, &bundle, reason,
                                                 sizeof(reason)),
                         -EACCES);
        assert_null(bundle);
    }

    /* 5. A wrong token is refused with UNAUTHENTICATED and leaves the channel usable. */
    unary_ca(w, "not-the-token", mesh_buf_data(&req), mesh_buf_len(&req));
    assert_int_equal(w->call_status.code, MESH_GRPC_UNAUTHENTICATED);
    assert_false(w->call_conn_err);
    assert_int_equal(mesh_xds_conn_error(w->conn), MESH_OK);

    /* Keepalive PINGs went out and were answered (a missing ACK would have failed the channel). */
    {
        uint64_t end = mesh_env_now(&fe.env) + 300ull * 1000000ull;
        while (mesh_env_now(&fe.env) < end)
            drive_once(w, 20);
    }
    assert_true(mesh_xds_conn_stats(w->conn)->pings_sent >= 2);
    assert_int_equal(mesh_xds_conn_error(w->conn), MESH_OK);

    /* The server saw what we think we sent. */
    assert_int_equal(count_events(&w->cp, "\"check_failed\""), 0);
    assert_true(count_events(&w->cp, "\"what\": \"ack\"") >= 2);
    assert_int_equal(count_events(&w->cp, "\"what\": \"nack\""), 1);
    assert_int_equal(count_events(&w->cp, "\"what\": \"initial versions\""), 2);
    assert_int_equal(count_events(&w->cp, "\"node_id\": \"ztunnel~10.1.0.1~ztunnel-x.istio-system~"), 4);
    assert_int_equal(count_events(&w->cp, "\"event\": \"csr\""), 1); /* the bad token never got that far */
    assert_int_equal(count_events(&w->cp, "\"ok\": false"), 1);

    check_wrong_server_name(&w->cp);

    mesh_buf_fini(&req);
    mesh_env_free(&fe.env, csr);
    EVP_PKEY_free(key);
    mesh_xds_conn_free(w->conn);
    mesh_xds_client_free(w->xc);
    mesh_buf_fini(&w->wire);
    mesh_buf_fini(&w->call_msg);
    close(w->fd);
    cp_stop(&w->cp);
    free(w);
    assert_int_equal(fe.alloc.live, 0);
}

static int teardown(void **state)
{
    (void)state;
    if (g_cp != NULL)
        cp_stop(g_cp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_xds_live_ads_and_ca, teardown),
    };

    signal(SIGPIPE, SIG_IGN);
    fake_env_init(&fe, 0, 5);
    fe.env.now_ns = real_now; /* a real clock: the peer's certificates and timers are real */
    return cmocka_run_group_tests_name("mesh_xds_live", tests, NULL, NULL);
}
