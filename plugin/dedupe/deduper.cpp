#include "plugin/dedupe/deduper.h"

#include <linux/fs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>

namespace snapdedupe {

namespace {

struct Pending {
    size_t target;     // index into targets/results
    uint64_t progress; // bytes of the range done for this target
};

// The ranges of one dedupe call, read into the page cache for the kernel's compare while this
// lives (FilesystemQueries::prefetch) and dropped when it ends. Only ranges prefetch() had
// to read are dropped: one that was all cached already is someone's working set (the live
// subvolume's files, or blocks read a moment ago to fingerprint them), and it stays. A range
// that was partly cached is dropped whole: simpler, and a file in use is usually cached whole.
class PrefetchedCall {
public:
    PrefetchedCall(FilesystemQueries& fs, int src_fd, uint64_t src_offset, uint64_t length,
                   const std::vector<DedupeTarget>& targets)
        : fs_(fs), length_(length)
    {
        if (fs_.prefetch(src_fd, src_offset, length))
            read_.push_back({src_fd, src_offset});
        for (const DedupeTarget& t : targets)
            if (fs_.prefetch(t.fd, t.offset, length))
                read_.push_back(t);
    }
    ~PrefetchedCall()
    {
        for (const DedupeTarget& r : read_)
            fs_.release(r.fd, r.offset, length_);
    }
    PrefetchedCall(const PrefetchedCall&) = delete;
    PrefetchedCall& operator=(const PrefetchedCall&) = delete;

private:
    FilesystemQueries& fs_;
    uint64_t length_;
    std::vector<DedupeTarget> read_; // fd and offset of each range prefetch() read
};

} // namespace

std::vector<DedupeCallResult> fideduperange_call(int src_fd, uint64_t src_offset, uint64_t length,
                                                 const std::vector<DedupeTarget>& targets)
{
    std::vector<uint8_t> buf(sizeof(file_dedupe_range) + targets.size() * sizeof(file_dedupe_range_info));
    auto* arg = reinterpret_cast<file_dedupe_range*>(buf.data());
    arg->src_offset = src_offset;
    arg->src_length = length;
    arg->dest_count = static_cast<uint16_t>(targets.size());
    for (size_t i = 0; i < targets.size(); ++i) {
        arg->info[i].dest_fd = targets[i].fd;
        arg->info[i].dest_offset = targets[i].offset;
    }
    std::vector<DedupeCallResult> results(targets.size());
    if (::ioctl(src_fd, FIDEDUPERANGE, arg) != 0) {
        int err = errno;
        for (DedupeCallResult& r : results)
            r.error = err;
        return results;
    }
    for (size_t i = 0; i < targets.size(); ++i) {
        const file_dedupe_range_info& info = arg->info[i];
        if (info.status == FILE_DEDUPE_RANGE_DIFFERS)
            results[i].differs = true;
        else if (info.status < 0)
            results[i].error = -info.status;
        else
            results[i].bytes_deduped = info.bytes_deduped;
    }
    return results;
}

std::vector<DedupeResult> dedupe_onto(FilesystemQueries& fs, int src_fd, uint64_t src_offset, uint64_t length,
                                      const std::vector<DedupeTarget>& targets)
{
    std::vector<DedupeResult> results(targets.size());
    std::vector<Pending> pending;
    for (size_t i = 0; i < targets.size(); ++i)
        pending.push_back({i, 0});

    while (!pending.empty()) {
        // Targets at the same position go together; partial progress splits them apart.
        std::sort(pending.begin(), pending.end(),
                  [](const Pending& a, const Pending& b) { return a.progress < b.progress; });
        uint64_t pos = pending.front().progress;
        std::vector<size_t> batch;
        std::vector<DedupeTarget> call_targets;
        for (const Pending& p : pending) {
            if (p.progress != pos || batch.size() == kMaxTargetsPerCall)
                break;
            batch.push_back(p.target);
            call_targets.push_back({targets[p.target].fd, targets[p.target].offset + pos});
        }
        uint64_t len = std::min(kMaxBytesPerCall, length - pos);

        std::vector<DedupeCallResult> done;
        {
            PrefetchedCall cached(fs, src_fd, src_offset + pos, len, call_targets);
            done = fs.dedupe_call(src_fd, src_offset + pos, len, call_targets);
        }
        if (done.size() != batch.size())
            throw std::logic_error("dedupe_call: one result per target expected");
        std::vector<Pending> next;
        for (size_t i = 0; i < batch.size(); ++i) {
            size_t t = batch[i];
            if (done[i].differs) {
                results[t].differs += length - pos;
            } else if (done[i].error != 0) { // EAGAIN too: the caller retries whole extents later
                results[t].error = done[i].error;
            } else if (done[i].bytes_deduped == 0) {
                results[t].error = EINVAL; // no progress: the kernel will not share this range
            } else {
                results[t].deduped += done[i].bytes_deduped;
                if (pos + done[i].bytes_deduped < length)
                    next.push_back({t, pos + done[i].bytes_deduped});
            }
        }
        // Keep the targets this call did not include.
        for (const Pending& p : pending)
            if (std::find(batch.begin(), batch.end(), p.target) == batch.end())
                next.push_back(p);
        pending = std::move(next);
    }
    return results;
}

} // namespace snapdedupe
