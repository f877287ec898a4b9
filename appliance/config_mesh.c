/* SPDX-License-Identifier: Apache-2.0 */
/* Config section: the mesh identity settings, workloads and services. */
#include <stdlib.h>

#include "appliance/config_mesh.h"
#include "appliance/config_parse.h"

static void mesh_section_parse(struct app_cfg_ctx *ctx, const config_setting_t *root)
{
    (void)root;
    ctx->cfg->mesh = calloc(1, sizeof(*ctx->cfg->mesh));
    if (ctx->cfg->mesh == NULL)
        ctx->oom = true;
}

static void mesh_section_free(struct app_config *cfg)
{
    free(cfg->mesh);
    cfg->mesh = NULL;
}

static const char *const mesh_section_keys[] = {NULL};

const struct app_cfg_section app_cfg_section_mesh = {
    .keys = mesh_section_keys,
    .parse = mesh_section_parse,
    .free = mesh_section_free,
};
