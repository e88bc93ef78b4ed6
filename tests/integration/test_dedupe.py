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

from btrfs_fixture import (  # noqa: E402
    GiB, MiB, build_dedupe_series, check_binary_arg, common_argparser, compare_manifests, df,
    extend_series_identical_rewrite, file_count, is_readonly, manifest, manifest_all, require_root,
    run_parts, run_test, run_tool, subvol_ids, validate_run_json, sh)

PROG = "test_dedupe.py"


def jint(res, key, sub=None):
    """Integer field of a run's JSON, or None."""
    j = res.json if res is not None else None
    if not isinstance(j, dict):
        return None
    v = j.get(key)
    if sub is not None:
        v = v.get(sub) if isinstance(v, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


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
        r.check(f"{label}: dedupe_errors == 0", jint(res, "dedupe_errors") == 0, str(jint(res, "dedupe_errors")))
        print(f"  report: {res.json}", flush=True)


def check_integrity(r, label, before, paths, ids_before=None):
    after = manifest_all(paths)
    d = compare_manifests(before, after)
    r.check(f"{label}: every file of every snapshot hashes the same (sha256 + mode/size/"
            f"symlink/inode/mtime, {file_count(before)} files)", d == [], "; ".join(d[:5]))
    snaps = [p for p in paths if "/snaps/" in p]
    not_ro = [p for p in snaps if not is_readonly(p)]
    r.check(f"{label}: every snapshot still read-only (ro=true)", not not_ro, ", ".join(not_ro))
    if ids_before is not None:
        ids_after = {s: subvol_ids(s) for s in ids_before}
        r.check(f"{label}: snapshot UUID/parent/received UUIDs unchanged", ids_after == ids_before)


def part_main(r, ws, binary):
    r.section("build snapshot series (live subvolume deleted afterwards)")
    fs = ws.make_btrfs("main", size=GiB)
    b, info = build_dedupe_series(fs, keep_live=False)
    snaps = info["snapshots"]
    N = len(snaps)
    known = info["known_dup_bytes"]
    snapdir = fs.path("snaps")
    db = ws.tmp("index.sqlite")
    print(f"  {N} snapshots, known_dup_bytes={known}, unique data={info['unique_bytes']}", flush=True)
    for s, what, n in info["dup_log"]:
        print(f"    dup in s{s}: {what}: {n} bytes", flush=True)
    r.check("fixture: live subvolume 'src' deleted", not os.path.exists(fs.path("src")))
    r.check("fixture: all snapshots read-only", all(is_readonly(s) for s in snaps))
    before = manifest_all(snaps)
    ids_before = {s: subvol_ids(s) for s in snaps}
    u0 = df(fs.mnt)
    print(f"  usage before: {u0}", flush=True)
    if binary is None:
        print("  (selftest-fixture: not running the binary)", flush=True)
        check_integrity(r, "fixture", before, snaps, ids_before)
        return

    # 1. dry run -----------------------------------------------------------
    r.section("1. run --dry-run --json changes nothing")
    res = run_tool(binary, ["run", "--db", db, "--dry-run", "--json", snapdir])
    check_run_ok(r, "dry-run", res, dry_run=True)
    dup = jint(res, "duplicate_bytes")
    r.check(f"dry-run: duplicate_bytes >= 0.95 * known_dup_bytes ({known})", ge(dup, 0.95 * known), str(dup))
    check_integrity(r, "dry-run", before, snaps, ids_before)
    ud = df(fs.mnt)
    r.check("dry-run: data usage unchanged (within 1 MiB)", abs(ud["data_used"] - u0["data_used"]) <= MiB,
            f"{u0['data_used']} -> {ud['data_used']}")
    u0 = ud

    # 2. real run ----------------------------------------------------------
    r.section("2. real run --json frees the known duplicates")
    res = run_tool(binary, ["run", "--db", db, "--json", snapdir])
    check_run_ok(r, "run", res, dry_run=False)
    r.check(f"run: snapshots_processed == {N} (so the dry run recorded nothing)",
            jint(res, "snapshots_processed") == N, str(jint(res, "snapshots_processed")))
    for key in ("duplicate_bytes", "deduped_bytes"):
        v = jint(res, key)
        r.check(f"run: {key} >= 0.95 * known_dup_bytes ({known})", ge(v, 0.95 * known), str(v))
    r.check("run: references_moved > 0", ge(jint(res, "references_moved"), 1), str(jint(res, "references_moved")))
    u1 = df(fs.mnt)
    measured = u0["data_used"] - u1["data_used"]
    print(f"  usage after: {u1}; measured data freed = {measured} ({measured / known:.3f} of known)", flush=True)
    r.check(f"run: df Data used dropped by >= 0.95 * known_dup_bytes", measured >= 0.95 * known,
            f"{measured} vs {known}")
    sp = res.json.get("space") if isinstance(res.json, dict) else None
    rep = sp.get("data_freed") if isinstance(sp, dict) else None
    r.check("run: report space.data_freed within 5% of own measurement",
            isinstance(rep, int) and measured > 0 and abs(rep - measured) <= 0.05 * measured,
            f"reported {rep} measured {measured}")

    # 3. integrity ---------------------------------------------------------
    r.section("3. integrity after dedupe")
    check_integrity(r, "after run", before, snaps, ids_before)

    # 4. second run is a no-op and fast -------------------------------------
    r.section("4. second run: nothing new, < 1 s")
    res = run_tool(binary, ["run", "--db", db, "--json", snapdir])
    check_run_ok(r, "second run", res, dry_run=False)
    for key in ("snapshots_processed", "bytes_hashed", "deduped_bytes"):
        r.check(f"second run: {key} == 0", jint(res, key) == 0, str(jint(res, key)))
    r.check("second run: wall time < 1 s", res.elapsed < 1.0, f"{res.elapsed:.3f}s")
    check_integrity(r, "after second run", before, snaps, ids_before)

    # 5. one more snapshot with an identical rewrite -------------------------
    r.section("5. incremental: one new snapshot with an identical rewrite")
    new_snap, nbytes = extend_series_identical_rewrite(fs, b, "new1.bin")
    snaps2 = list(b.snapshots)
    before2 = manifest_all(snaps2)
    ids2 = {s: subvol_ids(s) for s in snaps2}
    u2 = df(fs.mnt)
    res = run_tool(binary, ["run", "--db", db, "--json", snapdir])
    check_run_ok(r, "incremental run", res, dry_run=False)
    r.check("incremental run: snapshots_processed == 1", jint(res, "snapshots_processed") == 1,
            str(jint(res, "snapshots_processed")))
    hashed = jint(res, "bytes_hashed")
    limit = 2 * nbytes + MiB
    r.check(f"incremental run: bytes_hashed small (<= {limit}, file is {nbytes}, "
            f"all data ~{info['unique_bytes'] + known})", hashed is not None and hashed <= limit, str(hashed))
    r.check("incremental run: deduped_bytes >= 0.95 * rewritten file",
            ge(jint(res, "deduped_bytes"), 0.95 * nbytes), str(jint(res, "deduped_bytes")))
    u3 = df(fs.mnt)
    r.check("incremental run: df Data used dropped by >= 0.95 * rewritten file",
            u2["data_used"] - u3["data_used"] >= 0.95 * nbytes, f"{u2['data_used'] - u3['data_used']} vs {nbytes}")
    check_integrity(r, "after incremental run", before2, snaps2, ids2)


def part_live(r, ws, binary):
    """A live subvolume that still references duplicates (snapper's case). By default its
    references move too, so the space is freed; --readonly-only leaves those extents alone."""
    for mode in ("default", "readonly-only"):
        r.section(f"6. live subvolume kept, {mode}")
        fs = ws.make_btrfs(f"live-{mode}", size=GiB)
        b, info = build_dedupe_series(fs, keep_live=True, seed=777)
        snaps = info["snapshots"]
        live = info["live"]
        known = info["known_dup_bytes"]
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
        u0 = df(fs.mnt)
        extra = ["--readonly-only"] if mode == "readonly-only" else []
        res = run_tool(binary, ["run", "--db", ws.tmp(f"index-{mode}.sqlite"), "--json"] + extra + [fs.path("snaps")])
        check_run_ok(r, f"{mode} run", res, dry_run=False)
        r.check(f"{mode} run: snapshots_processed == {len(snaps)}", jint(res, "snapshots_processed") == len(snaps),
                str(jint(res, "snapshots_processed")))
        u1 = df(fs.mnt)
        freed = u0["data_used"] - u1["data_used"]
        sk = jint(res, "skipped_writable_bytes")
        print(f"  known_dup_bytes={known} freed={freed} skipped_writable_bytes={sk} "
              f"(dups whose every copy is in the live subvolume: {info['live_only_dup_bytes']})", flush=True)
        if mode == "default":
            r.check("default run: skipped_writable_bytes == 0", sk == 0, str(sk))
            r.check("default run: df Data used dropped by known_dup_bytes within 5%",
                    abs(freed - known) <= 0.05 * known, f"{freed} vs {known}")
            r.check("default run: report's predicted_freed_bytes matches df within 5%",
                    abs(jint(res, "predicted_freed_bytes") - freed) <= 0.05 * max(freed, 1),
                    f"{jint(res, 'predicted_freed_bytes')} vs {freed}")
        else:
            r.check("readonly-only run: skipped_writable_bytes >= dups held only by the live subvolume",
                    ge(sk, info["live_only_dup_bytes"]), f"{sk} vs {info['live_only_dup_bytes']}")
            r.check("readonly-only run: the live subvolume's duplicate extents stay allocated",
                    freed <= known - info["live_only_dup_bytes"], f"freed {freed} vs {known - info['live_only_dup_bytes']}")
        check_integrity(r, f"{mode} run (snapshots + live subvolume)", before, paths, ids_before)
        r.check(f"{mode} run: live subvolume still writable", not is_readonly(live))


def part_compressed(r, ws, binary):
    """compress=zstd: duplicates live in compressed extents, whose bytes have no disk address
    of their own; what is freed is their compressed size."""
    r.section("7. compressed filesystem (compress=zstd)")
    fs = ws.make_btrfs("zstd", size=GiB)
    sh("mount", "-o", "remount,compress=zstd", fs.mnt)
    rng = random.Random(4242)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(6)) for _ in range(500)]
    text = b" ".join(rng.choice(words) for _ in range(500_000))  # ~3.5 MB that compresses ~3x
    live = fs.path("src")
    sh("btrfs", "-q", "subvolume", "create", live)
    os.mkdir(fs.path("snaps"))
    with open(os.path.join(live, "a.txt"), "wb") as f:
        f.write(text)
    snaps = []

    def snap():
        snaps.append(fs.path("snaps", f"src.{len(snaps) + 1}"))
        sh("btrfs", "-q", "subvolume", "snapshot", "-r", live, snaps[-1])

    snap()
    sh("cp", "--reflink=never", os.path.join(live, "a.txt"), os.path.join(live, "b.txt"))
    snap()
    os.unlink(os.path.join(live, "b.txt"))
    sh("cp", "--reflink=never", os.path.join(live, "a.txt"), os.path.join(live, "c.txt"))
    snap()
    before = manifest_all(snaps + [live])
    if binary is None:
        return
    u0 = df(fs.mnt)
    res = run_tool(binary, ["run", "--db", ws.tmp("index-zstd.sqlite"), "--json", fs.path("snaps")])
    check_run_ok(r, "compressed run", res, dry_run=False)
    freed = u0["data_used"] - df(fs.mnt)["data_used"]
    predicted = jint(res, "predicted_freed_bytes") or 0
    r.check("compressed run: both copies found (duplicate_bytes == 2 x file size)",
            jint(res, "duplicate_bytes") == 2 * len(text), str(jint(res, "duplicate_bytes")))
    r.check("compressed run: data freed > 0 and within 5% of predicted_freed_bytes",
            freed > 0 and abs(freed - predicted) <= 0.05 * predicted, f"freed {freed} predicted {predicted}")
    r.check("compressed run: less freed than the copies' uncompressed size (they were compressed)",
            freed < 2 * len(text), f"{freed} vs {2 * len(text)}")
    check_integrity(r, "compressed run", before, snaps + [live])


