/* SPDX-License-Identifier: Apache-2.0 */
/* Config section: authorization policies. */
#include <stdlib.h>

#include "appliance/config_authz.h"
#include "appliance/config_parse.h"

static void authz_section_parse(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    (void)root;
    ctx->cfg->authz = calloc(1, sizeof(*ctx->cfg->authz));
    if (ctx->cfg->authz == NULL)
        ctx->oom = true;
}

static void authz_section_free(struct app_config *cfg)
{
    free(cfg->authz);
    cfg->authz = NULL;
}

static const char *const authz_section_keys[] = {NULL};

const struct app_cfg_section app_cfg_section_authz = {
    .keys = authz_section_keys,
    .parse = authz_section_parse,
    .free = authz_section_free,
};
