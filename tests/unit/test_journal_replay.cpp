// Finishing the intent journal (SnapshotPass::finish_journal, plugin/dedupe/journal_replay.cpp)
// against a filesystem in memory and an index in memory: what a killed run or a busy send
// left is planned again, with its keeper where it is now, and moved.
#include "engine_fixtures.h"
#include "index/index_file.h"
#include "plugin/dedupe/move_journal.h"
#include "plugin/dedupe/snapshot_pass.h"
#include "plugin/upkeep/snapshot_forgetter.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <string>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr uint64_t kFile = 256 * KiB;
constexpr uint64_t kHead = 64 * KiB;

// Snapshot 256 holds the keeper `a`, indexed. Snapshot 257 (the processed one) holds `b`, a
// copy of it, in `copy`; snapshots 258 and 259, taken later of b's subvolume, hold it as `c1`
// and `c2`. With `split`, b's first kHead bytes are in an extent of their own (`head`), so
// the move of `copy` starts inside the keeper's first block. All read-only.
struct Replay {
    InMemoryFilesystem fs;
    std::unique_ptr<Database> db = open_index(":memory:", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", false);
    BlockIndex index{*db};
    IndexJournal journal{*db, index};
    // Finishing the journal fingerprints nothing: any directory will do for the fingerprinter.
    LabeledFd no_filesystem = open_directory("/");
    InodeHandle a, b, c1, c2;
    uint64_t kept = 0, copy = 0, head = 0;

    explicit Replay(bool split = false)
    {
        for (uint64_t root = 256; root <= 260; ++root)
            fs.add_subvolume(root, true, 0, "uuid-" + std::to_string(root));
        a = fs.add_file_in_extent(256, 300, kFile, 1);
        kept = fs.extent_at(a, 0);
        if (split) {
            b = fs.add_file(257, 300, kFile);
            head = fs.add_extent(kHead, 1);
            copy = fs.add_extent(kFile, 1);
            fs.map(b, 0, head, 0, kHead);
            fs.map(b, kHead, copy, kHead, kFile - kHead);
        } else {
            b = fs.add_file_in_extent(257, 300, kFile, 1);
            copy = fs.extent_at(b, 0);
        }
        c1 = fs.snapshot_file(b, 258);
        c2 = fs.snapshot_file(b, 259);
        index.add_snapshot({"uuid-256", 256, "keepers", 10, "/snaps/keepers-1", 0});
        for (uint64_t offset = 0; offset < kFile; offset += kBlockSize) {
            DataBlock block = *fs.block_at(a, offset, kBlockSize);
            index.add_block(block.key, {0x5eed + offset, block.length, false}, {a, offset});
        }
    }
    BlockKey keeper_key() { return fs.block_at(a, 0, kBlockSize)->key; }
    // The journal a run killed right after recording b's batch leaves: every reference's move.
    void record_killed_batch()
    {
        for (const InodeHandle& f : {b, c1, c2})
            index.add_deferred({{f, 0}, kFile, {a, 0}, keeper_key(), 0});
    }
    // The first `length` bytes of `file` moved onto the keeper before the kill.
    void moved_before_kill(const InodeHandle& file, uint64_t length)
    {
        OpenResult src = fs.open_file(a), dst = fs.open_file(file);
        REQUIRE(fs.dedupe_call(src.fd.get(), 0, length, {{dst.fd.get(), 0}}).at(0).bytes_deduped == length);
    }
    // b's batch as the run plans and moves it (through the index's journal).
    MoveOutcome run_batch(const std::function<void()>& before_moving = {})
    {
        ExtentPlan plan = ExtentPlanner(fs, kSingleMetadata, false).plan(duplicates_of_file(fs, b, kFile, a));
        REQUIRE_FALSE(plan.moves.empty());
        if (before_moving)
            before_moving();
        MoveOutcome out = ReferenceMover(fs, journal).execute(plan, 2);
        journal.write_settled(); // the run's commit (plugin/upkeep/commit_point.h)
        return out;
    }
    // Snapshot 256 is deleted; with `survivor`, 260, a later (indexed) snapshot of its
    // subvolume, still holds `a` there. `forget`: the next run's forgetter has seen it.
    InodeHandle delete_keeper_snapshot(bool survivor, bool forget = true)
    {
        InodeHandle moved_to;
        if (survivor) {
            moved_to = fs.snapshot_file(a, 260);
            index.add_snapshot({"uuid-260", 260, "keepers", 20, "/snaps/keepers-2", 0});
        }
        fs.delete_subvolume(256);
        if (forget)
            forget_deleted_snapshots(fs, *db, index);
        return moved_to;
    }
    DedupeCounters finish(bool final = true, bool dry_run = false)
    {
        SnapshotPass pass(fs, journal, index, BlockFingerprinter(no_filesystem, ChecksumInfo{}), kSingleMetadata,
                          PassPolicy{dry_run, false, {}});
        DedupeCounters c = pass.finish_journal(std::chrono::milliseconds(0), final);
        journal.write_settled(); // the run's commit
        return c;
    }
};

} // namespace

