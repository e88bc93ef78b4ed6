#include "plugin/cli/json_quote.h"
#include "plugin/cli/diff_command.h"

#include "snapshots/change_set.h"
#include "snapshots/kernel/space_info.h"
#include "snapshots/snapshot_diff.h"
#include "snapshots/snapshot_list.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ostream>

namespace snapdedupe {

namespace {

// OLD or NEW: a read-only subvolume itself, not a directory of them.
Snapshot open_snapshot(const std::string& path)
{
    LabeledFd dir = open_directory(path);
    std::vector<Snapshot> found = find_snapshots(dir); // checks btrfs and read-only
    if (found.size() != 1 || found.front().path != path)
        throw PathError(path + ": not a read-only snapshot");
    return std::move(found.front());
}

// The stream's inode number for a final path, as JSON: null where the stream does not state it.
std::string json_ino(const ChangeSet& cs, const std::string& path)
{
    auto it = cs.inode_numbers.find(path);
    return it == cs.inode_numbers.end() ? "null" : std::to_string(it->second);
}

// `"kinds": ["mode", "times"]`
std::string json_kinds(unsigned kinds)
{
    std::string names = metadata_kind_names(kinds), out = "\"kinds\": [";
    for (std::size_t pos = 0, i = 0; pos < names.size(); ++i) {
        std::size_t comma = std::min(names.find(',', pos), names.size());
        out += (i ? ", \"" : "\"") + names.substr(pos, comma - pos) + "\"";
        pos = comma + 1;
    }
    return out + "]";
}

void print_json(const ChangeSet& cs, std::ostream& out)
{
    out << "{\"changed\": [";
    for (size_t i = 0; i < cs.files.size(); ++i) {
        const FileChange& f = cs.files[i];
        out << (i ? ", " : "") << "{" << json_bytes_member("path", f.path) << ", \"created\": " << (f.created ? "true" : "false")
            << ", \"ranges\": [";
        for (size_t r = 0; r < f.ranges.size(); ++r)
            out << (r ? ", " : "") << "[" << f.ranges[r].offset << ", " << f.ranges[r].length << "]";
        out << "], \"ino\": " << json_ino(cs, f.path) << "}";
    }
    out << "], " << json_bytes_list_member("added", cs.added) << ", " << json_bytes_list_member("removed", cs.removed)
        << ", " << json_bytes_pairs_member("renamed", cs.renamed) << ", \"changed_bytes\": " << cs.changed_bytes();
    out << ", \"truncated\": [";
    for (size_t i = 0; i < cs.truncated.size(); ++i) {
        const TruncatedFile& t = cs.truncated[i];
        out << (i ? ", " : "") << "{" << json_bytes_member("path", t.path) << ", \"ino\": " << json_ino(cs, t.path)
            << ", \"created\": " << (t.created ? "true" : "false") << ", \"old_size\": "
            << (t.old_size ? std::to_string(*t.old_size) : "null") << ", \"new_size\": " << t.new_size << "}";
    }
    out << "], \"metadata\": [";
    for (size_t i = 0; i < cs.metadata.size(); ++i) {
        const MetadataChange& m = cs.metadata[i];
        out << (i ? ", " : "") << "{" << json_bytes_member("path", m.path) << ", \"ino\": " << json_ino(cs, m.path)
            << ", \"created\": " << (m.created ? "true" : "false") << ", " << json_kinds(m.kinds) << "}";
    }
    out << "]}\n";
}

void print_human(const ChangeSet& cs, std::ostream& out)
{
    for (const std::string& p : cs.added)
        out << "added    " << p << "\n";
    for (const std::string& p : cs.removed)
        out << "removed  " << p << "\n";
    for (const auto& [from, to] : cs.renamed)
        out << "renamed  " << from << " -> " << to << "\n";
    for (const FileChange& f : cs.files) {
        out << "changed  " << f.path;
        for (const ByteRange& r : f.ranges)
            out << " [" << r.offset << "+" << r.length << "]";
        out << "\n";
    }
    for (const TruncatedFile& t : cs.truncated)
        out << "truncated " << t.path << " " << (t.old_size ? std::to_string(*t.old_size) : "unknown") << " -> "
            << t.new_size << "\n";
    for (const MetadataChange& m : cs.metadata)
        out << "metadata  " << m.path << " " << metadata_kind_names(m.kinds) << "\n";
    out << cs.files.size() << " files changed, " << cs.changed_bytes() << " bytes\n";
}

} // namespace

void diff_command(const std::string& old_path, const std::string& new_path, bool json, std::ostream& out)
{
    Snapshot old_snap = open_snapshot(old_path);
    Snapshot new_snap = open_snapshot(new_path);
    const LabeledFd new_dir = open_root_dir(new_snap);
    if (filesystem_uuid(open_root_dir(old_snap)) != filesystem_uuid(new_dir))
        throw PathError(old_path + " and " + new_path + " are on different filesystems");
    ChangeSet cs = diff_snapshot(new_dir, old_snap.root_id, ChangeSetBuilder::View::kDiff);
    if (json)
        print_json(cs, out);
    else
        print_human(cs, out);
}

} // namespace snapdedupe
