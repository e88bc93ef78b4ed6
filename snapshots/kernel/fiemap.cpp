#include "snapshots/kernel/fiemap.h"

#include "snapshots/kernel/error.h"

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <vector>

namespace snapdedupe {

std::vector<FileExtent> file_extents(const LabeledFd& file, uint64_t start, uint64_t length)
{
    constexpr uint32_t kBatch = 256;
    std::vector<uint8_t> buf(sizeof(fiemap) + kBatch * sizeof(fiemap_extent));
    auto* fm = reinterpret_cast<fiemap*>(buf.data());
    const uint64_t end = start + length;

    std::vector<FileExtent> out;
    uint64_t pos = start;
    while (pos < end) {
        std::fill(buf.begin(), buf.end(), 0);
        fm->fm_start = pos;
        fm->fm_length = end - pos;
        fm->fm_extent_count = kBatch;
        check_sys(::ioctl(file.get(), FS_IOC_FIEMAP, fm), "FIEMAP of", file.label());
        if (fm->fm_mapped_extents == 0)
            break;
        bool last = false;
        for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
            const fiemap_extent& e = fm->fm_extents[i];
            out.push_back({e.fe_logical, e.fe_physical, e.fe_length, e.fe_flags});
            last = last || (e.fe_flags & FIEMAP_EXTENT_LAST);
        }
        const fiemap_extent& tail = fm->fm_extents[fm->fm_mapped_extents - 1];
        uint64_t next = tail.fe_logical + tail.fe_length;
        if (last || next <= pos)
            break;
        pos = next;
    }
    return out;
}

} // namespace snapdedupe
