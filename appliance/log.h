/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The appliance's log: one line per record on stderr, "<time> <level> <module>: <message>".
 * Used by the control thread and by init/teardown. Workers do not log on the packet path; they count.
 * The level is a process-wide setting changed at run time through POST /logging.
 */
#ifndef ZW_APP_LOG_H
#define ZW_APP_LOG_H

#include "appliance/config.h"

void app_log_set_level(enum app_log_level level);
enum app_log_level app_log_get_level(void);

/* Parse "error" | "warn" | "info" | "debug" (also "off" and "trace", mapped to error and debug). -EINVAL if unknown. */
int app_log_level_parse(const char *s, enum app_log_level *out);

void app_log(enum app_log_level level, const char *module, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define APP_LOG_ERR(mod, ...) app_log(APP_LOG_ERROR, mod, __VA_ARGS__)
#define APP_LOG_WARN(mod, ...) app_log(APP_LOG_WARN, mod, __VA_ARGS__)
#define APP_LOG_INFO(mod, ...) app_log(APP_LOG_INFO, mod, __VA_ARGS__)
#define APP_LOG_DEBUG(mod, ...)                                                                                        \
    do {                                                                                                               \
        if (app_log_get_level() >= APP_LOG_DEBUG)                                                                      \
            app_log(APP_LOG_DEBUG, mod, __VA_ARGS__);                                                                  \
    } while (0)

#endif
