/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/xds_convert.c: every payload comes from the Python protobuf encoder (gen_xds_convert_fixtures.py). Checks the
 * conversion of every field and enum the model holds, the defaults, each rejection with its reason, removals by name
 * and by alias, incremental snapshots (the untouched half is shared), address conflicts, the NACK text through the
 * real xDS client, and an allocation-failure sweep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/err.h"
#include "mesh/xds_convert.h"
#include "proto/discovery.pb-c.h"
#include "tests/fakes/fake_clock.h"
#include "xds_convert_fixtures.h"

/* The identity of a workload, by value (the snapshot does not store it). */
static struct mesh_spiffe_id workload_id(const struct mesh_workload *w)
{
    struct mesh_spiffe_id id;
    assert_int_equal(mesh_workload_identity(w, &id), 0);
    return id;
}

#define FX(n) cfx_##n, cfx_##n##_len

static struct fake_env fe;

struct pub {
    int n;
    const struct mesh_xds_state *last;
};

static void on_publish(void *u, const struct mesh_xds_state *s)
{
    struct pub *p = u;

    p->n++;
    mesh_xds_state_unref(p->last);
    p->last = s;
}

static const char *apply(struct mesh_xds_convert *c, enum mesh_xds_type t, const char *name, const uint8_t *v,
                         size_t len)
{
    struct mesh_xds_resource r = {.type = t, .name = name, .version = "1", .value = v, .value_len = len};
    return mesh_xds_convert_apply(c, &r);
}

static const char *apply_alias(struct mesh_xds_convert *c, const char *name, const char *alias, const uint8_t *v,
                               size_t len)
{
    const char *al[1] = {alias};
    struct mesh_xds_resource r = {.type = MESH_XDS_TYPE_ADDRESS, .name = name, .version = "1", .value = v,
                                  .value_len = len, .aliases = al, .n_aliases = 1};
    return mesh_xds_convert_apply(c, &r);
}

static struct mesh_xds_convert *new_conv(struct pub *p)
{
    int err = 0;
    struct mesh_xds_convert *c = mesh_xds_convert_new(&fe.env, on_publish, p, &err);

    assert_non_null(c);
    return c;
}

static void done(struct mesh_xds_convert *c, struct pub *p)
{
    mesh_xds_convert_free(c);
    mesh_xds_state_unref(p->last);
    p->last = NULL;
    assert_int_equal(fe.alloc.live, 0);
}

static struct mesh_addr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
    struct mesh_addr x = {.family = MESH_ADDR_V4};
    x.ip.v4[0] = a;
    x.ip.v4[1] = b;
    x.ip.v4[2] = c;
    x.ip.v4[3] = d;
    return x;
}

#define WL_A "Kubernetes//Pod/default/a"
#define SVC "default/svc.default.svc.cluster.local"

/* ---- workloads ---- */

static void test_xds_convert_workload_full(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    const struct mesh_workload *w;
    struct mesh_addr ip = v4(10, 0, 0, 1);

    (void)state;
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, WL_A, FX(good_workload_full)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.last->generation, 1);
    assert_int_equal(mesh_workloads_count(p.last->workloads), 1);
    w = mesh_workloads_find_by_ip(p.last->workloads, &ip);
    assert_non_null(w);
    assert_string_equal(w->uid, WL_A);
    assert_string_equal(w->name, "a");
    assert_string_equal(w->namespace, "default");
    assert_int_equal(w->n_addresses, 2);
    assert_int_equal(w->addresses[1].family, MESH_ADDR_V6);
    assert_int_equal(w->addresses[1].ip.v6[0], 0xfd);
    assert_int_equal(w->addresses[1].ip.v6[15], 1);
    assert_string_equal(w->network, "net1");
    assert_int_equal(w->protocol, MESH_TUNNEL_HBONE);
    assert_string_equal(w->trust_domain, "td.example");
    assert_string_equal(w->service_account, "sa-a");
    assert_string_equal(workload_id(w).td, "td.example");
    assert_string_equal(workload_id(w).sa, "sa-a");
    assert_true(w->waypoint.set);
    assert_int_equal(w->waypoint.address.family, MESH_ADDR_V4);
    assert_int_equal(w->waypoint.address.ip.v4[3], 9);
    assert_int_equal(w->waypoint.hbone_mtls_port, 15009);
    assert_string_equal(w->node, "node-1");
    assert_string_equal(w->canonical_name, "app-a");
    assert_string_equal(w->canonical_revision, "v1");
    assert_string_equal(w->workload_name, "deploy-a");
    assert_string_equal(w->cluster_id, "Kubernetes");
    assert_int_equal(w->n_services, 2);
    for (size_t i = 0; i < w->n_services; i++) {
        if (strcmp(w->services[i].key, "default/svc.default.svc.cluster.local") == 0) {
            assert_int_equal(w->services[i].n_ports, 1);
            assert_int_equal(w->services[i].ports[0].service_port, 80);
            assert_int_equal(w->services[i].ports[0].target_port, 8080);
        } else {
            assert_string_equal(w->services[i].key, "default/other.default.svc.cluster.local");
            assert_int_equal(w->services[i].ports[0].target_port, 0);
        }
    }
    assert_int_equal(w->n_authorization_policies, 2);
    assert_string_equal(w->authorization_policies[1], "istio-system/istio_converted_static_strict");
    assert_int_equal(w->status, MESH_WORKLOAD_UNHEALTHY);
    assert_int_equal(w->network_mode, MESH_NETWORK_STANDARD);
    assert_int_equal(w->capacity, 7);
    assert_int_equal(mesh_xds_convert_stats(c)->workloads, 1);
    done(c, &p);
}

