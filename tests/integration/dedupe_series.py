#!/usr/bin/env python3
"""The snapshot series of test_dedupe.py, and the self-test of its accounting (stdlib only).

build_dedupe_series() builds the series in a SeriesBuilder and tracks the duplicate bytes an
ideal deduper can free; extend_series_identical_rewrite() adds one snapshot.
reference_dedupe() is an independent FIDEDUPERANGE deduper, used only by selftest() to prove
that accounting and the space measurement are right. Run as root, without the binary:

    python3 tests/integration/dedupe_series.py --selftest-fixture
"""

import fcntl
import hashlib
import os
import stat
import struct
import sys
import time

from send_oracle import SendOracle, ground_truth_changes, send_dump
from snaptest import (GiB, KiB, MiB, SeriesBuilder, check_integrity, compare_manifests, data_bytes, df, file_count,
                      identical_rewrite, is_readonly, manifest, manifest_all, proc_mounts, require_root, run_test,
                      set_readonly, sh, subvol_delete, subvol_ids, subvol_snapshot, sync_fs)


# ---------------------------------------------------------------------------
# The series
# ---------------------------------------------------------------------------


def make_sparse(path, rng_bytes):
    """Sparse 9 MiB file: data at [0,1MiB) and [8MiB,9MiB)."""
    with open(path, "wb") as f:
        f.write(rng_bytes(MiB))
        f.seek(8 * MiB)
        f.write(rng_bytes(MiB))


def _first_snapshot(b):
    for rel, size in (("a.bin", 1 * MiB), ("b.bin", 3 * MiB + 123), ("c.bin", 300 * KiB),
                      ("big/d.bin", 16 * MiB), ("e.bin", 8 * MiB)):
        b.write_new(rel, size)
    make_sparse(b.p("sparse.img"), b.rand)
    b.write_new("hl1", 512 * KiB)
    os.makedirs(b.p("sub"), exist_ok=True)
    os.link(b.p("hl1"), b.p("sub/hl2"))            # hard-linked pair (not a duplicate)
    os.symlink("a.bin", b.p("link.to.a"))
    os.mkfifo(b.p("fifo"))
    for rel, size in (("small3k", 3 * KiB), ("appendme.log", 2 * MiB + 100), ("f.bin", 6 * MiB),
                      ("g.bin", 4 * MiB), ("h.bin", 5 * MiB)):
        b.write_new(rel, size)
    # two identical copies of a 2 MiB file inside s1 itself
    two = b.rand(2 * MiB)
    b.write_bytes("dup2m_a", two)
    b.write_bytes("dir/dup2m_b", two)
    b.dup(2 * MiB, "two identical 2 MiB files inside s1")
    b.snapshot()


def _later_snapshots(b):
    # ---- s2 -----------------------------------------------------------
    b.identical_rewrite("big/d.bin")
    b.copy_noreflink("e.bin", "copies/e_copy.bin")
    os.makedirs(b.p("moved"), exist_ok=True)
    os.rename(b.p("h.bin"), b.p("moved/h2.bin"))
    with open(b.p("appendme.log"), "ab") as f:
        f.write(b.rand(MiB + 7))
    os.unlink(b.p("g.bin"))
    b.snapshot()
    # ---- s3 -----------------------------------------------------------
    b.copy_noreflink("sparse.img", "sparse_copy.img", sparse="always")
    b.copy_noreflink("b.bin", "b_copy.bin")
    os.link(b.p("b_copy.bin"), b.p("b_copy_hardlink"))
    b.copy_noreflink("f.bin", "f_copy.bin")   # will be partly overwritten in s4
    b.write_new("new1.bin", 10 * MiB)
    b.snapshot()
    # ---- s4 -----------------------------------------------------------
    with open(b.p("f_copy.bin"), "r+b") as f:   # overwrite first 1 MiB in place
        f.write(b.rand(MiB))
    b.identical_rewrite("c.bin")
    b.snapshot()
    # ---- s5 -----------------------------------------------------------
    b.identical_rewrite("e.bin")               # third copy of e's data
    b.write_new("new2.bin", 5 * MiB)
    b.snapshot()


