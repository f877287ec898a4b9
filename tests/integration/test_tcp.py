#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The userspace TCP against Linux peers: Linux clients in pods of node1 talk through a zwire TCP
forwarder on node1 to Linux servers in pod c behind node2 (tests/lab/zwlab.py DEFAULT_DESC, plus a
WAN netns in front of pod c for the reordering case).

    pod a/b --br-pods-- [node1: forwarder 10.21.1.1:9000 terminates, dials 10.21.2.10:5201 from
    10.21.0.1] --fabric-- [node2 routes] --br-pods-- [wan-c: br-wan or a delay bridge] -- pod c

The peers are tests/integration/tcp_peers.py (plain Linux sockets, run inside the pods). Every
stream is hashed at both ends and the test compares bytes and sha256 in both directions.

Sizes (the suite must finish in about 8 minutes on 2 vCPUs):
  * clean: 1 GiB each way, both directions at once;
  * 1 % random loss: 64 MiB each way; 5 %: 8 MiB each way (Linux's 200 ms minimum RTO makes a
    lossy transfer at sub-ms RTT slow whatever the relay does, LAB.md §9);
  * reordering through the userspace delay bridge: 32 MiB each way (the bridge is Python).
Loss is an nftables bridge-family rule on node1's br-pods (frames between pod a and zwire, both
directions: the receiving side of each hop sees real wire loss), LAB.md §4b/§9.

