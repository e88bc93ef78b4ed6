// The extent planner against a filesystem in memory: which extents are freed and with which
// moves, which are left alone and why, and what their metadata costs.
#include "engine_fixtures.h"
#include "plugin/dedupe/deduper.h"

#include <doctest/doctest.h>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr uint64_t kFile = 256 * KiB;

// Snapshot 256 holds the keeper `a`. Snapshot 257 holds `b`, a copy of it in an extent of its
// own (`copy`), which snapshot 258 shares as `c` (a later snapshot of the same file).
struct CopiedFile {
    InMemoryFilesystem fs;
    InodeHandle a, b, c;
    uint64_t copy = 0;

    explicit CopiedFile(bool c_writable = false)
    {
        fs.add_subvolume(256, true);
        fs.add_subvolume(257, true);
        fs.add_subvolume(258, !c_writable);
        a = fs.add_file_in_extent(256, 300, kFile, 1);
        b = fs.add_file_in_extent(257, 300, kFile, 1);
        copy = fs.extent_at(b, 0);
        c = fs.add_file(258, 300, kFile);
        fs.map(c, 0, copy, 0, kFile);
    }
    std::vector<DuplicateBlock> duplicates() { return duplicates_of_file(fs, b, kFile, a); }
};

// Small files in snapshot 257, each a copy (an extent of its own) of a keeper in snapshot 256.
struct SmallFiles {
    InMemoryFilesystem fs;

    explicit SmallFiles(uint32_t tree_level = 0)
    {
        fs.add_subvolume(256, true);
        fs.add_subvolume(257, true, tree_level);
    }
    // One file of `size` bytes per inode number; inodes within one 32 share a leaf.
    std::vector<DuplicateBlock> add(const std::vector<uint64_t>& inodes, uint64_t size)
    {
        std::vector<DuplicateBlock> out;
        for (uint64_t inode : inodes) {
            InodeHandle keeper = fs.add_file_in_extent(256, 10000 + inode, size, inode);
            InodeHandle copy = fs.add_file_in_extent(257, inode, size, inode);
            out.push_back(duplicate_of(fs, copy, 0, size, keeper, 0));
        }
        return out;
    }
};

uint64_t bytes_moved_into(const ExtentPlan& plan, const InodeHandle& file)
{
    uint64_t total = 0;
    for (const PlannedMove& m : plan.moves)
        total += m.dst == file ? m.length : 0;
    return total;
}

} // namespace

TEST_CASE("planner: an extent whose every reference has a copy is planned with all its references")
{
    CopiedFile s;
    ExtentPlanner planner(s.fs, kSingleMetadata, false);
    ExtentPlan plan = planner.plan(s.duplicates());

    REQUIRE(plan.extents.size() == 1);
    CHECK(plan.extents[0].disk_bytenr == s.copy);
    CHECK(plan.extents[0].disk_bytes == kFile);
    CHECK(plan.extents[0].references == 2);
    CHECK(plan.extents[0].metadata_cost == 2 * 16384); // a leaf in each snapshot, tree level 0
    CHECK_FALSE(plan.extents[0].writable);
    REQUIRE(plan.extent_blocks.size() == 1);
    CHECK(plan.extent_blocks[0] == std::vector<size_t>{0, 1});

    CHECK(plan.moves.size() == 4); // two blocks, two references
    CHECK(bytes_moved_into(plan, s.b) == kFile);
    CHECK(bytes_moved_into(plan, s.c) == kFile);
    for (const PlannedMove& m : plan.moves) {
        CHECK(m.src == s.a);
        CHECK(m.src_offset == m.dst_offset);
        CHECK(m.extent == 0);
        CHECK(m.primary == (m.dst == s.b)); // the processed snapshot's own reference
        CHECK_FALSE(m.writable);
    }

    const DedupeCounters& c = plan.counters;
    CHECK(c.extents_planned == 1);
    CHECK(c.predicted_freed_bytes == kFile);
    CHECK(c.predicted_metadata_bytes == 2 * 16384);
    CHECK(c.skipped_partial_bytes == 0);
    CHECK(c.skipped_cost_bytes == 0);
    CHECK(c.skipped_writable_bytes == 0);
    CHECK(c.large_fanout_extents == 0);
}

