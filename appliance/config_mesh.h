/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config sections of the mesh (see config_mesh.c):
 *   mesh      = { trust_domain; mtls_mode; hbone_port; certificates = { source; ca_cert; ca_key; lifetime_s; } }
 *   workloads = ( { uid; name; namespace; service_account; addresses; node; protocol; services; ... } )
 *   services  = ( { name; namespace; hostname; addresses; ports; subject_alt_names; } )
 * shaped one-to-one on istio.workload.Workload and Service, so that xDS is only a second source of the same model.
 *
 * The workloads and services are kept as mesh/workload.h descriptions, ready for mesh_workloads_new(); every string
 * and array they point to is owned by the config and lives until app_config_free().
 */
#ifndef ZW_APP_CONFIG_MESH_H
#define ZW_APP_CONFIG_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/workload.h"

enum app_mtls_mode { APP_MTLS_PERMISSIVE, APP_MTLS_STRICT };
enum app_cert_source { APP_CERTS_LOCAL_CA, APP_CERTS_XDS };

struct app_mesh_config {
    bool present;                 /* any of the three sections was in the file */
    char *trust_domain;           /* default "cluster.local" */
    enum app_mtls_mode mtls_mode; /* default PERMISSIVE */
    uint16_t hbone_port;          /* default 15008 */
    enum app_cert_source cert_source; /* default: xds with an xds group and no ca_cert, else local_ca */
    bool cert_source_set;         /* source was written in the file */
    char *ca_cert_path;           /* local CA: PEM files; NULL: generated at first start and kept in memory */
    char *ca_key_path;
    uint32_t cert_lifetime_s;     /* workload certificates, default 86400 */
    size_t n_workloads;
    struct mesh_workload *workloads;
    size_t n_services;
    struct mesh_service *services;
    struct app_mesh_alloc *allocs;  /* everything above points into these */
};

/* The workloads of cfg that run on node_name (Workload.node), as the addresses the data path captures. */
size_t app_mesh_local_addresses(const struct app_mesh_config *m, const char *node_name, uint32_t *out, size_t max);

#endif
