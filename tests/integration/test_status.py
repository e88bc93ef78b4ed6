#!/usr/bin/env python3
"""Integration test: `snapdedupe status` and the history of runs (issue 12).

    python3 tests/integration/test_status.py --snapdedupe build/plugin/snapdedupe

One loop-backed btrfs with two lineages in one directory, snaps/: s.N (btrbk-style snapshots
of the live subvolume s, each adding a copy to free) and d.1, a snapshot of subvolume d that
holds a path longer than `btrfs send` allows, so a run that meets it names it and exits 1.

* Before any run: `status` says "no index yet", lists every snapshot as not processed, and
  creates no index.
* Run 1 (s.1-s.3, exit 0); then s.4, a copy, d.1, and s.1 deleted; run 2 (s.4 processed, d.1
  skipped: exit 1, s.1 forgotten); then s.5, left unprocessed.
* `status` and `status --json`: the index and its size; lineage s: 3 processed, the newest
  s.4, not processed s.5; lineage d: none processed, not processed d.1; the history holds both
  runs, newest first, with exit codes 1 and 0 and every figure equal to the run's own --json
  report (snapshots, bytes hashed, deduped, data freed, metadata growth, net); the totals are
  their sums; the journal equals the index's `deferred` table. The human text says the same.
  The index is byte-identical afterwards, with no -wal/-shm/-journal next to it.
* The journal by kind: a COPY of the index with six moves inserted by hand (error 0, EAGAIN
  twice, EIO twice, EPERM): rows, bytes, not tried, busy and errors by name; the copy unchanged.
* `status` without PATH (`--db` alone): the index's lineages, not looked for on disk.
* Bad input, nothing changed: a missing PATH (4), a directory not on btrfs (4), another
  filesystem's index (5, naming both uuids), another application's SQLite file (5), `--db ''`
  (2), not root (3); an index not there yet is not created (0).
* While a run holds the index (paused at the test seam before its dedupe), `status` reads it
  (exit 0, through the run's WAL); the run then ends, appends its row (3 runs) and leaves no
  -wal/-shm behind.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import hashlib
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, KiB, MiB, SeriesBuilder, fs_uuid, main, make_deep_tree, remove_lock_files, run_tool,  # noqa: E402
                      run_with_seam, subvol_create, subvol_delete, subvol_ids, subvol_snapshot, validate_run_json)

PROG = "test_status.py"
USED_FS = []                     # uuids of this test's filesystems: their lock files go at the end
SIDECARS = ("-wal", "-shm", "-journal")
DEEP_NAME = "d" * 250            # 20 levels of it: a path over PATH_MAX, which send refuses
DEEP_LEVELS = 20
FIGURES = ("snapshots_processed", "bytes_hashed", "deduped_bytes")
SPACE_FIGURES = ("data_freed", "metadata_growth", "net_freed")
EAGAIN, EIO, EPERM = 11, 5, 1


def file_state(path):
    """The file's sha256 (None if missing) and which SQLite side files exist next to it."""
    digest = None
    if os.path.exists(path):
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return {"sha256": digest, "side": [s for s in SIDECARS if os.path.lexists(path + s)]}


def read_journal(db):
    """The index's `deferred` rows as (error, length), read without side files (no -wal exists)."""
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return con.execute("SELECT error, length FROM deferred").fetchall()
    finally:
        con.close()


class Fixture:
    def __init__(self, r, ws, binary):
        self.r, self.ws, self.binary = r, ws, binary
        r.section("fixture: lineage s (s.1-s.3) in snaps/")
        self.fs = fs = ws.make_btrfs("status", size=GiB)
        USED_FS.append(fs_uuid(fs.mnt))
        self.uuid = USED_FS[-1]
        self.s = s = SeriesBuilder(fs, live="s", snapdir="snaps", seed=1201)
        self.snaps = s.snapdir
        self.db = ws.tmp("index.sqlite")
        s.write_new("a.bin", 2 * MiB)
        s.write_new("b.bin", MiB)
        s.write_new("notes.txt", 10 * KiB)
        s.snapshot()
        s.copy_noreflink("a.bin", "a.copy")
        s.snapshot()
        s.copy_noreflink("b.bin", "b.copy")
        s.snapshot()
        self.live_uuid = {"s": subvol_ids(s.live)["UUID"]}

    def status(self, label, *args, want=0):
        """`status --json` and `status` with `args`: both exit `want`; returns (JSON result, human)."""
        res = run_tool(self.binary, ["status", "--json", *args])
        human = run_tool(self.binary, ["status", *args])
        self.r.check(f"{label}: status --json and status exit {want}", res.rc == want and human.rc == want,
                     f"{res.describe()} / {human.describe()}")
        if want == 0:
            self.r.check(f"{label}: valid JSON, nothing on stderr",
                         isinstance(res.json, dict) and res.stderr == "" and human.stderr == "",
                         f"{res.json_error} {res.stderr[:300]!r} {human.stderr[:300]!r}")
        return res, human

    def run(self, label, want):
        t0 = time.time()
        res = run_tool(self.binary, ["run", "--json", "--db", self.db, self.snaps])
        t1 = time.time()
        probs = validate_run_json(res.json) if isinstance(res.json, dict) else ["no JSON"]
        self.r.check(f"{label}: exit {want}, a valid JSON report", res.rc == want and probs == [],
                     f"{res.describe()} {probs}")
        return {"report": res.json or {}, "t0": t0, "t1": t1, "rc": res.rc}

    def lineages(self, j):
        fss = j.get("filesystems") or [{}]
        return {lin.get("key"): lin for lin in fss[0].get("lineages") or []}


