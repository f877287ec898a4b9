#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Linux TCP peers for test_tcp.py and tests/bench/tcp_bench.py; run inside pod namespaces.

Every stream the peers send is drawn from a random pool at random offsets and hashed as it goes, so
both ends can report (bytes, sha256) of what they sent and what they received, and the test compares
the two ends. Nothing here knows about zwire: it is a plain Linux client and server.

  server --bind IP --port P --results FILE [--rcvbuf N]
      One thread per connection. The client's first line is a JSON header {"id", "mode", ...}; the
      server appends one JSON line per finished connection to FILE. Modes:
        bulk       read to EOF while sending `send` bytes, then shut down writing (both ways at once)
        hc_client  read to EOF (the client's FIN), then send `send` bytes and close
        hc_server  send `send` bytes and shut down writing first, then read to EOF
        stall      sleep `stall_s` without reading, then read to EOF
        rst_wait   read until EOF or an error; record which
        rst_send   send `send` bytes, then close with SO_LINGER 0 (an RST)
        idle       read until EOF or an error; record which and when
  client --connect IP --port P --mode M [--id ID] [--send N] [--expect-send N] [--stall-s S]
      The other end of one connection; prints one JSON line (what it sent, received, and errors).
  many-server --bind IP --port P --stats FILE
      asyncio echo server: echoes each connection until EOF, then closes; writes its peak number of
      simultaneously open connections and totals to FILE every 0.5 s.
  many-client --connect IP --port P --conns N --bytes B [--parallel K] [--hold-s S]
      asyncio: opens N connections (at most K connecting at once) and keeps them all open, holds S
      seconds, then on every one sends B bytes, shuts down writing and reads the echo to EOF.
      Prints one JSON line: opened, completed, failures by kind, bytes checked.
  rate-client --connect IP --port P [--workers W] [--bytes B] [--secs S]
      Connections per second against an echo server: W loops of open, send B, read the echo, close.
  syn-flood --src IP --dst IP --port P --secs S [--pps R]
      Raw-socket SYNs from random source ports of our own address (no SYN-ACK is ever answered:
      the caller drops them on input). Prints the number sent.
  relay --listen IP:P --target IP:P
      A Linux relay for the benchmark: one thread pair per connection, plain recv/sendall copies.
  netem IF_A IF_B [--delay-ms D] [--jitter-ms J] [--loss P]
      A userspace bridge that delays every frame by D +- J ms (reordering when J exceeds the gap
      between frames), for reordering tests; run it in the netns holding both interfaces.
"""

import argparse
import asyncio
import errno
import hashlib
import json
import os
import random
import resource
import socket
import struct
import sys
import threading
import time

POOL_SIZE = 4 << 20
CHUNK = 64 << 10
IO_TIMEOUT_S = 120.0


class Stream:
    """Bytes from a random pool at random offsets: cheap to produce, never periodic."""

    def __init__(self, seed=None):
        rnd = random.Random(seed)
        self.pool = memoryview(rnd.randbytes(POOL_SIZE + CHUNK))
        self.rnd = rnd

    def chunk(self, n):
        off = self.rnd.randrange(POOL_SIZE)
        return self.pool[off:off + n]


def send_stream(sock, total, stream=None):
    """Sends `total` stream bytes; returns (bytes sent, sha256 hex, error name or None)."""
    stream = stream or Stream()
    h = hashlib.sha256()
    sent = 0
    try:
        while sent < total:
            part = stream.chunk(min(CHUNK, total - sent))
            sock.sendall(part)
            h.update(part)
            sent += len(part)
            PROGRESS["sent"] = sent
    except OSError as e:
        return sent, h.hexdigest(), errno.errorcode.get(e.errno, str(e))
    return sent, h.hexdigest(), None


def recv_stream(sock, limit=None):
    """Reads to EOF (or an error); returns (bytes, sha256 hex, error name or None)."""
    h = hashlib.sha256()
    got = 0
    buf = bytearray(256 << 10)
    view = memoryview(buf)
    try:
        while limit is None or got < limit:
            n = sock.recv_into(view)
            if n == 0:
                break
            h.update(view[:n])
            got += n
            PROGRESS["recv"] = got
    except OSError as e:
        return got, h.hexdigest(), errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
    return got, h.hexdigest(), None


def read_header(sock):
    line = bytearray()
    while not line.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise ConnectionError("EOF inside the header")
        line += b
        if len(line) > 4096:
            raise ValueError("header too long")
    return json.loads(line)


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --------------------------------------------------------------------------------------------
# Threaded server and client
# --------------------------------------------------------------------------------------------

def serve_one(conn, peer, results, lock):
    rec = {"peer": f"{peer[0]}:{peer[1]}"}
    t0 = time.monotonic()
    try:
        conn.settimeout(IO_TIMEOUT_S)
        hdr = read_header(conn)
        rec.update(id=hdr.get("id"), mode=hdr["mode"])
        mode, send = hdr["mode"], int(hdr.get("send", 0))
        if mode == "bulk":
            out = {}

            def writer():
                out["sent"] = send_stream(conn, send)
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            t = threading.Thread(target=writer)
            t.start()
            rb, rs, rerr = recv_stream(conn)
            t.join()
            sb, ss, serr = out["sent"]
            rec.update(recv_bytes=rb, recv_sha=rs, recv_err=rerr, sent_bytes=sb, sent_sha=ss, sent_err=serr)
        elif mode == "hc_client":
            rb, rs, rerr = recv_stream(conn)
            sb, ss, serr = send_stream(conn, send)
            rec.update(recv_bytes=rb, recv_sha=rs, recv_err=rerr, sent_bytes=sb, sent_sha=ss, sent_err=serr)
        elif mode == "hc_server":
            sb, ss, serr = send_stream(conn, send)
            conn.shutdown(socket.SHUT_WR)
            rb, rs, rerr = recv_stream(conn)
            rec.update(recv_bytes=rb, recv_sha=rs, recv_err=rerr, sent_bytes=sb, sent_sha=ss, sent_err=serr)
        elif mode == "stall":
            time.sleep(float(hdr.get("stall_s", 3)))
            rb, rs, rerr = recv_stream(conn)
            rec.update(recv_bytes=rb, recv_sha=rs, recv_err=rerr)
        elif mode in ("rst_wait", "idle"):
            conn.settimeout(float(hdr.get("timeout_s", IO_TIMEOUT_S)))
            rb, rs, rerr = recv_stream(conn)
            rec.update(recv_bytes=rb, recv_sha=rs, recv_err=rerr, outcome=rerr or "EOF")
        elif mode == "rst_send":
            sb, ss, serr = send_stream(conn, send)
            time.sleep(float(hdr.get("delay_s", 0.5)))
            rst_close(conn)
            conn = None
            rec.update(sent_bytes=sb, sent_sha=ss, sent_err=serr)
        else:
            rec["error"] = f"unknown mode {mode}"
    except Exception as e:  # recorded for the test to see
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        if conn is not None:
            conn.close()
    rec["secs"] = round(time.monotonic() - t0, 3)
    with lock:
        with open(results, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def cmd_server(args):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.rcvbuf:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    ls.bind((args.bind, args.port))
    ls.listen(1024)
    lock = threading.Lock()
    print(f"server on {args.bind}:{args.port}", flush=True)
    while True:
        conn, peer = ls.accept()
        threading.Thread(target=serve_one, args=(conn, peer, args.results, lock), daemon=True).start()


PROGRESS = {"sent": 0, "recv": 0}


def cmd_client(args):
    res = {"id": args.id, "mode": args.mode}
    t0 = time.monotonic()
    s = None

    def deadline():
        # the whole exchange took too long: report how far it got and leave (the kernel resets)
        res.update(error=f"deadline: not done after {args.timeout}s", progress=dict(PROGRESS),
                   secs=round(time.monotonic() - t0, 3))
        print(json.dumps(res), flush=True)
        os._exit(0)
    watchdog = threading.Timer(args.timeout, deadline)
    watchdog.daemon = True
    watchdog.start()
    try:
        s = socket.create_connection((args.connect, args.port), timeout=10)
        s.settimeout(args.timeout)
        hdr = {"id": args.id, "mode": args.mode, "send": args.expect_send, "stall_s": args.stall_s,
               "timeout_s": args.timeout}
        s.sendall((json.dumps(hdr) + "\n").encode())
        client_mode(args, s, res)
    except Exception as e:  # reported to the test, which shows it
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if res.pop("_closed", False):
            s = None
        if s is not None:
            s.close()
    watchdog.cancel()
    res["secs"] = round(time.monotonic() - t0, 3)
    print(json.dumps(res), flush=True)
    return 0


def client_mode(args, s, res):
    """The client side of each server mode (see the module docstring)."""
    mode = args.mode
    if mode in ("bulk", "stall"):
        out = {}
        t = None
        if mode == "bulk":
            t = threading.Thread(target=lambda: out.__setitem__("r", recv_stream(s)))
            t.start()
        sb, ss, serr = send_stream(s, args.send)
        s.shutdown(socket.SHUT_WR)
        if t is None:
            rb, rs, rerr = recv_stream(s)
        else:
            t.join()
            rb, rs, rerr = out["r"]
        res.update(sent_bytes=sb, sent_sha=ss, sent_err=serr, recv_bytes=rb, recv_sha=rs, recv_err=rerr)
    elif mode == "hc_client":
        sb, ss, serr = send_stream(s, args.send)
        s.shutdown(socket.SHUT_WR)
        rb, rs, rerr = recv_stream(s)
        res.update(sent_bytes=sb, sent_sha=ss, sent_err=serr, recv_bytes=rb, recv_sha=rs, recv_err=rerr)
    elif mode == "hc_server":
        rb, rs, rerr = recv_stream(s)          # the server's bytes and FIN come first
        sb, ss, serr = send_stream(s, args.send)
        s.shutdown(socket.SHUT_WR)
        eof = s.recv(1)
        res.update(sent_bytes=sb, sent_sha=ss, sent_err=serr, recv_bytes=rb, recv_sha=rs, recv_err=rerr,
                   after=len(eof))
    elif mode == "rst_wait":
        sb, ss, serr = send_stream(s, args.send)
        time.sleep(0.5)
        rst_close(s)
        res["_closed"] = True
        res.update(sent_bytes=sb, sent_sha=ss, sent_err=serr)
    elif mode == "rst_send":
        rb, rs, rerr = recv_stream(s)
        res.update(recv_bytes=rb, recv_sha=rs, recv_err=rerr, outcome=rerr or "EOF")
    elif mode == "idle":
        print(json.dumps({"connected": True}), flush=True)
        time.sleep(args.hold_s)
        res["held"] = args.hold_s


# --------------------------------------------------------------------------------------------
# Many connections (asyncio)
# --------------------------------------------------------------------------------------------

def raise_nofile(n):
    """ulimit -n n for this process: raises the hard limit when allowed, else goes up to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cmd_many_server(args):
    raise_nofile(args.conns + 1024)
    st = {"open": 0, "peak": 0, "accepted": 0, "done": 0, "bytes": 0, "errors": 0}

    async def handle(reader, writer):
        st["accepted"] += 1
        st["open"] += 1
        st["peak"] = max(st["peak"], st["open"])
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                st["bytes"] += len(data)
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
            st["done"] += 1
        except (OSError, asyncio.IncompleteReadError):
            st["errors"] += 1
        finally:
            writer.close()
            st["open"] -= 1

    async def dump():
        while True:
            tmp = args.stats + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(st, f)
            os.replace(tmp, args.stats)
            await asyncio.sleep(0.5)

    async def main():
        srv = await asyncio.start_server(handle, args.bind, args.port, backlog=args.conns + 1024)
        print(f"many-server on {args.bind}:{args.port}", flush=True)
        asyncio.get_running_loop().create_task(dump())
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())


