#!/usr/bin/env python3
"""Integration test: trees that used to stop or confuse a run (issue 9).

    python3 tests/integration/test_hostile_trees.py --snapdedupe build/plugin/snapdedupe

* Another filesystem mounted in the snapshot directory: a read-only snapshot of a second loop
  btrfs mounted (`mount -o subvol=`) at snaps/foreign beside snaps/a.1 and snaps/a.2. `run`
  exits 0 with one stderr line naming it ("another filesystem is mounted there"), the index
  holds rows for the first filesystem's snapshots only, the foreign filesystem is untouched, and
  a second run processes nothing and forgets nothing.
* Another filesystem mounted on a snapshot's own name ("my snaps/a.2" covered by the second
  filesystem's read-only snapshot): the run names it on one stderr line ("another filesystem is
  mounted there"), processes a.1 only, and leaves the second filesystem alone. Once it is
  unmounted, the next run processes a.2 and frees its copy of a.1's file.
* A path longer than the kernel's send limit (20 nested directories of 250 bytes) in the
  middle snapshot of three: `btrfs send --no-data` of it fails with ENAMETOOLONG (checked by
  hand first). `run` names it on one stderr line, processes the other two, exits 1 at the end,
  and still frees their duplicates: a copy in the third of a file of the first, and a copy in
  the third of a file that first appeared in the unsendable one (so the third must be diffed
  against the first). The next run says the same and processes nothing.
* Names that are not UTF-8 (0xff, 0xfe, 0xfd bytes) and names with a newline, in snapshot
  directory names and in duplicated, renamed and removed files: `run --json` and
  `diff --json` are strict UTF-8 JSON (json.loads, strict); each byte that is not UTF-8 is
  written as \\u00XX and a sibling `<field>_bytes_hex` holds the exact bytes, which must decode
  to the name on disk; valid names get no sibling. The duplicates are freed.
* After every run: every file of every snapshot hashes the same (walked with directory fds, so
  paths longer than PATH_MAX are hashed too) and every snapshot is still read-only.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import codecs
import hashlib
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, KiB, MiB, SeriesBuilder, compare_manifests, df, fs_uuid, make_deep_tree,  # noqa: E402
                      is_readonly, main, proc_mounts, remove_lock_files, run_tool, sh, subvol_create, subvol_ids,
                      validate_run_json)

PROG = "test_hostile_trees.py"
USED_FS = []  # uuids of this test's filesystems: their lock files go at the end
DEEP_NAME = "d" * 250
DEEP_LEVELS = 20


# ---------------------------------------------------------------------------
# Integrity through directory fds (no path is ever longer than one name)
# ---------------------------------------------------------------------------


def _sha256_at(dfd, name):
    h = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def _entry_at(dfd, name, st):
    """The tuple snaptest's manifest() records, read relative to a directory fd."""
    base = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if stat.S_ISREG(st.st_mode):
        return ("file",) + base + (st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink, _sha256_at(dfd, name))
    if stat.S_ISLNK(st.st_mode):
        return ("symlink",) + base + (os.readlink(name, dir_fd=dfd),)
    if stat.S_ISDIR(st.st_mode):
        if st.st_ino in (256, 2):
            return ("subvol-or-dir",) + base
        return ("dir",) + base + (st.st_mtime_ns,)
    return ("other",) + base + (st.st_rdev, st.st_mtime_ns)


def manifest_fd(root):
    """relpath -> entry for every entry under root, like snaptest.manifest(), but walked with
    openat() so that paths longer than PATH_MAX work; names may be any bytes."""
    res = {}

    def walk(dfd, rel):
        for name in sorted(os.listdir(dfd)):
            st = os.lstat(name, dir_fd=dfd)
            path = f"{rel}/{name}" if rel else name
            res[path] = _entry_at(dfd, name, st)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                try:
                    walk(sub, path)
                finally:
                    os.close(sub)

    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        walk(top, "")
    finally:
        os.close(top)
    return res


def manifests(paths):
    return {p: manifest_fd(p) for p in paths}


