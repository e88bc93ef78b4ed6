// ChangeSetBuilder::finish: the ChangeSet read off the model of the name tree once the
// stream's commands are replayed (snapshots/change_set_replay.cpp).
#include "snapshots/change_set.h"

#include "snapshots/change_set_diff_view.h"
#include "snapshots/change_set_model.h"
#include "snapshots/change_set_ranges.h"

#include <algorithm>

namespace snapdedupe {

namespace {

using change_set_model::Inode;
using change_set_model::Kind;
using change_set_model::Link;
using change_set_model::NameTree;

// A regular file that still has a name and has data ranges: its entry in `files`, under
// its smallest name if it has several.
void list_file_change(ChangeSet& out, const NameTree& tree, Inode& inode)
{
    if (inode.kind != Kind::Regular || inode.links.empty())
        return;
    change_set_model::merge_ranges(inode.ranges);
    if (inode.ranges.empty())
        return;
    const std::vector<std::string> names = tree.paths_of(inode);
    out.files.push_back({*std::min_element(names.begin(), names.end()), inode.ranges, !inode.existed});
}

// Names it lost and names it gained; pairs of them are renames.
void list_name_changes(ChangeSet& out, const NameTree& tree, const Inode& inode)
{
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
        out.renamed.emplace_back(tree.original_path_of(*gone[i]), tree.path_of(*gained[i]));
    for (std::size_t i = paired; i < gone.size(); ++i)
        out.removed.push_back(tree.original_path_of(*gone[i]));
    for (std::size_t i = paired; i < gained.size(); ++i)
        out.added.push_back(tree.path_of(*gained[i]));
}

void sort_lists(ChangeSet& out)
{
    std::sort(out.files.begin(), out.files.end(),
              [](const FileChange& a, const FileChange& b) { return a.path < b.path; });
    std::sort(out.truncated.begin(), out.truncated.end(),
              [](const TruncatedFile& a, const TruncatedFile& b) { return a.path < b.path; });
    std::sort(out.metadata.begin(), out.metadata.end(),
              [](const MetadataChange& a, const MetadataChange& b) { return a.path < b.path; });
    std::sort(out.added.begin(), out.added.end());
    std::sort(out.removed.begin(), out.removed.end());
    std::sort(out.renamed.begin(), out.renamed.end());
}

} // namespace

ChangeSet ChangeSetBuilder::finish()
{
    Model& m = *model_;
    ChangeSet out;
    // One pass, each inode's entries together: a corrupt stream's name cycle then fails at
    // the same inode, with the same message, whichever list reaches it.
    for (Inode& inode : m.inodes) {
        if (&inode == m.root) {
            change_set_model::list_root_diff(out, inode);
            continue;
        }
        list_file_change(out, m, inode);
        change_set_model::list_diff(out, m, inode); // under the same name `files` uses
        list_name_changes(out, m, inode);
    }
    sort_lists(out);
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
