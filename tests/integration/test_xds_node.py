#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""zwire nodes that follow a control plane: workloads and policies arrive over Delta ADS, not from the file.

Each DPDK zwire node gets a config with only the mesh group (trust domain, CA) and an xds group pointing at
tests/controlplane/controlplane.py, which runs inside that node's network namespace on 127.0.0.1:15012 with its own
throw-away PKI (server-only TLS, a bearer token). Both control planes play the same scenario:

  stream 1: wait for the initial requests; push Address [a, b (node1), c (node2, selected by default/allow-sa-a)]
            (ACK); push Authorization [default/allow-sa-a: ALLOW principal sa-a] (ACK); push one malformed Address
            (NACK, the rest stays); after PHASE2_S seconds push Authorization default/deny-sa-a-8080, a namespace
            DENY of sa-a on port 8080 (ACK)

  pods: a 10.21.1.10 (default/sa-a), b 10.21.1.11 (other/sa-b) on node1; c 10.21.2.10 (default/sa-c) on node2.

Cases: ready once both types were ACKed; a -> c crosses as HBONE with sa-a's identity; b -> c is denied by the
pushed policy; the malformed resource was NACKed with its reason and nothing else changed; the policy pushed later
denies a -> c live and closes a connection a held open since before the push; no control-plane check failed.
"""

import json
import os
import sys
import time

from harness import case, check, main
import zwlab

HERE = os.path.dirname(os.path.abspath(__file__))
CONTROLPLANE = os.path.join(HERE, "..", "controlplane", "controlplane.py")
MESH_PEER = os.path.join(HERE, "mesh_peer.py")
PY = zwlab.PYTHON
TD = "cluster.local"
TOKEN = "zw-xds-node-token"
CP_PORT = 15012
PORT = 8080
PHASE2_S = 25  # seconds after the first pushes until the control plane denies a -> c
PODS = {"a": ("node1", "10.21.1.10", "default"), "b": ("node1", "10.21.1.11", "other"),
        "c": ("node2", "10.21.2.10", "default")}


def workload(name, policies=()):
    node, ip, ns = PODS[name]
    uid = f"Kubernetes//Pod/{ns}/{name}"
    return {"name": uid, "version": "1", "aliases": [f"/{ip}"],
            "workload": {"uid": uid, "name": name, "namespace": ns, "ips": [ip], "tunnelProtocol": "HBONE",
                         "serviceAccount": f"sa-{name}", "node": node, "trustDomain": TD, "workloadName": name,
                         "canonicalName": name, "canonicalRevision": "latest", "clusterId": "Kubernetes",
                         "authorizationPolicies": list(policies)}}


def authorization(name, ns, scope, action, match, version="1"):
    return {"name": f"{ns}/{name}", "version": version,
            "authorization": {"name": name, "namespace": ns, "scope": scope, "action": action,
                              "rules": [{"clauses": [{"matches": [match]}]}]}}


SCENARIO = {"ca": "ok", "streams": [[
    {"wait_initial": True},
    {"push": "address", "expect": "ack",
     "resources": [workload("a"), workload("b"), workload("c", ["default/allow-sa-a"])]},
    {"push": "authorization", "expect": "ack",
     "resources": [authorization("allow-sa-a", "default", "WORKLOAD_SELECTOR", "ALLOW",
                                 {"principals": [{"exact": f"{TD}/ns/default/sa/sa-a"}]})]},
    {"push": "address", "expect": "nack", "nack_contains": "bad/one",
     "resources": [{"name": "bad/one", "version": "1", "raw_hex": "ffffff"}]},
    {"sleep": PHASE2_S},
    {"push": "authorization", "expect": "ack",
     "resources": [authorization("deny-sa-a-8080", "default", "NAMESPACE", "DENY",
                                 {"principals": [{"exact": f"{TD}/ns/default/sa/sa-a"}],
                                  "destinationPorts": [PORT]})]},
]]}


def cp_dir(lab, node):
    return os.path.join(lab.run_dir, f"cp-{node}")


def start_controlplane(lab, node):
    """Runs before the node's zwire: the control plane in the node's netns, ready before zwire dials it."""
    wd = cp_dir(lab, node)
    os.makedirs(wd, exist_ok=True)
    scen = os.path.join(wd, "scenario.json")
    with open(scen, "w", encoding="utf-8") as f:
        json.dump(SCENARIO, f)
    proc = lab.start_bg(node, [PY, CONTROLPLANE, "--host", "127.0.0.1", "--port", str(CP_PORT), "--token", TOKEN,
                               "--scenario", scen, "--workdir", wd], f"controlplane-{node}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "CONTROLPLANE port=" in proc.log_tail():
            return
        check(proc.alive(), f"the control plane of {node} exited:\n{proc.log_tail()}")
        time.sleep(0.2)
    raise AssertionError(f"the control plane of {node} did not start:\n{proc.log_tail()}")


def events(lab, node):
    path = os.path.join(cp_dir(lab, node), "events.jsonl")
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    except OSError:
        pass
    return out


def curl(lab, src, dst_ip, max_time=6):
    res = lab.exec(src, ["curl", "-sS", "--max-time", str(max_time), "-o", "/dev/null", "-w", "%{http_code}",
                         f"http://{dst_ip}:{PORT}/"], timeout=max_time + 5)
    return res.returncode, res.stdout.strip(), res.stderr.strip()


def access_lines(lab, node):
    with open(lab.daemons[node].log_path, encoding="utf-8", errors="replace") as f:
        return [ln.rstrip("\n") for ln in f if " access: " in ln]


def wait_for(pred, timeout, step=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return None


def ensure_server(lab, ctx):
    if "http" not in ctx.scratch:
        proc = lab.start_bg("c", [PY, MESH_PEER, "serve", "c", PODS["c"][1], str(PORT)], "peer-c")
        lab.wait_listen("c", PORT, "tcp", proc=proc)
        ctx.scratch["http"] = proc


def start_hold(lab, ctx):
    """a keeps one connection to c open (GET /hold: c sends a byte every 0.2 s) from before the later push."""
    ensure_server(lab, ctx)
    if "hold" not in ctx.scratch:
        hold = lab.start_bg("a", [PY, MESH_PEER, "hold", PODS["c"][1], str(PORT)], "hold-a-c")
        ok = wait_for(lambda: "open" in hold.log_tail(), 10)
        check(ok, f"a -> c (hold) did not open: {hold.log_tail()!r}")
        ctx.scratch["hold"] = hold


@case
def ready_once_both_types_were_acked(lab, _ctx):
    for node in ("node1", "node2"):
        code, body = lab.mgmt(node, "GET", "/healthz/ready")
        check(code == 200, f"{node}: /healthz/ready -> {code} {body}")
        acks = [e for e in events(lab, node) if e.get("event") == "check_ok" and e.get("what") == "ack"]
        check(len(acks) >= 2, f"{node}: ready, but the control plane saw {len(acks)} ACKs: {events(lab, node)}")
        log = open(lab.daemons[node].log_path, encoding="utf-8", errors="replace").read()
        check("following istiod at 127.0.0.1:15012" in log, f"{node}: no 'following istiod' line in its log")
        check("istiod snapshot" in log, f"{node}: no snapshot applied (log):\n{log[-1500:]}")


@case
def pushed_workloads_carry_a_to_c_over_hbone(lab, ctx):
    ensure_server(lab, ctx)
    rc, code, err = curl(lab, "a", PODS["c"][1])
    check(rc == 0 and code == "200", f"a -> c: curl rc {rc} status {code} {err}")
    out = wait_for(lambda: [ln for ln in access_lines(lab, "node1") if " outbound " in ln
                            and f"dst.addr={PODS['c'][1]}:{PORT}" in ln], 5)
    check(out and "hbone_status=200" in out[-1] and f"dst.identity=spiffe://{TD}/ns/default/sa/sa-c" in out[-1],
          f"node1 has no HBONE access line for a -> c: {out}")
    inb = wait_for(lambda: [ln for ln in access_lines(lab, "node2") if " inbound " in ln
                            and f"src.identity=spiffe://{TD}/ns/default/sa/sa-a" in ln], 5)
    check(inb and "reason=-" in inb[-1], f"node2 has no clean inbound line from sa-a: {inb}")


@case
def pushed_policy_denies_b_to_c(lab, ctx):
    start_hold(lab, ctx)
    rc, code, err = curl(lab, "b", PODS["c"][1])
    check(rc != 0 or code != "200", f"b -> c succeeded although allow-sa-a admits only sa-a: {code}")
    inb = wait_for(lambda: [ln for ln in access_lines(lab, "node2") if " inbound " in ln
                            and f"src.identity=spiffe://{TD}/ns/other/sa/sa-b" in ln], 5)
    check(inb and "hbone_status=401" in inb[-1] and "reason=denied" in inb[-1],
          f"node2 did not deny b -> c with 401: {inb}")


@case
def malformed_resource_nacked_rest_applied(lab, _ctx):
    for node in ("node1", "node2"):
        nacks = wait_for(lambda: [e for e in events(lab, node) if e.get("event") == "check_ok"
                                  and e.get("what") == "nack"], 10)
        check(nacks, f"{node}: the control plane saw no NACK of bad/one: {events(lab, node)[-6:]}")
        check("bad/one" in (nacks[-1].get("error_detail") or ""), f"{node}: NACK without the name: {nacks[-1]}")
        code, body = lab.mgmt(node, "GET", "/config_dump")
        check(code == 200, f"{node}: /config_dump -> {code}")
        dump = json.loads(body)
        names = sorted(w.get("name") for w in find_workloads(dump))
        check(names == ["a", "b", "c"], f"{node}: workloads after the NACK: {names}")


def find_workloads(obj):
    """The workload objects of /config_dump's mesh section, wherever it sits."""
    if isinstance(obj, dict):
        if isinstance(obj.get("workloads"), list):
            return obj["workloads"]
        for v in obj.values():
            got = find_workloads(v)
            if got:
                return got
    return []