def check_snapshots(r, label, before, ro_paths):
    d = compare_manifests(before, manifests(list(before)), limit=100)
    files = sum(1 for m in before.values() for v in m.values() if v[0] == "file")
    r.check(f"{label}: every file of every snapshot hashes the same ({files} files)", d == [], "; ".join(d[:5]))
    not_ro = [p for p in ro_paths if not is_readonly(p)]
    r.check(f"{label}: every snapshot still read-only", not not_ro, ", ".join(not_ro))


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def P(b):
    """A bytes path as the str os and subprocess take (surrogateescape)."""
    return os.fsdecode(b)


def run_raw(binary, args, timeout=600):
    """Runs the binary; (rc, stdout bytes, stderr bytes, seconds). Nothing decoded."""
    argv = [binary] + [P(a) if isinstance(a, bytes) else str(a) for a in args]
    print(f"  $ {' '.join(ascii(a)[1:-1] for a in argv)}", flush=True)
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def strict_json(out):
    """(object, None) if `out` is strict UTF-8 holding one strict JSON value, else (None, why)."""
    try:
        text = out.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8: {e}"
    try:
        return json.loads(text, strict=True), None
    except ValueError as e:
        return None, f"not JSON: {e}"


def index_query(db, sql):
    """Rows of a query on an index that has no -wal (the binary closed it), read without side files."""
    if os.path.exists(db + "-wal"):
        raise RuntimeError(f"{db}-wal still exists after the run")
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return sorted(con.execute(sql).fetchall())
    finally:
        con.close()


def one_line(res):
    lines = res.stderr_lines()
    return len(lines) == 1 and lines[0].startswith("snapdedupe: ")


# The scheme: each byte that is not part of valid UTF-8 is written as \u00XX.
def _u00(e):
    return "".join(chr(b) for b in e.object[e.start:e.end]), e.end


codecs.register_error("snapdedupe_u00", _u00)


def scheme_text(raw):
    return raw.decode("utf-8", errors="snapdedupe_u00")


def is_utf8(raw):
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def hex_sibling_problems(obj, where="$"):
    """Every `<k>_bytes_hex` sibling in the JSON: same shape as `<k>`, hex for a string that is
    not UTF-8 (decoding to bytes that are not UTF-8 and whose \\u00XX text is the string), null
    for one that is. Returns (problems, number of hex strings checked)."""
    probs, n = [], 0

    def pair(s, h, at):
        nonlocal n
        if isinstance(s, list) and isinstance(h, list) and len(s) == len(h):
            for i, (a, b) in enumerate(zip(s, h)):
                pair(a, b, f"{at}[{i}]")
        elif isinstance(s, str) and h is None:
            pass
        elif isinstance(s, str) and isinstance(h, str):
            n += 1
            try:
                raw = bytes.fromhex(h)
            except ValueError:
                probs.append(f"{at}: not hex: {h!r}")
                return
            if is_utf8(raw):
                probs.append(f"{at}: hex sibling for a valid UTF-8 name {raw!r}")
            if scheme_text(raw) != s:
                probs.append(f"{at}: {s!r} is not the \\u00XX text of {raw!r}")
        else:
            probs.append(f"{at}: shapes differ: {s!r} vs {h!r}")

    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith("_bytes_hex"):
                base = k[:-len("_bytes_hex")]
                if base not in obj:
                    probs.append(f"{where}.{k}: no field {base}")
                else:
                    pair(obj[base], v, f"{where}.{base}")
            else:
                p, m = hex_sibling_problems(v, f"{where}.{k}")
                probs += p
                n += m
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            p, m = hex_sibling_problems(v, f"{where}[{i}]")
            probs += p
            n += m
    return probs, n


def recover(obj, key, i=None, j=None):
    """The exact bytes of obj[key] (or its [i] / [i][j]): from the hex sibling where there is one."""
    def at(v):
        if i is not None:
            v = v[i]
        if j is not None:
            v = v[j]
        return v
    h = obj.get(key + "_bytes_hex")
    if h is not None and at(h) is not None:
        return bytes.fromhex(at(h))
    return at(obj[key]).encode("utf-8")


# ---------------------------------------------------------------------------
# 1. Another filesystem mounted in the snapshot directory
# ---------------------------------------------------------------------------


