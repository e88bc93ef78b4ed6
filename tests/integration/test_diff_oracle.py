#!/usr/bin/env python3
"""Integration test: `snapdedupe diff OLD NEW --json` against an independent oracle
built from `btrfs send --no-data -p OLD NEW | btrfs receive --dump`, plus a
ground-truth comparison of OLD and NEW (bytes, sizes, mode, owner, mtime, xattrs).

Besides the changed ranges: truncated files (their new size as the dump's `truncate
size=`, their old size unknown unless the stream created the file), metadata commands
by kind per path (chmod, chown, utimes, set_xattr/remove_xattr), inode numbers (the
stream carries INO only on the commands that create an inode), and the human lines.
A truncate-only and a metadata-only snapshot, and random edit series, make sure of it.

    python3 tests/integration/test_diff_oracle.py --snapdedupe build/snapdedupe
    python3 tests/integration/test_diff_oracle.py --selftest-fixture   # oracle only, no binary

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import os
import shutil
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "property"))

from random_ops import RandomOps  # noqa: E402
from send_oracle import (SendOracle, ground_truth_changes, metadata_changes, send_dump,  # noqa: E402
                         size_or_bytes_changed)
from snaptest import (GiB, KiB, MiB, SeriesBuilder, main, merge_ranges, run_parts, run_tool, sh,  # noqa: E402
                      subvol_create, subvol_snapshot)

PROG = "test_diff_oracle.py"


class Series(SeriesBuilder):
    """Snapshot series exercising renames (files and dirs), hard links, unlinks, rmdirs,
    new dirs, truncates, appends, clones, overwrites, name swaps (orphans), odd names."""

    def overwrite(self, rel, off, n):
        with open(self.p(rel), "r+b") as f:
            f.seek(off)
            f.write(self.rand(n))

    def append(self, rel, n):
        with open(self.p(rel), "ab") as f:
            f.write(self.rand(n))

    def s1(self):
        P = self.p
        for rel, size in (("a/f1", 300 * KiB), ("a/b/f2", MiB + 5), ("a/b/c/f3", 200 * KiB), ("t1", 2 * MiB),
                          ("t2", 700 * KiB), ("sp ace.txt", 64 * KiB), ("é.bin", 100 * KiB), ("hl_a", 256 * KiB)):
            self.write_new(rel, size)
        os.link(P("hl_a"), P("hl_b"))
        for rel, size in (("sw1", 128 * KiB), ("sw2", 160 * KiB), ("tr_shrink", MiB), ("tr_grow", 100 * KiB + 3),
                          ("app", 500 * KiB + 1), ("ovw", 4 * MiB), ("clsrc", 3 * MiB), ("rmd/x", 50 * KiB)):
            self.write_new(rel, size)
        os.setxattr(P("hl_a"), "user.gone", b"removed in s6")
        os.makedirs(P("rmd/empty"))
        for rel, size in (("d1/one", 40 * KiB), ("d2/two", 48 * KiB), ("tiny", 100)):
            self.write_new(rel, size)
        os.symlink("t1", P("sym"))
        self.snapshot()

    def s2(self):
        P = self.p
        os.rename(P("t1"), P("a/t1_moved"))                 # file rename, no data
        os.rename(P("a/b"), P("a/bb"))                      # dir rename ...
        self.overwrite("a/bb/f2", 300 * KiB, 8 * KiB)       # ... and a write below it
        os.link(P("t2"), P("a/t2_link"))                    # new hard link ...
        self.append("t2", 10 * KiB)                         # ... to a modified file
        os.unlink(P("a/f1"))
        shutil.rmtree(P("rmd"))                             # unlink + rmdir
        self.write_new("n/m/new1", 90 * KiB)                # new dirs with files
        self.write_new("n/new2", 33)
        os.truncate(P("tr_shrink"), 300 * KiB)
        os.truncate(P("tr_grow"), MiB)
        self.append("app", 200 * KiB)
        sh("cp", "--reflink=always", P("clsrc"), P("clone1"))
        self.overwrite("ovw", MiB, 64 * KiB)
        os.rename(P("sw1"), P("swtmp"))                     # swap names -> orphans in the stream
        os.rename(P("sw2"), P("sw1"))
        os.rename(P("swtmp"), P("sw2"))
        self.overwrite("sw1", 0, 4 * KiB)
        self.overwrite("hl_a", 8 * KiB, 4 * KiB)            # write to a hard-linked file
        self.overwrite("tiny", 10, 20)                      # inline extent
        self.snapshot()

    def s3(self):
        P = self.p
        os.rename(P("a"), P("z"))                           # rename of an ancestor dir
        self.overwrite("z/bb/c/f3", 4 * KiB, 4 * KiB)       # deep write below it
        shutil.rmtree(P("n/m"))                             # dir replaced by a file of the same name
        self.write_new("n/m", 70 * KiB)
        os.rename(P("sp ace.txt"), P("new name é.txt"))
        self.append("new name é.txt", 5 * KiB)
        os.makedirs(P("q"))
        os.rename(P("z/bb"), P("q/bb"))                     # dir moved into a new dir
        self.overwrite("q/bb/f2", 0, 4 * KiB)
        os.unlink(P("clsrc"))                               # clone source gone
        self.overwrite("clone1", 2 * MiB, 16 * KiB)
        os.makedirs(P("r"))
        sh("cp", "--reflink=always", P("ovw"), P("r/ovw_clone"))
        self.overwrite("r/ovw_clone", 12 * KiB, 4 * KiB)    # clone + write
        os.truncate(P("tr_shrink"), 0)                      # truncate to 0 and rewrite
        with open(P("tr_shrink"), "r+b") as f:
            f.write(self.rand(200 * KiB))
        self.snapshot()

    def s4(self):
        P = self.p
        os.rename(P("d1"), P("dtmp"))                       # swap directories
        os.rename(P("d2"), P("d1"))
        os.rename(P("dtmp"), P("d2"))
        self.overwrite("d1/two", 0, 4 * KiB)
        os.rename(P("t2"), P("app"))                        # rename over an existing file
        os.unlink(P("hl_b"))
        self.overwrite("hl_a", 0, 4 * KiB)
        for i in range(5):
            self.write_new(f"many/s{i}", 50 + i * 700)      # small (inline) files
        open(P("empty_new"), "wb").close()                  # new file without data
        sh("fallocate", "-l", str(MiB), P("prealloc"))      # preallocated, no data written
        os.symlink("new name é.txt", P("sym2"))
        self.snapshot()

    # Sizes that s5 gives: a shrink (unaligned), to zero (an inline file), a hard-linked file
    # (listed under its first name, as `changed` would), a grow that leaves a hole.
    TRUNCATES = {"ovw": MiB + 5, "tiny": 0, "é.bin": 40 * KiB, "app": 100 * KiB, "tr_grow": 2 * MiB}

    def s5(self):
        """Truncates only: no byte is written."""
        for rel, size in self.TRUNCATES.items():
            os.truncate(self.p(rel), size)
        self.snapshot()

    # What s6 does, and the kinds the diff must give each path (at least).
    METADATA = {"sw1": {"mode"}, "sw2": {"owner"}, "clone1": {"times"}, "tr_shrink": {"xattr"},
                "q": {"xattr"}, "hl_a": {"xattr"}, "many": {"mode"}, "sym": {"owner"}}

    def s6(self):
        """Metadata only: chmod, chown, touch -d, setfattr and its removal."""
        P = self.p
        os.chmod(P("sw1"), 0o600)
        os.chown(P("sw2"), 1234, 5678)
        sh("touch", "-d", "2001-02-03 04:05:06", P("clone1"))
        os.setxattr(P("tr_shrink"), "user.tag", b"v1")       # what setfattr -n user.tag -v v1 does
        os.setxattr(P("q"), "user.dir", b"d")                # on a directory
        os.removexattr(P("hl_a"), "user.gone")               # setfattr -x, on a hard-linked file
        os.chmod(P("many"), 0o700)
        os.chown(P("sym"), 1234, 5678, follow_symlinks=False)
        self.snapshot()


def build_series(fs):
    b = Series(fs, seed=4242)
    b.s1()
    b.s2()
    b.s3()
    b.s4()
    b.s5()
    b.s6()
    return b


def check_oracle(r, old, new, label):
    """The oracle resolves the stream and covers the byte comparison. Returns (the oracle, its
    changed files, ground truth)."""
    orc = SendOracle(old, send_dump(old, new))
    oc = orc.changed()
    print(f"  {label}: {len(orc.cmds)} stream commands, oracle changed files: "
          f"{[c['names'] for c in oc]}", flush=True)
    r.check(f"{label}: oracle resolved every stream command", not orc.unknown, "; ".join(orc.unknown[:5]))
    bad = [n for c in oc for n in c["names"] if not stat.S_ISREG(os.lstat(os.path.join(new, n)).st_mode)]
    r.check(f"{label}: oracle final paths are regular files in NEW", not bad, str(bad))
    gt = ground_truth_changes(old, new)
    onames = {n for c in oc for n in c["names"]}
    miss = [g for g in gt if not set(g[0]) & onames]
    r.check(f"{label}: oracle covers every file with new data (ground truth)", not miss, str(miss))
    return orc, oc, gt


def is_range(x):
    return isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) for v in x)


def shape_ok(j):
    """The diff --json contract: changed [{path, ranges, created}], added, removed, renamed."""
    return (isinstance(j, dict) and all(isinstance(j.get(k), list) for k in ("changed", "added", "removed", "renamed"))
            and all(isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("ranges"), list)
                    and isinstance(e.get("created"), bool) and all(is_range(x) for x in e["ranges"])
                    for e in j["changed"])
            and all(isinstance(p, str) for p in j["added"] + j["removed"])
            and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in j["renamed"]))


def compare_changed(oc, by_path):
    """The tool's changed entries against the oracle's: every changed inode listed under (one
    of) its final names, nothing else. Returns (missing, extra, range_bad, created_bad)."""
    missing, range_bad, created_bad, covered = [], [], [], set()
    for c in oc:
        hits = [e for n in c["names"] for e in by_path.get(n, [])]
        covered.update(n for n in c["names"] if n in by_path)
        if not hits:
            missing.append(c["names"])
            continue
        tr = merge_ranges([x for e in hits for x in e["ranges"]])
        if tr != c["ranges"]:
            range_bad.append(f"{c['names']}: tool {tr} oracle {c['ranges']}")
        if any(e["created"] != c["created"] for e in hits):
            created_bad.append(f"{c['names']}: tool {[e['created'] for e in hits]} oracle {c['created']}")
    return missing, sorted(set(by_path) - covered), range_bad, created_bad


def check_tool(r, j, old, new, label, oc, gt):
    tool = j["changed"]
    all_paths = ([e["path"] for e in tool] + j["added"] + j["removed"] + [p for pr in j["renamed"] for p in pr])
    badp = [p for p in all_paths if p.startswith("./") or p.startswith("/") or p == ""]
    r.check(f"{label}: paths relative, no leading './' or '/'", not badp, str(badp[:5]))
    by_path = {}
    for e in tool:
        by_path.setdefault(e["path"], []).append(e)
    dup_entries = [p for p, es in by_path.items() if len(es) > 1]
    r.check(f"{label}: no path listed twice in changed", not dup_entries, str(dup_entries))
    missing, extra, range_bad, created_bad = compare_changed(oc, by_path)
    r.check(f"{label}: changed paths == oracle (missing {len(missing)}, extra {len(extra)})",
            not missing and not extra, f"missing {missing} extra {extra}")
    r.check(f"{label}: merged ranges per file == oracle update_extent/write/clone union",
            not range_bad, "; ".join(range_bad[:5]))
    r.check(f"{label}: created flag == file created in this stream (mkfile)", not created_bad,
            "; ".join(created_bad[:5]))
    listed = set(by_path) | set(j["added"])
    gmiss = [g for g in gt if not set(g[0]) & listed]
    r.check(f"{label}: every file with new data (byte comparison) is in changed or added", not gmiss, str(gmiss))
    noadd = [p for p in j["added"] if not os.path.lexists(os.path.join(new, p))]
    norem = [p for p in j["removed"] if not os.path.lexists(os.path.join(old, p))]
    noren = [pr for pr in j["renamed"] if not (os.path.lexists(os.path.join(old, pr[0]))
                                               and os.path.lexists(os.path.join(new, pr[1])))]
    r.check(f"{label}: added exist in NEW, removed exist in OLD, renamed from OLD to NEW",
            not noadd and not norem and not noren, f"{noadd} {norem} {noren}")


KINDS = ("mode", "owner", "times", "xattr", "fileattr", "verity")  # in the order the tool prints them


def is_size(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def new_shape_ok(j):
    """What diff --json gained: "ino" on each changed entry; truncated [{path, ino, created,
    old_size, new_size}]; metadata [{path, ino, created, kinds}]. ino and old_size may be null."""
    def ino_ok(e):
        return "ino" in e and (e["ino"] is None or is_size(e["ino"]))
    return (all(ino_ok(e) for e in j["changed"])
            and isinstance(j.get("truncated"), list) and isinstance(j.get("metadata"), list)
            and all(isinstance(e, dict) and isinstance(e.get("path"), str) and ino_ok(e)
                    and isinstance(e.get("created"), bool) and "old_size" in e
                    and (e["old_size"] is None or is_size(e["old_size"])) and is_size(e.get("new_size"))
                    for e in j["truncated"])
            and all(isinstance(e, dict) and isinstance(e.get("path"), str) and ino_ok(e)
                    and isinstance(e.get("created"), bool) and isinstance(e.get("kinds"), list) and e["kinds"]
                    and all(k in KINDS for k in e["kinds"]) and e["kinds"] == sorted(e["kinds"], key=KINDS.index)
                    for e in j["metadata"]))


def match_by_inode(expected, entries):
    """expected: oracle dicts with "names"; entries: the tool's dicts with "path". Each expected
    inode must be listed once under one of its names. Returns (pairs, missing, extra, doubled)."""
    by_path = {}
    for e in entries:
        by_path.setdefault(e["path"], []).append(e)
    pairs, missing, covered = [], [], set()
    for x in expected:
        hits = [e for n in x["names"] for e in by_path.get(n, [])]
        covered.update(n for n in x["names"] if n in by_path)
        if not hits:
            missing.append(x["names"])
        else:
            pairs.append((x, hits))
    doubled = [x["names"] for x, hits in pairs if len(hits) > 1]
    return pairs, missing, sorted(set(by_path) - covered), doubled


def check_new_kinds(r, j, old, new, label, orc):
    """truncated, metadata and ino against the dump's oracle and the two trees."""
    pairs, missing, extra, doubled = match_by_inode(orc.truncated(), j["truncated"])
    r.check(f"{label}: truncated == the dump's truncates (missing {len(missing)}, extra {len(extra)})",
            not missing and not extra and not doubled, f"missing {missing} extra {extra} twice {doubled}")
    bad = [f"{x['names']}: tool {e['old_size']} -> {e['new_size']} created {e['created']}, dump "
           f"{x['old_size']} -> {x['new_size']} created {x['created']}"
           for x, (e, *_) in pairs
           if (e["old_size"], e["new_size"], e["created"]) != (x["old_size"], x["new_size"], x["created"])]
    r.check(f"{label}: truncated sizes == the dump's (old size unknown unless the stream made the file)",
            not bad, "; ".join(bad[:5]))
    wrong_size = [(e["path"], e["new_size"], os.lstat(os.path.join(new, e["path"])).st_size)
                  for e in j["truncated"] if e["new_size"] != os.lstat(os.path.join(new, e["path"])).st_size]
    r.check(f"{label}: truncated new_size == the file's size in NEW", not wrong_size, str(wrong_size[:5]))

    pairs, missing, extra, doubled = match_by_inode(orc.metadata(), j["metadata"])
    r.check(f"{label}: metadata paths == the dump's chmod/chown/utimes/xattr commands "
            f"(missing {len(missing)}, extra {len(extra)})", not missing and not extra and not doubled,
            f"missing {missing[:5]} extra {extra[:5]} twice {doubled[:5]}")
    bad = [f"{x['names']}: tool {e['kinds']} created {e['created']}, dump {sorted(x['kinds'])} "
           f"created {x['created']}" for x, (e, *_) in pairs
           if set(e["kinds"]) != x["kinds"] or e["created"] != x["created"]]
    r.check(f"{label}: metadata kinds per path == the dump's", not bad, "; ".join(bad[:5]))

    # Ground truth, without the stream: every changed size or byte, every changed mode, owner,
    # mtime or xattr of an inode OLD had is listed, with its kind.
    listed = {e["path"] for e in j["changed"]} | {e["path"] for e in j["truncated"]}
    unlisted = [n for n in size_or_bytes_changed(old, new) if not set(n) & listed]
    r.check(f"{label}: every file whose size or bytes differ is in changed or truncated", not unlisted,
            str(unlisted[:5]))
    kinds = {e["path"]: set(e["kinds"]) for e in j["metadata"]}
    unlisted = [(n, sorted(k)) for n, k in metadata_changes(old, new)
                if not any(k <= kinds.get(p, set()) for p in n)]
    r.check(f"{label}: every changed mode, owner, mtime or xattr is in metadata with its kind", not unlisted,
            str(unlisted[:5]))

    # Inode numbers: the stream states them for the inodes it creates, and only those.
    made = orc.created_names()
    bad = []
    for what in ("changed", "truncated", "metadata"):
        for e in j[what]:
            want = os.lstat(os.path.join(new, e["path"])).st_ino if e["path"] in made else None
            if e["ino"] != want:
                bad.append(f"{what} {e['path']}: ino {e['ino']}, expected {want}")
    r.check(f"{label}: ino == the inode number in NEW for inodes the stream creates, else null", not bad,
            "; ".join(bad[:5]))