static void test_xds_convert_workload_defaults(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    const struct mesh_workload *w;

    (void)state;
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/d", FX(good_workload_defaults)));
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/cap0", FX(good_workload_capacity0)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    w = mesh_workloads_find_by_uid(p.last->workloads, "Kubernetes//Pod/default/d");
    assert_non_null(w);
    assert_string_equal(w->trust_domain, "cluster.local");
    assert_string_equal(w->service_account, "default");
    assert_string_equal(workload_id(w).td, "cluster.local");
    assert_string_equal(workload_id(w).ns, "default");
    assert_string_equal(workload_id(w).sa, "default");
    assert_int_equal(w->capacity, 1);
    assert_string_equal(w->network, "");
    assert_int_equal(w->status, MESH_WORKLOAD_HEALTHY);
    assert_true(w->waypoint.set);
    assert_string_equal(w->waypoint.hostname, "waypoint.default.svc.cluster.local");
    assert_string_equal(w->waypoint.hostname_namespace, "default");
    assert_int_equal(w->waypoint.hbone_mtls_port, MESH_XDS_DEFAULT_HBONE_PORT);
    w = mesh_workloads_find_by_uid(p.last->workloads, "Kubernetes//Pod/default/cap0");
    assert_int_equal(w->capacity, 1);
    done(c, &p);
}

struct enum_case {
    const uint8_t *v;
    size_t len;
    int want; /* model value */
};

static const struct mesh_workload *one_workload(struct mesh_xds_convert *c, struct pub *p, const uint8_t *v,
                                                size_t len)
{
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "u", v, len));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    return mesh_workloads_find_by_uid(p->last->workloads, "u");
}

static void test_xds_convert_workload_enums(void **state)
{
    const struct enum_case tunnel[] = {{FX(enum_tunnel_none), MESH_TUNNEL_NONE},
                                       {FX(enum_tunnel_hbone), MESH_TUNNEL_HBONE}};
    const struct enum_case status[] = {{FX(enum_status_healthy), MESH_WORKLOAD_HEALTHY},
                                       {FX(enum_status_unhealthy), MESH_WORKLOAD_UNHEALTHY}};
    const struct enum_case mode[] = {{FX(enum_netmode_standard), MESH_NETWORK_STANDARD},
                                     {FX(enum_netmode_host), MESH_NETWORK_HOST}};
    const struct enum_case accepted[] = {
        {FX(enum_wltype_deployment), 0}, {FX(enum_wltype_cronjob), 0}, {FX(enum_wltype_pod), 0},
        {FX(enum_wltype_job), 0},        {FX(enum_apptunnel_none), 0}, {FX(enum_apptunnel_proxy), 0},
        {FX(enum_appproto_unknown), 0},  {FX(enum_appproto_http11), 0}, {FX(enum_appproto_http2), 0},
        {FX(enum_appproto_grpc), 0},     {FX(enum_appproto_tcp), 0},   {FX(enum_appproto_tls), 0},
    };
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(one_workload(c, &p, tunnel[i].v, tunnel[i].len)->protocol, tunnel[i].want);
        assert_int_equal(one_workload(c, &p, status[i].v, status[i].len)->status, status[i].want);
        assert_int_equal(one_workload(c, &p, mode[i].v, mode[i].len)->network_mode, mode[i].want);
    }
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++)
        assert_non_null(one_workload(c, &p, accepted[i].v, accepted[i].len));
    /* a HOST_NETWORK workload is not found by IP */
    {
        struct mesh_addr ip = v4(10, 0, 0, 1);
        one_workload(c, &p, FX(enum_netmode_host));
        assert_null(mesh_workloads_find_by_ip(p.last->workloads, &ip));
    }
    done(c, &p);
}

