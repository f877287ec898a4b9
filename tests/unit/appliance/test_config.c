/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for appliance/config.c through its public API.
 *
 * Invariants of this file:
 *  - every fixture is an in-memory string loaded under the name "zw.cfg", except the shipped example
 *    (ZW_EXAMPLE_CFG, set by meson) and the missing-file case;
 *  - error cases assert the complete message list, in order, including the line numbers, so each
 *    fixture is written with one setting per line where the line matters;
 *  - every load is paired with app_config_free()/app_config_errors_fini(), so ASan sees no leaks.
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

#ifndef ZW_EXAMPLE_CFG
#error "ZW_EXAMPLE_CFG must name examples/zwire.cfg"
#endif

#define NAME "zw.cfg"

/* Lines 1..5 of most fixtures: a node and two valid ports (pods 10.1.1.1/24, fabric 10.0.0.1/24). */
#define NODE "node = { name = \"n1\"; };\n"
#define PORT_PODS "  { name = \"pods\"; role = \"pods\"; devargs = \"net_tap0\"; address = \"10.1.1.1/24\"; }"
#define PORT_FAB "  { name = \"fab\"; role = \"fabric\"; devargs = \"net_tap1\"; address = \"10.0.0.1/24\"; }"
#define PORTS2 "ports = (\n" PORT_PODS ",\n" PORT_FAB "\n);\n"
#define BASE NODE PORTS2
/* Line 2..4: ports with a single entry on line 3. */
#define PORT1(entry) "ports = (\n  { " entry " }\n);\n"
#define P_OK "name = \"pods\"; role = \"pods\"; devargs = \"net_tap0\"; "
/* Lines 2..5: the pods port on line 3, then entry on line 4. */
#define PORTS_POD_AND(entry) "ports = (\n" PORT_PODS ",\n  { " entry " }\n);\n"
/* Lines 6..8 after BASE: routes with a single entry on line 7. */
#define ROUTE1(entry) "routes = (\n  { " entry " }\n);\n"

static uint32_t ip(unsigned a, unsigned b, unsigned c, unsigned d)
{
    return (uint32_t)a << 24 | (uint32_t)b << 16 | (uint32_t)c << 8 | (uint32_t)d;
}

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

/* Loads text and asserts it fails with exactly the NULL-terminated list of messages, in order. */
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
    for (int i = 0; i < n_want; i++)
        assert_string_equal(errs.msgs[i], want[i]);
    app_config_errors_fini(&errs);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Good files
 * ------------------------------------------------------------------------------------------------------------ */

static void test_config_example_parses(void **state)
{
    struct app_config_errors errs;
    struct app_config *cfg = app_config_load(ZW_EXAMPLE_CFG, &errs);
    char buf[16];

    (void)state;
    if (cfg == NULL)
        dump_errors(&errs);
    assert_non_null(cfg);
    assert_int_equal(errs.n, 0);
    assert_string_equal(cfg->path, ZW_EXAMPLE_CFG);
    assert_string_equal(cfg->node_name, "node1");

    assert_int_equal(cfg->n_ports, 2);
    assert_string_equal(cfg->ports[0].name, "pods");
    assert_int_equal(cfg->ports[0].role, APP_PORT_PODS);
    assert_string_equal(cfg->ports[0].devargs, "net_af_packet0,iface=eth1");
    assert_int_equal(cfg->ports[0].address.addr, ip(10, 1, 1, 1));
    assert_int_equal(cfg->ports[0].address.len, 24);
    assert_int_equal(cfg->ports[0].mtu, 1500);
    assert_int_equal(cfg->ports[0].line, 12);
    assert_string_equal(cfg->ports[1].name, "fabric");
    assert_int_equal(cfg->ports[1].role, APP_PORT_FABRIC);
    assert_string_equal(cfg->ports[1].devargs, "0000:03:00.0");
    assert_string_equal(app_ipv4_format(cfg->ports[1].address.addr, buf), "10.0.0.1");
    assert_int_equal(cfg->ports[1].address.len, 24);
    assert_int_equal(cfg->ports[1].mtu, 1500);
    assert_int_equal(cfg->ports[1].line, 19);

    assert_int_equal(cfg->n_routes, 1);
    assert_int_equal(cfg->routes[0].prefix.addr, ip(10, 1, 2, 0));
    assert_int_equal(cfg->routes[0].prefix.len, 24);
    assert_int_equal(cfg->routes[0].via, ip(10, 0, 0, 2));
    assert_int_equal(cfg->routes[0].line, 29);

    assert_int_equal(cfg->dataplane.workers, 1);
    assert_int_equal(cfg->dataplane.mbufs, 8191);
    assert_int_equal(cfg->dataplane.rx_burst, 32);
    assert_false(cfg->dataplane.backoff.enabled);
    assert_int_equal(cfg->dataplane.backoff.empty_polls, 100);
    assert_int_equal(cfg->dataplane.backoff.sleep_us, 500);
    assert_int_equal(cfg->dataplane.arp_timeout_s, 300);
    assert_int_equal(cfg->dataplane.arp_pending_max, 64);
    assert_string_equal(cfg->eal.file_prefix, "zwire-node1");
    assert_int_equal(cfg->eal.memory_mb, 256);
    assert_false(cfg->eal.no_huge);
    assert_int_equal(cfg->eal.n_extra, 0);
    assert_string_equal(cfg->mgmt.socket_path, "/run/zwire/mgmt.sock");
    assert_string_equal(cfg->mgmt.metrics_listen, "0.0.0.0:15020");
    assert_int_equal(cfg->log_level, APP_LOG_INFO);

    app_config_free(cfg);
    app_config_errors_fini(&errs);
}

