/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/fakes/fake_conn.h - an in-memory network implementing mesh/conn.h.
 *
 * A struct fake_net holds listeners keyed by address and every live connection. dial() through fake_conn_ops (with
 * a struct fake_host as the backend) creates a pair: the dialing side and the accepting side, which the listener's
 * accept function receives. A connection's received bytes wait in its receive buffer (capacity rcvbuf bytes); a
 * write accepts only what fits in the peer's receive buffer, so a reader that stops reading pushes back on the writer.
 *
 * Invariants:
 *  - No upcall (and no accept) ever runs inside a downcall: every event is queued and delivered by fake_net_run(),
 *    which loops until nothing more happens.
 *  - Order per connection: the first on_writable after dial (connected) or on_closed(-ECONNREFUSED); on_data while
 *    bytes are buffered and reading is enabled; on_peer_fin once the buffer is empty after the peer's FIN; on_closed(0)
 *    once both directions ended; on_closed(-ECONNRESET) when the peer aborted (buffered bytes are dropped).
 *  - After abort() or on_closed() a connection is dead to its user; its memory is reclaimed at the end of the run.
 *  - Everything is plain calloc/free (this is a test double, not mesh/).
 */
#ifndef TESTS_FAKES_FAKE_CONN_H
#define TESTS_FAKES_FAKE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/conn.h"

#define FAKE_CONN_DEFAULT_RCVBUF_BYTES (64u * 1024)

struct fake_net;

/* A host on the fake network: the backend pointer given to dial(). Connections dialed with src == NULL use ip with
 * an ephemeral port. */
struct fake_host {
    struct fake_net *net;
    struct mesh_addr ip;
};

/*
 * Accept a new connection on a listener. src is the dialer's address (possibly a transparent source), dst the
 * address dialled. Return 0 and set *cb / *u (the acceptor now owns c), or -errno after aborting c yourself.
 */
typedef int (*fake_accept_fn)(void *lu, struct mesh_conn *c, const struct mesh_addr *src, const struct mesh_addr *dst,
                              const struct mesh_conn_cb **cb, void **u);

enum fake_listen_mode {
    FAKE_LISTEN_ACCEPT = 0,    /* accept through the function */
    FAKE_LISTEN_BLACKHOLE = 1, /* SYN is never answered: dials never complete (timeouts) */
};

extern const struct mesh_conn_ops fake_conn_ops;

struct fake_net *fake_net_new(void);
/* Abort every live connection (no upcalls) and free everything. */
void fake_net_free(struct fake_net *net);

/* Listen on addr. An addr with port 0 matches every port of that IP; an exact match wins. Returns 0 or -EEXIST. */
int fake_net_listen(struct fake_net *net, const struct mesh_addr *addr, enum fake_listen_mode mode, fake_accept_fn fn,
                    void *lu);
void fake_net_unlisten(struct fake_net *net, const struct mesh_addr *addr);

/* Deliver queued events until quiescent. Returns the number of upcalls delivered. */
size_t fake_net_run(struct fake_net *net);

/* Receive buffer size of new connections (default FAKE_CONN_DEFAULT_RCVBUF_BYTES). */
void fake_net_set_rcvbuf(struct fake_net *net, size_t bytes);
/* Make the next n dial() calls fail immediately with err (-errno). */
void fake_net_fail_dials(struct fake_net *net, int n, int err);

/* Connections alive (not yet dead to both users), and the count of dials seen. */
size_t fake_net_live(const struct fake_net *net);
size_t fake_net_dials(const struct fake_net *net);

/* Per-connection inspection and tuning. */
const struct mesh_addr *fake_conn_local(const struct mesh_conn *c);
const struct mesh_addr *fake_conn_remote(const struct mesh_conn *c);
void fake_conn_set_rcvbuf(struct mesh_conn *c, size_t bytes);
bool fake_conn_read_enabled(const struct mesh_conn *c);
size_t fake_conn_buffered(const struct mesh_conn *c); /* bytes waiting in c's receive buffer */

/* Address helpers for tests: ip "10.0.0.1" or "fd00::1", port in host order. Aborts on a bad literal. */
struct mesh_addr fake_addr(const char *ip, uint16_t port);

#endif /* TESTS_FAKES_FAKE_CONN_H */
