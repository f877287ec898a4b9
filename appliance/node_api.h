/* SPDX-License-Identifier: Apache-2.0 */
/* The node's management endpoints (see node_api.c). Control thread only. */
#ifndef ZW_APP_NODE_API_H
#define ZW_APP_NODE_API_H

#include <stdint.h>

#include "appliance/node.h"
#include "mgmt/routes.h"

struct api_arp_snapshot;
struct dp_tcp_usage;
struct api_tcp_list;
struct api_conn_list;

struct app_api {
    struct app_node *node;
    uint32_t ready;                      /* 1 once the data plane runs (release/acquire) */
    uint32_t quit;                       /* set by POST /quitquitquit */
    struct api_arp_snapshot *arp_snaps;  /* one per lcore: RPC targets that outlive a timed-out call */
    struct dp_tcp_usage *tcp_usage;      /* likewise */
    struct api_tcp_list *tcp_lists;      /* likewise */
    struct api_conn_list *conn_lists;    /* likewise */
};

/* Register every endpoint on routes with api as context. 0, -ENOMEM or -EINVAL. */
int app_api_register(struct app_api *api, struct mgmt_routes *routes);
/* Free what app_api_register allocated. Call after the workers have stopped. */
void app_api_fini(struct app_api *api);

#endif
