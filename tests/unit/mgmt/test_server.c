/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of mgmt/server.c: a real server on a Unix socket in a temp dir (no root), polled by a thread of its own,
 * and plain-socket clients.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mgmt/server.h"

#define BIG_BODY_BYTES (4u * 1024u * 1024u)

struct fixture {
    char dir[64];
    char path[128];
    struct mgmt_routes *routes;
    struct mgmt_server *srv;
    pthread_t thread;
    atomic_bool stop;
    char *big;
};

/* ------------------------------------------------------------------------------------------------------------------
 * Handlers
 */

static void h_hello(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    (void)ctx;
    const char *name = mgmt_request_query_get(req, "name");
    mgmt_response_text(resp, 200, "hello %s\n", name != NULL ? name : "world");
}

static void h_echo(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    (void)ctx;
    mgmt_response_set_body(resp, 200, "application/octet-stream", req->body, req->body_len);
}

static void h_big(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    struct fixture *f = ctx;
    (void)req;
    mgmt_response_set_body(resp, 200, "text/plain", f->big, BIG_BODY_BYTES);
}

static void h_ready(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    (void)ctx;
    (void)req;
    mgmt_response_text(resp, 200, "ready\n");
}

static void h_quit(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp)
{
    (void)ctx;
    (void)req;
    mgmt_response_text(resp, 200, "shutdown now\n");
    resp->close = true;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Server fixture
 */

static void *server_thread(void *arg)
{
    struct fixture *f = arg;
    while (!atomic_load(&f->stop))
        mgmt_server_poll(f->srv, 10);
    return NULL;
}

static struct mgmt_server *start_server(struct fixture *f, const struct mgmt_server_config *extra)
{
    struct mgmt_server_config cfg = {.unix_path = f->path, .routes = f->routes};
    if (extra != NULL) {
        cfg = *extra;
        cfg.routes = f->routes;
    }
    const char *err = NULL;
    f->srv = mgmt_server_new(&cfg, &err);
    if (f->srv == NULL)
        fail_msg("mgmt_server_new: %s", err);
    atomic_store(&f->stop, false);
    assert_int_equal(pthread_create(&f->thread, NULL, server_thread, f), 0);
    return f->srv;
}

static void stop_server(struct fixture *f)
{
    if (f->srv == NULL)
        return;
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    mgmt_server_free(f->srv);
    f->srv = NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/zwire_mgmt_test_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/run/zwire/mgmt.sock", f->dir);
    const char *err = NULL;
    f->routes = mgmt_routes_new(&err);
    assert_non_null(f->routes);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/hello", h_hello, f, "say hello", 0), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "POST", "/echo", h_echo, f, "echo the body", 0), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/big", h_big, f, "4 MiB", 0), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "GET", "/healthz/ready", h_ready, f, "ready", MGMT_ROUTE_TCP), 0);
    assert_int_equal(mgmt_routes_add(f->routes, "POST", "/quitquitquit", h_quit, f, "quit", 0), 0);
    f->big = malloc(BIG_BODY_BYTES);
    assert_non_null(f->big);
    for (size_t i = 0; i < BIG_BODY_BYTES; i++)
        f->big[i] = (char)('a' + i % 26);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    stop_server(f);
    mgmt_routes_free(f->routes);
    free(f->big);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Client
 */

struct conn {
    int fd;
    char buf[65536];
    size_t len;
};

struct reply {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
};

static void conn_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static struct conn *conn_open(const char *path)
{
    struct conn *c = calloc(1, sizeof(*c));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_non_null(c);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        fail_msg("connect %s: %s", path, strerror(errno));
    conn_timeouts(c->fd);
    return c;
}

static struct conn *conn_open_tcp(uint16_t port)
{
    struct conn *c = calloc(1, sizeof(*c));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    assert_non_null(c);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        fail_msg("connect tcp %u: %s", port, strerror(errno));
    conn_timeouts(c->fd);
    return c;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    free(c);
}

