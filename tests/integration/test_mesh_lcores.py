#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The mesh on two worker lcores per node: flows spread over both, and every byte arrives.

Two DPDK nodes with dataplane.workers = 2 (af_packet qpairs = 2, symmetric hashing; lcores "0@0,1@1,2@0" put
three lcores on this machine's two CPUs, with the idle back-off). Pod a (node1) opens 200 concurrent connections to
an echo server in pod c (node2) through HBONE; each sends 64 KiB of its own random bytes, half-closes and reads the
echo to EOF, comparing sha256. Then the per-lcore counters must show both workers of node1 capturing connections
(node2 carries them as streams of the pooled HBONE connections, one per node1 worker).

Segments of captured flows that arrive at the other worker (af_packet's fanout rolls a flow over to another queue
when a ring is full) are searched for on the other lcores before being routed on (DP_HANDOFF_SEARCH).
"""

import json
import os
import sys

from harness import case, check, main
import zwlab

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "hbone_peers.py")
PY = zwlab.PYTHON
TD = "cluster.local"
ECHO_PORT = 7000
N_CONNS = 200
SIZE = 64 * 1024
A_IP, C_IP = "10.21.1.10", "10.21.2.10"

# Runs in pod a: N_CONNS threads, one connection each; prints one JSON line.
CLIENT = r'''
import hashlib, json, os, socket, sys, threading
ip, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok, bad, errors, lock = [0], [], [], threading.Lock()
def one(i):
    data = os.urandom(size)
    try:
        s = socket.create_connection((ip, port), timeout=60)
        s.settimeout(60)
        t = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
        t.start()
        got = bytearray()
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        t.join()
        s.close()
        with lock:
            if hashlib.sha256(got).digest() == hashlib.sha256(data).digest():
                ok[0] += 1
            else:
                bad.append((i, len(got)))
    except OSError as e:
        with lock:
            errors.append(f"{i}: {e}")
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps({"ok": ok[0], "bad": bad[:5], "errors": errors[:5], "n_errors": len(errors)}))
'''


def counters_by_lcore(lab, node):
    code, body = lab.mgmt(node, "GET", "/stats")
    check(code == 200, f"{node}: /stats -> {code}")
    out = {}
    for e in json.loads(body)["counters_by_lcore"]:
        c = e["counters"]
        out[e["lcore"]] = c if isinstance(c, dict) else {x["name"]: x["value"] for x in c}
    return out


@case(timeout=240)
def two_hundred_connections_spread_over_both_lcores(lab, ctx):
    echo = lab.start_bg("c", [PY, PEERS, "echo", "--bind", C_IP, "--port", str(ECHO_PORT), "--quiet"], "echo-c")
    lab.wait_listen("c", ECHO_PORT, proc=echo)
    before = {n: counters_by_lcore(lab, n) for n in ("node1", "node2")}
    res = lab.exec("a", [PY, "-c", CLIENT, C_IP, str(ECHO_PORT), str(N_CONNS), str(SIZE)], timeout=200)
    try:
        r = json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise AssertionError(f"the client printed nothing: {res.stderr[-800:]}") from None
    after = {n: counters_by_lcore(lab, n) for n in ("node1", "node2")}
    evidence = {n: {lc: {k: v - before[n].get(lc, {}).get(k, 0) for k, v in c.items()
                         if any(w in k for w in ("rst", "handoff", "drop", "refused", "full", "fail"))
                         and v != before[n].get(lc, {}).get(k, 0)}
                    for lc, c in after[n].items()} for n in after}
    check(r["ok"] == N_CONNS, f"{r['ok']} of {N_CONNS} echoes matched; mismatches {r['bad']}, "
                              f"{r['n_errors']} errors {r['errors']}\n    counters: {evidence}")
    spread = {}
    for node, what in (("node1", "tcp_captured"), ("node2", "tcp_active_opens")):
        per = {lc: after[node][lc].get(what, 0) - before[node].get(lc, {}).get(what, 0) for lc in after[node]}
        spread[node] = per
        check(len(per) == 2, f"{node}: {len(per)} worker lcores in /stats, want 2")
    # the 200 pod connections spread over node1's workers; node2 sees them as streams of the pooled HBONE
    # connections (one per node1 worker), so its dials follow wherever those few connections hashed
    check(all(v > 0 for v in spread["node1"].values()),
          f"node1: tcp_captured per lcore {spread['node1']}: one worker carried nothing")
    check(sum(spread["node2"].values()) >= N_CONNS, f"node2 dialed pod c {spread['node2']} times, want {N_CONNS}")
    handoffs = {n: {lc: {k: v for k, v in c.items() if "handoff" in k and v} for lc, c in after[n].items()}
                for n in after}
    print(f"note: {N_CONNS} x {SIZE // 1024} KiB echoed; captured per lcore on node1 {spread['node1']}, "
          f"dials to c per lcore on node2 {spread['node2']}; handoffs {handoffs}", flush=True)
    lab.stop_bg(echo)


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    check(lab is not None, "no lab")
    found = lab.leftovers()
    check(not found, "left behind: " + ", ".join(found))


def make_lab(ctx):
    desc = json.loads(json.dumps(zwlab.DEFAULT_DESC))
    for n in desc["nodes"]:
        n["workers"] = 2
        n["lcores"] = "0@0,1@1,2@0"
    desc["pods"] = [p for p in desc["pods"] if p["name"] in ("a", "c")]
    desc["mesh"] = {
        "mesh": {"trust_domain": TD, "mtls_mode": "PERMISSIVE"},
        "workloads": [
            {"name": "a", "namespace": "default", "service_account": "sa-a", "pod": "a"},
            {"name": "c", "namespace": "default", "service_account": "sa-c", "pod": "c"},
        ],
    }
    return zwlab.Lab(desc, build=ctx.build)


if __name__ == "__main__":
    sys.exit(main(make_lab, "the mesh on two worker lcores per node"))
