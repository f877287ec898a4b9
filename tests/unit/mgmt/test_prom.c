/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of mgmt/prom.c: HELP/TYPE once per family, label escaping, value formats, both output formats. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mgmt/prom.h"

static struct mgmt_prom *prom_new(enum mgmt_prom_format f)
{
    const char *err = NULL;
    struct mgmt_prom *p = mgmt_prom_new(f, &err);
    assert_non_null(p);
    return p;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *s = strstr(hay, needle); s != NULL; s = strstr(s + 1, needle))
        n++;
    return n;
}

static void test_prom_family_once(void **state)
{
    (void)state;
    struct mgmt_prom *p = prom_new(MGMT_PROM_TEXT);
    struct mgmt_prom_label l0[] = {{"port", "pods"}};
    struct mgmt_prom_label l1[] = {{"port", "fabric"}};
    assert_int_equal(mgmt_prom_family(p, "zwire_rx_packets_total", MGMT_PROM_COUNTER, "Packets received."), 0);
    assert_int_equal(mgmt_prom_sample_u64(p, l0, 1, 10), 0);
    assert_int_equal(mgmt_prom_family(p, "zwire_rx_packets_total", MGMT_PROM_COUNTER, "Packets received."), 0);
    assert_int_equal(mgmt_prom_sample_u64(p, l1, 1, 18446744073709551615ull), 0);
    assert_int_equal(mgmt_prom_family(p, "zwire_workers", MGMT_PROM_GAUGE, "Worker lcores."), 0);
    assert_int_equal(mgmt_prom_sample_u64(p, NULL, 0, 4), 0);
    /* Going back to an earlier family would split it. */
    assert_int_equal(mgmt_prom_family(p, "zwire_rx_packets_total", MGMT_PROM_COUNTER, "x"), -EEXIST);
    assert_int_equal(mgmt_prom_family(p, "zwire_workers", MGMT_PROM_COUNTER, "x"), -EEXIST);
    assert_int_equal(mgmt_prom_finish(p), 0);

    size_t len;
    const char *out = mgmt_prom_data(p, &len);
    assert_int_equal(len, strlen(out));
    assert_string_equal(out, "# HELP zwire_rx_packets_total Packets received.\n"
                             "# TYPE zwire_rx_packets_total counter\n"
                             "zwire_rx_packets_total{port=\"pods\"} 10\n"
                             "zwire_rx_packets_total{port=\"fabric\"} 18446744073709551615\n"
                             "# HELP zwire_workers Worker lcores.\n"
                             "# TYPE zwire_workers gauge\n"
                             "zwire_workers 4\n");
    assert_int_equal(count(out, "# TYPE zwire_rx_packets_total"), 1);
    mgmt_prom_free(p);
}

static void test_prom_escaping(void **state)
{
    (void)state;
    struct mgmt_prom *p = prom_new(MGMT_PROM_TEXT);
    struct mgmt_prom_label l[] = {{"path", "C:\\dir\\\"x\"\nnext"}, {"empty", ""}};
    assert_int_equal(mgmt_prom_family(p, "m", MGMT_PROM_GAUGE, "Help with \\ backslash\nand newline \"quoted\"."), 0);
    assert_int_equal(mgmt_prom_sample_u64(p, l, 2, 1), 0);
    const char *out = mgmt_prom_data(p, NULL);
    assert_string_equal(out, "# HELP m Help with \\\\ backslash\\nand newline \"quoted\".\n"
                             "# TYPE m gauge\n"
                             "m{path=\"C:\\\\dir\\\\\\\"x\\\"\\nnext\",empty=\"\"} 1\n");
    mgmt_prom_free(p);
}

static void test_prom_names(void **state)
{
    (void)state;
    struct mgmt_prom *p = prom_new(MGMT_PROM_TEXT);
    struct mgmt_prom_label bad_label[] = {{"a:b", "x"}};
    struct mgmt_prom_label bad_label2[] = {{"1a", "x"}};
    assert_int_equal(mgmt_prom_sample_u64(p, NULL, 0, 1), -EINVAL); /* no family yet */
    assert_int_equal(mgmt_prom_family(p, "9bad", MGMT_PROM_GAUGE, NULL), -EINVAL);
    assert_int_equal(mgmt_prom_family(p, "bad-name", MGMT_PROM_GAUGE, NULL), -EINVAL);
    assert_int_equal(mgmt_prom_family(p, "", MGMT_PROM_GAUGE, NULL), -EINVAL);
    assert_int_equal(mgmt_prom_family(p, "ns:sub_metric", MGMT_PROM_GAUGE, NULL), 0);
    assert_int_equal(mgmt_prom_sample_u64(p, bad_label, 1, 1), -EINVAL);
    assert_int_equal(mgmt_prom_sample_u64(p, bad_label2, 1, 1), -EINVAL);
    assert_string_equal(mgmt_prom_data(p, NULL), "# TYPE ns:sub_metric gauge\n");
    mgmt_prom_free(p);
}

