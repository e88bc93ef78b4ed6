// Typed wrappers over the btrfs ioctls the deduper needs, with errors that carry errno.
#pragma once

#include "snapshots/kernel/extent_items.h"
#include "snapshots/kernel/file_handle.h"

#include <cstdint>
#include <string>
#include <vector>

namespace snapdedupe {

// One reference to an extent: inode `inode` of subvolume `root` maps it at `file_offset`.
struct ExtentRef {
    uint64_t root = 0;
    uint64_t inode = 0;
    uint64_t file_offset = 0;
    bool operator==(const ExtentRef&) const = default;
};

// BTRFS_IOC_LOGICAL_INO_V2. Without `whole_extent`, each ref's file_offset is where that file
// sees the byte at `logical`. With it (BTRFS_LOGICAL_INO_ARGS_IGNORE_OFFSET, needed for
// compressed extents), every ref to the extent, with file_offset the start of the file's
// extent item.
// `complete` (if given) is false when there were more references than the largest buffer
// (16 MiB) holds: the list is then partial.
std::vector<ExtentRef> logical_ino(int fs_fd, uint64_t logical, bool whole_extent, bool* complete = nullptr);

struct InodeInfo {
    uint64_t generation = 0;
    uint64_t size = 0;
    uint32_t mode = 0;
};
// The inode item of (root, inode), read from the subvolume's tree (BTRFS_IOC_TREE_SEARCH).
// Returns false when there is no such inode.
bool read_inode(int fs_fd, uint64_t root, uint64_t inode, InodeInfo& out);

bool subvolume_is_read_only(int fs_fd, uint64_t root);
// The level of a subvolume's tree root (0: the root is a leaf), from its ROOT_ITEM.
uint32_t subvolume_tree_level(int fs_fd, uint64_t root);

// Metadata block size and how many copies the metadata profile keeps (DUP: 2), and the data
// sector size (extents hold whole sectors, so a file's tail fills out its last one).
struct MetadataGeometry {
    uint32_t sectorsize = 4096;
    uint32_t nodesize = 16384;
    uint32_t copies = 1;
};
MetadataGeometry metadata_geometry(int fs_fd, const std::string& name);

struct SpaceUsage {
    uint64_t data_used = 0;         // bytes of file data (one copy)
    uint64_t metadata_used = 0;     // bytes of metadata (one copy)
    uint64_t raw_used = 0;          // all copies of data, metadata and system: what the disks hold
};
// Commits the running transaction first, so freed extents are counted as free.
SpaceUsage space_usage(int fs_fd, const std::string& name);
void sync_filesystem(int fs_fd, const std::string& name);
std::string filesystem_uuid(int fs_fd, const std::string& name);

} // namespace snapdedupe
