#include "index/index_file.h"

#include "snapshots/kernel/error.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace snapdedupe {

namespace {

// "SDDX" in PRAGMA application_id: marks the file as ours for file(1) and for us. Indexes
// made before it was set carry 0 and are recognised by their schema.
constexpr int64_t kApplicationId = 0x53444458;

const char* const kSchema = R"sql(
CREATE TABLE snapshots (
    uuid          TEXT PRIMARY KEY,
    root_id       INTEGER NOT NULL,
    lineage       TEXT NOT NULL,
    otransid      INTEGER NOT NULL,
    path          TEXT NOT NULL,
    processed_at  INTEGER NOT NULL,
    changed_bytes INTEGER NOT NULL,
    changed_paths BLOB NOT NULL            -- empty: no reader ever used the list it once held
);
CREATE TABLE deferred (                 -- the intent journal: moves recorded before they run (block_index.h)
    root_id INTEGER NOT NULL, inode INTEGER NOT NULL, inode_gen INTEGER NOT NULL,
    file_offset INTEGER NOT NULL, length INTEGER NOT NULL,
    keeper_root INTEGER NOT NULL, keeper_inode INTEGER NOT NULL, keeper_gen INTEGER NOT NULL,
    keeper_offset INTEGER NOT NULL, keeper_extent INTEGER NOT NULL, keeper_extent_offset INTEGER NOT NULL,
    error INTEGER NOT NULL DEFAULT 0,   -- why it is still here: 0 not settled yet, else the errno
    primary_ref INTEGER NOT NULL DEFAULT 1, -- the processed snapshot's own reference (counts as deduped)
    PRIMARY KEY (root_id, inode, file_offset)
);
)sql";

// Version 2: a block's fingerprint is a hash of the checksums btrfs keeps of its sectors
// (index/fingerprint.h); version 1 held an xxh3-64 of its bytes, which no longer compares.
const char* const kBlocksTable = R"sql(
CREATE TABLE blocks (
    id            INTEGER PRIMARY KEY,     -- insertion order; the lowest id is the keeper
    extent        INTEGER NOT NULL,
    extent_offset INTEGER NOT NULL,
    length        INTEGER NOT NULL,
    fingerprint   INTEGER NOT NULL,        -- of its sectors' checksums and its length
    nodatasum     INTEGER NOT NULL,        -- 1: a nodatasum file's, which shares only with its kind
    root_id       INTEGER NOT NULL,
    inode         INTEGER NOT NULL,
    inode_gen     INTEGER NOT NULL,
    file_offset   INTEGER NOT NULL,
    extent_gen    INTEGER NOT NULL,        -- transaction that wrote the extent: tells reuse of an address
    UNIQUE (extent, extent_offset)
);
CREATE INDEX blocks_by_fingerprint ON blocks (fingerprint, length, nodatasum);
)sql";

// Which filesystem the index describes: its disk addresses mean nothing on another one.
const char* const kFilesystemTable = "CREATE TABLE filesystem (uuid TEXT NOT NULL)";

// The history `snapdedupe status` shows: one row per run (not dry runs) and filesystem,
// appended also when the run fails (index/run_history.h).
const char* const kRunsTable = R"sql(
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    started_at      INTEGER NOT NULL,   -- unix seconds
    seconds         REAL NOT NULL,      -- this filesystem's share of the run
    exit_code       INTEGER NOT NULL,
    snapshots       INTEGER NOT NULL,   -- snapshots processed
    bytes_hashed    INTEGER NOT NULL,
    bytes_deduped   INTEGER NOT NULL,
    data_freed      INTEGER,            -- data_used before - after; NULL: not measured (it failed first)
    metadata_growth INTEGER,            -- metadata_used after - before
    net_freed       INTEGER             -- raw_used before - after: every copy of data and metadata
)
)sql";

const char* const kTables[] = {"snapshots", "blocks", "deferred"};

void create_schema(Database& db, const std::string& fs_uuid)
{
    Transaction tx(db);
    db.exec(kSchema);
    db.exec(kBlocksTable);
    db.exec(kFilesystemTable);
    db.exec(kRunsTable);
    Statement st = db.prepare("INSERT INTO filesystem (uuid) VALUES (?1)");
    st.bind(1, fs_uuid).run();
    db.exec("PRAGMA application_id=" + std::to_string(kApplicationId));
    db.exec("PRAGMA user_version=" + std::to_string(kIndexSchemaVersion));
    tx.commit();
}

// SQLite's verdict on every page, on one line: "ok", or its first findings.
std::string quick_check(Database& db)
{
    Statement check = db.prepare("PRAGMA quick_check(5)");
    std::string verdict;
    while (check.step())
        verdict += (verdict.empty() ? "" : "; ") + check.text(0);
    std::replace(verdict.begin(), verdict.end(), '\n', ' ');
    return verdict.empty() ? "no answer" : verdict;
}

