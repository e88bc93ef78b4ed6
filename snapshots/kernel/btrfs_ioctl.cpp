#include "snapshots/kernel/btrfs_ioctl.h"

#include "snapshots/kernel/uuid.h"
#include "snapshots/kernel/sys_error.h"

#include <btrfsutil.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <cstddef>
#include <vector>

namespace snapdedupe {

namespace {

template <typename T>
T read_le(const uint8_t* p)
{
    T v;
    std::memcpy(&v, p, sizeof v); // x86-64 and every btrfs host we target are little-endian
    return v;
}

// Copies a block group profile keeps of each block (parity profiles count as one).
uint32_t copies_of(uint64_t flags)
{
    if (flags & BTRFS_BLOCK_GROUP_RAID1C4)
        return 4;
    if (flags & BTRFS_BLOCK_GROUP_RAID1C3)
        return 3;
    if (flags & (BTRFS_BLOCK_GROUP_DUP | BTRFS_BLOCK_GROUP_RAID1 | BTRFS_BLOCK_GROUP_RAID10))
        return 2;
    return 1;
}

// The filesystem's space infos (one per block group type and profile), without the global
// reserve, which is not space in use. Asked twice: once for the count, once for the data.
std::vector<btrfs_ioctl_space_info> space_infos(int fs_fd, const std::string& name)
{
    btrfs_ioctl_space_args probe{};
    check_sys(::ioctl(fs_fd, BTRFS_IOC_SPACE_INFO, &probe), "reading space info of", name);
    std::vector<uint8_t> buf(sizeof(btrfs_ioctl_space_args) + probe.total_spaces * sizeof(btrfs_ioctl_space_info));
    auto* args = reinterpret_cast<btrfs_ioctl_space_args*>(buf.data());
    args->space_slots = probe.total_spaces;
    check_sys(::ioctl(fs_fd, BTRFS_IOC_SPACE_INFO, args), "reading space info of", name);
    std::vector<btrfs_ioctl_space_info> out;
    for (uint64_t i = 0; i < args->total_spaces; ++i)
        if (!(args->spaces[i].flags & BTRFS_SPACE_INFO_GLOBAL_RSV))
            out.push_back(args->spaces[i]);
    return out;
}

} // namespace

std::vector<ExtentRef> logical_ino(int fs_fd, uint64_t logical, bool whole_extent, bool* complete)
{
    if (complete)
        *complete = true;
    // Start small; the kernel says how many bytes were missing if there are more refs.
    size_t size = 64 * 1024;
    for (;;) {
        std::vector<uint64_t> buf(size / sizeof(uint64_t));
        btrfs_ioctl_logical_ino_args args{};
        args.logical = logical;
        args.size = size;
        args.flags = whole_extent ? BTRFS_LOGICAL_INO_ARGS_IGNORE_OFFSET : 0;
        args.inodes = reinterpret_cast<uintptr_t>(buf.data());
        if (::ioctl(fs_fd, BTRFS_IOC_LOGICAL_INO_V2, &args) != 0) {
            if (errno == ENOENT)
                return {}; // no extent there any more
            char addr[32];
            std::snprintf(addr, sizeof addr, "%llu", static_cast<unsigned long long>(logical));
            throw SysError("LOGICAL_INO_V2 at", addr, errno);
        }
        auto* dc = reinterpret_cast<btrfs_data_container*>(buf.data());
        if (dc->bytes_missing > 0 && size < 16 * 1024 * 1024) {
            size = std::min<size_t>(16 * 1024 * 1024, size + dc->bytes_missing + 4096);
            continue;
        }
        if (complete && dc->bytes_missing > 0)
            *complete = false;
        std::vector<ExtentRef> refs;
        for (uint32_t i = 0; i + 2 < dc->elem_cnt; i += 3) // (inode, offset, root) triples
            refs.push_back({dc->val[i + 2], dc->val[i], dc->val[i + 1]});
        return refs;
    }
}

bool read_inode(int fs_fd, uint64_t root, uint64_t inode, InodeInfo& out)
{
    btrfs_ioctl_search_args args{};
    btrfs_ioctl_search_key& key = args.key;
    key.tree_id = root;
    key.min_objectid = key.max_objectid = inode;
    key.min_type = key.max_type = BTRFS_INODE_ITEM_KEY;
    key.min_offset = 0;
    key.max_offset = ~0ULL;
    key.max_transid = ~0ULL;
    key.nr_items = 1;
    check_sys(::ioctl(fs_fd, BTRFS_IOC_TREE_SEARCH, &args), "TREE_SEARCH for inode", std::to_string(inode));
    if (key.nr_items == 0)
        return false;
    auto* hdr = reinterpret_cast<const btrfs_ioctl_search_header*>(args.buf);
    if (hdr->objectid != inode || hdr->type != BTRFS_INODE_ITEM_KEY || hdr->len < sizeof(btrfs_inode_item))
        return false;
    auto* item = reinterpret_cast<const uint8_t*>(hdr + 1);
    out.generation = read_le<uint64_t>(item + offsetof(btrfs_inode_item, generation));
    out.size = read_le<uint64_t>(item + offsetof(btrfs_inode_item, size));
    out.mode = read_le<uint32_t>(item + offsetof(btrfs_inode_item, mode));
    return true;
}

bool subvolume_is_read_only(int fs_fd, uint64_t root)
{
    struct btrfs_util_subvolume_info info;
    btrfs_util_error err = btrfs_util_subvolume_info_fd(fs_fd, root, &info);
    if (err != BTRFS_UTIL_OK)
        throw SysError(std::string("reading subvolume info (") + btrfs_util_strerror(err) + ") of root",
                       std::to_string(root), errno);
    return (info.flags & BTRFS_ROOT_SUBVOL_RDONLY) != 0;
}

MetadataGeometry metadata_geometry(int fs_fd, const std::string& name)
{
    MetadataGeometry g;
    btrfs_ioctl_fs_info_args info{};
    check_sys(::ioctl(fs_fd, BTRFS_IOC_FS_INFO, &info), "reading filesystem info of", name);
    g.nodesize = info.nodesize;
    g.sectorsize = info.sectorsize;
    for (const btrfs_ioctl_space_info& s : space_infos(fs_fd, name))
        if (s.flags & BTRFS_BLOCK_GROUP_METADATA)
            g.copies = std::max(g.copies, copies_of(s.flags));
    return g;
}

uint32_t subvolume_tree_level(int fs_fd, uint64_t root)
{
    btrfs_ioctl_search_args args{};
    btrfs_ioctl_search_key& key = args.key;
    key.tree_id = BTRFS_ROOT_TREE_OBJECTID;
    key.min_objectid = key.max_objectid = root;
    key.min_type = key.max_type = BTRFS_ROOT_ITEM_KEY;
    key.max_offset = ~0ULL;
    key.max_transid = ~0ULL;
    key.nr_items = 1;
    check_sys(::ioctl(fs_fd, BTRFS_IOC_TREE_SEARCH, &args), "TREE_SEARCH for the root item of", std::to_string(root));
    auto* hdr = reinterpret_cast<const btrfs_ioctl_search_header*>(args.buf);
    if (key.nr_items == 0 || hdr->len <= offsetof(btrfs_root_item, level))
        return 1; // unknown: assume one node above the leaves
    return reinterpret_cast<const uint8_t*>(hdr + 1)[offsetof(btrfs_root_item, level)];
}

void sync_filesystem(int fs_fd, const std::string& name)
{
    check_sys(::ioctl(fs_fd, BTRFS_IOC_SYNC, nullptr), "syncing", name);
}

SpaceUsage space_usage(int fs_fd, const std::string& name)
{
    // Two commits: extents freed by the first are released to free space when it completes.
    sync_filesystem(fs_fd, name);
    sync_filesystem(fs_fd, name);

    SpaceUsage usage;
    for (const btrfs_ioctl_space_info& s : space_infos(fs_fd, name)) {
        uint64_t copies = copies_of(s.flags);
        if (s.flags & BTRFS_BLOCK_GROUP_DATA)
            usage.data_used += s.used_bytes;
        else if (s.flags & BTRFS_BLOCK_GROUP_METADATA)
            usage.metadata_used += s.used_bytes;
        usage.raw_used += s.used_bytes * copies;
    }
    return usage;
}

std::string filesystem_uuid(int fs_fd, const std::string& name)
{
    btrfs_ioctl_fs_info_args info{};
    check_sys(::ioctl(fs_fd, BTRFS_IOC_FS_INFO, &info), "reading filesystem info of", name);
    Uuid fsid;
    std::memcpy(fsid.data(), info.fsid, fsid.size());
    return uuid_to_string(fsid);
}

} // namespace snapdedupe
