#!/usr/bin/env python3
"""Integration test: snapper integration with the repo's files.

    python3 tests/integration/test_snapper.py --snapdedupe build/plugin/snapdedupe

* The plugin (packaging/snapper-plugin) called directly the way snapper calls it: one entry
  per snapshot for both action names, ignores what is not ours, returns fast, starts the
  service where systemd runs (a fake systemctl in a private mount namespace).
* The real snapper 0.10.4 from Debian (`--no-dbus`), on a loop-backed btrfs, with the plugin
  installed in snapper's plugin directory for the test: snapshots between churn steps queue
  entries, `run --queue` frees space, `snapper delete` makes the index forget (see
  snapper_flow.py). Integrity: every file of every snapshot hashes the same.
* The queue drain: dry runs leave it alone, bad and stale entries are dropped, the
  btrfsmaintenance lock (taken with flock(1), as btrfsmaintenance does) makes a run wait, or
  exit 7 with --no-wait.
* The config file: paths and db from it, errors exit 2.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from btrfs_fixture import (  # noqa: E402
    MiB, check_binary_arg, common_argparser, require_root, run_parts, run_test, run_tool, sh,
    subvol_create, subvol_snapshot)
from snapper_flow import (  # noqa: E402
    PluginInstall, encode_subvolume, fs_uuid, jget, lock_file, queue_entries, queue_leftovers,
    remove_lock_files, run_flow, write_random)

PROG = "test_snapper.py"
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PLUGIN = os.path.join(REPO, "packaging", "snapper-plugin")


def call_plugin(state, *args, env_extra=None, prefix=()):
    env = dict(os.environ, SNAPDEDUPE_STATE_DIR=state, **(env_extra or {}))
    t0 = time.monotonic()
    p = subprocess.run([*prefix, PLUGIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=30)
    return p.returncode, p.stderr.decode(errors="replace"), time.monotonic() - t0


def part_plugin(r, ws):
    r.section("the plugin, called as snapper calls it")
    state = ws.tmp("plugin-state")
    times = []

    def call(*args, **kw):
        rc, err, t = call_plugin(state, *args, **kw)
        times.append(t)
        return rc, err

    sub = "/srv/data"
    enc = encode_subvolume(sub)
    rc, err = call("create-snapshot", sub, "btrfs", "7")
    entries = queue_entries(state)
    r.check("create-snapshot (snapper 0.10.4): exit 0, one entry", rc == 0 and list(entries) == [f"create.{enc}.7"],
            f"rc={rc} {err} {entries}")
    e = entries.get(f"create.{enc}.7", {})
    r.check("entry holds action, subvolume, number",
            e.get("action") == "create" and e.get("subvolume") == sub and e.get("number") == "7", str(e))
    path = os.path.join(state, "queue", f"create.{enc}.7")
    ino = os.stat(path).st_ino
    rc, err = call("create-snapshot-post", sub, "btrfs", "7")
    r.check("create-snapshot-post right after (snapper >= 0.10.5): still one entry, untouched",
            rc == 0 and list(queue_entries(state)) == [f"create.{enc}.7"] and os.stat(path).st_ino == ino,
            f"rc={rc} {err} {queue_entries(state)}")
    st = os.stat(os.path.join(state, "queue"))
    r.check("queue directory is private (0700)", st.st_mode & 0o077 == 0, oct(st.st_mode))
    for args in (("create-snapshot", sub, "ext4", "8"), ("create-snapshot", sub, "lvm(xfs)", "8"),
                 ("modify-snapshot", sub, "btrfs", "7"), ("create-snapshot-pre", sub, "btrfs", "8"),
                 ("create-config", sub, "btrfs"), ("rollback", sub, "btrfs", "1", "2")):
        rc, err = call(*args)
        r.check(f"{' '.join(args[:1] + args[2:3])}: ignored, exit 0", rc == 0 and
                list(queue_entries(state)) == [f"create.{enc}.7"], f"rc={rc} {err}")
    rc, err = call("create-snapshot", sub, "btrfs", "x1")
    r.check("a bad number: exit 1, one message, nothing queued",
            rc == 1 and len(err.strip().splitlines()) == 1 and len(queue_entries(state)) == 1, f"rc={rc} {err}")
    rc, err = call("delete-snapshot", sub, "btrfs", "7")
    r.check("delete-snapshot: a forget entry replaces the pending create",
            rc == 0 and list(queue_entries(state)) == [f"forget.{enc}.7"], f"rc={rc} {err} {queue_entries(state)}")
    rc, err = call("delete-snapshot-post", sub, "btrfs", "7")
    r.check("delete-snapshot-post: still one forget entry",
            rc == 0 and list(queue_entries(state)) == [f"forget.{enc}.7"], f"rc={rc} {err}")
    rc, err = call("create-snapshot", "/", "btrfs", "3")
    r.check("subvolume / gets its own entry", f"create.%2F.3" in queue_entries(state), str(queue_entries(state)))
    r.check("no temporary files left", [n for n in queue_leftovers(state) if n.startswith(".tmp")] == [])

    # Where systemd runs, the plugin starts the drain. Faked in a private mount namespace:
    # /run/systemd/system exists there only, and `systemctl` is a script that logs its arguments.
    fake = ws.tmp("fakebin")
    os.makedirs(fake)
    log = ws.tmp("systemctl.log")
    with open(os.path.join(fake, "systemctl"), "w") as f:
        f.write(f"#!/bin/sh\necho \"$*\" >> {log}\n")
    os.chmod(os.path.join(fake, "systemctl"), 0o755)
    script = (f"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && "
              f"PATH={fake}:$PATH exec \"$@\"")
    rc, err = call("create-snapshot", sub, "btrfs", "9", prefix=("unshare", "--mount", "sh", "-c", script, "sh"))
    logged = open(log).read().strip() if os.path.exists(log) else ""
    r.check("with systemd running: `systemctl start --no-block snapdedupe.service`",
            rc == 0 and logged == "start --no-block snapdedupe.service", f"rc={rc} {err} log={logged!r}")
    rc, err = call("create-snapshot", sub, "btrfs", "10", env_extra={"PATH": f"{fake}:{os.environ['PATH']}"})
    r.check("without systemd (no /run/systemd/system): systemctl not called",
            rc == 0 and open(log).read().strip() == logged, open(log).read())
    r.check(f"every call returned within a second (max {max(times):.3f}s)", max(times) < 1.0)
    print(f"  plugin call times: max {max(times) * 1000:.1f} ms, mean {sum(times) / len(times) * 1000:.1f} ms")


USED_FS = []  # uuids of this test's filesystems: their lock files go at the end


def part_snapper(r, ws, binary):
    state = ws.tmp("snapper-state")
    os.environ["SNAPDEDUPE_STATE_DIR"] = state  # snapper passes its environment to plugins
    conf = ws.tmp("empty.conf")
    open(conf, "w").close()
    db = ws.tmp("snapper-index.sqlite")
    figures = {}
    try:
        with PluginInstall(PLUGIN, f"50-snapdedupe-test.{os.getpid()}") as plugin:
            run_flow(r, ws, binary, state, lambda fs: db, extra_args=("--db", db, "--config", conf), figures=figures)
    finally:
        USED_FS.append(figures.get("uuid"))
    r.check("test plugin removed from snapper's plugin directory", not os.path.exists(plugin.path))
    print(f"  figures: freed {figures['freed_first_run'] / MiB:.2f} MiB in {figures['first_run_seconds']:.2f}s; "
          f"forgetting s1 moved {figures['blocks_moved_from_s1']} of {figures['blocks_in_s1']} blocks in "
          f"{figures['forget_seconds']:.2f}s; after it, {figures['freed_after_forget'] / MiB:.2f} MiB freed",
          flush=True)


def part_queue_and_lock(r, ws, binary):
    r.section("queue drain: dry run, stale entries, the btrfsmaintenance lock")
    state = ws.tmp("lock-state")
    os.environ["SNAPDEDUPE_STATE_DIR"] = state
    fs = ws.make_btrfs("lock", size=512 * MiB)
    sub = fs.path("sub")
    subvol_create(sub)
    os.makedirs(os.path.join(sub, ".snapshots", "1"))
    write_random(os.path.join(sub, "x.bin"), 2 * MiB, random.Random(1))
    sh("sync")
    subvol_snapshot(sub, os.path.join(sub, ".snapshots", "1", "snapshot"))  # snapper's layout
    db = ws.tmp("lock-index.sqlite")
    conf = ws.tmp("empty2.conf")
    open(conf, "w").close()
    args = ["run", "--queue", "--json", "--db", db, "--config", conf]
    call_plugin(state, "create-snapshot", sub, "btrfs", "1")
    call_plugin(state, "create-snapshot", sub, "btrfs", "2")          # never made: gone
    call_plugin(state, "create-snapshot", "/", "btrfs", "987654")     # /.snapshots/987654/snapshot
    with open(os.path.join(state, "queue", "garbage"), "w") as f:
        f.write("this is not an entry\n")
    queued = sorted(queue_entries(state))

    res = run_tool(binary, args + ["--dry-run"])
    r.check("--queue --dry-run: exit 0, processes the queued snapshot", res.rc == 0 and
            jget(res, "dry_run") is True and jget(res, "snapshots_processed") == 1, res.describe())
    r.check("--dry-run leaves the queue exactly as it was", sorted(queue_entries(state)) == queued and
            queue_leftovers(state) == queued, str(queue_leftovers(state)))
    r.check("--dry-run wrote no index", not os.path.exists(db))

    # btrfsmaintenance-functions: btrfs filesystem show "$1" | sed -n -e '/uuid:/ {s/^.*uuid: //;p }'
    uuid = fs_uuid(fs.mnt)
    USED_FS.append(uuid)
    lock = lock_file(uuid)
    # What btrfsmaintenance runs; its own session, so flock and its sleep die together.
    holder = subprocess.Popen(["flock", lock, "sleep", "600"], start_new_session=True)
    try:
        for _ in range(50):
            if os.path.exists(lock):
                break
            time.sleep(0.1)
        time.sleep(0.3)
        res = run_tool(binary, args + ["--no-wait"])
        lines = res.stderr_lines()
        r.check("lock held by flock(1): --no-wait exits 7", res.rc == 7, res.describe())
        r.check("... with one clear stderr line naming the lock file",
                len(lines) >= 1 and lines[-1].startswith("snapdedupe: ") and lock in lines[-1] and
                "busy" in lines[-1], res.describe())
        r.check("dropped entries are named on stderr: garbage, the gone snapshot, /.snapshots/987654",
                "garbage" in res.stderr and os.path.join(sub, ".snapshots", "2", "snapshot") in res.stderr and
                "/.snapshots/987654/snapshot" in res.stderr, res.describe())
        r.check("... and the queued work is kept for the next run",
                any(n.endswith(f"create.{encode_subvolume(sub)}.1") for n in queue_leftovers(state)),
                str(queue_leftovers(state)))
        t0 = time.monotonic()
        waiter = subprocess.Popen([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2)
        r.check("without --no-wait the run waits while the lock is held", waiter.poll() is None)
    finally:
        os.killpg(holder.pid, 15)
        holder.wait()
    out, err = waiter.communicate(timeout=300)
    elapsed = time.monotonic() - t0
    err = err.decode(errors="replace")
    r.check("... and finishes once it is released (exit 0)", waiter.returncode == 0, f"rc={waiter.returncode} {err}")
    r.check("... having said what it waited for", "waiting for " + lock in err, err)
    r.check("... after the holder let go", elapsed >= 2, f"{elapsed:.2f}s")
    try:
        j = json.loads(out)
    except ValueError:
        j = {}
    r.check("the waiting run processed the queued snapshot", j.get("snapshots_processed") == 1, str(j)[:300])
    r.check("queue empty afterwards", queue_leftovers(state) == [], str(queue_leftovers(state)))
    res = run_tool(binary, args)
    r.check("empty queue: exit 0, nothing processed", res.rc == 0 and jget(res, "snapshots_processed") == 0,
            res.describe())

    r.section("config file")
    cdb = ws.tmp("from-config.sqlite")
    cfg = ws.tmp("snapdedupe.conf")
    with open(cfg, "w") as f:
        f.write(f"# a comment\npath = {os.path.join(sub, '.snapshots')}\ndb = {cdb}\nreadonly-only = true\n")
    res = run_tool(binary, ["run", "--json", "--config", cfg])
    r.check("run with no PATH takes path and db from the config", res.rc == 0 and
            jget(res, "snapshots_processed") == 1 and os.path.exists(cdb), res.describe())
    other = ws.tmp("from-cli.sqlite")
    res = run_tool(binary, ["run", "--json", "--config", cfg, "--db", other])
    r.check("--db on the command line overrides the config's db", res.rc == 0 and os.path.exists(other) and
            jget(res, "snapshots_processed") == 1, res.describe())
    for label, text in (("dry-run in the config", "dry-run = true\n"),
                        ("a bad boolean", "readonly-only = sometimes\n"),
                        ("an unknown key", "colour = blue\n")):
        bad = ws.tmp("bad.conf")
        with open(bad, "w") as f:
            f.write(text)
        res = run_tool(binary, ["run", "--config", bad, sub])
        r.check(f"config with {label}: exit 2, one line naming the file",
                res.rc == 2 and len(res.stderr_lines()) == 1 and bad in res.stderr, res.describe())
    res = run_tool(binary, ["run", "--config", ws.tmp("no-such.conf"), sub])
    r.check("--config naming a missing file: exit 2", res.rc == 2 and len(res.stderr_lines()) == 1, res.describe())
    res = run_tool(binary, ["run", "--config", conf])
    r.check("no PATH, no path in the config, no --queue: exit 2", res.rc == 2, res.describe())


def main():
    args = common_argparser(__doc__).parse_args()
    require_root(PROG)
    binary = check_binary_arg(args, PROG)
    return run_test(PROG, "snapdedupe-snapper", lambda r, ws: run_parts(r, [
        ("part_plugin", lambda: part_plugin(r, ws)),
        ("part_snapper", lambda: part_snapper(r, ws, binary)),
        ("part_queue_and_lock", lambda: part_queue_and_lock(r, ws, binary))]),
        after=lambda: remove_lock_files(u for u in USED_FS if u))


if __name__ == "__main__":
    sys.exit(main())
