#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The mesh end to end: pods on two zwire nodes talk through HBONE (mTLS + HTTP/2 CONNECT on port 15008),
with services, passthrough and L4 authorization, as a user of Istio ambient would see it.

  node1: a 10.21.1.10 (default/sa-a), b 10.21.1.11 (other/sa-b), x 10.21.1.12 (not enrolled)
  node2: c 10.21.2.10 (default/sa-c, behind service echo 10.96.0.10:80 -> 8080), d .11 (protocol NONE),
         e .12 (not enrolled), and one pod per policy: pal .20 (ALLOW sa-a only), pns .21 (namespace
         "secure": DENY namespace "other"), pip .22 (DENY source_ips b/32), ppt .23 (DENY port 8081),
         pdr .24 (dry-run DENY sa-a), plv .25 (no policy; for the live-update case)

Both nodes get the same mesh text (workloads, services, policies and one CA generated in the run dir; see
tests/lab/zwlab.py "mesh"). Every pod runs mesh_peer.py, whose answers say which address the server saw.

  --backend dpdk    zwire nodes on DPDK af_packet ports (node kind "zwire")
  --backend kernel  zwire --backend kernel in kernel-routed node namespaces (node kind "zwire-kernel")
  --backend mixed   node1 on DPDK, node2 on the kernel backend: the two backends talk HBONE to each other
"""

import json
import os
import re
import struct
import sys
import time

from harness import case, check, main, take_backend
import zwlab

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "mesh_peer.py")
PY = zwlab.PYTHON
TD = "cluster.local"
NODES = ("node1", "node2")
PORT = 8080
PORT2 = 8081       # a second port on ppt (the destination_ports policy)
UDP_PORT = 9090
HBONE = 15008
VIP = "10.96.0.10"
VIP_PORT = 80
BACKEND = "dpdk"   # set from --backend before main()
CERT_LIFETIME_S = 60  # the shortest the config allows: certificates rotate at half-life, during the run

# pod -> (node, ip)
PODS = {
    "a": ("node1", "10.21.1.10"), "b": ("node1", "10.21.1.11"), "x": ("node1", "10.21.1.12"),
    "c": ("node2", "10.21.2.10"), "d": ("node2", "10.21.2.11"), "e": ("node2", "10.21.2.12"),
    "pal": ("node2", "10.21.2.20"), "pns": ("node2", "10.21.2.21"), "pip": ("node2", "10.21.2.22"),
    "ppt": ("node2", "10.21.2.23"), "pdr": ("node2", "10.21.2.24"), "plv": ("node2", "10.21.2.25"),
}
SERVERS = ("c", "d", "e", "pal", "pns", "pip", "ppt", "pdr", "plv")


def principal(ns, sa):
    return f"{TD}/ns/{ns}/sa/{sa}"


def spiffe(ns, sa):
    return "spiffe://" + principal(ns, sa)


def wl(name, ns="default", **kw):
    return dict({"name": name, "namespace": ns, "service_account": f"sa-{name}", "pod": name}, **kw)


def policy(name, action, match, ns="default", scope="workload_selector", dry_run=False):
    return {"name": name, "namespace": ns, "scope": scope, "action": action, "dry_run": dry_run,
            "rules": [{"clauses": [{"matches": [match]}]}]}


def mesh_desc(mtls_mode="PERMISSIVE", extra_policies=()):
    return {
        "mesh": {"trust_domain": TD, "mtls_mode": mtls_mode, "certificates": {"lifetime_s": CERT_LIFETIME_S}},
        "workloads": [
            wl("a"), wl("b", ns="other"),
            wl("c", services=[{"service": "default/echo.default.svc.cluster.local",
                               "ports": [{"port": VIP_PORT, "target_port": PORT}]}]),
            wl("d", protocol="NONE"),
            wl("pal", authorization_policies=["default/allow-sa-a"]),
            wl("pns", ns="secure"),
            wl("pip", authorization_policies=["default/deny-ip-b"]),
            wl("ppt", authorization_policies=["default/deny-port-8081"]),
            wl("pdr", authorization_policies=["default/dry-deny-sa-a"]),
            wl("plv", authorization_policies=["default/live-deny-sa-a"]),
        ],
        "services": [{"name": "echo", "namespace": "default", "addresses": [VIP],
                      "ports": [{"port": VIP_PORT, "target_port": PORT}]}],
        "policies": [
            policy("allow-sa-a", "allow", {"principals": [principal("default", "sa-a")]}),
            policy("deny-other-ns", "deny", {"namespaces": ["other"]}, ns="secure", scope="namespace"),
            policy("deny-ip-b", "deny", {"source_ips": [PODS["b"][1] + "/32"]}),
            policy("deny-port-8081", "deny", {"destination_ports": [PORT2]}),
            policy("dry-deny-sa-a", "deny", {"principals": [principal("default", "sa-a")]}, dry_run=True),
            *extra_policies,
        ],
    }


def lab_desc(kind1, kind2):
    return {
        "fabric_cidr": "10.21.0.0/24",
        "nodes": [
            {"name": "node1", "kind": kind1, "fabric_ip": "10.21.0.1", "pods_cidr": "10.21.1.0/24",
             "pods_mode": "bridge", "lcores": "0,1"},
            {"name": "node2", "kind": kind2, "fabric_ip": "10.21.0.2", "pods_cidr": "10.21.2.0/24",
             "pods_mode": "bridge", "lcores": "1,0"},
        ],
        "pods": [{"name": n, "node": node, "ip": ip} for n, (node, ip) in PODS.items()],
        "mesh": mesh_desc(),
    }


# --------------------------------------------------------------------------------------------
# Helpers: clients, logs, metrics, captures
# --------------------------------------------------------------------------------------------

def ip_of(pod):
    return PODS[pod][1]


def curl(lab, src, url, max_time=8):
    """curl from a pod. Returns dict(rc, code, body, req, resp, err)."""
    fmt = "\n%{http_code} %{size_request} %{size_header} %{size_download}"
    res = lab.exec(src, ["curl", "-sS", "--max-time", str(max_time), "-w", fmt, url], timeout=max_time + 5)
    body, _, tail = res.stdout.rpartition("\n")
    parts = tail.split()
    code = parts[0] if parts else "000"
    nums = [int(p) for p in parts[1:4]] if len(parts) == 4 else [0, 0, 0]
    return {"rc": res.returncode, "code": code, "body": body, "req": nums[0], "resp": nums[1] + nums[2],
            "err": res.stderr.strip(), "url": url, "src": src}


def http_ok(lab, src, dst_ip, port=PORT, path="/", want_pod=None, want_peer=None):
    """curl must give 200 with our server's first line; checks which pod answered and whom it saw."""
    r = curl(lab, src, f"http://{dst_ip}:{port}{path}")
    check(r["rc"] == 0 and r["code"] == "200",
          f"{src} -> {dst_ip}:{port}{path}: curl rc {r['rc']} status {r['code']} {r['err']}")
    first = r["body"].split("\n", 1)[0]
    fields = dict(kv.split("=", 1) for kv in first.split() if "=" in kv)
    if want_pod:
        check(fields.get("pod") == want_pod, f"{src} -> {dst_ip}:{port}: answered by {first!r}, want pod {want_pod}")
    if want_peer:
        peer = fields.get("peer", "").rsplit(":", 1)[0]
        check(peer == want_peer, f"{src} -> {dst_ip}:{port}: the server saw peer {peer or '?'} ({first!r}), "
                                 f"want {want_peer}")
    r["fields"] = fields
    return r


