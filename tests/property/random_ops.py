"""Seeded random file-system operations on a live subvolume (stdlib only).

RandomOps(root, seed).populate() lays out a few files and directories; .step() applies one
random operation and returns a line describing it. The same seed on a fresh subvolume gives
the same operations, because every choice comes from one random.Random and every listing of
the tree is sorted.

The mix is what makes send streams hard to interpret: data at unaligned offsets, writes past
EOF (holes), truncates down and up, punched holes and preallocation, reflinks of whole files
and of block ranges (CLONE in the stream), renames of files and of directories, renames over
an existing name and name swaps (orphan names in the stream), hard links and unlinks, and
metadata-only changes (chmod, xattrs) that must not be mistaken for data.
"""

import fcntl
import os
import random
import struct
import subprocess

from snaptest import KiB, MiB

BLOCK = 4 * KiB
MAX_FILE = 3 * MiB           # keeps a 2000-operation run within a small loop filesystem
MAX_WRITE = 192 * KiB

# FICLONERANGE = _IOW(0x94, 13, struct file_clone_range {s64 src_fd; u64 src_offset,
# src_length, dest_offset}): a reflink of a block range, which `cp --reflink` cannot do.
FICLONERANGE = 0x4020940D

# Mostly plain names; a space and a non-ASCII name check the JSON path quoting too.
NAMES = ["f", "g", "data", "log", "x y", "é"]
DIR_NAMES = ["d", "sub", "cache", "e f"]


