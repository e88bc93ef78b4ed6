#include "plugin/cli/json_quote.h"
#include "plugin/cli/diff_command.h"

#include "snapshots/kernel/btrfs_ioctl.h"
#include "snapshots/snapshot_diff.h"
#include "snapshots/snapshot_list.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ostream>

namespace snapdedupe {

namespace {

struct OpenSnapshot {
    UniqueFd fd;
    Snapshot info;
    std::string fs_uuid;
};

OpenSnapshot open_snapshot(const std::string& path)
{
    std::vector<Snapshot> found = find_snapshots(path); // checks existence and btrfs
    OpenSnapshot s;
    s.fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat st;
    if (!s.fd || ::fstat(s.fd.get(), &st) != 0 || st.st_ino != 256)
        throw PathError(path + ": not a subvolume");
    s.info = describe_subvolume(s.fd.get(), path);
    if (!s.info.read_only)
        throw PathError(path + ": not a read-only snapshot");
    s.fs_uuid = filesystem_uuid(s.fd.get(), path);
    return s;
}


void print_json(const ChangeSet& cs, std::ostream& out)
{
    out << "{\"changed\": [";
    for (size_t i = 0; i < cs.files.size(); ++i) {
        const FileChange& f = cs.files[i];
        out << (i ? ", " : "") << "{\"path\": " << json_quote(f.path) << ", \"created\": " << (f.created ? "true" : "false")
            << ", \"ranges\": [";
        for (size_t r = 0; r < f.ranges.size(); ++r)
            out << (r ? ", " : "") << "[" << f.ranges[r].offset << ", " << f.ranges[r].length << "]";
        out << "]}";
    }
    auto list = [&](const char* name, const std::vector<std::string>& paths) {
        out << "], \"" << name << "\": [";
        for (size_t i = 0; i < paths.size(); ++i)
            out << (i ? ", " : "") << json_quote(paths[i]);
    };
    list("added", cs.added);
    list("removed", cs.removed);
    out << "], \"renamed\": [";
    for (size_t i = 0; i < cs.renamed.size(); ++i)
        out << (i ? ", " : "") << "[" << json_quote(cs.renamed[i].first) << ", " << json_quote(cs.renamed[i].second) << "]";
    out << "], \"changed_bytes\": " << cs.changed_bytes() << "}\n";
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
    out << cs.files.size() << " files changed, " << cs.changed_bytes() << " bytes\n";
}

} // namespace

void diff_command(const std::string& old_path, const std::string& new_path, bool json, std::ostream& out)
{
    OpenSnapshot old_snap = open_snapshot(old_path);
    OpenSnapshot new_snap = open_snapshot(new_path);
    if (old_snap.fs_uuid != new_snap.fs_uuid)
        throw PathError(old_path + " and " + new_path + " are on different filesystems");
    ChangeSet cs = diff_snapshot(new_snap.fd.get(), new_path, old_snap.info.root_id);
    if (json)
        print_json(cs, out);
    else
        print_human(cs, out);
}

} // namespace snapdedupe
