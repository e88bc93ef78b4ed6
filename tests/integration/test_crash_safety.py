#!/usr/bin/env python3
"""Integration test (issue 9): never lose work, never misreport. One snapshot series of one
lineage (duplicates whose extents are referenced from several later snapshots and the live
subvolume) is built once in an image; every case runs on a fresh copy of that image
(cp --reflink=never, its own loop device, mounted alone: copies share the filesystem's uuid).

0. reference: an uninterrupted run (and a second one that frees nothing more) on a copy: the
   data freed F and the data used after, which every case below must reach to the byte;
a. kill: `run --test-kill-after-dedupe-calls k` for k = 1, 2, ... dies by SIGKILL after its
   k-th FIDEDUPERANGE call and leaves its planned moves in the journal (the first k that
   completes gives C, the run's dedupe calls; past 12 kills, C is found by runs that are only
   killed or not); a plain rerun exits 0, frees F to the byte, reports no more deduped_bytes
   than the uninterrupted run, empties the journal (`deferred`), `PRAGMA integrity_check` is
   ok, every file of every snapshot and of the live subvolume hashes the same, and every
   snapshot is still read-only;
b. deletion: the first, a middle and the last snapshot, and the live subvolume, deleted while
   the run waits at `--test-pause-before-dedupe`: the run exits 0 (a snapshot it had not reached
   is skipped with one line), the next run exits 0, empties the journal and leaves the data used
   that the same deletion made before a run (then two runs) leaves; the survivors hash the same;
c. error: the filesystem remounted read-only at the pause: the run exits 1 with one stderr line
   naming the kept ranges, --json's dedupe_errors > 0 and predicted_freed_bytes <= F, the
   journal keeps rows with errno 30 (EROFS); remounted read-write, the next run exits 0,
   empties the journal and frees F, and the two runs' deduped_bytes add up to the
   uninterrupted run's.
Usage: test_crash_safety.py --snapdedupe BINARY [--only a,b,c] [--max-kills N]. Needs root;
last line "N passed, M failed"; exit status non-zero on any failure.
"""

import collections
import errno
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, KiB, MiB, SeriesBuilder, compare_manifests, df, fs_uuid, index_deferred,  # noqa: E402
                      index_integrity, is_readonly, main, manifest, remove_lock_files, run_tool, run_with_seam, sh,
                      subvol_delete, subvol_sync)

PROG = "test_crash_safety.py"
MAX_KILLS = 12
SNAPS = [f"snaps/src.{i}" for i in range(1, 6)]
LIVE = "src"
SHOWN = ("snapshots_processed", "duplicate_bytes", "deduped_bytes", "references_moved", "extents_planned",
         "extents_moved", "predicted_freed_bytes", "skipped_partial_bytes", "skipped_cost_bytes", "differs_bytes",
         "busy_deferred", "dedupe_errors")
FAILED_LINE = re.compile(r"^snapdedupe: (\d+) ranges failed with an error; they are kept and retried by the next run$")


# --------------------------------------------------------------------------- the series
def build_series(fs, seed=9009):
    """s1 holds the originals; each later snapshot adds copies written anew (cp --reflink=never)
    or identical rewrites, which every later snapshot and the live subvolume keep: each
    duplicate extent is referenced from its snapshot up to s5 and from the live subvolume."""
    b = SeriesBuilder(fs, seed=seed)
    for rel, size in (("a1.bin", 8 * MiB), ("a2.bin", 3 * MiB + 123), ("a3.bin", 512 * KiB),
                      ("b.bin", 6 * MiB), ("keep/u1.bin", 2 * MiB), ("keep/u2.bin", 700 * KiB)):
        b.write_new(rel, size)
    b.snapshot()                                  # s1
    b.copy_noreflink("a1.bin", "copies/a1.bin")   # s2..s5 + live
    b.identical_rewrite("a2.bin")                 # s2..s5 + live (s1 keeps the original)
    b.write_new("c1.bin", 10 * MiB)               # new in s2: a keeper for s3 and s5
    b.snapshot()                                  # s2
    b.copy_noreflink("c1.bin", "copies/c1.bin")   # s3..s5 + live
    b.identical_rewrite("a3.bin")                 # s3..s5 + live
    b.write_new("n3.bin", 2 * MiB)
    b.snapshot()                                  # s3
    b.copy_noreflink("b.bin", "copies/b.bin")     # s4, s5 + live
    b.snapshot()                                  # s4
    b.identical_rewrite("c1.bin")                 # s5 + live: a third copy of c1
    b.write_new("n5.bin", MiB)
    b.snapshot()                                  # s5
    sh("sync")
    return b