static void test_config_defaults_applied(void **state)
{
    struct app_config *cfg = load_ok(NODE PORT1(P_OK "address = \"10.1.1.1/24\";"));

    (void)state;
    assert_string_equal(cfg->path, NAME);
    assert_string_equal(cfg->node_name, "n1");
    assert_int_equal(cfg->n_ports, 1);
    assert_int_equal(cfg->ports[0].mtu, 1500);
    assert_int_equal(cfg->ports[0].line, 3);
    assert_int_equal(cfg->n_routes, 0);
    assert_int_equal(cfg->dataplane.workers, 1);
    assert_int_equal(cfg->dataplane.mbufs, 8191);
    assert_int_equal(cfg->dataplane.rx_burst, 32);
    assert_false(cfg->dataplane.backoff.enabled);
    assert_int_equal(cfg->dataplane.backoff.empty_polls, 100);
    assert_int_equal(cfg->dataplane.backoff.sleep_us, 500);
    assert_int_equal(cfg->dataplane.arp_timeout_s, 300);
    assert_int_equal(cfg->dataplane.arp_pending_max, 64);
    assert_string_equal(cfg->eal.file_prefix, "zwire-n1");
    assert_int_equal(cfg->eal.memory_mb, 256);
    assert_false(cfg->eal.no_huge);
    assert_int_equal(cfg->eal.n_extra, 0);
    assert_string_equal(cfg->mgmt.socket_path, APP_CONFIG_DEFAULT_MGMT_SOCKET);
    assert_null(cfg->mgmt.metrics_listen);
    assert_int_equal(cfg->log_level, APP_LOG_INFO);
    app_config_free(cfg);
}

static void test_config_defaults_in_empty_groups(void **state)
{
    struct app_config *cfg = load_ok(BASE "dataplane = { idle_backoff = { }; arp = { }; };\n"
                                          "eal = { };\nmgmt = { };\nlog = { };\nroutes = ( );\n");

    (void)state;
    assert_int_equal(cfg->dataplane.workers, 1);
    assert_false(cfg->dataplane.backoff.enabled);
    assert_int_equal(cfg->dataplane.arp_pending_max, 64);
    assert_string_equal(cfg->eal.file_prefix, "zwire-n1");
    assert_string_equal(cfg->mgmt.socket_path, APP_CONFIG_DEFAULT_MGMT_SOCKET);
    assert_int_equal(cfg->log_level, APP_LOG_INFO);
    assert_int_equal(cfg->n_routes, 0);
    app_config_free(cfg);
}

static void test_config_every_field_read(void **state)
{
    static const char text[] =
        "node = { name = \"edge-7.dc1\"; };\n"
        "ports = (\n"
        "  { name = \"pods_a\"; role = \"pods\"; devargs = \"net_memif0,role=server\"; address = \"10.1.1.1/24\";"
        " mtu = 9000; },\n"
        "  { name = \"fab-1\"; role = \"fabric\"; devargs = \"0000:03:00.0\"; address = \"192.168.7.6/31\";"
        " mtu = 68; },\n"
        "  { name = \"pods_b\"; role = \"pods\"; devargs = \"net_tap0\"; address = \"172.16.0.254/16\"; }\n"
        ");\n"
        "routes = (\n"
        "  { prefix = \"10.1.2.0/24\"; via = \"192.168.7.7\"; },\n"
        "  { prefix = \"10.2.0.0/16\"; via = \"192.168.7.7\"; },\n"
        "  { prefix = \"10.1.2.128/25\"; via = \"172.16.3.4\"; }\n"
        ");\n"
        "dataplane = {\n"
        "  workers = 16; mbufs = 100000L; rx_burst = 256;\n"
        "  idle_backoff = { enabled = true; empty_polls = 1; sleep_us = 1000000; };\n"
        "  arp = { timeout_s = 86400; pending_max = 4096; };\n"
        "};\n"
        "eal = { file_prefix = \"lab\"; memory_mb = 64; no_huge = true;\n"
        "  extra_args = [ \"--vdev=net_ring0\", \"-l\", \"0-3\" ]; };\n"
        "mgmt = { socket = \"/tmp/zw.sock\"; metrics_listen = \"127.0.0.1:65535\"; };\n"
        "log = { level = \"debug\"; };\n";
    struct app_config *cfg = load_ok(text);

    (void)state;
    assert_string_equal(cfg->node_name, "edge-7.dc1");
    assert_int_equal(cfg->n_ports, 3);
    assert_string_equal(cfg->ports[0].name, "pods_a");
    assert_string_equal(cfg->ports[0].devargs, "net_memif0,role=server");
    assert_int_equal(cfg->ports[0].mtu, 9000);
    assert_string_equal(cfg->ports[1].name, "fab-1");
    assert_int_equal(cfg->ports[1].role, APP_PORT_FABRIC);
    assert_int_equal(cfg->ports[1].address.addr, ip(192, 168, 7, 6));
    assert_int_equal(cfg->ports[1].address.len, 31);
    assert_int_equal(cfg->ports[1].mtu, 68);
    assert_int_equal(cfg->ports[1].line, 4);
    assert_int_equal(cfg->ports[2].role, APP_PORT_PODS);
    assert_int_equal(cfg->ports[2].address.addr, ip(172, 16, 0, 254));
    assert_int_equal(cfg->ports[2].address.len, 16);
    assert_int_equal(cfg->n_routes, 3);
    assert_int_equal(cfg->routes[1].prefix.addr, ip(10, 2, 0, 0));
    assert_int_equal(cfg->routes[1].prefix.len, 16);
    assert_int_equal(cfg->routes[1].via, ip(192, 168, 7, 7));
    assert_int_equal(cfg->routes[1].line, 9);
    assert_int_equal(cfg->routes[2].prefix.len, 25);
    assert_int_equal(cfg->routes[2].via, ip(172, 16, 3, 4));
    assert_int_equal(cfg->dataplane.workers, 16);
    assert_int_equal(cfg->dataplane.mbufs, 100000);
    assert_int_equal(cfg->dataplane.rx_burst, 256);
    assert_true(cfg->dataplane.backoff.enabled);
    assert_int_equal(cfg->dataplane.backoff.empty_polls, 1);
    assert_int_equal(cfg->dataplane.backoff.sleep_us, 1000000);
    assert_int_equal(cfg->dataplane.arp_timeout_s, 86400);
    assert_int_equal(cfg->dataplane.arp_pending_max, 4096);
    assert_string_equal(cfg->eal.file_prefix, "lab");
    assert_int_equal(cfg->eal.memory_mb, 64);
    assert_true(cfg->eal.no_huge);
    assert_int_equal(cfg->eal.n_extra, 3);
    assert_string_equal(cfg->eal.extra[0], "--vdev=net_ring0");
    assert_string_equal(cfg->eal.extra[2], "0-3");
    assert_string_equal(cfg->mgmt.socket_path, "/tmp/zw.sock");
    assert_string_equal(cfg->mgmt.metrics_listen, "127.0.0.1:65535");
    assert_int_equal(cfg->log_level, APP_LOG_DEBUG);
    app_config_free(cfg);
}

