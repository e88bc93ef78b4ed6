// SnapshotPass: finishing the moves the intent journal holds (plugin/dedupe/move_journal.h).
#include "plugin/dedupe/snapshot_pass.h"

#include "plugin/dedupe/block_relocation.h"

#include <algorithm>
#include <thread>

namespace snapdedupe {

std::optional<BlockLocation> SnapshotPass::keeper_now(const DeferredMove& m)
{
    if (still_opens(queries_, m.keeper.file))
        return m.keeper;
    // Its snapshot was deleted since: the forgetter moved the block's row to a survivor that
    // maps the same bytes, or, during this run, it is moved there now.
    std::optional<IndexedBlock> row = index_.block_at(m.keeper_key);
    if (!row)
        return std::nullopt;
    // A block moves only to a file that holds its bytes at the same offset, so the move's own
    // offset (which may lie inside the block) carries over to the block's new file.
    std::optional<BlockLocation> now;
    if (still_opens(queries_, row->where.file))
        now = row->where;
    else
        now = relocate_block(queries_, index_, *row);
    if (!now)
        return std::nullopt;
    return BlockLocation{now->file, m.keeper.file_offset};
}

std::vector<DuplicateBlock> SnapshotPass::take_journal()
{
    std::vector<DuplicateBlock> duplicates;
    for (const DeferredMove& m : index_.deferred()) {
        if (!still_opens(queries_, m.where.file)) { // the reference is gone: nothing to do
            index_.settle_deferred(m.where);
            continue;
        }
        // Taken out; the mover records it again if it is planned again.
        index_.settle_deferred(m.where);
        std::optional<BlockLocation> keeper = keeper_now(m);
        if (!keeper)
            continue; // the keeper's bytes are gone: nothing to move onto
        DuplicateBlock d;
        d.file = m.where.file;
        d.block.file_offset = m.where.file_offset;
        d.block.length = m.length;
        d.block.map_start = 0; // whatever the file holds now: the planner reads its items again
        d.keeper.where = *keeper;
        d.keeper.key = m.keeper_key;
        d.primary = m.primary;
        duplicates.push_back(d);
    }
    return duplicates;
}

DedupeCounters SnapshotPass::finish_journal(std::chrono::milliseconds budget, bool final,
                                            const std::function<void()>& before_each_round)
{
    DedupeCounters total;
    if (policy_.dry_run)
        return total;
    // A send that outlasts the budget leaves its extents for the next run, never stalls this one.
    const auto deadline = std::chrono::steady_clock::now() + budget;
    auto pause = std::chrono::milliseconds(100);
    for (;;) {
        if (before_each_round)
            before_each_round();
        std::vector<DuplicateBlock> duplicates = take_journal();
        if (duplicates.empty())
            break;
        DedupeCounters round = dedupe(duplicates, nullptr, Unmoved::leave);
        // Found, and skipped or not, when they were first found. A move that had already
        // happened before a kill plans as an extent onto itself: nothing to count.
        round.duplicate_bytes = round.skipped_partial_bytes = round.skipped_cost_bytes = 0;
        round.skipped_writable_bytes = 0;
        bool again = round.busy_deferred > 0 && std::chrono::steady_clock::now() + pause <= deadline;
        if (again || !final)
            round.busy_deferred = round.dedupe_errors = 0; // tried again, below or later
        total.add(round);
        if (!again)
            break;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(5000));
    }
    return total;
}

} // namespace snapdedupe