def part_before_any_run(r, fx):
    r.section("status before any run: no index yet, every snapshot not processed")
    res, human = fx.status("before any run", "--db", fx.db, fx.snaps)
    fss = res.get("filesystems") or []
    one = fss[0] if len(fss) == 1 else {}
    r.check("before any run: one filesystem, its uuid, the PATH, the index named, index_exists false",
            one.get("uuid") == fx.uuid and one.get("paths") == [fx.snaps] and one.get("index") == fx.db
            and one.get("index_exists") is False and one.get("index_size") is None, str(one)[:500])
    lin = fx.lineages(res.json).get(fx.live_uuid["s"], {})
    r.check("before any run: lineage s (keyed by the live subvolume's uuid): none processed, s.1-s.3 not",
            lin.get("found") is True and lin.get("processed") == 0 and lin.get("newest_processed") is None
            and lin.get("unprocessed") == fx.s.snapshots, str(lin))
    r.check("before any run: no runs, zero totals, empty journal",
            one.get("runs") == [] and (one.get("totals") or {}).get("runs") == 0
            and (one.get("journal") or {}).get("rows") == 0, str(one)[:500])
    r.check("before any run: the human text says 'no index yet' and names s.3 as not processed",
            f"{fx.db}: no index yet" in human.stdout and fx.s.snapshots[2] in human.stdout, human.stdout[:600])
    r.check("before any run: no index created", file_state(fx.db) == {"sha256": None, "side": []},
            str(file_state(fx.db)))


def part_two_runs(r, fx):
    s, ws = fx.s, fx.ws
    r.section("run 1; then s.4, d.1 (unsendable) and s.1 deleted; run 2; then s.5")
    fx.run1 = fx.run("run 1", 0)
    s.copy_noreflink("a.bin", "a.copy2")
    s.snapshot()
    d = fx.fs.path("d")
    subvol_create(d)
    fx.live_uuid["d"] = subvol_ids(d)["UUID"]
    make_deep_tree(d, DEEP_LEVELS, DEEP_NAME)
    fx.d1 = os.path.join(fx.snaps, "d.1")
    subvol_snapshot(d, fx.d1, readonly=True)
    subvol_delete(s.snapshots[0], fx.fs.mnt)
    fx.run2 = fx.run("run 2 (d.1 cannot be sent)", 1)
    done = [x.get("path") for x in fx.run2["report"].get("snapshots") or []]
    r.check("run 2: processed s.4 only", done == [s.snapshots[3]], str(done))
    s.copy_noreflink("b.bin", "b.copy2")
    s.snapshot()
    state = file_state(fx.db)
    r.check("fixture: after the runs the index has no side files", state["side"] == [], str(state))
    fx.journal = read_journal(fx.db)


def check_run_row(r, label, row, run):
    rep = run["report"]
    want = {k: rep.get(k) for k in FIGURES}
    want.update({k: (rep.get("space") or {}).get(k) for k in SPACE_FIGURES})
    got = {k: row.get(k) for k in FIGURES + SPACE_FIGURES}
    r.check(f"{label}: figures equal the run's own report ({', '.join(FIGURES + SPACE_FIGURES)})",
            got == want and all(isinstance(v, int) for v in want.values()), f"{got} vs {want}")
    r.check(f"{label}: exit code {run['rc']}", row.get("exit_code") == run["rc"], str(row.get("exit_code")))
    started, seconds = row.get("started_at"), row.get("seconds")
    r.check(f"{label}: started during the run, lasted no longer than it",
            isinstance(started, int) and int(run["t0"]) <= started <= run["t1"]
            and isinstance(seconds, (int, float)) and 0 <= seconds <= rep.get("seconds", 0) + 0.01,
            f"started {started} in [{run['t0']:.0f}, {run['t1']:.0f}], {seconds} s of {rep.get('seconds')}")


