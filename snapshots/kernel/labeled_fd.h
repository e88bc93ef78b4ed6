// An open file descriptor and the name it goes by in messages, kept together (snapper's SDir):
// every call made through it can say what it failed on without a second, parallel argument.
#pragma once

#include "snapshots/kernel/unique_fd.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace snapdedupe {

class LabeledFd {
public:
    LabeledFd() = default;
    LabeledFd(UniqueFd fd, std::string label) : fd_(std::move(fd)), label_(std::move(label)) {}

    int get() const { return fd_.get(); }
    bool valid() const { return fd_.valid(); }
    explicit operator bool() const { return valid(); }
    const std::string& label() const { return label_; }

private:
    UniqueFd fd_;
    std::string label_;
};

// The directory at `path`, labeled with it. Throws PathError (missing, not a directory).
LabeledFd open_directory(const std::string& path);

// The directory `name` inside `dir`, never through a symlink (O_NOFOLLOW), labeled
// "<dir>/<name>"; invalid when there is none.
LabeledFd open_directory_at(const LabeledFd& dir, const std::string& name);

// Reads exactly `length` bytes of `file` at `offset` into `out` (retrying short reads and
// EINTR). Throws SysError, with EIO when the file ends first.
void read_exactly(const LabeledFd& file, uint64_t offset, uint8_t* out, size_t length);

// "<dir>/<name>", with one slash.
std::string join_path(const std::string& dir, const std::string& name);

} // namespace snapdedupe
