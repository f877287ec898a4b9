#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""End to end on the kernel path: two zwire nodes (--backend kernel) carry pod traffic as HBONE (mTLS + HTTP/2
CONNECT on port 15008) between them.

  pod a 10.21.1.10, pod b 10.21.1.11 -- node1 (zwire) == fabric (dp-fab) == node2 (zwire) -- pod c 10.21.2.10

Both nodes read the same mesh file (tests only: three HBONE workloads and a CA made here with openssl), so each
issues its local pods' certificates from one root. curl from a to c must come back intact, the fabric capture must
hold nothing but TLS records on port 15008 (no plaintext HTTP), both access logs must name the two SPIFFE
identities, and the destination's istio_tcp_* metrics must show a mutual-TLS connection from a's principal.
"""

import json
import os
import struct
import sys
import time

import checks
from harness import case, check, main
import zwlab

NODES = ("node1", "node2")
TD = "cluster.local"


def sa_id(pod):
    return f"spiffe://{TD}/ns/default/sa/sa-{pod}"


def write_mesh_text(lab):
    """The mesh sections both nodes carry (a CA made here with openssl, three HBONE workloads)."""
    ca_key, ca_pem = os.path.join(lab.run_dir, "ca.key"), os.path.join(lab.run_dir, "ca.pem")
    zwlab.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
               "-keyout", ca_key, "-out", ca_pem, "-days", "1", "-subj", f"/O={TD}",
               "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    wl = ",\n".join(f'  {{ uid = "{p}"; name = "{p}"; namespace = "default"; service_account = "sa-{p}"; '
                    f'node = "{lab.pods[p]["node"]}"; addresses = [ "{lab.pods[p]["ip"]}" ]; protocol = "HBONE"; }}'
                    for p in lab.pods)
    return (f'mesh = {{ trust_domain = "{TD}"; certificates = {{ ca_cert = "{ca_pem}"; ca_key = "{ca_key}"; }}; }};\n'
            f"workloads = (\n{wl}\n);\n")


def node_config(lab, node, mesh_text):
    n = lab.nodes[node]
    fabric_len = lab.desc["fabric_cidr"].split("/")[1]
    plen = n["pods_cidr"].split("/")[1]
    return "\n".join([
        f'node = {{ name = "{node}"; }};',
        "ports = (",
        f'  {{ name = "pods"; role = "pods"; devargs = "kernel:dp-pods"; address = "{n["gateway"]}/{plen}"; }},',
        f'  {{ name = "fabric"; role = "fabric"; devargs = "kernel:dp-fab"; '
        f'address = "{n["fabric_ip"]}/{fabric_len}"; }}',
        ");",
        f'mgmt = {{ socket = "{lab.socket_path(node)}"; }};',
        'log = { level = "info"; };',
        mesh_text,
    ]) + "\n"


def start_node(lab, node, mesh_text):
    cfg = os.path.join(lab.run_dir, f"{node}-kernel.cfg")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write(node_config(lab, node, mesh_text))
    # the lab's pod bridge sits in the node netns: bridged frames must not meet the nat hook (appliance/redirect.h)
    lab.sysctl(lab.ns(node), {"net.bridge.bridge-nf-call-iptables": 0})
    proc = lab.start_bg(node, [lab.zwire_bin(), "--config", cfg, "--backend", "kernel"],
                        f"zwire-{node}")
    lab.daemons[node] = proc
    lab.wait_ready(node, zwlab.READY_TIMEOUT_S)
    return proc


def log_lines(lab, node, word):
    return [line for line in lab.daemons[node].log_tail(2000).splitlines() if word in line]


# ---- pcap: the fabric capture ------------------------------------------------------------------


def read_pcap(path):
    """Yields (src, sport, dst, dport, seq, payload) for each IPv4/TCP frame of an Ethernet pcap."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise AssertionError(f"capture link type {linktype}, want Ethernet")
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
        if ip[9] != 6:
            continue
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        yield (".".join(map(str, ip[12:16])), sport, ".".join(map(str, ip[16:20])), dport, seq, tcp[doff:])


def tls_records(stream):
    """Splits a byte stream into TLS records; raises when it is not TLS. Returns the record types."""
    types, i = [], 0
    while i < len(stream):
        if len(stream) - i < 5:
            raise AssertionError(f"{len(stream) - i} trailing bytes are not a TLS record header")
        ctype, major, _minor, length = stream[i], stream[i + 1], stream[i + 2], struct.unpack(
            "!H", stream[i + 3:i + 5])[0]
        if ctype not in (20, 21, 22, 23) or major != 3:
            raise AssertionError(f"bytes at offset {i} are not a TLS record: {stream[i:i + 16].hex()}")
        types.append(ctype)
        i += 5 + length
    return types


def flows(pcap):
    """Payload per direction, in sequence order (duplicates from retransmission removed)."""
    segs = {}
    for src, sport, dst, dport, seq, payload in read_pcap(pcap):
        if payload:
            segs.setdefault((src, sport, dst, dport), {})[seq] = payload
    return {k: b"".join(v[s] for s in sorted(v)) for k, v in segs.items()}


# ---- cases -------------------------------------------------------------------------------------