class Series:
    """The series, built once in an image that is then detached; copy() mounts a fresh copy."""

    def __init__(self, r, ws):
        self.ws, self.copies = ws, 0
        r.section("the series (built once; each case runs on a fresh copy of its image)")
        t0 = time.monotonic()
        fs = ws.make_btrfs("series", size=GiB)
        b = build_series(fs)
        self.known = b.known_dup_bytes
        self.names = SNAPS + [LIVE]
        r.check("fixture: s1..s5 read-only, live subvolume writable",
                [os.path.relpath(s, fs.mnt) for s in b.snapshots] == SNAPS
                and all(is_readonly(fs.path(s)) for s in SNAPS) and not is_readonly(fs.path(LIVE)))
        self.before = self.manifests(fs, self.names)
        self.usage = df(fs.mnt)
        self.uuid = fs_uuid(fs.mnt)
        self.image = fs.image
        ws.release(fs)
        print(f"  5 snapshots + live, known duplicate bytes {self.known} ({self.known / MiB:.1f} MiB), "
              f"{sum(len(m) for m in self.before.values())} entries; usage {self.usage}; "
              f"built in {time.monotonic() - t0:.1f}s", flush=True)
        for s, what, n in b.dup_log:
            print(f"    dup in s{s}: {what}: {n}", flush=True)

    @staticmethod
    def manifests(fs, names):
        return {n: manifest(fs.path(n)) for n in names}

    def copy(self, name):
        """A fresh copy of the series' image, attached and mounted (release() it when done)."""
        self.copies += 1
        image = self.ws.tmp(f"{name}.{self.copies}.img")
        sh("cp", "--reflink=never", "--sparse=always", self.image, image)
        return self.ws.attach_btrfs(f"{name}.{self.copies}", image)

    def check_files(self, r, label, fs, names=None):
        """Every file of every (surviving) snapshot and of the live subvolume hashes the same;
        every surviving snapshot is still read-only."""
        names = names or self.names
        d = compare_manifests({n: self.before[n] for n in names}, self.manifests(fs, names), limit=10)
        files = sum(1 for n in names for v in self.before[n].values() if v[0] == "file")
        r.check(f"{label}: every file of {', '.join(names)} hashes the same ({files} files)", d == [], "; ".join(d[:5]))
        not_ro = [n for n in names if n != LIVE and not is_readonly(fs.path(n))]
        r.check(f"{label}: every snapshot still read-only", not not_ro, ", ".join(not_ro))


def fixture(r, ws):
    if not hasattr(ws, "crash_series"):
        ws.crash_series = Series(r, ws)
    return ws.crash_series


# --------------------------------------------------------------------------- helpers
def plain_run(binary, fs, db):
    return run_tool(binary, ["run", "--db", db, "--json", fs.path("snaps")])


def show(res):
    if isinstance(res.json, dict):
        print(f"  report ({res.elapsed:.1f}s): " + ", ".join(f"{k}={res.num(k)}" for k in SHOWN), flush=True)
    if res.stderr.strip():
        print("  stderr: " + res.stderr.strip().replace("\n", "\n  stderr: "), flush=True)


