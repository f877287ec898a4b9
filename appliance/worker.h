/* SPDX-License-Identifier: Apache-2.0 */
/* The worker lcore entry point (see worker.c). */
#ifndef ZW_APP_WORKER_H
#define ZW_APP_WORKER_H

struct app_node;
struct dp_lcore;

struct app_worker_args {
    struct app_node *node;
    struct dp_lcore *lcore;
};

/* rte_eal_remote_launch() entry: polls until node->stop is set. Returns 0. */
int app_worker_main(void *arg);

#endif
