/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Route registry and response helpers (see routes.h).
 *
 * Invariants:
 * - Routes are kept in registration order; the index lists them in that order.
 * - resp->body, when not NULL, always has a NUL after body_len bytes.
 */
#include "mgmt/routes.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define METHOD_MAX_BYTES 16
#define ALLOW_MAX_BYTES 128

struct route {
    char method[METHOD_MAX_BYTES];
    char *path;
    char *help;
    mgmt_handler_fn fn;
    void *ctx;
    unsigned flags;
};

struct mgmt_routes {
    struct route *v;
    size_t n;
    size_t cap;
};

/* ------------------------------------------------------------------------------------------------------------------
 * Responses
 */

void mgmt_response_init(struct mgmt_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", MGMT_CONTENT_TYPE_TEXT);
    resp->json_flags = JSON_COMPACT;
}

void mgmt_response_fini(struct mgmt_response *resp)
{
    free(resp->body);
    free(resp->headers);
    resp->body = NULL;
    resp->headers = NULL;
    resp->body_len = resp->body_cap = 0;
    resp->headers_len = resp->headers_cap = 0;
}

static int response_reserve(struct mgmt_response *resp, size_t extra)
{
    if (resp->body_len + extra + 1 <= resp->body_cap)
        return 0;
    size_t cap = resp->body_cap < 256 ? 256 : resp->body_cap;
    while (cap < resp->body_len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            resp->failed = true;
            return -ENOMEM;
        }
        cap *= 2;
    }
    char *b = realloc(resp->body, cap);
    if (b == NULL) {
        resp->failed = true;
        return -ENOMEM;
    }
    resp->body = b;
    resp->body_cap = cap;
    return 0;
}

static int response_vappend(struct mgmt_response *resp, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    if (response_reserve(resp, (size_t)n) != 0)
        return -ENOMEM;
    vsnprintf(resp->body + resp->body_len, (size_t)n + 1, fmt, ap);
    resp->body_len += (size_t)n;
    return 0;
}

void mgmt_response_text(struct mgmt_response *resp, int status, const char *fmt, ...)
{
    va_list ap;
    resp->status = status;
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", MGMT_CONTENT_TYPE_TEXT);
    resp->body_len = 0;
    va_start(ap, fmt);
    response_vappend(resp, fmt, ap);
    va_end(ap);
}

int mgmt_response_append(struct mgmt_response *resp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = response_vappend(resp, fmt, ap);
    va_end(ap);
    return rc;
}

int mgmt_response_append_bytes(struct mgmt_response *resp, const void *data, size_t len)
{
    if (response_reserve(resp, len) != 0)
        return -ENOMEM;
    if (len > 0)
        memcpy(resp->body + resp->body_len, data, len);
    resp->body_len += len;
    resp->body[resp->body_len] = '\0';
    return 0;
}

void mgmt_response_json(struct mgmt_response *resp, int status, json_t *json)
{
    if (json == NULL) {
        mgmt_response_text(resp, 500, "internal error: no JSON produced\n");
        return;
    }
    char *s = json_dumps(json, resp->json_flags | JSON_ENCODE_ANY);
    json_decref(json);
    if (s == NULL) {
        resp->failed = true;
        mgmt_response_text(resp, 500, "internal error: cannot render JSON\n");
        return;
    }
    resp->status = status;
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", MGMT_CONTENT_TYPE_JSON);
    resp->body_len = 0;
    if (mgmt_response_append_bytes(resp, s, strlen(s)) == 0)
        mgmt_response_append_bytes(resp, "\n", 1);
    free(s);
}

void mgmt_response_set_status(struct mgmt_response *resp, int status)
{
    resp->status = status;
}

