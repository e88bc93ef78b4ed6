// The filesystem's answers from the kernel: btrfs ioctls, libbtrfsutil and file handles on a
// mounted btrfs, through the kernel floor (snapshots/kernel/). The one file of the engine that
// calls the floor, so a change there is adapted here once.
#pragma once

#include "plugin/dedupe/filesystem_queries.h"
#include "plugin/dedupe/page_dropper.h"
#include "plugin/dedupe/read_ahead.h"
#include "snapshots/kernel/labeled_fd.h"

#include <functional>
#include <memory>
#include <vector>

namespace snapdedupe {

class KernelQueries final : public FilesystemQueries {
public:
    // `filesystem`: any directory on the filesystem; ioctls and opens by handle go through it.
    // It must outlive this object.
    // `after_dedupe_call` and `prefetch` false: test seams (plugin/test_seams.h); empty and
    // true in production.
    explicit KernelQueries(const LabeledFd& filesystem, std::function<void()> after_dedupe_call = {},
                           bool prefetch = true)
        : fs_(filesystem), after_dedupe_call_(std::move(after_dedupe_call)), prefetch_(prefetch),
          dropper_(prefetch ? start_dropper() : nullptr)
    {
    }

    std::vector<FileExtentItem> file_extent_items(uint64_t root, uint64_t inode, uint64_t min_offset,
                                                  uint64_t max_offset) override;
    ExtentRefs extent_references(uint64_t disk_bytenr) override;
    std::optional<InodeInfo> inode_info(uint64_t root, uint64_t inode) override;
    bool subvolume_read_only(uint64_t root) override;
    uint32_t subvolume_tree_level(uint64_t root) override;
    bool subvolume_exists(uint64_t root, const std::string& uuid) override;
    OpenResult open_file(const InodeHandle& file) override;
    std::optional<std::vector<DataBlock>> dedupable_blocks(const InodeHandle& file,
                                                            const std::vector<ByteRange>& ranges) override;
    // FIDEDUPERANGE itself lives with the engine (deduper.h: fideduperange_call).
    std::vector<DedupeCallResult> dedupe_call(int src_fd, uint64_t src_offset, uint64_t length,
                                              const std::vector<DedupeTarget>& targets) override;
    // prefetch: ask_into_cache (read_ahead.h); release: POSIX_FADV_DONTNEED, on the dropper's
    // thread.
    bool prefetch(int fd, uint64_t offset, uint64_t length) override;
    void release(int fd, uint64_t offset, uint64_t length) override;
    // A ReadAhead of `groups` (none with prefetching off), its window kReadAheadWindow.
    void compare_soon(CompareGroups groups) override;
    void compared_up_to(size_t group) override;
    // Two, on a machine with two cores or more: while one call waits on its compare and its
    // reads, the other runs.
    unsigned dedupe_threads() const override;

private:
    // The dropper's thread, or nothing when no thread is to be had (a unit's TasksMax=): then
    // release() drops in line.
    static std::unique_ptr<PageDropper> start_dropper();

    const LabeledFd& fs_;
    std::function<void()> after_dedupe_call_;
    bool prefetch_;
    std::unique_ptr<PageDropper> dropper_; // with prefetch only: nothing else is dropped
    std::unique_ptr<ReadAhead> read_ahead_; // the current dedupe batch's reader, if any
};

} // namespace snapdedupe
