/* SPDX-License-Identifier: Apache-2.0 */
/* The "mesh", "workloads" and "services" config sections: a good file read field by field, and every error with
 * its line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "appliance/config.h"
#include "appliance/config_mesh.h"

#define BASE                                                                                                           \
    "node = { name = \"node1\"; };\n"                                                                                  \
    "ports = ( { name = \"pods\"; role = \"pods\"; devargs = \"net_ring0\"; address = \"10.21.1.1/24\"; } );\n"

static struct app_config *load_ok(const char *text)
{
    struct app_config_errors errs;
    struct app_config *cfg = app_config_load_string(text, "zw.cfg", &errs);
    if (cfg == NULL)
        app_config_errors_print(&errs, stderr);
    app_config_errors_fini(&errs);
    assert_non_null(cfg);
    return cfg;
}

/* Loads text, expects failure, and checks that want (a "zw.cfg:LINE: ..." prefix) is among the messages. */
static void load_bad(const char *text, const char *want)
{
    struct app_config_errors errs;
    struct app_config *cfg = app_config_load_string(text, "zw.cfg", &errs);
    bool found = false;
    assert_null(cfg);
    for (int i = 0; i < errs.n; i++)
        found |= strncmp(errs.msgs[i], want, strlen(want)) == 0;
    if (!found)
        app_config_errors_print(&errs, stderr);
    app_config_errors_fini(&errs);
    assert_true(found);
}

static void test_config_mesh_defaults_without_sections(void **state)
{
    struct app_config *cfg = load_ok(BASE);
    (void)state;
    assert_non_null(cfg->mesh);
    assert_false(cfg->mesh->present);
    assert_string_equal(cfg->mesh->trust_domain, "cluster.local");
    assert_int_equal(cfg->mesh->mtls_mode, APP_MTLS_PERMISSIVE);
    assert_int_equal(cfg->mesh->hbone_port, 15008);
    assert_int_equal(cfg->mesh->n_workloads, 0);
    app_config_free(cfg);
}

static void test_config_mesh_good_file(void **state)
{
    uint32_t local[4];
    struct app_config *cfg = load_ok(BASE
        "mesh = { trust_domain = \"example.org\"; mtls_mode = \"STRICT\"; certificates = { source = \"local_ca\"; "
        "lifetime_s = 3600; }; };\n"
        "workloads = (\n"
        "  { name = \"a\"; namespace = \"default\"; service_account = \"sa-a\"; addresses = [\"10.21.1.10\"];\n"
        "    node = \"node1\"; authorization_policies = [\"default/allow-a\"]; },\n"
        "  { uid = \"c-uid\"; name = \"c\"; namespace = \"default\"; addresses = [\"10.21.2.10\"]; node = \"node2\";\n"
        "    protocol = \"NONE\"; capacity = 3; status = \"unhealthy\";\n"
        "    services = ( { service = \"default/echo.default.svc.cluster.local\"; ports = ( { port = 80; target_port = 8080; } ); } ); }\n"
        ");\n"
        "services = ( { name = \"echo\"; namespace = \"default\"; addresses = [\"10.96.0.10\"];\n"
        "  ports = ( { port = 80; target_port = 8080; } ); subject_alt_names = [\"spiffe://example.org/ns/default/sa/x\"]; } );\n");
    const struct app_mesh_config *m = cfg->mesh;
    (void)state;
    assert_true(m->present);
    assert_string_equal(m->trust_domain, "example.org");
    assert_int_equal(m->mtls_mode, APP_MTLS_STRICT);
    assert_int_equal(m->cert_lifetime_s, 3600);
    assert_int_equal(m->n_workloads, 2);
    assert_string_equal(m->workloads[0].service_account, "sa-a");
    assert_string_equal(m->workloads[0].trust_domain, "example.org"); /* from mesh.trust_domain */
    assert_string_equal(m->workloads[0].uid, "Kubernetes//Pod/default/a");
    assert_int_equal(m->workloads[0].protocol, MESH_TUNNEL_HBONE);
    assert_int_equal(m->workloads[0].n_authorization_policies, 1);
    assert_string_equal(m->workloads[1].service_account, "default");
    assert_int_equal(m->workloads[1].protocol, MESH_TUNNEL_NONE);
    assert_int_equal(m->workloads[1].capacity, 3);
    assert_int_equal(m->workloads[1].status, MESH_WORKLOAD_UNHEALTHY);
    assert_int_equal(m->workloads[1].n_services, 1);
    assert_int_equal(m->workloads[1].services[0].ports[0].target_port, 8080);
    assert_int_equal(m->n_services, 1);
    assert_string_equal(m->services[0].hostname, "echo.default.svc.cluster.local");
    assert_int_equal(m->services[0].n_subject_alt_names, 1);
    assert_int_equal(app_mesh_local_addresses(m, "node1", local, 4), 1);
    assert_int_equal(local[0], (10u << 24) | (21u << 16) | (1u << 8) | 10u);
    app_config_free(cfg);
}

