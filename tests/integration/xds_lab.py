# SPDX-License-Identifier: Apache-2.0
"""Labs of zwire nodes that follow tests/controlplane/controlplane.py, shared by the xDS suites and benchmarks.

Each zwire node gets its own control plane in its network namespace on 127.0.0.1:CP_PORT (server-only TLS, a bearer
token), all of them on one PKI in <run_dir>/pki so that every node's workload certificates chain to the same root.
The node's config has only the mesh group (trust domain, mTLS mode, certificates from the Istio CA) and an xds group
pointing at its control plane. The control plane's events (one JSON object per line) are read back with events().
"""

import json
import os
import time

import zwlab

HERE = os.path.dirname(os.path.abspath(__file__))
CONTROLPLANE = os.path.join(HERE, "..", "controlplane", "controlplane.py")
CP_PORT = 15012
KINDS = {"dpdk": "zwire", "kernel": "zwire-kernel"}


def cp_dir(lab, node):
    return os.path.join(lab.run_dir, f"cp-{node}")


def start_controlplane(lab, node, scenario, name, token):
    """Start a control plane playing scenario in node's namespace (its log is <name>.log); returns once it listens."""
    wd = cp_dir(lab, node)
    os.makedirs(wd, exist_ok=True)
    scen = os.path.join(wd, f"{name}.json")
    with open(scen, "w", encoding="utf-8") as f:
        json.dump(scenario, f)
    proc = lab.start_bg(node, [zwlab.PYTHON, CONTROLPLANE, "--host", "127.0.0.1", "--port", str(CP_PORT),
                               "--token", token, "--scenario", scen, "--workdir", wd,
                               "--pki-dir", os.path.join(lab.run_dir, "pki")], name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "CONTROLPLANE port=" in proc.log_tail():
            return proc
        if not proc.alive():
            break
        time.sleep(0.2)
    raise zwlab.LabError(f"the control plane of {node} did not start:\n{proc.log_tail()}")


def events(lab, node, since=0.0):
    """The events node's control plane logged at or after since (wall clock), in order."""
    out = []
    try:
        with open(os.path.join(cp_dir(lab, node), "events.jsonl"), encoding="utf-8") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if ev.get("t", 0) >= since:
                    out.append(ev)
    except OSError:
        pass
    return out


def wait_for(pred, timeout, step=0.2):
    """pred()'s first truthy value within timeout seconds, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return None


def access_lines(lab, node):
    with open(lab.daemons[node].log_path, encoding="utf-8", errors="replace") as f:
        return [ln.rstrip("\n") for ln in f if " access: " in ln]


def config_dump(lab, node):
    code, body = lab.mgmt(node, "GET", "/config_dump")
    if code != 200:
        raise AssertionError(f"{node}: /config_dump -> {code} {body[:300]}")
    return json.loads(body)


def _libconfig(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


def following_lab(build, backend, pods, trust_domain, token, scenario, xds_keys=None, started=None):
    """A two-node lab (zwlab.DEFAULT_DESC's nodes on backend "dpdk" or "kernel") whose nodes follow control planes.

    pods: [(name, node, ip)]; scenario(node) gives each control plane's scenario; xds_keys(node) extra keys of the
    node's xds group (ints, bools, strings); started(node, proc) is told of each control plane as it starts.
    """
    desc = json.loads(json.dumps(zwlab.DEFAULT_DESC))
    for n in desc["nodes"]:
        n["kind"] = KINDS[backend]
    desc["pods"] = [{"name": p, "node": node, "ip": ip} for p, node, ip in pods]
    # no CA in the file: the Istio CA (the test control plane) signs every workload certificate
    desc["mesh"] = {"mesh": {"trust_domain": trust_domain, "mtls_mode": "PERMISSIVE",
                             "certificates": {"source": "xds"}}}
    lab = zwlab.Lab(desc, build=build)
    token_file = os.path.join(lab.run_dir, "token")

    def before_zwire(lab_, node):
        with open(token_file, "w", encoding="utf-8") as f:
            f.write(token)
        proc = start_controlplane(lab_, node, scenario(node), f"controlplane-{node}", token)
        if started is not None:
            started(node, proc)
        keys = {"address": f"127.0.0.1:{CP_PORT}", "root_cert": f"{lab_.run_dir}/pki/root.pem",
                "token_file": token_file, "cluster_id": "Kubernetes", "server_name": "localhost",
                "node_id": f"ztunnel~127.0.0.1~zwire-{node}.istio-system~istio-system.svc.cluster.local"}
        keys.update(xds_keys(node) if xds_keys is not None else {})
        lab_.nodes[node]["config_extra"] = "xds = { " + " ".join(f"{k} = {_libconfig(v)};"
                                                                 for k, v in keys.items()) + " };"
    lab.before_zwire = before_zwire
    return lab
