#include "snapshots/kernel/csum_tree.h"

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/tree_search.h"

#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>

namespace snapdedupe {

namespace {

// One search's buffer: enough for the checksums it covers, so a small search does not clear
// and fault in a large buffer, and at most 1 MiB (1 GiB of data with crc32c, 128 MiB with
// sha256) per TREE_SEARCH_V2 call; the kernel's own limit is 16 MiB.
constexpr size_t kMinSearchBuffer = 64 * 1024;
constexpr size_t kMaxSearchBuffer = 1024 * 1024;

struct OpenRange {
    size_t index = 0;
    uint64_t begin = 0, end = 0; // whole sectors
    RangeChecksums sums;
};

// The ranges of one search that items have reached and not yet passed. Items come in
// address order and never overlap, so a range is final once an item starts at or after its
// end; until then it stays here. Only ranges overlapping one place on disk are held at once.
class RangeWindow {
public:
    RangeWindow(const ChecksumInfo& info, std::span<const DiskRange> ranges, size_t first, size_t last,
                const RangeChecksumsSink& sink)
        : info_(info), ranges_(ranges), next_(first), last_(last), sink_(sink)
    {
    }

    // Opens every range that starts before `address`, with all its sectors missing.
    void open_before(uint64_t address)
    {
        for (; next_ < last_ && ranges_[next_].bytenr < address; ++next_) {
            const DiskRange& r = ranges_[next_];
            uint64_t sectors = (r.length + info_.sectorsize - 1) / info_.sectorsize;
            OpenRange& o = open_.emplace_back();
            o.index = next_;
            o.begin = r.bytenr;
            o.end = r.bytenr + sectors * info_.sectorsize;
            o.sums.sums.assign(sectors * info_.csum_size, 0);
            o.sums.present.assign(sectors, false);
            o.sums.missing = sectors;
        }
    }

    // Hands over the leading ranges that end at or before `address`.
    void close_through(uint64_t address)
    {
        while (!open_.empty() && open_.front().end <= address) {
            sink_(open_.front().index, open_.front().sums);
            open_.pop_front();
        }
    }

    // Copies the checksums of an item covering [start, start + sectors) into the ranges it overlaps.
    void fill(uint64_t start, std::span<const uint8_t> sums)
    {
        const uint64_t ss = info_.sectorsize, cs = info_.csum_size;
        uint64_t end = start + sums.size() / cs * ss;
        for (OpenRange& o : open_) {
            uint64_t lo = std::max(o.begin, start), hi = std::min(o.end, end);
            if (lo >= hi)
                continue;
            uint64_t at = (lo - o.begin) / ss, from = (lo - start) / ss, n = (hi - lo) / ss;
            std::memcpy(o.sums.sums.data() + at * cs, sums.data() + from * cs, n * cs);
            for (uint64_t s = at; s < at + n; ++s)
                if (!o.sums.present[s]) {
                    o.sums.present[s] = true;
                    --o.sums.missing;
                }
        }
    }

    bool all_opened() const { return next_ == last_; }

