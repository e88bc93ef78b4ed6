// The read-ahead thread (plugin/dedupe/read_ahead.h): what it opens, in what order, how far
// ahead of the deduper, and that it always stops. Files are real (a temp file); which ranges
// the reader visits is seen through its opener.
#include "plugin/dedupe/read_ahead.h"

#include "uncached_files.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// Groups of `per_group` ranges of `length` bytes each; range k of the whole list is inode k.
CompareGroups numbered_groups(size_t groups, size_t per_group, uint64_t length)
{
    CompareGroups out(groups);
    uint64_t next = 0;
    for (std::vector<CompareRange>& g : out)
        for (size_t i = 0; i < per_group; ++i)
            g.push_back({{5, next++, 1}, 0, length});
    return out;
}

// Opens `path` for every handle (`per_inode`: `path` followed by the inode number), and records
// which inodes were asked for, in order.
struct RecordingOpener {
    std::string path;
    std::mutex mutex;
    std::vector<uint64_t> opened;
    bool per_inode = false;

    ReadAhead::Opener opener()
    {
        return [this](const InodeHandle& h) {
            {
                std::lock_guard<std::mutex> lock(mutex);
                opened.push_back(h.inode);
            }
            OpenResult r;
            std::string name = per_inode ? path + std::to_string(h.inode) : path;
            r.fd = UniqueFd(::open(name.c_str(), O_RDONLY | O_CLOEXEC));
            return r;
        };
    }
    std::vector<uint64_t> seen()
    {
        std::lock_guard<std::mutex> lock(mutex);
        return opened;
    }
};

// Polls until `done` or two seconds have passed: the reader runs on its own thread.
template <typename F>
bool eventually(F done)
{
    for (int i = 0; i < 200; ++i) {
        if (done())
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
}

std::string file_of(const TempDir& dir, uint64_t bytes)
{
    return dir.write("data", std::string(bytes, 'x'));
}

} // namespace

TEST_CASE("read-ahead: reads every range in order when the window holds them all")
{
    TempDir dir;
    RecordingOpener o{file_of(dir, kMiB), {}, {}, false};
    {
        ReadAhead ahead(o.opener(), numbered_groups(3, 4, kMiB), 64 * kMiB);
        REQUIRE(eventually([&] { return o.seen().size() == 12; }));
    }
    std::vector<uint64_t> want;
    for (uint64_t k = 0; k < 12; ++k)
        want.push_back(k);
    CHECK(o.seen() == want);
}

