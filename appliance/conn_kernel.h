/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/conn_kernel.h - the kernel-socket backend of mesh/conn.h: one epoll loop per thread (struct app_kloop),
 * non-blocking TCP sockets, listeners for captured traffic, and the timers of the mesh engines it drives.
 *
 * Invariants:
 *  - A loop and everything created from it (connections, listeners, engines) belong to the thread that runs
 *    app_kloop_poll(); nothing here is thread-safe.
 *  - Upcalls (struct mesh_conn_cb, accept callbacks, engine deadlines) are only ever made from app_kloop_poll(),
 *    never from inside a downcall (write, read_enable, shutdown_wr, abort, dial). Anything a downcall discovers
 *    (a refused dial, a reset seen by write, data kept back by read_enable) is queued and delivered by the loop.
 *  - A connection gets at most one on_closed(), and nothing after it; abort() delivers nothing at all. The memory of
 *    a dead connection is released at the end of the loop iteration, so stale epoll events never touch freed memory.
 *  - No user-space send buffer: write() hands bytes to the kernel socket buffer and returns what it took; when the
 *    kernel buffer is full the call is partial and on_writable follows. shutdown_wr() is therefore immediate.
 *  - Bytes the consumer leaves unconsumed in on_data are kept (at most APP_KCONN_RX_MAX_BYTES) and offered again,
 *    prefixed to new data. When that buffer is full and on_data takes nothing, reading stops until the consumer
 *    calls read_enable(true).
 *  - Every socket the loop dials carries the loop's SO_MARK (0x539 in the node) so the node's capture rules let it
 *    through; a loop with mark 0 sets none (unit tests, no privileges).
 *  - Deadlines of registered engines are absolute nanoseconds on the loop's clock (the mesh env's now_ns);
 *    UINT64_MAX means none. epoll waits no longer than the nearest one.
 */
#ifndef ZW_APP_CONN_KERNEL_H
#define ZW_APP_CONN_KERNEL_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mesh/conn.h"
#include "mesh/env.h"

#define APP_KCONN_RX_CHUNK_BYTES 16384u  /* one read() per readable event and connection */
#define APP_KCONN_RX_MAX_BYTES 65536u    /* bound of the per-connection unconsumed-bytes buffer */
#define APP_KLOOP_DIAL_TIMEOUT_MS 10000u /* default connect timeout; -ETIMEDOUT after it */
#define APP_KLOOP_MAX_EVENTS 64
#define APP_KLOOP_MAX_ENGINES 8
#define APP_KLOOP_MESH_MARK 0x539u /* "from the proxy": exempt from capture */

struct app_kloop;
struct app_klistener;

/* How a listener learns the original destination of what it accepts. */
enum app_klisten_kind {
    APP_KLISTEN_PLAIN,    /* an ordinary listener: the destination is the local address (getsockname) */
    APP_KLISTEN_REDIRECT, /* fed by nft REDIRECT (nat): SO_ORIGINAL_DST, falling back to getsockname */
    APP_KLISTEN_TPROXY,   /* fed by nft TPROXY: IP_TRANSPARENT listener; getsockname is the original destination */
};

/*
 * A connection was accepted. Runs from app_kloop_poll(). Before returning, the callee either attaches its
 * callbacks with app_kconn_set_cb() (the connection is then the mesh side's, as mesh/conn.h describes) or calls
 * ops->abort(c). A connection left without callbacks is reset when the callback returns.
 * @param u         the pointer given to app_kloop_listen()
 * @param l         the listener
 * @param c         the new connection (established)
 * @param src       the client's address (borrowed for the call)
 * @param orig_dst  the destination the client dialled (borrowed for the call)
 */
typedef void (*app_kloop_accept_fn)(void *u, struct app_klistener *l, struct mesh_conn *c, const struct mesh_addr *src,
                                    const struct mesh_addr *orig_dst);

/* A timer source driven by the loop (a mesh engine: next_deadline / on_deadline). */
struct app_kloop_engine {
    uint64_t (*next_deadline)(void *u);            /* absolute ns on the loop's clock, UINT64_MAX for none */
    void (*on_deadline)(void *u, uint64_t now_ns); /* called when now >= next_deadline */
    void *u;
};

/* Counters of one loop (read by the management API on the same thread). */
struct app_kloop_stats {
    uint64_t accepted;
    uint64_t accept_errors;
    uint64_t dialed;
    uint64_t dial_errors;
    uint64_t connect_timeouts;
    uint64_t closed;
    uint64_t aborted;
    uint64_t rx_bytes;
    uint64_t tx_bytes;
    uint64_t rx_dropped_at_fin; /* unconsumed bytes discarded when the peer's FIN arrived */
    uint64_t iterations;
    uint64_t live_conns;
};

