# SPDX-License-Identifier: Apache-2.0
"""Data-path checks shared by test_lab.py (kernel router nodes) and test_foundation.py (zwire nodes).

Each function drives Linux pods in a running zwlab.Lab and raises AssertionError with the
evidence (command output) when what a user would see is wrong.
"""

import hashlib
import os

from harness import check

HTTP_PORT = 8080
HTTP_FILE = "blob.bin"
HTTP_SIZE = 256 * 1024
LINUX_TTL = 64


def warm_up(lab, src, dst, tries=5):
    """One echo at a time until one comes back: the first packets may wait for ARP on each hop."""
    last = None
    for _ in range(tries):
        last = lab.ping(src, dst, count=1, wait=1)
        if last["received"]:
            return last
    raise AssertionError(f"no reply from {dst} to {src} after {tries} tries:\n{last['output']}")


def ping_ttl(lab, src, dst, routers):
    """Pings dst from src and checks every reply's TTL shows `routers` decrements of 64."""
    warm_up(lab, src, dst)
    res = lab.ping(src, dst, count=5, interval=0.2)
    check(res["received"] >= 4, f"{res['received']}/5 replies from {dst}:\n{res['output']}")
    want = LINUX_TTL - routers
    check(all(t == want for t in res["ttls"]),
          f"reply TTLs {res['ttls']}, want {want} ({routers} router hop(s)):\n{res['output']}")
    return res


def ensure_http_server(lab, ctx, pod):
    """Starts python3 -m http.server in pod (once per lab) serving a random file; returns its sha256."""
    key = ("http", pod)
    if key in ctx.scratch:
        return ctx.scratch[key]
    www = os.path.join(lab.run_dir, f"www-{pod}")
    os.makedirs(www, exist_ok=True)
    data = os.urandom(HTTP_SIZE)
    with open(os.path.join(www, HTTP_FILE), "wb") as f:
        f.write(data)
    lab.start_http_server(pod, HTTP_PORT, www)
    ctx.scratch[key] = hashlib.sha256(data).hexdigest()
    return ctx.scratch[key]


def http_fetch(lab, ctx, client, server):
    """curl from client to the plain HTTP server in server; checks status, size and sha256."""
    digest = ensure_http_server(lab, ctx, server)
    ip = lab.pods[server]["ip"]
    warm_up(lab, client, ip)
    out = os.path.join(lab.run_dir, f"got-{client}-{server}.bin")
    res = lab.exec(client, ["curl", "-sS", "--max-time", "20", "-o", out, "-w",
                            "%{http_code} %{size_download} %{time_total}",
                            f"http://{ip}:{HTTP_PORT}/{HTTP_FILE}"], timeout=30)
    check(res.returncode == 0, f"curl exited {res.returncode}: {res.stderr.strip()}")
    code, size, secs = res.stdout.split()
    check(code == "200", f"HTTP status {code}")
    check(int(size) == HTTP_SIZE, f"got {size} bytes, want {HTTP_SIZE}")
    with open(out, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    os.unlink(out)
    check(got == digest, "body differs from the served file (sha256 mismatch)")
    return float(secs)


def ttl_exceeded(lab, src, dst, gateway):
    """ping -t 1 must come back as ICMP time exceeded from the first router (the gateway)."""
    warm_up(lab, src, dst)
    res = lab.ping(src, dst, count=1, ttl=1, wait=2)
    want = f"From {gateway} icmp_seq=1 Time to live exceeded"
    check(want in res["output"], f"expected '{want}':\n{res['output']}")


def no_leftovers(lab):
    """Nothing of the run is left: netns, processes, links, runtime dirs."""
    check(lab is not None, "no lab")
    found = lab.leftovers()
    check(not found, "left behind: " + ", ".join(found))
