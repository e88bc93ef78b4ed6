#include "snapshots/kernel/subvolume.h"

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/file_handle.h"
#include "snapshots/kernel/tree_search.h"

#include <btrfsutil.h>
#include <fcntl.h>
#include <linux/btrfs_tree.h>
#include <sys/stat.h>

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
    s.opened = std::make_shared<const LabeledFd>(std::move(dir));
    return s;
}

LabeledFd open_root_dir(const Subvolume& s)
{
    if (s.opened) {
        UniqueFd fd(::fcntl(s.opened->get(), F_DUPFD_CLOEXEC, 0));
        if (!fd)
            throw SysError("duplicating the fd of", s.path, errno);
        return {std::move(fd), s.path};
    }
    if (!s.found_in)
        throw SysError("opening", s.path, EBADF);
    OpenResult opened = open_beneath(*s.found_in, s.path_in_dir, O_RDONLY | O_DIRECTORY);
    if (!opened)
        throw SysError("opening", s.path, opened.error);
    LabeledFd dir(std::move(opened.fd), s.path);
    struct stat st;
    check_sys(::fstat(dir.get(), &st), "stat", s.path);
    // Deleted and its name taken by another subvolume since discovery.
    if (st.st_ino != BTRFS_FIRST_FREE_OBJECTID || subvolume_id_of(dir) != s.root_id)
        throw SysError("opening (no longer the snapshot found there)", s.path, ESTALE);
    return dir;
}

std::vector<SubvolumeEntry> subvolume_entries(const LabeledFd& fd, uint64_t parent_root)
{
    TreeKeyRange range;
    range.tree = BTRFS_ROOT_TREE_OBJECTID;
    range.min_objectid = range.max_objectid = parent_root;
    range.min_type = range.max_type = BTRFS_ROOT_REF_KEY;
    std::vector<SubvolumeEntry> out;
    TreeSearch search(fd, range);
    for (TreeItem item; search.next(item);)
        if (std::optional<RootRef> ref = decode_root_ref(item))
            out.push_back({item.offset, ref->dir_inode, std::move(ref->name)});
    return out;
}

uint64_t subvolume_id_of(const LabeledFd& fd)
{
    uint64_t id = 0;
    btrfs_util_error err = btrfs_util_subvolume_id_fd(fd.get(), &id);
    const int sys_err = errno;
    if (err != BTRFS_UTIL_OK)
        throw SysError(std::string("reading the subvolume id (") + btrfs_util_strerror(err) + ") of", fd.label(), sys_err);
    return id;
}

std::optional<SubvolumeInfo> subvolume_info(const LabeledFd& filesystem, uint64_t root)
{
    return query(filesystem, root, "root " + std::to_string(root) + " of " + filesystem.label());
}

} // namespace snapdedupe
