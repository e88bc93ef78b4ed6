// The reference mover against a filesystem in memory: which calls it makes, in which order,
// what it leaves in the journal when a send holds a snapshot (what a retry starts from), and
// what it counts. The journal itself (when it is written, what settles) is
// test_move_journal.cpp's.
#include "engine_fixtures.h"
#include "plugin/dedupe/reference_mover.h"
#include "recording_journal.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr uint64_t kFile = SharedCopy::kSize;
constexpr uint64_t kHalf = kFile / 2;

using Targets = std::vector<std::pair<InodeHandle, uint64_t>>;

// The model, asked from two deduping threads (FilesystemQueries::dedupe_threads): one question
// at a time, as the model is not made for threads. The first dedupe call waits until a second
// one has started (or 10 s), so the two threads are seen at work side by side.
class TwoThreadFilesystem : public InMemoryFilesystem {
public:
    unsigned dedupe_threads() const override { return 2; }
    OpenResult open_file(const InodeHandle& file) override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        OpenResult opened = InMemoryFilesystem::open_file(file);
        if (opened)
            files_[opened.fd.get()] = file;
        return opened;
    }
    std::vector<DedupeCallResult> dedupe_call(int src_fd, uint64_t src_offset, uint64_t length,
                                              const std::vector<DedupeTarget>& targets) override
    {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            threads_of_[files_.at(src_fd)].insert(std::this_thread::get_id());
            if (++calls_started_ == 1)
                side_by_side_ = started_.wait_for(lock, std::chrono::seconds(10), [&] { return calls_started_ > 1; });
            else
                started_.notify_all();
        }
        std::lock_guard<std::mutex> lock(mutex_);
        return InMemoryFilesystem::dedupe_call(src_fd, src_offset, length, targets);
    }
    bool prefetch(int fd, uint64_t offset, uint64_t length) override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return InMemoryFilesystem::prefetch(fd, offset, length);
    }
    void release(int fd, uint64_t offset, uint64_t length) override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        InMemoryFilesystem::release(fd, offset, length);
    }
    void compared_up_to(size_t group) override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        compared_up_to_.push_back(group);
    }

    bool side_by_side_ = false; // a second call started while the first waited
    std::map<InodeHandle, std::set<std::thread::id>> threads_of_; // per source file
    std::vector<size_t> compared_up_to_;

private:
    std::mutex mutex_;
    std::condition_variable started_;
    size_t calls_started_ = 0;
    std::map<int, InodeHandle> files_;
};

} // namespace

TEST_CASE("mover: adjacent moves merge; references taking the same source range share one call")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    // One call for the read-only references, then one for the writable one; each moves the
    // whole file (two 128 KiB moves merged).
    REQUIRE(s.fs.calls().size() == 2);
    CHECK(s.fs.calls()[0].src == s.a);
    CHECK(s.fs.calls()[0].length == kFile);
    CHECK(s.fs.calls()[0].targets == Targets{{s.b, 0}, {s.c, 0}});
    CHECK(s.fs.calls()[1].length == kFile);
    CHECK(s.fs.calls()[1].targets == Targets{{s.w, 0}});
    CHECK(s.fs.reference_count(s.copy) == 0); // freed
    CHECK(s.fs.extent_at(s.w, 0) == s.kept);

    const DedupeCounters& c = out.counters;
    CHECK(c.references_moved == 3);
    CHECK(c.extents_moved == 1);
    CHECK(c.deduped_bytes == kFile); // the processed snapshot's own bytes, not the other copies
    CHECK(c.differs_bytes == 0);
    CHECK(c.dedupe_errors == 0);
    CHECK(out.moved == std::vector<bool>{true, true});
    CHECK(out.extent_busy == std::vector<bool>{false});

    // The journal was given the merged moves, and every one settled: nothing to retry.
    REQUIRE(journal.count(RecordingJournal::Op::record) == 1);
    CHECK(journal.log()[0].moves.size() == 3);
    for (const DeferredMove& m : journal.log()[0].moves)
        CHECK(m.length == kFile);
    CHECK(journal.count(RecordingJournal::Op::settle) == 3);
    CHECK(journal.count(RecordingJournal::Op::keep) == 0);
    CHECK(journal.empty());
}