TEST_CASE("replay: a killed run's journal is finished; what had moved before the kill is let be")
{
    Replay r;
    r.record_killed_batch();
    uint64_t still_to_move = 0;
    SUBCASE("the kill came after b moved")
    {
        r.moved_before_kill(r.b, kFile);
        still_to_move = 2;
    }
    SUBCASE("the kill came halfway through b")
    {
        r.moved_before_kill(r.b, kFile / 2);
        still_to_move = 3;
    }
    REQUIRE(r.fs.reference_count(r.copy) == still_to_move);

    DedupeCounters c = r.finish();

    CHECK(r.fs.reference_count(r.copy) == 0); // freed
    for (const InodeHandle& f : {r.b, r.c1, r.c2}) {
        CHECK(r.fs.extent_at(f, 0) == r.kept);
        CHECK(r.fs.extent_at(f, kFile - 1) == r.kept);
    }
    CHECK(r.index.deferred().empty());
    CHECK(c.references_moved == still_to_move);
    CHECK(c.extents_moved == 1);
    CHECK(c.dedupe_errors == 0);
    CHECK(c.busy_deferred == 0);
    CHECK(c.duplicate_bytes == 0); // counted when they were found
    CHECK(c.skipped_partial_bytes == 0); // b's move onto itself is nothing to count
}

TEST_CASE("replay: a keeper whose snapshot is gone is found where its bytes survive")
{
    Replay r;
    r.record_killed_batch();
    InodeHandle survivor;
    SUBCASE("the forgetter moved its index row there")
    {
        survivor = r.delete_keeper_snapshot(true);
        REQUIRE(r.index.block_at(r.keeper_key()));
        REQUIRE(r.index.block_at(r.keeper_key())->where.file == survivor);
    }
    SUBCASE("deleted during this run: the replay moves the row there itself")
    {
        survivor = r.delete_keeper_snapshot(true, /*forget=*/false);
        REQUIRE(r.index.block_at(r.keeper_key())->where.file == r.a);
    }

    r.finish();

    REQUIRE_FALSE(r.fs.calls().empty());
    CHECK(r.fs.calls()[0].src == survivor);
    CHECK(r.fs.reference_count(r.copy) == 0);
    CHECK(r.fs.extent_at(r.c2, 0) == r.kept);
    CHECK(r.index.deferred().empty());
}

TEST_CASE("replay: moves whose keeper was deleted between planning and moving are finished")
{
    Replay r;
    InodeHandle survivor;
    MoveOutcome first = r.run_batch([&] { survivor = r.delete_keeper_snapshot(true, /*forget=*/false); });
    REQUIRE(first.counters.references_moved == 0);
    REQUIRE(r.index.deferred().size() == 3); // kept: the references still hold their duplicates

    DedupeCounters c = r.finish();

    CHECK(r.fs.reference_count(r.copy) == 0);
    CHECK(r.fs.extent_at(r.b, 0) == r.kept);
    REQUIRE_FALSE(r.fs.calls().empty());
    CHECK(r.fs.calls()[0].src == survivor);
    CHECK(c.references_moved == 3);
    CHECK(r.index.deferred().empty());
}

TEST_CASE("replay: a row whose keeper is gone and has no index row is dropped")
{
    Replay r;
    r.record_killed_batch();
    r.delete_keeper_snapshot(false); // no survivor: the forgetter forgets the keeper's blocks
    REQUIRE_FALSE(r.index.block_at(r.keeper_key()));

    DedupeCounters c = r.finish();

    CHECK(r.fs.calls().empty());
    CHECK(r.index.deferred().empty());
    CHECK(r.fs.reference_count(r.copy) == 3); // nothing to move onto
    CHECK(c.references_moved == 0);
    CHECK(c.dedupe_errors == 0);
}

