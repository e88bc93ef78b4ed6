// `snapdedupe status`: per filesystem, its index, its lineages (the newest snapshot processed
// and those not processed yet), the journal's deferred work, and the history of runs. Reads the
// index without changing it (index/index_file.h read_index_readonly) and never writes.
#pragma once

#include "plugin/status_report.h"

#include <optional>
#include <string>
#include <vector>

namespace snapdedupe {

struct StatusOptions {
    // Found as `run` finds them, and compared with the index of their filesystem. None: every
    // index in /var/lib/snapdedupe, or the one named by db_path, without looking for snapshots.
    std::vector<std::string> paths;
    std::optional<std::string> db_path; // none: /var/lib/snapdedupe/<fs-uuid>.sqlite
};

// How many of the last runs each filesystem's status lists (the totals count every run).
inline constexpr int kStatusRecentRuns = 10;

// Throws PathError (a PATH missing, not on btrfs, without snapshots), UsageError (--db with
// paths on several filesystems), IndexError/SqliteError (an index unusable), SysError.
std::vector<FilesystemStatus> gather_status(const StatusOptions& options);

} // namespace snapdedupe
