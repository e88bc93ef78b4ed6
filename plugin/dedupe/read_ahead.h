// Reading the next dedupe calls' ranges on a second thread while the kernel compares the
// current ones. The compare is CPU work on cached pages, the reads are waits on the disk: one
// after the other they add up, side by side the slower one sets the pace.
//
// The thread asks for the reads (readahead(2)) and goes on; it does not wait for them. A
// compare range is 140 KiB on average on the benchmark, so a thread that read each one in
// turn kept one small read in flight, and the disk idled between them; with the reads only
// asked for, the whole window is in flight at once. Nor are the bytes copied out: the
// compare waits for a page still being read, and finds it cached.
#pragma once

#include "plugin/dedupe/compare_ranges.h"
#include "snapshots/kernel/file_handle.h"

#include <condition_variable>
#include <cstdint>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace snapdedupe {

// Asks the kernel to read [offset, offset + length) of the open file into the page cache, in
// 1 MiB steps, and returns without waiting for the disk: the dedupe call's own prefetch, for
// what the reader did not get to. The call then waits for pages still being read, all of them
// in flight at once; reading them here, one 1 MiB read after the other, waited for each in
// turn, and a second deduping thread's calls, past the reader's window, waited the most.
// Returns the bytes asked for: 0 if every page of the range is in the page cache already, or
// on its way there (the reader asked for it), which cachestat(2) tells without copying a byte;
// before Linux 6.5, if the range's first page is.
uint64_t ask_into_cache(int fd, uint64_t offset, uint64_t length);

// Asks the kernel to read [offset, offset + length) of the open file into the page cache,
// and returns without waiting for the disk. Returns the bytes asked for: 0 if the range's
// first page is cached already (someone's working set: the caller must not drop it), or if
// `stop`, asked between 1 MiB steps, says so at once.
uint64_t start_reading(int fd, uint64_t offset, uint64_t length, const std::function<bool()>& stop = {});

class ReadAhead {
public:
    using Opener = std::function<OpenResult(const InodeHandle&)>;

    // Starts the reader: it asks for the groups' ranges in order (start_reading), at most
    // `window` bytes past the start of the group being deduped. `open` must be safe to call
    // from another thread.
    ReadAhead(Opener open, CompareGroups groups, uint64_t window);
    // Stops the reader and drops from the page cache what it read for groups not released yet.
    ~ReadAhead();
    ReadAhead(const ReadAhead&) = delete;
    ReadAhead& operator=(const ReadAhead&) = delete;

    // Groups before `group` are deduped: the reader moves its window on and drops from the
    // page cache what it read for them (what was cached before it read stays: someone's
    // working set).
    void deduped_up_to(size_t group);

    // Bytes the reader asked to be read so far (not those it found cached).
    uint64_t bytes_read() const;

private:
    struct ReadByUs {
        UniqueFd fd;
        uint64_t offset = 0, length = 0;
    };
    static constexpr size_t kStop = SIZE_MAX;
    void run();
    // Waits until the range at `ahead` (in `group`) may be read: within the window and the
    // cap on files held open. Releases what is deduped meanwhile. Returns the group the
    // deduper is at (past `group`: skip on), or kStop.
    size_t wait_for_room(size_t group, uint64_t ahead);
    // Asks for one range, and records it if it asked for any of it.
    void read_range(size_t group, const CompareRange& range);
    // Drops what was read for groups before `done`; called on the reader's thread.
    void release_before(size_t done);

    Opener open_;
    CompareGroups groups_;
    uint64_t window_;
    std::vector<uint64_t> group_start_; // bytes of the groups before each one
    std::vector<std::vector<ReadByUs>> read_; // per group; only the reader's thread touches it
    size_t released_ = 0;                      // groups whose reads were dropped
    size_t held_ = 0;                          // files open in read_

    mutable std::mutex mutex_;
    std::condition_variable moved_;
    size_t deduped_ = 0; // groups before this one are done
    bool stop_ = false;
    uint64_t bytes_read_ = 0;
    std::thread reader_; // last: started once everything above is set up
};

} // namespace snapdedupe
