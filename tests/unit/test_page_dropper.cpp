// The page dropper against a real file: what it is asked to drop leaves the page cache by the
// time it is destroyed, and what it is not asked to drop stays. Needs a filesystem with a page
// cache of its own (not tmpfs, whose pages are the file itself): the test's temp directory.
#include "plugin/dedupe/page_dropper.h"
#include "uncached_files.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <iterator>
#include <string>
#include <vector>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

// Ranges of 2 MiB at 2 MiB boundaries: a page cache of large folios (ext4's) drops only the
// folios a range covers whole, and none is larger.
constexpr size_t kRange = 2 * 1024 * 1024;
constexpr size_t kRanges = 4;

size_t open_descriptors()
{
    auto entries = std::filesystem::directory_iterator("/proc/self/fd");
    return static_cast<size_t>(std::distance(begin(entries), end(entries)));
}

} // namespace

TEST_CASE("page dropper: the ranges it was given leave the page cache, the rest stays")
{
    TempDir dir;
    const size_t size = 2 * kRanges * kRange;
    // Written past the page cache, then read into it: clean pages that no journal holds.
    std::string path = write_uncached(dir, "file", size);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    std::vector<char> buffer(size);
    REQUIRE(::pread(fd, buffer.data(), buffer.size(), 0) == static_cast<ssize_t>(buffer.size()));
    REQUIRE(cached_pages(fd, 0, size) == size / kPage);

    {
        PageDropper dropper;
        // The first half; the fd closes before the dropper gets to the range.
        for (size_t i = 0; i < kRanges; ++i) {
            int copy = ::dup(fd);
            REQUIRE(copy >= 0);
            dropper.drop(copy, i * kRange, kRange);
            ::close(copy);
        }
    } // destroyed: everything queued is dropped first

    CHECK(cached_pages(fd, 0, size / 2) == 0);
    CHECK(cached_pages(fd, size / 2, size / 2) == size / 2 / kPage);
    ::close(fd);
}

TEST_CASE("page dropper: more ranges than the queue holds wait for room, and all are taken")
{
    TempDir dir;
    std::string path = dir.write("file", std::string(kPage, 'x'));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const size_t before = open_descriptors();
    {
        PageDropper dropper;
        for (size_t i = 0; i < 4 * PageDropper::kMaxQueued; ++i)
            dropper.drop(fd, 0, kPage);
    }
    // Every duplicate the dropper made is closed again.
    CHECK(open_descriptors() == before);
    ::close(fd);
}
