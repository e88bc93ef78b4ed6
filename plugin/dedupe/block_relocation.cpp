#include "plugin/dedupe/block_relocation.h"

#include "snapshots/kernel/error.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <map>
#include <optional>

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

} // namespace

// Moves each of `blocks` (one file of the deleted snapshot) that `handle` maps; keeps the
// rest in `blocks`. Returns how many moved.
uint64_t move_mapped(FilesystemQueries& fs, BlockIndex& index, const InodeHandle& handle,
                     std::vector<IndexedBlock>& blocks)
{
    std::vector<bool> maps = maps_blocks(fs, handle, blocks);
    std::vector<IndexedBlock> homeless;
    uint64_t moved = 0;
    for (size_t i = 0; i < blocks.size(); ++i) {
        if (maps[i]) {
            index.move_block(blocks[i].id, {handle, blocks[i].where.file_offset});
            ++moved;
        } else {
            homeless.push_back(blocks[i]);
        }
    }
    blocks = std::move(homeless);
    return moved;
}

// Second chance, block by block, for files that were replaced: an identical rewrite (write a
// new file, rename it over) is a new inode, whose extent the run moved onto the keeper. Whoever
// references the keeper's extent now, in a surviving indexed snapshot, at the same offset.
uint64_t move_by_extent_refs(FilesystemQueries& fs, BlockIndex& index, std::vector<IndexedBlock>& blocks,
                             const std::map<uint64_t, uint64_t>& alive_otransid)
{
    uint64_t moved = 0;
    std::vector<IndexedBlock> homeless;
    for (const IndexedBlock& b : blocks) {
        std::vector<std::pair<uint64_t, InodeHandle>> candidates; // (otransid, file), newest first
        for (const ExtentRef& ref : fs.extent_references(b.key.extent).refs) {
            auto alive = alive_otransid.find(ref.root);
            if (alive == alive_otransid.end())
                continue;
            if (std::optional<InodeInfo> info = fs.inode_info(ref.root, ref.inode))
                candidates.push_back({alive->second, {ref.root, ref.inode, info->generation}});
        }
        std::sort(candidates.begin(), candidates.end(),
                  [](const auto& x, const auto& y) { return x.first > y.first; });
        candidates.erase(std::unique(candidates.begin(), candidates.end(),
                                     [](const auto& x, const auto& y) { return x.second == y.second; }),
                         candidates.end());
        std::vector<IndexedBlock> one{b};
        for (size_t i = 0; i < candidates.size() && i < kMaxRelocationCandidates && !one.empty(); ++i)
            moved += move_mapped(fs, index, candidates[i].second, one);
        homeless.insert(homeless.end(), one.begin(), one.end());
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
