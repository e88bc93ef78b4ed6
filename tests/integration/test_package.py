#!/usr/bin/env python3
"""Integration test: the Debian package, built, installed, used and purged.

    python3 tests/integration/test_package.py --snapdedupe build/plugin/snapdedupe --build-dir build

* `cpack -G DEB` in the build directory; the package's Depends name the libraries and
  btrfs-progs; /etc/snapdedupe.conf is a conffile.
* `dpkg -i`: the binary, man page, bash completion, units, snapper plugin, sample config and
  /var/lib/snapdedupe (0700) are where they belong; the daily timer is enabled.
* `systemd-analyze verify` passes for every installed unit (it works without systemd as PID 1;
  it also checks the units' man: documentation, so the installed man page is found), and the
  two services' [Service] sections are the same.
* The snapper flow of snapper_flow.py through the installed files only: the installed plugin
  (snapper runs it from its plugin directory), /usr/sbin/snapdedupe with its defaults (config
  /etc/snapdedupe.conf, queue and index under /var/lib/snapdedupe).
* `dpkg --purge`: nothing of it is left in /etc, /usr, /lib or /var/lib but the index.

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import glob
import os
import re
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import fs_uuid, parse_args, remove_lock_files, run_test, sh, sh_out  # noqa: E402
from snapper_flow import run_flow  # noqa: E402

PROG = "test_package.py"
PACKAGE = "snapdedupe"
UNITS = ["snapdedupe.service", "snapdedupe.timer", "snapdedupe-btrbk.service"]
UNIT_DIR = "/lib/systemd/system"
STATE = "/var/lib/snapdedupe"
# Where a package's files and the state of its maintainer scripts can end up.
WATCHED = ["/etc", "/usr/sbin", "/usr/lib/snapper", "/usr/lib/systemd", "/usr/share/man/man8",
           "/usr/share/bash-completion/completions", "/usr/share/doc", "/var/lib"]
NOT_WATCHED = ("/var/lib/dpkg", "/var/lib/apt", "/var/lib/man-db", "/var/lib/ucf")
INSTALLED_FILES = {
    "/usr/sbin/snapdedupe": 0o755, "/usr/share/man/man8/snapdedupe.8.gz": 0o644,
    "/usr/share/bash-completion/completions/snapdedupe": 0o644,
    "/usr/lib/snapper/plugins/50-snapdedupe": 0o755, "/etc/snapdedupe.conf": 0o644,
    **{os.path.join(UNIT_DIR, u): 0o644 for u in UNITS},
}


def tree():
    paths = set()
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.startswith(NOT_WATCHED):
                dirnames[:] = []
                continue
            for n in dirnames + filenames:
                paths.add(os.path.join(dirpath, n))
    return paths


def installed():
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    return p.returncode == 0 and "installed" in p.stdout.decode() and "not-installed" not in p.stdout.decode()


def service_section(path):
    text = open(path).read()
    m = re.search(r"^\[Service\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    lines = [l for l in (m.group(1) if m else "").splitlines() if l.strip() and not l.startswith("#")]
    return lines


def run_out(argv, **kw):
    """argv's exit code and its stdout and stderr together, as text."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, **kw)
    return p.returncode, p.stdout.decode()


