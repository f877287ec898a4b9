/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/identity.h - workload certificate bundles and the built-in local CA.
 *
 * Invariants:
 *  - A struct mesh_cert_bundle is immutable after construction and reference counted (atomically, so a snapshot may
 *    share it across lcores). It always holds: a leaf whose private key matches, whose first parseable URI SAN is a
 *    SPIFFE ID, and which chains (ignoring time) to one of its non-empty roots through its intermediates.
 *  - A bundle is freed with the env it was created with; that env's allocator must be usable from whichever thread
 *    drops the last reference.
 *  - The local CA mints leaves the way Istio's CA does: ECDSA P-256, SHA-256, empty subject, exactly one URI SAN
 *    (critical) spiffe://..., EKU serverAuth+clientAuth, key usage digitalSignature+keyEncipherment (critical),
 *    basicConstraints CA:FALSE (critical), authority key id. Serials are 128-bit from the env randomness; keys come
 *    from OpenSSL's own DRBG.
 *  - No file is ever written here: the CA hands back PEM strings and the backend persists them.
 *  - Times are unix seconds (int64) in bundles; callers pass the env clock in nanoseconds.
 */
#ifndef MESH_IDENTITY_H
#define MESH_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "mesh/env.h"
#include "mesh/spiffe.h"

#define MESH_IDENTITY_LEAF_LIFETIME_NS (24ull * 3600 * 1000000000ull) /* Istio SECRET_TTL default */
#define MESH_IDENTITY_ROOT_LIFETIME_NS (10ull * 365 * 24 * 3600 * 1000000000ull)
#define MESH_IDENTITY_SERIAL_MAX_BYTES 64 /* hex string incl. NUL */

struct mesh_cert_bundle;
struct mesh_local_ca;

/* ---- certificate bundles ---- */

/*
 * Build a bundle from PEM text (lengths in bytes; the text need not be NUL-terminated).
 * @chain_pem  leaf certificate first, then its intermediates (if any)
 * @key_pem    the leaf private key (PKCS#8 or traditional, unencrypted)
 * @roots_pem  one or more trusted root certificates (the mesh roots)
 * Returns a bundle with one reference, or NULL and *err = -EBADMSG (unparseable PEM or no certificate),
 * -EKEYREJECTED (key does not match the leaf), -EINVAL (no SPIFFE URI SAN, or the chain does not verify to the
 * roots), -ENOMEM.
 */
struct mesh_cert_bundle *mesh_identity_bundle_from_pem(const struct mesh_env *env, const char *chain_pem,
                                                       size_t chain_len, const char *key_pem, size_t key_len,
                                                       const char *roots_pem, size_t roots_len, int *err);

/* As mesh_identity_bundle_from_pem, reading three PEM files. Extra error: -ENOENT when a file can't be opened. */
struct mesh_cert_bundle *mesh_identity_bundle_load(const struct mesh_env *env, const char *chain_path,
                                                   const char *key_path, const char *roots_path, int *err);

/*
 * Build a bundle from OpenSSL objects; the bundle takes its own references (the caller keeps its own).
 * @chain  intermediates, leaf excluded; may be NULL
 * Errors as mesh_identity_bundle_from_pem.
 */
struct mesh_cert_bundle *mesh_identity_bundle_new(const struct mesh_env *env, X509 *leaf, STACK_OF(X509) * chain,
                                                  EVP_PKEY *key, STACK_OF(X509) * roots, int *err);

/* Take another reference; returns b. Bundles are immutable, so holders keep const pointers; only the reference
 * count changes. */
const struct mesh_cert_bundle *mesh_identity_bundle_ref(const struct mesh_cert_bundle *b);

/* Drop a reference; the last one frees the bundle. NULL is a no-op. */
void mesh_identity_bundle_unref(const struct mesh_cert_bundle *b);

/* Accessors. Returned pointers live as long as the caller's reference to b; the OpenSSL objects must not be
 * modified (take your own reference with X509_up_ref/EVP_PKEY_up_ref to keep them longer). */
const struct mesh_spiffe_id *mesh_identity_bundle_id(const struct mesh_cert_bundle *b);
const char *mesh_identity_bundle_serial(const struct mesh_cert_bundle *b); /* lowercase hex, no leading zeros */
int64_t mesh_identity_bundle_not_before(const struct mesh_cert_bundle *b);
int64_t mesh_identity_bundle_not_after(const struct mesh_cert_bundle *b);
X509 *mesh_identity_bundle_leaf(const struct mesh_cert_bundle *b);
STACK_OF(X509) * mesh_identity_bundle_chain(const struct mesh_cert_bundle *b); /* intermediates; never NULL */
EVP_PKEY *mesh_identity_bundle_key(const struct mesh_cert_bundle *b);
STACK_OF(X509) * mesh_identity_bundle_roots(const struct mesh_cert_bundle *b);

