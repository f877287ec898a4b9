/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for mesh/xds_client.c: the Delta ADS state machine (ztunnel-wire-facts.md section 3.4) fed responses
 * recorded from the Python protobuf encoder (xds_fixtures.h), with a fake clock and seeded randomness. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mesh/xds_client.h"
#include "proto/discovery.pb-c.h"
#include "proto/workload.pb-c.h"
#include "tests/fakes/fake_clock.h"
#include "xds_fixtures.h"

#define MS 1000000ull

static struct fake_env fe;

/* ---- a recording handler ---- */

struct rec {
    int resources, removed, batches;
    char names[16][128];
    char versions[16][32];
    size_t n_aliases[16];
    char removed_names[8][128];
    int batch_after_resources; /* resources seen when on_batch_done ran */
    enum mesh_xds_type last_type;
    bool value_matches_workload;
};

static const char *h_on_resource(void *u, const struct mesh_xds_resource *r)
{
    struct rec *rc = u;
    Istio__Workload__Address *a = NULL;
    int i = rc->resources++;

    if (i < 16) {
        snprintf(rc->names[i], sizeof(rc->names[i]), "%s", r->name);
        snprintf(rc->versions[i], sizeof(rc->versions[i]), "%s", r->version);
        rc->n_aliases[i] = r->n_aliases;
    }
    rc->last_type = r->type;
    if (r->value_len == fx_address_workload_len && memcmp(r->value, fx_address_workload, r->value_len) == 0)
        rc->value_matches_workload = true;
    if (r->type == MESH_XDS_TYPE_ADDRESS) {
        a = istio__workload__address__unpack(NULL, r->value_len, r->value);
        if (a == NULL)
            return "cannot decode istio.workload.Address";
        istio__workload__address__free_unpacked(a, NULL);
    }
    return NULL;
}

static void h_on_removed(void *u, enum mesh_xds_type t, const char *name)
{
    struct rec *rc = u;

    (void)t;
    if (rc->removed < 8)
        snprintf(rc->removed_names[rc->removed], sizeof(rc->removed_names[0]), "%s", name);
    rc->removed++;
}

static void h_on_batch_done(void *u, enum mesh_xds_type t)
{
    struct rec *rc = u;

    (void)t;
    rc->batches++;
    rc->batch_after_resources = rc->resources;
}

static const struct mesh_xds_handler handler = {h_on_resource, h_on_removed, h_on_batch_done};

static const struct mesh_xds_client_cfg base_cfg = {
    .instance_ip = "10.0.0.5",
    .pod_name = "ztunnel-abc",
    .pod_namespace = "istio-system",
    .node_name = "node-1",
};

static int setup(void **state)
{
    (void)state;
    fake_env_init(&fe, 0, 42);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(fe.alloc.live, 0);
    return 0;
}

static struct mesh_xds_client *new_client(const struct mesh_xds_client_cfg *cfg, struct rec *rc)
{
    int err = -1;
    struct mesh_xds_client *c = mesh_xds_client_new(&fe.env, cfg, &handler, rc, &err);

    assert_non_null(c);
    assert_int_equal(err, MESH_OK);
    return c;
}

/* Take the next queued request and decode it (free with free_req). */
static Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *take(struct mesh_xds_client *c)
{
    struct mesh_buf b;
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;

    mesh_buf_init(&b, &fe.env, 0);
    assert_int_equal(mesh_xds_client_next_request(c, &b), 1);
    r = envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, mesh_buf_len(&b), mesh_buf_data(&b));
    assert_non_null(r);
    mesh_buf_fini(&b);
    return r;
}

static void free_req(Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r)
{
    envoy__service__discovery__v3__delta_discovery_request__free_unpacked(r, NULL);
}

static void assert_no_request(struct mesh_xds_client *c)
{
    struct mesh_buf b;

    mesh_buf_init(&b, &fe.env, 0);
    assert_false(mesh_xds_client_want_write(c));
    assert_int_equal(mesh_xds_client_next_request(c, &b), 0);
    mesh_buf_fini(&b);
}

static const char *meta_str(const Envoy__Config__Core__V3__Node *n, const char *key)
{
    for (size_t i = 0; i < n->metadata->n_fields; i++)
        if (strcmp(n->metadata->fields[i]->key, key) == 0)
            return n->metadata->fields[i]->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE
                       ? n->metadata->fields[i]->value->string_value
                       : "<not a string>";
    return NULL;
}