/* ---- rejections ---- */

struct bad_case {
    enum mesh_xds_type type;
    const char *name;
    const uint8_t *v;
    size_t len;
    const char *reason;
};

static void test_xds_convert_rejections(void **state)
{
    const struct bad_case cases[] = {
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_garbage), "cannot decode istio.workload.Address"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_address_empty), "Address: neither workload nor service"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_legacy_mtls), "tunnel_protocol: LEGACY_ISTIO_MTLS is not supported"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_tunnel_unknown), "tunnel_protocol: unknown value 7"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_status_unknown), "status: unknown value 5"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_netmode_unknown), "network_mode: unknown value 9"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_wltype_unknown), "workload_type: unknown value 4"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_addr_len), "addresses[1]: 5 bytes, want 4 or 16"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_addr_twice), "addresses[1]: listed twice"},
        {MESH_XDS_TYPE_ADDRESS, "", FX(bad_uid_empty), "uid: empty"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_uid_mismatch),
         "uid: \"Kubernetes//Pod/default/zzz\" differs from the resource name"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_waypoint_nodest), "waypoint: no destination (neither hostname nor address)"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_waypoint_addr), "waypoint.address: 2 bytes, want 4 or 16"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_waypoint_port), "waypoint.hbone_mtls_port: 70000 is not a port"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_service_key), "services[\"nokey\"]: key is not namespace/hostname"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_target_port),
         "services[\"default/s\"].ports[0].target_port: 65536 is not a port"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_appproto_unknown),
         "services[\"default/s\"].ports[0].app_protocol: unknown value 6"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_identity_slash),
         "trust_domain/namespace/service_account: not a SPIFFE identity (a segment contains '/')"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_identity_long),
         "trust_domain/namespace/service_account: not a SPIFFE identity (a segment is longer than 255 bytes)"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_apptunnel_unknown), "application_tunnel.protocol: unknown value 2"},
        {MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_netgw_nodest),
         "network_gateway: no destination (neither hostname nor address)"},
        {MESH_XDS_TYPE_ADDRESS, "/svc.default.svc.cluster.local", FX(bad_svc_no_ns), "namespace: empty"},
        {MESH_XDS_TYPE_ADDRESS, "default/", FX(bad_svc_no_host), "hostname: empty"},
        {MESH_XDS_TYPE_ADDRESS, "default/x", FX(good_service_full),
         "namespace/hostname: \"default/svc.default.svc.cluster.local\" differs from the resource name"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_port0), "ports[1].service_port: 0"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_port_twice), "ports[1].service_port: 80 listed twice"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_port_range), "ports[1].service_port: 70000 is not a port"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_addr_len), "addresses[1].address: 2 bytes, want 4 or 16"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_prefix), "addresses[1].length: 33 is beyond /32"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_lbmode), "load_balancing.mode: unknown value 4"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_lbhealth), "load_balancing.health_policy: unknown value 2"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_lbscope), "load_balancing.routing_preference[0]: unknown value 7"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_ipfam), "ip_families: unknown value 4"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_visibility), "visibility: unknown value 2"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_ww_nodest), "weighted_waypoints[0].destination: missing"},
        {MESH_XDS_TYPE_ADDRESS, SVC, FX(bad_svc_vip_twice), "addresses[1]: listed twice"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_garbage), "cannot decode istio.security.Authorization"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_authz_scope), "scope: unknown value 3"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_authz_action), "action: unknown value 2"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_authz_name),
         "namespace/name: \"default/other\" differs from the resource name"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_authz_strmatch),
         "rules[0].clauses[0].matches[0].principals[0]: no match type"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_authz_ip_len),
         "rules[0].clauses[0].matches[0].source_ips[0].address: 3 bytes, want 4 or 16"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_authz_prefix),
         "rules[0].clauses[0].matches[0].destination_ips[0].length: 40 is beyond /32"},
        {MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(bad_authz_port),
         "rules[0].clauses[0].matches[0].destination_ports[0]: 65536 is not a port"},
    };
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why = apply(c, cases[i].type, cases[i].name, cases[i].v, cases[i].len);
        if (why == NULL || strcmp(why, cases[i].reason) != 0) {
            fprintf(stderr, "case %zu: got \"%s\", want \"%s\"\n", i, why ? why : "(accepted)", cases[i].reason);
            fail();
        }
    }
    assert_int_equal(mesh_xds_convert_stats(c)->rejected[MESH_XDS_TYPE_ADDRESS], 36);
    assert_int_equal(mesh_xds_convert_stats(c)->applied[MESH_XDS_TYPE_ADDRESS], 0);
    /* nothing was applied: the first snapshot is empty */
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(mesh_workloads_count(p.last->workloads), 0);
    assert_int_equal(mesh_authz_set_count(p.last->authz), 0);
    done(c, &p);
}

