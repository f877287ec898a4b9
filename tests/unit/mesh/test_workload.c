/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for mesh/workload.c (snapshot build, validation, lookups, endpoint choice) and mesh/metrics.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/metrics.h"
#include "mesh/workload.h"
#include "tests/fakes/fake_clock.h"

/* The identity of a workload, by value (the snapshot does not store it). */
static struct mesh_spiffe_id workload_id(const struct mesh_workload *w)
{
    struct mesh_spiffe_id id;
    assert_int_equal(mesh_workload_identity(w, &id), 0);
    return id;
}

static struct fake_env fe;

static int setup(void **state)
{
    (void)state;
    fake_env_init(&fe, 0, 5);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    failalloc_arm(&fe.alloc, 0);
    assert_int_equal(fe.alloc.live, 0);
    return 0;
}

static struct mesh_addr ip(const char *s)
{
    struct mesh_addr a;
    assert_int_equal(mesh_addr_parse_ip(s, &a), 0);
    return a;
}

static struct mesh_addr a_web1[1], a_web2[1], a_web3[1], a_db[2], a_host[1], vip_web[1], vip_db[1];
static const struct mesh_port web_svc_ports[] = {{80, 8080}, {443, 0}};
static const struct mesh_port web3_ports[] = {{443, 8443}};
static const struct mesh_port db_ports[] = {{5432, 5432}};
static const struct mesh_workload_service web_ref[] = {{"default/web.default.svc.cluster.local", NULL, 0}};
static const struct mesh_workload_service web3_ref[] = {{"default/web.default.svc.cluster.local", web3_ports, 1}};
static const struct mesh_workload_service db_ref[] = {{"data/db.data.svc.cluster.local", NULL, 0}};
static const char *const pols[] = {"default/allow-web"};
static const char *const sans[] = {"spiffe://cluster.local/ns/default/sa/extra"};

static struct mesh_workload W[6];
static struct mesh_service S[2];

static void build_inputs(void)
{
    a_web1[0] = ip("10.1.0.1");
    a_web2[0] = ip("10.1.0.2");
    a_web3[0] = ip("10.1.0.3");
    a_db[0] = ip("10.2.0.1");
    a_db[1] = ip("fd00::2:1");
    a_host[0] = ip("10.1.0.1"); /* host-network: same IP as web1, not indexed */
    vip_web[0] = ip("10.96.0.10");
    vip_db[0] = ip("fd00:96::20");
    memset(W, 0, sizeof(W));
    memset(S, 0, sizeof(S));
    W[0] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/web-1", .name = "web-1", .namespace = "default",
                                  .service_account = "web", .node = "node1", .addresses = a_web1, .n_addresses = 1,
                                  .protocol = MESH_TUNNEL_HBONE, .services = web_ref, .n_services = 1,
                                  .authorization_policies = pols, .n_authorization_policies = 1, .capacity = 1};
    W[1] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/web-2", .name = "web-2", .namespace = "default",
                                  .node = "node2", .addresses = a_web2, .n_addresses = 1,
                                  .protocol = MESH_TUNNEL_HBONE, .services = web_ref, .n_services = 1, .capacity = 3};
    W[2] = (struct mesh_workload){.uid = "Kubernetes//Pod/default/web-3", .name = "web-3", .namespace = "default",
                                  .node = "node2", .addresses = a_web3, .n_addresses = 1,
                                  .status = MESH_WORKLOAD_UNHEALTHY, .services = web3_ref, .n_services = 1};
    W[3] = (struct mesh_workload){.uid = "Kubernetes//Pod/data/db-0", .name = "db-0", .namespace = "data",
                                  .trust_domain = "example.org", .service_account = "db", .addresses = a_db,
                                  .n_addresses = 2, .services = db_ref, .n_services = 1};
    W[4] = (struct mesh_workload){.uid = "Kubernetes//Pod/kube-system/hostnet", .name = "hostnet",
                                  .namespace = "kube-system", .addresses = a_host, .n_addresses = 1,
                                  .network_mode = MESH_NETWORK_HOST};
    S[0] = (struct mesh_service){.name = "web", .namespace = "default", .hostname = "web.default.svc.cluster.local",
                                 .addresses = vip_web, .n_addresses = 1, .ports = web_svc_ports, .n_ports = 2,
                                 .subject_alt_names = sans, .n_subject_alt_names = 1};
    S[1] = (struct mesh_service){.name = "db", .namespace = "data", .hostname = "db.data.svc.cluster.local",
                                 .addresses = vip_db, .n_addresses = 1, .ports = db_ports, .n_ports = 1};
}

