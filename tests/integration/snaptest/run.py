"""Running commands and the snapdedupe binary: sh(), run_tool() and its JSON (ToolResult), and
validate_run_json() with the dedupe counters read from the C++ header."""

import errno
import fcntl
import functools
import json
import os
import re
import select
import struct
import subprocess
import termios
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def sh(*argv, check=True, input=None, capture=True, timeout=600):
    """Run a command (argv list), return CompletedProcess (bytes)."""
    argv = [str(a) for a in argv]
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None, timeout=timeout)
    if check and p.returncode != 0:
        err = (p.stderr or b"").decode(errors="replace").strip()
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(argv)}: {err}")
    return p


def sh_out(*argv, **kw):
    return sh(*argv, **kw).stdout.decode(errors="replace")


# ---------------------------------------------------------------------------
# The binary: run it, parse its JSON, check a run's report
# ---------------------------------------------------------------------------


class ToolResult:
    def __init__(self, argv, rc, stdout, stderr, elapsed):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.json = None
        self.json_error = None
        try:
            self.json = json.loads(stdout) if stdout.strip() else None
            if self.json is None:
                self.json_error = "empty stdout"
        except ValueError as e:
            self.json_error = str(e)

    def get(self, key, default=None):
        """A top-level field of the JSON object, or default."""
        return self.json.get(key, default) if isinstance(self.json, dict) else default

    def num(self, key, sub=None):
        """An integer field (`key`, or `key`.`sub`) of the JSON object, or None."""
        v = self.get(key)
        if sub is not None:
            v = v.get(sub) if isinstance(v, dict) else None
        return v if is_int(v) else None

    def stderr_lines(self):
        return [l for l in self.stderr.splitlines() if l.strip() != ""]

    def describe(self):
        return (f"rc={self.rc} t={self.elapsed:.2f}s stderr={self.stderr.strip()[:300]!r} "
                f"stdout={self.stdout.strip()[:300]!r}")


def run_tool(binary, args, timeout=600, prefix=()):
    argv = [str(a) for a in list(prefix) + [binary] + list(args)]
    print(f"  $ {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return ToolResult(argv, p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"), time.monotonic() - t0)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


COUNTERS_HEADER = os.path.join(REPO, "plugin", "dedupe", "dedupe_counters.h")


@functools.lru_cache(maxsize=None)
def dedupe_counter_names():
    """The dedupe counters every report carries, from their one table in the C++ header: the
    `X(name, "meaning")` lines of `#define SNAPDEDUPE_DEDUPE_COUNTERS(X)`."""
    with open(COUNTERS_HEADER) as f:
        lines = f.read().splitlines()
    names = []
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*define\s+SNAPDEDUPE_DEDUPE_COUNTERS\s*\(\s*X\s*\)", line):
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i, line = i + 1, lines[i + 1]
                m = re.match(r"^\s*X\((\w+),", line)
                if m:
                    names.append(m.group(1))
            break
    if not names:
        raise RuntimeError(f"no SNAPDEDUPE_DEDUPE_COUNTERS(X) lines X(name, ...) in {COUNTERS_HEADER}")
    return tuple(names)


RUN_KEYS_INT = ("snapshots_processed", "bytes_changed", "bytes_hashed")


def validate_run_json(j):
    """Return a list of schema problems of a `run --json` object (empty == OK): every dedupe
    counter an integer at the top level and in each entry of `snapshots`, and the space figures."""
    if not isinstance(j, dict):
        return ["not a JSON object"]
    counters = dedupe_counter_names()
    probs = [f"{k} missing or not int" for k in RUN_KEYS_INT + counters if not is_int(j.get(k))]
    if not isinstance(j.get("dry_run"), bool):
        probs.append("dry_run missing or not bool")
    snaps = j.get("snapshots")
    if not isinstance(snaps, list) or not all(isinstance(s, dict) for s in snaps):
        probs.append("snapshots missing or not a list of objects")
    else:
        probs += [f"snapshots[{i}].{k} missing or not int" for i, s in enumerate(snaps) for k in counters
                  if not is_int(s.get(k))]
    sp = j.get("space")
    if not isinstance(sp, dict):
        return probs + ["space missing"]
    for k in ("before", "after"):
        v = sp.get(k)
        if not isinstance(v, dict) or not all(isinstance(v.get(x), int) for x in ("data_used", "metadata_used")):
            probs.append(f"space.{k} malformed")
    for k in ("data_freed", "metadata_growth", "net_freed"):
        if not isinstance(sp.get(k), int):
            probs.append(f"space.{k} missing or not int")
    return probs


# ---------------------------------------------------------------------------
# The test seams: hidden options of `run` (plugin/test_seams.h)
# ---------------------------------------------------------------------------


def with_seam(binary, args, *seam):
    """argv of `binary run <seam options> <the rest of args>` (args start with "run")."""
    args = [str(a) for a in args]
    if not args or args[0] != "run":
        raise ValueError(f"the test seams are options of `run`: {args}")
    return [str(binary), args[0]] + [str(s) for s in seam] + args[1:]


def _blocked_on(pid, path):
    """Is the process blocked in a system call on an fd that is `path` (a read of the seam's
    FIFO)? /proc/PID/syscall: "NR ARG1 ..." while blocked, "running" otherwise."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
        return len(fields) > 2 and os.readlink(f"/proc/{pid}/fd/{int(fields[1], 16)}") == path
    except (OSError, ValueError):
        return False


def _unread(fd):
    """Bytes written to a pipe and not read yet (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def run_with_seam(binary, args, fifo, on_pause):
    """Runs `snapdedupe run --test-pause-before-dedupe FIFO ...` (args start with "run"). At each
    pause (before a batch's dedupe calls, also those that finish the journal) calls
    on_pause(n), n = 1, 2, ..., then releases the run. Returns (ToolResult, pause times).

    Each pause, the run opens the FIFO, reads one line and closes it. Our write end stays open
    until the run has read the line and then either closed its end (POLLERR) or already opened
    the FIFO again and waits in a read for the next pause's line: the next pause, counted once."""
    fifo = os.path.abspath(fifo)
    os.mkfifo(fifo)
    argv = with_seam(binary, args, "--test-pause-before-dedupe", fifo)
    print(f"  $ {' '.join(argv)}", flush=True)
    pauses, t0, fd = [], time.monotonic(), None
    with open(fifo + ".out", "w+b") as fo, open(fifo + ".err", "w+b") as fe:
        proc = subprocess.Popen(argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                if fd is None:
                    try:   # succeeds only while the run has the FIFO open (or is opening it) to read
                        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    except OSError as e:
                        if e.errno != errno.ENXIO:
                            raise
                        time.sleep(0.005)
                        continue
                pauses.append(time.monotonic())
                on_pause(len(pauses))
                os.write(fd, b"go\n")
                while _unread(fd) and proc.poll() is None:   # until the run has read the line
                    time.sleep(0.002)
                po = select.poll()
                po.register(fd, select.POLLERR)
                while proc.poll() is None:
                    if po.poll(0):   # the run closed its end: the next pause opens it again
                        os.close(fd)
                        fd = None
                        break
                    if _blocked_on(proc.pid, fifo):   # it opened it again already: the next pause
                        break
                    time.sleep(0.002)
        finally:
            if fd is not None:
                os.close(fd)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        fo.seek(0)
        fe.seek(0)
        return ToolResult(argv, proc.returncode, fo.read().decode(errors="replace"),
                          fe.read().decode(errors="replace"), time.monotonic() - t0), pauses
