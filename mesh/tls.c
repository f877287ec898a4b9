/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/tls.c - HBONE mTLS engine over memory BIOs (invariants in tls.h). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "mesh/tls.h"

#define TLS_LOG_MODULE "mesh.tls"
#define TLS_CIPHERSUITES "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
#define TLS_GROUPS "X25519:P-256"
#define TLS_READ_CHUNK_BYTES 16384
#define TLS_DIGEST_BYTES 32
#define TLS_VERIFY_DEPTH 8
#define NS_PER_S 1000000000ull

static const unsigned char tls_alpn_h2[] = {2, 'h', '2'};

struct tls_cache_entry {
    uint8_t key[TLS_DIGEST_BYTES]; /* SHA-256 over the SHA-256 of each presented certificate, in order */
    int64_t valid_from;            /* max notBefore over the verified chain (unix s) */
    int64_t valid_until;           /* min notAfter over the verified chain, capped by the TTL (exclusive) */
    uint64_t last_used;            /* LRU tick; 0 = empty slot */
};

struct mesh_tls_ctx {
    const struct mesh_env *env;
    enum mesh_tls_role role;
    SSL_CTX *ssl_ctx;
    BIO_METHOD *bio_meth;
    const struct mesh_cert_bundle *bundle;
    struct mesh_tls_ctx_opts opts;
    struct tls_cache_entry *cache;
    uint32_t n_cache;
    uint64_t lru_tick;
    struct mesh_tls_stats stats;
};

struct mesh_tls {
    struct mesh_tls_ctx *ctx;
    SSL *ssl;
    enum mesh_tls_state state;
    int err;
    /* set only during a call: */
    const uint8_t *in;
    size_t in_len;
    struct mesh_buf *wire_out;
    int io_err;              /* buffer failure inside the BIO */
    int verify_err;          /* why our callbacks rejected the peer */
    struct mesh_buf pending; /* ciphertext received but not yet read by OpenSSL */
    struct mesh_spiffe_id *expected;
    size_t n_expected;
    struct mesh_spiffe_id peer;
    bool have_peer;
    bool peer_from_cache;
    bool sent_close;
    uint64_t deadline_ns;
};

/* ====================================================================================================== */
/* BIO over our buffers                                                                                   */
/* ====================================================================================================== */

static int tls_bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
    struct mesh_tls *tls = BIO_get_data(b);
    int rc;

    BIO_clear_retry_flags(b);
    if (tls->wire_out == NULL) {
        tls->io_err = MESH_ERR_STATE;
        return 0;
    }
    rc = mesh_buf_append(tls->wire_out, data, len);
    if (rc != 0) {
        tls->io_err = rc == -ENOMEM ? MESH_ERR_NOMEM : MESH_ERR_BUF_FULL;
        return 0;
    }
    *written = len;
    return 1;
}

