/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the "xds" and "local_ca" config sections (appliance/config_xds.c) through app_config_load_string().
 * Every fixture starts with the same node and ports on lines 1..5, so the sections begin on line 6 and the messages
 * carry exact line numbers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "appliance/config.h"
#include "appliance/config_xds.h"

#define NAME "zw.cfg"
#define BASE                                                                                                           \
    "node = { name = \"n1\"; };\n"                                                                                     \
    "ports = (\n"                                                                                                      \
    "  { name = \"pods\"; role = \"pods\"; devargs = \"net_tap0\"; address = \"10.1.1.1/24\"; },\n"                    \
    "  { name = \"fab\"; role = \"fabric\"; devargs = \"net_tap1\"; address = \"10.0.0.1/24\"; }\n"                    \
    ");\n"

static struct app_config *load_ok(const char *text)
{
    struct app_config_errors errs;
    struct app_config *cfg = app_config_load_string(text, NAME, &errs);

    for (int i = 0; cfg == NULL && i < errs.n; i++)
        print_message("  got: %s\n", errs.msgs[i]);
    assert_non_null(cfg);
    app_config_errors_fini(&errs);
    return cfg;
}

static void load_bad(const char *text, const char *const *want, int n)
{
    struct app_config_errors errs;
    struct app_config *cfg = app_config_load_string(text, NAME, &errs);

    assert_null(cfg);
    for (int i = 0; i < errs.n; i++)
        print_message("  got: %s\n", errs.msgs[i]);
    assert_int_equal(errs.n, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(errs.msgs[i], want[i]);
    app_config_errors_fini(&errs);
}

static void test_config_xds_absent(void **state)
{
    struct app_config *cfg = load_ok(BASE);
    const struct app_local_ca_config *l;

    (void)state;
    assert_null(app_cfg_xds(cfg));
    l = app_cfg_local_ca(cfg);
    assert_non_null(l);
    assert_null(l->cert);
    assert_string_equal(l->state_dir, APP_LOCAL_CA_DEFAULT_STATE_DIR);
    assert_string_equal(l->trust_domain, "cluster.local");
    assert_int_equal(l->cert_ttl_s, 86400);
    app_config_free(cfg);
}

static void test_config_xds_defaults(void **state)
{
    struct app_config *cfg = load_ok(BASE "xds = { address = \"istiod.istio-system.svc:15012\"; };\n");
    const struct app_xds_config *x = app_cfg_xds(cfg);

    (void)state;
    assert_non_null(x);
    assert_string_equal(x->address, "istiod.istio-system.svc:15012");
    assert_string_equal(x->host, "istiod.istio-system.svc");
    assert_int_equal(x->port, 15012);
    assert_string_equal(x->ca_host, "istiod.istio-system.svc");
    assert_int_equal(x->ca_port, 15012);
    assert_string_equal(x->root_cert, APP_XDS_DEFAULT_ROOT_CERT);
    assert_string_equal(x->token_file, APP_XDS_DEFAULT_TOKEN_FILE);
    assert_string_equal(x->cluster_id, "Kubernetes");
    assert_string_equal(x->trust_domain, "cluster.local");
    assert_string_equal(x->server_name, "istiod.istio-system.svc");
    assert_string_equal(x->alt_server_name, "");
    assert_string_equal(x->instance_ip, "");
    assert_string_equal(x->pod_name, "n1");
    assert_string_equal(x->pod_namespace, "istio-system");
    assert_string_equal(x->node_name, "n1");
    assert_int_equal(x->cert_ttl_s, 86400);
    assert_int_equal(x->line, 6);
    app_config_free(cfg);
}

static void test_config_xds_full(void **state)
{
    struct app_config *cfg = load_ok(BASE "xds = {\n"
                                          "  address = \"https://[fd00::1]:15012\";\n"
                                          "  ca_address = \"10.0.0.9:15013\";\n"
                                          "  root_cert = \"SYSTEM\";\n"
                                          "  token_file = \"/run/t\";\n"
                                          "  cluster_id = \"c1\";\n"
                                          "  trust_domain = \"td.example\";\n"
                                          "  server_name = \"istiod.example\";\n"
                                          "  alt_server_name = \"istiod.alt\";\n"
                                          "  node_id = \"ztunnel~10.0.0.5~zw-1.infra~infra.svc.cluster.local\";\n"
                                          "  node_name = \"worker-3\";\n"
                                          "  cert_ttl_s = 3600;\n"
                                          "};\n");
    const struct app_xds_config *x = app_cfg_xds(cfg);

    (void)state;
    assert_string_equal(x->address, "[fd00::1]:15012");
    assert_string_equal(x->host, "fd00::1");
    assert_string_equal(x->ca_host, "10.0.0.9");
    assert_int_equal(x->ca_port, 15013);
    assert_string_equal(x->root_cert, "SYSTEM");
    assert_string_equal(x->token_file, "/run/t");
    assert_string_equal(x->cluster_id, "c1");
    assert_string_equal(x->trust_domain, "td.example");
    assert_string_equal(x->server_name, "istiod.example");
    assert_string_equal(x->alt_server_name, "istiod.alt");
    assert_string_equal(x->instance_ip, "10.0.0.5");
    assert_string_equal(x->pod_name, "zw-1");
    assert_string_equal(x->pod_namespace, "infra");
    assert_string_equal(x->node_name, "worker-3");
    assert_int_equal(x->cert_ttl_s, 3600);
    app_config_free(cfg);
}

static void test_config_xds_errors(void **state)
{
    static const char *const want[] = {
        "zw.cfg:7: xds.address: \"istiod:0\" is not host:port (a DNS name or an IP, port 1..65535)",
        "zw.cfg:8: xds.ca_address: \"fd00::1:15012\" is not host:port (a DNS name or an IP, port 1..65535)",
        "zw.cfg:9: xds.root_cert: \"root.pem\" is neither an absolute path nor SYSTEM",
        "zw.cfg:10: xds.token_file: \"token\" is not an absolute path",
        "zw.cfg:11: xds.cluster_id: empty",
        "zw.cfg:12: xds.trust_domain: \"a/b\" is not a trust domain (1..255 bytes, no '/')",
        "zw.cfg:13: xds.node_id: \"proxy~1.2.3.4~p.ns~ns.svc.cluster.local\" is not "
        "ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local",
        "zw.cfg:14: xds.pod_name: node_id already sets it (line 13)",
        "zw.cfg:15: xds.cert_ttl_s: 10 is out of range (60..31536000)",
        "zw.cfg:16: unknown key \"bogus\" in xds",
        "zw.cfg:19: local_ca: cert and key go together",
    };
    (void)state;
    load_bad(BASE "xds = {\n"
                  "  address = \"istiod:0\";\n"
                  "  ca_address = \"fd00::1:15012\";\n"
                  "  root_cert = \"root.pem\";\n"
                  "  token_file = \"token\";\n"
                  "  cluster_id = \"\";\n"
                  "  trust_domain = \"a/b\";\n"
                  "  node_id = \"proxy~1.2.3.4~p.ns~ns.svc.cluster.local\";\n"
                  "  pod_name = \"x\";\n"
                  "  cert_ttl_s = 10;\n"
                  "  bogus = 1;\n"
                  "};\n"
                  "local_ca = {\n"
                  "  cert = \"/etc/ca.pem\";\n"
                  "};\n",
             want, (int)(sizeof(want) / sizeof(want[0])));
}

static void test_config_xds_missing_address(void **state)
{
    static const char *const want[] = {"zw.cfg:6: xds.address: required key is missing"};
    (void)state;
    load_bad(BASE "xds = { cluster_id = \"c\"; };\n", want, 1);
}

static void test_config_xds_local_ca(void **state)
{
    struct app_config *cfg = load_ok(BASE "local_ca = { cert = \"/etc/c.pem\"; key = \"/etc/k.pem\";\n"
                                          "  roots = \"/etc/r.pem\"; trust_domain = \"td\"; cert_ttl_s = 600; };\n");
    const struct app_local_ca_config *l = app_cfg_local_ca(cfg);

    (void)state;
    assert_string_equal(l->cert, "/etc/c.pem");
    assert_string_equal(l->key, "/etc/k.pem");
    assert_string_equal(l->roots, "/etc/r.pem");
    assert_string_equal(l->trust_domain, "td");
    assert_int_equal(l->cert_ttl_s, 600);
    app_config_free(cfg);
}

/* What a node refuses although the loader accepts it (app_cfg_xds_node_unsupported). */
static void expect_node_refusal(const char *text, bool runs_xds, const char *want_prefix)
{
    struct app_config *cfg = load_ok(text);
    const char *why = app_cfg_xds_node_unsupported(cfg, runs_xds);

    if (want_prefix == NULL) {
        assert_null(why);
    } else {
        assert_non_null(why);
        assert_true(strncmp(why, want_prefix, strlen(want_prefix)) == 0);
    }
    app_config_free(cfg);
}

static void test_config_xds_node_support(void **state)
{
#define MESH "mesh = { trust_domain = \"cluster.local\"; };\n"
#define XDS "xds = { address = \"127.0.0.1:15012\"; };\n"
    (void)state;
    expect_node_refusal(BASE MESH XDS, true, NULL);
    expect_node_refusal(BASE, true, NULL);
    expect_node_refusal(BASE MESH XDS, false, "xds: this node cannot follow istiod");
    expect_node_refusal(BASE XDS, true, "xds: needs a mesh group");
    expect_node_refusal(BASE MESH XDS
                        "workloads = ( { name = \"a\"; namespace = \"default\"; addresses = [ \"10.1.1.10\" ]; } );\n",
                        true, "xds: workloads, services and policies come from istiod");
    expect_node_refusal(BASE "local_ca = { };\n", true, "local_ca: not used by a node");
    expect_node_refusal(BASE "mesh = { certificates = { source = \"xds\"; }; };\n", true,
                        "mesh.certificates.source: \"xds\" needs an xds group");
    expect_node_refusal(BASE "mesh = { certificates = { source = \"xds\"; }; };\n" XDS, true, NULL);
#undef MESH
#undef XDS
}

/* Where the workload certificates come from: istiod by default with an xds group, unless the file says otherwise. */
static void expect_certs_from_istiod(const char *text, bool want)
{
    struct app_config *cfg = load_ok(text);
    assert_int_equal(app_cfg_certs_from_istiod(cfg), want);
    app_config_free(cfg);
}

static void test_config_xds_cert_source(void **state)
{
#define XDS "xds = { address = \"127.0.0.1:15012\"; };\n"
    (void)state;
    expect_certs_from_istiod(BASE, false);
    expect_certs_from_istiod(BASE "mesh = { trust_domain = \"td\"; };\n", false);
    expect_certs_from_istiod(BASE "mesh = { trust_domain = \"td\"; };\n" XDS, true);
    expect_certs_from_istiod(BASE "mesh = { certificates = { source = \"local_ca\"; }; };\n" XDS, false);
    expect_certs_from_istiod(BASE "mesh = { certificates = { ca_cert = \"/c.pem\"; ca_key = \"/k.pem\"; }; };\n" XDS,
                             false);
    expect_certs_from_istiod(BASE "mesh = { certificates = { source = \"xds\"; ca_cert = \"/c.pem\"; "
                                  "ca_key = \"/k.pem\"; }; };\n" XDS, true);
#undef XDS
}

static void test_config_xds_split_address(void **state)
{
    char *h = NULL;
    uint16_t p = 0;

    (void)state;
    assert_int_equal(app_xds_split_address("127.0.0.1:15012", &h, &p), 0);
    assert_string_equal(h, "127.0.0.1");
    assert_int_equal(p, 15012);
    free(h);
    assert_int_equal(app_xds_split_address("istiod", &h, &p), -EINVAL);
    assert_int_equal(app_xds_split_address(":15012", &h, &p), -EINVAL);
    assert_int_equal(app_xds_split_address("a b:1", &h, &p), -EINVAL);
    assert_int_equal(app_xds_split_address("[zz]:1", &h, &p), -EINVAL);
    assert_int_equal(app_xds_split_address("h:65536", &h, &p), -EINVAL);
    assert_int_equal(app_xds_split_address("h:+1", &h, &p), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_xds_absent),          cmocka_unit_test(test_config_xds_defaults),
        cmocka_unit_test(test_config_xds_full),            cmocka_unit_test(test_config_xds_errors),
        cmocka_unit_test(test_config_xds_missing_address), cmocka_unit_test(test_config_xds_local_ca),
        cmocka_unit_test(test_config_xds_split_address),  cmocka_unit_test(test_config_xds_node_support),
        cmocka_unit_test(test_config_xds_cert_source),
    };
    return cmocka_run_group_tests_name("config_xds", tests, NULL, NULL);
}
