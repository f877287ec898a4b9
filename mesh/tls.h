/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/tls.h - HBONE mutual TLS as an I/O-free engine: OpenSSL over our own buffers.
 *
 * Invariants:
 *  - Settings are fixed by the HBONE contract: TLS 1.3 only; TLS_AES_256_GCM_SHA384 and TLS_AES_128_GCM_SHA256;
 *    groups X25519 and P-256; ALPN "h2" only, required on both sides; no SNI; no session tickets, no resumption.
 *  - Server: a client certificate is mandatory, must chain to the mesh roots (from the ctx's bundle), and one of its
 *    SPIFFE URI SANs must have our trust domain. The peer identity is its first URI SAN that parses.
 *    Client: the server chain must verify to the mesh roots, and one of its URI SANs must equal one of the expected
 *    identities given to mesh_tls_new; no hostname check. The peer identity is the SAN that matched.
 *  - Chain verification runs against the env clock (the validity window is judged at mesh_env now_ns).
 *  - The verified-chain cache lives in the ctx, so it is tied to one set of roots. It is keyed by the SHA-256 of the
 *    whole chain the peer presented (every certificate, in order) and stores only successes; an entry is used only
 *    while now lies inside the intersection of the validity windows of every certificate of the verified chain (and
 *    a TTL), so a hit accepts exactly what a full verification would accept at that time. Identity checks
 *    (expected SANs / trust domain) run on every handshake, cached or not.
 *  - The engine never does I/O: ciphertext comes in through mesh_tls_feed, and everything OpenSSL emits (handshake
 *    flights, records, alerts, close_notify) is appended to the caller's wire_out immediately, including after an
 *    error, so a fatal alert always reaches the caller.
 *  - Ciphertext that cannot be processed yet (plaintext output full) is kept inside the engine, so feed always
 *    consumes all of its input.
 *  - A ctx and its sessions belong to one lcore; the ctx must outlive its sessions. Errors are mapped explicitly from
 *    OpenSSL to enum mesh_err; OpenSSL codes never leak out.
 */
#ifndef MESH_TLS_H
#define MESH_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/buf.h"
#include "mesh/env.h"
#include "mesh/err.h"
#include "mesh/identity.h"
#include "mesh/spiffe.h"

#define MESH_TLS_CACHE_DEFAULT_ENTRIES 64
#define MESH_TLS_CACHE_DEFAULT_TTL_NS (3600ull * 1000000000ull)
#define MESH_TLS_HANDSHAKE_TIMEOUT_NS (10ull * 1000000000ull)
#define MESH_TLS_PENDING_MAX_BYTES (64u * 1024)
#define MESH_TLS_MAX_EXPECTED_IDS 16
#define MESH_TLS_NO_DEADLINE UINT64_MAX

enum mesh_tls_role {
    MESH_TLS_CLIENT,
    MESH_TLS_SERVER,
};

enum mesh_tls_state {
    MESH_TLS_HANDSHAKING,
    MESH_TLS_ESTABLISHED,
    MESH_TLS_PEER_CLOSED, /* peer sent close_notify; we may still write */
    MESH_TLS_FAILED,      /* terminal; the error is in mesh_tls_error() */
};

struct mesh_tls_ctx_opts {
    uint32_t cache_entries;        /* 0: MESH_TLS_CACHE_DEFAULT_ENTRIES */
    bool cache_disabled;           /* true: every handshake verifies the full chain */
    uint64_t cache_ttl_ns;         /* 0: MESH_TLS_CACHE_DEFAULT_TTL_NS */
    uint64_t handshake_timeout_ns; /* 0: MESH_TLS_HANDSHAKE_TIMEOUT_NS */
    size_t pending_max_bytes;      /* ciphertext kept while plaintext output is full; 0: MESH_TLS_PENDING_MAX_BYTES */
};

struct mesh_tls_stats {
    uint64_t handshakes_ok;
    uint64_t handshakes_failed;
    uint64_t chain_verifications; /* full X509 chain verifications run */
    uint64_t cache_hits;
    uint64_t cache_inserts;
    uint64_t cache_evictions;
};

struct mesh_tls_ctx;
struct mesh_tls;

/*
 * Create a context for one role and one local identity.
 * @bundle  our certificate, key and the mesh roots; the ctx takes a reference and drops it in mesh_tls_ctx_free
 * @env     borrowed; must outlive the ctx
 * @opts    NULL for defaults; copied
 * Returns a ctx or NULL and *err = MESH_ERR_NOMEM, MESH_ERR_CONFIG (bundle unusable), MESH_ERR_TLS_LIBRARY.
 */
struct mesh_tls_ctx *mesh_tls_ctx_new(enum mesh_tls_role role, const struct mesh_cert_bundle *bundle,
                                      const struct mesh_env *env, const struct mesh_tls_ctx_opts *opts, int *err);

/* Free the ctx (all its sessions must be freed first). NULL is a no-op. */
void mesh_tls_ctx_free(struct mesh_tls_ctx *ctx);

/* Counters since creation; the pointer lives as long as the ctx. */
const struct mesh_tls_stats *mesh_tls_ctx_stats(const struct mesh_tls_ctx *ctx);

/* Drop every verified-chain cache entry. */
void mesh_tls_ctx_flush_cache(struct mesh_tls_ctx *ctx);

/*
 * Create a session.
 * @expected    client: the identities the server may prove (at least one, at most MESH_TLS_MAX_EXPECTED_IDS),
 *              copied; server: must be NULL/0
 * The handshake deadline starts now (env clock). A client emits its ClientHello on the first mesh_tls_feed call
 * (with len 0).
 * Returns a session or NULL and *err = MESH_ERR_NOMEM, MESH_ERR_CONFIG (bad expected list), MESH_ERR_TLS_LIBRARY.
 */
struct mesh_tls *mesh_tls_new(struct mesh_tls_ctx *ctx, const struct mesh_spiffe_id *expected, size_t n_expected,
                              int *err);

/* Free a session (no close_notify is sent; use mesh_tls_close_notify first for an orderly close). NULL no-op. */
void mesh_tls_free(struct mesh_tls *tls);

/*
 * Feed ciphertext from the peer and run the engine.
 * @in, len    ciphertext, borrowed for the call; all of it is consumed (kept inside if it can't be processed yet)
 * @plain_out  decrypted application bytes are appended (up to its cap); may be NULL during the handshake only
 * @wire_out   bytes to send to the peer are appended (handshake, alerts, key updates)
 * Call with len 0 to start a client handshake, or to resume decryption after draining plain_out when
 * mesh_tls_has_pending() is true.
 * Returns MESH_OK (progress made or more input needed; check mesh_tls_state) or the session's error, which is
 * sticky: every later call returns it again. Errors: MESH_ERR_TLS_* (peer), MESH_ERR_NOMEM, MESH_ERR_BUF_FULL
 * (wire_out or the internal pending buffer hit its cap), MESH_ERR_TLS_LIBRARY.
 */
int mesh_tls_feed(struct mesh_tls *tls, const uint8_t *in, size_t len, struct mesh_buf *plain_out,
                  struct mesh_buf *wire_out);

/*
 * Encrypt application bytes; all of them are written (as records appended to wire_out) or none.
 * Valid in ESTABLISHED and PEER_CLOSED. Returns MESH_OK, MESH_ERR_STATE (handshake not finished, or after
 * close_notify/failure), MESH_ERR_BUF_FULL (wire_out cap; fatal, the session fails), MESH_ERR_NOMEM.
 */
int mesh_tls_write(struct mesh_tls *tls, const uint8_t *plain, size_t len, struct mesh_buf *wire_out);

/* Append a close_notify alert to wire_out (once; later writes fail with MESH_ERR_STATE). Returns MESH_OK,
 * MESH_ERR_STATE (handshake not finished), MESH_ERR_BUF_FULL, MESH_ERR_NOMEM. */
int mesh_tls_close_notify(struct mesh_tls *tls, struct mesh_buf *wire_out);

enum mesh_tls_state mesh_tls_state(const struct mesh_tls *tls);

/* The sticky error (MESH_OK unless FAILED). */
int mesh_tls_error(const struct mesh_tls *tls);

/* The verified peer identity, or NULL before the peer's certificate was accepted. Lives as long as the session. */
const struct mesh_spiffe_id *mesh_tls_peer_identity(const struct mesh_tls *tls);

/* True when the peer's chain was accepted from the cache rather than fully verified (for tests and counters). */
bool mesh_tls_peer_from_cache(const struct mesh_tls *tls);

/* Negotiated protocol details once ESTABLISHED: "TLSv1.3", the IANA suite name, and the ALPN ("h2"). NULL before. */
const char *mesh_tls_version(const struct mesh_tls *tls);
const char *mesh_tls_cipher(const struct mesh_tls *tls);
const char *mesh_tls_alpn(const struct mesh_tls *tls);

/* True when decrypted data or unprocessed ciphertext is held inside (call feed with len 0 once plain_out has room). */
bool mesh_tls_has_pending(const struct mesh_tls *tls);

/* Deadline (env clock, ns) by which the handshake must finish, or MESH_TLS_NO_DEADLINE once it has. */
uint64_t mesh_tls_next_deadline(const struct mesh_tls *tls);

/* Run timers. Returns MESH_OK, or MESH_ERR_HANDSHAKE_TIMEOUT (the session fails) if the handshake deadline passed. */
int mesh_tls_on_deadline(struct mesh_tls *tls, uint64_t now_ns);

#endif /* MESH_TLS_H */