static void test_prom_doubles(void **state)
{
    (void)state;
    struct mgmt_prom *p = prom_new(MGMT_PROM_TEXT);
    assert_int_equal(mgmt_prom_family(p, "d", MGMT_PROM_GAUGE, NULL), 0);
    assert_int_equal(mgmt_prom_sample_double(p, NULL, 0, 0.1), 0);
    assert_int_equal(mgmt_prom_sample_double(p, NULL, 0, 1e300), 0);
    assert_int_equal(mgmt_prom_sample_double(p, NULL, 0, -2.5), 0);
    assert_int_equal(mgmt_prom_sample_double(p, NULL, 0, NAN), 0);
    assert_int_equal(mgmt_prom_sample_double(p, NULL, 0, INFINITY), 0);
    assert_int_equal(mgmt_prom_sample_double(p, NULL, 0, -INFINITY), 0);
    assert_string_equal(mgmt_prom_data(p, NULL), "# TYPE d gauge\nd 0.1\nd 1e+300\nd -2.5\nd NaN\nd +Inf\nd -Inf\n");
    mgmt_prom_free(p);
}

static void test_prom_openmetrics(void **state)
{
    (void)state;
    struct mgmt_prom *p = prom_new(MGMT_PROM_OPENMETRICS);
    struct mgmt_prom_label l[] = {{"reason", "denied"}};
    assert_int_equal(mgmt_prom_family(p, "istio_tcp_connections_opened_total", MGMT_PROM_COUNTER, "Opened."), 0);
    assert_int_equal(mgmt_prom_sample_u64(p, l, 1, 3), 0);
    assert_int_equal(mgmt_prom_family(p, "zwire_drops", MGMT_PROM_COUNTER, "Drops."), 0);
    assert_int_equal(mgmt_prom_sample_u64(p, NULL, 0, 2), 0);
    assert_int_equal(mgmt_prom_finish(p), 0);
    assert_int_equal(mgmt_prom_family(p, "late", MGMT_PROM_GAUGE, NULL), -EINVAL);
    assert_string_equal(mgmt_prom_data(p, NULL), "# HELP istio_tcp_connections_opened Opened.\n"
                                                 "# TYPE istio_tcp_connections_opened counter\n"
                                                 "istio_tcp_connections_opened_total{reason=\"denied\"} 3\n"
                                                 "# HELP zwire_drops Drops.\n"
                                                 "# TYPE zwire_drops counter\n"
                                                 "zwire_drops_total 2\n"
                                                 "# EOF\n");
    mgmt_prom_free(p);
}

static void test_prom_accept(void **state)
{
    (void)state;
    assert_int_equal(mgmt_prom_format_from_accept(NULL), MGMT_PROM_TEXT);
    assert_int_equal(mgmt_prom_format_from_accept("*/*"), MGMT_PROM_TEXT);
    assert_int_equal(mgmt_prom_format_from_accept("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), MGMT_PROM_TEXT);
    assert_int_equal(mgmt_prom_format_from_accept("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
                     MGMT_PROM_OPENMETRICS);
    assert_int_equal(mgmt_prom_format_from_accept("text/plain, application/openmetrics-text"), MGMT_PROM_OPENMETRICS);
    assert_string_equal(mgmt_prom_content_type(MGMT_PROM_TEXT), "text/plain; charset=utf-8");
    assert_string_equal(mgmt_prom_content_type(MGMT_PROM_OPENMETRICS),
                        "application/openmetrics-text;charset=utf-8;version=1.0.0");
}

static void test_prom_large(void **state)
{
    (void)state;
    struct mgmt_prom *p = prom_new(MGMT_PROM_TEXT);
    assert_int_equal(mgmt_prom_family(p, "big", MGMT_PROM_COUNTER, "many samples"), 0);
    for (int i = 0; i < 20000; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        struct mgmt_prom_label l[] = {{"i", v}};
        assert_int_equal(mgmt_prom_sample_u64(p, l, 1, (uint64_t)i), 0);
    }
    size_t len;
    const char *out = mgmt_prom_data(p, &len);
    assert_int_equal(strlen(out), len);
    assert_non_null(strstr(out, "big{i=\"19999\"} 19999\n"));
    mgmt_prom_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prom_family_once), cmocka_unit_test(test_prom_escaping),
        cmocka_unit_test(test_prom_names),       cmocka_unit_test(test_prom_doubles),
        cmocka_unit_test(test_prom_openmetrics), cmocka_unit_test(test_prom_accept),
        cmocka_unit_test(test_prom_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
