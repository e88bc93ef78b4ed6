// The sector checksums come from libraries Debian keeps: ISA-L (crc32c), libxxhash (XXH64),
// libsodium (sha256, BLAKE2b). They must equal the kernel's bit for bit:
// tests/integration/test_fingerprints.py compares them with the checksum tree on a
// filesystem of every type.
#include "index/fingerprint.h"

#include "snapshots/kernel/error.h"

#include <isa-l/crc.h>
#include <linux/fiemap.h>
#include <sodium.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <numeric>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace snapdedupe {

namespace {

// The Castagnoli CRC as the kernel's crypto "crc32c" computes it: initial ~0, reflected,
// final inversion (snapshots/crc32c.h is the send stream's raw form: seed 0, no inversion).
// ISA-L's crc32_iscsi is the raw form too, so it gets both inversions here. It picks
// SSE4.2/PCLMUL at run time: about 6 GB/s here, where Boost.CRC's table does 160 MB/s; crc32c
// is the default type, so this decides what fingerprinting compressed and nodatasum data costs.
uint32_t btrfs_crc32c(std::span<const uint8_t> data)
{
    // crc32_iscsi takes a non-const pointer and an int length, but only reads.
    return ~crc32_iscsi(const_cast<uint8_t*>(data.data()), static_cast<int>(data.size()), 0xFFFFFFFFu);
}

void store_le(uint8_t* out, uint64_t value, size_t bytes)
{
    for (size_t i = 0; i < bytes; ++i)
        out[i] = static_cast<uint8_t>(value >> (8 * i));
}

// libsodium picks its fastest implementations in sodium_init(); calling it again is harmless.
void init_sodium()
{
    static const int status = sodium_init();
    if (status < 0)
        throw std::runtime_error("libsodium failed to initialise");
}

// xxh3-64 of `message`, which holds the sector checksums and 8 more bytes for the length.
Fingerprint hash_with_length(std::vector<uint8_t>& message, uint64_t length)
{
    store_le(message.data() + message.size() - 8, length, 8);
    return XXH3_64bits(message.data(), message.size());
}

// Where one piece's checksums go: its block, and the block's sector it starts at.
struct PieceSlot {
    size_t block = 0;
    uint64_t first_sector = 0;
};

// Fingerprints blocks as their pieces' checksums arrive from the tree (in address order, not
// block order). A one-piece block is hashed at once; a block of several pieces is held until
// its last piece arrives. A block with a missing sector gets no fingerprint.
class TreeAssembler {
public:
    TreeAssembler(const ChecksumInfo& info, std::span<const TreeBlock> blocks, std::span<const PieceSlot> slots,
                  std::vector<std::optional<Fingerprint>>& out)
        : info_(info), blocks_(blocks), slots_(slots), out_(out)
    {
    }

    void take(size_t piece, const RangeChecksums& sums)
    {
        const PieceSlot& slot = slots_[piece];
        const TreeBlock& block = blocks_[slot.block];
        if (block.pieces.size() == 1) {
            if (sums.complete())
                out_[slot.block] = fingerprint_of_checksums(sums.sums, block.length);
            return;
        }
        Partial& p = partial_[slot.block];
        if (p.pieces_left == 0) {
            p.pieces_left = block.pieces.size();
            p.sums.assign((block.length + info_.sectorsize - 1) / info_.sectorsize * info_.csum_size, 0);
        }
        std::copy(sums.sums.begin(), sums.sums.end(), p.sums.begin() + slot.first_sector * info_.csum_size);
        p.complete = p.complete && sums.complete();
        if (--p.pieces_left == 0) {
            if (p.complete)
                out_[slot.block] = fingerprint_of_checksums(p.sums, block.length);
            partial_.erase(slot.block);
        }
    }

private:
    struct Partial {
        std::vector<uint8_t> sums;
        size_t pieces_left = 0;
        bool complete = true;
    };
    const ChecksumInfo& info_;
    std::span<const TreeBlock> blocks_;
    std::span<const PieceSlot> slots_;
    std::vector<std::optional<Fingerprint>>& out_;
    std::unordered_map<size_t, Partial> partial_;
};

// Every piece of every block, with its slot; throws when pieces do not fit their block.
void flatten(const ChecksumInfo& info, std::span<const TreeBlock> blocks, std::vector<DiskRange>& pieces,
             std::vector<PieceSlot>& slots)
{
    for (size_t b = 0; b < blocks.size(); ++b) {
        uint64_t at = 0;
        for (size_t i = 0; i < blocks[b].pieces.size(); ++i) {
            const DiskRange& piece = blocks[b].pieces[i];
            bool last = i + 1 == blocks[b].pieces.size();
            if (!last && piece.length % info.sectorsize != 0)
                throw std::invalid_argument("fingerprints_from_tree: a piece ends inside a sector");
            pieces.push_back(piece);
            slots.push_back({b, at / info.sectorsize});
            at += piece.length;
        }
        if (at != blocks[b].length || blocks[b].pieces.empty())
            throw std::invalid_argument("fingerprints_from_tree: the pieces of a block do not add up to its length");
    }
}

} // namespace

