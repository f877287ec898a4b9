/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/xds_conn.c - gRPC channel to istiod over nghttp2 and server-only TLS (invariants in xds_conn.h;
 * ztunnel-wire-facts.md sections 3.1 and 3.6). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "mesh/h2.h"
#include "mesh/xds_conn.h"

#define XC_LOG_MODULE "mesh.xds_conn"
#define XC_READ_CHUNK_BYTES 16384
#define XC_FLUSH_HEADROOM_BYTES (64u * 1024)
#define XC_MAX_HEADERS 32
#define XC_USER_AGENT "zwire/" ZW_VERSION_STR
#define NS_PER_S 1000000000ull
#ifdef ZW_VERSION
#define ZW_VERSION_STR ZW_VERSION
#else
#define ZW_VERSION_STR "dev"
#endif

static const unsigned char xc_alpn_h2[] = {2, 'h', '2'};

struct xc_call {
    struct xc_call *next;
    struct mesh_xds_conn *conn;
    int32_t sid;
    struct mesh_xds_call_cb cb;
    void *u;
    struct mesh_buf tx; /* framed messages not yet taken by nghttp2 */
    bool tx_end;        /* END_STREAM after tx drains */
    bool tx_deferred;   /* the data provider returned DEFERRED */
    struct mesh_grpc_deframer rx;
    struct mesh_grpc_status st;
    struct mesh_grpc_status local; /* set when we end the call ourselves */
    int http_status;
    bool bad_content_type;
    uint64_t deadline_ns; /* MESH_XDS_CONN_NO_DEADLINE when none */
    bool is_ads;
};

struct mesh_xds_conn {
    const struct mesh_env *env;
    /* configuration copies */
    char *authority;
    char *cluster_id;
    struct mesh_grpc_md *headers;
    size_t n_headers;
    size_t max_message_bytes;
    uint64_t ping_interval_ns, ping_timeout_ns;
    /* TLS */
    SSL_CTX *ssl_ctx;
    SSL *ssl;
    BIO *rbio;    /* ciphertext from the peer, owned by ssl */
    BIO *wbio;    /* ciphertext to the peer, owned by ssl */
    bool started; /* the ClientHello was produced */
    bool established;
    uint64_t handshake_deadline_ns;
    /* HTTP/2 */
    nghttp2_session *s;
    bool goaway_recv;
    uint64_t next_ping_ns;
    uint64_t ping_deadline_ns;
    bool ping_outstanding;
    struct xc_call *calls;
    size_t n_calls;
    int err;
    int cb_err; /* reason parked by an nghttp2 callback */
    bool closed;
    /* the attached ADS stream */
    struct mesh_xds_client *ads;
    int32_t ads_sid;
    struct mesh_buf ads_scratch;
    struct mesh_xds_conn_stats stats;
};

static void xc_call_finish(struct mesh_xds_conn *c, struct xc_call *call, const struct mesh_grpc_status *st,
                           bool connection_error);
static void xc_ads_pump(struct mesh_xds_conn *c);

/* ====================================================================================================== */
/* helpers                                                                                                */
/* ====================================================================================================== */

static char *xc_strdup(const struct mesh_env *env, const char *s)
{
    size_t n = strlen(s != NULL ? s : "") + 1;
    char *p = mesh_env_alloc(env, n);

    if (p != NULL)
        memcpy(p, s != NULL ? s : "", n);
    return p;
}

static struct xc_call *xc_call_find(const struct mesh_xds_conn *c, int32_t sid)
{
    for (struct xc_call *k = c->calls; k != NULL; k = k->next)
        if (k->sid == sid)
            return k;
    return NULL;
}

/* Fail the channel once: every live call ends with connection_error. */
static int xc_fail(struct mesh_xds_conn *c, int err)
{
    struct mesh_grpc_status st;

    if (c->err != MESH_OK)
        return c->err;
    c->err = err;
    MESH_LOG(c->env, MESH_LOG_WARNING, XC_LOG_MODULE, "channel failed: %s", mesh_err_str(err));
    if (c->s != NULL && c->established)
        (void)nghttp2_session_terminate_session(c->s, NGHTTP2_INTERNAL_ERROR);
    mesh_grpc_status_init(&st);
    mesh_grpc_status_set(&st, MESH_GRPC_UNAVAILABLE, mesh_err_str(err));
    while (c->calls != NULL)
        xc_call_finish(c, c->calls, &st, true);
    return err;
}

/* ====================================================================================================== */
/* TLS (server-only)                                                                                      */
/* ====================================================================================================== */

static bool xc_is_ip_literal(const char *s)
{
    ASN1_OCTET_STRING *a = a2i_IPADDRESS(s);

    if (a == NULL) {
        ERR_clear_error();
        return false;
    }
    ASN1_OCTET_STRING_free(a);
    return true;
}

