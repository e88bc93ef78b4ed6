// The intent journal (plugin/dedupe/move_journal.h): the mover writes every move down before
// the first dedupe call and takes out only what settled; IndexJournal makes the record
// durable at once, on a real index file; an index from before the journal is upgraded in
// place, and a dry run reads it without writing.
#include "temp_dir.h"
#include "engine_fixtures.h"
#include "index/index_file.h"
#include "plugin/dedupe/move_journal.h"
#include "plugin/dedupe/reference_mover.h"
#include "recording_journal.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr uint64_t kFile = SharedCopy::kSize;
using Op = RecordingJournal::Op;

bool settled_in_log(const RecordingJournal& journal, const InodeHandle& file)
{
    for (const RecordingJournal::Entry& e : journal.log())
        if (e.op == Op::settle && e.moves[0].where.file == file)
            return true;
    return false;
}



// The move of the reference (root, inode 300, offset 0) onto a keeper in snapshot 256.
DeferredMove move_in(uint64_t root)
{
    return {{{root, 300, 101}, 0}, kFile, {{256, 300, 100}, 0}, {1 << 30, 0, 0}, 0};
}

// The journal as another connection (another process) sees it: what survives a kill.
std::vector<DeferredMove> rows_seen_from_outside(const std::string& path)
{
    Database other(path, false);
    BlockIndex index(other);
    return index.deferred();
}

// An index as the version before the journal made it: WAL, user_version 1, no application
// id, no `filesystem` table, `deferred` without `error`; one busy move in it.
std::string make_old_index(const TempDir& dir)
{
    const std::string path = dir.path("old.sqlite");
    Database db(path, true);
    db.exec("PRAGMA journal_mode=WAL");
    db.exec(R"sql(
CREATE TABLE snapshots (uuid TEXT PRIMARY KEY, root_id INTEGER NOT NULL, lineage TEXT NOT NULL,
    otransid INTEGER NOT NULL, path TEXT NOT NULL, processed_at INTEGER NOT NULL,
    changed_bytes INTEGER NOT NULL, changed_paths BLOB NOT NULL);
CREATE TABLE blocks (id INTEGER PRIMARY KEY, extent INTEGER NOT NULL, extent_offset INTEGER NOT NULL,
    length INTEGER NOT NULL, hash INTEGER NOT NULL, root_id INTEGER NOT NULL, inode INTEGER NOT NULL,
    inode_gen INTEGER NOT NULL, file_offset INTEGER NOT NULL, extent_gen INTEGER NOT NULL,
    UNIQUE (extent, extent_offset));
CREATE INDEX blocks_by_hash ON blocks (hash, length);
CREATE TABLE deferred (
    root_id INTEGER NOT NULL, inode INTEGER NOT NULL, inode_gen INTEGER NOT NULL,
    file_offset INTEGER NOT NULL, length INTEGER NOT NULL,
    keeper_root INTEGER NOT NULL, keeper_inode INTEGER NOT NULL, keeper_gen INTEGER NOT NULL,
    keeper_offset INTEGER NOT NULL, keeper_extent INTEGER NOT NULL, keeper_extent_offset INTEGER NOT NULL,
    PRIMARY KEY (root_id, inode, file_offset));
INSERT INTO deferred VALUES (258, 300, 101, 0, 262144, 256, 300, 100, 0, 1073741824, 0);
INSERT INTO snapshots VALUES ('uuid-256', 256, 'l', 10, '/snaps/1', 0, 1048576, x'');
INSERT INTO blocks VALUES (1, 1073741824, 0, 131072, 1234567, 256, 300, 100, 0, 9);
PRAGMA user_version=1;
)sql");
    return path;
}

} // namespace

TEST_CASE("journal: every move of the batch is recorded before the first dedupe call")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    RecordingJournal journal;
    std::optional<std::map<RecordingJournal::Key, DeferredMove>> at_first_call;
    size_t log_at_first_call = 0;
    s.fs.before_each_dedupe([&] {
        if (!at_first_call) {
            at_first_call = journal.rows();
            log_at_first_call = journal.log().size();
        }
    });
    ReferenceMover(s.fs, journal).execute(plan, 2);

    REQUIRE(at_first_call);
    CHECK(log_at_first_call == 1); // the one record: nothing settled or kept yet
    CHECK(journal.log()[0].op == Op::record);
    // The writable reference's move too, though it runs only after the read-only ones.
    REQUIRE(at_first_call->size() == 3);
    for (const InodeHandle& file : {s.b, s.c, s.w}) {
        auto it = at_first_call->find({file.root, file.inode, 0});
        REQUIRE(it != at_first_call->end());
        const DeferredMove& m = it->second;
        CHECK(m.where.file == file); // generation included
        CHECK(m.length == kFile);    // merged, as it runs
        CHECK(m.keeper.file == s.a);
        CHECK(m.keeper.file_offset == 0);
        CHECK(m.keeper_key == s.keeper_key());
        CHECK(m.error == 0); // not settled yet
    }
    CHECK(journal.empty()); // and all of it settled afterwards
}

