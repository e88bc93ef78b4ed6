#!/usr/bin/env python3
"""Integration test: snapdedupe rejects bad input with the contract's exit codes,
one "snapdedupe: ..." line on stderr, and changes nothing.

    python3 tests/integration/test_bad_input.py --snapdedupe build/snapdedupe
    python3 tests/integration/test_bad_input.py --selftest-fixture   # fixture only, no binary

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import hashlib
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, KiB, MiB, SeriesBuilder, check_integrity, is_readonly, main,  # noqa: E402
                      manifest_all, run_tool, sh)

PROG = "test_bad_input.py"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def file_state(path):
    if not os.path.lexists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Fixture:
    """Two snapshots with a real duplicate (so a wrong run would act), the live subvolume, a
    btrfs dir without snapshots, a tmpfs, an index path and a corrupt index."""

    def __init__(self, r, ws):
        r.section("fixture")
        self.fs = fs = ws.make_btrfs("bad", size=GiB)
        self.b = b = SeriesBuilder(fs, seed=99)
        b.write_new("f1", MiB + 17)
        b.write_new("d/f2", 300 * KiB)
        b.snapshot()
        b.copy_noreflink("f1", "f1.copy")           # a real duplicate, so a wrong run would act
        b.snapshot()
        self.live = b.live                          # writable subvolume, kept
        self.snapdir = fs.path("snaps")
        self.empty_dir = fs.path("no_snapshots_here")
        os.makedirs(os.path.join(self.empty_dir, "plain_dir"))
        self.tmpfs = ws.mount_tmpfs("tmpfs")
        os.makedirs(os.path.join(self.tmpfs, "dir"))
        self.watched = b.snapshots + [self.live]
        self.before = manifest_all(self.watched)
        r.check("fixture: snapshots read-only, live writable",
                all(is_readonly(s) for s in b.snapshots) and not is_readonly(self.live))
        self.db = ws.tmp("index.sqlite")
        self.corrupt_db = ws.tmp("corrupt.sqlite")
        with open(self.corrupt_db, "wb") as f:
            f.write(random.Random(5).randbytes(4 * KiB))
        r.check("fixture: corrupt db is 4 KiB of garbage", os.path.getsize(self.corrupt_db) == 4 * KiB)


def binary_for_nobody(r, ws, binary):
    """The binary where uid 65534 can run it (mkdtemp dirs are 0700)."""
    nobody_bin = binary
    if binary is not None:
        p = sh(*NOBODY, "test", "-x", binary, check=False)
        if p.returncode != 0:
            os.chmod(ws.root, 0o711)
            bindir = ws.tmp("bin")
            os.makedirs(bindir)
            os.chmod(bindir, 0o755)
            nobody_bin = os.path.join(bindir, "snapdedupe")
            shutil.copy2(binary, nobody_bin)
            os.chmod(nobody_bin, 0o755)
    p = sh(*NOBODY, "id", "-u", check=False)
    r.check("fixture: setpriv can drop to uid 65534", p.returncode == 0 and p.stdout.strip() == b"65534",
            p.stderr.decode(errors="replace"))
    return nobody_bin


def bad_cases(ws, fx):
    """(label, argv, expected rc, db path watched, prefix)"""
    db, corrupt_db, snapdir, snaps = fx.db, fx.corrupt_db, fx.snapdir, fx.b.snapshots
    return [
        ("missing path", ["run", "--db", db, "--json", ws.tmp("does-not-exist")], 4, db, ()),
        ("missing path (diff)", ["diff", ws.tmp("nope1"), snaps[1], "--json"], 4, db, ()),
        ("non-btrfs path /proc", ["run", "--db", db, "--json", "/proc"], 4, db, ()),
        ("non-btrfs path (tmpfs dir)", ["run", "--db", db, "--json", os.path.join(fx.tmpfs, "dir")], 4, db, ()),
        ("writable subvolume as single PATH", ["run", "--db", db, "--json", fx.live], 4, db, ()),
        ("writable subvolume in diff", ["diff", snaps[0], fx.live, "--json"], 4, db, ()),
        ("btrfs dir without snapshots", ["run", "--db", db, "--json", fx.empty_dir], 4, db, ()),
        ("corrupt index file", ["run", "--db", corrupt_db, "--json", snapdir], 5, corrupt_db, ()),
        ("corrupt index file (dry run)", ["run", "--db", corrupt_db, "--dry-run", "--json", snapdir], 5,
         corrupt_db, ()),
        ("no args", [], 2, db, ()),
        ("unknown option", ["run", "--db", db, "--no-such-option", snapdir], 2, db, ()),
        ("unknown subcommand", ["frobnicate", snapdir], 2, db, ()),
        ("not root (setpriv uid 65534)", ["run", "--db", db, "--json", snapdir], 3, db, tuple(NOBODY)),
    ]


def run_case(r, fx, exe, case):
    label, argv, want, dbp, prefix = case
    r.section(f"case: {label} -> exit {want}")
    db_before = file_state(dbp)
    res = run_tool(exe, argv, timeout=120, prefix=prefix)
    r.check(f"{label}: exit code {want}", res.rc == want, res.describe())
    lines = res.stderr_lines()
    r.check(f"{label}: exactly one stderr line starting with 'snapdedupe: '",
            len(lines) == 1 and lines[0].startswith("snapdedupe: "), repr(res.stderr[:400]))
    r.check(f"{label}: db not created / byte-identical", file_state(dbp) == db_before,
            f"{db_before} -> {file_state(dbp)}")
    check_integrity(r, f"{label}: snapshots and live subvolume unchanged", fx.before, fx.watched)


def check_bad_inputs(r, ws, binary):
    fx = Fixture(r, ws)
    nobody_bin = binary_for_nobody(r, ws, binary)
    cases = bad_cases(ws, fx)
    if binary is None:
        print("  (selftest-fixture: not running the binary; "
              f"{len(cases)} cases prepared)", flush=True)
    else:
        for case in cases:
            run_case(r, fx, nobody_bin if case[4] else binary, case)
    r.section("final state")
    check_integrity(r, "all snapshot hashes unchanged", fx.before, fx.watched)
    r.check("snapshots still read-only", all(is_readonly(s) for s in fx.b.snapshots))
    r.check("no default-path index written by the tests' cases",
            binary is None or file_state(fx.db) is None, str(file_state(fx.db)))


if __name__ == "__main__":
    main(PROG, __doc__, [check_bad_inputs], selftest=True)
