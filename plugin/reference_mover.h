// Executing an extent plan: FIDEDUPERANGE of every planned reference onto its keeper.
#pragma once

#include "plugin/extent_planner.h"
#include "plugin/run_report.h"

#include <vector>

namespace snapdedupe {

struct MoveOutcome {
    std::vector<bool> moved; // per duplicate block: every extent holding it was freed
    std::vector<bool> busy;  // per duplicate block: an extent holding it was busy (EAGAIN)
    DedupeCounters counters;
};

class ReferenceMover {
public:
    // `fs_fd`: any fd on the filesystem; files are opened by handle through it.
    explicit ReferenceMover(int fs_fd) : fs_fd_(fs_fd) {}

    // `duplicate_count`: the number of duplicate blocks the plan was made from.
    // `busy_retries`: how often a range that is EAGAIN (a send reads its root) is retried
    // before its extent is reported busy: few during the run, more at its end.
    MoveOutcome execute(const ExtentPlan& plan, size_t duplicate_count, int busy_retries);

private:
    int fs_fd_;
};

} // namespace snapdedupe