TEST_CASE("journal: a move whose file is gone is settled, and is no error")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    SUBCASE("its snapshot was deleted since planning: the open fails (ESTALE)") { s.fs.delete_subvolume(258); }
    SUBCASE("the dedupe call finds it gone (ENOENT)") { s.fs.fail_dedupe(s.c, ENOENT); }
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    CHECK(settled_in_log(journal, s.c));
    CHECK(journal.row(s.c, 0) == nullptr);
    CHECK(out.counters.dedupe_errors == 0);
    // A reference that is gone holds nothing back: the writable one moves after b.
    CHECK(out.counters.references_moved == 2); // b and w
    CHECK(journal.empty());
}

TEST_CASE("journal: a move whose bytes differ from the keeper's is settled")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    s.fs.overwrite(s.w, 0, kFile, 9); // the live file was rewritten with other bytes
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    CHECK(out.counters.differs_bytes == kFile);
    CHECK(out.counters.dedupe_errors == 0);
    CHECK(settled_in_log(journal, s.w));
    CHECK(journal.count(Op::keep) == 0);
    CHECK(journal.empty());
}

TEST_CASE("journal: a move the kernel refuses with an error stays, with its errno, and is counted")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    int expected = 0;
    SUBCASE("EROFS")
    {
        expected = EROFS;
        s.fs.fail_dedupe(s.c, EROFS);
    }
    SUBCASE("EIO")
    {
        expected = EIO;
        s.fs.fail_dedupe(s.c, EIO);
    }
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    CHECK(out.counters.dedupe_errors == 1);
    CHECK(out.counters.references_moved == 1); // b
    CHECK(journal.rows().size() == 2);
    REQUIRE(journal.row(s.c, 0) != nullptr);
    CHECK(journal.row(s.c, 0)->error == expected);
    CHECK(journal.row(s.c, 0)->length == kFile);
    REQUIRE(journal.row(s.w, 0) != nullptr);
    CHECK(journal.row(s.w, 0)->error == 0); // not tried: c did not move
}

TEST_CASE("journal: a move the kernel refuses for good is counted once as refused and dropped")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    SUBCASE("no progress at all (dedupe_onto's EINVAL)") { s.fs.limit_dedupe(s.c, 0); }
    SUBCASE("an immutable file (EPERM)") { s.fs.fail_dedupe(s.c, EPERM); }
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    CHECK(out.counters.dedupe_refused == 1);
    CHECK(out.counters.dedupe_errors == 0); // nothing a later run could do better
    CHECK(settled_in_log(journal, s.c));
    CHECK(journal.row(s.c, 0) == nullptr);
    REQUIRE(journal.row(s.w, 0) != nullptr); // waited for c: kept, not tried
    CHECK(journal.row(s.w, 0)->error == 0);
    CHECK(journal.rows().size() == 1);
}

// A writable reference is tried only once every read-only reference of its extent moved; when
// those were busy, it waits with them, as busy (MoveJournal::keep).
TEST_CASE("journal: a writable reference never tried behind a busy snapshot is kept as busy")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    s.fs.set_busy(258);
    RecordingJournal journal;
    ReferenceMover(s.fs, journal).execute(plan, 2);

    REQUIRE(journal.row(s.w, 0) != nullptr);
    CHECK(journal.row(s.w, 0)->error == EAGAIN);
}

// A keeper that does not open (its snapshot deleted during the run: the oldest snapshot holds
// most keepers) is no reason to drop the move: the reference still holds its duplicate, and
// the replay finds where the keeper's bytes survive (keeper_now). So ESTALE from opening the
// SOURCE keeps the move, and counts as an error, unlike ESTALE from opening the reference.
TEST_CASE("journal: a move whose keeper is gone stays for the replay to find the keeper")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    s.fs.delete_subvolume(256); // the keeper's snapshot, deleted after planning
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    CHECK(s.fs.calls().empty());
    CHECK(s.fs.extent_at(s.b, 0) == s.copy); // nothing moved
    CHECK(journal.rows().size() == 3);
    for (const InodeHandle& file : {s.b, s.c}) {
        REQUIRE(journal.row(file, 0) != nullptr);
        CHECK(journal.row(file, 0)->error == ESTALE);
    }
    REQUIRE(journal.row(s.w, 0) != nullptr);
    CHECK(journal.row(s.w, 0)->error == 0); // not tried
    CHECK(out.counters.dedupe_errors == 2);
    CHECK(out.counters.references_moved == 0);
}

