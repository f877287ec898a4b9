#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""HBONE interop: zwire's port 15008 and zwire's HBONE client against stacks we did not write.

One lab, zwire on the DPDK path on one side and plain Linux on the other:

  pod a 10.21.1.10 -- node1 (zwire, DPDK) == fabric 10.21.0.0/24 == node2 (Linux router) -- pod c 10.21.2.10

Pod c is a Linux host on the far side of the fabric; nothing of ours runs there. node1's mesh config names
a (sa-a, node1) and c (sa-c, node2), a CA made by zwlab, and a namespace deny policy for sa "intruder".

Server side (zwire terminates HBONE for pod a at 10.21.1.10:15008; the clients run in pod c):
  * openssl s_client: TLS 1.3, ALPN h2, chain verifies to the mesh CA, URI SAN = a's identity;
    without a client certificate the handshake is refused (zwire's log and the failed request say so);
  * python3-h2 (facts §2.3/§2.4) with a SPIFFE client certificate from the same CA:
    200 and the bytes echoed by pod a, which sees c's own address as the source (§2.7);
    400 for an authority IP other than the tunnel's destination; 401 for sa intruder (deny policy);
    503 for a port with nothing listening; error answers are HEADERS with END_STREAM.
Client side (zwire's outbound HBONE from pod a to c:8080 goes to 10.21.2.10:15008, where nghttpx listens):
  * nghttpx --http2-proxy --verify-client with a leaf for sa-c, an HTTP/1.1 CONNECT backend (hbone_peers.py
    proxy, which may dial only 10.21.2.10): curl from a gets the file intact and nghttpx's access log has the
    CONNECT, so the bytes went through nghttpx and nghttpx accepted zwire's client certificate;
  * nghttpx with a leaf for the wrong identity (sa-wrong, same CA), then with a leaf from another CA: zwire
    refuses the server (curl fails, zwire's access log says reason=tls, nghttpx logs no CONNECT).
"""

import hashlib
import os
import re
import subprocess
import sys
import time
import json

from harness import case, check, main
import zwlab

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "hbone_peers.py")
TD = "cluster.local"
HBONE_PORT = 15008
ECHO_PORT = 7000
HTTP_PORT = 8080
ECHO_CLOSE_PORT = 7001   # an echo server in c that closes first
CLOSED_PORT = 9          # nothing listens there in pod a
PROXY_PORT = 13128       # nghttpx's HTTP/1.1 CONNECT backend, on pod c's loopback
BLOB = "blob.bin"
BLOB_SIZE = 1024 * 1024

A_IP, C_IP = "10.21.1.10", "10.21.2.10"

DESC = {
    "fabric_cidr": "10.21.0.0/24",
    "nodes": [
        {"name": "node1", "kind": "zwire", "fabric_ip": "10.21.0.1", "pods_cidr": "10.21.1.0/24",
         "pods_mode": "bridge", "lcores": "0,1"},
        {"name": "node2", "kind": "linux", "fabric_ip": "10.21.0.2", "pods_cidr": "10.21.2.0/24",
         "pods_mode": "bridge"},
    ],
    "pods": [
        {"name": "a", "node": "node1", "ip": A_IP},
        {"name": "c", "node": "node2", "ip": C_IP},
    ],
    "mesh": {
        "mesh": {"trust_domain": TD, "mtls_mode": "PERMISSIVE"},
        "workloads": [
            {"name": "a", "namespace": "default", "service_account": "sa-a", "pod": "a"},
            {"name": "c", "namespace": "default", "service_account": "sa-c", "pod": "c"},
        ],
        "policies": [
            {"name": "deny-x", "namespace": "default", "scope": "namespace", "action": "deny",
             "rules": [{"clauses": [{"matches": [{"principals": [f"{TD}/ns/default/sa/intruder"]}]}]}]},
        ],
    },
}


def spiffe(sa):
    return f"spiffe://{TD}/ns/default/sa/{sa}"


# --------------------------------------------------------------------------------------------
# PKI: leaves like Istio's (LAB.md §5c): P-256, empty subject, critical URI SAN, server+client EKU
# --------------------------------------------------------------------------------------------

def pki_dir(lab):
    d = os.path.join(lab.run_dir, "pki")
    os.makedirs(d, exist_ok=True)
    return d


def make_leaf(lab, name, sa, ca_pem=None, ca_key=None):
    """A SPIFFE leaf for sa signed by the mesh CA (or by ca_pem/ca_key). Returns (cert, key) paths."""
    d = pki_dir(lab)
    ca_pem = ca_pem or os.path.join(lab.run_dir, "ca.pem")
    ca_key = ca_key or os.path.join(lab.run_dir, "ca.key")
    key, csr, crt, ext = (os.path.join(d, f"{name}.{s}") for s in ("key", "csr", "pem", "ext"))
    if os.path.exists(crt):
        return crt, key
    with open(ext, "w", encoding="utf-8") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                "authorityKeyIdentifier=keyid\n"
                f"subjectAltName=critical,URI:{spiffe(sa)}\n")
    zwlab.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
               "-pkeyopt", "ec_param_enc:named_curve", "-out", key])
    zwlab.run(["openssl", "req", "-new", "-key", key, "-subj", "/", "-out", csr])
    zwlab.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial",
               "-days", "1", "-sha256", "-extfile", ext, "-out", crt])
    return crt, key


def other_ca(lab):
    """A second, unrelated P-256 CA (same trust domain name) for the untrusted-server case."""
    d = pki_dir(lab)
    key, pem = os.path.join(d, "other-ca.key"), os.path.join(d, "other-ca.pem")
    if not os.path.exists(pem):
        zwlab.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key])
        zwlab.run(["openssl", "req", "-x509", "-new", "-key", key, "-subj", f"/O={TD}", "-days", "1",
                   "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", pem])
    return pem, key


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

class LogMark:
    """Lines a background process logged after the mark was taken."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0

    def lines(self):
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self.offset)
                return f.read().splitlines()
        except OSError:
            return []


def zwire_log(lab):
    return lab.daemons["node1"].log_path


def access_lines(lines, direction, dst):
    return [ln for ln in lines if " access: " in ln and f" {direction} " in ln and f"dst.addr={dst}" in ln]


def wait_lines(mark, pred, timeout=5.0):
    """Waits until some line logged after mark satisfies pred; returns the matching lines (maybe [])."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [ln for ln in mark.lines() if pred(ln)]
        if hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.1)


def tail(lines, n=15):
    return "\n".join(lines[-n:])


def h2_client(lab, authority, cert=None, key=None, data=None, size=0, timeout=10):
    """Runs hbone_peers.py client in pod c against a's 15008; returns its JSON result."""
    argv = [zwlab.PYTHON, PEERS, "client", "--connect", f"{A_IP}:{HBONE_PORT}", "--authority", authority,
            "--ca", os.path.join(lab.run_dir, "ca.pem"), "--timeout", str(timeout)]
    if cert:
        argv += ["--cert", cert, "--key", key]
    if data:
        argv += ["--data", data]
    if size:
        argv += ["--size", str(size)]
    res = lab.exec("c", argv, timeout=timeout + 10)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise AssertionError(f"h2 client printed no result (exit {res.returncode}): "
                             f"{res.stdout[-500:]}{res.stderr[-1500:]}") from None


def s_client(lab, cert=None, key=None):
    """openssl s_client from pod c to a's 15008 (no SNI, ALPN h2, verify against the mesh CA)."""
    argv = ["openssl", "s_client", "-connect", f"{A_IP}:{HBONE_PORT}", "-noservername", "-alpn", "h2",
            "-CAfile", os.path.join(lab.run_dir, "ca.pem"), "-verify_return_error"]
    if cert:
        argv += ["-cert", cert, "-key", key]
    # stdin stays open for a moment so the server's reaction to our certificate (TLS 1.3: after the
    # client's Finished) can arrive before s_client quits. The server's HTTP/2 SETTINGS land on stdout
    # as raw bytes, so the output is read as bytes.
    proc = subprocess.run(["ip", "netns", "exec", lab.ns("c"), "sh", "-c", f"sleep 1 | {' '.join(argv)}"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False)
    return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout.decode("latin-1"),
                                       proc.stderr.decode("latin-1"))


def ensure_setup(lab, ctx):
    """Once per lab: certificates, the echo server in a, the HTTP server in c, warm ARP both ways."""
    if "setup" in ctx.scratch:
        return ctx.scratch["setup"]
    s = {}
    s["c_leaf"] = make_leaf(lab, "client-sa-c", "sa-c")
    s["intruder_leaf"] = make_leaf(lab, "client-intruder", "intruder")
    s["echo"] = lab.start_bg("a", [zwlab.PYTHON, PEERS, "echo", "--bind", A_IP, "--port", str(ECHO_PORT)],
                             "echo-a")
    lab.wait_listen("a", ECHO_PORT, proc=s["echo"])
    www = os.path.join(lab.run_dir, "www-c")
    os.makedirs(www, exist_ok=True)
    blob = os.urandom(BLOB_SIZE)
    with open(os.path.join(www, BLOB), "wb") as f:
        f.write(blob)
    s["blob_sha"] = hashlib.sha256(blob).hexdigest()
    lab.start_http_server("c", HTTP_PORT, www)
    for _ in range(10):
        if lab.ping("c", A_IP, count=1, wait=1)["received"]:
            break
    else:
        raise AssertionError(f"pod c cannot ping pod a ({A_IP}) through node1")
    ctx.scratch["setup"] = s
    return s


def server_san(text):
    """The URI SANs of the first PEM certificate in text (s_client prints the server's leaf)."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    if not m:
        return None
    res = zwlab.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input_text=m.group(0), check=False)
    return res.stdout


def zcase(fn):
    """A case that needs node1's zwire: restarted first if an earlier case left it dead (that case has
    already failed with the exit status), and checked to be alive after the case body ran."""
    def wrapped(lab, ctx):
        proc = lab.daemons.get("node1")
        if proc is not None and not proc.alive():
            print(f"note: zwire node1 is dead (exit {proc.popen.returncode}) after an earlier case; "
                  "restarting it for this case", flush=True)
            lab.start_zwire("node1")
        mark = LogMark(zwire_log(lab))
        error = None
        try:
            fn(lab, ctx)
        except Exception as e:  # reported below, together with zwire's fate
            error = e
        time.sleep(0.3)
        proc = lab.daemons["node1"]
        if not proc.alive():
            rc = proc.popen.returncode
            first = f"first failed check: {error}" if error else "every other check of the case passed"
            raise AssertionError(f"zwire node1 died during this case (exit {rc}{', SIGSEGV' if rc == -11 else ''}); "
                                 f"{first}\nzwire's last lines:\n" + tail(mark.lines(), 8))
        if error is not None:
            raise error
    wrapped.__name__ = fn.__name__
    return case(wrapped)


# --------------------------------------------------------------------------------------------
# Server side: zwire terminates HBONE for pod a
# --------------------------------------------------------------------------------------------

@zcase
def s_client_tls13_alpn_h2_server_identity(lab, ctx):
    s = ensure_setup(lab, ctx)
    cert, key = s["c_leaf"]
    res = s_client(lab, cert, key)
    out = res.stdout + res.stderr
    check(re.search(r"Protocol\s*:\s*TLSv1\.3", out) or "New, TLSv1.3" in out,
          f"not TLS 1.3 (s_client exit {res.returncode}):\n{out[-2500:]}")
    check("ALPN protocol: h2" in out, f"ALPN h2 not negotiated:\n{out[-2500:]}")
    check("Verify return code: 0 (ok)" in out, f"server chain does not verify to the mesh CA:\n{out[-2500:]}")
    san = server_san(out)
    check(san is not None, f"s_client printed no server certificate:\n{out[-2500:]}")
    check(f"URI:{spiffe('sa-a')}" in san, f"server URI SAN is not a's identity {spiffe('sa-a')}:\n{san}")
    check("critical" in san, f"the SAN extension is not critical:\n{san}")
    uris = re.findall(r"URI:\S+", san)
    check(len(uris) == 1, f"want exactly one URI SAN, got {uris}")


@zcase
def s_client_without_client_cert_refused(lab, ctx):
    ensure_setup(lab, ctx)
    mark = LogMark(zwire_log(lab))
    res = s_client(lab)
    out = res.stdout + res.stderr
    # TLS 1.3: the client may finish its side and only then see the alert or a bare EOF (LAB.md §5a).
    refused_client_side = ("alert certificate required" in out or "certificate required" in out
                           or res.returncode != 0 or "errno=0" in out)
    # and a request without a certificate gets no CONNECT answer at all
    r = h2_client(lab, f"{A_IP}:{ECHO_PORT}", data="no-cert", timeout=5)
    check(r["status"] is None and not r["echo_ok"],
          f"a CONNECT without a client certificate was answered: {r}")
    hits = wait_lines(mark, lambda ln: "certificate" in ln.lower() or "reason=tls" in ln)
    check(hits, "zwire logged nothing about the missing client certificate; its log since the attempt:\n"
          + tail(mark.lines()) + f"\ns_client:\n{out[-1500:]}")
    check(refused_client_side or hits, f"s_client saw a working session:\n{out[-1500:]}")
    ctx.scratch["no_cert_log"] = hits[:3]


@zcase
def h2_connect_200_bytes_echoed(lab, ctx):
    s = ensure_setup(lab, ctx)
    cert, key = s["c_leaf"]
    mark = LogMark(zwire_log(lab))
    echo_mark = LogMark(s["echo"].log_path)
    r = h2_client(lab, f"{A_IP}:{ECHO_PORT}", cert, key, size=256 * 1024, timeout=20)
    check(r["tls"] == "TLSv1.3", f"TLS version {r['tls']}: {r}")
    check(r["alpn"] == "h2", f"ALPN {r['alpn']}: {r}")
    check(["URI", spiffe("sa-a")] in r["peer_san"], f"server SAN {r['peer_san']}, want {spiffe('sa-a')}")
    check(r["status"] == "200", f"CONNECT status {r['status']}, want 200: {r}")
    check(r["echo_ok"] and r["received"] >= r["sent"] == 256 * 1024,
          f"sent {r['sent']} bytes, got {r['received']} back, echo_ok={r['echo_ok']}: {r.get('error')}")
    peers = wait_lines(echo_mark, lambda ln: ln.startswith("echo: from"))
    check(peers and peers[-1].startswith(f"echo: from {C_IP}:"),
          f"pod a's echo server saw {peers}, want the client's own address {C_IP} (facts §2.7)")
    acc = wait_lines(mark, lambda ln: " access: " in ln and " inbound " in ln
                     and f"dst.addr={A_IP}:{ECHO_PORT}" in ln)
    check(acc and "hbone_status=200" in acc[-1] and f"src.identity={spiffe('sa-c')}" in acc[-1],
          "zwire's inbound access log has no 200 line naming sa-c:\n" + tail(mark.lines()))


@zcase
def h2_connect_five_tunnels_in_a_row(lab, ctx):
    """Five clients one after the other, each a fresh TLS connection with one CONNECT, closed cleanly."""
    s = ensure_setup(lab, ctx)
    cert, key = s["c_leaf"]
    for i in range(5):
        r = h2_client(lab, f"{A_IP}:{ECHO_PORT}", cert, key, data=f"tunnel-{i}", timeout=10)
        check(r["status"] == "200" and r["echo_ok"],
              f"tunnel {i + 1}/5: status {r['status']}, echo_ok {r['echo_ok']}, error {r['error']}")


def expect_status(lab, ctx, authority, want, cert_name="c_leaf", word=None):
    s = ensure_setup(lab, ctx)
    cert, key = s[cert_name]
    mark = LogMark(zwire_log(lab))
    r = h2_client(lab, authority, cert, key, data="should-not-pass", timeout=15)
    check(r["status"] == str(want), f"CONNECT {authority}: status {r['status']}, want {want}: {r}\n"
          "zwire log:\n" + tail(mark.lines()))
    check(not r["echo_ok"] and r["received"] == 0, f"bytes came back through a {want}: {r}")
    check(r["end_stream_with_headers"], f"the {want} was not HEADERS with END_STREAM (facts §2.4): {r}")
    hits = wait_lines(mark, lambda ln: " access: " in ln and f"hbone_status={want}" in ln)
    check(hits, f"zwire's access log has no hbone_status={want} line:\n" + tail(mark.lines()))
    if word:
        check(any(word in ln for ln in hits), f"the access line does not say {word}: {hits[-1]}")
    return r, hits


@zcase
def h2_connect_400_authority_not_the_tunnel_target(lab, ctx):
    # The TCP destination is a's 10.21.1.10:15008; the authority names another IP (facts §2.4 mismatch).
    expect_status(lab, ctx, f"10.21.1.99:{ECHO_PORT}", 400)


@zcase
def h2_connect_401_denied_by_policy(lab, ctx):
    before = authz_denied(lab)
    expect_status(lab, ctx, f"{A_IP}:{ECHO_PORT}", 401, cert_name="intruder_leaf", word="intruder")
    after = authz_denied(lab)
    check(after == before + 1, f"/config_dump authz.denied went {before} -> {after}, want +1")


def authz_denied(lab):
    """authz.denied from zwire's /config_dump (appliance/mesh_node.c app_mesh_node_dump_json)."""
    try:
        status, body = lab.mgmt("node1", "GET", "/config_dump")
    except zwlab.LabError as e:
        raise AssertionError(f"could not read /config_dump: {e}") from None
    check(status == 200, f"/config_dump answered {status}")
    doc = json.loads(body)
    check(isinstance(doc.get("authz"), dict) and isinstance(doc["authz"].get("denied"), int),
          f"no authz.denied in /config_dump; top-level keys {sorted(doc)}")
    return doc["authz"]["denied"]


@zcase
def h2_connect_503_nothing_listening(lab, ctx):
    expect_status(lab, ctx, f"{A_IP}:{CLOSED_PORT}", 503)


# --------------------------------------------------------------------------------------------
# Client side: zwire's outbound HBONE against nghttpx standing in for c's node
# --------------------------------------------------------------------------------------------

def start_nghttpx(lab, ctx, cert, key, tag):
    """nghttpx on c's 10.21.2.10:15008 with the given leaf; stops a previous one first."""
    if "nghttpx" in ctx.scratch:
        stop_nghttpx_zwire_survives(lab, ctx)
    if "proxy" not in ctx.scratch:
        ctx.scratch["proxy"] = lab.start_bg("c", [zwlab.PYTHON, PEERS, "proxy", "--port", str(PROXY_PORT),
                                                  "--allow", C_IP], "connect-proxy-c")
        lab.wait_listen("c", PROXY_PORT, proc=ctx.scratch["proxy"])
    access = os.path.join(lab.run_dir, f"nghttpx-{tag}.access")
    err = os.path.join(lab.run_dir, f"nghttpx-{tag}.err")
    proc = lab.start_bg("c", ["nghttpx", "--conf=/dev/null", "-n1", "--http2-proxy", "--no-ocsp",
                              f"-f{C_IP},{HBONE_PORT}", f"-b127.0.0.1,{PROXY_PORT}",
                              "--verify-client", f"--verify-client-cacert={os.path.join(lab.run_dir, 'ca.pem')}",
                              "--tls-min-proto-version=TLSv1.3", "--log-level=INFO",
                              f"--errorlog-file={err}", f"--accesslog-file={access}", key, cert],
                        f"nghttpx-{tag}")
    lab.wait_listen("c", HBONE_PORT, proc=proc)
    ctx.scratch["nghttpx"] = proc
    return proc, access, err


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_file(path, text, timeout=5.0):
    """True once text appears in the file (nghttpx writes its access log after the stream ends)."""
    deadline = time.monotonic() + timeout
    while text not in read(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def curl_a_to_c(lab, out):
    return lab.exec("a", ["curl", "-sS", "--max-time", "15", "-o", out, "-w", "%{http_code} %{size_download}",
                          f"http://{C_IP}:{HTTP_PORT}/{BLOB}"], timeout=25)


@zcase
def zwire_client_through_nghttpx(lab, ctx):
    s = ensure_setup(lab, ctx)
    cert, key = make_leaf(lab, "nghttpx-sa-c", "sa-c")
    _, access, err = start_nghttpx(lab, ctx, cert, key, "sa-c")
    mark = LogMark(zwire_log(lab))
    out = os.path.join(lab.run_dir, "got-a-c.bin")
    pcap = os.path.join(lab.run_dir, "pod-a-8080.pcap")
    dump = lab.start_bg("a", ["tcpdump", "-i", "eth0", "-nn", "-U", "-B", "8192", "-w", pcap, f"tcp port {HTTP_PORT}"],
                        "tcpdump-a")
    time.sleep(0.5)
    res = curl_a_to_c(lab, out)
    time.sleep(1.5)  # tcpdump may lag behind a 1 MiB burst on a busy VM
    lab.stop_bg(dump)
    flags = lab.exec("a", ["tcpdump", "-r", pcap, "-nn", "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0"]).stdout
    check(res.returncode == 0, f"curl a -> c through nghttpx exited {res.returncode}: {res.stderr.strip()}\n"
          f"FIN/RST segments on pod a's eth0 (tcp port {HTTP_PORT}):\n{flags.strip()}\n"
          f"zwire:\n{tail(mark.lines())}\nnghttpx errors:\n{read(err)[-700:]}")
    code, size = res.stdout.split()
    check(code == "200" and int(size) == BLOB_SIZE, f"HTTP {code}, {size} bytes (want 200, {BLOB_SIZE})")
    with open(out, "rb") as f:
        check(hashlib.sha256(f.read()).hexdigest() == s["blob_sha"], "body differs from the served file")
    os.unlink(out)
    check(wait_file(access, f'"CONNECT {C_IP}:{HTTP_PORT} HTTP/2" 200'),
          f"nghttpx's access log has no CONNECT {C_IP}:{HTTP_PORT} with 200 (the bytes did not go through it):\n"
          f"{read(access)[-1500:]}")
    acc = wait_lines(mark, lambda ln: " access: " in ln and " outbound " in ln
                     and f"dst.addr={C_IP}:{HTTP_PORT}" in ln)
    check(acc and "hbone_status=200" in acc[-1] and f"dst.identity={spiffe('sa-c')}" in acc[-1],
          "zwire's outbound access log has no 200 line naming sa-c:\n" + tail(mark.lines()))
    stop_nghttpx_zwire_survives(lab, ctx)


def expect_refused_server(lab, ctx, cert, key, tag):
    _, access, err = start_nghttpx(lab, ctx, cert, key, tag)
    mark = LogMark(zwire_log(lab))
    out = os.path.join(lab.run_dir, f"got-{tag}.bin")
    res = curl_a_to_c(lab, out)
    got = res.stdout.split()
    check(res.returncode != 0 or (got and got[0] != "200"),
          f"curl a -> c succeeded although nghttpx presents {tag}: {res.stdout}")
    hits = wait_lines(mark, lambda ln: " access: " in ln and " outbound " in ln
                      and f"dst.addr={C_IP}:{HTTP_PORT}" in ln)
    check(hits, f"zwire logged no outbound access line for the refused tunnel:\n{tail(mark.lines())}")
    check("reason=tls" in hits[-1], f"zwire's access line does not say reason=tls: {hits[-1]}")
    check("CONNECT" not in read(access), f"nghttpx received a CONNECT anyway:\n{read(access)[-800:]}")
    return hits[-1], [ln for ln in mark.lines() if "mesh" in ln or "tls" in ln.lower()][-3:]


@zcase
def zwire_client_through_nghttpx_echo_server_closes_first(lab, ctx):
    """Pod a sends 256 KiB to an echo server in c through nghttpx; the server closes after echoing it all.

    nghttpx ends such a tunnel with END_STREAM and then RST_STREAM(NO_ERROR) (RFC 9113 section 8.1 lets a
    server stop a request that way); zwire must still deliver every echoed byte and then a FIN to the pod.
    The opposite order (the pod half-closes first) cannot be shown through nghttpx: it does not pass an
    END_STREAM on to its HTTP/1.1 CONNECT backend as a half-close, so the tunnel never ends from that side.
    """
    ensure_setup(lab, ctx)
    size = 256 * 1024
    if "echo_close_c" not in ctx.scratch:
        ctx.scratch["echo_close_c"] = lab.start_bg(
            "c", [zwlab.PYTHON, PEERS, "echo", "--bind", C_IP, "--port", str(ECHO_CLOSE_PORT),
                  "--close-after", str(size)], "echo-close-c")
        lab.wait_listen("c", ECHO_CLOSE_PORT, proc=ctx.scratch["echo_close_c"])
    cert, key = make_leaf(lab, "nghttpx-sa-c", "sa-c")
    _, access, err = start_nghttpx(lab, ctx, cert, key, "sa-c-echo")
    mark = LogMark(zwire_log(lab))
    res = lab.exec("a", [zwlab.PYTHON, PEERS, "tcpecho", "--connect", f"{C_IP}:{ECHO_CLOSE_PORT}",
                         "--size", str(size), "--keep-open"], timeout=30)
    try:
        r = json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise AssertionError(f"tcpecho printed nothing: {res.stderr[-800:]}") from None
    check(r["echo_ok"] and r["eof"] and r["error"] is None,
          f"echo through zwire -> nghttpx: {r}\nzwire:\n{tail(mark.lines())}\n"
          f"nghttpx errors:\n{read(err)[-1200:]}")
    check(wait_file(access, f'"CONNECT {C_IP}:{ECHO_CLOSE_PORT} HTTP/2" 200'),
          f"nghttpx's access log has no CONNECT {C_IP}:{ECHO_CLOSE_PORT} with 200:\n{read(access)[-800:]}")
    acc = wait_lines(mark, lambda ln: " access: " in ln and " outbound " in ln
                     and f"dst.addr={C_IP}:{ECHO_CLOSE_PORT}" in ln)
    check(acc and f"bytes_sent={size}" in acc[-1] and f"bytes_recv={size}" in acc[-1] and "reason=-" in acc[-1],
          "zwire's outbound access log does not show a clean 256 KiB each way:\n" + tail(mark.lines()))
    stop_nghttpx_zwire_survives(lab, ctx)


def stop_nghttpx_zwire_survives(lab, ctx):
    """nghttpx goes away (its HBONE connection to zwire closes); zwire must carry on."""
    proc = ctx.scratch.pop("nghttpx", None)
    if proc is not None:
        lab.stop_bg(proc)
    time.sleep(1.0)
    z = lab.daemons["node1"]
    check(z.alive(), f"zwire node1 died (exit {z.popen.returncode}) when nghttpx closed the HBONE connection")


@zcase
def zwire_client_refuses_wrong_identity(lab, ctx):
    ensure_setup(lab, ctx)
    cert, key = make_leaf(lab, "nghttpx-sa-wrong", "sa-wrong")
    ctx.scratch["wrong_identity"] = expect_refused_server(lab, ctx, cert, key, "sa-wrong")


@zcase
def zwire_client_refuses_untrusted_ca(lab, ctx):
    ensure_setup(lab, ctx)
    ca_pem, ca_key = other_ca(lab)
    cert, key = make_leaf(lab, "nghttpx-other-ca", "sa-c", ca_pem, ca_key)
    ctx.scratch["untrusted"] = expect_refused_server(lab, ctx, cert, key, "other-ca")


@case(after_teardown=True)
def teardown_leaves_nothing(lab, _ctx):
    found = lab.leftovers() if lab is not None else ["no lab"]
    check(not found, "left behind: " + ", ".join(found))


def make_lab(ctx):
    return zwlab.Lab(DESC, build=ctx.build)


if __name__ == "__main__":
    sys.exit(main(make_lab, "HBONE interop: openssl, python3-h2 and nghttpx against zwire"))
