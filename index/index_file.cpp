#include "index/index_file.h"

#include "snapshots/kernel/error.h"

#include <sys/stat.h>

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
    changed_paths BLOB NOT NULL            -- zstd: NUL-separated paths of the change set
);
CREATE TABLE blocks (
    id            INTEGER PRIMARY KEY,     -- insertion order; the lowest id is the keeper
    extent        INTEGER NOT NULL,
    extent_offset INTEGER NOT NULL,
    length        INTEGER NOT NULL,
    hash          INTEGER NOT NULL,        -- xxh3-64 of the bytes
    root_id       INTEGER NOT NULL,
    inode         INTEGER NOT NULL,
    inode_gen     INTEGER NOT NULL,
    file_offset   INTEGER NOT NULL,
    extent_gen    INTEGER NOT NULL,        -- transaction that wrote the extent: tells reuse of an address
    UNIQUE (extent, extent_offset)
);
CREATE INDEX blocks_by_hash ON blocks (hash, length);
CREATE TABLE deferred (                 -- the intent journal: moves recorded before they run (block_index.h)
    root_id INTEGER NOT NULL, inode INTEGER NOT NULL, inode_gen INTEGER NOT NULL,
    file_offset INTEGER NOT NULL, length INTEGER NOT NULL,
    keeper_root INTEGER NOT NULL, keeper_inode INTEGER NOT NULL, keeper_gen INTEGER NOT NULL,
    keeper_offset INTEGER NOT NULL, keeper_extent INTEGER NOT NULL, keeper_extent_offset INTEGER NOT NULL,
    error INTEGER NOT NULL DEFAULT 0,   -- why it is still here: 0 not settled yet, else the errno
    PRIMARY KEY (root_id, inode, file_offset)
);
)sql";

// Which filesystem the index describes: its disk addresses mean nothing on another one.
const char* const kFilesystemTable = "CREATE TABLE filesystem (uuid TEXT NOT NULL)";

const char* const kTables[] = {"snapshots", "blocks", "deferred"};

bool has_table(Database& db, const std::string& name)
{
    Statement st = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
    st.bind(1, name);
    bool found = st.step();
    st.reset();
    return found;
}

std::string recorded_uuid(Database& db)
{
    Statement st = db.prepare("SELECT uuid FROM filesystem");
    std::string uuid = st.step() ? st.text(0) : std::string();
    st.reset();
    return uuid;
}

void create_schema(Database& db, const std::string& fs_uuid)
{
    Transaction tx(db);
    db.exec(kSchema);
    db.exec(kFilesystemTable);
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

bool has_column(Database& db, const std::string& table, const std::string& column)
{
    Statement st = db.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2");
    st.bind(1, table).bind(2, column);
    bool found = st.step();
    st.reset();
    return found;
}

// Version 1 grew without a new version number, each addition made on first use: the
// filesystem's uuid (an index from before it was recorded has been used on this one), and
// the journal's error column.
void upgrade_in_place(Database& db, const std::string& fs_uuid)
{
    bool record_uuid = !has_table(db, "filesystem");
    bool add_error = !has_column(db, "deferred", "error");
    if (!record_uuid && !add_error)
        return;
    Transaction tx(db);
    if (record_uuid) {
        db.exec(kFilesystemTable);
        db.prepare("INSERT INTO filesystem (uuid) VALUES (?1)").bind(1, fs_uuid).run();
    }
    if (add_error)
        db.exec("ALTER TABLE deferred ADD COLUMN error INTEGER NOT NULL DEFAULT 0");
    tx.commit();
}

// Every check reads; nothing is written until the file is known to be ours.
void check_ours(Database& db, const std::string& fs_uuid, bool dry_run)
{
    const std::string name = "index " + db.path();
    int64_t version = db.scalar("PRAGMA user_version");
    int64_t application = db.scalar("PRAGMA application_id");
    if (version == 0 || (application != 0 && application != kApplicationId))
        throw IndexError(name + ": not a snapdedupe index");
    if (version != kIndexSchemaVersion)
        throw IndexError(name + ": schema version " + std::to_string(version) + " is not the version " +
                         std::to_string(kIndexSchemaVersion) + " this snapdedupe uses");
    // Reads every page: a damaged page the run would never touch still makes the file
    // untrustworthy, and it is far cheaper than the run's own reads.
    if (std::string verdict = quick_check(db); verdict != "ok")
        throw IndexError(name + ": damaged (" + verdict + "); remove it and the next run rebuilds it");
    for (const char* table : kTables)
        if (!has_table(db, table))
            throw IndexError(name + ": damaged (table " + std::string(table) + " is missing)");
    // Another filesystem's index is refused before anything is written to it.
    if (has_table(db, "filesystem")) {
        std::string recorded = recorded_uuid(db);
        if (recorded != fs_uuid)
            throw IndexError(name + ": the index of filesystem " + recorded + ", not of " + fs_uuid +
                             " (each filesystem needs its own index: see --db)");
    }
    if (!dry_run)
        upgrade_in_place(db, fs_uuid);
}

} // namespace

std::unique_ptr<Database> open_index(const std::string& path, const std::string& fs_uuid, bool dry_run)
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
        check_ours(*db, fs_uuid, dry_run);
        if (!dry_run)
            db->exec("PRAGMA journal_mode=WAL");
    }
    db->exec("PRAGMA synchronous=NORMAL");
    return db;
}

} // namespace snapdedupe