/* Older bytes first: what is parked in pending, then the caller's input. Empty means "retry". */
static int tls_bio_read(BIO *b, char *out, size_t len, size_t *readbytes)
{
    struct mesh_tls *tls = BIO_get_data(b);
    size_t n = 0;

    BIO_clear_retry_flags(b);
    if (mesh_buf_len(&tls->pending) != 0) {
        n = mesh_buf_len(&tls->pending) < len ? mesh_buf_len(&tls->pending) : len;
        memcpy(out, mesh_buf_data(&tls->pending), n);
        mesh_buf_consume(&tls->pending, n);
    } else if (tls->in_len != 0) {
        n = tls->in_len < len ? tls->in_len : len;
        memcpy(out, tls->in, n);
        tls->in += n;
        tls->in_len -= n;
    }
    if (n == 0) {
        BIO_set_retry_read(b);
        return 0;
    }
    *readbytes = n;
    return 1;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int tls_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int tls_bio_destroy(BIO *b)
{
    BIO_set_data(b, NULL);
    return 1;
}

static BIO_METHOD *tls_bio_method_new(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mesh_tls");

    if (m == NULL)
        return NULL;
    if (!BIO_meth_set_write_ex(m, tls_bio_write) || !BIO_meth_set_read_ex(m, tls_bio_read) ||
        !BIO_meth_set_ctrl(m, tls_bio_ctrl) || !BIO_meth_set_create(m, tls_bio_create) ||
        !BIO_meth_set_destroy(m, tls_bio_destroy)) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* ====================================================================================================== */
/* verified-chain cache                                                                                   */
/* ====================================================================================================== */

static int64_t tls_now_s(const struct mesh_tls_ctx *ctx)
{
    return (int64_t)(mesh_env_now(ctx->env) / NS_PER_S);
}

/* Key = SHA-256(SHA-256(DER cert 0) || SHA-256(DER cert 1) || ...) over the chain as presented, leaf first. */
static int tls_chain_key(X509 *leaf, STACK_OF(X509) * presented, uint8_t key[TLS_DIGEST_BYTES])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dn, kn = 0;
    int n = presented != NULL ? sk_X509_num(presented) : 0;
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL);

    if (n == 0) {
        ok = ok && X509_digest(leaf, EVP_sha256(), d, &dn) && EVP_DigestUpdate(md, d, dn);
    } else {
        /* The presented stack starts with the leaf itself. */
        ok = ok && sk_X509_value(presented, 0) == leaf;
        for (int i = 0; ok && i < n; i++)
            ok = X509_digest(sk_X509_value(presented, i), EVP_sha256(), d, &dn) && EVP_DigestUpdate(md, d, dn);
    }
    ok = ok && EVP_DigestFinal_ex(md, key, &kn) && kn == TLS_DIGEST_BYTES;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -ENOMEM;
}

static struct tls_cache_entry *tls_cache_find(struct mesh_tls_ctx *ctx, const uint8_t key[TLS_DIGEST_BYTES])
{
    for (uint32_t i = 0; i < ctx->n_cache; i++)
        if (ctx->cache[i].last_used != 0 && memcmp(ctx->cache[i].key, key, TLS_DIGEST_BYTES) == 0)
            return &ctx->cache[i];
    return NULL;
}

/* A hit requires valid_from <= now < valid_until, the same window in which X509_verify_cert accepts every
 * certificate of the chain (notBefore <= now, now < notAfter). Out-of-window entries are dropped. */
static bool tls_cache_lookup(struct mesh_tls_ctx *ctx, const uint8_t key[TLS_DIGEST_BYTES], int64_t now)
{
    struct tls_cache_entry *e = tls_cache_find(ctx, key);

    if (e == NULL)
        return false;
    if (now < e->valid_from || now >= e->valid_until) {
        memset(e, 0, sizeof(*e));
        return false;
    }
    e->last_used = ++ctx->lru_tick;
    return true;
}

static void tls_cache_insert(struct mesh_tls_ctx *ctx, const uint8_t key[TLS_DIGEST_BYTES], STACK_OF(X509) * verified,
                             int64_t now)
{
    int64_t from = INT64_MIN, until = now + (int64_t)(ctx->opts.cache_ttl_ns / NS_PER_S);
    struct tls_cache_entry *slot = NULL;

    if (ctx->n_cache == 0 || verified == NULL || sk_X509_num(verified) == 0)
        return;
    for (int i = 0; i < sk_X509_num(verified); i++) {
        X509 *x = sk_X509_value(verified, i);
        int64_t nb, na;
        if (mesh_identity_asn1_time_to_unix(X509_get0_notBefore(x), &nb) != 0 ||
            mesh_identity_asn1_time_to_unix(X509_get0_notAfter(x), &na) != 0)
            return; /* unreadable times: never cache */
        if (nb > from)
            from = nb;
        if (na < until)
            until = na;
    }
    if (!(from <= now && now < until))
        return;
    slot = tls_cache_find(ctx, key);
    for (uint32_t i = 0; slot == NULL && i < ctx->n_cache; i++)
        if (ctx->cache[i].last_used == 0)
            slot = &ctx->cache[i];
    if (slot == NULL) {
        slot = &ctx->cache[0];
        for (uint32_t i = 1; i < ctx->n_cache; i++)
            if (ctx->cache[i].last_used < slot->last_used)
                slot = &ctx->cache[i];
        ctx->stats.cache_evictions++;
    }
    memcpy(slot->key, key, TLS_DIGEST_BYTES);
    slot->valid_from = from;
    slot->valid_until = until;
    slot->last_used = ++ctx->lru_tick;
    ctx->stats.cache_inserts++;
}

