/* SPDX-License-Identifier: Apache-2.0 */
/* Decoding every xDS/CA message (protobuf-c code generated from proto/) from bytes the Python protobuf library
 * produced (xds_fixtures.h, made at build time by gen_xds_fixtures.py); field numbers per ztunnel-wire-facts.md
 * section 3.5 / 3.6. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/authorization.pb-c.h"
#include "proto/ca.pb-c.h"
#include "proto/discovery.pb-c.h"
#include "proto/status.pb-c.h"
#include "proto/workload.pb-c.h"
#include "xds_fixtures.h"

static const uint8_t ip_10_0_0_1[4] = {10, 0, 0, 1};

static void assert_bytes(ProtobufCBinaryData b, const uint8_t *want, size_t n)
{
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, want, n);
}

static void test_xds_proto_workload(void **state)
{
    Istio__Workload__Address *a = istio__workload__address__unpack(NULL, fx_address_workload_len, fx_address_workload);
    const Istio__Workload__Workload *w;
    const uint8_t v6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

    (void)state;
    assert_non_null(a);
    assert_int_equal(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD);
    w = a->workload;
    assert_string_equal(w->uid, "Kubernetes//Pod/default/a");
    assert_string_equal(w->name, "a");
    assert_string_equal(w->namespace_, "default");
    assert_int_equal(w->n_addresses, 2);
    assert_bytes(w->addresses[0], ip_10_0_0_1, 4);
    assert_bytes(w->addresses[1], v6, 16);
    assert_string_equal(w->network, "net1");
    assert_int_equal(w->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE);
    assert_string_equal(w->trust_domain, "td.example");
    assert_string_equal(w->service_account, "sa-a");
    assert_int_equal(w->waypoint->destination_case, ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS);
    assert_string_equal(w->waypoint->address->network, "net1");
    assert_int_equal(w->waypoint->hbone_mtls_port, 15008);
    assert_int_equal(w->network_gateway->destination_case, ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME);
    assert_string_equal(w->network_gateway->hostname->hostname, "eastwest.istio-system.svc.cluster.local");
    assert_string_equal(w->node, "node-1");
    assert_string_equal(w->canonical_name, "app-a");
    assert_string_equal(w->canonical_revision, "v1");
    assert_int_equal(w->workload_type, ISTIO__WORKLOAD__WORKLOAD_TYPE__POD);
    assert_string_equal(w->workload_name, "deploy-a");
    assert_true(w->native_tunnel);
    assert_int_equal(w->application_tunnel->protocol, ISTIO__WORKLOAD__APPLICATION_TUNNEL__PROTOCOL__PROXY);
    assert_int_equal(w->application_tunnel->port, 15088);
    assert_int_equal(w->n_services, 1);
    assert_string_equal(w->services[0]->key, "default/svc.default.svc.cluster.local");
    assert_int_equal(w->services[0]->value->n_ports, 1);
    assert_int_equal(w->services[0]->value->ports[0]->service_port, 80);
    assert_int_equal(w->services[0]->value->ports[0]->target_port, 8080);
    assert_int_equal(w->services[0]->value->ports[0]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__HTTP2);
    assert_int_equal(w->n_authorization_policies, 1);
    assert_string_equal(w->authorization_policies[0], "default/pol");
    assert_int_equal(w->status, ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY);
    assert_string_equal(w->cluster_id, "Kubernetes");
    assert_string_equal(w->locality->region, "r1");
    assert_string_equal(w->locality->zone, "z1");
    assert_string_equal(w->locality->subzone, "s1");
    assert_int_equal(w->network_mode, ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK);
    assert_int_equal(w->n_extensions, 1);
    assert_string_equal(w->extensions[0]->name, "ext1");
    assert_non_null(w->capacity);
    assert_int_equal(w->capacity->value, 7);
    istio__workload__address__free_unpacked(a, NULL);
}

static void test_xds_proto_service(void **state)
{
    Istio__Workload__Address *a = istio__workload__address__unpack(NULL, fx_address_service_len, fx_address_service);
    const Istio__Workload__Service *s;

    (void)state;
    assert_non_null(a);
    assert_int_equal(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE);
    s = a->service;
    assert_string_equal(s->name, "svc");
    assert_string_equal(s->namespace_, "default");
    assert_string_equal(s->hostname, "svc.default.svc.cluster.local");
    assert_int_equal(s->n_addresses, 3);
    assert_string_equal(s->addresses[0]->network, "");
    /* NetworkAddress.length is optional: absent, present with 0, present with 64. */
    assert_int_equal(s->addresses[0]->_length_case, ISTIO__WORKLOAD__NETWORK_ADDRESS___LENGTH__NOT_SET);
    assert_int_equal(s->addresses[1]->_length_case, ISTIO__WORKLOAD__NETWORK_ADDRESS___LENGTH_LENGTH);
    assert_int_equal(s->addresses[1]->length, 0);
    assert_int_equal(s->addresses[2]->_length_case, ISTIO__WORKLOAD__NETWORK_ADDRESS___LENGTH_LENGTH);
    assert_int_equal(s->addresses[2]->length, 64);
    assert_int_equal(s->addresses[2]->address.len, 16);
    assert_int_equal(s->n_ports, 2);
    assert_int_equal(s->ports[1]->service_port, 443);
    assert_int_equal(s->ports[1]->target_port, 0);
    assert_int_equal(s->ports[1]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__TLS);
    assert_int_equal(s->n_subject_alt_names, 1);
    assert_string_equal(s->waypoint->hostname->namespace_, "default");
    assert_int_equal(s->load_balancing->n_routing_preference, 3);
    assert_int_equal(s->load_balancing->routing_preference[0], ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK);
    assert_int_equal(s->load_balancing->routing_preference[2], ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE);
    assert_int_equal(s->load_balancing->mode, ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER);
    assert_int_equal(s->load_balancing->health_policy, ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL);
    assert_int_equal(s->ip_families, ISTIO__WORKLOAD__IPFAMILIES__DUAL);
    assert_true(s->canonical);
    assert_true(s->ingress_use_waypoint);
    assert_int_equal(s->n_weighted_waypoints, 1);
    assert_int_equal(s->weighted_waypoints[0]->weight, 30);
    assert_int_equal(s->weighted_waypoints[0]->destination->address->address.len, 4);
    assert_int_equal(s->visibility, ISTIO__WORKLOAD__SERVICE__VISIBILITY__NAMESPACE);
    istio__workload__address__free_unpacked(a, NULL);
}

