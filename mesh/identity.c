/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/identity.c - certificate bundles and the local CA (invariants in identity.h). */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "mesh/identity.h"

struct mesh_cert_bundle {
    atomic_uint refs;
    const struct mesh_env *env;
    X509 *leaf;
    STACK_OF(X509) * chain;
    EVP_PKEY *key;
    STACK_OF(X509) * roots;
    struct mesh_spiffe_id id;
    int64_t not_before;
    int64_t not_after;
    char serial[MESH_IDENTITY_SERIAL_MAX_BYTES];
};

struct mesh_local_ca {
    const struct mesh_env *env;
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) * chain; /* cert's issuers below the root (intermediate CAs only) */
    STACK_OF(X509) * roots;
};

/* ====================================================================================================== */
/* helpers                                                                                                */
/* ====================================================================================================== */

int mesh_identity_asn1_time_to_unix(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return -EINVAL;
    *out = (int64_t)timegm(&tm);
    return 0;
}

static STACK_OF(X509) * identity_dup_stack(STACK_OF(X509) * sk)
{
    STACK_OF(X509) *d = sk != NULL ? X509_chain_up_ref(sk) : sk_X509_new_null();

    return d;
}

/* Read every certificate from PEM text. Returns a stack (maybe empty) or NULL on allocation failure / bad PEM. */
static STACK_OF(X509) * identity_read_certs(const char *pem, size_t len, int *err)
{
    STACK_OF(X509) * sk;
    BIO *bio;
    X509 *x;

    if (pem == NULL || len == 0 || len > INT32_MAX) {
        *err = -EBADMSG;
        return NULL;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    sk = sk_X509_new_null();
    if (bio == NULL || sk == NULL) {
        BIO_free(bio);
        sk_X509_free(sk);
        *err = -ENOMEM;
        return NULL;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            goto fail_nomem;
        }
    }
    /* Running out of PEM blocks leaves PEM_R_NO_START_LINE; anything else is a parse error. */
    {
        unsigned long e = ERR_peek_last_error();
        if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
            *err = ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE ? -ENOMEM : -EBADMSG;
            goto fail;
        }
    }
    ERR_clear_error();
    BIO_free(bio);
    if (sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        *err = -EBADMSG;
        return NULL;
    }
    return sk;
fail_nomem:
    *err = -ENOMEM;
fail:
    ERR_clear_error();
    BIO_free(bio);
    sk_X509_pop_free(sk, X509_free);
    return NULL;
}

static EVP_PKEY *identity_read_key(const char *pem, size_t len, int *err)
{
    EVP_PKEY *k;
    BIO *bio;

    if (pem == NULL || len == 0 || len > INT32_MAX) {
        *err = -EBADMSG;
        return NULL;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (k == NULL)
        *err = -EBADMSG;
    ERR_clear_error();
    BIO_free(bio);
    return k;
}

/* First URI SAN of x that parses as a SPIFFE ID. Returns 0 or -EINVAL. */
static int identity_first_spiffe(X509 *x, struct mesh_spiffe_id *out)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rc = -EINVAL;

    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI)
            continue;
        if (mesh_spiffe_parse((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                              (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier), out) == 0) {
            rc = 0;
            break;
        }
    }
    GENERAL_NAMES_free(gens);
    return rc;
}

/* Does leaf chain to roots through chain (time ignored)? */
static int identity_check_chain(X509 *leaf, STACK_OF(X509) * chain, STACK_OF(X509) * roots)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    int rc = -ENOMEM;

    if (store == NULL || sctx == NULL)
        goto out;
    for (int i = 0; i < sk_X509_num(roots); i++)
        if (!X509_STORE_add_cert(store, sk_X509_value(roots, i)))
            goto out;
    if (!X509_STORE_CTX_init(sctx, store, leaf, chain))
        goto out;
    X509_STORE_CTX_set_flags(sctx, X509_V_FLAG_NO_CHECK_TIME | X509_V_FLAG_X509_STRICT);
    rc = X509_verify_cert(sctx) == 1 ? 0 : -EINVAL;
