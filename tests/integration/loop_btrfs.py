"""Loop-backed btrfs test scaffolding for the snapdedupe integration tests (stdlib only).

Results bookkeeping and the run_test()/run_parts() frame, require_root() and the common
argument parser, sh()/sh_out(), SIGTERM/SIGHUP/SIGINT handling, Workspace (temp dir,
loop-backed btrfs filesystems, tmpfs mounts; always cleaned up, plus a leak check),
and btrfs helpers: sync_fs(), df(), subvolume create/snapshot/delete/read-only/ids.
Re-exported by btrfs_fixture.py.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB

# ---------------------------------------------------------------------------
# Results bookkeeping
# ---------------------------------------------------------------------------


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


def common_argparser(description):
    import argparse
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--snapdedupe", help="path to the snapdedupe binary")
    ap.add_argument("--selftest-fixture", action="store_true",
                    help="only build and verify the fixture (no binary needed)")
    ap.add_argument("--keep-going", action="store_true", help=argparse.SUPPRESS)
    return ap


def check_binary_arg(args, prog):
    if args.selftest_fixture:
        return None
    if not args.snapdedupe:
        print(f"{prog}: --snapdedupe PATH is required (or --selftest-fixture)", file=sys.stderr)
        sys.exit(2)
    path = os.path.abspath(args.snapdedupe)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        print(f"{prog}: snapdedupe binary not found or not executable: {path}", file=sys.stderr)
        sys.exit(1)
    return path


# ---------------------------------------------------------------------------
# Shell helpers
# ---------------------------------------------------------------------------


def sh(*argv, check=True, input=None, capture=True, timeout=600):
    """Run a command (argv list), return CompletedProcess (bytes)."""
    argv = [str(a) for a in argv]
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None, timeout=timeout)
    if check and p.returncode != 0:
        err = (p.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(argv)}: {err}")
    return p


def sh_out(*argv, **kw):
    return sh(*argv, **kw).stdout.decode(errors="replace")


# ---------------------------------------------------------------------------
# Signal handling: turn SIGTERM/SIGHUP into an exception so finally blocks run.
# ---------------------------------------------------------------------------


class TerminatedBySignal(BaseException):
    pass


_cleanup_in_progress = False
_pending_signal = None


def _signal_handler(signum, frame):
    global _pending_signal
    if _cleanup_in_progress:
        _pending_signal = signum      # finish the cleanup first
        return
    raise TerminatedBySignal(f"terminated by signal {signum}")


def install_signal_handlers():
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, _signal_handler)


# ---------------------------------------------------------------------------
# Workspace: temp dir + loop btrfs + extra mounts, always cleaned up
# ---------------------------------------------------------------------------


def _proc_mounts():
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                mnt = parts[1].encode().decode("unicode_escape")
                out.append((parts[0], mnt, parts[2]))
    return out


def _losetup_all():
    return sh_out("losetup", "-a", check=False)


class LoopBtrfs:
    def __init__(self, ws, name, dev, image, mnt):
        self.ws = ws
        self.name = name
        self.dev = dev
        self.image = image
        self.mnt = mnt

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def sync(self):
        sync_fs(self.mnt)

    def df(self):
        return df(self.mnt)


class Workspace:
    """Owns a fresh temp dir and everything mounted/attached under it.

    with Workspace("dedupe") as ws:
        fs = ws.make_btrfs("main", size=GiB)
        ...
    # everything unmounted/detached/removed here, even on exception/SIGTERM
    ws.leaks()  -> list of leftover mounts/loop devices/dirs (should be empty)
    """

    def __init__(self, tag="snapdedupe-it"):
        self.tag = tag
        self.root = None
        self.mounts = []      # mountpoints, in mount order
        self.loops = []       # (dev, image)
        self.closed = False

    def __enter__(self):
        install_signal_handlers()
        self.root = tempfile.mkdtemp(prefix=f"{self.tag}.")
        return self

    def __exit__(self, et, ev, tb):
        self.cleanup()
        return False

    def tmp(self, *parts):
        return os.path.join(self.root, *parts)

    def make_btrfs(self, name, size=GiB, mkfs_args=()):
        image = self.tmp(f"{name}.img")
        mnt = self.tmp(f"{name}.mnt")
        with open(image, "wb") as f:
            f.truncate(size)
        os.mkdir(mnt)
        dev = sh_out("losetup", "-f", "--show", image).strip()
        self.loops.append((dev, image))
        sh("mkfs.btrfs", "-q", "-f", *mkfs_args, dev)
        sh("mount", "-t", "btrfs", dev, mnt)
        self.mounts.append(mnt)
        return LoopBtrfs(self, name, dev, image, mnt)

    def mount_tmpfs(self, name, size="64m"):
        mnt = self.tmp(name)
        os.makedirs(mnt, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt)
        self.mounts.append(mnt)
        return mnt

    def cleanup(self):
        global _cleanup_in_progress
        if self.closed:
            return
        _cleanup_in_progress = True
        problems = []
        try:
            os.chdir("/")
            for mnt in reversed(self.mounts):
                for attempt in range(20):
                    if not any(m == mnt for _, m, _ in _proc_mounts()):
                        break
                    p = sh("umount", mnt, check=False)
                    if p.returncode == 0:
                        continue
                    time.sleep(0.25)
                else:
                    # last resort so the loop device can still go away eventually
                    sh("umount", "-l", mnt, check=False)
                    problems.append(f"needed lazy umount of {mnt}")
            self.mounts.clear()
            for dev, image in reversed(self.loops):
                for attempt in range(20):
                    if image not in _losetup_all():
                        break
                    sh("losetup", "-d", dev, check=False)
                    if image not in _losetup_all():
                        break
                    time.sleep(0.25)
                else:
                    problems.append(f"could not detach {dev} ({image})")
            self.loops.clear()
            if self.root and os.path.isdir(self.root):
                # never recurse into something still mounted
                if not any(m.startswith(self.root + "/") or m == self.root for _, m, _ in _proc_mounts()):
                    shutil.rmtree(self.root, ignore_errors=True)
                else:
                    problems.append(f"not removing {self.root}: still mounted")
        finally:
            self.closed = True
            _cleanup_in_progress = False
        for p in problems:
            print(f"  cleanup problem: {p}", file=sys.stderr, flush=True)
        if _pending_signal is not None:
            raise TerminatedBySignal(f"terminated by signal {_pending_signal}")

    def leaks(self):
        """After cleanup: anything of ours left in /proc/mounts, losetup -a, or on disk?"""
        left = []
        if self.root is None:
            return left
        for dev, mnt, _ in _proc_mounts():
            if mnt == self.root or mnt.startswith(self.root + "/"):
                left.append(f"mount {mnt} ({dev})")
        for line in _losetup_all().splitlines():
            if self.root + "/" in line:
                left.append(f"loop {line.strip()}")
        if os.path.exists(self.root):
            left.append(f"dir {self.root}")
        return left


# ---------------------------------------------------------------------------
# btrfs helpers
# ---------------------------------------------------------------------------


def sync_fs(mnt):
    sh("btrfs", "filesystem", "sync", mnt)
    sh("sync")
    sh("btrfs", "filesystem", "sync", mnt)


def df(mnt, do_sync=True):
    """{'data_used': int, 'metadata_used': int} from `btrfs filesystem df -b`."""
    if do_sync:
        sync_fs(mnt)
    out = sh_out("btrfs", "filesystem", "df", "-b", mnt)
    res = {"data_used": 0, "metadata_used": 0}
    for line in out.splitlines():
        m = re.match(r"\s*(Data|Metadata|System|GlobalReserve)(?:\+\w+)?,\s*\S+:\s*total=(\d+),\s*used=(\d+)", line)
        if not m:
            continue
        kind, used = m.group(1), int(m.group(3))
        if kind == "Data":
            res["data_used"] += used
        elif kind == "Metadata":
            res["metadata_used"] += used
    return res


def subvol_snapshot(src, dst, readonly=True):
    args = ["btrfs", "subvolume", "snapshot"] + (["-r"] if readonly else []) + [src, dst]
    sh(*args)


def subvol_create(path):
    sh("btrfs", "subvolume", "create", path)


def subvol_delete(path, mnt):
    sh("btrfs", "subvolume", "delete", "--commit-after", path)
    # wait until the cleaner really dropped it so space measurements are stable
    sh("btrfs", "subvolume", "sync", mnt)
    sync_fs(mnt)


def is_readonly(path):
    out = sh_out("btrfs", "property", "get", "-ts", path, "ro").strip()
    return out == "ro=true"


def set_readonly(path, ro):
    sh("btrfs", "property", "set", "-ts", path, "ro", "true" if ro else "false")


def subvol_ids(path):
    """UUID / Parent UUID / Received UUID of a subvolume (to prove it was not replaced)."""
    out = sh_out("btrfs", "subvolume", "show", path)
    res = {}
    for line in out.splitlines():
        m = re.match(r"\s*(UUID|Parent UUID|Received UUID|Subvolume ID):\s*(\S+)", line)
        if m:
            res[m.group(1)] = m.group(2)
    return res
