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
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from btrfs_fixture import (  # noqa: E402
    MiB, check_binary_arg, common_argparser, compare_manifests, df, file_count, is_readonly,
    manifest, manifest_all, require_root, run_test, run_tool, sh, subvol_create, subvol_ids)
from snapper_flow import fs_uuid, identical_rewrite, jget, remove_lock_files, write_random  # noqa: E402

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


def main():
    args = common_argparser(__doc__).parse_args()
    require_root(PROG)
    binary = check_binary_arg(args, PROG)
    uuids = []
    return run_test(PROG, "snapdedupe-btrbk", lambda r, ws: body(r, ws, binary, uuids),
                    after=lambda: remove_lock_files(uuids))


def body(r, ws, binary, uuids):
    rng = random.Random(7007)
    src = ws.make_btrfs("src", size=1024 * MiB)
    dst = ws.make_btrfs("dst", size=1024 * MiB)
    uuids.append(fs_uuid(dst.mnt))
    data = src.path("data")
    subvol_create(data)
    os.makedirs(src.path("snaps"))
    target = dst.path("backup")
    os.makedirs(target)
    bk = Btrbk(ws, src.mnt, target)
    db = ws.tmp("index.sqlite")
    known = 0

    r.section("btrbk runs with churn, every snapshot name format")
    write_random(os.path.join(data, "a.bin"), 8 * MiB, rng)
    write_random(os.path.join(data, "b.bin"), 6 * MiB, rng)
    write_random(os.path.join(data, "c.bin"), 4 * MiB, rng)
    steps = []
    rc, received, out = bk.run("short")
    steps.append(received)
    r.check("run 1 (short names): exit 0, one full receive", rc == 0 and [m for m, _ in received] == ["***"],
            out[-400:])
    sh("cp", "--reflink=never", os.path.join(data, "a.bin"), os.path.join(data, "a_copy.bin"))
    identical_rewrite(os.path.join(data, "b.bin"))
    write_random(os.path.join(data, "d.bin"), 3 * MiB, rng)
    known += 8 * MiB + 6 * MiB
    rc, received, out = bk.run("short")  # the same day again: name.YYYYMMDD_1
    steps.append(received)
    sh("cp", "--reflink=never", os.path.join(data, "c.bin"), os.path.join(data, "c_copy.bin"))
    os.unlink(os.path.join(data, "a_copy.bin"))
    known += 4 * MiB
    rc3, received, out = bk.run("long")
    steps.append(received)
    identical_rewrite(os.path.join(data, "d.bin"))
    known += 3 * MiB
    rc4, received, out = bk.run("long-iso")
    steps.append(received)
    names = [os.path.basename(p) for p in target_snapshots(target)]
    print(f"  target: {names}", flush=True)
    r.check("runs 2-4: exit 0, each one incremental receive",
            all(run[0] == 0 and [m for m, _ in run[1]] == [">>>"] for run in bk.runs[1:]),
            "; ".join(run[2][-300:] for run in bk.runs[1:]))
    pats = [r"^data\.\d{8}$", r"^data\.\d{8}_1$", r"^data\.\d{8}T\d{4}$", r"^data\.\d{8}T\d{6}[+-]\d{4}$"]
    r.check("target names: name.YYYYMMDD, _1, name.YYYYMMDDThhmm, name.YYYYMMDDThhmmss+hhmm",
            len(names) == 4 and all(any(re.match(p, n) for n in names) for p in pats), str(names))
    created = [s[0][1] for s in steps]  # creation order, from btrbk's own report
    snaps = target_snapshots(target)
    r.check("received snapshots are read-only, with a received_uuid",
            all(is_readonly(s) and subvol_ids(s).get("Received UUID", "-") != "-" for s in snaps))

    r.section("snapdedupe run on the target directory")
    before = manifest_all(snaps)
    ids_before = {s: subvol_ids(s) for s in snaps}
    u0 = df(dst.mnt)
    res = run_tool(binary, ["run", "--json", "--db", db, target])
    u1 = df(dst.mnt)
    freed = u0["data_used"] - u1["data_used"]
    print(f"  run: {res.elapsed:.2f}s freed {freed / MiB:.2f} MiB of {known / MiB:.2f} MiB known duplicates; "
          f"metadata {u0['metadata_used'] / MiB:.2f} -> {u1['metadata_used'] / MiB:.2f} MiB", flush=True)
    r.check("exit 0, no dedupe errors", res.rc == 0 and jget(res, "dedupe_errors") == 0, res.describe())
    order = [s.get("path") for s in (jget(res, "snapshots") or [])]
    parents = [s.get("parent") for s in (jget(res, "snapshots") or [])]
    r.check("one lineage in creation order: each snapshot diffed against the one received before it",
            order == created and parents == [None] + created[:-1], f"{order} / {parents}")
    r.check(f"space freed >= 95% of the {known} known duplicate bytes", freed >= 0.95 * known, f"freed {freed}")
    r.check("space freed <= known + 1 MiB", freed <= known + MiB, f"freed {freed}")
    d = compare_manifests(before, manifest_all(snaps))
    r.check(f"integrity: every file of every snapshot hashes the same ({file_count(before)} files)", d == [],
            "; ".join(d[:5]))
    r.check("uuid, parent and received_uuid unchanged; still read-only",
            ids_before == {s: subvol_ids(s) for s in snaps} and all(is_readonly(s) for s in snaps))

    r.section("the next btrbk run after the dedupe")
    write_random(os.path.join(data, "e.bin"), 2 * MiB, rng)
    sh("cp", "--reflink=never", os.path.join(data, "c.bin"), os.path.join(data, "c_copy2.bin"))
    rc, received, out = bk.run("long-iso")
    r.check("btrbk run: exit 0, received incrementally (>>>, no full ***)",
            rc == 0 and [m for m, _ in received] == [">>>"], out[-600:])
    new = received[0][1] if received else None
    src_new = os.path.join(src.path("snaps"), os.path.basename(new)) if new else None
    r.check("what it received equals the source snapshot",
            new is not None and sha_only(manifest(new)) == sha_only(manifest(src_new)))
    d = compare_manifests(before, manifest_all(snaps))
    r.check("older target snapshots unchanged by the receive", d == [], "; ".join(d[:5]))
    u2 = df(dst.mnt)
    res = run_tool(binary, ["run", "--json", "--db", db, target])
    u3 = df(dst.mnt)
    r.check("next snapdedupe run: only the new snapshot, its copy of c freed",
            res.rc == 0 and jget(res, "snapshots_processed") == 1 and
            u2["data_used"] - u3["data_used"] >= 0.95 * 4 * MiB, f"{res.describe()} freed {u2['data_used'] - u3['data_used']}")

    r.section("btrbk retention deletes old snapshots; the index forgets them")
    snaps = target_snapshots(target)
    before = manifest_all(snaps)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    nblocks_before = con.execute("SELECT count(*) FROM blocks").fetchone()[0]
    con.close()
    rc, received, out = bk.run("long-iso", keep="latest")
    left = target_snapshots(target)
    r.check("btrbk run with target_preserve_min latest: exit 0, old target snapshots deleted",
            rc == 0 and len(left) < len(snaps), f"{[os.path.basename(p) for p in left]} {out[-400:]}")
    res = run_tool(binary, ["run", "--json", "--db", db, target])
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    indexed = {row[0] for row in con.execute("SELECT uuid FROM snapshots")}
    located = {row[0] for row in con.execute("SELECT DISTINCT root_id FROM blocks")}
    nblocks = con.execute("SELECT count(*) FROM blocks").fetchone()[0]
    con.close()
    alive = {subvol_ids(s)["UUID"] for s in left}
    alive_roots = {int(subvol_ids(s)["Subvolume ID"]) for s in left}
    r.check("run after retention: exit 0", res.rc == 0, res.describe())
    r.check("index holds exactly the surviving snapshots", indexed == alive, f"{indexed} vs {alive}")
    r.check("every indexed block is located in a surviving snapshot", located <= alive_roots,
            f"{located} vs {alive_roots}")
    r.check("no block forgotten: all their bytes live on in the latest snapshot, where they moved",
            nblocks == nblocks_before, f"{nblocks} vs {nblocks_before}")
    print(f"  index after retention: {len(indexed)} snapshots, {nblocks} blocks", flush=True)
    d = compare_manifests({s: before[s] for s in left if s in before}, manifest_all([s for s in left if s in before]))
    r.check("integrity of the surviving snapshots", d == [], "; ".join(d[:5]))


if __name__ == "__main__":
    sys.exit(main())
