// Forgetting deleted snapshots against a filesystem in memory and an index in memory: blocks
// a surviving snapshot still maps move there and keep their id; the rest are forgotten.
#include "engine_fixtures.h"
#include "index/index_file.h"
#include "plugin/upkeep/snapshot_forgetter.h"

#include <doctest/doctest.h>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr uint64_t kFile = 256 * KiB;

// Snapshots 256 (older) and 257 of one lineage, both indexed; the index locates `file`'s two
// blocks in 256. Each test decides what 257 holds and then deletes 256.
struct TwoSnapshots {
    InMemoryFilesystem fs;
    std::unique_ptr<Database> db = open_index(":memory:", "fs-uuid", false); // SQLite's in-memory database
    BlockIndex index{*db};
    InodeHandle file;

    TwoSnapshots()
    {
        fs.add_subvolume(256, true, 0, "uuid-256");
        fs.add_subvolume(257, true, 0, "uuid-257");
        index.add_snapshot({"uuid-256", 256, "lineage", 10, "/snaps/1", 0});
        index.add_snapshot({"uuid-257", 257, "lineage", 20, "/snaps/2", 0});
        file = fs.add_file_in_extent(256, 300, kFile, 1);
        index_blocks(file, 0x1000);
    }
    void index_blocks(const InodeHandle& f, uint64_t hash)
    {
        for (uint64_t offset = 0; offset < fs.items_of(f).back().num_bytes; offset += kBlockSize) {
            DataBlock b = *fs.block_at(f, offset, kBlockSize);
            index.add_block(b.key, {hash + offset, b.length, false}, {f, offset});
        }
    }
    std::vector<IndexedBlock> blocks_in(uint64_t root) { return index.blocks_in_root(root); }
};

} // namespace

TEST_CASE("forgetter: blocks the newer snapshot still maps at the same offset move there, keeping their id")
{
    TwoSnapshots s;
    std::vector<IndexedBlock> before = s.blocks_in(256);
    InodeHandle kept = s.fs.snapshot_file(s.file, 257);
    s.fs.overwrite(kept, kBlockSize, kBlockSize, 2);            // the second block changed since
    InodeHandle gone = s.fs.add_file_in_extent(256, 301, kBlockSize, 3); // deleted before 257
    s.index_blocks(gone, 0x2000);
    s.fs.delete_subvolume(256);

    ForgetOutcome out = forget_deleted_snapshots(s.fs, *s.db, s.index);

    CHECK(out.snapshots == 1);
    CHECK(out.blocks_moved == 1);
    CHECK(out.blocks_forgotten == 2);
    std::vector<IndexedBlock> moved = s.blocks_in(257);
    REQUIRE(moved.size() == 1);
    CHECK(moved[0].id == before[0].id); // still the keeper of its bytes
    CHECK(moved[0].where.file == kept);
    CHECK(moved[0].where.file_offset == 0);
    CHECK(s.blocks_in(256).empty());
    REQUIRE(s.index.snapshots().size() == 1);
    CHECK(s.index.snapshots()[0].uuid == "uuid-257");
}

TEST_CASE("forgetter: a file replaced since (a new inode on the same extent) is found through the extent")
{
    TwoSnapshots s;
    // The run deduped an identical rewrite in 257 onto the keeper: a new inode, the old extent.
    InodeHandle rewritten = s.fs.add_file(257, 310, kFile);
    s.fs.map(rewritten, 0, s.fs.extent_at(s.file, 0), 0, kFile);
    s.fs.delete_subvolume(256);

    ForgetOutcome out = forget_deleted_snapshots(s.fs, *s.db, s.index);

    CHECK(out.blocks_moved == 2);
    CHECK(out.blocks_forgotten == 0);
    std::vector<IndexedBlock> moved = s.blocks_in(257);
    REQUIRE(moved.size() == 2);
    for (const IndexedBlock& b : moved)
        CHECK(b.where.file == rewritten);
}