@case
def both_nodes_start_with_the_mesh(lab, ctx):
    mesh_text = write_mesh_text(lab)
    for node in NODES:
        start_node(lab, node, mesh_text)
    for node in NODES:
        status, body = lab.mgmt(node, "GET", "/config_dump")
        check(status == 200, f"{node} /config_dump -> {status}")
        dump = json.loads(body)
        ids = sorted(w["identity"] for w in dump["workloads"])
        check(ids == sorted(sa_id(p) for p in lab.pods), f"{node} workloads: {ids}")
        check(dump["node"]["mode"] == "mesh", f"{node}: {dump['node']}")
    ctx.scratch["mesh_text"] = mesh_text


@case
def curl_a_to_c_is_hbone_and_only_tls_on_the_fabric(lab, ctx):
    checks.ensure_http_server(lab, ctx, "c")
    pcap = os.path.join(lab.run_dir, "fabric.pcap")
    dump = lab.start_bg("node1", ["tcpdump", "-i", "dp-fab", "-nn", "-U", "-s", "0", "-w", pcap, "tcp"],
                        "tcpdump-fabric")
    deadline = time.monotonic() + 10
    while "listening on" not in dump.log_tail() and time.monotonic() < deadline:
        time.sleep(0.1)
    check("listening on" in dump.log_tail(), f"tcpdump did not start:\n{dump.log_tail()}")
    checks.http_fetch(lab, ctx, "a", "c")
    time.sleep(1.5)  # tcpdump reads its ring in blocks: let the last one reach the file before SIGTERM
    lab.stop_bg(dump)

    a_ip, c_ip = lab.pods["a"]["ip"], lab.pods["c"]["ip"]
    streams = flows(pcap)
    check(streams, "nothing captured on the fabric")
    ports = {(k[1], k[3]) for k in streams}
    check(all(15008 in p for p in ports), f"TCP on the fabric other than port 15008: {sorted(ports)}")
    check(all(k[0] in (a_ip, c_ip) and k[2] in (a_ip, c_ip) for k in streams),
          f"tunnel endpoints {sorted(streams)}, want {a_ip} <-> {c_ip}:15008 (in-pod source address)")
    total_app = 0
    for key, data in streams.items():
        check(b"GET /" not in data and b"HTTP/1" not in data, f"plaintext HTTP on the fabric in {key}")
        types = tls_records(data)
        check(types[0] == 22, f"{key}: first record type {types[0]}, want a handshake")
        total_app += len(data) if 23 in types else 0
    check(total_app > checks.HTTP_SIZE, f"only {total_app} bytes of TLS application data for a "
                                        f"{checks.HTTP_SIZE}-byte body")

    out = log_lines(lab, "node1", "access: outbound")
    check(any(f"src.identity={sa_id('a')}" in x and f"dst.identity={sa_id('c')}" in x and "reason=-" in x
              for x in out), "node1 access log:\n" + "\n".join(out))
    inn = log_lines(lab, "node2", "access: inbound")
    check(any(f"src.identity={sa_id('a')}" in x and f"dst.addr={c_ip}:{checks.HTTP_PORT}" in x for x in inn),
          "node2 access log:\n" + "\n".join(inn))
    status, body = lab.mgmt("node2", "GET", "/metrics")
    check(status == 200, f"/metrics -> {status}")
    opened = [x for x in body.splitlines() if x.startswith("istio_tcp_connections_opened_total{")
              and 'reporter="destination"' in x and f'source_principal="{sa_id("a")}"' in x
              and 'connection_security_policy="mutual_tls"' in x]
    check(opened and int(opened[0].rsplit(" ", 1)[1]) >= 1,
          "no destination series for a's principal with mutual_tls:\n" +
          "\n".join(x for x in body.splitlines() if x.startswith("istio_tcp_connections_opened_total{")))


@case
def curl_c_to_a_reverse_direction(lab, ctx):
    checks.http_fetch(lab, ctx, "c", "a")
    inn = log_lines(lab, "node1", "access: inbound")
    check(any(f"src.identity={sa_id('c')}" in x for x in inn), "node1 access log:\n" + "\n".join(inn))


@case
def curl_b_to_a_same_node_hbone(lab, ctx):
    checks.http_fetch(lab, ctx, "b", "a")
    inn = log_lines(lab, "node1", "access: inbound")
    check(any(f"src.identity={sa_id('b')}" in x and f"dst.identity={sa_id('a')}" in x for x in inn),
          "node1 access log (same-node HBONE):\n" + "\n".join(inn))


@case
def both_nodes_stop_and_remove_their_rules(lab, _ctx):
    for node in NODES:
        proc = lab.daemons[node]
        rc = lab.stop_bg(proc)
        check(rc == 0, f"{node}: zwire exited {rc}:\n{proc.log_tail()}")
        res = lab.exec(node, ["nft", "list", "tables"], check=True)
        check("zwire_" not in res.stdout, f"{node}: tables left: {res.stdout}")
        rules = lab.exec(node, ["ip", "-4", "rule", "show"], check=True).stdout
        check("0x111" not in rules, f"{node}: fwmark rule left:\n{rules}")


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    found = lab.leftovers()
    check(not found, "left behind: " + ", ".join(found))


def make_lab(ctx):
    return zwlab.Lab(zwlab.DEFAULT_DESC, build=ctx.build, kind="linux")


if __name__ == "__main__":
    sys.exit(main(make_lab, "kernel path end to end: HBONE between two zwire nodes"))
