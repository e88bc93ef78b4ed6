"""What really changed between two snapshots, byte for byte, and whether a change set covers
it (stdlib only).

The rule. Files are matched by inode: snapshots of one subvolume keep inode numbers, and the
inode generation (FS_IOC_GETVERSION) tells a reused number from the same file. Every regular
file of NEW is cut into 4 KiB chunks aligned to the file offset (the last one ends at EOF) and
each chunk is compared with the same bytes of its OLD counterpart, where OLD reads as zeros
past its EOF and a file new in NEW is compared with zeros. A chunk differs if any byte does.

So a chunk that reads as zeros in NEW and was a hole, zeros or absent in OLD is not a change:
nothing there is worth reading or deduping, and the kernel's send skips a hole that was a hole
in the parent too. Bytes past NEW's EOF do not exist and are never a change (a shrink removes
data, it adds none). A rename, link or unlink changes names, not bytes, and counts under the
inode's names in NEW. Chunk granularity is what the change set promises: btrfs rewrites whole
4 KiB blocks, so a one-byte write must be covered by its whole block (up to EOF).
"""

import bisect
import fcntl
import os
import struct

from snaptest import merge_ranges, regular_files

CHUNK = 4096
FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): btrfs returns the inode generation


def generation(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8)))[0]
    finally:
        os.close(fd)


def inode_generation(path, st):
    """The key of a file in both snapshots: its inode number and generation."""
    return st.st_ino, generation(path)


def read_file(root, rel):
    with open(os.path.join(root, rel), "rb") as f:
        return f.read()


def changed_chunks(old, new):
    """(offset, length) of NEW's chunks that differ from OLD (None: a new file) by the rule."""
    if old is not None and old[:len(new)] == new:
        return []
    if old is None:
        old = b""
    out = []
    zeros = bytes(CHUNK)
    for off in range(0, len(new), CHUNK):
        n = min(CHUNK, len(new) - off)
        before = old[off:off + n]
        if len(before) < n:
            before += zeros[:n - len(before)]
        if new[off:off + n] != before:
            out.append((off, n))
    return out


def uncovered(required, flagged):
    """The parts of the required ranges that no flagged range covers; flagged is merged."""
    starts = [off for off, _ in flagged]
    missing = []
    for off, n in merge_ranges(required):
        pos, end = off, off + n
        i = max(bisect.bisect_right(starts, pos) - 1, 0)
        while pos < end:
            while i < len(flagged) and flagged[i][0] + flagged[i][1] <= pos:
                i += 1
            if i == len(flagged) or flagged[i][0] >= end:
                missing.append((pos, end - pos))
                break
            if flagged[i][0] > pos:
                missing.append((pos, flagged[i][0] - pos))
            pos = flagged[i][0] + flagged[i][1]
    return missing


class Comparison:
    """Ground truth of NEW against OLD, and a change set's coverage of it.

    truth: (ino, gen) -> {"names", "created", "chunks"} for every file of NEW with a
    differing chunk. check(change_set) fills false_negatives, bad_paths, wrong_created.
    """

    def __init__(self, old_root, new_root):
        self.new_root = new_root
        old_files = regular_files(old_root, key=inode_generation)
        self.new_files = regular_files(new_root, key=inode_generation)
        self.truth = {}
        for key, names in self.new_files.items():
            old = read_file(old_root, old_files[key][0]) if key in old_files else None
            chunks = changed_chunks(old, read_file(new_root, names[0]))
            if chunks:
                self.truth[key] = {"names": names, "created": key not in old_files, "chunks": chunks}
        self.existed = set(old_files)
        self.true_bytes = sum(n for t in self.truth.values() for _, n in t["chunks"])

    def check(self, change_set):
        """Compares the JSON of `snapdedupe diff --json` with the truth."""
        by_name = {name: key for key, names in self.new_files.items() for name in names}
        flagged = {}
        self.bad_paths, self.wrong_created = [], []
        self.flagged_bytes = change_set["changed_bytes"]
        for entry in change_set["changed"]:
            key = by_name.get(entry["path"])
            if key is None:
                self.bad_paths.append(entry["path"])
                continue
            if entry["created"] != (key not in self.existed):
                self.wrong_created.append(entry["path"])
            flagged.setdefault(key, []).extend((off, n) for off, n in entry["ranges"])
        self.false_negatives = []
        for key, t in sorted(self.truth.items()):
            missing = uncovered(t["chunks"], merge_ranges(flagged.get(key, [])))
            if missing:
                self.false_negatives.append({"names": t["names"], "created": t["created"],
                                             "missing": missing,
                                             "flagged": merge_ranges(flagged.get(key, []))})
        return self
