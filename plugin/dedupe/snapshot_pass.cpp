#include "plugin/dedupe/snapshot_pass.h"

#include "snapshots/snapshot_diff.h"
#include "snapshots/kernel/sys_error.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace snapdedupe {

namespace {

// Opens a path of the change set inside the snapshot. openat2 with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS: no component may be a symlink or leave the snapshot, so the path
// cannot be redirected. O_PATH opens nothing; the file is then reopened by handle, which
// refuses anything but a regular file (no device is ever opened, no FIFO blocks).
OpenResult open_in_snapshot(const LabeledFd& snapshot, const std::string& path, InodeHandle& handle)
{
    OpenResult found = open_regular_beneath(snapshot, path);
    if (!found)
        return found;
    handle = handle_of(LabeledFd(std::move(found.fd), snapshot.label() + "/" + path));
    return open_by_handle(snapshot, handle);
}

std::vector<FileRange> to_file_ranges(const std::vector<ByteRange>& ranges)
{
    std::vector<FileRange> out;
    out.reserve(ranges.size());
    for (const ByteRange& r : ranges)
        out.push_back({r.offset, r.length});
    return out;
}

} // namespace

// EAGAIN means a `btrfs send` is reading a root, usually for longer than a short wait: the
// extent is deferred at once to the end of the run, which retries everything still busy
// within this budget, and then leaves it for the next run.
constexpr std::chrono::seconds kBusyBudget{15};
// About 1 GiB of duplicate blocks (at kBlockSize): the batch's plan stays small in memory.
constexpr size_t kDuplicatesPerBatch = 8192;

// A test seam for races the kernel must win: when set, the pass waits before deduping until a
// line can be read from this FIFO, so a test can change a file between hashing and dedupe.
void wait_for_test_seam()
{
    const char* fifo = std::getenv("SNAPDEDUPE_TEST_PAUSE_BEFORE_DEDUPE");
    if (!fifo || !*fifo)
        return;
    std::ifstream in(fifo);
    std::string line;
    std::getline(in, line);
}

SnapshotPass::SnapshotPass(const LabeledFd& filesystem, BlockIndex& index, MetadataGeometry geometry, PassPolicy policy)
    : fs_(filesystem), index_(index), policy_(policy), planner_(filesystem.get(), geometry, policy.readonly_only),
      mover_(filesystem)
{
}

std::optional<IndexedBlock> SnapshotPass::find_keeper(uint64_t hash, const DataBlock& block)
{
    // Copies come a few at a time, oldest first; those that no longer open are forgotten, so
    // each round sees the next ones.
    for (;;) {
        std::vector<IndexedBlock> copies = index_.find_copies(hash, block.length, block.key);
        if (copies.empty())
            return std::nullopt;
        for (const IndexedBlock& copy : copies) {
            InodeHandle h{copy.where.root, copy.where.inode, copy.where.inode_gen};
            auto it = opens_.find(h);
            if (it == opens_.end())
                it = opens_.emplace(h, open_by_handle(fs_, h).fd.valid()).first;
            if (it->second)
                return copy;
            index_.forget_block(copy.id); // its snapshot is gone
        }
    }
}

void SnapshotPass::scan_file(const LabeledFd& snapshot, const FileChange& change, SnapshotReport& report,
                             std::vector<DuplicateBlock>& duplicates)
{
    const std::string name = snapshot.label() + "/" + change.path;
    InodeHandle handle;
    OpenResult opened = open_in_snapshot(snapshot, change.path, handle);
    if (!opened) {
        // Missing capabilities must not look like "nothing to do".
        if (opened.error == EPERM || opened.error == EACCES)
            throw SysError("opening (needs CAP_DAC_READ_SEARCH)", name, opened.error);
        return; // not a regular file (any more): nothing of ours to read
    }
    const UniqueFd& fd = opened.fd;
    struct stat st;
    check_sys(::fstat(fd.get(), &st), "stat", name);
    for (const DataBlock& block : dedupable_blocks(fd.get(), static_cast<uint64_t>(st.st_size),
                                                   to_file_ranges(change.ranges), name)) {
        // Known location: these bytes are shared with something already indexed.
        if (index_.knows_block(block.key) || pending_.count({block.key.extent, block.key.extent_offset}))
            continue;
        uint64_t hash = hash_block(fd.get(), block, buffer_, name);
        report.bytes_hashed += block.length;
        BlockLocation where{handle.root, handle.inode, handle.generation, block.file_offset};
        std::optional<IndexedBlock> keeper = find_keeper(hash, block);
        if (!keeper) {
            index_.add_block(block.key, block.length, hash, where);
            continue;
        }
        pending_.insert({block.key.extent, block.key.extent_offset});
        duplicates.push_back({handle, block, hash, *keeper});
    }
}