static int xc_load_roots(SSL_CTX *ctx, const char *pem, size_t len)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    int n = 0;

    if (bio == NULL)
        return MESH_ERR_NOMEM;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(store, x))
            n++;
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    return n > 0 ? MESH_OK : MESH_ERR_CONFIG;
}

static int xc_tls_init(struct mesh_xds_conn *c, const struct mesh_xds_conn_cfg *cfg)
{
    X509_VERIFY_PARAM *param;
    int rc;

    c->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (c->ssl_ctx == NULL)
        return MESH_ERR_TLS_LIBRARY;
    if (!SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION) ||
        SSL_CTX_set_alpn_protos(c->ssl_ctx, xc_alpn_h2, sizeof(xc_alpn_h2)) != 0)
        return MESH_ERR_TLS_LIBRARY;
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(c->ssl_ctx, SSL_SESS_CACHE_OFF);
    if (cfg->use_system_roots) {
        if (!SSL_CTX_set_default_verify_paths(c->ssl_ctx))
            return MESH_ERR_CONFIG;
    } else {
        if (cfg->roots_pem == NULL || cfg->roots_len == 0)
            return MESH_ERR_CONFIG;
        rc = xc_load_roots(c->ssl_ctx, cfg->roots_pem, cfg->roots_len);
        if (rc != MESH_OK)
            return rc;
    }
    c->ssl = SSL_new(c->ssl_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        return MESH_ERR_TLS_LIBRARY;
    }
    BIO_set_mem_eof_return(c->rbio, -1); /* empty means "retry", not EOF */
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);

    param = SSL_get0_param(c->ssl);
    X509_VERIFY_PARAM_set_time(param, (time_t)(mesh_env_now(c->env) / NS_PER_S));
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (xc_is_ip_literal(cfg->server_name)) {
        if (!X509_VERIFY_PARAM_set1_ip_asc(param, cfg->server_name))
            return MESH_ERR_CONFIG;
    } else {
        if (!X509_VERIFY_PARAM_set1_host(param, cfg->server_name, 0) ||
            !SSL_set_tlsext_host_name(c->ssl, cfg->server_name))
            return MESH_ERR_CONFIG;
    }
    if (cfg->alt_server_name != NULL && cfg->alt_server_name[0] != '\0' && !xc_is_ip_literal(cfg->alt_server_name) &&
        !X509_VERIFY_PARAM_add1_host(param, cfg->alt_server_name, 0))
        return MESH_ERR_CONFIG;
    return MESH_OK;
}

static int xc_map_verify(long v)
{
    switch (v) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return MESH_ERR_TLS_CERT_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return MESH_ERR_TLS_CERT_NOT_YET_VALID;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return MESH_ERR_TLS_IDENTITY;
    default:
        return MESH_ERR_TLS_CERT_UNTRUSTED;
    }
}

/* Map a failed SSL_* call. Returns MESH_OK for "wants more input". */
static int xc_tls_error(struct mesh_xds_conn *c, int ret)
{
    int e = SSL_get_error(c->ssl, ret);
    long v;

    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return MESH_OK;
    case SSL_ERROR_ZERO_RETURN:
        return MESH_ERR_TLS_CLOSED;
    case SSL_ERROR_SSL:
        v = SSL_get_verify_result(c->ssl);
        ERR_clear_error();
        if (v != X509_V_OK)
            return xc_map_verify(v);
        return c->established ? MESH_ERR_TLS_PROTOCOL : MESH_ERR_TLS_HANDSHAKE;
    default:
        ERR_clear_error();
        return MESH_ERR_TLS_PROTOCOL;
    }
}

/* Move everything OpenSSL wrote into wire_out. */
static int xc_drain_wbio(struct mesh_xds_conn *c, struct mesh_buf *wire_out)
{
    size_t pending;

    while ((pending = BIO_ctrl_pending(c->wbio)) != 0) {
        uint8_t *p;
        int n, rc = mesh_buf_reserve(wire_out, pending, &p);
        if (rc != 0)
            return rc == -ENOMEM ? MESH_ERR_NOMEM : MESH_ERR_BUF_FULL;
        n = BIO_read(c->wbio, p, (int)pending);
        if (n <= 0)
            break;
        mesh_buf_commit(wire_out, (size_t)n);
    }
    return MESH_OK;
}

static int xc_handshake(struct mesh_xds_conn *c)
{
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    int ret;

    if (c->established)
        return MESH_OK;
    ret = SSL_do_handshake(c->ssl);
    if (ret != 1)
        return xc_tls_error(c, ret);
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0)
        return MESH_ERR_TLS_ALPN;
    c->established = true;
    c->next_ping_ns = mesh_env_now(c->env) + c->ping_interval_ns;
    MESH_LOG(c->env, MESH_LOG_INFO, XC_LOG_MODULE, "connected to %s (%s, %s)", c->authority, SSL_get_version(c->ssl),
             SSL_get_cipher_name(c->ssl));
    return MESH_OK;
}