def part_status_after_runs(r, fx):
    s = fx.s
    r.section("status after both runs: lineages, history, totals, journal; the index unchanged")
    before = file_state(fx.db)
    res, human = fx.status("after the runs", "--db", fx.db, fx.snaps)
    after = file_state(fx.db)
    r.check("status: the index byte-identical, no -wal/-shm/-journal created", after == before and after["side"] == [],
            f"{before} -> {after}")
    one = (res.get("filesystems") or [{}])[0]
    r.check("status: the index and its size", one.get("index") == fx.db and one.get("index_exists") is True
            and one.get("index_size") == os.path.getsize(fx.db), f"{one.get('index')} {one.get('index_size')}")
    lins = fx.lineages(res.json)
    r.check("status: two lineages, s and d, both found under the PATH",
            sorted(lins) == sorted(fx.live_uuid.values()) and all(x.get("found") for x in lins.values()),
            str(sorted(lins)))
    ls, ld = lins.get(fx.live_uuid["s"], {}), lins.get(fx.live_uuid["d"], {})
    newest = ls.get("newest_processed") or {}
    r.check("lineage s: 3 processed (s.1 forgotten), the newest s.4 (path and uuid)",
            ls.get("processed") == 3 and newest.get("path") == s.snapshots[3]
            and newest.get("uuid") == subvol_ids(s.snapshots[3])["UUID"], str(ls))
    r.check("lineage s: processed_at within run 2", isinstance(newest.get("processed_at"), int)
            and int(fx.run2["t0"]) <= newest["processed_at"] <= fx.run2["t1"], str(newest.get("processed_at")))
    r.check("lineage s: not processed: s.5 only", ls.get("unprocessed") == [s.snapshots[4]], str(ls.get("unprocessed")))
    r.check("lineage d: none processed, not processed: d.1",
            ld.get("processed") == 0 and ld.get("newest_processed") is None and ld.get("unprocessed") == [fx.d1],
            str(ld))

    runs = one.get("runs") or []
    r.check("history: both runs, newest first", len(runs) == 2, str(runs))
    if len(runs) == 2:
        check_run_row(r, "history: run 2", runs[0], fx.run2)
        check_run_row(r, "history: run 1", runs[1], fx.run1)
    t = one.get("totals") or {}
    reports = [fx.run1["report"], fx.run2["report"]]
    want = {k: sum(x.get(k, 0) for x in reports) for k in FIGURES}
    want.update({k: sum((x.get("space") or {}).get(k, 0) for x in reports) for k in SPACE_FIGURES})
    r.check("totals: 2 runs, 1 failed, since run 1's start, figures the sums of both reports",
            t.get("runs") == 2 and t.get("failed_runs") == 1 and len(runs) == 2
            and t.get("since") == runs[1].get("started_at") and {k: t.get(k) for k in want} == want,
            f"{t} vs {want}")
    j = one.get("journal") or {}
    rows = fx.journal
    r.check("journal: equals the index's deferred table",
            j.get("rows") == len(rows) and j.get("bytes") == sum(x[1] for x in rows)
            and j.get("not_tried") == sum(1 for x in rows if x[0] == 0)
            and j.get("busy") == sum(1 for x in rows if x[0] == EAGAIN)
            and sum((j.get("errors") or {}).values()) == sum(1 for x in rows if x[0] not in (0, EAGAIN)),
            f"{j} vs {rows}")
    check_human(r, fx, human.stdout)


