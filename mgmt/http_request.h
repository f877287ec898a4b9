/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Incremental HTTP/1.1 request parser for the management socket, built on http-parser.
 *
 * Invariants:
 * - A parser holds at most one request at a time. mgmt_http_request_feed() stops right after the end of a request
 *   (MGMT_HTTP_COMPLETE) and reports how many bytes it consumed; the bytes after that belong to the next request and
 *   are fed again after mgmt_http_request_reset(). This is how keep-alive pipelining works.
 * - The request line plus the headers never exceed limits.max_head_bytes raw bytes (CRLFs included), the body never
 *   exceeds limits.max_body_bytes, and there are never more than limits.max_headers headers. Over a limit, the parser
 *   stops with MGMT_HTTP_ERROR and the status to answer (413, 414 or 431).
 * - Once MGMT_HTTP_ERROR has been returned, the parser stays in error until reset; the connection must be closed after
 *   the error response, since the byte stream can no longer be trusted.
 * - Every string in struct mgmt_request is NUL-terminated and points into the parser; none of them contains a NUL byte
 *   (a NUL in the request line or a header is a 400). The body may contain NULs; it is followed by one extra NUL.
 * - Only the control thread uses a parser; nothing here is thread-safe.
 */
#ifndef ZWIRE_MGMT_HTTP_REQUEST_H
#define ZWIRE_MGMT_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Default limits, overridable at build time. */
#ifndef MGMT_HTTP_MAX_HEAD_BYTES
#define MGMT_HTTP_MAX_HEAD_BYTES (8u * 1024u) /* request line + headers, raw */
#endif
#ifndef MGMT_HTTP_MAX_BODY_BYTES
#define MGMT_HTTP_MAX_BODY_BYTES (1024u * 1024u)
#endif
#ifndef MGMT_HTTP_MAX_HEADERS
#define MGMT_HTTP_MAX_HEADERS 64u
#endif
#ifndef MGMT_HTTP_MAX_PARAMS
#define MGMT_HTTP_MAX_PARAMS 64u /* query string key/value pairs */
#endif

/* Limits of one parser; a zero field takes the default above. */
struct mgmt_http_limits {
    size_t max_head_bytes;
    size_t max_body_bytes;
    size_t max_headers;
};

enum mgmt_http_result {
    MGMT_HTTP_NEED_MORE = 0, /* all bytes consumed, the request is not complete yet */
    MGMT_HTTP_COMPLETE = 1,  /* a full request is available through mgmt_http_request_get() */
    MGMT_HTTP_ERROR = -1,    /* malformed or too large: answer mgmt_http_request_error_status() and close */
};

struct mgmt_request_header {
    const char *name;  /* as received (case preserved) */
    const char *value; /* leading/trailing whitespace removed by http-parser */
};

struct mgmt_request_param {
    const char *key;   /* percent-decoded, '+' decoded to space */
    const char *value; /* percent-decoded; "" for "?key" and "?key=" */
};

/* One parsed request. All pointers stay valid until the next mgmt_http_request_feed(), _reset() or _free(). */
struct mgmt_request {
    const char *method; /* "GET", "POST", ... (static strings) */
    const char *target; /* raw request-target without any #fragment, e.g. "/logging?level=debug" */
    const char *path;   /* percent-decoded path, "/" when the target has none */
    const char *query;  /* raw query string without '?', "" when absent */
    const struct mgmt_request_param *params;
    size_t n_params;
    const struct mgmt_request_header *headers;
    size_t n_headers;
    /* Selected headers, NULL when absent (the first occurrence wins). */
    const char *host;
    const char *accept;
    const char *content_type;
    const char *connection;
    int64_t content_length; /* -1 when there was no Content-Length (e.g. chunked or no body) */
    const uint8_t *body;    /* never NULL; NUL-terminated after body_len bytes */
    size_t body_len;
    unsigned http_major;
    unsigned http_minor;
    bool keep_alive; /* false when the connection must close after the response */
};

struct mgmt_http_request;

/*
 * Create a request parser.
 * @param limits  NULL or limits (zero fields take the defaults); copied.
 * @param err     on failure, set to a static message.
 * @return the parser, owned by the caller (mgmt_http_request_free()), or NULL.
 */
struct mgmt_http_request *mgmt_http_request_new(const struct mgmt_http_limits *limits, const char **err);

/* Free a parser and everything it holds. NULL is allowed. */
void mgmt_http_request_free(struct mgmt_http_request *p);

/*
 * Feed bytes of the connection, any number at a time (zero is allowed).
 * @param data      bytes; borrowed for the duration of the call only (the parser copies what it keeps).
 * @param consumed  set to the number of bytes used. On MGMT_HTTP_COMPLETE it may be less than len: the rest starts
 *                  the next request. On MGMT_HTTP_NEED_MORE it equals len.
 * @return MGMT_HTTP_NEED_MORE, MGMT_HTTP_COMPLETE or MGMT_HTTP_ERROR. After COMPLETE or ERROR, further feeds consume
 *         nothing and return the same result until mgmt_http_request_reset().
 */
enum mgmt_http_result mgmt_http_request_feed(struct mgmt_http_request *p, const void *data, size_t len,
                                             size_t *consumed);

/*
 * The parsed request.
 * @return the request after MGMT_HTTP_COMPLETE, NULL otherwise. Owned by the parser; valid until the next
 *         feed/reset/free.
 */
const struct mgmt_request *mgmt_http_request_get(const struct mgmt_http_request *p);

/*
 * @return the HTTP status to answer after MGMT_HTTP_ERROR (400, 413, 414, 431, 501 or 505), 0 otherwise.
 */
int mgmt_http_request_error_status(const struct mgmt_http_request *p);

/*
 * @return a short static description of the error after MGMT_HTTP_ERROR, "" otherwise.
 */
const char *mgmt_http_request_error_reason(const struct mgmt_http_request *p);

/*
 * @return true when some bytes of a request have been consumed and the request is not complete yet.
 */
bool mgmt_http_request_is_partial(const struct mgmt_http_request *p);

/* Forget the current request (complete, partial or failed) and get ready for the next one on the same connection. */
void mgmt_http_request_reset(struct mgmt_http_request *p);

/*
 * Look up a query parameter.
 * @param key  decoded key, compared exactly.
 * @return the decoded value of the first match ("" for a bare "?key"), or NULL when absent. Same lifetime as req.
 */
const char *mgmt_request_query_get(const struct mgmt_request *req, const char *key);

/*
 * Look up a header, case-insensitively.
 * @return the value of the first match or NULL. Same lifetime as req.
 */
const char *mgmt_request_header_get(const struct mgmt_request *req, const char *name);

/*
 * @return true when the Accept header of req names the media type (e.g. "application/json"), ignoring parameters and
 *         case. Wildcards are not expanded.
 */
bool mgmt_request_accepts(const struct mgmt_request *req, const char *media_type);

#endif /* ZWIRE_MGMT_HTTP_REQUEST_H */
