/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of mgmt/routes.c: registration, dispatch (404, 405 + Allow, HEAD, TCP visibility), index, responses. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mgmt/routes.h"

struct fixture {
    struct mgmt_routes *routes;
    struct mgmt_http_request *parser;
    struct mgmt_response resp;
    int calls;
};

static void h_stats(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct fixture *f = ctx;
    f->calls++;
    json_t *j = json_pack("{s:s, s:i}", "node", "node1", "uptime_s", 12);
    (void)req;
    mgmt_response_json(resp, 200, j);
}

static void h_logging(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct fixture *f = ctx;
    f->calls++;
    const char *level = mgmt_request_query_get(req, "level");
    if (level == NULL)
        mgmt_response_text(resp, 200, "current log level is info\n");
    else
        mgmt_response_text(resp, 200, "level set to %s\n", level);
}

static void h_ready(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    (void)ctx;
    (void)req;
    mgmt_response_text(resp, 200, "ready\n");
}

static void h_forgetful(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    (void)ctx;
    (void)req;
    mgmt_response_append(resp, "no status set");
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *err = NULL;
    f->routes = mgmt_routes_new(&err);
    f->parser = mgmt_http_request_new(NULL, &err);
    assert_non_null(f->routes);
    assert_non_null(f->parser);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/stats", h_stats, f, "counters as JSON", 0), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "POST", "/logging", h_logging, f, "show or set log levels", 0), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/healthz/ready", h_ready, f, "readiness", MGMT_ROUTE_TCP), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/config", h_stats, f, "config", 0), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "PUT", "/config", h_stats, f, "replace config", 0), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/secret", h_stats, f, "hidden", MGMT_ROUTE_HIDDEN), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/broken", h_forgetful, f, NULL, 0), 0);
    mgmt_response_init(&f->resp);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    mgmt_response_fini(&f->resp);
    mgmt_http_request_free(f->parser);
    mgmt_routes_free(f->routes);
    free(f);
    return 0;
}

/* Parse raw and dispatch it; the response lands in f->resp. */
static void run(struct fixture *f, const char *raw, enum mgmt_listener listener)
{
    size_t used;
    mgmt_http_request_reset(f->parser);
    mgmt_response_fini(&f->resp);
    mgmt_response_init(&f->resp);
    assert_int_equal(mgmt_http_request_feed(f->parser, raw, strlen(raw), &used), MGMT_HTTP_COMPLETE);
    mgmt_routes_dispatch(f->routes, mgmt_http_request_get(f->parser), listener, &f->resp);
}

static const char *allow_of(struct fixture *f)
{
    static char buf[128];
    return mgmt_response_header(&f->resp, "Allow", buf, sizeof(buf));
}

static void test_routes_add_errors(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/stats", h_stats, f, "dup", 0), -EEXIST);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/", h_stats, f, "index", 0), -EEXIST);
    assert_int_equal(mgmt_routes_add(f->routes, "get", "/x", h_stats, f, NULL, 0), -EINVAL);
    assert_int_equal(mgmt_routes_add(f->routes, "HEAD", "/x", h_stats, f, NULL, 0), -EINVAL);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "x", h_stats, f, NULL, 0), -EINVAL);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/x?y", h_stats, f, NULL, 0), -EINVAL);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/x", NULL, f, NULL, 0), -EINVAL);
    assert_int_equal(mgmt_routes_add(f->routes, "", "/x", h_stats, f, NULL, 0), -EINVAL);
    assert_int_equal(mgmt_routes_count(f->routes), 7);
}

