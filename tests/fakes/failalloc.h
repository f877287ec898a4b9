/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/fakes/failalloc.h - a counting allocator for mesh_env that can fail the Nth allocation.
 *
 * Invariants: every alloc and every realloc is one numbered attempt (1, 2, ...); when armed with n, attempt n
 * fails (returns NULL, realloc leaves the old block intact) and the rest succeed. `live` counts blocks handed out and
 * not yet freed, so a scenario that ends with live == 0 leaked nothing through the env.
 */
#ifndef TESTS_FAKES_FAILALLOC_H
#define TESTS_FAKES_FAILALLOC_H

#include <stddef.h>

struct failalloc {
    long attempts; /* alloc + realloc calls so far */
    long fail_at;  /* attempt number to fail; 0 = never */
    long failures; /* how many attempts were failed */
    long live;     /* blocks currently allocated */
};

void failalloc_init(struct failalloc *fa);
/* Reset the counters (not live) and fail attempt nth (0 disarms). */
void failalloc_arm(struct failalloc *fa, long nth);

/* mesh_alloc_fn / mesh_realloc_fn / mesh_free_fn; u is the struct failalloc. */
void *failalloc_alloc(void *u, size_t n);
void *failalloc_realloc(void *u, void *p, size_t n);
void failalloc_free(void *u, void *p);

#endif /* TESTS_FAKES_FAILALLOC_H */
