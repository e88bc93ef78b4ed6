#!/usr/bin/env python3
"""Integration test: the index refuses what is not ours, before writing a byte (issue 9).

    python3 tests/integration/test_index_safety.py --snapdedupe build/plugin/snapdedupe

Two loop-backed btrfs, A (btrbk-style snaps/a.N) and B (snapper-style .snapshots/N/snapshot),
each with a duplicate waiting to be freed, so a run that wrongly went ahead would act. A's
index is made by a real run. Then each case must give its exit code, exactly one stderr line
starting with "snapdedupe: ", and change nothing: every index file involved byte-identical (or
not created) with no -wal/-shm/-journal left next to it, every file of every snapshot hashing
the same, snapshots read-only, data usage unchanged, the queue (SNAPDEDUPE_STATE_DIR) as it
was, no default index (/var/lib/snapdedupe/<uuid>.sqlite) made for A or B.

* A's index given for B (run, dry run, through the queue, through a config): exit 5 naming
  both uuids; a config whose one `db` serves paths on both filesystems: exit 2.
* A's index with its last page overwritten (PRAGMA quick_check), or a table dropped: exit 5.
  Also a copy that a run stamped (user.snapdedupe.checked: the file as the run left it, so the
  next run may skip the whole check), its last page then overwritten in place: exit 5.
* A directory as --db: exit 5. `--db ''`: exit 2. `run --help`, `diff --help`: exit 0.
* Another application's SQLite file (journal mode DELETE): exit 5, the file byte-identical,
  still in rollback (not WAL) mode, no -wal/-shm created.
* Root without CAP_SYS_ADMIN (setpriv): exit 3 naming it, the queue untouched.
* Root without CAP_DAC_READ_SEARCH after the oldest snapshot was deleted (the case that used
  to empty the index): exit 3 naming it, the index byte-identical (same block count); the next
  normal run processes only the new snapshot and still frees its copy of a file whose keeper
  was in the deleted snapshot.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import hashlib
import os
import random
import shutil
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, KiB, MiB, SeriesBuilder, compare_manifests, df, fs_uuid, is_readonly, main,  # noqa: E402
                      manifest_all, remove_lock_files, run_tool, sh, subvol_create, subvol_delete, subvol_ids,
                      subvol_snapshot, validate_run_json, write_random)

PROG = "test_index_safety.py"
USED_FS = []                     # uuids of this test's filesystems: their lock files go at the end
SIDECARS = ("-wal", "-shm", "-journal")
DEFAULT_STATE = "/var/lib/snapdedupe"
CAP_BITS = {"sys_admin": 21, "dac_read_search": 2}


def no_cap(name):
    """setpriv prefix: root without capability `name` (effective, permitted, bounding, inheritable)."""
    return ("setpriv", f"--inh-caps=-{name}", f"--bounding-set=-{name}")


def sha(path):
    if not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        return ("dir", tuple(sorted(os.listdir(path))))
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def file_with_sidecars(path):
    """The file's hash and whether each of its SQLite side files exists."""
    return {"file": sha(path), **{s: os.path.lexists(path + s) for s in SIDECARS}}


def tree_state(root):
    """Every entry under root: relative path -> content hash (None for a directory); None if no root."""
    if not os.path.isdir(root):
        return None
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = None
        for f in filenames:
            out[os.path.relpath(os.path.join(dirpath, f), root)] = sha(os.path.join(dirpath, f))
    return out


def queue_semantics(state):
    """The queue's entries by name without the ".claimed-" prefix a failed run may leave."""
    if state is None:
        return None
    return {k.replace("queue/.claimed-", "queue/"): v for k, v in state.items() if not k.endswith(".lock")}


def header(path):
    """SQLite header fields read from the bytes (no connection, so no side files): page size,
    page count, freelist pages, write/read format versions (1 rollback journal, 2 WAL)."""
    with open(path, "rb") as f:
        h = f.read(100)
    page = int.from_bytes(h[16:18], "big")
    return {"magic": h[:16] == b"SQLite format 3\x00", "page_size": 65536 if page == 1 else page,
            "pages": int.from_bytes(h[28:32], "big"), "freelist": int.from_bytes(h[36:40], "big"),
            "write_version": h[18], "read_version": h[19]}