def human_lines(j):
    """The human output that the JSON says there should be, line for line."""
    def size(v):
        return "unknown" if v is None else str(v)
    return ([f"added    {p}" for p in j["added"]] + [f"removed  {p}" for p in j["removed"]]
            + [f"renamed  {a} -> {b}" for a, b in j["renamed"]]
            + [f"changed  {e['path']}" + "".join(f" [{o}+{n}]" for o, n in e["ranges"]) for e in j["changed"]]
            + [f"truncated {e['path']} {size(e['old_size'])} -> {e['new_size']}" for e in j["truncated"]]
            + [f"metadata  {e['path']} {','.join(e['kinds'])}" for e in j["metadata"]]
            + [f"{len(j['changed'])} files changed, {j['changed_bytes']} bytes"])


def check_pair(r, binary, old, new, label, expect=None):
    orc, oc, gt = check_oracle(r, old, new, label)
    if binary is None:
        return
    res = run_tool(binary, ["diff", old, new, "--json"])
    r.check(f"{label}: diff exit 0", res.rc == 0, res.describe())
    ok = shape_ok(res.json)
    r.check(f"{label}: JSON shape matches contract", ok, res.json_error or res.stdout[:300])
    if ok:
        check_tool(r, res.json, old, new, label, oc, gt)
        if r.check(f"{label}: JSON has ino, truncated and metadata in their shape", new_shape_ok(res.json),
                   res.stdout[:300]):
            check_new_kinds(r, res.json, old, new, label, orc)
            human = run_tool(binary, ["diff", old, new])
            r.check(f"{label}: human output: the old lines as before, then truncated and metadata lines",
                    human.rc == 0 and human.stdout.splitlines() == human_lines(res.json),
                    human.describe())
            if expect:
                expect(res.json)
    return res.json


