#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""On-demand Address lookups (xds.on_demand, ztunnel's XDS_ON_DEMAND) against the test control plane.

Two zwire nodes (--backend dpdk or kernel), each following its own tests/controlplane/controlplane.py on
127.0.0.1:15012 in its namespace (one shared PKI; certificates from its CA):

  node1: on_demand = true. Its control plane pushes only pod a (node1's own workload) and an ALLOW-all policy; it
         serves pod c's Address only when asked for "/10.21.2.10", and answers any other name with a removal.
  node2: wildcard, as usual: a and c.

  pods: a 10.21.1.10 (default/sa-a) on node1; c 10.21.2.10 (default/sa-c) and x 10.21.2.20 (no workload: outside
        the mesh) on node2.

Cases: node1 is ready once the policy is ACKed and its first Address request subscribed to nothing; c is unknown
to node1 until a connection needs it; a -> c makes node1 ask for "/10.21.2.10", wait for the answer and tunnel the
connection over HBONE with c's identity; a -> x (nobody's address) is asked for, answered with a removal and passed
through without waiting for the lookup timeout, and the next connection to x neither asks nor waits; no
control-plane check failed.
"""

import os
import sys
import time

import checks
from harness import case, check, main, take_backend
from xds_lab import access_lines, config_dump, events, following_lab, wait_for
import zwlab

HERE = os.path.dirname(os.path.abspath(__file__))
MESH_PEER = os.path.join(HERE, "mesh_peer.py")
PY = zwlab.PYTHON
TD = "cluster.local"
TOKEN = "zw-xds-on-demand-token"
PORT = 8080
BACKEND = "dpdk"  # set from --backend before main()
PODS = {"a": ("node1", "10.21.1.10"), "c": ("node2", "10.21.2.10"), "x": ("node2", "10.21.2.20")}
ADDRESS_URL = "type.googleapis.com/istio.workload.Address"


def workload(name):
    node, ip = PODS[name]
    uid = f"Kubernetes//Pod/default/{name}"
    return {"name": uid, "version": "1", "aliases": [f"/{ip}"],
            "workload": {"uid": uid, "name": name, "namespace": "default", "ips": [ip], "tunnelProtocol": "HBONE",
                         "serviceAccount": f"sa-{name}", "node": node, "trustDomain": TD}}


ALLOW_ALL = {"name": "default/allow-all", "version": "1",
             "authorization": {"name": "allow-all", "namespace": "default", "scope": "NAMESPACE", "action": "ALLOW",
                               "rules": [{}]}}
SCENARIOS = {
    "node1": {"ca": "ok", "on_demand": [workload("c")], "streams": [[
        {"wait_initial": True},
        {"push": "address", "expect": "ack", "resources": [workload("a")]},
        {"push": "authorization", "expect": "ack", "resources": [ALLOW_ALL]},
    ]]},
    "node2": {"ca": "ok", "streams": [[
        {"wait_initial": True},
        {"push": "address", "expect": "ack", "resources": [workload("a"), workload("c")]},
        {"push": "authorization", "expect": "ack", "resources": [ALLOW_ALL]},
    ]]},
}


def workload_names(lab, node):
    return sorted(w.get("name") for w in config_dump(lab, node).get("workloads", []))


def curl(lab, src, ip, max_time=8):
    t0 = time.monotonic()
    res = lab.exec(src, ["curl", "-sS", "--max-time", str(max_time), "-o", "/dev/null", "-w", "%{http_code}",
                         f"http://{ip}:{PORT}/"], timeout=max_time + 5)
    return res.returncode, res.stdout.strip(), res.stderr.strip(), time.monotonic() - t0


def ensure_servers(lab, ctx):
    if "servers" not in ctx.scratch:
        procs = []
        for pod in ("c", "x"):
            proc = lab.start_bg(pod, [PY, MESH_PEER, "serve", pod, PODS[pod][1], str(PORT)], f"peer-{pod}")
            lab.wait_listen(pod, PORT, "tcp", proc=proc)
            procs.append(proc)
        ctx.scratch["servers"] = procs
    # the lookups below must come after the scenario's pushes (the control plane answers them once its steps ran)
    check(wait_for(lambda: any(e.get("event") == "steps_done" for e in events(lab, "node1")), 20),
          f"node1's control plane did not finish its pushes: {events(lab, 'node1')[-3:]}")


@case
def ready_with_addresses_subscribed_to_nothing(lab, _ctx):
    code, body = lab.mgmt("node1", "GET", "/healthz/ready")
    check(code == 200, f"node1: /healthz/ready -> {code} {body}")
    first = [e for e in events(lab, "node1") if e.get("event") == "request" and e.get("first")
             and e.get("type_url") == ADDRESS_URL]
    check(first and first[0]["subscribe"] == ["*"] and first[0]["unsubscribe"] == ["*"],
          f"node1's first Address request does not subscribe to nothing: {first[:1]}")
    xds = config_dump(lab, "node1").get("xds", {})
    check(xds.get("on_demand") is True, f"node1's /config_dump does not say on_demand: {xds}")


@case
def c_unknown_until_a_connection_needs_it(lab, _ctx):
    check(wait_for(lambda: workload_names(lab, "node1") == ["a"], 10),
          f"node1 holds {workload_names(lab, 'node1')} before any lookup (want only a)")
    check(not [e for e in events(lab, "node1") if e.get("event") == "on_demand"],
          "node1 asked for something before any connection")


@case
def a_reaches_c_after_the_lookup(lab, ctx):
    ensure_servers(lab, ctx)
    rc, code, err, secs = curl(lab, "a", PODS["c"][1])
    check(rc == 0 and code == "200", f"a -> c: curl rc {rc} status {code} {err}")
    asked = [e for e in events(lab, "node1") if e.get("event") == "on_demand"]
    check(asked and asked[0]["asked"] == [f"/{PODS['c'][1]}"] and asked[0]["names"] == [workload("c")["name"]],
          f"node1 did not ask for /{PODS['c'][1]} (control plane saw {asked})")
    out = wait_for(lambda: [ln for ln in access_lines(lab, "node1") if " outbound " in ln
                            and f"dst.addr={PODS['c'][1]}:{PORT}" in ln], 5)
    check(out and "hbone_status=200" in out[-1] and f"dst.identity=spiffe://{TD}/ns/default/sa/sa-c" in out[-1],
          f"node1 did not tunnel a -> c to c's identity: {out}")
    check("c" in workload_names(lab, "node1"), f"node1 does not hold c after the answer: {workload_names(lab, 'node1')}")
    lookups = config_dump(lab, "node1").get("xds", {}).get("lookups", {})
    check(lookups.get("sent", 0) >= 1, f"node1's /config_dump counts no lookup: {lookups}")
    print(f"    a -> c with the lookup: {secs * 1000:.0f} ms", flush=True)
    rc, code, err, _ = curl(lab, "a", PODS["c"][1])
    check(rc == 0 and code == "200", f"a -> c again: {rc} {code} {err}")
    check(len([e for e in events(lab, "node1") if e.get("event") == "on_demand"]) == 1,
          "node1 asked again for an address it holds")


@case
def unknown_address_answered_with_removal_passes_through(lab, ctx):
    ensure_servers(lab, ctx)
    rc, code, err, secs = curl(lab, "a", PODS["x"][1])
    check(rc == 0 and code == "200", f"a -> x (outside the mesh): curl rc {rc} status {code} {err}")
    asked = [e for e in events(lab, "node1") if e.get("event") == "on_demand" and e.get("asked") == [f"/{PODS['x'][1]}"]]
    check(asked and asked[0]["removed"] == [f"/{PODS['x'][1]}"], f"node1 did not ask for x: {asked}")
    check(secs < 4.0, f"a -> x took {secs:.1f} s: the removal did not end the wait (lookup timeout is 5 s)")
    out = wait_for(lambda: [ln for ln in access_lines(lab, "node1") if " outbound " in ln
                            and f"dst.addr={PODS['x'][1]}:{PORT}" in ln], 5)
    check(out and "hbone_status=200" not in out[-1], f"a -> x was tunnelled (or not logged): {out}")
    # the answer is remembered: the next connection to x neither asks nor waits
    rc, code, err, secs2 = curl(lab, "a", PODS["x"][1])
    check(rc == 0 and code == "200", f"a -> x again: {rc} {code} {err}")
    again = [e for e in events(lab, "node1") if e.get("event") == "on_demand" and e.get("asked") == [f"/{PODS['x'][1]}"]]
    check(len(again) == 1, f"node1 asked for x again: {again}")
    print(f"    a -> x: {secs * 1000:.0f} ms with the lookup, {secs2 * 1000:.0f} ms after", flush=True)


@case
def no_control_plane_check_failed(lab, _ctx):
    for node in ("node1", "node2"):
        bad = [e for e in events(lab, node) if e.get("event") == "check_failed"]
        check(not bad, f"{node}: control plane checks failed: {bad}")


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    checks.no_leftovers(lab)  # namespaces, processes (the control planes among them), links, runtime dirs


def make_lab(ctx):
    pods = [(p, node, ip) for p, (node, ip) in PODS.items()]
    return following_lab(ctx.build, BACKEND, pods, TD, TOKEN, scenario=lambda node: SCENARIOS[node],
                         xds_keys=lambda node: {"on_demand": node == "node1"})


if __name__ == "__main__":
    BACKEND = take_backend(sys.argv)
    sys.exit(main(make_lab, f"on-demand Address lookups ({BACKEND} backend)"))
