#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""`make demo`: two zwire nodes, three Linux pods, a ping, an HTTP request and the nodes' counters.

Brings up the default zwlab topology with zwire nodes, narrates each step, prints what the
commands printed, and tears everything down (also on Ctrl-C). `--kind linux` runs the same demo
with kernel routers in place of zwire (no zwirectl step), to show the lab on its own.

Usage: demo.py --build BUILD_DIR [--kind zwire|linux]
"""

import argparse
import os
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zwlab  # noqa: E402  (path set just above)

TOPOLOGY = """\
     pod a 10.21.1.10   pod b 10.21.1.11                      pod c 10.21.2.10
          \\                 /                                      |
        br-pods (10.21.1.0/24, gw .1)                    br-pods (10.21.2.0/24, gw .1)
               | dp-pods                                          | dp-pods
        +------+-------+   dp-fab 10.21.0.1   dp-fab 10.21.0.2 +------+-------+
        |    node1     |=====================================|    node2     |
        +--------------+            fabric veth              +--------------+"""


def say(step, text):
    print(f"\n=== {step}. {text}", flush=True)


def show(text, indent="    "):
    print(textwrap.indent(text.rstrip("\n"), indent), flush=True)


def ping(lab, src, dst, what):
    for _ in range(3):  # the first echo may wait on ARP resolution at each hop
        if lab.ping(src, dst, count=1, wait=1)["received"]:
            break
    res = lab.ping(src, dst, count=3, interval=0.3)
    print(f"  $ ping -c 3 {dst}      (from pod {src}: {what})")
    show(res["output"])
    return res


def http(lab, src, dst_pod, port):
    url = f"http://{lab.pods[dst_pod]['ip']}:{port}/hello.txt"
    res = lab.exec(src, ["curl", "-sv", "--max-time", "10", url, "-w",
                         "\n[%{http_code}] %{size_download} bytes in %{time_total}s "
                         "(connect %{time_connect}s, first byte %{time_starttransfer}s)\n"],
                   timeout=20)
    print(f"  $ curl -v {url}      (from pod {src})")
    for line in res.stderr.splitlines():
        if line.startswith(("* Connected", "> GET", "> Host", "< HTTP", "< Content-Length",
                            "< Server", "* Closing", "* Connection")):
            show(line)
    show(res.stdout)
    return res.returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--kind", choices=("zwire", "linux"), default="zwire")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: must run as root (it builds network namespaces)", file=sys.stderr)
        return 1
    os.environ.setdefault("ZWLAB_QUIET", "1")

    print("zwire demo: Linux pods in network namespaces, routed by two nodes.\n")
    print(TOPOLOGY)
    ok = True
    try:
        say(1, f"Building the lab with {args.kind} nodes")
        lab = zwlab.Lab(zwlab.DEFAULT_DESC, build=args.build, kind=args.kind)
        with lab:
            print(f"  run id {lab.run_id}: netns {', '.join(lab.state['netns'])}")
            if args.kind == "zwire":
                for n in lab.nodes:
                    print(f"  {n}: zwire pid {lab.daemons[n].pid}, DPDK af_packet on dp-pods and "
                          f"dp-fab, mgmt socket {lab.socket_path(n)}")

            say(2, "Ping across both nodes: each node is one routing hop, so TTL 64 arrives as 62")
            ok &= ping(lab, "a", lab.pods["c"]["ip"], "a -> node1 -> node2 -> c")["received"] > 0

            say(3, "Ping between two pods of node1: one hop, TTL 63")
            ok &= ping(lab, "a", lab.pods["b"]["ip"], "a -> node1 -> b")["received"] > 0

            say(4, "An HTTP request from pod a to a plain web server in pod c")
            www = os.path.join(lab.run_dir, "www")
            os.makedirs(www)
            with open(os.path.join(www, "hello.txt"), "w", encoding="utf-8") as f:
                f.write(f"hello from pod c, through two {args.kind} nodes\n")
            lab.start_http_server("c", 8080, www)
            ok &= http(lab, "a", "c", 8080)

            if args.kind == "zwire":
                for i, n in enumerate(lab.nodes, start=5):
                    say(i, f"zwirectl stats on {n}")
                    try:
                        show(lab.zwirectl(n, ["stats"], parse=False))
                    except zwlab.LabError as e:
                        ok = False
                        show(f"zwirectl failed: {e}")
            say("*", "Tearing down")
        left = lab.leftovers()
        print("  everything removed" if not left else f"  LEFT BEHIND: {', '.join(left)}")
        ok &= not left
    except zwlab.LabError as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; lab torn down", file=sys.stderr)
        return 130
    print("\ndemo " + ("done" if ok else "finished WITH ERRORS"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
