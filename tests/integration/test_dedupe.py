#!/usr/bin/env python3
"""Integration test: snapdedupe run on a loop-backed btrfs snapshot series.

    python3 tests/integration/test_dedupe.py --snapdedupe build/snapdedupe
    python3 tests/integration/test_dedupe.py --selftest-fixture   # fixture only, no binary

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dedupe_series import build_dedupe_series, extend_series_identical_rewrite  # noqa: E402
from snaptest import (GiB, MiB, check_integrity, df, is_readonly, main, manifest, manifest_all,  # noqa: E402
                      run_tool, sh, subvol_ids, validate_run_json)

PROG = "test_dedupe.py"
INTEGRITY = ("{label}: every file of every snapshot hashes the same (sha256 + mode/size/"
             "symlink/inode/mtime, {files} files)")


def ge(v, bound):
    return v is not None and v >= bound


def check_run_ok(r, label, res, dry_run):
    r.check(f"{label}: exit 0", res.rc == 0, res.describe())
    r.check(f"{label}: stdout is one JSON object", isinstance(res.json, dict),
            res.json_error or res.describe())
    probs = validate_run_json(res.json) if isinstance(res.json, dict) else ["no json"]
    r.check(f"{label}: JSON has all contract fields with right types", probs == [], "; ".join(probs))
    if isinstance(res.json, dict):
        r.check(f"{label}: dry_run == {dry_run}", res.json.get("dry_run") is dry_run, str(res.json.get("dry_run")))
        r.check(f"{label}: dedupe_errors == 0", res.num("dedupe_errors") == 0, str(res.num("dedupe_errors")))
        print(f"  report: {res.json}", flush=True)


def check_snapshots(r, label, before, paths, ids_before=None):
    check_integrity(r, INTEGRITY.replace("{label}", label), before, paths)
    snaps = [p for p in paths if "/snaps/" in p]
    not_ro = [p for p in snaps if not is_readonly(p)]
    r.check(f"{label}: every snapshot still read-only (ro=true)", not not_ro, ", ".join(not_ro))
    if ids_before is not None:
        ids_after = {s: subvol_ids(s) for s in ids_before}
        r.check(f"{label}: snapshot UUID/parent/received UUIDs unchanged", ids_after == ids_before)


class MainSeries:
    """Part 1-5: the dedupe series with its live subvolume deleted, one index, runs on it."""

    def __init__(self, r, ws, binary):
        self.r, self.binary = r, binary
        r.section("build snapshot series (live subvolume deleted afterwards)")
        self.fs = fs = ws.make_btrfs("main", size=GiB)
        self.b, self.info = build_dedupe_series(fs, keep_live=False)
        self.snaps, self.known = self.info["snapshots"], self.info["known_dup_bytes"]
        self.snapdir, self.db = fs.path("snaps"), ws.tmp("index.sqlite")
        print(f"  {len(self.snaps)} snapshots, known_dup_bytes={self.known}, unique data={self.info['unique_bytes']}",
              flush=True)
        for s, what, n in self.info["dup_log"]:
            print(f"    dup in s{s}: {what}: {n} bytes", flush=True)
        r.check("fixture: live subvolume 'src' deleted", not os.path.exists(fs.path("src")))
        r.check("fixture: all snapshots read-only", all(is_readonly(s) for s in self.snaps))
        self.before = manifest_all(self.snaps)
        self.ids_before = {s: subvol_ids(s) for s in self.snaps}
        self.u0 = df(fs.mnt)
        print(f"  usage before: {self.u0}", flush=True)

    def run(self, label, *extra, dry_run=False):
        res = run_tool(self.binary, ["run", "--db", self.db, *extra, "--json", self.snapdir])
        check_run_ok(self.r, label, res, dry_run=dry_run)
        return res

    def check_snapshots(self, label):
        check_snapshots(self.r, label, self.before, self.snaps, self.ids_before)

    def dry_run(self):
        r, known = self.r, self.known
        r.section("1. run --dry-run --json changes nothing")
        res = self.run("dry-run", "--dry-run", dry_run=True)
        dup = res.num("duplicate_bytes")
        r.check(f"dry-run: duplicate_bytes >= 0.95 * known_dup_bytes ({known})", ge(dup, 0.95 * known), str(dup))
        self.check_snapshots("dry-run")
        ud = df(self.fs.mnt)
        r.check("dry-run: data usage unchanged (within 1 MiB)", abs(ud["data_used"] - self.u0["data_used"]) <= MiB,
                f"{self.u0['data_used']} -> {ud['data_used']}")
        self.u0 = ud

    def real_run(self):
        r, known, N = self.r, self.known, len(self.snaps)
        r.section("2. real run --json frees the known duplicates")
        res = self.run("run")
        r.check(f"run: snapshots_processed == {N} (so the dry run recorded nothing)",
                res.num("snapshots_processed") == N, str(res.num("snapshots_processed")))
        for key in ("duplicate_bytes", "deduped_bytes"):
            v = res.num(key)
            r.check(f"run: {key} >= 0.95 * known_dup_bytes ({known})", ge(v, 0.95 * known), str(v))
        r.check("run: references_moved > 0", ge(res.num("references_moved"), 1), str(res.num("references_moved")))
        u1 = df(self.fs.mnt)
        measured = self.u0["data_used"] - u1["data_used"]
        print(f"  usage after: {u1}; measured data freed = {measured} ({measured / known:.3f} of known)", flush=True)
        r.check("run: df Data used dropped by >= 0.95 * known_dup_bytes", measured >= 0.95 * known,
                f"{measured} vs {known}")
        rep = res.num("space", "data_freed")
        r.check("run: report space.data_freed within 5% of own measurement",
                rep is not None and measured > 0 and abs(rep - measured) <= 0.05 * measured,
                f"reported {rep} measured {measured}")
        r.section("3. integrity after dedupe")
        self.check_snapshots("after run")

    def second_run(self):
        r = self.r
        r.section("4. second run: nothing new, < 1 s")
        res = self.run("second run")
        for key in ("snapshots_processed", "bytes_hashed", "deduped_bytes"):
            r.check(f"second run: {key} == 0", res.num(key) == 0, str(res.num(key)))
        r.check("second run: wall time < 1 s", res.elapsed < 1.0, f"{res.elapsed:.3f}s")
        self.check_snapshots("after second run")

    def incremental_run(self):
        r = self.r
        r.section("5. incremental: one new snapshot with an identical rewrite")
        new_snap, nbytes = extend_series_identical_rewrite(self.fs, self.b, "new1.bin")
        snaps2 = list(self.b.snapshots)
        before2 = manifest_all(snaps2)
        ids2 = {s: subvol_ids(s) for s in snaps2}
        u2 = df(self.fs.mnt)
        res = self.run("incremental run")
        r.check("incremental run: snapshots_processed == 1", res.num("snapshots_processed") == 1,
                str(res.num("snapshots_processed")))
        hashed = res.num("bytes_hashed")
        limit = 2 * nbytes + MiB
        r.check(f"incremental run: bytes_hashed small (<= {limit}, file is {nbytes}, "
                f"all data ~{self.info['unique_bytes'] + self.known})", hashed is not None and hashed <= limit,
                str(hashed))
        r.check("incremental run: deduped_bytes >= 0.95 * rewritten file",
                ge(res.num("deduped_bytes"), 0.95 * nbytes), str(res.num("deduped_bytes")))
        u3 = df(self.fs.mnt)
        r.check("incremental run: df Data used dropped by >= 0.95 * rewritten file",
                u2["data_used"] - u3["data_used"] >= 0.95 * nbytes,
                f"{u2['data_used'] - u3['data_used']} vs {nbytes}")
        check_snapshots(r, "after incremental run", before2, snaps2, ids2)


def part_main(r, ws, binary):
    t = MainSeries(r, ws, binary)
    if binary is None:
        print("  (selftest-fixture: not running the binary)", flush=True)
        check_snapshots(r, "fixture", t.before, t.snaps, t.ids_before)
        return
    t.dry_run()
    t.real_run()
    t.second_run()
    t.incremental_run()


def measured_run(r, ws, binary, fs, name, label, *extra):
    """`run --json` of fs's snaps directory with its own index: (result, data bytes freed)."""
    u0 = df(fs.mnt)
    res = run_tool(binary, ["run", "--db", ws.tmp(f"index-{name}.sqlite"), "--json", *extra, fs.path("snaps")])
    check_run_ok(r, label, res, dry_run=False)
    return res, u0["data_used"] - df(fs.mnt)["data_used"]


