#include "plugin/dedupe/snapshot_pass.h"

#include "plugin/dedupe/block_relocation.h"

#include "snapshots/snapshot_diff.h"
#include "snapshots/kernel/error.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
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

} // namespace

// About 1 GiB of duplicate blocks (at kBlockSize): the batch's plan stays small in memory.
constexpr size_t kDuplicatesPerBatch = 8192;
// Blocks fingerprinted at once: about 1 GiB (their checksums, 256 KiB of crc32c, come in a few
// tree searches), from at most this many files held open.
constexpr size_t kBlocksPerChunk = 8192;
constexpr size_t kFilesPerChunk = 256;

SnapshotPass::SnapshotPass(FilesystemQueries& queries, MoveJournal& journal, BlockIndex& index,
                           BlockFingerprinter fingerprinter, MetadataGeometry geometry, PassPolicy policy)
    : queries_(queries), index_(index), fingerprinter_(std::move(fingerprinter)), policy_(std::move(policy)),
      planner_(queries, geometry, policy_.readonly_only), mover_(queries, journal),
      last_row_before_run_(index.last_block_id())
{
}

std::optional<IndexedBlock> SnapshotPass::find_keeper(const BlockContent& content, const BlockKey& key)
{
    // Copies come a few at a time, oldest first; those that no longer open are forgotten, so
    // each round sees the next ones.
    for (;;) {
        std::vector<IndexedBlock> copies = index_.find_copies(content, key);
        if (copies.empty())
            return std::nullopt;
        for (const IndexedBlock& copy : copies) {
            const InodeHandle& h = copy.where.file;
            auto it = opens_.find(h);
            if (it == opens_.end())
                it = opens_.emplace(h, still_opens(queries_, h)).first;
            if (it->second)
                return copy;
            // Its snapshot is gone (retention ran during the run): a later snapshot usually
            // still holds the same bytes, and the block keeps its place as keeper there.
            if (std::optional<BlockLocation> moved = relocate_block(queries_, index_, copy)) {
                IndexedBlock relocated = copy;
                relocated.where = *moved;
                return relocated;
            }
            index_.forget_block(copy.id);
        }
    }
}

void SnapshotPass::scan_file(const LabeledFd& snapshot, const FileChange& change)
{
    const std::string name = snapshot.label() + "/" + change.path;
    InodeHandle handle;
    OpenResult opened = open_in_snapshot(snapshot, change.path, handle);
    if (!opened) {
        // Only a file that is no longer there as a regular file is nothing to do: any other
        // refusal must not look like it (a run that reads nothing and says all is well).
        switch (opened.error) {
        case ENOENT: // gone
        case ESTALE:
        case EINVAL: // not a regular file
        case ELOOP:  // a symlink on the way
        case EXDEV:  // another mount on the way
            return;
        case EPERM:
        case EACCES:
            // The run checked CAP_DAC_READ_SEARCH before it started, so what refuses now is a
            // seccomp filter.
            throw SysError("opening by file handle (the process has CAP_DAC_READ_SEARCH, so a seccomp filter - "
                           "a container, or a unit's SystemCallFilter= - blocks open_by_handle_at)",
                           name, opened.error);
        default:
            throw SysError("opening", name, opened.error); // ENOSYS: openat2 refused by a filter
        }
    }
    FileBlocks scanned{LabeledFd(std::move(opened.fd), name), handle, {}};
    struct stat st;
    check_sys(::fstat(scanned.file.get(), &st), "stat", name);
    for (DataBlock& block : dedupable_blocks(scanned.file, static_cast<uint64_t>(st.st_size), change.ranges)) {
        // Known location: these bytes are shared with something already indexed (or about to
        // be: a reflink within this chunk).
        std::tuple<uint64_t, uint64_t> address{block.key.extent, block.key.extent_offset};
        if (pending_.count(address) || !chunk_keys_.insert(address).second || index_.knows_block(block.key))
            continue;
        chunk_blocks_ += 1;
        scanned.blocks.push_back(std::move(block));
    }
    if (!scanned.blocks.empty())
        chunk_.push_back(std::move(scanned));
}

