#include "plugin/dedupe/kernel_queries.h"

#include "plugin/dedupe/deduper.h"
#include "snapshots/kernel/error.h"
#include "snapshots/kernel/subvolume.h"
#include "snapshots/kernel/uuid.h"

#include <fcntl.h>
#include <linux/btrfs_tree.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <thread>

namespace snapdedupe {

namespace {

// Subvolume `root`; a missing one is ENOENT, as for a tree that no longer answers.
SubvolumeInfo existing_subvolume(const LabeledFd& fs, uint64_t root)
{
    std::optional<SubvolumeInfo> info = subvolume_info(fs, root);
    if (!info)
        throw SysError("reading subvolume info of root", std::to_string(root), ENOENT);
    return *info;
}

// How far the reader runs ahead of the compares: a few calls' worth of page cache, dropped again
// as they are done.
constexpr uint64_t kReadAheadWindow = 64ULL * 1024 * 1024;

} // namespace

std::vector<FileExtentItem> KernelQueries::file_extent_items(uint64_t root, uint64_t inode, uint64_t min_offset,
                                                             uint64_t max_offset)
{
    return snapdedupe::file_extent_items(fs_, root, inode, min_offset, max_offset);
}

ExtentRefs KernelQueries::extent_references(uint64_t disk_bytenr)
{
    return logical_ino(fs_, disk_bytenr, true);
}

std::optional<InodeInfo> KernelQueries::inode_info(uint64_t root, uint64_t inode)
{
    return read_inode(fs_, root, inode);
}

bool KernelQueries::subvolume_read_only(uint64_t root)
{
    return existing_subvolume(fs_, root).read_only;
}

uint32_t KernelQueries::subvolume_tree_level(uint64_t root)
{
    return snapdedupe::subvolume_tree_level(fs_, root);
}

bool KernelQueries::subvolume_exists(uint64_t root, const std::string& uuid)
{
    std::optional<SubvolumeInfo> info = subvolume_info(fs_, root);
    if (!info)
        return false;
    // A deleted subvolume keeps its root item until the cleaner drops it, but loses its
    // place in the tree at once (libbtrfsutil reports parent 0 for it).
    if (info->parent_id == 0 && root != BTRFS_FS_TREE_OBJECTID)
        return false;
    return uuid_to_string(info->uuid) == uuid; // an id reused after a remount is someone else
}

OpenResult KernelQueries::open_file(const InodeHandle& file)
{
    return open_by_handle(fs_, file);
}

std::optional<std::vector<DataBlock>> KernelQueries::dedupable_blocks(const InodeHandle& file,
                                                                       const std::vector<ByteRange>& ranges)
{
    OpenResult opened = open_by_handle(fs_, file);
    if (!opened)
        return std::nullopt; // deleted there, or the inode number was reused (another generation)
    const std::string name = "root " + std::to_string(file.root) + " inode " + std::to_string(file.inode);
    const LabeledFd fd(std::move(opened.fd), name);
    struct stat st;
    check_sys(::fstat(fd.get(), &st), "stat", fd.label());
    return snapdedupe::dedupable_blocks(fd, static_cast<uint64_t>(st.st_size), ranges);
}

std::vector<DedupeCallResult> KernelQueries::dedupe_call(int src_fd, uint64_t src_offset, uint64_t length,
                                                         const std::vector<DedupeTarget>& targets)
{
    std::vector<DedupeCallResult> results = fideduperange_call(src_fd, src_offset, length, targets);
    if (after_dedupe_call_)
        after_dedupe_call_();
    return results;
}

bool KernelQueries::prefetch(int fd, uint64_t offset, uint64_t length)
{
    return prefetch_ && ask_into_cache(fd, offset, length) > 0;
}

void KernelQueries::release(int fd, uint64_t offset, uint64_t length)
{
    if (!prefetch_)
        return;
    if (dropper_)
        dropper_->drop(fd, offset, length);
    else
        drop_now(fd, offset, length);
}

void KernelQueries::compare_soon(CompareGroups groups)
{
    read_ahead_.reset(); // joins the last reader first: one reader at a time
    if (!prefetch_ || groups.empty())
        return;
    // Opening by handle is a system call on a const fd: safe from the reader's thread.
    try {
        read_ahead_ = std::make_unique<ReadAhead>([this](const InodeHandle& h) { return open_by_handle(fs_, h); },
                                                  std::move(groups), kReadAheadWindow);
    } catch (const std::system_error&) {
        // No thread to be had (a unit's TasksMax=): each call's prefetch reads its ranges.
    }
}

std::unique_ptr<PageDropper> KernelQueries::start_dropper()
{
    try {
        return std::make_unique<PageDropper>();
    } catch (const std::system_error&) {
        return nullptr;
    }
}

unsigned KernelQueries::dedupe_threads() const
{
    return std::thread::hardware_concurrency() >= 2 ? 2 : 1;
}

void KernelQueries::compared_up_to(size_t group)
{
    if (read_ahead_)
        read_ahead_->deduped_up_to(group);
}

} // namespace snapdedupe
