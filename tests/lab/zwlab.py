#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""zwlab: build a zwire test topology from network namespaces and veths, and tear it down again.

A topology is described as data (a dict, or JSON on the command line):

    {
      "fabric_cidr": "10.21.0.0/24",
      "nodes": [
        {"name": "node1", "kind": "zwire", "fabric_ip": "10.21.0.1",
         "pods_cidr": "10.21.1.0/24", "pods_mode": "bridge", "lcores": "0,1"},
        ...
      ],
      "pods": [ {"name": "a", "node": "node1", "ip": "10.21.1.10"}, ... ]
    }

Node kinds:
  zwire  build/zwire runs inside the node netns and holds dp-pods and dp-fab through DPDK af_packet;
  linux  the node netns routes with the kernel (the baseline, and the lab's own self-check);
  host   a bare endpoint on the fabric (an address on dp-fab and routes; no pods, no forwarding);
  zwire-kernel  `zwire --backend kernel` in a kernel-routed node netns (addresses, routes and forwarding as
         for linux; zwire captures pod traffic with its nft rules; ports are devargs "kernel:<ifname>").

Inside node netns `zw<id>-<node>` (node "node1" gives `zw<id>-n1`):
  dp-fab    fabric veth end; its peer is dp-fab in the other node's netns (exactly two nodes per fabric);
  dp-pods   pods veth end. pods_mode "bridge": its peer `up` sits on bridge `br-pods` together with one
            veth end per pod (`v-<pod>`); pods_mode "direct": its peer is the single pod's eth0.
Each pod is netns `zw<id>-p<pod>` with eth0 holding <ip>/32, an on-link route to the gateway (the
first host of pods_cidr) and a default route through it. The /32 makes every packet between two pods
of one node go through the node's router, as in most Kubernetes CNIs.
A pod with "wan": true (bridge mode only) reaches its node through a WAN netns `zw<id>-w<pod>`
(Lab.ns("wan-<pod>")): its eth0 pairs with `w-pod`, `w-node` pairs with `v-<pod>` on br-pods, and
kernel bridge `br-wan` joins the two. A test detaches them from br-wan (Lab.wan_detach) to put a
userspace delay/jitter bridge of its own in between, then reattaches them (Lab.wan_attach).

A description may also carry "mesh": the mesh groups every zwire node gets, the same text on each,
written as JSON that mirrors the libconfig keys (appliance/config_mesh.c, config_authz.c):
    "mesh": {"mesh": {"trust_domain": "cluster.local", "mtls_mode": "PERMISSIVE"},
             "workloads": [{"name": "a", "namespace": "default", "service_account": "sa-a", "pod": "a"}, ...],
             "services": [...], "policies": [...]}
A workload's "pod" fills in its addresses and node from the pod. Unless mesh.certificates names a CA, a
P-256 CA is generated in the run dir (ca.pem, ca.key) and shared by all nodes. Lab.restart_zwire(node)
re-renders the node's config from the (possibly changed) description and starts zwire again.

Everything created is named after the run id, recorded in /run/zwire/<id>/state.json as soon as it
exists, and removed by Lab.down(), which a context manager, atexit and SIGTERM/SIGHUP/SIGINT all reach.
Only processes the lab started are signalled, by PID, after checking the PID still belongs to them
(its start time is recorded). Nothing is done in the root namespace except creating netns and files
under /run/zwire, /var/run/dpdk/<prefix> and the optional artifact directory.

Command line:
  zwlab.py up [DESC.json|default|bench] [--build DIR] [--kind KIND]   brings a topology up and leaves it
  zwlab.py down [RUNID ...] [--all]                                   tears runs down
  zwlab.py status                                                     lists runs and leftovers
"""

import argparse
import atexit
import copy
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

RUN_ROOT = "/run/zwire"
DPDK_RUN_ROOT = "/var/run/dpdk"
PREFIX = "zw"
RUN_ID_RE = re.compile(r"zw[0-9a-f]{4}")


METRICS_PORT = 15020  # zwire's TCP listener for /metrics and /healthz/ready, on the node's loopback


def is_ours(name):
    """True for names zwlab makes: a run id (zw + 4 hex digits), alone or followed by '-...'."""
    return RUN_ID_RE.fullmatch(name.split("-")[0]) is not None
PYTHON = "/usr/bin/python3"
IFNAMSIZ_MAX = 15
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

DEFAULT_DESC = {
    "fabric_cidr": "10.21.0.0/24",
    "nodes": [
        {"name": "node1", "kind": "zwire", "fabric_ip": "10.21.0.1", "pods_cidr": "10.21.1.0/24",
         "pods_mode": "bridge", "lcores": "0,1"},
        {"name": "node2", "kind": "zwire", "fabric_ip": "10.21.0.2", "pods_cidr": "10.21.2.0/24",
         "pods_mode": "bridge", "lcores": "1,0"},
    ],
    "pods": [
        {"name": "a", "node": "node1", "ip": "10.21.1.10"},
        {"name": "b", "node": "node1", "ip": "10.21.1.11"},
        {"name": "c", "node": "node2", "ip": "10.21.2.10"},
    ],
}

# One node forwarding: pod a (direct on dp-pods) -> node1 -> fabric -> an endpoint netns.
BENCH_DESC = {
    "fabric_cidr": "10.21.0.0/24",
    "nodes": [
        {"name": "node1", "kind": "zwire", "fabric_ip": "10.21.0.1", "pods_cidr": "10.21.1.0/24",
         "pods_mode": "direct", "lcores": "0,1", "idle_backoff": False},
        {"name": "sink", "kind": "host", "fabric_ip": "10.21.0.2"},
    ],
    "pods": [
        {"name": "a", "node": "node1", "ip": "10.21.1.10"},
    ],
}

NAMED_DESCS = {"default": DEFAULT_DESC, "bench": BENCH_DESC}
NODE_KINDS = ("zwire", "linux", "host", "zwire-kernel")
ZWIRE_KINDS = ("zwire", "zwire-kernel")  # nodes that run zwire
ROUTER_KINDS = ("zwire", "linux", "zwire-kernel")


class LabError(Exception):
    """A lab step failed; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Small process helpers
# --------------------------------------------------------------------------------------------

def log(msg):
    """Progress messages go to stderr so that test output on stdout stays machine-readable."""
    if os.environ.get("ZWLAB_QUIET") != "1":
        print(f"[zwlab] {msg}", file=sys.stderr, flush=True)


def run(argv, timeout=20.0, check=True, input_text=None):
    """Runs argv in its own process group; on timeout kills that group. Returns CompletedProcess."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        raise LabError(f"timeout after {timeout}s: {' '.join(argv)}") from None
    except BaseException:
        _killpg(proc.pid)  # interrupted (signal, Ctrl-C): leave no child behind
        proc.wait()
        raise
    res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and res.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` exited {res.returncode}: {err.strip() or out.strip()}")
    return res


def _killpg(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def proc_start_time(pid):
    """The process start time (field 22 of /proc/PID/stat), or None if the PID does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19])


