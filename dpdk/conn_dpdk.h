/* SPDX-License-Identifier: Apache-2.0 */
/* The DPDK backend's mesh_conn operations (see conn_dpdk.c). */
#ifndef ZW_DP_CONN_DPDK_H
#define ZW_DP_CONN_DPDK_H

#include "mesh/conn.h"

extern const struct mesh_conn_ops dp_conn_ops;

#endif
