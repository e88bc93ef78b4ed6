#!/usr/bin/env python3
"""Shared fixture code for the snapdedupe integration tests (stdlib only).

A facade: the code lives in loop_btrfs.py, integrity.py, tool_run.py,
dedupe_series.py and send_oracle.py (same folder); this module re-exports their
public names so the tests import everything from here.

Contents:
  * Results            -- pass/fail bookkeeping, prints "N passed, M failed".
  * require_root()     -- fail loudly (exit 1) when not root.
  * Workspace          -- context manager owning a temp dir, loop-backed btrfs
                          filesystems, tmpfs mounts; always cleaned up (also on
                          exceptions and SIGTERM/SIGINT/SIGHUP), plus a leak check.
  * SeriesBuilder      -- builds snapshot series in a live subvolume and tracks
                          known duplicate bytes.
  * build_dedupe_series() -- the series used by test_dedupe.py.
  * manifest()/compare_manifests() -- sha256 + metadata of every file.
  * df()/sync_fs()     -- "btrfs filesystem df -b" Data/Metadata used.
  * run_tool()         -- run the snapdedupe binary, time it, parse --json.
  * reference_dedupe() -- an independent FIDEDUPERANGE deduper used only by the
                          fixture self-test to prove the known_dup_bytes
                          accounting and the space measurement are right.
  * parse_dump()/SendOracle -- independent interpretation of
                          "btrfs receive --dump" output (used by test_diff_oracle).

Run directly (as root) to self-test the fixtures without the binary:
    python3 tests/integration/btrfs_fixture.py --selftest-fixture
"""

import sys

from dedupe_series import (FIDEDUPERANGE, FILE_DEDUPE_RANGE_DIFFERS,  # noqa: F401
                           FILE_DEDUPE_RANGE_SAME, SeriesBuilder, build_dedupe_series, data_bytes,
                           extend_series_identical_rewrite, fideduperange, make_sparse,
                           reference_dedupe, selftest)
from integrity import compare_manifests, file_count, manifest, manifest_all, sha256_file  # noqa: F401
from loop_btrfs import (GiB, KiB, LoopBtrfs, MiB, Results, TerminatedBySignal,  # noqa: F401
                        Workspace, check_binary_arg, common_argparser, df,
                        install_signal_handlers, is_readonly, require_root, run_parts, run_test,
                        set_readonly, sh, sh_out, subvol_create, subvol_delete, subvol_ids,
                        subvol_snapshot, sync_fs)
from send_oracle import (SendOracle, ground_truth_changes, merge_ranges,  # noqa: F401
                         new_data_differs, parse_dump, send_dump, unescape)
from tool_run import RUN_KEYS_INT, ToolResult, run_tool, validate_run_json  # noqa: F401


if __name__ == "__main__":
    if "--selftest-fixture" in sys.argv[1:] or "--selftest" in sys.argv[1:]:
        require_root("btrfs_fixture.py")
        sys.exit(selftest())
    print(__doc__)