/* ====================================================================================================== */
/* calls                                                                                                  */
/* ====================================================================================================== */

static void xc_call_free(struct mesh_xds_conn *c, struct xc_call *call)
{
    mesh_buf_fini(&call->tx);
    mesh_grpc_deframer_fini(&call->rx);
    mesh_env_free(c->env, call);
}

static void xc_call_unlink(struct mesh_xds_conn *c, struct xc_call *call)
{
    for (struct xc_call **pp = &c->calls; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == call) {
            *pp = call->next;
            c->n_calls--;
            return;
        }
    }
}

/* Deliver the final status and forget the call. */
static void xc_call_finish(struct mesh_xds_conn *c, struct xc_call *call, const struct mesh_grpc_status *st,
                           bool connection_error)
{
    xc_call_unlink(c, call);
    if (c->s != NULL)
        (void)nghttp2_session_set_stream_user_data(c->s, call->sid, NULL);
    c->stats.calls_closed++;
    if (call->is_ads) {
        struct mesh_xds_client *xc = c->ads;
        c->ads = NULL;
        c->ads_sid = 0;
        if (xc != NULL)
            (void)mesh_xds_client_stream_end(xc, st, connection_error);
    } else if (call->cb.on_close != NULL) {
        call->cb.on_close(call->u, call->sid, st, connection_error);
    }
    xc_call_free(c, call);
}

/* End a call from our side with a local status: RST_STREAM(CANCEL) and the upcall now. */
static void xc_call_abort(struct mesh_xds_conn *c, struct xc_call *call, int code, const char *message)
{
    struct mesh_grpc_status st;

    if (c->s != NULL)
        (void)nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, call->sid, NGHTTP2_CANCEL);
    mesh_grpc_status_init(&st);
    mesh_grpc_status_set(&st, code, message);
    xc_call_finish(c, call, &st, false);
}

