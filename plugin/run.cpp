#include "plugin/run.h"

#include "index/block_index.h"
#include "index/check_stamp.h"
#include "index/index_file.h"
#include "plugin/diff_ahead.h"
#include "plugin/upkeep/commit_point.h"
#include "plugin/upkeep/maintenance_lock.h"
#include "plugin/upkeep/run_recorder.h"
#include "plugin/upkeep/snapshot_forgetter.h"
#include "plugin/dedupe/kernel_queries.h"
#include "plugin/dedupe/move_journal.h"
#include "plugin/dedupe/snapshot_pass.h"
#include "snapshots/snapshot_list.h"
#include "snapshots/kernel/error.h"
#include "snapshots/kernel/filesystem.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <chrono>
#include <cstring>
#include <ctime>
#include <memory>
#include <map>
#include <optional>
#include <set>
#include <utility>

namespace snapdedupe {

namespace {

// EAGAIN means a `btrfs send` is reading a root, usually for longer than a short wait: its
// moves stay in the journal, which the end of the run retries within this budget before
// leaving them for the next run.
constexpr std::chrono::milliseconds kBusyBudget{15000};

void finish_journal(SnapshotPass& pass, Database& db, bool dry_run, std::chrono::milliseconds budget, bool final,
                    CommitPoint& commits, RunReport& report)
{
    std::optional<Transaction> tx;
    if (!dry_run)
        tx.emplace(db);
    report.dedupe.add(pass.finish_journal(budget, final, [&commits] { commits.now(); }));
    if (tx)
        tx->commit();
}

// One filesystem's share of the run: the filesystem (through the first PATH on it) and the
// snapshots found on it.
struct FilesystemWork {
    Filesystem fs;
    std::vector<Snapshot> snapshots;
};

// Opens each PATH once: its snapshots are found through that fd, and the first PATH on a
// filesystem becomes that filesystem's fd. `forget_on`: paths on filesystems to visit only
// to forget deleted snapshots.
std::vector<FilesystemWork> collect_sources(const std::vector<std::string>& paths,
                                            const std::vector<std::string>& forget_on)
{
    std::map<std::string, FilesystemWork> by_uuid;
    std::set<std::string> seen; // a snapshot named twice is processed once
    auto visit = [&](const std::string& path, bool find) {
        LabeledFd dir = open_directory(path);
        std::vector<Snapshot> found;
        if (find)
            found = find_snapshots(dir);
        Filesystem fs(std::move(dir));
        std::string uuid = fs.uuid();
        FilesystemWork& work = by_uuid.try_emplace(uuid, FilesystemWork{std::move(fs), {}}).first->second;
        for (Snapshot& s : found)
            if (seen.insert(uuid + uuid_to_string(s.uuid)).second)
                work.snapshots.push_back(std::move(s));
    };
    for (const std::string& path : paths)
        visit(path, true);
    for (const std::string& path : forget_on)
        visit(path, false);
    std::vector<FilesystemWork> out;
    for (auto& [uuid, work] : by_uuid)
        out.push_back(std::move(work));
    return out;
}

// The default index lives in a directory of ours, made on first use.
void make_default_index_dir(const std::string& db_path)
{
    if (db_path.rfind(std::string(kDefaultIndexDir) + "/", 0) == 0)
        if (::mkdir(kDefaultIndexDir, 0700) != 0 && errno != EEXIST)
            throw SysError("creating", kDefaultIndexDir, errno);
}

// Every file is opened by handle through the filesystem's fd, so every dedupe goes through
// that fd's mount, and the kernel refuses FIDEDUPERANGE through a read-only one (EROFS).
// Found before anything is touched, instead of as one error per range.
void require_writable_mount(const Filesystem& fs)
{
    struct statvfs st;
    check_sys(::fstatvfs(fs.fd().get(), &st), "statvfs", fs.label());
    if (st.f_flag & ST_RDONLY)
        throw PathError(fs.label() + ": on a read-only mount, through which the kernel refuses to dedupe; "
                        "under systemd: systemctl edit snapdedupe.service (or snapdedupe-btrbk.service), "
                        "[Service] ReadWritePaths=" + fs.label());
}

// A snapshot deleted (or being deleted) since discovery, or its id taken by another.
bool gone(const Filesystem& fs, const Snapshot& s)
{
    std::optional<SubvolumeInfo> info = subvolume_info(fs.fd(), s.root_id);
    return !info || info->parent_id == 0 || info->uuid != s.uuid;
}

// The run's side of the progress line: where it is, passed on to RunOptions::progress.
struct ProgressFeed {
    const std::function<void(const RunProgress&)>& report;
    RunProgress now;
    size_t finished = 0; // snapshots processed