/* A rejected update keeps the previously accepted version. */
static void test_xds_convert_reject_keeps_old(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);

    (void)state;
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, WL_A, FX(good_workload_full)));
    assert_non_null(apply(c, MESH_XDS_TYPE_ADDRESS, WL_A, FX(bad_legacy_mtls)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(mesh_workloads_find_by_uid(p.last->workloads, WL_A)->capacity, 7);
    done(c, &p);
}

/* ---- services ---- */

static void test_xds_convert_service(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    const struct mesh_service *s;
    struct mesh_addr vip = v4(10, 96, 0, 10), vip2 = v4(10, 96, 0, 11), cidr = v4(10, 200, 0, 0);

    (void)state;
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, SVC, FX(good_service_full)));
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "default/headless.default.svc.cluster.local",
                      FX(good_service_headless)));
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, WL_A, FX(good_workload_full)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    s = mesh_workloads_find_service_by_vip(p.last->workloads, &vip);
    assert_non_null(s);
    assert_string_equal(s->name, "svc");
    assert_string_equal(s->namespace, "default");
    assert_string_equal(s->hostname, "svc.default.svc.cluster.local");
    assert_int_equal(s->n_addresses, 3);
    assert_ptr_equal(mesh_workloads_find_service_by_vip(p.last->workloads, &vip2), s);
    assert_null(mesh_workloads_find_service_by_vip(p.last->workloads, &cidr));
    assert_int_equal(s->n_ports, 2);
    assert_int_equal(s->ports[1].service_port, 443);
    assert_int_equal(s->ports[1].target_port, 0);
    assert_int_equal(s->n_subject_alt_names, 1);
    assert_string_equal(s->subject_alt_names[0], "spiffe://td.example/ns/default/sa/extra");
    assert_true(s->waypoint.set);
    assert_string_equal(s->waypoint.hostname, "waypoint.default.svc.cluster.local");
    assert_int_equal(s->lb_mode, MESH_LB_FAILOVER);
    assert_int_equal(s->lb_health, MESH_LB_ALLOW_ALL);
    {
        const struct mesh_endpoint *eps;
        assert_int_equal(mesh_workloads_endpoints(p.last->workloads, s, &eps), 1);
        assert_string_equal(eps[0].workload->uid, WL_A);
    }
    s = mesh_workloads_find_service_by_key(p.last->workloads, "default/headless.default.svc.cluster.local");
    assert_non_null(s);
    assert_int_equal(s->n_addresses, 0);
    done(c, &p);
}

