#include "snapshots/kernel/btrfs_send.h"

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/unique_fd.h"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <exception>
#include <system_error>
#include <thread>

namespace snapdedupe {

namespace {

btrfs_ioctl_send_args send_args(int send_fd, std::optional<uint64_t> parent_root, __u64& clone_source)
{
    btrfs_ioctl_send_args args{};
    args.send_fd = send_fd;
    args.flags = BTRFS_SEND_FLAG_NO_FILE_DATA;
    if (parent_root) {
        clone_source = *parent_root;
        args.parent_root = *parent_root;
        args.clone_sources = &clone_source;
        args.clone_sources_count = 1;
    }
    return args;
}

// One attempt without a second thread: the kernel writes the whole stream into a file in
// memory, then `consume` reads it. For a process that cannot start a thread (a unit's
// TasksMax=, a cgroup's pids.max); a metadata-only stream is small next to the data it
// describes, but all of it is held at once.
int send_once_in_line(const LabeledFd& snapshot, std::optional<uint64_t> parent_root,
                      const std::function<void(const LabeledFd&)>& consume)
{
    UniqueFd memory_file(::memfd_create("send stream", MFD_CLOEXEC));
    if (!memory_file.valid())
        throw SysError("creating a memory file for", "send", errno);
    LabeledFd stream(std::move(memory_file), snapshot.label());
    __u64 clone_source = 0;
    btrfs_ioctl_send_args args = send_args(stream.get(), parent_root, clone_source);
    if (::ioctl(snapshot.get(), BTRFS_IOC_SEND, &args) != 0)
        return errno;
    check_sys(static_cast<int>(::lseek(stream.get(), 0, SEEK_SET)), "rewinding the send stream of",
              snapshot.label());
    consume(stream);
    return 0;
}

// One attempt. Returns the ioctl's errno (0 on success); rethrows what the consumer threw.
int send_once(const LabeledFd& snapshot, std::optional<uint64_t> parent_root,
              const std::function<void(const LabeledFd&)>& consume)
{
    int fds[2];
    check_sys(::pipe2(fds, O_CLOEXEC), "creating a pipe for", "send");
    LabeledFd read_end(UniqueFd(fds[0]), snapshot.label());
    UniqueFd write_end(fds[1]);
    __u64 clone_source = 0;
    btrfs_ioctl_send_args args = send_args(write_end.get(), parent_root, clone_source);

    int ioctl_errno = 0;
    std::thread sender;
    try {
        sender = std::thread([&] {
            if (::ioctl(snapshot.get(), BTRFS_IOC_SEND, &args) != 0)
                ioctl_errno = errno;
            write_end.reset(); // EOF for the reader, whatever happened
        });
    } catch (const std::system_error&) {
        return send_once_in_line(snapshot, parent_root, consume); // no thread to be had
    }

    std::exception_ptr consumer_error;
    try {
        consume(read_end);
    } catch (...) {
        consumer_error = std::current_exception();
    }
    // Closing the read end makes any further kernel write fail with EPIPE (SIGPIPE is ignored
    // by the program), so the sender cannot block forever on a full pipe.
    read_end = LabeledFd();
    sender.join();

    if (ioctl_errno != 0 && ioctl_errno != EPIPE)
        return ioctl_errno; // the kernel's error explains a truncated stream better than the parser
    if (consumer_error)
        std::rethrow_exception(consumer_error);
    return ioctl_errno;
}

} // namespace

void send_metadata_stream(const LabeledFd& snapshot, std::optional<uint64_t> parent_root,
                          const std::function<void(const LabeledFd&)>& consume, SendRetryPolicy retry)
{
    int delay_ms = retry.first_delay_ms;
    for (int attempt = 1;; ++attempt) {
        int err = send_once(snapshot, parent_root, consume);
        if (err == 0)
            return;
        if (err != EAGAIN || attempt >= retry.max_attempts)
            throw SysError("btrfs send (metadata only) of", snapshot.label(), err);
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        delay_ms *= 2;
    }
}

} // namespace snapdedupe
