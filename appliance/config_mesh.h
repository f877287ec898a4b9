/* SPDX-License-Identifier: Apache-2.0 */
/* Config section: the mesh identity settings, workloads and services (see config_mesh.c). */
#ifndef ZW_APP_CONFIG_MESH_H
#define ZW_APP_CONFIG_MESH_H

struct app_mesh_config {
    int placeholder; /* filled in as the section grows */
};

#endif
