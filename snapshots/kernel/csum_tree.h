// The checksum tree (tree 7): the filesystem's data checksum algorithm (BTRFS_IOC_FS_INFO) and
// the checksum btrfs keeps of every data sector it wrote, read by disk address in few large
// tree searches, without reading a byte of file data.
#pragma once

#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace snapdedupe {

// BTRFS_CSUM_TYPE_*: chosen at mkfs time (`mkfs.btrfs --csum`), one per filesystem.
enum class ChecksumType : uint16_t {
    kCrc32c = 0,   // 4 bytes
    kXxhash64 = 1, // 8 bytes
    kSha256 = 2,   // 32 bytes
    kBlake2b = 3,  // 32 bytes (BLAKE2b-256)
};

struct ChecksumInfo {
    ChecksumType type = ChecksumType::kCrc32c;
    uint32_t csum_size = 4;     // bytes of one sector's checksum
    uint32_t sectorsize = 4096; // bytes each checksum covers
    uint32_t nodesize = 16384;  // a checksum item fits in one leaf: this bounds its span
};

// The filesystem's checksum algorithm and geometry. Throws SysError; an algorithm this
// program does not know (a future kernel's) is a SysError with EOPNOTSUPP.
ChecksumInfo checksum_info(const LabeledFd& filesystem);

// "crc32c", "xxhash64", "sha256", "blake2b".
std::string_view checksum_type_name(ChecksumType type);

// Bytes of one checksum of `type`; 0 for a type this program does not know.
uint32_t checksum_size_of(ChecksumType type);

// The most bytes of disk one checksum item can cover: it fits in a leaf, so it holds fewer
// than nodesize / csum_size checksums (16 MiB for 16 KiB nodes and crc32c). An item holding
// the checksum of address A starts at most this far before A.
uint64_t max_checksum_item_span(const ChecksumInfo& info);

// Disk (btrfs logical) addresses [bytenr, bytenr + length): bytenr is sector-aligned; a
// length that is not a multiple of the sector size covers the sector it ends in too.
struct DiskRange {
    uint64_t bytenr = 0;
    uint64_t length = 0;
};

// The checksums of one DiskRange's sectors, in order, csum_size bytes each. A sector the
// tree holds no checksum for (a nodatasum extent, or freed since the range was learned) is
// missing: its bytes in `sums` are zero and mean nothing.
struct RangeChecksums {
    std::vector<uint8_t> sums;
    std::vector<bool> present; // one per sector
    uint64_t missing = 0;      // sectors not present
    bool complete() const { return missing == 0; }
};

// What answering took: tree searches started (each one or more TREE_SEARCH_V2 calls),
// checksum items read, and bytes of item data they held.
struct ChecksumSearchStats {
    uint64_t searches = 0;
    uint64_t items = 0;
    uint64_t item_bytes = 0;
};

// Called once for every range, with its index in `ranges`, when its sectors are known (not
// necessarily in index order). `sums` is valid during the call only.
using RangeChecksumsSink = std::function<void(size_t index, const RangeChecksums& sums)>;

// Reads the checksums of all `ranges`, which must be sorted by bytenr (they may overlap, and
// a range may repeat: a reflinked block). Ranges close on disk share one tree search; a new
// search starts only where the gap to the next range would read through more checksum items
// than two leaves hold, which costs more than a fresh descent. Memory stays bounded by the
// ranges open at one address, so a whole filesystem's ranges can be passed at once. Throws
// SysError (TREE_SEARCH needs CAP_SYS_ADMIN) and std::invalid_argument (unsorted, unaligned).
ChecksumSearchStats read_range_checksums(const LabeledFd& filesystem, const ChecksumInfo& info,
                                         std::span<const DiskRange> ranges, const RangeChecksumsSink& sink);

} // namespace snapdedupe
