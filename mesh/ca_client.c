/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/ca_client.c - Istio CA request/response handling (invariants in ca_client.h; facts section 3.6). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <protobuf-c/protobuf-c.h>

#include "mesh/ca_client.h"
#include "mesh/xds_client.h"
#include "proto/ca.pb-c.h"
#include "proto/struct.pb-c.h"

static char *ca_str(const char *s)
{
    return (char *)(uintptr_t)s;
}

static void ca_reason(char *reason, size_t cap, const char *what)
{
    if (reason != NULL && cap != 0)
        snprintf(reason, cap, "%s", what);
}

/* ====================================================================================================== */
/* CSR                                                                                                    */
/* ====================================================================================================== */

int mesh_ca_csr_new(const struct mesh_env *env, const struct mesh_spiffe_id *id, char **csr_pem, size_t *csr_len,
                    EVP_PKEY **key)
{
    char uri[MESH_SPIFFE_URI_MAX_BYTES + 4], san[MESH_SPIFFE_URI_MAX_BYTES + 8];
    EVP_PKEY *pk = NULL;
    X509_REQ *req = NULL;
    X509_EXTENSION *ext = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    BIO *bio = NULL;
    char *pem = NULL, *data;
    long n;
    int rc = -EIO;

    *csr_pem = NULL;
    *key = NULL;
    if (mesh_spiffe_format(id, uri, sizeof(uri)) < 0)
        return -EINVAL;
    snprintf(san, sizeof(san), "URI:%s", uri);
    pk = EVP_EC_gen("P-256");
    req = X509_REQ_new();
    exts = sk_X509_EXTENSION_new_null();
    if (pk == NULL || req == NULL || exts == NULL)
        goto out;
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    if (ext == NULL || !sk_X509_EXTENSION_push(exts, ext))
        goto out;
    ext = NULL;
    if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_pubkey(req, pk) || !X509_REQ_add_extensions(req, exts) ||
        X509_REQ_sign(req, pk, EVP_sha256()) <= 0)
        goto out;
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || !PEM_write_bio_X509_REQ(bio, req))
        goto out;
    n = BIO_get_mem_data(bio, &data);
    pem = mesh_env_alloc(env, (size_t)n + 1);
    if (pem == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
    *csr_pem = pem;
    if (csr_len != NULL)
        *csr_len = (size_t)n;
    *key = pk;
    pk = NULL;
    rc = 0;
out:
    BIO_free(bio);
    X509_EXTENSION_free(ext);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    EVP_PKEY_free(pk);
    return rc;
}

/* ====================================================================================================== */
/* request                                                                                                */
/* ====================================================================================================== */

int mesh_ca_request_encode(const struct mesh_env *env, const char *csr_pem, int64_t validity_s,
                           const struct mesh_spiffe_id *impersonate, struct mesh_buf *out)
{
    Istio__V1__Auth__IstioCertificateRequest req;
    Google__Protobuf__Struct md;
    Google__Protobuf__Struct__FieldsEntry ent;
    Google__Protobuf__Struct__FieldsEntry *ents[1] = {&ent};
    Google__Protobuf__Value val;
    char uri[MESH_SPIFFE_URI_MAX_BYTES + 4];
    uint8_t *p;
    size_t n;
    int rc;

    istio__v1__auth__istio_certificate_request__init(&req);
    google__protobuf__struct__init(&md);
    google__protobuf__struct__fields_entry__init(&ent);
    google__protobuf__value__init(&val);
    (void)env;
    if (csr_pem == NULL || validity_s < 0)
        return -EINVAL;
    req.csr = ca_str(csr_pem);
    req.validity_duration = validity_s;
    if (impersonate != NULL) {
        if (mesh_spiffe_format(impersonate, uri, sizeof(uri)) < 0)
            return -EINVAL;
        val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        val.string_value = uri;
        ent.key = ca_str(MESH_CA_IMPERSONATED_IDENTITY_KEY);
        ent.value = &val;
        md.n_fields = 1;
        md.fields = ents;
        req.metadata = &md;
    }
    n = protobuf_c_message_get_packed_size(&req.base);
    rc = mesh_buf_reserve(out, n, &p);
    if (rc != 0)
        return rc;
    protobuf_c_message_pack(&req.base, p);
    mesh_buf_commit(out, n);
    return 0;
}