static ssize_t xc_data_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *ud)
{
    struct xc_call *call = src->ptr;
    size_t n;

    (void)s;
    (void)sid;
    (void)ud;
    n = mesh_buf_len(&call->tx) < length ? mesh_buf_len(&call->tx) : length;
    if (n != 0) {
        memcpy(buf, mesh_buf_data(&call->tx), n);
        mesh_buf_consume(&call->tx, n);
    }
    if (mesh_buf_len(&call->tx) == 0) {
        if (call->tx_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
            call->tx_deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static void xc_nv(nghttp2_nv *nv, const char *name, const char *value, uint8_t flags)
{
    nv->name = (uint8_t *)(uintptr_t)name;
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)(uintptr_t)value;
    nv->valuelen = strlen(value);
    nv->flags = flags;
}

/* grpc-timeout: at most 8 digits, in the finest unit that fits. */
static void xc_format_timeout(char *out, size_t cap, uint64_t ns)
{
    static const struct {
        uint64_t div;
        char unit;
    } units[] = {{1, 'n'}, {1000, 'u'}, {1000000, 'm'}, {NS_PER_S, 'S'}, {60 * NS_PER_S, 'M'}, {3600 * NS_PER_S, 'H'}};

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        uint64_t v = (ns + units[i].div - 1) / units[i].div;
        if (v < 100000000ull || i + 1 == sizeof(units) / sizeof(units[0])) {
            snprintf(out, cap, "%llu%c", (unsigned long long)(v < 100000000ull ? v : 99999999ull), units[i].unit);
            return;
        }
    }
}

static int xc_open(struct mesh_xds_conn *c, const char *path, const char *token, uint64_t timeout_ns,
                   const struct mesh_xds_call_cb *cb, void *u, bool is_ads, struct xc_call **out)
{
    nghttp2_nv nva[XC_MAX_HEADERS];
    nghttp2_data_provider prd;
    struct xc_call *call;
    char *auth = NULL;
    char tmo[24];
    size_t n = 0;
    int32_t sid;

    if (c->err != MESH_OK || c->goaway_recv || c->closed)
        return MESH_ERR_STATE;
    call = mesh_env_calloc(c->env, sizeof(*call));
    if (call == NULL)
        return MESH_ERR_NOMEM;
    call->conn = c;
    if (cb != NULL)
        call->cb = *cb;
    call->u = u;
    call->is_ads = is_ads;
    call->deadline_ns = timeout_ns != 0 ? mesh_env_now(c->env) + timeout_ns : MESH_XDS_CONN_NO_DEADLINE;
    mesh_buf_init(&call->tx, c->env, c->max_message_bytes + MESH_GRPC_HEADER_BYTES);
    mesh_grpc_deframer_init(&call->rx, c->env, c->max_message_bytes);
    mesh_grpc_status_init(&call->st);

    xc_nv(&nva[n++], ":method", "POST", NGHTTP2_NV_FLAG_NONE);
    xc_nv(&nva[n++], ":scheme", "https", NGHTTP2_NV_FLAG_NONE);
    xc_nv(&nva[n++], ":path", path, NGHTTP2_NV_FLAG_NONE);
    xc_nv(&nva[n++], ":authority", c->authority, NGHTTP2_NV_FLAG_NONE);
    xc_nv(&nva[n++], "content-type", "application/grpc", NGHTTP2_NV_FLAG_NONE);
    xc_nv(&nva[n++], "te", "trailers", NGHTTP2_NV_FLAG_NONE);
    xc_nv(&nva[n++], "user-agent", XC_USER_AGENT, NGHTTP2_NV_FLAG_NONE);
    if (token != NULL && token[0] != '\0') {
        size_t tl = strlen(token);
        auth = mesh_env_alloc(c->env, tl + sizeof("Bearer "));
        if (auth == NULL) {
            xc_call_free(c, call);
            return MESH_ERR_NOMEM;
        }
        memcpy(auth, "Bearer ", 7);
        memcpy(auth + 7, token, tl + 1);
        xc_nv(&nva[n++], "authorization", auth, NGHTTP2_NV_FLAG_NO_INDEX);
    }
    xc_nv(&nva[n++], "clusterid", c->cluster_id, NGHTTP2_NV_FLAG_NONE);
    if (timeout_ns != 0) {
        xc_format_timeout(tmo, sizeof(tmo), timeout_ns);
        xc_nv(&nva[n++], "grpc-timeout", tmo, NGHTTP2_NV_FLAG_NONE);
    }
    for (size_t i = 0; i < c->n_headers && n < XC_MAX_HEADERS; i++)
        xc_nv(&nva[n++], c->headers[i].name, c->headers[i].value, NGHTTP2_NV_FLAG_NONE);

    prd.source.ptr = call;
    prd.read_callback = xc_data_read;
    sid = nghttp2_submit_request(c->s, NULL, nva, n, &prd, call);
    mesh_env_free(c->env, auth); /* nghttp2 copied the header block */
    if (sid < 0) {
        xc_call_free(c, call);
        return mesh_h2_err(sid) == MESH_ERR_NOMEM ? MESH_ERR_NOMEM : MESH_ERR_H2_PROTOCOL;
    }
    call->sid = sid;
    call->next = c->calls;
    c->calls = call;
    c->n_calls++;
    c->stats.calls_opened++;
    *out = call;
    return MESH_OK;
}

int mesh_xds_conn_call_open(struct mesh_xds_conn *c, const char *path, const char *token, uint64_t timeout_ns,
                            const struct mesh_xds_call_cb *cb, void *u, int32_t *call)
{
    struct xc_call *k;
    int rc = xc_open(c, path, token, timeout_ns, cb, u, false, &k);

    if (rc == MESH_OK)
        *call = k->sid;
    return rc;
}

static int xc_send(struct mesh_xds_conn *c, struct xc_call *call, const uint8_t *msg, size_t len)
{
    int rc;

    if (call->tx_end)
        return MESH_ERR_STATE;
    if (len > c->max_message_bytes)
        return MESH_ERR_BUF_FULL;
    rc = mesh_grpc_frame_append(&call->tx, msg, len);
    if (rc != 0)
        return rc == -ENOMEM ? MESH_ERR_NOMEM : MESH_ERR_BUF_FULL;
    c->stats.messages_sent++;
    if (call->tx_deferred) {
        call->tx_deferred = false;
        (void)nghttp2_session_resume_data(c->s, call->sid);
    }
    return MESH_OK;
}

int mesh_xds_conn_call_send(struct mesh_xds_conn *c, int32_t call, const uint8_t *msg, size_t len)
{
    struct xc_call *k = xc_call_find(c, call);

    return k != NULL && !k->is_ads ? xc_send(c, k, msg, len) : MESH_ERR_STATE;
}

int mesh_xds_conn_call_close_send(struct mesh_xds_conn *c, int32_t call)
{
    struct xc_call *k = xc_call_find(c, call);

    if (k == NULL || k->tx_end)
        return MESH_ERR_STATE;
    k->tx_end = true;
    if (k->tx_deferred) {
        k->tx_deferred = false;
        (void)nghttp2_session_resume_data(c->s, k->sid);
    }
    return MESH_OK;
}

int mesh_xds_conn_call_cancel(struct mesh_xds_conn *c, int32_t call)
{
    struct xc_call *k = xc_call_find(c, call);

    if (k == NULL)
        return MESH_ERR_STATE;
    xc_call_abort(c, k, MESH_GRPC_CANCELLED, "cancelled by the client");
    return MESH_OK;
}

int mesh_xds_conn_unary(struct mesh_xds_conn *c, const char *path, const char *token, const uint8_t *msg, size_t len,
                        uint64_t timeout_ns, const struct mesh_xds_call_cb *cb, void *u, int32_t *call)
{
    struct xc_call *k;
    int rc = xc_open(c, path, token, timeout_ns, cb, u, false, &k);

    if (rc != MESH_OK)
        return rc;
    rc = xc_send(c, k, msg, len);
    if (rc == MESH_OK)
        k->tx_end = true;
    if (rc != MESH_OK) {
        (void)nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, k->sid, NGHTTP2_CANCEL);
        (void)nghttp2_session_set_stream_user_data(c->s, k->sid, NULL);
        xc_call_unlink(c, k);
        xc_call_free(c, k);
        return rc;
    }
    *call = k->sid;
    return MESH_OK;
}

