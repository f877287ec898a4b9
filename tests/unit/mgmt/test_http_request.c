/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of mgmt/http_request.c. Every scenario is run with the input fed all at once, one byte at a time and in
 * 3-byte pieces; the outcome must not depend on how the bytes are split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mgmt/http_request.h"

static const size_t chunkings[] = {0, 1, 3}; /* 0: all at once */

/* Feed raw[0..len) in pieces of `chunk` bytes until the parser completes or fails. */
static enum mgmt_http_result feed_in_pieces(struct mgmt_http_request *p, const char *raw, size_t len, size_t chunk,
                                            size_t *consumed_total)
{
    size_t off = 0;
    enum mgmt_http_result r = MGMT_HTTP_NEED_MORE;
    while (off < len) {
        size_t n = chunk == 0 ? len - off : (len - off < chunk ? len - off : chunk);
        size_t used = 0;
        r = mgmt_http_request_feed(p, raw + off, n, &used);
        assert_true(used <= n);
        off += used;
        if (r != MGMT_HTTP_NEED_MORE)
            break;
        assert_int_equal(used, n);
    }
    *consumed_total = off;
    return r;
}

static struct mgmt_http_request *parser_new(const struct mgmt_http_limits *limits)
{
    const char *err = NULL;
    struct mgmt_http_request *p = mgmt_http_request_new(limits, &err);
    assert_non_null(p);
    return p;
}

/* Parse one complete request with every chunking; call check() on each result. */
static void parse_ok(const char *raw, size_t len, void (*check)(const struct mgmt_request *))
{
    for (size_t i = 0; i < sizeof(chunkings) / sizeof(chunkings[0]); i++) {
        struct mgmt_http_request *p = parser_new(NULL);
        size_t used;
        enum mgmt_http_result r = feed_in_pieces(p, raw, len, chunkings[i], &used);
        if (r != MGMT_HTTP_COMPLETE)
            fail_msg("chunk %zu: result %d status %d (%s)", chunkings[i], r, mgmt_http_request_error_status(p),
                     mgmt_http_request_error_reason(p));
        assert_int_equal(used, len);
        const struct mgmt_request *req = mgmt_http_request_get(p);
        assert_non_null(req);
        check(req);
        mgmt_http_request_free(p);
    }
}

/* Parse input that must fail with `status`, with every chunking, optionally with limits. */
static void parse_err_limits(const char *raw, size_t len, int status, const struct mgmt_http_limits *limits)
{
    for (size_t i = 0; i < sizeof(chunkings) / sizeof(chunkings[0]); i++) {
        struct mgmt_http_request *p = parser_new(limits);
        size_t used;
        enum mgmt_http_result r = feed_in_pieces(p, raw, len, chunkings[i], &used);
        if (r != MGMT_HTTP_ERROR || mgmt_http_request_error_status(p) != status)
            fail_msg("chunk %zu: expected error %d, got result %d status %d (%s)", chunkings[i], status, r,
                     mgmt_http_request_error_status(p), mgmt_http_request_error_reason(p));
        assert_null(mgmt_http_request_get(p));
        assert_true(strlen(mgmt_http_request_error_reason(p)) > 0);
        /* Errors are sticky. */
        size_t u2 = 99;
        assert_int_equal(mgmt_http_request_feed(p, "GET / HTTP/1.1\r\n\r\n", 18, &u2), MGMT_HTTP_ERROR);
        assert_int_equal(u2, 0);
        mgmt_http_request_free(p);
    }
}

static void parse_err(const char *raw, int status)
{
    parse_err_limits(raw, strlen(raw), status, NULL);
}

#define PARSE_OK(lit, fn) parse_ok(lit, sizeof(lit) - 1, fn)

/* ------------------------------------------------------------------------------------------------------------------ */

static void check_simple_get(const struct mgmt_request *req)
{
    assert_string_equal(req->method, "GET");
    assert_string_equal(req->target, "/stats");
    assert_string_equal(req->path, "/stats");
    assert_string_equal(req->query, "");
    assert_int_equal(req->n_params, 0);
    assert_string_equal(req->host, "localhost");
    assert_string_equal(req->accept, "application/json");
    assert_null(req->content_type);
    assert_int_equal(req->content_length, -1);
    assert_int_equal(req->body_len, 0);
    assert_non_null(req->body);
    assert_int_equal(req->http_major, 1);
    assert_int_equal(req->http_minor, 1);
    assert_true(req->keep_alive);
    assert_int_equal(req->n_headers, 3);
    assert_string_equal(mgmt_request_header_get(req, "user-agent"), "curl/7.88");
    assert_null(mgmt_request_header_get(req, "X-None"));
    assert_true(mgmt_request_accepts(req, "application/json"));
    assert_false(mgmt_request_accepts(req, "text/plain"));
}

