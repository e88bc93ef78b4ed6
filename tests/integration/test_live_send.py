#!/usr/bin/env python3
"""Integration test (issue 4): live subvolumes and btrfs send, each part on its own loop btrfs:
1. send size: `btrfs send -p N N+1` after a run within 1% + 4 KiB of an identical fs without one;
2. concurrent send: a send held through a dedupe phase and send|receive loops succeed (EAGAIN
   ones when retried) and receive correct copies; busy extents are deferred, counted, freed;
   2b: a send outlasting the run: bounded end-of-run retry, the next run frees the rest;
3. concurrent writer: the live file holds exactly what the writer wrote, DIFFERS is counted;
4. never a net loss: 30 snapshots of 4-16 KiB duplicates, data + metadata (every copy);
5. dry run prints the plan, changes nothing; 6. integrity of every snapshot and live file.
Usage: test_live_send.py --snapdedupe BINARY [--only 1,2,3,4]. Needs root; last line
"N passed, M failed"; exit status non-zero on any failure.
"""

import os
import random
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from snaptest import (GiB, KiB, MiB, SeriesBuilder, check_integrity, df, main, manifest,  # noqa: E402
                      manifest_all, run_tool, run_with_seam, sh)

PROG = "test_live_send.py"
SEND_SLACK = 4 * KiB   # absolute slack on the 1% send-size bound
END_RETRY_BOUND = 20   # s: README: a busy extent is retried at the end "up to about 13 s"
SHOWN = ("deduped_bytes", "differs_bytes", "busy_deferred", "skipped_partial_bytes", "skipped_cost_bytes",
         "skipped_writable_bytes", "extents_planned", "extents_moved", "predicted_freed_bytes",
         "predicted_metadata_bytes", "references_moved")
INTEGRITY = "{label}: every file of every snapshot and of the live subvolume hashes the same ({files} files)"


def contents(root):
    """relpath -> (kind, size, sha256): what a received copy must reproduce."""
    return {k: (v[0],) + ((v[5], v[-1]) if v[0] == "file" else ()) for k, v in manifest(root).items()}


