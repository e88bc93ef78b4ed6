// Subvolumes: what libbtrfsutil says of one, the subvolumes a directory holds (read from the
// root tree, without opening them), and one found by discovery with the way to its root
// directory.
#pragma once

#include "snapshots/kernel/labeled_fd.h"
#include "snapshots/kernel/uuid.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace snapdedupe {

struct SubvolumeInfo {
    uint64_t root_id = 0;
    uint64_t parent_id = 0; // the subvolume it sits in; 0 once it is deleted
    Uuid uuid{};
    Uuid parent_uuid{};
    Uuid received_uuid{};
    // Creation transaction. Snapshots are ordered by it, not by generation: a dedupe bumps a
    // snapshot's generation but never its otransid.
    uint64_t otransid = 0;
    bool read_only = false;
};

// A subvolume and the way to its root directory. `path` is where it was found and only names
// it in messages and reports. Discovery opens a subvolume only when it must look at it to
// know what it is; opening one loads its tree's root from disk, and a backup directory with
// a thousand snapshots would pay a thousand reads for the one or two a night's run visits.
struct Subvolume : SubvolumeInfo {
    std::string path;
    // Open since discovery (shared by the copies of this object), or empty: then
    // `path_in_dir` (a name, or snapper's "N/snapshot") beneath the directory `found_in`.
    std::shared_ptr<const LabeledFd> opened;
    std::shared_ptr<const LabeledFd> found_in;
    std::string path_in_dir;
};

// The subvolume whose root directory `dir` is; `dir` moves into it.
Subvolume open_subvolume(LabeledFd dir);

// An fd of its own on `s`'s root directory, labeled with its path. Opened beneath the
// directory it was found in, never through a symlink or a mount (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV), and only when what is there now is still subvolume
// `s.root_id`. Throws SysError: ENOENT once it is deleted, EXDEV when something is mounted on
// the way, ESTALE when the name now holds another subvolume.
LabeledFd open_root_dir(const Subvolume& s);

// A subvolume linked into a directory of another subvolume (a ROOT_REF item): its id, the
// inode of that directory, and its name there.
struct SubvolumeEntry {
    uint64_t root_id = 0;
    uint64_t dir_inode = 0;
    std::string name;
};

// The subvolumes linked into subvolume `parent_root`'s directories, read from the root tree
// of the filesystem `fd` is on: nothing is opened. Needs CAP_SYS_ADMIN (EPERM without).
std::vector<SubvolumeEntry> subvolume_entries(const LabeledFd& fd, uint64_t parent_root);

// The id of the subvolume `fd` is in.
uint64_t subvolume_id_of(const LabeledFd& fd);

// Subvolume `root` of the filesystem `filesystem` is on, or nothing when there is none.
// Needs CAP_SYS_ADMIN.
std::optional<SubvolumeInfo> subvolume_info(const LabeledFd& filesystem, uint64_t root);

} // namespace snapdedupe