static void test_xds_proto_authorization(void **state)
{
    Istio__Security__Authorization *p =
        istio__security__authorization__unpack(NULL, fx_authorization_len, fx_authorization);
    const Istio__Security__Match *m;

    (void)state;
    assert_non_null(p);
    assert_string_equal(p->name, "pol");
    assert_string_equal(p->namespace_, "default");
    assert_int_equal(p->scope, ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR);
    assert_int_equal(p->action, ISTIO__SECURITY__ACTION__DENY);
    assert_true(p->dry_run);
    assert_int_equal(p->n_rules, 2);
    assert_int_equal(p->rules[0]->n_clauses, 1);
    assert_int_equal(p->rules[0]->clauses[0]->n_matches, 1);
    m = p->rules[0]->clauses[0]->matches[0];
    assert_int_equal(m->namespaces[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT);
    assert_string_equal(m->namespaces[0]->exact, "ns1");
    assert_int_equal(m->not_namespaces[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX);
    assert_string_equal(m->not_namespaces[0]->prefix, "kube-");
    assert_int_equal(m->principals[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX);
    assert_string_equal(m->principals[0]->suffix, "/sa/admin");
    assert_int_equal(m->not_principals[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE);
    assert_int_equal(m->source_ips[0]->length, 8);
    assert_int_equal(m->not_source_ips[0]->length, 32);
    assert_int_equal(m->destination_ips[0]->address.len, 16);
    assert_int_equal(m->not_destination_ips[0]->length, 128);
    assert_int_equal(m->n_destination_ports, 3);
    assert_int_equal(m->destination_ports[0], 80);
    assert_int_equal(m->destination_ports[1], 443);
    assert_int_equal(m->destination_ports[2], 8080);
    assert_int_equal(m->n_not_destination_ports, 1);
    assert_int_equal(m->not_destination_ports[0], 22);
    assert_string_equal(m->service_accounts[0]->namespace_, "default");
    assert_string_equal(m->service_accounts[0]->serviceaccount, "sleep");
    assert_string_equal(m->not_service_accounts[0]->serviceaccount, "bad");
    assert_string_equal(p->rules[1]->clauses[0]->matches[0]->principals[0]->exact, "spiffe://cluster.local/ns/a/sa/b");
    istio__security__authorization__free_unpacked(p, NULL);
}

static void test_xds_proto_ports_unpacked_and_packed(void **state)
{
    Istio__Security__Match *m =
        istio__security__match__unpack(NULL, fx_match_unpacked_ports_len, fx_match_unpacked_ports);

    (void)state;
    assert_non_null(m);
    assert_int_equal(m->n_destination_ports, 2);
    assert_int_equal(m->destination_ports[0], 80);
    assert_int_equal(m->destination_ports[1], 443);
    assert_int_equal(m->n_not_destination_ports, 1);
    assert_int_equal(m->not_destination_ports[0], 22);
    istio__security__match__free_unpacked(m, NULL);
}

static void test_xds_proto_request(void **state)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r =
        envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, fx_request_full_len, fx_request_full);
    const Google__Protobuf__Struct *md;
    bool seen[5] = {false};

    (void)state;
    assert_non_null(r);
    assert_string_equal(r->type_url, "type.googleapis.com/istio.workload.Address");
    assert_string_equal(r->node->id, "ztunnel~10.0.0.5~zt-1.istio-system~istio-system.svc.cluster.local");
    md = r->node->metadata;
    assert_int_equal(md->n_fields, 5);
    for (size_t i = 0; i < md->n_fields; i++) {
        const Google__Protobuf__Value *v = md->fields[i]->value;
        const char *k = md->fields[i]->key;
        if (strcmp(k, "NAME") == 0) {
            assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
            assert_string_equal(v->string_value, "zt-1");
            seen[0] = true;
        } else if (strcmp(k, "NUM") == 0) {
            assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
            assert_true(v->number_value == 2.5);
            seen[1] = true;
        } else if (strcmp(k, "FLAG") == 0) {
            assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
            assert_true(v->bool_value);
            seen[2] = true;
        } else if (strcmp(k, "LIST") == 0) {
            assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
            assert_string_equal(v->list_value->values[0]->string_value, "x");
            seen[3] = true;
        } else if (strcmp(k, "OBJ") == 0) {
            assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
            assert_string_equal(v->struct_value->fields[0]->key, "k");
            seen[4] = true;
        }
    }
    for (int i = 0; i < 5; i++)
        assert_true(seen[i]);
    assert_int_equal(r->n_resource_names_subscribe, 1);
    assert_string_equal(r->resource_names_subscribe[0], "sub1");
    assert_string_equal(r->resource_names_unsubscribe[0], "unsub1");
    assert_int_equal(r->n_initial_resource_versions, 2);
    assert_string_equal(r->response_nonce, "n1");
    assert_int_equal(r->error_detail->code, 0);
    assert_string_equal(r->error_detail->message, "bad: reason");
    envoy__service__discovery__v3__delta_discovery_request__free_unpacked(r, NULL);
}

static void test_xds_proto_response(void **state)
{
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r =
        envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, fx_resp_two_len, fx_resp_two);
    const Envoy__Service__Discovery__V3__Resource *res;

    (void)state;
    assert_non_null(r);
    assert_string_equal(r->system_version_info, "v9");
    assert_string_equal(r->type_url, "type.googleapis.com/istio.workload.Address");
    assert_string_equal(r->nonce, "n1");
    assert_string_equal(r->control_plane->identifier, "istiod-1");
    assert_int_equal(r->n_resources, 2);
    res = r->resources[0];
    assert_string_equal(res->name, "Kubernetes//Pod/default/a");
    assert_string_equal(res->version, "1");
    assert_int_equal(res->n_aliases, 2);
    assert_string_equal(res->aliases[1], "net1/fd00::1");
    assert_string_equal(res->resource->type_url, "type.googleapis.com/istio.workload.Address");
    assert_bytes(res->resource->value, fx_address_workload, fx_address_workload_len);
    assert_int_equal(res->ttl->seconds, 30);
    assert_non_null(res->cache_control);
    assert_string_equal(r->resources[1]->version, "7");
    envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);

    r = envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, fx_resp_remove_len, fx_resp_remove);
    assert_non_null(r);
    assert_int_equal(r->n_resources, 0);
    assert_int_equal(r->n_removed_resources, 2);
    assert_string_equal(r->removed_resources[1], "never-seen");
    envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
}

