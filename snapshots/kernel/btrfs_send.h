// Running BTRFS_IOC_SEND for a metadata-only stream, as the input of a change set.
#pragma once

#include "snapshots/kernel/labeled_fd.h"

#include <cstdint>
#include <functional>
#include <optional>

namespace snapdedupe {

struct SendRetryPolicy {
    // EAGAIN means a dedupe is running on one of the roots: wait and try again, bounded.
    int max_attempts = 8;
    int first_delay_ms = 100;
};

// Sends the read-only subvolume open at `snapshot` with BTRFS_SEND_FLAG_NO_FILE_DATA,
// incrementally against `parent_root` when given (which is also the clone source, as
// `btrfs send -p` does). The kernel writes into a pipe from a worker thread; `consume` reads
// the pipe's read end on the calling thread until EOF. An error on either side ends both: a
// consumer that throws closes the read end, so the kernel's write fails and the ioctl returns.
// When no thread can be started, the kernel writes the whole stream into a file in memory
// first, and `consume` reads that file once the ioctl has returned.
// `consume` is called once per attempt and must start fresh each time.
// Throws SysError for a failed ioctl (after EAGAIN retries), or what `consume` threw.
void send_metadata_stream(const LabeledFd& snapshot, std::optional<uint64_t> parent_root,
                          const std::function<void(const LabeledFd& stream)>& consume, SendRetryPolicy retry = {});

} // namespace snapdedupe
