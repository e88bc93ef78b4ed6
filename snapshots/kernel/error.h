// Errors that carry errno and the path or object they concern, so one line on stderr says it all.
#pragma once

#include <stdexcept>
#include <string>

namespace snapdedupe {

// A failed system call: what was attempted, on what, and errno.
class SysError : public std::runtime_error {
public:
    SysError(const std::string& what, const std::string& subject, int err);
    int err() const { return err_; }
    const std::string& subject() const { return subject_; }

private:
    int err_;
    std::string subject_;
};

// Throws SysError(what, subject, errno) when rc < 0; returns rc otherwise.
long check_sys(long rc, const char* what, const std::string& subject);

} // namespace snapdedupe
