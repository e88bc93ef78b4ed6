#!/usr/bin/env python3
"""Integration test: lineages take turns, and the next snapshot's send runs ahead (issue 10).

    python3 tests/integration/test_lineages_in_turn.py --snapdedupe build/plugin/snapdedupe

Two loop-backed btrfs built alike (same files, same seed), each with two live subvolumes a and
b and three read-only snapshots of each in one directory, snaps/a.N and snaps/b.N (two
lineages). Every day adds copies to free: within a lineage (an identical rewrite, a copy) and
across (b holds copies of a's files).

* Before any run, `snapdedupe diff --json` of each later snapshot against its predecessor.
* "in turn": one `run --json` on snaps/. It exits 0 and its report lists the snapshots in turn,
  a.1 b.1 a.2 b.2 a.3 b.3 (or b.1 a.1 ...: lineages come in the order of their origins'
  uuids), each with its lineage's predecessor as parent (the first of each with
  none), and each later snapshot's bytes_changed is diff's changed_bytes: a change set sent ahead
  on the other thread is the one for that snapshot and that parent. busy_deferred and
  dedupe_errors are 0.
* "lineage by lineage": on the second filesystem, one run on a's snapshots, then one on b's.
* The two filesystems end with the same data used (within 1 MiB), and it dropped by at least
  95% of the copies' bytes; every file of every snapshot hashes the same as before, on both.
* "one task": on a third such filesystem, the run inside a pids cgroup (v1 or v2) with
  pids.max 1, where no thread can be started (checked first with Python's threading): it
  exits 0, reports the snapshots in turn, and frees >= 95% of the copies, every file the same.
  Every helper thread's work is done in line, the send too (into a file in memory).

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import contextlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, MiB, check_integrity, df, main, manifest_all, run_tool, sh,  # noqa: E402
                      subvol_create, subvol_snapshot, validate_run_json, write_random)

PROG = "test_lineages_in_turn.py"
DAYS = 3
ORDER = [f"{name}.{day}" for day in range(1, DAYS + 1) for name in ("a", "b")]


def build(fs):
    """The series (see the module's text); returns the copies' bytes and every snapshot's path."""
    rng = random.Random(1010)
    a, b = fs.path("a"), fs.path("b")
    subvol_create(a)
    subvol_create(b)
    os.makedirs(fs.path("snaps"))
    copies = 0

    def copy(src, dst):
        nonlocal copies
        sh("cp", "--reflink=never", src, dst)
        copies += os.path.getsize(src)

    def rewrite(path):
        nonlocal copies
        data = open(path, "rb").read()
        os.unlink(path)
        with open(path, "wb") as f:
            f.write(data)
        copies += len(data)

    def day(n):
        if n == 1:
            write_random(os.path.join(a, "a1.bin"), 4 * MiB, rng.randbytes)
            write_random(os.path.join(a, "a2.bin"), 2 * MiB + 123, rng.randbytes)
            write_random(os.path.join(b, "b1.bin"), 3 * MiB, rng.randbytes)
            copy(os.path.join(a, "a1.bin"), os.path.join(b, "a1-copy.bin"))
        elif n == 2:
            rewrite(os.path.join(a, "a1.bin"))
            copy(os.path.join(a, "a2.bin"), os.path.join(a, "a2-copy.bin"))
            write_random(os.path.join(b, "b2.bin"), MiB, rng.randbytes)
            copy(os.path.join(b, "b1.bin"), os.path.join(b, "b1-copy.bin"))
        else:
            write_random(os.path.join(a, "a3.bin"), MiB + 5, rng.randbytes)
            copy(os.path.join(a, "a2.bin"), os.path.join(b, "a2-copy.bin"))
        sh("sync")
        for name, live in (("a", a), ("b", b)):
            subvol_snapshot(live, fs.path("snaps", f"{name}.{n}"))

    for n in range(1, DAYS + 1):
        day(n)
    return copies, [fs.path("snaps", s) for s in ORDER]


def predecessor(name):
    lineage, day = name.split(".")
    return f"{lineage}.{int(day) - 1}" if int(day) > 1 else None


def part_in_turn(r, ws, binary):
    r.section("two lineages, taken in turn, against lineage by lineage")
    turn_fs, alone_fs = ws.make_btrfs("turn", size=GiB), ws.make_btrfs("alone", size=GiB)
    copies, snaps = build(turn_fs)
    copies_alone, snaps_alone = build(alone_fs)
    r.check("fixture: both filesystems hold the same copies", copies == copies_alone, f"{copies} {copies_alone}")
    before, before_alone = manifest_all(snaps), manifest_all(snaps_alone)
    u0, u0_alone = df(turn_fs.mnt)["data_used"], df(alone_fs.mnt)["data_used"]

    changed = {}
    for name in ORDER:
        if predecessor(name):
            res = run_tool(binary, ["diff", "--json", turn_fs.path("snaps", predecessor(name)),
                                    turn_fs.path("snaps", name)])
            changed[name] = json.loads(res.stdout)["changed_bytes"] if res.rc == 0 else None
    r.check("diff of every later snapshot against its predecessor: exit 0, changed bytes > 0",
            all(v for v in changed.values()), str(changed))

    res = run_tool(binary, ["run", "--json", "--db", ws.tmp("turn.sqlite"), turn_fs.path("snaps")])
    r.check("in turn: exit 0, a valid report", res.rc == 0 and res.json is not None
            and not validate_run_json(res.json), res.describe())
    reported = (res.json or {}).get("snapshots", [])
    names = [os.path.basename(s.get("path", "")) for s in reported]
    turns = [ORDER, [f"{name}.{day}" for day in range(1, DAYS + 1) for name in ("b", "a")]]
    r.check(f"in turn: the report lists the snapshots in turn ({' '.join(ORDER)}, or b first: lineages are "
            "in the order of their origins' uuids)", names in turns, str(names))
    parents = {os.path.basename(s.get("path", "")): s.get("parent") for s in reported}
    wrong = {n: p for n, p in parents.items()
             if (os.path.basename(p) if p else None) != predecessor(n)}
    r.check("in turn: each snapshot's parent is its lineage's predecessor (none for the first)", not wrong,
            str(wrong))
    sizes = {os.path.basename(s.get("path", "")): s.get("bytes_changed") for s in reported}
    differ = {n: (sizes.get(n), c) for n, c in changed.items() if sizes.get(n) != c}
    r.check("in turn: each later snapshot's bytes_changed is diff's changed_bytes (the change set sent "
            "ahead is that snapshot's, against that parent)", not differ, str(differ))
    r.check("in turn: busy_deferred == 0 and dedupe_errors == 0",
            res.num("busy_deferred") == 0 and res.num("dedupe_errors") == 0,
            f"{res.num('busy_deferred')} {res.num('dedupe_errors')}")

    db_alone = ws.tmp("alone.sqlite")
    for lineage in ("a", "b"):
        paths = [p for p in snaps_alone if os.path.basename(p).startswith(lineage + ".")]
        res_alone = run_tool(binary, ["run", "--json", "--db", db_alone] + paths)
        r.check(f"lineage by lineage: the run on {lineage}'s snapshots exits 0", res_alone.rc == 0,
                res_alone.describe())

    freed, freed_alone = u0 - df(turn_fs.mnt)["data_used"], u0_alone - df(alone_fs.mnt)["data_used"]
    print(f"  copies {copies}, freed in turn {freed}, lineage by lineage {freed_alone}", flush=True)
    r.check(f"in turn: data used dropped by >= 95% of the copies' bytes ({copies})", freed >= 0.95 * copies,
            str(freed))
    r.check("in turn and lineage by lineage free the same data (within 1 MiB)", abs(freed - freed_alone) <= MiB,
            f"{freed} {freed_alone}")
    check_integrity(r, "in turn: every file of every snapshot hashes the same ({files} files)", before, snaps)
    check_integrity(r, "lineage by lineage: every file of every snapshot hashes the same ({files} files)",
                    before_alone, snaps_alone)
    ws.release(turn_fs, remove_image=True)
    ws.release(alone_fs, remove_image=True)


@contextlib.contextmanager
def pids_cgroup(name, limit):
    """A pids cgroup with pids.max `limit` (cgroup v1's pids hierarchy, else v2's); yields the file
    a process writes its pid to, to join it. Removed afterwards."""
    mounts = [line.split() for line in open("/proc/mounts")]
    v1 = [m[1] for m in mounts if m[2] == "cgroup" and "pids" in m[3].split(",")]
    v2 = [m[1] for m in mounts if m[2] == "cgroup2"
          and "pids" in open(os.path.join(m[1], "cgroup.controllers")).read().split()]
    if v1:
        path, join = os.path.join(v1[0], name), "tasks"
    elif v2:
        with open(os.path.join(v2[0], "cgroup.subtree_control"), "w") as f:
            f.write("+pids")
        path, join = os.path.join(v2[0], name), "cgroup.procs"
    else:
        raise RuntimeError("no pids cgroup controller mounted (v1 or v2): cannot limit the run's tasks")
    os.mkdir(path)
    try:
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(limit))
        yield os.path.join(path, join)
    finally:
        os.rmdir(path)


