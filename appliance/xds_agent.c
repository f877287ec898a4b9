/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/xds_agent.c - sockets and timers around the istiod engines (see xds_agent.h for the invariants).
 *
 * A channel (struct xa_chan) is one TCP connection with one mesh_xds_conn: IDLE -> CONNECTING (non-blocking
 * connect) -> UP (engine created, TLS and HTTP/2 run through it) -> IDLE on any failure. The xDS channel carries
 * the ADS stream and, when ca_address equals address, the CA calls; otherwise a second channel carries them.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appliance/xds_agent.h"
#include "mesh/ca_client.h"
#include "mesh/err.h"
#include "mesh/xds_conn.h"
#include "mgmt/prom.h"

#define XA_READ_BYTES 65536
#define XA_CA_RETRY_NS (1000ull * 1000000ull)
#define XA_TOKEN_MAX_BYTES 65536

enum xa_state { XA_IDLE = 0, XA_CONNECTING, XA_UP };

struct xa_chan {
    struct app_xds_agent *a;
    bool is_xds;
    char *host;
    uint16_t port;
    char authority[300];
    int fd;
    enum xa_state st;
    uint64_t connect_deadline_ns;
    uint64_t retry_ns;
    struct mesh_xds_conn *conn;
    struct mesh_buf wire;
};

struct xa_call {
    struct xa_call *next;
    struct app_xds_agent *a;
    app_cert_ca_done_fn done;
    void *done_u;
    uint8_t *req;
    size_t len;
    bool open;
    struct mesh_buf resp;
};

struct app_xds_agent {
    const struct mesh_env *env;
    struct app_xds_config cfg; /* strings point into owned copies below */
    char *strs[16];
    size_t n_strs;
    mesh_xds_publish_fn publish;
    void *publish_u;
    struct mesh_xds_convert *conv;
    struct mesh_xds_client *xc;
    struct mesh_xds_handler conv_h;
    struct xa_chan xds, ca;
    bool separate_ca;
    struct xa_call *calls; /* CA calls not yet finished */
    struct app_xds_agent_status status;
    char batch_nack[MESH_XDS_TYPE_COUNT][512];
    void (*removed_fn)(void *u, enum mesh_xds_type t, const char *name);
    void *removed_u;
};

/* ---- small helpers ---- */

static char *xa_keep(struct app_xds_agent *a, const char *s)
{
    char *p;

    if (s == NULL || a->n_strs == sizeof(a->strs) / sizeof(a->strs[0]))
        return NULL;
    p = strdup(s);
    if (p != NULL)
        a->strs[a->n_strs++] = p;
    return p;
}

static void xa_error(struct app_xds_agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void xa_error(struct app_xds_agent *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->status.last_error, sizeof(a->status.last_error), fmt, ap);
    va_end(ap);
    MESH_LOG(a->env, MESH_LOG_WARNING, "app.xds", "%s", a->status.last_error);
}

static char *xa_read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p;
    size_t n;

    if (f == NULL)
        return NULL;
    p = malloc(max + 1);
    if (p == NULL) {
        fclose(f);
        return NULL;
    }
    n = fread(p, 1, max, f);
    fclose(f);
    p[n] = '\0';
    if (len != NULL)
        *len = n;
    return p;
}

/* The bearer token, re-read for every call; "" when the file is unreadable. Caller frees. */
static char *xa_token(struct app_xds_agent *a)
{
    char *t = xa_read_file(a->cfg.token_file, XA_TOKEN_MAX_BYTES, NULL);
    size_t n;

    if (t == NULL) {
        xa_error(a, "%s: cannot read the token: %s", a->cfg.token_file, strerror(errno));
        return strdup("");
    }
    n = strlen(t);
    while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ' || t[n - 1] == '\t'))
        t[--n] = '\0';
    return t;
}

/* ---- handler wrapper: status bookkeeping around the converter ---- */

