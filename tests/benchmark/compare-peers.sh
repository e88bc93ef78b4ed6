#!/usr/bin/env bash
# Benchmark: snapdedupe against duperemove v0.15.2 and bees v0.11 on a btrbk-style backup target.
#
# The series: two source hosts (subvolumes of a scratch loop btrfs) of about HOST_MIB each, from
# real files of this machine (libraries from /usr/lib/x86_64-linux-gnu, the two hosts sharing
# two thirds of theirs; /usr/share/doc; the Python tree) and a random VM image. Every day a
# read-only snapshot of each host is sent, incrementally after day 0, into a second loop btrfs,
# the backup target: one directory of name.YYYYMMDD subvolumes, as btrbk receives them. Daily
# churn on each host: an identical reinstall of a fifth of its libraries, an appended log, a
# copy of a slice of its docs, a new Python tree on days 2 and 4, random small writes into the
# VM image. Days 0-4 are the full run; day 5 is the nightly run.
#
# Each tool gets a fresh copy of the target image as it was after day 4, on a loop device with
# direct I/O (so the image is not cached a second time under the filesystem), and the caches are
# dropped before each phase. Between the two phases the day-5 streams are received into it.
#   snapdedupe  `run` on the target directory; once more with --test-no-prefetch (full run only).
#   duperemove  `-dr --hashfile=H` on the target directory; the nightly run reuses H.
#   bees        on the whole filesystem, its state (a BEES_HASH_MIB hash table) outside it; it is
#               stopped once its status file shows every crawler idle and usage has not changed
#               for IDLE_SECONDS, and its time is the time until then. The nightly run restarts
#               it on the same state.
#
# Per tool and phase: wall, user and system time and peak RSS (wait4 of the tool), bytes read
# (read_bytes of the tool and its children, from /proc/<wrapper>/io after the tool is reaped),
# data freed, metadata growth (one copy) and net freed (data plus every copy of metadata), from
# `btrfs filesystem df` after a sync, and integrity: every file of every snapshot hashes (b2sum)
# the same after the phase as in the series before it (each copy starts bit-identical to it;
# day 5's files are hashed in the source snapshots they were sent from). Before the tools: how
# much data any dedupe could free at most, the data on disk less its distinct 4 KiB blocks
# (dedupable_bound.py).
# Prints a markdown table. Needs root; about 25 minutes on 2 cores. Not run by CI.
#
#   sudo tests/benchmark/compare-peers.sh
#   sudo HOST_MIB=256 tests/benchmark/compare-peers.sh      # a quick look
# SNAPDEDUPE=binary (default: packaging/build.sh's), PEERS_DIR=a build.sh OUTDIR to reuse,
# PEERS_SRC=the directory of build.sh and the tarballs (default ../shared/peers), KEEP=1,
# SNAPDEDUPE_BEFORE=an earlier build to run too (row "snapdedupe-before"), for before/after figures,
# TOOLS="snapdedupe ..." to run only those (and no no-prefetch row).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "compare-peers.sh: must run as root" >&2; exit 1; }
host_mib=${HOST_MIB:-1024}
days=5 # days 0 .. days-1 for the full run, day $days for the nightly run
bees_hash_mib=${BEES_HASH_MIB:-32}
idle_seconds=${IDLE_SECONDS:-60}
bees_timeout=${BEES_TIMEOUT:-2400}

tmp=$(mktemp -d /tmp/snapdedupe-peers.XXXXXX)
bees_wrapper=""
bench_stop_tools() { # bees, if it still runs: before its filesystem is unmounted
    [ -n "$bees_wrapper" ] && kill -TERM "$bees_wrapper" 2>/dev/null && wait "$bees_wrapper" 2>/dev/null
    bees_wrapper=""
}
# shellcheck source=tests/benchmark/bench-lib.sh
. "$root/tests/benchmark/bench-lib.sh"

# --- tools -----------------------------------------------------------------------------------

peers=${PEERS_DIR:-$tmp/peers}
[ -x "$peers/bin/duperemove" ] && [ -x "$peers/bin/bees" ] ||
    "${PEERS_SRC:-$root/../shared/peers}/build.sh" "$peers" >"$tmp/peers-build.log" 2>&1 ||
    { cat "$tmp/peers-build.log" >&2; exit 1; }
SNAPDEDUPE=$(snapdedupe_binary)
[ -z "${SNAPDEDUPE_BEFORE:-}" ] || SNAPDEDUPE_BEFORE=$(stripped "$SNAPDEDUPE_BEFORE" snapdedupe-before)
write_measure_py 1