After every scenario the connection table (without TIME-WAIT, shortened to 1 s here), armed timers
and buffer mbufs must return to what they were when the scenario started.
"""

import json
import os
import sys
import time

from harness import case, check, main
import zwlab

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "tcp_peers.py")
PY = zwlab.PYTHON

FWD_IP = "10.21.1.1"
FWD_PORT = 9000          # -> pod c 5201, no keepalive
KA_PORT = 9001           # -> pod c 5201, keepalive 2 s / 1 s x 3
MANY_PORT = 9002         # -> pod c 5202 (asyncio echo server)
SRV_PORT = 5201
MANY_SRV_PORT = 5202
KEEPALIVE_S = 2

MiB = 1 << 20
GiB = 1 << 30
CLEAN_BYTES = 1 * GiB
LOSS1_BYTES = 64 * MiB
LOSS5_BYTES = 8 * MiB
REORDER_BYTES = 32 * MiB
MANY_CONNS = 10000
MANY_BYTES = 1024
QUIET_TIMEOUT_S = 30.0

NODE1_EXTRA = f"""tcp = {{ time_wait_ms = 1000; syn_backlog = 64; max_conns = 24576; }};  # 10,000 pairs = 20,000 blocks
forwarders = (
  {{ listen = "{FWD_IP}:{FWD_PORT}"; target = "10.21.2.10:{SRV_PORT}"; }},
  {{ listen = "{FWD_IP}:{KA_PORT}"; target = "10.21.2.10:{SRV_PORT}"; keepalive_s = {KEEPALIVE_S};
     keepalive_intvl_s = 1; keepalive_probes = 3; }},
  {{ listen = "{FWD_IP}:{MANY_PORT}"; target = "10.21.2.10:{MANY_SRV_PORT}"; }}
);
"""


# --------------------------------------------------------------------------------------------
# zwire state
# --------------------------------------------------------------------------------------------

def zstats(lab):
    return lab.zwirectl("node1", ["stats"])


def ctr(stats, name):
    return stats["counters"][name]


def fwd(stats, name):
    return stats["forwarders"][name]


def tcp_snapshot(lab):
    """What must not leak: connections except TIME-WAIT, armed timers, buffer mbufs (all lcores)."""
    t = lab.zwirectl("node1", ["tcp"])["tcp"]
    tw = t["states"].get("TIME_WAIT", 0)
    lc = t["lcores"]
    return {"conns": sum(x["conns_in_use"] for x in lc) - tw,
            "timers": sum(x["timers_armed"] for x in lc),
            "mbufs": sum(x["buffer_mbufs_in_use"] for x in lc),
            "time_wait": tw,
            "states": {k: v for k, v in t["states"].items() if v}}


def settled(lab, timeout=QUIET_TIMEOUT_S, want=None):
    """Polls until no TIME-WAIT is left and (given want) conns/timers/mbufs equal want; returns the
    last snapshot either way."""
    deadline = time.monotonic() + timeout
    snap = tcp_snapshot(lab)
    while time.monotonic() < deadline:
        keys = ("conns", "timers", "mbufs")
        if snap["time_wait"] == 0 and (want is None or all(snap[k] == want[k] for k in keys)):
            return snap
        time.sleep(0.25)
        snap = tcp_snapshot(lab)
    return snap


def check_no_leak(lab, before, what):
    after = settled(lab, want=before)
    diff = {k: (before[k], after[k]) for k in ("conns", "timers", "mbufs") if before[k] != after[k]}
    check(not diff and after["time_wait"] == 0,
          f"{what}: after {QUIET_TIMEOUT_S:.0f}s the TCP state did not return to the start "
          f"(start -> now) {diff}; states now {after['states']}")


def counter_delta(before, after, names):
    return {n: ctr(after, n) - ctr(before, n) for n in names if ctr(after, n) != ctr(before, n)}


TCP_EVIDENCE = ("tcp_retransmit", "tcp_rto", "tcp_fast_retransmit", "tcp_sack_recovery", "tcp_dup_ack",
                "tcp_ooo_segments", "tcp_ooo_dropped", "tcp_out_of_window", "tcp_zero_window_probe",
                "tcp_keepalive_timeout", "tcp_rtx_timeout", "tcp_rst_in", "tcp_rst_out",
                "tcp_buffer_alloc_failed", "tcp_paws_rejected", "tcp_ack_invalid", "tcp_challenge_ack")


def evidence(lab, s0):
    """Counters and forwarder stats since s0, and the current TCP state, for failure messages."""
    s1 = zstats(lab)
    return (f"\n    zwire counters since start: {counter_delta(s0, s1, TCP_EVIDENCE)}"
            f"\n    forwarders: {s1['forwarders']}\n    tcp now: {tcp_snapshot(lab)}")


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------

def results_path(lab):
    return os.path.join(lab.run_dir, "tcp-server-results.jsonl")


def ensure_servers(lab, ctx):
    """Starts the Linux servers in pod c once per lab and warms ARP on every hop."""
    if ctx.scratch.get("servers"):
        return
    ip_c = lab.pods["c"]["ip"]
    lab.exec("c", ["sysctl", "-qw", "net.core.somaxconn=16384", "net.ipv4.tcp_max_syn_backlog=16384"],
             check=True)
    srv = lab.start_bg("c", [PY, PEERS, "server", "--bind", ip_c, "--port", str(SRV_PORT),
                             "--results", results_path(lab)], "tcp-server")
    lab.wait_listen("c", SRV_PORT, proc=srv)
    many = lab.start_bg("c", [PY, PEERS, "many-server", "--bind", ip_c, "--port", str(MANY_SRV_PORT),
                              "--stats", os.path.join(lab.run_dir, "many-server.json")], "many-server")
    lab.wait_listen("c", MANY_SRV_PORT, proc=many)
    for pod in ("a", "b"):
        for _ in range(5):
            if lab.ping(pod, FWD_IP, count=1, wait=1)["received"]:
                break
    for _ in range(5):
        if lab.ping("a", ip_c, count=1, wait=1)["received"]:
            break
    else:
        raise AssertionError("pod a cannot reach pod c")
    ctx.scratch["servers"] = True
    ctx.scratch["seq"] = 0


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_client(lab, ctx, mode, pod="a", port=FWD_PORT, send=0, expect_send=0, timeout=60.0, **extra):
    """One tcp_peers client in a pod; returns (its JSON result, the id it used)."""
    ctx.scratch["seq"] += 1
    cid = f"{mode}-{ctx.scratch['seq']}"
    argv = [PY, PEERS, "client", "--connect", FWD_IP, "--port", str(port), "--mode", mode, "--id", cid,
            "--send", str(send), "--expect-send", str(expect_send), "--timeout", str(timeout)]
    for k, v in extra.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    res = lab.exec(pod, argv, timeout=timeout + 30)
    out = last_json(res.stdout)
    check(out is not None, f"client {cid} printed no result (exit {res.returncode}):\n"
                           f"{res.stdout[-1500:]}{res.stderr[-1500:]}")
    return out, cid


def server_record(lab, cid, timeout=15.0):
    """The server's JSON line for connection cid, waiting for it up to timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(results_path(lab), encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("id") == cid:
                        return rec
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def check_transfer(cli, srv, up, down, what):
    """Client->server `up` bytes and server->client `down` bytes arrived whole, same sha256."""
    check(srv is not None, f"{what}: the server recorded nothing; client said {cli}")
    check("error" not in cli and "error" not in srv, f"{what}: client {cli}\n    server {srv}")
    check(cli.get("sent_bytes") == up and srv.get("recv_bytes") == up,
          f"{what}: client->server: sent {cli.get('sent_bytes')}, server got {srv.get('recv_bytes')}, "
          f"want {up} (client {cli.get('sent_err')}, server {srv.get('recv_err')})")
    check(cli["sent_sha"] == srv["recv_sha"], f"{what}: client->server sha256 differs")
    check(srv.get("sent_bytes") == down and cli.get("recv_bytes") == down,
          f"{what}: server->client: sent {srv.get('sent_bytes')}, client got {cli.get('recv_bytes')}, "
          f"want {down} (server {srv.get('sent_err')}, client {cli.get('recv_err')})")
    check(srv["sent_sha"] == cli["recv_sha"], f"{what}: server->client sha256 differs")