static void test_config_mesh_errors(void **state)
{
    (void)state;
    load_bad(BASE "mesh = { mtls_mode = \"strictish\"; };\n", "zw.cfg:3: mesh.mtls_mode: \"strictish\" is not one of");
    load_bad(BASE "mesh = { colour = 1; };\n", "zw.cfg:3: unknown key \"colour\" in mesh");
    load_bad(BASE "mesh = { certificates = { source = \"vault\"; }; };\n", "zw.cfg:3: mesh.certificates.source:");
    load_bad(BASE "mesh = { certificates = { ca_cert = \"/a.pem\"; }; };\n",
             "zw.cfg:3: mesh.certificates: ca_cert and ca_key go together");
    load_bad(BASE "workloads = ( { namespace = \"d\"; addresses = [\"10.0.0.1\"]; } );\n",
             "zw.cfg:3: workloads[0].name: required key is missing");
    load_bad(BASE "workloads = ( { name = \"a\"; namespace = \"d\"; } );\n",
             "zw.cfg:3: workloads[0].addresses: required key is missing");
    load_bad(BASE "workloads = ( { name = \"a\"; namespace = \"d\";\n addresses = [\"10.0.0.300\"]; } );\n",
             "zw.cfg:4: workloads[0].addresses[0]: \"10.0.0.300\" is not an IP address");
    load_bad(BASE "workloads = ( { name = \"a\"; namespace = \"d\"; addresses = [\"10.0.0.1\"];\n protocol = \"TLS\"; } );\n",
             "zw.cfg:4: workloads[0].protocol: \"TLS\" is not one of HBONE, NONE");
    load_bad(BASE "workloads = ( { name = \"a\"; namespace = \"d\"; addresses = [\"10.0.0.1\"];\n"
                  " services = ( { service = \"d/nope.d.svc.cluster.local\"; } ); } );\n",
             "zw.cfg:3: workloads[0].services[0]: no service \"d/nope.d.svc.cluster.local\"");
    load_bad(BASE "workloads = ( { uid = \"x\"; name = \"a\"; namespace = \"d\"; addresses = [\"10.0.0.1\"]; },\n"
                  " { uid = \"x\"; name = \"b\"; namespace = \"d\"; addresses = [\"10.0.0.2\"]; } );\n",
             "zw.cfg:4: workloads[1]: uid \"x\" is also workloads[0]'s");
    load_bad(BASE "workloads = ( { name = \"a\"; namespace = \"d\"; addresses = [\"10.0.0.1\"]; },\n"
                  " { name = \"b\"; namespace = \"d\"; addresses = [\"10.0.0.1\"]; } );\n",
             "zw.cfg:3: workloads/services:");
    load_bad(BASE "services = ( { name = \"s\"; namespace = \"d\";\n ports = ( { target_port = 80; } ); } );\n",
             "zw.cfg:4: services[0].ports[0].port: required key is missing");
    load_bad(BASE "workloads = { a = 1; };\n", "zw.cfg:3: workloads: expected a list");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_mesh_defaults_without_sections),
        cmocka_unit_test(test_config_mesh_good_file),
        cmocka_unit_test(test_config_mesh_errors),
    };
    return cmocka_run_group_tests_name("config_mesh", tests, NULL, NULL);
}
