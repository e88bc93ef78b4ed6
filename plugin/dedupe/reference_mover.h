// Executing an extent plan: FIDEDUPERANGE of every planned reference onto its keeper.
#pragma once

#include "plugin/dedupe/deduper.h"
#include "plugin/dedupe/extent_planner.h"
#include "plugin/dedupe/filesystem_queries.h"
#include "plugin/dedupe/move_journal.h"
#include "plugin/run_report.h"

#include <vector>

namespace snapdedupe {

struct MoveOutcome {
    std::vector<bool> moved; // per duplicate block: every extent holding it was freed
    std::vector<bool> extent_busy; // per planned extent: some reference was busy (EAGAIN)
    std::vector<bool> extent_kept; // per planned extent: some move stays in the journal (busy,
                                   // an error that can pass, not tried): planned again later
    DedupeCounters counters;       // busy extents are left to the caller to count
};

class ReferenceMover {
public:
    // `fs` opens the files and dedupes; `journal` records every move before it runs and keeps
    // those that did not settle. Both must outlive the mover.
    ReferenceMover(FilesystemQueries& fs, MoveJournal& journal) : fs_(fs), journal_(journal) {}

    // `duplicate_count`: the number of duplicate blocks the plan was made from.
    MoveOutcome execute(const ExtentPlan& plan, size_t duplicate_count);

private:
    // Returns the bytes handed to the kernel to compare: each source range and every target.
    uint64_t run_moves(const std::vector<PlannedMove>& moves, const std::vector<size_t>& selected,
                       std::vector<DedupeResult>& results);

    FilesystemQueries& fs_;
    MoveJournal& journal_;
};

} // namespace snapdedupe