class RandomOps:
    def __init__(self, root, seed):
        self.root = root
        self.rng = random.Random(seed)
        self.counter = 0

    # -- the tree, listed in a stable order ----------------------------------------
    def p(self, rel):
        return os.path.join(self.root, rel)

    def listing(self):
        files, dirs = [], [""]
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel
            dirs.extend(os.path.join(rel, d) for d in dirnames)
            files.extend(os.path.join(rel, f) for f in sorted(filenames))
        return files, dirs

    def new_name(self, parent, names=NAMES):
        self.counter += 1  # the dot keeps it apart from the names populate() chose
        return os.path.join(parent, f"{self.rng.choice(names)}.{self.counter}")

    def size(self, rel):
        return os.stat(self.p(rel)).st_size

    # -- random numbers with the shapes that matter ---------------------------------
    def offset(self, limit):
        """An offset below limit: block-aligned half the time, anywhere otherwise."""
        limit = max(limit, 1)
        if self.rng.random() < 0.5:
            return self.rng.randrange(0, (limit + BLOCK - 1) // BLOCK) * BLOCK
        return self.rng.randrange(0, limit)

    def length(self, most=MAX_WRITE):
        r = self.rng.random()
        if r < 0.3:
            return self.rng.randint(1, 300)                    # inside one block
        if r < 0.6:
            return self.rng.randint(1, most // BLOCK) * BLOCK  # whole blocks
        return self.rng.randint(1, most)

    def payload(self, n):
        """Random bytes; sometimes zeros, which over data are a change and over a hole
        are not."""
        if self.rng.random() < 0.1:
            return bytes(n)
        return self.rng.randbytes(n)

    # -- setup -----------------------------------------------------------------------
    def populate(self):
        for d in ("d1", "d1/d2", "d3", "d3/deep/er"):
            os.makedirs(self.p(d), exist_ok=True)
        layout = [("small", 700), ("tiny", 3), ("one_block", BLOCK), ("d1/big", 2 * MiB + 123),
                  ("d1/d2/mid", 300 * KiB), ("d3/f", 64 * KiB + 1), ("d3/deep/er/g", 900 * KiB),
                  ("empty", 0), ("d1/odd", 129 * KiB - 7)]
        for rel, n in layout:
            with open(self.p(rel), "wb") as f:
                f.write(self.rng.randbytes(n))
        with open(self.p("sparse"), "wb") as f:                # data, hole, data
            f.write(self.rng.randbytes(100 * KiB))
            f.seek(MiB)
            f.write(self.rng.randbytes(50 * KiB))
        os.link(self.p("d1/d2/mid"), self.p("d3/mid_link"))
        os.setxattr(self.p("small"), "user.tag", b"a")

    # -- one operation ---------------------------------------------------------------
    WEIGHTS = [("create", 10), ("write", 12), ("overwrite", 12), ("append", 8), ("truncate", 8),
               ("rename_file", 6), ("rename_dir", 4), ("swap", 3), ("hard_link", 5), ("unlink", 5),
               ("reflink_copy", 4), ("clone_range", 4), ("punch_hole", 6), ("fallocate", 5),
               ("chmod", 3), ("xattr", 4), ("mkdir", 3)]

    def step(self):
        files, dirs = self.listing()
        names = [n for n, _ in self.WEIGHTS]
        op = self.rng.choices(names, weights=[w for _, w in self.WEIGHTS])[0]
        if not files and op not in ("mkdir", "rename_dir"):
            op = "create"
        return getattr(self, "op_" + op)(files, dirs)

    def op_create(self, files, dirs):
        rel = self.new_name(self.rng.choice(dirs))
        n = self.rng.choice([0, self.rng.randint(1, 2000), self.length(MiB)])
        with open(self.p(rel), "wb") as f:
            f.write(self.payload(n))
        return f"create {rel} {n}"

    def _pwrite(self, rel, off, n):
        n = max(0, min(n, MAX_FILE - off))
        fd = os.open(self.p(rel), os.O_WRONLY)
        try:
            os.pwrite(fd, self.payload(n), off)
        finally:
            os.close(fd)
        return n

    def op_write(self, files, dirs):
        """Anywhere up to 64 KiB past EOF: a write past EOF leaves a hole before it."""
        rel = self.rng.choice(files)
        off = self.offset(min(self.size(rel) + 64 * KiB, MAX_FILE))
        n = self._pwrite(rel, off, self.length())
        return f"write {rel} @{off} +{n}"

    def op_overwrite(self, files, dirs):
        rel = self.rng.choice(files)
        size = self.size(rel)
        if size == 0:
            return self.op_append(files, dirs)
        off = self.offset(size)
        n = self._pwrite(rel, off, min(self.length(), size - off))
        return f"overwrite {rel} @{off} +{n}"

    def op_append(self, files, dirs):
        rel = self.rng.choice(files)
        n = max(0, min(self.length(), MAX_FILE - self.size(rel)))
        with open(self.p(rel), "ab") as f:
            f.write(self.payload(n))
        return f"append {rel} +{n}"

    def op_truncate(self, files, dirs):
        rel = self.rng.choice(files)
        size = self.size(rel)
        new = self.offset(size) if self.rng.random() < 0.6 else min(size + self.length(MiB), MAX_FILE)
        os.truncate(self.p(rel), new)
        return f"truncate {rel} {size} -> {new}"

    def _dest(self, dirs, files):
        """A new name, or (sometimes) an existing file's name to replace."""
        if files and self.rng.random() < 0.2:
            return self.rng.choice(files)
        return self.new_name(self.rng.choice(dirs))

    def op_rename_file(self, files, dirs):
        src = self.rng.choice(files)
        dst = self._dest(dirs, files)
        os.rename(self.p(src), self.p(dst))
        return f"rename {src} -> {dst}"

    def op_rename_dir(self, files, dirs):
        movable = dirs[1:]
        if not movable:
            return self.op_mkdir(files, dirs)
        src = self.rng.choice(movable)
        targets = [d for d in dirs if d != src and not d.startswith(src + "/")]
        dst = self.new_name(self.rng.choice(targets), DIR_NAMES)
        os.rename(self.p(src), self.p(dst))
        return f"rename dir {src} -> {dst}"

    def op_swap(self, files, dirs):
        """a <-> b through a third name: the stream then needs an orphan name."""
        if len(files) < 2:
            return self.op_create(files, dirs)
        a, b = self.rng.sample(files, 2)
        tmp = self.new_name("")
        os.rename(self.p(a), self.p(tmp))
        os.rename(self.p(b), self.p(a))
        os.rename(self.p(tmp), self.p(b))
        return f"swap {a} <-> {b}"

    def op_hard_link(self, files, dirs):
        src = self.rng.choice(files)
        dst = self.new_name(self.rng.choice(dirs))
        os.link(self.p(src), self.p(dst))
        return f"link {src} -> {dst}"

    def op_unlink(self, files, dirs):
        if len(files) <= 4:
            return self.op_create(files, dirs)
        rel = self.rng.choice(files)
        os.unlink(self.p(rel))
        return f"unlink {rel}"

    def op_reflink_copy(self, files, dirs):
        src = self.rng.choice(files)
        dst = self._dest(dirs, files)
        if os.path.exists(self.p(dst)) and os.path.samefile(self.p(src), self.p(dst)):
            return f"reflink {src} onto a link of itself: skipped"
        subprocess.run(["cp", "--reflink=always", self.p(src), self.p(dst)], check=True)
        return f"reflink copy {src} -> {dst}"

    def op_clone_range(self, files, dirs):
        """Whole blocks of one file into another (or itself, elsewhere) at a block offset."""
        src, dst = self.rng.choice(files), self.rng.choice(files)
        blocks = self.size(src) // BLOCK
        if blocks == 0:
            return self.op_write(files, dirs)
        s_off = self.rng.randrange(blocks) * BLOCK
        n = self.rng.randint(1, min(blocks - s_off // BLOCK, 64)) * BLOCK
        d_off = self.rng.randrange(0, min(self.size(dst), MAX_FILE - n) // BLOCK + 1) * BLOCK
        same_inode = os.stat(self.p(src)).st_ino == os.stat(self.p(dst)).st_ino
        if same_inode and abs(s_off - d_off) < n:
            return f"clone {src} onto an overlapping range: skipped"
        with open(self.p(src), "rb") as s, open(self.p(dst), "r+b") as d:
            fcntl.ioctl(d.fileno(), FICLONERANGE, struct.pack("=qQQQ", s.fileno(), s_off, n, d_off))
        return f"clone {src} @{s_off} +{n} -> {dst} @{d_off}"

    def op_punch_hole(self, files, dirs):
        rel = self.rng.choice(files)
        size = self.size(rel)
        off, n = self.offset(size + BLOCK), self.length(MiB)
        subprocess.run(["fallocate", "-p", "-o", str(off), "-l", str(n), self.p(rel)], check=True)
        return f"punch hole {rel} @{off} +{n}"

    def op_fallocate(self, files, dirs):
        """Preallocation reads as zeros: past EOF it grows the file, or (-n) only reserves."""
        rel = self.rng.choice(files)
        off = self.offset(min(self.size(rel) + 256 * KiB, MAX_FILE))
        n = max(1, min(self.length(512 * KiB), MAX_FILE - off))
        keep = self.rng.random() < 0.4
        subprocess.run(["fallocate"] + (["-n"] if keep else []) + ["-o", str(off), "-l", str(n),
                                                                   self.p(rel)], check=True)
        return f"fallocate{' -n' if keep else ''} {rel} @{off} +{n}"

    def op_chmod(self, files, dirs):
        rel = self.rng.choice(files)
        mode = self.rng.choice([0o600, 0o644, 0o755, 0o400])
        os.chmod(self.p(rel), mode)
        return f"chmod {rel} {mode:o}"

    def xattr_value(self):
        """The bytes of a new extended attribute value: any bytes."""
        return self.rng.randbytes(self.rng.randint(0, 200))

    def op_xattr(self, files, dirs):
        rel = self.rng.choice(files + dirs[1:])
        name = self.rng.choice(["user.a", "user.b"])
        if self.rng.random() < 0.3:
            try:
                os.removexattr(self.p(rel), name)
            except OSError:
                pass
            return f"removexattr {rel} {name}"
        os.setxattr(self.p(rel), name, self.xattr_value())
        return f"setxattr {rel} {name}"

    def op_mkdir(self, files, dirs):
        rel = self.new_name(self.rng.choice(dirs), DIR_NAMES)
        os.mkdir(self.p(rel))
        return f"mkdir {rel}"
