#!/usr/bin/env python3
"""Integration test: `snapdedupe diff OLD NEW --json` against an independent oracle
built from `btrfs send --no-data -p OLD NEW | btrfs receive --dump`, plus a
ground-truth byte comparison of OLD and NEW.

    python3 tests/integration/test_diff_oracle.py --snapdedupe build/snapdedupe
    python3 tests/integration/test_diff_oracle.py --selftest-fixture   # oracle only, no binary

Needs root. Ends with "N passed, M failed"; exit status non-zero on any failure.
"""

import os
import shutil
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from btrfs_fixture import (  # noqa: E402
    GiB, KiB, MiB, SendOracle, SeriesBuilder, check_binary_arg, common_argparser,
    ground_truth_changes, merge_ranges, require_root, run_parts, run_test, run_tool, send_dump, sh)

PROG = "test_diff_oracle.py"


def build_series(fs):
    """Snapshot series exercising renames (files and dirs), hard links, unlinks, rmdirs,
    new dirs, truncates, appends, clones, overwrites, name swaps (orphans), odd names."""
    b = SeriesBuilder(fs, seed=4242)
    P = b.p

    def overwrite(rel, off, n):
        with open(P(rel), "r+b") as f:
            f.seek(off)
            f.write(b.rand(n))

    def append(rel, n):
        with open(P(rel), "ab") as f:
            f.write(b.rand(n))

    # ---- s1 -------------------------------------------------------------
    b.write_new("a/f1", 300 * KiB)
    b.write_new("a/b/f2", MiB + 5)
    b.write_new("a/b/c/f3", 200 * KiB)
    b.write_new("t1", 2 * MiB)
    b.write_new("t2", 700 * KiB)
    b.write_new("sp ace.txt", 64 * KiB)
    b.write_new("é.bin", 100 * KiB)
    b.write_new("hl_a", 256 * KiB)
    os.link(P("hl_a"), P("hl_b"))
    b.write_new("sw1", 128 * KiB)
    b.write_new("sw2", 160 * KiB)
    b.write_new("tr_shrink", MiB)
    b.write_new("tr_grow", 100 * KiB + 3)
    b.write_new("app", 500 * KiB + 1)
    b.write_new("ovw", 4 * MiB)
    b.write_new("clsrc", 3 * MiB)
    b.write_new("rmd/x", 50 * KiB)
    os.makedirs(P("rmd/empty"))
    b.write_new("d1/one", 40 * KiB)
    b.write_new("d2/two", 48 * KiB)
    b.write_new("tiny", 100)
    os.symlink("t1", P("sym"))
    b.snapshot()
    # ---- s2 -------------------------------------------------------------
    os.rename(P("t1"), P("a/t1_moved"))                 # file rename, no data
    os.rename(P("a/b"), P("a/bb"))                      # dir rename ...
    overwrite("a/bb/f2", 300 * KiB, 8 * KiB)            # ... and a write below it
    os.link(P("t2"), P("a/t2_link"))                    # new hard link ...
    append("t2", 10 * KiB)                              # ... to a modified file
    os.unlink(P("a/f1"))
    shutil.rmtree(P("rmd"))                             # unlink + rmdir
    b.write_new("n/m/new1", 90 * KiB)                   # new dirs with files
    b.write_new("n/new2", 33)
    os.truncate(P("tr_shrink"), 300 * KiB)
    os.truncate(P("tr_grow"), MiB)
    append("app", 200 * KiB)
    sh("cp", "--reflink=always", P("clsrc"), P("clone1"))
    overwrite("ovw", MiB, 64 * KiB)
    os.rename(P("sw1"), P("swtmp"))                     # swap names -> orphans in the stream
    os.rename(P("sw2"), P("sw1"))
    os.rename(P("swtmp"), P("sw2"))
    overwrite("sw1", 0, 4 * KiB)
    overwrite("hl_a", 8 * KiB, 4 * KiB)                 # write to a hard-linked file
    overwrite("tiny", 10, 20)                           # inline extent
    b.snapshot()
    # ---- s3 -------------------------------------------------------------
    os.rename(P("a"), P("z"))                           # rename of an ancestor dir
    overwrite("z/bb/c/f3", 4 * KiB, 4 * KiB)            # deep write below it
    shutil.rmtree(P("n/m"))                             # dir replaced by a file of the same name
    b.write_new("n/m", 70 * KiB)
    os.rename(P("sp ace.txt"), P("new name é.txt"))
    append("new name é.txt", 5 * KiB)
    os.makedirs(P("q"))
    os.rename(P("z/bb"), P("q/bb"))                     # dir moved into a new dir
    overwrite("q/bb/f2", 0, 4 * KiB)
    os.unlink(P("clsrc"))                               # clone source gone
    overwrite("clone1", 2 * MiB, 16 * KiB)
    os.makedirs(P("r"))
    sh("cp", "--reflink=always", P("ovw"), P("r/ovw_clone"))
    overwrite("r/ovw_clone", 12 * KiB, 4 * KiB)         # clone + write
    os.truncate(P("tr_shrink"), 0)                      # truncate to 0 and rewrite
    with open(P("tr_shrink"), "r+b") as f:
        f.write(b.rand(200 * KiB))
    b.snapshot()
    # ---- s4 -------------------------------------------------------------
    os.rename(P("d1"), P("dtmp"))                       # swap directories
    os.rename(P("d2"), P("d1"))
    os.rename(P("dtmp"), P("d2"))
    overwrite("d1/two", 0, 4 * KiB)
    os.rename(P("t2"), P("app"))                        # rename over an existing file
    os.unlink(P("hl_b"))
    overwrite("hl_a", 0, 4 * KiB)
    for i in range(5):
        b.write_new(f"many/s{i}", 50 + i * 700)          # small (inline) files
    open(P("empty_new"), "wb").close()                  # new file without data
    sh("fallocate", "-l", str(MiB), P("prealloc"))      # preallocated, no data written
    os.symlink("new name é.txt", P("sym2"))
    b.snapshot()
    return b