TEST_CASE("forgetter: a subvolume id now used by another subvolume is a deleted snapshot")
{
    TwoSnapshots s;
    s.fs.snapshot_file(s.file, 257);

    SUBCASE("same uuid: nothing is forgotten")
    {
        ForgetOutcome out = forget_deleted_snapshots(s.fs, *s.db, s.index);
        CHECK(out.snapshots == 0);
        CHECK(s.blocks_in(256).size() == 2);
        CHECK(s.index.snapshots().size() == 2);
    }
    SUBCASE("another uuid under the same id")
    {
        s.fs.add_subvolume(256, true, 0, "someone-else");
        ForgetOutcome out = forget_deleted_snapshots(s.fs, *s.db, s.index);
        CHECK(out.snapshots == 1);
        CHECK(out.blocks_moved == 2);
        CHECK(s.blocks_in(257).size() == 2);
    }
}

// Retention on a backup target: the oldest snapshot holds the keeper of a library that was
// reinstalled (a new inode, deduped onto the keeper's extent) and is kept by 60 later
// snapshots. Asking LOGICAL_INO per block, and looking up every reference's inode, took 22
// minutes for 15,000 blocks on the scale benchmark.
TEST_CASE("forgetter: a replaced file's blocks are found through its extent once, not once per block")
{
    InMemoryFilesystem fs;
    std::unique_ptr<Database> db = open_index(":memory:", "fs-uuid", false);
    BlockIndex index(*db);
    constexpr uint64_t kBig = 32 * kBlockSize;
    fs.add_subvolume(256, true, 0, "uuid-256");
    index.add_snapshot({"uuid-256", 256, "lineage", 10, "/snaps/0", 0});
    InodeHandle library = fs.add_file_in_extent(256, 300, kBig, 1);
    for (uint64_t offset = 0; offset < kBig; offset += kBlockSize) {
        DataBlock b = *fs.block_at(library, offset, kBlockSize);
        index.add_block(b.key, {0x1000 + offset, b.length, false}, {library, offset});
    }
    InodeHandle newest;
    for (uint64_t root = 257; root < 317; ++root) {
        std::string uuid = "uuid-" + std::to_string(root);
        fs.add_subvolume(root, true, 0, uuid);
        index.add_snapshot({uuid, root, "lineage", root, "/snaps/" + uuid, 0});
        newest = fs.add_file(root, 310, kBig);
        fs.map(newest, 0, fs.extent_at(library, 0), 0, kBig);
    }
    fs.delete_subvolume(256);

    ForgetOutcome out = forget_deleted_snapshots(fs, *db, index);

    CHECK(out.blocks_moved == 32);
    CHECK(out.blocks_forgotten == 0);
    std::vector<IndexedBlock> moved = index.blocks_in_root(316);
    REQUIRE(moved.size() == 32); // all in the newest snapshot's copy
    for (const IndexedBlock& b : moved)
        CHECK(b.where.file == newest);
    CHECK(fs.reference_lookups == 1); // was 32: one per block
    CHECK(fs.inode_lookups <= 2);     // was 1,920: every reference of every block (now: whether
                                      // the file lives on in the newest, and the new one)
}

namespace {

// A backup target of VM images, one lineage: snapshot 256 holds the image (`blocks` blocks,
// inode 300, one extent), each block indexed there; snapshot() adds a later snapshot holding a
// copy of it.
struct ImageLineage {
    InMemoryFilesystem fs;
    std::unique_ptr<Database> db = open_index(":memory:", "fs-uuid", false);
    BlockIndex index{*db};
    InodeHandle image;

    explicit ImageLineage(uint64_t blocks)
    {
        fs.add_subvolume(256, true, 0, "uuid-256");
        index.add_snapshot({"uuid-256", 256, "lineage", 10, "/snaps/0", 0});
        image = fs.add_file_in_extent(256, 300, blocks * kBlockSize, 1);
        for (uint64_t offset = 0; offset < blocks * kBlockSize; offset += kBlockSize) {
            DataBlock b = *fs.block_at(image, offset, kBlockSize);
            index.add_block(b.key, {0x1000 + offset, b.length, false}, {image, offset});
        }
    }

    // The image's copy in the new snapshot `root`.
    InodeHandle snapshot(uint64_t root)
    {
        std::string uuid = "uuid-" + std::to_string(root);
        fs.add_subvolume(root, true, 0, uuid);
        index.add_snapshot({uuid, root, "lineage", root, "/snaps/" + uuid, 0});
        return fs.snapshot_file(image, root);
    }
};

} // namespace