def read_index(path):
    """(snapshot uuids, block count, table names) of an index with no -wal, read without side files."""
    con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        snaps = sorted(r[0] for r in con.execute("SELECT uuid FROM snapshots"))
        blocks = con.execute("SELECT count(*) FROM blocks").fetchone()[0]
        tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        con.close()
    return snaps, blocks, tables


def cap_eff(prefix):
    out = sh(*prefix, "grep", "CapEff", "/proc/self/status").stdout.decode()
    return int(out.split()[1], 16)


class Fixture:
    def __init__(self, r, ws, binary):
        self.r, self.ws, self.binary = r, ws, binary
        r.section("fixture: filesystem A (snaps/a.N) and its index made by a real run")
        self.fs_a = fs_a = ws.make_btrfs("idxA", size=GiB)
        self.fs_b = fs_b = ws.make_btrfs("idxB", size=GiB)
        USED_FS.extend([fs_uuid(fs_a.mnt), fs_uuid(fs_b.mnt)])
        self.uuid_a, self.uuid_b = USED_FS[-2], USED_FS[-1]
        self.default_dbs = [os.path.join(DEFAULT_STATE, f"{u}.sqlite") for u in (self.uuid_a, self.uuid_b)]
        r.check("fixture: the two filesystems have different uuids", self.uuid_a != self.uuid_b,
                f"{self.uuid_a} {self.uuid_b}")
        self.state = ws.tmp("state")
        os.makedirs(os.path.join(self.state, "queue"), mode=0o700)
        os.environ["SNAPDEDUPE_STATE_DIR"] = self.state   # the binary's queue: ours, never /var/lib

        self.a = a = SeriesBuilder(fs_a, live="a", snapdir="snaps", seed=901)
        a.write_new("keep.bin", 2 * MiB)
        a.write_new("other.bin", MiB)
        a.write_new("small/s.txt", 10 * KiB)
        a.snapshot()
        a.copy_noreflink("other.bin", "copy1.bin")
        a.snapshot()
        self.snaps_a = fs_a.path("snaps")
        self.db = ws.tmp("a.sqlite")
        res = self.run_ok("fixture: first run on A", ["--db", self.db, self.snaps_a])
        r.check("fixture: first run processed a.1 and a.2 and freed the copy",
                res.num("snapshots_processed") == 2 and (res.num("deduped_bytes") or 0) >= MiB, res.describe())
        res = self.run_ok("fixture: second run on A (nothing new; its close checkpoints the WAL away)",
                          ["--db", self.db, self.snaps_a])
        r.check("fixture: second run processed nothing", res.num("snapshots_processed") == 0, res.describe())
        side = [s for s in SIDECARS if os.path.lexists(self.db + s)]
        r.check("fixture: A's index has no -wal/-shm/-journal after the run", side == [], str(side))
        hd = header(self.db)
        r.check("fixture: A's index is a WAL-mode SQLite file with 4 KiB pages",
                hd["magic"] and hd["page_size"] == 4096 and hd["write_version"] == 2 and hd["pages"] >= 3, str(hd))
        self.index_a = read_index(self.db)
        r.check("fixture: A's index records a.1 and a.2, with blocks",
                len(self.index_a[0]) == 2 and self.index_a[1] > 0, str(self.index_a[:2]))

        # A new snapshot with a copy, left unprocessed: any case that wrongly ran would free it.
        a.copy_noreflink("keep.bin", "copy2.bin")
        a.snapshot()
        self.copy2 = 2 * MiB

        r.section("fixture: filesystem B (snapper layout) and a queue entry for it")
        self.home = fs_b.path("home")
        subvol_create(self.home)
        subvol_create(os.path.join(self.home, ".snapshots"))
        rng = random.Random(902)
        write_random(os.path.join(self.home, "b1.bin"), MiB, rng.randbytes)
        self.snaps_b = []
        for n in (1, 2):
            if n == 2:
                sh("cp", "--reflink=never", os.path.join(self.home, "b1.bin"), os.path.join(self.home, "b1.copy"))
            os.mkdir(os.path.join(self.home, ".snapshots", str(n)))
            dst = os.path.join(self.home, ".snapshots", str(n), "snapshot")
            sh("sync")
            subvol_snapshot(self.home, dst, readonly=True)
            self.snaps_b.append(dst)
        self.snapdir_b = os.path.join(self.home, ".snapshots")
        self.queue_entry = os.path.join(self.state, "queue", "create.%2Fb-home.2")
        with open(self.queue_entry, "w") as f:
            f.write(f"action=create\nsubvolume={self.home}\nnumber=2\nqueued=1700000000\n")

        self.watched = list(a.snapshots) + self.snaps_b
        self.readonly = list(a.snapshots) + self.snaps_b
        self.refresh_manifest()
        r.check("fixture: every snapshot read-only", all(is_readonly(s) for s in self.readonly))

    def refresh_manifest(self):
        self.manifest = manifest_all(self.watched)
        self.usage = (df(self.fs_a.mnt)["data_used"], df(self.fs_b.mnt)["data_used"])

    def run_ok(self, label, args):
        res = run_tool(self.binary, ["run", "--json", *args])
        probs = validate_run_json(res.json) if isinstance(res.json, dict) else ["no JSON"]
        self.r.check(f"{label}: exit 0, a valid JSON report", res.rc == 0 and probs == [],
                     f"{res.describe()} {probs}")
        return res

    def state_of(self, files):
        return {"files": {p: file_with_sidecars(p) for p in [self.db, *files]},
                "queue": tree_state(self.state),
                "default_dbs": [file_with_sidecars(p) for p in self.default_dbs]}

    def case(self, label, argv, want, prefix=(), files=(), mentions=(), queue="strict", usage_output=False):
        """Runs one refused command and checks the contract: exit code, one stderr line naming
        `mentions`, nothing changed. queue="claimed" allows a failed --queue run to leave its
        entries claimed (renamed), as the queue's design says, but not to lose any."""
        r = self.r
        r.section(f"case: {label} -> exit {want}")
        before = self.state_of(files)
        res = run_tool(self.binary, argv, timeout=120, prefix=prefix)
        after = self.state_of(files)
        r.check(f"{label}: exit {want}", res.rc == want, res.describe())
        if usage_output:
            r.check(f"{label}: usage on stdout, nothing on stderr",
                    res.stdout.startswith("usage: snapdedupe") and "snapdedupe run" in res.stdout
                    and "snapdedupe diff" in res.stdout and res.stderr == "", res.describe())
            return res
        lines = res.stderr_lines()
        r.check(f"{label}: exactly one stderr line, starting with 'snapdedupe: '",
                len(lines) == 1 and lines[0].startswith("snapdedupe: "), repr(res.stderr[:500]))
        if mentions:
            missing = [m for m in mentions if m not in res.stderr]
            r.check(f"{label}: the line names {', '.join(mentions)}", not missing, repr(res.stderr[:500]))
        r.check(f"{label}: stdout empty (no report of a run that did not happen)", res.stdout.strip() == "",
                res.stdout[:300])
        for p in before["files"]:
            b, a = before["files"][p], after["files"][p]
            r.check(f"{label}: {os.path.basename(p)} {'byte-identical' if b['file'] else 'not created'}, "
                    "no side file created", a == b, f"{b} -> {a}")
        if queue == "strict":
            r.check(f"{label}: queue untouched (names and contents)", after["queue"] == before["queue"],
                    f"{before['queue']} -> {after['queue']}")
        else:
            r.check(f"{label}: queue keeps every entry (claimed at most)",
                    queue_semantics(after["queue"]) == queue_semantics(before["queue"]),
                    f"{before['queue']} -> {after['queue']}")
        none = [{"file": None, **{s: False for s in SIDECARS}}] * 2
        r.check(f"{label}: no default index of A or B in {DEFAULT_STATE}", after["default_dbs"] == none,
                str(after["default_dbs"]))
        diffs = compare_manifests(self.manifest, manifest_all(self.watched))
        r.check(f"{label}: every file of every snapshot of A and B hashes the same", diffs == [], "; ".join(diffs[:5]))
        not_ro = [s for s in self.readonly if not is_readonly(s)]
        r.check(f"{label}: snapshots still read-only", not not_ro, ", ".join(not_ro))
        usage = (df(self.fs_a.mnt)["data_used"], df(self.fs_b.mnt)["data_used"])
        r.check(f"{label}: data usage of A and B unchanged (nothing deduped)", usage == self.usage,
                f"{self.usage} -> {usage}")
        return res


