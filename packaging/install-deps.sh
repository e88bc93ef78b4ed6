#!/usr/bin/env bash
# Installs the Debian 12 packages snapdedupe needs to build, run and test. Run as root.
set -euo pipefail
packages=(
    # build (g++ brings libasan8 and libubsan1 for the sanitizer tree of tests/run-all.sh)
    cmake g++ make pkg-config
    libbtrfsutil-dev libboost-program-options-dev libsqlite3-dev libxxhash-dev doctest-dev
    libisal-dev libsodium-dev  # crc32c, sha256 and BLAKE2b sector checksums (index/fingerprint.cpp)
    # run
    btrfs-progs
    # tests and demo
    python3 util-linux coreutils
    snapper btrbk systemd man-db dpkg-dev file  # snapper/btrbk/package tests: systemd-analyze, cpack's dpkg-shlibdeps
    clang-14 libclang-rt-14-dev  # libFuzzer, ASan, UBSan for tests/fuzz/run-fuzz.sh
    mmdebstrap systemd-container  # test_systemd: a cached Debian rootfs booted with systemd-nspawn
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
