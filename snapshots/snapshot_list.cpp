#include "snapshots/snapshot_list.h"

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/mount_points.h"
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
#include <optional>
#include <set>
#include <utility>

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

// The subvolumes linked into the user's directory and into its subdirectories, as the root
// tree lists them, so that finding a directory's snapshots opens none of them: opening one
// reads its tree's root from disk, and a night's run visits one or two of the hundreds a
// backup directory holds.
class ListedSubvolumes {
public:
    // Nothing without CAP_SYS_ADMIN (the root tree is searched) or without the mount table:
    // every entry is then looked at the slow way.
    static std::optional<ListedSubvolumes> of(const LabeledFd& dir, ino_t dir_inode)
    {
        std::optional<std::set<std::string>> covered = names_with_mounts(dir);
        if (!covered)
            return std::nullopt;
        ListedSubvolumes listed;
        try {
            for (SubvolumeEntry& e : subvolume_entries(dir, subvolume_id_of(dir)))
                listed.ids_[{e.dir_inode, std::move(e.name)}] = e.root_id;
        } catch (const SysError& e) {
            if (e.err() == EPERM)
                return std::nullopt;
            throw;
        }
        listed.dir_inode_ = dir_inode;
        listed.covered_ = std::move(*covered);
        listed.found_in_ = std::make_shared<const LabeledFd>(duplicate(dir));
        return listed;
    }

    // A name the root tree cannot speak for: something is mounted on it or below it.
    bool covered(const std::string& name) const { return covered_.count(name) != 0; }

    // Adds the entry `name` (inode `inode`, as readdir says) when it is a read-only
    // subvolume, or a directory holding one named "snapshot" (snapper).
    void add(const std::string& name, ino_t inode, std::vector<Snapshot>& out) const
    {
        if (auto id = find(dir_inode_, name))
            add_unopened(*id, name, out);
        else if (auto id = find(inode, "snapshot"))
            add_unopened(*id, name + "/snapshot", out);
    }

private:
    std::optional<uint64_t> find(uint64_t dir_inode, const std::string& name) const
    {
        auto it = ids_.find({dir_inode, name});
        return it == ids_.end() ? std::nullopt : std::optional<uint64_t>(it->second);
    }

    void add_unopened(uint64_t root_id, const std::string& path_in_dir, std::vector<Snapshot>& out) const
    {
        std::optional<SubvolumeInfo> info = subvolume_info(*found_in_, root_id);
        if (!info || !info->read_only)
            return;
        Snapshot s;
        static_cast<SubvolumeInfo&>(s) = *info;
        s.path = join_path(found_in_->label(), path_in_dir);
        s.found_in = found_in_;
        s.path_in_dir = path_in_dir;
        out.push_back(std::move(s));
    }

    std::map<std::pair<uint64_t, std::string>, uint64_t> ids_; // (dir inode, name) -> root id
    uint64_t dir_inode_ = 0;
    std::set<std::string> covered_;
    std::shared_ptr<const LabeledFd> found_in_;
};

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
    const std::optional<ListedSubvolumes> listed = ListedSubvolumes::of(dir, st.st_ino);
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
        if (listed && !listed->covered(name)) {
            listed->add(name, e->d_ino, found);
            continue;
        }
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
