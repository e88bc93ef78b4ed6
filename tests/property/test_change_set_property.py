#!/usr/bin/env python3
"""Property test on real btrfs: a change set never misses a changed byte.

For each seed: a fresh loop-backed btrfs, a subvolume populated with a few files and
directories (every other seed with zstd compression), read-only snapshot A, N seeded random
operations (random_ops.py), read-only snapshot B, then `snapdedupe diff --json A B`. Every
4 KiB chunk whose content differs between A and B (ground_truth.py has the exact rule) must
lie inside the change set's ranges for that file: zero false negatives, on every seed.
Over-flagging is allowed but measured: flagged bytes / truly changed bytes is printed per
seed and in total.

    python3 tests/property/test_change_set_property.py --snapdedupe build/snapdedupe
    python3 tests/property/test_change_set_property.py --snapdedupe build/snapdedupe \\
        --seeds 1-50 --ops 2000                      # the longer run of the README
    ... --seeds 7 --ops 150 --verbose                # replay one seed, printing each operation

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from ground_truth import Comparison  # noqa: E402
from random_ops import RandomOps  # noqa: E402
from snaptest import GiB, Results, Workspace, parse_args, run_tool, sh, subvol_create, subvol_snapshot  # noqa: E402

PROG = "test_change_set_property.py"


def parse_seeds(text):
    """"1,2,5-8" -> [1, 2, 5, 6, 7, 8]"""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


class Totals:
    def __init__(self):
        self.flagged = 0
        self.true = 0
        self.false_negatives = 0
        self.ops = 0


def snapshots_around_ops(ws, seed, n_ops, verbose):
    """A fresh btrfs, a populated subvolume (zstd on even seeds), snapshot A, the seed's
    operations, snapshot B. Returns (A, B, the operations' log)."""
    fs = ws.make_btrfs("prop", size=GiB)
    live = fs.path("live")
    subvol_create(live)
    if seed % 2 == 0:  # compressed extents and compressed inline files too
        sh("btrfs", "property", "set", live, "compression", "zstd")
    ops = RandomOps(live, seed)
    ops.populate()
    snap_a, snap_b = fs.path("A"), fs.path("B")
    subvol_snapshot(live, snap_a)
    log = []
    for i in range(n_ops):
        log.append(ops.step())
        if verbose:
            print(f"    op {i}: {log[-1]}", flush=True)
    subvol_snapshot(live, snap_b)
    return snap_a, snap_b, log


def check_change_set(r, seed, n_ops, res, cmp, log):
    r.check(f"seed {seed}: the operations changed data (the test is not vacuous)",
            cmp.true_bytes > 0)
    r.check(f"seed {seed}: every change-set path is a regular file of B",
            not cmp.bad_paths, f"{cmp.bad_paths[:5]}")
    r.check(f"seed {seed}: 'created' is set exactly for inodes new in B",
            not cmp.wrong_created, f"{cmp.wrong_created[:5]}")
    if not r.check(f"seed {seed}: no false negatives", not cmp.false_negatives,
                   f"{len(cmp.false_negatives)} files with unflagged changed bytes"):
        for fn in cmp.false_negatives[:10]:
            print(f"    missed {fn['names']} (created={fn['created']}): "
                  f"unflagged {fn['missing'][:6]}; flagged {fn['flagged'][:6]}", flush=True)
        print(f"  operations of seed {seed} (replay: --seeds {seed} --ops {n_ops} --verbose):")
        for i, line in enumerate(log):
            print(f"    op {i}: {line}")


def seed_body(binary, seed, n_ops, verbose, r, totals, ws):
    snap_a, snap_b, log = snapshots_around_ops(ws, seed, n_ops, verbose)
    totals.ops += n_ops
    res = run_tool(binary, ["diff", "--json", snap_a, snap_b])
    if not r.check(f"seed {seed}: diff exits 0 with JSON", res.rc == 0 and res.json is not None,
                   res.describe()):
        return
    cmp = Comparison(snap_a, snap_b).check(res.json)
    totals.flagged += cmp.flagged_bytes
    totals.true += cmp.true_bytes
    totals.false_negatives += len(cmp.false_negatives)
    ratio = cmp.flagged_bytes / cmp.true_bytes if cmp.true_bytes else float("nan")
    print(f"  seed {seed}: {len(cmp.truth)} files truly changed, {cmp.true_bytes} bytes; "
          f"{len(res.json['changed'])} flagged, {cmp.flagged_bytes} bytes; "
          f"flagged/true = {ratio:.3f}", flush=True)
    check_change_set(r, seed, n_ops, res, cmp, log)


def run_seed(binary, seed, n_ops, verbose, r, totals):
    """One seed on its own Workspace: cleaned up and checked for leaks whatever happens."""
    r.section(f"seed {seed}: {n_ops} operations")
    t0 = time.monotonic()
    ws = Workspace(f"snapdedupe-prop{seed}")
    try:
        with ws:
            seed_body(binary, seed, n_ops, verbose, r, totals, ws)
    except BaseException as e:  # noqa: B902 -- recorded, cleanup has run, then re-raised if fatal
        r.error(f"seed {seed} raised", e)
        if not isinstance(e, Exception):
            raise
    finally:
        left = ws.leaks()
        r.check(f"seed {seed}: cleanup left no mounts, loop devices or files", not left, "; ".join(left))
        print(f"  seed {seed}: {time.monotonic() - t0:.1f}s", flush=True)


def main():
    args, binary = parse_args(PROG, __doc__, options=[
        ("--seeds", dict(default="1-8", help="seeds, e.g. 1,2,3 or 1-50 (default 1-8)")),
        ("--ops", dict(type=int, default=300, help="operations per seed (default 300)")),
        ("--verbose", dict(action="store_true", help="print every operation"))])
    r = Results(PROG)
    totals = Totals()
    t0 = time.monotonic()
    for seed in parse_seeds(args.seeds):
        run_seed(binary, seed, args.ops, args.verbose, r, totals)
    ratio = totals.flagged / totals.true if totals.true else float("nan")
    print(f"total: {totals.ops} operations, {totals.true} bytes truly changed, {totals.flagged} "
          f"flagged, flagged/true = {ratio:.3f}, false negatives: {totals.false_negatives} "
          f"({time.monotonic() - t0:.1f}s)", flush=True)
    return r.finish()


if __name__ == "__main__":
    sys.exit(main())
