#include "plugin/upkeep/maintenance_lock.h"

#include "snapshots/kernel/error.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>
#include <iostream>

namespace snapdedupe {

namespace {

// btrfsmaintenance's scripts run `flock /run/btrfs-maintenance-running.$UUID btrfs ...`.
constexpr const char* kMaintenanceLockPrefix = "/run/btrfs-maintenance-running.";

int lock_retrying_eintr(int fd, int operation)
{
    int rc;
    do
        rc = ::flock(fd, operation);
    while (rc != 0 && errno == EINTR);
    return rc;
}

} // namespace

FileLock::FileLock(const std::string& path, bool no_wait, const std::string& holder)
{
    // O_RDONLY is enough for flock and is what flock(1) opens with; O_NOFOLLOW so a link
    // planted in a shared directory cannot make us create a file elsewhere.
    fd_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0644));
    if (!fd_)
        throw SysError("opening lock file", path, errno);
    if (lock_retrying_eintr(fd_.get(), LOCK_EX | LOCK_NB) == 0)
        return;
    if (errno != EWOULDBLOCK)
        throw SysError("locking", path, errno);
    if (no_wait)
        throw BusyError("busy: " + holder + " holds " + path + " (--no-wait: not waiting)");
    std::cerr << "snapdedupe: waiting for " << path << ": " << holder << " holds it\n";
    if (lock_retrying_eintr(fd_.get(), LOCK_EX) != 0)
        throw SysError("locking", path, errno);
}

std::string maintenance_lock_path(const std::string& fs_uuid)
{
    return kMaintenanceLockPrefix + fs_uuid;
}

MaintenanceLock::MaintenanceLock(const std::string& fs_uuid, const std::string& fs_path, bool no_wait)
    : lock_(maintenance_lock_path(fs_uuid), no_wait,
            "another snapdedupe or a btrfsmaintenance task (scrub, balance, trim, defrag) on " + fs_path)
{
}

} // namespace snapdedupe