def part_one_task(r, ws, binary):
    r.section("a run that cannot start a thread (pids.max 1) does every helper's work in line")
    fs = ws.make_btrfs("onetask", size=GiB)
    copies, snaps = build(fs)
    before = manifest_all(snaps)
    u0 = df(fs.mnt)["data_used"]
    with pids_cgroup(f"snapdedupe-test-{os.getpid()}", 1) as join:
        # The process joins the cgroup, then becomes the program: one task, no room for another.
        # In the sanitizer build, LeakSanitizer's check at exit needs a task of its own (it stops
        # the world from a clone), so it is off for this run only; every other run checks leaks.
        no_leak_check = 'export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"'
        prefix = ["sh", "-c", f'echo $$ > {join} && {no_leak_check} && exec "$0" "$@"']
        probe = run_tool("python3", ["-c", "import threading; threading.Thread(target=print).start()"],
                         prefix=prefix)
        r.check("fixture: inside the cgroup no thread can be started", probe.rc != 0
                and "can't start new thread" in probe.stderr, probe.describe())
        res = run_tool(binary, ["run", "--json", "--db", ws.tmp("onetask.sqlite"), fs.path("snaps")], prefix=prefix)
    r.check("one task: exit 0, a valid report", res.rc == 0 and res.json is not None
            and not validate_run_json(res.json), res.describe())
    names = [os.path.basename(s.get("path", "")) for s in (res.json or {}).get("snapshots", [])]
    turns = [ORDER, [f"{name}.{day}" for day in range(1, DAYS + 1) for name in ("b", "a")]]
    r.check("one task: the report lists the snapshots in turn", names in turns, str(names))
    freed = u0 - df(fs.mnt)["data_used"]
    r.check(f"one task: data used dropped by >= 95% of the copies' bytes ({copies})", freed >= 0.95 * copies,
            str(freed))
    check_integrity(r, "one task: every file of every snapshot hashes the same ({files} files)", before, snaps)
    ws.release(fs, remove_image=True)


if __name__ == "__main__":
    main(PROG, __doc__, [part_in_turn, part_one_task])
