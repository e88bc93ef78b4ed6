#include "snapshots/change_set.h"

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <stdexcept>

namespace snapdedupe {

namespace {

using send::Command;
using send::SendCommand;

constexpr uint64_t kFallocKeepSize = 0x01;  // FALLOC_FL_KEEP_SIZE from <linux/falloc.h>
constexpr uint64_t kFallocPunchHole = 0x02; // FALLOC_FL_PUNCH_HOLE from <linux/falloc.h>
// Sequential writes coalesce as they arrive; scattered ones are merged once this many
// pile up, so a huge stream of random writes to one file stays bounded.
constexpr std::size_t kRangesBeforeMerge = 4096;

enum class Kind { Unknown, Regular, Directory, Other };

struct Inode;

// What the diff's view (ChangeSet::truncated, metadata, inode_numbers) needs of an inode;
// `ranges` never depends on it.
struct DiffInfo {
    std::optional<uint64_t> ino;  // INO of the command that created it, if the stream made it
    std::optional<uint64_t> size; // regular files: known once created (empty) or truncated
    bool truncated = false;
    std::optional<uint64_t> size_before_truncate; // `size` when the first TRUNCATE came
    unsigned metadata = 0;                        // MetadataKind bits
};

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

void merge_ranges(std::vector<ByteRange>& ranges)
{
    std::sort(ranges.begin(), ranges.end(),
              [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
    std::vector<ByteRange> merged;
    for (const ByteRange& r : ranges) {
        if (r.length == 0)
            continue;
        if (!merged.empty() && r.offset <= merged.back().offset + merged.back().length) {
            uint64_t end = std::max(merged.back().offset + merged.back().length, r.offset + r.length);
            merged.back().length = end - merged.back().offset;
        } else {
            merged.push_back(r);
        }
    }
    ranges = std::move(merged);
}

void add_range(Inode& inode, uint64_t offset, uint64_t length)
{
    if (length == 0)
        return;
    auto& ranges = inode.ranges;
    if (!ranges.empty() && ranges.back().offset + ranges.back().length == offset) {
        ranges.back().length += length;
        return;
    }
    ranges.push_back({offset, length});
    if (ranges.size() >= kRangesBeforeMerge)
        merge_ranges(ranges);
}

// A data command reached offset + length: a known size grows to it (never shrinks).
void grow(DiffInfo* info, uint64_t offset, uint64_t length)
{
    if (!info || !info->size || length == 0)
        return;
    const uint64_t end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
    info->size = std::max(*info->size, end);
}

unsigned metadata_kind(Command c)
{
    switch (c) {
    case Command::CHMOD: return kMetadataMode;
    case Command::CHOWN: return kMetadataOwner;
    case Command::UTIMES: return kMetadataTimes;
    case Command::SET_XATTR:
    case Command::REMOVE_XATTR: return kMetadataXattr;
    case Command::FILEATTR: return kMetadataFileattr;
    case Command::ENABLE_VERITY: return kMetadataVerity;
    default: return 0;
    }
}

// Removes [offset, offset + length) from the ranges; length UINT64_MAX - offset clips.
void subtract_range(Inode& inode, uint64_t offset, uint64_t length)
{
    const uint64_t cut_end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
    std::vector<ByteRange> kept;
    for (const ByteRange& r : inode.ranges) {
        const uint64_t end = r.offset + r.length;
        if (end <= offset || r.offset >= cut_end) {
            kept.push_back(r);
            continue;
        }
        if (r.offset < offset)
            kept.push_back({r.offset, offset - r.offset});
        if (end > cut_end)
            kept.push_back({cut_end, end - cut_end});
    }
    inode.ranges = std::move(kept);
}

template <typename T>
const T& require(const std::optional<T>& field, const char* attr, const SendCommand& cmd)
{
    if (!field)
        throw ChangeSetError(std::string(send::command_name(cmd.cmd)) + " lacks " + attr);
    return *field;
}

} // namespace

struct ChangeSetBuilder::Model {
    std::deque<Inode> inodes; // deque: Inode* stays valid as it grows
    Inode* root;
    bool seen_subvolume = false;
    bool has_parent = true; // SUBVOL (full send) clears it: nothing can pre-exist then
    const bool diff_view;

    explicit Model(bool diff) : root(&inodes.emplace_back()), diff_view(diff)
    {
        root->existed = true;
        root->kind = Kind::Directory;
    }

    // The inode's DiffInfo, made on first use; null unless this builder keeps the diff's view.
    DiffInfo* diff(Inode& inode)
    {
        if (!diff_view)
            return nullptr;
        if (!inode.diff)
            inode.diff = std::make_unique<DiffInfo>();
        return inode.diff.get();
    }

    // Walks up first names to the root. A loop, not recursion, and bounded: a corrupt
    // stream can rename a directory into its own subtree (the kernel never does), and
    // the name tree then has a cycle that would otherwise recurse until the stack ends.
    std::string path_up(const Link& link, std::vector<Link> Inode::*names) const
    {
        std::vector<const std::string*> parts{&link.name};
        for (const Inode* dir = link.dir; dir != root && !(dir->*names).empty();
             dir = (dir->*names).front().dir) {
            if (parts.size() > inodes.size())
                throw ChangeSetError("makes a directory its own ancestor (at '" +
                                         link.name + "')");
            parts.push_back(&(dir->*names).front().name);
        }
        std::string path;
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
            if (!path.empty())
                path += '/';
            path += **it;
        }
        return path;
    }
    std::string path_of(const Link& link) const { return path_up(link, &Inode::links); }
    std::string original_path_of(const Link& link) const
    {
        return path_up(link, &Inode::original_links);
    }

    Inode& child(Inode& dir, const std::string& name, const std::string& full_path)
    {
        if (auto it = dir.children.find(name); it != dir.children.end())
            return *it->second;
        // Not seen yet: in an incremental stream it is an unchanged entry of the parent
        // snapshot, provided its directory came from the parent and never lost the name.
        if (!has_parent || !dir.existed || dir.touched.count(name) || dir.kind == Kind::Regular ||
            dir.kind == Kind::Other)
            throw ChangeSetError("refers to missing path '" + full_path + "'");
        dir.kind = Kind::Directory;
        Inode& found = inodes.emplace_back();
        found.existed = true;
        found.links.push_back({&dir, name});
        found.original_links.push_back({&dir, name});
        dir.children.emplace(name, &found);
        return found;
    }

    // Directory holding the last component of path, and that component.
    std::pair<Inode*, std::string> parent_of(const std::string& path)
    {
        Inode* dir = root;
        std::string component;
        std::size_t pos = 0;
        for (;;) {
            std::size_t slash = path.find('/', pos);
            std::string part = path.substr(pos, slash == std::string::npos ? slash : slash - pos);
            if (!part.empty()) {
                if (!component.empty())
                    dir = &child(*dir, component, path);
                component = std::move(part);
            }
            if (slash == std::string::npos)
                break;
            pos = slash + 1;
        }
        if (component.empty())
            throw ChangeSetError("names the subvolume root where an entry is needed");
        return {dir, component};
    }

    Inode& resolve(const std::string& path)
    {
        if (path.find_first_not_of('/') == std::string::npos)
            return *root;
        auto [dir, name] = parent_of(path);
        return child(*dir, name, path);
    }

    void unlink(Inode& dir, const std::string& name)
    {
        auto it = dir.children.find(name);
        if (it == dir.children.end())
            return;
        auto& links = it->second->links;
        links.erase(std::remove(links.begin(), links.end(), Link{&dir, name}), links.end());
        dir.children.erase(it);
        dir.touched.insert(name);
    }

    void link(Inode& inode, Inode& dir, const std::string& name)
    {
        unlink(dir, name); // rename(2) semantics: the target name is replaced
        dir.kind = Kind::Directory;
        dir.children[name] = &inode;
        dir.touched.insert(name);
        inode.links.push_back({&dir, name});
    }

    void create(const SendCommand& cmd, Kind kind)
    {
        auto [dir, name] = parent_of(require(cmd.path, "PATH", cmd));
        Inode& inode = inodes.emplace_back();
        inode.kind = kind;
        if (DiffInfo* info = diff(inode)) {
            info->ino = cmd.ino;
            if (kind == Kind::Regular)
                info->size = 0;
        }
        link(inode, *dir, name);
    }

    // The inode a data command targets; null if it is not a regular file.
    Inode* data_target(const SendCommand& cmd)
    {
        Inode& inode = resolve(require(cmd.path, "PATH", cmd));
        if (inode.kind == Kind::Unknown)
            inode.kind = Kind::Regular;
        return inode.kind == Kind::Regular ? &inode : nullptr;
    }
};

ChangeSetBuilder::ChangeSetBuilder(View view) : model_(std::make_unique<Model>(view == View::kDiff)) {}
ChangeSetBuilder::~ChangeSetBuilder() = default;

void ChangeSetBuilder::apply(const SendCommand& cmd)
{
    Model& m = *model_;
    switch (cmd.cmd) {
    case Command::SUBVOL:
    case Command::SNAPSHOT:
        // Their PATH is the subvolume's name, not a path inside it.
        if (m.seen_subvolume)
            throw ChangeSetError("holds a second subvolume; use one ChangeSetBuilder per subvolume");
        m.seen_subvolume = true;
        m.has_parent = cmd.cmd == Command::SNAPSHOT;
        break;
    case Command::MKFILE: m.create(cmd, Kind::Regular); break;
    case Command::MKDIR: m.create(cmd, Kind::Directory); break;
    case Command::MKNOD:
    case Command::MKFIFO:
    case Command::MKSOCK:
    case Command::SYMLINK: m.create(cmd, Kind::Other); break;
    case Command::RENAME: {
        auto [from_dir, from_name] = m.parent_of(require(cmd.path, "PATH", cmd));
        Inode& inode = m.child(*from_dir, from_name, *cmd.path);
        auto [to_dir, to_name] = m.parent_of(require(cmd.path_to, "PATH_TO", cmd));
        if (from_dir == to_dir && from_name == to_name)
            break;
        m.unlink(*from_dir, from_name);
        m.link(inode, *to_dir, to_name);
        break;
    }
    case Command::LINK: {
        // PATH is the new name, PATH_LINK the existing one it should share an inode with.
        Inode& inode = m.resolve(require(cmd.path_link, "PATH_LINK", cmd));
        auto [dir, name] = m.parent_of(require(cmd.path, "PATH", cmd));
        m.link(inode, *dir, name);
        break;
    }
    case Command::UNLINK:
    case Command::RMDIR: {
        auto [dir, name] = m.parent_of(require(cmd.path, "PATH", cmd));
        Inode& inode = m.child(*dir, name, *cmd.path);
        if (cmd.cmd == Command::RMDIR && inode.kind == Kind::Unknown)
            inode.kind = Kind::Directory;
        m.unlink(*dir, name);
        break;
    }
    case Command::WRITE:
        if (Inode* inode = m.data_target(cmd)) {
            uint64_t offset = require(cmd.file_offset, "FILE_OFFSET", cmd);
            add_range(*inode, offset, cmd.data_len);
            grow(inode->diff.get(), offset, cmd.data_len);
        }
        break;
    case Command::UPDATE_EXTENT:
        if (Inode* inode = m.data_target(cmd)) {
            uint64_t offset = require(cmd.file_offset, "FILE_OFFSET", cmd);
            uint64_t length = require(cmd.size, "SIZE", cmd);
            add_range(*inode, offset, length);
            grow(inode->diff.get(), offset, length);
        }
        break;
    case Command::ENCODED_WRITE:
        if (Inode* inode = m.data_target(cmd)) {
            uint64_t offset = require(cmd.file_offset, "FILE_OFFSET", cmd);
            uint64_t length = require(cmd.unencoded_file_len, "UNENCODED_FILE_LEN", cmd);
            add_range(*inode, offset, length);
            grow(inode->diff.get(), offset, length);
        }
        break;
    case Command::CLONE:
        // Listed although the range may already share extents: a later stage checks
        // that cheaply, and the clone source may be another subvolume.
        if (Inode* inode = m.data_target(cmd)) {
            uint64_t offset = require(cmd.file_offset, "FILE_OFFSET", cmd);
            uint64_t length = require(cmd.clone_len, "CLONE_LEN", cmd);
            add_range(*inode, offset, length);
            grow(inode->diff.get(), offset, length);
        }
        break;
    case Command::TRUNCATE:
        if (Inode* inode = m.data_target(cmd)) {
            uint64_t size = require(cmd.size, "SIZE", cmd);
            subtract_range(*inode, size, UINT64_MAX - size);
            if (DiffInfo* info = m.diff(*inode)) {
                if (!info->truncated) {
                    info->truncated = true;
                    info->size_before_truncate = info->size;
                }
                info->size = size;
            }
        }
        break;
    case Command::FALLOCATE:
        // Allocation adds no data worth deduping; a punched hole removes some.
        if (Inode* inode = m.data_target(cmd)) {
            uint64_t mode = require(cmd.fallocate_mode, "FALLOCATE_MODE", cmd);
            if (mode & kFallocPunchHole)
                subtract_range(*inode, require(cmd.file_offset, "FILE_OFFSET", cmd), require(cmd.size, "SIZE", cmd));
            else if (!(mode & kFallocKeepSize) && cmd.file_offset && cmd.size)
                grow(inode->diff.get(), *cmd.file_offset, *cmd.size); // the size only: no new error for `run`
        }
        break;
    case Command::SET_XATTR:
    case Command::REMOVE_XATTR:
    case Command::CHMOD:
    case Command::CHOWN:
    case Command::UTIMES:
    case Command::FILEATTR:
    case Command::ENABLE_VERITY:
        // Metadata only; resolving still checks the stream is consistent.
        if (DiffInfo* info = m.diff(m.resolve(require(cmd.path, "PATH", cmd))))
            info->metadata |= metadata_kind(cmd.cmd);
        break;
    case Command::END:
    case Command::UNSPEC:
        break;
    }
}

ChangeSet ChangeSetBuilder::finish()
{
    Model& m = *model_;
    ChangeSet out;
    for (Inode& inode : m.inodes) {
        if (&inode == m.root) {
            if (inode.diff && inode.diff->metadata)
                out.metadata.push_back({".", inode.diff->metadata, false});
            continue;
        }
        if (inode.kind == Kind::Regular && !inode.links.empty()) {
            merge_ranges(inode.ranges);
            if (!inode.ranges.empty()) {
                std::vector<std::string> names;
                for (const Link& l : inode.links)
                    names.push_back(m.path_of(l));
                out.files.push_back({*std::min_element(names.begin(), names.end()),
                                     inode.ranges, !inode.existed});
            }
        }
        // The diff's view, under the same name `files` uses.
        if (const DiffInfo* info = inode.diff.get(); info && !inode.links.empty()) {
            const bool truncated = inode.kind == Kind::Regular && info->truncated;
            std::vector<std::string> names;
            if (truncated || info->metadata || info->ino)
                for (const Link& l : inode.links)
                    names.push_back(m.path_of(l));
            if (!names.empty()) {
                const std::string& name = *std::min_element(names.begin(), names.end());
                if (truncated)
                    out.truncated.push_back({name, info->size_before_truncate, info->size.value_or(0),
                                             !inode.existed});
                if (info->metadata)
                    out.metadata.push_back({name, info->metadata, !inode.existed});
                if (info->ino)
                    for (const std::string& n : names)
                        out.inode_numbers[n] = *info->ino;
            }
        }
        // Names it lost and names it gained; pairs of them are renames.
        std::vector<const Link*> gone, gained;
        for (const Link& l : inode.original_links)
            if (std::find(inode.links.begin(), inode.links.end(), l) == inode.links.end())
                gone.push_back(&l);
        for (const Link& l : inode.links)
            if (std::find(inode.original_links.begin(), inode.original_links.end(), l) ==
                inode.original_links.end())
                gained.push_back(&l);
        std::size_t paired = std::min(gone.size(), gained.size());
        for (std::size_t i = 0; i < paired; ++i)
            out.renamed.emplace_back(m.original_path_of(*gone[i]), m.path_of(*gained[i]));
        for (std::size_t i = paired; i < gone.size(); ++i)
            out.removed.push_back(m.original_path_of(*gone[i]));
        for (std::size_t i = paired; i < gained.size(); ++i)
            out.added.push_back(m.path_of(*gained[i]));
    }
    std::sort(out.files.begin(), out.files.end(),
              [](const FileChange& a, const FileChange& b) { return a.path < b.path; });
    std::sort(out.truncated.begin(), out.truncated.end(),
              [](const TruncatedFile& a, const TruncatedFile& b) { return a.path < b.path; });
    std::sort(out.metadata.begin(), out.metadata.end(),
              [](const MetadataChange& a, const MetadataChange& b) { return a.path < b.path; });
    std::sort(out.added.begin(), out.added.end());
    std::sort(out.removed.begin(), out.removed.end());
    std::sort(out.renamed.begin(), out.renamed.end());
    return out;
}

std::string metadata_kind_names(unsigned kinds)
{
    static constexpr std::pair<unsigned, const char*> kNames[] = {
        {kMetadataMode, "mode"},         {kMetadataOwner, "owner"},       {kMetadataTimes, "times"},
        {kMetadataXattr, "xattr"},       {kMetadataFileattr, "fileattr"}, {kMetadataVerity, "verity"},
    };
    std::string out;
    for (const auto& [bit, name] : kNames)
        if (kinds & bit) {
            if (!out.empty())
                out += ',';
            out += name;
        }
    return out;
}

uint64_t ChangeSet::changed_bytes() const
{
    uint64_t total = 0;
    for (const FileChange& f : files)
        for (const ByteRange& r : f.ranges)
            total += r.length;
    return total;
}

} // namespace snapdedupe
