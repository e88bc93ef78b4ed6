#include "snapshots/snapshot_list.h"

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/space_info.h"
#include "snapshots/kernel/unique_fd.h"

#include <btrfsutil.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <iostream>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

namespace snapdedupe {

namespace {

constexpr ino_t kSubvolumeRootIno = 256; // BTRFS_FIRST_FREE_OBJECTID: every subvolume's root dir

bool is_subvolume_root(const LabeledFd& dir, const std::string& name)
{
    struct stat st;
    if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        return false;
    return S_ISDIR(st.st_mode) && st.st_ino == kSubvolumeRootIno;
}

// Adds `name` under `dir` when it is a read-only subvolume of the filesystem `fs_uuid`. One
// of another filesystem mounted there is skipped with a note: its root ids and disk
// addresses mean nothing in this filesystem's index.
void add_if_snapshot(const LabeledFd& dir, const std::string& name, const std::string& fs_uuid,
                     std::vector<Snapshot>& out)
{
    if (!is_subvolume_root(dir, name))
        return;
    LabeledFd fd = open_directory_at(dir, name);
    if (!fd)
        return;
    if (filesystem_uuid(fd) != fs_uuid) {
        std::cerr << "snapdedupe: skipping " << fd.label() << ": another filesystem is mounted there\n";
        return;
    }
    Snapshot s = open_subvolume(std::move(fd));
    if (s.read_only)
        out.push_back(std::move(s));
}

// A copy of `dir` for the caller to keep: discovery hands out fds it owns.
LabeledFd duplicate(const LabeledFd& dir)
{
    UniqueFd fd(::fcntl(dir.get(), F_DUPFD_CLOEXEC, 0));
    if (!fd)
        throw SysError("duplicating the fd of", dir.label(), errno);
    return {std::move(fd), dir.label()};
}

} // namespace

std::vector<Snapshot> find_snapshots(const LabeledFd& dir)
{
    const std::string& path = dir.label();
    struct statfs sfs;
    check_sys(::fstatfs(dir.get(), &sfs), "statfs", path);
    if (sfs.f_type != BTRFS_SUPER_MAGIC)
        throw PathError(path + ": not on a btrfs filesystem");

    struct stat st;
    check_sys(::fstat(dir.get(), &st), "stat", path);
    if (st.st_ino == kSubvolumeRootIno) {
        Snapshot self = open_subvolume(duplicate(dir));
        if (self.read_only) {
            std::vector<Snapshot> one;
            one.push_back(std::move(self));
            return one;
        }
    }

    const std::string fs_uuid = filesystem_uuid(dir);
    // A directory of snapshots. Symlinks are never followed: every step is an openat from the
    // directory fd with O_NOFOLLOW, so a planted link cannot send us elsewhere.
    std::vector<Snapshot> found;
    UniqueFd list_fd(::fcntl(dir.get(), F_DUPFD_CLOEXEC, 0));
    std::unique_ptr<DIR, int (*)(DIR*)> listing(list_fd ? ::fdopendir(list_fd.get()) : nullptr, ::closedir);
    if (!listing)
        throw SysError("listing", path, errno);
    list_fd.release(); // the DIR owns it now
    while (dirent* e = ::readdir(listing.get())) {
        std::string name = e->d_name;
        if (name == "." || name == ".." || e->d_type != DT_DIR)
            continue;
        if (is_subvolume_root(dir, name)) {
            add_if_snapshot(dir, name, fs_uuid, found);
            continue;
        }
        // snapper: .snapshots/N/snapshot
        LabeledFd sub = open_directory_at(dir, name);
        if (sub)
            add_if_snapshot(sub, "snapshot", fs_uuid, found);
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

    // Keys first: the snapshots move into their lineages below.
    std::vector<Uuid> keys;
    for (const Snapshot& s : snapshots)
        keys.push_back(origin(s));
    std::map<Uuid, Lineage> lineages;
    for (size_t i = 0; i < snapshots.size(); ++i) {
        Lineage& l = lineages[keys[i]];
        l.key = uuid_to_string(keys[i]);
        l.snapshots.push_back(std::move(snapshots[i]));
    }
    std::vector<Lineage> out;
    for (auto& [key, l] : lineages) {
        std::sort(l.snapshots.begin(), l.snapshots.end(),
                  [](const Snapshot& a, const Snapshot& b) { return a.otransid < b.otransid; });
        out.push_back(std::move(l));
    }
    // Snapshots taken here before received ones. The lineage that goes first has its copies
    // indexed first, and the oldest indexed copy is the keeper. A local snapshot shares its
    // extents with the live subvolume it was taken from, so keeping its copies leaves the
    // live subvolume's references where they are; keeping a received copy would move them
    // too, and rewrite the live subvolume's metadata (packaging/demo.sh: 96,228 references
    // moved and 21 MiB of metadata growth one way, 104,412 and 27 MiB the other).
    auto received = [](const Lineage& l) { return !uuid_is_null(l.snapshots.front().received_uuid); };
    std::stable_sort(out.begin(), out.end(),
                     [&](const Lineage& a, const Lineage& b) { return !received(a) && received(b); });
    return out;
}

} // namespace snapdedupe
