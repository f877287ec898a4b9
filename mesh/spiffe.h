/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/spiffe.h - Istio SPIFFE identities: spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
 *
 * Invariants:
 *  - The accepted grammar is exactly the one ztunnel accepts: the "spiffe://" prefix (case-sensitive), then exactly
 *    five '/'-separated segments TD, "ns", NS, "sa", SA. Any segment value may be empty and may contain dots (or any
 *    byte except '/' and NUL). Missing or extra segments make the ID invalid. No normalisation is applied.
 *  - A struct mesh_spiffe_id is a plain value (fixed arrays, NUL-terminated), safe to copy with '='.
 */
#ifndef MESH_SPIFFE_H
#define MESH_SPIFFE_H

#include <stdbool.h>
#include <stddef.h>

#define MESH_SPIFFE_PREFIX "spiffe://"
#define MESH_SPIFFE_SEGMENT_MAX_BYTES 255 /* per segment, without the NUL */
/* Longest URI: prefix + TD + "/ns/" + NS + "/sa/" + SA, plus the NUL. */
#define MESH_SPIFFE_URI_MAX_BYTES (9 + 3 * MESH_SPIFFE_SEGMENT_MAX_BYTES + 8 + 1)
#define MESH_SPIFFE_DEFAULT_TRUST_DOMAIN "cluster.local"
#define MESH_SPIFFE_DEFAULT_SERVICE_ACCOUNT "default"

struct mesh_spiffe_id {
    char td[MESH_SPIFFE_SEGMENT_MAX_BYTES + 1];
    char ns[MESH_SPIFFE_SEGMENT_MAX_BYTES + 1];
    char sa[MESH_SPIFFE_SEGMENT_MAX_BYTES + 1];
};

/*
 * Parse a SPIFFE URI.
 * @uri  bytes of the URI, not necessarily NUL-terminated; borrowed
 * @len  number of bytes
 * @out  filled on success; left unspecified on failure
 * Returns 0, -EINVAL when the URI does not match the grammar (or contains a NUL byte), -ENAMETOOLONG when a segment
 * exceeds MESH_SPIFFE_SEGMENT_MAX_BYTES.
 */
int mesh_spiffe_parse(const char *uri, size_t len, struct mesh_spiffe_id *out);

/*
 * Format id as "spiffe://TD/ns/NS/sa/SA" into out (always NUL-terminated when cap > 0).
 * Returns the length written (without the NUL), or -ENOSPC when cap is too small (out then holds a truncated
 * string), or -EINVAL when a segment contains '/' (it would not parse back).
 */
int mesh_spiffe_format(const struct mesh_spiffe_id *id, char *out, size_t cap);

/*
 * Build an identity from its parts, applying Istio's xDS defaults: an empty or NULL td becomes "cluster.local" and an
 * empty or NULL sa becomes "default"; ns is taken as is (NULL = empty).
 * Returns 0, -EINVAL when a part contains '/', or -ENAMETOOLONG.
 */
int mesh_spiffe_from_parts(const char *td, const char *ns, const char *sa, struct mesh_spiffe_id *out);

/* Exact comparison of all three segments. */
bool mesh_spiffe_eq(const struct mesh_spiffe_id *a, const struct mesh_spiffe_id *b);

/* Exact comparison of the trust domains. */
bool mesh_spiffe_same_trust_domain(const struct mesh_spiffe_id *a, const struct mesh_spiffe_id *b);

#endif /* MESH_SPIFFE_H */