// Version 1 grew without a new version number, each addition made on first write use: the
// filesystem's uuid (an index from before it was recorded has been used on this one), the
// journal's error and primary_ref columns, and the history of runs.
void upgrade_in_place(Database& db, const std::string& fs_uuid)
{
    bool record_uuid = !index_has_table(db, "filesystem");
    bool add_error = !index_has_column(db, "deferred", "error");
    bool add_primary_ref = !index_has_column(db, "deferred", "primary_ref");
    bool add_runs = !index_has_table(db, "runs");
    if (!record_uuid && !add_error && !add_primary_ref && !add_runs)
        return;
    Transaction tx(db);
    if (record_uuid) {
        db.exec(kFilesystemTable);
        db.prepare("INSERT INTO filesystem (uuid) VALUES (?1)").bind(1, fs_uuid).run();
    }
    if (add_error)
        db.exec("ALTER TABLE deferred ADD COLUMN error INTEGER NOT NULL DEFAULT 0");
    if (add_primary_ref)
        db.exec("ALTER TABLE deferred ADD COLUMN primary_ref INTEGER NOT NULL DEFAULT 1");
    if (add_runs)
        db.exec(kRunsTable);
    tx.commit();
}

// Version 1's hashes of data do not compare with fingerprints, and computing these for its
// blocks would take a pass over every indexed snapshot anyway. So its blocks and the list of
// processed snapshots go, and the next run indexes every snapshot again, from the checksum
// tree (no data read for uncompressed extents). The intent journal and the history of runs
// stay: neither holds a hash.
void rebuild_as_version_2(Database& db)
{
    Transaction tx(db);
    db.exec("DROP INDEX IF EXISTS blocks_by_hash");
    db.exec("DROP TABLE blocks");
    db.exec("DELETE FROM snapshots");
    db.exec(kBlocksTable);
    db.exec("PRAGMA user_version=" + std::to_string(kIndexSchemaVersion));
    tx.commit();
}

// Every check reads; nothing is written until the file is known to be ours. Without `fs_uuid`
// (a reader with no filesystem at hand) the recorded uuid is not compared.
void check_ours(Database& db, const std::optional<std::string>& fs_uuid, bool whole_check = true)
{
    const std::string name = "index " + db.path();
    int64_t version = db.scalar("PRAGMA user_version");
    int64_t application = db.scalar("PRAGMA application_id");
    if (version == 0 || (application != 0 && application != kApplicationId))
        throw IndexError(name + ": not a snapdedupe index");
    // Version 1 is read as it is and rebuilt on first write use (open_index); a later one is
    // a newer snapdedupe's.
    if (version > kIndexSchemaVersion)
        throw IndexError(name + ": schema version " + std::to_string(version) + " is newer than the version " +
                         std::to_string(kIndexSchemaVersion) + " this snapdedupe uses");
    // Reads every page: a damaged page the run would never touch still makes the file
    // untrustworthy. Skipped (`whole_check` false) only when the file is as a run of ours left
    // it and was read whole within the week (index/check_stamp.h): the check costs what the
    // index holds, and a night's work should cost what changed.
    if (std::string verdict = whole_check ? quick_check(db) : "ok"; verdict != "ok")
        throw IndexError(name + ": damaged (" + verdict + "); remove it and the next run rebuilds it");
    for (const char* table : kTables)
        if (!index_has_table(db, table))
            throw IndexError(name + ": damaged (table " + std::string(table) + " is missing)");
    // Another filesystem's index is refused before anything is written to it.
    std::optional<std::string> recorded = index_filesystem_uuid(db);
    if (fs_uuid && recorded && *recorded != *fs_uuid)
        throw IndexError(name + ": the index of filesystem " + *recorded + ", not of " + *fs_uuid +
                         " (each filesystem needs its own index: see --db)");
}

// What says that the index file was written: a run's checkpoint writes into it, and a run
// that starts and ends deletes its -wal file after one.
struct FileVersion {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    timespec mtime{}, ctime{};
    bool operator==(const FileVersion& o) const
    {
        return dev == o.dev && ino == o.ino && size == o.size && mtime.tv_sec == o.mtime.tv_sec &&
               mtime.tv_nsec == o.mtime.tv_nsec && ctime.tv_sec == o.ctime.tv_sec && ctime.tv_nsec == o.ctime.tv_nsec;
    }
};

FileVersion version_of(const struct stat& st)
{
    return {st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
}

// Whether a read of the file alone since `before` may have met a run's writes: the file changed,
// or a run has started (its checkpoint may have written in the same clock tick as the write
// before it, which leaves the times as they were).
bool maybe_written_since(const std::string& path, const FileVersion& before)
{
    struct stat st;
    return ::stat(path.c_str(), &st) != 0 || !(version_of(st) == before) || has_wal(path);
}

// Attempts at a read without locks that a run's writes keep spoiling; the second attempt
// normally finds the run's -wal file and reads under SQLite's locks instead.
constexpr int kReadAttempts = 5;

} // namespace