/* ====================================================================================================== */
/* response                                                                                               */
/* ====================================================================================================== */

/* Parse every certificate in PEM text into sk (appending). Returns the count added, or -1. */
static int ca_parse_certs(const char *pem, size_t len, STACK_OF(X509) * sk)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x;
    int added = 0;

    if (bio == NULL)
        return -1;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            added = -1;
            break;
        }
        added++;
    }
    ERR_clear_error();
    BIO_free(bio);
    return added;
}

int mesh_ca_response_decode(const struct mesh_env *env, const uint8_t *msg, size_t len,
                            const struct mesh_spiffe_id *expected, EVP_PKEY *key, const char *roots_pem,
                            size_t roots_len, struct mesh_cert_bundle **out, char *reason, size_t reason_cap)
{
    Istio__V1__Auth__IstioCertificateResponse *resp;
    struct ProtobufCAllocator pa;
    STACK_OF(X509) *certs = NULL, *chain = NULL, *roots = NULL;
    struct mesh_cert_bundle *b = NULL;
    int rc = -EBADMSG, err = 0;
    size_t n;

    *out = NULL;
    mesh_xds_pb_allocator(env, &pa);
    resp = istio__v1__auth__istio_certificate_response__unpack(&pa, len, msg);
    if (resp == NULL) {
        ca_reason(reason, reason_cap, "not an IstioCertificateResponse");
        return -EBADMSG;
    }
    n = resp->n_cert_chain;
    certs = sk_X509_new_null();
    chain = sk_X509_new_null();
    roots = sk_X509_new_null();
    if (certs == NULL || chain == NULL || roots == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (n == 0 || n > MESH_CA_MAX_CHAIN) {
        ca_reason(reason, reason_cap, n == 0 ? "empty certificate chain" : "certificate chain too long");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (ca_parse_certs(resp->cert_chain[i], strlen(resp->cert_chain[i]), certs) != 1) {
            ca_reason(reason, reason_cap, "chain element is not exactly one PEM certificate");
            goto out;
        }
    }
    /* Intermediates: elements 1 .. n-2. The last element is the root when n >= 2. */
    for (size_t i = 1; i + 1 < n; i++) {
        if (!sk_X509_push(chain, sk_X509_value(certs, (int)i)) || !X509_up_ref(sk_X509_value(certs, (int)i))) {
            rc = -ENOMEM;
            goto out;
        }
    }
    if (roots_pem != NULL && roots_len != 0) {
        if (ca_parse_certs(roots_pem, roots_len, roots) <= 0) {
            ca_reason(reason, reason_cap, "configured roots do not parse");
            rc = -EINVAL;
            goto out;
        }
    } else {
        X509 *root = sk_X509_value(certs, (int)n - 1);
        if (!sk_X509_push(roots, root) || !X509_up_ref(root)) {
            rc = -ENOMEM;
            goto out;
        }
    }
    b = mesh_identity_bundle_new(env, sk_X509_value(certs, 0), chain, key, roots, &err);
    if (b == NULL) {
        rc = err == -ENOMEM ? -ENOMEM : -EINVAL;
        ca_reason(reason, reason_cap,
                  err == -EKEYREJECTED ? "leaf does not match the CSR key"
                                       : "leaf has no SPIFFE identity or does not chain to the roots");
        goto out;
    }
    if (!mesh_spiffe_eq(mesh_identity_bundle_id(b), expected)) {
        ca_reason(reason, reason_cap, "leaf identity differs from the requested one");
        mesh_identity_bundle_unref(b);
        b = NULL;
        rc = -EACCES;
        goto out;
    }
    *out = b;
    rc = 0;
out:
    sk_X509_pop_free(roots, X509_free);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(certs, X509_free);
    istio__v1__auth__istio_certificate_response__free_unpacked(resp, &pa);
    return rc;
}
