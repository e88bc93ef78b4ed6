#include "snapshots/kernel/space_info.h"

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/uuid.h"

#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace snapdedupe {

namespace {

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
std::vector<btrfs_ioctl_space_info> space_infos(const LabeledFd& filesystem)
{
    btrfs_ioctl_space_args probe{};
    check_sys(::ioctl(filesystem.get(), BTRFS_IOC_SPACE_INFO, &probe), "reading space info of", filesystem.label());
    std::vector<uint8_t> buf(sizeof(btrfs_ioctl_space_args) + probe.total_spaces * sizeof(btrfs_ioctl_space_info));
    auto* args = reinterpret_cast<btrfs_ioctl_space_args*>(buf.data());
    args->space_slots = probe.total_spaces;
    check_sys(::ioctl(filesystem.get(), BTRFS_IOC_SPACE_INFO, args), "reading space info of", filesystem.label());
    std::vector<btrfs_ioctl_space_info> out;
    for (uint64_t i = 0; i < args->total_spaces; ++i)
        if (!(args->spaces[i].flags & BTRFS_SPACE_INFO_GLOBAL_RSV))
            out.push_back(args->spaces[i]);
    return out;
}

} // namespace

MetadataGeometry metadata_geometry(const LabeledFd& filesystem)
{
    MetadataGeometry g;
    btrfs_ioctl_fs_info_args info{};
    check_sys(::ioctl(filesystem.get(), BTRFS_IOC_FS_INFO, &info), "reading filesystem info of", filesystem.label());
    g.nodesize = info.nodesize;
    g.sectorsize = info.sectorsize;
    for (const btrfs_ioctl_space_info& s : space_infos(filesystem))
        if (s.flags & BTRFS_BLOCK_GROUP_METADATA)
            g.copies = std::max(g.copies, copies_of(s.flags));
    return g;
}

void sync_filesystem(const LabeledFd& filesystem)
{
    check_sys(::ioctl(filesystem.get(), BTRFS_IOC_SYNC, nullptr), "syncing", filesystem.label());
}

SpaceUsage space_usage(const LabeledFd& filesystem)
{
    // Two commits: extents freed by the first are released to free space when it completes.
    sync_filesystem(filesystem);
    sync_filesystem(filesystem);

    SpaceUsage usage;
    for (const btrfs_ioctl_space_info& s : space_infos(filesystem)) {
        uint64_t copies = copies_of(s.flags);
        if (s.flags & BTRFS_BLOCK_GROUP_DATA)
            usage.data_used += s.used_bytes;
        else if (s.flags & BTRFS_BLOCK_GROUP_METADATA)
            usage.metadata_used += s.used_bytes;
        usage.raw_used += s.used_bytes * copies;
    }
    return usage;
}

std::string filesystem_uuid(const LabeledFd& filesystem)
{
    btrfs_ioctl_fs_info_args info{};
    check_sys(::ioctl(filesystem.get(), BTRFS_IOC_FS_INFO, &info), "reading filesystem info of", filesystem.label());
    Uuid fsid;
    std::memcpy(fsid.data(), info.fsid, fsid.size());
    return uuid_to_string(fsid);
}

} // namespace snapdedupe
