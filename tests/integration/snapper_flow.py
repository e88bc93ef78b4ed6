#!/usr/bin/env python3
"""The snapper flow shared by test_snapper.py (repo files) and test_package.py (installed
files): a real `snapper --no-dbus` config on a loop-backed btrfs, snapshots between churn
steps with known duplicates, the plugin queues, `snapdedupe run --queue` frees space,
`snapper delete` makes the index forget (stdlib only).

What snapper 0.10.4 (Debian 12) does with plugins, checked by these tests: it runs every file
in /usr/lib/snapper/plugins whose name starts with a digit (the directory is compiled in;
there is no option to point it elsewhere), synchronously, as
`create-snapshot SUBVOLUME FSTYPE NUMBER` and `delete-snapshot SUBVOLUME FSTYPE NUMBER`
(also create-config/delete-config); it does not send the -pre/-post names of 0.10.5+.
"""

import os
import shutil
import sqlite3

from btrfs_fixture import (
    MiB, compare_manifests, df, file_count, is_readonly, manifest_all, run_tool, sh, sh_out,
    subvol_create, subvol_ids)

PLUGINS_DIR = "/usr/lib/snapper/plugins"
SNAPPER_DEFAULTS = "/etc/default/snapper"
SNAPPER_CONFIGS = "/etc/snapper/configs"

# What the flow's churn makes: duplicates whose extra copy no writable subvolume holds when
# the run comes (they free space under any rule), and one whose copy the live subvolume
# still holds (freed only when live references are moved too, the default).
GUARANTEED_DUP = 8 * MiB + 4 * MiB
LIVE_HELD_DUP = 6 * MiB


class PluginInstall:
    """Installs a plugin file into snapper's compiled-in plugin directory for the test, and
    removes it (and the directory, if we made it) afterwards."""

    def __init__(self, source, name):
        self.source = source
        self.path = os.path.join(PLUGINS_DIR, name)
        self.made_dir = False

    def __enter__(self):
        if not os.path.isdir(PLUGINS_DIR):
            os.makedirs(PLUGINS_DIR)
            self.made_dir = True
        shutil.copyfile(self.source, self.path)
        os.chmod(self.path, 0o755)
        return self

    def __exit__(self, *exc):
        if os.path.exists(self.path):
            os.unlink(self.path)
        if self.made_dir:
            try:
                os.rmdir(PLUGINS_DIR)
            except OSError:
                pass
        return False


class SnapperConfig:
    """`snapper --no-dbus -c NAME create-config SUBVOLUME`; on exit delete-config, and in any
    case the config file gone and /etc/default/snapper as it was."""

    def __init__(self, name, subvolume):
        self.name = name
        self.subvolume = subvolume
        self.saved_defaults = None

    def snapper(self, *args, check=True):
        return sh("snapper", "--no-dbus", "-c", self.name, *args, check=check)

    def __enter__(self):
        if os.path.exists(SNAPPER_DEFAULTS):
            with open(SNAPPER_DEFAULTS, "rb") as f:
                self.saved_defaults = f.read()
        if os.path.exists(os.path.join(SNAPPER_CONFIGS, self.name)):
            raise RuntimeError(f"snapper config {self.name} exists already")
        self.snapper("create-config", self.subvolume)
        return self

    def create(self, description):
        out = self.snapper("create", "--print-number", "-d", description).stdout.decode()
        return int(out.strip().splitlines()[-1])

    def delete(self, number):
        self.snapper("delete", str(number))

    def snapshot_path(self, number):
        return os.path.join(self.subvolume, ".snapshots", str(number), "snapshot")

    def __exit__(self, *exc):
        self.snapper("delete-config", check=False)
        conf = os.path.join(SNAPPER_CONFIGS, self.name)
        if os.path.exists(conf):
            os.unlink(conf)
        if self.saved_defaults is not None:
            with open(SNAPPER_DEFAULTS, "wb") as f:
                f.write(self.saved_defaults)
        return False


def fs_uuid(mnt):
    """The filesystem uuid as btrfsmaintenance reads it (`btrfs filesystem show`, "uuid:")."""
    for line in sh_out("btrfs", "filesystem", "show", mnt).splitlines():
        if "uuid:" in line:
            return line.split("uuid:", 1)[1].strip()
    raise RuntimeError(f"no uuid in `btrfs filesystem show {mnt}`")


def lock_file(uuid):
    return f"/run/btrfs-maintenance-running.{uuid}"


def remove_lock_files(uuids):
    """Runs leave btrfsmaintenance's lock file behind, as flock(1) does (removing a lock file
    others may wait on would break the lock). A test filesystem's is removed once it is gone."""
    for u in uuids:
        if os.path.exists(lock_file(u)):
            os.unlink(lock_file(u))


