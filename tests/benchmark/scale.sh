#!/usr/bin/env bash
# Benchmark: does snapdedupe's nightly run stay as cheap with 100 snapshots as with 10?
# (issue 10, "Scale rows"; done when the nightly time at 100 snapshots is within 1.2x of the
# time at 10.)
#
# The series: two source hosts (subvolumes of a scratch loop btrfs) of about HOST_MIB each, from
# real files of this machine (libraries from /usr/lib/x86_64-linux-gnu, the two hosts sharing
# two thirds of theirs; /usr/share/doc; the Python tree), a random VM image and a log. Every day
# a read-only snapshot of each host is sent, incrementally after day 0, into a second loop btrfs
# (on a loop device with direct I/O), the backup target: one directory of name.YYYYMMDD
# subvolumes, as btrbk receives them; the source keeps only the newest snapshot, the parent of
# the next send. The same churn every day on each host: an identical reinstall of the next
# CHURN_MIB of its libraries (files of at most CHURN_MIB/8, in turn, so every day has
# CHURN_MIB..1.125 x CHURN_MIB of new copies of bytes the target already holds), and unique data:
# CHURN_MIB/10 appended to the log (rotated on days ending in 5) and CHURN_MIB/10 of random 64 KiB
# writes into the VM image. The reinstall of each timed day (below) starts at the first library,
# so every timed row reinstalls the same files: a day's files may number 50 or 500 (their sizes
# vary), and that, not the snapshot count, set the rows apart before (0.54 s at 30 against 1.13 s
# at 10 in one run).
#
# Days 0 .. P1-1 are received and caught up with one untimed `run` (P1, P2, P3 = SCALE_POINTS,
# default 10 30 100); then days P1 .. P1+NIGHTS-1 (NIGHTS, default 3) are received one at a time
# and each one's nightly run timed: rows "P1" (P1 .. P1+NIGHTS-1 snapshots per lineage processed
# before). A sub-second run on cold caches varies by a third from one night to the next here, so
# the ratio below is of the medians of each point's nights. Every day up to P2-1 is received and
# caught up with an untimed nightly run (caches not dropped), days P2 .. P2+NIGHTS-1 are timed,
# and so on. After the last point, for NIGHTS nights: the day is received, retention deletes the
# oldest snapshot of each lineage (the script then waits for the cleaner, `btrfs subvolume sync`,
# so the row measures snapdedupe and not the cleaner, and its space figures are not the
# deletion's), and that nightly run is timed: rows "P3 after retention" (each run also forgets
# the deleted snapshots; the first night's are day 0's, which located nearly every block).
#
# The nights of one point run in a different part of the hour from the nights of the next, and
# the machine's load drifts over the hour: one run gave nights of 0.58, 0.58 and 0.84 s at 10 and
# 0.74, 0.93 and 1.19 s at 100. So each point is also replayed: right before its first timed
# night (that day received, not yet run) the target is unmounted and its image copied, with the
# index (its mtime and check stamp kept, so a replay's run skips the whole-index check as the
# live run does). After the last row, REPLAYS rounds (default 3; 0: none) each replay every
# point in turn, 10, 30, 100, 10, 30, 100, ...: a fresh copy of the point's image on a fresh
# loop device, the index copied back in place over the series' own (same inode), caches dropped,
# that night's `run` timed again. The ratio of the replays' medians is the figure free of the
# hour's drift; each replay must dedupe the bytes its live night did.
#
# Each run is `snapdedupe run --json --db INDEX TARGET/backup`, the index outside the target.
# Per timed row: the snapshots per lineage on disk and processed by the run; wall, user and
# system time and peak RSS (wait4 of snapdedupe); bytes read (read_bytes of snapdedupe, from
# /proc/<wrapper>/io after it is reaped); the run's changed and deduped bytes (its --json);
# data freed, metadata growth (one copy) and net freed (data plus every copy of metadata) from
# `btrfs filesystem df` after a sync; and integrity: every file of the involved snapshots (of
# each lineage: the oldest on disk, the newest processed before, and the new one; INTEGRITY=all:
# every snapshot on the target) hashes (b2sum) the same after the run as before it. Caches are
# dropped before each timed run. Prints a markdown table, each point's median wall time, and the
# ratio of the medians at the last and the first point; then the replays' table, medians and ratio.
#
# Needs root. Not run by CI. At the defaults (2 x 1 GiB hosts, 50 MiB of churn per host a day,
# 100 days) on 2 cores: about 15 minutes up to the row at 100 (the series, the daily runs, the
# timed runs and their hashing), and the target holds about 3 GiB of data (sparse images in /tmp,
# and a copy of the target as it was at each point).
# The retention row's run took 22 minutes with snapdedupe b08cb1b (forgetting the deleted
# snapshots: a LOGICAL_INO per indexed block of theirs), 14 s since d12650a (one per replaced
# file); RUN_TIMEOUT=seconds bounds each timed run (a run stopped so shows exit 124). About 25
# minutes in all with the replays (2026-12-02), each round of which takes about a minute and a half.
#
#   sudo tests/benchmark/scale.sh
#   sudo HOST_MIB=64 CHURN_MIB=4 NIGHTS=1 SCALE_POINTS="3 5 8" tests/benchmark/scale.sh   # a quick look
# SNAPDEDUPE=binary (default: packaging/build.sh's), NIGHTS, REPLAYS, INTEGRITY=all, RUN_TIMEOUT,
# KEEP=1 (keep the work dir).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "scale.sh: must run as root" >&2; exit 1; }
host_mib=${HOST_MIB:-1024}
churn_mib=${CHURN_MIB:-50}
read -r -a points <<<"${SCALE_POINTS:-10 30 100}"
integrity=${INTEGRITY:-involved}
run_timeout=${RUN_TIMEOUT:-0} # 0: none
nights=${NIGHTS:-3}
[[ $nights =~ ^[1-9][0-9]*$ ]] || { echo "scale.sh: NIGHTS must be a positive number" >&2; exit 2; }
replays=${REPLAYS:-3}
[[ $replays =~ ^[0-9]+$ ]] || { echo "scale.sh: REPLAYS must be a number" >&2; exit 2; }
prev=-$nights
for p in "${points[@]}"; do
    [[ $p =~ ^[0-9]+$ ]] && [ "$p" -ge $((prev + nights)) ] && [ "$p" -gt 0 ] ||
        { echo "scale.sh: SCALE_POINTS must be positive, each at least NIGHTS ($nights) above the one before" >&2; exit 2; }
    prev=$p
