// Dropping the pages a dedupe call's prefetch read, on a thread of its own.
//
// POSIX_FADV_DONTNEED walks the range's pages out of the page cache, and when a page sits in
// another CPU's LRU cache it drains every CPU's and walks again. Measured on the benchmark's
// full run it was 7.5% of the run's CPU, all of it on the one thread that also reads and
// dedupes, while the machine's second core idled. Here it runs beside that thread: the dedupe
// of the next range does not wait for the last one's pages to go.
#pragma once

#include "snapshots/kernel/unique_fd.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

namespace snapdedupe {

// Drops [offset, offset + length) of the file open at fd from the page cache, here and now.
// Advice: nothing to report if it fails; the pages then go the way of any other.
void drop_now(int fd, uint64_t offset, uint64_t length);

class PageDropper {
public:
    PageDropper();
    ~PageDropper(); // drops what is still queued, then joins
    PageDropper(const PageDropper&) = delete;
    PageDropper& operator=(const PageDropper&) = delete;

    // Drops [offset, offset + length) of the file open at fd, soon. The fd is duplicated, so
    // the caller may close it at once. When the queue is full this waits: the pages read but
    // not yet dropped stay bounded (kMaxQueued ranges of one dedupe call each). When no
    // descriptor is left to duplicate, the range is dropped here and now.
    void drop(int fd, uint64_t offset, uint64_t length);

    static constexpr size_t kMaxQueued = 64;

private:
    struct Range {
        UniqueFd fd;
        uint64_t offset;
        uint64_t length;
    };
    void work();

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<Range> queue_;
    bool stopping_ = false;
    std::thread thread_; // last: started once the members it uses exist
};

} // namespace snapdedupe
