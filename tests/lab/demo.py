#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""`make demo`: two zwire mesh nodes, three Linux pods, traffic through HBONE, a policy denial, the evidence.

Brings up the default zwlab topology with zwire nodes that run the mesh (pods a and c in namespace
"default", pod b in namespace "other"; pod c admits only the identity of pod a), narrates each step,
prints what the commands printed, and tears everything down (also on Ctrl-C).
`--backend kernel` runs the same mesh with `zwire --backend kernel` (sockets and nftables capture)
in place of the DPDK data plane; `--kind linux` runs only the routing part with kernel routers.

Usage: demo.py --build BUILD_DIR [--backend dpdk|kernel] [--kind zwire|linux]
"""

import argparse
import copy
import os
import re
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zwlab  # noqa: E402  (path set just above)

TOPOLOGY = """\
     pod a 10.21.1.10   pod b 10.21.1.11                      pod c 10.21.2.10
          \\                 /                                      |
        br-pods (10.21.1.0/24, gw .1)                    br-pods (10.21.2.0/24, gw .1)
               | dp-pods                                          | dp-pods
        +------+-------+   dp-fab 10.21.0.1   dp-fab 10.21.0.2 +------+-------+
        |    node1     |=====================================|    node2     |
        +--------------+            fabric veth              +--------------+"""


TD = "cluster.local"


def spiffe(ns, sa):
    return f"spiffe://{TD}/ns/{ns}/sa/{sa}"


def demo_desc(kind):
    desc = copy.deepcopy(zwlab.DEFAULT_DESC)
    for n in desc["nodes"]:
        n["kind"] = kind
    if kind != "linux":
        desc["mesh"] = {
            "mesh": {"trust_domain": TD, "mtls_mode": "PERMISSIVE"},
            "workloads": [
                {"name": "a", "namespace": "default", "service_account": "sa-a", "pod": "a"},
                {"name": "b", "namespace": "other", "service_account": "sa-b", "pod": "b"},
                {"name": "c", "namespace": "default", "service_account": "sa-c", "pod": "c",
                 "authorization_policies": ["default/allow-sa-a"]},
            ],
            "policies": [{"name": "allow-sa-a", "namespace": "default", "scope": "workload_selector",
                          "action": "allow",
                          "rules": [{"clauses": [{"matches": [{"principals": [f"{TD}/ns/default/sa/sa-a"]}]}]}]}],
        }
    return desc


def access_lines(lab, node, since):
    """zwire's access-log lines of a node written after byte offset since."""
    with open(lab.daemons[node].log_path, encoding="utf-8", errors="replace") as f:
        f.seek(since)
        return [ln.rstrip("\n") for ln in f if " access: " in ln]


def log_size(lab, node):
    return os.path.getsize(lab.daemons[node].log_path)


