#!/usr/bin/env bash
# Fuzzes the send-stream parser and the change-set builder for ${FUZZ_SECONDS:-60} seconds.
#
# Configures a clang build of the project with SNAPDEDUPE_FUZZ=ON (the libraries with
# -fsanitize=fuzzer-no-link,address,undefined), builds its fuzz_send_stream target
# (tests/fuzz/CMakeLists.txt: tests/fuzz/fuzz_send_stream.cpp linked with snapdedupe_snapshots
# and -fsanitize=fuzzer), seeds a scratch corpus with the committed fixture streams and
# earlier regressions, and runs it.
# A crash, sanitizer report, leak, unexpected exception or hang fails this script; the input
# that caused it is copied to tests/fixtures/fuzz-regressions/ for the developer to commit
# (tests/unit/test_fuzz_regressions.cpp then replays it on every build).
#
#   tests/fuzz/run-fuzz.sh                    # CI: 60 s
#   FUZZ_SECONDS=3600 tests/fuzz/run-fuzz.sh  # a longer hunt
#   FUZZ_JOBS=4 ...                           # parallel fuzzing processes (default 1)
#   FUZZ_BUILD_DIR=DIR ...                    # keep the clang build there (default: a scratch
#                                             # directory; ctest passes fuzz-clang/ of its tree)
#
# Needs clang-14 and libclang-rt-14-dev (packaging/install-deps.sh installs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
regressions=$root/tests/fixtures/fuzz-regressions

cxx=${FUZZ_CXX:-}
if [ -z "$cxx" ]; then
    for c in clang++-14 clang++; do
        if command -v "$c" >/dev/null; then cxx=$c; break; fi
    done
fi
if [ -z "$cxx" ]; then
    echo "run-fuzz.sh: clang++ not found (packaging/install-deps.sh installs clang-14)" >&2
    exit 1
fi

# The C compiler beside it (clang++-14 -> clang-14), for CC; the project is C++ only.
cc=${cxx/clang++/clang}

work=$(mktemp -d /tmp/snapdedupe-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
build=${FUZZ_BUILD_DIR:-$work/build}

# -O1 -g as libFuzzer's docs advise: fast enough, and reports carry line numbers (and, as
# before, no -DNDEBUG). UBSan errors abort (no recover; the top-level CMakeLists.txt), so they
# count as crashes instead of scrolling by. Only the fuzz target and the libraries it links
# are built.
CC=$cc CXX=$cxx cmake -S "$root" -B "$build" -DSNAPDEDUPE_FUZZ=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >"$work/configure.log" 2>&1 ||
    { cat "$work/configure.log" >&2; echo "run-fuzz.sh: configuring the clang build in $build failed" >&2; exit 1; }
cmake --build "$build" --target fuzz_send_stream -j"$(nproc)" >"$work/build.log" 2>&1 ||
    { tail -n 60 "$work/build.log" >&2; echo "run-fuzz.sh: building fuzz_send_stream in $build failed" >&2; exit 1; }
cp "$build/tests/fuzz/fuzz_send_stream" "$work/fuzz_send_stream"

mkdir -p "$work/corpus" "$work/artifacts"
cp "$root"/tests/fixtures/streams/*.stream "$work/corpus/"
if [ -d "$regressions" ]; then
    find "$regressions" -maxdepth 1 -type f -exec cp {} "$work/corpus/" \;
fi

# -max_len: the largest fixture is a few KiB; 64 KiB leaves room for mutations to grow
# it without slowing every execution down. -timeout: one input taking 10 s is a hang.
# rss_limit: a parser that allocates per corrupt length field is a bug, not a slow input.
parallel=()
if ((jobs > 1)); then parallel=(-jobs="$jobs" -workers="$jobs"); fi
status=0
# -seed: CI explores the same inputs every run, so a red CI is a reproducible finding, not luck;
# FUZZ_SEED=0 asks libFuzzer for a fresh random seed (for longer runs by hand).
(cd "$work" && ./fuzz_send_stream -seed="${FUZZ_SEED:-1}" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 ${parallel[@]+"${parallel[@]}"} \
    -artifact_prefix="$work/artifacts/" "$work/corpus") >"$work/log" 2>&1 || status=$?
# With -jobs, libFuzzer writes each job's output to fuzz-N.log instead.
cat "$work/log" "$work"/fuzz-*.log 2>/dev/null | grep -E '^(#[0-9]+[[:space:]]+DONE|stat::|==[0-9]+==ERROR|SUMMARY|.*runtime error)' || true

crashes=$(find "$work/artifacts" -type f | wc -l)
if ((status != 0 || crashes > 0)); then
    mkdir -p "$regressions"
    for f in "$work"/artifacts/*; do
        [ -f "$f" ] || continue
        # Replay it once more with SNAPDEDUPE_FUZZ_DUMP: that leaves the stream that was being
        # parsed when it crashed (a recipe input turns into its synthesized stream).
        saved=$regressions/$(basename "$f").stream
        rm -f "$work/replay"
        SNAPDEDUPE_FUZZ_DUMP=$work/replay "$work/fuzz_send_stream" "$f" >/dev/null 2>&1 || true
        if [ -s "$work/replay" ]; then cp "$work/replay" "$saved"; else cp "$f" "$saved"; fi
        echo "run-fuzz.sh: saved tests/fixtures/fuzz-regressions/$(basename "$saved") (commit it)" >&2
    done
    tail -n 60 "$work/log" "$work"/fuzz-*.log 2>/dev/null >&2 || true
    echo "run-fuzz.sh: FAILED (fuzzer exit $status, $crashes crash inputs)" >&2
    exit 1
fi
echo "run-fuzz.sh: no crash in ${seconds}s"