    void send() const
    {
        if (report)
            report(now);
    }
};

struct LineageContext {
    SnapshotPass& pass;
    BlockIndex& index;
    Database& db;
    bool dry_run;
    ProgressFeed& progress;
    CommitPoint& commits;
};

// A snapshot deleted while it was processed: the blocks its batches committed (the journal
// commits before each batch's dedupe calls) are located in it. Recorded as processed, it is
// one the next run's forgetting finds gone, and moves those blocks to where their bytes live.
void remember_deleted(const Snapshot& snapshot, const Lineage& lineage, const LineageContext& ctx)
{
    if (ctx.dry_run)
        return;
    Transaction tx(ctx.db);
    ctx.index.add_snapshot({uuid_to_string(snapshot.uuid), snapshot.root_id, lineage.key, snapshot.otransid,
                            snapshot.path, 0});
    tx.commit();
}

// One snapshot in one transaction: a killed run resumes at the first snapshot not committed.
void process_snapshot(const Snapshot& snapshot, const Snapshot* parent, const Lineage& lineage,
                      const LineageContext& ctx, RunReport& report, std::optional<ChangeSet> diffed)
{
    std::optional<Transaction> tx;
    if (!ctx.dry_run)
        tx.emplace(ctx.db);
    ctx.progress.now = {ctx.progress.finished + 1, ctx.progress.now.snapshots, snapshot.path, 0, 0};
    ctx.progress.send();
    auto progress = [&ctx](uint64_t bytes_done, uint64_t bytes_total) {
        ctx.progress.now.bytes_done = bytes_done;
        ctx.progress.now.bytes_total = bytes_total;
        ctx.progress.send();
    };
    SnapshotReport done = ctx.pass.process(snapshot, parent, lineage.key, progress, std::move(diffed));
    if (tx) {
        ctx.commits.at_snapshot_end();
        tx->commit();
    }
    ++ctx.progress.finished;
    report.add(done);
}

// A lineage's way through the run: the next of its snapshots to visit (oldest first), and the
// earlier ones a later snapshot may be diffed against, newest last.
struct LineageCursor {
    const Lineage* lineage;
    size_t next = 0;
    std::vector<const Snapshot*> earlier;

