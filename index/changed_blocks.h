// Cutting a file's changed ranges into blocks, keyed by physical location, with what their
// fingerprints need: where their bytes lie on disk, or that their data must be read.
#pragma once

#include "index/block_index.h"
#include "snapshots/kernel/csum_tree.h"
#include "snapshots/kernel/fiemap.h"

#include <cstdint>
#include <string>
#include <vector>

namespace snapdedupe {

struct DataBlock {
    uint64_t file_offset = 0;
    uint64_t length = 0; // kBlockSize, or less for the file's last block
    BlockKey key;
    // An address inside the block's (first) extent, for LOGICAL_INO: who else references it.
    uint64_t extent_address = 0;
    // Where the file extent item holding the block's start begins in the file: no item
    // covering the block starts earlier.
    uint64_t map_start = 0;
    bool compressed = false;
    // The file is nodatasum: its extents have no checksums, and only its kind shares them.
    bool nodatasum = false;
    // Where the block's bytes lie on disk, in file order, for its fingerprint from the checksum
    // tree; empty when it must be read instead (a compressed piece, or nodatasum).
    std::vector<DiskRange> pieces;
};

// Where the blocks covering `ranges` start: each range widened to kBlockSize boundaries and
// clipped to `file_size` (empty ranges, and ranges at or past EOF, give none). Sorted, each
// start once.
std::vector<uint64_t> block_starts(uint64_t file_size, const std::vector<ByteRange>& ranges);

// The blocks that cover `ranges` (widened to kBlockSize boundaries, clipped to `file_size`)
// and can be deduped: backed entirely by written data extents. Blocks touching a hole, an
// inline extent (too small to share), preallocated or delayed space are left out: sharing
// them frees nothing, or the kernel refuses.
std::vector<DataBlock> dedupable_blocks(const LabeledFd& file, uint64_t file_size, const std::vector<ByteRange>& ranges);

} // namespace snapdedupe