def check_ok(r, label, res):
    show(res)
    return r.check(f"{label}: exit 0, one JSON object, dedupe_errors == 0",
                   res.rc == 0 and isinstance(res.json, dict) and res.num("dedupe_errors") == 0, res.describe())


def journal(db):
    try:
        return index_deferred(db)
    except Exception as e:   # noqa: BLE001 - shown in the check that reads it
        return [{"error": f"unreadable: {e}"}]


def describe_rows(rows, limit=8):
    by_error = collections.Counter(row.get("error") for row in rows)
    shown = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in rows[:limit])
    return f"{len(rows)} rows, by error {dict(by_error)}" + (f": {shown}" if shown else "")


def check_index(r, label, db):
    """The journal is empty and the index is sound."""
    rows = journal(db)
    r.check(f"{label}: the journal is empty (SELECT count(*) FROM deferred == 0)", rows == [], describe_rows(rows))
    try:
        ic = index_integrity(db)
    except Exception as e:   # noqa: BLE001
        ic = f"unreadable: {e}"
    r.check(f"{label}: PRAGMA integrity_check of the index is ok", ic == "ok", ic)


def check_data_used(r, label, got, want, what):
    r.check(f"{label}: data used {got} == {want} ({what}) to the byte", got == want,
            f"got {got}, expected {want}, difference {got - want:+d}")


# --------------------------------------------------------------------------- 0. reference
def reference(r, ws, binary):
    """An uninterrupted run, then a second one, on a fresh copy: (data used before, after, the
    run's deduped_bytes)."""
    s = fixture(r, ws)
    if hasattr(s, "reference"):
        return s.reference
    r.section("0. reference: an uninterrupted run on a fresh copy")
    fs = s.copy("reference")
    try:
        db = ws.tmp("reference.sqlite")
        u0 = df(fs.mnt)["data_used"]
        r.check("reference copy: data used as in the series", u0 == s.usage["data_used"],
                f"{u0} vs {s.usage['data_used']}")
        res = plain_run(binary, fs, db)
        check_ok(r, "reference run", res)
        u1 = df(fs.mnt)["data_used"]
        freed = u0 - u1
        print(f"  reference: data used {u0} -> {u1}: F = {freed} ({freed / MiB:.2f} MiB; "
              f"known duplicates {s.known})", flush=True)
        r.check("reference run: F within 5% of the known duplicate bytes", abs(freed - s.known) <= 0.05 * s.known,
                f"F {freed} known {s.known}")
        res2 = plain_run(binary, fs, db)
        check_ok(r, "reference, second run", res2)
        u2 = df(fs.mnt)["data_used"]
        r.check("reference, second run: no snapshot to process, frees nothing more",
                res2.num("snapshots_processed") == 0 and u2 == u1, f"{res2.num('snapshots_processed')}, {u1} -> {u2}")
        check_index(r, "reference", db)
        s.check_files(r, "reference", fs)
    finally:
        ws.release(fs, remove_image=True)
    s.reference = (u0, u2, res.num("deduped_bytes"))
    return s.reference