static void test_http_request_get(void **state)
{
    (void)state;
    PARSE_OK("GET /stats HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88\r\nAccept: application/json\r\n\r\n",
             check_simple_get);
}

static void check_post_body(const struct mgmt_request *req)
{
    assert_string_equal(req->method, "POST");
    assert_string_equal(req->path, "/config");
    assert_string_equal(req->content_type, "application/json");
    assert_int_equal(req->content_length, 15);
    assert_int_equal(req->body_len, 15);
    assert_memory_equal(req->body, "{\"a\":1,\"b\":\"x\"}", 15);
    assert_int_equal(req->body[15], '\0');
}

static void test_http_request_post_body(void **state)
{
    (void)state;
    PARSE_OK("POST /config HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
             "{\"a\":1,\"b\":\"x\"}",
             check_post_body);
}

static void check_binary_body(const struct mgmt_request *req)
{
    assert_int_equal(req->body_len, 5);
    assert_memory_equal(req->body, "a\0b\0c", 5);
}

static void test_http_request_body_with_nul(void **state)
{
    (void)state;
    PARSE_OK("PUT /blob HTTP/1.1\r\nContent-Length: 5\r\n\r\na\0b\0c", check_binary_body);
}

static void check_chunked(const struct mgmt_request *req)
{
    assert_int_equal(req->content_length, -1);
    assert_int_equal(req->body_len, 11);
    assert_memory_equal(req->body, "hello world", 11);
}

static void test_http_request_chunked(void **state)
{
    (void)state;
    PARSE_OK("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
             check_chunked);
}

static void check_query(const struct mgmt_request *req)
{
    assert_string_equal(req->path, "/logging");
    assert_string_equal(req->query, "level=mod%3Adebug,x:trace&reset&a=b+c%20d&empty=&&k%26=v%3D");
    assert_string_equal(mgmt_request_query_get(req, "level"), "mod:debug,x:trace");
    assert_string_equal(mgmt_request_query_get(req, "reset"), "");
    assert_string_equal(mgmt_request_query_get(req, "a"), "b c d");
    assert_string_equal(mgmt_request_query_get(req, "empty"), "");
    assert_string_equal(mgmt_request_query_get(req, "k&"), "v=");
    assert_null(mgmt_request_query_get(req, "missing"));
    assert_int_equal(req->n_params, 5);
}

static void test_http_request_query(void **state)
{
    (void)state;
    PARSE_OK("POST /logging?level=mod%3Adebug,x:trace&reset&a=b+c%20d&empty=&&k%26=v%3D HTTP/1.1\r\n\r\n",
             check_query);
}

static void check_decoded_path(const struct mgmt_request *req)
{
    assert_string_equal(req->target, "/a%20b/%41%2fc+d?x=1");
    assert_string_equal(req->path, "/a b/A/c+d");
    assert_string_equal(req->query, "x=1");
}

static void test_http_request_percent_decoding(void **state)
{
    (void)state;
    PARSE_OK("GET /a%20b/%41%2fc+d?x=1#frag HTTP/1.1\r\n\r\n", check_decoded_path);
    parse_err("GET /a%zz HTTP/1.1\r\n\r\n", 400);
    parse_err("GET /a%4 HTTP/1.1\r\n\r\n", 400);
    parse_err("GET /a%00b HTTP/1.1\r\n\r\n", 400);
    parse_err("GET /a?x=%0 HTTP/1.1\r\n\r\n", 400);
    parse_err("GET /a?x=%00 HTTP/1.1\r\n\r\n", 400);
}

static void check_absolute_form(const struct mgmt_request *req)
{
    assert_string_equal(req->path, "/stats");
    assert_string_equal(mgmt_request_query_get(req, "a"), "1");
}

static void check_no_host_10(const struct mgmt_request *req)
{
    assert_null(req->host);
    assert_int_equal(req->http_minor, 0);
    assert_false(req->keep_alive);
}

static void check_10_keep_alive(const struct mgmt_request *req)
{
    assert_true(req->keep_alive);
    assert_string_equal(req->connection, "keep-alive");
}

