#include "plugin/upkeep/snapshot_forgetter.h"

#include "plugin/dedupe/block_relocation.h"

#include <algorithm>
#include <map>
#include <optional>

namespace snapdedupe {

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
        for (auto it = alive.rbegin(); it != alive.rend() && candidates.size() < kMaxRelocationCandidates; ++it)
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