# --------------------------------------------------------------------------- a. kill
def kill_case(r, ws, binary, s, k, ref_after, ref_deduped):
    """One k: killed after the k-th dedupe call, then rerun. Returns the kill run's exit status."""
    fs = s.copy(f"kill{k}")
    try:
        db = ws.tmp(f"kill{k}.sqlite")
        u0 = df(fs.mnt)["data_used"]
        res = run_tool(binary, ["run", "--test-kill-after-dedupe-calls", k, "--db", db, "--json", fs.path("snaps")])
        killed = res.rc == -9
        left = journal(db) if os.path.exists(db) else []
        if killed:
            print(f"  k={k}: killed by SIGKILL ({res.elapsed:.1f}s); journal left: {describe_rows(left, 0)}",
                  flush=True)
            r.check(f"k={k}: the killed run left its planned moves in the journal (deferred > 0)", len(left) > 0,
                    describe_rows(left))
        else:
            show(res)
            r.check(f"k={k}: not reached, the run completes: exit 0, dedupe_errors == 0 (so C = {k - 1})",
                    res.rc == 0 and res.num("dedupe_errors") == 0, res.describe())
        rerun = plain_run(binary, fs, db)
        check_ok(r, f"k={k}: rerun", rerun)
        got = rerun.num("deduped_bytes")
        r.check(f"k={k}: the rerun's deduped_bytes <= the uninterrupted run's {ref_deduped} (what was left of it)",
                None not in (got, ref_deduped) and got <= ref_deduped, f"rerun deduped_bytes {got}")
        u1 = df(fs.mnt)["data_used"]
        print(f"  k={k}: data freed {u0 - u1}; data used after {u1}, after the reference run {ref_after}",
              flush=True)
        check_data_used(r, f"k={k}: after the rerun", u1, ref_after, "the uninterrupted run's")
        check_index(r, f"k={k}: after the rerun", db)
        s.check_files(r, f"k={k}: after the rerun", fs)
        return res.rc
    finally:
        ws.release(fs, remove_image=True)


def killed(ws, binary, s, k):
    """Does a run on a fresh copy die by SIGKILL after its k-th dedupe call (so C >= k)?"""
    fs = s.copy(f"probe{k}")
    try:
        res = run_tool(binary, ["run", "--test-kill-after-dedupe-calls", k, "--db", ws.tmp(f"probe{k}.sqlite"),
                                "--json", fs.path("snaps")])
        if res.rc not in (0, -9):
            raise RuntimeError(f"probe k={k}: neither killed nor done: {res.describe()}")
        return res.rc == -9
    finally:
        ws.release(fs, remove_image=True)


def count_dedupe_calls(ws, binary, s, known_killed, limit=1024):
    """C, the dedupe calls of an uninterrupted run, when a run is killed after call known_killed:
    doubling, then bisection (None past `limit`)."""
    lo, hi = known_killed, 2 * known_killed   # killed after lo; hi to find
    while killed(ws, binary, s, hi):
        lo, hi = hi, 2 * hi
        if hi > limit:
            return None
    while hi - lo > 1:   # killed after lo, done before hi
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if killed(ws, binary, s, mid) else (lo, mid)
    return lo


def part_kill(r, ws, binary):
    s = fixture(r, ws)
    ref_before, ref_after, ref_deduped = reference(r, ws, binary)
    F = ref_before - ref_after
    r.section(f"a. kill after the k-th dedupe call, k = 1..(C or {MAX_KILLS}), then a rerun frees F = {F}")
    t0, C, max_kills = time.monotonic(), None, OPTIONS["max_kills"]
    for k in range(1, max_kills + 1):
        rc = kill_case(r, ws, binary, s, k, ref_after, ref_deduped)
        if rc != -9:
            C = k - 1 if rc == 0 else None   # any other status failed its check already
            break
    else:   # killed after each of calls 1..max_kills: C from runs that are only killed or not
        C = count_dedupe_calls(ws, binary, s, max_kills)
    untested = "" if C is not None and C <= max_kills else f" (calls {max_kills + 1}..{C} untested)"
    print(f"  C = {C} dedupe calls in an uninterrupted run; killed after each of calls "
          f"1..{min(C or max_kills, max_kills)}{untested}", flush=True)
    r.check("the run makes at least 2 dedupe calls (so a kill can fall between two)", C is not None and C >= 2,
            str(C))
    print(f"  kill sweep: {time.monotonic() - t0:.1f}s", flush=True)


# --------------------------------------------------------------------------- b. deletion
DELETIONS = (("first", "snaps/src.1"), ("middle", "snaps/src.3"), ("last", "snaps/src.5"), ("live", LIVE))


