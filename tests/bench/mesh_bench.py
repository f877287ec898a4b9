#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The mesh benchmark: pod a -> pod c across two nodes, with no mesh, with zwire (HBONE), with stunnel (mTLS).

Same topology for every row (zwlab DEFAULT_DESC without pod b):

    pod a 10.21.1.10 -- node1 == fabric 10.21.0.0/24 == node2 -- pod c 10.21.2.10

  direct   both nodes are Linux routers: plain TCP, no encryption (the ceiling);
  zwire    both nodes are zwire on the DPDK path with the mesh on: pod a's TCP is captured by node1 and
           tunnelled as HBONE (mTLS + HTTP/2 CONNECT) to c's 15008, terminated by node2 (idle back-off on,
           because two polling nodes and the load generators share 2 vCPUs);
  stunnel  Linux routers plus an stunnel mTLS pair as sidecars: a client stunnel in pod a (the load
           generator talks to 127.0.0.1) and a server stunnel in pod c that requires and verifies the
           client certificate (TLS 1.3, P-256 SPIFFE leaves from one CA), one TLS session per connection;
  kernel   both nodes are `zwire --backend kernel` (HBONE on Linux sockets), if that backend runs here.

Measured per row: iperf3 TCP throughput (1 and 8 streams), HTTP requests/s with p50/p99 latency (wrk, 1 and 32
connections, 1 KiB body from nginx in pod c), and new connections/s (wrk with Connection: close, 8 connections).
Then, for zwire (and stunnel), the memory an idle tunnel costs: N idle connections are opened and the proxies'
RSS (and zwirectl --json stats) read before and after.

It prints a table with ratios and never fails on a number; exit 1 only if no row could run at all.
Usage: mesh_bench.py --build BUILD_DIR [--secs 4] [--kinds direct,zwire,stunnel,kernel] [--idle 400]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))

import zwlab  # noqa: E402  (path set just above)

PEERS = os.path.join(HERE, "..", "integration", "hbone_peers.py")
TD = "cluster.local"
A_IP, C_IP = "10.21.1.10", "10.21.2.10"
IPERF_PORT, HTTP_PORT, ECHO_PORT = 5201, 80, 7000
# stunnel: the client side listens on pod a's loopback at LOCAL_OFFSET + port and connects to c at
# TLS_OFFSET + port, where the server side forwards to 127.0.0.1:port.
LOCAL_OFFSET, TLS_OFFSET = 10000, 20000
BODY = 1024

BASE_DESC = {
    "fabric_cidr": "10.21.0.0/24",
    "nodes": [
        {"name": "node1", "kind": "linux", "fabric_ip": "10.21.0.1", "pods_cidr": "10.21.1.0/24",
         "pods_mode": "bridge", "lcores": "0,1"},
        {"name": "node2", "kind": "linux", "fabric_ip": "10.21.0.2", "pods_cidr": "10.21.2.0/24",
         "pods_mode": "bridge", "lcores": "1,0"},
    ],
    "pods": [
        {"name": "a", "node": "node1", "ip": A_IP},
        {"name": "c", "node": "node2", "ip": C_IP},
    ],
}

MESH = {
    "mesh": {"trust_domain": TD, "mtls_mode": "PERMISSIVE"},
    "workloads": [
        {"name": "a", "namespace": "default", "service_account": "sa-a", "pod": "a"},
        {"name": "c", "namespace": "default", "service_account": "sa-c", "pod": "c"},
    ],
}


class Skip(Exception):
    """A row cannot run here (say, the kernel backend is missing); not a failure of the benchmark."""


def say(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# PKI for stunnel: the lab's P-256 CA and Istio-like leaves (LAB.md §5c)
# --------------------------------------------------------------------------------------------

def make_leaf(lab, sa):
    ca_pem, ca_key = zwlab.make_ca(lab.run_dir, TD)
    d = os.path.join(lab.run_dir, "pki")
    os.makedirs(d, exist_ok=True)
    key, csr, crt, ext = (os.path.join(d, f"{sa}.{s}") for s in ("key", "csr", "pem", "ext"))
    with open(ext, "w", encoding="utf-8") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                f"subjectAltName=critical,URI:spiffe://{TD}/ns/default/sa/{sa}\n")
    zwlab.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key])
    zwlab.run(["openssl", "req", "-new", "-key", key, "-subj", "/", "-out", csr])
    zwlab.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial",
               "-days", "1", "-sha256", "-extfile", ext, "-out", crt])
    return ca_pem, crt, key