def check_human(r, fx, text):
    s = fx.s
    lines = text.splitlines()

    def after(prefix):
        """The lines that follow the first one starting with `prefix` (stripped), up to 3."""
        for i, line in enumerate(lines):
            if line.strip().startswith(prefix):
                return [x.strip() for x in lines[i:i + 4]]
        return []

    ls = after(f"lineage {fx.live_uuid['s']}")
    r.check("human: lineage s: '3, the newest s.4', then 'not processed: s.5'",
            len(ls) >= 3 and ls[1].startswith("processed:") and f"3, the newest {s.snapshots[3]} (at " in ls[1]
            and ls[2].split() == ["not", "processed:", s.snapshots[4]], "\n".join(ls))
    ld = after(f"lineage {fx.live_uuid['d']}")
    r.check("human: lineage d: 'none yet', then 'not processed: d.1'",
            len(ld) >= 3 and ld[1].endswith("none yet") and ld[2].endswith(fx.d1), "\n".join(ld))
    runs = after("last runs:")
    ok = len(runs) == 4 and runs[1].split()[:4] == ["started", "seconds", "exit", "snapshots"]
    cols = [x.split() for x in runs[2:4]] if ok else []
    r.check("human: last runs: a header and two rows, newest first, exit 1 then 0, snapshots 1 then 3",
            ok and [c[3:5] for c in cols] == [["1", "1"], ["0", "3"]], "\n".join(runs))
    r.check("human: totals: 2 runs, 1 failed", any(x.strip().startswith("totals:") and "2 runs since" in x
                                                   and "(1 failed)" in x for x in lines), text[-400:])
    r.check("human: journal line", any(x.strip().startswith("journal:") for x in lines), text[:400])


