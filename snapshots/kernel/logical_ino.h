// Who references an extent: BTRFS_IOC_LOGICAL_INO_V2.
#pragma once

#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <vector>

namespace snapdedupe {

// One reference to an extent: inode `inode` of subvolume `root` maps it at `file_offset`.
struct ExtentRef {
    uint64_t root = 0;
    uint64_t inode = 0;
    uint64_t file_offset = 0;
    bool operator==(const ExtentRef&) const = default;
};

struct ExtentRefs {
    std::vector<ExtentRef> refs;
    // False when there were more references than the largest buffer (16 MiB) holds: the list
    // is then partial.
    bool complete = true;
};

// Without `whole_extent`, each ref's file_offset is where that file sees the byte at
// `logical`. With it (BTRFS_LOGICAL_INO_ARGS_IGNORE_OFFSET, needed for compressed extents),
// every ref to the extent, with file_offset the start of the file's extent item. No extent
// at `logical` (any more): an empty, complete list.
ExtentRefs logical_ino(const LabeledFd& filesystem, uint64_t logical, bool whole_extent);

} // namespace snapdedupe