static const char *irv(const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r, const char *name)
{
    for (size_t i = 0; i < r->n_initial_resource_versions; i++)
        if (strcmp(r->initial_resource_versions[i]->key, name) == 0)
            return r->initial_resource_versions[i]->value;
    return NULL;
}

/* Start a stream and consume its two initial requests. */
static void start_and_drain(struct mesh_xds_client *c)
{
    assert_int_equal(mesh_xds_client_stream_start(c), MESH_OK);
    free_req(take(c));
    free_req(take(c));
    assert_no_request(c);
}

/* ====================================================================================================== */

static void test_xds_client_initial_requests(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;

    (void)state;
    assert_int_equal(mesh_xds_client_next_deadline(c), 0);
    assert_true(mesh_xds_client_should_connect(c, 0));
    assert_int_equal(mesh_xds_client_stream_start(c), MESH_OK);
    assert_int_equal(mesh_xds_client_stream_start(c), MESH_ERR_STATE);
    assert_true(mesh_xds_client_is_streaming(c));

    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_ADDRESS);
    assert_non_null(r->node);
    assert_string_equal(r->node->id, "ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local");
    assert_string_equal(r->node->cluster, "");
    assert_string_equal(meta_str(r->node, "NAME"), "ztunnel-abc");
    assert_string_equal(meta_str(r->node, "NAMESPACE"), "istio-system");
    assert_string_equal(meta_str(r->node, "INSTANCE_IPS"), "10.0.0.5");
    assert_string_equal(meta_str(r->node, "NODE_NAME"), "node-1");
    assert_int_equal(r->node->metadata->n_fields, 4);
    assert_int_equal(r->n_resource_names_subscribe, 0); /* wildcard */
    assert_int_equal(r->n_resource_names_unsubscribe, 0);
    assert_int_equal(r->n_initial_resource_versions, 0);
    assert_string_equal(r->response_nonce, "");
    assert_null(r->error_detail);
    free_req(r);

    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_AUTHORIZATION);
    assert_non_null(r->node);
    free_req(r);
    assert_no_request(c);
    assert_int_equal(mesh_xds_client_next_deadline(c), MESH_XDS_NO_DEADLINE);
    assert_int_equal(mesh_xds_client_stats(c)->requests, 2);
    mesh_xds_client_free(c);
}

static void test_xds_client_default_instance_ip(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client_cfg cfg = {.pod_name = "p", .pod_namespace = "ns"};
    struct mesh_xds_client *c = new_client(&cfg, &rc);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;

    (void)state;
    assert_int_equal(mesh_xds_client_stream_start(c), MESH_OK);
    r = take(c);
    assert_string_equal(r->node->id, "ztunnel~1.1.1.1~p.ns~ns.svc.cluster.local");
    assert_string_equal(meta_str(r->node, "INSTANCE_IPS"), "1.1.1.1");
    free_req(r);
    mesh_xds_client_free(c);
}

static void test_xds_client_extra_metadata(void **state)
{
    struct rec rc = {0};
    const uint8_t true_value[] = {0x20, 0x01}; /* google.protobuf.Value{bool_value: true} */
    const uint8_t junk[] = {0xff};
    struct mesh_xds_meta meta[] = {
        {.key = "NAME", .string_value = "override"},
        {.key = "ISTIO_VERSION", .string_value = "1.27.0"},
        {.key = "ENABLED", .value_pb = true_value, .value_pb_len = sizeof(true_value)},
    };
    struct mesh_xds_client_cfg cfg = base_cfg;
    struct mesh_xds_client *c;
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;
    int err;

    (void)state;
    cfg.meta = meta;
    cfg.n_meta = 3;
    c = new_client(&cfg, &rc);
    assert_int_equal(mesh_xds_client_stream_start(c), MESH_OK);
    r = take(c);
    assert_int_equal(r->node->metadata->n_fields, 6);
    assert_string_equal(meta_str(r->node, "NAME"), "override");
    assert_string_equal(meta_str(r->node, "ISTIO_VERSION"), "1.27.0");
    assert_string_equal(meta_str(r->node, "ENABLED"), "<not a string>");
    free_req(r);
    mesh_xds_client_free(c);

    meta[2].value_pb = junk;
    meta[2].value_pb_len = sizeof(junk);
    assert_null(mesh_xds_client_new(&fe.env, &cfg, &handler, &rc, &err));
    assert_int_equal(err, MESH_ERR_CONFIG);
    meta[2].value_pb = NULL;
    meta[2].string_value = NULL;
    assert_null(mesh_xds_client_new(&fe.env, &cfg, &handler, &rc, &err));
    assert_int_equal(err, MESH_ERR_CONFIG);
}