def series_pair(ws, names, snapdir, seed, extra_files=()):
    """Two filesystems: A's snapdir holds a.1 (big.bin, and `extra_files`) and a.2 (a copy of
    big.bin); B's bsnaps/b.1 holds x.bin and a copy of it, a duplicate that a run on A must leave
    alone. Returns (fs_a, fs_b, a, b); both uuids are appended to USED_FS, A's first."""
    fs_a = ws.make_btrfs(names[0], size=GiB)
    fs_b = ws.make_btrfs(names[1], size=GiB)
    USED_FS.extend([fs_uuid(fs_a.mnt), fs_uuid(fs_b.mnt)])
    a = SeriesBuilder(fs_a, live="a", snapdir=snapdir, seed=seed)
    a.write_new("big.bin", 2 * MiB)
    for name, size in extra_files:
        a.write_new(name, size)
    a.snapshot()
    a.copy_noreflink("big.bin", "big.copy")
    a.snapshot()
    b = SeriesBuilder(fs_b, live="b", snapdir="bsnaps", seed=seed + 1)
    b.write_new("x.bin", MiB)
    b.copy_noreflink("x.bin", "x.copy")
    b.snapshot()
    return fs_a, fs_b, a, b


def part_foreign_mount(r, ws, binary):
    r.section("1. a read-only snapshot of another btrfs mounted in the snapshot directory")
    fs_a, fs_b, a, b = series_pair(ws, ("hostA", "hostB"), "snaps", 511, [("etc/conf", 3 * KiB)])
    uuid_a = USED_FS[-2]
    foreign = fs_a.path("snaps", "foreign")
    os.mkdir(foreign)
    sh("mount", "-t", "btrfs", "-o", "subvol=bsnaps/b.1", fs_b.dev, foreign)
    ws.mounts.append(foreign)                    # unmounted first: it sits inside fs_a
    r.check("fixture: snaps/foreign is a mount of B's read-only snapshot b.1",
            any(m == foreign for _, m, _ in proc_mounts()) and os.stat(foreign).st_ino == 256
            and is_readonly(foreign) and os.stat(foreign).st_dev != os.stat(fs_a.path("snaps")).st_dev)
    r.check("fixture: the foreign snapshot holds b.1's files", sorted(os.listdir(foreign)) == ["x.bin", "x.copy"],
            str(os.listdir(foreign)))
    snaps = list(a.snapshots)
    ro = snaps + [b.snapshots[0], foreign]
    before = manifests(snaps + [b.snapshots[0], foreign])
    ids = {s: int(subvol_ids(s)["Subvolume ID"]) for s in snaps}
    db = ws.tmp("foreign.sqlite")
    usage_a, usage_b = df(fs_a.mnt)["data_used"], df(fs_b.mnt)["data_used"]

    def run(label):
        res = run_tool(binary, ["run", "--db", db, "--json", fs_a.path("snaps")])
        probs = validate_run_json(res.json) if isinstance(res.json, dict) else ["no JSON"]
        r.check(f"{label}: exit 0, valid JSON report", res.rc == 0 and probs == [], f"{res.describe()} {probs}")
        r.check(f"{label}: exactly one stderr line, naming {foreign}: another filesystem is mounted there",
                one_line(res) and foreign in res.stderr and "another filesystem is mounted there" in res.stderr,
                repr(res.stderr[:500]))
        r.check(f"{label}: report lists only filesystem A", res.get("filesystems") == [uuid_a],
                str(res.get("filesystems")))
        return res

    res = run("first run")
    r.check("first run: a.1 and a.2 processed, nothing else",
            res.num("snapshots_processed") == 2
            and sorted(s.get("path") for s in res.get("snapshots", [])) == sorted(snaps), res.describe())
    r.check("first run: A's copy deduped (>= 2 MiB)", (res.num("deduped_bytes") or 0) >= 2 * MiB,
            str(res.num("deduped_bytes")))
    freed_a = usage_a - df(fs_a.mnt)["data_used"]
    r.check("first run: A's data usage dropped by >= 0.95 x 2 MiB", freed_a >= 0.95 * 2 * MiB, str(freed_a))
    r.check("first run: B's data usage unchanged (its own duplicate left alone)",
            df(fs_b.mnt)["data_used"] == usage_b, f"{usage_b} -> {df(fs_b.mnt)['data_used']}")
    rows = index_query(db, "SELECT root_id, path FROM snapshots")
    want = sorted((ids[s], s) for s in snaps)
    r.check("first run: index snapshots rows are exactly a.1 and a.2 (root id, path)", rows == want,
            f"{rows} vs {want}")
    block_roots = {x[0] for x in index_query(db, "SELECT DISTINCT root_id FROM blocks")}
    r.check("first run: every indexed block belongs to a.1 or a.2", block_roots and block_roots <= set(ids.values()),
            f"{block_roots} vs {set(ids.values())}")
    check_snapshots(r, "first run", before, ro)

    blocks = index_query(db, "SELECT * FROM blocks")
    snap_rows = index_query(db, "SELECT uuid, root_id, path, changed_bytes FROM snapshots")
    res = run("second run")
    r.check("second run: snapshots_processed == 0", res.num("snapshots_processed") == 0, res.describe())
    r.check("second run: forgets nothing (snapshots and blocks rows identical)",
            index_query(db, "SELECT uuid, root_id, path, changed_bytes FROM snapshots") == snap_rows
            and index_query(db, "SELECT * FROM blocks") == blocks)
    r.check("second run: B's data usage unchanged", df(fs_b.mnt)["data_used"] == usage_b)
    check_snapshots(r, "second run", before, ro)