def expect_truncates(r, label):
    def check(j):
        got = {e["path"]: (e["old_size"], e["new_size"]) for e in j["truncated"]}
        shrunk = {p: n for p, n in Series.TRUNCATES.items() if p != "tr_grow"}
        want = {p: (None, n) for p, n in shrunk.items()}
        r.check(f"{label}: each shrink is listed as truncated, old size unknown, new size as truncated",
                {p: got.get(p) for p in want} == want, f"got {got}")
        r.check(f"{label}: the hole that the grow left is listed", any(
            e["path"] == "tr_grow" for e in j["changed"] + j["truncated"]), str(j["changed"]))
        r.check(f"{label}: nothing added, removed or renamed, no metadata but times",
                not j["added"] and not j["removed"] and not j["renamed"]
                and all(e["kinds"] == ["times"] for e in j["metadata"]), str(j["metadata"]))
    return check


def expect_metadata(r, label):
    def check(j):
        got = {e["path"]: set(e["kinds"]) for e in j["metadata"]}
        bad = {p: sorted(got.get(p, set())) for p, k in Series.METADATA.items() if not k <= got.get(p, set())}
        r.check(f"{label}: chmod, chown, touch -d, setfattr and its removal listed with their kind",
                not bad, str(bad))
        r.check(f"{label}: metadata only: no changed, truncated, added, removed or renamed",
                not j["changed"] and not j["truncated"] and not j["added"] and not j["removed"]
                and not j["renamed"], str({k: j[k] for k in ("changed", "truncated", "added")}))
    return check


