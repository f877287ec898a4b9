/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/cert_manager.h - workload certificates for the node's local identities (ztunnel-wire-facts.md sections
 * 2.1 and 3.6), on the control thread.
 *
 * Two sources behind one interface:
 *  - istiod: per identity a fresh ECDSA P-256 key and CSR (mesh/ca_client.h), CreateCertificate with
 *    ImpersonatedIdentity through a struct app_cert_ca transport (the xDS agent's channel, see
 *    app_xds_agent_ca_transport), and the answer checked (leaf identity = requested, key matches, chain verifies);
 *  - local CA: leaves minted by mesh/identity.h's local CA (app_cert_local_ca_open loads it from the config paths or
 *    generates it once and persists it).
 *
 * Invariants:
 *  - Each tracked identity moves Initializing -> Available, or -> "Unavailable: <error>" after a failed attempt
 *    that left no valid certificate. A valid certificate is never dropped because a renewal failed: it is served
 *    until it expires.
 *  - Renewal starts at half of the leaf's lifetime. A failed attempt is retried after a backoff that starts at
 *    500 ms, doubles per consecutive failure up to 150 s, with +-20% jitter from the env randomness; a success
 *    resets it. At most APP_CERT_MAX_INFLIGHT CSRs are outstanding at once; the others wait their turn.
 *  - Untracking an identity drops its certificate (existing holders keep their references).
 *  - Time is the env clock (wall clock in ns, as certificate validity needs). All calls but app_cert_manager_get
 *    come from the control thread; app_cert_manager_get may be called from any thread (a mutex guards the bundle
 *    table) and never blocks on I/O.
 */
#ifndef ZW_APP_CERT_MANAGER_H
#define ZW_APP_CERT_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "appliance/config_xds.h"
#include "mesh/env.h"
#include "mesh/identity.h"
#include "mesh/spiffe.h"

#define APP_CERT_MAX_INFLIGHT 8
#define APP_CERT_BACKOFF_INITIAL_NS (500ull * 1000000ull)
#define APP_CERT_BACKOFF_MAX_NS (150ull * 1000000000ull)
#define APP_CERT_BACKOFF_JITTER_PERCENT 20
#define APP_CERT_CALL_TIMEOUT_NS (10ull * 1000000000ull)
#define APP_CERT_NO_DEADLINE UINT64_MAX

/*
 * Completion of one CA call. code is the gRPC status (0 = OK, then msg/len is the IstioCertificateResponse);
 * message a short text (borrowed for the upcall).
 */
typedef void (*app_cert_ca_done_fn)(void *done_u, int code, const char *message, const uint8_t *msg, size_t len);

/* The CA transport: start one unary CreateCertificate call with the serialized request. The transport calls done
 * exactly once, later (never from inside call), also when the channel fails. Returns 0 or -errno (then done is
 * never called). */
struct app_cert_ca {
    int (*call)(void *u, const uint8_t *req, size_t len, app_cert_ca_done_fn done, void *done_u);
    void *u;
};

enum app_cert_state { APP_CERT_INITIALIZING = 0, APP_CERT_AVAILABLE, APP_CERT_UNAVAILABLE };

struct app_cert_manager_stats {
    uint64_t requests;     /* CSRs sent (or local issues) */
    uint64_t issued;       /* certificates accepted */
    uint64_t failures;     /* attempts that failed */
    uint64_t rotations;    /* replacements of a still-valid certificate */
    size_t inflight;
};

struct app_cert_manager;
struct mesh_local_ca;

/*
 * Create a manager.
 * @env       borrowed, must outlive the manager and every bundle it hands out
 * @ca        istiod transport (copied), or NULL to use local
 * @local     the local CA when ca is NULL (borrowed, must outlive the manager)
 * @ttl_s     requested / minted certificate lifetime
 * Returns the manager or NULL and *err = -EINVAL (neither source), -ENOMEM.
 */
struct app_cert_manager *app_cert_manager_new(const struct mesh_env *env, const struct app_cert_ca *ca,
                                              const struct mesh_local_ca *local, uint32_t ttl_s, int *err);

/* Free the manager (outstanding transport calls must be completed or the transport freed first). NULL is a no-op. */
void app_cert_manager_free(struct app_cert_manager *cm);

/* Start (or keep) managing id; its first request is due now. Returns 0, -ENOMEM. */
int app_cert_manager_track(struct app_cert_manager *cm, const struct mesh_spiffe_id *id);
/* Stop managing id (no-op when unknown). */
void app_cert_manager_untrack(struct app_cert_manager *cm, const struct mesh_spiffe_id *id);

/*
 * Track exactly the identities of the workloads scheduled on node_name in a workload snapshot (mesh/workload.h):
 * new ones are added, ones no longer present are untracked. Returns 0 or -ENOMEM.
 */
struct mesh_workloads;
int app_cert_manager_sync(struct app_cert_manager *cm, const struct mesh_workloads *ws, const char *node_name);

/* Run due work: start due requests (at most APP_CERT_MAX_INFLIGHT outstanding), mint local certificates. Call it
 * when app_cert_manager_next_deadline passes, after track/sync, and after each transport completion. */
void app_cert_manager_tick(struct app_cert_manager *cm);

/* When tick next has something to do (env clock ns), or APP_CERT_NO_DEADLINE. */
uint64_t app_cert_manager_next_deadline(const struct app_cert_manager *cm);

/* A valid certificate for id: a NEW reference (drop it with mesh_identity_bundle_unref), or NULL. Thread-safe.
 * Matches mesh_proxy_get_bundle_fn with u = the manager. */
const struct mesh_cert_bundle *app_cert_manager_get(void *u, const struct mesh_spiffe_id *id);

/* State of id now, and its text ("Initializing", "Available", "Unavailable: <err>") into buf. Returns the state,
 * or -ENOENT when id is not tracked. */
int app_cert_manager_state(const struct app_cert_manager *cm, const struct mesh_spiffe_id *id, char *buf,
                           size_t cap);

/* When the next attempt for id is due (env clock ns), and its current backoff (0 after a success). For tests and
 * the dump. Return -ENOENT when id is not tracked. */
int app_cert_manager_schedule(const struct app_cert_manager *cm, const struct mesh_spiffe_id *id, uint64_t *next_ns,
                              uint64_t *backoff_ns);

/*
 * The /config_dump "certificates" array in ztunnel's shape (facts section 1): [{identity, state, certChain[],
 * rootCerts[]}], each cert {pem (base64 of PEM), serialNumber, validFrom, expirationTime (RFC 3339)}. A new
 * reference. Control thread.
 */
json_t *app_cert_manager_dump(const struct app_cert_manager *cm);

const struct app_cert_manager_stats *app_cert_manager_stats(const struct app_cert_manager *cm);

/*
 * Local CA for the no-xds mode: with cfg->cert/key, load them (and cfg->roots); otherwise load
 * <state_dir>/ca-cert.pem + ca-key.pem, or generate a P-256 root for cfg->trust_domain and write them there
 * (key 0600, directory created 0700). Returns the CA or NULL and *err = -errno, with a reason in why.
 */
struct mesh_local_ca *app_cert_local_ca_open(const struct mesh_env *env, const struct app_local_ca_config *cfg,
                                             char *why, size_t why_cap, int *err);

#endif
