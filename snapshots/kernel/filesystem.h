// One btrfs filesystem, owned by the run: an fd on a directory of it (ioctls that name a tree,
// and opens by file handle, go through it) and its uuid (which names its index and its lock).
#pragma once

#include "snapshots/kernel/labeled_fd.h"
#include "snapshots/kernel/space_info.h"

#include <string>
#include <utility>

namespace snapdedupe {

class Filesystem {
public:
    explicit Filesystem(LabeledFd dir) : dir_(std::move(dir)), uuid_(filesystem_uuid(dir_)) {}

    const LabeledFd& fd() const { return dir_; }
    const std::string& uuid() const { return uuid_; }
    const std::string& label() const { return dir_.label(); }

private:
    LabeledFd dir_;
    std::string uuid_;
};

} // namespace snapdedupe