TEST_CASE("journal: IndexJournal::record commits the moves at once; keep rides on the transaction, settle waits for "
          "the filesystem's commit")
{
    TempDir dir;
    const std::string path = dir.path("index.sqlite");
    std::unique_ptr<Database> db = open_index(path, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", false);
    BlockIndex index(*db);
    IndexJournal journal(*db, index);
    const DeferredMove b = move_in(257), c = move_in(258), later = move_in(259);
    {
        Transaction tx(*db); // a snapshot's transaction, as run.cpp opens it
        journal.record({b, c});
        CHECK(rows_seen_from_outside(path).size() == 2); // committed before any move runs

        journal.settle(b.where);
        DeferredMove busy = c;
        busy.error = EAGAIN;
        journal.keep(busy);
        journal.keep(later);
        // b's move may still be rolled back by a power cut: it stays until the filesystem
        // has committed it.
        CHECK(journal.holds_settled());
        CHECK(index.deferred().size() == 3);
        journal.write_settled(); // right after the commit
        CHECK_FALSE(journal.holds_settled());
        std::vector<DeferredMove> inside = index.deferred();
        REQUIRE(inside.size() == 2); // c (busy) and `later`; b settled
        CHECK(inside[0].where.file.root == 258);
        CHECK(inside[0].error == EAGAIN);
        CHECK(inside[1].where.file.root == 259);
        CHECK(rows_seen_from_outside(path).size() == 2); // not committed: b, c as recorded
    } // destroyed uncommitted: the kill

    for (const std::vector<DeferredMove>& rows : {index.deferred(), rows_seen_from_outside(path)}) {
        REQUIRE(rows.size() == 2); // what record() committed, and only that
        CHECK(rows[0].where.file == b.where.file);
        CHECK(rows[0].keeper.file == b.keeper.file);
        CHECK(rows[0].keeper_key == b.keeper_key);
        CHECK(rows[0].length == kFile);
        CHECK(rows[0].error == 0);
        CHECK(rows[1].where.file == c.where.file);
        CHECK(rows[1].error == 0);
    }
}

TEST_CASE("journal: a reference settled and then recorded again before the commit keeps its new row")
{
    // The run that found this: one batch moved a snapshot's reference onto a keeper (settled,
    // held until the commit); a later batch moved the keeper's extent onto a cheaper copy,
    // that reference with it, and a send on its snapshot made the move busy. The commit then
    // took the busy row out with the settled one, and the end of the run had nothing to retry.
    TempDir dir;
    const std::string path = dir.path("index.sqlite");
    std::unique_ptr<Database> db = open_index(path, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", false);
    BlockIndex index(*db);
    IndexJournal journal(*db, index);
    const DeferredMove first = move_in(257), other = move_in(258);
    DeferredMove again = first; // the same reference, onto another keeper
    again.keeper = {{259, 400, 102}, 0};
    again.keeper_key = {uint64_t{2} << 30, 0, 0};

    Transaction tx(*db);
    journal.record({first, other});
    journal.settle(first.where);
    journal.settle(other.where);
    journal.record({again}); // the later batch
    DeferredMove busy = again;
    busy.error = EAGAIN;
    journal.keep(busy);
    REQUIRE(journal.holds_settled()); // `other` still waits for the commit
    journal.write_settled();
    std::vector<DeferredMove> rows = index.deferred();
    REQUIRE(rows.size() == 1); // the busy move, for the end of the run to retry
    CHECK(rows[0].where.file == first.where.file);
    CHECK(rows[0].keeper.file == again.keeper.file);
    CHECK(rows[0].keeper_key == again.keeper_key);
    CHECK(rows[0].error == EAGAIN);

    // Recorded again and settled again: the row goes at the commit after all.
    journal.record({again});
    journal.settle(again.where);
    journal.write_settled();
    CHECK(index.deferred().empty());
    CHECK_FALSE(journal.holds_settled());
}

TEST_CASE("journal: an index from before the journal is upgraded in place, refusing nothing")
{
    TempDir dir;
    const std::string path = make_old_index(dir);
    const std::string uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    {
        std::unique_ptr<Database> db;
        REQUIRE_NOTHROW(db = open_index(path, uuid, false));
        BlockIndex index(*db);
        std::vector<DeferredMove> rows = index.deferred();
        REQUIRE(rows.size() == 1); // the old busy move, now a journal row
        CHECK(rows[0].where.file.root == 258);
        CHECK(rows[0].length == kFile);
        CHECK(rows[0].keeper_key.extent == 1073741824);
        CHECK(rows[0].error == 0);
        DeferredMove busy = rows[0];
        busy.error = EAGAIN;
        index.add_deferred(busy);
        CHECK(index.deferred().at(0).error == EAGAIN);
        Statement recorded = db->prepare("SELECT uuid FROM filesystem");
        REQUIRE(recorded.step());
        CHECK(recorded.text(0) == uuid); // now it knows its filesystem
        recorded.reset();
    }
    CHECK_NOTHROW(open_index(path, uuid, false)); // upgraded once: opens as any index
    CHECK_THROWS_AS(open_index(path, "another-filesystem", false), IndexError);
}

TEST_CASE("index: version 1 (hashes of data) is rebuilt as version 2 in one line, keeping the journal")
{
    TempDir dir;
    const std::string path = make_old_index(dir);
    std::vector<std::string> notices;
    auto notice = [&](const std::string& line) { notices.push_back(line); };
    {
        std::unique_ptr<Database> db = open_index(path, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", false, notice);
        CHECK(db->scalar("PRAGMA user_version") == kIndexSchemaVersion);
        CHECK(db->scalar("SELECT count(*) FROM blocks") == 0);    // its hashes do not compare
        CHECK(db->scalar("SELECT count(*) FROM snapshots") == 0); // so every snapshot is indexed again
        CHECK(db->scalar("SELECT count(*) FROM deferred") == 1);  // the journal holds no hash: kept
        CHECK(index_has_column(*db, "blocks", "fingerprint"));
        CHECK(index_has_column(*db, "blocks", "nodatasum"));
        BlockIndex index(*db);
        BlockKey key{1 << 20, 0, 7};
        index.add_block(key, {42, 131072, false}, {{256, 300, 100}, 0});
        CHECK(index.find_copies({42, 131072, false}, BlockKey{}).size() == 1);
        CHECK(index.find_copies({42, 131072, true}, BlockKey{}).empty()); // the other kind: never offered
    }
    REQUIRE(notices.size() == 1);
    CHECK(notices[0].find("rebuilt as version 2") != std::string::npos);
    notices.clear();
    open_index(path, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", false, notice);
    CHECK(notices.empty()); // once
}

TEST_CASE("journal: a dry run opens an index from before the journal without writing to it")
{
    TempDir dir;
    const std::string path = make_old_index(dir);
    const std::string before = file_bytes(path);
    REQUIRE_FALSE(before.empty());
    {
        std::unique_ptr<Database> db;
        std::vector<std::string> notices;
        REQUIRE_NOTHROW(db = open_index(path, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", true,
                                        [&](const std::string& line) { notices.push_back(line); }));
        BlockIndex index(*db);
        CHECK(db->scalar("SELECT count(*) FROM blocks") == 0);
        // Version 1: the dry run plans on an empty index, and says so in one line.
        REQUIRE(notices.size() == 1);
        CHECK(notices[0].find("schema version 1") != std::string::npos);
        CHECK(notices[0].find("dry run") != std::string::npos);
    }
    CHECK(file_bytes(path) == before);
    CHECK_FALSE(std::filesystem::exists(path + "-wal")); // nothing waiting to be written either
}

TEST_CASE("index: status reads a version-1 index as it is, and a newer version is refused")
{
    TempDir dir;
    const std::string path = make_old_index(dir);
    const std::string before = file_bytes(path);
    int64_t deferred = -1;
    CHECK(read_index_readonly(path, std::nullopt,
                              [&](Database& db) { deferred = db.scalar("SELECT count(*) FROM deferred"); }));
    CHECK(deferred == 1);
    CHECK(file_bytes(path) == before); // not rebuilt: only a run's write use does that
    {
        Database db(path, false);
        db.exec("PRAGMA user_version=" + std::to_string(kIndexSchemaVersion + 1));
    }
    CHECK_THROWS_AS(read_index_readonly(path, std::nullopt, [](Database&) {}), IndexError);
    CHECK_THROWS_AS(open_index(path, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", false), IndexError);
}