def pid_alive(pid, start_time):
    """True if PID exists, is not a zombie, and is still the process that was recorded."""
    st = proc_start_time(pid)
    if st is None or (start_time is not None and st != start_time):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def signal_recorded(pid, start_time, sig):
    """Sends sig to pid only if it is still the recorded process. Returns True if sent."""
    if not pid_alive(pid, start_time):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def list_netns():
    res = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def netns_pids(ns):
    res = run(["ip", "netns", "pids", ns], check=False, timeout=10)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


# --------------------------------------------------------------------------------------------
# Teardown from a recorded state (shared by Lab.down, `zwlab.py down` and cleanup.py)
# --------------------------------------------------------------------------------------------

def teardown_state(state, artifact_dir=None):
    """Removes everything a state record lists. Idempotent; returns a list of problems found."""
    problems = []
    procs = state.get("procs", [])
    for p in procs:
        if signal_recorded(p["pid"], p.get("start"), signal.SIGTERM):
            log(f"stopping {p['name']} (pid {p['pid']})")
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        while pid_alive(p["pid"], p.get("start")) and time.monotonic() < deadline:
            _reap(p["pid"])
            time.sleep(0.05)
        if signal_recorded(p["pid"], p.get("start"), signal.SIGKILL):
            problems.append(f"{p['name']} (pid {p['pid']}) ignored SIGTERM; killed")
        _reap(p["pid"])
    # Anything still inside our namespaces was started there by this run (a timed-out exec, say).
    for ns in state.get("netns", []):
        if not is_ours(ns) or ns not in list_netns():
            continue
        for pid in netns_pids(ns):
            problems.append(f"stray pid {pid} in {ns}; killed")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid)
    for ns in reversed(state.get("netns", [])):
        if is_ours(ns) and ns in list_netns():
            res = run(["ip", "netns", "del", ns], check=False)
            if res.returncode != 0:
                problems.append(f"ip netns del {ns}: {res.stderr.strip()}")
    for prefix in state.get("dpdk_prefixes", []):
        if is_ours(prefix):
            shutil.rmtree(os.path.join(DPDK_RUN_ROOT, prefix), ignore_errors=True)
    run_dir = state.get("run_dir")
    if run_dir and is_ours(os.path.basename(run_dir)) and os.path.isdir(run_dir):
        if artifact_dir:
            try:
                shutil.copytree(run_dir, artifact_dir, dirs_exist_ok=True,
                                ignore=_not_logs)
            except OSError as e:
                problems.append(f"copying logs to {artifact_dir}: {e}")
        shutil.rmtree(run_dir, ignore_errors=True)
    return problems


def _not_logs(_dirname, names):
    """copytree filter: keep logs, configs and the state record; skip sockets and served data."""
    return [n for n in names if n.endswith((".sock", ".bin")) or n.startswith("www-")]


