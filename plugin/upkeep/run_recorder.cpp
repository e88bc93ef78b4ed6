#include "plugin/upkeep/run_recorder.h"

#include <ctime>

namespace snapdedupe {

namespace {

// What `now` holds beyond `then`: the report's usage is summed over filesystems.
SpaceUsage added_since(const SpaceUsage& then, const SpaceUsage& now)
{
    return {now.data_used - then.data_used, now.metadata_used - then.metadata_used, now.raw_used - then.raw_used};
}

int64_t signed_diff(uint64_t a, uint64_t b)
{
    return static_cast<int64_t>(a) - static_cast<int64_t>(b);
}

} // namespace

RunRecorder::RunRecorder(const RunReport& report)
    : started_at_(static_cast<int64_t>(std::time(nullptr))),
      started_(std::chrono::steady_clock::now()),
      snapshots_(report.snapshots.size()),
      failures_(report.failures.size()),
      bytes_hashed_(report.fingerprinted.total()),
      bytes_deduped_(report.dedupe.deduped_bytes),
      dedupe_errors_(report.dedupe.dedupe_errors),
      before_(report.before),
      after_(report.after)
{
}

RunRecord RunRecorder::record(const RunReport& report, ExitCode exit_code) const
{
    RunRecord r;
    r.started_at = started_at_;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    r.exit_code = static_cast<int>(exit_code);
    r.snapshots = report.snapshots.size() - snapshots_;
    r.bytes_hashed = report.fingerprinted.total() - bytes_hashed_;
    r.bytes_deduped = report.dedupe.deduped_bytes - bytes_deduped_;
    // Every filesystem uses some raw space, so a share that measured its usage added to it.
    SpaceUsage before = added_since(before_, report.before);
    SpaceUsage after = added_since(after_, report.after);
    if (before.raw_used != 0 && after.raw_used != 0) {
        r.data_freed = signed_diff(before.data_used, after.data_used);
        r.metadata_growth = signed_diff(after.metadata_used, before.metadata_used);
        r.net_freed = signed_diff(before.raw_used, after.raw_used);
    }
    return r;
}

void RunRecorder::succeeded(Database& db, const RunReport& report) const
{
    bool failed = report.failures.size() > failures_ || report.dedupe.dedupe_errors > dedupe_errors_;
    append_run(db, record(report, failed ? ExitCode::kFailure : ExitCode::kOk));
}

void RunRecorder::failed(Database& db, const RunReport& report, const std::exception& error) const noexcept
{
    try {
        append_run(db, record(report, exit_code_of(error)));
    } catch (...) {
        // The index may be what failed (a full disk, a lock); the run's error says more than ours.
    }
}

} // namespace snapdedupe