@case
def policy_pushed_later_denies_a_to_c_live(lab, ctx):
    ensure_server(lab, ctx)

    def denied():
        rc, code, _ = curl(lab, "a", PODS["c"][1], max_time=3)
        return rc != 0 or code != "200"
    got = wait_for(denied, PHASE2_S + 30, step=1.0)
    check(got, f"a -> c still allowed {PHASE2_S + 30}s later; control plane events: {events(lab, 'node2')[-4:]}")
    hold = ctx.scratch.get("hold")
    check(hold is not None, "no connection was held open across the push")
    closed = wait_for(lambda: not hold.alive(), 10)
    check(closed, f"a's connection to c, open before the push, survived the DENY for 10 s: {hold.log_tail()!r}")
    inb = [ln for ln in access_lines(lab, "node2") if " inbound " in ln
           and f"src.identity=spiffe://{TD}/ns/default/sa/sa-a" in ln]
    check(inb and "reason=denied" in inb[-1], f"node2's last line for sa-a is not a denial: {inb[-1:]}")


@case
def no_control_plane_check_failed(lab, _ctx):
    for node in ("node1", "node2"):
        bad = [e for e in events(lab, node) if e.get("event") == "check_failed"]
        check(not bad, f"{node}: control plane checks failed: {bad}")


@case
def teardown_leaves_nothing(lab, _ctx):
    pass


def make_lab(ctx):
    desc = json.loads(json.dumps(zwlab.DEFAULT_DESC))
    desc["mesh"] = {"mesh": {"trust_domain": TD, "mtls_mode": "PERMISSIVE"}}
    lab = zwlab.Lab(desc, build=ctx.build, kind="zwire")
    token = os.path.join(lab.run_dir, "token")

    def before_zwire(lab_, node):
        with open(token, "w", encoding="utf-8") as f:
            f.write(TOKEN)
        start_controlplane(lab_, node)
        lab_.nodes[node]["config_extra"] = (
            f'xds = {{ address = "127.0.0.1:{CP_PORT}"; root_cert = "{cp_dir(lab_, node)}/root.pem"; '
            f'token_file = "{token}"; cluster_id = "Kubernetes"; server_name = "localhost"; '
            f'node_id = "ztunnel~127.0.0.1~zwire-{node}.istio-system~istio-system.svc.cluster.local"; }};')
    lab.before_zwire = before_zwire
    return lab


if __name__ == "__main__":
    sys.exit(main(make_lab, "zwire nodes following a control plane (Delta ADS)"))