void mesh_tls_ctx_flush_cache(struct mesh_tls_ctx *ctx)
{
    if (ctx->cache != NULL)
        memset(ctx->cache, 0, sizeof(*ctx->cache) * ctx->n_cache);
}

/* ====================================================================================================== */
/* peer checks (OpenSSL callbacks)                                                                        */
/* ====================================================================================================== */

static int tls_map_x509_error(int verr)
{
    switch (verr) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return MESH_ERR_TLS_CERT_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return MESH_ERR_TLS_CERT_NOT_YET_VALID;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
        return MESH_ERR_TLS_CERT_UNTRUSTED;
    case X509_V_ERR_OUT_OF_MEM:
        return MESH_ERR_NOMEM;
    default:
        return MESH_ERR_TLS_CERT_INVALID;
    }
}

/* Scan an ALPN protocol list (sequence of length-prefixed names) for "h2". */
static bool tls_alpn_list_has_h2(const unsigned char *p, size_t len)
{
    while (len > 0) {
        size_t n = p[0];
        if (n + 1 > len)
            return false;
        if (n == 2 && p[1] == 'h' && p[2] == '2')
            return true;
        p += n + 1;
        len -= n + 1;
    }
    return false;
}

/* Server: refuse a ClientHello that does not offer h2 with a no_application_protocol alert. */
static int tls_on_client_hello(SSL *ssl, int *al, void *arg)
{
    struct mesh_tls *tls = SSL_get_app_data(ssl);
    const unsigned char *p;
    size_t len;

    (void)arg;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len) != 1 || len < 2 ||
        (size_t)((p[0] << 8) | p[1]) != len - 2 || !tls_alpn_list_has_h2(p + 2, len - 2)) {
        tls->verify_err = MESH_ERR_TLS_ALPN;
        *al = SSL_AD_NO_APPLICATION_PROTOCOL;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

static int tls_on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                              unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    while (inlen > 0) {
        unsigned int n = in[0];
        if (n + 1 > inlen)
            break;
        if (n == 2 && in[1] == 'h' && in[2] == '2') {
            *out = in + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        in += n + 1;
        inlen -= n + 1;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Identity rules of HBONE (see tls.h). Returns MESH_OK or the reason to reject. */
static int tls_check_identity(struct mesh_tls *tls, X509 *leaf)
{
    const struct mesh_spiffe_id *own = mesh_identity_bundle_id(tls->ctx->bundle);
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    bool first = false, td_ok = false, matched = false;
    struct mesh_spiffe_id id;

    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && !matched; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI)
            continue;
        if (mesh_spiffe_parse((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                              (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier), &id) != 0)
            continue;
        if (tls->ctx->role == MESH_TLS_SERVER) {
            if (!first) {
                tls->peer = id;
                first = true;
            }
            if (mesh_spiffe_same_trust_domain(&id, own))
                td_ok = true;
        } else {
            for (size_t k = 0; k < tls->n_expected; k++) {
                if (mesh_spiffe_eq(&id, &tls->expected[k])) {
                    tls->peer = id;
                    matched = true;
                    break;
                }
            }
        }
    }
    GENERAL_NAMES_free(gens);
    if (tls->ctx->role == MESH_TLS_SERVER) {
        if (!first)
            return MESH_ERR_TLS_IDENTITY;
        if (!td_ok)
            return MESH_ERR_TLS_TRUST_DOMAIN;
    } else if (!matched) {
        return MESH_ERR_TLS_IDENTITY;
    }
    tls->have_peer = true;
    return MESH_OK;
}

/*
 * Replaces OpenSSL's chain verification step: cache lookup, else full X509_verify_cert at the env time, then the
 * identity rules. Returns 1 to accept, 0 to reject (OpenSSL then sends the alert matching the store error).
 */
static int tls_on_verify(X509_STORE_CTX *sctx, void *arg)
{
    struct mesh_tls_ctx *ctx = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct mesh_tls *tls = SSL_get_app_data(ssl);
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    uint8_t key[TLS_DIGEST_BYTES];
    int64_t now = tls_now_s(ctx);
    bool have_key;
    int rc;

    if (leaf == NULL) {
        tls->verify_err = MESH_ERR_TLS_CERT_MISSING;
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_UNSPECIFIED);
        return 0;
    }
    if (ctx->role == MESH_TLS_CLIENT) {
        /* EncryptedExtensions (with ALPN) precede the server Certificate: fail here so an alert is sent. */
        const unsigned char *alpn;
        unsigned int alen;
        SSL_get0_alpn_selected(ssl, &alpn, &alen);
        if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
            tls->verify_err = MESH_ERR_TLS_ALPN;
            X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
            return 0;
        }
    }
    have_key = ctx->n_cache != 0 && tls_chain_key(leaf, X509_STORE_CTX_get0_untrusted(sctx), key) == 0;
    if (have_key && tls_cache_lookup(ctx, key, now)) {
        ctx->stats.cache_hits++;
        tls->peer_from_cache = true;
    } else {
        X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(sctx), (time_t)now);
        ctx->stats.chain_verifications++;
        if (X509_verify_cert(sctx) != 1) {
            int verr = X509_STORE_CTX_get_error(sctx);
            tls->verify_err = tls_map_x509_error(verr);
            MESH_LOG(ctx->env, MESH_LOG_DEBUG, TLS_LOG_MODULE, "peer chain rejected: %s",
                     X509_verify_cert_error_string(verr));
            if (verr == X509_V_OK)
                X509_STORE_CTX_set_error(sctx, X509_V_ERR_UNSPECIFIED);
            return 0;
        }
        if (have_key)
            tls_cache_insert(ctx, key, X509_STORE_CTX_get0_chain(sctx), now);
    }
    rc = tls_check_identity(tls, leaf);
    if (rc != MESH_OK) {
        tls->verify_err = rc;
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

/* ====================================================================================================== */
/* error mapping                                                                                          */
/* ====================================================================================================== */

static int tls_map_err_code(unsigned long e)
{
    int reason = ERR_GET_REASON(e);

    if (reason == ERR_R_MALLOC_FAILURE)
        return MESH_ERR_NOMEM;
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return 0;
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
        return MESH_ERR_TLS_ALERT; /* the peer sent us a fatal alert */
    switch (reason) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return MESH_ERR_TLS_CERT_MISSING;
    case SSL_R_NO_APPLICATION_PROTOCOL:
        return MESH_ERR_TLS_ALPN;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return MESH_ERR_TLS_CERT_UNTRUSTED;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_WRONG_SSL_VERSION:
    case SSL_R_BAD_KEY_SHARE:
        return MESH_ERR_TLS_HANDSHAKE;
    case ERR_R_INTERNAL_ERROR:
        return MESH_ERR_TLS_LIBRARY;
    default:
        return MESH_ERR_TLS_PROTOCOL;
    }
}

