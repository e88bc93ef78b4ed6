#!/usr/bin/env bash
# The README's main-job command: builds snapdedupe, makes a scratch loop-backed btrfs, builds
# a btrbk-style snapshot series from real files under /usr, sends it to a backup directory on
# the same filesystem the way btrbk does (btrfs send | btrfs receive), runs `snapdedupe run`
# on both, prints the report, and cleans up, even on failure. Needs root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "packaging/demo.sh: must run as root (it makes a loop-backed btrfs)" >&2
    exit 1
fi
"$root/packaging/install-deps.sh"
"$root/packaging/build.sh"
snapdedupe=${BUILD_DIR:-$root/build}/plugin/snapdedupe
budget_mib=${DEMO_MIB:-300}

tmp=$(mktemp -d /tmp/snapdedupe-demo.XXXXXX)
dev=""
cleanup() {
    set +e
    mountpoint -q "$tmp/mnt" && umount "$tmp/mnt"
    [ -n "$dev" ] && losetup -d "$dev"
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

truncate -s 4G "$tmp/disk.img"
dev=$(losetup -f --show "$tmp/disk.img")
mkfs.btrfs -q "$dev" 2>/dev/null
mkdir "$tmp/mnt"
mount "$dev" "$tmp/mnt"
mnt=$tmp/mnt
btrfs -q subvolume create "$mnt/live"
mkdir "$mnt/snapshots" "$mnt/backup"

step=0
snapshot() { # a btrbk-named read-only snapshot, then sent to the backup dir like btrbk does
    step=$((step + 1))
    local name="live.20261121T0${step}00"
    btrfs -q subvolume snapshot -r "$mnt/live" "$mnt/snapshots/$name"
    if [ -n "${prev:-}" ]; then
        btrfs -q send -p "$mnt/snapshots/$prev" "$mnt/snapshots/$name" | btrfs -q receive "$mnt/backup"
    else
        btrfs -q send "$mnt/snapshots/$name" | btrfs -q receive "$mnt/backup"
    fi
    prev=$name
    echo "snapshot $name: $1"
}

echo "== building a snapshot series from /usr (about $budget_mib MiB)"
# Real files, up to the budget: libraries, headers, documentation.
find /usr/lib/x86_64-linux-gnu /usr/include /usr/share/doc -xdev -type f -size +4k -printf '%s %p\n' 2>/dev/null |
    sort -k2 | awk -v budget=$((budget_mib * 1024 * 1024)) '{ total += $1; if (total <= budget) print $2 }' \
    >"$tmp/files"
mkdir -p "$mnt/live/usr"
while IFS= read -r f; do
    mkdir -p "$mnt/live/usr$(dirname "$f")"
    cp --reflink=never "$f" "$mnt/live/usr$f"
done <"$tmp/files"
snapshot "initial copy of $(wc -l <"$tmp/files") files"

# A package upgrade that rewrites libraries with the same bytes.
find "$mnt/live/usr/usr/lib" -type f -name '*.so*' | while IFS= read -r f; do
    cp --reflink=never "$f" "$f.new" && mv "$f.new" "$f"
done
snapshot "libraries rewritten with identical content (an upgrade)"

# A user keeps a copy of the headers.
cp -a --reflink=never "$mnt/live/usr/usr/include" "$mnt/live/include-copy"
snapshot "a copy of the headers"

# Renames, deletes and new data: change, but no new duplicates.
mv "$mnt/live/usr/usr/share" "$mnt/live/usr/usr/share-renamed" 2>/dev/null || true
find "$mnt/live/include-copy" -name '*.h' | sed -n '1,50p' | xargs -r rm -f
head -c 20M /dev/urandom >"$mnt/live/new-data.bin"
snapshot "renames, deletes, 20 MiB of new data"

echo
echo "== btrfs filesystem df before"
btrfs filesystem df "$mnt" | grep -E "^(Data|Metadata)"
echo
echo "== snapdedupe run $mnt/snapshots $mnt/backup"
"$snapdedupe" run --db "$tmp/index.sqlite" "$mnt/snapshots" "$mnt/backup"
echo
echo "== btrfs filesystem df after"
btrfs filesystem df "$mnt" | grep -E "^(Data|Metadata)"
echo
echo "== a second run reads nothing new"
/usr/bin/time -f "(%e s, %M KiB max RSS)" "$snapdedupe" run --db "$tmp/index.sqlite" "$mnt/snapshots" "$mnt/backup" |
    grep -E "snapshots processed|read and hashed"