/* The operations table (mesh/conn.h) of this backend. dial() takes a struct app_kloop * as backend. */
extern const struct mesh_conn_ops app_kconn_ops;

/*
 * Create a loop.
 * @param env  clock for engine deadlines (env->now_ns); borrowed, must outlive the loop. NULL: CLOCK_REALTIME.
 * @param err  set to -errno on failure.
 * @return the loop (app_kloop_free()) or NULL.
 */
struct app_kloop *app_kloop_new(const struct mesh_env *env, int *err);

/*
 * Close every connection (reset, no upcalls) and listener, then free the loop. NULL is allowed.
 */
void app_kloop_free(struct app_kloop *loop);

/* Set the SO_MARK put on every dialled socket (0: none, the default). Setting a mark needs CAP_NET_ADMIN; a dial
 * whose mark cannot be set fails with -EPERM. */
void app_kloop_set_mark(struct app_kloop *loop, uint32_t mark);

/* Set the connect timeout of later dials, in milliseconds (0: APP_KLOOP_DIAL_TIMEOUT_MS). */
void app_kloop_set_dial_timeout(struct app_kloop *loop, uint32_t ms);

/*
 * Listen on addr (family, IP and port; IP all-zero for any address).
 * @param kind   how the original destination is found; APP_KLISTEN_TPROXY sets IP_TRANSPARENT (CAP_NET_ADMIN)
 * @param cb     accept callback (see app_kloop_accept_fn); u is passed back to it
 * @param out    set to the listener on success; owned by the loop (app_klistener_close() or app_kloop_free())
 * @return 0 or -errno (-EADDRINUSE, -EPERM for TPROXY without privileges, -EINVAL for a bad family).
 */
int app_kloop_listen(struct app_kloop *loop, const struct mesh_addr *addr, enum app_klisten_kind kind,
                     app_kloop_accept_fn cb, void *u, struct app_klistener **out);

/* The bound address of a listener (port filled in when listening on port 0). */
void app_klistener_addr(const struct app_klistener *l, struct mesh_addr *out);

/* Stop listening and free the listener. Connections it accepted are not affected. */
void app_klistener_close(struct app_klistener *l);

/*
 * Attach the mesh side's callbacks to a connection: an accepted one inside the accept callback (upcalls start from
 * the next loop iteration), or any live one later, on the owning thread, to route its upcalls elsewhere (from then
 * on every upcall goes to the new cb/u). Never an upcall from inside this call.
 */
void app_kconn_set_cb(struct mesh_conn *c, const struct mesh_conn_cb *cb, void *u);

/* The socket behind a connection, for diagnostics (getsockopt TCP_INFO and such); -1 once closed. */
int app_kconn_fd(const struct mesh_conn *c);

/*
 * Register a timer source. @return 0, or -ENOSPC beyond APP_KLOOP_MAX_ENGINES.
 * The engine struct is copied; its u must stay valid until app_kloop_remove_engine() or app_kloop_free().
 */
int app_kloop_add_engine(struct app_kloop *loop, const struct app_kloop_engine *e);

/* Unregister every engine with this u. */
void app_kloop_remove_engine(struct app_kloop *loop, void *u);

/*
 * Run one iteration: wait for socket events, the extra descriptors, or the nearest deadline (at most
 * max_timeout_ms; -1 for no bound, 0 not to wait), then handle events, expired dial timeouts and engine deadlines,
 * and deliver the queued upcalls.
 * @param extra    descriptors of the caller (the management server) polled together with the loop; their revents
 *                 are filled in for the caller to handle after the call. May be NULL when n_extra is 0.
 * @return the number of socket and extra descriptors with events, or -errno from poll/epoll (-EINTR on a signal).
 */
int app_kloop_poll(struct app_kloop *loop, struct pollfd *extra, unsigned n_extra, int max_timeout_ms);

/* Counters of the loop. */
const struct app_kloop_stats *app_kloop_stats(const struct app_kloop *loop);

/*
 * Fill env with the kernel path's defaults: libc allocator, CLOCK_REALTIME now_ns, getrandom(2), and a log sink
 * into appliance/log.h's app_log (mesh levels mapped onto the appliance's; env->log_level follows level).
 */
void app_kloop_env_init(struct mesh_env *env, enum mesh_log_level level);

/* Conversions between struct mesh_addr and sockaddr. @return the sockaddr length, or 0 for a bad family. */
socklen_t app_kaddr_to_sockaddr(const struct mesh_addr *a, struct sockaddr_storage *ss);
/* @return 0 or -EAFNOSUPPORT. */
int app_kaddr_from_sockaddr(const struct sockaddr *sa, struct mesh_addr *out);
/* "ip:port" or "[ip6]:port" into buf (at least 48 bytes); returns buf. */
const char *app_kaddr_format(const struct mesh_addr *a, char *buf, size_t len);

#endif /* ZW_APP_CONN_KERNEL_H */
