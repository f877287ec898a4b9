#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""`make bench`: L3 forwarding rate of one node, zwire against a Linux kernel router, in one run.

Topology (zwlab BENCH_DESC): pod a is held directly by node1's pods port (no bridge); node1's
fabric port leads to a bare endpoint netns "sink" (10.21.0.2). So every packet crosses exactly
one router, node1, from its pods port to its fabric port:

    pod a 10.21.1.10 --veth-- [dp-pods  node1  dp-fab] --veth-- sink 10.21.0.2 (iperf3 -s)

For each node kind the same topology is built, then iperf3 sends small UDP datagrams
(-u -l 64 -b 0: as fast as the client can) for a few seconds, several times. The rate reported
is what the server received (sent - lost) per second, next to what left the node (packets
received on the sink's veth); the table gives the median, min and max,
and the ratio zwire/linux of the medians. "sock drop" is the part of the loss that happened at
the receiving socket (Udp RcvbufErrors in the sink netns), not in the node: with two vCPUs the
iperf3 client and server share a core with whatever the node under test leaves over, and one
iperf3 client thread is often slower than the node, so read the numbers with that in mind. zwire runs with busy polling (no idle back-off) on
lcore 1. This only prints: it never fails on a number. It exits 1 only if a lab could not run.

Then, unless --no-tcp, the TCP relay section: tests/bench/tcp_bench.py (a zwire forwarder against a
Linux relay: one connection, 64 connections, connections/s, CPU time per GB).

Then, unless --no-mesh, the mesh section: tests/bench/mesh_bench.py (pod to pod across two nodes with no
mesh, through zwire's HBONE, through an stunnel mTLS pair, and through zwire --backend kernel; throughput,
HTTP requests/s and latency, connections/s, memory per idle tunnel). It only prints, and does not change the
exit status. Likewise, unless --no-xds-node, tests/bench/xds_node_bench.py: nodes following a control plane at
1,000 and 10,000 workloads (push to in use, memory, requests/s while single-workload updates stream in).

Usage: run.py --build BUILD_DIR [--runs 5] [--secs 3] [--kinds linux,zwire] [--no-tcp] [--no-mesh]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))

import zwlab  # noqa: E402  (path set just above)

PORT = 5201
PAYLOAD = 64


