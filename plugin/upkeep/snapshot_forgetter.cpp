#include "plugin/upkeep/snapshot_forgetter.h"

#include "index/block_hasher.h"

#include <algorithm>
#include <map>
#include <optional>

namespace snapdedupe {

namespace {

// Surviving snapshots tried per deleted one, newest first. The newest holds an unchanged
// file's bytes as well as any older one and will be deleted last, so a block moves about
// once in its life; older ones only help for files changed since, and each costs an open.
constexpr size_t kMaxCandidates = 8;

// Which of `blocks` the file `handle` maps at the same offset, to the same disk bytes, with
// the same length (the same key the run computes: index/block_hasher.h).
std::vector<bool> maps_blocks(FilesystemQueries& fs, const InodeHandle& handle, const std::vector<IndexedBlock>& blocks)
{
    std::vector<bool> maps(blocks.size(), false);
    std::vector<FileRange> ranges;
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
        for (size_t i = 0; i < candidates.size() && i < kMaxCandidates && !one.empty(); ++i)
            moved += move_mapped(fs, index, candidates[i].second, one);
        homeless.insert(homeless.end(), one.begin(), one.end());
    }
    blocks = std::move(homeless);
    return moved;
}

} // namespace

ForgetOutcome forget_deleted_snapshots(FilesystemQueries& fs, Database& db, BlockIndex& index)
{
    std::vector<ProcessedSnapshot> all = index.snapshots();
    std::vector<ProcessedSnapshot> gone, alive;
    for (ProcessedSnapshot& s : all)
        (fs.subvolume_exists(s.root_id, s.uuid) ? alive : gone).push_back(std::move(s));
    ForgetOutcome outcome;
    if (gone.empty())
        return outcome;

    std::map<uint64_t, uint64_t> alive_otransid;
    for (const ProcessedSnapshot& s : alive)
        alive_otransid[s.root_id] = s.otransid;
    Transaction tx(db);
    for (const ProcessedSnapshot& dead : gone) {
        std::vector<uint64_t> candidates;
        for (auto it = alive.rbegin(); it != alive.rend() && candidates.size() < kMaxCandidates; ++it)
            if (it->lineage == dead.lineage)
                candidates.push_back(it->root_id);
        // Ordered by inode and generation: one group per file.
        std::vector<IndexedBlock> blocks = index.blocks_in_root(dead.root_id);
        for (size_t begin = 0; begin < blocks.size();) {
            size_t end = begin;
            while (end < blocks.size() && blocks[end].where.file.inode == blocks[begin].where.file.inode &&
                   blocks[end].where.file.generation == blocks[begin].where.file.generation)
                ++end;
            std::vector<IndexedBlock> file(blocks.begin() + static_cast<std::ptrdiff_t>(begin),
                                           blocks.begin() + static_cast<std::ptrdiff_t>(end));
            // A copy, not a reference: move_mapped takes blocks out of `file`.
            const InodeHandle dead_file = file.front().where.file;
            for (size_t i = 0; i < candidates.size() && !file.empty(); ++i)
                outcome.blocks_moved +=
                    move_mapped(fs, index, {candidates[i], dead_file.inode, dead_file.generation}, file);
            outcome.blocks_moved += move_by_extent_refs(fs, index, file, alive_otransid);
            begin = end;
        }
        outcome.blocks_forgotten += static_cast<uint64_t>(index.forget_snapshot(dead.root_id));
        ++outcome.snapshots;
    }
    tx.commit();
    return outcome;
}

} // namespace snapdedupe
