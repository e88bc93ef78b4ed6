#include "plugin/snapshot_forgetter.h"

#include "index/block_hasher.h"
#include "plugin/btrfs_ioctl.h"
#include "snapshots/snapshot_list.h"
#include "snapshots/sys_error.h"

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
    btrfs_util_subvolume_info info;
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

// Moves the blocks of one file (inode and generation) of the deleted snapshot to the first candidate root where
// the same inode maps the same disk bytes at the same offset. Returns the blocks moved;
// `blocks` keeps those that found no home.
uint64_t move_inode_blocks(int fs_fd, BlockIndex& index, std::vector<IndexedBlock>& blocks,
                           const std::vector<uint64_t>& candidates)
{
    uint64_t moved = 0;
    for (uint64_t root : candidates) {
        if (blocks.empty())
            break;
        InodeHandle handle{root, blocks.front().where.inode, blocks.front().where.inode_gen};
        UniqueFd fd = open_by_handle(fs_fd, handle);
        if (!fd)
            continue; // deleted there, or the inode number was reused (another generation)
        struct stat st;
        std::string name = "root " + std::to_string(root) + " inode " + std::to_string(handle.inode);
        check_sys(::fstat(fd.get(), &st), "stat", name);
        std::vector<FileRange> ranges;
        for (const IndexedBlock& b : blocks)
            ranges.push_back({b.where.file_offset, b.length});
        std::map<uint64_t, DataBlock> now;
        for (const DataBlock& d : dedupable_blocks(fd.get(), static_cast<uint64_t>(st.st_size), ranges, name))
            now.emplace(d.file_offset, d);
        std::vector<IndexedBlock> homeless;
        for (const IndexedBlock& b : blocks) {
            auto it = now.find(b.where.file_offset);
            if (it != now.end() && it->second.key == b.key && it->second.length == b.length) {
                index.move_block(b.id, {root, handle.inode, handle.generation, b.where.file_offset});
                ++moved;
            } else {
                homeless.push_back(b);
            }
        }
        blocks = std::move(homeless);
    }
    return moved;
}

} // namespace

ForgetOutcome forget_deleted_snapshots(int fs_fd, Database& db, BlockIndex& index)
{
    std::vector<ProcessedSnapshot> all = index.snapshots();
    std::vector<ProcessedSnapshot> gone, alive;
    for (ProcessedSnapshot& s : all)
        (subvolume_exists(fs_fd, s) ? alive : gone).push_back(std::move(s));
    ForgetOutcome outcome;
    if (gone.empty())
        return outcome;

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
            std::vector<IndexedBlock> inode_blocks(blocks.begin() + static_cast<std::ptrdiff_t>(begin),
                                                   blocks.begin() + static_cast<std::ptrdiff_t>(end));
            outcome.blocks_moved += move_inode_blocks(fs_fd, index, inode_blocks, candidates);
            begin = end;
        }
        outcome.blocks_forgotten += static_cast<uint64_t>(index.forget_snapshot(dead.root_id));
        ++outcome.snapshots;
    }
    tx.commit();
    return outcome;
}

} // namespace snapdedupe
