#!/usr/bin/env python3
"""Shared fixture code for the snapdedupe integration tests (stdlib only).

Contents:
  * Results            -- pass/fail bookkeeping, prints "N passed, M failed".
  * require_root()     -- fail loudly (exit 1) when not root.
  * Workspace          -- context manager owning a temp dir, loop-backed btrfs
                          filesystems, tmpfs mounts; always cleaned up (also on
                          exceptions and SIGTERM/SIGINT/SIGHUP), plus a leak check.
  * SeriesBuilder      -- builds snapshot series in a live subvolume and tracks
                          known duplicate bytes.
  * build_dedupe_series() -- the series used by test_dedupe.py.
  * manifest()/compare_manifests() -- sha256 + metadata of every file.
  * df()/sync_fs()     -- "btrfs filesystem df -b" Data/Metadata used.
  * run_tool()         -- run the snapdedupe binary, time it, parse --json.
  * reference_dedupe() -- an independent FIDEDUPERANGE deduper used only by the
                          fixture self-test to prove the known_dup_bytes
                          accounting and the space measurement are right.
  * parse_dump()/SendOracle -- independent interpretation of
                          "btrfs receive --dump" output (used by test_diff_oracle).

Run directly (as root) to self-test the fixtures without the binary:
    python3 tests/integration/btrfs_fixture.py --selftest-fixture
"""

import errno
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import struct
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


# ---------------------------------------------------------------------------
# Manifests (integrity)
# ---------------------------------------------------------------------------


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def manifest(root):
    """relpath -> tuple describing the entry (type, mode, uid, gid, size, mtime_ns,
    inode, nlink, sha256 or symlink target). atime/ctime are excluded (reading changes atime)."""
    res = {}
    root = os.path.abspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            base = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                res[rel] = ("file",) + base + (st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink, sha256_file(p))
            elif stat.S_ISLNK(st.st_mode):
                res[rel] = ("symlink",) + base + (os.readlink(p),)
            elif stat.S_ISDIR(st.st_mode):
                if st.st_ino == 256 or st.st_ino == 2:  # nested subvolume root / empty subvol stub
                    res[rel] = ("subvol-or-dir",) + base
                else:
                    res[rel] = ("dir",) + base + (st.st_mtime_ns,)
            else:
                res[rel] = ("other",) + base + (st.st_rdev, st.st_mtime_ns)
    return res


def manifest_all(paths):
    return {p: manifest(p) for p in paths}


def compare_manifests(before, after, limit=20):
    """Return a list of human-readable differences (empty == identical)."""
    diffs = []
    for top in sorted(set(before) | set(after)):
        if top not in before or top not in after:
            diffs.append(f"{top}: present only {'before' if top in before else 'after'}")
            continue
        b, a = before[top], after[top]
        for rel in sorted(set(b) | set(a)):
            if b.get(rel) != a.get(rel):
                diffs.append(f"{top}/{rel}: {b.get(rel)} -> {a.get(rel)}")
                if len(diffs) >= limit:
                    return diffs
    return diffs


def file_count(man_all):
    return sum(1 for m in man_all.values() for v in m.values() if v[0] == "file")


# ---------------------------------------------------------------------------
# Running the binary
# ---------------------------------------------------------------------------


class ToolResult:
    def __init__(self, argv, rc, stdout, stderr, elapsed):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.json = None
        self.json_error = None
        try:
            self.json = json.loads(stdout) if stdout.strip() else None
            if self.json is None:
                self.json_error = "empty stdout"
        except ValueError as e:
            self.json_error = str(e)

    def stderr_lines(self):
        return [l for l in self.stderr.splitlines() if l.strip() != ""]

    def describe(self):
        return (f"rc={self.rc} t={self.elapsed:.2f}s stderr={self.stderr.strip()[:300]!r} "
                f"stdout={self.stdout.strip()[:300]!r}")


def run_tool(binary, args, timeout=600, preexec=None, prefix=()):
    argv = [str(a) for a in list(prefix) + [binary] + list(args)]
    print(f"  $ {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    r = ToolResult(argv, p.returncode, p.stdout.decode(errors="replace"),
                   p.stderr.decode(errors="replace"), elapsed)
    return r


