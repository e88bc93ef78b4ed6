// The per-filesystem lock btrfsmaintenance takes, so scrub, balance, trim and dedupe of one
// filesystem never run at the same time (they all compete for the same disks).
#pragma once

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/unique_fd.h"

#include <stdexcept>
#include <string>

namespace snapdedupe {

// An exclusive flock(2) on `path` (created if missing), held until destruction. flock, not
// fcntl locks: flock(1), which btrfsmaintenance uses, takes flock locks, and the two kinds do
// not see each other.
class FileLock {
public:
    // Waits for the lock, saying once on stderr what it waits for, unless `no_wait`: then
    // throws BusyError naming `holder` (who is likely to hold it).
    FileLock(const std::string& path, bool no_wait, const std::string& holder);
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;
    // Closing the fd releases the lock.
    ~FileLock() = default;

private:
    UniqueFd fd_;
};

// btrfsmaintenance's lock for the filesystem with this uuid (as `btrfs filesystem show`
// prints it): /run/btrfs-maintenance-running.<fsid>.
std::string maintenance_lock_path(const std::string& fs_uuid);

// The lock for one filesystem's whole run; `fs_path` only names it in messages.
class MaintenanceLock {
public:
    MaintenanceLock(const std::string& fs_uuid, const std::string& fs_path, bool no_wait);

private:
    FileLock lock_;
};

} // namespace snapdedupe