def part_foreign_index(r, fx):
    """The index of A given for B: its disk addresses mean nothing there."""
    both = (fx.uuid_a, fx.uuid_b)
    fx.case("A's index for B (run)", ["run", "--db", fx.db, "--json", fx.snapdir_b], 5, mentions=both)
    fx.case("A's index for B (dry run)", ["run", "--db", fx.db, "--dry-run", "--json", fx.snapdir_b], 5,
            mentions=both)
    fx.case("A's index for B's snapshot named alone", ["run", "--db", fx.db, fx.snaps_b[1]], 5, mentions=both)
    fx.case("A's index for B through the queue (run --queue, no PATH)", ["run", "--queue", "--db", fx.db, "--json"],
            5, mentions=both, queue="claimed")
    conf_b = fx.ws.tmp("b.conf")
    with open(conf_b, "w") as f:
        f.write(f"path = {fx.snapdir_b}\ndb = {fx.db}\n")
    fx.case("config: db = A's index, path on B", ["run", "--config", conf_b, "--json"], 5, files=[conf_b],
            mentions=both)
    conf_ab = fx.ws.tmp("ab.conf")
    with open(conf_ab, "w") as f:
        f.write(f"path = {fx.snaps_a}\npath = {fx.snapdir_b}\ndb = {fx.db}\n")
    fx.case("config: one db for paths on A and B (README: usage)", ["run", "--config", conf_ab, "--json"], 2,
            files=[conf_ab])


