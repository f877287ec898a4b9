#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""TCP relay benchmark: a zwire forwarder against a Linux relay on the same topology, in one run.

Topology (zwlab DEFAULT_DESC, pods a and c only): pod a -> node1 relay -> node2 -> pod c.
  zwire: node1 and node2 run zwire; node1 has forwarders 10.21.1.1:9000 -> pod c:5201 (iperf3)
         and 10.21.1.1:9002 -> pod c:5202 (echo); the stack terminates and re-originates.
  linux: node1 and node2 are kernel routers; socat in node1's netns listens on the same
         10.21.1.1:9000/9002 and relays (fork per connection), the same relay in user space.
Measured, each for --secs seconds:
  * one connection: iperf3 -c 10.21.1.1 -p 9000 (pod a -> pod c through the relay);
  * 64 connections: iperf3 -P 64;
  * connections/s: 32 asyncio loops of connect, 64 bytes, echo, close (tcp_peers.py rate-client).
CPU: for zwire, node1's process time (utime+stime from /proc/PID/stat); zwire runs with the lab's
idle back-off (sleep 500 us after 100 empty polls), so an idle node costs little and a busy one
spins. For socat, every process in node1's netns (socat, its forked children, and the time of
children it reaped: utime+stime+cutime+cstime). The
kernel's softirq work for the Linux relay runs in no process and is not in its figure, so the
table also gives the whole machine's busy CPU time from /proc/stat (clients, servers, both nodes).
This only prints; it never fails on a number (exit 1 only if no lab could run).

Usage: tcp_bench.py --build BUILD_DIR [--secs 5] [--kinds zwire,linux]
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))

import zwlab  # noqa: E402  (path set just above)

PEERS = os.path.join(HERE, "..", "integration", "tcp_peers.py")
RELAY_IP = "10.21.1.1"
IPERF_PORT, ECHO_PORT = 5201, 5202
FWD_IPERF, FWD_ECHO = 9000, 9002
CLK = os.sysconf("SC_CLK_TCK")

ZWIRE_EXTRA = f"""tcp = {{ time_wait_ms = 1000; }};
forwarders = (
  {{ listen = "{RELAY_IP}:{FWD_IPERF}"; target = "10.21.2.10:{IPERF_PORT}"; }},
  {{ listen = "{RELAY_IP}:{FWD_ECHO}"; target = "10.21.2.10:{ECHO_PORT}"; }}
);
"""


def desc_for(kind):
    d = json.loads(json.dumps(zwlab.DEFAULT_DESC))
    d["pods"] = [p for p in d["pods"] if p["name"] in ("a", "c")]
    if kind == "zwire":
        d["nodes"][0]["config_extra"] = ZWIRE_EXTRA
    return d