out:
    ERR_clear_error();
    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    return rc;
}

/* PEM-encode with write(bio, obj) into an env-allocated NUL-terminated string. */
static int identity_bio_to_string(const struct mesh_env *env, BIO *bio, char **out, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *s;

    if (n < 0)
        return -ENOMEM;
    s = mesh_env_alloc(env, (size_t)n + 1);
    if (s == NULL)
        return -ENOMEM;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *out = s;
    if (len != NULL)
        *len = (size_t)n;
    return 0;
}

static int identity_certs_pem(const struct mesh_env *env, X509 *first, STACK_OF(X509) * sk, char **out, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = -ENOMEM;

    if (bio == NULL)
        return -ENOMEM;
    if (first != NULL && !PEM_write_bio_X509(bio, first))
        goto out;
    for (int i = 0; sk != NULL && i < sk_X509_num(sk); i++)
        if (!PEM_write_bio_X509(bio, sk_X509_value(sk, i)))
            goto out;
    rc = identity_bio_to_string(env, bio, out, len);
out:
    ERR_clear_error();
    BIO_free(bio);
    return rc;
}

static int identity_key_pem(const struct mesh_env *env, EVP_PKEY *key, char **out, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = -ENOMEM;

    if (bio == NULL)
        return -ENOMEM;
    if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL))
        rc = identity_bio_to_string(env, bio, out, len);
    ERR_clear_error();
    BIO_free(bio);
    return rc;
}

/* ====================================================================================================== */
/* bundles                                                                                                */
/* ====================================================================================================== */

static void identity_bundle_free(struct mesh_cert_bundle *b)
{
    X509_free(b->leaf);
    sk_X509_pop_free(b->chain, X509_free);
    EVP_PKEY_free(b->key);
    sk_X509_pop_free(b->roots, X509_free);
    mesh_env_free(b->env, b);
}

static void identity_set_serial(struct mesh_cert_bundle *b)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(b->leaf), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    size_t i = 0;

    if (hex != NULL) {
        for (; hex[i] != '\0' && i + 1 < sizeof(b->serial); i++)
            b->serial[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
    }
    b->serial[i] = '\0';
    OPENSSL_free(hex);
    BN_free(bn);
}

