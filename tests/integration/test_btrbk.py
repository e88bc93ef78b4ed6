#!/usr/bin/env python3
"""Integration test: a btrbk backup host, with the real btrbk from Debian.

    python3 tests/integration/test_btrbk.py --snapdedupe build/plugin/snapdedupe

`btrbk run` snapshots a subvolume of one loop-backed btrfs and sends it to a second one,
several times with churn (copies, identical rewrites) in between, and with every snapshot name
format btrbk has: name.YYYYMMDD, name.YYYYMMDDThhmm, name.YYYYMMDDThhmmss+hhmm, and the _N
suffix of a second snapshot in the same day. Then `snapdedupe run` on the target directory:
* the received snapshots form one lineage, processed in creation order (not name order:
  name.YYYYMMDD_1 sorts after name.YYYYMMDDThhmm);
* the known duplicate bytes are freed; every file of every snapshot hashes the same; uuids
  and received_uuids are unchanged;
* the next `btrbk run` still sends incrementally and succeeds, and what it received equals
  the source snapshot;
* after btrbk's retention deletes old snapshots, the next run's index forgets them.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (MiB, check_integrity, df, fs_uuid, identical_rewrite, index_rows, is_readonly,  # noqa: E402
                      main, manifest, manifest_all, remove_lock_files, run_tool, sh, subvol_create, subvol_ids,
                      write_random)

PROG = "test_btrbk.py"

CONFIG = """\
timestamp_format        {fmt}
snapshot_preserve_min   {keep}
target_preserve_min     {keep}
lockfile                {lock}
volume {src}
  snapshot_dir snaps
  subvolume data
    target send-receive {dst}
"""


class Btrbk:
    def __init__(self, ws, src_mnt, dst_dir):
        self.ws = ws
        self.src_mnt = src_mnt
        self.dst_dir = dst_dir
        self.conf = ws.tmp("btrbk.conf")
        self.runs = []

    def run(self, fmt, keep="all"):
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(fmt=fmt, keep=keep, lock=self.ws.tmp("btrbk.lock"), src=self.src_mnt,
                                  dst=self.dst_dir))
        sh("sync")
        p = sh("btrbk", "-c", self.conf, "run", check=False)
        out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        received = re.findall(r"^(>>>|\*\*\*) (\S+)$", out, re.M)
        self.runs.append((p.returncode, received, out))
        return p.returncode, received, out


def target_snapshots(dst):
    return sorted(os.path.join(dst, n) for n in os.listdir(dst))


def sha_only(man):
    """relpath -> sha256 of regular files (inode numbers differ between source and target)."""
    return {k: v[-1] for k, v in man.items() if v[0] == "file"}


USED_FS = []  # uuids of this test's filesystems: their lock files go at the end


class Backup:
    """A source btrfs with subvolume `data`, a target btrfs, btrbk between them, the index."""

    def __init__(self, ws):
        self.rng = random.Random(7007)
        self.src = ws.make_btrfs("src", size=1024 * MiB)
        self.dst = ws.make_btrfs("dst", size=1024 * MiB)
        USED_FS.append(fs_uuid(self.dst.mnt))
        self.data = self.src.path("data")
        subvol_create(self.data)
        os.makedirs(self.src.path("snaps"))
        self.target = self.dst.path("backup")
        os.makedirs(self.target)
        self.bk = Btrbk(ws, self.src.mnt, self.target)
        self.db = ws.tmp("index.sqlite")
        self.known = 0

    def dp(self, rel):
        return os.path.join(self.data, rel)

    def write(self, rel, size):
        write_random(self.dp(rel), size, self.rng.randbytes)

    def copy(self, src, dst):
        sh("cp", "--reflink=never", self.dp(src), self.dp(dst))

    def snapdedupe(self, binary):
        return run_tool(binary, ["run", "--json", "--db", self.db, self.target])


def churn_runs(r, b):
    """Four btrbk runs with churn between them, one per name format; returns the received
    snapshots in creation order, from btrbk's own report."""
    for rel, size in (("a.bin", 8 * MiB), ("b.bin", 6 * MiB), ("c.bin", 4 * MiB)):
        b.write(rel, size)
    steps = []
    rc, received, out = b.bk.run("short")
    steps.append(received)
    r.check("run 1 (short names): exit 0, one full receive", rc == 0 and [m for m, _ in received] == ["***"],
            out[-400:])
    b.copy("a.bin", "a_copy.bin")
    identical_rewrite(b.dp("b.bin"))
    b.write("d.bin", 3 * MiB)
    b.known += 8 * MiB + 6 * MiB
    steps.append(b.bk.run("short")[1])  # the same day again: name.YYYYMMDD_1
    b.copy("c.bin", "c_copy.bin")
    os.unlink(b.dp("a_copy.bin"))
    b.known += 4 * MiB
    steps.append(b.bk.run("long")[1])
    identical_rewrite(b.dp("d.bin"))
    b.known += 3 * MiB
    steps.append(b.bk.run("long-iso")[1])
    return [s[0][1] for s in steps]


def check_targets(r, b):
    names = [os.path.basename(p) for p in target_snapshots(b.target)]
    print(f"  target: {names}", flush=True)
    r.check("runs 2-4: exit 0, each one incremental receive",
            all(run[0] == 0 and [m for m, _ in run[1]] == [">>>"] for run in b.bk.runs[1:]),
            "; ".join(run[2][-300:] for run in b.bk.runs[1:]))
    pats = [r"^data\.\d{8}$", r"^data\.\d{8}_1$", r"^data\.\d{8}T\d{4}$", r"^data\.\d{8}T\d{6}[+-]\d{4}$"]
    r.check("target names: name.YYYYMMDD, _1, name.YYYYMMDDThhmm, name.YYYYMMDDThhmmss+hhmm",
            len(names) == 4 and all(any(re.match(p, n) for n in names) for p in pats), str(names))
    snaps = target_snapshots(b.target)
    r.check("received snapshots are read-only, with a received_uuid",
            all(is_readonly(s) and subvol_ids(s).get("Received UUID", "-") != "-" for s in snaps))
    return snaps