static struct mesh_workloads *build(void)
{
    const char *err = NULL;
    build_inputs();
    struct mesh_workloads *ws = mesh_workloads_new(&fe.env, W, 5, S, 2, &err);
    assert_non_null(ws);
    return ws;
}

static void test_workload_lookups(void **state)
{
    (void)state;
    struct mesh_workloads *ws = build();
    /* inputs are deep-copied */
    memset(W, 0, sizeof(W));
    memset(S, 0, sizeof(S));
    assert_int_equal(mesh_workloads_count(ws), 5);
    struct mesh_addr q = ip("10.1.0.2");
    q.port = htons(1234);
    const struct mesh_workload *w = mesh_workloads_find_by_ip(ws, &q);
    assert_non_null(w);
    assert_string_equal(w->name, "web-2");
    assert_string_equal(w->service_account, "default");
    assert_string_equal(w->trust_domain, "cluster.local");
    assert_string_equal(workload_id(w).sa, "default");
    assert_int_equal(w->capacity, 3);
    q = ip("10.1.0.1");
    w = mesh_workloads_find_by_ip(ws, &q);
    assert_string_equal(w->name, "web-1"); /* not the host-network one */
    assert_int_equal(w->protocol, MESH_TUNNEL_HBONE);
    assert_string_equal(w->authorization_policies[0], "default/allow-web");
    q = ip("fd00::2:1");
    w = mesh_workloads_find_by_ip(ws, &q);
    assert_string_equal(workload_id(w).td, "example.org");
    assert_string_equal(workload_id(w).ns, "data");
    assert_string_equal(workload_id(w).sa, "db");
    q = ip("10.9.9.9");
    assert_null(mesh_workloads_find_by_ip(ws, &q));
    assert_non_null(mesh_workloads_find_by_uid(ws, "Kubernetes//Pod/data/db-0"));
    assert_null(mesh_workloads_find_by_uid(ws, "nope"));

    const struct mesh_port *port = NULL;
    q = ip("10.96.0.10");
    q.port = htons(80);
    const struct mesh_service *s = mesh_workloads_find_service(ws, &q, &port);
    assert_non_null(s);
    assert_string_equal(s->hostname, "web.default.svc.cluster.local");
    assert_int_equal(port->target_port, 8080);
    assert_string_equal(s->subject_alt_names[0], "spiffe://cluster.local/ns/default/sa/extra");
    q.port = htons(81);
    assert_null(mesh_workloads_find_service(ws, &q, &port));
    assert_non_null(mesh_workloads_find_service_by_vip(ws, &q));
    assert_ptr_equal(mesh_workloads_find_service_by_key(ws, "default/web.default.svc.cluster.local"), s);
    assert_null(mesh_workloads_find_service_by_key(ws, "default/nope"));

    const struct mesh_endpoint *eps;
    assert_int_equal(mesh_workloads_endpoints(ws, s, &eps), 3);
    assert_string_equal(eps[0].workload->name, "web-1");
    assert_string_equal(eps[2].workload->name, "web-3");

    const struct mesh_workloads *r = mesh_workloads_ref(ws);
    mesh_workloads_unref(ws);
    mesh_workloads_unref(r);
}

