/* SPDX-License-Identifier: Apache-2.0 */
/*
 * appliance/config_put.h - the first half of PUT /config, shared by both backends: the request body parsed as a
 * whole config file (errors named "PUT /config:LINE"), and what no node of this backend can run refused.
 */
#ifndef ZW_APP_CONFIG_PUT_H
#define ZW_APP_CONFIG_PUT_H

#include <stdbool.h>

#include "appliance/config.h"
#include "mgmt/routes.h"

/* The parsed config (the caller owns it), or NULL after answering resp with 400 and every error. */
struct app_config *app_config_from_put(const struct mgmt_request *req, struct mgmt_response *resp,
                                       bool node_runs_xds);

#endif
