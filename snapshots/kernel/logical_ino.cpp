#include "snapshots/kernel/logical_ino.h"

#include "snapshots/kernel/error.h"

#include <linux/btrfs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <string>

namespace snapdedupe {

ExtentRefs logical_ino(const LabeledFd& filesystem, uint64_t logical, bool whole_extent)
{
    constexpr size_t kLargestBuffer = 16 * 1024 * 1024;
    // Start small; the kernel says how many bytes were missing if there are more refs.
    size_t size = 64 * 1024;
    for (;;) {
        std::vector<uint64_t> buf(size / sizeof(uint64_t));
        btrfs_ioctl_logical_ino_args args{};
        args.logical = logical;
        args.size = size;
        args.flags = whole_extent ? BTRFS_LOGICAL_INO_ARGS_IGNORE_OFFSET : 0;
        args.inodes = reinterpret_cast<uintptr_t>(buf.data());
        if (::ioctl(filesystem.get(), BTRFS_IOC_LOGICAL_INO_V2, &args) != 0) {
            const int err = errno; // before building the message
            if (err == ENOENT)
                return {}; // no extent there any more
            throw SysError("LOGICAL_INO_V2 at " + std::to_string(logical) + " on", filesystem.label(), err);
        }
        auto* dc = reinterpret_cast<btrfs_data_container*>(buf.data());
        if (dc->bytes_missing > 0 && size < kLargestBuffer) {
            size = std::min<size_t>(kLargestBuffer, size + dc->bytes_missing + 4096);
            continue;
        }
        ExtentRefs out;
        out.complete = dc->bytes_missing == 0;
        for (uint32_t i = 0; i + 2 < dc->elem_cnt; i += 3) // (inode, offset, root) triples
            out.refs.push_back({dc->val[i + 2], dc->val[i], dc->val[i + 1]});
        return out;
    }
}

} // namespace snapdedupe