def part_mount_over_snapshot(r, ws, binary):
    r.section("1b. another btrfs mounted on a snapshot's own name")
    # Discovery lists a directory's subvolumes from the root tree without opening them; the
    # root tree knows nothing of mounts, so a name with a mount on it must be looked at itself.
    # The directory's name has a space, which the mount table writes as \040.
    fs_a, fs_b, a, b = series_pair(ws, ("hostC", "hostD"), "my snaps", 513)
    first, covered = a.snapshots
    ids = {s: int(subvol_ids(s)["Subvolume ID"]) for s in a.snapshots}
    sh("mount", "-t", "btrfs", "-o", "subvol=bsnaps/b.1", fs_b.dev, covered)
    ws.mounts.append(covered)
    r.check("fixture: snaps/a.2 is covered by B's read-only snapshot b.1",
            sorted(os.listdir(covered)) == ["x.bin", "x.copy"], str(os.listdir(covered)))
    ro = [first, b.snapshots[0]]
    before = manifests(ro)
    db = ws.tmp("covered.sqlite")
    usage_b = df(fs_b.mnt)["data_used"]
    res = run_tool(binary, ["run", "--db", db, "--json", fs_a.path("my snaps")])
    r.check("covered: exit 0", res.rc == 0, res.describe())
    r.check(f"covered: exactly one stderr line, naming {covered}: another filesystem is mounted there",
            one_line(res) and covered in res.stderr and "another filesystem is mounted there" in res.stderr,
            repr(res.stderr[:500]))
    r.check("covered: only a.1 processed", [s.get("path") for s in res.get("snapshots", [])] == [first],
            res.describe())
    r.check("covered: index snapshots rows are exactly a.1",
            index_query(db, "SELECT root_id, path FROM snapshots") == [(ids[first], first)])
    r.check("covered: B's data usage unchanged", df(fs_b.mnt)["data_used"] == usage_b)
    check_snapshots(r, "covered", before, ro)

    sh("umount", covered)
    ws.mounts.remove(covered)
    before = manifests(a.snapshots)
    usage_a = df(fs_a.mnt)["data_used"]
    res = run_tool(binary, ["run", "--db", db, "--json", fs_a.path("my snaps")])
    r.check("uncovered: exit 0, nothing on stderr", res.rc == 0 and not res.stderr.strip(), res.describe())
    r.check("uncovered: a.2 processed, its copy deduped (>= 2 MiB)",
            [s.get("path") for s in res.get("snapshots", [])] == [covered]
            and (res.num("deduped_bytes") or 0) >= 2 * MiB, res.describe())
    freed = usage_a - df(fs_a.mnt)["data_used"]
    r.check("uncovered: A's data usage dropped by >= 0.95 x 2 MiB", freed >= 0.95 * 2 * MiB, str(freed))
    check_snapshots(r, "uncovered", before, a.snapshots)