RUN_KEYS_INT = ["snapshots_processed", "bytes_changed", "bytes_hashed", "duplicate_bytes",
                "deduped_bytes", "differs_bytes", "skipped_writable_bytes", "dedupe_errors",
                "references_moved"]


def validate_run_json(j):
    """Return a list of schema problems of a `run --json` object (empty == OK)."""
    probs = []
    if not isinstance(j, dict):
        return ["not a JSON object"]
    for k in RUN_KEYS_INT:
        if not isinstance(j.get(k), int) or isinstance(j.get(k), bool):
            probs.append(f"{k} missing or not int")
    if not isinstance(j.get("dry_run"), bool):
        probs.append("dry_run missing or not bool")
    sp = j.get("space")
    if not isinstance(sp, dict):
        probs.append("space missing")
    else:
        for k in ("before", "after"):
            v = sp.get(k)
            if not isinstance(v, dict) or not all(isinstance(v.get(x), int) for x in ("data_used", "metadata_used")):
                probs.append(f"space.{k} malformed")
        for k in ("data_freed", "metadata_growth", "net_freed"):
            if not isinstance(sp.get(k), int):
                probs.append(f"space.{k} missing or not int")
    return probs


# ---------------------------------------------------------------------------
# Snapshot series builder
# ---------------------------------------------------------------------------