static void check_close(const struct mgmt_request *req)
{
    assert_false(req->keep_alive);
    assert_string_equal(req->connection, "close");
}

static void check_no_host_11(const struct mgmt_request *req)
{
    assert_null(req->host);
    assert_true(req->keep_alive);
    assert_string_equal(req->method, "DELETE");
}

static void check_head(const struct mgmt_request *req)
{
    assert_string_equal(req->method, "HEAD");
    assert_string_equal(req->path, "/");
}

static void test_http_request_forms(void **state)
{
    (void)state;
    PARSE_OK("GET http://localhost/stats?a=1 HTTP/1.1\r\n\r\n", check_absolute_form);
    PARSE_OK("GET /x HTTP/1.0\r\n\r\n", check_no_host_10);
    PARSE_OK("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", check_10_keep_alive);
    PARSE_OK("GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", check_close);
    PARSE_OK("DELETE /x HTTP/1.1\r\n\r\n", check_no_host_11);
    PARSE_OK("\r\nHEAD / HTTP/1.1\r\n\r\n", check_head);
}

static void test_http_request_pipelining(void **state)
{
    (void)state;
    static const char two[] = "GET /first?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                              "POST /second HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    const size_t first_len = strlen("GET /first?a=1 HTTP/1.1\r\nHost: x\r\n\r\n");

    for (size_t i = 0; i < sizeof(chunkings) / sizeof(chunkings[0]); i++) {
        struct mgmt_http_request *p = parser_new(NULL);
        size_t used;
        assert_int_equal(feed_in_pieces(p, two, sizeof(two) - 1, chunkings[i], &used), MGMT_HTTP_COMPLETE);
        assert_int_equal(used, first_len);
        const struct mgmt_request *req = mgmt_http_request_get(p);
        assert_string_equal(req->path, "/first");
        assert_string_equal(mgmt_request_query_get(req, "a"), "1");
        assert_true(req->keep_alive);

        /* Without a reset, the parser holds on to the request. */
        size_t u2 = 99;
        assert_int_equal(mgmt_http_request_feed(p, two + used, 1, &u2), MGMT_HTTP_COMPLETE);
        assert_int_equal(u2, 0);

        mgmt_http_request_reset(p);
        assert_null(mgmt_http_request_get(p));
        size_t used2;
        assert_int_equal(feed_in_pieces(p, two + used, sizeof(two) - 1 - used, chunkings[i], &used2),
                         MGMT_HTTP_COMPLETE);
        assert_int_equal(used + used2, sizeof(two) - 1);
        req = mgmt_http_request_get(p);
        assert_string_equal(req->method, "POST");
        assert_string_equal(req->path, "/second");
        assert_int_equal(req->n_params, 0);
        assert_int_equal(req->body_len, 3);
        assert_memory_equal(req->body, "abc", 3);
        assert_false(req->keep_alive);
        mgmt_http_request_free(p);
    }
}

static void test_http_request_reuse(void **state)
{
    (void)state;
    struct mgmt_http_request *p = parser_new(NULL);
    for (int i = 0; i < 200; i++) {
        char raw[256];
        int n = snprintf(raw, sizeof(raw), "POST /r%d?i=%d HTTP/1.1\r\nContent-Length: %d\r\n\r\n%0*d", i, i,
                         i % 7 + 1, i % 7 + 1, i);
        size_t used;
        assert_int_equal(feed_in_pieces(p, raw, (size_t)n, (size_t)(i % 5), &used), MGMT_HTTP_COMPLETE);
        const struct mgmt_request *req = mgmt_http_request_get(p);
        char want[32];
        snprintf(want, sizeof(want), "/r%d", i);
        assert_string_equal(req->path, want);
        assert_int_equal(req->body_len, (size_t)(i % 7 + 1));
        mgmt_http_request_reset(p);
    }
    mgmt_http_request_free(p);
}

static void test_http_request_need_more(void **state)
{
    (void)state;
    struct mgmt_http_request *p = parser_new(NULL);
    size_t used;
    assert_false(mgmt_http_request_is_partial(p));
    assert_int_equal(mgmt_http_request_feed(p, "", 0, &used), MGMT_HTTP_NEED_MORE);
    assert_int_equal(used, 0);
    assert_int_equal(mgmt_http_request_feed(p, "GET /x HTTP/1.1\r\nHost: a\r\n", 26, &used), MGMT_HTTP_NEED_MORE);
    assert_int_equal(used, 26);
    assert_true(mgmt_http_request_is_partial(p));
    assert_null(mgmt_http_request_get(p));
    assert_int_equal(mgmt_http_request_error_status(p), 0);
    assert_int_equal(mgmt_http_request_feed(p, "\r\n", 2, &used), MGMT_HTTP_COMPLETE);
    assert_false(mgmt_http_request_is_partial(p));
    mgmt_http_request_free(p);
}

