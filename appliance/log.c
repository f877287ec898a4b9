/* SPDX-License-Identifier: Apache-2.0 */
/* The appliance's log sink; see log.h. The level is read with relaxed atomics: any thread may log. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "appliance/log.h"

static int log_level = APP_LOG_INFO;

void app_log_set_level(enum app_log_level level)
{
    __atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

enum app_log_level app_log_get_level(void)
{
    return (enum app_log_level)__atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

int app_log_level_parse(const char *s, enum app_log_level *out)
{
    static const struct {
        const char *name;
        enum app_log_level level;
    } names[] = {
        {"off", APP_LOG_ERROR},  {"error", APP_LOG_ERROR}, {"warn", APP_LOG_WARN},
        {"info", APP_LOG_INFO},  {"debug", APP_LOG_DEBUG}, {"trace", APP_LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -EINVAL;
}

void app_log(enum app_log_level level, const char *module, const char *fmt, ...)
{
    static const char *const tags[] = {"error", "warn", "info", "debug"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    int n;

    if (level > app_log_get_level())
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, tags[level],
                 module);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