/* Decide why an SSL call failed. Our own findings (buffer, callbacks) win over the OpenSSL queue; the queue is
 * always emptied. */
static int tls_map_failure(struct mesh_tls *tls, int ssl_err)
{
    int mapped = 0;
    unsigned long e;

    while ((e = ERR_get_error()) != 0)
        if (mapped == 0)
            mapped = tls_map_err_code(e);
    if (tls->io_err != 0)
        return tls->io_err;
    if (tls->verify_err != 0)
        return tls->verify_err;
    if (mapped != 0)
        return mapped;
    return ssl_err == SSL_ERROR_SYSCALL ? MESH_ERR_INTERNAL : MESH_ERR_TLS_LIBRARY;
}

static int tls_fail(struct mesh_tls *tls, int err)
{
    if (tls->state == MESH_TLS_HANDSHAKING)
        tls->ctx->stats.handshakes_failed++;
    tls->state = MESH_TLS_FAILED;
    tls->err = err;
    MESH_LOG(tls->ctx->env, MESH_LOG_DEBUG, TLS_LOG_MODULE, "session failed: %s", mesh_err_name(err));
    return err;
}

/* ====================================================================================================== */
/* context                                                                                                */
/* ====================================================================================================== */

static int tls_ctx_configure(struct mesh_tls_ctx *ctx)
{
    SSL_CTX *sc = ctx->ssl_ctx;
    X509_STORE *store;
    STACK_OF(X509) *roots = mesh_identity_bundle_roots(ctx->bundle);
    EVP_PKEY *key = mesh_identity_bundle_key(ctx->bundle);
    X509 *leaf = mesh_identity_bundle_leaf(ctx->bundle);
    STACK_OF(X509) *chain = mesh_identity_bundle_chain(ctx->bundle);

    if (!SSL_CTX_set_min_proto_version(sc, TLS1_3_VERSION) || !SSL_CTX_set_max_proto_version(sc, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(sc, TLS_CIPHERSUITES) || !SSL_CTX_set1_groups_list(sc, TLS_GROUPS))
        return MESH_ERR_TLS_LIBRARY;
    SSL_CTX_set_options(sc, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_OFF);
    if (!SSL_CTX_set_num_tickets(sc, 0))
        return MESH_ERR_TLS_LIBRARY;
    if (!SSL_CTX_use_cert_and_key(sc, leaf, key, chain, 1) || SSL_CTX_check_private_key(sc) != 1)
        return MESH_ERR_CONFIG;
    store = SSL_CTX_get_cert_store(sc);
    for (int i = 0; i < sk_X509_num(roots); i++)
        if (!X509_STORE_add_cert(store, sk_X509_value(roots, i)))
            return MESH_ERR_CONFIG;
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(sc), X509_V_FLAG_X509_STRICT);
    SSL_CTX_set_verify_depth(sc, TLS_VERIFY_DEPTH);
    SSL_CTX_set_cert_verify_callback(sc, tls_on_verify, ctx);
    if (ctx->role == MESH_TLS_SERVER) {
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_client_hello_cb(sc, tls_on_client_hello, NULL);
        SSL_CTX_set_alpn_select_cb(sc, tls_on_alpn_select, NULL);
    } else {
        SSL_CTX_set_verify(sc, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_set_alpn_protos(sc, tls_alpn_h2, sizeof(tls_alpn_h2)) != 0) /* 0 is success here */
            return MESH_ERR_TLS_LIBRARY;
    }
    return MESH_OK;
}

