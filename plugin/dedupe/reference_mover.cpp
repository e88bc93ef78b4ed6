#include "plugin/dedupe/reference_mover.h"

#include "plugin/dedupe/deduper.h"
#include "plugin/dedupe/ordered_workers.h"

#include <algorithm>
#include <cerrno>
#include <map>
#include <mutex>
#include <tuple>

namespace snapdedupe {

namespace {

constexpr size_t kMaxOpenDestinations = 256;

// Moves by source range (file, offset, length): one dedupe call's worth each.
using MoveGroups = std::map<std::tuple<InodeHandle, uint64_t, uint64_t>, std::vector<size_t>>;

// What the calls of `groups` will compare, in the order they run, for the kernel to read ahead
// (FilesystemQueries::compare_soon): each call's source range, then its destinations'.
CompareGroups compare_list(const MoveGroups& groups, const std::vector<PlannedMove>& moves)
{
    CompareGroups compares;
    for (const auto& [key, members] : groups) {
        const auto& [src_handle, src_offset, length] = key;
        std::vector<CompareRange>& group = compares.emplace_back();
        for (uint64_t pos = 0; pos < length; pos += kMaxBytesPerCall) {
            uint64_t step = std::min(kMaxBytesPerCall, length - pos);
            group.push_back({src_handle, src_offset + pos, step});
            for (size_t i : members)
                group.push_back({moves[i].dst, moves[i].dst_offset + pos, step});
        }
    }
    return compares;
}

// Adjacent moves of one extent into one file merge, so a whole duplicate file is usually one
// ioctl per reference. Moves of different extents stay apart: each extent's fate is its own.
std::vector<PlannedMove> merge_adjacent(std::vector<PlannedMove> moves)
{
    std::sort(moves.begin(), moves.end(), [](const PlannedMove& a, const PlannedMove& b) {
        return std::tie(a.extent, a.dst, a.dst_offset) < std::tie(b.extent, b.dst, b.dst_offset);
    });
    std::vector<PlannedMove> merged;
    for (const PlannedMove& m : moves) {
        if (!merged.empty()) {
            PlannedMove& last = merged.back();
            if (last.extent == m.extent && last.dst == m.dst && last.src == m.src &&
                last.dst_offset + last.length == m.dst_offset && last.src_offset + last.length == m.src_offset) {
                last.length += m.length;
                continue;
            }
        }
        merged.push_back(m);
    }
    return merged;
}

// The files one worker holds open between groups. Destinations stay open from one group to
// the next: a fragmented file's references come back group after group (each open by handle
// is two opens, a stat and a close). Bounded, so a large batch cannot run out of descriptors.
struct WorkerFiles {
    size_t max_dst = kMaxOpenDestinations;
    InodeHandle src_handle;
    OpenResult src;
    std::map<InodeHandle, OpenResult> dst;
    uint64_t compared = 0; // bytes handed to the kernel to compare
};

// Which groups are deduped, for the reader: it may drop and pass only the groups below the
// first one not done, whichever worker finishes first.
struct DoneGroups {
    explicit DoneGroups(size_t count) : group(count, false) {}
    std::mutex mutex;
    std::vector<bool> group;
    size_t below = 0; // every group before this one is done
};

// Dedupes one group's references onto its source range, through the worker's open files.
void run_group(FilesystemQueries& fs, const MoveGroups::key_type& key, const std::vector<size_t>& members,
               const std::vector<PlannedMove>& moves, WorkerFiles& files, std::vector<DedupeResult>& results)
{
    const auto& [src_handle, src_offset, length] = key;
    if (!files.src || !(files.src_handle == src_handle)) {
        files.src = fs.open_file(src_handle);
        files.src_handle = src_handle;
    }
    if (!files.src) {
        for (size_t i : members) {
            results[i].error = files.src.error;
            results[i].keeper_gone = true; // the reference still needs a keeper: keep the move
        }
        return;
    }
    if (files.dst.size() + members.size() > files.max_dst)
        files.dst.clear();
    std::vector<DedupeTarget> targets;
    std::vector<size_t> target_moves;
    for (size_t i : members) {
        auto it = files.dst.find(moves[i].dst);
        if (it == files.dst.end())
            it = files.dst.emplace(moves[i].dst, fs.open_file(moves[i].dst)).first;
        if (!it->second) {
            results[i].error = it->second.error;
            continue;
        }
        targets.push_back({it->second.fd.get(), moves[i].dst_offset});
        target_moves.push_back(i);
    }
    if (!targets.empty())
        files.compared += length * (1 + targets.size()); // the source, and every destination
    std::vector<DedupeResult> done = dedupe_onto(fs, files.src.fd.get(), src_offset, length, targets);
    for (size_t t = 0; t < done.size(); ++t)
        results[target_moves[t]] = done[t];
}

DeferredMove journal_entry(const PlannedMove& m, int error)
{
    return {{m.dst, m.dst_offset}, m.length, {m.src, m.src_offset}, m.keeper_key, error, m.primary};
}

// What became of one move, and so of its journal entry.
enum class Fate {
    kMoved,
    kGone,    // the reference's file or subvolume is gone: nothing to do, not an error
    kDiffers, // the bytes differ from the keeper's (a writer got there first)
    kRefused, // the kernel will refuse it every time: counted once, then dropped
    kRetry,   // busy (EAGAIN), not tried, the keeper gone, or an error that can pass
};

Fate fate_of(const PlannedMove& m, const DedupeResult& r)
{
    if (r.deduped == m.length)
        return Fate::kMoved;
    if (r.differs > 0)
        return Fate::kDiffers;
    if (r.keeper_gone) // the reference still needs a keeper: the replay finds where it is now
        return Fate::kRetry;
    switch (r.error) {
    case ENOENT:
    case ESTALE:
        return Fate::kGone;
    case EINVAL:     // a nodatasum and a checksummed file, lengths that differ at EOF
    case EPERM:      // an immutable or append-only file
    case EACCES:
    case ETXTBSY:    // a swap file
    case EOPNOTSUPP:
    case EXDEV:
        return Fate::kRefused;
    default:         // EAGAIN, EROFS, EIO, ENOSPC, ENOMEM, 0 (not tried)
        return Fate::kRetry;
    }
}

} // namespace

uint64_t ReferenceMover::run_moves(const std::vector<PlannedMove>& moves, const std::vector<size_t>& selected,
                                   std::vector<DedupeResult>& results)
{
    // One ioctl serves every reference that takes the same source range: the snapshots of a
    // lineage usually hold one extent at the same offsets. Groups are visited in source
    // order, so each source file is opened once.
    MoveGroups by_source;
    for (size_t i : selected)
        by_source[{moves[i].src, moves[i].src_offset, moves[i].length}].push_back(i);
    std::vector<MoveGroups::const_iterator> groups;
    for (auto it = by_source.cbegin(); it != by_source.cend(); ++it)
        groups.push_back(it);
    // The groups of one source file go to one worker, in order: calls on one source would
    // only queue for its inode lock, and the worker opens it once.
    std::vector<size_t> run_starts;
    for (size_t g = 0; g < groups.size(); ++g)
        if (g == 0 || !(std::get<0>(groups[g]->first) == std::get<0>(groups[g - 1]->first)))
            run_starts.push_back(g);
    run_starts.push_back(groups.size());

    fs_.compare_soon(compare_list(by_source, moves));
    const unsigned threads = fs_.dedupe_threads();
    std::vector<WorkerFiles> files(threads);
    for (WorkerFiles& f : files)
        f.max_dst = kMaxOpenDestinations / threads;
    DoneGroups done(groups.size());
    run_in_order(run_starts.size() - 1, threads, [&](size_t run, unsigned worker) {
        for (size_t g = run_starts[run]; g < run_starts[run + 1]; ++g) {
            const auto& [key, members] = *groups[g];
            run_group(fs_, key, members, moves, files[worker], results);
            // The reader moves its window on past the groups done, the earlier ones all done.
            std::lock_guard<std::mutex> lock(done.mutex);
            done.group[g] = true;
            while (done.below < done.group.size() && done.group[done.below])
                ++done.below;
            fs_.compared_up_to(done.below);
        }
    });
    fs_.compare_soon({}); // done: the reader stops and drops what it read
    uint64_t compared = 0;
    for (const WorkerFiles& f : files)
        compared += f.compared;
    return compared;
}

MoveOutcome ReferenceMover::execute(const ExtentPlan& plan, size_t duplicate_count)
{
    std::vector<PlannedMove> moves = merge_adjacent(plan.moves);
    std::vector<DedupeResult> results(moves.size());
    std::vector<DeferredMove> intent;
    for (const PlannedMove& m : moves)
        intent.push_back(journal_entry(m, 0));
    journal_.record(intent); // durable before the first reference moves

    // Read-only references first; a writable subvolume's only once every read-only reference
    // of the extent has moved. Otherwise a busy snapshot would leave the live subvolume on
    // the keeper and its snapshots on the old extent: nothing freed, and the next
    // incremental send would carry the range again.
    std::vector<size_t> read_only_moves, writable_moves;
    for (size_t i = 0; i < moves.size(); ++i)
        (moves[i].writable ? writable_moves : read_only_moves).push_back(i);
    uint64_t compared = run_moves(moves, read_only_moves, results);
    std::vector<bool> read_only_done(plan.extents.size(), true);
    for (size_t i : read_only_moves) {
        Fate fate = fate_of(moves[i], results[i]);
        if (fate != Fate::kMoved && fate != Fate::kGone) // a reference that is gone holds nothing back
            read_only_done[moves[i].extent] = false;
    }
    std::erase_if(writable_moves, [&](size_t i) { return !read_only_done[moves[i].extent]; });
    compared += run_moves(moves, writable_moves, results);

    MoveOutcome outcome;
    DedupeCounters& c = outcome.counters;
    c.compared_bytes = compared;
    std::vector<bool> extent_freed(plan.extents.size(), true);
    std::vector<bool> extent_busy(plan.extents.size(), false);
    for (size_t i = 0; i < moves.size(); ++i) {
        const DedupeResult& r = results[i];
        const PlannedMove& m = moves[i];
        c.differs_bytes += r.differs;
        if (m.primary)
            c.deduped_bytes += r.deduped;
        if (r.deduped == m.length)
            ++c.references_moved;
        else
            extent_freed[m.extent] = false;
        Fate fate = fate_of(m, r);
        if (r.error == EAGAIN)
            extent_busy[m.extent] = true;
        else if (fate == Fate::kRefused)
            ++c.dedupe_refused;
        else if (fate == Fate::kRetry && r.error != 0)
            ++c.dedupe_errors;
    }
    std::vector<bool> extent_kept(plan.extents.size(), false);
    for (size_t i = 0; i < moves.size(); ++i) {
        if (fate_of(moves[i], results[i]) != Fate::kRetry) {
            journal_.settle({moves[i].dst, moves[i].dst_offset});
            continue;
        }
        // A writable reference not tried because its extent's read-only ones did not all move
        // waits with them.
        journal_.keep(journal_entry(moves[i], results[i].error ? results[i].error
                                              : extent_busy[moves[i].extent] ? EAGAIN : 0));
        extent_kept[moves[i].extent] = true;
    }

    outcome.extent_busy = extent_busy;
    outcome.extent_kept = extent_kept;
    outcome.moved.assign(duplicate_count, true);
    std::vector<bool> in_plan(duplicate_count, false);
    for (size_t e = 0; e < plan.extents.size(); ++e) {
        c.extents_moved += extent_freed[e] ? 1 : 0;
        for (size_t b : plan.extent_blocks[e]) {
            in_plan[b] = true;
            outcome.moved[b] = outcome.moved[b] && extent_freed[e];
        }
    }
    for (size_t b = 0; b < duplicate_count; ++b)
        outcome.moved[b] = outcome.moved[b] && in_plan[b];
    return outcome;
}

} // namespace snapdedupe
