// File extent items: which part of which disk extent backs each range of a file, read from the
// subvolume's tree. Exact where FIEMAP is not: for a compressed extent FIEMAP gives only the
// extent's address, never the offset inside it that the file starts at.
#pragma once

#include <cstdint>
#include <vector>

namespace snapdedupe {

// One EXTENT_DATA item: file bytes [file_offset, file_offset + num_bytes) are bytes
// [extent_offset, extent_offset + num_bytes) of the (uncompressed) data of the extent at
// disk_bytenr. The extent is freed only when no item references any part of it.
struct FileExtentItem {
    uint64_t file_offset = 0;
    uint64_t generation = 0; // the transaction that wrote the extent
    uint8_t type = 0;        // BTRFS_FILE_EXTENT_{INLINE,REG,PREALLOC}
    uint8_t compression = 0;
    uint64_t disk_bytenr = 0; // 0: a hole
    uint64_t disk_num_bytes = 0;
    uint64_t extent_offset = 0;
    uint64_t num_bytes = 0;
};
// The items of (root, inode) whose file offsets lie in [min_offset, max_offset], in order
// (BTRFS_IOC_TREE_SEARCH_V2 on the subvolume's tree). `root` 0: the subvolume `fs_fd` is in.
std::vector<FileExtentItem> file_extent_items(int fs_fd, uint64_t root, uint64_t inode, uint64_t min_offset,
                                              uint64_t max_offset);

} // namespace snapdedupe
