/* SPDX-License-Identifier: Apache-2.0 */
/*
 * zwirectl: the command-line client of the zwire management socket.
 *
 * Invariants:
 * - One HTTP/1.1 request per connection ("Connection: close"); the response is read with http-parser until it is
 *   complete or the server closes.
 * - Exit codes: 0 ok, 1 the server answered an error (or an unusable reply), 2 usage, 3 cannot connect.
 * - Rendering is driven by the JSON it receives: known sections get preferred columns, anything else is still shown
 *   through the generic renderer, so new keys never break the output.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <jansson.h>

#include "mgmt/ctl_table.h"

#define CTL_DEFAULT_SOCKET "/run/zwire/mgmt.sock"
#define CTL_TIMEOUT_MS 60000
#define CTL_MAX_REPLY_BYTES (256u * 1024u * 1024u)

enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_SERVER = 1,
    CTL_EXIT_USAGE = 2,
    CTL_EXIT_CONNECT = 3,
};

struct ctl_opts {
    const char *socket;
    bool json;
    bool all;
};

struct ctl_reply {
    int status;
    char content_type[128];
    char *body;
    size_t len;
    size_t cap;
    bool done;
    bool in_ct; /* the header being read is Content-Type */
    bool oom;
};

static const char *progname = "zwirectl";

static void usage(FILE *out)
{
    fprintf(out,
            "usage: %s [--socket PATH] [--json] [--all] COMMAND\n"
            "\n"
            "commands:\n"
            "  status            readiness and a summary (node, uptime, ports, workers)\n"
            "  stats             port, lcore and counter tables (--all: zero counters and per-lcore counters too)\n"
            "  connections       live proxied connections: lcore, direction, addresses, identities, bytes, age\n"
            "  tcp               TCP connections by state, per-lcore usage, tcp_* counters (retransmits, drops)\n"
            "  authz check [--src-identity spiffe://...] [--src IP] --dst IP:PORT\n"
            "                    explain the node's authorization decision: which policy matched and why\n"
            "  config            ports, routes and the ARP table from /config_dump\n"
            "  metrics           Prometheus metrics, as served\n"
            "  log-level [LEVEL] show, or set, the log level (e.g. debug, or mod:lvl,mod2:lvl)\n"
            "  quit              ask zwire to drain and exit\n"
            "  get PATH          GET any endpoint (GET / lists them)\n"
            "\n"
            "options:\n"
            "  --socket PATH     management socket (default $ZWIRE_SOCKET or %s)\n"
            "  --json            print the JSON reply, indented, instead of tables\n"
            "  --all             with stats: show every counter\n"
            "\n"
            "exit codes: 0 ok, 1 the server answered an error, 2 usage, 3 cannot connect\n",
            progname, CTL_DEFAULT_SOCKET);
}

static void ctl_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void ctl_errf(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
}

/* ------------------------------------------------------------------------------------------------------------------
 * HTTP client
 */

static int on_reply_header_field(http_parser *hp, const char *at, size_t len)
{
    struct ctl_reply *r = hp->data;
    r->in_ct = len == strlen("Content-Type") && strncasecmp(at, "Content-Type", len) == 0;
    return 0;
}

static int on_reply_header_value(http_parser *hp, const char *at, size_t len)
{
    struct ctl_reply *r = hp->data;
    if (r->in_ct) {
        size_t have = strlen(r->content_type);
        size_t n = len < sizeof(r->content_type) - 1 - have ? len : sizeof(r->content_type) - 1 - have;
        memcpy(r->content_type + have, at, n);
        r->content_type[have + n] = '\0';
    }
    return 0;
}