void SnapshotPass::index_chunk(SnapshotReport& report, std::vector<DuplicateBlock>& duplicates)
{
    std::vector<std::vector<Fingerprint>> fingerprints = fingerprinter_.fingerprint(chunk_, report.fingerprinted);
    for (size_t f = 0; f < chunk_.size(); ++f) {
        const FileBlocks& file = chunk_[f];
        for (size_t b = 0; b < file.blocks.size(); ++b) {
            const DataBlock& block = file.blocks[b];
            BlockContent content{fingerprints[f][b], block.length, block.nodatasum};
            std::optional<IndexedBlock> keeper = find_keeper(content, block.key);
            if (!keeper) {
                index_.add_block(block.key, content, {file.handle, block.file_offset});
                continue;
            }
            pending_.insert({block.key.extent, block.key.extent_offset});
            duplicates.push_back({file.handle, block, content.fingerprint, *keeper});
        }
    }
    chunk_.clear();
    chunk_keys_.clear();
    chunk_blocks_ = 0;
}

DedupeCounters SnapshotPass::dedupe(const std::vector<DuplicateBlock>& duplicates,
                                    std::vector<PlannedExtent>* plan_out, Unmoved unmoved)
{
    const bool index_unmoved = unmoved != Unmoved::leave;
    // Finishing the journal plans each move as recorded: its keeper stays the keeper.
    ExtentPlan plan = planner_.plan(duplicates, index_unmoved ? std::optional<int64_t>(last_row_before_run_)
                                                              : std::nullopt);
    // In the same transaction as the journal's record of the moves (committed before the first
    // one runs): a killed run leaves the copy as the keeper, and the journal moving the old one.
    std::vector<bool> exchanged(duplicates.size(), false);
    for (const KeeperExchange& x : plan.exchanges) {
        index_.exchange_block(x.keeper_id, x.key, x.where);
        exchanged[x.duplicate] = true;
    }
    DedupeCounters counters = plan.counters;
    for (const DuplicateBlock& d : duplicates)
        counters.duplicate_bytes += d.block.length;

    std::vector<bool> moved(duplicates.size(), false);
    std::vector<bool> busy(duplicates.size(), false);
    if (policy_.dry_run) {
        plan_out->insert(plan_out->end(), plan.extents.begin(), plan.extents.end());
    } else if (!plan.moves.empty()) {
        if (policy_.before_dedupe)
            policy_.before_dedupe();
        MoveOutcome outcome = mover_.execute(plan, duplicates.size());
        counters.add(outcome.counters);
        moved = outcome.moved;
        // An extent with moves left in the journal (busy, an error that can pass) is planned
        // again when the journal is finished: count it then, not twice.
        for (size_t e = 0; e < plan.extents.size(); ++e) {
            if (!outcome.extent_kept[e])
                continue;
            counters.busy_deferred += outcome.extent_busy[e] ? 1 : 0;
            --counters.extents_planned;
            counters.predicted_freed_bytes -= plan.extents[e].disk_bytes;
            counters.predicted_metadata_bytes -= plan.extents[e].metadata_cost;
        }
        for (size_t e = 0; e < plan.extents.size(); ++e)
            for (size_t b : plan.extent_blocks[e])
                busy[b] = busy[b] || outcome.extent_kept[e];
    }
    std::vector<bool> held(duplicates.size(), false);
    if (unmoved == Unmoved::hold_cost_skipped)
        for (size_t b : plan.cost_skipped)
            held[b] = true;
    // A duplicate that stayed where it was is still a location of its bytes; not one whose
    // extent is deferred: that extent is likely freed soon, and a key the index knows for a
    // freed disk address would hide the next data written there.
    for (size_t i = 0; index_unmoved && i < duplicates.size(); ++i) {
        const DuplicateBlock& d = duplicates[i];
        if (moved[i] || busy[i] || exchanged[i]) // an exchanged one has the keeper's row
            continue;
        if (held[i]) { // counted as skipped if it stays skipped after its second look
            counters.skipped_cost_bytes -= std::min(counters.skipped_cost_bytes, d.block.length);
            cost_skipped_.push_back(d);
            continue;
        }
        index_.add_block(d.block.key, {d.fingerprint, d.block.length, d.block.nodatasum},
                         {d.file, d.block.file_offset});
    }
    return counters;
}

