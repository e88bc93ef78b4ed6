// `snapdedupe run`: every new read-only snapshot under the given paths, lineage by lineage.
#pragma once

#include "plugin/run_report.h"
#include "plugin/test_seams.h"
#include "snapshots/kernel/error.h"

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace snapdedupe {

struct RunOptions {
    std::vector<std::string> paths;
    std::optional<std::string> db_path; // none: /var/lib/snapdedupe/<fs-uuid>.sqlite
    bool dry_run = false;
    bool readonly_only = false; // leave alone extents that a writable subvolume references
    bool no_wait = false;       // a filesystem whose maintenance lock is held: BusyError, not wait
    // Any path on a filesystem to visit even with nothing to process there, so its index
    // forgets deleted snapshots (`run --queue` after snapper deleted one).
    std::vector<std::string> forget_on;
    TestSeams seams; // hidden --test-* options only
};

inline constexpr const char* kDefaultIndexDir = "/var/lib/snapdedupe";

// Validates every path before it opens or changes anything. Throws PathError, UsageError,
// IndexError/SqliteError (index unusable), send::SendStreamError, SysError.
RunReport run(const RunOptions& options);

} // namespace snapdedupe
