// Cheaper keepers: a keeper indexed during this run that fewer snapshots hold than its copy
// moves onto the copy, instead of every reference of the copy moving onto it.
#include "engine_fixtures.h"
#include "index/index_file.h"

#include <doctest/doctest.h>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

// An identical reinstall seen by a first run (SharedCopy): snapshot 256 holds the old copy `a`
// (the keeper, indexed earlier in the run), snapshots 257 and 258 and the live subvolume 259
// the new one, `b`, `c` and `w`, in one extent.
struct Reinstall : SharedCopy {
    // b's blocks, found to be a's, whose rows are 11 and 12.
    std::vector<DuplicateBlock> duplicates()
    {
        std::vector<DuplicateBlock> d = duplicates_of_file(fs, b, kSize, a);
        d[0].keeper.id = 11;
        d[1].keeper.id = 12;
        return d;
    }
    ExtentPlan plan(std::optional<int64_t> exchangeable_after)
    {
        return ExtentPlanner(fs, kSingleMetadata, false).plan(duplicates(), exchangeable_after);
    }
};

} // namespace

TEST_CASE("keeper exchange: a keeper of this run held by fewer references moves onto its copy")
{
    Reinstall s;
    ExtentPlan plan = s.plan(10); // rows above 10 are this run's

    REQUIRE(plan.extents.size() == 1);
    CHECK(plan.extents[0].disk_bytenr == s.kept); // freed: the old copy, not the new
    CHECK(plan.extents[0].references == 1);            // instead of 3
    CHECK(plan.extents[0].metadata_cost == 16384);     // one leaf instead of three
    REQUIRE(plan.moves.size() == 2);
    for (const PlannedMove& m : plan.moves) {
        CHECK(m.dst == s.a);
        CHECK(m.src == s.b);
        CHECK(m.src_offset == m.dst_offset);
        CHECK(m.keeper_key == s.fs.block_at(s.b, m.src_offset, kBlockSize)->key); // what the journal records
        CHECK(m.primary); // the snapshot's bytes count as deduped, once
    }
    REQUIRE(plan.exchanges.size() == 2);
    for (const KeeperExchange& x : plan.exchanges) {
        CHECK(x.keeper_id == (x.duplicate == 0 ? 11 : 12));
        CHECK(x.where.file == s.b);
        CHECK(x.where.file_offset == x.duplicate * kBlockSize);
        CHECK(x.key == s.fs.block_at(s.b, x.where.file_offset, kBlockSize)->key);
    }
    CHECK(plan.counters.predicted_freed_bytes == Reinstall::kSize);
    CHECK(s.fs.reference_lookups == 2); // the copy's extent, and the keeper's once (was twice)
}

TEST_CASE("keeper exchange: not for a keeper of an earlier run, not when the copy costs no more, not in a replay")
{
    Reinstall s;
    SUBCASE("a keeper of an earlier run: a nightly run never asks about a keeper every snapshot holds")
    {
        ExtentPlan plan = s.plan(12); // rows 11 and 12 are older than this run
        REQUIRE(plan.extents.size() == 1);
        CHECK(plan.extents[0].disk_bytenr == s.copy);
        CHECK(plan.exchanges.empty());
        CHECK(s.fs.reference_lookups == 1); // the copy's only: the keeper's was asked about too
    }
    SUBCASE("finishing the journal: every move's keeper stays")
    {
        ExtentPlan plan = s.plan(std::nullopt);
        REQUIRE(plan.extents.size() == 1);
        CHECK(plan.extents[0].disk_bytenr == s.copy);
        CHECK(plan.exchanges.empty());
    }
    SUBCASE("as many references to the keeper as to the copy")
    {
        for (uint64_t root : {260, 261}) {
            s.fs.add_subvolume(root, true);
            InodeHandle older = s.fs.add_file(root, 300, Reinstall::kSize);
            s.fs.map(older, 0, s.kept, 0, Reinstall::kSize);
        }
        ExtentPlan plan = s.plan(10);
        REQUIRE(plan.extents.size() == 1);
        CHECK(plan.extents[0].disk_bytenr == s.copy); // the oldest stays keeper
        CHECK(plan.exchanges.empty());
    }
    SUBCASE("a copy held only twice: not worth asking the kernel about the keeper")
    {
        s.fs.delete_subvolume(258);
        ExtentPlan plan = s.plan(10);
        REQUIRE(plan.extents.size() == 1);
        CHECK(plan.extents[0].disk_bytenr == s.copy);
        CHECK(plan.exchanges.empty());
    }
}

TEST_CASE("keeper exchange: not when another extent of the batch is deduped onto the same keeper")
{
    Reinstall s;
    // A second copy of a's bytes in snapshot 257, an extent of its own: planned onto a too.
    InodeHandle second = s.fs.add_file_in_extent(257, 301, Reinstall::kSize, 1);
    std::vector<DuplicateBlock> dups = s.duplicates();
    std::vector<DuplicateBlock> more = duplicates_of_file(s.fs, second, Reinstall::kSize, s.a);
    more[0].keeper.id = 11;
    more[1].keeper.id = 12;
    dups.insert(dups.end(), more.begin(), more.end());

    ExtentPlan plan = ExtentPlanner(s.fs, kSingleMetadata, false).plan(dups, 10);

    CHECK(plan.exchanges.empty());
    REQUIRE(plan.extents.size() == 2); // both copies move onto a, which stays
    for (const PlannedMove& m : plan.moves)
        CHECK(m.src == s.a);
}

TEST_CASE("keeper exchange: the index row takes the copy's key and location and keeps its id")
{
    std::unique_ptr<Database> db = open_index(":memory:", "fs-uuid", false);
    BlockIndex index(*db);
    CHECK(index.last_block_id() == 0);
    const InodeHandle old_file{256, 300, 7}, new_file{257, 300, 9};
    index.add_block({1 << 20, 0, 5}, {0xabc, kBlockSize, false}, {old_file, 0});
    const int64_t id = index.last_block_id();
    const BlockKey copy{8 << 20, 0, 6};

    index.exchange_block(id, copy, {new_file, 0});

    CHECK_FALSE(index.knows_block({1 << 20, 0, 5}));
    CHECK(index.knows_block(copy));
    std::vector<IndexedBlock> found = index.find_copies({0xabc, kBlockSize, false}, {0, 0, 0});
    REQUIRE(found.size() == 1);
    CHECK(found[0].id == id);
    CHECK(found[0].where.file == new_file);
    CHECK(index.last_block_id() == id);
}