void sector_checksum(ChecksumType type, std::span<const uint8_t> sector, std::span<uint8_t> out)
{
    if (out.size() != checksum_size_of(type) || checksum_size_of(type) == 0)
        throw std::invalid_argument("sector_checksum: " + std::to_string(out.size()) + " bytes for a " +
                                    std::string(checksum_type_name(type)) + " checksum");
    switch (type) {
    case ChecksumType::kCrc32c:
        store_le(out.data(), btrfs_crc32c(sector), 4);
        return;
    case ChecksumType::kXxhash64:
        store_le(out.data(), XXH64(sector.data(), sector.size(), 0), 8);
        return;
    case ChecksumType::kSha256:
        init_sodium();
        crypto_hash_sha256(out.data(), sector.data(), sector.size());
        return;
    case ChecksumType::kBlake2b:
        init_sodium();
        crypto_generichash(out.data(), out.size(), sector.data(), sector.size(), nullptr, 0);
        return;
    }
}

Fingerprint fingerprint_of_checksums(std::span<const uint8_t> sums, uint64_t length)
{
    std::vector<uint8_t> message(sums.size() + 8);
    std::copy(sums.begin(), sums.end(), message.begin());
    return hash_with_length(message, length);
}

Fingerprint fingerprint_of_data(const ChecksumInfo& info, std::span<const uint8_t> data)
{
    const size_t ss = info.sectorsize, cs = info.csum_size;
    const size_t sectors = (data.size() + ss - 1) / ss;
    std::vector<uint8_t> message(sectors * cs + 8);
    std::vector<uint8_t> tail;
    for (size_t s = 0; s < sectors; ++s) {
        std::span<const uint8_t> sector = data.subspan(s * ss, std::min(ss, data.size() - s * ss));
        if (sector.size() < ss) {
            tail.assign(ss, 0);
            std::copy(sector.begin(), sector.end(), tail.begin());
            sector = tail;
        }
        sector_checksum(info.type, sector, std::span<uint8_t>(message.data() + s * cs, cs));
    }
    return hash_with_length(message, data.size());
}

std::optional<std::vector<DiskRange>> disk_pieces(const std::vector<FileExtent>& extents, uint64_t begin,
                                                  uint64_t end)
{
    // Bytes of these have no checksum of their own uncompressed data in the tree, or none at all.
    constexpr uint32_t kNotPlain = FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                   FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_NOT_ALIGNED |
                                   FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_DATA_TAIL;
    std::vector<DiskRange> pieces;
    uint64_t pos = begin;
    for (const FileExtent& e : extents) {
        if (pos >= end)
            break;
        if (e.logical + e.length <= pos)
            continue;
        if (e.logical > pos || (e.flags & kNotPlain))
            return std::nullopt;
        uint64_t stop = std::min(end, e.logical + e.length);
        uint64_t bytenr = e.physical + (pos - e.logical);
        if (!pieces.empty() && pieces.back().bytenr + pieces.back().length == bytenr)
            pieces.back().length += stop - pos;
        else
            pieces.push_back({bytenr, stop - pos});
        pos = stop;
    }
    if (pos < end)
        return std::nullopt;
    return pieces;
}

std::vector<std::optional<Fingerprint>> fingerprints_from_tree(const LabeledFd& filesystem,
                                                               const ChecksumInfo& info,
                                                               std::span<const TreeBlock> blocks,
                                                               ChecksumSearchStats* stats)
{
    std::vector<DiskRange> pieces;
    std::vector<PieceSlot> slots;
    flatten(info, blocks, pieces, slots);
    // The tree is read in address order; blocks come in file order.
    std::vector<size_t> order(pieces.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return pieces[a].bytenr < pieces[b].bytenr; });
    std::vector<DiskRange> sorted(pieces.size());
    for (size_t k = 0; k < order.size(); ++k)
        sorted[k] = pieces[order[k]];

    std::vector<std::optional<Fingerprint>> out(blocks.size());
    TreeAssembler assembler(info, blocks, slots, out);
    ChecksumSearchStats took = read_range_checksums(
        filesystem, info, sorted, [&](size_t k, const RangeChecksums& sums) { assembler.take(order[k], sums); });
    if (stats)
        *stats = took;
    return out;
}

Fingerprint fingerprint_from_file(const LabeledFd& file, const ChecksumInfo& info, uint64_t offset, uint64_t length,
                                  std::vector<uint8_t>& buffer, uint64_t& bytes_read)
{
    buffer.resize(length);
    read_exactly(file, offset, buffer.data(), length);
    bytes_read += length;
    return fingerprint_of_data(info, std::span<const uint8_t>(buffer.data(), length));
}

} // namespace snapdedupe