static void test_xds_convert_service_enums(void **state)
{
    const struct enum_case mode[] = {{FX(enum_lbmode_unspecified), MESH_LB_UNSPECIFIED},
                                     {FX(enum_lbmode_strict), MESH_LB_STRICT},
                                     {FX(enum_lbmode_failover), MESH_LB_FAILOVER},
                                     {FX(enum_lbmode_passthrough), MESH_LB_PASSTHROUGH}};
    const struct enum_case health[] = {{FX(enum_lbhealth_only_healthy), MESH_LB_ONLY_HEALTHY},
                                       {FX(enum_lbhealth_allow_all), MESH_LB_ALLOW_ALL}};
    const struct enum_case other[] = {{FX(enum_lbscope_all), 0},   {FX(enum_ipfamilies_0), 0},
                                      {FX(enum_ipfamilies_1), 0},  {FX(enum_ipfamilies_2), 0},
                                      {FX(enum_ipfamilies_3), 0},  {FX(enum_visibility_0), 0},
                                      {FX(enum_visibility_1), 0}};
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);

    (void)state;
    for (size_t i = 0; i < 4; i++) {
        assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, SVC, mode[i].v, mode[i].len));
        assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
        assert_int_equal(mesh_workloads_find_service_by_key(p.last->workloads, SVC)->lb_mode, mode[i].want);
    }
    for (size_t i = 0; i < 2; i++) {
        assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, SVC, health[i].v, health[i].len));
        assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
        assert_int_equal(mesh_workloads_find_service_by_key(p.last->workloads, SVC)->lb_health, health[i].want);
    }
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
        assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, SVC, other[i].v, other[i].len));
    done(c, &p);
}

/* ---- authorization ---- */

static void test_xds_convert_authz(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    const struct mesh_authz_set *set;
    int32_t i;

    (void)state;
    assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(good_authz_full)));
    assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/allow", FX(good_authz_allow_ns)));
    assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "istio-system/all", FX(good_authz_global_allow_all)));
    assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/ports", FX(good_authz_unpacked_ports)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_AUTHORIZATION), MESH_OK);
    set = p.last->authz;
    assert_int_equal(mesh_authz_set_count(set), 4);
    i = mesh_authz_set_find(set, "default/pol", strlen("default/pol"));
    assert_true(i >= 0);
    assert_int_equal(mesh_authz_set_policy_action(set, (size_t)i), MESH_AUTHZ_ACTION_DENY);
    assert_true(mesh_authz_set_policy_dry_run(set, (size_t)i));
    i = mesh_authz_set_find(set, "default/allow", strlen("default/allow"));
    assert_int_equal(mesh_authz_set_policy_action(set, (size_t)i), MESH_AUTHZ_ACTION_ALLOW);
    assert_false(mesh_authz_set_policy_dry_run(set, (size_t)i));

    /* Semantics through the converted set: the NAMESPACE ALLOW policy with no rules denies everything in
     * "default"; the GLOBAL allow-all lets "other" through; ports 80/443 of "default/ports" are not consulted. */
    {
        struct mesh_spiffe_id peer;
        struct mesh_authz_conn conn = {.peer = &peer, .dst_namespace = "default"};
        struct mesh_authz_result res;

        assert_int_equal(mesh_spiffe_from_parts("cluster.local", "x", "y", &peer), 0);
        conn.src = v4(10, 9, 9, 9);
        conn.dst = v4(10, 0, 0, 1);
        conn.dst.port = 0x5000; /* 80, network order */
        assert_int_equal(mesh_authz_eval(set, &conn, &res), MESH_AUTHZ_ALLOW); /* global allow-all matches */
        assert_int_equal(res.reason, MESH_AUTHZ_REASON_ALLOW_MATCHED);
    }
    done(c, &p);
}

static void test_xds_convert_authz_enums(void **state)
{
    const struct enum_case scope[] = {{FX(enum_scope_global), MESH_AUTHZ_SCOPE_GLOBAL},
                                      {FX(enum_scope_namespace), MESH_AUTHZ_SCOPE_NAMESPACE},
                                      {FX(enum_scope_selector), MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR}};
    const struct enum_case action[] = {{FX(enum_action_allow), MESH_AUTHZ_ACTION_ALLOW},
                                       {FX(enum_action_deny), MESH_AUTHZ_ACTION_DENY}};
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);

    (void)state;
    for (size_t i = 0; i < 3; i++)
        assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/pol", scope[i].v, scope[i].len));
    for (size_t i = 0; i < 2; i++) {
        assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/pol", action[i].v, action[i].len));
        assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_AUTHORIZATION), MESH_OK);
        assert_int_equal(mesh_authz_set_policy_action(p.last->authz, 0), action[i].want);
    }
    done(c, &p);
}