# ---------------------------------------------------------------------------
# 2. A snapshot the kernel cannot send (path longer than PATH_MAX)
# ---------------------------------------------------------------------------


def send_err(*args):
    p = sh("btrfs", "send", "--no-data", "-q", "-f", "/dev/null", *args, check=False)
    return p.returncode, p.stderr.decode(errors="replace").strip()


def part_long_path(r, ws, binary):
    r.section("2. a path longer than the kernel's send limit in the middle snapshot")
    fs = ws.make_btrfs("deep", size=GiB)
    USED_FS.append(fs_uuid(fs.mnt))
    b = SeriesBuilder(fs, live="src", snapdir="snaps", seed=521)
    x_size, y_size = 4 * MiB, 2 * MiB
    b.write_new("x.bin", x_size)
    b.write_new("notes.txt", 5 * KiB)
    s1 = b.snapshot()
    depth = make_deep_tree(b.live, DEEP_LEVELS, DEEP_NAME)
    b.write_new("y.bin", y_size)                 # new in the unsendable snapshot
    s2 = b.snapshot()
    sh("rm", "-rf", "--one-file-system", b.p(DEEP_NAME))
    b.copy_noreflink("x.bin", "x.copy")          # the third holds a copy of the first's file ...
    b.copy_noreflink("y.bin", "y.copy")          # ... and of the file that appeared in the second
    s3 = b.snapshot()
    snaps = [s1, s2, s3]
    r.check(f"fixture: the deep file's path in s2 is {depth} bytes, over PATH_MAX (4096)", depth > 4096)

    rc, err = send_err(s2)
    r.check("fixture (by hand): `btrfs send --no-data` of s2 fails with ENAMETOOLONG on this kernel",
            rc != 0 and ("File name too long" in err or "-36" in err), f"rc={rc} {err}")
    ok = [(s, send_err(s)) for s in (s1, s3)] + [(f"{s3} -p {s1}", send_err("-p", s1, s3))]
    r.check("fixture: s1, s3, and s3 against s1 send fine", all(e[0] == 0 for _, e in ok), str(ok))

    before = manifests(snaps)
    deep_files = [k for k, v in before[s2].items() if k.endswith("deep.txt") and v[0] == "file"]
    r.check("fixture: the integrity walk reaches the deep file in s2",
            len(deep_files) == 1 and len(deep_files[0]) > 4096,
            str([len(k) for k in deep_files]))
    db = ws.tmp("deep.sqlite")
    u0 = df(fs.mnt)["data_used"]

    def run(label):
        res = run_tool(binary, ["run", "--db", db, "--json", b.snapdir])
        r.check(f"{label}: exit 1 (a snapshot could not be processed)", res.rc == 1, res.describe())
        lines = res.stderr_lines()
        r.check(f"{label}: exactly one stderr line, naming s2 and 'File name too long'",
                one_line(res) and s2 in lines[0] and "File name too long" in lines[0], repr(res.stderr[:600]))
        probs = validate_run_json(res.json) if isinstance(res.json, dict) else ["no JSON"]
        r.check(f"{label}: the report is still printed (valid JSON)", probs == [], f"{res.json_error} {probs}")
        return res

    res = run("first run")
    done = {s.get("path"): s for s in res.get("snapshots", []) or []}
    r.check("first run: s1 and s3 processed, s2 not", sorted(done) == [s1, s3] and res.num("snapshots_processed") == 2,
            str(sorted(done)))
    freed = u0 - df(fs.mnt)["data_used"]
    r.check(f"first run: the copy in s3 of s1's file freed (data usage down >= 0.95 x {x_size})",
            freed >= 0.95 * x_size, f"freed {freed}")
    r.check("first run: s3 diffed against s1, the last snapshot processed (not the unsendable s2)",
            done.get(s3, {}).get("parent") == s1, str(done.get(s3, {}).get("parent")))
    r.check(f"first run: the copy in s3 of the file new in s2 freed too (data usage down >= 0.95 x {x_size + y_size})",
            freed >= 0.95 * (x_size + y_size), f"freed {freed}; dup in s3 of y.bin is {y_size}")
    check_snapshots(r, "first run", before, snaps)

    u1 = df(fs.mnt)["data_used"]
    res = run("second run")
    r.check("second run: nothing processed", res.num("snapshots_processed") == 0, res.describe())
    r.check("second run: data usage unchanged", df(fs.mnt)["data_used"] == u1)
    check_snapshots(r, "second run", before, snaps)