/* ====================================================================================================== */
/* ADS stream                                                                                             */
/* ====================================================================================================== */

/* Move the client's queued requests onto the stream. */
static void xc_ads_pump(struct mesh_xds_conn *c)
{
    struct xc_call *call;

    if (c->ads == NULL || (call = xc_call_find(c, c->ads_sid)) == NULL)
        return;
    for (;;) {
        int rc;
        mesh_buf_reset(&c->ads_scratch);
        rc = mesh_xds_client_next_request(c->ads, &c->ads_scratch);
        if (rc == 0)
            return;
        if (rc < 0 || xc_send(c, call, mesh_buf_data(&c->ads_scratch), mesh_buf_len(&c->ads_scratch)) != MESH_OK) {
            xc_call_abort(c, call, MESH_GRPC_INTERNAL, "cannot queue a DeltaDiscoveryRequest");
            return;
        }
    }
}

static int xc_ads_on_message(struct mesh_xds_conn *c, struct xc_call *call, const uint8_t *msg, size_t len)
{
    int rc = mesh_xds_client_on_response(c->ads, msg, len);

    if (rc == -EBADMSG) {
        xc_call_abort(c, call, MESH_GRPC_INTERNAL, "undecodable DeltaDiscoveryResponse");
        return -1;
    }
    if (rc != MESH_OK) {
        xc_call_abort(c, call, MESH_GRPC_INTERNAL, "cannot process DeltaDiscoveryResponse");
        return -1;
    }
    xc_ads_pump(c);
    return 0;
}

int mesh_xds_conn_ads_open(struct mesh_xds_conn *c, struct mesh_xds_client *xc, const char *token)
{
    struct xc_call *call;
    int rc;

    if (c->ads != NULL)
        return MESH_ERR_STATE;
    rc = xc_open(c, MESH_XDS_ADS_PATH, token, 0, NULL, NULL, true, &call);
    if (rc != MESH_OK)
        return rc;
    rc = mesh_xds_client_stream_start(xc);
    if (rc != MESH_OK) {
        (void)nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, call->sid, NGHTTP2_CANCEL);
        (void)nghttp2_session_set_stream_user_data(c->s, call->sid, NULL);
        xc_call_unlink(c, call);
        xc_call_free(c, call);
        return rc;
    }
    c->ads = xc;
    c->ads_sid = call->sid;
    xc_ads_pump(c);
    return MESH_OK;
}

/* ====================================================================================================== */
/* nghttp2 callbacks                                                                                      */
/* ====================================================================================================== */

static int xc_on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct xc_call *call;

    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (call == NULL)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            v = v * 10 + (value[i] - '0');
        call->http_status = v;
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        call->bad_content_type = !(valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0);
    } else if (mesh_grpc_status_on_header(&call->st, name, namelen, value, valuelen) != 0) {
        mesh_grpc_status_set(&call->local, MESH_GRPC_INTERNAL, "malformed grpc-status");
    }
    return 0;
}

static int xc_on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len, void *ud)
{
    struct mesh_xds_conn *c = ud;
    struct xc_call *call = nghttp2_session_get_stream_user_data(s, sid);

    (void)flags;
    while (call != NULL && len != 0) {
        size_t used = 0;
        int rc = mesh_grpc_deframer_feed(&call->rx, data, len, &used);
        data += used;
        len -= used;
        if (rc < 0) {
            xc_call_abort(c, call, rc == -EMSGSIZE ? MESH_GRPC_RESOURCE_EXHAUSTED : MESH_GRPC_INTERNAL,
                          rc == -EMSGSIZE ? "response message too large" : "bad gRPC message framing");
            return 0;
        }
        if (rc == 0)
            break;
        {
            const uint8_t *m;
            size_t mlen;
            int urc;
            int32_t id = call->sid;
            mesh_grpc_deframer_msg(&call->rx, &m, &mlen);
            c->stats.messages_received++;
            if (call->is_ads) {
                urc = xc_ads_on_message(c, call, m, mlen);
            } else {
                urc = call->cb.on_message != NULL ? call->cb.on_message(call->u, id, m, mlen) : 0;
                if (urc != 0 && xc_call_find(c, id) == call)
                    xc_call_abort(c, call, MESH_GRPC_INTERNAL, "response rejected by the client");
            }
            /* The upcall may have ended the call. */
            call = xc_call_find(c, id) == call ? call : NULL;
            if (urc != 0 || call == NULL)
                return 0;
            mesh_grpc_deframer_next(&call->rx);
        }
    }
    return 0;
}