static int on_reply_body(http_parser *hp, const char *at, size_t len)
{
    struct ctl_reply *r = hp->data;
    if (r->len + len + 1 > r->cap) {
        size_t cap = r->cap == 0 ? 4096 : r->cap;
        while (cap < r->len + len + 1)
            cap *= 2;
        if (cap > CTL_MAX_REPLY_BYTES) {
            r->oom = true;
            return -1;
        }
        char *b = realloc(r->body, cap);
        if (b == NULL) {
            r->oom = true;
            return -1;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, at, len);
    r->len += len;
    r->body[r->len] = '\0';
    return 0;
}

static int on_reply_headers_complete(http_parser *hp)
{
    struct ctl_reply *r = hp->data;
    r->status = hp->status_code;
    return 0;
}

static int on_reply_complete(http_parser *hp)
{
    struct ctl_reply *r = hp->data;
    r->done = true;
    return 0;
}

static const http_parser_settings reply_settings = {
    .on_header_field = on_reply_header_field,
    .on_header_value = on_reply_header_value,
    .on_headers_complete = on_reply_headers_complete,
    .on_body = on_reply_body,
    .on_message_complete = on_reply_complete,
};

static void reply_fini(struct ctl_reply *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static int ctl_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Percent-encode s for a query value, keeping unreserved characters and the ':' ',' separators readable.
 * @return a malloc'ed string or NULL.
 */
static char *ctl_query_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1);
    char *o = out;
    if (out == NULL)
        return NULL;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~:,", c)) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

/*
 * Send one request and read the whole reply.
 * @return CTL_EXIT_OK with *r filled, CTL_EXIT_CONNECT when the socket cannot be reached, CTL_EXIT_SERVER when the
 *         exchange fails after connecting. Messages are printed here.
 */
static int ctl_request(const struct ctl_opts *o, const char *method, const char *target, const char *accept,
                       struct ctl_reply *r)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memset(r, 0, sizeof(*r));

    if (strlen(o->socket) >= sizeof(sa.sun_path)) {
        ctl_errf("cannot connect to %s: path too long", o->socket);
        return CTL_EXIT_CONNECT;
    }
    memcpy(sa.sun_path, o->socket, strlen(o->socket) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        ctl_errf("cannot connect to %s: %s (is zwire running? use --socket PATH or ZWIRE_SOCKET)", o->socket,
                 strerror(e));
        if (fd >= 0)
            close(fd);
        return CTL_EXIT_CONNECT;
    }

    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: zwirectl/%s\r\nAccept: %s\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n",
                     method, target, ZW_VERSION, accept);
    if (n < 0 || (size_t)n >= sizeof(req)) {
        ctl_errf("request target too long");
        close(fd);
        return CTL_EXIT_USAGE;
    }
    int rc = ctl_write_all(fd, req, (size_t)n);
    if (rc != 0) {
        ctl_errf("%s %s: cannot send to %s: %s", method, target, o->socket, strerror(-rc));
        close(fd);
        return CTL_EXIT_SERVER;
    }

    http_parser hp;
    http_parser_init(&hp, HTTP_RESPONSE);
    hp.data = r;
    char buf[16384];
    while (!r->done) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, CTL_TIMEOUT_MS);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0) {
            ctl_errf("%s %s: no reply from %s within %d s", method, target, o->socket, CTL_TIMEOUT_MS / 1000);
            close(fd);
            return CTL_EXIT_SERVER;
        }
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            ctl_errf("%s %s: read from %s: %s", method, target, o->socket, strerror(errno));
            close(fd);
            return CTL_EXIT_SERVER;
        }
        size_t used = http_parser_execute(&hp, &reply_settings, buf, (size_t)got);
        if (got == 0) {
            if (!r->done) {
                ctl_errf("%s %s: %s closed the connection before the reply was complete", method, target, o->socket);
                close(fd);
                return CTL_EXIT_SERVER;
            }
            break;
        }
        if (HTTP_PARSER_ERRNO(&hp) != HPE_OK || used != (size_t)got) {
            if (r->done)
                break;
            ctl_errf("%s %s: malformed reply: %s", method, target,
                     r->oom ? "too large" : http_errno_description(HTTP_PARSER_ERRNO(&hp)));
            close(fd);
            return CTL_EXIT_SERVER;
        }
    }
    close(fd);
    if (r->body == NULL) {
        r->body = calloc(1, 1);
        if (r->body == NULL)
            return CTL_EXIT_SERVER;
    }
    return CTL_EXIT_OK;
}

static int ctl_report_error(const char *method, const char *target, const struct ctl_reply *r)
{
    ctl_errf("%s %s: %d %s", method, target, r->status, http_status_str((enum http_status)r->status));
    if (r->len > 0) {
        fwrite(r->body, 1, r->len, stderr);
        if (r->body[r->len - 1] != '\n')
            fputc('\n', stderr);
    }
    return CTL_EXIT_SERVER;
}