DedupeCounters SnapshotPass::dedupe(const std::vector<DuplicateBlock>& duplicates,
                                    std::vector<PlannedExtentReport>* plan_out, bool index_unmoved)
{
    ExtentPlan plan = planner_.plan(duplicates);
    DedupeCounters counters = plan.counters;
    for (const DuplicateBlock& d : duplicates)
        counters.duplicate_bytes += d.block.length;

    std::vector<bool> moved(duplicates.size(), false);
    std::vector<bool> busy(duplicates.size(), false);
    if (policy_.dry_run) {
        for (const PlannedExtent& e : plan.extents)
            plan_out->push_back({e.disk_bytenr, e.disk_bytes, e.references, e.metadata_cost, e.writable});
    } else if (!plan.moves.empty()) {
        wait_for_test_seam();
        MoveOutcome outcome = mover_.execute(plan, duplicates.size());
        counters.add(outcome.counters);
        moved = outcome.moved;
        // A busy extent is planned again when it is retried: count it then, not twice.
        for (size_t e = 0; e < plan.extents.size(); ++e) {
            if (!outcome.extent_busy[e])
                continue;
            ++counters.busy_deferred;
            --counters.extents_planned;
            counters.predicted_freed_bytes -= plan.extents[e].disk_bytes;
            counters.predicted_metadata_bytes -= plan.extents[e].metadata_cost;
        }
        for (const DeferredMove& m : outcome.busy_moves)
            index_.add_deferred(m);
        for (size_t e = 0; e < plan.extents.size(); ++e)
            for (size_t b : plan.extents[e].blocks)
                busy[b] = busy[b] || outcome.extent_busy[e];
    }
    // A duplicate that stayed where it was is still a location of its bytes; not one whose
    // extent is deferred: that extent is likely freed soon, and a key the index knows for a
    // freed disk address would hide the next data written there.
    for (size_t i = 0; index_unmoved && i < duplicates.size(); ++i) {
        const DuplicateBlock& d = duplicates[i];
        if (!moved[i] && !busy[i])
            index_.add_block(d.block.key, d.block.length, d.hash,
                             {d.file.root, d.file.inode, d.file.generation, d.block.file_offset});
    }
    return counters;
}

std::vector<DuplicateBlock> SnapshotPass::load_deferred()
{
    std::vector<DuplicateBlock> duplicates;
    for (const DeferredMove& m : index_.take_deferred()) {
        DuplicateBlock d;
        d.file = {m.where.root, m.where.inode, m.where.inode_gen};
        d.block.file_offset = m.where.file_offset;
        d.block.length = m.length;
        d.block.map_start = 0; // whatever the file holds now: the planner reads its items again
        d.keeper.where = m.keeper;
        d.keeper.key = m.keeper_key;
        if (!open_by_handle(fs_, d.file) || !open_by_handle(fs_, {m.keeper.root, m.keeper.inode, m.keeper.inode_gen}))
            continue; // the reference or the keeper is gone: nothing left to do
        duplicates.push_back(d);
    }
    return duplicates;
}

DedupeCounters SnapshotPass::dedupe_during_run(const std::vector<DuplicateBlock>& duplicates, SnapshotReport& report)
{
    DedupeCounters counters =
        dedupe(duplicates, policy_.dry_run ? &report.plan : nullptr, true);
    counters.busy_deferred = 0; // deferred to the end of the run, counted there if still busy
    return counters;
}

DedupeCounters SnapshotPass::retry_deferred()
{
    DedupeCounters total;
    if (policy_.dry_run)
        return total;
    // Rounds over everything still busy, with doubling pauses, within one budget for the run:
    // a send that outlasts it leaves its extents for the next run, never stalls this one.
    const auto deadline = std::chrono::steady_clock::now() + kBusyBudget;
    auto pause = std::chrono::milliseconds(100);
    for (;;) {
        std::vector<DuplicateBlock> duplicates = load_deferred();
        if (duplicates.empty())
            break;
        DedupeCounters round = dedupe(duplicates, nullptr, false); // not blocks: nothing to index
        round.duplicate_bytes = 0; // counted when they were found
        bool last = round.busy_deferred == 0 || std::chrono::steady_clock::now() + pause > deadline;
        if (!last)
            round.busy_deferred = 0; // tried again below
        total.add(round);
        if (last)
            break;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(5000));
    }
    return total;
}

SnapshotReport SnapshotPass::process(const Snapshot& snapshot, const Snapshot* parent, const std::string& lineage)
{
    SnapshotReport report;
    report.path = snapshot.path;
    if (parent)
        report.parent_path = parent->path;

    LabeledFd snapshot_fd(UniqueFd(::open(snapshot.path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)),
                          snapshot.path);
    if (!snapshot_fd)
        throw SysError("opening snapshot", snapshot.path, errno);
    ChangeSet changes = diff_snapshot(snapshot_fd.get(), snapshot.path,
                                      parent ? std::optional<uint64_t>(parent->root_id) : std::nullopt);
    report.bytes_changed = changes.changed_bytes();

    std::vector<DuplicateBlock> duplicates;
    pending_.clear();
    for (const FileChange& change : changes.files) {
        scan_file(snapshot_fd, change, report, duplicates);
        // Bounded memory on huge snapshots: dedupe in batches, at file boundaries.
        if (duplicates.size() >= kDuplicatesPerBatch) {
            report.dedupe.add(dedupe_during_run(duplicates, report));
            duplicates.clear();
        }
    }

    report.dedupe.add(dedupe_during_run(duplicates, report));

    ProcessedSnapshot record;
    record.uuid = uuid_to_string(snapshot.uuid);
    record.root_id = snapshot.root_id;
    record.lineage = lineage;
    record.otransid = snapshot.otransid;
    record.path = snapshot.path;
    record.changed_bytes = report.bytes_changed;
    for (const FileChange& change : changes.files)
        record.changed_paths.push_back(change.path);
    index_.add_snapshot(record);
    return report;
}

} // namespace snapdedupe
