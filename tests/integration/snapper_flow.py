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
import random
import shutil

from snaptest import (MiB, check_integrity, df, fs_uuid, identical_rewrite, index_rows, is_readonly,
                      manifest_all, run_tool, sh, subvol_create, subvol_ids, write_random)

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


class SnapperFlow:
    """The flow's steps, in order; `figures` collects the measured figures, and the
    filesystem's uuid as soon as it exists."""

    def __init__(self, r, ws, binary, state_dir, extra_args, figures):
        self.r, self.binary, self.state_dir, self.extra_args = r, binary, state_dir, extra_args
        self.figures = figures
        self.rng = random.Random(5005)
        self.fs = ws.make_btrfs("snapper", size=1024 * MiB)
        figures["uuid"] = fs_uuid(self.fs.mnt)
        self.live = self.fs.path("sub")
        subvol_create(self.live)
        self.name = f"sdtest{os.getpid()}"
        self.enc = encode_subvolume(self.live)

    def lp(self, rel):
        return os.path.join(self.live, rel)

    def run_queue(self, label):
        r, res = self.r, run_tool(self.binary, ["run", "--queue", "--json", *self.extra_args])
        r.check(f"{label}: exit 0", res.rc == 0, res.describe())
        r.check(f"{label}: dedupe_errors == 0", res.get("dedupe_errors") == 0, res.describe())
        left = queue_leftovers(self.state_dir)
        r.check(f"{label}: queue drained (nothing left but the lock)", left == [], str(left))
        print(f"  {label}: {res.elapsed:.2f}s processed={res.get('snapshots_processed')} "
              f"deduped={res.get('deduped_bytes')}", flush=True)
        return res

    def churn(self, cfg):
        """Four snapper snapshots between churn steps; returns their numbers."""
        r = self.r
        for rel, size in (("A.bin", 8 * MiB), ("B.bin", 6 * MiB), ("C.bin", 4 * MiB)):
            write_random(self.lp(rel), size, self.rng.randbytes)
        sh("sync")
        n1 = cfg.create("s1")
        entry = queue_entries(self.state_dir).get(f"create.{self.enc}.{n1}")
        r.check("snapper create queued one create entry naming subvolume and number",
                entry is not None and entry.get("action") == "create" and entry.get("subvolume") == self.live
                and entry.get("number") == str(n1), str(queue_entries(self.state_dir)))
        sh("cp", "--reflink=never", self.lp("A.bin"), self.lp("copyA.bin"))
        identical_rewrite(self.lp("B.bin"))
        write_random(self.lp("D.bin"), 3 * MiB, self.rng.randbytes)
        sh("sync")
        n2 = cfg.create("s2: copy of A, B rewritten, new D")
        os.unlink(self.lp("copyA.bin"))
        sh("cp", "--reflink=never", self.lp("C.bin"), self.lp("copyC.bin"))
        sh("sync")
        n3 = cfg.create("s3: copy of A gone from live, copy of C")
        os.unlink(self.lp("copyC.bin"))
        sh("sync")
        n4 = cfg.create("s4: copy of C gone from live")
        queued = sorted(queue_entries(self.state_dir))
        r.check("four create entries queued", queued == sorted(f"create.{self.enc}.{n}" for n in (n1, n2, n3, n4)),
                str(queued))
        return [n1, n2, n3, n4]

    def first_run(self, cfg, numbers, db_for_fs):
        """run --queue of the four snapshots: space freed, integrity, the index's rows.
        Returns (manifests before, {number: root id}, block ids -> root id)."""
        r, fs = self.r, self.fs
        snaps = [cfg.snapshot_path(n) for n in numbers]
        r.check("snapper's snapshots are read-only", all(is_readonly(s) for s in snaps))
        ids = {n: subvol_ids(cfg.snapshot_path(n)) for n in numbers}
        before = manifest_all(snaps)
        u0 = df(fs.mnt)
        res = self.run_queue("run --queue (4 new snapshots)")
        freed = u0["data_used"] - df(fs.mnt)["data_used"]
        self.figures["freed_first_run"] = freed
        self.figures["first_run_seconds"] = res.elapsed
        r.check("all four queued snapshots processed", res.get("snapshots_processed") == 4, res.describe())
        r.check(f"space freed >= 95% of the {GUARANTEED_DUP} bytes no writable subvolume holds",
                freed >= 0.95 * GUARANTEED_DUP, f"freed {freed}")
        r.check("space freed <= every duplicate + 1 MiB", freed <= GUARANTEED_DUP + LIVE_HELD_DUP + MiB,
                f"freed {freed}")
        check_integrity(r, "integrity: every file of every snapshot hashes the same ({files} files)", before, snaps)
        r.check("snapshots still read-only", all(is_readonly(s) for s in snaps))
        self.db = db_for_fs(fs)
        rows, blocks = index_rows(self.db)
        self.uuid = {n: ids[n]["UUID"] for n in numbers}
        root = {n: int(ids[n]["Subvolume ID"]) for n in numbers}
        r.check("index holds the four snapshots (uuid -> root id)",
                {self.uuid[n]: root[n] for n in numbers} == rows, str(rows))
        return before, root, blocks

    def forget_second(self, cfg, n2, n4, root, blocks):
        """snapper delete of s2: its row goes, its blocks move to the newest snapshot."""
        r = self.r
        in_s2 = sorted(i for i, rt in blocks.items() if rt == root[n2])
        r.check("s2 holds the location of new blocks (D.bin)", len(in_s2) >= 3 * MiB // (128 * 1024),
                f"{len(in_s2)} blocks")
        cfg.delete(n2)
        r.check("snapper delete queued a forget entry",
                queue_entries(self.state_dir).get(f"forget.{self.enc}.{n2}", {}).get("action") == "forget",
                str(queue_entries(self.state_dir)))
        self.run_queue("run --queue (after snapper delete of s2)")
        rows2, blocks2 = index_rows(self.db)
        r.check("s2's snapshot row is gone; the others stay",
                self.uuid[n2] not in rows2 and len(rows2) == 3, str(rows2))
        r.check("no block is located in s2 any more", root[n2] not in blocks2.values())
        r.check("s2's blocks (D.bin, still in s3, s4) moved to the newest snapshot, ids kept",
                all(blocks2.get(i) == root[n4] for i in in_s2), str({i: blocks2.get(i) for i in in_s2[:4]}))
        return blocks2

    def forget_oldest(self, cfg, n1, n4, root, blocks):
        """snapper delete of s1, the oldest: every block of it moves to s4."""
        r = self.r
        in_s1 = sorted(i for i, rt in blocks.items() if rt == root[n1])
        cfg.delete(n1)
        res = self.run_queue("run --queue (after snapper delete of s1, the oldest)")
        self.figures["forget_seconds"] = res.elapsed
        rows3, blocks3 = index_rows(self.db)
        moved = sum(1 for i in in_s1 if blocks3.get(i) == root[n4])
        self.figures["blocks_moved_from_s1"] = moved
        self.figures["blocks_in_s1"] = len(in_s1)
        r.check("s1's row is gone", self.uuid[n1] not in rows3, str(rows3))
        r.check("every block of s1 (all still in s4) moved there: the index keeps its keepers",
                in_s1 and moved == len(in_s1), f"{moved} of {len(in_s1)}")

    def copy_after_forget(self, cfg, n3, n4, before):
        """A new copy of A in s5 still finds its keeper after the oldest snapshot went."""
        r, fs = self.r, self.fs
        sh("cp", "--reflink=never", self.lp("A.bin"), self.lp("copyA2.bin"))
        sh("sync")
        n5 = cfg.create("s5: another copy of A")
        os.unlink(self.lp("copyA2.bin"))
        sh("sync")
        left = [cfg.snapshot_path(n) for n in (n3, n4, n5)]
        before2 = manifest_all(left)
        u2 = df(fs.mnt)
        res = self.run_queue("run --queue (s5)")
        freed2 = u2["data_used"] - df(fs.mnt)["data_used"]
        self.figures["freed_after_forget"] = freed2
        r.check("s5 processed", res.get("snapshots_processed") == 1, res.describe())
        r.check("the copy of A in s5 was freed (>= 95% of 8 MiB) against the moved keeper",
                freed2 >= 0.95 * 8 * MiB, f"freed {freed2}")
        check_integrity(r, "integrity after forgetting and deduping again", before2, left)
        for n in (n3, n4):
            s = cfg.snapshot_path(n)
            check_integrity(r, f"integrity: snapshot {n} hashes as it did before the first run", {s: before[s]}, [s])


def run_flow(r, ws, binary, state_dir, db_for_fs, extra_args=(), figures=None):
    """The flow. `db_for_fs(fs)` names the index the run uses (to inspect it); `extra_args`
    go to every `run --queue` (e.g. --db, --config). Fills and returns `figures` (measured
    figures, and the filesystem's uuid as soon as it exists)."""
    figures = {} if figures is None else figures
    flow = SnapperFlow(r, ws, binary, state_dir, extra_args, figures)
    with SnapperConfig(flow.name, flow.live) as cfg:
        r.section("snapper snapshots between churn steps; the plugin queues each")
        n1, n2, n3, n4 = numbers = flow.churn(cfg)
        before, root, blocks = flow.first_run(cfg, numbers, db_for_fs)
        r.section("snapper delete: the index forgets, blocks still mapped elsewhere move")
        blocks = flow.forget_second(cfg, n2, n4, root, blocks)
        flow.forget_oldest(cfg, n1, n4, root, blocks)
        r.section("after the oldest snapshot is gone, a new copy still finds its keeper")
        flow.copy_after_forget(cfg, n3, n4, before)
    return figures
