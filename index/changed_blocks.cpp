#include "index/changed_blocks.h"

#include "index/fingerprint.h"
#include "snapshots/kernel/tree_search.h"
#include "snapshots/kernel/error.h"

#include <linux/btrfs_tree.h>
#include <linux/fiemap.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <cerrno>
#include <stdexcept>

namespace snapdedupe {

namespace {

constexpr uint32_t kNotDedupable = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE |
                                   FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_NOT_ALIGNED |
                                   FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_DATA_TAIL;

// Whether [begin, end) is covered without gaps by dedupable extents from `extents`.
bool fully_backed(const std::vector<FileExtent>& extents, uint64_t begin, uint64_t end)
{
    uint64_t pos = begin;
    for (const FileExtent& e : extents) {
        if (e.logical + e.length <= pos)
            continue;
        if (e.logical > pos || (e.flags & kNotDedupable))
            return false;
        pos = e.logical + e.length;
        if (pos >= end)
            return true;
    }
    return false;
}

// BTRFS_MAX_EXTENT_SIZE: no extent, and so no file extent item, is longer.
constexpr uint64_t kMaxExtentBytes = 128ULL * 1024 * 1024;

// The file's extents as FIEMAP would list them, from its file extent items (not merged, and
// without FIEMAP's SHARED flag: computing that walks the backrefs of every extent, a cost that
// grows with the snapshots sharing it). Holes and inline items cover nothing, so blocks there
// are not dedupable; delalloc does not occur in the read-only snapshots this keys.
std::vector<FileExtent> extents_of(const std::vector<FileExtentItem>& items)
{
    std::vector<FileExtent> extents;
    for (const FileExtentItem& item : items) {
        if (item.disk_bytenr == 0 || item.num_bytes == 0)
            continue; // a hole, or inline data
        FileExtent e;
        e.logical = item.file_offset;
        e.length = item.num_bytes;
        if (item.compression != 0) {
            e.physical = item.disk_bytenr; // bytes inside have no address of their own
            e.flags |= FIEMAP_EXTENT_ENCODED;
        } else {
            e.physical = item.disk_bytenr + item.extent_offset;
        }
        if (item.type == BTRFS_FILE_EXTENT_PREALLOC)
            e.flags |= FIEMAP_EXTENT_UNWRITTEN;
        extents.push_back(e);
    }
    return extents;
}

} // namespace

std::vector<uint64_t> block_starts(uint64_t file_size, const std::vector<ByteRange>& ranges)
{
    std::vector<uint64_t> starts;
    for (const ByteRange& r : ranges) {
        if (r.length == 0 || r.offset >= file_size)
            continue;
        uint64_t end = std::min(file_size, r.offset + r.length);
        for (uint64_t b = r.offset / kBlockSize * kBlockSize; b < end; b += kBlockSize)
            starts.push_back(b);
    }
    std::sort(starts.begin(), starts.end());
    starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
    return starts;
}

std::vector<DataBlock> dedupable_blocks(const LabeledFd& file, uint64_t file_size,
                                        const std::vector<ByteRange>& ranges)
{
    std::vector<uint64_t> starts = block_starts(file_size, ranges);
    if (starts.empty())
        return {};
    uint64_t first = starts.front();
    uint64_t last_end = std::min(file_size, starts.back() + kBlockSize);
    // The file extent items say where every byte is, each block's extent generation, and for
    // compressed extents the exact key (see below): one tree search per file. An item covering
    // `first` starts at most one extent's largest size before it.
    struct stat st;
    check_sys(::fstat(file.get(), &st), "stat", file.label());
    uint64_t items_from = first - std::min(first, kMaxExtentBytes);
    std::vector<FileExtentItem> items = file_extent_items(file, 0, st.st_ino, items_from, last_end - 1);
    std::vector<FileExtent> extents = extents_of(items);
    std::optional<InodeInfo> inode = read_inode(file, 0, st.st_ino);
    if (!inode)
        return {}; // deleted meanwhile

    std::vector<DataBlock> blocks;
    auto it = extents.begin();
    for (uint64_t start : starts) {
        uint64_t end = std::min(file_size, start + kBlockSize);
        while (it != extents.end() && it->logical + it->length <= start)
            ++it;
        if (it == extents.end())
            break;
        if (it->logical > start || !fully_backed(extents, start, end))
            continue;
        DataBlock b;
        b.file_offset = start;
        b.length = end - start;
        b.compressed = (it->flags & FIEMAP_EXTENT_ENCODED) != 0;
        b.map_start = it->logical;
        uint64_t delta = start - it->logical;
        // The item holding `start`: the last one that begins at or before it.
        auto after = std::upper_bound(items.begin(), items.end(), start,
                                      [](uint64_t pos, const FileExtentItem& i) { return pos < i.file_offset; });
        if (after == items.begin())
            continue;
        const FileExtentItem* item = &*std::prev(after);
        if (item->disk_bytenr == 0 || start >= item->file_offset + item->num_bytes)
            continue; // the tree and FIEMAP disagree (the file changed under us): skip it
        if (b.compressed) {
            // Bytes inside a compressed extent have no disk address: key by the extent and the
            // offset in its uncompressed data, from the file extent item holding the block.
            b.key = {item->disk_bytenr, item->extent_offset + (start - item->file_offset)};
            b.extent_address = item->disk_bytenr;
        } else {
            b.key = {it->physical + delta, 0};
            b.extent_address = it->physical + delta;
        }
        b.key.generation = item->generation;
        b.nodatasum = inode->nodatasum();
        if (!b.compressed && !b.nodatasum) {
            // Nothing when a later piece is compressed: the block is then read.
            if (std::optional<std::vector<DiskRange>> pieces = disk_pieces(extents, start, end))
                b.pieces = std::move(*pieces);
        }
        blocks.push_back(std::move(b));
    }
    return blocks;
}

} // namespace snapdedupe