# --------------------------------------------------------------------------------------------
# Servers in pod c, sidecars, the kernel backend
# --------------------------------------------------------------------------------------------

def start_servers(lab):
    """iperf3, nginx (1 KiB body) and an echo server in pod c, listening on every address of the pod."""
    www = os.path.join(lab.run_dir, "www-c")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(BODY))
    tmp = os.path.join(lab.run_dir, "nginx-tmp")
    os.makedirs(tmp, exist_ok=True)
    conf = os.path.join(lab.run_dir, "nginx.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f"""worker_processes 1;
pid {lab.run_dir}/nginx.pid;
daemon off;
error_log {lab.run_dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen {HTTP_PORT} reuseport backlog=4096; root {www}; location / {{ }} }}
}}
""")
    procs = [lab.start_bg("c", ["iperf3", "-s", "-p", str(IPERF_PORT)], "iperf3-c"),
             lab.start_bg("c", ["nginx", "-c", conf, "-p", lab.run_dir, "-e", f"{lab.run_dir}/nginx-error.log"],
                          "nginx-c"),
             lab.start_bg("c", [zwlab.PYTHON, PEERS, "echo", "--bind", "0.0.0.0", "--port", str(ECHO_PORT),
                                "--quiet"], "echo-c")]
    for port, proc in zip((IPERF_PORT, HTTP_PORT, ECHO_PORT), procs):
        lab.wait_listen("c", port, proc=proc)


def start_stunnel(lab):
    """The mTLS sidecar pair; returns {"client": BgProc, "server": BgProc}."""
    ca, a_crt, a_key = make_leaf(lab, "sa-a")
    _, c_crt, c_key = make_leaf(lab, "sa-c")
    common = "foreground = yes\npid =\ndebug = 4\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
    cli, srv = [common], [common]
    for port in (IPERF_PORT, HTTP_PORT, ECHO_PORT):
        cli.append(f"[p{port}]\nclient = yes\naccept = 127.0.0.1:{LOCAL_OFFSET + port}\n"
                   f"connect = {C_IP}:{TLS_OFFSET + port}\ncert = {a_crt}\nkey = {a_key}\nCAfile = {ca}\n"
                   "verifyChain = yes\nsslVersionMin = TLSv1.3\n")
        srv.append(f"[p{port}]\naccept = {C_IP}:{TLS_OFFSET + port}\nconnect = 127.0.0.1:{port}\n"
                   f"cert = {c_crt}\nkey = {c_key}\nCAfile = {ca}\nverifyChain = yes\nrequireCert = yes\n"
                   "sslVersionMin = TLSv1.3\n")
    out = {}
    for side, pod, text in (("server", "c", srv), ("client", "a", cli)):
        path = os.path.join(lab.run_dir, f"stunnel-{side}.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(text))
        out[side] = lab.start_bg(pod, ["stunnel4", path], f"stunnel-{side}")
    lab.wait_listen("c", TLS_OFFSET + HTTP_PORT, proc=out["server"])
    lab.wait_listen("a", LOCAL_OFFSET + HTTP_PORT, proc=out["client"])
    return out


def start_kernel_nodes(lab):
    """Replaces the Linux routing of both nodes by zwire --backend kernel (as tests/integration/test_kernel_e2e.py)."""
    exe = lab.zwire_bin()
    res = zwlab.run([exe, "--help"], check=False)
    if "--backend kernel" not in res.stdout + res.stderr:
        raise Skip("this zwire has no --backend kernel")
    mesh = lab.mesh_config()  # the same mesh groups as the DPDK nodes get, in the node's own config
    fabric_len = lab.desc["fabric_cidr"].split("/")[1]
    for node in ("node1", "node2"):
        n = lab.nodes[node]
        ns = lab.ns(node)
        plen = n["pods_cidr"].split("/")[1]
        cfg = os.path.join(lab.run_dir, f"{node}-kernel.cfg")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write("\n".join([
                f'node = {{ name = "{node}"; }};', "ports = (",
                f'  {{ name = "pods"; role = "pods"; devargs = "kernel:dp-pods"; address = "{n["gateway"]}/{plen}"; }},',
                f'  {{ name = "fabric"; role = "fabric"; devargs = "kernel:dp-fab"; '
                f'address = "{n["fabric_ip"]}/{fabric_len}"; }}', ");",
                f'mgmt = {{ socket = "{lab.socket_path(node)}"; }};', 'log = { level = "warn"; };', mesh]) + "\n")
        lab.sysctl(ns, {"net.bridge.bridge-nf-call-iptables": 0})
        proc = lab.start_bg(node, [exe, "--config", cfg, "--backend", "kernel"], f"zwire-{node}")
        lab.daemons[node] = proc
        lab.wait_ready(node, zwlab.READY_TIMEOUT_S)


# --------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------

def target(kind, port):
    """Where pod a's load generator connects for a service port of pod c."""
    if kind == "stunnel":
        return "127.0.0.1", LOCAL_OFFSET + port
    return C_IP, port