def cmd_many_client(args):
    raise_nofile(args.conns + 1024)
    fails = {}
    opened = []
    checked = [0, 0]
    sem = asyncio.Semaphore(args.parallel)
    pool = random.Random(7).randbytes(args.bytes + args.conns)

    def fail(kind):
        fails[kind] = fails.get(kind, 0) + 1

    async def open_one():
        async with sem:
            for attempt in range(3):
                try:
                    return await asyncio.wait_for(asyncio.open_connection(args.connect, args.port), 20)
                except (OSError, asyncio.TimeoutError) as e:
                    if attempt == 2:
                        fail(f"connect {type(e).__name__} {getattr(e, 'errno', '')}")
            return None

    async def transfer(i, rw):
        reader, writer = rw
        data = pool[i:i + args.bytes]
        try:
            writer.write(data)
            await writer.drain()
            writer.write_eof()
            got = bytearray()
            while True:
                part = await asyncio.wait_for(reader.read(65536), 60)
                if not part:
                    break
                got += part
            if bytes(got) == data:
                checked[0] += 1
                checked[1] += len(got)
            else:
                fail(f"echo mismatch {len(got)}/{len(data)}")
        except (OSError, asyncio.TimeoutError) as e:
            fail(f"transfer {type(e).__name__}")
        finally:
            writer.close()

    async def main():
        t0 = time.monotonic()
        results = await asyncio.gather(*(open_one() for _ in range(args.conns)))
        opened.extend(r for r in results if r is not None)
        t_open = time.monotonic() - t0
        print(json.dumps({"phase": "opened", "opened": len(opened), "secs": round(t_open, 2)}), flush=True)
        await asyncio.sleep(args.hold_s)
        t1 = time.monotonic()
        await asyncio.gather(*(transfer(i, rw) for i, rw in enumerate(opened)))
        return t_open, time.monotonic() - t1

    t_open, t_xfer = asyncio.run(main())
    print(json.dumps({"opened": len(opened), "completed": checked[0], "bytes_checked": checked[1],
                      "failures": fails, "open_secs": round(t_open, 2), "transfer_secs": round(t_xfer, 2)}),
          flush=True)
    return 0