bool has_wal(const std::string& path)
{
    return ::access((path + "-wal").c_str(), F_OK) == 0;
}

bool index_has_table(Database& db, const std::string& table)
{
    Statement st = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
    st.bind(1, table);
    bool found = st.step();
    st.reset();
    return found;
}

bool index_has_column(Database& db, const std::string& table, const std::string& column)
{
    Statement st = db.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2");
    st.bind(1, table).bind(2, column);
    bool found = st.step();
    st.reset();
    return found;
}

std::optional<std::string> index_filesystem_uuid(Database& db)
{
    if (!index_has_table(db, "filesystem"))
        return std::nullopt;
    Statement st = db.prepare("SELECT uuid FROM filesystem");
    std::string uuid = st.step() ? st.text(0) : std::string();
    st.reset();
    return uuid;
}

std::unique_ptr<Database> open_index(const std::string& path, const std::string& fs_uuid, bool dry_run,
                                     const std::function<void(const std::string&)>& notice, bool whole_check)
{
    struct stat st;
    bool exists = ::stat(path.c_str(), &st) == 0;
    if (!exists && errno != ENOENT)
        throw SysError("looking at index", path, errno);
    if (exists && !S_ISREG(st.st_mode))
        throw IndexError("index " + path + ": not a regular file");
    bool empty = !exists || st.st_size == 0;
    if (dry_run && empty) { // no index yet; an empty file would get our schema
        auto db = std::make_unique<Database>(":memory:", true);
        create_schema(*db, fs_uuid);
        return db;
    }
    auto db = std::make_unique<Database>(path, !exists);
    if (empty && db->scalar("SELECT count(*) FROM sqlite_master") == 0) {
        db->exec("PRAGMA journal_mode=WAL");
        create_schema(*db, fs_uuid);
    } else {
        check_ours(*db, fs_uuid, whole_check);
        bool version_1 = db->scalar("PRAGMA user_version") == 1;
        if (version_1 && dry_run) {
            if (notice)
                notice("index " + path + " is schema version 1 (hashes of data): this dry run plans as on a new "
                       "index; the next run rebuilds it as version 2 (fingerprints from checksums)");
            db = std::make_unique<Database>(":memory:", true);
            create_schema(*db, fs_uuid);
            return db;
        }
        if (!dry_run) {
            upgrade_in_place(*db, fs_uuid);
            if (version_1) {
                rebuild_as_version_2(*db);
                if (notice)
                    notice("index " + path + " was schema version 1 (hashes of data): rebuilt as version 2 "
                           "(fingerprints from checksums); this run indexes every snapshot again");
            }
            db->exec("PRAGMA journal_mode=WAL");
        }
    }
    // FULL: the journal's commit before each batch of dedupe calls must survive a power cut
    // too, not only a kill (one fsync per batch and per snapshot).
    db->exec("PRAGMA synchronous=FULL");
    return db;
}

// A read-only connection to a WAL-mode file makes its -wal and -shm files when they are missing
// (SQLite needs them to take its locks) and leaves them behind. With no -wal file everything
// committed is in the file itself, so it is read alone ("immutable": no locks, no side files);
// a run that starts meanwhile writes only its own -wal until it checkpoints into the file, so
// a read during which a run started is done again, then through the run's -wal. With a -wal
// file (a run is writing, or was killed) the read goes through it, under SQLite's locks, as
// any reader's.
bool read_index_readonly(const std::string& path, const std::optional<std::string>& fs_uuid,
                         const std::function<void(Database&)>& read)
{
    for (int attempt = 1;; ++attempt) {
        struct stat st;
        if (::stat(path.c_str(), &st) != 0) {
            if (errno == ENOENT)
                return false;
            throw SysError("looking at index", path, errno);
        }
        if (!S_ISREG(st.st_mode))
            throw IndexError("index " + path + ": not a regular file");
        if (st.st_size == 0)
            return false; // what open_index would give our schema
        bool immutable = !has_wal(path);
        FileVersion before = version_of(st);
        try {
            Database db(path, Database::ReadOnly{immutable});
            check_ours(db, fs_uuid);
            read(db);
        } catch (const Error&) {
            // A page half written by a checkpoint reads as damage: only a stable file's is real.
            if (immutable && attempt < kReadAttempts && maybe_written_since(path, before))
                continue;
            throw;
        }
        if (!immutable || !maybe_written_since(path, before))
            return true;
        if (attempt == kReadAttempts)
            throw Error(ExitCode::kFailure, "index " + path + ": changed by a run each time it was read; try again");
    }
}

} // namespace snapdedupe