TEST_CASE("planner: an extent that also holds bytes without a copy is skipped (skipped_partial_bytes)")
{
    InMemoryFilesystem fs;
    fs.add_subvolume(256, true);
    fs.add_subvolume(257, true);
    fs.add_subvolume(258, true);
    std::vector<DuplicateBlock> duplicates;

    SUBCASE("the file's second half has no copy")
    {
        InodeHandle a = fs.add_file_in_extent(256, 300, kFile / 2, 1);
        InodeHandle b = fs.add_file_in_extent(257, 300, kFile, 1);
        duplicates.push_back(duplicate_of(fs, b, 0, kFile / 2, a, 0));
    }
    SUBCASE("another snapshot references a part of the extent that no duplicate covers")
    {
        InodeHandle a = fs.add_file_in_extent(256, 300, kFile, 1);
        uint64_t extent = fs.add_extent(2 * kFile, 1);
        InodeHandle b = fs.add_file(257, 300, kFile);
        fs.map(b, 0, extent, 0, kFile);
        InodeHandle c = fs.add_file(258, 300, kFile);
        fs.map(c, 0, extent, kFile, kFile);
        duplicates = duplicates_of_file(fs, b, kFile, a);
    }
    SUBCASE("the keeper lies in the extent itself")
    {
        uint64_t extent = fs.add_extent(kFile / 2, 1);
        InodeHandle b = fs.add_file(257, 300, kFile);
        fs.map(b, 0, extent, 0, kFile / 2);
        fs.map(b, kFile / 2, extent, 0, kFile / 2); // a reflink inside the file
        duplicates.push_back(duplicate_of(fs, b, kFile / 2, kFile / 2, b, 0));
    }

    ExtentPlanner planner(fs, kSingleMetadata, false);
    ExtentPlan plan = planner.plan(duplicates);
    CHECK(plan.extents.empty());
    CHECK(plan.moves.empty());
    CHECK(plan.counters.skipped_partial_bytes == kFile / 2 * duplicates.size());
    CHECK(plan.counters.extents_planned == 0);
    CHECK(plan.counters.predicted_freed_bytes == 0);
}

TEST_CASE("planner: --readonly-only leaves extents a writable subvolume references (skipped_writable_bytes)")
{
    CopiedFile s(/*c_writable=*/true);

    SUBCASE("--readonly-only")
    {
        ExtentPlanner planner(s.fs, kSingleMetadata, true);
        ExtentPlan plan = planner.plan(s.duplicates());
        CHECK(plan.extents.empty());
        CHECK(plan.moves.empty());
        CHECK(plan.counters.skipped_writable_bytes == kFile);
        CHECK(plan.counters.skipped_partial_bytes == 0);
    }
    SUBCASE("by default the writable reference moves too, marked writable")
    {
        ExtentPlanner planner(s.fs, kSingleMetadata, false);
        ExtentPlan plan = planner.plan(s.duplicates());
        REQUIRE(plan.extents.size() == 1);
        CHECK(plan.extents[0].writable);
        CHECK(plan.counters.skipped_writable_bytes == 0);
        REQUIRE(plan.moves.size() == 4);
        for (const PlannedMove& m : plan.moves)
            CHECK(m.writable == (m.dst == s.c));
    }
}

TEST_CASE("planner: an extent whose references the kernel cannot all list is skipped")
{
    CopiedFile s;
    s.fs.set_incomplete(s.copy);

    ExtentPlanner planner(s.fs, kSingleMetadata, false);
    ExtentPlan plan = planner.plan(s.duplicates());
    CHECK(plan.extents.empty());
    CHECK(plan.moves.empty());
    CHECK(plan.counters.skipped_partial_bytes == kFile);
}

// Retention deleted a snapshot during the run: LOGICAL_INO still lists its references while its
// tree answers ENOENT. They go with it, so the others are planned; skipping the extent would
// leave it (and the duplicate, then indexed as known) on disk for good.
TEST_CASE("planner: references in a snapshot being deleted need no move")
{
    CopiedFile s;
    s.fs.start_deleting(258);

    ExtentPlanner planner(s.fs, kSingleMetadata, false);
    ExtentPlan plan = planner.plan(s.duplicates());
    REQUIRE(plan.extents.size() == 1);
    CHECK(plan.counters.skipped_partial_bytes == 0);
    CHECK_FALSE(plan.moves.empty());
    for (const PlannedMove& m : plan.moves)
        CHECK(m.dst.root != 258);
}

TEST_CASE("planner: an extent with more references than one call carries is a large fan-out")
{
    InMemoryFilesystem fs;
    const uint64_t size = 4 * MiB; // 121 leaves of 16 KiB cost less than this
    fs.add_subvolume(256, true);
    InodeHandle a = fs.add_file_in_extent(256, 300, size, 1);
    fs.add_subvolume(257, true);
    InodeHandle b = fs.add_file_in_extent(257, 300, size, 1);
    for (uint64_t root = 258; root < 257 + kMaxTargetsPerCall + 1; ++root) {
        fs.add_subvolume(root, true);
        fs.map(fs.add_file(root, 300, size), 0, fs.extent_at(b, 0), 0, size);
    }
    ExtentPlanner planner(fs, kSingleMetadata, false);
    ExtentPlan plan = planner.plan(duplicates_of_file(fs, b, size, a));
    REQUIRE(plan.extents.size() == 1);
    CHECK(plan.extents[0].references == kMaxTargetsPerCall + 1);
    CHECK(plan.counters.large_fanout_extents == 1);
}

