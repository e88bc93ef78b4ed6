// One snapshot's pass: read what changed, hash what is new, dedupe what is duplicate.
#pragma once

#include "index/block_index.h"
#include "plugin/dedupe/extent_planner.h"
#include "plugin/dedupe/reference_mover.h"
#include "plugin/run_report.h"
#include "snapshots/change_set.h"
#include "snapshots/snapshot_list.h"

#include <map>
#include <optional>
#include <set>
#include <tuple>

namespace snapdedupe {

struct PassPolicy {
    bool dry_run = false;
    bool readonly_only = false; // leave extents that a writable subvolume references
};

class SnapshotPass {
public:
    SnapshotPass(const LabeledFd& filesystem, BlockIndex& index, MetadataGeometry geometry, PassPolicy policy);

    // Diffs `snapshot` against `parent` (nullptr: a full stream), hashes the changed blocks
    // the index does not know, dedupes the duplicates and records all of it in the index.
    // The caller wraps it in one transaction.
    SnapshotReport process(const Snapshot& snapshot, const Snapshot* parent, const std::string& lineage);

    // Retries the duplicates left busy (EAGAIN) by this or an earlier run; those still busy
    // stay deferred for the next run.
    DedupeCounters retry_deferred();

private:
    // The oldest indexed copy that still opens; copies that no longer open are forgotten.
    std::optional<IndexedBlock> find_keeper(uint64_t hash, const DataBlock& block);
    void scan_file(const LabeledFd& snapshot, const FileChange& change, SnapshotReport& report,
                   std::vector<DuplicateBlock>& duplicates);
    // Plans and (unless a dry run) moves; records what stayed in the index.
    // Counts busy extents in busy_deferred and takes them out of the plan's predictions;
    // `index_unmoved`: record the duplicates that stayed as locations of their bytes.
    DedupeCounters dedupe(const std::vector<DuplicateBlock>& duplicates, std::vector<PlannedExtentReport>* plan_out,
                          bool index_unmoved);
    DedupeCounters dedupe_during_run(const std::vector<DuplicateBlock>& duplicates, SnapshotReport& report);
    // The deferred moves whose reference and keeper still open, as duplicates to plan again;
    // removed from the index.
    std::vector<DuplicateBlock> load_deferred();

    const LabeledFd& fs_;
    BlockIndex& index_;
    PassPolicy policy_;
    ExtentPlanner planner_;
    ReferenceMover mover_;
    std::map<InodeHandle, bool> opens_;
    std::set<std::tuple<uint64_t, uint64_t>> pending_; // keys of this pass's duplicates
    std::vector<uint8_t> buffer_;
};

} // namespace snapdedupe