static const char *xa_on_resource(void *u, const struct mesh_xds_resource *r)
{
    struct app_xds_agent *a = u;
    const char *why = a->conv_h.on_resource(a->conv, r);

    if (why == NULL) {
        snprintf(a->status.versions[r->type], sizeof(a->status.versions[r->type]), "%s", r->version);
    } else {
        size_t l = strlen(a->batch_nack[r->type]);
        snprintf(a->batch_nack[r->type] + l, sizeof(a->batch_nack[r->type]) - l, "%s%s: %s", l ? "; " : "",
                 r->name, why);
    }
    return why;
}

static void xa_on_removed(void *u, enum mesh_xds_type t, const char *name)
{
    struct app_xds_agent *a = u;
    a->conv_h.on_removed(a->conv, t, name);
    if (a->removed_fn != NULL)
        a->removed_fn(a->removed_u, t, name);
}

static void xa_on_batch_done(void *u, enum mesh_xds_type t)
{
    struct app_xds_agent *a = u;

    a->conv_h.on_batch_done(a->conv, t);
    if (a->batch_nack[t][0] != '\0') {
        memcpy(a->status.last_nack[t], a->batch_nack[t], sizeof(a->status.last_nack[t]));
        a->batch_nack[t][0] = '\0';
    }
    if (mesh_xds_convert_current(a->conv) != NULL)
        a->status.generation = mesh_xds_convert_current(a->conv)->generation;
}

static void xa_publish(void *u, const struct mesh_xds_state *s)
{
    struct app_xds_agent *a = u;

    if (a->publish != NULL)
        a->publish(a->publish_u, s);
    else
        mesh_xds_state_unref(s);
}

/* ---- CA calls ---- */

static void xa_call_finish(struct app_xds_agent *a, struct xa_call *c, int code, const char *msg)
{
    struct xa_call **pp;

    for (pp = &a->calls; *pp != NULL && *pp != c; pp = &(*pp)->next)
        ;
    if (*pp == c)
        *pp = c->next;
    if (code != 0)
        a->status.ca_failures++;
    c->done(c->done_u, code, msg, mesh_buf_data(&c->resp), mesh_buf_len(&c->resp));
    mesh_buf_fini(&c->resp);
    free(c->req);
    free(c);
}

static int xa_call_on_message(void *u, int32_t call, const uint8_t *msg, size_t len)
{
    struct xa_call *c = u;

    (void)call;
    return mesh_buf_append(&c->resp, msg, len) == 0 ? 0 : -1;
}

static void xa_call_on_close(void *u, int32_t call, const struct mesh_grpc_status *st, bool connection_error)
{
    struct xa_call *c = u;
    int code = st != NULL && st->have_status ? st->code : MESH_GRPC_UNKNOWN;

    (void)call;
    (void)connection_error;
    xa_call_finish(c->a, c, code, st != NULL ? st->message : "");
}

static const struct mesh_xds_call_cb xa_call_cb = {xa_call_on_message, xa_call_on_close};

static struct xa_chan *xa_ca_chan(struct app_xds_agent *a)
{
    return a->separate_ca ? &a->ca : &a->xds;
}

/* Open every waiting call on ch (UP). */
static void xa_open_calls(struct app_xds_agent *a, struct xa_chan *ch)
{
    struct xa_call *c, *next;

    for (c = a->calls; c != NULL; c = next) {
        char *tok;
        int32_t id;
        int rc;

        next = c->next;
        if (c->open)
            continue;
        tok = xa_token(a);
        rc = mesh_xds_conn_unary(ch->conn, MESH_CA_PATH, tok, c->req, c->len, APP_CERT_CALL_TIMEOUT_NS, &xa_call_cb, c,
                                 &id);
        free(tok);
        if (rc == MESH_OK) {
            c->open = true;
            a->status.ca_calls++;
        } else {
            xa_call_finish(a, c, MESH_GRPC_UNAVAILABLE, "the CA connection cannot open calls");
        }
    }
}