def bulk_both_ways(lab, ctx, nbytes, timeout, what):
    """nbytes each way at once through the forwarder; returns the seconds it took."""
    s0 = zstats(lab)
    t0 = time.monotonic()
    cli, cid = run_client(lab, ctx, "bulk", send=nbytes, expect_send=nbytes, timeout=timeout)
    secs = time.monotonic() - t0
    srv = server_record(lab, cid)
    try:
        check_transfer(cli, srv, nbytes, nbytes, what)
    except AssertionError as e:
        raise AssertionError(f"{e}{evidence(lab, s0)}") from None
    s1 = zstats(lab)
    check(fwd(s1, "completed") - fwd(s0, "completed") == 1,
          f"{what}: forwarder completed {fwd(s0, 'completed')} -> {fwd(s1, 'completed')}, want +1")
    mbit = nbytes * 8 / secs / 1e6
    print(f"    {what}: {nbytes / MiB:.0f} MiB each way in {secs:.1f}s ({mbit:.0f} Mbit/s each way); "
          f"zwire {counter_delta(s0, s1, TCP_EVIDENCE)}", flush=True)
    return secs


def tcp_case(timeout=120):
    """A scenario: settles and snapshots the TCP state first, and checks for leaks after."""
    def wrap(fn):
        def run(lab, ctx):
            ensure_servers(lab, ctx)
            before = settled(lab)
            ctx.scratch.setdefault("lab_start", before)
            fn(lab, ctx)
            check_no_leak(lab, before, fn.__name__)
        run.__name__ = fn.__name__
        return case(run, timeout=timeout)
    return wrap


def loss_rules(pct):
    """Random loss on node1's br-pods between pod a (v-a) and zwire (up), both directions."""
    return f"""table bridge zwtcp_loss {{
  chain chaos {{
    type filter hook forward priority 0; policy accept;
    iifname "up" oifname "v-a" numgen random mod 100 < {pct} counter drop
    iifname "v-a" oifname "up" numgen random mod 100 < {pct} counter drop
  }}
}}
"""


def nft_counters(lab, ns, family, table):
    res = lab.exec(ns, ["nft", "list", "table", family, table])
    return [int(tok.split()[0]) for tok in res.stdout.split("counter packets ")[1:]]


def tcpdump_start(lab, pod, filt, name, count):
    """tcpdump -v on a pod's eth0 in the background; returns once it is capturing."""
    proc = lab.start_bg(pod, ["tcpdump", "-i", "eth0", "-nn", "-v", "-l", "-c", str(count), filt], name)
    deadline = time.monotonic() + 10
    while "listening on" not in proc.log_tail(5):
        check(proc.alive(), f"tcpdump exited:\n{proc.log_tail()}")
        check(time.monotonic() < deadline, f"tcpdump did not start:\n{proc.log_tail()}")
        time.sleep(0.1)
    return proc