def check_live_run(r, mode, res, freed, info):
    known, sk = info["known_dup_bytes"], res.num("skipped_writable_bytes")
    print(f"  known_dup_bytes={known} freed={freed} skipped_writable_bytes={sk} "
          f"(dups whose every copy is in the live subvolume: {info['live_only_dup_bytes']})", flush=True)
    if mode == "default":
        r.check("default run: skipped_writable_bytes == 0", sk == 0, str(sk))
        r.check("default run: df Data used dropped by known_dup_bytes within 5%",
                abs(freed - known) <= 0.05 * known, f"{freed} vs {known}")
        r.check("default run: report's predicted_freed_bytes matches df within 5%",
                abs(res.num("predicted_freed_bytes") - freed) <= 0.05 * max(freed, 1),
                f"{res.num('predicted_freed_bytes')} vs {freed}")
    else:
        r.check("readonly-only run: skipped_writable_bytes >= dups held only by the live subvolume",
                ge(sk, info["live_only_dup_bytes"]), f"{sk} vs {info['live_only_dup_bytes']}")
        r.check("readonly-only run: the live subvolume's duplicate extents stay allocated",
                freed <= known - info["live_only_dup_bytes"], f"freed {freed} vs {known - info['live_only_dup_bytes']}")


def part_live(r, ws, binary):
    """A live subvolume that still references duplicates (snapper's case). By default its
    references move too, so the space is freed; --readonly-only leaves those extents alone."""
    for mode in ("default", "readonly-only"):
        r.section(f"6. live subvolume kept, {mode}")
        fs = ws.make_btrfs(f"live-{mode}", size=GiB)
        b, info = build_dedupe_series(fs, keep_live=True, seed=777)
        snaps, live = info["snapshots"], info["live"]
        r.check("fixture: live subvolume present and writable", os.path.isdir(live) and not is_readonly(live))
        paths = snaps + [live]
        before = manifest_all(paths)
        ids_before = {s: subvol_ids(s) for s in snaps}
        live_m = manifest(live)
        r.check("fixture: both copies of a duplicate live in the live subvolume",
                "dup2m_a" in live_m and "dir/dup2m_b" in live_m and live_m["dup2m_a"][-1] == live_m["dir/dup2m_b"][-1])
        if binary is None:
            print("  (selftest-fixture: not running the binary)", flush=True)
            continue
        extra = ["--readonly-only"] if mode == "readonly-only" else []
        res, freed = measured_run(r, ws, binary, fs, mode, f"{mode} run", *extra)
        r.check(f"{mode} run: snapshots_processed == {len(snaps)}", res.num("snapshots_processed") == len(snaps),
                str(res.num("snapshots_processed")))
        check_live_run(r, mode, res, freed, info)
        check_snapshots(r, f"{mode} run (snapshots + live subvolume)", before, paths, ids_before)
        r.check(f"{mode} run: live subvolume still writable", not is_readonly(live))