def check_all_pairs(r, ws, binary):
    r.section("build snapshot series")
    fs = ws.make_btrfs("diff", size=GiB)
    b = build_series(fs)
    snaps = b.snapshots
    pairs = list(zip(snaps, snaps[1:])) + [(snaps[0], snaps[-1])]
    expects = {(snaps[3], snaps[4]): expect_truncates, (snaps[4], snaps[5]): expect_metadata}
    parts = []
    for old, new in pairs:
        label = f"{os.path.basename(old)}->{os.path.basename(new)}"
        expect = expects[(old, new)](r, label) if (old, new) in expects else None
        parts.append((label, lambda old=old, new=new, label=label, expect=expect: (
            r.section(f"pair {label}"), check_pair(r, binary, old, new, label, expect))))
    run_parts(r, parts)


class EditOps(RandomOps):
    """The property test's random operations, weighted to edits that change a file's size or
    metadata only, plus chown and touch -d."""
    WEIGHTS = [("create", 4), ("write", 4), ("overwrite", 8), ("append", 4), ("truncate", 20),
               ("rename_file", 4), ("hard_link", 3), ("unlink", 2), ("punch_hole", 3), ("fallocate", 3),
               ("chmod", 8), ("xattr", 8), ("chown", 5), ("touch", 5), ("mkdir", 2)]

    def op_chown(self, files, dirs):
        rel = self.rng.choice(files + dirs[1:])
        uid, gid = self.rng.choice([(0, 0), (1000, 1000), (1234, 5678)])
        os.chown(self.p(rel), uid, gid)
        return f"chown {rel} {uid}:{gid}"

    def xattr_value(self):
        """Printable: `btrfs receive --dump` prints set_xattr data raw, and a newline in it would
        split the dump's line."""
        return self.rng.randbytes(self.rng.randint(0, 100)).hex().encode()

    def op_touch(self, files, dirs):
        rel = self.rng.choice(files + dirs[1:])
        when = self.rng.randrange(10 ** 9)
        os.utime(self.p(rel), (when, when))
        return f"touch -d @{when} {rel}"


