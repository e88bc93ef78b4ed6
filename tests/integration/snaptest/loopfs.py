"""Loop-backed btrfs: Workspace (a fresh temp dir, images attached with an explicit losetup,
their mounts; always unmounted and detached, also on failure or a signal; leaks()), and btrfs
helpers: df(), subvolumes, uuids, the btrfsmaintenance lock file, the index's rows."""

import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass

from .run import sh, sh_out

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


# ---------------------------------------------------------------------------
# Signals: SIGTERM/SIGHUP/SIGINT become an exception so cleanup always runs
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


def proc_mounts():
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


@dataclass
class LoopBtrfs:
    ws: "Workspace"
    name: str
    dev: str
    image: str
    mnt: str

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)


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

    def attach_btrfs(self, name, image, mount_opts=None):
        """Attaches an existing btrfs image (explicit `losetup -f --show`) and mounts it at a fresh
        <name>.mnt. Copies of one image share the filesystem's uuid: attach one at a time
        (release() the last before the next)."""
        mnt = self.tmp(f"{name}.mnt")
        os.mkdir(mnt)
        dev = sh_out("losetup", "-f", "--show", image).strip()
        self.loops.append((dev, image))
        sh("mount", "-t", "btrfs", *(["-o", mount_opts] if mount_opts else []), dev, mnt)
        self.mounts.append(mnt)
        return LoopBtrfs(self, name, dev, image, mnt)

    def release(self, fs, remove_image=False):
        """Unmounts and detaches one filesystem now (also when the rest stays), optionally
        removing its image; what cannot go is left to cleanup() and leaks()."""
        problems = []
        mounts, loops = self.mounts, self.loops
        self.mounts = [m for m in mounts if m == fs.mnt]
        self.loops = [x for x in loops if x[0] == fs.dev and x[1] == fs.image]
        try:
            self._unmount_all(problems)
            if not problems:
                self._detach_all(problems)
        finally:
            self.mounts = [m for m in mounts if m != fs.mnt] + self.mounts
            self.loops = [x for x in loops if not (x[0] == fs.dev and x[1] == fs.image)] + self.loops
        if problems:
            raise RuntimeError(f"releasing {fs.name}: " + "; ".join(problems))
        if os.path.isdir(fs.mnt):
            os.rmdir(fs.mnt)
        if remove_image and os.path.exists(fs.image):
            os.unlink(fs.image)

    def mount_tmpfs(self, name, size="64m"):
        mnt = self.tmp(name)
        os.makedirs(mnt, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt)
        self.mounts.append(mnt)
        return mnt

    def _unmount_all(self, problems):
        for mnt in reversed(self.mounts):
            for attempt in range(20):
                if not any(m == mnt for _, m, _ in proc_mounts()):
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

    def _detach_all(self, problems):
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

    def cleanup(self):
        global _cleanup_in_progress
        if self.closed:
            return
        _cleanup_in_progress = True
        problems = []
        try:
            os.chdir("/")
            self._unmount_all(problems)
            self._detach_all(problems)
            if self.root and os.path.isdir(self.root):
                # never recurse into something still mounted
                if not any(m.startswith(self.root + "/") or m == self.root for _, m, _ in proc_mounts()):
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
        for dev, mnt, _ in proc_mounts():
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

COPIES = {"single": 1, "dup": 2, "raid1": 2, "raid1c3": 3, "raid1c4": 4, "raid10": 2}


def sync_fs(mnt):
    sh("btrfs", "filesystem", "sync", mnt)
    sh("sync")
    sh("btrfs", "filesystem", "sync", mnt)


def df(mnt, do_sync=True):
    """`btrfs filesystem df -b`: {'data_used', 'metadata_used', 'raw_used'}; raw_used counts every
    copy of data, metadata and system (DUP twice)."""
    if do_sync:
        sync_fs(mnt)
    out = sh_out("btrfs", "filesystem", "df", "-b", mnt)
    res = {"data_used": 0, "metadata_used": 0, "raw_used": 0}
    for line in out.splitlines():
        m = re.match(r"\s*(Data|Metadata|System|GlobalReserve)(?:\+\w+)?,\s*(\S+):\s*total=(\d+),\s*used=(\d+)",
                     line)
        if not m:
            continue
        kind, used = m.group(1), int(m.group(4))
        if kind == "Data":
            res["data_used"] += used
        elif kind == "Metadata":
            res["metadata_used"] += used
        if kind != "GlobalReserve":
            res["raw_used"] += used * COPIES.get(m.group(2).lower(), 1)
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


def fs_uuid(mnt):
    """The filesystem uuid as btrfsmaintenance reads it (`btrfs filesystem show`, "uuid:")."""
    for line in sh_out("btrfs", "filesystem", "show", mnt).splitlines():
        if "uuid:" in line:
            return line.split("uuid:", 1)[1].strip()
    raise RuntimeError(f"no uuid in `btrfs filesystem show {mnt}`")


def lock_file(uuid):
    """btrfsmaintenance's lock of a filesystem, which every run holds."""
    return f"/run/btrfs-maintenance-running.{uuid}"


def remove_lock_files(uuids):
    """Runs leave btrfsmaintenance's lock file behind, as flock(1) does (removing a lock file
    others may wait on would break the lock). A test filesystem's is removed once it is gone."""
    for u in uuids:
        if u and os.path.exists(lock_file(u)):
            os.unlink(lock_file(u))


def index_rows(db):
    """The index's rows, read-only: ({snapshot uuid: root id}, {block id: root id})."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        snaps = {row[0]: row[1] for row in con.execute("SELECT uuid, root_id FROM snapshots")}
        blocks = {row[0]: row[1] for row in con.execute("SELECT id, root_id FROM blocks")}
    finally:
        con.close()
    return snaps, blocks


def subvol_sync(mnt):
    """Waits until the cleaner dropped every deleted subvolume, then commits: usage is final."""
    sh("btrfs", "subvolume", "sync", mnt)
    sync_fs(mnt)


def index_deferred(db):
    """The index's intent journal (`deferred` rows as dicts), read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cur = con.execute("SELECT * FROM deferred ORDER BY root_id, inode, file_offset")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def index_integrity(db):
    """`PRAGMA integrity_check` of the index, read-only: "ok" or what it found."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return "; ".join(row[0] for row in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()
