"""Independent interpretation of `btrfs receive --dump` output (stdlib only).

parse_dump()/send_dump() read a send stream's dump; SendOracle replays it over the
old snapshot to say which files changed, which were truncated and which got metadata
commands (used by test_diff_oracle and the fixture self-test); ground_truth_changes(),
size_or_bytes_changed() and metadata_changes() compare two trees directly.
"""

import os
import re
import stat
import subprocess
import tempfile

from snaptest import merge_ranges, regular_files


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
                out += n.encode("utf-8", "surrogateescape")
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
    __slots__ = ("kind", "children", "ranges", "changed", "created", "ino", "size", "truncated",
                 "size_before_truncate", "metadata")

    def __init__(self, kind, ino=None, created=False):
        self.kind = kind
        self.children = {} if kind == "dir" else None
        self.ranges = []
        self.changed = False
        self.created = created
        self.ino = ino
        # The size the stream itself establishes: a file it creates starts empty and data
        # commands grow it; `truncate size=` sets it. None: the stream never said (a file of the
        # old snapshot: the dump shows only the new size, never the old one).
        self.size = 0 if created and kind == "file" else None
        self.truncated = False
        self.size_before_truncate = None
        self.metadata = set()  # kinds, as the tool names them


class SendOracle:
    """Replays the name operations of a --no-data send stream dump on a model of the
    OLD tree (built from the OLD snapshot on disk, inode numbers give hard links) and
    records which inodes got update_extent/write/clone data commands."""

    DATA_CMDS = ("update_extent", "write", "clone")
    # Dump command -> the tool's metadata kind.
    METADATA_CMDS = {"chmod": "mode", "chown": "owner", "utimes": "times", "set_xattr": "xattr",
                     "remove_xattr": "xattr", "fileattr": "fileattr", "enable_verity": "verity"}
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
                    if node.size is not None and ln > 0:
                        node.size = max(node.size, off + ln)
                elif cmd == "truncate":
                    node = self._lookup(rel)
                    if not node.truncated:
                        node.truncated = True
                        node.size_before_truncate = node.size
                    node.size = int(kv["size"])
                elif cmd in self.METADATA_CMDS:
                    self._lookup(rel).metadata.add(self.METADATA_CMDS[cmd])
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

    def truncated(self):
        """list of dicts {names, old_size (None: the stream does not say), new_size, created} for
        regular files the stream truncated that still have a name at the end."""
        res = []
        for node, names in self.final_names().values():
            if node.kind == "file" and node.truncated:
                res.append({"names": sorted(names), "old_size": node.size_before_truncate,
                            "new_size": node.size, "created": node.created})
        return sorted(res, key=lambda d: d["names"])

    def metadata(self):
        """list of dicts {names, kinds (a set), created} for every inode (any type) that got
        metadata commands and still has a name at the end; the subvolume root is named "."."""
        res = []
        if self.root.metadata:
            res.append({"names": ["."], "kinds": set(self.root.metadata), "created": False})
        for node, names in self.final_names().values():
            if node.metadata:
                res.append({"names": sorted(names), "kinds": set(node.metadata), "created": node.created})
        return sorted(res, key=lambda d: d["names"])

    def created_names(self):
        """Final names of inodes a create command (mkfile, mkdir, ...) made in this stream."""
        return {n for node, names in self.final_names().values() if node.created for n in names}

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
    old, new = regular_files(old_root), regular_files(new_root)
    out = []
    for ino, names in new.items():
        with open(os.path.join(new_root, names[0]), "rb") as f:
            nb = f.read()
        if ino in old:
            with open(os.path.join(old_root, old[ino][0]), "rb") as f:
                ob = f.read()
            if new_data_differs(ob, nb):
                out.append((names, "modified"))
        elif nb.count(0) != len(nb):
            out.append((names, "new inode"))
    return out


def size_or_bytes_changed(old_root, new_root):
    """Regular files of NEW, by inode number, whose size or bytes differ from OLD's (a shrink,
    a grow with a hole, any byte). Returns list of names-in-NEW. Inodes new in NEW are not here:
    they are the `added` list's."""
    old, new = regular_files(old_root), regular_files(new_root)
    out = []
    for ino, names in new.items():
        if ino not in old:
            continue
        po, pn = os.path.join(old_root, old[ino][0]), os.path.join(new_root, names[0])
        if os.lstat(po).st_size != os.lstat(pn).st_size:
            out.append(names)
            continue
        with open(po, "rb") as fo, open(pn, "rb") as fn:
            if fo.read() != fn.read():
                out.append(names)
    return out


def _xattrs(path):
    return {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)}


def _inodes(root):
    """inode number -> (lstat, sorted relative names, xattrs) of every entry under root, the
    root itself named "."."""
    out = {}
    st = os.lstat(root)
    out[st.st_ino] = (st, ["."], _xattrs(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if st.st_ino in out:
                out[st.st_ino][1].append(os.path.relpath(p, root))
            else:
                out[st.st_ino] = (st, [os.path.relpath(p, root)], _xattrs(p))
    return {k: (st, sorted(n), x) for k, (st, n, x) in out.items()}


def metadata_changes(old_root, new_root):
    """Inodes in both trees (same number and type) whose permission bits, owner, mtime or
    xattrs differ. Returns list of (names-in-NEW, set of kinds: mode, owner, times, xattr).
    atime and ctime are left out: reading a file moves its atime, and a rename its ctime."""
    old, new = _inodes(old_root), _inodes(new_root)
    out = []
    for ino, (st, names, xa) in new.items():
        if ino not in old or stat.S_IFMT(old[ino][0].st_mode) != stat.S_IFMT(st.st_mode):
            continue
        ost, _, oxa = old[ino]
        kinds = set()
        if stat.S_IMODE(ost.st_mode) != stat.S_IMODE(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            kinds.add("mode")
        if (ost.st_uid, ost.st_gid) != (st.st_uid, st.st_gid):
            kinds.add("owner")
        if ost.st_mtime_ns != st.st_mtime_ns:
            kinds.add("times")
        if oxa != xa:
            kinds.add("xattr")
        if kinds:
            out.append((names, kinds))
    return out
