/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Management server (see server.h for the contract).
 *
 * Invariants:
 * - Every socket is non-blocking; every send uses MSG_NOSIGNAL, so a vanished client never raises SIGPIPE.
 * - A client is in exactly one state: READ (parsing; reads allowed), WRITE (a response is queued; not reading), or
 *   LINGER (response sent with "Connection: close", write side shut; unread input is discarded until EOF or the
 *   linger deadline, so that closing with unread data does not reset the connection before the client has read it).
 * - Input bytes left over after a complete request stay in c->in and are parsed after the response has been written.
 * - clients[] is dense: a closed client is replaced by the last one. fds are looked up by value, never by position.
 */
#include "mgmt/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#define IN_BYTES 4096
#define MAX_READS_PER_STEP 16
#define MAX_ACCEPTS_PER_STEP 16
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (4u * 1024u * 1024u)
#define LISTEN_BACKLOG 128

enum client_state {
    CS_READ,
    CS_WRITE,
    CS_LINGER,
};

struct client {
    int fd;
    enum mgmt_listener listener;
    enum client_state state;
    struct mgmt_http_request *parser;
    char in[IN_BYTES];
    size_t in_off;
    size_t in_len;
    char *out;
    size_t out_len;
    size_t out_off;
    size_t out_cap;
    bool close_after;
    uint64_t last_ms;      /* last progress (bytes in or out, or state change) */
    uint64_t req_start_ms; /* first byte of the pending request; 0 when none */
    uint64_t linger_until_ms;
    size_t linger_bytes;
};

struct mgmt_server {
    int unix_fd;
    int tcp_fd;
    char *unix_path;
    dev_t unix_dev;
    ino_t unix_ino;
    uint16_t tcp_port;
    const struct mgmt_routes *routes;
    unsigned max_clients;
    int idle_ms;
    int request_ms;
    struct mgmt_http_limits limits;
    struct client **clients;
    unsigned n_clients;
    struct pollfd *pfds;
};

static _Thread_local char server_err[512];

static const char *server_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *server_errf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(server_err, sizeof(server_err), fmt, ap);
    va_end(ap);
    return server_err;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Listeners
 */

/* Create one directory with mode 0755 exactly (whatever the umask); an existing one is left alone. */
static int server_mkdir(const char *dir)
{
    if (mkdir(dir, 0755) == 0)
        return chmod(dir, 0755) == 0 ? 0 : -errno;
    return errno == EEXIST ? 0 : -errno;
}

static int server_mkdir_parents(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    char *slash = strrchr(buf, '/');
    if (slash == NULL || slash == buf)
        return 0;
    *slash = '\0';
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = server_mkdir(buf);
        if (rc != 0)
            return rc;
        *p = '/';
    }
    return server_mkdir(buf);
}

/* @return 1 when something accepts connections on path, 0 when nothing does (stale), -errno when unknown. */
static int server_probe_unix(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        return 1;
    if (e == ECONNREFUSED)
        return 0;
    return -e;
}

static int server_open_unix(struct mgmt_server *s, const char *path, mode_t mode, const char **err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int rc;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        *err = server_errf("mgmt socket %s: path too long (max %zu bytes)", path, sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);

    rc = server_mkdir_parents(path);
    if (rc != 0) {
        *err = server_errf("mgmt socket %s: cannot create parent directory: %s", path, strerror(-rc));
        return rc;
    }

    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            *err = server_errf("mgmt socket %s: path exists and is not a socket; not removing it", path);
            return -EEXIST;
        }
        rc = server_probe_unix(&sa);
        if (rc == 1) {
            *err = server_errf("mgmt socket %s: another process is listening on it", path);
            return -EADDRINUSE;
        }
        if (rc < 0) {
            *err = server_errf("mgmt socket %s: cannot probe existing socket: %s", path, strerror(-rc));
            return rc;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            rc = -errno;
            *err = server_errf("mgmt socket %s: cannot remove stale socket: %s", path, strerror(-rc));
            return rc;
        }
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        *err = server_errf("mgmt socket %s: socket: %s", path, strerror(-rc));
        return rc;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        rc = -errno;
        *err = server_errf("mgmt socket %s: bind: %s", path, strerror(-rc));
        close(fd);
        return rc;
    }
    /* Nobody can connect before listen(), so the mode is right before the first client can arrive. */
    if (chmod(path, mode) != 0 || stat(path, &st) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        rc = -errno;
        *err = server_errf("mgmt socket %s: %s", path, strerror(-rc));
        close(fd);
        unlink(path);
        return rc;
    }
    s->unix_fd = fd;
    s->unix_dev = st.st_dev;
    s->unix_ino = st.st_ino;
    return 0;
}