def new_series(fs):
    """A live subvolume `src` and an empty `snaps` directory; returns (live, snapshot(name))."""
    live = fs.path("src")
    sh("btrfs", "-q", "subvolume", "create", live)
    os.mkdir(fs.path("snaps"))

    def snapshot(name):
        sh("btrfs", "-q", "subvolume", "snapshot", "-r", live, fs.path("snaps", name))
        return fs.path("snaps", name)
    return live, snapshot


def series_with_file(ws, name, rel, size, seed):
    """A new filesystem whose live subvolume holds one random file `rel`, and its first snapshot:
    (fs, live, snapshot(name), [first snapshot])."""
    fs = ws.make_btrfs(name, size=GiB)
    live, snapshot = new_series(fs)
    with open(os.path.join(live, rel), "wb") as f:
        f.write(random.Random(seed).randbytes(size))
    return fs, live, snapshot, [snapshot("src.000")]


def part_compressed(r, ws, binary):
    """compress=zstd: duplicates live in compressed extents, whose bytes have no disk address
    of their own; what is freed is their compressed size."""
    r.section("7. compressed filesystem (compress=zstd)")
    fs = ws.make_btrfs("zstd", size=GiB)
    sh("mount", "-o", "remount,compress=zstd", fs.mnt)
    rng = random.Random(4242)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(6)) for _ in range(500)]
    text = b" ".join(rng.choice(words) for _ in range(500_000))  # ~3.5 MB that compresses ~3x
    live, snapshot = new_series(fs)
    with open(os.path.join(live, "a.txt"), "wb") as f:
        f.write(text)
    snaps = [snapshot("src.1")]
    sh("cp", "--reflink=never", os.path.join(live, "a.txt"), os.path.join(live, "b.txt"))
    snaps.append(snapshot("src.2"))
    os.unlink(os.path.join(live, "b.txt"))
    sh("cp", "--reflink=never", os.path.join(live, "a.txt"), os.path.join(live, "c.txt"))
    snaps.append(snapshot("src.3"))
    before = manifest_all(snaps + [live])
    if binary is None:
        return
    res, freed = measured_run(r, ws, binary, fs, "zstd", "compressed run")
    predicted = res.num("predicted_freed_bytes") or 0
    r.check("compressed run: both copies found (duplicate_bytes == 2 x file size)",
            res.num("duplicate_bytes") == 2 * len(text), str(res.num("duplicate_bytes")))
    r.check("compressed run: data freed > 0 and within 5% of predicted_freed_bytes",
            freed > 0 and abs(freed - predicted) <= 0.05 * predicted, f"freed {freed} predicted {predicted}")
    r.check("compressed run: less freed than the copies' uncompressed size (they were compressed)",
            freed < 2 * len(text), f"{freed} vs {2 * len(text)}")
    check_snapshots(r, "compressed run", before, snaps + [live])


