#include "plugin/dedupe/page_dropper.h"

#include <fcntl.h>
#include <unistd.h>

namespace snapdedupe {

void drop_now(int fd, uint64_t offset, uint64_t length)
{
    ::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(length), POSIX_FADV_DONTNEED);
}

PageDropper::PageDropper() : thread_([this] { work(); }) {}

PageDropper::~PageDropper()
{
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
}

void PageDropper::drop(int fd, uint64_t offset, uint64_t length)
{
    UniqueFd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!copy) {
        drop_now(fd, offset, length);
        return;
    }
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return queue_.size() < kMaxQueued; });
    queue_.push_back({std::move(copy), offset, length});
    lock.unlock();
    changed_.notify_all();
}

void PageDropper::work()
{
    std::unique_lock lock(mutex_);
    for (;;) {
        changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty())
            return; // stopping, and everything queued is dropped
        Range range = std::move(queue_.front());
        queue_.pop_front();
        lock.unlock();
        changed_.notify_all();
        drop_now(range.fd.get(), range.offset, range.length);
        range.fd.reset();
        lock.lock();
    }
}

} // namespace snapdedupe