// Retention on a backup target of VM images: the deleted snapshot located blocks of a file
// that every later snapshot still has, written in place since (random 64 KiB writes). Each such
// block asked LOGICAL_INO about its extent, a backref walk over every snapshot sharing the
// image's leaves: 40 ms a block at 100 snapshots, 6 of the 14 s the scale benchmark's
// retention row took.
TEST_CASE("forgetter: blocks of a file written in place since are looked for in older snapshots, not by extent")
{
    ImageLineage target(2);
    InMemoryFilesystem& fs = target.fs;
    BlockIndex& index = target.index;
    const int64_t first_id = index.blocks_in_root(256).front().id;
    // Twelve later snapshots: the first block is overwritten from the fourth on (in the newest
    // nine, more than the newest snapshots tried first), the second in all of them.
    for (uint64_t root = 257; root <= 268; ++root) {
        InodeHandle copy = target.snapshot(root);
        if (root >= 260)
            fs.overwrite(copy, 0, kBlockSize, 100 + root);
        fs.overwrite(copy, kBlockSize, kBlockSize, 200 + root);
    }
    fs.delete_subvolume(256);

    ForgetOutcome out = forget_deleted_snapshots(fs, *target.db, index);

    CHECK(out.blocks_moved == 1);
    CHECK(out.blocks_forgotten == 1);
    std::vector<IndexedBlock> moved = index.blocks_in_root(259); // the newest that still maps it
    REQUIRE(moved.size() == 1);
    CHECK(moved[0].id == first_id);
    CHECK(moved[0].where.file_offset == 0);
    CHECK(fs.reference_lookups == 0); // was 2: one LOGICAL_INO per block
}

// The same at 100 snapshots, the scale benchmark's retention nights: asking every older
// snapshot in turn cost a tree search in each, about 100 per file written in place (most of
// the 2-3.5 s such a night took, against 0.8 s for an ordinary one). A block overwritten in
// place is mapped by the oldest snapshots up to the write and by none after it, so the
// oldest is asked first and the newest that maps a block is found by halving the rest.
TEST_CASE("forgetter: a file written in place is searched by halving, and each block still moves to the newest that maps it")
{
    constexpr uint64_t kBlocks = 4;
    ImageLineage target(kBlocks);
    InMemoryFilesystem& fs = target.fs;
    BlockIndex& index = target.index;
    // 100 later snapshots, 257 the oldest. Block i is overwritten from snapshot overwritten_from[i]
    // on: the first in the newest 8 (found by the newest-first tries), the second and third
    // somewhere in the middle, the fourth in every later snapshot (forgotten).
    const uint64_t overwritten_from[kBlocks] = {350, 300, 271, 257};
    for (uint64_t root = 257; root <= 356; ++root) {
        InodeHandle copy = target.snapshot(root);
        for (uint64_t i = 0; i < kBlocks; ++i)
            if (root >= overwritten_from[i])
                fs.overwrite(copy, i * kBlockSize, kBlockSize, 1000 * (i + 1) + root);
    }
    fs.delete_subvolume(256);
    std::vector<int64_t> ids;
    for (const IndexedBlock& b : index.blocks_in_root(256))
        ids.push_back(b.id);
    fs.block_lookups = 0;

    ForgetOutcome out = forget_deleted_snapshots(fs, *target.db, index);

    CHECK(out.blocks_moved == 3);
    CHECK(out.blocks_forgotten == 1);
    for (uint64_t i = 0; i + 1 < kBlocks; ++i) {
        std::vector<IndexedBlock> moved = index.blocks_in_root(overwritten_from[i] - 1);
        REQUIRE(moved.size() == 1);
        CHECK(moved[0].id == ids[i]);
        CHECK(moved[0].where.file_offset == i * kBlockSize);
    }
    // The newest 8, the oldest, then about log2(92) = 7 for each of the two middle blocks.
    CHECK(fs.block_lookups <= 8 + 1 + 2 * 7);
    CHECK(fs.reference_lookups == 0);
    CHECK(fs.inode_lookups <= 1);
}