static void test_workload_pick_weighted_healthy(void **state)
{
    (void)state;
    struct mesh_workloads *ws = build();
    const struct mesh_service *s = mesh_workloads_service_at(ws, 0);
    int hits[2] = {0, 0};
    for (uint64_t rnd = 0; rnd < 400; rnd++) {
        uint16_t tp = 0;
        struct mesh_addr a;
        const struct mesh_endpoint *e = mesh_workloads_pick_endpoint(ws, s, 80, 0, rnd, &tp, &a);
        assert_non_null(e);
        assert_int_equal(tp, 8080);
        assert_int_equal(ntohs(a.port), 8080);
        assert_true(e->workload->status == MESH_WORKLOAD_HEALTHY); /* web-3 never */
        hits[e->workload == mesh_workloads_at(ws, 0) ? 0 : 1]++;
    }
    assert_int_equal(hits[0], 100); /* capacity 1 vs 3 */
    assert_int_equal(hits[1], 300);
    /* named port 443 (target 0): only web-3 maps it, and web-3 is unhealthy */
    uint16_t tp;
    struct mesh_addr a;
    assert_null(mesh_workloads_pick_endpoint(ws, s, 443, 0, 1, &tp, &a));
    /* family filter: db has a v6 address */
    const struct mesh_service *db = mesh_workloads_service_at(ws, 1);
    const struct mesh_endpoint *e = mesh_workloads_pick_endpoint(ws, db, 5432, MESH_ADDR_V6, 7, &tp, &a);
    assert_non_null(e);
    assert_int_equal(a.family, MESH_ADDR_V6);
    mesh_workloads_unref(ws);
}

static void test_workload_pick_allow_all(void **state)
{
    (void)state;
    build_inputs();
    S[0].lb_health = MESH_LB_ALLOW_ALL;
    const char *err;
    struct mesh_workloads *ws = mesh_workloads_new(&fe.env, W, 5, S, 2, &err);
    assert_non_null(ws);
    uint16_t tp;
    struct mesh_addr a;
    const struct mesh_endpoint *e = mesh_workloads_pick_endpoint(ws, mesh_workloads_service_at(ws, 0), 443, 0, 0, &tp, &a);
    assert_non_null(e);
    assert_string_equal(e->workload->name, "web-3");
    assert_int_equal(tp, 8443);
    mesh_workloads_unref(ws);
}

static void expect_reject(size_t nw, size_t ns, const char *why)
{
    const char *err = NULL;
    assert_null(mesh_workloads_new(&fe.env, W, nw, S, ns, &err));
    assert_non_null(err);
    assert_string_equal(err, why);
}

static void test_workload_validation(void **state)
{
    (void)state;
    build_inputs();
    W[1].uid = W[0].uid;
    expect_reject(5, 2, "duplicate workload uid");
    build_inputs();
    W[1].addresses = a_web1;
    expect_reject(5, 2, "address claimed by two workloads");
    build_inputs();
    S[1].addresses = vip_web;
    expect_reject(5, 2, "VIP claimed by two services");
    build_inputs();
    S[1].hostname = "";
    expect_reject(5, 2, "service without hostname");
    build_inputs();
    W[0].uid = NULL;
    expect_reject(5, 2, "workload without uid");
    build_inputs();
    W[0].namespace = "a/b";
    expect_reject(5, 2, "workload identity (trust domain, namespace, service account) is not a valid SPIFFE ID");
    build_inputs();
    S[1] = S[0];
    S[1].addresses = vip_db;
    expect_reject(5, 2, "duplicate service namespace/hostname");
    build_inputs();
    W[0].protocol = 2;
    expect_reject(5, 2, "unsupported tunnel protocol");
}