def syn_lines(text):
    """(header line, options) of each TCP SYN/SYN-ACK in tcpdump -v output (second line of each packet)."""
    out = []
    for line in text.splitlines():
        if "Flags [S" in line and "options [" in line:
            opts = line.split("options [", 1)[1].split("]", 1)[0]
            out.append((line.strip(), opts))
    return out


def parse_opts(opts):
    """'mss 1460,sackOK,TS val 1 ecr 2,nop,wscale 7' -> {'mss': 1460, 'sackOK': True, 'ts': (1, 2), 'wscale': 7}."""
    d = {}
    for item in opts.split(","):
        w = item.split()
        if not w:
            continue
        if w[0] == "mss":
            d["mss"] = int(w[1])
        elif w[0] == "wscale":
            d["wscale"] = int(w[1])
        elif w[0] == "sackOK":
            d["sackOK"] = True
        elif w[0] == "TS":
            d["ts"] = (int(w[2]), int(w[4]))
    return d


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

@tcp_case(timeout=60)
def options_negotiated_in_handshakes(lab, ctx):
    """zwire's SYN-ACK to the Linux client and its own SYN to the Linux server carry MSS, window
    scale, SACK-permitted and timestamps, with correct checksums."""
    cap_a = tcpdump_start(lab, "a", f"tcp port {FWD_PORT} and tcp[tcpflags] & tcp-syn != 0", "tcpdump-syn-a", 2)
    cap_c = tcpdump_start(lab, "c", f"tcp port {SRV_PORT} and tcp[tcpflags] & tcp-syn != 0", "tcpdump-syn-c", 2)
    cli, cid = run_client(lab, ctx, "bulk", send=65536, expect_send=65536, timeout=20)
    check_transfer(cli, server_record(lab, cid), 65536, 65536, "handshake connection")
    for cap in (cap_a, cap_c):
        try:
            cap.popen.wait(10)
        except Exception:  # noqa: BLE001 - reported below with the capture
            pass
        lab.stop_bg(cap)
    text_a, text_c = cap_a.log_tail(40), cap_c.log_tail(40)
    synack = [(ln, o) for ln, o in syn_lines(text_a) if ln.startswith(f"{FWD_IP}.{FWD_PORT} >")]
    syn_cli = [(ln, o) for ln, o in syn_lines(text_a) if f"> {FWD_IP}.{FWD_PORT}:" in ln]
    check(synack and syn_cli, f"no SYN and SYN-ACK on pod a's side in the capture:\n{text_a}")
    line, opts = synack[0]
    o = parse_opts(opts)
    c = parse_opts(syn_cli[0][1])
    print(f"    SYN-ACK from zwire: {line}", flush=True)
    check("(correct)" in line, f"SYN-ACK checksum not correct: {line}")
    check(536 <= o.get("mss", 0) <= 1460, f"SYN-ACK MSS {o.get('mss')} (want 536..1460): {line}")
    check(0 < o.get("wscale", -1) <= 14, f"SYN-ACK window scale {o.get('wscale')} (want 1..14): {line}")
    check(o.get("sackOK"), f"SYN-ACK lacks sackOK: {line}")
    check("ts" in o and o["ts"][0] != 0, f"SYN-ACK lacks a timestamp: {line}")
    check(o["ts"][1] == c["ts"][0], f"SYN-ACK TS ecr {o['ts'][1]} does not echo the SYN's TS val {c['ts'][0]}")

    syn_up = [(ln, o) for ln, o in syn_lines(text_c) if ln.startswith("10.21.0.1.") and
              f"> {lab.pods['c']['ip']}.{SRV_PORT}:" in ln and "Flags [S]" in ln]
    check(syn_up, f"no SYN from zwire (10.21.0.1) in pod c's capture:\n{text_c}")
    line, opts = syn_up[0]
    o = parse_opts(opts)
    print(f"    SYN from zwire:     {line}", flush=True)
    check("(correct)" in line, f"SYN checksum not correct: {line}")
    check(536 <= o.get("mss", 0) <= 1460, f"SYN MSS {o.get('mss')}: {line}")
    check(0 < o.get("wscale", -1) <= 14, f"SYN window scale {o.get('wscale')}: {line}")
    check(o.get("sackOK") and "ts" in o, f"SYN lacks sackOK or timestamps: {line}")


