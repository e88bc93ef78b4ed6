// Finding read-only snapshots under a path and grouping them into lineages.
//
// A lineage is a chain of snapshots that share data by descent: snapper's and btrbk's snapshots
// of one subvolume (same parent_uuid), or a chain of received snapshots (each one's parent_uuid
// is its local predecessor). Within a lineage, consecutive snapshots are cheap to diff.
#pragma once

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/labeled_fd.h"
#include "snapshots/kernel/subvolume.h"

#include <string>
#include <vector>

namespace snapdedupe {

// A read-only subvolume found under the user's PATH, its root directory open (`dir`): every
// later access (send, opening its files) goes through that fd, never through `path` again.
using Snapshot = Subvolume;

struct Lineage {
    std::string key;                 // uuid of the lineage's origin
    std::vector<Snapshot> snapshots; // oldest first
};

// `dir` (the user's PATH) is a read-only subvolume (that one snapshot), or a directory whose
// children are read-only subvolumes (btrbk: name.TIMESTAMP) or directories holding one
// (snapper: N/snapshot). Throws PathError when it is not on btrfs or holds no snapshot.
std::vector<Snapshot> find_snapshots(const LabeledFd& dir);

// Lineages of snapshots taken here come first, then received ones; each kind in the order of
// its origins' uuids.
std::vector<Lineage> group_lineages(std::vector<Snapshot> snapshots);

} // namespace snapdedupe
