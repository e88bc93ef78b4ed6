#include "snapshots/kernel/labeled_fd.h"

#include "snapshots/kernel/error.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace snapdedupe {

namespace {

// Listing a directory sets its access time, and that is a write: a nightly run would start a
// transaction (and pay for its commit, cold) just for the backup directory's atime, since
// every new snapshot in it makes relatime due. O_NOATIME needs CAP_FOWNER for another's
// directory; without it, the atime is set as for anyone.
int open_dir_noatime(int dirfd, const char* name, int flags)
{
    int fd = ::openat(dirfd, name, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = ::openat(dirfd, name, flags);
    return fd;
}

} // namespace

LabeledFd open_directory(const std::string& path)
{
    UniqueFd fd(open_dir_noatime(AT_FDCWD, path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOTDIR)
            throw PathError(path + ": not a directory or subvolume");
        throw PathError(path + ": " + std::strerror(errno));
    }
    return {std::move(fd), path};
}

LabeledFd open_directory_at(const LabeledFd& dir, const std::string& name)
{
    UniqueFd fd(open_dir_noatime(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    return {std::move(fd), join_path(dir.label(), name)};
}

void read_exactly(const LabeledFd& file, uint64_t offset, uint8_t* out, size_t length)
{
    size_t done = 0;
    while (done < length) {
        ssize_t n = ::pread(file.get(), out + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        check_sys(n, "reading", file.label());
        if (n == 0)
            throw SysError("reading", file.label() + " (it ends before the range read)", EIO);
        done += static_cast<size_t>(n);
    }
}

std::string join_path(const std::string& dir, const std::string& name)
{
    return dir.ends_with('/') ? dir + name : dir + "/" + name;
}

} // namespace snapdedupe