@tcp_case(timeout=150)
def one_gib_both_ways_clean(lab, ctx):
    bulk_both_ways(lab, ctx, CLEAN_BYTES, timeout=110, what="1 GiB clean")


@tcp_case(timeout=60)
def half_close_client_first(lab, ctx):
    """The client shuts down writing; the server reads to EOF, then still sends 4 MiB back."""
    n = 4 * MiB
    s0 = zstats(lab)
    cli, cid = run_client(lab, ctx, "hc_client", send=n, expect_send=n, timeout=30)
    srv = server_record(lab, cid)
    try:
        check_transfer(cli, srv, n, n, "client FIN first")
    except AssertionError as e:
        raise AssertionError(f"{e}{evidence(lab, s0)}") from None


@tcp_case(timeout=60)
def half_close_server_first(lab, ctx):
    """The server sends 4 MiB and shuts down writing; the client reads to EOF, then sends 4 MiB."""
    n = 4 * MiB
    s0 = zstats(lab)
    cli, cid = run_client(lab, ctx, "hc_server", send=n, expect_send=n, timeout=30)
    srv = server_record(lab, cid)
    try:
        check_transfer(cli, srv, n, n, "server FIN first")
        check(cli.get("after") == 0, f"client saw {cli.get('after')} bytes after its FIN, want the close")
    except AssertionError as e:
        raise AssertionError(f"{e}{evidence(lab, s0)}") from None


@tcp_case(timeout=60)
def rst_from_client_reaches_server(lab, ctx):
    s0 = zstats(lab)
    cli, cid = run_client(lab, ctx, "rst_wait", send=256 * 1024, timeout=20)
    srv = server_record(lab, cid, timeout=20)
    check(srv is not None, f"server recorded nothing{evidence(lab, s0)}")
    check(srv.get("outcome") == "ECONNRESET",
          f"client RST: the server saw {srv.get('outcome')} after {srv.get('recv_bytes')} bytes, "
          f"want ECONNRESET{evidence(lab, s0)}")
    s1 = zstats(lab)
    check(ctr(s1, "tcp_rst_in") > ctr(s0, "tcp_rst_in"), "tcp_rst_in did not grow")
    check(fwd(s1, "reset") > fwd(s0, "reset"), "forwarder reset count did not grow")


@tcp_case(timeout=60)
def rst_from_server_reaches_client(lab, ctx):
    s0 = zstats(lab)
    cli, cid = run_client(lab, ctx, "rst_send", expect_send=256 * 1024, timeout=20)
    check("error" not in cli, f"client: {cli}")
    check(cli.get("outcome") == "ECONNRESET",
          f"server RST: the client saw {cli.get('outcome')} after {cli.get('recv_bytes')} bytes, "
          f"want ECONNRESET{evidence(lab, s0)}")
    s1 = zstats(lab)
    check(ctr(s1, "tcp_rst_in") > ctr(s0, "tcp_rst_in"), "tcp_rst_in did not grow")
    check(fwd(s1, "reset") > fwd(s0, "reset"), "forwarder reset count did not grow")


@tcp_case(timeout=90)
def zero_window_stalls_and_resumes(lab, ctx):
    """The server does not read for 4 s while the client sends 32 MiB: zwire must probe the zero
    window toward the server, then deliver every byte."""
    n = 32 * MiB
    s0 = zstats(lab)
    cli, cid = run_client(lab, ctx, "stall", send=n, timeout=50, stall_s=4)
    srv = server_record(lab, cid)
    try:
        check(srv is not None and "error" not in cli and "error" not in srv, f"client {cli}\n    server {srv}")
        check(cli["sent_bytes"] == n and srv["recv_bytes"] == n,
              f"sent {cli['sent_bytes']}, server got {srv['recv_bytes']}, want {n}")
        check(cli["sent_sha"] == srv["recv_sha"], "sha256 differs")
        s1 = zstats(lab)
        probes = ctr(s1, "tcp_zero_window_probe") - ctr(s0, "tcp_zero_window_probe")
        check(probes > 0, "tcp_zero_window_probe did not grow while the server stalled")
        check(srv["secs"] >= 4, f"server finished in {srv['secs']}s, it should have stalled 4 s")
    except AssertionError as e:
        raise AssertionError(f"{e}{evidence(lab, s0)}") from None
    print(f"    zero-window probes: {probes}; {counter_delta(s0, s1, TCP_EVIDENCE)}", flush=True)


