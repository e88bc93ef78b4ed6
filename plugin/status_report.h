// What `snapdedupe status` tells the admin about one filesystem, and its printers (human and
// JSON, plugin/cli/status_report.cpp). Gathered by plugin/status.h.
#pragma once

#include "index/index_summary.h"
#include "index/run_history.h"

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace snapdedupe {

struct LineageStatus {
    std::string key;    // the uuid of the lineage's origin (snapshots/snapshot_list.h)
    bool found = false; // under the PATHs given; false: only in the index
    uint64_t processed = 0; // its snapshots in the index
    std::optional<IndexedSnapshot> newest_processed;
    std::vector<std::string> unprocessed; // paths, oldest first
};

struct FilesystemStatus {
    std::string uuid;               // empty: an index named alone that records none
    std::vector<std::string> paths; // the PATHs on it; none: its snapshots were not looked for
    std::string index;
    std::optional<uint64_t> index_bytes; // unset: no index yet
    std::vector<LineageStatus> lineages; // those found under the PATHs first
    JournalSummary journal;
    std::vector<RunRecord> runs; // the last ones, newest first
    RunTotals totals;            // every recorded run
};

void print_status_human(std::ostream& out, const std::vector<FilesystemStatus>& filesystems);
void print_status_json(std::ostream& out, const std::vector<FilesystemStatus>& filesystems);

} // namespace snapdedupe
