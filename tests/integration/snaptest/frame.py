"""The frame of every test: results, run_test(), run_parts(), the command line, main()."""

import argparse
import functools
import os
import sys
import time
import traceback

from .loopfs import Workspace


class Results:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, what, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"  PASS  {what}", flush=True)
        else:
            self.failed += 1
            self.failures.append(what)
            extra = f"  [{detail}]" if detail else ""
            print(f"  FAIL  {what}{extra}", flush=True)
        return bool(cond)

    def error(self, what, exc):
        """Record an unexpected exception as a failure."""
        self.failed += 1
        self.failures.append(what)
        print(f"  FAIL  {what}: exception {type(exc).__name__}: {exc}", flush=True)

    def section(self, title):
        print(f"== {title}", flush=True)

    def finish(self, extra_failure=False):
        """Print the summary line (must be the last line) and return exit code."""
        if self.failures:
            print("failed checks:", flush=True)
            for f in self.failures:
                print(f"  - {f}", flush=True)
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if (self.failed > 0 or extra_failure) else 0


def run_test(prog, tag, body, after=None):
    """The frame of every integration test: body(r, ws) inside a fresh Workspace; anything it
    raises is a failure, never a crash; after cleanup, `after()` (if given) and a check that
    nothing leaked; then exit with the results' status."""
    r = Results(prog)
    ws = Workspace(tag)
    try:
        with ws:
            body(r, ws)
    except BaseException as e:
        r.error("test aborted", e)
        traceback.print_exc()
    if after is not None:
        after()
    left = ws.leaks()
    r.check("cleanup: nothing of ours left in /proc/mounts, losetup -a, or /tmp", left == [], "; ".join(left))
    sys.exit(r.finish())


def run_parts(r, parts):
    """Runs (name, fn) parts in order: one that raises is a failure and the next still runs."""
    for name, fn in parts:
        t = time.monotonic()
        try:
            fn()
        except Exception as e:
            r.error(f"{name} raised", e)
            traceback.print_exc()
        print(f"  {name}: {time.monotonic() - t:.1f}s", flush=True)


def require_root(prog):
    if os.geteuid() != 0:
        print(f"{prog}: must run as root (needs loop devices and btrfs mounts); failing, not skipping",
              file=sys.stderr, flush=True)
        sys.exit(1)


def parse_args(prog, description, selftest=False, options=()):
    """The tests' command line: --snapdedupe PATH (and --selftest-fixture where a test can build
    its fixture without the binary), plus `options`, a list of (flag, argparse keywords).
    Fails unless root. Returns (args, absolute binary path, or None for --selftest-fixture)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapdedupe", required=not selftest, help="path to the snapdedupe binary")
    if selftest:
        ap.add_argument("--selftest-fixture", action="store_true",
                        help="only build and verify the fixture (no binary needed)")
    for flag, kw in options:
        ap.add_argument(flag, **kw)
    args = ap.parse_args()
    require_root(prog)
    if getattr(args, "selftest_fixture", False):
        return args, None
    if not args.snapdedupe:
        print(f"{prog}: --snapdedupe PATH is required (or --selftest-fixture)", file=sys.stderr)
        sys.exit(2)
    path = os.path.abspath(args.snapdedupe)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        print(f"{prog}: snapdedupe binary not found or not executable: {path}", file=sys.stderr)
        sys.exit(1)
    return args, path


def main(prog, description, parts, selftest=False, options=(), select=None, after=None):
    """parse_args(), then run_test() of `parts`, each part(r, ws, binary) a named step of
    run_parts(). `select(args, parts)` may choose some of them."""
    args, binary = parse_args(prog, description, selftest=selftest, options=options)
    chosen = select(args, parts) if select else parts
    run_test(prog, "snapdedupe-" + prog.removesuffix(".py"), lambda r, ws: run_parts(
        r, [(p.__name__, functools.partial(p, r, ws, binary)) for p in chosen]), after=after)

