// The changed byte ranges of one file (snapshots/change_set_ranges.h).
#include "snapshots/change_set_ranges.h"

#include <algorithm>
#include <cstddef>
#include <utility>

namespace snapdedupe::change_set_model {

namespace {

// Sequential writes coalesce as they arrive; scattered ones are merged once this many
// pile up, so a huge stream of random writes to one file stays bounded.
constexpr std::size_t kRangesBeforeMerge = 4096;

} // namespace

void merge_ranges(std::vector<ByteRange>& ranges)
{
    std::sort(ranges.begin(), ranges.end(),
              [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
    std::vector<ByteRange> merged;
    for (const ByteRange& r : ranges) {
        if (r.length == 0)
            continue;
        if (!merged.empty() && r.offset <= merged.back().offset + merged.back().length) {
            uint64_t end = std::max(merged.back().offset + merged.back().length, r.offset + r.length);
            merged.back().length = end - merged.back().offset;
        } else {
            merged.push_back(r);
        }
    }
    ranges = std::move(merged);
}

void add_range(std::vector<ByteRange>& ranges, uint64_t offset, uint64_t length)
{
    if (length == 0)
        return;
    if (!ranges.empty() && ranges.back().offset + ranges.back().length == offset) {
        ranges.back().length += length;
        return;
    }
    ranges.push_back({offset, length});
    if (ranges.size() >= kRangesBeforeMerge)
        merge_ranges(ranges);
}

void subtract_range(std::vector<ByteRange>& ranges, uint64_t offset, uint64_t length)
{
    const uint64_t cut_end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
    std::vector<ByteRange> kept;
    for (const ByteRange& r : ranges) {
        const uint64_t end = r.offset + r.length;
        if (end <= offset || r.offset >= cut_end) {
            kept.push_back(r);
            continue;
        }
        if (r.offset < offset)
            kept.push_back({r.offset, offset - r.offset});
        if (end > cut_end)
            kept.push_back({cut_end, end - cut_end});
    }
    ranges = std::move(kept);
}

} // namespace snapdedupe::change_set_model
