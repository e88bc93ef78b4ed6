// Reading btrfs trees from userspace: one iterator over BTRFS_IOC_TREE_SEARCH_V2 that hides
// the buffer handling and the key advance, and typed decoders for the items we read.
#pragma once

#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace snapdedupe {

// Keys (objectid, type, offset) from min to max, compared as one 136-bit number, the way the
// kernel compares them. `tree` 0: the subvolume the fd is in.
struct TreeKeyRange {
    uint64_t tree = 0;
    uint64_t min_objectid = 0, max_objectid = ~0ULL;
    uint32_t min_type = 0, max_type = 0xff;
    uint64_t min_offset = 0, max_offset = ~0ULL;
};

struct TreeItem {
    uint64_t objectid = 0;
    uint32_t type = 0;
    uint64_t offset = 0;
    uint64_t transid = 0;
    std::span<const uint8_t> data; // valid until the next call of next()
};

// Items in key order. Each kernel call fills a buffer with as many items as fit; the search
// then continues after the last key returned.
class TreeSearch {
public:
    TreeSearch(const LabeledFd& fd, const TreeKeyRange& range, size_t buffer_bytes = 64 * 1024);
    // The next item within the range, or false at its end. Throws SysError.
    bool next(TreeItem& out);

private:
    bool fill();

    const LabeledFd& fd_;
    TreeKeyRange range_;
    std::vector<uint64_t> storage_; // btrfs_ioctl_search_args_v2 and its buffer, 8-aligned
    size_t buffer_bytes_;
    uint32_t items_left_ = 0;
    size_t pos_ = 0;
    bool done_ = false;
};

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

struct InodeInfo {
    uint64_t generation = 0;
    uint64_t size = 0;
    uint32_t mode = 0;
    uint64_t flags = 0; // BTRFS_INODE_*

    // BTRFS_INODE_NODATASUM (fs/btrfs/btrfs_inode.h; no uapi header has it): `chattr +C` on an
    // empty file, or a file made under `-o nodatasum`. Its extents have no checksums, and the
    // kernel refuses to share them with a checksummed file's (EINVAL).
    static constexpr uint64_t kNoDataSum = 1ULL << 0;
    bool nodatasum() const { return (flags & kNoDataSum) != 0; }
};

// Typed decoders: nothing when the item is too short for what is read.
std::optional<FileExtentItem> decode_file_extent(const TreeItem& item);
std::optional<InodeInfo> decode_inode(const TreeItem& item);
std::optional<uint8_t> decode_root_level(const TreeItem& item);

// One ROOT_REF item of the root tree, keyed (parent subvolume, ROOT_REF, child subvolume): the
// child is linked into the parent's directory `dir_inode` under `name`.
struct RootRef {
    uint64_t dir_inode = 0;
    std::string name;
};
std::optional<RootRef> decode_root_ref(const TreeItem& item);

// The file extent items of (root, inode) whose file offsets lie in [min_offset, max_offset], in
// order. `root` 0: the subvolume `fd` is in.
std::vector<FileExtentItem> file_extent_items(const LabeledFd& fd, uint64_t root, uint64_t inode,
                                              uint64_t min_offset, uint64_t max_offset);

// The inode item of (root, inode), or nothing when there is no such inode.
std::optional<InodeInfo> read_inode(const LabeledFd& fd, uint64_t root, uint64_t inode);

// The level of a subvolume's tree root (0: the root is a leaf), from its ROOT_ITEM; 1 when
// unknown (one node above the leaves).
uint32_t subvolume_tree_level(const LabeledFd& fd, uint64_t root);

} // namespace snapdedupe