    // The search ended: what is still open gets no more checksums.
    void close_all()
    {
        open_before(~0ULL);
        close_through(~0ULL);
    }

private:
    const ChecksumInfo& info_;
    std::span<const DiskRange> ranges_;
    size_t next_, last_;
    const RangeChecksumsSink& sink_;
    std::deque<OpenRange> open_;
};

uint64_t range_end(const DiskRange& r, uint32_t sectorsize)
{
    return r.bytenr + (r.length + sectorsize - 1) / sectorsize * sectorsize;
}

// Answers ranges [first, last), which lie within [begin, end), with one tree search. It
// starts one item span early: the item holding `begin` may start there.
void search_group(const LabeledFd& fs, const ChecksumInfo& info, std::span<const DiskRange> ranges, size_t first,
                  size_t last, uint64_t end, const RangeChecksumsSink& sink, ChecksumSearchStats& stats)
{
    const uint64_t begin = ranges[first].bytenr, lookback = max_checksum_item_span(info);
    TreeKeyRange keys{BTRFS_CSUM_TREE_OBJECTID, BTRFS_EXTENT_CSUM_OBJECTID, BTRFS_EXTENT_CSUM_OBJECTID,
                      BTRFS_EXTENT_CSUM_KEY, BTRFS_EXTENT_CSUM_KEY, begin > lookback ? begin - lookback : 0,
                      std::max<uint64_t>(end, 1) - 1};
    uint64_t expected = (end - keys.min_offset) / info.sectorsize * info.csum_size + kMinSearchBuffer;
    TreeSearch search(fs, keys, std::clamp<uint64_t>(expected, kMinSearchBuffer, kMaxSearchBuffer));
    ++stats.searches;
    RangeWindow window(info, ranges, first, last, sink);
    TreeItem item;
    while (search.next(item)) {
        if (item.objectid != BTRFS_EXTENT_CSUM_OBJECTID || item.type != BTRFS_EXTENT_CSUM_KEY)
            continue;
        ++stats.items;
        stats.item_bytes += item.data.size();
        uint64_t sectors = item.data.size() / info.csum_size;
        uint64_t item_end = item.offset + sectors * info.sectorsize;
        if (item_end <= begin)
            continue; // in the look-back, and ends before the first range
        window.open_before(item_end);
        window.close_through(item.offset);
        window.fill(item.offset, item.data.first(sectors * info.csum_size));
        // Every range is answered: asking on would cost one more call that finds nothing.
        if (item_end >= end && window.all_opened())
            break;
    }
    window.close_all();
}

} // namespace

ChecksumInfo checksum_info(const LabeledFd& filesystem)
{
    btrfs_ioctl_fs_info_args args{};
    args.flags = BTRFS_FS_INFO_FLAG_CSUM_INFO;
    check_sys(::ioctl(filesystem.get(), BTRFS_IOC_FS_INFO, &args), "reading filesystem info of", filesystem.label());
    ChecksumInfo info;
    info.sectorsize = args.sectorsize;
    info.nodesize = args.nodesize;
    // Kernels before 5.5 ignore the flag (and leave it clear): they know crc32c only.
    if (!(args.flags & BTRFS_FS_INFO_FLAG_CSUM_INFO))
        return info;
    info.type = static_cast<ChecksumType>(args.csum_type);
    info.csum_size = args.csum_size;
    if (checksum_size_of(info.type) == 0 || checksum_size_of(info.type) != info.csum_size)
        throw SysError("checksum type " + std::to_string(args.csum_type) + " (size " +
                           std::to_string(args.csum_size) + ") is not known to this program; on",
                       filesystem.label(), EOPNOTSUPP);
    return info;
}

std::string_view checksum_type_name(ChecksumType type)
{
    switch (type) {
    case ChecksumType::kCrc32c: return "crc32c";
    case ChecksumType::kXxhash64: return "xxhash64";
    case ChecksumType::kSha256: return "sha256";
    case ChecksumType::kBlake2b: return "blake2b";
    }
    return "unknown";
}

uint32_t checksum_size_of(ChecksumType type)
{
    switch (type) {
    case ChecksumType::kCrc32c: return 4;
    case ChecksumType::kXxhash64: return 8;
    case ChecksumType::kSha256:
    case ChecksumType::kBlake2b: return 32;
    }
    return 0;
}

uint64_t max_checksum_item_span(const ChecksumInfo& info)
{
    return uint64_t{info.nodesize} / info.csum_size * info.sectorsize;
}

ChecksumSearchStats read_range_checksums(const LabeledFd& filesystem, const ChecksumInfo& info,
                                         std::span<const DiskRange> ranges, const RangeChecksumsSink& sink)
{
    for (size_t i = 0; i < ranges.size(); ++i) {
        if (ranges[i].bytenr % info.sectorsize != 0)
            throw std::invalid_argument("read_range_checksums: range " + std::to_string(ranges[i].bytenr) +
                                        " is not sector-aligned");
        if (i > 0 && ranges[i].bytenr < ranges[i - 1].bytenr)
            throw std::invalid_argument("read_range_checksums: ranges are not sorted by address");
    }
    // Reading through a gap costs the leaves that hold its checksums; a new search costs a
    // descent from the root (cached) and its look-back, about one leaf. Two leaves' worth of
    // gap is where a new search starts to win.
    const uint64_t max_gap = 2 * max_checksum_item_span(info);
    ChecksumSearchStats stats;
    for (size_t first = 0, last = 0; first < ranges.size(); first = last) {
        uint64_t end = range_end(ranges[first], info.sectorsize);
        for (last = first + 1; last < ranges.size() && ranges[last].bytenr <= end + max_gap; ++last)
            end = std::max(end, range_end(ranges[last], info.sectorsize));
        search_group(filesystem, info, ranges, first, last, end, sink, stats);
    }
    return stats;
}

} // namespace snapdedupe
