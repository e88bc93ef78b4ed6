#include "plugin/upkeep/snapshot_forgetter.h"

#include "index/block_hasher.h"
#include "snapshots/kernel/btrfs_ioctl.h"
#include "snapshots/snapshot_list.h"
#include "snapshots/kernel/sys_error.h"

#include <btrfsutil.h>
#include <linux/btrfs_tree.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <map>

namespace snapdedupe {

namespace {

// Surviving snapshots tried per deleted one, newest first. The newest holds an unchanged
// file's bytes as well as any older one and will be deleted last, so a block moves about
// once in its life; older ones only help for files changed since, and each costs an open.
constexpr size_t kMaxCandidates = 8;

bool subvolume_exists(int fs_fd, const ProcessedSnapshot& s)
{
    struct btrfs_util_subvolume_info info;
    btrfs_util_error err = btrfs_util_subvolume_info_fd(fs_fd, s.root_id, &info);
    if (err == BTRFS_UTIL_ERROR_SUBVOLUME_NOT_FOUND)
        return false;
    if (err != BTRFS_UTIL_OK)
        throw SysError(std::string("reading subvolume info (") + btrfs_util_strerror(err) + ") of root",
                       std::to_string(s.root_id), errno);
    // A deleted subvolume keeps its root item until the cleaner drops it, but loses its
    // place in the tree at once (libbtrfsutil reports parent 0 for it).
    if (info.parent_id == 0 && s.root_id != BTRFS_FS_TREE_OBJECTID)
        return false;
    Uuid uuid;
    std::copy(std::begin(info.uuid), std::end(info.uuid), uuid.begin());
    return uuid_to_string(uuid) == s.uuid; // an id reused after a remount is someone else
}

// Which of `blocks` the file `handle` maps at the same offset, to the same disk bytes, with
// the same length (the same key the run computes: index/block_hasher.h).
std::vector<bool> maps_blocks(const LabeledFd& fs, const InodeHandle& handle, const std::vector<IndexedBlock>& blocks)
{
    std::vector<bool> maps(blocks.size(), false);
    OpenResult opened = open_by_handle(fs, handle);
    const UniqueFd& fd = opened.fd;
    if (!fd)
        return maps; // deleted there, or the inode number was reused (another generation)
    struct stat st;
    std::string name = "root " + std::to_string(handle.root) + " inode " + std::to_string(handle.inode);
    check_sys(::fstat(fd.get(), &st), "stat", name);
    std::vector<FileRange> ranges;
    for (const IndexedBlock& b : blocks)
        ranges.push_back({b.where.file_offset, b.length});
    std::map<uint64_t, DataBlock> now;
    for (const DataBlock& d : dedupable_blocks(fd.get(), static_cast<uint64_t>(st.st_size), ranges, name))
        now.emplace(d.file_offset, d);
    for (size_t i = 0; i < blocks.size(); ++i) {
        auto it = now.find(blocks[i].where.file_offset);
        maps[i] = it != now.end() && it->second.key == blocks[i].key && it->second.length == blocks[i].length;
    }
    return maps;
}

// Moves each of `blocks` (one file of the deleted snapshot) that `handle` maps; keeps the
// rest in `blocks`. Returns how many moved.
uint64_t move_mapped(const LabeledFd& fs, BlockIndex& index, const InodeHandle& handle, std::vector<IndexedBlock>& blocks)
{
    std::vector<bool> maps = maps_blocks(fs, handle, blocks);
    std::vector<IndexedBlock> homeless;
    uint64_t moved = 0;
    for (size_t i = 0; i < blocks.size(); ++i) {
        if (maps[i]) {
            index.move_block(blocks[i].id, {handle.root, handle.inode, handle.generation, blocks[i].where.file_offset});
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
uint64_t move_by_extent_refs(const LabeledFd& fs, BlockIndex& index, std::vector<IndexedBlock>& blocks,
                             const std::map<uint64_t, uint64_t>& alive_otransid)
{
    uint64_t moved = 0;
    std::vector<IndexedBlock> homeless;
    for (const IndexedBlock& b : blocks) {
        std::vector<std::pair<uint64_t, InodeHandle>> candidates; // (otransid, file), newest first
        for (const ExtentRef& ref : logical_ino(fs.get(), b.key.extent, true)) {
            auto alive = alive_otransid.find(ref.root);
            InodeInfo info;
            if (alive != alive_otransid.end() && read_inode(fs.get(), ref.root, ref.inode, info))
                candidates.push_back({alive->second, {ref.root, ref.inode, info.generation}});
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

ForgetOutcome forget_deleted_snapshots(const LabeledFd& fs, Database& db, BlockIndex& index)
{
    std::vector<ProcessedSnapshot> all = index.snapshots();
    std::vector<ProcessedSnapshot> gone, alive;
    for (ProcessedSnapshot& s : all)
        (subvolume_exists(fs.get(), s) ? alive : gone).push_back(std::move(s));
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
            while (end < blocks.size() && blocks[end].where.inode == blocks[begin].where.inode &&
                   blocks[end].where.inode_gen == blocks[begin].where.inode_gen)
                ++end;
            std::vector<IndexedBlock> file(blocks.begin() + static_cast<std::ptrdiff_t>(begin),
                                           blocks.begin() + static_cast<std::ptrdiff_t>(end));
            // A copy, not a reference: move_mapped takes blocks out of `file`.
            const BlockLocation w = file.front().where;
            for (size_t i = 0; i < candidates.size() && !file.empty(); ++i)
                outcome.blocks_moved += move_mapped(fs, index, {candidates[i], w.inode, w.inode_gen}, file);
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