def part_fanout(r, ws, binary):
    """One duplicate extent referenced by more snapshots than one ioctl carries (120)."""
    r.section("8. large fan-out: a duplicate held by 130 snapshots and the live subvolume")
    size = 16 * MiB
    fs, live, snapshot, snaps = series_with_file(ws, "fanout", "orig.bin", size, 77)
    sh("cp", "--reflink=never", os.path.join(live, "orig.bin"), os.path.join(live, "copy.bin"))
    snaps += [snapshot(f"src.{i:03d}") for i in range(1, 131)]
    watched = [snaps[0], snaps[1], snaps[-1], live]
    before = manifest_all(watched)
    if binary is None:
        return
    res, freed = measured_run(r, ws, binary, fs, "fanout", "fan-out run")
    r.check("fan-out run: large_fanout_extents >= 1", (res.num("large_fanout_extents") or 0) >= 1,
            str(res.num("large_fanout_extents")))
    r.check("fan-out run: all 131 references moved (130 snapshots and live)",
            (res.num("references_moved") or 0) >= 131, str(res.num("references_moved")))
    r.check("fan-out run: the copy's 16 MiB freed (within 5%)", abs(freed - size) <= 0.05 * size, str(freed))
    r.check("fan-out run: took < 60 s", res.elapsed < 60, f"{res.elapsed:.1f}s")
    check_snapshots(r, "fan-out run", before, watched)


def part_prefetch(r, ws, binary):
    """Reading each call's ranges first (the prefetch) never changes what is deduped: a run
    with it and one without (the hidden --test-no-prefetch), each on a fresh copy of one
    series, free the same bytes."""
    r.section("9. prefetch on and off free the same bytes")
    fs = ws.make_btrfs("series", size=GiB)
    _, info = build_dedupe_series(fs, keep_live=False, seed=99)
    ws.release(fs)  # its image is the series both runs copy
    if binary is None:
        return
    got = {}
    for mode, extra in (("prefetch", []), ("no-prefetch", ["--test-no-prefetch"])):
        sh("cp", "--sparse=always", fs.image, ws.tmp(f"copy-{mode}.img"))
        copy = ws.attach_btrfs(f"copy-{mode}", ws.tmp(f"copy-{mode}.img"))  # cold: none of it is cached
        snaps = [copy.path(os.path.relpath(s, fs.mnt)) for s in info["snapshots"]]
        before = manifest_all(snaps)
        res, freed = measured_run(r, ws, binary, copy, mode, f"{mode} run", *extra)
        got[mode] = (freed, res.num("deduped_bytes"), res.num("references_moved"))
        print(f"  {mode}: data freed {freed}, deduped {got[mode][1]}, references moved {got[mode][2]}", flush=True)
        check_snapshots(r, f"{mode} run", before, snaps)
        ws.release(copy, remove_image=True)
    r.check("prefetch on and off: the same data freed (df, to the byte), deduped and references moved",
            got["prefetch"] == got["no-prefetch"] and got["prefetch"][0] >= 0.95 * info["known_dup_bytes"],
            str(got))


