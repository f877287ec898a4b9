/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xds_bench: push-to-snapshot cost of the xDS conversion layer (mesh/xds_convert.c).
 * For 1,000 / 10,000 / 50,000 workloads, with one service per 10 workloads and one policy per 20, it encodes the
 * Address and Authorization payloads with protobuf-c, applies them through mesh_xds_convert_apply, builds the
 * snapshot (mesh_xds_convert_batch_done), and reports the time, the heap used (glibc mallinfo2, decoded payloads
 * excluded), then the median of 9 incremental workload updates and 9 incremental policy updates on top.
 * Targets: 10,000 in < 1 s, incremental < 10 ms at 50,000, < 2 KiB per workload.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mesh/xds_convert.h"
#include "proto/authorization.pb-c.h"
#include "proto/workload.pb-c.h"

struct payload {
    char name[128];
    uint8_t *buf;
    size_t len;
};

static uint64_t mono_ns(void *u)
{
    struct timespec ts;
    (void)u;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int rnd(void *u, void *b, size_t n)
{
    (void)u;
    memset(b, 7, n);
    return 0;
}
static void *a_alloc(void *u, size_t n)
{
    (void)u;
    return malloc(n);
}
static void *a_realloc(void *u, void *p, size_t n)
{
    (void)u;
    return realloc(p, n);
}
static void a_free(void *u, void *p)
{
    (void)u;
    free(p);
}

static void make_workload(struct payload *p, size_t i, int version)
{
    Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;
    Istio__Workload__Workload w = ISTIO__WORKLOAD__WORKLOAD__INIT;
    Istio__Workload__Workload__ServicesEntry se = ISTIO__WORKLOAD__WORKLOAD__SERVICES_ENTRY__INIT, *sep = &se;
    Istio__Workload__PortList pl = ISTIO__WORKLOAD__PORT_LIST__INIT;
    Istio__Workload__Port port = ISTIO__WORKLOAD__PORT__INIT, *pp = &port;
    uint8_t ip[4] = {10, (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
    ProtobufCBinaryData addr = {4, ip};
    char name[64], ns[32], sa[32], key[128], node[32], pol[64];
    char *pols[1] = {pol};

    snprintf(p->name, sizeof(p->name), "Kubernetes//Pod/ns-%zu/pod-%zu", i % 100, i);
    snprintf(name, sizeof(name), "pod-%zu", i);
    snprintf(ns, sizeof(ns), "ns-%zu", i % 100);
    snprintf(sa, sizeof(sa), "sa-%zu", i % 500);
    snprintf(key, sizeof(key), "ns-%zu/svc-%zu.ns-%zu.svc.cluster.local", (i / 10) % 100, i / 10, (i / 10) % 100);
    snprintf(node, sizeof(node), "node-%zu", i % 200);
    snprintf(pol, sizeof(pol), "ns-%zu/pol-%zu", (i / 20) % 100, i / 20);
    w.uid = p->name;
    w.name = name;
    w.namespace_ = ns;
    w.service_account = sa;
    w.node = node;
    w.canonical_name = name;
    w.canonical_revision = version ? "v2" : "v1";
    w.workload_name = name;
    w.cluster_id = "Kubernetes";
    w.n_addresses = 1;
    w.addresses = &addr;
    w.tunnel_protocol = ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE;
    port.service_port = 80;
    port.target_port = 8080;
    pl.n_ports = 1;
    pl.ports = &pp;
    se.key = key;
    se.value = &pl;
    w.n_services = 1;
    w.services = &sep;
    w.n_authorization_policies = 1;
    w.authorization_policies = pols;
    a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
    a.workload = &w;
    p->len = istio__workload__address__get_packed_size(&a);
    p->buf = malloc(p->len);
    istio__workload__address__pack(&a, p->buf);
}

static void make_service(struct payload *p, size_t i)
{
    Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;
    Istio__Workload__Service s = ISTIO__WORKLOAD__SERVICE__INIT;
    Istio__Workload__NetworkAddress na = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT, *nap = &na;
    Istio__Workload__Port port = ISTIO__WORKLOAD__PORT__INIT, *pp = &port;
    uint8_t ip[4] = {172, 16 + (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
    char ns[32], host[96];

    snprintf(ns, sizeof(ns), "ns-%zu", i % 100);
    snprintf(host, sizeof(host), "svc-%zu.ns-%zu.svc.cluster.local", i, i % 100);
    snprintf(p->name, sizeof(p->name), "%s/%s", ns, host);
    s.name = host;
    s.namespace_ = ns;
    s.hostname = host;
    na.network = "";
    na.address = (ProtobufCBinaryData){4, ip};
    s.n_addresses = 1;
    s.addresses = &nap;
    port.service_port = 80;
    port.target_port = 8080;
    s.n_ports = 1;
    s.ports = &pp;
    a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
    a.service = &s;
    p->len = istio__workload__address__get_packed_size(&a);
    p->buf = malloc(p->len);
    istio__workload__address__pack(&a, p->buf);
}

static void make_policy(struct payload *p, size_t i, int version)
{
    Istio__Security__Authorization az = ISTIO__SECURITY__AUTHORIZATION__INIT;
    Istio__Security__Rule rule = ISTIO__SECURITY__RULE__INIT, *rp = &rule;
    Istio__Security__Clause cl = ISTIO__SECURITY__CLAUSE__INIT, *clp = &cl;
    Istio__Security__Match m = ISTIO__SECURITY__MATCH__INIT, *mp = &m;
    Istio__Security__StringMatch sm = ISTIO__SECURITY__STRING_MATCH__INIT, *smp = &sm;
    uint32_t ports[2] = {8080, version ? 9090 : 8443};
    char ns[32], name[32], pr[96];

    snprintf(ns, sizeof(ns), "ns-%zu", i % 100);
    snprintf(name, sizeof(name), "pol-%zu", i);
    snprintf(p->name, sizeof(p->name), "%s/%s", ns, name);
    snprintf(pr, sizeof(pr), "cluster.local/ns/ns-%zu/sa/", (i + 1) % 100);
    sm.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX;
    sm.prefix = pr;
    m.n_principals = 1;
    m.principals = &smp;
    m.n_destination_ports = 2;
    m.destination_ports = ports;
    cl.n_matches = 1;
    cl.matches = &mp;
    rule.n_clauses = 1;
    rule.clauses = &clp;
    az.name = name;
    az.namespace_ = ns;
    az.scope = ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR;
    az.action = ISTIO__SECURITY__ACTION__ALLOW;
    az.n_rules = 1;
    az.rules = &rp;
    p->len = istio__security__authorization__get_packed_size(&az);
    p->buf = malloc(p->len);
    istio__security__authorization__pack(&az, p->buf);
}

static void apply(struct mesh_xds_convert *c, enum mesh_xds_type t, const struct payload *p)
{
    struct mesh_xds_resource r = {.type = t, .name = p->name, .version = "1", .value = p->buf, .value_len = p->len};
    const char *why = mesh_xds_convert_apply(c, &r);
    if (why != NULL) {
        fprintf(stderr, "%s rejected: %s\n", p->name, why);
        exit(1);
    }
}

#define INCR_RUNS 9

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void on_publish(void *u, const struct mesh_xds_state *s)
{
    const struct mesh_xds_state **cur = u;
    mesh_xds_state_unref(*cur);
    *cur = s;
}

int main(void)
{
    const size_t sizes[] = {1000, 10000, 50000};
    struct mesh_env env = {.now_ns = mono_ns, .random = rnd, .alloc = a_alloc, .realloc = a_realloc, .free = a_free};

    printf("%-10s %8s %8s %10s %10s %14s %10s %12s %14s\n", "workloads", "services", "policies", "push_ms",
           "bytes/wl", "(converter)", "heap_MiB", "incr_wl_ms", "incr_policy_ms");
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t nw = sizes[k], ns = nw / 10, np = nw / 20;
        struct payload *w = calloc(nw, sizeof(*w)), *s = calloc(ns, sizeof(*s)), *p = calloc(np, sizeof(*p));
        struct payload upd_w, upd_p;
        const struct mesh_xds_state *cur = NULL;
        struct mesh_xds_convert *c;
        struct mallinfo2 m0, m1;
        uint64_t t0, t1, t2, t3, t4;
        int err;

        for (size_t i = 0; i < nw; i++)
            make_workload(&w[i], i, 0);
        for (size_t i = 0; i < ns; i++)
            make_service(&s[i], i);
        for (size_t i = 0; i < np; i++)
            make_policy(&p[i], i, 0);
        make_workload(&upd_w, nw / 2, 1);
        make_policy(&upd_p, np / 2, 1);

        malloc_trim(0);
        m0 = mallinfo2();
        t0 = mono_ns(NULL);
        c = mesh_xds_convert_new(&env, on_publish, &cur, &err);
        for (size_t i = 0; i < ns; i++)
            apply(c, MESH_XDS_TYPE_ADDRESS, &s[i]);
        for (size_t i = 0; i < nw; i++)
            apply(c, MESH_XDS_TYPE_ADDRESS, &w[i]);
        mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS);
        for (size_t i = 0; i < np; i++)
            apply(c, MESH_XDS_TYPE_AUTHORIZATION, &p[i]);
        mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_AUTHORIZATION);
        t1 = mono_ns(NULL);
        m1 = mallinfo2();
        if (cur == NULL || mesh_workloads_count(cur->workloads) != nw || mesh_authz_set_count(cur->authz) != np) {
            fprintf(stderr, "snapshot incomplete\n");
            return 1;
        }
        /* one workload changes, then one policy: the median of INCR_RUNS updates each */
        {
            uint64_t dw[INCR_RUNS], dp[INCR_RUNS];
            for (int r = 0; r < INCR_RUNS; r++) {
                struct payload *uw = r % 2 == 0 ? &upd_w : &w[nw / 2];
                struct payload *up = r % 2 == 0 ? &upd_p : &p[np / 2];
                t2 = mono_ns(NULL);
                apply(c, MESH_XDS_TYPE_ADDRESS, uw);
                mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS);
                t3 = mono_ns(NULL);
                apply(c, MESH_XDS_TYPE_AUTHORIZATION, up);
                mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_AUTHORIZATION);
                t4 = mono_ns(NULL);
                dw[r] = t3 - t2;
                dp[r] = t4 - t3;
            }
            qsort(dw, INCR_RUNS, sizeof(dw[0]), cmp_u64);
            qsort(dp, INCR_RUNS, sizeof(dp[0]), cmp_u64);
            t2 = 0;
            t3 = dw[INCR_RUNS / 2];
            t4 = t3 + dp[INCR_RUNS / 2];
        }
        {
            double used = (double)(m1.uordblks - m0.uordblks) + (double)(m1.hblkhd - m0.hblkhd);
            printf("%-10zu %8zu %8zu %10.1f %10.0f %14.0f %10.1f %12.3f %14.3f\n", nw, ns, np,
                   (double)(t1 - t0) / 1e6, used / (double)nw, (double)mesh_xds_convert_stats(c)->bytes / (double)nw,
                   used / 1048576.0, (double)(t3 - t2) / 1e6, (double)(t4 - t3) / 1e6);
        }
        mesh_xds_state_unref(cur);
        mesh_xds_convert_free(c);
        for (size_t i = 0; i < nw; i++)
            free(w[i].buf);
        for (size_t i = 0; i < ns; i++)
            free(s[i].buf);
        for (size_t i = 0; i < np; i++)
            free(p[i].buf);
        free(upd_w.buf);
        free(upd_p.buf);
        free(w);
        free(s);
        free(p);
    }
    return 0;
}