DedupeCounters SnapshotPass::second_look(SnapshotReport& report)
{
    if (cost_skipped_.empty()) // most snapshots: no plan to make, no question to ask
        return {};
    std::vector<DuplicateBlock> held;
    held.swap(cost_skipped_);
    std::vector<DuplicateBlock> again;
    for (DuplicateBlock& d : held) {
        // Its keeper may have been exchanged for a copy since, or its snapshot deleted.
        const BlockContent content{d.fingerprint, d.block.length, d.block.nodatasum};
        std::optional<IndexedBlock> keeper = find_keeper(content, d.block.key);
        if (!keeper) {
            index_.add_block(d.block.key, content, {d.file, d.block.file_offset});
            continue;
        }
        d.keeper = *keeper;
        again.push_back(d);
    }
    DedupeCounters counters = dedupe_during_run(again, report, Unmoved::index);
    counters.duplicate_bytes = 0; // counted when they were first found
    return counters;
}

DedupeCounters SnapshotPass::dedupe_during_run(const std::vector<DuplicateBlock>& duplicates, SnapshotReport& report,
                                               Unmoved unmoved)
{
    DedupeCounters counters =
        dedupe(duplicates, policy_.dry_run ? &report.plan : nullptr, unmoved);
    // Busy or failed moves stay in the journal, which the end of the run finishes: counted
    // there if they still do not move.
    counters.busy_deferred = counters.dedupe_errors = 0;
    return counters;
}

SnapshotReport SnapshotPass::process(const Snapshot& snapshot, const Snapshot* parent, const std::string& lineage,
                                     const std::function<void(uint64_t done, uint64_t total)>& progress,
                                     std::optional<ChangeSet> diffed)
{
    SnapshotReport report;
    report.path = snapshot.path;
    if (parent)
        report.parent_path = parent->path;

    // Opened once, here: its files are opened by handle, and its path is not resolved again.
    const LabeledFd dir = open_root_dir(snapshot);
    ChangeSet changes = diffed ? std::move(*diffed)
                               : diff_snapshot(dir, parent ? std::optional<uint64_t>(parent->root_id)
                                                           : std::nullopt);
    report.bytes_changed = changes.changed_bytes();

    std::vector<DuplicateBlock> duplicates;
    pending_.clear();
    uint64_t done = 0;
    for (const FileChange& change : changes.files) {
        scan_file(dir, change);
        // Bounded memory and open files: fingerprint in chunks, dedupe in batches, both at
        // file boundaries.
        if (chunk_blocks_ >= kBlocksPerChunk || chunk_.size() >= kFilesPerChunk)
            index_chunk(report, duplicates);
        if (duplicates.size() >= kDuplicatesPerBatch) {
            report.dedupe.add(dedupe_during_run(duplicates, report, Unmoved::hold_cost_skipped));
            duplicates.clear();
        }
        if (cost_skipped_.size() >= kDuplicatesPerBatch) // bounded memory
            report.dedupe.add(second_look(report));
        for (const ByteRange& r : change.ranges)
            done += r.length;
        if (progress)
            progress(done, report.bytes_changed);
    }

    index_chunk(report, duplicates);
    report.dedupe.add(dedupe_during_run(duplicates, report, Unmoved::hold_cost_skipped));
    report.dedupe.add(second_look(report));

    ProcessedSnapshot record;
    record.uuid = uuid_to_string(snapshot.uuid);
    record.root_id = snapshot.root_id;
    record.lineage = lineage;
    record.otransid = snapshot.otransid;
    record.path = snapshot.path;
    record.changed_bytes = report.bytes_changed;
    index_.add_snapshot(record);
    return report;
}

} // namespace snapdedupe
