/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Management server: HTTP/1.1 over a Unix stream socket (curl --unix-socket works), plus an optional TCP listener that
 * only serves the routes flagged MGMT_ROUTE_TCP. Non-blocking and poll()-based; no threads of its own.
 *
 * Invariants:
 * - Only the control thread calls into a server. Handlers run synchronously inside mgmt_server_poll() /
 *   mgmt_server_process(); while one runs, nothing else is served.
 * - At most max_clients connections are open; a connection beyond that gets a 503 and is closed at once.
 * - One request at a time per connection: pipelined requests are answered in order, each after the previous response
 *   has been written completely. A connection that is writing is not read (backpressure).
 * - A malformed or oversized request gets its 4xx/5xx with "Connection: close" and the connection is closed after the
 *   response has been sent. No client input can crash the server or make it block.
 * - A connection idle for idle_timeout_ms is closed (with a 408 if it was in the middle of a request); so is a request
 *   not completed within request_timeout_ms of its first byte, however slowly it trickles.
 * - The socket file is created with mode socket_mode (0660 by default) and is unlinked by mgmt_server_free() only if it
 *   is still the one this server created.
 */
#ifndef ZWIRE_MGMT_SERVER_H
#define ZWIRE_MGMT_SERVER_H

#include <poll.h>
#include <stdint.h>
#include <sys/types.h>

#include "mgmt/routes.h"

#define MGMT_SERVER_DEFAULT_SOCKET "/run/zwire/mgmt.sock"
#define MGMT_SERVER_MAX_CLIENTS 64u
#define MGMT_SERVER_IDLE_TIMEOUT_MS 30000
#define MGMT_SERVER_REQUEST_TIMEOUT_MS 60000
#define MGMT_SERVER_SOCKET_MODE 0660

struct mgmt_server_config {
    const char *unix_path;           /* Unix socket path; NULL or "" for none */
    const char *tcp_listen;          /* "a.b.c.d:port" or "[v6]:port" (port 0: any); NULL or "" for none */
    const struct mgmt_routes *routes; /* borrowed; must outlive the server */
    unsigned max_clients;            /* 0: MGMT_SERVER_MAX_CLIENTS */
    int idle_timeout_ms;             /* 0: MGMT_SERVER_IDLE_TIMEOUT_MS */
    int request_timeout_ms;          /* 0: MGMT_SERVER_REQUEST_TIMEOUT_MS */
    mode_t socket_mode;              /* 0: MGMT_SERVER_SOCKET_MODE */
    const struct mgmt_http_limits *limits; /* NULL: the parser defaults (copied) */
};

struct mgmt_server;

/*
 * Create the listeners. The socket's parent directory is created (0755) when missing. An existing socket file is
 * removed only if nothing accepts connections on it; if another process is listening, the server refuses to start.
 * A path that exists and is not a socket is never removed.
 * @param cfg  at least one listener and routes are required; strings are copied.
 * @param err  on failure, set to a message naming the cause; valid until the next call of this function on the same
 *             thread.
 * @return the server (owned by the caller; mgmt_server_free()) or NULL.
 */
struct mgmt_server *mgmt_server_new(const struct mgmt_server_config *cfg, const char **err);

/* Close every connection and listener, and unlink the socket file if it is still ours. NULL is allowed. */
void mgmt_server_free(struct mgmt_server *srv);

/*
 * Run one iteration: wait up to timeout_ms (-1: until something happens or a connection times out, 0: do not wait),
 * then accept, read, parse, dispatch, write and close as needed.
 * @return the number of descriptors that had events (0 on timeout or EINTR), or -errno from poll().
 */
int mgmt_server_poll(struct mgmt_server *srv, int timeout_ms);

/*
 * For integration into another poll loop: fill fds with what the server waits for.
 * @param max  size of fds; mgmt_server_max_fds() entries always suffice.
 * @return the number of entries filled, or -ENOSPC.
 */
int mgmt_server_fds(const struct mgmt_server *srv, struct pollfd *fds, unsigned max);

/* @return the number of pollfd entries mgmt_server_fds() may need. */
unsigned mgmt_server_max_fds(const struct mgmt_server *srv);

/*
 * Handle the events of fds (as filled by mgmt_server_fds() and returned by poll()), then expire timed-out
 * connections. Entries whose fd is not the server's are ignored.
 * @return 0.
 */
int mgmt_server_process(struct mgmt_server *srv, const struct pollfd *fds, unsigned n);

/* @return milliseconds until the next connection deadline, or -1 when there is none. */
int mgmt_server_timeout_ms(const struct mgmt_server *srv);

/* @return the number of open client connections. */
unsigned mgmt_server_clients(const struct mgmt_server *srv);

/* @return the bound TCP port (useful with port 0), or 0 without a TCP listener. */
uint16_t mgmt_server_tcp_port(const struct mgmt_server *srv);

#endif /* ZWIRE_MGMT_SERVER_H */
