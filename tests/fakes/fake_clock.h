/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/fakes/fake_clock.h - a settable clock plus a complete test env (fake clock, seeded randomness,
 * counting/failing allocator, optional stderr log).
 *
 * Invariants: time only moves when the test moves it; randomness is a deterministic xorshift64* stream.
 */
#ifndef TESTS_FAKES_FAKE_CLOCK_H
#define TESTS_FAKES_FAKE_CLOCK_H

#include <stdint.h>

#include "mesh/env.h"
#include "tests/fakes/failalloc.h"

#define FAKE_NS_PER_S 1000000000ull
/* 2026-01-01T00:00:00Z: a fixed, realistic wall-clock start so certificates have sensible dates. */
#define FAKE_CLOCK_DEFAULT_START_NS (1767225600ull * FAKE_NS_PER_S)

struct fake_clock {
    uint64_t now_ns;
};

/* mesh_now_fn for a struct fake_clock. */
uint64_t fake_clock_now(void *u);
void fake_clock_set(struct fake_clock *c, uint64_t now_ns);
void fake_clock_advance(struct fake_clock *c, uint64_t delta_ns);

struct fake_env {
    struct mesh_env env;
    struct fake_clock clock;
    struct failalloc alloc;
    uint64_t rng;
};

/*
 * Wire a full env: clock at start_ns (0 = FAKE_CLOCK_DEFAULT_START_NS), randomness seeded with seed, the failalloc
 * allocator (disarmed), and logging to stderr at DEBUG when the environment variable MESH_TEST_LOG is set.
 * fe must not move afterwards (env points into it).
 */
void fake_env_init(struct fake_env *fe, uint64_t start_ns, uint64_t seed);

#endif /* TESTS_FAKES_FAKE_CLOCK_H */
