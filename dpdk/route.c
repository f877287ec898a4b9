/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The IPv4 route table: connected subnets of the ports plus static routes, in an rte_lpm whose next-hop ids
 * index dp_stack.nexthops. Built once by the control thread before the workers start; read-only afterwards,
 * so lookups from any lcore need no lock.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_lpm.h>

#include "dpdk/dp.h"
#include "dpdk/stack.h"

#define ROUTE_LPM_RULES 1024
#define ROUTE_LPM_TBL8S 256

static int route_nexthop_id(struct dp_stack *st, uint8_t port, uint32_t gateway)
{
    for (int i = 0; i < st->n_nexthops; i++)
        if (st->nexthops[i].port == port && st->nexthops[i].gateway == gateway)
            return i;
    if (st->n_nexthops == DP_MAX_NEXTHOPS)
        return -ENOSPC;
    st->nexthops[st->n_nexthops] = (struct dp_nexthop){.port = port, .gateway = gateway};
    return st->n_nexthops++;
}

static int route_add(struct dp_stack *st, uint32_t prefix, uint8_t len, int nh, bool connected, char *err,
                     size_t errlen)
{
    int rc = rte_lpm_add(st->lpm, prefix, len, (uint32_t)nh);
    if (rc < 0) {
        snprintf(err, errlen, "route %u.%u.%u.%u/%u: rte_lpm_add failed (%d)", prefix >> 24, (prefix >> 16) & 255,
                 (prefix >> 8) & 255, prefix & 255, len, rc);
        return rc;
    }
    st->routes[st->n_routes++] =
        (struct dp_route_entry){.prefix = prefix, .len = len, .nexthop = (uint16_t)nh, .connected = connected};
    return 0;
}

int dp_route_build(struct dp_stack *st, const struct dp_route_spec *routes, int n, int socket, char *err,
                   size_t errlen)
{
    struct rte_lpm_config cfg = {.max_rules = ROUTE_LPM_RULES, .number_tbl8s = ROUTE_LPM_TBL8S};
    char name[RTE_LPM_NAMESIZE];
    static unsigned instance;
    int rc;

    if (st->n_ports + n > DP_MAX_NEXTHOPS) {
        snprintf(err, errlen, "too many routes (%d, at most %d)", st->n_ports + n, DP_MAX_NEXTHOPS);
        return -ENOSPC;
    }
    snprintf(name, sizeof(name), "zw_routes_%u", __atomic_fetch_add(&instance, 1, __ATOMIC_RELAXED));
    st->lpm = rte_lpm_create(name, socket, &cfg);
    if (st->lpm == NULL) {
        snprintf(err, errlen, "cannot create the route table: %s", rte_strerror(rte_errno));
        return -ENOMEM;
    }
    st->n_nexthops = 0;
    st->n_routes = 0;
    for (int i = 0; i < st->n_ports; i++) {
        const struct dp_port *p = &st->ports[i];
        int nh = route_nexthop_id(st, (uint8_t)i, 0);
        rc = nh < 0 ? nh : route_add(st, p->net, p->prefix_len, nh, true, err, errlen);
        if (rc < 0)
            goto fail;
    }
    for (int i = 0; i < n; i++) {
        int port = -1, nh;
        for (int j = 0; j < st->n_ports; j++)
            if ((routes[i].via & st->ports[j].mask) == st->ports[j].net)
                port = j;
        if (port < 0) {
            snprintf(err, errlen, "route %d: next hop is not in a connected subnet", i);
            rc = -EINVAL;
            goto fail;
        }
        nh = route_nexthop_id(st, (uint8_t)port, routes[i].via);
        rc = nh < 0 ? nh : route_add(st, routes[i].prefix, routes[i].len, nh, false, err, errlen);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    dp_route_free(st);
    return rc;
}

void dp_route_free(struct dp_stack *st)
{
    rte_lpm_free(st->lpm);
    st->lpm = NULL;
}

const struct dp_nexthop *dp_route_lookup(const struct dp_stack *st, uint32_t dst)
{
    uint32_t nh;

    if (rte_lpm_lookup(st->lpm, dst, &nh) != 0)
        return NULL;
    return &st->nexthops[nh];
}

int dp_route_local_port(const struct dp_stack *st, uint32_t ip)
{
    for (int i = 0; i < st->n_ports; i++)
        if (st->ports[i].addr == ip)
            return i;
    return -1;
}
