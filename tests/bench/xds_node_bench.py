#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A zwire node following a control plane at scale: push-to-in-use time, memory, and the data path under updates.

For each backend and each scale N (workloads), a fresh two-node lab (pod a on node1, pod c on node2, nginx in c)
with tests/controlplane/controlplane.py in each node's namespace, as in tests/integration/test_xds_node.py. Each
control plane pushes a, c and N filler workloads (one service per 10, one namespace ALLOW policy per 20; the
fillers run on a node that is not in the lab), then waits QUIET_S seconds, then streams single-workload updates
every UPDATE_EVERY_S seconds for as long as the bench needs.

Measured and printed (nothing fails on a number):
  push_ms     the control plane's initial Address push -> node1 logs the snapshot in use (DPDK: "reload: applied";
              kernel: "istiod snapshot"), wall clock on both sides
  rss_MiB     node1's RSS once the snapshot is in use; the growth per workload between two scales is printed
              below the table
  rps quiet   wrk from a to c through the mesh (4 connections, SECS s) while nothing changes
  rps updates the same while the updates stream in; the ratio to quiet
  update_ms   median and p90 of push -> in use for the single-workload updates seen during that wrk run

Usage: xds_node_bench.py --build BUILD [--backends dpdk,kernel] [--scales 1000,10000] [--secs 8]
"""

import argparse
import datetime
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import zwlab  # noqa: E402
import mesh_bench  # noqa: E402  (nginx in pod c, wrk)
import xds_lab  # noqa: E402  (nodes following control planes)

TD = "cluster.local"
TOKEN = "zw-xds-bench-token"
QUIET_MARGIN_S = 12  # the quiet pause is the wrk run plus this (servers, warm-up)
UPDATE_EVERY_S = 0.1
UPDATES = 400  # 40 s of updates at most; the bench stops the lab earlier
PODS = {"a": ("node1", "10.21.1.10"), "c": ("node2", "10.21.2.10")}


def say(msg):
    print(msg, flush=True)


def pod_workload(name):
    node, ip = PODS[name]
    uid = f"Kubernetes//Pod/default/{name}"
    return {"name": uid, "version": "1", "aliases": [f"/{ip}"],
            "workload": {"uid": uid, "name": name, "namespace": "default", "ips": [ip], "tunnelProtocol": "HBONE",
                         "serviceAccount": f"sa-{name}", "node": node, "trustDomain": TD}}


def filler(i, rev=1):
    ns = f"fill-{i % 100}"
    uid = f"Kubernetes//Pod/{ns}/w{i}"
    ip = f"10.{200 + i // 65536}.{(i // 256) % 256}.{i % 256}"
    w = {"uid": uid, "name": f"w{i}", "namespace": ns, "ips": [ip], "tunnelProtocol": "HBONE",
         "serviceAccount": f"sa-{i % 1000}", "node": "elsewhere", "trustDomain": TD, "workloadName": f"w{i // 3}",
         "canonicalName": f"app{i // 10}", "canonicalRevision": f"r{rev}", "clusterId": "Kubernetes",
         "services": {f"{ns}/s{i // 10}.{ns}.svc.cluster.local": {"ports": [{"servicePort": 80, "targetPort": 8080}]}}}
    return {"name": uid, "version": str(rev), "aliases": [f"/{ip}"], "workload": w}


def service(j):
    i = j * 10
    ns = f"fill-{i % 100}"
    host = f"s{j}.{ns}.svc.cluster.local"
    return {"name": f"{ns}/{host}", "version": "1",
            "service": {"name": f"s{j}", "namespace": ns, "hostname": host,
                        "vips": [f"/10.{210 + j // 65536}.{(j // 256) % 256}.{j % 256}"],
                        "ports": [{"servicePort": 80, "targetPort": 8080}]}}


def policy(k):
    ns = f"fill-{k % 100}"
    return {"name": f"{ns}/p{k}", "version": "1",
            "authorization": {"name": f"p{k}", "namespace": ns, "scope": "NAMESPACE", "action": "ALLOW",
                              "rules": [{"clauses": [{"matches": [{"principals": [
                                  {"exact": f"{TD}/ns/{ns}/sa/sa-{k % 1000}"}]}]}]}]}}


def scenario(n, quiet_s):
    steps = [{"wait_initial": True},
             {"push": "address", "expect": "ack",
              "resources": [pod_workload("a"), pod_workload("c")] + [filler(i) for i in range(n)]
              + [service(j) for j in range(n // 10)]},
             {"push": "authorization", "expect": "ack", "resources": [policy(k) for k in range(n // 20)]},
             {"sleep": quiet_s}]
    for u in range(UPDATES):
        steps.append({"push": "address", "expect": "ack", "resources": [filler(u % n, rev=2 + u // n)]})
        steps.append({"sleep": UPDATE_EVERY_S})
    return {"ca": "ok", "streams": [steps, [{"wait_initial": True}]]}


def log_times(path, marker):
    """Wall-clock times (s) of the zwire log lines containing marker."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if marker in line:
                ts = line.split(" ", 1)[0]
                try:
                    out.append(datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
                               .replace(tzinfo=datetime.timezone.utc).timestamp())
                except ValueError:
                    pass
    return sorted(out)


