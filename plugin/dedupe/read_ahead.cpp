#include "plugin/dedupe/read_ahead.h"

#include "plugin/dedupe/page_dropper.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

namespace snapdedupe {

namespace {

// Large enough that the disk sees sequential reads, within the kernel's readahead size (btrfs
// makes it at least 4 MiB) that one readahead(2) reads at most.
constexpr size_t kReadChunk = 1024 * 1024;
// Each range read is kept open until its group is deduped, to drop it from the cache then; a
// window of small files must not run the process out of file descriptors.
constexpr size_t kMaxHeldFiles = 128;

// cachestat(2), Linux 6.5: Debian 12's headers predate it.
#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
struct CachestatRange {
    uint64_t off, len;
};
struct Cachestat {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
constexpr uint64_t kPage = 4096;

// Whether every page of [offset, offset + length) that lies within the file is in the page
// cache, read or still being read, without copying a byte: the read-ahead thread has asked for
// most ranges before their call, and copying them out again only to find them cached cost the
// deduping thread a copy of every byte compared (a sixth of its CPU in the full run). Nothing
// when the kernel cannot say (before 6.5).
std::optional<bool> all_in_cache(int fd, uint64_t offset, uint64_t length)
{
    struct stat st;
    if (::fstat(fd, &st) != 0)
        return std::nullopt;
    const uint64_t end = std::min(offset + length, static_cast<uint64_t>(st.st_size));
    if (end <= offset)
        return true; // nothing of the range is in the file
    const uint64_t first = offset / kPage, last = (end + kPage - 1) / kPage;
    CachestatRange range{first * kPage, (last - first) * kPage};
    Cachestat cs{};
    if (::syscall(SYS_cachestat, fd, &range, &cs, 0) != 0)
        return std::nullopt;
    return cs.nr_cache >= last - first;
}

// Whether the range's first page is cached (a file read whole is cached whole): RWF_NOWAIT
// copies it only if it is, and otherwise starts reading it.
bool first_page_cached(int fd, uint64_t offset, uint64_t length)
{
    char page[4096];
    iovec iov{page, static_cast<size_t>(std::min<uint64_t>(sizeof page, length))};
    return iov.iov_len == 0 || ::preadv2(fd, &iov, 1, static_cast<off_t>(offset), RWF_NOWAIT) > 0;
}

// readahead(2) of the range in steps: the kernel reads at most its readahead size (a few MiB)
// per call. Returns the bytes asked for; `stop` is asked before each step.
uint64_t ask_in_steps(int fd, uint64_t offset, uint64_t length, const std::function<bool()>& stop)
{
    uint64_t asked = 0;
    for (uint64_t pos = offset, end = offset + length; pos < end; pos += kReadChunk) {
        if (stop && stop())
            break;
        size_t step = static_cast<size_t>(std::min<uint64_t>(kReadChunk, end - pos));
        if (::readahead(fd, static_cast<off64_t>(pos), step) != 0)
            break; // the compare reads what is left, a page at a time
        asked += step;
    }
    return asked;
}

} // namespace

uint64_t ask_into_cache(int fd, uint64_t offset, uint64_t length)
{
    std::optional<bool> cached = all_in_cache(fd, offset, length);
    if (cached ? *cached : first_page_cached(fd, offset, length))
        return 0;
    return ask_in_steps(fd, offset, length, {});
}

uint64_t start_reading(int fd, uint64_t offset, uint64_t length, const std::function<bool()>& stop)
{
    // The first page asked of cachestat, not read with RWF_NOWAIT: that read starts the kernel's
    // own readahead, and on a disk that completes at once (CI's) the page is there before the
    // call returns, so an uncached range looked cached and was never asked for.
    std::optional<bool> cached = all_in_cache(fd, offset, std::min<uint64_t>(length, kPage));
    if (cached ? *cached : first_page_cached(fd, offset, length))
        return 0;
    return ask_in_steps(fd, offset, length, stop);
}

ReadAhead::ReadAhead(Opener open, CompareGroups groups, uint64_t window)
    : open_(std::move(open)), groups_(std::move(groups)), window_(window), read_(groups_.size())
{
    uint64_t at = 0;
    for (const std::vector<CompareRange>& group : groups_) {
        group_start_.push_back(at);
        for (const CompareRange& r : group)
            at += r.length;
    }
    group_start_.push_back(at);
    reader_ = std::thread([this] { run(); });
}

ReadAhead::~ReadAhead()
{
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    moved_.notify_all();
    reader_.join();
    release_before(groups_.size());
}

void ReadAhead::deduped_up_to(size_t group)
{
    {
        std::lock_guard<std::mutex> lock(mutex_);
        deduped_ = std::max(deduped_, std::min(group, groups_.size()));
    }
    moved_.notify_all();
}

uint64_t ReadAhead::bytes_read() const
{
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_read_;
}

void ReadAhead::run()
{
    for (size_t g = 0; g < groups_.size(); ++g) {
        uint64_t ahead = group_start_[g]; // where the next range starts in the sequence of all bytes
        for (const CompareRange& range : groups_[g]) {
            size_t done = wait_for_room(g, ahead);
            if (done == kStop)
                return;
            if (done > g)
                break; // the deduper got there first: on to the group it is at
            read_range(g, range);
            ahead += range.length;
        }
    }
    // Nothing left to read: release what is done as the deduper moves on.
    for (;;) {
        size_t done;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            moved_.wait(lock, [&] { return stop_ || deduped_ > released_; });
            if (stop_)
                return;
            done = deduped_;
        }
        release_before(done);
    }
}

size_t ReadAhead::wait_for_room(size_t group, uint64_t ahead)
{
    for (;;) {
        size_t done;
        bool room;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            auto within = [&] { return ahead < group_start_[deduped_] + window_ && held_ < kMaxHeldFiles; };
            moved_.wait(lock, [&] { return stop_ || deduped_ > released_ || deduped_ > group || within(); });
            if (stop_)
                return kStop;
            done = deduped_;
            room = within();
        }
        release_before(done);
        if (done > group || room)
            return done;
    }
}

void ReadAhead::read_range(size_t group, const CompareRange& range)
{
    OpenResult file = open_(range.file);
    if (!file)
        return; // the dedupe call will report it; the next range may open
    uint64_t read = start_reading(file.fd.get(), range.offset, range.length, [&] {
        std::lock_guard<std::mutex> lock(mutex_);
        return stop_ || deduped_ > group;
    });
    if (read == 0)
        return; // all of it was cached: someone's working set, not ours to hold or drop
    {
        std::lock_guard<std::mutex> lock(mutex_);
        bytes_read_ += read;
    }
    read_[group].push_back({std::move(file.fd), range.offset, range.length});
    ++held_;
}

void ReadAhead::release_before(size_t done)
{
    for (; released_ < done; ++released_) {
        for (const ReadByUs& r : read_[released_])
            drop_now(r.fd.get(), r.offset, r.length);
        held_ -= read_[released_].size();
        read_[released_].clear();
    }
}

} // namespace snapdedupe
