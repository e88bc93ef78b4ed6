// The change set of a snapshot against its predecessor: the public face of snapshots/.
#pragma once

#include "snapshots/change_set.h"

#include <cstdint>
#include <optional>
#include <string>

namespace snapdedupe {

// Streams `btrfs send --no-data [-p parent]` of the read-only subvolume open at
// `snapshot_fd` through the parser into a change set. Without a parent, the change set
// names every file (a full stream).
ChangeSet diff_snapshot(int snapshot_fd, const std::string& name, std::optional<uint64_t> parent_root);

} // namespace snapdedupe
