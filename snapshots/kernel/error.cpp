#include "snapshots/kernel/sys_error.h"

#include <cerrno>
#include <cstring>

namespace snapdedupe {

SysError::SysError(const std::string& what, const std::string& subject, int err)
    : std::runtime_error(what + " " + subject + ": " + std::strerror(err)), err_(err), subject_(subject)
{
}

long check_sys(long rc, const char* what, const std::string& subject)
{
    if (rc < 0)
        throw SysError(what, subject, errno);
    return rc;
}

} // namespace snapdedupe