@tcp_case(timeout=60)
def keepalive_closes_vanished_client(lab, ctx):
    """Forwarder 9001 has keepalive 2 s / 1 s x 3. Pod a's frames are dropped on br-pods once the
    connection is idle: zwire must time the client leg out and tear the server leg down."""
    s0 = zstats(lab)
    ctx.scratch["seq"] += 1
    cid = f"idle-{ctx.scratch['seq']}"
    cli = lab.start_bg("a", [PY, PEERS, "client", "--connect", FWD_IP, "--port", str(KA_PORT), "--mode", "idle",
                             "--id", cid, "--hold-s", "40", "--timeout", "40"], f"client-{cid}")
    try:
        deadline = time.monotonic() + 10
        while fwd(zstats(lab), "active") <= fwd(s0, "active"):
            check(cli.alive(), f"idle client exited:\n{cli.log_tail()}")
            check(time.monotonic() < deadline, "the idle connection never became active")
            time.sleep(0.1)
        time.sleep(0.3)
        # the idle pair is listed, both legs ESTABLISHED, with nothing queued
        code, body = lab.mgmt("node1", "GET", "/tcp/connections")
        check(code == 200, f"GET /tcp/connections -> {code}: {body[:300]}")
        conns = json.loads(body)
        client_leg = [c for c in conns if c["local"] == FWD_IP and c["local_port"] == KA_PORT]
        server_leg = [c for c in conns if c["remote"] == "10.21.2.10" and c["remote_port"] == SRV_PORT]
        check(any(c["state"] == "ESTABLISHED" and c["snd_queued"] == 0 and c["rcv_queued"] == 0
                  for c in client_leg), f"no idle ESTABLISHED client leg on {FWD_IP}:{KA_PORT}: {client_leg}")
        check(any(c["state"] == "ESTABLISHED" for c in server_leg),
              f"no ESTABLISHED server leg to 10.21.2.10:{SRV_PORT}: {server_leg}")
        lab.nft("node1", """table bridge zwtcp_vanish {
  chain chaos {
    type filter hook forward priority 0; policy accept;
    iifname "v-a" counter drop
    oifname "v-a" counter drop
  }
}
""")
        t0 = time.monotonic()
        srv = server_record(lab, cid, timeout=KEEPALIVE_S + 3 * 1 + 10)
        gone = time.monotonic() - t0
        check(srv is not None, f"the server leg was not torn down within {gone:.0f}s{evidence(lab, s0)}")
        check(srv.get("outcome") in ("EOF", "ECONNRESET"), f"server saw {srv}")
        s1 = zstats(lab)
        check(ctr(s1, "tcp_keepalive_probe") - ctr(s0, "tcp_keepalive_probe") >= 3,
              f"fewer than 3 keepalive probes{evidence(lab, s0)}")
        check(ctr(s1, "tcp_keepalive_timeout") > ctr(s0, "tcp_keepalive_timeout"),
              f"tcp_keepalive_timeout did not grow{evidence(lab, s0)}")
        check(fwd(s1, "active") == fwd(s0, "active"), f"forwarder still has {fwd(s1, 'active')} active")
        print(f"    server leg closed ({srv['outcome']}) {gone:.1f}s after the client vanished", flush=True)
    finally:
        lab.nft_delete("node1", "bridge", "zwtcp_vanish")
        lab.stop_bg(cli)