struct mesh_cert_bundle *mesh_identity_bundle_new(const struct mesh_env *env, X509 *leaf, STACK_OF(X509) * chain,
                                                  EVP_PKEY *key, STACK_OF(X509) * roots, int *err)
{
    struct mesh_cert_bundle *b;
    int rc;

    if (leaf == NULL || key == NULL) {
        *err = -EBADMSG;
        return NULL;
    }
    if (roots == NULL || sk_X509_num(roots) == 0) {
        *err = -EINVAL;
        return NULL;
    }
    b = mesh_env_calloc(env, sizeof(*b));
    if (b == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    b->env = env;
    atomic_init(&b->refs, 1);
    if (!X509_up_ref(leaf)) {
        mesh_env_free(env, b);
        *err = -ENOMEM;
        return NULL;
    }
    b->leaf = leaf;
    if (!EVP_PKEY_up_ref(key)) {
        rc = -ENOMEM;
        goto fail;
    }
    b->key = key;
    b->chain = identity_dup_stack(chain);
    b->roots = identity_dup_stack(roots);
    if (b->chain == NULL || b->roots == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    if (X509_check_private_key(leaf, key) != 1) {
        rc = -EKEYREJECTED;
        goto fail;
    }
    if (identity_first_spiffe(leaf, &b->id) != 0) {
        rc = -EINVAL;
        goto fail;
    }
    if (mesh_identity_asn1_time_to_unix(X509_get0_notBefore(leaf), &b->not_before) != 0 ||
        mesh_identity_asn1_time_to_unix(X509_get0_notAfter(leaf), &b->not_after) != 0) {
        rc = -EBADMSG;
        goto fail;
    }
    rc = identity_check_chain(leaf, b->chain, b->roots);
    if (rc != 0)
        goto fail;
    identity_set_serial(b);
    ERR_clear_error();
    return b;
fail:
    ERR_clear_error();
    identity_bundle_free(b);
    *err = rc;
    return NULL;
}

struct mesh_cert_bundle *mesh_identity_bundle_from_pem(const struct mesh_env *env, const char *chain_pem,
                                                       size_t chain_len, const char *key_pem, size_t key_len,
                                                       const char *roots_pem, size_t roots_len, int *err)
{
    STACK_OF(X509) *chain = NULL, *roots = NULL;
    struct mesh_cert_bundle *b = NULL;
    EVP_PKEY *key = NULL;
    X509 *leaf;

    chain = identity_read_certs(chain_pem, chain_len, err);
    if (chain == NULL)
        goto out;
    roots = identity_read_certs(roots_pem, roots_len, err);
    if (roots == NULL)
        goto out;
    key = identity_read_key(key_pem, key_len, err);
    if (key == NULL)
        goto out;
    leaf = sk_X509_shift(chain);
    b = mesh_identity_bundle_new(env, leaf, chain, key, roots, err);
    X509_free(leaf);
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
    EVP_PKEY_free(key);
    return b;
}

/* Read a whole file with OpenSSL's file BIO into an env-allocated buffer. */
static int identity_read_file(const struct mesh_env *env, const char *path, char **out, size_t *len)
{
    BIO *f = BIO_new_file(path, "rb");
    BIO *mem;
    char chunk[4096];
    int n, rc = 0;

    if (f == NULL) {
        ERR_clear_error();
        return -ENOENT;
    }
    mem = BIO_new(BIO_s_mem());
    if (mem == NULL) {
        BIO_free(f);
        return -ENOMEM;
    }
    while ((n = BIO_read(f, chunk, sizeof(chunk))) > 0) {
        if (BIO_write(mem, chunk, n) != n) {
            rc = -ENOMEM;
            break;
        }
    }
    if (rc == 0)
        rc = identity_bio_to_string(env, mem, out, len);
    ERR_clear_error();
    BIO_free(mem);
    BIO_free(f);
    return rc;
}

struct mesh_cert_bundle *mesh_identity_bundle_load(const struct mesh_env *env, const char *chain_path,
                                                   const char *key_path, const char *roots_path, int *err)
{
    char *chain = NULL, *key = NULL, *roots = NULL;
    size_t chain_len = 0, key_len = 0, roots_len = 0;
    struct mesh_cert_bundle *b = NULL;
    int rc;

    if ((rc = identity_read_file(env, chain_path, &chain, &chain_len)) != 0 ||
        (rc = identity_read_file(env, key_path, &key, &key_len)) != 0 ||
        (rc = identity_read_file(env, roots_path, &roots, &roots_len)) != 0) {
        *err = rc;
        goto out;
    }
    b = mesh_identity_bundle_from_pem(env, chain, chain_len, key, key_len, roots, roots_len, err);
out:
    if (key != NULL)
        OPENSSL_cleanse(key, key_len);
    mesh_env_free(env, chain);
    mesh_env_free(env, key);
    mesh_env_free(env, roots);
    return b;
}

/* The reference count is the one mutable field of an otherwise immutable bundle. */
static struct mesh_cert_bundle *identity_bundle_mut(const struct mesh_cert_bundle *b)
{
    return (struct mesh_cert_bundle *)(uintptr_t)b;
}

const struct mesh_cert_bundle *mesh_identity_bundle_ref(const struct mesh_cert_bundle *b)
{
    atomic_fetch_add_explicit(&identity_bundle_mut(b)->refs, 1, memory_order_relaxed);
    return b;
}

void mesh_identity_bundle_unref(const struct mesh_cert_bundle *b)
{
    if (b == NULL)
        return;
    if (atomic_fetch_sub_explicit(&identity_bundle_mut(b)->refs, 1, memory_order_acq_rel) == 1)
        identity_bundle_free(identity_bundle_mut(b));
}

const struct mesh_spiffe_id *mesh_identity_bundle_id(const struct mesh_cert_bundle *b)
{
    return &b->id;
}

const char *mesh_identity_bundle_serial(const struct mesh_cert_bundle *b)
{
    return b->serial;
}

int64_t mesh_identity_bundle_not_before(const struct mesh_cert_bundle *b)
{
    return b->not_before;
}

int64_t mesh_identity_bundle_not_after(const struct mesh_cert_bundle *b)
{
    return b->not_after;
}

X509 *mesh_identity_bundle_leaf(const struct mesh_cert_bundle *b)
{
    return b->leaf;
}

STACK_OF(X509) * mesh_identity_bundle_chain(const struct mesh_cert_bundle *b)
{
    return b->chain;
}

EVP_PKEY *mesh_identity_bundle_key(const struct mesh_cert_bundle *b)
{
    return b->key;
}

STACK_OF(X509) * mesh_identity_bundle_roots(const struct mesh_cert_bundle *b)
{
    return b->roots;
}

int mesh_identity_bundle_to_pem(const struct mesh_cert_bundle *b, char **chain_pem, char **key_pem, char **roots_pem)
{
    char *c = NULL, *k = NULL, *r = NULL;
    int rc = 0;

    if (chain_pem != NULL)
        rc = identity_certs_pem(b->env, b->leaf, b->chain, &c, NULL);
    if (rc == 0 && key_pem != NULL)
        rc = identity_key_pem(b->env, b->key, &k, NULL);
    if (rc == 0 && roots_pem != NULL)
        rc = identity_certs_pem(b->env, NULL, b->roots, &r, NULL);
    if (rc != 0) {
        mesh_env_free(b->env, c);
        if (k != NULL)
            OPENSSL_cleanse(k, strlen(k));
        mesh_env_free(b->env, k);
        mesh_env_free(b->env, r);
        return rc;
    }
    if (chain_pem != NULL)
        *chain_pem = c;
    if (key_pem != NULL)
        *key_pem = k;
    if (roots_pem != NULL)
        *roots_pem = r;
    return 0;
}

bool mesh_identity_needs_rotation(const struct mesh_cert_bundle *b, uint64_t now_ns)
{
    int64_t now = (int64_t)(now_ns / 1000000000ull);
    int64_t half = b->not_before + (b->not_after - b->not_before) / 2;

    return now < b->not_before || now >= half;
}

/* ====================================================================================================== */
/* local CA                                                                                               */
/* ====================================================================================================== */

void mesh_local_ca_free(struct mesh_local_ca *ca)
{
    if (ca == NULL)
        return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    sk_X509_pop_free(ca->chain, X509_free);
    sk_X509_pop_free(ca->roots, X509_free);
    mesh_env_free(ca->env, ca);
}

static bool ca_is_ca_cert(X509 *x)
{
    return X509_check_ca(x) > 0;
}

struct mesh_local_ca *mesh_local_ca_from_pem(const struct mesh_env *env, const char *cert_pem, size_t cert_len,
                                             const char *key_pem, size_t key_len, const char *roots_pem,
                                             size_t roots_len, int *err)
{
    struct mesh_local_ca *ca = mesh_env_calloc(env, sizeof(*ca));
    STACK_OF(X509) * certs;

    if (ca == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    ca->env = env;
    certs = identity_read_certs(cert_pem, cert_len, err);
    if (certs == NULL)
        goto fail;
    ca->cert = sk_X509_shift(certs);
    ca->chain = certs;
    ca->key = identity_read_key(key_pem, key_len, err);
    if (ca->key == NULL)
        goto fail;
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        *err = -EKEYREJECTED;
        goto fail;
    }
    if (!ca_is_ca_cert(ca->cert)) {
        *err = -EINVAL;
        goto fail;
    }
    if (roots_pem != NULL && roots_len != 0) {
        ca->roots = identity_read_certs(roots_pem, roots_len, err);
        if (ca->roots == NULL)
            goto fail;
    } else {
        ca->roots = sk_X509_new_null();
        if (ca->roots == NULL || !X509_up_ref(ca->cert)) {
            *err = -ENOMEM;
            goto fail;
        }
        if (!sk_X509_push(ca->roots, ca->cert)) {
            X509_free(ca->cert);
            *err = -ENOMEM;
            goto fail;
        }
    }
    ERR_clear_error();
    return ca;
fail:
    ERR_clear_error();
    mesh_local_ca_free(ca);
    return NULL;
}

static int ca_add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    int ok;

    if (ext == NULL)
        return -EIO;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -ENOMEM;
}

/* 128-bit positive, non-zero serial from the env randomness. */
static int ca_set_serial(const struct mesh_env *env, X509 *x)
{
    unsigned char raw[16];
    BIGNUM *bn;
    int rc;

    rc = mesh_env_random(env, raw, sizeof(raw));
    if (rc != 0)
        return rc;
    raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x40);
    bn = BN_bin2bn(raw, sizeof(raw), NULL);
    if (bn == NULL)
        return -ENOMEM;
    rc = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL ? 0 : -ENOMEM;
    BN_free(bn);
    return rc;
}