def part_damaged(r, fx):
    ws = fx.ws
    r.section("damaged copies of A's index")
    page = ws.tmp("lastpage.sqlite")
    shutil.copyfile(fx.db, page)
    hd = header(page)
    r.check("fixture: no free pages, so the last page is in use", hd["freelist"] == 0, str(hd))
    size = os.path.getsize(page)
    r.check("fixture: file size is page count x 4096", size == hd["pages"] * 4096, f"{size} vs {hd}")
    with open(page, "r+b") as f:
        f.seek(size - 4096)
        f.write(random.Random(903).randbytes(4096))
    r.check("fixture: the copy differs from the index only in its last page",
            open(page, "rb").read()[:size - 4096] == open(fx.db, "rb").read()[:size - 4096]
            and sha(page) != sha(fx.db))
    fx.case("index with its last page overwritten (run)", ["run", "--db", page, "--json", fx.snaps_a], 5, files=[page])
    fx.case("index with its last page overwritten (dry run)", ["run", "--db", page, "--dry-run", "--json", fx.snaps_a],
            5, files=[page])

    dropped = ws.tmp("dropped.sqlite")
    shutil.copyfile(fx.db, dropped)
    con = sqlite3.connect(dropped)
    con.execute("DROP TABLE deferred")
    con.commit()
    con.close()
    side = [s for s in SIDECARS if os.path.lexists(dropped + s)]
    tables = read_index(dropped)[2] if not side else []
    r.check("fixture: copy without table 'deferred', no side files", "deferred" not in tables and "blocks" in tables
            and side == [], f"{tables} {side}")
    fx.case("index with table 'deferred' dropped", ["run", "--db", dropped, "--json", fx.snaps_a], 5, files=[dropped],
            mentions=("deferred",))


def part_not_a_file(r, fx):
    ws = fx.ws
    d = ws.tmp("index-dir")
    os.mkdir(d)
    fx.case("a directory as --db", ["run", "--db", d, "--json", fx.snaps_a], 5, files=[d])
    fx.case("a directory as --db (dry run)", ["run", "--db", d, "--dry-run", fx.snaps_a], 5, files=[d])
    fx.case("--db ''", ["run", "--db", "", "--json", fx.snaps_a], 2)
    fx.case("run --help", ["run", "--help"], 0, usage_output=True)
    fx.case("diff --help", ["diff", "--help"], 0, usage_output=True)


