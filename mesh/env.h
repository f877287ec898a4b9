/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mesh/env.h - everything a mesh engine needs from the outside world.
 *
 * Invariants:
 *  - mesh/ never reads a clock, draws randomness, allocates or logs except through a struct mesh_env.
 *  - One env per lcore (or per test). Engines keep a borrowed pointer to it: the env must outlive every object
 *    created with it, and its callbacks are only ever called on the thread that drives those objects.
 *  - A default env (libc allocator, CLOCK_MONOTONIC, getrandom, stderr) is built by the backends, never by mesh/.
 */
#ifndef MESH_ENV_H
#define MESH_ENV_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Log levels, syslog numbering: a record is emitted when its level <= env->log_level. */
enum mesh_log_level {
    MESH_LOG_ERR = 3,
    MESH_LOG_WARNING = 4,
    MESH_LOG_NOTICE = 5,
    MESH_LOG_INFO = 6,
    MESH_LOG_DEBUG = 7,
};

/* Current time in nanoseconds. Must be monotonic non-decreasing; certificate validity is judged against it too, so
 * backends give wall-clock time (CLOCK_REALTIME) here, and fakes give a settable value. */
typedef uint64_t (*mesh_now_fn)(void *u);
/* Fill buf with len random bytes. Returns 0, or -errno when no randomness is available. */
typedef int (*mesh_random_fn)(void *u, void *buf, size_t len);
/* malloc/realloc/free with a user pointer. alloc/realloc return NULL on failure; free(NULL) is a no-op. */
typedef void *(*mesh_alloc_fn)(void *u, size_t n);
typedef void *(*mesh_realloc_fn)(void *u, void *p, size_t n);
typedef void (*mesh_free_fn)(void *u, void *p);
/* Log sink. msg is NUL-terminated, without a trailing newline, borrowed for the duration of the call. module is a
 * static string such as "mesh.tls". */
typedef void (*mesh_log_fn)(void *u, enum mesh_log_level level, const char *module, const char *msg);

struct mesh_env {
    mesh_now_fn now_ns;
    void *now_u;
    mesh_random_fn random;
    void *random_u;
    mesh_alloc_fn alloc;
    mesh_realloc_fn realloc;
    mesh_free_fn free;
    void *alloc_u;
    mesh_log_fn log; /* may be NULL: logging off */
    void *log_u;
    enum mesh_log_level log_level;
};

static inline uint64_t mesh_env_now(const struct mesh_env *env)
{
    return env->now_ns(env->now_u);
}

static inline void *mesh_env_alloc(const struct mesh_env *env, size_t n)
{
    return env->alloc(env->alloc_u, n);
}

static inline void *mesh_env_calloc(const struct mesh_env *env, size_t n)
{
    void *p = env->alloc(env->alloc_u, n);
    if (p != NULL) {
        unsigned char *c = p;
        for (size_t i = 0; i < n; i++)
            c[i] = 0;
    }
    return p;
}

static inline void *mesh_env_realloc(const struct mesh_env *env, void *p, size_t n)
{
    return env->realloc(env->alloc_u, p, n);
}

static inline void mesh_env_free(const struct mesh_env *env, void *p)
{
    if (p != NULL)
        env->free(env->alloc_u, p);
}

static inline int mesh_env_random(const struct mesh_env *env, void *buf, size_t len)
{
    return env->random(env->random_u, buf, len);
}

static inline int mesh_env_log_enabled(const struct mesh_env *env, enum mesh_log_level level)
{
    return env->log != NULL && level <= env->log_level;
}

/*
 * Format and emit one log record (truncated to 512 bytes). Cheap when the level is off: the level check runs before
 * any formatting. Use through MESH_LOG so the check is inlined.
 */
void mesh_env_logf(const struct mesh_env *env, enum mesh_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define MESH_LOG(env, level, module, ...)                                                                              \
    do {                                                                                                               \
        if (mesh_env_log_enabled((env), (level)))                                                                      \
            mesh_env_logf((env), (level), (module), __VA_ARGS__);                                                      \
    } while (0)

#endif /* MESH_ENV_H */
