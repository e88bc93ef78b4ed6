#include "snapshots/kernel/capabilities.h"

#include "snapshots/kernel/error.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace snapdedupe {

namespace {

bool has_capability(int capability)
{
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
    if (::syscall(SYS_capget, &header, data) != 0)
        throw SysError("reading the capabilities of", "this process", errno);
    return (data[CAP_TO_INDEX(capability)].effective & CAP_TO_MASK(capability)) != 0;
}

} // namespace

void require_capabilities(const std::vector<RequiredCapability>& required)
{
    for (const RequiredCapability& r : required)
        if (!has_capability(r.capability))
            throw Error(ExitCode::kNotRoot,
                        std::string("needs ") + r.name + " (" + r.needed + "); the process does not have it");
}

} // namespace snapdedupe
