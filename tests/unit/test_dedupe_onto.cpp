// dedupe_onto's batching against a filesystem in memory: calls within the kernel's limits,
// partial progress continued, and each target's own outcome.
#include "engine_fixtures.h"
#include "plugin/dedupe/deduper.h"

#include <doctest/doctest.h>

#include <cerrno>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

// A source file in snapshot 256 and copies of it, each in an extent of its own, in snapshot
// 257; every file open, as the mover holds them during a call.
struct Copies {
    InMemoryFilesystem fs;
    InodeHandle src;
    std::vector<InodeHandle> files;
    std::vector<OpenResult> opened;
    OpenResult src_fd;

    Copies(size_t count, uint64_t size)
    {
        fs.add_subvolume(256, true);
        fs.add_subvolume(257, true);
        fs.add_subvolume(258, true);
        src = fs.add_file_in_extent(256, 300, size, 1);
        src_fd = fs.open_file(src);
        for (size_t i = 0; i < count; ++i)
            add(257, 300 + i, size, 1);
    }
    void add(uint64_t root, uint64_t inode, uint64_t size, uint64_t content)
    {
        files.push_back(fs.add_file_in_extent(root, inode, size, content));
        opened.push_back(fs.open_file(files.back()));
    }
    std::vector<DedupeTarget> targets(uint64_t offset = 0) const
    {
        std::vector<DedupeTarget> out;
        for (const OpenResult& o : opened)
            out.push_back({o.fd.get(), offset});
        return out;
    }
    std::vector<DedupeResult> dedupe(uint64_t offset, uint64_t length)
    {
        return dedupe_onto(fs, src_fd.fd.get(), offset, length, targets(offset));
    }
};

} // namespace

TEST_CASE("dedupe_onto: at most 120 targets per call")
{
    SUBCASE("120 targets: one call")
    {
        Copies s(kMaxTargetsPerCall, 64 * KiB);
        s.dedupe(0, 64 * KiB);
        REQUIRE(s.fs.calls().size() == 1);
        CHECK(s.fs.calls()[0].targets.size() == kMaxTargetsPerCall);
    }
    SUBCASE("121 targets: 120, then 1")
    {
        Copies s(kMaxTargetsPerCall + 1, 64 * KiB);
        std::vector<DedupeResult> results = s.dedupe(0, 64 * KiB);
        REQUIRE(s.fs.calls().size() == 2);
        CHECK(s.fs.calls()[0].targets.size() == kMaxTargetsPerCall);
        CHECK(s.fs.calls()[1].targets.size() == 1);
        CHECK(s.fs.calls()[1].length == 64 * KiB);
        REQUIRE(results.size() == kMaxTargetsPerCall + 1);
        for (size_t i = 0; i < results.size(); ++i) {
            CHECK(results[i].deduped == 64 * KiB);
            CHECK(results[i].error == 0);
            CHECK(s.fs.extent_at(s.files[i], 0) == s.fs.extent_at(s.src, 0));
        }
    }
}

TEST_CASE("dedupe_onto: a range over 16 MiB is shared in 16 MiB calls")
{
    Copies s(2, 40 * MiB);
    std::vector<DedupeResult> results = s.dedupe(0, 40 * MiB);

    REQUIRE(s.fs.calls().size() == 3);
    const uint64_t offsets[] = {0, 16 * MiB, 32 * MiB};
    const uint64_t lengths[] = {16 * MiB, 16 * MiB, 8 * MiB};
    for (size_t i = 0; i < 3; ++i) {
        const InMemoryFilesystem::Call& call = s.fs.calls()[i];
        CHECK(call.src_offset == offsets[i]);
        CHECK(call.length == lengths[i]);
        REQUIRE(call.targets.size() == 2); // targets at one position travel together
        CHECK(call.targets[0].second == offsets[i]);
    }
    for (const DedupeResult& r : results)
        CHECK(r.deduped == 40 * MiB);
}

TEST_CASE("dedupe_onto: partial progress is continued from where the kernel stopped")
{
    Copies s(2, 3 * MiB);
    s.fs.limit_dedupe(s.files[0], 1 * MiB); // the kernel shares 1 MiB per call into this one
    std::vector<DedupeResult> results = s.dedupe(0, 3 * MiB);

    REQUIRE(s.fs.calls().size() == 3);
    CHECK(s.fs.calls()[0].targets.size() == 2);
    CHECK(s.fs.calls()[1].src_offset == 1 * MiB);
    CHECK(s.fs.calls()[1].length == 2 * MiB);
    REQUIRE(s.fs.calls()[1].targets.size() == 1);
    CHECK(s.fs.calls()[1].targets[0] == std::make_pair(s.files[0], 1 * MiB));
    CHECK(s.fs.calls()[2].src_offset == 2 * MiB);
    CHECK(results[0].deduped == 3 * MiB);
    CHECK(results[1].deduped == 3 * MiB);
    CHECK(results[0].error == 0);
}