struct mesh_tls_ctx *mesh_tls_ctx_new(enum mesh_tls_role role, const struct mesh_cert_bundle *bundle,
                                      const struct mesh_env *env, const struct mesh_tls_ctx_opts *opts, int *err)
{
    struct mesh_tls_ctx *ctx;
    int rc;

    if (bundle == NULL || env == NULL || (role != MESH_TLS_CLIENT && role != MESH_TLS_SERVER)) {
        *err = MESH_ERR_CONFIG;
        return NULL;
    }
    ctx = mesh_env_calloc(env, sizeof(*ctx));
    if (ctx == NULL) {
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    ctx->env = env;
    ctx->role = role;
    if (opts != NULL)
        ctx->opts = *opts;
    if (ctx->opts.cache_entries == 0)
        ctx->opts.cache_entries = MESH_TLS_CACHE_DEFAULT_ENTRIES;
    if (ctx->opts.cache_ttl_ns == 0)
        ctx->opts.cache_ttl_ns = MESH_TLS_CACHE_DEFAULT_TTL_NS;
    if (ctx->opts.handshake_timeout_ns == 0)
        ctx->opts.handshake_timeout_ns = MESH_TLS_HANDSHAKE_TIMEOUT_NS;
    if (ctx->opts.pending_max_bytes == 0)
        ctx->opts.pending_max_bytes = MESH_TLS_PENDING_MAX_BYTES;
    ctx->bundle = mesh_identity_bundle_ref(bundle);
    if (!ctx->opts.cache_disabled) {
        ctx->cache = mesh_env_calloc(env, sizeof(*ctx->cache) * ctx->opts.cache_entries);
        if (ctx->cache == NULL) {
            rc = MESH_ERR_NOMEM;
            goto fail;
        }
        ctx->n_cache = ctx->opts.cache_entries;
    }
    ctx->bio_meth = tls_bio_method_new();
    ctx->ssl_ctx = SSL_CTX_new(TLS_method());
    if (ctx->bio_meth == NULL || ctx->ssl_ctx == NULL) {
        rc = MESH_ERR_NOMEM;
        goto fail;
    }
    rc = tls_ctx_configure(ctx);
    if (rc != MESH_OK)
        goto fail;
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    mesh_tls_ctx_free(ctx);
    *err = rc;
    return NULL;
}

void mesh_tls_ctx_free(struct mesh_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    BIO_meth_free(ctx->bio_meth);
    mesh_identity_bundle_unref(ctx->bundle);
    mesh_env_free(ctx->env, ctx->cache);
    mesh_env_free(ctx->env, ctx);
}

const struct mesh_tls_stats *mesh_tls_ctx_stats(const struct mesh_tls_ctx *ctx)
{
    return &ctx->stats;
}

/* ====================================================================================================== */
/* sessions                                                                                               */
/* ====================================================================================================== */

struct mesh_tls *mesh_tls_new(struct mesh_tls_ctx *ctx, const struct mesh_spiffe_id *expected, size_t n_expected,
                              int *err)
{
    struct mesh_tls *tls;
    BIO *bio;
    int rc = MESH_ERR_NOMEM;

    if (ctx->role == MESH_TLS_CLIENT ? (expected == NULL || n_expected == 0 || n_expected > MESH_TLS_MAX_EXPECTED_IDS)
                                     : (expected != NULL || n_expected != 0)) {
        *err = MESH_ERR_CONFIG;
        return NULL;
    }
    tls = mesh_env_calloc(ctx->env, sizeof(*tls));
    if (tls == NULL) {
        *err = MESH_ERR_NOMEM;
        return NULL;
    }
    tls->ctx = ctx;
    tls->state = MESH_TLS_HANDSHAKING;
    mesh_buf_init(&tls->pending, ctx->env, ctx->opts.pending_max_bytes);
    tls->deadline_ns = mesh_env_now(ctx->env) + ctx->opts.handshake_timeout_ns;
    if (n_expected != 0) {
        tls->expected = mesh_env_alloc(ctx->env, sizeof(*expected) * n_expected);
        if (tls->expected == NULL)
            goto fail;
        memcpy(tls->expected, expected, sizeof(*expected) * n_expected);
        tls->n_expected = n_expected;
    }
    tls->ssl = SSL_new(ctx->ssl_ctx);
    if (tls->ssl == NULL)
        goto fail;
    bio = BIO_new(ctx->bio_meth);
    if (bio == NULL)
        goto fail;
    BIO_set_data(bio, tls);
    SSL_set_bio(tls->ssl, bio, bio); /* one reference, owned by the SSL now */
    if (!SSL_set_app_data(tls->ssl, tls)) {
        rc = MESH_ERR_TLS_LIBRARY;
        goto fail;
    }
    if (ctx->role == MESH_TLS_CLIENT)
        SSL_set_connect_state(tls->ssl);
    else
        SSL_set_accept_state(tls->ssl);
    ERR_clear_error();
    return tls;
fail:
    ERR_clear_error();
    mesh_tls_free(tls);
    *err = rc;
    return NULL;
}

void mesh_tls_free(struct mesh_tls *tls)
{
    const struct mesh_env *env;

    if (tls == NULL)
        return;
    env = tls->ctx->env;
    SSL_free(tls->ssl);
    mesh_buf_fini(&tls->pending);
    mesh_env_free(env, tls->expected);
    mesh_env_free(env, tls);
}

static int tls_on_handshake_done(struct mesh_tls *tls)
{
    const unsigned char *alpn;
    unsigned int alen;

    SSL_get0_alpn_selected(tls->ssl, &alpn, &alen);
    if (alen != 2 || memcmp(alpn, "h2", 2) != 0)
        return MESH_ERR_TLS_ALPN;
    if (SSL_version(tls->ssl) != TLS1_3_VERSION)
        return MESH_ERR_TLS_HANDSHAKE;
    if (!tls->have_peer)
        return MESH_ERR_TLS_CERT_MISSING;
    tls->state = MESH_TLS_ESTABLISHED;
    tls->ctx->stats.handshakes_ok++;
    MESH_LOG(tls->ctx->env, MESH_LOG_DEBUG, TLS_LOG_MODULE, "handshake done: %s peer ns=%s sa=%s%s",
             SSL_CIPHER_standard_name(SSL_get_current_cipher(tls->ssl)), tls->peer.ns, tls->peer.sa,
             tls->peer_from_cache ? " (cached chain)" : "");
    return MESH_OK;
}

static int tls_drive(struct mesh_tls *tls, struct mesh_buf *plain_out)
{
    int r, e, rc;

    if (tls->state == MESH_TLS_HANDSHAKING) {
        ERR_clear_error();
        r = SSL_do_handshake(tls->ssl);
        if (r != 1) {
            e = SSL_get_error(tls->ssl, r);
            if (e == SSL_ERROR_WANT_READ && tls->io_err == 0) {
                ERR_clear_error();
                return MESH_OK;
            }
            return tls_fail(tls, tls_map_failure(tls, e));
        }
        rc = tls_on_handshake_done(tls);
        if (rc != MESH_OK)
            return tls_fail(tls, rc);
    }
    while (tls->state == MESH_TLS_ESTABLISHED && plain_out != NULL) {
        size_t room = mesh_buf_room(plain_out), got = 0;
        size_t want = room < TLS_READ_CHUNK_BYTES ? room : TLS_READ_CHUNK_BYTES;
        uint8_t *p;

        if (want == 0)
            break; /* backpressure: the rest stays in OpenSSL / pending */
        if (mesh_buf_reserve(plain_out, want, &p) != 0)
            return tls_fail(tls, MESH_ERR_NOMEM);
        ERR_clear_error();
        if (SSL_read_ex(tls->ssl, p, want, &got)) {
            mesh_buf_commit(plain_out, got);
            continue;
        }
        e = SSL_get_error(tls->ssl, 0);
        if (e == SSL_ERROR_WANT_READ && tls->io_err == 0) {
            ERR_clear_error();
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            tls->state = MESH_TLS_PEER_CLOSED;
            break;
        }
        return tls_fail(tls, tls_map_failure(tls, e));
    }
    return MESH_OK;
}

static void tls_call_end(struct mesh_tls *tls)
{
    tls->in = NULL;
    tls->in_len = 0;
    tls->wire_out = NULL;
}

int mesh_tls_feed(struct mesh_tls *tls, const uint8_t *in, size_t len, struct mesh_buf *plain_out,
                  struct mesh_buf *wire_out)
{
    int rc;

    if (tls->state == MESH_TLS_FAILED)
        return tls->err;
    if (tls->state == MESH_TLS_PEER_CLOSED)
        return MESH_OK; /* nothing may follow close_notify; drop it */
    tls->in = in;
    tls->in_len = in != NULL ? len : 0;
    tls->wire_out = wire_out;
    rc = tls_drive(tls, plain_out);
    if (rc == MESH_OK && tls->in_len != 0) {
        int arc = mesh_buf_append(&tls->pending, tls->in, tls->in_len);
        if (arc != 0)
            rc = tls_fail(tls, arc == -ENOMEM ? MESH_ERR_NOMEM : MESH_ERR_BUF_FULL);
    }
    tls_call_end(tls);
    return rc;
}

int mesh_tls_write(struct mesh_tls *tls, const uint8_t *plain, size_t len, struct mesh_buf *wire_out)
{
    size_t written = 0;
    int rc = MESH_OK;

    if (tls->state == MESH_TLS_FAILED)
        return tls->err;
    if ((tls->state != MESH_TLS_ESTABLISHED && tls->state != MESH_TLS_PEER_CLOSED) || tls->sent_close)
        return MESH_ERR_STATE;
    if (len == 0)
        return MESH_OK;
    tls->wire_out = wire_out;
    ERR_clear_error();
    if (!SSL_write_ex(tls->ssl, plain, len, &written) || written != len)
        rc = tls_fail(tls, tls_map_failure(tls, SSL_get_error(tls->ssl, 0)));
    tls_call_end(tls);
    return rc;
}

int mesh_tls_close_notify(struct mesh_tls *tls, struct mesh_buf *wire_out)
{
    int rc = MESH_OK, r;

    if (tls->state == MESH_TLS_FAILED)
        return tls->err;
    if (tls->state == MESH_TLS_HANDSHAKING)
        return MESH_ERR_STATE;
    if (tls->sent_close)
        return MESH_OK;
    tls->wire_out = wire_out;
    ERR_clear_error();
    r = SSL_shutdown(tls->ssl);
    if (r < 0)
        rc = tls_fail(tls, tls_map_failure(tls, SSL_get_error(tls->ssl, r)));
    else
        tls->sent_close = true;
    ERR_clear_error();
    tls_call_end(tls);
    return rc;
}

enum mesh_tls_state mesh_tls_state(const struct mesh_tls *tls)
{
    return tls->state;
}

int mesh_tls_error(const struct mesh_tls *tls)
{
    return tls->err;
}

const struct mesh_spiffe_id *mesh_tls_peer_identity(const struct mesh_tls *tls)
{
    return tls->have_peer ? &tls->peer : NULL;
}

bool mesh_tls_peer_from_cache(const struct mesh_tls *tls)
{
    return tls->peer_from_cache;
}

static bool tls_negotiated(const struct mesh_tls *tls)
{
    return tls->state == MESH_TLS_ESTABLISHED || tls->state == MESH_TLS_PEER_CLOSED;
}

const char *mesh_tls_version(const struct mesh_tls *tls)
{
    return tls_negotiated(tls) ? SSL_get_version(tls->ssl) : NULL;
}

const char *mesh_tls_cipher(const struct mesh_tls *tls)
{
    return tls_negotiated(tls) ? SSL_CIPHER_standard_name(SSL_get_current_cipher(tls->ssl)) : NULL;
}

const char *mesh_tls_alpn(const struct mesh_tls *tls)
{
    return tls_negotiated(tls) ? "h2" : NULL;
}

bool mesh_tls_has_pending(const struct mesh_tls *tls)
{
    return mesh_buf_len(&tls->pending) != 0 || (tls->state == MESH_TLS_ESTABLISHED && SSL_has_pending(tls->ssl));
}

uint64_t mesh_tls_next_deadline(const struct mesh_tls *tls)
{
    return tls->state == MESH_TLS_HANDSHAKING ? tls->deadline_ns : MESH_TLS_NO_DEADLINE;
}

int mesh_tls_on_deadline(struct mesh_tls *tls, uint64_t now_ns)
{
    if (tls->state == MESH_TLS_HANDSHAKING && now_ns >= tls->deadline_ns)
        return tls_fail(tls, MESH_ERR_HANDSHAKE_TIMEOUT);
    return MESH_OK;
}