/* ---- removals, aliases, incremental sharing, conflicts ---- */

static void test_xds_convert_remove_and_alias(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);

    (void)state;
    assert_null(apply_alias(c, WL_A, "/10.0.0.1", FX(good_workload_full)));
    assert_null(apply_alias(c, "Kubernetes//Pod/default/b", "/10.0.0.2", FX(good_workload_b)));
    assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(good_authz_full)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(mesh_workloads_count(p.last->workloads), 2);

    mesh_xds_convert_remove(c, MESH_XDS_TYPE_ADDRESS, WL_A);       /* by name */
    mesh_xds_convert_remove(c, MESH_XDS_TYPE_ADDRESS, "/10.0.0.2"); /* by alias */
    mesh_xds_convert_remove(c, MESH_XDS_TYPE_ADDRESS, "never-seen");
    mesh_xds_convert_remove(c, MESH_XDS_TYPE_ADDRESS, "/10.0.0.1"); /* alias of a removed resource */
    assert_int_equal(mesh_xds_convert_stats(c)->removed[MESH_XDS_TYPE_ADDRESS], 2);
    assert_int_equal(mesh_xds_convert_stats(c)->removed_unknown, 2);
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(mesh_workloads_count(p.last->workloads), 0);
    assert_int_equal(mesh_authz_set_count(p.last->authz), 1);

    mesh_xds_convert_remove(c, MESH_XDS_TYPE_AUTHORIZATION, "default/pol");
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_AUTHORIZATION), MESH_OK);
    assert_int_equal(mesh_authz_set_count(p.last->authz), 0);
    assert_int_equal(p.n, 3);
    assert_int_equal(p.last->generation, 3);

    /* a removal naming nothing we hold changes nothing: no new snapshot */
    mesh_xds_convert_remove(c, MESH_XDS_TYPE_ADDRESS, "/10.9.9.9");
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(p.n, 3);
    done(c, &p);
}

static void test_xds_convert_incremental_sharing(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    const struct mesh_xds_state *s1, *s2;

    (void)state;
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, WL_A, FX(good_workload_full)));
    assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(good_authz_full)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    s1 = mesh_xds_state_ref(p.last);

    /* nothing changed: no new snapshot */
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(p.n, 1);

    /* only a policy changed: the workload model is shared */
    assert_null(apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/allow", FX(good_authz_allow_ns)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_AUTHORIZATION), MESH_OK);
    s2 = mesh_xds_state_ref(p.last);
    assert_ptr_equal(s2->workloads, s1->workloads);
    assert_ptr_not_equal(s2->authz, s1->authz);

    /* only a workload changed: the policy set is shared */
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/b", FX(good_workload_b)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_ptr_equal(p.last->authz, s2->authz);
    assert_ptr_not_equal(p.last->workloads, s2->workloads);
    assert_int_equal(p.last->generation, 3);
    /* the old snapshots stay intact while referenced */
    assert_int_equal(mesh_workloads_count(s1->workloads), 1);
    assert_int_equal(mesh_authz_set_count(s1->authz), 1);
    mesh_xds_state_unref(s1);
    mesh_xds_state_unref(s2);
    done(c, &p);
}

