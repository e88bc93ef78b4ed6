// What the dedupe engine asks of the filesystem, and the one call that changes it.
//
// The planner, the mover and the forgetter decide; this interface answers their questions.
// KernelQueries (kernel_queries.h) answers them with btrfs ioctls on a real filesystem; the
// unit tests answer them from a model in memory (tests/unit/in_memory_filesystem.h), so the
// decisions are tested without root, a kernel or a disk. Each question is one the kernel can
// answer in one step, so the model stays small and the two cannot drift far apart.
//
// A failure the caller cannot handle throws SysError (snapshots/kernel/error.h). A subvolume
// that is being deleted may still be listed (extent_references) while its tree no longer
// answers: then its questions throw SysError with ENOENT or ESTALE.
#pragma once

#include "index/changed_blocks.h"
#include "plugin/dedupe/compare_ranges.h"
#include "snapshots/kernel/file_handle.h"
#include "snapshots/kernel/logical_ino.h"
#include "snapshots/kernel/tree_search.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace snapdedupe {

// One destination of a dedupe call: an open file and where its range starts.
struct DedupeTarget {
    int fd = -1;
    uint64_t offset = 0;
};

// What one dedupe call did for one destination (the kernel's file_dedupe_range_info).
struct DedupeCallResult {
    uint64_t bytes_deduped = 0; // from the start of the range; may be less than asked
    bool differs = false;       // the kernel compared the bytes and found them different
    int error = 0;              // errno of this destination's failure; EAGAIN: a send holds its root
};

class FilesystemQueries {
public:
    virtual ~FilesystemQueries() = default;

    // The file extent items of (root, inode) that start at a file offset in
    // [min_offset, max_offset], in file order. An item that starts before min_offset is not
    // included, however far it reaches.
    virtual std::vector<FileExtentItem> file_extent_items(uint64_t root, uint64_t inode, uint64_t min_offset,
                                                          uint64_t max_offset) = 0;
    // Every file extent item that points at the extent at `disk_bytenr` (LOGICAL_INO_V2 with
    // IGNORE_OFFSET), each ref's file_offset where its item starts; `complete` false when the
    // list is partial. None, complete, if there is no extent there.
    virtual ExtentRefs extent_references(uint64_t disk_bytenr) = 0;
    // The inode item of (root, inode); nothing if there is no such inode.
    virtual std::optional<InodeInfo> inode_info(uint64_t root, uint64_t inode) = 0;
    virtual bool subvolume_read_only(uint64_t root) = 0;
    // The level of the subvolume's tree root (0: the root is a leaf).
    virtual uint32_t subvolume_tree_level(uint64_t root) = 0;
    // Whether subvolume `root` exists, is not being deleted, and is the one with `uuid` (a
    // root id can be reused for another subvolume).
    virtual bool subvolume_exists(uint64_t root, const std::string& uuid) = 0;
    // Opens a regular file by handle, read-only (open_by_handle in snapshots/kernel/file_handle.h).
    virtual OpenResult open_file(const InodeHandle& file) = 0;
    // The dedupable blocks of `file` that cover `ranges`, keyed as the run keys them
    // (dedupable_blocks in index/changed_blocks.h); nothing if the file does not open.
    virtual std::optional<std::vector<DataBlock>> dedupable_blocks(const InodeHandle& file,
                                                                    const std::vector<ByteRange>& ranges) = 0;
    // One dedupe call, the only question that changes the filesystem: shares
    // [src_offset, src_offset + length) of `src_fd` into each target at its offset, where the
    // bytes are equal. One result per target, in order; a call the kernel refuses as a whole
    // gives every target its errno. Batching, limits and continuing partial progress are the
    // caller's (dedupe_onto in deduper.h).
    virtual std::vector<DedupeCallResult> dedupe_call(int src_fd, uint64_t src_offset, uint64_t length,
                                                      const std::vector<DedupeTarget>& targets) = 0;

    // Has [offset, offset + length) of `fd` read into the page cache just before a dedupe call
    // compares it: the kernel's compare reads one page at a time with no readahead, so large
    // reads asked for first make it several times faster on a cold range. Returns whether the
    // range had to be read (false: it was all cached already, so it is someone's working set
    // and release() is not called for it). Advisory: a failure only loses the speed-up, and
    // the dedupe call reports whatever matters.
    virtual bool prefetch(int fd, uint64_t offset, uint64_t length) = 0;
    // Drops a range prefetch() read from the page cache once its dedupe call is done, so a
    // long run does not push the host's working set out of the cache. Advisory too.
    virtual void release(int fd, uint64_t offset, uint64_t length) = 0;

    // The ranges the coming dedupe calls compare, group by group (plugin/dedupe/read_ahead.h):
    // the kernel's answer reads them ahead on a second thread while the current calls compare,
    // and prefetch() then finds them cached. A new list replaces the last; an empty one ends
    // it. Advisory: a model has nothing to read.
    virtual void compare_soon(CompareGroups groups) { (void)groups; }
    // The groups of the last list before `group` are deduped.
    virtual void compared_up_to(size_t group) { (void)group; }

    // How many dedupe calls (of different source files) may run at once, each with its own
    // prefetch. With more than one, open_file, dedupe_call, prefetch, release and
    // compared_up_to are called from that many threads (compared_up_to one call at a time);
    // everything else from one. A model in memory answers one.
    virtual unsigned dedupe_threads() const { return 1; }
};

} // namespace snapdedupe