RANDOM_SEEDS, RANDOM_OPS = (1, 2, 3), 40


def check_random_series(r, ws, binary):
    """Random edit series (EditOps): A, N operations, B; the pair checked as above, and the
    figure the issue asked for: changed inodes (by the trees) against those the diff lists."""
    for seed in RANDOM_SEEDS:
        label = f"random seed {seed}"
        r.section(f"{label}: {RANDOM_OPS} edits")
        fs = ws.make_btrfs(f"rand{seed}", size=GiB)
        live = fs.path("live")
        subvol_create(live)
        ops = EditOps(live, seed)
        ops.populate()
        a, b = fs.path("A"), fs.path("B")
        subvol_snapshot(live, a)
        log = [ops.step() for _ in range(RANDOM_OPS)]
        subvol_snapshot(live, b)
        j = check_pair(r, binary, a, b, label)
        sized = size_or_bytes_changed(a, b)
        meta = metadata_changes(a, b)
        r.check(f"{label}: the edits changed a size and some metadata (the test is not vacuous)",
                sized and meta, f"{len(sized)} sized, {len(meta)} metadata; ops: {log}")
        if j is not None and "truncated" in j:
            listed = {e["path"] for e in j["changed"] + j["truncated"]}
            kinds = {e["path"]: set(e["kinds"]) for e in j["metadata"]}
            changed = {tuple(n) for n in sized} | {tuple(n) for n, _ in meta}
            missing = ({tuple(n) for n in sized if not set(n) & listed}
                       | {tuple(n) for n, k in meta if not any(k <= kinds.get(p, set()) for p in n)})
            print(f"  {label}: {len(changed)} inodes of A changed in size, bytes or metadata; "
                  f"{len(changed) - len(missing)} listed, {len(missing)} missing", flush=True)


if __name__ == "__main__":
    main(PROG, __doc__, [check_all_pairs, check_random_series], selftest=True)
