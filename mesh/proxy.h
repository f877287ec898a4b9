/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/proxy.h - the ztunnel-equivalent L4 proxy: the API every network backend (appliance/conn_kernel.c,
 * dpdk/conn_dpdk.c, tests/fakes/fake_conn.c) drives.
 *
 * The backend accepts TCP connections on its three listeners and hands each one over:
 *   15001 outbound capture     -> mesh_proxy_accept_outbound       (resolve, then HBONE via the pool or passthrough)
 *   15008 HBONE termination    -> mesh_proxy_accept_inbound_hbone  (mTLS + HTTP/2 CONNECT served here)
 *   15006 inbound plaintext    -> mesh_proxy_accept_inbound_plain  (authz without identity, then relay)
 * Everything else (dialing the upstream, TLS, HTTP/2, relaying, timers) happens inside, through the mesh_conn_ops
 * given to mesh_proxy_new.
 *
 * Invariants:
 *  - One proxy per lcore (or per test). Every call and every upcall into it runs on that thread. The proxy does no
 *    I/O of its own: it only calls the mesh_conn_ops it was given, reads time from env->now_ns and allocates from env.
 *  - Ownership of an accepted connection passes to the proxy when mesh_proxy_accept_* is called, whatever it returns.
 *    On 0 the backend routes that connection's upcalls to *cb_out / *u_out (it must install them before delivering
 *    any upcall); on -errno the proxy has already aborted the connection (it is dead) and nothing follows.
 *  - The proxy never delivers the backend's upcalls re-entrantly: work that would re-enter (HBONE flushes, stream
 *    resumes, frees) is queued and run when the outermost entry point returns.
 *  - Every proxied connection ends in exactly one teardown, which emits exactly one access-log record and bumps the
 *    closed/bytes counters once; the reason is a word of the fixed vocabulary (mesh/err.h enum mesh_reason).
 *  - Each connection keeps a reference to the workload snapshot it was resolved with (its telemetry labels come from
 *    it, so the opened and closed counters of one connection land in the same series). mesh_proxy_set_workloads only
 *    affects connections accepted afterwards; mesh_proxy_update also re-checks the live ones against the new state.
 *  - Live configuration updates (mesh_proxy_update) take effect for new connections at once. Live connections are
 *    re-checked lazily, at most MESH_PROXY_RECHECK_SLICE (or cfg.recheck_slice) per call: the first slice inside
 *    mesh_proxy_update, the rest from mesh_proxy_on_deadline, with mesh_proxy_next_deadline reporting "now" until the
 *    pass is over. A connection accepted after the update never needs the pass (it was resolved with the new state).
 *  - Byte directions: "received" = client -> server (what the reporter's server side received), "sent" = server ->
 *    client, in the access log and in the counters alike (facts §5).
 */
#ifndef MESH_PROXY_H
#define MESH_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/conn.h"
#include "mesh/env.h"
#include "mesh/err.h"
#include "mesh/identity.h"
#include "mesh/metrics.h"
#include "mesh/spiffe.h"
#include "mesh/tls.h"
#include "mesh/workload.h"

/* Listener ports (host order). Destinations on these ports are "illegal" (self-call guard, facts §1). */
#define MESH_PROXY_OUTBOUND_PORT 15001
#define MESH_PROXY_INBOUND_PLAIN_PORT 15006
#define MESH_PROXY_HBONE_PORT 15008
#define MESH_PROXY_SOCKS5_PORT 15080
#define MESH_PROXY_CONNECT_TIMEOUT_NS (10ull * 1000000000ull)
#define MESH_PROXY_LOOKUP_TIMEOUT_NS (5ull * 1000000000ull)
#define MESH_PROXY_LOOKUP_POLL_NS (20ull * 1000000ull) /* a waiting connection asks the hook again this often */
#define MESH_PROXY_NO_DEADLINE UINT64_MAX
/* Live connections re-checked per call after mesh_proxy_update (default of mesh_proxy_config.recheck_slice). */
#define MESH_PROXY_RECHECK_SLICE 256u

enum mesh_mtls_mode {
    MESH_MTLS_PERMISSIVE = 0, /* plaintext inbound allowed (subject to authz) */
    MESH_MTLS_STRICT = 1,     /* plaintext inbound denied */
};

enum mesh_proxy_direction {
    MESH_PROXY_OUTBOUND = 0,      /* reporter "source" */
    MESH_PROXY_INBOUND_HBONE = 1, /* reporter "destination" */
    MESH_PROXY_INBOUND_PLAIN = 2, /* reporter "destination" */
};

enum mesh_proxy_verdict {
    MESH_PROXY_ALLOW = 0,
    MESH_PROXY_DENY = 1,
};

/*
 * What the authorization hook sees for one inbound connection (the "conn record"). All pointers are borrowed for the
 * duration of the hook call only.
 */
struct mesh_proxy_conn_info {
    enum mesh_proxy_direction direction;
    const struct mesh_spiffe_id *src_identity; /* verified TLS peer identity; NULL for plaintext */
    struct mesh_addr src;                      /* client address (HBONE: the TCP peer of the tunnel) */
    struct mesh_addr dst;                      /* the local target: pod IP and target port */
    const struct mesh_workload *src_workload;  /* looked up by the source IP; NULL if unknown */
    const struct mesh_workload *dst_workload;  /* the local destination workload; never NULL */
    enum mesh_mtls_mode mtls_mode;             /* the node's configured mode */
};

/*
 * Authorization hook (mesh/authz.h plugs in here). Pure: no side effects on the proxy, no calls back into it.
 * Returns MESH_PROXY_ALLOW or MESH_PROXY_DENY. With no hook configured, the proxy allows everything except plaintext
 * under STRICT, which it denies before the hook runs.
 */
typedef enum mesh_proxy_verdict (*mesh_proxy_authz_fn)(void *u, const struct mesh_proxy_conn_info *info);

/*
 * Certificate lookup for a local identity (the backend's CA or file loader manages the bundles). Returns a NEW
 * reference (the proxy drops it with mesh_identity_bundle_unref) or NULL when no certificate is available (the
 * connection then fails with reason "tls"). Called at most once per new TLS session, and once per cached identity in
 * mesh_proxy_update; the proxy caches TLS contexts per bundle pointer, so returning a different bundle (rotation)
 * takes effect on the next session.
 */
typedef const struct mesh_cert_bundle *(*mesh_proxy_get_bundle_fn)(void *u, const struct mesh_spiffe_id *id);

/*
 * On-demand lookup: an outbound connection's destination is neither a workload nor a service VIP of the snapshot.
 * The hook asks the control plane about dst's IP, or tells what it knows (called on the proxy's thread; must not
 * block). MESH_LOOKUP_PENDING: asked and not answered yet; the connection waits, and goes on as soon as a snapshot
 * (mesh_proxy_update) knows the destination (tunnelled), or the hook, asked again every MESH_PROXY_LOOKUP_POLL_NS,
 * answers MESH_LOOKUP_UNKNOWN, or lookup_timeout_ns passed (both: passed through). MESH_LOOKUP_UNKNOWN at once:
 * nothing will name it (answered before, or not asking); the connection goes on at once.
 */
enum mesh_proxy_lookup { MESH_LOOKUP_UNKNOWN = 0, MESH_LOOKUP_PENDING = 1 };
typedef enum mesh_proxy_lookup (*mesh_proxy_lookup_fn)(void *u, const struct mesh_addr *dst);

/* One access-log record, emitted once per connection at teardown. Strings are borrowed for the call, never NULL
 * ("" when unknown). */
struct mesh_proxy_access_record {
    enum mesh_proxy_direction direction;
    const char *direction_str;  /* "outbound" / "inbound" */
    struct mesh_addr src;       /* client address */
    struct mesh_addr dst;       /* outbound: original destination; inbound: the local target (pod IP:port) */
    bool has_hbone_addr;        /* the tunnel's address is in hbone_addr */
    struct mesh_addr hbone_addr; /* outbound: <pod IP>:15008 dialled; inbound HBONE: the local <pod IP>:15008 */
    const char *src_workload;
    const char *src_namespace;
    const char *src_identity;   /* spiffe://... (outbound: our pod's identity; inbound: the TLS peer) */
    const char *dst_service;    /* service hostname when service-addressed */
    const char *dst_workload;
    const char *dst_namespace;
    const char *dst_identity;
    uint64_t bytes_sent;        /* server -> client */
    uint64_t bytes_recv;        /* client -> server */
    uint64_t start_ns;          /* env clock at accept */
    uint64_t duration_ns;
    int err;                    /* MESH_OK, an enum mesh_err, or -errno */
    enum mesh_reason reason;    /* MESH_REASON_NONE on success */
    const char *reason_str;     /* "" on success, else the vocabulary word */
    const char *response_flags; /* metrics response_flags value: "-", "DENY", "CONNECT", "TLS_FAILURE", ... */
    int hbone_status;           /* CONNECT status answered (inbound) or received (outbound), 0 if none */
};

typedef void (*mesh_proxy_access_log_fn)(void *u, const struct mesh_proxy_access_record *rec);

struct mesh_proxy_config {
    const char *node_name;                    /* copied; selects which workloads are local (Workload.node) */
    const struct mesh_workloads *workloads;   /* the proxy takes its own reference; may be NULL (empty mesh) */
    enum mesh_mtls_mode mtls_mode;
    mesh_proxy_get_bundle_fn get_bundle;      /* required */
    void *get_bundle_u;
    mesh_proxy_authz_fn authz;                /* NULL: allow (STRICT still denies plaintext) */
    void *authz_u;
    mesh_proxy_access_log_fn access_log;      /* NULL: no access log */
    void *access_log_u;
    struct mesh_metrics *metrics;             /* NULL: no counters; borrowed, must outlive the proxy */
    uint16_t hbone_port;                      /* host order; 0 means MESH_PROXY_HBONE_PORT */
    uint32_t pool_max_streams;                /* 0 means MESH_POOL_DEFAULT_MAX_STREAMS (100) */
    uint64_t pool_idle_ns;                    /* 0 means MESH_POOL_DEFAULT_IDLE_NS (5 min) */
    uint64_t connect_timeout_ns;              /* 0 means MESH_PROXY_CONNECT_TIMEOUT_NS */
    mesh_proxy_lookup_fn lookup;              /* NULL: unknown destinations are passed through at once */
    void *lookup_u;
    uint64_t lookup_timeout_ns;               /* 0 means MESH_PROXY_LOOKUP_TIMEOUT_NS */
    size_t relay_buf_bytes;                   /* per direction staging cap; 0 means 256 KiB */
    const struct mesh_tls_ctx_opts *tls_opts; /* NULL for defaults; copied */
    uint32_t recheck_slice;                   /* live connections re-checked per call after an update; 0 means
                                                 MESH_PROXY_RECHECK_SLICE */
};

/*
 * A live configuration update (mesh_proxy_update). Everything is replaced together; fields not listed here (node
 * name, hooks for the access log and the certificates, metrics, timeouts) keep their values.
 */
struct mesh_proxy_update {
    const struct mesh_workloads *workloads; /* the new snapshot; the proxy takes its own reference; NULL: empty mesh */
    enum mesh_mtls_mode mtls_mode;
    bool replace_authz;                     /* true: authz below replaces the hook (NULL: allow); false: keep it */
    mesh_proxy_authz_fn authz;
    void *authz_u;                          /* always replaces the authorization hook's user pointer */
    void *get_bundle_u;                     /* always replaces the certificate hook's user pointer */
};

/* Live counters of one proxy (for tests and /stats). The pointer lives as long as the proxy. */
struct mesh_proxy_stats {
    uint64_t active;          /* proxied connections not yet torn down */
    uint64_t opened;          /* accepted */
    uint64_t closed;          /* torn down (one access-log record each) */
    uint64_t failed;          /* torn down with a reason */
    uint64_t pool_conns;      /* live outbound HBONE connections */
    uint64_t inbound_conns;   /* live inbound HBONE connections */
    uint64_t pool_handshakes; /* outbound HBONE connections opened */
    uint64_t updates;         /* mesh_proxy_update calls applied */
    uint64_t rechecked;       /* live connections re-checked after an update (once per connection per pass) */
    uint64_t recheck_closed;  /* of those, closed: now denied ("denied") or no longer routable ("unroutable") */
    uint64_t recheck_pending; /* 1 while a re-check pass still has connections to visit, else 0 */
    uint64_t pool_drained;    /* pooled HBONE connections set to drain because their certificate changed */
    uint64_t lookups;         /* outbound connections that waited for an on-demand lookup */
    uint64_t lookups_resolved; /* of those, known after the wait (the others were passed through) */
};

struct mesh_proxy;

/*
 * Create a proxy.
 * @env      borrowed; must outlive the proxy
 * @ops      the backend's connection operations; borrowed, must outlive the proxy
 * @backend  passed as the first argument of ops->dial
 * @cfg      copied (node_name copied, workloads referenced, metrics borrowed)
 * @err      on failure, a static message
 * Returns the proxy or NULL (*err set: bad config or out of memory).
 */
struct mesh_proxy *mesh_proxy_new(const struct mesh_env *env, const struct mesh_conn_ops *ops, void *backend,
                                  const struct mesh_proxy_config *cfg, const char **err);

/*
 * Replace the workload snapshot (the proxy takes a reference and drops its old one). New connections use it;
 * established ones keep theirs and are not re-checked (mesh_proxy_update does that). NULL means an empty mesh.
 */
void mesh_proxy_set_workloads(struct mesh_proxy *p, const struct mesh_workloads *w);

/*
 * Apply a live configuration update, as one step: the workload snapshot, the authorization hook's user pointer (and
 * the hook itself when u->replace_authz), the certificate hook's user pointer and the mTLS mode. Connections accepted
 * from now on (including new streams on live inbound HBONE connections) use the new values.
 *
 * Then every live proxied connection is re-checked against the new state (ztunnel's late rejection, facts §4),
 * lazily: up to the slice size here, the rest from mesh_proxy_on_deadline (mesh_proxy_next_deadline reports "now"
 * meanwhile). A new update during a pass restarts it against the newest state. Per direction:
 *  - inbound (HBONE and plaintext): the destination workload is looked up again by the local target address. If it is
 *    gone, no longer on this node, or the address now belongs to another workload (uid differs), the connection is
 *    closed as denied, as ztunnel's assert_rbac fails when the destination workload is not found. Plaintext under a
 *    now-STRICT mode is closed as denied without calling the hook. Otherwise the hook sees a conn_info rebuilt from the
 *    new snapshot (source workload looked up again, the mode now in force); DENY closes it. "Closed" means both legs
 *    are aborted (the HBONE stream is reset; a CONNECT still unanswered gets 401) and the connection's one access-log
 *    record says reason "denied", response_flags "DENY".
 *  - outbound: the original destination is resolved again the way a new connection would be (service VIP:port first,
 *    then workload IP). A service-addressed connection keeps flowing while the same service (namespace/hostname)
 *    still owns that VIP and port, whichever endpoint a new connection would pick; a workload-addressed one while the
 *    same workload (uid) still owns the IP and no service claims it. Otherwise it is closed with reason "unroutable".
 *    Destinations that never resolved (plain passthrough) are left alone, and so is a source pod that left the
 *    snapshot (its own sockets end with it).
 *  - certificates: for every local identity with a cached TLS context, the certificate hook is asked again (with the
 *    new user pointer). When it returns a different bundle, new sessions use it, and pooled outbound HBONE connections
 *    of that identity take no new streams and are drained (GOAWAY, then close) once their streams end; their live
 *    streams are not cut. A NULL answer (no certificate now) changes nothing for live connections. Inbound HBONE
 *    connections keep serving with the certificate they presented; the peer decides when to reconnect.
 * Applying the update never allocates, so it cannot fail for lack of memory; closing connections only needs memory
 * for the frames that announce the closes (RST_STREAM, GOAWAY), and a failure there kills that HBONE connection
 * instead (every connection is still closed and logged exactly once).
 * Must not be called from inside one of the proxy's hooks (authz, access log, certificates).
 * @u  borrowed for the call (the snapshot is referenced)
 * Returns 0, or -EINVAL (u NULL or an invalid mtls_mode; nothing changed).
 */
int mesh_proxy_update(struct mesh_proxy *p, const struct mesh_proxy_update *u);

/*
 * Hand over a connection captured from a local pod (listener 15001).
 * @src       the pod's address (the TCP peer)
 * @orig_dst  the original destination the pod dialled (SO_ORIGINAL_DST)
 * @cb_out, @u_out  on 0: the upcalls and user pointer the backend must use for c from now on
 * Returns 0, or -ENOMEM / -EINVAL (c already aborted). Rejections (self-call guard, unknown source, no endpoint)
 * return 0 and tear the connection down through the normal path (one access-log record, c reset).
 */
int mesh_proxy_accept_outbound(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                               const struct mesh_addr *orig_dst, const struct mesh_conn_cb **cb_out, void **u_out);

/*
 * Hand over a TCP connection to <local pod IP>:15008 (listener 15008). The proxy terminates TLS with the certificate
 * of the workload owning dst's IP, requires a client certificate, serves HTTP/2 CONNECT streams on it, and for each
 * stream runs the facts §2.4 rules (400/401/503/200), dials the pod from the client's IP (src) and relays.
 * @src  the TCP peer (the client pod's IP in in-pod mode), @dst  the local pod IP and port 15008
 * Returns as mesh_proxy_accept_outbound. An unknown local workload is answered by resetting c (no certificate).
 */
int mesh_proxy_accept_inbound_hbone(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                                    const struct mesh_addr *dst, const struct mesh_conn_cb **cb_out, void **u_out);

/*
 * Hand over a plaintext connection to a local pod (listener 15006). Authorization runs with no identity (STRICT
 * denies); on allow the proxy dials orig_dst from src and relays.
 * Returns as mesh_proxy_accept_outbound.
 */
int mesh_proxy_accept_inbound_plain(struct mesh_proxy *p, struct mesh_conn *c, const struct mesh_addr *src,
                                    const struct mesh_addr *orig_dst, const struct mesh_conn_cb **cb_out,
                                    void **u_out);

/* Earliest env-clock time at which mesh_proxy_on_deadline must run, or MESH_PROXY_NO_DEADLINE. While a re-check pass
 * after mesh_proxy_update is pending this is the current env time (call back at once). */
uint64_t mesh_proxy_next_deadline(const struct mesh_proxy *p);

/* Run the timers due at now_ns: the next slice of a pending re-check pass, connect timeouts, TLS handshake timeouts,
 * HTTP/2 keepalive, pool idle release. */
void mesh_proxy_on_deadline(struct mesh_proxy *p, uint64_t now_ns);

/* Counters of this proxy. */
const struct mesh_proxy_stats *mesh_proxy_stats(const struct mesh_proxy *p);

/*
 * Abort every connection (each emits its access-log record with reason "internal"), then free the proxy. Every
 * mesh_conn it held is aborted through ops->abort. NULL is a no-op.
 */
void mesh_proxy_free(struct mesh_proxy *p);

/* One live connection, for listings (zwirectl connections). An identity is "" when there is none (or, rarely, when
 * it is longer than the view holds). */
#define MESH_PROXY_VIEW_ID_BYTES 192
struct mesh_proxy_conn_view {
    enum mesh_proxy_direction dir;
    const char *state; /* static: "resolving", "connecting", "relaying" */
    struct mesh_addr src, dst;
    char src_identity[MESH_PROXY_VIEW_ID_BYTES];
    char dst_identity[MESH_PROXY_VIEW_ID_BYTES];
    uint64_t bytes_sent, bytes_recv; /* to the client, from the client */
    uint64_t start_ns;               /* env clock */
};

/* Fill up to max views of p's live connections (on p's thread). Returns how many were filled. */
size_t mesh_proxy_list(const struct mesh_proxy *p, struct mesh_proxy_conn_view *out, size_t max);

/* Static strings. */
const char *mesh_proxy_direction_str(enum mesh_proxy_direction d);
const char *mesh_mtls_mode_str(enum mesh_mtls_mode m);

#endif /* MESH_PROXY_H */
