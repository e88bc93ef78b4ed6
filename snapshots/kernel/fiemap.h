// FIEMAP: which disk extents back a file's byte ranges.
#pragma once

#include "snapshots/kernel/byte_range.h"
#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <string>
#include <vector>

namespace snapdedupe {

struct FileExtent {
    uint64_t logical = 0;  // file offset
    uint64_t physical = 0; // btrfs logical address; for a compressed extent, the extent's start
    uint64_t length = 0;
    uint32_t flags = 0;    // FIEMAP_EXTENT_*
};

// The extents overlapping [start, start + length), in file order. Holes are gaps between them.
std::vector<FileExtent> file_extents(const LabeledFd& file, uint64_t start, uint64_t length);

} // namespace snapdedupe