def cmd_rate_client(args):
    """Connections per second: `workers` loops of connect, send, shut down writing, read the echo
    to EOF, close, for `secs` seconds."""
    raise_nofile(args.workers * 4 + 1024)
    done = [0]
    fails = {}
    data = b"x" * args.bytes

    async def worker(end):
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(args.connect, args.port), 10)
                writer.write(data)
                writer.write_eof()
                got = await asyncio.wait_for(reader.read(), 10)
                writer.close()
                if len(got) == len(data):
                    done[0] += 1
                else:
                    fails["short"] = fails.get("short", 0) + 1
            except (OSError, asyncio.TimeoutError) as e:
                fails[type(e).__name__] = fails.get(type(e).__name__, 0) + 1

    async def main():
        end = time.monotonic() + args.secs
        t0 = time.monotonic()
        await asyncio.gather(*(worker(end) for _ in range(args.workers)))
        return time.monotonic() - t0

    secs = asyncio.run(main())
    print(json.dumps({"connections": done[0], "secs": round(secs, 3), "per_s": round(done[0] / secs, 1),
                      "failures": fails}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# SYN flood (raw socket; scapy is not installed)
# --------------------------------------------------------------------------------------------

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_segment(src, dst, sport, dport, seq):
    """A 20-byte TCP SYN header with MSS option (24 bytes) and its checksum."""
    opts = struct.pack("!BBH", 2, 4, 1460)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, (6 << 4), 0x02, 64240, 0, 0) + opts
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    c = csum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]


