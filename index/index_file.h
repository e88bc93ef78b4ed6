// Opening the index file of one filesystem, and refusing what is not ours before writing a
// byte: another application's SQLite file, a damaged file, a directory, another schema, or the
// index of another filesystem (whose disk addresses would hide this one's new data).
#pragma once

#include "index/sqlite_db.h"

#include <memory>
#include <string>

namespace snapdedupe {

// Version 1: blocks keyed by disk address, xxh3-64 of their bytes.
inline constexpr int kIndexSchemaVersion = 1;

// Opens (creating it and its schema when missing or empty) the index at `path` for the
// filesystem with uuid `fs_uuid`. A dry run never writes: with no index yet it works on an
// empty in-memory one. Throws IndexError (exit code 5) for anything it cannot use, SqliteError
// (exit code 5 when the file is damaged) or SysError.
std::unique_ptr<Database> open_index(const std::string& path, const std::string& fs_uuid, bool dry_run);

} // namespace snapdedupe