TEST_CASE("read-ahead: stays within its window of the group being deduped")
{
    TempDir dir;
    RecordingOpener o{file_of(dir, kMiB), {}, {}, false};
    // 10 groups of 2 ranges of 1 MiB; a 3 MiB window: ranges starting before 3 MiB past the
    // current group's start, so 3 ranges at first.
    ReadAhead ahead(o.opener(), numbered_groups(10, 2, kMiB), 3 * kMiB);
    REQUIRE(eventually([&] { return o.seen().size() == 3; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(o.seen().size() == 3); // and no more until the deduper moves on
    ahead.deduped_up_to(2); // now at group 2 (byte 4 MiB): up to 7 MiB; group 1's rest is passed
    REQUIRE(eventually([&] { return o.seen().size() == 6; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(o.seen() == std::vector<uint64_t>{0, 1, 2, 4, 5, 6});
}

TEST_CASE("read-ahead: skips the groups the deduper has already passed")
{
    TempDir dir;
    RecordingOpener o{file_of(dir, kMiB), {}, {}, false};
    ReadAhead ahead(o.opener(), numbered_groups(10, 1, kMiB), 1 * kMiB);
    REQUIRE(eventually([&] { return o.seen().size() == 1; }));
    ahead.deduped_up_to(8); // groups 1-7 were deduped without it
    REQUIRE(eventually([&] { return o.seen().size() == 2; }));
    CHECK(o.seen() == std::vector<uint64_t>{0, 8});
}

TEST_CASE("read-ahead: stops at once when destroyed, with reads waiting or none left")
{
    TempDir dir;
    RecordingOpener o{file_of(dir, kMiB), {}, {}, false};
    auto start = std::chrono::steady_clock::now();
    {
        ReadAhead waiting(o.opener(), numbered_groups(1000, 1, kMiB), 1 * kMiB);
        REQUIRE(eventually([&] { return o.seen().size() == 1; }));
    }
    {
        ReadAhead finished(o.opener(), numbered_groups(1, 1, kMiB), 64 * kMiB);
        REQUIRE(eventually([&] { return o.seen().size() == 2; }));
    }
    { ReadAhead empty(o.opener(), {}, 64 * kMiB); }
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}

TEST_CASE("read-ahead: holds at most 128 files open, however small the ranges")
{
    TempDir dir;
    // 200 files of 4 KiB, none in the page cache: each range is cold, so each is read and its
    // file held until its group is done. Files of their own, not blocks of one file: the
    // kernel's readahead (read_ahead_kb, 8 MiB on the development VM's disk) would bring a
    // file's later blocks into the cache before the reader gets there.
    for (uint64_t k = 0; k < 200; ++k)
        write_uncached(dir, "file-" + std::to_string(k), kPage);
    RecordingOpener o{dir.path("file-"), {}, {}, true};
    CompareGroups groups;
    for (uint64_t k = 0; k < 200; ++k)
        groups.push_back({{{5, k, 1}, 0, 4096}});
    ReadAhead ahead(o.opener(), groups, 1024 * kMiB);
    // Counted in files read, not files opened: a file found cached is not read and not held
    // (now and then ext4 still has one of them in the cache).
    constexpr uint64_t kHeld = 128 * 4096;
    REQUIRE(eventually([&] { return ahead.bytes_read() == kHeld; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(ahead.bytes_read() == kHeld); // the window has room, the cap has not
    const size_t opened = o.seen().size();
    CHECK(opened >= 128);
    CHECK(opened < 200);
    ahead.deduped_up_to(10); // up to 10 files released: up to 10 more may be read
    REQUIRE(eventually([&] { return ahead.bytes_read() > kHeld; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    INFO("opened " << o.seen().size() << ", read " << ahead.bytes_read());
    CHECK(ahead.bytes_read() <= kHeld + 10 * 4096);
    CHECK(o.seen().size() < 200);
}

namespace {

// A file of 8 MiB, none of it in the page cache, open for reading.
struct UncachedFile {
    static constexpr size_t kSize = 8 * kMiB;
    TempDir dir;
    UniqueFd fd;
    UncachedFile()
    {
        fd = UniqueFd(::open(write_uncached(dir, "file", kSize).c_str(), O_RDONLY | O_CLOEXEC));
        REQUIRE(fd.valid());
        REQUIRE(cached_pages(fd.get(), 0, kSize) == 0);
    }
};

// `ask` is asked for three MiB from the second (more than one step, and not the whole file):
// it asks for all of them and returns, and they arrive. Asked again, it finds them cached
// (someone's working set, or the reader's: nothing to ask for, nothing to drop).
void check_asks_then_finds_cached(const UncachedFile& file, const std::function<uint64_t(int, uint64_t, uint64_t)>& ask)
{
    const int fd = file.fd.get();
    CHECK(ask(fd, kMiB, 3 * kMiB) == 3 * kMiB);
    CHECK(eventually([&] { return cached_pages(fd, kMiB, 3 * kMiB) == 3 * kMiB / kPage; }));
    CHECK(ask(fd, kMiB, 3 * kMiB) == 0);
}

} // namespace

TEST_CASE("start_reading: asks for what is not cached and returns; the pages arrive")
{
    UncachedFile file;
    check_asks_then_finds_cached(file, [](int fd, uint64_t offset, uint64_t length) {
        return start_reading(fd, offset, length);
    });
    // A stop asked for before the first step asks for nothing more.
    CHECK(start_reading(file.fd.get(), 6 * kMiB, kMiB, [] { return true; }) == 0);
}

TEST_CASE("ask_into_cache: asks for a range unless all of it is cached, and returns at once")
{
    UncachedFile file;
    check_asks_then_finds_cached(file, ask_into_cache);
    // Its first page cached and the rest not: start_reading passes it by, the call's own
    // prefetch asks for it (cachestat(2), Linux 6.5 and later, as here).
    const int fd = file.fd.get();
    char page[kPage];
    REQUIRE(::pread(fd, page, kPage, static_cast<off_t>(5 * kMiB)) == static_cast<ssize_t>(kPage));
    CHECK(start_reading(fd, 5 * kMiB, 2 * kMiB) == 0);
    CHECK(ask_into_cache(fd, 5 * kMiB, 2 * kMiB) == 2 * kMiB);
    CHECK(eventually([&] { return cached_pages(fd, 5 * kMiB, 2 * kMiB) == 2 * kMiB / kPage; }));
}
