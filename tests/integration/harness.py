# SPDX-License-Identifier: Apache-2.0
"""A tiny runner for root-only integration tests built on tests/lab/zwlab.py.

A test file registers functions with @case, then calls main(make_lab). main():
  * exits 77 (meson's SKIP) with a loud message when not root;
  * brings the lab up once (make_lab(ctx) returns an un-started zwlab.Lab);
  * runs each case in order, alone in its own try/except and under a per-case time limit,
    printing `PASS name` or `FAIL name: reason`;
  * always tears the lab down, then runs the cases marked after_teardown (leftover checks);
  * prints `N passed, M failed` alone on the last line and exits 1 if anything failed.

Arguments: [--build DIR] [SOURCE_ROOT] [-k SUBSTRING]. meson passes --build and both roots.
When a case fails, the run's logs and configs are copied to DIR/meson-logs/zwlab/<test>-<run id>/
(or /tmp/zwlab-logs/ when DIR is not a meson build dir).
"""

import argparse
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))

import zwlab  # noqa: E402  (path set just above)

SKIP_EXIT = 77
CASE_TIMEOUT_S = 120

_CASES = []


class CaseTimeout(Exception):
    """A case ran longer than its time limit."""


class Ctx:
    """What cases get besides the lab: parsed arguments and paths."""

    def __init__(self, args):
        self.build = os.path.abspath(args.build)
        self.src = os.path.abspath(args.src)
        self.args = args
        self.lab = None
        self.scratch = {}


def case(fn=None, *, after_teardown=False, timeout=CASE_TIMEOUT_S):
    """Registers fn(lab, ctx) as a case. after_teardown cases run once the lab is gone."""
    def reg(f):
        _CASES.append((f.__name__, f, after_teardown, timeout))
        return f
    return reg(fn) if fn is not None else reg


def take_backend(argv, allowed=("dpdk", "kernel")):
    """Removes --backend X (or --backend=X) from argv and returns X (default "dpdk"); exits on a value not allowed."""
    backend = "dpdk"
    for i, a in enumerate(list(argv)):
        if a == "--backend" and i + 1 < len(argv):
            backend = argv[i + 1]
            del argv[i:i + 2]
            break
        if a.startswith("--backend="):
            backend = a.split("=", 1)[1]
            del argv[i]
            break
    if backend not in allowed:
        raise SystemExit(f"--backend {backend}: want one of {', '.join(allowed)}")
    return backend


def check(cond, msg):
    """Fails the current case with msg unless cond holds."""
    if not cond:
        raise AssertionError(msg)


def _on_alarm(_signum, _frame):
    raise CaseTimeout("time limit exceeded")


def _run_case(name, fn, timeout, lab, ctx):
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(timeout)
    t0 = time.monotonic()
    try:
        fn(lab, ctx)
        ok, reason = True, ""
    except AssertionError as e:
        ok, reason = False, str(e) or "assertion failed"
    except CaseTimeout:
        ok, reason = False, f"timed out after {timeout}s"
    except Exception as e:  # a case's error must not stop the others
        ok, reason = False, f"{type(e).__name__}: {e}"
        if os.environ.get("ZWTEST_TRACE") == "1":
            traceback.print_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    dt = time.monotonic() - t0
    if ok:
        print(f"PASS {name} ({dt:.1f}s)", flush=True)
    else:
        reason = reason.replace("\n", "\n    ")
        print(f"FAIL {name}: {reason}", flush=True)
    return ok


def main(make_lab, title):
    ap = argparse.ArgumentParser(description=title)
    ap.add_argument("--build", default="build", help="meson build dir (zwire, zwirectl)")
    ap.add_argument("src", nargs="?", default=os.path.abspath(os.path.join(HERE, "..", "..")),
                    help="source root")
    ap.add_argument("extra_root", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("-k", dest="only", help="run only cases whose name contains this")
    args = ap.parse_args()
    # meson passes: --build BUILD_ROOT BUILD_ROOT SOURCE_ROOT; accept both spellings.
    if args.extra_root:
        args.src = args.extra_root

    if os.geteuid() != 0:
        print("*" * 70)
        print(f"SKIP {title}: integration tests need root (network namespaces, DPDK).")
        print("*" * 70)
        return SKIP_EXIT

    os.environ.setdefault("ZWLAB_QUIET", "0")
    zwlab.install_handlers()
    ctx = Ctx(args)
    print(f"== {title}", flush=True)
    cases = [c for c in _CASES if not args.only or args.only in c[0] or c[2]]
    passed = failed = 0
    lab = None
    try:
        setup_error = None
        try:
            lab = make_lab(ctx)
            lab.artifact_dir = _artifact_dir(ctx, lab)
            ctx.lab = lab
            lab.up()
        except Exception as e:
            setup_error = f"{type(e).__name__}: {e}"
            print(f"FAIL setup: {setup_error}".replace("\n", "\n    "), flush=True)
            failed += 1
        for name, fn, after, timeout in cases:
            if after:
                continue
            if setup_error:
                print(f"FAIL {name}: lab setup failed", flush=True)
                failed += 1
                continue
            if _run_case(name, fn, timeout, lab, ctx):
                passed += 1
            else:
                failed += 1
    finally:
        if lab is not None:
            problems = lab.down(keep_logs=bool(failed))
            for p in problems:
                print(f"note: teardown: {p}", flush=True)
            if failed and lab.artifact_dir and os.path.isdir(lab.artifact_dir):
                print(f"note: logs kept in {lab.artifact_dir}", flush=True)
                _print_daemon_logs(lab)
    for name, fn, after, timeout in cases:
        if after:
            if _run_case(name, fn, timeout, lab, ctx):
                passed += 1
            else:
                failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


def _artifact_dir(ctx, lab):
    """Where a failed run's logs are kept: the meson log dir of a real build dir, else /tmp."""
    test_name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    if os.path.isfile(os.path.join(ctx.build, "build.ninja")):
        base = os.path.join(ctx.build, "meson-logs", "zwlab")
    else:
        base = "/tmp/zwlab-logs"
    return os.path.join(base, f"{test_name}-{lab.run_id}")


def _print_daemon_logs(lab, lines=40):
    """After a failure, the tail of each zwire log (copied to the artifact dir) goes to stdout."""
    for node in lab.daemons:
        path = os.path.join(lab.artifact_dir, f"zwire-{node}.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            continue
        print(f"---- last {len(tail)} lines of {path}")
        sys.stdout.write("".join(tail))
        print("----", flush=True)
