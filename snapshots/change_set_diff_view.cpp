// The diff's view of a change set (snapshots/change_set_diff_view.h): the DiffInfo a
// View::kDiff builder keeps per inode, and the truncated files, metadata changes and inode
// numbers `snapdedupe diff` lists from it. `run` never pays for any of this.
#include "snapshots/change_set_diff_view.h"

#include <algorithm>
#include <utility>

namespace snapdedupe::change_set_model {

namespace {

using send::Command;

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

} // namespace

DiffInfo* NameTree::diff(Inode& inode)
{
    if (!diff_view)
        return nullptr;
    if (!inode.diff)
        inode.diff = std::make_unique<DiffInfo>();
    return inode.diff.get();
}

void note_created(DiffInfo* info, std::optional<uint64_t> ino, Kind kind)
{
    if (!info)
        return;
    info->ino = ino;
    if (kind == Kind::Regular)
        info->size = 0;
}

void grow(DiffInfo* info, uint64_t offset, uint64_t length)
{
    if (!info || !info->size || length == 0)
        return;
    const uint64_t end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
    info->size = std::max(*info->size, end);
}

void note_truncated(DiffInfo* info, uint64_t size)
{
    if (!info)
        return;
    if (!info->truncated) {
        info->truncated = true;
        info->size_before_truncate = info->size;
    }
    info->size = size;
}

void note_metadata(DiffInfo* info, Command command)
{
    if (info)
        info->metadata |= metadata_kind(command);
}

void list_root_diff(ChangeSet& out, const Inode& root)
{
    if (root.diff && root.diff->metadata)
        out.metadata.push_back({".", root.diff->metadata, false});
}

void list_diff(ChangeSet& out, const NameTree& tree, const Inode& inode)
{
    const DiffInfo* info = inode.diff.get();
    if (!info || inode.links.empty())
        return;
    const bool truncated = inode.kind == Kind::Regular && info->truncated;
    if (!truncated && !info->metadata && !info->ino)
        return; // nothing to list: do not rebuild its paths
    const std::vector<std::string> names = tree.paths_of(inode);
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

} // namespace snapdedupe::change_set_model

namespace snapdedupe {

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

} // namespace snapdedupe