def first_after(times, t):
    for x in times:
        if x >= t:
            return x
    return None


def rss_kib(lab, node):
    return mesh_bench.rss_kib(lab.daemons[node].pid)


def run_one(build, backend, n, secs):
    the_scenario = scenario(n, secs + QUIET_MARGIN_S)
    lab = xds_lab.following_lab(build, backend, [(p, node, ip) for p, (node, ip) in PODS.items()], TD, TOKEN,
                                scenario=lambda node: the_scenario)
    marker = "reload: applied" if backend == "dpdk" else "istiod snapshot"
    row = {"backend": backend, "n": n}
    try:
        lab.up()
        # the initial push: its event, then the node's line for it
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pushes = [e for e in xds_lab.events(lab, "node1") if e.get("event") == "push" and e.get("kind") == "address"]
            acks = [e for e in xds_lab.events(lab, "node1") if e.get("event") == "check_ok"]
            if pushes and len(acks) >= 2:
                break
            time.sleep(0.2)
        else:
            raise zwlab.LabError(f"node1 never ACKed the initial push: {xds_lab.events(lab, 'node1')[-3:]}")
        t_push = pushes[0]["t"]
        applied = first_after(log_times(lab.daemons["node1"].log_path, marker), t_push)
        row["push_ms"] = (applied - t_push) * 1000 if applied else None
        mesh_bench.start_servers(lab)
        time.sleep(1)
        row["rss_kib"] = rss_kib(lab, "node1")
        for _ in range(10):  # warm: the pool's HBONE connection and certificates
            if lab.exec("a", ["curl", "-s", "-o", "/dev/null", "--max-time", "3",
                              f"http://{PODS['c'][1]}:{mesh_bench.HTTP_PORT}/1k.bin"]).returncode == 0:
                break
            time.sleep(0.5)
        if time.time() + secs + 0.5 < t_push + secs + QUIET_MARGIN_S:
            row["quiet"] = mesh_bench.wrk(lab, "mesh", 4, secs)
        else:
            say(f"  {backend} {n}: setup took too long for a quiet run before the updates")
        while not [e for e in xds_lab.events(lab, "node1") if e.get("event") == "push" and e["t"] > t_push + 0.5
                   and e.get("kind") == "address"]:
            time.sleep(0.2)
        t0 = time.time()
        row["updates"] = mesh_bench.wrk(lab, "mesh", 4, secs)
        t1 = time.time()
        times = log_times(lab.daemons["node1"].log_path, marker)
        ups = [e["t"] for e in xds_lab.events(lab, "node1") if e.get("event") == "push" and t0 <= e["t"] <= t1]
        lat = [(first_after(times, t) - t) * 1000 for t in ups if first_after(times, t)]
        row["n_updates"] = len(ups)
        row["update_ms"] = (statistics.median(lat), sorted(lat)[int(len(lat) * 0.9)]) if lat else None
        return row
    finally:
        lab.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--backends", default="dpdk,kernel")
    ap.add_argument("--scales", default="1000,10000")
    ap.add_argument("--secs", type=int, default=8)
    args = ap.parse_args()
    if os.geteuid() != 0:
        say("SKIP xds_node_bench: needs root")
        return 0
    zwlab.install_handlers()
    mesh_bench.target = lambda kind, port: (PODS["c"][1], port)
    rows = []
    for backend in args.backends.split(","):
        for n in (int(x) for x in args.scales.split(",")):
            try:
                rows.append(run_one(args.build, backend, n, args.secs))
            except zwlab.LabError as e:
                say(f"  {backend} {n}: lab failed: {e}")
    say(f"{'backend':8} {'workloads':>9} {'push_ms':>8} {'rss_MiB':>8} {'rps_quiet':>10} "
        f"{'rps_updates':>11} {'ratio':>6} {'updates':>7} {'upd_p50_ms':>10} {'upd_p90_ms':>10}")
    for r in rows:
        q = r.get("quiet", {}).get("rps")
        u = r.get("updates", {}).get("rps")
        um = r.get("update_ms") or (None, None)
        say(f"{r['backend']:8} {r['n']:>9} {r['push_ms'] or float('nan'):>8.1f} "
            f"{(r.get('rss_kib') or 0) / 1024:>8.1f} "
            f"{q or float('nan'):>10.0f} {u or float('nan'):>11.0f} {(u / q if q and u else float('nan')):>6.2f} "
            f"{r.get('n_updates', 0):>7} {um[0] if um[0] is not None else float('nan'):>10.1f} "
            f"{um[1] if um[1] is not None else float('nan'):>10.1f}")
    for backend in args.backends.split(","):
        mine = sorted((r for r in rows if r["backend"] == backend and r.get("rss_kib")), key=lambda r: r["n"])
        if len(mine) >= 2 and mine[-1]["n"] > mine[0]["n"]:
            per = (mine[-1]["rss_kib"] - mine[0]["rss_kib"]) * 1024 / (mine[-1]["n"] - mine[0]["n"])
            say(f"{backend}: node RSS grows {per:.0f} bytes per workload between {mine[0]['n']} and {mine[-1]['n']} "
                f"(with services and policies in proportion)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
