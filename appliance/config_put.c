/* SPDX-License-Identifier: Apache-2.0 */
/* appliance/config_put.c - parse and screen the body of PUT /config (see config_put.h). */
#include "appliance/config_put.h"
#include "appliance/config_xds.h"

struct app_config *app_config_from_put(const struct mgmt_request *req, struct mgmt_response *resp,
                                       bool node_runs_xds)
{
    struct app_config_errors errs;
    struct app_config *next;
    const char *why;

    if (req->body_len == 0) {
        mgmt_response_text(resp, 400, "PUT /config needs the configuration file as the body\n");
        return NULL;
    }
    next = app_config_load_string((const char *)req->body, "PUT /config", &errs);
    if (next == NULL) {
        mgmt_response_text(resp, 400, "configuration refused, nothing changed:\n");
        for (int i = 0; i < errs.n; i++)
            mgmt_response_append(resp, "%s\n", errs.msgs[i]);
        app_config_errors_fini(&errs);
        return NULL;
    }
    app_config_errors_fini(&errs);
    why = app_cfg_xds_node_unsupported(next, node_runs_xds);
    if (why != NULL) {
        mgmt_response_text(resp, 400, "configuration refused, nothing changed: %s\n", why);
        app_config_free(next);
        return NULL;
    }
    return next;
}