TEST_CASE("dedupe_onto: each target has its own outcome")
{
    Copies s(1, 1 * MiB);   // files[0]: a copy
    s.add(258, 300, 1 * MiB, 1); // files[1]: a copy in a snapshot a send is reading
    s.fs.set_busy(258);
    s.add(257, 400, 1 * MiB, 2); // files[2]: other bytes
    s.add(257, 401, 1 * MiB, 1); // files[3]: a copy the kernel refuses to share
    s.fs.fail_dedupe(s.files[3], EPERM);
    s.add(257, 402, 1 * MiB, 1); // files[4]: a copy the kernel makes no progress on
    s.fs.limit_dedupe(s.files[4], 0);
    std::vector<DedupeResult> results = s.dedupe(0, 1 * MiB);

    REQUIRE(results.size() == 5);
    CHECK(results[0].deduped == 1 * MiB);
    CHECK(results[0].error == 0);
    CHECK(results[1].error == EAGAIN); // returned, not waited for: the run defers the extent
    CHECK(results[1].deduped == 0);
    CHECK(results[2].differs == 1 * MiB);
    CHECK(results[2].error == 0);
    CHECK(results[2].deduped == 0);
    CHECK(results[3].error == EPERM);
    CHECK(results[4].error == EINVAL);
    CHECK(s.fs.calls().size() == 1); // none of the failures is retried
}

TEST_CASE("dedupe_onto: bytes found different after partial progress count from where it stopped")
{
    Copies s(0, 3 * MiB);
    InodeHandle file = s.fs.add_file(257, 300, 3 * MiB);
    uint64_t same = s.fs.add_extent(1 * MiB, 1);
    s.fs.map(file, 0, same, 0, 1 * MiB);
    s.fs.map(file, 1 * MiB, s.fs.add_extent(2 * MiB, 2), 0, 2 * MiB);
    s.fs.limit_dedupe(file, 1 * MiB);
    s.opened.push_back(s.fs.open_file(file));
    std::vector<DedupeResult> results = s.dedupe(0, 3 * MiB);

    REQUIRE(results.size() == 1);
    CHECK(results[0].deduped == 1 * MiB);
    CHECK(results[0].differs == 2 * MiB);
    CHECK(s.fs.calls().size() == 2);
}

TEST_CASE("dedupe_onto: a call refused as a whole fails every target with its errno")
{
    Copies s(2, 64 * KiB);
    std::vector<DedupeResult> results = dedupe_onto(s.fs, -1, 0, 64 * KiB, s.targets());
    REQUIRE(results.size() == 2);
    for (const DedupeResult& r : results) {
        CHECK(r.error == EBADF);
        CHECK(r.deduped == 0);
    }
}

namespace {

using CacheCall = InMemoryFilesystem::CacheCall;

// The ranges of call `k`, source first: what must be prefetched just before it.
std::vector<std::pair<InodeHandle, uint64_t>> call_ranges(const InMemoryFilesystem::Call& call)
{
    std::vector<std::pair<InodeHandle, uint64_t>> out{{call.src, call.src_offset}};
    out.insert(out.end(), call.targets.begin(), call.targets.end());
    return out;
}

// Every dedupe call's ranges were prefetched right before it and, unless `cached` found them
// in the page cache already, released right after it; nothing else was.
void check_prefetched_around_calls(const InMemoryFilesystem& fs, const InodeHandle& cached)
{
    size_t expected = 0;
    for (size_t k = 0; k < fs.calls().size(); ++k) {
        const InMemoryFilesystem::Call& call = fs.calls()[k];
        std::vector<std::pair<InodeHandle, uint64_t>> prefetched, released;
        for (const CacheCall& c : fs.cache_calls()) {
            CHECK(c.length == fs.calls()[c.calls_before - (c.release ? 1 : 0)].length);
            if (!c.release && c.calls_before == k)
                prefetched.push_back({c.file, c.offset});
            if (c.release && c.calls_before == k + 1)
                released.push_back({c.file, c.offset});
        }
        std::vector<std::pair<InodeHandle, uint64_t>> want = call_ranges(call);
        CHECK(prefetched == want);
        std::erase_if(want, [&](const auto& r) { return r.first == cached; });
        CHECK(released == want);
        expected += prefetched.size() + released.size();
    }
    CHECK(fs.cache_calls().size() == expected);
}

} // namespace

TEST_CASE("dedupe_onto: each call's ranges are read into the page cache just before it, dropped after")
{
    SUBCASE("16 MiB calls")
    {
        Copies s(2, 20 * MiB);
        s.fs.cached_already(s.files[1]); // someone's working set: read, never dropped
        std::vector<DedupeResult> results = s.dedupe(0, 20 * MiB);
        REQUIRE(s.fs.calls().size() == 2);
        check_prefetched_around_calls(s.fs, s.files[1]);
        for (const DedupeResult& r : results)
            CHECK(r.deduped == 20 * MiB);
    }
    SUBCASE("partial progress: only the targets still in the call, from where they stopped")
    {
        Copies s(2, 3 * MiB);
        s.fs.limit_dedupe(s.files[0], 1 * MiB);
        s.dedupe(0, 3 * MiB);
        REQUIRE(s.fs.calls().size() == 3);
        check_prefetched_around_calls(s.fs, InodeHandle{});
        CHECK(s.fs.cache_calls()[0].file == s.src); // the source first
    }
}
