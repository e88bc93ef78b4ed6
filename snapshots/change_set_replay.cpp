// ChangeSetBuilder::apply: a send stream's commands replayed on the model of the name tree
// (snapshots/change_set_model.h) the way `btrfs receive` would apply them to a filesystem,
// recording the changed byte ranges of regular files and, in a View::kDiff builder, the
// diff's view.
#include "snapshots/change_set_diff_view.h"
#include "snapshots/change_set_model.h"
#include "snapshots/change_set_ranges.h"

#include <string>

namespace snapdedupe {

namespace {

using change_set_model::DiffInfo;
using change_set_model::Inode;
using change_set_model::Kind;
using change_set_model::NameTree;
using send::Command;
using send::SendCommand;

constexpr uint64_t kFallocKeepSize = 0x01;  // FALLOC_FL_KEEP_SIZE from <linux/falloc.h>
constexpr uint64_t kFallocPunchHole = 0x02; // FALLOC_FL_PUNCH_HOLE from <linux/falloc.h>

template <typename T>
const T& require(const std::optional<T>& field, const char* attr, const SendCommand& cmd)
{
    if (!field)
        throw ChangeSetError(std::string(send::command_name(cmd.cmd)) + " lacks " + attr);
    return *field;
}

// MKFILE, MKDIR, MKNOD, MKFIFO, MKSOCK, SYMLINK.
void create_inode(NameTree& tree, const SendCommand& cmd, Kind kind)
{
    auto [dir, name] = tree.parent_of(require(cmd.path, "PATH", cmd));
    Inode& inode = tree.inodes.emplace_back();
    inode.kind = kind;
    change_set_model::note_created(tree.diff(inode), cmd.ino, kind);
    tree.link(inode, *dir, name);
}

void rename_entry(NameTree& tree, const SendCommand& cmd)
{
    auto [from_dir, from_name] = tree.parent_of(require(cmd.path, "PATH", cmd));
    Inode& inode = tree.child(*from_dir, from_name, *cmd.path);
    auto [to_dir, to_name] = tree.parent_of(require(cmd.path_to, "PATH_TO", cmd));
    if (from_dir == to_dir && from_name == to_name)
        return;
    tree.unlink(*from_dir, from_name);
    tree.link(inode, *to_dir, to_name);
}

void add_hard_link(NameTree& tree, const SendCommand& cmd)
{
    // PATH is the new name, PATH_LINK the existing one it should share an inode with.
    Inode& inode = tree.resolve(require(cmd.path_link, "PATH_LINK", cmd));
    auto [dir, name] = tree.parent_of(require(cmd.path, "PATH", cmd));
    tree.link(inode, *dir, name);
}

// UNLINK, RMDIR.
void remove_entry(NameTree& tree, const SendCommand& cmd)
{
    auto [dir, name] = tree.parent_of(require(cmd.path, "PATH", cmd));
    Inode& inode = tree.child(*dir, name, *cmd.path);
    if (cmd.cmd == Command::RMDIR && inode.kind == Kind::Unknown)
        inode.kind = Kind::Directory;
    tree.unlink(*dir, name);
}

// The inode a data command targets; null if it is not a regular file.
Inode* data_target(NameTree& tree, const SendCommand& cmd)
{
    Inode& inode = tree.resolve(require(cmd.path, "PATH", cmd));
    if (inode.kind == Kind::Unknown)
        inode.kind = Kind::Regular;
    return inode.kind == Kind::Regular ? &inode : nullptr;
}

// The bytes a data command puts in its file: FILE_OFFSET, then the length the command's
// kind carries. FILE_OFFSET is checked first, so a command lacking both names FILE_OFFSET.
ByteRange written_range(const SendCommand& cmd)
{
    const uint64_t offset = require(cmd.file_offset, "FILE_OFFSET", cmd);
    switch (cmd.cmd) {
    case Command::UPDATE_EXTENT: return {offset, require(cmd.size, "SIZE", cmd)};
    case Command::ENCODED_WRITE:
        return {offset, require(cmd.unencoded_file_len, "UNENCODED_FILE_LEN", cmd)};
    case Command::CLONE: return {offset, require(cmd.clone_len, "CLONE_LEN", cmd)};
    default: return {offset, cmd.data_len}; // WRITE
    }
}

// WRITE, UPDATE_EXTENT, ENCODED_WRITE, CLONE. A CLONE is listed although the range may
// already share extents: a later stage checks that cheaply, and the clone source may be
// another subvolume.
void write_data(NameTree& tree, const SendCommand& cmd)
{
    if (Inode* inode = data_target(tree, cmd)) {
        const ByteRange written = written_range(cmd);
        change_set_model::add_range(inode->ranges, written.offset, written.length);
        change_set_model::grow(inode->diff.get(), written.offset, written.length);
    }
}

void truncate_file(NameTree& tree, const SendCommand& cmd)
{
    if (Inode* inode = data_target(tree, cmd)) {
        uint64_t size = require(cmd.size, "SIZE", cmd);
        change_set_model::subtract_range(inode->ranges, size, UINT64_MAX - size);
        change_set_model::note_truncated(tree.diff(*inode), size);
    }
}

// Allocation adds no data worth deduping; a punched hole removes some.
void fallocate_file(NameTree& tree, const SendCommand& cmd)
{
    if (Inode* inode = data_target(tree, cmd)) {
        uint64_t mode = require(cmd.fallocate_mode, "FALLOCATE_MODE", cmd);
        if (mode & kFallocPunchHole)
            change_set_model::subtract_range(inode->ranges, require(cmd.file_offset, "FILE_OFFSET", cmd),
                                             require(cmd.size, "SIZE", cmd));
        else if (!(mode & kFallocKeepSize) && cmd.file_offset && cmd.size)
            // The size only: no new error for `run`.
            change_set_model::grow(inode->diff.get(), *cmd.file_offset, *cmd.size);
    }
}

// SET_XATTR, REMOVE_XATTR, CHMOD, CHOWN, UTIMES, FILEATTR, ENABLE_VERITY: metadata only;
// resolving still checks the stream is consistent.
void change_metadata(NameTree& tree, const SendCommand& cmd)
{
    DiffInfo* info = tree.diff(tree.resolve(require(cmd.path, "PATH", cmd)));
    change_set_model::note_metadata(info, cmd.cmd);
}

} // namespace

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
    case Command::MKFILE: create_inode(m, cmd, Kind::Regular); break;
    case Command::MKDIR: create_inode(m, cmd, Kind::Directory); break;
    case Command::MKNOD:
    case Command::MKFIFO:
    case Command::MKSOCK:
    case Command::SYMLINK: create_inode(m, cmd, Kind::Other); break;
    case Command::RENAME: rename_entry(m, cmd); break;
    case Command::LINK: add_hard_link(m, cmd); break;
    case Command::UNLINK:
    case Command::RMDIR: remove_entry(m, cmd); break;
    case Command::WRITE:
    case Command::UPDATE_EXTENT:
    case Command::ENCODED_WRITE:
    case Command::CLONE: write_data(m, cmd); break;
    case Command::TRUNCATE: truncate_file(m, cmd); break;
    case Command::FALLOCATE: fallocate_file(m, cmd); break;
    case Command::SET_XATTR:
    case Command::REMOVE_XATTR:
    case Command::CHMOD:
    case Command::CHOWN:
    case Command::UTIMES:
    case Command::FILEATTR:
    case Command::ENABLE_VERITY: change_metadata(m, cmd); break;
    case Command::END:
    case Command::UNSPEC:
        break;
    }
}

} // namespace snapdedupe
