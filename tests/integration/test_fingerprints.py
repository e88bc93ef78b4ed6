#!/usr/bin/env python3
"""Integration test: block fingerprints from the btrfs checksum tree and from data (issue 11).

    python3 tests/integration/test_fingerprints.py --snapdedupe build/plugin/snapdedupe \\
        --probe build/tests/fingerprint_probe

For every checksum type `mkfs.btrfs --csum` offers (crc32c, xxhash, sha256, blake2), one small
loop-backed btrfs with:

  orig/random.bin      random, 2 MiB
  orig/odd.bin         random, 1 MiB + 1234 bytes (its last sector is partly past EOF)
  orig/text.bin        compressible (hex digits), 2 MiB + 777 bytes, stored uncompressed
  orig/split.bin       512 KiB written as 64 KiB, then (after another file took the disk space
                       behind it) the rest: its first block lies in two extents apart on disk
  orig/far.bin         random, 1 MiB, written last, after 40 MiB of gap.bin (not probed), so
                       that the files lie apart on disk (where exactly is the allocator's choice)
  copy/*.bin           `cp --reflink=never` copies of the three: new extents, the same bytes
  reflink/random.bin   `cp --reflink=always`: the same extents (a range asked twice at once)
  other/random.bin     different random bytes of the same size
  zstd/text.bin        a copy in a directory with the btrfs property compression=zstd
  nodatasum/*.bin      copies into empty files made `chattr +C` first (no checksums)

fingerprint_probe (tests/fingerprint_probe.cpp, test-only) cuts each file into the blocks a
run uses (128 KiB, file-aligned) and prints every block's fingerprint from the tree (all files'
uncompressed blocks in one call) and from its data, with the TREE_SEARCH_V2 calls and the
bytes it really read in each phase (its ioctl and reads are wrapped at link time). Checks:

* the probe names the filesystem's checksum type and size;
* every block of an uncompressed checksummed file has a tree fingerprint equal to its data
  fingerprint (so our sector checksums equal the kernel's, the tail's zero padding included),
  and the tree phase read 0 bytes;
* copies at other disk addresses, and reflinks at the same ones, have the original's
  fingerprints; a different file shares none; blocks of one file differ from one another;
* the zstd copy is compressed (but for its last, one-sector block: btrfs does not compress
  that), and its fingerprints, from data where compressed, equal the original's tree ones;
* a nodatasum copy has no checksum in the tree (every sector reported missing, no tree
  fingerprint), and its data fingerprints equal the original's tree ones.

Then, per type, a 512 MiB file: tree and data fingerprints agree on all 4096 blocks, and the
TREE_SEARCH_V2 calls it took are printed (per MiB) and bounded by the checksum bytes it holds.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import GiB, KiB, MiB, main, sh, sync_fs, write_random  # noqa: E402

PROG = "test_fingerprints.py"
PROBE = None  # set from --probe by select()

# mkfs.btrfs --csum NAME -> (the probe's name of the type, bytes per checksum)
CSUM_TYPES = {"crc32c": ("crc32c", 4), "xxhash": ("xxhash64", 8), "sha256": ("sha256", 32),
              "blake2": ("blake2b", 32)}
SECTOR = 4 * KiB
PROBE_BUFFER = 1 * MiB  # csum_tree.cpp's largest search buffer: item bytes one call returns


def probe(paths):
    argv = [PROBE] + list(paths)
    print(f"  $ {' '.join(argv[:1] + [os.path.basename(p) for p in argv[1:]])} ...", flush=True)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"fingerprint_probe failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    return json.loads(p.stdout)


def hex_bytes(rng):
    """randbytes-like: compressible bytes (hex digits of random bytes), about 2:1 for zstd."""
    return lambda n: rng.randbytes((n + 1) // 2).hex().encode()[:n]


def write_tree(mnt, seed):
    rng = random.Random(seed)
    path = lambda *p: os.path.join(mnt, *p)  # noqa: E731
    write_random(path("orig", "random.bin"), 2 * MiB, rng.randbytes)
    write_random(path("orig", "odd.bin"), MiB + 1234, rng.randbytes)
    write_random(path("orig", "text.bin"), 2 * MiB + 777, hex_bytes(rng))
    write_random(path("other", "random.bin"), 2 * MiB, rng.randbytes)
    for d in ("copy", "reflink", "zstd", "nodatasum"):
        os.makedirs(path(d), exist_ok=True)
    write_split(path("orig", "split.bin"), path("other", "filler.bin"), rng)
    for name in ("random.bin", "odd.bin", "text.bin", "split.bin"):
        sh("cp", "--reflink=never", path("orig", name), path("copy", name))
    sh("cp", "--reflink=always", path("orig", "random.bin"), path("reflink", "random.bin"))
    sh("btrfs", "property", "set", path("zstd"), "compression", "zstd")
    sh("cp", "--reflink=never", path("orig", "text.bin"), path("zstd", "text.bin"))
    for name in ("random.bin", "odd.bin"):
        # nodatasum is set on an empty file (chattr +C: nodatacow implies nodatasum)
        open(path("nodatasum", name), "wb").close()
        sh("chattr", "+C", path("nodatasum", name))
        with open(path("orig", name), "rb") as src, open(path("nodatasum", name), "wb") as dst:
            dst.write(src.read())
    sync_fs(mnt)
    write_random(path("gap.bin"), 40 * MiB, rng.randbytes)
    write_random(path("orig", "far.bin"), MiB, rng.randbytes)
    sync_fs(mnt)


def write_split(split, filler, rng):
    """A file whose first 128 KiB block spans two extents that are not adjacent on disk."""
    for path, mode, size in ((split, "wb", 64 * KiB), (filler, "wb", 64 * KiB), (split, "ab", 448 * KiB)):
        with open(path, mode) as f:
            f.write(rng.randbytes(size))
            f.flush()
            os.fsync(f.fileno())


def sectors(length):
    return (length + SECTOR - 1) // SECTOR


def blocks_cover(f):
    """The blocks cover the whole file, each at its offset (nothing skipped)."""
    want, pos = f["size"], 0
    for b in f["blocks"]:
        if b["offset"] != pos:
            return False
        pos += b["length"]
    return pos == want


def expected_searches(out):
    """Searches the tree should take: csum_tree.cpp's rule, from the disk pieces the probe printed.
    Pieces (sorted by address) share a search unless the gap before one is more than twice
    the disk span of a full checksum item (a leaf's worth of checksums)."""
    info = out["checksum"]
    max_gap = 2 * (info["nodesize"] // info["size"]) * info["sectorsize"]
    pieces = sorted((p[0], p[0] + sectors(p[1]) * SECTOR) for f in out["files"] for b in f["blocks"]
                    for p in b["pieces"])
    searches, end = 0, None
    for begin, stop in pieces:
        if end is None or begin > end + max_gap:
            searches += 1
            end = stop
        end = max(end, stop)
    return searches


def check_small_tree(r, csum, out):
    files = {os.path.relpath(f["path"], out["mnt"]): f for f in out["files"]}
    fp = lambda name, src: [b[src] for b in files[name]["blocks"]]  # noqa: E731
    addr = lambda name: [b["bytenr"] for b in files[name]["blocks"]]  # noqa: E731
    name, size = CSUM_TYPES[csum]
    r.check(f"{csum}: the probe reads type {name}, {size} bytes",
            out["checksum"]["type"] == name and out["checksum"]["size"] == size, str(out["checksum"]))
    r.check(f"{csum}: every file is cut into blocks that cover it",
            all(blocks_cover(f) for f in files.values()), str({n: f["size"] for n, f in files.items()}))

    plain = [n for n in files if n.split("/")[0] in ("orig", "copy", "reflink", "other")]
    bad = [(n, b["offset"]) for n in plain for b in files[n]["blocks"]
           if b["compressed"] or b["missing_sectors"] or b["tree"] is None or b["tree"] != b["data"]]
    r.check(f"{csum}: uncompressed checksummed files: tree fingerprint == data fingerprint, every block",
            not bad and all(files[n]["blocks"] for n in plain), str(bad[:5]))
    tree = out["tree"]
    r.check(f"{csum}: the tree phase read 0 bytes of file data (0 read calls)",
            tree["read_bytes"] == 0 and tree["read_calls"] == 0, str(tree))
    want = expected_searches(out)
    r.check(f"{csum}: the tree phase took {want} searches, one per cluster of blocks on disk (at least 2 here), "
            f"each one or two TREE_SEARCH_V2 calls",
            2 <= want == tree["searches"] <= tree["tree_search_calls"] <= 2 * want, str(tree))
    read_wanted = sum(b["length"] for f in files.values() for b in f["blocks"])
    r.check(f"{csum}: the data phase read every block's bytes once ({read_wanted} bytes, as counted by the probe)",
            out["data"]["read_bytes"] == read_wanted == out["data"]["reported_bytes"], str(out["data"]))

    split = files["orig/split.bin"]["blocks"]
    r.check(f"{csum}: orig/split.bin's first block lies in two pieces apart on disk (tree == data checked above)",
            split and len(split[0]["pieces"]) == 2, str([b["pieces"] for b in split]))
    for n in ("random.bin", "odd.bin", "text.bin", "split.bin"):
        r.check(f"{csum}: copy/{n} (other extents) has orig/{n}'s fingerprints",
                fp(f"copy/{n}", "tree") == fp(f"orig/{n}", "tree")
                and not set(addr(f"copy/{n}")) & set(addr(f"orig/{n}")))
    r.check(f"{csum}: reflink/random.bin (the same extents) has orig/random.bin's fingerprints",
            addr("reflink/random.bin") == addr("orig/random.bin")
            and fp("reflink/random.bin", "tree") == fp("orig/random.bin", "tree"))
    r.check(f"{csum}: other/random.bin shares no fingerprint with orig/random.bin",
            not set(fp("other/random.bin", "tree")) & set(fp("orig/random.bin", "tree")))
    distinct = sum((fp(f"orig/{n}", "tree") for n in ("random.bin", "odd.bin", "text.bin", "split.bin")), [])
    r.check(f"{csum}: the originals' blocks all have different fingerprints", len(set(distinct)) == len(distinct))

    # btrfs does not compress a range of one sector (nothing to save): the 777-byte last block
    # is a plain extent, fingerprinted from the tree like any other.
    z = files["zstd/text.bin"]["blocks"]
    r.check(f"{csum}: zstd/text.bin is compressed (every block longer than a sector), so not asked of the tree",
            z and all(b["compressed"] and b["tree"] is None for b in z if b["length"] > SECTOR),
            str([(b["length"], b["compressed"]) for b in z]))
    r.check(f"{csum}: zstd/text.bin's data fingerprints == orig/text.bin's tree fingerprints",
            fp("zstd/text.bin", "data") == fp("orig/text.bin", "tree"))
    as_run = [b["data"] if b["compressed"] else b["tree"] for b in z]
    r.check(f"{csum}: zstd/text.bin as a run would fingerprint it (data if compressed, else tree) "
            f"== orig/text.bin's tree fingerprints", as_run == fp("orig/text.bin", "tree"))
    for n in ("random.bin", "odd.bin"):
        nd = files[f"nodatasum/{n}"]["blocks"]
        r.check(f"{csum}: nodatasum/{n} has no tree checksums (every sector reported missing)",
                nd and all(not b["compressed"] and b["tree"] is None and b["missing_sectors"] == sectors(b["length"])
                           for b in nd), str([(b["missing_sectors"], b["tree"]) for b in nd][:4]))
        r.check(f"{csum}: nodatasum/{n}'s data fingerprints == orig/{n}'s tree fingerprints",
                fp(f"nodatasum/{n}", "data") == fp(f"orig/{n}", "tree"))


def check_big_file(r, csum, out, size):
    f = out["files"][0]
    blocks = f["blocks"]
    r.check(f"{csum}: 512 MiB file: {len(blocks)} blocks, tree == data for every one",
            len(blocks) == size // (128 * KiB) and all(b["tree"] is not None and b["tree"] == b["data"]
                                                       for b in blocks))
    tree = out["tree"]
    calls = tree["tree_search_calls"]
    # Each search takes the calls its items fill, and maybe one that finds nothing more; a new
    # search starts only at a gap on disk between the file's extents.
    bound = (tree["item_bytes"] + tree["items"] * 32) // PROBE_BUFFER + 2 * tree["searches"]
    print(f"  {csum}: 512 MiB file in {f['extents']} extent(s): {calls} TREE_SEARCH_V2 calls "
          f"({calls / (size / MiB):.4f} per MiB), {tree['searches']} search(es), {tree['items']} checksum items, "
          f"{tree['item_bytes']} item bytes, {tree['read_bytes']} bytes read", flush=True)
    r.check(f"{csum}: 512 MiB file: {tree['searches']} search(es) for {f['extents']} extent(s), "
            f"{calls} TREE_SEARCH_V2 calls (at most {bound}), 0 bytes read",
            1 <= tree["searches"] <= f["extents"] and 1 <= calls <= bound and tree["read_bytes"] == 0, str(tree))


def part_for(csum):
    def part(r, ws, binary):
        fs = ws.make_btrfs(f"fp-{csum}", size=GiB + 256 * MiB, mkfs_args=("--csum", csum))
        write_tree(fs.mnt, seed=11)
        paths = []
        for d in ("orig", "copy", "reflink", "other", "zstd", "nodatasum"):
            paths += [os.path.join(fs.mnt, d, n) for n in sorted(os.listdir(fs.path(d)))]
        out = probe(paths)
        out["mnt"] = fs.mnt
        check_small_tree(r, csum, out)

        big = 512 * MiB
        with open(fs.path("big.bin"), "wb") as f:
            f.write(os.urandom(big))
        sync_fs(fs.mnt)
        check_big_file(r, csum, probe([fs.path("big.bin")]), big)
        ws.release(fs, remove_image=True)
    part.__name__ = f"part_{csum}"
    return part


def select(args, parts):
    global PROBE
    PROBE = os.path.abspath(args.probe)
    if not os.access(PROBE, os.X_OK):
        print(f"{PROG}: fingerprint_probe not found or not executable: {PROBE}", file=sys.stderr)
        sys.exit(1)
    return parts


if __name__ == "__main__":
    main(PROG, __doc__, [part_for(c) for c in CSUM_TYPES], select=select,
         options=[("--probe", {"required": True, "help": "path to the built tests/fingerprint_probe"})])
