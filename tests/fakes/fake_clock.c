/* SPDX-License-Identifier: Apache-2.0 */
/* tests/fakes/fake_clock.c - settable clock and the test env. */
#include <stdio.h>
#include <stdlib.h>

#include "tests/fakes/fake_clock.h"

uint64_t fake_clock_now(void *u)
{
    return ((const struct fake_clock *)u)->now_ns;
}

void fake_clock_set(struct fake_clock *c, uint64_t now_ns)
{
    c->now_ns = now_ns;
}

void fake_clock_advance(struct fake_clock *c, uint64_t delta_ns)
{
    c->now_ns += delta_ns;
}

static int fake_random(void *u, void *buf, size_t len)
{
    uint64_t *s = u;
    uint8_t *p = buf;

    for (size_t i = 0; i < len; i++) {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        p[i] = (uint8_t)((*s * 0x2545F4914F6CDD1Dull) >> 56);
    }
    return 0;
}

static void fake_log(void *u, enum mesh_log_level level, const char *module, const char *msg)
{
    (void)u;
    fprintf(stderr, "[%d] %s: %s\n", (int)level, module, msg);
}

void fake_env_init(struct fake_env *fe, uint64_t start_ns, uint64_t seed)
{
    fe->clock.now_ns = start_ns != 0 ? start_ns : FAKE_CLOCK_DEFAULT_START_NS;
    fe->rng = seed != 0 ? seed : 0x9E3779B97F4A7C15ull;
    failalloc_init(&fe->alloc);
    fe->env = (struct mesh_env){
        .now_ns = fake_clock_now,
        .now_u = &fe->clock,
        .random = fake_random,
        .random_u = &fe->rng,
        .alloc = failalloc_alloc,
        .realloc = failalloc_realloc,
        .free = failalloc_free,
        .alloc_u = &fe->alloc,
        .log = getenv("MESH_TEST_LOG") != NULL ? fake_log : NULL,
        .log_u = NULL,
        .log_level = MESH_LOG_DEBUG,
    };
}
