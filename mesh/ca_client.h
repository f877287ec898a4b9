/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/ca_client.h - Istio CA client messages: CSR creation, IstioCertificateRequest encoding and
 * IstioCertificateResponse checking (ztunnel-wire-facts.md section 3.6). The call itself runs on a
 * mesh/xds_conn.h channel (MESH_CA_PATH, unary).
 *
 * Invariants:
 *  - Keys are ECDSA P-256 from OpenSSL's DRBG; CSRs have an empty subject and one URI SAN (the requested SPIFFE ID)
 *    in the extension request, signed with SHA-256, like ztunnel's.
 *  - In node-agent (shared) mode the requested identity goes into metadata.fields["ImpersonatedIdentity"] as a
 *    string; the caller authenticates with its own token.
 *  - A response is accepted only when its leaf (element 0) carries exactly the requested identity, the private key
 *    matches it, and the chain verifies to the configured roots; the last element is istiod's root and is not put in
 *    the bundle's chain.
 *  - No I/O: PEM text and bytes in, bundles and bytes out. All memory handed back comes from the env.
 */
#ifndef MESH_CA_CLIENT_H
#define MESH_CA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "mesh/buf.h"
#include "mesh/env.h"
#include "mesh/identity.h"
#include "mesh/spiffe.h"

#define MESH_CA_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"
#define MESH_CA_IMPERSONATED_IDENTITY_KEY "ImpersonatedIdentity"
#define MESH_CA_DEFAULT_VALIDITY_S 86400 /* SECRET_TTL default */
#define MESH_CA_MAX_CHAIN 8

/*
 * Make a fresh P-256 key and a CSR for id.
 * @csr_pem  receives a NUL-terminated PEM string allocated with env (free with mesh_env_free); @csr_len its length
 * @key      receives the private key (free with EVP_PKEY_free)
 * Returns 0, -EINVAL (id does not format), -EIO (OpenSSL failure), -ENOMEM.
 */
int mesh_ca_csr_new(const struct mesh_env *env, const struct mesh_spiffe_id *id, char **csr_pem, size_t *csr_len,
                    EVP_PKEY **key);

/*
 * Append a serialized IstioCertificateRequest {csr, validity_duration, metadata} to out (no gRPC prefix).
 * @impersonate  the identity to ask for in node-agent mode, or NULL to ask for the caller's own
 * Returns 0, -EINVAL, -ENOBUFS, -ENOMEM.
 */
int mesh_ca_request_encode(const struct mesh_env *env, const char *csr_pem, int64_t validity_s,
                           const struct mesh_spiffe_id *impersonate, struct mesh_buf *out);

/*
 * Check an IstioCertificateResponse and build the workload bundle.
 * @msg, len    the serialized response (no gRPC prefix)
 * @expected    the identity that was requested
 * @key         the CSR's private key (the bundle takes its own reference)
 * @roots_pem   the mesh trust roots to verify against and to put in the bundle; NULL/0 means the response's last
 *              element is trusted as the root
 * @reason      receives a short NUL-terminated explanation on failure (may be NULL)
 * Returns 0 and *out (one reference), -EBADMSG (not a response, empty chain, unparseable PEM), -EACCES (the leaf's
 * identity differs from expected), -EINVAL (chain does not verify, key mismatch), -ENOMEM.
 */
int mesh_ca_response_decode(const struct mesh_env *env, const uint8_t *msg, size_t len,
                            const struct mesh_spiffe_id *expected, EVP_PKEY *key, const char *roots_pem,
                            size_t roots_len, struct mesh_cert_bundle **out, char *reason, size_t reason_cap);

#endif /* MESH_CA_CLIENT_H */