static void conn_send(struct conn *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail_msg("send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static void conn_sends(struct conn *c, const char *s)
{
    conn_send(c, s, strlen(s));
}

/* @return bytes read into c->buf, 0 on EOF, -1 on error/timeout. */
static ssize_t conn_fill(struct conn *c)
{
    if (c->len == sizeof(c->buf))
        return -1;
    ssize_t n;
    do {
        n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        c->len += (size_t)n;
    return n;
}

static void conn_consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static const char *reply_header(const struct reply *r, const char *name)
{
    static char val[256];
    size_t nlen = strlen(name);
    for (const char *s = strstr(r->head, "\r\n"); s != NULL && s[2] != '\0'; s = strstr(s + 2, "\r\n")) {
        const char *line = s + 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            snprintf(val, sizeof(val), "%.*s", (int)(e != NULL ? e - v : (long)strlen(v)), v);
            return val;
        }
    }
    return NULL;
}

/* Read one response. @param head_only  the request was HEAD. @return 0, or -1 on EOF/error before a full reply. */
static int conn_read_reply(struct conn *c, struct reply *r, bool head_only)
{
    memset(r, 0, sizeof(*r));
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        if (conn_fill(c) <= 0)
            return -1;
    size_t hlen = (size_t)(end - c->buf) + 4;
    assert_true(hlen < sizeof(r->head));
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    conn_consume(c, hlen);
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    const char *cl = reply_header(r, "Content-Length");
    assert_non_null(cl);
    size_t want = head_only ? 0 : strtoul(cl, NULL, 10);
    r->body = malloc(want + 1);
    assert_non_null(r->body);
    while (r->body_len < want) {
        if (c->len == 0 && conn_fill(c) <= 0) {
            free(r->body);
            r->body = NULL;
            return -1;
        }
        size_t n = c->len < want - r->body_len ? c->len : want - r->body_len;
        memcpy(r->body + r->body_len, c->buf, n);
        r->body_len += n;
        conn_consume(c, n);
    }
    r->body[r->body_len] = '\0';
    return 0;
}

static void reply_fini(struct reply *r)
{
    free(r->body);
    r->body = NULL;
}

/* @return true when the server closed the connection (EOF) with nothing more to read. */
static bool conn_is_closed(struct conn *c)
{
    if (c->len > 0)
        return false;
    return conn_fill(c) == 0;
}

/* One request, one reply on a new connection. */
static int roundtrip(const char *path, const char *req, struct reply *r)
{
    struct conn *c = conn_open(path);
    conn_sends(c, req);
    int rc = conn_read_reply(c, r, strncmp(req, "HEAD ", 5) == 0);
    conn_close(c);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------------------------------------------------
 * Tests
 */

static void test_server_get_keep_alive(void **state)
{
    struct fixture *f = *state;
    start_server(f, NULL);
    struct conn *c = conn_open(f->path);
    struct reply r;
    for (int i = 0; i < 5; i++) {
        conn_sends(c, "GET /hello?name=zwire HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_int_equal(conn_read_reply(c, &r, false), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello zwire\n");
        assert_string_equal(reply_header(&r, "Content-Type"), "text/plain; charset=utf-8");
        assert_null(reply_header(&r, "Connection"));
        reply_fini(&r);
    }
    /* Connection: close is honoured. */
    conn_sends(c, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_string_equal(r.body, "hello world\n");
    assert_string_equal(reply_header(&r, "Connection"), "close");
    reply_fini(&r);
    assert_true(conn_is_closed(c));
    conn_close(c);

    /* HTTP/1.0 closes unless asked to keep alive. */
    assert_int_equal(roundtrip(f->path, "GET /hello HTTP/1.0\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(reply_header(&r, "Connection"), "close");
    reply_fini(&r);

    /* HEAD sends no body but the GET length. */
    assert_int_equal(roundtrip(f->path, "HEAD /hello HTTP/1.1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(reply_header(&r, "Content-Length"), "12");
    reply_fini(&r);
}

static void test_server_socket_file(void **state)
{
    struct fixture *f = *state;
    start_server(f, NULL);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0660);
    char parent[192];
    snprintf(parent, sizeof(parent), "%s/run/zwire", f->dir);
    assert_int_equal(stat(parent, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);

    /* A second server on the same path refuses to start while the first listens. */
    struct mgmt_server_config cfg = {.unix_path = f->path, .routes = f->routes};
    const char *err = NULL;
    assert_null(mgmt_server_new(&cfg, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "another process is listening"));
    assert_non_null(strstr(err, f->path));
    assert_int_equal(stat(f->path, &st), 0); /* and did not remove it */

    stop_server(f);
    assert_int_equal(stat(f->path, &st), -1); /* free() unlinked it */
    assert_int_equal(errno, ENOENT);

    /* A stale socket file (nobody listening) is replaced. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(f->path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    assert_int_equal(stat(f->path, &st), 0);
    start_server(f, NULL);
    struct reply r;
    assert_int_equal(roundtrip(f->path, "GET /hello HTTP/1.1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    reply_fini(&r);
    stop_server(f);

    /* A regular file is never removed. */
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_null(mgmt_server_new(&cfg, &err));
    assert_non_null(strstr(err, "not a socket"));
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    unlink(f->path);

    /* Bad configurations. */
    struct mgmt_server_config none = {.routes = f->routes};
    assert_null(mgmt_server_new(&none, &err));
    struct mgmt_server_config badtcp = {.tcp_listen = "nonsense", .routes = f->routes};
    assert_null(mgmt_server_new(&badtcp, &err));
    assert_non_null(strstr(err, "nonsense"));
}

static void test_server_not_found_and_method(void **state)
{
    struct fixture *f = *state;
    start_server(f, NULL);
    struct reply r;
    assert_int_equal(roundtrip(f->path, "GET /nope HTTP/1.1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 404);
    reply_fini(&r);

    struct conn *c = conn_open(f->path);
    conn_sends(c, "GET /quitquitquit HTTP/1.1\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(reply_header(&r, "Allow"), "POST");
    reply_fini(&r);
    /* A 405 keeps the connection usable. */
    conn_sends(c, "GET / HTTP/1.1\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "POST /quitquitquit"));
    reply_fini(&r);
    /* A handler may ask to close. */
    conn_sends(c, "POST /quitquitquit HTTP/1.1\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "shutdown now\n");
    assert_string_equal(reply_header(&r, "Connection"), "close");
    reply_fini(&r);
    assert_true(conn_is_closed(c));
    conn_close(c);
}

static void test_server_bad_requests(void **state)
{
    struct fixture *f = *state;
    start_server(f, NULL);
    struct reply r;

    /* Garbage: 400, then closed. */
    struct conn *c = conn_open(f->path);
    conn_sends(c, "HELLO\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 400);
    assert_string_equal(reply_header(&r, "Connection"), "close");
    reply_fini(&r);
    assert_true(conn_is_closed(c));
    conn_close(c);

    /* Headers over 8 KiB: 431. */
    size_t pad = 16 * 1024;
    char *big = malloc(pad + 128);
    assert_non_null(big);
    int n = sprintf(big, "GET /hello HTTP/1.1\r\nX-Pad: ");
    memset(big + n, 'p', pad);
    strcpy(big + n + pad, "\r\n\r\n");
    c = conn_open(f->path);
    conn_sends(c, big);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 431);
    reply_fini(&r);
    assert_true(conn_is_closed(c));
    conn_close(c);

    /* A huge target: 414. */
    n = sprintf(big, "GET /");
    memset(big + n, 'u', pad);
    strcpy(big + n + pad, " HTTP/1.1\r\n\r\n");
    assert_int_equal(roundtrip(f->path, big, &r), 0);
    assert_int_equal(r.status, 414);
    reply_fini(&r);
    free(big);

    /* A body over 1 MiB: 413 without reading the body, and the client still sees the reply while sending. */
    c = conn_open(f->path);
    conn_sends(c, "POST /echo HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n");
    char chunk[4096];
    memset(chunk, 'b', sizeof(chunk));
    for (int i = 0; i < 16; i++)
        conn_send(c, chunk, sizeof(chunk));
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 413);
    reply_fini(&r);
    conn_close(c);

    /* Unsupported transfer coding: 501. A NUL byte: 400. */
    assert_int_equal(roundtrip(f->path, "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 501);
    reply_fini(&r);
    c = conn_open(f->path);
    conn_send(c, "GET /hel\0lo HTTP/1.1\r\n\r\n", 25);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 400);
    reply_fini(&r);
    conn_close(c);

    /* The server is still fine. */
    assert_int_equal(roundtrip(f->path, "GET /hello HTTP/1.1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    reply_fini(&r);
}

static void test_server_post_and_pipelining(void **state)
{
    struct fixture *f = *state;
    start_server(f, NULL);
    struct reply r;
    struct conn *c = conn_open(f->path);
    /* Three requests in one write, answered in order. */
    conn_sends(c, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nfirst"
                  "GET /hello?name=two HTTP/1.1\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthird\r\n0\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "first");
    reply_fini(&r);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_string_equal(r.body, "hello two\n");
    reply_fini(&r);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_string_equal(r.body, "third");
    reply_fini(&r);

    /* A 1 MiB body in pieces. */
    size_t blen = 1024 * 1024;
    char *body = malloc(blen);
    assert_non_null(body);
    for (size_t i = 0; i < blen; i++)
        body[i] = (char)(i * 7);
    char head[128];
    snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", blen);
    conn_sends(c, head);
    conn_send(c, body, blen);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, blen);
    assert_memory_equal(r.body, body, blen);
    reply_fini(&r);
    free(body);
    conn_close(c);
}

static void test_server_slow_client(void **state)
{
    struct fixture *f = *state;
    start_server(f, NULL);
    struct reply r;
    struct conn *c = conn_open(f->path);
    const char *req = "GET /hello?name=slow HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (const char *p = req; *p != '\0'; p++) {
        conn_send(c, p, 1);
        sleep_ms(2);
    }
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello slow\n");
    reply_fini(&r);

    /* A large response read slowly exercises partial writes. */
    conn_sends(c, "GET /big HTTP/1.1\r\n\r\n");
    sleep_ms(100);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, BIG_BODY_BYTES);
    assert_memory_equal(r.body, f->big, BIG_BODY_BYTES);
    reply_fini(&r);

    /* Meanwhile, and afterwards, other clients are served. */
    assert_int_equal(roundtrip(f->path, "GET /hello HTTP/1.1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    reply_fini(&r);
    conn_close(c);

    /* A client that vanishes in the middle of a big response does no harm. */
    c = conn_open(f->path);
    conn_sends(c, "GET /big HTTP/1.1\r\n\r\n");
    char buf[1000];
    assert_true(recv(c->fd, buf, sizeof(buf), 0) > 0);
    conn_close(c);
    c = conn_open(f->path);
    conn_sends(c, "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly part");
    conn_close(c);
    assert_int_equal(roundtrip(f->path, "GET /hello HTTP/1.1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    reply_fini(&r);
}

static void test_server_timeouts(void **state)
{
    struct fixture *f = *state;
    struct mgmt_server_config cfg = {.unix_path = f->path, .idle_timeout_ms = 200, .request_timeout_ms = 400};
    start_server(f, &cfg);
    struct reply r;

    /* Idle: closed without a reply. */
    struct conn *c = conn_open(f->path);
    sleep_ms(500);
    assert_true(conn_is_closed(c));
    conn_close(c);

    /* Half a request, then silence: 408. */
    c = conn_open(f->path);
    conn_sends(c, "GET /hello HTTP/1.1\r\nHost:");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 408);
    reply_fini(&r);
    assert_true(conn_is_closed(c));
    conn_close(c);

    /* Trickling a byte every 50 ms keeps the connection active, but not past the request timeout. */
    c = conn_open(f->path);
    conn_sends(c, "GET /hello HTTP/1.1\r\n");
    uint64_t sent = 0;
    for (int i = 0; i < 40; i++) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) == 1 || send(c->fd, "X", 1, MSG_NOSIGNAL) != 1)
            break; /* the server answered (or closed) */
        sent++;
        sleep_ms(50);
    }
    assert_true(sent >= 5); /* 200 ms idle timeout never hit: each byte reset it */
    assert_true(sent < 40);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 408);
    reply_fini(&r);
    conn_close(c);
}

static void test_server_many_clients(void **state)
{
    struct fixture *f = *state;
    start_server(f, NULL);
    struct conn *c[MGMT_SERVER_MAX_CLIENTS];
    struct reply r;
    for (unsigned i = 0; i < MGMT_SERVER_MAX_CLIENTS; i++)
        c[i] = conn_open(f->path);
    /* Every one of them is served (and therefore accepted). */
    for (unsigned i = 0; i < MGMT_SERVER_MAX_CLIENTS; i++)
        conn_sends(c[i], "GET /hello HTTP/1.1\r\n\r\n");
    for (unsigned i = 0; i < MGMT_SERVER_MAX_CLIENTS; i++) {
        assert_int_equal(conn_read_reply(c[i], &r, false), 0);
        assert_int_equal(r.status, 200);
        reply_fini(&r);
    }
    /* One more gets a 503 and is closed. */
    for (int k = 0; k < 3; k++) {
        struct conn *extra = conn_open(f->path);
        assert_int_equal(conn_read_reply(extra, &r, false), 0);
        assert_int_equal(r.status, 503);
        reply_fini(&r);
        assert_true(conn_is_closed(extra));
        conn_close(extra);
    }
    /* After one leaves, a newcomer is served again. */
    conn_close(c[0]);
    int status = 0;
    for (int tries = 0; tries < 100 && status != 200; tries++) {
        assert_int_equal(roundtrip(f->path, "GET /hello HTTP/1.1\r\n\r\n", &r), 0);
        status = r.status;
        reply_fini(&r);
        if (status != 200)
            sleep_ms(10);
    }
    assert_int_equal(status, 200);
    for (unsigned i = 1; i < MGMT_SERVER_MAX_CLIENTS; i++)
        conn_close(c[i]);
}

static void test_server_tcp(void **state)
{
    struct fixture *f = *state;
    struct mgmt_server_config cfg = {.unix_path = f->path, .tcp_listen = "127.0.0.1:0"};
    start_server(f, &cfg);
    uint16_t port = mgmt_server_tcp_port(f->srv);
    assert_true(port != 0);
    struct reply r;
    struct conn *c = conn_open_tcp(port);
    conn_sends(c, "GET /healthz/ready HTTP/1.1\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready\n");
    reply_fini(&r);
    conn_sends(c, "GET /hello HTTP/1.1\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 404);
    reply_fini(&r);
    conn_sends(c, "POST /quitquitquit HTTP/1.1\r\n\r\n");
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 404);
    reply_fini(&r);
    conn_close(c);
    /* The Unix socket serves everything. */
    assert_int_equal(roundtrip(f->path, "GET /hello HTTP/1.1\r\n\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    reply_fini(&r);
}

static void test_server_external_poll(void **state)
{
    struct fixture *f = *state;
    struct mgmt_server_config cfg = {.unix_path = f->path, .routes = f->routes};
    const char *err = NULL;
    struct mgmt_server *srv = mgmt_server_new(&cfg, &err);
    assert_non_null(srv);
    assert_int_equal(mgmt_server_timeout_ms(srv), -1);
    struct conn *c = conn_open(f->path);
    conn_sends(c, "GET /hello HTTP/1.1\r\n\r\n");
    struct pollfd fds[MGMT_SERVER_MAX_CLIENTS + 2];
    assert_true(mgmt_server_max_fds(srv) <= MGMT_SERVER_MAX_CLIENTS + 2);
    struct reply r;
    bool got = false;
    for (int i = 0; i < 50 && !got; i++) {
        int n = mgmt_server_fds(srv, fds, mgmt_server_max_fds(srv));
        assert_true(n >= 1);
        assert_true(poll(fds, (nfds_t)n, 100) >= 0);
        mgmt_server_process(srv, fds, (unsigned)n);
        struct pollfd cp = {.fd = c->fd, .events = POLLIN};
        if (poll(&cp, 1, 0) == 1)
            got = true;
    }
    assert_true(got);
    assert_int_equal(mgmt_server_clients(srv), 1);
    assert_true(mgmt_server_timeout_ms(srv) > 0);
    assert_int_equal(conn_read_reply(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    reply_fini(&r);
    conn_close(c);
    assert_int_equal(mgmt_server_fds(srv, fds, 1), -ENOSPC);
    mgmt_server_free(srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_server_get_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_socket_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_not_found_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_post_and_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_slow_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_many_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_external_poll, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
