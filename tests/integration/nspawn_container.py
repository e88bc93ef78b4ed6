"""A real systemd as PID 1 for test_systemd.py (stdlib only): a cached Debian 12 root filesystem
built with mmdebstrap, booted with systemd-nspawn, entered with nsenter.

What this host needs, and so what Container does (issue 12):
* there is no host systemd and no D-Bus: `--register=no --keep-unit`, no machinectl; commands
  run in the container through `nsenter -t <its PID 1> -a`;
* nspawn keeps its state in /run/systemd/nspawn, which must be a tmpfs, and the host's /run is
  not one: nspawn runs in a private mount namespace (`unshare -m`) with a tmpfs on /run, so
  nothing is created on the host. That namespace holds a copy of every mount present when it
  starts; loop-backed mounts that are not the test's own are unmounted inside it, so it never
  keeps another test's loop device attached;
* the container gets a cgroup of the test's own in each writable hierarchy (cgroup2, and
  name=systemd on a hybrid host), removed at the end;
* nspawn's own seccomp list lacks open_by_handle_at, which every run needs:
  `--system-call-filter=open_by_handle_at`;
* `--private-network`.
The root filesystem is an overlay (the cache below, read-only, under an upper directory in the
test's workspace), so the cache is never written and a run needs no copy of it.

Container.stop() always leaves nothing: poweroff (SIGRTMIN+4 to its systemd), then SIGKILL of
its PID 1 and of nspawn, then everything left in its cgroups, then the cgroups.
"""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from snaptest import proc_mounts

CACHE_DIR = "/var/cache/snapdedupe-tests"
SUITE = "bookworm"
# The rootfs: minbase plus systemd, what the tests drive (snapper, btrbk, man-db for the
# package's man page trigger), and the package's library dependencies (also the sanitizer
# runtimes, for a .deb built from a SNAPDEDUPE_SANITIZE tree). A change here builds a new cache.
ROOTFS_PACKAGES = sorted([
    "systemd", "dbus", "man-db", "btrfs-progs", "snapper", "btrbk",
    "libbtrfsutil1", "libboost-program-options1.74.0", "libsqlite3-0", "libzstd1", "libxxhash0",
    "libisal2", "libsodium23",  # sector checksums for fingerprints (index/fingerprint.cpp)
    "libasan8", "libubsan1",
])
# The machine's apt settings that its mirror needs (its Release files may be old snapshots).
APT_OPTIONS = ['Acquire::Check-Valid-Until "false"', 'Acquire::Check-Date "false"']
ROOTFS_RECIPE = 1  # bump when the way the rootfs is built changes
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg):
    print(f"  {msg}", flush=True)


# ---------------------------------------------------------------------------
# The root filesystem: built once, cached
# ---------------------------------------------------------------------------


def _sources_stanzas():
    """The machine's enabled apt sources for SUITE (its suites, -updates, -security), as deb822
    text: mmdebstrap is given exactly the mirror this machine uses."""
    stanzas = []
    d = "/etc/apt/sources.list.d"
    files = ["/etc/apt/sources.list"] + sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) \
        else ["/etc/apt/sources.list"]
    for path in files:
        if not os.path.isfile(path):
            continue
        text = open(path).read()
        if path.endswith(".sources"):
            for block in text.split("\n\n"):
                fields = {}
                key = None
                for line in block.splitlines():
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    if line[0] in " \t" and key:
                        fields[key] += "\n" + line
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip()] = value.strip()
                suites = fields.get("Suites", "").split()
                if ("deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no"
                        and suites and all(s.split("-")[0] == SUITE for s in suites)):
                    stanzas.append("\n".join(f"{k}: {v}" for k, v in fields.items()))
        elif path == "/etc/apt/sources.list" or path.endswith(".list"):
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) < 4 or words[0] != "deb":
                    continue
                opts = []
                if words[1].startswith("["):
                    while not words[1].endswith("]"):
                        opts.append(words.pop(1))
                    opts.append(words.pop(1))
                uri, suite, comps = words[1], words[2], words[3:]
                if suite.split("-")[0] != SUITE:
                    continue
                stanza = [f"Types: deb", f"URIs: {uri}", f"Suites: {suite}", f"Components: {' '.join(comps)}"]
                for o in " ".join(opts).strip("[] ").split():
                    k, _, v = o.partition("=")
                    if k == "signed-by":
                        stanza.append(f"Signed-By: {v}")
                stanzas.append("\n".join(stanza))
    if not stanzas:
        raise RuntimeError(f"no enabled apt source for {SUITE} in /etc/apt/sources.list(.d): "
                           "the rootfs is built from the machine's configured mirror")
    return "\n\n".join(stanzas) + "\n"