TEST_CASE("mover: moves of different extents into one file stay apart")
{
    InMemoryFilesystem fs;
    fs.add_subvolume(256, true);
    fs.add_subvolume(257, true);
    InodeHandle a = fs.add_file_in_extent(256, 300, kFile, 1);
    InodeHandle b = fs.add_file(257, 300, kFile);
    uint64_t first = fs.add_extent(kHalf, 1);
    uint64_t second = fs.add_extent(kFile, 1);
    fs.map(b, 0, first, 0, kHalf);
    fs.map(b, kHalf, second, kHalf, kHalf); // byte for byte what `a` holds there

    ExtentPlan plan = ExtentPlanner(fs, kSingleMetadata, false).plan(duplicates_of_file(fs, b, kFile, a));
    REQUIRE(plan.extents.size() == 2);
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(fs, journal).execute(plan, 2);

    REQUIRE(fs.calls().size() == 2);
    CHECK(fs.calls()[0].length == kHalf);
    CHECK(fs.calls()[1].length == kHalf);
    CHECK(out.counters.extents_moved == 2);
    CHECK(out.counters.references_moved == 2);
    CHECK(fs.reference_count(first) == 0);
    CHECK(fs.reference_count(second) == 0);
    REQUIRE(journal.count(RecordingJournal::Op::record) == 1);
    CHECK(journal.log()[0].moves.size() == 2); // one per extent, not merged
    CHECK(journal.empty());
    // Two calls into one destination: it was opened once, and so was the source.
    CHECK(fs.opens(b) == 1);
    CHECK(fs.opens(a) == 1);
}

TEST_CASE("mover: a busy snapshot defers the extent, and the writable reference waits for it")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    s.fs.set_busy(258); // a send is reading c's snapshot
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    REQUIRE(s.fs.calls().size() == 1); // the writable pass never ran
    CHECK(s.fs.extent_at(s.b, 0) == s.kept);
    CHECK(s.fs.extent_at(s.c, 0) == s.copy);
    CHECK(s.fs.extent_at(s.w, 0) == s.copy); // the live subvolume stays with its snapshots
    CHECK(out.extent_busy == std::vector<bool>{true});

    // What a retry starts from: c, whose move did not happen, and w, never tried; b moved.
    CHECK(journal.rows().size() == 2);
    CHECK(journal.row(s.b, 0) == nullptr);
    const DeferredMove* c_row = journal.row(s.c, 0);
    REQUIRE(c_row != nullptr);
    CHECK(c_row->where.file == s.c);
    CHECK(c_row->length == kFile);
    CHECK(c_row->keeper.file == s.a);
    CHECK(c_row->keeper.file_offset == 0);
    CHECK(c_row->keeper_key == s.keeper_key());
    CHECK(c_row->error == EAGAIN);
    const DeferredMove* w_row = journal.row(s.w, 0);
    REQUIRE(w_row != nullptr);
    CHECK(w_row->length == kFile);
    CHECK(w_row->keeper.file == s.a);
    // Its error (0 or EAGAIN): test_move_journal.cpp, "a writable reference never tried ...".

    const DedupeCounters& c = out.counters;
    CHECK(c.references_moved == 1);
    CHECK(c.extents_moved == 0);
    CHECK(c.deduped_bytes == kFile);
    CHECK(c.dedupe_errors == 0); // busy is not an error
    CHECK(out.moved == std::vector<bool>{false, false});
}

TEST_CASE("mover: a busy extent keeps every move that did not happen, a half-moved reference's rest too")
{
    InMemoryFilesystem fs;
    fs.add_subvolume(256, true);
    fs.add_subvolume(257, true);
    fs.add_subvolume(258, true);
    // Two keepers, so each reference has two moves that do not merge.
    InodeHandle a1 = fs.add_file_in_extent(256, 300, kFile, 1);
    InodeHandle a2 = fs.add_file_in_extent(256, 301, kFile, 1);
    InodeHandle b = fs.add_file_in_extent(257, 300, kFile, 1);
    InodeHandle c = fs.add_file(258, 300, kFile);
    fs.map(c, 0, fs.extent_at(b, 0), 0, kFile);
    std::vector<DuplicateBlock> duplicates{duplicate_of(fs, b, 0, kHalf, a1, 0),
                                           duplicate_of(fs, b, kHalf, kHalf, a2, kHalf)};
    ExtentPlan plan = ExtentPlanner(fs, kSingleMetadata, false).plan(duplicates);
    REQUIRE(plan.moves.size() == 4);

    fs.fail_dedupe(b, EAGAIN, kHalf); // b: the first half moves, the second is busy
    fs.set_busy(258);                 // c: nothing moves
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(fs, journal).execute(plan, 2);

    CHECK(out.extent_busy == std::vector<bool>{true});
    // b's rest stays too: the journal, not the extent's references, finds it again.
    CHECK(journal.rows().size() == 3);
    CHECK(journal.row(b, 0) == nullptr);
    const DeferredMove* b_rest = journal.row(b, kHalf);
    REQUIRE(b_rest != nullptr);
    CHECK(b_rest->keeper.file == a2);
    CHECK(b_rest->keeper.file_offset == kHalf);
    CHECK(b_rest->error == EAGAIN);
    const DeferredMove* c_first = journal.row(c, 0);
    REQUIRE(c_first != nullptr);
    CHECK(c_first->keeper.file == a1);
    CHECK(c_first->length == kHalf);
    CHECK(c_first->error == EAGAIN);
    const DeferredMove* c_second = journal.row(c, kHalf);
    REQUIRE(c_second != nullptr);
    CHECK(c_second->keeper.file == a2);
    CHECK(c_second->error == EAGAIN);

    CHECK(out.counters.references_moved == 1);
    CHECK(out.counters.deduped_bytes == kHalf);
    CHECK(out.counters.dedupe_errors == 0);
}

