// Forgetting snapshots that no longer exist: snapper's cleanup and btrbk's retention delete
// snapshots every day, and an index that kept them would grow forever.
//
// A deleted snapshot's blocks are not all gone with it. The first snapshot of a lineage holds
// the location of nearly every block (later snapshots add only what changed), and the oldest
// snapshot is the one retention deletes. So a block whose bytes a surviving snapshot still
// maps at the same offset moves its location there and keeps its id (and with it its place as
// keeper): first the same inode in the newest snapshots of the same lineage; then, for a file
// that lives on but was written in place since, the same inode in each older snapshot, newest
// first; for a file replaced since (an identical rewrite is a new inode) or deleted, any
// surviving indexed snapshot that references the extent (LOGICAL_INO). Only the rest is
// forgotten.
#pragma once

#include "index/block_index.h"
#include "plugin/dedupe/filesystem_queries.h"

#include <cstdint>

namespace snapdedupe {

struct ForgetOutcome {
    uint64_t snapshots = 0;        // snapshots forgotten
    uint64_t blocks_moved = 0;     // blocks now located in a surviving snapshot
    uint64_t blocks_forgotten = 0; // blocks no surviving snapshot of the lineage maps
};

// Forgets every indexed snapshot of the filesystem `fs` answers for whose subvolume is gone
// (deleted, being cleaned up, or its id reused by another subvolume), in one transaction.
// On the kernel (KernelQueries), needs CAP_SYS_ADMIN (subvolume lookups by id).
ForgetOutcome forget_deleted_snapshots(FilesystemQueries& fs, Database& db, BlockIndex& index);

} // namespace snapdedupe
