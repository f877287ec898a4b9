/* SPDX-License-Identifier: Apache-2.0 */
/* mesh/env.c - the formatting half of the env log sink. */
#include <stdio.h>

#include "mesh/env.h"

#define ENV_LOG_MAX_BYTES 512

void mesh_env_logf(const struct mesh_env *env, enum mesh_log_level level, const char *module, const char *fmt, ...)
{
    char msg[ENV_LOG_MAX_BYTES];
    va_list ap;

    if (!mesh_env_log_enabled(env, level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    env->log(env->log_u, level, module, msg);
}