static bool is_header_safe(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

int mgmt_response_set_type(struct mgmt_response *resp, const char *type)
{
    if (type == NULL || type[0] == '\0' || strlen(type) >= sizeof(resp->content_type) || !is_header_safe(type))
        return -EINVAL;
    snprintf(resp->content_type, sizeof(resp->content_type), "%s", type);
    return 0;
}

int mgmt_response_set_body(struct mgmt_response *resp, int status, const char *content_type, const void *data,
                           size_t len)
{
    if (content_type != NULL && mgmt_response_set_type(resp, content_type) != 0)
        return -EINVAL;
    resp->status = status;
    resp->body_len = 0;
    return mgmt_response_append_bytes(resp, data, len);
}

int mgmt_response_add_header(struct mgmt_response *resp, const char *name, const char *value)
{
    if (name == NULL || value == NULL || name[0] == '\0' || strchr(name, ':') != NULL || strpbrk(name, " \t") != NULL ||
        !is_header_safe(name) || !is_header_safe(value))
        return -EINVAL;
    size_t need = strlen(name) + strlen(value) + 4;
    if (resp->headers_len + need + 1 > resp->headers_cap) {
        size_t cap = resp->headers_cap < 128 ? 128 : resp->headers_cap;
        while (cap < resp->headers_len + need + 1)
            cap *= 2;
        char *h = realloc(resp->headers, cap);
        if (h == NULL) {
            resp->failed = true;
            return -ENOMEM;
        }
        resp->headers = h;
        resp->headers_cap = cap;
    }
    resp->headers_len +=
        (size_t)snprintf(resp->headers + resp->headers_len, resp->headers_cap - resp->headers_len, "%s: %s\r\n", name,
                         value);
    return 0;
}

const char *mgmt_response_header(const struct mgmt_response *resp, const char *name, char *buf, size_t len)
{
    size_t nlen = strlen(name);
    const char *s = resp->headers;
    const char *end = s != NULL ? s + resp->headers_len : NULL;
    while (s != NULL && s < end) {
        const char *eol = strstr(s, "\r\n");
        if (eol == NULL)
            break;
        if ((size_t)(eol - s) > nlen + 1 && strncasecmp(s, name, nlen) == 0 && s[nlen] == ':') {
            const char *v = s + nlen + 1;
            while (*v == ' ')
                v++;
            snprintf(buf, len, "%.*s", (int)(eol - v), v);
            return buf;
        }
        s = eol + 2;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Registry
 */

struct mgmt_routes *mgmt_routes_new(const char **err)
{
    struct mgmt_routes *r = calloc(1, sizeof(*r));
    if (r == NULL && err != NULL)
        *err = "out of memory";
    return r;
}

void mgmt_routes_free(struct mgmt_routes *routes)
{
    if (routes == NULL)
        return;
    for (size_t i = 0; i < routes->n; i++) {
        free(routes->v[i].path);
        free(routes->v[i].help);
    }
    free(routes->v);
    free(routes);
}

static bool routes_check_method(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n >= METHOD_MAX_BYTES)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((m[i] >= 'A' && m[i] <= 'Z') || m[i] == '-'))
            return false;
    return true;
}

static const struct route *routes_find(const struct mgmt_routes *routes, const char *method, const char *path)
{
    for (size_t i = 0; i < routes->n; i++)
        if (strcmp(routes->v[i].path, path) == 0 && strcmp(routes->v[i].method, method) == 0)
            return &routes->v[i];
    return NULL;
}

int mgmt_routes_add(struct mgmt_routes *routes, const char *method, const char *path, mgmt_handler_fn fn, void *ctx,
                    const char *help, unsigned flags)
{
    if (routes == NULL || method == NULL || path == NULL || fn == NULL || !routes_check_method(method) ||
        path[0] != '/' || strpbrk(path, "?# \t\r\n") != NULL)
        return -EINVAL;
    if (strcmp(path, "/") == 0 || routes_find(routes, method, path) != NULL)
        return -EEXIST;
    if (strcmp(method, "HEAD") == 0)
        return -EINVAL; /* HEAD follows GET */
    if (routes->n == routes->cap) {
        size_t cap = routes->cap == 0 ? 16 : routes->cap * 2;
        struct route *v = realloc(routes->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        routes->v = v;
        routes->cap = cap;
    }
    struct route *rt = &routes->v[routes->n];
    memset(rt, 0, sizeof(*rt));
    snprintf(rt->method, sizeof(rt->method), "%s", method);
    rt->path = strdup(path);
    rt->help = strdup(help != NULL ? help : "");
    if (rt->path == NULL || rt->help == NULL) {
        free(rt->path);
        free(rt->help);
        return -ENOMEM;
    }
    rt->fn = fn;
    rt->ctx = ctx;
    rt->flags = flags;
    routes->n++;
    return 0;
}

size_t mgmt_routes_count(const struct mgmt_routes *routes)
{
    return routes->n;
}

/* ------------------------------------------------------------------------------------------------------------------
 * Dispatch
 */

static bool route_is_visible(const struct route *rt, enum mgmt_listener listener)
{
    return listener == MGMT_LISTENER_UNIX || (rt->flags & MGMT_ROUTE_TCP) != 0;
}

static void routes_make_index(const struct mgmt_routes *routes, const struct mgmt_request *req,
                              struct mgmt_response *resp)
{
    if (mgmt_request_accepts(req, "application/json")) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < routes->n; i++) {
            const struct route *rt = &routes->v[i];
            if (rt->flags & MGMT_ROUTE_HIDDEN)
                continue;
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b}", "method", rt->method, "path", rt->path,
                                                 "help", rt->help, "tcp", (rt->flags & MGMT_ROUTE_TCP) != 0));
        }
        mgmt_response_json(resp, 200, arr);
        return;
    }
    size_t width = 0;
    for (size_t i = 0; i < routes->n; i++) {
        size_t w = strlen(routes->v[i].method) + 1 + strlen(routes->v[i].path);
        if (!(routes->v[i].flags & MGMT_ROUTE_HIDDEN) && w > width)
            width = w;
    }
    mgmt_response_text(resp, 200, "%s", "");
    for (size_t i = 0; i < routes->n; i++) {
        const struct route *rt = &routes->v[i];
        if (rt->flags & MGMT_ROUTE_HIDDEN)
            continue;
        int pad = (int)(width - strlen(rt->method) - 1 - strlen(rt->path));
        mgmt_response_append(resp, "%s %s%*s  %s\n", rt->method, rt->path, pad, "", rt->help);
    }
}

