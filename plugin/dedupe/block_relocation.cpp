#include "plugin/dedupe/block_relocation.h"

#include "snapshots/kernel/error.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <functional>

namespace snapdedupe {

namespace {

// Which of `blocks` the file `handle` maps at the same offset, to the same disk bytes, with
// the same length (the same key the run computes: index/changed_blocks.h).
std::vector<bool> maps_blocks(FilesystemQueries& fs, const InodeHandle& handle, const std::vector<IndexedBlock>& blocks)
{
    std::vector<bool> maps(blocks.size(), false);
    std::vector<ByteRange> ranges;
    for (const IndexedBlock& b : blocks)
        ranges.push_back({b.where.file_offset, b.length});
    std::optional<std::vector<DataBlock>> mapped = fs.dedupable_blocks(handle, ranges);
    if (!mapped)
        return maps; // deleted there, or the inode number was reused (another generation)
    std::map<uint64_t, DataBlock> now;
    for (const DataBlock& d : *mapped)
        now.emplace(d.file_offset, d);
    for (size_t i = 0; i < blocks.size(); ++i) {
        auto it = now.find(blocks[i].where.file_offset);
        maps[i] = it != now.end() && it->second.key == blocks[i].key && it->second.length == blocks[i].length;
    }
    return maps;
}

// Splits `blocks` by whether `handle` maps them (maps_blocks): returns those it maps, leaves
// the rest in `blocks`.
std::vector<IndexedBlock> take_mapped(FilesystemQueries& fs, const InodeHandle& handle, std::vector<IndexedBlock>& blocks)
{
    std::vector<bool> maps = maps_blocks(fs, handle, blocks);
    std::vector<IndexedBlock> mapped, rest;
    for (size_t i = 0; i < blocks.size(); ++i)
        (maps[i] ? mapped : rest).push_back(blocks[i]);
    blocks = std::move(rest);
    return mapped;
}

// Moves each of `blocks`, all mapped by older[hi], to the newest of older[lo, hi] that maps it,
// halving the range. Returns how many moved (all of them).
uint64_t move_by_halving(FilesystemQueries& fs, BlockIndex& index, const std::vector<uint64_t>& older, size_t lo,
                         size_t hi, uint64_t inode, uint64_t generation, std::vector<IndexedBlock> blocks)
{
    uint64_t moved = 0;
    while (!blocks.empty() && lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        std::vector<IndexedBlock> newer = take_mapped(fs, {older[mid], inode, generation}, blocks);
        // What older[mid] maps has its newest mapping in [lo, mid]; the rest in [mid + 1, hi].
        moved += move_by_halving(fs, index, older, lo, mid, inode, generation, std::move(newer));
        lo = mid + 1;
    }
    for (const IndexedBlock& b : blocks)
        index.move_block(b.id, {{older[hi], inode, generation}, b.where.file_offset});
    return moved + blocks.size();
}

} // namespace

// Moves each of `blocks` (one file of the deleted snapshot) that `handle` maps; keeps the
// rest in `blocks`. Returns how many moved.
uint64_t move_mapped(FilesystemQueries& fs, BlockIndex& index, const InodeHandle& handle,
                     std::vector<IndexedBlock>& blocks)
{
    const std::vector<IndexedBlock> mapped = take_mapped(fs, handle, blocks);
    for (const IndexedBlock& b : mapped)
        index.move_block(b.id, {handle, b.where.file_offset});
    return mapped.size();
}

uint64_t move_to_newest_mapping(FilesystemQueries& fs, BlockIndex& index, const std::vector<uint64_t>& older,
                                uint64_t inode, uint64_t generation, std::vector<IndexedBlock>& blocks)
{
    if (older.empty() || blocks.empty())
        return 0;
    const size_t oldest = older.size() - 1;
    std::vector<IndexedBlock> mapped = take_mapped(fs, {older[oldest], inode, generation}, blocks);
    return move_by_halving(fs, index, older, 0, oldest, inode, generation, std::move(mapped));
}

// Second chance, for files that were replaced: an identical rewrite (write a new file, rename
// it over) is a new inode, whose extent the run moved onto the keeper. Whoever references the
// keeper's extent now, in a surviving indexed snapshot, at the same offset.
//
// A replaced file's blocks usually all live on in one new file, and an extent of a file kept
// for long is referenced by every later snapshot: thousands of references. So the references
// are asked for once per candidate file found, not per block: each new candidate is tried on
// every block still homeless, a candidate tried once is never tried again (what maps there has
// moved), and inodes are looked up only for the candidates tried, not for every reference.
uint64_t move_by_extent_refs(FilesystemQueries& fs, BlockIndex& index, std::vector<IndexedBlock>& blocks,
                             const std::map<uint64_t, uint64_t>& alive_otransid)
{
    uint64_t moved = 0;
    std::vector<IndexedBlock> homeless;
    std::set<std::pair<uint64_t, uint64_t>> tried; // (root, inode)
    std::reverse(blocks.begin(), blocks.end()); // the block asked about is the last: popped cheaply
    while (!blocks.empty()) {
        const int64_t first = blocks.back().id;
        std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> candidates; // (otransid, root, inode)
        for (const ExtentRef& ref : fs.extent_references(blocks.back().key.extent).refs)
            if (auto alive = alive_otransid.find(ref.root); alive != alive_otransid.end())
                if (!tried.count({ref.root, ref.inode}))
                    candidates.emplace_back(alive->second, ref.root, ref.inode);
        // Newest first: it holds an unchanged file's bytes as well as any older one, and will
        // be deleted last.
        std::sort(candidates.begin(), candidates.end(), std::greater<>());
        candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
        size_t tries = 0;
        for (const auto& [otransid, root, inode] : candidates) {
            if (tries == kMaxRelocationCandidates || blocks.empty() || blocks.back().id != first)
                break;
            if (!tried.insert({root, inode}).second)
                continue;
            std::optional<InodeInfo> info = fs.inode_info(root, inode);
            if (!info)
                continue;
            ++tries;
            moved += move_mapped(fs, index, {root, inode, info->generation}, blocks);
        }
        if (!blocks.empty() && blocks.back().id == first) { // no candidate maps it
            homeless.push_back(blocks.back());
            blocks.pop_back();
        }
    }
    blocks = std::move(homeless);
    return moved;
}

bool still_opens(FilesystemQueries& fs, const InodeHandle& file)
{
    OpenResult opened = fs.open_file(file);
    if (opened)
        return true;
    if (opened.error == ESTALE || opened.error == ENOENT)
        return false;
    throw SysError("opening root " + std::to_string(file.root) + " inode", std::to_string(file.inode), opened.error);
}

std::optional<BlockLocation> relocate_block(FilesystemQueries& fs, BlockIndex& index, const IndexedBlock& block)
{
    std::map<uint64_t, uint64_t> alive_otransid;
    for (const ProcessedSnapshot& s : index.snapshots())
        if (s.root_id != block.where.file.root && fs.subvolume_exists(s.root_id, s.uuid))
            alive_otransid[s.root_id] = s.otransid;
    std::vector<IndexedBlock> one{block};
    if (move_by_extent_refs(fs, index, one, alive_otransid) == 0)
        return std::nullopt;
    std::optional<IndexedBlock> now = index.block_at(block.key);
    return now ? std::optional<BlockLocation>(now->where) : std::nullopt;
}

} // namespace snapdedupe