def wait_access(lab, node, since, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = access_lines(lab, node, since)
        if got:
            return got
        time.sleep(0.1)
    return []


def short_access(line):
    """The access line without its timestamp, one field per line for reading."""
    body = line.split(" access: ", 1)[1]
    keep = ("src.addr", "src.identity", "dst.addr", "dst.identity", "bytes_sent", "bytes_recv",
            "hbone_status", "reason")
    fields = [kv for kv in body.split() if kv.split("=", 1)[0] in keep]
    return body.split()[0] + "  " + "  ".join(fields)


def short_metric(line):
    """name{a few labels} value: the labels that tell the connections apart."""
    m = re.match(r'(\w+)\{(.*)\}\s+(\S+)$', line)
    if not m:
        return line
    keep = ("source_workload", "destination_workload", "connection_security_policy", "response_flags")
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
    shown = ",".join(f'{k}="{labels[k]}"' for k in keep if labels.get(k))
    return f"{m.group(1)}{{{shown}}} {m.group(3)}"


def say(step, text):
    print(f"\n=== {step}. {text}", flush=True)


def show(text, indent="    "):
    print(textwrap.indent(text.rstrip("\n"), indent), flush=True)


def ping(lab, src, dst, what):
    for _ in range(3):  # the first echo may wait on ARP resolution at each hop
        if lab.ping(src, dst, count=1, wait=1)["received"]:
            break
    res = lab.ping(src, dst, count=3, interval=0.3)
    print(f"  $ ping -c 3 {dst}      (from pod {src}: {what})")
    show(res["output"])
    return res


def http(lab, src, dst_pod, port):
    url = f"http://{lab.pods[dst_pod]['ip']}:{port}/hello.txt"
    res = lab.exec(src, ["curl", "-sv", "--max-time", "10", url, "-w",
                         "\n[%{http_code}] %{size_download} bytes in %{time_total}s "
                         "(connect %{time_connect}s, first byte %{time_starttransfer}s)\n"],
                   timeout=20)
    print(f"  $ curl -v {url}      (from pod {src})")
    for line in res.stderr.splitlines():
        if line.startswith(("* Connected", "> GET", "> Host", "< HTTP", "< Content-Length",
                            "< Server", "* Closing", "* Connection")):
            show(line)
    show(res.stdout)
    return res.returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--backend", choices=("dpdk", "kernel"), default="dpdk")
    ap.add_argument("--kind", choices=("zwire", "linux"), default="zwire")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: must run as root (it builds network namespaces)", file=sys.stderr)
        return 1
    os.environ.setdefault("ZWLAB_QUIET", "1")
    kind = "linux" if args.kind == "linux" else ("zwire" if args.backend == "dpdk" else "zwire-kernel")
    mesh = kind != "linux"

    print("zwire demo: Linux pods in network namespaces, two nodes" +
          (", the mesh between them (HBONE on port 15008).\n" if mesh else " routing them.\n"))
    print(TOPOLOGY)
    ok = True
    try:
        say(1, f"Building the lab with {kind} nodes")
        lab = zwlab.Lab(demo_desc(kind), build=args.build, kind=kind)
        with lab:
            print(f"  run id {lab.run_id}: netns {', '.join(lab.state['netns'])}")
            for n in lab.daemons:
                how = "DPDK af_packet on dp-pods and dp-fab" if kind == "zwire" else "kernel sockets + nftables capture"
                print(f"  {n}: zwire pid {lab.daemons[n].pid}, {how}, mgmt socket {lab.socket_path(n)}")
            if mesh:
                print("  mesh: a = default/sa-a, b = other/sa-b (node1); c = default/sa-c (node2), "
                      "whose policy allows only sa-a")

            say(2, "Ping across both nodes: ICMP is routed, not tunnelled; each node is one hop (TTL 62)")
            ok &= ping(lab, "a", lab.pods["c"]["ip"], "a -> node1 -> node2 -> c")["received"] > 0

            www = os.path.join(lab.run_dir, "www")
            os.makedirs(www)
            with open(os.path.join(www, "hello.txt"), "w", encoding="utf-8") as f:
                f.write(f"hello from pod c, through two {kind} nodes\n")
            lab.start_http_server("c", 8080, www)

            say(3, "HTTP from pod a to pod c" + (": node1 captures it, opens HBONE to node2 with sa-a's "
                                                  "certificate, node2 checks the policy and delivers" if mesh else ""))
            marks = {n: log_size(lab, n) for n in lab.daemons}
            ok &= http(lab, "a", "c", 8080)
            if mesh:
                out1 = wait_access(lab, "node1", marks["node1"])
                in2 = wait_access(lab, "node2", marks["node2"])
                print("  access log of node1 (outbound) and node2 (inbound):")
                for ln in out1[-1:] + in2[-1:]:
                    show(short_access(ln))
                ok &= bool(out1) and bool(in2) and "hbone_status=200" in out1[-1] and \
                    f"src.identity={spiffe('default', 'sa-a')}" in in2[-1]

                say(4, "HTTP from pod b (namespace other) to pod c: the policy denies sa-b, node2 answers "
                       "the CONNECT with 401 and no byte reaches c")
                marks = {n: log_size(lab, n) for n in lab.daemons}
                denied = not http(lab, "b", "c", 8080)
                in2 = wait_access(lab, "node2", marks["node2"])
                for ln in in2[-1:]:
                    show(short_access(ln))
                ok &= denied and bool(in2) and "reason=denied" in in2[-1]

                say(5, "Why: zwirectl authz check on node2")
                for ident in (spiffe("other", "sa-b"), spiffe("default", "sa-a")):
                    print(f"  $ zwirectl authz check --src-identity {ident} --dst {lab.pods['c']['ip']}:8080")
                    try:
                        show(lab.zwirectl("node2", ["authz", "check", "--src-identity", ident, "--dst",
                                                    f"{lab.pods['c']['ip']}:8080"], parse=False))
                    except zwlab.LabError as e:
                        ok = False
                        show(f"zwirectl failed: {e}")

                say(6, "Istio metrics of node2 (the same names ztunnel exports)")
                try:
                    text = lab.zwirectl("node2", ["metrics"], parse=False)
                    for ln in text.splitlines():
                        if ln.startswith(("istio_tcp_connections_opened_total", "istio_tcp_received_bytes_total")):
                            show(short_metric(ln))
                except zwlab.LabError as e:
                    ok = False
                    show(f"zwirectl failed: {e}")

            if kind == "zwire":
                for i, n in enumerate(lab.nodes, start=7):
                    say(i, f"zwirectl stats on {n}")
                    try:
                        show(lab.zwirectl(n, ["stats"], parse=False))
                    except zwlab.LabError as e:
                        ok = False
                        show(f"zwirectl failed: {e}")
            say("*", "Tearing down")
        left = lab.leftovers()
        print("  everything removed" if not left else f"  LEFT BEHIND: {', '.join(left)}")
        ok &= not left
    except zwlab.LabError as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; lab torn down", file=sys.stderr)
        return 130
    print("\ndemo " + ("done" if ok else "finished WITH ERRORS"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