/*
 * PEM text of the bundle, each NUL-terminated and allocated with the bundle's env (free with mesh_env_free).
 * Any out pointer may be NULL to skip that part. Returns 0 or -ENOMEM (then nothing is allocated).
 */
int mesh_identity_bundle_to_pem(const struct mesh_cert_bundle *b, char **chain_pem, char **key_pem, char **roots_pem);

/* True once now is at or past half of the leaf's lifetime (Istio refresh point), or outside the validity window. */
bool mesh_identity_needs_rotation(const struct mesh_cert_bundle *b, uint64_t now_ns);

/* Convert an ASN1_TIME to unix seconds. Returns 0 or -EINVAL. */
int mesh_identity_asn1_time_to_unix(const ASN1_TIME *t, int64_t *out);

/* ---- local CA ---- */

/*
 * Load a CA from PEM text.
 * @cert_pem    the CA certificate (a root, or an intermediate followed by its issuers up to, not including, the root)
 * @key_pem     the CA private key
 * @roots_pem   the root(s) to hand out as trust anchors; NULL/0 means the CA certificate itself is the root
 * Returns a CA or NULL and *err = -EBADMSG, -EKEYREJECTED, -EINVAL (not a CA certificate), -ENOMEM.
 */
struct mesh_local_ca *mesh_local_ca_from_pem(const struct mesh_env *env, const char *cert_pem, size_t cert_len,
                                             const char *key_pem, size_t key_len, const char *roots_pem,
                                             size_t roots_len, int *err);

/*
 * Generate a self-signed ECDSA P-256 root CA, subject O=<org>, valid [now, now + lifetime].
 * @org          organisation name, usually the trust domain; NULL means "cluster.local"
 * @lifetime_ns  0 means MESH_IDENTITY_ROOT_LIFETIME_NS
 * Returns a CA or NULL and *err = -EIO (key generation or signing failed), -ENOMEM.
 */
struct mesh_local_ca *mesh_local_ca_generate(const struct mesh_env *env, const char *org, uint64_t now_ns,
                                             uint64_t lifetime_ns, int *err);

/*
 * Mint an intermediate CA (pathlen 0, like istiod's) signed by parent; leaves it issues carry it in their chain and
 * trust the parent's roots. parent may be freed afterwards.
 */
struct mesh_local_ca *mesh_local_ca_new_intermediate(const struct mesh_local_ca *parent, uint64_t now_ns,
                                                     uint64_t lifetime_ns, int *err);

/* Free the CA. NULL is a no-op. */
void mesh_local_ca_free(struct mesh_local_ca *ca);

/*
 * PEM text of the CA certificate (plus its issuers, excluding the root) and of its private key, for the backend to
 * persist. NUL-terminated, allocated with the CA's env (free with mesh_env_free). Returns 0 or -ENOMEM.
 */
int mesh_local_ca_cert_pem(const struct mesh_local_ca *ca, char **out, size_t *len);
int mesh_local_ca_key_pem(const struct mesh_local_ca *ca, char **out, size_t *len);
int mesh_local_ca_roots_pem(const struct mesh_local_ca *ca, char **out, size_t *len);

/* The CA's trust anchors (its root, or the roots given at load time). Lives as long as ca; do not modify. */
STACK_OF(X509) * mesh_local_ca_roots(const struct mesh_local_ca *ca);

/*
 * Issue a leaf for id with a fresh P-256 key, valid [not_before_ns, not_before_ns + lifetime_ns] (seconds
 * precision). Pass the env clock as not_before_ns for a normal certificate.
 * @lifetime_ns  0 means MESH_IDENTITY_LEAF_LIFETIME_NS
 * Returns a bundle (leaf, the CA's chain, the key, the CA's roots) with one reference, or NULL and *err = -EINVAL
 * (id does not format), -EIO (key generation or signing failed), -ENOMEM.
 */
struct mesh_cert_bundle *mesh_local_ca_issue(const struct mesh_local_ca *ca, const struct mesh_spiffe_id *id,
                                             uint64_t not_before_ns, uint64_t lifetime_ns, int *err);

#endif /* MESH_IDENTITY_H */
