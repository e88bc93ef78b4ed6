// The history row of one filesystem's share of a run (index/run_history.h), appended when that
// share ends, also when it ends in an error: a failed night is what an admin looks for first.
#pragma once

#include "index/run_history.h"
#include "index/sqlite_db.h"
#include "plugin/run_report.h"
#include "snapshots/kernel/error.h"

#include <chrono>
#include <cstdint>
#include <exception>

namespace snapdedupe {

class RunRecorder {
public:
    // This filesystem's turn begins: the clock starts, and what `report` holds from filesystems
    // before it is noted, so that only this one's share is recorded.
    explicit RunRecorder(const RunReport& report);

    // The share ended normally: exit code 1 if a snapshot could not be processed or a range
    // failed (as the command line decides for the whole run), else 0. Throws what SQLite throws.
    void succeeded(Database& db, const RunReport& report) const;
    // The share ended in `error`, which the caller rethrows: the row gets its exit code. Never
    // throws, so that the error itself reaches the admin; a row that cannot be written is lost.
    void failed(Database& db, const RunReport& report, const std::exception& error) const noexcept;

    // The row, without writing it (for tests).
    RunRecord record(const RunReport& report, ExitCode exit_code) const;

private:
    int64_t started_at_;
    std::chrono::steady_clock::time_point started_;
    size_t snapshots_, failures_;
    uint64_t bytes_hashed_, bytes_deduped_, dedupe_errors_;
    SpaceUsage before_, after_;
};

} // namespace snapdedupe
