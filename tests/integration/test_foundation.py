#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Foundation integration test: Linux pods talk through two zwire nodes on DPDK af_packet ports.

Topology (tests/lab/zwlab.py DEFAULT_DESC): pods a, b behind node1 (10.21.1.0/24), pod c behind
node2 (10.21.2.0/24), nodes joined by a fabric veth (10.21.0.0/24). Checks what users see: ping
replies and their TTLs, HTTP bodies, ICMP errors, ARP entries and counters through zwirectl, config
checking, and a graceful /quitquitquit. Finally, that the run left nothing behind.
"""

import copy
import os
import subprocess
import sys
import time

import checks
from harness import case, check, main
import zwlab

# Names zwire uses in `zwirectl --json stats` / `config`. One table, so a rename is one edit.
COUNTER = {
    "arp_reply_out": "arp_reply_out",     # ARP replies zwire sent (for its gateway / fabric IP)
    "ip4_forwarded": "ip4_forwarded",     # IPv4 packets routed out of a port
    "icmp_echo_in": "icmp_echo_in",       # echo requests addressed to zwire itself
    "icmp_time_exceeded_out": "ip4_ttl_exceeded",  # TTL ran out; ICMP time exceeded sent
}
CONFIG_ARP_KEY = "arp"                    # top-level list of neighbours in `zwirectl --json config`
CONFIG_ARP_IP = "ip"                      # an entry's IPv4 address
CHECK_CONFIG_EXIT = 2                     # zwire --check-config exit code for an invalid file
QUIT_TIMEOUT_S = 10


# --------------------------------------------------------------------------------------------
# JSON helpers: find values by key anywhere, so per-lcore or per-port nesting does not matter.
# --------------------------------------------------------------------------------------------

def find_values(obj, key):
    """Every value stored under `key` at any depth of a JSON document."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                out.append(v)
            out += find_values(v, key)
    elif isinstance(obj, list):
        for v in obj:
            out += find_values(v, key)
    return out


def numeric_keys(obj, prefix=""):
    """Dotted paths of all numeric leaves, to show what a stats document offers."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += numeric_keys(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += numeric_keys(v, f"{prefix}{i}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out.append(prefix.rstrip("."))
    return out


def counter(stats, name):
    """Sum of the counter named COUNTER[name] over wherever it appears (lcores, ports)."""
    key = COUNTER[name]
    vals = [v for v in find_values(stats, key) if isinstance(v, (int, float))]
    if not vals:
        keys = numeric_keys(stats)
        raise AssertionError(f"counter {key} not in stats; have: {', '.join(keys[:60])}")
    return sum(vals)


def arp_ips(lab, node):
    """The IPv4 addresses in the node's ARP table, from zwirectl --json config."""
    cfg = lab.zwirectl(node, ["config"])
    table = cfg.get(CONFIG_ARP_KEY) if isinstance(cfg, dict) else None
    if not isinstance(table, list):
        raise AssertionError(f"no '{CONFIG_ARP_KEY}' list in zwirectl config of {node}; top-level keys: "
                             f"{sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__}")
    return {e.get(CONFIG_ARP_IP) for e in table if isinstance(e, dict)}


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

@case
def ping_a_to_c_across_two_nodes(lab, _ctx):
    """Each zwire node decrements the TTL once: a Linux pod's 64 arrives as 62."""
    checks.ping_ttl(lab, "a", lab.pods["c"]["ip"], routers=2)


@case
def ping_c_to_a_across_two_nodes(lab, _ctx):
    checks.ping_ttl(lab, "c", lab.pods["a"]["ip"], routers=2)


@case
def ping_a_to_b_through_node1_only(lab, _ctx):
    checks.ping_ttl(lab, "a", lab.pods["b"]["ip"], routers=1)


@case
def http_a_to_c(lab, ctx):
    checks.http_fetch(lab, ctx, "a", "c")


@case
def http_b_to_a_same_node(lab, ctx):
    checks.http_fetch(lab, ctx, "b", "a")


@case
def ping_gateway_answered_by_zwire(lab, _ctx):
    gw = lab.node_of("a")["gateway"]
    checks.warm_up(lab, "a", gw)
    before = counter(lab.zwirectl("node1", ["stats"]), "icmp_echo_in")
    res = lab.ping("a", gw, count=3)
    check(res["received"] == 3, f"{res['received']}/3 replies from the gateway:\n{res['output']}")
    after = counter(lab.zwirectl("node1", ["stats"]), "icmp_echo_in")
    check(after - before >= 3, f"{COUNTER['icmp_echo_in']} went {before} -> {after}, want +3")