static void test_http_request_malformed(void **state)
{
    (void)state;
    parse_err("GARBAGE\r\n\r\n", 400);
    parse_err("GET\r\n\r\n", 400);
    parse_err("GET /x\r\n\r\n", 400); /* HTTP/0.9 simple request */
    parse_err("GET /x HTTX/1.1\r\n\r\n", 400);
    parse_err("GET /x ICE/1.1\r\n\r\n", 400);
    parse_err("GET /x HTTP/1.1x\r\n\r\n", 400);
    parse_err("GET /x HTTP/1.x\r\n\r\n", 400);
    parse_err("GET /x HTTP/2.0\r\n\r\n", 505);
    parse_err("GET /x HTTP/0.9\r\n\r\n", 505);
    parse_err("get /x HTTP/1.1\r\n\r\n", 400);
    parse_err("GET x HTTP/1.1\r\n\r\n", 400);
    parse_err("GET /x HTTP/1.1\r\nBad Header\r\n\r\n", 400);
    parse_err("GET /x HTTP/1.1\r\nBad Header: x\r\n\r\n", 400);
    parse_err("POST /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400);
    parse_err("POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
    parse_err("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    parse_err("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
}

static void test_http_request_nul_bytes(void **state)
{
    (void)state;
    static const char in_target[] = "GET /a\0b HTTP/1.1\r\n\r\n";
    static const char in_name[] = "GET / HTTP/1.1\r\nX-A\0: b\r\n\r\n";
    static const char in_value[] = "GET / HTTP/1.1\r\nX-A: b\0c\r\n\r\n";
    static const char in_method[] = "G\0T / HTTP/1.1\r\n\r\n";
    parse_err_limits(in_target, sizeof(in_target) - 1, 400, NULL);
    parse_err_limits(in_name, sizeof(in_name) - 1, 400, NULL);
    parse_err_limits(in_value, sizeof(in_value) - 1, 400, NULL);
    parse_err_limits(in_method, sizeof(in_method) - 1, 400, NULL);
}

/* Build "GET <target> HTTP/1.1\r\n" + headers so that the whole head is exactly `total` bytes. */
static char *make_head(size_t total, size_t *len)
{
    static const char start[] = "GET / HTTP/1.1\r\nX-Pad: ";
    static const char end[] = "\r\n\r\n";
    char *raw = malloc(total + 1);
    assert_non_null(raw);
    assert_true(total > sizeof(start) + sizeof(end));
    size_t pad = total - (sizeof(start) - 1) - (sizeof(end) - 1);
    memcpy(raw, start, sizeof(start) - 1);
    memset(raw + sizeof(start) - 1, 'a', pad);
    memcpy(raw + sizeof(start) - 1 + pad, end, sizeof(end) - 1);
    raw[total] = '\0';
    *len = total;
    return raw;
}

static void check_big_head(const struct mgmt_request *req)
{
    assert_int_equal(strlen(mgmt_request_header_get(req, "X-Pad")),
                     MGMT_HTTP_MAX_HEAD_BYTES - strlen("GET / HTTP/1.1\r\nX-Pad: \r\n\r\n"));
}

static void test_http_request_head_limit(void **state)
{
    (void)state;
    size_t len;
    char *raw = make_head(MGMT_HTTP_MAX_HEAD_BYTES, &len);
    parse_ok(raw, len, check_big_head);
    free(raw);

    raw = make_head(MGMT_HTTP_MAX_HEAD_BYTES + 1, &len);
    parse_err_limits(raw, len, 431, NULL);
    free(raw);

    raw = make_head(64 * 1024, &len);
    parse_err_limits(raw, len, 431, NULL);
    free(raw);

    /* A huge target is a 414. */
    size_t tlen = MGMT_HTTP_MAX_HEAD_BYTES + 100;
    char *t = malloc(tlen + 32);
    assert_non_null(t);
    memcpy(t, "GET /", 5);
    memset(t + 5, 'b', tlen);
    memcpy(t + 5 + tlen, " HTTP/1.1\r\n\r\n", 14);
    parse_err_limits(t, strlen(t), 414, NULL);
    free(t);

    /* Whitespace that never reaches a callback still counts. */
    size_t wlen = MGMT_HTTP_MAX_HEAD_BYTES + 10;
    char *w = malloc(wlen + 64);
    assert_non_null(w);
    int n = sprintf(w, "GET / HTTP/1.1\r\nX-A:");
    memset(w + n, ' ', wlen);
    memcpy(w + n + wlen, "b\r\n\r\n", 6);
    parse_err_limits(w, strlen(w), 431, NULL);
    free(w);
}

static void test_http_request_too_many_headers(void **state)
{
    (void)state;
    char raw[4096];
    size_t off = (size_t)sprintf(raw, "GET / HTTP/1.1\r\n");
    for (unsigned i = 0; i < MGMT_HTTP_MAX_HEADERS; i++)
        off += (size_t)sprintf(raw + off, "X-%u: v\r\n", i);
    strcpy(raw + off, "\r\n");
    /* Exactly the maximum is fine. */
    struct mgmt_http_request *p = parser_new(NULL);
    size_t used;
    assert_int_equal(feed_in_pieces(p, raw, strlen(raw), 0, &used), MGMT_HTTP_COMPLETE);
    assert_int_equal(mgmt_http_request_get(p)->n_headers, MGMT_HTTP_MAX_HEADERS);
    mgmt_http_request_free(p);
    /* One more is a 431. */
    sprintf(raw + off, "X-last: v\r\n\r\n");
    parse_err(raw, 431);
}

static void test_http_request_body_limit(void **state)
{
    (void)state;
    char raw[256];
    snprintf(raw, sizeof(raw), "POST /x HTTP/1.1\r\nContent-Length: %u\r\n\r\n", MGMT_HTTP_MAX_BODY_BYTES + 1);
    parse_err(raw, 413);
    parse_err("POST /x HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n", 413);

    /* Chunked bodies are counted as they arrive. */
    struct mgmt_http_limits small = {.max_body_bytes = 8};
    static const char chunked[] = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
    parse_err_limits(chunked, sizeof(chunked) - 1, 413, &small);

    /* The largest allowed body passes. */
    size_t blen = MGMT_HTTP_MAX_BODY_BYTES;
    char *big = malloc(blen + 128);
    assert_non_null(big);
    int n = sprintf(big, "POST /x HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", blen);
    memset(big + n, 'z', blen);
    struct mgmt_http_request *p = parser_new(NULL);
    size_t used;
    assert_int_equal(feed_in_pieces(p, big, (size_t)n + blen, 0, &used), MGMT_HTTP_COMPLETE);
    assert_int_equal(mgmt_http_request_get(p)->body_len, blen);
    mgmt_http_request_free(p);
    free(big);
}

static void test_http_request_accepts(void **state)
{
    (void)state;
    struct mgmt_http_request *p = parser_new(NULL);
    static const char raw[] = "GET / HTTP/1.1\r\nAccept: text/html, Application/JSON;q=0.9,*/*\r\n\r\n";
    size_t used;
    assert_int_equal(feed_in_pieces(p, raw, sizeof(raw) - 1, 0, &used), MGMT_HTTP_COMPLETE);
    const struct mgmt_request *req = mgmt_http_request_get(p);
    assert_true(mgmt_request_accepts(req, "application/json"));
    assert_true(mgmt_request_accepts(req, "text/html"));
    assert_true(mgmt_request_accepts(req, "*/*"));
    assert_false(mgmt_request_accepts(req, "application/jso"));
    assert_false(mgmt_request_accepts(req, "text/plain"));
    mgmt_http_request_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_request_get),
        cmocka_unit_test(test_http_request_post_body),
        cmocka_unit_test(test_http_request_body_with_nul),
        cmocka_unit_test(test_http_request_chunked),
        cmocka_unit_test(test_http_request_query),
        cmocka_unit_test(test_http_request_percent_decoding),
        cmocka_unit_test(test_http_request_forms),
        cmocka_unit_test(test_http_request_pipelining),
        cmocka_unit_test(test_http_request_reuse),
        cmocka_unit_test(test_http_request_need_more),
        cmocka_unit_test(test_http_request_malformed),
        cmocka_unit_test(test_http_request_nul_bytes),
        cmocka_unit_test(test_http_request_head_limit),
        cmocka_unit_test(test_http_request_too_many_headers),
        cmocka_unit_test(test_http_request_body_limit),
        cmocka_unit_test(test_http_request_accepts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
