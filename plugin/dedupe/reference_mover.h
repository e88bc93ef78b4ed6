// Executing an extent plan: FIDEDUPERANGE of every planned reference onto its keeper.
#pragma once

#include "plugin/dedupe/extent_planner.h"
#include "plugin/run_report.h"

#include "plugin/dedupe/deduper.h"

#include <vector>

namespace snapdedupe {

struct MoveOutcome {
    std::vector<bool> moved; // per duplicate block: every extent holding it was freed
    std::vector<bool> extent_busy;        // per planned extent: some reference was busy (EAGAIN)
    std::vector<DeferredMove> busy_moves; // per busy extent, the moves of the references that did
                                          // not move at all: what a retry starts from
    DedupeCounters counters;       // busy extents are left to the caller to count
};

class ReferenceMover {
public:
    // `fs_fd`: any fd on the filesystem; files are opened by handle through it.
    explicit ReferenceMover(const LabeledFd& filesystem) : fs_(filesystem) {}

    // `duplicate_count`: the number of duplicate blocks the plan was made from.
    MoveOutcome execute(const ExtentPlan& plan, size_t duplicate_count);

private:
    void run_moves(const std::vector<PlannedMove>& moves, const std::vector<size_t>& selected,
                   std::vector<DedupeResult>& results);

    const LabeledFd& fs_;
};

} // namespace snapdedupe