def part_other_application(r, fx):
    other = fx.ws.tmp("other-app.sqlite")
    con = sqlite3.connect(other)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    con.executemany("INSERT INTO t (name) VALUES (?)", [(f"row {i}",) for i in range(500)])
    con.commit()
    con.close()
    hd = header(other)
    r.check("fixture: another application's SQLite file in rollback-journal mode",
            hd["magic"] and hd["write_version"] == 1 and hd["read_version"] == 1, str(hd))
    for label, extra in (("run", []), ("dry run", ["--dry-run"])):
        fx.case(f"another application's SQLite file ({label})", ["run", "--db", other, *extra, "--json", fx.snaps_a],
                5, files=[other])
        hd = header(other)
        r.check(f"another application's SQLite file ({label}): header still rollback mode, not WAL",
                hd["write_version"] == 1 and hd["read_version"] == 1, str(hd))
    con = sqlite3.connect(f"file:{other}?mode=ro", uri=True)
    try:
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        con.close()
    r.check("another application's SQLite file: journal_mode still delete, its 500 rows intact",
            mode == "delete" and rows == 500, f"{mode} {rows}")
    side = [s for s in SIDECARS if os.path.lexists(other + s)]
    r.check("another application's SQLite file: no -wal/-shm/-journal next to it", side == [], str(side))


def part_no_sys_admin(r, fx):
    pre = no_cap("sys_admin")
    eff = cap_eff(pre)
    r.check("fixture: setpriv takes CAP_SYS_ADMIN away and leaves CAP_DAC_READ_SEARCH",
            not eff & (1 << CAP_BITS["sys_admin"]) and eff & (1 << CAP_BITS["dac_read_search"]), hex(eff))
    fx.case("root without CAP_SYS_ADMIN (run)", ["run", "--db", fx.db, "--json", fx.snaps_a], 3, prefix=pre,
            mentions=("CAP_SYS_ADMIN",))
    fx.case("root without CAP_SYS_ADMIN (run --queue)", ["run", "--queue", "--db", fx.db, "--json", fx.snaps_a], 3,
            prefix=pre, mentions=("CAP_SYS_ADMIN",))
    fx.case("root without CAP_SYS_ADMIN (diff)", ["diff", "--json", fx.a.snapshots[0], fx.a.snapshots[2]], 3,
            prefix=pre, mentions=("CAP_SYS_ADMIN",))


def part_no_dac_read_search(r, fx):
    """The oldest snapshot (keeper of keep.bin's blocks) deleted; a run that cannot open files by
    handle must not take every snapshot for gone and empty the index."""
    r.section("a.1 deleted; root without CAP_DAC_READ_SEARCH")
    a, ws = fx.a, fx.ws
    old = a.snapshots[0]
    subvol_delete(old, fx.fs_a.mnt)
    fx.watched.remove(old)
    fx.readonly.remove(old)
    fx.refresh_manifest()
    before = read_index(fx.db)
    r.check("fixture: the index still lists a.1, a.2 and blocks", before[:2] == fx.index_a[:2], str(before[:2]))
    pre = no_cap("dac_read_search")
    eff = cap_eff(pre)
    r.check("fixture: setpriv takes CAP_DAC_READ_SEARCH away and leaves CAP_SYS_ADMIN",
            not eff & (1 << CAP_BITS["dac_read_search"]) and eff & (1 << CAP_BITS["sys_admin"]), hex(eff))
    fx.case("root without CAP_DAC_READ_SEARCH, a.1 deleted (run)", ["run", "--db", fx.db, "--json", fx.snaps_a], 3,
            prefix=pre, mentions=("CAP_DAC_READ_SEARCH",))
    after = read_index(fx.db)
    r.check("root without CAP_DAC_READ_SEARCH: the index keeps its snapshots and block count",
            after == before, f"{before[:2]} -> {after[:2]}")

    r.section("then a normal run: only a.3 is new, and its copy of keep.bin is freed")
    u0 = df(fx.fs_a.mnt)["data_used"]
    res = fx.run_ok("normal run after the refused one", ["--db", fx.db, fx.snaps_a])
    r.check("normal run: exactly one snapshot processed (a.3: the survivors are remembered)",
            res.num("snapshots_processed") == 1, res.describe())
    r.check(f"normal run: the later copy of keep.bin found and deduped (>= {fx.copy2})",
            (res.num("deduped_bytes") or 0) >= fx.copy2, str(res.num("deduped_bytes")))
    freed = u0 - df(fx.fs_a.mnt)["data_used"]
    r.check("normal run: data usage dropped by >= 0.95 x the copy", freed >= 0.95 * fx.copy2, str(freed))
    snaps, blocks, _ = read_index(fx.db)
    want = sorted(subvol_ids(s)["UUID"] for s in a.snapshots[1:])
    r.check("normal run: the index lists exactly a.2 and a.3 (a.1 forgotten), with blocks",
            snaps == want and blocks > 0, f"{snaps} vs {want}, {blocks} blocks")
    diffs = compare_manifests(fx.manifest, manifest_all(fx.watched))
    r.check("normal run: every file of every snapshot hashes the same", diffs == [], "; ".join(diffs[:5]))
    r.check("normal run: snapshots still read-only", all(is_readonly(s) for s in fx.readonly))


