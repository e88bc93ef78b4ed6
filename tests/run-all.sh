#!/usr/bin/env bash
# The test command of the README: installs packages, builds with -Werror, runs every test
# (unit tests, and integration tests on loop-backed btrfs). Needs root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run-all.sh: must run as root (the tests make loop-backed btrfs filesystems)" >&2
    exit 1
fi
"$root/packaging/install-deps.sh"
"$root/packaging/build.sh" -DSNAPDEDUPE_WERROR=ON -DBUILD_TESTING=ON
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure "$@"
