#!/usr/bin/env python3
"""Integration test: `snapdedupe run` finds duplicates by checksum-tree fingerprints (issue 11).

    python3 tests/integration/test_csum_run.py --snapdedupe build/plugin/snapdedupe

Two series, each on its own loop-backed btrfs, the live subvolume deleted before the run:

uncompressed  s1: keep/u1.bin, u2.bin (8 MiB), u3.bin (5 MiB + 1), never copied; a.bin (4 MiB),
              b.bin (2 MiB + 1234), c.bin (1 MiB), random. s2: `cp --reflink=never` copies of
              a, b, c. Run with a cold page cache under a wrapper that reads its read_bytes (the
              kernel adds a reaped child's I/O to its parent's /proc/self/io). Checks: data used
              drops by the copies' bytes; no file data read for fingerprints; read_bytes <=
              compared_bytes + the index + 8 MiB, far below what hashing the files would read.
mixed         s1: plain/t1.txt (hex text, 3 MiB + 777, uncompressed), zstd/t2.txt (hex, 3 MiB, in
              a directory with compression=zstd), plain/r.bin (random, 2 MiB + 1234) and
              nodatasum/r1.bin (its copy into an empty file made `chattr +C`). s2: zstd/t1.txt,
              plain/t2.txt (each text copied to the other kind), nodatasum/r2.bin, plain/r-copy.bin.
              Checks, by FIEMAP: the zstd files are compressed; after the run each s2 copy has its
              s1 file's blocks (compressed onto uncompressed and back, nodatasum onto nodatasum,
              checksummed onto checksummed) and no nodatasum file shares a block with a
              checksummed one; dedupe_refused == dedupe_errors == 0 (the run keeps the kinds
              apart, the kernel never refuses with EINVAL); bytes_read_for_fingerprints covers
              the nodatasum files, and at most those and the compressed ones.

Both: the new counters are integers in the totals and each snapshot, bytes_hashed ==
from csums + read, and every file of every snapshot hashes the same before and after.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import fcntl
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, KiB, MiB, check_integrity, df, main, manifest_all, run_tool, sh,  # noqa: E402
                      subvol_create, subvol_delete, subvol_snapshot, sync_fs, validate_run_json, write_random)

PROG = "test_csum_run.py"
INTEGRITY = "{label}: every file of every snapshot hashes the same ({files} files)"
NEW_KEYS = ("bytes_fingerprinted_from_csums", "bytes_read_for_fingerprints", "compared_bytes")
SLACK = 8 * MiB  # btrfs metadata the run reads (send, tree searches, LOGICAL_INO), the binary's pages

# Reads the run's read_bytes: forks, execs argv[2:], reaps it, and writes the growth of its own
# /proc/self/io read_bytes (the reaped child's I/O is added to it) to argv[1].
MEASURE = """
import os, sys
def rb():
    with open("/proc/self/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("read_bytes:"))
r0 = rb()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status = os.waitpid(pid, 0)
open(sys.argv[1], "w").write(str(rb() - r0))
sys.exit(os.waitstatus_to_exitcode(status))
"""

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC, FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_ENCODED = 0x1, 0x1, 0x8
BLOCK = 4 * KiB


def fiemap(path):
    """[(logical, physical, length, flags)] of a file's extents (FS_IOC_FIEMAP, synced)."""
    out, start, count = [], 0, 64
    with open(path, "rb") as f:
        while True:
            buf = bytearray(struct.pack("=QQIIII", start, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, count, 0)
                            + b"\0" * 56 * count)
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            n = struct.unpack_from("=I", buf, 20)[0]
            ext = [struct.unpack_from("=QQQ16xI12x", buf, 32 + 56 * i) for i in range(n)]
            out += ext
            if n == 0 or ext[-1][3] & FIEMAP_EXTENT_LAST:
                return out
            start = ext[-1][0] + ext[-1][2]


def block_keys(path):
    """Where each 4 KiB block of the file lies: {block offset: key}. For an uncompressed
    extent the block's disk address; for a compressed one (FIEMAP reports its disk start, not
    where in it a block is) the extent's start, so two files share a block if the keys match."""
    keys = {}
    for logical, phys, length, flags in fiemap(path):
        for off in range(logical, logical + length, BLOCK):
            keys[off] = ("z", phys) if flags & FIEMAP_EXTENT_ENCODED else ("d", phys + off - logical)
    return keys


def same_blocks(a, b):
    """Every block of a is b's block at the same offset (so the two files share all their data)."""
    ka, kb = block_keys(a), block_keys(b)
    return bool(ka) and ka == kb


def any_shared(a, b):
    return bool(set(block_keys(a).values()) & set(block_keys(b).values()))


def encoded_bytes(path):
    return sum(min(length, os.path.getsize(path) - logical) for logical, _, length, flags in fiemap(path)
               if flags & FIEMAP_EXTENT_ENCODED)


def hex_bytes(rng):
    """randbytes-like, but compressible (hex digits of random bytes, about 2:1 for zstd)."""
    return lambda n: rng.randbytes((n + 1) // 2).hex().encode()[:n]


def nodatasum_copy(src, dst):
    """A copy into an empty file made nodatacow (so nodatasum) first: +C only takes on an empty file."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    open(dst, "wb").close()
    sh("chattr", "+C", dst)
    with open(src, "rb") as i, open(dst, "ab") as o:
        o.write(i.read())


def snapshot_and_drop_live(fs, live, steps):
    """Read-only snapshots of `live` after each of `steps` (callables), then the live
    subvolume deleted so only the snapshots reference the data."""
    snaps = []
    for i, step in enumerate(steps, 1):
        step()
        sync_fs(fs.mnt)
        snaps.append(fs.path("snaps", f"src.{i}"))
        subvol_snapshot(live, snaps[-1], readonly=True)
    subvol_delete(live, fs.mnt)
    return snaps


def drop_caches(binary):
    """Later reads come from the disk: the page cache is dropped, then the binary's own pages
    are read back in (so they do not count as the run's reads)."""
    sh("sync")
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    sh(binary, "--version", check=False)


def run(r, ws, binary, fs, label):
    """`run --json` of fs's snapshot directory with its own index; checks what every report
    must be. Returns (result, read_bytes or None, index bytes)."""
    db, iofile, script = ws.tmp(f"index-{fs.name}.sqlite"), ws.tmp(f"io-{fs.name}"), ws.tmp("measure.py")
    with open(script, "w") as f:
        f.write(MEASURE)
    res = run_tool(binary, ["run", "--db", db, "--json", fs.path("snaps")], prefix=[sys.executable, script, iofile])
    print(f"  report: {res.json}", flush=True)
    r.check(f"{label}: exit 0, one JSON object", res.rc == 0 and isinstance(res.json, dict), res.describe())
    if not isinstance(res.json, dict):
        raise RuntimeError(f"{label}: no report, nothing more to check")
    probs = validate_run_json(res.json)
    objs = [("totals", res.json)] + [(f"snapshots[{i}]", s) for i, s in enumerate(res.json.get("snapshots", []))]
    probs += [f"{w}.{k} missing or not int" for w, o in objs for k in NEW_KEYS if not isinstance(o.get(k), int)]
    r.check(f"{label}: the report's fields, {', '.join(NEW_KEYS)} too, in the totals and each snapshot",
            probs == [], "; ".join(probs[:5]))
    sums = [(w, o.get("bytes_hashed"), o.get("bytes_fingerprinted_from_csums"), o.get("bytes_read_for_fingerprints"))
            for w, o in objs]
    bad = [s for s in sums if None in s[1:] or s[1] != s[2] + s[3]]
    r.check(f"{label}: bytes_hashed == bytes_fingerprinted_from_csums + bytes_read_for_fingerprints, "
            "in the totals and each snapshot", not bad, str(bad))
    for key in ("dedupe_errors", "dedupe_refused"):
        r.check(f"{label}: {key} == 0", res.num(key) == 0, str(res.num(key)))
    index = sum(os.path.getsize(p) for p in (db, db + "-wal", db + "-shm") if os.path.exists(p))
    with open(iofile) as f:
        return res, int(f.read()), index


def part_uncompressed(r, ws, binary):
    r.section("uncompressed series: fingerprints from the checksum tree, no file data read")
    fs = ws.make_btrfs("plain", size=GiB)
    rng, live = random.Random(1101), fs.path("src")
    subvol_create(live)
    os.makedirs(fs.path("snaps"))
    sizes = {"a.bin": 4 * MiB, "b.bin": 2 * MiB + 1234, "c.bin": MiB}

    def s1():
        for name, size in (("u1.bin", 8 * MiB), ("u2.bin", 8 * MiB), ("u3.bin", 5 * MiB + 1)):
            write_random(os.path.join(live, "keep", name), size, rng.randbytes)
        for name, size in sizes.items():
            write_random(os.path.join(live, name), size, rng.randbytes)

    def s2():
        os.makedirs(os.path.join(live, "copy"))
        for name in sizes:
            sh("cp", "--reflink=never", os.path.join(live, name), os.path.join(live, "copy", name))

    snaps = snapshot_and_drop_live(fs, live, [s1, s2])
    copied, unique = sum(sizes.values()), 21 * MiB + 1
    shared = [n for n in sizes if any_shared(os.path.join(snaps[1], "copy", n), os.path.join(snaps[1], n))]
    r.check("fixture: the copies share no block with their originals before the run", not shared, str(shared))
    before, u0 = manifest_all(snaps), df(fs.mnt)
    drop_caches(binary)
    res, read, index = run(r, ws, binary, fs, "uncompressed run")
    freed = u0["data_used"] - df(fs.mnt)["data_used"]
    r.check(f"uncompressed run: df data used dropped by the copies' bytes ({copied}), within 5% and 1 MiB",
            0.95 * copied <= freed <= copied + MiB, f"freed {freed}")
    from_csums, read_fp = res.num("bytes_fingerprinted_from_csums"), res.num("bytes_read_for_fingerprints")
    r.check("uncompressed run: bytes_read_for_fingerprints == 0", read_fp == 0, str(read_fp))
    files = unique + 2 * copied  # s1's files and s2's copies: every new extent
    r.check(f"uncompressed run: bytes_fingerprinted_from_csums == bytes_hashed >= 99% of the new files' bytes "
            f"({files})", from_csums is not None and from_csums == res.num("bytes_hashed")
            and from_csums >= 0.99 * files, f"{from_csums} vs bytes_hashed {res.num('bytes_hashed')}")
    compared = res.num("compared_bytes")
    r.check("uncompressed run: compared_bytes covers both sides of the copies (>= 95% of 2 x their bytes)",
            compared is not None and compared >= 2 * 0.95 * copied, str(compared))
    bound = (compared or 0) + index + SLACK
    print(f"  read_bytes {read}, compared_bytes {compared}, index {index}, bound {bound}, "
          f"unique data {unique}", flush=True)
    r.check(f"uncompressed run: the process read <= compared_bytes + index + {SLACK // MiB} MiB "
            f"(reading the files would be >= {files})",
            read is not None and compared is not None and read <= bound, f"read_bytes {read}, bound {bound}")
    check_integrity(r, INTEGRITY.replace("{label}", "uncompressed run"), before, snaps)
    ws.release(fs, remove_image=True)


def build_mixed(fs, live):
    """The mixed series (see the module's text); returns its two snapshots."""
    rng = random.Random(1102)
    p = lambda *parts: os.path.join(live, *parts)  # noqa: E731
    subvol_create(live)
    os.makedirs(fs.path("snaps"))

    def s1():
        os.makedirs(p("zstd"))
        sh("btrfs", "property", "set", p("zstd"), "compression", "zstd")
        write_random(p("plain", "t1.txt"), 3 * MiB + 777, hex_bytes(rng))
        write_random(p("zstd", "t2.txt"), 3 * MiB, hex_bytes(rng))
        write_random(p("plain", "r.bin"), 2 * MiB + 1234, rng.randbytes)
        nodatasum_copy(p("plain", "r.bin"), p("nodatasum", "r1.bin"))

    def s2():
        sh("cp", "--reflink=never", p("plain", "t1.txt"), p("zstd", "t1.txt"))
        sh("cp", "--reflink=never", p("zstd", "t2.txt"), p("plain", "t2.txt"))
        sh("cp", "--reflink=never", p("plain", "r.bin"), p("plain", "r-copy.bin"))
        nodatasum_copy(p("plain", "r.bin"), p("nodatasum", "r2.bin"))

    return snapshot_and_drop_live(fs, live, [s1, s2])


def part_mixed(r, ws, binary):
    r.section("mixed series: uncompressed, zstd and nodatasum copies")
    fs = ws.make_btrfs("mixed", size=GiB)
    s1, s2 = build_mixed(fs, fs.path("src"))
    old, new = (lambda rel: os.path.join(s1, rel)), (lambda rel: os.path.join(s2, rel))  # noqa: E731
    pairs = [("zstd/t1.txt", "plain/t1.txt", "compressed copy onto the uncompressed original"),
             ("plain/t2.txt", "zstd/t2.txt", "uncompressed copy onto the compressed original"),
             ("nodatasum/r2.bin", "nodatasum/r1.bin", "nodatasum copy onto the other nodatasum copy"),
             ("plain/r-copy.bin", "plain/r.bin", "checksummed copy onto the checksummed original")]
    for rel in ("zstd/t1.txt", "zstd/t2.txt"):
        enc = encoded_bytes(new(rel))
        r.check(f"fixture: {rel} is compressed (>= 90% of it in encoded extents)",
                enc >= 0.9 * os.path.getsize(new(rel)), f"{enc} of {os.path.getsize(new(rel))}")
    r.check("fixture: plain/ files are not compressed",
            all(encoded_bytes(new(f"plain/{n}")) == 0 for n in ("t1.txt", "t2.txt", "r.bin", "r-copy.bin")))
    attrs = sh("lsattr", new("nodatasum/r1.bin"), new("nodatasum/r2.bin")).stdout.decode()
    r.check("fixture: the nodatasum copies are nodatacow (lsattr C)",
            all("C" in line.split()[0] for line in attrs.splitlines()), attrs)
    r.check("fixture: no copy shares a block with its original before the run",
            not any(any_shared(new(a), old(b)) for a, b, _ in pairs))
    nd = sum(os.path.getsize(new(f"nodatasum/{n}")) for n in ("r1.bin", "r2.bin"))
    zs = sum(os.path.getsize(new(f"zstd/{n}")) for n in ("t1.txt", "t2.txt"))
    before, u0 = manifest_all([s1, s2]), df(fs.mnt)
    drop_caches(binary)
    res, read, _ = run(r, ws, binary, fs, "mixed run")
    print(f"  read_bytes {read}, data freed {u0['data_used'] - df(fs.mnt)['data_used']}", flush=True)
    for a, b, what in pairs:
        r.check(f"mixed run: s2 {a} has s1 {b}'s blocks ({what})", same_blocks(new(a), old(b)),
                f"{sorted(set(block_keys(new(a)).values()))[:3]} vs {sorted(set(block_keys(old(b)).values()))[:3]}")
    check_kinds_apart(r, [s1, s2])
    read_fp, from_csums = res.num("bytes_read_for_fingerprints"), res.num("bytes_fingerprinted_from_csums")
    r.check(f"mixed run: bytes_read_for_fingerprints covers the nodatasum files ({nd}) and no more than them "
            f"and the compressed ones (+ {zs} + 1 MiB)", read_fp is not None and nd <= read_fp <= nd + zs + MiB,
            str(read_fp))
    r.check("mixed run: bytes_fingerprinted_from_csums > 0", from_csums is not None and from_csums > 0,
            str(from_csums))
    check_integrity(r, INTEGRITY.replace("{label}", "mixed run"), before, [s1, s2])
    ws.release(fs, remove_image=True)


def check_kinds_apart(r, snaps):
    """No block of a nodatasum file is a block of a checksummed file, in any snapshot."""
    nodatasum, checksummed = set(), set()
    for snap in snaps:
        for d, _, files in os.walk(snap):
            for name in files:
                path = os.path.join(d, name)
                (nodatasum if "/nodatasum/" in path else checksummed).update(block_keys(path).values())
    both = nodatasum & checksummed
    r.check(f"mixed run: no nodatasum file shares a block with a checksummed one ({len(nodatasum)} "
            f"and {len(checksummed)} blocks)", nodatasum and not both, str(sorted(both)[:5]))


if __name__ == "__main__":
    main(PROG, __doc__, [part_uncompressed, part_mixed])