def build_dedupe_series(fs, keep_live=False, seed=20240601):
    """The snapshot series of test_dedupe.py. Returns (builder, info dict)."""
    b = SeriesBuilder(fs, seed=seed)
    _first_snapshot(b)
    _later_snapshots(b)
    sh("sync")
    if not keep_live:
        subvol_delete(b.live, fs.mnt)
    else:
        sync_fs(fs.mnt)
    info = {
        "snapshots": list(b.snapshots),
        "known_dup_bytes": b.known_dup_bytes,
        "unique_bytes": b.unique_bytes,
        "dup_log": list(b.dup_log),
        "live": b.live if keep_live else None,
        # duplicates where every copy is still referenced by the live subvolume
        "live_only_dup_bytes": 2 * MiB + 8 * MiB + (3 * MiB + 123),
    }
    return b, info


def extend_series_identical_rewrite(fs, b, rel="new1.bin"):
    """Test step 5: writable snapshot of the last snapshot, identical rewrite of one
    file, new read-only snapshot, delete the writable one. Returns (snapshot, dup bytes)."""
    work = fs.path("src2")
    subvol_snapshot(b.snapshots[-1], work, readonly=False)
    n = identical_rewrite(os.path.join(work, rel))
    dst = b.snapshot(source=work)
    subvol_delete(work, fs.mnt)
    return dst, n


# ---------------------------------------------------------------------------
# Independent reference deduper (fixture self-test only)
# ---------------------------------------------------------------------------

FIDEDUPERANGE = 0xC0189436
FILE_DEDUPE_RANGE_SAME = 0
FILE_DEDUPE_RANGE_DIFFERS = 1


def fideduperange(src_fd, src_off, length, dst_fd, dst_off):
    hdr = struct.pack("=QQHHI", src_off, length, 1, 0, 0)
    info = struct.pack("=qQQiI", dst_fd, dst_off, 0, 0, 0)
    buf = bytearray(hdr + info)
    fcntl.ioctl(src_fd, FIDEDUPERANGE, buf, True)
    _, _, bytes_deduped, status, _ = struct.unpack("=qQQiI", bytes(buf[24:]))
    return status, bytes_deduped


def _dedupe_onto(seen, stats, p, fd, off, data):
    """Remember the first place of these bytes, or dedupe this one onto it."""
    n = len(data)
    key = (hashlib.sha256(data).digest(), n)
    if key not in seen:
        seen[key] = (p, off)
        return
    sp, so = seen[key]
    with open(sp, "rb") as sf:
        stats["calls"] += 1
        try:
            status, done = fideduperange(sf.fileno(), so, n, fd, off)
        except OSError as e:
            stats["errors"] += 1
            print(f"    reference dedupe error {p}@{off}: {e}", flush=True)
            status, done = -1, 0
        if status == FILE_DEDUPE_RANGE_SAME:
            stats["same"] += 1
            stats["deduped"] += done
        elif status == FILE_DEDUPE_RANGE_DIFFERS:
            stats["differs"] += 1


def _dedupe_tree(snap, seen, stats, chunk):
    for dirpath, dirnames, filenames in os.walk(snap):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                continue
            with open(p, "rb") as f:
                for off in range(0, st.st_size, chunk):
                    data = os.pread(f.fileno(), chunk, off)
                    if data.count(0) != len(data):
                        _dedupe_onto(seen, stats, p, f.fileno(), off, data)


def reference_dedupe(snapshots, chunk=MiB):
    """Chunk every regular file into 1 MiB aligned pieces, keep the first occurrence of
    each content, FIDEDUPERANGE later occurrences onto it (flipping ro off/on)."""
    seen = {}          # (sha, len) -> (path, offset)
    stats = {"calls": 0, "same": 0, "differs": 0, "deduped": 0, "errors": 0}
    for snap in snapshots:
        was_ro = is_readonly(snap)
        if was_ro:
            set_readonly(snap, False)
        try:
            _dedupe_tree(snap, seen, stats, chunk)
        finally:
            if was_ro:
                set_readonly(snap, True)
    return stats


# ---------------------------------------------------------------------------
# Self-test (no binary needed)
# ---------------------------------------------------------------------------


def _selftest_series(r, fs):
    t0 = time.monotonic()
    b, info = build_dedupe_series(fs, keep_live=False)
    print(f"  built {len(info['snapshots'])} snapshots in {time.monotonic()-t0:.1f}s, "
          f"known_dup_bytes={info['known_dup_bytes']} unique_bytes={info['unique_bytes']}")
    for snap, what, n in info["dup_log"]:
        print(f"    s{snap}: {what}: {n}")
    r.check("live subvolume deleted", not os.path.exists(fs.path("src")))
    r.check("all snapshots read-only", all(is_readonly(s) for s in info["snapshots"]))
    before = manifest_all(info["snapshots"])
    r.check("manifest covers files", file_count(before) > 50, str(file_count(before)))
    r.check("manifest stable on re-read", compare_manifests(before, manifest_all(info["snapshots"])) == [])
    sp = before[info["snapshots"][0]]["sparse.img"]
    r.check("sparse file is sparse (2 MiB data of 9 MiB)",
            data_bytes(os.path.join(info["snapshots"][0], "sparse.img")) == 2 * MiB and sp[5] == 9 * MiB)
    r.check("sparse copy is sparse",
            data_bytes(os.path.join(info["snapshots"][2], "sparse_copy.img")) == 2 * MiB)
    return b, info, before