# Day 0 of a host ($1: directory, $2: host number) and each later day's churn ($3: day).
cat >"$tmp/churn.py" <<'EOF'
import os, random, shutil, sys
host, n, day, host_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(f"host{n}-day{day}")
def regular_files(top):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs
                  if not os.path.islink(os.path.join(d, f)))
def log_lines(count):
    return "".join(f"Nov {day + 1:2d} 03:{i % 60:02d} host{n} app[{rng.randrange(99999)}]: "
                   f"request {rng.getrandbits(64):016x} took {rng.random():.6f}s\n" for i in range(count))
os.makedirs(f"{host}/var/log", exist_ok=True)
if day == 0:  # a VM image of random bytes; a first log
    with open(f"{host}/vm.img", "wb") as vm:
        for _ in range(host_mib * 20 // 100):
            vm.write(rng.randbytes(1 << 20))
    with open(f"{host}/var/log/syslog", "w") as log:
        log.write(log_lines(20000))
    sys.exit(0)
# An identical reinstall of a fifth of the libraries: the same bytes in new extents.
for i, f in enumerate(regular_files(f"{host}/usr/lib/x86_64-linux-gnu")):
    if i % 5 == day % 5:
        shutil.copy2(f, f + ".dpkg-new")
        os.replace(f + ".dpkg-new", f)
with open(f"{host}/var/log/syslog", "a") as log:
    log.write(log_lines(host_mib * 50))
for i, d in enumerate(sorted(os.listdir(f"{host}/usr/share/doc"))):  # a copied slice of the docs
    if i % 5 == day % 5 and os.path.isdir(f"{host}/usr/share/doc/{d}"):
        shutil.copytree(f"{host}/usr/share/doc/{d}", f"{host}/srv/copies/day{day}/{d}", symlinks=True)
if day in (2, 4):  # a new Python tree
    shutil.copytree(f"{host}/usr/lib/python3.11", f"{host}/opt/python-day{day}", symlinks=True)
with open(f"{host}/vm.img", "r+b") as vm:  # random small writes into the VM image
    blocks = os.fstat(vm.fileno()).st_size // 4096
    for _ in range(200):
        vm.seek(rng.randrange(blocks - 16) * 4096)
        vm.write(rng.randbytes(rng.choice((4096, 16384, 65536))))
EOF

# --- the series ------------------------------------------------------------------------------

snap_name() { printf '%s.202611%02d' "$1" $(($2 + 1)); }
send_day() { # day [stream-file prefix]: snapshot both hosts; send into the target, or to files
    local d=$1 h name parent
    for h in hostA hostB; do
        name=$(snap_name $h "$d")
        btrfs -q subvolume snapshot -r "$src/$h" "$src/snaps/$name"
        parent=()
        [ "$d" -gt 0 ] && parent=(-p "$src/snaps/$(snap_name $h $((d - 1)))")
        if [ -n "${2:-}" ]; then
            btrfs -q send "${parent[@]}" -f "$2.$h" "$src/snaps/$name"
        else
            btrfs -q send "${parent[@]}" "$src/snaps/$name" | btrfs -q receive "$tgt/backup"
        fi
    done
}
build_series() {
    src=$tmp/src.mnt tgt=$tmp/tgt.mnt
    new_btrfs "$tmp/src.img" "$src" $((host_mib * 8 + 4096))
    new_btrfs "$tmp/target.img" "$tgt" $((host_mib * 8 + 4096))
    mkdir "$src/snaps" "$tgt/backup"
    local n=0 h d
    for h in hostA hostB; do
        btrfs -q subvolume create "$src/$h"
        host_files $n | tar -C / --files-from=- -cf - | tar -C "$src/$h" -xf -
        python3 "$tmp/churn.py" "$src/$h" $n 0 "$host_mib"
        n=$((n + 1))
    done
    send_day 0
    for d in $(seq 1 $((days - 1))); do
        python3 "$tmp/churn.py" "$src/hostA" 0 "$d" "$host_mib"
        python3 "$tmp/churn.py" "$src/hostB" 1 "$d" "$host_mib"
        send_day "$d"
    done
    python3 "$tmp/churn.py" "$src/hostA" 0 $days "$host_mib"
    python3 "$tmp/churn.py" "$src/hostB" 1 $days "$host_mib"
    send_day $days "$tmp/day$days"
    manifest "$tgt/backup" >"$tmp/manifest.full"
    send_bytes[series]=$(incremental_send_bytes "$tgt")
    series_logical=$(find "$tgt/backup" -type f -printf '%s\n' | awk '{ t += $1 } END { printf "%.0f\n", t }')
    read -r series_data _ < <(space "$tgt")
    read -r series_bound series_distinct _ < <(python3 "$root/tests/benchmark/dedupable_bound.py" "$tgt/backup" "$series_data")
    { cat "$tmp/manifest.full"; manifest "$src/snaps" "./$(snap_name hostA $days)" "./$(snap_name hostB $days)"; } |
        LC_ALL=C sort >"$tmp/manifest.nightly"
    cleanup # target.img stays as it was after day $((days - 1))
    rm -f "$tmp/src.img"
}
incremental_send_bytes() { # mountpoint: bytes of the last full-run day's incremental sends (both hosts)
    local h total=0 n
    for h in hostA hostB; do
        n=$(btrfs -q send -p "$1/backup/$(snap_name $h $((days - 2)))" "$1/backup/$(snap_name $h $((days - 1)))" | wc -c)
        total=$((total + n))
    done
    echo "$total"
}
receive_nightly() { # mountpoint: the day-$days streams, received as btrbk would
    local h
    for h in hostA hostB; do btrfs -q receive -f "$tmp/day$days.$h" "$1/backup"; done
}

# --- the tools -------------------------------------------------------------------------------

results=()
measure() { # tool phase mountpoint command...: one row of the table
    local tool=$1 phase=$2 mnt=$3 d0 m0 copies d1 m1 load
    shift 3
    read -r d0 m0 copies < <(space "$mnt")
    sync
    echo 3 >/proc/sys/vm/drop_caches
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$tool" = bees ]; then
        run_bees "$mnt" "$phase"
    else
        python3 "$tmp/measure.py" "$tmp/time" "$@" >"$tmp/$tool.$phase.log" 2>"$tmp/$tool.$phase.err"
    fi
    read -r d1 m1 _ < <(space "$mnt")
    local integrity=same want=$tmp/manifest.$phase
    manifest "$mnt/backup" | cmp -s - "$want" || integrity=DIFFERENT
    results+=("$tool $phase $(cat "$tmp/time") $((d0 - d1)) $((m1 - m0)) $copies $integrity $load")
    echo "$(date +%T) $tool $phase: ${results[-1]}" >&2
}
bees_idle() { # bees' status file: every crawler idle, no task queued or running
    awk '/^THREADS \(work queue / { if ($4 != 0) busy++ }
         /^\ttid [0-9]+: / { if ($3 ~ /^(ref|extent|scan|map)_/ || ($3 ~ /^crawl_/ && $3 !~ /^crawl_(transid|writeback):/)) busy++ }
         /^PROGRESS:/ { p = 1; next }
         p && NF > 2 && $1 != "extsz" && $1 != "total" && $1 !~ /^-/ { n++; if ($3 != "idle") busy++ }
         END { exit !(n > 0 && busy == 0) }' "$tmp/bees.status" 2>/dev/null
}
run_bees() { # mountpoint phase: until idle; "wall" is the time until it was idle
    local mnt=$1 phase=$2 start now used last="" idle_at=""
    mkdir -p "$tmp/beeshome"
    [ -f "$tmp/beeshome/beeshash.dat" ] || truncate -s "${bees_hash_mib}M" "$tmp/beeshome/beeshash.dat"
    rm -f "$tmp/bees.status"
    start=$(date +%s)
    BEESHOME=$tmp/beeshome BEESSTATUS=$tmp/bees.status python3 "$tmp/measure.py" "$tmp/time.bees" \
        "$peers/bin/bees" --no-timestamps --verbose 5 "$mnt" >"$tmp/bees.$phase.log" 2>&1 &
    bees_wrapper=$!
    while sleep 5; do
        now=$(date +%s)
        used=$(btrfs filesystem df -b "$mnt" | awk '/^(Data|Metadata),/ { printf "%s ", $0 }')
        if bees_idle && [ "$used" = "$last" ]; then
            idle_at=${idle_at:-$now}
            [ $((now - idle_at)) -ge "$idle_seconds" ] && break
        else
            idle_at=""
        fi
        last=$used
        [ $((now - start)) -ge "$bees_timeout" ] && { idle_at=timeout; break; }
    done
    kill -TERM "$bees_wrapper"
    wait "$bees_wrapper" || true
    bees_wrapper=""
    local wall
    if [ "$idle_at" = timeout ]; then wall="timeout"; else wall=$((idle_at - start)); fi
    read -r _ user sys rss rbytes rc <"$tmp/time.bees"
    echo "$wall $user $sys $rss $rbytes $rc" >"$tmp/time"
}
run_tool() { # tool [full-only]: both phases on a fresh copy of the target
    local tool=$1 mnt=$tmp/work.mnt
    cleanup # never copy over an image that is still mounted
    cp --sparse=always "$tmp/target.img" "$tmp/work.img"
    attach "$tmp/work.img" "$mnt" --direct-io=on
    rm -rf "$tmp/index.sqlite" "$tmp/hashfile" "$tmp/beeshome"
    local phase
    for phase in full nightly; do
        [ "$phase" = nightly ] && { [ -n "${2:-}" ] && break; receive_nightly "$mnt"; }
        case $tool in
        snapdedupe) measure "$tool" "$phase" "$mnt" "$SNAPDEDUPE" run --json --db "$tmp/index.sqlite" "$mnt/backup"
            index_bytes[$phase]=$(stat -c %s "$tmp/index.sqlite") ;;
        snapdedupe-before)
            measure "$tool" "$phase" "$mnt" "$SNAPDEDUPE_BEFORE" run --db "$tmp/index.sqlite" "$mnt/backup" ;;
        snapdedupe-no-prefetch)
            measure "$tool" "$phase" "$mnt" "$SNAPDEDUPE" run --test-no-prefetch --db "$tmp/index.sqlite" "$mnt/backup" ;;
        duperemove) measure "$tool" "$phase" "$mnt" "$peers/bin/duperemove" -dr --hashfile="$tmp/hashfile" "$mnt/backup" ;;
        bees) measure "$tool" "$phase" "$mnt" ;;
        esac
        # A dedupe that splits what a snapshot and its parent share would make the next
        # incremental send (btrbk's archive, a send onwards) carry those ranges again.
        [ "$phase" = full ] && send_bytes[$tool]=$(incremental_send_bytes "$mnt")
    done
    cleanup
    rm -f "$tmp/work.img"
}