static void test_workload_alloc_failure_sweep(void **state)
{
    (void)state;
    build_inputs();
    for (long n = 1;; n++) {
        failalloc_arm(&fe.alloc, n);
        const char *err = NULL;
        struct mesh_workloads *ws = mesh_workloads_new(&fe.env, W, 5, S, 2, &err);
        if (ws != NULL) {
            assert_int_equal(fe.alloc.failures, 0);
            mesh_workloads_unref(ws);
            break;
        }
        assert_string_equal(err, "out of memory");
        assert_int_equal(fe.alloc.live, 0);
    }
}

static void test_metrics_registry(void **state)
{
    (void)state;
    struct mesh_metrics *m = mesh_metrics_new(&fe.env);
    const char *l1[MESH_METRICS_LABEL_COUNT] = {[MESH_METRICS_L_REPORTER] = "source",
                                                [MESH_METRICS_L_REQUEST_PROTOCOL] = "tcp"};
    const char *l2[MESH_METRICS_LABEL_COUNT] = {[MESH_METRICS_L_REPORTER] = "destination"};
    struct mesh_metrics_series *s = mesh_metrics_series_get(m, l1);
    s->opened++;
    s->received_bytes += 10;
    s = mesh_metrics_series_get(m, l2);
    s->opened++;
    s = mesh_metrics_series_get(m, l1);
    s->closed++;
    assert_int_equal(mesh_metrics_count(m), 2);
    assert_string_equal(mesh_metrics_at(m, 0)->labels[MESH_METRICS_L_SOURCE_WORKLOAD], "unknown");
    assert_string_equal(mesh_metrics_label_names[MESH_METRICS_L_CONNECTION_SECURITY_POLICY],
                        "connection_security_policy");
    struct mesh_metrics_series t = mesh_metrics_sum(m, MESH_METRICS_L_REPORTER, "source");
    assert_int_equal(t.opened, 1);
    assert_int_equal(t.closed, 1);
    assert_int_equal(t.received_bytes, 10);
    struct mesh_metrics *m2 = mesh_metrics_new(&fe.env);
    assert_int_equal(mesh_metrics_merge(m2, m), 0);
    assert_int_equal(mesh_metrics_merge(m2, m), 0);
    assert_int_equal(mesh_metrics_sum(m2, MESH_METRICS_L_REPORTER, NULL).opened, 4);
    mesh_metrics_free(m2);
    mesh_metrics_free(m);
}

static void test_addr_format(void **state)
{
    (void)state;
    char b[64];
    struct mesh_addr a = ip("fd00::1");
    a.port = htons(15008);
    assert_true(mesh_addr_format(&a, true, b, sizeof(b)) > 0);
    assert_string_equal(b, "[fd00::1]:15008");
    a = ip("10.0.0.1");
    a.port = htons(80);
    mesh_addr_format(&a, true, b, sizeof(b));
    assert_string_equal(b, "10.0.0.1:80");
    assert_int_equal(mesh_addr_format(&a, true, b, 4), -ENOSPC);
    assert_int_equal(mesh_addr_parse_ip("10.0.0", &a), -EINVAL);
}

/* ---- shared snapshots: derive_shared must index exactly what a full build of the same records does ---- */

#define DRV_RECORDS 64 /* record slots; a slot is reused after its record is gone from every snapshot */
#define DRV_IPS 40     /* addresses drawn from a small pool, so that conflicts happen */
#define DRV_STEPS 400

struct drv_keeper {
    long held;
    uint64_t next;
};

static void drv_hold(void *u, uint64_t *ticket)
{
    struct drv_keeper *k = u;
    k->held++;
    *ticket = ++k->next;
}

static void drv_release(void *u, uint64_t ticket)
{
    struct drv_keeper *k = u;
    (void)ticket;
    k->held--;
}

static uint32_t drv_rand(uint32_t *st)
{
    *st = *st * 1103515245u + 12345u;
    return *st >> 8;
}