@tcp_case(timeout=90)
def syn_flood_legit_clients_complete(lab, ctx):
    """Pod b floods the forwarder with SYNs it never completes (zwire's SYN-ACKs are dropped on pod
    b's input) while pod a's connections must still complete: the backlog (64) overflows into SYN
    cookies, and cookie connections carry data."""
    s0 = zstats(lab)
    lab.nft("b", f"""table inet zwtcp_flood {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {FWD_IP} tcp sport {FWD_PORT} counter drop
  }}
}}
""")
    flood = lab.start_bg("b", [PY, PEERS, "syn-flood", "--src", lab.pods["b"]["ip"], "--dst", FWD_IP,
                               "--port", str(FWD_PORT), "--secs", "8", "--pps", "20000"], "syn-flood")
    try:
        time.sleep(1.0)
        done = 0
        failures = []
        while flood.alive() and done < 20:
            n = 256 * 1024
            cli, cid = run_client(lab, ctx, "bulk", send=n, expect_send=n, timeout=20)
            try:
                check_transfer(cli, server_record(lab, cid), n, n, f"legit connection {done + 1}")
            except AssertionError as e:
                failures.append(str(e))
            done += 1
        try:
            flood.popen.wait(15)
        except Exception:  # noqa: BLE001 - stop_bg below
            pass
        lab.stop_bg(flood)
        s1 = zstats(lab)
        print(f"    flood: {last_json(flood.log_tail(3))}; legit connections {done}, failed {len(failures)}; "
              f"{counter_delta(s0, s1, ('tcp_syn_backlog_full', 'tcp_syncookie_sent', 'tcp_syncookie_ok', 'tcp_syncookie_bad', 'tcp_conn_pool_empty'))}",
              flush=True)
        check(done > 0, "the flood ended before any legit connection ran")
        check(not failures, f"{len(failures)}/{done} legit connections failed:\n    " + "\n    ".join(failures[:3]))
        check(ctr(s1, "tcp_syncookie_sent") > ctr(s0, "tcp_syncookie_sent"), "no SYN cookie was sent")
        check(ctr(s1, "tcp_syncookie_ok") > ctr(s0, "tcp_syncookie_ok"),
              "no connection completed from a SYN cookie (legit clients got through without cookies?)")
    finally:
        lab.stop_bg(flood)
        # Let zwire's retransmitted SYN-ACKs reach pod b again: its kernel resets them, so the
        # half-open entries go now instead of after 7 retries.
        lab.nft_delete("b", "inet", "zwtcp_flood")


@tcp_case(timeout=200)
def ten_thousand_concurrent_connections(lab, ctx):
    """Pod a opens 10,000 connections through forwarder 9002 and holds them all open, then each
    sends 1 KiB, shuts down writing and reads the echo from pod c to EOF."""
    s0 = zstats(lab)
    stats_path = os.path.join(lab.run_dir, "many-server.json")
    with open(stats_path, encoding="utf-8") as f:
        m0 = json.load(f)
    cli = lab.start_bg("a", [PY, PEERS, "many-client", "--connect", FWD_IP, "--port", str(MANY_PORT),
                             "--conns", str(MANY_CONNS), "--bytes", str(MANY_BYTES), "--parallel", "200",
                             "--hold-s", "2"], "many-client")
    max_active = 0
    deadline = time.monotonic() + 170
    try:
        while cli.alive() and time.monotonic() < deadline:
            max_active = max(max_active, fwd(zstats(lab), "active"))
            time.sleep(0.3)
        check(not cli.alive(), f"the client did not finish in time:\n{cli.log_tail(5)}{evidence(lab, s0)}")
    finally:
        lab.stop_bg(cli)
    out = last_json(cli.log_tail(5))
    check(out is not None and "completed" in out, f"client printed no result:\n{cli.log_tail()}")
    time.sleep(1.0)  # the server's stats file is rewritten every 0.5 s
    with open(stats_path, encoding="utf-8") as f:
        m1 = json.load(f)
    deadline = time.monotonic() + 20
    while fwd(zstats(lab), "active") != fwd(s0, "active") and time.monotonic() < deadline:
        time.sleep(0.25)
    s1 = zstats(lab)
    print(f"    client: {out}; server peak open {m1['peak']}; zwire max active seen {max_active}; "
          f"forwarder {s1['forwarders']}", flush=True)
    ev = evidence(lab, s0)
    check(out["opened"] == MANY_CONNS, f"opened {out['opened']}/{MANY_CONNS}: {out['failures']}{ev}")
    check(out["completed"] == MANY_CONNS and not out["failures"],
          f"completed {out['completed']}/{MANY_CONNS}, failures {out['failures']}{ev}")
    check(out["bytes_checked"] == MANY_CONNS * MANY_BYTES, f"echoed bytes {out['bytes_checked']}")
    check(m1["peak"] >= MANY_CONNS, f"the server never had all {MANY_CONNS} open at once (peak {m1['peak']})")
    check(m1["done"] - m0["done"] == MANY_CONNS and m1["bytes"] - m0["bytes"] == MANY_CONNS * MANY_BYTES,
          f"server finished {m1['done'] - m0['done']} connections, {m1['bytes'] - m0['bytes']} bytes")
    check(max_active >= MANY_CONNS, f"zwire's forwarder never showed {MANY_CONNS} active (max seen {max_active})")
    check(fwd(s1, "completed") - fwd(s0, "completed") == MANY_CONNS,
          f"forwarder completed grew by {fwd(s1, 'completed') - fwd(s0, 'completed')}, want {MANY_CONNS}{ev}")
    check(fwd(s1, "active") == fwd(s0, "active"), f"forwarder active {fwd(s1, 'active')}, want {fwd(s0, 'active')}")