static int xc_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct mesh_xds_conn *c = ud;

    (void)s;
    switch (frame->hd.type) {
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_outstanding = false;
        break;
    case NGHTTP2_GOAWAY:
        c->goaway_recv = true;
        MESH_LOG(c->env, MESH_LOG_INFO, XC_LOG_MODULE, "GOAWAY from %s (error %u)", c->authority,
                 frame->goaway.error_code);
        break;
    default:
        break;
    }
    return 0;
}

static int xc_on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud)
{
    struct mesh_xds_conn *c = ud;
    struct xc_call *call = nghttp2_session_get_stream_user_data(s, sid);
    struct mesh_grpc_status st;
    char msg[96];

    if (call == NULL)
        return 0;
    if (call->local.have_status) {
        st = call->local;
    } else if (call->st.have_status) {
        st = call->st;
        if (st.code == MESH_GRPC_OK && mesh_grpc_deframer_is_partial(&call->rx))
            mesh_grpc_status_set(&st, MESH_GRPC_INTERNAL, "stream ended inside a message");
    } else if (error_code == NGHTTP2_REFUSED_STREAM) {
        mesh_grpc_status_init(&st);
        mesh_grpc_status_set(&st, MESH_GRPC_UNAVAILABLE, c->goaway_recv ? "received prior goaway" : "stream refused");
    } else if (error_code == NGHTTP2_CANCEL) {
        mesh_grpc_status_init(&st);
        mesh_grpc_status_set(&st, MESH_GRPC_CANCELLED, "stream cancelled by the server");
    } else if (error_code != NGHTTP2_NO_ERROR) {
        snprintf(msg, sizeof(msg), "stream reset by the server (HTTP/2 error %u)", error_code);
        mesh_grpc_status_init(&st);
        mesh_grpc_status_set(&st, MESH_GRPC_INTERNAL, msg);
    } else {
        int code = call->http_status == 200 ? MESH_GRPC_UNKNOWN : mesh_grpc_code_from_http(call->http_status);
        snprintf(msg, sizeof(msg), "no grpc-status (HTTP %d%s)", call->http_status,
                 call->bad_content_type ? ", not application/grpc" : "");
        mesh_grpc_status_init(&st);
        mesh_grpc_status_set(&st, code, msg);
    }
    xc_call_finish(c, call, &st, false);
    return 0;
}

/* ====================================================================================================== */
/* lifecycle                                                                                              */
/* ====================================================================================================== */

static int xc_h2_init(struct mesh_xds_conn *c)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_mem mem = mesh_h2_mem(c->env);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, MESH_XDS_CONN_STREAM_WINDOW_BYTES},
    };
    int rv;

    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return MESH_ERR_NOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, xc_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, xc_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, xc_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, xc_on_stream_close);
    rv = nghttp2_session_client_new3(&c->s, cbs, c, opt, &mem);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rv != 0)
        return mesh_h2_err(rv) == MESH_ERR_NOMEM ? MESH_ERR_NOMEM : MESH_ERR_INTERNAL;
    rv = nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, MESH_XDS_CONN_WINDOW_BYTES);
    return rv == 0 ? MESH_OK : (mesh_h2_err(rv) == MESH_ERR_NOMEM ? MESH_ERR_NOMEM : MESH_ERR_INTERNAL);
}

struct mesh_xds_conn *mesh_xds_conn_new(const struct mesh_env *env, const struct mesh_xds_conn_cfg *cfg, int *err)
{
    struct mesh_xds_conn *c;
    int rc;