static void test_xds_convert_conflicts(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    struct mesh_addr ip = v4(10, 0, 0, 1), vip = v4(10, 96, 0, 10);

    (void)state;
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, WL_A, FX(good_workload_full)));
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/c", FX(good_workload_c_steals)));
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/kube-system/h", FX(good_workload_hostnet)));
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, SVC, FX(good_service_full)));
    assert_null(apply(c, MESH_XDS_TYPE_ADDRESS, "default/steal.default.svc.cluster.local", FX(good_service_steals)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_int_equal(mesh_workloads_count(p.last->workloads), 3);
    assert_string_equal(mesh_workloads_find_by_ip(p.last->workloads, &ip)->uid, "Kubernetes//Pod/default/c");
    assert_string_equal(mesh_workloads_find_service_by_vip(p.last->workloads, &vip)->hostname,
                        "steal.default.svc.cluster.local");
    assert_int_equal(mesh_xds_convert_stats(c)->address_conflicts, 2);
    /* the newest claimant goes away: the address returns to a */
    mesh_xds_convert_remove(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/c");
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    assert_string_equal(mesh_workloads_find_by_ip(p.last->workloads, &ip)->uid, WL_A);
    done(c, &p);
}

/* ---- through the real xDS client: partial application and the NACK text ---- */

static size_t pack_response(uint8_t *out, size_t cap, const char *type_url, const char *nonce, size_t n,
                            const char *const *names, const uint8_t *const *vals, const size_t *lens)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse resp;
    Envoy__Service__Discovery__V3__Resource res[4], *rp[4];
    Google__Protobuf__Any any[4];
    size_t len;

    assert_true(n <= 4);
    envoy__service__discovery__v3__delta_discovery_response__init(&resp);
    resp.type_url = (char *)(uintptr_t)type_url;
    resp.nonce = (char *)(uintptr_t)nonce;
    for (size_t i = 0; i < n; i++) {
        envoy__service__discovery__v3__resource__init(&res[i]);
        google__protobuf__any__init(&any[i]);
        any[i].type_url = (char *)(uintptr_t)type_url;
        any[i].value.data = (uint8_t *)(uintptr_t)vals[i];
        any[i].value.len = lens[i];
        res[i].name = (char *)(uintptr_t)names[i];
        res[i].version = (char *)"1";
        res[i].resource = &any[i];
        rp[i] = &res[i];
    }
    resp.n_resources = n;
    resp.resources = rp;
    len = envoy__service__discovery__v3__delta_discovery_response__get_packed_size(&resp);
    assert_true(len <= cap);
    return envoy__service__discovery__v3__delta_discovery_response__pack(&resp, out);
}

static void test_xds_convert_nack_through_client(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    struct mesh_xds_handler h;
    struct mesh_xds_client_cfg cfg = {.pod_name = "zt", .pod_namespace = "istio-system"};
    struct mesh_xds_client *xc;
    const char *names[3] = {SVC, WL_A, "Kubernetes//Pod/default/b"};
    const uint8_t *vals[3] = {cfx_good_service_full, cfx_bad_legacy_mtls, cfx_good_workload_b};
    size_t lens[3] = {cfx_good_service_full_len, cfx_bad_legacy_mtls_len, cfx_good_workload_b_len};
    uint8_t buf[4096];
    struct mesh_buf out;
    size_t n;
    int err;

    (void)state;
    mesh_xds_convert_handler(&h);
    xc = mesh_xds_client_new(&fe.env, &cfg, &h, c, &err);
    assert_non_null(xc);
    mesh_buf_init(&out, &fe.env, 0);
    assert_int_equal(mesh_xds_client_stream_start(xc), MESH_OK);
    while (mesh_xds_client_next_request(xc, &out) == 1)
        mesh_buf_reset(&out);
    n = pack_response(buf, sizeof(buf), MESH_XDS_TYPE_URL_ADDRESS, "n1", 3, names, vals, lens);
    assert_int_equal(mesh_xds_client_on_response(xc, buf, n), MESH_OK);
    assert_int_equal(mesh_xds_client_next_request(xc, &out), 1);
    {
        Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *rq =
            envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, mesh_buf_len(&out),
                                                                           mesh_buf_data(&out));
        assert_non_null(rq);
        assert_non_null(rq->error_detail);
        assert_string_equal(rq->error_detail->message,
                            WL_A ": tunnel_protocol: LEGACY_ISTIO_MTLS is not supported");
        assert_string_equal(rq->response_nonce, "n1");
        envoy__service__discovery__v3__delta_discovery_request__free_unpacked(rq, NULL);
    }
    /* the two good ones were applied and published */
    assert_int_equal(p.n, 1);
    assert_int_equal(mesh_workloads_count(p.last->workloads), 1);
    assert_int_equal(mesh_workloads_service_count(p.last->workloads), 1);
    assert_null(mesh_xds_client_record_version(xc, MESH_XDS_TYPE_ADDRESS, WL_A));
    mesh_buf_fini(&out);
    mesh_xds_client_free(xc);
    done(c, &p);
}

