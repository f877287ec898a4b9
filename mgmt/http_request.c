/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Incremental HTTP/1.1 request parser on http-parser (see http_request.h for the contract).
 *
 * Invariants:
 * - http-parser is paused from on_message_complete, so http_parser_execute() never runs past the end of a request.
 * - While the head is being read, execute() is never given more bytes than the head budget has left, so the raw head
 *   size is enforced exactly, whitespace included, without relying on http-parser's own global limit.
 * - The head storage holds the target, then each header name and value, each NUL-terminated, in arrival order. Its
 *   capacity covers the head budget plus the terminators, so appends can only fail on a broken invariant.
 * - A callback that detects an error sets p->state = ST_ERROR with the status and returns non-zero; feed() then checks
 *   our state before looking at http-parser's errno.
 */
#include "mgmt/http_request.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include <http_parser.h>

enum req_state {
    ST_HEAD,     /* reading the request line and headers */
    ST_BODY,     /* headers complete, reading the body */
    ST_COMPLETE, /* a request is ready */
    ST_ERROR,    /* failed; see err_status */
};

enum req_last_cb {
    CB_NONE,
    CB_URL,
    CB_FIELD,
    CB_VALUE,
};

struct hdr_off {
    size_t name;
    size_t value;
};

struct mgmt_http_request {
    http_parser parser;
    struct mgmt_http_limits limits;
    enum req_state state;
    int err_status;
    const char *err_reason;
    bool started;     /* at least one byte of this request consumed */
    size_t head_raw;  /* raw bytes consumed while in ST_HEAD */
    char *raw;        /* copy of the raw head bytes (max_head_bytes), to check the request line strictly */
    size_t raw_avail; /* bytes of raw[] valid during the current execute() */
    enum req_last_cb last_cb;
    bool string_open; /* the last string in head[] is not terminated yet */
    char *head;       /* target, names and values, NUL-terminated */
    size_t head_len;
    size_t head_cap;
    size_t target_len;
    struct hdr_off *hdr_offs; /* limits.max_headers + 1 entries */
    size_t n_headers;
    struct mgmt_request_header *headers;
    char *decoded; /* decoded path and params */
    size_t decoded_cap;
    struct mgmt_request_param params[MGMT_HTTP_MAX_PARAMS];
    uint8_t *body;
    size_t body_len;
    size_t body_cap;
    struct mgmt_request req;
};

#define BODY_KEEP_BYTES (64u * 1024u) /* body buffers up to this size are reused across requests */

static const uint8_t empty_body[1];

/* ------------------------------------------------------------------------------------------------------------------
 * Helpers
 */

static int request_fail(struct mgmt_http_request *p, int status, const char *reason)
{
    if (p->state != ST_ERROR) {
        p->state = ST_ERROR;
        p->err_status = status;
        p->err_reason = reason;
    }
    return -1;
}

static int head_append(struct mgmt_http_request *p, const char *at, size_t len)
{
    if (len > p->head_cap - p->head_len)
        return request_fail(p, 431, "request head too large");
    memcpy(p->head + p->head_len, at, len);
    p->head_len += len;
    p->string_open = true;
    return 0;
}