/* GET a JSON document. @return an exit code; *out is set (caller decrefs) on CTL_EXIT_OK. */
static int ctl_get_json(const struct ctl_opts *o, const char *target, json_t **out)
{
    struct ctl_reply r;
    int rc = ctl_request(o, "GET", target, "application/json", &r);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (r.status < 200 || r.status > 299) {
        rc = ctl_report_error("GET", target, &r);
        reply_fini(&r);
        return rc;
    }
    json_error_t jerr;
    *out = json_loadb(r.body, r.len, 0, &jerr);
    reply_fini(&r);
    if (*out == NULL) {
        ctl_errf("GET %s: invalid JSON in reply: %s (line %d)", target, jerr.text, jerr.line);
        return CTL_EXIT_SERVER;
    }
    return CTL_EXIT_OK;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s != NULL)
        printf("%s\n", s);
    free(s);
}

/* ------------------------------------------------------------------------------------------------------------------
 * Rendering helpers
 */

static void format_duration(json_int_t s, char *buf, size_t len)
{
    if (s < 0)
        s = 0;
    long long d = s / 86400, h = (s / 3600) % 24, m = (s / 60) % 60, sec = s % 60;
    if (d > 0)
        snprintf(buf, len, "%lldd %lldh %lldm %llds", d, h, m, sec);
    else if (h > 0)
        snprintf(buf, len, "%lldh %lldm %llds", h, m, sec);
    else if (m > 0)
        snprintf(buf, len, "%lldm %llds", m, sec);
    else
        snprintf(buf, len, "%llds", sec);
}

static bool key_is(const char *k, const char *const *known)
{
    for (; *known != NULL; known++)
        if (strcmp(k, *known) == 0)
            return true;
    return false;
}

/* Print the sections of obj that are not in known, with the generic renderer. */
static void print_other_sections(json_t *obj, const char *const *known, bool skip_zero)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (key_is(k, known))
            continue;
        printf("\n");
        mgmt_ctl_table_print_any(stdout, k, v, skip_zero);
    }
}

