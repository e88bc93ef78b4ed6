// The filesystem as a whole: its uuid, its geometry, and how much of it is used
// (BTRFS_IOC_FS_INFO, BTRFS_IOC_SPACE_INFO, BTRFS_IOC_SYNC).
#pragma once

#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <string>

namespace snapdedupe {

// Metadata block size and how many copies the metadata profile keeps (DUP: 2), and the data
// sector size (extents hold whole sectors, so a file's tail fills out its last one).
struct MetadataGeometry {
    uint32_t sectorsize = 4096;
    uint32_t nodesize = 16384;
    uint32_t copies = 1;
};
MetadataGeometry metadata_geometry(const LabeledFd& filesystem);

struct SpaceUsage {
    uint64_t data_used = 0;     // bytes of file data (one copy)
    uint64_t metadata_used = 0; // bytes of metadata (one copy)
    uint64_t raw_used = 0;      // all copies of data, metadata and system: what the disks hold
    void add(const SpaceUsage& o)
    {
        data_used += o.data_used;
        metadata_used += o.metadata_used;
        raw_used += o.raw_used;
    }
};
// Commits the running transaction first, so freed extents are counted as free.
SpaceUsage space_usage(const LabeledFd& filesystem);
void sync_filesystem(const LabeledFd& filesystem);

// The filesystem's uuid, as `btrfs filesystem show` prints it.
std::string filesystem_uuid(const LabeledFd& filesystem);

} // namespace snapdedupe