static void test_xds_client_ack_after_apply(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;
    const struct mesh_xds_stats *st = mesh_xds_client_stats(c);

    (void)state;
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_two, fx_resp_two_len), MESH_OK);
    assert_int_equal(rc.resources, 2);
    assert_string_equal(rc.names[0], "Kubernetes//Pod/default/a");
    assert_string_equal(rc.versions[0], "1");
    assert_int_equal(rc.n_aliases[0], 2);
    assert_string_equal(rc.names[1], "default/svc.default.svc.cluster.local");
    assert_true(rc.value_matches_workload);
    assert_int_equal(rc.batches, 1);
    assert_int_equal(rc.batch_after_resources, 2);

    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_ADDRESS);
    assert_string_equal(r->response_nonce, "n1");
    assert_null(r->node);
    assert_null(r->error_detail);
    assert_int_equal(r->n_resource_names_subscribe, 0);
    free_req(r);
    assert_no_request(c);

    assert_true(mesh_xds_client_type_ready(c, MESH_XDS_TYPE_ADDRESS));
    assert_false(mesh_xds_client_is_ready(c));
    assert_int_equal(mesh_xds_client_record_count(c, MESH_XDS_TYPE_ADDRESS), 2);
    assert_string_equal(
        mesh_xds_client_record_version(c, MESH_XDS_TYPE_ADDRESS, "default/svc.default.svc.cluster.local"), "7");
    assert_int_equal(st->messages[MESH_XDS_TYPE_ADDRESS], 1);
    assert_int_equal(st->message_bytes[MESH_XDS_TYPE_ADDRESS], fx_address_workload_len + fx_address_service_len);
    assert_int_equal(st->acks, 1);

    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_authz, fx_resp_authz_len), MESH_OK);
    assert_int_equal(rc.last_type, MESH_XDS_TYPE_AUTHORIZATION);
    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_AUTHORIZATION);
    assert_string_equal(r->response_nonce, "n5");
    free_req(r);
    assert_true(mesh_xds_client_is_ready(c));

    /* An update replaces the recorded version. */
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_update, fx_resp_update_len), MESH_OK);
    free_req(take(c));
    assert_string_equal(mesh_xds_client_record_version(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/a"), "2");
    mesh_xds_client_free(c);
}

static void test_xds_client_nack_per_resource(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;

    (void)state;
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_mixed, fx_resp_mixed_len), MESH_OK);
    /* The handler saw the good one and the undecodable one; the engine rejected the rest itself. */
    assert_int_equal(rc.resources, 2);
    assert_int_equal(rc.batches, 1);
    r = take(c);
    assert_string_equal(r->response_nonce, "n2");
    assert_non_null(r->error_detail);
    assert_int_equal(r->error_detail->code, 0);
    assert_string_equal(r->error_detail->message, "bad: cannot decode istio.workload.Address; "
                                                  "wrongtype: payload type does not match the response type; "
                                                  ": resource without a name");
    assert_null(r->node);
    free_req(r);
    /* Valid resources stay applied; rejected ones are not recorded. */
    assert_string_equal(mesh_xds_client_record_version(c, MESH_XDS_TYPE_ADDRESS, "good"), "2");
    assert_null(mesh_xds_client_record_version(c, MESH_XDS_TYPE_ADDRESS, "bad"));
    assert_null(mesh_xds_client_record_version(c, MESH_XDS_TYPE_ADDRESS, "wrongtype"));
    assert_int_equal(mesh_xds_client_stats(c)->nacks, 1);
    assert_int_equal(mesh_xds_client_stats(c)->resources_rejected, 3);
    assert_int_equal(mesh_xds_client_stats(c)->resources_applied, 1);
    /* A NACK is not the first ACK. */
    assert_false(mesh_xds_client_type_ready(c, MESH_XDS_TYPE_ADDRESS));
    mesh_xds_client_free(c);
}

