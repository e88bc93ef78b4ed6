// The history of runs in the index (table `runs`): what each run did on this filesystem, so an
// admin can ask `snapdedupe status` instead of digging through the journal.
#pragma once

#include "index/sqlite_db.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace snapdedupe {

// One run's share of one filesystem: its row in `runs`.
struct RunRecord {
    int64_t started_at = 0; // unix seconds
    double seconds = 0;
    int exit_code = 0;
    uint64_t snapshots = 0; // processed
    uint64_t bytes_hashed = 0;
    uint64_t bytes_deduped = 0;
    // From the usage before and after (RunReport::before/after); unset when the run failed before
    // it measured both.
    std::optional<int64_t> data_freed;      // one copy of the data
    std::optional<int64_t> metadata_growth; // one copy of the metadata
    std::optional<int64_t> net_freed;       // every copy of data and metadata
};

// Every recorded run summed up.
struct RunTotals {
    uint64_t runs = 0;
    std::optional<int64_t> since; // the first recorded run's start, unix seconds
    uint64_t failed_runs = 0;     // exit code not 0
    uint64_t snapshots = 0;
    uint64_t bytes_hashed = 0;
    uint64_t bytes_deduped = 0;
    int64_t data_freed = 0; // over the runs that measured it
    int64_t metadata_growth = 0;
    int64_t net_freed = 0;
};

// Appends `run`. The index must hold the table (open_index adds it to an older index).
void append_run(Database& db, const RunRecord& run);

// The last `limit` runs, newest first; none when the index has no history yet.
std::vector<RunRecord> recent_runs(Database& db, int limit);

// Every recorded run summed up; zeros when the index has no history yet.
RunTotals run_totals(Database& db);

} // namespace snapdedupe
