/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config section "policies": L4 authorization policies in a shape that maps one-to-one onto
 * istio.security.Authorization (see config_authz.c for the file syntax).
 *
 * Invariants (hold for every struct app_authz_config of a successfully loaded config):
 *  - policies[0..n_policies) is a model that mesh_authz_set_new() accepts: every enum in range, every string set,
 *    every prefix valid for its family with host bits clear, ports 0..65535, (namespace, name) unique.
 *  - Everything the policies point to (nested arrays and strings) is owned by this struct and lives until
 *    app_config_free(); nothing points into the libconfig tree.
 *  - lines[i] is the file line of policies[i], for messages.
 */
#ifndef ZW_APP_CONFIG_AUTHZ_H
#define ZW_APP_CONFIG_AUTHZ_H

#include <stddef.h>

#include "mesh/authz.h"

#define APP_AUTHZ_MAX_POLICIES 65536

struct app_authz_block; /* storage owned by the section */

struct app_authz_config {
    size_t n_policies;
    struct mesh_authz_policy *policies; /* hand to mesh_authz_set_new(env, policies, n_policies, &err) */
    int *lines;
    struct app_authz_block *blocks;
};

#endif
