#include "plugin/run.h"

#include "index/block_index.h"
#include "plugin/upkeep/maintenance_lock.h"
#include "plugin/upkeep/snapshot_forgetter.h"
#include "plugin/dedupe/snapshot_pass.h"
#include "snapshots/snapshot_list.h"
#include "snapshots/kernel/sys_error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <map>
#include <optional>
#include <set>

namespace snapdedupe {

namespace {

struct Filesystem {
    std::string uuid;
    std::string first_path;
    LabeledFd fd; // any directory on it: ioctls and open-by-handle go through this
    std::vector<Snapshot> snapshots;
};

// The filesystem `path` is on, registered in `by_uuid` on first sight.
Filesystem& filesystem_of(const std::string& path, std::map<std::string, Filesystem>& by_uuid)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd)
        throw PathError(path + ": " + std::strerror(errno));
    std::string uuid = filesystem_uuid(fd.get(), path);
    Filesystem& fs = by_uuid[uuid];
    if (!fs.fd) {
        fs.uuid = uuid;
        fs.first_path = path;
        fs.fd = LabeledFd(std::move(fd), path);
    }
    return fs;
}

// `forget_on`: paths on filesystems to visit only to forget deleted snapshots.
std::vector<Filesystem> collect_sources(const std::vector<std::string>& paths, const std::vector<std::string>& forget_on)
{
    std::map<std::string, Filesystem> by_uuid;
    std::set<std::string> seen; // a snapshot named twice is processed once
    for (const std::string& path : paths) {
        std::vector<Snapshot> found = find_snapshots(path);
        Filesystem& fs = filesystem_of(path, by_uuid);
        for (Snapshot& s : found)
            if (seen.insert(fs.uuid + uuid_to_string(s.uuid)).second)
                fs.snapshots.push_back(std::move(s));
    }
    for (const std::string& path : forget_on)
        filesystem_of(path, by_uuid);
    std::vector<Filesystem> out;
    for (auto& [uuid, fs] : by_uuid)
        out.push_back(std::move(fs));
    return out;
}

// The file's size, or nothing if there is no file.
std::optional<uint64_t> file_size(const std::string& path)
{
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
        return std::nullopt;
    return static_cast<uint64_t>(st.st_size);
}

// The index of one filesystem. A dry run never writes it: it works inside one transaction
// that is rolled back, on an in-memory database when there is no index yet.
std::unique_ptr<Database> open_index(const std::string& path, bool dry_run)
{
    std::optional<uint64_t> size = file_size(path);
    bool exists = size.has_value();
    if (dry_run && size.value_or(0) == 0) // no index yet; an empty file would get our schema
        return std::make_unique<Database>(":memory:", true);
    if (!exists && path.rfind(std::string(kDefaultIndexDir) + "/", 0) == 0)
        if (::mkdir(kDefaultIndexDir, 0700) != 0 && errno != EEXIST)
            throw SysError("creating", kDefaultIndexDir, errno);
    return std::make_unique<Database>(path, !exists);
}

void add_usage(SpaceUsage& total, const SpaceUsage& u)
{
    total.data_used += u.data_used;
    total.metadata_used += u.metadata_used;
    total.raw_used += u.raw_used;
}

void run_filesystem(Filesystem& fs, const RunOptions& options, RunReport& report)
{
    std::string db_path = options.db_path.empty() ? std::string(kDefaultIndexDir) + "/" + fs.uuid + ".sqlite"
                                                   : options.db_path;
    MaintenanceLock lock(fs.uuid, fs.first_path, options.no_wait); // scrub, balance and dedupe never overlap
    std::unique_ptr<Database> db = open_index(db_path, options.dry_run);
    BlockIndex index(*db);
    if (!options.dry_run)
        forget_deleted_snapshots(fs.fd, *db, index);
    std::optional<Transaction> dry_run_scope;
    if (options.dry_run)
        dry_run_scope.emplace(*db); // never committed

    add_usage(report.before, space_usage(fs.fd.get(), fs.first_path));
    SnapshotPass pass(fs.fd, index, metadata_geometry(fs.fd.get(), fs.first_path),
                      {options.dry_run, options.readonly_only});
    for (const Lineage& lineage : group_lineages(fs.snapshots)) {
        const Snapshot* parent = nullptr;
        for (const Snapshot& snapshot : lineage.snapshots) {
            if (!index.knows_snapshot(uuid_to_string(snapshot.uuid))) {
                // One transaction per snapshot: a killed run resumes at the first snapshot
                // not committed.
                std::optional<Transaction> tx;
                if (!options.dry_run)
                    tx.emplace(*db);
                report.add(pass.process(snapshot, parent, lineage.key));
                if (tx)
                    tx->commit();
            }
            parent = &snapshot;
        }
    }
    // Extents a running send kept busy were deferred to here, the end of the run.
    {
        std::optional<Transaction> tx;
        if (!options.dry_run)
            tx.emplace(*db);
        report.dedupe.add(pass.retry_deferred());
        if (tx)
            tx->commit();
    }
    add_usage(report.after, space_usage(fs.fd.get(), fs.first_path));
    report.filesystems.push_back(fs.uuid);
}

} // namespace

RunReport run(const RunOptions& options)
{
    auto start = std::chrono::steady_clock::now();
    if (options.paths.empty() && options.forget_on.empty())
        throw UsageError("run needs at least one PATH");
    std::vector<Filesystem> filesystems = collect_sources(options.paths, options.forget_on);
    if (filesystems.size() > 1 && !options.db_path.empty())
        throw UsageError("--db names one index, but the paths are on " + std::to_string(filesystems.size()) +
                         " filesystems");

    RunReport report;
    report.dry_run = options.dry_run;
    for (Filesystem& fs : filesystems)
        run_filesystem(fs, options, report);
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
}

} // namespace snapdedupe
