// The model of the name tree that ChangeSetBuilder (snapshots/change_set.h) replays a send
// stream on: inodes, their names, and how a path finds an inode or is rebuilt from one.
// Private to the builder's files, one idea each:
//   change_set_name_tree.cpp  this model: resolving paths, linking, rebuilding paths
//   change_set_replay.cpp     the stream's commands applied to it (ChangeSetBuilder::apply)
//   change_set_ranges.cpp     the changed byte ranges of a file
//   change_set_diff_view.cpp  the diff's view: what DiffInfo records and how it is listed
//   change_set.cpp            the ChangeSet read off the model (ChangeSetBuilder::finish)
#pragma once

#include "snapshots/change_set.h"

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

// Named, not anonymous, because the files above share these types; the namespace keeps
// their short names (Inode, Link, Kind) from meeting others of the library.
namespace snapdedupe::change_set_model {

enum class Kind { Unknown, Regular, Directory, Other };

// What the diff's view (ChangeSet::truncated, metadata, inode_numbers) needs of an inode;
// `ranges` never depends on it.
struct DiffInfo {
    std::optional<uint64_t> ino;  // INO of the command that created it, if the stream made it
    std::optional<uint64_t> size; // regular files: known once created (empty) or truncated
    bool truncated = false;
    std::optional<uint64_t> size_before_truncate; // `size` when the first TRUNCATE came
    unsigned metadata = 0;                        // MetadataKind bits
};

struct Inode;

// One name of an inode: an entry `name` in directory `dir`.
struct Link {
    Inode* dir = nullptr;
    std::string name;
    bool operator==(const Link&) const = default;
};

struct Inode {
    bool existed = false; // present in the parent snapshot
    Kind kind = Kind::Unknown;
    std::vector<Link> links;          // current names
    std::vector<Link> original_links; // names it had in the parent (those the stream showed)
    std::vector<ByteRange> ranges;
    std::unique_ptr<DiffInfo> diff; // only in a View::kDiff builder, once a command needs it

    // Directories only. `touched` remembers every name that was ever linked or unlinked
    // here: an unknown name that was touched is gone, not an unseen parent entry.
    std::map<std::string, Inode*> children;
    std::set<std::string> touched;
};

// Every inode the stream mentioned, from the subvolume root down. Paths of the parent
// snapshot are materialized lazily, since an incremental stream only names what changed.
struct NameTree {
    std::deque<Inode> inodes; // deque: Inode* stays valid as it grows
    Inode* root;
    bool has_parent = true; // SUBVOL (full send) clears it: nothing can pre-exist then
    const bool diff_view;   // keep DiffInfo (a View::kDiff builder)

    explicit NameTree(bool diff_view);

    // The inode's DiffInfo, made on first use; null unless this builder keeps the diff's
    // view. Defined with the rest of that view, in change_set_diff_view.cpp.
    DiffInfo* diff(Inode& inode);

    // Current path of a name, and the path it had in the parent snapshot. Both throw
    // ChangeSetError if a corrupt stream made a directory its own ancestor.
    std::string path_of(const Link& link) const;
    std::string original_path_of(const Link& link) const;
    // path_of every current name of the inode, in the order they were linked.
    std::vector<std::string> paths_of(const Inode& inode) const;

    // Entry `name` of dir, materialized from the parent snapshot if the stream has not
    // shown it yet; full_path is the path to name in the error if there is no such entry.
    Inode& child(Inode& dir, const std::string& name, const std::string& full_path);
    // Directory holding the last component of path, and that component.
    std::pair<Inode*, std::string> parent_of(const std::string& path);
    Inode& resolve(const std::string& path);

    void unlink(Inode& dir, const std::string& name);
    void link(Inode& inode, Inode& dir, const std::string& name);

private:
    std::string path_up(const Link& link, std::vector<Link> Inode::*names) const;
};

} // namespace snapdedupe::change_set_model

namespace snapdedupe {

// The builder's state behind its public header: the name tree, and whether the stream's
// subvolume command came yet.
struct ChangeSetBuilder::Model : change_set_model::NameTree {
    using NameTree::NameTree;
    bool seen_subvolume = false;
};

} // namespace snapdedupe