declare -A index_bytes send_bytes
echo "$(date +%T) building the series (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
build_series
for tool in ${TOOLS:-snapdedupe duperemove bees}; do run_tool $tool; done
[ -n "${TOOLS:-}" ] || run_tool snapdedupe-no-prefetch full-only
[ -z "${SNAPDEDUPE_BEFORE:-}" ] || run_tool snapdedupe-before

mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
echo
echo "$(date -u +%F), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -r):" \
    "2 hosts x ~$host_mib MiB, days 0-$((days - 1)) then day $days;" \
    "target after day $((days - 1)): $(mib "$series_logical") logical, $(mib "$series_data") data on disk," \
    "$(mib "$series_distinct") of it distinct 4 KiB blocks, so at most $(mib "$series_bound") of data can go"
echo
echo "| tool | run | wall s | user s | sys s | peak RSS | read | data freed | metadata growth | net freed | files same | load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in "${results[@]}"; do
    read -r tool phase wall user sys rss rbytes rc freed growth copies integrity load <<<"$r"
    [ "$rc" = 0 ] || [ "$tool" = bees ] || tool="$tool (exit $rc)"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$tool" "$phase" "$wall" "$user" "$sys" \
        "$(mib $((rss * 1024)))" "$(mib "$rbytes")" "$(mib "$freed")" "$(mib "$growth")" \
        "$(mib $((freed - copies * growth)))" "$integrity" "$load"