static const struct mesh_service DRV_S[3] = {
    {.name = "s0", .namespace = "ns", .hostname = "s0.ns.svc.cluster.local", .ports = NULL},
    {.name = "s1", .namespace = "ns", .hostname = "s1.ns.svc.cluster.local", .ports = NULL},
    {.name = "s2", .namespace = "other", .hostname = "s2.other.svc.cluster.local", .ports = NULL},
};
static const struct mesh_workload_service DRV_REFS[4] = {
    {"ns/s0.ns.svc.cluster.local", NULL, 0},
    {"ns/s1.ns.svc.cluster.local", NULL, 0},
    {"other/s2.other.svc.cluster.local", NULL, 0},
    {"ns/later.ns.svc.cluster.local", NULL, 0}, /* a service that never arrives */
};

struct drv_rec {
    struct mesh_workload w;
    struct mesh_addr addr[2];
    char uid[32];
};

/* Every lookup of a and b agrees: uid, every pooled IP, and each service's endpoints as a multiset. */
static void drv_same(const struct mesh_workloads *a, const struct mesh_workloads *b)
{
    assert_int_equal(mesh_workloads_count(a), mesh_workloads_count(b));
    for (size_t i = 0; i < mesh_workloads_count(a); i++) {
        const struct mesh_workload *w = mesh_workloads_at(a, i);
        assert_ptr_equal(mesh_workloads_find_by_uid(b, w->uid), w);
        assert_ptr_equal(mesh_workloads_find_by_uid(a, w->uid), w);
    }
    for (int i = 0; i < DRV_IPS; i++) {
        struct mesh_addr q = {.family = MESH_ADDR_V4};
        q.ip.v4[0] = 10, q.ip.v4[3] = (uint8_t)(i + 1);
        assert_ptr_equal(mesh_workloads_find_by_ip(a, &q), mesh_workloads_find_by_ip(b, &q));
    }
    for (size_t k = 0; k < mesh_workloads_service_count(a); k++) {
        const struct mesh_service *sv = mesh_workloads_service_at(a, k);
        const struct mesh_endpoint *ea, *eb;
        size_t na = mesh_workloads_endpoints(a, sv, &ea), nb = mesh_workloads_endpoints(b, sv, &eb);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
            size_t in_a = 0, in_b = 0;
            for (size_t j = 0; j < na; j++) {
                in_a += ea[j].workload == ea[i].workload;
                in_b += eb[j].workload == ea[i].workload;
            }
            assert_int_equal(in_a, in_b);
        }
    }
}

