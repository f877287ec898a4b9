/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Route registry of the management API: "METHOD /path" + handler + help text, and the response a handler fills in.
 *
 * Invariants:
 * - Paths match exactly (the query string is not part of the path). A (method, path) pair is registered once.
 * - "/" is reserved for the built-in index (GET and HEAD) and is only served on the Unix socket.
 * - A route without MGMT_ROUTE_TCP does not exist on the TCP listener: it answers 404 there, not 405.
 * - HEAD is accepted wherever GET is registered; the handler runs as for GET and the server sends no body.
 * - Handlers run on the control thread, one at a time, and may take their time; they must set a status (a handler
 *   that leaves resp->status at 0 produces a 500).
 * - Allocation failures while building a response are sticky (resp->failed) and turn the reply into a 500.
 */
#ifndef ZWIRE_MGMT_ROUTES_H
#define ZWIRE_MGMT_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "mgmt/http_request.h"

#define MGMT_ROUTE_TCP (1u << 0)    /* also served on the TCP listener (metrics, readiness) */
#define MGMT_ROUTE_HIDDEN (1u << 1) /* not listed by GET / */

/* Which listener a request arrived on. */
enum mgmt_listener {
    MGMT_LISTENER_UNIX = 0,
    MGMT_LISTENER_TCP = 1,
};

#define MGMT_CONTENT_TYPE_TEXT "text/plain; charset=utf-8"
#define MGMT_CONTENT_TYPE_JSON "application/json"

/* The reply being built. Fields may be read by anyone; write them through the helpers below. */
struct mgmt_response {
    int status;             /* 0 until set */
    char content_type[128]; /* MGMT_CONTENT_TYPE_TEXT unless set */
    char *body;             /* NUL-terminated after body_len bytes (or NULL when empty) */
    size_t body_len;
    size_t body_cap;
    char *headers; /* extra header lines "Name: value\r\n", or NULL */
    size_t headers_len;
    size_t headers_cap;
    size_t json_flags; /* jansson dump flags for mgmt_response_json(); chosen by the dispatcher */
    bool close;        /* close the connection after this response */
    bool head_only;    /* HEAD request: the server sends the headers only */
    bool failed;       /* an allocation failed while building; the server answers 500 instead */
};

/*
 * A route handler.
 * @param ctx   the pointer given to mgmt_routes_add().
 * @param req   the request; valid for the duration of the call only.
 * @param resp  the response to fill in (initialized, status 0).
 */
typedef void (*mgmt_handler_fn)(void *ctx, const struct mgmt_request *req, struct mgmt_response *resp);

/* Initialize an empty response (status 0, text type, no body, no extra headers, compact JSON). */
void mgmt_response_init(struct mgmt_response *resp);

/* Release what the response holds. It can be re-initialized afterwards. */
void mgmt_response_fini(struct mgmt_response *resp);

/*
 * Set status, text content type and body (replacing any previous body) from a printf format.
 */
void mgmt_response_text(struct mgmt_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Set status, JSON content type and body, rendered with resp->json_flags plus a trailing newline.
 * @param json  ownership is taken (decref'd here), even on failure. NULL makes a 500.
 */
void mgmt_response_json(struct mgmt_response *resp, int status, json_t *json);

/*
 * Set status, content type and body from bytes (copied).
 * @return 0, -EINVAL for a bad content type, or -ENOMEM (resp->failed set).
 */
int mgmt_response_set_body(struct mgmt_response *resp, int status, const char *content_type, const void *data,
                           size_t len);

/*
 * Append to the body, printf style (the status and type are left alone).
 * @return 0 or -ENOMEM (resp->failed set).
 */
int mgmt_response_append(struct mgmt_response *resp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Append raw bytes to the body.
 * @return 0 or -ENOMEM (resp->failed set).
 */
int mgmt_response_append_bytes(struct mgmt_response *resp, const void *data, size_t len);

/* Set the status code only. */
void mgmt_response_set_status(struct mgmt_response *resp, int status);

/*
 * Set the Content-Type.
 * @param type  copied; at most 127 bytes, no CR/LF.
 * @return 0 or -EINVAL.
 */
int mgmt_response_set_type(struct mgmt_response *resp, const char *type);

/*
 * Add an extra header. Content-Type, Content-Length and Connection are managed by the server; do not add them here.
 * @param name, value  copied; no CR/LF, name non-empty without ':'.
 * @return 0, -EINVAL or -ENOMEM (resp->failed set).
 */
int mgmt_response_add_header(struct mgmt_response *resp, const char *name, const char *value);

/*
 * @return the value of an extra header previously added (case-insensitive name), copied into buf (NUL-terminated,
 *         truncated to len), or NULL when absent. For tests and diagnostics.
 */
const char *mgmt_response_header(const struct mgmt_response *resp, const char *name, char *buf, size_t len);

struct mgmt_routes;

/*
 * Create an empty registry.
 * @param err  set to a static message on failure.
 * @return the registry (owned by the caller; mgmt_routes_free()) or NULL.
 */
struct mgmt_routes *mgmt_routes_new(const char **err);

/* Free the registry. NULL is allowed. The handlers' ctx pointers are not touched. */
void mgmt_routes_free(struct mgmt_routes *routes);

/*
 * Register a route.
 * @param method  "GET", "POST", ... (upper case, copied).
 * @param path    absolute path without query, e.g. "/stats" (copied). "/" is reserved.
 * @param fn      handler; ctx is passed back to it (borrowed; must outlive the registry's use).
 * @param help    one line of help for the index (copied; NULL for none).
 * @param flags   MGMT_ROUTE_* bits.
 * @return 0, -EINVAL (bad method/path, NULL fn), -EEXIST (method and path already registered) or -ENOMEM.
 */
int mgmt_routes_add(struct mgmt_routes *routes, const char *method, const char *path, mgmt_handler_fn fn, void *ctx,
                    const char *help, unsigned flags);

/* @return the number of registered routes. */
size_t mgmt_routes_count(const struct mgmt_routes *routes);

/*
 * Answer a request: run the matching handler, or produce the index, 404 or 405 (with an Allow header).
 * JSON replies are indented unless the query has "compact"; "pretty" forces indentation.
 * @param listener  where the request arrived (routes without MGMT_ROUTE_TCP are invisible on TCP).
 * @param resp      an initialized, empty response; filled in here.
 */
void mgmt_routes_dispatch(const struct mgmt_routes *routes, const struct mgmt_request *req, enum mgmt_listener listener,
                          struct mgmt_response *resp);

#endif /* ZWIRE_MGMT_ROUTES_H */
