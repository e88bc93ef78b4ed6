#include "plugin/status.h"

#include "index/index_file.h"
#include "plugin/run.h"
#include "snapshots/kernel/error.h"
#include "snapshots/kernel/filesystem.h"
#include "snapshots/snapshot_list.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <set>

namespace snapdedupe {

namespace {

constexpr const char* kIndexSuffix = ".sqlite";

// One filesystem's PATHs and the snapshots found under them, as `run` finds them.
struct FoundSnapshots {
    std::vector<std::string> paths;
    std::vector<Snapshot> snapshots;
};

// Every PATH is checked (and its snapshots found) before any index is read.
std::map<std::string, FoundSnapshots> find_by_filesystem(const std::vector<std::string>& paths)
{
    std::map<std::string, FoundSnapshots> by_uuid;
    std::set<std::string> seen; // a snapshot named twice is counted once
    for (const std::string& path : paths) {
        LabeledFd dir = open_directory(path);
        std::vector<Snapshot> found = find_snapshots(dir);
        std::string uuid = filesystem_uuid(dir);
        FoundSnapshots& fs = by_uuid[uuid];
        fs.paths.push_back(path);
        for (Snapshot& s : found)
            if (seen.insert(uuid + uuid_to_string(s.uuid)).second)
                fs.snapshots.push_back(std::move(s));
    }
    return by_uuid;
}

// The index's side of the status; every field assigned, as read_index_readonly requires.
void read_status(Database& db, FilesystemStatus& status, std::vector<IndexedSnapshot>& indexed)
{
    indexed = indexed_snapshots(db);
    status.journal = journal_summary(db);
    status.runs = recent_runs(db, kStatusRecentRuns);
    status.totals = run_totals(db);
    if (status.uuid.empty())
        status.uuid = index_filesystem_uuid(db).value_or("");
}

// The lineages found, each with the index's snapshots of it, then the index's other lineages.
// An indexed snapshot belongs to the found lineage holding it, else to the one under whose key
// a run recorded it: a received chain's key is found by following parent uuids through the
// snapshots present (group_lineages), so it changes as retention deletes the oldest ones.
std::vector<LineageStatus> lineage_status(std::vector<Snapshot> found, const std::vector<IndexedSnapshot>& indexed)
{
    std::set<std::string> processed;
    for (const IndexedSnapshot& s : indexed)
        processed.insert(s.uuid);
    std::vector<LineageStatus> out;
    std::map<std::string, size_t> by_member, by_key;
    for (const Lineage& lineage : group_lineages(std::move(found))) {
        LineageStatus status{lineage.key, true, 0, std::nullopt, {}};
        for (const Snapshot& s : lineage.snapshots) {
            std::string uuid = uuid_to_string(s.uuid);
            by_member[uuid] = out.size();
            if (!processed.count(uuid))
                status.unprocessed.push_back(s.path);
        }
        by_key[lineage.key] = out.size();
        out.push_back(std::move(status));
    }
    for (const IndexedSnapshot& s : indexed) { // oldest first: the last one counted is the newest
        auto member = by_member.find(s.uuid);
        auto key = by_key.find(s.lineage);
        if (member == by_member.end() && key == by_key.end()) {
            by_key[s.lineage] = out.size();
            out.push_back({s.lineage, false, 0, std::nullopt, {}});
            key = by_key.find(s.lineage);
        }
        LineageStatus& lineage = out[member != by_member.end() ? member->second : key->second];
        ++lineage.processed;
        lineage.newest_processed = s;
    }
    return out;
}

// What `status` says of one index; `found`: the snapshots under the PATHs on its filesystem.
FilesystemStatus index_status(const std::string& index, const std::optional<std::string>& fs_uuid,
                              std::vector<std::string> paths, std::vector<Snapshot> found)
{
    FilesystemStatus status;
    status.uuid = fs_uuid.value_or("");
    status.paths = std::move(paths);
    status.index = index;
    std::vector<IndexedSnapshot> indexed;
    if (read_index_readonly(index, fs_uuid, [&](Database& db) { read_status(db, status, indexed); })) {
        struct stat st;
        check_sys(::stat(index.c_str(), &st), "looking at index", index);
        status.index_bytes = static_cast<uint64_t>(st.st_size);
    }
    status.lineages = lineage_status(std::move(found), indexed);
    return status;
}

// The default indexes, <uuid>.sqlite in /var/lib/snapdedupe, by name; none when it is missing.
std::vector<std::string> default_indexes()
{
    std::vector<std::string> names;
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(kDefaultIndexDir), ::closedir);
    if (!dir) {
        if (errno == ENOENT)
            return names;
        throw SysError("listing", kDefaultIndexDir, errno);
    }
    while (dirent* e = ::readdir(dir.get())) {
        std::string name = e->d_name;
        if (name.size() > std::string_view(kIndexSuffix).size() && name.ends_with(kIndexSuffix) &&
            e->d_type == DT_REG)
            names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
}

} // namespace

std::vector<FilesystemStatus> gather_status(const StatusOptions& options)
{
    std::vector<FilesystemStatus> out;
    if (options.paths.empty()) { // no filesystem at hand: each index says which it describes
        if (options.db_path) {
            out.push_back(index_status(*options.db_path, std::nullopt, {}, {}));
            return out;
        }
        for (const std::string& name : default_indexes())
            out.push_back(index_status(join_path(kDefaultIndexDir, name), std::nullopt, {}, {}));
        return out;
    }
    std::map<std::string, FoundSnapshots> found = find_by_filesystem(options.paths);
    if (found.size() > 1 && options.db_path)
        throw UsageError("--db names one index, but the paths are on " + std::to_string(found.size()) +
                         " filesystems");
    for (auto& [uuid, fs] : found) {
        std::string index = options.db_path.value_or(join_path(kDefaultIndexDir, uuid + kIndexSuffix));
        out.push_back(index_status(index, uuid, std::move(fs.paths), std::move(fs.snapshots)));
    }
    return out;
}

} // namespace snapdedupe