/* A snapshot kept for a long time (a connection's) pins the records it holds, not every record retired after it. */
static void test_xds_convert_long_lived_snapshot_pins_only_its_records(void **state)
{
    struct pub p = {0};
    struct mesh_xds_convert *c = new_conv(&p);
    const struct mesh_xds_state *held;
    long live_after_few;

    (void)state;
    assert_null(apply_alias(c, WL_A, "/10.0.0.1", FX(good_workload_full)));
    assert_null(apply_alias(c, "Kubernetes//Pod/default/b", "/10.0.0.2", FX(good_workload_b)));
    assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    held = mesh_xds_state_ref(p.last);
    for (int i = 0; i < 5; i++) {
        assert_null(apply_alias(c, "Kubernetes//Pod/default/b", "/10.0.0.2", FX(good_workload_b)));
        assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    }
    live_after_few = fe.alloc.live;
    for (int i = 0; i < 200; i++) {
        assert_null(apply_alias(c, "Kubernetes//Pod/default/b", "/10.0.0.2", FX(good_workload_b)));
        assert_int_equal(mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS), MESH_OK);
    }
    assert_true(fe.alloc.live <= live_after_few + 4); /* bounded: replaced records are freed */
    assert_true(mesh_xds_convert_stats(c)->derived >= 205);
    /* the held snapshot still reads its own (original) records */
    assert_non_null(mesh_workloads_find_by_uid(held->workloads, "Kubernetes//Pod/default/b"));
    assert_int_equal(mesh_workloads_count(held->workloads), 2);
    mesh_xds_state_unref(held);
    done(c, &p);
}

/* ---- allocation failures ---- */

static int scenario(void)
{
    struct pub p = {0};
    int err = 0, rc = 0;
    struct mesh_xds_convert *c = mesh_xds_convert_new(&fe.env, on_publish, &p, &err);

    if (c == NULL)
        return -1;
    (void)apply_alias(c, WL_A, "/10.0.0.1", FX(good_workload_full));
    (void)apply(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/c", FX(good_workload_c_steals));
    (void)apply(c, MESH_XDS_TYPE_ADDRESS, SVC, FX(good_service_full));
    (void)apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/pol", FX(good_authz_full));
    rc |= mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_ADDRESS);
    mesh_xds_convert_remove(c, MESH_XDS_TYPE_ADDRESS, "/10.0.0.1");
    (void)apply(c, MESH_XDS_TYPE_AUTHORIZATION, "default/allow", FX(good_authz_allow_ns));
    rc |= mesh_xds_convert_batch_done(c, MESH_XDS_TYPE_AUTHORIZATION);
    mesh_xds_convert_free(c);
    mesh_xds_state_unref(p.last);
    return rc;
}

static void test_xds_convert_alloc_failures(void **state)
{
    long total;

    (void)state;
    failalloc_arm(&fe.alloc, 0);
    assert_int_equal(scenario(), 0);
    total = fe.alloc.attempts;
    assert_int_equal(fe.alloc.live, 0);
    for (long n = 1; n <= total; n++) {
        failalloc_arm(&fe.alloc, n);
        (void)scenario();
        if (fe.alloc.live != 0)
            fprintf(stderr, "failing allocation %ld of %ld leaks %ld blocks\n", n, total, fe.alloc.live);
        assert_int_equal(fe.alloc.live, 0);
    }
    failalloc_arm(&fe.alloc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xds_convert_workload_full),
        cmocka_unit_test(test_xds_convert_long_lived_snapshot_pins_only_its_records),
        cmocka_unit_test(test_xds_convert_workload_defaults),
        cmocka_unit_test(test_xds_convert_workload_enums),
        cmocka_unit_test(test_xds_convert_rejections),
        cmocka_unit_test(test_xds_convert_reject_keeps_old),
        cmocka_unit_test(test_xds_convert_service),
        cmocka_unit_test(test_xds_convert_service_enums),
        cmocka_unit_test(test_xds_convert_authz),
        cmocka_unit_test(test_xds_convert_authz_enums),
        cmocka_unit_test(test_xds_convert_remove_and_alias),
        cmocka_unit_test(test_xds_convert_incremental_sharing),
        cmocka_unit_test(test_xds_convert_conflicts),
        cmocka_unit_test(test_xds_convert_nack_through_client),
        cmocka_unit_test(test_xds_convert_alloc_failures),
    };

    fake_env_init(&fe, 0, 11);
    return cmocka_run_group_tests_name("mesh_xds_convert", tests, NULL, NULL);
}