    if (cfg == NULL || cfg->authority == NULL || cfg->authority[0] == '\0' || cfg->server_name == NULL ||
        cfg->server_name[0] == '\0') {
        *err = MESH_ERR_CONFIG;
        return NULL;
    }
    c = mesh_env_calloc(env, sizeof(*c));
    if (c == NULL) {
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    c->env = env;
    c->max_message_bytes = cfg->max_message_bytes != 0 ? cfg->max_message_bytes : MESH_XDS_CONN_MAX_MESSAGE_BYTES;
    c->ping_interval_ns = cfg->ping_interval_ns != 0 ? cfg->ping_interval_ns : MESH_XDS_CONN_PING_INTERVAL_NS;
    c->ping_timeout_ns = cfg->ping_timeout_ns != 0 ? cfg->ping_timeout_ns : MESH_XDS_CONN_PING_TIMEOUT_NS;
    c->handshake_deadline_ns =
        mesh_env_now(env) +
        (cfg->handshake_timeout_ns != 0 ? cfg->handshake_timeout_ns : MESH_XDS_CONN_HANDSHAKE_TIMEOUT_NS);
    mesh_buf_init(&c->ads_scratch, env, c->max_message_bytes);
    c->authority = xc_strdup(env, cfg->authority);
    c->cluster_id =
        xc_strdup(env, cfg->cluster_id != NULL && cfg->cluster_id[0] != '\0' ? cfg->cluster_id
                                                                             : MESH_XDS_CONN_DEFAULT_CLUSTER_ID);
    rc = c->authority != NULL && c->cluster_id != NULL ? MESH_OK : MESH_ERR_NOMEM;
    if (rc == MESH_OK && cfg->n_headers != 0) {
        c->headers = mesh_env_calloc(env, cfg->n_headers * sizeof(*c->headers));
        rc = c->headers != NULL ? MESH_OK : MESH_ERR_NOMEM;
        for (size_t i = 0; rc == MESH_OK && i < cfg->n_headers; i++) {
            c->n_headers++;
            c->headers[i].name = xc_strdup(env, cfg->headers[i].name);
            c->headers[i].value = xc_strdup(env, cfg->headers[i].value);
            if (c->headers[i].name == NULL || c->headers[i].value == NULL)
                rc = MESH_ERR_NOMEM;
        }
    }
    if (rc == MESH_OK)
        rc = xc_tls_init(c, cfg);
    if (rc == MESH_OK)
        rc = xc_h2_init(c);
    if (rc != MESH_OK) {
        ERR_clear_error();
        mesh_xds_conn_free(c);
        *err = rc;
        return NULL;
    }
    *err = MESH_OK;
    return c;
}

void mesh_xds_conn_free(struct mesh_xds_conn *c)
{
    struct mesh_grpc_status st;

    if (c == NULL)
        return;
    mesh_grpc_status_init(&st);
    mesh_grpc_status_set(&st, MESH_GRPC_UNAVAILABLE, "channel closed");
    while (c->calls != NULL)
        xc_call_finish(c, c->calls, &st, true);
    nghttp2_session_del(c->s);
    SSL_free(c->ssl);
    SSL_CTX_free(c->ssl_ctx);
    for (size_t i = 0; i < c->n_headers; i++) {
        mesh_env_free(c->env, (void *)(uintptr_t)c->headers[i].name);
        mesh_env_free(c->env, (void *)(uintptr_t)c->headers[i].value);
    }
    mesh_env_free(c->env, c->headers);
    mesh_env_free(c->env, c->authority);
    mesh_env_free(c->env, c->cluster_id);
    mesh_buf_fini(&c->ads_scratch);
    mesh_env_free(c->env, c);
}

/* ====================================================================================================== */
/* driving                                                                                                */
/* ====================================================================================================== */

int mesh_xds_conn_flush(struct mesh_xds_conn *c, struct mesh_buf *wire_out)
{
    int rc;

    if (c->err != MESH_OK) {
        /* Try to get a GOAWAY or alert out anyway. */
        if (c->established && c->s != NULL) {
            const uint8_t *data;
            ssize_t n;
            while ((n = nghttp2_session_mem_send(c->s, &data)) > 0)
                if (SSL_write(c->ssl, data, (int)n) <= 0)
                    break;
        }
        ERR_clear_error();
        (void)xc_drain_wbio(c, wire_out);
        return c->err;
    }
    if (!c->established) {
        c->started = true;
        rc = xc_handshake(c);
        if (rc == MESH_OK)
            rc = xc_drain_wbio(c, wire_out);
        if (rc != MESH_OK) {
            (void)xc_drain_wbio(c, wire_out);
            return xc_fail(c, rc);
        }
        if (!c->established)
            return MESH_OK;
    }
    xc_ads_pump(c);
    for (;;) {
        const uint8_t *data;
        ssize_t n;

        if (mesh_buf_room(wire_out) < XC_FLUSH_HEADROOM_BYTES)
            break;
        n = nghttp2_session_mem_send(c->s, &data);
        if (n < 0)
            return xc_fail(c, mesh_h2_err((int)n));
        if (n == 0)
            break;
        if (SSL_write(c->ssl, data, (int)n) <= 0) {
            rc = xc_tls_error(c, -1);
            return xc_fail(c, rc != MESH_OK ? rc : MESH_ERR_TLS_LIBRARY);
        }
        rc = xc_drain_wbio(c, wire_out);
        if (rc != MESH_OK)
            return xc_fail(c, rc);
    }
    return xc_drain_wbio(c, wire_out) == MESH_OK ? MESH_OK : xc_fail(c, MESH_ERR_BUF_FULL);
}

int mesh_xds_conn_feed(struct mesh_xds_conn *c, const uint8_t *in, size_t len, struct mesh_buf *wire_out)
{
    uint8_t plain[XC_READ_CHUNK_BYTES];
    int rc;

    if (c->err != MESH_OK)
        return mesh_xds_conn_flush(c, wire_out);
    if (len != 0 && BIO_write(c->rbio, in, (int)len) != (int)len)
        return xc_fail(c, MESH_ERR_NOMEM);
    if (!c->established) {
        rc = xc_handshake(c);
        if (rc != MESH_OK) {
            (void)xc_drain_wbio(c, wire_out);
            return xc_fail(c, rc);
        }
        if (!c->established)
            return mesh_xds_conn_flush(c, wire_out);
    }
    for (;;) {
        int n = SSL_read(c->ssl, plain, sizeof(plain));
        ssize_t used;
        if (n <= 0) {
            rc = xc_tls_error(c, n);
            if (rc != MESH_OK) {
                (void)xc_drain_wbio(c, wire_out);
                return xc_fail(c, rc);
            }
            break;
        }
        used = nghttp2_session_mem_recv(c->s, plain, (size_t)n);
        if (used < 0)
            return xc_fail(c, mesh_h2_err((int)used));
        if (c->err != MESH_OK)
            break;
    }
    if (c->err == MESH_OK && !nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s))
        c->closed = true;
    return mesh_xds_conn_flush(c, wire_out);
}

