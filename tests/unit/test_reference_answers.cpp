// The planner's questions about a batch, asked ahead on the deduping threads
// (plugin/dedupe/reference_answers.h): asked side by side, answered as if asked one by one,
// errors included, so that the plan is the same as with one thread.
#include "engine_fixtures.h"
#include "plugin/dedupe/extent_planner.h"
#include "plugin/dedupe/reference_answers.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr uint64_t kFile = SharedCopy::kSize;

// The model, asked from two threads: one question at a time, as the model is not made for
// threads. The first LOGICAL_INO waits (at most 10 s) until a second one starts.
class TwoThreadQueries : public InMemoryFilesystem {
public:
    unsigned dedupe_threads() const override { return 2; }
    ExtentRefs extent_references(uint64_t address) override
    {
        std::unique_lock<std::mutex> lock(mutex_);
        threads_.insert(std::this_thread::get_id());
        if (++started_ == 1)
            side_by_side_ = second_.wait_for(lock, std::chrono::seconds(10), [&] { return started_ > 1; });
        else
            second_.notify_all();
        return InMemoryFilesystem::extent_references(address);
    }
    std::optional<InodeInfo> inode_info(uint64_t root, uint64_t inode) override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return InMemoryFilesystem::inode_info(root, inode);
    }
    std::vector<FileExtentItem> file_extent_items(uint64_t root, uint64_t inode, uint64_t min_offset,
                                                  uint64_t max_offset) override
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return InMemoryFilesystem::file_extent_items(root, inode, min_offset, max_offset);
    }

    std::mutex mutex_;
    std::condition_variable second_;
    size_t started_ = 0;
    bool side_by_side_ = false;
    std::set<std::thread::id> threads_;
};

// Four keepers in snapshot 256; their copies in 257, also held by a later snapshot 258 (being
// deleted with `deleting`: listed by LOGICAL_INO, its tree no longer answers) and, for the
// last copy, by a writable subvolume 259.
std::vector<DuplicateBlock> make_batch(InMemoryFilesystem& fs, bool deleting)
{
    fs.add_subvolume(256, true);
    fs.add_subvolume(257, true);
    fs.add_subvolume(258, true);
    fs.add_subvolume(259, false);
    std::vector<DuplicateBlock> duplicates;
    for (uint64_t i = 0; i < 4; ++i) {
        InodeHandle keeper = fs.add_file_in_extent(256, 300 + i, kFile, 10 + i);
        InodeHandle copy = fs.add_file_in_extent(257, 300 + i, kFile, 10 + i);
        fs.snapshot_file(copy, 258);
        if (i == 3)
            fs.snapshot_file(copy, 259);
        for (const DuplicateBlock& d : duplicates_of_file(fs, copy, kFile, keeper))
            duplicates.push_back(d);
    }
    if (deleting)
        fs.start_deleting(258);
    return duplicates;
}

std::string describe(const ExtentPlan& plan)
{
    std::ostringstream out;
    for (const PlannedExtent& e : plan.extents)
        out << "extent " << e.disk_bytenr << " " << e.disk_bytes << " refs " << e.references << " cost "
            << e.metadata_cost << " writable " << e.writable << "\n";
    for (const PlannedMove& m : plan.moves)
        out << "move " << m.dst.root << "/" << m.dst.inode << "@" << m.dst_offset << " <- " << m.src.root << "/"
            << m.src.inode << "@" << m.src_offset << " " << m.length << " extent " << m.extent << " primary "
            << m.primary << " writable " << m.writable << "\n";
    out << "skipped partial " << plan.counters.skipped_partial_bytes << " predicted "
        << plan.counters.predicted_freed_bytes << " metadata " << plan.counters.predicted_metadata_bytes << "\n";
    return out.str();
}

} // namespace

TEST_CASE("answers: a batch's questions are asked side by side, and the plan is the one asked one by one")
{
    // `after`: keepers indexed after row 0 (all of them) may be exchanged; the copy held three
    // times is, and its keeper's references are asked about ahead too.
    for (std::optional<int64_t> after : {std::optional<int64_t>(), std::optional<int64_t>(0)}) {
        for (bool deleting : {false, true}) {
            CAPTURE(deleting);
            CAPTURE(after.has_value());
            InMemoryFilesystem one;
            TwoThreadQueries two;
            ExtentPlan in_line = ExtentPlanner(one, kSingleMetadata, false).plan(make_batch(one, deleting), after);
            ExtentPlan ahead = ExtentPlanner(two, kSingleMetadata, false).plan(make_batch(two, deleting), after);

            CHECK(two.side_by_side_);
            CHECK(two.threads_.size() == 2);
            REQUIRE(in_line.extents.size() == 4);
            CHECK(describe(ahead) == describe(in_line));
            CHECK(ahead.exchanges.size() == in_line.exchanges.size());
            CHECK(in_line.exchanges.size() == (after && !deleting ? 1u : 0u)); // the keeper's one row
            if (!deleting) // the same questions, none more
                CHECK(two.reference_lookups == one.reference_lookups);
            if (!after) {
                // A move per block of each reference; deleting, 258's references need none:
                // they go with it.
                CHECK(in_line.moves.size() == (deleting ? 4u + 1 : 4u * 2 + 1) * (kFile / kBlockSize));
            }
        }
    }
}

TEST_CASE("answers: an error is rethrown where it is asked; what was not asked ahead is asked then")
{
    InMemoryFilesystem fs;
    std::vector<DuplicateBlock> batch = make_batch(fs, true);
    const uint64_t asked = fs.extent_at(batch.front().file, 0);
    ReferenceAnswers answers(fs, {asked});

    REQUIRE(answers.references(asked) != nullptr);
    CHECK(answers.references(asked)->refs.size() == 2); // 257 and 258
    CHECK(answers.references(asked + 1) == nullptr);
    const InodeHandle& file = batch.front().file;
    size_t lookups = fs.inode_lookups;
    CHECK(answers.inode_info(257, file.inode)->generation == file.generation);
    CHECK(fs.inode_lookups == lookups); // answered ahead
    try {
        answers.file_extent_items(258, file.inode, 0);
        FAIL("the deleting snapshot's tree answered");
    } catch (const SysError& e) {
        CHECK(e.err() == ENOENT);
    }
    CHECK(answers.inode_info(257, file.inode + 1)->generation != 0); // not asked ahead: asked now
    CHECK(fs.inode_lookups == lookups + 1);
}
