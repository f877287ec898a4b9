#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Validates the lab itself: the default topology with kernel ("linux") router nodes.

The same user-visible checks as test_foundation.py, with the node netns routing through the
kernel. If these fail, the lab is broken, not zwire.
"""

import sys

import checks
from harness import case, main
import zwlab


@case
def ping_a_to_c_two_routers(lab, _ctx):
    checks.ping_ttl(lab, "a", lab.pods["c"]["ip"], routers=2)


@case
def ping_c_to_a_two_routers(lab, _ctx):
    checks.ping_ttl(lab, "c", lab.pods["a"]["ip"], routers=2)


@case
def ping_a_to_b_same_node(lab, _ctx):
    checks.ping_ttl(lab, "a", lab.pods["b"]["ip"], routers=1)


@case
def ping_gateway(lab, _ctx):
    checks.ping_ttl(lab, "a", lab.node_of("a")["gateway"], routers=0)


@case
def http_a_to_c(lab, ctx):
    checks.http_fetch(lab, ctx, "a", "c")


@case
def http_b_to_a_same_node(lab, ctx):
    checks.http_fetch(lab, ctx, "b", "a")


@case
def ttl_1_time_exceeded(lab, _ctx):
    checks.ttl_exceeded(lab, "a", lab.pods["c"]["ip"], lab.node_of("a")["gateway"])


@case
def direct_mode_and_host_node(_lab, ctx):
    """The bench topology (one pod held directly, a host endpoint on the fabric), kernel-routed."""
    with zwlab.Lab(zwlab.BENCH_DESC, build=ctx.build, kind="linux") as bench:
        checks.ping_ttl(bench, "a", bench.nodes["sink"]["fabric_ip"], routers=1)
        res = bench.exec("sink", ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2",
                                  bench.pods["a"]["ip"]], timeout=10)
        if "ttl=63" not in res.stdout:
            raise AssertionError(f"sink -> a:\n{res.stdout}")
        ctx.scratch["bench_lab"] = bench
    leftovers = bench.leftovers()
    if leftovers:
        raise AssertionError("bench lab left behind: " + ", ".join(leftovers))


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    checks.no_leftovers(lab)


def make_lab(ctx):
    return zwlab.Lab(zwlab.DEFAULT_DESC, build=ctx.build, kind="linux")


if __name__ == "__main__":
    sys.exit(main(make_lab, "lab self-test (linux router nodes)"))
