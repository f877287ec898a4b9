/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DPDK backend of mesh/conn.h: the userspace TCP's connections are the mesh's struct mesh_conn.
 * The backend instance passed to dial() is the dialing lcore's struct dp_lcore.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "dpdk/conn_dpdk.h"
#include "dpdk/tcp.h"

static int conn_dpdk_dial(void *backend, const struct mesh_addr *src, const struct mesh_addr *dst,
                          const struct mesh_conn_cb *cb, void *u, struct mesh_conn **out)
{
    uint32_t ip, sip = 0;

    if (dst->family != MESH_ADDR_V4 || (src != NULL && src->family != MESH_ADDR_V4))
        return -EAFNOSUPPORT;
    memcpy(&ip, dst->ip.v4, 4);
    if (src != NULL)
        memcpy(&sip, src->ip.v4, 4);
    return dp_tcp_connect(backend, ntohl(sip), ntohl(ip), ntohs(dst->port), cb, u, out);
}

const struct mesh_conn_ops dp_conn_ops = {
    .write = dp_tcp_write,
    .read_enable = dp_tcp_read_enable,
    .shutdown_wr = dp_tcp_shutdown_wr,
    .abort = dp_tcp_abort,
    .dial = conn_dpdk_dial,
};