/* Build {"counter": name, "lcore N": value...} rows from counters_by_lcore. Caller decrefs. */
static json_t *counters_matrix(json_t *totals, json_t *by_lcore)
{
    json_t *rows = json_array();
    const char *name;
    json_t *total;
    if (rows == NULL || !json_is_object(totals))
        return rows;
    json_object_foreach(totals, name, total)
    {
        json_t *row = json_object();
        if (row == NULL)
            break;
        json_object_set_new(row, "counter", json_string(name));
        json_object_set(row, "total", total);
        size_t i;
        json_t *e;
        json_array_foreach(by_lcore, i, e)
        {
            char col[48];
            json_t *lc = json_object_get(e, "lcore");
            json_t *v = json_object_get(json_object_get(e, "counters"), name);
            snprintf(col, sizeof(col), "lcore%" JSON_INTEGER_FORMAT, json_integer_value(lc));
            json_object_set_new(row, col, v != NULL ? json_incref(v) : json_integer(0));
        }
        json_array_append_new(rows, row);
    }
    return rows;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Commands
 */

static const struct mgmt_ctl_column port_stats_cols[] = {
    {"name", NULL},       {"port_id", "id"},    {"role", NULL},      {"mac", NULL},
    {"link", NULL},       {"rx_packets", NULL}, {"tx_packets", NULL}, {"rx_bytes", NULL},
    {"tx_bytes", NULL},   {"rx_missed", NULL},  {"rx_errors", NULL},  {"tx_errors", NULL},
};

static const struct mgmt_ctl_column lcore_stats_cols[] = {
    {"lcore", NULL},      {"worker", NULL}, {"rx_packets", NULL},
    {"tx_packets", NULL}, {"polls", NULL},  {"idle_sleeps", NULL},
};

static int cmd_stats(const struct ctl_opts *o)
{
    json_t *j;
    int rc = ctl_get_json(o, "/stats", &j);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (o->json) {
        print_json(j);
        json_decref(j);
        return CTL_EXIT_OK;
    }
    char up[64];
    format_duration(json_integer_value(json_object_get(j, "uptime_s")), up, sizeof(up));
    const char *node = json_string_value(json_object_get(j, "node"));
    printf("node %s, up %s\n\n", node != NULL ? node : "?", up);

    mgmt_ctl_table_print(stdout, "PORTS", json_object_get(j, "ports"), port_stats_cols,
                         sizeof(port_stats_cols) / sizeof(port_stats_cols[0]), true);
    printf("\n");
    mgmt_ctl_table_print(stdout, "LCORES", json_object_get(j, "lcores"), lcore_stats_cols,
                         sizeof(lcore_stats_cols) / sizeof(lcore_stats_cols[0]), true);
    printf("\n");
    json_t *counters = json_object_get(j, "counters");
    if (o->all) {
        printf("COUNTERS (all)\n");
        json_t *by_lcore = json_object_get(j, "counters_by_lcore");
        if (json_is_array(by_lcore) && json_array_size(by_lcore) > 0) {
            json_t *m = counters_matrix(counters, by_lcore);
            mgmt_ctl_table_print(stdout, NULL, m, NULL, 0, true);
            json_decref(m);
        } else if (mgmt_ctl_table_print_kv(stdout, NULL, counters, false) == 0) {
            printf("  (none)\n");
        }
    } else if (mgmt_ctl_table_print_kv(stdout, "COUNTERS (non-zero; --all shows every counter)", counters, true) ==
               0) {
        printf("  (all zero)\n");
    }
    static const char *const known[] = {"node",     "uptime_s",          "ports", "lcores",
                                        "counters", "counters_by_lcore", "tcp",   NULL};
    print_other_sections(j, known, !o->all);
    json_decref(j);
    return CTL_EXIT_OK;
}

static const struct mgmt_ctl_column tcp_lcore_cols[] = {
    {"lcore", NULL}, {"conns_in_use", "conns"}, {"conns_max", "max"}, {"timers_armed", "timers"},
    {"buffer_mbufs_in_use", "buffers"}, {"listeners", NULL}, {"states", NULL},
};

/* zwirectl tcp: connections by state, per-lcore usage, and the tcp_* counters (retransmits, drops by reason). */
static int cmd_tcp(const struct ctl_opts *o)
{
    json_t *j, *tcp, *counters, *sel;
    const char *key;
    json_t *v;
    int rc = ctl_get_json(o, "/stats", &j);

    if (rc != CTL_EXIT_OK)
        return rc;
    tcp = json_object_get(j, "tcp");
    counters = json_object_get(j, "counters");
    sel = json_object();
    json_object_foreach(counters, key, v)
    {
        if (strncmp(key, "tcp_", 4) == 0)
            json_object_set(sel, key, v);
    }
    if (o->json) {
        json_t *out = json_pack("{s:O, s:O}", "tcp", tcp ? tcp : json_null(), "counters", sel);
        print_json(out);
        json_decref(out);
    } else if (!json_is_object(tcp)) {
        printf("this node reports no TCP state\n");
    } else {
        if (mgmt_ctl_table_print_kv(stdout, "CONNECTIONS BY STATE", json_object_get(tcp, "states"), !o->all) == 0)
            printf("  (none)\n");
        printf("\n");
        mgmt_ctl_table_print(stdout, "LCORES", json_object_get(tcp, "lcores"), tcp_lcore_cols,
                             sizeof(tcp_lcore_cols) / sizeof(tcp_lcore_cols[0]), false);
        printf("\n");
        if (mgmt_ctl_table_print_kv(stdout, o->all ? "COUNTERS" : "COUNTERS (non-zero; --all shows every counter)",
                                    sel, !o->all) == 0)
            printf("  (all zero)\n");
    }
    json_decref(sel);
    json_decref(j);
    return CTL_EXIT_OK;
}

static const struct mgmt_ctl_column conn_cols[] = {
    {"lcore", NULL},        {"direction", "dir"},       {"src", NULL},        {"dst", NULL},     {"src_identity", NULL},
    {"dst_identity", NULL}, {"bytes_sent", "sent"},     {"bytes_recv", "recv"}, {"age_s", "age s"}, {"state", NULL},
};

/* zwirectl connections: the live proxied connections (GET /connections). */
static int cmd_connections(const struct ctl_opts *o)
{
    json_t *j;
    int rc = ctl_get_json(o, "/connections", &j);

    if (rc != CTL_EXIT_OK)
        return rc;
    if (o->json)
        print_json(j);
    else if (json_array_size(j) == 0)
        printf("CONNECTIONS\n  (none)\n");
    else
        mgmt_ctl_table_print(stdout, "CONNECTIONS", j, conn_cols, sizeof(conn_cols) / sizeof(conn_cols[0]), false);
    json_decref(j);
    return CTL_EXIT_OK;
}

static int usage_error(const char *fmt, const char *arg);

/* zwirectl authz check [--src-identity ID] [--src IP] --dst IP:PORT: explain a decision of the node's policies. */
static int cmd_authz_check(const struct ctl_opts *o, int nargs, char **args)
{
    const char *sid = NULL, *src = NULL, *dst = NULL;
    char target[1024], host[64];
    const char *colon;
    json_t *j;
    int rc;

    for (int i = 0; i + 1 < nargs; i += 2) {
        if (strcmp(args[i], "--src-identity") == 0)
            sid = args[i + 1];
        else if (strcmp(args[i], "--src") == 0)
            src = args[i + 1];
        else if (strcmp(args[i], "--dst") == 0)
            dst = args[i + 1];
        else
            return usage_error("authz check: unknown option %s", args[i]);
    }
    if (nargs % 2 != 0 || dst == NULL || (colon = strrchr(dst, ':')) == NULL ||
        (size_t)(colon - dst) >= sizeof(host))
        return usage_error("authz check needs --dst IP:PORT%s", "");
    memcpy(host, dst, (size_t)(colon - dst));
    host[colon - dst] = '\0';
    snprintf(target, sizeof(target), "/authz/check?dst=%s&port=%s%s%s%s%s", host, colon + 1, src ? "&src=" : "",
             src ? src : "", sid ? "&src_identity=" : "", sid ? sid : "");
    rc = ctl_get_json(o, target, &j);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (o->json) {
        print_json(j);
    } else {
        const char *policy = json_string_value(json_object_get(j, "policy"));
        printf("%s: %s%s%s\n", json_string_value(json_object_get(j, "decision")),
               json_string_value(json_object_get(j, "reason")), policy ? " — policy " : "", policy ? policy : "");
        printf("destination workload: %s\n", json_string_value(json_object_get(j, "destination_workload")));
        if (json_is_true(json_object_get(j, "dry_run_denied")))
            printf("dry-run: a dry-run policy would deny this\n");
        printf("\n%s", json_string_value(json_object_get(j, "trace")));
    }
    json_decref(j);
    return CTL_EXIT_OK;
}

static const struct mgmt_ctl_column port_cfg_cols[] = {
    {"name", NULL}, {"role", NULL}, {"port_id", "id"}, {"mac", NULL},
    {"address", NULL}, {"mtu", NULL}, {"devargs", NULL},
};

static const struct mgmt_ctl_column route_cols[] = {
    {"prefix", NULL}, {"via", NULL}, {"port", NULL}, {"type", NULL},
};

static const struct mgmt_ctl_column arp_cols[] = {
    {"ip", NULL}, {"mac", NULL}, {"port", NULL}, {"state", NULL}, {"age_s", "age"}, {"lcore", NULL},
};

static int cmd_config(const struct ctl_opts *o)
{
    json_t *j;
    int rc = ctl_get_json(o, "/config_dump", &j);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (o->json) {
        print_json(j);
        json_decref(j);
        return CTL_EXIT_OK;
    }
    json_t *node = json_object_get(j, "node");
    const char *name = json_string_value(json_object_get(node, "name"));
    const char *version = json_string_value(json_object_get(node, "version"));
    printf("node %s, version %s\n\n", name != NULL ? name : "?", version != NULL ? version : "?");
    mgmt_ctl_table_print(stdout, "PORTS", json_object_get(j, "ports"), port_cfg_cols,
                         sizeof(port_cfg_cols) / sizeof(port_cfg_cols[0]), true);
    printf("\n");
    mgmt_ctl_table_print(stdout, "ROUTES", json_object_get(j, "routes"), route_cols,
                         sizeof(route_cols) / sizeof(route_cols[0]), true);
    printf("\n");
    mgmt_ctl_table_print(stdout, "ARP", json_object_get(j, "arp"), arp_cols, sizeof(arp_cols) / sizeof(arp_cols[0]),
                         true);
    static const char *const known[] = {"node", "ports", "routes", "arp", NULL};
    print_other_sections(j, known, false);
    json_decref(j);
    return CTL_EXIT_OK;
}

static int cmd_status(const struct ctl_opts *o)
{
    struct ctl_reply r;
    int rc = ctl_request(o, "GET", "/healthz/ready", "text/plain", &r);
    if (rc != CTL_EXIT_OK)
        return rc;
    bool ready = r.status == 200;
    if (r.status != 200 && r.status != 500) {
        rc = ctl_report_error("GET", "/healthz/ready", &r);
        reply_fini(&r);
        return rc;
    }
    while (r.len > 0 && (r.body[r.len - 1] == '\n' || r.body[r.len - 1] == '\r'))
        r.body[--r.len] = '\0';

    json_t *stats = NULL;
    rc = ctl_get_json(o, "/stats", &stats);
    if (rc == CTL_EXIT_CONNECT) {
        reply_fini(&r);
        return rc;
    }

    json_int_t ports_total = 0, ports_up = 0, workers = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(stats, "ports"), i, e)
    {
        ports_total++;
        const char *link = json_string_value(json_object_get(e, "link"));
        if (link != NULL && strcmp(link, "up") == 0)
            ports_up++;
    }
    json_array_foreach(json_object_get(stats, "lcores"), i, e)
    {
        json_t *w = json_object_get(e, "worker");
        if (w == NULL || !json_is_null(w))
            workers++;
    }
    const char *node = json_string_value(json_object_get(stats, "node"));
    json_int_t uptime = json_integer_value(json_object_get(stats, "uptime_s"));

    if (o->json) {
        json_t *out = json_pack("{s:b, s:s}", "ready", ready, "readiness", r.body);
        if (out != NULL && stats != NULL) {
            json_object_set_new(out, "node", node != NULL ? json_string(node) : json_null());
            json_object_set_new(out, "uptime_s", json_integer(uptime));
            json_object_set_new(out, "ports_up", json_integer(ports_up));
            json_object_set_new(out, "ports_total", json_integer(ports_total));
            json_object_set_new(out, "workers", json_integer(workers));
        }
        print_json(out);
        json_decref(out);
    } else {
        char up[64];
        format_duration(uptime, up, sizeof(up));
        printf("ready:    %s\n", ready ? "yes" : r.body);
        if (stats != NULL) {
            printf("node:     %s\n", node != NULL ? node : "?");
            printf("uptime:   %s\n", up);
            printf("ports:    %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT " up", ports_up, ports_total);
            const char *sep = " (";
            json_array_foreach(json_object_get(stats, "ports"), i, e)
            {
                const char *pn = json_string_value(json_object_get(e, "name"));
                const char *link = json_string_value(json_object_get(e, "link"));
                printf("%s%s %s", sep, pn != NULL ? pn : "?", link != NULL ? link : "?");
                sep = ", ";
            }
            printf("%s\n", ports_total > 0 ? ")" : "");
            printf("workers:  %" JSON_INTEGER_FORMAT "\n", workers);
        }
    }
    json_decref(stats);
    reply_fini(&r);
    if (rc != CTL_EXIT_OK)
        return rc;
    return ready ? CTL_EXIT_OK : CTL_EXIT_SERVER;
}

/* Send a request and print the body as it came (pretty-printed with --json when it is JSON). */
static int cmd_raw(const struct ctl_opts *o, const char *method, const char *target)
{
    struct ctl_reply r;
    int rc = ctl_request(o, method, target, o->json ? "application/json" : "*/*", &r);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (r.status < 200 || r.status > 299) {
        rc = ctl_report_error(method, target, &r);
        reply_fini(&r);
        return rc;
    }
    json_t *j = o->json ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    if (j != NULL) {
        print_json(j);
        json_decref(j);
    } else {
        fwrite(r.body, 1, r.len, stdout);
        if (r.len > 0 && r.body[r.len - 1] != '\n')
            fputc('\n', stdout);
    }
    reply_fini(&r);
    return CTL_EXIT_OK;
}

static int cmd_log_level(const struct ctl_opts *o, const char *level)
{
    if (level == NULL)
        return cmd_raw(o, "POST", "/logging");
    char *enc = ctl_query_encode(level);
    if (enc == NULL)
        return CTL_EXIT_SERVER;
    size_t len = strlen(enc) + sizeof("/logging?level=");
    char *target = malloc(len);
    if (target == NULL) {
        free(enc);
        return CTL_EXIT_SERVER;
    }
    snprintf(target, len, "/logging?level=%s", enc);
    int rc = cmd_raw(o, "POST", target);
    free(target);
    free(enc);
    return rc;
}

static int cmd_get(const struct ctl_opts *o, const char *path)
{
    if (path[0] != '/') {
        size_t len = strlen(path) + 2;
        char *p = malloc(len);
        if (p == NULL)
            return CTL_EXIT_SERVER;
        snprintf(p, len, "/%s", path);
        int rc = cmd_raw(o, "GET", p);
        free(p);
        return rc;
    }
    if (strpbrk(path, " \t\r\n") != NULL) {
        ctl_errf("PATH must not contain spaces or line breaks");
        return CTL_EXIT_USAGE;
    }
    return cmd_raw(o, "GET", path);
}

/* ------------------------------------------------------------------------------------------------------------------
 * Main
 */

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", progname);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: %s [--socket PATH] [--json] [--all] COMMAND [ARG]  (%s --help lists the commands)\n",
            progname, progname);
    return CTL_EXIT_USAGE;
}

