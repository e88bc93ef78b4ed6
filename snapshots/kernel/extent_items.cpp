#include "snapshots/kernel/extent_items.h"

#include "snapshots/kernel/sys_error.h"

#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstring>
#include <string>

namespace snapdedupe {

namespace {

template <typename T>
T read_le(const uint8_t* p)
{
    T v;
    std::memcpy(&v, p, sizeof v); // x86-64 and every btrfs host we target are little-endian
    return v;
}

} // namespace

std::vector<FileExtentItem> file_extent_items(int fs_fd, uint64_t root, uint64_t inode, uint64_t min_offset,
                                              uint64_t max_offset)
{
    constexpr size_t kBufferSize = 64 * 1024;
    std::vector<uint64_t> storage((sizeof(btrfs_ioctl_search_args_v2) + kBufferSize) / sizeof(uint64_t) + 1);
    auto* args = reinterpret_cast<btrfs_ioctl_search_args_v2*>(storage.data());
    std::vector<FileExtentItem> items;
    uint64_t next = min_offset;
    while (next <= max_offset) {
        btrfs_ioctl_search_key& key = args->key;
        key = {};
        key.tree_id = root;
        key.min_objectid = key.max_objectid = inode;
        key.min_type = key.max_type = BTRFS_EXTENT_DATA_KEY;
        key.min_offset = next;
        key.max_offset = max_offset;
        key.max_transid = ~0ULL;
        key.nr_items = 4096;
        args->buf_size = kBufferSize;
        check_sys(::ioctl(fs_fd, BTRFS_IOC_TREE_SEARCH_V2, args), "TREE_SEARCH for extents of inode",
                  std::to_string(inode));
        if (key.nr_items == 0)
            break;
        const uint8_t* p = args->buf;
        uint64_t last = next;
        for (uint32_t i = 0; i < key.nr_items; ++i) {
            btrfs_ioctl_search_header hdr;
            std::memcpy(&hdr, p, sizeof hdr);
            const uint8_t* item = p + sizeof hdr;
            p += sizeof hdr + hdr.len;
            last = hdr.offset;
            if (hdr.type != BTRFS_EXTENT_DATA_KEY || hdr.objectid != inode ||
                hdr.len < offsetof(btrfs_file_extent_item, disk_bytenr))
                continue;
            FileExtentItem e;
            e.file_offset = hdr.offset;
            e.generation = read_le<uint64_t>(item + offsetof(btrfs_file_extent_item, generation));
            e.type = item[offsetof(btrfs_file_extent_item, type)];
            e.compression = item[offsetof(btrfs_file_extent_item, compression)];
            if (e.type != BTRFS_FILE_EXTENT_INLINE && hdr.len >= sizeof(btrfs_file_extent_item)) {
                e.disk_bytenr = read_le<uint64_t>(item + offsetof(btrfs_file_extent_item, disk_bytenr));
                e.disk_num_bytes = read_le<uint64_t>(item + offsetof(btrfs_file_extent_item, disk_num_bytes));
                e.extent_offset = read_le<uint64_t>(item + offsetof(btrfs_file_extent_item, offset));
                e.num_bytes = read_le<uint64_t>(item + offsetof(btrfs_file_extent_item, num_bytes));
            }
            items.push_back(e);
        }
        if (last == ~0ULL)
            break;
        next = last + 1;
    }
    return items;
}

} // namespace snapdedupe