static int head_terminate(struct mgmt_http_request *p)
{
    if (!p->string_open)
        return 0;
    if (p->head_len >= p->head_cap)
        return request_fail(p, 431, "request head too large");
    p->head[p->head_len++] = '\0';
    p->string_open = false;
    return 0;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decode src[0..len) to out (which has room for len + 1 bytes) and NUL-terminate it.
 * @return the decoded length, or -EINVAL for a bad escape or an encoded NUL.
 */
static ssize_t request_decode(const char *src, size_t len, bool plus_is_space, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (len - i < 3)
                return -EINVAL;
            int hi = hex_value((unsigned char)src[i + 1]);
            int lo = hex_value((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return -EINVAL;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return (ssize_t)o;
}

/* ------------------------------------------------------------------------------------------------------------------
 * http-parser callbacks
 */

static int on_message_begin(http_parser *hp)
{
    struct mgmt_http_request *p = hp->data;
    p->started = true;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct mgmt_http_request *p = hp->data;
    if (memchr(at, '\0', len) != NULL)
        return request_fail(p, 400, "NUL byte in request target");
    if (len > p->limits.max_head_bytes - p->target_len)
        return request_fail(p, 414, "request target too long");
    p->last_cb = CB_URL;
    p->target_len += len;
    return head_append(p, at, len);
}

/* RFC 9110, section 5.6.2: tchar. http-parser without strict mode lets a space through. */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct mgmt_http_request *p = hp->data;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return request_fail(p, 400, "invalid character in header name");
    if (p->last_cb != CB_FIELD) {
        if (head_terminate(p) != 0)
            return -1;
        if (p->n_headers >= p->limits.max_headers)
            return request_fail(p, 431, "too many headers");
        p->hdr_offs[p->n_headers].name = p->head_len;
        p->hdr_offs[p->n_headers].value = SIZE_MAX;
        p->n_headers++;
        p->last_cb = CB_FIELD;
    }
    return head_append(p, at, len);
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct mgmt_http_request *p = hp->data;
    if (memchr(at, '\0', len) != NULL)
        return request_fail(p, 400, "NUL byte in header");
    if (p->last_cb != CB_VALUE) {
        if (head_terminate(p) != 0)
            return -1;
        p->hdr_offs[p->n_headers - 1].value = p->head_len;
        p->last_cb = CB_VALUE;
        /* An empty value still needs its own (empty) string. */
        p->string_open = true;
    }
    return head_append(p, at, len);
}

/* Split the raw query into decoded params, writing strings at *out. */
static int request_parse_query(struct mgmt_http_request *p, const char *q, size_t qlen, char **out)
{
    size_t i = 0;
    while (i <= qlen && qlen > 0) {
        size_t end = i;
        while (end < qlen && q[end] != '&' && q[end] != ';')
            end++;
        if (end > i) {
            if (p->req.n_params >= MGMT_HTTP_MAX_PARAMS)
                return request_fail(p, 400, "too many query parameters");
            const char *eq = memchr(q + i, '=', end - i);
            size_t klen = eq != NULL ? (size_t)(eq - (q + i)) : end - i;
            struct mgmt_request_param *prm = &p->params[p->req.n_params++];
            ssize_t n = request_decode(q + i, klen, true, *out);
            if (n < 0)
                return request_fail(p, 400, "bad percent-encoding in query");
            prm->key = *out;
            *out += n + 1;
            if (eq != NULL) {
                n = request_decode(eq + 1, end - i - klen - 1, true, *out);
                if (n < 0)
                    return request_fail(p, 400, "bad percent-encoding in query");
            } else {
                **out = '\0';
                n = 0;
            }
            prm->value = *out;
            *out += n + 1;
        }
        i = end + 1;
    }
    return 0;
}

static int request_parse_target(struct mgmt_http_request *p)
{
    const char *target = p->head; /* the target is the first string */
    size_t len = p->target_len;
    struct http_parser_url u;

    http_parser_url_init(&u);
    if (len == 0 || http_parser_parse_url(target, len, p->parser.method == HTTP_CONNECT, &u) != 0)
        return request_fail(p, 400, "malformed request target");

    /* Decoded strings take at most 2 bytes per raw byte ("a&b" -> "a\0\0b\0\0") plus the path and its NUL. */
    size_t need = 2 * len + 4;
    if (need > p->decoded_cap) {
        char *d = realloc(p->decoded, need);
        if (d == NULL)
            return request_fail(p, 500, "out of memory");
        p->decoded = d;
        p->decoded_cap = need;
    }
    char *out = p->decoded;

    p->req.path = out;
    if (u.field_set & (1u << UF_PATH)) {
        ssize_t n = request_decode(target + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len, false, out);
        if (n < 0)
            return request_fail(p, 400, "bad percent-encoding in path");
        out += n + 1;
    } else {
        *out++ = '/';
        *out++ = '\0';
    }

    p->req.query = "";
    if (u.field_set & (1u << UF_QUERY)) {
        /* The raw query is terminated in place: it is the tail of the target, or is followed by '#'. */
        char *q = p->head + u.field_data[UF_QUERY].off;
        size_t qlen = u.field_data[UF_QUERY].len;
        if (request_parse_query(p, q, qlen, &out) != 0)
            return -1;
        p->req.query = q;
    }
    return 0;
}

static void request_pick_headers(struct mgmt_http_request *p)
{
    struct mgmt_request *r = &p->req;
    for (size_t i = 0; i < p->n_headers; i++) {
        struct mgmt_request_header *h = &p->headers[i];
        h->name = p->head + p->hdr_offs[i].name;
        h->value = p->hdr_offs[i].value == SIZE_MAX ? "" : p->head + p->hdr_offs[i].value;
        const char **slot = NULL;
        if (strcasecmp(h->name, "Host") == 0)
            slot = &r->host;
        else if (strcasecmp(h->name, "Accept") == 0)
            slot = &r->accept;
        else if (strcasecmp(h->name, "Content-Type") == 0)
            slot = &r->content_type;
        else if (strcasecmp(h->name, "Connection") == 0)
            slot = &r->connection;
        if (slot != NULL && *slot == NULL)
            *slot = h->value;
    }
    r->headers = p->headers;
    r->n_headers = p->n_headers;
}

/*
 * http-parser built without strict mode accepts any letters in place of "HTTP": require the request line to end in
 * exactly " HTTP/<digit>.<digit>" (RFC 9112, section 2.3).
 */
static bool request_check_version_token(const struct mgmt_http_request *p)
{
    const char *s = p->raw;
    const char *end = p->raw + p->raw_avail;
    while (s < end && (*s == '\r' || *s == '\n'))
        s++;
    const char *eol = memchr(s, '\n', (size_t)(end - s));
    if (eol == NULL)
        return false;
    if (eol > s && eol[-1] == '\r')
        eol--;
    return eol - s >= 9 && memcmp(eol - 9, " HTTP/", 6) == 0 && isdigit((unsigned char)eol[-3]) && eol[-2] == '.' &&
           isdigit((unsigned char)eol[-1]);
}

static int on_headers_complete(http_parser *hp)
{
    struct mgmt_http_request *p = hp->data;
    struct mgmt_request *r = &p->req;

    if (head_terminate(p) != 0)
        return -1;
    if (!request_check_version_token(p))
        return request_fail(p, 400, "invalid HTTP version");
    if (hp->http_major != 1)
        return request_fail(p, 505, "HTTP version not supported");

    r->method = http_method_str((enum http_method)hp->method);
    r->http_major = hp->http_major;
    r->http_minor = hp->http_minor;
    r->target = p->head;

    if (request_parse_target(p) != 0)
        return -1;
    /* A "#fragment" is cut off, so that the target and the raw query end where the query ends. */
    char *hash = memchr(p->head, '#', p->target_len);
    if (hash != NULL)
        *hash = '\0';
    request_pick_headers(p);

    r->content_length = -1;
    if (hp->flags & F_CONTENTLENGTH) {
        if (hp->content_length > p->limits.max_body_bytes)
            return request_fail(p, 413, "request body too large");
        r->content_length = (int64_t)hp->content_length;
        size_t need = (size_t)hp->content_length + 1;
        if (need > p->body_cap) {
            uint8_t *b = realloc(p->body, need);
            if (b == NULL)
                return request_fail(p, 500, "out of memory");
            p->body = b;
            p->body_cap = need;
        }
    }
    p->state = ST_BODY;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct mgmt_http_request *p = hp->data;
    if (len > p->limits.max_body_bytes - p->body_len)
        return request_fail(p, 413, "request body too large");
    if (p->body_len + len + 1 > p->body_cap) {
        size_t cap = p->body_cap < 1024 ? 1024 : p->body_cap;
        while (cap < p->body_len + len + 1)
            cap *= 2;
        if (cap > p->limits.max_body_bytes + 1)
            cap = p->limits.max_body_bytes + 1;
        uint8_t *b = realloc(p->body, cap);
        if (b == NULL)
            return request_fail(p, 500, "out of memory");
        p->body = b;
        p->body_cap = cap;
    }
    memcpy(p->body + p->body_len, at, len);
    p->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct mgmt_http_request *p = hp->data;
    struct mgmt_request *r = &p->req;

    if (p->body_len > 0) {
        p->body[p->body_len] = '\0';
        r->body = p->body;
    } else {
        r->body = empty_body;
    }
    r->body_len = p->body_len;
    r->keep_alive = http_should_keep_alive(hp) != 0 && hp->method != HTTP_CONNECT && !hp->upgrade;
    r->params = p->params;
    p->state = ST_COMPLETE;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings request_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------------------------------------------------------------
 * Public API
 */

struct mgmt_http_request *mgmt_http_request_new(const struct mgmt_http_limits *limits, const char **err)
{
    struct mgmt_http_request *p = calloc(1, sizeof(*p));
    if (p == NULL)
        goto oom;
    p->limits.max_head_bytes = MGMT_HTTP_MAX_HEAD_BYTES;
    p->limits.max_body_bytes = MGMT_HTTP_MAX_BODY_BYTES;
    p->limits.max_headers = MGMT_HTTP_MAX_HEADERS;
    if (limits != NULL) {
        if (limits->max_head_bytes != 0)
            p->limits.max_head_bytes = limits->max_head_bytes;
        if (limits->max_body_bytes != 0)
            p->limits.max_body_bytes = limits->max_body_bytes;
        if (limits->max_headers != 0)
            p->limits.max_headers = limits->max_headers;
    }
    p->head_cap = p->limits.max_head_bytes + 2 * (p->limits.max_headers + 2);
    p->head = malloc(p->head_cap);
    p->raw = malloc(p->limits.max_head_bytes);
    p->hdr_offs = calloc(p->limits.max_headers + 1, sizeof(*p->hdr_offs));
    p->headers = calloc(p->limits.max_headers + 1, sizeof(*p->headers));
    if (p->head == NULL || p->raw == NULL || p->hdr_offs == NULL || p->headers == NULL)
        goto oom;
    mgmt_http_request_reset(p);
    return p;
oom:
    mgmt_http_request_free(p);
    if (err != NULL)
        *err = "out of memory";
    return NULL;
}

void mgmt_http_request_free(struct mgmt_http_request *p)
{
    if (p == NULL)
        return;
    free(p->head);
    free(p->raw);
    free(p->hdr_offs);
    free(p->headers);
    free(p->decoded);
    free(p->body);
    free(p);
}

void mgmt_http_request_reset(struct mgmt_http_request *p)
{
    http_parser_init(&p->parser, HTTP_REQUEST);
    p->parser.data = p;
    p->state = ST_HEAD;
    p->err_status = 0;
    p->err_reason = "";
    p->started = false;
    p->head_raw = 0;
    p->last_cb = CB_NONE;
    p->string_open = false;
    p->head_len = 0;
    p->target_len = 0;
    p->n_headers = 0;
    p->body_len = 0;
    if (p->body_cap > BODY_KEEP_BYTES) {
        free(p->body);
        p->body = NULL;
        p->body_cap = 0;
    }
    memset(&p->req, 0, sizeof(p->req));
    p->req.method = "";
    p->req.target = "";
    p->req.path = "/";
    p->req.query = "";
    p->req.body = empty_body;
    p->req.content_length = -1;
}

static int status_from_errno(enum http_errno e, const char **reason)
{
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        *reason = "request head too large";
        return 431;
    case HPE_INVALID_TRANSFER_ENCODING:
        *reason = "unsupported transfer-encoding";
        return 501;
    case HPE_INVALID_VERSION:
        *reason = "invalid HTTP version";
        return 400;
    case HPE_INVALID_METHOD:
        *reason = "invalid method";
        return 400;
    case HPE_INVALID_URL:
    case HPE_INVALID_PATH:
    case HPE_INVALID_QUERY_STRING:
    case HPE_INVALID_FRAGMENT:
    case HPE_INVALID_HOST:
    case HPE_INVALID_PORT:
        *reason = "malformed request target";
        return 400;
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        *reason = "invalid Content-Length";
        return 400;
    case HPE_INVALID_CHUNK_SIZE:
        *reason = "invalid chunk size";
        return 400;
    default:
        *reason = "malformed request";
        return 400;
    }
}

enum mgmt_http_result mgmt_http_request_feed(struct mgmt_http_request *p, const void *data, size_t len,
                                             size_t *consumed)
{
    const char *d = data;
    size_t off = 0;

    *consumed = 0;
    if (p->state == ST_COMPLETE)
        return MGMT_HTTP_COMPLETE;
    if (p->state == ST_ERROR)
        return MGMT_HTTP_ERROR;

    while (off < len) {
        size_t n = len - off;
        bool in_head = p->state == ST_HEAD;
        if (in_head) {
            size_t room = p->limits.max_head_bytes - p->head_raw;
            if (room == 0)
                break;
            if (n > room)
                n = room;
            memcpy(p->raw + p->head_raw, d + off, n);
            p->raw_avail = p->head_raw + n;
        }
        size_t used = http_parser_execute(&p->parser, &request_settings, d + off, n);
        off += used;
        if (in_head)
            p->head_raw += used;
        if (used > 0)
            p->started = true;

        if (p->state == ST_ERROR) {
            *consumed = off;
            return MGMT_HTTP_ERROR;
        }
        if (p->state == ST_COMPLETE) {
            *consumed = off;
            return MGMT_HTTP_COMPLETE;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&p->parser);
        if (e != HPE_OK) {
            const char *reason;
            int status = status_from_errno(e, &reason);
            request_fail(p, status, reason);
            *consumed = off;
            return MGMT_HTTP_ERROR;
        }
        if (used < n) {
            /* http-parser stops early only for errors or upgrades; neither may be ignored here. */
            request_fail(p, 400, "malformed request");
            *consumed = off;
            return MGMT_HTTP_ERROR;
        }
    }
    *consumed = off;
    if (p->state == ST_HEAD && p->head_raw >= p->limits.max_head_bytes) {
        if (p->last_cb == CB_NONE || p->last_cb == CB_URL)
            request_fail(p, 414, "request target too long");
        else
            request_fail(p, 431, "request head too large");
        return MGMT_HTTP_ERROR;
    }
    return MGMT_HTTP_NEED_MORE;
}

const struct mgmt_request *mgmt_http_request_get(const struct mgmt_http_request *p)
{
    return p->state == ST_COMPLETE ? &p->req : NULL;
}

int mgmt_http_request_error_status(const struct mgmt_http_request *p)
{
    return p->state == ST_ERROR ? p->err_status : 0;
}

const char *mgmt_http_request_error_reason(const struct mgmt_http_request *p)
{
    return p->state == ST_ERROR ? p->err_reason : "";
}

bool mgmt_http_request_is_partial(const struct mgmt_http_request *p)
{
    return p->started && (p->state == ST_HEAD || p->state == ST_BODY);
}

const char *mgmt_request_query_get(const struct mgmt_request *req, const char *key)
{
    for (size_t i = 0; i < req->n_params; i++)
        if (strcmp(req->params[i].key, key) == 0)
            return req->params[i].value;
    return NULL;
}

const char *mgmt_request_header_get(const struct mgmt_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

bool mgmt_request_accepts(const struct mgmt_request *req, const char *media_type)
{
    size_t mlen = strlen(media_type);
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, "Accept") != 0)
            continue;
        const char *s = req->headers[i].value;
        while (*s != '\0') {
            while (*s == ' ' || *s == '\t' || *s == ',')
                s++;
            const char *start = s;
            while (*s != '\0' && *s != ',' && *s != ';' && *s != ' ' && *s != '\t')
                s++;
            if ((size_t)(s - start) == mlen && strncasecmp(start, media_type, mlen) == 0)
                return true;
            while (*s != '\0' && *s != ',')
                s++;
        }
    }
    return false;
}