bool mesh_xds_conn_want_write(const struct mesh_xds_conn *c)
{
    if (!c->established)
        return BIO_ctrl_pending(c->wbio) != 0 || (!c->started && c->err == MESH_OK);
    return c->s != NULL && (nghttp2_session_want_write(c->s) || BIO_ctrl_pending(c->wbio) != 0);
}

void mesh_xds_conn_on_closed(struct mesh_xds_conn *c, int err)
{
    c->closed = true;
    if (c->err == MESH_OK)
        (void)xc_fail(c, err == 0 ? MESH_ERR_TLS_CLOSED : MESH_ERR_TLS_PROTOCOL);
}

uint64_t mesh_xds_conn_next_deadline(const struct mesh_xds_conn *c)
{
    uint64_t d = MESH_XDS_CONN_NO_DEADLINE;

    if (c->err != MESH_OK)
        return d;
    if (!c->established)
        return c->handshake_deadline_ns;
    d = c->ping_outstanding ? c->ping_deadline_ns : c->next_ping_ns;
    for (const struct xc_call *k = c->calls; k != NULL; k = k->next)
        if (k->deadline_ns < d)
            d = k->deadline_ns;
    return d;
}

int mesh_xds_conn_on_deadline(struct mesh_xds_conn *c, uint64_t now_ns, struct mesh_buf *wire_out)
{
    struct xc_call *k, *next;

    if (c->err != MESH_OK)
        return mesh_xds_conn_flush(c, wire_out);
    if (!c->established) {
        if (now_ns >= c->handshake_deadline_ns)
            return xc_fail(c, MESH_ERR_HANDSHAKE_TIMEOUT);
        return mesh_xds_conn_flush(c, wire_out);
    }
    if (c->ping_outstanding && now_ns >= c->ping_deadline_ns)
        return xc_fail(c, MESH_ERR_H2_PING_TIMEOUT);
    if (!c->ping_outstanding && now_ns >= c->next_ping_ns) {
        if (nghttp2_submit_ping(c->s, NGHTTP2_FLAG_NONE, NULL) != 0)
            return xc_fail(c, MESH_ERR_NOMEM);
        c->ping_outstanding = true;
        c->ping_deadline_ns = now_ns + c->ping_timeout_ns;
        c->next_ping_ns = now_ns + c->ping_interval_ns;
        c->stats.pings_sent++;
    }
    for (k = c->calls; k != NULL; k = next) {
        next = k->next;
        if (now_ns >= k->deadline_ns) {
            xc_call_abort(c, k, MESH_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
            next = c->calls; /* the list changed: rescan */
        }
    }
    return mesh_xds_conn_flush(c, wire_out);
}

bool mesh_xds_conn_is_established(const struct mesh_xds_conn *c)
{
    return c->established;
}

bool mesh_xds_conn_is_done(const struct mesh_xds_conn *c)
{
    return c->err != MESH_OK || c->closed;
}

bool mesh_xds_conn_goaway_received(const struct mesh_xds_conn *c)
{
    return c->goaway_recv;
}

int mesh_xds_conn_error(const struct mesh_xds_conn *c)
{
    return c->err;
}

size_t mesh_xds_conn_call_count(const struct mesh_xds_conn *c)
{
    return c->n_calls;
}

const struct mesh_xds_conn_stats *mesh_xds_conn_stats(const struct mesh_xds_conn *c)
{
    return &c->stats;
}
