// What a run did, in figures the admin can check against `btrfs filesystem df`.
#pragma once

#include "snapshots/kernel/btrfs_ioctl.h"

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace snapdedupe {

// Counters of the dedupe stage, summed over snapshots and filesystems.
struct DedupeCounters {
    uint64_t duplicate_bytes = 0;        // new blocks whose bytes were already indexed elsewhere
    uint64_t deduped_bytes = 0;          // of those, bytes now shared with the older copy
    uint64_t differs_bytes = 0;          // bytes the kernel found different at dedupe time
    uint64_t skipped_writable_bytes = 0; // left alone: a writable subvolume references them (--readonly-only)
    uint64_t skipped_partial_bytes = 0;  // left alone: their extent also holds bytes no copy of which exists
    uint64_t skipped_cost_bytes = 0;     // left alone: moving them would cost more metadata than it frees
    uint64_t extents_planned = 0;        // duplicate extents whose every reference is to move
    uint64_t extents_moved = 0;          // of those, extents whose every reference moved: freed
    uint64_t predicted_freed_bytes = 0;  // disk bytes of the planned extents
    uint64_t predicted_metadata_bytes = 0; // estimated metadata the moves rewrite (all copies)
    uint64_t large_fanout_extents = 0;   // extents with more references than one ioctl carries
    uint64_t references_moved = 0;       // file ranges (in any snapshot) moved onto the keeper
    uint64_t dedupe_errors = 0;          // ranges the kernel refused with an error
    uint64_t busy_deferred = 0;          // ranges still EAGAIN (a send was running) after retries
    void add(const DedupeCounters& o);
};

// One line of a dry run's plan: an extent to free and what it takes.
struct PlannedExtentReport {
    uint64_t disk_bytenr = 0;
    uint64_t disk_bytes = 0;
    uint64_t references = 0;
    uint64_t metadata_cost = 0;
    bool writable = false; // a writable subvolume holds one of the references
};

struct SnapshotReport {
    std::string path;
    std::vector<PlannedExtentReport> plan; // filled by dry runs
    std::string parent_path; // empty: a full stream
    uint64_t bytes_changed = 0;
    uint64_t bytes_hashed = 0;
    DedupeCounters dedupe;
};

struct RunReport {
    bool dry_run = false;
    std::vector<std::string> filesystems;
    std::vector<SnapshotReport> snapshots;
    uint64_t bytes_changed = 0;
    uint64_t bytes_hashed = 0;
    DedupeCounters dedupe;
    SpaceUsage before, after;
    double seconds = 0;

    void add(const SnapshotReport& s);
};

void print_human(std::ostream& out, const RunReport& report);
void print_json(std::ostream& out, const RunReport& report);

} // namespace snapdedupe