static void test_xds_proto_ca(void **state)
{
    Istio__V1__Auth__IstioCertificateRequest *q =
        istio__v1__auth__istio_certificate_request__unpack(NULL, fx_ca_request_len, fx_ca_request);
    Istio__V1__Auth__IstioCertificateResponse *p =
        istio__v1__auth__istio_certificate_response__unpack(NULL, fx_ca_response_len, fx_ca_response);

    (void)state;
    assert_non_null(q);
    assert_true(strncmp(q->csr, "-----BEGIN CERTIFICATE REQUEST-----", 35) == 0);
    assert_int_equal(q->validity_duration, 3600);
    assert_int_equal(q->metadata->n_fields, 1);
    assert_string_equal(q->metadata->fields[0]->key, "ImpersonatedIdentity");
    assert_string_equal(q->metadata->fields[0]->value->string_value, "spiffe://cluster.local/ns/default/sa/sleep");
    assert_non_null(p);
    assert_int_equal(p->n_cert_chain, 3);
    assert_string_equal(p->cert_chain[0], "leaf\n");
    assert_string_equal(p->cert_chain[2], "root\n");
    istio__v1__auth__istio_certificate_request__free_unpacked(q, NULL);
    istio__v1__auth__istio_certificate_response__free_unpacked(p, NULL);
}

