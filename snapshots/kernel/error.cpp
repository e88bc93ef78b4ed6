#include "snapshots/kernel/error.h"

#include <cerrno>
#include <cstring>

namespace snapdedupe {

SysError::SysError(const std::string& what, const std::string& subject, int err)
    : Error(ExitCode::kFailure, what + " " + subject + ": " + std::strerror(err)), err_(err), subject_(subject)
{
}

long check_sys(long rc, const char* what, const std::string& subject)
{
    if (rc < 0)
        throw SysError(what, subject, errno);
    return rc;
}

ExitCode exit_code_of(const std::exception& e)
{
    if (const auto* error = dynamic_cast<const Error*>(&e))
        return error->exit_code();
    return ExitCode::kFailure;
}

} // namespace snapdedupe