def iperf(lab, kind, streams, secs):
    host, port = target(kind, IPERF_PORT)
    res = lab.exec("a", ["iperf3", "-c", host, "-p", str(port), "-t", str(secs), "-P", str(streams), "--json"],
                   timeout=secs + 30)
    try:
        doc = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise zwlab.LabError(f"iperf3 -P {streams}: not JSON (exit {res.returncode}): "
                             f"{res.stdout[:200]}{res.stderr[:200]}") from None
    if "error" in doc:
        raise zwlab.LabError(f"iperf3 -P {streams}: {doc['error']}")
    return doc["end"]["sum_received"]["bits_per_second"] / 1e9


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def wrk(lab, kind, conns, secs, close=False):
    """wrk from pod a; returns dict(rps, p50_ms, p99_ms, errors)."""
    host, port = target(kind, HTTP_PORT)
    argv = ["wrk", "-t", "1" if conns == 1 else "2", "-c", str(conns), "-d", f"{secs}s", "--latency",
            "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    res = lab.exec("a", argv + [f"http://{host}:{port}/1k.bin"], timeout=secs + 30)
    out = res.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if res.returncode != 0 or not m:
        raise zwlab.LabError(f"wrk -c {conns}: exit {res.returncode}: {out[-300:]}{res.stderr[-300:]}")
    r = {"rps": float(m.group(1)), "p50_ms": None, "p99_ms": None, "errors": 0}
    for pct, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        mm = re.search(rf"^\s+{pct}\s+(\S+)", out, re.M)
        if mm:
            r[key] = _ms(mm.group(1))
    me = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    mn = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["errors"] = (sum(int(x) for x in me.groups()) if me else 0) + (int(mn.group(1)) if mn else 0)
    return r


# --------------------------------------------------------------------------------------------
# Idle tunnels: memory
# --------------------------------------------------------------------------------------------

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def tcp_conns(lab, node):
    """Established TCP connections zwire reports (zwirectl --json stats), or None."""
    try:
        st = lab.zwirectl(node, ["stats"])
    except zwlab.LabError:
        return None
    found = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k.lower() in ("established", "estab") and isinstance(v, int):
                    found.append(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(st)
    return max(found) if found else None  # the node total and its per-lcore parts: the largest is the total


def idle_memory(lab, kind, procs, n):
    """Opens n idle connections a -> c (echo), reads the proxies' RSS before and after."""
    host, port = target(kind, ECHO_PORT)
    before = {name: rss_kib(p.pid) for name, p in procs.items()}
    conns0 = {name: tcp_conns(lab, name) for name in procs if kind == "zwire"}
    hold = subprocess.Popen(["ip", "netns", "exec", lab.ns("a"), zwlab.PYTHON, PEERS, "hold", "--connect",
                             f"{host}:{port}", "-n", str(n), "--secs", "60"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = hold.stdout.readline()
            if not line or line.startswith(("ready", "error")):
                break
        if not line.startswith("ready"):
            raise zwlab.LabError(f"idle connections: {line.strip() or 'hold exited'}")
        time.sleep(1.0)
        after = {name: rss_kib(p.pid) for name, p in procs.items()}
        conns1 = {name: tcp_conns(lab, name) for name in procs if kind == "zwire"}
    finally:
        try:
            hold.stdin.close()
            hold.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(hold.pid, 9)
            hold.wait()
    rows = []
    for name in procs:
        b, a = before[name], after[name]
        per = (a - b) * 1024 / n if a is not None and b is not None else None
        extra = ""
        if kind == "zwire":
            extra = f", zwirectl established TCP {conns0.get(name)} -> {conns1.get(name)}"
        rows.append((name, b, a, per, extra))
    return rows


# --------------------------------------------------------------------------------------------
# One row
# --------------------------------------------------------------------------------------------

def desc_for(kind):
    d = json.loads(json.dumps(BASE_DESC))
    if kind == "zwire":
        for n in d["nodes"]:
            n["kind"] = "zwire"
    if kind in ("zwire", "kernel"):  # kernel: Linux-routed nodes, then zwire --backend kernel on top
        d["mesh"] = json.loads(json.dumps(MESH))
    return d


def run_kind(kind, args):
    res = {}
    with zwlab.Lab(desc_for(kind), build=args.build) as lab:
        procs = {}
        if kind == "kernel":
            start_kernel_nodes(lab)
            procs = {"node1": lab.daemons["node1"], "node2": lab.daemons["node2"]}
        elif kind == "zwire":
            procs = {"node1": lab.daemons["node1"], "node2": lab.daemons["node2"]}
        start_servers(lab)
        if kind == "stunnel":
            sp = start_stunnel(lab)
            procs = {"stunnel-a": sp["client"], "stunnel-c": sp["server"]}
        for _ in range(10):
            if lab.ping("a", C_IP, count=1, wait=1)["received"]:
                break
        else:
            raise zwlab.LabError(f"{kind}: pod a cannot reach {C_IP}")
        # one request first: the first tunnel pays for the handshake and pool set-up
        warm = lab.exec("a", ["curl", "-sS", "-o", "/dev/null", "--max-time", "10",
                              "http://%s:%d/1k.bin" % target(kind, HTTP_PORT)], timeout=15)
        if warm.returncode != 0:
            raise zwlab.LabError(f"{kind}: warm-up request failed: {warm.stderr.strip()}")
        steps = [("tput1", lambda: iperf(lab, kind, 1, args.secs)),
                 ("tput8", lambda: iperf(lab, kind, 8, args.secs)),
                 ("http1", lambda: wrk(lab, kind, 1, args.secs)),
                 ("http32", lambda: wrk(lab, kind, 32, args.secs)),
                 ("cps", lambda: wrk(lab, kind, 8, args.secs, close=True))]
        for key, fn in steps:
            try:
                res[key] = fn()
                say(f"  {kind:8} {key:7} {fmt_step(key, res[key])}")
            except zwlab.LabError as e:
                res[key] = None
                say(f"  {kind:8} {key:7} failed: {e}")
            for name, p in procs.items():
                if not p.alive():
                    say(f"  {kind:8} {name} exited ({p.popen.returncode}) during {key}; last lines:\n"
                        + indent(p.log_tail(8)))
                    return res
            time.sleep(0.5)
        if procs and args.idle > 0 and kind in ("zwire", "stunnel", "kernel"):
            try:
                res["idle"] = idle_memory(lab, kind, procs, args.idle)
            except zwlab.LabError as e:
                say(f"  {kind:8} idle memory: failed: {e}")
        if kind in ("zwire", "kernel"):
            for node in ("node1", "node2"):
                try:
                    st = lab.zwirectl(node, ["stats"], parse=False)
                    keep = [ln for ln in st.splitlines() if re.search(r"tcp_|mesh|hbone|tls|drop|retrans", ln)]
                    if keep:
                        say(f"  {kind} {node} counters:\n" + indent("\n".join(keep[:25])))
                except zwlab.LabError as e:
                    say(f"  ({node}: zwirectl stats failed: {e})")
    return res


def indent(text):
    return "\n".join("      " + ln for ln in text.rstrip().splitlines())


def fmt_step(key, r):
    if key.startswith("tput"):
        return f"{r:.2f} Gbit/s"
    p50 = f"{r['p50_ms']:.3f}" if r["p50_ms"] is not None else "?"
    p99 = f"{r['p99_ms']:.3f}" if r["p99_ms"] is not None else "?"
    return f"{r['rps']:.0f} req/s, p50 {p50} ms, p99 {p99} ms, errors {r['errors']}"


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------

METRICS = [
    ("tput1", "TCP 1 stream, Gbit/s", lambda r: r),
    ("tput8", "TCP 8 streams, Gbit/s", lambda r: r),
    ("http1", "HTTP 1 conn, req/s", lambda r: r["rps"]),
    ("http1", "  p50 ms", lambda r: r["p50_ms"]),
    ("http1", "  p99 ms", lambda r: r["p99_ms"]),
    ("http32", "HTTP 32 conns, req/s", lambda r: r["rps"]),
    ("http32", "  p50 ms", lambda r: r["p50_ms"]),
    ("http32", "  p99 ms", lambda r: r["p99_ms"]),
    ("cps", "new connections/s", lambda r: r["rps"]),
]


def print_table(results):
    kinds = list(results)
    ratio_cols = [("zwire", "direct"), ("zwire", "stunnel"), ("kernel", "zwire")]
    ratio_cols = [(x, y) for x, y in ratio_cols if x in kinds and y in kinds]
    head = f"{'':24}" + "".join(f"{k:>11}" for k in kinds) + "".join(f"{x + '/' + y:>16}" for x, y in ratio_cols)
    say("\n" + head)
    for key, label, get in METRICS:
        vals = {}
        for k in kinds:
            r = results[k].get(key)
            vals[k] = get(r) if r is not None else None
        cells = "".join(f"{v:>11.3f}" if isinstance(v, float) and v < 100 else
                        f"{v:>11.0f}" if isinstance(v, float) else f"{'-':>11}" for v in vals.values())
        ratios = ""
        for x, y in ratio_cols:
            if vals.get(x) and vals.get(y):
                ratios += f"{vals[x] / vals[y]:>16.2f}"
            else:
                ratios += f"{'-':>16}"
        say(f"{label:24}{cells}{ratios}")
    say("(latency ratios above 1 mean slower; throughput ratios below 1 mean slower)")
    for k in kinds:
        idle = results[k].get("idle")
        if not idle:
            continue
        for name, b, a, per, extra in idle:
            per_s = f"{per:.0f} bytes per idle connection" if per is not None else "?"
            say(f"{k:8} {name:10} RSS {b} KiB -> {a} KiB: {per_s}{extra}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--secs", type=int, default=4)
    ap.add_argument("--kinds", default="direct,zwire,stunnel,kernel")
    ap.add_argument("--idle", type=int, default=400, help="idle connections for the memory probe (0: skip)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        say("mesh_bench: must run as root (it builds network namespaces)")
        return 1
    os.environ.setdefault("ZWLAB_QUIET", "1")
    t0 = time.monotonic()
    say(f"Mesh: pod a -> pod c across two nodes; iperf3 and wrk for {args.secs}s each, nginx 1 KiB body")
    say("(shared 2-vCPU VM: load generators, servers and both nodes share the cores; compare ratios)\n")
    results = {}
    for kind in [k for k in args.kinds.split(",") if k]:
        try:
            results[kind] = run_kind(kind, args)
        except Skip as e:
            say(f"  {kind:8} skipped: {e}")
        except (zwlab.LabError, OSError) as e:
            say(f"  {kind:8} could not run: {e}")
    if not results:
        return 1
    print_table(results)
    say(f"\nmesh benchmark took {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