class PackageTest:
    """The package's life: built, installed, used through the snapper flow, purged; and
    whatever it left removed afterwards, whatever happened."""

    def __init__(self, build_dir):
        self.build_dir = build_dir
        self.env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        os.environ.pop("SNAPDEDUPE_STATE_DIR", None)  # the installed defaults, all of them
        self.state_existed = os.path.exists(STATE)
        self.made_index = []
        self.figures = {}
        self.before = None

    def body(self, r, ws):
        if installed():
            print(f"  {PACKAGE} is installed (left by an earlier run?): purging it first", flush=True)
            sh("dpkg", "--purge", PACKAGE)
        self.before = tree()
        r.section("cpack -G DEB")
        deb = self.build(r)
        r.section("dpkg -i")
        self.install(r, deb)
        self.check_installed(r)
        r.section("the snapper flow through the installed files")
        self.snapper_flow(r, ws)
        r.section("dpkg --purge")
        self.purge(r)

    def build(self, r):
        for old in glob.glob(os.path.join(self.build_dir, f"{PACKAGE}_*.deb")):
            os.unlink(old)
        rc, out = run_out(["cpack", "-G", "DEB"], cwd=self.build_dir)
        debs = glob.glob(os.path.join(self.build_dir, f"{PACKAGE}_*.deb"))
        r.check("cpack built one .deb", rc == 0 and len(debs) == 1, out[-800:])
        deb = debs[0]
        depends = sh_out("dpkg-deb", "-f", deb, "Depends")
        print(f"  Depends: {depends.strip()}", flush=True)
        for lib in ("libbtrfsutil1", "libboost-program-options1.74.0", "libsqlite3-0",
                    "libxxhash0", "btrfs-progs"):
            r.check(f"Depends names {lib}", re.search(rf"(^|[ ,]){re.escape(lib)}([ ,(]|$)", depends) is not None)
        r.check("/etc/snapdedupe.conf is a conffile",
                sh_out("dpkg-deb", "--info", deb, "conffiles").split() == ["/etc/snapdedupe.conf"])
        return deb

    def install(self, r, deb):
        rc, out = run_out(["dpkg", "-i", deb], env=self.env)
        r.check("dpkg -i: exit 0", rc == 0, out[-800:])
        for path, mode in INSTALLED_FILES.items():
            ok = os.path.isfile(path) and stat.S_IMODE(os.stat(path).st_mode) == mode
            r.check(f"installed {path} ({oct(mode)})", ok)
        st = os.stat(STATE) if os.path.isdir(STATE) else None
        r.check(f"{STATE} exists, mode 0700", st is not None and stat.S_IMODE(st.st_mode) == 0o700)

    def check_installed(self, r):
        ver = subprocess.run(["/usr/sbin/snapdedupe", "--version"], stdout=subprocess.PIPE)
        r.check("the installed binary runs", ver.returncode == 0 and ver.stdout.startswith(b"snapdedupe "))
        man = subprocess.run(["man", "-w", "8", "snapdedupe"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        r.check("man 8 snapdedupe finds the page", man.returncode == 0 and b"snapdedupe.8" in man.stdout,
                man.stderr.decode())
        comp = subprocess.run(["bash", "-c", "source /usr/share/bash-completion/bash_completion 2>/dev/null; "
                               "source /usr/share/bash-completion/completions/snapdedupe && complete -p snapdedupe"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        r.check("bash completion registers for snapdedupe", comp.returncode == 0 and b"_snapdedupe" in comp.stdout,
                comp.stderr.decode())
        r.check("the daily timer is enabled",
                os.path.islink("/etc/systemd/system/timers.target.wants/snapdedupe.timer"))
        rc, out = run_out(["systemd-analyze", "verify", *[os.path.join(UNIT_DIR, u) for u in UNITS]])
        r.check("systemd-analyze verify of every installed unit: clean", rc == 0 and not out.strip(), out)
        r.check("snapdedupe-btrbk.service runs the same [Service] as snapdedupe.service",
                service_section(os.path.join(UNIT_DIR, UNITS[0])) == service_section(os.path.join(UNIT_DIR, UNITS[2])))

    def snapper_flow(self, r, ws):
        def default_db(fs):
            self.made_index.append(os.path.join(STATE, f"{fs_uuid(fs.mnt)}.sqlite"))
            return self.made_index[-1]

        run_flow(r, ws, "/usr/sbin/snapdedupe", STATE, default_db, figures=self.figures)
        r.check("the run used the default index /var/lib/snapdedupe/<fs-uuid>.sqlite",
                self.made_index and os.path.isfile(self.made_index[-1]), str(self.made_index))

    def purge(self, r):
        rc, out = run_out(["dpkg", "--purge", PACKAGE], env=self.env)
        r.check("dpkg --purge: exit 0", rc == 0 and not installed(), out[-800:])
        after = tree()
        extra = sorted(after - self.before)
        index = set(self.made_index) | {m + s for m in self.made_index for s in ("-wal", "-shm")}
        allowed = index | ({STATE} if not self.state_existed else set())
        r.check("nothing left behind but the index", set(extra) <= allowed and any(e in index for e in extra),
                f"left: {extra}")
        gone = sorted(self.before - after)
        r.check("nothing that was there before is gone", gone == [], str(gone[:10]))

    def cleanup(self):
        remove_lock_files([self.figures.get("uuid")])
        if installed():
            subprocess.run(["dpkg", "--purge", PACKAGE], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        for f in self.made_index:  # the index is the test's own residue
            for s in ("", "-wal", "-shm"):
                if os.path.exists(f + s):
                    os.unlink(f + s)
        if not self.state_existed and os.path.isdir(STATE):
            subprocess.run(["rm", "-rf", STATE])


if __name__ == "__main__":
    args, _ = parse_args(PROG, __doc__, options=[
        ("--build-dir", dict(required=True, help="the CMake build directory (cpack runs there)"))])
    test = PackageTest(args.build_dir)
    run_test(PROG, "snapdedupe-test_package", test.body, after=test.cleanup)