def rootfs_key():
    recipe = {"recipe": ROOTFS_RECIPE, "suite": SUITE, "variant": "minbase", "packages": ROOTFS_PACKAGES}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cached_rootfs():
    """The path of the cached rootfs directory for ROOTFS_PACKAGES, built first if missing (a
    few minutes). Built under a lock to a temporary name and renamed when complete, so a killed
    build never leaves a half cache; what such a build left is removed by the next one. Returns
    (path, seconds spent building or 0)."""
    path = os.path.join(CACHE_DIR, f"rootfs-{rootfs_key()}")
    if os.path.isfile(os.path.join(path, "etc", "os-release")):
        return path, 0.0
    os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
    with open(os.path.join(CACHE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test building it: wait for that one
        if os.path.isfile(os.path.join(path, "etc", "os-release")):
            return path, 0.0
        mounted = [m for _, m, _ in proc_mounts()]
        for name in os.listdir(CACHE_DIR):
            old = os.path.join(CACHE_DIR, name)
            # Leftovers of killed builds, and caches of other package lists (one is kept).
            if name.startswith("rootfs-") and old != path and os.path.isdir(old) \
                    and not any(m == old or m.startswith(old + "/") for m in mounted):
                shutil.rmtree(old, ignore_errors=True)
            elif name.startswith("sources-"):
                os.unlink(old)
        tmp = f"{path}.tmp-{os.getpid()}"
        sources = os.path.join(CACHE_DIR, f"sources-{os.getpid()}.sources")
        with open(sources, "w") as f:
            f.write(_sources_stanzas())
        argv = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
                *[f"--aptopt={o}" for o in APT_OPTIONS], f"--include={','.join(ROOTFS_PACKAGES)}",
                SUITE, tmp, sources]
        log(f"building the container rootfs (once, a few minutes): {' '.join(argv)}")
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out = proc.communicate(timeout=1500)[0].decode(errors="replace")
        except BaseException:
            _end(proc)
            raise
        finally:
            os.unlink(sources)
            if proc.returncode != 0 and os.path.isdir(tmp) \
                    and not any(m.startswith(tmp + "/") for _, m, _ in proc_mounts()):
                shutil.rmtree(tmp, ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed ({proc.returncode}): {out[-1500:]}")
        os.rename(tmp, path)
        return path, time.monotonic() - t0


def _end(proc, grace=10):
    """Terminate a child process, then kill it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# cgroups of the test's own
# ---------------------------------------------------------------------------


def _cgroup_roots():
    """The hierarchies a container's systemd writes to: every cgroup2 mount and the v1
    name=systemd one."""
    roots = []
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
                roots.append(mnt)
    if not roots:
        raise RuntimeError("no cgroup2 nor name=systemd hierarchy mounted under /sys/fs/cgroup")
    return roots


def _cgroup_pids(d):
    pids = []
    for dirpath, _, files in os.walk(d):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
    return pids


CGROUP_PREFIX = "snapdedupe-test-"


def reap_stale_cgroups():
    """Cgroups of containers whose test was killed outright (SIGKILL: no cleanup ran): their
    processes killed, the cgroups removed. A cgroup's name ends with its test's pid."""
    for root in _cgroup_roots():
        for name in sorted(os.listdir(root)):
            d = os.path.join(root, name)
            if not name.startswith(CGROUP_PREFIX) or not os.path.isdir(d):
                continue
            owner = name.rsplit("-", 1)[-1]
            if owner.isdigit() and os.path.exists(f"/proc/{owner}"):
                continue  # its test still runs
            log(f"removing the cgroup of a killed test's container: {d}")
            _kill_and_remove(d, [])


def _kill_and_remove(d, problems):
    """Every process in cgroup `d` (and below) killed, then the cgroups removed."""
    for attempt in range(100):
        pids = _cgroup_pids(d) if os.path.isdir(d) else []
        if not pids:
            break
        if attempt == 0:
            problems.append(f"processes left in {d}: {pids}: killed")
        kill = os.path.join(d, "cgroup.kill")
        if os.path.exists(kill):
            with open(kill, "w") as f:
                f.write("1")
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.1)
    for attempt in range(50):
        if not os.path.isdir(d):
            break
        for dirpath, _, _ in sorted(os.walk(d), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
        if os.path.isdir(d):
            time.sleep(0.1)


# ---------------------------------------------------------------------------
# The container
# ---------------------------------------------------------------------------

# Runs in the private mount namespace, then becomes systemd-nspawn.
# $1 our workspace (its loop mounts stay), $2 lower, $3 upper, $4 work, $5 merged; then nspawn's args.
_START = r"""
set -eu
keep=$1 lower=$2 upper=$3 work=$4 merged=$5
shift 5
# Other loop-backed mounts: this namespace must not keep their devices busy.
awk '$1 ~ /^\/dev\/loop/ {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    case $m in "$keep"/*) ;; *) umount -l "$m" 2>/dev/null || true ;; esac
done
mount -t tmpfs -o mode=0755,size=16m snapdedupe-test-run /run
mkdir -p /run/systemd/nspawn
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
exec systemd-nspawn "$@"
"""


class Container:
    """A booted Debian with systemd as PID 1.

        c = Container(ws, rootfs, "sdtest", binds=[(host_dir, container_dir), ...])
        try:
            c.start()
            c.run("systemctl", "start", "x.service")
        finally:
            c.stop()
    """

    def __init__(self, ws, rootfs, name, binds=()):
        self.ws = ws
        self.rootfs = rootfs
        self.name = name
        self.binds = list(binds)
        self.dir = ws.tmp(f"container-{name}")
        self.console = os.path.join(self.dir, "console.log")
        self.cgroup = f"{CGROUP_PREFIX}{name}-{os.getpid()}"
        self.cgroup_dirs = []
        self.proc = None
        self.pid1 = None
        self._console_file = None

    # -- start -------------------------------------------------------------

    def start(self, timeout=90):
        reap_stale_cgroups()
        for d in ("upper", "work", "root"):
            os.makedirs(os.path.join(self.dir, d))
        for root in _cgroup_roots():
            d = os.path.join(root, self.cgroup)
            os.mkdir(d)
            self.cgroup_dirs.append(d)
        dirs = self.cgroup_dirs

        def enter_cgroups():
            for d in dirs:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        nspawn = ["-b", "--quiet", "--register=no", "--keep-unit", "--private-network",
                  "--system-call-filter=open_by_handle_at", "--link-journal=no", "--resolv-conf=off",
                  "--timezone=off", "--console=read-only", f"--machine={self.name}",
                  f"--directory={os.path.join(self.dir, 'root')}",
                  *[f"--bind={src}:{dst}" for src, dst in self.binds]]
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _START, "sh", self.ws.root,
                self.rootfs, *(os.path.join(self.dir, d) for d in ("upper", "work", "root")), *nspawn]
        self._console_file = open(self.console, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._console_file,
                                     stderr=subprocess.STDOUT, preexec_fn=enter_cgroups)
        deadline = t0 + timeout
        while self.pid1 is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited ({self.proc.returncode}): {self.console_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no container PID 1 after {timeout}s: {self.console_tail()}")
            self.pid1 = self._find_pid1()
            time.sleep(0.05)
        # Until its manager answers and has finished booting (nsenter may come before its
        # mounts are in place: that is no answer either).
        state = ""
        while state in ("", "initializing", "starting"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited ({self.proc.returncode}): {self.console_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the container did not finish booting within {timeout}s ({state!r}): "
                                   f"{self.console_tail()}")
            time.sleep(0.1)
            state = self.run("systemctl", "is-system-running", check=False, timeout=30).stdout.strip()
        log(f"container {self.name}: PID 1 is host pid {self.pid1}, {state} after "
            f"{time.monotonic() - t0:.1f}s")
        return state

    def _find_pid1(self):
        """The container's systemd: the process in our cgroups whose pid in its namespace is 1."""
        for d in self.cgroup_dirs:
            for pid in _cgroup_pids(d):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("NSpid:"):
                                ns = line.split()[1:]
                                if len(ns) >= 2 and ns[-1] == "1":
                                    with open(f"/proc/{pid}/comm") as c:
                                        if c.read().strip() == "systemd":
                                            return pid
                except OSError:
                    pass
        return None

    def console_tail(self, n=2000):
        try:
            with open(self.console, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    # -- inside ------------------------------------------------------------

    def run(self, *argv, input=None, check=True, timeout=300):
        """argv in the container (all its namespaces, its root): CompletedProcess with text
        stdout and stderr."""
        if self.pid1 is None:
            raise RuntimeError("the container is not running")
        p = subprocess.run(["nsenter", "-t", str(self.pid1), "-a", *[str(a) for a in argv]],
                           input=input.encode() if isinstance(input, str) else input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           env={"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "",
                                "SYSTEMD_COLORS": "0", "DEBIAN_FRONTEND": "noninteractive"})
        p.stdout = p.stdout.decode(errors="replace")
        p.stderr = p.stderr.decode(errors="replace")
        if check and p.returncode != 0:
            raise RuntimeError(f"in the container, {' '.join(map(str, argv))}: exit {p.returncode}: "
                               f"{(p.stderr or p.stdout).strip()[-800:]}")
        return p

    def out(self, *argv, **kw):
        return self.run(*argv, **kw).stdout

    def write(self, path, data, mode=0o644):
        """A file in the container (its directory made), written whole."""
        self.run("mkdir", "-p", os.path.dirname(path))
        self.run("sh", "-c", 'cat > "$1.tmp" && chmod "$2" "$1.tmp" && mv -f "$1.tmp" "$1"', "sh", path,
                 f"{mode:o}", input=data)

    def host_path(self, path):
        """A path of the container seen from the host (through its PID 1's root)."""
        return f"/proc/{self.pid1}/root{path}"

    def show(self, unit, *props):
        """`systemctl show` properties of a unit, as a dict."""
        out = self.out("systemctl", "show", unit, *[f"--property={p}" for p in props])
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    # -- stop --------------------------------------------------------------

    def stop(self, grace=30):
        """Poweroff, then kill; the cgroups removed. Safe to call on any path, more than once.
        SIGTERM, SIGINT and SIGHUP wait until it is done."""
        signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            self._stop(grace)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _stop(self, grace):
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            if self.pid1 is not None:
                try:
                    os.kill(self.pid1, signal.SIGRTMIN + 4)  # systemd: poweroff
                except ProcessLookupError:
                    pass
            else:
                self.proc.terminate()  # nspawn: stops what it started
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                problems.append(f"container {self.name} did not power off within {grace}s: killed")
                if self.pid1 is not None:
                    try:
                        os.kill(self.pid1, signal.SIGKILL)  # its whole pid namespace goes
                    except ProcessLookupError:
                        pass
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.returncode not in (0, None):
            log(f"systemd-nspawn exited {self.proc.returncode}")
        self.pid1 = None
        if self._console_file is not None:
            self._console_file.close()
            self._console_file = None
        for d in self.cgroup_dirs:
            _kill_and_remove(d, problems)
        self.cgroup_dirs = [d for d in self.cgroup_dirs if os.path.isdir(d)]
        for p in problems:
            print(f"  cleanup problem: {p}", file=sys.stderr, flush=True)

    def leaks(self):
        """After stop(): what of the container is left (processes, cgroups)."""
        left = []
        if self.proc is not None and self.proc.poll() is None:
            left.append(f"systemd-nspawn pid {self.proc.pid}")
        left += [f"cgroup {d}" for d in self.cgroup_dirs if os.path.isdir(d)]
        return left
