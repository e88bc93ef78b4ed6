#include "snapshots/kernel/file_handle.h"

#include "snapshots/kernel/error.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace snapdedupe {

namespace {

constexpr int kBtrfsFileHandleType = 0x4d; // FILEID_BTRFS_WITHOUT_PARENT

struct __attribute__((packed)) BtrfsFid {
    uint64_t objectid;
    uint64_t root_objectid;
    uint32_t gen;
};

struct FileHandleBuffer {
    file_handle header;
    unsigned char bytes[MAX_HANDLE_SZ];
};

OpenResult failed(int err)
{
    return {UniqueFd(), err};
}

} // namespace

InodeHandle handle_of(const LabeledFd& file)
{
    FileHandleBuffer fh{};
    fh.header.handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    check_sys(::name_to_handle_at(file.get(), "", &fh.header, &mount_id, AT_EMPTY_PATH), "getting the file handle of",
              file.label());
    if (fh.header.handle_type != kBtrfsFileHandleType || fh.header.handle_bytes < sizeof(BtrfsFid))
        throw SysError("unexpected file handle type for", file.label(), EINVAL);
    BtrfsFid fid;
    std::memcpy(&fid, fh.header.f_handle, sizeof fid);
    return {fid.root_objectid, fid.objectid, fid.gen};
}

OpenResult open_by_handle(const LabeledFd& filesystem, const InodeHandle& h)
{
    FileHandleBuffer fh{};
    fh.header.handle_bytes = sizeof(BtrfsFid);
    fh.header.handle_type = kBtrfsFileHandleType;
    BtrfsFid fid{h.inode, h.root, static_cast<uint32_t>(h.generation)};
    std::memcpy(fh.header.f_handle, &fid, sizeof fid);
    // O_PATH first: it opens nothing (no device side effects, no FIFO blocking); only a
    // regular file is then opened for reading.
    UniqueFd path_fd(::open_by_handle_at(filesystem.get(), &fh.header, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!path_fd)
        return failed(errno);
    struct stat st;
    if (::fstat(path_fd.get(), &st) != 0)
        return failed(errno);
    if (!S_ISREG(st.st_mode) || st.st_ino != h.inode)
        return failed(EINVAL);
    UniqueFd fd(::open_by_handle_at(filesystem.get(), &fh.header, O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC));
    if (!fd && errno == EPERM) // O_NOATIME needs CAP_FOWNER for others' files; reading a
        fd = UniqueFd(::open_by_handle_at(filesystem.get(), &fh.header, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)); // snapshot sets no atime anyway
    if (!fd)
        return failed(errno);
    return {std::move(fd), 0};
}

OpenResult open_beneath(const LabeledFd& dir, const std::string& path, int flags)
{
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, dir.get(), path.c_str(), &how, sizeof how)));
    if (!fd)
        return failed(errno);
    return {std::move(fd), 0};
}

OpenResult open_regular_beneath(const LabeledFd& dir, const std::string& path)
{
    OpenResult opened = open_beneath(dir, path, O_PATH | O_NOFOLLOW);
    if (!opened)
        return opened;
    struct stat st;
    if (::fstat(opened.fd.get(), &st) != 0)
        return failed(errno);
    if (!S_ISREG(st.st_mode))
        return failed(EINVAL);
    return opened;
}

} // namespace snapdedupe
