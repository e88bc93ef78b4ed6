// `snapdedupe run`: every new read-only snapshot under the given paths, lineage by lineage.
#pragma once

#include "plugin/run_report.h"
#include "plugin/test_seams.h"
#include "snapshots/kernel/error.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace snapdedupe {

// Where a run is, for a live progress line (plugin/cli/progress_line.h): the run reports,
// the command line prints.
struct RunProgress {
    size_t snapshot = 0;  // the one being processed, from 1
    size_t snapshots = 0; // to process: those the index does not know, on the filesystems reached so far
    std::string path;     // the one being processed
    uint64_t bytes_done = 0;  // of its change set
    uint64_t bytes_total = 0; // its changed bytes; 0 until its send stream has been read
};

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
    // Called as the run works, often (after each changed file); empty: nobody watches.
    std::function<void(const RunProgress&)> progress;
};

inline constexpr const char* kDefaultIndexDir = "/var/lib/snapdedupe";

// Validates every path before it opens or changes anything. Throws PathError, UsageError,
// IndexError/SqliteError (index unusable), send::SendStreamError, SysError.
RunReport run(const RunOptions& options);

} // namespace snapdedupe