@case
def ping_fabric_ip_of_other_node(lab, _ctx):
    """node2's fabric address answers pods of node1 (one routing hop: node1)."""
    res = checks.warm_up(lab, "a", lab.nodes["node2"]["fabric_ip"])
    check(res["received"] == 1, res["output"])


@case
def ttl_1_gets_time_exceeded_from_gateway(lab, _ctx):
    checks.ttl_exceeded(lab, "a", lab.pods["c"]["ip"], lab.node_of("a")["gateway"])
    stats = lab.zwirectl("node1", ["stats"])
    check(counter(stats, "icmp_time_exceeded_out") >= 1, "no time-exceeded counted on node1")


@case
def arp_entries_visible(lab, _ctx):
    for pod in ("a", "b", "c"):
        checks.warm_up(lab, pod, lab.node_of(pod)["gateway"])
    checks.warm_up(lab, "a", lab.pods["c"]["ip"])
    want = {
        "node1": {lab.pods["a"]["ip"], lab.pods["b"]["ip"], lab.nodes["node2"]["fabric_ip"]},
        "node2": {lab.pods["c"]["ip"], lab.nodes["node1"]["fabric_ip"]},
    }
    for node, ips in want.items():
        have = arp_ips(lab, node)
        missing = ips - have
        check(not missing, f"{node}: ARP table lacks {sorted(missing)}; has {sorted(have)}")


@case
def counters_visible(lab, _ctx):
    for node in ("node1", "node2"):
        stats = lab.zwirectl(node, ["stats"])
        check(counter(stats, "arp_reply_out") > 0, f"{node}: {COUNTER['arp_reply_out']} is 0")
        check(counter(stats, "ip4_forwarded") > 0, f"{node}: {COUNTER['ip4_forwarded']} is 0")


@case
def zwirectl_stats_table(lab, _ctx):
    text = lab.zwirectl("node1", ["stats"], parse=False)
    check(COUNTER["ip4_forwarded"] in text, f"table form lacks {COUNTER['ip4_forwarded']}:\n{text}")


@case
def generated_config_checks_clean(lab, _ctx):
    res = zwlab.run([lab.zwire_bin(), "--check-config", os.path.join(lab.run_dir, "node1.cfg")],
                    check=False, timeout=20)
    check(res.returncode == 0, f"exit {res.returncode}:\n{res.stdout}{res.stderr}")


# Errors that stand on their own: zwire skips the route-vs-subnet cross-checks while a port is invalid.
BAD_CONFIG = [
    '# one error per marked line',
    'node = { name = "bad"; };',
    'ports = (',
    '  { name = "pods"; role = "pods"; devargs = "net_af_packet0,iface=x"; address = "10.21.1.300/24"; },  # ERR',
    '  { name = "fabric"; role = "fabric"; devargs = "net_af_packet1,iface=y"; address = "10.21.0.1/24"; }',
    ');',
    'routes = (',
    '  { prefix = "10.21.2.1/24"; via = "10.21.0.2"; }  # ERR (host bits set)',
    ');',
    'dataplane = { workers = 99; };  # ERR',
]


@case
def bad_config_rejected_with_lines(lab, _ctx):
    path = os.path.join(lab.run_dir, "bad.cfg")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(BAD_CONFIG) + "\n")
    proc = subprocess.run([lab.zwire_bin(), "--check-config", "bad.cfg"], cwd=lab.run_dir,
                          capture_output=True, text=True, timeout=20, check=False)
    out = proc.stdout + proc.stderr
    check(proc.returncode == CHECK_CONFIG_EXIT, f"exit {proc.returncode}, want {CHECK_CONFIG_EXIT}:\n{out}")
    lines = [i + 1 for i, text in enumerate(BAD_CONFIG) if "# ERR" in text]
    missing = [n for n in lines if f"bad.cfg:{n}:" not in out]
    check(not missing, f"no 'bad.cfg:N:' message for line(s) {missing}:\n{out}")


@case
def direct_pod_port_and_fabric_host(_lab, ctx):
    """The simple variant: zwire holds the single pod's veth peer directly; a plain host on the fabric."""
    desc = copy.deepcopy(zwlab.BENCH_DESC)
    desc["nodes"][0]["idle_backoff"] = True
    with zwlab.Lab(desc, build=ctx.build, kind="zwire") as lab2:
        sink = lab2.nodes["sink"]["fabric_ip"]
        checks.ping_ttl(lab2, "a", sink, routers=1)
        res = lab2.exec("sink", ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", lab2.pods["a"]["ip"]],
                        timeout=10)
        check("ttl=63" in res.stdout, f"sink -> a:\n{res.stdout}{res.stderr}")
        stats = lab2.zwirectl("node1", ["stats"])
        check(counter(stats, "ip4_forwarded") >= 4, "node1 forwarded fewer than 4 packets")
    left = lab2.leftovers()
    check(not left, "left behind: " + ", ".join(left))