static void test_xds_client_removal(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;

    (void)state;
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_two, fx_resp_two_len), MESH_OK);
    free_req(take(c));
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_remove, fx_resp_remove_len), MESH_OK);
    assert_int_equal(rc.removed, 2);
    assert_string_equal(rc.removed_names[0], "Kubernetes//Pod/default/a");
    assert_string_equal(rc.removed_names[1], "never-seen");
    assert_int_equal(rc.batches, 2);
    assert_int_equal(mesh_xds_client_record_count(c, MESH_XDS_TYPE_ADDRESS), 1);
    assert_null(mesh_xds_client_record_version(c, MESH_XDS_TYPE_ADDRESS, "Kubernetes//Pod/default/a"));
    r = take(c);
    assert_string_equal(r->response_nonce, "n3");
    assert_null(r->error_detail);
    free_req(r);
    assert_int_equal(mesh_xds_client_stats(c)->resources_removed, 2);
    mesh_xds_client_free(c);
}

static void test_xds_client_unknown_type_acked(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;

    (void)state;
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_unknown, fx_resp_unknown_len), MESH_OK);
    assert_int_equal(rc.resources, 0);
    assert_int_equal(rc.batches, 0);
    r = take(c);
    assert_string_equal(r->type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert_string_equal(r->response_nonce, "n4");
    assert_null(r->error_detail);
    free_req(r);
    assert_int_equal(mesh_xds_client_stats(c)->messages[MESH_XDS_TYPE_COUNT], 1);
    mesh_xds_client_free(c);
}

static void test_xds_client_bad_response(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    const uint8_t junk[] = {0x12, 0x40, 0x01};

    (void)state;
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_two, fx_resp_two_len), MESH_ERR_STATE);
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_on_response(c, junk, sizeof(junk)), -EBADMSG);
    assert_no_request(c);
    assert_int_equal(mesh_xds_client_stats(c)->bad_responses, 1);
    mesh_xds_client_free(c);
}

static void test_xds_client_reconnect_initial_versions(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;
    struct mesh_grpc_status st;

    (void)state;
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_two, fx_resp_two_len), MESH_OK);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_mixed, fx_resp_mixed_len), MESH_OK);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_authz, fx_resp_authz_len), MESH_OK);
    /* The stream dies with the ACKs still queued: they are dropped. */
    mesh_grpc_status_init(&st);
    mesh_grpc_status_set(&st, MESH_GRPC_UNAVAILABLE, "istiod restarting");
    assert_int_equal(mesh_xds_client_stream_end(c, &st, false), MESH_XDS_TERM_ERROR);
    assert_false(mesh_xds_client_is_streaming(c));
    assert_no_request(c);
    fake_clock_advance(&fe.clock, 20 * MS);
    assert_true(mesh_xds_client_should_connect(c, mesh_env_now(&fe.env)));

    assert_int_equal(mesh_xds_client_stream_start(c), MESH_OK);
    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_ADDRESS);
    assert_non_null(r->node);
    assert_int_equal(r->n_initial_resource_versions, 3);
    assert_string_equal(irv(r, "Kubernetes//Pod/default/a"), "1");
    assert_string_equal(irv(r, "default/svc.default.svc.cluster.local"), "7");
    assert_string_equal(irv(r, "good"), "2");
    assert_null(irv(r, "bad"));
    assert_int_equal(r->n_resource_names_subscribe, 0);
    free_req(r);
    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_AUTHORIZATION);
    assert_non_null(r->node);
    assert_int_equal(r->n_initial_resource_versions, 1);
    assert_string_equal(irv(r, "default/pol"), "3");
    free_req(r);
    assert_no_request(c);
    /* Readiness survives the reconnect. */
    assert_true(mesh_xds_client_is_ready(c));
    assert_int_equal(mesh_xds_client_stats(c)->streams_started, 2);
    assert_int_equal(mesh_xds_client_stats(c)->terminations[MESH_XDS_TERM_ERROR], 1);
    mesh_xds_client_free(c);
}

