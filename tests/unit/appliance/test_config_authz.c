/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the "policies" config section (appliance/config_authz.c) through app_config_load_string().
 *
 * Invariants of this file:
 *  - every fixture starts with the same node and two ports on lines 1..5, so the policies begin on line 6 and the
 *    expected messages carry exact line numbers; fixtures put one setting per line where the line matters;
 *  - error cases assert the complete message list, in order;
 *  - the good file is also compiled with mesh_authz_set_new() and evaluated, to show the parsed model is ready for
 *    the engine as is.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "appliance/config.h"
#include "appliance/config_authz.h"
#include "mesh/authz.h"

#define NAME "zw.cfg"
#define BASE                                                                                                           \
    "node = { name = \"n1\"; };\n"                                                                                     \
    "ports = (\n"                                                                                                      \
    "  { name = \"pods\"; role = \"pods\"; devargs = \"net_tap0\"; address = \"10.1.1.1/24\"; },\n"                    \
    "  { name = \"fab\"; role = \"fabric\"; devargs = \"net_tap1\"; address = \"10.0.0.1/24\"; }\n"                    \
    ");\n"
/* Lines 6..: one policy on line 7 whose single match (line 8) is given. */
#define ONE_MATCH(m)                                                                                                   \
    BASE "policies = (\n"                                                                                              \
         "  { name = \"p\"; namespace = \"default\"; scope = \"namespace\"; action = \"allow\"; "                  \
         "rules = ( { clauses = ( { matches = (\n"                                                                     \
         "    { " m " }\n"                                                                                             \
         "  ); } ); } ); }\n"                                                                                          \
         ");\n"
#define MP "policies[0].rules[0].clauses[0].matches[0]"

static void dump_errors(const struct app_config_errors *errs)
{
    for (int i = 0; i < errs->n; i++)
        print_message("  got: %s\n", errs->msgs[i]);
}

static struct app_config *load_ok(const char *text)
{
    struct app_config_errors errs;
    struct app_config *cfg = app_config_load_string(text, NAME, &errs);

    if (cfg == NULL)
        dump_errors(&errs);
    assert_non_null(cfg);
    assert_int_equal(errs.n, 0);
    app_config_errors_fini(&errs);
    return cfg;
}

static void expect_errors(const char *text, const char *const *want)
{
    struct app_config_errors errs;
    struct app_config *cfg = app_config_load_string(text, NAME, &errs);
    int n_want = 0;

    while (want[n_want] != NULL)
        n_want++;
    if (errs.n != n_want)
        dump_errors(&errs);
    assert_null(cfg);
    assert_int_equal(errs.n, n_want);
    for (int i = 0; i < n_want; i++) {
        if (strcmp(errs.msgs[i], want[i]) != 0)
            dump_errors(&errs);
        assert_string_equal(errs.msgs[i], want[i]);
    }
    app_config_errors_fini(&errs);
}

static void *libc_alloc(void *u, size_t n)
{
    (void)u;
    return malloc(n);
}

static void *libc_realloc(void *u, void *p, size_t n)
{
    (void)u;
    return realloc(p, n);
}