static void test_xds_proto_status(void **state)
{
    Google__Rpc__Status *s = google__rpc__status__unpack(NULL, fx_status_len, fx_status);

    (void)state;
    assert_non_null(s);
    assert_int_equal(s->code, 3);
    assert_string_equal(s->message, "invalid");
    assert_int_equal(s->n_details, 1);
    assert_string_equal(s->details[0]->type_url, "type.googleapis.com/google.protobuf.Empty");
    google__rpc__status__free_unpacked(s, NULL);
}

static void test_xds_proto_garbage_rejected(void **state)
{
    const uint8_t junk[] = {0xff, 0xff, 0xff};

    (void)state;
    assert_null(istio__workload__address__unpack(NULL, sizeof(junk), junk));
    assert_null(envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, sizeof(junk), junk));
    /* Truncation anywhere inside a valid message is detected. */
    for (size_t n = 1; n < fx_address_workload_len; n += 7) {
        Istio__Workload__Address *a = istio__workload__address__unpack(NULL, n, fx_address_workload);
        if (a != NULL)
            istio__workload__address__free_unpacked(a, NULL); /* a prefix can be a shorter valid message */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xds_proto_workload),
        cmocka_unit_test(test_xds_proto_service),
        cmocka_unit_test(test_xds_proto_authorization),
        cmocka_unit_test(test_xds_proto_ports_unpacked_and_packed),
        cmocka_unit_test(test_xds_proto_request),
        cmocka_unit_test(test_xds_proto_response),
        cmocka_unit_test(test_xds_proto_ca),
        cmocka_unit_test(test_xds_proto_status),
        cmocka_unit_test(test_xds_proto_garbage_rejected),
    };
    return cmocka_run_group_tests_name("mesh_xds_proto", tests, NULL, NULL);
}