def _reap(pid):
    """Collects the exit status of our own children so they do not linger as zombies."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------------------------
# Description handling
# --------------------------------------------------------------------------------------------

def node_short(name):
    """node1 -> n1, sink -> sink: the netns suffix of a node."""
    if name.startswith("node") and name[4:].isdigit():
        return "n" + name[4:]
    return name


def normalize_desc(desc, kind_override=None):
    """Checks a description and fills in defaults. Returns a new dict."""
    d = copy.deepcopy(desc)
    fabric = ipaddress.ip_network(d.get("fabric_cidr", "10.21.0.0/24"))
    d["fabric_cidr"] = str(fabric)
    nodes = d.get("nodes", [])
    if len(nodes) != 2:
        raise LabError("a description has exactly two nodes (they share one fabric veth)")
    names = set()
    for n in nodes:
        if n["name"] in names:
            raise LabError(f"duplicate node {n['name']}")
        names.add(n["name"])
        if kind_override and n.get("kind", "zwire") != "host":
            n["kind"] = kind_override
        n.setdefault("kind", "zwire")
        if n["kind"] not in NODE_KINDS:
            raise LabError(f"node {n['name']}: unknown kind {n['kind']}")
        if ipaddress.ip_address(n["fabric_ip"]) not in fabric:
            raise LabError(f"node {n['name']}: fabric_ip outside {fabric}")
        n.setdefault("lcores", "0,1")
        n.setdefault("workers", 1)
        n.setdefault("idle_backoff", True)
        n.setdefault("pods_mode", "bridge")
        if n["kind"] != "host":
            net = ipaddress.ip_network(n["pods_cidr"])
            n["pods_cidr"] = str(net)
            n["gateway"] = str(next(net.hosts()))
    pods = d.setdefault("pods", [])
    for p in pods:
        node = next((n for n in nodes if n["name"] == p["node"]), None)
        if node is None or node["kind"] == "host":
            raise LabError(f"pod {p['name']}: no such pods node {p['node']}")
        if ipaddress.ip_address(p["ip"]) not in ipaddress.ip_network(node["pods_cidr"]):
            raise LabError(f"pod {p['name']}: {p['ip']} outside {node['pods_cidr']}")
        if len("v-" + p["name"]) > IFNAMSIZ_MAX:
            raise LabError(f"pod name {p['name']} too long")
        if p.get("wan") and node.get("pods_mode", "bridge") != "bridge":
            raise LabError(f"pod {p['name']}: wan needs pods_mode bridge")
    for n in nodes:
        mine = [p for p in pods if p["node"] == n["name"]]
        if n["kind"] != "host" and n["pods_mode"] == "direct" and len(mine) != 1:
            raise LabError(f"node {n['name']}: pods_mode direct needs exactly one pod")
    return d


def load_desc(arg):
    """A description from a name in NAMED_DESCS, a JSON file, or None (the default)."""
    if arg is None:
        return DEFAULT_DESC
    if arg in NAMED_DESCS:
        return NAMED_DESCS[arg]
    with open(arg, encoding="utf-8") as f:
        return json.load(f)


def new_run_id():
    existing = set(list_netns())
    for _ in range(100):
        rid = PREFIX + os.urandom(2).hex()
        if not any(ns.startswith(rid + "-") for ns in existing) and \
                not os.path.exists(os.path.join(RUN_ROOT, rid)):
            return rid
    raise LabError("could not pick a free run id")


# --------------------------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------------------------

_ACTIVE = []
_ACTIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def _atexit_teardown():
    for lab in list(_ACTIVE):
        lab.down()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def install_handlers():
    """atexit + signal handlers that turn SIGTERM/SIGHUP into SystemExit so `with` blocks unwind."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_atexit_teardown)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _on_signal)


