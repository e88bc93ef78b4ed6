"""The one helper package of the snapdedupe integration and property tests (stdlib only).

Tests import every helper from here (`from snaptest import ...`); the fixture modules that
only one test uses (dedupe_series.py, send_oracle.py, snapper_flow.py) build on it too.

  run.py     running commands (sh) and the binary: run_tool() parses its JSON into a
             ToolResult; validate_run_json() checks a `run --json` report, with the dedupe
             counters read from the C++ header (plugin/dedupe/dedupe_counters.h); the test
             seams: run_with_seam() (--test-pause-before-dedupe FIFO) and with_seam().
  loopfs.py  loop-backed btrfs: Workspace owns a fresh temp dir, the images in it (attached
             with an explicit `losetup -f --show`) and their mounts; it always unmounts and
             detaches, also on failure or a signal, and leaks() says what is left;
             attach_btrfs() mounts a copy of an image, release() lets one go early. btrfs
             helpers: df(), subvolumes, uuids, the btrfsmaintenance lock file, the index's rows, its
             journal (index_deferred) and its integrity_check.
  files.py   data (write_random, identical_rewrite, SeriesBuilder: a snapshot series with known
             duplicate bytes) and integrity: manifest() hashes every file of a tree (sha256 +
             metadata); check_integrity() compares every file of every snapshot with before.
  frame.py   the frame of every test: Results ("N passed, M failed" as the last line),
             run_test(), run_parts(), parse_args() (--snapdedupe, root) and main().
"""

from .files import (SeriesBuilder, check_integrity, compare_manifests, data_bytes, file_count,
                    identical_rewrite, make_deep_tree, manifest, manifest_all, merge_ranges, regular_files, sha256_file,
                    write_random)
from .frame import Results, main, parse_args, require_root, run_parts, run_test
from .loopfs import (COPIES, GiB, KiB, LoopBtrfs, MiB, TerminatedBySignal, Workspace, df, fs_uuid,
                     index_deferred, index_integrity, index_rows, is_readonly, lock_file, proc_mounts,
                     remove_lock_files, set_readonly, subvol_create, subvol_delete, subvol_ids,
                     subvol_snapshot, subvol_sync, sync_fs)
from .run import (REPO, ToolResult, dedupe_counter_names, is_int, run_tool, run_with_seam, sh, sh_out,
                  validate_run_json, with_seam)

__all__ = [
    # files.py
    "SeriesBuilder", "check_integrity", "compare_manifests", "data_bytes", "file_count", "identical_rewrite",
    "make_deep_tree", "manifest", "manifest_all", "merge_ranges", "regular_files", "sha256_file", "write_random",
    # frame.py
    "Results", "main", "parse_args", "require_root", "run_parts", "run_test",
    # loopfs.py
    "COPIES", "GiB", "KiB", "LoopBtrfs", "MiB", "TerminatedBySignal", "Workspace", "df", "fs_uuid",
    "index_deferred", "index_integrity", "index_rows", "is_readonly", "lock_file", "proc_mounts",
    "remove_lock_files", "set_readonly", "subvol_create", "subvol_delete", "subvol_ids", "subvol_snapshot",
    "subvol_sync", "sync_fs",
    # run.py
    "REPO", "ToolResult", "dedupe_counter_names", "is_int", "run_tool", "run_with_seam", "sh", "sh_out",
    "validate_run_json", "with_seam",
]