    bool done() const { return next == lineage->snapshots.size(); }
    const Snapshot& snapshot() const { return lineage->snapshots[next]; }
    const Snapshot* parent() const { return earlier.empty() ? nullptr : earlier.back(); }
};

// Passes over the snapshots an earlier run processed (what they hold is in the index), up to
// the next one to process.
void pass_known(const Filesystem& fs, LineageCursor& c, const LineageContext& ctx)
{
    for (; !c.done() && ctx.index.knows_snapshot(uuid_to_string(c.snapshot().uuid)); ++c.next)
        if (!gone(fs, c.snapshot()))
            c.earlier.push_back(&c.snapshot());
}

// Processes the cursor's snapshot, diffed against the newest earlier one that still exists
// (`diffed`: that diff, if made ahead). Retention may delete snapshots while we work: a
// snapshot deleted during the run is skipped with a note (the next run diffs its successor
// against the one before it), and a deleted predecessor is passed over. A snapshot the kernel
// cannot send at all (a path longer than send allows: ENAMETOOLONG) is named, skipped, and
// fails the run at its end, so it does not stop the others every night.
void process_next(const Filesystem& fs, LineageCursor& c, const LineageContext& ctx, RunReport& report,
                  std::optional<ChangeSet> diffed)
{
    const Snapshot& snapshot = c.snapshot();
    bool usable = true; // processed: what it holds is in the index
    for (;;) {
        const Snapshot* parent = c.parent();
        try {
            // Made against this parent: not used again once the parent is passed over.
            process_snapshot(snapshot, parent, *c.lineage, ctx, report, std::exchange(diffed, std::nullopt));
            break;
        } catch (const SysError& e) {
            if (gone(fs, snapshot)) {
                std::cerr << "snapdedupe: " << snapshot.path << " was deleted during the run; skipped\n";
                remember_deleted(snapshot, *c.lineage, ctx);
                break;
            }
            if (parent && gone(fs, *parent)) {
                c.earlier.pop_back(); // try again against the one before it
                continue;
            }
            if (e.err() == EAGAIN) { // our send, retried: another dedupe holds the snapshot
                std::cerr << "snapdedupe: " << snapshot.path << ": busy (" << e.what()
                          << "); the next run processes it\n";
                usable = false;
                break;
            }
            if (e.err() != ENAMETOOLONG)
                throw;
            std::cerr << "snapdedupe: " << snapshot.path << ": skipped: " << e.what() << "\n";
            report.failures.push_back(snapshot.path + ": " + e.what());
            usable = false; // its successor is diffed against the one before it
            break;
        }
    }
    if (usable && !gone(fs, snapshot))
        c.earlier.push_back(&snapshot);
    ++c.next;
}

// The first cursor after `i` (in turn, wrapping, not `i` itself) with a snapshot to process.
std::optional<size_t> next_in_turn(const std::vector<LineageCursor>& cursors, size_t i)
{
    for (size_t step = 1; step < cursors.size(); ++step) {
        size_t j = (i + step) % cursors.size();
        if (!cursors[j].done())
            return j;
    }
    return std::nullopt;
}

// Lineages take turns, a snapshot each, oldest first within each, so that while one snapshot
// is deduped the next one, another lineage's, is diffed (plugin/diff_ahead.h). With one
// lineage left, its snapshots follow one another, each diffed in line.
void process_lineages(const Filesystem& fs, const std::vector<Lineage>& lineages, const LineageContext& ctx,
                      RunReport& report)
{
    std::vector<LineageCursor> cursors;
    for (const Lineage& lineage : lineages) {
        cursors.push_back({&lineage, 0, {}});
        pass_known(fs, cursors.back(), ctx);
    }
    std::optional<size_t> turn;
    for (size_t i = 0; i < cursors.size() && !turn; ++i)
        if (!cursors[i].done())
            turn = i;
    std::unique_ptr<DiffAhead> ahead; // destroyed (the send waited for) before the cursors
    while (turn) {
        LineageCursor& c = cursors[*turn];
        std::optional<ChangeSet> diffed;
        if (ahead && ahead->is_for(c.snapshot(), c.parent()))
            diffed = ahead->take();
        ahead.reset();
        std::optional<size_t> following = next_in_turn(cursors, *turn);
        if (following)
            ahead = std::make_unique<DiffAhead>(cursors[*following].snapshot(), cursors[*following].parent());
        process_next(fs, c, ctx, report, std::move(diffed));
        pass_known(fs, c, ctx);
        turn = following ? following : c.done() ? std::nullopt : turn;
    }
}

// One filesystem's work once its index is open.
void dedupe_filesystem(FilesystemWork& work, Database& db, const RunOptions& options, ProgressFeed& progress,
                       RunReport& report)
{
    const Filesystem& fs = work.fs;
    BlockIndex index(db);
    for (const Snapshot& s : work.snapshots)
        progress.now.snapshots += index.knows_snapshot(uuid_to_string(s.uuid)) ? 0 : 1;
    // What the engine asks of this filesystem.
    KernelQueries queries(fs.fd(), options.seams.after_dedupe_call(), !options.seams.no_prefetch);
    IndexJournal journal(db, index);
    if (!options.dry_run)
        forget_deleted_snapshots(queries, db, index);
    std::optional<Transaction> dry_run_scope;
    if (options.dry_run)
        dry_run_scope.emplace(db); // never committed

    report.before.add(space_usage(fs.fd()));
    SnapshotPass pass(queries, journal, index, BlockFingerprinter(fs.fd(), checksum_info(fs.fd())),
                      metadata_geometry(fs.fd()),
                      {options.dry_run, options.readonly_only, options.seams.before_dedupe()});
    // First what an earlier run left in the journal (killed, busy or failed), so that its
    // moved references do not hide the rest as known; at the end, what this run left.
    // A filesystem visited only to forget deleted snapshots changes nothing but its index (its
    // mount was not checked for writes); its journal waits for a run that processes it.
    const bool dedupes = !work.snapshots.empty();
    CommitPoint commits(fs.fd(), journal);
    if (dedupes)
        finish_journal(pass, db, options.dry_run, std::chrono::milliseconds(0), false, commits, report);
    process_lineages(fs, group_lineages(std::move(work.snapshots)),
                     {pass, index, db, options.dry_run, progress, commits}, report);
    if (dedupes)
        finish_journal(pass, db, options.dry_run, kBusyBudget, true, commits, report);
    report.after.add(space_usage(fs.fd())); // commits
    if (journal.holds_settled()) {
        Transaction tx(db);
        commits.committed();
        tx.commit();
    }
    report.filesystems.push_back(fs.uuid());
}

// The lock, the index, and the run's row in the index's history (index/run_history.h), which
// is appended also when the work fails: with that error's exit code, before it goes on up.
void run_filesystem(FilesystemWork& work, const RunOptions& options, ProgressFeed& progress, RunReport& report)
{
    const Filesystem& fs = work.fs;
    std::string db_path = options.db_path.value_or(std::string(kDefaultIndexDir) + "/" + fs.uuid() + ".sqlite");
    MaintenanceLock lock(fs.uuid(), fs.label(), options.no_wait); // scrub, balance and dedupe never overlap
    RunRecorder history(report);
    if (!options.dry_run)
        make_default_index_dir(db_path);
    // The whole index is read and checked only when it is not as our last run left it, or that
    // check is a week old (index/check_stamp.h): what the index holds grows with the disk.
    const int64_t opened_at = ::time(nullptr);
    const std::optional<CheckStamp> stamp = read_check_stamp(db_path);
    const bool whole_check = full_check_due(db_path, stamp, opened_at);
    std::unique_ptr<Database> db = open_index(
        db_path, fs.uuid(), options.dry_run, [](const std::string& line) { std::cerr << "snapdedupe: " << line << "\n"; },
        whole_check);
    if (options.dry_run) { // changes nothing, not even the history
        dedupe_filesystem(work, *db, options, progress, report);
        return;
    }
    try {
        dedupe_filesystem(work, *db, options, progress, report);
    } catch (const std::exception& e) {
        history.failed(*db, report, e);
        throw;
    }
    history.succeeded(*db, report);
    db.reset(); // closed: SQLite copies its -wal file into the index and removes it
    write_check_stamp(db_path, whole_check ? opened_at : stamp->checked_at);
}

} // namespace

RunReport run(const RunOptions& options)
{
    auto start = std::chrono::steady_clock::now();
    if (options.paths.empty() && options.forget_on.empty())
        throw UsageError("run needs at least one PATH");
    std::vector<FilesystemWork> filesystems = collect_sources(options.paths, options.forget_on);
    if (filesystems.size() > 1 && options.db_path)
        throw UsageError("--db names one index, but the paths are on " + std::to_string(filesystems.size()) +
                         " filesystems");

    // A filesystem visited only to forget deleted snapshots changes nothing but its index.
    for (const FilesystemWork& work : filesystems)
        if (!options.dry_run && !work.snapshots.empty())
            require_writable_mount(work.fs);

    RunReport report;
    report.dry_run = options.dry_run;
    ProgressFeed progress{options.progress, {}};
    for (FilesystemWork& work : filesystems)
        run_filesystem(work, options, progress, report);
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
}

} // namespace snapdedupe
