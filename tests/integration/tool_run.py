"""Running the snapdedupe binary in the integration tests (stdlib only).

run_tool() runs it, times it and parses its --json output into a ToolResult;
validate_run_json() checks the schema of a `run --json` object.
Re-exported by btrfs_fixture.py.
"""

import json
import subprocess
import time


# ---------------------------------------------------------------------------
# Running the binary
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

    def stderr_lines(self):
        return [l for l in self.stderr.splitlines() if l.strip() != ""]

    def describe(self):
        return (f"rc={self.rc} t={self.elapsed:.2f}s stderr={self.stderr.strip()[:300]!r} "
                f"stdout={self.stdout.strip()[:300]!r}")


def run_tool(binary, args, timeout=600, preexec=None, prefix=()):
    argv = [str(a) for a in list(prefix) + [binary] + list(args)]
    print(f"  $ {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    r = ToolResult(argv, p.returncode, p.stdout.decode(errors="replace"),
                   p.stderr.decode(errors="replace"), elapsed)
    return r


RUN_KEYS_INT = ["snapshots_processed", "bytes_changed", "bytes_hashed", "duplicate_bytes",
                "deduped_bytes", "differs_bytes", "skipped_writable_bytes", "dedupe_errors",
                "references_moved"]


def validate_run_json(j):
    """Return a list of schema problems of a `run --json` object (empty == OK)."""
    probs = []
    if not isinstance(j, dict):
        return ["not a JSON object"]
    for k in RUN_KEYS_INT:
        if not isinstance(j.get(k), int) or isinstance(j.get(k), bool):
            probs.append(f"{k} missing or not int")
    if not isinstance(j.get("dry_run"), bool):
        probs.append("dry_run missing or not bool")
    sp = j.get("space")
    if not isinstance(sp, dict):
        probs.append("space missing")
    else:
        for k in ("before", "after"):
            v = sp.get(k)
            if not isinstance(v, dict) or not all(isinstance(v.get(x), int) for x in ("data_used", "metadata_used")):
                probs.append(f"space.{k} malformed")
        for k in ("data_freed", "metadata_growth", "net_freed"):
            if not isinstance(sp.get(k), int):
                probs.append(f"space.{k} missing or not int")
    return probs

