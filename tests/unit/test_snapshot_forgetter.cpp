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