static void test_workload_derive_matches_full_build(void **state)
{
    static struct drv_rec recs[DRV_RECORDS];
    const struct mesh_workload *list[DRV_RECORDS] = {0}, *gone[DRV_RECORDS] = {0}, *added[DRV_RECORDS] = {0};
    const struct mesh_service *svcs[3] = {&DRV_S[0], &DRV_S[1], &DRV_S[2]};
    bool in_list[DRV_RECORDS] = {0}, held_by_prev[DRV_RECORDS] = {0};
    struct drv_keeper kept = {0};
    const struct mesh_workloads_keeper keeper = {drv_hold, drv_release, &kept};
    const struct mesh_workloads *prev;
    uint32_t st = 12345;
    size_t n = 0, derived = 0, refused = 0;
    const char *err = NULL;
    (void)state;

    prev = mesh_workloads_new_shared(&fe.env, list, 0, svcs, 3, &keeper, &err);
    assert_non_null(prev);
    for (int step = 0; step < DRV_STEPS; step++) {
        size_t n_gone = 0, n_added = 0, changes = 1 + drv_rand(&st) % 3;
        for (size_t c = 0; c < changes; c++) {
            uint32_t op = drv_rand(&st) % 3;
            if (op != 0 && n > 0) { /* remove (op 1) or replace (op 2) a listed record */
                size_t at = drv_rand(&st) % n;
                const struct mesh_workload *w = list[at];
                size_t slot = (size_t)((const struct drv_rec *)(const void *)w - recs);
                bool was_added = false;
                for (size_t i = 0; i < n_added; i++)
                    if (added[i] == w) {
                        added[i] = added[--n_added];
                        was_added = true;
                    }
                if (!was_added)
                    gone[n_gone++] = w;
                list[at] = list[--n];
                in_list[slot] = false;
                if (op == 1)
                    continue;
            }
            /* add a record in a free slot (one neither listed nor held by prev) */
            size_t slot = DRV_RECORDS;
            for (size_t i = 0; i < DRV_RECORDS && slot == DRV_RECORDS; i++)
                if (!in_list[i] && !held_by_prev[i])
                    slot = i;
            if (slot == DRV_RECORDS)
                continue;
            struct drv_rec *r = &recs[slot];
            memset(r, 0, sizeof(*r));
            snprintf(r->uid, sizeof(r->uid), "uid-%u", (unsigned)(drv_rand(&st) % 100));
            r->w = (struct mesh_workload){.uid = r->uid, .name = "w", .namespace = "ns", .service_account = "sa",
                                          .trust_domain = "cluster.local", .network = "", .node = "",
                                          .canonical_name = "", .canonical_revision = "", .workload_name = "",
                                          .cluster_id = "", .capacity = 1, .protocol = MESH_TUNNEL_HBONE};
            r->w.n_addresses = 1 + drv_rand(&st) % 2;
            for (size_t a = 0; a < r->w.n_addresses; a++) {
                r->addr[a].family = MESH_ADDR_V4;
                r->addr[a].ip.v4[0] = 10;
                r->addr[a].ip.v4[3] = (uint8_t)(1 + drv_rand(&st) % DRV_IPS);
            }
            if (r->w.n_addresses == 2 && mesh_addr_ip_eq(&r->addr[0], &r->addr[1]))
                r->w.n_addresses = 1;
            r->w.addresses = r->addr;
            r->w.network_mode = drv_rand(&st) % 10 == 0 ? MESH_NETWORK_HOST : MESH_NETWORK_STANDARD;
            r->w.services = &DRV_REFS[drv_rand(&st) % 3];
            r->w.n_services = 1 + drv_rand(&st) % 2;
            list[n++] = &r->w;
            in_list[slot] = true;
            added[n_added++] = &r->w;
        }
        const char *why_full = NULL, *why_derived = NULL;
        struct mesh_workloads *full = mesh_workloads_new_shared(&fe.env, list, n, svcs, 3, &keeper, &why_full);
        struct mesh_workloads *next = mesh_workloads_derive_shared(prev, list, n, gone, n_gone, added, n_added,
                                                                   &why_derived);
        if (full == NULL) { /* a conflict: derive refuses the same list; undo this step */
            assert_null(next);
            assert_non_null(why_derived);
            refused++;
            for (size_t i = 0; i < n_added; i++)
                in_list[(const struct drv_rec *)(const void *)added[i] - recs] = false;
            n = 0;
            for (size_t i = 0; i < mesh_workloads_count(prev); i++) {
                const struct mesh_workload *w = mesh_workloads_at(prev, i);
                list[n++] = w;
                in_list[(const struct drv_rec *)(const void *)w - recs] = true;
            }
            continue;
        }
        assert_non_null(next);
        drv_same(next, full);
        derived++;
        mesh_workloads_unref(full);
        mesh_workloads_unref(prev);
        prev = next;
        memset(held_by_prev, 0, sizeof(held_by_prev));
        for (size_t i = 0; i < mesh_workloads_count(prev); i++)
            held_by_prev[(const struct drv_rec *)(const void *)mesh_workloads_at(prev, i) - recs] = true;
    }
    mesh_workloads_unref(prev);
    assert_int_equal(kept.held, 0);
    assert_true(derived > DRV_STEPS / 2);
    assert_true(refused > 0); /* the pool is small enough that conflicts were exercised */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_workload_lookups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workload_pick_weighted_healthy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workload_pick_allow_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workload_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workload_alloc_failure_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workload_derive_matches_full_build, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