static int ca_set_validity(X509 *x, uint64_t not_before_ns, uint64_t lifetime_ns)
{
    time_t nb = (time_t)(not_before_ns / 1000000000ull);
    time_t na = (time_t)((not_before_ns + lifetime_ns) / 1000000000ull);

    if (ASN1_TIME_set(X509_getm_notBefore(x), nb) == NULL || ASN1_TIME_set(X509_getm_notAfter(x), na) == NULL)
        return -ENOMEM;
    return 0;
}

/* Create a certificate shell: v3, serial, validity, subject name, public key. */
static X509 *ca_make_cert(const struct mesh_env *env, EVP_PKEY *pub, const X509_NAME *subject, uint64_t nb_ns,
                          uint64_t lifetime_ns, int *err)
{
    X509 *x = X509_new();
    int rc;

    if (x == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    if (!X509_set_version(x, X509_VERSION_3) || !X509_set_pubkey(x, pub) ||
        (subject != NULL && !X509_set_subject_name(x, subject))) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = ca_set_serial(env, x)) != 0 || (rc = ca_set_validity(x, nb_ns, lifetime_ns)) != 0)
        goto fail;
    return x;
fail:
    X509_free(x);
    *err = rc;
    return NULL;
}

static int ca_add_ca_exts(X509 *x, X509 *issuer, bool intermediate)
{
    X509V3_CTX v3;
    int rc;

    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    if ((rc = ca_add_ext(x, &v3, NID_basic_constraints,
                         intermediate ? "critical,CA:TRUE,pathlen:0" : "critical,CA:TRUE")) != 0 ||
        (rc = ca_add_ext(x, &v3, NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign")) != 0 ||
        (rc = ca_add_ext(x, &v3, NID_subject_key_identifier, "hash")) != 0)
        return rc;
    if (intermediate && (rc = ca_add_ext(x, &v3, NID_authority_key_identifier, "keyid:always")) != 0)
        return rc;
    return 0;
}

static struct mesh_local_ca *ca_alloc(const struct mesh_env *env, int *err)
{
    struct mesh_local_ca *ca = mesh_env_calloc(env, sizeof(*ca));

    if (ca == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    ca->env = env;
    ca->chain = sk_X509_new_null();
    ca->roots = sk_X509_new_null();
    if (ca->chain == NULL || ca->roots == NULL) {
        mesh_local_ca_free(ca);
        *err = -ENOMEM;
        return NULL;
    }
    return ca;
}

struct mesh_local_ca *mesh_local_ca_generate(const struct mesh_env *env, const char *org, uint64_t now_ns,
                                             uint64_t lifetime_ns, int *err)
{
    struct mesh_local_ca *ca = ca_alloc(env, err);
    X509_NAME *name = NULL;
    int rc = -ENOMEM;

    if (ca == NULL)
        return NULL;
    if (lifetime_ns == 0)
        lifetime_ns = MESH_IDENTITY_ROOT_LIFETIME_NS;
    ca->key = EVP_EC_gen("P-256");
    if (ca->key == NULL) {
        rc = -EIO;
        goto fail;
    }
    name = X509_NAME_new();
    if (name == NULL ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                    (const unsigned char *)(org != NULL ? org : "cluster.local"), -1, -1, 0))
        goto fail;
    ca->cert = ca_make_cert(env, ca->key, name, now_ns, lifetime_ns, &rc);
    if (ca->cert == NULL)
        goto fail;
    if (!X509_set_issuer_name(ca->cert, name))
        goto fail;
    if ((rc = ca_add_ca_exts(ca->cert, NULL, false)) != 0)
        goto fail;
    if (X509_sign(ca->cert, ca->key, EVP_sha256()) <= 0) {
        rc = -EIO;
        goto fail;
    }
    if (!X509_up_ref(ca->cert)) {
        rc = -ENOMEM;
        goto fail;
    }
    if (!sk_X509_push(ca->roots, ca->cert)) {
        X509_free(ca->cert);
        rc = -ENOMEM;
        goto fail;
    }
    X509_NAME_free(name);
    ERR_clear_error();
    return ca;
fail:
    ERR_clear_error();
    X509_NAME_free(name);
    mesh_local_ca_free(ca);
    *err = rc;
    return NULL;
}

struct mesh_local_ca *mesh_local_ca_new_intermediate(const struct mesh_local_ca *parent, uint64_t now_ns,
                                                     uint64_t lifetime_ns, int *err)
{
    struct mesh_local_ca *ca = ca_alloc(parent->env, err);
    X509_NAME *name = NULL;
    int rc = -ENOMEM;

    if (ca == NULL)
        return NULL;
    if (lifetime_ns == 0)
        lifetime_ns = MESH_IDENTITY_ROOT_LIFETIME_NS / 10;
    ca->key = EVP_EC_gen("P-256");
    if (ca->key == NULL) {
        rc = -EIO;
        goto fail;
    }
    name = X509_NAME_dup(X509_get_subject_name(parent->cert));
    if (name == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"Intermediate CA", -1, -1, 0))
        goto fail;
    ca->cert = ca_make_cert(ca->env, ca->key, name, now_ns, lifetime_ns, &rc);
    if (ca->cert == NULL)
        goto fail;
    rc = -ENOMEM;
    if (!X509_set_issuer_name(ca->cert, X509_get_subject_name(parent->cert)))
        goto fail;
    if ((rc = ca_add_ca_exts(ca->cert, parent->cert, true)) != 0)
        goto fail;
    if (X509_sign(ca->cert, parent->key, EVP_sha256()) <= 0) {
        rc = -EIO;
        goto fail;
    }
    /* chain = parent's cert (unless it is a root) + parent's chain; roots = parent's roots */
    rc = -ENOMEM;
    sk_X509_free(ca->chain);
    sk_X509_free(ca->roots);
    ca->roots = NULL;
    ca->chain = X509_chain_up_ref(parent->chain);
    if (ca->chain == NULL)
        goto fail;
    if (X509_check_issued(parent->cert, parent->cert) != X509_V_OK) {
        if (!X509_up_ref(parent->cert))
            goto fail;
        if (!sk_X509_insert(ca->chain, parent->cert, 0)) {
            X509_free(parent->cert);
            goto fail;
        }
    }
    ca->roots = X509_chain_up_ref(parent->roots);
    if (ca->roots == NULL)
        goto fail;
    X509_NAME_free(name);
    ERR_clear_error();
    return ca;
fail:
    ERR_clear_error();
    X509_NAME_free(name);
    mesh_local_ca_free(ca);
    *err = rc;
    return NULL;
}

STACK_OF(X509) * mesh_local_ca_roots(const struct mesh_local_ca *ca)
{
    return ca->roots;
}

int mesh_local_ca_cert_pem(const struct mesh_local_ca *ca, char **out, size_t *len)
{
    return identity_certs_pem(ca->env, ca->cert, ca->chain, out, len);
}

int mesh_local_ca_key_pem(const struct mesh_local_ca *ca, char **out, size_t *len)
{
    return identity_key_pem(ca->env, ca->key, out, len);
}

int mesh_local_ca_roots_pem(const struct mesh_local_ca *ca, char **out, size_t *len)
{
    return identity_certs_pem(ca->env, NULL, ca->roots, out, len);
}

static bool ca_is_self_issued(X509 *x)
{
    return X509_check_issued(x, x) == X509_V_OK;
}

/* What a leaf sends after itself: the CA cert unless it is a root, then the CA's own issuers. New references. */
static STACK_OF(X509) * ca_leaf_chain(const struct mesh_local_ca *ca)
{
    STACK_OF(X509) *sk = X509_chain_up_ref(ca->chain);

    if (sk == NULL || ca_is_self_issued(ca->cert))
        return sk;
    if (!X509_up_ref(ca->cert)) {
        sk_X509_pop_free(sk, X509_free);
        return NULL;
    }
    if (!sk_X509_insert(sk, ca->cert, 0)) {
        X509_free(ca->cert);
        sk_X509_pop_free(sk, X509_free);
        return NULL;
    }
    return sk;
}

/* The single critical URI SAN. */
static int ca_add_san(X509 *x, const char *uri)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    int rc = -ENOMEM;

    if (gens == NULL || g == NULL || s == NULL || !ASN1_STRING_set(s, uri, (int)strlen(uri)))
        goto out;
    GENERAL_NAME_set0_value(g, GEN_URI, s);
    s = NULL;
    if (!sk_GENERAL_NAME_push(gens, g))
        goto out;
    g = NULL;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 1, X509V3_ADD_DEFAULT) == 1)
        rc = 0;