static int server_parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *sslen)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon;
    const char *hstart = spec;
    size_t hlen;

    if (spec[0] == '[') {
        const char *close_br = strchr(spec, ']');
        if (close_br == NULL || close_br[1] != ':')
            return -EINVAL;
        hstart = spec + 1;
        hlen = (size_t)(close_br - hstart);
        colon = close_br + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL)
            return -EINVAL;
        hlen = (size_t)(colon - spec);
    }
    if (hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, hstart, hlen);
    host[hlen] = '\0';

    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port > 65535 || errno != 0)
        return -EINVAL;

    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (spec[0] != '[' && (hlen == 0 || strcmp(host, "*") == 0)) {
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)port);
        *sslen = sizeof(*sin);
    } else if (spec[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *sslen = sizeof(*sin);
    } else if (spec[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *sslen = sizeof(*sin6);
    } else {
        return -EINVAL;
    }
    return 0;
}

static int server_open_tcp(struct mgmt_server *s, const char *spec, const char **err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int rc = server_parse_listen(spec, &ss, &sslen);
    if (rc != 0) {
        *err = server_errf("mgmt tcp listen \"%s\": expected ip:port or [ipv6]:port", spec);
        return rc;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        *err = server_errf("mgmt tcp listen %s: socket: %s", spec, strerror(-rc));
        return rc;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        rc = -errno;
        *err = server_errf("mgmt tcp listen %s: %s", spec, strerror(-rc));
        close(fd);
        return rc;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        s->tcp_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                         : ((struct sockaddr_in *)&bound)->sin_port);
    s->tcp_fd = fd;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Clients
 */

static void server_close_client(struct mgmt_server *s, struct client *c)
{
    for (unsigned i = 0; i < s->n_clients; i++) {
        if (s->clients[i] == c) {
            s->clients[i] = s->clients[--s->n_clients];
            break;
        }
    }
    close(c->fd);
    mgmt_http_request_free(c->parser);
    free(c->out);
    free(c);
}

static struct client *server_find_client(const struct mgmt_server *s, int fd)
{
    for (unsigned i = 0; i < s->n_clients; i++)
        if (s->clients[i]->fd == fd)
            return s->clients[i];
    return NULL;
}

static int client_reserve_out(struct client *c, size_t need)
{
    if (need <= c->out_cap)
        return 0;
    char *o = realloc(c->out, need);
    if (o == NULL)
        return -ENOMEM;
    c->out = o;
    c->out_cap = need;
    return 0;
}

static const char *status_reason(int status)
{
    const char *r = http_status_str((enum http_status)status);
    return r != NULL && r[0] != '<' ? r : "Unknown";
}

/* Serialize resp into c->out and switch to CS_WRITE. On allocation failure, a static 500 is queued instead. */
static void client_queue_response(struct client *c, const struct mgmt_response *resp, bool close_after,
                                  bool http10_keep_alive)
{
    static const char oom[] = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
                              "Content-Length: 14\r\nConnection: close\r\n\r\nout of memory\n";
    const char *body = resp->body != NULL ? resp->body : "";
    size_t body_len = resp->head_only ? 0 : resp->body_len;
    const char *conn = close_after ? "Connection: close\r\n" : http10_keep_alive ? "Connection: keep-alive\r\n" : "";
    const char *fmt = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-cache\r\n%.*s%s\r\n";
    int hlen = snprintf(NULL, 0, fmt, resp->status, status_reason(resp->status), resp->content_type, resp->body_len,
                        (int)resp->headers_len, resp->headers != NULL ? resp->headers : "", conn);

    c->out_off = 0;
    c->out_len = 0;
    if (resp->failed || hlen < 0 || client_reserve_out(c, (size_t)hlen + body_len + 1) != 0) {
        if (client_reserve_out(c, sizeof(oom)) == 0) {
            memcpy(c->out, oom, sizeof(oom) - 1);
            c->out_len = sizeof(oom) - 1;
        }
        close_after = true;
    } else {
        snprintf(c->out, (size_t)hlen + 1, fmt, resp->status, status_reason(resp->status), resp->content_type,
                 resp->body_len, (int)resp->headers_len, resp->headers != NULL ? resp->headers : "", conn);
        if (body_len > 0)
            memcpy(c->out + hlen, body, body_len);
        c->out_len = (size_t)hlen + body_len;
    }
    c->close_after = close_after;
    c->state = CS_WRITE;
    c->req_start_ms = 0;
}

static void client_queue_error(struct client *c, int status, const char *reason)
{
    struct mgmt_response resp;
    mgmt_response_init(&resp);
    mgmt_response_text(&resp, status, "%d %s: %s\n", status, status_reason(status), reason);
    client_queue_response(c, &resp, true, false);
    mgmt_response_fini(&resp);
    c->in_off = c->in_len = 0;
}

static void client_dispatch(struct mgmt_server *s, struct client *c, const struct mgmt_request *req)
{
    struct mgmt_response resp;
    mgmt_response_init(&resp);
    mgmt_routes_dispatch(s->routes, req, c->listener, &resp);
    bool close_after = !req->keep_alive || resp.close;
    client_queue_response(c, &resp, close_after, !close_after && req->http_minor == 0);
    mgmt_response_fini(&resp);
}

static void client_feed(struct mgmt_server *s, struct client *c, uint64_t now)
{
    size_t used = 0;
    enum mgmt_http_result r = mgmt_http_request_feed(c->parser, c->in + c->in_off, c->in_len - c->in_off, &used);
    c->in_off += used;
    if (c->req_start_ms == 0 && mgmt_http_request_is_partial(c->parser))
        c->req_start_ms = now;
    if (r == MGMT_HTTP_COMPLETE)
        client_dispatch(s, c, mgmt_http_request_get(c->parser));
    else if (r == MGMT_HTTP_ERROR)
        client_queue_error(c, mgmt_http_request_error_status(c->parser), mgmt_http_request_error_reason(c->parser));
}

/* @return 0 when everything queued was sent, -EAGAIN when the socket is full, another -errno on failure. */
static int client_flush(struct client *c, uint64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
            c->last_ms = now;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -EAGAIN;
        return n < 0 ? -errno : -EPIPE;
    }
    return 0;
}

/* Make all the progress possible without blocking. @return false when the client was closed (and freed). */
static bool client_step(struct mgmt_server *s, struct client *c)
{
    uint64_t now = now_ms();
    int reads = 0;

    for (;;) {
        ssize_t n;
        switch (c->state) {
        case CS_WRITE: {
            int rc = client_flush(c, now);
            if (rc == -EAGAIN)
                return true;
            if (rc < 0)
                goto close;
            c->last_ms = now;
            if (c->close_after) {
                shutdown(c->fd, SHUT_WR);
                c->state = CS_LINGER;
                c->linger_until_ms = now + LINGER_MS;
                c->linger_bytes = 0;
                continue;
            }
            if (c->out_cap > 64u * 1024u) {
                free(c->out);
                c->out = NULL;
                c->out_cap = 0;
            }
            mgmt_http_request_reset(c->parser);
            c->state = CS_READ;
            continue;
        }
        case CS_READ:
            if (c->in_off < c->in_len) {
                client_feed(s, c, now);
                continue;
            }
            if (reads++ >= MAX_READS_PER_STEP)
                return true;
            n = recv(c->fd, c->in, sizeof(c->in), MSG_DONTWAIT);
            if (n > 0) {
                c->in_off = 0;
                c->in_len = (size_t)n;
                c->last_ms = now;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return true;
            goto close; /* EOF or error: an unfinished request is dropped */
        case CS_LINGER:
            if (reads++ >= MAX_READS_PER_STEP)
                return true;
            n = recv(c->fd, c->in, sizeof(c->in), MSG_DONTWAIT);
            if (n > 0) {
                c->linger_bytes += (size_t)n;
                if (c->linger_bytes > LINGER_MAX_BYTES)
                    goto close;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return true;
            goto close;
        }
    }
close:
    server_close_client(s, c);
    return false;
}

static uint64_t client_deadline(const struct mgmt_server *s, const struct client *c)
{
    if (c->state == CS_LINGER)
        return c->linger_until_ms;
    uint64_t d = c->last_ms + (uint64_t)s->idle_ms;
    if (c->state == CS_READ && c->req_start_ms != 0 && c->req_start_ms + (uint64_t)s->request_ms < d)
        d = c->req_start_ms + (uint64_t)s->request_ms;
    return d;
}

static void client_on_timeout(struct mgmt_server *s, struct client *c, uint64_t now)
{
    if (c->state == CS_READ && mgmt_http_request_is_partial(c->parser)) {
        client_queue_error(c, 408, "request not completed in time");
        c->last_ms = now;
        client_step(s, c);
        return;
    }
    server_close_client(s, c);
}

static void server_reject_client(int fd)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 17\r\nConnection: close\r\n\r\ntoo many clients\n";
    ssize_t n = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void server_accept(struct mgmt_server *s, int lfd, enum mgmt_listener listener)
{
    for (int i = 0; i < MAX_ACCEPTS_PER_STEP; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a transient error such as EMFILE: retried on the next event */
        if (s->n_clients >= s->max_clients) {
            server_reject_client(fd);
            continue;
        }
        struct client *c = calloc(1, sizeof(*c));
        const char *err = NULL;
        if (c != NULL)
            c->parser = mgmt_http_request_new(&s->limits, &err);
        if (c == NULL || c->parser == NULL) {
            free(c);
            server_reject_client(fd);
            continue;
        }
        c->fd = fd;
        c->listener = listener;
        c->state = CS_READ;
        c->last_ms = now_ms();
        s->clients[s->n_clients++] = c;
    }
}

/* ------------------------------------------------------------------------------------------------------------------
 * Public API
 */

struct mgmt_server *mgmt_server_new(const struct mgmt_server_config *cfg, const char **err)
{
    const char *dummy;
    if (err == NULL)
        err = &dummy;
    bool has_unix = cfg != NULL && cfg->unix_path != NULL && cfg->unix_path[0] != '\0';
    bool has_tcp = cfg != NULL && cfg->tcp_listen != NULL && cfg->tcp_listen[0] != '\0';
    if (cfg == NULL || cfg->routes == NULL || (!has_unix && !has_tcp)) {
        *err = server_errf("mgmt server: routes and at least one listener are required");
        return NULL;
    }

    struct mgmt_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        *err = server_errf("mgmt server: out of memory");
        return NULL;
    }
    s->unix_fd = -1;
    s->tcp_fd = -1;
    s->routes = cfg->routes;
    s->max_clients = cfg->max_clients != 0 ? cfg->max_clients : MGMT_SERVER_MAX_CLIENTS;
    s->idle_ms = cfg->idle_timeout_ms > 0 ? cfg->idle_timeout_ms : MGMT_SERVER_IDLE_TIMEOUT_MS;
    s->request_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : MGMT_SERVER_REQUEST_TIMEOUT_MS;
    if (cfg->limits != NULL)
        s->limits = *cfg->limits;
    s->clients = calloc(s->max_clients, sizeof(*s->clients));
    s->pfds = calloc(s->max_clients + 2, sizeof(*s->pfds));
    if (s->clients == NULL || s->pfds == NULL) {
        *err = server_errf("mgmt server: out of memory");
        goto fail;
    }
    if (has_unix) {
        if (server_open_unix(s, cfg->unix_path, cfg->socket_mode != 0 ? cfg->socket_mode : MGMT_SERVER_SOCKET_MODE,
                             err) != 0)
            goto fail;
        s->unix_path = strdup(cfg->unix_path);
        if (s->unix_path == NULL) {
            unlink(cfg->unix_path);
            *err = server_errf("mgmt server: out of memory");
            goto fail;
        }
    }
    if (has_tcp && server_open_tcp(s, cfg->tcp_listen, err) != 0)
        goto fail;
    return s;
fail:
    mgmt_server_free(s);
    return NULL;
}

void mgmt_server_free(struct mgmt_server *srv)
{
    if (srv == NULL)
        return;
    while (srv->n_clients > 0)
        server_close_client(srv, srv->clients[srv->n_clients - 1]);
    if (srv->unix_fd >= 0) {
        struct stat st;
        if (srv->unix_path != NULL && lstat(srv->unix_path, &st) == 0 && st.st_dev == srv->unix_dev &&
            st.st_ino == srv->unix_ino)
            unlink(srv->unix_path);
        close(srv->unix_fd);
    }
    if (srv->tcp_fd >= 0)
        close(srv->tcp_fd);
    free(srv->unix_path);
    free(srv->clients);
    free(srv->pfds);
    free(srv);
}

unsigned mgmt_server_max_fds(const struct mgmt_server *srv)
{
    return srv->max_clients + 2;
}

int mgmt_server_fds(const struct mgmt_server *srv, struct pollfd *fds, unsigned max)
{
    unsigned n = 0;
    if (srv->n_clients + 2 > max)
        return -ENOSPC;
    if (srv->unix_fd >= 0)
        fds[n++] = (struct pollfd){.fd = srv->unix_fd, .events = POLLIN};
    if (srv->tcp_fd >= 0)
        fds[n++] = (struct pollfd){.fd = srv->tcp_fd, .events = POLLIN};
    for (unsigned i = 0; i < srv->n_clients; i++) {
        const struct client *c = srv->clients[i];
        fds[n++] = (struct pollfd){.fd = c->fd, .events = c->state == CS_WRITE ? POLLOUT : POLLIN};
    }
    return (int)n;
}

int mgmt_server_process(struct mgmt_server *srv, const struct pollfd *fds, unsigned n)
{
    bool accept_unix = false;
    bool accept_tcp = false;

    for (unsigned i = 0; i < n; i++) {
        if (fds[i].revents == 0 || fds[i].fd < 0)
            continue;
        if (fds[i].fd == srv->unix_fd) {
            accept_unix = true;
            continue;
        }
        if (fds[i].fd == srv->tcp_fd) {
            accept_tcp = true;
            continue;
        }
        struct client *c = server_find_client(srv, fds[i].fd);
        if (c != NULL)
            client_step(srv, c);
    }
    if (accept_unix)
        server_accept(srv, srv->unix_fd, MGMT_LISTENER_UNIX);
    if (accept_tcp)
        server_accept(srv, srv->tcp_fd, MGMT_LISTENER_TCP);

    uint64_t now = now_ms();
    for (unsigned i = srv->n_clients; i > 0; i--) {
        if (i > srv->n_clients)
            continue; /* the array shrank below us */
        struct client *c = srv->clients[i - 1];
        if (now >= client_deadline(srv, c))
            client_on_timeout(srv, c, now);
    }
    return 0;
}

int mgmt_server_timeout_ms(const struct mgmt_server *srv)
{
    if (srv->n_clients == 0)
        return -1;
    uint64_t now = now_ms();
    uint64_t first = UINT64_MAX;
    for (unsigned i = 0; i < srv->n_clients; i++) {
        uint64_t d = client_deadline(srv, srv->clients[i]);
        if (d < first)
            first = d;
    }
    if (first <= now)
        return 0;
    return first - now > INT_MAX ? INT_MAX : (int)(first - now);
}

int mgmt_server_poll(struct mgmt_server *srv, int timeout_ms)
{
    int n = mgmt_server_fds(srv, srv->pfds, mgmt_server_max_fds(srv));
    if (n < 0)
        return n;
    int t = mgmt_server_timeout_ms(srv);
    if (t >= 0 && (timeout_ms < 0 || t < timeout_ms))
        timeout_ms = t;
    int rc = poll(srv->pfds, (nfds_t)n, timeout_ms);
    if (rc < 0) {
        if (errno == EINTR)
            return 0;
        return -errno;
    }
    mgmt_server_process(srv, srv->pfds, (unsigned)n);
    return rc;
}

unsigned mgmt_server_clients(const struct mgmt_server *srv)
{
    return srv->n_clients;
}

uint16_t mgmt_server_tcp_port(const struct mgmt_server *srv)
{
    return srv->tcp_fd >= 0 ? srv->tcp_port : 0;
}
