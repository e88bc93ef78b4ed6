#include "plugin/reference_mover.h"

#include "plugin/deduper.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <tuple>

namespace snapdedupe {

// One file range to share with the keeper. Adjacent blocks merge into one move, so a whole
// duplicate file is usually one ioctl per reference.
struct ReferenceMover::Move {
    InodeHandle dst;
    uint64_t dst_offset = 0;
    InodeHandle src;
    uint64_t src_offset = 0;
    uint64_t length = 0;
    bool primary = false;              // the processed snapshot's own reference
    std::vector<size_t> duplicates;    // the blocks it carries, when primary
    DedupeResult result;
};

bool ReferenceMover::read_only(uint64_t root)
{
    auto it = read_only_.find(root);
    if (it == read_only_.end())
        it = read_only_.emplace(root, subvolume_is_read_only(fs_fd_, root)).first;
    return it->second;
}

bool ReferenceMover::regular_file(uint64_t root, uint64_t inode, InodeHandle& handle)
{
    auto key = std::make_pair(root, inode);
    auto it = inodes_.find(key);
    if (it == inodes_.end()) {
        InodeInfo info;
        InodeHandle h{root, inode, 0};
        if (read_inode(fs_fd_, root, inode, info) && S_ISREG(info.mode))
            h.generation = info.generation;
        it = inodes_.emplace(key, h).first;
    }
    handle = it->second;
    return handle.generation != 0;
}

std::vector<ReferenceMover::Move> ReferenceMover::plan(const std::vector<DuplicateBlock>& duplicates,
                                                       MoveOutcome& outcome)
{
    std::vector<Move> moves;
    for (size_t i = 0; i < duplicates.size(); ++i) {
        const DuplicateBlock& d = duplicates[i];
        const DataBlock& b = d.block;
        InodeHandle src{d.keeper.where.root, d.keeper.where.inode, d.keeper.where.inode_gen};
        // Any reference from a writable subvolume, to any part of the extent, keeps the
        // extent allocated: moving the rest would free nothing. So that check asks about the
        // whole extent; the moves then use the references that see this very block.
        std::vector<ExtentRef> whole = logical_ino(fs_fd_, b.extent_address, true);
        bool writable = std::any_of(whole.begin(), whole.end(), [&](const ExtentRef& r) { return !read_only(r.root); });
        if (writable) {
            outcome.counters.skipped_writable_bytes += b.length;
            continue;
        }
        std::vector<ExtentRef> refs = b.compressed ? whole : logical_ino(fs_fd_, b.extent_address, false);
        bool primary_seen = false;
        for (const ExtentRef& r : refs) {
            // Compressed extents were looked up whole: the ref gives the start of the
            // file's extent item, and the block sits at the same offset into it.
            uint64_t offset = r.file_offset + (b.compressed ? b.key.extent_offset : 0);
            Move m;
            if (!regular_file(r.root, r.inode, m.dst))
                continue;
            m.dst_offset = offset;
            m.src = src;
            m.src_offset = d.keeper.where.file_offset;
            m.length = b.length;
            m.primary = m.dst == d.file && offset == b.file_offset;
            bool overlaps_src = m.dst == src && offset < m.src_offset + m.length && m.src_offset < offset + m.length;
            if (overlaps_src)
                continue; // never onto itself
            if (m.primary) {
                primary_seen = true;
                m.duplicates.push_back(i);
            }
            moves.push_back(std::move(m));
        }
        if (!primary_seen) {
            Move m{d.file, b.file_offset, src, d.keeper.where.file_offset, b.length, true, {i}, {}};
            moves.push_back(std::move(m));
        }
    }

    // Merge adjacent ranges: same destination and source, both contiguous.
    std::sort(moves.begin(), moves.end(), [](const Move& a, const Move& b) {
        return std::tie(a.dst, a.dst_offset, a.primary) < std::tie(b.dst, b.dst_offset, b.primary);
    });
    std::vector<Move> merged;
    for (Move& m : moves) {
        if (!merged.empty()) {
            Move& last = merged.back();
            if (last.dst == m.dst && last.src == m.src && last.primary == m.primary &&
                last.dst_offset + last.length == m.dst_offset && last.src_offset + last.length == m.src_offset &&
                last.length + m.length <= kMaxBytesPerCall) {
                last.length += m.length;
                last.duplicates.insert(last.duplicates.end(), m.duplicates.begin(), m.duplicates.end());
                continue;
            }
        }
        merged.push_back(std::move(m));
    }
    return merged;
}

void ReferenceMover::execute(std::vector<Move>& moves)
{
    // One ioctl serves every reference that takes the same source range: the snapshots of a
    // lineage usually share one extent at the same offsets.
    std::map<std::tuple<InodeHandle, uint64_t, uint64_t>, std::vector<size_t>> groups;
    for (size_t i = 0; i < moves.size(); ++i)
        groups[{moves[i].src, moves[i].src_offset, moves[i].length}].push_back(i);

    std::map<InodeHandle, UniqueFd> src_fds; // groups are ordered by source: few opens
    for (auto& [key, members] : groups) {
        auto& [src_handle, src_offset, length] = key;
        if (src_fds.size() > 64 && !src_fds.count(src_handle))
            src_fds.clear();
        auto src_it = src_fds.find(src_handle);
        if (src_it == src_fds.end())
            src_it = src_fds.emplace(src_handle, open_by_handle(fs_fd_, src_handle)).first;
        const UniqueFd& src = src_it->second;
        if (!src) {
            for (size_t i : members)
                moves[i].result.error = errno ? errno : ESTALE;
            continue;
        }
        std::map<InodeHandle, UniqueFd> dst_fds;
        std::vector<DedupeTarget> targets;
        std::vector<size_t> target_moves;
        for (size_t i : members) {
            auto it = dst_fds.find(moves[i].dst);
            if (it == dst_fds.end())
                it = dst_fds.emplace(moves[i].dst, open_by_handle(fs_fd_, moves[i].dst)).first;
            if (!it->second) {
                moves[i].result.error = errno ? errno : ESTALE;
                continue;
            }
            targets.push_back({it->second.get(), moves[i].dst_offset});
            target_moves.push_back(i);
        }
        std::vector<DedupeResult> results = dedupe_onto(src.get(), src_offset, length, targets);
        for (size_t t = 0; t < results.size(); ++t)
            moves[target_moves[t]].result = results[t];
    }
}

MoveOutcome ReferenceMover::move(const std::vector<DuplicateBlock>& duplicates)
{
    MoveOutcome outcome;
    outcome.moved.assign(duplicates.size(), false);
    for (const DuplicateBlock& d : duplicates)
        outcome.counters.duplicate_bytes += d.block.length;

    std::vector<Move> moves = plan(duplicates, outcome);
    if (dry_run_) {
        outcome.counters.references_moved = moves.size();
        return outcome;
    }
    execute(moves);

    DedupeCounters& c = outcome.counters;
    for (const Move& m : moves) {
        c.differs_bytes += m.result.differs;
        if (m.result.deduped == m.length)
            ++c.references_moved;
        if (m.result.error == EAGAIN)
            ++c.busy_deferred;
        else if (m.result.error != 0)
            ++c.dedupe_errors;
        if (!m.primary)
            continue;
        c.deduped_bytes += m.result.deduped;
        uint64_t done_end = m.dst_offset + m.result.deduped;
        for (size_t i : m.duplicates) {
            const DataBlock& b = duplicates[i].block;
            outcome.moved[i] = b.file_offset + b.length <= done_end;
        }
    }
    return outcome;
}

} // namespace snapdedupe
