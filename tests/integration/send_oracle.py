"""Independent interpretation of `btrfs receive --dump` output (stdlib only).

parse_dump()/send_dump() read a send stream's dump; SendOracle replays it over the
old snapshot to say which files changed (used by test_diff_oracle and the fixture
self-test); ground_truth_changes() compares two trees directly.
Re-exported by btrfs_fixture.py.
"""

import os
import re
import stat
import subprocess
import tempfile


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