class SeriesBuilder:
    """Builds a snapshot series: live subvolume <mnt>/<live>, read-only snapshots
    <mnt>/<snapdir>/<live>.1 ... ; tracks known duplicate bytes (data that an
    ideal deduper can free because an identical copy exists elsewhere)."""

    def __init__(self, fs, live="src", snapdir="snaps", seed=1234):
        self.fs = fs
        self.mnt = fs.mnt
        self.live_name = live
        self.live = fs.path(live)
        self.snapdir = fs.path(snapdir)
        self.rng = random.Random(seed)
        self.snapshots = []
        self.known_dup_bytes = 0
        self.dup_log = []        # (snapshot number the dup first appears in, description, bytes)
        self.unique_bytes = 0    # bytes of freshly generated random data
        subvol_create(self.live)
        os.makedirs(self.snapdir, exist_ok=True)

    # -- data -----------------------------------------------------------
    def rand(self, n):
        self.unique_bytes += n
        return self.rng.randbytes(n)

    def p(self, rel):
        return os.path.join(self.live, rel)

    def write_new(self, rel, size):
        path = self.p(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            remaining = size
            while remaining:
                n = min(remaining, 4 * MiB)
                f.write(self.rand(n))
                remaining -= n
        return path

    def write_bytes(self, rel, data):
        path = self.p(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def dup(self, nbytes, what):
        self.known_dup_bytes += nbytes
        self.dup_log.append((len(self.snapshots) + 1, what, nbytes))

    def identical_rewrite(self, rel):
        """Write the same bytes to a tmp file and rename it over -> new extents, pure duplicate."""
        path = self.p(rel)
        with open(path, "rb") as f:
            data = f.read()
        st = os.stat(path)
        tmp = path + ".tmp~"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.rename(tmp, path)
        self.dup(len(data), f"identical rewrite of {rel}")

    def copy_noreflink(self, src, dst, sparse=None, count_dup=True):
        args = ["cp", "--reflink=never"]
        if sparse:
            args.append(f"--sparse={sparse}")
        os.makedirs(os.path.dirname(self.p(dst)), exist_ok=True)
        sh(*args, self.p(src), self.p(dst))
        if count_dup:
            self.dup(data_bytes(self.p(dst)), f"cp --reflink=never {src} {dst}")

    def snapshot(self):
        n = len(self.snapshots) + 1
        dst = os.path.join(self.snapdir, f"{self.live_name}.{n}")
        sh("sync")
        subvol_snapshot(self.live, dst, readonly=True)
        self.snapshots.append(dst)
        return dst


def data_bytes(path):
    """Bytes of a file that are backed by data (not holes), via SEEK_DATA/SEEK_HOLE."""
    total = 0
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            total += h - d
            off = h
    return total


def make_sparse(path, rng_bytes):
    """Sparse 9 MiB file: data at [0,1MiB) and [8MiB,9MiB)."""
    with open(path, "wb") as f:
        f.write(rng_bytes(MiB))
        f.seek(8 * MiB)
        f.write(rng_bytes(MiB))


def build_dedupe_series(fs, keep_live=False, seed=20240601):
    """The snapshot series of test_dedupe.py. Returns (builder, info dict)."""
    b = SeriesBuilder(fs, seed=seed)
    # ---- s1 -----------------------------------------------------------
    b.write_new("a.bin", 1 * MiB)
    b.write_new("b.bin", 3 * MiB + 123)
    b.write_new("c.bin", 300 * KiB)
    b.write_new("big/d.bin", 16 * MiB)
    b.write_new("e.bin", 8 * MiB)
    make_sparse(b.p("sparse.img"), b.rand)
    b.write_new("hl1", 512 * KiB)
    os.makedirs(b.p("sub"), exist_ok=True)
    os.link(b.p("hl1"), b.p("sub/hl2"))            # hard-linked pair (not a duplicate)
    os.symlink("a.bin", b.p("link.to.a"))
    os.mkfifo(b.p("fifo"))
    b.write_new("small3k", 3 * KiB)
    b.write_new("appendme.log", 2 * MiB + 100)
    b.write_new("f.bin", 6 * MiB)
    b.write_new("g.bin", 4 * MiB)
    b.write_new("h.bin", 5 * MiB)
    # two identical copies of a 2 MiB file inside s1 itself
    two = b.rand(2 * MiB)
    b.write_bytes("dup2m_a", two)
    b.write_bytes("dir/dup2m_b", two)
    b.dup(2 * MiB, "two identical 2 MiB files inside s1")
    b.snapshot()
    # ---- s2 -----------------------------------------------------------
    b.identical_rewrite("big/d.bin")
    b.copy_noreflink("e.bin", "copies/e_copy.bin")
    os.makedirs(b.p("moved"), exist_ok=True)
    os.rename(b.p("h.bin"), b.p("moved/h2.bin"))
    with open(b.p("appendme.log"), "ab") as f:
        f.write(b.rand(MiB + 7))
    os.unlink(b.p("g.bin"))
    b.snapshot()
    # ---- s3 -----------------------------------------------------------
    b.copy_noreflink("sparse.img", "sparse_copy.img", sparse="always")
    b.copy_noreflink("b.bin", "b_copy.bin")
    os.link(b.p("b_copy.bin"), b.p("b_copy_hardlink"))
    b.copy_noreflink("f.bin", "f_copy.bin")   # will be partly overwritten in s4
    b.write_new("new1.bin", 10 * MiB)
    b.snapshot()
    # ---- s4 -----------------------------------------------------------
    with open(b.p("f_copy.bin"), "r+b") as f:   # overwrite first 1 MiB in place
        f.write(b.rand(MiB))
    b.identical_rewrite("c.bin")
    b.snapshot()
    # ---- s5 -----------------------------------------------------------
    b.identical_rewrite("e.bin")               # third copy of e's data
    b.write_new("new2.bin", 5 * MiB)
    b.snapshot()
    sh("sync")
    if not keep_live:
        subvol_delete(b.live, fs.mnt)
    else:
        sync_fs(fs.mnt)
    info = {
        "snapshots": list(b.snapshots),
        "known_dup_bytes": b.known_dup_bytes,
        "unique_bytes": b.unique_bytes,
        "dup_log": list(b.dup_log),
        "live": b.live if keep_live else None,
        # duplicates where every copy is still referenced by the live subvolume
        "live_only_dup_bytes": 2 * MiB + 8 * MiB + (3 * MiB + 123),
    }
    return b, info


def extend_series_identical_rewrite(fs, b, rel="new1.bin"):
    """Test step 5: writable snapshot of the last snapshot, identical rewrite of one
    file, new read-only snapshot, delete the writable one. Returns (snapshot, dup bytes)."""
    last = b.snapshots[-1]
    work = fs.path("src2")
    subvol_snapshot(last, work, readonly=False)
    path = os.path.join(work, rel)
    with open(path, "rb") as f:
        data = f.read()
    tmp = path + ".tmp~"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
    n = len(b.snapshots) + 1
    dst = os.path.join(b.snapdir, f"{b.live_name}.{n}")
    sh("sync")
    subvol_snapshot(work, dst, readonly=True)
    b.snapshots.append(dst)
    subvol_delete(work, fs.mnt)
    return dst, len(data)


# ---------------------------------------------------------------------------
# Independent reference deduper (fixture self-test only)
# ---------------------------------------------------------------------------

FIDEDUPERANGE = 0xC0189436
FILE_DEDUPE_RANGE_SAME = 0
FILE_DEDUPE_RANGE_DIFFERS = 1


def fideduperange(src_fd, src_off, length, dst_fd, dst_off):
    hdr = struct.pack("=QQHHI", src_off, length, 1, 0, 0)
    info = struct.pack("=qQQiI", dst_fd, dst_off, 0, 0, 0)
    buf = bytearray(hdr + info)
    fcntl.ioctl(src_fd, FIDEDUPERANGE, buf, True)
    _, _, bytes_deduped, status, _ = struct.unpack("=qQQiI", bytes(buf[24:]))
    return status, bytes_deduped


def reference_dedupe(snapshots, chunk=MiB):
    """Chunk every regular file into 1 MiB aligned pieces, keep the first occurrence of
    each content, FIDEDUPERANGE later occurrences onto it (flipping ro off/on)."""
    seen = {}          # (sha, len) -> (path, offset)
    stats = {"calls": 0, "same": 0, "differs": 0, "deduped": 0, "errors": 0}
    for snap in snapshots:
        was_ro = is_readonly(snap)
        if was_ro:
            set_readonly(snap, False)
        try:
            for dirpath, dirnames, filenames in os.walk(snap):
                dirnames.sort()
                for name in sorted(filenames):
                    p = os.path.join(dirpath, name)
                    st = os.lstat(p)
                    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                        continue
                    with open(p, "rb") as f:
                        fd = f.fileno()
                        off = 0
                        while off < st.st_size:
                            data = os.pread(fd, chunk, off)
                            n = len(data)
                            if data.count(0) == n:
                                off += n
                                continue
                            key = (hashlib.sha256(data).digest(), n)
                            if key not in seen:
                                seen[key] = (p, off)
                            else:
                                sp, so = seen[key]
                                with open(sp, "rb") as sf:
                                    stats["calls"] += 1
                                    try:
                                        status, done = fideduperange(sf.fileno(), so, n, fd, off)
                                    except OSError as e:
                                        stats["errors"] += 1
                                        print(f"    reference dedupe error {p}@{off}: {e}", flush=True)
                                        status, done = -1, 0
                                    if status == FILE_DEDUPE_RANGE_SAME:
                                        stats["same"] += 1
                                        stats["deduped"] += done
                                    elif status == FILE_DEDUPE_RANGE_DIFFERS:
                                        stats["differs"] += 1
                            off += n
        finally:
            if was_ro:
                set_readonly(snap, True)
    return stats


# ---------------------------------------------------------------------------
# `btrfs receive --dump` parsing and the send-stream oracle
# ---------------------------------------------------------------------------

_ESC = {"a": 7, "b": 8, "e": 27, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}


def _split_escaped(line):
    """Split a dump line on unescaped whitespace; keep escapes inside tokens."""
    toks, cur, i = [], [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            cur.append(line[i:i + 2])
            i += 2
            continue
        if c in " \t":
            if cur:
                toks.append("".join(cur))
                cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        toks.append("".join(cur))
    return toks


def unescape(s):
    """Undo btrfs-progs print_path_escaped: '\\ ' etc., '\\ooo' octal bytes. Returns str
    (bytes decoded with the filesystem encoding / surrogateescape)."""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if re.match(r"[0-7]{3}", s[i + 1:i + 4]):
                out.append(int(s[i + 1:i + 4], 8))
                i += 4
                continue
            if n in _ESC:
                out.append(_ESC[n])
            else:
                out += n.encode()
            i += 2
            continue
        out += c.encode("utf-8", "surrogateescape")
        i += 1
    return os.fsdecode(bytes(out))


def parse_dump(text):
    """-> list of (cmd, path, {key: value}) with escapes undone for path-like values."""
    cmds = []
    for line in text.splitlines():
        if not line.strip():
            continue
        toks = _split_escaped(line)
        cmd = toks[0]
        path = unescape(toks[1]) if len(toks) > 1 else ""
        kv = {}
        for t in toks[2:]:
            if "=" in t:
                k, v = t.split("=", 1)
                kv[k] = unescape(v)
        cmds.append((cmd, path, kv))
    return cmds


def send_dump(old, new):
    """`btrfs send --no-data -p OLD NEW`, then `btrfs receive --dump` of that stream -> text.

    Through a file, not a pipe: `receive --dump` stops reading at END, and btrfs-progs' send can
    still be writing then and die of SIGPIPE (seen in about a third of runs)."""
    with tempfile.NamedTemporaryFile(prefix="snapdedupe-stream.") as stream:
        send = subprocess.run(["btrfs", "send", "-q", "--no-data", "-p", old, new, "-f", stream.name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        recv = subprocess.run(["btrfs", "receive", "--dump", "-f", stream.name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if send.returncode != 0 or recv.returncode != 0:
        raise RuntimeError(f"send ({send.returncode}) / receive --dump ({recv.returncode}) failed: "
                           f"{send.stderr!r} {recv.stderr!r}")
    return recv.stdout.decode("utf-8", "surrogateescape")


class _Node:
    __slots__ = ("kind", "children", "ranges", "changed", "created", "ino")

    def __init__(self, kind, ino=None, created=False):
        self.kind = kind
        self.children = {} if kind == "dir" else None
        self.ranges = []
        self.changed = False
        self.created = created
        self.ino = ino


def merge_ranges(ranges):
    """[(off, len), ...] -> sorted, merged (overlapping or adjacent) [[off, len], ...]."""
    iv = sorted((int(o), int(o) + int(l)) for o, l in ranges if int(l) > 0)
    out = []
    for s, e in iv:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [[s, e - s] for s, e in out]


class SendOracle:
    """Replays the name operations of a --no-data send stream dump on a model of the
    OLD tree (built from the OLD snapshot on disk, inode numbers give hard links) and
    records which inodes got update_extent/write/clone data commands."""

    DATA_CMDS = ("update_extent", "write", "clone")
    CREATE_CMDS = {"mkfile": "file", "mkdir": "dir", "mknod": "other", "mkfifo": "other",
                   "mksock": "other", "symlink": "symlink"}

    def __init__(self, old_root, dump_text):
        self.old_root = old_root
        self.root = _Node("dir")
        self.prefix = None
        self.unknown = []
        self._load_old()
        self.cmds = parse_dump(dump_text)
        self._replay()

    def _load_old(self):
        by_ino = {}
        root = os.path.abspath(self.old_root)
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            parent = self.root if rel == "." else self._lookup(rel)
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_ino in by_ino and not stat.S_ISDIR(st.st_mode):
                    node = by_ino[st.st_ino]
                else:
                    kind = "dir" if stat.S_ISDIR(st.st_mode) else (
                        "file" if stat.S_ISREG(st.st_mode) else (
                            "symlink" if stat.S_ISLNK(st.st_mode) else "other"))
                    node = _Node(kind, ino=st.st_ino)
                    by_ino[st.st_ino] = node
                parent.children[name] = node

    def _rel(self, p):
        """Strip './<subvol>/' prefix (present on paths and on rename/clone dests)."""
        if self.prefix and (p == self.prefix or p.startswith(self.prefix + "/")):
            return p[len(self.prefix) + 1:]
        return p

    def _split(self, rel):
        return [c for c in rel.split("/") if c not in ("", ".")]

    def _lookup(self, rel):
        node = self.root
        for c in self._split(rel):
            if node.children is None or c not in node.children:
                raise KeyError(rel)
            node = node.children[c]
        return node

    def _parent(self, rel):
        parts = self._split(rel)
        parent = self.root
        for c in parts[:-1]:
            parent = parent.children[c]
        return parent, parts[-1]

    def _replay(self):
        for cmd, path, kv in self.cmds:
            if cmd in ("snapshot", "subvol"):
                self.prefix = path.rstrip("/")
                continue
            rel = self._rel(path)
            try:
                if cmd in self.CREATE_CMDS:
                    parent, name = self._parent(rel)
                    parent.children[name] = _Node(self.CREATE_CMDS[cmd], created=True)
                elif cmd == "rename":
                    parent, name = self._parent(rel)
                    node = parent.children.pop(name)
                    dparent, dname = self._parent(self._rel(kv["dest"]))
                    dparent.children[dname] = node
                elif cmd == "link":
                    node = self._lookup(self._rel(kv["dest"]))
                    parent, name = self._parent(rel)
                    parent.children[name] = node
                elif cmd in ("unlink", "rmdir"):
                    parent, name = self._parent(rel)
                    del parent.children[name]
                elif cmd in self.DATA_CMDS:
                    node = self._lookup(rel)
                    node.changed = True
                    off = int(kv.get("offset", 0))
                    ln = int(kv.get("len", kv.get("size", 0)))
                    node.ranges.append((off, ln))
            except KeyError as e:
                self.unknown.append(f"{cmd} {path} {kv}: unresolved {e}")

    def final_names(self):
        """id(node) -> (node, [final relative paths])"""
        out = {}

        def walk(node, prefix):
            for name, child in node.children.items():
                p = f"{prefix}{name}"
                out.setdefault(id(child), (child, []))[1].append(p)
                if child.kind == "dir":
                    walk(child, p + "/")
        walk(self.root, "")
        return out

    def changed(self):
        """list of dicts {names: sorted [paths], ranges: merged, created: bool} for
        regular files that got data commands and still have a name at the end."""
        res = []
        for node, names in self.final_names().values():
            if node.kind == "file" and node.changed:
                res.append({"names": sorted(names), "ranges": merge_ranges(node.ranges),
                            "created": node.created})
        return sorted(res, key=lambda d: d["names"])


def new_data_differs(old_bytes, new_bytes):
    """True if NEW contains data not present at the same offset in OLD.
    A pure shrink (prefix) or a grow that only adds zeros (hole) is not new data."""
    n = min(len(old_bytes), len(new_bytes))
    if old_bytes[:n] != new_bytes[:n]:
        return True
    tail = new_bytes[len(old_bytes):]
    return tail.count(0) != len(tail)


def ground_truth_changes(old_root, new_root):
    """Content comparison by inode number (inode numbers are preserved between snapshots
    of one lineage). Returns list of (names-in-NEW, reason) for regular files of NEW that
    hold new data: existing inode with different data, or new inode with nonzero data."""
    def inodes(root):
        res = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode):
                    res.setdefault(st.st_ino, []).append(os.path.relpath(p, root))
        return res
    old, new = inodes(old_root), inodes(new_root)
    out = []
    for ino, names in new.items():
        with open(os.path.join(new_root, names[0]), "rb") as f:
            nb = f.read()
        if ino in old:
            with open(os.path.join(old_root, old[ino][0]), "rb") as f:
                ob = f.read()
            if new_data_differs(ob, nb):
                out.append((sorted(names), "modified"))
        elif nb.count(0) != len(nb):
            out.append((sorted(names), "new inode"))
    return out


# ---------------------------------------------------------------------------
# Self-test (no binary needed)
# ---------------------------------------------------------------------------


def selftest():
    r = Results("btrfs_fixture selftest")
    ws = Workspace("snapdedupe-fixture")
    try:
        with ws:
            r.section("dedupe series (live deleted) + independent reference deduper")
            fs = ws.make_btrfs("main", size=GiB)
            t0 = time.monotonic()
            b, info = build_dedupe_series(fs, keep_live=False)
            print(f"  built {len(info['snapshots'])} snapshots in {time.monotonic()-t0:.1f}s, "
                  f"known_dup_bytes={info['known_dup_bytes']} unique_bytes={info['unique_bytes']}")
            for snap, what, n in info["dup_log"]:
                print(f"    s{snap}: {what}: {n}")
            r.check("live subvolume deleted", not os.path.exists(fs.path("src")))
            r.check("all snapshots read-only", all(is_readonly(s) for s in info["snapshots"]))
            before = manifest_all(info["snapshots"])
            ids_before = {s: subvol_ids(s) for s in info["snapshots"]}
            r.check("manifest covers files", file_count(before) > 50, str(file_count(before)))
            r.check("manifest stable on re-read", compare_manifests(before, manifest_all(info["snapshots"])) == [])
            sp = before[info["snapshots"][0]]["sparse.img"]
            r.check("sparse file is sparse (2 MiB data of 9 MiB)",
                    data_bytes(os.path.join(info["snapshots"][0], "sparse.img")) == 2 * MiB and sp[5] == 9 * MiB)
            r.check("sparse copy is sparse",
                    data_bytes(os.path.join(info["snapshots"][2], "sparse_copy.img")) == 2 * MiB)
            u0 = df(fs.mnt)
            print(f"  df before: {u0}")
            stats = reference_dedupe(info["snapshots"])
            print(f"  reference dedupe: {stats}")
            u1 = df(fs.mnt)
            freed = u0["data_used"] - u1["data_used"]
            known = info["known_dup_bytes"]
            print(f"  df after: {u1} freed={freed} known={known} ratio={freed/known:.3f}")
            r.check("reference dedupe: no ioctl errors/differs", stats["errors"] == 0 and stats["differs"] == 0)
            r.check("known dups are freeable: freed >= 0.95*known", freed >= 0.95 * known, f"{freed} vs {known}")
            r.check("no unaccounted dups: freed <= 1.05*known + 1MiB", freed <= 1.05 * known + MiB, f"{freed} vs {known}")
            after = manifest_all(info["snapshots"])
            d = compare_manifests(before, after)
            r.check("integrity: manifests identical after reference dedupe", d == [], "; ".join(d[:5]))
            r.check("snapshots read-only again", all(is_readonly(s) for s in info["snapshots"]))
            r.check("subvolume UUIDs unchanged", ids_before == {s: subvol_ids(s) for s in info["snapshots"]})

            r.section("step-5 extension (identical rewrite in a new snapshot)")
            u2 = df(fs.mnt)
            snap6, n6 = extend_series_identical_rewrite(fs, b)
            r.check("src2 deleted, new snapshot read-only", not os.path.exists(fs.path("src2")) and is_readonly(snap6))
            u3 = df(fs.mnt)
            r.check("new snapshot added ~n6 data", abs((u3["data_used"] - u2["data_used"]) - n6) <= MiB,
                    f"{u3['data_used'] - u2['data_used']} vs {n6}")
            reference_dedupe(b.snapshots)
            u4 = df(fs.mnt)
            r.check("its dup is freeable", u3["data_used"] - u4["data_used"] >= 0.95 * n6,
                    f"{u3['data_used'] - u4['data_used']} vs {n6}")

            r.section("live-kept variant")
            fs2 = ws.make_btrfs("live", size=GiB)
            b2, info2 = build_dedupe_series(fs2, keep_live=True)
            r.check("live subvolume kept and writable", os.path.isdir(b2.live) and not is_readonly(b2.live))
            live_m = manifest(b2.live)
            r.check("live has both 2 MiB copies", "dup2m_a" in live_m and "dir/dup2m_b" in live_m)

            r.section("send-stream oracle vs ground truth on the dedupe series")
            snaps = info["snapshots"]
            for old, new in zip(snaps, snaps[1:]):
                orc = SendOracle(old, send_dump(old, new))
                names = {n for c in orc.changed() for n in c["names"]}
                gt = ground_truth_changes(old, new)
                missing = [g for g in gt if not set(g[0]) & names]
                r.check(f"oracle {os.path.basename(old)}->{os.path.basename(new)}: no unresolved cmds, "
                        f"covers ground truth", not orc.unknown and not missing, f"{orc.unknown[:3]} {missing[:3]}")
            r.section("tmpfs mount tracked")
            t = ws.mount_tmpfs("tmpfs")
            r.check("tmpfs mounted", any(m == t for _, m, _ in _proc_mounts()))
    except BaseException as e:
        r.error("selftest raised", e)
        import traceback
        traceback.print_exc()
    left = ws.leaks()
    r.check("cleanup: no mounts/loops/dirs left", left == [], "; ".join(left))
    return r.finish()


if __name__ == "__main__":
    if "--selftest-fixture" in sys.argv[1:] or "--selftest" in sys.argv[1:]:
        require_root("btrfs_fixture.py")
        sys.exit(selftest())
    print(__doc__)
