#!/usr/bin/env bash
# Benchmark: snapdedupe against duperemove (Debian's 0.11) on the same snapshot series.
#
# Debian 12's duperemove opens files for writing and so cannot dedupe read-only snapshots at
# all (EROFS). It is measured as shipped, and once more the way people work around that:
# flipping every snapshot writable for the run (`btrfs property set -f ro false`), which also
# clears received_uuid and so breaks btrbk's next incremental send.
#
# Builds a btrbk-style series on a scratch loop-backed btrfs (real files from /usr, identical
# rewrites, copies, new data), received into a backup directory like a backup host; then runs
# one tool, measures time, peak memory and space, destroys the filesystem, rebuilds the same
# series and runs the other. Then one more snapshot with a small change and a second run of
# each: the nightly case. Prints a markdown table. Needs root. Not run by CI (figures, not
# pass/fail); the README quotes its output.
#
#   sudo tests/benchmark/compare-duperemove.sh            # ~400 MiB of /usr, 8 snapshots
#   sudo DATA_MIB=2000 SNAPSHOTS=12 tests/benchmark/compare-duperemove.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "compare-duperemove.sh: must run as root" >&2; exit 1; }
"$root/packaging/install-deps.sh"
command -v duperemove >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq duperemove >/dev/null
"$root/packaging/build.sh" >/dev/null
snapdedupe=${BUILD_DIR:-$root/build}/plugin/snapdedupe
data_mib=${DATA_MIB:-400}
snapshots=${SNAPSHOTS:-8}

tmp=$(mktemp -d /tmp/snapdedupe-bench.XXXXXX)
dev=""
cleanup() {
    set +e
    mountpoint -q "$tmp/mnt" && umount "$tmp/mnt"
    [ -n "$dev" ] && losetup -d "$dev"
    dev=""
}
trap 'cleanup; rm -rf "$tmp"' EXIT INT TERM

find /usr/lib/x86_64-linux-gnu /usr/include /usr/share/doc /usr/share/locale -xdev -type f -size +4k \
    -printf '%s %p\n' 2>/dev/null | sort -k2 |
    awk -v budget=$((data_mib * 1024 * 1024)) '{ total += $1; if (total <= budget) print $2 }' >"$tmp/files"

used() { # data_used metadata_used (bytes, one copy) after a commit
    btrfs filesystem sync "$tmp/mnt" >/dev/null
    btrfs filesystem df -b "$tmp/mnt" | awk -F'used=' '/^Data/ {split($2,a,","); d=a[1]} /^Metadata/ {split($2,a,","); m=a[1]} END {print d, m}'
}

snap() { # snapshot live, send it to the backup dir as btrbk would
    local i=$1 name
    name=$(printf 'live.20261121T%02d00' "$i")
    btrfs -q subvolume snapshot -r "$tmp/mnt/live" "$tmp/mnt/snapshots/$name"
    if [ "$i" -gt 1 ]; then
        btrfs -q send -p "$tmp/mnt/snapshots/$(printf 'live.20261121T%02d00' $((i - 1)))" \
            "$tmp/mnt/snapshots/$name" | btrfs -q receive "$tmp/mnt/backup"
    else
        btrfs -q send "$tmp/mnt/snapshots/$name" | btrfs -q receive "$tmp/mnt/backup"
    fi
}

churn() { # step i: deterministic changes that make duplicates and new data
    local i=$1 live=$tmp/mnt/live
    case $((i % 4)) in
    0) # an upgrade rewrites a quarter of the files with identical bytes
        awk -v k="$i" 'NR % 4 == k % 4' "$tmp/files" | while IFS= read -r f; do
            cp --reflink=never "$live/usr$f" "$live/usr$f.new" && mv "$live/usr$f.new" "$live/usr$f"
        done ;;
    1) cp -a --reflink=never "$live/usr/usr/include" "$live/copy-$i" 2>/dev/null || true ;;
    2) rm -rf "$live"/copy-* ;;
    3) head -c $((8 * 1024 * 1024)) /dev/urandom >"$live/new-$i.bin" ;;
    esac
}

build() {
    truncate -s $((data_mib * 6 + 2048))M "$tmp/disk.img"
    dev=$(losetup -f --show "$tmp/disk.img")
    mkfs.btrfs -q -f "$dev" >/dev/null 2>&1
    mkdir -p "$tmp/mnt"
    mount "$dev" "$tmp/mnt"
    btrfs -q subvolume create "$tmp/mnt/live"
    mkdir "$tmp/mnt/snapshots" "$tmp/mnt/backup"
    while IFS= read -r f; do
        mkdir -p "$tmp/mnt/live/usr$(dirname "$f")"
        cp --reflink=never "$f" "$tmp/mnt/live/usr$f"
    done <"$tmp/files"
    snap 1
    for i in $(seq 2 "$snapshots"); do churn "$i"; snap "$i"; done
}

measure() { # label command...: prints "label seconds maxrss_kib data_freed meta_growth"
    local label=$1; shift
    read -r d0 m0 < <(used)
    if [ "$1" = duperemove_rw ]; then # a shell function: time the duperemove inside it
        shift
        set_ro false
        /usr/bin/time -f "%e %M" -o "$tmp/time" duperemove "$@" >"$tmp/out.$label" 2>&1 || true
        set_ro true
    else
        /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >"$tmp/out.$label" 2>&1 || { cat "$tmp/out.$label"; return 1; }
    fi
    read -r d1 m1 < <(used)
    read -r secs rss <"$tmp/time"
    echo "$label $secs $rss $((d0 - d1)) $((m1 - m0))"
}

results=()
set_ro() { # true|false: every snapshot
    for s in "$tmp"/mnt/snapshots/* "$tmp"/mnt/backup/*; do btrfs property set -f -ts "$s" ro "$1"; done
}

for tool in snapdedupe duperemove duperemove-rw-flip; do
    build
    dr_args=(-dr -q --hashfile="$tmp/hashfile" "$tmp/mnt/snapshots" "$tmp/mnt/backup" "$tmp/mnt/live")
    case $tool in
    snapdedupe) cmd=("$snapdedupe" run --db "$tmp/index.sqlite" "$tmp/mnt/snapshots" "$tmp/mnt/backup") ;;
    duperemove) cmd=(duperemove "${dr_args[@]}") ;;
    *) cmd=(duperemove_rw "${dr_args[@]}") ;;
    esac
    results+=("$(measure "$tool-first" "${cmd[@]}")")
    churn $((snapshots + 1)); snap $((snapshots + 1))
    results+=("$(measure "$tool-nightly" "${cmd[@]}")")
    cleanup
    rm -f "$tmp/disk.img" "$tmp/index.sqlite" "$tmp/hashfile"
done

echo
echo "$(wc -l <"$tmp/files") files, $data_mib MiB of /usr, $snapshots snapshots + 1 nightly, sent to a backup dir"
echo
echo "| run | seconds | max RSS | data freed | metadata growth |"
echo "|---|---|---|---|---|"
for r in "${results[@]}"; do
    read -r label secs rss freed growth <<<"$r"
    printf '| %s | %s | %d MiB | %d MiB | %d MiB |\n' "$label" "$secs" $((rss / 1024)) $((freed / 1048576)) $((growth / 1048576))
done
