// Moving every reference of a duplicate extent onto the keeper, so the extent is freed.
//
// Deduping one reference frees nothing while others remain: a later snapshot that shares
// the duplicate extent still holds it. So for each duplicate block we ask the kernel who
// references its extent (LOGICAL_INO_V2), and dedupe all of them.
#pragma once

#include "index/block_hasher.h"
#include "index/block_index.h"
#include "plugin/btrfs_ioctl.h"
#include "plugin/run_report.h"

#include <map>
#include <utility>
#include <vector>

namespace snapdedupe {

// A block of the snapshot being processed whose bytes the index already holds elsewhere.
struct DuplicateBlock {
    InodeHandle file;
    DataBlock block;
    uint64_t hash = 0;
    IndexedBlock keeper; // the oldest indexed copy, known to open
};

struct MoveOutcome {
    std::vector<bool> moved; // per duplicate: the snapshot's own reference now shares the keeper
    DedupeCounters counters;
};

class ReferenceMover {
public:
    // `fs_fd`: any fd on the filesystem; files are opened by handle through it.
    ReferenceMover(int fs_fd, bool dry_run) : fs_fd_(fs_fd), dry_run_(dry_run) {}

    // Extents that a writable subvolume references are left alone (counted): moving only the
    // snapshots' references would free nothing and grow the next incremental send.
    MoveOutcome move(const std::vector<DuplicateBlock>& duplicates);

private:
    struct Move;
    bool read_only(uint64_t root);
    bool regular_file(uint64_t root, uint64_t inode, InodeHandle& handle);
    std::vector<Move> plan(const std::vector<DuplicateBlock>& duplicates, MoveOutcome& outcome);
    void execute(std::vector<Move>& moves);

    int fs_fd_;
    bool dry_run_;
    std::map<uint64_t, bool> read_only_;
    std::map<std::pair<uint64_t, uint64_t>, InodeHandle> inodes_; // generation 0: not a regular file
};

} // namespace snapdedupe
