// Naming an inode without a path, and opening it that way: nothing on the way (a rename, a
// planted symlink, a subvolume mounted nowhere) can redirect the open.
#pragma once

#include "snapshots/kernel/labeled_fd.h"
#include "snapshots/kernel/unique_fd.h"

#include <cstdint>
#include <string>

namespace snapdedupe {

// A btrfs file handle: inode `inode` (generation `generation`) of subvolume `root`.
struct InodeHandle {
    uint64_t root = 0;
    uint64_t inode = 0;
    uint64_t generation = 0;
    bool operator<(const InodeHandle& o) const
    {
        return root != o.root ? root < o.root : inode != o.inode ? inode < o.inode : generation < o.generation;
    }
    bool operator==(const InodeHandle&) const = default;
};

// An open that may fail for reasons the caller decides about: the fd, or the errno of the
// failure, taken at the failing call (never read later, when it may be stale).
struct OpenResult {
    UniqueFd fd;
    int error = 0; // 0 when fd is valid
    explicit operator bool() const { return fd.valid(); }
};

// The handle of the inode open at `file`.
InodeHandle handle_of(const LabeledFd& file);

// Opens a regular file by handle, O_RDONLY|O_NOFOLLOW|O_NOATIME, through any fd on the
// filesystem. Errors: ESTALE (gone), EINVAL (not a regular file), EPERM (the process lacks
// CAP_DAC_READ_SEARCH, or a seccomp filter blocks open_by_handle_at).
OpenResult open_by_handle(const LabeledFd& filesystem, const InodeHandle& handle);

// Opens `path` below the directory `dir` with `flags` (O_CLOEXEC added) through
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no
// component may be a symlink, lead out of `dir`, or cross a mount.
OpenResult open_beneath(const LabeledFd& dir, const std::string& path, int flags);

// open_beneath with O_PATH | O_NOFOLLOW: nothing is opened for reading (no device side
// effects, no FIFO blocking). EINVAL when the result is not a regular file.
OpenResult open_regular_beneath(const LabeledFd& dir, const std::string& path);

} // namespace snapdedupe