/* Collect the methods registered for path into allow ("GET, HEAD, POST"); return how many routes matched. */
static size_t routes_allowed(const struct mgmt_routes *routes, const char *path, enum mgmt_listener listener,
                             char *allow, size_t len)
{
    size_t n = 0;
    size_t off = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < routes->n; i++) {
        const struct route *rt = &routes->v[i];
        if (strcmp(rt->path, path) != 0 || !route_is_visible(rt, listener))
            continue;
        n++;
        int w = snprintf(allow + off, len - off, "%s%s", off > 0 ? ", " : "", rt->method);
        if (w > 0 && (size_t)w < len - off)
            off += (size_t)w;
        if (strcmp(rt->method, "GET") == 0) {
            w = snprintf(allow + off, len - off, ", HEAD");
            if (w > 0 && (size_t)w < len - off)
                off += (size_t)w;
        }
    }
    return n;
}

void mgmt_routes_dispatch(const struct mgmt_routes *routes, const struct mgmt_request *req, enum mgmt_listener listener,
                          struct mgmt_response *resp)
{
    bool is_head = strcmp(req->method, "HEAD") == 0;
    const char *method = is_head ? "GET" : req->method;

    resp->json_flags = JSON_INDENT(2);
    if (mgmt_request_query_get(req, "compact") != NULL && mgmt_request_query_get(req, "pretty") == NULL)
        resp->json_flags = JSON_COMPACT;
    resp->head_only = is_head;

    if (strcmp(req->path, "/") == 0 && listener == MGMT_LISTENER_UNIX) {
        if (strcmp(method, "GET") != 0) {
            mgmt_response_add_header(resp, "Allow", "GET, HEAD");
            mgmt_response_text(resp, 405, "method not allowed; use GET /\n");
            return;
        }
        routes_make_index(routes, req, resp);
        return;
    }

    const struct route *rt = routes_find(routes, method, req->path);
    if (rt != NULL && route_is_visible(rt, listener)) {
        rt->fn(rt->ctx, req, resp);
        if (resp->status < 100 || resp->status > 999) {
            resp->body_len = 0;
            mgmt_response_text(resp, 500, "internal error: handler for %s %s set no status\n", rt->method, rt->path);
        }
        return;
    }

    char allow[ALLOW_MAX_BYTES];
    if (routes_allowed(routes, req->path, listener, allow, sizeof(allow)) == 0) {
        if (listener == MGMT_LISTENER_UNIX)
            mgmt_response_text(resp, 404, "not found: %s\nGET / lists the endpoints\n", req->path);
        else
            mgmt_response_text(resp, 404, "not found: %s\n", req->path);
        return;
    }
    mgmt_response_add_header(resp, "Allow", allow);
    mgmt_response_text(resp, 405, "method %s not allowed for %s; allowed: %s\n", req->method, req->path, allow);
    for (size_t i = 0; i < routes->n; i++) {
        const struct route *r2 = &routes->v[i];
        if (strcmp(r2->path, req->path) == 0 && route_is_visible(r2, listener) && r2->help[0] != '\0')
            mgmt_response_append(resp, "usage: %s %s  %s\n", r2->method, r2->path, r2->help);
    }
}
