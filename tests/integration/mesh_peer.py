#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Pod-side peers for test_mesh.py: a server that tells the client what it saw, and small clients.

  mesh_peer.py serve NAME IP TCPPORT[,TCPPORT...] [UDPPORT]
      HTTP/1.0 on each TCP port. Every answer's body starts with one line
      "pod=NAME peer=IP:PORT local=IP:PORT path=PATH", then:
        GET /pad/N   N more bytes ('x'), so tests can move a known amount of data;
        GET /hold    one '.' every 0.2 s until the client goes away (a long-lived connection).
      The UDP port (optional) answers each datagram with "udp pod=NAME peer=IP:PORT got=DATA".
      Every accepted connection is also logged on stdout as "accept peer=IP:PORT local=IP:PORT".
  mesh_peer.py udp IP PORT TEXT       one datagram, prints the answer (exit 1 on timeout)
  mesh_peer.py hold IP PORT           GET /hold; prints "open" once the first byte is in, then
                                      "closed bytes=N" or "error ... bytes=N" when the connection ends.
"""

import socket
import sys
import threading
import time


def _answer(conn, name):
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1").split()
    path = line[1] if len(line) > 1 else "/"
    peer, local = conn.getpeername(), conn.getsockname()
    head = f"pod={name} peer={peer[0]}:{peer[1]} local={local[0]}:{local[1]} path={path}\n".encode()
    if path == "/hold":
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + head)
        conn.settimeout(None)
        while True:
            time.sleep(0.2)
            conn.sendall(b".")
    pad = 0
    if path.startswith("/pad/"):
        pad = int(path[5:])
    body = head + b"x" * pad
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _serve_conn(conn, name):
    try:
        _answer(conn, name)
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def _tcp_loop(sock, name):
    while True:
        conn, peer = sock.accept()
        local = conn.getsockname()
        print(f"accept peer={peer[0]}:{peer[1]} local={local[0]}:{local[1]}", flush=True)
        threading.Thread(target=_serve_conn, args=(conn, name), daemon=True).start()


def _udp_loop(sock, name):
    while True:
        data, peer = sock.recvfrom(2048)
        text = data.decode("latin-1")
        sock.sendto(f"udp pod={name} peer={peer[0]}:{peer[1]} got={text}".encode(), peer)


def serve(name, ip, tcp_ports, udp_port=None):
    threads = []
    for port in tcp_ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(64)
        threads.append(threading.Thread(target=_tcp_loop, args=(s, name), daemon=True))
    if udp_port:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((ip, udp_port))
        threads.append(threading.Thread(target=_udp_loop, args=(u, name), daemon=True))
    for t in threads:
        t.start()
    print(f"serving {name} on {ip} tcp {tcp_ports} udp {udp_port}", flush=True)
    while True:
        time.sleep(3600)


def udp_client(ip, port, text):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    for _ in range(3):
        s.sendto(text.encode(), (ip, port))
        try:
            data, _ = s.recvfrom(2048)
            print(data.decode("latin-1"))
            return 0
        except socket.timeout:
            continue
    print("timeout", flush=True)
    return 1


def hold_client(ip, port):
    n = 0
    try:
        s = socket.create_connection((ip, port), timeout=5)
        s.sendall(b"GET /hold HTTP/1.0\r\nHost: x\r\n\r\n")
        s.settimeout(30)
        opened = False
        while True:
            d = s.recv(4096)
            if not d:
                print(f"closed bytes={n}", flush=True)
                return 0
            n += len(d)
            if not opened:
                opened = True
                print("open", flush=True)
    except OSError as e:
        print(f"error {type(e).__name__} {e} bytes={n}", flush=True)
        return 1


def main(argv):
    if argv[1] == "serve":
        ports = [int(p) for p in argv[4].split(",")]
        serve(argv[2], argv[3], ports, int(argv[5]) if len(argv) > 5 else None)
    elif argv[1] == "udp":
        return udp_client(argv[2], int(argv[3]), argv[4])
    elif argv[1] == "hold":
        return hold_client(argv[2], int(argv[3]))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
