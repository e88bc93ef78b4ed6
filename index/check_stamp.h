// When a run may skip the whole-index check (PRAGMA quick_check, which reads every page).
//
// That check costs what the index holds, not what changed: 2.5 s for a 175 MB index, cold, every
// night. So a run that ends cleanly stamps the index file (an extended attribute,
// user.snapdedupe.checked) with what the file is then (device, inode, size, mtime) and when it
// was last checked whole. The next run checks it whole again when the stamp is missing or does
// not match (another program, a copy, or a killed run wrote the file; or its -wal file is there),
// and at least every kFullCheckEvery. In between, SQLite checks each page it reads, and btrfs
// each sector's checksum. A filesystem without user extended attributes keeps no stamp, and
// every run checks the whole index, as before.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace snapdedupe {

inline constexpr int64_t kFullCheckEvery = 7 * 24 * 3600; // seconds

struct CheckStamp {
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t mtime_sec = 0, mtime_nsec = 0;
    int64_t checked_at = 0; // when the whole file was last checked (seconds since the epoch)
};

// The stamp on the index at `path`, if it has one that parses.
std::optional<CheckStamp> read_check_stamp(const std::string& path);

// Whether the index at `path` must be checked whole at `now`: no stamp, a stamp that does not
// match the file as it is, a -wal file beside it, or a last check kFullCheckEvery ago or more.
bool full_check_due(const std::string& path, const std::optional<CheckStamp>& stamp, int64_t now);

// Stamps the index at `path` as it is now, last checked whole at `checked_at`. Call it once the
// run has closed the index. False (nothing stamped) where the filesystem keeps no user extended
// attributes, or the file is gone.
bool write_check_stamp(const std::string& path, int64_t checked_at);

} // namespace snapdedupe