def part_stamped(r, fx):
    """A run stamps the index it leaves; the next run skips the whole check only while the file is
    as stamped (index/check_stamp.h). Written in place after the run, its mtime moved. Last, as
    its stamping run is a real one: on A, whose copies the run before has freed."""
    ws = fx.ws
    r.section("an index a run stamped, then damaged in place")
    stamped = ws.tmp("stamped.sqlite")
    shutil.copyfile(fx.db, stamped)
    res = run_tool(fx.binary, ["run", "--db", stamped, "--json", fx.snaps_a], timeout=120)
    r.check("fixture: a run on A with a copy of A's index exits 0", res.rc == 0, res.describe())
    st = os.stat(stamped)
    try:
        stamp = os.getxattr(stamped, "user.snapdedupe.checked").decode().split()
    except OSError as e:
        stamp = [str(e)]
    r.check("the run stamped the index as it left it (inode, size, mtime)",
            stamp[2:6] == [str(st.st_ino), str(st.st_size), str(st.st_mtime_ns // 10**9), str(st.st_mtime_ns % 10**9)],
            f"{stamp} vs inode {st.st_ino} size {st.st_size} mtime {st.st_mtime_ns}")
    hd = header(stamped)
    r.check("fixture: no free pages in the stamped copy", hd["freelist"] == 0, str(hd))
    with open(stamped, "r+b") as f:
        f.seek(os.path.getsize(stamped) - 4096)
        f.write(random.Random(904).randbytes(4096))
    fx.usage = (df(fx.fs_a.mnt)["data_used"], df(fx.fs_b.mnt)["data_used"])  # A's copy went in the part before
    fx.case("stamped index with its last page overwritten in place (run)",
            ["run", "--db", stamped, "--json", fx.snaps_a], 5, files=[stamped])


def part_index_safety(r, ws, binary):
    saved = os.environ.get("SNAPDEDUPE_STATE_DIR")
    try:
        fx = Fixture(r, ws, binary)
        for part in (part_foreign_index, part_damaged, part_not_a_file, part_other_application, part_no_sys_admin,
                     part_no_dac_read_search, part_stamped):
            part(r, fx)
    finally:
        if saved is None:
            os.environ.pop("SNAPDEDUPE_STATE_DIR", None)
        else:
            os.environ["SNAPDEDUPE_STATE_DIR"] = saved


def after():
    """Lock files of our filesystems; and a default index a wrong run made for one of them (their
    uuids are fresh, so such a file can only be ours; the check above has already failed)."""
    remove_lock_files(USED_FS)
    for u in USED_FS:
        for suffix in ("",) + SIDECARS:
            path = os.path.join(DEFAULT_STATE, f"{u}.sqlite{suffix}")
            if os.path.lexists(path):
                os.unlink(path)


if __name__ == "__main__":
    main(PROG, __doc__, [part_index_safety], after=after)