def http_refused(lab, src, dst_ip, port=PORT):
    r = curl(lab, src, f"http://{dst_ip}:{port}/", max_time=6)
    check(r["rc"] != 0 or r["code"] != "200",
          f"{src} -> {dst_ip}:{port} should be refused but got {r['code']}: {r['body'][:120]!r}")
    return r


def log_size(lab, node):
    try:
        return os.path.getsize(lab.daemons[node].log_path)
    except OSError:
        return 0


def log_since(lab, node, offset):
    with open(lab.daemons[node].log_path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read().splitlines()


def access_records(lines, direction=None):
    """Parsed `access:` lines: dicts with keys normalised to underscores (src.addr -> src_addr)."""
    out = []
    for line in lines:
        m = re.search(r"\baccess: (outbound|inbound)\b(.*)$", line)
        if not m or (direction and m.group(1) != direction):
            continue
        rec = {"direction": m.group(1), "line": line.strip()}
        for kv in m.group(2).split():
            if "=" in kv:
                k, v = kv.split("=", 1)
                rec[k.replace(".", "_")] = v
        out.append(rec)
    return out


def wait_records(lab, node, offset, pred, n=1, timeout=5.0):
    """Waits until n access records after offset satisfy pred; returns them (maybe fewer after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in access_records(log_since(lab, node, offset)) if pred(r)]
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


def show(lines, limit=12):
    lines = list(lines)[-limit:]
    return "\n      " + "\n      ".join(lines) if lines else " (none)"


def metrics(lab, node):
    """[(name, labels, value)] from the node's /metrics."""
    status, body = lab.mgmt(node, "GET", "/metrics")
    check(status == 200, f"{node}: /metrics -> {status}")
    out = []
    for line in body.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(samples, name, **want):
    return sum(v for n, labels, v in samples if n == name and all(labels.get(k) == x for k, x in want.items()))


def authz_counts(lab, node):
    """The authz decision counters {allowed, denied, dry_run_denied} of zwirectl --json config, or the error."""
    cfg = lab.zwirectl(node, ["config"])
    az = cfg.get("authz") if isinstance(cfg, dict) else None
    if not isinstance(az, dict):
        return f"no 'authz' in zwirectl --json config of {node} (keys {sorted(cfg) if isinstance(cfg, dict) else cfg})"
    return az


def check_counter_grew(before, after, key, node, by=1, done=""):
    """done: what already held, said in the message when only the counter is wrong."""
    for v in (before, after):
        check(isinstance(v, dict), f"{done}{v}")
    check(after.get(key, 0) >= before.get(key, 0) + by, f"{done}{node} authz.{key}: {before} -> {after}")


class Capture:
    """tcpdump on one interface of a netns of the lab, written to a pcap in the run dir."""

    def __init__(self, lab, ns, dev, tag, filt=("tcp", "or", "udp", "or", "icmp")):
        self.lab, self.path = lab, os.path.join(lab.run_dir, f"cap-{tag}.pcap")
        self.proc = lab.start_bg(ns, ["tcpdump", "-i", dev, "-nn", "-U", "-s", "0", "-w", self.path, *filt],
                                 f"tcpdump-{tag}")
        deadline = time.monotonic() + 10
        while "listening on" not in self.proc.log_tail() and time.monotonic() < deadline:
            time.sleep(0.1)
        check("listening on" in self.proc.log_tail(), f"tcpdump {tag} did not start:\n{self.proc.log_tail()}")

    def stop(self):
        time.sleep(1.0)  # let the last packets reach the file
        self.lab.stop_bg(self.proc)
        return list(read_pcap(self.path))


def fabric_captures(lab, tag):
    """One capture per fabric end: each end sees what arrives from the other node (the data plane's own
    transmits may bypass the kernel's taps), so the two together hold both directions."""
    return [Capture(lab, node, "dp-fab", f"{tag}-{node}") for node in NODES]


def stop_all(caps):
    pkts = []
    for c in caps:
        pkts += c.stop()
    return pkts


def read_pcap(path):
    """Yields dicts (proto, src, sport, dst, dport, seq, flags, payload) for IPv4 frames of an Ethernet pcap."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    if len(data) < 24:
        return
    endian = "<" if struct.unpack("<I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        l4 = ip[ihl:total]
        pkt = {"proto": ip[9], "src": src, "dst": dst, "sport": 0, "dport": 0, "seq": 0, "flags": 0,
               "payload": b""}
        if ip[9] == 6 and len(l4) >= 20:
            pkt["sport"], pkt["dport"], pkt["seq"] = struct.unpack("!HHI", l4[:8])
            pkt["flags"] = l4[13]
            pkt["payload"] = l4[(l4[12] >> 4) * 4:]
        elif ip[9] == 17 and len(l4) >= 8:
            pkt["sport"], pkt["dport"] = struct.unpack("!HH", l4[:4])
            pkt["payload"] = l4[8:]
        yield pkt


def tcp_streams(pkts):
    """{(src, sport, dst, dport): (saw_syn, payload in sequence order)}."""
    segs, syn = {}, {}
    for p in pkts:
        if p["proto"] != 6:
            continue
        key = (p["src"], p["sport"], p["dst"], p["dport"])
        if p["flags"] & 0x02:
            syn[key] = p["seq"] + 1
        if p["payload"]:
            segs.setdefault(key, {})[p["seq"]] = p["payload"]
    out = {}
    for key, s in segs.items():
        data, nxt = b"", None
        for seq in sorted(s):
            chunk = s[seq]
            if nxt is not None and seq < nxt:      # retransmission or overlap
                chunk = chunk[nxt - seq:]
            data += chunk
            nxt = max(nxt or 0, seq + len(s[seq]))
        out[key] = (key in syn and min(s) == syn[key], data)
    return out


def tls_record_types(stream):
    types, i = [], 0
    while i + 5 <= len(stream):
        ctype, major, length = stream[i], stream[i + 1], struct.unpack("!H", stream[i + 3:i + 5])[0]
        if ctype not in (20, 21, 22, 23) or major != 3:
            raise AssertionError(f"bytes at offset {i} are not a TLS record: {stream[i:i + 16].hex()}")
        types.append(ctype)
        i += 5 + length
    return types


def describe(pkts, limit=8):
    rows = [f"{p['src']}:{p['sport']} > {p['dst']}:{p['dport']} proto {p['proto']} len {len(p['payload'])} "
            f"{p['payload'][:40]!r}" for p in pkts]
    return show(rows, limit)


def ensure_servers(lab, ctx):
    if ctx.scratch.get("servers"):
        return
    for pod in SERVERS:
        ports = f"{PORT},{PORT2}" if pod == "ppt" else str(PORT)
        proc = lab.start_bg(pod, [PY, PEER, "serve", pod, ip_of(pod), ports, str(UDP_PORT)], f"peer-{pod}")
        lab.wait_listen(pod, PORT, "tcp", proc=proc)
    ctx.scratch["servers"] = True


def warm(lab, src, dst_ip):
    """ARP on every hop: one ping at a time until one comes back (failures are not fatal here)."""
    for _ in range(4):
        if lab.ping(src, dst_ip, count=1, wait=1)["received"]:
            return True
    return False


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

@case
def mesh_config_loaded_on_both_nodes(lab, ctx):
    ensure_servers(lab, ctx)
    for node in NODES:
        cfg = lab.zwirectl(node, ["config"])
        missing = [k for k in ("workloads", "services", "certificates", "authz") if k not in cfg]
        check(not missing, f"{node}: no {missing} in zwirectl --json config (keys: {sorted(cfg)})")
        names = sorted(w.get("name") for w in cfg["workloads"])
        want = sorted(w["name"] for w in lab.desc["mesh"]["workloads"])
        check(names == want, f"{node}: workloads {names}, want {want}")
        ids = {c.get("identity") for c in cfg["certificates"]}
        local = {spiffe(w["namespace"], w["service_account"]) for w in lab.desc["mesh"]["workloads"]
                 if PODS[w["name"]][0] == node and w.get("protocol") != "NONE"}
        check(local <= ids, f"{node}: certificates for {sorted(ids)}, missing {sorted(local - ids)}")
    for pod in ("a", "b", "x"):
        warm(lab, pod, ip_of("c"))


@case
def hbone_on_fabric_plaintext_only_on_pod_port(lab, ctx):
    """curl a -> c: the fabric carries only TLS on 15008 between the pod addresses; pod a's port sees HTTP."""
    ensure_servers(lab, ctx)
    caps = fabric_captures(lab, "hbone")
    pod_cap = Capture(lab, "a", "eth0", "pod-a")
    r = http_ok(lab, "a", ip_of("c"), path="/pad/100000", want_pod="c")
    pod_pkts = pod_cap.stop()
    pkts = stop_all(caps)
    a_ip, c_ip = ip_of("a"), ip_of("c")
    tcp = [p for p in pkts if p["proto"] == 6]
    check(tcp, "nothing captured on the fabric")
    other = [p for p in tcp if HBONE not in (p["sport"], p["dport"])]
    check(not other, "TCP on the fabric other than port 15008:" + describe(other))
    ends = {(p["src"], p["dst"]) for p in tcp}
    check(ends <= {(a_ip, c_ip), (c_ip, a_ip)}, f"tunnel endpoints {sorted(ends)}, want {a_ip} <-> {c_ip}")
    plain = [p for p in pkts if b"GET /" in p["payload"] or b"HTTP/1." in p["payload"]]
    check(not plain, "plaintext HTTP on the fabric:" + describe(plain))
    app = whole = 0
    for key, (from_syn, data) in tcp_streams(tcp).items():
        types = tls_record_types(data)
        if from_syn:
            whole += 1
            check(types and types[0] == 22, f"{key}: stream starts with record type {types[:3]}, want handshake")
        app += len(data) if 23 in types else 0
    check(whole >= 2, f"the tunnel was not captured from its SYN in both directions ({whole} streams); "
                      "was an HBONE connection a -> c already open?")
    check(app > 100000, f"only {app} bytes of TLS application data on the fabric for a 100000-byte body")
    check(any(b"GET /pad/100000" in p["payload"] for p in pod_pkts),
          "pod a's own port did not show the plaintext request (capture in pod a):" + describe(pod_pkts))
    ctx.scratch["hbone_resp"] = r["resp"]


@case
def service_vip_reaches_c_on_other_node(lab, ctx):
    ensure_servers(lab, ctx)
    off = log_size(lab, "node1")
    r = http_ok(lab, "a", VIP, port=VIP_PORT, path="/vip", want_pod="c", want_peer=ip_of("a"))
    check(r["fields"].get("local", "").startswith(ip_of("c") + f":{PORT}"),
          f"the server's local address is {r['fields'].get('local')}, want {ip_of('c')}:{PORT}")
    recs = wait_records(lab, "node1", off, lambda x: x.get("dst_addr") == f"{VIP}:{VIP_PORT}")
    check(recs and recs[0].get("hbone_status") == "200" and recs[0].get("dst_workload") == "c",
          "node1 access log for the VIP flow:" + show(x["line"] for x in recs))


@case
def pod_ip_reaches_c_and_server_sees_pod_a(lab, ctx):
    ensure_servers(lab, ctx)
    off2 = log_size(lab, "node2")
    http_ok(lab, "a", ip_of("c"), want_pod="c", want_peer=ip_of("a"))
    recs = wait_records(lab, "node2", off2, lambda x: x["direction"] == "inbound" and x.get("dst_workload") == "c")
    check(recs, "no inbound access line on node2:" + show(log_since(lab, "node2", off2)))
    r = recs[-1]
    check(r.get("src_identity") == spiffe("default", "sa-a") and r.get("hbone_status") == "200",
          "node2 inbound record:" + show([r["line"]]))


@case
def metrics_and_access_logs_agree_on_bytes(lab, ctx):
    """Per direction: access-log sums == istio_tcp_*_bytes_total deltas, node1 (source) == node2 (destination)
    == what curl sent and received."""
    ensure_servers(lab, ctx)
    sel = {"source_workload": "a", "destination_workload": "c"}
    fams = ("istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total", "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total")
    reporter = {"node1": "source", "node2": "destination"}
    before = {n: metrics(lab, n) for n in NODES}
    offs = {n: log_size(lab, n) for n in NODES}
    app_sent = app_recv = 0
    urls = [f"http://{ip_of('c')}:{PORT}/pad/{k}" for k in (10, 5000, 250000)] + \
           [f"http://{VIP}:{VIP_PORT}/pad/777"]
    for url in urls:
        r = curl(lab, "a", url)
        check(r["rc"] == 0 and r["code"] == "200", f"{url}: rc {r['rc']} {r['code']} {r['err']}")
        app_sent += r["req"]
        app_recv += r["resp"]
    want_dir = {"node1": "outbound", "node2": "inbound"}
    sums = {}
    for n in NODES:
        recs = wait_records(lab, n, offs[n], lambda x, n=n: x["direction"] == want_dir[n]
                            and x.get("src_workload") == "a" and x.get("dst_workload") == "c", n=len(urls))
        check(len(recs) == len(urls), f"{n}: {len(recs)} access lines for {len(urls)} connections:"
                                      + show(x["line"] for x in recs))
        sums[n] = (sum(int(x["bytes_sent"]) for x in recs), sum(int(x["bytes_recv"]) for x in recs))
    deltas = {}
    deadline = time.monotonic() + 5
    while True:
        after = {n: metrics(lab, n) for n in NODES}
        deltas = {n: {f: metric_sum(after[n], f, reporter=reporter[n], **sel)
                      - metric_sum(before[n], f, reporter=reporter[n], **sel) for f in fams} for n in NODES}
        if all(deltas[n]["istio_tcp_connections_closed_total"] >= len(urls) for n in NODES) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    evidence = f"\n      app: request {app_sent} B, response {app_recv} B; logs (sent, recv) {sums}; " \
               f"metric deltas {deltas}"
    for n in NODES:
        d = deltas[n]
        check(d["istio_tcp_connections_opened_total"] == len(urls) and
              d["istio_tcp_connections_closed_total"] == len(urls),
              f"{n} reporter={reporter[n]}: opened/closed +{d['istio_tcp_connections_opened_total']:.0f}/"
              f"+{d['istio_tcp_connections_closed_total']:.0f}, want +{len(urls)}" + evidence)
        check(sums[n] == (d["istio_tcp_sent_bytes_total"], d["istio_tcp_received_bytes_total"]),
              f"{n}: access log (bytes_sent, bytes_recv) {sums[n]} != metrics (sent, received) "
              f"({d['istio_tcp_sent_bytes_total']:.0f}, {d['istio_tcp_received_bytes_total']:.0f})" + evidence)
    check(sums["node1"] == sums["node2"], f"source and destination disagree: {sums}" + evidence)
    check(sums["node1"] == (app_recv, app_sent),
          f"bytes (sent to client, received from client) {sums['node1']} != curl's ({app_recv}, {app_sent})"
          + evidence)
    print(f"note: {len(urls)} connections a -> c: {app_recv} B to the client, {app_sent} B from it, in both access "
          f"logs and both nodes' istio_tcp_*_bytes_total (source and destination)", flush=True)


@case
def protocol_none_workload_is_plain_passthrough(lab, ctx):
    """a -> d (workload with protocol NONE): reachable, and the fabric shows plain TCP to d:8080, no HBONE."""
    ensure_servers(lab, ctx)
    caps = fabric_captures(lab, "none")
    http_ok(lab, "a", ip_of("d"), path="/none", want_pod="d")
    pkts = stop_all(caps)
    tcp = [p for p in pkts if p["proto"] == 6]
    hb = [p for p in tcp if HBONE in (p["sport"], p["dport"]) and ip_of("d") in (p["src"], p["dst"])]
    check(not hb, "HBONE on the fabric for a protocol-NONE destination:" + describe(hb))
    check(any(p["dst"] == ip_of("d") and p["dport"] == PORT and b"GET /none" in p["payload"] for p in tcp),
          "no plaintext request to d:8080 on the fabric:" + describe(tcp))


@case
def non_enrolled_pods_forwarded_unchanged(lab, ctx):
    """x (not enrolled) -> e (not enrolled): routed; e sees x's address; plaintext on the fabric."""
    ensure_servers(lab, ctx)
    caps = fabric_captures(lab, "plain")
    http_ok(lab, "x", ip_of("e"), path="/x2e", want_pod="e", want_peer=ip_of("x"))
    pkts = stop_all(caps)
    tcp = [p for p in pkts if p["proto"] == 6]
    hb = [p for p in tcp if HBONE in (p["sport"], p["dport"]) and ip_of("e") in (p["src"], p["dst"])]
    check(not hb, "HBONE for x -> e:" + describe(hb))
    check(any(p["src"] == ip_of("x") and p["dst"] == ip_of("e") and b"GET /x2e" in p["payload"] for p in tcp),
          "x -> e did not cross the fabric unchanged (x's address, plaintext):" + describe(tcp))


@case
def enrolled_to_non_enrolled_keeps_source_address(lab, ctx):
    """a (enrolled) -> e (not enrolled): passed through, and e must still see a's own address (as in Istio
    ambient, where the passthrough connection leaves from the pod), not the node's."""
    ensure_servers(lab, ctx)
    caps = fabric_captures(lab, "a2e")
    r = http_ok(lab, "a", ip_of("e"), path="/a2e", want_pod="e")
    pkts = stop_all(caps)
    tcp = [p for p in pkts if p["proto"] == 6]
    hb = [p for p in tcp if HBONE in (p["sport"], p["dport"]) and ip_of("e") in (p["src"], p["dst"])]
    check(not hb, "HBONE for a -> e:" + describe(hb))
    seen = r["fields"].get("peer", "")
    check(seen.rsplit(":", 1)[0] == ip_of("a"),
          f"e saw the connection from {seen}, want {ip_of('a')} (pod a's address); on the fabric:"
          + describe([p for p in tcp if b"GET /a2e" in p["payload"]]))


@case
def ping_and_udp_still_work(lab, ctx):
    ensure_servers(lab, ctx)
    for dst in ("c", "e"):
        warm(lab, "a", ip_of(dst))
        res = lab.ping("a", ip_of(dst), count=3)
        check(res["received"] == 3, f"ping a -> {dst}: {res['received']}/3:\n{res['output']}")
        check(all(t == 62 for t in res["ttls"]), f"ping a -> {dst} TTLs {res['ttls']}, want 62 (two routers)")
    res = lab.exec("a", [PY, PEER, "udp", ip_of("c"), str(UDP_PORT), "hello-udp"], timeout=10)
    want = f"udp pod=c peer={ip_of('a')}:"
    check(res.returncode == 0 and want in res.stdout and "got=hello-udp" in res.stdout,
          f"UDP a -> c: rc {res.returncode} {res.stdout.strip()!r} {res.stderr.strip()!r}, want {want!r}...")


def _denied(lab, src, dst, port=PORT):
    """src must be refused by dst's policy: curl fails, node2 logs reason=denied / 401, node1 sees 401,
    the node2 deny counter grows."""
    offs = {n: log_size(lab, n) for n in NODES}
    before = authz_counts(lab, "node2")
    r = http_refused(lab, src, ip_of(dst), port)
    dst_addr = f"{ip_of(dst)}:{port}"
    from_src = f"{ip_of(src)}:"
    inb = wait_records(lab, "node2", offs["node2"], lambda x: x["direction"] == "inbound"
                       and x.get("dst_addr") == dst_addr and x.get("src_addr", "").startswith(from_src))
    check(inb and inb[0].get("reason") == "denied" and inb[0].get("hbone_status") == "401",
          f"{src} -> {dst}:{port}: node2 access log, want reason=denied hbone_status=401:"
          + show(x["line"] for x in inb) + f"\n      curl: rc {r['rc']} {r['err']}")
    out = wait_records(lab, "node1", offs["node1"], lambda x: x["direction"] == "outbound"
                       and x.get("dst_addr") == dst_addr and x.get("src_addr", "").startswith(from_src))
    check(out and out[0].get("hbone_status") == "401",
          f"{src} -> {dst}:{port}: node1 should see HBONE status 401:" + show(x["line"] for x in out))
    check_counter_grew(before, authz_counts(lab, "node2"), "denied", "node2",
                       done="refused as required (curl failed, node2 reason=denied/401, node1 401), but: ")


@case
def authz_allow_by_principal(lab, ctx):
    ensure_servers(lab, ctx)
    http_ok(lab, "a", ip_of("pal"), want_pod="pal", want_peer=ip_of("a"))
    _denied(lab, "b", "pal")


@case
def authz_deny_by_namespace(lab, ctx):
    """pns lives in namespace "secure", whose namespace-scoped policy denies peers from namespace "other" (b)."""
    ensure_servers(lab, ctx)
    http_ok(lab, "a", ip_of("pns"), want_pod="pns")
    _denied(lab, "b", "pns")


@case
def authz_deny_by_source_ip(lab, ctx):
    ensure_servers(lab, ctx)
    http_ok(lab, "a", ip_of("pip"), want_pod="pip")
    _denied(lab, "b", "pip")


@case
def authz_deny_by_destination_port(lab, ctx):
    ensure_servers(lab, ctx)
    http_ok(lab, "a", ip_of("ppt"), port=PORT, want_pod="ppt")
    _denied(lab, "a", "ppt", port=PORT2)


@case
def authz_dry_run_deny_only_logs(lab, ctx):
    ensure_servers(lab, ctx)
    off = log_size(lab, "node2")
    before = authz_counts(lab, "node2")
    http_ok(lab, "a", ip_of("pdr"), want_pod="pdr", want_peer=ip_of("a"))
    deadline = time.monotonic() + 5
    while True:
        lines = [x for x in log_since(lab, "node2", off) if "dry-run" in x]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(any("dry-deny-sa-a" in x for x in lines),
          "no dry-run line naming default/dry-deny-sa-a on node2:" + show(log_since(lab, "node2", off)))
    after = authz_counts(lab, "node2")
    check_counter_grew(before, after, "dry_run_denied", "node2",
                       done="connection allowed and the dry-run line logged, but: ")
    check(after.get("denied", 0) == before.get("denied", 0), f"a dry-run policy denied for real: {before} -> {after}")


@case
def permissive_accepts_plaintext_to_enrolled_pod(lab, ctx):
    """x (not enrolled) -> c: plain TCP reaches node2, which accepts it (PERMISSIVE) with no peer identity."""
    ensure_servers(lab, ctx)
    off = log_size(lab, "node2")
    http_ok(lab, "x", ip_of("c"), path="/permissive", want_pod="c", want_peer=ip_of("x"))
    recs = wait_records(lab, "node2", off, lambda x: x["direction"] == "inbound" and x.get("dst_workload") == "c")
    check(recs and recs[-1].get("src_identity", "") == "" and recs[-1].get("reason") == "-",
          "node2 should log a plaintext inbound connection without identity:" + show(x["line"] for x in recs))


@case(timeout=60)
def live_policy_closes_open_connection(lab, ctx):
    """A deny policy for a on plv, applied with PUT /config, must close a's open connection to plv."""
    ensure_servers(lab, ctx)
    hold = lab.start_bg("a", [PY, PEER, "hold", ip_of("plv"), str(PORT)], "hold-a-plv")
    deadline = time.monotonic() + 10
    while "open" not in hold.log_tail() and time.monotonic() < deadline:
        time.sleep(0.1)
    check("open" in hold.log_tail(), f"a -> plv did not open: {hold.log_tail()!r}")
    off = log_size(lab, "node2")
    live = policy("live-deny-sa-a", "deny", {"principals": [principal("default", "sa-a")]})
    lab.desc["mesh"] = mesh_desc(extra_policies=[live])
    code, body = put_config(lab, "node2", lab.zwire_config("node2"))
    check(200 <= code < 300, f"PUT /config (node2's config plus policy live-deny-sa-a) -> {code}: {body[:300]!r}")
    deadline = time.monotonic() + 10
    while hold.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    check(not hold.alive(), f"a's open connection to plv survived the new deny policy for 10 s "
                            f"(PUT /config -> {code}); client says {hold.log_tail()!r}")
    plv = f"{ip_of('plv')}:{PORT}"
    recs = wait_records(lab, "node2", off, lambda x: x["direction"] == "inbound" and x.get("dst_addr") == plv
                        and int(x.get("bytes_sent", "0")) > 0)
    check(recs and recs[0].get("reason") == "denied",
          "node2 should log the open connection closed with reason=denied:" + show(x["line"] for x in recs)
          + f"\n      client: {hold.log_tail().strip()!r}")
    http_refused(lab, "a", ip_of("plv"))
    print(f"note: PUT /config -> {code}; the open connection a -> plv was closed: {recs[0]['line'][-80:]}",
          flush=True)


def cert_serials(lab, node):
    """identity -> serialNumber of the node's workload certificates, from /config_dump."""
    code, body = lab.mgmt(node, "GET", "/config_dump")
    check(code == 200, f"{node}: /config_dump -> {code}")
    return {c["identity"]: c["serialNumber"] for c in json.loads(body).get("certificates", [])}


@case(timeout=90)
def certificates_rotate_at_half_life_without_dropping(lab, ctx):
    """Leaves live CERT_LIFETIME_S: each node re-issues its workloads' certificates at half-life. A connection held
    open across the rotation keeps flowing, and new connections work with the new certificates."""
    ensure_servers(lab, ctx)
    before = {n: cert_serials(lab, n) for n in NODES}
    check(spiffe("default", "sa-a") in before["node1"] and spiffe("default", "sa-c") in before["node2"],
          f"certificates before: {before}")
    hold = lab.start_bg("a", [PY, PEER, "hold", ip_of("c"), str(PORT)], "hold-a-c-rotation")
    deadline = time.monotonic() + 10
    while "open" not in hold.log_tail() and time.monotonic() < deadline:
        time.sleep(0.1)
    check("open" in hold.log_tail(), f"a -> c did not open: {hold.log_tail()!r}")
    deadline = time.monotonic() + CERT_LIFETIME_S
    after = before
    while time.monotonic() < deadline:
        after = {n: cert_serials(lab, n) for n in NODES}
        if all(after[n].get(i) and after[n][i] != before[n][i] for n in NODES for i in before[n]):
            break
        time.sleep(1.0)
    for n in NODES:
        for ident, serial in before[n].items():
            check(after[n].get(ident) not in (None, serial),
                  f"{n}: {ident} still has serial {serial} after {CERT_LIFETIME_S} s (lifetime {CERT_LIFETIME_S} s)")
        log = open(lab.daemons[n].log_path, encoding="utf-8", errors="replace").read()
        check("certificates rotated at half-life" in log, f"{n}: no rotation in its log")
    time.sleep(1.0)
    check(hold.alive(), f"the connection held across the rotation ended: {hold.log_tail()!r}")
    # the held connection is listed on both nodes, with both identities
    for node, direction in (("node1", "outbound"), ("node2", "inbound")):
        conns = lab.zwirectl(node, ["connections"])
        mine = [c for c in conns if c["direction"] == direction and c["dst"] == f"{ip_of('c')}:{PORT}"
                and c["src"].startswith(ip_of("a") + ":")]
        check(mine and mine[0]["src_identity"] == spiffe("default", "sa-a")
              and mine[0]["dst_identity"] == spiffe("default", "sa-c") and mine[0]["bytes_sent"] > 0,
              f"{node}: zwirectl connections does not list the held a -> c ({direction}): {conns}")
    table = lab.zwirectl("node1", ["connections"], parse=False)
    check("CONNECTIONS" in table and ip_of("c") in table, f"zwirectl connections (table):\n{table}")
    http_ok(lab, "a", ip_of("c"), want_pod="c", want_peer=ip_of("a"))
    lab.stop_bg(hold)
    print(f"note: rotated {sum(len(v) for v in before.values())} certificates; the held connection stayed open",
          flush=True)


def put_config(lab, node, text):
    """PUT /config on a node. Returns (HTTP status, body)."""
    res = zwlab.run(["curl", "-sS", "--max-time", "10", "--unix-socket", lab.socket_path(node), "-X", "PUT",
                     "-H", "Content-Type: text/plain", "--data-binary", "@-", "-w", "\n%{http_code}",
                     "http://localhost/config"], check=False, timeout=15, input_text=text)
    body, _, code = res.stdout.rpartition("\n")
    return int(code or 0), body


@case(timeout=90)
def put_config_adds_workload_removes_service_refuses_invalid(lab, ctx):
    """Live config on both nodes: an invalid file is refused with every error and changes nothing; adding workload
    e puts a -> e on HBONE at once; removing service echo closes a connection open to its VIP."""
    ensure_servers(lab, ctx)
    good = lab.zwire_config("node2")
    bad = good.replace('mtls_mode = "PERMISSIVE"', 'mtls_mode = "SOMETIMES"').replace(
        'trust_domain = "cluster.local"', 'trust_domain = "bad domain!"', 1)
    code, body = put_config(lab, "node2", bad)
    check(code == 400 and "mesh.mtls_mode" in body and "mesh.trust_domain" in body and "PUT /config:" in body,
          f"invalid PUT /config -> {code}, want 400 listing both errors with their lines:\n{body}")
    http_ok(lab, "a", ip_of("c"), want_pod="c")

    hold = lab.start_bg("a", [PY, PEER, "hold", VIP, str(VIP_PORT)], "hold-a-vip")
    deadline = time.monotonic() + 10
    while "open" not in hold.log_tail() and time.monotonic() < deadline:
        time.sleep(0.1)
    check("open" in hold.log_tail(), f"a -> {VIP}:{VIP_PORT} did not open: {hold.log_tail()!r}")
    off1 = log_size(lab, "node1")
    desc = mesh_desc()
    desc["workloads"].append(wl("e"))
    desc.pop("services", None)
    for w in desc["workloads"]:
        w.pop("services", None)
    lab.desc["mesh"] = desc
    for node in NODES:
        code, body = put_config(lab, node, lab.zwire_config(node))
        check(200 <= code < 300, f"{node}: PUT /config (e added, echo removed) -> {code}: {body[:300]}")
    deadline = time.monotonic() + 10
    while hold.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    check(not hold.alive(), f"a's connection to {VIP}:{VIP_PORT} survived the removal of service echo for 10 s")
    recs = wait_records(lab, "node1", off1, lambda x: x["direction"] == "outbound"
                        and x.get("dst_addr") == f"{VIP}:{VIP_PORT}")
    check(recs and recs[0].get("reason") not in (None, "-"),
          "node1 should log the VIP connection closed with a reason:" + show(x["line"] for x in recs))

    off1 = log_size(lab, "node1")
    http_ok(lab, "a", ip_of("e"), path="/a2e-live", want_pod="e")
    recs = wait_records(lab, "node1", off1, lambda x: x["direction"] == "outbound"
                        and x.get("dst_addr") == f"{ip_of('e')}:{PORT}")
    check(recs and recs[-1].get("hbone_status") == "200" and recs[-1].get("dst_identity") == spiffe("default", "sa-e"),
          "a -> e should go over HBONE to sa-e once e is a workload:" + show(x["line"] for x in recs))
    lab.desc["mesh"] = mesh_desc()


@case(timeout=90)
def strict_refuses_plaintext_keeps_hbone(lab, ctx):
    """Both nodes restarted with mesh.mtls_mode = STRICT: x -> c (plaintext) is refused, a -> c (HBONE) works."""
    ensure_servers(lab, ctx)
    lab.desc["mesh"] = mesh_desc(mtls_mode="STRICT")
    for node in NODES:
        lab.restart_zwire(node)
    for pod in ("a", "x"):
        warm(lab, pod, ip_of("c"))
    off = log_size(lab, "node2")
    r = http_refused(lab, "x", ip_of("c"))
    recs = wait_records(lab, "node2", off, lambda x: x["direction"] == "inbound" and x.get("dst_workload") == "c")
    check(recs and recs[-1].get("reason") not in (None, "-"),
          "node2 (STRICT) access log for x -> c, want a refusal reason:" + show(x["line"] for x in recs)
          + f"\n      curl: {r['code']} rc {r['rc']} {r['err']}")
    http_ok(lab, "a", ip_of("c"), want_pod="c", want_peer=ip_of("a"))


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    check(lab is not None, "no lab")
    found = lab.leftovers()
    check(not found, "left behind: " + ", ".join(found))


def make_lab(ctx):
    kinds = {"dpdk": ("zwire", "zwire"), "kernel": ("zwire-kernel", "zwire-kernel"),
             "mixed": ("zwire", "zwire-kernel")}[BACKEND]
    return zwlab.Lab(lab_desc(*kinds), build=ctx.build)


if __name__ == "__main__":
    BACKEND = take_backend(sys.argv, ("dpdk", "kernel", "mixed"))
    sys.exit(main(make_lab, f"mesh end to end ({BACKEND} backend)"))