def udp_rcvbuf_errors(lab, ns):
    """Datagrams the kernel dropped because a UDP socket's receive buffer was full (netns-wide)."""
    res = lab.exec(ns, ["cat", "/proc/net/snmp"], check=True)
    rows = [line.split() for line in res.stdout.splitlines() if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def link_rx_packets(lab, ns, dev):
    """Packets the kernel received on a link in a netns (ip -s link), whatever happened next."""
    res = lab.exec(ns, ["ip", "-s", "-j", "link", "show", "dev", dev], check=True)
    return json.loads(res.stdout)[0]["stats64"]["rx"]["packets"]


def one_run(lab, dst, secs, streams):
    """One iperf3 UDP run from pod a. Returns dict(sent_pps, rx_pps, loss_pct, sock_drop_pps)."""
    argv = ["iperf3", "-c", dst, "-p", str(PORT), "-u", "-l", str(PAYLOAD), "-b", "0",
            "-t", str(secs), "-P", str(streams), "--json"]
    drops0 = udp_rcvbuf_errors(lab, "sink")
    link0 = link_rx_packets(lab, "sink", "dp-fab")
    res = lab.exec("a", argv, timeout=secs + 20)
    drops = udp_rcvbuf_errors(lab, "sink") - drops0
    link = link_rx_packets(lab, "sink", "dp-fab") - link0
    try:
        doc = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise zwlab.LabError(f"iperf3 output is not JSON (exit {res.returncode}): "
                             f"{res.stdout[:200]}{res.stderr[:200]}") from None
    if "error" in doc:
        raise zwlab.LabError(f"iperf3: {doc['error']}")
    s = doc["end"]["sum"]
    seconds = s["seconds"] or secs
    received = s["packets"] - s["lost_packets"]
    return {"sent_pps": s["packets"] / seconds, "rx_pps": received / seconds,
            "loss_pct": s["lost_percent"], "sock_drop_pps": drops / seconds,
            "link_pps": link / seconds}


def bench_kind(kind, args):
    """Builds the topology with `kind` as node1, runs iperf3 args.runs times, returns the runs."""
    runs = []
    with zwlab.Lab(zwlab.BENCH_DESC, build=args.build, kind=kind) as lab:
        dst = lab.nodes["sink"]["fabric_ip"]
        srv = lab.start_bg("sink", ["iperf3", "-s", "-B", dst, "-p", str(PORT)], "iperf3-server")
        lab.wait_listen("sink", PORT, proc=srv)
        for _ in range(5):  # resolve ARP on both sides before measuring
            if lab.ping("a", dst, count=1, wait=1)["received"]:
                break
        else:
            raise zwlab.LabError(f"{kind}: pod a cannot reach {dst}")
        for i in range(args.runs):
            r = one_run(lab, dst, args.secs, args.streams)
            runs.append(r)
            print(f"  {kind:6} run {i + 1}/{args.runs}: sent {r['sent_pps']/1e3:8.1f} kpps, "
                  f"out of the node {r['link_pps']/1e3:7.1f} kpps, server received {r['rx_pps']/1e3:7.1f} "
                  f"kpps (loss {r['loss_pct']:4.1f} %, {r['sock_drop_pps']/1e3:.1f} kpps of it at the "
                  "server's socket)", flush=True)
            time.sleep(0.5)
        if kind == "zwire":
            try:
                print(zwlab_indent(lab.zwirectl("node1", ["stats"], parse=False)))
            except zwlab.LabError as e:
                print(f"  (zwirectl stats failed: {e})")
    return runs


def zwlab_indent(text):
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--streams", type=int, default=1, help="iperf3 -P")
    ap.add_argument("--kinds", default="linux,zwire")
    ap.add_argument("--no-tcp", action="store_true", help="skip the TCP relay section (tcp_bench.py)")
    ap.add_argument("--no-mesh", action="store_true", help="skip the mesh section (mesh_bench.py)")
    ap.add_argument("--no-xds-node", action="store_true",
                    help="skip the nodes-following-a-control-plane section (xds_node_bench.py)")
    ap.add_argument("--no-engines", action="store_true",
                    help="skip the engine section (authz_bench, xds_bench: no lab, CPU only)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: must run as root (it builds network namespaces)", file=sys.stderr)
        return 1
    os.environ.setdefault("ZWLAB_QUIET", "1")
    kinds = [k for k in args.kinds.split(",") if k]
    print(f"L3 forwarding through one node: pod a -> node1 -> sink, iperf3 UDP {PAYLOAD}-byte "
          f"payloads, -b 0, {args.secs}s x {args.runs} runs, {args.streams} stream(s)")
    print("(this VM is shared and has 2 vCPUs: expect +-50 % between runs; compare ratios)\n")
    results = {}
    failed = False
    for kind in kinds:
        try:
            results[kind] = bench_kind(kind, args)
        except zwlab.LabError as e:
            print(f"  {kind}: could not run: {e}")
            failed = True
    if not results:
        return 1

    print("\nkpps, median of the runs (min..max for the server's rate)")
    print(f"{'node':8}{'sent':>9}{'out of node':>13}{'server rx':>11}{'min..max':>17}{'loss %':>8}"
          f"{'sock drop':>11}")
    med, med_link = {}, {}
    for kind, runs in results.items():
        rx = [r["rx_pps"] for r in runs]
        med[kind] = statistics.median(rx)
        med_link[kind] = statistics.median(r["link_pps"] for r in runs)
        span = f"{min(rx)/1e3:.1f}..{max(rx)/1e3:.1f}"
        print(f"{kind:8}{statistics.median(r['sent_pps'] for r in runs)/1e3:9.1f}"
              f"{med_link[kind]/1e3:13.1f}{med[kind]/1e3:11.1f}{span:>17}"
              f"{statistics.median(r['loss_pct'] for r in runs):8.1f}"
              f"{statistics.median(r['sock_drop_pps'] for r in runs)/1e3:11.1f}")
    if med.get("linux") and med_link.get("linux") and "zwire" in med:
        print(f"\nratio zwire/linux, packets/s received by the server: {med['zwire'] / med['linux']:.2f}")
        print(f"ratio zwire/linux, packets/s out of the node:        "
              f"{med_link['zwire'] / med_link['linux']:.2f}")
    if not args.no_tcp:
        failed |= tcp_section(args) != 0
    if not args.no_mesh:
        mesh_section(args)  # prints only; whatever happens there leaves the exit status to the parts above
    if not args.no_xds_node:
        xds_node_section(args)  # likewise
    if not args.no_engines:
        engines_section(args)  # likewise
    return 1 if failed else 0


def engines_section(args):
    """The mesh engines alone, no lab: authorization decisions and xDS conversion at scale (C programs)."""
    for name, what in (("authz_bench", "authorization: ns per decision at 10 / 1,000 / 10,000 policies"),
                       ("xds_bench", "xDS: push-to-snapshot time and memory at 1k / 10k / 50k workloads, "
                                     "incremental updates")):
        exe = os.path.join(args.build, "tests", "bench", name)
        print(f"\n== {what} ({exe})", flush=True)
        try:
            subprocess.run([exe], timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"  {name} did not run to the end: {e}")


def mesh_section(args):
    """The mesh benchmark (tests/bench/mesh_bench.py): no mesh, zwire HBONE, stunnel mTLS, kernel backend."""
    print("\n== Mesh: HBONE through zwire against no mesh and stunnel (tests/bench/mesh_bench.py)", flush=True)
    rc = run_bench_script("mesh_bench.py", args.build, 600)
    if rc != 0:
        print(f"  (mesh_bench.py exited {rc}; the numbers above are unaffected)")
    return rc


def xds_node_section(args):
    """Nodes following a control plane at 1k / 10k workloads (tests/bench/xds_node_bench.py)."""
    print("\n== xDS in the node: push to in use, memory, requests/s while updates stream (tests/bench/"
          "xds_node_bench.py)", flush=True)
    rc = run_bench_script("xds_node_bench.py", args.build, 900)
    if rc != 0:
        print(f"  (xds_node_bench.py exited {rc}; the numbers above are unaffected)")
    return rc


def run_bench_script(name, build, limit_s):
    """Runs tests/bench/NAME --build BUILD; stops it (it tears its lab down on SIGTERM) after limit_s. Its status."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    try:
        proc = subprocess.Popen([zwlab.PYTHON, path, "--build", build])
    except OSError as e:
        print(f"  {name} could not start: {e}")
        return 1
    try:
        return proc.wait(limit_s)
    except subprocess.TimeoutExpired:
        print(f"  {name} did not finish in {limit_s} s; stopping it (it tears its lab down on SIGTERM)")
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 1


def tcp_section(args):
    """The TCP relay benchmark (tests/bench/tcp_bench.py): zwire forwarder against a Linux relay."""
    print("\n== TCP relay (tests/bench/tcp_bench.py)", flush=True)
    return run_bench_script("tcp_bench.py", args.build, 900)


if __name__ == "__main__":
    sys.exit(main())