static void test_routes_dispatch_ok(void **state)
{
    struct fixture *f = *state;
    run(f, "GET /stats HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 200);
    assert_int_equal(f->calls, 1);
    assert_string_equal(f->resp.content_type, "application/json");
    assert_non_null(strstr(f->resp.body, "\"node\": \"node1\"")); /* indented by default */
    assert_false(f->resp.head_only);

    run(f, "GET /stats?compact HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_string_equal(f->resp.body, "{\"node\":\"node1\",\"uptime_s\":12}\n");

    run(f, "POST /logging?level=debug HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 200);
    assert_string_equal(f->resp.body, "level set to debug\n");
    assert_string_equal(f->resp.content_type, MGMT_CONTENT_TYPE_TEXT);
}

static void test_routes_not_found(void **state)
{
    struct fixture *f = *state;
    run(f, "GET /nope HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 404);
    assert_null(allow_of(f));
    assert_non_null(strstr(f->resp.body, "/nope"));
    /* The query is not part of the path. */
    run(f, "GET /stats/?x HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 404);
}

static void test_routes_method_not_allowed(void **state)
{
    struct fixture *f = *state;
    run(f, "GET /logging HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 405);
    assert_int_equal(f->calls, 0);
    assert_string_equal(allow_of(f), "POST");
    assert_non_null(strstr(f->resp.body, "usage: POST /logging  show or set log levels"));

    run(f, "DELETE /stats HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 405);
    assert_string_equal(allow_of(f), "GET, HEAD");

    run(f, "POST /config HTTP/1.1\r\nContent-Length: 0\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 405);
    assert_string_equal(allow_of(f), "GET, HEAD, PUT");

    run(f, "POST / HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 405);
    assert_string_equal(allow_of(f), "GET, HEAD");
}

static void test_routes_head(void **state)
{
    struct fixture *f = *state;
    run(f, "HEAD /stats HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 200);
    assert_true(f->resp.head_only);
    assert_true(f->resp.body_len > 0); /* kept for Content-Length; the server does not send it */
    run(f, "HEAD /logging HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 405);
}

static void test_routes_tcp_visibility(void **state)
{
    struct fixture *f = *state;
    run(f, "GET /healthz/ready HTTP/1.1\r\n\r\n", MGMT_LISTENER_TCP);
    assert_int_equal(f->resp.status, 200);
    assert_string_equal(f->resp.body, "ready\n");
    run(f, "POST /healthz/ready HTTP/1.1\r\n\r\n", MGMT_LISTENER_TCP);
    assert_int_equal(f->resp.status, 405);
    assert_string_equal(allow_of(f), "GET, HEAD");
    run(f, "GET /stats HTTP/1.1\r\n\r\n", MGMT_LISTENER_TCP);
    assert_int_equal(f->resp.status, 404);
    run(f, "GET /logging HTTP/1.1\r\n\r\n", MGMT_LISTENER_TCP);
    assert_int_equal(f->resp.status, 404); /* not 405: the route does not exist there */
    run(f, "GET / HTTP/1.1\r\n\r\n", MGMT_LISTENER_TCP);
    assert_int_equal(f->resp.status, 404);
    assert_int_equal(f->calls, 0);
}

static void test_routes_index_text(void **state)
{
    struct fixture *f = *state;
    run(f, "GET / HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 200);
    assert_string_equal(f->resp.content_type, MGMT_CONTENT_TYPE_TEXT);
    const char *b = f->resp.body;
    assert_non_null(strstr(b, "GET /stats"));
    assert_non_null(strstr(b, "  counters as JSON\n"));
    assert_non_null(strstr(b, "POST /logging"));
    assert_non_null(strstr(b, "PUT /config"));
    assert_null(strstr(b, "/secret"));
    /* One line per route, hidden excluded: 6 lines. */
    int lines = 0;
    for (const char *p = b; *p != '\0'; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 6);
    /* Help texts are aligned in one column. */
    const char *l1 = strstr(b, "counters as JSON");
    const char *l2 = strstr(b, "show or set log levels");
    const char *s1 = l1, *s2 = l2;
    while (s1 > b && s1[-1] != '\n')
        s1--;
    while (s2 > b && s2[-1] != '\n')
        s2--;
    assert_int_equal(l1 - s1, l2 - s2);
}

static void test_routes_index_json(void **state)
{
    struct fixture *f = *state;
    run(f, "GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 200);
    assert_string_equal(f->resp.content_type, "application/json");
    json_error_t jerr;
    json_t *j = json_loads(f->resp.body, 0, &jerr);
    assert_non_null(j);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 6);
    json_t *e = json_array_get(j, 2);
    assert_string_equal(json_string_value(json_object_get(e, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(e, "path")), "/healthz/ready");
    assert_string_equal(json_string_value(json_object_get(e, "help")), "readiness");
    assert_true(json_is_true(json_object_get(e, "tcp")));
    json_decref(j);
}

static void test_routes_handler_without_status(void **state)
{
    struct fixture *f = *state;
    run(f, "GET /broken HTTP/1.1\r\n\r\n", MGMT_LISTENER_UNIX);
    assert_int_equal(f->resp.status, 500);
    assert_non_null(strstr(f->resp.body, "set no status"));
}

static void test_routes_response_helpers(void **state)
{
    (void)state;
    struct mgmt_response r;
    char buf[64];
    mgmt_response_init(&r);
    assert_int_equal(mgmt_response_add_header(&r, "X-A", "1"), 0);
    assert_int_equal(mgmt_response_add_header(&r, "X-B", "two words"), 0);
    assert_int_equal(mgmt_response_add_header(&r, "X-C", "evil\r\nSet-Cookie: x"), -EINVAL);
    assert_int_equal(mgmt_response_add_header(&r, "X:D", "v"), -EINVAL);
    assert_int_equal(mgmt_response_add_header(&r, "", "v"), -EINVAL);
    assert_string_equal(mgmt_response_header(&r, "x-b", buf, sizeof(buf)), "two words");
    assert_string_equal(mgmt_response_header(&r, "X-A", buf, sizeof(buf)), "1");
    assert_null(mgmt_response_header(&r, "X-C", buf, sizeof(buf)));
    assert_int_equal(mgmt_response_set_type(&r, "application/openmetrics-text;charset=utf-8;version=1.0.0"), 0);
    assert_int_equal(mgmt_response_set_type(&r, "a\nb"), -EINVAL);
    assert_string_equal(r.content_type, "application/openmetrics-text;charset=utf-8;version=1.0.0");
    mgmt_response_text(&r, 201, "a=%d", 1);
    assert_int_equal(mgmt_response_append(&r, " b=%s", "x"), 0);
    assert_int_equal(mgmt_response_append_bytes(&r, "\0z", 2), 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, 9);
    assert_memory_equal(r.body, "a=1 b=x\0z", 9);
    assert_int_equal(mgmt_response_set_body(&r, 200, "text/csv", "x,y\n", 4), 0);
    assert_string_equal(r.body, "x,y\n");
    assert_string_equal(r.content_type, "text/csv");
    /* A big body grows. */
    for (int i = 0; i < 10000; i++)
        assert_int_equal(mgmt_response_append(&r, "%08d\n", i), 0);
    assert_int_equal(r.body_len, 4 + 90000);
    mgmt_response_json(&r, 200, NULL);
    assert_int_equal(r.status, 500);
    mgmt_response_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routes_add_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_dispatch_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_tcp_visibility, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_index_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_index_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes_handler_without_status, setup, teardown),
        cmocka_unit_test(test_routes_response_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