out:
    ASN1_IA5STRING_free(s);
    GENERAL_NAME_free(g);
    GENERAL_NAMES_free(gens);
    return rc;
}

struct mesh_cert_bundle *mesh_local_ca_issue(const struct mesh_local_ca *ca, const struct mesh_spiffe_id *id,
                                             uint64_t not_before_ns, uint64_t lifetime_ns, int *err)
{
    char uri[MESH_SPIFFE_URI_MAX_BYTES];
    struct mesh_cert_bundle *b = NULL;
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    X509V3_CTX v3;
    int rc;

    if (mesh_spiffe_format(id, uri, sizeof(uri)) < 0) {
        *err = -EINVAL;
        return NULL;
    }
    if (lifetime_ns == 0)
        lifetime_ns = MESH_IDENTITY_LEAF_LIFETIME_NS;
    key = EVP_EC_gen("P-256");
    if (key == NULL) {
        rc = -EIO;
        goto out;
    }
    x = ca_make_cert(ca->env, key, NULL, not_before_ns, lifetime_ns, &rc);
    if (x == NULL)
        goto out;
    rc = -ENOMEM;
    if (!X509_set_issuer_name(x, X509_get_subject_name(ca->cert)))
        goto out;
    X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
    if ((rc = ca_add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE")) != 0 ||
        (rc = ca_add_ext(x, &v3, NID_key_usage, "critical,digitalSignature,keyEncipherment")) != 0 ||
        (rc = ca_add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth")) != 0 ||
        (rc = ca_add_ext(x, &v3, NID_authority_key_identifier, "keyid:always")) != 0 || (rc = ca_add_san(x, uri)) != 0)
        goto out;
    if (X509_sign(x, ca->key, EVP_sha256()) <= 0) {
        rc = -EIO;
        goto out;
    }
    chain = ca_leaf_chain(ca);
    if (chain == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    b = mesh_identity_bundle_new(ca->env, x, chain, key, ca->roots, &rc);
out:
    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(key);
    if (b == NULL)
        *err = rc;
    return b;
}
