#!/usr/bin/env bash
# The test command of the README: installs packages, builds with -Werror, runs every test
# (unit tests, and integration tests on loop-backed btrfs). Needs root.
#
# Two trees, each built with -Werror and tested with every ctest test (arguments go to ctest):
#   ${BUILD_DIR:-build}        the release build (RelWithDebInfo), as packaged
#   ${BUILD_DIR:-build}-asan   SNAPDEDUPE_SANITIZE=ON: ASan and UBSan on the libraries, the
#                              binary and the unit tests (issue 9). A sanitizer report exits 86,
#                              which no test expects, and leaves a file in its
#                              sanitizer-reports/; any such file fails the run and is printed.
# Both trees are always tested; the run fails if either fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run-all.sh: must run as root (the tests make loop-backed btrfs filesystems)" >&2
    exit 1
fi
build=$(realpath -m "${BUILD_DIR:-$root/build}")
asan_build=$build-asan
reports=$asan_build/sanitizer-reports

"$root/packaging/install-deps.sh"
t0=$SECONDS
BUILD_DIR=$build "$root/packaging/build.sh" -DSNAPDEDUPE_WERROR=ON -DBUILD_TESTING=ON
t1=$SECONDS
BUILD_DIR=$asan_build "$root/packaging/build.sh" -DSNAPDEDUPE_WERROR=ON -DBUILD_TESTING=ON -DSNAPDEDUPE_SANITIZE=ON
t2=$SECONDS

status=0
echo "== release tree: $build"
(cd "$build" && ctest --output-on-failure "$@") || status=1
t3=$SECONDS

echo "== sanitizer tree (ASan, UBSan): $asan_build"
rm -rf "$reports" && mkdir -p "$reports" && chmod 1777 "$reports"
(cd "$asan_build" && ctest --output-on-failure "$@") || status=1
t4=$SECONDS
mapfile -t found < <(find "$reports" -type f | sort)
if ((${#found[@]})); then
    for f in "${found[@]:0:3}"; do
        echo "---- sanitizer report $f" >&2
        cat "$f" >&2
    done
    echo "tests/run-all.sh: ${#found[@]} sanitizer reports in $reports (the first ones above)" >&2
    status=1
fi

echo "tests/run-all.sh: release tree: build $((t1 - t0)) s, tests $((t3 - t2)) s;" \
     "sanitizer tree: build $((t2 - t1)) s, tests $((t4 - t3)) s"
if ((status != 0)); then
    echo "tests/run-all.sh: FAILED" >&2
fi
exit "$status"