TEST_CASE("replay: moves a busy send left are finished once it is over; still busy, they stay")
{
    Replay r;
    r.fs.set_busy(258);
    MoveOutcome first = r.run_batch();
    REQUIRE(first.extent_busy == std::vector<bool>{true});
    REQUIRE(r.index.deferred().size() == 1); // c1: b and c2 moved

    SUBCASE("the send is over")
    {
        r.fs.set_busy(258, false);
        DedupeCounters c = r.finish();
        CHECK(r.fs.reference_count(r.copy) == 0);
        CHECK(r.index.deferred().empty());
        CHECK(c.references_moved == 1);
        CHECK(c.extents_moved == 1);
        CHECK(c.busy_deferred == 0);
    }
    SUBCASE("still busy: the final call counts it")
    {
        DedupeCounters c = r.finish(true);
        CHECK(c.busy_deferred == 1);
        std::vector<DeferredMove> rows = r.index.deferred();
        REQUIRE(rows.size() == 1);
        CHECK(rows[0].where.file == r.c1);
        CHECK(rows[0].error == EAGAIN);
        CHECK(r.fs.reference_count(r.copy) == 1);
    }
    SUBCASE("still busy: an earlier call leaves it to the final one")
    {
        DedupeCounters c = r.finish(false);
        CHECK(c.busy_deferred == 0);
        CHECK(r.index.deferred().size() == 1);
    }
}

// Between two rounds the run commits (before_each_round): the moves the first round made stay
// in the journal until then (a power cut before the commit rolls them back), and the second
// round takes only what is left.
TEST_CASE("replay: moves a round settled wait in the journal for the commit before the next round")
{
    Replay r;
    r.record_killed_batch();
    r.fs.set_busy(258); // c1's move is busy in the first round
    int rounds = 0;
    std::vector<DeferredMove> before_commit, after_commit;
    auto commit = [&] {
        ++rounds;
        if (rounds == 2) {
            before_commit = r.index.deferred();
            r.fs.set_busy(258, false);
        }
        r.journal.write_settled();
        if (rounds == 2)
            after_commit = r.index.deferred();
    };
    SnapshotPass pass(r.fs, r.journal, r.index, BlockFingerprinter(r.no_filesystem, ChecksumInfo{}), kSingleMetadata,
                      PassPolicy{});
    DedupeCounters c = pass.finish_journal(std::chrono::milliseconds(5000), true, commit);
    r.journal.write_settled(); // the run's commit at its end

    CHECK(rounds == 2);
    CHECK(before_commit.size() == 3); // b and c2 moved, c1 busy: all still there
    REQUIRE(after_commit.size() == 1);
    CHECK(after_commit[0].where.file == r.c1);
    CHECK(after_commit[0].error == EAGAIN);
    CHECK(r.index.deferred().empty());
    CHECK(r.fs.reference_count(r.copy) == 0);
    CHECK(c.busy_deferred == 0);
}

TEST_CASE("replay: a dry run leaves the journal alone")
{
    Replay r;
    r.record_killed_batch();
    DedupeCounters c = r.finish(true, /*dry_run=*/true);
    CHECK(r.fs.calls().empty());
    CHECK(r.index.deferred().size() == 3);
    CHECK(c.references_moved == 0);
}

// A journal row's keeper_key is the key of the keeper's BLOCK, while its keeper.file_offset is
// where the MOVE starts, which is inside that block when the reference's extent starts
// mid-block (here `copy` starts at 64 KiB of b, inside the keeper's first 128 KiB block). The
// relocated keeper must keep that offset, or the replay compares the wrong bytes, the kernel
// finds them different, the move settles, and `copy` is never freed.
TEST_CASE("replay: a relocated keeper keeps the move's offset inside the keeper's block")
{
    Replay r(/*split=*/true);
    r.fs.set_busy(258);
    r.run_batch(); // c1 busy: its two moves (head, and copy from 64 KiB) stay
    std::vector<DeferredMove> rows = r.index.deferred();
    REQUIRE(rows.size() == 2);
    REQUIRE(rows[1].where.file_offset == kHead);
    REQUIRE(rows[1].keeper.file_offset == kHead);
    r.delete_keeper_snapshot(true);
    r.fs.set_busy(258, false);

    DedupeCounters c = r.finish();

    CHECK(c.differs_bytes == 0);
    CHECK(r.fs.reference_count(r.head) == 0);
    CHECK(r.fs.reference_count(r.copy) == 0);
    CHECK(r.index.deferred().empty());
}

// The replay plans every journal row again, but only a row that was the processed snapshot's
// own reference (primary_ref) counts as deduped bytes. Here b's 256 KiB were counted when b
// moved; finishing c1 (a later snapshot's reference, which the run itself never counts) must
// not add 256 KiB more ("deduped: of the duplicates found, bytes now shared").
TEST_CASE("replay: finishing a busy extent counts the processed snapshot's bytes once")
{
    Replay r;
    r.fs.set_busy(258);
    MoveOutcome first = r.run_batch();
    REQUIRE(first.counters.deduped_bytes == kFile);
    r.fs.set_busy(258, false);

    DedupeCounters c = r.finish();

    REQUIRE(r.fs.reference_count(r.copy) == 0);
    CHECK(first.counters.deduped_bytes + c.deduped_bytes == kFile);
}