def lossy(lab, ctx, pct, nbytes, timeout):
    lab.nft("node1", loss_rules(pct))
    try:
        bulk_both_ways(lab, ctx, nbytes, timeout=timeout, what=f"{pct}% loss")
        drops = nft_counters(lab, "node1", "bridge", "zwtcp_loss")
        check(sum(drops) > 0, "the loss rules dropped nothing")
        print(f"    frames dropped (to pod a, from pod a): {drops}", flush=True)
    finally:
        lab.nft_delete("node1", "bridge", "zwtcp_loss")


@tcp_case(timeout=110)
def one_percent_loss_both_ways(lab, ctx):
    lossy(lab, ctx, 1, LOSS1_BYTES, timeout=60)


@tcp_case(timeout=110)
def five_percent_loss_both_ways(lab, ctx):
    lossy(lab, ctx, 5, LOSS5_BYTES, timeout=60)


@tcp_case(timeout=130)
def reordering_both_ways(lab, ctx):
    """Pod c's WAN netns swaps br-wan for the delay bridge: 2 ms +- 1.5 ms per frame reorders
    frames in both directions of the forwarder's upstream leg."""
    s0 = zstats(lab)
    lab.wan_detach("c")
    bridge = lab.start_bg("wan-c", [PY, PEERS, "netem", "w-pod", "w-node", "--delay-ms", "2",
                                    "--jitter-ms", "1.5", "--secs", "120"], "netem-c")
    try:
        time.sleep(0.5)
        check(bridge.alive(), f"delay bridge exited:\n{bridge.log_tail()}")
        bulk_both_ways(lab, ctx, REORDER_BYTES, timeout=80, what="reordering")
        s1 = zstats(lab)
        check(ctr(s1, "tcp_ooo_segments") > ctr(s0, "tcp_ooo_segments"),
              "zwire saw no out-of-order segment: the bridge did not reorder")
    finally:
        lab.stop_bg(bridge)
        lab.wan_attach("c")
    print(f"    bridge: {last_json(bridge.log_tail(3))}", flush=True)


@case(timeout=60)
def tcp_state_back_to_lab_start(lab, ctx):
    """After all scenarios: connections, timers and buffers are what they were before the first."""
    start = ctx.scratch.get("lab_start")
    check(start is not None, "no scenario ran")
    check_no_leak(lab, start, "whole suite")


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    check(lab is not None, "no lab")
    found = lab.leftovers()
    check(not found, "left behind: " + ", ".join(found))


def make_lab(ctx):
    desc = json.loads(json.dumps(zwlab.DEFAULT_DESC))
    desc["nodes"][0]["config_extra"] = NODE1_EXTRA
    for p in desc["pods"]:
        if p["name"] == "c":
            p["wan"] = True
    return zwlab.Lab(desc, build=ctx.build, kind="zwire")


if __name__ == "__main__":
    sys.exit(main(make_lab, "tcp (Linux peers through a zwire forwarder)"))