def send_size(parent, snap):   # the streams here are a few MiB: count them in memory
    p = subprocess.run(["btrfs", "send", "-q", "-p", parent, snap], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return (len(p.stdout) if p.returncode == 0 else None), p.stderr.decode(errors="replace")


def receive(send, dest):
    """Feeds a running `btrfs send` (stdout=PIPE) into `btrfs receive dest`; '' or the error."""
    os.makedirs(dest, exist_ok=True)
    recv = subprocess.run(["btrfs", "receive", "-q", dest], stdin=send.stdout, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    send.stdout.close()
    err = send.stderr.read().decode(errors="replace") + recv.stderr.decode(errors="replace")
    return "" if send.wait() == 0 and recv.returncode == 0 else (err.strip() or "failed")


def check_run(r, label, res, dry_run=False):
    r.check(f"{label}: exit 0, one JSON object, dry_run == {dry_run}, dedupe_errors == 0",
            res.rc == 0 and isinstance(res.json, dict) and res.json.get("dry_run") is dry_run
            and res.num("dedupe_errors") == 0, res.describe())
    if isinstance(res.json, dict):
        print(f"  report ({res.elapsed:.1f}s): " + ", ".join(f"{k}={res.num(k)}" for k in SHOWN) +
              f", space={res.json.get('space')}", flush=True)


def check_same(r, label, before, paths, skip=None):
    check_integrity(r, INTEGRITY.replace("{label}", label), before, paths, skip=skip)


# --------------------------------------------------------------------------- parts 1 and 5
def build_send_fs(fs, seed):
    b = SeriesBuilder(fs, seed=seed)
    for rel, size in (("big.bin", 24 * MiB), ("mid.bin", 8 * MiB), ("a.bin", MiB), ("docs/c.bin", 3 * MiB + 123)):
        b.write_new(rel, size)
    b.snapshot()
    b.copy_noreflink("big.bin", "copies/big_copy.bin")   # live and s2 hold the copy
    b.identical_rewrite("mid.bin")                       # live and s2 hold the rewrite
    b.write_new("new1.bin", 2 * MiB)
    b.snapshot()
    return b


def change_and_snapshot(b):
    """The same change on A and B (same rng state): overwrite 1 MiB inside the deduped copy,
    a new file, an append; then snapshot N+1."""
    with open(b.p("copies/big_copy.bin"), "r+b") as f, open(b.p("a.bin"), "ab") as g:
        f.seek(4 * MiB)
        f.write(b.rand(MiB))
        g.write(b.rand(100 * KiB))
    b.write_new("new2.bin", 2 * MiB)
    return b.snapshot()


def dry_run_plan(r, binary, fa, db, known, u0):
    """5. The dry run's plan adds up to its prediction; nothing changes."""
    res = run_tool(binary, ["run", "--db", db, "--dry-run", "--json", fa.path("snaps")])
    check_run(r, "dry run --json", res, dry_run=True)
    plans = [p for s in (res.json or {}).get("snapshots", []) for p in s.get("plan", [])]
    r.check("dry run: non-empty plan; entries have int extent/bytes/references, references >= 2 "
            "(snapshot + live)", plans and all(all(isinstance(p.get(k), int) for k in ("extent", "bytes", "references"))
                                               and p["references"] >= 2 for p in plans), str(plans[:3]))
    total = sum(p.get("bytes", 0) for p in plans)
    r.check("dry run: sum of plan bytes == predicted_freed_bytes, within 5% of the known duplicates",
            total == res.num("predicted_freed_bytes") and abs(total - known) <= 0.05 * known,
            f"plan {total} predicted {res.num('predicted_freed_bytes')} known {known}")
    hum = run_tool(binary, ["run", "--db", db, "--dry-run", fa.path("snaps")])
    r.check("dry run (human): exit 0, prints 'would free extent'", hum.rc == 0 and "would free extent" in hum.stdout,
            hum.describe())
    u1 = df(fa.mnt)
    r.check("dry run: data used unchanged, metadata within 1 MiB",
            u1["data_used"] == u0["data_used"] and abs(u1["metadata_used"] - u0["metadata_used"]) <= MiB,
            f"{u0} -> {u1}")
    return u1


def part_send_size(r, ws, binary):
    r.section("1. send size after a run == without a run; 5. dry run prints the plan")
    fa, fb = ws.make_btrfs("sendA", size=GiB), ws.make_btrfs("sendB", size=GiB)
    ba, bb = build_send_fs(fa, 4242), build_send_fs(fb, 4242)
    known, paths, db = ba.known_dup_bytes, ba.snapshots + [ba.live], ws.tmp("send.sqlite")
    before = manifest_all(paths)          # read first: atime updates land before we measure
    u0 = df(fa.mnt)
    print(f"  known duplicate bytes {known}; usage {u0}", flush=True)
    u1 = dry_run_plan(r, binary, fa, db, known, u0)
    check_same(r, "dry run", before, paths)

    res = run_tool(binary, ["run", "--db", db, "--json", fa.path("snaps")])
    check_run(r, "run A", res)
    freed = u1["data_used"] - df(fa.mnt)["data_used"]
    r.check("run A: df Data used dropped by the duplicate bytes within 5%, skipped_writable_bytes == 0",
            abs(freed - known) <= 0.05 * known and res.num("skipped_writable_bytes") == 0,
            f"freed {freed} known {known} skipped_writable {res.num('skipped_writable_bytes')}")
    check_same(r, "run A", before, paths)

    sa, sb = change_and_snapshot(ba), change_and_snapshot(bb)
    (na, ea), (nb, eb) = send_size(ba.snapshots[-2], sa), send_size(bb.snapshots[-2], sb)
    print(f"  btrfs send -p N N+1: A (run) {na} bytes, B (no run) {nb} bytes", flush=True)
    r.check(f"send -p N N+1: A within 1% + {SEND_SLACK} B of B",
            None not in (na, nb) and abs(na - nb) <= 0.01 * nb + SEND_SLACK, f"A {na} B {nb} {ea} {eb}")
    same = [{os.path.basename(p): contents(p) for p in x.snapshots + [x.live]} for x in (ba, bb)]
    r.check("A and B hold the same bytes after the change (snapshots + live)", same[0] == same[1])


# --------------------------------------------------------------------------- part 2
def send_chain(snaps, dest, log, round_no):
    """Full send of the first snapshot, then each incremental, into dest; stops at a failure."""
    for i, snap in enumerate(snaps):
        t0 = time.monotonic()
        send = subprocess.Popen(["btrfs", "send", "-q"] + (["-p", snaps[i - 1]] if i else []) + [snap],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = receive(send, dest)
        log.append({"round": round_no, "snap": os.path.basename(snap), "t0": t0, "t1": time.monotonic(),
                    "ok": not err, "eagain": "temporarily unavailable" in err, "err": err})
        if err:
            return False
    return True


class ConcurrentSend:
    """Part 2: a snapshot series deduped while btrfs send | receive runs against it."""

    def __init__(self, r, ws, binary):
        self.r, self.ws, self.binary = r, ws, binary
        self.fs, self.dst = ws.make_btrfs("csend", size=2 * GiB), ws.make_btrfs("crecv", size=3 * GiB)
        self.b = b = SeriesBuilder(self.fs, seed=9090)
        self.big, many = [f"big/f{i}" for i in range(8)], [f"many/m{i}" for i in range(40)]
        for rel in self.big + many:   # s1: 8 x 16 MiB, 40 x 256 KiB
            b.write_new(rel, 16 * MiB if rel in self.big else 256 * KiB)
        b.snapshot()
        for rel in self.big[:4] + many:   # s2: copies of 4 big and of all small files
            b.copy_noreflink(rel, "copies/" + rel)
        b.snapshot()
        for rel in self.big[4:]:   # s3: identical rewrites
            b.identical_rewrite(rel)
        b.snapshot()
        for rel in self.big[:4]:   # s4: second copies
            b.copy_noreflink(rel, "copies2/" + rel)
        b.snapshot()
        self.snaps, self.known, self.db = list(b.snapshots), b.known_dup_bytes, ws.tmp("csend.sqlite")
        self.paths = self.snaps + [b.live]
        self.before = manifest_all(self.paths)
        self.src = {os.path.basename(s): contents(s) for s in self.snaps}
        self.u0 = df(self.fs.mnt)
        print(f"  {len(self.snaps)} snapshots, known duplicate bytes {self.known}, usage {self.u0}", flush=True)
        self.log, self.stop, self.started, self.rounds, self.hold = [], threading.Event(), threading.Event(), {}, {}
        self.th = threading.Thread(target=self.sender, daemon=True)

    def run(self, label):
        res = run_tool(self.binary, ["run", "--db", self.db, "--json", self.fs.path("snaps")])
        check_run(self.r, label, res)
        return res

    def sender(self):   # send|receive chains of all snapshots, round after round, while the run lasts
        k = 0
        while k < 3 and (k == 0 or not self.stop.is_set()):
            k += 1
            self.started.set()
            self.rounds[k] = (self.dst.path(f"r{k}"), send_chain(self.snaps, self.dst.path(f"r{k}"), self.log, k))

    def on_pause(self, n):
        hold = self.hold
        if n == 1:     # before s2's dedupe: a send of s2 that stalls (nobody reads it yet), loops
            hold["send"] = subprocess.Popen(["btrfs", "send", "-q", self.snaps[1]], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)
            self.th.start()
            self.started.wait(10)
            time.sleep(0.5)
        elif n == 2:   # before s3's dedupe: receive the held send in the background
            hold["t"] = threading.Thread(target=lambda: hold.update(err=receive(hold["send"], self.dst.path("held"))))
            hold["t"].start()

    def run_with_sends(self):
        """Run 1, paused before each dedupe phase to start the sends. Returns (res, pauses, end)."""
        hold = self.hold
        try:
            res, pauses = run_with_seam(self.binary, ["run", "--db", self.db, "--json", self.fs.path("snaps")],
                                        self.ws.tmp("csend.fifo"), self.on_pause)
        finally:
            t_end = time.monotonic()
            self.stop.set()
            if "send" in hold and "t" not in hold:   # the run never paused twice: drain it now
                hold["err"] = receive(hold["send"], self.dst.path("held"))
            for t in (t for t in (self.th, hold.get("t")) if t is not None and t.ident is not None):
                t.join(600)
        check_run(self.r, "run 1", res)
        return res, pauses, t_end

    def check_sends(self, res, pauses, t_end):
        r, log, hold = self.r, self.log, self.hold
        overlap = [x for x in log if pauses and x["t0"] < t_end and x["t1"] > pauses[0]]
        print(f"  {len(pauses)} pauses; held send of s2 spanned s2's dedupe; loops: {len(log)} sends, {len(overlap)} "
              f"overlapped the dedupe window, {sum(x['eagain'] for x in log)} got EAGAIN; "
              f"busy_deferred={res.num('busy_deferred')}", flush=True)
        r.check("the seam paused the run before s2's and s3's dedupe", len(pauses) >= 2, str(len(pauses)))
        if "send" in hold:
            r.check("held send of s2 succeeded and its copy hashes like s2", hold.get("err") == "" and
                    contents(self.dst.path("held", "src.2")) == self.src["src.2"], str(hold.get("err"))[:200])
        r.check("every loop send succeeded or failed only with EAGAIN", all(x["ok"] or x["eagain"] for x in log),
                "; ".join(x["err"][:120] for x in log if not (x["ok"] or x["eagain"])))
        for k, (dest, complete) in sorted(self.rounds.items()):
            if not complete:   # EAGAIN is documented kernel behaviour: retry now no dedupe runs
                dest = self.dst.path(f"retry{k}")
                complete = send_chain(self.snaps, dest, log, -k)
                r.check(f"round {k}: retried after the run, every send succeeds", complete, log[-1]["err"][:200])
            if complete:
                r.check(f"round {k}: received snapshots hash like their sources",
                        {s: contents(os.path.join(dest, s)) for s in self.src} == self.src)
        check_same(r, "after concurrent send", self.before, self.paths)

    def next_run(self, res):
        """Run 2 retries what run 1 deferred; together they free the duplicates."""
        r, busy, known = self.r, res.num("busy_deferred"), self.known
        res2 = self.run("run 2 (no new snapshots)")
        r.check("run 2: snapshots_processed == 0, busy_deferred == 0",
                res2.num("snapshots_processed") == 0 and res2.num("busy_deferred") == 0, res2.describe())
        freed = self.u0["data_used"] - df(self.fs.mnt)["data_used"]
        pred = (res.num("predicted_freed_bytes") or 0) + (res2.num("predicted_freed_bytes") or 0)
        r.check("data used dropped by the duplicate bytes within 5%", abs(freed - known) <= 0.05 * known,
                f"{freed} vs {known}")
        r.check("busy_deferred counts the extents left for the next run (run 1's == extents run 2 retried)",
                busy == res2.num("extents_planned"), f"run 1 busy_deferred {busy}, run 2 extents_planned "
                f"{res2.num('extents_planned')}")
        r.check("predicted_freed_bytes (runs 1+2) within 5% of measured data freed",
                abs(pred - freed) <= 0.05 * freed, f"predicted {pred} measured {freed}")
        check_same(r, "after run 2", self.before, self.paths)

    def send_outlasting_run(self):
        """2b: a send of s5 running throughout run 3: bounded retries; run 4 frees the rest."""
        r, b, snaps = self.r, self.b, self.snaps
        for rel in self.big[4:7]:
            b.copy_noreflink(rel, "copies3/" + rel)
        snaps.append(b.snapshot())
        paths = snaps + [b.live]
        before, known3 = manifest_all(paths), b.known_dup_bytes - self.known
        u2 = df(self.fs.mnt)
        held = subprocess.Popen(["btrfs", "send", "-q", snaps[-1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            res3 = run_tool(self.binary, ["run", "--db", self.db, "--json", self.fs.path("snaps")])
        finally:
            err = receive(held, self.dst.path("held5"))
        check_run(r, "run 3 (send of s5 running throughout)", res3)
        r.check("held send of s5 succeeded and its copy hashes like s5",
                err == "" and contents(self.dst.path("held5", "src.5")) == contents(snaps[-1]), err[:200])
        busy3 = res3.num("busy_deferred")
        r.check("run 3: busy_deferred > 0", (busy3 or 0) > 0, str(busy3))
        r.check(f"run 3: took <= {END_RETRY_BOUND} s (busy retries are bounded per run)",
                res3.elapsed <= END_RETRY_BOUND, f"{res3.elapsed:.1f}s")
        res4 = self.run("run 4 (send finished)")
        freed = u2["data_used"] - df(self.fs.mnt)["data_used"]
        r.check("run 4: busy_deferred == 0, data freed within 5% of the copies",
                res4.num("busy_deferred") == 0 and abs(freed - known3) <= 0.05 * known3, f"{freed} vs {known3}")
        r.check("run 3's busy_deferred == extents run 4 retried", busy3 == res4.num("extents_planned"),
                f"busy_deferred {busy3}, retried {res4.num('extents_planned')}")
        check_same(r, "after runs 3 and 4", before, paths)


def part_concurrent_send(r, ws, binary):
    r.section("2. btrfs send | receive while the run dedupes (a held send of s2 + send loops)")
    t = ConcurrentSend(r, ws, binary)
    res, pauses, t_end = t.run_with_sends()
    t.check_sends(res, pauses, t_end)
    t.next_run(res)
    r.section("2b. a send that outlasts the run: bounded end-of-run retry, the next run frees the rest")
    t.send_outlasting_run()


# --------------------------------------------------------------------------- part 3
def part_concurrent_writer(r, ws, binary):
    r.section("3. a writer changes the live duplicate between hashing and dedupe, and during it")
    fs = ws.make_btrfs("writer", size=GiB)
    b = SeriesBuilder(fs, seed=3131)
    b.write_new("data/f.bin", 16 * MiB)
    b.write_new("other.bin", 2 * MiB)
    b.snapshot()
    b.copy_noreflink("data/f.bin", "l.bin")       # live and s2 hold a copy of s1's f.bin
    b.snapshot()
    paths, before = b.snapshots + [b.live], manifest_all(b.snapshots + [b.live])
    with open(b.p("l.bin"), "rb") as f:
        expected = bytearray(f.read())
    rng, stop, writes = random.Random(77), threading.Event(), [0]
    fd = os.open(b.p("l.bin"), os.O_RDWR)

    def put(off, data):
        os.pwrite(fd, data, off)
        expected[off:off + len(data)] = data

    def writer():
        while not stop.is_set():
            off = rng.randrange(0, len(expected) // 4096) * 4096
            put(off, rng.randbytes(min(rng.choice((4, 64, 256)) * KiB, len(expected) - off)))
            writes[0] += 1
            if writes[0] % 16 == 0:
                os.fdatasync(fd)
            time.sleep(0.001)

    th = threading.Thread(target=writer, daemon=True)

    def on_pause(n):
        if n == 1:
            put(4 * MiB, rng.randbytes(MiB))   # hashed and planned already; not yet deduped
            th.start()

    try:
        res, pauses = run_with_seam(binary, ["run", "--db", ws.tmp("writer.sqlite"), "--json", fs.path("snaps")],
                                    ws.tmp("writer.fifo"), on_pause)
    finally:
        stop.set()
        if th.ident is not None:
            th.join(60)
        os.close(fd)
    check_run(r, "writer run", res)
    print(f"  {len(pauses)} pauses, {writes[0]} writes during the run", flush=True)
    r.check("the seam paused the run before dedupe", len(pauses) >= 1, str(len(pauses)))
    with open(b.p("l.bin"), "rb") as f:
        r.check("the live file holds exactly what the writer wrote", f.read() == bytes(expected))
    r.check("differs_bytes > 0 (the kernel compared and refused)", (res.num("differs_bytes") or 0) > 0,
            str(res.num("differs_bytes")))
    check_same(r, "writer run (l.bin checked against the writer)", before, paths, skip=b.p("l.bin"))


# --------------------------------------------------------------------------- part 4
def part_small_files(r, ws, binary):
    r.section("4. 30 snapshots of small-file duplicates: data + metadata never grows")
    fs = ws.make_btrfs("small", size=GiB)
    b, rng, pool = SeriesBuilder(fs, seed=5151), random.Random(5), [f"pool/p{i:03d}" for i in range(240)]
    for p in pool:
        b.write_new(p, rng.randrange(4 * KiB, 16 * KiB + 1))
    b.write_new("big0.bin", 2 * MiB)
    b.write_new("big1.bin", 2 * MiB)
    b.snapshot()
    for step in range(2, 31):   # a few dozen copies and a few identical rewrites per snapshot
        os.makedirs(b.p(f"c{step}"))
        sh("cp", "--reflink=never", *[b.p(p) for p in rng.sample(pool, 30)], b.p(f"c{step}"))
        if step in (10, 20):   # two large duplicates among the small ones: worth moving
            b.copy_noreflink(f"big{step // 20}.bin", f"c{step}/big.bin")
        for p in rng.sample(pool, 5):
            b.identical_rewrite(p)
        b.snapshot()
    paths, before = b.snapshots + [b.live], manifest_all(b.snapshots + [b.live])
    u0 = df(fs.mnt)
    res = run_tool(binary, ["run", "--db", ws.tmp("small.sqlite"), "--json", fs.path("snaps")])
    check_run(r, "small-files run", res)
    u1 = df(fs.mnt)
    print(f"  usage {u0} -> {u1}: metadata growth {u1['metadata_used'] - u0['metadata_used']}", flush=True)
    r.check("data + metadata used (every copy counted) did not grow", u1["raw_used"] <= u0["raw_used"],
            f"{u0['raw_used']} -> {u1['raw_used']}")
    r.check("the two 2 MiB duplicates were still freed", u0["data_used"] - u1["data_used"] >= 0.95 * 4 * MiB,
            f"data freed {u0['data_used'] - u1['data_used']}")
    check_same(r, "small-files run", before, paths)


def only(args, parts):
    return [parts[int(k) - 1] for k in args.only.split(",")] if args.only else parts


if __name__ == "__main__":
    main(PROG, __doc__, [part_send_size, part_concurrent_send, part_concurrent_writer, part_small_files],
         options=[("--only", dict(help="comma-separated parts (1,2,3,4), for debugging"))], select=only)
