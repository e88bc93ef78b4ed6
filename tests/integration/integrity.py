"""Integrity manifests for the snapdedupe integration tests (stdlib only).

sha256 + metadata of every entry under a tree (manifest()), of several trees
(manifest_all()), their comparison (compare_manifests()) and file_count().
Re-exported by btrfs_fixture.py.
"""

import hashlib
import os
import stat


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