static int ctl_run(const struct ctl_opts *opts, const char *cmd, int nargs, char **args)
{
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return CTL_EXIT_OK;
    }
    if (strcmp(cmd, "status") == 0 && nargs == 0)
        return cmd_status(opts);
    if (strcmp(cmd, "stats") == 0 && nargs == 0)
        return cmd_stats(opts);
    if (strcmp(cmd, "authz") == 0 && nargs >= 1 && strcmp(args[0], "check") == 0)
        return cmd_authz_check(opts, nargs - 1, args + 1);
    if (strcmp(cmd, "connections") == 0 && nargs == 0)
        return cmd_connections(opts);
    if (strcmp(cmd, "tcp") == 0 && nargs == 0)
        return cmd_tcp(opts);
    if (strcmp(cmd, "config") == 0 && nargs == 0)
        return cmd_config(opts);
    if (strcmp(cmd, "metrics") == 0 && nargs == 0)
        return cmd_raw(opts, "GET", "/metrics");
    if (strcmp(cmd, "log-level") == 0 && nargs <= 1)
        return cmd_log_level(opts, nargs == 1 ? args[0] : NULL);
    if (strcmp(cmd, "quit") == 0 && nargs == 0)
        return cmd_raw(opts, "POST", "/quitquitquit");
    if (strcmp(cmd, "get") == 0 && nargs == 1)
        return cmd_get(opts, args[0]);
    if (key_is(cmd, (const char *const[]){"status", "stats", "connections", "tcp", "authz", "config", "metrics", "log-level", "quit", "get", NULL}))
        return usage_error("wrong number of arguments for %s", cmd);
    return usage_error("unknown command %s", cmd);
}

