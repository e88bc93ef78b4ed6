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

import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (MiB, REPO, ToolResult, fs_uuid, lock_file, main, remove_lock_files, run_tool, sh,  # noqa: E402
                      subvol_create, subvol_snapshot, write_random)
from snapper_flow import PluginInstall, encode_subvolume, queue_entries, queue_leftovers, run_flow  # noqa: E402

PROG = "test_snapper.py"
PLUGIN = os.path.join(REPO, "packaging", "snapper-plugin")


def call_plugin(state, *args, env_extra=None, prefix=()):
    env = dict(os.environ, SNAPDEDUPE_STATE_DIR=state, **(env_extra or {}))
    t0 = time.monotonic()
    p = subprocess.run([*prefix, PLUGIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=30)
    return p.returncode, p.stderr.decode(errors="replace"), time.monotonic() - t0


class PluginCalls:
    """Calls the plugin with one state directory, timing every call."""

    def __init__(self, state):
        self.state = state
        self.times = []

    def __call__(self, *args, **kw):
        rc, err, t = call_plugin(self.state, *args, **kw)
        self.times.append(t)
        return rc, err

    def entries(self):
        return queue_entries(self.state)


def plugin_queues(r, call, sub):
    """One entry per snapshot for both action names, what is not ours ignored."""
    enc, state = encode_subvolume(sub), call.state
    rc, err = call("create-snapshot", sub, "btrfs", "7")
    entries = call.entries()
    r.check("create-snapshot (snapper 0.10.4): exit 0, one entry", rc == 0 and list(entries) == [f"create.{enc}.7"],
            f"rc={rc} {err} {entries}")
    e = entries.get(f"create.{enc}.7", {})
    r.check("entry holds action, subvolume, number",
            e.get("action") == "create" and e.get("subvolume") == sub and e.get("number") == "7", str(e))
    path = os.path.join(state, "queue", f"create.{enc}.7")
    ino = os.stat(path).st_ino
    rc, err = call("create-snapshot-post", sub, "btrfs", "7")
    r.check("create-snapshot-post right after (snapper >= 0.10.5): still one entry, untouched",
            rc == 0 and list(call.entries()) == [f"create.{enc}.7"] and os.stat(path).st_ino == ino,
            f"rc={rc} {err} {call.entries()}")
    st = os.stat(os.path.join(state, "queue"))
    r.check("queue directory is private (0700)", st.st_mode & 0o077 == 0, oct(st.st_mode))
    for args in (("create-snapshot", sub, "ext4", "8"), ("create-snapshot", sub, "lvm(xfs)", "8"),
                 ("modify-snapshot", sub, "btrfs", "7"), ("create-snapshot-pre", sub, "btrfs", "8"),
                 ("create-config", sub, "btrfs"), ("rollback", sub, "btrfs", "1", "2")):
        rc, err = call(*args)
        r.check(f"{' '.join(args[:1] + args[2:3])}: ignored, exit 0", rc == 0 and
                list(call.entries()) == [f"create.{enc}.7"], f"rc={rc} {err}")
    rc, err = call("create-snapshot", sub, "btrfs", "x1")
    r.check("a bad number: exit 1, one message, nothing queued",
            rc == 1 and len(err.strip().splitlines()) == 1 and len(call.entries()) == 1, f"rc={rc} {err}")
    rc, err = call("delete-snapshot", sub, "btrfs", "7")
    r.check("delete-snapshot: a forget entry replaces the pending create",
            rc == 0 and list(call.entries()) == [f"forget.{enc}.7"], f"rc={rc} {err} {call.entries()}")
    rc, err = call("delete-snapshot-post", sub, "btrfs", "7")
    r.check("delete-snapshot-post: still one forget entry",
            rc == 0 and list(call.entries()) == [f"forget.{enc}.7"], f"rc={rc} {err}")
    rc, err = call("create-snapshot", "/", "btrfs", "3")
    r.check("subvolume / gets its own entry", "create.%2F.3" in call.entries(), str(call.entries()))
    r.check("no temporary files left", [n for n in queue_leftovers(state) if n.startswith(".tmp")] == [])


def plugin_starts_service(r, ws, call, sub):
    """Where systemd runs, the plugin starts the drain. Faked in a private mount namespace:
    /run/systemd/system exists there only, and `systemctl` is a script that logs its arguments."""
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


def part_plugin(r, ws, binary):
    r.section("the plugin, called as snapper calls it")
    call = PluginCalls(ws.tmp("plugin-state"))
    plugin_queues(r, call, "/srv/data")
    plugin_starts_service(r, ws, call, "/srv/data")
    times = call.times
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


class QueueSetup:
    """A filesystem in snapper's layout with one snapshot, and a queue naming it, a snapshot
    never made, a snapshot of / that does not exist, and garbage."""

    def __init__(self, ws):
        self.state = ws.tmp("lock-state")
        os.environ["SNAPDEDUPE_STATE_DIR"] = self.state
        self.fs = ws.make_btrfs("lock", size=512 * MiB)
        self.sub = sub = self.fs.path("sub")
        subvol_create(sub)
        os.makedirs(os.path.join(sub, ".snapshots", "1"))
        write_random(os.path.join(sub, "x.bin"), 2 * MiB, random.Random(1).randbytes)
        sh("sync")
        subvol_snapshot(sub, os.path.join(sub, ".snapshots", "1", "snapshot"))  # snapper's layout
        self.db = ws.tmp("lock-index.sqlite")
        self.conf = ws.tmp("empty2.conf")
        open(self.conf, "w").close()
        self.args = ["run", "--queue", "--json", "--db", self.db, "--config", self.conf]
        call_plugin(self.state, "create-snapshot", sub, "btrfs", "1")
        call_plugin(self.state, "create-snapshot", sub, "btrfs", "2")          # never made: gone
        call_plugin(self.state, "create-snapshot", "/", "btrfs", "987654")     # /.snapshots/987654/snapshot
        with open(os.path.join(self.state, "queue", "garbage"), "w") as f:
            f.write("this is not an entry\n")


def queue_dry_run(r, binary, q):
    queued = sorted(queue_entries(q.state))
    res = run_tool(binary, q.args + ["--dry-run"])
    r.check("--queue --dry-run: exit 0, processes the queued snapshot", res.rc == 0 and
            res.get("dry_run") is True and res.get("snapshots_processed") == 1, res.describe())
    r.check("--dry-run leaves the queue exactly as it was", sorted(queue_entries(q.state)) == queued and
            queue_leftovers(q.state) == queued, str(queue_leftovers(q.state)))
    r.check("--dry-run wrote no index", not os.path.exists(q.db))


def lock_no_wait(r, binary, q, lock):
    """While flock(1) holds the lock: --no-wait exits 7 and keeps the queued work."""
    res = run_tool(binary, q.args + ["--no-wait"])
    lines = res.stderr_lines()
    r.check("lock held by flock(1): --no-wait exits 7", res.rc == 7, res.describe())
    r.check("... with one clear stderr line naming the lock file",
            len(lines) >= 1 and lines[-1].startswith("snapdedupe: ") and lock in lines[-1] and
            "busy" in lines[-1], res.describe())
    r.check("dropped entries are named on stderr: garbage, the gone snapshot, /.snapshots/987654",
            "garbage" in res.stderr and os.path.join(q.sub, ".snapshots", "2", "snapshot") in res.stderr and
            "/.snapshots/987654/snapshot" in res.stderr, res.describe())
    r.check("... and the queued work is kept for the next run",
            any(n.endswith(f"create.{encode_subvolume(q.sub)}.1") for n in queue_leftovers(q.state)),
            str(queue_leftovers(q.state)))


def lock_wait(r, binary, q):
    """btrfsmaintenance's lock held by flock(1): the run exits 7 with --no-wait, else waits."""
    # btrfsmaintenance-functions: btrfs filesystem show "$1" | sed -n -e '/uuid:/ {s/^.*uuid: //;p }'
    uuid = fs_uuid(q.fs.mnt)
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
        lock_no_wait(r, binary, q, lock)
        t0 = time.monotonic()
        waiter = subprocess.Popen([binary] + q.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2)
        r.check("without --no-wait the run waits while the lock is held", waiter.poll() is None)
    finally:
        os.killpg(holder.pid, 15)
        holder.wait()
    out, err = waiter.communicate(timeout=300)
    res = ToolResult(waiter.args, waiter.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                     time.monotonic() - t0)
    r.check("... and finishes once it is released (exit 0)", res.rc == 0, f"rc={res.rc} {res.stderr}")
    r.check("... having said what it waited for", "waiting for " + lock in res.stderr, res.stderr)
    r.check("... after the holder let go", res.elapsed >= 2, f"{res.elapsed:.2f}s")
    r.check("the waiting run processed the queued snapshot", res.get("snapshots_processed") == 1,
            str(res.json)[:300])
    r.check("queue empty afterwards", queue_leftovers(q.state) == [], str(queue_leftovers(q.state)))
    res = run_tool(binary, q.args)
    r.check("empty queue: exit 0, nothing processed", res.rc == 0 and res.get("snapshots_processed") == 0,
            res.describe())


def config_file(r, ws, binary, q):
    r.section("config file")
    cdb = ws.tmp("from-config.sqlite")
    cfg = ws.tmp("snapdedupe.conf")
    with open(cfg, "w") as f:
        f.write(f"# a comment\npath = {os.path.join(q.sub, '.snapshots')}\ndb = {cdb}\nreadonly-only = true\n")
    res = run_tool(binary, ["run", "--json", "--config", cfg])
    r.check("run with no PATH takes path and db from the config", res.rc == 0 and
            res.get("snapshots_processed") == 1 and os.path.exists(cdb), res.describe())
    other = ws.tmp("from-cli.sqlite")
    res = run_tool(binary, ["run", "--json", "--config", cfg, "--db", other])
    r.check("--db on the command line overrides the config's db", res.rc == 0 and os.path.exists(other) and
            res.get("snapshots_processed") == 1, res.describe())
    for label, text in (("dry-run in the config", "dry-run = true\n"),
                        ("a bad boolean", "readonly-only = sometimes\n"),
                        ("an unknown key", "colour = blue\n")):
        bad = ws.tmp("bad.conf")
        with open(bad, "w") as f:
            f.write(text)
        res = run_tool(binary, ["run", "--config", bad, q.sub])
        r.check(f"config with {label}: exit 2, one line naming the file",
                res.rc == 2 and len(res.stderr_lines()) == 1 and bad in res.stderr, res.describe())
    res = run_tool(binary, ["run", "--config", ws.tmp("no-such.conf"), q.sub])
    r.check("--config naming a missing file: exit 2", res.rc == 2 and len(res.stderr_lines()) == 1, res.describe())
    res = run_tool(binary, ["run", "--config", q.conf])
    r.check("no PATH, no path in the config, no --queue: exit 2", res.rc == 2, res.describe())


def part_queue_and_lock(r, ws, binary):
    r.section("queue drain: dry run, stale entries, the btrfsmaintenance lock")
    q = QueueSetup(ws)
    queue_dry_run(r, binary, q)
    lock_wait(r, binary, q)
    config_file(r, ws, binary, q)


if __name__ == "__main__":
    main(PROG, __doc__, [part_plugin, part_snapper, part_queue_and_lock],
         after=lambda: remove_lock_files(USED_FS))