static void libc_free(void *u, void *p)
{
    (void)u;
    free(p);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Good files
 * ------------------------------------------------------------------------------------------------------------ */

static const char good[] = BASE
    "policies = (\n"
    "  { name = \"istio_converted_static_strict\"; namespace = \"istio-system\"; scope = \"workload_selector\";\n"
    "    action = \"deny\";\n"
    "    rules = ( { clauses = ( { matches = ( { not_principals = ( { presence = true; } ); } ); } ); } ); },\n"
    "  { name = \"deny-ns-b\"; namespace = \"default\"; scope = \"namespace\"; action = \"deny\"; dry_run = false;\n"
    "    rules = ( { clauses = ( { matches = ( { namespaces = [\"b\"]; destination_ports = [8080];\n"
    "                                             source_ips = [\"10.0.0.0/8\", \"fd00::/8\", \"192.168.1.7\"]; } ); }"
    " ); } ); },\n"
    "  { name = \"allow-a\"; namespace = \"default\"; scope = \"namespace\"; action = \"allow\";\n"
    "    rules = ( { clauses = ( { matches = ( { principals = ( \"cluster.local/ns/a/sa/x\", { prefix = \"td/\"; },\n"
    "                                                           { suffix = \"/sa/y\"; }, { exact = \"a*\"; } );\n"
    "                                             not_namespaces = ( { presence = true; } ); },\n"
    "                                           { service_accounts = ( { namespace = \"a\"; service_account = \"z\";"
    " } );\n"
    "                                             not_destination_ports = [ 22, 0, 65535 ];\n"
    "                                             destination_ips = [ \"::1\" ]; not_destination_ips = [ \"0.0.0.0/0\" "
    "];\n"
    "                                             not_source_ips = ( \"10.9.0.0/16\" );\n"
    "                                             not_service_accounts = ( { namespace = \"b\"; service_account = "
    "\"q\"; } ); } ); },\n"
    "                            { } ); },\n"
    "              { } ); },\n"
    "  { name = \"audit-all\"; namespace = \"istio-system\"; scope = \"global\"; action = \"allow\"; dry_run = true; "
    "rules = ( { } ); },\n"
    "  { name = \"deny-all\"; namespace = \"other\"; scope = \"namespace\"; action = \"allow\"; }\n"
    ");\n";

static void test_config_authz_good_file(void **state)
{
    struct app_config *cfg = load_ok(good);
    const struct app_authz_config *az = cfg->authz;
    const struct mesh_authz_policy *p;
    const struct mesh_authz_match *m;

    (void)state;
    assert_non_null(az);
    assert_int_equal(az->n_policies, 5);
    p = &az->policies[0];
    assert_string_equal(p->name, "istio_converted_static_strict");
    assert_string_equal(p->namespace, "istio-system");
    assert_int_equal(p->scope, MESH_AUTHZ_SCOPE_WORKLOAD_SELECTOR);
    assert_int_equal(p->action, MESH_AUTHZ_ACTION_DENY);
    assert_false(p->dry_run);
    assert_int_equal(p->n_rules, 1);
    assert_int_equal(p->rules[0].n_clauses, 1);
    assert_int_equal(p->rules[0].clauses[0].n_matches, 1);
    m = &p->rules[0].clauses[0].matches[0];
    assert_int_equal(m->n_not_principals, 1);
    assert_int_equal(m->not_principals[0].kind, MESH_AUTHZ_STR_PRESENCE);
    assert_int_equal(az->lines[0], 7);

    p = &az->policies[1];
    assert_int_equal(p->scope, MESH_AUTHZ_SCOPE_NAMESPACE);
    m = &p->rules[0].clauses[0].matches[0];
    assert_int_equal(m->n_namespaces, 1);
    assert_int_equal(m->namespaces[0].kind, MESH_AUTHZ_STR_EXACT);
    assert_string_equal(m->namespaces[0].value, "b");
    assert_int_equal(m->n_destination_ports, 1);
    assert_int_equal(m->destination_ports[0], 8080);
    assert_int_equal(m->n_source_ips, 3);
    assert_int_equal(m->source_ips[0].family, MESH_ADDR_V4);
    assert_int_equal(m->source_ips[0].len, 8);
    assert_int_equal(m->source_ips[0].addr[0], 10);
    assert_int_equal(m->source_ips[1].family, MESH_ADDR_V6);
    assert_int_equal(m->source_ips[1].len, 8);
    assert_int_equal(m->source_ips[1].addr[0], 0xfd);
    assert_int_equal(m->source_ips[2].len, 32);
    assert_int_equal(m->source_ips[2].addr[3], 7);

    p = &az->policies[2];
    assert_int_equal(p->n_rules, 2);
    assert_int_equal(p->rules[0].n_clauses, 2);
    assert_int_equal(p->rules[0].clauses[0].n_matches, 2);
    assert_int_equal(p->rules[0].clauses[1].n_matches, 0);
    assert_int_equal(p->rules[1].n_clauses, 0);
    m = &p->rules[0].clauses[0].matches[0];
    assert_int_equal(m->n_principals, 4);
    assert_int_equal(m->principals[0].kind, MESH_AUTHZ_STR_EXACT);
    assert_int_equal(m->principals[1].kind, MESH_AUTHZ_STR_PREFIX);
    assert_string_equal(m->principals[1].value, "td/");
    assert_int_equal(m->principals[2].kind, MESH_AUTHZ_STR_SUFFIX);
    assert_int_equal(m->principals[3].kind, MESH_AUTHZ_STR_EXACT);
    assert_string_equal(m->principals[3].value, "a*");
    m = &p->rules[0].clauses[0].matches[1];
    assert_int_equal(m->n_service_accounts, 1);
    assert_string_equal(m->service_accounts[0].namespace, "a");
    assert_string_equal(m->service_accounts[0].service_account, "z");
    assert_int_equal(m->n_not_destination_ports, 3);
    assert_int_equal(m->not_destination_ports[2], 65535);
    assert_int_equal(m->destination_ips[0].len, 128);
    assert_int_equal(m->not_destination_ips[0].len, 0);
    assert_int_equal(m->n_not_source_ips, 1);
    assert_int_equal(m->n_not_service_accounts, 1);

    assert_true(az->policies[3].dry_run);
    assert_int_equal(az->policies[3].scope, MESH_AUTHZ_SCOPE_GLOBAL);
    assert_int_equal(az->policies[4].n_rules, 0);

    /* The parsed model goes to the engine unchanged. */
    struct mesh_env env = {.alloc = libc_alloc, .realloc = libc_realloc, .free = libc_free};
    struct mesh_authz_set *set;
    struct mesh_authz_conn conn = {0};
    struct mesh_authz_result r;
    const char *keys[] = {"istio-system/istio_converted_static_strict"};
    int err;

    set = mesh_authz_set_new(&env, az->policies, az->n_policies, &err);
    assert_non_null(set);
    conn.src.family = conn.dst.family = MESH_ADDR_V4;
    conn.dst_namespace = "default";
    conn.policy_keys = keys;
    conn.n_policy_keys = 1;
    assert_int_equal(mesh_authz_eval(set, &conn, &r), MESH_AUTHZ_DENY); /* plaintext under STRICT */
    assert_string_equal(mesh_authz_set_policy_key(set, (size_t)r.policy), "istio-system/istio_converted_static_strict");
    mesh_authz_set_free(set);
    app_config_free(cfg);
}

static void test_config_authz_absent_section(void **state)
{
    struct app_config *cfg = load_ok(BASE);

    (void)state;
    assert_non_null(cfg->authz);
    assert_int_equal(cfg->authz->n_policies, 0);
    app_config_free(cfg);
    cfg = load_ok(BASE "policies = ( );\n");
    assert_int_equal(cfg->authz->n_policies, 0);
    app_config_free(cfg);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Bad values
 * ------------------------------------------------------------------------------------------------------------ */

static void test_config_authz_bad_policy_fields(void **state)
{
    (void)state;
    expect_errors(BASE "policies = (\n"
                       "  { name = \"Bad\";\n"
                       "    namespace = \"Default\";\n"
                       "    scope = \"cluster\";\n"
                       "    action = \"audit\";\n"
                       "    dry_run = 1;\n"
                       "    selector = \"x\"; }\n"
                       ");\n",
                  (const char *const[]){
                      "zw.cfg:7: policies[0].name: \"Bad\" is not a valid policy name ([a-z0-9._-], 1..253 characters, "
                      "starting with a letter or digit)",
                      "zw.cfg:8: policies[0].namespace: \"Default\" is not a valid namespace ([a-z0-9-], 1..63 "
                      "characters)",
                      "zw.cfg:9: policies[0].scope: \"cluster\" is not one of global, namespace, workload_selector",
                      "zw.cfg:10: policies[0].action: \"audit\" is not one of allow, deny (ztunnel has no audit or "
                      "custom)",
                      "zw.cfg:11: policies[0].dry_run: expected a boolean, got integer 1",
                      "zw.cfg:12: unknown key \"selector\" in policies[0]",
                      NULL});
    expect_errors(BASE "policies = (\n"
                       "  { dry_run = true; }\n"
                       ");\n",
                  (const char *const[]){"zw.cfg:7: policies[0].name: required key is missing",
                                        "zw.cfg:7: policies[0].namespace: required key is missing",
                                        "zw.cfg:7: policies[0].scope: required key is missing",
                                        "zw.cfg:7: policies[0].action: required key is missing", NULL});
    expect_errors(BASE "policies = { a = 1; };\n",
                  (const char *const[]){"zw.cfg:6: policies: expected a list, got a group", NULL});
    expect_errors(BASE "policies = ( 1 );\n",
                  (const char *const[]){"zw.cfg:6: policies[0]: expected a group, got integer 1", NULL});
    expect_errors(BASE "policies = (\n"
                       "  { name = \"p\"; namespace = \"default\"; scope = \"global\"; action = \"deny\";\n"
                       "    rules = 1; }\n"
                       ");\n",
                  (const char *const[]){"zw.cfg:8: policies[0].rules: expected a list, got integer 1", NULL});
    expect_errors(BASE "policies = (\n"
                       "  { name = \"p\"; namespace = \"default\"; scope = \"global\"; action = \"deny\";\n"
                       "    rules = ( { clauses = ( { matches = ( 5 ); other = 1; } ); } ); }\n"
                       ");\n",
                  (const char *const[]){
                      "zw.cfg:8: unknown key \"other\" in policies[0].rules[0].clauses[0]",
                      "zw.cfg:8: policies[0].rules[0].clauses[0].matches[0]: expected a group, got integer 5", NULL});
}

static void test_config_authz_duplicate_policy(void **state)
{
    (void)state;
    expect_errors(BASE "policies = (\n"
                       "  { name = \"p\"; namespace = \"default\"; scope = \"namespace\"; action = \"allow\"; },\n"
                       "  { name = \"p\"; namespace = \"other\"; scope = \"namespace\"; action = \"allow\"; },\n"
                       "  { name = \"p\";\n"
                       "    namespace = \"default\"; scope = \"workload_selector\"; action = \"deny\"; }\n"
                       ");\n",
                  (const char *const[]){"zw.cfg:9: policies[2].name: \"default/p\" is already the policy at line 7",
                                        NULL});
}

static void test_config_authz_bad_ports(void **state)
{
    (void)state;
    expect_errors(ONE_MATCH("destination_ports = [ 80, 70000, -1 ];"),
                  (const char *const[]){"zw.cfg:8: " MP ".destination_ports[1]: 70000 is out of range (0..65535)",
                                        "zw.cfg:8: " MP ".destination_ports[2]: -1 is out of range (0..65535)", NULL});
    expect_errors(ONE_MATCH("not_destination_ports = [ \"80\" ];"),
                  (const char *const[]){"zw.cfg:8: " MP ".not_destination_ports[0]: expected an integer, got string "
                                        "\"80\"",
                                        NULL});
    expect_errors(ONE_MATCH("destination_ports = 80;"),
                  (const char *const[]){"zw.cfg:8: " MP ".destination_ports: expected a list, got integer 80", NULL});
}

static void test_config_authz_bad_ips(void **state)
{
    (void)state;
    expect_errors(ONE_MATCH("source_ips = [ \"10.0.0.0/33\", \"10.0.0.1/8\", \"fd00::/129\", \"nope\", "
                            "\"10.0.0.0/08\", \"10.0.0.0/\", \"/8\", \"1.2.3.4/8x\", \"fd00::1/64\" ];"),
                  (const char *const[]){
                      "zw.cfg:8: " MP ".source_ips[0]: \"10.0.0.0/33\" has a prefix length above 32",
                      "zw.cfg:8: " MP ".source_ips[1]: \"10.0.0.1/8\" has host bits set beyond its prefix length",
                      "zw.cfg:8: " MP ".source_ips[2]: \"fd00::/129\" has a prefix length above 128",
                      "zw.cfg:8: " MP ".source_ips[3]: \"nope\" is not an IP address or prefix",
                      "zw.cfg:8: " MP ".source_ips[4]: \"10.0.0.0/08\" is not an IP address or prefix",
                      "zw.cfg:8: " MP ".source_ips[5]: \"10.0.0.0/\" is not an IP address or prefix",
                      "zw.cfg:8: " MP ".source_ips[6]: \"/8\" is not an IP address or prefix",
                      "zw.cfg:8: " MP ".source_ips[7]: \"1.2.3.4/8x\" is not an IP address or prefix",
                      "zw.cfg:8: " MP ".source_ips[8]: \"fd00::1/64\" has host bits set beyond its prefix length",
                      NULL});
    expect_errors(ONE_MATCH("not_destination_ips = [ 10 ];"),
                  (const char *const[]){"zw.cfg:8: " MP ".not_destination_ips[0]: expected a string, got integer 10",
                                        NULL});
}

static void test_config_authz_bad_string_matches(void **state)
{
    (void)state;
    expect_errors(ONE_MATCH("namespaces = [ \"*\", \"pro*\" ];"),
                  (const char *const[]){
                      "zw.cfg:8: " MP ".namespaces[0]: \"*\" contains '*'; write { presence = true; }, { prefix = "
                      "\"...\"; } or { suffix = \"...\"; } (or { exact = \"...\"; } for a literal '*')",
                      "zw.cfg:8: " MP ".namespaces[1]: \"pro*\" contains '*'; write { presence = true; }, { prefix = "
                      "\"...\"; } or { suffix = \"...\"; } (or { exact = \"...\"; } for a literal '*')",
                      NULL});
    expect_errors(ONE_MATCH("principals = ( { prefix = \"a\"; suffix = \"b\"; }, { presence = false; }, { regex = "
                            "\"x\"; }, 5, { exact = 1; } );"),
                  (const char *const[]){
                      "zw.cfg:8: " MP ".principals[0]: needs exactly one of exact, prefix, suffix, presence (got 2)",
                      "zw.cfg:8: " MP ".principals[1].presence: only presence = true is meaningful",
                      "zw.cfg:8: unknown key \"regex\" in " MP ".principals[2]",
                      "zw.cfg:8: " MP ".principals[2]: needs exactly one of exact, prefix, suffix, presence (got 0)",
                      "zw.cfg:8: " MP ".principals[3]: expected a string or a group, got integer 5",
                      "zw.cfg:8: " MP ".principals[4].exact: expected a string, got integer 1", NULL});
    expect_errors(ONE_MATCH("not_principals = [ \"spiffe://cluster.local/ns/a/sa/b\" ];"),
                  (const char *const[]){"zw.cfg:8: " MP ".not_principals[0]: \"spiffe://cluster.local/ns/a/sa/b\": "
                                        "principals are written without \"spiffe://\" (td/ns/NS/sa/SA)",
                                        NULL});
}

static void test_config_authz_bad_service_accounts(void **state)
{
    (void)state;
    expect_errors(ONE_MATCH("service_accounts = ( \"a/b\", { namespace = \"a\"; }, { namespace = \"a\"; "
                            "service_account = \"b\"; sa = 1; } );"),
                  (const char *const[]){
                      "zw.cfg:8: " MP ".service_accounts[0]: expected a group { namespace = \"...\"; service_account "
                      "= \"...\"; }, got string \"a/b\"",
                      "zw.cfg:8: " MP ".service_accounts[1].service_account: required key is missing",
                      "zw.cfg:8: unknown key \"sa\" in " MP ".service_accounts[2]", NULL});
}

static void test_config_authz_unknown_match_key_and_many_errors(void **state)
{
    (void)state;
    /* L7 fields have no place in an L4 policy; and every error of a file is reported, in line order. */
    expect_errors(BASE "policies = (\n"
                       "  { name = \"a\"; namespace = \"default\"; scope = \"namespace\"; action = \"allow\";\n"
                       "    rules = ( { clauses = ( { matches = ( { hosts = [\"x\"]; } ); } ); } ); },\n"
                       "  { name = \"b\"; namespace = \"default\"; scope = \"namespace\"; action = \"allow\";\n"
                       "    rules = ( { clauses = ( { matches = ( { destination_ports = [ 99999 ]; } ); } ); } ); },\n"
                       "  { name = \"c\"; namespace = \"default\"; scope = \"namespace\"; action = \"allow\"; },\n"
                       "  { name = \"d\"; namespace = \"default\"; scope = \"nope\"; action = \"allow\"; }\n"
                       ");\n",
                  (const char *const[]){
                      "zw.cfg:8: unknown key \"hosts\" in policies[0].rules[0].clauses[0].matches[0]",
                      "zw.cfg:10: policies[1].rules[0].clauses[0].matches[0].destination_ports[0]: 99999 is out of "
                      "range (0..65535)",
                      "zw.cfg:12: policies[3].scope: \"nope\" is not one of global, namespace, workload_selector",
                      NULL});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_authz_good_file),
        cmocka_unit_test(test_config_authz_absent_section),
        cmocka_unit_test(test_config_authz_bad_policy_fields),
        cmocka_unit_test(test_config_authz_duplicate_policy),
        cmocka_unit_test(test_config_authz_bad_ports),
        cmocka_unit_test(test_config_authz_bad_ips),
        cmocka_unit_test(test_config_authz_bad_string_matches),
        cmocka_unit_test(test_config_authz_bad_service_accounts),
        cmocka_unit_test(test_config_authz_unknown_match_key_and_many_errors),
    };
    return cmocka_run_group_tests_name("config_authz", tests, NULL, NULL);
}