def _selftest_reference(r, fs, info, before):
    ids_before = {s: subvol_ids(s) for s in info["snapshots"]}
    u0 = df(fs.mnt)
    print(f"  df before: {u0}")
    stats = reference_dedupe(info["snapshots"])
    print(f"  reference dedupe: {stats}")
    u1 = df(fs.mnt)
    freed = u0["data_used"] - u1["data_used"]
    known = info["known_dup_bytes"]
    print(f"  df after: {u1} freed={freed} known={known} ratio={freed/known:.3f}")
    r.check("reference dedupe: no ioctl errors/differs", stats["errors"] == 0 and stats["differs"] == 0)
    r.check("known dups are freeable: freed >= 0.95*known", freed >= 0.95 * known, f"{freed} vs {known}")
    r.check("no unaccounted dups: freed <= 1.05*known + 1MiB", freed <= 1.05 * known + MiB, f"{freed} vs {known}")
    check_integrity(r, "integrity: manifests identical after reference dedupe", before, info["snapshots"])
    r.check("snapshots read-only again", all(is_readonly(s) for s in info["snapshots"]))
    r.check("subvolume UUIDs unchanged", ids_before == {s: subvol_ids(s) for s in info["snapshots"]})


def _selftest_extension(r, fs, b):
    u2 = df(fs.mnt)
    snap6, n6 = extend_series_identical_rewrite(fs, b)
    r.check("src2 deleted, new snapshot read-only", not os.path.exists(fs.path("src2")) and is_readonly(snap6))
    u3 = df(fs.mnt)
    r.check("new snapshot added ~n6 data", abs((u3["data_used"] - u2["data_used"]) - n6) <= MiB,
            f"{u3['data_used'] - u2['data_used']} vs {n6}")
    reference_dedupe(b.snapshots)
    u4 = df(fs.mnt)
    r.check("its dup is freeable", u3["data_used"] - u4["data_used"] >= 0.95 * n6,
            f"{u3['data_used'] - u4['data_used']} vs {n6}")


def _selftest_oracle(r, snaps):
    for old, new in zip(snaps, snaps[1:]):
        orc = SendOracle(old, send_dump(old, new))
        names = {n for c in orc.changed() for n in c["names"]}
        missing = [g for g in ground_truth_changes(old, new) if not set(g[0]) & names]
        r.check(f"oracle {os.path.basename(old)}->{os.path.basename(new)}: no unresolved cmds, "
                f"covers ground truth", not orc.unknown and not missing, f"{orc.unknown[:3]} {missing[:3]}")


def _selftest_body(r, ws):
    r.section("dedupe series (live deleted) + independent reference deduper")
    fs = ws.make_btrfs("main", size=GiB)
    b, info, before = _selftest_series(r, fs)
    _selftest_reference(r, fs, info, before)
    r.section("step-5 extension (identical rewrite in a new snapshot)")
    _selftest_extension(r, fs, b)
    r.section("live-kept variant")
    fs2 = ws.make_btrfs("live", size=GiB)
    b2, info2 = build_dedupe_series(fs2, keep_live=True)
    r.check("live subvolume kept and writable", os.path.isdir(b2.live) and not is_readonly(b2.live))
    live_m = manifest(b2.live)
    r.check("live has both 2 MiB copies", "dup2m_a" in live_m and "dir/dup2m_b" in live_m)
    r.section("send-stream oracle vs ground truth on the dedupe series")
    _selftest_oracle(r, info["snapshots"])
    r.section("tmpfs mount tracked")
    t = ws.mount_tmpfs("tmpfs")
    r.check("tmpfs mounted", any(m == t for _, m, _ in proc_mounts()))


if __name__ == "__main__":
    if "--selftest-fixture" in sys.argv[1:] or "--selftest" in sys.argv[1:]:
        require_root("dedupe_series.py")
        run_test("dedupe_series.py", "snapdedupe-fixture", _selftest_body)
    print(__doc__)