/* Complete every call that was not opened (the channel failed before). */
static void xa_fail_waiting_calls(struct app_xds_agent *a, const char *why)
{
    struct xa_call *c, *next;

    for (c = a->calls; c != NULL; c = next) {
        next = c->next;
        if (!c->open)
            xa_call_finish(a, c, MESH_GRPC_UNAVAILABLE, why);
    }
}

static int xa_ca_call(void *u, const uint8_t *req, size_t len, app_cert_ca_done_fn done, void *done_u)
{
    struct app_xds_agent *a = u;
    struct xa_call *c = calloc(1, sizeof(*c));

    if (c == NULL || (c->req = malloc(len + 1)) == NULL) {
        free(c);
        return -ENOMEM;
    }
    memcpy(c->req, req, len);
    c->len = len;
    c->a = a;
    c->done = done;
    c->done_u = done_u;
    mesh_buf_init(&c->resp, a->env, 1u << 20);
    c->next = a->calls;
    a->calls = c; /* opened by the next process(), never from inside this call */
    return 0;
}

void app_xds_agent_ca_transport(struct app_xds_agent *a, struct app_cert_ca *out)
{
    out->call = xa_ca_call;
    out->u = a;
}

/* ---- channels ---- */

static void xa_chan_close(struct app_xds_agent *a, struct xa_chan *ch, int err)
{
    if (ch->conn != NULL) {
        mesh_xds_conn_on_closed(ch->conn, err);
        mesh_xds_conn_free(ch->conn); /* live calls end with connection_error (the ADS stream included) */
        ch->conn = NULL;
    } else if (ch->is_xds && !mesh_xds_client_is_streaming(a->xc)) {
        (void)mesh_xds_client_stream_end(a->xc, NULL, true); /* no stream got going: back off */
    }
    if (ch->fd >= 0)
        close(ch->fd);
    ch->fd = -1;
    ch->st = XA_IDLE;
    mesh_buf_reset(&ch->wire);
    if (ch->is_xds)
        a->status.connected = false;
    if (ch == xa_ca_chan(a)) {
        ch->retry_ns = mesh_env_now(a->env) + XA_CA_RETRY_NS;
        xa_fail_waiting_calls(a, "cannot reach the CA");
    }
}

static void xa_chan_fail(struct app_xds_agent *a, struct xa_chan *ch, int err, const char *what)
{
    a->status.connect_failures++;
    xa_error(a, "%s (%s): %s", ch->authority, ch->is_xds ? "xds" : "ca", what);
    xa_chan_close(a, ch, err);
}