def dedupe_target(r, binary, b, snaps, created):
    """snapdedupe run on the target directory: one lineage in creation order, space, integrity."""
    before = manifest_all(snaps)
    ids_before = {s: subvol_ids(s) for s in snaps}
    u0 = df(b.dst.mnt)
    res = b.snapdedupe(binary)
    u1 = df(b.dst.mnt)
    freed, known = u0["data_used"] - u1["data_used"], b.known
    print(f"  run: {res.elapsed:.2f}s freed {freed / MiB:.2f} MiB of {known / MiB:.2f} MiB known duplicates; "
          f"metadata {u0['metadata_used'] / MiB:.2f} -> {u1['metadata_used'] / MiB:.2f} MiB", flush=True)
    r.check("exit 0, no dedupe errors", res.rc == 0 and res.get("dedupe_errors") == 0, res.describe())
    order = [s.get("path") for s in (res.get("snapshots") or [])]
    parents = [s.get("parent") for s in (res.get("snapshots") or [])]
    r.check("one lineage in creation order: each snapshot diffed against the one received before it",
            order == created and parents == [None] + created[:-1], f"{order} / {parents}")
    r.check(f"space freed >= 95% of the {known} known duplicate bytes", freed >= 0.95 * known, f"freed {freed}")
    r.check("space freed <= known + 1 MiB", freed <= known + MiB, f"freed {freed}")
    check_integrity(r, "integrity: every file of every snapshot hashes the same ({files} files)", before, snaps)
    r.check("uuid, parent and received_uuid unchanged; still read-only",
            ids_before == {s: subvol_ids(s) for s in snaps} and all(is_readonly(s) for s in snaps))
    return before


def next_btrbk_run(r, binary, b, snaps, before):
    """The next btrbk run after the dedupe is incremental and receives what the source holds."""
    b.write("e.bin", 2 * MiB)
    b.copy("c.bin", "c_copy2.bin")
    rc, received, out = b.bk.run("long-iso")
    r.check("btrbk run: exit 0, received incrementally (>>>, no full ***)",
            rc == 0 and [m for m, _ in received] == [">>>"], out[-600:])
    new = received[0][1] if received else None
    src_new = os.path.join(b.src.path("snaps"), os.path.basename(new)) if new else None
    r.check("what it received equals the source snapshot",
            new is not None and sha_only(manifest(new)) == sha_only(manifest(src_new)))
    check_integrity(r, "older target snapshots unchanged by the receive", before, snaps)
    u2 = df(b.dst.mnt)
    res = b.snapdedupe(binary)
    u3 = df(b.dst.mnt)
    r.check("next snapdedupe run: only the new snapshot, its copy of c freed",
            res.rc == 0 and res.get("snapshots_processed") == 1 and
            u2["data_used"] - u3["data_used"] >= 0.95 * 4 * MiB, f"{res.describe()} freed {u2['data_used'] - u3['data_used']}")


def retention(r, binary, b):
    """btrbk's retention deletes old snapshots; the next run's index holds exactly the rest."""
    snaps = target_snapshots(b.target)
    before = manifest_all(snaps)
    nblocks_before = len(index_rows(b.db)[1])
    rc, received, out = b.bk.run("long-iso", keep="latest")
    left = target_snapshots(b.target)
    r.check("btrbk run with target_preserve_min latest: exit 0, old target snapshots deleted",
            rc == 0 and len(left) < len(snaps), f"{[os.path.basename(p) for p in left]} {out[-400:]}")
    res = b.snapdedupe(binary)
    rows, blocks = index_rows(b.db)
    indexed, located, nblocks = set(rows), set(blocks.values()), len(blocks)
    alive = {subvol_ids(s)["UUID"] for s in left}
    alive_roots = {int(subvol_ids(s)["Subvolume ID"]) for s in left}
    r.check("run after retention: exit 0", res.rc == 0, res.describe())
    r.check("index holds exactly the surviving snapshots", indexed == alive, f"{indexed} vs {alive}")
    r.check("every indexed block is located in a surviving snapshot", located <= alive_roots,
            f"{located} vs {alive_roots}")
    r.check("no block forgotten: all their bytes live on in the latest snapshot, where they moved",
            nblocks == nblocks_before, f"{nblocks} vs {nblocks_before}")
    print(f"  index after retention: {len(indexed)} snapshots, {nblocks} blocks", flush=True)
    kept = [s for s in left if s in before]
    check_integrity(r, "integrity of the surviving snapshots", {s: before[s] for s in kept}, kept)


def part_btrbk(r, ws, binary):
    b = Backup(ws)
    r.section("btrbk runs with churn, every snapshot name format")
    created = churn_runs(r, b)
    snaps = check_targets(r, b)
    r.section("snapdedupe run on the target directory")
    before = dedupe_target(r, binary, b, snaps, created)
    r.section("the next btrbk run after the dedupe")
    next_btrbk_run(r, binary, b, snaps, before)
    r.section("btrbk retention deletes old snapshots; the index forgets them")
    retention(r, binary, b)


if __name__ == "__main__":
    main(PROG, __doc__, [part_btrbk], after=lambda: remove_lock_files(USED_FS))