# ---------------------------------------------------------------------------
# 3. Names that are not UTF-8, names with a newline
# ---------------------------------------------------------------------------


def part_names(r, ws, binary):
    r.section("3. names that are not UTF-8 and names with a newline")
    fs = ws.make_btrfs("names", size=GiB)
    USED_FS.append(fs_uuid(fs.mnt))
    live = os.fsencode(fs.path("src"))
    snapdir = os.fsencode(fs.path("snaps"))
    subvol_create(P(live))
    os.mkdir(snapdir)
    rng = random.Random(531)

    def put(name, size):
        with open(os.path.join(live, name), "wb") as f:
            f.write(rng.randbytes(size))

    def copy(src, dst):
        sh("cp", "--reflink=never", P(os.path.join(live, src)), P(os.path.join(live, dst)))

    def snapshot(name):
        dst = os.path.join(snapdir, name)
        sh("sync")
        sh("btrfs", "-q", "subvolume", "snapshot", "-r", P(live), P(dst))
        return dst

    orig, orig_copy = b"orig\xff.bin", b"copy\n\xff.bin"            # not UTF-8, and a newline
    nl, nl_copy = b"nl\nname.bin", b"nl\ncopy.bin"                  # valid UTF-8 with a newline
    plain, renamed, gone = b"plain.txt", b"pl\xfeain.txt", b"gone\xfd.txt"
    put(orig, MiB)
    put(nl, 512 * KiB)
    put(plain, 3 * KiB)
    put(gone, 2 * KiB)
    s1 = snapshot(b"n\xff.1")                                       # a snapshot name that is not UTF-8
    copy(orig, orig_copy)
    copy(nl, nl_copy)
    os.rename(os.path.join(live, plain), os.path.join(live, renamed))
    os.unlink(os.path.join(live, gone))
    s2 = snapshot(b"n\n.2")                                         # a snapshot name with a newline
    dup_bytes = MiB + 512 * KiB
    snaps = [P(s1), P(s2)]
    r.check("fixture: names on disk as written",
            sorted(os.listdir(s2)) == sorted([orig, orig_copy, nl, nl_copy, renamed])
            and sorted(os.listdir(snapdir)) == sorted([b"n\xff.1", b"n\n.2"]), str(os.listdir(s2)))
    before = manifests(snaps)

    # diff --json
    rc, out, err, _ = run_raw(binary, ["diff", "--json", s1, s2])
    r.check("diff --json: exit 0, nothing on stderr", rc == 0 and err == b"", f"rc={rc} {err[:300]!r}")
    j, why = strict_json(out)
    r.check("diff --json: stdout is strict UTF-8 and strict JSON", isinstance(j, dict), f"{why} {out[:300]!r}")
    j = j if isinstance(j, dict) else {}
    r.check("diff --json: each byte that is not UTF-8 is written as \\u00XX", b"\\u00ff" in out and b"\\u00fe" in out
            and b"\\u00fd" in out and b"\xff" not in out, out[:400].decode(errors="replace"))
    probs, n = hex_sibling_problems(j)
    r.check("diff --json: every *_bytes_hex sibling matches its string (hex of bytes that are not UTF-8, "
            "whose \\u00XX text is the string; null for valid ones)", probs == [] and n >= 4,
            f"{n} checked; {probs[:5]}")
    try:
        added = sorted(recover(j, "added", i) for i in range(len(j.get("added", []))))
        removed = sorted(recover(j, "removed", i) for i in range(len(j.get("removed", []))))
        ren = sorted((recover(j, "renamed", i, 0), recover(j, "renamed", i, 1))
                     for i in range(len(j.get("renamed", []))))
        changed = sorted(recover(c, "path") for c in j.get("changed", []))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        added = removed = ren = changed = f"cannot recover: {e}"
    r.check("diff --json: 'added' recovers exactly the two copies' names, byte for byte",
            added == sorted([orig_copy, nl_copy]), str(added))
    r.check("diff --json: 'removed' recovers exactly gone\\xfd.txt", removed == [gone], str(removed))
    r.check("diff --json: 'renamed' recovers exactly plain.txt -> pl\\xfeain.txt", ren == [(plain, renamed)], str(ren))
    r.check("diff --json: 'changed' paths recover exactly the two copies, both created",
            changed == sorted([orig_copy, nl_copy]) and all(c.get("created") is True for c in j.get("changed", [])),
            str(changed))
    valid_only = [c for c in j.get("changed", []) if isinstance(c, dict) and c.get("path") == nl_copy.decode()]
    r.check("diff --json: the valid name with a newline is given as is, with no hex sibling",
            len(valid_only) == 1 and "path_bytes_hex" not in valid_only[0], str(valid_only))

    # run --json
    db = ws.tmp("names.sqlite")
    u0 = df(fs.mnt)["data_used"]
    for label, want in (("first run", 2), ("second run", 0)):
        rc, out, err, secs = run_raw(binary, ["run", "--db", db, "--json", snapdir])
        r.check(f"run --json ({label}): exit 0, nothing on stderr", rc == 0 and err == b"", f"rc={rc} {err[:300]!r}")
        j, why = strict_json(out)
        r.check(f"run --json ({label}): stdout is strict UTF-8 and strict JSON", isinstance(j, dict),
                f"{why} {out[:300]!r}")
        j = j if isinstance(j, dict) else {}
        probs = validate_run_json(j)
        r.check(f"run --json ({label}): all contract fields", probs == [], "; ".join(probs))
        r.check(f"run --json ({label}): snapshots_processed == {want}", j.get("snapshots_processed") == want,
                str(j.get("snapshots_processed")))
        probs, n = hex_sibling_problems(j)
        r.check(f"run --json ({label}): every *_bytes_hex sibling matches its string", probs == [],
                "; ".join(probs[:5]))
        check_snapshots(r, f"run --json ({label})", before, snaps)
        if want == 0:
            continue
        r.check("run --json: the snapshot name that is not UTF-8 is written with \\u00ff", b"\\u00ff" in out
                and b"\xff" not in out, out[:400].decode(errors="replace"))
        entries = {}
        try:
            for e in j.get("snapshots", []):
                entries[recover(e, "path")] = e
        except (KeyError, TypeError, ValueError, AttributeError) as ex:
            entries = {"cannot recover": str(ex)}
        r.check("run --json: snapshot paths recover exactly (path_bytes_hex for the one that is not UTF-8)",
                sorted(entries) == sorted([s1, s2]), str(sorted(entries)))
        e1, e2 = entries.get(s1, {}), entries.get(s2, {})
        r.check("run --json: s1's path has a hex sibling, s2's (valid, with a newline) has none and is exact",
                "path_bytes_hex" in e1 and "path_bytes_hex" not in e2 and e2.get("path") == s2.decode(), f"{e1} {e2}")
        try:
            parent = recover(e2, "parent")
        except (KeyError, TypeError, ValueError, AttributeError) as ex:
            parent = str(ex)
        r.check("run --json: s2's parent recovers exactly s1 (parent_bytes_hex)", parent == s1, repr(parent))
        r.check(f"run --json: both copies deduped (>= {dup_bytes})", (j.get("deduped_bytes") or 0) >= dup_bytes,
                str(j.get("deduped_bytes")))
        freed = u0 - df(fs.mnt)["data_used"]
        r.check(f"run --json: data usage dropped by >= 0.95 x {dup_bytes}", freed >= 0.95 * dup_bytes, str(freed))


if __name__ == "__main__":
    main(PROG, __doc__, [part_foreign_mount, part_mount_over_snapshot, part_long_path, part_names], after=lambda: remove_lock_files(USED_FS))
