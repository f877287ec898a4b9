#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Removes what crashed zwlab runs left behind, and nothing else.

Everything zwlab makes is named after its run id, `zw` and four hex digits (zw3f1a, zw3f1a-n1); this
script only ever touches such names (so zwire's own default names like zwire-node1 are safe):
  * processes recorded in /run/zwire/zw*/state.json (signalled by PID, and only if the PID's start
    time still matches the record), and processes living inside a zw* netns (they were started
    there by a run: no one else enters those namespaces);
  * netns zw*, links zw* in the root netns;
  * /var/run/dpdk/zw* and /run/zwire/zw*.
It never looks processes up by name. Runs whose owner process is still alive are skipped unless
--force is given (so a concurrent test is not pulled out from under itself); `zwlab.py up`
runs have no owner and are removed.

Usage: cleanup.py [--force] [--dry-run]
"""

import argparse
import glob
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zwlab  # noqa: E402  (path set just above)


def run_id_of(name):
    """zw3f1a-n1 -> zw3f1a; None for names that are not ours."""
    head = name.split("-")[0]
    return head if zwlab.RUN_ID_RE.fullmatch(head) else None


def owner_alive(state):
    if state.get("persistent"):
        return False
    pid = state.get("owner_pid")
    return bool(pid) and pid != os.getpid() and os.path.exists(f"/proc/{pid}")


def main():
    ap = argparse.ArgumentParser(description="remove leftovers of zwlab runs (zw* names only)")
    ap.add_argument("--force", action="store_true", help="also remove runs whose owner is alive")
    ap.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("cleanup: must run as root", file=sys.stderr)
        return 1

    runs = zwlab.recorded_runs()
    netns = [ns for ns in zwlab.list_netns() if run_id_of(ns)]
    ids = set(runs) | {run_id_of(ns) for ns in netns}
    for d in glob.glob(os.path.join(zwlab.DPDK_RUN_ROOT, zwlab.PREFIX + "*")):
        rid = run_id_of(os.path.basename(d))
        if rid:
            ids.add(rid)
    skipped = set()
    for rid in sorted(ids):
        state = runs.get(rid, {"id": rid, "run_dir": os.path.join(zwlab.RUN_ROOT, rid)})
        if owner_alive(state) and not args.force:
            print(f"{rid}: owner pid {state['owner_pid']} still running; skipped (use --force)")
            skipped.add(rid)
            continue
        state = dict(state)
        state["netns"] = sorted(set(state.get("netns", [])) |
                                {ns for ns in netns if run_id_of(ns) == rid})
        state["dpdk_prefixes"] = sorted(
            set(state.get("dpdk_prefixes", [])) |
            {os.path.basename(d) for d in glob.glob(os.path.join(zwlab.DPDK_RUN_ROOT, rid + "*"))})
        if args.dry_run:
            print(f"{rid}: would remove netns {state['netns']}, dpdk {state['dpdk_prefixes']}, "
                  f"procs {[p['pid'] for p in state.get('procs', [])]}")
            continue
        for problem in zwlab.teardown_state(state):
            print(f"{rid}: {problem}")
        print(f"{rid}: removed")

    # Links in the root netns named zw* (zwlab makes none there, older or crashed tools might).
    res = zwlab.run(["ip", "-o", "link", "show"], check=False)
    for line in res.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        rid = run_id_of(name)
        if rid and rid not in skipped:
            print(f"link {name}: {'would remove' if args.dry_run else 'removed'}")
            if not args.dry_run:
                zwlab.run(["ip", "link", "del", "dev", name], check=False)
    # Run dirs without a state record.
    for d in glob.glob(os.path.join(zwlab.RUN_ROOT, zwlab.PREFIX + "*")):
        rid = run_id_of(os.path.basename(d))
        if rid and rid not in skipped and os.path.isdir(d) and not args.dry_run:
            shutil.rmtree(d, ignore_errors=True)
    left = [ns for ns in zwlab.list_netns() if run_id_of(ns) and run_id_of(ns) not in skipped]
    print("leftover netns: " + (" ".join(left) if left else "none"))
    return 1 if left and not args.dry_run else 0


if __name__ == "__main__":
    sys.exit(main())
