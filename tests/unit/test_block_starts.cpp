// Which blocks a file's changed ranges touch (index/changed_blocks.h, block_starts).
#include "index/changed_blocks.h"

#include <doctest/doctest.h>

using namespace snapdedupe;

namespace {

using Starts = std::vector<uint64_t>;
constexpr uint64_t kBlock = kBlockSize; // one block, to keep the cases short

Starts starts(uint64_t file_size, std::vector<ByteRange> ranges)
{
    return block_starts(file_size, ranges);
}

} // namespace

TEST_CASE("block_starts: a block-aligned range gives its blocks")
{
    CHECK(starts(10 * kBlock, {{0, kBlock}}) == Starts{0});
    CHECK(starts(10 * kBlock, {{kBlock, 3 * kBlock}}) == Starts{kBlock, 2 * kBlock, 3 * kBlock});
}

TEST_CASE("block_starts: ranges widen to kBlockSize boundaries")
{
    CHECK(starts(10 * kBlock, {{kBlock + 5, 10}}) == Starts{kBlock});
    CHECK(starts(10 * kBlock, {{kBlock - 1, 2}}) == Starts{0, kBlock}); // straddles a boundary
    CHECK(starts(10 * kBlock, {{4096, 4096}}) == Starts{0});
    // A range ending exactly at a boundary does not reach the next block.
    CHECK(starts(10 * kBlock, {{0, 2 * kBlock}}) == Starts{0, kBlock});
}

TEST_CASE("block_starts: clipped to the file's size")
{
    CHECK(starts(2 * kBlock + kBlock / 2, {{0, 100 * kBlock}}) == Starts{0, kBlock, 2 * kBlock});
    CHECK(starts(kBlock + 1, {{kBlock - 1, 10 * kBlock}}) == Starts{0, kBlock}); // the last block holds one byte
    CHECK(starts(100, {{0, 4096}}) == Starts{0});            // a file smaller than a block
}

TEST_CASE("block_starts: overlapping and unordered ranges merge, sorted")
{
    std::vector<ByteRange> ranges = {{3 * kBlock, 10}, {0, 100}, {50, 100}, {3 * kBlock + 10, 1}, {kBlock / 2, kBlock}};
    CHECK(starts(10 * kBlock, ranges) == Starts{0, kBlock, 3 * kBlock});
}

TEST_CASE("block_starts: empty ranges and ranges at or past EOF give nothing")
{
    CHECK(starts(10 * kBlock, {}).empty());
    CHECK(starts(10 * kBlock, {{kBlock, 0}}).empty());
    CHECK(starts(10 * kBlock, {{10 * kBlock, kBlock}}).empty());     // starts at EOF
    CHECK(starts(10 * kBlock, {{20 * kBlock, kBlock}}).empty());     // past EOF
    CHECK(starts(0, {{0, kBlock}}).empty());                // an empty file
    CHECK(starts(10 * kBlock, {{kBlock, 0}, {20 * kBlock, 5}, {2 * kBlock, 1}}) == Starts{2 * kBlock});
}