done
[ "${#points[@]}" -ge 1 ] || { echo "scale.sh: SCALE_POINTS is empty" >&2; exit 2; }
last=${points[-1]}

tmp=$(mktemp -d /tmp/snapdedupe-scale.XXXXXX)
# shellcheck source=tests/benchmark/bench-lib.sh
. "$root/tests/benchmark/bench-lib.sh"
SNAPDEDUPE=$(snapdedupe_binary)
write_measure_py 2

# Day 0 of a host and each later day's churn: host directory, host number, day, HOST_MIB,
# CHURN_MIB, state file (where the reinstall goes on the next day), and "first" to start the
# reinstall at the first library instead.
cat >"$tmp/churn.py" <<'EOF'
import os, random, shutil, sys
host, n, day, host_mib, churn_mib, state = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                            int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
rng = random.Random(f"host{n}-day{day}")
MiB = 1 << 20
def log_lines(nbytes):
    out, size = [], 0
    while size < nbytes:
        line = (f"Day {day:3d} 03:{len(out) % 60:02d} host{n} app[{rng.randrange(99999)}]: "
                f"request {rng.getrandbits(64):016x} took {rng.random():.6f}s\n")
        out.append(line)
        size += len(line)
    return "".join(out)
os.makedirs(f"{host}/var/log", exist_ok=True)
if day == 0:  # a VM image of random bytes; a first log
    with open(f"{host}/vm.img", "wb") as vm:
        for _ in range(host_mib * 20 // 100):
            vm.write(rng.randbytes(MiB))
    with open(f"{host}/var/log/syslog", "w") as log:
        log.write(log_lines(host_mib * MiB // 100))
    sys.exit(0)
# An identical reinstall of the next churn_mib of libraries: the same bytes in new extents.
# Copied by hand: a copy_file_range would share the extents instead.
libs = sorted(os.path.join(d, f) for d, _, fs in os.walk(f"{host}/usr/lib/x86_64-linux-gnu") for f in fs
              if not os.path.islink(os.path.join(d, f)))
libs = [f for f in libs if os.path.getsize(f) <= churn_mib * MiB // 8]
i = int(open(state).read()) if os.path.exists(state) and sys.argv[7:] != ["first"] else 0
done = 0
while done < churn_mib * MiB:
    f = libs[i % len(libs)]
    i += 1
    with open(f, "rb") as src, open(f + ".dpkg-new", "wb") as dst:
        while block := src.read(MiB):
            dst.write(block)
    shutil.copystat(f, f + ".dpkg-new")
    os.replace(f + ".dpkg-new", f)
    done += os.path.getsize(f)
with open(state, "w") as s:
    s.write(f"{i % len(libs)}\n")
# Unique data: the log (rotated on days ending in 5), random writes into the VM image.
if day % 10 == 5:
    os.replace(f"{host}/var/log/syslog", f"{host}/var/log/syslog.1")
with open(f"{host}/var/log/syslog", "a") as log:
    log.write(log_lines(churn_mib * MiB // 10))
with open(f"{host}/vm.img", "r+b") as vm:
    blocks = os.fstat(vm.fileno()).st_size // 4096
    for _ in range(max(1, churn_mib * MiB // 10 // 65536)):
        vm.seek(rng.randrange(blocks - 16) * 4096)
        vm.write(rng.randbytes(65536))
EOF

# --- the series ------------------------------------------------------------------------------

snap_name() { echo "$1.$(date -u -d "2026-01-01 + $2 days" +%Y%m%d)"; }
hosts=(hostA hostB)
churn() { # day [first]: each host's churn of that day
    local n
    for n in 0 1; do
        python3 "$tmp/churn.py" "$src/${hosts[n]}" $n "$1" "$host_mib" "$churn_mib" "$tmp/reinstall.$n" ${2:-}
    done
}
send_day() { # day: snapshot both hosts and send them into the target, btrbk-style
    local d=$1 h name parent
    for h in "${hosts[@]}"; do
        name=$(snap_name "$h" "$d")
        btrfs -q subvolume snapshot -r "$src/$h" "$src/snaps/$name"
        if [ "$d" -gt 0 ]; then
            parent=$(snap_name "$h" $((d - 1)))
            btrfs -q send -p "$src/snaps/$parent" "$src/snaps/$name" | btrfs -q receive "$tgt/backup"
            btrfs -q subvolume delete "$src/snaps/$parent" # the source keeps only the next parent
        else
            btrfs -q send "$src/snaps/$name" | btrfs -q receive "$tgt/backup"
        fi
    done
}
day() { churn "$1" ${2:-}; send_day "$1"; } # day [first]: one day of the series

# --- the runs --------------------------------------------------------------------------------

run_failures=0
catch_up() { # label: an untimed run, its wall time logged
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    "$SNAPDEDUPE" run --db "$tmp/index.sqlite" "$tgt/backup" >>"$tmp/catch-up.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    echo "$1 $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') $rc" >>"$tmp/catch-up.times"
    if [ "$rc" -ne 0 ]; then
        run_failures=$((run_failures + 1))
        echo "$(date +%T) catch-up run $1 exited $rc (see the log)" >&2
        tail -5 "$tmp/catch-up.log" >&2
    fi
}
on_disk() { find "$tgt/backup" -mindepth 1 -maxdepth 1 -name "$1.*" | wc -l; } # host: its snapshots
involved() { # the snapshots to hash: of each lineage the oldest, the newest two (or all)
    local h
    if [ "$integrity" = all ]; then
        (cd "$tgt/backup" && ls -1)
        return
    fi
    for h in "${hosts[@]}"; do
        (cd "$tgt/backup" && ls -1d "$h".* | LC_ALL=C sort | sed -n '1p; $p' && ls -1d "$h".* | LC_ALL=C sort | tail -2 | head -1)
    done | LC_ALL=C sort -u
}
cold_run() { # backup_dir json: one `run`, timed into $tmp/time on dropped caches (stderr: json.err)
    sync
    echo 3 >/proc/sys/vm/drop_caches
    python3 "$tmp/measure.py" "$tmp/time" timeout "$run_timeout" "$SNAPDEDUPE" run --json --db "$tmp/index.sqlite" \
        "$1" >"$2" 2>"${2%.json}.err" || true
}
run_fields() { # json field...: the run's report fields on one line, "-" for each if it has none
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
print(*(j[f] for f in sys.argv[2:]))' "$@" 2>/dev/null || printf '%s\n' "$(printf -- '- %.0s' "${@:2}")"
}
results=()
timed() { # row label, day: the nightly run, timed on cold caches
    local label=$1 day=$2 d0 m0 copies d1 m1 load snaps entries
    snaps=$(on_disk hostA)/$(on_disk hostB)
    mapfile -t entries < <(involved)
    manifest "$tgt/backup" "${entries[@]}" >"$tmp/manifest.before"
    read -r d0 m0 copies < <(space "$tgt")
    # The source's cleaner is still dropping the parent that send_day deleted; not in the timing.
    btrfs -q subvolume sync "$src"
    load=$(cut -d' ' -f1 /proc/loadavg)
    cold_run "$tgt/backup" "$tmp/run.$label.json"
    read -r d1 m1 _ < <(space "$tgt")
    local same=same
    manifest "$tgt/backup" "${entries[@]}" | cmp -s - "$tmp/manifest.before" || same=DIFFERENT
    local report
    report=$(run_fields "$tmp/run.$label.json" snapshots_processed bytes_changed deduped_bytes)
    results+=("$label $day $snaps $report $(cat "$tmp/time") $((d0 - d1)) $((m1 - m0)) $copies ${#entries[@]} $same $load")
    echo "$(date +%T) $label (day $day): ${results[-1]}" >&2
}

# --- the replays ----------------------------------------------------------------------------

release() { # mountpoint device: unmounts and detaches them now, and drops them from cleanup's lists
    local mnt=$1 dev=$2 m l keep_mounts=() keep_loops=()
    umount "$mnt"
    losetup -d "$dev"
    # Copies of one filesystem share its UUID: the kernel must not take the next copy for this one.
    btrfs device scan --forget >/dev/null 2>&1 || true
    for m in "${mounts[@]}"; do [ "$m" = "$mnt" ] || keep_mounts+=("$m"); done
    for l in "${loops[@]}"; do [ "$l" = "$dev" ] || keep_loops+=("$l"); done
    mounts=("${keep_mounts[@]}") loops=("${keep_loops[@]}")
}
save_point() { # point: the target and the index as they are before the point's first timed night
    umount "$tgt"
    cp --sparse=always "$tmp/target.img" "$tmp/point-$1.img"
    mount -o noatime "$tgt_dev" "$tgt"
    cp -p --preserve=xattr "$tmp/index.sqlite" "$tmp/point-$1.sqlite"
}
replay_results=()
replay() { # point round: that night again, on a fresh copy of the point's image and index
    local p=$1 r=$2 img=$tmp/replay-$1-$2.img mnt=$tmp/replay.mnt dev
    cp --sparse=always "$tmp/point-$p.img" "$img"
    rm -f "$tmp/index.sqlite-wal" "$tmp/index.sqlite-shm"
    cp -p --preserve=xattr "$tmp/point-$p.sqlite" "$tmp/index.sqlite" # in place: the same inode
    attach "$img" "$mnt" --direct-io=on
    dev=${loops[-1]}
    cold_run "$mnt/backup" "$tmp/replay.$p.$r.json"
    release "$mnt" "$dev"
    rm "$img"
    replay_results+=("$p $r $(run_fields "$tmp/replay.$p.$r.json" deduped_bytes) $(cat "$tmp/time")")
    echo "$(date +%T) replay of $p, round $r: ${replay_results[-1]}" >&2
}

# --- the benchmark ---------------------------------------------------------------------------

started=$(date +%s)
echo "$(date +%T) building days 0-$((points[0] - 1)) (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
src=$tmp/src.mnt tgt=$tmp/tgt.mnt
new_btrfs "$tmp/src.img" "$src" $((host_mib * 6 + churn_mib * 40 + 4096))
new_btrfs "$tmp/target.img" "$tgt" $((host_mib * 6 + (last + 2 * nights + 1) * churn_mib * 5 + 4096)) --direct-io=on
tgt_dev=${loops[-1]}
mkdir "$src/snaps" "$tgt/backup"
for n in 0 1; do
    btrfs -q subvolume create "$src/${hosts[n]}"
    host_files $n | tar -C / --files-from=- -cf - | tar -C "$src/${hosts[n]}" -xf -
done
day 0
for ((d = 1; d < points[0]; d++)); do day $d; done
echo "$(date +%T) first run over days 0-$((points[0] - 1))" >&2
catch_up "first(days-0-$((points[0] - 1)))"
d=${points[0]}
for p in "${points[@]}"; do
    for (( ; d < p; d++)); do day $d; catch_up "day$d"; done
    for ((night = 1; night <= nights; night++, d++)); do
        echo "$(date +%T) day $d" >&2
        day "$d" first
        [ "$night" -gt 1 ] || [ "$replays" -eq 0 ] || save_point "$p"
        timed "$p" "$d"
    done
done
for ((night = 1; night <= nights; night++, d++)); do
    day $d first
    for h in "${hosts[@]}"; do # retention: the oldest of each lineage goes
        btrfs -q subvolume delete "$tgt/backup/$(cd "$tgt/backup" && ls -1d "$h".* | LC_ALL=C sort | head -1)"
    done
    btrfs -q subvolume sync "$tgt"
    timed "$last-after-retention" "$d"
done
read -r target_data _ < <(space "$tgt")
index_size=$(stat -c %s "$tmp/index.sqlite")
if [ "$replays" -gt 0 ]; then
    echo "$(date +%T) replaying each point's first night, $replays rounds" >&2
    release "$tgt" "$tgt_dev"
    for ((round = 1; round <= replays; round++)); do
        for p in "${points[@]}"; do replay "$p" "$round"; done
    done
fi
elapsed=$(($(date +%s) - started))

mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
echo
echo "$(date -u +%F), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -r):" \
    "2 hosts x ~$host_mib MiB, $churn_mib MiB of churn per host a day (+$(awk -v c="$churn_mib" 'BEGIN { printf "%g", c / 5 }') MiB unique)," \
    "days 0-$d; at the end $(mib "$target_data") of data on the target, index $(mib "$index_size");" \
    "$((elapsed / 60)) min in all"
echo
echo "| snapshots | day | on disk A/B | processed | wall s | user s | sys s | peak RSS | read | changed | deduped | data freed | metadata growth | net freed | files same (snapshots) | load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in "${results[@]}"; do
    read -r label day snaps processed changed deduped wall user sys rss rbytes rc freed growth copies nsnaps same load <<<"$r"
    [ "$rc" = 0 ] || label="$label (exit $rc)"
    label=${label/-after-retention/ after retention}
    [ "$changed" = - ] || changed=$(mib "$changed")
    [ "$deduped" = - ] || deduped=$(mib "$deduped")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s |\n' "$label" "$day" "$snaps" \
        "$processed" "$wall" "$user" "$sys" "$(mib $((rss * 1024)))" "$(mib "$rbytes")" "$changed" "$deduped" \
        "$(mib "$freed")" "$(mib "$growth")" "$(mib $((freed - copies * growth)))" "$same" "$nsnaps" "$load"
done
echo
fields_of() { # n label row...: field n of each row whose first field is label
    local n=$1 label=$2
    shift 2
    printf '%s\n' "$@" | awk -v n="$n" -v l="$label" '$1 == l { print $n }'
}
median() { sort -g | awk '{ w[NR] = $1 } END { print NR % 2 ? w[(NR + 1) / 2] : (w[NR / 2] + w[NR / 2 + 1]) / 2 }'; }
median_wall() { fields_of 7 "$1" "${results[@]}" | median; } # label: the median wall time of its nights
ratio_line() { # median at the first point, at the last, what they are medians of
    awk -v a="$1" -v b="$2" -v p="${points[0]}" -v q="$last" -v of="$3" \
        'BEGIN { printf "nightly wall at %d / at %d (medians of the %s): %.2f (done when <= 1.2)\n", q, p, of, b / a }'
}
for p in "${points[@]}" "$last-after-retention"; do
    echo "median nightly wall at ${p/-after-retention/ after retention}: $(median_wall "$p") s"
done
ratio_line "$(median_wall "${points[0]}")" "$(median_wall "$last")" nights
if [ "$replays" -gt 0 ]; then
    median_replay() { fields_of 4 "$1" "${replay_results[@]}" | median; } # point: the median wall of its replays
    echo
    echo "Replays of each point's first night, interleaved ($replays rounds):"
    echo
    echo "| snapshots | round | wall s | user s | sys s | peak RSS | read | deduped | as the live night |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for r in "${replay_results[@]}"; do
        read -r point round deduped wall user sys rss rbytes rc <<<"$r"
        [ "$rc" = 0 ] || round="$round (exit $rc)"
        live=$(fields_of 6 "$point" "${results[@]}" | head -1) # what its first live night deduped
        [ "$deduped" = "$live" ] && same=same || same="DIFFERENT ($live)"
        [ "$deduped" = - ] || deduped=$(mib "$deduped")
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$point" "$round" "$wall" "$user" "$sys" \
            "$(mib $((rss * 1024)))" "$(mib "$rbytes")" "$deduped" "$same"
    done
    echo
    for p in "${points[@]}"; do echo "median replay wall at $p: $(median_replay "$p") s"; done
    ratio_line "$(median_replay "${points[0]}")" "$(median_replay "$last")" replays
fi
awk '$1 ~ /^day/ { n++; s += $2; if ($2 > m) m = $2 } $1 ~ /^first/ { f = $2 }
     END { printf "untimed runs (warm caches): the first %.1f s; %d daily, mean %.2f s, max %.2f s\n", f, n, n ? s / n : 0, m }' \
    "$tmp/catch-up.times"
[ "$run_failures" -eq 0 ] || echo "$run_failures untimed runs failed"
