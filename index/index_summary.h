// What an index holds, summed up for `snapdedupe status`: the snapshots it has processed and
// its intent journal (block_index.h). Reads only.
#pragma once

#include "index/sqlite_db.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace snapdedupe {

struct IndexedSnapshot {
    std::string uuid;
    std::string lineage; // the key its run grouped it under (snapshots/snapshot_list.h)
    uint64_t otransid = 0;
    std::string path;          // where the run found it
    int64_t processed_at = 0;  // unix seconds
};

// Every processed snapshot, oldest first (by otransid).
std::vector<IndexedSnapshot> indexed_snapshots(Database& db);

// The moves still in the journal, by why they are there.
struct JournalSummary {
    uint64_t rows = 0;
    uint64_t bytes = 0;
    uint64_t not_tried = 0; // error 0: recorded, but the run that did was killed (or is running)
    uint64_t busy = 0;      // EAGAIN: a send was reading the snapshot
    std::map<int, uint64_t> errors; // any other errno: how many moves failed with it
};

JournalSummary journal_summary(Database& db);

} // namespace snapdedupe
