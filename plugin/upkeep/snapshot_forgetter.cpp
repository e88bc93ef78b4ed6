#include "plugin/upkeep/snapshot_forgetter.h"

#include "plugin/dedupe/block_relocation.h"

#include <algorithm>
#include <map>
#include <optional>

namespace snapdedupe {

namespace {

// Whether `file` lives on in `root`: the same inode, not a new file that reused its number.
bool lives_on(FilesystemQueries& fs, uint64_t root, const InodeHandle& file)
{
    std::optional<InodeInfo> info = fs.inode_info(root, file.inode);
    return info && info->generation == file.generation;
}

// Moves what it can of `blocks` (one file of a deleted snapshot) to a surviving snapshot;
// returns how many moved. `lineage`: the lineage's surviving snapshots, newest first.
uint64_t relocate_file(FilesystemQueries& fs, BlockIndex& index, const std::vector<uint64_t>& lineage,
                       std::vector<IndexedBlock> blocks, const std::map<uint64_t, uint64_t>& alive_otransid)
{
    const InodeHandle dead = blocks.front().where.file;
    uint64_t moved = 0;
    const size_t newest = std::min(lineage.size(), kMaxRelocationCandidates);
    for (size_t i = 0; i < newest && !blocks.empty(); ++i)
        moved += move_mapped(fs, index, {lineage[i], dead.inode, dead.generation}, blocks);
    if (blocks.empty())
        return moved;
    if (!lineage.empty() && lives_on(fs, lineage.front(), dead)) {
        // The file is still there but these blocks of it were overwritten in place since (a VM
        // image, a database): their bytes live on only in older snapshots, if anywhere, found
        // by a few tree searches in them. Asking the kernel who references the extent costs a
        // backref walk over every snapshot that shares the file's leaves: 40 ms per block at
        // 100 snapshots, one block per 64 KiB write. Bytes of such a block that some other
        // file took over (a copy deduped onto it) are forgotten with it: that file's extent
        // stays, unindexed.
        const std::vector<uint64_t> older(lineage.begin() + static_cast<std::ptrdiff_t>(newest), lineage.end());
        return moved + move_to_newest_mapping(fs, index, older, dead.inode, dead.generation, blocks);
    }
    return moved + move_by_extent_refs(fs, index, blocks, alive_otransid);
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
        std::vector<uint64_t> lineage; // newest first
        for (auto it = alive.rbegin(); it != alive.rend(); ++it)
            if (it->lineage == dead.lineage)
                lineage.push_back(it->root_id);
        // Ordered by inode and generation: one group per file.
        std::vector<IndexedBlock> blocks = index.blocks_in_root(dead.root_id);
        for (size_t begin = 0; begin < blocks.size();) {
            size_t end = begin;
            while (end < blocks.size() && blocks[end].where.file.inode == blocks[begin].where.file.inode &&
                   blocks[end].where.file.generation == blocks[begin].where.file.generation)
                ++end;
            outcome.blocks_moved += relocate_file(
                fs, index, lineage,
                {blocks.begin() + static_cast<std::ptrdiff_t>(begin), blocks.begin() + static_cast<std::ptrdiff_t>(end)},
                alive_otransid);
            begin = end;
        }
        outcome.blocks_forgotten += static_cast<uint64_t>(index.forget_snapshot(dead.root_id));
        ++outcome.snapshots;
    }
    tx.commit();
    return outcome;
}

} // namespace snapdedupe
