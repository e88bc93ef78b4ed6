// What the engine's unit tests share: duplicate blocks as the snapshot pass hands them to the
// planner, built from an InMemoryFilesystem, and the sizes the scenarios use.
#pragma once

#include "in_memory_filesystem.h"
#include "plugin/dedupe/extent_planner.h"

#include <doctest/doctest.h>

namespace snapdedupe::testing {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

// nodesize 16 KiB, one copy: a leaf costs 16 KiB, a tree path 16 KiB per level.
constexpr MetadataGeometry kSingleMetadata{4096, 16384, 1};

// The block [offset, offset + length) of `file`, found to hold the bytes of `keeper` at
// `keeper_offset` (the oldest indexed copy).
inline DuplicateBlock duplicate_of(InMemoryFilesystem& fs, const InodeHandle& file, uint64_t offset, uint64_t length,
                                   const InodeHandle& keeper, uint64_t keeper_offset)
{
    std::optional<DataBlock> block = fs.block_at(file, offset, length);
    std::optional<DataBlock> kept = fs.block_at(keeper, keeper_offset, length);
    REQUIRE(block);
    REQUIRE(kept);
    DuplicateBlock d;
    d.file = file;
    d.block = *block;
    d.fingerprint = 0x5eed;
    d.keeper.id = 1;
    d.keeper.key = kept->key;
    d.keeper.length = length;
    d.keeper.fingerprint = d.fingerprint;
    d.keeper.where = {keeper, keeper_offset};
    return d;
}

// Every kBlockSize block of the first `size` bytes of `file`, duplicates of `keeper` at the
// same offsets: a file and its copy.
inline std::vector<DuplicateBlock> duplicates_of_file(InMemoryFilesystem& fs, const InodeHandle& file, uint64_t size,
                                                      const InodeHandle& keeper)
{
    std::vector<DuplicateBlock> out;
    for (uint64_t offset = 0; offset < size; offset += kBlockSize)
        out.push_back(duplicate_of(fs, file, offset, std::min(kBlockSize, size - offset), keeper, offset));
    return out;
}

// Snapshot 256 holds the keeper `a`. Snapshot 257 holds `b`, a copy of it in an extent of its
// own (`copy`), which snapshot 258 (`c`) and the writable subvolume 259 (`w`) share: the
// processed snapshot, a later snapshot of it, and the live subvolume.
struct SharedCopy {
    static constexpr uint64_t kSize = 256 * KiB; // two blocks
    InMemoryFilesystem fs;
    InodeHandle a, b, c, w;
    uint64_t kept = 0, copy = 0;

    SharedCopy()
    {
        fs.add_subvolume(256, true);
        fs.add_subvolume(257, true);
        fs.add_subvolume(258, true);
        fs.add_subvolume(259, false);
        a = fs.add_file_in_extent(256, 300, kSize, 1);
        kept = fs.extent_at(a, 0);
        b = fs.add_file_in_extent(257, 300, kSize, 1);
        copy = fs.extent_at(b, 0);
        c = fs.add_file(258, 300, kSize);
        fs.map(c, 0, copy, 0, kSize);
        w = fs.add_file(259, 300, kSize);
        fs.map(w, 0, copy, 0, kSize);
    }
    // b's two blocks, each with a copy in `a`: one extent, three references, six moves.
    ExtentPlan plan()
    {
        ExtentPlan p = ExtentPlanner(fs, kSingleMetadata, false).plan(duplicates_of_file(fs, b, kSize, a));
        REQUIRE(p.extents.size() == 1);
        REQUIRE(p.moves.size() == 6);
        return p;
    }
    // The key of the keeper's first block: what the journal records as the moves' keeper_key.
    BlockKey keeper_key() { return fs.block_at(a, 0, kBlockSize)->key; }
};

} // namespace snapdedupe::testing