def delete_before(r, ws, binary, s, case, target):
    """The same deletion before the run, then two runs: the data used they leave."""
    fs = s.copy(f"del-{case}-before")
    try:
        db = ws.tmp(f"del-{case}-before.sqlite")
        subvol_delete(fs.path(target), fs.mnt)
        results = [plain_run(binary, fs, db) for _ in range(2)]
        for i, res in enumerate(results):
            check_ok(r, f"{case} ({target}) deleted before: run {i + 1}", res)
        subvol_sync(fs.mnt)
        used = df(fs.mnt)["data_used"]
        check_index(r, f"{case} ({target}) deleted before", db)
        return used
    finally:
        ws.release(fs, remove_image=True)


def delete_during(r, ws, binary, s, case, target, want):
    fs = s.copy(f"del-{case}-during")
    survivors = [n for n in s.names if n != target]
    try:
        db = ws.tmp(f"del-{case}-during.sqlite")
        deleted = {}

        def on_pause(n):
            if n == 1:   # the first batch with moves: s2's
                p = sh("btrfs", "subvolume", "delete", "--commit-after", fs.path(target), check=False)
                deleted.update(rc=p.returncode, err=(p.stderr or b"").decode(errors="replace").strip())
            else:
                print(f"  pause {n}: journal {describe_rows(journal(db), 0)}", flush=True)

        res, pauses = run_with_seam(binary, ["run", "--db", db, "--json", fs.path("snaps")],
                                    ws.tmp(f"del-{case}.fifo"), on_pause)
        show(res)
        r.check(f"{case}: {target} deleted while the run waited at the seam", len(pauses) >= 1 and deleted.get("rc") == 0
                and not os.path.exists(fs.path(target)), f"{len(pauses)} pauses, {deleted}")
        r.check(f"{case}: the run exits 0, dedupe_errors == 0", res.rc == 0 and res.num("dedupe_errors") == 0,
                res.describe())
        lines = res.stderr_lines()
        if target in ("snaps/src.3", "snaps/src.5"):   # not reached yet when it was deleted
            r.check(f"{case}: one stderr line: {target} was deleted during the run and skipped",
                    len(lines) == 1 and fs.path(target) in lines[0] and "deleted during the run" in lines[0],
                    repr(lines))
        else:   # processed already (s1), or no snapshot (the live subvolume): nothing to say
            r.check(f"{case}: nothing on stderr", lines == [], repr(lines))
        rows = journal(db)
        print(f"  after the run: journal {describe_rows(rows, 0)}", flush=True)
        nxt = plain_run(binary, fs, db)
        check_ok(r, f"{case}: the next run", nxt)
        subvol_sync(fs.mnt)
        used = df(fs.mnt)["data_used"]
        u0 = s.usage["data_used"]
        print(f"  {case} ({target}): data freed {u0 - used} (data used {used}); the same deletion before the run: "
              f"{u0 - want} ({want})", flush=True)
        check_data_used(r, f"{case} ({target}) deleted during the run, after the next run", used, want,
                        "the same deletion before a run, then two runs")
        check_index(r, f"{case}: after the next run", db)
        s.check_files(r, f"{case}: after the next run", fs, survivors)
    finally:
        ws.release(fs, remove_image=True)


def part_delete(r, ws, binary):
    s = fixture(r, ws)
    for case, target in DELETIONS:
        r.section(f"b. {case}: {target} deleted while the run waits at the seam, against the same deletion before")
        t0 = time.monotonic()
        want = delete_before(r, ws, binary, s, case, target)
        delete_during(r, ws, binary, s, case, target, want)
        print(f"  {case}: {time.monotonic() - t0:.1f}s", flush=True)


