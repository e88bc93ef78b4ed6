// Finding read-only snapshots under a path and grouping them into lineages.
//
// A lineage is a chain of snapshots that share data by descent: snapper's and btrbk's snapshots
// of one subvolume (same parent_uuid), or a chain of received snapshots (each one's parent_uuid
// is its local predecessor). Within a lineage, consecutive snapshots are cheap to diff.
#pragma once

#include "snapshots/kernel/uuid.h"

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace snapdedupe {

struct Snapshot {
    std::string path;    // as found under the user's PATH
    uint64_t root_id = 0;
    Uuid uuid{};
    Uuid parent_uuid{};
    Uuid received_uuid{};
    // Creation transaction. Snapshots are ordered by it, not by generation: a dedupe bumps a
    // snapshot's generation but never its otransid.
    uint64_t otransid = 0;
    bool read_only = false;
};

struct Lineage {
    std::string key;                 // uuid of the lineage's origin
    std::vector<Snapshot> snapshots; // oldest first
};

// The user named something that is not a usable snapshot source: missing, not btrfs, a
// writable subvolume, or a directory without read-only snapshots.
class PathError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// PATH is a read-only subvolume (that one snapshot), or a directory whose children are
// read-only subvolumes (btrbk: name.TIMESTAMP) or directories holding one (snapper: N/snapshot).
std::vector<Snapshot> find_snapshots(const std::string& path);

// Reads one subvolume's identity through an fd on its root directory.
Snapshot describe_subvolume(int subvol_fd, const std::string& path);

std::vector<Lineage> group_lineages(std::vector<Snapshot> snapshots);

} // namespace snapdedupe