def part_journal_kinds(r, fx):
    r.section("the journal by kind: a copy of the index with six moves added by hand")
    copy = fx.ws.tmp("journal-copy.sqlite")
    with open(fx.db, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    moves = [(0, 4096), (EAGAIN, 8192), (EAGAIN, 131072), (EIO, 131072), (EIO, 65536), (EPERM, 12288)]
    con = sqlite3.connect(copy)
    for i, (err, length) in enumerate(moves):
        con.execute("INSERT INTO deferred (root_id, inode, inode_gen, file_offset, length, keeper_root, keeper_inode, "
                    "keeper_gen, keeper_offset, keeper_extent, keeper_extent_offset, error) "
                    "VALUES (?, 300, 1, ?, ?, 257, 400, 1, 0, ?, 0, ?)",
                    (1000 + i, i * 131072, length, 12345678 + i * 4096, err))
    con.commit()
    con.close()
    base = len(fx.journal)
    before = file_state(copy)
    r.check("fixture: the copy has no side files", before["side"] == [], str(before))
    res, human = fx.status("journal copy", "--db", copy, fx.snaps)
    j = ((res.get("filesystems") or [{}])[0]).get("journal") or {}
    want = {"rows": base + 6, "bytes": sum(x[1] for x in fx.journal) + sum(m[1] for m in moves),
            "not_tried": 1 + sum(1 for x in fx.journal if x[0] == 0),
            "busy": 2 + sum(1 for x in fx.journal if x[0] == EAGAIN)}
    r.check("journal copy: rows, bytes, not tried, busy", {k: j.get(k) for k in want} == want, f"{j} vs {want}")
    errors = j.get("errors") or {}
    r.check("journal copy: errors by name: EIO 2, EPERM 1", errors.get("EIO", 0) >= 2 and errors.get("EPERM", 0) >= 1
            and sum(errors.values()) == base + 6 - want["not_tried"] - want["busy"], str(errors))
    line = next((x for x in human.stdout.splitlines() if x.strip().startswith("journal:")), "")
    r.check("journal copy: the human line counts them", f"{base + 6} moves" in line and "1 not tried yet" in line
            and "2 busy" in line and "EIO 2" in line and "EPERM 1" in line, line)
    after = file_state(copy)
    r.check("journal copy: byte-identical after status, no side files", after == before, f"{before} -> {after}")


def part_index_alone(r, fx):
    r.section("status --db without PATH: what the index holds, not looked for on disk")
    conf = fx.ws.tmp("empty.conf")
    open(conf, "w").close()
    before = file_state(fx.db)
    res, human = fx.status("--db alone", "--config", conf, "--db", fx.db)
    one = (res.get("filesystems") or [{}])[0]
    lins = fx.lineages(res.json)
    ls = lins.get(fx.live_uuid["s"], {})
    r.check("--db alone: the recorded uuid, no paths, lineage s with 3 processed, not looked for",
            one.get("uuid") == fx.uuid and one.get("paths") == [] and list(lins) == [fx.live_uuid["s"]]
            and ls.get("found") is False and ls.get("processed") == 3 and ls.get("unprocessed") is None
            and (ls.get("newest_processed") or {}).get("path") == fx.s.snapshots[3], str(one)[:600])
    r.check("--db alone: still both runs", len(one.get("runs") or []) == 2, str(one.get("runs")))
    r.check("--db alone: the index unchanged", file_state(fx.db) == before, str(file_state(fx.db)))


def refused(r, fx, label, args, want, mentions=(), prefix=(), watch=()):
    files = [fx.db, *watch]
    before = {p: file_state(p) for p in files}
    res = run_tool(fx.binary, ["status", *args], prefix=prefix)
    after = {p: file_state(p) for p in files}
    lines = res.stderr_lines()
    r.check(f"{label}: exit {want}, one stderr line 'snapdedupe: ...', nothing on stdout",
            res.rc == want and len(lines) == 1 and lines[0].startswith("snapdedupe: ") and res.stdout == "",
            res.describe())
    missing = [m for m in mentions if m not in res.stderr]
    r.check(f"{label}: the line names {', '.join(mentions) or 'the problem'}", not missing, res.stderr[:400])
    r.check(f"{label}: every index file involved unchanged", after == before, f"{before} -> {after}")


def part_bad_input(r, fx):
    ws = fx.ws
    r.section("bad input: exit codes, one stderr line, nothing changed")
    missing = fx.fs.path("no-such-dir")
    refused(r, fx, "a missing PATH", ["--db", fx.db, missing], 4, mentions=(missing,))
    plain = ws.tmp("not-btrfs")
    os.mkdir(plain)
    refused(r, fx, "a directory not on btrfs", ["--db", fx.db, plain], 4, mentions=(plain,))
    other = ws.make_btrfs("other", size=GiB)
    USED_FS.append(fs_uuid(other.mnt))
    subvol_create(other.path("o"))
    os.mkdir(other.path("snaps"))
    subvol_snapshot(other.path("o"), other.path("snaps", "o.1"), readonly=True)
    refused(r, fx, "another filesystem's index", ["--db", fx.db, other.path("snaps")], 5,
            mentions=(fx.uuid, USED_FS[-1]))
    foreign = ws.tmp("other-app.sqlite")
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    refused(r, fx, "another application's SQLite file", ["--db", foreign, fx.snaps], 5, watch=[foreign],
            mentions=("not a snapdedupe index",))
    refused(r, fx, "--db ''", ["--db", "", fx.snaps], 2)
    refused(r, fx, "not root", ["--db", fx.db, fx.snaps], 3, prefix=("setpriv", "--reuid=65534", "--clear-groups"),
            mentions=("root",))
    fresh = ws.tmp("fresh.sqlite")
    res, _ = fx.status("an index not there yet (other filesystem)", "--db", fresh, other.path("snaps"))
    one = (res.get("filesystems") or [{}])[0]
    r.check("an index not there yet: index_exists false, and not created",
            one.get("index_exists") is False and file_state(fresh) == {"sha256": None, "side": []},
            f"{one.get('index_exists')} {file_state(fresh)}")


def part_during_a_run(r, fx):
    r.section("status while a run holds the index (paused before its dedupe)")
    seen = {}

    def on_pause(n):
        if n == 1:
            seen["wal"] = os.path.exists(fx.db + "-wal")
            seen["res"] = run_tool(fx.binary, ["status", "--json", "--db", fx.db, fx.snaps])

    res, pauses = run_with_seam(fx.binary, ["run", "--json", "--db", fx.db, fx.snaps], fx.ws.tmp("pause.fifo"),
                                on_pause)
    got = seen.get("res")
    r.check("fixture: during the run the index has its -wal (status reads through it)", seen.get("wal") is True,
            str(seen.get("wal")))
    r.check("during the run: status exits 0 with valid JSON, both runs so far in it", got is not None and got.rc == 0
            and len(((got.get("filesystems") or [{}])[0]).get("runs") or []) == 2, got.describe() if got else "no pause")
    r.check("the run (s.5 new, d.1 still unsendable): exit 1, paused at least once", res.rc == 1 and len(pauses) >= 1,
            f"{res.describe()} pauses={len(pauses)}")
    res2, _ = fx.status("after the third run", "--db", fx.db, fx.snaps)
    one = (res2.get("filesystems") or [{}])[0]
    runs = one.get("runs") or []
    r.check("after the third run: 3 runs in the history, the newest with 1 snapshot and exit 1",
            len(runs) == 3 and runs[0].get("snapshots_processed") == 1 and runs[0].get("exit_code") == 1, str(runs)[:400])
    state = file_state(fx.db)
    r.check("after the third run: no -wal/-shm left next to the index", state["side"] == [], str(state))


def part_status(r, ws, binary):
    fx = Fixture(r, ws, binary)
    for part in (part_before_any_run, part_two_runs, part_status_after_runs, part_journal_kinds, part_index_alone,
                 part_bad_input, part_during_a_run):
        part(r, fx)


def after():
    remove_lock_files(USED_FS)


if __name__ == "__main__":
    main(PROG, __doc__, [part_status], after=after)
