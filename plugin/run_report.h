// What a run did, in figures the admin can check against `btrfs filesystem df`.
#pragma once

#include "index/block_fingerprinter.h"
#include "plugin/dedupe/dedupe_counters.h"
#include "snapshots/kernel/space_info.h"

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace snapdedupe {

// An extent to free and what it takes: the planner's decision (plugin/dedupe/extent_planner.h),
// and one line of a dry run's plan.
struct PlannedExtent {
    uint64_t disk_bytenr = 0;
    uint64_t disk_bytes = 0;     // what freeing it gains
    uint64_t references = 0;     // file extent items to move onto the keeper
    uint64_t metadata_cost = 0;  // its share of the metadata the moves rewrite (all copies)
    bool writable = false; // a writable subvolume holds one of the references
};

struct SnapshotReport {
    std::string path;
    std::vector<PlannedExtent> plan; // filled by dry runs
    std::string parent_path; // empty: a full stream
    uint64_t bytes_changed = 0;
    FingerprintCounts fingerprinted; // from the checksum tree, and read (compressed, nodatasum)
    DedupeCounters dedupe;
};

struct RunReport {
    bool dry_run = false;
    std::vector<std::string> filesystems;
    std::vector<SnapshotReport> snapshots;
    uint64_t bytes_changed = 0;
    FingerprintCounts fingerprinted;
    DedupeCounters dedupe;
    SpaceUsage before, after;
    double seconds = 0;
    // Snapshots that could not be processed at all (the run goes on and exits 1 at its end).
    std::vector<std::string> failures;

    void add(const SnapshotReport& s);
};

void print_human(std::ostream& out, const RunReport& report);
void print_json(std::ostream& out, const RunReport& report);

} // namespace snapdedupe
