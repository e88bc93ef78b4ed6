#include "snapshots/snapshot_list.h"

#include "snapshots/kernel/sys_error.h"
#include "snapshots/kernel/unique_fd.h"

#include <btrfsutil.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

namespace snapdedupe {

namespace {

constexpr ino_t kSubvolumeRootIno = 256; // BTRFS_FIRST_FREE_OBJECTID: every subvolume's root dir

UniqueFd open_dir_at(int dirfd, const std::string& name)
{
    return UniqueFd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

bool is_subvolume_root(int dirfd, const std::string& name)
{
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return false;
    return S_ISDIR(st.st_mode) && st.st_ino == kSubvolumeRootIno;
}

std::string join(const std::string& dir, const std::string& name)
{
    return dir.ends_with('/') ? dir + name : dir + "/" + name;
}

// Adds `name` under `dir` when it is a read-only subvolume.
void add_if_snapshot(int dirfd, const std::string& dir, const std::string& name, std::vector<Snapshot>& out)
{
    if (!is_subvolume_root(dirfd, name))
        return;
    UniqueFd fd = open_dir_at(dirfd, name);
    if (!fd)
        return;
    Snapshot s = describe_subvolume(fd.get(), join(dir, name));
    if (s.read_only)
        out.push_back(std::move(s));
}

} // namespace

Snapshot describe_subvolume(int subvol_fd, const std::string& path)
{
    struct btrfs_util_subvolume_info info;
    btrfs_util_error err = btrfs_util_subvolume_info_fd(subvol_fd, 0, &info);
    if (err != BTRFS_UTIL_OK)
        throw SysError(std::string("reading subvolume info (") + btrfs_util_strerror(err) + ") of", path, errno);
    Snapshot s;
    s.path = path;
    s.root_id = info.id;
    std::copy(std::begin(info.uuid), std::end(info.uuid), s.uuid.begin());
    std::copy(std::begin(info.parent_uuid), std::end(info.parent_uuid), s.parent_uuid.begin());
    std::copy(std::begin(info.received_uuid), std::end(info.received_uuid), s.received_uuid.begin());
    s.otransid = info.otransid;
    s.read_only = (info.flags & BTRFS_ROOT_SUBVOL_RDONLY) != 0;
    return s;
}

std::vector<Snapshot> find_snapshots(const std::string& path)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOTDIR)
            throw PathError(path + ": not a directory or subvolume");
        throw PathError(path + ": " + std::strerror(errno));
    }
    struct statfs sfs;
    check_sys(::fstatfs(fd.get(), &sfs), "statfs", path);
    if (sfs.f_type != BTRFS_SUPER_MAGIC)
        throw PathError(path + ": not on a btrfs filesystem");

    struct stat st;
    check_sys(::fstat(fd.get(), &st), "stat", path);
    if (st.st_ino == kSubvolumeRootIno) {
        Snapshot self = describe_subvolume(fd.get(), path);
        if (self.read_only)
            return {self};
    }

    // A directory of snapshots. Symlinks are never followed: every step is an openat from the
    // directory fd with O_NOFOLLOW, so a planted link cannot send us elsewhere.
    std::vector<Snapshot> found;
    UniqueFd list_fd(::dup(fd.get()));
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(list_fd.get()), ::closedir);
    if (!dir)
        throw SysError("listing", path, errno);
    list_fd.release();
    while (dirent* e = ::readdir(dir.get())) {
        std::string name = e->d_name;
        if (name == "." || name == ".." || e->d_type != DT_DIR)
            continue;
        if (is_subvolume_root(fd.get(), name)) {
            add_if_snapshot(fd.get(), path, name, found);
            continue;
        }
        // snapper: .snapshots/N/snapshot
        UniqueFd sub = open_dir_at(fd.get(), name);
        if (sub)
            add_if_snapshot(sub.get(), join(path, name), "snapshot", found);
    }
    if (found.empty()) {
        if (st.st_ino == kSubvolumeRootIno)
            throw PathError(path + ": a writable subvolume, not a read-only snapshot, and holds no read-only snapshots");
        throw PathError(path + ": no read-only snapshots found");
    }
    std::sort(found.begin(), found.end(), [](const Snapshot& a, const Snapshot& b) { return a.otransid < b.otransid; });
    return found;
}

std::vector<Lineage> group_lineages(std::vector<Snapshot> snapshots)
{
    std::map<Uuid, const Snapshot*> by_uuid;
    for (const Snapshot& s : snapshots)
        by_uuid[s.uuid] = &s;

    // Walk parent_uuid links while they stay inside the set: a received chain collapses onto
    // its first snapshot, snapper's siblings onto the live subvolume they were taken from.
    auto origin = [&](const Snapshot& s) {
        const Snapshot* cur = &s;
        for (size_t hops = 0; hops < snapshots.size(); ++hops) {
            if (uuid_is_null(cur->parent_uuid))
                return cur->uuid;
            auto it = by_uuid.find(cur->parent_uuid);
            if (it == by_uuid.end())
                return cur->parent_uuid;
            cur = it->second;
        }
        return cur->uuid;
    };

    std::map<Uuid, Lineage> lineages;
    for (const Snapshot& s : snapshots) {
        Uuid key = origin(s);
        Lineage& l = lineages[key];
        l.key = uuid_to_string(key);
        l.snapshots.push_back(s);
    }
    std::vector<Lineage> out;
    for (auto& [key, l] : lineages) {
        std::sort(l.snapshots.begin(), l.snapshots.end(),
                  [](const Snapshot& a, const Snapshot& b) { return a.otransid < b.otransid; });
        out.push_back(std::move(l));
    }
    return out;
}

} // namespace snapdedupe
