// A block's fingerprint: xxh3-64 over the checksums btrfs keeps of its sectors (in the
// filesystem's own algorithm and size) and its length. Two sources land in one fingerprint
// space: the checksum tree, for blocks of uncompressed checksummed extents (no file data is
// read), and the block's uncompressed bytes, checksummed here as the kernel would, for
// compressed extents (whose tree checksums cover the compressed bytes) and nodatasum files.
// So a compressed copy finds an uncompressed one. A fingerprint only proposes a duplicate:
// the kernel compares the bytes before it shares them.
#pragma once

#include "snapshots/kernel/csum_tree.h"
#include "snapshots/kernel/fiemap.h"
#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace snapdedupe {

using Fingerprint = uint64_t;

// One sector's checksum as the kernel stores it in the checksum tree: crc32c (seed ~0,
// inverted, little-endian), xxhash64 (XXH64 seed 0, little-endian), sha256, or blake2b-256.
// `sector` is one whole sector; `out` is the type's checksum size. Throws
// std::invalid_argument when `out` has another size.
void sector_checksum(ChecksumType type, std::span<const uint8_t> sector, std::span<uint8_t> out);

// The fingerprint of a block of `length` bytes whose sectors have the checksums `sums`, in
// order (one per sector the block touches).
Fingerprint fingerprint_of_checksums(std::span<const uint8_t> sums, uint64_t length);

// The fingerprint of a block from its uncompressed bytes: each sector checksummed, the last
// one zero-padded to the sector size (the kernel writes a file's tail that way).
Fingerprint fingerprint_of_data(const ChecksumInfo& info, std::span<const uint8_t> data);

// A block of uncompressed extents: its length, and where its bytes lie on disk, in file
// order, one piece per extent it touches (a block can span extents that are not adjacent on
// disk). Every piece but the last holds whole sectors; the pieces add up to the length.
struct TreeBlock {
    uint64_t length = 0;
    std::vector<DiskRange> pieces;
};

// The pieces of file bytes [begin, end) (sector-aligned begin) from the file's FIEMAP
// extents, in file order; physically adjacent pieces are merged. Nothing when any of the
// bytes is not in a plain written extent (a hole, a compressed, inline, preallocated or
// delayed extent): those are fingerprinted from their data, or not at all.
std::optional<std::vector<DiskRange>> disk_pieces(const std::vector<FileExtent>& extents, uint64_t begin,
                                                  uint64_t end);

// Source (a): the fingerprints of `blocks`, in any order, from the checksum tree in few
// searches (read_range_checksums), reading no file data. Nothing for a block with a sector
// the tree has no checksum for (a nodatasum extent, or one freed meanwhile): fingerprint its
// data instead. `stats` (optional) gets what the searches took. Throws SysError, and
// std::invalid_argument for pieces that do not fit their block.
std::vector<std::optional<Fingerprint>> fingerprints_from_tree(const LabeledFd& filesystem,
                                                               const ChecksumInfo& info,
                                                               std::span<const TreeBlock> blocks,
                                                               ChecksumSearchStats* stats = nullptr);

// Source (b): reads file bytes [offset, offset + length) (pread; open the file O_NOATIME)
// and fingerprints them. `buffer` is reused between calls; `bytes_read` grows by the bytes
// read. Throws SysError, also when the file ends before the block does.
Fingerprint fingerprint_from_file(const LabeledFd& file, const ChecksumInfo& info, uint64_t offset, uint64_t length,
                                  std::vector<uint8_t>& buffer, uint64_t& bytes_read);

} // namespace snapdedupe
