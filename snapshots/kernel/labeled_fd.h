// An open file descriptor and the name it goes by in messages, kept together (snapper's SDir):
// every call made through it can say what it failed on without a second, parallel argument.
#pragma once

#include "snapshots/kernel/unique_fd.h"

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

} // namespace snapdedupe