static void test_config_limits_accepted(void **state)
{
    static char text[32768];
    size_t off = 0;
    struct app_config *cfg;

    (void)state;
    /* 8 ports, 256 routes, 32 EAL arguments, longest names and socket path: all at the limit. */
    off += (size_t)snprintf(text + off, sizeof(text) - off,
                            "node = { name = \"%s\"; };\nports = (\n", "abcdefghij0123456789abcdefghij0123456789"
                                                                       "abcdefghij0123456789abc");
    for (int i = 0; i < APP_CONFIG_MAX_PORTS; i++)
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                "%s{ name = \"p%d_abcdefghij0123456789abcdefgh\"; role = \"pods\"; devargs = \"x\";"
                                " address = \"10.%d.0.1/16\"; }\n", i ? "," : "", i, i);
    off += (size_t)snprintf(text + off, sizeof(text) - off, ");\nroutes = (\n");
    for (int i = 0; i < APP_CONFIG_MAX_ROUTES; i++)
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                "%s{ prefix = \"172.16.%d.0/24\"; via = \"10.0.0.2\"; }\n", i ? "," : "", i);
    off += (size_t)snprintf(text + off, sizeof(text) - off, ");\neal = { extra_args = [");
    for (int i = 0; i < APP_CONFIG_MAX_EAL_ARGS; i++)
        off += (size_t)snprintf(text + off, sizeof(text) - off, "%s\"-a%d\"", i ? ", " : "", i);
    off += (size_t)snprintf(text + off, sizeof(text) - off, "]; };\nmgmt = { socket = \"/%0106d\"; };\n", 0);
    assert_true(off < sizeof(text) - 1);

    cfg = load_ok(text);
    assert_int_equal(cfg->n_ports, APP_CONFIG_MAX_PORTS);
    assert_int_equal(cfg->n_routes, APP_CONFIG_MAX_ROUTES);
    assert_int_equal(cfg->eal.n_extra, APP_CONFIG_MAX_EAL_ARGS);
    assert_int_equal(strlen(cfg->node_name), 63);
    assert_int_equal(strlen(cfg->ports[7].name), 31);
    assert_int_equal(strlen(cfg->mgmt.socket_path), 107);
    assert_string_equal(cfg->eal.extra[31], "-a31");
    app_config_free(cfg);
}

static void test_config_extra_args_as_list(void **state)
{
    struct app_config *cfg = load_ok(BASE "eal = { extra_args = ( \"--no-pci\", \"--in-memory\" ); };\n");

    (void)state;
    assert_int_equal(cfg->eal.n_extra, 2);
    assert_string_equal(cfg->eal.extra[1], "--in-memory");
    app_config_free(cfg);
}

static void test_config_levels_and_roles_named(void **state)
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};

    (void)state;
    for (int i = 0; i < 4; i++) {
        char text[512];
        struct app_config *cfg;

        snprintf(text, sizeof(text), BASE "log = { level = \"%s\"; };\n", levels[i]);
        cfg = load_ok(text);
        assert_int_equal(cfg->log_level, i);
        assert_string_equal(app_log_level_name(cfg->log_level), levels[i]);
        app_config_free(cfg);
    }
    assert_string_equal(app_port_role_name(APP_PORT_PODS), "pods");
    assert_string_equal(app_port_role_name(APP_PORT_FABRIC), "fabric");
}

/* ---------------------------------------------------------------------------------------------------------------
 * IPv4 helpers
 * ------------------------------------------------------------------------------------------------------------ */

static void test_config_ipv4_parse(void **state)
{
    static const char *const bad[] = {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4", "01.2.3.4",
                                      "1.2.3.04", "1..3.4", "1.2.3.", "a.b.c.d", "1.2.3.4/24", "-1.2.3.4",
                                      "+1.2.3.4", "0x1.2.3.4", "1.2.3.1000", "1.2.3.4x"};
    uint32_t a = 0;

    (void)state;
    assert_int_equal(app_ipv4_parse("10.0.0.1", &a), 0);
    assert_int_equal(a, ip(10, 0, 0, 1));
    assert_int_equal(app_ipv4_parse("0.0.0.0", &a), 0);
    assert_int_equal(a, 0);
    assert_int_equal(app_ipv4_parse("255.255.255.255", &a), 0);
    assert_int_equal(a, UINT32_MAX);
    assert_int_equal(app_ipv4_parse("192.168.100.200", &a), 0);
    assert_int_equal(a, ip(192, 168, 100, 200));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a = 7;
        if (app_ipv4_parse(bad[i], &a) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(a, 7);
    }
}

