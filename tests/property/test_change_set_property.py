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

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from btrfs_fixture import (  # noqa: E402
    GiB, Results, Workspace, require_root, run_tool, sh, subvol_create, subvol_snapshot)
from ground_truth import Comparison  # noqa: E402
from random_ops import RandomOps  # noqa: E402

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


def run_seed(binary, seed, n_ops, verbose, r, totals):
    r.section(f"seed {seed}: {n_ops} operations")
    t0 = time.monotonic()
    ws = Workspace(f"snapdedupe-prop{seed}")
    try:
        with ws:
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
    except BaseException as e:  # noqa: B902 -- recorded, cleanup has run, then re-raised if fatal
        r.error(f"seed {seed} raised", e)
        if not isinstance(e, Exception):
            raise
    finally:
        left = ws.leaks()
        r.check(f"seed {seed}: cleanup left no mounts, loop devices or files", not left, "; ".join(left))
        print(f"  seed {seed}: {time.monotonic() - t0:.1f}s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapdedupe", required=True, help="path to the snapdedupe binary")
    ap.add_argument("--seeds", default="1-8", help="seeds, e.g. 1,2,3 or 1-50 (default 1-8)")
    ap.add_argument("--ops", type=int, default=300, help="operations per seed (default 300)")
    ap.add_argument("--verbose", action="store_true", help="print every operation")
    args = ap.parse_args()
    require_root(PROG)
    binary = os.path.abspath(args.snapdedupe)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"{PROG}: snapdedupe binary not found or not executable: {binary}", file=sys.stderr)
        return 1

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