@case
def metrics_and_readiness_on_tcp(lab, _ctx):
    """Prometheus and kubelet reach /metrics and /healthz/ready on TCP; nothing else is served there."""
    ns = lab.ns("node1")
    base = f"http://127.0.0.1:{zwlab.METRICS_PORT}"
    res = lab.exec(ns, ["curl", "-s", "-w", "\n%{http_code}", base + "/metrics"], timeout=10)
    body, _, code = res.stdout.rpartition("\n")
    check(code == "200", f"/metrics -> {code}")
    check('zwire_dataplane_events_total{event="ip4_forwarded"}' in body, "no forwarding counter in /metrics")
    check("# TYPE zwire_port_rx_packets_total counter" in body, "no port counters in /metrics")
    res = lab.exec(ns, ["curl", "-s", "-w", "\n%{http_code}", base + "/healthz/ready"], timeout=10)
    check(res.stdout.endswith("\n200") and res.stdout.startswith("ready"), f"/healthz/ready: {res.stdout!r}")
    res = lab.exec(ns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", base + "/stats"], timeout=10)
    check(res.stdout == "404", f"/stats on the TCP listener -> {res.stdout}, want 404")


@case
def mgmt_errors_are_http_errors(lab, _ctx):
    """Unknown paths and wrong methods get 404 and 405 from the management socket."""
    status, _ = lab.mgmt("node1", "GET", "/no/such/path")
    check(status == 404, f"unknown path -> {status}")
    status, _ = lab.mgmt("node1", "GET", "/quitquitquit")
    check(status == 405, f"GET /quitquitquit -> {status}")
    status, body = lab.mgmt("node1", "POST", "/logging?level=nonsense")
    check(status == 400, f"bad level -> {status} {body[:100]!r}")


@case
def af_xdp_ports(_lab, ctx):
    """The same forwarding with both nodes on net_af_xdp ports instead of net_af_packet."""
    desc = copy.deepcopy(zwlab.DEFAULT_DESC)
    for n in desc["nodes"]:
        n["pmd"] = "af_xdp"
    with zwlab.Lab(desc, build=ctx.build, kind="zwire") as lab2:
        checks.ping_ttl(lab2, "a", lab2.pods["c"]["ip"], routers=2)
        cfg = lab2.zwirectl("node1", ["config"])
        drivers = [p.get("devargs", "") for p in cfg.get("ports", [])]
        check(all(d.startswith("net_af_xdp") for d in drivers), f"ports: {drivers}")
    left = lab2.leftovers()
    check(not left, "left behind: " + ", ".join(left))


@case
def quitquitquit_exits_cleanly(lab, _ctx):
    node = "node2"
    proc = lab.daemons[node]
    sock = lab.socket_path(node)
    status, body = lab.mgmt(node, "POST", "/quitquitquit")
    check(200 <= status < 300, f"POST /quitquitquit -> {status} {body[:200]!r}")
    try:
        rc = proc.popen.wait(QUIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {QUIT_TIMEOUT_S}s after /quitquitquit") from None
    check(rc == 0, f"exit code {rc}:\n{proc.log_tail()}")
    deadline = time.monotonic() + 1
    while os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    check(not os.path.exists(sock), f"{sock} still exists after exit")


@case
def sigterm_exits_cleanly(lab, _ctx):
    node = "node1"
    proc = lab.daemons[node]
    sock = lab.socket_path(node)
    proc.popen.terminate()
    try:
        rc = proc.popen.wait(QUIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {QUIT_TIMEOUT_S}s after SIGTERM") from None
    check(rc == 0, f"exit code {rc}:\n{proc.log_tail()}")
    check(not os.path.exists(sock), f"{sock} still exists after exit")
    check(not os.path.exists(f"/var/run/dpdk/{lab.file_prefix(node)}"), "EAL runtime directory left behind")


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    checks.no_leftovers(lab)


def make_lab(ctx):
    return zwlab.Lab(zwlab.DEFAULT_DESC, build=ctx.build, kind="zwire")


if __name__ == "__main__":
    sys.exit(main(make_lab, "foundation (zwire nodes)"))
