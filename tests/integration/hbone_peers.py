#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Small peers for the HBONE interop test and the mesh benchmark, each run inside a lab netns.

  client   an HBONE client on python3-h2 (not our code): TLS 1.3, ALPN h2, no SNI, a SPIFFE client
           certificate, one HTTP/2 CONNECT; sends bytes and expects them echoed. Prints one JSON line.
  proxy    the HTTP/1.1 CONNECT backend nghttpx --http2-proxy needs (LAB.md §5a): it opens the CONNECT
           target itself, but only for addresses given with --allow; anything else gets 403.
  echo     a threaded TCP echo server.
  tcpecho  a plain TCP client: sends N random bytes, half-closes, reads the echo until EOF; prints JSON.
  hold     opens N TCP connections, checks each echoes one byte, prints "ready N", keeps them idle until
           stdin closes or --secs pass, then closes them (the benchmark's idle-tunnel memory probe).

Only /usr/bin/python3 (Debian's h2 4.1.0).
"""

import argparse
import json
import os
import select
import socket
import ssl
import sys
import threading
import time


# ---- client ------------------------------------------------------------------------------------

def cmd_client(args):
    import h2.config
    import h2.connection
    import h2.events

    out = {"connected": False, "tls": None, "alpn": None, "peer_san": [], "status": None,
           "end_stream_with_headers": None, "sent": 0, "received": 0, "echo_ok": False, "error": None}
    payload = (args.data or "").encode() or os.urandom(0)
    if args.size:
        payload = os.urandom(args.size)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False          # HBONE: no hostname check, identity is the URI SAN
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2"])
    host, port = args.connect.rsplit(":", 1)
    try:
        raw = socket.create_connection((host, int(port)), timeout=args.timeout)
        out["connected"] = True
        tls = ctx.wrap_socket(raw, server_hostname=None)  # no SNI (facts §2.1)
        out["tls"] = tls.version()
        out["alpn"] = tls.selected_alpn_protocol()
        cert = tls.getpeercert() or {}
        out["peer_san"] = [list(x) for x in cert.get("subjectAltName", ())]
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, validate_inbound_headers=False,
            header_encoding="utf-8"))
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        headers = [(":method", "CONNECT"), (":authority", args.authority),
                   ("baggage", "k8s.namespace.name=default"),
                   ("forwarded", f'for="{host}"'),
                   ("traceparent", "00-" + os.urandom(16).hex() + "-" + os.urandom(8).hex() + "-00")]
        conn.send_headers(1, headers)
        tls.sendall(conn.data_to_send())
        got = bytearray()
        stream_done = False
        deadline = time.monotonic() + args.timeout
        sent_payload = False
        while time.monotonic() < deadline:
            if out["status"] == "200" and not sent_payload:
                # send in flow-control-sized pieces
                off = 0
                while off < len(payload):
                    window = conn.local_flow_control_window(1)
                    n = min(len(payload) - off, window, conn.max_outbound_frame_size)
                    if n <= 0:
                        break
                    conn.send_data(1, payload[off:off + n])
                    off += n
                tls.sendall(conn.data_to_send())
                out["sent"] = off
                sent_payload = off == len(payload)
            if out["status"] is not None and (out["status"] != "200" or stream_done or
                                              (sent_payload and len(got) >= len(payload))):
                break
            tls.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = tls.recv(65536)
            except socket.timeout:
                break
            if not data:
                out["error"] = out["error"] or "connection closed by peer"
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
                    hd = dict(ev.headers)
                    out["status"] = hd.get(":status")
                    out["end_stream_with_headers"] = ev.stream_ended is not None
                    out["response_headers"] = hd
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == 1:
                    got += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
                    stream_done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == 1:
                    out["error"] = f"stream reset, code {ev.error_code}"
                    stream_done = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    out["error"] = f"GOAWAY code {ev.error_code}"
                    stream_done = True
            pending = conn.data_to_send()
            if pending:
                tls.sendall(pending)
        out["received"] = len(got)
        out["echo_ok"] = bool(payload) and bytes(got[:len(payload)]) == payload
        if out["status"] == "200" and not args.abrupt and not stream_done:
            # half-close our side (END_STREAM) and wait for the server's END_STREAM: a clean tunnel close
            conn.end_stream(1)
            tls.sendall(conn.data_to_send())
            end = time.monotonic() + min(5.0, args.timeout)
            while not stream_done and time.monotonic() < end:
                tls.settimeout(max(0.05, end - time.monotonic()))
                try:
                    data = tls.recv(65536)
                except socket.timeout:
                    break
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == 1:
                        stream_done = True
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                pending = conn.data_to_send()
                if pending:
                    tls.sendall(pending)
            out["server_end_stream"] = stream_done
        try:
            conn.close_connection()
            tls.sendall(conn.data_to_send())
            tls.close()
        except OSError:
            pass
    except (OSError, ssl.SSLError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    except Exception as e:  # an h2 protocol error is a result to report, not a crash
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)
    return 0


# ---- proxy (HTTP/1.1 CONNECT backend for nghttpx) -----------------------------------------------

def _pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _proxy_one(c, allow):
    try:
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 16384:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        line = head.split(b"\r\n")[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or parts[0] != "CONNECT":
            c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            print(f"proxy: refused {line!r}", flush=True)
            return
        host, _, port = parts[1].rpartition(":")
        host = host.strip("[]")
        if host not in allow:
            c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            print(f"proxy: forbidden {parts[1]}", flush=True)
            return
        try:
            up = socket.create_connection((host, int(port)), timeout=5)
        except OSError as e:
            c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            print(f"proxy: {parts[1]}: {e}", flush=True)
            return
        up.settimeout(None)
        c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        print(f"proxy: CONNECT {parts[1]}", flush=True)
        if rest:
            up.sendall(rest)
        t = threading.Thread(target=_pump, args=(up, c), daemon=True)
        t.start()
        _pump(c, up)
        t.join()
        up.close()
    finally:
        c.close()


def cmd_proxy(args):
    allow = set(args.allow)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(128)
    print(f"proxy: listening on {args.bind}:{args.port}, allowed targets {sorted(allow)}", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=_proxy_one, args=(c, allow), daemon=True).start()


# ---- echo ---------------------------------------------------------------------------------------

def _echo_one(c, close_after=0):
    """Echo to EOF; with close_after, close once that many bytes went back (the server closes first)."""
    echoed = 0
    try:
        while not close_after or echoed < close_after:
            d = c.recv(65536 if not close_after else min(65536, close_after - echoed))
            if not d:
                break
            c.sendall(d)
            echoed += len(d)
    except OSError:
        pass
    finally:
        c.close()


def cmd_echo(args):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(1024)
    print(f"echo: listening on {args.bind}:{args.port}", flush=True)
    while True:
        c, peer = srv.accept()
        if not args.quiet:
            print(f"echo: from {peer[0]}:{peer[1]}", flush=True)
        threading.Thread(target=_echo_one, args=(c, args.close_after), daemon=True).start()


# ---- hold ---------------------------------------------------------------------------------------

def cmd_hold(args):
    socks = []
    host, port = args.connect.rsplit(":", 1)
    for i in range(args.n):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"x")
        if s.recv(1) != b"x":
            print(f"error: connection {i} did not echo", flush=True)
            return 1
        socks.append(s)
    print(f"ready {len(socks)}", flush=True)
    r, _, _ = select.select([sys.stdin], [], [], args.secs)
    for s in socks:
        s.close()
    print("closed", flush=True)
    return 0


# ---- tcpecho (a plain TCP client: send, half-close, read the echo to EOF) ------------------------

def cmd_tcpecho(args):
    out = {"sent": 0, "received": 0, "echo_ok": False, "eof": False, "error": None}
    payload = os.urandom(args.size)
    host, port = args.connect.rsplit(":", 1)
    got = bytearray()
    try:
        s = socket.create_connection((host, int(port)), timeout=args.timeout)
        if args.keep_open:  # the server is to close first, after echoing everything
            t = threading.Thread(target=lambda: s.sendall(payload), daemon=True)
        else:
            t = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)), daemon=True)
        t.start()
        while True:
            d = s.recv(65536)
            if not d:
                out["eof"] = True
                break
            got += d
        t.join(args.timeout)
        out["sent"] = len(payload)
        s.close()
    except (OSError, socket.timeout) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["received"] = len(got)
    out["echo_ok"] = bytes(got) == payload
    print(json.dumps(out), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True, help="IP:PORT of the HBONE endpoint (pod IP:15008)")
    c.add_argument("--authority", required=True)
    c.add_argument("--ca", required=True)
    c.add_argument("--cert")
    c.add_argument("--key")
    c.add_argument("--data")
    c.add_argument("--size", type=int, default=0, help="send this many random bytes instead of --data")
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--abrupt", action="store_true",
                   help="after the echo, send GOAWAY and close with the stream still open")
    p = sub.add_parser("proxy")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=13128)
    p.add_argument("--allow", action="append", default=[], help="a target IP the proxy may dial")
    e = sub.add_parser("echo")
    e.add_argument("--bind", required=True)
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--quiet", action="store_true", help="do not log each peer")
    e.add_argument("--close-after", type=int, default=0, help="close each connection after echoing this many bytes")
    h = sub.add_parser("hold")
    h.add_argument("--connect", required=True)
    h.add_argument("-n", type=int, default=100)
    h.add_argument("--secs", type=float, default=60)
    t = sub.add_parser("tcpecho")
    t.add_argument("--connect", required=True)
    t.add_argument("--size", type=int, default=65536)
    t.add_argument("--timeout", type=float, default=15)
    t.add_argument("--keep-open", action="store_true", help="do not half-close; read until the server closes")
    args = ap.parse_args()
    return {"tcpecho": cmd_tcpecho, "client": cmd_client, "proxy": cmd_proxy, "echo": cmd_echo, "hold": cmd_hold}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
