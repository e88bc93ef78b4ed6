# Shared by the benchmark scripts (sourced, not run): a work directory whose loop filesystems are
# always unmounted and detached, the timing wrapper, the space and integrity figures, and the
# hosts' files. The sourcing script sets `root`, `tmp` and `host_mib` first; it may define
# bench_stop_tools, which cleanup calls before it unmounts anything (a tool still running).

mounts=() loops=()
cleanup() {
    set +e
    declare -F bench_stop_tools >/dev/null && bench_stop_tools
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do mountpoint -q "${mounts[i]}" && umount "${mounts[i]}"; done
    for dev in "${loops[@]}"; do losetup -d "$dev" 2>/dev/null; done
    mounts=() loops=()
}
trap 'cleanup; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

stripped() { # binary name: prints the path of a stripped copy in $tmp, as the package ships it
    # (CPACK_STRIP_FILES): with caches dropped, loading a debug build's 18 MB would count in
    # every run's read_bytes.
    strip -o "$tmp/$2" "$1"
    echo "$tmp/$2"
}
snapdedupe_binary() { # prints the stripped snapdedupe: $SNAPDEDUPE, or packaging/build.sh's
    local binary=${SNAPDEDUPE:-}
    if [ -z "$binary" ]; then
        "$root/packaging/build.sh" >/dev/null
        binary=${BUILD_DIR:-$root/build}/plugin/snapdedupe
    fi
    stripped "$binary" snapdedupe
}

# $tmp/measure.py FILE COMMAND...: runs the command, then writes "wall user sys maxrss_kib
# read_bytes exit" to FILE, times with $1 decimals. read_bytes: the kernel adds a reaped child's
# I/O counters to its parent's, so this process's /proc/self/io grows by what the tool and its
# children read from storage. SIGTERM is passed on (bees).
write_measure_py() { # decimals
    cat >"$tmp/measure.py" <<EOF
import os, signal, sys, time
def read_bytes():
    with open("/proc/self/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("read_bytes:"))
r0, t0 = read_bytes(), time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
def stop(*_):  # passed on; a tool that does not stop within a minute is killed
    os.kill(pid, signal.SIGTERM)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(60)
signal.signal(signal.SIGTERM, stop)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t0
with open(sys.argv[1], "w") as out:
    out.write(f"{wall:.$1f} {ru.ru_utime:.$1f} {ru.ru_stime:.$1f} {ru.ru_maxrss} {read_bytes() - r0} "
              f"{os.waitstatus_to_exitcode(status)}\n")
EOF
}

# --- loop filesystems ------------------------------------------------------------------------

attach() { # image mountpoint [losetup option...]: a fresh loop device, mounted
    local image=$1 mnt=$2 dev
    shift 2
    dev=$(losetup -f --show "$@" "$image")
    loops+=("$dev")
    mkdir -p "$mnt"
    mount -o noatime "$dev" "$mnt"
    mounts+=("$mnt")
}
new_btrfs() { # image mountpoint size_mib [losetup option...]: a fresh btrfs on a fresh loop device
    local image=$1 mnt=$2 size=$3 dev
    shift 3
    truncate -s "${size}M" "$image"
    dev=$(losetup -f --show "$@" "$image")
    loops+=("$dev")
    mkfs.btrfs -q -f "$dev" >/dev/null
    mkdir -p "$mnt"
    mount -o noatime "$dev" "$mnt"
    mounts+=("$mnt")
}
space() { # mountpoint: "data_used metadata_used metadata_copies" (bytes), after a commit
    btrfs filesystem sync "$1" >/dev/null
    btrfs filesystem df -b "$1" | awk '
        /^Data,/     { split($0, a, "used="); d = a[2] + 0 }
        /^Metadata,/ { split($0, a, "used="); m = a[2] + 0; c = ($2 ~ /DUP|RAID1|RAID10/) ? 2 : 1 }
        END { printf "%.0f %.0f %d\n", d, m, c }'
}
manifest() { # directory [entry...]: every file's b2sum, in a stable order
    local dir=$1
    shift
    (cd "$dir" && find "${@:-.}" -type f -print0 | xargs -0 -r -P2 -n64 b2sum) | LC_ALL=C sort
}

# --- the hosts' files ------------------------------------------------------------------------

pick() { # budget_mib filter(awk condition on NR) dir...: paths (relative to /) within the budget
    local budget=$1 cond=$2
    shift 2
    find "$@" -xdev \( -type f -o -type l \) -printf '%s %P\n' | LC_ALL=C sort -k2 |
        awk -v b=$((budget << 20)) -v pre="${1#/}/" "$cond"' { t += $1; if (t <= b) print pre substr($0, index($0, " ") + 1) }'
}
host_files() { # host number (0 or 1): the host's files from this machine, about $host_mib
    local keep='NR % 4 != 3'
    [ "$1" -eq 1 ] && keep='NR % 4 != 0' # two hosts, two thirds of their libraries shared
    pick $((host_mib * 50 / 100)) "$keep" /usr/lib/x86_64-linux-gnu
    pick $((host_mib * 12 / 100)) 1 /usr/share/doc
    pick $((host_mib * 8 / 100)) 1 /usr/lib/python3.11
}