static void test_xds_client_termination_classes(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    struct mesh_grpc_status st;
    const struct {
        int code;
        const char *msg;
        bool conn;
        enum mesh_xds_term want;
    } cases[] = {
        {MESH_GRPC_OK, "", false, MESH_XDS_TERM_COMPLETE},
        {MESH_GRPC_CANCELLED, "", false, MESH_XDS_TERM_RECONNECT},
        {MESH_GRPC_UNKNOWN, "", false, MESH_XDS_TERM_RECONNECT},
        {MESH_GRPC_DEADLINE_EXCEEDED, "", false, MESH_XDS_TERM_RECONNECT},
        {MESH_GRPC_UNAVAILABLE, "error reading from server: transport is closing", false, MESH_XDS_TERM_RECONNECT},
        {MESH_GRPC_UNAVAILABLE, "received prior goaway: code: NO_ERROR", false, MESH_XDS_TERM_RECONNECT},
        {MESH_GRPC_UNAVAILABLE, "connection refused", false, MESH_XDS_TERM_ERROR},
        {MESH_GRPC_PERMISSION_DENIED, "", false, MESH_XDS_TERM_ERROR},
        {MESH_GRPC_UNAVAILABLE, "", true, MESH_XDS_TERM_CONNECTION_ERROR},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        start_and_drain(c);
        mesh_grpc_status_init(&st);
        mesh_grpc_status_set(&st, cases[i].code, cases[i].msg);
        assert_int_equal(mesh_xds_client_stream_end(c, &st, cases[i].conn), cases[i].want);
    }
    /* No status at all counts as UNKNOWN. */
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_stream_end(c, NULL, false), MESH_XDS_TERM_RECONNECT);
    assert_int_equal(mesh_xds_client_stats(c)->terminations[MESH_XDS_TERM_COMPLETE], 1);
    assert_int_equal(mesh_xds_client_stats(c)->terminations[MESH_XDS_TERM_RECONNECT], 6);
    assert_int_equal(mesh_xds_client_stats(c)->terminations[MESH_XDS_TERM_ERROR], 2);
    assert_int_equal(mesh_xds_client_stats(c)->terminations[MESH_XDS_TERM_CONNECTION_ERROR], 1);
    assert_string_equal(mesh_xds_term_label(MESH_XDS_TERM_CONNECTION_ERROR), "ConnectionError");
    assert_string_equal(mesh_xds_term_label(MESH_XDS_TERM_COMPLETE), "Complete");
    mesh_xds_client_free(c);
}

static void test_xds_client_backoff_growth(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client *c = new_client(&base_cfg, &rc);
    struct mesh_grpc_status st;
    uint64_t base = MESH_XDS_BACKOFF_INITIAL_NS;
    bool saw_jitter = false;

    (void)state;
    mesh_grpc_status_init(&st);
    mesh_grpc_status_set(&st, MESH_GRPC_UNAVAILABLE, "connection refused");
    for (int i = 0; i < 16; i++) {
        uint64_t now, delay;
        start_and_drain(c);
        assert_int_equal(mesh_xds_client_backoff_ns(c), base);
        now = mesh_env_now(&fe.env);
        assert_int_equal(mesh_xds_client_stream_end(c, &st, i % 2 == 0),
                         i % 2 == 0 ? MESH_XDS_TERM_CONNECTION_ERROR : MESH_XDS_TERM_ERROR);
        delay = mesh_xds_client_next_deadline(c) - now;
        assert_true(delay >= base / 100 * 80);
        assert_true(delay <= base / 100 * 120 || delay == MESH_XDS_BACKOFF_MAX_NS);
        assert_true(delay <= MESH_XDS_BACKOFF_MAX_NS);
        if (delay != base)
            saw_jitter = true;
        assert_false(mesh_xds_client_should_connect(c, now + delay - 1));
        assert_true(mesh_xds_client_should_connect(c, now + delay));
        fake_clock_advance(&fe.clock, delay);
        base = base * 2 > MESH_XDS_BACKOFF_MAX_NS ? MESH_XDS_BACKOFF_MAX_NS : base * 2;
    }
    assert_true(saw_jitter);
    assert_int_equal(mesh_xds_client_backoff_ns(c), MESH_XDS_BACKOFF_MAX_NS);

    /* A clean end reconnects after 10 ms and does not grow the backoff. */
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_stream_end(c, NULL, false), MESH_XDS_TERM_RECONNECT);
    assert_int_equal(mesh_xds_client_next_deadline(c) - mesh_env_now(&fe.env), MESH_XDS_BACKOFF_INITIAL_NS);
    assert_int_equal(mesh_xds_client_backoff_ns(c), MESH_XDS_BACKOFF_MAX_NS);

    /* A decodable response ends the failure streak. */
    start_and_drain(c);
    assert_int_equal(mesh_xds_client_on_response(c, fx_resp_two, fx_resp_two_len), MESH_OK);
    assert_int_equal(mesh_xds_client_backoff_ns(c), MESH_XDS_BACKOFF_INITIAL_NS);
    mesh_xds_client_free(c);
}

