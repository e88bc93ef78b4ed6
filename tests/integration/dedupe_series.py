"""Snapshot series with known duplicate bytes, and the fixture self-test (stdlib only).

SeriesBuilder builds read-only snapshot series in a live subvolume and tracks the
duplicate bytes an ideal deduper can free; build_dedupe_series() is the series
test_dedupe.py uses. reference_dedupe() is an independent FIDEDUPERANGE deduper used
only by selftest() to prove that accounting and the space measurement are right.
Re-exported by btrfs_fixture.py (which runs selftest() for --selftest-fixture).
"""

import errno
import fcntl
import hashlib
import os
import random
import stat
import struct
import time

from integrity import compare_manifests, file_count, manifest, manifest_all
from loop_btrfs import (GiB, KiB, MiB, Results, Workspace, _proc_mounts, df, is_readonly,
                        set_readonly, sh, subvol_create, subvol_delete, subvol_ids,
                        subvol_snapshot, sync_fs)
from send_oracle import SendOracle, ground_truth_changes, send_dump


# ---------------------------------------------------------------------------
# Snapshot series builder
# ---------------------------------------------------------------------------


class SeriesBuilder:
    """Builds a snapshot series: live subvolume <mnt>/<live>, read-only snapshots
    <mnt>/<snapdir>/<live>.1 ... ; tracks known duplicate bytes (data that an
    ideal deduper can free because an identical copy exists elsewhere)."""

    def __init__(self, fs, live="src", snapdir="snaps", seed=1234):
        self.fs = fs
        self.mnt = fs.mnt
        self.live_name = live
        self.live = fs.path(live)
        self.snapdir = fs.path(snapdir)
        self.rng = random.Random(seed)
        self.snapshots = []
        self.known_dup_bytes = 0
        self.dup_log = []        # (snapshot number the dup first appears in, description, bytes)
        self.unique_bytes = 0    # bytes of freshly generated random data
        subvol_create(self.live)
        os.makedirs(self.snapdir, exist_ok=True)

    # -- data -----------------------------------------------------------
    def rand(self, n):
        self.unique_bytes += n
        return self.rng.randbytes(n)

    def p(self, rel):
        return os.path.join(self.live, rel)

    def write_new(self, rel, size):
        path = self.p(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            remaining = size
            while remaining:
                n = min(remaining, 4 * MiB)
                f.write(self.rand(n))
                remaining -= n
        return path

    def write_bytes(self, rel, data):
        path = self.p(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def dup(self, nbytes, what):
        self.known_dup_bytes += nbytes
        self.dup_log.append((len(self.snapshots) + 1, what, nbytes))

    def identical_rewrite(self, rel):
        """Write the same bytes to a tmp file and rename it over -> new extents, pure duplicate."""
        path = self.p(rel)
        with open(path, "rb") as f:
            data = f.read()
        st = os.stat(path)
        tmp = path + ".tmp~"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.rename(tmp, path)
        self.dup(len(data), f"identical rewrite of {rel}")

    def copy_noreflink(self, src, dst, sparse=None, count_dup=True):
        args = ["cp", "--reflink=never"]
        if sparse:
            args.append(f"--sparse={sparse}")
        os.makedirs(os.path.dirname(self.p(dst)), exist_ok=True)
        sh(*args, self.p(src), self.p(dst))
        if count_dup:
            self.dup(data_bytes(self.p(dst)), f"cp --reflink=never {src} {dst}")

    def snapshot(self):
        n = len(self.snapshots) + 1
        dst = os.path.join(self.snapdir, f"{self.live_name}.{n}")
        sh("sync")
        subvol_snapshot(self.live, dst, readonly=True)
        self.snapshots.append(dst)
        return dst


def data_bytes(path):
    """Bytes of a file that are backed by data (not holes), via SEEK_DATA/SEEK_HOLE."""
    total = 0
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            total += h - d
            off = h
    return total


def make_sparse(path, rng_bytes):
    """Sparse 9 MiB file: data at [0,1MiB) and [8MiB,9MiB)."""
    with open(path, "wb") as f:
        f.write(rng_bytes(MiB))
        f.seek(8 * MiB)
        f.write(rng_bytes(MiB))


def build_dedupe_series(fs, keep_live=False, seed=20240601):
    """The snapshot series of test_dedupe.py. Returns (builder, info dict)."""
    b = SeriesBuilder(fs, seed=seed)
    # ---- s1 -----------------------------------------------------------
    b.write_new("a.bin", 1 * MiB)
    b.write_new("b.bin", 3 * MiB + 123)
    b.write_new("c.bin", 300 * KiB)
    b.write_new("big/d.bin", 16 * MiB)
    b.write_new("e.bin", 8 * MiB)
    make_sparse(b.p("sparse.img"), b.rand)
    b.write_new("hl1", 512 * KiB)
    os.makedirs(b.p("sub"), exist_ok=True)
    os.link(b.p("hl1"), b.p("sub/hl2"))            # hard-linked pair (not a duplicate)
    os.symlink("a.bin", b.p("link.to.a"))
    os.mkfifo(b.p("fifo"))
    b.write_new("small3k", 3 * KiB)
    b.write_new("appendme.log", 2 * MiB + 100)
    b.write_new("f.bin", 6 * MiB)
    b.write_new("g.bin", 4 * MiB)
    b.write_new("h.bin", 5 * MiB)
    # two identical copies of a 2 MiB file inside s1 itself
    two = b.rand(2 * MiB)
    b.write_bytes("dup2m_a", two)
    b.write_bytes("dir/dup2m_b", two)
    b.dup(2 * MiB, "two identical 2 MiB files inside s1")
    b.snapshot()
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
    last = b.snapshots[-1]
    work = fs.path("src2")
    subvol_snapshot(last, work, readonly=False)
    path = os.path.join(work, rel)
    with open(path, "rb") as f:
        data = f.read()
    tmp = path + ".tmp~"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
    n = len(b.snapshots) + 1
    dst = os.path.join(b.snapdir, f"{b.live_name}.{n}")
    sh("sync")
    subvol_snapshot(work, dst, readonly=True)
    b.snapshots.append(dst)
    subvol_delete(work, fs.mnt)
    return dst, len(data)


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
            for dirpath, dirnames, filenames in os.walk(snap):
                dirnames.sort()
                for name in sorted(filenames):
                    p = os.path.join(dirpath, name)
                    st = os.lstat(p)
                    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                        continue
                    with open(p, "rb") as f:
                        fd = f.fileno()
                        off = 0
                        while off < st.st_size:
                            data = os.pread(fd, chunk, off)
                            n = len(data)
                            if data.count(0) == n:
                                off += n
                                continue
                            key = (hashlib.sha256(data).digest(), n)
                            if key not in seen:
                                seen[key] = (p, off)
                            else:
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
                            off += n
        finally:
            if was_ro:
                set_readonly(snap, True)
    return stats



# ---------------------------------------------------------------------------
# Self-test (no binary needed)
# ---------------------------------------------------------------------------


def selftest():
    r = Results("btrfs_fixture selftest")
    ws = Workspace("snapdedupe-fixture")
    try:
        with ws:
            r.section("dedupe series (live deleted) + independent reference deduper")
            fs = ws.make_btrfs("main", size=GiB)
            t0 = time.monotonic()
            b, info = build_dedupe_series(fs, keep_live=False)
            print(f"  built {len(info['snapshots'])} snapshots in {time.monotonic()-t0:.1f}s, "
                  f"known_dup_bytes={info['known_dup_bytes']} unique_bytes={info['unique_bytes']}")
            for snap, what, n in info["dup_log"]:
                print(f"    s{snap}: {what}: {n}")
            r.check("live subvolume deleted", not os.path.exists(fs.path("src")))
            r.check("all snapshots read-only", all(is_readonly(s) for s in info["snapshots"]))
            before = manifest_all(info["snapshots"])
            ids_before = {s: subvol_ids(s) for s in info["snapshots"]}
            r.check("manifest covers files", file_count(before) > 50, str(file_count(before)))
            r.check("manifest stable on re-read", compare_manifests(before, manifest_all(info["snapshots"])) == [])
            sp = before[info["snapshots"][0]]["sparse.img"]
            r.check("sparse file is sparse (2 MiB data of 9 MiB)",
                    data_bytes(os.path.join(info["snapshots"][0], "sparse.img")) == 2 * MiB and sp[5] == 9 * MiB)
            r.check("sparse copy is sparse",
                    data_bytes(os.path.join(info["snapshots"][2], "sparse_copy.img")) == 2 * MiB)
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
            after = manifest_all(info["snapshots"])
            d = compare_manifests(before, after)
            r.check("integrity: manifests identical after reference dedupe", d == [], "; ".join(d[:5]))
            r.check("snapshots read-only again", all(is_readonly(s) for s in info["snapshots"]))
            r.check("subvolume UUIDs unchanged", ids_before == {s: subvol_ids(s) for s in info["snapshots"]})

            r.section("step-5 extension (identical rewrite in a new snapshot)")
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

            r.section("live-kept variant")
            fs2 = ws.make_btrfs("live", size=GiB)
            b2, info2 = build_dedupe_series(fs2, keep_live=True)
            r.check("live subvolume kept and writable", os.path.isdir(b2.live) and not is_readonly(b2.live))
            live_m = manifest(b2.live)
            r.check("live has both 2 MiB copies", "dup2m_a" in live_m and "dir/dup2m_b" in live_m)

            r.section("send-stream oracle vs ground truth on the dedupe series")
            snaps = info["snapshots"]
            for old, new in zip(snaps, snaps[1:]):
                orc = SendOracle(old, send_dump(old, new))
                names = {n for c in orc.changed() for n in c["names"]}
                gt = ground_truth_changes(old, new)
                missing = [g for g in gt if not set(g[0]) & names]
                r.check(f"oracle {os.path.basename(old)}->{os.path.basename(new)}: no unresolved cmds, "
                        f"covers ground truth", not orc.unknown and not missing, f"{orc.unknown[:3]} {missing[:3]}")
            r.section("tmpfs mount tracked")
            t = ws.mount_tmpfs("tmpfs")
            r.check("tmpfs mounted", any(m == t for _, m, _ in _proc_mounts()))
    except BaseException as e:
        r.error("selftest raised", e)
        import traceback
        traceback.print_exc()
    left = ws.leaks()
    r.check("cleanup: no mounts/loops/dirs left", left == [], "; ".join(left))
    return r.finish()
