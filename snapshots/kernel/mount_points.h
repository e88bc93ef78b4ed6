// Which entries of a directory have something mounted on them, or below them.
//
// Discovery reads a backup directory's subvolumes from the root tree instead of opening each
// one, and the root tree does not know about mounts: a name it lists may be covered by another
// filesystem mounted there. Those names (few, and usually none) are looked at the slow way.
#pragma once

#include "snapshots/kernel/labeled_fd.h"

#include <optional>
#include <set>
#include <string>

namespace snapdedupe {

// The names in `dir` at or beneath which this process's mount namespace has a mount point
// (/proc/self/mountinfo); nothing when the directory's path or the mount table cannot be read.
std::optional<std::set<std::string>> names_with_mounts(const LabeledFd& dir);

} // namespace snapdedupe