static void xa_chan_connect(struct app_xds_agent *a, struct xa_chan *ch)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    char port[8];
    int rc, fd = -1, one = 1;

    snprintf(port, sizeof(port), "%u", ch->port);
    rc = getaddrinfo(ch->host, port, &hints, &res);
    if (rc != 0) {
        a->status.connect_failures++;
        xa_error(a, "%s: cannot resolve: %s", ch->authority, gai_strerror(rc));
        xa_chan_close(a, ch, -EHOSTUNREACH);
        return;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        {
            int idle = 300, intvl = 75, cnt = 9;
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    ch->fd = fd;
    if (fd < 0) {
        xa_chan_fail(a, ch, -ECONNREFUSED, "cannot connect");
        return;
    }
    ch->st = XA_CONNECTING;
    ch->connect_deadline_ns = mesh_env_now(a->env) + MESH_XDS_CONN_HANDSHAKE_TIMEOUT_NS;
    a->status.connects++;
}

static void xa_chan_up(struct app_xds_agent *a, struct xa_chan *ch)
{
    struct mesh_xds_conn_cfg cc = {0};
    char *roots = NULL;
    size_t roots_len = 0;
    int err = 0;

    cc.authority = ch->authority;
    cc.server_name = a->cfg.server_name;
    cc.alt_server_name = a->cfg.alt_server_name;
    cc.cluster_id = a->cfg.cluster_id;
    if (strcmp(a->cfg.root_cert, "SYSTEM") == 0) {
        cc.use_system_roots = true;
    } else {
        roots = xa_read_file(a->cfg.root_cert, 1u << 20, &roots_len);
        if (roots == NULL) {
            xa_chan_fail(a, ch, -ENOENT, "cannot read root_cert");
            return;
        }
        cc.roots_pem = roots;
        cc.roots_len = roots_len;
    }
    ch->conn = mesh_xds_conn_new(a->env, &cc, &err);
    free(roots);
    if (ch->conn == NULL) {
        xa_chan_fail(a, ch, -EINVAL, mesh_err_str(err));
        return;
    }
    ch->st = XA_UP;
    if (ch->is_xds) {
        char *tok = xa_token(a);
        err = mesh_xds_conn_ads_open(ch->conn, a->xc, tok);
        free(tok);
        if (err != MESH_OK) {
            xa_chan_fail(a, ch, -EIO, "cannot open the ADS stream");
            return;
        }
    }
    if (ch == xa_ca_chan(a))
        xa_open_calls(a, ch);
}

static void xa_chan_write(struct app_xds_agent *a, struct xa_chan *ch)
{
    if (ch->st != XA_UP)
        return;
    for (int i = 0; i < 64; i++) {
        int rc = mesh_xds_conn_flush(ch->conn, &ch->wire);
        while (mesh_buf_len(&ch->wire) != 0) {
            ssize_t n = send(ch->fd, mesh_buf_data(&ch->wire), mesh_buf_len(&ch->wire), MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0) {
                xa_chan_fail(a, ch, -errno, strerror(errno));
                return;
            }
            mesh_buf_consume(&ch->wire, (size_t)n);
        }
        if (rc != MESH_OK || !mesh_xds_conn_want_write(ch->conn))
            break;
    }
}

static void xa_chan_read(struct app_xds_agent *a, struct xa_chan *ch)
{
    uint8_t buf[XA_READ_BYTES];

    for (;;) {
        ssize_t n = recv(ch->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            (void)mesh_xds_conn_feed(ch->conn, buf, (size_t)n, &ch->wire);
            if (ch->conn == NULL || ch->st != XA_UP)
                return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        xa_chan_fail(a, ch, n == 0 ? 0 : -errno, n == 0 ? "connection closed by the peer" : strerror(errno));
        return;
    }
}

static void xa_chan_event(struct app_xds_agent *a, struct xa_chan *ch, short revents)
{
    if (ch->st == XA_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if ((revents & (POLLOUT | POLLERR | POLLHUP)) == 0)
            return;
        if (getsockopt(ch->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            soerr = errno;
        if (soerr != 0) {
            xa_chan_fail(a, ch, -soerr, strerror(soerr));
            return;
        }
        xa_chan_up(a, ch);
        return;
    }
    if (ch->st != XA_UP)
        return;
    if (revents & (POLLIN | POLLERR | POLLHUP))
        xa_chan_read(a, ch);
}

static void xa_chan_timers(struct app_xds_agent *a, struct xa_chan *ch, uint64_t now)
{
    if (ch->st == XA_CONNECTING && now >= ch->connect_deadline_ns) {
        xa_chan_fail(a, ch, -ETIMEDOUT, "connect timed out");
        return;
    }
    if (ch->st != XA_UP)
        return;
    if (mesh_xds_conn_next_deadline(ch->conn) <= now)
        (void)mesh_xds_conn_on_deadline(ch->conn, now, &ch->wire);
    if (mesh_xds_conn_error(ch->conn) != MESH_OK) {
        xa_chan_write(a, ch); /* an alert or GOAWAY may be pending */
        if (ch->st == XA_UP)
            xa_chan_fail(a, ch, -EPROTO, mesh_err_str(mesh_xds_conn_error(ch->conn)));
        return;
    }
    if (ch->is_xds)
        a->status.connected = mesh_xds_conn_is_established(ch->conn);
}

/* ---- public ---- */

struct app_xds_agent *app_xds_agent_new(const struct mesh_env *env, const struct app_xds_config *cfg,
                                        mesh_xds_publish_fn publish, void *u, int *err)
{
    struct app_xds_agent *a = calloc(1, sizeof(*a));
    struct mesh_xds_client_cfg xcfg = {0};
    struct mesh_xds_handler h = {xa_on_resource, xa_on_removed, xa_on_batch_done};
    int e = 0;

    if (a == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    if (cfg == NULL || cfg->host == NULL || cfg->server_name == NULL) {
        free(a);
        *err = -EINVAL;
        return NULL;
    }
    a->env = env;
    a->publish = publish;
    a->publish_u = u;
    a->cfg = *cfg;
    a->cfg.server_name = xa_keep(a, cfg->server_name);
    a->cfg.alt_server_name = xa_keep(a, cfg->alt_server_name != NULL ? cfg->alt_server_name : "");
    a->cfg.cluster_id = xa_keep(a, cfg->cluster_id != NULL ? cfg->cluster_id : APP_XDS_DEFAULT_CLUSTER_ID);
    a->cfg.root_cert = xa_keep(a, cfg->root_cert != NULL ? cfg->root_cert : APP_XDS_DEFAULT_ROOT_CERT);
    a->cfg.token_file = xa_keep(a, cfg->token_file != NULL ? cfg->token_file : APP_XDS_DEFAULT_TOKEN_FILE);
    a->xds.host = xa_keep(a, cfg->host);
    a->xds.port = cfg->port;
    a->ca.host = xa_keep(a, cfg->ca_host != NULL ? cfg->ca_host : cfg->host);
    a->ca.port = cfg->ca_host != NULL ? cfg->ca_port : cfg->port;
    if (a->cfg.server_name == NULL || a->cfg.alt_server_name == NULL || a->cfg.cluster_id == NULL ||
        a->cfg.root_cert == NULL || a->cfg.token_file == NULL || a->xds.host == NULL || a->ca.host == NULL)
        goto nomem;
    a->separate_ca = strcmp(a->xds.host, a->ca.host) != 0 || a->xds.port != a->ca.port;
    for (int i = 0; i < 2; i++) {
        struct xa_chan *ch = i == 0 ? &a->xds : &a->ca;
        ch->a = a;
        ch->is_xds = i == 0;
        ch->fd = -1;
        snprintf(ch->authority, sizeof(ch->authority), strchr(ch->host, ':') != NULL ? "[%s]:%u" : "%s:%u", ch->host,
                 ch->port);
        mesh_buf_init(&ch->wire, env, 8u * 1024 * 1024);
    }
    a->conv = mesh_xds_convert_new(env, xa_publish, a, &e);
    if (a->conv == NULL)
        goto nomem;
    mesh_xds_convert_handler(&a->conv_h);
    xcfg.instance_ip = cfg->instance_ip;
    xcfg.pod_name = cfg->pod_name;
    xcfg.pod_namespace = cfg->pod_namespace;
    xcfg.node_name = cfg->node_name;
    xcfg.on_demand = cfg->on_demand;
    a->xc = mesh_xds_client_new(env, &xcfg, &h, a, &e);
    if (a->xc == NULL)
        goto nomem;
    return a;
nomem:
    app_xds_agent_free(a);
    *err = -ENOMEM;
    return NULL;
}

void app_xds_agent_free(struct app_xds_agent *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        struct xa_chan *ch = i == 0 ? &a->xds : &a->ca;
        if (ch->conn != NULL) {
            mesh_xds_conn_free(ch->conn);
            ch->conn = NULL;
        }
        if (ch->fd >= 0)
            close(ch->fd);
        mesh_buf_fini(&ch->wire);
    }
    while (a->calls != NULL)
        xa_call_finish(a, a->calls, MESH_GRPC_CANCELLED, "agent stopped");
    mesh_xds_client_free(a->xc);
    mesh_xds_convert_free(a->conv);
    for (size_t i = 0; i < a->n_strs; i++)
        free(a->strs[i]);
    free(a);
}

int app_xds_agent_fds(const struct app_xds_agent *a, struct pollfd *fds, unsigned max)
{
    int n = 0;

    for (int i = 0; i < 2 && (unsigned)n < max; i++) {
        const struct xa_chan *ch = i == 0 ? &a->xds : &a->ca;
        if (ch->fd < 0)
            continue;
        fds[n].fd = ch->fd;
        fds[n].revents = 0;
        if (ch->st == XA_CONNECTING)
            fds[n].events = POLLOUT;
        else
            fds[n].events = (short)(POLLIN | (mesh_buf_len(&ch->wire) != 0 ? POLLOUT : 0));
        n++;
    }
    return n;
}

int app_xds_agent_process(struct app_xds_agent *a, const struct pollfd *fds, unsigned n)
{
    uint64_t now;
    struct xa_chan *cach = xa_ca_chan(a);

    for (unsigned i = 0; i < n; i++) {
        for (int k = 0; k < 2; k++) {
            struct xa_chan *ch = k == 0 ? &a->xds : &a->ca;
            if (ch->fd >= 0 && ch->fd == fds[i].fd && fds[i].revents != 0) {
                xa_chan_event(a, ch, fds[i].revents);
                if (ch->st == XA_UP && (fds[i].revents & POLLOUT))
                    xa_chan_write(a, ch);
            }
        }
    }
    now = mesh_env_now(a->env);
    xa_chan_timers(a, &a->xds, now);
    if (a->separate_ca)
        xa_chan_timers(a, &a->ca, now);

    /* (re)open the ADS stream when the engine says so */
    if (!mesh_xds_client_is_streaming(a->xc) && mesh_xds_client_should_connect(a->xc, now)) {
        if (a->xds.st == XA_UP && !mesh_xds_conn_goaway_received(a->xds.conn) &&
            mesh_xds_conn_error(a->xds.conn) == MESH_OK) {
            char *tok = xa_token(a);
            if (mesh_xds_conn_ads_open(a->xds.conn, a->xc, tok) != MESH_OK)
                xa_chan_fail(a, &a->xds, -EIO, "cannot open the ADS stream");
            free(tok);
        } else if (a->xds.st == XA_UP) {
            xa_chan_close(a, &a->xds, 0); /* GOAWAY: a new connection for the new stream */
            xa_chan_connect(a, &a->xds);
        } else if (a->xds.st == XA_IDLE) {
            xa_chan_connect(a, &a->xds);
        }
    }
    /* CA calls waiting for a connection */
    if (a->calls != NULL) {
        if (cach->st == XA_UP)
            xa_open_calls(a, cach);
        else if (cach->st == XA_IDLE && now >= cach->retry_ns && a->separate_ca)
            xa_chan_connect(a, cach);
    }
    xa_chan_write(a, &a->xds);
    if (a->separate_ca) {
        xa_chan_write(a, &a->ca);
        /* an idle CA connection is closed once no call needs it */
        if (a->ca.st == XA_UP && a->calls == NULL && mesh_xds_conn_call_count(a->ca.conn) == 0 &&
            mesh_buf_len(&a->ca.wire) == 0)
            xa_chan_close(a, &a->ca, 0);
    }
    a->status.ready = mesh_xds_client_is_ready(a->xc);
    return 0;
}

int app_xds_agent_timeout_ms(const struct app_xds_agent *a)
{
    uint64_t now = mesh_env_now(a->env), d = UINT64_MAX;

    if (!mesh_xds_client_is_streaming(a->xc) && a->xds.st != XA_CONNECTING)
        d = mesh_xds_client_next_deadline(a->xc);
    for (int i = 0; i < 2; i++) {
        const struct xa_chan *ch = i == 0 ? &a->xds : &a->ca;
        if (ch->st == XA_CONNECTING && ch->connect_deadline_ns < d)
            d = ch->connect_deadline_ns;
        if (ch->st == XA_UP) {
            uint64_t cd = mesh_xds_conn_next_deadline(ch->conn);
            if (cd < d)
                d = cd;
        }
    }
    if (a->calls != NULL) {
        const struct xa_chan *ch = a->separate_ca ? &a->ca : &a->xds;
        if (ch->st == XA_UP)
            d = now;
        else if (ch->st == XA_IDLE && ch->retry_ns < d)
            d = ch->retry_ns;
    }
    if (d == UINT64_MAX || d == MESH_XDS_NO_DEADLINE)
        return -1;
    if (d <= now)
        return 0;
    d = (d - now + 999999) / 1000000;
    return d > 60000 ? 60000 : (int)d;
}

bool app_xds_agent_ready(const struct app_xds_agent *a)
{
    return mesh_xds_client_is_ready(a->xc);
}

void app_xds_agent_on_removed(struct app_xds_agent *a, void (*fn)(void *u, enum mesh_xds_type t, const char *name),
                              void *u)
{
    a->removed_fn = fn;
    a->removed_u = u;
}

int app_xds_agent_lookup(struct app_xds_agent *a, const char *name)
{
    int rc = mesh_xds_client_subscribe(a->xc, name);
    return rc == MESH_OK ? 0 : rc == MESH_ERR_STATE ? -EPERM : -ENOMEM;
}

const char *app_xds_agent_pending(const struct app_xds_agent *a)
{
    return app_xds_agent_ready(a) ? NULL : APP_XDS_AGENT_PENDING_TASK;
}

const struct app_xds_agent_status *app_xds_agent_status(const struct app_xds_agent *a)
{
    return &a->status;
}

const struct mesh_xds_stats *app_xds_agent_xds_stats(const struct app_xds_agent *a)
{
    return mesh_xds_client_stats(a->xc);
}

const struct mesh_xds_state *app_xds_agent_state(const struct app_xds_agent *a)
{
    return mesh_xds_convert_current(a->conv);
}

void app_xds_agent_metrics_render(struct mgmt_prom *prom, const struct app_xds_agent *a)
{
    const struct mesh_xds_stats *st = mesh_xds_client_stats(a->xc);

    mgmt_prom_family(prom, "istio_xds_connection_terminations_total", MGMT_PROM_COUNTER,
                     "The total number of completed connections to xds server.");
    for (int t = 0; t < MESH_XDS_TERM_COUNT; t++) {
        struct mgmt_prom_label l[] = {{"reason", mesh_xds_term_label((enum mesh_xds_term)t)}};
        mgmt_prom_sample_u64(prom, l, 1, st->terminations[t]);
    }
    mgmt_prom_family(prom, "istio_xds_message_total", MGMT_PROM_COUNTER, "Total number of messages received.");
    for (int t = 0; t < MESH_XDS_TYPE_COUNT; t++) {
        struct mgmt_prom_label l[] = {{"url", mesh_xds_type_url((enum mesh_xds_type)t)}};
        mgmt_prom_sample_u64(prom, l, 1, st->messages[t]);
    }
    mgmt_prom_family(prom, "istio_xds_message_bytes_total", MGMT_PROM_COUNTER, "Total number of bytes received.");
    for (int t = 0; t < MESH_XDS_TYPE_COUNT; t++) {
        struct mgmt_prom_label l[] = {{"url", mesh_xds_type_url((enum mesh_xds_type)t)}};
        mgmt_prom_sample_u64(prom, l, 1, st->message_bytes[t]);
    }
}