def encode_subvolume(subvolume):
    return subvolume.replace("%", "%25").replace("/", "%2F")


def queue_entries(state_dir):
    """name -> dict of the entry's key=value lines (the queue's visible entries only)."""
    q = os.path.join(state_dir, "queue")
    res = {}
    if not os.path.isdir(q):
        return res
    for name in sorted(os.listdir(q)):
        if name.startswith("."):
            continue
        with open(os.path.join(q, name)) as f:
            res[name] = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    return res


def queue_leftovers(state_dir):
    """Every file in the queue directory but the lock: claimed, temporary or visible."""
    q = os.path.join(state_dir, "queue")
    return sorted(n for n in os.listdir(q) if n != ".lock") if os.path.isdir(q) else []


def write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def identical_rewrite(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path + ".tmp~", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp~", path)


def index_rows(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        snaps = {row[0]: row[1] for row in con.execute("SELECT uuid, root_id FROM snapshots")}
        blocks = {row[0]: row[1] for row in con.execute("SELECT id, root_id FROM blocks")}
    finally:
        con.close()
    return snaps, blocks


def jget(res, key, default=None):
    return res.json.get(key, default) if isinstance(res.json, dict) else default


def run_flow(r, ws, binary, state_dir, db_for_fs, extra_args=(), figures=None):
    """The flow. `db_for_fs(fs)` names the index the run uses (to inspect it); `extra_args`
    go to every `run --queue` (e.g. --db, --config). Fills and returns `figures` (measured
    figures, and the filesystem's uuid as soon as it exists)."""
    import random
    rng = random.Random(5005)
    figures = {} if figures is None else figures
    fs = ws.make_btrfs("snapper", size=1024 * MiB)
    figures["uuid"] = fs_uuid(fs.mnt)
    live = fs.path("sub")
    subvol_create(live)
    name = f"sdtest{os.getpid()}"
    enc = encode_subvolume(live)

    def run_queue(label):
        res = run_tool(binary, ["run", "--queue", "--json", *extra_args])
        r.check(f"{label}: exit 0", res.rc == 0, res.describe())
        r.check(f"{label}: dedupe_errors == 0", jget(res, "dedupe_errors") == 0, res.describe())
        r.check(f"{label}: queue drained (nothing left but the lock)", queue_leftovers(state_dir) == [],
                str(queue_leftovers(state_dir)))
        print(f"  {label}: {res.elapsed:.2f}s processed={jget(res, 'snapshots_processed')} "
              f"deduped={jget(res, 'deduped_bytes')}", flush=True)
        return res

    with SnapperConfig(name, live) as cfg:
        r.section("snapper snapshots between churn steps; the plugin queues each")
        write_random(os.path.join(live, "A.bin"), 8 * MiB, rng)
        write_random(os.path.join(live, "B.bin"), 6 * MiB, rng)
        write_random(os.path.join(live, "C.bin"), 4 * MiB, rng)
        sh("sync")
        n1 = cfg.create("s1")
        entry = queue_entries(state_dir).get(f"create.{enc}.{n1}")
        r.check("snapper create queued one create entry naming subvolume and number",
                entry is not None and entry.get("action") == "create" and entry.get("subvolume") == live
                and entry.get("number") == str(n1), str(queue_entries(state_dir)))
        sh("cp", "--reflink=never", os.path.join(live, "A.bin"), os.path.join(live, "copyA.bin"))
        identical_rewrite(os.path.join(live, "B.bin"))
        write_random(os.path.join(live, "D.bin"), 3 * MiB, rng)
        sh("sync")
        n2 = cfg.create("s2: copy of A, B rewritten, new D")
        os.unlink(os.path.join(live, "copyA.bin"))
        sh("cp", "--reflink=never", os.path.join(live, "C.bin"), os.path.join(live, "copyC.bin"))
        sh("sync")
        n3 = cfg.create("s3: copy of A gone from live, copy of C")
        os.unlink(os.path.join(live, "copyC.bin"))
        sh("sync")
        n4 = cfg.create("s4: copy of C gone from live")
        numbers = [n1, n2, n3, n4]
        r.check("four create entries queued", sorted(queue_entries(state_dir)) ==
                sorted(f"create.{enc}.{n}" for n in numbers), str(sorted(queue_entries(state_dir))))
        snaps = [cfg.snapshot_path(n) for n in numbers]
        r.check("snapper's snapshots are read-only", all(is_readonly(s) for s in snaps))
        ids = {n: subvol_ids(cfg.snapshot_path(n)) for n in numbers}

        before = manifest_all(snaps)
        u0 = df(fs.mnt)
        res = run_queue("run --queue (4 new snapshots)")
        u1 = df(fs.mnt)
        freed = u0["data_used"] - u1["data_used"]
        figures["freed_first_run"] = freed
        figures["first_run_seconds"] = res.elapsed
        r.check("all four queued snapshots processed", jget(res, "snapshots_processed") == 4, res.describe())
        r.check(f"space freed >= 95% of the {GUARANTEED_DUP} bytes no writable subvolume holds",
                freed >= 0.95 * GUARANTEED_DUP, f"freed {freed}")
        r.check("space freed <= every duplicate + 1 MiB", freed <= GUARANTEED_DUP + LIVE_HELD_DUP + MiB,
                f"freed {freed}")
        d = compare_manifests(before, manifest_all(snaps))
        r.check(f"integrity: every file of every snapshot hashes the same ({file_count(before)} files)",
                d == [], "; ".join(d[:5]))
        r.check("snapshots still read-only", all(is_readonly(s) for s in snaps))

        db = db_for_fs(fs)
        rows, blocks = index_rows(db)
        root = {n: int(ids[n]["Subvolume ID"]) for n in numbers}
        r.check("index holds the four snapshots (uuid -> root id)",
                {ids[n]["UUID"]: root[n] for n in numbers} == rows, str(rows))

        r.section("snapper delete: the index forgets, blocks still mapped elsewhere move")
        in_s2 = sorted(i for i, rt in blocks.items() if rt == root[n2])
        r.check("s2 holds the location of new blocks (D.bin)", len(in_s2) >= 3 * MiB // (128 * 1024),
                f"{len(in_s2)} blocks")
        cfg.delete(n2)
        r.check("snapper delete queued a forget entry",
                queue_entries(state_dir).get(f"forget.{enc}.{n2}", {}).get("action") == "forget",
                str(queue_entries(state_dir)))
        run_queue("run --queue (after snapper delete of s2)")
        rows2, blocks2 = index_rows(db)
        r.check("s2's snapshot row is gone; the others stay",
                ids[n2]["UUID"] not in rows2 and len(rows2) == 3, str(rows2))
        r.check("no block is located in s2 any more", root[n2] not in blocks2.values())
        r.check("s2's blocks (D.bin, still in s3, s4) moved to the newest snapshot, ids kept",
                all(blocks2.get(i) == root[n4] for i in in_s2), str({i: blocks2.get(i) for i in in_s2[:4]}))

        in_s1 = sorted(i for i, rt in blocks2.items() if rt == root[n1])
        cfg.delete(n1)
        res = run_queue("run --queue (after snapper delete of s1, the oldest)")
        figures["forget_seconds"] = res.elapsed
        rows3, blocks3 = index_rows(db)
        moved = sum(1 for i in in_s1 if blocks3.get(i) == root[n4])
        figures["blocks_moved_from_s1"] = moved
        figures["blocks_in_s1"] = len(in_s1)
        r.check("s1's row is gone", ids[n1]["UUID"] not in rows3, str(rows3))
        r.check("every block of s1 (all still in s4) moved there: the index keeps its keepers",
                in_s1 and moved == len(in_s1), f"{moved} of {len(in_s1)}")

        r.section("after the oldest snapshot is gone, a new copy still finds its keeper")
        sh("cp", "--reflink=never", os.path.join(live, "A.bin"), os.path.join(live, "copyA2.bin"))
        sh("sync")
        n5 = cfg.create("s5: another copy of A")
        os.unlink(os.path.join(live, "copyA2.bin"))
        sh("sync")
        left = [cfg.snapshot_path(n) for n in (n3, n4, n5)]
        before2 = manifest_all(left)
        u2 = df(fs.mnt)
        res = run_queue("run --queue (s5)")
        u3 = df(fs.mnt)
        freed2 = u2["data_used"] - u3["data_used"]
        figures["freed_after_forget"] = freed2
        r.check("s5 processed", jget(res, "snapshots_processed") == 1, res.describe())
        r.check("the copy of A in s5 was freed (>= 95% of 8 MiB) against the moved keeper",
                freed2 >= 0.95 * 8 * MiB, f"freed {freed2}")
        d = compare_manifests(before2, manifest_all(left))
        r.check("integrity after forgetting and deduping again", d == [], "; ".join(d[:5]))
        for n in (n3, n4):
            d = compare_manifests({cfg.snapshot_path(n): before[cfg.snapshot_path(n)]},
                                  manifest_all([cfg.snapshot_path(n)]))
            r.check(f"integrity: snapshot {n} hashes as it did before the first run", d == [], "; ".join(d[:5]))
    return figures
