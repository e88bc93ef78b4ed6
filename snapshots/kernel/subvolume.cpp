#include "snapshots/kernel/subvolume.h"

#include "snapshots/kernel/error.h"

#include <btrfsutil.h>
#include <linux/btrfs_tree.h>

#include <algorithm>
#include <cerrno>
#include <iterator>

namespace snapdedupe {

namespace {

// The one call of libbtrfsutil's subvolume info: its error enum becomes a SysError that
// names the library's reason and the subvolume.
std::optional<SubvolumeInfo> query(const LabeledFd& fd, uint64_t root, const std::string& subject)
{
    struct btrfs_util_subvolume_info raw;
    btrfs_util_error err = btrfs_util_subvolume_info_fd(fd.get(), root, &raw);
    const int sys_err = errno; // before building a message
    if (err == BTRFS_UTIL_ERROR_SUBVOLUME_NOT_FOUND)
        return std::nullopt;
    if (err != BTRFS_UTIL_OK)
        throw SysError(std::string("reading subvolume info (") + btrfs_util_strerror(err) + ") of", subject, sys_err);
    SubvolumeInfo info;
    info.root_id = raw.id;
    info.parent_id = raw.parent_id;
    std::copy(std::begin(raw.uuid), std::end(raw.uuid), info.uuid.begin());
    std::copy(std::begin(raw.parent_uuid), std::end(raw.parent_uuid), info.parent_uuid.begin());
    std::copy(std::begin(raw.received_uuid), std::end(raw.received_uuid), info.received_uuid.begin());
    info.otransid = raw.otransid;
    info.read_only = (raw.flags & BTRFS_ROOT_SUBVOL_RDONLY) != 0;
    return info;
}

} // namespace

Subvolume open_subvolume(LabeledFd dir)
{
    std::optional<SubvolumeInfo> info = query(dir, 0, dir.label());
    if (!info)
        throw SysError("reading subvolume info of", dir.label(), ENOENT);
    Subvolume s;
    static_cast<SubvolumeInfo&>(s) = *info;
    s.path = dir.label();
    s.dir = std::move(dir);
    return s;
}

std::optional<SubvolumeInfo> subvolume_info(const LabeledFd& filesystem, uint64_t root)
{
    return query(filesystem, root, "root " + std::to_string(root) + " of " + filesystem.label());
}

} // namespace snapdedupe
