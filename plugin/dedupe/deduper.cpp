#include "plugin/dedupe/deduper.h"

#include <linux/fs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>

namespace snapdedupe {

namespace {

struct Pending {
    size_t target;     // index into targets/results
    uint64_t progress; // bytes of the range done for this target
};

// One ioctl for up to kMaxTargetsPerCall targets, all at the same position `pos` of the range.
// Returns the whole-call errno (0 if the call ran), filling per-target status and bytes.
int dedupe_call(int src_fd, uint64_t src_offset, uint64_t pos, uint64_t len, const std::vector<DedupeTarget>& targets,
                const std::vector<size_t>& batch, std::vector<file_dedupe_range_info>& infos)
{
    std::vector<uint8_t> buf(sizeof(file_dedupe_range) + batch.size() * sizeof(file_dedupe_range_info));
    auto* arg = reinterpret_cast<file_dedupe_range*>(buf.data());
    arg->src_offset = src_offset + pos;
    arg->src_length = len;
    arg->dest_count = static_cast<uint16_t>(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
        arg->info[i].dest_fd = targets[batch[i]].fd;
        arg->info[i].dest_offset = targets[batch[i]].offset + pos;
    }
    if (::ioctl(src_fd, FIDEDUPERANGE, arg) != 0)
        return errno;
    infos.assign(arg->info, arg->info + batch.size());
    return 0;
}

} // namespace

std::vector<DedupeResult> dedupe_onto(int src_fd, uint64_t src_offset, uint64_t length,
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
        for (const Pending& p : pending) {
            if (p.progress != pos || batch.size() == kMaxTargetsPerCall)
                break;
            batch.push_back(p.target);
        }
        uint64_t len = std::min(kMaxBytesPerCall, length - pos);

        std::vector<file_dedupe_range_info> infos;
        int call_err = dedupe_call(src_fd, src_offset, pos, len, targets, batch, infos);
        std::vector<Pending> next;
        for (size_t i = 0; i < batch.size(); ++i) {
            size_t t = batch[i];
            int status = call_err ? -call_err : infos[i].status;
            uint64_t done = call_err ? 0 : infos[i].bytes_deduped;
            if (status == FILE_DEDUPE_RANGE_DIFFERS) {
                results[t].differs += length - pos;
            } else if (status < 0) { // EAGAIN too: the caller retries whole extents later
                results[t].error = -status;
            } else if (done == 0) {
                results[t].error = EINVAL; // no progress: the kernel will not share this range
            } else {
                results[t].deduped += done;
                if (pos + done < length)
                    next.push_back({t, pos + done});
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
