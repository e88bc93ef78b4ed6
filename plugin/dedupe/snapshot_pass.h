// One snapshot's pass: learn what changed, fingerprint what is new, dedupe what is duplicate.
#pragma once

#include "index/block_fingerprinter.h"
#include "index/block_index.h"
#include "plugin/dedupe/extent_planner.h"
#include "plugin/dedupe/reference_mover.h"
#include "plugin/run_report.h"
#include "snapshots/change_set.h"
#include "snapshots/snapshot_list.h"

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <tuple>

namespace snapdedupe {

struct PassPolicy {
    bool dry_run = false;
    bool readonly_only = false; // leave extents that a writable subvolume references
    // A test seam, set only by the command line's hidden test options: called before each
    // batch's dedupe calls, so a test can change files between fingerprinting and dedupe.
    std::function<void()> before_dedupe;
};

class SnapshotPass {
public:
    // `queries` answers the planner and the mover; `journal` records each move before it runs.
    SnapshotPass(FilesystemQueries& queries, MoveJournal& journal, BlockIndex& index, BlockFingerprinter fingerprinter,
                 MetadataGeometry geometry, PassPolicy policy);

    // Diffs `snapshot` against `parent` (nullptr: a full stream), unless `diffed` holds that
    // diff already (plugin/diff_ahead.h), fingerprints the changed blocks
    // the index does not know, dedupes the duplicates and records all of it in the index.
    // The caller wraps it in one transaction. `progress`, if set, is called after each file of
    // the change set (and its batch's dedupe, if one ran) with the bytes of the change set
    // done and its total: for a progress line; the engine prints nothing.
    SnapshotReport process(const Snapshot& snapshot, const Snapshot* parent, const std::string& lineage,
                           const std::function<void(uint64_t done, uint64_t total)>& progress = {},
                           std::optional<ChangeSet> diffed = std::nullopt);

    // Finishes the moves the journal holds: left by a run that was killed, by a busy root
    // (EAGAIN) or by an error, in this run or an earlier one. Rounds with doubling pauses
    // within `budget`; what still does not move stays in the journal for the next run. Only
    // the `final` call of a run counts what stays (busy_deferred, dedupe_errors).
    // `before_each_round`, if set, runs before a round takes the journal's rows: the run
    // commits there, so that the moves settled so far (held by IndexJournal until a commit)
    // leave the journal and are not taken as moves still to make.
    DedupeCounters finish_journal(std::chrono::milliseconds budget, bool final,
                                  const std::function<void()>& before_each_round = {});

private:
    // The oldest indexed copy that still opens; copies that no longer open are forgotten.
    std::optional<IndexedBlock> find_keeper(const BlockContent& content, const BlockKey& key);
    // Adds the file's changed blocks that no indexed or pending block shares to the chunk.
    void scan_file(const LabeledFd& snapshot, const FileChange& change);
    // Fingerprints the chunk's blocks (few tree searches for all) and indexes each, or adds
    // it to `duplicates` with its keeper; empties the chunk.
    void index_chunk(SnapshotReport& report, std::vector<DuplicateBlock>& duplicates);
    // What becomes of the duplicates that stay where they are.
    enum class Unmoved {
        leave,             // journal entries: not blocks, nothing to index
        index,             // recorded in the index as locations of their bytes
        hold_cost_skipped, // the same, but those skipped for cost wait for second_look()
    };
    // Plans and (unless a dry run) moves; records what stayed as `unmoved` says.
    // Counts busy extents in busy_deferred and takes them out of the plan's predictions.
    DedupeCounters dedupe(const std::vector<DuplicateBlock>& duplicates, std::vector<PlannedExtent>* plan_out,
                          Unmoved unmoved);
    DedupeCounters dedupe_during_run(const std::vector<DuplicateBlock>& duplicates, SnapshotReport& report,
                                     Unmoved unmoved);
    // Plans the duplicates held back as skipped for cost once more, with their keepers as
    // they are now, and indexes those that still stay. A leaf is copied once however many of
    // its references move: an extent refused for a leaf it alone would have paid for costs
    // nothing once a later move of the pass has copied that leaf.
    DedupeCounters second_look(SnapshotReport& report);
    // The journal's moves as duplicates to plan again, each with its keeper where it is now;
    // all leave the journal (those planned again are recorded again by the mover).
    std::vector<DuplicateBlock> take_journal();
    std::optional<BlockLocation> keeper_now(const DeferredMove& m);

    FilesystemQueries& queries_;
    BlockIndex& index_;
    BlockFingerprinter fingerprinter_;
    PassPolicy policy_;
    ExtentPlanner planner_;
    ReferenceMover mover_;
    // Rows above it were indexed during this run: their keepers may be exchanged for a copy
    // that costs less to keep (ExtentPlanner::plan).
    int64_t last_row_before_run_ = 0;
    std::map<InodeHandle, bool> opens_;
    std::set<std::tuple<uint64_t, uint64_t>> pending_; // keys of this pass's duplicates
    std::vector<FileBlocks> chunk_;                    // scanned, not yet fingerprinted
    std::set<std::tuple<uint64_t, uint64_t>> chunk_keys_;
    size_t chunk_blocks_ = 0;
    std::vector<DuplicateBlock> cost_skipped_; // held for second_look(), not yet indexed
};

} // namespace snapdedupe