TEST_CASE("mover: a refused read-only reference keeps the writable one from moving")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    s.fs.fail_dedupe(s.c, EPERM);
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    CHECK(s.fs.calls().size() == 1);
    CHECK(s.fs.extent_at(s.w, 0) == s.copy);
    CHECK(out.counters.dedupe_errors == 0);
    CHECK(out.counters.dedupe_refused == 1); // EPERM: an immutable file, refused for good
    CHECK(out.counters.references_moved == 1);
    CHECK(out.counters.extents_moved == 0);
    CHECK(out.extent_busy == std::vector<bool>{false});

    // c is dropped (it will never move); w waits for it, not tried (0).
    CHECK(journal.rows().size() == 1);
    CHECK(journal.row(s.c, 0) == nullptr);
    REQUIRE(journal.row(s.w, 0) != nullptr);
    CHECK(journal.row(s.w, 0)->error == 0);
}

TEST_CASE("mover: bytes a writer changed since planning are counted as differing, not an error")
{
    SharedCopy s;
    ExtentPlan plan = s.plan();
    s.fs.overwrite(s.w, 0, kFile, 9); // the live file was rewritten with other bytes
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(s.fs, journal).execute(plan, 2);

    REQUIRE(s.fs.calls().size() == 2);
    CHECK(out.counters.differs_bytes == kFile);
    CHECK(out.counters.dedupe_errors == 0);
    CHECK(out.counters.references_moved == 2);
    CHECK(out.counters.extents_moved == 0);
    CHECK(out.moved == std::vector<bool>{false, false});
    CHECK(s.fs.extent_at(s.w, 0) != s.kept);
    CHECK(journal.empty()); // different bytes never move: nothing to retry
}

TEST_CASE("mover: two threads dedupe different keepers side by side, each keeper's calls on one")
{
    // Four files of snapshot 257, each a copy of a different file of 256 in an extent of its own.
    TwoThreadFilesystem fs;
    fs.add_subvolume(256, true);
    fs.add_subvolume(257, true);
    std::vector<InodeHandle> keepers, copies;
    std::vector<DuplicateBlock> duplicates;
    for (uint64_t i = 0; i < 4; ++i) {
        keepers.push_back(fs.add_file_in_extent(256, 300 + i, kFile, 10 + i));
        copies.push_back(fs.add_file_in_extent(257, 300 + i, kFile, 10 + i));
        for (const DuplicateBlock& d : duplicates_of_file(fs, copies[i], kFile, keepers[i]))
            duplicates.push_back(d);
    }
    ExtentPlan plan = ExtentPlanner(fs, kSingleMetadata, false).plan(duplicates);
    REQUIRE(plan.extents.size() == 4);
    RecordingJournal journal;
    MoveOutcome out = ReferenceMover(fs, journal).execute(plan, duplicates.size());

    CHECK(fs.side_by_side_);
    CHECK(fs.calls().size() == 4);
    for (uint64_t i = 0; i < 4; ++i) {
        CHECK(fs.extent_at(copies[i], 0) == fs.extent_at(keepers[i], 0));
        CHECK(fs.threads_of_[keepers[i]].size() == 1);
    }
    CHECK(out.counters.extents_moved == 4);
    CHECK(out.counters.references_moved == 4);
    CHECK(out.counters.compared_bytes == 4 * 2 * kFile);
    CHECK(out.moved == std::vector<bool>(duplicates.size(), true));
    CHECK(journal.empty());
    // The reader is told of the groups done in order, up to the last.
    REQUIRE(!fs.compared_up_to_.empty());
    for (size_t k = 1; k < fs.compared_up_to_.size(); ++k)
        CHECK(fs.compared_up_to_[k - 1] <= fs.compared_up_to_[k]);
    CHECK(fs.compared_up_to_.back() == 4);
}