int main(int argc, char **argv)
{
    struct ctl_opts o = {.socket = NULL};
    const char *env = getenv("ZWIRE_SOCKET");
    o.socket = env != NULL && env[0] != '\0' ? env : CTL_DEFAULT_SOCKET;

    /* Options may come before or after the command; "--" ends them. */
    char **pos = calloc((size_t)argc + 1, sizeof(*pos));
    int npos = 0;
    bool opts_done = false;
    if (pos == NULL)
        return CTL_EXIT_SERVER;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || a[1] == '\0') {
            pos[npos++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            opts_done = true;
        } else if (strcmp(a, "--socket") == 0 || strcmp(a, "-s") == 0) {
            if (i + 1 >= argc) {
                free(pos);
                return usage_error("%s needs a PATH", a);
            }
            o.socket = argv[++i];
        } else if (strncmp(a, "--socket=", 9) == 0) {
            o.socket = a + 9;
        } else if (strcmp(a, "--json") == 0 || strcmp(a, "-j") == 0) {
            o.json = true;
        } else if (strcmp(a, "--all") == 0 || strcmp(a, "-a") == 0) {
            o.all = true;
        } else if (npos >= 2 && strcmp(pos[0], "authz") == 0 && i + 1 < argc &&
                   (strcmp(a, "--src-identity") == 0 || strcmp(a, "--src") == 0 || strcmp(a, "--dst") == 0)) {
            pos[npos++] = argv[i]; /* the options of "authz check" are its arguments */
            pos[npos++] = argv[++i];
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            free(pos);
            usage(stdout);
            return CTL_EXIT_OK;
        } else {
            free(pos);
            return usage_error("unknown option %s", a);
        }
    }
    if (o.socket[0] == '\0' || npos == 0) {
        free(pos);
        return usage_error("%s", npos == 0 ? "missing COMMAND" : "empty socket path");
    }

    int rc = ctl_run(&o, pos[0], npos - 1, pos + 1);
    free(pos);
    return rc;
}
