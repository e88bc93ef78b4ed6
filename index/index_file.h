// Opening the index file of one filesystem, and refusing what is not ours before writing a
// byte: another application's SQLite file, a damaged file, a directory, another schema, or the
// index of another filesystem (whose disk addresses would hide this one's new data).
#pragma once

#include "index/sqlite_db.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace snapdedupe {

// Version 1: blocks keyed by disk address, with an xxh3-64 of their bytes.
// Version 2: the same, with a fingerprint of their sectors' checksums (index/fingerprint.h)
// and whether they are a nodatasum file's.
inline constexpr int kIndexSchemaVersion = 2;

// Opens (creating it and its schema when missing or empty) the index at `path` for the
// filesystem with uuid `fs_uuid`. A dry run never writes: with no index yet it works on an
// empty in-memory one. A version-1 index is rebuilt as version 2 (its blocks and processed
// snapshots dropped, its journal and history kept); a dry run plans on an empty in-memory
// one instead. Either tells `notice` in one line. Throws IndexError (exit code 5) for anything it cannot use, SqliteError
// (exit code 5 when the file is damaged) or SysError. Without `whole_check` the file's pages
// are not all read first (PRAGMA quick_check): only when the file is as a run of ours left it
// and was checked whole lately (index/check_stamp.h).
std::unique_ptr<Database> open_index(const std::string& path, const std::string& fs_uuid, bool dry_run,
                                     const std::function<void(const std::string&)>& notice = {},
                                     bool whole_check = true);

// Reads the index at `path` and changes nothing (`snapdedupe status`): opened with
// SQLITE_OPEN_READONLY and checked as open_index checks it (ours, this schema or version 1, undamaged, and
// the index of filesystem `fs_uuid` when one is given), but never upgraded, its journal mode
// never switched, and never created. Calls `read` with it and returns true; returns false,
// calling nothing, when there is no index yet (no file, or an empty one). `read` may be called
// again when a run changed the file meanwhile (see the .cpp), so it must assign its results,
// not add to them. Throws as open_index does.
bool read_index_readonly(const std::string& path, const std::optional<std::string>& fs_uuid,
                         const std::function<void(Database&)>& read);

// Whether a -wal file is beside the index at `path`: a run killed, or one writing now, leaves
// committed transactions in it.
bool has_wal(const std::string& path);

// For readers of an index that may predate an in-place addition (read_index_readonly never
// adds anything): whether a table, or a table's column, exists.
bool index_has_table(Database& db, const std::string& table);
bool index_has_column(Database& db, const std::string& table, const std::string& column);

// The uuid of the filesystem the index records, if it records one (older indexes do not).
std::optional<std::string> index_filesystem_uuid(Database& db);

} // namespace snapdedupe