static void test_xds_client_on_demand(void **state)
{
    struct rec rc = {0};
    struct mesh_xds_client_cfg cfg = base_cfg;
    struct mesh_xds_client *c;
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r;

    (void)state;
    cfg.on_demand = true;
    c = new_client(&cfg, &rc);
    assert_int_equal(mesh_xds_client_subscribe(c, "/10.0.0.7"), MESH_OK); /* before the stream: kept */
    assert_int_equal(mesh_xds_client_stream_start(c), MESH_OK);
    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_ADDRESS);
    assert_int_equal(r->n_resource_names_subscribe, 1);
    assert_string_equal(r->resource_names_subscribe[0], "*");
    assert_int_equal(r->n_resource_names_unsubscribe, 1);
    assert_string_equal(r->resource_names_unsubscribe[0], "*");
    free_req(r);
    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_AUTHORIZATION);
    assert_int_equal(r->n_resource_names_subscribe, 0); /* Authorization is always wildcard */
    free_req(r);
    r = take(c);
    assert_string_equal(r->type_url, MESH_XDS_TYPE_URL_ADDRESS);
    assert_null(r->node);
    assert_int_equal(r->n_resource_names_subscribe, 1);
    assert_string_equal(r->resource_names_subscribe[0], "/10.0.0.7");
    free_req(r);
    assert_int_equal(mesh_xds_client_subscribe(c, "default/svc.default.svc.cluster.local"), MESH_OK);
    r = take(c);
    assert_string_equal(r->resource_names_subscribe[0], "default/svc.default.svc.cluster.local");
    free_req(r);
    assert_no_request(c);
    mesh_xds_client_free(c);

    c = new_client(&base_cfg, &rc);
    assert_int_equal(mesh_xds_client_subscribe(c, "x"), MESH_ERR_STATE);
    mesh_xds_client_free(c);
}

/* One full scenario; returns 0 or the first failure code seen (allocation failures must surface cleanly). */
static int scenario(void)
{
    struct rec rc = {0};
    struct mesh_xds_meta meta[] = {{.key = "K", .string_value = "v"}};
    struct mesh_xds_client_cfg cfg = base_cfg;
    struct mesh_xds_client *c;
    struct mesh_buf b;
    int err, rc2 = 0;

    cfg.meta = meta;
    cfg.n_meta = 1;
    c = mesh_xds_client_new(&fe.env, &cfg, &handler, &rc, &err);
    if (c == NULL)
        return err;
    mesh_buf_init(&b, &fe.env, 0);
    for (int round = 0; round < 2 && rc2 == 0; round++) {
        if ((err = mesh_xds_client_stream_start(c)) != MESH_OK) {
            rc2 = err;
            (void)mesh_xds_client_stream_end(c, NULL, true);
            break;
        }
        if ((err = mesh_xds_client_on_response(c, fx_resp_two, fx_resp_two_len)) != MESH_OK ||
            (err = mesh_xds_client_on_response(c, fx_resp_mixed, fx_resp_mixed_len)) != MESH_OK ||
            (err = mesh_xds_client_on_response(c, fx_resp_remove, fx_resp_remove_len)) != MESH_OK)
            rc2 = err;
        while ((err = mesh_xds_client_next_request(c, &b)) == 1)
            mesh_buf_reset(&b);
        if (err < 0 && rc2 == 0)
            rc2 = err;
        (void)mesh_xds_client_stream_end(c, NULL, false);
    }
    mesh_buf_fini(&b);
    mesh_xds_client_free(c);
    return rc2;
}

static void test_xds_client_alloc_failure_sweep(void **state)
{
    long total;

    (void)state;
    failalloc_arm(&fe.alloc, 0);
    assert_int_equal(scenario(), 0);
    total = fe.alloc.attempts;
    assert_true(total > 10);
    assert_int_equal(fe.alloc.live, 0);
    for (long n = 1; n <= total; n++) {
        failalloc_arm(&fe.alloc, n);
        (void)scenario();
        assert_int_equal(fe.alloc.live, 0);
    }
    failalloc_arm(&fe.alloc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_xds_client_initial_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_default_instance_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_extra_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_ack_after_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_nack_per_resource, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_removal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_unknown_type_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_bad_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_reconnect_initial_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_termination_classes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_backoff_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_on_demand, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xds_client_alloc_failure_sweep, setup, teardown),
    };
    return cmocka_run_group_tests_name("mesh_xds_client", tests, NULL, NULL);
}