def cmd_syn_flood(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    rnd = random.Random()
    segs = [syn_segment(args.src, args.dst, 1024 + rnd.randrange(60000), args.port, rnd.getrandbits(32))
            for _ in range(4096)]
    sent = 0
    end = time.monotonic() + args.secs
    gap = 1.0 / args.pps if args.pps else 0.0
    nxt = time.monotonic()
    while time.monotonic() < end:
        try:
            s.sendto(segs[sent % len(segs)], (args.dst, 0))
            sent += 1
        except OSError:
            time.sleep(0.001)
        if gap:
            nxt += gap
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
    print(json.dumps({"syn_sent": sent}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# A Linux relay (the benchmark's baseline)
# --------------------------------------------------------------------------------------------

def _pump(src, dst):
    try:
        while True:
            data = src.recv(256 << 10)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                rst_close(s)
            except OSError:
                pass


def cmd_relay(args):
    lip, lport = args.listen.rsplit(":", 1)
    tip, tport = args.target.rsplit(":", 1)
    raise_nofile(65536)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((lip, int(lport)))
    ls.listen(4096)
    print(f"relay {args.listen} -> {args.target}", flush=True)

    def session(c):
        try:
            u = socket.create_connection((tip, int(tport)), timeout=10)
            u.settimeout(None)
        except OSError:
            rst_close(c)
            return
        t = threading.Thread(target=_pump, args=(u, c), daemon=True)
        t.start()
        _pump(c, u)
        t.join()
        c.close()
        u.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=session, args=(c,), daemon=True).start()


# --------------------------------------------------------------------------------------------
# Delay/jitter bridge (netem is not in this kernel; LAB.md §4b)
# --------------------------------------------------------------------------------------------

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23


def cmd_netem(args):
    """Bridges two interfaces with AF_PACKET, each frame delayed by delay +- jitter: jitter larger
    than the gap between frames reorders them. Prints forwarded/dropped counts on exit."""
    import heapq
    import select
    import signal

    def open_if(name):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((name, 0))
        s.setblocking(False)
        return s

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sa, sb = open_if(args.a), open_if(args.b)
    peer = {sa.fileno(): sb, sb.fileno(): sa}
    rnd = random.Random()
    q, seq, fwd, drop, late = [], 0, 0, 0, 0
    d0, jit = args.delay_ms / 1000.0, args.jitter_ms / 1000.0
    end = time.monotonic() + args.secs
    print(f"netem {args.a} <-> {args.b} delay {args.delay_ms} ms jitter {args.jitter_ms} ms "
          f"loss {args.loss}", flush=True)
    while not stop and time.monotonic() < end:
        now = time.monotonic()
        while q and q[0][0] <= now:
            _, _, out, frame = heapq.heappop(q)
            try:
                out.send(frame)
                fwd += 1
            except OSError:
                drop += 1
        timeout = min(0.2, max(0.0, q[0][0] - now)) if q else 0.2
        r, _, _ = select.select([sa, sb], [], [], timeout)
        for s in r:
            for _ in range(64):
                try:
                    frame = s.recv(65535)
                except BlockingIOError:
                    break
                if args.loss and rnd.random() < args.loss:
                    drop += 1
                    continue
                seq += 1
                d = max(0.0, d0 + rnd.uniform(-jit, jit))
                heapq.heappush(q, (time.monotonic() + d, seq, peer[s.fileno()], frame))
    for _, _, out, frame in sorted(q):
        try:
            out.send(frame)
            late += 1
        except OSError:
            pass
    print(json.dumps({"forwarded": fwd + late, "dropped": drop}), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("server")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--rcvbuf", type=int, default=0)
    p = sub.add_parser("client")
    p.add_argument("--connect", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--id", default="c0")
    p.add_argument("--send", type=int, default=0, help="bytes this client sends")
    p.add_argument("--expect-send", type=int, default=0, help="bytes the server is asked to send")
    p.add_argument("--stall-s", type=float, default=3.0)
    p.add_argument("--hold-s", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=IO_TIMEOUT_S)
    p = sub.add_parser("many-server")
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--conns", type=int, default=16384)
    p = sub.add_parser("many-client")
    p.add_argument("--connect", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--bytes", type=int, default=1024)
    p.add_argument("--parallel", type=int, default=256)
    p.add_argument("--hold-s", type=float, default=1.0)
    p = sub.add_parser("rate-client")
    p.add_argument("--connect", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--bytes", type=int, default=64)
    p.add_argument("--secs", type=float, default=5.0)
    p = sub.add_parser("syn-flood")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secs", type=float, default=5.0)
    p.add_argument("--pps", type=float, default=0.0)
    p = sub.add_parser("netem")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0, help="probability 0..1 per frame")
    p.add_argument("--secs", type=float, default=300.0)
    p = sub.add_parser("relay")
    p.add_argument("--listen", required=True)
    p.add_argument("--target", required=True)
    args = ap.parse_args()
    fn = {"server": cmd_server, "client": cmd_client, "many-server": cmd_many_server,
          "many-client": cmd_many_client, "rate-client": cmd_rate_client, "syn-flood": cmd_syn_flood, "relay": cmd_relay,
          "netem": cmd_netem}[args.cmd]
    return fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
