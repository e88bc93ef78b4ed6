"""Files: random data, identical rewrites, SeriesBuilder (a snapshot series with known
duplicate bytes), and integrity: every file of every snapshot hashed, before and after."""

import errno
import hashlib
import os
import random
import stat

from .loopfs import MiB, subvol_create, subvol_snapshot
from .run import sh


# ---------------------------------------------------------------------------
# Data: random files, identical rewrites, snapshot series with known duplicates
# ---------------------------------------------------------------------------


def write_random(path, size, randbytes):
    """A new file of `size` bytes from randbytes(n) (e.g. a random.Random's), 4 MiB at a time."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(randbytes(n))
            left -= n
    return path


def identical_rewrite(path):
    """The same bytes written to a new file renamed over the old one (same mode): new extents,
    a pure duplicate. Returns its size."""
    with open(path, "rb") as f:
        data = f.read()
    mode = stat.S_IMODE(os.stat(path).st_mode)
    tmp = path + ".tmp~"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)
    return len(data)


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

    def rand(self, n):
        self.unique_bytes += n
        return self.rng.randbytes(n)

    def p(self, rel):
        return os.path.join(self.live, rel)

    def write_new(self, rel, size):
        return write_random(self.p(rel), size, self.rand)

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
        self.dup(identical_rewrite(self.p(rel)), f"identical rewrite of {rel}")

    def copy_noreflink(self, src, dst, sparse=None, count_dup=True):
        args = ["cp", "--reflink=never"]
        if sparse:
            args.append(f"--sparse={sparse}")
        os.makedirs(os.path.dirname(self.p(dst)), exist_ok=True)
        sh(*args, self.p(src), self.p(dst))
        if count_dup:
            self.dup(data_bytes(self.p(dst)), f"cp --reflink=never {src} {dst}")

    def snapshot(self, source=None):
        """A read-only snapshot of the live subvolume (or of `source`) as the next in the series."""
        dst = os.path.join(self.snapdir, f"{self.live_name}.{len(self.snapshots) + 1}")
        sh("sync")
        subvol_snapshot(source or self.live, dst, readonly=True)
        self.snapshots.append(dst)
        return dst


# ---------------------------------------------------------------------------
# Integrity: every file of every snapshot hashed, before and after
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


def _entry(p, st):
    base = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if stat.S_ISREG(st.st_mode):
        return ("file",) + base + (st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink, sha256_file(p))
    if stat.S_ISLNK(st.st_mode):
        return ("symlink",) + base + (os.readlink(p),)
    if stat.S_ISDIR(st.st_mode):
        if st.st_ino == 256 or st.st_ino == 2:  # nested subvolume root / empty subvol stub
            return ("subvol-or-dir",) + base
        return ("dir",) + base + (st.st_mtime_ns,)
    return ("other",) + base + (st.st_rdev, st.st_mtime_ns)


def manifest(root):
    """relpath -> tuple describing the entry (type, mode, uid, gid, size, mtime_ns,
    inode, nlink, sha256 or symlink target). atime/ctime are excluded (reading changes atime)."""
    res = {}
    root = os.path.abspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            p = os.path.join(dirpath, name)
            res[os.path.relpath(p, root)] = _entry(p, os.lstat(p))
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


def check_integrity(r, what, before, paths, skip=None):
    """One check: every entry of `paths` as in `before` (manifest_all), but those whose path
    starts with `skip`. "{files}" in `what` becomes the number of files compared."""
    d = [x for x in compare_manifests(before, manifest_all(paths), limit=100)
         if not (skip and x.startswith(skip + ":"))]
    return r.check(what.replace("{files}", str(file_count(before))), d == [], "; ".join(d[:5]))


def regular_files(root, key=lambda path, st: st.st_ino):
    """key(path, lstat) -> sorted relative paths of the regular files under root (by default
    keyed by inode number: its hard links are one entry)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                out.setdefault(key(path, st), []).append(os.path.relpath(path, root))
    return {k: sorted(v) for k, v in out.items()}


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


def make_deep_tree(top, levels, name):
    """`levels` nested directories called `name` under `top`, and a file deep.txt at the bottom,
    made through directory fds (the full path may be longer than PATH_MAX, which send refuses).
    Returns the length of the file's path below `top`."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        f = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"at the bottom\n")
        os.close(f)
    finally:
        os.close(fd)
    return levels * (len(name) + 1) + len("deep.txt")
