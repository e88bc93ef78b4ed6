// What the coming dedupe calls will compare, as the mover tells it ahead
// (FilesystemQueries::compare_soon) and the read-ahead thread reads it (read_ahead.h). Apart
// from the reader, so that the engine's narrow interface does not pull in its threads.
#pragma once

#include "snapshots/kernel/file_handle.h"

#include <cstdint>
#include <vector>

namespace snapdedupe {

// Bytes of one file that a dedupe call compares (a keeper range or a reference).
struct CompareRange {
    InodeHandle file;
    uint64_t offset = 0;
    uint64_t length = 0;
};

// One group per source range, in the order the mover dedupes them; its ranges in the order
// its calls read them.
using CompareGroups = std::vector<std::vector<CompareRange>>;

} // namespace snapdedupe
