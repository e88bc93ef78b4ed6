// The one error model: every error the program throws is an Error, and each kind of Error
// carries the exit code the command line documents for it (README, "Exit codes"), so the
// command line catches one type and needs no header but this one to map it.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

namespace snapdedupe {

// Documented in README.md, the man page and --help; scripts depend on them.
enum class ExitCode : int {
    kOk = 0,
    kFailure = 1,   // a system call or the kernel failed during the run
    kUsage = 2,     // bad command line or configuration
    kNotRoot = 3,   // needs root (CAP_SYS_ADMIN) for send, LOGICAL_INO and dedupe
    kBadPath = 4,   // missing, not btrfs, not a read-only snapshot, no snapshots found
    kBadIndex = 5,  // the index is corrupt, not ours, or from a newer version
    kBadStream = 6, // the kernel's send stream did not parse, or its commands do not fit
    kBusy = 7,      // --no-wait, and another run or a btrfsmaintenance task holds the lock
};

class Error : public std::runtime_error {
public:
    Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ExitCode exit_code() const { return code_; }

private:
    ExitCode code_;
};

// A failed system call: what was attempted, on what, and errno (taken at the call).
class SysError : public Error {
public:
    SysError(const std::string& what, const std::string& subject, int err);
    int err() const { return err_; }
    const std::string& subject() const { return subject_; }

private:
    int err_;
    std::string subject_;
};

// The command line or configuration asks for something impossible.
class UsageError : public Error {
public:
    explicit UsageError(const std::string& message) : Error(ExitCode::kUsage, message) {}
};

// The user named something that is not a usable snapshot source: missing, not btrfs, a
// writable subvolume, or a directory without read-only snapshots.
class PathError : public Error {
public:
    explicit PathError(const std::string& message) : Error(ExitCode::kBadPath, message) {}
};

// The index file cannot be used: newer schema, not ours, or damaged.
class IndexError : public Error {
public:
    explicit IndexError(const std::string& message) : Error(ExitCode::kBadIndex, message) {}
};

// Another task holds a lock and the caller asked not to wait.
class BusyError : public Error {
public:
    explicit BusyError(const std::string& message) : Error(ExitCode::kBusy, message) {}
};

// Throws SysError(what, subject, errno) when rc < 0; returns rc otherwise.
long check_sys(long rc, const char* what, const std::string& subject);

// The exit code for anything thrown: an Error's own, kFailure for any other exception
// (std::bad_alloc, a library's std::runtime_error).
ExitCode exit_code_of(const std::exception& e);

} // namespace snapdedupe