def reinstall(live, name):
    """An identical reinstall, as dpkg does it: a new file of the same bytes, renamed over."""
    path = os.path.join(live, name)
    sh("cp", "--reflink=never", "--preserve=all", path, path + ".dpkg-new")
    os.rename(path + ".dpkg-new", path)


def part_cheaper_keeper(r, ws, binary):
    """A library reinstalled after the first snapshot: its old copy is held by one snapshot,
    its new one by three and the live subvolume. A first run moves the old copy's one
    reference onto the new copy, not the new copy's four onto the old; the next night's
    reinstall is deduped onto the new copy, which the index now holds as the keeper."""
    r.section("10. cheaper keepers: a reinstall's old copy moves onto the new one")
    size = 4 * MiB
    fs, live, snapshot, snaps = series_with_file(ws, "keepers", "lib.so", size, 2026)
    reinstall(live, "lib.so")
    snaps += [snapshot(f"src.{i:03d}") for i in (1, 2, 3)]
    before = manifest_all(snaps + [live])
    if binary is None:
        return
    res, freed = measured_run(r, ws, binary, fs, "keepers", "first run")
    r.check("first run: one reference moved (the old copy's), not four",
            res.num("references_moved") == 1, str(res.num("references_moved")))
    r.check("first run: the copy's 4 MiB freed (within 5%)", abs(freed - size) <= 0.05 * size, str(freed))
    check_snapshots(r, "first run (snapshots + live subvolume)", before, snaps + [live])

    reinstall(live, "lib.so")
    snaps.append(snapshot("src.004"))
    before = manifest_all(snaps + [live])
    res, freed = measured_run(r, ws, binary, fs, "keepers", "next night")
    r.check("next night: the new reinstall's two references (snapshot and live) moved onto the keeper",
            res.num("references_moved") == 2, str(res.num("references_moved")))
    r.check("next night: its 4 MiB freed (within 5%)", abs(freed - size) <= 0.05 * size, str(freed))
    check_snapshots(r, "next night (snapshots + live subvolume)", before, snaps + [live])


def part_second_look(r, ws, binary):
    """A small copy whose metadata leaf a large copy beside it unshares anyway. Alone, the
    small one would cost a whole leaf (more than its 8 KiB), and the batch's plan skips it for
    cost; once the large one has moved, the leaf is paid, and the pass's second look moves the
    small one too."""
    r.section("11. second look: a copy skipped for cost moves once its leaf is paid")
    small, big = 8 * 1024, 1 * MiB
    fs = ws.make_btrfs("second-look", size=GiB)
    live, snapshot = new_series(fs)
    rng = random.Random(1105)
    for name, size in (("small.bin", small), ("big.bin", big)):
        with open(os.path.join(live, name), "wb") as f:
            f.write(rng.randbytes(size))
    snaps = [snapshot("src.000")]
    # Copies numbered within one 32 inodes: one metadata leaf, as the planner counts them.
    while True:
        for name in ("small.bin", "big.bin"):
            sh("cp", "--reflink=never", os.path.join(live, name), os.path.join(live, "copy-" + name))
        inodes = [os.stat(os.path.join(live, "copy-" + n)).st_ino for n in ("small.bin", "big.bin")]
        if inodes[0] // 32 == inodes[1] // 32:
            break
        for name in ("small.bin", "big.bin"):
            os.unlink(os.path.join(live, "copy-" + name))
    snaps.append(snapshot("src.001"))
    before = manifest_all(snaps + [live])
    if binary is None:
        return
    res, freed = measured_run(r, ws, binary, fs, "second-look", "second-look run")
    expected = (
        ("nothing left alone for cost (skipped_cost_bytes == 0)", "skipped_cost_bytes", 0),
        ("both copies deduped (deduped_bytes == 1 MiB + 8 KiB)", "deduped_bytes", small + big),
        ("both copies' references moved (2 each: snapshot and live)", "references_moved", 4),
    )
    for what, field, want in expected:
        r.check(f"second-look run: {what}", res.num(field) == want, str(res.num(field)))
    r.check("second-look run: both copies' bytes freed (1 MiB + 8 KiB, within a block)",
            abs(freed - (small + big)) < 4096, str(freed))
    check_snapshots(r, "second-look run (snapshots + live subvolume)", before, snaps + [live])


if __name__ == "__main__":
    main(PROG, __doc__, [part_main, part_live, part_compressed, part_fanout, part_prefetch, part_cheaper_keeper,
          part_second_look],
         selftest=True)