class BgProc:
    """A background process the lab started: name, netns, pid, start time, log file, Popen."""

    def __init__(self, name, ns, popen, log_path):
        self.name = name
        self.ns = ns
        self.popen = popen
        self.pid = popen.pid
        self.start = proc_start_time(popen.pid)
        self.log_path = log_path

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def libconfig_value(v, indent="  "):
    """JSON-ish data as libconfig text: dict -> group, list of scalars -> array, other lists -> list."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        inner = indent + "  "
        body = "".join(f"\n{inner}{k} = {libconfig_value(x, inner)};" for k, x in v.items())
        return "{" + body + f"\n{indent}}}"
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            return "[ " + ", ".join(libconfig_value(x) for x in v) + " ]"
        inner = indent + "  "
        return "(" + ",".join(f"\n{inner}{libconfig_value(x, inner)}" for x in v) + f"\n{indent})"
    raise LabError(f"cannot write {type(v).__name__} {v!r} as libconfig")


def make_ca(run_dir, trust_domain):
    """A P-256 mesh CA (basicConstraints CA:TRUE) in run_dir; returns (cert path, key path)."""
    key, pem = os.path.join(run_dir, "ca.key"), os.path.join(run_dir, "ca.pem")
    if not (os.path.exists(key) and os.path.exists(pem)):
        run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key])
        run(["openssl", "req", "-x509", "-new", "-key", key, "-subj", f"/O={trust_domain}", "-days", "30",
             "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", pem])
    return pem, key


class Lab:
    """One topology. Use as a context manager, or call up() and down() yourself."""

    def __init__(self, desc=None, build=None, kind=None, run_id=None, artifact_dir=None,
                 persistent=False):
        self.desc = normalize_desc(desc if desc is not None else DEFAULT_DESC, kind)
        self.before_zwire = None  # optional callable(lab, node): runs in up() just before a node's zwire starts
        self.build = os.path.abspath(build) if build else None
        self.run_id = run_id or new_run_id()
        self.run_dir = os.path.join(RUN_ROOT, self.run_id)
        self.artifact_dir = artifact_dir
        self.persistent = persistent
        self.nodes = {n["name"]: n for n in self.desc["nodes"]}
        self.pods = {p["name"]: p for p in self.desc["pods"]}
        self.procs = []
        self.daemons = {}
        self.state = {"id": self.run_id, "run_dir": self.run_dir, "netns": [], "procs": [],
                      "dpdk_prefixes": [], "owner_pid": os.getpid(), "persistent": persistent,
                      "created": time.time(), "desc": self.desc}
        self._down = False
        self.teardown_problems = []

    # ---- names -------------------------------------------------------------------------------

    def ns(self, name):
        """Netns of a node or pod given by its logical name; full netns names pass through."""
        if name in self.nodes:
            return f"{self.run_id}-{node_short(name)}"
        if name in self.pods:
            return f"{self.run_id}-p{name}"
        if name.startswith("wan-") and name[4:] in self.pods and self.pods[name[4:]].get("wan"):
            return f"{self.run_id}-w{name[4:]}"
        if name.startswith(self.run_id + "-"):
            return name
        raise LabError(f"unknown node or pod {name}")

    def socket_path(self, node):
        return os.path.join(self.run_dir, f"{node}.sock")

    def file_prefix(self, node):
        return f"{self.run_id}-{node_short(node)}"

    def node_of(self, pod):
        return self.nodes[self.pods[pod]["node"]]

    # ---- context manager -----------------------------------------------------------------------

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def _save_state(self):
        tmp = os.path.join(self.run_dir, "state.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, os.path.join(self.run_dir, "state.json"))

    # ---- bring-up ------------------------------------------------------------------------------

    def up(self):
        """Builds the whole topology and starts zwire nodes. On any failure, tears down and raises."""
        if os.geteuid() != 0:
            raise LabError("zwlab needs root")
        install_handlers()
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)
        os.makedirs(self.run_dir, mode=0o755)
        self._save_state()
        try:
            self._build()
        except BaseException:
            self.down(keep_logs=True)
            raise
        return self

    def _add_netns(self, ns):
        run(["ip", "netns", "add", ns])
        self.state["netns"].append(ns)
        self._save_state()
        # IPv6 off before any link exists: no RS/MLD/DAD chatter reaches the data plane.
        self.sysctl(ns, {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1})
        self.ip(ns, "link", "set", "dev", "lo", "up")

    def ip(self, ns, *args):
        return run(["ip", "-n", ns, *args])

    def sysctl(self, ns, settings):
        argv = ["ip", "netns", "exec", ns, "sysctl", "-qw"]
        argv += [f"{k}={v}" for k, v in settings.items()]
        run(argv)

    def _offloads_off(self, ns, dev, dpdk_side):
        """LAB.md §2a/§9: full checksums and wire-sized frames on every veth end."""
        feats = ["tx", "off", "tso", "off", "gso", "off", "gro", "off"]
        if dpdk_side:
            feats += ["lro", "off"]
        run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, *feats], check=False)
        res = run(["ip", "netns", "exec", ns, "ethtool", "-k", dev])
        on = [line.split(":")[0].strip() for line in res.stdout.splitlines()
              if line.split(":")[0].strip() in ("tx-checksumming", "tcp-segmentation-offload",
                                                "generic-segmentation-offload",
                                                "generic-receive-offload")
              and ": on" in line]
        if on:
            raise LabError(f"{ns}/{dev}: could not turn off {', '.join(on)}")

    def _dpdk_side(self, ns, dev, kind):
        """The veth end a node's data plane holds."""
        self._offloads_off(ns, dev, dpdk_side=True)
        if kind == "zwire":
            self.sysctl(ns, {f"net.ipv4.conf.{dev}.arp_ignore": 8,
                             f"net.ipv4.conf.{dev}.forwarding": 0})
        self.ip(ns, "link", "set", "dev", dev, "up")

    def _build(self):
        nodes = self.desc["nodes"]
        if any(n["kind"] in ZWIRE_KINDS for n in nodes):
            self.zwire_bin()
        fabric_len = ipaddress.ip_network(self.desc["fabric_cidr"]).prefixlen
        for n in nodes:
            self._add_netns(self.ns(n["name"]))
        for p in self.pods.values():
            self._add_netns(self.ns(p["name"]))
            if p.get("wan"):
                self._add_netns(self.ns("wan-" + p["name"]))
        log(f"run {self.run_id}: netns {' '.join(self.state['netns'])}")

        n1, n2 = (self.ns(n["name"]) for n in nodes)
        run(["ip", "link", "add", "dp-fab", "netns", n1, "type", "veth", "peer", "name", "dp-fab",
             "netns", n2])
        for n in nodes:
            ns = self.ns(n["name"])
            if n["kind"] == "host":
                self._offloads_off(ns, "dp-fab", dpdk_side=False)
                self.ip(ns, "link", "set", "dev", "dp-fab", "up")
            else:
                self._dpdk_side(ns, "dp-fab", n["kind"])
                self._build_pods_port(n)

        for n in nodes:
            ns = self.ns(n["name"])
            if n["kind"] in ("linux", "host", "zwire-kernel"):
                self.ip(ns, "addr", "add", f"{n['fabric_ip']}/{fabric_len}", "dev", "dp-fab")
                if n["kind"] in ("linux", "zwire-kernel"):
                    plen = ipaddress.ip_network(n["pods_cidr"]).prefixlen
                    self.ip(ns, "addr", "add", f"{n['gateway']}/{plen}", "dev", "dp-pods")
                    self.sysctl(ns, {"net.ipv4.ip_forward": 1,
                                     "net.ipv4.conf.all.send_redirects": 0,
                                     "net.ipv4.conf.default.send_redirects": 0,
                                     "net.ipv4.conf.dp-pods.send_redirects": 0})
                for other in nodes:
                    if other is not n and other["kind"] != "host":
                        self.ip(ns, "route", "add", other["pods_cidr"], "via", other["fabric_ip"])
                if n["kind"] == "zwire-kernel":
                    # bridged pod frames must not meet zwire's nat hook (appliance/redirect.h)
                    self.sysctl(ns, {"net.bridge.bridge-nf-call-iptables": 0})
        for n in nodes:
            if n["kind"] in ZWIRE_KINDS:
                if self.before_zwire is not None:
                    self.before_zwire(self, n["name"])
                self.start_zwire(n["name"])

    def _build_pods_port(self, n):
        ns = self.ns(n["name"])
        mine = [p for p in self.pods.values() if p["node"] == n["name"]]
        if n["pods_mode"] == "direct":
            pod = mine[0]
            run(["ip", "link", "add", "dp-pods", "netns", ns, "type", "veth", "peer", "name", "eth0",
                 "netns", self.ns(pod["name"])])
        else:
            self.ip(ns, "link", "add", "name", "br-pods", "type", "bridge")
            self.ip(ns, "link", "add", "name", "up", "type", "veth", "peer", "name", "dp-pods")
            self.ip(ns, "link", "set", "dev", "up", "master", "br-pods")
            self._offloads_off(ns, "up", dpdk_side=False)
            self.ip(ns, "link", "set", "dev", "up", "up")
            for pod in mine:
                end = f"v-{pod['name']}"
                if pod.get("wan"):
                    self._build_wan(pod, ns, end)
                else:
                    run(["ip", "link", "add", end, "netns", ns, "type", "veth", "peer", "name", "eth0",
                         "netns", self.ns(pod["name"])])
                self.ip(ns, "link", "set", "dev", end, "master", "br-pods")
                self._offloads_off(ns, end, dpdk_side=False)
                self.ip(ns, "link", "set", "dev", end, "up")
            self.ip(ns, "link", "set", "dev", "br-pods", "up")
        self._dpdk_side(ns, "dp-pods", n["kind"])
        for pod in mine:
            self._build_pod(pod, n)

    def _build_wan(self, pod, node_ns, end):
        """pod eth0 <-> w-pod [br-wan] w-node <-> v-<pod> (on the node's br-pods)."""
        wns = self.ns("wan-" + pod["name"])
        run(["ip", "link", "add", "w-pod", "netns", wns, "type", "veth", "peer", "name", "eth0",
             "netns", self.ns(pod["name"])])
        run(["ip", "link", "add", "w-node", "netns", wns, "type", "veth", "peer", "name", end,
             "netns", node_ns])
        self.ip(wns, "link", "add", "name", "br-wan", "type", "bridge")
        for dev in ("w-pod", "w-node"):
            self._offloads_off(wns, dev, dpdk_side=True)
            self.ip(wns, "link", "set", "dev", dev, "master", "br-wan")
            self.ip(wns, "link", "set", "dev", dev, "up")
        self.ip(wns, "link", "set", "dev", "br-wan", "up")

    def wan_detach(self, pod):
        """Takes w-pod and w-node off br-wan: the pod is cut off until a bridge process joins them."""
        wns = self.ns("wan-" + pod)
        for dev in ("w-pod", "w-node"):
            self.ip(wns, "link", "set", "dev", dev, "nomaster")

    def wan_attach(self, pod):
        """Puts w-pod and w-node back on the kernel bridge br-wan."""
        wns = self.ns("wan-" + pod)
        for dev in ("w-pod", "w-node"):
            self.ip(wns, "link", "set", "dev", dev, "master", "br-wan")

    def nft(self, ns, ruleset):
        """Loads an nftables ruleset (text for nft -f) into a netns of this run."""
        run(["ip", "netns", "exec", self.ns(ns), "nft", "-f", "-"], input_text=ruleset)

    def nft_delete(self, ns, family, table):
        """Deletes one nftables table from a netns of this run; a missing table is not an error."""
        run(["ip", "netns", "exec", self.ns(ns), "nft", "delete", "table", family, table], check=False)

    def _build_pod(self, pod, node):
        ns = self.ns(pod["name"])
        self.sysctl(ns, {"net.ipv4.conf.all.accept_redirects": 0})
        self._offloads_off(ns, "eth0", dpdk_side=False)
        self.ip(ns, "addr", "add", f"{pod['ip']}/32", "dev", "eth0")
        self.ip(ns, "link", "set", "dev", "eth0", "up")
        self.ip(ns, "route", "add", node["gateway"], "dev", "eth0", "scope", "link")
        self.ip(ns, "route", "add", "default", "via", node["gateway"], "dev", "eth0")

    # ---- zwire nodes ---------------------------------------------------------------------------

    def zwire_bin(self, name="zwire"):
        if not self.build:
            raise LabError("zwire nodes need --build DIR")
        path = os.path.join(self.build, name)
        if not os.access(path, os.X_OK):
            raise LabError(f"{path} not found or not executable")
        return path

    @staticmethod
    def devargs(n, index, iface):
        """DPDK devargs for a node port: af_packet (default) or af_xdp (node field pmd = "af_xdp")."""
        pmd = n.get("pmd", "af_packet")
        if pmd == "af_xdp":
            return f"net_af_xdp{index},iface={iface},start_queue=0,queue_count=1"
        if pmd != "af_packet":
            raise LabError(f"node {n['name']}: unknown pmd {pmd}")
        workers = int(n.get("workers", 1))
        # one queue pair per worker: the kernel's fanout hash spreads flows, both directions of one on one queue
        return f"net_af_packet{index},iface={iface}" + (f",qpairs={workers}" if workers > 1 else "")

    def zwire_config(self, node):
        """The libconfig text for one zwire node (format: examples/zwire.cfg)."""
        n = self.nodes[node]
        fabric_len = ipaddress.ip_network(self.desc["fabric_cidr"]).prefixlen
        plen = ipaddress.ip_network(n["pods_cidr"]).prefixlen
        if n["kind"] == "zwire-kernel":
            # The kernel path: the netns owns the interfaces, addresses and routes; zwire names the ports.
            return "\n".join([
                f"# generated by zwlab for run {self.run_id} (zwire --backend kernel)",
                f'node = {{ name = "{node}"; }};',
                "ports = (",
                f'  {{ name = "pods"; role = "pods"; devargs = "kernel:dp-pods"; '
                f'address = "{n["gateway"]}/{plen}"; }},',
                f'  {{ name = "fabric"; role = "fabric"; devargs = "kernel:dp-fab"; '
                f'address = "{n["fabric_ip"]}/{fabric_len}"; }}',
                ");",
                f'mgmt = {{ socket = "{self.socket_path(node)}"; metrics_listen = "127.0.0.1:{METRICS_PORT}"; }};',
                f'log = {{ level = "{n.get("log_level", "info")}"; }};',
                self.mesh_config(),
                n.get("config_extra", ""),
            ]) + "\n"
        routes = [o for o in self.desc["nodes"] if o is not n and o["kind"] != "host"]
        # EAL makes the lowest listed lcore the main one unless told otherwise, so the first
        # lcore of the description is passed as --main-lcore too: "1,0" puts the worker on 0.
        main_lcore = n["lcores"].split(",")[0].split("-")[0].split("@")[0]
        # "0,1" is an -l list; "0@0,1@1,2@0" maps more lcores than CPUs (--lcores)
        lcore_opt = "--lcores" if "@" in n["lcores"] else "-l"
        eal_args = [lcore_opt, n["lcores"], "--main-lcore", main_lcore] + n.get("eal_extra", [])
        extra = ", ".join(json.dumps(a) for a in eal_args)
        lines = [
            f"# generated by zwlab for run {self.run_id}",
            f'node = {{ name = "{node}"; }};',
            "ports = (",
            f'  {{ name = "pods"; role = "pods"; devargs = "{self.devargs(n, 0, "dp-pods")}"; '
            f'address = "{n["gateway"]}/{plen}"; }},',
            f'  {{ name = "fabric"; role = "fabric"; devargs = "{self.devargs(n, 1, "dp-fab")}"; '
            f'address = "{n["fabric_ip"]}/{fabric_len}"; }}',
            ");",
            "routes = (",
            ",\n".join(f'  {{ prefix = "{o["pods_cidr"]}"; via = "{o["fabric_ip"]}"; }}' for o in routes),
            ");",
            "dataplane = {",
            f"  workers = {n['workers']};",
            f"  idle_backoff = {{ enabled = {'true' if n['idle_backoff'] else 'false'}; "
            "empty_polls = 100; sleep_us = 500; };",
            "};",
            f'eal = {{ no_huge = true; memory_mb = 256; file_prefix = "{self.file_prefix(node)}"; '
            f"extra_args = [ {extra} ]; }};",
            f'mgmt = {{ socket = "{self.socket_path(node)}"; metrics_listen = "127.0.0.1:{METRICS_PORT}"; }};',
            f'log = {{ level = "{n.get("log_level", "info")}"; }};',
            self.mesh_config(),  # the mesh groups, the same on every node ("" without desc["mesh"])
            n.get("config_extra", ""),  # more groups for this node (tcp, forwarders, ...), libconfig text
        ]
        return "\n".join(lines) + "\n"

    def mesh_config(self):
        """The libconfig text of desc["mesh"] (see the module doc), with a generated CA unless one is named."""
        mesh = self.desc.get("mesh")
        if not mesh:
            return ""
        mesh = copy.deepcopy(mesh)
        group = mesh.setdefault("mesh", {})
        certs = group.setdefault("certificates", {})
        if "ca_cert" not in certs and certs.get("source", "local_ca") == "local_ca":
            certs["ca_cert"], certs["ca_key"] = make_ca(self.run_dir, group.get("trust_domain", "cluster.local"))
        for w in mesh.get("workloads", []):
            pod = w.pop("pod", None)
            if pod is not None:
                if pod not in self.pods:
                    raise LabError(f"mesh workload {w.get('name')}: no pod {pod}")
                w.setdefault("addresses", [self.pods[pod]["ip"]])
                w.setdefault("node", self.pods[pod]["node"])
        return "\n".join(f"{k} = {libconfig_value(v)};" for k, v in mesh.items())

    def restart_zwire(self, node, timeout=STOP_TIMEOUT_S):
        """Stops a node's zwire (SIGTERM; its exit code must be 0) and starts it from a fresh config."""
        proc = self.daemons.get(node)
        if proc is not None:
            rc = self.stop_bg(proc, timeout)
            if rc != 0:
                raise LabError(f"{node}: zwire exited {rc} on SIGTERM:\n{proc.log_tail()}")
        return self.start_zwire(node)

    def start_zwire(self, node):
        """Starts zwire for a node inside its netns and waits until /healthz/ready answers 200."""
        exe = self.zwire_bin()
        cfg = os.path.join(self.run_dir, f"{node}.cfg")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(self.zwire_config(node))
        sock = self.socket_path(node)
        if len(sock) >= 100:
            raise LabError(f"socket path too long: {sock}")
        argv = [exe, "--config", cfg]
        if self.nodes[node]["kind"] == "zwire-kernel":
            argv += ["--backend", "kernel"]
        else:
            prefix = self.file_prefix(node)
            if prefix not in self.state["dpdk_prefixes"]:
                self.state["dpdk_prefixes"].append(prefix)
        proc = self.start_bg(node, argv, f"zwire-{node}")
        self.daemons[node] = proc
        self.wait_ready(node, READY_TIMEOUT_S)
        log(f"{node}: zwire ready (pid {proc.pid}, socket {sock})")
        return proc

    def wait_ready(self, node, timeout):
        proc = self.daemons[node]
        sock = self.socket_path(node)
        deadline = time.monotonic() + timeout
        last = "no socket yet"
        while time.monotonic() < deadline:
            if not proc.alive():
                raise LabError(f"{node}: zwire exited with {proc.popen.returncode} before ready:\n"
                               f"{proc.log_tail()}")
            if os.path.exists(sock):
                try:
                    status, body = self.mgmt(node, "GET", "/healthz/ready", timeout=3)
                    if status == 200:
                        return
                    last = f"/healthz/ready -> {status} {body[:200]!r}"
                except LabError as e:
                    last = str(e)
            time.sleep(0.2)
        raise LabError(f"{node}: not ready after {timeout}s ({last}):\n{proc.log_tail()}")

    def mgmt(self, node, method, path, body=None, timeout=10):
        """HTTP over the node's management socket with curl. Returns (status, body text)."""
        argv = ["curl", "-sS", "--max-time", str(timeout), "--unix-socket", self.socket_path(node),
                "-X", method, "-o", "-", "-w", "\n%{http_code}", f"http://localhost{path}"]
        if body is not None:
            argv += ["--data-binary", "@-", "-H", "Content-Type: application/json"]
        res = run(argv, timeout=timeout + 5, check=False, input_text=body)
        if res.returncode != 0:
            raise LabError(f"curl {method} {path} on {node}: {res.stderr.strip()}")
        text, _, code = res.stdout.rpartition("\n")
        return int(code), text

    def zwirectl(self, node, args, timeout=10, parse=True):
        """Runs build/zwirectl --socket SOCK --json ARGS; returns parsed JSON (or raw text)."""
        argv = [self.zwire_bin("zwirectl"), "--socket", self.socket_path(node)]
        if parse:
            argv.append("--json")
        res = run(argv + list(args), timeout=timeout, check=False)
        if res.returncode != 0:
            raise LabError(f"zwirectl {' '.join(args)} on {node} exited {res.returncode}: "
                           f"{res.stderr.strip() or res.stdout.strip()}")
        if not parse:
            return res.stdout
        try:
            return json.loads(res.stdout)
        except json.JSONDecodeError as e:
            raise LabError(f"zwirectl {' '.join(args)}: not JSON ({e}): {res.stdout[:300]!r}") from None

    # ---- running things in namespaces ---------------------------------------------------------

    def exec(self, ns, cmd, timeout=10.0, check=False, input_text=None):
        """Runs cmd (a list, or a string for sh -c) in the netns of a node or pod."""
        argv = cmd if isinstance(cmd, list) else ["sh", "-c", cmd]
        return run(["ip", "netns", "exec", self.ns(ns), *argv], timeout=timeout, check=check,
                   input_text=input_text)

    def start_bg(self, ns, cmd, name):
        """Starts a background process in a netns, logging to the run dir. Tracked by PID."""
        log_path = os.path.join(self.run_dir, f"{name}.log")
        with open(log_path, "ab") as logf:
            popen = subprocess.Popen(["ip", "netns", "exec", self.ns(ns), *cmd], stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        proc = BgProc(name, self.ns(ns), popen, log_path)
        self.procs.append(proc)
        self.state["procs"].append({"pid": proc.pid, "start": proc.start, "name": name})
        self._save_state()
        return proc

    def stop_bg(self, proc, timeout=STOP_TIMEOUT_S, sig=signal.SIGTERM):
        """Stops a process the lab started. Returns its exit code (negative: killed by a signal)."""
        if proc.alive():
            proc.popen.send_signal(sig)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        return proc.popen.returncode

    def start_http_server(self, pod, port=8080, directory=None):
        """python3 -m http.server bound to the pod's address, serving directory (a run-dir folder)."""
        directory = directory or os.path.join(self.run_dir, f"www-{pod}")
        os.makedirs(directory, exist_ok=True)
        proc = self.start_bg(pod, [PYTHON, "-m", "http.server", str(port), "--bind", self.pods[pod]["ip"],
                                   "--directory", directory], f"http-{pod}-{port}")
        self.wait_listen(pod, port, "tcp", proc=proc)
        return proc

    def wait_listen(self, ns, port, proto="tcp", timeout=10.0, proc=None):
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise LabError(f"{proc.name} exited early:\n{proc.log_tail()}")
            res = self.exec(ns, ["ss", flag, f"sport = :{port}"], check=False)
            if res.stdout.strip():
                return
            time.sleep(0.1)
        raise LabError(f"nothing listening on {proto}/{port} in {self.ns(ns)} after {timeout}s")

    def ping(self, src, dst, count=3, ttl=None, interval=0.2, wait=2, timeout=None):
        """Pings from a pod or node. Returns dict(received, ttls, output, rc)."""
        argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait)]
        if ttl is not None:
            argv += ["-t", str(ttl)]
        res = self.exec(src, argv + [dst], timeout=timeout or (count * (interval + wait) + 5))
        ttls = [int(tok[4:]) for tok in res.stdout.split() if tok.startswith("ttl=")]
        return {"received": len(ttls), "ttls": ttls, "output": res.stdout + res.stderr,
                "rc": res.returncode}

    # ---- teardown ------------------------------------------------------------------------------

    def down(self, keep_logs=False):
        """Removes everything; safe to call more than once and from handlers.

        With keep_logs and an artifact_dir, the run dir's logs and configs are copied there first.
        """
        if self._down:
            return self.teardown_problems
        self._down = True
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                old[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            for proc in self.procs:
                if proc.alive():
                    self.stop_bg(proc)
            self.teardown_problems = teardown_state(self.state,
                                                    self.artifact_dir if keep_logs else None)
            for p in self.teardown_problems:
                log(f"teardown: {p}")
            log(f"run {self.run_id}: torn down")
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            with _ACTIVE_LOCK:
                if self in _ACTIVE:
                    _ACTIVE.remove(self)
        return self.teardown_problems

    def detach(self):
        """Leaves the topology running after this process exits (zwlab.py up)."""
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        self._down = True
        self.state["persistent"] = True
        self._save_state()

    def leftovers(self):
        """What of this run still exists: netns, processes, root-ns links, dirs. Empty = clean."""
        found = []
        found += [f"netns {ns}" for ns in list_netns() if ns.startswith(self.run_id)]
        found += [f"pid {p['pid']} ({p['name']})" for p in self.state["procs"]
                  if pid_alive(p["pid"], p.get("start"))]
        res = run(["ip", "-o", "link", "show"], check=False)
        for line in res.stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(self.run_id) or name in ("dp-pods", "dp-fab", "br-pods"):
                found.append(f"root-ns link {name}")
        for prefix in self.state["dpdk_prefixes"]:
            if os.path.exists(os.path.join(DPDK_RUN_ROOT, prefix)):
                found.append(f"dir {DPDK_RUN_ROOT}/{prefix}")
        if os.path.exists(self.run_dir):
            found.append(f"dir {self.run_dir}")
        return found


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def recorded_runs():
    """State records of runs under /run/zwire, keyed by run id."""
    runs = {}
    if os.path.isdir(RUN_ROOT):
        for rid in sorted(os.listdir(RUN_ROOT)):
            path = os.path.join(RUN_ROOT, rid, "state.json")
            if is_ours(rid) and os.path.isfile(path):
                try:
                    with open(path, encoding="utf-8") as f:
                        runs[rid] = json.load(f)
                except (OSError, json.JSONDecodeError):
                    runs[rid] = {"id": rid, "run_dir": os.path.join(RUN_ROOT, rid)}
    return runs


def cmd_up(args):
    lab = Lab(load_desc(args.desc), build=args.build, kind=args.kind)
    lab.up()
    lab.detach()
    print(f"run {lab.run_id} is up (run dir {lab.run_dir})")
    for n in lab.desc["nodes"]:
        extra = f", socket {lab.socket_path(n['name'])}" if n["kind"] in ZWIRE_KINDS else ""
        print(f"  {n['name']:6} {n['kind']:6} netns {lab.ns(n['name'])}{extra}")
    for p in lab.desc["pods"]:
        print(f"  pod {p['name']:4} {p['ip']:12} netns {lab.ns(p['name'])}")
    print(f"tear down with: {sys.argv[0]} down {lab.run_id}")
    return 0


def cmd_down(args):
    runs = recorded_runs()
    ids = list(runs) if args.all or not args.ids else args.ids
    rc = 0
    for rid in ids:
        if not RUN_ID_RE.fullmatch(rid):
            print(f"{rid}: not a zwlab run id", file=sys.stderr)
            rc = 1
            continue
        state = runs.get(rid) or {"id": rid, "run_dir": os.path.join(RUN_ROOT, rid)}
        state.setdefault("netns", [ns for ns in list_netns() if ns.startswith(rid + "-")])
        for p in teardown_state(state):
            print(f"{rid}: {p}")
        print(f"{rid}: down")
    return rc


def cmd_status(_args):
    runs = recorded_runs()
    for rid, st in runs.items():
        alive = [p for p in st.get("procs", []) if pid_alive(p["pid"], p.get("start"))]
        owner = st.get("owner_pid")
        print(f"{rid}: {len(st.get('netns', []))} netns, {len(alive)} live processes, "
              f"{'persistent' if st.get('persistent') else f'owned by pid {owner}'}")
        for p in alive:
            print(f"    pid {p['pid']} {p['name']}")
    stray = [ns for ns in list_netns() if is_ours(ns)
             and ns.split("-")[0] not in runs]
    for ns in stray:
        print(f"leftover netns without a record: {ns} (remove with tests/lab/cleanup.py)")
    if not runs and not stray:
        print("no zwlab runs")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build a topology and leave it running")
    up.add_argument("desc", nargs="?", help="JSON file, or 'default' / 'bench'")
    up.add_argument("--build", default="build", help="build dir with zwire and zwirectl")
    up.add_argument("--kind", choices=ROUTER_KINDS, help="override the kind of every router node")
    down = sub.add_parser("down", help="tear runs down (all recorded runs if no id given)")
    down.add_argument("ids", nargs="*")
    down.add_argument("--all", action="store_true")
    sub.add_parser("status", help="list runs")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("zwlab: must run as root", file=sys.stderr)
        return 1
    try:
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.cmd](args)
    except LabError as e:
        print(f"zwlab: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
