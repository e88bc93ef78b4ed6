#!/usr/bin/env python3
"""Integration test: the Debian package's units under a real systemd (PID 1 in systemd-nspawn).

    python3 tests/integration/test_systemd.py --snapdedupe build/plugin/snapdedupe --build-dir build

A Debian 12 root filesystem built once with mmdebstrap and cached in
/var/cache/snapdedupe-tests (nspawn_container.py: the first build takes a few minutes), booted
with systemd as PID 1; a loop-backed btrfs made on the host is bound into it: its directory
`backup` (a series of read-only snapshots of the subvolume `src`) as /srv/backup, its
subvolume `home` as /home. The .deb is built with `cpack -G DEB` in --build-dir and installed
with `dpkg -i` inside (`systemd-analyze verify` of its units there: clean). Checks:

* /srv/backup, a `path` of /etc/snapdedupe.conf, is outside the unit's ReadWritePaths:
  `systemctl start snapdedupe.service` leaves the unit failed (exit 4) and its journal names
  the path and the fix (ReadWritePaths=); nothing is freed. After a drop-in
  `ReadWritePaths=/srv/backup` and `systemctl daemon-reload`, the next start frees the known
  duplicates.
* While that run is paused at the test seam (between hashing and dedupe): its hardening is in
  force: capabilities (effective and bounding) exactly CAP_SYS_ADMIN CAP_DAC_READ_SEARCH
  CAP_FOWNER, NoNewPrivs, a seccomp filter of its own, SCHED_IDLE, idle I/O, nice 19,
  read-only /, /usr, /etc, /home, /sys and /sys/fs/cgroup, writable index and snapshot
  directories, /proc with only processes (subset=pid, hidepid=invisible), a private /tmp and
  /var/tmp, a private /dev, a network namespace of its own with only `lo`.
* A drop-in `SystemCallFilter=~open_by_handle_at` with `SystemCallErrorNumber=EPERM` (on top
  of the unit's own filter, with a ReadWritePaths drop-in of its own): on a new snapshot with
  duplicates, `systemctl start` leaves the unit failed (exit 1), and the run's journal has one
  line, naming the new snapshot, that blames a seccomp filter (SystemCallFilter=) for blocking
  open_by_handle_at, not CAP_DAC_READ_SEARCH; nothing is freed. With the drop-in gone,
  daemon-reload and reset-failed, the next start succeeds and frees the duplicates. Its
  drop-ins are removed whatever happens; like the other steps that add snapshots to the
  series, it expects the series' earlier snapshots to be processed already (the first step).
* snapper (in the container, with the installed plugin) on /home: each snapshot's plugin call
  (`systemctl start --no-block`) starts the service, which drains the queue and frees the known
  duplicates, through the unit's default ReadWritePaths (/home/.snapshots).
* The timer (a drop-in making its OnCalendar fire within seconds) starts the service, which
  frees the next snapshot's duplicates, and `Persistent=` writes its stamp.
* snapdedupe-btrbk.service, with its own ReadWritePaths drop-in, runs and frees the next ones.
* `systemd-analyze security` rates both services below 3.0.
* `dpkg --purge snapdedupe`: no unit is failed (`systemctl --failed`) and no unit of ours loaded.

Every path cleans up: the container (poweroff, then kill), its cgroups, mounts, loop devices.
In a sanitizer tree (ASAN_OPTIONS etc. set by tests/CMakeLists.txt) the services get those
options through a drop-in, with LeakSanitizer off (it needs ptrace, which SystemCallFilter
refuses) and their reports written to the tree's report directory, bound into the container.
Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import glob
import os
import re
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nspawn_container import Container, cached_rootfs  # noqa: E402
from snaptest import (MiB, SeriesBuilder, df, identical_rewrite, parse_args, run_test, sh, subvol_create,  # noqa: E402
                      write_random)

PROG = "test_systemd.py"
PACKAGE = "snapdedupe"
SERVICE = "snapdedupe.service"
BTRBK_SERVICE = "snapdedupe-btrbk.service"
TIMER = "snapdedupe.timer"
BACKUP = "/srv/backup"        # outside the unit's ReadWritePaths
HOME = "/home"                # snapper's /home/.snapshots is inside them
STATE = "/var/lib/snapdedupe"
PAUSE_FIFO = "/run/snapdedupe-test/pause"
STAMP = "/var/lib/systemd/timers/stamp-snapdedupe.timer"
# CAP_DAC_READ_SEARCH (2), CAP_FOWNER (3), CAP_SYS_ADMIN (21).
EXPECTED_CAPS = (1 << 2) | (1 << 3) | (1 << 21)
SECURITY_LIMIT = 3.0
SANITIZER_VARS = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")
SANITIZER_REPORTS = "/srv/sanitizer-reports"  # not under /tmp: the units have PrivateTmp


def parse_mountinfo(text):
    """[(mountpoint, root, options, fstype, major:minor, superblock options)] in order."""
    out = []
    for line in text.splitlines():
        a, _, b = line.partition(" - ")
        f, g = a.split(), b.split()
        if len(f) < 6 or not g:
            continue
        unescape = lambda s: s.encode().decode("unicode_escape")  # noqa: E731
        out.append((unescape(f[4]), unescape(f[3]), f[5].split(","), g[0], f[2],
                    g[2].split(",") if len(g) > 2 else []))
    return out


def mount_of(mounts, path):
    """The mount a path is on: the longest mountpoint above it, the last one of those listed."""
    best = None
    for m in mounts:
        mp = m[0]
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best[0]):
                best = m
    return best


class SystemdTest:
    def __init__(self, build_dir):
        self.build_dir = os.path.abspath(build_dir)
        self.container = None
        # A sanitizer tree's options (tests/CMakeLists.txt) go to the services, with their
        # report directory bound into the container at SANITIZER_REPORTS.
        self.sanitizer_env = {k: os.environ[k] for k in SANITIZER_VARS if os.environ.get(k)}
        self.sanitizer_dirs = set()
        for k, v in self.sanitizer_env.items():
            m = re.search(r"(^|:)log_path=([^:]+)", v)
            if m:
                self.sanitizer_dirs.add(os.path.dirname(m.group(2)))
                inside = os.path.join(SANITIZER_REPORTS, os.path.basename(m.group(2)))
                self.sanitizer_env[k] = v[:m.start(2)] + inside + v[m.end(2):]
        if len(self.sanitizer_dirs) > 1:
            raise RuntimeError(f"sanitizer reports go to several directories: {self.sanitizer_dirs}")

    # -- the frame -----------------------------------------------------------

    def body(self, r, ws):
        t0 = time.monotonic()
        r.section("the container's root filesystem (mmdebstrap, cached)")
        rootfs, built = cached_rootfs()
        print(f"  rootfs {rootfs}: " + (f"built in {built:.0f}s" if built else "cached"), flush=True)
        r.section("cpack -G DEB")
        deb = self.build_deb(r)
        r.section("a loop-backed btrfs for the container")
        self.fs = ws.make_btrfs("systemd", size=1024 * MiB)
        self.series = SeriesBuilder(self.fs, live="src", snapdir="backup", seed=1212)
        self.series.write_new("a.bin", 3 * MiB)
        self.series.write_new("b.bin", 2 * MiB)
        self.series.snapshot()
        self.series.identical_rewrite("a.bin")
        self.series.copy_noreflink("b.bin", "b2.bin")
        self.series.snapshot()
        self.home = self.fs.path("home")
        subvol_create(self.home)
        binds = [(self.fs.path("backup"), BACKUP), (self.home, HOME)]
        binds += [(d, SANITIZER_REPORTS) for d in self.sanitizer_dirs]
        self.container = Container(ws, rootfs, f"sdtest{os.getpid()}", binds=binds)
        try:
            r.section("boot")
            state = self.container.start()
            r.check("systemd boots as PID 1 in the container: running, no unit failed", state == "running",
                    f"{state}: {self.failed_units()} {self.container.console_tail(600)}")
            self.quiet_container()
            r.section("dpkg -i")
            self.install(r, deb)
            steps = [("refused, then fixed with ReadWritePaths (hardening checked)", self.refused_then_fixed),
                     ("SystemCallFilter= blocks open_by_handle_at: the run says so", self.seccomp_blocks_handles),
                     ("the snapper plugin starts the service", self.snapper_plugin),
                     ("the timer starts the service", self.timer),
                     ("snapdedupe-btrbk.service", self.btrbk_service),
                     ("systemd-analyze security", self.security),
                     ("dpkg --purge", self.purge)]
            for name, fn in steps:
                r.section(name)
                t = time.monotonic()
                try:
                    fn(r)
                except Exception as e:
                    r.error(f"{name} raised", e)
                    traceback.print_exc()
                print(f"  ({time.monotonic() - t:.1f}s)", flush=True)
        finally:
            self.stop_container(r)
        print(f"  whole test: {time.monotonic() - t0:.1f}s", flush=True)

    def stop_container(self, r):
        if self.container is None:
            return
        self.container.stop()
        left = self.container.leaks()
        r.check("cleanup: the container and its cgroups are gone", left == [], "; ".join(left))

    # -- helpers -------------------------------------------------------------

    def sh(self, *argv, **kw):
        return self.container.run(*argv, **kw)

    def failed_units(self):
        return self.container.out("systemctl", "--failed", "--no-legend", "--plain", check=False).strip()

    def quiet_container(self):
        """The rootfs's own timers (snapper's timeline and cleanup, btrbk's) would run at odd
        moments: stopped, so every run of ours is one the test started."""
        self.sh("systemctl", "stop", "snapper-timeline.timer", "snapper-cleanup.timer", "snapper-boot.timer",
                "btrbk.timer", check=False)

    def daemon_reload(self):
        self.sh("systemctl", "daemon-reload")

    def drop_in(self, unit, name, text):
        self.container.write(f"/etc/systemd/system/{unit}.d/{name}.conf", text)
        self.daemon_reload()

    def remove_drop_in(self, unit, name):
        self.sh("rm", "-f", f"/etc/systemd/system/{unit}.d/{name}.conf")
        self.daemon_reload()

    def unit_state(self, unit):
        return self.container.show(unit, "ActiveState", "Result", "ExecMainStatus", "InvocationID", "MainPID")

    def wait_for_run(self, unit, old_invocation, timeout=120):
        """Waits until a run of `unit` other than `old_invocation` has ended; its state."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.unit_state(unit)
            if st.get("InvocationID") not in ("", old_invocation) and st.get("ActiveState") in ("inactive", "failed"):
                return st
            if time.monotonic() > deadline:
                raise RuntimeError(f"{unit}: no new run ended within {timeout}s: {st}")
            time.sleep(0.1)

    def journal(self, unit, invocation, want=None, timeout=10):
        """The journal of one run of the unit (the program's lines only); waits up to `timeout`
        for a line containing `want`."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.container.out("journalctl", "--no-pager", "-o", "cat", "-u", unit,
                                     f"_SYSTEMD_INVOCATION_ID={invocation}", check=False)
            if want is None or want in out or time.monotonic() > deadline:
                return out
            time.sleep(0.2)

    def data_used(self):
        return df(self.fs.mnt)["data_used"]

    def check_freed(self, r, what, before, dup, unit=SERVICE, invocation=None):
        """Data freed since `before` within 5% of `dup`; on failure, the run's journal."""
        freed = before - self.data_used()
        ok = r.check(f"{what}: data freed within 5% of the {dup // 1024} KiB of known duplicates",
                     abs(freed - dup) <= 0.05 * dup, f"freed {freed}")
        if not ok:
            log = self.journal(unit, invocation or self.unit_state(unit)["InvocationID"])
            print("  journal: " + log.strip().replace("\n", "\n  journal: "), flush=True)
        return freed

    # -- the package ---------------------------------------------------------

    def build_deb(self, r):
        for old in glob.glob(os.path.join(self.build_dir, f"{PACKAGE}_*.deb")):
            os.unlink(old)
        p = subprocess.run(["cpack", "-G", "DEB"], cwd=self.build_dir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=600)
        debs = glob.glob(os.path.join(self.build_dir, f"{PACKAGE}_*.deb"))
        if not r.check("cpack built one .deb", p.returncode == 0 and len(debs) == 1,
                       p.stdout.decode(errors="replace")[-800:]):
            raise RuntimeError("no package to test")
        return debs[0]

    def install(self, r, deb):
        with open(deb, "rb") as f:
            self.container.write(f"/root/{os.path.basename(deb)}", f.read())
        p = self.sh("dpkg", "-i", f"/root/{os.path.basename(deb)}", check=False)
        if not r.check("dpkg -i in the container: exit 0", p.returncode == 0, (p.stdout + p.stderr)[-800:]):
            raise RuntimeError("the package did not install")
        r.check("postinst enabled and started the timer",
                self.sh("systemctl", "is-enabled", TIMER, check=False).stdout.strip() == "enabled"
                and self.sh("systemctl", "is-active", TIMER, check=False).stdout.strip() == "active")
        units = [f"/lib/systemd/system/{u}" for u in (SERVICE, TIMER, BTRBK_SERVICE)]
        p = self.sh("systemd-analyze", "verify", *units, check=False)
        r.check("systemd-analyze verify of the installed units: clean", p.returncode == 0
                and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr)
        self.container.write("/etc/snapdedupe.conf", f"path = {BACKUP}\n")
        if self.sanitizer_env:
            # A sanitizer build: its reports go to the host's report directory, which run-all.sh
            # reads. LeakSanitizer stops the world with ptrace, which SystemCallFilter refuses.
            env = dict(self.sanitizer_env)
            env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
            text = "[Service]\n" + "".join(f'Environment="{k}={v}"\n' for k, v in env.items())
            text += f"ReadWritePaths={SANITIZER_REPORTS}\n" if self.sanitizer_dirs else ""
            for unit in (SERVICE, BTRBK_SERVICE):
                self.drop_in(unit, "sanitizer", text)
            print(f"  sanitizer build: {sorted(env)} passed to the services", flush=True)

    # -- the steps -----------------------------------------------------------

    def refused_then_fixed(self, r):
        before = self.data_used()
        dup = self.series.known_dup_bytes
        p = self.sh("systemctl", "start", SERVICE, check=False)
        st = self.unit_state(SERVICE)
        r.check(f"without ReadWritePaths={BACKUP}: systemctl start fails, the unit is failed with exit 4",
                p.returncode != 0 and st["ActiveState"] == "failed" and st["ExecMainStatus"] == "4", f"{st}")
        log = self.journal(SERVICE, st["InvocationID"], want="ReadWritePaths=")
        print("  journal: " + log.strip().replace("\n", "\n  journal: "), flush=True)
        r.check(f"its journal names {BACKUP}, the read-only mount and the fix (ReadWritePaths=)",
                BACKUP in log and "read-only" in log and f"ReadWritePaths={BACKUP}" in log, log[-500:])
        r.check("nothing was freed", self.data_used() == before)

        self.drop_in(SERVICE, "backup", f"[Service]\nReadWritePaths={BACKUP}\n")
        self.sh("mkdir", "-p", os.path.dirname(PAUSE_FIFO))
        self.sh("rm", "-f", PAUSE_FIFO)
        self.sh("mkfifo", "-m", "0600", PAUSE_FIFO)
        # The test seam is a hidden option of `run`: the drop-in replaces ExecStart with the
        # unit's own command line plus --test-pause-before-dedupe.
        unit = self.container.out("cat", f"/lib/systemd/system/{SERVICE}")
        exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
        pause = f"[Service]\nExecStart=\nExecStart={exec_start} --test-pause-before-dedupe {PAUSE_FIFO}\n"
        self.drop_in(SERVICE, "test-pause", pause)
        self.sh("systemctl", "start", SERVICE, "--no-block")
        while self.unit_state(SERVICE)["InvocationID"] == st["InvocationID"]:
            time.sleep(0.05)
        try:
            fd = self.wait_for_pause(SERVICE)
            try:
                self.check_hardening(r, SERVICE)
            finally:
                os.write(fd, b"go\n")
                os.close(fd)
            self.release_pauses(SERVICE)
        finally:
            self.remove_drop_in(SERVICE, "test-pause")
        st = self.wait_for_run(SERVICE, st["InvocationID"])
        r.check("after the drop-in and daemon-reload: the run succeeds",
                st["Result"] == "success" and st["ExecMainStatus"] == "0", str(st))
        self.check_freed(r, "after the drop-in", before, dup)
        r.check("no unit is failed any more", self.failed_units() == "", self.failed_units())

    def wait_for_pause(self, unit, timeout=120):
        """The write end of the seam's FIFO, opened once the run waits there."""
        path = self.container.host_path(PAUSE_FIFO)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != 6:  # ENXIO: no reader yet
                    raise
            st = self.unit_state(unit)
            if st["ActiveState"] not in ("activating", "active", "deactivating") or time.monotonic() > deadline:
                log = self.journal(unit, st["InvocationID"])
                raise RuntimeError(f"{unit} never reached the test seam: {st}: {log[-1500:]}")
            time.sleep(0.05)

    def release_pauses(self, unit, timeout=120):
        """Lets every further pause of the run go, until it ends."""
        path = self.container.host_path(PAUSE_FIFO)
        deadline = time.monotonic() + timeout
        while self.unit_state(unit)["ActiveState"] in ("activating", "active", "deactivating"):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                os.write(fd, b"go\n")
                os.close(fd)
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{unit} did not end within {timeout}s")
            time.sleep(0.05)

    def check_hardening(self, r, unit):
        pid = self.unit_state(unit)["MainPID"]
        r.check(f"{unit} runs (main pid {pid}) and waits at the test seam", pid not in ("", "0"))
        status = dict(l.split(":", 1) for l in self.container.out("cat", f"/proc/{pid}/status").splitlines()
                      if ":" in l)
        status = {k: v.strip() for k, v in status.items()}
        pid1_status = dict(l.split(":", 1) for l in self.container.out("cat", "/proc/1/status").splitlines()
                           if ":" in l)
        r.check("its comm is snapdedupe", status.get("Name") == "snapdedupe", status.get("Name"))
        for key in ("CapEff", "CapPrm", "CapBnd"):
            r.check(f"{key} is exactly CAP_SYS_ADMIN CAP_DAC_READ_SEARCH CAP_FOWNER",
                    int(status.get(key, "0"), 16) == EXPECTED_CAPS, status.get(key))
        r.check("CapAmb is empty", int(status.get("CapAmb", "1"), 16) == 0, status.get("CapAmb"))
        r.check("NoNewPrivs is set", status.get("NoNewPrivs") == "1", status.get("NoNewPrivs"))
        r.check("a seccomp filter of its own (SystemCallFilter) on top of nspawn's",
                status.get("Seccomp") == "2" and int(status.get("Seccomp_filters", "0"))
                > int(pid1_status.get("Seccomp_filters", "0").strip()),
                f"{status.get('Seccomp_filters')} vs PID 1's {pid1_status.get('Seccomp_filters', '').strip()}")
        chrt = self.container.out("chrt", "-p", pid)
        r.check("scheduling policy SCHED_IDLE", "SCHED_IDLE" in chrt, chrt.strip())
        ionice = self.container.out("ionice", "-p", pid).strip()
        r.check("I/O scheduling class idle", ionice == "idle", ionice)
        stat = self.container.out("cat", f"/proc/{pid}/stat")
        nice = stat.rsplit(")", 1)[1].split()[16]
        r.check("nice 19", nice == "19", nice)

        mounts = parse_mountinfo(self.container.out("cat", f"/proc/{pid}/mountinfo"))

        def ro(path):
            m = mount_of(mounts, path)
            return m is not None and "ro" in m[2]

        for path in ("/", "/usr", "/etc", HOME, "/sys", "/sys/fs/cgroup"):
            r.check(f"{path} is read-only for it", ro(path), str(mount_of(mounts, path)))
        for path in (BACKUP, STATE, "/run"):
            r.check(f"{path} is writable for it", not ro(path), str(mount_of(mounts, path)))
        proc = mount_of(mounts, "/proc/self")
        r.check("/proc shows only processes (ProcSubset=pid) it may see (ProtectProc=invisible)",
                proc is not None and proc[3] == "proc" and "subset=pid" in proc[5] and "hidepid=invisible" in proc[5],
                str(proc))
        for path in ("/tmp", "/var/tmp"):
            m = mount_of(mounts, path)
            r.check(f"{path} is private (PrivateTmp)", m is not None and m[0] == path and "systemd-private-" in m[1],
                    str(m))
        pid1_mounts = parse_mountinfo(self.container.out("cat", "/proc/1/mountinfo"))
        dev, dev1 = mount_of(mounts, "/dev/null"), mount_of(pid1_mounts, "/dev/null")
        devs = sorted(os.listdir(self.container.host_path(f"/proc/{pid}/root/dev")))
        r.check("/dev is private (PrivateDevices): a tmpfs of its own, no console, no block device",
                dev is not None and dev1 is not None and dev[0] == "/dev" and dev[3] == "tmpfs" and dev[4] != dev1[4]
                and "console" not in devs and not any(d.startswith(("loop", "vd", "sd", "nvme")) for d in devs),
                f"{dev} (PID 1: {dev1}) {devs}")
        net = self.container.out("cat", f"/proc/{pid}/net/dev")
        ifaces = sorted(l.split(":")[0].strip() for l in net.splitlines()[2:] if ":" in l)
        netns = self.container.out("readlink", f"/proc/{pid}/ns/net", "/proc/1/ns/net").split()
        r.check("a network namespace of its own (PrivateNetwork), with only lo",
                ifaces == ["lo"] and len(netns) == 2 and netns[0] != netns[1], f"{ifaces} {netns}")

    def seccomp_blocks_handles(self, r):
        """A unit's SystemCallFilter= that takes open_by_handle_at away (EPERM, as the unit's
        SystemCallErrorNumber= says) while CAP_DAC_READ_SEARCH is still there: the run fails
        with one line naming seccomp and open_by_handle_at, not the capability."""
        b = self.series
        known = b.known_dup_bytes
        b.copy_noreflink("b.bin", "b3.bin")
        snap = os.path.basename(b.snapshot())
        dup = b.known_dup_bytes - known
        before = self.data_used()
        # Its own ReadWritePaths drop-in (the same as the first step's): this step does not
        # need that one, and leaves the unit's drop-ins as it found them.
        self.container.write(f"/etc/systemd/system/{SERVICE}.d/test-seccomp-backup.conf",
                             f"[Service]\nReadWritePaths={BACKUP}\n")
        try:
            self.drop_in(SERVICE, "test-seccomp",
                         "[Service]\nSystemCallFilter=~open_by_handle_at\nSystemCallErrorNumber=EPERM\n")
            try:
                p = self.sh("systemctl", "start", SERVICE, check=False)
                st = self.unit_state(SERVICE)
                r.check("SystemCallFilter=~open_by_handle_at: systemctl start fails, the unit is failed with exit 1",
                        p.returncode != 0 and st["ActiveState"] == "failed" and st["Result"] == "exit-code"
                        and st["ExecMainStatus"] == "1", f"{st} {p.stderr.strip()}")
                log = self.journal(SERVICE, st["InvocationID"], want="seccomp")
                print("  journal: " + log.strip().replace("\n", "\n  journal: "), flush=True)
                lines = [l for l in log.splitlines() if "seccomp" in l]
                line = lines[0] if lines else ""
                r.check("its journal has one line naming a seccomp filter (SystemCallFilter=) that blocks "
                        "open_by_handle_at", len(lines) == 1 and "open_by_handle_at" in line
                        and "SystemCallFilter=" in line, log[-800:])
                r.check(f"that line names the file of the new snapshot {snap} it could not open",
                        f"/{snap}/" in line, line)
                blame = re.findall(r"(?:needs|lacks|without|missing)\s+CAP_DAC_READ_SEARCH|does not have"
                                   r"|capability missing|[Nn]ot root", log)
                r.check("and does not blame the capability (it has CAP_DAC_READ_SEARCH)", blame == [],
                        f"{blame}: {log[-800:]}")
                r.check("nothing was freed", self.data_used() == before, f"{before} -> {self.data_used()}")
            finally:
                self.remove_drop_in(SERVICE, "test-seccomp")
                self.sh("systemctl", "reset-failed", SERVICE, check=False)
            st = self.unit_state(SERVICE)
            r.check("without the drop-in, after daemon-reload and reset-failed: no unit is failed",
                    st["ActiveState"] == "inactive" and self.failed_units() == "", f"{st} {self.failed_units()}")
            p = self.sh("systemctl", "start", SERVICE, check=False)
            st = self.unit_state(SERVICE)
            r.check("the next systemctl start succeeds",
                    p.returncode == 0 and st["Result"] == "success" and st["ExecMainStatus"] == "0",
                    f"{st} {p.stderr.strip()}")
            log = self.journal(SERVICE, st["InvocationID"], want="snapshots processed")
            r.check(f"that run processed {snap}", snap in log, log[-500:])
            self.check_freed(r, "the run after the filter is gone", before, dup, invocation=st["InvocationID"])
        finally:
            self.remove_drop_in(SERVICE, "test-seccomp-backup")

    def snapper_plugin(self, r):
        rng = self.series.rng
        self.sh("snapper", "--no-dbus", "-c", "home", "create-config", HOME)
        self.sh("sed", "-i", 's/^TIMELINE_CREATE=.*/TIMELINE_CREATE="no"/', "/etc/snapper/configs/home")

        def snapshot_and_wait(description):
            old = self.unit_state(SERVICE)["InvocationID"]
            sh("sync")
            out = self.sh("snapper", "--no-dbus", "-c", "home", "create", "--print-number", "-d", description).stdout
            st = self.wait_for_run(SERVICE, old)
            left = [n for n in self.container.out("ls", "-A", f"{STATE}/queue").split() if n != ".lock"]
            return int(out.strip().splitlines()[-1]), st, left

        write_random(os.path.join(self.home, "c.bin"), 3 * MiB, rng.randbytes)
        write_random(os.path.join(self.home, "e.bin"), 1 * MiB, rng.randbytes)
        n1, st, left = snapshot_and_wait("first")
        r.check(f"snapper create {n1}: the plugin started the service, which succeeded",
                st["Result"] == "success" and st["ExecMainStatus"] == "0", str(st))
        r.check("the queue is drained", left == [], str(left))
        log = self.journal(SERVICE, st["InvocationID"], want="snapshots processed")
        r.check("that run processed the new snapshot", f"{HOME}/.snapshots/{n1}/snapshot" in log, log[-500:])
        identical_rewrite(os.path.join(self.home, "c.bin"))
        sh("cp", "--reflink=never", os.path.join(self.home, "e.bin"), os.path.join(self.home, "e2.bin"))
        dup = 4 * MiB
        sh("sync")
        before = self.data_used()
        n2, st, left = snapshot_and_wait("c rewritten, copy of e")
        r.check(f"snapper create {n2}: the plugin started the service again, which succeeded",
                st["Result"] == "success" and st["ExecMainStatus"] == "0", str(st))
        r.check("the queue is drained", left == [], str(left))
        self.check_freed(r, f"{HOME}/.snapshots, writable through the unit's own ReadWritePaths", before, dup)

    def timer(self, r):
        b = self.series
        b.identical_rewrite("b.bin")
        b.snapshot()
        dup = 2 * MiB
        before = self.data_used()
        old = self.unit_state(SERVICE)["InvocationID"]
        stamp = self.container.host_path(STAMP)
        stamp_before = os.stat(stamp).st_mtime if os.path.exists(stamp) else None
        t0 = time.time()
        self.drop_in(TIMER, "test", "[Timer]\nOnCalendar=\nOnCalendar=*:*:0/2\nRandomizedDelaySec=0\nAccuracySec=1s\n")
        try:
            self.sh("systemctl", "restart", TIMER)
            st = self.wait_for_run(SERVICE, old)
        finally:
            self.remove_drop_in(TIMER, "test")
            self.sh("systemctl", "restart", TIMER)
        r.check("the timer started the service, which succeeded",
                st["Result"] == "success" and st["ExecMainStatus"] == "0", str(st))
        self.check_freed(r, "the timer's run", before, dup)
        mtime = os.stat(stamp).st_mtime if os.path.exists(stamp) else None
        r.check(f"Persistent=true: the timer wrote its stamp {STAMP} when it fired",
                mtime is not None and mtime >= t0 - 1 and mtime != stamp_before, f"{stamp_before} -> {mtime}")
        self.wait_idle(SERVICE)

    def wait_idle(self, unit, timeout=120):
        deadline = time.monotonic() + timeout
        while self.unit_state(unit)["ActiveState"] in ("activating", "active", "deactivating"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{unit} still running after {timeout}s")
            time.sleep(0.1)

    def btrbk_service(self, r):
        b = self.series
        b.copy_noreflink("a.bin", "a2.bin")
        b.snapshot()
        dup = 3 * MiB
        before = self.data_used()
        self.drop_in(BTRBK_SERVICE, "backup", f"[Service]\nReadWritePaths={BACKUP}\n")
        p = self.sh("systemctl", "start", BTRBK_SERVICE, check=False)
        st = self.unit_state(BTRBK_SERVICE)
        r.check(f"systemctl start {BTRBK_SERVICE}: succeeded",
                p.returncode == 0 and st["Result"] == "success" and st["ExecMainStatus"] == "0",
                f"{st} {p.stderr.strip()}")
        self.check_freed(r, BTRBK_SERVICE, before, dup, unit=BTRBK_SERVICE)

    def security(self, r):
        for unit in (SERVICE, BTRBK_SERVICE):
            p = self.sh("systemd-analyze", "security", "--no-pager", unit, check=False)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", p.stdout)
            score = float(m.group(1)) if m else None
            print(f"  {unit}: {m.group(0) if m else p.stdout[-300:]}", flush=True)
            if unit == SERVICE:  # what is left: the exposures it still has
                for line in p.stdout.splitlines():
                    if line.startswith("✗"):
                        print("    " + " ".join(line.split()), flush=True)
            r.check(f"systemd-analyze security {unit}: below {SECURITY_LIMIT}",
                    score is not None and score < SECURITY_LIMIT, p.stdout[-3000:] + p.stderr[-300:])

    def purge(self, r):
        p = self.sh("dpkg", "--purge", PACKAGE, check=False)
        r.check("dpkg --purge in the container: exit 0", p.returncode == 0, (p.stdout + p.stderr)[-800:])
        failed = self.failed_units()
        r.check("no unit is failed after the purge (systemctl --failed)", failed == "", failed)
        loaded = self.container.out("systemctl", "list-units", "--all", "--no-legend", "--plain", "snapdedupe*",
                                    check=False).strip()
        r.check("no snapdedupe unit is loaded any more", loaded == "", loaded)


if __name__ == "__main__":
    args, _ = parse_args(PROG, __doc__, options=[
        ("--build-dir", dict(required=True, help="the CMake build directory (cpack runs there)"))])
    test = SystemdTest(args.build_dir)
    run_test(PROG, "snapdedupe-test_systemd", test.body)
