// The change set of a snapshot against its predecessor: the public face of snapshots/.
#pragma once

#include "snapshots/change_set.h"
#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <optional>
#include <string>

namespace snapdedupe {

// Streams `btrfs send --no-data [-p parent]` of the read-only subvolume open at
// `snapshot` through the parser into a change set. Without a parent, the change set
// names every file (a full stream).
// `view` kDiff also fills the diff's view (truncated files, metadata, inode numbers), which
// the run neither needs nor pays for.
ChangeSet diff_snapshot(const LabeledFd& snapshot, std::optional<uint64_t> parent_root,
                        ChangeSetBuilder::View view = ChangeSetBuilder::View::kRun);

} // namespace snapdedupe