# --------------------------------------------------------------------------- c. error
def part_error(r, ws, binary):
    s = fixture(r, ws)
    ref_before, ref_after, ref_deduped = reference(r, ws, binary)
    r.section("c. dedupe fails for real (EROFS): the filesystem remounted read-only at the seam")
    fs = s.copy("erofs")
    try:
        db = ws.tmp("erofs.sqlite")
        remount = {}

        def on_pause(n):
            if n == 1:
                p = sh("mount", "-o", "remount,ro", fs.mnt, check=False)
                remount.update(rc=p.returncode, err=(p.stderr or b"").decode(errors="replace").strip())
            else:
                print(f"  pause {n}: journal {describe_rows(journal(db), 0)}", flush=True)

        res, pauses = run_with_seam(binary, ["run", "--db", db, "--json", fs.path("snaps")],
                                    ws.tmp("erofs.fifo"), on_pause)
        show(res)
        if not r.check("mount -o remount,ro while the run waits at the seam (holding its files open): done",
                       len(pauses) >= 1 and remount.get("rc") == 0, f"{len(pauses)} pauses, {remount}"):
            return
        rows = journal(db)
        print(f"  journal after the failed run: {describe_rows(rows)}", flush=True)
        lines = res.stderr_lines()
        m = FAILED_LINE.match(lines[0]) if len(lines) == 1 else None
        errors = res.num("dedupe_errors")
        r.check("the run exits 1", res.rc == 1, res.describe())
        r.check("one stderr line: 'N ranges failed with an error; they are kept and retried by the next run', "
                "N == dedupe_errors", m is not None and int(m.group(1)) == errors, f"{lines!r}, dedupe_errors {errors}")
        r.check("--json: one JSON object, dedupe_errors > 0", isinstance(res.json, dict) and (errors or 0) > 0,
                res.describe())
        pred = res.num("predicted_freed_bytes")
        r.check(f"the failed run predicts no more than there is to free (predicted_freed_bytes <= F = "
                f"{ref_before - ref_after})", pred is not None and pred <= ref_before - ref_after,
                f"predicted_freed_bytes {pred}, extents_planned {res.num('extents_planned')}")
        erofs = [row for row in rows if row.get("error") == errno.EROFS]
        r.check(f"the journal keeps the failed moves with their errno: rows with error {errno.EROFS} (EROFS)",
                len(erofs) > 0, describe_rows(rows))
        sh("mount", "-o", "remount,rw", fs.mnt)
        nxt = plain_run(binary, fs, db)
        check_ok(r, "remounted read-write: the next run", nxt)
        both = [res.num("deduped_bytes"), nxt.num("deduped_bytes")]
        r.check(f"deduped_bytes of the failed run and the next run add up to the uninterrupted run's {ref_deduped}",
                None not in both and sum(both) == ref_deduped, f"failed run {both[0]}, next run {both[1]}")
        used = df(fs.mnt)["data_used"]
        print(f"  data freed {ref_before - used} (F {ref_before - ref_after})", flush=True)
        check_data_used(r, "after the next run", used, ref_after, "the uninterrupted run's")
        check_index(r, "after the next run", db)
        s.check_files(r, "after the next run", fs)
    finally:
        ws.release(fs, remove_image=True)


PARTS = {"a": part_kill, "b": part_delete, "c": part_error}
OPTIONS = {"max_kills": MAX_KILLS}


def cleaned(part):
    """The part, then the lock file its runs left (every copy has the series' uuid)."""
    def run(r, ws, binary):
        try:
            part(r, ws, binary)
        finally:
            if hasattr(ws, "crash_series"):
                remove_lock_files([ws.crash_series.uuid])
    run.__name__ = part.__name__
    return run


def select(args, parts):
    OPTIONS["max_kills"] = int(args.max_kills)
    return [cleaned(PARTS[p]) for p in args.only.split(",")] if args.only else [cleaned(p) for p in parts]


if __name__ == "__main__":
    main(PROG, __doc__, list(PARTS.values()), select=select,
         options=[("--only", dict(help="comma-separated parts (a,b,c), for debugging")),
                  ("--max-kills", dict(default=MAX_KILLS, help=f"kill after calls 1..N at most (default {MAX_KILLS})"))])