def proc_cpu_s(pids):
    """CPU seconds of processes and of the children they have reaped (a child that exits between
    two readings moves its time into its parent's cutime/cstime, so differences stay right)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK


def machine_busy_s():
    with open("/proc/stat", encoding="ascii") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return (sum(vals[:8]) - idle) / CLK


def iperf(lab, streams, secs):
    res = lab.exec("a", ["iperf3", "-c", RELAY_IP, "-p", str(FWD_IPERF), "-t", str(secs), "-P", str(streams),
                         "--json"], timeout=secs + 40)
    doc = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {"error": res.stderr[:300]}
    if "error" in doc:
        raise zwlab.LabError(f"iperf3 -P {streams}: {doc['error']}")
    recv = doc["end"]["sum_received"]
    return recv["bits_per_second"], recv["bytes"]


def rate(lab, secs):
    res = lab.exec("a", [zwlab.PYTHON, PEERS, "rate-client", "--connect", RELAY_IP, "--port", str(FWD_ECHO),
                         "--workers", "32", "--secs", str(secs)], timeout=secs + 60)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise zwlab.LabError(f"rate-client printed nothing: {res.stderr[-300:]}")
    return json.loads(lines[-1])


def measure(fn, pids):
    """Runs fn; returns (its result, relay CPU s, machine busy CPU s, wall s)."""
    c0, m0, t0 = proc_cpu_s(pids()), machine_busy_s(), time.monotonic()
    out = fn()
    return out, proc_cpu_s(pids()) - c0, machine_busy_s() - m0, time.monotonic() - t0


def bench_kind(kind, args):
    rows = {}
    with zwlab.Lab(desc_for(kind), build=args.build, kind=kind) as lab:
        ip_c = lab.pods["c"]["ip"]
        srv = lab.start_bg("c", ["iperf3", "-s", "-B", ip_c, "-p", str(IPERF_PORT)], "iperf3-server")
        lab.wait_listen("c", IPERF_PORT, proc=srv)
        echo = lab.start_bg("c", [zwlab.PYTHON, PEERS, "many-server", "--bind", ip_c, "--port", str(ECHO_PORT),
                                  "--stats", os.path.join(lab.run_dir, "echo.json")], "echo-server")
        lab.wait_listen("c", ECHO_PORT, proc=echo)
        if kind == "zwire":
            pids = lambda: [lab.daemons["node1"].pid]  # noqa: E731
        else:
            relays = [lab.start_bg("node1", ["socat", f"TCP-LISTEN:{port},bind={RELAY_IP},fork,reuseaddr,backlog=4096",
                                             f"TCP:{ip_c}:{target}"], f"socat-{port}")
                      for port, target in ((FWD_IPERF, IPERF_PORT), (FWD_ECHO, ECHO_PORT))]
            for port, p in zip((FWD_IPERF, FWD_ECHO), relays):
                lab.wait_listen("node1", port, proc=p)
            pids = lambda: zwlab.netns_pids(lab.ns("node1"))  # noqa: E731 - socat and its forked children
        for _ in range(5):
            if lab.ping("a", ip_c, count=1, wait=1)["received"]:
                break
        else:
            raise zwlab.LabError(f"{kind}: pod a cannot reach pod c")
        for name, streams in (("1 connection", 1), ("64 connections", 64)):
            (bps, nbytes), cpu, busy, _ = measure(lambda s=streams: iperf(lab, s, args.secs), pids)
            rows[name] = {"value": bps / 1e9, "unit": "Gbit/s", "cpu_per_gb": cpu / (nbytes / 1e9),
                          "busy_per_gb": busy / (nbytes / 1e9)}
            print(f"  {kind:6} {name:15} {bps / 1e9:6.2f} Gbit/s  relay CPU {cpu:5.2f}s  machine busy {busy:5.2f}s",
                  flush=True)
            time.sleep(1.5)  # let TIME-WAIT of the iperf3 control connections clear
        out, cpu, busy, _ = measure(lambda: rate(lab, args.secs), pids)
        n = max(out["connections"], 1)
        rows["connections/s"] = {"value": out["per_s"], "unit": "conn/s", "cpu_per_kconn": cpu / n * 1000,
                                 "busy_per_kconn": busy / n * 1000, "failures": out["failures"]}
        print(f"  {kind:6} {'connections/s':15} {out['per_s']:8.0f}/s  relay CPU {cpu:5.2f}s  machine busy "
              f"{busy:5.2f}s  failures {out['failures']}", flush=True)
        if kind == "zwire":
            st = lab.zwirectl("node1", ["stats"])
            print(f"  zwire forwarders: {st['forwarders']}", flush=True)
    return rows


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--kinds", default="zwire,linux")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: must run as root (it builds network namespaces)", file=sys.stderr)
        return 1
    os.environ.setdefault("ZWLAB_QUIET", "1")
    print(f"TCP relay: pod a -> relay on node1 -> node2 -> pod c, {args.secs}s per measurement "
          "(2 shared vCPUs: expect +-50 % between runs; compare ratios)\n")
    res = {}
    for kind in [k for k in args.kinds.split(",") if k]:
        try:
            res[kind] = bench_kind(kind, args)
        except (zwlab.LabError, json.JSONDecodeError, KeyError) as e:
            print(f"  {kind}: could not run: {e}")
    if not res:
        return 1
    z, lx = res.get("zwire", {}), res.get("linux", {})

    def cell(row, key, fmt):
        return fmt.format(row[key]) if row else "-"

    print(f"\n{'':16}{'zwire':>13}{'linux relay':>13}{'ratio':>7}   {'relay CPU zwire':>16}{'socat':>7}"
          f"{'machine zwire':>15}{'linux':>7}")
    for name in ("1 connection", "64 connections", "connections/s"):
        a, b = z.get(name), lx.get(name)
        unit = "{:.2f} Gb/s" if name != "connections/s" else "{:.0f}/s"
        cpu, busy = ("cpu_per_gb", "busy_per_gb") if name != "connections/s" else ("cpu_per_kconn", "busy_per_kconn")
        print(f"{name:16}{cell(a, 'value', unit):>13}{cell(b, 'value', unit):>13}"
              f"{ratio(a['value'], b['value']) if a and b else '-':>7}   "
              f"{cell(a, cpu, '{:.2f}'):>16}{cell(b, cpu, '{:.2f}'):>7}"
              f"{cell(a, busy, '{:.2f}'):>15}{cell(b, busy, '{:.2f}'):>7}")
    print("\nCPU columns: seconds per GB relayed (throughput rows) or per 1000 connections (connections/s).")
    print("ratio = zwire / linux relay (above 1: zwire is better). Relay CPU: zwire's node1 process (spins under "
          "load, backs off when idle); socat with its forked children. The kernel's TCP work for the Linux relay "
          "runs in softirq, outside any process: compare the machine columns too.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