done

echo
printf 'Incremental send of day %d (parent day %d, both hosts) on the target: %s before the tools' \
    $((days - 1)) $((days - 2)) "$(mib "${send_bytes[series]}") (${send_bytes[series]} bytes)"
for tool in "${!send_bytes[@]}"; do
    [ "$tool" = series ] || printf '; after %s %s bytes' "$tool" "${send_bytes[$tool]}"
done
echo

# What snapdedupe read, against what it must read: the ranges it handed the kernel to compare
# (each keeper range and every reference: the reads just before each dedupe) plus its index.
echo
echo "| snapdedupe run | fingerprinted from checksums | read for fingerprints | compared | index | read | read / (compared + index) |"
echo "|---|---|---|---|---|---|---|"
for r in "${results[@]}"; do
    read -r tool phase _ _ _ _ rbytes _ <<<"$r"
    [ "$tool" = snapdedupe ] || continue
    python3 - "$tmp/$tool.$phase.log" "$phase" "$rbytes" "${index_bytes[$phase]}" <<'PY'
import json, sys
log, phase, rbytes, index = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
j = json.load(open(log))
mib = lambda b: f"{b / 1048576:.0f} MiB"
need = j["compared_bytes"] + index
print(f"| {phase} | {mib(j['bytes_fingerprinted_from_csums'])} | {mib(j['bytes_read_for_fingerprints'])} | "
      f"{mib(j['compared_bytes'])} | {mib(index)} | {mib(rbytes)} | {rbytes / need:.2f} |")
PY
done