TEST_CASE("planner: a leaf's cost is split among the extents referenced from it")
{
    SmallFiles s;
    ExtentPlanner planner(s.fs, kSingleMetadata, false);

    SUBCASE("one small file pays a whole leaf: skipped_cost_bytes")
    {
        ExtentPlan plan = planner.plan(s.add({320}, 8 * KiB));
        CHECK(plan.extents.empty());
        CHECK(plan.counters.skipped_cost_bytes == 8 * KiB);
        CHECK(plan.counters.predicted_metadata_bytes == 0);
    }
    SUBCASE("four in one leaf (inodes within one 32) pay a quarter each")
    {
        ExtentPlan plan = planner.plan(s.add({320, 321, 322, 351}, 8 * KiB));
        REQUIRE(plan.extents.size() == 4);
        for (const PlannedExtent& e : plan.extents)
            CHECK(e.metadata_cost == 4096);
        CHECK(plan.counters.predicted_metadata_bytes == 16384); // the leaf, once
        CHECK(plan.counters.skipped_cost_bytes == 0);
    }
    SUBCASE("four in four leaves pay a leaf each")
    {
        ExtentPlan plan = planner.plan(s.add({320, 352, 384, 416}, 8 * KiB));
        CHECK(plan.extents.empty());
        CHECK(plan.counters.skipped_cost_bytes == 4 * 8 * KiB);
    }
    SUBCASE("with DUP metadata a leaf costs twice as much")
    {
        ExtentPlanner dup(s.fs, {4096, 16384, 2}, false);
        ExtentPlan plan = dup.plan(s.add({320, 321, 322, 323}, 8 * KiB));
        CHECK(plan.extents.empty()); // 8 KiB each: not below the extent's 8 KiB
        CHECK(plan.counters.skipped_cost_bytes == 4 * 8 * KiB);
    }
}

TEST_CASE("planner: a leaf is paid once per run")
{
    SmallFiles s;
    ExtentPlanner planner(s.fs, kSingleMetadata, false);
    REQUIRE(planner.plan(s.add({320, 321, 322, 323}, 8 * KiB)).extents.size() == 4);

    // A later batch: the leaf is already unshared, a new one is not.
    ExtentPlan same_leaf = planner.plan(s.add({324}, 8 * KiB));
    REQUIRE(same_leaf.extents.size() == 1);
    CHECK(same_leaf.extents[0].metadata_cost == 0);
    ExtentPlan new_leaf = planner.plan(s.add({352}, 8 * KiB));
    CHECK(new_leaf.extents.empty());
    CHECK(new_leaf.counters.skipped_cost_bytes == 8 * KiB);
}

TEST_CASE("planner: an extent skipped for cost is listed, and costs nothing once a later batch paid its leaf")
{
    SmallFiles s;
    ExtentPlanner planner(s.fs, kSingleMetadata, false);
    const std::vector<DuplicateBlock> alone = s.add({352}, 8 * KiB);
    ExtentPlan first = planner.plan(alone);
    CHECK(first.extents.empty());
    CHECK(first.cost_skipped == std::vector<size_t>{0});
    REQUIRE(planner.plan(s.add({353, 354, 355, 356}, 8 * KiB)).extents.size() == 4); // pays leaf 352 / 32

    ExtentPlan second = planner.plan(alone); // SnapshotPass::second_look
    REQUIRE(second.extents.size() == 1);
    CHECK(second.extents[0].metadata_cost == 0);
    CHECK(second.cost_skipped.empty());
    CHECK(second.counters.skipped_cost_bytes == 0);
}

TEST_CASE("planner: a snapshot's path to its root is paid once per run, split among the extents in it")
{
    SmallFiles s(/*tree_level=*/1); // one node above the leaves
    ExtentPlanner planner(s.fs, kSingleMetadata, false);

    SUBCASE("two extents: half a leaf and half the path each, not below 16 KiB")
    {
        ExtentPlan plan = planner.plan(s.add({320, 321}, 16 * KiB));
        CHECK(plan.extents.empty());
        CHECK(plan.counters.skipped_cost_bytes == 2 * 16 * KiB);
    }
    SUBCASE("four extents: planned; a later batch does not pay the path again")
    {
        ExtentPlan plan = planner.plan(s.add({320, 321, 322, 323}, 16 * KiB));
        CHECK(plan.extents.size() == 4);

        // A new leaf in the same snapshot: the leaf is paid, the path is paid already.
        ExtentPlan later = planner.plan(s.add({352}, 32 * KiB));
        REQUIRE(later.extents.size() == 1);
        CHECK(later.extents[0].metadata_cost == 16384);
    }
}

// Known discrepancy, kept as it is (behaviour unchanged by the interface work): the README
// says a path's cost is split among the extents that touch it, like a leaf's, but plan()
// recomputes each extent's roots after the previous extent charged them, so only the first
// planned extent of a snapshot pays its share (4096 + 4096 here) and the others pay their leaf
// share only (4096): the batch is charged a quarter of the path. When that is fixed this test
// passes; drop should_fail then.
TEST_CASE("planner: a path's cost is split evenly among a batch's extents" * doctest::should_fail())
{
    SmallFiles s(/*tree_level=*/1);
    ExtentPlanner planner(s.fs, kSingleMetadata, false);
    ExtentPlan plan = planner.plan(s.add({320, 321, 322, 323}, 16 * KiB));
    REQUIRE(plan.extents.size() == 4);
    for (const PlannedExtent& e : plan.extents)
        CHECK(e.metadata_cost == 4096 + 4096);
    CHECK(plan.counters.predicted_metadata_bytes == 2 * 16384); // the leaf and the path, once each
}