static void test_config_ipv4_prefix_parse(void **state)
{
    static const char *const bad[] = {"10.0.0.0", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/08", "10.0.0.0/24x",
                                      "10.0.0.0/ 24", "10.0.0.0/-1", "10.0.0.0/100", "10.0.0/24", "10.0.0.0//24",
                                      "10.0.0.300/24"};
    struct app_ipv4_prefix p;

    (void)state;
    assert_int_equal(app_ipv4_prefix_parse("10.1.2.3/24", &p), 0);
    assert_int_equal(p.addr, ip(10, 1, 2, 3));
    assert_int_equal(p.len, 24);
    assert_int_equal(app_ipv4_prefix_parse("0.0.0.0/0", &p), 0);
    assert_int_equal(p.len, 0);
    assert_int_equal(app_ipv4_prefix_parse("1.2.3.4/32", &p), 0);
    assert_int_equal(p.len, 32);
    assert_int_equal(app_ipv4_prefix_parse("1.2.3.4/8", &p), 0);
    assert_int_equal(p.len, 8);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (app_ipv4_prefix_parse(bad[i], &p) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void test_config_ipv4_format(void **state)
{
    char buf[16];

    (void)state;
    assert_string_equal(app_ipv4_format(ip(10, 0, 0, 1), buf), "10.0.0.1");
    assert_string_equal(app_ipv4_format(0, buf), "0.0.0.0");
    assert_string_equal(app_ipv4_format(UINT32_MAX, buf), "255.255.255.255");
    assert_ptr_equal(app_ipv4_format(ip(1, 2, 3, 4), buf), buf);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Failures outside the table
 * ------------------------------------------------------------------------------------------------------------ */

static void test_config_syntax_error(void **state)
{
    static const char *const want[] = {NAME ":3: syntax error", NULL};

    (void)state;
    expect_errors(NODE "ports = (\n  { name = ; }\n);\nfoo = bar;\n", want);
}

static void test_config_syntax_error_duplicate_key(void **state)
{
    static const char *const want[] = {NAME ":2: duplicate setting name", NULL};

    (void)state;
    expect_errors("node = { name = \"a\";\n name = \"b\"; };\n", want);
}

static void test_config_missing_file(void **state)
{
    struct app_config_errors errs;

    (void)state;
    assert_null(app_config_load("/nonexistent/zwire.cfg", &errs));
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.msgs[0], "/nonexistent/zwire.cfg:0: cannot open: No such file or directory");
    app_config_errors_fini(&errs);
    assert_int_equal(errs.n, 0);
    assert_null(errs.msgs);
}

static void test_config_all_errors_at_once(void **state)
{
    static const char text[] =
        "node = { name = \"Node_1\"; };\n"                                                               /* 1 */
        "ports = (\n"                                                                                   /* 2 */
        "  { name = \"pods\"; role = \"pod\"; devargs = \"net_tap0\"; address = \"10.1.1.1/24\"; },\n"  /* 3 */
        "  { name = \"pods\"; role = \"fabric\";\n"                                                     /* 4 */
        "    devargs = \"net_tap1\"; address = \"10.1.1.9/16\"; mtu = 9001; colour = 1; }\n"           /* 5 */
        ");\n"                                                                                          /* 6 */
        "routes = ( { prefix = \"10.9.0.1/16\"; via = \"10.7.0.1\"; } );\n"                             /* 7 */
        "dataplane = {\n"                                                                               /* 8 */
        "  workers = 0;\n"                                                                              /* 9 */
        "  rx_burst = \"32\";\n"                                                                        /* 10 */
        "};\n"                                                                                          /* 11 */
        "mgmt = { socket = \"relative.sock\"; };\n"                                                     /* 12 */
        "log = { level = \"loud\"; };\n"                                                                /* 13 */
        "extra = 1;\n";                                                                                 /* 14 */
    static const char *const want[] = {
        NAME ":1: node.name: \"Node_1\" is not a valid node name ([a-z0-9.-], 1..63 characters)",
        NAME ":3: ports[0].role: \"pod\" is not a port role (pods | fabric)",
        NAME ":4: ports[1].name: \"pods\" is already the name of ports[0]",
        NAME ":5: unknown key \"colour\" in ports[1]",
        NAME ":5: ports[1].mtu: 9001 is out of range (68..9000)",
        NAME ":5: ports[1].address: \"10.1.1.9/16\" overlaps the subnet of ports[0] (10.1.1.0/24)",
        NAME ":7: routes[0].prefix: \"10.9.0.1/16\" has host bits set (the network is 10.9.0.0/16)",
        NAME ":7: routes[0].via: \"10.7.0.1\" is not inside any connected subnet",
        NAME ":9: dataplane.workers: 0 is out of range (1..16)",
        NAME ":10: dataplane.rx_burst: expected an integer, got string \"32\"",
        NAME ":12: mgmt.socket: \"relative.sock\" is not an absolute path",
        NAME ":13: log.level: \"loud\" is not a log level (error | warn | info | debug)",
        NAME ":14: unknown key \"extra\" at top level",
        NULL};

    (void)state;
    expect_errors(text, want);
}

static void test_config_errors_optional_and_printable(void **state)
{
    struct app_config_errors errs;
    char *out = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    assert_null(app_config_load_string(BASE "foo = 1;\nbar = 2;\n", NAME, NULL));
    assert_null(app_config_load_string(BASE "foo = 1;\nbar = 2;\n", NAME, &errs));
    f = open_memstream(&out, &len);
    assert_non_null(f);
    app_config_errors_print(&errs, f);
    fclose(f);
    assert_string_equal(out, NAME ":6: unknown key \"foo\" at top level\n"
                             NAME ":7: unknown key \"bar\" at top level\n");
    free(out);
    app_config_errors_fini(&errs);
    app_config_errors_fini(&errs);
    app_config_errors_fini(NULL);
    app_config_free(NULL);

    /* errs is reusable after fini and is reset by a successful load */
    app_config_free(app_config_load_string(BASE, NAME, &errs));
    assert_int_equal(errs.n, 0);
    app_config_errors_fini(&errs);
}

static void test_config_route_next_hop_check_skipped_after_bad_port(void **state)
{
    static const char *const want[] = {
        NAME ":3: ports[0].address: \"10.1.1.300/24\" is not an IPv4 prefix (a.b.c.d/len)", NULL};

    (void)state;
    expect_errors(NODE PORT1(P_OK "address = \"10.1.1.300/24\";") "routes = ( { prefix = \"10.2.0.0/16\"; via = "
                                                                  "\"10.1.1.2\"; } );\n",
                  want);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Error table: one case per message, each asserting the exact text and line
 * ------------------------------------------------------------------------------------------------------------ */

struct error_case {
    const char *name;
    const char *text;
    const char *want[4]; /* NULL-terminated */
};

#define E(s) NAME ":" s

static const struct error_case error_cases[] = {
    /* unknown keys at every level */
    {"test_config_unknown_top_level_key", BASE "foo = 1;\n", {E("6: unknown key \"foo\" at top level")}},
    {"test_config_unknown_key_in_node", "node = { name = \"n1\"; colour = \"red\"; };\n" PORTS2,
     {E("1: unknown key \"colour\" in node")}},
    {"test_config_unknown_key_in_port", NODE PORT1(P_OK "address = \"10.1.1.1/24\"; speed = 10;"),
     {E("3: unknown key \"speed\" in ports[0]")}},
    {"test_config_unknown_key_in_route", BASE ROUTE1("prefix = \"10.1.2.0/24\"; via = \"10.0.0.2\"; dev = 1;"),
     {E("7: unknown key \"dev\" in routes[0]")}},
    {"test_config_unknown_key_in_dataplane", BASE "dataplane = {\n  workerz = 2;\n};\n",
     {E("7: unknown key \"workerz\" in dataplane")}},
    {"test_config_unknown_key_in_idle_backoff", BASE "dataplane = { idle_backoff = {\n  sleep_ms = 1; }; };\n",
     {E("7: unknown key \"sleep_ms\" in dataplane.idle_backoff")}},
    {"test_config_unknown_key_in_arp", BASE "dataplane = { arp = { timeout = 1; }; };\n",
     {E("6: unknown key \"timeout\" in dataplane.arp")}},
    {"test_config_unknown_key_in_eal", BASE "eal = { hugepages = true; };\n",
     {E("6: unknown key \"hugepages\" in eal")}},
    {"test_config_unknown_key_in_mgmt", BASE "mgmt = { port = 80; };\n", {E("6: unknown key \"port\" in mgmt")}},
    {"test_config_unknown_key_in_log", BASE "log = { file = \"x\"; };\n", {E("6: unknown key \"file\" in log")}},

    /* wrong types */
    {"test_config_type_string_for_integer", BASE "dataplane = { workers = \"4\"; };\n",
     {E("6: dataplane.workers: expected an integer, got string \"4\"")}},
    {"test_config_type_float_for_integer", NODE PORT1(P_OK "address = \"10.1.1.1/24\"; mtu = 1500.5;"),
     {E("3: ports[0].mtu: expected an integer, got float 1500.5")}},
    {"test_config_type_integer_for_bool", BASE "dataplane = { idle_backoff = { enabled = 1; }; };\n",
     {E("6: dataplane.idle_backoff.enabled: expected a boolean, got integer 1")}},
    {"test_config_type_string_for_bool", BASE "eal = { no_huge = \"yes\"; };\n",
     {E("6: eal.no_huge: expected a boolean, got string \"yes\"")}},
    {"test_config_type_integer_for_group", BASE "dataplane = 5;\n",
     {E("6: dataplane: expected a group, got integer 5")}},
    {"test_config_type_list_for_subgroup", BASE "dataplane = { arp = ( 1 ); };\n",
     {E("6: dataplane.arp: expected a group, got a list")}},
    {"test_config_type_group_for_ports", NODE "ports = { name = \"a\"; };\n",
     {E("2: ports: expected a list, got a group")}},
    {"test_config_type_port_entry_not_group", NODE "ports = ( \"pods\" );\n",
     {E("2: ports[0]: expected a group, got string \"pods\"")}},
    {"test_config_type_array_for_routes", BASE "routes = [ 1 ];\n", {E("6: routes: expected a list, got an array")}},
    {"test_config_type_integer_for_node_name", "node = { name = 7; };\n" PORTS2,
     {E("1: node.name: expected a string, got integer 7")}},
    {"test_config_type_bool_for_address", NODE PORT1(P_OK "address = true;"),
     {E("3: ports[0].address: expected a string, got boolean true")}},
    {"test_config_type_string_for_extra_args", BASE "eal = { extra_args = \"--no-pci\"; };\n",
     {E("6: eal.extra_args: expected an array of strings, got string \"--no-pci\"")}},
    {"test_config_type_extra_args_elements", BASE "eal = { extra_args = [ 1, 2 ]; };\n",
     {E("6: eal.extra_args[0]: expected a string, got integer 1"),
      E("6: eal.extra_args[1]: expected a string, got integer 2")}},

    /* required keys */
    {"test_config_missing_node", PORTS2, {E("0: node: required key is missing")}},
    {"test_config_missing_node_name", "node = { };\n" PORTS2, {E("1: node.name: required key is missing")}},
    {"test_config_missing_ports", NODE, {E("0: ports: required key is missing")}},
    {"test_config_empty_ports", NODE "ports = (\n);\n",
     {E("2: ports: the list is empty; at least one port is required")}},
    {"test_config_missing_port_name", NODE PORT1("role = \"pods\"; devargs = \"x\"; address = \"10.1.1.1/24\";"),
     {E("3: ports[0].name: required key is missing")}},
    {"test_config_missing_port_role", NODE PORT1("name = \"p\"; devargs = \"x\"; address = \"10.1.1.1/24\";"),
     {E("3: ports[0].role: required key is missing")}},
    {"test_config_missing_port_devargs", NODE PORT1("name = \"p\"; role = \"pods\"; address = \"10.1.1.1/24\";"),
     {E("3: ports[0].devargs: required key is missing")}},
    {"test_config_missing_port_address", NODE PORT1(P_OK), {E("3: ports[0].address: required key is missing")}},
    {"test_config_missing_route_prefix", BASE "routes = (\n  { via = \"10.0.0.2\"; }\n);\n",
     {E("7: routes[0].prefix: required key is missing")}},
    {"test_config_missing_route_via", BASE "routes = (\n  { prefix = \"10.1.2.0/24\"; }\n);\n",
     {E("7: routes[0].via: required key is missing")}},

    /* ranges */
    {"test_config_workers_zero", BASE "dataplane = { workers = 0; };\n",
     {E("6: dataplane.workers: 0 is out of range (1..16)")}},
    {"test_config_workers_too_many", BASE "dataplane = { workers = 17; };\n",
     {E("6: dataplane.workers: 17 is out of range (1..16)")}},
    {"test_config_workers_negative", BASE "dataplane = { workers = -1; };\n",
     {E("6: dataplane.workers: -1 is out of range (1..16)")}},
    {"test_config_rx_burst_zero", BASE "dataplane = { rx_burst = 0; };\n",
     {E("6: dataplane.rx_burst: 0 is out of range (1..256)")}},
    {"test_config_rx_burst_too_big", BASE "dataplane = { rx_burst = 257; };\n",
     {E("6: dataplane.rx_burst: 257 is out of range (1..256)")}},
    {"test_config_mtu_too_small", NODE PORT1(P_OK "address = \"10.1.1.1/24\"; mtu = 67;"),
     {E("3: ports[0].mtu: 67 is out of range (68..9000)")}},
    {"test_config_mtu_too_big", NODE PORT1(P_OK "address = \"10.1.1.1/24\"; mtu = 9001;"),
     {E("3: ports[0].mtu: 9001 is out of range (68..9000)")}},
    {"test_config_mbufs_too_few", BASE "dataplane = { mbufs = 1022; };\n",
     {E("6: dataplane.mbufs: 1022 is out of range (at least 1023)")}},
    {"test_config_mbufs_too_many", BASE "dataplane = { mbufs = 4294967296L; };\n",
     {E("6: dataplane.mbufs: 4294967296 is out of range (at most 4294967295)")}},
    {"test_config_memory_too_small", BASE "eal = { memory_mb = 63; };\n",
     {E("6: eal.memory_mb: 63 is out of range (at least 64)")}},
    {"test_config_sleep_us_zero", BASE "dataplane = { idle_backoff = { sleep_us = 0; }; };\n",
     {E("6: dataplane.idle_backoff.sleep_us: 0 is out of range (1..1000000)")}},
    {"test_config_sleep_us_too_long", BASE "dataplane = { idle_backoff = { sleep_us = 1000001; }; };\n",
     {E("6: dataplane.idle_backoff.sleep_us: 1000001 is out of range (1..1000000)")}},
    {"test_config_empty_polls_zero", BASE "dataplane = { idle_backoff = { empty_polls = 0; }; };\n",
     {E("6: dataplane.idle_backoff.empty_polls: 0 is out of range (at least 1)")}},
    {"test_config_arp_timeout_zero", BASE "dataplane = { arp = { timeout_s = 0; }; };\n",
     {E("6: dataplane.arp.timeout_s: 0 is out of range (1..86400)")}},
    {"test_config_arp_timeout_too_long", BASE "dataplane = { arp = { timeout_s = 86401; }; };\n",
     {E("6: dataplane.arp.timeout_s: 86401 is out of range (1..86400)")}},
    {"test_config_pending_max_zero", BASE "dataplane = { arp = { pending_max = 0; }; };\n",
     {E("6: dataplane.arp.pending_max: 0 is out of range (1..4096)")}},
    {"test_config_pending_max_too_big", BASE "dataplane = { arp = { pending_max = 4097; }; };\n",
     {E("6: dataplane.arp.pending_max: 4097 is out of range (1..4096)")}},

    /* names and enumerations */
    {"test_config_bad_role", NODE PORT1("name = \"p\"; role = \"pod\"; devargs = \"x\"; address = \"10.1.1.1/24\";"),
     {E("3: ports[0].role: \"pod\" is not a port role (pods | fabric)")}},
    {"test_config_bad_log_level", BASE "log = {\n  level = \"verbose\";\n};\n",
     {E("7: log.level: \"verbose\" is not a log level (error | warn | info | debug)")}},
    {"test_config_node_name_charset", "node = { name = \"Node1\"; };\n" PORTS2,
     {E("1: node.name: \"Node1\" is not a valid node name ([a-z0-9.-], 1..63 characters)")}},
    {"test_config_node_name_empty", "node = { name = \"\"; };\n" PORTS2,
     {E("1: node.name: \"\" is not a valid node name ([a-z0-9.-], 1..63 characters)")}},
    {"test_config_node_name_too_long",
     "node = { name = \"abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abcd\"; };\n" PORTS2,
     {E("1: node.name: \"abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abcd\" is not a valid node name "
        "([a-z0-9.-], 1..63 characters)")}},
    {"test_config_port_name_charset", NODE PORT1("name = \"pods.a\"; role = \"pods\"; devargs = \"x\"; "
                                                 "address = \"10.1.1.1/24\";"),
     {E("3: ports[0].name: \"pods.a\" is not a valid port name ([a-z0-9_-], 1..31 characters)")}},
    {"test_config_port_name_too_long", NODE PORT1("name = \"abcdefghij0123456789abcdefghij01\"; role = \"pods\"; "
                                                  "devargs = \"x\"; address = \"10.1.1.1/24\";"),
     {E("3: ports[0].name: \"abcdefghij0123456789abcdefghij01\" is not a valid port name ([a-z0-9_-], 1..31 "
        "characters)")}},
    {"test_config_duplicate_port_name",
     NODE PORTS_POD_AND("name = \"pods\"; role = \"fabric\"; devargs = \"y\"; address = \"10.0.0.1/24\";"),
     {E("4: ports[1].name: \"pods\" is already the name of ports[0]")}},
    {"test_config_two_fabric_ports",
     NODE "ports = (\n" PORT_FAB ",\n  { name = \"fab2\"; role = \"fabric\"; devargs = \"y\";"
          " address = \"10.2.0.1/24\"; }\n);\n",
     {E("4: ports[1].role: \"fabric\" is already the role of ports[0]; at most one port may face the fabric")}},
    {"test_config_empty_devargs",
     NODE PORT1("name = \"p\"; role = \"pods\"; devargs = \"\"; address = \"10.1.1.1/24\";"),
     {E("3: ports[0].devargs: \"\" is empty; give a vdev or a PCI address")}},
    {"test_config_bad_file_prefix", BASE "eal = { file_prefix = \"a/b\"; };\n",
     {E("6: eal.file_prefix: \"a/b\" is not a valid file prefix (non-empty, no '/' or spaces)")}},

    /* port addresses */
    {"test_config_port_address_not_prefix",
     NODE PORTS_POD_AND("name = \"b\"; role = \"fabric\"; devargs = \"y\"; address = \"10.0.0.300/24\";"),
     {E("4: ports[1].address: \"10.0.0.300/24\" is not an IPv4 prefix (a.b.c.d/len)")}},
    {"test_config_port_address_without_len", NODE PORT1(P_OK "address = \"10.1.1.1\";"),
     {E("3: ports[0].address: \"10.1.1.1\" is not an IPv4 prefix (a.b.c.d/len)")}},
    {"test_config_port_address_len_zero", NODE PORT1(P_OK "address = \"10.1.1.1/0\";"),
     {E("3: ports[0].address: \"10.1.1.1/0\" has prefix length 0; a port needs a host address in a subnet "
        "(length 1..31)")}},
    {"test_config_port_address_len_32", NODE PORT1(P_OK "address = \"10.1.1.1/32\";"),
     {E("3: ports[0].address: \"10.1.1.1/32\" has prefix length 32; a port needs a host address in a subnet "
        "(length 1..31)")}},
    {"test_config_port_address_host_bits_zero", NODE PORT1(P_OK "address = \"10.1.1.0/24\";"),
     {E("3: ports[0].address: \"10.1.1.0/24\" is the network address of its subnet; a port needs a host address")}},
    {"test_config_port_address_broadcast", NODE PORT1(P_OK "address = \"10.1.1.255/24\";"),
     {E("3: ports[0].address: \"10.1.1.255/24\" is the broadcast address of its subnet; a port needs a host "
        "address")}},
    {"test_config_port_subnets_overlap",
     NODE PORTS_POD_AND("name = \"b\"; role = \"fabric\"; devargs = \"y\"; address = \"10.1.0.1/16\";"),
     {E("4: ports[1].address: \"10.1.0.1/16\" overlaps the subnet of ports[0] (10.1.1.0/24)")}},

    /* routes */
    {"test_config_route_prefix_not_prefix", BASE "routes = (\n  { prefix = \"10.1.2/24\"; via = \"10.0.0.2\"; }\n);\n",
     {E("7: routes[0].prefix: \"10.1.2/24\" is not an IPv4 prefix (a.b.c.d/len)")}},
    {"test_config_route_prefix_host_bits", BASE "routes = (\n  { prefix = \"10.1.2.1/24\"; via = \"10.0.0.2\"; }\n);\n",
     {E("7: routes[0].prefix: \"10.1.2.1/24\" has host bits set (the network is 10.1.2.0/24)")}},
    {"test_config_route_duplicate",
     BASE "routes = (\n  { prefix = \"10.1.2.0/24\"; via = \"10.0.0.2\"; },\n"
          "  { prefix = \"10.1.2.0/24\"; via = \"10.0.0.3\"; }\n);\n",
     {E("8: routes[1].prefix: \"10.1.2.0/24\" duplicates routes[0]")}},
    {"test_config_route_overlaps_connected",
     BASE "routes = (\n  { prefix = \"10.1.0.0/16\"; via = \"10.0.0.2\"; }\n);\n",
     {E("7: routes[0].prefix: \"10.1.0.0/16\" overlaps the connected subnet of ports[0] (10.1.1.0/24)")}},
    {"test_config_route_default_overlaps_connected",
     BASE "routes = (\n  { prefix = \"0.0.0.0/0\"; via = \"10.0.0.2\"; }\n);\n",
     {E("7: routes[0].prefix: \"0.0.0.0/0\" overlaps the connected subnet of ports[0] (10.1.1.0/24)")}},
    {"test_config_route_via_not_address", BASE "routes = (\n  { prefix = \"10.1.2.0/24\"; via = \"10.0.0.02\"; }\n);\n",
     {E("7: routes[0].via: \"10.0.0.02\" is not an IPv4 address (a.b.c.d)")}},
    {"test_config_route_via_outside",
     BASE "routes = (\n  { prefix = \"10.1.2.0/24\";\n    via = \"192.168.0.1\"; }\n);\n",
     {E("8: routes[0].via: \"192.168.0.1\" is not inside any connected subnet")}},
    {"test_config_route_via_own_address", BASE "routes = (\n  { prefix = \"10.1.2.0/24\"; via = \"10.0.0.1\"; }\n);\n",
     {E("7: routes[0].via: \"10.0.0.1\" is our own address on ports[1]")}},

    /* counts */
    {"test_config_too_many_ports",
     NODE "ports = (\n"
          "{name=\"a\";role=\"pods\";devargs=\"x\";address=\"10.1.0.1/24\";},"
          "{name=\"b\";role=\"pods\";devargs=\"x\";address=\"10.2.0.1/24\";},"
          "{name=\"c\";role=\"pods\";devargs=\"x\";address=\"10.3.0.1/24\";},"
          "{name=\"d\";role=\"pods\";devargs=\"x\";address=\"10.4.0.1/24\";},"
          "{name=\"e\";role=\"pods\";devargs=\"x\";address=\"10.5.0.1/24\";},"
          "{name=\"f\";role=\"pods\";devargs=\"x\";address=\"10.6.0.1/24\";},"
          "{name=\"g\";role=\"pods\";devargs=\"x\";address=\"10.7.0.1/24\";},"
          "{name=\"h\";role=\"pods\";devargs=\"x\";address=\"10.8.0.1/24\";},"
          "{name=\"i\";role=\"pods\";devargs=\"x\";address=\"10.9.0.1/24\";}\n);\n",
     {E("2: ports: 9 ports given, at most 8 are allowed")}},
    {"test_config_too_many_extra_args",
     BASE "eal = {\n  extra_args = [ \"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\","
          "\"13\",\"14\",\"15\",\"16\",\"17\",\"18\",\"19\",\"20\",\"21\",\"22\",\"23\",\"24\",\"25\",\"26\","
          "\"27\",\"28\",\"29\",\"30\","
          "\"31\",\"32\",\"33\" ];\n};\n",
     {E("7: eal.extra_args: 33 arguments given, at most 32 are allowed")}},

    /* mgmt */
    {"test_config_metrics_listen_no_port", BASE "mgmt = { metrics_listen = \"0.0.0.0\"; };\n",
     {E("6: mgmt.metrics_listen: \"0.0.0.0\" is not ip:port (a.b.c.d:1..65535)")}},
    {"test_config_metrics_listen_port_zero", BASE "mgmt = { metrics_listen = \"0.0.0.0:0\"; };\n",
     {E("6: mgmt.metrics_listen: \"0.0.0.0:0\" is not ip:port (a.b.c.d:1..65535)")}},
    {"test_config_metrics_listen_port_too_big", BASE "mgmt = { metrics_listen = \"127.0.0.1:65536\"; };\n",
     {E("6: mgmt.metrics_listen: \"127.0.0.1:65536\" is not ip:port (a.b.c.d:1..65535)")}},
    {"test_config_metrics_listen_hostname", BASE "mgmt = { metrics_listen = \"localhost:15020\"; };\n",
     {E("6: mgmt.metrics_listen: \"localhost:15020\" is not ip:port (a.b.c.d:1..65535)")}},
    {"test_config_mgmt_socket_relative", BASE "mgmt = { socket = \"run/zwire.sock\"; };\n",
     {E("6: mgmt.socket: \"run/zwire.sock\" is not an absolute path")}},
    {"test_config_mgmt_socket_too_long",
     BASE "mgmt = { socket = \"/run/zwire/abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij"
          "0123456789abcdefghij0123456\"; };\n",
     {E("6: mgmt.socket: \"/run/zwire/abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij"
        "0123456789abcdefghij0123456\" is 108 bytes long; a socket path must be shorter than 108 bytes")}},
};

static void run_error_case(void **state)
{
    const struct error_case *c = *state;
    const char *want[5] = {NULL};

    for (int i = 0; i < 4 && c->want[i] != NULL; i++)
        want[i] = c->want[i];
    expect_errors(c->text, want);
}

/* Built at run time: 257 routes are easier to generate than to spell out. */
static void test_config_too_many_routes(void **state)
{
    size_t cap = 64 * 1024, off = 0;
    char *text = malloc(cap);
    static const char *const want[] = {E("6: routes: 257 routes given, at most 256 are allowed"), NULL};

    (void)state;
    assert_non_null(text);
    off += (size_t)snprintf(text + off, cap - off, "%s", BASE "routes = (\n");
    for (int i = 0; i <= APP_CONFIG_MAX_ROUTES; i++)
        off += (size_t)snprintf(text + off, cap - off, "%s{ prefix = \"172.%d.%d.0/24\"; via = \"10.0.0.2\"; }\n",
                                i ? "," : "", 16 + i / 256, i % 256);
    off += (size_t)snprintf(text + off, cap - off, ");\n");
    assert_true(off < cap - 1);
    expect_errors(text, want);
    free(text);
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_config_example_parses),
        cmocka_unit_test(test_config_defaults_applied),
        cmocka_unit_test(test_config_defaults_in_empty_groups),
        cmocka_unit_test(test_config_every_field_read),
        cmocka_unit_test(test_config_limits_accepted),
        cmocka_unit_test(test_config_extra_args_as_list),
        cmocka_unit_test(test_config_levels_and_roles_named),
        cmocka_unit_test(test_config_ipv4_parse),
        cmocka_unit_test(test_config_ipv4_prefix_parse),
        cmocka_unit_test(test_config_ipv4_format),
        cmocka_unit_test(test_config_syntax_error),
        cmocka_unit_test(test_config_syntax_error_duplicate_key),
        cmocka_unit_test(test_config_missing_file),
        cmocka_unit_test(test_config_all_errors_at_once),
        cmocka_unit_test(test_config_errors_optional_and_printable),
        cmocka_unit_test(test_config_route_next_hop_check_skipped_after_bad_port),
        cmocka_unit_test(test_config_too_many_routes),
    };
    enum { N_FIXED = sizeof(fixed) / sizeof(fixed[0]), N_CASES = sizeof(error_cases) / sizeof(error_cases[0]) };
    static struct CMUnitTest tests[N_FIXED + N_CASES];

    memcpy(tests, fixed, sizeof(fixed));
    for (int i = 0; i < N_CASES; i++) {
        tests[N_FIXED + i] = (struct CMUnitTest){
            .name = error_cases[i].name,
            .test_func = run_error_case,
            .initial_state = (void *)(uintptr_t)&error_cases[i],
        };
    }
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