def check_pair(r, binary, old, new, label):
    dump = send_dump(old, new)
    orc = SendOracle(old, dump)
    oc = orc.changed()
    print(f"  {label}: {len(orc.cmds)} stream commands, oracle changed files: "
          f"{[c['names'] for c in oc]}", flush=True)
    r.check(f"{label}: oracle resolved every stream command", not orc.unknown, "; ".join(orc.unknown[:5]))
    bad = [n for c in oc for n in c["names"] if not stat.S_ISREG(os.lstat(os.path.join(new, n)).st_mode)]
    r.check(f"{label}: oracle final paths are regular files in NEW", not bad, str(bad))
    gt = ground_truth_changes(old, new)
    onames = {n for c in oc for n in c["names"]}
    miss = [g for g in gt if not set(g[0]) & onames]
    r.check(f"{label}: oracle covers every file with new data (ground truth)", not miss, str(miss))
    if binary is None:
        return

    res = run_tool(binary, ["diff", old, new, "--json"])
    r.check(f"{label}: diff exit 0", res.rc == 0, res.describe())
    j = res.json
    shape_ok = (isinstance(j, dict) and isinstance(j.get("changed"), list) and isinstance(j.get("added"), list)
                and isinstance(j.get("removed"), list) and isinstance(j.get("renamed"), list)
                and all(isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("ranges"), list)
                        and isinstance(e.get("created"), bool)
                        and all(isinstance(x, list) and len(x) == 2 and all(isinstance(v, int) for v in x)
                                for x in e["ranges"]) for e in j["changed"])
                and all(isinstance(p, str) for p in j["added"] + j["removed"])
                and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                        for p in j["renamed"]))
    r.check(f"{label}: JSON shape matches contract", shape_ok, res.json_error or res.stdout[:300])
    if not shape_ok:
        return
    tool = j["changed"]
    all_paths = ([e["path"] for e in tool] + j["added"] + j["removed"] + [p for pr in j["renamed"] for p in pr])
    badp = [p for p in all_paths if p.startswith("./") or p.startswith("/") or p == ""]
    r.check(f"{label}: paths relative, no leading './' or '/'", not badp, str(badp[:5]))

    by_path = {}
    for e in tool:
        by_path.setdefault(e["path"], []).append(e)
    dup_entries = [p for p, es in by_path.items() if len(es) > 1]
    r.check(f"{label}: no path listed twice in changed", not dup_entries, str(dup_entries))

    # changed set: every changed inode listed under (one of) its final names, nothing else.
    # (files with a single name -> plain set equality)
    missing, range_bad, created_bad, covered = [], [], [], set()
    for c in oc:
        hits = [e for n in c["names"] for e in by_path.get(n, [])]
        covered.update(n for n in c["names"] if n in by_path)
        if not hits:
            missing.append(c["names"])
            continue
        tr = merge_ranges([x for e in hits for x in e["ranges"]])
        if tr != c["ranges"]:
            range_bad.append(f"{c['names']}: tool {tr} oracle {c['ranges']}")
        if any(e["created"] != c["created"] for e in hits):
            created_bad.append(f"{c['names']}: tool {[e['created'] for e in hits]} oracle {c['created']}")
    extra = sorted(set(by_path) - covered)
    r.check(f"{label}: changed paths == oracle (missing {len(missing)}, extra {len(extra)})",
            not missing and not extra, f"missing {missing} extra {extra}")
    r.check(f"{label}: merged ranges per file == oracle update_extent/write/clone union",
            not range_bad, "; ".join(range_bad[:5]))
    r.check(f"{label}: created flag == file created in this stream (mkfile)", not created_bad,
            "; ".join(created_bad[:5]))

    listed = set(by_path) | set(j["added"])
    gmiss = [g for g in gt if not set(g[0]) & listed]
    r.check(f"{label}: every file with new data (byte comparison) is in changed or added", not gmiss, str(gmiss))
    noadd = [p for p in j["added"] if not os.path.lexists(os.path.join(new, p))]
    norem = [p for p in j["removed"] if not os.path.lexists(os.path.join(old, p))]
    noren = [pr for pr in j["renamed"] if not (os.path.lexists(os.path.join(old, pr[0]))
                                               and os.path.lexists(os.path.join(new, pr[1])))]
    r.check(f"{label}: added exist in NEW, removed exist in OLD, renamed from OLD to NEW",
            not noadd and not norem and not noren, f"{noadd} {norem} {noren}")


def check_all_pairs(r, ws, binary):
    r.section("build snapshot series")
    fs = ws.make_btrfs("diff", size=GiB)
    b = build_series(fs)
    snaps = b.snapshots
    pairs = list(zip(snaps, snaps[1:])) + [(snaps[0], snaps[-1])]
    parts = []
    for old, new in pairs:
        label = f"{os.path.basename(old)}->{os.path.basename(new)}"
        parts.append((label, lambda old=old, new=new, label=label: (r.section(f"pair {label}"),
                                                                     check_pair(r, binary, old, new, label))))
    run_parts(r, parts)


def main():
    args = common_argparser(__doc__).parse_args()
    require_root(PROG)
    binary = check_binary_arg(args, PROG)
    run_test(PROG, "snapdedupe-test_diff_oracle", lambda r, ws: check_all_pairs(r, binary=binary, ws=ws))


if __name__ == "__main__":
    main()