def part_fanout(r, ws, binary):
    """One duplicate extent referenced by more snapshots than one ioctl carries (120)."""
    r.section("8. large fan-out: a duplicate held by 130 snapshots and the live subvolume")
    fs = ws.make_btrfs("fanout", size=GiB)
    live = fs.path("src")
    sh("btrfs", "-q", "subvolume", "create", live)
    os.mkdir(fs.path("snaps"))
    size = 16 * MiB
    with open(os.path.join(live, "orig.bin"), "wb") as f:
        f.write(random.Random(77).randbytes(size))
    snaps = [fs.path("snaps", "src.000")]
    sh("btrfs", "-q", "subvolume", "snapshot", "-r", live, snaps[0])
    sh("cp", "--reflink=never", os.path.join(live, "orig.bin"), os.path.join(live, "copy.bin"))
    for i in range(1, 131):
        snaps.append(fs.path("snaps", f"src.{i:03d}"))
        sh("btrfs", "-q", "subvolume", "snapshot", "-r", live, snaps[-1])
    before = manifest_all([snaps[0], snaps[1], snaps[-1], live])
    if binary is None:
        return
    u0 = df(fs.mnt)
    res = run_tool(binary, ["run", "--db", ws.tmp("index-fanout.sqlite"), "--json", fs.path("snaps")])
    check_run_ok(r, "fan-out run", res, dry_run=False)
    freed = u0["data_used"] - df(fs.mnt)["data_used"]
    r.check("fan-out run: large_fanout_extents >= 1", (jint(res, "large_fanout_extents") or 0) >= 1,
            str(jint(res, "large_fanout_extents")))
    r.check("fan-out run: all 131 references moved (130 snapshots and live)",
            (jint(res, "references_moved") or 0) >= 131, str(jint(res, "references_moved")))
    r.check("fan-out run: the copy's 16 MiB freed (within 5%)", abs(freed - size) <= 0.05 * size, str(freed))
    r.check("fan-out run: took < 60 s", res.elapsed < 60, f"{res.elapsed:.1f}s")
    check_integrity(r, "fan-out run", before, [snaps[0], snaps[1], snaps[-1], live])


def main():
    args = common_argparser(__doc__).parse_args()
    require_root(PROG)
    binary = check_binary_arg(args, PROG)
    run_test(PROG, "snapdedupe-test_dedupe", lambda r, ws: run_parts(r, [
        ("part_main", lambda: part_main(r, ws, binary)),
        ("part_live", lambda: part_live(r, ws, binary)),
        ("part_compressed", lambda: part_compressed(r, ws, binary)),
        ("part_fanout", lambda: part_fanout(r, ws, binary))]))


if __name__ == "__main__":
    main()
